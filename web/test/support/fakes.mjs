// Test doubles: a scriptable WebSocket and a manual clock, so reconnect and protocol logic can
// be driven step by step without servers or real time passing.

/** A WebSocket stand-in; tests open, feed and close it by hand. */
export class FakeWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;
  /** Every instance created, in order. */
  static instances = [];

  constructor(url) {
    if (!/^wss?:\/\//.test(url)) throw new SyntaxError(`invalid URL ${url}`);
    this.url = url;
    this.readyState = FakeWebSocket.CONNECTING;
    this.sent = [];
    this.closedWith = null;
    this.binaryType = 'blob';
    FakeWebSocket.instances.push(this);
  }

  static reset() {
    FakeWebSocket.instances = [];
  }

  static latest() {
    return FakeWebSocket.instances.at(-1);
  }

  send(text) {
    if (this.readyState !== FakeWebSocket.OPEN) throw new Error('send on a socket that is not open');
    this.sent.push(text);
  }

  close(code, reason) {
    this.closedWith = { code, reason };
    this.readyState = FakeWebSocket.CLOSED;
  }

  // ---- driven by tests ----
  serverOpen() {
    this.readyState = FakeWebSocket.OPEN;
    this.onopen?.({});
  }

  serverSend(data) {
    this.onmessage?.({ data });
  }

  serverClose(code = 1006, reason = '') {
    this.readyState = FakeWebSocket.CLOSED;
    this.onclose?.({ code, reason });
  }
}

/** Timers and a clock that move only when the test says so. */
export class ManualClock {
  constructor() {
    this.nowMs = 0;
    this.nextId = 1;
    this.pending = new Map();
    this.setTimeout = (fn, ms) => {
      const id = this.nextId++;
      this.pending.set(id, { at: this.nowMs + ms, fn });
      return id;
    };
    this.clearTimeout = (id) => {
      this.pending.delete(id);
    };
    this.now = () => this.nowMs;
  }

  /** Moves time forward, running every timer that falls due, in order. */
  advance(ms) {
    const until = this.nowMs + ms;
    for (;;) {
      const due = [...this.pending.entries()]
        .filter(([, t]) => t.at <= until)
        .sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      const [id, timer] = due;
      this.pending.delete(id);
      this.nowMs = timer.at;
      timer.fn();
    }
    this.nowMs = until;
  }
}

/** A Backoff-shaped object with fixed delays (no jitter), recording resets. */
export function fixedBackoff(delays) {
  let i = 0;
  return {
    resets: 0,
    nextDelay() {
      const d = delays[Math.min(i, delays.length - 1)];
      i += 1;
      return d;
    },
    reset() {
      i = 0;
      this.resets += 1;
    },
  };
}
