'use strict';
// The bad-input matrix, AMQP part (docs/bad-input.md): hand-encoded frames over raw TLS to port
// 5671 for what no client sends, and rhea (the AMQP library under the Azure SDKs) for
// well-formed sessions that ask for what they may not have. Each case asserts hubd's exact answer
// (its protocol header, the close frame's error condition, the SASL outcome code, the CBS
// status-code, the detach's error condition) or a clean close, then that the canaries (an Mqtt
// and an Amqp device sending all along) are still acknowledged.

const { describe, it, before } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const rhea = require('rhea');
const { encodeUriComponentStrict } = require('azure-iot-common');
const { sasToken } = require('./lib/util');
const { Message } = require('azure-iot-device');
const { Mqtt } = require('azure-iot-device-mqtt');
const { badInputSuite, assertBoundedPerConnection, assertHubAlive, repeatedCases, RawSocket, amqp, decodeFrames, frameError, openWebSocket, rssKiB } = require('./lib/bad_input');
const { openClient, closeQuietly } = require('./lib/device');

const PORT = 5671;
const CLOSE_WITHIN_MS = 5_000;

// The frames hubd sent, after the connection closed (or ms passed).
async function framesAtClose(raw, ms = CLOSE_WITHIN_MS) {
  const closed = await raw.closedWithin(ms);
  return { closed, frames: decodeFrames(raw.data) };
}

function closeErrorOf(frames) {
  const close = frames.find((f) => f.name === 'close');
  return close ? frameError(close) : undefined;
}

// rhea connection to the hub (no SASL, as the Azure SDKs' AMQP without SASL; authentication is
// by CBS). Resolves once opened.
function rheaConnect(hostName) {
  const container = rhea.create_container({ id: `bad-input-${crypto.randomUUID()}` });
  const conn = container.connect({ host: hostName, port: PORT, transport: 'tls', hostname: hostName, reconnect: false });
  conn.on('error', () => {});
  conn.on('disconnected', () => {});
  return new Promise((resolve, reject) => {
    conn.once('connection_open', () => resolve(conn));
    conn.once('connection_error', (ctx) => reject(ctx.connection.error));
    conn.once('disconnected', (ctx) => reject(ctx.error ?? new Error('disconnected')));
  });
}

// A CBS put-token on `conn`: resolves to the reply's {status, description}.
function putToken(conn, audience, token) {
  const sender = conn.open_sender('$cbs');
  const receiver = conn.open_receiver({ source: { address: '$cbs' }, target: { address: 'cbs-reply' } });
  const id = crypto.randomUUID();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no put-token reply within 10 s')), 10_000);
    receiver.on('message', (ctx) => {
      if (ctx.message.correlation_id !== id) return;
      clearTimeout(timer);
      const p = ctx.message.application_properties;
      resolve({ status: p['status-code'], description: p['status-description'] });
    });
    sender.once('sendable', () => {
      sender.send({
        message_id: id, reply_to: 'cbs-reply',
        application_properties: { operation: 'put-token', type: 'servicebus.windows.net:sastoken', name: audience },
        body: token,
      });
    });
  });
}

// Attaches a sender to `address`: resolves to null once usable, or to the detach's error.
function attachSender(conn, address) {
  const sender = conn.open_sender(address);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ condition: 'timeout' }), 10_000);
    sender.once('sendable', () => {
      clearTimeout(timer);
      resolve(null);
    });
    sender.once('sender_error', (ctx) => {
      clearTimeout(timer);
      const e = ctx.sender.error;
      resolve({ condition: e?.condition, description: e?.description });
    });
    sender.once('sender_close', (ctx) => {
      clearTimeout(timer);
      const e = ctx.sender.error;
      resolve({ condition: e?.condition ?? 'closed', description: e?.description });
    });
  });
}

describe('bad input: AMQP', () => {
  const suite = badInputSuite({ name: 'bad-input-amqp', prefix: 'amqp' });
  const { afterCase, fresh } = suite;
  let hub;
  before(() => ({ hub } = suite));

  const raw = () => RawSocket.tls(hub.hostName, PORT);
  // A raw connection past the AMQP header and open exchange (no SASL): {sock, open} with the
  // hub's open frame.
  async function opened() {
    const sock = await raw();
    sock.write(Buffer.concat([amqp.header(0), amqp.open({ hostName: hub.hostName })]));
    await sock.waitFor((d) => decodeFrames(d).some((f) => f.name === 'open'), 5_000, 'the hub\'s open');
    const open = decodeFrames(sock.data).find((f) => f.name === 'open');
    assert.ok(open, `no open frame from the hub (${sock.data.length} bytes, closed: ${sock.isClosed})`);
    return { sock, open };
  }
  function deviceToken(dev, { key = dev.device.authentication.symmetricKey.primaryKey, expiry, host = hub.hostName } = {}) {
    const resource = encodeUriComponentStrict(`${host}/devices/${dev.deviceId}`);
    return sasToken({ resource, key, expiry: expiry ?? Math.floor(Date.now() / 1000) + 3600 });
  }

  // ---- protocol header and framing -----------------------------------------------------------

  it('a header with protocol id 9 (AMQP 9 1 0 0): the hub answers with a header it serves, then closes', async () => {
    const sock = await raw();
    sock.write(Buffer.from([0x41, 0x4d, 0x51, 0x50, 9, 1, 0, 0]));
    assert.ok(await sock.closedWithin(CLOSE_WITHIN_MS), 'closed');
    const header = sock.data.subarray(0, 8);
    assert.equal(header.subarray(0, 4).toString('latin1'), 'AMQP', `the hub's answer: ${sock.data.toString('hex')}`);
    assert.ok([0, 3].includes(header[4]) && header[5] === 1 && header[6] === 0 && header[7] === 0,
              `a protocol header hubd serves (AMQP 0/3 1 0 0), got ${header.toString('hex')}`);
    await afterCase();
  });

  it('a header with version 2.0.0 (AMQP 0 2 0 0): the hub answers with AMQP 1.0.0, then closes', async () => {
    const sock = await raw();
    sock.write(Buffer.from([0x41, 0x4d, 0x51, 0x50, 0, 2, 0, 0]));
    assert.ok(await sock.closedWithin(CLOSE_WITHIN_MS), 'closed');
    const header = sock.data.subarray(0, 8);
    assert.equal(header.subarray(0, 4).toString('latin1'), 'AMQP');
    assert.deepEqual([...header.subarray(5)], [1, 0, 0], 'version 1.0.0');
    await afterCase();
  });

  it('garbage after the header: close with amqp:connection:framing-error', async () => {
    const sock = await raw();
    sock.write(Buffer.concat([amqp.header(0), Buffer.alloc(64, 0xff)]));
    const { closed, frames } = await framesAtClose(sock);
    assert.ok(closed, 'closed');
    assert.equal(closeErrorOf(frames)?.condition, 'amqp:connection:framing-error', JSON.stringify(frames.map((f) => f.name)));
    await afterCase();
  });

  it('a frame announcing 16 MiB, over the max-frame-size the hub sent in open: close with amqp:connection:framing-error', async () => {
    const { sock, open } = await opened();
    const maxFrame = open.fields[2];
    assert.ok(typeof maxFrame === 'number' && maxFrame < 16 * 1024 * 1024, `the hub's max-frame-size: ${maxFrame}`);
    const h = Buffer.alloc(8);
    h.writeUInt32BE(16 * 1024 * 1024, 0);
    h[4] = 2;
    sock.write(h);
    const { closed, frames } = await framesAtClose(sock);
    assert.ok(closed, 'closed');
    assert.equal(closeErrorOf(frames)?.condition, 'amqp:connection:framing-error');
    await afterCase();
  });

  it('a frame of size 4 (less than its own header): close with amqp:connection:framing-error', async () => {
    const { sock } = await opened();
    sock.write(Buffer.from([0, 0, 0, 4, 2, 0, 0, 0]));
    const { closed, frames } = await framesAtClose(sock);
    assert.ok(closed, 'closed');
    assert.equal(closeErrorOf(frames)?.condition, 'amqp:connection:framing-error');
    await afterCase();
  });

  it('a frame with data offset 1 (less than the 8-byte header): close with amqp:connection:framing-error', async () => {
    const { sock } = await opened();
    sock.write(Buffer.from([0, 0, 0, 8, 1, 0, 0, 0]));
    const { closed, frames } = await framesAtClose(sock);
    assert.ok(closed, 'closed');
    assert.equal(closeErrorOf(frames)?.condition, 'amqp:connection:framing-error');
    await afterCase();
  });

  it('a frame cut short, then the client closes: the socket ends, hubd keeps serving', async () => {
    const { sock } = await opened();
    const begin = amqp.begin(0);
    sock.end(begin.subarray(0, begin.length - 3));
    assert.ok(await sock.closedWithin(CLOSE_WITHIN_MS), 'closed');
    await assertHubAlive(hub);
    await afterCase();
  });

  it('a performative with an unknown descriptor (0x99): the connection ends (frame_guard: amqp:decode-error), hubd keeps serving', async () => {
    // Proton 0.37 stopped reading at such a frame and left the connection open, unanswered.
    const { sock } = await opened();
    sock.write(Buffer.concat([amqp.frame(amqp.performative(0x99, [amqp.uint(1)])), amqp.begin(0)]));
    const { closed, frames } = await framesAtClose(sock);
    assert.ok(closed, 'closed');
    assert.ok(!frames.some((f) => f.name === 'begin'), 'nothing after the unknown frame is answered');
    assert.match(hub.output, /amqp:decode-error: unknown performative 0x99/);
    await assertHubAlive(hub);
    await afterCase();
  });

  it('a transfer starting a delivery with more=true and no delivery-id: the connection ends (frame_guard: amqp:invalid-field), hubd keeps serving', async () => {
    // Proton 0.37 aborted the whole process on this frame; frame_guard ends the transport before
    // Proton reads it (Proton's disconnected(): no close frame goes out).
    const { sock } = await opened();
    const dev = await fresh('transfer');
    sock.write(Buffer.concat([
      amqp.begin(0),
      amqp.attach({ name: 's', handle: 0, sender: true, source: 'x', target: `/devices/${dev.deviceId}/messages/events` }),
      amqp.transfer({ handle: 0, more: true, payload: amqp.dataSection(Buffer.from('x')) }),
    ]));
    const { closed, frames } = await framesAtClose(sock);
    assert.ok(closed, 'closed');
    assert.ok(!frames.some((f) => f.name === 'disposition'), 'nothing settled');
    assert.match(hub.output, /amqp:invalid-field: a transfer that starts a delivery must carry its delivery-id/);
    await assertHubAlive(hub);
    await afterCase();
  });

  it('a transfer whose list says 4 fields but whose size holds 13 (more=true to Proton, which reads by the size): the connection ends (frame_guard: amqp:decode-error), hubd keeps serving', async () => {
    // The second fuzz_amqp_head finding: the guard read 4 fields (no `more`), Proton read 13
    // booleans (more=true, no delivery-id) and aborted the process.
    const { sock } = await opened();
    const dev = await fresh('listsize');
    const fields = Buffer.alloc(13, 0x41);  // thirteen `true`s
    const list = Buffer.concat([Buffer.from([0xc0, fields.length + 1, 4]), fields]);
    sock.write(Buffer.concat([
      amqp.begin(0),
      amqp.attach({ name: 's', handle: 0, sender: true, source: 'x', target: `/devices/${dev.deviceId}/messages/events` }),
      amqp.frame(Buffer.concat([Buffer.from([0x00, 0x53, 0x14]), list, amqp.dataSection(Buffer.from('x'))])),
    ]));
    const { closed, frames } = await framesAtClose(sock);
    assert.ok(closed, 'closed');
    assert.ok(!frames.some((f) => f.name === 'disposition'), 'nothing settled');
    assert.match(hub.output, /amqp:decode-error: a transfer whose list size and element count disagree/);
    await assertHubAlive(hub);
    await afterCase();
  });

  it('a transfer on a link handle never attached: close with amqp:invalid-field (Proton\'s condition)', async () => {
    const { sock } = await opened();
    sock.write(amqp.begin(0));
    await sock.waitFor((d) => decodeFrames(d).some((f) => f.name === 'begin'), 5_000, "the hub's begin");
    sock.write(amqp.transfer({ handle: 7, deliveryId: 0, payload: amqp.dataSection(Buffer.from('x')) }));
    const { closed, frames } = await framesAtClose(sock);
    const err = frames.map((f) => frameError(f)).find(Boolean);
    // AMQP 1.0 §2.8.15 names amqp:session:unattached-handle; Proton 0.37 answers invalid-field.
    assert.equal(err?.condition, 'amqp:invalid-field', JSON.stringify(frames.map((f) => f.name)));
    assert.match(err.description ?? '', /handle/);
    assert.ok(closed || frames.some((f) => f.name === 'end'), 'the session or connection ended');
    sock.destroy();
    await afterCase();
  });

  // ---- SASL ----------------------------------------------------------------------------------

  it('SASL with mechanism FOO (the hub offers ANONYMOUS): sasl-outcome code 1 (auth), then closed', async () => {
    const sock = await raw();
    sock.write(amqp.header(3));
    await sock.waitFor((d) => decodeFrames(d).some((f) => f.name === 'sasl-mechanisms'), 5_000, 'sasl-mechanisms');
    const mechs = decodeFrames(sock.data).find((f) => f.name === 'sasl-mechanisms');
    assert.ok(mechs, 'sasl-mechanisms');
    sock.write(amqp.saslInit('FOO'));
    const { closed, frames } = await framesAtClose(sock);
    const outcome = frames.find((f) => f.name === 'sasl-outcome');
    assert.ok(outcome, `a sasl-outcome, got ${frames.map((f) => f.name)}`);
    assert.equal(outcome.fields[0], 1, 'sasl-outcome code 1 (auth)');
    assert.ok(closed, 'closed');
    await afterCase();
  });

  it('two sasl-init frames: closed (after the outcome Proton wants a protocol header, not a frame); hubd keeps serving', async () => {
    const sock = await raw();
    sock.write(amqp.header(3));
    await sock.waitFor((d) => decodeFrames(d).some((f) => f.name === 'sasl-mechanisms'), 5_000, 'sasl-mechanisms');
    sock.write(Buffer.concat([amqp.saslInit('ANONYMOUS'), amqp.saslInit('ANONYMOUS')]));
    assert.ok(await sock.closedWithin(CLOSE_WITHIN_MS), 'closed');
    assert.ok(!decodeFrames(sock.data).some((f) => f.name === 'open'), 'no AMQP open');
    await assertHubAlive(hub);
    await afterCase();
  });

  // ---- CBS and links (rhea) -----------------------------------------------------------------

  it('a link to a device\'s telemetry without any token: detach with amqp:unauthorized-access', async () => {
    const dev = await fresh('no-token');
    const conn = await rheaConnect(hub.hostName);
    try {
      const err = await attachSender(conn, `/devices/${dev.deviceId}/messages/events`);
      assert.equal(err?.condition, 'amqp:unauthorized-access');
    } finally {
      conn.close();
    }
    await afterCase();
  });

  it('a CBS put-token signed with a wrong key (forged): status-code 401', async () => {
    const dev = await fresh('forged');
    const conn = await rheaConnect(hub.hostName);
    try {
      const audience = `${hub.hostName}/devices/${dev.deviceId}`;
      const reply = await putToken(conn, audience, deviceToken(dev, { key: crypto.randomBytes(32).toString('base64') }));
      assert.equal(reply.status, 401, reply.description);
      const err = await attachSender(conn, `/devices/${dev.deviceId}/messages/events`);
      assert.equal(err?.condition, 'amqp:unauthorized-access', 'no link on a refused token');
    } finally {
      conn.close();
    }
    await afterCase();
  });

  it('a CBS put-token that expired a minute ago: status-code 401', async () => {
    const dev = await fresh('expired');
    const conn = await rheaConnect(hub.hostName);
    try {
      const audience = `${hub.hostName}/devices/${dev.deviceId}`;
      const reply = await putToken(conn, audience, deviceToken(dev, { expiry: Math.floor(Date.now() / 1000) - 60 }));
      assert.equal(reply.status, 401, reply.description);
    } finally {
      conn.close();
    }
    await afterCase();
  });

  it('a CBS put-token whose audience is another hub: status-code 401', async () => {
    const dev = await fresh('other-hub');
    const conn = await rheaConnect(hub.hostName);
    try {
      const other = 'other-hub.azure-devices.net';
      const reply = await putToken(conn, `${other}/devices/${dev.deviceId}`, deviceToken(dev, { host: other }));
      assert.equal(reply.status, 401, reply.description);
    } finally {
      conn.close();
    }
    await afterCase();
  });

  it("a valid token for device A, then a link to device B's telemetry: detach with amqp:unauthorized-access; A's own link works", async () => {
    const a = await fresh('a');
    const b = await fresh('b');
    const conn = await rheaConnect(hub.hostName);
    try {
      const reply = await putToken(conn, `${hub.hostName}/devices/${a.deviceId}`, deviceToken(a));
      assert.equal(reply.status, 200, reply.description);
      const err = await attachSender(conn, `/devices/${b.deviceId}/messages/events`);
      assert.equal(err?.condition, 'amqp:unauthorized-access');
      assert.equal(await attachSender(conn, `/devices/${a.deviceId}/messages/events`), null, "A's own link attaches");
    } finally {
      conn.close();
    }
    await afterCase();
  });

  it("a device token, then a link to the service's C2D sender node (/messages/devicebound): detach with amqp:unauthorized-access", async () => {
    const dev = await fresh('svc-node');
    const conn = await rheaConnect(hub.hostName);
    try {
      const reply = await putToken(conn, `${hub.hostName}/devices/${dev.deviceId}`, deviceToken(dev));
      assert.equal(reply.status, 200, reply.description);
      const err = await attachSender(conn, '/messages/devicebound');
      assert.equal(err?.condition, 'amqp:unauthorized-access');
    } finally {
      conn.close();
    }
    await afterCase();
  });

  it('AMQP over WebSockets: garbage after the header: close frame amqp:connection:framing-error inside the WebSocket, then the end', async () => {
    const ws = await openWebSocket(hub.hostName, 'AMQPWSB10');
    ws.send(Buffer.concat([amqp.header(0), Buffer.alloc(64, 0xff)]));
    assert.ok(await ws.closedWithin(CLOSE_WITHIN_MS), 'closed');
    const frames = decodeFrames(Buffer.concat(ws.received));
    assert.equal(closeErrorOf(frames)?.condition, 'amqp:connection:framing-error', JSON.stringify(frames.map((f) => f.name)));
    await afterCase();
  });

  it('300 more connections sending an unknown performative after open: RSS grows by less than 8 KiB per connection', { timeout: 60_000 }, async () => {
    const r = await repeatedCases(hub, async () => {
      const { sock } = await opened();
      sock.write(amqp.frame(amqp.performative(0x99, [amqp.uint(1)])));
      assert.ok(await sock.closedWithin(CLOSE_WITHIN_MS), 'closed');
    });
    assertBoundedPerConnection(r);
    await afterCase();
  });

  // ---- Event Hubs-compatible endpoint -----------------------------------------------------------

  it('an Event Hubs receiver with credit for everything that stops reading its socket: hubd holds back (RSS bounded), devices keep sending, and it gets every event in order once it reads', { timeout: 180_000 }, async () => {
    const EVENTS = 3000;
    const SIZE = 16 * 1024;  // 48 MB in all, far more than hubd may hold for one connection
    const RSS_GROWTH_BOUND_KIB = 16 * 1024;
    const dev = await fresh('eh-slow');
    const sender = await openClient(dev.connectionString, Mqtt, { noRetry: true });
    const conn = await rheaConnect(hub.hostName);
    try {
      // A token for the whole event hub, signed as @azure/core-amqp signs it (the key's text).
      const entity = hub.hostName.toLowerCase();
      const audience = `sb://${hub.hostName}/${entity}`;
      const key = hub.policies().find((x) => (x.name ?? x.keyName) === 'service').primaryKey;
      const expiry = Math.floor(Date.now() / 1000) + 3600;
      const sr = encodeURIComponent(audience);
      const sig = crypto.createHmac('sha256', Buffer.from(key, 'utf8')).update(`${sr}\n${expiry}`).digest('base64');
      const reply = await putToken(conn, audience, `SharedAccessSignature sr=${sr}&sig=${encodeURIComponent(sig)}&se=${expiry}&skn=service`);
      assert.equal(reply.status, 200, reply.description);

      // One receiver per partition, from the start, with credit for every event there will be.
      const got = [];
      const opened = [];
      for (let p = 0; p < 4; p++) {
        const receiver = conn.open_receiver({
          source: {
            address: `${entity}/ConsumerGroups/$Default/Partitions/${p}`,
            filter: { 'apache.org:selector-filter:string': rhea.types.wrap_described("amqp.annotation.x-opt-offset > '-1'", 0x468C00000004) },
          },
          credit_window: 0,  // credit as given below; rhea settles what it gets (as the SDK does), or
                             // its session would stop at 2,048 unsettled deliveries
        });
        receiver.on('message', (ctx) => {
          if (ctx.message.message_annotations?.['iothub-connection-device-id'] !== dev.deviceId) return;
          got.push(Buffer.from(ctx.message.body.content ?? ctx.message.body).subarray(0, 12).toString('latin1'));
        });
        opened.push(new Promise((resolve, reject) => {
          receiver.once('receiver_open', resolve);
          receiver.once('receiver_error', (ctx) => reject(new Error(`partition ${p}: ${ctx.receiver.error?.condition}`)));
        }));
        receiver.add_credit(EVENTS + 100_000);
      }
      await Promise.all(opened);
      await new Promise((r) => setTimeout(r, 500));  // the backlog of earlier cases arrives
      conn.socket.pause();  // the receiver stops reading: what hubd sends now stays with hubd or the kernel
      const rssBefore = rssKiB(hub);

      const body = (i) => Buffer.concat([Buffer.from(`event ${String(i).padStart(6, '0')}`), Buffer.alloc(SIZE - 12, 0x61)]);
      for (let i = 0; i < EVENTS; i += 16) {
        const wave = [];
        for (let j = i; j < Math.min(i + 16, EVENTS); j++) wave.push(sender.sendEvent(new Message(body(j))));
        await Promise.all(wave);
      }
      await new Promise((r) => setTimeout(r, 2_000));  // time for hubd to push all it would
      const rssPaused = rssKiB(hub);
      console.log(`hubd RSS: ${rssBefore} KiB with the receiver paused, ${rssPaused} KiB after ${EVENTS} events of ${SIZE} B for it`);
      assert.ok(rssPaused - rssBefore < RSS_GROWTH_BOUND_KIB, `RSS grew by ${rssPaused - rssBefore} KiB`);
      assert.ok(got.length < EVENTS, 'the paused receiver had not read everything');
      await afterCase();  // the canaries kept sending meanwhile

      conn.socket.resume();
      const deadline = Date.now() + 60_000;
      while (got.length < EVENTS && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.equal(got.length, EVENTS, 'every event, once the receiver reads');
      got.forEach((g, i) => assert.equal(g, `event ${String(i).padStart(6, '0')}`, `event ${i} in order`));
    } finally {
      conn.close();
      await closeQuietly(sender);
    }
    await afterCase();
  });

  suite.itStaysBounded();
});
