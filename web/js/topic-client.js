// The topic-server client: speaks the wire protocol (crates/diffusion-core/src/protocol.rs,
// docs/protocol.md; versions 2 and 1, see protocol.js) over a ReconnectingSocket and hands the
// page full topic values only.
//
// Decoding lives in TopicDecoder, which keeps every subscribed topic's current value and its
// canonical bytes, and (version 2) the sequence number of the last message processed. An update
// arrives either as a full `value` message or as a `delta` (a fossil delta, base64, against the
// canonical bytes held here); either way the page receives the complete new value and never sees
// a delta.

import { applyFossilDelta } from './fossil.js';
import { deadAfterMs, SilenceWatchdog } from './liveness.js';
import {
  encodeAck,
  encodeConnect,
  encodeSubscribe,
  parseServerMessage,
  PROTOCOL_VERSIONS,
  SEQUENCED_VERSION,
} from './protocol.js';
import { ReconnectingSocket } from './reconnecting-socket.js';
import {
  base64ToBytes,
  canonicalBytes,
  DELTA_TOPIC_TYPES,
  valueFromCanonical,
  valueTextFromCanonical,
} from './topic-values.js';
import { frameText, splitFrame } from './wire.js';


/** Close codes of a server that refused this client (docs/protocol.md §6, close codes): no retry. */
export const REFUSAL_CLOSE_CODES = [1002, 4003, 4004];
/** Handshake errors that the server follows with one of those closes. */
const REFUSAL_ERROR_CODES = new Set(['AUTHENTICATION_FAILED', 'RATE_LIMITED', 'UNSUPPORTED_VERSION']);

/** The newest protocol version this client speaks (it offers every one in PROTOCOL_VERSIONS). */
export const PROTOCOL_VERSION = PROTOCOL_VERSIONS[0];

/**
 * A version-2 client acks unprompted after this many messages, so the server can free its
 * recovery buffer between heartbeats.
 */
export const ACK_EVERY_MESSAGES = 256;

/**
 * A topic the session is subscribed to.
 * @typedef {object} Topic
 * @property {number} id topic id from `subscribed` (valid for the session)
 * @property {string} path
 * @property {string} topicType JSON, STRING, INT64, DOUBLE or BINARY
 * @property {Record<string, string>} properties
 * @property {unknown} value current value (undefined until the first one, and after a delta
 *   failed to apply)
 * @property {string | null} valueText the current value's JSON text exactly as the server sent
 *   it (or, after a delta, as it follows from the canonical bytes): numbers keep every digit,
 *   which `value` cannot past 2^53
 * @property {Uint8Array | null} canonical the current value's canonical bytes, the base the next
 *   delta applies to (null for types without deltas, and until a full value arrives)
 * @property {string | null} error why the value is unknown (a delta failed), until the next full
 *   value
 */

/**
 * What one decoded message means for the page. Every event but `protocol-error` carries the
 * message's normalised form (`wire`, see protocol.js) and its sequence number `s` (undefined
 * without one); a `value` message's event also has `rawValue`, the value's exact wire text.
 * @typedef {({kind: 'connected', version: number, session: string, token: string | null,
 *     recovered: boolean | null, reason: string | null, limits: object | null}
 *   | {kind: 'heartbeat'}
 *   | {kind: 'ok', cid: number}
 *   | {kind: 'error', cid: number | null, code: string, message: string}
 *   | {kind: 'subscribed', topic: Topic}
 *   | {kind: 'update', topic: Topic, value: unknown, via: 'value' | 'delta'}
 *   | {kind: 'delta-error', topic: Topic, message: string}
 *   | {kind: 'unsubscribed', topic: Topic | null, id: number, path: string, reason: string}
 *   | {kind: 'pong', cid: number}
 *   | {kind: 'fetched', cid: number, topics: unknown[]}
 *   | {kind: 'views', cid: number, views: unknown[]}
 *   | {kind: 'ignored'}
 *   | {kind: 'duplicate'}
 *   | {kind: 'sequence-gap', expected: number}
 *   | {kind: 'protocol-error', message: string, text: string})
 *   & {wire?: object, s?: number, rawValue?: string}} TopicEvent
 */

/**
 * The exact wire text of the value in a value update (`{"i":N,"v":...}` or
 * `{"type":"value","id":N,"value":...}`, fields in any order), or null when the text is not one.
 * @param {string} message
 * @returns {string | null}
 */
export function rawValueText(message) {
  try {
    const parsed = parseServerMessage(message);
    return parsed.message.type === 'value' ? parsed.rawValue : null;
  } catch {
    return null;
  }
}

/** Turns server frames into events, tracking the subscribed topics and their values. */
export class TopicDecoder {
  constructor() {
    /** @type {Map<number, Topic>} */
    this.topics = new Map();
    /** Sequence number of the last message processed in this session (0: none yet). */
    this.lastSeq = 0;
  }

  /** Forgets every topic and the sequence (a new session: ids are only valid per session). */
  reset() {
    this.topics.clear();
    this.lastSeq = 0;
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
   * Decodes one message and applies it to the topic table. A sequenced message (version 2) is
   * applied only when it is the next one: one already processed (a replay overlapping what
   * arrived before the connection dropped) becomes `duplicate` and changes nothing, and one
   * past a missing number becomes `sequence-gap` (the caller resumes from `lastSeq`).
   * @param {string} text one message
   * @returns {TopicEvent}
   */
  decodeMessage(text) {
    let parsed;
    try {
      parsed = parseServerMessage(text);
    } catch (err) {
      return { kind: 'protocol-error', message: err.message, text };
    }
    const { message } = parsed;
    const s = message.s;
    if (s !== undefined) {
      if (s <= this.lastSeq) return { kind: 'duplicate', wire: message, s };
      if (s !== this.lastSeq + 1) {
        return { kind: 'sequence-gap', expected: this.lastSeq + 1, wire: message, s };
      }
      this.lastSeq = s;
    }
    const event = parsed.known ? this.apply(message, parsed.rawValue, text) : { kind: 'ignored' };
    Object.assign(event, { wire: message, s });
    if (parsed.rawValue !== null) event.rawValue = parsed.rawValue;
    return event;
  }

  /**
   * @private
   * @param {Record<string, any>} m a normalised message
   * @param {string | null} rawValue the value's wire text, for `value` messages
   * @param {string} text the whole message, for error reports
   * @returns {TopicEvent}
   */
  apply(m, rawValue, text) {
    switch (m.type) {
      case 'connected':
        // A recovered session keeps its topic ids and sequence; anything else is a new session.
        if (m.recovered !== true) this.reset();
        return {
          kind: 'connected',
          version: m.version,
          session: m.session ?? '',
          token: m.token ?? null,
          recovered: m.recovered ?? null,
          reason: m.reason ?? null,
          limits: m.limits ?? null,
        };
      case 'heartbeat':
        return { kind: 'heartbeat' };
      case 'ok':
        return { kind: 'ok', cid: m.cid };
      case 'pong':
        return { kind: 'pong', cid: m.cid };
      case 'error':
        return {
          kind: 'error',
          cid: m.cid ?? null,
          code: m.code ?? 'UNKNOWN',
          message: m.message ?? '',
        };
      case 'fetched':
        return { kind: 'fetched', cid: m.cid, topics: m.topics };
      case 'views':
        return { kind: 'views', cid: m.cid, views: m.views };
      case 'subscribed': {
        const topic = {
          id: m.id,
          path: m.path,
          topicType: m.topicType ?? '',
          properties: m.properties ?? {},
          value: undefined,
          valueText: null,
          canonical: null,
          error: null,
        };
        this.topics.set(m.id, topic);
        return { kind: 'subscribed', topic };
      }
      case 'value':
        // rawValue is null only if the scanner and JSON.parse disagree, which they should not;
        // re-serialising is then the best base left (the next delta may fail its checksum, and
        // the value after it recovers).
        return this.fullValue(m.id, m.value, rawValue ?? JSON.stringify(m.value), text);
      case 'delta':
        return this.applyDelta(m.id, m.delta, text);
      case 'unsubscribed': {
        const topic = this.topics.get(m.id) ?? null;
        this.topics.delete(m.id);
        return {
          kind: 'unsubscribed',
          topic,
          id: m.id,
          path: m.path ?? topic?.path ?? '',
          reason: m.reason ?? '',
        };
      }
      default:
        return { kind: 'ignored' };
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
    topic.valueText = rawJson;
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
        topic.valueText = valueTextFromCanonical(topic.topicType, bytes);
        topic.error = null;
        return { kind: 'update', topic, value, via: 'delta' };
      } catch (err) {
        failure = err instanceof Error ? err.message : String(err);
      }
    }
    topic.canonical = null;
    topic.value = undefined;
    topic.valueText = null;
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
 * With a version-2 server the session survives a lost connection: the client keeps the
 * session's token and the sequence number of the last message it processed, reconnects (with
 * back-off) and sends `resume`; when the server recovers the session, the messages it missed
 * follow and nothing is lost or repeated; when it does not, the topic table is reset and the
 * client subscribes again. It answers `heartbeat` with `ack`, also acks every
 * ACK_EVERY_MESSAGES messages, and drops a connection on which nothing at all arrived for
 * heartbeatIntervalMs + heartbeatTimeoutMs (close code 4000) to resume on a new one.
 *
 * Callbacks:
 * - `onUpdate({topic, value, via, s})`: a topic's new full value (`via` says whether it came as
 *   a full value or as a delta; the value is complete either way; `s` is its sequence number,
 *   undefined on version 1)
 * - `onTraffic({bytes, messages, updates, deltas})`: per received frame, for bandwidth
 *   accounting; `updates` counts values delivered, `deltas` those of them that came as deltas
 * - `onStatus({state, detail, retryInMs, attempt})`
 * - `onEvent(event)`: every decoded TopicEvent, for logging
 */
export class TopicClient {
  /**
   * @param {object} options
   * @param {string | string[]} options.url the topic server's WebSocket URL, or several (the
   *   nodes of one deployment; see ReconnectingSocket)
   * @param {string} options.selector the topic selector to subscribe to
   * @param {object} [options.socketOptions] passed to ReconnectingSocket (tests inject fakes;
   *   its `timers` and `now` also drive the dead-connection watchdog)
   * @param {(u: {topic: Topic, value: unknown, via: 'value' | 'delta', s?: number}) => void}
   *   [options.onUpdate]
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
    /** @type {Set<number>} cids of our `subscribe` requests in this session (see resumed()) */
    this.subscribeCids = new Set();
    /** Whether the server accepted the subscription in this session. */
    this.subscribed = false;
    /** @type {Map<number, string>} ids of topics whose value a failed delta left unknown, and why */
    this.failedTopics = new Map();
    this.session = null;
    /** The protocol version of the current session (null before the first `connected`). */
    this.version = null;
    /** The token that resumes the session (version 2 only). */
    this.token = null;
    /** The `limits` of the current session's `connected` (version 2). */
    this.limits = null;
    /** lastSeq when the last sequence gap was seen (null: none in this session). */
    this.gapAtSeq = null;
    /** Sequenced messages processed since the last `ack`. */
    this.unacked = 0;
    this.phase = 'idle';
    this.watchdog = new SilenceWatchdog({
      timers: socketOptions.timers ?? globalThis,
      now: socketOptions.now ?? Date.now,
      onSilence: () => this.silent(),
    });
    this.socket = new ReconnectingSocket({
      ...socketOptions,
      url,
      onStatus: (s) => this.socketStatus(s),
      onOpen: () => this.opened(),
      onFrame: (f) => this.frame(f),
      onClose: () => this.closed(),
      // The server refused this client (unsupported version, authentication failed, token
      // expired): reconnecting would only be refused again.
      finalCloseCodes: REFUSAL_CLOSE_CODES,
    });
  }

  /** Connects, and keeps reconnecting until stopped. */
  start() {
    this.socket.start();
  }

  /** Disconnects for good: the close (code 1000) also ends the session on the server. */
  stop() {
    this.watchdog.disarm();
    this.token = null;
    this.socket.stop();
  }

  /** The sequence number of the last message processed (0: none, or version 1). */
  get lastSeq() {
    return this.decoder.lastSeq;
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
    const resume = this.token === null ? null : { token: this.token, s: this.decoder.lastSeq };
    this.socket.send(encodeConnect(resume));
    this.report('handshaking', resume ? `resuming session ${this.session}` : null);
  }

  /** @private */
  closed() {
    this.watchdog.disarm();
    // Without a token there is nothing to resume: the next session starts afresh anyway.
    if (this.token === null) this.decoder.reset();
  }

  /** @private Nothing arrived for too long: drop the connection and resume on a new one. */
  silent() {
    const ms = deadAfterMs(this.limits);
    this.log.warn(`topic server: nothing received for ${ms} ms; reconnecting`);
    this.socket.fail(`no frame for ${ms} ms (heartbeat missed)`);
  }

  /** @private */
  frame({ data, bytes }) {
    this.watchdog.heard();
    let events;
    try {
      events = this.decoder.decodeFrame(frameText(data));
    } catch (err) {
      events = [{ kind: 'protocol-error', message: `unreadable frame: ${err.message}`, text: '' }];
    }
    const updates = events.filter((e) => e.kind === 'update');
    const deltas = updates.filter((e) => e.via === 'delta').length;
    this.handlers.onTraffic({ bytes, messages: events.length, updates: updates.length, deltas });
    for (const event of events) {
      // A handler may have dropped the connection (a gap, a refused handshake): the rest of
      // the frame belongs to the connection that is gone.
      if (!this.handle(event)) break;
    }
    if (this.unacked >= ACK_EVERY_MESSAGES) this.ack();
  }

  /** @private Tells a version-2 server what was processed, so it can free its replay buffer. */
  ack() {
    if (this.version === null || this.version < SEQUENCED_VERSION) return;
    this.socket.send(encodeAck(this.decoder.lastSeq));
    this.unacked = 0;
  }

  /**
   * @private
   * @returns {boolean} false when the connection was dropped
   */
  handle(event) {
    this.handlers.onEvent(event);
    if (event.s !== undefined && event.kind !== 'duplicate' && event.kind !== 'sequence-gap') {
      this.unacked += 1;
    }
    switch (event.kind) {
      case 'connected':
        this.connected(event);
        break;
      case 'heartbeat':
        this.ack();
        break;
      case 'sequence-gap':
        // A message is missing: resuming from the last one processed gets it replayed (or a
        // new session when the server cannot), rather than carrying on with a hole. If the
        // resumed session shows a hole at the same place again, the server cannot replay it:
        // start a new session (subscribe afresh) instead of resuming in a loop.
        if (this.gapAtSeq === this.decoder.lastSeq) {
          this.log.warn(`topic server: messages after ${event.expected - 1} are missing again; starting a new session`);
          this.token = null;
        } else {
          this.log.warn(`topic server: expected message ${event.expected}, got ${event.s}; resuming`);
        }
        this.gapAtSeq = this.decoder.lastSeq;
        this.socket.fail(`sequence gap: expected ${event.expected}, got ${event.s}`);
        return false;
      case 'ok':
        if (this.subscribeCids.has(event.cid) && !this.subscribed) {
          this.subscribed = true;
          this.reportSubscription();
        }
        break;
      case 'error':
        if (event.cid === null || this.subscribeCids.has(event.cid)) {
          // Before the handshake completes (no cid), an error means the session is unusable.
          if (this.phase === 'handshaking') {
            // A refusal is followed by the server's close (4003, 1002), which stops retrying;
            // any other error means this attempt is unusable, so try again.
            if (REFUSAL_ERROR_CODES.has(event.code)) {
              this.report('error', `${event.code}: ${event.message}`);
              return false;
            }
            this.socket.fail(`${event.code}: ${event.message}`);
            return false;
          }
          this.report('error', `${event.code}: ${event.message}`);
        }
        break;
      case 'update':
        if (this.failedTopics.delete(event.topic.id)) this.reportSubscription();
        this.handlers.onUpdate({ topic: event.topic, value: event.value, via: event.via, s: event.s });
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
        // heartbeat-free kinds the page does not act on: pong, fetched, views, ignored
        // (unknown types), duplicate (already processed before a resume), protocol-error.
        break;
    }
    return true;
  }

  /** @private */
  connected(event) {
    this.version = event.version;
    this.session = event.session;
    this.limits = event.limits;
    const sequenced = event.version >= SEQUENCED_VERSION;
    this.token = sequenced ? event.token : null;
    this.unacked = 0;
    const silence = sequenced ? deadAfterMs(event.limits) : null;
    if (silence === null) this.watchdog.disarm();
    else this.watchdog.arm(silence);
    if (event.recovered === true) {
      this.resumed();
      return;
    }
    if (event.recovered === false) {
      this.log.warn(`topic server: session not recovered (${event.reason ?? 'no reason given'}); subscribing again`);
    }
    // A new session (the decoder has already forgotten the old one's topics): subscribe afresh.
    this.gapAtSeq = null;
    this.subscribed = false;
    this.subscribeCids.clear();
    this.failedTopics.clear();
    this.subscribe();
  }

  /** @private The server took the session back: topics, ids and subscription are as they were. */
  resumed() {
    if (this.subscribed) {
      this.reportSubscription();
      return;
    }
    // The connection dropped between `subscribe` and its `ok`. If the server got the request,
    // its reply is among the replayed messages; if not, nothing would ever come, so ask again.
    // Either `ok` completes the subscription (see subscribeCids).
    this.subscribe();
  }

  /** @private */
  subscribe() {
    const cid = this.nextCid++;
    this.subscribeCids.add(cid);
    this.socket.send(encodeSubscribe(cid, this.selector));
    this.report('subscribing', `session ${this.session}`);
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
