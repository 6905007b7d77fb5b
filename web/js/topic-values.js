// Topic values as bytes: the "canonical bytes" the topic server computes deltas over
// (crates/diffusion-core/src/value.rs), and the way back from those bytes to the value the page
// is given. Free of the DOM, so Node tests exercise it directly.
//
// Canonical bytes per topic type:
// - JSON: the UTF-8 bytes of the value's compact JSON text, exactly as the server wrote it
//   (keys sorted, its own number formatting). The decoder therefore keeps the value's raw text
//   from the `value` message; re-serialising the parsed value could format numbers differently.
// - STRING: the UTF-8 bytes of the string.
// - BINARY: the raw bytes (the wire carries them as base64).
// - INT64, DOUBLE: never receive deltas, so nothing is kept for them.

/** Topic types the server may send deltas for. */
export const DELTA_TOPIC_TYPES = new Set(['JSON', 'STRING', 'BINARY']);

const utf8Encoder = new TextEncoder();
// fatal: bytes that are not UTF-8 mean a broken delta; never turn them into U+FFFD silently.
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Decodes standard, padded base64 (what the server's encoder produces). Anything else, including
 * whitespace or missing padding, is refused rather than guessed at.
 * @param {string} text
 * @returns {Uint8Array}
 * @throws {TypeError} when `text` is not base64
 */
export function base64ToBytes(text) {
  if (typeof text !== 'string' || !BASE64.test(text)) throw new TypeError('not valid base64');
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/**
 * Encodes bytes as standard, padded base64 (the wire form of BINARY values).
 * @param {Uint8Array} bytes
 * @returns {string}
 */
export function bytesToBase64(bytes) {
  let binary = '';
  const CHUNK = 0x8000; // keeps String.fromCharCode's argument list small
  for (let i = 0; i < bytes.length; i += CHUNK) {
    binary += String.fromCharCode(...bytes.subarray(i, i + CHUNK));
  }
  return btoa(binary);
}

/**
 * The canonical bytes of a value received in full, or null when the topic keeps none (a type
 * without deltas, a STRING or BINARY topic with no value, or a BINARY value that is not base64).
 *
 * @param {string} topicType
 * @param {unknown} value the parsed wire value
 * @param {string} rawJson the value's exact JSON text on the wire (used for JSON topics)
 * @returns {Uint8Array | null}
 */
export function canonicalBytes(topicType, value, rawJson) {
  switch (topicType) {
    case 'JSON':
      return utf8Encoder.encode(rawJson);
    case 'STRING':
      return typeof value === 'string' ? utf8Encoder.encode(value) : null;
    case 'BINARY':
      if (typeof value !== 'string') return null;
      try {
        return base64ToBytes(value);
      } catch {
        return null;
      }
    default:
      return null;
  }
}

/**
 * The value canonical bytes stand for, in the same form a `value` message carries: parsed JSON,
 * a string, or base64 for BINARY.
 *
 * @param {string} topicType
 * @param {Uint8Array} bytes
 * @returns {unknown}
 * @throws {TypeError | SyntaxError} when the bytes are not a valid value of the type
 */
export function valueFromCanonical(topicType, bytes) {
  switch (topicType) {
    case 'JSON':
      return JSON.parse(utf8Decoder.decode(bytes));
    case 'STRING':
      return utf8Decoder.decode(bytes);
    case 'BINARY':
      return bytesToBase64(bytes);
    default:
      throw new TypeError(`${topicType} topics do not take deltas`);
  }
}

/**
 * The JSON text of the value canonical bytes stand for, keeping every digit of a JSON topic's
 * numbers (the bytes are that text); STRING and BINARY values become JSON strings.
 *
 * @param {string} topicType
 * @param {Uint8Array} bytes
 * @returns {string}
 * @throws {TypeError} when the bytes are not a valid value of the type
 */
export function valueTextFromCanonical(topicType, bytes) {
  if (topicType === 'JSON') return utf8Decoder.decode(bytes);
  return JSON.stringify(valueFromCanonical(topicType, bytes));
}
