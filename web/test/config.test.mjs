import assert from 'node:assert/strict';
import { test } from 'node:test';

import { DEFAULT_TOPIC, resolveConfig } from '../js/config.js';

const page = (search = '', protocol = 'http:') => ({
  protocol,
  hostname: 'dash.example',
  host: 'dash.example:8080',
  search,
});

test('defaults follow the page address', () => {
  const c = resolveConfig(page());
  assert.equal(c.bridgeUrl, 'ws://dash.example:3000/');
  assert.equal(c.topicsUrl, 'ws://dash.example:8080/ws');
  assert.equal(c.feederUrl, 'http://dash.example:3100');
  assert.equal(c.topic, 'redis/views/usd');
  assert.equal(DEFAULT_TOPIC, 'redis/views/usd');
  assert.equal(c.debug, false);
  assert.deepEqual(c.warnings, []);
});

test('?debug=1 (and only that) turns on the debug log', () => {
  assert.equal(resolveConfig(page('?debug=1')).debug, true);
  assert.equal(resolveConfig(page('?debug=0')).debug, false);
  assert.equal(resolveConfig(page('?debug=yes')).debug, false);
});

test('an https page talks wss to the topic server', () => {
  assert.equal(resolveConfig(page('', 'https:')).topicsUrl, 'wss://dash.example:8080/ws');
});

test('query parameters override every endpoint and the topic', () => {
  const c = resolveConfig(page(
    '?bridge=ws://bridge.example:4000/&topics=wss://t.example/ws&feeder=http://f.example:9/&topic=views/usd',
  ));
  assert.equal(c.bridgeUrl, 'ws://bridge.example:4000/');
  assert.equal(c.topicsUrl, 'wss://t.example/ws');
  assert.equal(c.feederUrl, 'http://f.example:9');
  assert.equal(c.topic, 'views/usd');
  assert.deepEqual(c.warnings, []);
});

test('bad parameters are ignored with a warning each', () => {
  const c = resolveConfig(page('?bridge=http://x:3000/&topics=not%20a%20url&feeder=ws://f/&topic=%20'));
  assert.equal(c.bridgeUrl, 'ws://dash.example:3000/');
  assert.equal(c.topicsUrl, 'ws://dash.example:8080/ws');
  assert.equal(c.feederUrl, 'http://dash.example:3100');
  assert.equal(c.topic, 'redis/views/usd');
  assert.equal(c.warnings.length, 4);
  assert.match(c.warnings[0], /\?bridge=http:\/\/x:3000\/ ignored/);
});

test('a page opened from disk assumes localhost', () => {
  const c = resolveConfig({ protocol: 'file:', hostname: '', host: '', search: '' });
  assert.equal(c.bridgeUrl, 'ws://localhost:3000/');
  assert.equal(c.topicsUrl, 'ws://localhost:8080/ws');
});

test('?topics= may list several servers; a list with a bad entry is ignored as a whole', () => {
  const c = resolveConfig(page('?topics=ws://a.example:8081/ws,%20ws://b.example:8082/ws'));
  assert.deepEqual(c.topicsUrls, ['ws://a.example:8081/ws', 'ws://b.example:8082/ws']);
  assert.deepEqual(c.warnings, []);
  const bad = resolveConfig(page('?topics=ws://a.example:8081/ws,http://b.example/'));
  assert.deepEqual(bad.topicsUrls, ['ws://dash.example:8080/ws']);
  assert.equal(bad.warnings.length, 1);
  assert.deepEqual(resolveConfig(page('')).topicsUrls, ['ws://dash.example:8080/ws']);
});
