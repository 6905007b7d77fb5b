import assert from 'node:assert/strict';
import { test } from 'node:test';

import { BoundedSeries, DEFAULT_WINDOW, trimToWindow } from '../js/series.js';

test('trimToWindow drops the oldest entries of every column alike', () => {
  const columns = [[1, 2, 3, 4, 5], [10, 20, 30, 40, 50], [null, 2, null, 4, 5]];
  assert.equal(trimToWindow(columns, 3), 2);
  assert.deepEqual(columns, [[3, 4, 5], [30, 40, 50], [null, 4, 5]]);
  assert.equal(trimToWindow(columns, 3), 0);
  assert.equal(trimToWindow([], 3), 0);
});

test('BoundedSeries keeps the latest points only', () => {
  const s = new BoundedSeries(2, 4);
  for (let i = 1; i <= 10; i += 1) s.push(i, i * 10, -i);
  assert.equal(s.length, 4);
  assert.deepEqual(s.data(), [[7, 8, 9, 10], [70, 80, 90, 100], [-7, -8, -9, -10]]);
  s.clear();
  assert.equal(s.length, 0);
  assert.deepEqual(s.data(), [[], [], []]);
});

test('BoundedSeries defaults to a 300-point window and checks its input', () => {
  const s = new BoundedSeries(1);
  for (let i = 0; i < 1000; i += 1) s.push(i, i);
  assert.equal(DEFAULT_WINDOW, 300);
  assert.equal(s.length, 300);
  assert.equal(s.data()[0][0], 700);
  assert.throws(() => s.push(1, 2, 3), RangeError);
  assert.throws(() => new BoundedSeries(1, 0), RangeError);
});
