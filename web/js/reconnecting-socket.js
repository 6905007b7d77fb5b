// A WebSocket that comes back by itself: when the server goes away the socket waits (with
// back-off) and dials again, for as long as the page wants it. Every frame is reported with its
// real payload size. The WebSocket class and the timers are injectable so Node tests can drive
// it with a fake socket and a fake clock.

import { Backoff } from './backoff.js';
import { frameByteLength } from './wire.js';

/** A connection that lasted this long counts as healthy: the next outage starts back-off afresh. */
export const STABLE_AFTER_MS = 5000;

/**
 * Connection states reported to `onStatus`.
 * - `connecting`: dialling
 * - `open`: connected
 * - `retrying`: lost or refused; `retryInMs` says when the next attempt is
 * - `stopped`: `stop()` was called
 * @typedef {'idle' | 'connecting' | 'open' | 'retrying' | 'stopped'} SocketState
 */

/**
 * @typedef {object} SocketStatus
 * @property {SocketState} state
 * @property {number} attempt connection attempts since the last healthy connection
 * @property {number | null} retryInMs delay before the next attempt, when retrying
 * @property {string | null} lastError why the last connection ended, when known
 */

export class ReconnectingSocket {
  /**
   * @param {object} options
   * @param {string | string[]} options.url the server, or several (the nodes of one
   *   deployment): after a lost connection the same server is tried once more, and each attempt
   *   that fails to open moves on to the next
   * @param {typeof WebSocket} [options.WebSocketImpl]
   * @param {Backoff} [options.backoff]
   * @param {{setTimeout: Function, clearTimeout: Function}} [options.timers]
   * @param {() => number} [options.now] milliseconds clock
   * @param {number} [options.stableAfterMs]
   * @param {(status: SocketStatus) => void} [options.onStatus]
   * @param {() => void} [options.onOpen] the socket is open; send greetings here
   * @param {(frame: {data: string | ArrayBuffer, bytes: number}) => void} [options.onFrame]
   * @param {() => void} [options.onClose] the socket closed (a retry follows unless stopped)
   * @param {Iterable<number>} [options.finalCloseCodes] close codes after which retrying cannot
   *   help (the server refused this client): the socket stops instead, keeping the reason
   */
  constructor({
    url,
    WebSocketImpl = globalThis.WebSocket,
    backoff = new Backoff(),
    timers = globalThis,
    now = Date.now,
    stableAfterMs = STABLE_AFTER_MS,
    onStatus = () => {},
    onOpen = () => {},
    onFrame = () => {},
    onClose = () => {},
    finalCloseCodes = [],
  }) {
    if (typeof WebSocketImpl !== 'function') throw new TypeError('no WebSocket implementation');
    /** @type {string[]} */
    this.urls = Array.isArray(url) ? [...url] : [url];
    if (this.urls.length === 0) throw new TypeError('no URL to connect to');
    this.urlIndex = 0;
    this.WebSocketImpl = WebSocketImpl;
    this.backoff = backoff;
    this.timers = timers;
    this.now = now;
    this.stableAfterMs = stableAfterMs;
    this.handlers = { onStatus, onOpen, onFrame, onClose };
    this.finalCloseCodes = new Set(finalCloseCodes);
    /** @type {WebSocket | null} */
    this.ws = null;
    this.retryTimer = null;
    this.openedAt = null;
    this.status = { state: 'idle', attempt: 0, retryInMs: null, lastError: null };
  }

  /** The server the socket uses (or will try next). */
  get url() {
    return this.urls[this.urlIndex];
  }

  /** @private Moves on to the next server, after an attempt that did not open. */
  nextUrl() {
    this.urlIndex = (this.urlIndex + 1) % this.urls.length;
  }

  /** Starts connecting (no-op when already running). */
  start() {
    if (this.status.state !== 'idle' && this.status.state !== 'stopped') return;
    this.connect();
  }

  /** Closes the socket and stops retrying. */
  stop() {
    if (this.retryTimer !== null) this.timers.clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) ws.close(1000, 'dashboard stopped');
    this.setStatus({ state: 'stopped', retryInMs: null });
  }

  /**
   * Sends a text frame.
   * @param {string} text
   * @returns {boolean} false when the socket is not open (nothing was sent)
   */
  send(text) {
    const ws = this.ws;
    if (!ws || ws.readyState !== this.WebSocketImpl.OPEN) return false;
    ws.send(text);
    return true;
  }

  /**
   * Drops the current connection and retries as if the server had closed it; for protocol
   * errors the socket itself cannot see.
   * @param {string} reason
   */
  fail(reason) {
    const ws = this.ws;
    if (!ws) return;
    this.lost(ws, reason);
    ws.close(4000, reason.slice(0, 100));
  }

  /** @private */
  setStatus(patch) {
    this.status = { ...this.status, ...patch };
    this.handlers.onStatus(this.status);
  }

  /** @private */
  connect() {
    this.retryTimer = null;
    this.openedAt = null;
    this.setStatus({ state: 'connecting', attempt: this.status.attempt + 1, retryInMs: null });
    let ws;
    try {
      ws = new this.WebSocketImpl(this.url);
    } catch (err) {
      // A URL the browser refuses outright; keep retrying so the status stays visible.
      const reason = `cannot open ${this.url}: ${err.message}`;
      this.nextUrl();
      this.scheduleRetry(reason);
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.openedAt = this.now();
      this.setStatus({ state: 'open', lastError: null });
      this.handlers.onOpen();
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      this.handlers.onFrame({ data: event.data, bytes: frameByteLength(event.data) });
    };
    ws.onerror = () => {
      // Browsers give no detail here; the close event that follows carries the code.
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      const why = event.reason
        ? `closed (${event.code}: ${event.reason})`
        : `closed (code ${event.code})`;
      const final = this.finalCloseCodes.has(event.code);
      this.lost(ws, this.openedAt === null ? `connection failed, ${why}` : why, final);
    };
  }

  /** @private */
  lost(ws, reason, final = false) {
    if (this.ws !== ws) return;
    if (this.openedAt === null) this.nextUrl();
    this.ws = null;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    if (this.openedAt !== null && this.now() - this.openedAt >= this.stableAfterMs) {
      this.backoff.reset();
      this.status = { ...this.status, attempt: 0 };
    }
    this.openedAt = null;
    this.handlers.onClose();
    if (final) {
      this.setStatus({ state: 'stopped', retryInMs: null, lastError: `${reason}; not retrying` });
      return;
    }
    this.scheduleRetry(reason);
  }

  /** @private */
  scheduleRetry(reason) {
    const delay = this.backoff.nextDelay();
    this.setStatus({ state: 'retrying', retryInMs: delay, lastError: reason });
    this.retryTimer = this.timers.setTimeout(() => this.connect(), delay);
  }
}
