//! Certificate signing requests (PKCS#10, RFC 2986) and PEM text, written with the DER helpers
//! of [`super::der`]. The library makes one kind of CSR (a subject, a public key, no
//! attributes), so a few lines here replace a certificate-building crate, its DER writer, its
//! date library and its PEM codec in every device's library.
//!
//! [`KeyPair`] signs with a PKCS#8 private key in memory (through ring, which rustls already
//! brings); keys the library never holds sign through [`request`] with a closure.

use ring::rand::SystemRandom;
use ring::signature::{self as ring_sig, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair};

use super::der::{der_wrap, TAG_BIT_STRING, TAG_INTEGER, TAG_OID, TAG_SEQUENCE};
use crate::error::{Error, ErrorKind};

const TAG_UTF8_STRING: u8 = 0x0c;
const TAG_SET: u8 = 0x31;

/// The signature algorithm of a CSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CsrAlgorithm {
    /// ecdsa-with-SHA256 (RFC 5758).
    EcdsaP256Sha256,
    /// ecdsa-with-SHA384 (RFC 5758).
    EcdsaP384Sha384,
    /// sha256WithRSAEncryption, PKCS#1 v1.5 (RFC 4055).
    RsaPkcs1Sha256,
    /// Ed25519 (RFC 8410).
    Ed25519,
}

impl CsrAlgorithm {
    /// The DER AlgorithmIdentifier: no parameters for ECDSA and Ed25519, NULL for RSA.
    fn identifier(self) -> &'static [u8] {
        match self {
            CsrAlgorithm::EcdsaP256Sha256 => &[
                0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
            ],
            CsrAlgorithm::EcdsaP384Sha384 => &[
                0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
            ],
            CsrAlgorithm::RsaPkcs1Sha256 => &[
                0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05,
                0x00,
            ],
            CsrAlgorithm::Ed25519 => &[0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70],
        }
    }
}

/// The DER Name of `attributes`, in order: one RelativeDistinguishedName per pair of attribute
/// type (OID content bytes) and value, the value a UTF8String.
pub(crate) fn name(attributes: &[(&[u8], &str)]) -> Vec<u8> {
    let mut rdns = Vec::new();
    for (oid, value) in attributes {
        let mut pair = der_wrap(TAG_OID, oid);
        pair.extend(der_wrap(TAG_UTF8_STRING, value.as_bytes()));
        rdns.extend(der_wrap(TAG_SET, &der_wrap(TAG_SEQUENCE, &pair)));
    }
    der_wrap(TAG_SEQUENCE, &rdns)
}

/// What signs a CertificationRequestInfo: the key's DER signature of the bytes given. A
/// `dyn` rather than a generic, so the request is written by one copy of the code.
pub(crate) type SignWith<'a> = &'a dyn Fn(&[u8]) -> Result<Vec<u8>, Error>;

/// A DER CertificationRequest: version 0, `subject` (a DER Name), `spki` (a DER
/// SubjectPublicKeyInfo) and an empty attribute set, its DER CertificationRequestInfo signed by
/// `sign` with `algorithm`.
pub(crate) fn request(
    subject: &[u8],
    spki: &[u8],
    algorithm: CsrAlgorithm,
    sign: SignWith<'_>,
) -> Result<Vec<u8>, Error> {
    let mut info = vec![TAG_INTEGER, 1, 0];
    info.extend_from_slice(subject);
    info.extend_from_slice(spki);
    // attributes [0] IMPLICIT SET OF Attribute: RFC 2986 has it even when empty.
    info.extend_from_slice(&[0xa0, 0x00]);
    let info = der_wrap(TAG_SEQUENCE, &info);
    let signature = sign(&info)?;
    let mut bits = Vec::with_capacity(1 + signature.len());
    bits.push(0);
    bits.extend_from_slice(&signature);
    let mut body = info;
    body.extend_from_slice(algorithm.identifier());
    body.extend(der_wrap(TAG_BIT_STRING, &bits));
    Ok(der_wrap(TAG_SEQUENCE, &body))
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// `der` as PEM text with `label`: base64 in lines of 64 characters, each line ending in LF.
/// The text is written into a buffer of its final size, so that the PEM of a private key
/// leaves no partial copies in freed memory (wrap the result in `Zeroizing`).
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    let encoded = der.len().div_ceil(3) * 4;
    let size = 2 * ("-----BEGIN -----\n".len() + label.len()) - 2 + encoded + encoded.div_ceil(64);
    let mut out = String::with_capacity(size);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // 48 bytes make one line of 64 characters.
    for line in der.chunks(48) {
        for group in line.chunks(3) {
            let b = [
                group[0],
                group.get(1).copied().unwrap_or(0),
                group.get(2).copied().unwrap_or(0),
            ];
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for i in 0..4 {
                if i <= group.len() {
                    out.push(char::from(BASE64[(n >> (18 - 6 * i)) as usize & 63]));
                } else {
                    out.push('=');
                }
            }
        }
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    debug_assert_eq!(out.len(), size);
    out
}

/// A private key in memory that signs CSRs: EC P-256 or P-384 (ECDSA with the curve's hash),
/// Ed25519, or RSA (PKCS#1 v1.5 with SHA-256).
pub(crate) enum KeyPair {
    Ec(EcdsaKeyPair, CsrAlgorithm),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

impl KeyPair {
    /// Reads a DER PKCS#8 private key; `None` if it is none of the kinds above.
    pub(crate) fn from_pkcs8(der: &[u8]) -> Option<KeyPair> {
        let rng = SystemRandom::new();
        let ec = |alg| EcdsaKeyPair::from_pkcs8(alg, der, &rng).ok();
        if let Ok(key) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            Some(KeyPair::Ed25519(key))
        } else if let Some(key) = ec(&ring_sig::ECDSA_P256_SHA256_ASN1_SIGNING) {
            Some(KeyPair::Ec(key, CsrAlgorithm::EcdsaP256Sha256))
        } else if let Some(key) = ec(&ring_sig::ECDSA_P384_SHA384_ASN1_SIGNING) {
            Some(KeyPair::Ec(key, CsrAlgorithm::EcdsaP384Sha384))
        } else {
            RsaKeyPair::from_pkcs8(der).ok().map(KeyPair::Rsa)
        }
    }

    /// The DER SubjectPublicKeyInfo of the key.
    fn spki(&self) -> Vec<u8> {
        match self {
            KeyPair::Ec(key, algorithm) => {
                let curve = match algorithm {
                    CsrAlgorithm::EcdsaP384Sha384 => super::OID_P384,
                    _ => super::OID_P256,
                };
                super::ec_spki(&der_wrap(TAG_OID, curve), key.public_key().as_ref())
            }
            KeyPair::Ed25519(key) => {
                super::spki(&[0x06, 0x03, 0x2b, 0x65, 0x70], key.public_key().as_ref())
            }
            KeyPair::Rsa(key) => super::rsa_spki_of(key.public_key().as_ref()),
        }
    }

    fn algorithm(&self) -> CsrAlgorithm {
        match self {
            KeyPair::Ec(_, algorithm) => *algorithm,
            KeyPair::Ed25519(_) => CsrAlgorithm::Ed25519,
            KeyPair::Rsa(_) => CsrAlgorithm::RsaPkcs1Sha256,
        }
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, Error> {
        let failed = || Error::new(ErrorKind::Internal, "cannot build the CSR: signing failed");
        let rng = SystemRandom::new();
        match self {
            KeyPair::Ec(key, _) => key
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| failed()),
            KeyPair::Ed25519(key) => Ok(key.sign(message).as_ref().to_vec()),
            KeyPair::Rsa(key) => {
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(&ring_sig::RSA_PKCS1_SHA256, &rng, message, &mut signature)
                    .map_err(|_| failed())?;
                Ok(signature)
            }
        }
    }

    /// The PEM CSR with `subject` (a DER Name) for this key, signed by it.
    pub(crate) fn request_pem(&self, subject: &[u8]) -> Result<String, Error> {
        let der = request(subject, &self.spki(), self.algorithm(), &|info| {
            self.sign(info)
        })?;
        Ok(pem("CERTIFICATE REQUEST", &der))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keygen::{generate, CsrSubject, KeyType};
    use crate::x509::der::der_next;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateSigningRequestDer;

    /// The parts of a DER CertificationRequest: the signed info (whole element), the
    /// AlgorithmIdentifier (whole element) and the signature.
    fn parts(csr: &[u8]) -> (&[u8], &[u8], &[u8]) {
        let (TAG_SEQUENCE, body, []) = der_next(csr).unwrap() else {
            panic!("not one SEQUENCE")
        };
        let (TAG_SEQUENCE, _, rest) = der_next(body).unwrap() else {
            panic!("no info")
        };
        let info = &body[..body.len() - rest.len()];
        let (TAG_SEQUENCE, _, after) = der_next(rest).unwrap() else {
            panic!("no algorithm")
        };
        let algorithm = &rest[..rest.len() - after.len()];
        let (TAG_BIT_STRING, bits, []) = der_next(after).unwrap() else {
            panic!("no signature")
        };
        assert_eq!(bits[0], 0, "no unused bits");
        (info, algorithm, &bits[1..])
    }

    fn der_of(pem_text: &str) -> Vec<u8> {
        CertificateSigningRequestDer::from_pem_slice(pem_text.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec()
    }

    /// The CSR rcgen 0.13 (which made the library's CSRs before) makes for a PKCS#8 key and
    /// the subject as the library handed it over: one entry per attribute type, in the order
    /// of first appearance, the last value, UTF8String.
    fn rcgen_csr(pkcs8: &[u8], subject: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let key = rcgen::KeyPair::try_from(pkcs8).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (ty, value) in subject {
            params.distinguished_name.push(ty.clone(), *value);
        }
        params.serialize_request(&key).unwrap().der().to_vec()
    }

    const SUBJECT: &str =
        "CN=meter-17,O=Acme,OU=Meters,C=NZ,ST=Otago,L=Dunedin,serialNumber=17,CN=meter-18";

    fn rcgen_subject() -> Vec<(rcgen::DnType, &'static str)> {
        use rcgen::DnType as T;
        vec![
            (T::CommonName, "meter-17"),
            (T::OrganizationName, "Acme"),
            (T::OrganizationalUnitName, "Meters"),
            (T::CountryName, "NZ"),
            (T::StateOrProvinceName, "Otago"),
            (T::LocalityName, "Dunedin"),
            (T::CustomDnType(vec![2, 5, 4, 5]), "17"),
            (T::CommonName, "meter-18"),
        ]
    }

    #[test]
    fn the_subject_is_encoded_as_before() {
        let subject = CsrSubject::parse(SUBJECT).unwrap().to_der();
        let hex: String = subject.iter().map(|b| format!("{b:02x}")).collect();
        // One RDN per attribute type, UTF8String values; the second CN replaces the first's
        // value in the first's place.
        let want = [
            "306f",
            "3111300f06035504030c086d657465722d3138",
            "310d300b060355040a0c0441636d65",
            "310f300d060355040b0c064d6574657273",
            "310b300906035504060c024e5a",
            "310e300c06035504080c054f7461676f",
            "3110300e06035504070c0744756e6564696e",
            "310b300906035504050c023137",
        ];
        assert_eq!(hex, want.concat());
        assert_eq!(CsrSubject::default().to_der(), vec![0x30, 0x00]);
    }

    #[test]
    fn ec_and_ed25519_csrs_match_the_earlier_encoding() {
        let subject = CsrSubject::parse(SUBJECT).unwrap();
        for key_type in [KeyType::EcP256, KeyType::EcP384] {
            let k = generate(key_type, &subject).unwrap();
            let pkcs8 = PrivateKeyDerOf::of(&k.private_key_pem);
            let ours = der_of(&k.csr_pem);
            let theirs = rcgen_csr(&pkcs8, &rcgen_subject());
            let (info, alg, sig) = parts(&ours);
            let (their_info, their_alg, _) = parts(&theirs);
            assert_eq!(info, their_info, "{key_type:?}");
            assert_eq!(alg, their_alg, "{key_type:?}");
            // The signature verifies with the key in the request.
            let key = crate::signer::PublicKey::from_pem(
                rcgen::KeyPair::try_from(&pkcs8[..])
                    .unwrap()
                    .public_key_pem()
                    .as_bytes(),
            )
            .unwrap();
            assert!(key.verify(key.algorithm().csr_scheme(), info, sig));
            // And again through the existing-key path.
            let again = der_of(&crate::keygen::csr_for_key(&k.private_key_pem, &subject).unwrap());
            assert_eq!(parts(&again).0, their_info);
        }
        // Ed25519 signatures are deterministic: the whole request is the same.
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let ours = crate::keygen::csr_for_key(&ed.serialize_pem(), &subject).unwrap();
        assert_eq!(
            der_of(&ours),
            rcgen_csr(ed.serialized_der(), &rcgen_subject())
        );
    }

    #[cfg(feature = "rsa-keygen")]
    #[test]
    fn rsa_csrs_are_byte_for_byte_as_before() {
        // PKCS#1 v1.5 signatures are deterministic: the whole request is the same.
        let subject = CsrSubject::parse(SUBJECT).unwrap();
        let k = generate(KeyType::Rsa2048, &subject).unwrap();
        let pkcs8 = PrivateKeyDerOf::of(&k.private_key_pem);
        let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &rustls::pki_types::PrivatePkcs8KeyDer::from(&pkcs8[..]),
            &rcgen::PKCS_RSA_SHA256,
        )
        .unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (ty, value) in rcgen_subject() {
            params.distinguished_name.push(ty, value);
        }
        let theirs = params.serialize_request(&key).unwrap();
        assert_eq!(k.csr_pem, theirs.pem().unwrap());
        assert_eq!(*k.private_key_pem, key.serialize_pem());
    }

    /// The DER of a PKCS#8 PEM.
    struct PrivateKeyDerOf;
    impl PrivateKeyDerOf {
        fn of(pem_text: &str) -> Vec<u8> {
            let (kind, der) = <(rustls::pki_types::pem::SectionKind, Vec<u8>)>::from_pem_slice(
                pem_text.as_bytes(),
            )
            .unwrap();
            assert_eq!(kind, rustls::pki_types::pem::SectionKind::PrivateKey);
            der
        }
    }

    #[test]
    fn signer_csrs_carry_the_signer_key_and_verify() {
        let signer = crate::signer::test_signer();
        let pem_text = crate::signer::certificate_request(signer.clone(), Some("dev-1")).unwrap();
        let der = der_of(&pem_text);
        let (info, alg, sig) = parts(&der);
        assert_eq!(alg, CsrAlgorithm::EcdsaP256Sha256.identifier());
        let key = signer.public_key();
        assert!(key.verify(key.algorithm().csr_scheme(), info, sig));
        let mut want = vec![TAG_INTEGER, 1, 0];
        want.extend(name(&[(&[0x55, 0x04, 0x03], "dev-1")]));
        want.extend_from_slice(key.spki_der());
        want.extend_from_slice(&[0xa0, 0x00]);
        assert_eq!(info, der_wrap(TAG_SEQUENCE, &want));
    }

    #[test]
    fn pem_is_base64_in_lines_of_64() {
        // RFC 4648's test vectors, one per remainder.
        for (data, b64) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            let lines = if b64.is_empty() {
                String::new()
            } else {
                format!("{b64}\n")
            };
            assert_eq!(
                pem("X", data.as_bytes()),
                format!("-----BEGIN X-----\n{lines}-----END X-----\n")
            );
        }
        let text = pem("LONG THING", &[0xff; 100]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0], "-----BEGIN LONG THING-----");
        assert_eq!(
            (lines[1].len(), lines[2].len(), lines[3].len()),
            (64, 64, 8)
        );
        assert!(lines[1].chars().all(|c| c == '/'), "{}", lines[1]);
        // As rcgen (the pem crate) wrote keys and requests before.
        let k = rcgen::KeyPair::generate().unwrap();
        assert_eq!(pem("PRIVATE KEY", k.serialized_der()), k.serialize_pem());
    }
}
