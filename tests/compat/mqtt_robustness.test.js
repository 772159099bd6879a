'use strict';
// What the MQTT head does with input no SDK sends, over raw TLS sockets: a malformed or oversize
// packet or a QoS 2 PUBLISH closes that connection only (IoT Hub closes the connection on QoS 2
// and on a message over 256 KB); a connection that never sends CONNECT is closed after a
// timeout. Meanwhile an SDK device on the same hub keeps sending without a hitch.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Registry } = require('azure-iothub');
const { Mqtt } = require('azure-iot-device-mqtt');
const { startHub } = require('./lib/hub');
const { Message, createSasDevice, openClient, closeQuietly, within, storedEvents, eventsOf } = require('./lib/device');
const { RawMqtt, connectPacket, publishPacket, deviceCredentials } = require('./lib/raw_mqtt');

const PUBACK = 4;
// How long hubd may take to close a connection that misbehaved.
const CLOSE_WITHIN_MS = 5_000;
// A connection that never completes CONNECT: IoT Hub-like hubs give it seconds, not minutes.
const IDLE_CLOSE_WITHIN_MS = 45_000;

function describePacket(p) {
  if (p === 'timeout') return 'nothing (still open)';
  if (p === null) return 'a close';
  return `packet type ${p.type}`;
}

describe('MQTT robustness', () => {
  let hub;
  let registry;
  let bystander;          // an SDK device that must not notice anything
  let bystanderDisconnects = [];
  let bystanderSent = 0;
  let idleSilent;         // TLS, then nothing
  let idlePartial;        // TLS, then the first byte of a CONNECT
  let publishFirst;       // TLS, then a PUBLISH instead of CONNECT
  const pid = process.pid;

  before(async () => {
    hub = await startHub({ name: 'mqtt-robustness' });
    registry = Registry.fromConnectionString(hub.connectionString);
    // Opened first, checked last: the idle timeout runs while the other tests do.
    idleSilent = await RawMqtt.connect(hub.hostName);
    idlePartial = await RawMqtt.connect(hub.hostName);
    idlePartial.write(Buffer.from([0x10]));
    publishFirst = await RawMqtt.connect(hub.hostName);
    publishFirst.write(publishPacket({ topic: `devices/robust-sneaky-${pid}/messages/events/`, payload: 'sneaky' }));
    const dev = await createSasDevice(hub, registry, `robust-bystander-${pid}`);
    bystander = await openClient(dev.connectionString, Mqtt, { noRetry: true });
    bystander.deviceId = dev.deviceId;
    bystander.on('disconnect', (d) => bystanderDisconnects.push(d?.reason?.message ?? String(d)));
  });
  after(async () => {
    idleSilent?.destroy();
    idlePartial?.destroy();
    publishFirst?.destroy();
    await closeQuietly(bystander);
    if (hub) await hub.dispose();
  });

  async function bystanderSends(n = 5) {
    for (let i = 0; i < n; i++) {
      await within(20_000, bystander.sendEvent(new Message(`bystander ${bystanderSent}`)), 'bystander sendEvent');
      bystanderSent++;
    }
    assert.deepEqual(bystanderDisconnects, [], 'the SDK device was never disconnected');
  }

  // A raw connection of a fresh device that has shown it works: CONNACK 0 and a PUBACK'd PUBLISH.
  async function workingRawDevice(name) {
    const dev = await createSasDevice(hub, registry, `robust-${name}-${pid}`);
    const raw = await RawMqtt.connect(hub.hostName);
    const key = dev.device.authentication.symmetricKey.primaryKey;
    const rc = await raw.handshake(deviceCredentials(hub.hostName, dev.deviceId, key));
    assert.equal(rc, 0, 'CONNACK return code');
    raw.write(publishPacket({ topic: `devices/${dev.deviceId}/messages/events/`, payload: 'ok', packetId: 1 }));
    const ack = await raw.readPacket();
    assert.ok(ack, 'connection closed instead of PUBACK for a valid PUBLISH');
    assert.equal(ack.type, PUBACK);
    assert.equal(ack.body.readUInt16BE(0), 1, 'PUBACK packet id');
    return { raw, dev };
  }

  it('a PUBLISH with QoS 3 closes that connection only', { timeout: 30_000 }, async () => {
    const { raw } = await workingRawDevice('qos3');
    raw.write(Buffer.concat([Buffer.from([0x36]), publishPacket({ topic: 'devices/x/messages/events/', payload: 'x' }).subarray(1)]));
    assert.ok(await raw.closedWithin(CLOSE_WITHIN_MS), 'hubd closed the connection');
    await bystanderSends();
  });

  it('a remaining length of 5 bytes closes that connection only', { timeout: 30_000 }, async () => {
    const { raw } = await workingRawDevice('len5');
    raw.write(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x7f]));
    assert.ok(await raw.closedWithin(CLOSE_WITHIN_MS), 'hubd closed the connection');
    await bystanderSends();
  });

  it('a message over 256 KB closes that connection and is not stored; 200 KB is fine', { timeout: 60_000 }, async () => {
    const { raw, dev } = await workingRawDevice('oversize');
    const topic = `devices/${dev.deviceId}/messages/events/`;
    raw.write(publishPacket({ topic, payload: Buffer.alloc(200 * 1024, 0x61), packetId: 2 }));
    const ack = await raw.readPacket(15_000);
    assert.ok(ack, 'a 200 KB message is within the limit: PUBACK expected, the connection was closed');
    assert.equal(ack.type, PUBACK);
    // Just over IoT Hub's 256 KB message limit (and under hubd's MQTT packet limit).
    raw.write(publishPacket({ topic, payload: Buffer.alloc(256 * 1024 + 1, 0x62), packetId: 3 }));
    const next = await raw.readPacket(15_000).catch(() => 'timeout');
    assert.equal(next, null, `expected the connection to close, got ${describePacket(next)}`);
    await bystanderSends();
    const stored = eventsOf(await storedEvents(hub, { args: ['--device', dev.deviceId] }), dev.deviceId);
    assert.deepEqual(stored.map((e) => (typeof e.body === 'string' ? e.body.length : e.body)), [2, 200 * 1024],
                     'the valid message and the 200 KB one, not the oversize one');
  });

  it('a QoS 2 PUBLISH closes that connection and is not stored', { timeout: 30_000 }, async () => {
    const { raw, dev } = await workingRawDevice('qos2');
    raw.write(publishPacket({ topic: `devices/${dev.deviceId}/messages/events/`, payload: 'qos2', qos: 2, packetId: 9 }));
    const next = await raw.readPacket(CLOSE_WITHIN_MS).catch(() => 'timeout');
    assert.equal(next, null, `expected the connection to close, got ${describePacket(next)} (PUBREC is type 5)`);
    await bystanderSends();
    const stored = eventsOf(await storedEvents(hub, { args: ['--device', dev.deviceId] }), dev.deviceId);
    assert.deepEqual(stored.map((e) => e.body), ['ok'], 'only the QoS 1 message');
  });

  it('packets split into single bytes are reassembled; PINGREQ is answered', { timeout: 30_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `robust-bytes-${pid}`);
    const raw = await RawMqtt.connect(hub.hostName);
    const key = dev.device.authentication.symmetricKey.primaryKey;
    const bytes = Buffer.concat([
      connectPacket(deviceCredentials(hub.hostName, dev.deviceId, key)),
      publishPacket({ topic: `devices/${dev.deviceId}/messages/events/a=1`, payload: 'dribbled', packetId: 5 }),
      Buffer.from([0xc0, 0x00]),   // PINGREQ
    ]);
    for (const b of bytes) {
      raw.write(Buffer.from([b]));
      await new Promise((r) => setImmediate(r));
    }
    const types = [];
    for (let i = 0; i < 3; i++) types.push((await raw.readPacket())?.type ?? 'closed');
    // PUBACK waits for the durable write; PINGRESP need not, so their order is free.
    assert.equal(types[0], 2, 'CONNACK first');
    assert.deepEqual(types.slice(1).sort((x, y) => x - y), [4, 13], 'a PUBACK and a PINGRESP');
    raw.destroy();
    const stored = eventsOf(await storedEvents(hub, { args: ['--device', dev.deviceId] }), dev.deviceId);
    assert.deepEqual(stored.map((e) => [e.body, e.properties]), [['dribbled', { a: '1' }]]);
  });

  it('PUBACKs come in PUBLISH order; QoS 0 telemetry is stored without one', { timeout: 30_000 }, async () => {
    const { raw, dev } = await workingRawDevice('order');
    const topic = `devices/${dev.deviceId}/messages/events/`;
    const ids = Array.from({ length: 50 }, (_, k) => 100 + k);
    raw.write(Buffer.concat([
      ...ids.map((id) => publishPacket({ topic, payload: `q1-${id}`, packetId: id })),
      publishPacket({ topic, payload: 'q0', qos: 0 }),
    ]));
    const acked = [];
    for (let k = 0; k < ids.length; k++) {
      const p = await raw.readPacket();
      assert.ok(p && p.type === PUBACK, `PUBACK #${k}: got ${describePacket(p)}`);
      acked.push(p.body.readUInt16BE(0));
    }
    assert.deepEqual(acked, ids, 'MQTT 3.1.1 §4.6: PUBACKs in the order of the PUBLISHes');
    // QoS 0 has no acknowledgement to wait for: look a few times.
    let stored = [];
    for (let attempt = 0; attempt < 5 && stored.length < ids.length + 2; attempt++) {
      stored = eventsOf(await storedEvents(hub, { args: ['--device', dev.deviceId] }), dev.deviceId);
    }
    assert.deepEqual(stored.map((e) => e.body), ['ok', ...ids.map((id) => `q1-${id}`), 'q0']);
    raw.destroy();
  });

  it('a second CONNECT on a connection closes it', { timeout: 30_000 }, async () => {
    const { raw, dev } = await workingRawDevice('reconnect');
    raw.write(connectPacket(deviceCredentials(hub.hostName, dev.deviceId, dev.device.authentication.symmetricKey.primaryKey)));
    const next = await raw.readPacket(CLOSE_WITHIN_MS).catch(() => 'timeout');
    assert.equal(next, null, `expected the connection to close, got ${describePacket(next)}`);
    await bystanderSends(1);
  });

  it('a silent client is closed after 1.5 x its keep-alive', { timeout: 30_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `robust-keepalive-${pid}`);
    const raw = await RawMqtt.connect(hub.hostName);
    const fields = deviceCredentials(hub.hostName, dev.deviceId, dev.device.authentication.symmetricKey.primaryKey);
    assert.equal(await raw.handshake({ ...fields, keepAlive: 2 }), 0);
    const start = Date.now();
    assert.ok(await raw.closedWithin(8_000), 'still open 8 s after CONNECT with a 2 s keep-alive');
    assert.ok(Date.now() - start >= 2_000, `closed after ${Date.now() - start} ms, before the keep-alive lapsed`);
  });

  it('a PUBLISH before CONNECT is not stored and its connection is closed', { timeout: 30_000 }, async () => {
    // hubd tells protocols apart by the first byte (0x10 = MQTT CONNECT); anything else is taken
    // for HTTP, answered 400 and drained for up to 5 s before the close, so allow for that.
    const left = Math.max(0, 10_000 - (Date.now() - publishFirst.openedAt));
    assert.ok(await publishFirst.closedWithin(left), 'the connection is still open after 10 s');
    const deviceId = `robust-sneaky-${pid}`;
    assert.deepEqual(eventsOf(await storedEvents(hub, { args: ['--device', deviceId] }), deviceId), []);
  });

  it('connections that never finish CONNECT are closed after a timeout', { timeout: IDLE_CLOSE_WITHIN_MS + 10_000 }, async () => {
    for (const [what, raw] of [['silent', idleSilent], ['partial CONNECT', idlePartial]]) {
      const left = Math.max(0, IDLE_CLOSE_WITHIN_MS - (Date.now() - raw.openedAt));
      assert.ok(await raw.closedWithin(left), `the ${what} connection is still open after ${IDLE_CLOSE_WITHIN_MS / 1000} s`);
    }
    await bystanderSends(1);
  });
});
