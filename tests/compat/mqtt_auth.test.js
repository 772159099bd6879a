'use strict';
// Who may connect over MQTT, as the unmodified device SDK sees it.
//
// SDK facts (protocol/sdk-quirks.md, device.md §2.4): the first connect failure of a transport
// instance, whatever it is, comes out of open() as UnauthorizedError and is not retried; a CONNACK
// refusal is told apart by MQTT.js's text "Connection refused: <reason>" inside the message. With
// the default retry policy the client hides disconnects, so these tests use NoRetry.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Registry } = require('azure-iothub');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { startHub } = require('./lib/hub');
const { encodeUriComponentStrict: strictEncode } = require('azure-iot-common');
const { sasToken } = require('./lib/util');
const {
  Message, createSasDevice, makeClient, openClient, closeQuietly, within, selfSignedCert, sha1Thumbprint, storedEvents,
  eventsOf,
} = require('./lib/device');
const { RawMqtt, publishPacket, deviceCredentials } = require('./lib/raw_mqtt');

// CONNACK 4 (bad user name or password) or 5 (not authorized): both are refusals by the hub.
const REFUSED = /Connection refused: (Not authorized|Bad username or password)/;

// open() must fail with UnauthorizedError caused by a CONNACK refusal (not a dropped socket).
async function assertRefused(connectionString, { Transport = Mqtt, cert, key } = {}) {
  const client = await makeClient(connectionString, Transport, { noRetry: true, cert, key });
  let err = null;
  try {
    await within(30_000, client.open(), 'open()');
  } catch (e) {
    err = e;
  } finally {
    await closeQuietly(client);
  }
  assert.ok(err, 'open() succeeded but the hub should have refused the connection');
  assert.equal(err.constructor.name, 'UnauthorizedError', `${err.constructor.name}: ${err.message}`);
  assert.match(err.message, REFUSED, 'refused by CONNACK, not by a dropped connection');
  return err;
}

async function waitFor(what, predicate, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await predicate();
    if (last.ok) return last;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.fail(`${what}: not within ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
}

describe('MQTT authentication', () => {
  let hub;
  let registry;
  let tmp;
  const pid = process.pid;

  before(async () => {
    hub = await startHub({ name: 'mqtt-auth' });
    registry = Registry.fromConnectionString(hub.connectionString);
    tmp = fs.mkdtempSync(path.join(process.env.HUBD_TEST_TMP ?? os.tmpdir(), 'auth-'));
  });
  after(async () => {
    if (hub) await hub.dispose();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('the right key connects, over Mqtt and MqttWs', { timeout: 60_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `auth-ok-${pid}`);
    for (const Transport of [Mqtt, MqttWs]) {
      const client = await openClient(dev.connectionString, Transport, { noRetry: true });
      try {
        await within(20_000, client.sendEvent(new Message('hello')), 'sendEvent');
      } finally {
        await closeQuietly(client);
      }
    }
  });

  it('a wrong key is refused with UnauthorizedError', { timeout: 60_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `auth-wrong-key-${pid}`);
    const wrong = crypto.randomBytes(32).toString('base64');
    await assertRefused(`HostName=${hub.hostName};DeviceId=${dev.deviceId};SharedAccessKey=${wrong}`);
    await assertRefused(`HostName=${hub.hostName};DeviceId=${dev.deviceId};SharedAccessKey=${wrong}`, { Transport: MqttWs });
  });

  it('a disabled device is refused, and connects once enabled', { timeout: 60_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `auth-disabled-${pid}`, { status: 'disabled' });
    await assertRefused(dev.connectionString);
    const { responseBody: d } = await registry.get(dev.deviceId);
    await registry.update({ ...d, status: 'enabled' });
    const client = await openClient(dev.connectionString, Mqtt, { noRetry: true });
    await closeQuietly(client);
  });

  it('an unknown device is refused', { timeout: 60_000 }, async () => {
    const key = crypto.randomBytes(32).toString('base64');
    await assertRefused(`HostName=${hub.hostName};DeviceId=auth-nobody-${pid};SharedAccessKey=${key}`);
  });

  it('an expired SAS token is refused; the same token unexpired connects', { timeout: 60_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `auth-expired-${pid}`);
    const key = dev.device.authentication.symmetricKey.primaryKey;
    const resource = strictEncode(`${hub.hostName}/devices/${dev.deviceId}`);
    const now = Math.floor(Date.now() / 1000);
    const cs = (expiry) => `HostName=${hub.hostName};DeviceId=${dev.deviceId};SharedAccessSignature=` +
                           sasToken({ resource, key, expiry });
    await assertRefused(cs(now - 60));
    const client = await openClient(cs(now + 3600), Mqtt, { noRetry: true });
    await closeQuietly(client);
  });

  it('an X.509 device presenting another certificate is refused', { timeout: 60_000 }, async () => {
    const deviceId = `auth-x509-${pid}`;
    const registered = selfSignedCert(tmp, deviceId);
    const other = selfSignedCert(tmp, `${deviceId}-other`);
    const tp = sha1Thumbprint(registered.cert);
    await registry.create({ deviceId, authentication: { x509Thumbprint: { primaryThumbprint: tp, secondaryThumbprint: tp } } });
    const cs = `HostName=${hub.hostName};DeviceId=${deviceId};x509=true`;
    await assertRefused(cs, { cert: other.cert, key: other.key });
    const client = await openClient(cs, Mqtt, { noRetry: true, cert: registered.cert, key: registered.key });
    await closeQuietly(client);
  });

  it('a token for one device does not let another device in', { timeout: 30_000 }, async () => {
    const a = await createSasDevice(hub, registry, `auth-a-${pid}`);
    const b = await createSasDevice(hub, registry, `auth-b-${pid}`);
    const aKey = a.device.authentication.symmetricKey.primaryKey;
    const asA = deviceCredentials(hub.hostName, a.deviceId, aKey);
    const asB = deviceCredentials(hub.hostName, b.deviceId, aKey);   // B's resource signed with A's key
    const cases = [
      ['client id B, user name B, token of A', { ...asB, password: asA.password }],
      ['client id B, user name B, token for B signed with A\'s key', asB],
      ['client id B, user name A, token of A', { ...asA, clientId: b.deviceId }],
    ];
    for (const [what, fields] of cases) {
      const raw = await RawMqtt.connect(hub.hostName);
      try {
        const rc = await raw.handshake(fields);
        assert.ok(rc !== 0, `${what}: accepted (CONNACK 0)`);
      } finally {
        raw.destroy();
      }
    }
  });

  it('a device may not publish as another device', { timeout: 30_000 }, async () => {
    const a = await createSasDevice(hub, registry, `auth-spoofer-${pid}`);
    const victim = `auth-victim-${pid}`;
    await createSasDevice(hub, registry, victim);
    const raw = await RawMqtt.connect(hub.hostName);
    try {
      assert.equal(await raw.handshake(deviceCredentials(hub.hostName, a.deviceId, a.device.authentication.symmetricKey.primaryKey)), 0);
      raw.write(publishPacket({ topic: `devices/${victim}/messages/events/`, payload: 'spoofed', packetId: 7 }));
      // IoT Hub closes the connection of a device that publishes where it may not.
      const next = await raw.readPacket(5_000).catch(() => 'still open');
      assert.equal(next, null, `expected the connection to close, got ${next?.type === 4 ? 'PUBACK' : JSON.stringify(next)}`);
    } finally {
      raw.destroy();
    }
    const stored = await storedEvents(hub, { args: ['--device', victim] });
    assert.deepEqual(eventsOf(stored, victim), [], 'nothing stored under the other device\'s id');
    const own = eventsOf(await storedEvents(hub, { args: ['--device', a.deviceId] }), a.deviceId);
    assert.deepEqual(own.map((e) => e.body), [], 'nor under the sender\'s own id');
  });

  it('a device connection string with the device policy key connects; registryRead does not', { timeout: 60_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `auth-policy-${pid}`);
    const key = (name) => hub.policies().find((p) => (p.name ?? p.keyName) === name).primaryKey;
    const cs = (policy) => `HostName=${hub.hostName};DeviceId=${dev.deviceId};SharedAccessKeyName=${policy};` +
                           `SharedAccessKey=${key(policy)}`;
    await assertRefused(cs('registryRead'));
    const client = await openClient(cs('device'), Mqtt, { noRetry: true });
    try {
      const msg = new Message('signed by a policy');
      msg.messageId = 'policy-signed';
      await within(20_000, client.sendEvent(msg), 'sendEvent');
    } finally {
      await closeQuietly(client);
    }
    const [e] = eventsOf(await storedEvents(hub, { args: ['--device', dev.deviceId] }), dev.deviceId);
    assert.ok(e, 'the message was stored');
    assert.equal(e.systemProperties['iothub-connection-device-id'], dev.deviceId);
    const auth = JSON.parse(e.systemProperties['iothub-connection-auth-method']);
    assert.equal(auth.scope, 'hub', `a policy-signed token: ${e.systemProperties['iothub-connection-auth-method']}`);
    assert.equal(auth.type, 'sas');
  });

  it('the hub closes a connection when its SAS token expires', { timeout: 30_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `auth-expiring-${pid}`);
    const key = dev.device.authentication.symmetricKey.primaryKey;
    const resource = strictEncode(`${hub.hostName}/devices/${dev.deviceId}`);
    const expiry = Math.floor(Date.now() / 1000) + 4;
    const cs = `HostName=${hub.hostName};DeviceId=${dev.deviceId};SharedAccessSignature=` + sasToken({ resource, key, expiry });
    const client = await openClient(cs, Mqtt, { noRetry: true });
    try {
      const gone = new Promise((resolve) => client.on('disconnect', resolve));
      await within(20_000, client.sendEvent(new Message('before expiry')), 'sendEvent');
      await within(15_000, gone, "'disconnect' after the token expired");
      assert.ok(Date.now() >= expiry * 1000 - 1000, 'not before the expiry');
    } finally {
      await closeQuietly(client);
    }
  });

  it('a second connection of the same device closes the first', { timeout: 60_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `auth-twice-${pid}`);
    const first = await openClient(dev.connectionString, Mqtt, { noRetry: true });
    const firstGone = new Promise((resolve) => first.on('disconnect', resolve));
    let second;
    try {
      second = await openClient(dev.connectionString, Mqtt, { noRetry: true });
      let secondDisconnected = null;
      second.on('disconnect', (d) => { secondDisconnected = d; });
      await within(10_000, firstGone, "the first client's 'disconnect' event");
      await within(20_000, second.sendEvent(new Message('from the second connection')), 'sendEvent on the second');
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(secondDisconnected, null, `the second connection was dropped too: ${secondDisconnected?.reason?.message}`);
    } finally {
      await closeQuietly(second);
      await closeQuietly(first);
    }
  });

  it('the registry shows Connected while connected and Disconnected after close', { timeout: 60_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `auth-presence-${pid}`);
    const state = async () => {
      const { responseBody: d } = await registry.get(dev.deviceId);
      return d;
    };
    const before = await state();
    assert.equal(before.connectionState, 'Disconnected');
    const client = await openClient(dev.connectionString, Mqtt, { noRetry: true });
    try {
      const connected = await waitFor('connectionState Connected', async () => {
        const d = await state();
        return { ok: d.connectionState === 'Connected', connectionState: d.connectionState };
      });
      assert.ok(connected);
    } finally {
      await closeQuietly(client);
    }
    await waitFor('connectionState Disconnected after close', async () => {
      const d = await state();
      return { ok: d.connectionState === 'Disconnected', connectionState: d.connectionState,
               connectionStateUpdatedTime: d.connectionStateUpdatedTime };
    });
    const after = await state();
    assert.ok(Date.parse(after.connectionStateUpdatedTime) >= Date.parse(before.connectionStateUpdatedTime),
              `connectionStateUpdatedTime moves forward (${before.connectionStateUpdatedTime} -> ${after.connectionStateUpdatedTime})`);
  });
});
