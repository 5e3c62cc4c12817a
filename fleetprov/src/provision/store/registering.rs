//! A create result not registered yet: `registering.json` (0600) names its staged certificate
//! and key (or where the key is, when it is not a file) and holds its ownership token, so that the next run can send RegisterThing with the
//! same token after a run was stopped (killed, powered off) before RegisterThing answered,
//! instead of asking for another certificate. Removed once the identity is pending or
//! committed, or the certificate given up.

use std::fs;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{store_error, unix_secs, IdentityStore, KeyLocation, Staged};
use crate::error::{Error, ErrorKind};

/// Name of the file holding a create result not registered yet.
pub const REGISTERING_FILE: &str = "registering.json";

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    certificate_id: String,
    certificate_file: String,
    private_key_file: String,
    token: String,
    endpoint: String,
    /// When the create call answered, seconds since the Unix epoch.
    created_at: u64,
    not_after: u64,
    /// Where the key is; absent means the file `private_key_file`.
    #[serde(default, rename = "key")]
    key_location: KeyLocation,
}

/// A create result that cannot be resumed: its certificate id and why.
pub type Unusable = (String, String);

/// A create result a stopped run left in the store.
pub struct Registering {
    /// The certificate's id.
    pub certificate_id: String,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// Its private key, PEM; `None` when the key is not a file (see `key_location`).
    pub private_key_pem: Option<Zeroizing<String>>,
    /// Where its key is.
    pub key_location: KeyLocation,
    /// The ownership token the create call gave.
    pub token: String,
    /// How long ago the create call answered.
    pub age: Duration,
    /// Its files.
    pub staged: Staged,
}

impl IdentityStore {
    /// Records the staged create result `staged` (certificate `certificate_id`, ownership
    /// `token`, made at `endpoint`, its key at `key_location`) as not registered yet.
    pub fn keep_registering(
        &self,
        staged: &Staged,
        certificate_id: &str,
        token: &str,
        endpoint: &str,
        key_location: KeyLocation,
    ) -> Result<(), Error> {
        let record = Record {
            certificate_id: certificate_id.to_owned(),
            certificate_file: staged.certificate_file.clone(),
            private_key_file: staged.private_key_file.clone(),
            token: token.to_owned(),
            endpoint: endpoint.to_owned(),
            created_at: unix_secs(SystemTime::now()),
            not_after: staged.not_after,
            key_location,
        };
        let json = serde_json::to_vec(&record)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("{REGISTERING_FILE}: {e}")))?;
        self.write_file(REGISTERING_FILE, &json, 0o600)?;
        self.sync_dir()
    }

    fn registering_record(&self) -> Option<Record> {
        let bytes = fs::read(self.dir.join(REGISTERING_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The files the create result not registered yet names (none if there is none or its
    /// record cannot be read: its files are then leftovers).
    pub(super) fn registering_names(&self) -> Vec<String> {
        self.registering_record()
            .map(|r| vec![r.certificate_file, r.private_key_file])
            .unwrap_or_default()
    }

    /// The create result a stopped run left, if any: `Ok` when its files are there, match and
    /// were made for `endpoint`, else the certificate id and why it cannot be used.
    pub fn registering(
        &self,
        endpoint: &str,
    ) -> Result<Option<Result<Registering, Unusable>>, Error> {
        let Some(r) = self.registering_record() else {
            self.remove_registering_file()?;
            return Ok(None);
        };
        if !r.endpoint.eq_ignore_ascii_case(endpoint) {
            let why = format!("it was made at {}, not {endpoint}", r.endpoint);
            return Ok(Some(Err((r.certificate_id, why))));
        }
        let files = self.files_of(&r.certificate_file, &r.private_key_file);
        let file_key = r.key_location == KeyLocation::File;
        let read = fs::read_to_string(&files.certificate).and_then(|c| {
            let k = match file_key {
                true => Some(fs::read_to_string(&files.private_key).map(Zeroizing::new)?),
                false => None,
            };
            Ok((c, k))
        });
        let Ok((certificate_pem, private_key_pem)) = read else {
            let why = "its certificate or key file cannot be read".to_owned();
            return Ok(Some(Err((r.certificate_id, why))));
        };
        let age = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH + Duration::from_secs(r.created_at))
            .unwrap_or(Duration::ZERO);
        Ok(Some(Ok(Registering {
            certificate_id: r.certificate_id,
            certificate_pem,
            private_key_pem,
            key_location: r.key_location,
            token: r.token,
            age,
            staged: Staged {
                certificate_file: r.certificate_file,
                private_key_file: r.private_key_file,
                not_after: r.not_after,
            },
        })))
    }

    /// Forgets the record of the create result not registered yet and keeps its staged
    /// files: it is registered now (its token spent) and not recorded as pending (a
    /// rotation's new identity, which a stopped run leaves for the next run to report).
    pub fn registered(&self) -> Result<(), Error> {
        self.remove_registering_file()?;
        self.sync_dir()
    }

    /// Forgets the create result not registered yet and removes its files (the caller has
    /// reported its certificate).
    pub fn forget_registering(&self) -> Result<(), Error> {
        self.remove_registering_file()?;
        self.sync_dir()?;
        self.clean()
    }

    pub(super) fn remove_registering_file(&self) -> Result<(), Error> {
        let path = self.dir.join(REGISTERING_FILE);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(store_error("remove", &path, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{identity, names};
    use super::*;

    #[test]
    fn a_create_result_is_kept_with_its_token_until_discarded() {
        let tmp = tempfile::tempdir().unwrap();
        let store = IdentityStore::open(tmp.path()).unwrap();
        let (id, cert, key) = identity();
        let staged = store.stage(&id, &cert, &key).unwrap();
        store
            .keep_registering(&staged, &id, "token-1", "h", KeyLocation::File)
            .unwrap();
        let (store, leftovers) = IdentityStore::open_reporting(tmp.path()).unwrap();
        assert!(leftovers.is_empty());
        let Some(Ok(r)) = store.registering("h").unwrap() else {
            panic!("no create result")
        };
        assert_eq!(
            (r.certificate_id.as_str(), r.token.as_str()),
            (id.as_str(), "token-1")
        );
        assert_eq!(r.certificate_pem, cert);
        assert!(r.age < Duration::from_secs(60));
        assert!(matches!(store.registering("other").unwrap(), Some(Err((i, _))) if i == id));
        let mode = fs::metadata(tmp.path().join(REGISTERING_FILE)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        store.discard(&r.staged).unwrap();
        assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));
    }

    #[test]
    fn a_create_result_for_a_key_outside_the_store_says_where_the_key_is() {
        let tmp = tempfile::tempdir().unwrap();
        let store = IdentityStore::open(tmp.path()).unwrap();
        let (id, cert, _) = identity();
        let public = crate::signer::PublicKey::from_pem(cert.as_bytes()).unwrap();
        let staged = store.stage_certificate(&id, &cert, &public).unwrap();
        store
            .keep_registering(&staged, &id, "token-2", "h", KeyLocation::Signer)
            .unwrap();
        let (store, leftovers) = IdentityStore::open_reporting(tmp.path()).unwrap();
        assert!(leftovers.is_empty());
        let Some(Ok(r)) = store.registering("h").unwrap() else {
            panic!("no create result")
        };
        assert_eq!(r.key_location, KeyLocation::Signer);
        assert!(r.private_key_pem.is_none());
        assert_eq!(r.token, "token-2");
        // Only the certificate was written; discarding it removes it (no key file to remove).
        assert_eq!(names(tmp.path()).len(), 2, "{:?}", names(tmp.path()));
        store.discard(&r.staged).unwrap();
        assert!(names(tmp.path()).is_empty(), "{:?}", names(tmp.path()));
    }
}
