'use strict';
// AWS IoT Fleet Provisioning for Node.js: a Promise API over libfleetprov's C API (koffi).

const native = require('./lib/native.js');

/** The names of enum fp_result (fleetprov.h), indexed by value. */
const CODES = Object.freeze([
  'FP_OK',
  'FP_ERR_NULL_ARGUMENT',
  'FP_ERR_INVALID_UTF8',
  'FP_ERR_INVALID_ARGUMENT',
  'FP_ERR_IO',
  'FP_ERR_TLS',
  'FP_ERR_CONNECTION_REFUSED',
  'FP_ERR_CONNECTION',
  'FP_ERR_DISCONNECTED',
  'FP_ERR_TIMEOUT',
  'FP_ERR_SUBSCRIBE_REFUSED',
  'FP_ERR_REJECTED',
  'FP_ERR_BAD_REPLY',
  'FP_ERR_CANCELLED',
  'FP_ERR_NOT_CONNECTED',
  'FP_ERR_ALREADY_CONNECTED',
  'FP_ERR_PANIC',
  'FP_ERR_INTERNAL',
  'FP_ERR_PROTOCOL',
  'FP_ERR_PUBLISH_REFUSED',
  'FP_ERR_SIGNER',
  'FP_ERR_STORE',
]);
const FP_OK = 0;
const FP_ERR_INVALID_ARGUMENT = CODES.indexOf('FP_ERR_INVALID_ARGUMENT');
const FP_ERR_TIMEOUT = CODES.indexOf('FP_ERR_TIMEOUT');
const FP_ERR_REJECTED = CODES.indexOf('FP_ERR_REJECTED');
const EVENT_CONNECTION_SUCCESS = 0;
const EVENT_CONNECTION_FAILURE = 1;
const EVENT_DISCONNECTED = 2;
const EVENT_STOPPED = 3;

/** A failure the library reported. `code` is the fp_result name, `result` its number. */
class FleetprovError extends Error {
  constructor(operation, result, detail, options) {
    const name = CODES[result] ?? `FP_ERR_${result}`;
    super(`${operation}: ${detail} (${name})`, options);
    this.name = 'FleetprovError';
    this.operation = operation;
    this.code = name;
    this.result = result;
    this.detail = detail;
  }
}

/** The service answered on /rejected: AWS's statusCode, errorCode and errorMessage. */
class RejectedError extends FleetprovError {
  constructor(operation, detail, aws) {
    super(operation, FP_ERR_REJECTED, detail);
    this.name = 'RejectedError';
    this.statusCode = aws.statusCode;
    this.errorCode = aws.errorCode;
    this.errorMessage = aws.errorMessage;
    this.message = `${operation} rejected: statusCode=${aws.statusCode} errorCode=${aws.errorCode} errorMessage=${aws.errorMessage}`;
  }
}

/** No answer in time (the client's connect or operation timeout). */
class TimeoutError extends FleetprovError {
  constructor(operation, detail) {
    super(operation, FP_ERR_TIMEOUT, detail);
    this.name = 'TimeoutError';
  }
}

/**
 * The call's AbortSignal fired first; `cause` is the signal's reason. The code is always
 * FP_ERR_CANCELLED: what the library reports after the disconnect depends on how far the call
 * had got (cancelled, disconnected, or not connected when it was queued behind it).
 */
const ABORTED = new Set(['FP_ERR_CANCELLED', 'FP_ERR_DISCONNECTED', 'FP_ERR_NOT_CONNECTED']);
class AbortError extends FleetprovError {
  constructor(operation, detail, signal) {
    super(operation, CODES.indexOf('FP_ERR_CANCELLED'), detail, { cause: signal.reason });
    this.name = 'AbortError';
  }
}

function resultStr(result) {
  return api().fn.resultStr(result);
}

/** An error for a call that returned `result` instead of FP_OK. */
function resultError(operation, result) {
  return new FleetprovError(operation, result, resultStr(result));
}

/** Copies a borrowed fp_error (valid only inside its callback) into an Error. */
function copyError(operation, error) {
  const { fn } = api();
  const result = fn.errorCode(error);
  const detail = fn.errorMessage(error);
  if (result === FP_ERR_REJECTED) {
    return new RejectedError(operation, detail, {
      statusCode: fn.errorStatusCode(error),
      errorCode: fn.errorAwsCode(error),
      errorMessage: fn.errorAwsMessage(error),
    });
  }
  if (result === FP_ERR_TIMEOUT) {
    return new TimeoutError(operation, detail);
  }
  return new FleetprovError(operation, result, detail);
}

// ---------- callbacks: one registered set, dispatched by the id given as user_data ----------

/** id -> what the callback settles: an operation, or a client's lifecycle. */
const waiting = new Map();
let nextId = 1;

// The relayed callbacks do not keep Node's event loop alive: a timer does, while any
// callback is owed, and only then.
let owed = 0;
let keepAlive = null;
function hold() {
  if (owed++ === 0) {
    keepAlive = setInterval(() => {}, 1 << 30);
  }
}
function release() {
  if (--owed === 0) {
    clearInterval(keepAlive);
    keepAlive = null;
  }
}

/** Settles operation `id` from its callback; a throw must not reach koffi's relay. */
function complete(id, response, error, decode) {
  const op = waiting.get(Number(id));
  if (op === undefined) {
    return;
  }
  try {
    if (error !== null) {
      op.settle(copyError(op.operation, error));
    } else {
      op.settle(null, decode(response));
    }
  } catch (e) {
    op.settle(e);
  }
}

function api() {
  return native.load({
    lifecycle: (id, event, error) => {
      try {
        waiting.get(Number(id))?.event(event, error);
      } catch {
        // the client's handler copies and settles only; nothing to report to the library
      }
    },
    createKeys: (id, r, e) => complete(id, r, e, (p) => api().decodeKeys(p)),
    createFromCsr: (id, r, e) => complete(id, r, e, (p) => api().decodeCertificate(p)),
    registerThing: (id, r, e) => complete(id, r, e, (p) => api().decodeThing(p)),
    provisionProgress: (id, step, attempt, delayMs, detail) => {
      try {
        waiting.get(Number(id))?.progress(step, attempt, delayMs, detail);
      } catch {
        // onProgress threw: nothing to report to the library (see provision())
      }
    },
    provisioned: (id, r, e) => complete(id, r, e, (p) => api().decodeProvisioned(p)),
    sign: (id, scheme, message, digest) => {
      const signer = signers.get(Number(id));
      const name = SCHEMES[scheme];
      if (signer === undefined || name === undefined) {
        throw new Error(`no signer ${id} or unknown scheme ${scheme}`);
      }
      return signer.sign(name, message, digest);
    },
    signerRelease: (id) => {
      signers.delete(Number(id));
    },
  });
}

// ---------- signers: keys the application holds ----------

/** enum fp_signature_scheme by value. */
const SCHEMES = Object.freeze([
  undefined,
  'ecdsaP256Sha256',
  'ecdsaP384Sha384',
  'rsaPkcs1Sha256',
  'rsaPkcs1Sha384',
  'rsaPkcs1Sha512',
  'rsaPssSha256',
  'rsaPssSha384',
  'rsaPssSha512',
]);

/** id -> the application's signer ({ publicKey, sign }), until the library releases it. */
const signers = new Map();

/** A library signer for `signer` ({ publicKey: PEM, sign(scheme, message, digest) }); the
 * caller frees it once the options that need it have taken it. */
function makeSigner(what, signer) {
  const { fn, callbacks } = api();
  if (typeof signer?.sign !== 'function') {
    throw new FleetprovError(what, FP_ERR_INVALID_ARGUMENT, `${what}.sign must be a function`);
  }
  if (typeof signer.publicKey !== 'string' && !Buffer.isBuffer(signer.publicKey)) {
    throw new FleetprovError(what, FP_ERR_INVALID_ARGUMENT, `${what}.publicKey must be PEM text`);
  }
  const id = nextId++;
  signers.set(id, signer);
  const out = [null];
  const r = fn.signerNew(String(signer.publicKey), callbacks.sign, id, callbacks.signerRelease, out);
  if (r !== FP_OK) {
    signers.delete(id); // release is never called on failure
    if (r === FP_ERR_INVALID_ARGUMENT) {
      throw new FleetprovError(
        what,
        r,
        `${what}.publicKey holds no CERTIFICATE or PUBLIC KEY of an EC P-256, P-384 or RSA 2048-8192 key`,
      );
    }
    throw resultError(what, r);
  }
  return out[0];
}

/** A NUL-terminated copy of PEM text, for the library, which copies it in turn. */
function cText(pem) {
  const bytes = Buffer.isBuffer(pem) ? pem : Buffer.from(pem, 'utf8');
  const out = Buffer.alloc(bytes.length + 1);
  bytes.copy(out);
  return out;
}

const PAYLOAD_FORMATS = Object.freeze({ json: 0, cbor: 1 });

/** The library's client options from `options`; the caller frees them. */
function clientOptions(options) {
  const { fn } = api();
  if (typeof options?.endpoint !== 'string') {
    throw new FleetprovError('options', FP_ERR_INVALID_ARGUMENT, 'endpoint must be a string');
  }
  const out = [null];
  const made = fn.optionsNew(options.endpoint, out);
  if (made !== FP_OK) {
    throw resultError('endpoint', made);
  }
  const o = out[0];
  try {
    for (const [name, set] of Object.entries(fn.setters)) {
      let value = options[name];
      if (value === undefined || value === null) {
        continue;
      }
      if (name === 'payloadFormat') {
        value = PAYLOAD_FORMATS[value];
        if (value === undefined) {
          throw new FleetprovError(name, FP_ERR_INVALID_ARGUMENT, "payloadFormat must be 'json' or 'cbor'");
        }
      }
      const isPem = name.endsWith('Pem');
      const arg = isPem ? cText(value) : value;
      const result = set(o, arg);
      if (isPem) {
        arg.fill(0); // the library has its copy; this one may hold a key
      }
      if (result !== FP_OK) {
        throw resultError(name, result);
      }
    }
    if (options.proxy) {
      const result = fn.setProxy(o, options.proxy.host, options.proxy.port ?? 8080);
      if (result !== FP_OK) {
        throw resultError('proxy', result);
      }
    }
    if (options.pkcs11 != null) {
      setPkcs11(o, 'pkcs11', options.pkcs11);
    }
    if (options.signer != null) {
      if (options.keyFile != null || options.keyPem != null || options.pkcs11 != null) {
        throw new FleetprovError('signer', FP_ERR_INVALID_ARGUMENT, 'give one private key: keyFile, keyPem, pkcs11 or signer');
      }
      const signer = makeSigner('signer', options.signer);
      try {
        const r = fn.setSigner(o, signer);
        if (r !== FP_OK) {
          throw resultError('signer', r);
        }
      } finally {
        fn.signerFree(signer); // the options share it
      }
    }
  } catch (e) {
    fn.optionsFree(o);
    throw e;
  }
  return o;
}

/** Puts the PKCS#11 key `key` ({ module, keyLabel, pin?, tokenLabel?, slotId? }) on `o`. */
function setPkcs11(o, what, key) {
  const { fn } = api();
  const set = fn.pkcs11;
  const check = (name, r) => {
    if (r !== FP_OK) {
      throw resultError(`${what}.${name}`, r);
    }
  };
  for (const name of ['module', 'keyLabel']) {
    if (typeof key?.[name] !== 'string') {
      throw new FleetprovError(what, FP_ERR_INVALID_ARGUMENT, `${what}.${name} must be a string`);
    }
    check(name, set[name](o, key[name]));
  }
  if (key.tokenLabel != null) {
    check('tokenLabel', set.tokenLabel(o, key.tokenLabel));
  }
  if (key.slotId != null) {
    check('slotId', set.slotId(o, key.slotId));
  }
  if (key.pin != null) {
    const pin = cText(key.pin);
    try {
      check('pin', set.pin(o, pin));
    } finally {
      pin.fill(0); // the library has its copy
    }
  }
}

const PKCS11_KEY_TYPES = Object.freeze({ ecP256: 1, ecP384: 2, rsa2048: 3 });

/** The device key of `po` kept in the token `key` names, generated there if missing. */
function setDevicePkcs11(po, key, keyType) {
  const { fn } = api();
  const type = PKCS11_KEY_TYPES[keyType ?? 'ecP256'];
  if (type === undefined) {
    throw new FleetprovError(
      'devicePkcs11',
      FP_ERR_INVALID_ARGUMENT,
      `with devicePkcs11, keyType must be one of ${Object.keys(PKCS11_KEY_TYPES).join(', ')}`,
    );
  }
  const out = [null];
  const made = fn.optionsNew('unused', out);
  if (made !== FP_OK) {
    throw resultError('devicePkcs11', made);
  }
  try {
    setPkcs11(out[0], 'devicePkcs11', key);
    const r = fn.provisionSetters.devicePkcs11(po, out[0], type, 1);
    if (r !== FP_OK) {
      throw resultError('devicePkcs11', r);
    }
  } finally {
    fn.optionsFree(out[0]); // copied by the setter
  }
}

// ---------- the client ----------

/** One connection to the provisioning endpoint; it connects once. */
class Client {
  #client;
  #id;
  #connected = null; // the pending connect() settle function
  #lost = null;
  #stopped;
  #stop;

  constructor(options) {
    const { fn } = api();
    const o = clientOptions(options);
    try {
      const client = [null];
      const result = fn.clientNew(o, client);
      if (result !== FP_OK) {
        throw resultError('new client', result);
      }
      this.#client = client[0];
    } finally {
      fn.optionsFree(o); // the client keeps its own copy
    }
    this.#stopped = new Promise((resolve) => {
      this.#stop = resolve;
    });
    this.#id = nextId++;
    waiting.set(this.#id, { event: (event, error) => this.#event(event, error) });
  }

  #event(event, error) {
    if (event === EVENT_CONNECTION_SUCCESS) {
      this.#connected?.(null);
    } else if (event === EVENT_CONNECTION_FAILURE) {
      this.#connected?.(copyError('connect', error));
    } else if (event === EVENT_DISCONNECTED) {
      this.#lost = copyError('connection', error);
    } else if (event === EVENT_STOPPED) {
      this.#stop();
    }
  }

  /** Resolves once the connection has ended (failed, lost, disconnected or closed). */
  get stopped() {
    return this.#stopped;
  }

  /** Why an established connection was lost, or null. */
  get lostError() {
    return this.#lost;
  }

  #handle() {
    if (this.#client === null) {
      throw new FleetprovError('client', CODES.indexOf('FP_ERR_CANCELLED'), 'the client is closed');
    }
    return this.#client;
  }

  /**
   * Waits for one callback: `start(id)` makes the call, `register(settle)` puts the settle
   * function where the callback finds it. On abort the connection is closed (the C API
   * cancels only by disconnecting), which makes the callback come.
   */
  #await(operation, signal, start, register) {
    return new Promise((resolve, reject) => {
      if (signal?.aborted) {
        reject(new AbortError(operation, 'not started', signal));
        return;
      }
      const onAbort = () => {
        if (this.#client !== null) {
          api().fn.clientDisconnect(this.#client);
        }
      };
      const settle = (error, value) => {
        release();
        signal?.removeEventListener('abort', onAbort);
        if (error === null) {
          resolve(value);
        } else if (signal?.aborted && error instanceof FleetprovError && ABORTED.has(error.code)) {
          reject(new AbortError(operation, error.detail, signal));
        } else {
          reject(error);
        }
      };
      const unregister = register(settle);
      let result;
      try {
        result = start(this.#handle());
      } catch (e) {
        unregister();
        reject(e);
        return;
      }
      if (result !== FP_OK) {
        unregister(); // its callback will never run
        reject(resultError(operation, result));
        return;
      }
      hold();
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  /** An operation: a fresh id, forgotten once its callback has run. */
  #operation(operation, signal, start) {
    const id = nextId++;
    return this.#await(
      operation,
      signal,
      (client) => start(client, id),
      (settle) => {
        waiting.set(id, {
          operation,
          settle: (error, value) => {
            waiting.delete(id);
            settle(error, value);
          },
        });
        return () => waiting.delete(id);
      },
    );
  }

  /** Connects (TLS, MQTT); resolves once the session is up. */
  connect({ signal } = {}) {
    const { fn, callbacks } = api();
    return this.#await(
      'connect',
      signal,
      (client) => fn.clientConnect(client, callbacks.lifecycle, this.#id),
      (settle) => {
        this.#connected = (error) => {
          this.#connected = null;
          settle(error);
        };
        return () => {
          this.#connected = null;
        };
      },
    );
  }

  /** CreateKeysAndCertificate: the service makes the key pair and the certificate. */
  createKeys({ signal } = {}) {
    const { fn, callbacks } = api();
    return this.#operation('CreateKeysAndCertificate', signal, (client, id) =>
      fn.createKeys(client, callbacks.createKeys, id),
    );
  }

  /** CreateCertificateFromCsr with a PEM CSR: the private key never leaves the device. */
  createFromCsr(csrPem, { signal } = {}) {
    const { fn, callbacks } = api();
    return this.#operation('CreateCertificateFromCsr', signal, (client, id) =>
      fn.createFromCsr(client, cText(csrPem), callbacks.createFromCsr, id),
    );
  }

  /** RegisterThing with a template, the token of a create call and the parameters. */
  registerThing(templateName, certificateOwnershipToken, parameters, { signal } = {}) {
    const { fn, callbacks } = api();
    const json = parameters == null ? null : JSON.stringify(parameters);
    return this.#operation('RegisterThing', signal, (client, id) =>
      fn.registerThing(client, templateName, certificateOwnershipToken, json, callbacks.registerThing, id),
    );
  }

  /**
   * Cancels pending operations (they reject with FP_ERR_CANCELLED), disconnects and releases
   * the client; resolves once the library has called back for the last time.
   */
  async close() {
    if (this.#client === null) {
      return;
    }
    const client = this.#client;
    this.#client = null;
    const { freeAsync } = api();
    // On a worker thread: fp_client_free waits for callbacks that need this thread.
    await new Promise((resolve, reject) => {
      freeAsync(client, (error) => (error ? reject(error) : resolve()));
    });
    waiting.delete(this.#id);
    this.#stop(); // also when it never connected
  }
}

/**
 * Checks a template name and parameters the way registerThing() will, without a client: refuse
 * bad input before creating a certificate that could not be registered.
 */
function checkRegistration(templateName, parameters) {
  const json = parameters == null ? null : JSON.stringify(parameters);
  const result = api().fn.registerThingCheck(templateName, json);
  if (result !== FP_OK) {
    throw resultError('checkRegistration', result);
  }
}

// ---------- provision once ----------

/** The steps of enum fp_provision_step, indexed by value. */
const STEPS = Object.freeze([
  'connecting',
  'creating',
  'registering',
  'saving',
  'verifying',
  'retryScheduled',
  'reusing',
  'rotating',
  'certificateAbandoned',
]);
const KEY_TYPES = Object.freeze({ ecP256: 0, ecP384: 1, rsa2048: 2, service: 3 });

/** The library's provisioning options from `options`; the caller frees them. */
function provisionOptions(options) {
  const { fn } = api();
  for (const name of ['templateName', 'storeDir']) {
    if (typeof options?.[name] !== 'string') {
      throw new FleetprovError('options', FP_ERR_INVALID_ARGUMENT, `${name} must be a string`);
    }
  }
  const claim = clientOptions(options.claim);
  const out = [null];
  let result;
  try {
    result = fn.provisionOptionsNew(claim, options.templateName, options.storeDir, out);
  } finally {
    fn.optionsFree(claim); // copied by fp_provision_options_new
  }
  if (result !== FP_OK) {
    throw resultError('provision options', result);
  }
  const po = out[0];
  const set = fn.provisionSetters;
  const check = (name, r) => {
    if (r !== FP_OK) {
      throw resultError(name, r);
    }
  };
  try {
    if (options.parameters != null) {
      check('parameters', set.parameters(po, JSON.stringify(options.parameters)));
    }
    if (options.keyType != null) {
      const keyType = KEY_TYPES[options.keyType];
      if (keyType === undefined) {
        throw new FleetprovError(
          'keyType',
          FP_ERR_INVALID_ARGUMENT,
          `keyType must be one of ${Object.keys(KEY_TYPES).join(', ')}`,
        );
      }
      check('keyType', set.keyType(po, keyType));
    }
    if (options.devicePkcs11 != null) {
      setDevicePkcs11(po, options.devicePkcs11, options.keyType);
    }
    if (options.deviceSigner != null) {
      if (options.devicePkcs11 != null || options.keyType === 'service') {
        throw new FleetprovError(
          'deviceSigner',
          FP_ERR_INVALID_ARGUMENT,
          "deviceSigner keeps the device key with the application: it does not go with devicePkcs11 or keyType 'service'",
        );
      }
      const signer = makeSigner('deviceSigner', options.deviceSigner);
      try {
        check('deviceSigner', set.deviceSigner(po, signer));
      } finally {
        fn.signerFree(signer); // the options share it
      }
    }
    if (options.csrSubject != null) {
      check('csrSubject', set.csrSubject(po, options.csrSubject));
    }
    if (options.csrPem != null || options.csrPrivateKey != null) {
      if (options.csrPem == null || options.csrPrivateKey == null) {
        throw new FleetprovError('csrPem', FP_ERR_INVALID_ARGUMENT, 'csrPem and csrPrivateKey go together: give both or neither');
      }
      if (options.devicePkcs11 != null || options.deviceSigner != null || options.keyType === 'service') {
        throw new FleetprovError(
          'csrPem',
          FP_ERR_INVALID_ARGUMENT,
          "give one device key: csrPem and csrPrivateKey, devicePkcs11, deviceSigner or keyType 'service'",
        );
      }
      const csr = cText(options.csrPem);
      const key = cText(options.csrPrivateKey);
      try {
        check('csrPem', set.userCsr(po, csr, key));
      } finally {
        key.fill(0); // the library has its copy
      }
    }
    if (options.deviceClientId != null) {
      check('deviceClientId', set.deviceClientId(po, options.deviceClientId));
    }
    if (options.force) {
      check('force', set.force(po, 1));
    }
    if (options.maxAttempts != null) {
      check('maxAttempts', set.maxAttempts(po, options.maxAttempts));
    }
    if (options.backoffMs != null || options.maxBackoffMs != null) {
      check('backoffMs', set.backoffMs(po, options.backoffMs ?? 500, options.maxBackoffMs ?? 20_000));
    }
    if (options.deadlineMs != null) {
      check('deadlineMs', set.deadlineMs(po, options.deadlineMs));
    }
    if (options.rotateBeforePercent != null) {
      check('rotateBeforePercent', set.rotateBeforePercent(po, options.rotateBeforePercent));
    }
    if (options.rotateBeforeMs != null) {
      check('rotateBeforeMs', set.rotateBeforeMs(po, options.rotateBeforeMs));
    }
    if (options.rotationTemplate != null) {
      check('rotationTemplate', set.rotationTemplate(po, options.rotationTemplate));
    }
    if (options.rotationReuseKey) {
      check('rotationReuseKey', set.rotationReuseKey(po, 1));
    }
  } catch (e) {
    fn.provisionOptionsFree(po);
    throw e;
  }
  return po;
}

/**
 * fp_provision(): from the claim certificate to a verified identity of the device's own,
 * stored in `options.storeDir`, with retries; a valid stored identity is reused. Resolves with
 * the identity (paths, thing name, ...), rejects with a FleetprovError (a RejectedError with
 * AWS's fields for a service rejection).
 *
 * `onProgress({ step, attempt, delayMs, detail })` receives the steps in order; exceptions it
 * throws are ignored. Aborting `signal` cancels the run (fp_provision_cancel): it ends within
 * milliseconds, closing its connections, the store keeps the identity it held before (or
 * none), and the call rejects with an AbortError. A run that had already finished resolves as
 * usual. onProgress is not called after the abort.
 */
function provision(options, { signal, onProgress } = {}) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new AbortError('provision', 'not started', signal));
      return;
    }
    const { fn, callbacks } = api();
    const po = provisionOptions(options); // throws into the Promise: a rejection
    const id = nextId++;
    let op = null;
    let aborted = false;
    const onAbort = () => {
      aborted = true;
      fn.provisionCancel(op); // the final callback follows, with FP_ERR_CANCELLED
    };
    waiting.set(id, {
      operation: 'provision',
      progress: (step, attempt, delayMs, detail) => {
        if (!aborted && onProgress) {
          onProgress({ step: STEPS[step] ?? String(step), attempt, delayMs: Number(delayMs), detail });
        }
        if (aborted) {
          fn.provisionCancel(op); // aborted during the step: stop before the next one
        }
      },
      settle: (error, value) => {
        waiting.delete(id);
        release();
        signal?.removeEventListener('abort', onAbort);
        fn.provisionOpFree(op); // the run has ended: its last callback is this one
        if (error === null) {
          resolve(value);
        } else if (aborted && error instanceof FleetprovError && error.code === 'FP_ERR_CANCELLED') {
          reject(new AbortError('provision', error.detail, signal));
        } else {
          reject(error);
        }
      },
    });
    const out = [null];
    let result;
    try {
      result = fn.provisionStart(po, callbacks.provisionProgress, callbacks.provisioned, id, out);
    } finally {
      fn.provisionOptionsFree(po); // copied by fp_provision_start
    }
    if (result !== FP_OK) {
      waiting.delete(id); // its callbacks will never run
      reject(resultError('provision', result));
      return;
    }
    // The callbacks run on this thread, so none can come before this line.
    op = out[0];
    hold();
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** The library's version, e.g. "0.1.0". */
function version() {
  return api().fn.version();
}

/** How many callbacks are owed (for tests: 0 once everything is settled). */
function pendingCallbacks() {
  return owed;
}

module.exports = {
  Client,
  FleetprovError,
  RejectedError,
  TimeoutError,
  AbortError,
  checkRegistration,
  provision,
  version,
  pendingCallbacks,
  codes: CODES,
  libraryPath: native.libraryPath,
};
