import assert from 'node:assert/strict';
import { test } from 'node:test';

import { addFrame, bytesPerUpdate, emptyTally, savingPercent } from '../js/metrics.js';

test('addFrame accumulates without mutating the old tally', () => {
  const start = emptyTally();
  const one = addFrame(start, { bytes: 120, updates: 1 });
  const two = addFrame(one, { bytes: 300, messages: 3, updates: 2, deltas: 2 });
  assert.deepEqual(start, { frames: 0, messages: 0, updates: 0, deltas: 0, bytes: 0 });
  assert.deepEqual(one, { frames: 1, messages: 1, updates: 1, deltas: 0, bytes: 120 });
  assert.deepEqual(two, { frames: 2, messages: 4, updates: 3, deltas: 2, bytes: 420 });
});

test('addFrame refuses counts that are not whole and non-negative', () => {
  assert.throws(() => addFrame(emptyTally(), { bytes: -1 }), RangeError);
  assert.throws(() => addFrame(emptyTally(), { bytes: 1.5 }), RangeError);
  assert.throws(() => addFrame(emptyTally(), { bytes: 10, updates: Number.NaN }), RangeError);
  assert.throws(() => addFrame(emptyTally(), {}), RangeError);
  assert.throws(() => addFrame(emptyTally(), { bytes: 10, updates: 1, deltas: -1 }), RangeError);
  assert.throws(() => addFrame(emptyTally(), { bytes: 10, updates: 1, deltas: 2 }), /cannot exceed/);
});

test('bytesPerUpdate includes control traffic and is null before any update', () => {
  assert.equal(bytesPerUpdate(emptyTally()), null);
  let t = addFrame(emptyTally(), { bytes: 60, messages: 1, updates: 0 }); // handshake
  assert.equal(bytesPerUpdate(t), null);
  t = addFrame(t, { bytes: 140, messages: 1, updates: 1 });
  t = addFrame(t, { bytes: 100, messages: 1, updates: 1 });
  assert.equal(bytesPerUpdate(t), 150);
  // Deltas are updates like any other: they lower the average, not the update count.
  t = addFrame(t, { bytes: 30, messages: 1, updates: 1, deltas: 1 });
  assert.equal(bytesPerUpdate(t), 330 / 3);
  assert.equal(t.deltas, 1);
});

test('savingPercent is (redis - topic) / redis', () => {
  assert.equal(savingPercent(1000, 250), 75);
  assert.equal(savingPercent(1000, 1000), 0);
  assert.equal(savingPercent(400, 500), -25);
  assert.equal(savingPercent(0, 0), null);
  assert.equal(savingPercent(0, 10), null);
});
