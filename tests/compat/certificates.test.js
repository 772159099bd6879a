'use strict';
// The X.509 CA certificates API against a real hubd, through plain HTTPS signed with the
// iothubowner SAS (the Node service SDK has no certificates API: on IoT Hub it is an ARM API).
// Certificates are made with the openssl command, exactly as docs/x509.md tells users to.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { Registry } = require('azure-iothub');
const { Mqtt } = require('azure-iot-device-mqtt');
const { startHub, hubctl } = require('./lib/hub');
const { makeClient, openClient, closeQuietly, within } = require('./lib/device');
const { ownerToken, sasToken, parseConnectionString, request, API } = require('./lib/util');

// ---- openssl, as in docs/x509.md ------------------------------------------------------------
const CA_EXT = 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n' +
               'subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n';
const DEVICE_EXT = 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' +
                   'subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n';

class Pki {
  constructor() {
    this.dir = fs.mkdtempSync(path.join(process.env.HUBD_TEST_TMP ?? os.tmpdir(), 'hubd-pki-'));
    fs.writeFileSync(this.file('ca.ext'), CA_EXT);
    fs.writeFileSync(this.file('device.ext'), DEVICE_EXT);
  }

  file(name) { return path.join(this.dir, name); }
  read(name) { return fs.readFileSync(this.file(name), 'utf8'); }
  openssl(...args) { return execFileSync('openssl', args, { cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] }).toString(); }

  // A self-signed root CA: name.key, name.pem.
  root(name, cn) {
    this.openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
                 '-keyout', `${name}.key`, '-out', `${name}.pem`, '-days', '3650', '-subj', `/CN=${cn}`,
                 '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    return this.read(`${name}.pem`);
  }

  // A certificate for a new key, signed by `issuer` (name.key + name.pem): name.key, name.pem.
  issue(name, cn, issuer, ext) {
    this.openssl('req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
                 '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
    const args = ['x509', '-req', '-in', `${name}.csr`, '-CA', `${issuer}.pem`, '-CAkey', `${issuer}.key`,
                  '-CAcreateserial', '-out', `${name}.pem`, '-days', '30'];
    if (ext) args.push('-extfile', ext);
    this.openssl(...args);
    return this.read(`${name}.pem`);
  }

  dispose() { fs.rmSync(this.dir, { recursive: true, force: true }); }
}

function sha1Thumbprint(pem) {
  return new crypto.X509Certificate(pem).fingerprint.replace(/:/g, '').toUpperCase();
}

describe('certificates API', () => {
  let hub;
  let pki;
  let auth;
  const call = (method, name, { body, etag, suffix = '', token } = {}) => {
    const headers = { Authorization: token ?? auth };
    if (etag !== undefined) headers['If-Match'] = `"${etag}"`;
    const where = name === undefined ? '/certificates' : `/certificates/${encodeURIComponent(name)}${suffix}`;
    return request({ host: hub.hostName, method, path: `${where}?${API}`, headers, body });
  };
  const expectError = (res, status, code, text) => {
    assert.equal(res.status, status, res.body);
    assert.equal(res.headers['iothub-errorcode'], code, res.body);
    if (text) assert.match(res.json.Message, text);
  };

  before(async () => {
    hub = await startHub({ name: 'certificates' });
    auth = ownerToken(hub.connectionString);
    pki = new Pki();
    pki.root('root', 'hubd compat root');
    pki.root('other', 'hubd compat root');   // same name, another key
    pki.issue('inter', 'hubd compat intermediate', 'root', 'ca.ext');
  });
  after(async () => {
    if (hub) await hub.dispose();
    if (pki) pki.dispose();
  });

  it('uploads a root CA: CertificateDescription, unverified', async () => {
    const res = await call('PUT', 'root', { body: { properties: { certificate: pki.read('root.pem'), isVerified: false } } });
    assert.equal(res.status, 201, res.body);
    const c = res.json;
    assert.equal(c.name, 'root');
    assert.equal(c.type, 'Microsoft.Devices/IotHubs/Certificates');
    assert.match(c.id, /\/certificates\/root$/);
    assert.equal(res.headers.etag, `"${c.etag}"`);
    assert.equal(c.properties.subject, 'CN=hubd compat root');
    assert.equal(c.properties.thumbprint, sha1Thumbprint(pki.read('root.pem')));
    assert.equal(c.properties.isVerified, false);
    assert.equal(c.properties.certificate.trim(), pki.read('root.pem').trim());
    // RFC 1123 dates, as the Certificates API writes them.
    assert.match(c.properties.expiry, /^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/);
    assert.equal(new Date(c.properties.expiry).getTime(), new Date(new crypto.X509Certificate(pki.read('root.pem')).validTo).getTime());
    assert.ok(Math.abs(new Date(c.properties.created).getTime() - Date.now()) < 60_000);
  });

  it('refuses a device certificate, a private key and a second upload without If-Match', async () => {
    pki.issue('leaf', 'leaf-device', 'root', 'device.ext');
    expectError(await call('PUT', 'leaf', { body: { properties: { certificate: pki.read('leaf.pem') } } }),
                400, 'ArgumentInvalid', /CA:TRUE/);
    expectError(await call('PUT', 'withkey', { body: { properties: { certificate: pki.read('root.pem') + pki.read('root.key') } } }),
                400, 'ArgumentInvalid', /private key/);
    expectError(await call('PUT', 'root', { body: { properties: { certificate: pki.read('root.pem') } } }),
                412, 'PreconditionFailed', /If-Match/);
  });

  it('proof of possession: the verification code as CN, signed by the CA key', async () => {
    const current = await call('GET', 'root');
    assert.equal(current.status, 200, current.body);
    expectError(await call('POST', 'root', { suffix: '/generateVerificationCode' }), 400, 'ArgumentNull', /If-Match/);

    const gen = await call('POST', 'root', { suffix: '/generateVerificationCode', etag: current.json.etag });
    assert.equal(gen.status, 200, gen.body);
    const code = gen.json.properties.verificationCode;
    assert.match(code, /^[0-9A-F]{48}$/);
    assert.notEqual(gen.json.etag, current.json.etag);
    const etag = gen.json.etag;

    // Bad proofs: the wrong CN, and the right CN from another CA with the same name.
    pki.issue('wrongcn', 'not-the-code', 'root');
    expectError(await call('POST', 'root', { suffix: '/verify', etag, body: { certificate: pki.read('wrongcn.pem') } }),
                400, 'ArgumentInvalid', /^ErrorCode:ArgumentInvalid;Proof-Of-Possession failed\./);
    pki.issue('forged', code, 'other');
    expectError(await call('POST', 'root', { suffix: '/verify', etag, body: { certificate: pki.read('forged.pem') } }),
                400, 'ArgumentInvalid', /cannot be found in the certificate chain/);
    assert.equal((await call('GET', 'root')).json.properties.isVerified, false);

    // The good proof.
    pki.issue('verify', code, 'root');
    const ok = await call('POST', 'root', { suffix: '/verify', etag, body: { certificate: pki.read('verify.pem') } });
    assert.equal(ok.status, 200, ok.body);
    assert.equal(ok.json.properties.isVerified, true);
    assert.equal((await call('GET', 'root')).json.properties.isVerified, true);
  });

  it('uploads an intermediate verified on upload, as base64 DER', async () => {
    const der = pki.openssl('x509', '-in', 'inter.pem', '-outform', 'DER', '-out', 'inter.der');
    assert.equal(der, '');
    const b64 = fs.readFileSync(pki.file('inter.der')).toString('base64');
    const res = await call('PUT', 'inter', { body: { properties: { certificate: b64, isVerified: true } } });
    assert.equal(res.status, 201, res.body);
    assert.equal(res.json.properties.isVerified, true);
    assert.equal(res.json.properties.subject, 'CN=hubd compat intermediate');
  });

  it('lists the certificates in {"value":[...]}', async () => {
    const res = await call('GET');
    assert.equal(res.status, 200, res.body);
    assert.deepEqual(res.json.value.map((c) => c.name), ['inter', 'root']);
    assert.deepEqual(res.json.value.map((c) => c.properties.isVerified), [true, true]);
  });

  it('reads need RegistryRead, changes RegistryWrite', async () => {
    const cs = parseConnectionString(hub.policyConnectionString('registryRead'));
    const reader = sasToken({ resource: cs.HostName, keyName: cs.SharedAccessKeyName, key: cs.SharedAccessKey,
                              expiry: Math.ceil(Date.now() / 1000) + 3600 });
    assert.equal((await call('GET', undefined, { token: reader })).status, 200);
    expectError(await call('PUT', 'other', { token: reader, body: { properties: { certificate: pki.read('other.pem') } } }),
                401, 'IotHubUnauthorizedAccess');
    const svc = parseConnectionString(hub.policyConnectionString('service'));
    const service = sasToken({ resource: svc.HostName, keyName: svc.SharedAccessKeyName, key: svc.SharedAccessKey,
                               expiry: Math.ceil(Date.now() / 1000) + 3600 });
    expectError(await call('GET', undefined, { token: service }), 401, 'IotHubUnauthorizedAccess');
  });

  it('deletes with If-Match; then the certificate is gone', async () => {
    const current = await call('GET', 'inter');
    expectError(await call('DELETE', 'inter', { etag: 'AAAAAAAAAAA=' }), 412, 'PreconditionFailed');
    const del = await call('DELETE', 'inter', { etag: current.json.etag });
    assert.equal(del.status, 204, del.body);
    expectError(await call('GET', 'inter'), 404, 'NotFound', /Certificate 'inter' not found/);
    // IoT Hub's API: deleting a certificate that does not exist does nothing.
    assert.equal((await call('DELETE', 'inter', { etag: current.json.etag })).status, 204);
  });

  it('survives a restart', async () => {
    await hub.restart();
    const res = await call('GET', 'root');
    assert.equal(res.status, 200, res.body);
    assert.equal(res.json.properties.isVerified, true);
  });

  describe('hubctl ca', () => {
    const ok = async (...args) => {
      const res = await hubctl(hub, ...args);
      assert.equal(res.code, 0, `hubctl ${args.join(' ')} exited ${res.code}\nstdout: ${res.stdout}\nstderr: ${res.stderr}`);
      return res.stdout.trim();
    };

    it('upload, verification-code, verify, show, list, delete', async () => {
      pki.root('cli', 'hubd cli root');
      const uploaded = JSON.parse(await ok('ca', 'upload', 'cli-root', pki.file('cli.pem')));
      assert.equal(uploaded.properties.isVerified, false);
      const code = await ok('ca', 'verification-code', 'cli-root');
      assert.match(code, /^[0-9A-F]{48}$/);
      pki.issue('cli-proof', code, 'cli');
      const verified = JSON.parse(await ok('ca', 'verify', 'cli-root', pki.file('cli-proof.pem')));
      assert.equal(verified.properties.isVerified, true);
      const shown = JSON.parse(await ok('ca', 'show', 'cli-root'));
      assert.equal(shown.etag, verified.etag);
      const listed = JSON.parse(await ok('ca', 'list'));
      assert.ok(listed.value.some((c) => c.name === 'cli-root'));
      await ok('ca', 'delete', 'cli-root');
      const gone = await hubctl(hub, 'ca', 'show', 'cli-root');
      assert.notEqual(gone.code, 0);
      assert.match(gone.stderr, /NotFound/);
    });

    it('upload --verified takes a DER file; a wrong proof fails with the reason', async () => {
      pki.root('cli2', 'hubd cli root 2');
      pki.openssl('x509', '-in', 'cli2.pem', '-outform', 'DER', '-out', 'cli2.cer');
      const up = JSON.parse(await ok('ca', 'upload', 'cli2', pki.file('cli2.cer'), '--verified'));
      assert.equal(up.properties.isVerified, true);
      const again = await hubctl(hub, 'ca', 'upload', 'cli2', pki.file('cli2.pem'));
      assert.notEqual(again.code, 0);
      assert.match(again.stderr, /PreconditionFailed/);
      const replaced = JSON.parse(await ok('ca', 'upload', 'cli2', pki.file('cli2.pem'), '--replace'));
      assert.equal(replaced.properties.isVerified, false, 'a replaced certificate needs a new proof');
      await ok('ca', 'verification-code', 'cli2');
      pki.issue('cli2-bad', 'WRONG', 'cli2');
      const bad = await hubctl(hub, 'ca', 'verify', 'cli2', pki.file('cli2-bad.pem'));
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /ArgumentInvalid: Proof-Of-Possession failed/);
    });
  });

  it('hubctl creates certificateAuthority devices, as the SDK sees them', async () => {
    const res = await hubctl(hub, 'device', 'create', 'cam-1', '--auth', 'certificateAuthority');
    assert.equal(res.code, 0, res.stderr);
    const { responseBody: d } = await Registry.fromConnectionString(hub.connectionString).get('cam-1');
    assert.equal(d.authentication.type, 'certificateAuthority');
  });

  // The whole path: TLS client certificate -> MQTT head -> certificates::service::authenticate_device.
  describe('CA-signed devices over MQTT (device SDK)', () => {
    // open() fails with UnauthorizedError from a CONNACK refusal (see mqtt_auth.test.js).
    const assertRefused = async (cs, cert, key) => {
      const client = await makeClient(cs, Mqtt, { noRetry: true, cert, key });
      let err = null;
      try {
        await within(30_000, client.open(), 'open()');
      } catch (e) {
        err = e;
      } finally {
        await closeQuietly(client);
      }
      assert.ok(err, 'open() succeeded but the hub should have refused the connection');
      assert.equal(err.constructor.name, 'UnauthorizedError', `${err.constructor.name}: ${err.message}`);
    };
    const cs = (id) => `HostName=${hub.hostName};DeviceId=${id};x509=true`;
    const chain = (leaf) => pki.read(`${leaf}.pem`) + pki.read('inter.pem');

    it('a device certificate through the intermediate, chained to the verified root, connects', { timeout: 60_000 }, async () => {
      // "root" is verified (above); the device sends its leaf and the intermediate.
      pki.issue('cam-1', 'cam-1', 'inter', 'device.ext');
      const client = await openClient(cs('cam-1'), Mqtt, { noRetry: true, cert: chain('cam-1'), key: pki.read('cam-1.key') });
      await closeQuietly(client);
    });

    it('refused: another CN, a missing intermediate, an unverified CA', { timeout: 90_000 }, async () => {
      pki.issue('cam-1-wrong', 'cam-2', 'inter', 'device.ext');
      await assertRefused(cs('cam-1'), chain('cam-1-wrong'), pki.read('cam-1-wrong.key'));
      await assertRefused(cs('cam-1'), pki.read('cam-1.pem'), pki.read('cam-1.key'));

      // A CA uploaded but not verified anchors nobody; verified on upload, it does.
      pki.root('pending', 'hubd pending root');
      const up = await call('PUT', 'pending', { body: { properties: { certificate: pki.read('pending.pem') } } });
      assert.equal(up.status, 201, up.body);
      const registry = Registry.fromConnectionString(hub.connectionString);
      await registry.create({ deviceId: 'cam-9', authentication: { type: 'certificateAuthority' } });
      pki.issue('cam-9', 'cam-9', 'pending', 'device.ext');
      await assertRefused(cs('cam-9'), pki.read('cam-9.pem'), pki.read('cam-9.key'));
      const verified = await call('PUT', 'pending', { etag: up.json.etag,
                                                     body: { properties: { certificate: pki.read('pending.pem'), isVerified: true } } });
      assert.equal(verified.status, 200, verified.body);
      const client = await openClient(cs('cam-9'), Mqtt, { noRetry: true, cert: pki.read('cam-9.pem'), key: pki.read('cam-9.key') });
      await closeQuietly(client);
    });
  });
});
