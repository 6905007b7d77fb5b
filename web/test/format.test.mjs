import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  formatBytes,
  formatCount,
  formatDelay,
  formatPercent,
  formatRate,
  formatTimestamp,
} from '../js/format.js';

test('bytes use decimal units with sensible precision', () => {
  assert.equal(formatBytes(0), '0 B');
  assert.equal(formatBytes(999), '999 B');
  assert.equal(formatBytes(1500), '1.50 kB');
  assert.equal(formatBytes(25_400), '25.4 kB');
  assert.equal(formatBytes(123_456_789), '123 MB');
  assert.equal(formatBytes(null), '—');
});

test('counts, percentages, rates and delays', () => {
  assert.equal(formatCount(1234567), '1,234,567');
  assert.equal(formatPercent(62.345), '62.3 %');
  assert.equal(formatPercent(-5), '-5.0 %');
  assert.equal(formatPercent(null), '—');
  assert.equal(formatRate(56189.3483), '56,189.35');
  assert.equal(formatRate(null), '—');
  assert.equal(formatDelay(1500), '1.5 s');
});

test('timestamps from ISO text or epoch ms; other text shown as is', () => {
  const iso = '2021-05-04T12:45:00Z';
  const expected = new Date(iso).toLocaleTimeString('en-GB', { hour12: false });
  assert.equal(formatTimestamp(iso), expected);
  assert.equal(formatTimestamp(Date.parse(iso)), expected);
  assert.equal(formatTimestamp('soon'), 'soon');
  assert.equal(formatTimestamp(null), '—');
});
