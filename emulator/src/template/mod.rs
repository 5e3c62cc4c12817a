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
//!
//! Here are the template's parts and the values it produces; `parse` reads a body, `check`
//! checks expressions when it is loaded, `evaluate` computes them for a request and `resources`
//! turns the resources into what the registry does. AWS's name and attribute limits are
//! [`crate::aws_limits`]'s.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fmt;

mod check;
mod evaluate;
mod parse;
mod resources;
#[cfg(test)]
mod tests;
/// Longest template body AWS accepts, in characters.
pub const MAX_BODY_CHARS: usize = 10_240;

/// Deepest nesting of functions, lists and objects inside one property. Real templates stay
/// below ten; the bound keeps a hostile template from exhausting the stack.
const MAX_DEPTH: usize = 64;

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
