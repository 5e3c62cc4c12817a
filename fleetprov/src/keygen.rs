//! Device keys made on the device, and the CSR for CreateCertificateFromCsr.
//!
//! EC keys come from ring (through rcgen); ring cannot generate RSA keys, so RSA-2048 comes
//! from the `rsa` crate (cargo feature `rsa-keygen`, off by default: it costs about 184 KiB of
//! the shared library) and is handed to rcgen as PKCS#8 for signing the CSR. The private key
//! leaves this module only as PEM in a [`Zeroizing`] buffer; rcgen's copy is wiped before it
//! is dropped. (ring keeps its own parsed form of the key inside rcgen's key pair while the
//! CSR is signed and frees it without wiping: that copy is beyond our reach.)

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SignatureAlgorithm};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, ErrorKind};

/// The kind of key the device generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyType {
    /// ECDSA on NIST P-256 with SHA-256 (the default: small, fast, accepted by AWS IoT).
    #[default]
    EcP256,
    /// ECDSA on NIST P-384 with SHA-384.
    EcP384,
    /// RSA with a 2048-bit modulus, PKCS#1 v1.5 signatures with SHA-256. Generating it takes
    /// from a fraction of a second to a few seconds on a small CPU. Needs the cargo feature
    /// `rsa-keygen` (about 184 KiB of the shared library); without it, asking for it is an
    /// [`ErrorKind::InvalidArgument`] error.
    Rsa2048,
}

impl KeyType {
    /// A short name: `ec-p256`, `ec-p384`, `rsa-2048`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcP256 => "ec-p256",
            KeyType::EcP384 => "ec-p384",
            KeyType::Rsa2048 => "rsa-2048",
        }
    }
}

/// The subject of a CSR: attribute/value pairs in order, e.g. from `"CN=meter-17,O=Acme"`.
///
/// Attributes: `CN`, `O`, `OU`, `C`, `ST`, `L` and `serialNumber`. AWS IoT takes the
/// certificate's subject from the CSR; templates read it through the
/// `AWS::IoT::Certificate::CommonName` (and similar) pseudo-parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsrSubject {
    entries: Vec<(SubjectAttribute, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SubjectAttribute {
    CommonName,
    Organization,
    OrganizationalUnit,
    Country,
    State,
    Locality,
    SerialNumber,
}

/// OID of the X.520 serialNumber attribute (2.5.4.5), which rcgen has no name for.
const SERIAL_NUMBER_OID: &[u64] = &[2, 5, 4, 5];

impl CsrSubject {
    /// A subject with only a common name.
    pub fn common_name(cn: impl Into<String>) -> Result<CsrSubject, Error> {
        let mut s = CsrSubject::default();
        s.push(SubjectAttribute::CommonName, cn.into())?;
        Ok(s)
    }

    /// Parses `"CN=meter-17,O=Acme,serialNumber=17"`. Values may not contain `,` or `=`;
    /// an empty string is an empty subject.
    pub fn parse(text: &str) -> Result<CsrSubject, Error> {
        let mut s = CsrSubject::default();
        if text.trim().is_empty() {
            return Ok(s);
        }
        for part in text.split(',') {
            let (name, value) = part.split_once('=').ok_or_else(|| {
                Error::invalid(format!("CSR subject part {part:?} is not NAME=VALUE"))
            })?;
            let attribute = match name.trim() {
                "CN" => SubjectAttribute::CommonName,
                "O" => SubjectAttribute::Organization,
                "OU" => SubjectAttribute::OrganizationalUnit,
                "C" => SubjectAttribute::Country,
                "ST" => SubjectAttribute::State,
                "L" => SubjectAttribute::Locality,
                "serialNumber" => SubjectAttribute::SerialNumber,
                other => {
                    return Err(Error::invalid(format!(
                        "CSR subject attribute {other:?} is not one of CN, O, OU, C, ST, L, serialNumber"
                    )))
                }
            };
            s.push(attribute, value.trim().to_owned())?;
        }
        Ok(s)
    }

    fn push(&mut self, attribute: SubjectAttribute, value: String) -> Result<(), Error> {
        // X.520 upper bounds: 64 characters for most names, 2 for a country code.
        let max = if attribute == SubjectAttribute::Country {
            2
        } else {
            64
        };
        if value.is_empty() || value.chars().count() > max || value.contains(['=', ',', '\0']) {
            return Err(Error::invalid(format!(
                "CSR subject value {value:?} must be 1 to {max} characters without '=', ',' or NUL"
            )));
        }
        self.entries.push((attribute, value));
        Ok(())
    }

    pub(crate) fn to_rcgen(&self) -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        for (attribute, value) in &self.entries {
            let ty = match attribute {
                SubjectAttribute::CommonName => DnType::CommonName,
                SubjectAttribute::Organization => DnType::OrganizationName,
                SubjectAttribute::OrganizationalUnit => DnType::OrganizationalUnitName,
                SubjectAttribute::Country => DnType::CountryName,
                SubjectAttribute::State => DnType::StateOrProvinceName,
                SubjectAttribute::Locality => DnType::LocalityName,
                SubjectAttribute::SerialNumber => DnType::CustomDnType(SERIAL_NUMBER_OID.to_vec()),
            };
            dn.push(ty, value.as_str());
        }
        dn
    }
}

/// A freshly generated key and the CSR made with it.
pub struct DeviceKey {
    /// The key type.
    pub key_type: KeyType,
    /// The private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`). Secret; wiped when dropped.
    pub private_key_pem: Zeroizing<String>,
    /// The certificate signing request, PEM, signed with the key.
    pub csr_pem: String,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceKey")
            .field("key_type", &self.key_type)
            .field("private_key_pem", &"<secret>")
            .finish()
    }
}

fn keygen_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Internal, format!("{what}: {e}"))
}

/// Generates a key of `key_type` from the operating system's randomness and a CSR for it
/// with `subject`. Blocking (RSA generation is slow): run it off an async executor's threads.
pub fn generate(key_type: KeyType, subject: &CsrSubject) -> Result<DeviceKey, Error> {
    let ec = |alg| {
        KeyPair::generate_for(alg).map_err(|e| keygen_error("cannot generate the device key", e))
    };
    let mut key_pair = match key_type {
        KeyType::EcP256 => ec(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        KeyType::EcP384 => ec(&rcgen::PKCS_ECDSA_P384_SHA384)?,
        KeyType::Rsa2048 => rsa_key_pair()?,
    };
    let result = csr_for(&key_pair, subject).map(|csr_pem| DeviceKey {
        key_type,
        private_key_pem: Zeroizing::new(key_pair.serialize_pem()),
        csr_pem,
    });
    key_pair.zeroize();
    result
}

/// A CSR with `subject` for an existing private key (PKCS#8 PEM, as [`generate`] makes; EC
/// P-256, P-384 or RSA), for renewing a certificate without a new key.
/// [`ErrorKind::InvalidArgument`] if the key cannot be read or used.
pub fn csr_for_key(private_key_pem: &str, subject: &CsrSubject) -> Result<String, Error> {
    let mut key_pair = KeyPair::from_pem(private_key_pem)
        .or_else(|_| KeyPair::from_pem_and_sign_algo(private_key_pem, rsa_sha256()))
        .map_err(|e| {
            Error::invalid(format!(
                "the device key cannot sign a CSR (a PKCS#8 EC or RSA key is needed): {e}"
            ))
        })?;
    let csr = csr_for(&key_pair, subject);
    key_pair.zeroize();
    csr
}

fn csr_for(key_pair: &KeyPair, subject: &CsrSubject) -> Result<String, Error> {
    let mut params = CertificateParams::default();
    // rcgen's default subject ("rcgen self signed cert") would otherwise end up in the
    // device's certificate.
    params.distinguished_name = subject.to_rcgen();
    params
        .serialize_request(key_pair)
        .and_then(|csr| csr.pem())
        .map_err(|e| keygen_error("cannot build the CSR", e))
}

#[cfg(feature = "rsa-keygen")]
fn rsa_key_pair() -> Result<KeyPair, Error> {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
        .map_err(|e| keygen_error("cannot generate the RSA key", e))?;
    // `SecretDocument` and the RSA key wipe themselves when dropped.
    let pkcs8 = key
        .to_pkcs8_der()
        .map_err(|e| keygen_error("cannot encode the RSA key", e))?;
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_bytes());
    KeyPair::from_pkcs8_der_and_sign_algo(&der, rsa_sha256())
        .map_err(|e| keygen_error("cannot use the RSA key", e))
}

#[cfg(not(feature = "rsa-keygen"))]
fn rsa_key_pair() -> Result<KeyPair, Error> {
    let _ = rsa_sha256;
    Err(Error::invalid(
        "RSA-2048 key generation is not built into this library (cargo feature rsa-keygen); \
         use EC P-256 or P-384, or keys from the service",
    ))
}

fn rsa_sha256() -> &'static SignatureAlgorithm {
    &rcgen::PKCS_RSA_SHA256
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_type_gives_a_signed_csr_with_the_subject() {
        let subject = CsrSubject::parse("CN=meter-17,O=Acme,serialNumber=17").unwrap();
        let mut types = vec![KeyType::EcP256, KeyType::EcP384];
        if cfg!(feature = "rsa-keygen") {
            types.push(KeyType::Rsa2048);
        }
        for key_type in types {
            let k = generate(key_type, &subject).unwrap();
            assert!(k.csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
            assert!(k.private_key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
            assert!(!format!("{k:?}").contains("PRIVATE"));
        }
    }

    #[cfg(not(feature = "rsa-keygen"))]
    #[test]
    fn rsa_without_the_feature_is_a_clear_error() {
        let e = generate(KeyType::Rsa2048, &CsrSubject::default()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        assert!(e.message.contains("rsa-keygen"));
    }

    #[test]
    fn a_csr_for_an_existing_key_carries_that_key() {
        let k = generate(KeyType::EcP384, &CsrSubject::default()).unwrap();
        let subject = CsrSubject::parse("CN=again").unwrap();
        let csr = csr_for_key(&k.private_key_pem, &subject).unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        // That the service's certificate carries this key is checked end to end (rotation
        // with the same key; the store refuses a certificate for another key).
        let e = csr_for_key("not a key", &subject).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
    }

    #[test]
    fn two_keys_differ() {
        let s = CsrSubject::default();
        let a = generate(KeyType::EcP256, &s).unwrap();
        let b = generate(KeyType::EcP256, &s).unwrap();
        assert_ne!(*a.private_key_pem, *b.private_key_pem);
    }

    #[test]
    fn subject_parsing() {
        assert_eq!(CsrSubject::parse("").unwrap(), CsrSubject::default());
        for bad in ["CN", "XX=1", "CN=", "C=USA", "CN=a,", "CN=a=b"] {
            assert_eq!(
                CsrSubject::parse(bad).unwrap_err().kind,
                ErrorKind::InvalidArgument,
                "{bad}"
            );
        }
        assert_eq!(CsrSubject::parse(" CN = dev ").unwrap().entries.len(), 1);
    }
}
