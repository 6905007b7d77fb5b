// Benchmark baseline: the smallest topic pub/sub server on uWebSockets.js (the C++ uWebSockets
// library behind a Node.js binding; npm `uwebsockets` 3.0.6, pinned in package.json), which is
// as fast as WebSocket fan-out gets in practice. Written for this project's benchmark (bench/,
// scripts/bench.sh); it speaks the same protocol as the `limit-server` in crates/loadgen.
//
// Protocol:
//   - Subscriber: WebSocket `GET /` receives every message of every topic; `GET /?topics=T1,T2`
//     (each topic percent-encoded, comma-separated) receives only those topics.
//   - Publisher: WebSocket `GET /publish`; each text frame is one message. `TOPIC\nPAYLOAD`
//     publishes PAYLOAD on TOPIC; a frame without `\n` is published whole to the subscribers
//     that gave no topics list. Subscribers receive PAYLOAD only, one message per frame
//     (uWS `app.publish`).
//
// What it does not do (next to its numbers in docs/performance.md): no state (a late subscriber
// gets nothing until the next message), no deltas, no conflation or per-client queue limits
// beyond uWS's own back-pressure limit, no views, no selectors, no authentication.
//
// Usage: node server.js [--port 9200] [--host 127.0.0.1]
// Environment: UWS_SERVER_PORT, UWS_SERVER_HOST.
'use strict';

const uWS = require('uwebsockets');

function option(name, envName, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  if (at !== -1 && at + 1 < process.argv.length) return process.argv[at + 1];
  return process.env[envName] || fallback;
}

const port = Number(option('port', 'UWS_SERVER_PORT', '9200'));
const host = option('host', 'UWS_SERVER_HOST', '127.0.0.1');

// Every frame published without a topic goes to this uWS topic; subscribers without a topics
// list subscribe to it. MQTT-style wildcards are not used: a subscriber is on exact topics only.
const EVERYTHING = '\u0000all';

// The topics a subscriber asked for, from the query string of its upgrade request.
function requestedTopics(query) {
  const params = new URLSearchParams(query);
  const list = params.get('topics');
  if (list === null || list === '') return [EVERYTHING];
  // URLSearchParams decodes the query once; each topic was percent-encoded on its own, so the
  // commas that separate them were never encoded.
  return list.split(',').filter((t) => t.length > 0);
}

const decoder = new TextDecoder();
let listenSocket = null;

const app = uWS.App();

app.ws('/*', {
  compression: uWS.DISABLED,
  maxPayloadLength: 1024 * 1024,
  // Slow subscribers are closed past this much buffered output (uWS's own default policy).
  maxBackpressure: 16 * 1024 * 1024,
  closeOnBackpressureLimit: 1,
  idleTimeout: 0,
  upgrade: (res, req, context) => {
    const url = req.getUrl();
    const data = url === '/publish'
      ? { publisher: true, topics: [] }
      : { publisher: false, topics: requestedTopics(req.getQuery() || '') };
    res.upgrade(
      data,
      req.getHeader('sec-websocket-key'),
      req.getHeader('sec-websocket-protocol'),
      req.getHeader('sec-websocket-extensions'),
      context,
    );
  },
  open: (ws) => {
    const data = ws.getUserData();
    for (const topic of data.topics) ws.subscribe(topic);
  },
  message: (ws, message, isBinary) => {
    if (isBinary || !ws.getUserData().publisher) return;
    const text = decoder.decode(message);
    const newline = text.indexOf('\n');
    if (newline === -1) {
      app.publish(EVERYTHING, text, false);
      return;
    }
    // A topic's message also reaches the subscribers that asked for everything.
    const payload = text.slice(newline + 1);
    app.publish(text.slice(0, newline), payload, false);
    app.publish(EVERYTHING, payload, false);
  },
});

app.listen(host, port, (socket) => {
  if (!socket) {
    console.error(`uws-server: could not listen on ${host}:${port}`);
    process.exit(1);
  }
  listenSocket = socket;
  console.log(`uws-server listening on ws://${host}:${port}/ (publish on /publish)`);
});

const stop = () => {
  if (listenSocket) {
    uWS.us_listen_socket_close(listenSocket);
    listenSocket = null;
  }
  // Closing every socket lets the event loop end; exit anyway if a socket lingers.
  app.close();
  setTimeout(() => process.exit(0), 500).unref();
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
