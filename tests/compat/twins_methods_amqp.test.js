'use strict';
// Twins and direct methods over AMQP with the official SDKs (device.md §4.7, §4.8): azure-iot-device
// on Amqp and AmqpWs gets its twin, patches its reported properties (visible to azure-iothub's
// Registry.getTwin with $metadata and $version), and receives the desired changes made with
// Registry.updateTwin; modules too (ModuleClient). Broken reported patches fail rather than hang
// (the SDK has no twin timeout). Direct methods: onDeviceMethod / onMethod answer
// Client.invokeDeviceMethod with status and payload, 100 concurrent calls each get their own
// answer, no handler is DeviceNotOnline and a handler that never answers is a GatewayTimeout.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Client: ServiceClient, Registry } = require('azure-iothub');
const { Amqp, AmqpWs } = require('azure-iot-device-amqp');
const { errors } = require('azure-iot-common');
const { startHub } = require('./lib/hub');
const { createSasDevice, createModule, openClient, closeQuietly, within } = require('./lib/device');
const { rejectsWith } = require('./lib/util');

// twin.properties.reported.update takes only a callback.
function report(twin, patch) {
  return new Promise((resolve, reject) => twin.properties.reported.update(patch, (err) => (err ? reject(err) : resolve())));
}

// Polls `pred` until it holds; fails with `what` after timeoutMs.
async function until(what, pred, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// A twin whose desired patches are collected in twin.patches. The SDK enables desired
// notifications when the listener is added, without a way to wait for it; its requests go in
// order on one link, so a reported patch answered afterwards means notifications are on.
async function listeningTwin(client) {
  const twin = await within(20_000, client.getTwin(), 'getTwin');
  twin.patches = [];
  // Copies: the SDK also emits its live desired object (at getTwin), which later patches change.
  twin.on('properties.desired', (p) => twin.patches.push(structuredClone(p)));
  await within(20_000, report(twin, { listening: true }), 'reported update after enabling desired notifications');
  return twin;
}

function patchWithVersion(twin, version) {
  return twin.patches.find((p) => p.$version === version);
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

describe('twins and direct methods over AMQP with the service SDK', () => {
  let hub;
  let registry;
  let service;

  before(async () => {
    hub = await startHub({ name: 'twins-methods-amqp' });
    registry = Registry.fromConnectionString(hub.connectionString);
    service = ServiceClient.fromConnectionString(hub.connectionString);
  });
  after(async () => {
    if (hub) await hub.dispose();
  });

  for (const [name, Transport] of [['Amqp', Amqp], ['AmqpWs', AmqpWs]]) {
    const lower = name.toLowerCase();

    it(`${name}: a reported patch shows in Registry.getTwin; Registry.updateTwin reaches properties.desired`,
       { timeout: 60_000 }, async () => {
         const dev = await createSasDevice(hub, registry, `twin-svc-${lower}-${process.pid}`);
         const device = await openClient(dev.connectionString, Transport);
         try {
           const twin = await listeningTwin(device);
           await within(20_000, report(twin, { temperature: 21.5, firmware: { version: '1.2.3' } }), 'reported update');

           const { responseBody: seen } = await registry.getTwin(dev.deviceId);
           const reported = seen.properties.reported;
           assert.equal(reported.temperature, 21.5);
           assert.deepEqual(reported.firmware, { version: '1.2.3' });
           assert.equal(reported.$version, 3, 'two patches since the twin was made');
           assert.equal(typeof reported.$metadata.temperature.$lastUpdated, 'string');
           assert.equal(typeof reported.$metadata.firmware.version.$lastUpdated, 'string');

           const { responseBody: updated } =
             await registry.updateTwin(dev.deviceId, { properties: { desired: { speed: 7, mode: 'sport' } } }, seen.etag);
           const v = updated.properties.desired.$version;
           await until(`a desired patch with $version ${v}`, () => patchWithVersion(twin, v));
           assert.equal(patchWithVersion(twin, v).speed, 7);
           assert.equal(patchWithVersion(twin, v).mode, 'sport');

           const { responseBody: again } =
             await registry.updateTwin(dev.deviceId, { properties: { desired: { speed: null, mode: 'eco' } } }, '*');
           assert.equal(again.properties.desired.$version, v + 1);
           await until(`a desired patch with $version ${v + 1}`, () => patchWithVersion(twin, v + 1));
           assert.equal(patchWithVersion(twin, v + 1).speed, null, 'null deletes');
           assert.equal(twin.properties.desired.mode, 'eco');
           assert.equal(twin.properties.desired.speed, undefined);
           assert.deepEqual(device.errors, []);
         } finally {
           await closeQuietly(device);
         }
       });

    it(`${name}: a module twin round trip (ModuleClient, Registry.getModuleTwin, updateModuleTwin)`,
       { timeout: 60_000 }, async () => {
         const deviceId = `twin-svc-mod-${lower}-${process.pid}`;
         await createSasDevice(hub, registry, deviceId);
         const { connectionString } = await createModule(hub, registry, deviceId, 'mod1');
         const module = await openClient(connectionString, Transport, { module: true });
         try {
           const twin = await listeningTwin(module);
           await within(20_000, report(twin, { role: 'filter' }), 'module reported update');
           const { responseBody: seen } = await registry.getModuleTwin(deviceId, 'mod1');
           assert.equal(seen.moduleId, 'mod1');
           assert.equal(seen.properties.reported.role, 'filter');
           assert.equal(seen.properties.reported.$version, 3);
           const { responseBody: updated } =
             await registry.updateModuleTwin(deviceId, 'mod1', { properties: { desired: { threshold: 3 } } }, seen.etag);
           const v = updated.properties.desired.$version;
           await until(`the module's desired patch with $version ${v}`, () => patchWithVersion(twin, v));
           assert.equal(patchWithVersion(twin, v).threshold, 3);
           const { responseBody: deviceTwin } = await registry.getTwin(deviceId);
           assert.equal(deviceTwin.properties.desired.threshold, undefined, "the device's twin is another");
         } finally {
           await closeQuietly(module);
         }
       });

    it(`${name}: onDeviceMethod / onMethod answer invokeDeviceMethod on a device and a module`,
       { timeout: 60_000 }, async () => {
         const deviceId = `method-${lower}-${process.pid}`;
         const dev = await createSasDevice(hub, registry, deviceId);
         const { connectionString } = await createModule(hub, registry, deviceId, 'mod1');
         const device = await openClient(dev.connectionString, Transport);
         const module = await openClient(connectionString, Transport, { module: true });
         try {
           device.onDeviceMethod('reboot', (req, res) => {
             res.send(201, { method: req.methodName, got: req.payload }, () => {});
           });
           module.onMethod('hello', (req, res) => res.send(200, `hi ${req.payload}`, () => {}));
           // The SDK attaches its methods links after onDeviceMethod returns: the hub waits for them
           // (connectTimeoutInSeconds) rather than answering DeviceNotOnline.
           const { result } = await within(30_000, service.invokeDeviceMethod(deviceId, {
             methodName: 'reboot', payload: { delay: 3, tag: 'ü' }, responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 10,
           }), 'invoke on the device');
           assert.equal(result.status, 201);
           assert.deepEqual(result.payload, { method: 'reboot', got: { delay: 3, tag: 'ü' } });

           const { result: fromModule } = await within(30_000, service.invokeDeviceMethod(deviceId, 'mod1', {
             methodName: 'hello', payload: 'module', responseTimeoutInSeconds: 10, connectTimeoutInSeconds: 10,
           }), 'invoke on the module');
           assert.equal(fromModule.status, 200);
           assert.equal(fromModule.payload, 'hi module');
         } finally {
           await closeQuietly(device);
           await closeQuietly(module);
         }
       });

    it(`${name}: 100 concurrent invocations each get their own answer`, { timeout: 90_000 }, async () => {
      const dev = await createSasDevice(hub, registry, `method-many-${lower}-${process.pid}`);
      const device = await openClient(dev.connectionString, Transport);
      try {
        let calls = 0;
        device.onDeviceMethod('square', (req, res) => {
          calls += 1;
          const { i } = req.payload;
          // Answered out of order.
          setTimeout(() => res.send(200 + (i % 3), { i, square: i * i }, () => {}), Math.floor(Math.random() * 200));
        });
        const invocations = Array.from({ length: 100 }, (_, i) => service.invokeDeviceMethod(dev.deviceId, {
          methodName: 'square', payload: { i }, responseTimeoutInSeconds: 30, connectTimeoutInSeconds: 10,
        }));
        const results = await within(60_000, Promise.all(invocations), '100 invocations');
        results.forEach(({ result }, i) => {
          assert.equal(result.status, 200 + (i % 3), `call ${i}`);
          assert.deepEqual(result.payload, { i, square: i * i }, `call ${i}`);
        });
        assert.equal(calls, 100);
      } finally {
        await closeQuietly(device);
      }
    });

    it(`${name}: no handler is 404 DeviceNotOnline; no answer is a GatewayTimeoutError after responseTimeoutInSeconds`,
       { timeout: 60_000 }, async () => {
         const dev = await createSasDevice(hub, registry, `method-err-${lower}-${process.pid}`);
         const device = await openClient(dev.connectionString, Transport);
         try {
           // Connected, but no method handler: no methods links.
           const offline = await rejectsWith(
             service.invokeDeviceMethod(dev.deviceId, { methodName: 'reboot', payload: null, responseTimeoutInSeconds: 5 }),
             Error, { status: 404, code: 'DeviceNotOnline' });
           assert.match(offline.responseBody, /ErrorCode:DeviceNotOnline;/);

           let called = false;
           device.onDeviceMethod('silent', () => { called = true; });  // never answers
           const started = Date.now();
           await rejectsWith(service.invokeDeviceMethod(dev.deviceId, {
             methodName: 'silent', payload: {}, responseTimeoutInSeconds: 5, connectTimeoutInSeconds: 10,
           }), errors.GatewayTimeoutError, { status: 504 });
           const elapsed = Date.now() - started;
           assert.ok(called, 'the call reached the device');
           assert.ok(elapsed >= 4_500 && elapsed < 15_000, `timed out after ${elapsed} ms`);
         } finally {
           await closeQuietly(device);
         }
       });
  }
});
