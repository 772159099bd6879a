'use strict';
// Cloud-to-device messages delivered over MQTT (device.md §3.3, semantics.md §4): azure-iothub's
// Client.send (AMQP) to a device on Mqtt and MqttWs.
//  - the device receives the body and every system and application property, the application
//    properties with characters the topic's property bag must encode;
//  - the PUBACK (the SDK sends it on arrival) completes the message: Success feedback for ack
//    'positive' / 'full', none for 'none' / 'negative'; cloudToDeviceMessageCount back to 0;
//  - messages queued while the device is offline arrive in order when it connects, also after
//    hubd was killed (-9) and restarted;
//  - a connection that ends before its PUBACK gets the message again on the next connection;
//  - a QoS 0 subscription gets messages at QoS 0, completed on send;
//  - modules get no C2D (IoT Hub has none for them), whatever they subscribe to.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Client: ServiceClient, Registry } = require('azure-iothub');
const { Message } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { encodeUriComponentStrict } = require('azure-iot-common');
const { startHub } = require('./lib/hub');
const { createSasDevice, createModule, openClient, closeQuietly, within } = require('./lib/device');
const { RawMqtt, deviceCredentials, packet } = require('./lib/raw_mqtt');
const { sasToken } = require('./lib/util');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, predicate, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await predicate();
    if (last) return last;
    await sleep(200);
  }
  assert.fail(`${what}: not within ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
}

// The device's cloudToDeviceMessageCount as the registry shows it.
async function pendingCount(registry, deviceId) {
  const { responseBody: d } = await registry.get(deviceId);
  return Number(d.cloudToDeviceMessageCount);
}

// Resolves with the first `n` C2D messages the client receives (listening starts now, which
// makes the SDK subscribe to devicebound).
function collect(client, n) {
  const got = [];
  return new Promise((resolve) => {
    client.on('message', (msg) => {
      got.push(msg);
      client.complete(msg, () => {});  // a local no-op on MQTT: the SDK PUBACKed on arrival
      if (got.length === n) resolve(got);
    });
  });
}

// A PUBLISH from the hub, read by the raw client: {topic, payload, qos, packetId}.
function parsePublish(p) {
  assert.equal(p.type, 3, `expected PUBLISH, got packet type ${p.type}`);
  const qos = (p.flags >> 1) & 3;
  const topicLength = p.body.readUInt16BE(0);
  const topic = p.body.subarray(2, 2 + topicLength).toString('utf8');
  let offset = 2 + topicLength;
  let packetId = 0;
  if (qos > 0) {
    packetId = p.body.readUInt16BE(offset);
    offset += 2;
  }
  return { topic, payload: p.body.subarray(offset).toString('utf8'), qos, packetId };
}

function puback(packetId) {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(packetId);
  return packet(0x40, b);
}

// The property bag as the SDK reads it: 5th '/'-segment, split on '&' and '=', decoded.
function bagOf(topic) {
  const parts = topic.split('/');
  assert.equal(parts.length, 5, `a raw '/' in the property bag: ${topic}`);
  const out = {};
  for (const pair of parts[4].split('&')) {
    const kv = pair.split('=');
    assert.equal(kv.length, 2, `a raw '=' in the property bag: ${pair}`);
    out[decodeURIComponent(kv[0])] = decodeURIComponent(kv[1]);
  }
  return out;
}

describe('C2D delivery over MQTT', () => {
  let hub;
  let registry;
  let service;
  const pid = process.pid;

  async function openService() {
    service = ServiceClient.fromConnectionString(hub.connectionString);
    await within(30_000, service.open(), 'service client open');
  }
  async function closeService() {
    if (service) await within(10_000, service.close(), 'service client close').catch(() => {});
    service = null;
  }
  function send(deviceId, message) {
    return within(30_000, service.send(deviceId, message), `send to ${deviceId}`);
  }

  before(async () => {
    hub = await startHub({ name: 'c2d-mqtt' });
    registry = Registry.fromConnectionString(hub.connectionString);
    await openService();
  });
  after(async () => {
    await closeService();
    if (hub) await hub.dispose();
  });

  // Properties whose names and values need percent-encoding in the topic.
  const awkward = {
    'path/with/slashes': '/a/b/',
    'space and & and =': 'x y&z=w',
    'percent%plus+': '100% + 1',
    ['unicod\u00e9-\u6e29\u5ea6']: '\u00e7a \u20ac \u{1F600}',
  };

  for (const [name, Transport] of [['Mqtt', Mqtt], ['MqttWs', MqttWs]]) {
    it(`${name}: the device gets the body and every property; the PUBACK completes the message`,
       { timeout: 60_000 }, async () => {
         const dev = await createSasDevice(hub, registry, `c2d-props-${name}-${pid}`);
         const client = await openClient(dev.connectionString, Transport);
         try {
           const received = collect(client, 1);
           const expiry = Date.now() + 10 * 60_000;
           const m = new Message(JSON.stringify({ cmd: 'reboot', n: 1 }));
           m.messageId = `mid-${name}`;
           m.correlationId = `cid-${name}`;
           m.expiryTimeUtc = expiry;
           m.contentType = 'application/json';
           m.contentEncoding = 'utf-8';
           m.ack = 'full';
           for (const [k, v] of Object.entries(awkward)) m.properties.add(k, v);
           await send(dev.deviceId, m);

           const [msg] = await within(20_000, received, 'the C2D message');
           assert.equal(msg.data.toString(), JSON.stringify({ cmd: 'reboot', n: 1 }));
           assert.equal(msg.messageId, `mid-${name}`);
           assert.equal(msg.correlationId, `cid-${name}`);
           assert.equal(new Date(msg.expiryTimeUtc).getTime(), expiry, `expiryTimeUtc ${msg.expiryTimeUtc}`);
           assert.equal(msg.contentType, 'application/json');
           assert.equal(msg.contentEncoding, 'utf-8');
           assert.equal(msg.to, `/devices/${dev.deviceId}/messages/devicebound`);
           for (const [k, v] of Object.entries(awkward)) assert.equal(msg.properties.getValue(k), v, k);
           assert.equal(msg.properties.getValue('iothub-ack'), 'full');

           await waitFor('cloudToDeviceMessageCount back to 0', async () => (await pendingCount(registry, dev.deviceId)) === 0);
         } finally {
           await closeQuietly(client);
         }
       });
  }

  it('positive feedback for ack positive and full, none for none and negative', { timeout: 90_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `c2d-ack-${pid}`);
    const { result: feedback } = await within(30_000, service.getFeedbackReceiver(), 'getFeedbackReceiver');
    const records = [];
    feedback.on('error', () => {});
    feedback.on('message', (msg) => {
      for (const r of JSON.parse(msg.data.toString())) {
        if (r.deviceId === dev.deviceId) records.push(r);
      }
      feedback.complete(msg, () => {});
    });

    const client = await openClient(dev.connectionString, Mqtt);
    try {
      const received = collect(client, 4);
      for (const ack of ['none', 'positive', 'negative', 'full']) {
        const m = new Message(`ack ${ack}`);
        m.messageId = `ack-${ack}-${pid}`;
        m.ack = ack;
        await send(dev.deviceId, m);
      }
      const got = await within(20_000, received, 'the four messages');
      assert.deepEqual(got.map((m) => m.data.toString()), ['ack none', 'ack positive', 'ack negative', 'ack full']);

      await waitFor('Success feedback for positive and full', async () => records.length >= 2, 45_000);
      await sleep(3_000);  // anything else would have come with them
      const byId = Object.fromEntries(records.map((r) => [r.originalMessageId, r]));
      assert.deepEqual(Object.keys(byId).sort(), [`ack-full-${pid}`, `ack-positive-${pid}`], JSON.stringify(records));
      for (const r of records) {
        assert.equal(r.statusCode, 'Success');
        assert.equal(r.deviceId, dev.deviceId);
        assert.equal(r.deviceGenerationId, dev.generationId);
      }
    } finally {
      await closeQuietly(client);
    }
  });

  it('messages sent while the device is offline are counted, then arrive in order on connect', { timeout: 60_000 }, async () => {
    // More than the hub keeps out per connection (16): the rest follows the PUBACKs.
    const n = 40;
    const dev = await createSasDevice(hub, registry, `c2d-offline-${pid}`);
    for (let i = 0; i < n; i++) {
      const m = new Message(`offline ${i}`);
      m.messageId = `off-${i}`;
      await send(dev.deviceId, m);
    }
    assert.equal(await pendingCount(registry, dev.deviceId), n);
    const client = await openClient(dev.connectionString, Mqtt);
    try {
      const got = await within(20_000, collect(client, n), 'the queued messages');
      const indexes = [...Array(n).keys()];
      assert.deepEqual(got.map((m) => m.data.toString()), indexes.map((i) => `offline ${i}`));
      assert.deepEqual(got.map((m) => m.messageId), indexes.map((i) => `off-${i}`));
      await waitFor('cloudToDeviceMessageCount back to 0', async () => (await pendingCount(registry, dev.deviceId)) === 0);
    } finally {
      await closeQuietly(client);
    }
  });

  it('messages queued before a kill -9 are delivered after the restart', { timeout: 90_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `c2d-kill-${pid}`);
    for (let i = 0; i < 3; i++) await send(dev.deviceId, new Message(`durable ${i}`));
    await closeService();
    await hub.kill9();
    await hub.start();
    await openService();
    assert.equal(await pendingCount(registry, dev.deviceId), 3);
    const client = await openClient(dev.connectionString, MqttWs);
    try {
      const got = await within(20_000, collect(client, 3), 'the messages after the restart');
      assert.deepEqual(got.map((m) => m.data.toString()), ['durable 0', 'durable 1', 'durable 2']);
      await waitFor('cloudToDeviceMessageCount back to 0', async () => (await pendingCount(registry, dev.deviceId)) === 0);
    } finally {
      await closeQuietly(client);
    }
  });

  it('a connection that ends before its PUBACK gets the message again on the next one', { timeout: 60_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `c2d-redeliver-${pid}`);
    const creds = deviceCredentials(hub.hostName, dev.deviceId, dev.device.authentication.symmetricKey.primaryKey);
    const first = await RawMqtt.connect(hub.hostName);
    let second;
    try {
      assert.equal(await first.handshake({ ...creds, cleanSession: false }), 0);
      assert.deepEqual(await first.subscribe([{ filter: `devices/${dev.deviceId}/messages/devicebound/#`, qos: 1 }]), [1]);
      const m = new Message('once more');
      m.messageId = 'again-1';
      m.properties.add('k', 'v/w');
      await send(dev.deviceId, m);
      const p = parsePublish(await first.readPacket(15_000));
      assert.equal(p.qos, 1);
      assert.equal(p.payload, 'once more');
      assert.ok(p.topic.startsWith(`devices/${dev.deviceId}/messages/devicebound/`), p.topic);
      const bag = bagOf(p.topic);
      assert.equal(bag['$.mid'], 'again-1');
      assert.equal(bag['$.to'], `/devices/${dev.deviceId}/messages/devicebound`);
      assert.equal(bag.k, 'v/w');
      first.destroy();  // no PUBACK

      // The persistent session still subscribes: the message comes without a new SUBSCRIBE.
      second = await RawMqtt.connect(hub.hostName);
      assert.equal(await second.handshake({ ...creds, cleanSession: false }), 0);
      assert.equal(second.sessionPresent, true);
      const again = parsePublish(await second.readPacket(15_000));
      assert.equal(again.payload, 'once more');
      assert.equal(bagOf(again.topic)['$.mid'], 'again-1');
      assert.equal(await pendingCount(registry, dev.deviceId), 1, 'not completed without a PUBACK');
      second.write(puback(again.packetId));
      await waitFor('cloudToDeviceMessageCount back to 0 after the PUBACK',
                    async () => (await pendingCount(registry, dev.deviceId)) === 0);
    } finally {
      first.destroy();
      if (second) second.destroy();
    }
  });

  it('a QoS 0 subscription gets QoS 0 publishes, completed on send', { timeout: 60_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `c2d-qos0-${pid}`);
    const creds = deviceCredentials(hub.hostName, dev.deviceId, dev.device.authentication.symmetricKey.primaryKey);
    await send(dev.deviceId, new Message('at most once'));
    const raw = await RawMqtt.connect(hub.hostName);
    try {
      assert.equal(await raw.handshake({ ...creds, cleanSession: true }), 0);
      assert.deepEqual(await raw.subscribe([{ filter: `devices/${dev.deviceId}/messages/devicebound/#`, qos: 0 }]), [0]);
      const p = parsePublish(await raw.readPacket(15_000));
      assert.equal(p.qos, 0);
      assert.equal(p.payload, 'at most once');
      await waitFor('cloudToDeviceMessageCount 0 without a PUBACK', async () => (await pendingCount(registry, dev.deviceId)) === 0);
    } finally {
      raw.destroy();
    }
  });

  it('a module gets no C2D messages, and its device\'s stay queued', { timeout: 60_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `c2d-module-${pid}`);
    const mod = await createModule(hub, registry, dev.deviceId, 'm1');
    const key = mod.module.authentication.symmetricKey.primaryKey;
    const clientId = `${dev.deviceId}/m1`;
    const raw = await RawMqtt.connect(hub.hostName);
    try {
      const resource = encodeUriComponentStrict(`${hub.hostName}/devices/${dev.deviceId}/modules/m1`);
      assert.equal(await raw.handshake({
        clientId,
        username: `${hub.hostName}/${clientId}/?api-version=2021-04-12`,
        password: sasToken({ resource, key, expiry: Math.floor(Date.now() / 1000) + 3600 }),
      }), 0);
      const codes = await raw.subscribe([{ filter: `devices/${dev.deviceId}/modules/m1/messages/devicebound/#`, qos: 1 },
                                         { filter: `devices/${dev.deviceId}/messages/devicebound/#`, qos: 1 }]);
      assert.deepEqual(codes, [1, 0x80], 'its own devicebound granted (delivering nothing), the device\'s refused');
      await send(dev.deviceId, new Message('for the device only'));
      await assert.rejects(raw.readPacket(2_000), /no MQTT packet/);
      assert.equal(await pendingCount(registry, dev.deviceId), 1);
    } finally {
      raw.destroy();
    }
  });
});
