//! The AWS account a template is evaluated against: the thing types, thing groups, billing
//! groups and named policies that exist. On AWS a template that references one the account
//! lacks fails provisioning; given an account (`--account FILE`), the emulator does the same.
//! Without one, every referenced resource is taken to exist.
//!
//! The file is JSON: `{"thingTypes": [...], "thingGroups": [...], "billingGroups": [...],
//! "policies": [...]}`, each a list of names; absent lists are empty. A policy may also be given
//! as `{"policyName": NAME, "policyDocument": {...}}`, so that device certificates its template
//! attaches by name are held to it. `"accountId"` and `"region"` (default 123456789012 and
//! us-east-1) are those of the resource ARNs in policies.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

use serde::Deserialize;

use crate::template::Provisioned;

/// Names of the resources that exist in the account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "AccountFile")]
pub struct Account {
    pub thing_types: BTreeSet<String>,
    pub thing_groups: BTreeSet<String>,
    pub billing_groups: BTreeSet<String>,
    pub policies: BTreeSet<String>,
    /// The documents of the policies given with one, by name.
    pub policy_documents: BTreeMap<String, serde_json::Value>,
    /// `None` for the default.
    pub account_id: Option<String>,
    pub region: Option<String>,
}

/// An entry of `policies`: a name, or a name and its document.
#[derive(Debug, Clone)]
enum PolicyEntry {
    Name(String),
    Document {
        policy_name: String,
        policy_document: serde_json::Value,
    },
}

impl<'de> Deserialize<'de> for PolicyEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PolicyEntry, D::Error> {
        use serde::de::Error;
        let shape = || {
            D::Error::custom(
                "a policy is a name or {\"policyName\": NAME, \"policyDocument\": {...}}",
            )
        };
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(name) => Ok(PolicyEntry::Name(name)),
            serde_json::Value::Object(mut o) => {
                let name = match o.remove("policyName") {
                    Some(serde_json::Value::String(n)) => n,
                    _ => return Err(shape()),
                };
                let document = o.remove("policyDocument").ok_or_else(shape)?;
                if !o.is_empty() {
                    return Err(shape());
                }
                Ok(PolicyEntry::Document {
                    policy_name: name,
                    policy_document: document,
                })
            }
            _ => Err(shape()),
        }
    }
}

/// The file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AccountFile {
    #[serde(default)]
    pub thing_types: BTreeSet<String>,
    #[serde(default)]
    pub thing_groups: BTreeSet<String>,
    #[serde(default)]
    pub billing_groups: BTreeSet<String>,
    #[serde(default)]
    policies: Vec<PolicyEntry>,
    #[serde(default)]
    account_id: Option<String>,
    #[serde(default)]
    region: Option<String>,
}

impl TryFrom<AccountFile> for Account {
    type Error = String;

    fn try_from(f: AccountFile) -> Result<Account, String> {
        if let Some(id) = &f.account_id {
            if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("accountId {id:?}: must be 12 digits"));
            }
        }
        if let Some(r) = &f.region {
            let ok = !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(format!(
                    "region {r:?}: expected a region name like us-east-1"
                ));
            }
        }
        let mut policies = BTreeSet::new();
        let mut policy_documents = BTreeMap::new();
        for entry in f.policies {
            match entry {
                PolicyEntry::Name(name) => {
                    policies.insert(name);
                }
                PolicyEntry::Document {
                    policy_name,
                    policy_document,
                } => {
                    crate::policy::Policy::parse(&policy_name, &policy_document)
                        .map_err(|e| format!("policy {policy_name:?}: {e}"))?;
                    policies.insert(policy_name.clone());
                    policy_documents.insert(policy_name, policy_document);
                }
            }
        }
        Ok(Account {
            thing_types: f.thing_types,
            thing_groups: f.thing_groups,
            billing_groups: f.billing_groups,
            policies,
            policy_documents,
            account_id: f.account_id,
            region: f.region,
        })
    }
}

impl Account {
    /// Reads an account file.
    pub fn load(path: &Path) -> io::Result<Account> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: not an account definition: {e}", path.display()),
            )
        })
    }

    /// The first resource `provisioned` references that the account lacks, described for the
    /// rejection's `errorMessage`.
    pub fn missing(&self, provisioned: &Provisioned) -> Option<String> {
        if let Some(thing) = &provisioned.thing {
            if let Some(t) = thing
                .thing_type_name
                .as_ref()
                .filter(|t| !self.thing_types.contains(*t))
            {
                return Some(format!("Thing type {t} does not exist."));
            }
            if let Some(g) = thing
                .thing_groups
                .iter()
                .find(|g| !self.thing_groups.contains(*g))
            {
                return Some(format!("Thing group {g} does not exist."));
            }
            if let Some(b) = thing
                .billing_group
                .as_ref()
                .filter(|b| !self.billing_groups.contains(*b))
            {
                return Some(format!("Billing group {b} does not exist."));
            }
        }
        provisioned
            .policies
            .iter()
            .filter_map(|p| p.policy_name.as_ref())
            .find(|name| !self.policies.contains(*name))
            .map(|name| format!("Policy {name} does not exist."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::CertInfo;
    use crate::template::Template;
    use serde_json::json;

    fn provisioned(thing: serde_json::Value) -> Provisioned {
        let body = json!({
            "Resources": {
                "thing": {"Type": "AWS::IoT::Thing", "Properties": thing},
                "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "DevicePolicy"}}
            }
        });
        Template::parse(&body.to_string())
            .unwrap()
            .evaluate(&Default::default(), &CertInfo::default())
            .unwrap()
    }

    #[test]
    fn each_kind_of_missing_resource_is_named() {
        let account: Account = serde_json::from_value(json!({
            "thingTypes": ["sensor"], "thingGroups": ["fleet"],
            "billingGroups": ["lab"], "policies": ["DevicePolicy"]
        }))
        .unwrap();
        let full = json!({"ThingName": "t", "ThingTypeName": "sensor",
                          "ThingGroups": ["fleet"], "BillingGroup": "lab"});
        assert_eq!(account.missing(&provisioned(full)), None);
        for (thing, want) in [
            (
                json!({"ThingName": "t", "ThingTypeName": "meter"}),
                "Thing type meter",
            ),
            (
                json!({"ThingName": "t", "ThingGroups": ["fleet", "x"]}),
                "Thing group x",
            ),
            (
                json!({"ThingName": "t", "BillingGroup": "b"}),
                "Billing group b",
            ),
        ] {
            let got = account.missing(&provisioned(thing)).unwrap();
            assert!(got.starts_with(want), "{got}");
        }
        let empty = Account::default();
        let got = empty
            .missing(&provisioned(json!({"ThingName": "t"})))
            .unwrap();
        assert_eq!(got, "Policy DevicePolicy does not exist.");
    }

    #[test]
    fn account_id_region_and_policy_documents() {
        let account: Account = serde_json::from_value(json!({
            "accountId": "000011112222", "region": "eu-west-1",
            "policies": ["Plain", {"policyName": "Doc", "policyDocument":
                {"Statement": {"Effect": "Allow", "Action": "iot:*", "Resource": "*"}}}]
        }))
        .unwrap();
        assert_eq!(account.account_id.as_deref(), Some("000011112222"));
        assert_eq!(account.region.as_deref(), Some("eu-west-1"));
        assert!(account.policies.contains("Plain") && account.policies.contains("Doc"));
        assert_eq!(account.policy_documents.keys().collect::<Vec<_>>(), ["Doc"]);
        assert_eq!(Account::default().account_id, None);

        for (bad, want) in [
            (
                json!({"accountId": "12345"}),
                "accountId \"12345\": must be 12 digits",
            ),
            (json!({"region": "US East"}), "region \"US East\""),
            (
                json!({"policies": [{"policyName": "P", "policyDocument": {"Statement": []}}]}),
                "policy \"P\": Statement: the list is empty",
            ),
            (
                json!({"policies": [{"name": "P"}]}),
                "a policy is a name or",
            ),
        ] {
            let e = serde_json::from_value::<Account>(bad.clone())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("account.json");
        std::fs::write(&path, r#"{"thingType": ["x"]}"#).unwrap();
        assert_eq!(
            Account::load(&path).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        std::fs::write(&path, r#"{"policies": ["p"]}"#).unwrap();
        assert!(Account::load(&path).unwrap().policies.contains("p"));
    }
}
