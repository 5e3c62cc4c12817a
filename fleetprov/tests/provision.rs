//! provision(): claim to verified, stored identity, over real TLS against the emulator.

use fleetprov_testkit::env as common;

use std::time::Duration;

use common::{details, params, provision_options, record, steps, Env};
use fleetprov::client::{Credentials, Pem};
use fleetprov::provision::{provision, KeySource, ProvisionOptions, Step};
use fleetprov::{ErrorKind, KeyType, TemplateName};
use fleetprov_emulator::throttle::{Api, ThrottleMode};
use fleetprov_emulator::Fault;

fn options(env: &Env, store: &std::path::Path) -> ProvisionOptions {
    provision_options(env, store, "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisions_then_reuses_without_a_claim_connection() {
    let env = Env::start().await;
    let store = env.dir.path().join("identity");
    let mut o = options(&env, &store);
    let seen = record(&mut o);
    let first = provision(o).await.unwrap();
    assert!(!first.reused);
    assert_eq!(first.attempts, 1);
    assert_eq!(first.client_id, first.thing_name);
    assert!(first.files.metadata.is_file() && first.files.private_key.is_file());
    assert_eq!(
        steps(&seen),
        [
            Step::Connecting,
            Step::Creating,
            Step::Registering,
            Step::Saving,
            Step::Verifying,
            Step::Connecting
        ]
    );
    // The thing exists in the emulator's registry with this certificate.
    let things = env.emu.service().registry().things();
    assert!(things.iter().any(|t| t.name == first.thing_name));
    assert_eq!(env.emu.throttle().claim_connections(), 1);
    assert_eq!(env.emu.throttle().device_connections(), 1);

    let mut again = options(&env, &store);
    let seen = record(&mut again);
    let second = provision(again).await.unwrap();
    assert!(second.reused);
    assert_eq!(second.thing_name, first.thing_name);
    assert_eq!(second.certificate_id, first.certificate_id);
    assert_eq!(second.files, first.files);
    assert_eq!(
        steps(&seen),
        [Step::Reusing, Step::Verifying, Step::Connecting]
    );
    // No claim connection at all; one more device connection (the proof).
    assert_eq!(env.emu.throttle().claim_connections(), 1);
    assert_eq!(env.emu.throttle().device_connections(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_replaces_the_identity_once_the_new_one_is_verified() {
    let env = Env::start().await;
    let store = env.dir.path().join("identity");
    let first = provision(options(&env, &store)).await.unwrap();
    let mut o = options(&env, &store);
    o.force = true;
    o.device_key = KeySource::Generate(KeyType::EcP384);
    let second = provision(o).await.unwrap();
    assert!(!second.reused);
    assert_ne!(second.certificate_id, first.certificate_id);
    assert!(!first.files.certificate.exists() && !first.files.private_key.exists());
    let third = provision(options(&env, &store)).await.unwrap();
    assert!(third.reused);
    assert_eq!(third.certificate_id, second.certificate_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_keys_rsa_and_user_csr_all_provision() {
    let env = Env::start().await;
    let csr = common::make_csr("user-csr");
    let mut sources = vec![
        KeySource::Service,
        KeySource::Csr {
            csr_pem: csr.pem.clone(),
            private_key_pem: csr.key.serialize_pem().into(),
        },
    ];
    if cfg!(feature = "rsa-keygen") {
        sources.push(KeySource::Generate(KeyType::Rsa2048));
    } else {
        // Not built in: refused at once, before any connection.
        let mut o = options(&env, &env.dir.path().join("rsa"));
        o.device_key = KeySource::Generate(KeyType::Rsa2048);
        let e = provision(o).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
    }
    for (i, key) in sources.into_iter().enumerate() {
        let store = env.dir.path().join(format!("s{i}"));
        let mut o = options(&env, &store);
        o.parameters = params(&format!("k{i}"));
        o.device_key = key;
        let p = provision(o).await.unwrap();
        assert!(!p.reused, "{i}");
        let again = provision(options(&env, &store)).await.unwrap();
        assert!(again.reused, "{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retryable_failures_end_at_once_with_their_code() {
    // Names a template the emulator does not serve: its 404 must come from the service.
    let env = Env::start_any_template().await;
    let dir = env.dir.path();
    let fast = |o: &mut ProvisionOptions| {
        o.retry.max_attempts = 5;
        o.retry.base_delay = Duration::from_secs(5);
        o.retry.max_delay = Duration::from_secs(5);
    };
    // Unknown template: 404 ResourceNotFound, one attempt, no retry scheduled.
    let mut o = options(&env, &dir.join("a"));
    fast(&mut o);
    o.template_name = TemplateName::new("NoSuchTemplate").unwrap();
    let seen = record(&mut o);
    let started = std::time::Instant::now();
    let e = provision(o).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected);
    assert_eq!(e.rejection.unwrap().status_code, 404);
    assert!(!steps(&seen).contains(&Step::RetryScheduled));
    // Invalid parameters: 400 InvalidParameters.
    let mut o = options(&env, &dir.join("b"));
    fast(&mut o);
    o.parameters.clear();
    let seen = record(&mut o);
    let e = provision(o).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected);
    assert_eq!(e.rejection.unwrap().error_code, "InvalidParameters");
    assert!(!steps(&seen).contains(&Step::RetryScheduled));
    // TLS: a CA that did not sign the server's certificate.
    let mut o = options(&env, &dir.join("c"));
    fast(&mut o);
    o.claim.ca = Some(Pem::file(env.emu.claim_cert_path()));
    let seen = record(&mut o);
    let e = provision(o).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Tls);
    assert!(!steps(&seen).contains(&Step::RetryScheduled));
    // Authorization: the claim may not subscribe.
    env.emu.set_fault(Fault::RefuseSubscribe);
    let mut o = options(&env, &dir.join("d"));
    fast(&mut o);
    let seen = record(&mut o);
    let e = provision(o).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::SubscribeRefused);
    assert!(!steps(&seen).contains(&Step::RetryScheduled));
    env.emu.set_fault(Fault::None);
    // None of these waited for a backoff (each would have cost 5 s).
    assert!(started.elapsed() < Duration::from_secs(5));
    // A store that is not a directory.
    let file = dir.join("plain");
    std::fs::write(&file, b"x").unwrap();
    let e = provision(options(&env, &file)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_claim_certificate_has_its_own_message() {
    let env = Env::start().await;
    let issued = env
        .emu
        .service()
        .issue_claim("short-lived", Duration::from_secs(1))
        .unwrap();
    let dir = env.dir.path();
    std::fs::write(dir.join("c.pem"), &issued.certificate_pem).unwrap();
    std::fs::write(
        dir.join("k.pem"),
        issued.private_key_pem.as_ref().unwrap().as_bytes(),
    )
    .unwrap();
    // Wait for the certificate's end (whole seconds in X.509), watching the clock, not sleeping
    // a guess.
    let end = std::time::SystemTime::now() + Duration::from_secs(2);
    while std::time::SystemTime::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut o = options(&env, &dir.join("s"));
    o.claim.credentials = Some(Credentials::pem(
        Pem::file(dir.join("c.pem")),
        Pem::file(dir.join("k.pem")),
    ));
    let e = provision(o).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Tls);
    assert!(
        e.message.contains("claim certificate expired"),
        "{}",
        e.message
    );
    assert_eq!(env.emu.throttle().claim_connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_register_is_retried_with_the_same_token() {
    let env = Env::start().await;
    env.emu
        .throttle()
        .set_rate_limit(Api::RegisterThing, Some(0.5));
    // Empty the bucket: the first device's RegisterThing is throttled.
    let t = env.emu.throttle();
    let register = "$aws/provisioning-templates/FleetTemplate/provision/json";
    while t.admit(register) == fleetprov_emulator::throttle::Admission::Pass {}
    let mut o = options(&env, &env.dir.path().join("s"));
    o.retry.base_delay = Duration::from_millis(200);
    o.retry.max_delay = Duration::from_secs(3);
    o.retry.max_attempts = 20;
    let seen = record(&mut o);
    let p = provision(o).await.unwrap();
    assert!(p.attempts > 1);
    let s = steps(&seen);
    assert!(s.contains(&Step::RetryScheduled));
    // Same token: one create, several registers.
    assert_eq!(s.iter().filter(|x| **x == Step::Creating).count(), 1);
    assert!(s.iter().filter(|x| **x == Step::Registering).count() > 1);
    let reasons = details(&seen, Step::RetryScheduled);
    assert!(
        reasons.iter().all(|r| r.contains("ThrottlingException")),
        "{reasons:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_on_register_is_retried_with_the_same_token() {
    let env = Env::start().await;
    env.emu
        .throttle()
        .set_rate_limit(Api::RegisterThing, Some(0.5));
    env.emu.throttle().set_mode(ThrottleMode::Disconnect);
    let t = env.emu.throttle();
    let register = "$aws/provisioning-templates/FleetTemplate/provision/json";
    while t.admit(register) == fleetprov_emulator::throttle::Admission::Pass {}
    let mut o = options(&env, &env.dir.path().join("s"));
    o.retry.base_delay = Duration::from_millis(200);
    o.retry.max_delay = Duration::from_secs(3);
    o.retry.max_attempts = 20;
    let seen = record(&mut o);
    let p = provision(o).await.unwrap();
    assert!(p.attempts > 1);
    let s = steps(&seen);
    // A throttling service that closes the connection did not spend the token: one create,
    // RegisterThing again with its token on each new connection, no certificate left behind.
    assert_eq!(s.iter().filter(|x| **x == Step::Creating).count(), 1);
    assert!(s.iter().filter(|x| **x == Step::Registering).count() > 1);
    assert!(env.emu.throttle().claim_connections() > 1);
    assert!(p.abandoned_certificates.is_empty());
    let devices: Vec<_> = env
        .emu
        .service()
        .registry()
        .certificates()
        .into_iter()
        .filter(|c| c.status != fleetprov_emulator::registry::CertStatus::Claim)
        .collect();
    assert_eq!(devices.len(), 1, "{devices:?}");
    assert_eq!(devices[0].certificate_id, p.certificate_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_devices_at_ten_registrations_a_second() {
    let env = Env::start().await;
    env.emu
        .throttle()
        .set_rate_limit(Api::RegisterThing, Some(10.0));
    let n = 200;
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut o = options(&env, &env.dir.path().join(format!("dev{i}")));
        o.parameters = params(&format!("fleet-{i}"));
        o.retry.max_attempts = 40;
        o.retry.base_delay = Duration::from_millis(500);
        o.retry.max_delay = Duration::from_secs(10);
        o.retry.deadline = Duration::from_secs(240);
        o.claim.operation_timeout = Duration::from_secs(60);
        o.claim.connect_timeout = Duration::from_secs(60);
        tasks.push(tokio::spawn(provision(o)));
    }
    let mut attempts = 0;
    for t in tasks {
        let p = t.await.unwrap().unwrap();
        attempts += p.attempts;
    }
    // Through backoff: more tries than devices, all provisioned.
    assert!(attempts > n);
    assert!(env.emu.throttle().throttled() > 0);
    assert_eq!(env.emu.service().registry().things().len(), n as usize);
}
