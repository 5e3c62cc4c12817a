//! Opening a state directory as a service: the CA and the registry loaded or created there (the
//! default claim and the recorded claims registered as claims), the templates loaded, and the
//! service built on them. Used by the endpoint and by responder mode alike.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::aws_limits::valid_template_name;
use crate::ca::{self, Ca};
use crate::cert::certificate_id;
use crate::hook::Hook;
use crate::registry::Registry;
use crate::service::Service;
use crate::state_dir;
use crate::template::Template;

/// The seed's provisioning template, served as [`SEED_TEMPLATE_NAME`] when no template is given.
pub const SEED_TEMPLATE: &str = include_str!("../templates/FleetTemplate.json");
pub const SEED_TEMPLATE_NAME: &str = "FleetTemplate";

/// Load or create the CA and the registry in `state_dir` (the default claim registered as a claim)
/// and the templates, and build the service on them. Blocking.
pub fn open_service(
    state_dir: &Path,
    templates: &[(String, PathBuf)],
    account: Option<&Path>,
    hooks: BTreeMap<String, Hook>,
    device: ca::DeviceCertificates,
) -> io::Result<Arc<Service>> {
    for name in hooks.keys() {
        let served = if templates.is_empty() {
            name == SEED_TEMPLATE_NAME
        } else {
            templates.iter().any(|(t, _)| t == name)
        };
        if !served {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("--hook {name}: no template of that name is served"),
            ));
        }
    }
    let templates = load_templates(templates)?;
    let account = account.map(crate::account::Account::load).transpose()?;
    let ca = Ca::load_or_create_with(state_dir, device)?;
    let registry = Registry::open(state_dir)?;
    registry.add_claim(&certificate_id(&ca.claim_der()));
    import_claims(state_dir, &registry);
    Ok(Arc::new(
        Service::new(Arc::new(ca), Arc::new(registry), templates)
            .with_account(account)
            .with_hooks(hooks),
    ))
}

/// Take in the claims `fleetprov-emulator claim` recorded in `state_dir`.
fn import_claims(state_dir: &Path, registry: &Registry) {
    for id in state_dir::recorded_claims(state_dir) {
        if registry.cert_status(&id).is_none() {
            registry.add_claim(&id);
        }
    }
}

fn load_templates(given: &[(String, PathBuf)]) -> io::Result<BTreeMap<String, Template>> {
    let mut templates = BTreeMap::new();
    if given.is_empty() {
        let t = Template::parse(SEED_TEMPLATE).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("seed template: {}", e.0),
            )
        })?;
        templates.insert(SEED_TEMPLATE_NAME.to_owned(), t);
    }
    for (name, path) in given {
        if !valid_template_name(name) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("template name {name:?}: 1-36 characters of A-Z a-z 0-9 _ -"),
            ));
        }
        let body = std::fs::read_to_string(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let t = Template::parse(&body).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {}", path.display(), e.0),
            )
        })?;
        templates.insert(name.clone(), t);
    }
    Ok(templates)
}
