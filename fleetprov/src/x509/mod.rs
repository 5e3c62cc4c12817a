//! The DER and X.509 helpers the signer, PKCS#11, key generation and the identity store share:
//! a DER codec ([`der`]), SubjectPublicKeyInfo building, certificate signing requests
//! ([`csr`]), and the facts read from a certificate (its validity period, its subject, whether
//! a private key belongs to it). A few lines of DER instead of X.509 crates, which would add
//! their parsers and writers to every device's library for a few fields.

pub(crate) mod csr;
pub(crate) mod der;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

// One DER element off the front of the input: (tag, contents, rest).
use der::der_next as element;
use der::{der_expect, der_next, der_uint, der_wrap, TAG_BIT_STRING, TAG_OID, TAG_SEQUENCE};

/// A certificate's `notBefore` and `notAfter`, as times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Validity {
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
}

const SEQUENCE: u8 = 0x30;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The validity of a DER certificate, or `None` if it is not one.
pub(crate) fn validity(der: &[u8]) -> Option<Validity> {
    let (SEQUENCE, cert, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(cert)? else {
        return None;
    };
    let mut rest = tbs;
    // [0] EXPLICIT version, absent for v1 certificates.
    if rest.first() == Some(&0xa0) {
        rest = element(rest)?.2;
    }
    // serialNumber, signature, issuer: skipped.
    for _ in 0..3 {
        rest = element(rest)?.2;
    }
    let (SEQUENCE, validity, _) = element(rest)? else {
        return None;
    };
    let (t1, nb, rest) = element(validity)?;
    let (t2, na, _) = element(rest)?;
    Some(Validity {
        not_before: time(t1, nb)?,
        not_after: time(t2, na)?,
    })
}

/// UTCTime `YYMMDDHHMMSSZ` or GeneralizedTime `YYYYMMDDHHMMSSZ` (the forms RFC 5280 allows).
fn time(tag: u8, text: &[u8]) -> Option<SystemTime> {
    let text = std::str::from_utf8(text).ok()?;
    let digits = text.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy: i64 = digits[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (GENERALIZED_TIME, 14) => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, hour, minute, second) =
        (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    u64::try_from(secs)
        .ok()
        .map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The first certificate in `pem`, DER.
pub(crate) fn first_certificate(pem: &[u8]) -> Option<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem).next()?.ok()
}

/// Whether `key_pem` is the private key of `cert`: `Some(true)` or `Some(false)` when it can
/// tell, `None` when the key cannot be parsed or its type gives no public key to compare.
pub(crate) fn key_matches(cert: &CertificateDer<'static>, key_pem: &[u8]) -> Option<bool> {
    let key = PrivateKeyDer::from_pem_slice(key_pem).ok()?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).ok()?;
    let certified = rustls::sign::CertifiedKey::new(vec![cert.clone()], signing);
    match certified.keys_match() {
        Ok(()) => Some(true),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Some(false),
        Err(_) => None,
    }
}

/// DER object identifiers, content bytes only.
pub(crate) const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
pub(crate) const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
pub(crate) const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
pub(crate) const OID_RSA_ENCRYPTION: &[u8] =
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// The SubjectPublicKeyInfo of an EC key from its DER ECParameters and uncompressed point.
pub(crate) fn ec_spki(params_der: &[u8], point: &[u8]) -> Vec<u8> {
    let mut alg = der_wrap(TAG_OID, OID_EC_PUBLIC_KEY);
    alg.extend_from_slice(params_der);
    spki(&alg, point)
}

/// The SubjectPublicKeyInfo of an RSA key from its modulus and public exponent (big-endian).
#[cfg_attr(not(feature = "pkcs11"), allow(dead_code))]
pub(crate) fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let mut key = der_uint(modulus);
    key.extend(der_uint(exponent));
    rsa_spki_of(&der_wrap(TAG_SEQUENCE, &key))
}

/// The SubjectPublicKeyInfo of an RSA key from its DER RSAPublicKey: the algorithm
/// rsaEncryption with NULL parameters.
pub(crate) fn rsa_spki_of(rsa_public_key: &[u8]) -> Vec<u8> {
    let mut alg = der_wrap(TAG_OID, OID_RSA_ENCRYPTION);
    alg.extend_from_slice(&[0x05, 0x00]);
    spki(&alg, rsa_public_key)
}

fn spki(algorithm_content: &[u8], key: &[u8]) -> Vec<u8> {
    let mut bits = vec![0u8];
    bits.extend_from_slice(key);
    let mut body = der_wrap(TAG_SEQUENCE, algorithm_content);
    body.extend(der_wrap(TAG_BIT_STRING, &bits));
    der_wrap(TAG_SEQUENCE, &body)
}

/// The DER subject Name of a DER X.509 certificate.
#[cfg_attr(not(feature = "pkcs11"), allow(dead_code))]
pub(crate) fn certificate_subject(cert: &[u8]) -> Option<Vec<u8>> {
    let (cert, _) = der_expect(cert, TAG_SEQUENCE)?;
    let (mut tbs, _) = der_expect(cert, TAG_SEQUENCE)?;
    // [0] version, if present, then serialNumber, signature, issuer, validity, subject.
    if tbs.first() == Some(&0xa0) {
        tbs = der_next(tbs)?.2;
    }
    for _ in 0..4 {
        tbs = der_next(tbs)?.2;
    }
    let (tag, content, rest) = der_next(tbs)?;
    (tag == TAG_SEQUENCE)
        .then(|| tbs[..tbs.len() - rest.len()].to_vec())
        .filter(|s| s.len() > content.len())
}

/// The point inside a DER OCTET STRING (PKCS#11's `CKA_EC_POINT`), or the bytes as they are
/// when a token gives the bare point.
#[cfg_attr(not(feature = "pkcs11"), allow(dead_code))]
pub(crate) fn unwrap_octet_string(value: &[u8]) -> &[u8] {
    match der_next(value) {
        Some((0x04, content, rest)) if rest.is_empty() && content.first() == Some(&0x04) => content,
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        let t = time(UTC_TIME, b"491231235959Z").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            2_524_607_999
        );
        let g = time(GENERALIZED_TIME, b"20491231235959Z").unwrap();
        assert_eq!(t, g);
        assert!(time(UTC_TIME, b"4912312359Z").is_none());
        assert!(time(UTC_TIME, b"491331235959Z").is_none());
        assert!(time(GENERALIZED_TIME, b"491231235959Z").is_none());
    }

    #[test]
    fn validity_and_key_match_of_a_real_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["dev".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2024, 1, 2);
        params.not_after = rcgen::date_time_ymd(2060, 5, 6);
        let cert = params.self_signed(&key).unwrap();
        let v = validity(cert.der()).unwrap();
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs(v.not_before), 1_704_153_600);
        assert_eq!(secs(v.not_after), 2_851_027_200);
        let der = first_certificate(cert.pem().as_bytes()).unwrap();
        assert_eq!(
            key_matches(&der, key.serialize_pem().as_bytes()),
            Some(true)
        );
        let other = rcgen::KeyPair::generate().unwrap();
        assert_eq!(
            key_matches(&der, other.serialize_pem().as_bytes()),
            Some(false)
        );
        assert_eq!(key_matches(&der, b"not a key"), None);
        assert!(validity(&cert.der()[..40]).is_none());
        assert!(validity(b"").is_none());
    }

    #[test]
    fn subjects_and_points_are_found() {
        let k = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "subject-cn");
        let cert = params.self_signed(&k).unwrap();
        let subject = certificate_subject(cert.der()).unwrap();
        assert_eq!(subject[0], TAG_SEQUENCE);
        assert!(subject.windows(10).any(|w| w == b"subject-cn"));
        assert!(certificate_subject(b"junk").is_none());
        let point = k.public_key_raw();
        assert_eq!(unwrap_octet_string(&der_wrap(0x04, point)), point);
        assert_eq!(unwrap_octet_string(point), point);
    }
}
