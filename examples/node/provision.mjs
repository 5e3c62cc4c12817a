#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// Fleet provisioning from Node.js through the fleetprov C library, loaded with koffi: connect
// with a claim certificate, get a certificate (CreateKeysAndCertificate, or
// CreateCertificateFromCsr with --csr), register the thing (RegisterThing), disconnect.
//
// usage: node provision.mjs --endpoint HOST --cert FILE --key FILE --template_name NAME
//          [--template_parameters JSON] [--csr FILE] [--ca_file FILE] [--port N]
//
// The library is target/release/libfleetprov.so of this repository, or $FLEETPROV_LIB.
// Exit codes: 0 success, 1 failure (one line on stderr with the library's message), 2 usage.
//
// How the library's threads meet JavaScript (checked in koffi 3.3 src/koffi/src/call.cc):
// - The library calls back on its own threads. koffi relays such a call to the JS thread
//   through a Node-API thread-safe function and blocks the library thread until the JS function
//   has returned, so the borrowed response and error stay valid for the whole JS callback.
//   Callbacks must be `koffi.register`ed: a transient callback is dead once its call returns.
// - That relay does not keep the event loop alive, so a timer holds it while we wait for
//   callbacks; otherwise Node would end the process at an unsettled `await`.
// - A callback waits for the JS thread, so the JS thread must never block in a library call
//   that waits for callbacks while one may be pending: fp_client_free() is called only after
//   FP_EVENT_STOPPED (the last event), and through koffi's `.async` (a worker thread) so the
//   JS thread stays free even then. Callbacks are unregistered once it has returned.

import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';

import koffi from 'koffi';

const FP_OK = 0;
const FP_EVENT_CONNECTION_SUCCESS = 0;
const FP_EVENT_CONNECTION_FAILURE = 1;
const FP_EVENT_DISCONNECTED = 2;
const FP_EVENT_STOPPED = 3;

const USAGE = `usage: node provision.mjs --endpoint HOST --cert FILE --key FILE --template_name NAME
         [--template_parameters JSON] [--csr FILE] [--ca_file FILE] [--port N (8883)]`;

class UsageError extends Error {}

// ---------- the C API (include/fleetprov.h) ----------

const here = path.dirname(fileURLToPath(import.meta.url));
const libPath =
  process.env.FLEETPROV_LIB || path.join(here, '..', '..', 'target', 'release', 'libfleetprov.so');

function loadLibrary() {
  const lib = koffi.load(libPath);

  koffi.opaque('fp_client_options');
  koffi.opaque('fp_client');
  koffi.opaque('fp_error');

  koffi.struct('fp_create_keys_response', {
    certificate_id: 'const char *',
    certificate_pem: 'const char *',
    // Left as a raw pointer so the secret is never copied into the JS heap, where it could not
    // be wiped. A device that keeps it would copy it here into a Buffer (koffi.view), write it
    // to protected storage, and fill the Buffer with zeros.
    private_key: 'const void *',
    certificate_ownership_token: 'const char *',
  });
  koffi.struct('fp_create_from_csr_response', {
    certificate_id: 'const char *',
    certificate_pem: 'const char *',
    certificate_ownership_token: 'const char *',
  });
  koffi.struct('fp_key_value', { key: 'const char *', value: 'const char *' });
  koffi.struct('fp_register_thing_response', {
    thing_name: 'const char *',
    device_configuration: 'const void *',
    device_configuration_len: 'size_t',
  });

  // C enums are passed as int, as the platform ABI does for these small values.
  const proto = {
    lifecycle: koffi.proto(
      'void fp_lifecycle_callback(void *user_data, int event, const fp_error *error)',
    ),
    createKeys: koffi.proto(
      'void fp_create_keys_callback(void *user_data, const fp_create_keys_response *response, const fp_error *error)',
    ),
    createFromCsr: koffi.proto(
      'void fp_create_from_csr_callback(void *user_data, const fp_create_from_csr_response *response, const fp_error *error)',
    ),
    registerThing: koffi.proto(
      'void fp_register_thing_callback(void *user_data, const fp_register_thing_response *response, const fp_error *error)',
    ),
  };

  const fn = {
    version: lib.func('const char *fp_version(void)'),
    resultStr: lib.func('const char *fp_result_str(int result)'),
    errorCode: lib.func('int fp_error_code(const fp_error *error)'),
    errorMessage: lib.func('const char *fp_error_message(const fp_error *error)'),
    errorStatusCode: lib.func('int fp_error_status_code(const fp_error *error)'),
    errorAwsCode: lib.func('const char *fp_error_aws_code(const fp_error *error)'),
    errorAwsMessage: lib.func('const char *fp_error_aws_message(const fp_error *error)'),
    registerThingCheck: lib.func(
      'int fp_register_thing_check(const char *template_name, const char *parameters_json)',
    ),
    optionsNew: lib.func(
      'int fp_client_options_new(const char *endpoint, _Out_ fp_client_options **out)',
    ),
    optionsFree: lib.func('void fp_client_options_free(fp_client_options *options)'),
    optionsSetPort: lib.func('int fp_client_options_set_port(fp_client_options *options, uint16_t port)'),
    optionsSetCertFile: lib.func(
      'int fp_client_options_set_cert_file(fp_client_options *options, const char *path)',
    ),
    optionsSetKeyFile: lib.func(
      'int fp_client_options_set_key_file(fp_client_options *options, const char *path)',
    ),
    optionsSetCaFile: lib.func(
      'int fp_client_options_set_ca_file(fp_client_options *options, const char *path)',
    ),
    clientNew: lib.func('int fp_client_new(const fp_client_options *options, _Out_ fp_client **out)'),
    clientConnect: lib.func(
      'int fp_client_connect(fp_client *client, fp_lifecycle_callback *callback, void *user_data)',
    ),
    clientDisconnect: lib.func('int fp_client_disconnect(fp_client *client)'),
    clientFree: lib.func('void fp_client_free(fp_client *client)'),
    createKeys: lib.func(
      'int fp_create_keys(fp_client *client, fp_create_keys_callback *callback, void *user_data)',
    ),
    createFromCsr: lib.func(
      'int fp_create_from_csr(fp_client *client, const char *csr_pem, fp_create_from_csr_callback *callback, void *user_data)',
    ),
    registerThing: lib.func(
      'int fp_register_thing(fp_client *client, const char *template_name, const char *certificate_ownership_token, const char *parameters_json, fp_register_thing_callback *callback, void *user_data)',
    ),
  };
  return { fn, proto };
}

// ---------- helpers ----------

/** A promise with its settle functions, for a result a callback delivers later. */
function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** A failure reported by the library, copied out of a borrowed fp_error. */
class FpError extends Error {
  constructor(what, fields) {
    super(`${what} failed: ${fields.detail} (${fields.codeName})`);
    Object.assign(this, fields);
  }
}

function parseCommandLine(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      options: {
        endpoint: { type: 'string' },
        port: { type: 'string', default: '8883' },
        ca_file: { type: 'string' },
        cert: { type: 'string' },
        key: { type: 'string' },
        template_name: { type: 'string' },
        template_parameters: { type: 'string' },
        csr: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    throw new UsageError(e.message);
  }
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  for (const name of ['endpoint', 'cert', 'key', 'template_name']) {
    if (values[name] === undefined) {
      throw new UsageError(`--${name} is required`);
    }
  }
  const port = Number(values.port);
  if (!/^[0-9]+$/.test(values.port) || port < 1 || port > 65535) {
    throw new UsageError(`--port must be 1-65535, got ${values.port}`);
  }
  return { ...values, port };
}

// ---------- the flow ----------

async function provision(args, { fn, proto }) {
  // Refuse a bad name or parameters before creating a certificate that could not be registered.
  const params = args.template_parameters ?? null;
  if (fn.registerThingCheck(args.template_name, params) !== FP_OK) {
    throw new UsageError(
      'bad --template_name or --template_parameters: the name is 1-36 of [A-Za-z0-9_-], ' +
        'the parameters a JSON object of strings',
    );
  }
  let csr = null;
  if (args.csr !== undefined) {
    try {
      csr = readFileSync(args.csr, 'utf8');
    } catch (e) {
      throw new Error(`cannot read --csr ${args.csr}: ${e.message}`);
    }
  }

  const client = newClient(args, fn);
  const connected = deferred();
  const stopped = deferred();
  const created = deferred();
  const registered = deferred();

  // Copies what an fp_error says; only valid inside the callback that received it.
  const copyError = (what, error) => {
    const code = fn.errorCode(error);
    const fields = {
      code,
      codeName: fn.resultStr(code),
      detail: fn.errorMessage(error),
      statusCode: fn.errorStatusCode(error),
      awsCode: fn.errorAwsCode(error),
      awsMessage: fn.errorAwsMessage(error),
    };
    return new FpError(what, fields);
  };

  // Each callback settles its promise with plain JS values, copied before it returns. A throw
  // must not escape into koffi's relay, so every body is guarded.
  const onLifecycle = (_userData, event, error) => {
    try {
      if (event === FP_EVENT_CONNECTION_SUCCESS) {
        connected.resolve();
      } else if (event === FP_EVENT_CONNECTION_FAILURE) {
        connected.reject(copyError('connect', error));
      } else if (event === FP_EVENT_DISCONNECTED) {
        console.error(`provision: connection lost: ${copyError('connection', error).detail}`);
      } else if (event === FP_EVENT_STOPPED) {
        stopped.resolve();
      }
    } catch (e) {
      connected.reject(e);
    }
  };
  const onCreated = (what) => (_userData, response, error) => {
    try {
      if (response === null) {
        created.reject(copyError(what, error));
        return;
      }
      const type = csr === null ? 'fp_create_keys_response' : 'fp_create_from_csr_response';
      const r = koffi.decode(response, type);
      created.resolve({
        certificateId: r.certificate_id,
        certificatePem: r.certificate_pem,
        token: r.certificate_ownership_token,
      });
    } catch (e) {
      created.reject(e);
    }
  };
  const onRegistered = (_userData, response, error) => {
    try {
      if (response === null) {
        registered.reject(copyError('RegisterThing', error));
        return;
      }
      const r = koffi.decode(response, 'fp_register_thing_response');
      const len = Number(r.device_configuration_len);
      const config =
        len > 0 && r.device_configuration !== null
          ? koffi.decode(r.device_configuration, 'fp_key_value', len)
          : [];
      registered.resolve({ thingName: r.thing_name, config });
    } catch (e) {
      registered.reject(e);
    }
  };

  const callbacks = [
    koffi.register(onLifecycle, koffi.pointer(proto.lifecycle)),
    koffi.register(onCreated('CreateKeysAndCertificate'), koffi.pointer(proto.createKeys)),
    koffi.register(onCreated('CreateCertificateFromCsr'), koffi.pointer(proto.createFromCsr)),
    koffi.register(onRegistered, koffi.pointer(proto.registerThing)),
  ];
  const [lifecycleCb, createKeysCb, createFromCsrCb, registerCb] = callbacks;
  const keepAlive = setInterval(() => {}, 1 << 30);
  let connectStarted = false;

  // Starts an operation; a code other than FP_OK means its callback will never run.
  const start = (what, result, pending) => {
    if (result !== FP_OK) {
      pending.reject(new Error(`${what} could not start: ${fn.resultStr(result)}`));
    }
    return pending.promise;
  };

  try {
    const result = fn.clientConnect(client, lifecycleCb, null);
    if (result !== FP_OK) {
      throw new Error(`connect could not start: ${fn.resultStr(result)}`);
    }
    connectStarted = true;
    await connected.promise;
    console.log(`Connected to ${args.endpoint}:${args.port}`);

    const cert =
      csr === null
        ? await start('CreateKeysAndCertificate', fn.createKeys(client, createKeysCb, null), created)
        : await start(
            'CreateCertificateFromCsr',
            fn.createFromCsr(client, csr, createFromCsrCb, null),
            created,
          );
    console.log(`Certificate created: ${cert.certificateId}`);

    const thing = await start(
      'RegisterThing',
      fn.registerThing(client, args.template_name, cert.token, params, registerCb, null),
      registered,
    );
    console.log(`Thing registered: ${thing.thingName}`);
    for (const { key, value } of thing.config) {
      console.log(`  ${key} = ${value}`);
    }
  } finally {
    // Every accepted connect ends with FP_EVENT_STOPPED, a failed one too; disconnecting an
    // already stopped client is harmless.
    if (connectStarted) {
      fn.clientDisconnect(client);
      await stopped.promise;
    }
    await promisify(fn.clientFree.async)(client);
    for (const cb of callbacks) {
      koffi.unregister(cb);
    }
    clearInterval(keepAlive);
  }
}

function newClient(args, fn) {
  const out = [null];
  const made = fn.optionsNew(args.endpoint, out);
  if (made !== FP_OK) {
    throw new UsageError(`--endpoint ${args.endpoint}: ${fn.resultStr(made)}`);
  }
  const options = out[0];
  try {
    const set = (what, result) => {
      if (result !== FP_OK) {
        throw new UsageError(`${what}: ${fn.resultStr(result)}`);
      }
    };
    set('--port', fn.optionsSetPort(options, args.port));
    set('--cert', fn.optionsSetCertFile(options, args.cert));
    set('--key', fn.optionsSetKeyFile(options, args.key));
    if (args.ca_file !== undefined) {
      set('--ca_file', fn.optionsSetCaFile(options, args.ca_file));
    }
    const out = [null];
    const result = fn.clientNew(options, out);
    if (result !== FP_OK) {
      throw new Error(`cannot create the client: ${fn.resultStr(result)}`);
    }
    return out[0];
  } finally {
    fn.optionsFree(options); // the client keeps its own copy
  }
}

async function main() {
  let args;
  let api;
  try {
    args = parseCommandLine(process.argv.slice(2));
    api = loadLibrary();
    await provision(args, api);
    console.log('Disconnected');
  } catch (e) {
    console.error(`provision: ${e.message}`);
    if (e instanceof UsageError) {
      console.error(USAGE);
      process.exitCode = 2;
    } else {
      process.exitCode = 1;
    }
  }
  // No process.exit(): the process ends by itself once nothing is left to run, which shows that
  // the client and every callback were released.
}

await main();
