//! PKCS#11 keys against SoftHSM2 (Debian's `softhsm2`, a real PKCS#11 module) and the
//! emulator over mutual TLS: the claim key imported into a token provisions in both flows; a
//! device key generated in the token gets its certificate through the CSR flow, the
//! certificate is stored back, and that identity connects; a wrong PIN, a missing key, a
//! missing token and a missing module each give a clear [`ErrorKind::Signer`].
//!
//! The tokens come from the test kit's [`softhsm`], set up once per test process before the
//! module is first loaded; without SoftHSM2 the tests fail, naming it (`make test-deps`
//! installs it).
#![cfg(feature = "pkcs11")]

use fleetprov_testkit::env as common;

use std::path::{Path, PathBuf};

use common::{make_csr, params};
use fleetprov::client::{Client, ClientOptions, Credentials, MqttVersion, Pem};
use fleetprov::pkcs11::{self, Pkcs11Key};
use fleetprov::protocol::RegisterThingRequest;
use fleetprov::signer::{certificate_request, KeyAlgorithm, PublicKey};
use fleetprov::ErrorKind;
use fleetprov_emulator::{Emulator, EmulatorConfig};

use fleetprov_testkit::softhsm::{softhsm, SoftHsm as Hsm, CLAIM_LABEL, PIN, PIN_TOKEN, TOKEN};

fn hsm() -> &'static Hsm {
    softhsm()
}

/// What these tests add to the test kit's SoftHSM2 set-up.
trait HsmExt {
    async fn emulator(&self) -> (Emulator, tempfile::TempDir);
}

impl HsmExt for Hsm {
    /// An emulator on a copy of the prepared state (same CA and claim, its own registry).
    async fn emulator(&self) -> (Emulator, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        self.copy_state(dir.path());
        let emu = Emulator::start(EmulatorConfig::new(dir.path()))
            .await
            .unwrap();
        (emu, dir)
    }
}

/// Options for `emu` with `cert` and the PKCS#11 key `key`.
fn opts(emu: &Emulator, cert: Pem, key: Pkcs11Key) -> ClientOptions {
    let mut o = ClientOptions::new("localhost");
    o.port = emu.port();
    o.ca = Some(Pem::file(emu.ca_path()));
    o.credentials = Some(Credentials::pkcs11(cert, key));
    o.operation_timeout = std::time::Duration::from_secs(20);
    o.connect_timeout = std::time::Duration::from_secs(10);
    o
}

fn claim_opts(hsm: &Hsm, emu: &Emulator) -> ClientOptions {
    opts(emu, Pem::file(emu.claim_cert_path()), hsm.key(CLAIM_LABEL))
}

fn register_req(token: &str, serial: &str) -> RegisterThingRequest {
    RegisterThingRequest {
        certificate_ownership_token: token.to_owned(),
        parameters: params(serial),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_key_in_the_token_provisions_in_both_flows() {
    let hsm = hsm();
    let (emu, _state) = hsm.emulator().await;
    for (i, version) in [MqttVersion::V5, MqttVersion::V311].into_iter().enumerate() {
        let mut o = claim_opts(hsm, &emu);
        o.mqtt_version = version;
        let client = Client::connect(o).await.unwrap();
        let created = client.create_keys_and_certificate().await.unwrap();
        let thing = client
            .register_thing(
                "FleetTemplate",
                &register_req(&created.certificate_ownership_token, &format!("hsm-k{i}")),
            )
            .await
            .unwrap();
        assert_eq!(thing.thing_name, format!("ThingPrefix_hsm-k{i}"));
        let csr = make_csr("hsm-csr");
        let issued = client.create_certificate_from_csr(&csr.pem).await.unwrap();
        let thing = client
            .register_thing(
                "FleetTemplate",
                &register_req(&issued.certificate_ownership_token, &format!("hsm-c{i}")),
            )
            .await
            .unwrap();
        assert_eq!(thing.thing_name, format!("ThingPrefix_hsm-c{i}"));
        client.disconnect().await;
    }
    assert_eq!(emu.service().registry().things().len(), 4);
}

/// A read-only session, logged in as the user, with the test token, opened through the
/// module directly.
fn token_session(hsm: &Hsm) -> cryptoki::session::Session {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::session::UserType;
    let m = Pkcs11::new(&hsm.module).unwrap();
    // The library has initialised the module in this process already; either is fine.
    let _ = m.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
    let slot = m
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|s| m.get_token_info(*s).unwrap().label().trim_end() == TOKEN)
        .unwrap();
    let session = m.open_ro_session(slot).unwrap();
    let _ = session.login(UserType::User, Some(&PIN.to_owned().into()));
    session
}

/// Whether the token holds exactly one certificate object labelled `label` whose value is
/// `der`, looked up through the module directly.
fn stored_certificate_is(hsm: &Hsm, label: &str, der: &[u8]) -> bool {
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    let session = token_session(hsm);
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap();
    found.len() == 1
        && session
            .get_attributes(found[0], &[AttributeType::Value])
            .unwrap()
            .iter()
            .any(|a| matches!(a, Attribute::Value(v) if v == der))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_key_generated_in_the_token_gets_a_certificate_that_connects() {
    let hsm = hsm();
    let (emu, _state) = hsm.emulator().await;
    let client = Client::connect(claim_opts(hsm, &emu)).await.unwrap();
    for (label, algorithm) in [
        ("device-p256", KeyAlgorithm::EcP256),
        ("device-rsa", KeyAlgorithm::Rsa { bits: 2048 }),
    ] {
        let key = hsm.key(label);
        let signer = pkcs11::generate(&key, algorithm).unwrap();
        assert_eq!(signer.public_key().algorithm(), algorithm);
        // A second generation under the same label is refused: nothing is overwritten.
        let e = pkcs11::generate(&key, algorithm).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Signer);
        assert!(e.message.contains("already has a private key"), "{e}");

        let csr = certificate_request(signer.clone(), Some(label)).unwrap();
        let issued = client.create_certificate_from_csr(&csr).await.unwrap();
        assert_eq!(
            &PublicKey::from_pem(issued.certificate_pem.as_bytes()).unwrap(),
            signer.public_key()
        );
        let thing = client
            .register_thing(
                "FleetTemplate",
                &register_req(&issued.certificate_ownership_token, label),
            )
            .await
            .unwrap();
        // Stored twice: the second replaces the first.
        pkcs11::store_certificate(&key, &issued.certificate_pem).unwrap();
        pkcs11::store_certificate(&key, &issued.certificate_pem).unwrap();
        assert!(stored_certificate_is(
            hsm,
            label,
            &common::cert_der(&issued.certificate_pem)
        ));

        // The new identity: its certificate, and its key still only in the token.
        let mut o = opts(&emu, Pem::memory(&issued.certificate_pem), key);
        o.client_id = Some(thing.thing_name.clone());
        let device = Client::connect(o).await.unwrap();
        device
            .publish(&format!("devices/{}/hello", thing.thing_name), b"{}")
            .await
            .unwrap();
        device.disconnect().await;
    }
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pin_missing_key_token_and_module_are_clear_errors() {
    let hsm = hsm();
    let (emu, _state) = hsm.emulator().await;
    let connect_error = |key: Pkcs11Key| {
        let o = opts(&emu, Pem::file(emu.claim_cert_path()), key);
        async move { Client::connect(o).await.unwrap_err() }
    };

    let mut key = hsm.key(CLAIM_LABEL);
    key.token_label = Some(PIN_TOKEN.to_owned());
    key.pin = Some("0000".to_owned().into());
    let e = connect_error(key.clone()).await;
    assert_eq!(e.kind, ErrorKind::Signer, "{e}");
    assert!(
        e.message.contains("token 'fleetprov-pin' refused the PIN"),
        "{e}"
    );
    // The right PIN on that token works: the failure was the PIN.
    key.pin = Some(PIN.to_owned().into());
    let o = opts(&emu, Pem::file(emu.claim_cert_path()), key);
    Client::connect(o).await.unwrap().disconnect().await;

    let e = connect_error(hsm.key("no-such-key")).await;
    assert_eq!(e.kind, ErrorKind::Signer, "{e}");
    assert!(
        e.message
            .contains("no private key labelled 'no-such-key' in token 'fleetprov-test'"),
        "{e}"
    );

    let mut key = hsm.key(CLAIM_LABEL);
    key.token_label = Some("elsewhere".into());
    let e = connect_error(key).await;
    assert_eq!(e.kind, ErrorKind::Signer, "{e}");
    assert!(e.message.contains("token 'elsewhere' not found"), "{e}");
    assert!(
        e.message.contains("fleetprov-test"),
        "names the tokens present: {e}"
    );

    let mut key = hsm.key(CLAIM_LABEL);
    key.module = Path::new("/nonexistent/libpkcs11.so").into();
    let e = connect_error(key).await;
    assert_eq!(e.kind, ErrorKind::Signer, "{e}");
    assert!(
        e.message.contains("cannot load the module /nonexistent"),
        "{e}"
    );

    // A key in the token that is not the certificate's: refused before any network I/O.
    let other = hsm.key("other-p256");
    pkcs11::generate(&other, KeyAlgorithm::EcP256).unwrap();
    let e = connect_error(other).await;
    assert_eq!(e.kind, ErrorKind::Signer, "{e}");
    assert!(
        e.message
            .contains("is not the key of the client certificate"),
        "{e}"
    );
    assert!(emu.service().registry().things().is_empty());
}

/// `CKA_EXTRACTABLE` and `CKA_SENSITIVE` of each private key labelled `label` in the token,
/// read through the module directly.
fn private_key_flags(hsm: &Hsm, label: &str) -> Vec<(bool, bool)> {
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    let session = token_session(hsm);
    session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap()
        .into_iter()
        .map(|o| {
            let attrs = session
                .get_attributes(o, &[AttributeType::Extractable, AttributeType::Sensitive])
                .unwrap();
            let flag = |want: AttributeType| {
                attrs.iter().any(|a| match (a, want) {
                    (Attribute::Extractable(v), AttributeType::Extractable) => *v,
                    (Attribute::Sensitive(v), AttributeType::Sensitive) => *v,
                    _ => false,
                })
            };
            (
                flag(AttributeType::Extractable),
                flag(AttributeType::Sensitive),
            )
        })
        .collect()
}

/// provision() with the claim key and the device key both in the token: the device key is
/// generated there (not extractable, sensitive), no key file is written, `identity.json`
/// says where the key is (never the PIN), the certificate is stored back, and the next run
/// reuses the identity by connecting with the token's key (PIN given again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_keeps_the_device_key_in_the_token_and_reuses_it() {
    use fleetprov::provision::{provision, KeyLocation, KeySource, ProvisionOptions};
    use fleetprov::TemplateName;
    let hsm = hsm();
    let (emu, _state) = hsm.emulator().await;
    let store = tempfile::tempdir().unwrap();
    let label = "provisioned-device";
    let options = |key: Pkcs11Key| {
        let mut o = ProvisionOptions::new(
            claim_opts(hsm, &emu),
            TemplateName::new("FleetTemplate").unwrap(),
            store.path(),
        );
        o.parameters = params("hsm-provisioned");
        o.device_key = KeySource::Pkcs11 {
            key,
            algorithm: KeyAlgorithm::EcP256,
            store_certificate: true,
        };
        o
    };
    assert!(private_key_flags(hsm, label).is_empty());
    let first = provision(options(hsm.key(label))).await.unwrap();
    assert!(!first.reused);
    assert_eq!(first.thing_name, "ThingPrefix_hsm-provisioned");
    assert_eq!(private_key_flags(hsm, label), [(false, true)]);
    assert_eq!(first.files.private_key, PathBuf::new());
    let names = fleetprov_testkit::file_names(store.path());
    assert!(
        !names.iter().any(|n| n.contains("key")),
        "no key file: {names:?}"
    );
    let json = std::fs::read_to_string(&first.files.metadata).unwrap();
    assert!(json.contains("\"kind\": \"pkcs11\""), "{json}");
    assert!(
        json.contains(&format!("\"keyLabel\": \"{label}\"")),
        "{json}"
    );
    assert!(!json.contains(PIN), "no PIN in identity.json: {json}");
    match &first.key_location {
        KeyLocation::Pkcs11 {
            key_label, key_id, ..
        } => {
            assert_eq!(key_label, label);
            assert_eq!(key_id.len(), 32, "the generated 16-byte CKA_ID, hex");
        }
        other => panic!("{other:?}"),
    }
    let cert = std::fs::read_to_string(&first.files.certificate).unwrap();
    assert!(stored_certificate_is(hsm, label, &common::cert_der(&cert)));
    let things = emu.service().registry().things();
    assert_eq!(things.len(), 1);

    // Reused with the token's key: no new thing, the same certificate; the proof connection
    // needs the PIN, which the options give again.
    let second = provision(options(hsm.key(label))).await.unwrap();
    assert!(second.reused);
    assert_eq!(second.certificate_id, first.certificate_id);
    assert_eq!(second.key_location, first.key_location);
    assert_eq!(emu.service().registry().things().len(), 1);

    // Forced anew: the key already in the token gets a new certificate (no second key).
    let mut forced = options(hsm.key(label));
    forced.force = true;
    let third = provision(forced).await.unwrap();
    assert!(!third.reused);
    assert_ne!(third.certificate_id, first.certificate_id);
    assert_eq!(private_key_flags(hsm, label), [(false, true)]);
    let cert = std::fs::read_to_string(&third.files.certificate).unwrap();
    assert!(stored_certificate_is(hsm, label, &common::cert_der(&cert)));
}
