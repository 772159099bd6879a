'use strict';
// Seeds the fuzz corpora from real SDK traffic: the official Azure SDKs (tests/compat's
// node_modules) drive a real hubd while every HTTPS request they make is recorded on its way out.
// Run as root, like the compat tests:
//
//   node tests/compat/run.js tests/fuzz/capture_seeds.js
//
// It writes (replacing earlier captures, named sdk_*):
//   corpus/http/sdk_NN_<what>   each request as fuzz_http reads it: "METHOD TARGET", headers,
//                               empty line, body; the Authorization value becomes @policy:NAME,
//                               @device:ID or @module:ID/MID (fuzz_http signs those with its own
//                               keys), Host is dropped; ids are the fuzz world's (d1, d2, m1)
//   corpus/sas/sdk_NN_<what>    the tokens as the SDKs built them (Authorization headers, the
//                               device SDK's MQTT/AMQP token, @azure/event-hubs' CBS token)
//   corpus/twin_patch/sdk_NN_<what>  twin patches the SDKs sent (PATCH/PUT bodies) and device
//                               reported patches as the device SDK serialises them
//
// Not a test (no assertion beyond "the calls worked"); ctest does not run it.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const https = require('node:https');
const path = require('node:path');
const { createRequire } = require('node:module');

const compat = path.join(__dirname, '..', 'compat');
const sdk = createRequire(path.join(compat, 'package.json'));
const { startHub } = require(path.join(compat, 'lib', 'hub'));
const { createSasDevice, openClient, closeQuietly, within } = require(path.join(compat, 'lib', 'device'));
const { Registry, Client: ServiceClient } = sdk('azure-iothub');
const { Message, SharedAccessSignature } = sdk('azure-iot-common');
const { Http } = sdk('azure-iot-device-http');
const { createSasTokenProvider } = sdk(path.join(compat, 'node_modules/@azure/core-amqp/dist/commonjs/auth/tokenProvider.js'));

const corpus = path.join(__dirname, 'corpus');

// ---- recording every HTTPS request ---------------------------------------------------------
const recorded = [];   // {label, method, path, headers, body}
let label = 'start';
const realRequest = https.request;
https.request = function recordingRequest(options, ...rest) {
  const req = realRequest.call(this, options, ...rest);
  if (typeof options === 'object' && options && options.path) {
    const rec = { label, method: options.method ?? 'GET', path: options.path, headers: { ...(options.headers ?? {}) }, body: [] };
    const write = req.write.bind(req);
    const end = req.end.bind(req);
    req.write = (chunk, ...args) => {
      if (chunk && typeof chunk !== 'function') rec.body.push(Buffer.from(chunk));
      return write(chunk, ...args);
    };
    req.end = (chunk, ...args) => {
      if (chunk && typeof chunk !== 'function') rec.body.push(Buffer.from(chunk));
      recorded.push(rec);
      return end(chunk, ...args);
    };
  }
  return req;
};

function tokenMacro(token) {
  const fields = Object.fromEntries(String(token).replace(/^SharedAccessSignature\s+/, '').split('&').map((f) => {
    const eq = f.indexOf('=');
    return [f.slice(0, eq), f.slice(eq + 1)];
  }));
  if (fields.skn) return `@policy:${decodeURIComponent(fields.skn)}`;
  const sr = decodeURIComponent(fields.sr ?? '');
  const m = /\/devices\/([^/]+)(?:\/modules\/([^/]+))?/.exec(sr);
  if (!m) return token;
  return m[2] ? `@module:${m[1]}/${m[2]}` : `@device:${m[1]}`;
}

function writeSeed(dir, name, content) {
  fs.mkdirSync(path.join(corpus, dir), { recursive: true });
  fs.writeFileSync(path.join(corpus, dir, name), content);
}

function clearCaptures() {
  for (const dir of ['http', 'sas', 'twin_patch']) {
    const d = path.join(corpus, dir);
    if (!fs.existsSync(d)) continue;
    for (const f of fs.readdirSync(d)) if (f.startsWith('sdk_')) fs.rmSync(path.join(d, f));
  }
}

const slug = (s) => s.replace(/[^A-Za-z0-9]+/g, '_').replace(/^_|_$/g, '').slice(0, 40);

describe('capture SDK traffic as fuzz seeds', () => {
  let hub;
  let registry;
  let service;

  before(async () => {
    hub = await startHub({ name: 'capture' });
    registry = Registry.fromConnectionString(hub.connectionString);
  });
  after(async () => {
    if (service) await service.close().catch(() => {});
    if (hub) await hub.dispose();
  });

  it('records requests, tokens and patches', { timeout: 120_000 }, async () => {
    const step = async (what, fn) => {
      label = what;
      try {
        await fn();
      } catch (err) {
        // Error paths are seeds too (a 404, a 412): keep going.
        if (!err.responseBody && !err.response && !/Error/.test(err.constructor.name)) throw err;
      }
    };
    const host = hub.hostName;

    // Registry: the ids of fuzz_http's world (d1 with module m1, d2), plus a fresh one.
    let d1;
    await step('create device', async () => { d1 = await createSasDevice(hub, registry, 'd1'); });
    await step('create device 2', () => registry.create({ deviceId: 'd2', status: 'disabled' }));
    await step('create x509 device', () => registry.create({
      deviceId: 'x1', authentication: { type: 'selfSigned', x509Thumbprint: { primaryThumbprint: 'A'.repeat(40), secondaryThumbprint: 'B'.repeat(40) } },
    }));
    await step('get device', () => registry.get('d1'));
    await step('update device', async () => {
      const { responseBody } = await registry.get('d2');
      responseBody.status = 'enabled';
      await registry.update(responseBody);
    });
    await step('list devices', () => registry.list());
    await step('add module', () => registry.addModule({ deviceId: 'd1', moduleId: 'm1' }));
    await step('get module', () => registry.getModule('d1', 'm1'));
    await step('list modules', () => registry.getModulesOnDevice('d1'));
    await step('update module stale etag', async () => {
      const { responseBody } = await registry.getModule('d1', 'm1');
      responseBody.etag = 'AAAAAAAAAAA=';
      responseBody.managedBy = 'fuzz';
      await registry.updateModule(responseBody);
    });
    await step('bulk add', () => registry.addDevices([{ deviceId: 'b1' }, { deviceId: 'b2', status: 'disabled' }]));
    await step('bulk update', () => registry.updateDevices([{ deviceId: 'b1', status: 'disabled' }], false));
    await step('bulk remove', () => registry.removeDevices([{ deviceId: 'b1' }, { deviceId: 'b2' }], true));
    await step('statistics', () => registry.getRegistryStatistics());
    await step('get missing', () => registry.get('no-such-device'));

    // Twins.
    await step('get twin', () => registry.getTwin('d1'));
    await step('update twin', () => registry.updateTwin('d1', {
      tags: { site: 'north', floor: 3, nested: { a: [1, 2, 3] } },
      properties: { desired: { telemetryInterval: 30, config: { mode: 'eco', limits: { low: -5.5, high: 1e3 } }, drop: null } },
    }, '*'));
    await step('update twin stale etag', () => registry.updateTwin('d1', { properties: { desired: { x: 1 } } }, 'AAAAAAAAAAA='));
    await step('twin update through Twin', async () => {
      const { responseBody: twin } = await registry.getTwin('d1');
      await twin.update({ tags: { owner: 'fuzz' }, properties: { desired: { nested: { deep: { deeper: { value: 'x' } } } } } });
    });
    await step('replace twin', () => registry.replaceTwin('d1', { tags: { replaced: true }, properties: { desired: { only: 1 } } }, '*'));
    await step('module twin', () => registry.updateModuleTwin('d1', 'm1', { properties: { desired: { rate: 9, list: ['a', 'b'] } } }, '*'));
    await step('get module twin', () => registry.getModuleTwin('d1', 'm1'));

    // Direct methods (d1 is not connected here: DeviceNotOnline; fuzz_http's d1 answers).
    service = ServiceClient.fromConnectionString(hub.connectionString);
    await step('invoke method', () => service.invokeDeviceMethod('d1', {
      methodName: 'reboot', payload: { delay: 5 }, responseTimeoutInSeconds: 5, connectTimeoutInSeconds: 0,
    }));
    await step('invoke module method', () => service.invokeDeviceMethod('d1', 'm1', {
      methodName: 'getConfig', payload: null, responseTimeoutInSeconds: 5,
    }));

    // The HTTPS device API with the device SDK.
    const device = await openClient(d1.connectionString, Http);
    try {
      await step('device send event', async () => {
        const m = new Message(JSON.stringify({ t: 25.5, level: 'critical' }));
        m.messageId = 'msg-1';
        m.correlationId = 'corr-1';
        m.contentType = 'application/json';
        m.contentEncoding = 'utf-8';
        m.properties.add('level', 'critical');
        m.properties.add('iothub-creation-time-utc', new Date(1_700_000_000_000).toISOString());
        await device.sendEvent(m);
      });
      await step('device send batch', () => device.sendEventBatch([new Message('one'), new Message(Buffer.from([0, 1, 2, 255]))]));
      await step('device c2d', async () => {
        await service.open();
        const m = new Message('to the device');
        m.messageId = 'c2d-capture';
        m.ack = 'full';
        m.properties.add('colour', 'red');
        await service.send('d1', m);
        const got = await new Promise((resolve, reject) => {
          device.once('message', resolve);
          setTimeout(() => reject(new Error('no C2D message')), 20_000);
        });
        await device.complete(got);
      });
      await step('device c2d reject', async () => {
        await service.send('d1', new Message('reject me'));
        const got = await new Promise((resolve) => device.once('message', resolve));
        await device.reject(got);
      });
      await step('device c2d abandon', async () => {
        await service.send('d1', new Message('abandon me'));
        const got = await new Promise((resolve) => device.once('message', resolve));
        await device.abandon(got);
      });
    } finally {
      await closeQuietly(device);
    }
    await step('remove device', () => registry.delete('x1'));

    // ---- write the seeds
    clearCaptures();
    let n = 0;
    const seenTokens = new Set();
    for (const rec of recorded) {
      n += 1;
      const name = `sdk_${String(n).padStart(2, '0')}_${slug(rec.label)}`;
      const lines = [`${rec.method} ${rec.path}`];
      for (const [k, v] of Object.entries(rec.headers)) {
        if (/^host$/i.test(k)) continue;
        if (/^authorization$/i.test(k)) {
          lines.push(`${k}: ${tokenMacro(v)}`);
          if (!seenTokens.has(String(v))) {
            seenTokens.add(String(v));
            writeSeed('sas', `${name}`, String(v));
          }
          continue;
        }
        lines.push(`${k}: ${v}`);
      }
      const body = Buffer.concat(rec.body);
      writeSeed('http', name, Buffer.concat([Buffer.from(`${lines.join('\n')}\n\n`), body]));
      // Twin bodies as twin_patch seeds: each section a patch of its own.
      if (/\/twins\//.test(rec.path) && body.length > 0 && /PATCH|PUT/.test(rec.method)) {
        const doc = JSON.parse(body.toString());
        const mode = rec.method === 'PUT' ? ' replace' : '';
        if (doc.tags) writeSeed('twin_patch', `${name}_tags`, `tags${mode}\n${JSON.stringify(doc.tags)}\n`);
        if (doc.properties?.desired) {
          writeSeed('twin_patch', `${name}_desired`, `desired${mode}\n${JSON.stringify(doc.properties.desired)}\n`);
        }
      }
    }
    assert.ok(recorded.length >= 20, `recorded ${recorded.length} requests`);

    // Tokens as the device SDK makes them for MQTT and AMQP (SharedAccessSignature.create over the
    // url-encoded resource, as its SAK authentication provider does), and the Event Hubs CBS token.
    const key = d1.device.authentication.symmetricKey.primaryKey;
    const expiry = Math.floor(Date.now() / 1000) + 3600;
    writeSeed('sas', 'sdk_device_mqtt', SharedAccessSignature.create(encodeURIComponent(`${host}/devices/d1`), null, key, expiry).toString());
    writeSeed('sas', 'sdk_module_mqtt', SharedAccessSignature.create(encodeURIComponent(`${host}/devices/d1/modules/m1`), null, key, expiry).toString());
    const svc = hub.policies().find((p) => (p.name ?? p.keyName) === 'service');
    const eh = await createSasTokenProvider({ name: 'service', key: svc.primaryKey }).getToken(`sb://${host}/${host.split('.')[0]}`);
    writeSeed('sas', 'sdk_eventhubs_cbs', eh.token);

    // Reported patches as the device SDK serialises them (JSON.stringify of what the app passes).
    const reported = [
      { temperature: 21.5, firmware: { version: '1.2.3', status: 'current' } },
      { telemetryConfig: { sendFrequency: '5m', status: 'Success' }, battery: null },
      { list: [1, 'two', { three: 3 }], flag: true, big: 4503599627370495 },
    ];
    reported.forEach((p, i) => writeSeed('twin_patch', `sdk_reported_${i}`, `reported\n${JSON.stringify(p)}\n`));
    writeSeed('twin_patch', 'sdk_reported_sequence', `reported\n${reported.map((p) => JSON.stringify(p)).join('\n---\n')}\n`);
  });
});
