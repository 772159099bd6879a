'use strict';
// TLS hygiene (docs/tls.md) and the transport rows of the bad-input matrix (docs/bad-input.md):
// - what hubd's TLS accepts on every port (TLS 1.2 with ECDHE + AEAD suites, TLS 1.3) and refuses
//   (TLS 1.0/1.1, CBC and non-forward-secret suites), asserted on the alert the client gets;
// - clients that never finish: plain bytes to a TLS port, a ClientHello then silence, a TCP
//   connection that says nothing (closed by the 10 s handshake budget); WebSocket upgrades hubd
//   does not serve;
// - start-up checks of the certificate material: a missing ca.pem, a key that does not match, a CA
//   outside its validity period, one about to expire, CA keys others can read, and the modes of the
//   files hubd writes.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFile, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const tls = require('node:tls');
const { Duplex } = require('node:stream');
const { Registry } = require('azure-iothub');
const { startHub, Hub } = require('./lib/hub');
const { Canaries, assertHubAlive, RawSocket, tryTls, rawHttp } = require('./lib/bad_input');
const { API } = require('./lib/util');
const { connectPacket } = require('./lib/raw_mqtt');

const PORTS = [443, 8883, 5671];
// listener_options::handshake_timeout: the TLS handshake and the protocol's first bytes.
const HANDSHAKE_BUDGET_MS = 10_000;
const CLOSE_WITHIN_MS = 5_000;

// The bytes of a real ClientHello (node's TLS client writing into a stub), for a client that then
// stops.
function clientHello(servername) {
  return new Promise((resolve) => {
    const stub = new Duplex({
      read() {},
      write(chunk, _enc, cb) {
        resolve(Buffer.from(chunk));
        cb();
      },
    });
    const s = tls.connect({ socket: stub, servername, rejectUnauthorized: false });
    s.on('error', () => {});
    setTimeout(() => s.destroy(), 1_000);
  });
}

function openssl(args, cwd) {
  return execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
}

// A CA in `dir` (ca.pem + ca.key): valid for `days` from now, or in January 2020 when days is
// 'expired'.
function makeCa(dir, days) {
  fs.mkdirSync(dir, { recursive: true });
  const ext = ['-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign'];
  const key = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  if (days === 'expired') {
    fs.writeFileSync(path.join(dir, 'index.txt'), '');
    fs.writeFileSync(path.join(dir, 'serial'), '01\n');
    fs.writeFileSync(path.join(dir, 'ca.cnf'), ['[ca]', 'default_ca = d', '[d]', 'database = index.txt', 'new_certs_dir = .',
      'default_md = sha256', 'policy = p', 'serial = serial', 'unique_subject = no', 'copy_extensions = copy', '[p]',
      'commonName = supplied', ''].join('\n'));
    openssl(['req', '-new', ...key, '-keyout', 'ca.key', '-out', 'ca.csr', '-subj', '/CN=expired test CA', ...ext], dir);
    openssl(['ca', '-batch', '-config', 'ca.cnf', '-selfsign', '-keyfile', 'ca.key', '-in', 'ca.csr', '-out', 'ca.pem',
             '-notext', '-startdate', '20200101000000Z', '-enddate', '20200201000000Z'], dir);
  } else {
    openssl(['req', '-x509', ...key, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', String(days), '-subj', '/CN=test CA', ...ext], dir);
  }
  fs.chmodSync(path.join(dir, 'ca.key'), 0o600);
}

let nextHost = 1;
function host() {
  return `127.211.${process.pid & 0xff}.${nextHost++}`;
}

// hubd on `dataDir` that must fail to start: resolves to {code, stderr}.
function startFails(dataDir) {
  return new Promise((resolve, reject) => {
    const h = host();
    execFile(process.env.HUBD_BIN, ['--data', dataDir, '--hostname', h, '--listen', h], { timeout: 20_000 }, (err, stdout, stderr) => {
      if (!err) return reject(new Error(`hubd started and exited 0:\n${stdout}${stderr}`));
      if (err.killed) return reject(new Error(`hubd did not exit (it started):\n${stdout}${stderr}`));
      resolve({ code: err.code, stderr });
    });
  });
}

// hubd on `dataDir` that must start: the running Hub (dispose it).
async function startsOn(dataDir, name) {
  const hub = new Hub({ hostName: host(), dataDir, name, args: [] });
  await hub.start();
  return hub;
}

describe('TLS', () => {
  let hub;
  let registry;
  let canaries;
  let tmp;
  // Opened first, checked last: the handshake budget runs while the other tests do.
  let silentTcp;
  let helloThenSilence;
  let tlsThenSilence;

  before(async () => {
    tmp = fs.mkdtempSync(path.join(process.env.HUBD_TEST_TMP ?? os.tmpdir(), 'tls-'));
    hub = await startHub({ name: 'tls' });
    registry = Registry.fromConnectionString(hub.connectionString);
    silentTcp = await RawSocket.tcp(hub.hostName, 8883);
    helloThenSilence = await RawSocket.tcp(hub.hostName, 5671);
    helloThenSilence.write(await clientHello(hub.hostName));
    tlsThenSilence = await RawSocket.tls(hub.hostName, 443);
    canaries = await Canaries.start(hub, registry, `tls-${process.pid}`);
    await canaries.check();
  });
  after(async () => {
    for (const s of [silentTcp, helloThenSilence, tlsThenSilence]) s?.destroy();
    await canaries?.stop();
    if (hub) await hub.dispose();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  // ---- versions and suites -------------------------------------------------------------------

  for (const version of ['TLSv1', 'TLSv1.1']) {
    it(`a ${version} ClientHello is refused with the protocol_version alert on ports ${PORTS.join(', ')}`, async () => {
      for (const port of PORTS) {
        const r = await tryTls(hub.hostName, port, { minVersion: version, maxVersion: version, ciphers: 'DEFAULT@SECLEVEL=0' });
        assert.equal(r.ok, false, `port ${port}: ${version} accepted`);
        assert.equal(r.error, 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', `port ${port}: ${r.message}`);
      }
      await canaries.check();
    });
  }

  for (const [suite, why] of [['AES128-SHA256', 'RSA key exchange, CBC'], ['ECDHE-ECDSA-AES128-SHA256', 'CBC'],
                              ['ECDHE-ECDSA-AES256-SHA', 'CBC with SHA-1']]) {
    it(`TLS 1.2 offering only ${suite} (${why}) is refused with the handshake_failure alert`, async () => {
      for (const port of PORTS) {
        const r = await tryTls(hub.hostName, port, { maxVersion: 'TLSv1.2', ciphers: suite });
        assert.equal(r.ok, false, `port ${port}: ${suite} accepted`);
        assert.equal(r.error, 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE', `port ${port}: ${r.message}`);
      }
    });
  }

  it('TLS 1.2 with each ECDHE AEAD suite (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305) is accepted', async () => {
    const want = {
      'ECDHE-ECDSA-AES128-GCM-SHA256': 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256',
      'ECDHE-ECDSA-AES256-GCM-SHA384': 'TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384',
      'ECDHE-ECDSA-CHACHA20-POLY1305': 'TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256',
    };
    for (const port of PORTS) {
      for (const [suite, standard] of Object.entries(want)) {
        const r = await tryTls(hub.hostName, port, { maxVersion: 'TLSv1.2', ciphers: suite });
        assert.deepEqual(r, { ok: true, protocol: 'TLSv1.2', cipher: standard }, `port ${port}, ${suite}`);
      }
    }
  });

  it('TLS 1.3 is accepted with each of its suites', async () => {
    for (const port of PORTS) {
      for (const suite of ['TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256']) {
        const r = await tryTls(hub.hostName, port, { minVersion: 'TLSv1.3', ciphers: suite });
        assert.deepEqual(r, { ok: true, protocol: 'TLSv1.3', cipher: suite }, `port ${port}`);
      }
    }
  });

  // ---- transport: clients that never finish --------------------------------------------------

  it('plain bytes to a TLS port (an HTTP request in the clear to 443, an MQTT CONNECT to 8883): closed', async () => {
    for (const [port, bytes] of [[443, `GET /devices?${API} HTTP/1.1\r\nHost: x\r\n\r\n`], [8883, connectPacket({ clientId: 'd', username: 'h/d', password: 'p' })]]) {
      const sock = await RawSocket.tcp(hub.hostName, port);
      sock.write(bytes);
      assert.ok(await sock.closedWithin(CLOSE_WITHIN_MS), `port ${port}: still open`);
      assert.ok(!sock.data.toString('latin1').includes('HTTP/1.1'), 'no HTTP answer in the clear');
    }
    await canaries.check();
  });

  it('a WebSocket upgrade to /$iothub/websocket offering subprotocol "foo": 400 InvalidOperation, no 101', async () => {
    const { sock, res } = await rawHttp(hub.hostName, `GET /$iothub/websocket HTTP/1.1\r\nHost: ${hub.hostName}\r\n` +
      'Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n' +
      'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: foo\r\n\r\n');
    sock.destroy();
    assert.ok(res, 'an answer');
    assert.equal(res.status, 400, res.body);
    assert.equal(res.headers['iothub-errorcode'], 'InvalidOperation');
    await canaries.check();
  });

  it('GET /$iothub/websocket without the upgrade headers: 404 NotFound (no such REST resource)', async () => {
    const { sock, res } = await rawHttp(hub.hostName, `GET /$iothub/websocket HTTP/1.1\r\nHost: ${hub.hostName}\r\n\r\n`);
    sock.destroy();
    assert.ok(res, 'an answer');
    assert.equal(res.status, 404, res.body);
    assert.match(res.json?.Message ?? '', /^ErrorCode:NotFound;/);
    await canaries.check();
  });

  it(`a TCP connection that sends nothing, a ClientHello then silence, and a TLS session that sends nothing are closed within the ${HANDSHAKE_BUDGET_MS / 1000} s handshake budget`, { timeout: 30_000 }, async () => {
    for (const [what, sock] of [['silent TCP', silentTcp], ['ClientHello then silence', helloThenSilence],
                                ['TLS then silence', tlsThenSilence]]) {
      const left = HANDSHAKE_BUDGET_MS + 3_000 - (Date.now() - sock.openedAt);
      assert.ok(await sock.closedWithin(Math.max(0, left)), `${what}: still open`);
      const held = sock.closedAt - sock.openedAt;
      assert.ok(held >= HANDSHAKE_BUDGET_MS - 1_000, `${what}: closed after ${held} ms, before the budget`);
    }
    assert.ok(helloThenSilence.data.length > 0, 'the hub answered the ClientHello (ServerHello) before the silence');
    await assertHubAlive(hub);
    await canaries.check();
  });

  // ---- start-up checks -----------------------------------------------------------------------

  it('files hubd creates: ca.key, server.key and hub.json 0600, certificates 0644, the data folder 0700', () => {
    // startHub brings the test CA (ca.pem, ca.key); a fresh folder shows what hubd makes itself.
    const mode = (f) => fs.statSync(path.join(hub.dataDir, f)).mode & 0o777;
    assert.equal(mode('server.key'), 0o600);
    assert.equal(mode('hub.json'), 0o600);
    assert.equal(mode('server.pem'), 0o644);
    const fresh = path.join(tmp, 'fresh');
    execFileSync(process.env.HUBD_BIN, ['--data', fresh, '--hostname', '127.0.0.1', '--init'], { stdio: 'pipe' });
    const freshMode = (f) => fs.statSync(path.join(fresh, f)).mode & 0o777;
    assert.deepEqual(
      Object.fromEntries(['ca.key', 'server.key', 'hub.json', 'ca.pem', 'server.pem'].map((f) => [f, freshMode(f).toString(8)])),
      { 'ca.key': '600', 'server.key': '600', 'hub.json': '600', 'ca.pem': '644', 'server.pem': '644' });
    assert.equal(fs.statSync(fresh).mode & 0o777, 0o700);
  });

  it('a ca.key without its ca.pem stops the start (exit 1, naming both files)', async () => {
    const dir = path.join(tmp, 'no-cert');
    makeCa(dir, 30);
    fs.rmSync(path.join(dir, 'ca.pem'));
    const { code, stderr } = await startFails(dir);
    assert.equal(code, 1);
    assert.match(stderr, /^hubd: .*ca\.key exists but .*ca\.pem is missing/m);
  });

  it('a ca.key that does not match ca.pem stops the start (exit 1)', async () => {
    const dir = path.join(tmp, 'mismatch');
    makeCa(dir, 30);
    makeCa(path.join(tmp, 'other'), 30);
    fs.copyFileSync(path.join(tmp, 'other', 'ca.key'), path.join(dir, 'ca.key'));
    const { code, stderr } = await startFails(dir);
    assert.equal(code, 1);
    assert.match(stderr, /^hubd: .*ca\.key does not match .*ca\.pem/m);
  });

  it('an expired CA stops the start (exit 1, with its expiry date)', async () => {
    const dir = path.join(tmp, 'expired');
    makeCa(dir, 'expired');
    const { code, stderr } = await startFails(dir);
    assert.equal(code, 1);
    assert.match(stderr, /^hubd: .*ca\.pem expired on 2020-02-01 00:00:00 UTC/m);
  });

  it('a CA key readable by other users stops the start (exit 1); readable by its group: a warning', async () => {
    const dir = path.join(tmp, 'world');
    makeCa(dir, 365);
    fs.chmodSync(path.join(dir, 'ca.key'), 0o644);
    const { code, stderr } = await startFails(dir);
    assert.equal(code, 1);
    assert.match(stderr, /^hubd: .*ca\.key is accessible by other users \(mode 0044\): chmod 600/m);
    fs.chmodSync(path.join(dir, 'ca.key'), 0o640);
    const started = await startsOn(dir, 'tls-group-key');
    try {
      assert.match(started.output, /warn.*ca\.key is accessible by its group \(mode 0040\)/);
    } finally {
      await started.dispose();
    }
  });

  it('a CA that expires within 30 days: hubd starts and warns with the date', async () => {
    const dir = path.join(tmp, 'soon');
    makeCa(dir, 10);
    const started = await startsOn(dir, 'tls-soon');
    try {
      assert.match(started.output, /warn.*ca\.pem expires on \d{4}-\d\d-\d\d .*replace the CA before then/);
      const r = await tryTls(started.hostName, 443, { ca: fs.readFileSync(path.join(dir, 'ca.pem')) });
      assert.equal(r.ok, true, r.message);
    } finally {
      await started.dispose();
    }
  });

  it('a server.key that does not match server.pem, or that others can read, is replaced at start and clients connect', async () => {
    const dir = path.join(tmp, 'server-key');
    makeCa(dir, 365);
    const ca = fs.readFileSync(path.join(dir, 'ca.pem'));
    let started = await startsOn(dir, 'tls-server-key');
    await started.stop();
    makeCa(path.join(tmp, 'stray'), 30);
    fs.copyFileSync(path.join(tmp, 'stray', 'ca.key'), path.join(dir, 'server.key'));
    fs.chmodSync(path.join(dir, 'server.key'), 0o600);
    await started.start();
    try {
      assert.match(started.output, /issued server certificate .*\(server\.key does not match server\.pem\)/);
      assert.equal((await tryTls(started.hostName, 443, { ca })).ok, true);
      await started.stop();
      fs.chmodSync(path.join(dir, 'server.key'), 0o644);
      await started.start();
      assert.match(started.output, /issued server certificate .*\(server\.key is accessible by group or other users \(mode 0044\)\)/);
      assert.equal(fs.statSync(path.join(dir, 'server.key')).mode & 0o777, 0o600);
      assert.equal((await tryTls(started.hostName, 443, { ca })).ok, true);
    } finally {
      await started.dispose();
    }
  });
});
