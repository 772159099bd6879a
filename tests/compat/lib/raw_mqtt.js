'use strict';
// A hand-rolled MQTT 3.1.1 client over TLS for tests that must send what no SDK sends: malformed
// packets, QoS 2, oversize messages, nothing at all. Trust comes from NODE_EXTRA_CA_CERTS.

const tls = require('node:tls');
const { encodeUriComponentStrict } = require('azure-iot-common');
const { sasToken } = require('./util');

function u16(n) {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

function str(s) {
  const b = Buffer.from(s, 'utf8');
  return Buffer.concat([u16(b.length), b]);
}

// MQTT's variable-length "remaining length".
function remainingLength(n) {
  const out = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return Buffer.from(out);
}

function packet(firstByte, body) {
  return Buffer.concat([Buffer.from([firstByte]), remainingLength(body.length), body]);
}

// will: {topic, payload, qos = 0, retain = false}, optional.
function connectPacket({ clientId, username, password, keepAlive = 60, cleanSession = false, will }) {
  let flags = cleanSession ? 0x02 : 0;
  if (username !== undefined) flags |= 0x80;
  if (password !== undefined) flags |= 0x40;
  if (will) flags |= 0x04 | ((will.qos ?? 0) << 3) | (will.retain ? 0x20 : 0);
  const parts = [str('MQTT'), Buffer.from([4, flags]), u16(keepAlive), str(clientId)];
  if (will) {
    const payload = Buffer.from(will.payload ?? '');
    parts.push(str(will.topic), u16(payload.length), payload);
  }
  if (username !== undefined) parts.push(str(username));
  if (password !== undefined) parts.push(str(password));
  return packet(0x10, Buffer.concat(parts));
}

function publishPacket({ topic, payload = Buffer.alloc(0), qos = 1, packetId = 1 }) {
  const parts = [str(topic)];
  if (qos > 0) parts.push(u16(packetId));
  parts.push(Buffer.isBuffer(payload) ? payload : Buffer.from(payload));
  return packet(0x30 | (qos << 1), Buffer.concat(parts));
}

// SUBSCRIBE: filters [{filter, qos}].
function subscribePacket({ packetId = 1, filters }) {
  const parts = [u16(packetId)];
  for (const { filter, qos = 1 } of filters) parts.push(str(filter), Buffer.from([qos]));
  return packet(0x82, Buffer.concat(parts));
}

// CONNECT fields of a SAS device, as the SDK builds them (device.md §2.1).
function deviceCredentials(hostName, deviceId, key) {
  const resource = encodeUriComponentStrict(`${hostName}/devices/${deviceId}`);
  return {
    clientId: deviceId,
    username: `${hostName}/${deviceId}/?api-version=2021-04-12`,
    password: sasToken({ resource, key, expiry: Math.floor(Date.now() / 1000) + 3600 }),
  };
}

class RawMqtt {
  constructor(socket) {
    this.socket = socket;
    this.buffer = Buffer.alloc(0);
    this.waiters = [];
    this.openedAt = Date.now();
    this.closedAt = null;
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.closedAt = Date.now();
        resolve(this.closedAt);
        for (const w of this.waiters.splice(0)) w();
      });
    });
    socket.on('data', (chunk) => {
      this.buffer = Buffer.concat([this.buffer, chunk]);
      for (const w of this.waiters.splice(0)) w();
    });
    socket.on('error', () => {});   // a reset by the hub is an expected outcome here
  }

  // A TLS connection to the hub's MQTT port; resolves once the handshake is done.
  static connect(hostName, { port = 8883, timeoutMs = 10_000 } = {}) {
    return new Promise((resolve, reject) => {
      const socket = tls.connect({ host: hostName, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new Error(`TLS handshake with ${hostName}:${port} not done within ${timeoutMs} ms`));
      }, timeoutMs);
      socket.once('secureConnect', () => {
        clearTimeout(timer);
        resolve(new RawMqtt(socket));
      });
      socket.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  get isClosed() {
    return this.closedAt !== null;
  }

  write(bytes) {
    if (!this.isClosed) this.socket.write(bytes);
  }

  // The next whole packet {type, flags, body} or null when the connection closes first; throws
  // after timeoutMs.
  async readPacket(timeoutMs = 10_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const p = this._take();
      if (p) return p;
      if (this.isClosed) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no MQTT packet from the hub within ${timeoutMs} ms`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  _take() {
    if (this.buffer.length < 2) return null;
    let len = 0;
    let mult = 1;
    let i = 1;
    for (;; i++) {
      if (i >= this.buffer.length) return null;
      len += (this.buffer[i] & 0x7f) * mult;
      if ((this.buffer[i] & 0x80) === 0) break;
      mult *= 128;
    }
    const start = i + 1;
    if (this.buffer.length < start + len) return null;
    const p = { type: this.buffer[0] >> 4, flags: this.buffer[0] & 0x0f, body: this.buffer.subarray(start, start + len) };
    this.buffer = this.buffer.subarray(start + len);
    return p;
  }

  // CONNECT, then the CONNACK's return code (or null when the hub closed instead). The session
  // present flag of the last CONNACK is kept in this.sessionPresent.
  async handshake(fields) {
    this.write(connectPacket(fields));
    const p = await this.readPacket();
    if (!p) return null;
    if (p.type !== 2) throw new Error(`expected CONNACK, got packet type ${p.type}`);
    this.sessionPresent = (p.body[0] & 0x01) === 1;
    return p.body[1];
  }

  // SUBSCRIBE, then the SUBACK's return codes.
  async subscribe(filters, packetId = 1) {
    this.write(subscribePacket({ packetId, filters }));
    const p = await this.readPacket();
    if (!p || p.type !== 9) throw new Error(`expected SUBACK, got ${p ? `packet type ${p.type}` : 'a closed connection'}`);
    return [...p.body.subarray(2)];
  }

  // Resolves to true if the hub closes the connection within ms.
  async closedWithin(ms) {
    let timer;
    const timeout = new Promise((resolve) => { timer = setTimeout(() => resolve(false), ms); });
    const closed = this.closed.then(() => true);
    const result = await Promise.race([closed, timeout]);
    clearTimeout(timer);
    return result;
  }

  destroy() {
    this.socket.destroy();
  }
}

module.exports = { RawMqtt, connectPacket, publishPacket, subscribePacket, packet, remainingLength, deviceCredentials };
