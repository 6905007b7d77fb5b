// Finds the exact source text of one member of a JSON object, without parsing its value.
//
// Why: a JSON topic's delta base is the value's text exactly as the server wrote it
// (topic-values.js). JSON.parse cannot give that text back (it reformats numbers and loses
// digits past 2^53), and the member is not at a fixed place in the message: in version 2 the
// sequence number `s` follows `v`, and a server may add fields in any order. So the decoder walks
// the top-level object here, skipping over each member's value (strings with their escapes,
// nested objects and arrays) and cuts out the one it wants.
//
// The scanner only finds boundaries; it is not a validator. Callers JSON.parse the whole message
// as well, which rejects anything malformed, so the text returned is only used for messages that
// are valid JSON.

const QUOTE = 0x22; // "
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const OPEN_OBJECT = 0x7b; // {
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b; // [
const CLOSE_ARRAY = 0x5d;

/** JSON's four whitespace characters. */
function isSpace(code) {
  return code === 0x20 || code === 0x0a || code === 0x0d || code === 0x09;
}

function skipSpace(text, at) {
  while (at < text.length && isSpace(text.charCodeAt(at))) at += 1;
  return at;
}

/**
 * The index just past the string starting at `at` (an opening quote), or -1 when it never ends.
 * A backslash always escapes the next character, so `\"` and `\\` are handled alike.
 */
function skipString(text, at) {
  for (let i = at + 1; i < text.length; i += 1) {
    const code = text.charCodeAt(i);
    if (code === BACKSLASH) i += 1;
    else if (code === QUOTE) return i + 1;
  }
  return -1;
}

/**
 * The index just past the JSON value starting at `at`, or -1 when it runs off the end. Objects
 * and arrays are skipped by counting brackets outside strings; numbers and literals run until a
 * delimiter.
 */
function skipValue(text, at) {
  const first = text.charCodeAt(at);
  if (first === QUOTE) return skipString(text, at);
  if (first === OPEN_OBJECT || first === OPEN_ARRAY) {
    let depth = 0;
    for (let i = at; i < text.length; i += 1) {
      const code = text.charCodeAt(i);
      if (code === QUOTE) {
        i = skipString(text, i);
        if (i < 0) return -1;
        i -= 1; // the loop steps past the closing quote
      } else if (code === OPEN_OBJECT || code === OPEN_ARRAY) {
        depth += 1;
      } else if (code === CLOSE_OBJECT || code === CLOSE_ARRAY) {
        depth -= 1;
        if (depth === 0) return i + 1;
      }
    }
    return -1;
  }
  let i = at;
  while (i < text.length) {
    const code = text.charCodeAt(i);
    if (code === COMMA || code === CLOSE_OBJECT || code === CLOSE_ARRAY || isSpace(code)) break;
    i += 1;
  }
  return i > at ? i : -1;
}

/**
 * The exact text of the value of member `name` of the top-level JSON object `text` (without the
 * whitespace around it), or null when `text` is not an object, has no such member, or is cut
 * short. Keys are compared after unescaping (`"\u0076"` is `v`); when a key occurs twice the last
 * one wins, as with JSON.parse.
 *
 * @param {string} text one JSON object
 * @param {string} name the member's key
 * @returns {string | null}
 */
export function rawMemberText(text, name) {
  let at = skipSpace(text, 0);
  if (text.charCodeAt(at) !== OPEN_OBJECT) return null;
  at = skipSpace(text, at + 1);
  if (text.charCodeAt(at) === CLOSE_OBJECT) return null;
  let found = null;
  for (;;) {
    if (text.charCodeAt(at) !== QUOTE) return null;
    const keyEnd = skipString(text, at);
    if (keyEnd < 0) return null;
    const rawKey = text.slice(at, keyEnd);
    at = skipSpace(text, keyEnd);
    if (text.charCodeAt(at) !== COLON) return null;
    const valueStart = skipSpace(text, at + 1);
    const valueEnd = skipValue(text, valueStart);
    if (valueEnd < 0) return null;
    if (keyMatches(rawKey, name)) found = text.slice(valueStart, valueEnd);
    at = skipSpace(text, valueEnd);
    const next = text.charCodeAt(at);
    if (next === CLOSE_OBJECT) return found;
    if (next !== COMMA) return null;
    at = skipSpace(text, at + 1);
  }
}

/** Whether a quoted key (as it appears in the text) names `name`. */
function keyMatches(rawKey, name) {
  // The common case needs no unescaping: compare the text between the quotes.
  if (!rawKey.includes('\\')) return rawKey.length === name.length + 2 && rawKey.slice(1, -1) === name;
  try {
    return JSON.parse(rawKey) === name;
  } catch {
    return false;
  }
}
