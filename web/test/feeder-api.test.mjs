import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import { after, before, test } from 'node:test';

import { FeederApi, FeederError, FeederMonitor } from '../js/feeder-api.js';
import { ManualClock } from './support/fakes.mjs';

// A stand-in feeder on 127.0.0.1 with the real API's routes, recording what it was asked.
const requests = [];
const state = { running: false, source: 'synthetic', sink: 'ws://127.0.0.1:3000/', interval_ms: 5000,
  polls: 0, published: 0, failures: 0, last_payload: null, last_published_at: null };
let server;
let baseUrl;

before(async () => {
  server = createServer(async (req, res) => {
    let body = '';
    for await (const chunk of req) body += chunk;
    requests.push({ method: req.method, url: req.url, body, type: req.headers['content-type'] });
    const reply = (status, value) => {
      res.writeHead(status, { 'Content-Type': 'application/json', 'Access-Control-Allow-Origin': '*' });
      res.end(value === undefined ? '' : JSON.stringify(value));
    };
    if (req.method === 'GET' && req.url === '/status') return reply(200, state);
    if (req.method === 'POST' && req.url === '/start') { state.running = true; return reply(200, state); }
    if (req.method === 'POST' && req.url === '/stop') { state.running = false; return reply(204); }
    if (req.method === 'POST' && req.url === '/interval') {
      const ms = JSON.parse(body || '{}').interval_ms;
      if (!Number.isInteger(ms) || ms < 100) return reply(400, { error: 'interval_ms must be >= 100' });
      state.interval_ms = ms;
      return reply(200, state);
    }
    if (req.url === '/slow') return undefined; // never answers
    return reply(404, { error: 'no such route' });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  baseUrl = `http://127.0.0.1:${server.address().port}`;
});

after(() => {
  server.closeAllConnections();
  server.close();
});

test('status, start, stop and interval reach the right routes', async () => {
  const api = new FeederApi(`${baseUrl}/`);
  assert.equal((await api.status()).running, false);
  assert.equal((await api.start()).running, true);
  assert.equal(await api.stop(), null, 'an empty answer is fine');
  assert.equal((await api.setInterval(750)).interval_ms, 750);
  const last = requests.at(-1);
  assert.deepEqual(last, { method: 'POST', url: '/interval', body: '{"interval_ms":750}', type: 'application/json' });
  assert.deepEqual(requests.slice(-4).map((r) => `${r.method} ${r.url}`),
    ['GET /status', 'POST /start', 'POST /stop', 'POST /interval']);
});

test('an error answer carries the status and the feeder\'s explanation', async () => {
  const api = new FeederApi(baseUrl);
  await assert.rejects(api.setInterval(5), (err) => {
    assert.ok(err instanceof FeederError);
    assert.equal(err.status, 400);
    assert.equal(err.unreachable, false);
    assert.match(err.message, /HTTP 400 — .*interval_ms must be >= 100/);
    return true;
  });
});

test('a feeder that is down or silent is reported unreachable', async () => {
  // A port that was just free: nothing listens there.
  const probe = createServer();
  probe.listen(0, '127.0.0.1');
  await once(probe, 'listening');
  const deadPort = probe.address().port;
  probe.close();
  await once(probe, 'close');
  const down = new FeederApi(`http://127.0.0.1:${deadPort}`);
  await assert.rejects(down.status(), (err) => err.unreachable === true && /feeder unreachable/.test(err.message));

  const silent = new FeederApi(baseUrl, { timeoutMs: 100 });
  await assert.rejects(silent.request('GET', '/slow'), (err) => err.unreachable && /no answer within 100 ms/.test(err.message));
});

test('the monitor polls while reachable and backs off while not', async () => {
  const clock = new ManualClock();
  let up = true;
  let calls = 0;
  const api = {
    status: async () => {
      calls += 1;
      if (up) return { running: true };
      throw new FeederError('feeder unreachable', { unreachable: true });
    },
  };
  const seen = [];
  const backoff = { d: 500, nextDelay() { const d = this.d; this.d *= 2; return d; }, reset() { this.d = 500; } };
  const monitor = new FeederMonitor(api, { pollMs: 1000, backoff, timers: clock, onStatus: (s) => seen.push(s) });
  const settle = () => new Promise((resolve) => setImmediate(resolve));

  monitor.start();
  await settle();
  assert.deepEqual(seen.at(-1), { reachable: true, status: { running: true }, error: null, retryInMs: 1000 });
  up = false;
  clock.advance(1000);
  await settle();
  assert.equal(seen.at(-1).reachable, false);
  assert.equal(seen.at(-1).retryInMs, 500);
  clock.advance(500);
  await settle();
  assert.equal(seen.at(-1).retryInMs, 1000);
  up = true;
  clock.advance(1000);
  await settle();
  assert.equal(seen.at(-1).reachable, true);
  assert.equal(backoff.d, 500, 'back-off reset after the feeder answered');

  await monitor.refresh();
  assert.equal(calls, 5, 'refresh polls at once');
  monitor.stop();
  clock.advance(60_000);
  await settle();
  assert.equal(calls, 5, 'no polling after stop');
});
