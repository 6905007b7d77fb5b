// The delta adapter: deltas made by the Rust crate the server uses (fixtures) and by the npm
// package's own encoder apply; anything corrupt, truncated or made for other bytes is a
// DeltaError, never a wrong result and never another kind of exception.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { createDelta } from '../node_modules/fossil-delta/fossil-delta.js';
import { applyFossilDelta, DeltaError } from '../js/fossil.js';

const utf8 = new TextEncoder();
const fixtures = JSON.parse(
  readFileSync(new URL('./fixtures/rust-fossil-deltas.json', import.meta.url), 'utf8'),
);
/** A chain value in wire form → its canonical bytes. */
const bytesOf = (topicType, wire) =>
  topicType === 'BINARY' ? new Uint8Array(Buffer.from(wire, 'base64')) : utf8.encode(wire);
const fromBase64 = (text) => new Uint8Array(Buffer.from(text, 'base64'));

/** Every (base, delta, target) step of every Rust fixture chain. */
const rustSteps = fixtures.chains.flatMap((chain) =>
  chain.deltas.map((delta, i) => ({
    name: `${chain.name}[${i}→${i + 1}]`,
    base: bytesOf(chain.topicType, chain.values[i]),
    delta: fromBase64(delta),
    target: bytesOf(chain.topicType, chain.values[i + 1]),
  })),
);

/** Applies, and says what happened: the output, or the error's class name. */
function outcome(base, delta) {
  try {
    return applyFossilDelta(base, delta);
  } catch (err) {
    return err.name;
  }
}

test('the Rust fixtures cover JSON, multi-byte UTF-8, STRING and BINARY chains', () => {
  assert.deepEqual(fixtures.chains.map((c) => c.topicType).sort(), ['BINARY', 'JSON', 'JSON', 'STRING']);
  assert.ok(rustSteps.length >= 6);
  // The UTF-8 chain must really insert multi-byte characters, or it proves nothing.
  const euro = rustSteps.find((s) => s.name.startsWith('euro-utf8-json'));
  assert.ok(Buffer.from(euro.delta).includes(Buffer.from('€')), 'delta inserts a euro sign');
});

test('deltas made by the Rust crate apply to the bytes they were made against', () => {
  for (const step of rustSteps) {
    assert.deepEqual(applyFossilDelta(step.base, step.delta), step.target, step.name);
    assert.ok(step.delta.length < step.target.length, `${step.name}: the delta is the smaller form`);
  }
});

test('deltas made by the npm encoder apply too, for text and arbitrary bytes', () => {
  const sample = readFileSync(new URL('./fixtures/coindesk-bpi-sample.json', import.meta.url), 'utf8').trim();
  const pairs = [
    [sample, sample.replaceAll('56189.3483', '56201.0042').replaceAll('56,189.3483', '56,201.0042')],
    [sample, sample.replace('&euro;', '€').replace('Euro', 'Euro — €uro')],
    ['', 'from nothing'],
    ['short', ''],
  ].map(([a, b]) => [utf8.encode(a), utf8.encode(b)]);
  let seed = 42;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % 256;
  for (let n = 0; n < 20; n += 1) {
    const a = Uint8Array.from({ length: 50 + n * 37 }, random);
    const b = a.slice();
    for (let k = 0; k <= n % 5; k += 1) b[(k * 31 + n) % b.length] = random();
    pairs.push([a, Uint8Array.from([...b, ...Array.from({ length: n }, random)])]);
  }
  for (const [a, b] of pairs) {
    assert.deepEqual(applyFossilDelta(a, createDelta(a, b)), b);
  }
});

test('flipping any single byte of a delta never yields a wrong value', () => {
  const step = rustSteps.find((s) => s.name.startsWith('euro-utf8-json'));
  let rejected = 0;
  for (let i = 0; i < step.delta.length; i += 1) {
    for (const bit of [0x01, 0x20, 0x80]) {
      const bad = step.delta.slice();
      bad[i] ^= bit;
      const result = outcome(step.base, bad);
      if (typeof result === 'string') {
        assert.equal(result, 'DeltaError', `byte ${i} ^ ${bit}`);
        rejected += 1;
      } else {
        assert.deepEqual(result, step.target, `byte ${i} ^ ${bit} gave a wrong value`);
      }
    }
  }
  assert.ok(rejected > step.delta.length * 2, `only ${rejected} corruptions were rejected`);
});

test('truncated, empty, garbage and wrong-base deltas are DeltaErrors', () => {
  const step = rustSteps[0];
  for (let cut = 0; cut < step.delta.length; cut += 1) {
    assert.equal(outcome(step.base, step.delta.subarray(0, cut)), 'DeltaError', `cut at ${cut}`);
  }
  assert.equal(outcome(step.base, utf8.encode('zz@@@;')), 'DeltaError');
  assert.equal(outcome(step.base, utf8.encode('5\n9@0,0;')), 'DeltaError', 'copy past the output size');
  assert.equal(outcome(step.base, utf8.encode('2\n2@4000,0;')), 'DeltaError', 'copy past the base');
  assert.equal(outcome(utf8.encode('something else entirely, not the base'), step.delta), 'DeltaError');
  assert.equal(outcome(new Uint8Array(0), step.delta), 'DeltaError');
  assert.throws(() => applyFossilDelta('text', step.delta), TypeError);
  assert.ok(new DeltaError('x') instanceof Error);
});
