// Exponential back-off with jitter for every reconnect loop on the page, mirroring the
// services' own (service-kit's Backoff): when a server restarts, the dashboards that were
// watching it come back quickly but not all in the same millisecond.

/**
 * Delays that double from `initialMs` up to `maxMs`, each scaled by a random factor in
 * [1 - jitter, 1 + jitter).
 */
export class Backoff {
  /**
   * @param {object} [options]
   * @param {number} [options.initialMs] first delay
   * @param {number} [options.maxMs] cap on any delay (before jitter)
   * @param {number} [options.jitter] relative spread, 0 for none
   * @param {() => number} [options.random] source of numbers in [0, 1), injectable for tests
   */
  constructor({ initialMs = 250, maxMs = 5000, jitter = 0.2, random = Math.random } = {}) {
    if (!(initialMs > 0) || !(maxMs >= initialMs)) {
      throw new RangeError(`bad back-off bounds: initial ${initialMs} ms, max ${maxMs} ms`);
    }
    this.initialMs = initialMs;
    this.maxMs = maxMs;
    this.jitter = jitter;
    this.random = random;
    this.nextMs = initialMs;
  }

  /** The delay to wait now, in milliseconds; the one after it will be longer, up to the cap. */
  nextDelay() {
    const base = this.nextMs;
    this.nextMs = Math.min(this.nextMs * 2, this.maxMs);
    const factor = 1 - this.jitter + 2 * this.jitter * this.random();
    return Math.round(base * factor);
  }

  /** Back to the initial delay, after a connection proved healthy. */
  reset() {
    this.nextMs = this.initialMs;
  }
}
