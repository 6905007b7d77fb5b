// Reads the server-to-client half of a WebSocket connection as it passes through a proxy and
// reports the payload size of every data message: exactly what a browser page counts as "bytes
// received" (the payload of each text or binary message, not the HTTP upgrade response, frame
// headers or control frames). The browser test compares these with the page's own counters.
//
// Server frames are never masked (RFC 6455 §5.1). A message split into fragments counts once,
// with the sum of its fragments, as the page sees one message. Compression extensions would make
// wire sizes differ from what the page sees, so the upgrade response is kept for the caller to
// check that none was negotiated.

const OPCODE_CONTINUATION = 0x0;
const OPCODE_TEXT = 0x1;
const OPCODE_BINARY = 0x2;
const HEAD_END = Buffer.from('\r\n\r\n');

export class WsFrameCounter {
  /** @param {(payloadBytes: number) => void} onMessage called per complete data message */
  constructor(onMessage) {
    this.onMessage = onMessage;
    /** The HTTP response head (status line and headers), once complete. */
    this.head = null;
    this.buffer = Buffer.alloc(0);
    this.fragmentBytes = null; // bytes of a fragmented message so far
  }

  /** @param {Buffer} chunk bytes from the server, in order */
  push(chunk) {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    if (this.head === null) {
      const end = this.buffer.indexOf(HEAD_END);
      if (end < 0) return;
      this.head = this.buffer.subarray(0, end).toString('latin1');
      this.buffer = this.buffer.subarray(end + HEAD_END.length);
    }
    for (;;) {
      const frame = this.nextFrame();
      if (frame === null) return;
      this.frame(frame);
    }
  }

  /** @private The next complete frame's header fields, consumed from the buffer, or null. */
  nextFrame() {
    const b = this.buffer;
    if (b.length < 2) return null;
    const fin = (b[0] & 0x80) !== 0;
    const opcode = b[0] & 0x0f;
    const masked = (b[1] & 0x80) !== 0;
    let length = b[1] & 0x7f;
    let at = 2;
    if (length === 126) {
      if (b.length < 4) return null;
      length = b.readUInt16BE(2);
      at = 4;
    } else if (length === 127) {
      if (b.length < 10) return null;
      length = Number(b.readBigUInt64BE(2));
      at = 10;
    }
    if (masked) at += 4;
    if (b.length < at + length) return null;
    this.buffer = b.subarray(at + length);
    return { fin, opcode, length };
  }

  /** @private */
  frame({ fin, opcode, length }) {
    if (opcode === OPCODE_TEXT || opcode === OPCODE_BINARY) {
      if (fin) this.onMessage(length);
      else this.fragmentBytes = length;
    } else if (opcode === OPCODE_CONTINUATION && this.fragmentBytes !== null) {
      this.fragmentBytes += length;
      if (fin) {
        this.onMessage(this.fragmentBytes);
        this.fragmentBytes = null;
      }
    }
    // Control frames (close, ping, pong) never reach the page's message handler.
  }
}
