import assert from 'node:assert/strict';
import { test } from 'node:test';

import { encodeAck, encodeConnect, parseServerMessage, ProtocolError } from '../js/protocol.js';

test('connect offers versions 2 and 1, and carries the resume token and last sequence', () => {
  assert.equal(encodeConnect(), '{"type":"connect","versions":[2,1]}');
  assert.deepEqual(JSON.parse(encodeConnect({ token: 'ab12', s: 41 })), {
    type: 'connect',
    versions: [2, 1],
    resume: { token: 'ab12', s: 41 },
  });
  assert.equal(encodeAck(7), '{"type":"ack","s":7}');
});

test('short updates read into the long form with their sequence number', () => {
  assert.deepEqual(parseServerMessage('{"i":4,"v":17,"s":7}'), {
    message: { type: 'value', id: 4, value: 17, s: 7 },
    known: true,
    rawValue: '17',
  });
  assert.deepEqual(parseServerMessage('{"i":4,"d":"QQ==","s":8}').message, { type: 'delta', id: 4, delta: 'QQ==', s: 8 });
  assert.deepEqual(parseServerMessage('{"i":4,"v":1}').message, { type: 'value', id: 4, value: 1 }, 'v1: no s');
});

test('unknown fields are dropped everywhere, updates and nested items included', () => {
  assert.deepEqual(parseServerMessage('{"i":4,"v":{"a":1},"future":[1],"s":2}').message, {
    type: 'value', id: 4, value: { a: 1 }, s: 2,
  });
  assert.deepEqual(parseServerMessage('{"type":"ok","cid":3,"hint":"x","s":9}').message, { type: 'ok', cid: 3, s: 9 });
  assert.deepEqual(
    parseServerMessage(
      '{"type":"connected","version":2,"session":"x","token":"t","limits":{"heartbeatIntervalMs":15000,"heartbeatTimeoutMs":5000,"new":1},"extra":true}',
    ).message,
    { type: 'connected', version: 2, session: 'x', token: 't', limits: { heartbeatIntervalMs: 15000, heartbeatTimeoutMs: 5000 } },
  );
  assert.deepEqual(
    parseServerMessage('{"type":"fetched","cid":1,"topics":[{"path":"a","topicType":"JSON","value":1,"x":2}],"s":3}').message,
    { type: 'fetched', cid: 1, topics: [{ path: 'a', topicType: 'JSON', value: 1 }], s: 3 },
  );
});

test('unknown message types are kept as {type, s} and flagged, not refused', () => {
  assert.deepEqual(parseServerMessage('{"type":"weather","sunny":true,"s":5}'), {
    message: { type: 'weather', s: 5 },
    known: false,
    rawValue: null,
  });
  assert.deepEqual(parseServerMessage('{"type":"heartbeat"}').message, { type: 'heartbeat' });
});

test('invalid messages throw ProtocolError', () => {
  for (const bad of [
    '{nope',
    '[]',
    '{"i":4}',
    '{"i":4,"v":1,"d":"QQ=="}',
    '{"i":-1,"v":1}',
    '{"i":4,"v":1,"s":-1}',
    '{"i":4,"v":1,"s":"7"}',
    '{"type":"ok"}',
    '{"type":"subscribed","id":"4","path":"a"}',
    '{"type":"connected","version":2,"limits":{"heartbeatIntervalMs":"soon"}}',
    '{"cid":1}',
  ]) {
    assert.throws(() => parseServerMessage(bad), ProtocolError, bad);
  }
});
