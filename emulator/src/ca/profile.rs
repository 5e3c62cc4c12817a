//! What each certificate the CA makes contains: the root and intermediate CAs, the server, and
//! the client certificates (claims and devices).

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use time::OffsetDateTime;

use super::{ca_err, CsrError, Signer};

pub(super) const DAY: Duration = Duration::from_secs(86_400);
/// Device certificates from AWS IoT expire at the end of 2049; ours do too.
pub(super) const DEVICE_NOT_AFTER_UNIX: i64 = 2_524_607_999; // 2049-12-31T23:59:59Z

pub(super) fn new_root_ca() -> Result<Signer, rcgen::Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    // One level below it: the intermediate CA that `--intermediate-ca` issues from.
    let params = ca_params("fleetprov emulator root CA", 1, 20)?;
    let cert = params.self_signed(&key)?;
    Ok(Signer { cert, key })
}

/// The intermediate CA: an EC P-256 key and a CA certificate signed by the root, allowing no
/// CA below it.
pub(super) fn new_intermediate(root: &Signer) -> Result<(String, String), rcgen::Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = ca_params("fleetprov emulator intermediate CA", 0, 10)?;
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &root.cert, &root.key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A CA certificate named `common_name`, allowing `path_len` CAs below it, valid from an hour
/// ago for `years`.
fn ca_params(
    common_name: &str,
    path_len: u8,
    years: u32,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "fleetprov emulator");
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = now();
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + years * 365 * DAY;
    params.serial_number = Some(random_serial().map_err(|e| rcgen::Error::X509(e.0))?);
    Ok(params)
}

pub(super) fn server_params() -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localhost");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let now = now();
    params.not_before = now - Duration::from_secs(3600);
    params.not_after = now + 3650 * DAY;
    params.serial_number = Some(random_serial().map_err(|e| rcgen::Error::X509(e.0))?);
    Ok(params)
}

/// Parameters of a client certificate: device certificates and claims.
pub(super) fn client_params(
    dn: DistinguishedName,
    not_after: OffsetDateTime,
) -> Result<CertificateParams, CsrError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    // A minute of slack for a device whose clock runs a little behind ours.
    params.not_before = now() - Duration::from_secs(60);
    params.not_after = not_after;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

pub(super) fn device_params(dn: DistinguishedName) -> Result<CertificateParams, CsrError> {
    let not_after = OffsetDateTime::from_unix_timestamp(DEVICE_NOT_AFTER_UNIX).map_err(ca_err)?;
    client_params(dn, not_after)
}

/// A positive 128-bit serial number; random so that two certificates for the same key differ.
pub(super) fn random_serial() -> Result<SerialNumber, CsrError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|e| CsrError(format!("no randomness: {e}")))?;
    // Top bit clear keeps it positive; the next bit set keeps all 16 bytes significant.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from(bytes.to_vec()))
}

pub(super) fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}
