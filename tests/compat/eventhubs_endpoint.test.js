'use strict';
// The Event Hubs-compatible built-in endpoint with the unmodified @azure/event-hubs client
// (6.0.4): EventHubConsumerClient on `Endpoint=sb://<HostName>/;SharedAccessKeyName=service;...`
// reads the telemetry that devices sent (here over AMQP with azure-iot-device-amqp).
//
// SDK facts used (protocol/service.md §7): SASL ANONYMOUS, CBS put-token per audience signed with
// the key's UTF-8 text, $management READ for the event hub and its partitions, partition
// receivers with a selector filter for the start position, IoT Hub's system properties as
// message annotations.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { EventHubConsumerClient, earliestEventPosition, latestEventPosition } = require('@azure/event-hubs');
const { Registry } = require('azure-iothub');
const { Client, Message } = require('azure-iot-device');
const { Amqp } = require('azure-iot-device-amqp');
const { startHub, hubctl } = require('./lib/hub');
const { within } = require('./lib/device');

// The built-in endpoint's event hub is the hub's name (an IP host name is kept whole); any other
// entity is not found.
let ENTITY;

// Collects events from one partition until `until(events)` holds (or the time is up).
async function collect(consumer, partitionId, startPosition, until, ms = 20_000) {
  const events = [];
  const errors = [];
  let done;
  const finished = new Promise((resolve) => { done = resolve; });
  const sub = consumer.subscribe(partitionId, {
    processEvents: async (batch) => {
      events.push(...batch);
      if (until(events)) done();
    },
    processError: async (err) => { errors.push(err); },
  }, { startPosition, maxWaitTimeInSeconds: 1 });
  const timer = setTimeout(done, ms);
  await finished;
  clearTimeout(timer);
  await sub.close();
  return { events, errors };
}

describe('Event Hubs-compatible endpoint', () => {
  let hub;
  let registry;
  let device;
  let deviceId;
  let consumer;
  const pid = process.pid;

  function eventHubsConnectionString(policy = 'service', key) {
    const p = hub.policies().find((x) => (x.name ?? x.keyName) === policy);
    return `Endpoint=sb://${hub.hostName}/;SharedAccessKeyName=${policy};SharedAccessKey=${key ?? p.primaryKey};` +
           `EntityPath=${ENTITY}`;
  }

  async function send(body, props = {}) {
    const m = new Message(JSON.stringify(body));
    m.messageId = `m-${crypto.randomUUID()}`;
    m.contentType = 'application/json';
    m.contentEncoding = 'utf-8';
    for (const [k, v] of Object.entries(props)) m.properties.add(k, v);
    await within(30_000, device.sendEvent(m), 'sendEvent');
    return m.messageId;
  }

  async function partitionOfDevice() {
    // The device's partition is the one that holds its events.
    for (const id of await consumer.getPartitionIds()) {
      const p = await consumer.getPartitionProperties(id);
      if (!p.isEmpty) return id;
    }
    throw new Error('no partition has events');
  }

  before(async () => {
    hub = await startHub({ name: 'eventhubs', args: ['--consumer-group', 'Analytics'] });
    ENTITY = hub.hostName.toLowerCase();
    registry = Registry.fromConnectionString(hub.connectionString);
    deviceId = `eh-dev-${pid}`;
    const { responseBody: dev } = await registry.create({ deviceId });
    device = Client.fromConnectionString(
      `HostName=${hub.hostName};DeviceId=${deviceId};SharedAccessKey=${dev.authentication.symmetricKey.primaryKey}`, Amqp);
    device.on('error', () => {});
    await within(20_000, device.open(), 'device open');
    consumer = new EventHubConsumerClient('$Default', eventHubsConnectionString());
  });
  after(async () => {
    if (consumer) await consumer.close().catch(() => {});
    if (device) await device.close().catch(() => {});
    if (hub) await hub.dispose();
  });

  it('event hub and partition properties ($management READ)', { timeout: 60_000 }, async () => {
    const props = await within(30_000, consumer.getEventHubProperties(), 'getEventHubProperties');
    assert.equal(props.name, ENTITY);
    assert.deepEqual(props.partitionIds, ['0', '1', '2', '3']);
    assert.ok(props.createdOn instanceof Date);
    const p = await consumer.getPartitionProperties('0');
    assert.equal(p.partitionId, '0');
    assert.equal(typeof p.isEmpty, 'boolean');
    assert.equal(typeof p.lastEnqueuedSequenceNumber, 'number');
  });

  it('events from the earliest position carry the body, properties and IoT Hub system properties',
     { timeout: 90_000 }, async () => {
       const t0 = Date.now();
       const ids = [];
       for (let i = 0; i < 5; i++) ids.push(await send({ i }, { seq: String(i) }));
       const partition = await partitionOfDevice();
       const { events, errors } = await collect(consumer, partition, earliestEventPosition,
                                                (evs) => ids.every((id) => evs.some((e) => e.messageId === id)));
       assert.deepEqual(errors.map((e) => e.message), []);
       const mine = events.filter((e) => ids.includes(e.messageId));
       assert.equal(mine.length, 5, `got ${events.length} events`);
       let last = -1;
       for (const [i, e] of mine.entries()) {
         assert.deepEqual(e.body, { i });
         assert.deepEqual(e.properties, { seq: String(i) });
         assert.ok(e.sequenceNumber > last, 'sequence numbers grow');
         last = e.sequenceNumber;
         assert.equal(typeof e.offset, 'string');
         assert.ok(e.enqueuedTimeUtc instanceof Date);
         assert.ok(e.enqueuedTimeUtc.getTime() >= t0 - 5000);
         assert.equal(e.contentType, 'application/json');
         const sp = e.systemProperties;
         assert.equal(sp['iothub-connection-device-id'], deviceId);
         assert.equal(JSON.parse(sp['iothub-connection-auth-method']).type, 'sas');
         assert.ok(sp['iothub-connection-auth-generation-id']);
         assert.equal(sp['iothub-message-source'], 'Telemetry');
       }
     });

  it('latest: only events sent after the receiver started', { timeout: 90_000 }, async () => {
    const before = await send({ when: 'before' });
    const partition = await partitionOfDevice();
    let sent;
    const events = [];
    const sub = consumer.subscribe(partition, {
      processEvents: async (batch) => { events.push(...batch); },
      processError: async () => {},
    }, { startPosition: latestEventPosition, maxWaitTimeInSeconds: 1 });
    await new Promise((r) => setTimeout(r, 2000));  // let the receiver attach
    sent = await send({ when: 'after' });
    const deadline = Date.now() + 20_000;
    while (!events.some((e) => e.messageId === sent) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    await sub.close();
    assert.ok(events.some((e) => e.messageId === sent), 'the new event arrives');
    assert.ok(!events.some((e) => e.messageId === before), 'the old one does not');
  });

  it('a sequence-number position starts after that event', { timeout: 90_000 }, async () => {
    const first = await send({ n: 1 });
    const second = await send({ n: 2 });
    const partition = await partitionOfDevice();
    const all = await collect(consumer, partition, earliestEventPosition, (evs) => evs.some((e) => e.messageId === second));
    const firstEvent = all.events.find((e) => e.messageId === first);
    assert.ok(firstEvent);
    const { events } = await collect(consumer, partition, { sequenceNumber: firstEvent.sequenceNumber },
                                     (evs) => evs.some((e) => e.messageId === second));
    assert.equal(events[0].messageId, second, 'exclusive: the next event first');
  });

  it('offset (exclusive, inclusive), sequence number (inclusive) and enqueued-time positions', { timeout: 120_000 },
     async () => {
       const ids = [];
       for (let i = 0; i < 5; i++) {
         ids.push(await send({ pos: i }));
         await new Promise((r) => setTimeout(r, 30));  // distinct enqueued times
       }
       const partition = await partitionOfDevice();
       const last = (evs) => evs.some((e) => e.messageId === ids[4]);
       const all = await collect(consumer, partition, earliestEventPosition, last);
       const mine = ids.map((id) => all.events.find((e) => e.messageId === id));
       assert.ok(mine.every(Boolean), 'all five from the earliest position');
       const e2 = mine[2];
       const read = async (position) => {
         const { events, errors } = await collect(consumer, partition, position, last);
         assert.deepEqual(errors.map((e) => e.message), []);
         return events.map((e) => e.messageId);
       };
       assert.deepEqual(await read({ offset: e2.offset }), ids.slice(3), 'offset, exclusive');
       assert.deepEqual(await read({ offset: e2.offset, isInclusive: true }), ids.slice(2), 'offset, inclusive');
       assert.deepEqual(await read({ sequenceNumber: e2.sequenceNumber, isInclusive: true }), ids.slice(2),
                        'sequence number, inclusive');
       assert.deepEqual(await read({ enqueuedOn: e2.enqueuedTimeUtc }), ids.slice(3), 'enqueued after e2');
       assert.deepEqual(await read({ enqueuedOn: new Date(e2.enqueuedTimeUtc.getTime() - 1) }), ids.slice(2),
                        'enqueued after just before e2');
       for (let i = 1; i < 5; i++) assert.ok(mine[i].sequenceNumber > mine[i - 1].sequenceNumber, 'in partition order');
     });

  it('epoch receivers: a higher ownerLevel displaces, a lower one and a non-epoch one are refused',
     { timeout: 90_000 }, async () => {
       const partition = '1';
       const clients = [1, 2, 3, 4].map(() => new EventHubConsumerClient('$Default', eventHubsConnectionString()));
       const errs = clients.map(() => []);
       const subs = [];
       const start = (i, ownerLevel) => {
         const opts = { startPosition: latestEventPosition, maxWaitTimeInSeconds: 1 };
         if (ownerLevel !== undefined) opts.ownerLevel = ownerLevel;
         subs.push(clients[i].subscribe(partition, {
           processEvents: async () => {},
           processError: async (err) => { errs[i].push(err); },
         }, opts));
       };
       const waitFor = async (cond, what) => {
         const deadline = Date.now() + 20_000;
         while (!cond() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
         assert.ok(cond(), what);
       };
       const disconnected = (i) => errs[i].some((e) => e.code === 'ReceiverDisconnectedError' ||
                                                      e.name === 'ReceiverDisconnectedError');
       try {
         start(0, 1);
         await new Promise((r) => setTimeout(r, 2000));  // let it attach
         assert.deepEqual(errs[0], []);
         start(1, 2);
         await waitFor(() => disconnected(0), `the epoch 1 receiver is displaced: ${errs[0].map((e) => e.code)}`);
         assert.match(errs[0].find((e) => e.code === 'ReceiverDisconnectedError').message, /higher epoch/);
         start(2, 1);
         await waitFor(() => disconnected(2), `a lower epoch is refused: ${errs[2].map((e) => e.code)}`);
         start(3);
         await waitFor(() => disconnected(3), `a non-epoch receiver is refused: ${errs[3].map((e) => e.code)}`);
         assert.deepEqual(errs[1], [], 'the epoch 2 receiver keeps the partition');
       } finally {
         await Promise.all(subs.map((s) => s.close().catch(() => {})));
         await Promise.all(clients.map((c) => c.close().catch(() => {})));
       }
     });

  it('consumer groups: each configured group sees every event, an unknown one is not found',
     { timeout: 90_000 }, async () => {
       const ids = [];
       for (let i = 0; i < 3; i++) ids.push(await send({ cg: i }));
       const partition = await partitionOfDevice();
       const other = new EventHubConsumerClient('analytics', eventHubsConnectionString());  // case-insensitive
       const unknown = new EventHubConsumerClient('nosuchgroup', eventHubsConnectionString(),
                                                  { retryOptions: { maxRetries: 0, timeoutInMs: 10_000 } });
       try {
         const all = (evs) => ids.every((id) => evs.some((e) => e.messageId === id));
         const [a, b] = await Promise.all([collect(consumer, partition, earliestEventPosition, all),
                                           collect(other, partition, earliestEventPosition, all)]);
         assert.deepEqual(a.errors.map((e) => e.message), []);
         assert.deepEqual(b.errors.map((e) => e.message), []);
         assert.ok(all(a.events), '$Default sees every event');
         assert.ok(all(b.events), 'Analytics sees every event');
         const u = await collect(unknown, partition, earliestEventPosition, () => false, 5_000);
         assert.equal(u.events.length, 0);
         assert.ok(u.errors.some((e) => e.code === 'MessagingEntityNotFoundError'),
                   `an unknown group is not found: ${u.errors.map((e) => `${e.code}: ${e.message}`)}`);
       } finally {
         await other.close().catch(() => {});
         await unknown.close().catch(() => {});
       }
     });

  it('hubctl connection-string --eventhub prints a string EventHubConsumerClient works with', { timeout: 60_000 },
     async () => {
       const r = await hubctl(hub, 'connection-string', '--eventhub');
       assert.equal(r.code, 0, r.stderr);
       const out = r.stdout.trim();
       const key = hub.policies().find((x) => (x.name ?? x.keyName) === 'iothubowner').primaryKey;
       assert.match(out, /^Endpoint=sb:\/\/[^/]+\/;SharedAccessKeyName=iothubowner;SharedAccessKey=[^;]+;EntityPath=[^;]+$/);
       assert.ok(out.startsWith(`Endpoint=sb://${hub.hostName}/;`));
       assert.ok(out.includes(`;SharedAccessKey=${key};`));
       const entity = out.split('EntityPath=')[1];
       const client = new EventHubConsumerClient('$Default', out);
       try {
         const props = await within(30_000, client.getEventHubProperties(), 'getEventHubProperties');
         assert.equal(props.name, entity);
         const id = await send({ via: 'printed connection string' });
         const partition = await partitionOfDevice();
         const { events, errors } = await collect(client, partition, earliestEventPosition,
                                                  (evs) => evs.some((e) => e.messageId === id));
         assert.deepEqual(errors.map((e) => e.message), []);
         assert.ok(events.some((e) => e.messageId === id));
       } finally {
         await client.close().catch(() => {});
       }
     });

  it('a wrong key is refused', { timeout: 60_000 }, async () => {
    const bad = new EventHubConsumerClient('$Default',
                                           eventHubsConnectionString('service', crypto.randomBytes(32).toString('base64')),
                                           { retryOptions: { maxRetries: 0, timeoutInMs: 10_000 } });
    try {
      await assert.rejects(within(30_000, bad.getEventHubProperties(), 'getEventHubProperties'),
                           (err) => /unauthori/i.test(`${err.code} ${err.name} ${err.message}`) ||
                                    assert.fail(`${err.code} ${err.name}: ${err.message}`));
    } finally {
      await bad.close().catch(() => {});
    }
  });
});
