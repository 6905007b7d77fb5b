#!/usr/bin/env node
// End-to-end test of the dashboard in a real browser (Debian's Chromium driven by playwright-core,
// pinned in web/package.json) against the real pipeline: redis-server, topic-server, the Redis
// bridge, backend-app and a fast synthetic feed. The page's topic-server WebSocket goes through a
// TCP proxy the test controls.
//
// Checks, in order:
//   1. the page loads with no console errors;
//   2. both charts get values (the Redis client and the topic-server client);
//   3. heartbeats are answered: the server (heartbeats every 500 ms, closing after 1.5 s of
//      silence) keeps the one connection open across several of them;
//   4. the proxy cuts the topic-server connection (sockets destroyed, new ones refused for 2 s);
//      the client resumes its session, and the topic-server values it received, compared with
//      what the feed published (the Redis client's values), have nothing lost or repeated;
//   5. a stalled connection (nothing passes, nothing closes) is noticed by the page's watchdog
//      after heartbeat interval + timeout of silence, dropped and resumed, again with nothing
//      lost or repeated;
//   6. the byte counters match the payload bytes the server really sent, connection by
//      connection, and what the page shows.
//
// Usage: node scripts/browser-test.mjs
// Environment: BROWSER_TEST_BIN_DIR (default: for each binary the newer of target/release and
//   target/debug), CHROMIUM (default /usr/bin/chromium). Stops by itself; every wait is bounded.

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';

import { findBinaries, HEARTBEAT_INTERVAL_MS, HEARTBEAT_TIMEOUT_MS, Pipeline, waitFor } from '../web/test/browser/pipeline.mjs';
import { CuttableProxy } from '../web/test/browser/tcp-proxy.mjs';
import { extractUsdRate } from '../web/js/feed.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const OUTAGE_MS = 2000;
const log = (line) => process.stderr.write(`# ${line}\n`);

/** playwright-core from web/node_modules, installed with npm ci there when missing. */
function loadPlaywright() {
  const requireFromWeb = createRequire(join(root, 'web', 'package.json'));
  try {
    return requireFromWeb('playwright-core');
  } catch {
    log('playwright-core is missing; running npm ci in web/');
    execFileSync('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: join(root, 'web'), stdio: 'inherit', timeout: 300000 });
    return requireFromWeb('playwright-core');
  }
}

let pipeline = null;
let proxy = null;
let browser = null;
let page = null;
const consoleErrors = [];

/** Reads one of the page's debug logs (see web/js/debug-recorder.js). */
const readLog = (name) => page.evaluate((n) => window.dashboardDebug.read(n), name);
const tallies = () => page.evaluate(() => window.dashboardDebug.tallies());

before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: apt-get install chromium (or set CHROMIUM)`);
  const { chromium } = loadPlaywright();
  const bins = findBinaries(root, process.env.BROWSER_TEST_BIN_DIR);
  log(`binaries: ${Object.values(bins).join(', ')}`);
  pipeline = new Pipeline({ root, bins, log });
  process.once('exit', () => pipeline?.killNow());
  await pipeline.start();
  proxy = new CuttableProxy({ targetPort: pipeline.ports.topics });
  const proxyPort = await proxy.listen();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 60000,
    // Without the background-networking flags Chromium keeps dialling Google hosts that this
    // machine's closed network refuses.
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage();
  page.setDefaultTimeout(20000);
  page.on('console', (msg) => {
    if (msg.type() === 'error') consoleErrors.push(msg.text());
  });
  page.on('pageerror', (err) => consoleErrors.push(`page error: ${err.message}`));
  const { topics, bridge, feeder } = pipeline.ports;
  const query = new URLSearchParams({
    debug: '1',
    bridge: `ws://127.0.0.1:${bridge}/`,
    feeder: `http://127.0.0.1:${feeder}`,
    topics: `ws://127.0.0.1:${proxyPort}/ws`,
  });
  proxy.pageUrl = `ws://127.0.0.1:${proxyPort}/ws`;
  await page.goto(`http://127.0.0.1:${topics}/?${query}`, { waitUntil: 'load', timeout: 30000 });
});

after(async () => {
  await browser?.close().catch(() => {});
  await proxy?.close().catch(() => {});
  await pipeline?.stop();
  if (pipeline) log(`logs kept in ${pipeline.runDir}`);
});

// Later checks build on earlier ones; once one fails the rest are skipped rather than piling up.
let failed = false;
const step = (name, fn) => test(name, { timeout: 120000 }, async (t) => {
  if (failed) {
    t.skip('an earlier step failed');
    return;
  }
  try {
    await fn();
  } catch (err) {
    failed = true;
    await diagnostics().catch((e) => log(`no diagnostics: ${e.message}`));
    throw err;
  }
});

/** What the proxy and the page saw, logged when a step fails. */
async function diagnostics() {
  proxy?.connections.forEach((c, i) => {
    log(`connection ${i}: ${c.messages.length} messages (${c.messages.reduce((a, b) => a + b, 0)} bytes)${c.stalled ? ', stalled' : ''}`);
  });
  if (!page) return;
  for (const entry of (await readLog('topic-status')).slice(-6)) log(`status ${entry.at} ${entry.state}: ${entry.detail}`);
  for (const session of await readLog('topic-sessions')) log(`session ${JSON.stringify(session)}`);
  const updates = await readLog('topic-updates');
  log(`${updates.length} topic updates, last s ${updates.at(-1)?.s}; ${(await readLog('redis-rates')).length} published`);
}

step('the page loads with no console errors', async () => {
  await page.waitForFunction(() => window.dashboardDebug !== undefined, null, { timeout: 10000 });
  await waitFor('the topic-server client to subscribe', async () => {
    pipeline.assertAlive();
    return (await page.textContent('#topic-status')).startsWith('subscribed');
  }, { timeoutMs: 30000 });
  assert.deepEqual(consoleErrors, []);
});

step('both charts receive values', async () => {
  await waitFor('5 values on each chart', async () => {
    pipeline.assertAlive();
    return (await readLog('redis-rates')).length >= 5 && (await readLog('topic-updates')).length >= 5;
  }, { timeoutMs: 30000 });
  for (const name of ['redis', 'topic']) {
    const shown = await page.textContent(`#${name}-rate`);
    assert.match(shown, /\d/, `#${name}-rate shows a rate`);
    // uPlot draws into a canvas inside the chart's container.
    assert.equal(await page.locator(`#${name}-chart canvas`).count() > 0, true, `${name} chart is drawn`);
  }
  const sessions = await readLog('topic-sessions');
  assert.equal(sessions.length, 1);
  log(`topic server speaks version ${sessions[0].version}`);
});

step('heartbeats are answered with acks: the connection outlives the server\'s silence limit', async () => {
  const silenceLimitMs = HEARTBEAT_INTERVAL_MS + HEARTBEAT_TIMEOUT_MS;
  const first = (await readLog('topic-heartbeats'))[0] ?? Date.now();
  // Heartbeats spanning twice the limit: a page that never acked would have been closed (4001).
  await waitFor('heartbeats spanning twice the silence limit', async () => {
    const beats = await readLog('topic-heartbeats');
    return beats.length >= 3 && beats.at(-1) - first >= 2 * silenceLimitMs;
  }, { timeoutMs: 4 * silenceLimitMs + 5000 });
  assert.equal(proxy.connections.length, 1, 'still the first connection');
  assert.equal((await readLog('topic-sessions')).length, 1, 'still the first session');
});

step('after the proxy cuts the topic-server connection, the session resumes with nothing lost or repeated', async () => {
  const before = (await readLog('topic-updates')).length;
  const connectionsBefore = proxy.connections.length;
  await proxy.cut(OUTAGE_MS);
  log(`cut the connection; refused ${proxy.refused} reconnection(s) during the ${OUTAGE_MS} ms outage`);
  await waitFor('a new connection through the proxy', () => proxy.connections.length > connectionsBefore, { timeoutMs: 15000 });
  await waitFor('the session to be taken back', async () => (await readLog('topic-sessions')).length >= 2, { timeoutMs: 15000 });
  const sessions = await readLog('topic-sessions');
  assert.equal(sessions[0].version, 2, 'the server speaks protocol version 2 (needed for resume)');
  assert.equal(sessions.at(-1).recovered, true, `resume refused: ${JSON.stringify(sessions.at(-1))}`);
  assert.equal(sessions.at(-1).session, sessions[0].session, 'the same session');
  await waitFor('10 more topic values after the cut', async () => (await readLog('topic-updates')).length >= before + 10, { timeoutMs: 20000 });

  await settleAndCompare();
});

step('a stalled connection is noticed after interval + timeout of silence and resumed', async () => {
  const connectionsBefore = proxy.connections.length;
  const sessionsBefore = (await readLog('topic-sessions')).length;
  const updatesBefore = (await readLog('topic-updates')).length;
  await pipeline.startFeed();
  const stalledAt = Date.now();
  proxy.stall();
  const silenceLimitMs = HEARTBEAT_INTERVAL_MS + HEARTBEAT_TIMEOUT_MS;
  const dropped = await waitFor('the page to drop the stalled connection', async () => {
    const statuses = await readLog('topic-status');
    return statuses.find((st) => st.at >= stalledAt && st.state === 'retrying');
  }, { timeoutMs: 10000 });
  const lastByteAt = proxy.connections.at(-1).lastForwardAt ?? stalledAt;
  const silentForMs = dropped.at - lastByteAt;
  log(`the page dropped the stalled connection ${silentForMs} ms after the last byte: ${dropped.detail}`);
  assert.match(dropped.detail, new RegExp(`no frame for ${silenceLimitMs} ms`), 'dropped by the watchdog');
  // Counted from the last byte that reached it, the page waited out the whole silence limit
  // (less a little for the page's and this process's clocks being read at different moments),
  // and not much longer.
  assert.ok(silentForMs >= silenceLimitMs - 50, `dropped after only ${silentForMs} ms of silence`);
  assert.ok(dropped.at - stalledAt <= silenceLimitMs + 1500, `dropped only ${dropped.at - stalledAt} ms after the stall`);
  await waitFor('the page to dial again', () => proxy.connections.length > connectionsBefore, { timeoutMs: 15000 });
  await waitFor('the session to be taken back', async () => (await readLog('topic-sessions')).length > sessionsBefore, { timeoutMs: 15000 });
  const session = (await readLog('topic-sessions')).at(-1);
  assert.equal(session.recovered, true, `resume refused: ${JSON.stringify(session)}`);
  await waitFor('10 more topic values', async () => (await readLog('topic-updates')).length >= updatesBefore + 10, { timeoutMs: 20000 });
  await settleAndCompare();
});

step('byte counters match the payload bytes the server sent on each connection', async () => {
  for (const connection of proxy.connections) {
    if (connection.counter.head === null) continue;
    assert.doesNotMatch(connection.counter.head, /sec-websocket-extensions/i, 'no compression: wire sizes are page sizes');
  }
  const frames = await readLog('topic-frames');
  const perConnection = proxy.connections.map((c) => c.messages).filter((m) => m.length > 0);
  assert.ok(perConnection.length >= 2, `frames on ${perConnection.length} connection(s); expected the one cut and the one resumed`);
  assert.ok(
    isConcatenationOfPrefixes(frames, perConnection),
    `the page counted frames of ${JSON.stringify(frames.slice(0, 20))}… (${frames.length}); the server sent ${perConnection.map((m) => m.length).join(' + ')}`,
  );
  const t = await tallies();
  const sum = (xs) => xs.reduce((a, b) => a + b, 0);
  assert.equal(t.topic.bytes, sum(frames));
  assert.equal(t.topic.frames, frames.length);
  assert.equal(t.redis.bytes, sum(await readLog('redis-frames')));
  // What the page shows (the exact count is in the title; the text is rounded).
  await page.waitForFunction(
    (bytes) => document.getElementById('topic-bytes').title.replace(/\D/g, '') === String(bytes),
    t.topic.bytes,
    { timeout: 5000 },
  );
  assert.deepEqual(consoleErrors.filter((e) => !isExpectedOutageError(e)), []);
});


/**
 * Stops the feed, waits for both clients to reach the last value it published, and compares the
 * topic-server values with the published ones (see assertSameSeries).
 */
async function settleAndCompare() {
  // Stop the feed; both clients must then end on the last value it published.
  await pipeline.stopFeed();
  const last = await pipeline.lastPublished(extractUsdRate);
  await waitFor(`both clients to reach the last published rate ${last}`, async () => {
    const redis = await readLog('redis-rates');
    const topic = await readLog('topic-updates');
    return redis.at(-1) === last && topic.at(-1)?.rate === last;
  }, { timeoutMs: 20000 });

  // Every reconnection took the same session back (a new session would restart `s` and lose
  // what was published in between).
  const sessions = await readLog('topic-sessions');
  for (const later of sessions.slice(1)) {
    assert.ok(later.recovered === true && later.session === sessions[0].session, `not resumed: ${JSON.stringify(later)}`);
  }
  const updates = await readLog('topic-updates');
  const published = await readLog('redis-rates');
  // Sequence numbers only grow: nothing was applied twice, whatever the server replayed.
  for (let i = 1; i < updates.length; i += 1) {
    assert.ok(updates[i].s > updates[i - 1].s, `update ${i}: s ${updates[i].s} after ${updates[i - 1].s}`);
  }
  assertSameSeries(updates.map((u) => u.rate), published);
  log(`${updates.length} topic values match the ${published.length} published`);
}

/**
 * The topic values must be the published values, in order, from where both clients were
 * listening to the end: nothing missing and nothing twice. Repeats in a row are collapsed first
 * on the published side (the topic server sends nothing for an unchanged value). The first topic
 * values may predate the page's Redis client: the topic's value when the page subscribed, and on
 * a loaded machine the updates that came before the Redis client's WebSocket was open (at most
 * a few seconds' worth).
 */
function assertSameSeries(topicRates, publishedRates) {
  const collapse = (xs) => xs.filter((x, i) => i === 0 || x !== xs[i - 1]);
  for (let i = 1; i < topicRates.length; i += 1) {
    assert.notEqual(topicRates[i], topicRates[i - 1], `topic value ${i} repeats the one before it`);
  }
  const published = collapse(publishedRates);
  const MAX_HEAD_START = 20;
  let skip = 0;
  let start = published.indexOf(topicRates[0]);
  while (start < 0 && skip + 1 < Math.min(topicRates.length, MAX_HEAD_START)) {
    skip += 1;
    start = published.indexOf(topicRates[skip]);
  }
  assert.ok(start >= 0, `none of the first ${skip + 1} topic values is among the published ones`);
  // Topic values are skipped only when they came before the Redis client listened: then the
  // first shared one is the first the Redis client saw.
  assert.ok(skip === 0 || start === 0, `${skip} topic value(s) skipped, yet the Redis client saw ${start} before the first shared one`);
  const expected = published.slice(start);
  assert.deepEqual(topicRates.slice(skip), expected, 'topic values = published values from the first one on');
}

/**
 * Whether `frames` is a prefix of the first connection's messages, then a prefix of the next
 * one's, and so on, with the last connection complete: what a page that lost connections
 * mid-stream and reconnected has received.
 */
function isConcatenationOfPrefixes(frames, connections, from = 0, index = 0) {
  if (index === connections.length) return from === frames.length;
  const sent = connections[index];
  const last = index === connections.length - 1;
  for (let taken = last ? sent.length : Math.min(sent.length, frames.length - from); taken >= 0; taken -= 1) {
    let match = from + taken <= frames.length;
    for (let i = 0; match && i < taken; i += 1) match = frames[from + i] === sent[i];
    if (match && isConcatenationOfPrefixes(frames, connections, from + taken, index + 1)) return true;
    if (last) break;
  }
  return false;
}

/** Chromium logs a refused WebSocket dial as a console error; during the outage that is expected. */
function isExpectedOutageError(text) {
  return proxy?.pageUrl !== undefined && text.includes(`WebSocket connection to '${proxy.pageUrl}' failed`);
}
