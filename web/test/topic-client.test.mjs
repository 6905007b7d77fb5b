import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import { rawValueText, TopicClient, TopicDecoder } from '../js/topic-client.js';
import { FakeWebSocket, fixedBackoff, ManualClock } from './support/fakes.mjs';

const SUBSCRIBED = '{"type":"subscribed","id":7,"path":"redis/bitcoin","topicType":"JSON","properties":{"PUBLISH_VALUES_ONLY":"false"}}';
const VALUE_1 = '{"type":"value","id":7,"value":{"bpi":{"USD":{"rate_float":56189.3483,"symbol":"&#36;"}}}}';
const VALUE_2 = '{"type":"value","id":7,"value":{"bpi":{"USD":{"rate_float":56200.5,"symbol":"€"}}}}';

test('decoder tracks subscribed topics and hands out full values', () => {
  const d = new TopicDecoder();
  const events = d.decodeFrame([SUBSCRIBED, VALUE_1, '{"type":"ok","cid":1}'].join('\n'));
  assert.deepEqual(events.map((e) => e.kind), ['subscribed', 'update', 'ok']);
  assert.equal(events[0].topic.path, 'redis/bitcoin');
  assert.deepEqual(events[0].topic.properties, { PUBLISH_VALUES_ONLY: 'false' });
  assert.equal(events[1].topic.path, 'redis/bitcoin');
  assert.equal(events[1].value.bpi.USD.rate_float, 56189.3483);
  assert.equal(events[2].cid, 1);
  assert.equal(events[1].via, 'value');
  const topic = d.topics.get(7);
  assert.equal(topic.value.bpi.USD.rate_float, 56189.3483);
  assert.equal(
    new TextDecoder().decode(topic.canonical),
    '{"bpi":{"USD":{"rate_float":56189.3483,"symbol":"&#36;"}}}',
  );
  assert.equal(topic.error, null);
});

test('rawValueText returns the exact wire text of the value, whatever the field order', () => {
  assert.equal(rawValueText('{"type":"value","id":12,"value":"a}b"}'), '"a}b"');
  assert.equal(rawValueText('{"type":"value","id":1,"value":null}'), 'null');
  assert.equal(rawValueText('{"type":"value","id":3,"value":{"x":100.0,"y":1e2}}'), '{"x":100.0,"y":1e2}');
  assert.equal(rawValueText('{"id":1,"type":"value","value":1}'), '1');
  assert.equal(rawValueText('{"i":4,"v":{"p":1.50},"s":7}'), '{"p":1.50}', 'v2: s follows v');
  assert.equal(rawValueText('{"s":7,"v":[1,{"a":"]}"}],"i":4}'), '[1,{"a":"]}"}]');
  assert.equal(rawValueText('{"type":"value","id":1,"value": 1 }'), '1', 'whitespace is not part of it');
  assert.equal(rawValueText('{"type":"ok","cid":1}'), null);
  assert.equal(rawValueText('{"type":"value","id":1,"value":}'), null, 'not JSON');
});

test('a bad message is reported and the rest of the frame still decodes', () => {
  const d = new TopicDecoder();
  const events = d.decodeFrame([
    SUBSCRIBED,
    '{not json',
    '{"type":"value","id":99,"value":1}',
    '{"type":"teleport","to":"mars"}',
    '[1,2]',
    '{"type":"ok"}',
    VALUE_1,
  ].join('\n'));
  assert.deepEqual(events.map((e) => e.kind),
    ['subscribed', 'protocol-error', 'protocol-error', 'ignored', 'protocol-error', 'protocol-error', 'update']);
  assert.match(events[1].message, /not JSON/);
  assert.match(events[2].message, /unknown topic id 99/);
  assert.deepEqual(events[3].wire, { type: 'teleport' }, 'an unknown type is skipped, not an error');
  assert.match(events[4].message, /not a JSON object/);
  assert.match(events[5].message, /ok: no "cid" field/);
});

test('error, unsubscribed, pong and fetched messages decode', () => {
  const d = new TopicDecoder();
  d.decodeFrame(SUBSCRIBED);
  const [err, unsub, pong, fetched, bare] = d.decodeFrame([
    '{"type":"error","cid":2,"code":"INVALID_SELECTOR","message":"bad"}',
    '{"type":"unsubscribed","id":7,"path":"redis/bitcoin","reason":"removed"}',
    '{"type":"pong","cid":3}',
    '{"type":"fetched","cid":4,"topics":[{"path":"a","topicType":"JSON","value":1}]}',
    '{"type":"error","code":"MALFORMED_MESSAGE","message":"?"}',
  ].join('\n'));
  assert.deepEqual(
    { kind: err.kind, cid: err.cid, code: err.code, message: err.message },
    { kind: 'error', cid: 2, code: 'INVALID_SELECTOR', message: 'bad' },
  );
  assert.equal(unsub.kind, 'unsubscribed');
  assert.equal(unsub.reason, 'removed');
  assert.equal(unsub.topic.id, 7);
  assert.equal(d.topics.size, 0);
  assert.equal(pong.cid, 3);
  assert.equal(fetched.topics.length, 1);
  assert.equal(bare.cid, null);
});

let clock;
let updates;
let traffic;
let statuses;

function makeClient(selector = 'redis/bitcoin') {
  return new TopicClient({
    url: 'ws://topics.test:8080/ws',
    selector,
    socketOptions: {
      WebSocketImpl: FakeWebSocket,
      backoff: fixedBackoff([100, 200]),
      timers: clock,
      now: clock.now,
    },
    onUpdate: (u) => updates.push(u),
    onTraffic: (t) => traffic.push(t),
    onStatus: (s) => statuses.push(s),
  });
}

beforeEach(() => {
  FakeWebSocket.reset();
  clock = new ManualClock();
  updates = [];
  traffic = [];
  statuses = [];
});

test('client handshakes, subscribes and delivers values from packed frames', () => {
  const client = makeClient();
  client.start();
  const ws = FakeWebSocket.latest();
  assert.equal(ws.url, 'ws://topics.test:8080/ws');
  ws.serverOpen();
  assert.deepEqual(ws.sent.map((t) => JSON.parse(t)), [{ type: 'connect', versions: [2, 1] }]);
  assert.equal(statuses.at(-1).state, 'handshaking');

  ws.serverSend('{"type":"connected","version":1,"session":"s-1"}');
  assert.deepEqual(JSON.parse(ws.sent[1]), { type: 'subscribe', cid: 1, selector: 'redis/bitcoin' });
  assert.equal(statuses.at(-1).state, 'subscribing');

  const packed = ['{"type":"ok","cid":1}', SUBSCRIBED, VALUE_1].join('\n');
  ws.serverSend(packed);
  assert.equal(statuses.at(-1).state, 'subscribed');
  assert.equal(statuses.at(-1).detail, 'session s-1');
  ws.serverSend(VALUE_2);

  assert.deepEqual(updates.map((u) => u.value.bpi.USD.rate_float), [56189.3483, 56200.5]);
  assert.equal(updates[0].topic.path, 'redis/bitcoin');
  // Traffic: one entry per frame, with UTF-8 byte sizes and message counts.
  assert.deepEqual(traffic.map((t) => [t.messages, t.updates]), [[1, 0], [3, 1], [1, 1]]);
  assert.equal(traffic[2].bytes, Buffer.byteLength(VALUE_2), 'the euro sign counts 3 bytes');
  assert.notEqual(traffic[2].bytes, VALUE_2.length);
  assert.equal(traffic[1].bytes, Buffer.byteLength(packed));
});

test('client resubscribes after the server comes back, with fresh topic ids', () => {
  const client = makeClient();
  client.start();
  let ws = FakeWebSocket.latest();
  ws.serverOpen();
  ws.serverSend('{"type":"connected","version":1,"session":"s-1"}');
  ws.serverSend(`{"type":"ok","cid":1}\n${SUBSCRIBED}\n${VALUE_1}`);
  ws.serverClose(1006);
  assert.equal(statuses.at(-1).state, 'retrying');
  assert.equal(statuses.at(-1).retryInMs, 100);
  assert.equal(client.decoder.topics.size, 0, 'ids from the old session are forgotten');

  clock.advance(100);
  ws = FakeWebSocket.latest();
  assert.equal(FakeWebSocket.instances.length, 2);
  ws.serverOpen();
  ws.serverSend('{"type":"connected","version":1,"session":"s-2"}');
  const sub = JSON.parse(ws.sent[1]);
  assert.equal(sub.type, 'subscribe');
  assert.equal(sub.selector, 'redis/bitcoin');
  ws.serverSend(`{"type":"ok","cid":${sub.cid}}`);
  assert.equal(statuses.at(-1).state, 'subscribed');
  // The old id means nothing now; the new session names the topic 8.
  ws.serverSend(VALUE_2);
  assert.equal(updates.length, 1);
  ws.serverSend(SUBSCRIBED.replace('"id":7', '"id":8'));
  ws.serverSend(VALUE_2.replace('"id":7', '"id":8'));
  assert.equal(updates.length, 2);
  assert.equal(updates[1].value.bpi.USD.rate_float, 56200.5);
});

test('a refused subscription is shown as an error; a failed handshake reconnects', () => {
  const client = makeClient('bad//selector');
  client.start();
  let ws = FakeWebSocket.latest();
  ws.serverOpen();
  ws.serverSend('{"type":"connected","version":1,"session":"s"}');
  ws.serverSend('{"type":"error","cid":1,"code":"INVALID_SELECTOR","message":"empty segment"}');
  assert.deepEqual(statuses.at(-1), {
    state: 'error',
    detail: 'INVALID_SELECTOR: empty segment',
    retryInMs: null,
    attempt: 1,
  });

  client.stop();
  FakeWebSocket.reset();
  client.start();
  ws = FakeWebSocket.latest();
  ws.serverOpen();
  ws.serverSend('{"type":"error","code":"INTERNAL","message":"internal error"}');
  assert.equal(ws.closedWith.code, 4000);
  assert.equal(statuses.at(-1).state, 'retrying');
  assert.equal(statuses.at(-1).detail, 'INTERNAL: internal error');
});

test('a refused handshake (authentication, version) stops instead of reconnecting', () => {
  for (const [code, close] of [
    ['AUTHENTICATION_FAILED', 4003],
    ['UNSUPPORTED_VERSION', 1002],
  ]) {
    FakeWebSocket.reset();
    const client = makeClient('redis/bitcoin');
    client.start();
    const ws = FakeWebSocket.latest();
    ws.serverOpen();
    ws.serverSend(`{"type":"error","code":"${code}","message":"refused"}`);
    assert.equal(ws.closedWith, null, `${code}: the client waits for the server's close`);
    assert.equal(statuses.at(-1).detail, `${code}: refused`);
    ws.serverClose(close, 'refused');
    clock.advance(600_000);
    assert.equal(FakeWebSocket.instances.length, 1, `${code}: no new attempt`);
    assert.equal(statuses.at(-1).state, 'stopped');
    client.stop();
  }
});

test('a binary frame that is not UTF-8 is counted and reported, not thrown', () => {
  const events = [];
  const client = new TopicClient({
    url: 'ws://topics.test/ws',
    selector: 'a',
    socketOptions: { WebSocketImpl: FakeWebSocket, timers: clock, now: clock.now },
    onTraffic: (t) => traffic.push(t),
    onEvent: (e) => events.push(e),
  });
  client.start();
  const ws = FakeWebSocket.latest();
  ws.serverOpen();
  ws.serverSend(new Uint8Array([0xff, 0x00]).buffer);
  assert.deepEqual(traffic, [{ bytes: 2, messages: 1, updates: 0, deltas: 0 }]);
  assert.equal(events[0].kind, 'protocol-error');
});
