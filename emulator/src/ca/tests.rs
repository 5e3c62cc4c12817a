use super::*;
use crate::cert::cert_info;
use crate::files::mode_of;
use rcgen::{PKCS_ECDSA_P384_SHA384, PKCS_ED25519, PKCS_RSA_SHA256};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::EncodePrivateKey;
use rsa::RsaPrivateKey;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::ExtendedKeyUsage;

/// P-384 key, CSR signed with ecdsa-with-SHA256 (OpenSSL's default digest), full subject.
const P384_SHA256_CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIIBfDCCAQICAQAwgYIxCzAJBgNVBAYTAlVTMRMwEQYDVQQIDApXYXNoaW5ndG9u
MRUwEwYDVQQKDAxFeGFtcGxlIENvcnAxEDAOBgNVBAsMB1NlbnNvcnMxEjAQBgNV
BAMMCXNlbnNvci00MjEQMA4GA1UEBRMHU04tMDA0MjEPMA0GA1UELhMGYmF0Y2g3
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEoT2OrmUmY5EvwcQZJOINMz8QjBVMGir+
zKRu7tGecOGBJkK2QE0SOwjjbW/q21I9aUXrNM735HZ1C2A9PKHVBRXOD1BKQZ2c
ca2JcJspawmLUdPHVQUp/JkacRpv31X4oAAwCgYIKoZIzj0EAwIDaAAwZQIwVute
eWn3UXdwXZ6DgCPguhnnReW3ho0v7qpJH8CXnIpapsGbHR4SGP705XLluKpxAjEA
zxuypWwZSqWfkSJQrbOI8SLag8o8Fq/2gwbflmw1lEJdUbiLJoD8Lh92vYHUqXHo
-----END CERTIFICATE REQUEST-----
";
/// RSA-1024 key, made with `openssl req -newkey rsa:1024`.
const RSA1024_CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIIBTjCBuAIBADAPMQ0wCwYDVQQDDAR3ZWFrMIGfMA0GCSqGSIb3DQEBAQUAA4GN
ADCBiQKBgQDxsCdBQ1sKYplZwoB9McC7EyFmd6dgE6mNcDJQ6g/qbXNEiccNIWte
Z31s6qAGZ1eVUiImx27eSR3UBB0CQ5q9Bt4oHcECr4EtAMofBpi/b2yFc3A4iNnq
nIl4xLeWRrpZ0Woy1Vo7VzTS0Hx5H70ZFhTVcqKPQ8fJP9vhG5zZvQIDAQABoAAw
DQYJKoZIhvcNAQELBQADgYEA70Z7OqQKz7miWPNbvNnWgpWtmTYXczwJ5WSTxaS7
FGM0vfsXNRoeYGvNzeIqAeUfVB1X1A7ePYuA4/1IQgylN6X/avzS1x9npWNBjyvl
jH3Qx/RrAJtpbY8VbxanwrqjionLuzwrFdWc6FNUOeSVsX3r9otVyEqvIgPFOta7
w8Y=
-----END CERTIFICATE REQUEST-----
";
/// P-521 key, a curve AWS IoT does not take.
const P521_CSR: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIIBUjCBtAIBADAPMQ0wCwYDVQQDDARwNTIxMIGbMBAGByqGSM49AgEGBSuBBAAj
A4GGAAQA3eVC+K9Q0Qb2En9xNqK1IyXh7obMl+rwWvW/78ER0DLoxM8CyeuzBtTw
vkxNRS73EazDbY1NnT+Unedg5BCU7t0AS5pGgwuD73DCPnEcldzgVVsnHEHqCMW7
anyaTbP+E5YnGdeCTeJJr17EQucr+nKtFdXRcW9uEaQARbrxSyxyffygADAKBggq
hkjOPQQDAgOBjAAwgYgCQgDoz2oEz7ZgC+09AtAFUNH4NQBpDbyLlyNxelkXYte2
OW1d41JqIBgEIoQuY4mMvWVWq1FIBoAlmkQlsqWwXHmjrgJCAZoUPRwgJ+3U/72y
ysm0I0SzQDd7y4gFkXesuWFAuX9kLVQQlCMUctcNdZApLpRJizfzPhSumfmqHU62
qv/5TbN5
-----END CERTIFICATE REQUEST-----
";

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der).unwrap().1
}

/// The certificate's extended key usage, which every issued certificate must carry.
fn eku<'a>(cert: &'a X509Certificate<'_>) -> &'a ExtendedKeyUsage<'a> {
    cert.extended_key_usage().unwrap().unwrap().value
}

fn verifies_against(cert_der: &[u8], ca: &Ca) {
    let ca_der = ca.ca_der();
    let ca_cert = parse(&ca_der);
    parse(cert_der)
        .verify_signature(Some(ca_cert.public_key()))
        .expect("signed by the CA");
}

fn csr_spki(csr_pem: &str) -> Vec<u8> {
    let der = pem_block(csr_pem.as_bytes(), "CERTIFICATE REQUEST").unwrap();
    let (_, csr) = X509CertificationRequest::from_der(&der).unwrap();
    csr.certification_request_info.subject_pki.raw.to_vec()
}

fn csr_for(key: &KeyPair, cn: &str) -> rcgen::CertificateSigningRequest {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.serialize_request(key).unwrap()
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn state_is_created_once_and_reloaded() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let first = Ca::load_or_create(&state).unwrap();
    let (ca_pem, claim, server, server_key) = (
        first.ca_pem().to_owned(),
        first.claim_der(),
        first.server_chain_der(),
        first.server_key_der(),
    );
    drop(first);

    let again = Ca::load_or_create(&state).unwrap();
    assert_eq!(again.ca_pem(), ca_pem);
    assert_eq!(fs::read_to_string(state.join("ca.pem")).unwrap(), ca_pem);
    assert_eq!(again.claim_der(), claim);
    assert_eq!(again.server_chain_der(), server);
    assert_eq!(again.server_key_der(), server_key);
    // What the reloaded CA signs chains to the CA clients already trust.
    let issued = again
        .issue_claim("after restart", 300 * Duration::from_secs(1))
        .unwrap();
    verifies_against(&issued.certificate_der, &again);
    let cert = parse(&issued.certificate_der);
    let ca_der = again.ca_der();
    assert_eq!(cert.issuer().as_raw(), parse(&ca_der).subject().as_raw());
}

#[test]
fn private_files_are_0600_and_the_directory_0700() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("fresh");
    let ca = Ca::load_or_create(&state).unwrap();
    assert_eq!(mode_of(&state), 0o700);
    for key in ["ca-key.pem", "server-key.pem", "claim-key.pem"] {
        assert_eq!(mode_of(&state.join(key)), 0o600, "{key}");
    }
    for cert in ["ca.pem", "server-cert.pem", "claim-cert.pem"] {
        assert_eq!(mode_of(&state.join(cert)), 0o644, "{cert}");
    }
    let (cert_path, key_path) = ca.claim_paths();
    assert_eq!(cert_path, state.join("claim-cert.pem"));
    assert_eq!(key_path, state.join("claim-key.pem"));
    // No temporary file is left behind.
    let names: Vec<String> = fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 6, "{names:?}");
}

#[test]
fn a_lost_ca_key_is_an_error_not_a_new_ca() {
    let dir = tempfile::tempdir().unwrap();
    drop(Ca::load_or_create(dir.path()).unwrap());
    fs::remove_file(dir.path().join("ca-key.pem")).unwrap();
    let err = Ca::load_or_create(dir.path()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
}

#[test]
fn server_certificate_names_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path()).unwrap();
    let chain = ca.server_chain_der();
    assert_eq!(chain.len(), 1);
    verifies_against(&chain[0], &ca);
    let cert = parse(&chain[0]);
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = san
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        names,
        [
            "DNSName(localhost)",
            "IPAddress(7f:00:00:01)",
            "IPAddress(00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:01)"
        ]
    );
    assert!(eku(&cert).server_auth);
    // The key is PKCS#8 and belongs to the certificate.
    let key = KeyPair::try_from(ca.server_key_der()).unwrap();
    assert_eq!(key.public_key_der(), cert.public_key().raw);
}

#[test]
fn claims_are_client_certificates_with_their_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path()).unwrap();
    let default_claim = ca.claim_der();
    verifies_against(&default_claim, &ca);
    let key_pem = fs::read_to_string(dir.path().join("claim-key.pem")).unwrap();
    let key = KeyPair::from_pem(&key_pem).unwrap();
    assert_eq!(key.public_key_der(), parse(&default_claim).public_key().raw);

    let temp = ca
        .issue_claim("temporary", Duration::from_secs(300))
        .unwrap();
    let cert = parse(&temp.certificate_der);
    let lifetime =
        cert.validity().not_after.timestamp() - OffsetDateTime::now_utc().unix_timestamp();
    assert!((290..=300).contains(&lifetime), "{lifetime}");
    assert!(eku(&cert).client_auth);
    assert_eq!(info_cn(&temp.certificate_der), Some("temporary".into()));
    assert!(temp
        .private_key_pem
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
}

#[test]
fn claims_can_be_issued_with_past_validity() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path()).unwrap();
    let now = SystemTime::now();
    let expired = ca
        .issue_claim_between("expired", now - 2 * DAY, now - DAY)
        .unwrap();
    verifies_against(&expired.certificate_der, &ca);
    let cert = parse(&expired.certificate_der);
    let ago = OffsetDateTime::now_utc().unix_timestamp() - cert.validity().not_after.timestamp();
    assert!((86_400..86_410).contains(&ago), "{ago}");
    assert_eq!(
        cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp(),
        86_400
    );
    assert!(ca.issue_claim_between("backwards", now, now - DAY).is_err());
}

fn info_cn(der: &[u8]) -> Option<String> {
    cert_info(der).common_name
}

#[test]
fn create_keys_gives_a_pkcs1_rsa_key_that_matches_a_ca_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path()).unwrap();
    let issued = ca.create_keys_and_certificate().unwrap();
    verifies_against(&issued.certificate_der, &ca);
    assert_eq!(
        issued.certificate_id,
        certificate_id(&issued.certificate_der)
    );
    assert_eq!(issued.certificate_id.len(), 64);
    assert!(issued
        .certificate_id
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    assert_eq!(
        pem_block(issued.certificate_pem.as_bytes(), "CERTIFICATE").unwrap(),
        issued.certificate_der
    );

    let key_pem = issued.private_key_pem.as_deref().unwrap();
    assert!(key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----\n"));
    let key = RsaPrivateKey::from_pkcs1_pem(key_pem).unwrap();
    assert_eq!(rsa::traits::PublicKeyParts::size(&key), 256);
    let cert = parse(&issued.certificate_der);
    assert_eq!(
        key.to_public_key().to_public_key_der().unwrap().as_bytes(),
        cert.public_key().raw
    );
    assert!(eku(&cert).client_auth);
    assert!(!cert.is_ca());
    assert_eq!(
        info_cn(&issued.certificate_der).as_deref(),
        Some(DEVICE_COMMON_NAME)
    );

    // Every request gets a key of its own.
    let second = ca.create_keys_and_certificate().unwrap();
    assert_ne!(second.private_key_pem, issued.private_key_pem);
    assert_ne!(second.certificate_id, issued.certificate_id);
}

#[test]
fn csr_keys_rsa_p256_p384_keep_their_spki_and_subject() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path()).unwrap();

    let rsa_key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let pkcs8 = rsa_key.to_pkcs8_der().unwrap();
    let rsa_pair = KeyPair::from_pkcs8_der_and_sign_algo(
        &rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_bytes()),
        &PKCS_RSA_SHA256,
    )
    .unwrap();
    let p256 = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let p384 = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).unwrap();

    let mut pems = vec![P384_SHA256_CSR.to_owned()];
    for (key, cn) in [
        (&rsa_pair, "rsa-device"),
        (&p256, "p256-device"),
        (&p384, "p384-device"),
    ] {
        pems.push(csr_for(key, cn).pem().unwrap());
    }
    for pem in &pems {
        let issued = ca.sign_csr(pem).unwrap();
        assert!(issued.private_key_pem.is_none());
        verifies_against(&issued.certificate_der, &ca);
        let cert = parse(&issued.certificate_der);
        assert_eq!(cert.public_key().raw, csr_spki(pem).as_slice());
        assert!(eku(&cert).client_auth);
    }
    assert_eq!(
        info_cn(&ca.sign_csr(&pems[2]).unwrap().certificate_der).as_deref(),
        Some("p256-device")
    );

    let info = cert_info(&ca.sign_csr(P384_SHA256_CSR).unwrap().certificate_der);
    assert_eq!(info.common_name.as_deref(), Some("sensor-42"));
    assert_eq!(info.country.as_deref(), Some("US"));
    assert_eq!(info.organization.as_deref(), Some("Example Corp"));
    assert_eq!(info.organizational_unit.as_deref(), Some("Sensors"));
    assert_eq!(info.state_name.as_deref(), Some("Washington"));
    assert_eq!(info.serial_number.as_deref(), Some("SN-0042"));
    assert_eq!(info.dn_qualifier.as_deref(), Some("batch7"));
}

#[test]
fn bad_csrs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::load_or_create(dir.path()).unwrap();

    let err = ca.sign_csr(RSA1024_CSR).unwrap_err();
    assert!(err.0.contains("2048"), "{err}");
    let err = ca.sign_csr(P521_CSR).unwrap_err();
    assert!(err.0.contains("P-256 or P-384"), "{err}");
    let ed = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let err = ca.sign_csr(&csr_for(&ed, "ed").pem().unwrap()).unwrap_err();
    assert!(err.0.contains("not supported"), "{err}");

    // One byte of the subject changed after signing: the signature no longer matches.
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut der = csr_for(&key, "aaaaaaaaaaaa").der().to_vec();
    let at = der.windows(12).position(|w| w == b"aaaaaaaaaaaa").unwrap();
    der[at] = b'b';
    let tampered = format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64(&der)
    );
    let err = ca.sign_csr(&tampered).unwrap_err();
    assert!(err.0.contains("signature"), "{err}");

    for junk in [
        "",
        "not pem",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
    ] {
        assert!(ca.sign_csr(junk).is_err(), "{junk:?}");
    }
    // A certificate is not a certificate request.
    let cert_pem = ca.create_keys_and_certificate().unwrap().certificate_pem;
    assert!(ca.sign_csr(&cert_pem).is_err());
}
