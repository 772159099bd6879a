'use strict';
// Back-pressure to a device that does not read: it sends twin GETs as fast as it can (each
// answered with a twin of about 4 KB) but reads nothing. hubd must not buffer the answers it
// cannot send: once about 1 MiB waits for the device (mqtt_head::session_options::
// max_unwritten_bytes), it stops reading the connection too, so the device's own writes back up.
// Its RSS stays bounded; when the device reads again, every request is answered, in order.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const tls = require('node:tls');
const { Registry } = require('azure-iothub');
const { startHub } = require('./lib/hub');
const { createSasDevice } = require('./lib/device');
const { RawMqtt, deviceCredentials, publishPacket } = require('./lib/raw_mqtt');

const REQUESTS = 10_000;   // 10,000 x ~4 KB = ~40 MB of requests, and as much of answers
const RSS_BOUND_MB = 20;

function rssKb(pid) {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

describe('back-pressure to a device that does not read', () => {
  let hub;
  let registry;

  before(async () => {
    hub = await startHub({ name: 'backpressure' });
    registry = Registry.fromConnectionString(hub.connectionString);
  });
  after(async () => {
    if (hub) await hub.dispose();
  });

  it('stops reading the device instead of buffering its answers, then answers them all', async () => {
    const dev = await createSasDevice(hub, registry, `backpressure-${process.pid}`);
    await registry.updateTwin(dev.deviceId, { properties: { desired: { blob: 'x'.repeat(4000) } } }, '*');
    const socket = tls.connect({ host: hub.hostName, port: 8883, servername: 'localhost' });
    await new Promise((resolve, reject) => { socket.once('secureConnect', resolve); socket.once('error', reject); });
    const raw = new RawMqtt(socket);
    try {
      const key = dev.device.authentication.symmetricKey.primaryKey;
      assert.equal(await raw.handshake(deviceCredentials(hub.hostName, dev.deviceId, key)), 0);
      assert.deepEqual(await raw.subscribe([{ filter: '$iothub/twin/res/#', qos: 0 }]), [0]);

      const pid = hub.child.pid;
      const baselineKb = rssKb(pid);
      socket.pause();  // read nothing from now on
      // Each request carries 4 KB (ignored by a GET) so that they cannot all fit in the kernel's
      // socket buffers: if hubd stops reading, they stay here.
      const filler = Buffer.alloc(4000, 'r');
      const request = (i) => publishPacket({ topic: `$iothub/twin/GET/?$rid=${i}`, qos: 0, payload: filler });
      for (let i = 0; i < REQUESTS; i++) socket.write(request(i));
      // hubd answers until its output and the socket buffers are full, then stops reading: the
      // requests back up in this process.
      let peakKb = baselineKb;
      for (let t = 0; t < 20; t++) {
        await new Promise((r) => setTimeout(r, 250));
        peakKb = Math.max(peakKb, rssKb(pid));
      }
      const unsent = socket.writableLength;
      console.log(`backpressure: RSS +${((peakKb - baselineKb) / 1024).toFixed(1)} MB, ${unsent} request bytes not taken by hubd`);
      assert.ok(unsent > 0, 'hubd stopped reading the device');
      assert.ok((peakKb - baselineKb) / 1024 < RSS_BOUND_MB, `hubd's RSS grew by ${((peakKb - baselineKb) / 1024).toFixed(1)} MB`);

      // Reading again: every request is answered, in order, and nothing was lost.
      socket.resume();
      let next = 0;
      const deadline = Date.now() + 60_000;
      while (next < REQUESTS && Date.now() < deadline) {
        const p = await raw.readPacket(30_000);
        assert.ok(p, `the connection stays open (answered ${next})`);
        if (p.type !== 3) continue;
        const topicLength = p.body.readUInt16BE(0);
        const topic = p.body.subarray(2, 2 + topicLength).toString();
        const rid = Number(/\$rid=(\d+)/.exec(topic)?.[1]);
        assert.equal(rid, next, `answers in order (${topic})`);
        assert.match(topic, /^\$iothub\/twin\/res\/200\//);
        next++;
      }
      assert.equal(next, REQUESTS, 'every request answered');
    } finally {
      raw.destroy();
    }
  });
});
