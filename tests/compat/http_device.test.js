'use strict';
// The HTTPS device API (protocol/device.md §5) with the official device SDK's Http transport
// (azure-iot-device-http 1.14.4): telemetry, single and batch, read back with @azure/event-hubs'
// EventHubConsumerClient from the Event Hubs-compatible endpoint; IoT Hub's errors as the SDK
// types them; X.509 devices (the certificate in the TLS handshake, no Authorization header);
// cloud-to-device messages sent with azure-iothub's Client (AMQP) and received by polling, then
// completed, rejected and abandoned, with the matching feedback records; the service's purge of a
// device's queue through the SDK's generated REST client.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { EventHubConsumerClient, earliestEventPosition } = require('@azure/event-hubs');
const { Registry, Client: ServiceClient, IoTHubTokenCredentials } = require('azure-iothub');
const { IotHubGatewayServiceAPIs } = require('azure-iothub/dist/pl/iotHubGatewayServiceAPIs');
const { Client, Message } = require('azure-iot-device');
const { Http } = require('azure-iot-device-http');
const { errors } = require('azure-iot-common');
const { startHub, hubctl } = require('./lib/hub');
const { rejectsWith, request, sasToken } = require('./lib/util');
const {
  createSasDevice, createModule, openClient, closeQuietly, within, selfSignedCert, rootCa, signedCert, sha1Thumbprint,
} = require('./lib/device');

const pid = process.pid;

// Reads events from every partition from the start until `wanted` events satisfy `keep`, or
// `timeoutMs` passes; resolves to those events.
async function readEvents(consumer, keep, wanted, timeoutMs = 30_000) {
  const events = [];
  let done;
  const finished = new Promise((resolve) => { done = resolve; });
  const sub = consumer.subscribe({
    processEvents: async (batch, context) => {
      for (const e of batch) if (keep(e)) events.push({ ...e, partitionId: context.partitionId });
      if (events.length >= wanted) done();
    },
    processError: async () => {},
  }, { startPosition: earliestEventPosition, maxWaitTimeInSeconds: 1 });
  const timer = setTimeout(done, timeoutMs);
  await finished;
  clearTimeout(timer);
  await sub.close();
  return events;
}

const fromDevice = (deviceId) => (e) => e.systemProperties?.['iothub-connection-device-id'] === deviceId;

// An X.509 device client over Http. setOptions({cert, key}) takes effect but its callback never
// fires on the Http transport (device.md §5.2), so it is not awaited.
function x509Client(hub, deviceId, cert, key) {
  const client = Client.fromConnectionString(`HostName=${hub.hostName};DeviceId=${deviceId};x509=true`, Http);
  client.on('error', () => {});
  client.setOptions({ cert, key }).catch(() => {});
  return client;
}

describe('HTTPS device API (azure-iot-device-http)', () => {
  let hub;
  let registry;
  let consumer;
  let tmp;

  before(async () => {
    hub = await startHub({ name: 'http-device' });
    registry = Registry.fromConnectionString(hub.connectionString);
    const r = await hubctl(hub, 'connection-string', '--eventhub', '--policy', 'service');
    assert.equal(r.code, 0, r.stderr);
    consumer = new EventHubConsumerClient('$Default', r.stdout.trim());
    tmp = fs.mkdtempSync(path.join(process.env.HUBD_TEST_TMP ?? os.tmpdir(), 'http-device-'));
  });
  after(async () => {
    if (consumer) await consumer.close().catch(() => {});
    if (hub) await hub.dispose();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('sendEvent and sendEventBatch reach the Event Hubs endpoint with their properties', { timeout: 90_000 },
     async () => {
       const { deviceId, connectionString, generationId } = await createSasDevice(hub, registry, `http-tel-${pid}`);
       const client = await openClient(connectionString, Http);
       try {
         const single = new Message(JSON.stringify({ kind: 'single', t: 21.5 }));
         single.messageId = `mid-single-${pid}`;
         single.correlationId = 'corr-single';
         single.userId = 'user-1';
         single.contentType = 'application/json';
         single.contentEncoding = 'utf-8';
         single.expiryTimeUtc = '2030-01-01T00:00:00.000Z';
         single.properties.add('alert', 'hot/cold & more');
         single.properties.add('dt-subject', 'thermostat1');
         await within(30_000, client.sendEvent(single), 'sendEvent');

         const batch = [0, 1, 2].map((i) => {
           const m = new Message(JSON.stringify({ kind: 'batch', i }));
           m.properties.add('index', String(i));
           if (i === 1) m.properties.add('extra', 'yes');
           return m;
         });
         batch.push(new Message(Buffer.from([0x00, 0xff, 0x10])));  // binary, no properties
         await within(30_000, client.sendEventBatch(batch), 'sendEventBatch');
       } finally {
         await closeQuietly(client);
       }

       const events = await readEvents(consumer, fromDevice(deviceId), 5);
       assert.equal(events.length, 5, `read ${events.length} of 5 events`);
       for (const e of events) {
         const sp = e.systemProperties;
         assert.equal(sp['iothub-connection-device-id'], deviceId);
         assert.equal(sp['iothub-connection-auth-generation-id'], generationId);
         const method = JSON.parse(sp['iothub-connection-auth-method']);
         assert.equal(method.scope, 'device');
         assert.equal(method.type, 'sas');
         assert.equal(sp['iothub-message-source'], 'Telemetry');
         assert.ok(e.enqueuedTimeUtc instanceof Date);
         assert.equal(e.partitionId, events[0].partitionId, 'one partition per device');
       }
       // Log order is send order.
       for (let i = 1; i < events.length; i++) assert.ok(events[i].sequenceNumber > events[i - 1].sequenceNumber);

       const [one, b0, b1, b2, bin] = events;
       assert.deepEqual(one.body, { kind: 'single', t: 21.5 });
       assert.equal(one.messageId, `mid-single-${pid}`);
       assert.equal(one.correlationId, 'corr-single');
       assert.equal(one.contentType, 'application/json');
       assert.equal(one.systemProperties.contentEncoding, 'utf-8');
       // user-id is AMQP binary; the Event Hubs SDK hands it over as an object of byte values.
       assert.equal(Buffer.from(Object.values(one.systemProperties.userId)).toString(), 'user-1');
       assert.equal(one.systemProperties.absoluteExpiryTime, Date.parse('2030-01-01T00:00:00.000Z'));
       assert.equal(one.systemProperties['dt-subject'], 'thermostat1');
       assert.deepEqual(one.properties, { alert: 'hot/cold & more' });

       assert.deepEqual(b0.body, { kind: 'batch', i: 0 });
       assert.deepEqual(b0.properties, { index: '0' });
       assert.deepEqual(b1.body, { kind: 'batch', i: 1 });
       assert.deepEqual(b1.properties, { index: '1', extra: 'yes' });
       assert.deepEqual(b2.body, { kind: 'batch', i: 2 });
       assert.deepEqual(b2.properties, { index: '2' });
       assert.deepEqual(Buffer.from(bin.body), Buffer.from([0x00, 0xff, 0x10]));
       assert.equal(bin.properties, undefined);
     });

  it('a module sends on its own path with its own token', { timeout: 60_000 }, async () => {
    // azure-iot-device-http builds device paths only, so the module path is called as the REST
    // API (and edge/IIoT clients) call it.
    const { deviceId } = await createSasDevice(hub, registry, `http-mod-${pid}`);
    const { module } = await createModule(hub, registry, deviceId, 'mod1');
    const resource = encodeURIComponent(`${hub.hostName}/devices/${deviceId}/modules/mod1`);
    const token = sasToken({ resource, key: module.authentication.symmetricKey.primaryKey,
                             expiry: Math.ceil(Date.now() / 1000) + 3600 });
    const res = await request({
      host: hub.hostName, method: 'POST', path: `/devices/${deviceId}/modules/mod1/messages/events?api-version=2021-04-12`,
      headers: { Authorization: token, 'iothub-app-from': 'module', 'Content-Type': 'text/plain' }, body: 'from a module',
    });
    assert.equal(res.status, 204, res.body);
    // The module's token does not reach its device's path.
    const denied = await request({
      host: hub.hostName, method: 'POST', path: `/devices/${deviceId}/messages/events?api-version=2021-04-12`,
      headers: { Authorization: token, 'Content-Type': 'text/plain' }, body: 'not mine',
    });
    assert.equal(denied.status, 401, denied.body);

    const [e] = await readEvents(consumer, fromDevice(deviceId), 1);
    assert.ok(e, 'the module event was read');
    assert.equal(Buffer.from(e.body).toString(), 'from a module');
    assert.equal(e.systemProperties['iothub-connection-module-id'], 'mod1');
    assert.equal(JSON.parse(e.systemProperties['iothub-connection-auth-method']).scope, 'module');
    assert.deepEqual(e.properties, { from: 'module' });
  });

  it('a wrong key, an unknown device, another device\'s token and an oversize message fail as IoT Hub fails them',
     { timeout: 60_000 }, async () => {
       const { deviceId, connectionString } = await createSasDevice(hub, registry, `http-err-${pid}`);
       const other = await createSasDevice(hub, registry, `http-err-other-${pid}`);

       const wrongKey = await openClient(connectionString.replace(/SharedAccessKey=.*$/,
                                                                  `SharedAccessKey=${Buffer.alloc(32, 7).toString('base64')}`), Http);
       await rejectsWith(within(30_000, wrongKey.sendEvent(new Message('x')), 'wrong key'), errors.UnauthorizedError);
       await closeQuietly(wrongKey);

       const unknown = await openClient(connectionString.replace(`DeviceId=${deviceId}`, `DeviceId=ghost-${pid}`), Http);
       await rejectsWith(within(30_000, unknown.sendEvent(new Message('x')), 'unknown device'), errors.DeviceNotFoundError);
       await closeQuietly(unknown);

       // A token for one device used on another's path (raw: the SDK always signs for its own id).
       const token = sasToken({ resource: encodeURIComponent(`${hub.hostName}/devices/${deviceId}`),
                                key: connectionString.split('SharedAccessKey=')[1],
                                expiry: Math.ceil(Date.now() / 1000) + 3600 });
       const cross = await request({
         host: hub.hostName, method: 'POST', path: `/devices/${other.deviceId}/messages/events?api-version=2021-04-12`,
         headers: { Authorization: token, 'Content-Type': 'text/plain' }, body: 'not yours',
       });
       assert.equal(cross.status, 401, cross.body);
       assert.equal(cross.headers['iothub-errorcode'], 'IotHubUnauthorizedAccess');
       // Nor does it reach the service API.
       const service = await request({ host: hub.hostName, method: 'GET', path: `/devices/${deviceId}?api-version=2021-04-12`,
                                       headers: { Authorization: token } });
       assert.equal(service.status, 401, service.body);

       const client = await openClient(connectionString, Http);
       try {
         const err = await rejectsWith(within(30_000, client.sendEvent(new Message(Buffer.alloc(256 * 1024, 0x61))), 'oversize'),
                                       errors.MessageTooLargeError);
         assert.equal(err.response.statusCode, 413);
         // Just under the limit passes (the iothub-to header the SDK adds counts too).
         await within(30_000, client.sendEvent(new Message(Buffer.alloc(255 * 1024, 0x62))), 'just under the limit');
         const big = [0, 1].map(() => new Message(Buffer.alloc(130 * 1024, 0x63)));
         await rejectsWith(within(30_000, client.sendEventBatch(big), 'oversize batch'), errors.MessageTooLargeError);
       } finally {
         await closeQuietly(client);
       }
       // Nothing of the refused ones was stored.
       const events = await readEvents(consumer, fromDevice(deviceId), 2, 3_000);
       assert.equal(events.length, 1, 'only the message under the limit');
       assert.equal(Buffer.from(events[0].body).length, 255 * 1024);
       assert.equal((await readEvents(consumer, fromDevice(other.deviceId), 1, 2_000)).length, 0);
     });

  it('X.509 devices (self-signed and CA-signed) send over Http with their client certificate', { timeout: 60_000 },
     async () => {
       const selfId = `http-x509-self-${pid}`;
       const self = selfSignedCert(tmp, selfId);
       const thumbprint = sha1Thumbprint(self.cert);
       const { responseBody: selfDevice } = await registry.create({
         deviceId: selfId,
         authentication: { x509Thumbprint: { primaryThumbprint: thumbprint, secondaryThumbprint: thumbprint } },
       });
       const ca = rootCa(tmp, `HTTP Test Root ${pid}`);
       const upload = await hubctl(hub, 'ca', 'upload', `http-root-${pid}`, ca.certFile, '--verified');
       assert.equal(upload.code, 0, upload.stderr);
       const caId = `http-x509-ca-${pid}`;
       const { responseBody: caDevice } = await registry.create({ deviceId: caId, authentication: { type: 'certificateAuthority' } });
       const leaf = signedCert(tmp, ca, caId);

       for (const [id, pair] of [[selfId, self], [caId, leaf]]) {
         const client = x509Client(hub, id, pair.cert, pair.key);
         try {
           await within(30_000, client.open(), 'open');
           const m = new Message(`hello from ${id}`);
           m.properties.add('auth', 'x509');
           await within(30_000, client.sendEvent(m), `sendEvent ${id}`);
         } finally {
           await closeQuietly(client);
         }
       }
       for (const [id, device] of [[selfId, selfDevice], [caId, caDevice]]) {
         const [e] = await readEvents(consumer, fromDevice(id), 1);
         assert.ok(e, `the event of ${id} was read`);
         assert.equal(Buffer.from(e.body).toString(), `hello from ${id}`);
         assert.equal(JSON.parse(e.systemProperties['iothub-connection-auth-method']).type, 'x509');
         assert.equal(e.systemProperties['iothub-connection-auth-generation-id'], device.generationId);
         assert.deepEqual(e.properties, { auth: 'x509' });
       }

       // Another certificate for the self-signed device's id is refused.
       const stranger = selfSignedCert(tmp, `${selfId}-stranger`);
       const intruder = x509Client(hub, selfId, stranger.cert, stranger.key);
       try {
         await rejectsWith(within(30_000, intruder.sendEvent(new Message('no')), 'wrong certificate'), errors.UnauthorizedError);
       } finally {
         await closeQuietly(intruder);
       }
     });

  describe('cloud-to-device over Http', () => {
    let service;
    let feedback;
    const records = [];

    before(async () => {
      service = ServiceClient.fromConnectionString(hub.connectionString);
      await within(30_000, service.open(), 'service open');
      const { result } = await within(30_000, service.getFeedbackReceiver(), 'getFeedbackReceiver');
      feedback = result;
      feedback.on('errorReceived', () => {});
      feedback.on('message', (msg) => {
        for (const r of JSON.parse(msg.data.toString())) records.push(r);
      });
    });
    after(async () => {
      if (service) await within(10_000, service.close(), 'service close').catch(() => {});
    });

    // Resolves once feedback records for all `ids` arrived; returns them by original message id.
    async function feedbackFor(ids, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = new Map(records.filter((r) => ids.includes(r.originalMessageId)).map((r) => [r.originalMessageId, r]));
        if (found.size === ids.length || Date.now() > deadline) return found;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }

    it('the device receives by polling, then completes, rejects and abandons; feedback follows', { timeout: 90_000 },
       async () => {
         const { deviceId, connectionString, generationId } = await createSasDevice(hub, registry, `http-c2d-${pid}`);
         const ids = { complete: `c2d-complete-${pid}`, reject: `c2d-reject-${pid}`, abandon: `c2d-abandon-${pid}` };
         for (const [what, id] of Object.entries(ids)) {
           const m = new Message(JSON.stringify({ what }));
           m.messageId = id;
           m.correlationId = `corr-${what}`;
           m.ack = 'full';
           m.expiryTimeUtc = Date.now() + 10 * 60_000;
           m.properties.add('what', what);
           await within(30_000, service.send(deviceId, m), `send ${what}`);
         }

         const client = await openClient(connectionString, Http);
         const seen = [];
         const settled = new Map();
         let failure = null;
         const allDone = new Promise((resolve) => {
           client.on('message', async (msg) => {
             try {
               seen.push({ id: msg.messageId, data: msg.data.toString(), props: msg.properties, correlationId: msg.correlationId,
                           to: msg.to, lockToken: msg.lockToken });
               if (msg.messageId === ids.complete) {
                 await client.complete(msg);
                 // Settled already: the lock is gone (412 DeviceMessageLockLost; a plain Error in Node).
                 const again = await client.complete(msg).then(() => null, (e) => e);
                 assert.equal(again?.response?.statusCode, 412, 'completing twice');
                 settled.set('complete', true);
               } else if (msg.messageId === ids.reject) {
                 await client.reject(msg);
                 settled.set('reject', true);
               } else if (msg.messageId === ids.abandon) {
                 if (!settled.has('abandon-1')) {
                   settled.set('abandon-1', true);
                   await client.abandon(msg);  // back in the queue: the next poll gets it again
                 } else {
                   await client.complete(msg);
                   settled.set('abandon-2', true);
                 }
               }
             } catch (e) {
               failure = e;
             }
             if (failure || ['complete', 'reject', 'abandon-2'].every((k) => settled.has(k))) resolve();
           });
         });
         try {
           await within(45_000, allDone, 'the device settling its messages');
         } finally {
           await closeQuietly(client);
         }
         assert.equal(failure, null, failure && `${failure.name}: ${failure.message}`);

         const byId = (id) => seen.filter((s) => s.id === id);
         assert.equal(byId(ids.complete).length, 1);
         assert.equal(byId(ids.reject).length, 1);
         assert.equal(byId(ids.abandon).length, 2, 'an abandoned message is delivered again');
         const c = byId(ids.complete)[0];
         assert.deepEqual(JSON.parse(c.data), { what: 'complete' });
         assert.equal(c.correlationId, 'corr-complete');
         assert.equal(c.to, `/devices/${deviceId}/messages/devicebound`);
         // The Http transport keeps the iothub-app- prefix in property keys (sdk-quirks.md).
         assert.equal(c.props.getValue('iothub-app-what'), 'complete');
         const [first, second] = byId(ids.abandon);
         assert.notEqual(first.lockToken, second.lockToken, 'a new lock for each delivery');

         const fb = await feedbackFor(Object.values(ids));
         assert.equal(fb.size, 3, `feedback records: ${JSON.stringify(records)}`);
         assert.equal(fb.get(ids.complete).statusCode, 'Success');
         assert.equal(fb.get(ids.reject).statusCode, 'Rejected');
         assert.equal(fb.get(ids.abandon).statusCode, 'Success', 'abandoned, then completed');
         for (const r of fb.values()) {
           assert.equal(r.deviceId, deviceId);
           assert.equal(r.deviceGenerationId, generationId);
         }
         assert.equal(records.filter((r) => Object.values(ids).includes(r.originalMessageId)).length, 3,
                      'exactly one record per message');
       });

    it('the service purges a device\'s queue (Purge Command Queue)', { timeout: 60_000 }, async () => {
      const { deviceId } = await createSasDevice(hub, registry, `http-purge-${pid}`);
      for (let i = 0; i < 3; i++) {
        const m = new Message(`queued ${i}`);
        m.messageId = `purge-${pid}-${i}`;
        m.ack = i === 0 ? 'negative' : 'none';
        await within(30_000, service.send(deviceId, m), `send ${i}`);
      }
      assert.equal((await registry.get(deviceId)).responseBody.cloudToDeviceMessageCount, 3);
      // The SDK's own generated REST client (the public Registry has no purge method).
      const api = new IotHubGatewayServiceAPIs(new IoTHubTokenCredentials(hub.connectionString),
                                               { baseUri: `https://${hub.hostName}`, apiVersion: '2021-04-12' });
      const purged = await within(30_000, api.cloudToDeviceMessages.purgeCloudToDeviceMessageQueue(deviceId), 'purge');
      assert.equal(purged.totalMessagesPurged, 3);
      assert.equal(purged.deviceId, deviceId);
      assert.equal((await registry.get(deviceId)).responseBody.cloudToDeviceMessageCount, 0);
      const fb = await feedbackFor([`purge-${pid}-0`]);
      assert.equal(fb.get(`purge-${pid}-0`)?.statusCode, 'Purged');
      await assert.rejects(api.cloudToDeviceMessages.purgeCloudToDeviceMessageQueue(`ghost-${pid}`),
                           (err) => err.statusCode === 404 || assert.fail(`${err.name}: ${err.message}`));
    });
  });
});
