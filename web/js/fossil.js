// Applies fossil-format deltas (the format the topic server sends, see
// crates/diffusion-core/src/delta.rs) to the bytes of a topic value.
//
// The format work is done by the npm package `fossil-delta` (BSD licence). Version 2 ships a
// dependency-free ES module, so the page imports it straight from web/node_modules by relative
// path: no bundler, and Node tests run the very same file. This module is the only place that
// names the package; it pins down the calling convention (bytes in, bytes out) and turns every
// failure into a DeltaError, so a bad delta from the network is an ordinary, catchable result.

import { applyDelta, getDeltaTargetSize } from '../node_modules/fossil-delta/fossil-delta.js';

/** A delta that does not apply to the bytes held (corrupt, truncated, or made for other bytes). */
export class DeltaError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = 'DeltaError';
  }
}

const SEMICOLON = 0x3b;

/**
 * Turns `base` into the new bytes `delta` describes. The package verifies the delta's checksum
 * and its declared output size; on top of that the delta must end with its `;` terminator, so
 * a delta cut short can never pass.
 *
 * @param {Uint8Array} base the bytes the delta was made against
 * @param {Uint8Array} delta the raw delta (already base64-decoded)
 * @returns {Uint8Array} the new bytes
 * @throws {DeltaError} when the delta does not apply
 */
export function applyFossilDelta(base, delta) {
  if (!(base instanceof Uint8Array) || !(delta instanceof Uint8Array)) {
    throw new TypeError('applyFossilDelta takes two Uint8Arrays');
  }
  if (delta.length === 0 || delta[delta.length - 1] !== SEMICOLON) {
    throw new DeltaError('delta is truncated (no checksum terminator)');
  }
  let out;
  try {
    out = applyDelta(base, delta);
  } catch (err) {
    throw new DeltaError(err instanceof Error ? err.message : String(err));
  }
  // applyDelta returns the input's type for a Uint8Array base; insist on it (and on the size
  // the header declared) rather than trust it silently.
  if (!(out instanceof Uint8Array) || out.length !== getDeltaTargetSize(delta)) {
    throw new DeltaError('delta output has the wrong size');
  }
  return out;
}
