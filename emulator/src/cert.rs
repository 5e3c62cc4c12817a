//! Certificate helpers every part of the emulator shares: AWS's certificate id, the subject
//! fields templates see, PEM blocks and lower-case hex.

use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

/// Subject fields of a certificate, feeding the template pseudo-parameters.
#[derive(Debug, Clone, Default)]
pub struct CertInfo {
    /// `AWS::IoT::Certificate::Id`: SHA-256 hex of the DER certificate.
    pub certificate_id: String,
    /// `AWS::IoT::Certificate::CommonName`
    pub common_name: Option<String>,
    /// `AWS::IoT::Certificate::Country`
    pub country: Option<String>,
    /// `AWS::IoT::Certificate::Organization`
    pub organization: Option<String>,
    /// `AWS::IoT::Certificate::OrganizationalUnit`
    pub organizational_unit: Option<String>,
    /// `AWS::IoT::Certificate::DistinguishedNameQualifier`
    pub dn_qualifier: Option<String>,
    /// `AWS::IoT::Certificate::StateName`
    pub state_name: Option<String>,
    /// `AWS::IoT::Certificate::SerialNumber` (the subject's serialNumber attribute).
    pub serial_number: Option<String>,
}

/// SHA-256 of a DER certificate in lowercase hex: AWS's certificateId.
pub fn certificate_id(der: &[u8]) -> String {
    hex(&Sha256::digest(der))
}

/// Subject fields of a certificate for the template pseudo-parameters. A certificate that
/// cannot be parsed gives only its id.
pub fn cert_info(der: &[u8]) -> CertInfo {
    let mut info = CertInfo {
        certificate_id: certificate_id(der),
        ..CertInfo::default()
    };
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return info;
    };
    for attr in cert.tbs_certificate.subject.iter_attributes() {
        let Some(arcs) = attr.attr_type().iter() else {
            continue;
        };
        let arcs: Vec<u64> = arcs.collect();
        let slot = match arcs.as_slice() {
            [2, 5, 4, 3] => &mut info.common_name,
            [2, 5, 4, 6] => &mut info.country,
            [2, 5, 4, 10] => &mut info.organization,
            [2, 5, 4, 11] => &mut info.organizational_unit,
            [2, 5, 4, 46] => &mut info.dn_qualifier,
            [2, 5, 4, 8] => &mut info.state_name,
            [2, 5, 4, 5] => &mut info.serial_number,
            _ => continue,
        };
        // The first occurrence wins, as in a certificate with a single value per attribute.
        if slot.is_none() {
            if let Ok(value) = attr.as_str() {
                *slot = Some(value.to_owned());
            }
        }
    }
    info
}

/// The contents of the first PEM block labelled `label` in `pem`.
pub fn pem_block(pem: &[u8], label: &str) -> Option<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem)
        .map_while(Result::ok)
        .find(|p| p.label == label)
        .map(|p| p.contents)
}

/// Lower-case hex, the emulator's one encoder for ids and tokens.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_info_of_garbage_is_only_the_id() {
        let info = cert_info(b"garbage");
        assert_eq!(info.certificate_id, certificate_id(b"garbage"));
        assert!(info.common_name.is_none());
    }

    #[test]
    fn certificate_id_is_sha256_hex() {
        assert_eq!(
            certificate_id(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
