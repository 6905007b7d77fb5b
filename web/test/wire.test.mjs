import assert from 'node:assert/strict';
import { test } from 'node:test';

import { frameByteLength, frameText, splitFrame } from '../js/wire.js';

test('text frames count UTF-8 bytes, not UTF-16 code units', () => {
  const ascii = '{"rate":"56,189.3483"}';
  assert.equal(frameByteLength(ascii), ascii.length);

  // "€" is 3 bytes, "£" 2 bytes, the emoji 4 bytes (2 code units).
  const payload = '{"symbol":"€","gbp":"£","mood":"📈"}';
  assert.equal(payload.length, 36);
  assert.equal(frameByteLength(payload), 41);
  assert.equal(frameByteLength(payload), Buffer.byteLength(payload, 'utf8'));
  assert.notEqual(frameByteLength(payload), payload.length);
});

test('binary frames report their own length', () => {
  const bytes = new Uint8Array([0xe2, 0x82, 0xac, 0x41]);
  assert.equal(frameByteLength(bytes.buffer), 4);
  assert.equal(frameByteLength(bytes.subarray(1)), 3);
  assert.equal(frameByteLength(new Blob(['€'])), 3);
  assert.equal(frameByteLength(''), 0);
});

test('anything else is refused', () => {
  assert.throws(() => frameByteLength(42), TypeError);
  assert.throws(() => frameByteLength(null), TypeError);
});

test('frameText decodes binary UTF-8 and rejects invalid bytes', () => {
  const euro = new TextEncoder().encode('€1').buffer;
  assert.equal(frameText(euro), '€1');
  assert.equal(frameText('plain'), 'plain');
  assert.throws(() => frameText(new Uint8Array([0xff, 0xfe]).buffer), TypeError);
  assert.throws(() => frameText({}), TypeError);
});

test('splitFrame separates packed messages and drops empty pieces', () => {
  const messages = [
    '{"type":"subscribed","id":3,"path":"redis/bitcoin","topicType":"JSON","properties":{}}',
    '{"type":"value","id":3,"value":{"text":"a\\nb"}}',
    '{"type":"ok","cid":1}',
  ];
  assert.deepEqual(splitFrame(messages.join('\n')), messages);
  assert.deepEqual(splitFrame(`${messages[2]}\n`), [messages[2]]);
  assert.deepEqual(splitFrame(messages[0]), [messages[0]]);
  assert.deepEqual(splitFrame(''), []);
  assert.deepEqual(splitFrame('\n\n'), []);
});
