'use strict';
// The life of an MQTT connection around the registry and the hub itself:
//  - deleting or disabling an identity closes its connection, as IoT Hub does (REST, bulk);
//  - a connection that ends without DISCONNECT sends its Will as telemetry, with
//    iothub-MessageType=Will; a will on any other topic is refused;
//  - persistent sessions (CleanSession=0) keep their subscriptions across a hubd restart.
//
// The device SDK hides disconnects behind its retry policy, so the SDK clients here use NoRetry:
// a closed connection then comes out as the client's 'disconnect' event.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Registry } = require('azure-iothub');
const { Mqtt } = require('azure-iot-device-mqtt');
const { startHub } = require('./lib/hub');
const {
  createSasDevice, createModule, openClient, closeQuietly, within, storedEvents, eventsOf,
} = require('./lib/device');
const { RawMqtt, deviceCredentials } = require('./lib/raw_mqtt');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function disconnected(client) {
  return new Promise((resolve) => client.once('disconnect', resolve));
}

async function waitFor(what, predicate, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await predicate();
    if (last) return last;
    await sleep(200);
  }
  assert.fail(`${what}: not within ${timeoutMs} ms`);
}

describe('MQTT connection lifecycle', () => {
  let hub;
  let registry;
  const pid = process.pid;

  before(async () => {
    hub = await startHub({ name: 'mqtt-lifecycle' });
    registry = Registry.fromConnectionString(hub.connectionString);
  });
  after(async () => {
    if (hub) await hub.dispose();
  });

  it('deleting a device closes its connection', { timeout: 60_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `life-del-${pid}`);
    const client = await openClient(dev.connectionString, Mqtt, { noRetry: true });
    try {
      const gone = disconnected(client);
      await registry.delete(dev.deviceId);
      await within(10_000, gone, "'disconnect' after Registry.delete");
    } finally {
      await closeQuietly(client);
    }
  });

  it('disabling a device closes its connection and its modules\'', { timeout: 60_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `life-dis-${pid}`);
    const mod = await createModule(hub, registry, dev.deviceId, 'm1');
    const client = await openClient(dev.connectionString, Mqtt, { noRetry: true });
    const modClient = await openClient(mod.connectionString, Mqtt, { noRetry: true, module: true });
    try {
      const gone = disconnected(client);
      const modGone = disconnected(modClient);
      const { responseBody: d } = await registry.get(dev.deviceId);
      d.status = 'disabled';
      await registry.update(d);
      await within(10_000, gone, "'disconnect' after disabling the device");
      await within(10_000, modGone, "the module's 'disconnect' after disabling its device");
    } finally {
      await closeQuietly(client);
      await closeQuietly(modClient);
    }
  });

  it('deleting a module closes its connection, not the device\'s', { timeout: 60_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `life-mod-${pid}`);
    const mod = await createModule(hub, registry, dev.deviceId, 'm1');
    const client = await openClient(dev.connectionString, Mqtt, { noRetry: true });
    const modClient = await openClient(mod.connectionString, Mqtt, { noRetry: true, module: true });
    try {
      let deviceGone = false;
      client.once('disconnect', () => { deviceGone = true; });
      const modGone = disconnected(modClient);
      await new Promise((resolve, reject) => registry.removeModule(mod.module, (err) => (err ? reject(err) : resolve())));
      await within(10_000, modGone, "the module's 'disconnect' after removeModule");
      await sleep(500);
      assert.equal(deviceGone, false, 'the device stays connected');
    } finally {
      await closeQuietly(client);
      await closeQuietly(modClient);
    }
  });

  it('a connection that drops sends its Will as telemetry with iothub-MessageType=Will', { timeout: 60_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `life-will-${pid}`);
    const key = dev.device.authentication.symmetricKey.primaryKey;
    const creds = deviceCredentials(hub.hostName, dev.deviceId, key);
    const topic = `devices/${dev.deviceId}/messages/events/reason=lost`;

    // Dropped: the will is sent.
    const raw = await RawMqtt.connect(hub.hostName);
    assert.equal(await raw.handshake({ ...creds, will: { topic, payload: '{"will":"dropped"}', qos: 1 } }), 0);
    raw.destroy();
    const events = await waitFor('the Will in the log', async () => {
      const stored = eventsOf(await storedEvents(hub, { args: ['--device', dev.deviceId] }), dev.deviceId);
      return stored.length > 0 ? stored : null;
    });
    assert.equal(events.length, 1);
    assert.equal(events[0].properties['iothub-MessageType'], 'Will');
    assert.equal(events[0].properties.reason, 'lost');
    assert.match(JSON.stringify(events[0].body), /dropped/);

    // Retained: passed on as mqtt-retain. DISCONNECT first: no will.
    const polite = await RawMqtt.connect(hub.hostName);
    assert.equal(await polite.handshake({ ...creds, will: { topic, payload: '{"will":"polite"}', retain: true } }), 0);
    polite.write(Buffer.from([0xe0, 0x00]));
    assert.ok(await polite.closedWithin(5_000), 'the hub closes after DISCONNECT');
    const retained = await RawMqtt.connect(hub.hostName);
    assert.equal(await retained.handshake({ ...creds, will: { topic, payload: '{"will":"retained"}', retain: true } }), 0);
    retained.destroy();
    const after = await waitFor('the retained Will in the log', async () => {
      const stored = eventsOf(await storedEvents(hub, { args: ['--device', dev.deviceId] }), dev.deviceId);
      return stored.length > 1 ? stored : null;
    });
    assert.equal(after.length, 2, 'no will after DISCONNECT');
    assert.match(JSON.stringify(after[1].body), /retained/);
    assert.equal(after[1].properties['mqtt-retain'], 'true');
    assert.equal(after[1].properties['iothub-MessageType'], 'Will');
  });

  it('a Will on a topic other than the device\'s telemetry is refused with CONNACK 5', { timeout: 30_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `life-badwill-${pid}`);
    const creds = deviceCredentials(hub.hostName, dev.deviceId, dev.device.authentication.symmetricKey.primaryKey);
    for (const topic of [`devices/other-${pid}/messages/events/`, 'status/offline', '$iothub/twin/GET/?$rid=1']) {
      const raw = await RawMqtt.connect(hub.hostName);
      try {
        assert.equal(await raw.handshake({ ...creds, will: { topic, payload: 'x' } }), 5, topic);
      } finally {
        raw.destroy();
      }
    }
  });

  it('a persistent session keeps its subscriptions across a restart of hubd', { timeout: 90_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `life-session-${pid}`);
    const key = dev.device.authentication.symmetricKey.primaryKey;
    const first = await RawMqtt.connect(hub.hostName);
    assert.equal(await first.handshake({ ...deviceCredentials(hub.hostName, dev.deviceId, key), cleanSession: false }), 0);
    assert.equal(first.sessionPresent, false, 'a new session');
    assert.deepEqual(await first.subscribe([{ filter: `devices/${dev.deviceId}/messages/devicebound/#`, qos: 1 }]), [1]);
    first.write(Buffer.from([0xe0, 0x00]));
    await first.closedWithin(5_000);

    await hub.restart();

    const again = await RawMqtt.connect(hub.hostName);
    try {
      assert.equal(await again.handshake({ ...deviceCredentials(hub.hostName, dev.deviceId, key), cleanSession: false }), 0);
      assert.equal(again.sessionPresent, true, 'session present = 1 after the restart');
    } finally {
      again.destroy();
    }
    // CleanSession=1 discards it: a later persistent connect starts afresh.
    const clean = await RawMqtt.connect(hub.hostName);
    assert.equal(await clean.handshake({ ...deviceCredentials(hub.hostName, dev.deviceId, key), cleanSession: true }), 0);
    assert.equal(clean.sessionPresent, false);
    clean.write(Buffer.from([0xe0, 0x00]));
    await clean.closedWithin(5_000);
    const fresh = await RawMqtt.connect(hub.hostName);
    try {
      assert.equal(await fresh.handshake({ ...deviceCredentials(hub.hostName, dev.deviceId, key), cleanSession: false }), 0);
      assert.equal(fresh.sessionPresent, false, 'discarded by the clean connect');
    } finally {
      fresh.destroy();
    }
  });

  it('a bulk delete closes the connections of the deleted devices', { timeout: 60_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `life-bulk-${pid}`);
    const client = await openClient(dev.connectionString, Mqtt, { noRetry: true });
    try {
      const gone = disconnected(client);
      await registry.removeDevices([{ deviceId: dev.deviceId }], true);
      await within(10_000, gone, "'disconnect' after a bulk delete");
    } finally {
      await closeQuietly(client);
    }
  });
});
