//! Evaluating a template's expressions for one request: the parameters resolved, then `Ref` and
//! the `Fn::` functions computed within a budget.

use serde_json::{Map, Value};
use std::cell::Cell;
use std::collections::BTreeMap;

use super::{
    args, describe, err, intrinsic, too_deep, Func, Kind, Mappings, Provisioned, Result, Template,
    TemplateError, Val, MAX_DEPTH, PSEUDO_PARAMETERS,
};
use crate::cert::CertInfo;

/// Bytes of function results one evaluation may produce. Requests carry parameters of up to
/// 128 KiB and a template may reference them hundreds of times; a reply must fit in 128 KiB, so a
/// legitimate evaluation stays far below this.
const MAX_EVALUATED_BYTES: usize = 1 << 20;

/// The value of pseudo-parameter `name` from the certificate's fields.
fn pseudo<'c>(cert: &'c CertInfo, name: &str) -> Option<&'c str> {
    match name {
        // An empty id only comes from `CertInfo::default()`: treat it as unknown.
        "AWS::IoT::Certificate::Id" => {
            Some(cert.certificate_id.as_str()).filter(|id| !id.is_empty())
        }
        "AWS::IoT::Certificate::CommonName" => cert.common_name.as_deref(),
        "AWS::IoT::Certificate::Country" => cert.country.as_deref(),
        "AWS::IoT::Certificate::Organization" => cert.organization.as_deref(),
        "AWS::IoT::Certificate::OrganizationalUnit" => cert.organizational_unit.as_deref(),
        "AWS::IoT::Certificate::DistinguishedNameQualifier" => cert.dn_qualifier.as_deref(),
        "AWS::IoT::Certificate::StateName" => cert.state_name.as_deref(),
        "AWS::IoT::Certificate::SerialNumber" => cert.serial_number.as_deref(),
        _ => None,
    }
}

impl Template {
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
            if let Some(value) = pseudo(cert, name) {
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

/// Evaluation of expressions against one request's parameter values.
pub(super) struct Eval<'a> {
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

    pub(super) fn string(&self, value: &Value, depth: usize) -> Result<String> {
        match self.value(value, depth)? {
            Val::Str(text) => Ok(text),
            Val::List(_) => Err(err("expected a string, got a list")),
        }
    }

    pub(super) fn list(&self, value: &Value, depth: usize) -> Result<Vec<String>> {
        match self.value(value, depth)? {
            Val::List(items) => Ok(items),
            Val::Str(_) => Err(err("expected a list, got a string")),
        }
    }

    /// Any JSON (a policy document), with the functions in it replaced by their values.
    pub(super) fn json(&self, value: &Value, depth: usize) -> Result<Value> {
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
}
