'use strict';
// A connection flood, run as its own process so that it can have more file descriptors than the
// test process (flood.test.js starts it under `prlimit --nofile`):
//
//   node lib/flood.js '{"host":"127.1.2.3","port":8883,"holdMs":15000,
//                       "groups":[{"kind":"tcp","count":2000,"addresses":["127.99.0.1"]}, ...]}'
//
// Kinds: "tcp" connects and sends nothing; "half-tls" sends the first bytes of a TLS record and
// stops (a handshake that never finishes); "tls" completes the TLS handshake and sends nothing
// (no MQTT CONNECT, no AMQP header). Connections of a group use its source addresses in turn
// (bound with localAddress: the whole 127/8 is local). Every connection is held until holdMs after
// the last one was started, then all are destroyed. Prints one JSON line per group:
// {kind, count, connected, failed, refused, closedLater, open, tlsDone} where refused = reset by
// the hub during or within 1 s of the TCP connect (the caps), failed = the connect failed otherwise, closedLater = closed by the hub afterwards
// (timeouts), open = still open at the end, tlsDone = TLS handshakes completed ("tls").

const net = require('node:net');
const tls = require('node:tls');

const spec = JSON.parse(process.argv[2]);
const CONCURRENT_CONNECTS = 500;
const REFUSED_WITHIN_MS = 1000;
// A TLS record header (handshake, TLS 1.0 record version, length 512) and two bytes of the body.
const HALF_TLS = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]);

const sockets = [];

function open(group, index) {
  const stats = group.stats;
  const localAddress = group.addresses[index % group.addresses.length];
  return new Promise((resolve) => {
    const record = { connectedAt: 0, closedAt: 0 };
    const socket = net.connect({ host: spec.host, port: spec.port, localAddress });
    socket.on('error', (err) => { record.error = err.code; });
    socket.once('connect', () => {
      record.connectedAt = Date.now();
      stats.connected++;
      if (group.kind === 'half-tls') socket.write(HALF_TLS);
      if (group.kind === 'tls') {
        const secure = tls.connect({ socket, servername: 'localhost', rejectUnauthorized: false });
        secure.on('error', () => {});
        secure.once('secureConnect', () => { stats.tlsDone++; });
        record.secure = secure;
      }
      resolve();
    });
    socket.once('close', () => {
      record.closedAt = Date.now();
      if (!record.connectedAt) {
        // The hub's reset can beat the connect's completion: the connect then fails with it.
        if (record.error === 'ECONNRESET') stats.refused++;
        else stats.failed++;
        resolve();
        return;
      }
      if (record.destroyedByUs) return;
      if (record.closedAt - record.connectedAt <= REFUSED_WITHIN_MS) stats.refused++;
      else stats.closedLater++;
    });
    sockets.push({ socket, record });
  });
}

async function main() {
  for (const g of spec.groups) {
    g.stats = { kind: g.kind, count: g.count, connected: 0, failed: 0, refused: 0, closedLater: 0, open: 0, tlsDone: 0 };
  }
  // Interleave the groups, so that every kind arrives while the others are held.
  const jobs = [];
  const left = spec.groups.map((g) => g.count);
  const next = spec.groups.map(() => 0);
  for (let more = true; more;) {
    more = false;
    spec.groups.forEach((g, i) => {
      if (left[i] > 0) {
        left[i]--;
        jobs.push([g, next[i]++]);
        more = true;
      }
    });
  }
  let cursor = 0;
  const worker = async () => {
    while (cursor < jobs.length) {
      const [g, i] = jobs[cursor++];
      await open(g, i);
    }
  };
  const started = Date.now();
  await Promise.all(Array.from({ length: CONCURRENT_CONNECTS }, worker));
  const openedMs = Date.now() - started;
  await new Promise((r) => setTimeout(r, spec.holdMs));
  // Count what is still open, per group, before destroying.
  const index = new Map();
  let k = 0;
  for (const [g] of jobs) index.set(k++, g);
  sockets.forEach(({ socket, record }, i) => {
    const g = index.get(i);
    if (record.connectedAt && !record.closedAt) g.stats.open++;
    record.destroyedByUs = true;
    record.secure?.destroy();
    socket.destroy();
  });
  for (const g of spec.groups) process.stdout.write(`${JSON.stringify({ ...g.stats, addresses: g.addresses.length })}\n`);
  process.stdout.write(`${JSON.stringify({ openedMs })}\n`);
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`${err.stack}\n`);
  process.exit(1);
});
