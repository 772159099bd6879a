'use strict';
// Direct methods through azure-iothub's Client.invokeDeviceMethod (REST on port 443), unmodified
// (service.md §4, semantics.md §6): round trips to devices and modules on the device transports
// that take method calls (azure-iot-device's onDeviceMethod), a device that never answers (504
// after the requested time), 100 concurrent invocations each answered on its own; IoT Hub's errors
// for unknown, offline and not-yet-connected identities and for refused arguments; invocations
// that wait without holding the hub's request threads.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Client, Registry } = require('azure-iothub');
const { Amqp, AmqpWs } = require('azure-iot-device-amqp');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { startHub } = require('./lib/hub');
const { createSasDevice, createModule, openClient, closeQuietly } = require('./lib/device');
const { errors, rejectsWith } = require('./lib/util');

// The device transports whose heads take method calls; the longer tests run on one of each head.
const TRANSPORTS = [['Mqtt', Mqtt], ['MqttWs', MqttWs], ['Amqp', Amqp], ['AmqpWs', AmqpWs]];
const HEADS = [['Mqtt', Mqtt], ['Amqp', Amqp]];

// The SDK subscribes to method calls with no completion signal (sdk-quirks.md): the first call
// asks the hub to wait for the subscription (connectTimeoutInSeconds), as IoT Hub allows.
const FIRST_CALL = { connectTimeoutInSeconds: 20, responseTimeoutInSeconds: 20 };

let n = 0;
function newId(prefix = 'meth') {
  return `${prefix}-${process.pid}-${++n}`;
}

// Resolves to the error an invocation failed with (it must fail) and how long it took.
async function failure(promise) {
  const started = Date.now();
  try {
    await promise;
  } catch (err) {
    return { err, ms: Date.now() - started };
  }
  assert.fail('the invocation succeeded');
}

describe('direct methods (service side)', () => {
  let hub;
  let registry;
  let service;

  before(async () => {
    hub = await startHub({ name: 'methods' });
    registry = Registry.fromConnectionString(hub.connectionString);
    // invokeDeviceMethod is REST only: the client needs no open() (that is its AMQP link).
    service = Client.fromConnectionString(hub.connectionString);
  });
  after(async () => {
    if (hub) await hub.dispose();
  });

  for (const [name, Transport] of TRANSPORTS) {
    it(`${name}: a round trip carries the name, the payload, the device's status and its answer`, { timeout: 60_000 },
      async () => {
        const dev = await createSasDevice(hub, registry, newId(name.toLowerCase()));
        const device = await openClient(dev.connectionString, Transport);
        try {
          const seen = [];
          device.onDeviceMethod('echo', (req, res) => {
            seen.push({ name: req.methodName, payload: req.payload });
            res.send(201, { got: req.payload, n: seen.length }, () => {});
          });
          const { result, message } = await service.invokeDeviceMethod(dev.deviceId, {
            methodName: 'echo', payload: { a: [1, 'two', { three: 3 }], s: 'é ✓' }, ...FIRST_CALL,
          });
          assert.equal(message.statusCode, 200);
          assert.deepEqual(result, { status: 201, payload: { got: { a: [1, 'two', { three: 3 }], s: 'é ✓' }, n: 1 } });
          assert.deepEqual(seen, [{ name: 'echo', payload: { a: [1, 'two', { three: 3 }], s: 'é ✓' } }]);

          // No payload: the device gets null; a scalar answer comes back as it is.
          device.onDeviceMethod('scalar', (req, res) => res.send(200, req.payload === null ? 'was null' : 'was not', () => {}));
          const second = await service.invokeDeviceMethod(dev.deviceId, { methodName: 'scalar' });
          assert.deepEqual(second.result, { status: 200, payload: 'was null' });
          assert.deepEqual(device.errors, []);
        } finally {
          await closeQuietly(device);
        }
      });
  }

  for (const [name, Transport] of HEADS) {
    it(`${name}: a module round trip (ModuleClient), not delivered to its device`, { timeout: 60_000 }, async () => {
      const dev = await createSasDevice(hub, registry, newId(`modhost-${name.toLowerCase()}`));
      const mod = await createModule(hub, registry, dev.deviceId, 'm1');
      const device = await openClient(dev.connectionString, Transport);
      const module = await openClient(mod.connectionString, Transport, { module: true });
      try {
        let deviceCalls = 0;
        device.onDeviceMethod('who', (req, res) => {
          deviceCalls++;
          res.send(200, 'device', () => {});
        });
        module.onMethod('who', (req, res) => res.send(202, { module: 'm1', payload: req.payload }, () => {}));
        const { result } = await service.invokeDeviceMethod(dev.deviceId, 'm1', { methodName: 'who', payload: 7, ...FIRST_CALL });
        assert.deepEqual(result, { status: 202, payload: { module: 'm1', payload: 7 } });
        const deviceAnswer = await service.invokeDeviceMethod(dev.deviceId, { methodName: 'who', ...FIRST_CALL });
        assert.deepEqual(deviceAnswer.result, { status: 200, payload: 'device' });
        assert.equal(deviceCalls, 1, 'the module\'s call did not reach the device');
      } finally {
        await closeQuietly(module);
        await closeQuietly(device);
      }
    });
  }

  it('Amqp: a device that never answers: GatewayTimeoutError after responseTimeoutInSeconds (5 s)', { timeout: 60_000 },
    async () => {
      const dev = await createSasDevice(hub, registry, newId('silent'));
      const device = await openClient(dev.connectionString, Amqp);
      try {
        let calls = 0;
        device.onDeviceMethod('ready', (req, res) => res.send(200, null, () => {}));
        device.onDeviceMethod('silent', () => { calls++; });   // never answers
        await service.invokeDeviceMethod(dev.deviceId, { methodName: 'ready', ...FIRST_CALL });
        const started = Date.now();
        const err = await rejectsWith(service.invokeDeviceMethod(dev.deviceId, { methodName: 'silent', responseTimeoutInSeconds: 5 }),
                                      errors.GatewayTimeoutError, { status: 504, code: 'GatewayTimeout' });
        const ms = Date.now() - started;
        assert.ok(ms >= 4_900 && ms < 9_000, `answered after the 5 s response timeout (${ms} ms)`);
        assert.match(err.responseBody, /ErrorCode:GatewayTimeout;/);
        assert.equal(calls, 1, 'the device did get the call');
      } finally {
        await closeQuietly(device);
      }
    });

  for (const [name, Transport] of HEADS) {
    it(`${name}: 100 concurrent invocations each get their own answer`, { timeout: 90_000 }, async () => {
      const dev = await createSasDevice(hub, registry, newId(`busy-${name.toLowerCase()}`));
      const device = await openClient(dev.connectionString, Transport);
      try {
        device.onDeviceMethod('ready', (req, res) => res.send(200, null, () => {}));
        // Answers out of order: each after its own random delay, echoing the call's number.
        device.onDeviceMethod('work', (req, res) => {
          setTimeout(() => res.send(200 + (req.payload.i % 100), { i: req.payload.i, twice: req.payload.i * 2 }, () => {}),
                     Math.floor(Math.random() * 300));
        });
        await service.invokeDeviceMethod(dev.deviceId, { methodName: 'ready', ...FIRST_CALL });
        const calls = [];
        for (let i = 0; i < 100; i++) {
          calls.push(service.invokeDeviceMethod(dev.deviceId, { methodName: 'work', payload: { i }, responseTimeoutInSeconds: 30 }));
        }
        const results = await Promise.all(calls);
        results.forEach(({ result }, i) => {
          assert.deepEqual(result, { status: 200 + (i % 100), payload: { i, twice: i * 2 } }, `invocation ${i}`);
        });
        assert.deepEqual(device.errors, []);
      } finally {
        await closeQuietly(device);
      }
    });
  }

  it('an unknown device or module: DeviceNotFoundError / 404 ModuleNotFound', async () => {
    await rejectsWith(service.invokeDeviceMethod(newId('missing'), { methodName: 'reboot' }), errors.DeviceNotFoundError,
                      { status: 404, code: 'DeviceNotFound' });
    const id = newId();
    await registry.create({ deviceId: id });
    const err = await rejectsWith(service.invokeDeviceMethod(id, 'nope', { methodName: 'reboot' }), Error,
                                  { status: 404, code: 'ModuleNotFound' });
    assert.match(err.responseBody, /ErrorCode:ModuleNotFound;/);
  });

  it('an offline device: 404 DeviceNotOnline (Node gives a plain Error with the response)', async () => {
    const id = newId();
    await registry.create({ deviceId: id });
    await registry.addModule({ deviceId: id, moduleId: 'm1' });
    const { err, ms } = await failure(service.invokeDeviceMethod(id, { methodName: 'reboot', payload: { a: 1 } }));
    assert.equal(err.constructor.name, 'Error');
    assert.equal(err.message, 'Not found');
    assert.equal(err.response.statusCode, 404);
    assert.equal(err.response.headers['iothub-errorcode'], 'DeviceNotOnline');
    assert.match(err.responseBody, /^\{"Message":"ErrorCode:DeviceNotOnline;/);
    assert.ok(ms < 5_000, `answered at once with connectTimeoutInSeconds 0 (${ms} ms)`);

    const moduleErr = await rejectsWith(service.invokeDeviceMethod(id, 'm1', { methodName: 'reboot' }), Error,
                                        { status: 404, code: 'DeviceNotOnline' });
    assert.match(moduleErr.responseBody, /ErrorCode:DeviceNotOnline;/);
  });

  it('Amqp: connected without a method handler (no methods links) is not online for methods', { timeout: 60_000 },
    async () => {
      const dev = await createSasDevice(hub, registry, newId('nohandler'));
      const device = await openClient(dev.connectionString, Amqp);
      try {
        await rejectsWith(service.invokeDeviceMethod(dev.deviceId, { methodName: 'reboot' }), Error,
                          { status: 404, code: 'DeviceNotOnline' });
      } finally {
        await closeQuietly(device);
      }
    });

  it('connectTimeoutInSeconds: the hub waits that long for the device before DeviceNotOnline', async () => {
    const id = newId();
    await registry.create({ deviceId: id });
    const { err, ms } = await failure(service.invokeDeviceMethod(id, { methodName: 'm', connectTimeoutInSeconds: 2 }));
    assert.equal(err.response?.statusCode, 404, err.message);
    assert.equal(err.response.headers['iothub-errorcode'], 'DeviceNotOnline');
    assert.ok(ms >= 1_900 && ms < 6_000, `answered after the connect timeout (${ms} ms)`);
  });

  it('waiting invocations hold none of the hub\'s request threads', { timeout: 60_000 }, async () => {
    const id = newId();
    await registry.create({ deviceId: id });
    // Eight calls waiting 3 s each for a device that never connects. Were each to hold one of
    // the two route threads, the registry calls below would queue behind them for 12 s.
    const waiting = [];
    for (let i = 0; i < 8; i++) {
      waiting.push(failure(service.invokeDeviceMethod(id, { methodName: `m${i}`, connectTimeoutInSeconds: 3 })));
    }
    await new Promise((r) => setTimeout(r, 500));
    const started = Date.now();
    const { responseBody: twin } = await registry.getTwin(id);
    await registry.updateTwin(id, { tags: { busy: true } }, twin.etag);
    const { responseBody: dev } = await registry.get(id);
    const ms = Date.now() - started;
    assert.equal(dev.deviceId, id);
    assert.ok(ms < 1_500, `registry answered while the invocations wait (${ms} ms)`);
    for (const { err, ms: waited } of await Promise.all(waiting)) {
      assert.equal(err.response?.statusCode, 404, err.message);
      assert.equal(err.response.headers['iothub-errorcode'], 'DeviceNotOnline');
      assert.ok(waited >= 2_900, `each waited its connect timeout (${waited} ms)`);
    }
  });

  it('refused arguments: ArgumentError 400 ArgumentInvalid; a payload over 128 KB: 413 MessageTooLarge', async () => {
    const id = newId();
    await registry.create({ deviceId: id });
    for (const params of [
      { methodName: 'bad name' },
      { methodName: 'm', responseTimeoutInSeconds: 4 },
      { methodName: 'm', responseTimeoutInSeconds: 301 },
      { methodName: 'm', connectTimeoutInSeconds: 301 },
    ]) {
      await rejectsWith(service.invokeDeviceMethod(id, params), errors.ArgumentError,
                        { status: 400, code: 'ArgumentInvalid' });
    }
    const err = await rejectsWith(service.invokeDeviceMethod(id, { methodName: 'm', payload: 'x'.repeat(128 * 1024) }),
                                  Error, { status: 413, code: 'MessageTooLarge' });
    assert.match(err.responseBody, /ErrorCode:MessageTooLarge;/);
  });

  it('direct methods need ServiceConnect', async () => {
    const id = newId();
    await registry.create({ deviceId: id });
    const asWriter = Client.fromConnectionString(hub.policyConnectionString('registryReadWrite'));
    await rejectsWith(asWriter.invokeDeviceMethod(id, { methodName: 'm' }), errors.UnauthorizedError, { status: 401 });
    const asService = Client.fromConnectionString(hub.policyConnectionString('service'));
    await rejectsWith(asService.invokeDeviceMethod(id, { methodName: 'm' }), Error, { status: 404, code: 'DeviceNotOnline' });
  });

  // Last: it stops the hub.
  it('SIGTERM while invocations wait: hubd settles them and exits cleanly', { timeout: 60_000 }, async () => {
    const id = newId();
    await registry.create({ deviceId: id });
    const waiting = [];
    for (let i = 0; i < 3; i++) {
      waiting.push(failure(service.invokeDeviceMethod(id, { methodName: 'm', connectTimeoutInSeconds: 60 })));
    }
    await new Promise((r) => setTimeout(r, 500));
    const started = Date.now();
    const { code, signal, forced } = await hub.stop();
    const ms = Date.now() - started;
    assert.deepEqual({ code, signal, forced }, { code: 0, signal: null, forced: false }, hub.output);
    // Not held for the 5 s shutdown grace by the sessions waiting for an answer.
    assert.ok(ms < 4_000, `stopped in ${ms} ms`);
    assert.doesNotMatch(hub.output, /sessions still busy/);
    for (const { err } of await Promise.all(waiting)) {
      // The connection goes with the hub: no answer, a socket error.
      assert.ok(err, 'the invocation failed');
    }
    await hub.start();
  });
});
