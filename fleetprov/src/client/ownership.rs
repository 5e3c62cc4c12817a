//! Whose certificate a CreateCertificateFromCsr reply carries.
//!
//! Nothing in the API ties a reply to its request, and a broker that delivers a reply to
//! every subscriber of its topic (Paho's test broker, aedes, the emulator's responder mode
//! behind mosquitto) hands each device the certificates of the others too. A certificate that
//! does not carry the CSR's public key is never ours, whoever sent it.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateSigningRequestDer;

use crate::signer::PublicKey;
use crate::x509::der::der_next;

const TAG_SEQUENCE: u8 = 0x30;
const TAG_INTEGER: u8 = 0x02;

/// The public key a PEM CSR (PKCS#10) asks a certificate for, or `None` when it cannot be
/// read (the service then judges the CSR; no reply can be matched to it).
pub(crate) fn csr_public_key(csr_pem: &str) -> Option<PublicKey> {
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).ok()?;
    // CertificationRequest ::= SEQUENCE { certificationRequestInfo SEQUENCE { version INTEGER,
    //   subject Name, subjectPKInfo SubjectPublicKeyInfo, attributes [0] }, ... }
    let (TAG_SEQUENCE, request, _) = der_next(der.as_ref())? else {
        return None;
    };
    let (TAG_SEQUENCE, info, _) = der_next(request)? else {
        return None;
    };
    let (TAG_INTEGER, _, rest) = der_next(info)? else {
        return None;
    };
    let (TAG_SEQUENCE, _, rest) = der_next(rest)? else {
        return None;
    };
    let (TAG_SEQUENCE, _, after) = der_next(rest)? else {
        return None;
    };
    PublicKey::from_spki_der(&rest[..rest.len() - after.len()]).ok()
}

/// Whether two public keys are the same key (algorithm and key bits; the encoding of the
/// algorithm's parameters may differ between a CSR and the certificate a CA made from it).
pub(crate) fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    a.algorithm() == b.algorithm() && a.raw() == b.raw()
}

/// What a certificate PEM is to the holder of `ours`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Its leaf carries our key.
    Ours,
    /// Its leaf carries another key: someone else's certificate.
    Another,
    /// No leaf certificate with a usable public key could be read; the reason.
    Unreadable(String),
}

/// Compares the public key of the first certificate in `certificate_pem` (the leaf of a
/// chain) with `ours`.
pub(crate) fn owner(ours: &PublicKey, certificate_pem: &str) -> Owner {
    match PublicKey::from_pem(certificate_pem.as_bytes()) {
        Ok(theirs) if same_key(ours, &theirs) => Owner::Ours,
        Ok(_) => Owner::Another,
        Err(e) => Owner::Unreadable(e.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(key: &rcgen::KeyPair) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "device");
        params.serialize_request(key).unwrap().pem().unwrap()
    }

    fn certificate_for(key: &rcgen::KeyPair) -> String {
        rcgen::CertificateParams::new(vec!["dev".into()])
            .unwrap()
            .self_signed(key)
            .unwrap()
            .pem()
    }

    #[test]
    fn a_certificate_is_ours_only_with_the_csr_key() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
        ] {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let other = rcgen::KeyPair::generate_for(alg).unwrap();
            let ours = csr_public_key(&csr(&key)).expect("the CSR's key");
            assert_eq!(owner(&ours, &certificate_for(&key)), Owner::Ours);
            assert_eq!(owner(&ours, &certificate_for(&other)), Owner::Another);
            // A chain: the leaf decides, whatever follows it.
            let chain = certificate_for(&key) + &certificate_for(&other);
            assert_eq!(owner(&ours, &chain), Owner::Ours);
            let chain = certificate_for(&other) + &certificate_for(&key);
            assert_eq!(owner(&ours, &chain), Owner::Another);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let ours = csr_public_key(&csr(&key)).unwrap();
        assert!(matches!(
            owner(
                &ours,
                "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
            ),
            Owner::Unreadable(_)
        ));
        assert!(matches!(owner(&ours, ""), Owner::Unreadable(_)));
    }

    #[test]
    fn unreadable_csrs_have_no_key() {
        assert!(csr_public_key("").is_none());
        assert!(csr_public_key(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
        )
        .is_none());
        // A certificate is not a CSR.
        let key = rcgen::KeyPair::generate().unwrap();
        assert!(csr_public_key(&certificate_for(&key)).is_none());
    }
}
