'use strict';
// Keys the application holds ({ publicKey, sign }): the claim key and the device key of
// provision() signing through JavaScript functions (node:crypto here), against the emulator.
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { test, before, after } = require('node:test');

const fp = require('../index.js');
const { missing, startEmulator } = require('./emulator.js');

const skip = missing();

let emulator;
let work;
before(async () => {
  if (!skip) {
    emulator = await startEmulator();
  }
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'fleetprov-node-signer-'));
});
after(async () => {
  await emulator?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

/** A signer over a node:crypto private key, counting its signatures. */
function signerOf(privateKey, calls) {
  return {
    publicKey: crypto.createPublicKey(privateKey).export({ type: 'spki', format: 'pem' }),
    sign(scheme, message, digest) {
      assert.equal(scheme, 'ecdsaP256Sha256');
      assert.deepEqual(digest, crypto.createHash('sha256').update(message).digest());
      calls.push(scheme);
      return crypto.sign('sha256', message, privateKey); // DER Ecdsa-Sig-Value
    },
  };
}

function claimOptions(extra) {
  const claim = { ...emulator.options(), ...extra };
  delete claim.keyFile;
  return claim;
}

test('provision: claim and device keys behind signers; no key file, reuse, another key', { skip }, async () => {
  const claimKey = crypto.createPrivateKey(fs.readFileSync(path.join(emulator.state, 'claim-key.pem')));
  const claimCalls = [];
  const deviceCalls = [];
  const deviceKey = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  const store = path.join(work, 'identity');
  const options = {
    claim: claimOptions({ signer: signerOf(claimKey, claimCalls) }),
    templateName: 'FleetTemplate',
    storeDir: store,
    parameters: { SerialNumber: 'node-signer', DeviceLocation: 'Seattle' },
    deviceSigner: signerOf(deviceKey, deviceCalls),
    deadlineMs: 60_000,
  };
  const first = await fp.provision(options);
  assert.equal(first.thingName, 'ThingPrefix_node-signer');
  assert.equal(first.reused, false);
  assert.equal(first.keyLocation, 'signer');
  assert.equal(first.privateKeyFile, '');
  assert.equal(claimCalls.length, 1, 'the claim handshake');
  assert.equal(deviceCalls.length, 2, 'the CSR and the device handshake');
  for (const f of fs.readdirSync(store)) {
    const file = path.join(store, f);
    if (fs.statSync(file).isFile()) {
      assert.ok(!fs.readFileSync(file, 'latin1').includes('PRIVATE KEY'), `${f} holds a private key`);
    }
  }
  const cert = new crypto.X509Certificate(fs.readFileSync(first.certificateFile));
  assert.equal(
    cert.publicKey.export({ type: 'spki', format: 'pem' }),
    crypto.createPublicKey(deviceKey).export({ type: 'spki', format: 'pem' }),
  );

  const again = await fp.provision(options);
  assert.equal(again.reused, true);
  assert.equal(again.keyLocation, 'signer');
  assert.equal(again.certificateId, first.certificateId);
  assert.equal(claimCalls.length, 1, 'a reuse made a claim connection');

  const other = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  const third = await fp.provision({ ...options, deviceSigner: signerOf(other, []) });
  assert.equal(third.reused, false);
  assert.notEqual(third.certificateId, first.certificateId);
  assert.equal(fp.pendingCallbacks(), 0);
});

test('a failing signer fails with FP_ERR_SIGNER; bad signers are refused up front', { skip }, async () => {
  const failing = {
    publicKey: fs.readFileSync(path.join(emulator.state, 'claim-cert.pem'), 'utf8'),
    sign() {
      throw new Error('the secure element is gone');
    },
  };
  await assert.rejects(
    fp.provision({
      claim: claimOptions({ signer: failing }),
      templateName: 'FleetTemplate',
      storeDir: path.join(work, 'failing'),
      maxAttempts: 1,
      deadlineMs: 30_000,
    }),
    (e) => e instanceof fp.FleetprovError && e.code === 'FP_ERR_SIGNER',
  );
  const base = { templateName: 'FleetTemplate', storeDir: path.join(work, 'bad') };
  await assert.rejects(
    fp.provision({ ...base, claim: emulator.options(), deviceSigner: { publicKey: 'no PEM', sign: () => null } }),
    (e) => e.code === 'FP_ERR_INVALID_ARGUMENT' && /deviceSigner.publicKey/.test(e.detail),
  );
  await assert.rejects(
    fp.provision({ ...base, claim: emulator.options(), deviceSigner: { publicKey: failing.publicKey } }),
    (e) => e.code === 'FP_ERR_INVALID_ARGUMENT' && /deviceSigner.sign must be a function/.test(e.detail),
  );
  await assert.rejects(
    fp.provision({ ...base, claim: { ...emulator.options(), signer: failing } }),
    (e) => e.code === 'FP_ERR_INVALID_ARGUMENT' && /one private key/.test(e.detail),
  );
  await assert.rejects(
    fp.provision({ ...base, claim: emulator.options(), keyType: 'service', deviceSigner: failing }),
    (e) => e.code === 'FP_ERR_INVALID_ARGUMENT' && /deviceSigner/.test(e.detail),
  );
});
