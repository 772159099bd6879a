#!/usr/bin/env node
'use strict';
// Runs compat test files against real hubd processes.
//
//   node tests/compat/run.js [--timeout SECONDS] [NAME|FILE ...]
//
// NAME is a file in this folder without ".test.js" (registry, hubctl, ...); no name runs them
// all. HUBD_BIN and HUBCTL_BIN name the binaries (ctest sets them); without them, those of the
// build/<preset> folder with the newest hubd. Needs root: each hub serves port 443 on its own
// loopback address.
//
// Steps: make one test CA (hubd --init), then run `node --test` on the files, in a private
// network namespace when possible, with NODE_EXTRA_CA_CERTS pointing at the CA (Node reads that
// variable only at start-up, so the CA must exist before the test processes start) and
// HUBD_TEST_CA_DIR telling lib/hub.js where to copy it from. The test processes run in their own
// process group, killed as a whole on timeout or signal; temporary folders live under one run
// folder, removed at the end. hubd's output goes to compat-logs/ in the working folder, and its
// tail is printed when a test fails.

const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const here = __dirname;
const repo = path.resolve(here, '../..');

function die(message) {
  console.error(`run.js: ${message}`);
  process.exit(2);
}

// ---- arguments ------------------------------------------------------------------------------
let timeoutSeconds = 280;
const names = [];
for (let i = 2; i < process.argv.length; i++) {
  const arg = process.argv[i];
  if (arg === '--timeout') timeoutSeconds = Number(process.argv[++i]);
  else names.push(arg);
}
if (!(timeoutSeconds > 0)) die('--timeout needs a number of seconds');

const files = names.length === 0
  ? fs.readdirSync(here).filter((f) => f.endsWith('.test.js')).sort().map((f) => path.join(here, f))
  : names.map((n) => (n.endsWith('.js') ? path.resolve(n) : path.join(here, `${n}.test.js`)));
for (const f of files) if (!fs.existsSync(f)) die(`no test file ${f}`);

// ---- binaries and prerequisites -------------------------------------------------------------
// Without HUBD_BIN/HUBCTL_BIN: the build folder (build/<preset>) whose hubd is newest and that
// has a hubctl too, so both come from the same build.
function newestBuild() {
  const build = path.join(repo, 'build');
  if (!fs.existsSync(build)) return {};
  const found = fs.readdirSync(build)
    .map((preset) => ({ hubd: path.join(build, preset, 'src/server/hubd'), hubctl: path.join(build, preset, 'src/cli/hubctl') }))
    .filter((b) => fs.existsSync(b.hubd) && fs.existsSync(b.hubctl))
    .sort((a, b) => fs.statSync(b.hubd).mtimeMs - fs.statSync(a.hubd).mtimeMs);
  return found[0] ?? {};
}
const guess = process.env.HUBD_BIN && process.env.HUBCTL_BIN ? {} : newestBuild();
const hubdBin = process.env.HUBD_BIN || guess.hubd;
const hubctlBin = process.env.HUBCTL_BIN || guess.hubctl;
if (!hubdBin || !fs.existsSync(hubdBin)) die(`hubd not found (HUBD_BIN=${process.env.HUBD_BIN ?? ''}); build it first`);
if (!hubctlBin || !fs.existsSync(hubctlBin)) die(`hubctl not found (HUBCTL_BIN=${process.env.HUBCTL_BIN ?? ''}); build it first`);
if (!fs.existsSync(path.join(here, 'node_modules', 'azure-iothub'))) {
  die('tests/compat/node_modules is missing: run scripts/install-deps');
}
if (typeof process.getuid === 'function' && process.getuid() !== 0) {
  die('the compat tests serve port 443 on loopback addresses: run them as root');
}

// ---- the run folder and the test CA ----------------------------------------------------------
const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubd-compat-'));
const caDir = path.join(runDir, 'ca-seed');
const logDir = path.resolve('compat-logs', names.length ? names.map((n) => path.basename(n, '.test.js')).join('+') : 'all');
fs.rmSync(logDir, { recursive: true, force: true });
fs.mkdirSync(logDir, { recursive: true });

function removeRunDir() {
  fs.rmSync(runDir, { recursive: true, force: true, maxRetries: 5 });
}

const init = spawnSync(hubdBin, ['--init', '--data', caDir, '--hostname', '127.0.0.1'],
                       { encoding: 'utf8', timeout: 60_000 });
const caPem = path.join(caDir, 'ca.pem');
if (init.status !== 0 || !fs.existsSync(caPem) || !fs.existsSync(path.join(caDir, 'ca.key'))) {
  removeRunDir();
  die(`hubd --init did not make a CA (status ${init.status}, ${init.error ?? ''}):\n${init.stdout}${init.stderr}`);
}

// ---- the tests ------------------------------------------------------------------------------
const env = {
  ...process.env,
  NODE_EXTRA_CA_CERTS: caPem,
  HUBD_TEST_CA_DIR: caDir,
  HUBD_TEST_TMP: runDir,
  HUBD_TEST_LOG_DIR: logDir,
  HUBD_BIN: hubdBin,
  HUBCTL_BIN: hubctlBin,
};
console.log(`run.js: hubd ${hubdBin}\nrun.js: hubctl ${hubctlBin}\nrun.js: logs in ${logDir}`);

// The tests run in a network namespace of their own when the kernel lets us make one (root, not
// forbidden by a container): its loopback is private, so a hubd that a developer runs on "::" port
// 443 cannot collide with the test hubs, nor can another test run. HUBD_TEST_NETNS=0 turns it off.
const testArgs = [process.execPath, '--test', '--test-reporter=spec', ...files];
const netnsWanted = process.env.HUBD_TEST_NETNS !== '0';
const netnsWorks = netnsWanted &&
  spawnSync('unshare', ['--net', '--', 'ip', 'link', 'set', 'lo', 'up'], { stdio: 'ignore' }).status === 0;
if (netnsWanted && !netnsWorks) {
  console.log('run.js: cannot make a network namespace (unshare --net); the test hubs share the host loopback');
}
const [command, ...commandArgs] = netnsWorks
  ? ['unshare', '--net', '--', 'sh', '-c', 'ip link set lo up && exec "$0" "$@"', ...testArgs]
  : testArgs;
const child = spawn(command, commandArgs, { env, stdio: 'inherit', detached: true });

function killGroup() {
  try {
    process.kill(-child.pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

let timedOut = false;
const timer = setTimeout(() => {
  timedOut = true;
  console.error(`run.js: tests still running after ${timeoutSeconds} s: killing them`);
  killGroup();
}, timeoutSeconds * 1000);

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(signal, () => {
    killGroup();
    removeRunDir();
    process.exit(128 + os.constants.signals[signal]);
  });
}

function printLogTails() {
  for (const f of fs.readdirSync(logDir).sort()) {
    const lines = fs.readFileSync(path.join(logDir, f), 'utf8').trimEnd().split('\n');
    console.log(`\n---- last ${Math.min(lines.length, 60)} lines of ${path.join(logDir, f)}`);
    console.log(lines.slice(-60).join('\n'));
  }
}

child.on('exit', (code, signal) => {
  clearTimeout(timer);
  killGroup();   // nothing of this run outlives it, even a hubd that a test forgot to stop
  removeRunDir();
  const failed = code !== 0 || timedOut;
  if (failed) printLogTails();
  process.exit(failed ? (code || 1) : 0);
});
