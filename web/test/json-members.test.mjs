import assert from 'node:assert/strict';
import { test } from 'node:test';

import { rawMemberText } from '../js/json-members.js';

test('finds a member wherever it is, and returns its exact text', () => {
  assert.equal(rawMemberText('{"i":4,"v":17,"s":7}', 'v'), '17');
  assert.equal(rawMemberText('{"s":7,"i":4,"v":1.50e+3}', 'v'), '1.50e+3');
  assert.equal(rawMemberText('{"i":4,"v":12345678901234567890123,"s":7}', 'v'), '12345678901234567890123');
  assert.equal(rawMemberText('{"v":true}', 'v'), 'true');
  assert.equal(rawMemberText('{"a":1}', 'v'), null);
  assert.equal(rawMemberText('{}', 'v'), null);
});

test('skips strings with escapes and nested brackets in the members before it', () => {
  const text = String.raw`{"x":"a \" , } ] \\","y":[{"k":"}"},[1,[2]]],"z":{"v":1},"v":{"b":"\\\"}"},"s":2}`;
  assert.equal(rawMemberText(text, 'v'), String.raw`{"b":"\\\"}"}`);
  assert.deepEqual(JSON.parse(rawMemberText(text, 'v')), JSON.parse(text).v);
  assert.equal(rawMemberText(text, 'z'), '{"v":1}', 'a nested "v" is not the top-level one');
});

test('keys are compared unescaped; the last duplicate wins, as with JSON.parse', () => {
  assert.equal(rawMemberText(String.raw`{"\u0076":5,"s":1}`, 'v'), '5');
  assert.equal(rawMemberText('{"v":1,"v":2}', 'v'), '2');
  assert.equal(rawMemberText('{"vv":1,"v":3}', 'v'), '3');
});

test('whitespace around tokens is allowed and not part of the text', () => {
  assert.equal(rawMemberText(' {\n "i" : 4 ,\t"v" :  [ 1 , 2 ] , "s":1 } ', 'v'), '[ 1 , 2 ]');
});

test('anything that is not a complete object gives null', () => {
  for (const bad of ['', '[1]', '"v"', '{"v":1', '{"v":"abc}', '{"v":[1,2}', '{"v" 1}', '{v:1}', '{"a":1 "v":2}']) {
    assert.equal(rawMemberText(bad, 'v'), null, bad);
  }
});
