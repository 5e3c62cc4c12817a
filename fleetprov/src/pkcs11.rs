//! Keys in a PKCS#11 token (an HSM, a smart card, a TPM or secure element with a PKCS#11
//! module, SoftHSM): a [`Signer`] for the claim key, and the device key generated inside the
//! token with its CSR signed there and, if asked, its certificate stored back.
//!
//! The module is loaded (`dlopen`) the first time a key of it is used, initialised once for
//! the process, and kept loaded: unloading PKCS#11 modules while others in the process may
//! use them is a known source of crashes. Each [`open`] or [`generate`] opens its own session
//! and logs in with the PIN; the session lives as long as the signer.
//!
//! Built only with the `pkcs11` cargo feature (on by default); without it the functions here
//! fail with [`ErrorKind::Signer`] saying so.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::error::{Error, ErrorKind};
use crate::signer::{KeyAlgorithm, PublicKey, Signer};

/// Where a key is in a PKCS#11 token and how to reach it.
#[derive(Clone, Default)]
pub struct Pkcs11Key {
    /// Path of the PKCS#11 module (e.g. `/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// Label of the token (`CKA_LABEL` of the token, trailing blanks ignored).
    pub token_label: Option<String>,
    /// Slot id of the token. With neither this nor `token_label`, the module must have exactly
    /// one token.
    pub slot_id: Option<u64>,
    /// The user PIN; wiped from memory when dropped. `None` skips the login (a token with a
    /// protected authentication path, or keys that are not private objects).
    pub pin: Option<Zeroizing<String>>,
    /// `CKA_LABEL` of the private key (and of its public key and certificate objects).
    pub key_label: String,
}

impl fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Key")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("slot_id", &self.slot_id)
            .field("pin", &self.pin.as_ref().map(|_| "<set>"))
            .field("key_label", &self.key_label)
            .finish()
    }
}

impl Pkcs11Key {
    /// Checks what can be checked without loading the module.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.module.as_os_str().is_empty() {
            return Err(Error::invalid("PKCS#11: no module path given"));
        }
        if self.key_label.is_empty() {
            return Err(Error::invalid("PKCS#11: no key label given"));
        }
        if matches!(&self.token_label, Some(l) if l.is_empty() || l.len() > 32) {
            return Err(Error::invalid(
                "PKCS#11: a token label is 1 to 32 bytes long",
            ));
        }
        Ok(())
    }

    /// "token 'x'" or "slot 3" or "the token", for messages.
    #[cfg_attr(not(feature = "pkcs11"), allow(dead_code))]
    fn token_name(&self) -> String {
        match (&self.token_label, self.slot_id) {
            (Some(l), _) => format!("token '{l}'"),
            (None, Some(id)) => format!("the token in slot {id}"),
            (None, None) => "the token".to_owned(),
        }
    }
}

fn signer_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Signer, message)
}

/// The signer of the private key `key.key_label`. Its public key is read from the token (the
/// public key object of the same label, or the RSA private key's modulus); `known` (e.g. from
/// the client certificate) is used when the token has no public key object, as for EC keys
/// imported without one.
pub fn open(key: &Pkcs11Key, known: Option<&PublicKey>) -> Result<Arc<dyn Signer>, Error> {
    key.validate()?;
    imp::open(key, known)
}

/// Generates a key pair of `algorithm` inside the token, labelled `key.key_label`, and returns
/// its signer (for [`crate::signer::certificate_request`], then the TLS client
/// authentication). The private key is created sensitive and not extractable. Refused if the
/// token already has a private key with that label: nothing is overwritten.
pub fn generate(key: &Pkcs11Key, algorithm: KeyAlgorithm) -> Result<Arc<dyn Signer>, Error> {
    key.validate()?;
    if let KeyAlgorithm::Rsa { bits } = algorithm {
        if !(2048..=4096).contains(&bits) {
            return Err(Error::invalid(
                "PKCS#11: generated RSA keys have 2048 to 4096 bits",
            ));
        }
    }
    imp::generate(key, algorithm)
}

/// The signer of the private key `key.key_label` if the token has one (its algorithm is then
/// whatever it is), otherwise one generated as [`generate`] does; the flag says which. For a
/// device key that must survive a provisioning that is repeated or was interrupted: the key
/// stays in the token and gets a new certificate.
pub fn open_or_generate(
    key: &Pkcs11Key,
    algorithm: KeyAlgorithm,
) -> Result<(Arc<dyn Signer>, bool), Error> {
    key.validate()?;
    if imp::has_private_key(key)? {
        return imp::open(key, None).map(|s| (s, false));
    }
    generate(key, algorithm).map(|s| (s, true))
}

/// The `CKA_ID` of the private key `key.key_label` (empty if it has none).
pub fn key_id(key: &Pkcs11Key) -> Result<Vec<u8>, Error> {
    key.validate()?;
    imp::key_id(key)
}

/// Stores `certificate_pem` (the leaf of the chain) in the token as an X.509 certificate
/// object labelled `key.key_label`, with the `CKA_ID` of the private key. Certificates with
/// that label stored before are removed once the new one is in.
pub fn store_certificate(key: &Pkcs11Key, certificate_pem: &str) -> Result<(), Error> {
    key.validate()?;
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(certificate_pem.as_bytes())
        .map_err(|_| Error::invalid("PKCS#11: no CERTIFICATE in the PEM text to store"))?;
    imp::store_certificate(key, &der)
}

#[cfg(not(feature = "pkcs11"))]
mod imp {
    use super::*;

    fn unsupported() -> Error {
        signer_error("this build of the library has no PKCS#11 support (cargo feature pkcs11)")
    }

    pub(super) fn open(_: &Pkcs11Key, _: Option<&PublicKey>) -> Result<Arc<dyn Signer>, Error> {
        Err(unsupported())
    }

    pub(super) fn generate(_: &Pkcs11Key, _: KeyAlgorithm) -> Result<Arc<dyn Signer>, Error> {
        Err(unsupported())
    }

    pub(super) fn store_certificate(_: &Pkcs11Key, _: &[u8]) -> Result<(), Error> {
        Err(unsupported())
    }

    pub(super) fn has_private_key(_: &Pkcs11Key) -> Result<bool, Error> {
        Err(unsupported())
    }

    pub(super) fn key_id(_: &Pkcs11Key) -> Result<Vec<u8>, Error> {
        Err(unsupported())
    }
}

#[cfg(feature = "pkcs11")]
mod imp {
    use std::path::Path;
    use std::sync::Mutex;

    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::error::{Error as CkError, RvError};
    use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
    use cryptoki::mechanism::{Mechanism, MechanismType};
    use cryptoki::object::{Attribute, AttributeType, CertificateType, ObjectClass, ObjectHandle};
    use cryptoki::session::{Session, UserType};
    use cryptoki::slot::Slot;
    use cryptoki::types::AuthPin;

    use super::*;
    use crate::log::{fp_log, Level};
    use crate::signer::{ec_params_der, SignatureScheme};
    use crate::x509::{certificate_subject, ec_spki, rsa_spki, unwrap_octet_string};

    /// Modules loaded in this process, initialised once and never unloaded.
    static MODULES: Mutex<Vec<(PathBuf, Pkcs11)>> = Mutex::new(Vec::new());

    /// The name of a PKCS#11 failure: `CKR_*`-style for return values.
    fn ck(e: &CkError) -> String {
        match e {
            CkError::Pkcs11(rv, function) => format!("{rv:?} from {function:?}"),
            CkError::LibraryLoading(l) => l.to_string(),
            other => format!("{other:?}"),
        }
    }

    fn module(path: &Path) -> Result<Pkcs11, Error> {
        let mut modules = MODULES.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, m)) = modules.iter().find(|(p, _)| p == path) {
            return Ok(m.clone());
        }
        let m = Pkcs11::new(path).map_err(|e| {
            signer_error(format!(
                "PKCS#11: cannot load the module {}: {}",
                path.display(),
                ck(&e)
            ))
        })?;
        match m.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(e) => {
                return Err(signer_error(format!(
                    "PKCS#11: the module {} failed to initialise: {}",
                    path.display(),
                    ck(&e)
                )))
            }
        }
        fp_log!(Level::Debug, "PKCS#11 module {} loaded", path.display());
        modules.push((path.to_path_buf(), m.clone()));
        Ok(m)
    }

    fn find_slot(m: &Pkcs11, key: &Pkcs11Key) -> Result<Slot, Error> {
        let slots = m
            .get_slots_with_token()
            .map_err(|e| signer_error(format!("PKCS#11: cannot list the slots: {}", ck(&e))))?;
        let label_of = |s: Slot| {
            m.get_token_info(s)
                .map(|t| t.label().trim_end().to_owned())
                .unwrap_or_default()
        };
        let found: Vec<Slot> = slots
            .iter()
            .copied()
            .filter(|s| key.slot_id.is_none_or(|id| s.id() == id))
            .filter(|s| {
                key.token_label
                    .as_ref()
                    .is_none_or(|l| label_of(*s) == l.trim_end())
            })
            .collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => {
                let present: Vec<String> = slots
                    .iter()
                    .map(|s| format!("slot {} '{}'", s.id(), label_of(*s)))
                    .collect();
                Err(signer_error(format!(
                    "PKCS#11: {} not found in {} (tokens present: {})",
                    key.token_name(),
                    key.module.display(),
                    if present.is_empty() {
                        "none".to_owned()
                    } else {
                        present.join(", ")
                    }
                )))
            }
            _ => Err(signer_error(format!(
                "PKCS#11: {} tokens in {}: name one with a token label or slot id",
                found.len(),
                key.module.display()
            ))),
        }
    }

    /// A logged-in session on the key's token.
    fn session(key: &Pkcs11Key, read_write: bool) -> Result<Session, Error> {
        let m = module(&key.module)?;
        let slot = find_slot(&m, key)?;
        let session = if read_write {
            m.open_rw_session(slot)
        } else {
            m.open_ro_session(slot)
        }
        .map_err(|e| {
            signer_error(format!(
                "PKCS#11: cannot open a session on {}: {}",
                key.token_name(),
                ck(&e)
            ))
        })?;
        if let Some(pin) = &key.pin {
            let pin = AuthPin::new(pin.as_str().into());
            match session.login(UserType::User, Some(&pin)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
                Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
                    return Err(signer_error(format!(
                        "PKCS#11: {} refused the PIN (CKR_PIN_INCORRECT)",
                        key.token_name()
                    )))
                }
                Err(CkError::Pkcs11(RvError::PinLocked, _)) => {
                    return Err(signer_error(format!(
                        "PKCS#11: the PIN of {} is locked (CKR_PIN_LOCKED)",
                        key.token_name()
                    )))
                }
                Err(e) => {
                    return Err(signer_error(format!(
                        "PKCS#11: login to {} failed: {}",
                        key.token_name(),
                        ck(&e)
                    )))
                }
            }
        }
        Ok(session)
    }

    fn find(
        session: &Session,
        class: ObjectClass,
        label: &str,
    ) -> Result<Vec<ObjectHandle>, Error> {
        session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(|e| signer_error(format!("PKCS#11: cannot search the token: {}", ck(&e))))
    }

    fn attribute_bytes(
        session: &Session,
        object: ObjectHandle,
        ty: AttributeType,
    ) -> Option<Vec<u8>> {
        let attrs = session.get_attributes(object, &[ty]).ok()?;
        attrs.into_iter().find_map(|a| match a {
            Attribute::EcParams(v)
            | Attribute::EcPoint(v)
            | Attribute::Modulus(v)
            | Attribute::PublicExponent(v)
            | Attribute::Id(v) => Some(v),
            _ => None,
        })
    }

    /// The SPKI of a key object from its attributes: EC params and point, or modulus and
    /// exponent.
    fn public_of(session: &Session, object: ObjectHandle) -> Option<PublicKey> {
        let spki = match (
            attribute_bytes(session, object, AttributeType::EcParams),
            attribute_bytes(session, object, AttributeType::EcPoint),
        ) {
            (Some(params), Some(point)) => ec_spki(&params, unwrap_octet_string(&point)),
            _ => rsa_spki(
                &attribute_bytes(session, object, AttributeType::Modulus)?,
                &attribute_bytes(session, object, AttributeType::PublicExponent)?,
            ),
        };
        PublicKey::from_spki_der(&spki).ok()
    }

    fn private_key(session: &Session, key: &Pkcs11Key) -> Result<ObjectHandle, Error> {
        let found = find(session, ObjectClass::PRIVATE_KEY, &key.key_label)?;
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(signer_error(format!(
                "PKCS#11: no private key labelled '{}' in {}{}",
                key.key_label,
                key.token_name(),
                if key.pin.is_none() {
                    " (no PIN given: private keys are usually visible only after login)"
                } else {
                    ""
                }
            ))),
            _ => Err(signer_error(format!(
                "PKCS#11: {} private keys labelled '{}' in {}: the label must name one",
                found.len(),
                key.key_label,
                key.token_name()
            ))),
        }
    }

    /// The signer over one private key object, on its own session.
    struct TokenSigner {
        session: Mutex<Session>,
        key: ObjectHandle,
        public: PublicKey,
        label: String,
    }

    impl fmt::Debug for TokenSigner {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "TokenSigner({:?}, {})",
                self.label,
                self.public.algorithm()
            )
        }
    }

    /// DER DigestInfo prefixes (RFC 8017, 9.2 note 1): CKM_RSA_PKCS signs DigestInfo || hash.
    const DIGEST_INFO_SHA256: &[u8] = &[
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    const DIGEST_INFO_SHA384: &[u8] = &[
        0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
        0x05, 0x00, 0x04, 0x30,
    ];
    const DIGEST_INFO_SHA512: &[u8] = &[
        0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
        0x05, 0x00, 0x04, 0x40,
    ];

    impl Signer for TokenSigner {
        fn public_key(&self) -> &PublicKey {
            &self.public
        }

        fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, Error> {
            use crate::signer::Hash;
            let hash = scheme.hash();
            let digest = hash.digest(message);
            let (hash_mech, mgf, prefix) = match hash {
                Hash::Sha256 => (
                    MechanismType::SHA256,
                    PkcsMgfType::MGF1_SHA256,
                    DIGEST_INFO_SHA256,
                ),
                Hash::Sha384 => (
                    MechanismType::SHA384,
                    PkcsMgfType::MGF1_SHA384,
                    DIGEST_INFO_SHA384,
                ),
                Hash::Sha512 => (
                    MechanismType::SHA512,
                    PkcsMgfType::MGF1_SHA512,
                    DIGEST_INFO_SHA512,
                ),
            };
            let (mechanism, data) = if scheme.is_ecdsa() {
                (Mechanism::Ecdsa, digest)
            } else if scheme.is_pss() {
                let params = PkcsPssParams {
                    hash_alg: hash_mech,
                    mgf,
                    s_len: (hash.len() as std::ffi::c_ulong).into(),
                };
                (Mechanism::RsaPkcsPss(params), digest)
            } else {
                let mut data = prefix.to_vec();
                data.extend(digest);
                (Mechanism::RsaPkcs, data)
            };
            let session = self.session.lock().unwrap_or_else(|p| p.into_inner());
            session.sign(&mechanism, self.key, &data).map_err(|e| {
                signer_error(format!(
                    "PKCS#11: the token failed to sign with '{}': {}",
                    self.label,
                    ck(&e)
                ))
            })
        }
    }

    pub(super) fn open(
        key: &Pkcs11Key,
        known: Option<&PublicKey>,
    ) -> Result<Arc<dyn Signer>, Error> {
        let session = session(key, false)?;
        let private = private_key(&session, key)?;
        let from_token = find(&session, ObjectClass::PUBLIC_KEY, &key.key_label)?
            .first()
            .and_then(|o| public_of(&session, *o))
            .or_else(|| public_of(&session, private));
        let public = match (from_token, known) {
            (Some(p), _) => p,
            (None, Some(k)) => k.clone(),
            (None, None) => {
                return Err(signer_error(format!(
                    "PKCS#11: no public key labelled '{}' in {}, and no certificate to take it \
                     from",
                    key.key_label,
                    key.token_name()
                )))
            }
        };
        Ok(Arc::new(TokenSigner {
            session: Mutex::new(session),
            key: private,
            public,
            label: key.key_label.clone(),
        }))
    }

    pub(super) fn has_private_key(key: &Pkcs11Key) -> Result<bool, Error> {
        let session = session(key, false)?;
        Ok(!find(&session, ObjectClass::PRIVATE_KEY, &key.key_label)?.is_empty())
    }

    pub(super) fn key_id(key: &Pkcs11Key) -> Result<Vec<u8>, Error> {
        let session = session(key, false)?;
        let private = private_key(&session, key)?;
        Ok(attribute_bytes(&session, private, AttributeType::Id).unwrap_or_default())
    }

    pub(super) fn generate(
        key: &Pkcs11Key,
        algorithm: KeyAlgorithm,
    ) -> Result<Arc<dyn Signer>, Error> {
        let session = session(key, true)?;
        if !find(&session, ObjectClass::PRIVATE_KEY, &key.key_label)?.is_empty() {
            return Err(signer_error(format!(
                "PKCS#11: {} already has a private key labelled '{}'; it is left as it is",
                key.token_name(),
                key.key_label
            )));
        }
        let mut id = vec![0u8; 16];
        getrandom::getrandom(&mut id)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("no randomness: {e}")))?;
        let label = Attribute::Label(key.key_label.as_bytes().to_vec());
        let mut public = vec![
            Attribute::Token(true),
            Attribute::Verify(true),
            label.clone(),
            Attribute::Id(id.clone()),
        ];
        let private = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            label,
            Attribute::Id(id),
        ];
        let mechanism = match algorithm {
            KeyAlgorithm::Rsa { bits } => {
                public.push(Attribute::ModulusBits((bits as std::ffi::c_ulong).into()));
                public.push(Attribute::PublicExponent(vec![1, 0, 1]));
                Mechanism::RsaPkcsKeyPairGen
            }
            ec => {
                public.push(Attribute::EcParams(ec_params_der(ec).unwrap_or_default()));
                Mechanism::EccKeyPairGen
            }
        };
        let (pub_handle, priv_handle) = session
            .generate_key_pair(&mechanism, &public, &private)
            .map_err(|e| {
                signer_error(format!(
                    "PKCS#11: {} could not generate a {algorithm} key pair: {}",
                    key.token_name(),
                    ck(&e)
                ))
            })?;
        let public = public_of(&session, pub_handle)
            .ok_or_else(|| signer_error("PKCS#11: the generated public key cannot be read back"))?;
        fp_log!(
            Level::Info,
            "PKCS#11: generated a {algorithm} key pair '{}' in {}",
            key.key_label,
            key.token_name()
        );
        Ok(Arc::new(TokenSigner {
            session: Mutex::new(session),
            key: priv_handle,
            public,
            label: key.key_label.clone(),
        }))
    }

    pub(super) fn store_certificate(key: &Pkcs11Key, der: &[u8]) -> Result<(), Error> {
        let session = session(key, true)?;
        let private = private_key(&session, key)?;
        let id = attribute_bytes(&session, private, AttributeType::Id).unwrap_or_default();
        let subject = certificate_subject(der)
            .ok_or_else(|| Error::invalid("PKCS#11: the certificate to store cannot be parsed"))?;
        let old = find(&session, ObjectClass::CERTIFICATE, &key.key_label)?;
        session
            .create_object(&[
                Attribute::Class(ObjectClass::CERTIFICATE),
                Attribute::CertificateType(CertificateType::X_509),
                Attribute::Token(true),
                Attribute::Label(key.key_label.as_bytes().to_vec()),
                Attribute::Id(id),
                Attribute::Subject(subject),
                Attribute::Value(der.to_vec()),
            ])
            .map_err(|e| {
                signer_error(format!(
                    "PKCS#11: {} did not store the certificate: {}",
                    key.token_name(),
                    ck(&e)
                ))
            })?;
        for o in old {
            if let Err(e) = session.destroy_object(o) {
                fp_log!(
                    Level::Warn,
                    "PKCS#11: an older certificate stays: {}",
                    ck(&e)
                );
            }
        }
        Ok(())
    }
}
