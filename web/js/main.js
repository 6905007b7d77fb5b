// Wires the dashboard together: the feeder panel, the two clients and their charts, and the
// bandwidth comparison. All decoding and arithmetic live in the other modules; this file only
// moves their results onto the page.

import { BridgeClient } from './bridge-client.js';
import { createTimeChart } from './charts.js';
import { resolveConfig } from './config.js';
import { FeederApi, FeederMonitor } from './feeder-api.js';
import { describeField, extractUsdRate, INTERVAL_LIMITS, parseIntervalMs, prettyPayload } from './feed.js';
import {
  formatBytes,
  formatCount,
  formatDelay,
  formatPercent,
  formatRate,
  formatTimestamp,
} from './format.js';
import { DebugRecorder } from './debug-recorder.js';
import { addFrame, bytesPerUpdate, emptyTally, savingPercent } from './metrics.js';
import { BoundedSeries, DEFAULT_WINDOW } from './series.js';
import { TopicClient } from './topic-client.js';

const COLORS = { redis: '#d6452f', topic: '#1f6feb' };
const BYTES_SAMPLE_MS = 1000;

const config = resolveConfig(window.location);
const $ = (id) => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`index.html has no #${id}`);
  return el;
};
const nowSeconds = () => Date.now() / 1000;

// With ?debug=1, what each client received, for tests (see debug-recorder.js).
const debug = config.debug ? new DebugRecorder() : null;
if (debug) {
  window.dashboardDebug = {
    read: (name) => debug.read(name),
    dropped: () => ({ ...debug.dropped }),
    tallies: () => ({ redis: { ...clients.redis.tally }, topic: { ...clients.topic.tally } }),
  };
}

// ---- configuration line -------------------------------------------------------------------

$('cfg-bridge').textContent = config.bridgeUrl;
$('cfg-topics').textContent = config.topicsUrl;
$('cfg-feeder').textContent = config.feederUrl;
$('cfg-topic').textContent = config.topic;
$('topic-selector').textContent = config.topic;
$('window-size').textContent = String(DEFAULT_WINDOW);
if (config.warnings.length > 0) {
  const list = $('config-warnings');
  for (const warning of config.warnings) {
    const item = document.createElement('li');
    item.textContent = warning;
    list.append(item);
  }
  list.hidden = false;
}

// ---- status badges ------------------------------------------------------------------------

const BADGE_KIND = {
  open: 'ok',
  subscribed: 'ok',
  reachable: 'ok',
  idle: 'pending',
  connecting: 'pending',
  handshaking: 'pending',
  subscribing: 'pending',
  retrying: 'bad',
  unreachable: 'bad',
  error: 'bad',
  stopped: 'off',
};
const BADGE_TEXT = {
  open: 'connected',
  subscribed: 'subscribed',
  reachable: 'reachable',
  idle: 'idle',
  connecting: 'connecting…',
  handshaking: 'handshaking…',
  subscribing: 'subscribing…',
  retrying: 'disconnected',
  unreachable: 'unreachable',
  error: 'error',
  stopped: 'stopped',
};

/** Per badge: its state, detail and when the next retry is due (for the countdown). */
const badges = new Map();

function setBadge(id, state, detail, retryInMs, attempt = 0) {
  badges.set(id, {
    state,
    attempt,
    detail: detail ?? '',
    retryAt: retryInMs === null || retryInMs === undefined ? null : Date.now() + retryInMs,
  });
  renderBadge(id);
}

function renderBadge(id) {
  const badge = badges.get(id);
  if (!badge) return;
  const el = $(id);
  let text = BADGE_TEXT[badge.state] ?? badge.state;
  if (badge.state === 'connecting' && badge.attempt > 1) text += ` (attempt ${badge.attempt})`;
  if (badge.retryAt !== null && BADGE_KIND[badge.state] === 'bad') {
    text += ` — retry in ${formatDelay(Math.max(0, badge.retryAt - Date.now()))}`;
  }
  el.textContent = text;
  el.className = `badge badge-${BADGE_KIND[badge.state] ?? 'pending'}`;
  el.title = badge.detail;
  const detail = document.getElementById(`${id}-detail`);
  if (detail) detail.textContent = badge.detail;
}

setInterval(() => {
  for (const id of badges.keys()) renderBadge(id);
}, 250);

// ---- the two clients ----------------------------------------------------------------------

const clients = {
  redis: {
    tally: emptyTally(),
    series: new BoundedSeries(1),
    lastRate: null,
    chart: createTimeChart($('redis-chart'), {
      series: [{ label: 'USD (Redis bridge)', stroke: COLORS.redis }],
      format: formatRate,
    }),
  },
  topic: {
    tally: emptyTally(),
    series: new BoundedSeries(1),
    lastRate: null,
    chart: createTimeChart($('topic-chart'), {
      series: [{ label: 'USD (topic server)', stroke: COLORS.topic }],
      format: formatRate,
    }),
  },
};
const bytesSeries = new BoundedSeries(2);
const bytesChart = createTimeChart($('bytes-chart'), {
  series: [
    { label: 'Redis client', stroke: COLORS.redis },
    { label: 'topic-server client', stroke: COLORS.topic },
  ],
  format: formatBytes,
  height: 260,
});

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    render();
  });
}

function render() {
  for (const [name, client] of Object.entries(clients)) {
    const t = client.tally;
    $(`${name}-frames`).textContent = formatCount(t.frames);
    $(`${name}-messages`).textContent = formatCount(t.messages);
    $(`${name}-updates`).textContent = formatCount(t.updates);
    $(`${name}-bytes`).textContent = formatBytes(t.bytes);
    $(`${name}-bytes`).title = `${formatCount(t.bytes)} bytes`;
    const avg = bytesPerUpdate(t);
    $(`${name}-avg`).textContent = avg === null ? '—' : `${formatCount(Math.round(avg))} B`;
    $(`${name}-rate`).textContent = formatRate(client.lastRate);
  }
  const topicTally = clients.topic.tally;
  $('topic-deltas').textContent = formatCount(topicTally.deltas);
  $('topic-deltas').parentElement.title =
    topicTally.updates > 0
      ? `${formatPercent((topicTally.deltas / topicTally.updates) * 100)} of the updates arrived as ` +
        'deltas against the value already held, and were applied here'
      : 'updates that arrive as deltas against the value already held';
  const saving = savingPercent(clients.redis.tally.bytes, clients.topic.tally.bytes);
  $('saving').textContent = formatPercent(saving);
  $('saving').className = saving === null ? 'saving' : saving >= 0 ? 'saving saving-good' : 'saving saving-bad';
  $('saving-redis').textContent = formatBytes(clients.redis.tally.bytes);
  $('saving-topic').textContent = formatBytes(clients.topic.tally.bytes);
}

function countTraffic(name, traffic) {
  debug?.record(`${name}-frames`, traffic.bytes);
  clients[name].tally = addFrame(clients[name].tally, traffic);
  scheduleRender();
}

function plotRate(name, value) {
  const rate = extractUsdRate(value);
  if (rate === null) return;
  const client = clients[name];
  client.lastRate = rate;
  client.series.push(nowSeconds(), rate);
  client.chart.update(client.series.data());
  scheduleRender();
}

const timeOfDay = () => new Date().toLocaleTimeString('en-GB', { hour12: false });

/** Breaks the line where a client lost its connection, so an outage shows as a gap. */
function markGap(name) {
  const client = clients[name];
  const ys = client.series.data()[1];
  if (ys.length === 0 || ys.at(-1) === null) return;
  client.series.push(nowSeconds(), null);
  client.chart.update(client.series.data());
}

const bridge = new BridgeClient({
  url: config.bridgeUrl,
  onStatus: (s) => {
    const detail = s.state === 'open' ? `connected since ${timeOfDay()}` : s.lastError;
    setBadge('redis-status', s.state, detail, s.retryInMs, s.attempt);
    if (s.state === 'retrying') markGap('redis');
  },
  onTraffic: (t) => countTraffic('redis', t),
  onUpdate: ({ value }) => {
    debug?.record('redis-rates', extractUsdRate(value));
    plotRate('redis', value);
  },
});

const topicClient = new TopicClient({
  url: config.topicsUrls,
  selector: config.topic,
  onStatus: (s) => {
    debug?.record('topic-status', { state: s.state, detail: s.detail, at: Date.now() });
    const detail = s.state === 'subscribed' ? `${s.detail}, subscribed since ${timeOfDay()}` : s.detail;
    setBadge('topic-status', s.state, detail, s.retryInMs, s.attempt);
    if (s.state === 'retrying') markGap('topic');
  },
  onTraffic: (t) => countTraffic('topic', t),
  onUpdate: ({ topic, value, s }) => {
    debug?.record('topic-updates', { s: s ?? null, rate: extractUsdRate(value), text: topic.valueText });
    $('topic-path').textContent =
      topic.path === config.topic ? `· ${topic.topicType}` : `· ${topic.path} (${topic.topicType})`;
    plotRate('topic', value);
  },
  onEvent: (event) => {
    if (event.kind === 'protocol-error') console.warn('topic server:', event.message, event.text);
    if (event.kind === 'connected') debug?.record('topic-sessions', event.wire);
    if (event.kind === 'heartbeat') debug?.record('topic-heartbeats', Date.now());
  },
});

bridge.start();
topicClient.start();

setInterval(() => {
  bytesSeries.push(nowSeconds(), clients.redis.tally.bytes, clients.topic.tally.bytes);
  bytesChart.update(bytesSeries.data());
}, BYTES_SAMPLE_MS);

$('reset-counters').addEventListener('click', () => {
  clients.redis.tally = emptyTally();
  clients.topic.tally = emptyTally();
  bytesSeries.clear();
  bytesChart.update(bytesSeries.data());
  scheduleRender();
});

render();

// ---- feeder panel -------------------------------------------------------------------------

const feeder = new FeederApi(config.feederUrl);
const intervalInput = /** @type {HTMLInputElement} */ ($('interval-input'));
intervalInput.min = String(INTERVAL_LIMITS.min);
intervalInput.max = String(INTERVAL_LIMITS.max);
let lastFeederStatus = null;
let commandPending = false;

function showFeederMessage(text, isError) {
  const el = $('feeder-message');
  el.textContent = text;
  el.className = isError ? 'message message-error' : 'message';
}

function updateFeederControls() {
  const reachable = lastFeederStatus !== null;
  const running = reachable && lastFeederStatus.running === true;
  /** @type {HTMLButtonElement} */ ($('feeder-start')).disabled = !reachable || commandPending || running;
  /** @type {HTMLButtonElement} */ ($('feeder-stop')).disabled = !reachable || commandPending || !running;
  /** @type {HTMLButtonElement} */ ($('interval-apply')).disabled = !reachable || commandPending;
}

function renderFeederStatus(result) {
  const panel = $('feeder-panel');
  panel.classList.toggle('unreachable', result.status === null);
  if (result.status === null) {
    lastFeederStatus = null;
    setBadge('feeder-status', result.reachable ? 'error' : 'unreachable', result.error, result.retryInMs);
    $('feeder-banner').hidden = false;
    const why = result.error ?? 'no answer';
    $('feeder-banner-text').textContent = /[.!?]$/.test(why) ? why : `${why}.`;
  } else {
    const s = result.status;
    lastFeederStatus = s;
    setBadge('feeder-status', 'reachable', `GET ${config.feederUrl}/status`, null);
    $('feeder-banner').hidden = true;
    $('feed-running').textContent = s.running ? 'running' : 'stopped';
    $('feed-running').className = s.running ? 'state state-on' : 'state state-off';
    $('feed-source').textContent = describeField(s.source);
    $('feed-sink').textContent = describeField(s.sink);
    $('feed-interval').textContent = s.interval_ms === undefined ? '—' : `${describeField(s.interval_ms)} ms`;
    $('feed-polls').textContent = describeField(s.polls);
    $('feed-published').textContent = describeField(s.published);
    $('feed-failures').textContent = describeField(s.failures);
    $('feed-published-at').textContent = formatTimestamp(s.last_published_at);
    $('feed-payload').textContent = prettyPayload(s.last_payload);
    if (document.activeElement !== intervalInput && intervalInput.dataset.edited !== 'true' && Number.isFinite(s.interval_ms)) {
      intervalInput.value = String(s.interval_ms);
    }
  }
  updateFeederControls();
}

const monitor = new FeederMonitor(feeder, { onStatus: renderFeederStatus });
monitor.start();

async function runCommand(label, call) {
  commandPending = true;
  updateFeederControls();
  try {
    await call();
    showFeederMessage(`${label}: done`, false);
    return true;
  } catch (err) {
    showFeederMessage(`${label}: ${err.message}`, true);
    return false;
  } finally {
    commandPending = false;
    updateFeederControls();
    await monitor.refresh();
  }
}

$('feeder-start').addEventListener('click', () => runCommand('Start', () => feeder.start()));
$('feeder-stop').addEventListener('click', () => runCommand('Stop', () => feeder.stop()));
intervalInput.addEventListener('input', () => {
  intervalInput.dataset.edited = 'true';
});
$('interval-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const parsed = parseIntervalMs(intervalInput.value);
  if (!parsed.ok) {
    showFeederMessage(parsed.error, true);
    return;
  }
  const ok = await runCommand(`Interval ${parsed.value} ms`, () => feeder.setInterval(parsed.value));
  if (ok) delete intervalInput.dataset.edited;
});
updateFeederControls();
