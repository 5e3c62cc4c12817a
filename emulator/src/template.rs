//! Fleet-provisioning templates: parsed and checked once when loaded, evaluated for every
//! RegisterThing request.
//!
//! The language is the one AWS documents for provisioning templates: `Parameters` (with
//! `Default`), `Mappings`, the intrinsic functions `Ref`, `Fn::Join`, `Fn::Select`,
//! `Fn::FindInMap`, `Fn::Split` and `Fn::Sub`, the certificate pseudo-parameters, the
//! `AWS::IoT::Thing`, `AWS::IoT::Certificate` and `AWS::IoT::Policy` resources with their
//! `OverrideSettings`, and a flat `DeviceConfiguration`.
//!
//! Choices where AWS's documentation is silent (the README lists them):
//! - Pseudo-parameters always come from the certificate; a request parameter of the same name is
//!   ignored, so a device cannot claim another certificate's id or subject.
//! - A declared parameter with no value and no `Default` fails the request even when nothing
//!   references it, as AWS does.
//! - `OverrideSettings` values are literal strings; `CACertificatePem` is not supported.

use serde_json::{Map, Value};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

use crate::cert::CertInfo;

/// Longest template body AWS accepts, in characters.
pub const MAX_BODY_CHARS: usize = 10_240;

/// Deepest nesting of functions, lists and objects inside one property. Real templates stay
/// below ten; the bound keeps a hostile template from exhausting the stack.
const MAX_DEPTH: usize = 64;

/// Longest thing, thing type, group and policy name AWS accepts.
const MAX_NAME_CHARS: usize = 128;

/// Longest attribute value AWS accepts (AttributePayload in the API reference).
const MAX_ATTRIBUTE_VALUE_CHARS: usize = 800;

/// Attributes a thing may have without a thing type, and with one (AWS IoT's registry limits).
const MAX_ATTRIBUTES_WITHOUT_TYPE: usize = 3;
const MAX_ATTRIBUTES_WITH_TYPE: usize = 50;

/// Bytes of function results one evaluation may produce. Requests carry parameters of up to
/// 128 KiB and a template may reference them hundreds of times; a reply must fit in 128 KiB, so a
/// legitimate evaluation stays far below this.
const MAX_EVALUATED_BYTES: usize = 1 << 20;

const PSEUDO_PARAMETERS: [&str; 8] = [
    "AWS::IoT::Certificate::Id",
    "AWS::IoT::Certificate::CommonName",
    "AWS::IoT::Certificate::Country",
    "AWS::IoT::Certificate::Organization",
    "AWS::IoT::Certificate::OrganizationalUnit",
    "AWS::IoT::Certificate::DistinguishedNameQualifier",
    "AWS::IoT::Certificate::StateName",
    "AWS::IoT::Certificate::SerialNumber",
];

const PARAMETER_TYPES: [&str; 4] = ["String", "Number", "List", "CommaDelimitedList"];

impl CertInfo {
    fn pseudo(&self, name: &str) -> Option<&str> {
        match name {
            // An empty id only comes from `CertInfo::default()`: treat it as unknown.
            "AWS::IoT::Certificate::Id" => {
                Some(self.certificate_id.as_str()).filter(|id| !id.is_empty())
            }
            "AWS::IoT::Certificate::CommonName" => self.common_name.as_deref(),
            "AWS::IoT::Certificate::Country" => self.country.as_deref(),
            "AWS::IoT::Certificate::Organization" => self.organization.as_deref(),
            "AWS::IoT::Certificate::OrganizationalUnit" => self.organizational_unit.as_deref(),
            "AWS::IoT::Certificate::DistinguishedNameQualifier" => self.dn_qualifier.as_deref(),
            "AWS::IoT::Certificate::StateName" => self.state_name.as_deref(),
            "AWS::IoT::Certificate::SerialNumber" => self.serial_number.as_deref(),
            _ => None,
        }
    }
}

/// Why a template was refused or could not be evaluated. The message is meant for the
/// `errorMessage` of a 400 `InvalidParameters` rejection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl TemplateError {
    /// Prefixes the message with where in the template the error happened.
    fn within(self, path: &str) -> TemplateError {
        TemplateError(format!("{path}: {}", self.0))
    }
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

type Result<T> = std::result::Result<T, TemplateError>;

fn err(message: impl Into<String>) -> TemplateError {
    TemplateError(message.into())
}

/// What one RegisterThing request asks the registry to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Provisioned {
    pub thing: Option<ThingSpec>,
    pub certificate: Option<CertificateSpec>,
    pub policies: Vec<PolicySpec>,
    pub device_configuration: BTreeMap<String, String>,
}

/// An evaluated `AWS::IoT::Thing` resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThingSpec {
    pub thing_name: String,
    pub attributes: BTreeMap<String, String>,
    pub thing_type_name: Option<String>,
    pub thing_groups: Vec<String>,
    pub billing_group: Option<String>,
    /// `PackageVersions`: package name to version name (accepted and reported, not stored).
    pub package_versions: BTreeMap<String, String>,
    /// What to do with each property when the thing already exists, keyed by property name.
    pub overrides: BTreeMap<String, OverrideSetting>,
}

/// An `OverrideSettings` value: how a property of an existing resource is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideSetting {
    /// `DO_NOTHING`: keep the existing value.
    DoNothing,
    /// `REPLACE`: overwrite the existing value.
    Replace,
    /// `FAIL`: fail the request if the value would change.
    Fail,
    /// `MERGE`: add to the existing groups or attributes.
    Merge,
}

impl OverrideSetting {
    fn parse(text: &str) -> Option<OverrideSetting> {
        match text {
            "DO_NOTHING" => Some(OverrideSetting::DoNothing),
            "REPLACE" => Some(OverrideSetting::Replace),
            "FAIL" => Some(OverrideSetting::Fail),
            "MERGE" => Some(OverrideSetting::Merge),
            _ => None,
        }
    }
}

/// An evaluated `AWS::IoT::Certificate` resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSpec {
    pub certificate_id: String,
    /// `"ACTIVE"` or `"INACTIVE"`.
    pub status: String,
}

/// An evaluated `AWS::IoT::Policy` resource: exactly one of the two fields is set.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySpec {
    pub logical_id: String,
    pub policy_name: Option<String>,
    /// Always a JSON object (a document given as a string is parsed).
    pub policy_document: Option<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Thing,
    Certificate,
    Policy,
}

const THING_PROPERTIES: [&str; 6] = [
    "ThingName",
    "AttributePayload",
    "ThingTypeName",
    "ThingGroups",
    "BillingGroup",
    "PackageVersions",
];
const CERTIFICATE_PROPERTIES: [&str; 3] = ["CertificateId", "CertificatePem", "Status"];

impl Kind {
    fn from_type(name: &str) -> Option<Kind> {
        match name {
            "AWS::IoT::Thing" => Some(Kind::Thing),
            "AWS::IoT::Certificate" => Some(Kind::Certificate),
            "AWS::IoT::Policy" => Some(Kind::Policy),
            _ => None,
        }
    }

    fn properties(self) -> &'static [&'static str] {
        match self {
            Kind::Thing => &THING_PROPERTIES,
            Kind::Certificate => &CERTIFICATE_PROPERTIES,
            Kind::Policy => &["PolicyName", "PolicyDocument"],
        }
    }

    /// Properties an `OverrideSettings` entry may name.
    fn overridable(self) -> &'static [&'static str] {
        match self {
            // All but ThingName and PackageVersions.
            Kind::Thing => &THING_PROPERTIES[1..5],
            Kind::Certificate => &CERTIFICATE_PROPERTIES[2..],
            Kind::Policy => &[],
        }
    }
}

#[derive(Debug, Clone)]
struct Resource {
    logical_id: String,
    kind: Kind,
    properties: Map<String, Value>,
    overrides: BTreeMap<String, OverrideSetting>,
}

#[derive(Debug, Clone)]
struct Parameter {
    name: String,
    default: Option<String>,
}

/// The value of a function: AWS's functions produce strings or lists of strings.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    List(Vec<String>),
}

type Mappings = BTreeMap<String, BTreeMap<String, BTreeMap<String, Val>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Ref,
    Join,
    Select,
    FindInMap,
    Split,
    Sub,
}

impl Func {
    fn from_name(name: &str) -> Option<Func> {
        match name {
            "Ref" => Some(Func::Ref),
            "Fn::Join" => Some(Func::Join),
            "Fn::Select" => Some(Func::Select),
            "Fn::FindInMap" => Some(Func::FindInMap),
            "Fn::Split" => Some(Func::Split),
            "Fn::Sub" => Some(Func::Sub),
            _ => None,
        }
    }
}

/// Recognises a function call: an object whose single key is `Ref` or starts with `Fn::`.
fn intrinsic(value: &Value) -> Result<Option<(Func, &Value)>> {
    let Value::Object(map) = value else {
        return Ok(None);
    };
    let Some(key) = map
        .keys()
        .find(|k| k.as_str() == "Ref" || k.starts_with("Fn::"))
    else {
        return Ok(None);
    };
    if map.len() != 1 {
        return Err(err(format!("{key} must be the only key of its object")));
    }
    let func = Func::from_name(key).ok_or_else(|| {
        err(format!(
            "unknown function {key}; provisioning templates support Ref, Fn::Join, \
             Fn::Select, Fn::FindInMap, Fn::Split and Fn::Sub"
        ))
    })?;
    let arg = map.values().next().unwrap_or(&Value::Null);
    Ok(Some((func, arg)))
}

fn too_deep() -> TemplateError {
    err(format!(
        "functions, lists and objects are nested too deeply (more than {MAX_DEPTH} levels)"
    ))
}

/// The kind of a JSON value, for messages ("a number", "an object").
pub(crate) fn describe(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A fixed-length argument list, e.g. `[delimiter, list]` for `Fn::Join`.
fn args<'v, const N: usize>(arg: &'v Value, func: &str) -> Result<&'v [Value; N]> {
    match arg {
        Value::Array(items) => <&[Value; N]>::try_from(items.as_slice()).map_err(|_| {
            err(format!(
                "{func} takes a list of {N} arguments, got {}",
                items.len()
            ))
        }),
        other => Err(err(format!(
            "{func} takes a list of {N} arguments, got {}",
            describe(other)
        ))),
    }
}

/// A parsed, structurally valid provisioning template.
#[derive(Debug, Clone)]
pub struct Template {
    parameters: Vec<Parameter>,
    mappings: Mappings,
    resources: Vec<Resource>,
    device_configuration: Vec<(String, Value)>,
}

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

    /// Evaluates the template for one request: `params` are the request's `parameters`, `cert`
    /// describes the certificate being registered.
    pub fn evaluate(
        &self,
        params: &BTreeMap<String, String>,
        cert: &CertInfo,
    ) -> std::result::Result<Provisioned, TemplateError> {
        let values = self.resolve_parameters(params, cert)?;
        let eval = Eval {
            mappings: &self.mappings,
            values: &values,
            budget: Cell::new(MAX_EVALUATED_BYTES),
        };
        let mut out = Provisioned {
            thing: None,
            certificate: None,
            policies: Vec::new(),
            device_configuration: BTreeMap::new(),
        };
        for resource in &self.resources {
            match resource.kind {
                Kind::Thing => out.thing = Some(eval.thing(resource)?),
                Kind::Certificate => out.certificate = Some(eval.certificate(resource)?),
                Kind::Policy => out.policies.push(eval.policy(resource)?),
            }
        }
        for (key, value) in &self.device_configuration {
            let text = eval
                .string(value, 0)
                .map_err(|e| e.within(&format!("DeviceConfiguration.{key}")))?;
            out.device_configuration.insert(key.clone(), text);
        }
        Ok(out)
    }

    /// Every declared parameter gets a value or the request fails; pseudo-parameters that the
    /// certificate provides are available even when not declared.
    fn resolve_parameters(
        &self,
        params: &BTreeMap<String, String>,
        cert: &CertInfo,
    ) -> Result<BTreeMap<String, String>> {
        let mut values = BTreeMap::new();
        for name in PSEUDO_PARAMETERS {
            if let Some(value) = cert.pseudo(name) {
                values.insert(name.to_owned(), value.to_owned());
            }
        }
        for parameter in &self.parameters {
            if values.contains_key(&parameter.name) {
                continue;
            }
            let pseudo = PSEUDO_PARAMETERS.contains(&parameter.name.as_str());
            // The certificate is the only source of a pseudo-parameter besides its Default.
            let supplied = if pseudo {
                None
            } else {
                params.get(&parameter.name)
            };
            match supplied.or(parameter.default.as_ref()) {
                Some(value) => {
                    values.insert(parameter.name.clone(), value.clone());
                }
                None if pseudo => {
                    return Err(err(format!(
                        "parameter '{}' has no value: the certificate's subject has no such \
                         field and the parameter has no Default",
                        parameter.name
                    )))
                }
                None => {
                    return Err(err(format!(
                        "parameter '{}' is required: the request does not supply it and it has \
                         no Default",
                        parameter.name
                    )))
                }
            }
        }
        Ok(values)
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

/// Shape checks that need no parameter values, so a broken template is refused when loaded.
fn check_property(kind: Kind, name: &str, value: &Value, checker: &Checker<'_>) -> Result<()> {
    match (kind, name) {
        (Kind::Thing, "AttributePayload") => {
            if intrinsic(value)?.is_some() {
                return Err(err("must be an object of attribute names to strings"));
            }
            let Value::Object(attributes) = value else {
                return Err(err(format!(
                    "must be an object of attribute names to strings, got {}",
                    describe(value)
                )));
            };
            for (attribute, value) in attributes {
                check_attribute_name(attribute)?;
                checker.flat(value).map_err(|e| e.within(attribute))?;
            }
            Ok(())
        }
        (Kind::Thing, "PackageVersions") => {
            let Value::Object(packages) = value else {
                return Err(err(format!(
                    "must be an object of package names to version names, got {}",
                    describe(value)
                )));
            };
            for (package, version) in packages {
                checker.flat(version).map_err(|e| e.within(package))?;
            }
            Ok(())
        }
        (Kind::Thing, "ThingGroups") => match value {
            Value::Array(_) => checker.check(value, 0),
            _ if intrinsic(value)?.is_some() => checker.check(value, 0),
            other => Err(err(format!(
                "must be a list of group names, got {}",
                describe(other)
            ))),
        },
        (Kind::Policy, "PolicyDocument") => match value {
            Value::String(_) | Value::Object(_) => checker.check(value, 0),
            other => Err(err(format!(
                "must be a JSON object or a string holding one, got {}",
                describe(other)
            ))),
        },
        _ => checker.flat(value),
    }
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

fn check_attribute_name(name: &str) -> Result<()> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || "_.,@/:#-".contains(c);
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || !name.chars().all(valid_char) {
        return Err(err(format!(
            "attribute name '{name}' must be 1-{MAX_NAME_CHARS} characters of \
             [a-zA-Z0-9_.,@/:#-]"
        )));
    }
    Ok(())
}

/// AWS's pattern for attribute values: up to 800 of `[a-zA-Z0-9_.,@/:#=\[\]-]`, so no spaces.
fn check_attribute_value(name: &str, value: &str) -> Result<()> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || "_.,@/:#=[]-".contains(c);
    if value.chars().count() > MAX_ATTRIBUTE_VALUE_CHARS || !value.chars().all(valid_char) {
        return Err(err(format!(
            "{name}: attribute values are up to {MAX_ATTRIBUTE_VALUE_CHARS} characters of \
             [a-zA-Z0-9_.,@/:#=[]-] (no spaces)"
        )));
    }
    Ok(())
}

/// Thing, thing type, thing group and billing group names share AWS's pattern.
fn check_name(what: &str, name: &str) -> Result<()> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-');
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || !name.chars().all(valid_char) {
        return Err(err(format!(
            "{what} '{name}' must be 1-{MAX_NAME_CHARS} characters of [a-zA-Z0-9:_-]"
        )));
    }
    Ok(())
}

fn check_policy_name(name: &str) -> Result<()> {
    let valid_char = |c: char| c.is_alphanumeric() || "_+=,.@-".contains(c);
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || !name.chars().all(valid_char) {
        return Err(err(format!(
            "policy name '{name}' must be 1-{MAX_NAME_CHARS} characters of [\\w+=,.@-]"
        )));
    }
    Ok(())
}

/// Load-time checks of expressions: known functions only, and `Ref` only to declared
/// parameters or pseudo-parameters.
struct Checker<'a> {
    parameters: &'a [Parameter],
}

impl Checker<'_> {
    /// A value that must end up a single string: a literal string or a function.
    fn flat(&self, value: &Value) -> Result<()> {
        match value {
            Value::String(_) => Ok(()),
            _ if intrinsic(value)?.is_some() => self.check(value, 0),
            Value::Object(_) => Err(err("must be a string; nested objects are not allowed here")),
            other => Err(err(format!("must be a string, got {}", describe(other)))),
        }
    }

    fn check(&self, value: &Value, depth: usize) -> Result<()> {
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        if let Some((func, arg)) = intrinsic(value)? {
            if func == Func::Ref {
                let Value::String(target) = arg else {
                    return Err(err(format!(
                        "Ref takes a parameter name, got {}",
                        describe(arg)
                    )));
                };
                let declared = self.parameters.iter().any(|p| &p.name == target);
                if !declared && !PSEUDO_PARAMETERS.contains(&target.as_str()) {
                    return Err(err(format!(
                        "Ref to '{target}', which is not a declared parameter"
                    )));
                }
                return Ok(());
            }
            return self.check(arg, depth + 1);
        }
        match value {
            Value::Array(items) => items.iter().try_for_each(|v| self.check(v, depth + 1)),
            Value::Object(map) => map.values().try_for_each(|v| self.check(v, depth + 1)),
            _ => Ok(()),
        }
    }
}

/// Evaluation of expressions against one request's parameter values.
struct Eval<'a> {
    mappings: &'a Mappings,
    values: &'a BTreeMap<String, String>,
    /// Bytes still allowed for function results (`MAX_EVALUATED_BYTES` at the start).
    budget: Cell<usize>,
}

impl Eval<'_> {
    fn value(&self, value: &Value, depth: usize) -> Result<Val> {
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        if let Some((func, arg)) = intrinsic(value)? {
            return self.call(func, arg, depth + 1);
        }
        match value {
            Value::String(text) => Ok(Val::Str(text.clone())),
            Value::Array(items) => items
                .iter()
                .map(|item| self.string(item, depth + 1))
                .collect::<Result<Vec<_>>>()
                .map(Val::List),
            Value::Null => Err(err("a null value where a string was expected")),
            other => Err(err(format!(
                "expected a string or a function, got {}",
                describe(other)
            ))),
        }
    }

    fn string(&self, value: &Value, depth: usize) -> Result<String> {
        match self.value(value, depth)? {
            Val::Str(text) => Ok(text),
            Val::List(_) => Err(err("expected a string, got a list")),
        }
    }

    fn list(&self, value: &Value, depth: usize) -> Result<Vec<String>> {
        match self.value(value, depth)? {
            Val::List(items) => Ok(items),
            Val::Str(_) => Err(err("expected a list, got a string")),
        }
    }

    /// Any JSON (a policy document), with the functions in it replaced by their values.
    fn json(&self, value: &Value, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            return Err(too_deep());
        }
        if let Some((func, arg)) = intrinsic(value)? {
            return Ok(match self.call(func, arg, depth + 1)? {
                Val::Str(text) => Value::String(text),
                Val::List(items) => Value::Array(items.into_iter().map(Value::String).collect()),
            });
        }
        match value {
            Value::Array(items) => items
                .iter()
                .map(|item| self.json(item, depth + 1))
                .collect::<Result<Vec<_>>>()
                .map(Value::Array),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.json(v, depth + 1)?)))
                .collect::<Result<Map<_, _>>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }

    fn parameter(&self, name: &str) -> Result<String> {
        self.values.get(name).cloned().ok_or_else(|| {
            if PSEUDO_PARAMETERS.contains(&name) {
                err(format!(
                    "'{name}' has no value: the certificate's subject has no such field"
                ))
            } else {
                err(format!("'{name}' is not a declared parameter"))
            }
        })
    }

    /// Calls a function and charges its result to the evaluation's budget.
    fn call(&self, func: Func, arg: &Value, depth: usize) -> Result<Val> {
        let result = self.call_unmetered(func, arg, depth)?;
        let size = match &result {
            Val::Str(text) => text.len(),
            Val::List(items) => items.iter().map(String::len).sum(),
        };
        let left = self.budget.get().checked_sub(size).ok_or_else(|| {
            err(format!(
                "the template's functions produce more than {MAX_EVALUATED_BYTES} bytes"
            ))
        })?;
        self.budget.set(left);
        Ok(result)
    }

    fn call_unmetered(&self, func: Func, arg: &Value, depth: usize) -> Result<Val> {
        let d = depth + 1;
        match func {
            Func::Ref => match arg {
                Value::String(name) => self.parameter(name).map(Val::Str),
                other => Err(err(format!(
                    "Ref takes a parameter name, got {}",
                    describe(other)
                ))),
            },
            Func::Join => {
                let [delimiter, list] = args::<2>(arg, "Fn::Join")?;
                let delimiter = self
                    .string(delimiter, d)
                    .map_err(|e| e.within("Fn::Join delimiter"))?;
                let items = self.list(list, d).map_err(|e| e.within("Fn::Join list"))?;
                Ok(Val::Str(items.join(&delimiter)))
            }
            Func::Select => self.select(arg, d),
            Func::FindInMap => {
                let [map, top, second] = args::<3>(arg, "Fn::FindInMap")?;
                let keys = [map, top, second]
                    .into_iter()
                    .map(|key| self.string(key, d))
                    .collect::<Result<Vec<_>>>()
                    .map_err(|e| e.within("Fn::FindInMap"))?;
                let (map, top, second) = (&keys[0], &keys[1], &keys[2]);
                let table = self.mappings.get(map).ok_or_else(|| {
                    err(format!("Fn::FindInMap: there is no mapping named '{map}'"))
                })?;
                let row = table.get(top).ok_or_else(|| {
                    err(format!("Fn::FindInMap: mapping '{map}' has no key '{top}'"))
                })?;
                row.get(second).cloned().ok_or_else(|| {
                    err(format!(
                        "Fn::FindInMap: mapping '{map}', key '{top}' has no key '{second}'"
                    ))
                })
            }
            Func::Split => {
                let [delimiter, source] = args::<2>(arg, "Fn::Split")?;
                let delimiter = self
                    .string(delimiter, d)
                    .map_err(|e| e.within("Fn::Split delimiter"))?;
                if delimiter.is_empty() {
                    return Err(err("Fn::Split: the delimiter is empty"));
                }
                match self.value(source, d).map_err(|e| e.within("Fn::Split"))? {
                    Val::Str(text) => Ok(Val::List(
                        text.split(delimiter.as_str()).map(str::to_owned).collect(),
                    )),
                    Val::List(_) => Err(err(
                        "Fn::Split: the value to split must be a string, got a list",
                    )),
                }
            }
            Func::Sub => self.sub(arg, d),
        }
    }

    fn select(&self, arg: &Value, depth: usize) -> Result<Val> {
        let [index, list] = args::<2>(arg, "Fn::Select")?;
        let index_text = match index {
            Value::Number(number) => number.to_string(),
            other => self
                .string(other, depth)
                .map_err(|e| e.within("Fn::Select index"))?,
        };
        let index: usize = index_text.trim().parse().map_err(|_| {
            err(format!(
                "Fn::Select: the index must be a non-negative integer, got '{index_text}'"
            ))
        })?;
        let out_of_range = |len: usize| {
            err(format!(
                "Fn::Select: index {index} is out of range for a list of {len}"
            ))
        };
        match list {
            Value::Null => Err(err("Fn::Select: the list is null")),
            Value::Array(items) => {
                let item = items.get(index).ok_or_else(|| out_of_range(items.len()))?;
                if item.is_null() {
                    return Err(err(format!("Fn::Select: element {index} is null")));
                }
                self.string(item, depth)
                    .map(Val::Str)
                    .map_err(|e| e.within("Fn::Select"))
            }
            other => {
                let items = self
                    .list(other, depth)
                    .map_err(|e| e.within("Fn::Select list"))?;
                let len = items.len();
                items
                    .into_iter()
                    .nth(index)
                    .map(Val::Str)
                    .ok_or_else(|| out_of_range(len))
            }
        }
    }

    fn sub(&self, arg: &Value, depth: usize) -> Result<Val> {
        let usage =
            || err("Fn::Sub takes a string, or a list of a string and an object of variables");
        let (text, vars) = match arg {
            Value::String(text) => (text, BTreeMap::new()),
            Value::Array(items) if items.len() == 2 => {
                let (Value::String(text), Value::Object(vars)) = (&items[0], &items[1]) else {
                    return Err(usage());
                };
                let vars = vars
                    .iter()
                    .map(|(name, value)| {
                        let value = self
                            .string(value, depth)
                            .map_err(|e| e.within(&format!("Fn::Sub variable {name}")))?;
                        Ok((name.as_str(), value))
                    })
                    .collect::<Result<BTreeMap<_, _>>>()?;
                (text, vars)
            }
            _ => return Err(usage()),
        };
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').ok_or_else(|| {
                err(format!(
                    "Fn::Sub: '${{' without a closing '}}' in \"{text}\""
                ))
            })?;
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                // `${!Name}` is the escape for a literal `${Name}`.
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(value) = vars.get(name) {
                out.push_str(value);
            } else if let Some(value) = self.values.get(name) {
                out.push_str(value);
            } else if name.is_empty() {
                return Err(err(format!(
                    "Fn::Sub: empty variable '${{}}' in \"{text}\""
                )));
            } else if PSEUDO_PARAMETERS.contains(&name) {
                return Err(err(format!(
                    "Fn::Sub: '${{{name}}}' has no value: the certificate's subject has no \
                     such field"
                )));
            } else if name.contains('.') {
                return Err(err(format!(
                    "Fn::Sub: '${{{name}}}': resource attributes are not available in \
                     provisioning templates"
                )));
            } else {
                return Err(err(format!(
                    "Fn::Sub: unknown variable '${{{name}}}': it is neither in the variable \
                     map nor a declared parameter"
                )));
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(Val::Str(out))
    }

    fn thing(&self, resource: &Resource) -> Result<ThingSpec> {
        let at = |property: &str| {
            let path = format!("Resources.{}.Properties.{property}", resource.logical_id);
            move |e: TemplateError| e.within(&path)
        };
        let p = &resource.properties;
        let name_property = |property: &str| -> Result<Option<String>> {
            p.get(property)
                .map(|value| {
                    let name = self.string(value, 0)?;
                    check_name(property, &name)?;
                    Ok(name)
                })
                .transpose()
                .map_err(at(property))
        };
        let thing_name = name_property("ThingName")?
            .ok_or_else(|| err("ThingName is required").within(&resource.logical_id))?;
        // An object of names to strings, each value evaluated and then checked.
        let string_map = |property: &str, check: fn(&str, &str) -> Result<()>| {
            let mut out = BTreeMap::new();
            if let Some(Value::Object(entries)) = p.get(property) {
                for (key, value) in entries {
                    let text = self
                        .string(value, 0)
                        .map_err(|e| e.within(key))
                        .map_err(at(property))?;
                    check(key, &text).map_err(at(property))?;
                    out.insert(key.clone(), text);
                }
            }
            Ok::<_, TemplateError>(out)
        };
        let attributes = string_map("AttributePayload", check_attribute_value)?;
        let thing_type_name = name_property("ThingTypeName")?;
        let limit = if thing_type_name.is_some() {
            MAX_ATTRIBUTES_WITH_TYPE
        } else {
            MAX_ATTRIBUTES_WITHOUT_TYPE
        };
        if attributes.len() > limit {
            return Err(err(format!(
                "{} attributes; a thing {} a thing type may have at most {limit}",
                attributes.len(),
                if thing_type_name.is_some() {
                    "with"
                } else {
                    "without"
                }
            )))
            .map_err(at("AttributePayload"));
        }
        let package_versions = string_map("PackageVersions", |_, _| Ok(()))?;
        let thing_groups = match p.get("ThingGroups") {
            None => Vec::new(),
            Some(value) => {
                let groups = self.list(value, 0).map_err(at("ThingGroups"))?;
                for group in &groups {
                    check_name("thing group", group).map_err(at("ThingGroups"))?;
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

    fn certificate(&self, resource: &Resource) -> Result<CertificateSpec> {
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

    fn policy(&self, resource: &Resource) -> Result<PolicySpec> {
        let at = |property: &str| {
            let path = format!("Resources.{}.Properties.{property}", resource.logical_id);
            move |e: TemplateError| e.within(&path)
        };
        let p = &resource.properties;
        let policy_name = match p.get("PolicyName") {
            None => None,
            Some(value) => {
                let name = self.string(value, 0).map_err(at("PolicyName"))?;
                check_policy_name(&name).map_err(at("PolicyName"))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SEED: &str = include_str!("../templates/FleetTemplate.json");
    const CERT_ID: &str = "4f2b8a9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f70";

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn cert() -> CertInfo {
        CertInfo {
            certificate_id: CERT_ID.to_owned(),
            ..CertInfo::default()
        }
    }

    fn seed_params() -> BTreeMap<String, String> {
        params(&[("SerialNumber", "1"), ("DeviceLocation", "Seattle")])
    }

    /// A template whose DeviceConfiguration entry `v` is `expr`, with parameters A="a,b,c",
    /// B="b" and a mapping Table.
    fn template_with(expr: Value) -> String {
        json!({
            "Parameters": {
                "A": {"Type": "String"},
                "B": {"Type": "String", "Default": "b"},
            },
            "Mappings": {
                "Table": {
                    "Seattle": {"Url": "https://example.aws", "Zones": ["z1", "z2"]},
                },
            },
            "Resources": {},
            "DeviceConfiguration": {"v": expr},
        })
        .to_string()
    }

    fn eval_expr(expr: Value) -> std::result::Result<String, TemplateError> {
        let template = Template::parse(&template_with(expr))?;
        let mut out = template.evaluate(&params(&[("A", "a,b,c")]), &cert())?;
        Ok(out.device_configuration.remove("v").unwrap_or_default())
    }

    fn expect_error(result: std::result::Result<impl fmt::Debug, TemplateError>, part: &str) {
        match result {
            Ok(value) => panic!("expected an error containing {part:?}, got {value:?}"),
            Err(TemplateError(message)) => assert!(
                message.contains(part),
                "error {message:?} does not contain {part:?}"
            ),
        }
    }

    fn thing_template(properties: Value, overrides: Value) -> String {
        json!({
            "Parameters": {"Groups": {"Type": "String", "Default": "g1,g2"}},
            "Resources": {
                "thing": {
                    "Type": "AWS::IoT::Thing",
                    "Properties": properties,
                    "OverrideSettings": overrides,
                },
            },
        })
        .to_string()
    }

    /// `body` parsed and evaluated without parameters for the default certificate.
    fn evaluate(body: &str) -> std::result::Result<Provisioned, TemplateError> {
        Template::parse(body)
            .unwrap()
            .evaluate(&params(&[]), &cert())
    }

    fn resource_template(kind: &str, properties: Value) -> String {
        json!({
            "Resources": {"r": {"Type": kind, "Properties": properties}},
        })
        .to_string()
    }

    #[test]
    fn seed_template_gives_the_documented_result() {
        let template = Template::parse(SEED).unwrap();
        let out = template.evaluate(&seed_params(), &cert()).unwrap();

        let thing = out.thing.unwrap();
        assert_eq!(thing.thing_name, "ThingPrefix_1");
        assert_eq!(
            thing.attributes,
            params(&[("version", "v1"), ("serialNumber", "serialNumber")])
        );
        assert_eq!(thing.thing_type_name, None);
        assert!(thing.thing_groups.is_empty());
        assert_eq!(thing.billing_group, None);
        let overrides: BTreeMap<String, OverrideSetting> = [
            ("AttributePayload", OverrideSetting::Merge),
            ("ThingTypeName", OverrideSetting::Replace),
            ("ThingGroups", OverrideSetting::DoNothing),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(thing.overrides, overrides);

        assert_eq!(
            out.certificate,
            Some(CertificateSpec {
                certificate_id: CERT_ID.to_owned(),
                status: "ACTIVE".to_owned(),
            })
        );

        let seed: Value = serde_json::from_str(SEED).unwrap();
        assert_eq!(
            out.policies,
            vec![PolicySpec {
                logical_id: "policy".to_owned(),
                policy_name: None,
                policy_document: Some(
                    seed["Resources"]["policy"]["Properties"]["PolicyDocument"].clone()
                ),
            }]
        );

        assert_eq!(
            out.device_configuration,
            params(&[
                ("FallbackUrl", "https://www.example.com/test-site"),
                ("LocationUrl", "https://example.aws"),
            ])
        );
    }

    #[test]
    fn missing_parameter_is_named() {
        let template = Template::parse(SEED).unwrap();
        let result = template.evaluate(&params(&[("SerialNumber", "1")]), &cert());
        expect_error(result, "parameter 'DeviceLocation' is required");
    }

    #[test]
    fn declared_parameter_is_required_even_when_unreferenced() {
        let body = json!({
            "Parameters": {"Unused": {"Type": "String"}},
            "Resources": {},
        })
        .to_string();
        let template = Template::parse(&body).unwrap();
        expect_error(template.evaluate(&params(&[]), &cert()), "'Unused'");
    }

    #[test]
    fn default_fills_a_missing_parameter_and_a_request_value_wins() {
        assert_eq!(eval_expr(json!({"Ref": "B"})).unwrap(), "b");
        let template = Template::parse(&template_with(json!({"Ref": "B"}))).unwrap();
        let out = template
            .evaluate(&params(&[("A", "x"), ("B", "given")]), &cert())
            .unwrap();
        assert_eq!(out.device_configuration["v"], "given");
    }

    #[test]
    fn numeric_default_becomes_a_string() {
        let body = json!({
            "Parameters": {"Port": {"Type": "Number", "Default": 8883}},
            "Resources": {},
            "DeviceConfiguration": {"port": {"Ref": "Port"}},
        })
        .to_string();
        let out = evaluate(&body).unwrap();
        assert_eq!(out.device_configuration["port"], "8883");
    }

    #[test]
    fn request_cannot_override_the_certificate_id() {
        let template = Template::parse(SEED).unwrap();
        let mut request = seed_params();
        request.insert("AWS::IoT::Certificate::Id".to_owned(), "forged".to_owned());
        let out = template.evaluate(&request, &cert()).unwrap();
        assert_eq!(out.certificate.unwrap().certificate_id, CERT_ID);
    }

    #[test]
    fn declared_pseudo_parameter_without_a_certificate_value_fails() {
        let template = Template::parse(SEED).unwrap();
        let result = template.evaluate(&seed_params(), &CertInfo::default());
        expect_error(result, "parameter 'AWS::IoT::Certificate::Id' has no value");
    }

    #[test]
    fn ref_gives_the_parameter() {
        assert_eq!(eval_expr(json!({"Ref": "A"})).unwrap(), "a,b,c");
    }

    #[test]
    fn ref_to_an_undeclared_parameter_is_refused_at_load() {
        expect_error(
            Template::parse(&template_with(json!({"Ref": "Nope"}))),
            "Ref to 'Nope', which is not a declared parameter",
        );
        expect_error(
            Template::parse(&template_with(json!({"Ref": ["A"]}))),
            "Ref takes a parameter name",
        );
    }

    #[test]
    fn join_concatenates_with_the_delimiter() {
        let expr = json!({"Fn::Join": ["-", ["x", {"Ref": "B"}, "z"]]});
        assert_eq!(eval_expr(expr).unwrap(), "x-b-z");
        let expr = json!({"Fn::Join": ["+", {"Fn::Split": [",", {"Ref": "A"}]}]});
        assert_eq!(eval_expr(expr).unwrap(), "a+b+c");
    }

    #[test]
    fn join_errors() {
        expect_error(
            eval_expr(json!({"Fn::Join": ["-"]})),
            "Fn::Join takes a list of 2",
        );
        expect_error(
            eval_expr(json!({"Fn::Join": ["-", "x"]})),
            "expected a list",
        );
        expect_error(
            eval_expr(json!({"Fn::Join": ["-", ["x", ["nested"]]]})),
            "expected a string, got a list",
        );
    }

    #[test]
    fn select_picks_by_index() {
        assert_eq!(
            eval_expr(json!({"Fn::Select": [1, ["x", "y", "z"]]})).unwrap(),
            "y"
        );
        assert_eq!(
            eval_expr(json!({"Fn::Select": ["2", {"Fn::Split": [",", {"Ref": "A"}]}]})).unwrap(),
            "c"
        );
        // A null elsewhere in the list does not matter.
        assert_eq!(
            eval_expr(json!({"Fn::Select": [0, ["x", null]]})).unwrap(),
            "x"
        );
    }

    #[test]
    fn select_out_of_range_is_an_error() {
        expect_error(
            eval_expr(json!({"Fn::Select": [3, ["x", "y", "z"]]})),
            "index 3 is out of range for a list of 3",
        );
        expect_error(
            eval_expr(json!({"Fn::Select": [5, {"Fn::Split": [",", {"Ref": "A"}]}]})),
            "index 5 is out of range for a list of 3",
        );
        expect_error(
            eval_expr(json!({"Fn::Select": [-1, ["x"]]})),
            "non-negative integer",
        );
        expect_error(
            eval_expr(json!({"Fn::Select": ["one", ["x"]]})),
            "non-negative integer",
        );
    }

    #[test]
    fn select_of_null_is_an_error() {
        expect_error(
            eval_expr(json!({"Fn::Select": [0, null]})),
            "Fn::Select: the list is null",
        );
        expect_error(
            eval_expr(json!({"Fn::Select": [1, ["x", null]]})),
            "Fn::Select: element 1 is null",
        );
    }

    #[test]
    fn find_in_map_looks_up_both_keys() {
        let expr = json!({"Fn::FindInMap": ["Table", "Seattle", "Url"]});
        assert_eq!(eval_expr(expr).unwrap(), "https://example.aws");
        let expr = json!({"Fn::Join": [" ", {"Fn::FindInMap": ["Table", "Seattle", "Zones"]}]});
        assert_eq!(eval_expr(expr).unwrap(), "z1 z2");
    }

    #[test]
    fn find_in_map_missing_key_is_an_error() {
        expect_error(
            eval_expr(json!({"Fn::FindInMap": ["Nope", "Seattle", "Url"]})),
            "there is no mapping named 'Nope'",
        );
        expect_error(
            eval_expr(json!({"Fn::FindInMap": ["Table", {"Ref": "B"}, "Url"]})),
            "mapping 'Table' has no key 'b'",
        );
        expect_error(
            eval_expr(json!({"Fn::FindInMap": ["Table", "Seattle", "Port"]})),
            "mapping 'Table', key 'Seattle' has no key 'Port'",
        );
        let template = Template::parse(SEED).unwrap();
        let request = params(&[("SerialNumber", "1"), ("DeviceLocation", "Paris")]);
        expect_error(
            template.evaluate(&request, &cert()),
            "DeviceConfiguration.LocationUrl: Fn::FindInMap: mapping 'LocationTable' has no key 'Paris'",
        );
    }

    #[test]
    fn split_gives_a_list() {
        let expr = json!({"Fn::Select": [1, {"Fn::Split": ["::", "p::q::r"]}]});
        assert_eq!(eval_expr(expr).unwrap(), "q");
    }

    #[test]
    fn split_of_a_non_string_is_an_error() {
        expect_error(
            eval_expr(json!({"Fn::Split": [",", ["a", "b"]]})),
            "Fn::Split: the value to split must be a string, got a list",
        );
        expect_error(
            eval_expr(json!({"Fn::Select": [0, {"Fn::Split": [",", 42]}]})),
            "got a number",
        );
        expect_error(
            eval_expr(json!({"Fn::Select": [0, {"Fn::Split": ["", "ab"]}]})),
            "the delimiter is empty",
        );
    }

    #[test]
    fn split_result_is_not_a_string() {
        expect_error(
            eval_expr(json!({"Fn::Split": [",", "a,b"]})),
            "DeviceConfiguration.v: expected a string, got a list",
        );
    }

    #[test]
    fn sub_string_form_uses_parameters_and_escapes() {
        let expr = json!({"Fn::Sub": "${B}-${AWS::IoT::Certificate::Id}-${!Literal}-$x"});
        assert_eq!(
            eval_expr(expr).unwrap(),
            format!("b-{CERT_ID}-${{Literal}}-$x")
        );
    }

    #[test]
    fn sub_list_form_uses_variables_first() {
        let expr = json!({"Fn::Sub": ["${B}/${Zone}", {
            "B": "from-map",
            "Zone": {"Fn::Select": [0, {"Fn::FindInMap": ["Table", "Seattle", "Zones"]}]},
        }]});
        assert_eq!(eval_expr(expr).unwrap(), "from-map/z1");
    }

    #[test]
    fn sub_bad_variable_is_an_error() {
        expect_error(
            eval_expr(json!({"Fn::Sub": "id-${Missing}"})),
            "Fn::Sub: unknown variable '${Missing}'",
        );
        expect_error(
            eval_expr(json!({"Fn::Sub": "id-${thing.Arn}"})),
            "resource attributes are not available",
        );
        expect_error(eval_expr(json!({"Fn::Sub": "id-${B"})), "without a closing");
        expect_error(eval_expr(json!({"Fn::Sub": "${}"})), "empty variable");
        expect_error(
            eval_expr(json!({"Fn::Sub": "${AWS::IoT::Certificate::Country}"})),
            "has no value",
        );
        expect_error(
            eval_expr(json!({"Fn::Sub": ["${X}", {"X": ["a"]}]})),
            "Fn::Sub variable X: expected a string, got a list",
        );
        expect_error(eval_expr(json!({"Fn::Sub": 7})), "Fn::Sub takes a string");
    }

    #[test]
    fn functions_nest() {
        let expr = json!({"Fn::Join": ["", [
            {"Fn::Sub": ["${P}_", {"P": {"Fn::FindInMap": ["Table", "Seattle", "Url"]}}]},
            {"Fn::Select": [2, {"Fn::Split": [",", {"Ref": "A"}]}]},
        ]]});
        assert_eq!(eval_expr(expr).unwrap(), "https://example.aws_c");
    }

    #[test]
    fn unknown_function_is_an_error() {
        expect_error(
            Template::parse(&template_with(json!({"Fn::If": ["c", "a", "b"]}))),
            "unknown function Fn::If",
        );
        expect_error(
            Template::parse(&template_with(
                json!({"Fn::Join": ["", [{"Fn::GetAtt": ["t", "Arn"]}]]}),
            )),
            "unknown function Fn::GetAtt",
        );
        expect_error(
            Template::parse(&template_with(json!({"Ref": "A", "Extra": 1}))),
            "Ref must be the only key",
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut expr = json!({"Ref": "A"});
        for _ in 0..30 {
            expr = json!({"Fn::Join": ["", [expr]]});
        }
        let body = template_with(expr);
        assert!(body.chars().count() <= MAX_BODY_CHARS);
        expect_error(Template::parse(&body), "nested too deeply");

        // Deeper than the JSON parser's own limit: still an error, never a stack overflow.
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        expect_error(Template::parse(&deep), "not valid JSON");
    }

    #[test]
    fn moderate_nesting_is_fine() {
        let mut expr = json!({"Ref": "B"});
        for _ in 0..8 {
            expr = json!({"Fn::Join": ["", [expr, "!"]]});
        }
        assert_eq!(eval_expr(expr).unwrap(), "b!!!!!!!!");
    }

    #[test]
    fn evaluation_output_is_bounded() {
        let entries = |n: usize| -> Map<String, Value> {
            (0..n)
                .map(|i| (format!("k{i}"), json!({"Ref": "Big"})))
                .collect()
        };
        let big = "x".repeat(64 * 1024);
        let body = json!({
            "Parameters": {"Big": {"Type": "String"}},
            "Resources": {},
            "DeviceConfiguration": entries(16),
        })
        .to_string();
        let out = Template::parse(&body)
            .unwrap()
            .evaluate(&params(&[("Big", &big)]), &cert())
            .unwrap();
        assert_eq!(out.device_configuration.len(), 16);
        let body = json!({
            "Parameters": {"Big": {"Type": "String"}},
            "Resources": {},
            "DeviceConfiguration": entries(17),
        })
        .to_string();
        expect_error(
            Template::parse(&body)
                .unwrap()
                .evaluate(&params(&[("Big", &big)]), &cert()),
            "produce more than 1048576 bytes",
        );
    }

    #[test]
    fn every_pseudo_parameter_comes_from_the_certificate() {
        let device_configuration: Map<String, Value> = PSEUDO_PARAMETERS
            .iter()
            .map(|name| ((*name).to_owned(), json!({"Ref": name})))
            .collect();
        let body =
            json!({"Resources": {}, "DeviceConfiguration": device_configuration}).to_string();
        let template = Template::parse(&body).unwrap();
        let cert = CertInfo {
            certificate_id: CERT_ID.to_owned(),
            common_name: Some("device-1".to_owned()),
            country: Some("US".to_owned()),
            organization: Some("Example Corp".to_owned()),
            organizational_unit: Some("Sensors".to_owned()),
            dn_qualifier: Some("dnq-7".to_owned()),
            state_name: Some("Washington".to_owned()),
            serial_number: Some("SN-0042".to_owned()),
        };
        let out = template.evaluate(&params(&[]), &cert).unwrap();
        let expected = params(&[
            ("AWS::IoT::Certificate::Id", CERT_ID),
            ("AWS::IoT::Certificate::CommonName", "device-1"),
            ("AWS::IoT::Certificate::Country", "US"),
            ("AWS::IoT::Certificate::Organization", "Example Corp"),
            ("AWS::IoT::Certificate::OrganizationalUnit", "Sensors"),
            ("AWS::IoT::Certificate::DistinguishedNameQualifier", "dnq-7"),
            ("AWS::IoT::Certificate::StateName", "Washington"),
            ("AWS::IoT::Certificate::SerialNumber", "SN-0042"),
        ]);
        assert_eq!(out.device_configuration, expected);

        // Each one is missing in turn: the error names it, and a request value does not stand in.
        for name in &PSEUDO_PARAMETERS[1..] {
            let mut partial = cert.clone();
            match *name {
                "AWS::IoT::Certificate::CommonName" => partial.common_name = None,
                "AWS::IoT::Certificate::Country" => partial.country = None,
                "AWS::IoT::Certificate::Organization" => partial.organization = None,
                "AWS::IoT::Certificate::OrganizationalUnit" => partial.organizational_unit = None,
                "AWS::IoT::Certificate::DistinguishedNameQualifier" => partial.dn_qualifier = None,
                "AWS::IoT::Certificate::StateName" => partial.state_name = None,
                "AWS::IoT::Certificate::SerialNumber" => partial.serial_number = None,
                other => panic!("unexpected {other}"),
            }
            let result = template.evaluate(&params(&[(name, "spoofed")]), &partial);
            expect_error(result, &format!("'{name}' has no value"));
        }
    }

    #[test]
    fn declared_pseudo_parameter_can_have_a_default() {
        let body = json!({
            "Parameters": {"AWS::IoT::Certificate::Country": {"Type": "String", "Default": "ZZ"}},
            "Resources": {},
            "DeviceConfiguration": {"c": {"Ref": "AWS::IoT::Certificate::Country"}},
        })
        .to_string();
        let template = Template::parse(&body).unwrap();
        let out = template.evaluate(&params(&[]), &cert()).unwrap();
        assert_eq!(out.device_configuration["c"], "ZZ");
        let from_cert = CertInfo {
            country: Some("DE".to_owned()),
            ..cert()
        };
        let out = template.evaluate(&params(&[]), &from_cert).unwrap();
        assert_eq!(out.device_configuration["c"], "DE");
    }

    #[test]
    fn thing_properties_evaluate() {
        let body = thing_template(
            json!({
                "ThingName": {"Fn::Sub": "dev-${AWS::IoT::Certificate::SerialNumber}"},
                "AttributePayload": {"zone": {"Fn::Select": [0, {"Fn::Split": [",", {"Ref": "Groups"}]}]}},
                "ThingTypeName": "Sensor",
                "ThingGroups": {"Fn::Split": [",", {"Ref": "Groups"}]},
                "BillingGroup": "billing-1",
            }),
            json!({"ThingGroups": "MERGE", "BillingGroup": "FAIL"}),
        );
        let template = Template::parse(&body).unwrap();
        let cert = CertInfo {
            serial_number: Some("42".to_owned()),
            ..cert()
        };
        let thing = template
            .evaluate(&params(&[]), &cert)
            .unwrap()
            .thing
            .unwrap();
        assert_eq!(thing.thing_name, "dev-42");
        assert_eq!(thing.attributes, params(&[("zone", "g1")]));
        assert_eq!(thing.thing_type_name.as_deref(), Some("Sensor"));
        assert_eq!(thing.thing_groups, ["g1", "g2"]);
        assert_eq!(thing.billing_group.as_deref(), Some("billing-1"));
        assert_eq!(thing.overrides["ThingGroups"], OverrideSetting::Merge);
        assert_eq!(thing.overrides["BillingGroup"], OverrideSetting::Fail);
    }

    #[test]
    fn thing_name_is_validated() {
        let bad = |name: &str| evaluate(&thing_template(json!({"ThingName": name}), json!({})));
        expect_error(
            bad("has space"),
            "Resources.thing.Properties.ThingName: ThingName 'has space'",
        );
        expect_error(bad(""), "must be 1-128 characters");
        expect_error(bad(&"x".repeat(129)), "must be 1-128 characters");
        assert!(bad(&"x".repeat(128)).is_ok());
        expect_error(
            Template::parse(&thing_template(json!({"AttributePayload": {}}), json!({}))),
            "ThingName is required",
        );
    }

    #[test]
    fn attribute_payload_must_be_flat() {
        let body = thing_template(
            json!({"ThingName": "t", "AttributePayload": {"a": {"nested": "x"}}}),
            json!({}),
        );
        expect_error(
            Template::parse(&body),
            "AttributePayload: a: must be a string",
        );
        let body = thing_template(
            json!({"ThingName": "t", "AttributePayload": {"bad name": "x"}}),
            json!({}),
        );
        expect_error(Template::parse(&body), "attribute name 'bad name'");
    }

    #[test]
    fn merge_on_a_wrong_property_is_an_error() {
        let body = thing_template(json!({"ThingName": "t"}), json!({"ThingTypeName": "MERGE"}));
        expect_error(
            Template::parse(&body),
            "ThingTypeName: MERGE applies only to ThingGroups and AttributePayload",
        );
        let body = json!({"Resources": {"c": {
            "Type": "AWS::IoT::Certificate",
            "Properties": {"CertificateId": "x", "Status": "Active"},
            "OverrideSettings": {"Status": "MERGE"},
        }}})
        .to_string();
        expect_error(Template::parse(&body), "Status: MERGE applies only");
    }

    #[test]
    fn override_settings_are_checked() {
        let body = thing_template(json!({"ThingName": "t"}), json!({"ThingName": "REPLACE"}));
        expect_error(Template::parse(&body), "'ThingName' cannot be overridden");
        let body = thing_template(json!({"ThingName": "t"}), json!({"ThingGroups": "KEEP"}));
        expect_error(Template::parse(&body), "unknown setting 'KEEP'");
    }

    #[test]
    fn certificate_status_is_normalised() {
        let eval = |properties: Value| {
            Template::parse(&resource_template("AWS::IoT::Certificate", properties))
                .and_then(|t| t.evaluate(&params(&[]), &cert()))
                .map(|out| out.certificate.unwrap_or_else(|| panic!("no certificate")))
        };
        let spec = eval(
            json!({"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "Inactive"}),
        )
        .unwrap();
        assert_eq!(spec.status, "INACTIVE");
        assert_eq!(spec.certificate_id, CERT_ID);
        let spec = eval(json!({"CertificateId": "abc", "Status": "ACTIVE"})).unwrap();
        assert_eq!(spec.status, "ACTIVE");
        assert_eq!(
            eval(json!({"CertificateId": "abc"})).unwrap().status,
            "ACTIVE"
        );
        expect_error(
            eval(json!({"CertificateId": "abc", "Status": "Revoked"})),
            "'Revoked' is not a certificate status",
        );
        expect_error(
            eval(json!({"CertificateId": "abc", "CertificatePem": "x"})),
            "not both",
        );
        expect_error(
            eval(json!({"Status": "Active"})),
            "CertificateId or CertificatePem is required",
        );
        expect_error(
            eval(json!({"CertificateId": "abc", "CACertificatePem": "x"})),
            "unknown property 'CACertificatePem'",
        );
    }

    #[test]
    fn certificate_pem_gives_the_sha256_id() {
        let pem = "-----BEGIN CERTIFICATE-----\naGVs\nbG8=\n-----END CERTIFICATE-----\n";
        let body = resource_template(
            "AWS::IoT::Certificate",
            json!({"CertificatePem": pem, "Status": "Active"}),
        );
        let out = evaluate(&body).unwrap();
        // SHA-256 of "hello", the bytes this PEM carries.
        assert_eq!(
            out.certificate.unwrap().certificate_id,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let body = resource_template(
            "AWS::IoT::Certificate",
            json!({"CertificatePem": "-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----"}),
        );
        expect_error(evaluate(&body), "not a PEM certificate");
    }

    #[test]
    fn overridable_properties() {
        assert_eq!(
            Kind::Thing.overridable(),
            [
                "AttributePayload",
                "ThingTypeName",
                "ThingGroups",
                "BillingGroup"
            ]
        );
        assert_eq!(Kind::Certificate.overridable(), ["Status"]);
        assert!(Kind::Policy.overridable().is_empty());
    }

    #[test]
    fn policy_name_or_document_not_both() {
        let body = resource_template(
            "AWS::IoT::Policy",
            json!({"PolicyName": "p", "PolicyDocument": {"Version": "2012-10-17"}}),
        );
        expect_error(
            Template::parse(&body),
            "give PolicyName or PolicyDocument, not both",
        );
        let body = resource_template("AWS::IoT::Policy", json!({}));
        expect_error(
            Template::parse(&body),
            "PolicyName or PolicyDocument is required",
        );
    }

    #[test]
    fn policy_by_name_and_by_document_string() {
        let body = json!({
            "Parameters": {"Topic": {"Type": "String", "Default": "telemetry"}},
            "Resources": {
                "named": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "DevicePolicy"}},
                "doc": {"Type": "AWS::IoT::Policy", "Properties": {
                    "PolicyDocument": {"Fn::Sub": "{\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":\"iot:Publish\",\"Resource\":\"${Topic}\"}]}"},
                }},
                "obj": {"Type": "AWS::IoT::Policy", "Properties": {
                    "PolicyDocument": {"Statement": [{"Resource": {"Fn::Split": [",", "a,b"]}}]},
                }},
            },
        })
        .to_string();
        let out = evaluate(&body).unwrap();
        assert_eq!(out.policies.len(), 3);
        assert_eq!(out.policies[0].policy_name.as_deref(), Some("DevicePolicy"));
        assert_eq!(out.policies[0].policy_document, None);
        assert_eq!(
            out.policies[1].policy_document.as_ref().unwrap()["Statement"][0]["Resource"],
            "telemetry"
        );
        assert_eq!(
            out.policies[2].policy_document,
            Some(json!({"Statement": [{"Resource": ["a", "b"]}]}))
        );

        let body = resource_template("AWS::IoT::Policy", json!({"PolicyDocument": "not json"}));
        expect_error(evaluate(&body), "the policy document is not valid JSON");
        let body = resource_template("AWS::IoT::Policy", json!({"PolicyName": "bad name"}));
        expect_error(evaluate(&body), "policy name 'bad name'");
    }

    #[test]
    fn nested_device_configuration_is_an_error() {
        let body = json!({
            "Resources": {},
            "DeviceConfiguration": {"Nested": {"Url": "https://example.aws"}},
        })
        .to_string();
        expect_error(
            Template::parse(&body),
            "DeviceConfiguration.Nested: must be a string; nested objects are not allowed",
        );
        let body = json!({"Resources": {}, "DeviceConfiguration": {"n": 1}}).to_string();
        expect_error(
            Template::parse(&body),
            "DeviceConfiguration.n: must be a string, got a number",
        );
        let body = json!({"Resources": {}, "DeviceConfiguration": ["x"]}).to_string();
        expect_error(
            Template::parse(&body),
            "DeviceConfiguration must be an object",
        );
    }

    #[test]
    fn oversize_body_is_refused() {
        let seed = SEED.trim_end();
        let padding = MAX_BODY_CHARS - seed.chars().count();
        // Exactly at the limit is fine; whitespace counts as characters.
        let at_limit = format!("{seed}{}", " ".repeat(padding));
        assert!(Template::parse(&at_limit).is_ok());
        let over = format!("{seed}{}", " ".repeat(padding + 1));
        expect_error(
            Template::parse(&over),
            "the template body is 10241 characters long; the limit is 10240",
        );
        // Characters, not bytes: 10,240 two-byte characters still fit.
        let wide = format!(
            "{{\"Resources\":{{}},\"Description\":\"{}\"}}",
            "é".repeat(10_200)
        );
        assert!(Template::parse(&wide).is_ok());
    }

    #[test]
    fn structural_errors() {
        expect_error(Template::parse("{"), "not valid JSON");
        expect_error(Template::parse("[]"), "must be a JSON object");
        expect_error(Template::parse("{}"), "no Resources section");
        expect_error(
            Template::parse(r#"{"Resources":{},"Conditions":{}}"#),
            "unknown template section 'Conditions'",
        );
        expect_error(
            Template::parse(r#"{"Resources":{},"Parameters":{"P":{"Type":"Blob"}}}"#),
            "Parameters.P: unsupported Type 'Blob'",
        );
        expect_error(
            Template::parse(r#"{"Resources":{},"Parameters":{"P":{}}}"#),
            "Parameters.P has no Type",
        );
        expect_error(
            Template::parse(r#"{"Resources":{},"Mappings":{"M":{"k":{"v":{"Ref":"x"}}}}}"#),
            "Mappings.M.k.v must be a string or a list of strings",
        );
        expect_error(
            Template::parse(&resource_template("AWS::S3::Bucket", json!({}))),
            "unsupported resource Type 'AWS::S3::Bucket'",
        );
        expect_error(
            Template::parse(&resource_template(
                "AWS::IoT::Thing",
                json!({"ThingNmae": "t"}),
            )),
            "unknown property 'ThingNmae'",
        );
        let two_things = json!({"Resources": {
            "a": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "a"}},
            "b": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": "b"}},
        }})
        .to_string();
        expect_error(Template::parse(&two_things), "only one AWS::IoT::Thing");
    }
}
