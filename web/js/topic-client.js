// The topic-server client: speaks the wire protocol (crates/diffusion-core/src/protocol.rs,
// docs/protocol.md) over a ReconnectingSocket and hands the page full topic values only.
//
// Decoding lives in TopicDecoder, which keeps every subscribed topic's current value and its
// canonical bytes. An update arrives either as a full `value` message or as a `delta` (a fossil
// delta, base64, against the canonical bytes held here); either way the page receives the
// complete new value and never sees a delta.

import { applyFossilDelta } from './fossil.js';
import { ReconnectingSocket } from './reconnecting-socket.js';
import { base64ToBytes, canonicalBytes, DELTA_TOPIC_TYPES, valueFromCanonical } from './topic-values.js';
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
 * @property {unknown} value current value (undefined until the first one, and after a delta
 *   failed to apply)
 * @property {Uint8Array | null} canonical the current value's canonical bytes, the base the next
 *   delta applies to (null for types without deltas, and until a full value arrives)
 * @property {string | null} error why the value is unknown (a delta failed), until the next full
 *   value
 */

/**
 * What one decoded message means for the page.
 * @typedef {{kind: 'connected', version: number, session: string}
 *   | {kind: 'ok', cid: number}
 *   | {kind: 'error', cid: number | null, code: string, message: string}
 *   | {kind: 'subscribed', topic: Topic}
 *   | {kind: 'update', topic: Topic, value: unknown, via: 'value' | 'delta'}
 *   | {kind: 'delta-error', topic: Topic, message: string}
 *   | {kind: 'unsubscribed', topic: Topic | null, id: number, path: string, reason: string}
 *   | {kind: 'pong', cid: number}
 *   | {kind: 'fetched', cid: number, topics: unknown[]}
 *   | {kind: 'protocol-error', message: string, text: string}} TopicEvent
 */

// Updates come in the short form `{"i":N,"v":<json>}` (`{"i":N,"d":"<base64>"}` for deltas);
// the long `{"type":"value","id":N,"value":<json>}` form is accepted too.
const VALUE_PREFIX = /^\{(?:"i":(\d+),"v":|"type":"value","id":(\d+),"value":)/;

/**
 * Splits a value update laid out as the server encodes it
 * (`{"i":N,"v":<wire json>}`, in that field order: see
 * `encode_value_message` in protocol.rs) into its id and the exact text of its value, or null
 * for any other layout. The text is only a candidate: it is the value's text if and only if it
 * parses as JSON on its own (a message with extra fields after `value`, say, gives a candidate
 * that does not), which parseServerValueMessage checks.
 * @param {string} message
 * @returns {{id: number, raw: string} | null}
 */
function splitValueMessage(message) {
  const prefix = VALUE_PREFIX.exec(message);
  if (!prefix || !message.endsWith('}')) return null;
  const raw = message.slice(prefix[0].length, -1);
  // JSON.parse ignores surrounding whitespace, but the server never writes any: a value with
  // it is not in the server's layout, so its text cannot be the canonical bytes.
  if (raw.length === 0 || /^\s|\s$/.test(raw)) return null;
  return { id: Number(prefix[1] ?? prefix[2]), raw };
}

/**
 * The exact wire text of the value in a `value` message in the server's layout, or null for
 * any other layout (see splitValueMessage).
 * @param {string} message
 * @returns {string | null}
 */
export function rawValueText(message) {
  return splitValueMessage(message)?.raw ?? null;
}

/**
 * Reads a `value` message in the server's own layout with one JSON.parse of the value text
 * alone, keeping that text. Returns null when the message has another layout, and the caller
 * falls back to parsing the whole message.
 * @param {string} text
 * @returns {{id: number, value: unknown, raw: string} | null}
 */
function parseServerValueMessage(text) {
  const parts = splitValueMessage(text);
  if (parts === null || !Number.isSafeInteger(parts.id)) return null;
  try {
    return { id: parts.id, value: JSON.parse(parts.raw), raw: parts.raw };
  } catch {
    return null;
  }
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
    const fast = parseServerValueMessage(text);
    if (fast) return this.fullValue(fast.id, fast.value, fast.raw, text);
    let m;
    try {
      m = JSON.parse(text);
    } catch (err) {
      return { kind: 'protocol-error', message: `not JSON: ${err.message}`, text };
    }
    if (m !== null && typeof m === 'object' && typeof m.type !== 'string' && 'i' in m) {
      // A short-form update whose value text could not be cut out exactly (see above).
      if ('d' in m && !('v' in m)) return this.applyDelta(m.i, m.d, text);
      if ('v' in m && !('d' in m)) return this.fullValue(m.i, m.v, JSON.stringify(m.v), text);
      return { kind: 'protocol-error', message: 'update needs exactly one of "v" and "d"', text };
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
          canonical: null,
          error: null,
        };
        this.topics.set(m.id, topic);
        return { kind: 'subscribed', topic };
      }
      case 'value': {
        if (!('value' in m)) return bad('no value field');
        // Not the server's layout (parseServerValueMessage declined it), so the value's exact
        // text is unknown. Re-serialising is the best base left: JSON.stringify keeps the key
        // order it was given, but may format numbers differently from the server, in which case
        // the next delta fails its checksum and the value after it recovers.
        return this.fullValue(m.id, m.value, JSON.stringify(m.value), text);
      }
      case 'delta':
        return this.applyDelta(m.id, m.delta, text);
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

  /**
   * A full value: replaces what the topic holds and clears any error.
   * @private
   * @param {unknown} id
   * @param {unknown} value
   * @param {string} rawJson the value's JSON text, the canonical bytes of JSON topics
   * @param {string} text the whole message, for error reports
   * @returns {TopicEvent}
   */
  fullValue(id, value, rawJson, text) {
    const topic = typeof id === 'number' ? this.topics.get(id) : undefined;
    if (!topic) return { kind: 'protocol-error', message: `value: unknown topic id ${id}`, text };
    topic.value = value;
    topic.canonical = canonicalBytes(topic.topicType, value, rawJson);
    topic.error = null;
    return { kind: 'update', topic, value, via: 'value' };
  }

  /**
   * A delta: applies it to the canonical bytes held and yields the full new value. A delta that
   * cannot be applied drops what the topic holds (it is no longer known to be current) and
   * yields a `delta-error`; the next full value recovers the topic.
   * @private
   * @param {unknown} id
   * @param {unknown} delta base64 of the fossil delta
   * @param {string} text the whole message, for error reports
   * @returns {TopicEvent}
   */
  applyDelta(id, delta, text) {
    const topic = typeof id === 'number' ? this.topics.get(id) : undefined;
    if (!topic) return { kind: 'protocol-error', message: `delta: unknown topic id ${id}`, text };
    let failure;
    if (!DELTA_TOPIC_TYPES.has(topic.topicType)) {
      failure = `${topic.topicType || 'untyped'} topics do not take deltas`;
    } else if (topic.canonical === null) {
      failure = 'no value held to apply it to';
    } else if (typeof delta !== 'string') {
      failure = 'message has no string "delta"';
    } else {
      try {
        const bytes = applyFossilDelta(topic.canonical, base64ToBytes(delta));
        const value = valueFromCanonical(topic.topicType, bytes);
        topic.canonical = bytes;
        topic.value = value;
        topic.error = null;
        return { kind: 'update', topic, value, via: 'delta' };
      } catch (err) {
        failure = err instanceof Error ? err.message : String(err);
      }
    }
    topic.canonical = null;
    topic.value = undefined;
    topic.error = `delta not applied: ${failure}`;
    return { kind: 'delta-error', topic, message: topic.error };
  }
}

/**
 * Protocol phases reported to `onStatus`, on top of the socket's states:
 * `handshaking` (open, `connect` sent), `subscribing` (`connected` received, `subscribe`
 * sent), `subscribed` (the server said ok), `error` (the server refused the subscription, or a
 * topic's value is unknown because a delta failed to apply; a full value for that topic
 * brings the state back to `subscribed`).
 * @typedef {'idle' | 'connecting' | 'handshaking' | 'subscribing' | 'subscribed' | 'error'
 *   | 'retrying' | 'stopped'} TopicClientState
 */

/**
 * A self-reconnecting subscription to one selector on the topic server.
 *
 * Callbacks:
 * - `onUpdate({topic, value, via})`: a topic's new full value (`via` says whether it came as a
 *   full value or as a delta; the value is complete either way)
 * - `onTraffic({bytes, messages, updates, deltas})`: per received frame, for bandwidth
 *   accounting; `updates` counts values delivered, `deltas` those of them that came as deltas
 * - `onStatus({state, detail, retryInMs, attempt})`
 * - `onEvent(event)`: every decoded TopicEvent, for logging
 */
export class TopicClient {
  /**
   * @param {object} options
   * @param {string} options.url the topic server's WebSocket URL
   * @param {string} options.selector the topic selector to subscribe to
   * @param {object} [options.socketOptions] passed to ReconnectingSocket (tests inject fakes)
   * @param {(u: {topic: Topic, value: unknown, via: 'value' | 'delta'}) => void} [options.onUpdate]
   * @param {(t: {bytes: number, messages: number, updates: number, deltas: number}) => void}
   *   [options.onTraffic]
   * @param {(s: {state: TopicClientState, detail: string | null, retryInMs: number | null,
   *   attempt: number}) => void} [options.onStatus]
   * @param {(e: TopicEvent) => void} [options.onEvent]
   * @param {{warn: (...args: unknown[]) => void}} [options.log] where warnings go (console)
   */
  constructor({
    url,
    selector,
    socketOptions = {},
    onUpdate = () => {},
    onTraffic = () => {},
    onStatus = () => {},
    onEvent = () => {},
    log = console,
  }) {
    this.selector = selector;
    this.decoder = new TopicDecoder();
    this.handlers = { onUpdate, onTraffic, onStatus, onEvent };
    this.log = log;
    this.nextCid = 1;
    this.subscribeCid = null;
    /** Whether the server accepted the subscription on this connection. */
    this.subscribed = false;
    /** @type {Map<number, string>} ids of topics whose value a failed delta left unknown, and why */
    this.failedTopics = new Map();
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
    this.subscribed = false;
    this.failedTopics.clear();
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
    const updates = events.filter((e) => e.kind === 'update');
    const deltas = updates.filter((e) => e.via === 'delta').length;
    this.handlers.onTraffic({ bytes, messages: events.length, updates: updates.length, deltas });
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
        if (event.cid === this.subscribeCid) {
          this.subscribed = true;
          this.reportSubscription();
        }
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
        if (this.failedTopics.delete(event.topic.id)) this.reportSubscription();
        this.handlers.onUpdate({ topic: event.topic, value: event.value, via: event.via });
        break;
      case 'delta-error':
        // Later deltas for the topic fail too (there is no base now): report the first cause.
        if (this.failedTopics.has(event.topic.id)) break;
        this.log.warn(`topic server: ${event.topic.path}: ${event.message}; dropped its value`);
        this.failedTopics.set(event.topic.id, `${event.topic.path}: ${event.message}`);
        this.reportSubscription();
        break;
      case 'unsubscribed':
        if (this.failedTopics.delete(event.id)) this.reportSubscription();
        break;
      default:
        break;
    }
  }

  /**
   * Reports the subscription's state once the server accepted it: `error` while some topic's
   * value is unknown after a failed delta (the next full value recovers it), else `subscribed`.
   * @private
   */
  reportSubscription() {
    if (!this.subscribed) return;
    const failures = [...this.failedTopics.values()];
    if (failures.length > 0) {
      this.report('error', `${failures.join('; ')} (waiting for a full value)`);
    } else {
      this.report('subscribed', `session ${this.session}`);
    }
  }
}
