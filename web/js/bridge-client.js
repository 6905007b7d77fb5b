// The "Redis client": what a browser gets by listening to the Redis WebSocket bridge, where
// every message published on the Redis channel arrives as one frame holding the whole feed
// document.

import { ReconnectingSocket } from './reconnecting-socket.js';
import { frameText } from './wire.js';

/**
 * A self-reconnecting listener on the bridge.
 *
 * Callbacks:
 * - `onUpdate({value})`: a frame's parsed JSON (or its text when it is not JSON)
 * - `onTraffic({bytes, messages, updates})`: per frame; every frame is one message, and one
 *   update when it could be read
 * - `onStatus(SocketStatus)`
 */
export class BridgeClient {
  /**
   * @param {object} options
   * @param {string} options.url the bridge's WebSocket URL
   * @param {object} [options.socketOptions] passed to ReconnectingSocket (tests inject fakes)
   * @param {(u: {value: unknown}) => void} [options.onUpdate]
   * @param {(t: {bytes: number, messages: number, updates: number}) => void} [options.onTraffic]
   * @param {(s: import('./reconnecting-socket.js').SocketStatus) => void} [options.onStatus]
   */
  constructor({ url, socketOptions = {}, onUpdate = () => {}, onTraffic = () => {}, onStatus = () => {} }) {
    this.handlers = { onUpdate, onTraffic };
    this.socket = new ReconnectingSocket({
      ...socketOptions,
      url,
      onStatus,
      onFrame: (f) => this.frame(f),
    });
  }

  /** Connects, and keeps reconnecting until stopped. */
  start() {
    this.socket.start();
  }

  /** Disconnects for good. */
  stop() {
    this.socket.stop();
  }

  /** @private */
  frame({ data, bytes }) {
    let value;
    try {
      const text = frameText(data);
      try {
        value = JSON.parse(text);
      } catch {
        value = text;
      }
    } catch {
      // Binary that is not UTF-8: it still cost bytes, but holds no update.
      this.handlers.onTraffic({ bytes, messages: 1, updates: 0 });
      return;
    }
    this.handlers.onTraffic({ bytes, messages: 1, updates: 1 });
    this.handlers.onUpdate({ value });
  }
}
