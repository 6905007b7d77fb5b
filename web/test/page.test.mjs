// Checks that hold the page together: every element main.js looks up exists in index.html,
// the two runtime libraries are pinned exactly and installed where the page loads them from,
// and every module import is a relative path to a file that exists (the page has no bundler).
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
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
  used.add('topic-deltas');
  assert.ok(used.size > 30, `found only ${used.size} ids; the pattern may be stale`);
  const missing = [...used].filter((id) => !ids.has(id));
  assert.deepEqual(missing, []);
});

test('the page names its independence from the commercial product', () => {
  assert.match(html, /independent open-source project/);
  assert.match(html, /not the commercial Diffusion product/);
});

test('uPlot and fossil-delta are the runtime dependencies, playwright-core the only dev one; all pinned and locked', () => {
  const pkg = JSON.parse(read('package.json'));
  assert.deepEqual(Object.keys(pkg.dependencies).sort(), ['fossil-delta', 'uplot']);
  // The browser test (scripts/browser-test.mjs) drives Debian's Chromium with it; the page
  // itself never loads it.
  assert.deepEqual(Object.keys(pkg.devDependencies), ['playwright-core']);
  assert.equal(pkg.scripts.test, 'node --test test/');
  const lock = JSON.parse(read('package-lock.json'));
  for (const [name, version] of Object.entries({ ...pkg.dependencies, ...pkg.devDependencies })) {
    assert.match(version, /^\d+\.\d+\.\d+$/, `${name} is pinned exactly`);
    assert.equal(lock.packages[`node_modules/${name}`].version, version, `${name} is locked`);
  }
});

test('every import in js/ is a relative path to an existing file; node_modules only via fossil.js', () => {
  const jsDir = new URL('../js/', import.meta.url);
  let imports = 0;
  for (const file of readdirSync(jsDir).filter((f) => f.endsWith('.js'))) {
    const source = readFileSync(new URL(file, jsDir), 'utf8');
    for (const [, spec] of source.matchAll(/^\s*import\s[^;]*?from\s+'([^']+)'/gms)) {
      imports += 1;
      assert.match(spec, /^\.\.?\//, `${file} imports '${spec}': browsers need a relative path`);
      assert.ok(existsSync(new URL(spec, new URL(file, jsDir))), `${file}: ${spec} is missing (npm ci in web/?)`);
      if (spec.includes('node_modules/')) {
        assert.equal(file, 'fossil.js', `${file} should go through fossil.js`);
        assert.equal(spec, '../node_modules/fossil-delta/fossil-delta.js');
      }
    }
  }
  assert.ok(imports > 10, `found only ${imports} imports; the pattern may be stale`);
});

test('the page loads uPlot from node_modules, and it is installed there', () => {
  const refs = [...html.matchAll(/(?:src|href)="(node_modules\/[^"]+)"/g)].map((m) => m[1]);
  assert.deepEqual(refs.sort(), ['node_modules/uplot/dist/uPlot.iife.min.js', 'node_modules/uplot/dist/uPlot.min.css']);
  for (const ref of refs) {
    assert.ok(existsSync(new URL(`../${ref}`, import.meta.url)), `${ref} missing: run npm ci in web/`);
  }
});
