// Compiled by `npm run types` (tsc, no output): the declarations in index.d.ts describe what a
// TypeScript program writes against the package, and these uses type-check against them.
import {
  AbortError,
  Client,
  FleetprovError,
  RejectedError,
  TimeoutError,
  checkRegistration,
  codes,
  provision as provisionOnce,
  type ProgressEvent,
  type ProvisionStep,
  type ProvisionOptions,
  type Pkcs11Key,
  type KeyLocation,
  type SignatureScheme,
  type Signer,
  type Provisioned,
  type Certificate,
  type KeysAndCertificate,
  type Thing,
} from '../index.js';

export async function provision(csr: string | undefined): Promise<string> {
  checkRegistration('FleetTemplate', { SerialNumber: '1' });
  const client = new Client({
    endpoint: 'localhost',
    port: 8883,
    certFile: 'claim-cert.pem',
    keyPem: Buffer.from('...'),
    mqttVersion: 5,
    proxy: { host: 'proxy' },
  });
  const controller = new AbortController();
  try {
    await client.connect({ signal: controller.signal });
    let cert: Certificate;
    if (csr === undefined) {
      const keys: KeysAndCertificate = await client.createKeys();
      keys.privateKey.fill(0);
      cert = keys;
    } else {
      cert = await client.createFromCsr(csr, { signal: AbortSignal.timeout(1000) });
    }
    const thing: Thing = await client.registerThing('FleetTemplate', cert.certificateOwnershipToken, {
      SerialNumber: '1',
    });
    const location: string | undefined = thing.deviceConfiguration['LocationUrl'];
    return `${thing.thingName} ${location ?? ''}`;
  } catch (e) {
    if (e instanceof RejectedError) {
      const status: number = e.statusCode;
      return `${status} ${e.errorCode} ${e.errorMessage}`;
    }
    if (e instanceof TimeoutError || e instanceof AbortError) {
      return e.code;
    }
    if (e instanceof FleetprovError) {
      const n: number = e.result;
      return `${codes[n]} ${e.operation} ${e.detail}`;
    }
    throw e;
  } finally {
    await client.close();
  }
}

export function inToken(): ProvisionOptions {
  const token: Pkcs11Key = {
    module: '/usr/lib/softhsm/libsofthsm2.so',
    keyLabel: 'claim',
    pin: Buffer.from('1234'),
    tokenLabel: 'device',
    slotId: 0n,
  };
  return {
    claim: { endpoint: 'localhost', certFile: 'claim-cert.pem', pkcs11: token },
    templateName: 'FleetTemplate',
    storeDir: '/var/lib/device/identity',
    keyType: 'ecP384',
    devicePkcs11: { ...token, keyLabel: 'device', pin: '1234' },
  };
}

export function withSigners(sign: (digest: Buffer) => Uint8Array): ProvisionOptions {
  const signer: Signer = {
    publicKey: '-----BEGIN PUBLIC KEY-----\n...\n-----END PUBLIC KEY-----\n',
    sign: (scheme: SignatureScheme, _message: Buffer, digest: Buffer) => {
      if (scheme !== 'ecdsaP256Sha256') throw new Error(`unexpected ${scheme}`);
      return sign(digest);
    },
  };
  return {
    claim: { endpoint: 'localhost', certFile: 'claim-cert.pem', signer },
    templateName: 'FleetTemplate',
    storeDir: '/var/lib/device/identity',
    deviceSigner: signer,
  };
}

export function ownCsr(csrPem: string, csrPrivateKey: Buffer): ProvisionOptions {
  return { claim: { endpoint: 'localhost' }, templateName: 'T', storeDir: 'd', csrPem, csrPrivateKey };
}

export async function once(signal: AbortSignal): Promise<string> {
  const options: ProvisionOptions = {
    claim: { endpoint: 'localhost', certFile: 'claim-cert.pem', keyFile: 'claim-key.pem', payloadFormat: 'cbor' },
    templateName: 'FleetTemplate',
    storeDir: '/var/lib/device/identity',
    parameters: { SerialNumber: '1' },
    keyType: 'service',
    csrSubject: 'CN=meter-17',
    force: false,
    maxAttempts: 3,
    backoffMs: 100,
    maxBackoffMs: 1000,
    deadlineMs: 60_000,
    rotateBeforePercent: 33,
    rotateBeforeMs: 3_600_000,
    rotationTemplate: 'FleetRotationTemplate',
    rotationReuseKey: false,
  };
  const steps: string[] = [];
  try {
    const result: Provisioned = await provisionOnce(options, {
      signal,
      onProgress: (e: ProgressEvent) => {
        const abandoned: ProvisionStep = 'certificateAbandoned';
        steps.push(e.step === abandoned ? `deactivate ${e.detail}` : `${e.step} ${e.attempt} ${e.delayMs} ${e.detail}`);
      },
    });
    const givenUp: string[] = result.abandonedCertificates;
    const reused: boolean = result.reused;
    const rotated: boolean = result.rotated;
    const previous: string | null = result.previousCertificateId;
    const where: KeyLocation = result.keyLocation;
    return `${result.thingName} ${result.privateKeyFile} ${where} ${reused} ${rotated} ${previous} ${result.attempts} ${givenUp.join(',')}`;
  } catch (e) {
    if (e instanceof AbortError || e instanceof RejectedError) {
      return e.code;
    }
    throw e;
  }
}
