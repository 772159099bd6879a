'use strict';
// Message routing (issue #7) with unmodified SDKs: hubd started with `--routing FILE` (IoT Hub's
// ARM routing object). Telemetry over Mqtt routed by an application property and by a $body field
// reaches a custom Event Hubs-compatible endpoint, read with @azure/event-hubs'
// EventHubConsumerClient (EntityPath = the endpoint's name), and not `events`; unmatched messages
// reach `events` through the fallback route; a storage endpoint writes JSON-lines files with IoT
// Hub's field names; twin changes (Registry.updateTwin), lifecycle (Registry.create/delete) and
// connection state (a device connecting and disconnecting over Mqtt) arrive where their routes
// say, with IoT Hub's system and application properties; enrichments are stamped; an unknown
// entity is not found; and a route whose condition does not compile stops hubd at start,
// naming the route.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { EventHubConsumerClient, earliestEventPosition } = require('@azure/event-hubs');
const { Registry } = require('azure-iothub');
const { Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { startHub, hubctl } = require('./lib/hub');
const { createSasDevice, openClient, within } = require('./lib/device');

const routing = {
  endpoints: {
    eventHubs: [{ name: 'alerts' }, { name: 'twin-events' }, { name: 'connection-events' }, { name: 'lifecycle' }],
    storageContainers: [{
      name: 'archive', containerName: 'cold', fileNameFormat: '{iothub}/{partition}/{YYYY}/{MM}/{DD}/{HH}/{mm}',
      batchFrequencyInSeconds: 1, maxChunkSizeInBytes: 10485760, encoding: 'JSON',
    }, {
      name: 'archive-avro', batchFrequencyInSeconds: 1,  // no encoding: IoT Hub's default, Avro
    }],
  },
  routes: [
    { name: 'by-property', source: 'DeviceMessages', condition: "level = 'critical'", endpointNames: ['alerts'], isEnabled: true },
    { name: 'by-body', source: 'DeviceMessages', condition: '$body.temperature > 50', endpointNames: ['alerts'], isEnabled: true },
    { name: 'disabled', source: 'DeviceMessages', condition: 'true', endpointNames: ['alerts'], isEnabled: false },
    { name: 'to-storage', source: 'DeviceMessages', condition: "archive = 'yes'", endpointNames: ['archive'], isEnabled: true },
    { name: 'to-avro', source: 'DeviceMessages', condition: "archive = 'avro'", endpointNames: ['archive-avro'], isEnabled: true },
    { name: 'twins', source: 'TwinChangeEvents', condition: 'true', endpointNames: ['twin-events'], isEnabled: true },
    { name: 'connections', source: 'DeviceConnectionStateEvents', endpointNames: ['connection-events'], isEnabled: true },
    { name: 'lifecycle', source: 'DeviceLifecycleEvents', condition: "opType = 'createDeviceIdentity' OR opType = 'deleteDeviceIdentity'",
      endpointNames: ['lifecycle'], isEnabled: true },
  ],
  fallbackRoute: { name: '$fallback', source: 'DeviceMessages', condition: 'true', endpointNames: ['events'], isEnabled: true },
  enrichments: [
    { key: 'hub', value: '$iothubname', endpointNames: ['alerts'] },
    { key: 'site', value: '$twin.tags.site', endpointNames: ['alerts'] },
    { key: 'floor', value: '$twin.tags.floor', endpointNames: ['alerts'] },
  ],
};

function writeRoutingFile(config) {
  const file = path.join(fs.mkdtempSync(path.join(process.env.HUBD_TEST_TMP ?? os.tmpdir(), 'routing-')), 'routing.json');
  fs.writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

// Reads every partition of one entity from the start until `until(events)` holds or time is up.
async function collect(hub, entity, until, ms = 20_000) {
  const p = hub.policies().find((x) => (x.name ?? x.keyName) === 'service');
  const consumer = new EventHubConsumerClient(
    '$Default', `Endpoint=sb://${hub.hostName}/;SharedAccessKeyName=service;SharedAccessKey=${p.primaryKey};EntityPath=${entity}`,
    { retryOptions: { maxRetries: 0, timeoutInMs: 10_000 } });
  const events = [];
  const errors = [];
  let done;
  const finished = new Promise((resolve) => { done = resolve; });
  const sub = consumer.subscribe({
    processEvents: async (batch) => {
      events.push(...batch);
      if (until(events)) done();
    },
    processError: async (err) => { errors.push(err); },
  }, { startPosition: earliestEventPosition, maxWaitTimeInSeconds: 1 });
  const timer = setTimeout(done, ms);
  await finished;
  clearTimeout(timer);
  await sub.close().catch(() => {});
  await consumer.close().catch(() => {});
  return { events, errors };
}

const has = (id) => (evs) => evs.some((e) => e.messageId === id);

describe('message routing', () => {
  let hub;
  let registry;
  let device;
  let client;
  const pid = process.pid;

  async function send(body, props = {}, options = {}) {
    const m = new Message(typeof body === 'string' ? body : JSON.stringify(body));
    m.messageId = `m-${crypto.randomUUID()}`;
    m.contentType = options.contentType ?? 'application/json';
    m.contentEncoding = 'utf-8';
    for (const [k, v] of Object.entries(props)) m.properties.add(k, v);
    await within(30_000, client.sendEvent(m), 'sendEvent');
    return m.messageId;
  }

  let routingFile;

  before(async () => {
    routingFile = writeRoutingFile(routing);
    hub = await startHub({ name: 'routing', args: ['--routing', routingFile, '--routing-test-batching'] });
    registry = Registry.fromConnectionString(hub.connectionString);
    device = await createSasDevice(hub, registry, `route-dev-${pid}`);
    await registry.updateTwin(device.deviceId, { tags: { site: 'berlin', floor: 3 } }, '*');
    client = await openClient(device.connectionString, Mqtt);
  });
  after(async () => {
    if (client) await client.close().catch(() => {});
    if (hub) await hub.dispose();
  });

  it('routes by an application property and by a $body field to a custom Event Hubs endpoint, enriched, not to events',
     { timeout: 120_000 }, async () => {
       const byProperty = await send({ temperature: 20 }, { level: 'critical' });
       const byBody = await send({ temperature: 70 });
       const byBoth = await send({ temperature: 90 }, { LEVEL: 'critical' });  // names are case-insensitive
       const textBody = await send('{"temperature": 99}', {}, { contentType: 'text/plain' });  // $body not evaluated
       const unmatched = await send({ temperature: 10 }, { level: 'info' });
       const marker = await send({ temperature: 51 });

       const alerts = await collect(hub, 'alerts', has(marker));
       assert.deepEqual(alerts.errors.map((e) => e.message), []);
       const ids = alerts.events.map((e) => e.messageId);
       assert.deepEqual(ids, [byProperty, byBody, byBoth, marker], 'once each, in order: dedup across matching routes');
       const first = alerts.events[0];
       assert.deepEqual(first.body, { temperature: 20 });
       assert.equal(first.properties.level, 'critical');
       assert.equal(first.properties.hub, hub.hostName.toLowerCase(), '$iothubname enrichment');
       assert.equal(first.properties.site, 'berlin', '$twin.tags.site enrichment');
       assert.equal(first.properties.floor, '3');
       assert.equal(first.systemProperties['iothub-connection-device-id'], device.deviceId);
       assert.equal(first.systemProperties['iothub-message-source'], 'Telemetry');
       assert.equal(first.contentType, 'application/json');

       // events: only what no route took (the fallback), so the routed ones never show up there.
       const events = await collect(hub, hub.hostName, has(unmatched));
       assert.deepEqual(events.errors.map((e) => e.message), []);
       const builtIn = events.events.map((e) => e.messageId);
       assert.ok(builtIn.includes(unmatched), 'the fallback route delivers the unmatched message to events');
       assert.ok(builtIn.includes(textBody), 'a text/plain body is not routed on');
       for (const id of [byProperty, byBody, byBoth, marker]) assert.ok(!builtIn.includes(id), `${id} is not in events`);
       const fallback = events.events.find((e) => e.messageId === unmatched);
       assert.equal(fallback.properties.hub, undefined, 'enrichments of alerts only');
     });

  it('a storage endpoint writes JSON lines with IoT Hub\'s field names', { timeout: 60_000 }, async () => {
    const json = await send({ temperature: 21.5, nested: { ok: true } }, { archive: 'yes', kind: 'json' });
    const text = await send('plain text', { archive: 'yes' }, { contentType: 'text/plain' });
    const root = path.join(hub.dataDir, 'storage', 'cold');
    const lines = new Map();
    const deadline = Date.now() + 30_000;
    const files = [];
    while (Date.now() < deadline && !(lines.has(json) && lines.has(text))) {
      await new Promise((r) => setTimeout(r, 250));
      if (!fs.existsSync(root)) continue;
      for (const f of fs.readdirSync(root, { recursive: true })) {
        const full = path.join(root, f);
        if (!f.endsWith('.json') || !fs.statSync(full).isFile()) continue;
        if (!files.includes(f)) files.push(f);
        for (const line of fs.readFileSync(full, 'utf8').split('\n').filter(Boolean)) {
          const record = JSON.parse(line);
          lines.set(record.SystemProperties.messageId, { record, file: f });
        }
      }
    }
    assert.ok(lines.has(json) && lines.has(text), `both messages in files under ${root}: ${files.join(', ')}`);
    const { record, file } = lines.get(json);
    const hubName = hub.hostName.toLowerCase();
    assert.match(file, new RegExp(`^${hubName.replace(/\./g, '\\.')}/\\d+/\\d{4}/\\d{2}/\\d{2}/\\d{2}/\\d{2}(_\\d+)?\\.json$`));
    assert.deepEqual(Object.keys(record), ['EnqueuedTimeUtc', 'Properties', 'SystemProperties', 'Body']);
    assert.match(record.EnqueuedTimeUtc, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$/);
    assert.deepEqual(record.Properties, { archive: 'yes', kind: 'json' });
    assert.deepEqual(record.Body, { temperature: 21.5, nested: { ok: true } });
    const sys = record.SystemProperties;
    assert.equal(sys.connectionDeviceId, device.deviceId);
    assert.equal(sys.connectionDeviceGenerationId, device.generationId);
    assert.equal(sys.contentType, 'application/json');
    assert.equal(sys.contentEncoding, 'utf-8');
    assert.equal(sys.enqueuedTime, record.EnqueuedTimeUtc);
    assert.deepEqual(JSON.parse(sys.connectionAuthMethod), { scope: 'device', type: 'sas', issuer: 'iothub', acceptingIpFilterRule: null });
    assert.equal(lines.get(text).record.Body, Buffer.from('plain text').toString('base64'), 'not JSON: base64');
  });

  it('a storage endpoint without an encoding writes Avro files (IoT Hub\'s default)', { timeout: 60_000 }, async () => {
    const id = await send({ temperature: 22 }, { archive: 'avro' });
    const root = path.join(hub.dataDir, 'storage', 'archive-avro');
    const deadline = Date.now() + 30_000;
    let found = null;
    while (Date.now() < deadline && !found) {
      await new Promise((r) => setTimeout(r, 250));
      if (!fs.existsSync(root)) continue;
      for (const f of fs.readdirSync(root, { recursive: true })) {
        const full = path.join(root, f);
        if (!fs.statSync(full).isFile()) continue;
        const bytes = fs.readFileSync(full);
        if (bytes.includes(id)) found = { f, bytes };
      }
    }
    assert.ok(found, `an Avro file holding ${id} under ${root}`);
    assert.match(found.f, /\.avro$/);
    assert.deepEqual([...found.bytes.subarray(0, 4)], [0x4f, 0x62, 0x6a, 0x01], 'Avro object container magic');
    const text = found.bytes.toString('latin1');
    assert.ok(text.includes('"namespace":"Microsoft.Azure.Devices"'), 'IoT Hub\'s record schema');
    assert.ok(text.includes('{"temperature":22}'), 'the body as bytes (codec null)');
    assert.ok(text.includes(device.deviceId));
  });

  it('twin changes arrive at the endpoint of the TwinChangeEvents route', { timeout: 60_000 }, async () => {
    await registry.updateTwin(device.deviceId, { properties: { desired: { mode: 'eco' } } }, '*');
    const { events, errors } = await collect(hub, 'twin-events',
                                             (evs) => evs.some((e) => e.body?.properties?.desired?.mode === 'eco'));
    assert.deepEqual(errors.map((e) => e.message), []);
    const e = events.find((x) => x.body?.properties?.desired?.mode === 'eco');
    assert.ok(e, `a twin change event with the desired patch: ${JSON.stringify(events.map((x) => x.body))}`);
    assert.equal(e.properties.opType, 'updateTwin');
    assert.equal(e.properties['iothub-message-schema'], 'twinChangeNotification');
    assert.equal(e.properties.hubName, hub.hostName.toLowerCase());
    assert.equal(e.properties.deviceId, device.deviceId);
    assert.match(e.properties.operationTimestamp, /^\d{4}-\d{2}-\d{2}T/);
    assert.equal(e.systemProperties['iothub-message-source'], 'twinChangeEvents');
    assert.equal(e.systemProperties['iothub-connection-device-id'], device.deviceId);
    assert.equal(e.contentType, 'application/json');
    assert.equal(e.systemProperties.contentEncoding, 'utf-8');
    const userId = e.systemProperties.userId;  // AMQP binary; the SDK copies it into a plain object
    assert.equal(Buffer.from(Object.values(userId)).toString(), hub.hostName.toLowerCase(), `user-id: the hub name (${JSON.stringify(userId)})`);
    assert.ok(e.correlationId, 'a correlation id');
    assert.equal(typeof e.body.version, 'number');
    assert.equal(e.body.properties.desired.$version, 2);
    // The tags set in before() came first.
    const tags = events.find((x) => x.body?.tags?.site === 'berlin');
    assert.ok(tags, 'the tags update is a twin change too');
    assert.ok(events.indexOf(tags) < events.indexOf(e));
    // Telemetry never goes there.
    assert.ok(events.every((x) => x.systemProperties['iothub-message-source'] === 'twinChangeEvents'));
  });

  it('connection state: a device connecting and disconnecting over Mqtt', { timeout: 60_000 }, async () => {
    const other = await createSasDevice(hub, registry, `route-conn-${pid}`);
    const c = await openClient(other.connectionString, Mqtt);
    await within(20_000, c.sendEvent(new Message('{}')), 'sendEvent');
    await c.close();
    const mine = (evs) => evs.filter((e) => e.properties.deviceId === other.deviceId);
    const first = (evs) => evs.some((e) => e.properties.deviceId === device.deviceId && e.properties.opType === 'deviceConnected');
    const { events, errors } = await collect(hub, 'connection-events', (evs) => mine(evs).length >= 2 && first(evs));
    assert.deepEqual(errors.map((e) => e.message), []);
    const got = mine(events);
    assert.deepEqual(got.map((e) => e.properties.opType), ['deviceConnected', 'deviceDisconnected']);
    for (const e of got) {
      assert.equal(e.properties['iothub-message-schema'], 'deviceConnectionStateNotification');
      assert.equal(e.properties.hubName, hub.hostName.toLowerCase());
      assert.equal(e.systemProperties['iothub-message-source'], 'deviceConnectionStateEvents');
      assert.equal(e.systemProperties['iothub-connection-device-id'], other.deviceId);
      assert.match(e.body.sequenceNumber, /^[0-9A-F]{64}$/);
    }
    assert.ok(got[0].body.sequenceNumber < got[1].body.sequenceNumber, 'sequence numbers grow');
    // The first device, connected in before(), is there too.
    assert.ok(first(events), 'the device connected in before() too');
  });

  it('lifecycle: creating and deleting a device', { timeout: 60_000 }, async () => {
    const id = `route-life-${pid}`;
    await registry.create({ deviceId: id });
    await registry.delete(id);
    const mine = (evs) => evs.filter((e) => e.properties.deviceId === id);
    const { events, errors } = await collect(hub, 'lifecycle', (evs) => mine(evs).length >= 2);
    assert.deepEqual(errors.map((e) => e.message), []);
    const got = mine(events);
    assert.deepEqual(got.map((e) => e.properties.opType), ['createDeviceIdentity', 'deleteDeviceIdentity']);
    for (const e of got) {
      assert.equal(e.properties['iothub-message-schema'], 'deviceLifecycleNotification');
      assert.equal(e.systemProperties['iothub-message-source'], 'deviceLifecycleEvents');
      assert.equal(e.body.deviceId, id);
      assert.match(e.body.etag, /^[A-Za-z0-9+/=]+$/);
      assert.equal(typeof e.body.properties.desired.$version, 'number');
    }
  });

  it('an entity that is neither the hub nor an endpoint is not found', { timeout: 60_000 }, async () => {
    const { events, errors } = await collect(hub, 'nosuch-entity', () => false, 5_000);
    assert.equal(events.length, 0);
    assert.ok(errors.some((e) => e.code === 'MessagingEntityNotFoundError'),
              `not found: ${errors.map((e) => `${e.code}: ${e.message}`)}`);
  });

  it('hubctl route list, test and set (the /routing admin API); a replacement takes effect at once and is saved',
     { timeout: 90_000 }, async () => {
       const list = await hubctl(hub, 'route', 'list');
       assert.equal(list.code, 0, list.stderr);
       const running = JSON.parse(list.stdout);
       assert.deepEqual(running.routes.map((r) => r.name), routing.routes.map((r) => r.name));
       assert.equal(running.endpoints.eventHubs.length, 4);

       let t = await hubctl(hub, 'route', 'test', '--json-body', '{"temperature": 70}', '--system', `connectionDeviceId=${device.deviceId}`);
       assert.equal(t.code, 0, t.stderr);
       assert.match(t.stdout, /^matched routes: by-body$/m);
       assert.match(t.stdout, /^endpoints: +alerts$/m);
       t = await hubctl(hub, 'route', 'test', '--property', 'level=info');
       assert.equal(t.code, 0, t.stderr);
       assert.match(t.stdout, /^matched routes: \(none\)$/m);
       assert.match(t.stdout, /^fallback route: yes$/m);
       assert.match(t.stdout, /^endpoints: +events$/m);
       t = await hubctl(hub, 'route', 'test', '--source', 'TwinChangeEvents', '--json', '--json-body', '{"version": 3}');
       assert.equal(t.code, 0, t.stderr);
       assert.deepEqual(JSON.parse(t.stdout).endpoints, ['twin-events']);

       // Endpoints are fixed while hubd runs.
       const more = structuredClone(running);
       more.endpoints.eventHubs.push({ name: 'extra' });
       const refused = await hubctl(hub, 'route', 'set', writeRoutingFile(more));
       assert.equal(refused.code, 1);
       assert.match(refused.stderr, /endpoints cannot change/);
       const broken = structuredClone(running);
       broken.routes[0].condition = 'level = ';
       const bad = await hubctl(hub, 'route', 'set', writeRoutingFile(broken));
       assert.equal(bad.code, 1);
       assert.match(bad.stderr, /route 'by-property': condition: Line 1:\d+/);

       // Switch the property route off: a critical message now takes the fallback to events.
       const next = structuredClone(running);
       next.routes.find((r) => r.name === 'by-property').isEnabled = false;
       const set = await hubctl(hub, 'route', 'set', writeRoutingFile(next));
       assert.equal(set.code, 0, set.stderr);
       assert.equal(JSON.parse(set.stdout).routes.find((r) => r.name === 'by-property').isEnabled, false);
       const saved = JSON.parse(fs.readFileSync(routingFile, 'utf8'));
       assert.equal(saved.routes.find((r) => r.name === 'by-property').isEnabled, false, 'written to the routing file');
       const id = await send({ temperature: 20 }, { level: 'critical' });
       const events = await collect(hub, hub.hostName, has(id));
       assert.ok(events.events.some((e) => e.messageId === id), 'the disabled route no longer takes it');
     });
});

describe('routing configuration errors', () => {
  it('a condition that does not compile stops hubd at start, naming the route and the position',
     { timeout: 60_000 }, async () => {
       const bad = structuredClone(routing);
       bad.routes.push({ name: 'broken-route', source: 'DeviceMessages', condition: "level = = 'x'", endpointNames: ['alerts'], isEnabled: true });
       await assert.rejects(startHub({ name: 'routing-bad', args: ['--routing', writeRoutingFile(bad), '--routing-test-batching'] }),
                            (err) => /hubd: routing file .*: route 'broken-route': condition: Line 1:9/.test(err.message) ||
                                     assert.fail(err.message));
     });

  it('IoT Hub\'s rules are checked at start too', { timeout: 60_000 }, async () => {
    const bad = structuredClone(routing);
    bad.routes[0].endpointNames = ['alerts', 'events'];
    await assert.rejects(startHub({ name: 'routing-bad2', args: ['--routing', writeRoutingFile(bad), '--routing-test-batching'] }),
                         (err) => /route 'by-property': endpointNames must hold exactly one endpoint/.test(err.message) ||
                                  assert.fail(err.message));
    // Without the test flag, IoT Hub's 60 s minimum batch frequency holds.
    await assert.rejects(startHub({ name: 'routing-bad3', args: ['--routing', writeRoutingFile(routing)] }),
                         (err) => /endpoint 'archive': batchFrequencyInSeconds must be between 60 and 720/.test(err.message) ||
                                  assert.fail(err.message));
  });
});
