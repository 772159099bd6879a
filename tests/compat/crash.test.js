'use strict';
// Crash test (issue #9, item 1): while devices on Mqtt and Amqp (and one on Http, telemetry
// only) send telemetry (pipelined sendEvent), the service sends cloud-to-device messages (Client.send, ack 'full') and desired
// twin updates (Registry.updateTwin), hubd is killed with SIGKILL at random moments and restarted
// on the same data folder, many times. Clients keep reconnecting through the kills (the SDKs'
// retry policies; a client that gives up is reopened). After every restart:
//
//   telemetry  every message whose sendEvent resolved (the hub acknowledged it) is stored, and
//              the order per device holds where the SDK fixes it (below); nothing is stored that
//              was never sent, and a message is stored twice only if it was in flight at a kill;
//   twins      every desired update whose updateTwin resolved is present: the stored value is at
//              least the last resolved one and $version at least the version it answered.
// At the end (no more kills):
//   C2D        every message whose Client.send resolved reaches its device, and its Success
//              feedback record reaches the service; no record names a message never sent, and no
//              Success record names one the device never got;
//   twins      a last desired update reaches every device's desired-properties listener.
//
// What the SDKs do on reconnect, and so what is asserted about order and duplicates:
// - A sendEvent in flight when the connection breaks fails inside the SDK and is retried by its
//   RetryOperation (ExponentialBackOffWithJitter, up to 4 minutes), on the next connection. The
//   hub may have stored it before it died without acknowledging it: the retry then stores it
//   again (at-least-once, as IoT Hub). So a duplicate is allowed only for a message whose send was
//   in flight across a kill. Retries run on independent jittered timers, so messages in flight
//   together at a kill may be re-sent in any order: no order is promised among them.
// - What IoT Hub does promise, and this test asserts, per device (one partition):
//   (a) causal order: if b was sent after a was acknowledged, a is stored before b;
//   (b) connection order: messages sent on one connection (sendEvent called after the client's
//       'connect', acknowledged before that connection ended) are stored in send order. Not for
//       Http: each request stands alone, and requests in flight together may race.
//   Order is by first stored occurrence (a later duplicate is a re-send).
// - A cloud-to-device message locked by a device when hubd dies is delivered again after the
//   restart (locks are not durable: at-least-once), so a device may get one twice; feedback
//   batches may be delivered twice for the same reason.
//
// Short form by default (5 kills, ~1 minute: ctest); the long form is
//   HUBD_CRASH_KILLS=20 node tests/compat/run.js --timeout 900 crash
// Other knobs: HUBD_CRASH_SEED (the random schedule; printed), HUBD_CRASH_DEVICES (per transport,
// default 2), HUBD_CRASH_PIPELINE (sends in flight per device, default 4), HUBD_CRASH_GAP_MS
// (pause of each pipeline slot between sends, default 40), HUBD_CRASH_HTTP (Http devices,
// default 1).

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { Client: ServiceClient, Registry } = require('azure-iothub');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Amqp } = require('azure-iot-device-amqp');
const { Http } = require('azure-iot-device-http');
const { Message } = require('azure-iot-common');
const { startHub } = require('./lib/hub');
const { createSasDevice, makeClient, closeQuietly, within, storedEvents } = require('./lib/device');

// azure-iothub 1.16.6 bug: when the service client's AMQP connection fails with NotConnectedError
// (the hub is down), amqp_service_errors.translateError sets err.amqpError = err, and the next
// debug line that names the error (getErrorName, evaluated even with DEBUG off) recurses until
// "Maximum call stack size exceeded", thrown from an SDK callback. The call sites read the
// function from the module's exports, so a cycle-safe copy there keeps the client alive; nothing
// on the wire changes.
{
  const amqpErrors = require('azure-iothub/dist/common-amqp/amqp_common_errors');
  amqpErrors.getErrorName = function getErrorName(err, seen = new Set()) {
    if (!err) return 'error is falsy';
    if (err.condition) return `amqp error(${err.condition})`;
    if (!err.name) return 'unknown error type';
    seen.add(err);
    const from = err.amqpError && !seen.has(err.amqpError) ? `(from ${getErrorName(err.amqpError, seen)})` : '';
    return `javacript error(${err})${from}`;
  };
}

const KILLS = Number(process.env.HUBD_CRASH_KILLS ?? 5);
const SEED = Number(process.env.HUBD_CRASH_SEED ?? (Date.now() % 0x7fffffff));
const DEVICES_PER_TRANSPORT = Number(process.env.HUBD_CRASH_DEVICES ?? 2);
const PIPELINE = Number(process.env.HUBD_CRASH_PIPELINE ?? 4);
const GAP_MS = Number(process.env.HUBD_CRASH_GAP_MS ?? 40);
const HTTP_DEVICES = Number(process.env.HUBD_CRASH_HTTP ?? 1);
const OFFLINE_C2D = 40;           // C2D messages for a device that connects only at the end
const RESUME_TIMEOUT_MS = 60_000;   // traffic of every kind must resume within this after a restart

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// mulberry32: a seeded schedule, so a failing run can be replayed with HUBD_CRASH_SEED.
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = prng(SEED);
const between = (lo, hi) => lo + Math.floor(random() * (hi - lo + 1));

async function until(what, pred, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) assert.fail(`${what}: not within ${timeoutMs} ms`);
    await sleep(50);
  }
}

// Kill times, shared by every check.
const kills = [];   // {at, restartedAt}

function inFlightAtSomeKill(a) {
  return kills.some((k) => a.calledAt <= k.at && (a.settledAt === null || a.settledAt >= k.at));
}

// ---- a device: telemetry sender, C2D receiver, desired-properties listener --------------------
class Device {
  constructor(spec, transportName, Transport) {
    this.deviceId = spec.deviceId;
    this.connectionString = spec.connectionString;
    this.transportName = transportName;
    this.Transport = Transport;
    this.attempts = [];        // {i, calledAt, settledAt, acked, error}
    this.next = 0;
    this.stopped = false;
    this.connects = [];        // times of the client's 'connect' events
    this.disconnects = [];     // times of the client's 'disconnect' events
    this.reopens = 0;
    this.c2d = [];             // messageIds received, in order (with repeats)
    this.completeErrors = 0;
    this.desired = [];         // n values seen by the desired-properties listener
  }

  async open() {
    this.client = await makeClient(this.connectionString, this.Transport);
    this.client.on('connect', () => this.connects.push(Date.now()));
    this.client.on('disconnect', () => {
      this.disconnects.push(Date.now());
      // The SDK gave up reconnecting (or had no feature to reconnect for): reopen, as the SDK's
      // samples do, until it works.
      this._reopen();
    });
    // Http devices send telemetry only: C2D over HTTP is a slow poll and twins are not served.
    if (!this.telemetryOnly) this.client.on('message', (msg) => {
      this.c2d.push(msg.messageId);
      // Amqp devices hold their messages a while (locked in the hub when it dies); Mqtt devices
      // settle on receipt (mqtt.js sends the PUBACK, which is what completes them).
      const delay = this.transportName === 'Amqp' ? between(0, 1500) : 0;
      setTimeout(() => this.client.complete(msg).catch(() => { this.completeErrors += 1; }), delay);
    });
    await within(30_000, this.client.open(), `${this.deviceId} open`);
    this.connects.push(Date.now());
    if (this.offline || this.telemetryOnly) return;
    const twin = await within(30_000, this.client.getTwin(), `${this.deviceId} getTwin`);
    twin.on('properties.desired', (patch) => {
      if (typeof patch.n === 'number') this.desired.push(patch.n);
    });
  }

  async _reopen() {
    if (this.reopening || this.stopped) return;
    this.reopening = true;
    try {
      while (!this.stopped) {
        try {
          await within(30_000, this.client.open(), 'reopen');
          this.reopens += 1;
          return;
        } catch {
          await sleep(500);
        }
      }
    } finally {
      this.reopening = false;
    }
  }

  startSending() {
    this.workers = [];
    for (let w = 0; w < PIPELINE; w++) this.workers.push(this._worker());
  }

  async _worker() {
    while (!this.stopped) {
      const i = this.next++;
      const msg = new Message(JSON.stringify({ i }));
      msg.messageId = `${this.deviceId}-${i}`;
      msg.contentType = 'application/json';
      msg.contentEncoding = 'utf-8';
      const a = { i, calledAt: Date.now(), settledAt: null, acked: false, error: null };
      this.attempts.push(a);
      try {
        // The SDK retries through disconnections itself (up to 4 minutes).
        await this.client.sendEvent(msg);
        a.acked = true;
      } catch (err) {
        a.error = `${err.constructor.name}: ${err.message}`;
      }
      a.settledAt = Date.now();
      await sleep(GAP_MS);
    }
  }

  async stopSending() {
    this.stopped = true;
    await within(250_000, Promise.all(this.workers), `${this.deviceId} sends to settle`);
  }

  ackedSince(t) {
    return this.attempts.filter((a) => a.acked && a.settledAt >= t).length;
  }

  // The client's connections: [start, end) from a 'connect' to the next disconnect or kill.
  sessions() {
    if (this.telemetryOnly) return [];   // each HTTP request stands alone: parallel ones may race
    const ends = [...this.disconnects, ...kills.map((k) => k.at)].sort((x, y) => x - y);
    return this.connects.map((start) => ({ start, end: ends.find((e) => e >= start) ?? Infinity }));
  }
}

// Checks the stored telemetry of every device against what the devices know. `horizon`: only
// acknowledgements received before it count (the stored events were read after it).
function checkTelemetry(devices, stored, horizon, label) {
  const summary = [];
  for (const dev of devices) {
    const events = stored.filter((e) => e.deviceId === dev.deviceId);
    const partitions = new Set(events.map((e) => e.partition));
    assert.ok(partitions.size <= 1, `${label}: ${dev.deviceId} stored in ${partitions.size} partitions`);
    events.sort((x, y) => x.sequenceNumber - y.sequenceNumber);
    for (let k = 1; k < events.length; k++) {
      assert.notEqual(events[k].sequenceNumber, events[k - 1].sequenceNumber,
                      `${label}: ${dev.deviceId}: sequence number ${events[k].sequenceNumber} used twice`);
    }
    const log = events.map((e) => e.body.i);
    const firstPos = new Map();
    const count = new Map();
    log.forEach((i, pos) => {
      if (!firstPos.has(i)) firstPos.set(i, pos);
      count.set(i, (count.get(i) ?? 0) + 1);
    });
    const byIndex = new Map(dev.attempts.map((a) => [a.i, a]));

    const acked = dev.attempts.filter((a) => a.acked && a.settledAt < horizon);
    const missing = acked.filter((a) => !firstPos.has(a.i)).map((a) => a.i);
    assert.deepEqual(missing, [], `${label}: ${dev.deviceId} (${dev.transportName}): acknowledged messages missing`);

    const neverSent = log.filter((i) => !byIndex.has(i));
    assert.deepEqual(neverSent, [], `${label}: ${dev.deviceId}: stored messages that were never sent`);

    const dups = [...count].filter(([, n]) => n > 1).map(([i]) => i);
    const badDups = dups.filter((i) => !inFlightAtSomeKill(byIndex.get(i)));
    assert.deepEqual(badDups, [], `${label}: ${dev.deviceId}: stored twice though not in flight at any kill`);

    // (a) causal order: sorted by ack time, a running maximum of first positions; each message
    // sent after those acks must come after all of them.
    const byAck = [...acked].sort((x, y) => x.settledAt - y.settledAt);
    const prefixMax = [];
    let m = -1;
    let mi = null;
    for (const a of byAck) {
      if (firstPos.get(a.i) > m) {
        m = firstPos.get(a.i);
        mi = a.i;
      }
      prefixMax.push({ settledAt: a.settledAt, max: m, i: mi });
    }
    for (const b of acked) {
      let lo = 0;
      let hi = prefixMax.length;   // first index with settledAt >= b.calledAt
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (prefixMax[mid].settledAt < b.calledAt) lo = mid + 1;
        else hi = mid;
      }
      if (lo === 0) continue;
      const before = prefixMax[lo - 1];
      assert.ok(before.max < firstPos.get(b.i),
                `${label}: ${dev.deviceId}: message ${b.i} (sent after ${before.i} was acknowledged) stored before it`);
    }

    // (b) connection order.
    for (const s of dev.sessions()) {
      const inSession = acked.filter((a) => a.calledAt >= s.start && a.settledAt < s.end).sort((x, y) => x.i - y.i);
      for (let k = 1; k < inSession.length; k++) {
        const [x, y] = [inSession[k - 1], inSession[k]];
        assert.ok(firstPos.get(x.i) < firstPos.get(y.i),
                  `${label}: ${dev.deviceId}: ${y.i} stored before ${x.i}, both sent on one connection`);
      }
    }
    summary.push({ deviceId: dev.deviceId, acked: acked.length, stored: log.length, duplicated: dups.length,
                   unackedStored: [...firstPos.keys()].filter((i) => !byIndex.get(i).acked).length });
  }
  return summary;
}

// ---- the service side ------------------------------------------------------------------------
class Service {
  constructor(hub, devices, offline) {
    this.hub = hub;
    this.devices = devices.filter((d) => !d.telemetryOnly);
    this.offline = offline;
    this.registry = Registry.fromConnectionString(hub.connectionString);
    this.client = ServiceClient.fromConnectionString(hub.connectionString);
    this.client.on('error', () => {});
    this.client.on('disconnect', () => { this.feedbackDirty = true; });
    this.sent = [];            // C2D: {id, deviceId, calledAt, settledAt, ok, error}
    this.feedback = [];        // feedback records
    this.receivers = new WeakSet();
    this.twin = new Map(this.devices.map((d) => [d.deviceId, { attempted: 0, resolved: [], errors: 0 }]));
    this.stopped = false;
    this.feedbackDirty = false;
  }

  async open() {
    await within(30_000, this.client.open(), 'service open');
    await this._attachFeedback();
  }

  async _attachFeedback() {
    const { result: receiver } = await within(30_000, this.client.getFeedbackReceiver(), 'getFeedbackReceiver');
    if (!this.receivers.has(receiver)) {
      this.receivers.add(receiver);
      receiver.on('error', () => { this.feedbackDirty = true; });
      receiver.on('message', (msg) => {
        for (const rec of JSON.parse(msg.data.toString())) this.feedback.push(rec);
      });
    }
    this.feedbackDirty = false;
  }

  // The feedback receiver again after a disconnection (the SDK does not re-attach it itself).
  async _feedbackLoop() {
    while (!this.stopped) {
      if (this.feedbackDirty) {
        try {
          await this._attachFeedback();
        } catch {
          // the hub is down; next round
        }
      }
      await sleep(300);
    }
  }

  start() {
    this.loops = [this._feedbackLoop()];
    this.loops.push(this._c2dLoop(this.offline, OFFLINE_C2D, [200, 800]));
    for (const dev of this.devices) {
      this.loops.push(this._c2dLoop(dev));
      this.loops.push(this._twinLoop(dev));
    }
  }

  async stop() {
    this.stopped = true;
    await within(120_000, Promise.all(this.loops), 'service loops to stop');
  }

  // limit: for the offline device, which must not reach the queue depth limit (50).
  async _c2dLoop(dev, limit = Infinity, pause = [150, 400]) {
    for (let k = 0; !this.stopped && k < limit; k++) {
      const id = `${dev.deviceId}-c2d-${k}`;
      const m = new Message(`c2d ${k}`);
      m.messageId = id;
      m.ack = 'full';
      const s = { id, deviceId: dev.deviceId, calledAt: Date.now(), settledAt: null, ok: false, error: null };
      this.sent.push(s);
      try {
        await within(60_000, this.client.send(dev.deviceId, m), 'Client.send');
        s.ok = true;
      } catch (err) {
        s.error = `${err.constructor.name}: ${err.message}`;
        this.feedbackDirty = true;
      }
      s.settledAt = Date.now();
      await sleep(between(...pause));
    }
  }

  async _twinLoop(dev) {
    const t = this.twin.get(dev.deviceId);
    while (!this.stopped) {
      const n = ++t.attempted;
      const calledAt = Date.now();
      try {
        const { responseBody } = await within(20_000,
          this.registry.updateTwin(dev.deviceId, { properties: { desired: { n } } }, '*'), 'updateTwin');
        t.resolved.push({ n, version: responseBody.properties.desired.$version, calledAt, settledAt: Date.now() });
      } catch {
        t.errors += 1;
      }
      await sleep(between(200, 500));
    }
  }

  async getTwinWithRetry(deviceId) {
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        return (await within(10_000, this.registry.getTwin(deviceId), 'getTwin')).responseBody;
      } catch (err) {
        if (Date.now() > deadline) throw err;
        await sleep(300);
      }
    }
  }

  // Every resolved updateTwin is present: value and $version at least the last resolved ones.
  async checkTwins(horizon, label) {
    for (const dev of this.devices) {
      const t = this.twin.get(dev.deviceId);
      const resolved = t.resolved.filter((r) => r.settledAt < horizon);
      const twin = await this.getTwinWithRetry(dev.deviceId);
      const desired = twin.properties.desired;
      if (resolved.length === 0) continue;
      const last = resolved[resolved.length - 1];
      assert.ok(typeof desired.n === 'number' && desired.n >= last.n,
                `${label}: ${dev.deviceId}: desired.n is ${desired.n}, but updateTwin(n=${last.n}) resolved`);
      assert.ok(desired.n <= t.attempted, `${label}: ${dev.deviceId}: desired.n ${desired.n} was never sent`);
      assert.ok(desired.$version >= last.version,
                `${label}: ${dev.deviceId}: desired $version ${desired.$version} < ${last.version} answered before`);
    }
  }
}

describe(`hubd survives ${KILLS} SIGKILLs under load (seed ${SEED})`, () => {
  let hub;
  let service;
  const devices = [];
  let offline;

  before(async () => {
    hub = await startHub({ name: 'crash' });
  });
  after(async () => {
    if (service) service.stopped = true;
    for (const d of [...devices, offline].filter(Boolean)) {
      d.stopped = true;
      await closeQuietly(d.client);
    }
    if (service) await within(10_000, service.client.close(), 'service close').catch(() => {});
    if (hub) await hub.dispose();
    // SDK retry timers (up to 4 minutes) must not keep a failed run alive.
    setTimeout(() => process.exit(), 3000).unref();
  });

  it('acknowledged telemetry, accepted C2D messages and resolved twin updates survive every kill',
     { timeout: 120_000 + KILLS * 40_000 }, async (t) => {
       t.diagnostic(`seed ${SEED}: HUBD_CRASH_SEED=${SEED} replays this schedule`);
       const registry = Registry.fromConnectionString(hub.connectionString);
       for (const [name, Transport] of [['Mqtt', Mqtt], ['Amqp', Amqp]]) {
         for (let k = 0; k < DEVICES_PER_TRANSPORT; k++) {
           const spec = await createSasDevice(hub, registry, `crash-${name.toLowerCase()}-${k}-${process.pid}`);
           devices.push(new Device(spec, name, Transport));
         }
       }
       for (let k = 0; k < HTTP_DEVICES; k++) {
         const d = new Device(await createSasDevice(hub, registry, `crash-http-${k}-${process.pid}`), 'Http', Http);
         d.telemetryOnly = true;
         devices.push(d);
       }
       for (const d of devices) await d.open();
       // Offline through every kill: its C2D messages wait in the hub's queue the whole time.
       offline = new Device(await createSasDevice(hub, registry, `crash-offline-${process.pid}`), 'Amqp', Amqp);
       offline.offline = true;
       service = new Service(hub, devices, offline);
       await service.open();
       for (const d of devices) d.startSending();
       service.start();

       let restartedAt = Date.now();
       for (let round = 1; round <= KILLS; round++) {
         const label = `kill ${round}/${KILLS}`;
         // One kill in four comes soon after a restart, while hubd is recovering and the clients
         // reconnect; the others once traffic of every kind has resumed.
         const quick = round > 1 && random() < 0.25;
         if (quick) {
           await sleep(between(0, 400));
         } else {
           await until(`${label}: every device acknowledged again after the restart`,
                       () => devices.every((d) => d.ackedSince(restartedAt) >= 3), RESUME_TIMEOUT_MS);
           await until(`${label}: C2D sends resolve again after the restart`,
                       () => service.sent.some((s) => s.ok && s.settledAt >= restartedAt), RESUME_TIMEOUT_MS);
           await until(`${label}: twin updates resolve again after the restart`,
                       () => [...service.twin.values()].every((x) => x.resolved.some((r) => r.settledAt >= restartedAt)),
                       RESUME_TIMEOUT_MS);
           await sleep(between(0, 2500));
         }

         const at = Date.now();
         const { signal } = await hub.kill9();
         assert.equal(signal, 'SIGKILL');
         const kill = { at, restartedAt: null };
         kills.push(kill);
         await sleep(between(0, 1000));
         await hub.start();
         restartedAt = kill.restartedAt = Date.now();

         const horizon = Date.now();
         const stored = await storedEvents(hub, { snapshot: true });
         const summary = checkTelemetry(devices, stored, horizon, label);
         await service.checkTwins(horizon, label);
         t.diagnostic(`${label}${quick ? ' (quick)' : ''}: killed at +${at - kills[0].at} ms, down ${restartedAt - at} ms; ` +
                      summary.map((s) => `${s.deviceId.split('-').slice(1, 3).join('-')}: ${s.acked} acked/${s.stored} stored` +
                                         `${s.duplicated ? ` ${s.duplicated} dup` : ''}`).join(', '));
       }

       // ---- the end: no more kills; let everything settle.
       await until('every device acknowledged again after the last restart',
                   () => devices.every((d) => d.ackedSince(restartedAt) >= 3), RESUME_TIMEOUT_MS);
       for (const d of devices) d.stopped = true;
       await Promise.all([...devices.map((d) => d.stopSending()), service.stop()]);

       const horizon = Date.now();
       const stored = await storedEvents(hub, { snapshot: true });
       const summary = checkTelemetry(devices, stored, horizon, 'final');
       await service.checkTwins(horizon, 'final');
       for (const d of devices) {
         const failed = d.attempts.filter((a) => a.error);
         const s = summary.find((x) => x.deviceId === d.deviceId);
         t.diagnostic(`${d.deviceId} (${d.transportName}): ${d.attempts.length} sent, ${s.acked} acknowledged, ` +
                      `${failed.length} failed${failed.length ? ` (${failed[0].error})` : ''}, ${s.stored} stored, ` +
                      `${s.duplicated} duplicated, ${s.unackedStored} stored without an ack, ` +
                      `${d.connects.length} connects, ${d.reopens} reopens`);
         assert.ok(s.acked > 0);
       }

       // C2D: every accepted message reaches its device and its Success record the service.
       await offline.open();
       const receivers = [...service.devices, offline];
       const accepted = service.sent.filter((s) => s.ok);
       const successes = () => new Set(service.feedback.filter((r) => r.statusCode === 'Success').map((r) => r.originalMessageId));
       await until(`every accepted C2D message delivered (${accepted.length} accepted)`,
                   () => { const got = new Set(receivers.flatMap((d) => d.c2d)); return accepted.every((s) => got.has(s.id)); }, 60_000)
         .catch((err) => {
           const all = new Set(receivers.flatMap((d) => d.c2d));
           const lost = accepted.filter((s) => !all.has(s.id)).map((s) => s.id);
           throw new Error(`${err.message}; never delivered: ${lost.join(', ')}`);
         });
       await until('a Success feedback record for every accepted C2D message',
                   () => { const ok = successes(); return accepted.every((s) => ok.has(s.id)); }, 60_000)
         .catch((err) => {
           const ok = successes();
           const lacking = accepted.filter((s) => !ok.has(s.id)).map((s) => s.id);
           const other = service.feedback.filter((r) => lacking.includes(r.originalMessageId));
           throw new Error(`${err.message}; no Success record for ${lacking.join(', ')} (their records: ${JSON.stringify(other)})`);
         });
       const sentIds = new Set(service.sent.map((s) => s.id));
       const delivered = new Set(receivers.flatMap((d) => d.c2d));
       for (const r of service.feedback) {
         assert.ok(sentIds.has(r.originalMessageId), `feedback for a message never sent: ${JSON.stringify(r)}`);
         if (r.statusCode === 'Success') {
           assert.ok(delivered.has(r.originalMessageId), `Success feedback for a message no device got: ${r.originalMessageId}`);
         }
       }
       for (const d of receivers) {
         const strangers = d.c2d.filter((id) => !sentIds.has(id) || !id.startsWith(`${d.deviceId}-c2d-`));
         assert.deepEqual(strangers, [], `${d.deviceId} got C2D messages not sent to it`);
       }
       const redelivered = receivers.reduce((n, d) => n + d.c2d.length - new Set(d.c2d).size, 0);
       const feedbackRepeats = service.feedback.length - new Set(service.feedback.map((r) => `${r.originalMessageId}/${r.statusCode}`)).size;
       const notAccepted = service.sent.filter((s) => !s.ok);
       t.diagnostic(`C2D: ${service.sent.length} sent, ${accepted.length} accepted (${notAccepted.length} failed: ` +
                    `${notAccepted.filter((s) => delivered.has(s.id)).length} of them delivered anyway), ` +
                    `${redelivered} redeliveries, ${service.feedback.length} feedback records (${feedbackRepeats} repeated), ` +
                    `${offline.c2d.length} delivered to the offline device`);

       // Twins: a last update reaches every device's listener (each got the patch pushed, or, on
       // a reconnection, the whole desired document).
       const finalN = new Map();
       for (const d of service.devices) {
         const x = service.twin.get(d.deviceId);
         const n = ++x.attempted;
         await within(20_000, service.registry.updateTwin(d.deviceId, { properties: { desired: { n } } }, '*'), 'last updateTwin');
         finalN.set(d.deviceId, n);
       }
       await until('the last desired update on every device',
                   () => service.devices.every((d) => d.desired.includes(finalN.get(d.deviceId))), 30_000);
       t.diagnostic(`twins: ${[...service.twin.values()].reduce((n, x) => n + x.resolved.length, 0)} updates resolved, ` +
                    `${[...service.twin.values()].reduce((n, x) => n + x.errors, 0)} failed`);
     });
});
