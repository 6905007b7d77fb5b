import assert from 'node:assert/strict';
import { beforeEach, test } from 'node:test';

import { ReconnectingSocket } from '../js/reconnecting-socket.js';
import { FakeWebSocket, fixedBackoff, ManualClock } from './support/fakes.mjs';

let clock;
let backoff;
let statuses;
let frames;
let opens;
let closes;

function makeSocket(url = 'ws://bridge.test:3000/') {
  return new ReconnectingSocket({
    url,
    WebSocketImpl: FakeWebSocket,
    backoff,
    timers: clock,
    now: clock.now,
    stableAfterMs: 5000,
    onStatus: (s) => statuses.push(s),
    onOpen: () => opens.push(clock.now()),
    onFrame: (f) => frames.push(f),
    onClose: () => closes.push(clock.now()),
  });
}

beforeEach(() => {
  FakeWebSocket.reset();
  clock = new ManualClock();
  backoff = fixedBackoff([100, 200, 400]);
  statuses = [];
  frames = [];
  opens = [];
  closes = [];
});

test('connects, reports frames with their UTF-8 size, and asks for binary as ArrayBuffer', () => {
  const s = makeSocket();
  s.start();
  const ws = FakeWebSocket.latest();
  assert.equal(ws.url, 'ws://bridge.test:3000/');
  assert.equal(ws.binaryType, 'arraybuffer');
  assert.equal(s.status.state, 'connecting');
  ws.serverOpen();
  assert.equal(s.status.state, 'open');
  assert.deepEqual(opens, [0]);
  ws.serverSend('{"symbol":"€"}');
  ws.serverSend(new Uint8Array([1, 2, 3]).buffer);
  assert.deepEqual(frames.map((f) => f.bytes), [16, 3]);
  assert.equal(s.send('hello'), true);
  assert.deepEqual(ws.sent, ['hello']);
});

test('a refused connection retries with growing delays', () => {
  const s = makeSocket();
  s.start();
  FakeWebSocket.latest().serverClose(1006);
  assert.equal(s.status.state, 'retrying');
  assert.equal(s.status.retryInMs, 100);
  assert.match(s.status.lastError, /connection failed/);
  assert.equal(s.send('x'), false, 'nothing is sent while disconnected');

  clock.advance(99);
  assert.equal(FakeWebSocket.instances.length, 1, 'no retry before the delay');
  clock.advance(1);
  assert.equal(FakeWebSocket.instances.length, 2);
  FakeWebSocket.latest().serverClose(1006);
  assert.equal(s.status.retryInMs, 200);
  clock.advance(200);
  assert.equal(FakeWebSocket.instances.length, 3);
  FakeWebSocket.latest().serverOpen();
  assert.equal(s.status.state, 'open');
  assert.equal(s.status.attempt, 3);
});

test('the server going away after a healthy connection starts back-off afresh', () => {
  const s = makeSocket();
  s.start();
  FakeWebSocket.latest().serverClose(); // 100
  clock.advance(100);
  FakeWebSocket.latest().serverClose(); // 200
  clock.advance(200);
  const ws = FakeWebSocket.latest();
  ws.serverOpen();
  clock.advance(6000); // stayed up past stableAfterMs
  ws.serverClose(1001, 'server restarting');
  assert.equal(backoff.resets, 1);
  assert.equal(s.status.retryInMs, 100, 'first delay again');
  assert.equal(s.status.lastError, 'closed (1001: server restarting)');
  assert.equal(closes.length, 3);
  clock.advance(100);
  FakeWebSocket.latest().serverOpen();
  assert.equal(s.status.state, 'open');
  assert.equal(s.status.attempt, 1);
});

test('a server that accepts and drops at once does not reset the back-off', () => {
  const s = makeSocket();
  s.start();
  for (const expected of [100, 200, 400, 400]) {
    const ws = FakeWebSocket.latest();
    ws.serverOpen();
    clock.advance(10);
    ws.serverClose(1011);
    assert.equal(s.status.retryInMs, expected);
    clock.advance(expected);
  }
  assert.equal(backoff.resets, 0);
});

test('stop closes the socket and cancels the pending retry', () => {
  const s = makeSocket();
  s.start();
  FakeWebSocket.latest().serverClose();
  s.stop();
  clock.advance(10_000);
  assert.equal(FakeWebSocket.instances.length, 1);
  assert.equal(s.status.state, 'stopped');

  s.start();
  const ws = FakeWebSocket.latest();
  ws.serverOpen();
  s.stop();
  assert.deepEqual(ws.closedWith, { code: 1000, reason: 'dashboard stopped' });
  ws.serverClose(1000); // late event from the closed socket is ignored
  clock.advance(10_000);
  assert.equal(FakeWebSocket.instances.length, 2);
  assert.equal(s.status.state, 'stopped');
});

test('fail() drops the connection and retries', () => {
  const s = makeSocket();
  s.start();
  const ws = FakeWebSocket.latest();
  ws.serverOpen();
  s.fail('UNSUPPORTED_VERSION: no');
  assert.equal(ws.closedWith.code, 4000);
  assert.equal(s.status.state, 'retrying');
  assert.equal(s.status.lastError, 'UNSUPPORTED_VERSION: no');
  clock.advance(100);
  assert.equal(FakeWebSocket.instances.length, 2);
});

test('a URL the WebSocket constructor refuses is reported and retried', () => {
  const s = makeSocket('http://wrong/');
  s.start();
  assert.equal(s.status.state, 'retrying');
  assert.match(s.status.lastError, /cannot open http:\/\/wrong\//);
  clock.advance(100);
  assert.equal(s.status.state, 'retrying');
  assert.equal(s.status.retryInMs, 200);
});

test('a final close code stops retrying and keeps the reason', () => {
  const s = new ReconnectingSocket({
    url: 'ws://topics.test:8080/ws',
    WebSocketImpl: FakeWebSocket,
    backoff,
    timers: clock,
    now: clock.now,
    onStatus: (status) => statuses.push(status),
    finalCloseCodes: [4003],
  });
  s.start();
  const ws = FakeWebSocket.latest();
  ws.serverOpen();
  ws.serverClose(4003, 'authentication failed');
  clock.advance(60_000);
  assert.equal(FakeWebSocket.instances.length, 1, 'no new attempt');
  assert.equal(s.status.state, 'stopped');
  assert.match(s.status.lastError, /4003: authentication failed.*not retrying/);
  // Any other close still retries.
  s.start();
  FakeWebSocket.latest().serverOpen();
  FakeWebSocket.latest().serverClose(1011, 'internal error');
  clock.advance(60_000);
  assert.equal(FakeWebSocket.instances.length, 3);
});

test('with several servers, a lost connection retries its own once, then moves on', () => {
  const s = new ReconnectingSocket({
    url: ['ws://a.test/ws', 'ws://b.test/ws'],
    WebSocketImpl: FakeWebSocket,
    backoff,
    timers: clock,
    now: clock.now,
    onStatus: (status) => statuses.push(status),
  });
  s.start();
  assert.equal(FakeWebSocket.latest().url, 'ws://a.test/ws');
  FakeWebSocket.latest().serverOpen();
  FakeWebSocket.latest().serverClose(1001, 'going away');
  clock.advance(10_000);
  assert.equal(FakeWebSocket.latest().url, 'ws://a.test/ws', 'its own server first (to resume there)');
  FakeWebSocket.latest().serverClose(1006); // never opened: a is down
  clock.advance(10_000);
  assert.equal(FakeWebSocket.latest().url, 'ws://b.test/ws');
  FakeWebSocket.latest().serverOpen();
  assert.equal(s.status.state, 'open');
  assert.equal(s.url, 'ws://b.test/ws');
  assert.throws(() => new ReconnectingSocket({ url: [], WebSocketImpl: FakeWebSocket }), /no URL/);
});
