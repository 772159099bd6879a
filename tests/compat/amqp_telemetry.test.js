'use strict';
// Device-to-cloud telemetry over AMQP (and AMQP over WebSockets) with the unmodified device SDK
// (azure-iot-device-amqp on rhea): CBS put-token, a sender link to /devices/<id>/messages/events,
// every message settled `accepted` only once durable. Read back with
// `hubctl monitor-events --from start --json`.
//
// SDK facts used (protocol/device.md §4): no SASL (plain "AMQP 0 1 0 0" header); Message.messageId
// and correlationId travel as AMQP message-id/correlation-id (as AMQP uuids when they look like
// UUIDs); userId is not sent; `to` is forced to the link address; application properties are
// AMQP application-properties; AmqpWs always dials wss://<HostName>:443/$iothub/websocket.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Registry } = require('azure-iothub');
const { Amqp, AmqpWs } = require('azure-iot-device-amqp');
const { startHub, hubctl } = require('./lib/hub');
const { sasToken } = require('./lib/util');
const {
  Message, createSasDevice, createModule, makeClient, openClient, closeQuietly, within, storedEvents, eventsOf,
  selfSignedCert, rootCa, signedCert, sha1Thumbprint,
} = require('./lib/device');

const COUNT = 200;

function appProperties(i) {
  return {
    seq: String(i),
    path: 'a/b/c',
    query: 'x=1&y=2',
    'spaced key': 'a value with spaces',
    unicode: 'température ✓ 日本語 🚀',
    percent: '100%',
  };
}

function telemetryMessage(tag, i) {
  const msg = new Message(JSON.stringify({ tag, i, text: 'héllo ✓' }));
  msg.messageId = `${tag}-${i}`;
  msg.correlationId = `corr-${tag}-${i}`;
  msg.contentType = 'application/json';
  msg.contentEncoding = 'utf-8';
  for (const [k, v] of Object.entries(appProperties(i))) msg.properties.add(k, v);
  return msg;
}

async function sendAllAtOnce(client, messages) {
  const results = await within(60_000, Promise.allSettled(messages.map((m) => client.sendEvent(m))),
                               `${messages.length} concurrent sendEvent`);
  const failed = results.map((r, i) => [r, i]).filter(([r]) => r.status === 'rejected');
  assert.equal(failed.length, 0,
               `${failed.length} of ${messages.length} sends failed; first (#${failed[0]?.[1]}): ` +
               `${failed[0]?.[0].reason?.constructor?.name}: ${failed[0]?.[0].reason?.message}`);
  return results.map((_, i) => i);
}

function assertStamped(e, { deviceId, moduleId, generationId, t0 }) {
  const sp = e.systemProperties;
  assert.equal(sp['iothub-connection-device-id'], deviceId, 'iothub-connection-device-id');
  if (moduleId) {
    assert.equal(sp['iothub-connection-module-id'], moduleId, 'iothub-connection-module-id');
  } else {
    assert.equal(sp['iothub-connection-module-id'], undefined, 'no module id on a device message');
  }
  const auth = JSON.parse(sp['iothub-connection-auth-method']);
  assert.equal(auth.scope, moduleId ? 'module' : 'device');
  assert.equal(auth.type, 'sas');
  assert.equal(auth.issuer, 'iothub');
  assert.equal(sp['iothub-connection-auth-generation-id'], generationId, 'generation id');
  assert.equal(sp['iothub-message-source'], 'Telemetry');
  const enqueued = Date.parse(sp['iothub-enqueuedtime']);
  assert.ok(enqueued >= t0 - 5000 && enqueued <= Date.now() + 5000, `enqueued time ${sp['iothub-enqueuedtime']}`);
}

function assertAllStoredInOrder(events, tag, acked, deviceId) {
  const byId = new Map();
  for (const e of events) {
    const mid = e.systemProperties['message-id'];
    byId.set(mid, (byId.get(mid) ?? 0) + 1);
  }
  const missing = acked.filter((i) => !byId.has(`${tag}-${i}`));
  assert.deepEqual(missing, [], `accepted but not stored: ${missing.length} (${missing.slice(0, 10).join(', ')}...)`);
  assert.deepEqual([...byId].filter(([, n]) => n !== 1), [], 'every message stored exactly once');
  assert.equal(events.length, acked.length, 'nothing else stored for this device');
  let lastI = -1;
  for (const e of events) {
    assert.equal(e.partition, events[0].partition, 'one device, one partition');
    const { i } = e.body;
    assert.ok(i > lastI, `per-device order: ${i} stored after ${lastI}`);
    lastI = i;
    assert.deepEqual(e.body, { tag, i, text: 'héllo ✓' }, 'JSON body');
    const sp = e.systemProperties;
    assert.equal(sp['message-id'], `${tag}-${i}`);
    assert.equal(sp['correlation-id'], `corr-${tag}-${i}`);
    assert.equal(sp['content-type'], 'application/json');
    assert.equal(sp['content-encoding'], 'utf-8');
    assert.equal(sp.to, `/devices/${deviceId}/messages/events`, 'the SDK sets `to` to the link address');
    assert.deepEqual(e.properties, appProperties(i), `application properties of #${i}`);
  }
}

describe('AMQP device-to-cloud telemetry', () => {
  let hub;
  let registry;
  let tmp;
  const pid = process.pid;

  before(async () => {
    hub = await startHub({ name: 'amqp-telemetry' });
    registry = Registry.fromConnectionString(hub.connectionString);
    tmp = fs.mkdtempSync(path.join(process.env.HUBD_TEST_TMP ?? os.tmpdir(), 'amqp-x509-'));
  });
  after(async () => {
    if (hub) await hub.dispose();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  for (const [name, Transport] of [['Amqp', Amqp], ['AmqpWs', AmqpWs]]) {
    it(`${name}: ${COUNT} events sent at once are each stored once, in order, with their properties`,
       { timeout: 90_000 }, async () => {
         const t0 = Date.now();
         const dev = await createSasDevice(hub, registry, `amqp-${name.toLowerCase()}-${pid}`);
         const client = await openClient(dev.connectionString, Transport);
         try {
           const tag = `${name}-${pid}`;
           const acked = await sendAllAtOnce(client, Array.from({ length: COUNT }, (_, i) => telemetryMessage(tag, i)));
           const events = eventsOf(await storedEvents(hub, { args: ['--device', dev.deviceId] }), dev.deviceId);
           assertAllStoredInOrder(events, tag, acked, dev.deviceId);
           for (const e of events) assertStamped(e, { deviceId: dev.deviceId, generationId: dev.generationId, t0 });
         } finally {
           await closeQuietly(client);
         }
       });
  }

  it('a module client: iothub-connection-module-id and the module scope are stamped', { timeout: 60_000 }, async () => {
    const t0 = Date.now();
    const dev = await createSasDevice(hub, registry, `amqp-mod-${pid}`);
    const mod = await createModule(hub, registry, dev.deviceId, 'amqp-module');
    const client = await openClient(mod.connectionString, Amqp, { module: true });
    try {
      await within(30_000, client.sendEvent(telemetryMessage('module', 0)), 'module sendEvent');
      const events = eventsOf(await storedEvents(hub, { args: ['--device', dev.deviceId] }), dev.deviceId);
      assert.equal(events.length, 1, JSON.stringify(events));
      assertStamped(events[0], { deviceId: dev.deviceId, moduleId: 'amqp-module', generationId: mod.module.generationId, t0 });
      assert.equal(events[0].systemProperties.to, `/devices/${dev.deviceId}/modules/amqp-module/messages/events`);
      assert.deepEqual(events[0].properties, appProperties(0));
    } finally {
      await closeQuietly(client);
    }
  });

  it('the registry shows the device Connected while it has a link, Disconnected after', { timeout: 60_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `amqp-state-${pid}`);
    const client = await openClient(dev.connectionString, Amqp);
    try {
      await within(30_000, client.sendEvent(new Message('hello')), 'sendEvent');
      const { responseBody: during } = await registry.get(dev.deviceId);
      assert.equal(during.connectionState, 'Connected');
    } finally {
      await closeQuietly(client);
    }
    // The detach runs after the connection ends: poll briefly.
    let state;
    for (let i = 0; i < 50; i++) {
      state = (await registry.get(dev.deviceId)).responseBody.connectionState;
      if (state === 'Disconnected') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(state, 'Disconnected');
  });

  it('token renewal on the same CBS links keeps the link alive past the first token', { timeout: 60_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `amqp-renew-${pid}`);
    const client = await makeClient(dev.connectionString, Amqp);
    // 6 s tokens renewed 4 s before they expire: a put-token every 2 s on the open CBS links.
    await client.setOptions({ tokenRenewal: { tokenValidTimeInSeconds: 6, tokenRenewalMarginInSeconds: 4 } });
    const disconnects = [];
    client.on('disconnect', (e) => disconnects.push(e?.message ?? 'disconnect'));
    try {
      await within(20_000, client.open(), 'open');
      const t0 = Date.now();
      let sent = 0;
      while (Date.now() - t0 < 10_000) {
        await within(10_000, client.sendEvent(new Message(`renew-${sent}`)), `sendEvent #${sent}`);
        sent++;
        await new Promise((r) => setTimeout(r, 500));
      }
      assert.deepEqual(disconnects, []);
      assert.deepEqual(client.errors, []);
      // The SDK would reconnect quietly; the hub's log says whether a grant ever lapsed.
      assert.ok(!hub.output.includes(`devices%2F${dev.deviceId}' expired`), 'no token lapsed before its renewal');
      const events = eventsOf(await storedEvents(hub, { args: ['--device', dev.deviceId] }), dev.deviceId);
      assert.equal(events.length, sent);
    } finally {
      await closeQuietly(client);
    }
  });

  it('a UUID message id (an AMQP uuid on the wire) is stored as its text; binary bodies survive',
     { timeout: 60_000 }, async () => {
       const dev = await createSasDevice(hub, registry, `amqp-ids-${pid}`);
       const client = await openClient(dev.connectionString, Amqp);
       try {
         const id = crypto.randomUUID();
         const m = new Message('uuid');
         m.messageId = id;
         await within(30_000, client.sendEvent(m), 'sendEvent (uuid id)');
         const binary = new Message(Buffer.from([0xff, 0x00, 0x80, 0x41]));
         binary.messageId = 'binary';
         await within(30_000, client.sendEvent(binary), 'sendEvent (binary)');
         const events = eventsOf(await storedEvents(hub, { args: ['--device', dev.deviceId] }), dev.deviceId);
         assert.equal(events.length, 2, JSON.stringify(events));
         assert.equal(events[0].systemProperties['message-id'], id);
         assert.equal(events[1].bodyEncoding, 'base64');
         assert.deepEqual(Buffer.from(events[1].body, 'base64'), Buffer.from([0xff, 0x00, 0x80, 0x41]));
       } finally {
         await closeQuietly(client);
       }
     });

  it('a message over 256 KB is refused with MessageTooLargeError; the connection goes on', { timeout: 60_000 },
     async () => {
       const dev = await createSasDevice(hub, registry, `amqp-big-${pid}`);
       const client = await openClient(dev.connectionString, Amqp);
       try {
         await assert.rejects(within(30_000, client.sendEvent(new Message('x'.repeat(300 * 1024))), 'big sendEvent'),
                              (err) => err.constructor.name === 'MessageTooLargeError' || assert.fail(`${err.constructor.name}: ${err.message}`));
         await within(30_000, client.sendEvent(telemetryMessage('after-big', 0)), 'sendEvent after the refusal');
         const events = eventsOf(await storedEvents(hub, { args: ['--device', dev.deviceId] }), dev.deviceId);
         assert.equal(events.length, 1, 'only the small message is stored');
       } finally {
         await closeQuietly(client);
       }
     });

  for (const [name, Transport] of [['Amqp', Amqp], ['AmqpWs', AmqpWs]]) {
    it(`${name}: a wrong key is refused at open with UnauthorizedError`, { timeout: 60_000 }, async () => {
      const dev = await createSasDevice(hub, registry, `amqp-badkey-${name.toLowerCase()}-${pid}`);
      const wrongKey = crypto.randomBytes(32).toString('base64');
      const cs = `HostName=${hub.hostName};DeviceId=${dev.deviceId};SharedAccessKey=${wrongKey}`;
      const client = await makeClient(cs, Transport);
      try {
        await assert.rejects(within(30_000, client.open(), 'open with a wrong key'),
                             (err) => err.constructor.name === 'UnauthorizedError' || assert.fail(`${err.constructor.name}: ${err.message}`));
      } finally {
        await closeQuietly(client);
      }
      const events = eventsOf(await storedEvents(hub, { args: ['--device', dev.deviceId] }), dev.deviceId);
      assert.equal(events.length, 0);
    });
  }

  it("a token signed with another device's key, or an expired one, is refused", { timeout: 60_000 }, async () => {
    const a = await createSasDevice(hub, registry, `amqp-a-${pid}`);
    const b = await createSasDevice(hub, registry, `amqp-b-${pid}`);
    const keyA = a.device.authentication.symmetricKey.primaryKey;
    const expiry = Math.floor(Date.now() / 1000) + 3600;
    // A token for device b signed with device a's key. (The SDK takes the device id from the
    // token's sr, so a token for a always connects as a.)
    const forged = sasToken({ resource: `${hub.hostName}/devices/${b.deviceId}`, key: keyA, expiry });
    const expired = sasToken({ resource: `${hub.hostName}/devices/${a.deviceId}`, key: keyA, expiry: 1_000_000_000 });
    for (const [what, cs] of [
      ["another device's key", `HostName=${hub.hostName};DeviceId=${b.deviceId};SharedAccessSignature=${forged}`],
      ['expired', `HostName=${hub.hostName};DeviceId=${a.deviceId};SharedAccessSignature=${expired}`],
    ]) {
      const client = await makeClient(cs, Amqp);
      try {
        await assert.rejects(within(30_000, client.open(), `open (${what})`),
                             (err) => err.constructor.name === 'UnauthorizedError' || assert.fail(`${what}: ${err.constructor.name}: ${err.message}`));
      } finally {
        await closeQuietly(client);
      }
    }
  });

  // X.509 over AMQP: the certificate goes in the TLS handshake, no CBS; the links are attached
  // directly (device.md §4.1).
  it('a self-signed X.509 device sends over Amqp; a wrong certificate is refused', { timeout: 60_000 }, async () => {
    const t0 = Date.now();
    const deviceId = `amqp-x509-self-${pid}`;
    const { cert, key } = selfSignedCert(tmp, deviceId);
    const thumbprint = sha1Thumbprint(cert);
    const { responseBody: device } = await registry.create({
      deviceId,
      authentication: { x509Thumbprint: { primaryThumbprint: thumbprint, secondaryThumbprint: thumbprint } },
    });
    const cs = `HostName=${hub.hostName};DeviceId=${deviceId};x509=true`;
    const client = await openClient(cs, Amqp, { cert, key });
    try {
      await within(30_000, client.sendEvent(telemetryMessage('x509-self', 0)), 'sendEvent');
      const events = eventsOf(await storedEvents(hub, { args: ['--device', deviceId] }), deviceId);
      assert.equal(events.length, 1, JSON.stringify(events));
      const sp = events[0].systemProperties;
      assert.equal(JSON.parse(sp['iothub-connection-auth-method']).type, 'x509');
      assert.equal(sp['iothub-connection-auth-generation-id'], device.generationId);
      assert.ok(Date.parse(sp['iothub-enqueuedtime']) >= t0 - 5000);
    } finally {
      await closeQuietly(client);
    }
    // Another certificate for the same device id: its link is refused.
    const other = selfSignedCert(tmp, `${deviceId}-other`);
    const intruder = await makeClient(cs, Amqp, { cert: other.cert, key: other.key });
    try {
      await intruder.open().catch(() => {});
      await assert.rejects(within(30_000, intruder.sendEvent(new Message('no')), 'sendEvent with a wrong certificate'),
                           (err) => err.constructor.name === 'UnauthorizedError' || assert.fail(`${err.constructor.name}: ${err.message}`));
    } finally {
      await closeQuietly(intruder);
    }
  });

  it('a CA-signed X.509 device sends over Amqp once its CA is verified', { timeout: 60_000 }, async () => {
    const deviceId = `amqp-x509-ca-${pid}`;
    const ca = rootCa(tmp, `AMQP Test Root ${pid}`);
    const upload = await hubctl(hub, 'ca', 'upload', `amqp-root-${pid}`, ca.certFile, '--verified');
    assert.equal(upload.code, 0, upload.stderr);
    const { responseBody: device } = await registry.create({ deviceId, authentication: { type: 'certificateAuthority' } });
    const leaf = signedCert(tmp, ca, deviceId);
    const client = await openClient(`HostName=${hub.hostName};DeviceId=${deviceId};x509=true`, Amqp,
                                    { cert: leaf.cert, key: leaf.key });
    try {
      await within(30_000, client.sendEvent(telemetryMessage('x509-ca', 0)), 'sendEvent');
      const events = eventsOf(await storedEvents(hub, { args: ['--device', deviceId] }), deviceId);
      assert.equal(events.length, 1, JSON.stringify(events));
      assert.equal(events[0].systemProperties['iothub-connection-auth-generation-id'], device.generationId);
    } finally {
      await closeQuietly(client);
    }
  });
});
