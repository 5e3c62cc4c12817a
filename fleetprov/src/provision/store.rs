//! The identity store: one directory holding a device's certificate, private key and what the
//! service said about it.
//!
//! Files (the certificate and key names carry the first 16 hex digits of the certificate id,
//! so a new identity never overwrites the one in use):
//!
//! | file | contents |
//! |---|---|
//! | `identity.json` | thing name, certificate id, device configuration, endpoint, port, client id, key type, file names, times; written last: the commit point |
//! | `certificate-<id>.pem` | the device certificate (0644) |
//! | `private-key-<id>.pem` | its private key (0600); none when the key is in a PKCS#11 token or behind a signer (`identity.json` then says where it is) |
//! | `pending.json` | like `identity.json`, for an identity registered but not verified yet (see [`Pending`]) |
//! | `registering.json` | a create result not registered yet: its files, where its key is and its ownership token (0600, see [`Registering`]) |
//!
//! Every file is written to a temporary name (`.<name>.tmp`), fsynced, renamed into place, and
//! the directory fsynced. An identity exists only once `identity.json` names it, so a process
//! killed at any point leaves either the previous identity or the new one, never a mixture;
//! leftovers (temporary files, certificate and key files neither `identity.json` nor
//! `pending.json` names) are removed the next time the store is opened. The directory is
//! created 0700.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, ErrorKind};
use crate::log::{fp_log, Level};
use crate::signer::PublicKey;
use crate::x509;

mod pending;
mod registering;
pub use super::device_key::KeyLocation;
pub use pending::{Pending, PENDING_FILE};
pub use registering::{Registering, REGISTERING_FILE};

/// Name of the metadata file, the store's commit point.
pub const METADATA_FILE: &str = "identity.json";
const CERT_PREFIX: &str = "certificate-";
const KEY_PREFIX: &str = "private-key-";
const TMP_SUFFIX: &str = ".tmp";
/// A certificate this close to its end is treated as expired: a connection made with it could
/// outlive it.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);

/// What `identity.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Layout version of this file (1).
    pub version: u32,
    /// The thing RegisterThing created or updated.
    pub thing_name: String,
    /// The certificate's id (SHA-256 of its DER, hex).
    pub certificate_id: String,
    /// The template's `DeviceConfiguration`.
    pub device_configuration: BTreeMap<String, String>,
    /// The endpoint the identity was provisioned at.
    pub endpoint: String,
    /// Its port.
    pub port: u16,
    /// The client id the identity was verified with.
    pub client_id: String,
    /// `ec-p256`, `ec-p384`, `rsa-2048`, `service` (CreateKeysAndCertificate), `user`,
    /// `pkcs11` or `signer`.
    pub key_type: String,
    /// Where the private key is: the file `private_key_file`, a PKCS#11 token (module, token,
    /// key label; never the PIN) or the caller's signer. Absent in files written before it
    /// existed, which are all of the file kind.
    #[serde(default, rename = "key")]
    pub key_location: KeyLocation,
    /// File name of the certificate, in the store.
    pub certificate_file: String,
    /// File name of the private key, in the store; empty when the key is not a file.
    pub private_key_file: String,
    /// When the identity was committed, seconds since the Unix epoch.
    pub provisioned_at: u64,
    /// The certificate's `notAfter`, seconds since the Unix epoch.
    pub not_after: u64,
}

/// A committed identity's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFiles {
    /// The certificate, PEM.
    pub certificate: PathBuf,
    /// The private key, PEM (0600); empty when the key is not a file (see
    /// [`Metadata::key_location`]).
    pub private_key: PathBuf,
    /// `identity.json`.
    pub metadata: PathBuf,
}

/// A committed identity, checked.
#[derive(Debug, Clone)]
pub struct StoredIdentity {
    /// What `identity.json` says.
    pub metadata: Metadata,
    /// Where the files are.
    pub files: StoredFiles,
}

/// What opening the store found.
#[derive(Debug)]
pub enum Found {
    /// No committed identity.
    Nothing,
    /// A committed identity that must not be used, and why (expired, key does not match,
    /// another endpoint, unreadable): it stays until a new one replaces it.
    Unusable(String),
    /// A usable identity.
    Usable(Box<StoredIdentity>),
}

/// Certificate and key written under their final names, not committed yet.
#[derive(Debug, Clone)]
pub struct Staged {
    /// File name of the certificate.
    pub certificate_file: String,
    /// File name of the key.
    pub private_key_file: String,
    not_after: u64,
}

/// Refuses a certificate whose leaf (the first certificate of `certificatePem`; the rest of a
/// chain are its issuers) does not carry the public key of `private_key_pem`: an answer meant
/// for another device, or a key mixed up with another's. Nothing is written then.
fn check_key_of(
    certificate_id: &str,
    leaf: &rustls::pki_types::CertificateDer<'static>,
    private_key_pem: &str,
) -> Result<(), Error> {
    match x509::key_matches(leaf, private_key_pem.as_bytes()) {
        Some(true) => Ok(()),
        Some(false) => Err(Error::bad_reply(format!(
            "identity store: certificate {certificate_id} is not for the device's key (its \
             public key differs from the key's): refused, nothing written"
        ))),
        None => Err(Error::new(
            ErrorKind::Store,
            format!(
                "identity store: the private key for certificate {certificate_id} cannot be \
                 read, so it cannot be checked against the certificate: nothing written"
            ),
        )),
    }
}

/// A certificate or key file that no identity in `keep` names.
fn leftover(name: &str, keep: &[String]) -> bool {
    (name.starts_with(CERT_PREFIX) || name.starts_with(KEY_PREFIX))
        && !keep.iter().any(|k| k == name)
}

/// `metadata` completed with what the store knows of `staged`.
fn completed(staged: &Staged, mut metadata: Metadata) -> Metadata {
    metadata.version = 1;
    metadata.certificate_file = staged.certificate_file.clone();
    metadata.private_key_file = staged.private_key_file.clone();
    metadata.not_after = staged.not_after;
    metadata
}

/// An identity store directory.
#[derive(Debug, Clone)]
pub struct IdentityStore {
    dir: PathBuf,
}

fn store_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(
        ErrorKind::Store,
        format!("identity store: cannot {what} {}: {e}", path.display()),
    )
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl IdentityStore {
    /// Opens the store at `dir`, creating the directory (0700) if needed, and removes what a
    /// killed run left behind. [`ErrorKind::Store`] if it cannot be created or read, or is not
    /// a directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<IdentityStore, Error> {
        let store = IdentityStore::open_uncleaned(dir.into())?;
        store.clean()?;
        Ok(store)
    }

    /// [`IdentityStore::open`] without the clean-up.
    fn open_uncleaned(dir: PathBuf) -> Result<IdentityStore, Error> {
        if dir.as_os_str().is_empty() {
            return Err(Error::invalid("the identity store directory is empty"));
        }
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::Store,
                    format!("identity store: {} is not a directory", dir.display()),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| store_error("create", &dir, e))?,
            Err(e) => return Err(store_error("read", &dir, e)),
        }
        Ok(IdentityStore { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn committed(&self) -> Result<Option<Result<Metadata, String>>, Error> {
        self.read_metadata(METADATA_FILE)
    }

    /// The metadata file `name` (`identity.json` or `pending.json`): `None` when absent, the
    /// reason when it cannot be parsed.
    fn read_metadata(&self, name: &str) -> Result<Option<Result<Metadata, String>>, Error> {
        let path = self.dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice::<Metadata>(&bytes)
                    .map_err(|e| format!("{} is not valid: {e}", path.display())),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(store_error("read", &path, e)),
        }
    }

    /// Removes temporary files and certificate or key files that neither the committed nor the
    /// pending identity names. Files of other names are never touched.
    fn clean(&self) -> Result<(), Error> {
        // An unreadable metadata file keeps every file: nothing here can tell which are its,
        // and a new identity replaces them all.
        let Some(keep) = self.named_files()? else {
            return self.remove_temporaries();
        };
        self.remove_matching(|name| name.ends_with(TMP_SUFFIX) || leftover(name, &keep))
    }

    /// The files the committed and the pending identity name; `None` if either metadata file
    /// cannot be read.
    fn named_files(&self) -> Result<Option<Vec<String>>, Error> {
        let mut keep: Vec<String> = self.registering_names();
        for name in [METADATA_FILE, PENDING_FILE] {
            match self.read_metadata(name)? {
                Some(Ok(m)) => keep.extend([m.certificate_file, m.private_key_file]),
                Some(Err(_)) => return Ok(None),
                None => {}
            }
        }
        Ok(Some(keep))
    }

    fn remove_temporaries(&self) -> Result<(), Error> {
        self.remove_matching(|name| name.starts_with('.') && name.ends_with(TMP_SUFFIX))
    }

    fn remove_matching(&self, doomed: impl Fn(&str) -> bool) -> Result<(), Error> {
        let entries = fs::read_dir(&self.dir).map_err(|e| store_error("list", &self.dir, e))?;
        let mut removed = false;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if doomed(name) {
                let path = entry.path();
                fp_log!(Level::Info, "identity store: removing leftover {name}");
                fs::remove_file(&path).map_err(|e| store_error("remove", &path, e))?;
                removed = true;
            }
        }
        if removed {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn sync_dir(&self) -> Result<(), Error> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| store_error("sync", &self.dir, e))
    }

    /// Reads and checks the committed identity for `endpoint`: its files are there, the key
    /// belongs to the certificate, the certificate is valid now and for at least another
    /// minute, and it was made for this endpoint.
    pub fn load(&self, endpoint: &str) -> Result<Found, Error> {
        let metadata = match self.committed()? {
            None => return Ok(Found::Nothing),
            Some(Err(why)) => return Ok(Found::Unusable(why)),
            Some(Ok(m)) => m,
        };
        let files = self.files_of(&metadata.certificate_file, &metadata.private_key_file);
        match self.check(&metadata, &files, endpoint) {
            Ok(()) => Ok(Found::Usable(Box::new(StoredIdentity { metadata, files }))),
            Err(why) => Ok(Found::Unusable(why)),
        }
    }

    fn files_of(&self, certificate_file: &str, private_key_file: &str) -> StoredFiles {
        StoredFiles {
            certificate: self.dir.join(certificate_file),
            private_key: if private_key_file.is_empty() {
                PathBuf::new()
            } else {
                self.dir.join(private_key_file)
            },
            metadata: self.dir.join(METADATA_FILE),
        }
    }

    fn check(&self, m: &Metadata, files: &StoredFiles, endpoint: &str) -> Result<(), String> {
        if !m.endpoint.eq_ignore_ascii_case(endpoint) {
            return Err(format!(
                "it was provisioned for {}, not {endpoint}",
                m.endpoint
            ));
        }
        for name in [&m.certificate_file, &m.private_key_file] {
            if name.contains('/') || name.starts_with('.') {
                return Err(format!("it names the file {name:?} outside the store"));
            }
        }
        let cert_pem = fs::read(&files.certificate)
            .map_err(|e| format!("{}: {e}", files.certificate.display()))?;
        let cert = x509::first_certificate(&cert_pem)
            .ok_or_else(|| format!("{} holds no certificate", files.certificate.display()))?;
        let validity = x509::validity(&cert)
            .ok_or_else(|| format!("{} is not a valid certificate", files.certificate.display()))?;
        let now = SystemTime::now();
        if now + EXPIRY_MARGIN >= validity.not_after {
            return Err(format!(
                "its certificate expired (notAfter {} s after the epoch)",
                unix_secs(validity.not_after)
            ));
        }
        if now < validity.not_before {
            return Err("its certificate is not valid yet (is the clock right?)".to_owned());
        }
        // A key in a token or a signer is checked by the run, which can reach it.
        if m.key_location != KeyLocation::File {
            return Ok(());
        }
        let key_pem = fs::read(&files.private_key)
            .map(Zeroizing::new)
            .map_err(|e| format!("{}: {e}", files.private_key.display()))?;
        match x509::key_matches(&cert, &key_pem) {
            Some(true) => Ok(()),
            Some(false) => Err("its private key does not match its certificate".to_owned()),
            None => Err(format!(
                "{} holds no usable private key",
                files.private_key.display()
            )),
        }
    }

    /// Writes the certificate and key of a new identity under their final names (durably),
    /// without committing it: until [`IdentityStore::commit`] the store still holds the
    /// previous identity, and a crash leaves files that the next open removes.
    pub fn stage(
        &self,
        certificate_id: &str,
        certificate_pem: &str,
        private_key_pem: &str,
    ) -> Result<Staged, Error> {
        self.stage_with(certificate_id, certificate_pem, |leaf| {
            check_key_of(certificate_id, leaf, private_key_pem).map(|()| Some(private_key_pem))
        })
    }

    /// As [`IdentityStore::stage`] for a key that is not written (in a token, behind a
    /// signer): only the certificate, which must carry `public_key`.
    pub fn stage_certificate(
        &self,
        certificate_id: &str,
        certificate_pem: &str,
        public_key: &PublicKey,
    ) -> Result<Staged, Error> {
        self.stage_with(certificate_id, certificate_pem, |leaf| {
            match PublicKey::from_certificate_der(leaf) {
                Ok(k) if &k == public_key => Ok(None),
                _ => Err(Error::bad_reply(format!(
                    "identity store: certificate {certificate_id} is not for the device's key \
                     (its public key differs from the key's): refused, nothing written"
                ))),
            }
        })
    }

    /// Checks the certificate with `key_of` (which gives the key PEM to write, if any) and
    /// writes them.
    fn stage_with<'k>(
        &self,
        certificate_id: &str,
        certificate_pem: &str,
        key_of: impl FnOnce(
            &rustls::pki_types::CertificateDer<'static>,
        ) -> Result<Option<&'k str>, Error>,
    ) -> Result<Staged, Error> {
        let cert = x509::first_certificate(certificate_pem.as_bytes())
            .ok_or_else(|| Error::bad_reply("the new certificate is not PEM"))?;
        let validity = x509::validity(&cert)
            .ok_or_else(|| Error::bad_reply("the new certificate is not a valid certificate"))?;
        let private_key_pem = key_of(&cert)?;
        let tag: String = certificate_id
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(16)
            .collect();
        if tag.is_empty() {
            return Err(Error::bad_reply(format!(
                "certificate id {certificate_id:?} is not hex"
            )));
        }
        let certificate_file = format!("{CERT_PREFIX}{tag}.pem");
        let private_key_file = match private_key_pem {
            Some(pem) => {
                let name = format!("{KEY_PREFIX}{tag}.pem");
                self.write_file(&name, pem.as_bytes(), 0o600)?;
                name
            }
            None => String::new(),
        };
        self.write_file(&certificate_file, certificate_pem.as_bytes(), 0o644)?;
        self.sync_dir()?;
        Ok(Staged {
            certificate_file,
            private_key_file,
            not_after: unix_secs(validity.not_after),
        })
    }

    /// Paths of staged files.
    pub fn staged_files(&self, staged: &Staged) -> StoredFiles {
        self.files_of(&staged.certificate_file, &staged.private_key_file)
    }

    /// Commits a staged identity: writes `identity.json` (the commit point), then removes the
    /// previous identity's files.
    pub fn commit(&self, staged: &Staged, metadata: Metadata) -> Result<StoredIdentity, Error> {
        self.commit_metadata(completed(staged, metadata))
    }

    /// Writes `identity.json` from `metadata` (the commit point), forgets a pending identity
    /// (committed now, or already reported as abandoned), then removes files no longer named.
    fn commit_metadata(&self, mut metadata: Metadata) -> Result<StoredIdentity, Error> {
        metadata.provisioned_at = unix_secs(SystemTime::now());
        self.write_metadata(METADATA_FILE, &metadata)?;
        self.remove_pending_file()?;
        self.remove_registering_file()?;
        self.sync_dir()?;
        self.clean()?;
        Ok(StoredIdentity {
            files: self.files_of(&metadata.certificate_file, &metadata.private_key_file),
            metadata,
        })
    }

    /// Writes the metadata file `name` (through [`IdentityStore::write_file`]).
    fn write_metadata(&self, name: &str, metadata: &Metadata) -> Result<(), Error> {
        let json = serde_json::to_vec_pretty(metadata)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("{name}: {e}")))?;
        self.write_file(name, &json, 0o644)
    }

    /// Writes `name` through a temporary file created with `mode`, fsynced and renamed.
    fn write_file(&self, name: &str, bytes: &[u8], mode: u32) -> Result<(), Error> {
        let tmp = self.dir.join(format!(".{name}{TMP_SUFFIX}"));
        let path = self.dir.join(name);
        match fs::remove_file(&tmp) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(store_error("remove", &tmp, e)),
        }
        // create_new with the mode: the file is never readable by others, not even briefly.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| store_error("create", &tmp, e))?;
        let written = file
            .write_all(bytes)
            .and_then(|()| file.set_permissions(fs::Permissions::from_mode(mode)))
            .and_then(|()| file.sync_all());
        drop(file);
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(store_error("write", &tmp, e));
        }
        fs::rename(&tmp, &path).map_err(|e| store_error("rename into place", &path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn identity() -> (String, String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["dev".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let id = "ab".repeat(32);
        (id, cert.pem(), key.serialize_pem())
    }

    pub(crate) fn metadata(endpoint: &str) -> Metadata {
        Metadata {
            version: 0,
            thing_name: "thing-1".into(),
            certificate_id: String::new(),
            device_configuration: [("a".to_owned(), "b".to_owned())].into(),
            endpoint: endpoint.into(),
            port: 8883,
            client_id: "thing-1".into(),
            key_type: "ec-p256".into(),
            key_location: KeyLocation::File,
            certificate_file: String::new(),
            private_key_file: String::new(),
            provisioned_at: 0,
            not_after: 0,
        }
    }

    pub(crate) fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn stage_commit_load() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let store = IdentityStore::open(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(matches!(store.load("localhost").unwrap(), Found::Nothing));
        let (id, cert, key) = identity();
        let staged = store.stage(&id, &cert, &key).unwrap();
        // Staged is not committed: still nothing to load.
        assert!(matches!(store.load("localhost").unwrap(), Found::Nothing));
        let stored = store.commit(&staged, metadata("localhost")).unwrap();
        let mode = fs::metadata(&stored.files.private_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let Found::Usable(loaded) = store.load("LOCALHOST").unwrap() else {
            panic!("not usable")
        };
        assert_eq!(loaded.metadata, stored.metadata);
        assert_eq!(loaded.metadata.thing_name, "thing-1");
        assert!(loaded.metadata.not_after > unix_secs(SystemTime::now()));
        assert!(matches!(
            store.load("other.example").unwrap(),
            Found::Unusable(why) if why.contains("other.example")
        ));
        assert_eq!(
            names(&dir),
            [
                "certificate-abababababababab.pem",
                "identity.json",
                "private-key-abababababababab.pem"
            ]
        );
    }

    #[test]
    fn a_key_outside_the_store_leaves_only_the_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let store = IdentityStore::open(&dir).unwrap();
        let (id, cert, _) = identity();
        let public = PublicKey::from_pem(cert.as_bytes()).unwrap();
        let (_, other_cert, _) = identity();
        let e = store
            .stage_certificate(&id, &other_cert, &public)
            .unwrap_err();
        assert!(e.message.contains("not for the device's key"), "{e}");
        assert_eq!(names(&dir), Vec::<String>::new());
        let staged = store.stage_certificate(&id, &cert, &public).unwrap();
        let mut m = metadata("localhost");
        m.key_location = KeyLocation::Signer;
        let stored = store.commit(&staged, m).unwrap();
        assert_eq!(stored.files.private_key, PathBuf::new());
        assert_eq!(
            names(&dir),
            ["certificate-abababababababab.pem", "identity.json"]
        );
        let Found::Usable(loaded) = store.load("localhost").unwrap() else {
            panic!("not usable")
        };
        assert_eq!(loaded.metadata.key_location, KeyLocation::Signer);
        let json = fs::read_to_string(dir.join(METADATA_FILE)).unwrap();
        assert!(json.contains(r#""kind": "signer""#), "{json}");
        // A file written before the field existed reads as a key file.
        let old = json.replace(r#""key": {"#, r#""old": {"#);
        let m: Metadata = serde_json::from_str(&old).unwrap();
        assert_eq!(m.key_location, KeyLocation::File);
    }

    #[test]
    fn a_half_written_store_is_cleaned_and_never_used() {
        let tmp = tempfile::tempdir().unwrap();
        let store = IdentityStore::open(tmp.path()).unwrap();
        let (id, cert, key) = identity();
        // What a crash after staging, or in the middle of a write, leaves.
        store.stage(&id, &cert, &key).unwrap();
        fs::write(tmp.path().join(".identity.json.tmp"), b"{\"version\":").unwrap();
        fs::write(tmp.path().join("unrelated.txt"), b"mine").unwrap();
        let reopened = IdentityStore::open(tmp.path()).unwrap();
        assert!(matches!(
            reopened.load("localhost").unwrap(),
            Found::Nothing
        ));
        assert_eq!(names(tmp.path()), ["unrelated.txt"]);
    }

    #[test]
    fn a_new_identity_replaces_the_old_only_at_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let store = IdentityStore::open(tmp.path()).unwrap();
        let (id, cert, key) = identity();
        let first = store
            .commit(&store.stage(&id, &cert, &key).unwrap(), metadata("h"))
            .unwrap();
        let (_, cert2, key2) = identity();
        let id2 = "cd".repeat(32);
        let staged = store.stage(&id2, &cert2, &key2).unwrap();
        // Until the commit, the first identity is the one loaded, and a crash here keeps it.
        let Found::Usable(still) = IdentityStore::open(tmp.path()).unwrap().load("h").unwrap()
        else {
            panic!()
        };
        assert_eq!(still.files, first.files);
        // That open, as after a crash, removed the uncommitted files; stage again and commit.
        assert!(!store.staged_files(&staged).certificate.exists());
        let staged = store.stage(&id2, &cert2, &key2).unwrap();
        let second = store.commit(&staged, metadata("h")).unwrap();
        assert!(!first.files.certificate.exists() && !first.files.private_key.exists());
        let Found::Usable(now) = store.load("h").unwrap() else {
            panic!()
        };
        assert_eq!(now.files, second.files);
    }

    /// An EC certificate for `key`, issued by a CA of its own; PEM of the leaf then the CA.
    fn chain_for(key: &rcgen::KeyPair) -> String {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca.self_signed(&ca_key).unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["dev".into()])
            .unwrap()
            .signed_by(key, &ca, &ca_key)
            .unwrap();
        leaf.pem() + &ca.pem()
    }

    #[test]
    fn a_certificate_for_another_key_is_refused_before_anything_is_written() {
        let tmp = tempfile::tempdir().unwrap();
        let store = IdentityStore::open(tmp.path()).unwrap();
        let (id, cert, key) = identity();
        let first = store
            .commit(&store.stage(&id, &cert, &key).unwrap(), metadata("h"))
            .unwrap();
        let before = names(tmp.path());
        // Another device's certificate (and chain) with our key, and ours with another key.
        let mine = rcgen::KeyPair::generate().unwrap();
        let theirs = rcgen::KeyPair::generate().unwrap();
        let id2 = "cd".repeat(32);
        for (cert, key) in [
            (chain_for(&theirs), mine.serialize_pem()),
            (cert.clone(), mine.serialize_pem()),
            (chain_for(&mine), theirs.serialize_pem()),
        ] {
            let e = store.stage(&id2, &cert, &key).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadReply, "{e}");
            assert!(
                e.message.contains(&id2) && e.message.contains("not for the device's key"),
                "{e}"
            );
            assert_eq!(names(tmp.path()), before, "something was written");
        }
        let e = store
            .stage(&id2, &chain_for(&mine), "not a key")
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Store, "{e}");
        assert_eq!(names(tmp.path()), before);
        let Found::Usable(still) = store.load("h").unwrap() else {
            panic!("the identity in use was disturbed")
        };
        assert_eq!(still.files, first.files);
    }

    #[test]
    fn a_chain_is_stored_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let store = IdentityStore::open(tmp.path()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let chain = chain_for(&key);
        let staged = store
            .stage(&"ef".repeat(32), &chain, &key.serialize_pem())
            .unwrap();
        let stored = store.commit(&staged, metadata("h")).unwrap();
        assert_eq!(
            fs::read_to_string(&stored.files.certificate).unwrap(),
            chain
        );
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(matches!(store.load("h").unwrap(), Found::Usable(_)));
    }

    #[test]
    fn mismatched_key_corrupt_metadata_and_bad_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let store = IdentityStore::open(tmp.path()).unwrap();
        let (id, cert, key) = identity();
        let (_, _, other_key) = identity();
        let stored = store
            .commit(&store.stage(&id, &cert, &key).unwrap(), metadata("h"))
            .unwrap();
        // A key file replaced behind the store's back (stage refuses such a pair).
        fs::write(&stored.files.private_key, other_key).unwrap();
        assert!(matches!(
            store.load("h").unwrap(),
            Found::Unusable(why) if why.contains("does not match")
        ));
        fs::write(tmp.path().join(METADATA_FILE), b"{ not json").unwrap();
        assert!(matches!(store.load("h").unwrap(), Found::Unusable(_)));
        let file = tmp.path().join("plain-file");
        fs::write(&file, b"x").unwrap();
        assert_eq!(
            IdentityStore::open(&file).unwrap_err().kind,
            ErrorKind::Store
        );
        assert_eq!(
            IdentityStore::open(file.join("sub")).unwrap_err().kind,
            ErrorKind::Store
        );
    }
}
