//! The pending identity: registered (its certificate may be Active on the thing), written to
//! the store, but not proved by a connection yet.
//!
//! `pending.json` (same fields as `identity.json`) is written right after the certificate and
//! key, before the verification connection. So a run whose every verification connection
//! failed, that ran out of time, or that was killed while verifying leaves the identity in the
//! store instead of leftovers to delete; the next run verifies it before provisioning anything
//! new, and commits it if it connects. Until then `identity.json`, if any, is untouched.

use std::fs;

use std::path::PathBuf;

use super::{
    completed, leftover, store_error, IdentityStore, Metadata, Staged, StoredIdentity, CERT_PREFIX,
};
use crate::error::Error;
use crate::log::{fp_log, Level};
use crate::x509;

/// Name of the pending identity's metadata file.
pub const PENDING_FILE: &str = "pending.json";

/// What the store holds as pending.
#[derive(Debug)]
pub enum Pending {
    /// A pending identity whose files are there, match and are valid for this endpoint: verify
    /// it, then [`IdentityStore::commit_pending`] it.
    Usable(Box<StoredIdentity>),
    /// A pending identity that cannot be used (expired, another endpoint, files damaged);
    /// its certificate id (empty if `pending.json` cannot be read) and why.
    Unusable {
        /// The certificate `pending.json` names.
        certificate_id: String,
        /// Why it cannot be used.
        why: String,
    },
}

impl IdentityStore {
    /// [`IdentityStore::open`], also giving the ids of the certificates among the leftovers it
    /// removed: staged by a run that was stopped (killed) before it recorded or reported them,
    /// each possibly Active on a thing.
    pub fn open_reporting(dir: impl Into<PathBuf>) -> Result<(IdentityStore, Vec<String>), Error> {
        let store = IdentityStore::open_uncleaned(dir.into())?;
        let ids = match store.named_files()? {
            Some(keep) => store.leftover_certificate_ids(&keep)?,
            None => Vec::new(),
        };
        store.clean()?;
        Ok((store, ids))
    }

    fn leftover_certificate_ids(&self, keep: &[String]) -> Result<Vec<String>, Error> {
        let entries = fs::read_dir(&self.dir).map_err(|e| store_error("list", &self.dir, e))?;
        let mut ids = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(CERT_PREFIX) || !leftover(name, keep) {
                continue;
            }
            // The certificate id is the SHA-256 of the leaf's DER, as AWS IoT computes it.
            let leaf = fs::read(entry.path())
                .ok()
                .and_then(|pem| x509::first_certificate(&pem));
            if let Some(leaf) = leaf {
                let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
                ids.push(digest.as_ref().iter().map(|b| format!("{b:02x}")).collect());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Removes the files of a staged identity that will not be kept (already reported).
    pub fn discard(&self, staged: &Staged) -> Result<(), Error> {
        self.remove_registering_file()?;
        for name in [&staged.certificate_file, &staged.private_key_file] {
            // No key file when the key is in a token or behind a signer.
            if name.is_empty() {
                continue;
            }
            let path = self.dir.join(name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(store_error("remove", &path, e)),
            }
        }
        self.sync_dir()
    }

    /// Records the staged identity as pending: until it is committed or dropped, opening the
    /// store keeps its files.
    pub fn keep_pending(&self, staged: &Staged, metadata: Metadata) -> Result<(), Error> {
        self.write_metadata(PENDING_FILE, &completed(staged, metadata))?;
        self.remove_registering_file()?;
        self.sync_dir()
    }

    /// The pending identity for `endpoint`, if there is one.
    pub fn pending(&self, endpoint: &str) -> Result<Option<Pending>, Error> {
        let metadata = match self.read_metadata(PENDING_FILE)? {
            None => return Ok(None),
            Some(Err(why)) => {
                return Ok(Some(Pending::Unusable {
                    certificate_id: String::new(),
                    why,
                }))
            }
            Some(Ok(m)) => m,
        };
        let mut files = self.files_of(&metadata.certificate_file, &metadata.private_key_file);
        files.metadata = self.dir.join(PENDING_FILE);
        Ok(Some(match self.check(&metadata, &files, endpoint) {
            Ok(()) => Pending::Usable(Box::new(StoredIdentity { metadata, files })),
            Err(why) => Pending::Unusable {
                certificate_id: metadata.certificate_id,
                why,
            },
        }))
    }

    /// Commits the pending identity `identity` (from [`IdentityStore::pending`]), now
    /// verified: it becomes `identity.json`, and the previous identity's files go.
    pub fn commit_pending(&self, identity: &StoredIdentity) -> Result<StoredIdentity, Error> {
        self.commit_metadata(identity.metadata.clone())
    }

    /// Forgets the pending identity and removes its files (the caller has reported its
    /// certificate as abandoned).
    pub fn drop_pending(&self) -> Result<(), Error> {
        self.remove_pending_file()?;
        self.sync_dir()?;
        self.clean()
    }

    pub(super) fn remove_pending_file(&self) -> Result<(), Error> {
        let path = self.dir.join(PENDING_FILE);
        match fs::remove_file(&path) {
            Ok(()) => {
                fp_log!(Level::Debug, "identity store: {PENDING_FILE} removed");
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(store_error("remove", &path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{identity, metadata, names};
    use super::super::{Found, METADATA_FILE};
    use super::*;

    #[test]
    fn a_pending_identity_survives_opening_until_committed_or_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let store = IdentityStore::open(tmp.path()).unwrap();
        let (id1, cert1, key1) = identity();
        let first = store
            .commit(&store.stage(&id1, &cert1, &key1).unwrap(), metadata("h"))
            .unwrap();
        let (_, cert2, key2) = identity();
        let id2 = "cd".repeat(32);
        let staged = store.stage(&id2, &cert2, &key2).unwrap();
        let mut m = metadata("h");
        m.certificate_id = id2.clone();
        store.keep_pending(&staged, m).unwrap();
        // Reopening (the next run) keeps both identities' files.
        let store = IdentityStore::open(tmp.path()).unwrap();
        assert_eq!(names(tmp.path()).len(), 6, "{:?}", names(tmp.path()));
        let Some(Pending::Usable(p)) = store.pending("h").unwrap() else {
            panic!("no usable pending identity")
        };
        assert_eq!(p.metadata.certificate_id, id2);
        assert!(matches!(
            store.pending("other").unwrap(),
            Some(Pending::Unusable { certificate_id, .. }) if certificate_id == id2
        ));
        // The committed identity is untouched until the pending one is committed.
        let Found::Usable(still) = store.load("h").unwrap() else {
            panic!("the committed identity was disturbed")
        };
        assert_eq!(still.files, first.files);
        let committed = store.commit_pending(&p).unwrap();
        assert_eq!(committed.files.metadata, tmp.path().join(METADATA_FILE));
        assert!(store.pending("h").unwrap().is_none());
        let Found::Usable(now) = store.load("h").unwrap() else {
            panic!("the pending identity was not committed")
        };
        assert_eq!(now.metadata.certificate_id, id2);
        assert_eq!(names(tmp.path()).len(), 3, "{:?}", names(tmp.path()));
    }

    #[test]
    fn leftover_certificates_are_named_by_id_when_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = IdentityStore::open(tmp.path()).unwrap();
        let (id, cert, key) = identity();
        let staged = store.stage(&id, &cert, &key).unwrap();
        let der = x509::first_certificate(cert.as_bytes()).unwrap();
        let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
        let real_id: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let (_, ids) = IdentityStore::open_reporting(tmp.path()).unwrap();
        assert_eq!(ids, [real_id]);
        assert!(names(tmp.path()).is_empty());
        // Discarded files are gone at once, and not reported again.
        let staged2 = store.stage(&id, &cert, &key).unwrap();
        assert_eq!(staged2.certificate_file, staged.certificate_file);
        store.discard(&staged2).unwrap();
        assert!(names(tmp.path()).is_empty());
        let (_, ids) = IdentityStore::open_reporting(tmp.path()).unwrap();
        assert!(ids.is_empty());
    }

    #[test]
    fn a_dropped_or_damaged_pending_identity_goes_with_its_files() {
        let tmp = tempfile::tempdir().unwrap();
        let store = IdentityStore::open(tmp.path()).unwrap();
        let (id, cert, key) = identity();
        let staged = store.stage(&id, &cert, &key).unwrap();
        store.keep_pending(&staged, metadata("h")).unwrap();
        store.drop_pending().unwrap();
        assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));
        let staged = store.stage(&id, &cert, &key).unwrap();
        store.keep_pending(&staged, metadata("h")).unwrap();
        fs::write(tmp.path().join(PENDING_FILE), b"{ not json").unwrap();
        // Unreadable: every file stays until the run drops it.
        let store = IdentityStore::open(tmp.path()).unwrap();
        assert_eq!(names(tmp.path()).len(), 3);
        assert!(matches!(
            store.pending("h").unwrap(),
            Some(Pending::Unusable { certificate_id, .. }) if certificate_id.is_empty()
        ));
        store.drop_pending().unwrap();
        assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));
    }
}
