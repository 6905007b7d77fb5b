import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { beforeEach, test } from 'node:test';

import { BridgeClient } from '../js/bridge-client.js';
import { extractUsdRate } from '../js/feed.js';
import { FakeWebSocket, ManualClock } from './support/fakes.mjs';

const sampleText = readFileSync(new URL('./fixtures/coindesk-bpi-sample.json', import.meta.url), 'utf8').trim();

let clock;
beforeEach(() => {
  FakeWebSocket.reset();
  clock = new ManualClock();
});

test('every bridge frame is one update, counted in UTF-8 bytes', () => {
  const updates = [];
  const traffic = [];
  const client = new BridgeClient({
    url: 'ws://bridge.test:3000/',
    socketOptions: { WebSocketImpl: FakeWebSocket, timers: clock, now: clock.now },
    onUpdate: (u) => updates.push(u),
    onTraffic: (t) => traffic.push(t),
  });
  client.start();
  const ws = FakeWebSocket.latest();
  ws.serverOpen();
  ws.serverSend(sampleText);
  const euro = sampleText.replace('&euro;', '€');
  ws.serverSend(euro);
  ws.serverSend(new TextEncoder().encode(sampleText).buffer);
  ws.serverSend('plain text, not JSON');

  assert.deepEqual(updates.slice(0, 3).map((u) => extractUsdRate(u.value)), [56189.3483, 56189.3483, 56189.3483]);
  assert.equal(updates[3].value, 'plain text, not JSON');
  assert.deepEqual(traffic.map((t) => t.bytes), [
    Buffer.byteLength(sampleText),
    Buffer.byteLength(euro),
    Buffer.byteLength(sampleText),
    20,
  ]);
  assert.equal(traffic[1].bytes, euro.length + 2, '€ is one UTF-16 unit but three bytes');
  assert.ok(traffic.every((t) => t.messages === 1 && t.updates === 1));
});

test('undecodable binary frames cost bytes but deliver nothing', () => {
  const updates = [];
  const traffic = [];
  const client = new BridgeClient({
    url: 'ws://bridge.test:3000/',
    socketOptions: { WebSocketImpl: FakeWebSocket, timers: clock, now: clock.now },
    onUpdate: (u) => updates.push(u),
    onTraffic: (t) => traffic.push(t),
  });
  client.start();
  const ws = FakeWebSocket.latest();
  ws.serverOpen();
  ws.serverSend(new Uint8Array([0xc3]).buffer);
  assert.deepEqual(updates, []);
  assert.deepEqual(traffic, [{ bytes: 1, messages: 1, updates: 0 }]);
});
