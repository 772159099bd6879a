'use strict';
// Cloud-to-device messages over AMQP with the official SDKs (service.md §6.3-6.4, device.md
// §4.3-4.6): azure-iothub's Client.send queues messages for a device, azure-iot-device on Amqp and
// AmqpWs receives them on its devicebound link and completes, rejects or abandons them, and the
// service's feedback receiver (Client.getFeedbackReceiver) gets exactly the records the ack modes
// call for. Also: the delivery count limit, the queue depth limit, unknown devices, the 64 KB
// limit, expiry while the device is offline, and messages that survive a kill -9 of hubd.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const { Client, Registry } = require('azure-iothub');
const { Amqp, AmqpWs } = require('azure-iot-device-amqp');
const { Message, errors } = require('azure-iot-common');
const { startHub } = require('./lib/hub');
const { createSasDevice, openClient, closeQuietly, within } = require('./lib/device');
const { rejectsWith } = require('./lib/util');

const MAX_DELIVERY_COUNT = 10;   // IoT Hub's default cloudToDevice.maxDeliveryCount (hubd's too)

// Polls `pred` until it holds; fails with `what` after timeoutMs.
async function until(what, pred, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A device client (opened) whose C2D messages are collected in `inbox`.
async function listeningDevice(connectionString, Transport) {
  const device = await openClient(connectionString, Transport);
  device.inbox = [];
  device.on('message', (m) => device.inbox.push(m));
  return device;
}

function c2dMessage(body, fields = {}) {
  const m = new Message(body);
  Object.assign(m, fields);
  return m;
}

// Every feedback record the service's feedback receiver got, each with the message it came in.
class FeedbackLog {
  constructor(receiver) {
    this.records = [];
    this.messages = [];
    this.errors = [];
    receiver.on('error', (err) => this.errors.push(err));
    receiver.on('message', (msg) => {
      this.messages.push(msg);
      for (const rec of JSON.parse(msg.data.toString())) this.records.push(rec);
    });
  }

  of(deviceId) {
    return this.records.filter((r) => r.deviceId === deviceId);
  }

  // The device's records once there are `count`, after `quietMs` more in which no other may come.
  async settled(deviceId, count, { timeoutMs = 20_000, quietMs = 1500 } = {}) {
    await until(`${count} feedback record(s) for ${deviceId} (have ${JSON.stringify(this.of(deviceId))})`,
                () => this.of(deviceId).length >= count, timeoutMs);
    await sleep(quietMs);
    return this.of(deviceId);
  }
}

function statusById(records) {
  return Object.fromEntries(records.map((r) => [r.originalMessageId, r.statusCode]));
}

describe('cloud-to-device over AMQP', () => {
  let hub;
  let registry;
  let service;
  let feedback;

  before(async () => {
    hub = await startHub({ name: 'c2d-amqp' });
    registry = Registry.fromConnectionString(hub.connectionString);
    service = Client.fromConnectionString(hub.connectionString);
    service.on('error', () => {});
    await within(30_000, service.open(), 'service open');
    const { result: receiver } = await within(30_000, service.getFeedbackReceiver(), 'getFeedbackReceiver');
    feedback = new FeedbackLog(receiver);
  });
  after(async () => {
    if (service) await within(10_000, service.close(), 'service close').catch(() => {});
    if (hub) await hub.dispose();
  });

  for (const [name, Transport] of [['Amqp', Amqp], ['AmqpWs', AmqpWs]]) {
    it(`${name}: the device gets what Client.send sent, and completes, rejects and abandons it`,
       { timeout: 60_000 }, async () => {
         const dev = await createSasDevice(hub, registry, `c2d-${name.toLowerCase()}-${process.pid}`);
         const device = await listeningDevice(dev.connectionString, Transport);
         try {
           const uuid = crypto.randomUUID();
           const expiry = Date.now() + 10 * 60_000;
           await within(20_000, service.send(dev.deviceId, c2dMessage('complete me', {
             messageId: uuid, correlationId: 'corr-1', ack: 'full', contentType: 'application/json',
             contentEncoding: 'utf-8', expiryTimeUtc: expiry,
           })), 'send 1');
           const withProps = c2dMessage('reject me', { messageId: `${name}-reject`, ack: 'full' });
           withProps.properties.add('colour', 'red');
           await within(20_000, service.send(dev.deviceId, withProps), 'send 2');
           await within(20_000, service.send(dev.deviceId, c2dMessage('abandon me', { messageId: `${name}-abandon`, ack: 'full' })),
                        'send 3');

           await until('3 messages on the device', () => device.inbox.length >= 3);
           const [first, second, third] = device.inbox;
           assert.equal(first.data.toString(), 'complete me');
           assert.equal(first.messageId, uuid, 'a uuid id (an AMQP uuid on the wire) comes back as its text');
           assert.equal(first.correlationId, 'corr-1');
           assert.equal(first.ack, 'full');
           assert.equal(first.contentType, 'application/json');
           assert.equal(first.contentEncoding, 'utf-8');
           assert.equal(new Date(first.expiryTimeUtc).getTime(), expiry);
           assert.equal(first.to, `/devices/${dev.deviceId}/messages/devicebound`);
           assert.equal(second.data.toString(), 'reject me');
           assert.equal(second.properties.getValue('colour'), 'red');
           assert.equal(third.messageId, `${name}-abandon`);

           await within(10_000, device.complete(first), 'complete');
           await within(10_000, device.reject(second), 'reject');
           await within(10_000, device.abandon(third), 'abandon');
           await until('the abandoned message again', () => device.inbox.length >= 4);
           assert.equal(device.inbox[3].messageId, `${name}-abandon`);
           await within(10_000, device.complete(device.inbox[3]), 'complete the redelivery');

           const records = await feedback.settled(dev.deviceId, 3);
           assert.deepEqual(statusById(records),
                            { [uuid]: 'Success', [`${name}-reject`]: 'Rejected', [`${name}-abandon`]: 'Success' });
           for (const r of records) {
             assert.equal(r.deviceGenerationId, dev.generationId);
             assert.equal(typeof r.description, 'string');
             assert.ok(r.description.length > 0);
             assert.ok(!Number.isNaN(Date.parse(r.enqueuedTimeUtc)), r.enqueuedTimeUtc);
           }
           assert.equal(records.find((r) => r.statusCode === 'Success').description, 'Success');
           assert.equal(device.inbox.length, 4, 'nothing is delivered twice');
         } finally {
           await closeQuietly(device);
         }
       });
  }

  it('feedback messages are what the SDK reads: a JSON array, IoT Hub content type and user id', { timeout: 30_000 },
     async () => {
       await until('some feedback message', () => feedback.messages.length > 0);
       const msg = feedback.messages[0];
       assert.equal(msg.transportObj.content_type, 'application/vnd.microsoft.iothub.feedback.json');
       assert.ok(msg.transportObj.user_id, 'user-id: the hub name');
       assert.ok(Array.isArray(JSON.parse(msg.data.toString())));
       assert.deepEqual(feedback.errors, []);
     });

  it('each ack mode yields exactly its records: none, positive, negative, full', { timeout: 60_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `c2d-acks-${process.pid}`);
    const device = await listeningDevice(dev.connectionString, Amqp);
    try {
      const acks = ['none', 'positive', 'negative', 'full'];
      for (const ack of acks) {
        for (const action of ['complete', 'reject']) {
          const m = c2dMessage(`${ack}/${action}`, { messageId: `${ack}-${action}` });
          if (ack !== 'none' || action === 'reject') m.ack = ack;  // 'none' both explicit and implied
          m.properties.add('action', action);
          await within(20_000, service.send(dev.deviceId, m), `send ${ack}/${action}`);
        }
      }
      await until('8 messages', () => device.inbox.length >= 8);
      for (const m of device.inbox) {
        const action = m.properties.getValue('action');
        await within(10_000, action === 'complete' ? device.complete(m) : device.reject(m), action);
      }
      const records = await feedback.settled(dev.deviceId, 4, { quietMs: 2500 });
      assert.deepEqual(statusById(records), {
        'positive-complete': 'Success',
        'negative-reject': 'Rejected',
        'full-complete': 'Success',
        'full-reject': 'Rejected',
      });
      assert.equal(records.length, 4, 'no record twice');
    } finally {
      await closeQuietly(device);
    }
  });

  it(`abandoned ${MAX_DELIVERY_COUNT} times, a message is dead-lettered (DeliveryCountExceeded) and not delivered again`,
     { timeout: 60_000 }, async () => {
       const dev = await createSasDevice(hub, registry, `c2d-abandon-${process.pid}`);
       const device = await openClient(dev.connectionString, Amqp);
       let deliveries = 0;
       device.on('message', (m) => {
         deliveries += 1;
         device.abandon(m).catch(() => {});
       });
       try {
         await within(20_000, service.send(dev.deviceId, c2dMessage('hot potato', { messageId: 'potato', ack: 'negative' })),
                      'send');
         const records = await feedback.settled(dev.deviceId, 1, { quietMs: 2000 });
         assert.equal(records.length, 1);
         assert.equal(records[0].statusCode, 'DeliveryCountExceeded');
         assert.equal(records[0].originalMessageId, 'potato');
         assert.equal(deliveries, MAX_DELIVERY_COUNT);
         const { responseBody: d } = await registry.get(dev.deviceId);
         assert.equal(d.cloudToDeviceMessageCount, 0);
       } finally {
         await closeQuietly(device);
       }
     });

  it('a message the device left unsettled is delivered again as soon as it reconnects (not after the lock timeout)',
     { timeout: 60_000 }, async () => {
       const dev = await createSasDevice(hub, registry, `c2d-unsettled-${process.pid}`);
       let device = await listeningDevice(dev.connectionString, Amqp);
       try {
         await within(20_000, service.send(dev.deviceId, c2dMessage('pending', { messageId: 'p1' })), 'send');
         await until('the message', () => device.inbox.length >= 1);
         await closeQuietly(device);   // without settling it
         device = await listeningDevice(dev.connectionString, AmqpWs);
         // The lock would last 60 s; the closed connection gave it back.
         await until('the message again', () => device.inbox.length >= 1, 10_000);
         assert.equal(device.inbox[0].messageId, 'p1');
         await within(10_000, device.complete(device.inbox[0]), 'complete');
       } finally {
         await closeQuietly(device);
       }
     });

  it('the queue holds 50 messages per device; the 51st gets DeviceMaximumQueueDepthExceededError', { timeout: 60_000 },
     async () => {
       const dev = await createSasDevice(hub, registry, `c2d-depth-${process.pid}`);
       for (let i = 0; i < 50; i++) await within(20_000, service.send(dev.deviceId, c2dMessage(`m${i}`)), `send ${i}`);
       await rejectsWith(within(20_000, service.send(dev.deviceId, c2dMessage('one too many')), 'send 51'),
                         errors.DeviceMaximumQueueDepthExceededError);
       const { responseBody: d } = await registry.get(dev.deviceId);
       assert.equal(d.cloudToDeviceMessageCount, 50);
     });

  it('an unknown device gets DeviceNotFoundError; a message over 64 KB gets MessageTooLargeError', { timeout: 30_000 },
     async () => {
       await rejectsWith(within(20_000, service.send(`nobody-${process.pid}`, c2dMessage('x')), 'send'),
                         errors.DeviceNotFoundError);
       const dev = await createSasDevice(hub, registry, `c2d-large-${process.pid}`);
       await rejectsWith(within(20_000, service.send(dev.deviceId, c2dMessage(Buffer.alloc(64 * 1024 + 1, 'x'))), 'send'),
                         errors.MessageTooLargeError);
       await within(20_000, service.send(dev.deviceId, c2dMessage(Buffer.alloc(60 * 1024, 'x'))), 'send 60 KB');
     });

  it('a message whose expiry passes while the device is offline yields Expired and is never delivered',
     { timeout: 60_000 }, async () => {
       const dev = await createSasDevice(hub, registry, `c2d-ttl-${process.pid}`);
       await within(20_000, service.send(dev.deviceId, c2dMessage('too late', {
         messageId: 'short-lived', ack: 'full', expiryTimeUtc: Date.now() + 1500,
       })), 'send');
       const records = await feedback.settled(dev.deviceId, 1, { quietMs: 500 });
       assert.equal(records[0].statusCode, 'Expired');
       assert.equal(records[0].originalMessageId, 'short-lived');

       const device = await listeningDevice(dev.connectionString, Amqp);
       try {
         await within(20_000, service.send(dev.deviceId, c2dMessage('in time', { messageId: 'fresh' })), 'send fresh');
         await until('the fresh message', () => device.inbox.length >= 1);
         await sleep(1000);
         assert.deepEqual(device.inbox.map((m) => m.messageId), ['fresh']);
         await within(10_000, device.complete(device.inbox[0]), 'complete');
       } finally {
         await closeQuietly(device);
       }
     });
});

describe('cloud-to-device over AMQP across a crash', () => {
  let hub;

  before(async () => {
    hub = await startHub({ name: 'c2d-amqp-crash' });
  });
  after(async () => {
    if (hub) await hub.dispose();
  });

  it('messages queued for an offline device are delivered after kill -9 and restart', { timeout: 90_000 }, async () => {
    const registry = Registry.fromConnectionString(hub.connectionString);
    const dev = await createSasDevice(hub, registry, `c2d-crash-${process.pid}`);
    const service = Client.fromConnectionString(hub.connectionString);
    service.on('error', () => {});
    await within(30_000, service.open(), 'service open');
    try {
      for (let i = 0; i < 3; i++) {
        await within(20_000, service.send(dev.deviceId, c2dMessage(`durable ${i}`, { messageId: `d${i}` })), `send ${i}`);
      }
    } finally {
      await within(10_000, service.close(), 'service close').catch(() => {});
    }
    const { signal } = await hub.kill9();
    assert.equal(signal, 'SIGKILL');
    await hub.start();

    const { responseBody: d } = await Registry.fromConnectionString(hub.connectionString).get(dev.deviceId);
    assert.equal(d.cloudToDeviceMessageCount, 3);
    const device = await listeningDevice(dev.connectionString, Amqp);
    try {
      await until('the 3 queued messages', () => device.inbox.length >= 3);
      assert.deepEqual(device.inbox.map((m) => m.data.toString()), ['durable 0', 'durable 1', 'durable 2']);
      for (const m of device.inbox) await within(10_000, device.complete(m), 'complete');
    } finally {
      await closeQuietly(device);
    }
  });
});
