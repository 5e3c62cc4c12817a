//! Evaluating a template's resources: the thing, certificate and policies one RegisterThing
//! request asks for, with AWS's limits applied to what they evaluate to.

use serde_json::Value;
use std::collections::BTreeMap;

use super::evaluate::Eval;
use super::{
    describe, err, CertificateSpec, PolicySpec, Resource, Result, TemplateError, ThingSpec,
};
use crate::aws_limits::{
    check_attribute_count, check_attribute_value, check_name, check_policy_name,
};

impl Eval<'_> {
    pub(super) fn thing(&self, resource: &Resource) -> Result<ThingSpec> {
        let at = |property: &str| {
            let path = format!("Resources.{}.Properties.{property}", resource.logical_id);
            move |e: TemplateError| e.within(&path)
        };
        let p = &resource.properties;
        let name_property = |property: &str| -> Result<Option<String>> {
            p.get(property)
                .map(|value| {
                    let name = self.string(value, 0)?;
                    check_name(property, &name).map_err(TemplateError)?;
                    Ok(name)
                })
                .transpose()
                .map_err(at(property))
        };
        let thing_name = name_property("ThingName")?
            .ok_or_else(|| err("ThingName is required").within(&resource.logical_id))?;
        // An object of names to strings, each value evaluated and then checked.
        let string_map =
            |property: &str, check: fn(&str, &str) -> std::result::Result<(), String>| {
                let mut out = BTreeMap::new();
                if let Some(Value::Object(entries)) = p.get(property) {
                    for (key, value) in entries {
                        let text = self
                            .string(value, 0)
                            .map_err(|e| e.within(key))
                            .map_err(at(property))?;
                        check(key, &text)
                            .map_err(TemplateError)
                            .map_err(at(property))?;
                        out.insert(key.clone(), text);
                    }
                }
                Ok::<_, TemplateError>(out)
            };
        let attributes = string_map("AttributePayload", check_attribute_value)?;
        let thing_type_name = name_property("ThingTypeName")?;
        check_attribute_count(attributes.len(), thing_type_name.is_some())
            .map_err(TemplateError)
            .map_err(at("AttributePayload"))?;
        let package_versions = string_map("PackageVersions", |_, _| Ok(()))?;
        let thing_groups = match p.get("ThingGroups") {
            None => Vec::new(),
            Some(value) => {
                let groups = self.list(value, 0).map_err(at("ThingGroups"))?;
                for group in &groups {
                    check_name("thing group", group)
                        .map_err(TemplateError)
                        .map_err(at("ThingGroups"))?;
                }
                groups
            }
        };
        Ok(ThingSpec {
            thing_name,
            attributes,
            thing_type_name,
            thing_groups,
            billing_group: name_property("BillingGroup")?,
            package_versions,
            overrides: resource.overrides.clone(),
        })
    }

    pub(super) fn certificate(&self, resource: &Resource) -> Result<CertificateSpec> {
        let at = |property: &str| {
            let path = format!("Resources.{}.Properties.{property}", resource.logical_id);
            move |e: TemplateError| e.within(&path)
        };
        let p = &resource.properties;
        let certificate_id = match (p.get("CertificateId"), p.get("CertificatePem")) {
            (Some(id), _) => self.string(id, 0).map_err(at("CertificateId"))?,
            (None, Some(pem)) => self
                .string(pem, 0)
                .and_then(|pem| certificate_id_from_pem(&pem))
                .map_err(at("CertificatePem"))?,
            (None, None) => return Err(err("CertificateId or CertificatePem is required")),
        };
        // AWS documents `Status` as optional with ACTIVE as its default.
        let status = match p.get("Status") {
            None => "ACTIVE".to_owned(),
            Some(value) => {
                let status = self.string(value, 0).map_err(at("Status"))?;
                let upper = status.to_ascii_uppercase();
                if upper != "ACTIVE" && upper != "INACTIVE" {
                    return Err(err(format!(
                        "'{status}' is not a certificate status; use Active or Inactive"
                    )))
                    .map_err(at("Status"));
                }
                upper
            }
        };
        Ok(CertificateSpec {
            certificate_id,
            status,
        })
    }

    pub(super) fn policy(&self, resource: &Resource) -> Result<PolicySpec> {
        let at = |property: &str| {
            let path = format!("Resources.{}.Properties.{property}", resource.logical_id);
            move |e: TemplateError| e.within(&path)
        };
        let p = &resource.properties;
        let policy_name = match p.get("PolicyName") {
            None => None,
            Some(value) => {
                let name = self.string(value, 0).map_err(at("PolicyName"))?;
                check_policy_name(&name)
                    .map_err(TemplateError)
                    .map_err(at("PolicyName"))?;
                Some(name)
            }
        };
        let policy_document = match p.get("PolicyDocument") {
            None => None,
            Some(value) => Some(self.policy_document(value).map_err(at("PolicyDocument"))?),
        };
        Ok(PolicySpec {
            logical_id: resource.logical_id.clone(),
            policy_name,
            policy_document,
        })
    }

    /// AWS's examples give the document as a JSON string; the seed gives an object. Both work.
    fn policy_document(&self, value: &Value) -> Result<Value> {
        let document = match self.json(value, 0)? {
            Value::String(text) => serde_json::from_str(&text)
                .map_err(|e| err(format!("the policy document is not valid JSON: {e}")))?,
            other => other,
        };
        if !document.is_object() {
            return Err(err(format!(
                "the policy document must be a JSON object, got {}",
                describe(&document)
            )));
        }
        Ok(document)
    }
}

/// The certificate id AWS uses: SHA-256 hex of the DER inside the PEM.
fn certificate_id_from_pem(pem: &str) -> Result<String> {
    crate::cert::pem_block(pem.as_bytes(), "CERTIFICATE")
        .filter(|der| !der.is_empty())
        .map(|der| crate::cert::certificate_id(&der))
        .ok_or_else(|| err("not a PEM certificate"))
}
