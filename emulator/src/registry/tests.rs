use super::journal::COMPACT_MIN_BYTES;
use super::*;
use crate::files::mode_of;
use crate::files::open_append_private;
use crate::state_dir::{
    REGISTRY_JOURNAL_FILE as JOURNAL_FILE, REGISTRY_SNAPSHOT_FILE as SNAPSHOT_FILE,
};
use crate::template::{CertificateSpec, OverrideSetting, PolicySpec, ThingSpec};
use serde_json::json;
use std::fs;
use std::io::Write;

const CLAIM: &str = "claim-cert-id";

fn issued(id: &str) -> Issued {
    Issued {
        certificate_id: id.to_owned(),
        certificate_pem: format!("PEM of {id}"),
        certificate_der: Vec::new(),
        private_key_pem: None,
    }
}

fn provisioned(cert_id: &str, thing: &str) -> Provisioned {
    Provisioned {
        thing: Some(ThingSpec {
            thing_name: thing.to_owned(),
            attributes: [("version".to_owned(), "v1".to_owned())].into(),
            thing_type_name: None,
            thing_groups: Vec::new(),
            billing_group: None,
            package_versions: BTreeMap::new(),
            overrides: BTreeMap::new(),
        }),
        certificate: Some(CertificateSpec {
            certificate_id: cert_id.to_owned(),
            status: "ACTIVE".to_owned(),
        }),
        policies: vec![PolicySpec {
            logical_id: "policy".to_owned(),
            policy_name: None,
            policy_document: Some(json!({"Version": "2012-10-17"})),
        }],
        device_configuration: BTreeMap::new(),
    }
}

fn spec(thing: &mut Provisioned) -> &mut ThingSpec {
    thing.thing.as_mut().unwrap()
}

fn strings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Register certificate `cert_id` for the thing "dev" as changed by `edit`.
fn register_dev(
    registry: &Registry,
    cert_id: &str,
    edit: impl FnOnce(&mut ThingSpec),
) -> ThingRecord {
    let mut provisioned = provisioned(cert_id, "dev");
    edit(spec(&mut provisioned));
    let token = registry.add_pending(&issued(cert_id), CLAIM);
    registry
        .apply_registration(&token, CLAIM, &provisioned)
        .unwrap()
        .unwrap()
}

#[test]
fn registration_activates_attaches_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    registry.add_claim(CLAIM);
    let token = registry.add_pending(&issued("c1"), CLAIM);
    assert_eq!(token.len(), 128);
    assert_eq!(
        registry.cert_status("c1"),
        Some(CertStatus::PendingActivation)
    );
    assert_eq!(
        registry.check_token(&token, CLAIM).unwrap().certificate_id,
        "c1"
    );

    let thing = registry
        .apply_registration(&token, CLAIM, &provisioned("c1", "ThingPrefix_1"))
        .unwrap()
        .unwrap();
    assert_eq!(thing.name, "ThingPrefix_1");
    assert_eq!(thing.certificate_ids, ["c1"]);
    assert_eq!(thing.policies.len(), 1);
    assert!(thing.policies[0].starts_with("policy-"));
    assert_eq!(registry.cert_status("c1"), Some(CertStatus::Active));
    drop(registry);

    let reopened = Registry::open(dir.path()).unwrap();
    assert_eq!(reopened.cert_status(CLAIM), Some(CertStatus::Claim));
    assert_eq!(reopened.cert_status("c1"), Some(CertStatus::Active));
    let cert = reopened.certificate("c1").unwrap();
    assert_eq!(cert.thing.as_deref(), Some("ThingPrefix_1"));
    assert_eq!(cert.certificate_pem.as_deref(), Some("PEM of c1"));
    assert_eq!(reopened.things(), vec![thing]);
    assert_eq!(reopened.check_token(&token, CLAIM), Err(TokenError::Spent));
    assert_eq!(reopened.cert_status("never-seen"), None);
}

#[test]
fn token_problems_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let token = registry.add_pending(&issued("c1"), CLAIM);
    let plan = provisioned("c1", "t");

    assert_eq!(registry.check_token("", CLAIM), Err(TokenError::Empty));
    assert_eq!(
        registry.check_token("nope", CLAIM),
        Err(TokenError::Unknown)
    );
    assert_eq!(
        registry.check_token(&token, "other-cert"),
        Err(TokenError::Foreign)
    );
    assert_eq!(
        registry.apply_registration(&token, "other-cert", &plan),
        Err(RegistrationError::Token(TokenError::Foreign))
    );
    registry.apply_registration(&token, CLAIM, &plan).unwrap();
    assert_eq!(
        registry.apply_registration(&token, CLAIM, &plan),
        Err(RegistrationError::Token(TokenError::Spent))
    );

    let late = registry.add_pending(&issued("c2"), CLAIM);
    assert!(registry.expire_token_for_test(&late));
    assert!(!registry.expire_token_for_test("nope"));
    assert_eq!(
        registry.apply_registration(&late, CLAIM, &provisioned("c2", "t2")),
        Err(RegistrationError::Token(TokenError::Expired))
    );
    assert_eq!(
        registry.cert_status("c2"),
        Some(CertStatus::PendingActivation)
    );
    assert!(registry.thing("t2").is_none());

    let messages: Vec<String> = [
        TokenError::Empty,
        TokenError::Unknown,
        TokenError::Foreign,
        TokenError::Spent,
        TokenError::Expired,
    ]
    .iter()
    .map(|e| e.to_string())
    .collect();
    assert_eq!(messages[0], "Certificate ownership token cannot be empty.");
    let mut distinct = messages.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), messages.len());
}

#[test]
fn a_token_raced_by_concurrent_registrations_is_spent_once() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let token = registry.add_pending(&issued("c1"), CLAIM);
    let start = std::sync::Barrier::new(8);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (registry, token, start) = (&registry, &token, &start);
                s.spawn(move || {
                    start.wait();
                    registry.apply_registration(token, CLAIM, &provisioned("c1", &format!("t{i}")))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results
        .iter()
        .filter(|r| r.is_err())
        .all(|r| *r == Err(RegistrationError::Token(TokenError::Spent))));
    assert_eq!(registry.things().len(), 1);
}

#[test]
fn expired_unregistered_certificates_are_deleted_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let token = registry.add_pending(&issued("c1"), CLAIM);
    registry.expire_token_for_test(&token);
    drop(registry);
    let reopened = Registry::open(dir.path()).unwrap();
    assert_eq!(reopened.cert_status("c1"), None);
    // The token is still remembered, to say why it fails.
    assert_eq!(
        reopened.check_token(&token, CLAIM),
        Err(TokenError::Expired)
    );
}

#[test]
fn the_template_must_name_the_token_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let token = registry.add_pending(&issued("c1"), CLAIM);
    let err = registry
        .apply_registration(&token, CLAIM, &provisioned("someone-else", "t"))
        .unwrap_err();
    assert!(matches!(err, RegistrationError::Invalid(_)), "{err:?}");
    let mut bad_status = provisioned("c1", "t");
    bad_status.certificate.as_mut().unwrap().status = "PENDING".into();
    assert!(matches!(
        registry.apply_registration(&token, CLAIM, &bad_status),
        Err(RegistrationError::Invalid(_))
    ));
    // Nothing was spent by the refusals.
    assert!(registry
        .apply_registration(&token, CLAIM, &provisioned("c1", "t"))
        .is_ok());
}

#[test]
fn existing_things_follow_override_settings() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let mut first = provisioned("c1", "dev");
    spec(&mut first).thing_type_name = Some("sensor".into());
    spec(&mut first).thing_groups = vec!["g1".into()];
    spec(&mut first).billing_group = Some("b1".into());
    let t1 = registry.add_pending(&issued("c1"), CLAIM);
    registry.apply_registration(&t1, CLAIM, &first).unwrap();

    // The seed template's settings: MERGE attributes, REPLACE type, DO_NOTHING groups.
    let thing = register_dev(&registry, "c2", |s| {
        s.attributes = strings(&[("serialNumber", "42"), ("version", "v2")]);
        s.thing_type_name = Some("gateway".into());
        s.thing_groups = vec!["g2".into()];
        s.billing_group = Some("b2".into());
        s.overrides = [
            ("AttributePayload".to_owned(), OverrideSetting::Merge),
            ("ThingTypeName".to_owned(), OverrideSetting::Replace),
            ("ThingGroups".to_owned(), OverrideSetting::DoNothing),
        ]
        .into();
    });
    assert_eq!(
        thing.attributes,
        strings(&[("serialNumber", "42"), ("version", "v2")])
    );
    assert_eq!(thing.thing_type.as_deref(), Some("gateway"));
    assert_eq!(thing.groups, ["g1"]);
    // No setting for BillingGroup: kept.
    assert_eq!(thing.billing_group.as_deref(), Some("b1"));
    assert_eq!(thing.certificate_ids, ["c1", "c2"]);

    // MERGE groups adds; REPLACE attributes replaces.
    let thing = register_dev(&registry, "c3", |s| {
        s.attributes = strings(&[("only", "this")]);
        s.thing_groups = vec!["g3".into(), "g1".into()];
        s.overrides = [
            ("AttributePayload".to_owned(), OverrideSetting::Replace),
            ("ThingGroups".to_owned(), OverrideSetting::Merge),
        ]
        .into();
    });
    assert_eq!(thing.attributes, strings(&[("only", "this")]));
    assert_eq!(thing.groups, ["g1", "g3"]);

    // FAIL refuses a change and leaves everything as it was, token included.
    let mut fourth = provisioned("c4", "dev");
    {
        let s = spec(&mut fourth);
        s.thing_type_name = Some("other".into());
        s.overrides = [("ThingTypeName".to_owned(), OverrideSetting::Fail)].into();
    }
    let t4 = registry.add_pending(&issued("c4"), CLAIM);
    let err = registry
        .apply_registration(&t4, CLAIM, &fourth)
        .unwrap_err();
    assert!(
        matches!(&err, RegistrationError::Conflict(m) if m.contains("ThingTypeName")),
        "{err:?}"
    );
    assert_eq!(registry.thing("dev").unwrap(), thing);
    assert_eq!(
        registry.cert_status("c4"),
        Some(CertStatus::PendingActivation)
    );
    assert!(registry.check_token(&t4, CLAIM).is_ok());
    // FAIL with the same value is no change, so it passes.
    spec(&mut fourth).thing_type_name = Some("gateway".into());
    assert!(registry.apply_registration(&t4, CLAIM, &fourth).is_ok());
}

#[test]
fn a_merge_past_the_attribute_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    register_dev(&registry, "c1", |s| {
        s.attributes = strings(&[("a", "1"), ("b", "2")]);
    });
    // Two more attributes make four: one past AWS's limit for a thing without a thing type.
    let mut merged = provisioned("c2", "dev");
    {
        let s = spec(&mut merged);
        s.attributes = strings(&[("c", "3"), ("d", "4")]);
        s.overrides = [("AttributePayload".to_owned(), OverrideSetting::Merge)].into();
    }
    let token = registry.add_pending(&issued("c2"), CLAIM);
    let err = registry
        .apply_registration(&token, CLAIM, &merged)
        .unwrap_err();
    assert_eq!(
        err,
        RegistrationError::Conflict(
            "thing dev: 4 attributes; a thing without a thing type may have at most 3".into()
        )
    );
    assert_eq!(registry.thing("dev").unwrap().attributes.len(), 2);
    // With a thing type the limit is 50, so the same merge passes.
    spec(&mut merged).thing_type_name = Some("sensor".into());
    spec(&mut merged)
        .overrides
        .insert("ThingTypeName".to_owned(), OverrideSetting::Replace);
    let thing = registry
        .apply_registration(&token, CLAIM, &merged)
        .unwrap()
        .unwrap();
    assert_eq!(thing.attributes.len(), 4);
}

#[test]
fn journal_is_replayed_and_a_torn_line_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    registry.add_claim("a");
    registry.add_claim("b");
    assert!(registry.set_cert_status("b", CertStatus::Revoked));
    assert!(!registry.set_cert_status("zzz", CertStatus::Revoked));
    // What a crash in the middle of a write leaves.
    let mut journal = open_append_private(&dir.path().join(JOURNAL_FILE)).unwrap();
    journal
        .write_all(br#"{"op":"certificate","record":{"certificate_id":"c","#)
        .unwrap();
    drop(journal);
    drop(registry);

    let reopened = Registry::open(dir.path()).unwrap();
    assert_eq!(reopened.cert_status("a"), Some(CertStatus::Claim));
    assert_eq!(reopened.cert_status("b"), Some(CertStatus::Revoked));
    assert_eq!(reopened.cert_status("c"), None);
    // Opening folded the journal into a fresh snapshot.
    assert_eq!(
        fs::metadata(dir.path().join(JOURNAL_FILE)).unwrap().len(),
        0
    );
    for file in [SNAPSHOT_FILE, JOURNAL_FILE] {
        assert_eq!(mode_of(&dir.path().join(file)), 0o600, "{file}");
    }
    // Adding the same claim again writes nothing.
    reopened.add_claim("a");
    assert_eq!(
        fs::metadata(dir.path().join(JOURNAL_FILE)).unwrap().len(),
        0
    );
}

#[test]
fn a_large_journal_is_folded_into_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open(dir.path()).unwrap();
    let journal = dir.path().join(JOURNAL_FILE);
    let mut compacted = false;
    let mut last_len = 0;
    for i in 0..20_000 {
        registry.add_claim(&format!("claim-{i:05}"));
        let len = fs::metadata(&journal).unwrap().len();
        if len < last_len {
            compacted = true;
            break;
        }
        last_len = len;
    }
    assert!(compacted, "journal reached {last_len} bytes");
    assert!(last_len <= COMPACT_MIN_BYTES + 200);
    drop(registry);
    let reopened = Registry::open(dir.path()).unwrap();
    assert_eq!(reopened.cert_status("claim-00000"), Some(CertStatus::Claim));
}

#[test]
fn a_damaged_snapshot_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(SNAPSHOT_FILE), b"{not json").unwrap();
    let err = Registry::open(dir.path()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}
