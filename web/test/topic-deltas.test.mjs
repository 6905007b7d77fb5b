// `delta` messages: the decoder applies them to the canonical bytes it holds and hands out full
// values; a delta it cannot apply drops the topic's value and is reported, never thrown, and the
// next full value recovers the topic.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { beforeEach, test } from 'node:test';

import { createDelta } from '../node_modules/fossil-delta/fossil-delta.js';
import { TopicClient, TopicDecoder } from '../js/topic-client.js';
import { FakeWebSocket, ManualClock } from './support/fakes.mjs';

const utf8 = new TextEncoder();
const fixtures = JSON.parse(
  readFileSync(new URL('./fixtures/rust-fossil-deltas.json', import.meta.url), 'utf8'),
);

const subscribed = (id, topicType, path = 'redis/bitcoin') =>
  JSON.stringify({ type: 'subscribed', id, path, topicType, properties: {} });
/** A value update laid out exactly as the server writes it, around the value's wire JSON. */
const valueMessage = (id, wireJson) => `{"i":${id},"v":${wireJson}}`;
const deltaMessage = (id, base64) => `{"i":${id},"d":"${base64}"}`;
/** A delta made by the npm encoder from one text to another (their UTF-8 bytes), as base64. */
const npmDelta = (from, to) => Buffer.from(createDelta(utf8.encode(from), utf8.encode(to))).toString('base64');
const flipByte = (base64, index) => {
  const bytes = Buffer.from(base64, 'base64');
  bytes[index] ^= 0x01;
  return bytes.toString('base64');
};

/** The wire JSON of a fixture chain value: JSON text as is, STRING and BINARY as JSON strings. */
const wireJson = (topicType, wire) => (topicType === 'JSON' ? wire : JSON.stringify(wire));
/** What the page must be handed for a fixture chain value. */
const expected = (topicType, wire) => (topicType === 'JSON' ? JSON.parse(wire) : wire);

test('Rust-made delta chains (JSON, UTF-8, STRING, BINARY) become full values', () => {
  for (const chain of fixtures.chains) {
    const d = new TopicDecoder();
    d.decodeMessage(subscribed(4, chain.topicType));
    const events = [d.decodeMessage(valueMessage(4, wireJson(chain.topicType, chain.values[0])))];
    for (const delta of chain.deltas) events.push(d.decodeMessage(deltaMessage(4, delta)));
    assert.deepEqual(events.map((e) => e.kind), ['update', 'update', 'update'], chain.name);
    assert.deepEqual(events.map((e) => e.via), ['value', 'delta', 'delta'], chain.name);
    assert.deepEqual(
      events.map((e) => e.value),
      chain.values.map((v) => expected(chain.topicType, v)),
      chain.name,
    );
    const last = chain.values.at(-1);
    const lastBytes = chain.topicType === 'BINARY' ? Buffer.from(last, 'base64') : utf8.encode(last);
    assert.deepEqual(Buffer.from(d.topics.get(4).canonical), Buffer.from(lastBytes), chain.name);
  }
});

test('value, delta, delta keeps the exact JSON text, numbers and multi-byte characters included', () => {
  // JSON.stringify would write 56189.30 as 56189.3 and 1.0e3 as 1000: the deltas below are made
  // against the text as sent, so they apply only if the decoder kept that text byte for byte.
  const v0 = '{"n":1.0e3,"price":56189.30,"symbol":"€","text":"prix en € — à jour"}';
  const v1 = '{"n":1.0e3,"price":56190.10,"symbol":"€","text":"prix en € — à jour"}';
  const v2 = '{"n":1.0e3,"price":56190.10,"symbol":"€€","text":"prix en € — mis à jour 😀"}';
  const d = new TopicDecoder();
  const events = d.decodeFrame(
    [subscribed(7, 'JSON'), valueMessage(7, v0), deltaMessage(7, npmDelta(v0, v1)), deltaMessage(7, npmDelta(v1, v2))].join('\n'),
  );
  assert.deepEqual(events.map((e) => e.kind), ['subscribed', 'update', 'update', 'update']);
  assert.equal(events[2].value.price, 56190.1);
  assert.deepEqual(events[3].value, JSON.parse(v2));
  assert.equal(new TextDecoder().decode(d.topics.get(7).canonical), v2);
});

test('a value message in another layout falls back to re-serialising the parsed value', () => {
  const d = new TopicDecoder();
  d.decodeMessage(subscribed(7, 'JSON'));
  const v0 = '{"a":1,"b":"€"}';
  const v1 = '{"a":2,"b":"€"}';
  const update = d.decodeMessage(`{"id":7,"type":"value","value":${v0}}`);
  assert.equal(update.kind, 'update');
  assert.equal(new TextDecoder().decode(d.topics.get(7).canonical), v0);
  const next = d.decodeMessage(deltaMessage(7, npmDelta(v0, v1)));
  assert.deepEqual(next.value, { a: 2, b: '€' });
  // An extra field after `value` is not the server layout either; it still decodes.
  const extra = d.decodeMessage(`{"type":"value","id":7,"value":{"a":3},"x":1}`);
  assert.deepEqual(extra.value, { a: 3 });
  assert.equal(new TextDecoder().decode(d.topics.get(7).canonical), '{"a":3}');
});

test('a corrupted delta is rejected without a crash; the next full value recovers', () => {
  const v0 = '{"price":56189.3483,"symbol":"€","pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}';
  const v1 = '{"price":56200.5,"symbol":"€","pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}';
  const v2 = '{"price":56211.25,"symbol":"€","pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}';
  const good = npmDelta(v0, v1);
  const d = new TopicDecoder();
  d.decodeFrame([subscribed(7, 'JSON'), valueMessage(7, v0)].join('\n'));

  // Flip a byte inside the inserted literal: the checksum catches it.
  const insertAt = Buffer.from(good, 'base64').indexOf('56200');
  assert.ok(insertAt > 0);
  const bad = d.decodeMessage(deltaMessage(7, flipByte(good, insertAt + 2)));
  assert.equal(bad.kind, 'delta-error');
  assert.match(bad.message, /delta not applied: .*checksum/);
  const topic = d.topics.get(7);
  assert.equal(topic.canonical, null, 'the held value is dropped');
  assert.equal(topic.value, undefined);
  assert.equal(topic.error, bad.message);

  // Even the right delta cannot apply now: there is no base.
  const orphan = d.decodeMessage(deltaMessage(7, good));
  assert.equal(orphan.kind, 'delta-error');
  assert.match(orphan.message, /no value held/);

  // A full value recovers, and deltas apply again.
  assert.equal(d.decodeMessage(valueMessage(7, v1)).kind, 'update');
  assert.equal(topic.error, null);
  const after = d.decodeMessage(deltaMessage(7, npmDelta(v1, v2)));
  assert.equal(after.kind, 'update');
  assert.equal(after.value.price, 56211.25);
});

test('a delta before any value, or that is not a delta at all, is a delta-error', () => {
  const d = new TopicDecoder();
  d.decodeFrame([subscribed(1, 'JSON'), subscribed(2, 'INT64', 'n'), subscribed(3, 'STRING', 's')].join('\n'));
  const early = d.decodeMessage(deltaMessage(1, npmDelta('{"a":1}', '{"a":2}')));
  assert.equal(early.kind, 'delta-error');
  assert.match(early.message, /no value held/);

  d.decodeMessage(valueMessage(2, '42'));
  const int = d.decodeMessage(deltaMessage(2, npmDelta('42', '43')));
  assert.equal(int.kind, 'delta-error');
  assert.match(int.message, /INT64 topics do not take deltas/);

  const base = 'a string long enough to be worth a delta';
  const reloaded = () => d.decodeMessage(valueMessage(3, JSON.stringify(base)));
  reloaded();
  assert.equal(d.decodeMessage(deltaMessage(3, '@@not base64')).kind, 'delta-error');
  reloaded();
  assert.equal(d.decodeMessage('{"type":"delta","id":3}').kind, 'delta-error');
  reloaded();
  const cut = Buffer.from(npmDelta(base, `${base}!`), 'base64').subarray(0, 8).toString('base64');
  assert.match(d.decodeMessage(deltaMessage(3, cut)).message, /truncated/);
  reloaded();
  // A delta whose result is not UTF-8 cannot be a STRING value.
  const notUtf8 = Buffer.from(createDelta(utf8.encode(base), new Uint8Array([0xff, 0xfe]))).toString('base64');
  assert.equal(d.decodeMessage(deltaMessage(3, notUtf8)).kind, 'delta-error');

  const unknown = d.decodeMessage(deltaMessage(99, npmDelta('{"a":1}', '{"a":2}')));
  assert.equal(unknown.kind, 'protocol-error');
  assert.match(unknown.message, /unknown topic id 99/);
});

let clock;
let updates;
let traffic;
let statuses;
let warnings;

beforeEach(() => {
  FakeWebSocket.reset();
  clock = new ManualClock();
  updates = [];
  traffic = [];
  statuses = [];
  warnings = [];
});

test('the client counts deltas, flags a failed one on the status and recovers', () => {
  const client = new TopicClient({
    url: 'ws://topics.test:8080/ws',
    selector: 'redis/bitcoin',
    socketOptions: { WebSocketImpl: FakeWebSocket, timers: clock, now: clock.now },
    onUpdate: (u) => updates.push(u),
    onTraffic: (t) => traffic.push(t),
    onStatus: (s) => statuses.push(s),
    log: { warn: (...args) => warnings.push(args.join(' ')) },
  });
  client.start();
  const ws = FakeWebSocket.latest();
  ws.serverOpen();
  ws.serverSend('{"type":"connected","version":1,"session":"s-1"}');
  const v0 = '{"bpi":{"USD":{"rate_float":56189.3483,"symbol":"&#36;"}},"note":"€ and more padding"}';
  const v1 = '{"bpi":{"USD":{"rate_float":56200.5,"symbol":"&#36;"}},"note":"€ and more padding"}';
  const v2 = '{"bpi":{"USD":{"rate_float":56300.75,"symbol":"&#36;"}},"note":"€ and more padding"}';
  ws.serverSend(['{"type":"ok","cid":1}', subscribed(7, 'JSON'), valueMessage(7, v0)].join('\n'));
  const delta1 = deltaMessage(7, npmDelta(v0, v1));
  ws.serverSend(delta1);
  assert.equal(statuses.at(-1).state, 'subscribed');
  assert.deepEqual(updates.map((u) => [u.value.bpi.USD.rate_float, u.via]), [[56189.3483, 'value'], [56200.5, 'delta']]);
  assert.deepEqual(traffic.at(-1), { bytes: Buffer.byteLength(delta1), messages: 1, updates: 1, deltas: 1 });
  assert.deepEqual(traffic[1], { bytes: traffic[1].bytes, messages: 3, updates: 1, deltas: 0 });

  // A corrupt delta: no update, counted as a message only, the status says which topic and why.
  const corrupt = deltaMessage(7, flipByte(npmDelta(v1, v2), 12));
  ws.serverSend(corrupt);
  assert.equal(updates.length, 2);
  assert.deepEqual(traffic.at(-1), { bytes: Buffer.byteLength(corrupt), messages: 1, updates: 0, deltas: 0 });
  assert.equal(statuses.at(-1).state, 'error');
  assert.match(statuses.at(-1).detail, /^redis\/bitcoin: delta not applied: .* \(waiting for a full value\)$/);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /redis\/bitcoin: delta not applied/);
  // Further deltas fail for want of a base; the first cause stays on show, logged once.
  ws.serverSend(deltaMessage(7, npmDelta(v1, v2)));
  assert.equal(warnings.length, 1);
  assert.match(statuses.at(-1).detail, /delta not applied/);
  assert.equal(updates.length, 2);

  ws.serverSend(valueMessage(7, v2));
  assert.equal(statuses.at(-1).state, 'subscribed');
  assert.equal(statuses.at(-1).detail, 'session s-1');
  assert.deepEqual(updates.at(-1).value.bpi.USD.rate_float, 56300.75);
  assert.equal(ws.closedWith, null, 'a bad delta never costs the connection');
});

test('the long update form is accepted too, and a malformed short form is reported', () => {
  const d = new TopicDecoder();
  d.decodeMessage(subscribed(4, 'JSON'));
  const long = d.decodeMessage('{"type":"value","id":4,"value":{"p":1.50}}');
  assert.equal(long.kind, 'update');
  assert.deepEqual(long.value, { p: 1.5 });
  const text = '{"p":1.50,"q":"x"}';
  d.decodeMessage(valueMessage(4, text));
  const next = '{"p":1.50,"q":"y"}';
  const viaLong = d.decodeMessage(`{"type":"delta","id":4,"delta":"${npmDelta(text, next)}"}`);
  assert.equal(viaLong.kind, 'update');
  assert.equal(viaLong.via, 'delta');
  assert.deepEqual(viaLong.value, { p: 1.5, q: 'y' });
  assert.equal(d.decodeMessage('{"i":4}').kind, 'protocol-error');
  assert.equal(d.decodeMessage('{"i":4,"v":1,"d":"QQ=="}').kind, 'protocol-error');
});

// A delta declaring a huge output (what a hostile or broken server could send): refused by its
// size header before anything is built, handled like any other delta that does not apply.
/** `~~~~~~` declares 2^36 - 1 bytes (~68 GB); the body copies a byte of the base 64 times. */
const hostileDelta = Buffer.from(`~~~~~~\n${'1@0,'.repeat(64)}0;`).toString('base64');

test('a delta declaring ~68 GB is a delta-error naming the limit; the next full value recovers', () => {
  const v0 = '{"price":56189.3483,"symbol":"€"}';
  const v1 = '{"price":56200.5,"symbol":"€"}';
  const d = new TopicDecoder();
  d.decodeFrame([subscribed(7, 'JSON'), valueMessage(7, v0)].join('\n'));
  const [bad, next] = d.decodeFrame([deltaMessage(7, hostileDelta), valueMessage(7, v1)].join('\n'));
  assert.equal(bad.kind, 'delta-error');
  assert.match(bad.message, /^delta not applied: delta declares 68719476735 output bytes, more than the limit of 67108864$/);
  assert.equal(next.kind, 'update', 'the message after it in the same frame is still decoded');
  assert.deepEqual(next.value, JSON.parse(v1));
  const topic = d.topics.get(7);
  assert.equal(topic.error, null);
  assert.equal(new TextDecoder().decode(topic.canonical), v1);
});

test('a hostile delta from the server leaves the client running; the next full value arrives', () => {
  const client = new TopicClient({
    url: 'ws://topics.test:8080/ws',
    selector: 'redis/bitcoin',
    socketOptions: { WebSocketImpl: FakeWebSocket, timers: clock, now: clock.now },
    onUpdate: (u) => updates.push(u),
    onTraffic: (t) => traffic.push(t),
    onStatus: (s) => statuses.push(s),
    log: { warn: (...args) => warnings.push(args.join(' ')) },
  });
  client.start();
  const ws = FakeWebSocket.latest();
  ws.serverOpen();
  ws.serverSend('{"type":"connected","version":1,"session":"s-1"}');
  const v0 = '{"bpi":{"USD":{"rate_float":56189.3483}},"note":"€ and some padding"}';
  const v1 = '{"bpi":{"USD":{"rate_float":56200.5}},"note":"€ and some padding"}';
  const v2 = '{"bpi":{"USD":{"rate_float":56300.75}},"note":"€ and some padding"}';
  ws.serverSend(['{"type":"ok","cid":1}', subscribed(7, 'JSON'), valueMessage(7, v0)].join('\n'));
  assert.equal(statuses.at(-1).state, 'subscribed');

  const hostile = deltaMessage(7, hostileDelta);
  assert.doesNotThrow(() => ws.serverSend(hostile));
  assert.equal(updates.length, 1, 'nothing delivered for the hostile delta');
  assert.deepEqual(traffic.at(-1), { bytes: Buffer.byteLength(hostile), messages: 1, updates: 0, deltas: 0 });
  assert.equal(statuses.at(-1).state, 'error');
  assert.match(statuses.at(-1).detail, /^redis\/bitcoin: delta not applied: delta declares \d+ output bytes, more than the limit of \d+ \(waiting for a full value\)$/);
  assert.equal(warnings.length, 1);
  assert.match(warnings[0], /redis\/bitcoin: delta not applied: delta declares .*; dropped its value/);
  assert.equal(client.decoder.topics.get(7).canonical, null, 'the held value is dropped');

  // The next full value is delivered, and deltas against it apply again.
  ws.serverSend(valueMessage(7, v1));
  assert.equal(statuses.at(-1).state, 'subscribed');
  assert.deepEqual(updates.map((u) => [u.value.bpi.USD.rate_float, u.via]), [[56189.3483, 'value'], [56200.5, 'value']]);
  ws.serverSend(deltaMessage(7, npmDelta(v1, v2)));
  assert.deepEqual([updates.at(-1).value.bpi.USD.rate_float, updates.at(-1).via], [56300.75, 'delta']);
  assert.equal(ws.closedWith, null, 'a hostile delta never costs the connection');
  assert.equal(FakeWebSocket.instances.length, 1, 'no reconnect');
  client.stop();
});
