// Checks that hold the page together: every element main.js looks up exists in index.html,
// the chart library is pinned exactly and installed where the page loads it from.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';

const read = (p) => readFileSync(new URL(`../${p}`, import.meta.url), 'utf8');
const html = read('index.html');
const ids = new Set([...html.matchAll(/\bid="([^"]+)"/g)].map((m) => m[1]));

test('every element id main.js uses exists in index.html', () => {
  const main = read('js/main.js');
  const used = new Set([...main.matchAll(/\$\('([^'`]+)'\)/g)].map((m) => m[1]));
  for (const name of ['redis', 'topic']) {
    for (const part of ['frames', 'messages', 'updates', 'bytes', 'avg', 'rate', 'chart', 'status']) {
      used.add(`${name}-${part}`);
    }
  }
  assert.ok(used.size > 30, `found only ${used.size} ids; the pattern may be stale`);
  const missing = [...used].filter((id) => !ids.has(id));
  assert.deepEqual(missing, []);
});

test('the page names its independence from the commercial product', () => {
  assert.match(html, /independent open-source project/);
  assert.match(html, /not the commercial Diffusion product/);
});

test('uPlot is the only runtime dependency, pinned exactly and locked', () => {
  const pkg = JSON.parse(read('package.json'));
  assert.deepEqual(Object.keys(pkg.dependencies), ['uplot']);
  assert.match(pkg.dependencies.uplot, /^\d+\.\d+\.\d+$/);
  assert.equal(pkg.scripts.test, 'node --test test/');
  const lock = JSON.parse(read('package-lock.json'));
  assert.equal(lock.packages['node_modules/uplot'].version, pkg.dependencies.uplot);
});

test('the page loads uPlot from node_modules, and it is installed there', () => {
  const refs = [...html.matchAll(/(?:src|href)="(node_modules\/[^"]+)"/g)].map((m) => m[1]);
  assert.deepEqual(refs.sort(), ['node_modules/uplot/dist/uPlot.iife.min.js', 'node_modules/uplot/dist/uPlot.min.css']);
  for (const ref of refs) {
    assert.ok(existsSync(new URL(`../${ref}`, import.meta.url)), `${ref} missing: run npm ci in web/`);
  }
});
