'use strict';
// Shared by the bad-input matrix (tests/compat/bad_input_*.test.js, docs/bad-input.md):
// - canaries: one Mqtt and one Amqp device (azure-iot-device) that send telemetry steadily for the
//   whole file; after each case `canaries.check()` asserts both kept being acknowledged;
// - hubd's resident memory (VmRSS of /proc/<pid>/status) and a liveness probe;
// - raw TCP/TLS sockets (node `net`/`tls`) for what no SDK sends;
// - a minimal AMQP 1.0 frame encoder and decoder (only the types the cases need).

const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const tls = require('node:tls');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Amqp } = require('azure-iot-device-amqp');
const { Message, createSasDevice, openClient, closeQuietly } = require('./device');
const { request, API } = require('./util');

// ---- hubd's process -------------------------------------------------------------------------

// VmRSS of the hub's process in KiB (hubd is exec'd by setpriv, so the child's pid is hubd's).
function rssKiB(hub) {
  const status = fs.readFileSync(`/proc/${hub.child.pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
  assert.ok(m, 'VmRSS in /proc/<pid>/status');
  return Number(m[1]);
}

// hubd still runs and answers HTTPS: an unauthenticated registry GET is IoT Hub's 401.
async function assertHubAlive(hub) {
  assert.ok(hub.child && hub.child.exitCode === null && hub.child.signalCode === null,
            `hubd exited:\n${hub.output.slice(-4000)}`);
  const res = await request({ host: hub.hostName, method: 'GET', path: `/devices/alive-probe?${API}` });
  assert.equal(res.status, 401, 'hubd answers an unauthenticated request with 401');
}

// Runs `once()` (one bad connection, resolved when the hub has ended it) `warmup` times, reads
// the RSS, runs it `n` more times (`concurrency` at a time), and returns {before, after, perCase}
// in KiB: a leak of a connection's state or buffers shows as perCase.
async function repeatedCases(hub, once, { warmup = 50, n = 300, concurrency = 10 } = {}) {
  const run = async (count) => {
    for (let i = 0; i < count; i += concurrency) {
      await Promise.all(Array.from({ length: Math.min(concurrency, count - i) }, () => once()));
    }
  };
  await run(warmup);
  const before = rssKiB(hub);
  await run(n);
  const after = rssKiB(hub);
  return { before, after, perCase: (after - before) / n, n };
}

// ---- the frame of a bad-input file ----------------------------------------------------------

// hubd's RSS may grow by this much over a whole file of cases (caches, allocator arenas), and a
// repeated case by this much per connection.
const RSS_GROWTH_LIMIT_KIB = 16 * 1024;
const RSS_PER_CONNECTION_LIMIT_KIB = 8;

// Installs the hooks every bad-input file shares and returns the suite's state (set by the time
// the cases run): one hub for the file (`startHub({name, args})`), a registry client, canaries
// started and checked before the first case, hubd's RSS before the cases. `afterCase()` checks
// the canaries; `fresh(what)` creates a SAS device; `itStaysBounded()` adds the last case (hubd
// alive, RSS grown by less than RSS_GROWTH_LIMIT_KIB). `cleanup` runs first in `after`.
function badInputSuite({ name, prefix, args, cleanup }) {
  const { before, after, it } = require('node:test');
  const { Registry } = require('azure-iothub');
  const { startHub } = require('./hub');
  const pid = process.pid;
  let n = 0;
  const s = { hub: null, registry: null, canaries: null, rssBefore: 0 };
  before(async () => {
    s.hub = await startHub({ name, args });
    s.registry = Registry.fromConnectionString(s.hub.connectionString);
    s.canaries = await Canaries.start(s.hub, s.registry, `${prefix}-${pid}`);
    await s.canaries.check();
    s.rssBefore = rssKiB(s.hub);
  });
  after(async () => {
    await cleanup?.();
    await s.canaries?.stop();
    if (s.hub) await s.hub.dispose();
  });
  s.afterCase = () => s.canaries.check();
  s.fresh = (what = 'device') => createSasDevice(s.hub, s.registry, `bad-${prefix}-${what}-${pid}-${n++}`);
  s.itStaysBounded = () => it(`hubd is alive and its RSS grew by less than ${RSS_GROWTH_LIMIT_KIB / 1024} MiB over the cases`, async () => {
    await assertHubAlive(s.hub);
    const after = rssKiB(s.hub);
    console.log(`hubd RSS: ${s.rssBefore} KiB before the cases, ${after} KiB after`);
    assert.ok(after - s.rssBefore < RSS_GROWTH_LIMIT_KIB, `RSS grew from ${s.rssBefore} to ${after} KiB`);
  });
  return s;
}

// The verdict on repeatedCases() over bad connections.
function assertBoundedPerConnection(r) {
  console.log(`hubd RSS over ${r.n} bad connections: ${r.before} -> ${r.after} KiB (${r.perCase.toFixed(2)} KiB each)`);
  assert.ok(r.perCase < RSS_PER_CONNECTION_LIMIT_KIB, `${r.perCase} KiB per connection`);
}

// ---- canaries -------------------------------------------------------------------------------

const CANARY_PERIOD_MS = 200;

class Canary {
  constructor(name, client) {
    this.name = name;
    this.client = client;
    this.acked = 0;
    this.failures = [];
    this.disconnects = [];
    this.running = true;
    client.on('disconnect', (d) => this.disconnects.push(d?.reason?.message ?? String(d)));
    this.loop = this._run();
  }

  async _run() {
    while (this.running) {
      const started = Date.now();
      try {
        await this.client.sendEvent(new Message(`canary ${this.acked}`));
        this.acked++;
      } catch (err) {
        if (this.running) this.failures.push(`${err.constructor.name}: ${err.message}`);
      }
      const left = CANARY_PERIOD_MS - (Date.now() - started);
      if (left > 0) await new Promise((r) => setTimeout(r, left));
    }
  }
}

class Canaries {
  static async start(hub, registry, tag) {
    const out = new Canaries();
    for (const [name, Transport] of [['mqtt', Mqtt], ['amqp', Amqp]]) {
      const dev = await createSasDevice(hub, registry, `canary-${name}-${tag}`);
      const client = await openClient(dev.connectionString, Transport, { noRetry: true });
      out.list.push(new Canary(name, client));
    }
    return out;
  }

  constructor() {
    this.list = [];
  }

  // Both canaries got `n` more sends acknowledged within `ms`, and none failed or was
  // disconnected since the file began.
  async check(n = 2, ms = 15_000) {
    const base = this.list.map((c) => c.acked);
    const deadline = Date.now() + ms;
    while (this.list.some((c, i) => c.acked < base[i] + n) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    for (const [i, c] of this.list.entries()) {
      assert.deepEqual(c.failures, [], `the ${c.name} canary's sends failed`);
      assert.deepEqual(c.disconnects, [], `the ${c.name} canary was disconnected`);
      assert.ok(c.acked >= base[i] + n, `the ${c.name} canary got ${c.acked - base[i]} acks in ${ms} ms, wanted ${n}`);
    }
  }

  async stop() {
    for (const c of this.list) c.running = false;
    await Promise.all(this.list.map((c) => c.loop));
    await Promise.all(this.list.map((c) => closeQuietly(c.client)));
  }
}

// ---- raw sockets ----------------------------------------------------------------------------

// A TCP or TLS connection that collects what the hub sends and notes when it closes.
class RawSocket {
  constructor(socket) {
    this.socket = socket;
    this.data = Buffer.alloc(0);
    this.waiters = [];
    this.openedAt = Date.now();
    this.closedAt = null;
    this.error = null;
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.closedAt = Date.now();
        resolve(this.closedAt);
        this._wake();
      });
    });
    socket.on('data', (chunk) => {
      this.data = Buffer.concat([this.data, chunk]);
      this._wake();
    });
    socket.on('error', (err) => { this.error = err; });
  }

  _wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  // Plain TCP.
  static tcp(host, port, { timeoutMs = 10_000 } = {}) {
    return RawSocket._open(() => net.connect({ host, port }), 'connect', timeoutMs);
  }

  // TLS (trust from NODE_EXTRA_CA_CERTS); `options` go to tls.connect (minVersion, ciphers, cert...).
  static tls(host, port, options = {}, { timeoutMs = 10_000 } = {}) {
    return RawSocket._open(() => tls.connect({ host, port, servername: net.isIP(host) ? undefined : host, ...options }),
                           'secureConnect', timeoutMs);
  }

  static _open(make, readyEvent, timeoutMs) {
    return new Promise((resolve, reject) => {
      const socket = make();
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`${readyEvent} not within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once(readyEvent, () => {
        clearTimeout(timer);
        socket.removeListener('error', onError);
        resolve(new RawSocket(socket));
      });
      const onError = (err) => {
        clearTimeout(timer);
        reject(err);
      };
      socket.once('error', onError);
    });
  }

  get isClosed() {
    return this.closedAt !== null;
  }

  write(bytes) {
    if (!this.isClosed && !this.socket.destroyed) this.socket.write(bytes);
  }

  // The client's half-close (FIN after the bytes).
  end(bytes) {
    if (!this.isClosed) this.socket.end(bytes);
  }

  // Resolves once `predicate(this.data)` holds or the socket closes; throws after ms.
  async waitFor(predicate, ms = 10_000, what = 'data') {
    const deadline = Date.now() + ms;
    for (;;) {
      if (predicate(this.data)) return this.data;
      if (this.isClosed) return this.data;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${what}: not within ${ms} ms (got ${this.data.length} bytes)`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  // True if the hub closes the connection within ms.
  async closedWithin(ms) {
    let timer;
    const timeout = new Promise((resolve) => { timer = setTimeout(() => resolve(false), ms); });
    const result = await Promise.race([this.closed.then(() => true), timeout]);
    clearTimeout(timer);
    return result;
  }

  destroy() {
    this.socket.destroy();
  }
}

// A TLS handshake that fails (or succeeds): resolves to {ok, error, protocol, cipher}.
function tryTls(host, port, options) {
  return new Promise((resolve) => {
    const socket = tls.connect({ host, port, ...options });
    const timer = setTimeout(() => {
      socket.destroy();
      resolve({ ok: false, error: 'timeout' });
    }, 10_000);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const out = { ok: true, protocol: socket.getProtocol(), cipher: socket.getCipher().standardName };
      socket.destroy();
      resolve(out);
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      resolve({ ok: false, error: err.code ?? err.message, message: err.message });
    });
  });
}

// ---- WebSockets ------------------------------------------------------------------------------

// A WebSocket to wss://<host>/$iothub/websocket with `subprotocol` (the ws package, as the SDKs'
// MqttWs/AmqpWs use): resolves once open; `ws.received` collects the binary messages and
// `ws.closedWithin(ms)` resolves to {code} or null if still open.
function openWebSocket(hostName, subprotocol) {
  const WebSocket = require('ws');
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`wss://${hostName}/$iothub/websocket`, subprotocol);
    ws.received = [];
    ws.on('message', (m) => ws.received.push(Buffer.from(m)));
    const closed = new Promise((r) => ws.once('close', (code) => r({ code })));
    ws.closedWithin = (ms) => {
      let timer;
      return Promise.race([closed, new Promise((r) => { timer = setTimeout(() => r(null), ms); })]).finally(() => clearTimeout(timer));
    };
    ws.once('open', () => {
      ws.on('error', () => {});
      resolve(ws);
    });
    ws.once('error', reject);
  });
}

// ---- X.509 material past its validity ------------------------------------------------------

// A certificate valid only in January 2020 (openssl ca takes explicit dates; req -x509 and x509
// -req take only a positive number of days): self-signed, or signed by `ca` ({certFile, keyFile}).
// Returns {cert, key, certFile, keyFile}.
function expiredCert(dir, commonName, ca) {
  const { execFileSync } = require('node:child_process');
  const path = require('node:path');
  const crypto = require('node:crypto');
  const work = fs.mkdtempSync(path.join(dir, 'expired-'));
  fs.writeFileSync(path.join(work, 'index.txt'), '');
  fs.writeFileSync(path.join(work, 'serial'), `${crypto.randomBytes(8).toString('hex')}\n`);
  fs.writeFileSync(path.join(work, 'ca.cnf'), [
    '[ca]', 'default_ca = d', '[d]', 'database = index.txt', 'new_certs_dir = .', 'default_md = sha256',
    'policy = p', 'serial = serial', 'unique_subject = no', 'copy_extensions = copy', '[p]', 'commonName = supplied', '',
  ].join('\n'));
  const run = (args) => execFileSync('openssl', args, { cwd: work, stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
  run(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'leaf.key',
       '-out', 'leaf.csr', '-subj', `/CN=${commonName}`, '-addext', 'basicConstraints=critical,CA:FALSE',
       '-addext', 'extendedKeyUsage=clientAuth']);
  const signer = ca ? ['-cert', ca.certFile, '-keyfile', ca.keyFile] : ['-selfsign', '-keyfile', 'leaf.key'];
  run(['ca', '-batch', '-config', 'ca.cnf', ...signer, '-in', 'leaf.csr', '-out', 'leaf.pem', '-notext',
       '-startdate', '20200101000000Z', '-enddate', '20200201000000Z']);
  return {
    certFile: path.join(work, 'leaf.pem'), keyFile: path.join(work, 'leaf.key'),
    cert: fs.readFileSync(path.join(work, 'leaf.pem'), 'utf8'), key: fs.readFileSync(path.join(work, 'leaf.key'), 'utf8'),
  };
}

// ---- HTTP/1.1 by hand ----------------------------------------------------------------------

// The first complete response in `data`: {status, headers (lower-case names), body}, or null.
function parseHttpResponse(data) {
  const end = data.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const lines = data.subarray(0, end).toString('latin1').split('\r\n');
  const status = Number(lines[0].split(' ')[1]);
  const headers = {};
  for (const line of lines.slice(1)) {
    const i = line.indexOf(':');
    headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  const length = Number(headers['content-length'] ?? 0);
  if (data.length < end + 4 + length) return null;
  const body = data.subarray(end + 4, end + 4 + length).toString('utf8');
  let json;
  try {
    json = body ? JSON.parse(body) : undefined;
  } catch {
    json = undefined;
  }
  return { status, headers, body, json };
}

// Sends `bytes` on a fresh TLS connection to port 443 and resolves to {sock, res} once a whole
// response came (res null if the hub closed first, or after ms).
async function rawHttp(host, bytes, ms = 10_000) {
  const sock = await RawSocket.tls(host, 443);
  sock.write(bytes);
  await sock.waitFor((d) => parseHttpResponse(d) !== null, ms, 'an HTTP response').catch(() => {});
  return { sock, res: parseHttpResponse(sock.data) };
}

// ---- AMQP 1.0 (OASIS AMQP 1.0 part 1: types, part 2: transport) ------------------------------

const amqp = {
  // 'AMQP' + protocol id (0 = AMQP, 3 = SASL) + version 1.0.0
  header: (id = 0) => Buffer.from([0x41, 0x4d, 0x51, 0x50, id, 1, 0, 0]),
  nul: () => Buffer.from([0x40]),
  bool: (v) => Buffer.from([v ? 0x41 : 0x42]),
  ubyte: (n) => Buffer.from([0x50, n]),
  ushort: (n) => { const b = Buffer.alloc(3); b[0] = 0x60; b.writeUInt16BE(n, 1); return b; },
  uint: (n) => { const b = Buffer.alloc(5); b[0] = 0x70; b.writeUInt32BE(n, 1); return b; },
  ulong: (n) => { const b = Buffer.alloc(9); b[0] = 0x80; b.writeBigUInt64BE(BigInt(n), 1); return b; },
  _var: (small, large, bytes) => (bytes.length < 256
    ? Buffer.concat([Buffer.from([small, bytes.length]), bytes])
    : Buffer.concat([Buffer.from([large]), u32(bytes.length), bytes])),
  str: (s) => amqp._var(0xa1, 0xb1, Buffer.from(s, 'utf8')),
  sym: (s) => amqp._var(0xa3, 0xb3, Buffer.from(s, 'ascii')),
  bin: (b) => amqp._var(0xa0, 0xb0, b),
  list: (items) => {
    const body = Buffer.concat(items);
    return Buffer.concat([Buffer.from([0xd0]), u32(body.length + 4), u32(items.length), body]);
  },
  map: (pairs) => {
    const body = Buffer.concat(pairs.flat());
    return Buffer.concat([Buffer.from([0xd1]), u32(body.length + 4), u32(pairs.length * 2), body]);
  },
  described: (code, value) => Buffer.concat([Buffer.from([0x00, 0x53, code]), value]),
  performative: (code, fields) => amqp.described(code, amqp.list(fields)),
  // A frame: size, doff 2, type (0 AMQP, 1 SASL), channel, body.
  frame: (body, { type = 0, channel = 0 } = {}) => {
    const h = Buffer.alloc(8);
    h.writeUInt32BE(8 + body.length, 0);
    h[4] = 2;
    h[5] = type;
    h.writeUInt16BE(channel, 6);
    return Buffer.concat([h, body]);
  },
  open: ({ containerId = 'bad-input', hostName, maxFrameSize = 65536 } = {}) =>
    amqp.frame(amqp.performative(0x10, [amqp.str(containerId), hostName ? amqp.str(hostName) : amqp.nul(), amqp.uint(maxFrameSize)])),
  begin: (channel = 0) =>
    amqp.frame(amqp.performative(0x11, [amqp.nul(), amqp.uint(0), amqp.uint(1000), amqp.uint(1000)]), { channel }),
  // role false = sender
  attach: ({ name, handle = 0, sender = true, source, target }) => amqp.frame(amqp.performative(0x12, [
    amqp.str(name), amqp.uint(handle), amqp.bool(!sender), amqp.ubyte(0), amqp.ubyte(0),
    amqp.performative(0x28, [source ? amqp.str(source) : amqp.nul()]),
    amqp.performative(0x29, [target ? amqp.str(target) : amqp.nul()]),
    amqp.nul(), amqp.nul(), amqp.uint(0)])),
  transfer: ({ handle = 0, deliveryId, tag = Buffer.from([1]), more = false, payload = Buffer.alloc(0) }) =>
    amqp.frame(Buffer.concat([amqp.performative(0x14, [
      amqp.uint(handle), deliveryId === undefined ? amqp.nul() : amqp.uint(deliveryId), amqp.bin(tag), amqp.uint(0),
      amqp.bool(false), amqp.bool(more)]), payload])),
  saslInit: (mechanism, initial = Buffer.alloc(0)) =>
    amqp.frame(amqp.performative(0x41, [amqp.sym(mechanism), amqp.bin(initial)]), { type: 1 }),
  // A message with one Data section.
  dataSection: (bytes) => amqp.described(0x75, amqp.bin(bytes)),
};

function u32(n) {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

const PERFORMATIVES = {
  0x10: 'open', 0x11: 'begin', 0x12: 'attach', 0x13: 'flow', 0x14: 'transfer', 0x15: 'disposition',
  0x16: 'detach', 0x17: 'end', 0x18: 'close', 0x1d: 'error',
  0x40: 'sasl-mechanisms', 0x41: 'sasl-init', 0x42: 'sasl-challenge', 0x43: 'sasl-response', 0x44: 'sasl-outcome',
};

// Decodes one AMQP value at buf[pos]; returns [value, next]. Described values become
// {descriptor, value}; symbols become strings.
function decodeValue(buf, pos) {
  const code = buf[pos++];
  const fixed = (n, read) => [read(pos), pos + n];
  switch (code) {
    case 0x00: {
      const [descriptor, p1] = decodeValue(buf, pos);
      const [value, p2] = decodeValue(buf, p1);
      return [{ descriptor: typeof descriptor === 'bigint' ? Number(descriptor) : descriptor, value }, p2];
    }
    case 0x40: return [null, pos];
    case 0x41: return [true, pos];
    case 0x42: return [false, pos];
    case 0x56: return [buf[pos] !== 0, pos + 1];
    case 0x43: case 0x44: return [0, pos];
    case 0x50: case 0x52: case 0x53: return [buf[pos], pos + 1];
    case 0x51: case 0x54: return [buf.readInt8(pos), pos + 1];
    case 0x60: return fixed(2, (p) => buf.readUInt16BE(p));
    case 0x61: return fixed(2, (p) => buf.readInt16BE(p));
    case 0x70: return fixed(4, (p) => buf.readUInt32BE(p));
    case 0x71: return fixed(4, (p) => buf.readInt32BE(p));
    case 0x80: return fixed(8, (p) => buf.readBigUInt64BE(p));
    case 0x81: case 0x83: return fixed(8, (p) => buf.readBigInt64BE(p));
    case 0x98: return fixed(16, (p) => buf.subarray(p, p + 16));
    case 0xa0: case 0xa1: case 0xa3: case 0xb0: case 0xb1: case 0xb3: {
      const small = code < 0xb0;
      const n = small ? buf[pos] : buf.readUInt32BE(pos);
      const start = pos + (small ? 1 : 4);
      const bytes = buf.subarray(start, start + n);
      return [(code & 0x0f) === 0 ? bytes : bytes.toString('utf8'), start + n];
    }
    case 0x45: return [[], pos];
    case 0xc0: case 0xc1: case 0xd0: case 0xd1: {
      const small = code < 0xd0;
      const size = small ? buf[pos] : buf.readUInt32BE(pos);
      const count = small ? buf[pos + 1] : buf.readUInt32BE(pos + 4);
      let p = pos + (small ? 2 : 8);
      const end = pos + (small ? 1 : 4) + size;
      const items = [];
      for (let i = 0; i < count; i++) {
        const [v, next] = decodeValue(buf, p);
        items.push(v);
        p = next;
      }
      if ((code & 0x0f) === 0) return [items, end];
      const map = {};
      for (let i = 0; i + 1 < items.length; i += 2) map[String(items[i])] = items[i + 1];
      return [map, end];
    }
    case 0xe0: case 0xf0: {
      const small = code === 0xe0;
      const size = small ? buf[pos] : buf.readUInt32BE(pos);
      return [{ array: true }, pos + (small ? 1 : 4) + size];
    }
    default:
      throw new Error(`AMQP type 0x${code.toString(16)} not decoded by this helper`);
  }
}

// Splits `data` (after the 8-byte protocol headers the caller skipped) into frames:
// [{type, channel, name, fields, payload}]; an empty frame is a heartbeat ({name: 'empty'}).
function decodeFrames(data) {
  const frames = [];
  let pos = 0;
  while (pos + 8 <= data.length) {
    if (data.subarray(pos, pos + 4).toString('latin1') === 'AMQP') {
      frames.push({ name: 'header', id: data[pos + 4] });
      pos += 8;
      continue;
    }
    const size = data.readUInt32BE(pos);
    if (pos + size > data.length) break;
    const doff = data[pos + 4] * 4;
    const frame = { type: data[pos + 5], channel: data.readUInt16BE(pos + 6) };
    if (size === doff) {
      frame.name = 'empty';
    } else {
      const [perf, next] = decodeValue(data, pos + doff);
      frame.name = PERFORMATIVES[perf.descriptor] ?? `0x${perf.descriptor.toString(16)}`;
      frame.fields = perf.value;
      frame.payload = data.subarray(next, pos + size);
    }
    frames.push(frame);
    pos += size;
  }
  return frames;
}

// The error of a close/detach/end frame: {condition, description}, or null.
function frameError(frame) {
  const index = { close: 0, end: 0, detach: 2 }[frame.name];
  const err = frame.fields?.[index];
  if (!err) return null;
  return { condition: err.value[0], description: err.value[1] ?? null };
}

module.exports = {
  badInputSuite, assertBoundedPerConnection, rssKiB, assertHubAlive, repeatedCases, Canaries, RawSocket, tryTls, parseHttpResponse, rawHttp, expiredCert, openWebSocket, amqp, decodeFrames, decodeValue, frameError,
};
