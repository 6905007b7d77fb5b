// The golden transcripts in fixtures/protocol/*.json (repository root), written by the Rust side
// (`cargo test -p diffusion-core --test golden`): every server frame's text goes through the
// dashboard's own decoder, which must read exactly the normalised messages the fixture lists
// and, after applying every update (deltas through fossil.js), hold the values it lists.
//
// Numbers: the page parses values with JSON.parse (doubles), but keeps each value's exact text
// as the base of the next delta (topic.valueText / the canonical bytes). So a value is checked
// twice: its kept text must be the same exact decimal as the fixture's (digits past 2^53
// included), and what the page plots (topic.value) must equal the fixture's value parsed the
// same way the page parses it.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { test } from 'node:test';

import { TopicDecoder } from '../js/topic-client.js';
import { jsonDifference, LosslessNumber, parseLossless, stringifyLossless } from './support/lossless-json.mjs';

const FIXTURE_DIR = new URL('../../fixtures/protocol/', import.meta.url);

/** A decoded event as a tree comparable with the fixture's message: the value as kept text. */
function decodedMessage(event) {
  if (!event.wire) return { decodeError: event.message ?? event.kind };
  if (event.wire.type !== 'value') return event.wire;
  assert.equal(typeof event.rawValue, 'string', 'a value message keeps its raw text');
  return { ...event.wire, value: parseLossless(event.rawValue) };
}

function checkTranscript(file) {
  const text = readFileSync(new URL(file, FIXTURE_DIR), 'utf8');
  const fixture = parseLossless(text);
  assert.ok(Array.isArray(fixture.frames) && fixture.frames.length > 0, `${file}: no frames`);
  const decoder = new TopicDecoder();
  let serverFrames = 0;
  fixture.frames.forEach((frame, index) => {
    if (frame.from !== 'server') return;
    serverFrames += 1;
    const events = decoder.decodeFrame(frame.text);
    const actual = events.map(decodedMessage);
    assert.equal(actual.length, frame.messages.length, `${file} frame ${index}: message count`);
    actual.forEach((message, i) => {
      const difference = jsonDifference(frame.messages[i], message);
      assert.equal(
        difference,
        null,
        `${file} frame ${index} message ${i}: ${stringifyLossless(frame.messages[i])} decoded as ${JSON.stringify(message)}`,
      );
    });
  });
  assert.ok(serverFrames > 0, `${file}: no server frames`);

  const expectedValues = fixture.values ?? {};
  for (const [id, expected] of Object.entries(expectedValues)) {
    const topic = decoder.topics.get(Number(id));
    const held = topic === undefined || topic.value === undefined ? null : topic;
    if (expected === null) {
      assert.ok(held === null || held.valueText === 'null', `${file} topic ${id}: expected no value, holds ${held?.valueText}`);
      continue;
    }
    assert.ok(held !== null, `${file} topic ${id}: expected ${stringifyLossless(expected)}, holds no value`);
    const difference = jsonDifference(expected, parseLossless(held.valueText));
    assert.equal(difference, null, `${file} topic ${id}: kept text ${held.valueText}`);
    assert.deepEqual(held.value, JSON.parse(stringifyLossless(expected)), `${file} topic ${id}: displayed value`);
  }
}

if (!existsSync(FIXTURE_DIR)) {
  test('golden protocol transcripts', {
    skip: 'fixtures/protocol/ does not exist yet (cargo test -p diffusion-core --test golden writes it)',
  }, () => {});
} else {
  const files = readdirSync(FIXTURE_DIR).filter((f) => f.endsWith('.json')).sort();
  test('fixtures/protocol/ holds transcripts', () => {
    assert.ok(files.length > 0, 'fixtures/protocol/ exists but holds no *.json transcript');
  });
  for (const file of files) test(`golden transcript ${file}`, () => checkTranscript(file));
}

test('the comparison itself: exact where text is kept, double where the page holds doubles', () => {
  const big = parseLossless('{"n":12345678901234567890,"f":1.50,"list":[1e2]}');
  assert.ok(big.n instanceof LosslessNumber);
  assert.equal(jsonDifference(big, parseLossless('{"list":[100],"f":1.5,"n":12345678901234567890}')), null);
  assert.notEqual(jsonDifference(big, parseLossless('{"n":12345678901234567891,"f":1.5,"list":[100]}')), null);
  // As doubles the two are equal, and that is what a field held as a double can promise.
  assert.equal(jsonDifference(parseLossless('12345678901234567891'), 12345678901234567890), null);
  assert.notEqual(jsonDifference(parseLossless('{"a":1}'), { a: 1, b: 2 }), null);
  assert.notEqual(jsonDifference(parseLossless('"1"'), 1), null);
  assert.equal(stringifyLossless(big), '{"n":12345678901234567890,"f":1.50,"list":[1e2]}');
});
