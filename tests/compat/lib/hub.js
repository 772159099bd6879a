'use strict';
// Starts real hubd processes for the compat tests.
//
// Each hub gets a fresh temporary data folder holding the run's shared test CA (made once by
// run.js, trusted through NODE_EXTRA_CA_CERTS) and its own loopback address 127.x.y.z, on which
// it serves the standard ports (443, 8883, 5671): the service SDK's REST calls reach port 443
// only. Every hubd is killed and every folder removed when the test process ends, however it
// ends; hubd also gets SIGKILL from the kernel if this process dies (setpriv --pdeathsig).

const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');

const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;
const PORTS = [443, 8883, 5671];
const MAX_OUTPUT = 1 << 20;   // keep the last 1 MiB of a hub's output

function requiredEnv(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set: run the compat tests through tests/compat/run.js`);
  }
  return value;
}

// ---- loopback addresses ---------------------------------------------------------------------
// 127.<b>.<c>.<d>: b and c come from this process's pid, which no other live process shares,
// so concurrent test processes (ctest -j, several developers) start from different blocks; d
// counts the hubs of this process. A probe bind on every port skips an address that is taken.
let nextHost = 1;

function probe(host, port) {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

async function allocateAddress() {
  const pid = process.pid;
  const b = 10 + ((pid >> 8) % 240);
  const c = pid & 0xff;
  while (nextHost < 255) {
    const host = `127.${b}.${c}.${nextHost++}`;
    let free = true;
    for (const port of PORTS) {
      if (!(await probe(host, port))) {
        free = false;
        break;
      }
    }
    if (free) return host;
  }
  throw new Error(`no free loopback address left in 127.${b}.${c}.0/24`);
}

// ---- cleanup ------------------------------------------------------------------------------
const live = new Set();   // hubs not yet disposed

function cleanupAll() {
  for (const hub of live) {
    if (hub.child) hub.child.kill('SIGKILL');
    fs.rmSync(hub.dataDir, { recursive: true, force: true, maxRetries: 5 });
  }
  live.clear();
}
process.on('exit', cleanupAll);
for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143], ['SIGHUP', 129]]) {
  process.on(signal, () => {
    cleanupAll();
    process.exit(code);
  });
}

// ---- the hub ------------------------------------------------------------------------------
class Hub {
  constructor({ hostName, dataDir, name, args }) {
    this.hostName = hostName;
    this.dataDir = dataDir;
    this.name = name;
    this.args = args;
    this.child = null;
    this.output = '';            // stdout + stderr of the current run
    this.connectionString = null;
    this.caCertPath = null;      // as hubd printed it
    this.logFile = null;
    const logDir = process.env.HUBD_TEST_LOG_DIR;
    if (logDir) {
      fs.mkdirSync(logDir, { recursive: true });
      this.logFile = path.join(logDir, `${name}-${hostName}.log`);
    }
  }

  get running() {
    return this.child !== null;
  }

  // Starts hubd and resolves once it printed "hubd ready". Rejects with hubd's output if it
  // exits first or is not ready within 30 s.
  async start() {
    if (this.child) throw new Error('hub already running');
    const hubd = requiredEnv('HUBD_BIN');
    const argv = ['--data', this.dataDir, '--hostname', this.hostName, '--listen', this.hostName,
                  ...this.args];
    this.output = '';
    const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', hubd, ...argv],
                        { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        if (this.child === child) this.child = null;
        resolve({ code, signal });
      });
    });
    const log = (chunk) => {
      const text = chunk.toString();
      this.output = (this.output + text).slice(-MAX_OUTPUT);
      if (this.logFile) fs.appendFileSync(this.logFile, text);
    };
    child.stdout.on('data', log);
    child.stderr.on('data', log);
    if (this.logFile) fs.appendFileSync(this.logFile, `=== hubd ${argv.join(' ')}\n`);

    await new Promise((resolve, reject) => {
      let done = false;
      const finish = (err) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        child.stdout.off('data', onData);
        child.off('exit', onExit);
        if (err) reject(err);
        else resolve();
      };
      const onData = () => {
        if (/^hubd ready\s*$/m.test(this.output)) finish();
      };
      const onExit = (code, signal) => {
        finish(new Error(`hubd exited (code ${code}, signal ${signal}) before it was ready:\n${this.output}`));
      };
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        finish(new Error(`hubd not ready within ${READY_TIMEOUT_MS / 1000} s:\n${this.output}`));
      }, READY_TIMEOUT_MS);
      child.stdout.on('data', onData);
      child.once('exit', onExit);
      onData();
    });

    const cs = /connection string:\s*(HostName=\S+)/.exec(this.output);
    if (!cs) throw new Error(`hubd printed no connection string:\n${this.output}`);
    this.connectionString = cs[1];
    const ca = /CA certificate:\s*(\S+)/.exec(this.output);
    this.caCertPath = ca ? ca[1] : null;
    // A running hub must not keep the test process alive: the exit handler kills it.
    child.unref();
    child.stdout.unref();
    child.stderr.unref();
    return this;
  }

  // Sends a signal and waits for the exit, SIGKILL after a timeout. Resolves to {code, signal,
  // forced}, forced meaning hubd ignored the first signal.
  async _signal(signal) {
    const child = this.child;
    if (!child) throw new Error('hub is not running');
    const exited = this.exited;
    child.kill(signal);
    let timer;
    const timeout = new Promise((resolve) => { timer = setTimeout(() => resolve(null), STOP_TIMEOUT_MS); });
    let status = await Promise.race([exited, timeout]);
    clearTimeout(timer);
    let forced = false;
    if (status === null) {
      forced = true;
      child.kill('SIGKILL');
      status = await exited;
    }
    return { ...status, forced };
  }

  // Graceful stop (SIGTERM).
  stop() {
    return this._signal('SIGTERM');
  }

  // A crash: SIGKILL, nothing flushed by hubd itself.
  kill9() {
    return this._signal('SIGKILL');
  }

  // Starts hubd again on the same data folder and address.
  async restart() {
    if (this.child) await this.stop();
    return this.start();
  }

  // Stops hubd (if running) and removes the data folder.
  async dispose() {
    if (this.child) await this.stop();
    live.delete(this);
    fs.rmSync(this.dataDir, { recursive: true, force: true, maxRetries: 5 });
  }

  // The hub's policies as hubd keeps them in hub.json.
  policies() {
    const doc = JSON.parse(fs.readFileSync(path.join(this.dataDir, 'hub.json'), 'utf8'));
    return doc.policies;
  }

  // A service connection string for one of the hub's policies (iothubowner, service, device,
  // registryRead, registryReadWrite).
  policyConnectionString(policyName) {
    const p = this.policies().find((x) => (x.name ?? x.keyName) === policyName);
    if (!p) throw new Error(`no policy ${policyName} in hub.json`);
    return `HostName=${this.hostName};SharedAccessKeyName=${policyName};SharedAccessKey=${p.primaryKey}`;
  }
}

// Creates a data folder holding the shared test CA, picks an address and starts hubd.
// options.args: more hubd arguments; options.name: label for the log file.
async function startHub(options = {}) {
  const caDir = requiredEnv('HUBD_TEST_CA_DIR');
  const dataDir = fs.mkdtempSync(path.join(process.env.HUBD_TEST_TMP ?? os.tmpdir(), 'hubd-test-'));
  for (const file of ['ca.pem', 'ca.key']) {
    fs.copyFileSync(path.join(caDir, file), path.join(dataDir, file));
  }
  fs.chmodSync(path.join(dataDir, 'ca.key'), 0o600);
  const hostName = await allocateAddress();
  const hub = new Hub({ hostName, dataDir, name: options.name ?? 'hub', args: options.args ?? [] });
  live.add(hub);
  try {
    await hub.start();
  } catch (err) {
    await hub.dispose().catch(() => {});
    throw err;
  }
  return hub;
}

// Runs hubctl with --data of the hub; resolves to {code, stdout, stderr}, never rejects for a
// non-zero exit (tests assert on it).
function hubctl(hub, ...args) {
  const bin = requiredEnv('HUBCTL_BIN');
  return new Promise((resolve, reject) => {
    execFile(bin, ['--data', hub.dataDir, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') return reject(err);   // not started, or timed out
      resolve({ code: err ? err.code : 0, stdout, stderr });
    });
  });
}

module.exports = { startHub, hubctl, Hub };
