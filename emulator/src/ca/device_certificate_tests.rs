use super::profile::DEVICE_NOT_AFTER_UNIX;
use super::stored::path_len_constraint;
use super::*;
use crate::state_dir::{INTERMEDIATE_CERT_FILE, INTERMEDIATE_KEY_FILE};
use rcgen::{BasicConstraints, IsCa, KeyUsagePurpose};
use std::time::UNIX_EPOCH;

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).unwrap().1
}

fn csr_pem() -> String {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "validity test");
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn pem_blocks(pem: &str) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .map(|p| p.unwrap().contents)
        .collect()
}

fn unix_now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

#[test]
fn device_certificates_last_the_set_validity() {
    for secs in [30, 600, 365 * 86_400] {
        let dir = tempfile::tempdir().unwrap();
        let device = DeviceCertificates {
            validity: Some(Duration::from_secs(secs)),
            intermediate: false,
        };
        let ca = Ca::load_or_create_with(dir.path(), device).unwrap();
        let before = unix_now();
        for issued in [
            ca.sign_csr(&csr_pem()).unwrap(),
            ca.create_keys_and_certificate().unwrap(),
        ] {
            let cert = parse(&issued.certificate_der);
            let validity = cert.validity();
            let (nb, na) = (
                validity.not_before.timestamp(),
                validity.not_after.timestamp(),
            );
            assert_eq!(na - nb, i64::try_from(secs).unwrap(), "validity {secs} s");
            // Valid now, and backdated by a tenth of it, at most a minute.
            let back = i64::try_from((secs / 10).min(60)).unwrap();
            assert!(
                nb <= before && nb >= before - back - 1,
                "notBefore {nb}, now {before}"
            );
            assert_eq!(pem_blocks(&issued.certificate_pem).len(), 1);
        }
    }
    // Without a setting: the end of 2049, as before.
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path()).unwrap();
    let issued = ca.sign_csr(&csr_pem()).unwrap();
    assert_eq!(
        parse(&issued.certificate_der)
            .validity()
            .not_after
            .timestamp(),
        DEVICE_NOT_AFTER_UNIX
    );
    let zero = DeviceCertificates {
        validity: Some(Duration::ZERO),
        intermediate: false,
    };
    let e = Ca::load_or_create_with(dir.path(), zero).unwrap_err();
    assert!(e.to_string().contains("at least one second"), "{e}");
}

#[test]
fn an_intermediate_ca_issues_device_certificates_with_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let device = DeviceCertificates {
        validity: None,
        intermediate: true,
    };
    let ca = Ca::load_or_create_with(dir.path(), device.clone()).unwrap();
    let root_der = ca.ca_der();
    let root = parse(&root_der);
    assert_eq!(path_len_constraint(&root_der), Some(1));
    for issued in [
        ca.sign_csr(&csr_pem()).unwrap(),
        ca.create_keys_and_certificate().unwrap(),
    ] {
        let blocks = pem_blocks(&issued.certificate_pem);
        assert_eq!(blocks.len(), 2, "{}", issued.certificate_pem);
        assert_eq!(blocks[0], issued.certificate_der);
        assert_eq!(issued.certificate_id, certificate_id(&blocks[0]));
        let (leaf, inter) = (parse(&blocks[0]), parse(&blocks[1]));
        assert_eq!(leaf.issuer().as_raw(), inter.subject().as_raw());
        assert_eq!(inter.issuer().as_raw(), root.subject().as_raw());
        leaf.verify_signature(Some(inter.public_key()))
            .expect("signed by the intermediate");
        inter
            .verify_signature(Some(root.public_key()))
            .expect("the intermediate is signed by the root");
        assert!(leaf.verify_signature(Some(root.public_key())).is_err());
        assert!(inter.is_ca() && !leaf.is_ca());
        assert_eq!(path_len_constraint(&blocks[1]), Some(0));
    }
    assert_eq!(
        fs::read_to_string(dir.path().join(INTERMEDIATE_CERT_FILE)).unwrap(),
        ca.intermediate_pem().unwrap()
    );
    assert_eq!(
        crate::files::mode_of(&dir.path().join(INTERMEDIATE_KEY_FILE)) & 0o777,
        0o600
    );
    // Claims still come from the root.
    let claim = ca.issue_claim("claim", Duration::from_secs(300)).unwrap();
    assert_eq!(
        parse(&claim.certificate_der).issuer().as_raw(),
        root.subject().as_raw()
    );
    let pem = ca.intermediate_pem().unwrap().to_owned();
    drop(ca);
    // A restart keeps the same intermediate; without the flag, the root issues again.
    let again = Ca::load_or_create_with(dir.path(), device).unwrap();
    assert_eq!(again.intermediate_pem(), Some(pem.as_str()));
    drop(again);
    let plain = Ca::load_or_create(dir.path()).unwrap();
    assert!(plain.intermediate_pem().is_none());
    let issued = plain.sign_csr(&csr_pem()).unwrap();
    assert_eq!(pem_blocks(&issued.certificate_pem).len(), 1);
    parse(&issued.certificate_der)
        .verify_signature(Some(root.public_key()))
        .unwrap();
}

#[test]
fn a_root_that_allows_no_intermediate_is_named() {
    let dir = tempfile::tempdir().unwrap();
    // A root as the emulator made them before: pathLenConstraint 0.
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "old root");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let cert = params.self_signed(&key).unwrap();
    Ca::load_or_create(dir.path()).unwrap();
    fs::write(dir.path().join(CA_CERT_FILE), cert.pem()).unwrap();
    fs::write(dir.path().join(CA_KEY_FILE), key.serialize_pem()).unwrap();
    let device = DeviceCertificates {
        validity: None,
        intermediate: true,
    };
    let e = Ca::load_or_create_with(dir.path(), device).unwrap_err();
    assert!(
        e.to_string().contains("pathLenConstraint 0") && e.to_string().contains("ca.pem"),
        "{e}"
    );
    assert!(!dir.path().join(INTERMEDIATE_CERT_FILE).exists());
    // Without an intermediate the old root still serves.
    Ca::load_or_create(dir.path()).unwrap();
}
