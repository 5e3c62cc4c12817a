'use strict';
// Runs the fleetprov-emulator binary for the tests: $FLEETPROV_EMULATOR, or the checkout's
// release or debug build. Without one the tests skip, unless CI is set: then they fail.

const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { once } = require('node:events');
const net = require('node:net');

const root = path.join(__dirname, '..', '..', '..');

const anyTemplatePolicy = path.join(root, 'emulator', 'policies', 'claim-policy-any-template.json');

function emulatorBinary() {
  const candidates = [
    process.env.FLEETPROV_EMULATOR,
    path.join(root, 'target', 'release', 'fleetprov-emulator'),
    path.join(root, 'target', 'debug', 'fleetprov-emulator'),
  ];
  return candidates.find((c) => c && fs.existsSync(c)) ?? null;
}

/** A skip reason for node:test, or false; throws under CI. */
function missing() {
  if (emulatorBinary() !== null) {
    return false;
  }
  const msg = 'no fleetprov-emulator: set FLEETPROV_EMULATOR or run cargo build --release -p fleetprov-emulator';
  if (process.env.CI) {
    throw new Error(msg);
  }
  return msg;
}

/**
 * Starts `fleetprov-emulator serve` on an ephemeral loopback port (with the any-template claim
 * policy unless `claimPolicy` names another file) and resolves once it has
 * written the port to its ready file. `stop()` ends it.
 */
async function startEmulator({ claimPolicy } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleetprov-node-test-'));
  const state = path.join(dir, 'state');
  const ready = path.join(dir, 'ready');
  const child = spawn(
    emulatorBinary(),
    // The claim policy that allows any template's topics: the rejection tests name a template
    // the emulator does not serve, whose 404 must come from the service.
    ['serve', '--state-dir', state, '--port', '0', '--ready-file', ready, '--quiet',
      '--claim-policy', claimPolicy ?? anyTemplatePolicy],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
  const exited = once(child, 'exit');
  const deadline = Date.now() + 30_000;
  let port = 0;
  while (port === 0) {
    const text = fs.existsSync(ready) ? fs.readFileSync(ready, 'utf8').trim() : '';
    if (text !== '') {
      port = Number(text);
      break;
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error('the emulator exited or was not ready within 30 s');
    }
    await Promise.race([exited, new Promise((r) => setTimeout(r, 50))]);
  }
  return {
    port,
    state,
    options: () => ({
      endpoint: 'localhost',
      port,
      caFile: path.join(state, 'ca.pem'),
      certFile: path.join(state, 'claim-cert.pem'),
      keyFile: path.join(state, 'claim-key.pem'),
    }),
    stop: async () => {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await exited;
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A TCP relay to `port` that can stop passing the client's bytes on: after `stall()`, what the
 * client sends (requests, or its TLS handshake) never arrives, as on a network gone quiet; the
 * connection stays open. `close()` ends it and every relayed connection.
 */
async function startLink(port) {
  let stalled = false;
  const sockets = new Set();
  const server = net.createServer((down) => {
    const up = net.connect(port, '127.0.0.1');
    for (const s of [down, up]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    down.on('data', (chunk) => {
      if (!stalled) {
        up.write(chunk);
      }
    });
    up.pipe(down);
    down.on('close', () => up.destroy());
    up.on('close', () => down.destroy());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: server.address().port,
    stall: () => {
      stalled = true;
    },
    close: async () => {
      for (const s of sockets) {
        s.destroy();
      }
      server.close();
      await once(server, 'close');
    },
  };
}

/** A PEM CSR for a new P-256 key (openssl). */
function newCsr() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleetprov-node-csr-'));
  try {
    execFileSync('openssl', [
      'req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-subj', '/CN=node-test-device', '-keyout', path.join(dir, 'key.pem'),
      '-out', path.join(dir, 'csr.pem'),
    ], { stdio: 'ignore' });
    return fs.readFileSync(path.join(dir, 'csr.pem'), 'utf8');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

module.exports = { missing, startEmulator, startLink, newCsr, anyTemplatePolicy };
