// Version 2 sessions: sequence numbers, heartbeats and acks, the dead-connection watchdog, and
// resuming a session after the connection drops (recovered or not), driven through a fake socket
// and a manual clock.
import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import { createDelta } from '../node_modules/fossil-delta/fossil-delta.js';
import { ACK_EVERY_MESSAGES, TopicClient } from '../js/topic-client.js';
import { FakeWebSocket, fixedBackoff, ManualClock } from './support/fakes.mjs';

const LIMITS = {
  maxMessageBytes: 65536,
  queueLimitBytes: 1048576,
  heartbeatIntervalMs: 1000,
  heartbeatTimeoutMs: 500,
  reconnectWindowMs: 60000,
};
const connected = (fields = {}) =>
  JSON.stringify({ type: 'connected', version: 2, session: 's-1', token: 'a'.repeat(32), limits: LIMITS, ...fields });
const SUBSCRIBED = (s, id = 7) =>
  `{"type":"subscribed","id":${id},"path":"redis/views/usd","topicType":"JSON","properties":{},"s":${s}}`;
const value = (s, v, id = 7) => `{"i":${id},"v":${v},"s":${s}}`;
const utf8 = new TextEncoder();
const delta = (s, from, to, id = 7) =>
  `{"i":${id},"d":"${Buffer.from(createDelta(utf8.encode(from), utf8.encode(to))).toString('base64')}","s":${s}}`;

let clock;
let updates;
let statuses;
let warnings;
let client;

function start() {
  client = new TopicClient({
    url: 'ws://topics.test/ws',
    selector: 'redis/views/usd',
    socketOptions: { WebSocketImpl: FakeWebSocket, backoff: fixedBackoff([100, 200]), timers: clock, now: clock.now },
    onUpdate: (u) => updates.push(u),
    onStatus: (s) => statuses.push(s),
    log: { warn: (...args) => warnings.push(args.join(' ')) },
  });
  client.start();
  return FakeWebSocket.latest();
}

const sent = (ws) => ws.sent.map((t) => JSON.parse(t));
const values = () => updates.map((u) => u.value);

/** Opens a v2 session subscribed to topic 7 holding `first`; s is 3 afterwards. */
function subscribedSession(first = '100') {
  const ws = start();
  ws.serverOpen();
  ws.serverSend(connected());
  ws.serverSend(['{"type":"ok","cid":1,"s":1}', SUBSCRIBED(2), value(3, first)].join('\n'));
  return ws;
}

beforeEach(() => {
  FakeWebSocket.reset();
  clock = new ManualClock();
  updates = [];
  statuses = [];
  warnings = [];
});

test('a heartbeat is answered with an ack of the last sequence number processed', () => {
  const ws = subscribedSession();
  assert.equal(statuses.at(-1).state, 'subscribed');
  ws.serverSend('{"type":"heartbeat"}');
  assert.deepEqual(sent(ws).at(-1), { type: 'ack', s: 3 });
  ws.serverSend(value(4, '101'));
  ws.serverSend('{"type":"heartbeat"}');
  assert.deepEqual(sent(ws).at(-1), { type: 'ack', s: 4 });
  assert.equal(client.lastSeq, 4);
});

test('a heartbeat before any sequenced message acks 0', () => {
  const ws = start();
  ws.serverOpen();
  ws.serverSend(connected());
  ws.serverSend('{"type":"heartbeat"}');
  assert.deepEqual(sent(ws).at(-1), { type: 'ack', s: 0 });
});

test(`an ack goes out unprompted after every ${ACK_EVERY_MESSAGES} messages`, () => {
  const ws = subscribedSession();
  const acks = () => sent(ws).filter((m) => m.type === 'ack');
  let s = 3;
  // One frame of 250 updates: 253 processed so far, no ack yet.
  ws.serverSend(Array.from({ length: 250 }, () => value(++s, String(s))).join('\n'));
  assert.deepEqual(acks(), []);
  ws.serverSend(Array.from({ length: 3 }, () => value(++s, String(s))).join('\n'));
  assert.deepEqual(acks(), [{ type: 'ack', s: 256 }]);
  for (let i = 0; i < ACK_EVERY_MESSAGES - 1; i += 1) ws.serverSend(value(++s, String(s)));
  assert.equal(acks().length, 1, 'not before the next 256');
  ws.serverSend(value(++s, String(s)));
  assert.deepEqual(acks().at(-1), { type: 'ack', s: 512 });
});

test('a silent connection is closed with 4000 after interval + timeout, then resumed', () => {
  const ws = subscribedSession();
  // Frames keep it alive: 1400 ms of silence, a heartbeat, 1400 ms more.
  clock.advance(1400);
  ws.serverSend('{"type":"heartbeat"}');
  clock.advance(1400);
  assert.equal(ws.closedWith, null);
  assert.equal(FakeWebSocket.instances.length, 1);
  clock.advance(100); // 1500 ms since the heartbeat
  assert.equal(ws.closedWith?.code, 4000);
  assert.equal(statuses.at(-1).state, 'retrying');
  assert.match(statuses.at(-1).detail, /no frame for 1500 ms/);
  assert.equal(warnings.length, 1);

  clock.advance(100); // the back-off delay
  const next = FakeWebSocket.latest();
  assert.notEqual(next, ws);
  next.serverOpen();
  assert.deepEqual(sent(next), [{ type: 'connect', versions: [2, 1], resume: { token: 'a'.repeat(32), s: 3 } }]);
});

test('recovered:true continues where it left off: no resubscribe, nothing lost or repeated', () => {
  const v = (n) => `{"rate":${n},"pad":"some text that makes a delta worth it"}`;
  const ws = subscribedSession(v(1));
  ws.serverSend(delta(4, v(1), v(2)));
  ws.serverClose(1006);
  assert.equal(client.decoder.topics.size, 1, 'the topic table is kept for the resume');
  clock.advance(100);
  const next = FakeWebSocket.latest();
  next.serverOpen();
  assert.deepEqual(sent(next)[0].resume, { token: 'a'.repeat(32), s: 4 });
  // The server replays from 5; a server that replayed 4 as well is harmless (skipped). The
  // deltas apply to the value held before the cut.
  next.serverSend([connected({ recovered: true }), delta(4, v(1), v(2)), delta(5, v(2), v(3))].join('\n'));
  next.serverSend(delta(6, v(3), v(4)));
  assert.deepEqual(values().map((x) => x.rate), [1, 2, 3, 4]);
  assert.deepEqual(updates.map((u) => u.s), [3, 4, 5, 6]);
  assert.equal(sent(next).length, 1, 'no subscribe on a recovered session');
  assert.equal(statuses.at(-1).state, 'subscribed');
  assert.equal(client.lastSeq, 6);
});

test('recovered:false resets the topics and subscribes again; the new token is used next time', () => {
  const ws = subscribedSession('100');
  ws.serverClose(1006);
  clock.advance(100);
  let next = FakeWebSocket.latest();
  next.serverOpen();
  next.serverSend(connected({ session: 's-2', token: 'b'.repeat(32), recovered: false, reason: 'unknown_session' }));
  assert.equal(client.decoder.topics.size, 0, 'old ids mean nothing now');
  assert.equal(client.lastSeq, 0);
  assert.deepEqual(sent(next)[1], { type: 'subscribe', cid: 2, selector: 'redis/views/usd' });
  assert.equal(statuses.at(-1).state, 'subscribing');
  assert.match(warnings.join('\n'), /not recovered \(unknown_session\)/);
  // The new session's numbering starts at 1, with new topic ids.
  next.serverSend(['{"type":"ok","cid":2,"s":1}', SUBSCRIBED(2, 9), value(3, '105', 9)].join('\n'));
  assert.equal(statuses.at(-1).state, 'subscribed');
  assert.deepEqual(values(), [100, 105]);

  next.serverClose(1006);
  clock.advance(200);
  next = FakeWebSocket.latest();
  next.serverOpen();
  assert.deepEqual(sent(next)[0].resume, { token: 'b'.repeat(32), s: 3 });
});

test('a sequence gap drops the connection and resumes from the last message processed', () => {
  const ws = subscribedSession('100');
  ws.serverSend([value(4, '101'), value(6, '103'), value(7, '104')].join('\n'));
  assert.deepEqual(values(), [100, 101], 'nothing past the hole is applied');
  assert.equal(ws.closedWith?.code, 4000);
  clock.advance(100);
  const next = FakeWebSocket.latest();
  next.serverOpen();
  assert.deepEqual(sent(next)[0].resume.s, 4);
});

test('a subscribe whose ok was lost in the cut is asked again after recovery', () => {
  const ws = start();
  ws.serverOpen();
  ws.serverSend(connected());
  assert.equal(sent(ws)[1].type, 'subscribe');
  ws.serverClose(1006);
  clock.advance(100);
  const next = FakeWebSocket.latest();
  next.serverOpen();
  next.serverSend(connected({ recovered: true }));
  assert.deepEqual(sent(next)[1], { type: 'subscribe', cid: 2, selector: 'redis/views/usd' });
  // Whichever request's ok comes (here the first one's, replayed), the subscription is on.
  next.serverSend('{"type":"ok","cid":1,"s":1}');
  assert.equal(statuses.at(-1).state, 'subscribed');
});

test('a version-1 server: no watchdog, no ack, and a plain connect after a drop', () => {
  const ws = start();
  ws.serverOpen();
  ws.serverSend('{"type":"connected","version":1,"session":"old"}');
  ws.serverSend(['{"type":"ok","cid":1}', '{"type":"subscribed","id":7,"path":"p","topicType":"JSON","properties":{}}', '{"i":7,"v":5}'].join('\n'));
  clock.advance(10 * 60 * 1000);
  assert.equal(ws.closedWith, null, 'silence is normal for version 1');
  ws.serverSend('{"type":"heartbeat"}');
  assert.equal(sent(ws).filter((m) => m.type === 'ack').length, 0);
  ws.serverClose(1006);
  clock.advance(100);
  const next = FakeWebSocket.latest();
  next.serverOpen();
  assert.deepEqual(sent(next), [{ type: 'connect', versions: [2, 1] }]);
  assert.deepEqual(values(), [5]);
});

test('stop() closes with 1000 and forgets the session: the next start does not resume', () => {
  const ws = subscribedSession();
  client.stop();
  assert.equal(ws.closedWith.code, 1000);
  clock.advance(60000);
  assert.equal(FakeWebSocket.instances.length, 1, 'the watchdog does not fire after stop');
  client.start();
  const next = FakeWebSocket.latest();
  next.serverOpen();
  assert.deepEqual(sent(next), [{ type: 'connect', versions: [2, 1] }]);
});

test('unknown message types and unknown fields are skipped, their sequence numbers counted', () => {
  const ws = subscribedSession('100');
  ws.serverSend(['{"type":"weather","sunny":true,"s":4}', '{"i":7,"v":101,"colour":"red","s":5}'].join('\n'));
  assert.deepEqual(values(), [100, 101]);
  assert.equal(client.lastSeq, 5);
  assert.equal(ws.closedWith, null);
});

test('a resumed session with the same hole again is given up for a new one', () => {
  const ws = subscribedSession('100');
  ws.serverSend(value(9, '109'));
  assert.equal(ws.closedWith?.code, 4000);
  clock.advance(100);
  let next = FakeWebSocket.latest();
  next.serverOpen();
  assert.deepEqual(sent(next)[0].resume.s, 3);
  // The server says it recovered the session but still cannot send 4.
  next.serverSend([connected({ recovered: true }), value(9, '109')].join('\n'));
  assert.equal(next.closedWith?.code, 4000);
  clock.advance(200);
  next = FakeWebSocket.latest();
  next.serverOpen();
  assert.deepEqual(sent(next), [{ type: 'connect', versions: [2, 1] }], 'no resume this time');
  next.serverSend(connected({ session: 's-2', token: 'c'.repeat(32) }));
  assert.equal(sent(next)[1].type, 'subscribe');
  next.serverSend(['{"type":"ok","cid":2,"s":1}', SUBSCRIBED(2, 8), value(3, '110', 8)].join('\n'));
  assert.deepEqual(values(), [100, 110]);
  assert.equal(statuses.at(-1).state, 'subscribed');
});
