'use strict';
// Device and module twins from the service side, through azure-iothub's Registry (REST on port
// 443), unmodified: getTwin / updateTwin / Twin.update / getModuleTwin / updateModuleTwin with
// etags, merge and null-delete with IoT Hub's $metadata and $version, IoT Hub's errors, and twins
// that survive kill -9.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Registry } = require('azure-iothub');
const { startHub } = require('./lib/hub');
const { errors, rejectsWith, ownerToken, request, API } = require('./lib/util');

let n = 0;
function newId(prefix = 'twin') {
  return `${prefix}-${process.pid}-${++n}`;
}

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

// A desired section's properties without the read-only "$metadata" and "$version".
function plain(section) {
  const { $metadata, $version, ...rest } = section;
  return rest;
}

describe('twins (service side)', () => {
  let hub;
  let registry;

  before(async () => {
    hub = await startHub({ name: 'twins_service' });
    registry = Registry.fromConnectionString(hub.connectionString);
  });
  after(async () => {
    if (hub) await hub.dispose();
  });

  it('getTwin of a new device: the document with versions, metadata and a quoted ETag', async () => {
    const id = newId();
    await registry.create({ deviceId: id });
    const { responseBody: twin, httpResponse } = await registry.getTwin(id);
    assert.equal(twin.deviceId, id);
    assert.match(httpResponse.headers['content-type'], /application\/json/);
    assert.ok(twin.etag, 'etag set');
    assert.equal(httpResponse.headers.etag, `"${twin.etag}"`);
    assert.equal(typeof twin.version, 'number');
    assert.deepEqual(twin.tags, {});
    const { desired, reported } = twin.properties;
    assert.equal(desired.$version, 1);
    assert.equal(reported.$version, 1);
    assert.match(desired.$metadata.$lastUpdated, ISO);
    assert.match(reported.$metadata.$lastUpdated, ISO);
    assert.deepEqual(plain(desired), {});
  });

  it('updateTwin and Twin.update merge tags and desired; null deletes; getTwin shows $metadata and $version',
    async () => {
      const id = newId();
      await registry.create({ deviceId: id });
      const { responseBody: first } = await registry.getTwin(id);

      const { responseBody: updated } = await registry.updateTwin(id, {
        tags: { building: 'b1', floor: 3 },
        properties: { desired: { fan: { speed: 2, on: true }, mode: 'eco' } },
      }, first.etag);
      assert.notEqual(updated.etag, first.etag, 'a change moves the etag');
      assert.equal(updated.properties.desired.$version, 2);
      assert.deepEqual(updated.tags, { building: 'b1', floor: 3 });

      // Twin.update on the object getTwin returned (it carries the etag it read).
      const { responseBody: twin } = await registry.getTwin(id);
      assert.equal(twin.etag, updated.etag);
      await twin.update({ tags: { floor: null }, properties: { desired: { fan: { on: null }, level: 7 } } });
      assert.notEqual(twin.etag, updated.etag, 'Twin.update refreshes the object');

      const { responseBody: got } = await registry.getTwin(id);
      assert.deepEqual(got.tags, { building: 'b1' });
      const desired = got.properties.desired;
      assert.deepEqual(plain(desired), { fan: { speed: 2 }, mode: 'eco', level: 7 });
      assert.equal(desired.$version, 3);
      assert.equal(got.etag, twin.etag);
      // $metadata mirrors the tree: every level has $lastUpdated, desired ones $lastUpdatedVersion.
      const md = desired.$metadata;
      assert.match(md.$lastUpdated, ISO);
      assert.match(md.fan.$lastUpdated, ISO);
      assert.equal(md.fan.speed.$lastUpdatedVersion, 2);
      assert.equal(md.level.$lastUpdatedVersion, 3);
      assert.equal(md.fan.$lastUpdatedVersion, 3, 'the level whose member was deleted was touched');
      assert.equal(md.fan.on, undefined, 'a deleted member leaves no metadata');
      assert.equal(got.properties.reported.$version, 1, 'reported is the device\'s: untouched');
    });

  it('a stale etag is refused with 412 (InvalidEtagError); "*" is unconditional', async () => {
    const id = newId();
    await registry.create({ deviceId: id });
    const { responseBody: stale } = await registry.getTwin(id);
    await registry.updateTwin(id, { tags: { a: 1 } }, stale.etag);

    await rejectsWith(registry.updateTwin(id, { tags: { a: 2 } }, stale.etag), errors.InvalidEtagError,
                      { status: 412, code: 'PreconditionFailed' });
    // The Twin object from before the change holds the stale etag too.
    await rejectsWith(stale.update({ properties: { desired: { x: 1 } } }), errors.InvalidEtagError, { status: 412 });
    let { responseBody: got } = await registry.getTwin(id);
    assert.deepEqual(got.tags, { a: 1 }, 'the refused patches changed nothing');
    assert.deepEqual(plain(got.properties.desired), {});

    await registry.updateTwin(id, { tags: { a: 3 } }, '*');
    ({ responseBody: got } = await registry.getTwin(id));
    assert.deepEqual(got.tags, { a: 3 });
  });

  it('an oversize desired patch is refused with IoT Hub\'s ArgumentInvalid and its size text', async () => {
    const id = newId();
    await registry.create({ deviceId: id });
    const desired = {};
    for (let i = 0; i < 9; i++) desired[`k${i}`] = 'x'.repeat(4000);   // 36 KB > 32 KB
    const err = await rejectsWith(registry.updateTwin(id, { properties: { desired } }, '*'), errors.ArgumentError,
                                  { status: 400, code: 'ArgumentInvalid' });
    assert.match(err.message, /'Properties\.Desired' size should be less than 32768 bytes/);
    const { responseBody: got } = await registry.getTwin(id);
    assert.equal(got.properties.desired.$version, 1, 'nothing stored');
  });

  it('unknown devices and modules', async () => {
    await rejectsWith(registry.getTwin(newId('missing')), errors.DeviceNotFoundError, { status: 404, code: 'DeviceNotFound' });
    await rejectsWith(registry.updateTwin(newId('missing'), { tags: { a: 1 } }, '*'), errors.DeviceNotFoundError,
                      { status: 404, code: 'DeviceNotFound' });
    const id = newId();
    await registry.create({ deviceId: id });
    // Node has no typed error for ModuleNotFound: a plain Error('Not found') with IoT Hub's code.
    const err = await rejectsWith(registry.getModuleTwin(id, 'nope'), Error, { status: 404, code: 'ModuleNotFound' });
    assert.match(err.responseBody, /ErrorCode:ModuleNotFound;/);
  });

  it('module twins: getModuleTwin / updateModuleTwin with etags, separate from the device twin', async () => {
    const id = newId();
    await registry.create({ deviceId: id });
    await registry.addModule({ deviceId: id, moduleId: 'm1' });
    const { responseBody: mt } = await registry.getModuleTwin(id, 'm1');
    assert.equal(mt.deviceId, id);
    assert.equal(mt.moduleId, 'm1');
    assert.equal(mt.properties.desired.$version, 1);

    const { responseBody: updated } = await registry.updateModuleTwin(id, 'm1',
      { tags: { role: 'sensor' }, properties: { desired: { rate: 5 } } }, mt.etag);
    assert.equal(updated.moduleId, 'm1');
    assert.equal(updated.properties.desired.rate, 5);
    await rejectsWith(registry.updateModuleTwin(id, 'm1', { tags: { role: 'x' } }, mt.etag), errors.InvalidEtagError,
                      { status: 412, code: 'PreconditionFailed' });

    // Twin.update on a module twin goes to the module's path.
    const { responseBody: fresh } = await registry.getModuleTwin(id, 'm1');
    await fresh.update({ properties: { desired: { rate: null, unit: 'C' } } });
    const { responseBody: got } = await registry.getModuleTwin(id, 'm1');
    assert.deepEqual(plain(got.properties.desired), { unit: 'C' });
    assert.deepEqual(got.tags, { role: 'sensor' });

    const { responseBody: deviceTwin } = await registry.getTwin(id);
    assert.deepEqual(plain(deviceTwin.properties.desired), {}, 'the device twin is another document');
    assert.deepEqual(deviceTwin.tags, {});
  });

  it('PUT /twins/{id} replaces tags and desired (autorest\'s replace; the Node Registry has none)', async () => {
    const id = newId();
    await registry.create({ deviceId: id });
    await registry.updateTwin(id, { tags: { a: 1, b: 2 }, properties: { desired: { x: 1, y: 2 } } }, '*');
    const { responseBody: before } = await registry.getTwin(id);
    const res = await request({
      host: hub.hostName, method: 'PUT', path: `/twins/${encodeURIComponent(id)}?${API}`,
      headers: { Authorization: ownerToken(hub.connectionString), 'If-Match': `"${before.etag}"` },
      body: { deviceId: id, tags: { c: 3 }, properties: { desired: { z: 3 }, reported: {} } },
    });
    assert.equal(res.status, 200, res.body);
    assert.equal(res.headers.etag, `"${res.json.etag}"`);
    const { responseBody: got } = await registry.getTwin(id);
    assert.deepEqual(got.tags, { c: 3 });
    assert.deepEqual(plain(got.properties.desired), { z: 3 });
    assert.equal(got.properties.desired.$version, before.properties.desired.$version + 1);
  });

  it('policies: service and registryRead read twins; only ServiceConnect writes them', async () => {
    const id = newId();
    await registry.create({ deviceId: id });
    const asService = Registry.fromConnectionString(hub.policyConnectionString('service'));
    const asReader = Registry.fromConnectionString(hub.policyConnectionString('registryRead'));
    const asWriter = Registry.fromConnectionString(hub.policyConnectionString('registryReadWrite'));
    assert.equal((await asService.getTwin(id)).responseBody.deviceId, id);
    assert.equal((await asReader.getTwin(id)).responseBody.deviceId, id);
    await asService.updateTwin(id, { tags: { by: 'service' } }, '*');
    await rejectsWith(asReader.updateTwin(id, { tags: { by: 'reader' } }, '*'), errors.UnauthorizedError, { status: 401 });
    await rejectsWith(asWriter.updateTwin(id, { tags: { by: 'writer' } }, '*'), errors.UnauthorizedError, { status: 401 });
    assert.deepEqual((await registry.getTwin(id)).responseBody.tags, { by: 'service' });
  });

  it('a deleted and re-created device starts with a fresh twin', async () => {
    const id = newId();
    await registry.create({ deviceId: id });
    await registry.updateTwin(id, { tags: { old: true }, properties: { desired: { old: true } } }, '*');
    await registry.delete(id);
    await rejectsWith(registry.getTwin(id), errors.DeviceNotFoundError, { status: 404 });
    await registry.create({ deviceId: id });
    const { responseBody: got } = await registry.getTwin(id);
    assert.deepEqual(got.tags, {});
    assert.deepEqual(plain(got.properties.desired), {});
    assert.equal(got.properties.desired.$version, 1);
  });

  it('twins survive kill -9 and a restart', { timeout: 90_000 }, async () => {
    const id = newId();
    await registry.create({ deviceId: id });
    await registry.addModule({ deviceId: id, moduleId: 'm1' });
    await registry.updateTwin(id, { tags: { site: 'north' }, properties: { desired: { target: 21.5, nested: { a: 'b' } } } }, '*');
    await registry.updateModuleTwin(id, 'm1', { properties: { desired: { rate: 9 } } }, '*');
    const { responseBody: before } = await registry.getTwin(id);
    const { responseBody: moduleBefore } = await registry.getModuleTwin(id, 'm1');

    const { signal } = await hub.kill9();
    assert.equal(signal, 'SIGKILL');
    await hub.start();

    const { responseBody: after } = await registry.getTwin(id);
    assert.equal(after.etag, before.etag);
    assert.equal(after.version, before.version);
    assert.deepEqual(after.tags, before.tags);
    assert.deepEqual(after.properties.desired, before.properties.desired, 'values, $version and $metadata');
    const { responseBody: moduleAfter } = await registry.getModuleTwin(id, 'm1');
    assert.deepEqual(moduleAfter.properties.desired, moduleBefore.properties.desired);
    assert.equal(moduleAfter.etag, moduleBefore.etag);

    // And the stored etag still guards writes.
    await rejectsWith(registry.updateTwin(id, { tags: { site: 'x' } }, 'AAAAAAAAAAA='), errors.InvalidEtagError, { status: 412 });
    await registry.updateTwin(id, { tags: { site: 'south' } }, after.etag);
    assert.equal((await registry.getTwin(id)).responseBody.tags.site, 'south');
  });
});
