'use strict';
// "Acknowledged means durable" (DESIGN.md): devices send telemetry one message at a time over
// MQTT, recording which sends the hub acknowledged; hubd is killed with SIGKILL mid-stream and
// restarted on the same data folder. Afterwards every acknowledged message is stored, in order
// per device, and the devices reconnect and keep sending.
//
// Duplicates: a message in flight when hubd died may have been written but not acknowledged;
// its send then fails or is retried by the SDK, and the retry stores it again. That is allowed
// (at-least-once, as with IoT Hub) for messages that were unacknowledged at the crash, never for
// one acknowledged before it. Each device awaits every send, so at most one message per device
// is in flight at the crash.
//
// A `monitor-events --from now` follower runs through the crash too: it must see every
// acknowledged message sent after it started, across hubd's repair of the log's torn tail.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Registry } = require('azure-iothub');
const { Mqtt } = require('azure-iot-device-mqtt');
const { startHub } = require('./lib/hub');
const {
  Message, createSasDevice, openClient, closeQuietly, within, startMonitor, storedEvents, eventsOf, parseJsonLines,
} = require('./lib/device');

const DEVICES = 3;
const BEFORE_CRASH = 25;     // acknowledged messages per device before the kill
const AFTER_RESTART = 15;    // and after the restart
const SEND_BUDGET_MS = 90_000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Sends message after message until stopped; records every attempt.
class Sender {
  constructor(client, deviceId) {
    this.client = client;
    this.deviceId = deviceId;
    this.attempts = [];   // {i, startedAt, settledAt, acked, error}
    this.stopped = false;
    this.done = this._run();
  }

  acked() {
    return this.attempts.filter((a) => a.acked).map((a) => a.i);
  }

  ackedSince(t) {
    return this.attempts.filter((a) => a.acked && a.startedAt >= t).length;
  }

  async _run() {
    const deadline = Date.now() + SEND_BUDGET_MS;
    for (let i = 0; !this.stopped && Date.now() < deadline; i++) {
      const msg = new Message(JSON.stringify({ i }));
      msg.messageId = `${this.deviceId}-${i}`;
      msg.contentType = 'application/json';
      msg.properties.add('i', String(i));
      const attempt = { i, startedAt: Date.now(), settledAt: null, acked: false, error: null };
      this.attempts.push(attempt);
      try {
        // The SDK retries retryable failures (the hub being down) itself, within its budget.
        await within(60_000, this.client.sendEvent(msg), 'sendEvent');
        attempt.acked = true;
      } catch (err) {
        attempt.error = `${err.constructor.name}: ${err.message}`;
        await sleep(200);
      }
      attempt.settledAt = Date.now();
    }
  }
}

async function waitUntil(what, predicate, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await sleep(50);
  }
}

describe('MQTT telemetry survives a crash of hubd', () => {
  let hub;
  let registry;
  const clients = [];
  let follower;
  const pid = process.pid;

  before(async () => {
    hub = await startHub({ name: 'mqtt-durability' });
    registry = Registry.fromConnectionString(hub.connectionString);
  });
  after(async () => {
    if (follower && follower.child.exitCode === null) follower.child.kill('SIGKILL');
    for (const c of clients) await closeQuietly(c);
    if (hub) await hub.dispose();
  });

  it('every acknowledged message is stored once, in order, after SIGKILL and restart', { timeout: 180_000 }, async (t) => {
    const devices = [];
    for (let d = 0; d < DEVICES; d++) devices.push(await createSasDevice(hub, registry, `durable-${d}-${pid}`));
    for (const dev of devices) clients.push(await openClient(dev.connectionString, Mqtt));

    // The follower: only events from now on, printed as they come.
    follower = await startMonitor(hub, ['--from', 'now', '--json', '--device', `durable-*-${pid}`, '--timeout', '170']);

    const senders = devices.map((dev, d) => new Sender(clients[d], dev.deviceId));
    try {
      await waitUntil(`${BEFORE_CRASH} acknowledged messages per device`,
                      () => senders.every((s) => s.acked().length >= BEFORE_CRASH), 60_000);
      const killedAt = Date.now();
      const killed = await hub.kill9();
      assert.equal(killed.signal, 'SIGKILL');
      const ackedBeforeCrash = senders.map((s) => new Set(s.attempts.filter((a) => a.acked && a.settledAt <= killedAt).map((a) => a.i)));
      await sleep(300);
      await hub.restart();
      const restartedAt = Date.now();
      await waitUntil(`${AFTER_RESTART} more acknowledged messages per device after the restart`,
                      () => senders.every((s) => s.ackedSince(restartedAt) >= AFTER_RESTART), 90_000);

      for (const s of senders) s.stopped = true;
      await within(70_000, Promise.all(senders.map((s) => s.done)), 'senders to stop');

      const stored = await storedEvents(hub, { timeoutSeconds: 3, args: ['--device', `durable-*-${pid}`] });
      for (const [d, s] of senders.entries()) {
        const events = eventsOf(stored, s.deviceId);
        const log = events.map((e) => e.body.i);
        const acked = s.acked();
        const missing = acked.filter((i) => !log.includes(i));
        assert.deepEqual(missing, [], `${s.deviceId}: acknowledged messages missing after the crash`);

        // Order: first occurrences in log order are increasing.
        const firsts = log.filter((i, k) => log.indexOf(i) === k);
        assert.deepEqual(firsts, [...firsts].sort((a, b) => a - b), `${s.deviceId}: per-device order`);
        const sent = new Set(s.attempts.map((a) => a.i));
        assert.deepEqual(log.filter((i) => !sent.has(i)), [], `${s.deviceId}: nothing stored that was never sent`);

        // Duplicates only of messages that were not acknowledged before the crash.
        const counts = new Map();
        for (const i of log) counts.set(i, (counts.get(i) ?? 0) + 1);
        const dups = [...counts].filter(([, n]) => n > 1).map(([i]) => i);
        for (const i of dups) {
          assert.ok(!ackedBeforeCrash[d].has(i), `${s.deviceId}: message ${i} was acknowledged before the crash and stored twice`);
        }
        assert.ok(dups.length <= 1, `${s.deviceId}: at most the one in-flight message is duplicated, got ${dups.join(', ')}`);

        // Sequence numbers keep growing across the restart (the torn tail was cut, not reused).
        for (let k = 1; k < events.length; k++) {
          assert.ok(events[k].sequenceNumber > events[k - 1].sequenceNumber, `${s.deviceId}: sequence numbers grow`);
        }
        const failed = s.attempts.filter((a) => a.error);
        const inFlight = s.attempts.filter((a) => a.startedAt <= killedAt && (a.settledAt === null || a.settledAt > killedAt));
        t.diagnostic(`${s.deviceId}: ${acked.length} acknowledged (${ackedBeforeCrash[d].size} before the crash), ` +
                     `${inFlight.length} in flight at the crash (${inFlight.map((a) => `#${a.i} ${a.acked ? 'acked after' : a.error}`).join(', ')}), ` +
                     `${failed.length} failed, stored ${log.length}, duplicated ${dups.join(', ') || 'none'}`);
      }

      // The follower saw every acknowledged message too.
      follower.child.kill('SIGTERM');
      const exit = await within(10_000, follower.exited, 'monitor-events to stop on SIGTERM');
      assert.equal(exit.code, 0, `monitor-events exit ${JSON.stringify(exit)}: ${follower.output().stderr}`);
      const followed = parseJsonLines(follower.output().stdout);
      for (const s of senders) {
        const seen = new Set(eventsOf(followed, s.deviceId).map((e) => e.body.i));
        const missing = s.acked().filter((i) => !seen.has(i));
        assert.deepEqual(missing, [], `${s.deviceId}: the following monitor-events missed acknowledged messages`);
      }
    } finally {
      for (const s of senders) s.stopped = true;
    }
  });
});
