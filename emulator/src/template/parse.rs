//! Reading a template body: its sections, parameters, mappings, resources and override settings.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

use super::check::{check_property, Checker};
use super::{
    describe, err, intrinsic, Kind, Mappings, OverrideSetting, Parameter, Resource, Result,
    Template, TemplateError, Val, MAX_BODY_CHARS, PARAMETER_TYPES,
};

impl Template {
    /// Parses a template body and checks its structure: sections, parameter and mapping shapes,
    /// resource types and properties, override settings, function names and `Ref` targets.
    pub fn parse(body: &str) -> std::result::Result<Template, TemplateError> {
        let chars = body.chars().count();
        if chars > MAX_BODY_CHARS {
            return Err(err(format!(
                "the template body is {chars} characters long; the limit is {MAX_BODY_CHARS}"
            )));
        }
        let root: Value = serde_json::from_str(body)
            .map_err(|e| err(format!("the template is not valid JSON: {e}")))?;
        let Value::Object(root) = root else {
            return Err(err("the template must be a JSON object"));
        };
        for key in root.keys() {
            if !matches!(
                key.as_str(),
                "AWSTemplateFormatVersion"
                    | "Description"
                    | "Parameters"
                    | "Mappings"
                    | "Resources"
                    | "DeviceConfiguration"
            ) {
                return Err(err(format!(
                    "unknown template section '{key}'; expected Parameters, Mappings, \
                     Resources or DeviceConfiguration"
                )));
            }
        }
        let parameters = parse_parameters(root.get("Parameters"))?;
        let mappings = parse_mappings(root.get("Mappings"))?;
        let checker = Checker {
            parameters: &parameters,
        };
        let resources = parse_resources(root.get("Resources"), &checker)?;
        let device_configuration =
            parse_device_configuration(root.get("DeviceConfiguration"), &checker)?;
        Ok(Template {
            parameters,
            mappings,
            resources,
            device_configuration,
        })
    }
}

/// A section that may be absent but must be an object when present.
fn optional_object<'a>(
    section: Option<&'a Value>,
    not_an_object: &str,
) -> Result<Option<&'a Map<String, Value>>> {
    match section {
        None => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => Err(err(not_an_object)),
    }
}

fn parse_parameters(section: Option<&Value>) -> Result<Vec<Parameter>> {
    let section = optional_object(section, "Parameters must be an object")?;
    let mut parameters = Vec::with_capacity(section.map_or(0, Map::len));
    for (name, definition) in section.into_iter().flatten() {
        if name.is_empty() {
            return Err(err("Parameters: a parameter name is empty"));
        }
        let Value::Object(definition) = definition else {
            return Err(err(format!("Parameters.{name} must be an object")));
        };
        match definition.get("Type") {
            Some(Value::String(kind)) if PARAMETER_TYPES.contains(&kind.as_str()) => {}
            Some(Value::String(kind)) => {
                return Err(err(format!(
                    "Parameters.{name}: unsupported Type '{kind}'; use String"
                )))
            }
            Some(_) => return Err(err(format!("Parameters.{name}: Type must be a string"))),
            None => return Err(err(format!("Parameters.{name} has no Type"))),
        }
        let default = match definition.get("Default") {
            None => None,
            Some(Value::String(text)) => Some(text.clone()),
            Some(Value::Number(number)) => Some(number.to_string()),
            Some(other) => {
                return Err(err(format!(
                    "Parameters.{name}: Default must be a string, got {}",
                    describe(other)
                )))
            }
        };
        parameters.push(Parameter {
            name: name.clone(),
            default,
        });
    }
    Ok(parameters)
}

fn parse_mappings(section: Option<&Value>) -> Result<Mappings> {
    let section = optional_object(section, "Mappings must be an object")?;
    let mut mappings = Mappings::new();
    for (name, table) in section.into_iter().flatten() {
        let Value::Object(table) = table else {
            return Err(err(format!("Mappings.{name} must be an object")));
        };
        let mut rows = BTreeMap::new();
        for (top, row) in table {
            let Value::Object(row) = row else {
                return Err(err(format!("Mappings.{name}.{top} must be an object")));
            };
            let mut cells = BTreeMap::new();
            for (second, cell) in row {
                let path = || format!("Mappings.{name}.{top}.{second}");
                let value = match cell {
                    Value::String(text) => Val::Str(text.clone()),
                    Value::Array(items) => Val::List(
                        items
                            .iter()
                            .map(|item| match item {
                                Value::String(text) => Ok(text.clone()),
                                other => Err(err(format!(
                                    "{}: list items must be strings, got {}",
                                    path(),
                                    describe(other)
                                ))),
                            })
                            .collect::<Result<Vec<_>>>()?,
                    ),
                    // Functions are not evaluated inside Mappings, so an object is just wrong.
                    other => {
                        return Err(err(format!(
                            "{} must be a string or a list of strings, got {}",
                            path(),
                            describe(other)
                        )))
                    }
                };
                cells.insert(second.clone(), value);
            }
            rows.insert(top.clone(), cells);
        }
        mappings.insert(name.clone(), rows);
    }
    Ok(mappings)
}

fn parse_resources(section: Option<&Value>, checker: &Checker<'_>) -> Result<Vec<Resource>> {
    let Some(section) = section else {
        return Err(err("the template has no Resources section"));
    };
    let Value::Object(section) = section else {
        return Err(err("Resources must be an object"));
    };
    let mut resources = Vec::with_capacity(section.len());
    for (logical_id, definition) in section {
        let resource = parse_resource(logical_id, definition, checker)
            .map_err(|e| e.within(&format!("Resources.{logical_id}")))?;
        resources.push(resource);
    }
    for (kind, label) in [
        (Kind::Thing, "AWS::IoT::Thing"),
        (Kind::Certificate, "AWS::IoT::Certificate"),
    ] {
        if resources.iter().filter(|r| r.kind == kind).count() > 1 {
            return Err(err(format!(
                "Resources: a template may contain only one {label} resource"
            )));
        }
    }
    Ok(resources)
}

fn parse_resource(logical_id: &str, definition: &Value, checker: &Checker<'_>) -> Result<Resource> {
    let Value::Object(definition) = definition else {
        return Err(err("a resource must be an object"));
    };
    for key in definition.keys() {
        if !matches!(key.as_str(), "Type" | "Properties" | "OverrideSettings") {
            return Err(err(format!(
                "unknown key '{key}'; a resource has Type, Properties and OverrideSettings"
            )));
        }
    }
    let kind = match definition.get("Type") {
        Some(Value::String(name)) => Kind::from_type(name).ok_or_else(|| {
            err(format!(
                "unsupported resource Type '{name}'; use AWS::IoT::Thing, \
                 AWS::IoT::Certificate or AWS::IoT::Policy"
            ))
        })?,
        Some(_) => return Err(err("Type must be a string")),
        None => return Err(err("the resource has no Type")),
    };
    let properties = match definition.get("Properties") {
        Some(Value::Object(properties)) => properties.clone(),
        Some(_) => return Err(err("Properties must be an object")),
        None => return Err(err("the resource has no Properties")),
    };
    for (name, value) in &properties {
        if !kind.properties().contains(&name.as_str()) {
            let hint = if name == "CACertificatePem" {
                " (registering a certificate from another CA is not supported)".to_owned()
            } else {
                format!("; allowed: {}", kind.properties().join(", "))
            };
            return Err(err(format!("unknown property '{name}'{hint}")));
        }
        check_property(kind, name, value, checker)
            .map_err(|e| e.within(&format!("Properties.{name}")))?;
    }
    let has = |name: &str| properties.contains_key(name);
    match kind {
        Kind::Thing if !has("ThingName") => return Err(err("ThingName is required")),
        Kind::Certificate => match (has("CertificateId"), has("CertificatePem")) {
            (true, true) => return Err(err("give CertificateId or CertificatePem, not both")),
            (false, false) => return Err(err("CertificateId or CertificatePem is required")),
            _ => {}
        },
        Kind::Policy => match (has("PolicyName"), has("PolicyDocument")) {
            (true, true) => return Err(err("give PolicyName or PolicyDocument, not both")),
            (false, false) => return Err(err("PolicyName or PolicyDocument is required")),
            _ => {}
        },
        _ => {}
    }
    let overrides = parse_overrides(kind, definition.get("OverrideSettings"))
        .map_err(|e| e.within("OverrideSettings"))?;
    Ok(Resource {
        logical_id: logical_id.to_owned(),
        kind,
        properties,
        overrides,
    })
}

fn parse_overrides(
    kind: Kind,
    section: Option<&Value>,
) -> Result<BTreeMap<String, OverrideSetting>> {
    let section = optional_object(section, "must be an object")?;
    let mut overrides = BTreeMap::new();
    for (property, setting) in section.into_iter().flatten() {
        if !kind.overridable().contains(&property.as_str()) {
            return Err(err(format!(
                "'{property}' cannot be overridden; allowed: {}",
                if kind.overridable().is_empty() {
                    "none".to_owned()
                } else {
                    kind.overridable().join(", ")
                }
            )));
        }
        let Value::String(text) = setting else {
            return Err(err(format!("{property} must be a string")));
        };
        let setting = OverrideSetting::parse(text).ok_or_else(|| {
            err(format!(
                "{property}: unknown setting '{text}'; use DO_NOTHING, REPLACE, FAIL or MERGE"
            ))
        })?;
        if setting == OverrideSetting::Merge
            && !matches!(property.as_str(), "ThingGroups" | "AttributePayload")
        {
            return Err(err(format!(
                "{property}: MERGE applies only to ThingGroups and AttributePayload"
            )));
        }
        overrides.insert(property.clone(), setting);
    }
    Ok(overrides)
}

fn parse_device_configuration(
    section: Option<&Value>,
    checker: &Checker<'_>,
) -> Result<Vec<(String, Value)>> {
    let Some(section) = section else {
        return Ok(Vec::new());
    };
    if intrinsic(section)?.is_some() {
        return Err(err(
            "DeviceConfiguration must be an object of names to strings",
        ));
    }
    let Value::Object(section) = section else {
        return Err(err(
            "DeviceConfiguration must be an object of names to strings",
        ));
    };
    let mut entries = Vec::with_capacity(section.len());
    for (key, value) in section {
        checker
            .flat(value)
            .map_err(|e| e.within(&format!("DeviceConfiguration.{key}")))?;
        entries.push((key.clone(), value.clone()));
    }
    Ok(entries)
}
