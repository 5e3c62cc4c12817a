//! The device key when it is not a file: a key in a PKCS#11 token or behind the caller's
//! signer. Where it is goes into `identity.json` ([`KeyLocation`]), so that reusing the
//! identity connects with the same key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::options::KeySource;
use super::store::StoredIdentity;
use crate::client::{Pem, PrivateKey};
use crate::error::Error;
use crate::keygen::CsrSubject;
use crate::log::{fp_log, Level};
use crate::pkcs11::{self, Pkcs11Key};
use crate::signer::{PublicKey, Signer};

/// Where a stored identity's private key is. Recorded in `identity.json` as `"key"`; never
/// holds a PIN or key material.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", try_from = "StoredLocation")]
pub enum KeyLocation {
    /// A PEM file in the store (`privateKeyFile`). Identities written before this field
    /// existed are of this kind.
    #[default]
    File,
    /// A key in a PKCS#11 token; reusing the identity needs the PIN again (from
    /// [`KeySource::Pkcs11`]).
    #[serde(rename_all = "camelCase")]
    Pkcs11 {
        /// The module's path.
        module: PathBuf,
        /// The token's label, if it was given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_label: Option<String>,
        /// The token's slot id, if it was given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        slot_id: Option<u64>,
        /// `CKA_LABEL` of the private key.
        key_label: String,
        /// `CKA_ID` of the private key, hex (empty if the token gave none).
        #[serde(default)]
        key_id: String,
    },
    /// The caller's [`Signer`]; reusing the identity needs it again ([`KeySource::Signer`]).
    Signer,
}

/// [`KeyLocation`] as `identity.json` has it, read as a plain struct: serde reads an internally
/// tagged enum through a buffered copy of the object, which cost 14,752 bytes of the C library
/// for this one type. The conversion gives serde's own messages.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredLocation {
    kind: String,
    module: Option<PathBuf>,
    #[serde(default)]
    token_label: Option<String>,
    #[serde(default)]
    slot_id: Option<u64>,
    key_label: Option<String>,
    #[serde(default)]
    key_id: String,
}

impl TryFrom<StoredLocation> for KeyLocation {
    type Error = String;

    fn try_from(s: StoredLocation) -> Result<Self, String> {
        let missing = |field: &str| format!("missing field `{field}`");
        match s.kind.as_str() {
            "file" => Ok(KeyLocation::File),
            "signer" => Ok(KeyLocation::Signer),
            "pkcs11" => Ok(KeyLocation::Pkcs11 {
                module: s.module.ok_or_else(|| missing("module"))?,
                token_label: s.token_label,
                slot_id: s.slot_id,
                key_label: s.key_label.ok_or_else(|| missing("keyLabel"))?,
                key_id: s.key_id,
            }),
            other => Err(format!(
                "unknown variant `{other}`, expected one of `file`, `pkcs11`, `signer`"
            )),
        }
    }
}

impl KeyLocation {
    /// `file`, `pkcs11` or `signer`.
    pub fn kind(&self) -> &'static str {
        match self {
            KeyLocation::File => "file",
            KeyLocation::Pkcs11 { .. } => "pkcs11",
            KeyLocation::Signer => "signer",
        }
    }
}

/// The key of a new identity, as the run holds it until the identity is committed.
#[derive(Clone)]
pub(super) enum NewKey {
    /// PEM, written to the store; wiped when dropped.
    Pem(Zeroizing<String>),
    /// A key that stays where it is; `store_in` is the token to store the certificate in.
    External {
        signer: Arc<dyn Signer>,
        location: KeyLocation,
        store_in: Option<Box<Pkcs11Key>>,
    },
}

impl NewKey {
    pub(super) fn location(&self) -> KeyLocation {
        match self {
            NewKey::Pem(_) => KeyLocation::File,
            NewKey::External { location, .. } => location.clone(),
        }
    }
}

/// A CSR signed by `signer`, with `subject`.
fn csr_with(signer: Arc<dyn Signer>, subject: &CsrSubject) -> Result<String, Error> {
    crate::signer::signed_request(signer.as_ref(), &subject.to_der())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// For [`KeySource::Pkcs11`] and [`KeySource::Signer`]: the key (the token's key of that
/// label, generated there if it has none) and its CSR. Blocking (token I/O, the signer).
/// `None` for the other sources.
pub(super) fn external_csr(
    source: &KeySource,
    subject: &CsrSubject,
) -> Result<Option<(String, NewKey)>, Error> {
    let (signer, location, store_in) = match source {
        KeySource::Pkcs11 {
            key,
            algorithm,
            store_certificate,
        } => {
            let (signer, generated) = pkcs11::open_or_generate(key, *algorithm)?;
            if !generated {
                fp_log!(
                    Level::Info,
                    "PKCS#11: the token already has a key labelled '{}' ({}): it gets the new \
                     certificate",
                    key.key_label,
                    signer.public_key().algorithm()
                );
            }
            let location = KeyLocation::Pkcs11 {
                module: key.module.clone(),
                token_label: key.token_label.clone(),
                slot_id: key.slot_id,
                key_label: key.key_label.clone(),
                key_id: pkcs11::key_id(key).map(|id| hex(&id)).unwrap_or_default(),
            };
            let store_in = store_certificate.then(|| Box::new(key.clone()));
            (signer, location, store_in)
        }
        KeySource::Signer(signer) => (signer.clone(), KeyLocation::Signer, None),
        _ => return Ok(None),
    };
    let csr = csr_with(signer.clone(), subject)?;
    Ok(Some((
        csr,
        NewKey::External {
            signer,
            location,
            store_in,
        },
    )))
}

/// The private key to reuse `identity` with, given the options' key source: the store's key
/// file, the token's key (opened with the PIN of [`KeySource::Pkcs11`]) or the caller's
/// signer, checked against the stored certificate. `Err` says why the identity cannot be
/// reused (it is then provisioned anew). Blocking.
pub(super) fn stored_key(
    identity: &StoredIdentity,
    source: &KeySource,
) -> Result<PrivateKey, String> {
    key_at(
        &identity.metadata.key_location,
        &identity.files.certificate,
        &identity.files.private_key,
        source,
    )
}

/// The key of a new identity not committed yet (a create result a stopped run left, or a
/// pending identity) whose key is at `location`, not a file, for the certificate in
/// `certificate`: reached as [`stored_key`] does, with the token to store the certificate in
/// when `source` asks for that. Blocking.
pub(super) fn reopen(
    location: &KeyLocation,
    certificate: &Path,
    source: &KeySource,
) -> Result<NewKey, String> {
    match key_at(location, certificate, Path::new(""), source)? {
        PrivateKey::Signer(signer) => Ok(NewKey::External {
            signer,
            location: location.clone(),
            store_in: store_in(location, source),
        }),
        _ => Err("its key is a file in the store, not in a token or behind a signer".to_owned()),
    }
}

/// The token to store a new certificate in, for a key in a token when `source` asks for it.
pub(super) fn store_in(location: &KeyLocation, source: &KeySource) -> Option<Box<Pkcs11Key>> {
    match (location, source) {
        (
            KeyLocation::Pkcs11 { .. },
            KeySource::Pkcs11 {
                key,
                store_certificate: true,
                ..
            },
        ) => Some(Box::new(key.clone())),
        _ => None,
    }
}

fn key_at(
    location: &KeyLocation,
    certificate: &Path,
    private_key: &Path,
    source: &KeySource,
) -> Result<PrivateKey, String> {
    let cert_key = || {
        std::fs::read(certificate)
            .map_err(|e| format!("{}: {e}", certificate.display()))
            .and_then(|pem| PublicKey::from_pem(&pem).map_err(|e| e.message))
    };
    let signer: Arc<dyn Signer> = match (location, source) {
        (KeyLocation::File, _) => return Ok(PrivateKey::Pem(Pem::file(private_key))),
        (
            KeyLocation::Pkcs11 {
                module,
                token_label,
                slot_id,
                key_label,
                ..
            },
            KeySource::Pkcs11 { key, .. },
        ) => {
            if &key.module != module
                || &key.key_label != key_label
                || &key.token_label != token_label
                || &key.slot_id != slot_id
            {
                return Err(format!(
                    "its key is '{key_label}' in another PKCS#11 token or module than the \
                     options name ('{}' of {})",
                    key.key_label,
                    key.module.display()
                ));
            }
            let stored = Pkcs11Key {
                module: module.clone(),
                token_label: token_label.clone(),
                slot_id: *slot_id,
                pin: key.pin.clone(),
                key_label: key_label.clone(),
            };
            let known = cert_key()?;
            pkcs11::open(&stored, Some(&known)).map_err(|e| e.message)?
        }
        (KeyLocation::Signer, KeySource::Signer(signer)) => signer.clone(),
        (location, _) => {
            return Err(format!(
                "its key is in a {} and the options give no {} device key to reach it with",
                match location {
                    KeyLocation::Signer => "signer",
                    _ => "PKCS#11 token",
                },
                location.kind()
            ))
        }
    };
    if signer.public_key() != &cert_key()? {
        return Err("its certificate is not for the key the options give".to_owned());
    }
    Ok(PrivateKey::Signer(signer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<KeyLocation, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn key_locations_read_back_as_written() {
        let all = [
            KeyLocation::File,
            KeyLocation::Signer,
            KeyLocation::Pkcs11 {
                module: "/usr/lib/softhsm/libsofthsm2.so".into(),
                token_label: Some("fleet".into()),
                slot_id: Some(7),
                key_label: "device".into(),
                key_id: "0a0b".into(),
            },
            KeyLocation::Pkcs11 {
                module: "/m.so".into(),
                token_label: None,
                slot_id: None,
                key_label: "k".into(),
                key_id: String::new(),
            },
        ];
        for location in all {
            let json = serde_json::to_string(&location).unwrap();
            assert_eq!(read(&json).unwrap(), location, "{json}");
        }
    }

    #[test]
    fn a_bad_key_location_is_named() {
        let e = read(r#"{"kind": "tpm"}"#).unwrap_err();
        assert!(
            e.contains("unknown variant `tpm`, expected one of `file`, `pkcs11`, `signer`"),
            "{e}"
        );
        let e = read(r#"{"kind": "pkcs11", "keyLabel": "k"}"#).unwrap_err();
        assert!(e.contains("missing field `module`"), "{e}");
        let e = read(r#"{"kind": "pkcs11", "module": "/m.so"}"#).unwrap_err();
        assert!(e.contains("missing field `keyLabel`"), "{e}");
        let e = read(r#"{"module": "/m.so"}"#).unwrap_err();
        assert!(e.contains("missing field `kind`"), "{e}");
        // Fields of other kinds are ignored, as before.
        assert_eq!(
            read(r#"{"kind": "signer", "keyLabel": "k"}"#).unwrap(),
            KeyLocation::Signer
        );
    }
}
