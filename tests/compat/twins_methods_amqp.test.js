'use strict';
// Twins and direct methods over AMQP with the official SDKs (device.md §4.7, §4.8): azure-iot-device
// on Amqp and AmqpWs gets its twin, patches its reported properties, and receives desired
// changes; modules too (ModuleClient). Broken reported patches fail rather than hang (the SDK has
// no twin timeout).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Registry } = require('azure-iothub');
const { Amqp, AmqpWs } = require('azure-iot-device-amqp');
const { startHub } = require('./lib/hub');
const { createSasDevice, createModule, openClient, closeQuietly, within } = require('./lib/device');

// twin.properties.reported.update takes only a callback.
function report(twin, patch) {
  return new Promise((resolve, reject) => twin.properties.reported.update(patch, (err) => (err ? reject(err) : resolve())));
}

describe('twins over AMQP, device side', () => {
  let hub;
  let registry;

  before(async () => {
    hub = await startHub({ name: 'twins-amqp' });
    registry = Registry.fromConnectionString(hub.connectionString);
  });
  after(async () => {
    if (hub) await hub.dispose();
  });

  for (const [name, Transport] of [['Amqp', Amqp], ['AmqpWs', AmqpWs]]) {
    it(`${name}: getTwin, a reported patch, and the twin read back with its new $version`, { timeout: 60_000 }, async () => {
      const dev = await createSasDevice(hub, registry, `twin-${name.toLowerCase()}-${process.pid}`);
      const device = await openClient(dev.connectionString, Transport);
      let again;
      try {
        const twin = await within(20_000, device.getTwin(), 'getTwin');
        assert.equal(twin.properties.desired.$version, 1);
        assert.equal(twin.properties.reported.$version, 1);

        await within(20_000, report(twin, { temperature: 21.5, firmware: { version: '1.2.3' } }), 'reported update');
        await within(20_000, report(twin, { temperature: 22, state: 'on' }), 'second reported update');

        // A second connection of the same device reads what the first wrote.
        await closeQuietly(device);
        again = await openClient(dev.connectionString, Transport);
        const read = await within(20_000, again.getTwin(), 'getTwin again');
        assert.equal(read.properties.reported.$version, 3, 'each patch is a version');
        assert.equal(read.properties.reported.temperature, 22);
        assert.equal(read.properties.reported.state, 'on');
        assert.deepEqual(read.properties.reported.firmware, { version: '1.2.3' });
        assert.equal(read.properties.reported.$metadata, undefined, 'devices get no metadata');
        assert.deepEqual(again.errors, []);
      } finally {
        await closeQuietly(device);
        await closeQuietly(again);
      }
    });

    it(`${name}: a broken reported patch fails instead of hanging`, { timeout: 60_000 }, async () => {
      const dev = await createSasDevice(hub, registry, `twin-bad-${name.toLowerCase()}-${process.pid}`);
      const device = await openClient(dev.connectionString, Transport);
      try {
        const twin = await within(20_000, device.getTwin(), 'getTwin');
        // A key IoT Hub refuses ('.' is not allowed), then a patch over the 32 KB limit: each is
        // answered with status 400 and IoT Hub's JSON error body. The twin client makes a
        // FormatError of it, whose message is the parsed body; the AMQP transport then wraps it
        // in a plain Error that appends the body's "message" (amqp_common_errors.js).
        const broken = [
          [{ 'a.b': 1 }, /Property name .*a\.b.* contains an invalid character/],
          [{ big: Array(10).fill('y'.repeat(4000)) }, /'Properties\.Reported' size should be less than 32768 bytes/],
        ];
        for (const [patch, reason] of broken) {
          const err = await within(20_000, report(twin, patch).then(() => null, (e) => e), 'broken update');
          assert.ok(err, `the patch ${JSON.stringify(patch).slice(0, 40)} was accepted`);
          assert.match(err.message, /^could not update twin reported properties\. /);
          assert.match(err.message, reason);
        }
        // The twin still works, and nothing was written.
        const read = await within(20_000, twin.get(), 'twin.get');
        assert.equal(read.properties.reported.$version, 1);
        await within(20_000, report(twin, { fine: true }), 'a good update after the broken ones');
      } finally {
        await closeQuietly(device);
      }
    });

    it(`${name}: a module's twin is its own (ModuleClient)`, { timeout: 60_000 }, async () => {
      const deviceId = `twin-mod-${name.toLowerCase()}-${process.pid}`;
      const dev = await createSasDevice(hub, registry, deviceId);
      const { connectionString } = await createModule(hub, registry, deviceId, 'mod1');
      const module = await openClient(connectionString, Transport, { module: true });
      const device = await openClient(dev.connectionString, Transport);
      try {
        const twin = await within(20_000, module.getTwin(), 'module getTwin');
        await within(20_000, report(twin, { role: 'module' }), 'module reported update');
        const fresh = await within(20_000, twin.get(), 'module twin.get');
        assert.equal(fresh.properties.reported.role, 'module');
        assert.equal(fresh.properties.reported.$version, 2);
        const deviceTwin = await within(20_000, device.getTwin(), 'device getTwin');
        assert.equal(deviceTwin.properties.reported.role, undefined, "the device's twin is another");
        assert.equal(deviceTwin.properties.reported.$version, 1);
      } finally {
        await closeQuietly(module);
        await closeQuietly(device);
      }
    });
  }
});
