// Benchmark baseline: a WebSocket <-> Redis pub/sub bridge written the way the tutorial's
// redis-server.js works. Every text frame a client sends is PUBLISHed on the channel; one Redis
// subscription receives every message on the channel and sends it to every open socket, one
// WebSocket frame per message. Written for this project's benchmark (bench/, scripts/bench.sh);
// it is deliberately plain: no batching, no per-client queue limits.
//
// Usage: node server.js [--port 3001] [--host 127.0.0.1] [--redis redis://127.0.0.1:6379]
//                       [--channel app:notifications]
// Environment: NODE_BRIDGE_PORT, NODE_BRIDGE_HOST, REDIS_URL, BRIDGE_CHANNEL.
'use strict';

const { WebSocketServer, WebSocket } = require('ws');
const { createClient } = require('redis');

function option(name, envName, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  if (at !== -1 && at + 1 < process.argv.length) return process.argv[at + 1];
  return process.env[envName] || fallback;
}

const port = Number(option('port', 'NODE_BRIDGE_PORT', '3001'));
const host = option('host', 'NODE_BRIDGE_HOST', '127.0.0.1');
const redisUrl = option('redis', 'REDIS_URL', 'redis://127.0.0.1:6379');
const channel = option('channel', 'BRIDGE_CHANNEL', 'app:notifications');

async function main() {
  const publisher = createClient({ url: redisUrl });
  publisher.on('error', (err) => console.error('redis publisher error:', err.message));
  const subscriber = publisher.duplicate();
  subscriber.on('error', (err) => console.error('redis subscriber error:', err.message));
  await publisher.connect();
  await subscriber.connect();

  const wss = new WebSocketServer({ host, port, perMessageDeflate: false, backlog: 4096 });

  // The one shared subscription: every channel message goes to every open socket.
  await subscriber.subscribe(channel, (message) => {
    for (const socket of wss.clients) {
      if (socket.readyState === WebSocket.OPEN) socket.send(message);
    }
  });

  wss.on('connection', (socket) => {
    socket.on('message', (data, isBinary) => {
      if (isBinary) return;
      publisher.publish(channel, data.toString()).catch((err) => {
        console.error('publish failed:', err.message);
      });
    });
    socket.on('error', () => socket.terminate());
  });

  wss.on('listening', () => console.log(`node-bridge listening on ws://${host}:${port}/ (channel ${channel})`));

  const stop = async () => {
    for (const socket of wss.clients) socket.terminate();
    wss.close();
    await Promise.allSettled([subscriber.quit(), publisher.quit()]);
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err) => {
  console.error('node-bridge failed:', err);
  process.exit(1);
});
