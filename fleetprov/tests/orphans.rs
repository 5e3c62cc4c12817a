//! Fewer certificates left behind, none unreported (issue 20, item 7), over real TLS against
//! the emulator: a lost RegisterThing answer retried with the same token, an identity whose
//! verification could not be tried kept pending and verified by the next run, every
//! certificate not kept reported, and messages that say what happened.

use fleetprov_testkit::env as common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{details, provision_options, record, start_relay, Env, Seen};
use fleetprov::provision::store::{METADATA_FILE, PENDING_FILE};
use fleetprov::provision::{provision, ProvisionOptions, Step};
use fleetprov::ErrorKind;
use fleetprov_emulator::registry::CertStatus;
use fleetprov_emulator::Fault;

fn options(env: &Env, store: &std::path::Path) -> ProvisionOptions {
    let mut o = provision_options(env, store, "1");
    o.retry.base_delay = Duration::from_millis(100);
    o.retry.max_delay = Duration::from_millis(500);
    o
}

/// Device certificates the emulator issued (claims left out).
fn issued(env: &Env) -> Vec<String> {
    let mut ids: Vec<String> = env
        .emu
        .service()
        .registry()
        .certificates()
        .into_iter()
        .filter(|c| c.status != CertStatus::Claim)
        .map(|c| c.certificate_id)
        .collect();
    ids.sort();
    ids
}

/// Once the identity is being saved, no connection gets a CONNACK: every verification
/// connection times out.
fn no_connack_once_saving(env: &Arc<Env>, o: &mut ProvisionOptions) {
    let env = Arc::clone(env);
    o.on_progress(move |p| {
        if p.step == Step::Saving {
            env.emu.set_fault(Fault::NoConnack);
        }
    });
}

/// The store holds `name`.
fn has(store: &std::path::Path, name: &str) -> bool {
    store.join(name).is_file()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_register_answer_is_retried_with_the_same_token_and_the_spent_one_reported() {
    let env = Env::start().await;
    let relay = Arc::new(start_relay(env.emu.port()).await);
    let store = env.dir.path().join("s");
    let mut o = options(&env, &store);
    o.claim.port = relay.port;
    o.claim.operation_timeout = Duration::from_secs(2);
    // The first RegisterThing reaches the service (which registers the thing and spends the
    // token); its answer is held back until the client has given up on it.
    let once = AtomicBool::new(false);
    let seen: Seen = Arc::default();
    let (sink, r) = (Arc::clone(&seen), Arc::clone(&relay));
    o.on_progress(move |p| {
        sink.lock().unwrap().push(p.clone());
        match p.step {
            Step::Registering if !once.swap(true, Ordering::SeqCst) => r.hold(),
            Step::RetryScheduled => r.release(),
            _ => {}
        }
    });
    let p = provision(o).await.unwrap();
    // Same token on a new connection first (refused as spent), then a new certificate.
    assert_eq!(details(&seen, Step::Creating).len(), 2);
    assert_eq!(details(&seen, Step::Registering).len(), 3);
    let all = issued(&env);
    assert_eq!(all.len(), 2, "{all:?}");
    let first: Vec<String> = all
        .into_iter()
        .filter(|id| *id != p.certificate_id)
        .collect();
    // The first certificate (Active on the thing) is reported, by the result and the event.
    assert_eq!(p.abandoned_certificates, first);
    assert_eq!(details(&seen, Step::CertificateAbandoned), first);
    let status = env.emu.service().registry().cert_status(&first[0]);
    assert_eq!(status, Some(CertStatus::Active));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_whose_verification_cannot_be_tried_is_kept_and_verified_next_time() {
    let env = Arc::new(Env::start().await);
    let store = env.dir.path().join("s");
    let mut o = options(&env, &store);
    o.claim.connect_timeout = Duration::from_secs(1);
    o.retry.max_attempts = 3;
    no_connack_once_saving(&env, &mut o);
    let e = provision(o.clone()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    let [id] = <[String; 1]>::try_from(issued(&env)).unwrap();
    for needle in [
        "was registered",
        id.as_str(),
        "could not be verified",
        "gave up after 3 attempts",
        "kept pending",
    ] {
        assert!(e.message.contains(needle), "{needle:?} not in: {e}");
    }
    assert!(!e.message.contains("refused"), "{e}");
    assert!(has(&store, PENDING_FILE) && !has(&store, METADATA_FILE));

    // The next run verifies it first: no claim connection, no new certificate.
    env.emu.set_fault(Fault::None);
    let claims = env.emu.throttle().claim_connections();
    let seen = record(&mut o);
    let p = provision(o).await.unwrap();
    assert_eq!(p.certificate_id, id);
    assert!(p.reused && p.abandoned_certificates.is_empty());
    assert_eq!(env.emu.throttle().claim_connections(), claims);
    assert_eq!(issued(&env), [id]);
    assert!(has(&store, METADATA_FILE) && !has(&store, PENDING_FILE));
    assert!(details(&seen, Step::Creating).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_while_verifying_is_a_deadline_not_a_refusal() {
    let env = Arc::new(Env::start().await);
    let store = env.dir.path().join("s");
    let mut o = options(&env, &store);
    o.claim.connect_timeout = Duration::from_secs(60);
    o.retry.deadline = Duration::from_secs(4);
    no_connack_once_saving(&env, &mut o);
    let e = provision(o).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(e.message.contains("deadline"), "{e}");
    assert!(e.message.contains("kept pending"), "{e}");
    assert!(!e.message.contains("refused"), "{e}");
    assert!(has(&store, PENDING_FILE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_identity_given_up_is_reported() {
    let env = Arc::new(Env::start().await);
    let store = env.dir.path().join("s");
    let mut o = options(&env, &store);
    o.claim.connect_timeout = Duration::from_secs(1);
    o.retry.max_attempts = 2;
    no_connack_once_saving(&env, &mut o);
    provision(o.clone()).await.unwrap_err();
    let [pending] = <[String; 1]>::try_from(issued(&env)).unwrap();
    env.emu.set_fault(Fault::None);

    // A run that asks for a new identity drops the pending one and says so.
    let seen = record(&mut o);
    o.force = true;
    let p = provision(o).await.unwrap();
    assert_ne!(p.certificate_id, pending);
    assert_eq!(p.abandoned_certificates, std::slice::from_ref(&pending));
    assert_eq!(details(&seen, Step::CertificateAbandoned), [pending]);
    assert!(!has(&store, PENDING_FILE));
    assert_eq!(std::fs::read_dir(&store).unwrap().count(), 3);
}
