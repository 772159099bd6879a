'use strict';
// hubctl against a real hubd: what it prints must agree with hubd and with the Azure SDK's view.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { Registry } = require('azure-iothub');
const { startHub, hubctl } = require('./lib/hub');
const { errors, rejectsWith, parseConnectionString } = require('./lib/util');
const { Mqtt } = require('azure-iot-device-mqtt');
const {
  Message, createSasDevice, openClient, closeQuietly, within, runMonitor, startMonitor, parseJsonLines,
} = require('./lib/device');

async function ok(hub, ...args) {
  const res = await hubctl(hub, ...args);
  assert.equal(res.code, 0, `hubctl ${args.join(' ')} exited ${res.code}\nstdout: ${res.stdout}\nstderr: ${res.stderr}`);
  return res.stdout.trim();
}

describe('hubctl', () => {
  let hub;
  let registry;
  before(async () => {
    hub = await startHub({ name: 'hubctl' });
    registry = Registry.fromConnectionString(hub.connectionString);
  });
  after(async () => {
    if (hub) await hub.dispose();
  });

  it('connection-string prints what hubd printed, and it works with the SDK', async () => {
    const cs = await ok(hub, 'connection-string');
    assert.equal(cs, hub.connectionString);
    const parsed = parseConnectionString(cs);
    assert.equal(parsed.HostName, hub.hostName);
    assert.equal(parsed.SharedAccessKeyName, 'iothubowner');
    assert.ok(Buffer.from(parsed.SharedAccessKey, 'base64').length >= 16);
    const { responseBody } = await Registry.fromConnectionString(cs).getRegistryStatistics();
    assert.equal(typeof responseBody.totalDeviceCount, 'number');
  });

  it('connection-string --policy prints that policy, with its rights', async () => {
    const cs = await ok(hub, 'connection-string', '--policy', 'registryRead');
    assert.equal(cs, hub.policyConnectionString('registryRead'));
    const reader = Registry.fromConnectionString(cs);
    assert.ok(Array.isArray((await reader.list()).responseBody));
    await rejectsWith(reader.create({ deviceId: `cli-reader-${process.pid}` }), errors.UnauthorizedError);
  });

  it('ca-cert prints the CA that hubd announced, which is the test CA', async () => {
    const printed = await ok(hub, 'ca-cert');
    assert.ok(fs.existsSync(printed), `${printed} exists`);
    assert.equal(fs.realpathSync(printed), fs.realpathSync(path.join(hub.dataDir, 'ca.pem')));
    assert.ok(hub.caCertPath, 'hubd printed a "CA certificate:" line');
    assert.equal(fs.realpathSync(hub.caCertPath), fs.realpathSync(printed));
    assert.equal(fs.readFileSync(printed, 'utf8'), fs.readFileSync(process.env.NODE_EXTRA_CA_CERTS, 'utf8'),
                 'hubd reused the CA placed in its data folder');
  });

  describe('device commands against the running hub', () => {
    const id = `cli-${process.pid}`;

    it('device create: the SDK sees the new device with generated keys', async () => {
      await ok(hub, 'device', 'create', id);
      const { responseBody: d } = await registry.get(id);
      assert.equal(d.deviceId, id);
      assert.equal(d.authentication.type, 'sas');
      assert.ok(d.authentication.symmetricKey.primaryKey);
    });

    it('device create of an existing id fails', async () => {
      const res = await hubctl(hub, 'device', 'create', id);
      assert.notEqual(res.code, 0, res.stdout);
      assert.match(res.stderr, /DeviceAlreadyExists/);
    });

    it('device show prints the device as JSON', async () => {
      const shown = JSON.parse(await ok(hub, 'device', 'show', id));
      const { responseBody: d } = await registry.get(id);
      assert.equal(shown.deviceId, id);
      assert.equal(shown.etag, d.etag);
      assert.equal(shown.generationId, d.generationId);
      assert.equal(shown.authentication.symmetricKey.primaryKey, d.authentication.symmetricKey.primaryKey);
    });

    it('device list prints a JSON array with devices created through the SDK', async () => {
      const other = `${id}-sdk`;
      await registry.create({ deviceId: other });
      const listed = JSON.parse(await ok(hub, 'device', 'list'));
      assert.ok(Array.isArray(listed));
      const ids = listed.map((d) => d.deviceId);
      assert.ok(ids.includes(id), ids.join(' '));
      assert.ok(ids.includes(other), ids.join(' '));
    });

    it('device connection-string carries the device key the registry holds', async () => {
      const out = await ok(hub, 'device', 'connection-string', id);
      const { responseBody: d } = await registry.get(id);
      assert.equal(out, `HostName=${hub.hostName};DeviceId=${id};SharedAccessKey=${d.authentication.symmetricKey.primaryKey}`);
    });

    it('device delete: the SDK no longer finds it; show then fails', async () => {
      await ok(hub, 'device', 'delete', id);
      await rejectsWith(registry.get(id), errors.DeviceNotFoundError);
      const res = await hubctl(hub, 'device', 'show', id);
      assert.notEqual(res.code, 0, res.stdout);
      assert.match(res.stderr, /DeviceNotFound/);
    });
  });

  describe('monitor-events (device-to-cloud messages sent over MQTT)', () => {
    const id = `cli-monitor-${process.pid}`;
    let dev;
    let client;
    before(async () => {
      dev = await createSasDevice(hub, registry, id);
      client = await openClient(dev.connectionString, Mqtt);
      const json = new Message(JSON.stringify({ temperature: 21.5, unit: '°C' }));
      json.messageId = 'm-json';
      json.correlationId = 'c-json';
      json.contentType = 'application/json';
      json.contentEncoding = 'utf-8';
      json.properties.add('alert', 'hot/cold & more');
      json.properties.add('ünïcode key', '✓');
      const text = new Message('plain text, not JSON');
      text.messageId = 'm-text';
      text.properties.add('kind', 'text');
      const binary = new Message(Buffer.from([0x00, 0xfe, 0xff]));
      binary.messageId = 'm-binary';
      for (const m of [json, text, binary]) await within(20_000, client.sendEvent(m), 'sendEvent');
    });
    after(async () => {
      await closeQuietly(client);
    });

    it('--json prints every message once, with its system and application properties', async () => {
      const res = await runMonitor(hub, ['--from', 'start', '--json', '--timeout', '1', '--device', id]);
      assert.equal(res.code, 0, res.stderr);
      const events = parseJsonLines(res.stdout);
      assert.deepEqual(events.map((e) => e.systemProperties['message-id']), ['m-json', 'm-text', 'm-binary']);
      const [json, text, binary] = events;
      for (const e of events) {
        assert.equal(e.deviceId, id);
        assert.equal(e.moduleId, null);
        assert.equal(e.systemProperties['iothub-connection-device-id'], id);
        assert.equal(e.systemProperties['iothub-connection-auth-generation-id'], dev.generationId);
        assert.equal(JSON.parse(e.systemProperties['iothub-connection-auth-method']).type, 'sas');
        assert.equal(e.systemProperties['iothub-message-source'], 'Telemetry');
        assert.equal(e.systemProperties['iothub-enqueuedtime'], e.enqueuedTime);
        assert.ok(Number.isInteger(e.partition) && Number.isInteger(e.sequenceNumber), JSON.stringify(e));
        assert.equal(typeof e.offset, 'string');
      }
      assert.deepEqual(json.body, { temperature: 21.5, unit: '°C' });
      assert.equal(json.systemProperties['correlation-id'], 'c-json');
      assert.equal(json.systemProperties['content-type'], 'application/json');
      assert.equal(json.systemProperties['content-encoding'], 'utf-8');
      assert.deepEqual(json.properties, { alert: 'hot/cold & more', 'ünïcode key': '✓' });
      assert.equal(text.body, 'plain text, not JSON');
      assert.deepEqual(text.properties, { kind: 'text' });
      assert.equal(binary.bodyEncoding, 'base64');
      assert.deepEqual(Buffer.from(binary.body, 'base64'), Buffer.from([0x00, 0xfe, 0xff]));
    });

    it('the human format prints az-style event blocks with the same content', async () => {
      const res = await runMonitor(hub, ['--from', 'start', '--timeout', '1', '--device', id]);
      assert.equal(res.code, 0, res.stderr);
      const blocks = res.stdout.split(/^(?=\{$)/m).filter((b) => b.trim()).map((b) => JSON.parse(b));
      assert.equal(blocks.length, 3, res.stdout);
      const [json, text, binary] = blocks.map((b) => b.event);
      assert.equal(json.origin, id);
      assert.equal(json.module, '');
      assert.deepEqual(json.payload, { temperature: 21.5, unit: '°C' });
      assert.equal(json.properties.system['message-id'], 'm-json');
      assert.equal(json.properties.system['correlation-id'], 'c-json');
      assert.deepEqual(json.properties.application, { alert: 'hot/cold & more', 'ünïcode key': '✓' });
      assert.equal(json.annotations['iothub-connection-device-id'], id);
      assert.equal(text.payload, 'plain text, not JSON');
      assert.equal(binary.properties.system['message-id'], 'm-binary');
    });

    it('--from now shows only new messages and --count ends it', async () => {
      const monitor = await startMonitor(hub, ['--json', '--device', id, '--count', '2', '--timeout', '25']);
      try {
        const started = Date.now();
        for (const n of [1, 2]) {
          const m = new Message(`new ${n}`);
          m.messageId = `m-new-${n}`;
          await within(20_000, client.sendEvent(m), 'sendEvent');
        }
        const exit = await within(20_000, monitor.exited, 'monitor-events to stop after 2 messages');
        assert.equal(exit.code, 0, monitor.output().stderr);
        assert.ok(Date.now() - started < 20_000, 'it stopped at the count, not at the timeout');
        assert.deepEqual(parseJsonLines(monitor.output().stdout).map((e) => e.systemProperties['message-id']),
                         ['m-new-1', 'm-new-2']);
      } finally {
        if (monitor.child.exitCode === null) monitor.child.kill('SIGKILL');
      }
    });

    it('--device filters: another device shows nothing', async () => {
      const res = await runMonitor(hub, ['--from', 'start', '--json', '--timeout', '1', '--device', `${id}-nobody`]);
      assert.equal(res.code, 0, res.stderr);
      assert.equal(res.stdout, '');
    });

    it('a data folder without an event log is an error', async () => {
      const res = await hubctl({ dataDir: path.join(hub.dataDir, 'no-such-folder') }, 'monitor-events', '--timeout', '1');
      assert.equal(res.code, 1, res.stdout);
      assert.match(res.stderr, /no telemetry to read/);
    });
  });

  it('an unknown command fails with usage on stderr', async () => {
    const res = await hubctl(hub, 'no-such-command');
    assert.notEqual(res.code, 0);
    assert.ok(res.stderr.length > 0);
  });

  it('connection-string and ca-cert also work while hubd is stopped', async () => {
    const expected = hub.connectionString;
    const stopped = await hub.stop();
    assert.equal(stopped.forced, false, 'hubd stops on SIGTERM');
    assert.equal(await ok(hub, 'connection-string'), expected);
    assert.equal(fs.realpathSync(await ok(hub, 'ca-cert')), fs.realpathSync(path.join(hub.dataDir, 'ca.pem')));
    await hub.start();
    assert.equal(hub.connectionString, expected, 'a restart keeps the connection string');
  });
});
