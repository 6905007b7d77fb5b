// The data-feeder's control API (GET /status, POST /start, /stop, /interval), and a monitor
// that keeps its status fresh and notices when the feeder is unreachable.

import { Backoff } from './backoff.js';

/** A request the feeder answered with an error, or could not be made at all. */
export class FeederError extends Error {
  /**
   * @param {string} message
   * @param {{status?: number | null, unreachable?: boolean}} [details]
   */
  constructor(message, { status = null, unreachable = false } = {}) {
    super(message);
    this.name = 'FeederError';
    /** HTTP status, when the feeder answered. */
    this.status = status;
    /** True when no answer came at all (refused, timed out, blocked). */
    this.unreachable = unreachable;
  }
}

/** Thin client for the feeder's HTTP API; every call times out instead of hanging. */
export class FeederApi {
  /**
   * @param {string} baseUrl e.g. http://localhost:3100
   * @param {{fetchImpl?: typeof fetch, timeoutMs?: number}} [options]
   */
  constructor(baseUrl, { fetchImpl = globalThis.fetch?.bind(globalThis), timeoutMs = 3000 } = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.fetchImpl = fetchImpl;
    this.timeoutMs = timeoutMs;
  }

  /** The feeder's status object. */
  status() {
    return this.request('GET', '/status');
  }

  /** Starts polling the source. */
  start() {
    return this.request('POST', '/start');
  }

  /** Stops polling the source. */
  stop() {
    return this.request('POST', '/stop');
  }

  /**
   * Changes the poll interval.
   * @param {number} intervalMs
   */
  setInterval(intervalMs) {
    return this.request('POST', '/interval', { interval_ms: intervalMs });
  }

  /**
   * @private
   * @returns {Promise<unknown>} the parsed JSON answer, or null for an empty one
   */
  async request(method, path, body) {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), this.timeoutMs);
    const init = { method, signal: controller.signal, cache: 'no-store' };
    if (body !== undefined) {
      init.headers = { 'Content-Type': 'application/json' };
      init.body = JSON.stringify(body);
    }
    let response;
    let text;
    try {
      response = await this.fetchImpl(`${this.baseUrl}${path}`, init);
      text = await response.text();
    } catch (err) {
      const why = err?.name === 'AbortError' ? `no answer within ${this.timeoutMs} ms` : err.message;
      throw new FeederError(`feeder unreachable at ${this.baseUrl}: ${why}`, { unreachable: true });
    } finally {
      clearTimeout(timer);
    }
    if (!response.ok) {
      throw new FeederError(
        `${method} ${path} failed: HTTP ${response.status}${text ? ` — ${text.trim()}` : ''}`,
        { status: response.status },
      );
    }
    if (text.trim() === '') return null;
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
}

/**
 * Polls GET /status: every `pollMs` while the feeder answers, with back-off while it does not.
 * `onStatus({reachable, status, error, retryInMs})` is called after every attempt.
 */
export class FeederMonitor {
  /**
   * @param {FeederApi} api
   * @param {object} [options]
   * @param {number} [options.pollMs]
   * @param {Backoff} [options.backoff]
   * @param {{setTimeout: Function, clearTimeout: Function}} [options.timers]
   * @param {(s: {reachable: boolean, status: object | null, error: string | null,
   *   retryInMs: number | null}) => void} [options.onStatus]
   */
  constructor(api, { pollMs = 1000, backoff = new Backoff({ initialMs: 500, maxMs: 10_000 }), timers = globalThis, onStatus = () => {} } = {}) {
    this.api = api;
    this.pollMs = pollMs;
    this.backoff = backoff;
    this.timers = timers;
    this.onStatus = onStatus;
    this.timer = null;
    this.running = false;
    this.inFlight = null;
    this.refreshPending = false;
  }

  /** Begins polling. */
  start() {
    if (this.running) return;
    this.running = true;
    this.poll();
  }

  /** Stops polling. */
  stop() {
    this.running = false;
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
  }

  /** Polls now (after a command), instead of waiting for the next tick. */
  refresh() {
    if (!this.running) return Promise.resolve();
    if (this.inFlight) {
      // The answer on its way may predate the command: ask again as soon as it lands.
      this.refreshPending = true;
      return this.inFlight;
    }
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
    return this.poll();
  }

  /** @private */
  poll() {
    if (this.inFlight) return this.inFlight;
    this.inFlight = this.api
      .status()
      .then(
        (status) => {
          this.backoff.reset();
          return { reachable: true, status, error: null, retryInMs: this.pollMs };
        },
        (err) => ({
          reachable: !err.unreachable,
          status: null,
          error: err.message,
          retryInMs: this.backoff.nextDelay(),
        }),
      )
      .then((result) => {
        this.inFlight = null;
        if (!this.running) return undefined;
        this.onStatus(result);
        if (this.refreshPending) {
          this.refreshPending = false;
          return this.poll();
        }
        this.timer = this.timers.setTimeout(() => {
          this.timer = null;
          this.poll();
        }, result.retryInMs);
      });
    return this.inFlight;
  }
}
