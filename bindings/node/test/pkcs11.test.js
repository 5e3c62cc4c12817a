'use strict';
// Keys in a PKCS#11 token (SoftHSM2) with provision(): the claim key in the token, and the
// device key kept there (no key file, reused). Without SoftHSM2 the tests skip, unless CI is
// set: then they fail.
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { test, before, after } = require('node:test');

const fp = require('../index.js');
const { missing, startEmulator } = require('./emulator.js');

const TOKEN = 'fleetprov-node';
const PIN = '4711';
const MODULES = [
  process.env.FLEETPROV_PKCS11_MODULE,
  '/usr/lib/softhsm/libsofthsm2.so',
  '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so',
  '/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so',
];

function softhsmMissing() {
  const found = MODULES.find((m) => m && fs.existsSync(m));
  let util = true;
  try {
    execFileSync('softhsm2-util', ['--version'], { stdio: 'ignore' });
  } catch {
    util = false;
  }
  if (found && util) {
    return false;
  }
  const msg = 'SoftHSM2 (softhsm2-util, libsofthsm2.so) is missing: apt-get install softhsm2';
  if (process.env.CI) {
    throw new Error(msg);
  }
  return msg;
}

const skip = missing() || softhsmMissing();
const moduleFile = MODULES.find((m) => m && fs.existsSync(m));
let emulator;
let work;

before(async () => {
  if (skip) {
    return;
  }
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'fleetprov-node-hsm-'));
  fs.mkdirSync(path.join(work, 'tokens'));
  const conf = path.join(work, 'softhsm2.conf');
  fs.writeFileSync(
    conf,
    `directories.tokendir = ${path.join(work, 'tokens')}\nobjectstore.backend = file\nlog.level = ERROR\n`,
  );
  // Read when the module is first loaded: by softhsm2-util, and by the library in this process.
  process.env.SOFTHSM2_CONF = conf;
  const util = (...args) => execFileSync('softhsm2-util', args, { stdio: 'pipe' });
  util('--init-token', '--free', '--label', TOKEN, '--pin', PIN, '--so-pin', '0815');
  emulator = await startEmulator();
  util('--import', path.join(emulator.state, 'claim-key.pem'), '--token', TOKEN, '--label', 'claim',
    '--id', '01', '--pin', PIN);
});

after(async () => {
  await emulator?.stop();
  if (work) {
    fs.rmSync(work, { recursive: true, force: true });
  }
});

function options(serial, storeDir, extra = {}) {
  const claim = { ...emulator.options(), pkcs11: { module: moduleFile, keyLabel: 'claim', pin: PIN, tokenLabel: TOKEN } };
  delete claim.keyFile;
  return {
    claim,
    templateName: 'FleetTemplate',
    storeDir,
    parameters: { SerialNumber: serial, DeviceLocation: 'Seattle' },
    deadlineMs: 60_000,
    ...extra,
  };
}

test('a claim key in the token provisions and reuses', { skip }, async () => {
  const store = path.join(work, 'claim-store');
  const first = await fp.provision(options('node-hsm-claim', store));
  assert.equal(first.thingName, 'ThingPrefix_node-hsm-claim');
  assert.equal(first.reused, false);
  assert.ok(fs.existsSync(first.privateKeyFile));
  assert.equal(first.keyLocation, 'file');
  const again = await fp.provision(options('node-hsm-claim', store));
  assert.equal(again.reused, true);
  assert.equal(again.certificateId, first.certificateId);
});

test('the device key kept in the token: no key file, reused', { skip }, async () => {
  const store = path.join(work, 'device-store');
  const devicePkcs11 = { module: moduleFile, keyLabel: 'node-device', pin: PIN, tokenLabel: TOKEN };
  const first = await fp.provision(options('node-hsm-device', store, { devicePkcs11 }));
  assert.equal(first.reused, false);
  assert.equal(first.privateKeyFile, '');
  assert.equal(first.keyLocation, 'pkcs11');
  assert.ok(fs.readdirSync(store).every((f) => !f.includes('key')), fs.readdirSync(store).join(' '));
  const metadata = fs.readFileSync(first.metadataFile, 'utf8');
  assert.match(metadata, /"kind": "pkcs11"/);
  assert.ok(!metadata.includes(PIN));
  const again = await fp.provision(options('node-hsm-device', store, { devicePkcs11 }));
  assert.equal(again.reused, true);
  assert.equal(again.keyLocation, 'pkcs11');
  assert.equal(again.certificateId, first.certificateId);
  await assert.rejects(
    fp.provision(options('node-hsm-device', store, { devicePkcs11, keyType: 'service', force: true })),
    (e) => e instanceof fp.FleetprovError && /keyType must be one of/.test(e.message),
  );
});
