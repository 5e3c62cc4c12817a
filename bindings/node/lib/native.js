'use strict';
// The C API of libfleetprov/include/fleetprov.h, loaded with koffi on first use.
//
// How the library's threads meet JavaScript (koffi 3.3, src/koffi/src/call.cc):
// - The library calls back on its own threads. koffi relays such a call to the JS thread
//   through a Node-API thread-safe function and blocks the library thread until the JS function
//   has returned, so the borrowed response and error stay valid for the whole JS callback.
// - That relay does not keep the event loop alive: the client holds a timer while a callback
//   is owed (see hold() in index.js).
// - A callback waits for the JS thread, so the JS thread never blocks in a call that waits for
//   callbacks: fp_client_free() runs through koffi's `.async`, on a worker thread.
//
// The callbacks are registered once per process and find their operation by the integer that
// travels as user_data (declared intptr_t, which the ABI passes like a pointer).

const fs = require('node:fs');
const path = require('node:path');
const koffi = require('koffi');

/** The library to load: $FLEETPROV_LIB, this checkout's release build, or the installed one. */
function libraryPath() {
  if (process.env.FLEETPROV_LIB) {
    return process.env.FLEETPROV_LIB;
  }
  const inTree = path.join(__dirname, '..', '..', '..', 'target', 'release', 'libfleetprov.so');
  return fs.existsSync(inTree) ? inTree : 'libfleetprov.so';
}

let loaded = null;

/**
 * Loads the library and declares its functions; `handlers` receive the callbacks as
 * (id, event or response pointer, error pointer). Later calls return the same object.
 */
function load(handlers) {
  if (loaded !== null) {
    return loaded;
  }
  const lib = koffi.load(libraryPath());
  // strlen from the process itself, to size the private key without making it a JS string.
  const strlen = koffi.load(null).func('size_t strlen(const void *s)');

  koffi.opaque('fp_client_options');
  koffi.opaque('fp_client');
  koffi.opaque('fp_signer');
  koffi.opaque('fp_error');
  koffi.opaque('fp_provision_options');
  koffi.opaque('fp_provisioned');
  koffi.opaque('fp_provision_op');
  koffi.struct('fp_create_keys_response', {
    certificate_id: 'const char *',
    certificate_pem: 'const char *',
    // A raw pointer: the secret is copied into a Buffer (which the caller can zero), never
    // into a JS string.
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
  const proto = (name, response) =>
    koffi.pointer(koffi.proto(`void ${name}(intptr_t id, ${response}, const fp_error *error)`));
  const callbacks = {
    lifecycle: koffi.register(handlers.lifecycle, proto('fp_lifecycle_callback', 'int event')),
    createKeys: koffi.register(
      handlers.createKeys,
      proto('fp_create_keys_callback', 'const fp_create_keys_response *r'),
    ),
    createFromCsr: koffi.register(
      handlers.createFromCsr,
      proto('fp_create_from_csr_callback', 'const fp_create_from_csr_response *r'),
    ),
    registerThing: koffi.register(
      handlers.registerThing,
      proto('fp_register_thing_callback', 'const fp_register_thing_response *r'),
    ),
    provisionProgress: koffi.register(
      handlers.provisionProgress,
      koffi.pointer(
        koffi.proto(
          'void fp_provision_progress_callback(intptr_t id, int step, uint32_t attempt, uint64_t delay_ms, const char *detail)',
        ),
      ),
    ),
    provisioned: koffi.register(
      handlers.provisioned,
      proto('fp_provision_callback', 'const fp_provisioned *r'),
    ),
    // The sign callback: message and digest copied into Buffers for handlers.sign, which
    // returns the signature (or throws); the return value is the library's (0 or a failure).
    sign: koffi.register(
      (id, scheme, message, messageLen, digest, digestLen, signature, capacity, signatureLen) => {
        const copy = (p, n) =>
          Number(n) > 0 && p !== null ? Buffer.from(new Uint8Array(koffi.view(p, Number(n)))) : Buffer.alloc(0);
        let out;
        try {
          out = handlers.sign(id, scheme, copy(message, messageLen), copy(digest, digestLen));
        } catch {
          return 1; // the signer threw (its error is kept for the caller, see index.js)
        }
        if (!(out instanceof Uint8Array)) {
          return 2;
        }
        if (out.length === 0 || out.length > Number(capacity)) {
          return 3;
        }
        new Uint8Array(koffi.view(signature, Number(capacity))).set(out);
        koffi.encode(signatureLen, 'size_t', out.length);
        return 0;
      },
      koffi.pointer(
        koffi.proto(
          'int fp_sign_callback(intptr_t id, int scheme, const void *message, size_t message_len, const void *digest, size_t digest_len, void *signature, size_t signature_capacity, void *signature_len)',
        ),
      ),
    ),
    signerRelease: koffi.register(
      handlers.signerRelease,
      koffi.pointer(koffi.proto('void fp_release_callback(intptr_t id)')),
    ),
  };

  const f = (signature) => lib.func(signature);
  const setter = (name, type) => f(`int fp_client_options_set_${name}(fp_client_options *o, ${type})`);
  const fn = {
    version: f('const char *fp_version(void)'),
    resultStr: f('const char *fp_result_str(int result)'),
    errorCode: f('int fp_error_code(const fp_error *error)'),
    errorMessage: f('const char *fp_error_message(const fp_error *error)'),
    errorStatusCode: f('int fp_error_status_code(const fp_error *error)'),
    errorAwsCode: f('const char *fp_error_aws_code(const fp_error *error)'),
    errorAwsMessage: f('const char *fp_error_aws_message(const fp_error *error)'),
    registerThingCheck: f('int fp_register_thing_check(const char *name, const char *parameters)'),
    optionsNew: f('int fp_client_options_new(const char *endpoint, _Out_ fp_client_options **out)'),
    optionsFree: f('void fp_client_options_free(fp_client_options *o)'),
    // In the order they are applied; PEM text goes in as NUL-terminated bytes (see index.js).
    setters: {
      port: setter('port', 'uint16_t v'),
      certFile: setter('cert_file', 'const char *v'),
      keyFile: setter('key_file', 'const char *v'),
      caFile: setter('ca_file', 'const char *v'),
      certPem: setter('cert_pem', 'const uint8_t *v'),
      keyPem: setter('key_pem', 'const uint8_t *v'),
      caPem: setter('ca_pem', 'const uint8_t *v'),
      clientId: setter('client_id', 'const char *v'),
      mqttVersion: setter('mqtt_version', 'int v'),
      keepAliveSecs: setter('keep_alive_secs', 'uint16_t v'),
      operationTimeoutMs: setter('operation_timeout_ms', 'uint32_t v'),
      connectTimeoutMs: setter('connect_timeout_ms', 'uint32_t v'),
      payloadFormat: setter('payload_format', 'int v'),
      templateName: setter('template_name', 'const char *v'),
    },
    setProxy: setter('proxy', 'const char *host, uint16_t port'),
    setSigner: setter('signer', 'const fp_signer *s'),
    signerNew: f(
      'int fp_signer_new(const char *public_pem, fp_sign_callback *sign, intptr_t id, fp_release_callback *release, _Out_ fp_signer **out)',
    ),
    signerFree: f('void fp_signer_free(fp_signer *s)'),
    // A key in a PKCS#11 token (the PIN as NUL-terminated bytes, wiped after the call).
    pkcs11: {
      module: setter('pkcs11_module', 'const char *v'),
      keyLabel: setter('pkcs11_key_label', 'const char *v'),
      tokenLabel: setter('pkcs11_token_label', 'const char *v'),
      slotId: setter('pkcs11_slot_id', 'uint64_t v'),
      pin: setter('pkcs11_pin', 'const uint8_t *v'),
    },
    clientNew: f('int fp_client_new(const fp_client_options *o, _Out_ fp_client **out)'),
    clientConnect: f('int fp_client_connect(fp_client *c, fp_lifecycle_callback *cb, intptr_t id)'),
    clientDisconnect: f('int fp_client_disconnect(fp_client *c)'),
    clientFree: f('void fp_client_free(fp_client *c)'),
    createKeys: f('int fp_create_keys(fp_client *c, fp_create_keys_callback *cb, intptr_t id)'),
    createFromCsr: f(
      'int fp_create_from_csr(fp_client *c, const uint8_t *csr, fp_create_from_csr_callback *cb, intptr_t id)',
    ),
    registerThing: f(
      'int fp_register_thing(fp_client *c, const char *name, const char *token, const char *parameters, fp_register_thing_callback *cb, intptr_t id)',
    ),
    provisionOptionsNew: f(
      'int fp_provision_options_new(const fp_client_options *claim, const char *template_name, const char *store_dir, _Out_ fp_provision_options **out)',
    ),
    provisionOptionsFree: f('void fp_provision_options_free(fp_provision_options *o)'),
    provisionSetters: {
      parameters: f('int fp_provision_options_set_parameters(fp_provision_options *o, const char *v)'),
      keyType: f('int fp_provision_options_set_key_type(fp_provision_options *o, int v)'),
      csrSubject: f('int fp_provision_options_set_csr_subject(fp_provision_options *o, const char *v)'),
      // Both as NUL-terminated bytes; the key's copy is zeroed after the call (see index.js).
      userCsr: f('int fp_provision_options_set_user_csr(fp_provision_options *o, const uint8_t *csr, const uint8_t *key)'),
      deviceClientId: f('int fp_provision_options_set_device_client_id(fp_provision_options *o, const char *v)'),
      force: f('int fp_provision_options_set_force(fp_provision_options *o, int v)'),
      maxAttempts: f('int fp_provision_options_set_max_attempts(fp_provision_options *o, uint32_t v)'),
      backoffMs: f('int fp_provision_options_set_backoff_ms(fp_provision_options *o, uint32_t base_ms, uint32_t max_ms)'),
      deadlineMs: f('int fp_provision_options_set_deadline_ms(fp_provision_options *o, uint32_t v)'),
      rotateBeforePercent: f('int fp_provision_options_set_rotate_before_percent(fp_provision_options *o, uint32_t v)'),
      rotateBeforeMs: f('int fp_provision_options_set_rotate_before_ms(fp_provision_options *o, uint64_t v)'),
      rotationTemplate: f('int fp_provision_options_set_rotation_template(fp_provision_options *o, const char *v)'),
      rotationReuseKey: f('int fp_provision_options_set_rotation_reuse_key(fp_provision_options *o, int v)'),
      devicePkcs11: f(
        'int fp_provision_options_set_device_key_pkcs11(fp_provision_options *o, const fp_client_options *token, int key_type, int store_certificate)',
      ),
      deviceSigner: f('int fp_provision_options_set_device_key_signer(fp_provision_options *o, const fp_signer *s)'),
    },
    provisionStart: f(
      'int fp_provision_start(const fp_provision_options *o, fp_provision_progress_callback *progress, fp_provision_callback *cb, intptr_t id, _Out_ fp_provision_op **out)',
    ),
    provisionCancel: f('int fp_provision_cancel(const fp_provision_op *op)'),
    provisionOpFree: f('void fp_provision_op_free(fp_provision_op *op)'),
    provisioned: {
      thingName: f('const char *fp_provisioned_thing_name(const fp_provisioned *r)'),
      certificateId: f('const char *fp_provisioned_certificate_id(const fp_provisioned *r)'),
      clientId: f('const char *fp_provisioned_client_id(const fp_provisioned *r)'),
      certificateFile: f('const char *fp_provisioned_certificate_file(const fp_provisioned *r)'),
      privateKeyFile: f('const char *fp_provisioned_private_key_file(const fp_provisioned *r)'),
      keyLocation: f('int fp_provisioned_key_location(const fp_provisioned *r)'),
      metadataFile: f('const char *fp_provisioned_metadata_file(const fp_provisioned *r)'),
      reused: f('int fp_provisioned_reused(const fp_provisioned *r)'),
      rotated: f('int fp_provisioned_rotated(const fp_provisioned *r)'),
      previousCertificateId: f('const char *fp_provisioned_previous_certificate_id(const fp_provisioned *r)'),
      attempts: f('uint32_t fp_provisioned_attempts(const fp_provisioned *r)'),
      abandonedLen: f('size_t fp_provisioned_abandoned_certificate_count(const fp_provisioned *r)'),
      abandonedAt: f('const char *fp_provisioned_abandoned_certificate_at(const fp_provisioned *r, size_t i)'),
      configurationLen: f('size_t fp_provisioned_device_configuration_len(const fp_provisioned *r)'),
      configurationAt: f(
        'const fp_key_value *fp_provisioned_device_configuration_at(const fp_provisioned *r, size_t i)',
      ),
    },
  };

  /** The fields both create responses have. */
  const certificate = (r) => ({
    certificateId: r.certificate_id,
    certificatePem: r.certificate_pem,
    certificateOwnershipToken: r.certificate_ownership_token,
  });
  /** The create-keys response as plain values; the key copied into a fresh Buffer. */
  const decodeKeys = (ptr) => {
    const r = koffi.decode(ptr, 'fp_create_keys_response');
    const n = Number(strlen(r.private_key));
    const privateKey = Buffer.alloc(n); // never from the shared pool: the caller zeroes it
    Buffer.from(koffi.view(r.private_key, n)).copy(privateKey);
    return { ...certificate(r), privateKey };
  };
  const decodeCertificate = (ptr) => certificate(koffi.decode(ptr, 'fp_create_from_csr_response'));
  const decodeThing = (ptr) => {
    const r = koffi.decode(ptr, 'fp_register_thing_response');
    const len = Number(r.device_configuration_len);
    const entries =
      len > 0 && r.device_configuration !== null
        ? koffi.decode(r.device_configuration, 'fp_key_value', len)
        : [];
    const deviceConfiguration = {};
    for (const { key, value } of entries) {
      deviceConfiguration[key] = value;
    }
    return { thingName: r.thing_name, deviceConfiguration };
  };

  /** fp_provision()'s result as plain values (paths, never key material). */
  const decodeProvisioned = (r) => {
    const p = fn.provisioned;
    const deviceConfiguration = {};
    const len = Number(p.configurationLen(r));
    for (let i = 0; i < len; i++) {
      const kv = p.configurationAt(r, i);
      if (kv !== null) {
        const { key, value } = koffi.decode(kv, 'fp_key_value');
        deviceConfiguration[key] = value;
      }
    }
    const abandonedCertificates = [];
    const abandoned = Number(p.abandonedLen(r));
    for (let i = 0; i < abandoned; i++) {
      abandonedCertificates.push(p.abandonedAt(r, i));
    }
    return {
      thingName: p.thingName(r),
      certificateId: p.certificateId(r),
      clientId: p.clientId(r),
      certificateFile: p.certificateFile(r),
      privateKeyFile: p.privateKeyFile(r),
      // fp_key_location: FP_KEY_LOCATION_FILE, _PKCS11, _SIGNER.
      keyLocation: ['file', 'pkcs11', 'signer'][p.keyLocation(r)] ?? 'file',
      metadataFile: p.metadataFile(r),
      reused: p.reused(r) !== 0,
      rotated: p.rotated(r) !== 0,
      previousCertificateId: p.previousCertificateId(r),
      attempts: Number(p.attempts(r)),
      abandonedCertificates,
      deviceConfiguration,
    };
  };

  loaded = {
    fn,
    callbacks,
    decodeKeys,
    decodeCertificate,
    decodeThing,
    decodeProvisioned,
    freeAsync: fn.clientFree.async,
  };
  return loaded;
}

module.exports = { load, libraryPath };
