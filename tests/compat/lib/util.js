'use strict';
// Helpers shared by the compat tests: typed-error assertions, hand-made SAS tokens, raw HTTPS.

const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const https = require('node:https');
const { errors } = require('azure-iot-common');

// azure-iothub vendors its own copy of the error classes (dist/common-core/errors.js), so an
// error it returns is not an instance of azure-iot-common's class of the same name: compare
// class names. Passing the class (errors.DeviceNotFoundError) rather than a string guards
// against typos.
//
// Awaits `promise`, asserts it rejects with `errorClass`, optionally with an HTTP status and an
// `iothub-errorcode` header, and returns the error.
async function rejectsWith(promise, errorClass, { status, code } = {}) {
  let err = null;
  try {
    await promise;
  } catch (e) {
    err = e;
  }
  const expected = errorClass === Error ? 'Error' : errorClass.name;
  assert.ok(err, `expected ${expected}, but the call succeeded`);
  assert.equal(err.constructor.name, expected,
               `expected ${expected}, got ${err.constructor.name}: ${err.message}\nbody: ${err.responseBody}`);
  if (status !== undefined) assert.equal(err.response?.statusCode, status, `HTTP status (${err.message})`);
  if (code !== undefined) assert.equal(err.response?.headers['iothub-errorcode'], code, `iothub-errorcode (${err.message})`);
  return err;
}

// The Azure SDKs' strict URL encoding (encodeURIComponent plus !'()*).
function strictEncode(text) {
  return encodeURIComponent(text).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
}

// A service SAS token built by hand, as IoT Hub defines it: HMAC-SHA256 keyed by the
// base64-decoded key over `${sr}\n${se}`. `expiry` is in seconds since the epoch.
function sasToken({ resource, keyName, key, expiry }) {
  const sig = crypto.createHmac('sha256', Buffer.from(key, 'base64'))
    .update(`${resource}\n${expiry}`)
    .digest('base64');
  const skn = keyName ? `&skn=${strictEncode(keyName)}` : '';
  return `SharedAccessSignature sr=${resource}&sig=${strictEncode(sig)}${skn}&se=${expiry}`;
}

function parseConnectionString(cs) {
  const out = {};
  for (const part of cs.split(';')) {
    const i = part.indexOf('=');
    if (i > 0) out[part.slice(0, i)] = part.slice(i + 1);
  }
  return out;
}

// An owner token for the hub of `connectionString`, valid for an hour.
function ownerToken(connectionString) {
  const cs = parseConnectionString(connectionString);
  return sasToken({ resource: cs.HostName, keyName: cs.SharedAccessKeyName, key: cs.SharedAccessKey,
                    expiry: Math.ceil(Date.now() / 1000) + 3600 });
}

// A raw HTTPS request to hubd's REST API on port 443 (trust comes from NODE_EXTRA_CA_CERTS).
// Resolves to {status, headers, body, json}.
function request({ host, method, path, headers = {}, body }) {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
    const h = { ...headers };
    if (payload) {
      h['Content-Type'] ??= 'application/json; charset=utf-8';
      h['Content-Length'] = payload.length;
    }
    const req = https.request({ host, port: 443, method, path, headers: h, timeout: 30_000 }, (res) => {
      const parts = [];
      res.on('data', (c) => parts.push(c));
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        let json;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, headers: res.headers, body: text, json });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within 30 s`)));
    req.on('error', reject);
    req.end(payload);
  });
}

// Pages an array into chunks of `size`.
function chunks(items, size) {
  const out = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

const API = 'api-version=2021-04-12';

module.exports = { errors, rejectsWith, sasToken, parseConnectionString, ownerToken, request, chunks, API };
