//! Keys the library does not hold: the TLS client authentication and the CSR signed through a
//! [`Signer`], against the emulator over real mutual TLS. The signers here keep their key in
//! memory with ring, as an application's own key store would.

use fleetprov_testkit::env as common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::{params, Env};
use fleetprov::client::{Client, Credentials, MqttVersion, Pem};
use fleetprov::protocol::RegisterThingRequest;
use fleetprov::signer::{certificate_request, KeyAlgorithm, PublicKey, SignatureScheme, Signer};
use fleetprov::{Error, ErrorKind};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, RsaKeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

enum Key {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A signer over a key in memory that counts its calls and remembers the schemes asked for.
#[derive(Debug)]
struct MemorySigner {
    key: Key,
    public: PublicKey,
    calls: AtomicUsize,
    schemes: std::sync::Mutex<Vec<SignatureScheme>>,
    fail: AtomicBool,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl MemorySigner {
    fn new(key: Key, public: PublicKey) -> Arc<MemorySigner> {
        Arc::new(MemorySigner {
            key,
            public,
            calls: AtomicUsize::new(0),
            schemes: Default::default(),
            fail: AtomicBool::new(false),
        })
    }

    /// The signer of a PEM private key (PKCS#8 EC, or PKCS#1 RSA), with the public key taken
    /// from `public_pem` (a certificate or a PUBLIC KEY).
    fn from_pem(key_pem: &str, public_pem: &str) -> Arc<MemorySigner> {
        let public = PublicKey::from_pem(public_pem.as_bytes()).unwrap();
        let rng = SystemRandom::new();
        let key = match PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap() {
            PrivateKeyDer::Pkcs8(der) => {
                let alg = match public.algorithm() {
                    KeyAlgorithm::EcP256 => &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
                    KeyAlgorithm::EcP384 => &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
                    KeyAlgorithm::Rsa { .. } => unreachable!("RSA keys here are PKCS#1"),
                };
                Key::Ec(EcdsaKeyPair::from_pkcs8(alg, der.secret_pkcs8_der(), &rng).unwrap())
            }
            PrivateKeyDer::Pkcs1(der) => {
                Key::Rsa(RsaKeyPair::from_der(der.secret_pkcs1_der()).unwrap())
            }
            other => panic!("unexpected key type {other:?}"),
        };
        MemorySigner::new(key, public)
    }

    /// A fresh P-384 key that signs as r || s, as a PKCS#11 token does.
    fn p384() -> Arc<MemorySigner> {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P384_SHA384_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let spki = rcgen::KeyPair::from_der_and_sign_algo(
            &PrivateKeyDer::Pkcs8(pkcs8.as_ref().to_vec().into()),
            &rcgen::PKCS_ECDSA_P384_SHA384,
        )
        .unwrap()
        .public_key_der();
        let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        MemorySigner::new(Key::Ec(key), PublicKey::from_spki_der(&spki).unwrap())
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Signer for MemorySigner {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, Error> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.schemes.lock().unwrap().push(scheme);
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::new(ErrorKind::Signer, "the secure element is busy"));
        }
        let rng = SystemRandom::new();
        match &self.key {
            Key::Ec(k) => Ok(k.sign(&rng, message).unwrap().as_ref().to_vec()),
            Key::Rsa(k) => {
                let padding: &dyn signature::RsaEncoding = match scheme {
                    SignatureScheme::RsaPkcs1Sha256 => &signature::RSA_PKCS1_SHA256,
                    SignatureScheme::RsaPkcs1Sha384 => &signature::RSA_PKCS1_SHA384,
                    SignatureScheme::RsaPkcs1Sha512 => &signature::RSA_PKCS1_SHA512,
                    SignatureScheme::RsaPssSha256 => &signature::RSA_PSS_SHA256,
                    SignatureScheme::RsaPssSha384 => &signature::RSA_PSS_SHA384,
                    SignatureScheme::RsaPssSha512 => &signature::RSA_PSS_SHA512,
                    other => panic!("RSA key asked for {other}"),
                };
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(padding, &rng, message, &mut sig).unwrap();
                Ok(sig)
            }
        }
    }
}

fn claim_signer(env: &Env) -> Arc<MemorySigner> {
    let key = std::fs::read_to_string(env.emu.claim_key_path()).unwrap();
    let cert = std::fs::read_to_string(env.emu.claim_cert_path()).unwrap();
    MemorySigner::from_pem(&key, &cert)
}

/// Options that connect as `cert_pem` with `signer` and no key.
fn signer_opts(
    env: &Env,
    version: MqttVersion,
    cert_pem: &str,
    signer: Arc<dyn Signer>,
) -> fleetprov::ClientOptions {
    let mut o = env.claim_opts(version);
    o.credentials = Some(Credentials::signer(Pem::memory(cert_pem), signer));
    o
}

fn register_req(token: &str, serial: &str) -> RegisterThingRequest {
    RegisterThingRequest {
        certificate_ownership_token: token.to_owned(),
        parameters: params(serial),
    }
}

async fn publish_as(
    env: &Env,
    version: MqttVersion,
    thing: &str,
    cert: &str,
    signer: Arc<dyn Signer>,
) {
    let mut opts = signer_opts(env, version, cert, signer);
    opts.client_id = Some(thing.to_owned());
    let device = Client::connect(opts).await.unwrap();
    device
        .publish(&format!("devices/{thing}/hello"), b"{}")
        .await
        .unwrap();
    device.disconnect().await;
}

/// The claim key in a signer provisions with CreateKeysAndCertificate; the RSA device key from
/// the reply, moved into a signer, then connects (TLS 1.3: RSA PSS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_signer_provisions_with_create_keys_and_an_rsa_signer_connects() {
    let env = Env::start().await;
    for (i, version) in [MqttVersion::V5, MqttVersion::V311].into_iter().enumerate() {
        let claim = claim_signer(&env);
        let cert = std::fs::read_to_string(env.emu.claim_cert_path()).unwrap();
        let client = Client::connect(signer_opts(&env, version, &cert, claim.clone()))
            .await
            .unwrap();
        assert_eq!(claim.calls(), 1, "one handshake, one signature");
        assert_eq!(
            claim.schemes.lock().unwrap()[0],
            SignatureScheme::EcdsaP256Sha256
        );
        let created = client.create_keys_and_certificate().await.unwrap();
        let serial = format!("k{i}");
        let thing = client
            .register_thing(
                "FleetTemplate",
                &register_req(&created.certificate_ownership_token, &serial),
            )
            .await
            .unwrap();
        client.disconnect().await;
        let device = MemorySigner::from_pem(&created.private_key, &created.certificate_pem);
        assert_eq!(
            device.public_key().algorithm(),
            KeyAlgorithm::Rsa { bits: 2048 }
        );
        publish_as(
            &env,
            version,
            &thing.thing_name,
            &created.certificate_pem,
            device.clone(),
        )
        .await;
        assert_eq!(
            *device.schemes.lock().unwrap(),
            [SignatureScheme::RsaPssSha256]
        );
    }
}

/// The claim key in a signer and a device key in another: the CSR is signed by the device
/// signer (P-384 returning r || s; RSA with PKCS#1 v1.5), the emulator checks its signature and
/// issues the certificate, and the device signer then connects with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csr_signed_by_a_signer_gets_a_certificate_that_connects() {
    let env = Env::start().await;
    let cert = std::fs::read_to_string(env.emu.claim_cert_path()).unwrap();
    let claim = claim_signer(&env);
    let client = Client::connect(signer_opts(&env, MqttVersion::V5, &cert, claim))
        .await
        .unwrap();
    // An RSA key for the second device: the one CreateKeysAndCertificate hands out.
    let rsa = client.create_keys_and_certificate().await.unwrap();
    let devices: Vec<(&str, Arc<MemorySigner>)> = vec![
        ("p384", MemorySigner::p384()),
        (
            "rsa",
            MemorySigner::from_pem(&rsa.private_key, &rsa.certificate_pem),
        ),
    ];
    for (serial, device) in devices {
        let csr = certificate_request(device.clone(), Some(serial)).unwrap();
        assert_eq!(device.calls(), 1);
        let expected = device.public_key().algorithm().csr_scheme();
        assert_eq!(device.schemes.lock().unwrap()[0], expected);
        let issued = client.create_certificate_from_csr(&csr).await.unwrap();
        assert_eq!(
            PublicKey::from_pem(issued.certificate_pem.as_bytes()).unwrap(),
            *device.public_key(),
            "the certificate is for the signer's key"
        );
        let thing = client
            .register_thing(
                "FleetTemplate",
                &register_req(&issued.certificate_ownership_token, serial),
            )
            .await
            .unwrap();
        publish_as(
            &env,
            MqttVersion::V5,
            &thing.thing_name,
            &issued.certificate_pem,
            device.clone(),
        )
        .await;
        assert_eq!(device.calls(), 2);
    }
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_signer_is_a_signer_error() {
    let env = Env::start().await;
    let cert = std::fs::read_to_string(env.emu.claim_cert_path()).unwrap();
    let failing = claim_signer(&env);
    failing.fail.store(true, Ordering::SeqCst);
    let e = Client::connect(signer_opts(&env, MqttVersion::V5, &cert, failing.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Signer, "{e}");
    assert!(e.message.contains("the secure element is busy"), "{e}");
    assert_eq!(failing.calls(), 1);
    let e = certificate_request(failing, None).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Signer);

    // A signer whose key is not the certificate's: refused before any network I/O, and
    // never called.
    let other = MemorySigner::p384();
    let e = Client::connect(signer_opts(&env, MqttVersion::V5, &cert, other.clone()))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Signer, "{e}");
    assert!(
        e.message
            .contains("is not the key of the client certificate"),
        "{e}"
    );
    assert_eq!(other.calls(), 0);
}

/// provision() with the claim key behind a signer and the device key behind another: the CSR
/// and the device connection are signed by the device signer, no key file is written,
/// `identity.json` says the key is a signer's, and only the same signer reuses the identity
/// (another one provisions anew).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_with_a_signer_device_key_reuses_it_with_that_signer_only() {
    use fleetprov::provision::{provision, KeyLocation, KeySource, ProvisionOptions};
    use fleetprov::TemplateName;
    let env = Env::start().await;
    let store = env.dir.path().join("identity");
    let claim = claim_signer(&env);
    let claim_cert = std::fs::read_to_string(env.emu.claim_cert_path()).unwrap();
    let options = |device: Arc<dyn Signer>| {
        let mut o = ProvisionOptions::new(
            signer_opts(&env, MqttVersion::V5, &claim_cert, claim.clone()),
            TemplateName::new("FleetTemplate").unwrap(),
            &store,
        );
        o.parameters = params("signer-device");
        o.device_key = KeySource::Signer(device);
        o
    };
    let device = MemorySigner::p384();
    let first = provision(options(device.clone())).await.unwrap();
    assert!(!first.reused);
    assert_eq!(first.key_location, KeyLocation::Signer);
    assert_eq!(first.files.private_key, std::path::PathBuf::new());
    // The CSR and the proof connection's handshake.
    assert_eq!(device.calls(), 2);
    assert!(claim.calls() >= 1);
    let json = std::fs::read_to_string(&first.files.metadata).unwrap();
    assert!(json.contains("\"kind\": \"signer\""), "{json}");
    assert!(std::fs::read_dir(&store).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("key")));

    let second = provision(options(device.clone())).await.unwrap();
    assert!(second.reused);
    assert_eq!(second.certificate_id, first.certificate_id);
    assert_eq!(
        device.calls(),
        3,
        "the reuse proof is signed by the same signer"
    );

    let other = MemorySigner::p384();
    let third = provision(options(other.clone())).await.unwrap();
    assert!(
        !third.reused,
        "another signer's key cannot reuse the identity"
    );
    assert_ne!(third.certificate_id, first.certificate_id);
    assert_eq!(other.calls(), 2);
}
