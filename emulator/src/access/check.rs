//! `fleetprov-emulator policy check`: would this certificate, client id and thing be allowed this
//! action on this resource, and which statement decides? Answered from a state directory, also
//! while a server runs on it (the registry is read from a copy).

use std::path::{Path, PathBuf};

use super::store::PolicyStore;
use crate::account::Account;
use crate::policy::context::CertFields;
use crate::policy::{Action, Decision};
use crate::registry::RegistryCopy;

/// Which certificate asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asker {
    /// A claim certificate (the state directory's default claim supplies the certificate fields).
    Claim,
    /// The certificate in this PEM file, as the registry knows it.
    Cert(PathBuf),
}

/// A question for [`check`].
#[derive(Debug, Clone)]
pub struct Question {
    pub state_dir: PathBuf,
    pub account: Option<PathBuf>,
    pub claim_policy: Option<PathBuf>,
    /// Served template names (the claim policy is instantiated for each).
    pub templates: Vec<String>,
    pub asker: Asker,
    pub client_id: String,
    /// The thing the `iot:Connection.Thing.*` variables come from; by default the thing the
    /// certificate is attached to if its name is the client id.
    pub thing: Option<String>,
    pub action: Action,
    /// A client id, topic or topic filter, or a full ARN.
    pub resource: String,
}

/// The answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub resource: String,
    pub decision: Decision,
    pub policies: Vec<String>,
    /// Policies taken to allow everything or nothing, and why.
    pub notes: Vec<String>,
}

fn certificate_fields(pem_path: &Path) -> Result<CertFields, String> {
    let pem = std::fs::read(pem_path).map_err(|e| format!("{}: {e}", pem_path.display()))?;
    let der = crate::cert::pem_block(&pem, "CERTIFICATE")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| format!("{}: no PEM certificate in it", pem_path.display()))?;
    Ok(CertFields::from_der(&der))
}

/// Answer `q`; `Err` names what could not be read or found.
pub fn check(q: &Question) -> Result<Answer, String> {
    let account = q
        .account
        .as_deref()
        .map(Account::load)
        .transpose()
        .map_err(|e| e.to_string())?;
    let store = PolicyStore::new(account.as_ref(), q.claim_policy.as_deref(), &q.templates)
        .map_err(|e| e.to_string())?;
    let copy = RegistryCopy::open(&q.state_dir, "policy").map_err(|e| e.to_string())?;
    let registry = &copy.registry;
    let (authz, notes) = match &q.asker {
        Asker::Claim => {
            let default_claim = q.state_dir.join("claim-cert.pem");
            let cert = if default_claim.is_file() {
                certificate_fields(&default_claim)?
            } else {
                CertFields::default()
            };
            store.claim_authorizer(registry, &cert, &q.client_id, q.thing.as_deref())?
        }
        Asker::Cert(path) => {
            let cert = certificate_fields(path)?;
            // A claim issued by `fleetprov-emulator claim` that no server has taken in yet.
            let issued_claim = q
                .state_dir
                .join(crate::state_dir::CLAIMS_DIR)
                .join(&cert.certificate_id)
                .is_file();
            if registry.certificate(&cert.certificate_id).is_none() && issued_claim {
                store.claim_authorizer(registry, &cert, &q.client_id, q.thing.as_deref())?
            } else {
                store.authorizer(registry, &cert, &q.client_id, q.thing.as_deref())?
            }
        }
    };
    Ok(Answer {
        resource: authz.resource(q.action, &q.resource),
        decision: authz.check(q.action, &q.resource),
        policies: authz
            .policy_names()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        notes,
    })
}
