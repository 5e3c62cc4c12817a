//! Which policies a connection is held to: the claim policy for claim certificates, the policies
//! their template attached for device certificates; and [`Authorizer`], what a connection asks.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use crate::account::Account;
use crate::policy::context::CertFields;
use crate::policy::{evaluate, Action, Arn, Context, Decision, Policy};
use crate::registry::{CertStatus, Registry};

/// The claim policy served by default, one per template: AWS's fleet-provisioning sample policy
/// (Connect as `test-*`; publish, subscribe and receive only on the create and RegisterThing
/// topics of the template), with each JSON topic's CBOR twin too. `<region>`, `<account>` and
/// `<templatename>` are filled in.
pub const SAMPLE_CLAIM_POLICY: &str = include_str!("../../policies/claim-policy.json");

/// The sample claim policy with `*` for the template name: provisioning through any template,
/// so that a request naming a template the server does not serve gets AWS's 404 rejection rather
/// than a refused SUBSCRIBE. For tests of that path (`EmulatorConfig::claim_policy`, or
/// `serve --claim-policy emulator/policies/claim-policy-any-template.json`).
pub const ANY_TEMPLATE_CLAIM_POLICY: &str =
    include_str!("../../policies/claim-policy-any-template.json");

/// The placeholders a claim policy may hold.
const TEMPLATE_PLACEHOLDER: &str = "<templatename>";

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The policies the endpoint knows besides those in the registry.
#[derive(Debug, Clone)]
pub struct PolicyStore {
    pub arn: Arn,
    claim: Vec<Policy>,
    /// Documents given for named policies in the account file, parsed.
    named: BTreeMap<String, Policy>,
}

impl PolicyStore {
    /// The store for `account` (ARNs and named policy documents), the claim policy in
    /// `claim_policy` (the sample's if `None`) for each of `templates`.
    pub fn new(
        account: Option<&Account>,
        claim_policy: Option<&Path>,
        templates: &[String],
    ) -> io::Result<PolicyStore> {
        let mut arn = Arn::default();
        if let Some(a) = account {
            if let Some(id) = &a.account_id {
                arn.account_id = id.clone();
            }
            if let Some(r) = &a.region {
                arn.region = r.clone();
            }
        }
        let (text, origin) = match claim_policy {
            Some(path) => (
                std::fs::read_to_string(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?,
                path.display().to_string(),
            ),
            None => (
                SAMPLE_CLAIM_POLICY.to_owned(),
                "the sample claim policy".to_owned(),
            ),
        };
        let fill = |template: &str| {
            text.replace("<region>", &arn.region)
                .replace("<account>", &arn.account_id)
                .replace(TEMPLATE_PLACEHOLDER, template)
        };
        let parse = |name: &str, text: &str| -> io::Result<Policy> {
            let doc: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| invalid(format!("{origin}: not valid JSON: {e}")))?;
            Policy::parse(name, &doc).map_err(|e| invalid(format!("{origin}: {e}")))
        };
        let claim = if text.contains(TEMPLATE_PLACEHOLDER) {
            templates
                .iter()
                .map(|t| parse(&format!("{t}-claim-policy"), &fill(t)))
                .collect::<io::Result<Vec<_>>>()?
        } else {
            vec![parse("claim-policy", &fill(""))?]
        };
        let mut named = BTreeMap::new();
        if let Some(a) = account {
            for (name, doc) in &a.policy_documents {
                let p = Policy::parse(name, doc)
                    .map_err(|e| invalid(format!("account policy {name:?}: {e}")))?;
                named.insert(name.clone(), p);
            }
        }
        Ok(PolicyStore { arn, claim, named })
    }

    pub fn claim_policies(&self) -> &[Policy] {
        &self.claim
    }

    /// The policies named `names` (attached to a device certificate at RegisterThing): an inline
    /// document the registry holds, else a document from the account file. A policy whose
    /// document is unknown allows everything (the emulator cannot know it); one that does not
    /// parse allows nothing. Each such case is described in the returned notes.
    pub fn device_policies(
        &self,
        names: &[String],
        registry: &Registry,
    ) -> (Vec<Policy>, Vec<String>) {
        let mut policies = Vec::new();
        let mut notes = Vec::new();
        for name in names {
            if let Some(doc) = registry.policy_document(name) {
                match Policy::parse(name, &doc) {
                    Ok(p) => policies.push(p),
                    Err(e) => notes.push(format!(
                        "policy {name:?} cannot be used ({e}): it allows nothing"
                    )),
                }
            } else if let Some(p) = self.named.get(name) {
                policies.push(p.clone());
            } else {
                notes.push(format!(
                    "policy {name:?} has no document (give it in --account): taken to allow every \
                     action"
                ));
                policies.push(Policy::allow_all(name));
            }
        }
        (policies, notes)
    }

    /// What a connection with certificate `cert` (known to `registry`) and `client_id` may do;
    /// `thing` overrides the thing the variables come from (for `policy check`). `Err` says why
    /// the certificate cannot connect at all.
    pub fn authorizer(
        &self,
        registry: &Registry,
        cert: &CertFields,
        client_id: &str,
        thing: Option<&str>,
    ) -> Result<(Authorizer, Vec<String>), String> {
        let record = registry
            .certificate(&cert.certificate_id)
            .ok_or_else(|| format!("certificate {} is not registered", cert.certificate_id))?;
        let (policies, notes) = match record.status {
            CertStatus::Claim => (self.claim.clone(), Vec::new()),
            CertStatus::Active => self.device_policies(&record.policies, registry),
            other => {
                return Err(format!(
                    "certificate {} is {other:?}, not Active",
                    cert.certificate_id
                ))
            }
        };
        let ctx = thing_context(registry, cert, client_id, thing, record.thing.as_deref())?;
        Ok((self.authorizer_of(policies, ctx), notes))
    }

    fn authorizer_of(&self, policies: Vec<Policy>, ctx: Context) -> Authorizer {
        Authorizer {
            policies,
            ctx,
            arn: self.arn.clone(),
        }
    }

    /// A claim certificate's authorizer, whether or not the registry knows the certificate.
    pub fn claim_authorizer(
        &self,
        registry: &Registry,
        cert: &CertFields,
        client_id: &str,
        thing: Option<&str>,
    ) -> Result<(Authorizer, Vec<String>), String> {
        let ctx = thing_context(registry, cert, client_id, thing, None)?;
        Ok((self.authorizer_of(self.claim.clone(), ctx), Vec::new()))
    }
}

/// The variables of a connection: the thing ones come from `thing` if given, else from the
/// certificate's `attached` thing if its name is the client id.
fn thing_context(
    registry: &Registry,
    cert: &CertFields,
    client_id: &str,
    thing: Option<&str>,
    attached: Option<&str>,
) -> Result<Context, String> {
    let name = thing.or_else(|| attached.filter(|t| *t == client_id));
    let thing = match name {
        Some(name) => Some(
            registry
                .thing(name)
                .ok_or_else(|| format!("thing {name:?} is not registered"))?,
        ),
        None => None,
    };
    Ok(Context::for_connection(client_id, cert, thing.as_ref()))
}

/// One connection's policies and variables.
#[derive(Debug, Clone)]
pub struct Authorizer {
    policies: Vec<Policy>,
    ctx: Context,
    arn: Arn,
}

impl Authorizer {
    /// Allows everything (endpoints without policies).
    pub fn allow_all() -> Authorizer {
        Authorizer {
            policies: vec![Policy::allow_all("allow-all")],
            ctx: Context::default(),
            arn: Arn::default(),
        }
    }

    /// Decide `action` on `name` (a client id, topic or topic filter), or on `name` as a full
    /// ARN when it starts with `arn:`.
    pub fn check(&self, action: Action, name: &str) -> Decision {
        evaluate(
            &self.policies,
            &self.ctx,
            action,
            &self.resource(action, name),
        )
    }

    /// The ARN [`Authorizer::check`] decides on.
    pub fn resource(&self, action: Action, name: &str) -> String {
        if name.starts_with("arn:") {
            name.to_owned()
        } else {
            self.arn.resource(action, name)
        }
    }

    pub fn policy_names(&self) -> Vec<&str> {
        self.policies.iter().map(|p| p.name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim_store(templates: &[&str]) -> PolicyStore {
        let t: Vec<String> = templates.iter().map(|s| s.to_string()).collect();
        PolicyStore::new(None, None, &t).unwrap()
    }

    fn claim_authorizer(store: &PolicyStore, client_id: &str) -> Authorizer {
        let ctx = Context::for_connection(client_id, &CertFields::default(), None);
        Authorizer {
            policies: store.claim.clone(),
            ctx,
            arn: store.arn.clone(),
        }
    }

    #[test]
    fn the_sample_claim_policy_allows_provisioning_and_nothing_else() {
        let store = claim_store(&["FleetTemplate", "Other"]);
        assert_eq!(
            store
                .claim_policies()
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["FleetTemplate-claim-policy", "Other-claim-policy"]
        );
        let a = claim_authorizer(&store, "test-1234");
        assert!(a.check(Action::Connect, "test-1234").allowed);
        assert!(
            !claim_authorizer(&store, "device-1")
                .check(Action::Connect, "device-1")
                .allowed
        );
        for fmt in ["json", "cbor"] {
            for api in [
                "$aws/certificates/create".to_owned(),
                "$aws/certificates/create-from-csr".to_owned(),
                "$aws/provisioning-templates/FleetTemplate/provision".to_owned(),
                "$aws/provisioning-templates/Other/provision".to_owned(),
            ] {
                let request = format!("{api}/{fmt}");
                assert!(a.check(Action::Publish, &request).allowed, "{request}");
                for reply in ["accepted", "rejected"] {
                    let topic = format!("{request}/{reply}");
                    assert!(a.check(Action::Subscribe, &topic).allowed, "{topic}");
                    assert!(a.check(Action::Receive, &topic).allowed, "{topic}");
                    assert!(!a.check(Action::Publish, &topic).allowed, "{topic}");
                }
                assert!(!a.check(Action::Subscribe, &format!("{request}/+")).allowed);
            }
        }
        assert!(
            !a.check(
                Action::Publish,
                "$aws/provisioning-templates/Third/provision/json"
            )
            .allowed
        );
        assert!(!a.check(Action::Publish, "devices/x").allowed);
        assert!(!a.check(Action::Subscribe, "#").allowed);
        let d = a.check(Action::Publish, "devices/x");
        assert_eq!(d.to_string(), "denied: no statement allowed it");
    }

    #[test]
    fn the_any_template_claim_policy_allows_unserved_templates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("any.json");
        std::fs::write(&path, ANY_TEMPLATE_CLAIM_POLICY).unwrap();
        let store = PolicyStore::new(None, Some(&path), &["FleetTemplate".into()]).unwrap();
        assert_eq!(store.claim_policies().len(), 1);
        let a = claim_authorizer(&store, "test-1");
        let topic = "$aws/provisioning-templates/NoSuchTemplate/provision/json";
        assert!(a.check(Action::Publish, topic).allowed);
        assert!(
            a.check(Action::Subscribe, &format!("{topic}/rejected"))
                .allowed
        );
        assert!(!a.check(Action::Publish, "devices/x").allowed);
        assert!(!a.check(Action::Connect, "device-1").allowed);
    }

    #[test]
    fn account_sets_the_arns_and_named_documents() {
        let account: Account = serde_json::from_value(json!({
            "accountId": "000011112222", "region": "eu-west-1",
            "policies": ["Plain", {"policyName": "Doc", "policyDocument":
                {"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}}}]
        }))
        .unwrap();
        let store = PolicyStore::new(Some(&account), None, &["T".into()]).unwrap();
        assert_eq!(store.arn.account_id, "000011112222");
        let a = claim_authorizer(&store, "test-1");
        assert_eq!(
            a.resource(Action::Connect, "test-1"),
            "arn:aws:iot:eu-west-1:000011112222:client/test-1"
        );
        assert!(a.check(Action::Connect, "test-1").allowed);
        // The default account's ARNs are another account's.
        assert!(
            !a.check(
                Action::Connect,
                "arn:aws:iot:us-east-1:123456789012:client/test-1"
            )
            .allowed
        );

        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).unwrap();
        let (policies, notes) = store.device_policies(&["Doc".into(), "Plain".into()], &registry);
        assert_eq!(policies.len(), 2);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("\"Plain\" has no document"), "{notes:?}");
    }

    #[test]
    fn a_claim_policy_file_without_placeholder_is_one_policy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("claim.json");
        std::fs::write(
            &path,
            r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "iot:Connect",
                "Resource": "arn:aws:iot:<region>:<account>:client/only-me"}}"#,
        )
        .unwrap();
        let store = PolicyStore::new(None, Some(&path), &["A".into(), "B".into()]).unwrap();
        assert_eq!(store.claim_policies().len(), 1);
        assert_eq!(store.claim_policies()[0].name, "claim-policy");
        assert!(
            claim_authorizer(&store, "only-me")
                .check(Action::Connect, "only-me")
                .allowed
        );

        std::fs::write(&path, r#"{"Statement": {"Effect": "Maybe"}}"#).unwrap();
        let e = PolicyStore::new(None, Some(&path), &[]).unwrap_err();
        assert!(
            e.to_string().contains("claim.json: Statement.Effect"),
            "{e}"
        );
        let missing = dir.path().join("nope.json");
        let e = PolicyStore::new(None, Some(&missing), &[]).unwrap_err();
        assert!(e.to_string().contains("nope.json"), "{e}");
    }
}
