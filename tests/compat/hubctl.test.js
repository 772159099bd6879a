'use strict';
// hubctl against a real hubd: what it prints must agree with hubd and with the Azure SDK's view.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { Registry } = require('azure-iothub');
const { startHub, hubctl } = require('./lib/hub');
const { errors, rejectsWith, parseConnectionString } = require('./lib/util');

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
