// A TCP proxy for the browser test: the page's topic-server WebSocket goes through it, so the
// test can cut the connection the way a network failure would (sockets destroyed, new ones
// refused for a while) or stall it (nothing passes, nothing closes) without touching the server,
// and can count what the server sent on each connection (WsFrameCounter).

import net from 'node:net';

import { WsFrameCounter } from './ws-frame-counter.mjs';

export class CuttableProxy {
  /**
   * @param {object} options
   * @param {number} options.targetPort the server's port on 127.0.0.1
   */
  constructor({ targetPort }) {
    this.targetPort = targetPort;
    this.refusing = false;
    /** @type {Set<net.Socket>} */
    this.sockets = new Set();
    /**
     * One entry per connection that reached the server, in order: the payload size of each
     * message the server sent on it, and its upgrade response.
     * @type {{messages: number[], counter: WsFrameCounter}[]}
     */
    this.connections = [];
    this.refused = 0;
    this.server = net.createServer((client) => this.accept(client));
  }

  /** Starts listening on a free port of 127.0.0.1; resolves to the port. */
  listen() {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => resolve(this.server.address().port));
    });
  }

  /** @private */
  accept(client) {
    if (this.refusing) {
      this.refused += 1;
      client.destroy();
      return;
    }
    const upstream = net.connect(this.targetPort, '127.0.0.1');
    const record = { messages: [], counter: null, stalled: false, lastForwardAt: null };
    record.counter = new WsFrameCounter((bytes) => record.messages.push(bytes));
    this.connections.push(record);
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('close', () => {
        this.sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
      s.on('error', () => {});
    }
    // Count what is forwarded as it is written: what the page can have received on this
    // connection is a prefix of it.
    upstream.on('data', (chunk) => {
      if (client.destroyed || record.stalled) return;
      record.counter.push(chunk);
      record.lastForwardAt = Date.now();
      client.write(chunk);
    });
    client.on('data', (chunk) => {
      if (!upstream.destroyed && !record.stalled) upstream.write(chunk);
    });
  }

  /**
   * Cuts every connection now and refuses new ones for `refuseMs`; resolves when it accepts
   * again.
   * @param {number} refuseMs
   */
  async cut(refuseMs) {
    this.refusing = true;
    for (const s of this.sockets) s.destroy();
    await new Promise((resolve) => setTimeout(resolve, refuseMs));
    this.refusing = false;
  }

  /**
   * Stops forwarding on every current connection, both ways, but keeps the sockets open: a path
   * that went dead without a close, which only heartbeats can reveal. New connections work.
   */
  stall() {
    for (const record of this.connections) record.stalled = true;
  }

  close() {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
