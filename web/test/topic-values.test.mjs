import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  base64ToBytes,
  bytesToBase64,
  canonicalBytes,
  DELTA_TOPIC_TYPES,
  valueFromCanonical,
} from '../js/topic-values.js';

const utf8 = new TextEncoder();

test('base64 round-trips every byte value and matches the standard padded alphabet', () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  const text = bytesToBase64(all);
  assert.equal(text, Buffer.from(all).toString('base64'));
  assert.deepEqual(base64ToBytes(text), all);
  for (const n of [0, 1, 2, 3, 4, 70000]) {
    const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 7) % 256);
    assert.deepEqual(base64ToBytes(bytesToBase64(bytes)), bytes, `length ${n}`);
  }
});

test('base64 that is not standard and padded is refused', () => {
  for (const bad of ['abc', 'ab=c', 'a b=', 'ab\n==', '@@@@', '-_==', 'YQ', 'YQ=', 42, null]) {
    assert.throws(() => base64ToBytes(bad), TypeError, String(bad));
  }
  assert.deepEqual(base64ToBytes(''), new Uint8Array(0));
});

test('canonical bytes: JSON keeps the raw text, STRING its UTF-8, BINARY its raw bytes', () => {
  // The raw text wins over the parsed value: 100.0 must not become 100.
  assert.deepEqual(canonicalBytes('JSON', { x: 100 }, '{"x":100.0}'), utf8.encode('{"x":100.0}'));
  assert.deepEqual(canonicalBytes('JSON', null, 'null'), utf8.encode('null'));
  assert.deepEqual(canonicalBytes('STRING', '5 €', '"5 €"'), utf8.encode('5 €'));
  assert.equal(canonicalBytes('STRING', '5 €').length, 5, 'bytes, not UTF-16 code units');
  assert.equal(canonicalBytes('STRING', null, 'null'), null, 'null is "no value"');
  assert.deepEqual(canonicalBytes('BINARY', 'AP8=', '"AP8="'), new Uint8Array([0, 255]));
  assert.equal(canonicalBytes('BINARY', 'not base64!', ''), null);
  assert.equal(canonicalBytes('INT64', 42, '42'), null);
  assert.equal(canonicalBytes('DOUBLE', 1.5, '1.5'), null);
  assert.deepEqual([...DELTA_TOPIC_TYPES].sort(), ['BINARY', 'JSON', 'STRING']);
});

test('values come back from canonical bytes in their wire form', () => {
  assert.deepEqual(valueFromCanonical('JSON', utf8.encode('{"s":"€","n":[1,2]}')), { s: '€', n: [1, 2] });
  assert.equal(valueFromCanonical('STRING', utf8.encode('5 €')), '5 €');
  assert.equal(valueFromCanonical('BINARY', new Uint8Array([0, 255])), 'AP8=');
  assert.throws(() => valueFromCanonical('JSON', utf8.encode('{"a":')), SyntaxError);
  assert.throws(() => valueFromCanonical('STRING', new Uint8Array([0xe2, 0x82])), TypeError, 'cut UTF-8');
  assert.throws(() => valueFromCanonical('JSON', new Uint8Array([0x22, 0xff, 0x22])), TypeError);
  assert.throws(() => valueFromCanonical('INT64', utf8.encode('1')), TypeError);
});
