// The browser test's proxy counts what the server sent with WsFrameCounter; these cases pin down
// that it counts exactly the data payloads a page sees, across chunk boundaries.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { WsFrameCounter } from './browser/ws-frame-counter.mjs';

/** An unmasked server frame. */
function frame(opcode, payloadLength, fin = true) {
  let header;
  if (payloadLength < 126) header = Buffer.from([(fin ? 0x80 : 0) | opcode, payloadLength]);
  else if (payloadLength < 65536) {
    header = Buffer.alloc(4);
    header[0] = (fin ? 0x80 : 0) | opcode;
    header[1] = 126;
    header.writeUInt16BE(payloadLength, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = (fin ? 0x80 : 0) | opcode;
    header[1] = 127;
    header.writeBigUInt64BE(BigInt(payloadLength), 2);
  }
  return Buffer.concat([header, Buffer.alloc(payloadLength, 0x61)]);
}

test('counts data payloads only, after the upgrade response, whatever the chunking', () => {
  const head = 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n';
  const stream = Buffer.concat([
    Buffer.from(head),
    frame(0x1, 5),
    frame(0x9, 3), // ping: not a message
    frame(0x1, 300),
    frame(0x2, 70000),
    frame(0x1, 10, false), // a message in three fragments
    frame(0x0, 20, false),
    frame(0x0, 1),
    frame(0x8, 2), // close
  ]);
  for (const chunkSize of [1, 7, 64, stream.length]) {
    const sizes = [];
    const counter = new WsFrameCounter((n) => sizes.push(n));
    for (let i = 0; i < stream.length; i += chunkSize) counter.push(stream.subarray(i, i + chunkSize));
    assert.deepEqual(sizes, [5, 300, 70000, 31], `chunks of ${chunkSize}`);
    assert.equal(counter.head, head.slice(0, -4));
  }
});

test('a frame cut short is not counted', () => {
  const sizes = [];
  const counter = new WsFrameCounter((n) => sizes.push(n));
  counter.push(Buffer.concat([Buffer.from('HTTP/1.1 101 x\r\n\r\n'), frame(0x1, 4), frame(0x1, 50).subarray(0, 20)]));
  assert.deepEqual(sizes, [4]);
});
