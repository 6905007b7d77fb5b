import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import {
  describeField,
  extractUsdRate,
  INTERVAL_LIMITS,
  parseIntervalMs,
  prettyPayload,
} from '../js/feed.js';

const sampleText = readFileSync(new URL('./fixtures/coindesk-bpi-sample.json', import.meta.url), 'utf8');
const sample = JSON.parse(sampleText);

test('the USD rate comes from bpi.USD.rate_float of the feed document', () => {
  assert.equal(extractUsdRate(sample), 56189.3483);
  assert.equal(extractUsdRate(sampleText), 56189.3483, 'raw frame text is parsed first');
});

test('narrower values a view topic may publish still give the rate', () => {
  assert.equal(extractUsdRate(sample.bpi), 56189.3483);
  assert.equal(extractUsdRate(sample.bpi.USD), 56189.3483);
  assert.equal(extractUsdRate(61000.5), 61000.5);
  assert.equal(extractUsdRate('61000.5'), 61000.5);
  // Without rate_float, the formatted rate with thousands separators.
  assert.equal(extractUsdRate({ bpi: { USD: { rate: '56,189.3483' } } }), 56189.3483);
});

test('values without a price give null', () => {
  for (const v of [null, undefined, {}, [], true, 'hello', '', Number.NaN, Infinity,
    { bpi: { GBP: { rate_float: 1 } } }, { bpi: { USD: { rate_float: 'n/a' } } }, '{"bpi":']) {
    assert.equal(extractUsdRate(v), null, `for ${JSON.stringify(v)}`);
  }
});

test('prettyPayload indents JSON text and objects, and keeps other text', () => {
  assert.equal(prettyPayload('{"a":1}'), '{\n  "a": 1\n}');
  assert.equal(prettyPayload({ a: [1] }), '{\n  "a": [\n    1\n  ]\n}');
  assert.equal(prettyPayload('not json'), 'not json');
  assert.equal(prettyPayload(null), '(nothing published yet)');
  assert.equal(JSON.parse(prettyPayload(sampleText)).bpi.EUR.rate_float, 46746.8407);
});

test('parseIntervalMs accepts whole milliseconds within limits', () => {
  assert.deepEqual(parseIntervalMs('5000'), { ok: true, value: 5000 });
  assert.deepEqual(parseIntervalMs(' 250 '), { ok: true, value: 250 });
  assert.deepEqual(parseIntervalMs(String(INTERVAL_LIMITS.min)), { ok: true, value: INTERVAL_LIMITS.min });
  for (const bad of ['', 'abc', '1.5', '-100', '1e3', String(INTERVAL_LIMITS.min - 1),
    String(INTERVAL_LIMITS.max + 1)]) {
    const r = parseIntervalMs(bad);
    assert.equal(r.ok, false, `accepted ${bad}`);
    assert.match(r.error, /Interval must be/);
  }
});

test('describeField renders each kind of status field', () => {
  assert.equal(describeField('synthetic'), 'synthetic');
  assert.equal(describeField(0), '0');
  assert.equal(describeField(false), 'false');
  assert.equal(describeField({ url: 'ws://x' }), '{"url":"ws://x"}');
  assert.equal(describeField(null), '—');
  assert.equal(describeField(undefined), '—');
});
