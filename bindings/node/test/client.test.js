'use strict';
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const { once } = require('node:events');
const fs = require('node:fs');
const { test, before, after } = require('node:test');

const fp = require('../index.js');
const { missing, startEmulator, startLink, newCsr } = require('./emulator.js');

const skip = missing();
const params = (serial) => ({ SerialNumber: serial, DeviceLocation: 'Seattle' });

let emulator;
before(async () => {
  if (!skip) {
    emulator = await startEmulator();
  }
});
after(async () => {
  await emulator?.stop();
});

/** Runs body with a connected client, then closes it and checks nothing is owed. */
async function withClient(options, body) {
  const client = new fp.Client(options);
  try {
    await client.connect();
    await body(client);
  } finally {
    await client.close();
    assert.equal(fp.pendingCallbacks(), 0, 'callbacks still owed after close');
  }
}

async function register(client, token, serial) {
  const thing = await client.registerThing('FleetTemplate', token, params(serial));
  assert.equal(thing.thingName, `ThingPrefix_${serial}`);
  assert.equal(typeof thing.deviceConfiguration, 'object');
}

test('CreateKeysAndCertificate, then RegisterThing', { skip }, async () => {
  await withClient(emulator.options(), async (client) => {
    const keys = await client.createKeys();
    assert.ok(Buffer.isBuffer(keys.privateKey));
    assert.ok(keys.privateKey.toString('latin1').startsWith('-----BEGIN RSA PRIVATE KEY-----'));
    assert.match(keys.certificateId, /^[0-9a-f]{64}$/);
    assert.match(keys.certificatePem, /BEGIN CERTIFICATE/);
    keys.privateKey.fill(0);
    assert.ok(keys.privateKey.every((b) => b === 0));
    await register(client, keys.certificateOwnershipToken, 'node-1');
  });
});

test('CreateCertificateFromCsr, then RegisterThing, with the claim from memory', { skip }, async () => {
  const { certFile, keyFile, ...rest } = emulator.options();
  const keyPem = fs.readFileSync(keyFile);
  const options = { ...rest, certPem: fs.readFileSync(certFile, 'utf8'), keyPem };
  const client = new fp.Client(options);
  keyPem.fill(0); // the library holds its own copy
  try {
    await client.connect();
    const cert = await client.createFromCsr(newCsr());
    assert.match(cert.certificateId, /^[0-9a-f]{64}$/);
    await register(client, cert.certificateOwnershipToken, 'node-2');
  } finally {
    await client.close();
  }
});

test('rejections carry AWS statusCode, errorCode and errorMessage', { skip }, async () => {
  await withClient(emulator.options(), async (client) => {
    const cert = await client.createFromCsr(newCsr());
    const cases = [
      ['NoSuchTemplate', cert.certificateOwnershipToken, 404, 'ResourceNotFound'],
      ['FleetTemplate', 'not-a-token', 400, 'InvalidCertificateOwnershipToken'],
    ];
    for (const [template, token, statusCode, errorCode] of cases) {
      await assert.rejects(client.registerThing(template, token, params('node-3')), (e) => {
        assert.ok(e instanceof fp.RejectedError && e instanceof fp.FleetprovError && e instanceof Error);
        assert.equal(e.code, 'FP_ERR_REJECTED');
        assert.equal(e.operation, 'RegisterThing');
        assert.equal(e.statusCode, statusCode);
        assert.equal(e.errorCode, errorCode);
        assert.ok(e.errorMessage.length > 0);
        return true;
      });
    }
    // Refused before anything is sent.
    await assert.rejects(client.registerThing('bad name!', cert.certificateOwnershipToken), {
      code: 'FP_ERR_INVALID_ARGUMENT',
    });
    assert.throws(() => fp.checkRegistration('FleetTemplate', { SerialNumber: 1 }), {
      code: 'FP_ERR_INVALID_ARGUMENT',
    });
  });
});

/** A client connected to the emulator through a link that then stalls (see startLink). */
async function stalled(operationTimeoutMs, body) {
  const link = await startLink(emulator.port);
  try {
    await withClient({ ...emulator.options(), port: link.port, operationTimeoutMs }, async (client) => {
      link.stall();
      await body(client);
    });
  } finally {
    await link.close();
  }
}

test('an unanswered request times out', { skip }, async () => {
  await stalled(300, async (client) => {
    await assert.rejects(client.createKeys(), (e) => {
      assert.ok(e instanceof fp.TimeoutError);
      assert.equal(e.code, 'FP_ERR_TIMEOUT');
      assert.equal(e.operation, 'CreateKeysAndCertificate');
      return true;
    });
  });
});

test('aborting a pending call rejects it and closes the connection', { skip }, async () => {
  await stalled(3_600_000, async (client) => {
    const controller = new AbortController();
    const pending = client.createFromCsr(newCsr(), { signal: controller.signal });
    controller.abort(new Error('no longer needed')); // the library has accepted the call
    await assert.rejects(pending, (e) => {
      assert.ok(e instanceof fp.AbortError);
      assert.equal(e.name, 'AbortError');
      assert.equal(e.code, 'FP_ERR_CANCELLED');
      assert.equal(e.cause.message, 'no longer needed');
      return true;
    });
    await client.stopped;
    await assert.rejects(client.createKeys(), { code: 'FP_ERR_NOT_CONNECTED' });
    // An already aborted signal: refused without calling the library.
    await assert.rejects(client.createKeys({ signal: AbortSignal.abort() }), fp.AbortError);
  });
});

test('aborting connect() stops connecting', { skip }, async () => {
  const link = await startLink(emulator.port);
  link.stall(); // TCP is accepted, the TLS handshake never arrives
  const client = new fp.Client({ ...emulator.options(), port: link.port, connectTimeoutMs: 3_600_000 });
  try {
    await assert.rejects(client.connect({ signal: AbortSignal.timeout(200) }), (e) => {
      assert.ok(e instanceof fp.AbortError);
      assert.equal(e.code, 'FP_ERR_CANCELLED');
      assert.equal(e.cause.name, 'TimeoutError');
      return true;
    });
  } finally {
    await client.close();
    await link.close();
  }
});

test('close() cancels what is pending', { skip }, async () => {
  await stalled(3_600_000, async (client) => {
    const rejected = assert.rejects(client.createKeys(), { code: 'FP_ERR_CANCELLED' });
    await client.close();
    await rejected;
  });
});

test('a failed connection is an Error with the library message', { skip }, async () => {
  const client = new fp.Client({ ...emulator.options(), caFile: undefined, caPem: 'not a PEM' });
  try {
    await assert.rejects(client.connect(), (e) => {
      assert.ok(e instanceof fp.FleetprovError);
      assert.equal(e.operation, 'connect');
      assert.ok(e.detail.length > 0);
      return true;
    });
  } finally {
    await client.close();
  }
});

test('bad options throw at once', { skip }, () => {
  assert.throws(() => new fp.Client({ endpoint: 'https://x' }), { code: 'FP_ERR_INVALID_ARGUMENT' });
  assert.throws(() => new fp.Client({ endpoint: 'localhost', port: 0 }), {
    code: 'FP_ERR_INVALID_ARGUMENT',
  });
  assert.equal(fp.version().split('.').length, 3);
});

// The process ends by itself once the work is done: nothing of the package keeps the event
// loop alive, with or without close(). (The test runner would hang otherwise; a child process
// makes it this test's failure, its exit code checked.)
for (const closes of [true, false]) {
  // The timeout only turns a hang into a failure.
  const name = `node exits by itself after the work${closes ? '' : ', without close()'}`;
  test(name, { skip, timeout: 60_000 }, async () => {
    const script = `
      const fp = require(${JSON.stringify(require.resolve('../index.js'))});
      (async () => {
        const client = new fp.Client(${JSON.stringify(emulator.options())});
        await client.connect();
        const cert = await client.createFromCsr(${JSON.stringify(newCsr())});
        console.log(cert.certificateId);
        ${closes ? 'await client.close();' : ''}
      })().catch((e) => { console.error(e); process.exitCode = 1; });`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    const [code, signal] = await once(child, 'exit');
    assert.equal(signal, null);
    assert.equal(code, 0);
    assert.match(out, /^[0-9a-f]{64}$/m);
  });
}
