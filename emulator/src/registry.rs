//! The emulator's registry: certificates, ownership tokens, things and policies.
//!
//! Kept in memory and persisted in the state directory in two files:
//! - `registry.json`, a snapshot, always replaced whole (temporary file + rename);
//! - `registry.journal`, one JSON line per change appended since that snapshot.
//!
//! Rewriting the whole snapshot on every request would make each request cost as much as the
//! registry is big; the journal keeps a request's cost constant. Every change is a complete
//! record ("this certificate now looks like this"), so replaying a line twice is harmless, and
//! a line cut short by a crash is ignored. The journal is folded into a new snapshot at open
//! and whenever it grows larger than the snapshot.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::ca::Issued;
use crate::files;
use crate::files::{
    at_path, in_private_dir, invalid_data, open_append_private, read_if_exists, write_atomic,
};
use crate::template::{OverrideSetting, Provisioned, ThingSpec};

const SNAPSHOT_FILE: &str = "registry.json";
const JOURNAL_FILE: &str = "registry.journal";
/// The journal is folded into the snapshot once it is larger than this and than the snapshot.
const COMPACT_MIN_BYTES: u64 = 1 << 20;
/// An ownership token is valid for one hour, as on AWS.
pub const TOKEN_LIFETIME_SECS: u64 = 3600;
/// Used and expired tokens are remembered this long after expiry, so that a late retry is told
/// why it fails instead of "not valid".
const TOKEN_MEMORY_SECS: u64 = 86_400;
const TOKEN_BYTES: usize = 64;

/// Lifecycle of a certificate the emulator knows about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CertStatus {
    /// A claim certificate: may only use the fleet-provisioning topics.
    Claim,
    /// Issued by CreateKeysAndCertificate or CreateCertificateFromCsr, not yet registered.
    PendingActivation,
    Active,
    Inactive,
    Revoked,
}

/// A certificate in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    pub certificate_id: String,
    pub status: CertStatus,
    /// Absent for claims, which the registry knows by id only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_pem: Option<String>,
    /// The thing it is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thing: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<String>,
}

/// A registered thing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThingRecord {
    pub name: String,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thing_type: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_group: Option<String>,
    #[serde(default)]
    pub certificate_ids: Vec<String>,
    /// Policies attached to the thing's certificates.
    #[serde(default)]
    pub policies: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TokenRecord {
    /// The certificate the token registers.
    certificate_id: String,
    /// The client certificate of the connection that asked for it.
    requester: String,
    /// Unix seconds.
    expires_at: u64,
    spent: bool,
}

/// Why an ownership token was refused. `Display` gives the reply's errorMessage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Empty,
    Unknown,
    /// Issued to another client certificate.
    Foreign,
    Spent,
    Expired,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenError::Empty => "Certificate ownership token cannot be empty.",
            TokenError::Unknown => "Certificate ownership token is not valid.",
            TokenError::Foreign => {
                "Certificate ownership token was issued to a different client certificate."
            }
            TokenError::Spent => "Certificate ownership token has already been used.",
            TokenError::Expired => "Certificate ownership token has expired.",
        })
    }
}

impl std::error::Error for TokenError {}

/// Why a RegisterThing result could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationError {
    Token(TokenError),
    /// The evaluated template cannot apply to this certificate (wrong certificate id, status).
    Invalid(String),
    /// A thing property with `OverrideSettings` `FAIL` would change.
    Conflict(String),
    /// The change could not be written to the state directory.
    Storage(String),
}

impl std::fmt::Display for RegistrationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegistrationError::Token(e) => e.fmt(f),
            RegistrationError::Invalid(m)
            | RegistrationError::Conflict(m)
            | RegistrationError::Storage(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for RegistrationError {}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    #[serde(default)]
    certificates: BTreeMap<String, CertificateRecord>,
    #[serde(default)]
    tokens: BTreeMap<String, TokenRecord>,
    #[serde(default)]
    things: BTreeMap<String, ThingRecord>,
    /// Policy documents by name (documents given inline in templates).
    #[serde(default)]
    policies: BTreeMap<String, Value>,
}

/// One journal line: the new value of one record.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Change {
    Certificate { record: CertificateRecord },
    RemoveCertificate { certificate_id: String },
    Token { token: String, record: TokenRecord },
    RemoveToken { token: String },
    Thing { record: ThingRecord },
    Policy { name: String, document: Value },
}

impl State {
    fn apply(&mut self, change: Change) {
        match change {
            Change::Certificate { record } => {
                self.certificates
                    .insert(record.certificate_id.clone(), record);
            }
            Change::RemoveCertificate { certificate_id } => {
                self.certificates.remove(&certificate_id);
            }
            Change::Token { token, record } => {
                self.tokens.insert(token, record);
            }
            Change::RemoveToken { token } => {
                self.tokens.remove(&token);
            }
            Change::Thing { record } => {
                self.things.insert(record.name.clone(), record);
            }
            Change::Policy { name, document } => {
                self.policies.insert(name, document);
            }
        }
    }

    fn check_token(
        &self,
        token: &str,
        requester: &str,
        now: u64,
    ) -> Result<&TokenRecord, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        let record = self.tokens.get(token).ok_or(TokenError::Unknown)?;
        if record.requester != requester {
            return Err(TokenError::Foreign);
        }
        if record.spent {
            return Err(TokenError::Spent);
        }
        if now >= record.expires_at {
            return Err(TokenError::Expired);
        }
        Ok(record)
    }

    /// Forget what AWS forgets: tokens long expired, and certificates never registered before
    /// their token expired.
    fn purge(&mut self, now: u64) {
        let mut dead_certs = Vec::new();
        self.tokens.retain(|_, t| {
            if !t.spent && now >= t.expires_at {
                dead_certs.push(t.certificate_id.clone());
            }
            now < t.expires_at.saturating_add(TOKEN_MEMORY_SECS)
        });
        for id in dead_certs {
            if let Some(c) = self.certificates.get(&id) {
                if c.status == CertStatus::PendingActivation {
                    self.certificates.remove(&id);
                }
            }
        }
    }
}

struct Inner {
    state: State,
    journal: File,
    journal_bytes: u64,
    snapshot_bytes: u64,
}

/// The persistent registry; shared between connections (all methods take `&self`).
pub struct Registry {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

debug_one_field!(Registry, dir);

impl Registry {
    /// Open (or create) the registry in `dir`, replaying what an earlier run left.
    pub fn open(dir: &Path) -> io::Result<Registry> {
        let [snapshot_path, journal_path] = in_private_dir(dir, [SNAPSHOT_FILE, JOURNAL_FILE])?;

        let mut state: State = match read_if_exists(&snapshot_path)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| invalid_data(format!("{}: {e}", snapshot_path.display())))?,
            None => State::default(),
        };
        if let Some(bytes) = read_if_exists(&journal_path)? {
            replay(&mut state, &bytes, &journal_path);
        }
        state.purge(now_secs());

        let journal = open_append_private(&journal_path)?;
        let mut inner = Inner {
            state,
            journal,
            journal_bytes: 0,
            snapshot_bytes: 0,
        };
        compact(dir, &mut inner)?;
        Ok(Registry {
            dir: dir.to_path_buf(),
            inner: Mutex::new(inner),
        })
    }

    /// Record `certificate_id` as a claim certificate (restricted to provisioning topics).
    pub fn add_claim(&self, certificate_id: &str) {
        let mut inner = self.lock();
        if let Some(existing) = inner.state.certificates.get(certificate_id) {
            if existing.status == CertStatus::Claim {
                return;
            }
        }
        let record = CertificateRecord {
            certificate_id: certificate_id.to_owned(),
            status: CertStatus::Claim,
            certificate_pem: None,
            thing: None,
            policies: Vec::new(),
        };
        self.commit_or_warn(&mut inner, vec![Change::Certificate { record }]);
    }

    pub fn cert_status(&self, certificate_id: &str) -> Option<CertStatus> {
        self.lock()
            .state
            .certificates
            .get(certificate_id)
            .map(|c| c.status)
    }

    pub fn certificate(&self, certificate_id: &str) -> Option<CertificateRecord> {
        self.lock().state.certificates.get(certificate_id).cloned()
    }

    /// Set a certificate's status (e.g. to revoke it). False if the certificate is unknown.
    pub fn set_cert_status(&self, certificate_id: &str, status: CertStatus) -> bool {
        let mut inner = self.lock();
        let Some(mut record) = inner.state.certificates.get(certificate_id).cloned() else {
            return false;
        };
        record.status = status;
        self.commit_or_warn(&mut inner, vec![Change::Certificate { record }]);
        true
    }

    /// New certificate (pending) + fresh single-use ownership token bound to (new cert id,
    /// requesting client cert id), valid 1 h.
    pub fn add_pending(&self, issued: &Issued, requester_cert_id: &str) -> String {
        let token = new_token();
        let cert = CertificateRecord {
            certificate_id: issued.certificate_id.clone(),
            status: CertStatus::PendingActivation,
            certificate_pem: Some(issued.certificate_pem.clone()),
            thing: None,
            policies: Vec::new(),
        };
        let record = TokenRecord {
            certificate_id: issued.certificate_id.clone(),
            requester: requester_cert_id.to_owned(),
            expires_at: now_secs() + TOKEN_LIFETIME_SECS,
            spent: false,
        };
        let mut inner = self.lock();
        self.commit_or_warn(
            &mut inner,
            vec![
                Change::Certificate { record: cert },
                Change::Token {
                    token: token.clone(),
                    record,
                },
            ],
        );
        token
    }

    /// The certificate a token would register, if `requester_cert_id` may use the token now.
    /// Nothing is spent: [`Registry::apply_registration`] checks again and spends it.
    pub fn check_token(
        &self,
        token: &str,
        requester_cert_id: &str,
    ) -> Result<CertificateRecord, TokenError> {
        let inner = self.lock();
        let record = inner
            .state
            .check_token(token, requester_cert_id, now_secs())?;
        inner
            .state
            .certificates
            .get(&record.certificate_id)
            .cloned()
            .ok_or(TokenError::Unknown)
    }

    /// Apply an evaluated template for the certificate behind `token`, and spend the token.
    ///
    /// When the thing exists, each property follows its `OverrideSettings` (absent: keep):
    /// DO_NOTHING keeps the stored value, REPLACE takes the template's, MERGE adds the template's
    /// attributes and groups to the stored ones, FAIL refuses the request if the value would
    /// change. Properties the template leaves out (or empty) are kept. The certificate takes
    /// the template's status and is attached to the thing with the template's policies.
    /// Everything is checked before anything changes: a refused request changes nothing.
    pub fn apply_registration(
        &self,
        token: &str,
        requester_cert_id: &str,
        provisioned: &Provisioned,
    ) -> Result<Option<ThingRecord>, RegistrationError> {
        let mut inner = self.lock();
        let state = &inner.state;
        let token_record = state
            .check_token(token, requester_cert_id, now_secs())
            .map_err(RegistrationError::Token)?
            .clone();
        let mut cert = state
            .certificates
            .get(&token_record.certificate_id)
            .cloned()
            .ok_or(RegistrationError::Token(TokenError::Unknown))?;

        if let Some(spec) = &provisioned.certificate {
            if spec.certificate_id != cert.certificate_id {
                return Err(RegistrationError::Invalid(format!(
                    "the template's certificate {} is not the certificate of the ownership token",
                    spec.certificate_id
                )));
            }
            cert.status = match spec.status.to_ascii_uppercase().as_str() {
                "ACTIVE" => CertStatus::Active,
                "INACTIVE" => CertStatus::Inactive,
                other => {
                    return Err(RegistrationError::Invalid(format!(
                        "certificate status '{other}' is not ACTIVE or INACTIVE"
                    )))
                }
            };
        }

        let mut changes = Vec::new();
        let mut policy_names = Vec::new();
        for policy in &provisioned.policies {
            let name = match (&policy.policy_name, &policy.policy_document) {
                (Some(name), _) => name.clone(),
                (None, Some(document)) => {
                    let name = inline_policy_name(&policy.logical_id, document);
                    changes.push(Change::Policy {
                        name: name.clone(),
                        document: document.clone(),
                    });
                    name
                }
                (None, None) => continue,
            };
            push_unique(&mut policy_names, &name);
        }
        for name in &policy_names {
            push_unique(&mut cert.policies, name);
        }

        let thing = match &provisioned.thing {
            Some(spec) => {
                let mut thing = match state.things.get(&spec.thing_name) {
                    Some(existing) => {
                        override_thing(existing, spec).map_err(RegistrationError::Conflict)?
                    }
                    None => new_thing(spec),
                };
                push_unique(&mut thing.certificate_ids, &cert.certificate_id);
                for name in &policy_names {
                    push_unique(&mut thing.policies, name);
                }
                cert.thing = Some(thing.name.clone());
                Some(thing)
            }
            None => None,
        };

        changes.push(Change::Certificate { record: cert });
        if let Some(thing) = &thing {
            changes.push(Change::Thing {
                record: thing.clone(),
            });
        }
        changes.push(Change::Token {
            token: token.to_owned(),
            record: TokenRecord {
                spent: true,
                ..token_record
            },
        });
        self.commit(&mut inner, changes, false).map_err(|e| {
            RegistrationError::Storage(format!("the registry cannot be saved: {e}"))
        })?;
        Ok(thing)
    }

    /// Every certificate the registry knows (claims included), for tests and tools that
    /// count what was issued.
    pub fn certificates(&self) -> Vec<CertificateRecord> {
        self.lock().state.certificates.values().cloned().collect()
    }

    pub fn things(&self) -> Vec<ThingRecord> {
        self.lock().state.things.values().cloned().collect()
    }

    /// The document of a policy a template gave inline, by the name the registry gave it.
    pub fn policy_document(&self, name: &str) -> Option<Value> {
        self.lock().state.policies.get(name).cloned()
    }

    pub fn thing(&self, name: &str) -> Option<ThingRecord> {
        self.lock().state.things.get(name).cloned()
    }

    /// Test hook: make `token` expired now. False if the token is unknown.
    pub fn expire_token_for_test(&self, token: &str) -> bool {
        let mut inner = self.lock();
        let Some(mut record) = inner.state.tokens.get(token).cloned() else {
            return false;
        };
        record.expires_at = now_secs().saturating_sub(1);
        self.commit_or_warn(
            &mut inner,
            vec![Change::Token {
                token: token.to_owned(),
                record,
            }],
        );
        true
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Changes are applied only after they are written, so a panic cannot leave the state
        // half-changed: the state behind a poisoned lock is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Write `changes` to the journal, then apply them. On a write error nothing is applied,
    /// unless `force`: then memory takes the changes and a new snapshot saves them.
    fn commit(&self, inner: &mut Inner, changes: Vec<Change>, force: bool) -> io::Result<()> {
        let mut lines = Vec::new();
        for change in &changes {
            serde_json::to_writer(&mut lines, change)?;
            lines.push(b'\n');
        }
        // One write for the whole batch: a crash keeps the complete lines and replay drops a
        // torn last one.
        if let Err(e) = inner.journal.write_all(&lines) {
            let e = at_path("write", &self.dir.join(JOURNAL_FILE))(e);
            // Part of a line may be in the journal, and the next line would be glued to it;
            // a snapshot empties the journal. Cut the part off first, in case the snapshot
            // fails too (a full disk).
            let _ = inner.journal.set_len(inner.journal_bytes);
            if force {
                for change in changes {
                    inner.state.apply(change);
                }
            }
            return match compact(&self.dir, inner) {
                Ok(()) if force => Ok(()),
                _ => Err(e),
            };
        }
        inner.journal_bytes += lines.len() as u64;
        for change in changes {
            inner.state.apply(change);
        }
        if inner.journal_bytes > COMPACT_MIN_BYTES.max(inner.snapshot_bytes) {
            if let Err(e) = compact(&self.dir, inner) {
                log::error!("registry snapshot failed: {e}");
            }
        }
        Ok(())
    }

    /// For changes whose callers cannot fail: memory always takes them; a write failure is
    /// logged.
    fn commit_or_warn(&self, inner: &mut Inner, changes: Vec<Change>) {
        if let Err(e) = self.commit(inner, changes, true) {
            log::error!("registry change not saved: {e}");
        }
    }
}

/// Replace the snapshot with the current state and empty the journal.
fn compact(dir: &Path, inner: &mut Inner) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(&inner.state)?;
    write_atomic(&dir.join(SNAPSHOT_FILE), &bytes, 0o600)?;
    // Replaying the old journal over the new snapshot would be harmless (changes are
    // whole-record puts), so a crash between these two steps loses nothing.
    inner
        .journal
        .set_len(0)
        .map_err(at_path("empty", &dir.join(JOURNAL_FILE)))?;
    inner.journal_bytes = 0;
    inner.snapshot_bytes = bytes.len() as u64;
    Ok(())
}

/// Apply the journal's complete lines; a torn or unreadable line is skipped with a warning.
fn replay(state: &mut State, bytes: &[u8], path: &Path) {
    let mut skipped = 0usize;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        if line.last() != Some(&b'\n') {
            // Cut short by a crash while it was being written.
            skipped += 1;
            continue;
        }
        match serde_json::from_slice::<Change>(line) {
            Ok(change) => state.apply(change),
            Err(_) => skipped += 1,
        }
    }
    if skipped > 0 {
        log::warn!("{}: skipped {skipped} damaged line(s)", path.display());
    }
}

fn new_thing(spec: &ThingSpec) -> ThingRecord {
    let mut groups = Vec::new();
    for g in &spec.thing_groups {
        push_unique(&mut groups, g);
    }
    ThingRecord {
        name: spec.thing_name.clone(),
        attributes: spec.attributes.clone(),
        thing_type: spec.thing_type_name.clone(),
        groups,
        billing_group: spec.billing_group.clone(),
        certificate_ids: Vec::new(),
        policies: Vec::new(),
    }
}

/// The existing thing updated by the template according to its `OverrideSettings`.
fn override_thing(existing: &ThingRecord, spec: &ThingSpec) -> Result<ThingRecord, String> {
    let setting = |property: &str| {
        spec.overrides
            .get(property)
            .copied()
            .unwrap_or(OverrideSetting::DoNothing)
    };
    let conflict = |property: &str| {
        format!(
            "thing {} already exists with a different {property} and its OverrideSettings is FAIL",
            existing.name
        )
    };
    let mut thing = existing.clone();

    if !spec.attributes.is_empty() {
        match setting("AttributePayload") {
            OverrideSetting::DoNothing => {}
            OverrideSetting::Replace => thing.attributes = spec.attributes.clone(),
            OverrideSetting::Merge => thing
                .attributes
                .extend(spec.attributes.iter().map(|(k, v)| (k.clone(), v.clone()))),
            OverrideSetting::Fail => {
                if thing.attributes != spec.attributes {
                    return Err(conflict("AttributePayload"));
                }
            }
        }
    }
    if !spec.thing_groups.is_empty() {
        match setting("ThingGroups") {
            OverrideSetting::DoNothing => {}
            OverrideSetting::Replace => {
                thing.groups.clear();
                for g in &spec.thing_groups {
                    push_unique(&mut thing.groups, g);
                }
            }
            OverrideSetting::Merge => {
                for g in &spec.thing_groups {
                    push_unique(&mut thing.groups, g);
                }
            }
            OverrideSetting::Fail => {
                let mut wanted = spec.thing_groups.clone();
                let mut have = thing.groups.clone();
                wanted.sort();
                wanted.dedup();
                have.sort();
                if wanted != have {
                    return Err(conflict("ThingGroups"));
                }
            }
        }
    }
    // MERGE has no meaning for a single value; the template parser refuses it there.
    for (property, new, slot) in [
        (
            "ThingTypeName",
            &spec.thing_type_name,
            &mut thing.thing_type,
        ),
        (
            "BillingGroup",
            &spec.billing_group,
            &mut thing.billing_group,
        ),
    ] {
        let Some(new) = new else { continue };
        match setting(property) {
            OverrideSetting::DoNothing => {}
            OverrideSetting::Replace | OverrideSetting::Merge => *slot = Some(new.clone()),
            OverrideSetting::Fail => {
                if slot.as_ref() != Some(new) {
                    return Err(conflict(property));
                }
            }
        }
    }
    Ok(thing)
}

/// Name of a policy given inline: AWS names these itself; ours is stable for a document.
fn inline_policy_name(logical_id: &str, document: &Value) -> String {
    let digest = Sha256::digest(document.to_string().as_bytes());
    format!("{logical_id}-{}", crate::ca::hex(&digest[..8]))
}

fn push_unique(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|x| x == item) {
        list.push(item.to_owned());
    }
}

/// A fresh opaque token: 64 random bytes, hex.
fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    if getrandom::getrandom(&mut bytes).is_err() {
        // The OS refused randomness; rand's generator (seeded earlier from the OS) remains.
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut bytes);
    }
    crate::ca::hex(&bytes)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The registry of a state directory opened from a copy of its files in a scratch directory,
/// so that a server using the directory is not disturbed; the copy is removed on drop.
pub(crate) struct RegistryCopy {
    pub registry: Registry,
    scratch: PathBuf,
}

impl RegistryCopy {
    /// `purpose` names the scratch directory (`fleetprov-emulator-<purpose>-...`).
    pub(crate) fn open(state_dir: &Path, purpose: &str) -> io::Result<RegistryCopy> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let scratch = std::env::temp_dir().join(format!(
            "fleetprov-emulator-{purpose}-{}-{nanos}",
            std::process::id()
        ));
        fs::create_dir(&scratch).map_err(files::at_path("create the directory", &scratch))?;
        let copied = (|| {
            let listing = || files::at_path("read the state directory", state_dir);
            for entry in fs::read_dir(state_dir).map_err(listing())? {
                let entry = entry.map_err(listing())?;
                let name = entry.file_name();
                if name.to_string_lossy().starts_with("registry") && entry.file_type()?.is_file() {
                    let from = entry.path();
                    fs::copy(&from, scratch.join(&name)).map_err(files::at_path("copy", &from))?;
                }
            }
            Registry::open(&scratch)
        })();
        match copied {
            Ok(registry) => Ok(RegistryCopy { registry, scratch }),
            Err(e) => {
                let _ = fs::remove_dir_all(&scratch);
                Err(e)
            }
        }
    }
}

impl Drop for RegistryCopy {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.scratch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::mode_of;
    use crate::template::{CertificateSpec, PolicySpec};
    use serde_json::json;
    use std::fs;

    const CLAIM: &str = "claim-cert-id";

    fn issued(id: &str) -> Issued {
        Issued {
            certificate_id: id.to_owned(),
            certificate_pem: format!("PEM of {id}"),
            certificate_der: Vec::new(),
            private_key_pem: None,
        }
    }

    fn provisioned(cert_id: &str, thing: &str) -> Provisioned {
        Provisioned {
            thing: Some(ThingSpec {
                thing_name: thing.to_owned(),
                attributes: [("version".to_owned(), "v1".to_owned())].into(),
                thing_type_name: None,
                thing_groups: Vec::new(),
                billing_group: None,
                package_versions: BTreeMap::new(),
                overrides: BTreeMap::new(),
            }),
            certificate: Some(CertificateSpec {
                certificate_id: cert_id.to_owned(),
                status: "ACTIVE".to_owned(),
            }),
            policies: vec![PolicySpec {
                logical_id: "policy".to_owned(),
                policy_name: None,
                policy_document: Some(json!({"Version": "2012-10-17"})),
            }],
            device_configuration: BTreeMap::new(),
        }
    }

    fn spec(thing: &mut Provisioned) -> &mut ThingSpec {
        thing.thing.as_mut().unwrap()
    }

    fn strings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Register certificate `cert_id` for the thing "dev" as changed by `edit`.
    fn register_dev(
        registry: &Registry,
        cert_id: &str,
        edit: impl FnOnce(&mut ThingSpec),
    ) -> ThingRecord {
        let mut provisioned = provisioned(cert_id, "dev");
        edit(spec(&mut provisioned));
        let token = registry.add_pending(&issued(cert_id), CLAIM);
        registry
            .apply_registration(&token, CLAIM, &provisioned)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn registration_activates_attaches_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        registry.add_claim(CLAIM);
        let token = registry.add_pending(&issued("c1"), CLAIM);
        assert_eq!(token.len(), 128);
        assert_eq!(
            registry.cert_status("c1"),
            Some(CertStatus::PendingActivation)
        );
        assert_eq!(
            registry.check_token(&token, CLAIM).unwrap().certificate_id,
            "c1"
        );

        let thing = registry
            .apply_registration(&token, CLAIM, &provisioned("c1", "ThingPrefix_1"))
            .unwrap()
            .unwrap();
        assert_eq!(thing.name, "ThingPrefix_1");
        assert_eq!(thing.certificate_ids, ["c1"]);
        assert_eq!(thing.policies.len(), 1);
        assert!(thing.policies[0].starts_with("policy-"));
        assert_eq!(registry.cert_status("c1"), Some(CertStatus::Active));
        drop(registry);

        let reopened = Registry::open(dir.path()).unwrap();
        assert_eq!(reopened.cert_status(CLAIM), Some(CertStatus::Claim));
        assert_eq!(reopened.cert_status("c1"), Some(CertStatus::Active));
        let cert = reopened.certificate("c1").unwrap();
        assert_eq!(cert.thing.as_deref(), Some("ThingPrefix_1"));
        assert_eq!(cert.certificate_pem.as_deref(), Some("PEM of c1"));
        assert_eq!(reopened.things(), vec![thing]);
        assert_eq!(reopened.check_token(&token, CLAIM), Err(TokenError::Spent));
        assert_eq!(reopened.cert_status("never-seen"), None);
    }

    #[test]
    fn token_problems_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let token = registry.add_pending(&issued("c1"), CLAIM);
        let plan = provisioned("c1", "t");

        assert_eq!(registry.check_token("", CLAIM), Err(TokenError::Empty));
        assert_eq!(
            registry.check_token("nope", CLAIM),
            Err(TokenError::Unknown)
        );
        assert_eq!(
            registry.check_token(&token, "other-cert"),
            Err(TokenError::Foreign)
        );
        assert_eq!(
            registry.apply_registration(&token, "other-cert", &plan),
            Err(RegistrationError::Token(TokenError::Foreign))
        );
        registry.apply_registration(&token, CLAIM, &plan).unwrap();
        assert_eq!(
            registry.apply_registration(&token, CLAIM, &plan),
            Err(RegistrationError::Token(TokenError::Spent))
        );

        let late = registry.add_pending(&issued("c2"), CLAIM);
        assert!(registry.expire_token_for_test(&late));
        assert!(!registry.expire_token_for_test("nope"));
        assert_eq!(
            registry.apply_registration(&late, CLAIM, &provisioned("c2", "t2")),
            Err(RegistrationError::Token(TokenError::Expired))
        );
        assert_eq!(
            registry.cert_status("c2"),
            Some(CertStatus::PendingActivation)
        );
        assert!(registry.thing("t2").is_none());

        let messages: Vec<String> = [
            TokenError::Empty,
            TokenError::Unknown,
            TokenError::Foreign,
            TokenError::Spent,
            TokenError::Expired,
        ]
        .iter()
        .map(|e| e.to_string())
        .collect();
        assert_eq!(messages[0], "Certificate ownership token cannot be empty.");
        let mut distinct = messages.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), messages.len());
    }

    #[test]
    fn a_token_raced_by_concurrent_registrations_is_spent_once() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let token = registry.add_pending(&issued("c1"), CLAIM);
        let start = std::sync::Barrier::new(8);
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let (registry, token, start) = (&registry, &token, &start);
                    s.spawn(move || {
                        start.wait();
                        registry.apply_registration(
                            token,
                            CLAIM,
                            &provisioned("c1", &format!("t{i}")),
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
        assert!(results
            .iter()
            .filter(|r| r.is_err())
            .all(|r| *r == Err(RegistrationError::Token(TokenError::Spent))));
        assert_eq!(registry.things().len(), 1);
    }

    #[test]
    fn expired_unregistered_certificates_are_deleted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let token = registry.add_pending(&issued("c1"), CLAIM);
        registry.expire_token_for_test(&token);
        drop(registry);
        let reopened = Registry::open(dir.path()).unwrap();
        assert_eq!(reopened.cert_status("c1"), None);
        // The token is still remembered, to say why it fails.
        assert_eq!(
            reopened.check_token(&token, CLAIM),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn the_template_must_name_the_token_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let token = registry.add_pending(&issued("c1"), CLAIM);
        let err = registry
            .apply_registration(&token, CLAIM, &provisioned("someone-else", "t"))
            .unwrap_err();
        assert!(matches!(err, RegistrationError::Invalid(_)), "{err:?}");
        let mut bad_status = provisioned("c1", "t");
        bad_status.certificate.as_mut().unwrap().status = "PENDING".into();
        assert!(matches!(
            registry.apply_registration(&token, CLAIM, &bad_status),
            Err(RegistrationError::Invalid(_))
        ));
        // Nothing was spent by the refusals.
        assert!(registry
            .apply_registration(&token, CLAIM, &provisioned("c1", "t"))
            .is_ok());
    }

    #[test]
    fn existing_things_follow_override_settings() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let mut first = provisioned("c1", "dev");
        spec(&mut first).thing_type_name = Some("sensor".into());
        spec(&mut first).thing_groups = vec!["g1".into()];
        spec(&mut first).billing_group = Some("b1".into());
        let t1 = registry.add_pending(&issued("c1"), CLAIM);
        registry.apply_registration(&t1, CLAIM, &first).unwrap();

        // The seed template's settings: MERGE attributes, REPLACE type, DO_NOTHING groups.
        let thing = register_dev(&registry, "c2", |s| {
            s.attributes = strings(&[("serialNumber", "42"), ("version", "v2")]);
            s.thing_type_name = Some("gateway".into());
            s.thing_groups = vec!["g2".into()];
            s.billing_group = Some("b2".into());
            s.overrides = [
                ("AttributePayload".to_owned(), OverrideSetting::Merge),
                ("ThingTypeName".to_owned(), OverrideSetting::Replace),
                ("ThingGroups".to_owned(), OverrideSetting::DoNothing),
            ]
            .into();
        });
        assert_eq!(
            thing.attributes,
            strings(&[("serialNumber", "42"), ("version", "v2")])
        );
        assert_eq!(thing.thing_type.as_deref(), Some("gateway"));
        assert_eq!(thing.groups, ["g1"]);
        // No setting for BillingGroup: kept.
        assert_eq!(thing.billing_group.as_deref(), Some("b1"));
        assert_eq!(thing.certificate_ids, ["c1", "c2"]);

        // MERGE groups adds; REPLACE attributes replaces.
        let thing = register_dev(&registry, "c3", |s| {
            s.attributes = strings(&[("only", "this")]);
            s.thing_groups = vec!["g3".into(), "g1".into()];
            s.overrides = [
                ("AttributePayload".to_owned(), OverrideSetting::Replace),
                ("ThingGroups".to_owned(), OverrideSetting::Merge),
            ]
            .into();
        });
        assert_eq!(thing.attributes, strings(&[("only", "this")]));
        assert_eq!(thing.groups, ["g1", "g3"]);

        // FAIL refuses a change and leaves everything as it was, token included.
        let mut fourth = provisioned("c4", "dev");
        {
            let s = spec(&mut fourth);
            s.thing_type_name = Some("other".into());
            s.overrides = [("ThingTypeName".to_owned(), OverrideSetting::Fail)].into();
        }
        let t4 = registry.add_pending(&issued("c4"), CLAIM);
        let err = registry
            .apply_registration(&t4, CLAIM, &fourth)
            .unwrap_err();
        assert!(
            matches!(&err, RegistrationError::Conflict(m) if m.contains("ThingTypeName")),
            "{err:?}"
        );
        assert_eq!(registry.thing("dev").unwrap(), thing);
        assert_eq!(
            registry.cert_status("c4"),
            Some(CertStatus::PendingActivation)
        );
        assert!(registry.check_token(&t4, CLAIM).is_ok());
        // FAIL with the same value is no change, so it passes.
        spec(&mut fourth).thing_type_name = Some("gateway".into());
        assert!(registry.apply_registration(&t4, CLAIM, &fourth).is_ok());
    }

    #[test]
    fn journal_is_replayed_and_a_torn_line_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        registry.add_claim("a");
        registry.add_claim("b");
        assert!(registry.set_cert_status("b", CertStatus::Revoked));
        assert!(!registry.set_cert_status("zzz", CertStatus::Revoked));
        // What a crash in the middle of a write leaves.
        let mut journal = open_append_private(&dir.path().join(JOURNAL_FILE)).unwrap();
        journal
            .write_all(br#"{"op":"certificate","record":{"certificate_id":"c","#)
            .unwrap();
        drop(journal);
        drop(registry);

        let reopened = Registry::open(dir.path()).unwrap();
        assert_eq!(reopened.cert_status("a"), Some(CertStatus::Claim));
        assert_eq!(reopened.cert_status("b"), Some(CertStatus::Revoked));
        assert_eq!(reopened.cert_status("c"), None);
        // Opening folded the journal into a fresh snapshot.
        assert_eq!(
            fs::metadata(dir.path().join(JOURNAL_FILE)).unwrap().len(),
            0
        );
        for file in [SNAPSHOT_FILE, JOURNAL_FILE] {
            assert_eq!(mode_of(&dir.path().join(file)), 0o600, "{file}");
        }
        // Adding the same claim again writes nothing.
        reopened.add_claim("a");
        assert_eq!(
            fs::metadata(dir.path().join(JOURNAL_FILE)).unwrap().len(),
            0
        );
    }

    #[test]
    fn a_large_journal_is_folded_into_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let journal = dir.path().join(JOURNAL_FILE);
        let mut compacted = false;
        let mut last_len = 0;
        for i in 0..20_000 {
            registry.add_claim(&format!("claim-{i:05}"));
            let len = fs::metadata(&journal).unwrap().len();
            if len < last_len {
                compacted = true;
                break;
            }
            last_len = len;
        }
        assert!(compacted, "journal reached {last_len} bytes");
        assert!(last_len <= COMPACT_MIN_BYTES + 200);
        drop(registry);
        let reopened = Registry::open(dir.path()).unwrap();
        assert_eq!(reopened.cert_status("claim-00000"), Some(CertStatus::Claim));
    }

    #[test]
    fn a_damaged_snapshot_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(SNAPSHOT_FILE), b"{not json").unwrap();
        let err = Registry::open(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
