// The topic-server wire protocol, versions 2 and 1 (docs/protocol.md,
// crates/diffusion-core/src/protocol.rs): what the client sends, and how one server message
// reads. Stateless; TopicDecoder (topic-client.js) applies the messages to its topic table.
//
// Every server message is read into its normalised form: the long tagged form
// (`{"type":"value","id":4,"value":17}`, never the short `{"i":4,"v":17}`), with only the fields
// this protocol defines, plus the version-2 sequence number `s` when the message carries one.
// Unknown fields are dropped and unknown message types are kept as `{type, s}` so the caller can
// skip them while still counting their sequence number: both are how the protocol lets a newer
// server talk to this client.

import { rawMemberText } from './json-members.js';

/** The versions this client speaks, newest first, as offered in `connect`. */
export const PROTOCOL_VERSIONS = Object.freeze([2, 1]);

/** The first version with sequence numbers, heartbeats and session recovery. */
export const SEQUENCED_VERSION = 2;

/** A message that is not valid for the protocol (the rest of its frame still decodes). */
export class ProtocolError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'ProtocolError';
  }
}

/**
 * The `connect` request: every version spoken, and the session to take back when there is one.
 * @param {{token: string, s: number} | null} [resume]
 * @returns {string}
 */
export function encodeConnect(resume = null) {
  const hello = { type: 'connect', versions: [...PROTOCOL_VERSIONS] };
  if (resume) hello.resume = { token: resume.token, s: resume.s };
  return JSON.stringify(hello);
}

/**
 * The `ack` telling a version-2 server every message up to `s` was processed.
 * @param {number} s
 */
export function encodeAck(s) {
  return JSON.stringify({ type: 'ack', s });
}

/**
 * @param {number} cid correlation id of the request
 * @param {string} selector
 */
export function encodeSubscribe(cid, selector) {
  return JSON.stringify({ type: 'subscribe', cid, selector });
}

// ---- field readers: each returns the field's normalised value, or throws ProtocolError ----

const isUint = (v) => Number.isSafeInteger(v) && v >= 0;
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

function pick(fields, spec, from, type) {
  const out = {};
  for (const [key, [read, required]] of Object.entries(spec)) {
    if (!(key in from) || (from[key] === undefined)) {
      if (required) throw new ProtocolError(`${type}: no "${key}" field`);
      continue;
    }
    const value = read(from[key]);
    if (value === undefined) throw new ProtocolError(`${type}: "${key}" has the wrong type`);
    out[key] = value;
  }
  return Object.assign(fields, out);
}

const uint = (v) => (isUint(v) ? v : undefined);
const string = (v) => (typeof v === 'string' ? v : undefined);
const bool = (v) => (typeof v === 'boolean' ? v : undefined);
const any = (v) => v;
const stringMap = (v) => {
  if (!isObject(v) || !Object.values(v).every((x) => typeof x === 'string')) return undefined;
  return { ...v };
};
/** An array whose items are normalised by `spec` (items that do not fit fail the message). */
const listOf = (spec, what) => (v) => {
  if (!Array.isArray(v)) return undefined;
  return v.map((item) => {
    if (!isObject(item)) throw new ProtocolError(`${what}: an item is not an object`);
    return pick({}, spec, item, what);
  });
};

const LIMITS = {
  maxMessageBytes: [uint, false],
  queueLimitBytes: [uint, false],
  heartbeatIntervalMs: [uint, false],
  heartbeatTimeoutMs: [uint, false],
  reconnectWindowMs: [uint, false],
};
const limits = (v) => (isObject(v) ? pick({}, LIMITS, v, 'limits') : undefined);

/**
 * The fields of each server message type: reader and whether it is required. Leniency here is
 * deliberate where an absent field has an obvious meaning (a delta without its data is handled as
 * a delta that does not apply, so the topic's value is dropped rather than the message ignored).
 */
const SCHEMAS = {
  connected: {
    version: [uint, true],
    session: [string, false],
    token: [string, false],
    recovered: [bool, false],
    reason: [string, false],
    limits: [limits, false],
  },
  heartbeat: {},
  ok: { cid: [uint, true] },
  error: { cid: [uint, false], code: [string, false], message: [string, false] },
  subscribed: {
    id: [uint, true],
    path: [string, true],
    topicType: [string, false],
    properties: [stringMap, false],
  },
  value: { id: [uint, true], value: [any, true] },
  delta: { id: [uint, true], delta: [any, false] },
  unsubscribed: { id: [uint, true], path: [string, false], reason: [string, false] },
  fetched: {
    cid: [uint, true],
    topics: [listOf({ path: [string, true], topicType: [string, true], value: [any, false] }, 'fetched topic'), true],
    more: [bool, false],
  },
  views: {
    cid: [uint, true],
    views: [listOf({ name: [string, true], spec: [string, true] }, 'view'), true],
  },
  pong: { cid: [uint, true] },
};

/**
 * One server message read.
 * @typedef {object} ParsedMessage
 * @property {{type: string, s?: number} & Record<string, unknown>} message the normalised form
 * @property {boolean} known whether the type is one this client knows (unknown ones are skipped)
 * @property {string | null} rawValue for `value` messages: the value's exact text on the wire
 */

/**
 * Reads one server message (one piece of a frame split on `\n`).
 * @param {string} text
 * @returns {ParsedMessage}
 * @throws {ProtocolError} when it is not JSON or not a valid message
 */
export function parseServerMessage(text) {
  let m;
  try {
    m = JSON.parse(text);
  } catch (err) {
    throw new ProtocolError(`not JSON: ${err.message}`);
  }
  if (!isObject(m)) throw new ProtocolError('message is not a JSON object');
  let s;
  if ('s' in m) {
    if (!isUint(m.s)) throw new ProtocolError('"s" is not a sequence number');
    s = m.s;
  }
  const withSeq = (message) => (s === undefined ? message : Object.assign(message, { s }));

  // The short update form: a numeric `i` and no `type`.
  if (!('type' in m) && 'i' in m) {
    if (!isUint(m.i)) throw new ProtocolError('update without a numeric "i"');
    if ('v' in m && !('d' in m)) {
      return {
        message: withSeq({ type: 'value', id: m.i, value: m.v }),
        known: true,
        rawValue: rawMemberText(text, 'v'),
      };
    }
    if ('d' in m && !('v' in m)) {
      return { message: withSeq({ type: 'delta', id: m.i, delta: m.d }), known: true, rawValue: null };
    }
    throw new ProtocolError('update needs exactly one of "v" and "d"');
  }
  if (typeof m.type !== 'string') throw new ProtocolError('message has no string "type"');
  const schema = Object.hasOwn(SCHEMAS, m.type) ? SCHEMAS[m.type] : null;
  if (schema === null) return { message: withSeq({ type: m.type }), known: false, rawValue: null };
  const message = pick({ type: m.type }, schema, m, m.type);
  return {
    message: withSeq(message),
    known: true,
    rawValue: m.type === 'value' ? rawMemberText(text, 'value') : null,
  };
}
