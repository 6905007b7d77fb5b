// Applies fossil-format deltas (the format the topic server sends, see
// crates/diffusion-core/src/delta.rs) to the bytes of a topic value.
//
// The format work is done by the npm package `fossil-delta` (BSD licence). Version 2 ships a
// dependency-free ES module, so the page imports it straight from web/node_modules by relative
// path: no bundler, and Node tests run the very same file. This module is the only place that
// names the package; it pins down the calling convention (bytes in, bytes out) and turns every
// failure into a DeltaError, so a bad delta from the network is an ordinary, catchable result.
//
// A delta states its output size up front, and the package trusts it: it builds the output
// until that size is reached, and reads the size with 32-bit arithmetic, so a header declaring
// 4 GiB + 3 bytes passes as 3. The header is therefore read here, strictly and without
// overflow, and a delta declaring more than a limit is refused before the package sees it.

import { applyDelta } from '../node_modules/fossil-delta/fossil-delta.js';

/** The most output bytes a delta may declare (64 MiB), unless the caller sets a smaller limit. */
export const MAX_DELTA_OUTPUT_BYTES = 64 * 1024 * 1024;

/** A delta that does not apply to the bytes held (corrupt, truncated, or made for other bytes). */
export class DeltaError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'DeltaError';
  }
}

const SEMICOLON = 0x3b;
const NEWLINE = 0x0a;
/** The size header's digits and newline must fit in this many bytes. */
const MAX_HEADER_BYTES = 12;

/**
 * The value of one of fossil's base-64 digits (`0-9A-Z_a-z~`, in that order), or -1.
 * @param {number} byte
 */
function digitValue(byte) {
  if (byte >= 0x30 && byte <= 0x39) return byte - 0x30; // 0-9
  if (byte >= 0x41 && byte <= 0x5a) return byte - 0x41 + 10; // A-Z
  if (byte === 0x5f) return 36; // _
  if (byte >= 0x61 && byte <= 0x7a) return byte - 0x61 + 37; // a-z
  if (byte === 0x7e) return 63; // ~
  return -1;
}

/**
 * The output size a delta declares: one or more fossil base-64 digits, then a newline, within
 * the first MAX_HEADER_BYTES bytes. Computed in doubles, so large sizes stay large (at most 11
 * digits, about 2^66: imprecise up there, but far past any limit either way).
 *
 * @param {Uint8Array} delta
 * @returns {number}
 * @throws {DeltaError} when the header is malformed
 */
export function declaredDeltaSize(delta) {
  const end = delta.subarray(0, MAX_HEADER_BYTES).indexOf(NEWLINE);
  if (end < 0) throw new DeltaError(`delta has no output size (no newline in its first ${MAX_HEADER_BYTES} bytes)`);
  if (end === 0) throw new DeltaError('delta has no output size (empty size header)');
  let size = 0;
  for (let i = 0; i < end; i += 1) {
    const digit = digitValue(delta[i]);
    if (digit < 0) throw new DeltaError('delta output size is not a number');
    size = size * 64 + digit;
  }
  return size;
}

/**
 * Turns `base` into the new bytes `delta` describes. The delta's size header is checked first:
 * it must be well formed and declare at most `maxOutputBytes`, or the package is never called.
 * The package verifies the delta's checksum and that the output has the declared size (checked
 * again here); the delta must also end with its `;` terminator, so a delta cut short can never
 * pass.
 *
 * @param {Uint8Array} base the bytes the delta was made against
 * @param {Uint8Array} delta the raw delta (already base64-decoded)
 * @param {number} [maxOutputBytes] the most output bytes accepted; at most (and by default)
 *   MAX_DELTA_OUTPUT_BYTES
 * @returns {Uint8Array} the new bytes
 * @throws {DeltaError} when the delta does not apply, or declares more than `maxOutputBytes`
 * @throws {TypeError | RangeError} when called with the wrong types or an invalid limit
 */
export function applyFossilDelta(base, delta, maxOutputBytes = MAX_DELTA_OUTPUT_BYTES) {
  if (!(base instanceof Uint8Array) || !(delta instanceof Uint8Array)) {
    throw new TypeError('applyFossilDelta takes two Uint8Arrays');
  }
  if (!Number.isInteger(maxOutputBytes) || maxOutputBytes < 0 || maxOutputBytes > MAX_DELTA_OUTPUT_BYTES) {
    throw new RangeError(`maxOutputBytes must be an integer from 0 to ${MAX_DELTA_OUTPUT_BYTES}`);
  }
  if (delta.length === 0 || delta[delta.length - 1] !== SEMICOLON) {
    throw new DeltaError('delta is truncated (no checksum terminator)');
  }
  const declared = declaredDeltaSize(delta);
  if (declared > maxOutputBytes) {
    throw new DeltaError(
      `delta declares ${declared} output bytes, more than the limit of ${maxOutputBytes}`,
    );
  }
  let out;
  try {
    out = applyDelta(base, delta);
  } catch (err) {
    throw new DeltaError(err instanceof Error ? err.message : String(err));
  }
  // applyDelta returns the input's type for a Uint8Array base; insist on it (and on the size
  // the header declared) rather than trust it silently.
  if (!(out instanceof Uint8Array) || out.length !== declared) {
    throw new DeltaError('delta output has the wrong size');
  }
  return out;
}
