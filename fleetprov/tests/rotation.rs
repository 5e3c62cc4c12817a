//! Rotation: a stored identity renews itself through the device's own connection, over real
//! TLS against the emulator, with short-lived certificates (the emulator's
//! `--certificate-validity`) and its rotation template, whose device policy the emulator's
//! policy engine enforces.

use fleetprov_testkit::env as common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{details, provision_options, record, Env};
use fleetprov::provision::store::{Metadata, METADATA_FILE, PENDING_FILE};
use fleetprov::provision::{provision, Progress, ProvisionOptions, Provisioned, Step};
use fleetprov::{RotateBefore, TemplateName};
use fleetprov_emulator::registry::CertStatus;
use fleetprov_emulator::Fault;

const ROTATION_TEMPLATE: &str = "FleetRotationTemplate";
/// Device certificates valid ten minutes: the default window (the last third) is entered
/// after about six, so a fresh identity is reused; a window longer than the lifetime is
/// entered at once, so the tests never wait for time to pass.
const VALIDITY: Duration = Duration::from_secs(600);
const AT_ONCE: RotateBefore = RotateBefore::Remaining(Duration::from_secs(3600));

fn emulator_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../emulator")
        .join(relative)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The seed template and the rotation template the demo serves, certificates valid
/// [`VALIDITY`].
async fn start() -> Env {
    let templates = [
        (
            "FleetTemplate",
            json(&emulator_file("templates/FleetTemplate.json")),
        ),
        (
            ROTATION_TEMPLATE,
            json(&emulator_file("templates/FleetRotationTemplate.json")),
        ),
    ];
    Env::start_serving(&templates, |cfg, _| {
        cfg.device_certificates.validity = Some(VALIDITY);
    })
    .await
}

fn options(env: &Env, store: &Path) -> ProvisionOptions {
    let mut o = provision_options(env, store, "rot-1");
    o.rotation_template = Some(TemplateName::new(ROTATION_TEMPLATE).unwrap());
    o
}

fn committed(store: &Path) -> Metadata {
    serde_json::from_slice(&std::fs::read(store.join(METADATA_FILE)).unwrap()).unwrap()
}

/// The thing holds `p`'s certificate, the store names it, and its files are the only ones.
fn check_held_and_stored(env: &Env, store: &Path, p: &Provisioned) {
    let thing = env
        .emu
        .service()
        .registry()
        .thing(&p.thing_name)
        .expect("the thing is registered");
    assert!(
        thing.certificate_ids.contains(&p.certificate_id),
        "{thing:?}"
    );
    assert_eq!(
        env.emu.service().registry().cert_status(&p.certificate_id),
        Some(CertStatus::Active)
    );
    let m = committed(store);
    assert_eq!(m.certificate_id, p.certificate_id);
    assert_eq!(store.join(&m.certificate_file), p.files.certificate);
    let mut names: Vec<String> = std::fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let mut expected = vec![
        METADATA_FILE.to_owned(),
        m.certificate_file.clone(),
        m.private_key_file.clone(),
    ];
    expected.sort();
    assert_eq!(names, expected, "old files left behind");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisions_then_rotates_twice_without_the_claim() {
    let env = start().await;
    let store = env.dir.path().join("identity");
    let first = provision(options(&env, &store)).await.unwrap();
    assert!(!first.reused && !first.rotated);
    assert_eq!(first.previous_certificate_id, None);
    assert_eq!(env.emu.throttle().claim_connections(), 1);

    // Nine of ten minutes left: outside the default window, reused.
    let again = provision(options(&env, &store)).await.unwrap();
    assert!(again.reused && !again.rotated, "{again:?}");
    assert_eq!(again.certificate_id, first.certificate_id);

    // First rotation: a new key, through the rotation template.
    let mut o = options(&env, &store);
    o.rotate_before = AT_ONCE;
    let seen = record(&mut o);
    let second = provision(o).await.unwrap();
    assert!(second.rotated && !second.reused, "{second:?}");
    assert_eq!(
        second.previous_certificate_id.as_deref(),
        Some(first.certificate_id.as_str())
    );
    assert_ne!(second.certificate_id, first.certificate_id);
    assert_eq!(second.thing_name, first.thing_name);
    assert_eq!(second.client_id, first.thing_name);
    let events = seen.lock().unwrap().clone();
    let steps: Vec<Step> = events.iter().map(|p| p.step).collect();
    assert_eq!(
        steps,
        [
            Step::Rotating,
            Step::Connecting,
            Step::Creating,
            Step::Registering,
            Step::Saving,
            Step::Verifying,
            Step::Connecting
        ]
    );
    assert!(
        events[0].detail.starts_with(&first.thing_name),
        "{events:?}"
    );
    assert_eq!(events[1].detail, "device");
    assert_eq!(events[3].detail, ROTATION_TEMPLATE);
    check_held_and_stored(&env, &store, &second);
    assert_ne!(
        std::fs::read(&second.files.private_key).unwrap(),
        std::fs::read(&first.files.private_key).unwrap_or_default()
    );
    assert!(!first.files.private_key.exists());

    // Second rotation, keeping the key. The certificate in use now has only the rotation
    // template's device policy, so this one goes through it.
    let key_before = std::fs::read(&second.files.private_key).unwrap();
    let mut o = options(&env, &store);
    o.rotate_before = AT_ONCE;
    o.rotation_reuse_key = true;
    let third = provision(o).await.unwrap();
    assert!(third.rotated, "{third:?}");
    assert_eq!(
        third.previous_certificate_id.as_deref(),
        Some(second.certificate_id.as_str())
    );
    assert_ne!(third.certificate_id, second.certificate_id);
    check_held_and_stored(&env, &store, &third);
    assert_eq!(std::fs::read(&third.files.private_key).unwrap(), key_before);
    assert_eq!(committed(&store).key_type, "ec-p256");

    // No claim connection since the first provisioning.
    assert_eq!(env.emu.throttle().claim_connections(), 1);

    // The device policy allows RegisterThing through the rotation template only: asking for
    // another is refused by the emulator's policy engine, and the identity in use is kept.
    let mut o = options(&env, &store);
    o.rotate_before = AT_ONCE;
    o.rotation_template = None;
    let seen = record(&mut o);
    let kept = provision(o).await.unwrap();
    let steps = common::steps(&seen);
    assert_eq!(
        steps,
        [
            Step::Rotating,
            Step::Connecting,
            Step::Creating,
            Step::Registering,
            // The certificate created for the refused registration is reported.
            Step::CertificateAbandoned,
            Step::Reusing,
            Step::Verifying,
            Step::Connecting
        ]
    );
    assert!(kept.reused && !kept.rotated, "{kept:?}");
    let abandoned = details(&seen, Step::CertificateAbandoned);
    assert_eq!(kept.abandoned_certificates, abandoned);
    assert_ne!(abandoned[0], third.certificate_id);
    assert_eq!(kept.certificate_id, third.certificate_id);
    check_held_and_stored(&env, &store, &kept);
    assert_eq!(env.emu.throttle().claim_connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_device_identity_falls_back_to_the_claim_and_without_one_fails() {
    let env = start().await;
    let store = env.dir.path().join("identity");
    let first = provision(options(&env, &store)).await.unwrap();
    // The backend deactivates the certificate: the device's CONNECT is refused.
    assert!(env
        .emu
        .service()
        .registry()
        .set_cert_status(&first.certificate_id, CertStatus::Inactive));

    // Without a claim certificate: a clear failure, the store untouched.
    let mut o = options(&env, &store);
    o.rotate_before = AT_ONCE;
    o.claim.credentials = None;
    let e = provision(o).await.unwrap_err();
    assert!(e.message.contains("refused while rotating"), "{e}");
    assert_eq!(committed(&store).certificate_id, first.certificate_id);
    assert_eq!(env.emu.throttle().claim_connections(), 1);

    let mut o = options(&env, &store);
    o.rotate_before = AT_ONCE;
    let p = provision(o).await.unwrap();
    assert!(!p.rotated && !p.reused, "{p:?}");
    assert_ne!(p.certificate_id, first.certificate_id);
    assert_eq!(env.emu.throttle().claim_connections(), 2);
    check_held_and_stored(&env, &store, &p);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_within_a_minute_of_its_end_is_not_reused_or_rotated() {
    // Valid 61 s, its notBefore 6 s back: less than a minute is left at once.
    let env = Env::start_serving(
        &[(
            "FleetTemplate",
            json(&emulator_file("templates/FleetTemplate.json")),
        )],
        |cfg, _| cfg.device_certificates.validity = Some(Duration::from_secs(61)),
    )
    .await;
    let store = env.dir.path().join("identity");
    let mut o = options(&env, &store);
    o.rotation_template = None;
    // Verification connects with it while it is still valid: provisioning succeeds.
    let first = provision(o.clone()).await.unwrap();
    let second = provision(o).await.unwrap();
    assert!(!second.reused && !second.rotated, "{second:?}");
    assert_ne!(second.certificate_id, first.certificate_id);
    assert_eq!(env.emu.throttle().claim_connections(), 2);
}

#[test]
fn the_rotation_template_attaches_the_documented_device_policy() {
    let template = json(&emulator_file("templates/FleetRotationTemplate.json"));
    let policy = json(&emulator_file("policies/device-rotation-policy.json"));
    assert_eq!(
        template["Resources"]["policy"]["Properties"]["PolicyDocument"],
        policy
    );
}

/// Service keys (CreateKeysAndCertificate): the same key cannot sign a CSR here (PKCS#1 RSA),
/// so that rotation keeps the identity in use; without it the service makes the new key too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_key_is_kept_when_it_cannot_sign_and_replaced_otherwise() {
    let env = start().await;
    let store = env.dir.path().join("identity");
    let mut o = options(&env, &store);
    o.device_key = fleetprov::KeySource::Service;
    let first = provision(o.clone()).await.unwrap();
    o.rotate_before = AT_ONCE;
    o.rotation_reuse_key = true;
    let kept = provision(o.clone()).await.unwrap();
    assert!(kept.reused && !kept.rotated, "{kept:?}");
    assert_eq!(kept.certificate_id, first.certificate_id);
    check_held_and_stored(&env, &store, &kept);

    // The first certificate holds the sample template's policy, which allows the create topic.
    o.rotation_reuse_key = false;
    let rotated = provision(o).await.unwrap();
    assert!(rotated.rotated, "{rotated:?}");
    assert_eq!(
        rotated.previous_certificate_id.as_deref(),
        Some(first.certificate_id.as_str())
    );
    check_held_and_stored(&env, &store, &rotated);
    let key = std::fs::read_to_string(&rotated.files.private_key).unwrap();
    assert!(key.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    assert_eq!(committed(&store).key_type, "service");
    assert_eq!(env.emu.throttle().claim_connections(), 1);
}

/// A rotation whose new identity registers but cannot be verified (no connection gets a
/// CONNACK while it is tried) gives it up and says so: its certificate is reported as
/// abandoned, nothing is left pending, and the identity in use is kept and reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_identity_that_cannot_be_verified_is_reported_and_the_old_one_kept() {
    let env = Arc::new(start().await);
    let store = env.dir.path().join("identity");
    let first = provision(options(&env, &store)).await.unwrap();
    let mut o = options(&env, &store);
    o.rotate_before = AT_ONCE;
    o.claim.connect_timeout = Duration::from_secs(1);
    o.retry.max_attempts = 2;
    o.retry.base_delay = Duration::from_millis(100);
    o.retry.max_delay = Duration::from_millis(200);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (sink, emu) = (Arc::clone(&seen), Arc::clone(&env));
    o.on_progress(move |p: &Progress| {
        sink.lock().unwrap().push(p.clone());
        match p.step {
            // The new identity's verification connections get no CONNACK; the old
            // identity's, once the new one is given up, do.
            Step::Saving => emu.emu.set_fault(Fault::NoConnack),
            Step::CertificateAbandoned => emu.emu.set_fault(Fault::None),
            _ => {}
        }
    });
    let kept = provision(o).await.unwrap();
    assert!(kept.reused && !kept.rotated, "{kept:?}");
    assert_eq!(kept.certificate_id, first.certificate_id);
    let abandoned = details(&seen, Step::CertificateAbandoned);
    assert_eq!(abandoned.len(), 1, "{abandoned:?}");
    assert_ne!(abandoned[0], first.certificate_id);
    assert_eq!(kept.abandoned_certificates, abandoned);
    // Registered on the thing, and reported: a backend deactivates it.
    let thing = env
        .emu
        .service()
        .registry()
        .thing(&first.thing_name)
        .unwrap();
    assert!(thing.certificate_ids.contains(&abandoned[0]), "{thing:?}");
    assert!(!store.join(PENDING_FILE).exists());
    check_held_and_stored(&env, &store, &kept);
}
