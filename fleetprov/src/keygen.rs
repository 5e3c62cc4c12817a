//! Device keys made on the device, and the CSR for CreateCertificateFromCsr.
//!
//! EC keys come from ring; ring cannot generate RSA keys, so RSA-2048 comes from the `rsa`
//! crate (cargo feature `rsa-keygen`, off by default: it costs about 153 KiB of the shared
//! library). Either way the key is PKCS#8 DER, which signs the CSR (`crate::x509::csr`) and
//! becomes the PEM. The private key leaves this module only as PEM in a [`Zeroizing`] buffer,
//! and the DER and PEM copies made here are wiped. (ring's PKCS#8 document of a new EC key, and
//! the parsed form of the key ring keeps while the CSR is signed, are freed without wiping, and
//! so is the base64 text rustls-pki-types' PEM reader collects when [`csr_for_key`] reads an
//! existing key: those copies are beyond our reach.)

use ring::rand::SystemRandom;
use ring::signature::{self as ring_sig, EcdsaKeyPair};
use rustls::pki_types::pem::{PemObject, SectionKind};
use zeroize::Zeroizing;

use crate::error::{Error, ErrorKind};
use crate::x509::csr;

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
    /// `rsa-keygen` (about 153 KiB of the shared library); without it, asking for it is an
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

impl SubjectAttribute {
    /// The attribute type's OID (X.520, 2.5.4.x), DER content bytes.
    fn oid(self) -> &'static [u8] {
        match self {
            SubjectAttribute::CommonName => &[0x55, 0x04, 0x03],
            SubjectAttribute::Organization => &[0x55, 0x04, 0x0a],
            SubjectAttribute::OrganizationalUnit => &[0x55, 0x04, 0x0b],
            SubjectAttribute::Country => &[0x55, 0x04, 0x06],
            SubjectAttribute::State => &[0x55, 0x04, 0x08],
            SubjectAttribute::Locality => &[0x55, 0x04, 0x07],
            SubjectAttribute::SerialNumber => &[0x55, 0x04, 0x05],
        }
    }
}

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

    /// The DER Name: each attribute once, where it first appears, with the value given last
    /// (as CSRs have always had it), each value a UTF8String.
    pub(crate) fn to_der(&self) -> Vec<u8> {
        let mut attributes: Vec<(&[u8], &str)> = Vec::with_capacity(self.entries.len());
        for (attribute, value) in &self.entries {
            let oid = attribute.oid();
            match attributes.iter_mut().find(|(o, _)| *o == oid) {
                Some(earlier) => earlier.1 = value,
                None => attributes.push((oid, value)),
            }
        }
        csr::name(&attributes)
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
    let pkcs8 = match key_type {
        KeyType::EcP256 => ec_pkcs8(&ring_sig::ECDSA_P256_SHA256_ASN1_SIGNING)?,
        KeyType::EcP384 => ec_pkcs8(&ring_sig::ECDSA_P384_SHA384_ASN1_SIGNING)?,
        KeyType::Rsa2048 => rsa_pkcs8()?,
    };
    let key = csr::KeyPair::from_pkcs8(&pkcs8)
        .ok_or_else(|| keygen_error("cannot use the device key", "ring refused it"))?;
    let csr_pem = key.request_pem(&subject.to_der())?;
    Ok(DeviceKey {
        key_type,
        private_key_pem: Zeroizing::new(csr::pem("PRIVATE KEY", &pkcs8)),
        csr_pem,
    })
}

/// A CSR with `subject` for an existing private key (PKCS#8 PEM, as [`generate`] makes; EC
/// P-256, P-384, Ed25519 or RSA), for renewing a certificate without a new key.
/// [`ErrorKind::InvalidArgument`] if the key cannot be read or used.
pub fn csr_for_key(private_key_pem: &str, subject: &CsrSubject) -> Result<String, Error> {
    let refused = |why: &str| {
        Error::invalid(format!(
            "the device key cannot sign a CSR (a PKCS#8 EC, Ed25519 or RSA key is needed): {why}"
        ))
    };
    // The first PEM section, whatever its label, must hold a PKCS#8 key.
    let (_, der) = <(SectionKind, Vec<u8>)>::from_pem_slice(private_key_pem.as_bytes())
        .map_err(|e| refused(&format!("no PEM key found ({e})")))?;
    let der = Zeroizing::new(der);
    let key = csr::KeyPair::from_pkcs8(&der).ok_or_else(|| {
        refused("not a PKCS#8 EC P-256, EC P-384, Ed25519 or RSA (2048 bits or more) key")
    })?;
    key.request_pem(&subject.to_der())
}

fn ec_pkcs8(alg: &'static ring_sig::EcdsaSigningAlgorithm) -> Result<Zeroizing<Vec<u8>>, Error> {
    EcdsaKeyPair::generate_pkcs8(alg, &SystemRandom::new())
        .map(|doc| Zeroizing::new(doc.as_ref().to_vec()))
        .map_err(|_| keygen_error("cannot generate the device key", "no randomness"))
}

#[cfg(feature = "rsa-keygen")]
fn rsa_pkcs8() -> Result<Zeroizing<Vec<u8>>, Error> {
    use rsa::pkcs8::EncodePrivateKey;
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048)
        .map_err(|e| keygen_error("cannot generate the RSA key", e))?;
    // `SecretDocument` and the RSA key wipe themselves when dropped.
    let pkcs8 = key
        .to_pkcs8_der()
        .map_err(|e| keygen_error("cannot encode the RSA key", e))?;
    Ok(Zeroizing::new(pkcs8.as_bytes().to_vec()))
}

#[cfg(not(feature = "rsa-keygen"))]
fn rsa_pkcs8() -> Result<Zeroizing<Vec<u8>>, Error> {
    Err(Error::invalid(
        "RSA-2048 key generation is not built into this library (cargo feature rsa-keygen); \
         use EC P-256 or P-384, or keys from the service",
    ))
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
