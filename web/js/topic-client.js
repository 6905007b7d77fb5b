// The topic-server client: speaks the wire protocol (crates/diffusion-core/src/protocol.rs,
// docs/protocol.md) over a ReconnectingSocket and hands the page full topic values only.
//
// Decoding lives in TopicDecoder, which keeps every subscribed topic's current value. Whatever
// form an update arrives in (today a full `value` message; later a delta against the value
// held here), the page receives the complete new value.

import { ReconnectingSocket } from './reconnecting-socket.js';
import { frameText, splitFrame } from './wire.js';

/** The protocol version this client speaks. */
export const PROTOCOL_VERSION = 1;

/**
 * A topic the session is subscribed to.
 * @typedef {object} Topic
 * @property {number} id server-wide topic id from `subscribed`
 * @property {string} path
 * @property {string} topicType JSON, STRING, INT64, DOUBLE or BINARY
 * @property {Record<string, string>} properties
 * @property {unknown} value current value (undefined until the first one)
 * @property {string | null} raw the value's exact wire text, the base a delta applies to
 */

/**
 * What one decoded message means for the page.
 * @typedef {{kind: 'connected', version: number, session: string}
 *   | {kind: 'ok', cid: number}
 *   | {kind: 'error', cid: number | null, code: string, message: string}
 *   | {kind: 'subscribed', topic: Topic}
 *   | {kind: 'update', topic: Topic, value: unknown}
 *   | {kind: 'unsubscribed', topic: Topic | null, id: number, path: string, reason: string}
 *   | {kind: 'pong', cid: number}
 *   | {kind: 'fetched', cid: number, topics: unknown[]}
 *   | {kind: 'protocol-error', message: string, text: string}} TopicEvent
 */

const VALUE_PREFIX = /^\{"type":"value","id":\d+,"value":/;

/**
 * The exact text of the value inside a `value` message as the server encodes it
 * (`{"type":"value","id":N,"value":<wire json>}`), or null for any other layout.
 * @param {string} message
 * @returns {string | null}
 */
export function rawValueText(message) {
  const prefix = VALUE_PREFIX.exec(message);
  if (!prefix || !message.endsWith('}')) return null;
  return message.slice(prefix[0].length, -1);
}

/** Turns server frames into events, tracking the subscribed topics and their values. */
export class TopicDecoder {
  constructor() {
    /** @type {Map<number, Topic>} */
    this.topics = new Map();
  }

  /** Forgets every topic (the connection was lost; ids are only valid per session). */
  reset() {
    this.topics.clear();
  }

  /**
   * Decodes one frame. A bad message becomes a `protocol-error` event and does not stop the
   * messages after it in the same frame.
   * @param {string} text
   * @returns {TopicEvent[]}
   */
  decodeFrame(text) {
    return splitFrame(text).map((message) => this.decodeMessage(message));
  }

  /**
   * @param {string} text one message
   * @returns {TopicEvent}
   */
  decodeMessage(text) {
    let m;
    try {
      m = JSON.parse(text);
    } catch (err) {
      return { kind: 'protocol-error', message: `not JSON: ${err.message}`, text };
    }
    if (m === null || typeof m !== 'object' || typeof m.type !== 'string') {
      return { kind: 'protocol-error', message: 'message has no string "type"', text };
    }
    const bad = (what) => ({ kind: 'protocol-error', message: `${m.type}: ${what}`, text });
    switch (m.type) {
      case 'connected':
        return { kind: 'connected', version: m.version, session: String(m.session ?? '') };
      case 'ok':
        return { kind: 'ok', cid: m.cid };
      case 'pong':
        return { kind: 'pong', cid: m.cid };
      case 'error':
        return {
          kind: 'error',
          cid: m.cid ?? null,
          code: String(m.code ?? 'UNKNOWN'),
          message: String(m.message ?? ''),
        };
      case 'fetched':
        return { kind: 'fetched', cid: m.cid, topics: Array.isArray(m.topics) ? m.topics : [] };
      case 'subscribed': {
        if (!Number.isInteger(m.id) || typeof m.path !== 'string') return bad('needs id and path');
        const topic = {
          id: m.id,
          path: m.path,
          topicType: String(m.topicType ?? ''),
          properties: m.properties ?? {},
          value: undefined,
          raw: null,
        };
        this.topics.set(m.id, topic);
        return { kind: 'subscribed', topic };
      }
      case 'value': {
        const topic = this.topics.get(m.id);
        if (!topic) return bad(`value for unknown topic id ${m.id}`);
        if (!('value' in m)) return bad('no value field');
        topic.value = m.value;
        topic.raw = rawValueText(text);
        return { kind: 'update', topic, value: m.value };
      }
      case 'unsubscribed': {
        const topic = this.topics.get(m.id) ?? null;
        this.topics.delete(m.id);
        return {
          kind: 'unsubscribed',
          topic,
          id: m.id,
          path: String(m.path ?? topic?.path ?? ''),
          reason: String(m.reason ?? ''),
        };
      }
      default:
        return bad('unknown message type');
    }
  }
}

/**
 * Protocol phases reported to `onStatus`, on top of the socket's states:
 * `handshaking` (open, `connect` sent), `subscribing` (`connected` received, `subscribe`
 * sent), `subscribed` (the server said ok), `error` (the server refused the subscription).
 * @typedef {'idle' | 'connecting' | 'handshaking' | 'subscribing' | 'subscribed' | 'error'
 *   | 'retrying' | 'stopped'} TopicClientState
 */

/**
 * A self-reconnecting subscription to one selector on the topic server.
 *
 * Callbacks:
 * - `onUpdate({topic, value})`: a topic's new full value
 * - `onTraffic({bytes, messages, updates})`: per received frame, for bandwidth accounting
 * - `onStatus({state, detail, retryInMs, attempt})`
 * - `onEvent(event)`: every decoded TopicEvent, for logging
 */
export class TopicClient {
  /**
   * @param {object} options
   * @param {string} options.url the topic server's WebSocket URL
   * @param {string} options.selector the topic selector to subscribe to
   * @param {object} [options.socketOptions] passed to ReconnectingSocket (tests inject fakes)
   * @param {(u: {topic: Topic, value: unknown}) => void} [options.onUpdate]
   * @param {(t: {bytes: number, messages: number, updates: number}) => void} [options.onTraffic]
   * @param {(s: {state: TopicClientState, detail: string | null, retryInMs: number | null,
   *   attempt: number}) => void} [options.onStatus]
   * @param {(e: TopicEvent) => void} [options.onEvent]
   */
  constructor({
    url,
    selector,
    socketOptions = {},
    onUpdate = () => {},
    onTraffic = () => {},
    onStatus = () => {},
    onEvent = () => {},
  }) {
    this.selector = selector;
    this.decoder = new TopicDecoder();
    this.handlers = { onUpdate, onTraffic, onStatus, onEvent };
    this.nextCid = 1;
    this.subscribeCid = null;
    this.session = null;
    this.phase = 'idle';
    this.socket = new ReconnectingSocket({
      ...socketOptions,
      url,
      onStatus: (s) => this.socketStatus(s),
      onOpen: () => this.opened(),
      onFrame: (f) => this.frame(f),
      onClose: () => this.decoder.reset(),
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
  report(state, detail = null, retryInMs = null) {
    this.phase = state;
    this.handlers.onStatus({ state, detail, retryInMs, attempt: this.socket.status.attempt });
  }

  /** @private */
  socketStatus(s) {
    if (s.state === 'open') return; // `opened` reports the handshake phase instead
    this.report(s.state, s.lastError, s.retryInMs);
  }

  /** @private */
  opened() {
    this.subscribeCid = null;
    this.socket.send(JSON.stringify({ type: 'connect', version: PROTOCOL_VERSION }));
    this.report('handshaking');
  }

  /** @private */
  frame({ data, bytes }) {
    let events;
    try {
      events = this.decoder.decodeFrame(frameText(data));
    } catch (err) {
      events = [{ kind: 'protocol-error', message: `unreadable frame: ${err.message}`, text: '' }];
    }
    const updates = events.filter((e) => e.kind === 'update').length;
    this.handlers.onTraffic({ bytes, messages: events.length, updates });
    for (const event of events) this.handle(event);
  }

  /** @private */
  handle(event) {
    this.handlers.onEvent(event);
    switch (event.kind) {
      case 'connected': {
        this.session = event.session;
        this.subscribeCid = this.nextCid++;
        this.socket.send(
          JSON.stringify({ type: 'subscribe', cid: this.subscribeCid, selector: this.selector }),
        );
        this.report('subscribing', `session ${event.session}`);
        break;
      }
      case 'ok':
        if (event.cid === this.subscribeCid) this.report('subscribed', `session ${this.session}`);
        break;
      case 'error':
        if (event.cid === null || event.cid === this.subscribeCid) {
          // Before the handshake completes (no cid), an error means the session is unusable.
          if (this.phase === 'handshaking') {
            this.socket.fail(`${event.code}: ${event.message}`);
          } else {
            this.report('error', `${event.code}: ${event.message}`);
          }
        }
        break;
      case 'update':
        this.handlers.onUpdate({ topic: event.topic, value: event.value });
        break;
      default:
        break;
    }
  }
}
