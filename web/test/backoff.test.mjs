import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Backoff } from '../js/backoff.js';

test('delays double up to the cap and reset to the start', () => {
  const b = new Backoff({ initialMs: 100, maxMs: 450, jitter: 0 });
  assert.deepEqual([1, 2, 3, 4, 5].map(() => b.nextDelay()), [100, 200, 400, 450, 450]);
  b.reset();
  assert.equal(b.nextDelay(), 100);
});

test('jitter stays within the configured spread', () => {
  const low = new Backoff({ initialMs: 1000, maxMs: 1000, jitter: 0.2, random: () => 0 });
  const high = new Backoff({ initialMs: 1000, maxMs: 1000, jitter: 0.2, random: () => 0.999999 });
  assert.equal(low.nextDelay(), 800);
  assert.equal(high.nextDelay(), 1200);
  const real = new Backoff({ initialMs: 1000, maxMs: 1000 });
  for (let i = 0; i < 200; i += 1) {
    const d = real.nextDelay();
    assert.ok(d >= 800 && d <= 1200, `delay ${d}`);
  }
});

test('bad bounds are refused', () => {
  assert.throws(() => new Backoff({ initialMs: 0 }), RangeError);
  assert.throws(() => new Backoff({ initialMs: 500, maxMs: 100 }), RangeError);
});
