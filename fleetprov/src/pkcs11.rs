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
mod ffi;

#[cfg(feature = "pkcs11")]
mod imp {
    use std::path::Path;
    use std::sync::Mutex;

    use cryptoki_sys::{
        CKA_CERTIFICATE_TYPE, CKA_CLASS, CKA_EC_PARAMS, CKA_EC_POINT, CKA_EXTRACTABLE, CKA_ID,
        CKA_LABEL, CKA_MODULUS, CKA_MODULUS_BITS, CKA_PRIVATE, CKA_PUBLIC_EXPONENT, CKA_SENSITIVE,
        CKA_SIGN, CKA_SUBJECT, CKA_TOKEN, CKA_VALUE, CKA_VERIFY, CKC_X_509, CKG_MGF1_SHA256,
        CKG_MGF1_SHA384, CKG_MGF1_SHA512, CKM_ECDSA, CKM_EC_KEY_PAIR_GEN, CKM_RSA_PKCS,
        CKM_RSA_PKCS_KEY_PAIR_GEN, CKM_SHA256, CKM_SHA384, CKM_SHA512, CKO_CERTIFICATE,
        CKO_PRIVATE_KEY, CKO_PUBLIC_KEY, CKR_PIN_INCORRECT, CKR_PIN_LOCKED,
        CKR_USER_ALREADY_LOGGED_IN, CK_ATTRIBUTE_TYPE, CK_OBJECT_CLASS, CK_OBJECT_HANDLE,
        CK_RSA_PKCS_PSS_PARAMS, CK_SLOT_ID, CK_ULONG,
    };

    use super::ffi::{Attr, CkError, Mechanism, Module, Session, Value};
    use super::*;
    use crate::log::{fp_log, Level};
    use crate::signer::{ec_params_der, SignatureScheme};
    use crate::x509::{certificate_subject, ec_spki, rsa_spki, unwrap_octet_string};

    /// Modules loaded in this process, initialised once and never unloaded.
    static MODULES: Mutex<Vec<(PathBuf, Module)>> = Mutex::new(Vec::new());

    /// The name of a PKCS#11 failure: `CKR_PIN_INCORRECT from C_Login`.
    fn ck(e: &CkError) -> String {
        e.to_string()
    }

    fn module(path: &Path) -> Result<Module, Error> {
        let mut modules = MODULES.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, m)) = modules.iter().find(|(p, _)| p == path) {
            return Ok(*m);
        }
        let m = Module::load(path).map_err(|e| {
            signer_error(format!(
                "PKCS#11: cannot load the module {}: {e}",
                path.display()
            ))
        })?;
        m.initialize().map_err(|e| {
            signer_error(format!(
                "PKCS#11: the module {} failed to initialise: {}",
                path.display(),
                ck(&e)
            ))
        })?;
        fp_log!(Level::Debug, "PKCS#11 module {} loaded", path.display());
        modules.push((path.to_path_buf(), m));
        Ok(m)
    }

    /// A slot id as the options give it (`CK_SLOT_ID` is 32 bits on 32-bit targets).
    #[allow(clippy::useless_conversion)]
    fn slot_number(slot: CK_SLOT_ID) -> u64 {
        u64::from(slot)
    }

    fn find_slot(m: Module, key: &Pkcs11Key) -> Result<CK_SLOT_ID, Error> {
        let slots = m
            .slots_with_token()
            .map_err(|e| signer_error(format!("PKCS#11: cannot list the slots: {}", ck(&e))))?;
        let label_of = |s: CK_SLOT_ID| m.token_label(s).unwrap_or_default();
        let found: Vec<CK_SLOT_ID> = slots
            .iter()
            .copied()
            .filter(|s| key.slot_id.is_none_or(|id| slot_number(*s) == id))
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
                    .map(|s| format!("slot {} '{}'", s, label_of(*s)))
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
        let slot = find_slot(m, key)?;
        let session = m.open_session(slot, read_write).map_err(|e| {
            signer_error(format!(
                "PKCS#11: cannot open a session on {}: {}",
                key.token_name(),
                ck(&e)
            ))
        })?;
        if let Some(pin) = &key.pin {
            match session.login(pin) {
                Ok(()) => {}
                Err(e) if e.rv == CKR_USER_ALREADY_LOGGED_IN => {}
                Err(e) if e.rv == CKR_PIN_INCORRECT => {
                    return Err(signer_error(format!(
                        "PKCS#11: {} refused the PIN (CKR_PIN_INCORRECT)",
                        key.token_name()
                    )))
                }
                Err(e) if e.rv == CKR_PIN_LOCKED => {
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
        class: CK_OBJECT_CLASS,
        label: &str,
    ) -> Result<Vec<CK_OBJECT_HANDLE>, Error> {
        session
            .find(&[
                Attr(CKA_CLASS, Value::Ulong(class)),
                Attr(CKA_LABEL, Value::Bytes(label.as_bytes())),
            ])
            .map_err(|e| signer_error(format!("PKCS#11: cannot search the token: {}", ck(&e))))
    }

    fn attribute_bytes(
        session: &Session,
        object: CK_OBJECT_HANDLE,
        ty: CK_ATTRIBUTE_TYPE,
    ) -> Option<Vec<u8>> {
        session.attribute(object, ty).ok()
    }

    /// The SPKI of a key object from its attributes: EC params and point, or modulus and
    /// exponent.
    fn public_of(session: &Session, object: CK_OBJECT_HANDLE) -> Option<PublicKey> {
        let spki = match (
            attribute_bytes(session, object, CKA_EC_PARAMS),
            attribute_bytes(session, object, CKA_EC_POINT),
        ) {
            (Some(params), Some(point)) => ec_spki(&params, unwrap_octet_string(&point)),
            _ => rsa_spki(
                &attribute_bytes(session, object, CKA_MODULUS)?,
                &attribute_bytes(session, object, CKA_PUBLIC_EXPONENT)?,
            ),
        };
        PublicKey::from_spki_der(&spki).ok()
    }

    fn private_key(session: &Session, key: &Pkcs11Key) -> Result<CK_OBJECT_HANDLE, Error> {
        let found = find(session, CKO_PRIVATE_KEY, &key.key_label)?;
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
        key: CK_OBJECT_HANDLE,
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
                Hash::Sha256 => (CKM_SHA256, CKG_MGF1_SHA256, DIGEST_INFO_SHA256),
                Hash::Sha384 => (CKM_SHA384, CKG_MGF1_SHA384, DIGEST_INFO_SHA384),
                Hash::Sha512 => (CKM_SHA512, CKG_MGF1_SHA512, DIGEST_INFO_SHA512),
            };
            let (mechanism, data) = if scheme.is_ecdsa() {
                (Mechanism::Plain(CKM_ECDSA), digest)
            } else if scheme.is_pss() {
                let params = CK_RSA_PKCS_PSS_PARAMS {
                    hashAlg: hash_mech,
                    mgf,
                    sLen: hash.len() as CK_ULONG,
                };
                (Mechanism::Pss(params), digest)
            } else {
                let mut data = prefix.to_vec();
                data.extend(digest);
                (Mechanism::Plain(CKM_RSA_PKCS), data)
            };
            let session = self.session.lock().unwrap_or_else(|p| p.into_inner());
            session.sign(mechanism, self.key, &data).map_err(|e| {
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
        let from_token = find(&session, CKO_PUBLIC_KEY, &key.key_label)?
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
        Ok(!find(&session, CKO_PRIVATE_KEY, &key.key_label)?.is_empty())
    }

    pub(super) fn key_id(key: &Pkcs11Key) -> Result<Vec<u8>, Error> {
        let session = session(key, false)?;
        let private = private_key(&session, key)?;
        Ok(attribute_bytes(&session, private, CKA_ID).unwrap_or_default())
    }

    pub(super) fn generate(
        key: &Pkcs11Key,
        algorithm: KeyAlgorithm,
    ) -> Result<Arc<dyn Signer>, Error> {
        let session = session(key, true)?;
        if !find(&session, CKO_PRIVATE_KEY, &key.key_label)?.is_empty() {
            return Err(signer_error(format!(
                "PKCS#11: {} already has a private key labelled '{}'; it is left as it is",
                key.token_name(),
                key.key_label
            )));
        }
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("no randomness: {e}")))?;
        let label = key.key_label.as_bytes();
        let ec_params = match algorithm {
            KeyAlgorithm::Rsa { .. } => Vec::new(),
            ec => ec_params_der(ec).unwrap_or_default(),
        };
        let mut public = vec![
            Attr(CKA_TOKEN, Value::Bool(true)),
            Attr(CKA_VERIFY, Value::Bool(true)),
            Attr(CKA_LABEL, Value::Bytes(label)),
            Attr(CKA_ID, Value::Bytes(&id)),
        ];
        let private = [
            Attr(CKA_TOKEN, Value::Bool(true)),
            Attr(CKA_PRIVATE, Value::Bool(true)),
            Attr(CKA_SENSITIVE, Value::Bool(true)),
            Attr(CKA_EXTRACTABLE, Value::Bool(false)),
            Attr(CKA_SIGN, Value::Bool(true)),
            Attr(CKA_LABEL, Value::Bytes(label)),
            Attr(CKA_ID, Value::Bytes(&id)),
        ];
        let mechanism = match algorithm {
            KeyAlgorithm::Rsa { bits } => {
                public.push(Attr(CKA_MODULUS_BITS, Value::Ulong(bits as CK_ULONG)));
                public.push(Attr(CKA_PUBLIC_EXPONENT, Value::Bytes(&[1, 0, 1])));
                CKM_RSA_PKCS_KEY_PAIR_GEN
            }
            _ => {
                public.push(Attr(CKA_EC_PARAMS, Value::Bytes(&ec_params)));
                CKM_EC_KEY_PAIR_GEN
            }
        };
        let (pub_handle, priv_handle) = session
            .generate_key_pair(mechanism, &public, &private)
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
        let id = attribute_bytes(&session, private, CKA_ID).unwrap_or_default();
        let subject = certificate_subject(der)
            .ok_or_else(|| Error::invalid("PKCS#11: the certificate to store cannot be parsed"))?;
        let old = find(&session, CKO_CERTIFICATE, &key.key_label)?;
        session
            .create_object(&[
                Attr(CKA_CLASS, Value::Ulong(CKO_CERTIFICATE)),
                Attr(CKA_CERTIFICATE_TYPE, Value::Ulong(CKC_X_509)),
                Attr(CKA_TOKEN, Value::Bool(true)),
                Attr(CKA_LABEL, Value::Bytes(key.key_label.as_bytes())),
                Attr(CKA_ID, Value::Bytes(&id)),
                Attr(CKA_SUBJECT, Value::Bytes(&subject)),
                Attr(CKA_VALUE, Value::Bytes(der)),
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

#[cfg(all(test, feature = "pkcs11"))]
mod tests {
    use super::*;

    fn open_error(module: &std::path::Path) -> Error {
        let key = Pkcs11Key {
            module: module.into(),
            key_label: "k".into(),
            ..Pkcs11Key::default()
        };
        open(&key, None).unwrap_err()
    }

    #[test]
    fn a_library_that_is_not_a_pkcs11_module_is_named() {
        // A shared library, but not a PKCS#11 module.
        let e = open_error("libc.so.6".as_ref());
        assert_eq!(e.kind, ErrorKind::Signer, "{e}");
        assert!(
            e.message.contains(
                "cannot load the module libc.so.6: it has no C_GetFunctionList (is it a PKCS#11 \
                 module?)"
            ),
            "{e}"
        );
        // Not a shared library at all.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-pkcs11.so");
        std::fs::write(&fake, b"not an ELF file").unwrap();
        let e = open_error(&fake);
        assert_eq!(e.kind, ErrorKind::Signer, "{e}");
        assert!(
            e.message
                .contains(&format!("cannot load the module {}: ", fake.display())),
            "{e}"
        );
    }
}
