'use strict';
// Operation throttles (--throttle), as the official SDKs see them. IoT Hub's documented behaviour
// (docs/limits.md): over a throttle the call is refused with 429 ThrottlingException; telemetry
// over the D2C rate is first queued (traffic shaping: accepted later, at the rate), and only once
// that backlog is too long refused (AMQP: the message is rejected with
// com.microsoft:device-container-throttled; MQTT, which cannot refuse one PUBLISH: the connection
// is closed); a throttled MQTT CONNECT gets CONNACK 3 (server unavailable).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Registry, Client: ServiceClient } = require('azure-iothub');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Amqp } = require('azure-iot-device-amqp');
const { Http } = require('azure-iot-device-http');
const { NoRetry } = require('azure-iot-common');
const { Message: ServiceMessage } = require('azure-iot-common');
const { startHub } = require('./lib/hub');
const { errors, rejectsWith } = require('./lib/util');
const { Message, createSasDevice, openClient, makeClient, closeQuietly, within, storedEvents, eventsOf } = require('./lib/device');

const pid = process.pid;

// Resolves to the error a promise rejects with, or null when it fulfils.
async function outcome(promise) {
  try {
    await promise;
    return null;
  } catch (err) {
    return err;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// hubd's log reaches hub.output a little after the client saw the outcome.
async function logged(hub, pattern, ms = 3_000) {
  const deadline = Date.now() + ms;
  while (!pattern.test(hub.output) && Date.now() < deadline) await sleep(50);
  assert.match(hub.output, pattern);
}

describe('throttles refused at once (429 ThrottlingException)', () => {
  let hub;
  let registry;

  before(async () => {
    hub = await startHub({
      name: 'throttle-refuse',
      args: ['--throttle', 'registry=3/s:3,twin-service=1/s:1,methods=1/min:1,c2d=1/s:1',
        '--throttle', 'device.twin=1/min:1,device.d2c=1/min:1'],
    });
    registry = Registry.fromConnectionString(hub.connectionString);
  });
  after(async () => {
    if (hub) await hub.dispose();
  });

  it('registry operations over the rate get ThrottlingError (HTTP 429, ThrottlingException)', async () => {
    await sleep(1100);  // a full bucket
    const results = await Promise.all(Array.from({ length: 6 }, (_, i) => outcome(registry.get(`nobody-${i}-${pid}`))));
    const throttled = results.filter((e) => e?.constructor.name === 'ThrottlingError');
    const notFound = results.filter((e) => e?.constructor.name === 'DeviceNotFoundError');
    assert.equal(notFound.length, 3, 'the first 3 (the burst) reach the registry');
    assert.equal(throttled.length, 3, `the rest are throttled: ${results.map((e) => e?.constructor.name)}`);
    assert.equal(throttled[0].response?.statusCode, 429);
    assert.equal(throttled[0].response?.headers['iothub-errorcode'], 'ThrottlingException');
    await sleep(1100);
    await rejectsWith(registry.get(`nobody-later-${pid}`), errors.DeviceNotFoundError);  // the rate allows again
  });

  it('service twin reads and direct method invocations over the rate get ThrottlingError', async () => {
    await sleep(1100);
    const dev = await createSasDevice(hub, registry, `throttle-twin-svc-${pid}`);
    await registry.getTwin(dev.deviceId);
    await rejectsWith(registry.getTwin(dev.deviceId), errors.ThrottlingError, { status: 429, code: 'ThrottlingException' });
    const service = ServiceClient.fromConnectionString(hub.connectionString);
    // Without this, azure-iothub retries a throttled invokeDeviceMethod itself, with its
    // throttling back-off (10 to 60 s), and the caller never sees the ThrottlingError.
    service.setRetryPolicy(new NoRetry());
    try {
      // One a minute: the first reaches the hub (the device is offline: 404 DeviceNotOnline), the
      // second, sent meanwhile, is throttled.
      const call = { methodName: 'm', payload: {}, connectTimeoutInSeconds: 0 };
      const first = outcome(service.invokeDeviceMethod(dev.deviceId, call));
      await sleep(200);
      await rejectsWith(service.invokeDeviceMethod(dev.deviceId, call), errors.ThrottlingError, { status: 429 });
      const err = await first;
      assert.ok(err && err.constructor.name !== 'ThrottlingError', `first call: ${err?.constructor.name}`);
    } finally {
      await service.close().catch(() => {});
    }
  });

  it('C2D sends over the rate are rejected and the service SDK raises ThrottlingError', async () => {
    const dev = await createSasDevice(hub, registry, `throttle-c2d-${pid}`);
    const service = ServiceClient.fromConnectionString(hub.connectionString);
    service.setRetryPolicy(new NoRetry());
    try {
      await service.open();
      await sleep(1100);
      await service.send(dev.deviceId, new ServiceMessage('one'));
      const err = await outcome(service.send(dev.deviceId, new ServiceMessage('two')));
      assert.equal(err?.constructor.name, 'ThrottlingError', `second send: ${err?.message}`);
    } finally {
      await service.close().catch(() => {});
    }
  });

  it('device twin requests over the device rate are refused (status 429)', async () => {
    for (const [name, Transport] of [['amqp', Amqp], ['mqtt', Mqtt]]) {
      const dev = await createSasDevice(hub, registry, `throttle-twin-dev-${name}-${pid}`);
      const client = await openClient(dev.connectionString, Transport, { noRetry: true });
      try {
        const twin = await within(10_000, client.getTwin(), `${name} getTwin`);  // the device's one request a minute
        const update = new Promise((resolve, reject) => twin.properties.reported.update({ n: 1 }, (e) => (e ? reject(e) : resolve())));
        const err = await outcome(within(10_000, update, `${name} reported update`));
        assert.ok(err, `${name}: the second twin request is refused`);
        // Neither transport maps the twin answer's 429 to ThrottlingError: azure-iot-device-mqtt
        // turns any answer with an errorCode into a plain Error with its message, and
        // azure-iot-device-amqp's twin client into "could not update twin reported properties."
        // followed by the answer's message.
        assert.equal(err.constructor.name, 'Error', `${name}: ${err.constructor.name}`);
        assert.match(err.message, /throttled/i, `${name}: ${err.message}`);
      } finally {
        await closeQuietly(client);
      }
    }
  });

  it('HTTPS telemetry over the device rate gets 429 Too Many Requests; other devices are not affected', async () => {
    await sleep(1100);  // the registry's rate (3/s) refilled for the two creates
    const a = await createSasDevice(hub, registry, `throttle-http-a-${pid}`);
    const b = await createSasDevice(hub, registry, `throttle-http-b-${pid}`);
    const ca = await makeClient(a.connectionString, Http, { noRetry: true });
    const cb = await makeClient(b.connectionString, Http, { noRetry: true });
    try {
      await ca.sendEvent(new Message('a1'));
      const err = await outcome(ca.sendEvent(new Message('a2')));
      // azure-iot-device-http 1.x does not map 429 to ThrottlingError: a plain Error with the status text.
      assert.ok(err, 'the second message within the minute is refused');
      assert.match(err.message, /Too Many Requests/, err.message);
      await cb.sendEvent(new Message('b1'));  // its own rate
    } finally {
      // A client that sent is open (its SAS renewal timer would keep the test process alive).
      await closeQuietly(ca);
      await closeQuietly(cb);
    }
  });
});

describe('D2C traffic shaping: over the rate, later; past the backlog, refused', () => {
  let hub;
  let registry;
  const RATE = 5;        // per second, burst 5
  const BACKLOG_S = 3;

  before(async () => {
    hub = await startHub({ name: 'throttle-shape', args: ['--throttle', `d2c=${RATE}/s:${RATE},backlog=${BACKLOG_S}s`] });
    registry = Registry.fromConnectionString(hub.connectionString);
  });
  after(async () => {
    if (hub) await hub.dispose();
  });

  for (const [name, Transport] of [['Mqtt', Mqtt], ['Amqp', Amqp]]) {
    it(`${name}: a burst over the rate is acknowledged later, at the rate, in order`, async () => {
      const dev = await createSasDevice(hub, registry, `throttle-shape-${name}-${pid}`);
      const client = await openClient(dev.connectionString, Transport, { noRetry: true });
      try {
        await sleep(1100);
        const n = 15;  // 5 at once, then 10 at 5/s: the last about 2 s later (within the 3 s backlog)
        const started = Date.now();
        const acked = [];
        await within(20_000, Promise.all(Array.from({ length: n }, (_, i) =>
          client.sendEvent(new Message(JSON.stringify({ i }))).then(() => acked.push(Date.now() - started)))), `${name} burst`);
        const elapsed = Date.now() - started;
        assert.equal(acked.length, n, 'every message acknowledged');
        assert.ok(elapsed >= 1_600, `shaped to the rate: the last acknowledgement after ${elapsed} ms (>= ~${(n - RATE) * 1000 / RATE} ms)`);
        assert.ok(elapsed < 6_000, `but not refused or stalled: ${elapsed} ms`);
        const stored = eventsOf(await storedEvents(hub), dev.deviceId)
          .map((e) => (typeof e.body === 'string' ? JSON.parse(e.body) : e.body).i);
        assert.deepEqual(stored, Array.from({ length: n }, (_, i) => i), 'stored once each, in order');
      } finally {
        await closeQuietly(client);
      }
    });
  }

  it('Amqp: past the backlog, messages are rejected and the SDK raises ThrottlingError', async () => {
    const dev = await createSasDevice(hub, registry, `throttle-overflow-amqp-${pid}`);
    const client = await openClient(dev.connectionString, Amqp, { noRetry: true });
    try {
      await sleep(1100);
      const n = 40;  // 5 at once + 15 within the 3 s backlog; the rest refused
      const results = await within(30_000, Promise.all(Array.from({ length: n }, (_, i) =>
        outcome(client.sendEvent(new Message(JSON.stringify({ i })))))), 'amqp overflow');
      const ok = results.filter((e) => e === null).length;
      const throttled = results.filter((e) => e?.constructor.name === 'ThrottlingError').length;
      assert.equal(ok + throttled, n, `only acknowledgements and ThrottlingErrors: ${results.map((e) => e?.constructor.name)}`);
      assert.ok(ok >= RATE + RATE * BACKLOG_S - 2 && ok <= RATE + RATE * BACKLOG_S + 2, `about ${RATE + RATE * BACKLOG_S} accepted: ${ok}`);
      assert.ok(throttled >= 15, `the rest throttled: ${throttled}`);
    } finally {
      await closeQuietly(client);
    }
  });

  it('Mqtt: past the backlog, the hub closes the connection', async () => {
    const dev = await createSasDevice(hub, registry, `throttle-overflow-mqtt-${pid}`);
    const client = await openClient(dev.connectionString, Mqtt, { noRetry: true });
    const disconnected = new Promise((resolve) => client.on('disconnect', resolve));
    try {
      await sleep(1100);
      for (let i = 0; i < 40; i++) client.sendEvent(new Message(JSON.stringify({ i }))).catch(() => {});
      await within(15_000, disconnected, 'the disconnect');
      await logged(hub, /disconnected: device-to-cloud throttled: the throttling backlog is full/);
    } finally {
      await closeQuietly(client);
    }
  });
});

describe('new device connections over the connect rate', () => {
  let hub;
  let registry;

  before(async () => {
    hub = await startHub({ name: 'throttle-connect', args: ['--throttle', 'connect=1/min:2'] });
    registry = Registry.fromConnectionString(hub.connectionString);
  });
  after(async () => {
    if (hub) await hub.dispose();
  });

  it('Mqtt: CONNACK 3, which the SDK raises as ServiceUnavailableError', async () => {
    const clients = [];
    try {
      for (let i = 0; i < 2; i++) {
        const dev = await createSasDevice(hub, registry, `throttle-connect-${i}-${pid}`);
        clients.push(await openClient(dev.connectionString, Mqtt, { noRetry: true }));
      }
      const dev = await createSasDevice(hub, registry, `throttle-connect-late-${pid}`);
      // Closed with the others: a client whose open failed may still hold mqtt.js's socket or a
      // timer, which would keep the test process alive.
      const late = await makeClient(dev.connectionString, Mqtt, { noRetry: true });
      clients.push(late);
      const err = await outcome(within(20_000, late.open(), 'third open'));
      assert.ok(err, 'the third connection within the minute is refused');
      assert.equal(err.constructor.name, 'ServiceUnavailableError', err.message);
      await logged(hub, /refused over mqtt \(CONNACK 3 server unavailable\): IoT hub throttled/);
    } finally {
      for (const c of clients) await closeQuietly(c);
    }
  });

  it('Amqp: the identity\'s first link is closed with device-container-throttled, which the SDK raises as ThrottlingError', async () => {
    // The AMQP client's open is the connection and its CBS token; the device "connects" when its
    // first link comes (here the telemetry link of the first sendEvent). The rate is hub-wide and
    // the Mqtt case above may have spent it: of three devices, the first ones may pass, then
    // every one is throttled.
    const clients = [];
    try {
      const results = [];
      for (let i = 0; i < 3; i++) {
        const dev = await createSasDevice(hub, registry, `throttle-connect-amqp-${i}-${pid}`);
        const client = await openClient(dev.connectionString, Amqp, { noRetry: true });
        clients.push(client);
        results.push(await outcome(within(20_000, client.sendEvent(new Message('x')), `send ${i}`)));
      }
      const names = results.map((e) => e?.constructor.name ?? 'ok');
      assert.ok(names.every((n) => n === 'ok' || n === 'ThrottlingError'), names.join());
      const first = names.indexOf('ThrottlingError');
      assert.ok(first >= 0, `the third connection within the minute at the latest is throttled: ${names}`);
      assert.ok(names.slice(first).every((n) => n === 'ThrottlingError'), `throttled from then on: ${names}`);
      await logged(hub, /cannot connect: IoT hub throttled/);
    } finally {
      for (const c of clients) await closeQuietly(c);
    }
  });
});
