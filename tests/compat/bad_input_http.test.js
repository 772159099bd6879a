'use strict';
// The bad-input matrix, HTTPS part (docs/bad-input.md): requests no SDK sends, over raw TLS to
// port 443 (or node's https for well-formed ones). Each case asserts hubd's exact answer (HTTP
// status, iothub-errorcode, IoT Hub's error body) or a close within a bound, then that the
// canaries (an Mqtt and an Amqp device sending all along) are still acknowledged. The hub runs
// with short HTTP timeouts (--http-request-timeout 2s, --http-idle-timeout 3s) so that the
// stalling clients are closed within the file's time.

const { describe, it, before } = require('node:test');
const assert = require('node:assert/strict');
const { request, ownerToken, API } = require('./lib/util');
const { badInputSuite, assertBoundedPerConnection, assertHubAlive, repeatedCases, RawSocket, rawHttp, parseHttpResponse } = require('./lib/bad_input');

const REQUEST_TIMEOUT_S = 2;
const IDLE_TIMEOUT_S = 3;
const CLOSE_WITHIN_MS = 5_000;
// After refusing a request it could not read whole, hubd drains what the client still sends for
// up to 5 s or the request timeout if shorter (so that the client reads the answer instead of a
// reset), then closes.
const DRAIN_CLOSE_WITHIN_MS = REQUEST_TIMEOUT_S * 1000 + 3_000;

function assertIotHubError(res, status, code) {
  assert.ok(res, 'a response (the hub closed without one)');
  assert.equal(res.status, status, res.body);
  assert.equal(res.headers['iothub-errorcode'], code, `iothub-errorcode (${res.body})`);
  assert.match(res.json?.Message ?? '', new RegExp(`^ErrorCode:${code};`), 'IoT Hub\'s error body');
}

describe('bad input: HTTPS', () => {
  // Opened first, checked last (the idle timeout runs meanwhile).
  let slowHeaders;   // one byte of a request's headers per second
  let silentBody;    // Content-Length 100, 10 bytes sent, then silence
  let slowTimer;
  const suite = badInputSuite({
    name: 'bad-input-http', prefix: 'http',
    args: ['--http-request-timeout', `${REQUEST_TIMEOUT_S}s`, '--http-idle-timeout', `${IDLE_TIMEOUT_S}s`],
    cleanup: () => {
      clearInterval(slowTimer);
      slowHeaders?.destroy();
      silentBody?.destroy();
    },
  });
  const { afterCase } = suite;
  const newDevice = () => suite.fresh();
  const pid = process.pid;
  let hub;
  let auth;
  before(() => {
    ({ hub } = suite);
    auth = ownerToken(hub.connectionString);
  });

  const host = () => hub.hostName;
  function head(method, path, headers = {}) {
    const lines = [`${method} ${path} HTTP/1.1`, `Host: ${hub.hostName}`,
                   ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
    return `${lines.join('\r\n')}\r\n\r\n`;
  }

  // ---- stalling clients ----------------------------------------------------------------------

  it(`a client sending its request headers one byte per second: closed by the idle timeout (${IDLE_TIMEOUT_S} s), hubd keeps serving`, { timeout: 30_000 }, async () => {
    slowHeaders = await RawSocket.tls(host(), 443);
    const bytes = Buffer.from(head('GET', `/devices/x?${API}`, { Authorization: auth }));
    let i = 0;
    slowTimer = setInterval(() => slowHeaders.write(bytes.subarray(i, ++i)), 1_000);
    assert.ok(await slowHeaders.closedWithin(IDLE_TIMEOUT_S * 1000 + CLOSE_WITHIN_MS), 'still open');
    const held = slowHeaders.closedAt - slowHeaders.openedAt;
    clearInterval(slowTimer);
    assert.ok(held >= (IDLE_TIMEOUT_S - 1) * 1000, `closed after ${held} ms, before the timeout`);
    assert.ok(i < bytes.length, 'closed before the headers were complete');
    assert.equal(slowHeaders.data.length, 0, 'no answer to half a request');
    await afterCase();
  });

  it(`a Content-Length of 100 with 10 bytes of body, then silence: closed by the request timeout (${REQUEST_TIMEOUT_S} s), nothing created`, { timeout: 30_000 }, async () => {
    const id = `bad-http-short-body-${pid}`;
    silentBody = await RawSocket.tls(host(), 443);
    silentBody.write(head('PUT', `/devices/${id}?${API}`, { Authorization: auth, 'Content-Type': 'application/json', 'Content-Length': 100 }) +
                     `{"deviceId"`);
    assert.ok(await silentBody.closedWithin(REQUEST_TIMEOUT_S * 1000 + CLOSE_WITHIN_MS), 'still open');
    const held = silentBody.closedAt - silentBody.openedAt;
    assert.ok(held >= (REQUEST_TIMEOUT_S - 1) * 1000, `closed after ${held} ms, before the timeout`);
    assert.equal(silentBody.data.length, 0, 'no answer');
    const res = await request({ host: host(), method: 'GET', path: `/devices/${id}?${API}`, headers: { Authorization: auth } });
    assertIotHubError(res, 404, 'DeviceNotFound');
    await afterCase();
  });

  // ---- framing -------------------------------------------------------------------------------

  it('request headers over 16 KB: 400 ArgumentInvalid, then closed', async () => {
    const { sock, res } = await rawHttp(host(), head('GET', `/devices/x?${API}`, { Authorization: auth, 'X-Pad': 'p'.repeat(20 * 1024) }));
    assertIotHubError(res, 400, 'ArgumentInvalid');
    assert.ok(await sock.closedWithin(DRAIN_CLOSE_WITHIN_MS), 'closed after the answer');
    await afterCase();
  });

  it('a request line (URL) of 20 KB: 400 ArgumentInvalid, then closed', async () => {
    const { sock, res } = await rawHttp(host(), head('GET', `/devices/${'d'.repeat(20 * 1024)}?${API}`, { Authorization: auth }));
    assertIotHubError(res, 400, 'ArgumentInvalid');
    assert.ok(await sock.closedWithin(DRAIN_CLOSE_WITHIN_MS), 'closed after the answer');
    await afterCase();
  });

  it('a twin patch body of 2 MiB (over the 1 MiB request limit): 413 MessageTooLarge, then closed', async () => {
    const dev = await newDevice();
    const body = JSON.stringify({ tags: { big: 'x'.repeat(2 * 1024 * 1024) } });
    const { sock, res } = await rawHttp(host(), head('PATCH', `/twins/${dev.deviceId}?${API}`,
      { Authorization: auth, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) }) + body);
    assertIotHubError(res, 413, 'MessageTooLarge');
    assert.ok(await sock.closedWithin(DRAIN_CLOSE_WITHIN_MS), 'closed after the answer');
    await afterCase();
  });

  it('a malformed chunked body (chunk size "zz"): 400 ArgumentInvalid, then closed', async () => {
    const { sock, res } = await rawHttp(host(), head('PUT', `/devices/bad-chunk-${pid}?${API}`,
      { Authorization: auth, 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' }) + 'zz\r\n{}\r\n0\r\n\r\n');
    assertIotHubError(res, 400, 'ArgumentInvalid');
    assert.ok(await sock.closedWithin(DRAIN_CLOSE_WITHIN_MS), 'closed');
    await afterCase();
  });

  it('Content-Length and Transfer-Encoding: chunked together: 400 ArgumentInvalid, then closed', async () => {
    const { sock, res } = await rawHttp(host(), head('PUT', `/devices/bad-smuggle-${pid}?${API}`,
      { Authorization: auth, 'Content-Type': 'application/json', 'Content-Length': 7, 'Transfer-Encoding': 'chunked' }) +
      '2\r\n{}\r\n0\r\n\r\n');
    assertIotHubError(res, 400, 'ArgumentInvalid');
    assert.ok(await sock.closedWithin(DRAIN_CLOSE_WITHIN_MS), 'closed');
    await afterCase();
  });

  it('two different Content-Length headers: 400 ArgumentInvalid, then closed', async () => {
    const bytes = `PUT /devices/bad-cl-${pid}?${API} HTTP/1.1\r\nHost: ${host()}\r\nAuthorization: ${auth}\r\n` +
                  'Content-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\n{}';
    const { sock, res } = await rawHttp(host(), bytes);
    assertIotHubError(res, 400, 'ArgumentInvalid');
    assert.ok(await sock.closedWithin(DRAIN_CLOSE_WITHIN_MS), 'closed');
    await afterCase();
  });

  it('bytes that are not HTTP ("HELLO\\r\\n\\r\\n"): 400 ArgumentInvalid, then closed', async () => {
    const { sock, res } = await rawHttp(host(), 'HELLO\r\n\r\n');
    assertIotHubError(res, 400, 'ArgumentInvalid');
    assert.ok(await sock.closedWithin(DRAIN_CLOSE_WITHIN_MS), 'closed');
    await afterCase();
  });

  // ---- routes and authorisation --------------------------------------------------------------

  it('an unknown route (GET /nothing/here): 404', async () => {
    const res = await request({ host: host(), method: 'GET', path: `/nothing/here?${API}`, headers: { Authorization: auth } });
    assert.equal(res.status, 404, res.body);
    assert.match(res.json?.Message ?? '', /^ErrorCode:\w+;/, "IoT Hub's error body");
    await afterCase();
  });

  it('a wrong method (PATCH /devices/{id}): 405 with an Allow header', async () => {
    const dev = await newDevice();
    const res = await request({ host: host(), method: 'PATCH', path: `/devices/${dev.deviceId}?${API}`, body: {},
                                headers: { Authorization: auth } });
    assert.equal(res.status, 405, res.body);
    assert.match(res.headers.allow ?? '', /GET/, 'Allow lists the methods the route has');
    await afterCase();
  });

  it('no Authorization header: 401 IotHubUnauthorizedAccess', async () => {
    const res = await request({ host: host(), method: 'GET', path: `/devices/x?${API}` });
    assertIotHubError(res, 401, 'IotHubUnauthorizedAccess');
    await afterCase();
  });

  it('an empty Authorization header: 401 IotHubUnauthorizedAccess', async () => {
    const res = await request({ host: host(), method: 'GET', path: `/devices/x?${API}`, headers: { Authorization: '' } });
    assertIotHubError(res, 401, 'IotHubUnauthorizedAccess');
    await afterCase();
  });

  // ---- JSON ----------------------------------------------------------------------------------

  it('a registry create with broken JSON: 400 IotHubFormatError, nothing created', async () => {
    const id = `bad-http-json-${pid}`;
    const res = await request({ host: host(), method: 'PUT', path: `/devices/${id}?${API}`, body: '{"deviceId": "x",',
                                headers: { Authorization: auth } });
    assertIotHubError(res, 400, 'IotHubFormatError');
    const get = await request({ host: host(), method: 'GET', path: `/devices/${id}?${API}`, headers: { Authorization: auth } });
    assert.equal(get.status, 404);
    await afterCase();
  });

  it('a twin patch with broken JSON: 400 IotHubFormatError, twin unchanged', async () => {
    const dev = await newDevice();
    const res = await request({ host: host(), method: 'PATCH', path: `/twins/${dev.deviceId}?${API}`,
                                body: '{"tags": {"a": 1}', headers: { Authorization: auth } });
    assertIotHubError(res, 400, 'IotHubFormatError');
    const twin = await request({ host: host(), method: 'GET', path: `/twins/${dev.deviceId}?${API}`, headers: { Authorization: auth } });
    assert.equal(twin.json?.tags?.a, undefined);
    await afterCase();
  });

  it('a registry create whose JSON nests 10,000 arrays deep: 400 IotHubFormatError', async () => {
    const body = `{"deviceId": "deep", "x": ${'['.repeat(10_000)}${']'.repeat(10_000)}}`;
    const res = await request({ host: host(), method: 'PUT', path: `/devices/bad-deep-${pid}?${API}`, body,
                                headers: { Authorization: auth } });
    assertIotHubError(res, 400, 'IotHubFormatError');
    await assertHubAlive(hub);
    await afterCase();
  });

  it('a twin patch whose tags nest 11 levels (IoT Hub allows 10): 400 ArgumentInvalid, twin unchanged', async () => {
    const dev = await newDevice();
    let deep = { leaf: 1 };
    for (let i = 0; i < 11; i++) deep = { [`l${i}`]: deep };
    const res = await request({ host: host(), method: 'PATCH', path: `/twins/${dev.deviceId}?${API}`,
                                body: { tags: deep }, headers: { Authorization: auth } });
    assertIotHubError(res, 400, 'ArgumentInvalid');
    const twin = await request({ host: host(), method: 'GET', path: `/twins/${dev.deviceId}?${API}`, headers: { Authorization: auth } });
    assert.deepEqual(twin.json?.tags ?? {}, {});
    await afterCase();
  });

  it('a desired-properties patch nesting 10 levels: 200, stored', async () => {
    const dev = await newDevice();
    let deep = { leaf: 1 };
    for (let i = 0; i < 9; i++) deep = { [`l${i}`]: deep };
    const res = await request({ host: host(), method: 'PATCH', path: `/twins/${dev.deviceId}?${API}`,
                                body: { properties: { desired: deep } }, headers: { Authorization: auth } });
    assert.equal(res.status, 200, res.body);
    await afterCase();
  });

  it('a registry create whose JSON holds ill-formed UTF-8: 400 IotHubFormatError, nothing created', async () => {
    const id = `bad-http-utf8-${pid}`;
    const body = Buffer.concat([Buffer.from(`{"deviceId": "${id}", "status": "enabled", "statusReason": "`), Buffer.from([0xc3, 0x28]), Buffer.from('"}')]);
    const { res } = await rawHttp(host(), Buffer.concat([Buffer.from(head('PUT', `/devices/${id}?${API}`,
      { Authorization: auth, 'Content-Type': 'application/json', 'Content-Length': body.length })), body]));
    assertIotHubError(res, 400, 'IotHubFormatError');
    const get = await request({ host: host(), method: 'GET', path: `/devices/${id}?${API}`, headers: { Authorization: auth } });
    assert.equal(get.status, 404);
    await afterCase();
  });

  it('a registry create whose deviceId is a number: 400 ArgumentInvalid', async () => {
    const res = await request({ host: host(), method: 'PUT', path: `/devices/bad-type-${pid}?${API}`, body: { deviceId: 5 },
                                headers: { Authorization: auth } });
    assertIotHubError(res, 400, 'ArgumentInvalid');
    await afterCase();
  });

  it('device telemetry of 256 KB + 1 byte over HTTPS: 413 MessageTooLarge', async () => {
    const dev = await newDevice();
    const { sasToken } = require('./lib/util');
    const { encodeUriComponentStrict } = require('azure-iot-common');
    const token = sasToken({ resource: encodeUriComponentStrict(`${host()}/devices/${dev.deviceId}`),
                             key: dev.device.authentication.symmetricKey.primaryKey, expiry: Math.floor(Date.now() / 1000) + 3600 });
    const res = await request({ host: host(), method: 'POST', path: `/devices/${dev.deviceId}/messages/events?${API}`,
                                body: 'x'.repeat(256 * 1024 + 1), headers: { Authorization: token, 'Content-Type': 'application/octet-stream' } });
    assertIotHubError(res, 413, 'MessageTooLarge');
    await afterCase();
  });

  it('300 more connections with a malformed chunked body: RSS grows by less than 8 KiB per connection', { timeout: 60_000 }, async () => {
    const bytes = head('PUT', `/devices/bad-chunk-${pid}?${API}`, { Authorization: auth, 'Content-Type': 'application/json',
                                                                      'Transfer-Encoding': 'chunked' }) + 'zz\r\n{}\r\n0\r\n\r\n';
    const r = await repeatedCases(hub, async () => {
      const { sock, res } = await rawHttp(host(), bytes);
      assert.equal(res?.status, 400);
      sock.destroy();
    });
    assertBoundedPerConnection(r);
    await afterCase();
  });

  suite.itStaysBounded();
});

