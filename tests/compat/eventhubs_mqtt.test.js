'use strict';
// Telemetry sent over MQTT (Mqtt and MqttWs), read with @azure/event-hubs' EventHubConsumerClient
// from the Event Hubs-compatible endpoint: every system and application property the device set
// arrives intact, the hub's stamps are there, and each device's events keep their order.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { EventHubConsumerClient, earliestEventPosition } = require('@azure/event-hubs');
const { Registry } = require('azure-iothub');
const { Client, Message } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { startHub, hubctl } = require('./lib/hub');
const { within } = require('./lib/device');

describe('MQTT telemetry through the Event Hubs-compatible endpoint', () => {
  let hub;
  let registry;
  let consumer;
  const clients = [];

  before(async () => {
    hub = await startHub({ name: 'eventhubs-mqtt' });
    registry = Registry.fromConnectionString(hub.connectionString);
    const r = await hubctl(hub, 'connection-string', '--eventhub', '--policy', 'service');
    assert.equal(r.code, 0, r.stderr);
    const cs = r.stdout.trim();
    consumer = new EventHubConsumerClient('$Default', cs);
  });
  after(async () => {
    for (const c of clients) await c.close().catch(() => {});
    if (consumer) await consumer.close().catch(() => {});
    if (hub) await hub.dispose();
  });

  async function connect(transport, name) {
    const deviceId = `ehmqtt-${name}-${process.pid}`;
    const { responseBody: dev } = await registry.create({ deviceId });
    const client = Client.fromConnectionString(
      `HostName=${hub.hostName};DeviceId=${deviceId};SharedAccessKey=${dev.authentication.symmetricKey.primaryKey}`,
      transport);
    client.on('error', () => {});
    clients.push(client);
    await within(20_000, client.open(), `${name} open`);
    return { client, deviceId };
  }

  it('every property set on Mqtt and MqttWs arrives intact, in order per device', { timeout: 120_000 }, async () => {
    const senders = [await connect(Mqtt, 'tcp'), await connect(MqttWs, 'ws')];
    const sent = new Map();  // messageId -> { deviceId, index, corr }
    for (const { client, deviceId } of senders) {
      const batch = [];
      for (let i = 0; i < 20; i++) {
        const m = new Message(JSON.stringify({ device: deviceId, i }));
        m.messageId = `mid-${crypto.randomUUID()}`;
        m.correlationId = `corr-${i}`;
        m.contentType = 'application/json';
        m.contentEncoding = 'utf-8';
        m.properties.add('alert', 'hot/cold & more');
        m.properties.add('unicode', 'temp\u00e9rature \u2103');
        m.properties.add('index', String(i));
        sent.set(m.messageId, { deviceId, index: i });
        batch.push(within(30_000, client.sendEvent(m), 'sendEvent'));
      }
      await Promise.all(batch);
    }

    const events = [];
    let done;
    const finished = new Promise((resolve) => { done = resolve; });
    const sub = consumer.subscribe({
      processEvents: async (batch, context) => {
        for (const e of batch) if (sent.has(e.messageId)) events.push({ ...e, partitionId: context.partitionId });
        if (events.length >= sent.size) done();
      },
      processError: async () => {},
    }, { startPosition: earliestEventPosition, maxWaitTimeInSeconds: 1 });
    const timer = setTimeout(done, 60_000);
    await finished;
    clearTimeout(timer);
    await sub.close();

    assert.equal(events.length, sent.size, `read ${events.length} of ${sent.size} events`);
    const lastIndex = new Map();
    for (const e of events) {
      const want = sent.get(e.messageId);
      assert.deepEqual(e.body, { device: want.deviceId, i: want.index });
      assert.equal(e.correlationId, `corr-${want.index}`);
      assert.equal(e.contentType, 'application/json');
      assert.equal(e.systemProperties.contentEncoding, 'utf-8');  // the SDK puts it among the system properties
      assert.deepEqual(e.properties, { alert: 'hot/cold & more', unicode: 'temp\u00e9rature \u2103',
                                       index: String(want.index) });
      const sp = e.systemProperties;
      assert.equal(sp['iothub-connection-device-id'], want.deviceId);
      assert.equal(JSON.parse(sp['iothub-connection-auth-method']).scope, 'device');
      assert.ok(sp['iothub-connection-auth-generation-id']);
      assert.equal(sp['iothub-message-source'], 'Telemetry');
      assert.ok(e.enqueuedTimeUtc instanceof Date);
      // A device's events all live in one partition and come out in the order they were stored.
      const prev = lastIndex.get(want.deviceId);
      if (prev) {
        assert.equal(e.partitionId, prev.partitionId, 'one partition per device');
        assert.ok(e.sequenceNumber > prev.seq, 'sequence numbers grow');
      }
      lastIndex.set(want.deviceId, { seq: e.sequenceNumber, partitionId: e.partitionId });
    }
    assert.equal(lastIndex.size, 2, 'both devices were read');
  });
});
