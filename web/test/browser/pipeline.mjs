// Starts the real pipeline for the browser test, as scripts/demo.sh does but on free ports and
// with a fast synthetic feed: a private redis-server, topic-server (serving the dashboard, with
// the demo's security file: the page is an anonymous, read-only session and backend-app
// authenticates as its principal), redis-ws-bridge (publishing only for the feeder, which holds
// its publish token), backend-app and data-feeder. Every process is a child of this one and is
// stopped by stop(), which the test calls however it ends.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const BINARIES = ['topic-server', 'redis-ws-bridge', 'backend-app', 'data-feeder'];

/** The topic server's heartbeat settings in the test: silence past their sum closes a session. */
export const HEARTBEAT_INTERVAL_MS = 500;
export const HEARTBEAT_TIMEOUT_MS = 1000;

/**
 * Where each binary is: `binDir` when given, else for each binary the newer of target/release
 * and target/debug (whichever was built last is what the developer is working on).
 * @returns {Record<string, string>}
 */
export function findBinaries(root, binDir) {
  const found = {};
  for (const name of BINARIES) {
    const candidates = binDir
      ? [join(binDir, name)]
      : ['release', 'debug'].map((profile) => join(root, 'target', profile, name));
    const present = candidates.filter((p) => existsSync(p));
    if (present.length === 0) {
      throw new Error(`${name} is not built (looked for ${candidates.join(', ')}); run cargo build --release -p ${name}`);
    }
    present.sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
    found[name] = present[0];
  }
  return found;
}

/** The KEY=VALUE lines of an environment file (`#` comments), as scripts/demo.sh reads it. */
function envFile(path) {
  const env = {};
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const match = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (match) env[match[1]] = match[2];
  }
  return env;
}

/** A TCP port free on 127.0.0.1 right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * Polls `check` (sync or async, truthy = done) every `everyMs` until it holds or `timeoutMs`
 * passes; throws naming `what` on timeout.
 */
export async function waitFor(what, check, { timeoutMs = 15000, everyMs = 100 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastError = null;
  for (;;) {
    try {
      const result = await check();
      if (result) return result;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (${lastError.message})` : ''}`);
    }
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
}

async function httpOk(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
  return res.ok;
}

export class Pipeline {
  /**
   * @param {object} options
   * @param {string} options.root repository root
   * @param {Record<string, string>} options.bins from findBinaries
   * @param {string} [options.interval] the feeder's poll interval
   * @param {(line: string) => void} [options.log]
   */
  constructor({ root, bins, interval = '100ms', log = () => {} }) {
    this.root = root;
    this.bins = bins;
    this.interval = interval;
    this.log = log;
    this.children = [];
    this.runDir = mkdtempSync(join(tmpdir(), 'dashboard-browser-test.'));
  }

  /** @private */
  spawn(name, command, args, env = {}) {
    const out = createWriteStream(join(this.runDir, `${name}.log`));
    const child = spawn(command, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info', ...env },
    });
    child.stdout.pipe(out);
    child.stderr.pipe(out);
    child.exitedEarly = null;
    child.on('exit', (code, signal) => {
      child.exitedEarly = { code, signal };
    });
    this.children.push({ name, child });
    this.log(`started ${name} (pid ${child.pid}, log ${join(this.runDir, `${name}.log`)})`);
    return child;
  }

  /** Fails if a component died (checked while waiting, so a crash is not a mere timeout). */
  assertAlive() {
    for (const { name, child } of this.children) {
      if (child.exitedEarly && !this.stopping) {
        throw new Error(`${name} exited (${JSON.stringify(child.exitedEarly)}); see ${this.runDir}/${name}.log`);
      }
    }
  }

  async start() {
    const [redis, topics, bridge, feeder] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
    this.ports = { redis, topics, bridge, feeder };
    const b = this.bins;
    this.spawn('redis', 'redis-server', [
      join(this.root, 'deploy/redis.conf'), '--port', String(redis), '--bind', '127.0.0.1',
      '--dir', this.runDir, '--save', '', '--appendonly', 'no',
    ]);
    await waitFor('redis-server to accept connections', () => this.alive() && canConnect(redis), { timeoutMs: 15000 });
    const page = `http://127.0.0.1:${topics}`;
    this.spawn('topic-server', b['topic-server'], [
      '--listen', `127.0.0.1:${topics}`, '--web-dir', join(this.root, 'web'), '--views', join(this.root, 'deploy/views.txt'),
      '--security', join(this.root, 'deploy/security.toml'), '--metrics-listen', '127.0.0.1:0',
      // The page reaches the server through the test's proxy (another port), so its origin is
      // not the server's own Host.
      '--allowed-origins', page,
      // Fast heartbeats: a page that failed to ack would be closed (4001) within the test.
      '--heartbeat-interval', `${HEARTBEAT_INTERVAL_MS}ms`, '--heartbeat-timeout', `${HEARTBEAT_TIMEOUT_MS}ms`,
    ]);
    const publishToken = { BROWSER_TEST_PUBLISH_TOKEN: randomBytes(24).toString('hex') };
    this.spawn('redis-ws-bridge', b['redis-ws-bridge'], [
      '--listen', `127.0.0.1:${bridge}`, '--redis-url', `redis://127.0.0.1:${redis}/`,
      '--publish-token-env', 'BROWSER_TEST_PUBLISH_TOKEN',
    ], publishToken);
    await waitFor('topic-server /healthz', () => this.alive() && httpOk(`http://127.0.0.1:${topics}/healthz`), { timeoutMs: 30000 });
    await waitFor('redis-ws-bridge /healthz', () => this.alive() && httpOk(`http://127.0.0.1:${bridge}/healthz`), { timeoutMs: 30000 });
    this.spawn('backend-app', b['backend-app'], [
      '--from', `ws://127.0.0.1:${bridge}/`, '--topic-server', `ws://127.0.0.1:${topics}`, '--topic', 'redis/bitcoin',
    ], envFile(join(this.root, 'deploy/demo-credentials/backend.env')));
    // A new price on every poll, so every published document changes the view topic too.
    this.spawn('data-feeder', b['data-feeder'], [
      '--source', 'synthetic', '--interval', this.interval, '--synthetic-change-probability', '1', '--seed', '42',
      '--sink', `ws://127.0.0.1:${bridge}/`, '--control-listen', `127.0.0.1:${feeder}`,
      '--publish-token-env', 'BROWSER_TEST_PUBLISH_TOKEN', '--allowed-origins', page,
    ], publishToken);
    await waitFor('data-feeder /healthz', () => this.alive() && httpOk(`http://127.0.0.1:${feeder}/healthz`), { timeoutMs: 30000 });
  }

  /** @private */
  alive() {
    this.assertAlive();
    return true;
  }

  /** Pauses the feed (POST /stop on the feeder's control API). */
  async stopFeed() {
    const res = await fetch(`http://127.0.0.1:${this.ports.feeder}/stop`, { method: 'POST', signal: AbortSignal.timeout(5000) });
    if (!res.ok) throw new Error(`feeder /stop answered ${res.status}`);
  }

  /** Resumes the feed (POST /start). */
  async startFeed() {
    const res = await fetch(`http://127.0.0.1:${this.ports.feeder}/start`, { method: 'POST', signal: AbortSignal.timeout(5000) });
    if (!res.ok) throw new Error(`feeder /start answered ${res.status}`);
  }

  /**
   * The USD rate of the last document the feeder published (its GET /status), once it stopped
   * publishing.
   * @param {(doc: unknown) => number | null} extractRate
   */
  async lastPublished(extractRate) {
    const res = await fetch(`http://127.0.0.1:${this.ports.feeder}/status`, { signal: AbortSignal.timeout(5000) });
    const status = await res.json();
    if (status.running) throw new Error('the feeder is still running');
    const rate = extractRate(status.last_payload);
    if (rate === null) throw new Error(`no rate in the feeder's last payload: ${JSON.stringify(status.last_payload)}`);
    return rate;
  }

  /** Stops every child (TERM, then KILL after 5 s), newest first. */
  async stop() {
    this.stopping = true;
    const running = this.children.filter(({ child }) => child.exitCode === null && child.signalCode === null).reverse();
    await Promise.all(running.map(({ child }) => new Promise((resolve) => {
      const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
      child.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      child.kill('SIGTERM');
    })));
  }

  /** Kills every child at once, synchronously (for process exit). */
  killNow() {
    for (const { child } of this.children) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
  }
}

function canConnect(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
