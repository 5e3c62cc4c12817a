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

mod copy;
mod journal;
#[cfg(test)]
mod tests;
mod things;
mod tokens;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ca::Issued;
use crate::template::Provisioned;
pub(crate) use copy::RegistryCopy;
use journal::{Change, Inner};
use things::{inline_policy_name, new_thing, override_thing, push_unique};
use tokens::{new_token, now_secs, TokenRecord};
pub use tokens::{TokenError, TOKEN_LIFETIME_SECS};

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

/// Why a RegisterThing result could not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationError {
    Token(TokenError),
    /// The evaluated template cannot apply to this certificate (wrong certificate id, status).
    Invalid(String),
    /// The existing thing cannot take the template's values: a property with
    /// `OverrideSettings` `FAIL` would change, or a `MERGE` would pass AWS's attribute limit.
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

/// The persistent registry; shared between connections (all methods take `&self`).
pub struct Registry {
    dir: PathBuf,
    inner: Mutex<Inner>,
}

debug_one_field!(Registry, dir);

impl Registry {
    /// Open (or create) the registry in `dir`, replaying what an earlier run left.
    pub fn open(dir: &Path) -> io::Result<Registry> {
        let inner = journal::load(dir)?;
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

    /// Every certificate the registry knows (claims included), for tests and tools that
    /// count what was issued.
    pub fn certificates(&self) -> Vec<CertificateRecord> {
        self.lock().state.certificates.values().cloned().collect()
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
}
