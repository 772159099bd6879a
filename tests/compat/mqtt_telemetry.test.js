'use strict';
// Device-to-cloud telemetry over MQTT (and MQTT over WebSockets) with the unmodified device SDK:
// every message the hub acknowledges (PUBACK) is stored exactly once, in order per device, with
// the properties the device set and the ones the hub stamps. Read back with
// `hubctl monitor-events --from start --json`.
//
// SDK facts used (protocol/device.md §3.2): Message.messageId/correlationId/userId/to/contentType/
// contentEncoding/expiryTimeUtc travel as $.mid/$.cid/$.uid/$.to/$.ct/$.ce/$.exp in the topic's
// property bag; application properties are encodeURIComponent'ed key=value pairs.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Registry } = require('azure-iothub');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { startHub } = require('./lib/hub');
const { request, ownerToken, API } = require('./lib/util');
const {
  Message, createSasDevice, createModule, makeClient, openClient, closeQuietly, within, storedEvents, eventsOf,
  selfSignedCert, rootCa, signedCert, sha1Thumbprint,
} = require('./lib/device');

const COUNT = 200;

// Application properties with characters the topic's property bag must percent-encode.
function appProperties(i) {
  return {
    seq: String(i),
    path: 'a/b/c',
    query: 'x=1&y=2',
    'spaced key': 'a value with spaces',
    unicode: 'température ✓ 日本語 🚀',
    percent: '100%',
    plus: 'a+b stays a plus',
    'slash/key&amp': 'v',
  };
}

function telemetryMessage(tag, i) {
  const msg = new Message(JSON.stringify({ tag, i, text: 'héllo ✓' }));
  msg.messageId = `${tag}-${i}`;
  msg.correlationId = `corr-${tag}-${i}`;
  msg.contentType = 'application/json';
  msg.contentEncoding = 'utf-8';
  msg.userId = 'telemetry-user';
  for (const [k, v] of Object.entries(appProperties(i))) msg.properties.add(k, v);
  return msg;
}

// Sends all messages at once; resolves to the indexes the hub acknowledged. Fails the test with
// the first error if any send failed.
async function sendAllAtOnce(client, messages) {
  const results = await within(60_000, Promise.allSettled(messages.map((m) => client.sendEvent(m))),
                               `${messages.length} concurrent sendEvent`);
  const failed = results.map((r, i) => [r, i]).filter(([r]) => r.status === 'rejected');
  assert.equal(failed.length, 0,
               `${failed.length} of ${messages.length} sends failed; first (#${failed[0]?.[1]}): ` +
               `${failed[0]?.[0].reason?.constructor?.name}: ${failed[0]?.[0].reason?.message}`);
  return results.map((_, i) => i);
}

// The hub-stamped properties of one event.
function assertStamped(e, { deviceId, moduleId, generationId, authType, t0 }) {
  const sp = e.systemProperties;
  assert.equal(sp['iothub-connection-device-id'], deviceId, 'iothub-connection-device-id');
  if (moduleId) {
    assert.equal(sp['iothub-connection-module-id'], moduleId, 'iothub-connection-module-id');
    assert.equal(e.moduleId, moduleId);
  } else {
    assert.equal(sp['iothub-connection-module-id'], undefined, 'no module id on a device message');
    assert.equal(e.moduleId, null);
  }
  const auth = JSON.parse(sp['iothub-connection-auth-method']);
  assert.equal(auth.scope, moduleId ? 'module' : 'device', `auth scope in ${sp['iothub-connection-auth-method']}`);
  assert.equal(auth.type, authType, `auth type in ${sp['iothub-connection-auth-method']}`);
  assert.equal(auth.issuer, 'iothub');
  assert.equal(sp['iothub-connection-auth-generation-id'], generationId, 'generation id');
  assert.equal(sp['iothub-message-source'], 'Telemetry');
  const enqueued = Date.parse(sp['iothub-enqueuedtime']);
  assert.ok(Number.isFinite(enqueued), `iothub-enqueuedtime ${sp['iothub-enqueuedtime']}`);
  assert.equal(enqueued, Date.parse(e.enqueuedTime), 'enqueuedTime = iothub-enqueuedtime');
  assert.ok(enqueued >= t0 - 5000 && enqueued <= Date.now() + 5000,
            `enqueued time ${sp['iothub-enqueuedtime']} within the test (started ${new Date(t0).toISOString()})`);
}

// Each acknowledged message exactly once, in order, with its properties.
function assertAllStoredInOrder(events, tag, acked) {
  const byId = new Map();
  for (const e of events) {
    const mid = e.systemProperties['message-id'];
    byId.set(mid, (byId.get(mid) ?? 0) + 1);
  }
  const missing = acked.filter((i) => !byId.has(`${tag}-${i}`));
  assert.deepEqual(missing, [], `acknowledged but not stored: ${missing.length} (${missing.slice(0, 10).join(', ')}...)`);
  const repeated = [...byId].filter(([, n]) => n !== 1);
  assert.deepEqual(repeated, [], 'every message stored exactly once');
  assert.equal(events.length, acked.length, 'nothing else stored for this device');

  let lastSeq = -1;
  let lastI = -1;
  for (const e of events) {
    assert.equal(e.partition, events[0].partition, 'one device, one partition');
    assert.ok(e.sequenceNumber > lastSeq, 'sequence numbers grow');
    lastSeq = e.sequenceNumber;
    assert.equal(typeof e.offset, 'string');
    const i = e.body.i;
    assert.ok(i > lastI, `per-device order: ${i} stored after ${lastI}`);
    lastI = i;
    assert.deepEqual(e.body, { tag, i, text: 'héllo ✓' }, 'JSON body');
    const sp = e.systemProperties;
    assert.equal(sp['message-id'], `${tag}-${i}`);
    assert.equal(sp['correlation-id'], `corr-${tag}-${i}`);
    assert.equal(sp['content-type'], 'application/json');
    assert.equal(sp['content-encoding'], 'utf-8');
    assert.equal(sp['user-id'], 'telemetry-user');
    assert.deepEqual(e.properties, appProperties(i), `application properties of #${i}`);
  }
}

describe('MQTT device-to-cloud telemetry', () => {
  let hub;
  let registry;
  let tmp;
  const pid = process.pid;

  before(async () => {
    hub = await startHub({ name: 'mqtt-telemetry' });
    registry = Registry.fromConnectionString(hub.connectionString);
    tmp = fs.mkdtempSync(path.join(process.env.HUBD_TEST_TMP ?? os.tmpdir(), 'x509-'));
  });
  after(async () => {
    if (hub) await hub.dispose();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  for (const [name, Transport] of [['Mqtt', Mqtt], ['MqttWs', MqttWs]]) {
    it(`${name}: ${COUNT} events sent at once are each stored once, in order, with their properties`,
       { timeout: 90_000 }, async () => {
         const t0 = Date.now();
         const dev = await createSasDevice(hub, registry, `tel-${name.toLowerCase()}-${pid}`);
         const client = await openClient(dev.connectionString, Transport);
         let acked;
         try {
           const tag = `${name}-${pid}`;
           const messages = Array.from({ length: COUNT }, (_, i) => telemetryMessage(tag, i));
           acked = await sendAllAtOnce(client, messages);
           const events = eventsOf(await storedEvents(hub, { args: ['--device', dev.deviceId] }), dev.deviceId);
           assertAllStoredInOrder(events, tag, acked);
           for (const e of events) {
             assertStamped(e, { deviceId: dev.deviceId, generationId: dev.generationId, authType: 'sas', t0 });
           }
         } finally {
           await closeQuietly(client);
         }
       });
  }

  it('a module client: iothub-connection-module-id and the module scope are stamped', { timeout: 60_000 }, async () => {
    const t0 = Date.now();
    const dev = await createSasDevice(hub, registry, `tel-mod-${pid}`);
    const mod = await createModule(hub, registry, dev.deviceId, 'telemetry-module');
    const client = await openClient(mod.connectionString, Mqtt, { module: true });
    try {
      const msg = telemetryMessage('module', 0);
      await within(30_000, client.sendEvent(msg), 'module sendEvent');
      const events = eventsOf(await storedEvents(hub, { args: ['--device', dev.deviceId] }), dev.deviceId);
      assert.equal(events.length, 1, JSON.stringify(events));
      assertStamped(events[0], { deviceId: dev.deviceId, moduleId: 'telemetry-module',
                                 generationId: mod.module.generationId, authType: 'sas', t0 });
      assert.deepEqual(events[0].properties, appProperties(0));
      // The module filter finds it; a filter on another module does not.
      const filtered = await storedEvents(hub, { args: ['--device', dev.deviceId, '--module', 'telemetry-module'] });
      assert.equal(filtered.length, 1);
      assert.equal((await storedEvents(hub, { args: ['--device', dev.deviceId, '--module', 'other'] })).length, 0);
    } finally {
      await closeQuietly(client);
    }
  });

  it('a Plug and Play device: dt-dataschema from its model id, dt-subject from the component', { timeout: 60_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `tel-pnp-${pid}`);
    const modelId = 'dtmi:com:example:TemperatureController;2';
    const client = await makeClient(dev.connectionString, Mqtt);
    try {
      await client.setOptions({ modelId });
      await within(20_000, client.open(), 'open()');
      const msg = new Message(JSON.stringify({ temperature: 22 }));
      msg.contentType = 'application/json';
      msg.contentEncoding = 'utf-8';
      msg.properties.add('dt-subject', 'thermostat1');   // the SDK sends it as $.sub
      msg.properties.add('empty', '');
      await within(20_000, client.sendEvent(msg), 'sendEvent');
    } finally {
      await closeQuietly(client);
    }
    const [e] = eventsOf(await storedEvents(hub, { args: ['--device', dev.deviceId] }), dev.deviceId);
    assert.ok(e, 'stored');
    assert.equal(e.systemProperties['dt-dataschema'], modelId, JSON.stringify(e.systemProperties));
    assert.equal(e.systemProperties['dt-subject'], 'thermostat1', JSON.stringify(e.systemProperties));
    assert.deepEqual(e.properties, { empty: '' }, 'the component is a system property; an empty value is kept');
  });

  it('a self-signed X.509 device sends; binary bodies come back base64', { timeout: 60_000 }, async () => {
    const t0 = Date.now();
    const deviceId = `tel-x509-self-${pid}`;
    const { cert, key } = selfSignedCert(tmp, deviceId);
    const thumbprint = sha1Thumbprint(cert);
    const { responseBody: device } = await registry.create({
      deviceId,
      authentication: { x509Thumbprint: { primaryThumbprint: thumbprint, secondaryThumbprint: thumbprint } },
    });
    assert.equal(device.authentication.type, 'selfSigned');
    const client = await openClient(`HostName=${hub.hostName};DeviceId=${deviceId};x509=true`, Mqtt, { cert, key });
    try {
      await within(30_000, client.sendEvent(telemetryMessage('self', 0)), 'sendEvent');
      const binary = new Message(Buffer.from([0xff, 0x00, 0x80, 0x41]));
      binary.messageId = 'binary';
      await within(30_000, client.sendEvent(binary), 'sendEvent (binary)');
      const events = eventsOf(await storedEvents(hub, { args: ['--device', deviceId] }), deviceId);
      assert.equal(events.length, 2, JSON.stringify(events));
      for (const e of events) assertStamped(e, { deviceId, generationId: device.generationId, authType: 'x509', t0 });
      assert.deepEqual(events[0].properties, appProperties(0));
      assert.equal(events[1].systemProperties['message-id'], 'binary');
      assert.equal(events[1].bodyEncoding, 'base64');
      assert.deepEqual(Buffer.from(events[1].body, 'base64'), Buffer.from([0xff, 0x00, 0x80, 0x41]));
    } finally {
      await closeQuietly(client);
    }
  });

  it('a CA-signed X.509 device sends once its CA is uploaded and verified', { timeout: 60_000 }, async () => {
    const t0 = Date.now();
    const deviceId = `tel-x509-ca-${pid}`;
    const ca = rootCa(tmp, `Telemetry Test Root ${pid}`);
    await uploadAndVerifyCa(hub, tmp, ca, `telemetry-root-${pid}`);
    const { responseBody: device } = await registry.create({ deviceId, authentication: { type: 'certificateAuthority' } });
    assert.equal(device.authentication.type, 'certificateAuthority');
    const leaf = signedCert(tmp, ca, deviceId);
    const client = await openClient(`HostName=${hub.hostName};DeviceId=${deviceId};x509=true`, Mqtt,
                                    { cert: leaf.cert, key: leaf.key });
    try {
      await within(30_000, client.sendEvent(telemetryMessage('ca', 0)), 'sendEvent');
      const events = eventsOf(await storedEvents(hub, { args: ['--device', deviceId] }), deviceId);
      assert.equal(events.length, 1, JSON.stringify(events));
      assertStamped(events[0], { deviceId, generationId: device.generationId, authType: 'x509', t0 });
      assert.deepEqual(events[0].properties, appProperties(0));
    } finally {
      await closeQuietly(client);
    }
  });
});

// IoT Hub's Certificates API, as hubd serves it (ARM shapes: CertificateDescription,
// CertificateWithNonceDescription, CertificateVerificationDescription): upload, ask for a
// verification code, prove possession with a certificate whose CN is the code.
async function uploadAndVerifyCa(hub, dir, ca, name) {
  const auth = () => ({ Authorization: ownerToken(hub.connectionString) });
  const base = `/certificates/${encodeURIComponent(name)}`;
  const put = await request({ host: hub.hostName, method: 'PUT', path: `${base}?${API}`, headers: auth(),
                              body: { properties: { certificate: ca.cert } } });
  assert.ok(put.status === 200 || put.status === 201, `PUT ${base}: ${put.status} ${put.body}`);
  assert.equal(put.json.properties.isVerified, false);
  const code = await request({ host: hub.hostName, method: 'POST', path: `${base}/generateVerificationCode?${API}`,
                               headers: { ...auth(), 'If-Match': put.json.etag } });
  assert.equal(code.status, 200, `generateVerificationCode: ${code.status} ${code.body}`);
  const nonce = code.json.properties.verificationCode;
  assert.ok(nonce, code.body);
  const proof = signedCert(dir, ca, nonce);
  const verify = await request({ host: hub.hostName, method: 'POST', path: `${base}/verify?${API}`,
                                 headers: { ...auth(), 'If-Match': code.json.etag },
                                 body: { certificate: proof.cert } });
  assert.equal(verify.status, 200, `verify: ${verify.status} ${verify.body}`);
  assert.equal(verify.json.properties.isVerified, true);
}
