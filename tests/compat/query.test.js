'use strict';
// Twin queries through azure-iothub's Registry.createQuery (POST /devices/query; service.md §3.1,
// semantics.md §1), unmodified:
//  - 1,000 devices with tags (Registry.addDevices in pages of 100, tags through updateTwin);
//    `SELECT * ... WHERE tags.x = 'y'` with page size 100 through nextAsTwin returns exactly the
//    matching twins across pages, each once, as Twin objects, and the last page ends the query;
//  - a projection, TOP across pages, GROUP BY counts, COUNT() without GROUP BY;
//  - module twins (devices.modules) and devices.jobs (no jobs yet: an empty result);
//  - a syntax error is IoT Hub's 400 ArgumentInvalid, an ArgumentError from the SDK;
//  - a registryRead policy may query;
//  - a predicate on reported properties after devices report them over MQTT.
// Query.next() without an argument refetches the first page (sdk-quirks.md): the loops pass the
// query's own continuationToken.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Registry } = require('azure-iothub');
const { Mqtt } = require('azure-iot-device-mqtt');
const { startHub } = require('./lib/hub');
const { createSasDevice, createModule, openClient, closeQuietly, within } = require('./lib/device');
const { errors, rejectsWith } = require('./lib/util');

const DEVICES = 1000;
const prefix = `q${process.pid}`;
const idOf = (i) => `${prefix}-${String(i).padStart(4, '0')}`;
// Device i's tags: x is 'y' for every fourth device, group one of seven.
const tagsOf = (i) => ({ x: i % 4 === 1 ? 'y' : 'n', group: `g${i % 7}`, n: i });

function chunks(items, size) {
  const out = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

// Runs fn over items with at most `width` calls in flight.
async function inParallel(items, width, fn) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++];
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: width }, worker));
}

// Every page of a query, as nextAsTwin follows them: {items, pages}.
async function allTwins(query) {
  const items = [];
  let pages = 0;
  while (query.hasMoreResults) {
    assert.ok(pages < 100, 'the query never ends');
    const { result } = await query.nextAsTwin();
    items.push(...result);
    pages++;
  }
  return { items, pages };
}

// Every page through next(token): {items, pages, itemTypes}.
async function allRows(query) {
  const items = [];
  const itemTypes = new Set();
  let pages = 0;
  while (query.hasMoreResults) {
    assert.ok(pages < 100, 'the query never ends');
    const { result, message } = await query.next(query.continuationToken);
    items.push(...result);
    itemTypes.add(message.headers['x-ms-item-type']);
    pages++;
  }
  return { items, pages, itemTypes };
}

describe('twin queries (Registry.createQuery)', () => {
  let hub;
  let registry;

  before(async () => {
    hub = await startHub({ name: 'query' });
    registry = Registry.fromConnectionString(hub.connectionString);
    const ids = Array.from({ length: DEVICES }, (_, i) => i);
    for (const page of chunks(ids, 100)) {
      const { responseBody: res } = await registry.addDevices(page.map((i) => ({ deviceId: idOf(i) })));
      assert.equal(res.isSuccessful, true, JSON.stringify(res.errors));
    }
    await inParallel(ids, 16, (i) => registry.updateTwin(idOf(i), { tags: tagsOf(i) }, '*'));
  });
  after(async () => {
    if (hub) await hub.dispose();
  });

  it('SELECT * with a tag predicate, page size 100: exactly the matching twins across pages, once each', async () => {
    const expected = new Set();
    for (let i = 0; i < DEVICES; i++) if (tagsOf(i).x === 'y') expected.add(idOf(i));
    const query = registry.createQuery("SELECT * FROM devices WHERE tags.x = 'y'", 100);
    const pageSizes = [];
    const ids = [];
    while (query.hasMoreResults) {
      assert.ok(pageSizes.length < 20, 'the query never ends');
      const { result, message } = await query.nextAsTwin();
      assert.equal(message.headers['x-ms-item-type'], 'twin');
      pageSizes.push(result.length);
      for (const twin of result) {
        assert.equal(twin.constructor.name, 'Twin');
        assert.equal(twin.tags.x, 'y');
        assert.equal(typeof twin.etag, 'string');
        assert.equal(typeof twin.properties.desired.$version, 'number');
        ids.push(twin.deviceId);
      }
    }
    assert.deepEqual(pageSizes, [100, 100, 50]);
    assert.equal(ids.length, expected.size, 'no duplicates');
    assert.deepEqual(new Set(ids), expected);

    // A twin from a query is the twin getTwin shows.
    const { responseBody: got } = await registry.getTwin(ids[0]);
    const { result: [again] } = await registry.createQuery(`SELECT * FROM devices WHERE deviceId = '${ids[0]}'`)
      .nextAsTwin();
    assert.deepEqual(again.tags, got.tags);
    assert.equal(again.etag, got.etag);
    assert.deepEqual(again.properties, got.properties);
  });

  it('a projection with a compound predicate; TOP across pages', async () => {
    const expected = [];
    for (let i = 0; i < DEVICES; i++) {
      if (tagsOf(i).group === 'g3' && i >= 500) expected.push({ deviceId: idOf(i), x: tagsOf(i).x });
    }
    const { items, itemTypes } = await allRows(registry.createQuery(
      "SELECT deviceId, tags.x FROM devices WHERE tags.group = 'g3' AND tags.n >= 500", 100));
    assert.deepEqual([...itemTypes], ['raw']);
    const byId = (a, b) => a.deviceId.localeCompare(b.deviceId);
    assert.deepEqual(items.sort(byId), expected.sort(byId));

    const top = await allTwins(registry.createQuery("SELECT TOP 150 * FROM devices WHERE tags.x = 'n'", 100));
    assert.equal(top.pages, 2);
    assert.equal(top.items.length, 150);
    assert.equal(new Set(top.items.map((t) => t.deviceId)).size, 150);
  });

  it('GROUP BY counts and COUNT() are right', async () => {
    const expected = {};
    for (let i = 0; i < DEVICES; i++) expected[tagsOf(i).group] = (expected[tagsOf(i).group] ?? 0) + 1;
    const { items, itemTypes } = await allRows(registry.createQuery(
      'SELECT tags.group AS g, COUNT() AS n FROM devices WHERE IS_DEFINED(tags.n) GROUP BY tags.group', 100));
    assert.deepEqual([...itemTypes], ['raw']);
    const counts = Object.fromEntries(items.map((row) => [row.g, row.n]));
    assert.deepEqual(counts, expected);

    const { items: total } = await allRows(registry.createQuery(
      "SELECT COUNT() AS total, SUM(tags.n) AS sum FROM devices WHERE tags.x = 'y'"));
    assert.deepEqual(total, [{ total: DEVICES / 4, sum: Array.from({ length: DEVICES }, (_, i) => i)
      .filter((i) => i % 4 === 1).reduce((a, b) => a + b, 0) }]);
  });

  it('module twins: SELECT * FROM devices.modules; devices.jobs is empty', async () => {
    const device = idOf(7);
    await createModule(hub, registry, device, 'ma');
    await createModule(hub, registry, device, 'mb');
    await createModule(hub, registry, idOf(8), 'ma');
    await registry.updateModuleTwin(device, 'mb', { tags: { role: 'camera' } }, '*');

    const { items } = await allTwins(registry.createQuery(`SELECT * FROM devices.modules WHERE deviceId = '${device}'`));
    assert.deepEqual(items.map((t) => t.moduleId).sort(), ['ma', 'mb']);
    for (const t of items) assert.equal(t.deviceId, device);

    const { items: cameras } = await allRows(registry.createQuery(
      "SELECT deviceId, moduleId FROM devices.modules WHERE tags.role = 'camera'"));
    assert.deepEqual(cameras, [{ deviceId: device, moduleId: 'mb' }]);
    const { items: named } = await allRows(registry.createQuery("SELECT * FROM devices.modules WHERE moduleId = 'ma'"));
    assert.deepEqual(named.map((t) => t.deviceId).sort(), [idOf(7), idOf(8)]);

    const jobs = await allRows(registry.createQuery('SELECT * FROM devices.jobs'));
    assert.deepEqual(jobs.items, []);
    assert.deepEqual([...jobs.itemTypes], ['deviceJob']);
  });

  it("a syntax error is IoT Hub's 400 ArgumentInvalid, an ArgumentError", async () => {
    const err = await rejectsWith(registry.createQuery("SELECT * FROM devices WHERE tags.x = 'y' AND", 100).nextAsTwin(),
                                  errors.ArgumentError, { status: 400, code: 'ArgumentInvalid' });
    assert.match(err.message, /^SQL query parse failed/);
    assert.match(err.message, /Line 1:\d+/);
    await rejectsWith(registry.createQuery('SELECT * FROM everything').next(), errors.ArgumentError, { status: 400 });
  });

  it('a registryRead policy may query', async () => {
    const reader = Registry.fromConnectionString(hub.policyConnectionString('registryRead'));
    const { items } = await allRows(reader.createQuery(`SELECT deviceId FROM devices WHERE deviceId = '${idOf(1)}'`));
    assert.deepEqual(items, [{ deviceId: idOf(1) }]);
  });

  it('reported properties sent over MQTT can be queried', async () => {
    const clients = [];
    try {
      const fw = `fw-${process.pid}`;
      for (let k = 0; k < 3; k++) {
        const { connectionString, deviceId } = await createSasDevice(hub, registry, `${prefix}-mqtt-${k}`);
        const client = await openClient(connectionString, Mqtt);
        clients.push(client);
        const twin = await within(15_000, client.getTwin(), 'getTwin');
        await within(15_000, new Promise((resolve, reject) => {
          twin.properties.reported.update({ fw, temp: 20 + 5 * k }, (err) => (err ? reject(err) : resolve()));
        }), `reported update of ${deviceId}`);
      }
      const { items } = await allRows(registry.createQuery(
        `SELECT deviceId, properties.reported.temp FROM devices WHERE properties.reported.fw = '${fw}' ` +
        'AND properties.reported.temp > 22'));
      assert.deepEqual(items.sort((a, b) => a.deviceId.localeCompare(b.deviceId)),
                       [{ deviceId: `${prefix}-mqtt-1`, temp: 25 }, { deviceId: `${prefix}-mqtt-2`, temp: 30 }]);
    } finally {
      for (const c of clients) await closeQuietly(c);
    }
  });
});
