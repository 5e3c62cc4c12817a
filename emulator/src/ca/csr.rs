//! Certificate requests (CreateCertificateFromCsr): what AWS IoT accepts, and the subject copied
//! into rcgen's form.

use rcgen::{DistinguishedName, DnType, DnValue};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::{SubjectPublicKeyInfo as ParsedSpki, X509Name};

use super::{CsrError, RSA_BITS};
use crate::cert::pem_block;

/// The largest RSA key ring verifies signatures for.
const RSA_MAX_BITS: usize = 8192;
/// Subject attributes the templates can read (X.520 serialNumber and dnQualifier).
const OID_SERIAL_NUMBER: &[u64] = &[2, 5, 4, 5];
const OID_DN_QUALIFIER: &[u64] = &[2, 5, 4, 46];

/// What a certificate request that passed the checks gives the certificate.
pub(super) struct Checked {
    pub(super) subject: DistinguishedName,
    /// The request's SubjectPublicKeyInfo, DER, as it came.
    pub(super) spki_der: Vec<u8>,
}

/// Accept a PEM certificate request whose key AWS IoT takes and whose signature verifies.
pub(super) fn check(csr_pem: &str) -> Result<Checked, CsrError> {
    let der = pem_block(csr_pem.as_bytes(), "CERTIFICATE REQUEST")
        .or_else(|| pem_block(csr_pem.as_bytes(), "NEW CERTIFICATE REQUEST"))
        .ok_or_else(|| {
            CsrError("certificateSigningRequest is not a PEM certificate request".into())
        })?;
    let (rest, csr) = X509CertificationRequest::from_der(&der)
        .map_err(|e| CsrError(format!("the certificate request cannot be parsed: {e}")))?;
    if !rest.is_empty() {
        return Err(CsrError("the certificate request has trailing data".into()));
    }
    let info = &csr.certification_request_info;
    check_csr_key(&info.subject_pki)?;
    csr.verify_signature()
        .map_err(|_| CsrError("the certificate request's signature does not verify".into()))?;
    Ok(Checked {
        subject: subject_to_dn(&info.subject)?,
        spki_der: info.subject_pki.raw.to_vec(),
    })
}

/// Accept what AWS IoT accepts from devices: RSA of 2048 bits or more, EC P-256 and P-384.
fn check_csr_key(spki: &ParsedSpki<'_>) -> Result<(), CsrError> {
    let alg = &spki.algorithm.algorithm;
    if *alg == OID_PKCS1_RSAENCRYPTION {
        let bits = match spki.parsed() {
            Ok(x509_parser::public_key::PublicKey::RSA(rsa)) => bit_length(rsa.modulus),
            _ => return Err(CsrError("the RSA public key cannot be parsed".into())),
        };
        if bits < RSA_BITS {
            return Err(CsrError(format!(
                "RSA keys must have at least {RSA_BITS} bits; this one has {bits}"
            )));
        }
        if bits > RSA_MAX_BITS {
            return Err(CsrError(format!(
                "RSA keys of more than {RSA_MAX_BITS} bits are not supported"
            )));
        }
        Ok(())
    } else if *alg == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok());
        match curve {
            Some(c) if c == OID_EC_P256 || c == OID_NIST_EC_P384 => Ok(()),
            _ => Err(CsrError("EC keys must be on curve P-256 or P-384".into())),
        }
    } else {
        Err(CsrError(format!(
            "public key algorithm {alg} is not supported (RSA 2048+, EC P-256 or P-384 are)"
        )))
    }
}

/// Number of significant bits in a big-endian unsigned integer.
pub(super) fn bit_length(be: &[u8]) -> usize {
    let digits: &[u8] = {
        let first = be.iter().position(|&b| b != 0).unwrap_or(be.len());
        &be[first..]
    };
    match digits.first() {
        Some(&top) => digits.len() * 8 - top.leading_zeros() as usize,
        None => 0,
    }
}

/// Copy the CSR's subject into rcgen's form, keeping each value's string type.
fn subject_to_dn(name: &X509Name<'_>) -> Result<DistinguishedName, CsrError> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let mut dn = DistinguishedName::new();
    for attr in name.iter_attributes() {
        let arcs: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| CsrError("the subject has an attribute type that is too large".into()))?
            .collect();
        let bad = || {
            CsrError(format!(
                "subject attribute {} has an invalid value",
                attr.attr_type()
            ))
        };
        let value = attr.attr_value();
        let text = || std::str::from_utf8(value.data).map_err(|_| bad());
        let dn_value = match value.header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text()?.to_owned()),
            Tag::PrintableString => {
                DnValue::PrintableString(text()?.try_into().map_err(|_| bad())?)
            }
            Tag::Ia5String => DnValue::Ia5String(text()?.try_into().map_err(|_| bad())?),
            Tag::NumericString => DnValue::PrintableString(text()?.try_into().map_err(|_| bad())?),
            _ => {
                return Err(CsrError(format!(
                    "subject attribute {} uses a string type that is not supported",
                    attr.attr_type()
                )))
            }
        };
        let ty = match arcs.as_slice() {
            OID_SERIAL_NUMBER | OID_DN_QUALIFIER => DnType::CustomDnType(arcs.clone()),
            other => DnType::from_oid(other),
        };
        dn.push(ty, dn_value);
    }
    Ok(dn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_length_counts_significant_bits() {
        assert_eq!(bit_length(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(bit_length(&[0x01]), 1);
        assert_eq!(bit_length(&[]), 0);
    }
}
