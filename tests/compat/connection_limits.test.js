'use strict';
// Connection caps (--max-unauthenticated, --max-unauthenticated-per-ip, --max-connections-per-ip)
// and the time a connection may stay unauthenticated (--auth-timeout), over raw sockets from
// several source addresses (127.98.x.y: the whole 127/8 is local): a connection past a cap is
// reset right after accept, before any TLS; one that authenticates stops counting as
// unauthenticated; one that never authenticates is closed after the timeout, whatever it sends.
// An SDK device connected all along keeps working.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const tls = require('node:tls');
const { Registry } = require('azure-iothub');
const { Mqtt } = require('azure-iot-device-mqtt');
const { startHub } = require('./lib/hub');
const { Message, createSasDevice, openClient, closeQuietly, within } = require('./lib/device');
const { RawMqtt, deviceCredentials } = require('./lib/raw_mqtt');

const CAPS = { all: 12, perIp: 4, totalPerIp: 6 };
const AUTH_TIMEOUT_S = 4;
// A refused connection is reset at accept(); an admitted silent one stays until the handshake
// timeout (10 s).
const RESET_WITHIN_MS = 1_000;

// A TCP connection from `localAddress` that sends nothing. Resolves to {socket, outcome} where
// outcome is a promise of 'reset' (closed by the hub within RESET_WITHIN_MS) or 'open'.
function silent(host, localAddress, port = 8883) {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port, localAddress });
    let closed = false;
    socket.on('error', () => {});
    socket.once('close', () => { closed = true; });
    const outcome = new Promise((r) => setTimeout(() => r(closed ? 'reset' : 'open'), RESET_WITHIN_MS));
    const done = () => resolve({ socket, outcome });
    socket.once('connect', done);
    socket.once('close', done);
  });
}

async function openSilent(host, localAddress, n) {
  const conns = [];
  for (let i = 0; i < n; i++) conns.push(await silent(host, localAddress));
  const outcomes = await Promise.all(conns.map((c) => c.outcome));
  return { conns, outcomes };
}

function destroyAll(...lists) {
  for (const list of lists) for (const c of list) (c.socket ?? c).destroy();
  return new Promise((r) => setTimeout(r, 300));  // the hub notices and gives the slots back
}

// A raw MQTT connection from `localAddress`, TLS done.
function rawMqttFrom(host, localAddress) {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host, port: 8883, localAddress, servername: 'localhost' });
    socket.once('secureConnect', () => resolve(new RawMqtt(socket)));
    socket.once('error', reject);
  });
}

describe('connection caps and the authentication timeout', () => {
  let hub;
  let registry;
  let bystander;

  before(async () => {
    hub = await startHub({
      name: 'connection-limits',
      args: ['--max-unauthenticated', String(CAPS.all), '--max-unauthenticated-per-ip', String(CAPS.perIp),
        '--max-connections-per-ip', String(CAPS.totalPerIp), '--auth-timeout', `${AUTH_TIMEOUT_S}s`],
    });
    registry = Registry.fromConnectionString(hub.connectionString);
    const dev = await createSasDevice(hub, registry, `limits-bystander-${process.pid}`);
    bystander = await openClient(dev.connectionString, Mqtt, { noRetry: true });
  });
  after(async () => {
    await closeQuietly(bystander);
    if (hub) await hub.dispose();
  });

  it('resets the connection past the per-address cap and admits other addresses', async () => {
    const a = await openSilent(hub.hostName, '127.98.0.1', CAPS.perIp + 2);
    const b = await openSilent(hub.hostName, '127.98.0.2', 1);
    try {
      assert.deepEqual(a.outcomes, [...Array(CAPS.perIp).fill('open'), 'reset', 'reset']);
      assert.deepEqual(b.outcomes, ['open']);
      assert.match(hub.output, /connection from 127\.98\.0\.1 refused: too many unauthenticated connections from the address/);
    } finally {
      await destroyAll(a.conns, b.conns);
    }
    // The slots are back.
    const again = await openSilent(hub.hostName, '127.98.0.1', 1);
    await destroyAll(again.conns);
    assert.deepEqual(again.outcomes, ['open']);
  });

  it('resets the connection past the hub-wide cap', async () => {
    const held = [];
    const outcomes = [];
    // CAPS.all from 3 addresses (CAPS.perIp each), then one from a fourth address.
    for (let i = 0; i < CAPS.all / CAPS.perIp; i++) {
      const r = await openSilent(hub.hostName, `127.98.1.${i + 1}`, CAPS.perIp);
      held.push(...r.conns);
      outcomes.push(...r.outcomes);
    }
    const extra = await openSilent(hub.hostName, '127.98.1.200', 1);
    try {
      assert.deepEqual(outcomes, Array(CAPS.all).fill('open'));
      assert.deepEqual(extra.outcomes, ['reset']);
      // The device connected all along does not count and is not disturbed.
      await within(5_000, bystander.sendEvent(new Message('during the cap')), 'bystander send');
    } finally {
      await destroyAll(held, extra.conns);
    }
  });

  it('stops counting a connection once it authenticates, but counts it per address', async () => {
    const from = '127.98.2.1';
    const authed = [];
    for (let i = 0; i < CAPS.perIp; i++) {
      const dev = await createSasDevice(hub, registry, `limits-raw-${i}-${process.pid}`);
      const raw = await rawMqttFrom(hub.hostName, from);
      authed.push(raw);
      const key = dev.device.authentication.symmetricKey.primaryKey;
      assert.equal(await raw.handshake(deviceCredentials(hub.hostName, dev.deviceId, key)), 0, 'CONNACK 0');
    }
    // 4 authenticated from this address: 2 more fit the total cap of 6, and they are the only
    // unauthenticated ones (cap 4), then the total cap refuses.
    const more = await openSilent(hub.hostName, from, 3);
    try {
      assert.deepEqual(more.outcomes, ['open', 'open', 'reset']);
      // (Not logged again: one refusal warning per 10 s, and the first test's came just before.)
      for (const raw of authed) assert.equal(raw.isClosed, false, 'the authenticated connections stay');
    } finally {
      await destroyAll(more.conns, authed.map((r) => r.socket));
    }
  });

  it('closes a connection that does not authenticate within --auth-timeout, whatever it sends', async () => {
    // AMQP: the protocol header passes detection (within the 10 s handshake budget), then nothing.
    const amqp = await rawMqttFrom(hub.hostName, '127.98.3.1');
    amqp.write(Buffer.from([0x41, 0x4d, 0x51, 0x50, 0x00, 0x01, 0x00, 0x00]));
    // HTTPS: a request every 500 ms, each refused with 401 (no credential), on one connection.
    const http = await rawMqttFrom(hub.hostName, '127.98.3.2');
    const ask = () => http.write('GET /devices?api-version=2021-04-12 HTTP/1.1\r\nHost: hub\r\n\r\n');
    ask();
    const asking = setInterval(ask, 500);
    try {
      const started = Date.now();
      const [amqpClosed, httpClosed] = await Promise.all([amqp.closedWithin(AUTH_TIMEOUT_S * 1000 + 3000),
        http.closedWithin(AUTH_TIMEOUT_S * 1000 + 3000)]);
      const elapsed = Date.now() - started;
      assert.ok(amqpClosed, 'the AMQP connection that never authenticates is closed');
      assert.ok(httpClosed, 'the HTTP connection whose requests are all refused is closed');
      assert.ok(amqp.closedAt - amqp.openedAt >= AUTH_TIMEOUT_S * 1000 - 500, 'not before the timeout');
      assert.match(http.buffer.toString(), /^HTTP\/1\.1 401/, 'its requests were answered (401) until then');
      assert.ok(elapsed < AUTH_TIMEOUT_S * 1000 + 3000);
      assert.match(hub.output, /not authenticated within 4 s; closing/);
      // An authenticated device outlives the timeout.
      await within(5_000, bystander.sendEvent(new Message('after the timeout')), 'bystander send');
    } finally {
      clearInterval(asking);
      amqp.destroy();
      http.destroy();
    }
  });
});
