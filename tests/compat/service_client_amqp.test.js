'use strict';
// The service SDK's AMQP Client (azure-iothub 1.16.6, service.md §6): it opens with a CBS
// put-token for the hub (a policy with ServiceConnect), then attaches the C2D sender
// (/messages/devicebound) and, on demand, the feedback and file-notification receivers. These
// attach; C2D sends fail with NotImplementedError until cloud-to-device messaging exists. A
// policy without ServiceConnect cannot open the client.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Client, Registry } = require('azure-iothub');
const { Message } = require('azure-iot-common');
const { errors } = require('azure-iot-common');
const { startHub } = require('./lib/hub');
const { within } = require('./lib/device');
const { rejectsWith } = require('./lib/util');

describe('service Client over AMQP', () => {
  let hub;
  let client;

  before(async () => {
    hub = await startHub({ name: 'service-amqp' });
    await Registry.fromConnectionString(hub.connectionString).create({ deviceId: `svc-dev-${process.pid}` });
  });
  after(async () => {
    if (client) await within(10_000, client.close(), 'close').catch(() => {});
    if (hub) await hub.dispose();
  });

  it('opens, attaches the feedback and file-notification receivers, and sends to a device',
     { timeout: 90_000 }, async () => {
       client = Client.fromConnectionString(hub.connectionString);
       await within(30_000, client.open(), 'open');
       const { result: feedback } = await within(30_000, client.getFeedbackReceiver(), 'getFeedbackReceiver');
       assert.ok(feedback);
       const { result: files } =
         await within(30_000, client.getFileNotificationReceiver(), 'getFileNotificationReceiver');
       assert.ok(files);
       await within(30_000, client.send(`svc-dev-${process.pid}`, new Message('hello')), 'send');
       await rejectsWith(within(30_000, client.send(`nobody-${process.pid}`, new Message('hello')), 'send'),
                         errors.DeviceNotFoundError);
     });

  it('a policy without ServiceConnect cannot open the client', { timeout: 60_000 }, async () => {
    const bad = Client.fromConnectionString(hub.policyConnectionString('registryRead'));
    try {
      await assert.rejects(within(30_000, bad.open(), 'open'),
                           (err) => /unauthori/i.test(`${err.name} ${err.message} ${err.amqpError?.name} ${err.amqpError?.message}`) ||
                                    assert.fail(`${err.name}: ${err.message} / ${err.amqpError?.name}: ${err.amqpError?.message}`));
    } finally {
      await within(10_000, bad.close(), 'close').catch(() => {});
    }
  });
});
