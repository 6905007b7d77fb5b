// Frame-level helpers shared by every socket client: how many bytes a frame really cost on the
// wire, how to read its text, and how the topic server packs several messages into one frame.
// Nothing here touches the DOM or a socket, so it runs (and is tested) under Node as well.

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * The payload size of one received WebSocket frame, in bytes.
 *
 * A text frame arrives as a JavaScript string, whose `.length` counts UTF-16 code units, not
 * bytes: "€" is 1 code unit but 3 bytes on the wire. The frame was valid UTF-8 (the browser
 * rejects anything else), so encoding the string again gives exactly the bytes that were sent.
 * Binary frames (ArrayBuffer, typed array views, Blob) report their own length.
 *
 * @param {string | ArrayBuffer | ArrayBufferView | Blob} data the `MessageEvent.data` of a frame
 * @returns {number}
 */
export function frameByteLength(data) {
  if (typeof data === 'string') return utf8Encoder.encode(data).byteLength;
  if (data instanceof ArrayBuffer) return data.byteLength;
  if (ArrayBuffer.isView(data)) return data.byteLength;
  if (typeof Blob !== 'undefined' && data instanceof Blob) return data.size;
  throw new TypeError(`not a WebSocket frame payload: ${Object.prototype.toString.call(data)}`);
}

/**
 * The text of a frame. Text frames are already strings; binary frames are decoded as UTF-8 and
 * rejected (TypeError) when they are not valid UTF-8, rather than silently mangled.
 *
 * @param {string | ArrayBuffer | ArrayBufferView} data
 * @returns {string}
 */
export function frameText(data) {
  if (typeof data === 'string') return data;
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) return utf8Decoder.decode(data);
  throw new TypeError(`cannot read text from ${Object.prototype.toString.call(data)}`);
}

/** Separates the messages the topic server packs into one text frame (protocol.rs). */
export const MESSAGE_SEPARATOR = '\n';

/**
 * Splits one topic-server frame into its messages. Compact JSON never contains a raw newline,
 * so the separator cannot occur inside a message; empty pieces (a trailing separator) are
 * dropped.
 *
 * @param {string} text the frame's text
 * @returns {string[]} one JSON text per message, in order
 */
export function splitFrame(text) {
  return text.split(MESSAGE_SEPARATOR).filter((message) => message.length > 0);
}
