'use strict';
// The bad-input matrix, MQTT part (docs/bad-input.md): what no SDK sends, over raw TLS to port
// 8883, and what an SDK sends that IoT Hub refuses. Each case asserts hubd's exact answer (CONNACK
// code, SUBACK code, or a close without an answer), then that the two canaries (an Mqtt and an
// Amqp device sending all along) are still acknowledged. hubd's RSS is compared at the end.

const { describe, it, before } = require('node:test');
const assert = require('node:assert/strict');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Message, openClient, closeQuietly, within, storedEvents, eventsOf } = require('./lib/device');
const { RawMqtt, connectPacket, publishPacket, subscribePacket, packet, remainingLength, deviceCredentials } =
  require('./lib/raw_mqtt');
const { badInputSuite, assertBoundedPerConnection, assertHubAlive, repeatedCases, openWebSocket } = require('./lib/bad_input');

const CONNACK = 2;
const PUBACK = 4;
const SUBACK = 9;
const PINGRESP = 13;
// How long hubd may take to close a connection that misbehaved.
const CLOSE_WITHIN_MS = 5_000;
// hubd's RSS may grow by this much over the file (see docs/bad-input.md, "memory").

function u16(n) {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}
// An MQTT string from raw bytes (so that it may be ill-formed UTF-8).
function rawStr(bytes) {
  return Buffer.concat([u16(bytes.length), bytes]);
}
function describePacket(p) {
  if (p === 'timeout') return 'nothing (still open)';
  if (p === null) return 'a close';
  return `packet type ${p.type}`;
}

describe('bad input: MQTT', () => {
  const suite = badInputSuite({ name: 'bad-input-mqtt', prefix: 'mqtt' });
  const { afterCase, fresh } = suite;
  const pid = process.pid;
  let hub;
  let registry;
  before(() => ({ hub, registry } = suite));

  // The connection's answer: the next packet, null for a close, 'timeout' if it stays open.
  async function next(raw, ms = CLOSE_WITHIN_MS) {
    return raw.readPacket(ms).catch(() => 'timeout');
  }
  async function assertClosedWithoutAnswer(raw) {
    const p = await next(raw);
    assert.equal(p, null, `expected a close without an answer, got ${describePacket(p)}`);
  }
  function credentials(dev) {
    return deviceCredentials(hub.hostName, dev.deviceId, dev.device.authentication.symmetricKey.primaryKey);
  }
  // A raw connection past CONNACK 0.
  async function connected(name) {
    const dev = await fresh(name);
    const raw = await RawMqtt.connect(hub.hostName);
    assert.equal(await raw.handshake(credentials(dev)), 0, 'CONNACK return code');
    return { raw, dev };
  }
  async function assertNothingStored(dev) {
    const stored = eventsOf(await storedEvents(hub, { args: ['--device', dev.deviceId] }), dev.deviceId);
    assert.deepEqual(stored.map((e) => e.body), [], 'nothing stored for the device');
  }

  // ---- framing ---------------------------------------------------------------------------------

  it('a CONNECT cut short, then the client closes: no answer, hubd keeps serving', async () => {
    const dev = await fresh('cut-connect');
    const raw = await RawMqtt.connect(hub.hostName);
    const bytes = connectPacket(credentials(dev));
    raw.socket.end(bytes.subarray(0, Math.floor(bytes.length / 2)));
    assert.ok(await raw.closedWithin(CLOSE_WITHIN_MS), 'the connection ends');
    assert.equal(raw.buffer.length, 0, 'no CONNACK for half a CONNECT');
    await assertHubAlive(hub);
    await afterCase();
  });

  it('a PUBLISH cut short, then the client closes: not stored, hubd keeps serving', async () => {
    const { raw, dev } = await connected('cut-publish');
    const bytes = publishPacket({ topic: `devices/${dev.deviceId}/messages/events/`, payload: 'half', packetId: 1 });
    raw.socket.end(bytes.subarray(0, bytes.length - 2));
    assert.ok(await raw.closedWithin(CLOSE_WITHIN_MS), 'the connection ends');
    assert.equal(raw.buffer.length, 0, 'no PUBACK for half a PUBLISH');
    await assertNothingStored(dev);
    await assertHubAlive(hub);
    await afterCase();
  });

  it('a CONNECT whose remaining length takes 5 bytes: closed without CONNACK', async () => {
    const raw = await RawMqtt.connect(hub.hostName);
    raw.write(Buffer.from([0x10, 0x80, 0x80, 0x80, 0x80, 0x01]));
    await assertClosedWithoutAnswer(raw);
    await afterCase();
  });

  it('a PUBLISH announcing 200 MB (over the 512 KB packet limit): closed before the body comes', async () => {
    const { raw } = await connected('huge-length');
    raw.write(Buffer.concat([Buffer.from([0x32]), remainingLength(200 * 1024 * 1024), Buffer.from('x')]));
    await assertClosedWithoutAnswer(raw);
    await afterCase();
  });

  it('reserved packet type 0 after CONNECT: closed', async () => {
    const { raw } = await connected('type0');
    raw.write(Buffer.from([0x00, 0x00]));
    await assertClosedWithoutAnswer(raw);
    await afterCase();
  });

  it('reserved packet type 15 after CONNECT: closed', async () => {
    const { raw } = await connected('type15');
    raw.write(Buffer.from([0xf0, 0x00]));
    await assertClosedWithoutAnswer(raw);
    await afterCase();
  });

  it('a SUBSCRIBE with fixed-header flags 0 instead of 2: closed without SUBACK', async () => {
    const { raw, dev } = await connected('sub-flags');
    const sub = subscribePacket({ filters: [{ filter: `devices/${dev.deviceId}/messages/devicebound/#` }] });
    sub[0] = 0x80;
    raw.write(sub);
    await assertClosedWithoutAnswer(raw);
    await afterCase();
  });

  it('a SUBSCRIBE without any topic filter: closed without SUBACK', async () => {
    const { raw } = await connected('sub-empty');
    raw.write(packet(0x82, u16(7)));
    await assertClosedWithoutAnswer(raw);
    await afterCase();
  });

  it('a QoS 1 PUBLISH with packet id 0: closed without PUBACK, not stored', async () => {
    const { raw, dev } = await connected('pid0');
    raw.write(publishPacket({ topic: `devices/${dev.deviceId}/messages/events/`, payload: 'zero', packetId: 0 }));
    await assertClosedWithoutAnswer(raw);
    await assertNothingStored(dev);
    await afterCase();
  });

  // ---- CONNECT -------------------------------------------------------------------------------

  it('a CONNECT with protocol level 5 (MQTT 5): CONNACK 1 (unacceptable protocol version), then closed', async () => {
    const dev = await fresh('level5');
    const raw = await RawMqtt.connect(hub.hostName);
    const bytes = connectPacket(credentials(dev));
    bytes[bytes.indexOf(Buffer.from('MQTT')) + 4] = 5;   // the protocol level
    raw.write(bytes);
    const p = await next(raw);
    assert.ok(p && p.type === CONNACK, `expected CONNACK, got ${describePacket(p)}`);
    assert.equal(p.body[1], 1, 'CONNACK return code');
    assert.ok(await raw.closedWithin(CLOSE_WITHIN_MS), 'closed after the CONNACK');
    await afterCase();
  });

  it('a CONNECT with protocol name "MQTX": closed without CONNACK', async () => {
    const dev = await fresh('name');
    const raw = await RawMqtt.connect(hub.hostName);
    const bytes = connectPacket(credentials(dev));
    const at = bytes.indexOf(Buffer.from('MQTT'));
    bytes[at + 3] = 0x58;
    raw.write(bytes);
    await assertClosedWithoutAnswer(raw);
    await afterCase();
  });

  it('a CONNECT whose client id is ill-formed UTF-8: closed without CONNACK', async () => {
    const body = Buffer.concat([rawStr(Buffer.from('MQTT')), Buffer.from([4, 0x02]), u16(60),
                                rawStr(Buffer.from([0x64, 0xc3, 0x28]))]);
    const raw = await RawMqtt.connect(hub.hostName);
    raw.write(packet(0x10, body));
    await assertClosedWithoutAnswer(raw);
    await afterCase();
  });

  it('a CONNECT whose client id holds U+0000: closed without CONNACK', async () => {
    const body = Buffer.concat([rawStr(Buffer.from('MQTT')), Buffer.from([4, 0x02]), u16(60),
                                rawStr(Buffer.from('dev\u0000ice'))]);
    const raw = await RawMqtt.connect(hub.hostName);
    raw.write(packet(0x10, body));
    await assertClosedWithoutAnswer(raw);
    await afterCase();
  });

  it('a CONNECT with the reserved flag bit set: closed without CONNACK', async () => {
    const dev = await fresh('reserved-flag');
    const raw = await RawMqtt.connect(hub.hostName);
    const bytes = connectPacket(credentials(dev));
    const at = bytes.indexOf(Buffer.from('MQTT')) + 5;   // connect flags
    bytes[at] |= 0x01;
    raw.write(bytes);
    await assertClosedWithoutAnswer(raw);
    await afterCase();
  });

  it('a CONNECT with a password but no user name: closed without CONNACK', async () => {
    const dev = await fresh('pw-only');
    const raw = await RawMqtt.connect(hub.hostName);
    const bytes = connectPacket(credentials(dev));
    const at = bytes.indexOf(Buffer.from('MQTT')) + 5;
    bytes[at] &= ~0x80;   // user name flag off; the user name bytes stay and are read as the password
    raw.write(bytes);
    await assertClosedWithoutAnswer(raw);
    await afterCase();
  });

  // ---- PUBLISH and SUBSCRIBE -----------------------------------------------------------------

  it('a PUBLISH whose topic is ill-formed UTF-8: closed without PUBACK, not stored', async () => {
    const { raw, dev } = await connected('topic-utf8');
    const topic = Buffer.concat([Buffer.from(`devices/${dev.deviceId}/messages/events/a=`), Buffer.from([0xff, 0xfe])]);
    raw.write(packet(0x32, Buffer.concat([rawStr(topic), u16(1), Buffer.from('bad')])));
    await assertClosedWithoutAnswer(raw);
    await assertNothingStored(dev);
    await afterCase();
  });

  it('a PUBLISH whose topic holds U+0000: closed without PUBACK, not stored', async () => {
    const { raw, dev } = await connected('topic-nul');
    raw.write(publishPacket({ topic: `devices/${dev.deviceId}/messages/events/a=\u0000`, payload: 'nul' }));
    await assertClosedWithoutAnswer(raw);
    await assertNothingStored(dev);
    await afterCase();
  });

  it('a PUBLISH with a malformed property bag (a=%ZZ): closed without PUBACK, not stored', async () => {
    const { raw, dev } = await connected('bag');
    raw.write(publishPacket({ topic: `devices/${dev.deviceId}/messages/events/a=%ZZ`, payload: 'bag' }));
    await assertClosedWithoutAnswer(raw);
    await assertNothingStored(dev);
    await afterCase();
  });

  it('a PUBLISH to a topic devices may not use: closed without PUBACK', async () => {
    const { raw, dev } = await connected('topic-other');
    raw.write(publishPacket({ topic: `devices/${dev.deviceId}/unknown/topic`, payload: 'x' }));
    await assertClosedWithoutAnswer(raw);
    await afterCase();
  });

  it("a SUBSCRIBE to another device's cloud-to-device topic: SUBACK 0x80, the connection goes on", async () => {
    const { raw, dev } = await connected('sub-other');
    const codes = await raw.subscribe([{ filter: `devices/someone-else-${pid}/messages/devicebound/#`, qos: 1 },
                                       { filter: `devices/${dev.deviceId}/messages/devicebound/#`, qos: 1 }]);
    assert.deepEqual(codes, [0x80, 1], 'refused for the other device, granted for its own');
    raw.write(Buffer.from([0xc0, 0x00]));
    const p = await next(raw);
    assert.ok(p && p.type === PINGRESP, `expected PINGRESP, got ${describePacket(p)}`);
    raw.destroy();
    await afterCase();
  });

  it('a SUBSCRIBE whose filter is ill-formed UTF-8: closed without SUBACK', async () => {
    const { raw } = await connected('sub-utf8');
    raw.write(packet(0x82, Buffer.concat([u16(3), rawStr(Buffer.from([0x24, 0xc0, 0x80])), Buffer.from([1])])));
    await assertClosedWithoutAnswer(raw);
    await afterCase();
  });

  it('200 KB of body and 60 KB of properties (over 256 KB together): closed without PUBACK, not stored', async () => {
    // An MQTT topic holds at most 64 KB, so the property bag alone cannot pass 256 KB; IoT Hub
    // counts the properties in the message's size.
    const { raw, dev } = await connected('big-bag');
    const topic = `devices/${dev.deviceId}/messages/events/big=${'p'.repeat(60 * 1024)}`;
    raw.write(publishPacket({ topic, payload: Buffer.alloc(200 * 1024, 0x61), packetId: 2 }));
    await assertClosedWithoutAnswer(raw);
    await assertNothingStored(dev);
    await afterCase();
  });

  it('a telemetry message with 5,000 application properties (60 KB): PUBACK, stored with all of them', async () => {
    // IoT Hub bounds a message's size, not its number of properties.
    const { raw, dev } = await connected('many-props');
    const bag = Array.from({ length: 5_000 }, (_, i) => `p${i}=v`).join('&');
    raw.write(publishPacket({ topic: `devices/${dev.deviceId}/messages/events/${bag}`, payload: 'x', packetId: 3 }));
    const p = await next(raw, 15_000);
    assert.ok(p && p.type === PUBACK, `expected PUBACK, got ${describePacket(p)}`);
    const stored = eventsOf(await storedEvents(hub, { args: ['--device', dev.deviceId] }), dev.deviceId);
    assert.equal(stored.length, 1);
    assert.equal(Object.keys(stored[0].properties).length, 5_000);
    raw.destroy();
    await afterCase();
  });

  it('an SDK message of 250 KB body + 10 KB properties (the SDK checks only the body): sendEvent fails with NotConnectedError (the hub closed the connection), not stored; a new connection sends', { timeout: 60_000 }, async () => {
    // IoT Hub counts properties in the 256 KB; azure-iot-device-mqtt's own check looks at the
    // body only, so this message reaches the hub, which closes the connection.
    const dev = await fresh('sdk-oversize');
    let client = await openClient(dev.connectionString, Mqtt, { noRetry: true });
    try {
      const big = new Message(Buffer.alloc(250 * 1024, 0x61));
      big.properties.add('pad', 'p'.repeat(10 * 1024));
      let err = null;
      try {
        await within(30_000, client.sendEvent(big), 'oversize sendEvent');
      } catch (e) {
        err = e;
      }
      assert.ok(err, 'the oversize message was acknowledged');
      // IoT Hub closes an MQTT connection at an oversize message; the SDK reports the close.
      assert.equal(err.constructor.name, 'NotConnectedError', err.message);
      await closeQuietly(client);
      client = await openClient(dev.connectionString, Mqtt, { noRetry: true });
      await within(30_000, client.sendEvent(new Message('after')), 'sendEvent after');
      const stored = eventsOf(await storedEvents(hub, { args: ['--device', dev.deviceId] }), dev.deviceId);
      assert.deepEqual(stored.map((e) => e.body), ['after'], 'only the message within the limit');
    } finally {
      await closeQuietly(client);
    }
    await afterCase();
  });

  // ---- device twin over MQTT: reported-properties patches IoT Hub refuses ---------------------

  // A reported PATCH on $iothub/twin/PATCH/properties/reported/?$rid=<rid>: the answer's topic
  // ($iothub/twin/res/<status>/?$rid=<rid>) and JSON body.
  async function reportedPatch(name, body) {
    const { raw, dev } = await connected(name);
    assert.deepEqual(await raw.subscribe([{ filter: '$iothub/twin/res/#', qos: 0 }]), [0]);
    raw.write(packet(0x32, Buffer.concat([rawStr(Buffer.from('$iothub/twin/PATCH/properties/reported/?$rid=7')), u16(5),
                                          Buffer.isBuffer(body) ? body : Buffer.from(body)])));
    const got = [];
    for (let i = 0; i < 2; i++) {
      const p = await next(raw, 10_000);
      assert.ok(p && p !== 'timeout', `expected PUBACK and the twin answer, got ${describePacket(p)}`);
      got.push(p);
    }
    const answer = got.find((p) => p.type === 3);
    assert.ok(got.some((p) => p.type === PUBACK), 'PUBACK');
    assert.ok(answer, 'the twin answer');
    const topicLength = answer.body.readUInt16BE(0);
    const topic = answer.body.subarray(2, 2 + topicLength).toString();
    const json = JSON.parse(answer.body.subarray(2 + topicLength).toString() || 'null');
    raw.write(Buffer.from([0xc0, 0x00]));
    const ping = await next(raw);
    assert.ok(ping && ping.type === PINGRESP, `the connection goes on: expected PINGRESP, got ${describePacket(ping)}`);
    const twin = await registry.getTwin(dev.deviceId);
    raw.destroy();
    return { topic, json, reported: twin.responseBody.properties.reported };
  }

  for (const [what, body, code] of [
    ['broken JSON', '{"a": 1', 400006],
    ['nesting 11 levels', JSON.stringify(Array.from({ length: 11 }).reduce((inner, _, i) => ({ [`l${i}`]: inner }), { leaf: 1 })), 400004],
    ['ill-formed UTF-8', Buffer.concat([Buffer.from('{"a": "'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]), 400006],
  ]) {
    it(`a reported-properties patch with ${what}: $iothub/twin/res/400 with errorCode ${code}, reported unchanged, the connection goes on`, async () => {
      const r = await reportedPatch(`reported-${code}-${what.length}`, body);
      assert.equal(r.topic, '$iothub/twin/res/400/?$rid=7');
      assert.equal(r.json?.errorCode, code, JSON.stringify(r.json));
      assert.deepEqual(Object.keys(r.reported).filter((k) => !k.startsWith('$')), [], 'nothing reported');
      await afterCase();
    });
  }

  // ---- over WebSockets (MqttWs: wss://<host>/$iothub/websocket, subprotocol mqtt) -------------

  it('MQTT over WebSockets: reserved packet type 0 after CONNACK: the connection ends (1006: no close frame)', async () => {
    const dev = await fresh('ws-type0');
    const ws = await openWebSocket(hub.hostName, 'mqtt');
    ws.send(connectPacket(credentials(dev)));
    const deadline = Date.now() + 5_000;
    while (ws.received.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(ws.received.map((m) => m.toString('hex')), ['20020000'], 'CONNACK 0');
    ws.send(Buffer.from([0x00, 0x00]));
    assert.deepEqual(await ws.closedWithin(CLOSE_WITHIN_MS), { code: 1006 });
    await afterCase();
  });

  it('MQTT over WebSockets: a 5 MiB WebSocket message (over the 4 MiB message limit): the connection ends at its header (1009, or 1006 when the client is still writing)', async () => {
    const ws = await openWebSocket(hub.hostName, 'mqtt');
    ws.send(Buffer.alloc(5 * 1024 * 1024));
    // Beast refuses the frame by its header and sends close 1009 (message too big); the session
    // then closes the socket while the client is still writing, so the client may see the reset
    // (1006) before the close frame.
    const closed = await ws.closedWithin(CLOSE_WITHIN_MS);
    assert.ok(closed && [1009, 1006].includes(closed.code), `closed: ${JSON.stringify(closed)}`);
    await afterCase();
  });

  it('MQTT over WebSockets: a text message instead of binary: the connection ends, no CONNACK', async () => {
    const ws = await openWebSocket(hub.hostName, 'mqtt');
    ws.send('a text frame');
    assert.deepEqual(await ws.closedWithin(CLOSE_WITHIN_MS), { code: 1006 });
    assert.deepEqual(ws.received, []);
    await afterCase();
  });

  // ---- the file's memory ---------------------------------------------------------------------

  it('300 more connections with an ill-formed CONNECT: RSS grows by less than 8 KiB per connection', { timeout: 60_000 }, async () => {
    const body = Buffer.concat([rawStr(Buffer.from('MQTT')), Buffer.from([4, 0x02]), u16(60), rawStr(Buffer.from([0xc3, 0x28]))]);
    const r = await repeatedCases(hub, async () => {
      const raw = await RawMqtt.connect(hub.hostName);
      raw.write(packet(0x10, body));
      assert.ok(await raw.closedWithin(CLOSE_WITHIN_MS), 'closed');
    });
    assertBoundedPerConnection(r);
    await afterCase();
  });

  suite.itStaysBounded();
});
