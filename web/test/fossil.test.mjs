// The delta adapter: deltas made by the Rust crate the server uses (fixtures) and by the npm
// package's own encoder apply; anything corrupt, truncated or made for other bytes is a
// DeltaError, never a wrong result and never another kind of exception.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { createDelta } from '../node_modules/fossil-delta/fossil-delta.js';
import { applyFossilDelta, declaredDeltaSize, DeltaError, MAX_DELTA_OUTPUT_BYTES } from '../js/fossil.js';

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

// The size header. A delta states its output size up front, and the package trusts it (and
// reads it in 32 bits, so sizes past 4 GiB wrap); fossil.js reads it itself and refuses a delta
// declaring more than the limit before the package ever runs.

/** `header` followed by the rest of a valid delta from no bytes to `target` (its newline on). */
const withHeader = (header, target) => {
  const valid = createDelta(new Uint8Array(0), utf8.encode(target));
  const body = valid.subarray(valid.indexOf(0x0a));
  return Uint8Array.from([...(typeof header === 'string' ? utf8.encode(header) : header), ...body]);
};
const EMPTY = new Uint8Array(0);
const sizeError = (declared, limit) =>
  new RegExp(`delta declares ${declared} output bytes, more than the limit of ${limit}$`);

test('the default limit is 64 MiB and the header is read exactly', () => {
  assert.equal(MAX_DELTA_OUTPUT_BYTES, 64 * 1024 * 1024);
  assert.equal(declaredDeltaSize(withHeader('3', 'abc')), 3);
  assert.equal(declaredDeltaSize(utf8.encode('~~~~~~\n')), 2 ** 36 - 1);
  assert.equal(declaredDeltaSize(utf8.encode('40000\n')), MAX_DELTA_OUTPUT_BYTES);
  assert.equal(declaredDeltaSize(utf8.encode('Zz_~\n')), ((35 * 64 + 62) * 64 + 36) * 64 + 63);
  assert.deepEqual(applyFossilDelta(EMPTY, withHeader('3', 'abc')), utf8.encode('abc'));
});

test('a delta declaring ~68 GB is refused at once, with the size error, nothing built', () => {
  // Sixteen 1 MiB copies of the base: without the check the package would build 16 MiB (most
  // of a second) before noticing the size; with it, the header alone decides.
  const base = new Uint8Array(1 << 20).fill(7);
  const hostile = utf8.encode(`~~~~~~\n${'4000@0,'.repeat(16)}0;`);
  const started = performance.now();
  assert.throws(
    () => applyFossilDelta(base, hostile),
    (err) => err instanceof DeltaError && sizeError(2 ** 36 - 1, MAX_DELTA_OUTPUT_BYTES).test(err.message),
  );
  const elapsed = performance.now() - started;
  assert.ok(elapsed < 100, `refusing took ${elapsed} ms`);
  // The delta that brought the Rust client down, byte for byte.
  assert.throws(() => applyFossilDelta(base, utf8.encode('~~~~~~\n0,1:x;')), sizeError(2 ** 36 - 1, MAX_DELTA_OUTPUT_BYTES));
});

test('a size past 4 GiB does not wrap around to a small one', () => {
  // 4 GiB + 3, with the body of a valid delta to "abc": read in 32 bits this declares 3 and the
  // package applies it.
  const wrapped = withHeader('400003', 'abc');
  assert.equal(declaredDeltaSize(wrapped), 2 ** 32 + 3);
  assert.throws(() => applyFossilDelta(EMPTY, wrapped), sizeError(2 ** 32 + 3, MAX_DELTA_OUTPUT_BYTES));
});

test('exactly the limit passes the size check, one byte more does not', () => {
  // 40001 is 2^26 + 1. Refused by the size check, before the package is asked.
  assert.throws(() => applyFossilDelta(EMPTY, withHeader('40001', 'abc')), sizeError(MAX_DELTA_OUTPUT_BYTES + 1, MAX_DELTA_OUTPUT_BYTES));
  // 40000 is the limit itself: past the size check, then refused because 3 bytes come out.
  assert.throws(
    () => applyFossilDelta(EMPTY, withHeader('40000', 'abc')),
    (err) => err instanceof DeltaError && /generated size does not match/.test(err.message),
  );
});

test('the caller may set a smaller limit', () => {
  const old = utf8.encode('hello world, hello world, hello world');
  const next = utf8.encode('hello world, hello there, hello world');
  const delta = createDelta(old, next);
  assert.deepEqual(applyFossilDelta(old, delta, next.length), next);
  assert.deepEqual(applyFossilDelta(old, delta), next, 'the default limit');
  assert.throws(() => applyFossilDelta(old, delta, next.length - 1), sizeError(next.length, next.length - 1));
  assert.deepEqual(applyFossilDelta(old, createDelta(old, EMPTY), 0), EMPTY);
  // A limit is not a value from the network: a bad one is a programming error.
  for (const bad of [-1, 1.5, NaN, '100', MAX_DELTA_OUTPUT_BYTES + 1, Infinity]) {
    assert.throws(() => applyFossilDelta(old, delta, bad), RangeError, String(bad));
  }
});

test('a malformed size header is refused before the package is asked', () => {
  const cases = [
    ['000000000000', /no newline in its first 12 bytes/], // 12 digits: the newline is byte 13
    ['', /empty size header/],
    ['3 ', /not a number/],
    [' 3', /not a number/],
    ['+3', /not a number/],
    ['-3', /not a number/],
    ['3\r', /not a number/],
    // '3' with its top bit set: the package masks bytes to 7 bits and would read a 3.
    [[0xb3], /not a number/],
    [[0x00, 0x33], /not a number/],
  ];
  for (const [header, message] of cases) {
    assert.throws(
      () => applyFossilDelta(EMPTY, withHeader(header, 'abc')),
      (err) => err instanceof DeltaError && message.test(err.message),
      JSON.stringify(header),
    );
  }
  assert.throws(() => applyFossilDelta(EMPTY, utf8.encode('3:abc;')), /no newline/);
  // Eleven digits and the newline fit in 12 bytes (leading zeros are still a number).
  assert.deepEqual(applyFossilDelta(EMPTY, withHeader('00000000003', 'abc')), utf8.encode('abc'));
});

test('an output that differs from the declared size is refused', () => {
  // A valid delta to "abc" (checksum and all) but declaring 2 or 4 bytes.
  assert.throws(() => applyFossilDelta(EMPTY, withHeader('4', 'abc')), /generated size does not match/);
  assert.throws(() => applyFossilDelta(EMPTY, withHeader('2', 'abc')), /larger than predicted/);
  assert.throws(() => applyFossilDelta(EMPTY, withHeader('0', 'abc')), DeltaError);
  assert.deepEqual(applyFossilDelta(EMPTY, withHeader('3', 'abc')), utf8.encode('abc'));
});
