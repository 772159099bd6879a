'use strict';
// The bad-input matrix, credentials part (docs/bad-input.md): tokens and certificates that must
// not let anyone in, across MQTT, AMQP and HTTPS, where the existing auth tests (mqtt_auth,
// amqp_telemetry, http_device, registry) do not already pin the case. Each case asserts the exact
// refusal (CONNACK code, CBS / SDK error class, HTTP status + iothub-errorcode), then that the
// canaries (an Mqtt and an Amqp device sending all along) are still acknowledged.

const { describe, it, before } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const https = require('node:https');
const { Registry } = require('azure-iothub');
const { Mqtt } = require('azure-iot-device-mqtt');
const { Amqp } = require('azure-iot-device-amqp');
const { encodeUriComponentStrict } = require('azure-iot-common');
const { hubctl } = require('./lib/hub');
const {
  Message, createModule, makeClient, openClient, closeQuietly, within, selfSignedCert, rootCa, signedCert,
  sha1Thumbprint,
} = require('./lib/device');
const { RawMqtt, deviceCredentials } = require('./lib/raw_mqtt');
const { sasToken, request, errors, rejectsWith, API } = require('./lib/util');
const { badInputSuite, assertHubAlive, expiredCert } = require('./lib/bad_input');

const CONNACK_NOT_AUTHORIZED = 5;

function deviceToken(host, deviceId, key, expiry = Math.floor(Date.now() / 1000) + 3600) {
  return sasToken({ resource: encodeUriComponentStrict(`${host}/devices/${deviceId}`), key, expiry });
}

function assertIotHubError(res, status, code) {
  assert.equal(res.status, status, res.body);
  assert.equal(res.headers['iothub-errorcode'], code, `iothub-errorcode (${res.body})`);
  assert.match(res.json?.Message ?? '', new RegExp(`^ErrorCode:${code};`));
}

// open() of a device client fails; resolves to the error.
async function openFails(connectionString, Transport, options = {}) {
  const client = await makeClient(connectionString, Transport, { noRetry: true, ...options });
  try {
    await within(30_000, client.open(), 'open()');
  } catch (err) {
    return err;
  } finally {
    await closeQuietly(client);
  }
  assert.fail('open() succeeded, the hub should have refused the client');
}

// An HTTPS request with a client certificate.
function requestWithCert({ host, method, path: p, body, cert, key }) {
  return new Promise((resolve, reject) => {
    const payload = Buffer.from(body ?? '');
    const req = https.request({ host, port: 443, method, path: p, cert, key, headers: { 'Content-Length': payload.length } }, (res) => {
      const parts = [];
      res.on('data', (c) => parts.push(c));
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        let json;
        try { json = JSON.parse(text); } catch { json = undefined; }
        resolve({ status: res.statusCode, headers: res.headers, body: text, json });
      });
    });
    req.on('error', reject);
    req.end(payload);
  });
}

describe('bad input: credentials', () => {
  let tmp;
  const suite = badInputSuite({
    name: 'bad-input-auth', prefix: 'auth',
    cleanup: () => { if (tmp) fs.rmSync(tmp, { recursive: true, force: true }); },
  });
  const { afterCase, fresh } = suite;
  const pid = process.pid;
  let hub;
  let registry;
  before(() => {
    ({ hub, registry } = suite);
    tmp = fs.mkdtempSync(path.join(process.env.HUBD_TEST_TMP ?? os.tmpdir(), 'bad-auth-'));
  });

  const keyOf = (dev) => dev.device.authentication.symmetricKey.primaryKey;
  async function connackFor(fields) {
    const raw = await RawMqtt.connect(hub.hostName);
    try {
      return await raw.handshake(fields);
    } finally {
      raw.destroy();
    }
  }
  function telemetry(deviceId, token) {
    return request({ host: hub.hostName, method: 'POST', path: `/devices/${encodeURIComponent(deviceId)}/messages/events?${API}`,
                     body: 'x', headers: { Authorization: token, 'Content-Type': 'application/octet-stream' } });
  }
  function policyRegistry(policy) {
    return Registry.fromConnectionString(hub.policyConnectionString(policy));
  }

  // ---- SAS tokens ----------------------------------------------------------------------------

  it('MQTT: a token whose audience is another hub: CONNACK 5 (not authorized)', async () => {
    const dev = await fresh('mqtt-hub');
    const fields = deviceCredentials(hub.hostName, dev.deviceId, keyOf(dev));
    fields.password = deviceToken('other-hub.azure-devices.net', dev.deviceId, keyOf(dev));
    assert.equal(await connackFor(fields), CONNACK_NOT_AUTHORIZED);
    await afterCase();
  });

  it('MQTT: a password that is not a SAS token: CONNACK 5 (not authorized)', async () => {
    const dev = await fresh('mqtt-garbled');
    const fields = deviceCredentials(hub.hostName, dev.deviceId, keyOf(dev));
    fields.password = 'SharedAccessSignature sr=&sig=&se=notanumber';
    assert.equal(await connackFor(fields), CONNACK_NOT_AUTHORIZED);
    await afterCase();
  });

  it("MQTT: a module's token to connect as its parent device: CONNACK 5 (not authorized)", async () => {
    const dev = await fresh('mqtt-module');
    const mod = await createModule(hub, registry, dev.deviceId, 'm1');
    const modKey = mod.module.authentication.symmetricKey.primaryKey;
    const fields = deviceCredentials(hub.hostName, dev.deviceId, keyOf(dev));
    fields.password = sasToken({ resource: encodeUriComponentStrict(`${hub.hostName}/devices/${dev.deviceId}/modules/m1`),
                                 key: modKey, expiry: Math.floor(Date.now() / 1000) + 3600 });
    assert.equal(await connackFor(fields), CONNACK_NOT_AUTHORIZED);
    await afterCase();
  });

  it("MQTT: a deleted device's unexpired token: CONNACK 5 (not authorized)", async () => {
    const dev = await fresh('mqtt-deleted');
    const fields = deviceCredentials(hub.hostName, dev.deviceId, keyOf(dev));
    assert.equal(await connackFor(fields), 0, 'connects before the delete');
    await registry.delete(dev.deviceId);
    assert.equal(await connackFor(fields), CONNACK_NOT_AUTHORIZED);
    await afterCase();
  });

  it('AMQP: a disabled device: open() fails with UnauthorizedError', async () => {
    const dev = await fresh('amqp-disabled');
    await registry.update({ deviceId: dev.deviceId, status: 'disabled' });
    const err = await openFails(dev.connectionString, Amqp);
    assert.equal(err.constructor.name, 'UnauthorizedError', `${err.constructor.name}: ${err.message}`);
    await afterCase();
  });

  it('AMQP: a deleted device: open() fails with UnauthorizedError', async () => {
    const dev = await fresh('amqp-deleted');
    await registry.delete(dev.deviceId);
    const err = await openFails(dev.connectionString, Amqp);
    assert.equal(err.constructor.name, 'UnauthorizedError', `${err.constructor.name}: ${err.message}`);
    await afterCase();
  });

  it('HTTPS device API: an expired token: 401 IotHubUnauthorizedAccess', async () => {
    const dev = await fresh('http-expired');
    const res = await telemetry(dev.deviceId, deviceToken(hub.hostName, dev.deviceId, keyOf(dev), Math.floor(Date.now() / 1000) - 60));
    assertIotHubError(res, 401, 'IotHubUnauthorizedAccess');
    await afterCase();
  });

  it('HTTPS device API: a token whose audience is another hub: 401 IotHubUnauthorizedAccess', async () => {
    const dev = await fresh('http-hub');
    const res = await telemetry(dev.deviceId, deviceToken('other-hub.azure-devices.net', dev.deviceId, keyOf(dev)));
    assertIotHubError(res, 401, 'IotHubUnauthorizedAccess');
    await afterCase();
  });

  it('HTTPS device API: a disabled device: 404 DeviceNotFound (as IoT Hub)', async () => {
    const dev = await fresh('http-disabled');
    await registry.update({ deviceId: dev.deviceId, status: 'disabled' });
    const res = await telemetry(dev.deviceId, deviceToken(hub.hostName, dev.deviceId, keyOf(dev)));
    assertIotHubError(res, 404, 'DeviceNotFound');
    await afterCase();
  });

  it('HTTPS device API: a deleted device: 404 DeviceNotFound', async () => {
    const dev = await fresh('http-deleted');
    await registry.delete(dev.deviceId);
    const res = await telemetry(dev.deviceId, deviceToken(hub.hostName, dev.deviceId, keyOf(dev)));
    assertIotHubError(res, 404, 'DeviceNotFound');
    await afterCase();
  });

  // ---- service API permissions ---------------------------------------------------------------

  it("HTTPS service API: a device's SAS token on GET /devices/{id}: 401 IotHubUnauthorizedAccess", async () => {
    const dev = await fresh('svc-device-token');
    const res = await request({ host: hub.hostName, method: 'GET', path: `/devices/${dev.deviceId}?${API}`,
                                headers: { Authorization: deviceToken(hub.hostName, dev.deviceId, keyOf(dev)) } });
    assertIotHubError(res, 401, 'IotHubUnauthorizedAccess');
    await afterCase();
  });

  it('HTTPS service API: policy registryRead creating a device: UnauthorizedError 401', async () => {
    await rejectsWith(policyRegistry('registryRead').create({ deviceId: `bad-auth-rr-${pid}` }), errors.UnauthorizedError,
                      { status: 401, code: 'IotHubUnauthorizedAccess' });
    await afterCase();
  });

  it('HTTPS service API: policy service (ServiceConnect) creating a device: UnauthorizedError 401', async () => {
    await rejectsWith(policyRegistry('service').create({ deviceId: `bad-auth-svc-${pid}` }), errors.UnauthorizedError,
                      { status: 401, code: 'IotHubUnauthorizedAccess' });
    await afterCase();
  });

  it('HTTPS service API: policy device (DeviceConnect) reading a device: UnauthorizedError 401', async () => {
    const dev = await fresh('dc');
    await rejectsWith(policyRegistry('device').get(dev.deviceId), errors.UnauthorizedError,
                      { status: 401, code: 'IotHubUnauthorizedAccess' });
    await afterCase();
  });

  it('HTTPS service API: policy registryReadWrite invoking a direct method (needs ServiceConnect): 401', async () => {
    const dev = await fresh('rrw-method');
    const p = hub.policies().find((x) => (x.name ?? x.keyName) === 'registryReadWrite');
    const token = sasToken({ resource: hub.hostName, keyName: 'registryReadWrite', key: p.primaryKey,
                             expiry: Math.floor(Date.now() / 1000) + 3600 });
    const res = await request({ host: hub.hostName, method: 'POST', path: `/twins/${dev.deviceId}/methods?${API}`,
                                body: { methodName: 'm', responseTimeoutInSeconds: 5, payload: null }, headers: { Authorization: token } });
    assertIotHubError(res, 401, 'IotHubUnauthorizedAccess');
    await afterCase();
  });

  // ---- X.509 ---------------------------------------------------------------------------------

  it('MQTT: a self-signed device presenting its registered certificate after it expired: refused (UnauthorizedError, CONNACK 5)', { timeout: 60_000 }, async () => {
    const deviceId = `bad-auth-x509-expired-${pid}`;
    const old = expiredCert(tmp, deviceId);
    const tp = sha1Thumbprint(old.cert);
    await registry.create({ deviceId, authentication: { x509Thumbprint: { primaryThumbprint: tp, secondaryThumbprint: tp } } });
    const err = await openFails(`HostName=${hub.hostName};DeviceId=${deviceId};x509=true`, Mqtt, { cert: old.cert, key: old.key });
    assert.equal(err.constructor.name, 'UnauthorizedError', err.message);
    assert.match(err.message, /Connection refused: Not authorized/);
    await afterCase();
  });

  it('MQTT: a CA-signed device whose certificate expired: refused (UnauthorizedError, CONNACK 5)', { timeout: 60_000 }, async () => {
    const deviceId = `bad-auth-ca-expired-${pid}`;
    const ca = rootCa(tmp, `Bad Input Root A ${pid}`);
    const upload = await hubctl(hub, 'ca', 'upload', `bad-root-a-${pid}`, ca.certFile, '--verified');
    assert.equal(upload.code, 0, upload.stderr);
    await registry.create({ deviceId, authentication: { type: 'certificateAuthority' } });
    const leaf = expiredCert(tmp, deviceId, ca);
    const err = await openFails(`HostName=${hub.hostName};DeviceId=${deviceId};x509=true`, Mqtt, { cert: leaf.cert, key: leaf.key });
    assert.equal(err.constructor.name, 'UnauthorizedError', err.message);
    assert.match(err.message, /Connection refused: Not authorized/);
    await afterCase();
  });

  for (const [name, Transport] of [['MQTT', Mqtt], ['AMQP', Amqp]]) {
    it(`${name}: a CA-signed device after its CA was deleted from the hub (revoked): refused with UnauthorizedError (MQTT at open, AMQP at the telemetry link); it connected before`, { timeout: 60_000 }, async () => {
      const deviceId = `bad-auth-revoked-${name.toLowerCase()}-${pid}`;
      const caName = `bad-root-${name.toLowerCase()}-${pid}`;
      const ca = rootCa(tmp, `Bad Input Root ${name} ${pid}`);
      const upload = await hubctl(hub, 'ca', 'upload', caName, ca.certFile, '--verified');
      assert.equal(upload.code, 0, upload.stderr);
      await registry.create({ deviceId, authentication: { type: 'certificateAuthority' } });
      const leaf = signedCert(tmp, ca, deviceId);
      const cs = `HostName=${hub.hostName};DeviceId=${deviceId};x509=true`;
      const ok = await openClient(cs, Transport, { noRetry: true, cert: leaf.cert, key: leaf.key });
      await within(20_000, ok.sendEvent(new Message('before')), 'sendEvent before the CA is deleted');
      await closeQuietly(ok);
      const del = await hubctl(hub, 'ca', 'delete', caName);
      assert.equal(del.code, 0, del.stderr);
      let err;
      if (Transport === Mqtt) {
        err = await openFails(cs, Transport, { cert: leaf.cert, key: leaf.key });
      } else {
        // Over AMQP an X.509 device authenticates when its first link attaches (no CBS): open()
        // succeeds and the telemetry link is refused.
        const client = await makeClient(cs, Transport, { noRetry: true, cert: leaf.cert, key: leaf.key });
        try {
          await client.open().catch(() => {});
          err = await within(30_000, client.sendEvent(new Message('after')), 'sendEvent after the CA is deleted').then(
            () => assert.fail('sendEvent succeeded after the CA was deleted'), (e) => e);
        } finally {
          await closeQuietly(client);
        }
      }
      assert.equal(err.constructor.name, 'UnauthorizedError', `${err.constructor.name}: ${err.message}`);
      await afterCase();
    });
  }

  it('HTTPS device API: a self-signed device presenting another certificate: 401 IotHubUnauthorizedAccess', { timeout: 60_000 }, async () => {
    const deviceId = `bad-auth-http-x509-${pid}`;
    const registered = selfSignedCert(tmp, deviceId);
    const other = selfSignedCert(tmp, `${deviceId}-other`);
    const tp = sha1Thumbprint(registered.cert);
    await registry.create({ deviceId, authentication: { x509Thumbprint: { primaryThumbprint: tp, secondaryThumbprint: tp } } });
    const p = `/devices/${deviceId}/messages/events?${API}`;
    const refused = await requestWithCert({ host: hub.hostName, method: 'POST', path: p, body: 'x', cert: other.cert, key: other.key });
    assertIotHubError(refused, 401, 'IotHubUnauthorizedAccess');
    const accepted = await requestWithCert({ host: hub.hostName, method: 'POST', path: p, body: 'x', cert: registered.cert, key: registered.key });
    assert.equal(accepted.status, 204, accepted.body);
    await afterCase();
  });

  suite.itStaysBounded();
});
