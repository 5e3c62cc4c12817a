// Type declarations for the fleetprov package (index.js).

/// <reference types="node" />

/** The names of the library's result codes (enum fp_result), indexed by value. */
export declare const codes: readonly string[];

/** Connection settings; anything left out keeps the library's default. */
export interface ClientOptions {
  /** Host name or address of the endpoint, without scheme or port. */
  endpoint: string;
  /** Default 8883; on 443 the client offers ALPN `x-amzn-mqtt-ca`. */
  port?: number;
  /** Client (claim) certificate chain, leaf first; read when connecting. */
  certFile?: string;
  /** Its private key (PKCS#1, PKCS#8 or SEC1 PEM); read when connecting. */
  keyFile?: string;
  /** CAs trusted for the server certificate (default: the system's roots). */
  caFile?: string;
  /** The certificate as PEM text, instead of certFile. */
  certPem?: string | Buffer;
  /** The key as PEM text, instead of keyFile: the library wipes its copy when the client is
   * closed, and the caller may zero its Buffer as soon as the constructor returns. */
  keyPem?: string | Buffer;
  /** The CAs as PEM text, instead of caFile. */
  caPem?: string | Buffer;
  /** Default `test-<random uuid>`. */
  clientId?: string;
  /** 5 (default) or 3 (MQTT 3.1.1). */
  mqttVersion?: 3 | 5;
  /** At least 5; default 30. */
  keepAliveSecs?: number;
  /** Per operation, from when it gets its turn; default 30,000. */
  operationTimeoutMs?: number;
  /** TCP, proxy, TLS and CONNACK; default 30,000. */
  connectTimeoutMs?: number;
  /** An HTTP CONNECT proxy (port default 8080). */
  proxy?: { host: string; port?: number };
  /** Payloads on the `.../json` (default) or `.../cbor` provisioning topics. */
  payloadFormat?: 'json' | 'cbor';
  /** Subscribe to this template's RegisterThing reply topics when connecting (for a claim
   * policy that allows only that template's topics). */
  templateName?: string;
  /** The private key in a PKCS#11 token, instead of keyFile or keyPem (for provision(): the
   * claim key). */
  pkcs11?: Pkcs11Key;
  /** The client certificate's private key held by the application, instead of keyFile,
   * keyPem or pkcs11: the library asks `sign` for the TLS handshake's signature. A signer made
   * from the certificate (publicKey a CERTIFICATE PEM) also gives the client certificate. */
  signer?: Signer;
}

/** A private key in a PKCS#11 token (SoftHSM2, an HSM, a TPM or secure element with a PKCS#11
 * module). Nothing is loaded until the key is used; a missing module, token or key, or a
 * refused PIN, then fails with FP_ERR_SIGNER and a message naming the cause. */
/** A signature scheme a Signer is asked for (enum fp_signature_scheme). */
export type SignatureScheme =
  | 'ecdsaP256Sha256'
  | 'ecdsaP384Sha384'
  | 'rsaPkcs1Sha256'
  | 'rsaPkcs1Sha384'
  | 'rsaPkcs1Sha512'
  | 'rsaPssSha256'
  | 'rsaPssSha384'
  | 'rsaPssSha512';

/** A private key the application holds (a secure element, a TPM, a key store): the library
 * never sees the key (fp_signer_new). */
export interface Signer {
  /** The key's certificate (CERTIFICATE PEM) or its public key (PUBLIC KEY PEM, for a device
   * key before its certificate exists). EC P-256, EC P-384, RSA 2048-8192. */
  publicKey: string | Buffer;
  /** Signs `message` (the data itself; `digest` is it hashed with the scheme's hash) and
   * returns the signature: for RSA as long as the modulus, for ECDSA DER or r || s. It must be
   * synchronous; a throw or anything but a Buffer/Uint8Array fails the operation with
   * FP_ERR_SIGNER. It runs on the JavaScript thread while the library's network thread waits
   * for it (a TLS handshake): keep it to the signature, and do not call fleetprov from it. */
  sign(scheme: SignatureScheme, message: Buffer, digest: Buffer): Uint8Array;
}

export interface Pkcs11Key {
  /** The module, e.g. /usr/lib/softhsm/libsofthsm2.so. */
  module: string;
  /** The private key's CKA_LABEL. */
  keyLabel: string;
  /** The user PIN (the library wipes its copy); none: no login. */
  pin?: string | Buffer;
  /** The token, when the module has more than one. */
  tokenLabel?: string;
  slotId?: number | bigint;
}

/** Options every asynchronous call takes. Aborting closes the client's connection (the C API
 * cancels only by disconnecting): the call rejects with an AbortError, and the client cannot
 * be used further. A result that arrived first is still delivered. */
export interface CallOptions {
  signal?: AbortSignal;
}

/** The reply to CreateCertificateFromCsr. */
export interface Certificate {
  certificateId: string;
  certificatePem: string;
  /** For registerThing(), valid one hour. */
  certificateOwnershipToken: string;
}

/** The reply to CreateKeysAndCertificate. */
export interface KeysAndCertificate extends Certificate {
  /** The new private key, PKCS#1 PEM, only in this Buffer: store it safely, never log it, and
   * zero it (`privateKey.fill(0)`) once stored. */
  privateKey: Buffer;
}

/** The reply to RegisterThing. */
export interface Thing {
  thingName: string;
  /** The template's DeviceConfiguration. */
  deviceConfiguration: Record<string, string>;
}

/** One connection to the provisioning endpoint. It connects once; close() releases it. */
export declare class Client {
  /** Checks the options; touches neither the network nor files. */
  constructor(options: ClientOptions);
  /** Resolves once the connection has ended (failed, lost, disconnected or closed). */
  readonly stopped: Promise<void>;
  /** Why an established connection was lost, or null. */
  readonly lostError: FleetprovError | null;
  connect(options?: CallOptions): Promise<void>;
  /** CreateKeysAndCertificate: the service makes the key pair and the certificate. */
  createKeys(options?: CallOptions): Promise<KeysAndCertificate>;
  /** CreateCertificateFromCsr: the private key never leaves the device. */
  createFromCsr(csrPem: string | Buffer, options?: CallOptions): Promise<Certificate>;
  /** RegisterThing with a provisioning template; `parameters` null or undefined for none. */
  registerThing(
    templateName: string,
    certificateOwnershipToken: string,
    parameters?: Record<string, string> | null,
    options?: CallOptions,
  ): Promise<Thing>;
  /** Cancels pending calls, disconnects, and resolves once the library is done with the
   * client. Calling it again does nothing. */
  close(): Promise<void>;
}

/** A failure the library reported. */
export declare class FleetprovError extends Error {
  /** The fp_result name, e.g. "FP_ERR_TIMEOUT". */
  readonly code: string;
  /** The fp_result value, e.g. 9. */
  readonly result: number;
  /** What failed: "connect", "CreateKeysAndCertificate", ... */
  readonly operation: string;
  /** The library's one-line message (never key material). */
  readonly detail: string;
}

/** The service rejected the request (code FP_ERR_REJECTED); AWS's fields as received. */
export declare class RejectedError extends FleetprovError {
  readonly statusCode: number;
  readonly errorCode: string;
  readonly errorMessage: string;
}

/** No answer in time (code FP_ERR_TIMEOUT). */
export declare class TimeoutError extends FleetprovError {}

/** The call's AbortSignal fired first; `cause` is the signal's reason, `code`
 * FP_ERR_CANCELLED, `detail` what the library said. */
export declare class AbortError extends FleetprovError {}

/** Checks a template name and parameters the way registerThing() will, without a client;
 * throws a FleetprovError (FP_ERR_INVALID_ARGUMENT) for bad ones. */
export declare function checkRegistration(
  templateName: string,
  parameters?: Record<string, string> | null,
): void;

/** Where the device's key comes from: a key the library generates (EC P-256, the default;
 * EC P-384; RSA-2048 only in a library built with `rsa-keygen`) and CreateCertificateFromCsr,
 * or `service`: key and certificate from CreateKeysAndCertificate. */
export type KeyType = 'ecP256' | 'ecP384' | 'rsa2048' | 'service';

/** What provision() does; anything left out keeps the library's default. */
export interface ProvisionOptions {
  /** The claim connection; the device connection that verifies the new identity uses the same
   * settings with the new certificate and key. */
  claim: ClientOptions;
  /** The provisioning template. */
  templateName: string;
  /** The identity store, a directory (created 0700 if missing). */
  storeDir: string;
  /** The template's parameters. */
  parameters?: Record<string, string> | null;
  keyType?: KeyType;
  /** Keep the device key in a PKCS#11 token: the token's key of that label, generated there
   * (not extractable, of keyType; 'service' is refused) if it has none. No key file is
   * written (privateKeyFile is ""), the certificate is stored in the token too, and a later
   * provision() with the same devicePkcs11 reuses the identity. */
  devicePkcs11?: Pkcs11Key;
  /** Keep the device key with the application: the CSR and the device connection sign
   * through it (its publicKey is the device key's PUBLIC KEY PEM). No key file is written
   * (privateKeyFile is "", keyLocation 'signer'); a later provision() reuses the identity only
   * with a signer of the stored certificate's key, and provisions anew with another.
   * keyType 'service' and devicePkcs11 do not go with it. */
  deviceSigner?: Signer;
  /** Subject of the CSR the library builds, e.g. "CN=meter-17,O=Acme" (default empty). */
  csrSubject?: string;
  /** Your own CSR (PEM) and the private key it was made with (PEM; a Buffer you may zero
   * once provision() has returned its Promise), instead of a generated key: the key is written
   * to the store (fp_provision_options_set_user_csr). */
  csrPem?: string | Buffer;
  csrPrivateKey?: string | Buffer;
  /** Client id of the device connection (default: the thing name). */
  deviceClientId?: string;
  /** Provision anew even if the store holds a valid identity. */
  force?: boolean;
  /** Tries in all, the first included (default 8). */
  maxAttempts?: number;
  /** Backoff before try n+1: random from 0 to min(maxBackoffMs, backoffMs * 2^(n-1))
   * (defaults 500 and 20,000). */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** The whole run ends within this (default 300,000). */
  deadlineMs?: number;
  /** Rotate a stored identity (renew it with itself, not the claim) once at most this share
   * (1-100) of its certificate's lifetime is left; 0 never rotates (default 33). */
  rotateBeforePercent?: number;
  /** Instead: rotate once at most this many milliseconds are left; 0 never rotates. */
  rotateBeforeMs?: number;
  /** The template RegisterThing uses when rotating (default: templateName). */
  rotationTemplate?: string;
  /** Rotate to a certificate for the key in use instead of a new key. */
  rotationReuseKey?: boolean;
}

/** The steps provision() reports. */
export type ProvisionStep =
  | 'connecting'
  | 'creating'
  | 'registering'
  | 'saving'
  | 'verifying'
  | 'retryScheduled'
  | 'reusing'
  | 'rotating'
  | 'certificateAbandoned';

/** One progress event of provision(). */
export interface ProgressEvent {
  step: ProvisionStep;
  /** Counts from 1. */
  attempt: number;
  /** Non-zero only for `retryScheduled`. */
  delayMs: number;
  /** "claim" or "device", the operation, the template, the store, the client id, the reason
   * for a retry, the reused thing's name or, for `certificateAbandoned`, the given-up
   * certificate's id; never key material. */
  detail: string;
}

/** Options of the provision() call itself. */
export interface ProvisionCallOptions {
  /** Aborting cancels the run (fp_provision_cancel): it ends within milliseconds, the store
   * keeps the identity it held before (or none), and the call rejects with an AbortError
   * (a run that had already finished resolves as usual). */
  signal?: AbortSignal;
  /** Receives the steps in order (not after an abort); exceptions it throws are ignored. */
  onProgress?: (event: ProgressEvent) => void;
}

/** Where a provisioned identity's private key is. */
export type KeyLocation = 'file' | 'pkcs11' | 'signer';

/** The device's identity, stored in the store. */
export interface Provisioned {
  thingName: string;
  certificateId: string;
  /** The client id the identity was verified with. */
  clientId: string;
  certificateFile: string;
  /** Mode 0600; never log its contents. "" when the key is in a token or a signer's. */
  privateKeyFile: string;
  /** Where the private key is (fp_provisioned_key_location): 'file' (privateKeyFile),
   * 'pkcs11' (in the token: devicePkcs11) or 'signer' (with the application: deviceSigner). */
  keyLocation: KeyLocation;
  /** The store's identity.json. */
  metadataFile: string;
  /** A valid stored identity was reused (no claim connection was made). */
  reused: boolean;
  /** The stored identity was renewed with itself (no claim connection was made). */
  rotated: boolean;
  /** When rotated: the replaced certificate, still Active in the account (deactivate it once
   * the device uses the new one); null otherwise. */
  previousCertificateId: string | null;
  /** Tries made, the first included. */
  attempts: number;
  /**
   * Ids of certificates this run obtained and did not keep (each also reported as a
   * 'certificateAbandoned' step): each may be Active on the thing; deactivate it from a backend.
   */
  abandonedCertificates: string[];
  /** The template's DeviceConfiguration. */
  deviceConfiguration: Record<string, string>;
}

/** Provision once (fp_provision()): from the claim certificate to a verified identity of the
 * device's own, stored in `storeDir`, with retries; a valid stored identity is reused.
 * Rejects with a FleetprovError (operation "provision"; a RejectedError with AWS's fields for
 * a service rejection, an AbortError when `signal` fired). */
export declare function provision(
  options: ProvisionOptions,
  callOptions?: ProvisionCallOptions,
): Promise<Provisioned>;

/** The library's version, e.g. "0.1.0". */
export declare function version(): string;

/** The file the library is loaded from: $FLEETPROV_LIB, the checkout's target/release build,
 * or `libfleetprov.so` from the dynamic loader's path. */
export declare function libraryPath(): string;

/** How many library callbacks are owed right now (0 once every call has settled). */
export declare function pendingCallbacks(): number;
