'use strict';
// Twins and direct methods over MQTT and MqttWs (device.md §3.4, §3.5; semantics.md §3, §6):
// azure-iot-device's Client / ModuleClient against azure-iothub's Registry (twin REST routes) and
// Client.invokeDeviceMethod.
//  - getTwin shows desired and reported with their $version;
//  - a reported patch is visible through Registry.getTwin with $metadata and the new $version, and
//    many concurrent patches are each acknowledged, all applied;
//  - a broken reported patch (a key with '.') fails the SDK call instead of hanging, and the
//    connection keeps working;
//  - a desired update reaches twin.on('properties.desired') with the $version the service got back;
//    after a disconnect during which desired changed, the reconnected client's getTwin has it all;
//  - the desired subscription and the methods subscription survive the SDK's token-renewal
//    reconnect (it does not subscribe again);
//  - onDeviceMethod / ModuleClient.onMethod + invokeDeviceMethod: status and payload round trip,
//    100 concurrent invocations each get their own answer, no handler -> 404 DeviceNotOnline, no
//    answer -> GatewayTimeoutError after responseTimeoutInSeconds;
//  - module twins alike; twins survive kill -9;
//  - raw MQTT: a QoS 1 twin request gets its answer and its PUBACK; method answers with a broken
//    status, no $rid or an unknown $rid are ignored without closing.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Client: ServiceClient, Registry } = require('azure-iothub');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const { startHub } = require('./lib/hub');
const { createSasDevice, createModule, openClient, closeQuietly, within } = require('./lib/device');
const { RawMqtt, deviceCredentials, publishPacket } = require('./lib/raw_mqtt');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitFor(what, predicate, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await predicate();
    if (last) return last;
    await sleep(100);
  }
  assert.fail(`${what}: not within ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
}

// A PUBLISH from the hub, read by the raw client: {topic, payload, qos}.
function parsePublish(p) {
  assert.equal(p?.type, 3, `expected PUBLISH, got ${p ? `packet type ${p.type}` : 'a closed connection'}`);
  const qos = (p.flags >> 1) & 3;
  const topicLength = p.body.readUInt16BE(0);
  const topic = p.body.subarray(2, 2 + topicLength).toString('utf8');
  const offset = 2 + topicLength + (qos > 0 ? 2 : 0);
  return { topic, payload: p.body.subarray(offset).toString('utf8'), qos };
}

// The SDK's reported update has no promise form.
function report(twin, patch) {
  return within(15_000, new Promise((resolve, reject) => {
    twin.properties.reported.update(patch, (err) => (err ? reject(err) : resolve()));
  }), `reported update ${JSON.stringify(patch)}`);
}

// Subscribes to desired updates and resolves on the SUBACK (twin.on('properties.desired') does the
// same, with no completion signal).
function enableDesired(twin) {
  return within(15_000, new Promise((resolve, reject) => {
    twin.enableTwinDesiredPropertiesUpdates((err) => (err ? reject(err) : resolve()));
  }), 'enableTwinDesiredPropertiesUpdates');
}

// Every 'properties.desired' event of the twin (the initial full desired included).
function desiredEvents(twin) {
  const seen = [];
  twin.on('properties.desired', (d) => seen.push(JSON.parse(JSON.stringify(d))));
  return seen;
}

describe('twins and direct methods over MQTT', () => {
  let hub;
  let registry;
  let service;
  const pid = process.pid;

  before(async () => {
    hub = await startHub({ name: 'twins-methods-mqtt' });
    registry = Registry.fromConnectionString(hub.connectionString);
    service = ServiceClient.fromConnectionString(hub.connectionString);
  });
  after(async () => {
    if (service) await within(10_000, service.close(), 'service close').catch(() => {});
    if (hub) await hub.dispose();
  });

  function invoke(deviceId, moduleId, params) {
    const p = moduleId ? service.invokeDeviceMethod(deviceId, moduleId, params) : service.invokeDeviceMethod(deviceId, params);
    return within(60_000, p, `invoke ${params.methodName} on ${deviceId}${moduleId ? '/' + moduleId : ''}`);
  }

  // onDeviceMethod subscribes with no completion signal: until the SUBACK the hub answers 404
  // DeviceNotOnline, so the first call is retried briefly.
  async function invokeWhenSubscribed(deviceId, moduleId, params) {
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        return await invoke(deviceId, moduleId, params);
      } catch (err) {
        if (err.response?.statusCode !== 404 || Date.now() > deadline) throw err;
        await sleep(100);
      }
    }
  }

  async function notOnline(deviceId, moduleId, methodName) {
    let err = null;
    try {
      await invoke(deviceId, moduleId, { methodName, payload: null, responseTimeoutInSeconds: 5 });
    } catch (e) {
      err = e;
    }
    assert.ok(err, 'the invocation succeeded');
    assert.equal(err.response?.statusCode, 404, `${err.constructor.name}: ${err.message}`);
    assert.match(`${err.response?.headers['iothub-errorcode']} ${err.responseBody}`, /DeviceNotOnline|404103/);
  }

  for (const [name, Transport] of [['Mqtt', Mqtt], ['MqttWs', MqttWs]]) {
    describe(name, () => {
      it('getTwin shows desired and reported with their versions; a reported patch reaches the service twin',
         { timeout: 60_000 }, async () => {
           const dev = await createSasDevice(hub, registry, `tw-${name}-${pid}`);
           const { responseBody: updated } = await registry.updateTwin(
             dev.deviceId, { properties: { desired: { color: 'red', limits: { hi: 30, lo: 10 } } } }, '*');
           const desiredVersion = updated.properties.desired.$version;
           assert.equal(typeof desiredVersion, 'number');

           const client = await openClient(dev.connectionString, Transport);
           try {
             const twin = await within(15_000, client.getTwin(), 'getTwin');
             assert.equal(twin.properties.desired.color, 'red');
             assert.deepEqual(twin.properties.desired.limits, { hi: 30, lo: 10 });
             assert.equal(twin.properties.desired.$version, desiredVersion);
             assert.equal(twin.properties.desired.$metadata, undefined, 'devices get no metadata');
             const reportedBefore = twin.properties.reported.$version;
             assert.equal(typeof reportedBefore, 'number');

             await report(twin, { temp: 21.5, fw: { version: '1.2.3', ok: true } });
             const { responseBody: st } = await registry.getTwin(dev.deviceId);
             const reported = st.properties.reported;
             assert.equal(reported.temp, 21.5);
             assert.deepEqual({ version: reported.fw.version, ok: reported.fw.ok }, { version: '1.2.3', ok: true });
             assert.equal(reported.$version, reportedBefore + 1);
             assert.ok(reported.$metadata?.temp?.$lastUpdated, `metadata: ${JSON.stringify(reported.$metadata)}`);
             assert.ok(reported.$metadata?.fw?.version?.$lastUpdated);

             // A null deletes; the device's next getTwin shows the service's view.
             await report(twin, { fw: { ok: null } });
             const again = await within(15_000, client.getTwin(), 'getTwin again');
             assert.equal(again.properties.reported.$version, reportedBefore + 2);
             assert.deepEqual(again.properties.reported.fw, { version: '1.2.3' });
             assert.equal(again.properties.reported.temp, 21.5);
           } finally {
             await closeQuietly(client);
           }
         });

      it('concurrent reported patches are each acknowledged and all applied', { timeout: 60_000 }, async () => {
        const dev = await createSasDevice(hub, registry, `tw-conc-${name}-${pid}`);
        const client = await openClient(dev.connectionString, Transport);
        try {
          const twin = await within(15_000, client.getTwin(), 'getTwin');
          const before = twin.properties.reported.$version;
          await Promise.all(Array.from({ length: 25 }, (_, i) => report(twin, { [`k${i}`]: i })));
          const { responseBody: st } = await registry.getTwin(dev.deviceId);
          for (let i = 0; i < 25; i++) assert.equal(st.properties.reported[`k${i}`], i, `k${i}`);
          assert.equal(st.properties.reported.$version, before + 25);
        } finally {
          await closeQuietly(client);
        }
      });

      it('a broken reported patch fails the SDK call instead of hanging; the connection keeps working',
         { timeout: 60_000 }, async () => {
           const dev = await createSasDevice(hub, registry, `tw-bad-${name}-${pid}`);
           const client = await openClient(dev.connectionString, Transport);
           try {
             const twin = await within(15_000, client.getTwin(), 'getTwin');
             const before = twin.properties.reported.$version;
             for (const bad of [{ 'a.b': 1 }, { nested: { 'x y': 1 } }, { $bad: 1 }]) {
               await assert.rejects(report(twin, bad), (err) => {
                 assert.doesNotMatch(err.message, /no result within/, `the call hung: ${JSON.stringify(bad)}`);
                 assert.ok(err.message.length > 0);
                 return true;
               });
             }
             await report(twin, { good: true });
             const { responseBody: st } = await registry.getTwin(dev.deviceId);
             assert.equal(st.properties.reported.good, true);
             assert.equal(st.properties.reported.$version, before + 1, 'the broken patches changed nothing');
             assert.equal(st.properties.reported['a.b'], undefined);
           } finally {
             await closeQuietly(client);
           }
         });

      it('desired updates reach the device with their $version; after being offline getTwin has them all',
         { timeout: 60_000 }, async () => {
           const dev = await createSasDevice(hub, registry, `tw-des-${name}-${pid}`);
           let client = await openClient(dev.connectionString, Transport);
           try {
             const twin = await within(15_000, client.getTwin(), 'getTwin');
             const seen = desiredEvents(twin);
             await enableDesired(twin);

             const { responseBody: t1 } = await registry.updateTwin(
               dev.deviceId, { properties: { desired: { color: 'blue', sub: { a: 1, b: 2 } } } }, '*');
             const v1 = t1.properties.desired.$version;
             const got1 = await waitFor(`desired $version ${v1}`, () => seen.find((d) => d.$version === v1));
             assert.equal(got1.color, 'blue');
             assert.deepEqual(got1.sub, { a: 1, b: 2 });

             const { responseBody: t2 } = await registry.updateTwin(
               dev.deviceId, { properties: { desired: { sub: { a: null } } } }, '*');
             const v2 = t2.properties.desired.$version;
             assert.equal(v2, v1 + 1);
             const got2 = await waitFor(`desired $version ${v2}`, () => seen.find((d) => d.$version === v2));
             assert.equal(got2.sub.a, null, 'the patch as the service sent it: null deletes');
             assert.equal(got2.color, undefined, 'a patch, not the whole desired section');
             // The SDK merged both into its copy.
             assert.equal(twin.properties.desired.color, 'blue');
             assert.deepEqual(twin.properties.desired.sub, { b: 2 });
             assert.equal(twin.properties.desired.$version, v2);

             await closeQuietly(client);
             client = null;
             const { responseBody: t3 } = await registry.updateTwin(
               dev.deviceId, { properties: { desired: { color: 'green', offline: { n: 3 } } } }, '*');
             const v3 = t3.properties.desired.$version;

             client = await openClient(dev.connectionString, Transport);
             const fresh = await within(15_000, client.getTwin(), 'getTwin after reconnecting');
             assert.equal(fresh.properties.desired.$version, v3);
             assert.equal(fresh.properties.desired.color, 'green');
             assert.deepEqual(fresh.properties.desired.offline, { n: 3 });
             assert.deepEqual(fresh.properties.desired.sub, { b: 2 });
           } finally {
             await closeQuietly(client);
           }
         });

      it('direct methods: status and payload round trip; 100 concurrent calls each get their own answer',
         { timeout: 90_000 }, async () => {
           const dev = await createSasDevice(hub, registry, `dm-${name}-${pid}`);
           const client = await openClient(dev.connectionString, Transport);
           try {
             const calls = [];
             client.onDeviceMethod('echo', (req, res) => {
               calls.push(req.methodName);
               const i = req.payload?.i ?? -1;
               res.send(200 + (i % 7), { i, twice: i * 2, name: req.methodName, got: req.payload }, () => {});
             });
             client.onDeviceMethod('nopayload', (req, res) => res.send(204, () => {}));

             const first = await invokeWhenSubscribed(dev.deviceId, undefined,
                                                      { methodName: 'echo', payload: { i: 3, text: 'h\u00e9 "q" /\\' } });
             assert.equal(first.result.status, 203);
             assert.deepEqual(first.result.payload, { i: 3, twice: 6, name: 'echo', got: { i: 3, text: 'h\u00e9 "q" /\\' } });

             const none = await invoke(dev.deviceId, undefined, { methodName: 'nopayload' });
             assert.equal(none.result.status, 204);
             assert.equal(none.result.payload, null);

             const results = await Promise.all(Array.from({ length: 100 }, (_, i) =>
               invoke(dev.deviceId, undefined, { methodName: 'echo', payload: { i }, responseTimeoutInSeconds: 30 })));
             results.forEach(({ result }, i) => {
               assert.equal(result.status, 200 + (i % 7), `call ${i}`);
               assert.equal(result.payload.i, i, `call ${i} got another call's answer`);
               assert.equal(result.payload.twice, i * 2);
             });
             assert.equal(calls.length, 101, "each call reached the device once");
           } finally {
             await closeQuietly(client);
           }
         });

      it('direct methods on a module (ModuleClient.onMethod), and a module twin', { timeout: 60_000 }, async () => {
        const dev = await createSasDevice(hub, registry, `dm-mod-${name}-${pid}`);
        const mod = await createModule(hub, registry, dev.deviceId, 'm1');
        const client = await openClient(mod.connectionString, Transport, { module: true });
        try {
          client.onMethod('ping', (req, res) => res.send(201, { pong: req.payload, module: 'm1' }, () => {}));
          const r = await invokeWhenSubscribed(dev.deviceId, 'm1', { methodName: 'ping', payload: [1, 'two'] });
          assert.equal(r.result.status, 201);
          assert.deepEqual(r.result.payload, { pong: [1, 'two'], module: 'm1' });
          // The device itself takes no calls: the module's subscription is the module's.
          await notOnline(dev.deviceId, undefined, 'ping');

          const twin = await within(15_000, client.getTwin(), 'module getTwin');
          const before = twin.properties.reported.$version;
          await report(twin, { moduleState: 'ok' });
          const { responseBody: st } = await registry.getModuleTwin(dev.deviceId, 'm1');
          assert.equal(st.properties.reported.moduleState, 'ok');
          assert.equal(st.properties.reported.$version, before + 1);
          const { responseBody: deviceTwin } = await registry.getTwin(dev.deviceId);
          assert.equal(deviceTwin.properties.reported.moduleState, undefined, 'the device twin is another twin');
        } finally {
          await closeQuietly(client);
        }
      });

      it('no handler -> 404 DeviceNotOnline; no answer -> GatewayTimeoutError after responseTimeoutInSeconds',
         { timeout: 60_000 }, async () => {
           const dev = await createSasDevice(hub, registry, `dm-err-${name}-${pid}`);
           const client = await openClient(dev.connectionString, Transport);
           try {
             await notOnline(dev.deviceId, undefined, 'anything');

             client.onDeviceMethod('silent', () => {});  // never answers
             client.onDeviceMethod('ready', (req, res) => res.send(200, () => {}));
             await invokeWhenSubscribed(dev.deviceId, undefined, { methodName: 'ready' });
             const started = Date.now();
             let err = null;
             try {
               await invoke(dev.deviceId, undefined, { methodName: 'silent', responseTimeoutInSeconds: 5 });
             } catch (e) {
               err = e;
             }
             const took = Date.now() - started;
             assert.ok(err, 'the invocation succeeded');
             assert.equal(err.constructor.name, 'GatewayTimeoutError', `${err.constructor.name}: ${err.message}`);
             assert.equal(err.response?.statusCode, 504);
             assert.ok(took >= 4_500 && took < 15_000, `answered after ${took} ms`);
             // The connection still takes calls.
             const r = await invoke(dev.deviceId, undefined, { methodName: 'ready' });
             assert.equal(r.result.status, 200);
           } finally {
             await closeQuietly(client);
           }
           // Gone: not online.
           await notOnline(dev.deviceId, undefined, 'ready');
         });
    });
  }

  it('the desired and methods subscriptions survive the SDK\'s token-renewal reconnect', { timeout: 90_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `tw-renew-${pid}`);
    const client = await openClient(dev.connectionString, Mqtt);
    // 20 s tokens renewed 14 s early: a DISCONNECT and a new CONNECT every 6 s, with no SUBSCRIBE.
    await client.setOptions({ tokenRenewal: { tokenValidTimeInSeconds: 20, tokenRenewalMarginInSeconds: 14 } });
    try {
      client.onDeviceMethod('hello', (req, res) => res.send(200, { hi: req.payload }, () => {}));
      const twin = await within(15_000, client.getTwin(), 'getTwin');
      const seen = desiredEvents(twin);
      await enableDesired(twin);
      await invokeWhenSubscribed(dev.deviceId, undefined, { methodName: 'hello', payload: 0 });

      const connects = () => hub.output.split(`: ${dev.deviceId} connected over mqtt`).length - 1;
      const before = connects();
      // Right after a reconnect, with ~6 s until the next: nothing sent now can fall into a gap.
      await waitFor('a token-renewal reconnect', () => connects() > before, 20_000);
      assert.match(hub.output, new RegExp(`: ${dev.deviceId} connected over mqtt \\([^)]*session present 1\\)`));

      const { responseBody: t } = await registry.updateTwin(dev.deviceId, { properties: { desired: { renewed: 1 } } }, '*');
      const v = t.properties.desired.$version;
      await waitFor(`desired $version ${v} after the reconnect`, () => seen.find((d) => d.$version === v), 5_000);
      const r = await invoke(dev.deviceId, undefined, { methodName: 'hello', payload: 1, responseTimeoutInSeconds: 5 });
      assert.equal(r.result.status, 200);
      assert.deepEqual(r.result.payload, { hi: 1 });
    } finally {
      await closeQuietly(client);
    }
  });

  it('raw MQTT: a QoS 1 twin request is answered and acknowledged; broken method answers are ignored, the connection kept',
     { timeout: 60_000 }, async () => {
       const dev = await createSasDevice(hub, registry, `dm-raw-${pid}`);
       const creds = deviceCredentials(hub.hostName, dev.deviceId, dev.device.authentication.symmetricKey.primaryKey);
       const raw = await RawMqtt.connect(hub.hostName);
       try {
         assert.equal(await raw.handshake({ ...creds, cleanSession: true }), 0);
         assert.deepEqual(await raw.subscribe([{ filter: '$iothub/twin/res/#', qos: 0 },
                                               { filter: '$iothub/methods/POST/#', qos: 0 }]), [0, 0]);
         raw.write(publishPacket({ topic: '$iothub/twin/GET/?$rid=raw-1', payload: Buffer.from(' '), qos: 1, packetId: 5 }));
         const got = [await raw.readPacket(), await raw.readPacket()];
         const answer = got.find((p) => p.type === 3);
         const ack = got.find((p) => p.type === 4);
         assert.ok(answer && ack, `packet types ${got.map((p) => p.type)}`);
         assert.equal(ack.body.readUInt16BE(0), 5);
         const res = parsePublish(answer);
         assert.equal(res.topic, '$iothub/twin/res/200/?$rid=raw-1');
         assert.equal(res.qos, 0);
         const view = JSON.parse(res.payload);
         assert.equal(typeof view.desired.$version, 'number');
         assert.equal(typeof view.reported.$version, 'number');

         const call = invoke(dev.deviceId, undefined, { methodName: 'raw.m-1', payload: { x: 1 }, responseTimeoutInSeconds: 10 });
         const req = parsePublish(await raw.readPacket(10_000));
         const m = /^\$iothub\/methods\/POST\/raw\.m-1\/\?\$rid=([^&]+)$/.exec(req.topic);
         assert.ok(m, req.topic);
         assert.equal(req.qos, 0);
         assert.deepEqual(JSON.parse(req.payload), { x: 1 });
         const rid = m[1];
         const answerWith = (topic, payload) =>
           raw.write(publishPacket({ topic, payload: Buffer.from(payload), qos: 0 }));
         answerWith(`$iothub/methods/res/NaN/?$rid=${rid}`, '{}');      // not an integer status
         answerWith('$iothub/methods/res/200/', '{}');                   // no $rid
         answerWith('$iothub/methods/res/200/?$rid=unknown-rid', '{}');  // nobody waits for it
         assert.equal(await raw.closedWithin(500), false, 'the hub closed the connection');
         answerWith(`$iothub/methods/res/202/?$rid=${rid}`, '{"done":true}');
         const { result } = await call;
         assert.equal(result.status, 202);
         assert.deepEqual(result.payload, { done: true });
       } finally {
         raw.destroy();
       }
     });

  it('twins survive kill -9', { timeout: 90_000 }, async () => {
    const dev = await createSasDevice(hub, registry, `tw-kill-${pid}`);
    let client = await openClient(dev.connectionString, Mqtt);
    let version;
    try {
      const twin = await within(15_000, client.getTwin(), 'getTwin');
      await report(twin, { durable: 'yes' });
      version = twin.properties.reported.$version + 1;
    } finally {
      await closeQuietly(client);
    }
    await hub.kill9();
    await hub.start();
    client = await openClient(dev.connectionString, Mqtt);
    try {
      const twin = await within(15_000, client.getTwin(), 'getTwin after the restart');
      assert.equal(twin.properties.reported.durable, 'yes');
      assert.equal(twin.properties.reported.$version, version);
    } finally {
      await closeQuietly(client);
    }
  });
});
