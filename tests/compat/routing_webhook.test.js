'use strict';
// Webhook endpoints (hubd's own routing endpoint type, issue #7 item 4): telemetry routed by an
// application property is POSTed to an HTTPS server (Node's https with a certificate from a test
// CA that the endpoint's caFile names) as a JSON array of storage-shaped records, with the
// endpoint's headers; 5xx answers are retried until the server takes the batch; a 400 is not
// retried (skipped as invalid); messages acknowledged to the device while the server is down,
// then hubd killed with SIGKILL and restarted, arrive once the server is back (at least once,
// the cursor is in hubd's database); `hubctl monitor-events --endpoint` reads the endpoint's log.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const https = require('node:https');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');
const { Registry } = require('azure-iothub');
const { Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { startHub } = require('./lib/hub');
const { createSasDevice, openClient, within, rootCa, storedEvents } = require('./lib/device');

function openssl(args, cwd) {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
}

// A server certificate for 127.0.0.1 signed by a fresh test CA.
function serverCert(dir) {
  const ca = rootCa(dir, 'webhook-test-ca');
  const base = path.join(dir, 'webhook-server');
  fs.writeFileSync(`${base}.ext`, 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n' +
                                  'extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n');
  openssl(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
           '-keyout', `${base}.key`, '-out', `${base}.csr`, '-subj', '/CN=127.0.0.1']);
  openssl(['x509', '-req', '-in', `${base}.csr`, '-CA', ca.certFile, '-CAkey', ca.keyFile, '-CAcreateserial',
           '-out', `${base}.pem`, '-days', '2', '-extfile', `${base}.ext`]);
  return { ca, cert: fs.readFileSync(`${base}.pem`), key: fs.readFileSync(`${base}.key`) };
}

// The webhook receiver: records every request; `answer(req, body)` picks the status.
class Receiver {
  constructor(tls) {
    this.tls = tls;
    this.requests = [];  // {status, headers, url, records}
    this.answer = () => 200;
    this.server = null;
    this.port = 0;
    this.sockets = new Set();
  }

  async listen(port = 0) {
    this.server = https.createServer({ cert: this.tls.cert, key: this.tls.key }, (req, res) => {
      let text = '';
      req.setEncoding('utf8');
      req.on('data', (c) => { text += c; });
      req.on('end', () => {
        let records = null;
        try { records = JSON.parse(text); } catch { /* recorded as null */ }
        const status = this.answer(req, records);
        this.requests.push({ status, headers: req.headers, url: req.url, method: req.method, records });
        res.writeHead(status, { 'content-type': 'text/plain' });
        res.end(status < 300 ? 'ok' : 'no');
      });
    });
    this.server.on('connection', (s) => { this.sockets.add(s); s.on('close', () => this.sockets.delete(s)); });
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', resolve);
    });
    this.port = this.server.address().port;
  }

  async close() {
    if (!this.server) return;
    const closed = new Promise((resolve) => this.server.close(resolve));
    for (const s of this.sockets) s.destroy();
    await closed;
    this.server = null;
  }

  // Records of requests answered 2xx, by the body's id.
  delivered() {
    return this.requests.filter((r) => r.status < 300).flatMap((r) => r.records ?? []);
  }

  deliveredIds() {
    return this.delivered().map((r) => r.Body?.id);
  }

  async until(pred, ms, what) {
    const end = Date.now() + ms;
    while (!pred()) {
      if (Date.now() > end) assert.fail(`timed out waiting for ${what}; requests: ${JSON.stringify(this.requests.map((r) => [r.status, r.records?.map((x) => x.Body?.id)]))}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

describe('routing: webhook endpoint', { timeout: 60_000 }, () => {
  let hub;
  let registry;
  let client;
  let receiver;
  let device;
  let dir;
  const pid = process.pid;

  async function send(id, props = { dest: 'hook' }) {
    const m = new Message(JSON.stringify({ id }));
    m.contentType = 'application/json';
    m.contentEncoding = 'utf-8';
    m.messageId = `msg-${id}`;
    for (const [k, v] of Object.entries(props)) m.properties.add(k, v);
    await within(15_000, client.sendEvent(m), 'sendEvent');
  }

  before(async () => {
    dir = fs.mkdtempSync(path.join(process.env.HUBD_TEST_TMP ?? os.tmpdir(), 'webhook-'));
    receiver = new Receiver(serverCert(dir));
    await receiver.listen();
    const routing = {
      endpoints: {
        webhooks: [{
          name: 'hook', url: `https://127.0.0.1:${receiver.port}/ingest?code=42`, batchSize: 5,
          headers: { 'x-api-key': 'test-key' }, caFile: path.relative(dir, receiver.tls.ca.certFile),
        }],
      },
      routes: [{ name: 'to-hook', source: 'DeviceMessages', condition: "dest = 'hook'", endpointNames: ['hook'], isEnabled: true }],
      fallbackRoute: { name: '$fallback', source: 'DeviceMessages', condition: 'true', endpointNames: ['events'], isEnabled: true },
    };
    const file = path.join(dir, 'routing.json');  // caFile is relative to this folder
    fs.writeFileSync(file, JSON.stringify(routing, null, 2));
    hub = await startHub({ name: 'routing-webhook', args: ['--routing', file] });
    registry = Registry.fromConnectionString(hub.connectionString);
    device = await createSasDevice(hub, registry, `hook-dev-${pid}`);
    client = await openClient(device.connectionString, Mqtt);
  });
  after(async () => {
    if (client) await client.close().catch(() => {});
    if (hub) await hub.dispose();
    if (receiver) await receiver.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('POSTs routed messages with body and properties, retrying 5xx answers', async () => {
    let failures = 3;
    receiver.answer = () => (failures-- > 0 ? 500 : 200);
    await send('other', { dest: 'elsewhere' });
    await send('a1');
    await send('a2');
    await send('a3');
    await receiver.until(() => ['a1', 'a2', 'a3'].every((id) => receiver.deliveredIds().includes(id)), 20_000, 'a1..a3');
    assert.ok(receiver.requests.filter((r) => r.status === 500).length === 3, 'the 500 answers were retried');
    assert.ok(!receiver.deliveredIds().includes('other'), 'an unrouted message is not posted');
    const ids = receiver.deliveredIds();
    assert.deepEqual(ids.filter((id) => id.startsWith('a')), ['a1', 'a2', 'a3'], 'in order');
    const req = receiver.requests.find((r) => r.status === 200);
    assert.equal(req.method, 'POST');
    assert.equal(req.url, '/ingest?code=42');
    assert.equal(req.headers['x-api-key'], 'test-key');
    assert.match(req.headers['content-type'], /^application\/json/);
    assert.equal(req.headers['x-hubd-endpoint'], 'hook');
    assert.match(req.headers['x-hubd-sequence'], /^\d+-\d+$/);
    const rec = receiver.delivered().find((r) => r.Body?.id === 'a1');
    assert.deepEqual(rec.Body, { id: 'a1' });
    assert.equal(rec.Properties.dest, 'hook');
    assert.equal(rec.SystemProperties.connectionDeviceId, device.deviceId);
    assert.equal(rec.SystemProperties.messageId, 'msg-a1');
    assert.equal(rec.SystemProperties.contentType, 'application/json');
    assert.match(rec.EnqueuedTimeUtc, /Z$/);

    // The endpoint's log, read with hubctl.
    const logged = await storedEvents(hub, { args: ['--endpoint', 'hook'] });
    assert.deepEqual(logged.map((e) => e.body?.id), ['a1', 'a2', 'a3']);
    const builtin = await storedEvents(hub);
    assert.deepEqual(builtin.map((e) => e.body?.id), ['other'], 'the fallback route took the unrouted message');
  });

  it('does not retry a 400 answer (skipped as invalid)', async () => {
    receiver.answer = (req, records) => ((records ?? []).some((r) => r.Body?.id === 'bad') ? 400 : 200);
    await send('bad');
    await receiver.until(() => receiver.requests.some((r) => r.status === 400), 10_000, 'the 400 answer');
    await send('b1');
    await receiver.until(() => receiver.deliveredIds().includes('b1'), 10_000, 'b1');
    await new Promise((r) => setTimeout(r, 1500));  // a retry would come after 250 ms
    assert.equal(receiver.requests.filter((r) => r.status === 400).length, 1, 'sent once');
    assert.ok(!receiver.deliveredIds().includes('bad'));
    assert.match(hub.output, /webhook 'hook': HTTP 400 \(non-transient rejection\)/);
  });

  it('delivers messages acknowledged before a SIGKILL while the receiver was down', async () => {
    receiver.answer = () => 200;
    const port = receiver.port;
    await receiver.close();
    await send('k1');
    await send('k2');
    await send('k3');  // acknowledged: durable in the endpoint's log
    await new Promise((r) => setTimeout(r, 800));  // some failed attempts
    assert.match(hub.output, /webhook 'hook': POST failed/);
    await client.close().catch(() => {});
    client = null;
    const killed = await hub.kill9();
    assert.equal(killed.signal, 'SIGKILL');
    await hub.start();
    await receiver.listen(port);
    await receiver.until(() => ['k1', 'k2', 'k3'].every((id) => receiver.deliveredIds().includes(id)), 20_000, 'k1..k3');
    // What was delivered before the kill is not sent again (the cursor survived).
    assert.ok(!receiver.deliveredIds().slice(-3).includes('a1'));
    assert.equal(receiver.deliveredIds().filter((id) => id === 'a1').length, 1);
  });
});
