// Notices a dead connection: a version-2 server sends a heartbeat every heartbeatIntervalMs, so
// hearing nothing at all (no frame of any kind) for heartbeatIntervalMs + heartbeatTimeoutMs
// means the server or the path to it is gone, even when the socket itself still looks open (a
// half-open TCP connection can stay "open" for many minutes). Against a version-1 server, which
// sends no heartbeats, the watchdog is never armed: silence there is normal.

/** A timer that fires when nothing was heard for `silenceMs`. */
export class SilenceWatchdog {
  /**
   * @param {object} options
   * @param {() => void} options.onSilence called once per arming when the silence lasted too long
   * @param {{setTimeout: Function, clearTimeout: Function}} [options.timers]
   * @param {() => number} [options.now] milliseconds clock
   */
  constructor({ onSilence, timers = globalThis, now = Date.now }) {
    this.onSilence = onSilence;
    this.timers = timers;
    this.now = now;
    this.silenceMs = null;
    this.lastHeardAt = 0;
    this.timer = null;
  }

  /** Whether a limit is set. */
  get armed() {
    return this.silenceMs !== null;
  }

  /**
   * Starts watching (or changes the limit), counting from now.
   * @param {number} silenceMs
   */
  arm(silenceMs) {
    this.disarm();
    this.silenceMs = silenceMs;
    this.lastHeardAt = this.now();
    this.schedule(silenceMs);
  }

  /** Stops watching. */
  disarm() {
    if (this.timer !== null) this.timers.clearTimeout(this.timer);
    this.timer = null;
    this.silenceMs = null;
  }

  /**
   * Something arrived. Only the time is noted: re-arming a timer for every frame would cost a
   * timer per frame; the pending one checks the time when it fires instead.
   */
  heard() {
    this.lastHeardAt = this.now();
  }

  /** @private */
  schedule(delayMs) {
    this.timer = this.timers.setTimeout(() => this.check(), delayMs);
  }

  /** @private */
  check() {
    this.timer = null;
    if (this.silenceMs === null) return;
    const quietFor = this.now() - this.lastHeardAt;
    if (quietFor < this.silenceMs) {
      this.schedule(this.silenceMs - quietFor);
      return;
    }
    this.silenceMs = null;
    this.onSilence();
  }
}

/**
 * The silence after which a session's connection counts as dead, from the `limits` of its
 * `connected` message, or null when there is no such limit (version 1, or limits missing).
 * @param {{heartbeatIntervalMs?: number, heartbeatTimeoutMs?: number} | undefined} limits
 * @returns {number | null}
 */
export function deadAfterMs(limits) {
  const interval = limits?.heartbeatIntervalMs;
  const timeout = limits?.heartbeatTimeoutMs;
  if (!Number.isSafeInteger(interval) || !Number.isSafeInteger(timeout) || interval <= 0) return null;
  return interval + timeout;
}
