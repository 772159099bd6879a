'use strict';
// The identity registry through azure-iothub's Registry (REST on port 443), unmodified.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Registry } = require('azure-iothub');
const { startHub } = require('./lib/hub');
const { errors, rejectsWith, sasToken, parseConnectionString, ownerToken, request, chunks, API } = require('./lib/util');

const THUMB_A = 'A1B2C3D4E5F60718293A4B5C6D7E8F9012345678';
const THUMB_B = '0123456789ABCDEF0123456789ABCDEF01234567';

function keyBytes(key) {
  assert.equal(typeof key, 'string', 'key is a string');
  assert.match(key, /^[A-Za-z0-9+/]+={0,2}$/, `key ${key} is base64`);
  return Buffer.from(key, 'base64').length;
}

function assertGeneratedKeys(auth) {
  assert.equal(auth.type, 'sas');
  const { primaryKey, secondaryKey } = auth.symmetricKey;
  assert.ok(keyBytes(primaryKey) >= 16, 'primary key has at least 128 bits');
  assert.ok(keyBytes(secondaryKey) >= 16, 'secondary key has at least 128 bits');
  assert.notEqual(primaryKey, secondaryKey);
}

let n = 0;
function newId(prefix = 'dev') {
  return `${prefix}-${process.pid}-${++n}`;
}

describe('registry', () => {
  let hub;
  let registry;

  before(async () => {
    hub = await startHub({ name: 'registry' });
    registry = Registry.fromConnectionString(hub.connectionString);
  });
  after(async () => {
    if (hub) await hub.dispose();
  });

  describe('devices', () => {
    it('create without keys: the hub generates them and get returns the same device', async () => {
      const id = newId();
      const { responseBody: created, httpResponse } = await registry.create({ deviceId: id });
      assert.ok(httpResponse.statusCode >= 200 && httpResponse.statusCode < 300);
      assert.match(httpResponse.headers['content-type'], /application\/json/);
      assert.equal(created.deviceId, id);
      assert.ok(created.generationId, 'generationId set');
      assert.ok(created.etag, 'etag set');
      assert.equal(created.status, 'enabled');
      assert.equal(created.connectionState, 'Disconnected');
      assertGeneratedKeys(created.authentication);

      const { responseBody: got, httpResponse: res } = await registry.get(id);
      assert.equal(got.deviceId, id);
      assert.equal(got.etag, created.etag);
      assert.equal(res.headers.etag, `"${got.etag}"`, 'the ETag header carries the quoted etag');
      assert.equal(got.generationId, created.generationId);
      assert.deepEqual(got.authentication.symmetricKey, created.authentication.symmetricKey);
    });

    it('create with keys keeps them', async () => {
      const id = newId();
      const primaryKey = Buffer.alloc(32, 1).toString('base64');
      const secondaryKey = Buffer.alloc(32, 2).toString('base64');
      await registry.create({ deviceId: id, authentication: { symmetricKey: { primaryKey, secondaryKey } } });
      const { responseBody: got } = await registry.get(id);
      assert.equal(got.authentication.type, 'sas');
      assert.equal(got.authentication.symmetricKey.primaryKey, primaryKey);
      assert.equal(got.authentication.symmetricKey.secondaryKey, secondaryKey);
    });

    it('each new device gets its own keys and generationId', async () => {
      const a = (await registry.create({ deviceId: newId() })).responseBody;
      const b = (await registry.create({ deviceId: newId() })).responseBody;
      assert.notEqual(a.authentication.symmetricKey.primaryKey, b.authentication.symmetricKey.primaryKey);
      assert.notEqual(a.generationId, b.generationId);
    });

    it('create a selfSigned device with thumbprints', async () => {
      const id = newId();
      const { responseBody: created } = await registry.create({
        deviceId: id,
        authentication: { x509Thumbprint: { primaryThumbprint: THUMB_A, secondaryThumbprint: THUMB_B } },
      });
      assert.equal(created.authentication.type, 'selfSigned');
      const { responseBody: got } = await registry.get(id);
      assert.equal(got.authentication.type, 'selfSigned');
      assert.equal(got.authentication.x509Thumbprint.primaryThumbprint.toUpperCase(), THUMB_A);
      assert.equal(got.authentication.x509Thumbprint.secondaryThumbprint.toUpperCase(), THUMB_B);
      assert.ok(!got.authentication.symmetricKey?.primaryKey, 'no symmetric key on an X.509 device');
    });

    it('create a certificateAuthority device', async () => {
      const id = newId();
      await registry.create({ deviceId: id, authentication: { type: 'certificateAuthority' } });
      const { responseBody: got } = await registry.get(id);
      assert.equal(got.authentication.type, 'certificateAuthority');
      assert.ok(!got.authentication.symmetricKey?.primaryKey, 'no symmetric key on a CA-signed device');
      assert.ok(!got.authentication.x509Thumbprint?.primaryThumbprint, 'no thumbprint on a CA-signed device');
    });

    it('create a device with authentication type none', async () => {
      const id = newId();
      await registry.create({ deviceId: id, authentication: { type: 'none' } });
      const { responseBody: got } = await registry.get(id);
      assert.equal(got.authentication.type, 'none');
      assert.ok(!got.authentication.symmetricKey?.primaryKey, 'no symmetric key on a device without authentication');
    });

    it('create a disabled device with a status reason', async () => {
      const id = newId();
      await registry.create({ deviceId: id, status: 'disabled', statusReason: 'not yet installed' });
      const { responseBody: got } = await registry.get(id);
      assert.equal(got.status, 'disabled');
      assert.equal(got.statusReason, 'not yet installed');
    });

    it('list returns the created devices, each with its deviceId', async () => {
      const a = newId();
      const b = newId();
      await registry.create({ deviceId: a });
      await registry.create({ deviceId: b });
      const { responseBody: devices } = await registry.list();
      assert.ok(Array.isArray(devices));
      const listed = new Map(devices.map((d) => [d.deviceId, d]));
      assert.ok(listed.has(a) && listed.has(b), 'both new devices listed');
      for (const d of devices) assert.ok(d.deviceId, 'every listed device has a deviceId');
      const { responseBody: got } = await registry.get(a);
      assert.equal(listed.get(a).etag, got.etag);
    });

    it('update: disable with a reason, then enable; each change persists and moves the etag', async () => {
      const id = newId();
      const { responseBody: created } = await registry.create({ deviceId: id });

      const { responseBody: disabled } = await registry.update({ ...created, status: 'disabled', statusReason: 'maintenance' });
      assert.equal(disabled.status, 'disabled');
      assert.notEqual(disabled.etag, created.etag, 'etag changes on update');
      let { responseBody: got } = await registry.get(id);
      assert.equal(got.status, 'disabled');
      assert.equal(got.statusReason, 'maintenance');
      assert.equal(got.etag, disabled.etag);
      assert.equal(got.generationId, created.generationId, 'generationId survives an update');
      assert.deepEqual(got.authentication.symmetricKey, created.authentication.symmetricKey, 'keys survive an update');

      const { responseBody: enabled } = await registry.update({ ...got, status: 'enabled', statusReason: 'back' });
      assert.equal(enabled.status, 'enabled');
      assert.notEqual(enabled.etag, disabled.etag);
      ({ responseBody: got } = await registry.get(id));
      assert.equal(got.status, 'enabled');
      assert.equal(got.statusReason, 'back');
    });

    it('update can replace the keys', async () => {
      const id = newId();
      const { responseBody: created } = await registry.create({ deviceId: id });
      const primaryKey = Buffer.alloc(32, 7).toString('base64');
      const secondaryKey = Buffer.alloc(32, 8).toString('base64');
      await registry.update({ deviceId: id, authentication: { type: 'sas', symmetricKey: { primaryKey, secondaryKey } } });
      const { responseBody: got } = await registry.get(id);
      assert.equal(got.authentication.symmetricKey.primaryKey, primaryKey);
      assert.equal(got.authentication.symmetricKey.secondaryKey, secondaryKey);
      assert.equal(got.generationId, created.generationId);
    });

    it('update without authentication keeps the keys (the SDK sends them empty)', async () => {
      const id = newId();
      const { responseBody: created } = await registry.create({ deviceId: id });
      await registry.update({ deviceId: id, status: 'disabled', statusReason: 'partial update' });
      const { responseBody: got } = await registry.get(id);
      assert.equal(got.status, 'disabled');
      assert.deepEqual(got.authentication.symmetricKey, created.authentication.symmetricKey);
    });

    it('device ids are case-sensitive', async () => {
      const lower = newId('case');
      const upper = lower.toUpperCase();
      const a = (await registry.create({ deviceId: lower })).responseBody;
      const b = (await registry.create({ deviceId: upper })).responseBody;
      assert.notEqual(a.generationId, b.generationId);
      assert.equal((await registry.get(upper)).responseBody.deviceId, upper);
      await registry.delete(lower);
      assert.equal((await registry.get(upper)).responseBody.deviceId, upper, 'deleting one leaves the other');
    });

    it('update of a missing device: Registry.update sends If-Match "*", so DeviceNotFound', async () => {
      await rejectsWith(registry.update({ deviceId: newId('missing') }), errors.DeviceNotFoundError,
                        { status: 404, code: 'DeviceNotFound' });
    });

    it('raw PUT /devices/{id} with a stale If-Match: 412 PreconditionFailed, device unchanged', async () => {
      const id = newId();
      const { responseBody: created } = await registry.create({ deviceId: id });
      const { responseBody: updated } = await registry.update({ ...created, statusReason: 'moved the etag' });
      assert.notEqual(updated.etag, created.etag);

      const auth = ownerToken(hub.connectionString);
      const path = `/devices/${encodeURIComponent(id)}?${API}`;
      const body = { deviceId: id, status: 'disabled', statusReason: 'stale write',
                     authentication: updated.authentication };
      const stale = await request({ host: hub.hostName, method: 'PUT', path, body,
                                    headers: { Authorization: auth, 'If-Match': `"${created.etag}"` } });
      assert.equal(stale.status, 412, stale.body);
      assert.equal(stale.headers['iothub-errorcode'], 'PreconditionFailed');
      assert.match(stale.json?.Message ?? '', /^ErrorCode:PreconditionFailed;/);
      const { responseBody: after } = await registry.get(id);
      assert.equal(after.status, 'enabled', 'a rejected update changes nothing');
      assert.equal(after.etag, updated.etag);

      // The same request with the current etag goes through.
      const fresh = await request({ host: hub.hostName, method: 'PUT', path, body,
                                    headers: { Authorization: auth, 'If-Match': `"${updated.etag}"` } });
      assert.equal(fresh.status, 200, fresh.body);
      assert.match(fresh.headers['content-type'], /application\/json/);
      assert.equal(fresh.json.deviceId, id);
      assert.equal(fresh.json.status, 'disabled');
    });

    it('delete removes the device; get and a second delete give DeviceNotFound', async () => {
      const id = newId();
      await registry.create({ deviceId: id });
      await registry.delete(id);
      await rejectsWith(registry.get(id), errors.DeviceNotFoundError, { status: 404, code: 'DeviceNotFound' });
      await rejectsWith(registry.delete(id), errors.DeviceNotFoundError, { status: 404 });
      const { responseBody: devices } = await registry.list();
      assert.ok(!devices.some((d) => d.deviceId === id), 'deleted device not listed');
    });

    it('a device created again after delete gets a new generationId and new keys', async () => {
      const id = newId();
      const first = (await registry.create({ deviceId: id })).responseBody;
      await registry.delete(id);
      const second = (await registry.create({ deviceId: id })).responseBody;
      assert.notEqual(second.generationId, first.generationId);
      assert.notEqual(second.authentication.symmetricKey.primaryKey, first.authentication.symmetricKey.primaryKey);
    });

    it('create of an existing id: DeviceAlreadyExists, and the existing device is untouched', async () => {
      const id = newId();
      const { responseBody: created } = await registry.create({ deviceId: id });
      await rejectsWith(registry.create({ deviceId: id, status: 'disabled' }), errors.DeviceAlreadyExistsError,
                        { status: 409, code: 'DeviceAlreadyExists' });
      const { responseBody: got } = await registry.get(id);
      assert.equal(got.status, 'enabled');
      assert.equal(got.etag, created.etag);
      assert.deepEqual(got.authentication.symmetricKey, created.authentication.symmetricKey);
    });

    it('get of a missing device: DeviceNotFound in the legacy error body', async () => {
      const err = await rejectsWith(registry.get(newId('missing')), errors.DeviceNotFoundError,
                                    { status: 404, code: 'DeviceNotFound' });
      const body = JSON.parse(err.responseBody);
      assert.match(body.Message, /^ErrorCode:DeviceNotFound;/);
      assert.equal(typeof body.ExceptionMessage, 'string');
    });

    it('invalid device ids: ArgumentError (400), nothing created', async () => {
      for (const bad of ['has space', 'x'.repeat(129), 'slash/inside', 'caf\u00e9']) {
        await rejectsWith(registry.create({ deviceId: bad }), errors.ArgumentError, { status: 400 });
      }
      const { responseBody: devices } = await registry.list();
      assert.ok(!devices.some((d) => d.deviceId === 'has space'));
    });

    it('ids with the allowed punctuation work end to end', async () => {
      const id = `p-${process.pid}.+%_#*?!(),=@$':x`;
      await registry.create({ deviceId: id });
      const { responseBody: got } = await registry.get(id);
      assert.equal(got.deviceId, id);
      await registry.delete(id);
      await rejectsWith(registry.get(id), errors.DeviceNotFoundError);
    });

    it('concurrent creates of one id: exactly one wins, the others get DeviceAlreadyExists', async () => {
      const id = newId();
      const results = await Promise.allSettled(Array.from({ length: 20 }, () => registry.create({ deviceId: id })));
      const won = results.filter((r) => r.status === 'fulfilled');
      const lost = results.filter((r) => r.status === 'rejected');
      assert.equal(won.length, 1, lost.map((r) => r.reason.message).join('; '));
      for (const r of lost) assert.equal(r.reason.constructor.name, errors.DeviceAlreadyExistsError.name, r.reason.message);
      const { responseBody: got } = await registry.get(id);
      assert.deepEqual(got.authentication.symmetricKey, won[0].value.responseBody.authentication.symmetricKey);
    });

    it('concurrent updates with the same If-Match: exactly one wins, the others get 412', async () => {
      const id = newId();
      const { responseBody: created } = await registry.create({ deviceId: id });
      const auth = ownerToken(hub.connectionString);
      const results = await Promise.all(Array.from({ length: 10 }, (_, i) => request({
        host: hub.hostName, method: 'PUT', path: `/devices/${encodeURIComponent(id)}?${API}`,
        headers: { Authorization: auth, 'If-Match': `"${created.etag}"` },
        body: { deviceId: id, statusReason: `writer ${i}`, authentication: created.authentication },
      })));
      const statuses = results.map((r) => r.status).sort();
      assert.deepEqual(statuses, [200, ...Array(9).fill(412)], results.map((r) => r.body).join('\n'));
      const winner = results.find((r) => r.status === 200).json;
      const { responseBody: got } = await registry.get(id);
      assert.equal(got.statusReason, winner.statusReason);
      assert.equal(got.etag, winner.etag);
    });

    for (const mib of [2, 16]) {
      it(`a ${mib} MiB body: the SDK gets 413 MessageTooLarge, and the hub keeps serving`, async () => {
        // The hub answers before it has read the whole body; the client must still see that
        // answer, not a connection reset, so the hub has to drain (or linger) before it closes.
        const id = newId();
        const err = await rejectsWith(registry.create({ deviceId: id, statusReason: 'x'.repeat(mib * 1024 * 1024) }), Error,
                                      { status: 413, code: 'MessageTooLarge' });
        assert.match(err.responseBody, /ErrorCode:MessageTooLarge;/);
        await rejectsWith(registry.get(id), errors.DeviceNotFoundError);
      });
    }

    it('garbage on the TLS port does not hurt the hub', async () => {
      const net = require('node:net');
      const tls = require('node:tls');
      // Resolves when the hub has closed the connection. resume() reads (and drops) what the hub
      // answers: a paused socket never sees the close.
      const sendAndClose = (socket, bytes) => new Promise((resolve) => {
        const timer = setTimeout(() => socket.destroy(), 15_000);
        socket.resume();
        socket.on('error', () => {});
        socket.on('close', () => {
          clearTimeout(timer);
          resolve();
        });
        socket.write(bytes, () => socket.end());
      });
      // Not TLS at all, then a TLS connection that sends nonsense instead of HTTP.
      await sendAndClose(net.connect(443, hub.hostName), Buffer.from('GET / HTTP/1.1\r\n\r\n\x00\xff garbage'));
      await sendAndClose(net.connect(443, hub.hostName), require('node:crypto').randomBytes(4096));
      const secure = tls.connect({ host: hub.hostName, port: 443, servername: undefined });
      await new Promise((resolve, reject) => { secure.once('secureConnect', resolve); secure.once('error', reject); });
      await sendAndClose(secure, Buffer.from('\x16\x03\x01 not http at all\r\n\r\n'));
      const { responseBody } = await registry.getRegistryStatistics();
      assert.equal(typeof responseBody.totalDeviceCount, 'number');
    });

    it('a malformed JSON body: 400', async () => {
      const res = await request({ host: hub.hostName, method: 'PUT', path: `/devices/${newId()}?${API}`,
                                  body: '{"deviceId": ', headers: { Authorization: ownerToken(hub.connectionString) } });
      assert.equal(res.status, 400, res.body);
      assert.match(res.json?.Message ?? '', /^ErrorCode:\w+;/);
    });
  });

  describe('bulk', () => {
    it('addDevices 500 in pages of 100, list and statistics count them, removeDevices removes them', async () => {
      const before = (await registry.getRegistryStatistics()).responseBody;
      const prefix = `bulk-${process.pid}`;
      const devices = Array.from({ length: 500 }, (_, i) => ({ deviceId: `${prefix}-${String(i).padStart(3, '0')}` }));

      for (const page of chunks(devices, 100)) {
        const { responseBody: res } = await registry.addDevices(page);
        assert.equal(res.isSuccessful, true, JSON.stringify(res.errors));
      }

      const { responseBody: listed } = await registry.list();
      const bulkListed = listed.filter((d) => d.deviceId.startsWith(`${prefix}-`));
      assert.equal(bulkListed.length, 500);
      for (const d of bulkListed) assertGeneratedKeys(d.authentication);

      const { responseBody: stats } = await registry.getRegistryStatistics();
      assert.equal(stats.totalDeviceCount, before.totalDeviceCount + 500);
      assert.equal(stats.enabledDeviceCount, before.enabledDeviceCount + 500);
      assert.equal(stats.disabledDeviceCount, before.disabledDeviceCount);

      const { responseBody: one } = await registry.get(`${prefix}-250`);
      assert.equal(one.deviceId, `${prefix}-250`);

      for (const page of chunks(devices, 100)) {
        const { responseBody: res } = await registry.removeDevices(page, true);
        assert.equal(res.isSuccessful, true, JSON.stringify(res.errors));
      }
      const { responseBody: after } = await registry.list();
      assert.equal(after.filter((d) => d.deviceId.startsWith(`${prefix}-`)).length, 0);
      await rejectsWith(registry.get(`${prefix}-250`), errors.DeviceNotFoundError);
      const { responseBody: finalStats } = await registry.getRegistryStatistics();
      assert.equal(finalStats.totalDeviceCount, before.totalDeviceCount);
    });

    it('statistics count disabled devices apart', async () => {
      const before = (await registry.getRegistryStatistics()).responseBody;
      await registry.create({ deviceId: newId(), status: 'disabled' });
      const { responseBody: stats } = await registry.getRegistryStatistics();
      assert.equal(stats.totalDeviceCount, before.totalDeviceCount + 1);
      assert.equal(stats.disabledDeviceCount, before.disabledDeviceCount + 1);
      assert.equal(stats.enabledDeviceCount, before.enabledDeviceCount);
    });

    it('addDevices with one duplicate reports it, and the existing device keeps its keys', async () => {
      const existing = newId();
      const { responseBody: original } = await registry.create({ deviceId: existing });
      const page = [{ deviceId: newId() }, { deviceId: existing }, { deviceId: newId() }];
      const err = await rejectsWith(registry.addDevices(page), errors.ArgumentError, { status: 400 });
      const res = JSON.parse(err.responseBody);
      assert.equal(res.isSuccessful, false);
      assert.ok(Array.isArray(res.errors));
      const dup = res.errors.find((e) => e.deviceId === existing);
      assert.ok(dup, `the duplicate is reported: ${err.responseBody}`);
      assert.match(String(dup.errorCode), /DeviceAlreadyExists/);
      assert.ok(!res.errors.some((e) => e.deviceId !== existing), 'only the duplicate failed');
      const { responseBody: got } = await registry.get(existing);
      assert.deepEqual(got.authentication.symmetricKey, original.authentication.symmetricKey);
    });

    it('one id twice in a bulk request is refused', async () => {
      const id = newId();
      const err = await rejectsWith(registry.addDevices([{ deviceId: id }, { deviceId: id }]), errors.ArgumentError, { status: 400 });
      assert.match(err.responseBody, /DeviceDefinedMultipleTimes/);
    });

    it('removeDevices without force checks each etag', async () => {
      const id = newId();
      const { responseBody: created } = await registry.create({ deviceId: id });
      await registry.update({ ...created, statusReason: 'moved' });
      const err = await rejectsWith(registry.removeDevices([created], false), errors.ArgumentError, { status: 400 });
      assert.ok(JSON.parse(err.responseBody).errors.some((e) => e.deviceId === id && /PreconditionFailed/.test(String(e.errorCode))),
                err.responseBody);
      const { responseBody: current } = await registry.get(id);
      const { responseBody: ok } = await registry.removeDevices([current], false);
      assert.equal(ok.isSuccessful, true, JSON.stringify(ok.errors));
      await rejectsWith(registry.get(id), errors.DeviceNotFoundError);
    });

    it('updateDevices without force checks each etag', async () => {
      const id = newId();
      const { responseBody: created } = await registry.create({ deviceId: id });
      const { responseBody: moved } = await registry.update({ ...created, statusReason: 'moved' });

      const err = await rejectsWith(
        registry.updateDevices([{ ...created, status: 'disabled', statusReason: 'stale' }], false),
        errors.ArgumentError, { status: 400 });
      const res = JSON.parse(err.responseBody);
      assert.equal(res.isSuccessful, false);
      assert.ok(res.errors.some((e) => e.deviceId === id && /PreconditionFailed/.test(String(e.errorCode))), err.responseBody);
      assert.equal((await registry.get(id)).responseBody.status, 'enabled');

      const { responseBody: ok } = await registry.updateDevices([{ ...moved, status: 'disabled', statusReason: 'fresh' }], false);
      assert.equal(ok.isSuccessful, true, JSON.stringify(ok.errors));
      const { responseBody: got } = await registry.get(id);
      assert.equal(got.status, 'disabled');
      assert.equal(got.statusReason, 'fresh');
    });
  });

  describe('modules', () => {
    it('add, get, list, update with etag, remove', async () => {
      const deviceId = newId();
      await registry.create({ deviceId });
      const { responseBody: m1 } = await registry.addModule({ deviceId, moduleId: 'm1' });
      assert.equal(m1.deviceId, deviceId);
      assert.equal(m1.moduleId, 'm1');
      assert.ok(m1.etag && m1.generationId);
      assertGeneratedKeys(m1.authentication);
      await registry.addModule({ deviceId, moduleId: 'm2', managedBy: 'tests' });

      const { responseBody: got } = await registry.getModule(deviceId, 'm1');
      assert.equal(got.moduleId, 'm1');
      assert.equal(got.etag, m1.etag);
      assert.deepEqual(got.authentication.symmetricKey, m1.authentication.symmetricKey);

      const { responseBody: list } = await registry.getModulesOnDevice(deviceId);
      assert.deepEqual(list.map((m) => m.moduleId).sort(), ['m1', 'm2']);
      assert.equal(list.find((m) => m.moduleId === 'm2').managedBy, 'tests');

      const { responseBody: updated } = await registry.updateModule({ ...got, managedBy: 'someone' });
      assert.equal(updated.managedBy, 'someone');
      assert.notEqual(updated.etag, got.etag);
      assert.equal((await registry.getModule(deviceId, 'm1')).responseBody.managedBy, 'someone');

      await registry.removeModule(deviceId, 'm1');
      const err = await rejectsWith(registry.getModule(deviceId, 'm1'), Error, { status: 404, code: 'ModuleNotFound' });
      assert.match(err.responseBody, /ErrorCode:ModuleNotFound;/);
      const { responseBody: rest } = await registry.getModulesOnDevice(deviceId);
      assert.deepEqual(rest.map((m) => m.moduleId), ['m2']);
    });

    it('updateModule with a stale etag: InvalidEtagError (412), module unchanged', async () => {
      const deviceId = newId();
      await registry.create({ deviceId });
      const { responseBody: m } = await registry.addModule({ deviceId, moduleId: 'mod' });
      const { responseBody: moved } = await registry.updateModule({ ...m, managedBy: 'first' });
      assert.notEqual(moved.etag, m.etag);

      await rejectsWith(registry.updateModule({ ...m, managedBy: 'stale' }), errors.InvalidEtagError,
                        { status: 412, code: 'PreconditionFailed' });
      assert.equal((await registry.getModule(deviceId, 'mod')).responseBody.managedBy, 'first');

      // force = true sends If-Match "*" and wins.
      await registry.updateModule({ ...m, managedBy: 'forced' }, true);
      assert.equal((await registry.getModule(deviceId, 'mod')).responseBody.managedBy, 'forced');
    });

    it('removeModule with a stale etag: InvalidEtagError (412)', async () => {
      const deviceId = newId();
      await registry.create({ deviceId });
      const { responseBody: m } = await registry.addModule({ deviceId, moduleId: 'mod' });
      await registry.updateModule({ ...m, managedBy: 'x' });
      // removeModule(module) sends the module's etag, but its promise form loses the callback
      // (azure-iothub 1.16.6 throws "Argument 'done' cannot be falsy"): use the callback form.
      const removeWithEtag = (mod) => new Promise((resolve, reject) => {
        registry.removeModule(mod, (err) => (err ? reject(err) : resolve()));
      });
      await rejectsWith(removeWithEtag(m), errors.InvalidEtagError, { status: 412, code: 'PreconditionFailed' });
      const { responseBody: current } = await registry.getModule(deviceId, 'mod');
      assert.equal(current.managedBy, 'x', 'a rejected delete leaves the module');
      await removeWithEtag(current);
      await rejectsWith(registry.getModule(deviceId, 'mod'), Error, { status: 404, code: 'ModuleNotFound' });
    });

    it('a duplicate module: 409 ModuleAlreadyExistsOnDevice', async () => {
      const deviceId = newId();
      await registry.create({ deviceId });
      await registry.addModule({ deviceId, moduleId: 'dup' });
      const err = await rejectsWith(registry.addModule({ deviceId, moduleId: 'dup' }), errors.DeviceAlreadyExistsError,
                                    { status: 409, code: 'ModuleAlreadyExistsOnDevice' });
      assert.match(err.responseBody, /ErrorCode:ModuleAlreadyExistsOnDevice;/);
    });

    it('a module on a missing device: DeviceNotFound', async () => {
      await rejectsWith(registry.addModule({ deviceId: newId('missing'), moduleId: 'm' }), errors.DeviceNotFoundError,
                        { status: 404, code: 'DeviceNotFound' });
    });

    it('deleting a device deletes its modules', async () => {
      const deviceId = newId();
      await registry.create({ deviceId });
      await registry.addModule({ deviceId, moduleId: 'gone' });
      await registry.delete(deviceId);
      await registry.create({ deviceId });
      const { responseBody: list } = await registry.getModulesOnDevice(deviceId);
      assert.deepEqual(list, []);
    });
  });

  describe('security', () => {
    it('a connection string with a wrong key: UnauthorizedError', async () => {
      const cs = parseConnectionString(hub.connectionString);
      const wrongKey = Buffer.alloc(32, 9).toString('base64');
      assert.notEqual(wrongKey, cs.SharedAccessKey);
      const bad = Registry.fromConnectionString(
        `HostName=${cs.HostName};SharedAccessKeyName=${cs.SharedAccessKeyName};SharedAccessKey=${wrongKey}`);
      const err = await rejectsWith(bad.get(newId('any')), errors.UnauthorizedError, { status: 401 });
      assert.match(err.responseBody, /ErrorCode:\w+;/);
      await rejectsWith(bad.create({ deviceId: newId() }), errors.UnauthorizedError, { status: 401 });
    });

    it('a key of another policy under the iothubowner name: UnauthorizedError', async () => {
      const cs = parseConnectionString(hub.connectionString);
      const readKey = parseConnectionString(hub.policyConnectionString('registryRead')).SharedAccessKey;
      const bad = Registry.fromConnectionString(
        `HostName=${cs.HostName};SharedAccessKeyName=iothubowner;SharedAccessKey=${readKey}`);
      await rejectsWith(bad.list(), errors.UnauthorizedError, { status: 401 });
    });

    it('registryRead can get and list but not create, update or delete', async () => {
      const id = newId();
      await registry.create({ deviceId: id });
      const reader = Registry.fromConnectionString(hub.policyConnectionString('registryRead'));
      const { responseBody: got } = await reader.get(id);
      assert.equal(got.deviceId, id);
      assert.ok((await reader.list()).responseBody.some((d) => d.deviceId === id));
      await rejectsWith(reader.create({ deviceId: newId() }), errors.UnauthorizedError, { status: 401 });
      await rejectsWith(reader.update({ ...got, status: 'disabled' }), errors.UnauthorizedError, { status: 401 });
      await rejectsWith(reader.delete(id), errors.UnauthorizedError, { status: 401 });
      const { responseBody: still } = await registry.get(id);
      assert.equal(still.status, 'enabled');
    });

    it('registryReadWrite can create and delete', async () => {
      const writer = Registry.fromConnectionString(hub.policyConnectionString('registryReadWrite'));
      const id = newId();
      await writer.create({ deviceId: id });
      assert.equal((await writer.get(id)).responseBody.deviceId, id);
      await writer.delete(id);
      await rejectsWith(registry.get(id), errors.DeviceNotFoundError);
    });

    it('the service policy (ServiceConnect only) cannot read the registry', async () => {
      const service = Registry.fromConnectionString(hub.policyConnectionString('service'));
      await rejectsWith(service.list(), errors.UnauthorizedError, { status: 401 });
    });

    it('a token signed by hand works until it expires', async () => {
      const cs = parseConnectionString(hub.connectionString);
      const now = Math.floor(Date.now() / 1000);
      const token = (se) => sasToken({ resource: cs.HostName, keyName: cs.SharedAccessKeyName, key: cs.SharedAccessKey, expiry: se });

      // Control: the same construction with a future expiry is accepted.
      const valid = Registry.fromSharedAccessSignature(token(now + 600));
      const id = newId();
      await valid.create({ deviceId: id });
      assert.equal((await valid.get(id)).responseBody.deviceId, id);

      const expired = Registry.fromSharedAccessSignature(token(now - 60));
      await rejectsWith(expired.get(id), errors.UnauthorizedError, { status: 401 });
      await rejectsWith(expired.create({ deviceId: newId() }), errors.UnauthorizedError, { status: 401 });
    });

    it('the secondary key of a policy works too', async () => {
      const owner = hub.policies().find((p) => p.keyName === 'iothubowner');
      assert.ok(owner.secondaryKey && owner.secondaryKey !== owner.primaryKey);
      const second = Registry.fromConnectionString(
        `HostName=${hub.hostName};SharedAccessKeyName=iothubowner;SharedAccessKey=${owner.secondaryKey}`);
      assert.ok(Array.isArray((await second.list()).responseBody));
    });

    it('a policy name the hub does not have: 401', async () => {
      const cs = parseConnectionString(hub.connectionString);
      const bad = Registry.fromConnectionString(
        `HostName=${cs.HostName};SharedAccessKeyName=nosuchpolicy;SharedAccessKey=${cs.SharedAccessKey}`);
      await rejectsWith(bad.list(), errors.UnauthorizedError, { status: 401 });
    });

    it("a device's own token cannot use the registry API", async () => {
      const id = newId();
      const { responseBody: d } = await registry.create({ deviceId: id });
      const se = Math.floor(Date.now() / 1000) + 600;
      const deviceToken = sasToken({ resource: `${hub.hostName}/devices/${id}`, key: d.authentication.symmetricKey.primaryKey, expiry: se });
      for (const [method, path] of [['GET', `/devices/${id}`], ['GET', '/devices'], ['DELETE', `/devices/${id}`]]) {
        const res = await request({ host: hub.hostName, method, path: `${path}?${API}`,
                                    headers: { Authorization: deviceToken, 'If-Match': '"*"' } });
        assert.equal(res.status, 401, `${method} ${path} with a device token -> ${res.status} ${res.body}`);
      }
      assert.equal((await registry.get(id)).responseBody.deviceId, id);
    });

    it('a token whose sr carries the port (as the Node SDK signs for HostName=host:port) is accepted', async () => {
      const cs = parseConnectionString(hub.connectionString);
      const token = sasToken({ resource: `${cs.HostName}:443`, keyName: cs.SharedAccessKeyName, key: cs.SharedAccessKey,
                               expiry: Math.floor(Date.now() / 1000) + 600 });
      const res = await request({ host: hub.hostName, method: 'GET', path: `/statistics/devices?${API}`,
                                  headers: { Authorization: token } });
      assert.equal(res.status, 200, res.body);
      assert.equal(typeof res.json.totalDeviceCount, 'number');
    });

    it('a token for another hub, no token, or a garbled token: 401', async () => {
      const cs = parseConnectionString(hub.connectionString);
      const se = Math.floor(Date.now() / 1000) + 600;
      const path = `/devices?${API}`;
      const other = sasToken({ resource: 'other-hub.example', keyName: cs.SharedAccessKeyName, key: cs.SharedAccessKey, expiry: se });
      for (const headers of [{ Authorization: other }, {}, { Authorization: 'SharedAccessSignature garbage' },
                             { Authorization: 'Bearer abc' }]) {
        const res = await request({ host: hub.hostName, method: 'GET', path, headers });
        assert.equal(res.status, 401, `${JSON.stringify(headers)} -> ${res.status} ${res.body}`);
        assert.match(res.json?.Message ?? '', /^ErrorCode:\w+;/);
      }
    });
  });
});

describe('durability', () => {
  let hub;
  before(async () => {
    hub = await startHub({ name: 'durability' });
  });
  after(async () => {
    if (hub) await hub.dispose();
  });

  async function snapshot(registry, deviceIds) {
    const out = new Map();
    for (const id of deviceIds) {
      const d = (await registry.get(id)).responseBody;
      out.set(id, { etag: d.etag, generationId: d.generationId, status: d.status, statusReason: d.statusReason,
                    keys: d.authentication.symmetricKey });
    }
    return out;
  }

  it('devices, keys, etags and modules survive kill -9 and a restart', async () => {
    const connectionString = hub.connectionString;
    let registry = Registry.fromConnectionString(connectionString);
    const deviceIds = Array.from({ length: 20 }, () => newId('durable'));
    for (const id of deviceIds.slice(0, 10)) await registry.create({ deviceId: id });
    const bulk = await registry.addDevices(deviceIds.slice(10).map((deviceId) => ({ deviceId })));
    assert.equal(bulk.responseBody.isSuccessful, true);
    const { responseBody: first } = await registry.get(deviceIds[0]);
    await registry.update({ ...first, status: 'disabled', statusReason: 'before the crash' });
    await registry.addModule({ deviceId: deviceIds[1], moduleId: 'mod', managedBy: 'crash-test' });
    await registry.delete(deviceIds[2]);
    const expected = await snapshot(registry, deviceIds.filter((id) => id !== deviceIds[2]));
    const stats = (await registry.getRegistryStatistics()).responseBody;

    const killed = await hub.kill9();
    assert.equal(killed.signal, 'SIGKILL');
    await hub.restart();
    assert.equal(hub.connectionString, connectionString, 'the same policies after a restart');

    registry = Registry.fromConnectionString(hub.connectionString);
    const actual = await snapshot(registry, [...expected.keys()]);
    assert.deepEqual(actual, expected);
    assert.equal(actual.get(deviceIds[0]).status, 'disabled');
    await rejectsWith(registry.get(deviceIds[2]), errors.DeviceNotFoundError);
    assert.equal((await registry.getModule(deviceIds[1], 'mod')).responseBody.managedBy, 'crash-test');
    assert.deepEqual((await registry.getRegistryStatistics()).responseBody, stats);

    // And the registry still takes writes.
    const after = newId('durable');
    await registry.create({ deviceId: after });
    assert.equal((await registry.get(after)).responseBody.deviceId, after);
  });

  it('every create acknowledged before a kill -9 is there after the restart', async () => {
    const registry = Registry.fromConnectionString(hub.connectionString);
    const acknowledged = [];
    let killing = null;
    let refused = 0;
    // Creates keep flowing, 16 at a time, until the kill cuts them off (bounded in count), so
    // the kill always lands with creates in flight, however fast the hub answers.
    const worker = async () => {
      for (let n = 0; n < 400 && refused === 0; n++) {
        const deviceId = newId('inflight');
        try {
          const res = await registry.create({ deviceId });
          acknowledged.push({ deviceId, keys: res.responseBody.authentication.symmetricKey });
          if (acknowledged.length === 50) killing = hub.kill9();
        } catch {
          refused++;
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: 16 }, worker));
      assert.ok(killing, 'hubd was killed while creates were in flight');
      await killing;
      assert.ok(refused > 0, 'some creates were cut off by the kill');
    } finally {
      if (killing) await killing;
      await hub.start();
    }
    const after = Registry.fromConnectionString(hub.connectionString);
    for (const { deviceId, keys } of acknowledged) {
      const { responseBody: d } = await after.get(deviceId);
      assert.deepEqual(d.authentication.symmetricKey, keys, `${deviceId} came back with its keys`);
    }
  });

  it('hub.json and the private keys are readable by the owner only', () => {
    const fs = require('node:fs');
    const path = require('node:path');
    for (const file of ['hub.json', 'server.key', 'ca.key']) {
      const mode = fs.statSync(path.join(hub.dataDir, file)).mode & 0o777;
      assert.equal(mode.toString(8), '600', `${file} has mode ${mode.toString(8)}`);
    }
  });

  it('SIGTERM stops hubd cleanly (exit 0) and a restart keeps the devices', async () => {
    let registry = Registry.fromConnectionString(hub.connectionString);
    const id = newId('durable');
    const { responseBody: created } = await registry.create({ deviceId: id });
    const stopped = await hub.stop();
    assert.deepEqual(stopped, { code: 0, signal: null, forced: false }, `hubd output:\n${hub.output}`);
    await hub.start();
    registry = Registry.fromConnectionString(hub.connectionString);
    const { responseBody: got } = await registry.get(id);
    assert.equal(got.etag, created.etag);
    assert.deepEqual(got.authentication.symmetricKey, created.authentication.symmetricKey);
  });
});
