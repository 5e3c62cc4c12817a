//! Load-time checks of a template's expressions, so that a broken template is refused when it is
//! loaded rather than when a device registers.

use serde_json::Value;

use super::{
    describe, err, intrinsic, too_deep, Func, Kind, Parameter, Result, TemplateError, MAX_DEPTH,
    PSEUDO_PARAMETERS,
};
use crate::aws_limits::check_attribute_name;

/// Shape checks that need no parameter values, so a broken template is refused when loaded.
pub(super) fn check_property(
    kind: Kind,
    name: &str,
    value: &Value,
    checker: &Checker<'_>,
) -> Result<()> {
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
                check_attribute_name(attribute).map_err(TemplateError)?;
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

/// Load-time checks of expressions: known functions only, and `Ref` only to declared
/// parameters or pseudo-parameters.
pub(super) struct Checker<'a> {
    pub(super) parameters: &'a [Parameter],
}

impl Checker<'_> {
    /// A value that must end up a single string: a literal string or a function.
    pub(super) fn flat(&self, value: &Value) -> Result<()> {
        match value {
            Value::String(_) => Ok(()),
            _ if intrinsic(value)?.is_some() => self.check(value, 0),
            Value::Object(_) => Err(err("must be a string; nested objects are not allowed here")),
            other => Err(err(format!("must be a string, got {}", describe(other)))),
        }
    }

    pub(super) fn check(&self, value: &Value, depth: usize) -> Result<()> {
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
