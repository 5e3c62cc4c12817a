'use strict';
// provision() (fp_provision_start()) against the emulator: both flows, reuse, a rejection,
// CBOR, abort.
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { test, before, after } = require('node:test');

const fp = require('../index.js');
const { missing, startEmulator, startLink, anyTemplatePolicy } = require('./emulator.js');

const skip = missing();

let emulator;
const dirs = [];
before(async () => {
  if (!skip) {
    emulator = await startEmulator();
  }
});
after(async () => {
  await emulator?.stop();
  for (const d of dirs) {
    fs.rmSync(d, { recursive: true, force: true });
  }
});

function tempDir() {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'fleetprov-node-store-'));
  dirs.push(d);
  return path.join(d, 'identity');
}

function options(emu, serial, extra = {}) {
  return {
    claim: emu.options(),
    templateName: 'FleetTemplate',
    storeDir: tempDir(),
    parameters: { SerialNumber: serial, DeviceLocation: 'Seattle' },
    deadlineMs: 60_000,
    ...extra,
  };
}

/** Polls until no library callback is owed, failing after `ms`. */
async function drained(ms) {
  const deadline = Date.now() + ms;
  while (fp.pendingCallbacks() !== 0) {
    if (Date.now() > deadline) {
      assert.fail(`${fp.pendingCallbacks()} callbacks still owed after ${ms} ms`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Checks the stored identity without ever printing the key. */
function checkIdentity(result, storeDir, keyHeader) {
  assert.match(result.certificateId, /^[0-9a-f]{64}$/);
  for (const f of [result.certificateFile, result.privateKeyFile, result.metadataFile]) {
    assert.equal(path.dirname(f), storeDir);
  }
  assert.match(fs.readFileSync(result.certificateFile, 'utf8'), /BEGIN CERTIFICATE/);
  assert.equal(fs.statSync(result.privateKeyFile).mode & 0o777, 0o600);
  assert.ok(fs.readFileSync(result.privateKeyFile, 'latin1').includes(keyHeader), `no ${keyHeader} in the key file`);
  assert.equal(result.keyLocation, 'file');
}

test('provision: the CSR flow, then reuse, then force', { skip }, async () => {
  const opts = options(emulator, 'node-p1', { csrSubject: 'CN=node-p1' });
  const steps = [];
  const first = await fp.provision(opts, { onProgress: (e) => steps.push(e) });
  assert.equal(first.thingName, 'ThingPrefix_node-p1');
  assert.equal(first.reused, false);
  assert.equal(first.attempts, 1);
  assert.equal(first.clientId, first.thingName);
  assert.equal(typeof first.deviceConfiguration, 'object');
  checkIdentity(first, opts.storeDir, 'PRIVATE KEY');
  const seen = (step, detail) => steps.some((e) => e.step === step && e.detail.includes(detail));
  for (const [step, detail] of [
    ['connecting', 'claim'],
    ['creating', 'Csr'],
    ['registering', 'FleetTemplate'],
    ['saving', ''],
    ['verifying', first.thingName],
  ]) {
    assert.ok(seen(step, detail), `no ${step} step with "${detail}" in ${JSON.stringify(steps)}`);
  }
  assert.ok(steps.every((e) => e.attempt === 1 && e.delayMs === 0));

  const again = [];
  const second = await fp.provision(opts, { onProgress: (e) => again.push(e) });
  assert.equal(second.reused, true);
  assert.equal(second.certificateId, first.certificateId);
  assert.ok(again.some((e) => e.step === 'reusing' && e.detail === first.thingName));
  assert.ok(!again.some((e) => e.step === 'connecting' && e.detail === 'claim'));

  const forced = await fp.provision({ ...opts, force: true });
  assert.equal(forced.reused, false);
  assert.notEqual(forced.certificateId, first.certificateId);
  await drained(5_000);
});

test('provision: rotation renews the stored identity with itself, not the claim', { skip }, async () => {
  const opts = options(emulator, 'node-rot');
  const first = await fp.provision(opts);
  assert.equal(first.rotated, false);
  assert.equal(first.previousCertificateId, null);
  const steps = [];
  // A window of the whole lifetime: due at once (the sample template's policy allows it).
  const rotated = await fp.provision(
    { ...opts, rotateBeforePercent: 100 },
    { onProgress: (e) => steps.push(e) },
  );
  assert.equal(rotated.rotated, true);
  assert.equal(rotated.reused, false);
  assert.equal(rotated.previousCertificateId, first.certificateId);
  assert.notEqual(rotated.certificateId, first.certificateId);
  assert.equal(rotated.thingName, first.thingName);
  assert.ok(steps.some((e) => e.step === 'rotating' && e.detail.startsWith(first.thingName)));
  assert.ok(!steps.some((e) => e.step === 'connecting' && e.detail === 'claim'), JSON.stringify(steps));
  checkIdentity(rotated, opts.storeDir, 'PRIVATE KEY');
  // Rotation off: reused.
  const kept = await fp.provision({ ...opts, rotateBeforeMs: 0 });
  assert.equal(kept.reused, true);
  assert.equal(kept.certificateId, rotated.certificateId);
  await assert.rejects(fp.provision({ ...opts, rotateBeforePercent: 101 }), (e) => {
    assert.equal(e.code, 'FP_ERR_INVALID_ARGUMENT');
    return true;
  });
  await drained(5_000);
});

test('provision: the keys flow (CreateKeysAndCertificate) over MQTT 3.1.1', { skip }, async () => {
  const opts = options(emulator, 'node-p2', { keyType: 'service' });
  opts.claim.mqttVersion = 3;
  const steps = [];
  const result = await fp.provision(opts, { onProgress: (e) => steps.push(e) });
  assert.equal(result.thingName, 'ThingPrefix_node-p2');
  assert.equal(result.reused, false);
  checkIdentity(result, opts.storeDir, 'BEGIN RSA PRIVATE KEY');
  assert.ok(steps.some((e) => e.step === 'creating' && e.detail.includes('CreateKeysAndCertificate')));
  await drained(5_000);
});

test('provision: a rejection carries AWS statusCode, errorCode and errorMessage', { skip }, async () => {
  await assert.rejects(fp.provision(options(emulator, 'node-p3', { templateName: 'NoSuchTemplate' })), (e) => {
    assert.ok(e instanceof fp.RejectedError && e instanceof fp.FleetprovError);
    assert.equal(e.code, 'FP_ERR_REJECTED');
    assert.equal(e.operation, 'provision');
    assert.equal(e.statusCode, 404);
    assert.equal(e.errorCode, 'ResourceNotFound');
    assert.ok(e.errorMessage.length > 0);
    return true;
  });
  // Refused before anything starts.
  for (const bad of [{ templateName: 'bad name!' }, { keyType: 'dsa' }, { maxAttempts: 0 }]) {
    await assert.rejects(fp.provision(options(emulator, 'node-p3', bad)), (e) => {
      assert.ok(e instanceof fp.FleetprovError);
      assert.equal(e.code, 'FP_ERR_INVALID_ARGUMENT', JSON.stringify(bad));
      return true;
    });
  }
  await drained(5_000);
});

test('provision: CBOR, under a claim policy that allows only the CBOR topics', { skip }, async () => {
  // Without the JSON entries (never the last of their lists, so the commas stay right).
  const lines = fs.readFileSync(anyTemplatePolicy, 'utf8').split('\n');
  const policyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleetprov-node-policy-'));
  dirs.push(policyDir);
  const policy = path.join(policyDir, 'cbor-only.json');
  fs.writeFileSync(policy, lines.filter((l) => !l.includes('/json')).join('\n'));
  const cborOnly = await startEmulator({ claimPolicy: policy });
  try {
    // JSON is refused there, so the CBOR success below proves the payloads were CBOR.
    await assert.rejects(fp.provision(options(cborOnly, 'node-json', { maxAttempts: 1 })), fp.FleetprovError);
    const opts = options(cborOnly, 'node-cbor');
    opts.claim.payloadFormat = 'cbor';
    const result = await fp.provision(opts);
    assert.equal(result.thingName, 'ThingPrefix_node-cbor');
    assert.equal(result.reused, false);
  } finally {
    await cborOnly.stop();
  }
  await drained(5_000);
});

test('provision: aborting cancels the run; it ends at once', { skip }, async () => {
  const link = await startLink(emulator.port);
  link.stall(); // TCP is accepted, the TLS handshake never arrives
  try {
    const opts = options(emulator, 'node-abort', { deadlineMs: 3_600_000 });
    opts.claim.port = link.port;
    const controller = new AbortController();
    let aborted = false;
    let late = 0;
    const t0 = Date.now();
    const run = fp.provision(opts, {
      signal: controller.signal,
      onProgress: (e) => {
        if (aborted) {
          late++;
        }
        if (e.step === 'connecting') {
          aborted = true;
          controller.abort(new Error('stop'));
        }
      },
    });
    await assert.rejects(run, (e) => {
      assert.ok(e instanceof fp.AbortError && e instanceof fp.FleetprovError);
      assert.equal(e.code, 'FP_ERR_CANCELLED');
      assert.equal(e.cause.message, 'stop');
      return true;
    });
    assert.ok(Date.now() - t0 < 1_000, `rejected after ${Date.now() - t0} ms`);
    // The run has ended (an hour-long deadline: only the cancellation could end it).
    assert.equal(fp.pendingCallbacks(), 0, 'the run still owes its callback');
    assert.equal(late, 0, 'onProgress called after the abort');

    // An already aborted signal: nothing starts.
    await assert.rejects(fp.provision(opts, { signal: AbortSignal.abort() }), fp.AbortError);
    assert.equal(fp.pendingCallbacks(), 0);
  } finally {
    await link.close();
  }
});

test('provision: a forced run aborted at each step keeps the stored identity', { skip }, async () => {
  const opts = options(emulator, 'node-keep');
  let first = await fp.provision(opts);
  for (const step of ['connecting', 'creating', 'registering', 'saving', 'verifying']) {
    const controller = new AbortController();
    const run = fp.provision(
      { ...opts, force: true },
      {
        signal: controller.signal,
        onProgress: (e) => {
          if (e.step === step) {
            controller.abort(new Error(step));
          }
        },
      },
    );
    await assert.rejects(run, (e) => e instanceof fp.AbortError && e.code === 'FP_ERR_CANCELLED');
    const again = await fp.provision(opts);
    assert.equal(again.reused, true, step);
    if (again.certificateId !== first.certificateId) {
      // Cancelled while saving or verifying, the new identity is left pending: the next run
      // verifies and commits it instead of leaving its certificate behind.
      assert.ok(step === 'saving' || step === 'verifying', step);
      first = again;
    }
  }
  await drained(5_000);
});

test('provision: your own CSR and its key', { skip }, async () => {
  const crypto = require('node:crypto');
  const { execFileSync } = require('node:child_process');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleetprov-node-csr-'));
  dirs.push(dir);
  const keyFile = path.join(dir, 'device.key');
  execFileSync('openssl', ['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', keyFile]);
  const csrPem = execFileSync('openssl', ['req', '-new', '-key', keyFile, '-subj', '/CN=node-user-csr'], {
    encoding: 'utf8',
  });
  const csrPrivateKey = fs.readFileSync(keyFile);
  const opts = options(emulator, 'node-user-csr', { csrPem, csrPrivateKey });
  const result = await fp.provision(opts);
  checkIdentity(result, opts.storeDir, 'PRIVATE KEY');
  const cert = new crypto.X509Certificate(fs.readFileSync(result.certificateFile));
  assert.equal(
    cert.publicKey.export({ type: 'spki', format: 'pem' }),
    crypto.createPublicKey(csrPrivateKey).export({ type: 'spki', format: 'pem' }),
  );
  await assert.rejects(
    fp.provision(options(emulator, 'node-user-csr', { csrPem })),
    (e) => e.code === 'FP_ERR_INVALID_ARGUMENT' && /go together/.test(e.detail),
  );
});

test('provision: a pending identity is verified and committed; a forced run reports it abandoned', { skip }, async () => {
  const opts = options(emulator, 'node-pending');
  const committed = path.join(opts.storeDir, 'identity.json');
  const pending = path.join(opts.storeDir, 'pending.json');
  const first = await fp.provision(opts);
  assert.deepEqual(first.abandonedCertificates, []);
  // As a run that could not verify its new identity leaves it.
  fs.renameSync(committed, pending);

  const steps = [];
  const verified = await fp.provision(opts, { onProgress: (e) => steps.push(e) });
  assert.equal(verified.certificateId, first.certificateId);
  assert.equal(verified.thingName, first.thingName);
  assert.equal(verified.reused, true);
  assert.equal(verified.metadataFile, committed);
  assert.deepEqual(verified.abandonedCertificates, []);
  const seen = (list, step, detail) => list.some((e) => e.step === step && e.detail === detail);
  // Verified with a device connection, never a claim one, nothing given up.
  assert.ok(seen(steps, 'reusing', first.thingName), JSON.stringify(steps));
  assert.ok(seen(steps, 'verifying', first.thingName), JSON.stringify(steps));
  assert.ok(seen(steps, 'connecting', 'device'), JSON.stringify(steps));
  assert.ok(!seen(steps, 'connecting', 'claim'), JSON.stringify(steps));
  assert.ok(!steps.some((e) => e.step === 'certificateAbandoned'), JSON.stringify(steps));
  assert.ok(fs.existsSync(committed));
  assert.ok(!fs.existsSync(pending));

  // Force: a new identity is wanted, so the pending one is given up, and reported.
  fs.renameSync(committed, pending);
  const forcedSteps = [];
  const forced = await fp.provision({ ...opts, force: true }, { onProgress: (e) => forcedSteps.push(e) });
  assert.equal(forced.reused, false);
  assert.notEqual(forced.certificateId, first.certificateId);
  assert.equal(forced.thingName, first.thingName);
  assert.deepEqual(forced.abandonedCertificates, [first.certificateId]);
  assert.deepEqual(
    forcedSteps.filter((e) => e.step === 'certificateAbandoned').map((e) => e.detail),
    [first.certificateId],
  );
  assert.ok(seen(forcedSteps, 'connecting', 'claim'), JSON.stringify(forcedSteps));
  checkIdentity(forced, opts.storeDir, 'PRIVATE KEY');
  assert.ok(!fs.existsSync(pending));
  await drained(5_000);
});
