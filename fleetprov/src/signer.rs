//! Private keys the library never holds: a [`Signer`] signs on request, and the library uses it
//! for the TLS client authentication (see [`crate::client::PrivateKey::Signer`]) and to sign a
//! certificate signing request ([`certificate_request`]).
//!
//! A signer is anything that can sign with one key: a secure element, a TPM, an HSM through
//! PKCS#11 (`crate::pkcs11`), or a key the application keeps itself. The library knows only its
//! public key, parsed from a certificate or a `PUBLIC KEY` PEM into a [`PublicKey`], and checks
//! every signature it is given against that key before using it, so a signer that signs with
//! the wrong key or in the wrong format gets an [`ErrorKind::Signer`] naming the cause instead of
//! a handshake the server refuses for no stated reason.

use std::fmt;
use std::sync::Arc;

use ring::digest;
use ring::signature::{self as ring_sig, UnparsedPublicKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer};

use crate::error::{Error, ErrorKind};
use crate::x509::csr::{self, CsrAlgorithm};
use crate::x509::der::{
    der_expect, der_wrap, ecdsa_raw_to_der, TAG_BIT_STRING, TAG_INTEGER, TAG_OID, TAG_SEQUENCE,
};
use crate::x509::{
    ec_spki, rsa_spki_of, OID_EC_PUBLIC_KEY, OID_P256, OID_P384, OID_RSA_ENCRYPTION,
};

/// A signature scheme the library may ask a signer for.
///
/// The message is always the whole data to sign; the scheme names the hash that goes with it
/// ([`SignatureScheme::digest`] computes it for signers that take a digest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureScheme {
    /// ECDSA on P-256 with SHA-256.
    EcdsaP256Sha256,
    /// ECDSA on P-384 with SHA-384.
    EcdsaP384Sha384,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RsaPkcs1Sha256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RsaPkcs1Sha384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RsaPkcs1Sha512,
    /// RSASSA-PSS with SHA-256, MGF1 with SHA-256, salt as long as the hash (32 bytes).
    RsaPssSha256,
    /// RSASSA-PSS with SHA-384, MGF1 with SHA-384, 48-byte salt.
    RsaPssSha384,
    /// RSASSA-PSS with SHA-512, MGF1 with SHA-512, 64-byte salt.
    RsaPssSha512,
}

/// The hash a scheme signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hash {
    /// SHA-256 (32 bytes).
    Sha256,
    /// SHA-384 (48 bytes).
    Sha384,
    /// SHA-512 (64 bytes).
    Sha512,
}

impl Hash {
    fn ring(self) -> &'static digest::Algorithm {
        match self {
            Hash::Sha256 => &digest::SHA256,
            Hash::Sha384 => &digest::SHA384,
            Hash::Sha512 => &digest::SHA512,
        }
    }

    /// Length of the digest in bytes.
    pub fn len(self) -> usize {
        self.ring().output_len()
    }

    /// Always false: no hash has an empty digest (for clippy's `len_without_is_empty`).
    pub fn is_empty(self) -> bool {
        false
    }

    /// The digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        digest::digest(self.ring(), data).as_ref().to_vec()
    }
}

impl SignatureScheme {
    /// Every scheme, in the order the library prefers them.
    pub const ALL: [SignatureScheme; 8] = [
        SignatureScheme::EcdsaP256Sha256,
        SignatureScheme::EcdsaP384Sha384,
        SignatureScheme::RsaPssSha256,
        SignatureScheme::RsaPssSha384,
        SignatureScheme::RsaPssSha512,
        SignatureScheme::RsaPkcs1Sha256,
        SignatureScheme::RsaPkcs1Sha384,
        SignatureScheme::RsaPkcs1Sha512,
    ];

    /// A short name, e.g. "ECDSA P-256 SHA-256".
    pub fn name(self) -> &'static str {
        match self {
            SignatureScheme::EcdsaP256Sha256 => "ECDSA P-256 SHA-256",
            SignatureScheme::EcdsaP384Sha384 => "ECDSA P-384 SHA-384",
            SignatureScheme::RsaPkcs1Sha256 => "RSA PKCS#1 v1.5 SHA-256",
            SignatureScheme::RsaPkcs1Sha384 => "RSA PKCS#1 v1.5 SHA-384",
            SignatureScheme::RsaPkcs1Sha512 => "RSA PKCS#1 v1.5 SHA-512",
            SignatureScheme::RsaPssSha256 => "RSA PSS SHA-256",
            SignatureScheme::RsaPssSha384 => "RSA PSS SHA-384",
            SignatureScheme::RsaPssSha512 => "RSA PSS SHA-512",
        }
    }

    /// The hash of the scheme.
    pub fn hash(self) -> Hash {
        use SignatureScheme as S;
        match self {
            S::EcdsaP256Sha256 | S::RsaPkcs1Sha256 | S::RsaPssSha256 => Hash::Sha256,
            S::EcdsaP384Sha384 | S::RsaPkcs1Sha384 | S::RsaPssSha384 => Hash::Sha384,
            S::RsaPkcs1Sha512 | S::RsaPssSha512 => Hash::Sha512,
        }
    }

    /// The digest of `message` with the scheme's hash, for signers that sign a digest.
    pub fn digest(self, message: &[u8]) -> Vec<u8> {
        self.hash().digest(message)
    }

    /// Whether the scheme is RSA PSS.
    pub fn is_pss(self) -> bool {
        use SignatureScheme as S;
        matches!(self, S::RsaPssSha256 | S::RsaPssSha384 | S::RsaPssSha512)
    }

    /// Whether the scheme is ECDSA.
    pub fn is_ecdsa(self) -> bool {
        matches!(
            self,
            SignatureScheme::EcdsaP256Sha256 | SignatureScheme::EcdsaP384Sha384
        )
    }

    pub(crate) fn to_rustls(self) -> rustls::SignatureScheme {
        use rustls::SignatureScheme as R;
        use SignatureScheme as S;
        match self {
            S::EcdsaP256Sha256 => R::ECDSA_NISTP256_SHA256,
            S::EcdsaP384Sha384 => R::ECDSA_NISTP384_SHA384,
            S::RsaPkcs1Sha256 => R::RSA_PKCS1_SHA256,
            S::RsaPkcs1Sha384 => R::RSA_PKCS1_SHA384,
            S::RsaPkcs1Sha512 => R::RSA_PKCS1_SHA512,
            S::RsaPssSha256 => R::RSA_PSS_SHA256,
            S::RsaPssSha384 => R::RSA_PSS_SHA384,
            S::RsaPssSha512 => R::RSA_PSS_SHA512,
        }
    }

    fn verification(self) -> &'static dyn ring_sig::VerificationAlgorithm {
        use SignatureScheme as S;
        match self {
            S::EcdsaP256Sha256 => &ring_sig::ECDSA_P256_SHA256_ASN1,
            S::EcdsaP384Sha384 => &ring_sig::ECDSA_P384_SHA384_ASN1,
            S::RsaPkcs1Sha256 => &ring_sig::RSA_PKCS1_2048_8192_SHA256,
            S::RsaPkcs1Sha384 => &ring_sig::RSA_PKCS1_2048_8192_SHA384,
            S::RsaPkcs1Sha512 => &ring_sig::RSA_PKCS1_2048_8192_SHA512,
            S::RsaPssSha256 => &ring_sig::RSA_PSS_2048_8192_SHA256,
            S::RsaPssSha384 => &ring_sig::RSA_PSS_2048_8192_SHA384,
            S::RsaPssSha512 => &ring_sig::RSA_PSS_2048_8192_SHA512,
        }
    }
}

impl fmt::Display for SignatureScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kind of key behind a signer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyAlgorithm {
    /// An EC key on P-256 (secp256r1).
    EcP256,
    /// An EC key on P-384 (secp384r1).
    EcP384,
    /// An RSA key of `bits` bits (2048 to 8192).
    Rsa {
        /// Modulus length in bits.
        bits: usize,
    },
}

impl KeyAlgorithm {
    /// The schemes a key of this kind can sign with, the preferred first. An EC key signs with
    /// the hash of its curve's size only (TLS 1.3 ties the two).
    pub fn schemes(self) -> &'static [SignatureScheme] {
        use SignatureScheme as S;
        match self {
            KeyAlgorithm::EcP256 => &[S::EcdsaP256Sha256],
            KeyAlgorithm::EcP384 => &[S::EcdsaP384Sha384],
            KeyAlgorithm::Rsa { .. } => &[
                S::RsaPssSha256,
                S::RsaPssSha384,
                S::RsaPssSha512,
                S::RsaPkcs1Sha256,
                S::RsaPkcs1Sha384,
                S::RsaPkcs1Sha512,
            ],
        }
    }

    /// The scheme a certificate signing request is signed with: ECDSA with the curve's hash,
    /// or RSA PKCS#1 v1.5 with SHA-256 (what certificate authorities expect of an RSA key).
    pub fn csr_scheme(self) -> SignatureScheme {
        match self {
            KeyAlgorithm::EcP256 => SignatureScheme::EcdsaP256Sha256,
            KeyAlgorithm::EcP384 => SignatureScheme::EcdsaP384Sha384,
            KeyAlgorithm::Rsa { .. } => SignatureScheme::RsaPkcs1Sha256,
        }
    }

    /// Size in bytes of one ECDSA coordinate (and of r and s), 0 for RSA.
    fn ec_field_len(self) -> usize {
        match self {
            KeyAlgorithm::EcP256 => 32,
            KeyAlgorithm::EcP384 => 48,
            KeyAlgorithm::Rsa { .. } => 0,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyAlgorithm::EcP256 => f.write_str("EC P-256"),
            KeyAlgorithm::EcP384 => f.write_str("EC P-384"),
            KeyAlgorithm::Rsa { bits } => write!(f, "RSA-{bits}"),
        }
    }
}

/// The public half of a signer's key: its SubjectPublicKeyInfo, parsed.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    spki: Vec<u8>,
    /// The BIT STRING of the SPKI: the EC point, or the DER RSAPublicKey.
    raw: Vec<u8>,
    algorithm: KeyAlgorithm,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.algorithm)
    }
}

/// The DER ECParameters (a named curve OID) of P-256 or P-384.
pub(crate) fn ec_params_der(algorithm: KeyAlgorithm) -> Option<Vec<u8>> {
    match algorithm {
        KeyAlgorithm::EcP256 => Some(der_wrap(TAG_OID, OID_P256)),
        KeyAlgorithm::EcP384 => Some(der_wrap(TAG_OID, OID_P384)),
        KeyAlgorithm::Rsa { .. } => None,
    }
}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo: EC P-256, EC P-384 or RSA of 2048 to 8192 bits.
    pub fn from_spki_der(spki: &[u8]) -> Result<PublicKey, Error> {
        let bad = |why: &str| Error::invalid(format!("the public key is not usable: {why}"));
        let (seq, rest) =
            der_expect(spki, TAG_SEQUENCE).ok_or_else(|| bad("not a DER SubjectPublicKeyInfo"))?;
        if !rest.is_empty() {
            return Err(bad("trailing data after the SubjectPublicKeyInfo"));
        }
        let (alg, rest) =
            der_expect(seq, TAG_SEQUENCE).ok_or_else(|| bad("no algorithm identifier"))?;
        let (bits, _) =
            der_expect(rest, TAG_BIT_STRING).ok_or_else(|| bad("no public key bit string"))?;
        let raw = match bits.split_first() {
            Some((0, raw)) if !raw.is_empty() => raw,
            _ => return Err(bad("malformed public key bit string")),
        };
        let (oid, params) = der_expect(alg, TAG_OID).ok_or_else(|| bad("no algorithm OID"))?;
        let algorithm = if oid == OID_EC_PUBLIC_KEY {
            let curve = der_expect(params, TAG_OID).map(|(c, _)| c);
            let algorithm = match curve {
                Some(OID_P256) => KeyAlgorithm::EcP256,
                Some(OID_P384) => KeyAlgorithm::EcP384,
                _ => return Err(bad("EC keys must be on P-256 or P-384")),
            };
            if raw.len() != 1 + 2 * algorithm.ec_field_len() || raw[0] != 0x04 {
                return Err(bad(
                    "the EC point is not an uncompressed point of its curve",
                ));
            }
            algorithm
        } else if oid == OID_RSA_ENCRYPTION {
            let (key, _) =
                der_expect(raw, TAG_SEQUENCE).ok_or_else(|| bad("malformed RSA public key"))?;
            let (n, _) =
                der_expect(key, TAG_INTEGER).ok_or_else(|| bad("malformed RSA modulus"))?;
            let n = &n[n.iter().position(|b| *b != 0).unwrap_or(n.len())..];
            let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
            if !(2048..=8192).contains(&bits) {
                return Err(bad(&format!(
                    "RSA keys must have 2048 to 8192 bits, this one has {bits}"
                )));
            }
            KeyAlgorithm::Rsa { bits }
        } else {
            return Err(bad("only EC (P-256, P-384) and RSA keys are supported"));
        };
        Ok(PublicKey {
            spki: spki.to_vec(),
            raw: raw.to_vec(),
            algorithm,
        })
    }

    /// The public key of a DER X.509 certificate.
    pub fn from_certificate_der(der: &[u8]) -> Result<PublicKey, Error> {
        let der = CertificateDer::from(der);
        let parsed = rustls::server::ParsedCertificate::try_from(&der)
            .map_err(|e| Error::invalid(format!("the certificate cannot be parsed: {e}")))?;
        PublicKey::from_spki_der(parsed.subject_public_key_info().as_ref())
    }

    /// The public key in PEM text: the first `CERTIFICATE` (the leaf of a chain) or a
    /// `PUBLIC KEY` (SubjectPublicKeyInfo) block.
    pub fn from_pem(pem: &[u8]) -> Result<PublicKey, Error> {
        if let Some(Ok(cert)) = CertificateDer::pem_slice_iter(pem).next() {
            return PublicKey::from_certificate_der(&cert);
        }
        match SubjectPublicKeyInfoDer::from_pem_slice(pem) {
            Ok(spki) => PublicKey::from_spki_der(spki.as_ref()),
            Err(_) => Err(Error::invalid(
                "no CERTIFICATE or PUBLIC KEY found in the PEM text",
            )),
        }
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki
    }

    /// The subject public key: the uncompressed EC point, or the DER RSAPublicKey.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// What kind of key it is.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// Whether `signature` is a valid signature of `message` with `scheme` by this key.
    pub fn verify(&self, scheme: SignatureScheme, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(scheme.verification(), &self.raw)
            .verify(message, signature)
            .is_ok()
    }
}

/// Signs with one private key the library never sees.
///
/// Implementations must be usable from any thread. The library calls [`Signer::sign`] from the
/// thread that drives the connection (during the TLS handshake) or from the caller of
/// [`certificate_request`]; a slow signer delays that connection's handshake and nothing else
/// of it.
pub trait Signer: Send + Sync + fmt::Debug {
    /// The public key of the private key this signer uses.
    fn public_key(&self) -> &PublicKey;

    /// Signs `message` (the whole data, not a digest: see [`SignatureScheme::digest`] for
    /// signers that take one) with `scheme`, one of `self.public_key().algorithm().schemes()`.
    ///
    /// Returns the signature in the scheme's usual encoding: for RSA the `k`-byte signature;
    /// for ECDSA either the DER `Ecdsa-Sig-Value` (as X.509 and TLS carry it) or the
    /// fixed-width `r || s` (as PKCS#11 and most secure elements give it). The library checks
    /// the result against the public key either way. An error's message should say why; the
    /// library reports it with [`ErrorKind::Signer`].
    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, Error>;
}

/// Calls `signer` for `scheme` and checks the result: an ECDSA `r || s` is converted to DER,
/// and a signature that does not verify with the signer's public key is refused. Every error
/// has [`ErrorKind::Signer`].
pub fn sign_checked(
    signer: &dyn Signer,
    scheme: SignatureScheme,
    message: &[u8],
) -> Result<Vec<u8>, Error> {
    let key = signer.public_key();
    if !key.algorithm().schemes().contains(&scheme) {
        return Err(Error::new(
            ErrorKind::Signer,
            format!(
                "{scheme} is not a scheme of the signer's {} key",
                key.algorithm()
            ),
        ));
    }
    let signature = signer.sign(scheme, message).map_err(|e| {
        Error::new(
            ErrorKind::Signer,
            format!("the signer failed to sign ({scheme}): {}", e.message),
        )
    })?;
    if key.verify(scheme, message, &signature) {
        return Ok(signature);
    }
    let field = key.algorithm().ec_field_len();
    if scheme.is_ecdsa() && signature.len() == 2 * field {
        let der = ecdsa_raw_to_der(&signature);
        if key.verify(scheme, message, &der) {
            return Ok(der);
        }
    }
    Err(Error::new(
        ErrorKind::Signer,
        format!(
            "the signer's {scheme} signature ({} bytes) does not verify with its public key \
             ({}): signed with another key, or not in the scheme's encoding",
            signature.len(),
            key.algorithm()
        ),
    ))
}

/// A PEM certificate signing request for the signer's key, signed by it, with the subject
/// `CN=common_name` (no subject when `None`). The signer is called once, on this thread.
pub fn certificate_request(
    signer: Arc<dyn Signer>,
    common_name: Option<&str>,
) -> Result<String, Error> {
    let mut subject: Vec<(&[u8], &str)> = Vec::new();
    if let Some(cn) = common_name {
        if cn.is_empty() || cn.len() > 64 {
            return Err(Error::invalid(
                "the common name must be 1 to 64 bytes long (X.520 upper bound)",
            ));
        }
        subject.push((&[0x55, 0x04, 0x03], cn));
    }
    signed_request(signer.as_ref(), &csr::name(&subject))
}

/// The PEM CSR with `subject` (a DER Name) for the signer's key, signed by it (PKCS#1 v1.5
/// SHA-256 for RSA, ECDSA with the curve's hash); a failure of the signer is its own error.
pub(crate) fn signed_request(signer: &dyn Signer, subject: &[u8]) -> Result<String, Error> {
    let key = signer.public_key();
    let algorithm = key.algorithm();
    let csr_algorithm = match algorithm {
        KeyAlgorithm::EcP256 => CsrAlgorithm::EcdsaP256Sha256,
        KeyAlgorithm::EcP384 => CsrAlgorithm::EcdsaP384Sha384,
        KeyAlgorithm::Rsa { .. } => CsrAlgorithm::RsaPkcs1Sha256,
    };
    let canonical_spki = match ec_params_der(algorithm) {
        Some(params) => ec_spki(&params, key.raw()),
        None => rsa_spki_of(key.raw()),
    };
    // The CSR carries the SPKI in its usual encoding (curve OID, NULL parameters for RSA); a
    // signer's SPKI in another encoding would not be the key the certificate names.
    if canonical_spki != key.spki_der() {
        return Err(Error::new(
            ErrorKind::Signer,
            "the signer's public key has an encoding the CSR cannot carry unchanged",
        ));
    }
    let der = csr::request(subject, key.spki_der(), csr_algorithm, &|info: &[u8]| {
        sign_checked(signer, algorithm.csr_scheme(), info)
    })?;
    Ok(csr::pem("CERTIFICATE REQUEST", &der))
}

/// A P-256 signer over a key in memory, for the unit tests of other modules.
#[cfg(test)]
pub(crate) fn test_signer() -> Arc<dyn Signer> {
    Arc::new(tests::soft(false, false, false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x509::{ec_spki, rsa_spki};
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair as _};

    /// An in-memory ECDSA signer; `raw` signs as r || s instead of DER, `wrong` signs with
    /// another key.
    #[derive(Debug)]
    pub(super) struct Soft {
        key: EcdsaKeyPair,
        other: EcdsaKeyPair,
        public: PublicKey,
        wrong: bool,
    }

    pub(super) fn soft(p384: bool, raw: bool, wrong: bool) -> Soft {
        let rng = SystemRandom::new();
        let alg = match (p384, raw) {
            (false, false) => &ring_sig::ECDSA_P256_SHA256_ASN1_SIGNING,
            (false, true) => &ring_sig::ECDSA_P256_SHA256_FIXED_SIGNING,
            (true, false) => &ring_sig::ECDSA_P384_SHA384_ASN1_SIGNING,
            (true, true) => &ring_sig::ECDSA_P384_SHA384_FIXED_SIGNING,
        };
        let make = || {
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
            EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap()
        };
        let key = make();
        Soft {
            public: PublicKey::from_spki_der(&spki_of(&key, p384)).unwrap(),
            key,
            other: make(),
            wrong,
        }
    }

    /// The SPKI of an EC key from its point.
    fn spki_of(key: &EcdsaKeyPair, p384: bool) -> Vec<u8> {
        let alg = if p384 {
            KeyAlgorithm::EcP384
        } else {
            KeyAlgorithm::EcP256
        };
        ec_spki(&ec_params_der(alg).unwrap(), key.public_key().as_ref())
    }

    impl Signer for Soft {
        fn public_key(&self) -> &PublicKey {
            &self.public
        }
        fn sign(&self, _scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, Error> {
            let key = if self.wrong { &self.other } else { &self.key };
            Ok(key
                .sign(&SystemRandom::new(), message)
                .unwrap()
                .as_ref()
                .to_vec())
        }
    }

    #[derive(Debug)]
    struct Failing(PublicKey);

    impl Signer for Failing {
        fn public_key(&self) -> &PublicKey {
            &self.0
        }
        fn sign(&self, _: SignatureScheme, _: &[u8]) -> Result<Vec<u8>, Error> {
            Err(Error::new(ErrorKind::Signer, "token removed"))
        }
    }

    #[test]
    fn public_keys_parse_from_spki_certificate_and_pem() {
        let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let p = PublicKey::from_spki_der(&k.public_key_der()).unwrap();
        assert_eq!(p.algorithm(), KeyAlgorithm::EcP384);
        assert_eq!(p.raw(), k.public_key_raw());
        let p = PublicKey::from_pem(k.public_key_pem().as_bytes()).unwrap();
        assert_eq!(p.spki_der(), k.public_key_der());
        let k = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_owned()])
            .unwrap()
            .self_signed(&k)
            .unwrap();
        let p = PublicKey::from_pem(cert.pem().as_bytes()).unwrap();
        assert_eq!(p.algorithm(), KeyAlgorithm::EcP256);
        assert_eq!(p.spki_der(), k.public_key_der());
        let e =
            PublicKey::from_pem(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(
            e.message.contains("no CERTIFICATE or PUBLIC KEY"),
            "{}",
            e.message
        );
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let e = PublicKey::from_spki_der(&ed.public_key_der()).unwrap_err();
        assert!(e.message.contains("only EC"), "{}", e.message);
        let e = PublicKey::from_spki_der(&[0x30, 0x05, 0x00]).unwrap_err();
        assert!(e.message.contains("not a DER"), "{}", e.message);
    }

    #[test]
    fn rsa_key_sizes_are_checked() {
        let spki = |n_bytes: usize| {
            let mut n = vec![0u8; n_bytes];
            n[0] = 0xc1;
            rsa_spki(&n, &[1, 0, 1])
        };
        let p = PublicKey::from_spki_der(&spki(256)).unwrap();
        assert_eq!(p.algorithm(), KeyAlgorithm::Rsa { bits: 2048 });
        assert_eq!(p.algorithm().csr_scheme(), SignatureScheme::RsaPkcs1Sha256);
        assert!(p
            .algorithm()
            .schemes()
            .contains(&SignatureScheme::RsaPssSha256));
        let e = PublicKey::from_spki_der(&spki(128)).unwrap_err();
        assert!(e.message.contains("this one has 1024"), "{}", e.message);
    }

    #[test]
    fn signatures_are_checked_and_raw_ecdsa_is_converted() {
        for p384 in [false, true] {
            let scheme = if p384 {
                SignatureScheme::EcdsaP384Sha384
            } else {
                SignatureScheme::EcdsaP256Sha256
            };
            for raw in [false, true] {
                let s = soft(p384, raw, false);
                let sig = sign_checked(&s, scheme, b"hello").unwrap();
                assert_eq!(sig[0], TAG_SEQUENCE, "DER either way");
                assert!(s.public_key().verify(scheme, b"hello", &sig));
            }
            let s = soft(p384, false, true);
            let e = sign_checked(&s, scheme, b"hello").unwrap_err();
            assert_eq!(e.kind, ErrorKind::Signer);
            assert!(e.message.contains("does not verify"), "{}", e.message);
        }
        let s = soft(false, false, false);
        let e = sign_checked(&s, SignatureScheme::RsaPssSha256, b"x").unwrap_err();
        assert!(e.message.contains("not a scheme of"), "{}", e.message);
        let f = Failing(s.public.clone());
        let e = sign_checked(&f, SignatureScheme::EcdsaP256Sha256, b"x").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Signer);
        assert!(e.message.contains("token removed"), "{}", e.message);
    }

    #[test]
    fn csrs_are_signed_by_the_signer() {
        for p384 in [false, true] {
            let s: Arc<dyn Signer> = Arc::new(soft(p384, true, false));
            let pem = certificate_request(s.clone(), Some("device-1")).unwrap();
            assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
            // The request carries the signer's SPKI unchanged (the emulator's tests check
            // the signature).
            let der =
                rustls::pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
                    .unwrap();
            let spki = s.public_key().spki_der();
            assert!(der.as_ref().windows(spki.len()).any(|w| w == spki));
        }
        let s = soft(false, false, false);
        let f: Arc<dyn Signer> = Arc::new(Failing(s.public.clone()));
        let e = certificate_request(f, None).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Signer);
        assert!(e.message.contains("token removed"), "{}", e.message);
        let s: Arc<dyn Signer> = Arc::new(s);
        let e = certificate_request(s, Some("")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
    }
}
