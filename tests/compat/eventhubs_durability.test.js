'use strict';
// Durability through the Event Hubs-compatible endpoint: an MQTT and an AMQP device send one
// message at a time; hubd is killed with SIGKILL while they send and restarted on the same data
// folder. An EventHubConsumerClient reading every partition from the earliest position then gets
// every message the hub acknowledged before the kill, in send order per device. (A message in
// flight at the crash may be stored or not, and may be stored twice after an SDK retry.)

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { EventHubConsumerClient, earliestEventPosition } = require('@azure/event-hubs');
const { Registry } = require('azure-iothub');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Amqp } = require('azure-iot-device-amqp');
const { startHub } = require('./lib/hub');
const { Message, createSasDevice, openClient, closeQuietly, within } = require('./lib/device');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Sender {
  constructor(client, deviceId) {
    this.deviceId = deviceId;
    this.client = client;
    this.acked = [];
    this.stopped = false;
    this.done = this._run();
  }

  async _run() {
    for (let i = 0; !this.stopped; i++) {
      const m = new Message(JSON.stringify({ i }));
      m.messageId = `${this.deviceId}-${i}`;
      try {
        await within(15_000, this.client.sendEvent(m), 'sendEvent');
        if (!this.stopped) this.acked.push(m.messageId);
      } catch {
        return;  // the hub went away
      }
    }
  }
}

describe('Event Hubs endpoint durability across kill -9', () => {
  let hub;
  const clients = [];
  const pid = process.pid;

  before(async () => {
    hub = await startHub({ name: 'eventhubs-durability' });
  });
  after(async () => {
    for (const c of clients) await closeQuietly(c);
    if (hub) await hub.dispose();
  });

  it('every acknowledged message is readable from the earliest position after a restart', { timeout: 180_000 },
     async () => {
       const registry = Registry.fromConnectionString(hub.connectionString);
       const senders = [];
       for (const [name, Transport] of [['mqtt', Mqtt], ['amqp', Amqp]]) {
         const d = await createSasDevice(hub, registry, `ehd-${name}-${pid}`);
         const client = await openClient(d.connectionString, Transport, { noRetry: true });
         clients.push(client);
         senders.push(new Sender(client, d.deviceId));
       }
       const deadline = Date.now() + 30_000;
       while (senders.some((s) => s.acked.length < 20) && Date.now() < deadline) await sleep(20);
       // Acknowledged before the kill: what the hub promised. Later acks (none can come) are ignored.
       const promised = senders.map((s) => s.acked.slice());
       await hub.kill9();
       for (const s of senders) s.stopped = true;
       for (const s of senders) assert.ok(s.acked.length >= 20, `${s.deviceId} sent ${s.acked.length} before the kill`);
       await hub.restart();

       const ps = hub.policies().find((x) => (x.name ?? x.keyName) === 'service');
       const consumer = new EventHubConsumerClient(
         '$Default', `Endpoint=sb://${hub.hostName}/;SharedAccessKeyName=service;SharedAccessKey=${ps.primaryKey};EntityPath=${hub.hostName}`);
       try {
         const events = [];
         const want = new Set(promised.flat());
         const seen = new Set();
         let done;
         const finished = new Promise((r) => { done = r; });
         const sub = consumer.subscribe({
           processEvents: async (batch) => {
             for (const e of batch) {
               events.push(e);
               if (want.has(e.messageId)) seen.add(e.messageId);
             }
             if (seen.size === want.size) done();
           },
           processError: async () => {},
         }, { startPosition: earliestEventPosition, maxWaitTimeInSeconds: 1 });
         const timer = setTimeout(done, 60_000);
         await finished;
         clearTimeout(timer);
         await sub.close();
         const missing = [...want].filter((id) => !seen.has(id));
         assert.deepEqual(missing, [], `acknowledged before the kill but not readable (${want.size} acknowledged)`);
         for (const ids of promised) {
           // In send order: the first occurrence of each acknowledged message, by sequence number.
           const first = new Map();
           for (const e of events) if (ids.includes(e.messageId) && !first.has(e.messageId)) first.set(e.messageId, e.sequenceNumber);
           const seqs = ids.map((id) => first.get(id));
           for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `${ids[i]} after ${ids[i - 1]}`);
         }
       } finally {
         await consumer.close().catch(() => {});
       }
     });
});
