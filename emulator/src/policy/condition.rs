//! The `Condition` element: the IAM condition operators that apply to the string-valued keys an
//! MQTT connection has (`iot:ClientId`, the thing and certificate keys).

use serde_json::Value;

use super::pattern::{substitute, wildcard_match};
use super::{Context, PolicyError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    Bool,
    Null,
}

/// One key of one operator: `{"StringLike": {"iot:ClientId": ["a-*", "b-*"]}}` gives one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Condition {
    op: Op,
    negated: bool,
    if_exists: bool,
    key: String,
    values: Vec<String>,
}

/// Parse a statement's `Condition` object.
pub(crate) fn parse(value: &Value, at: &str) -> Result<Vec<Condition>, PolicyError> {
    let ops = value
        .as_object()
        .ok_or_else(|| PolicyError(format!("{at}: must be an object of operators")))?;
    let mut out = Vec::new();
    for (name, keys) in ops {
        let here = format!("{at}.{name}");
        if name.starts_with("ForAnyValue:") || name.starts_with("ForAllValues:") {
            return Err(PolicyError(format!(
                "{here}: set operators are not supported (no MQTT key holds several values)"
            )));
        }
        let (base, if_exists) = match name.strip_suffix("IfExists") {
            Some(base) => (base, true),
            None => (name.as_str(), false),
        };
        let (op, negated) = match base {
            "StringEquals" => (Op::StringEquals, false),
            "StringNotEquals" => (Op::StringEquals, true),
            "StringEqualsIgnoreCase" => (Op::StringEqualsIgnoreCase, false),
            "StringNotEqualsIgnoreCase" => (Op::StringEqualsIgnoreCase, true),
            "StringLike" | "ArnLike" | "ArnEquals" => (Op::StringLike, false),
            "StringNotLike" | "ArnNotLike" | "ArnNotEquals" => (Op::StringLike, true),
            "Bool" => (Op::Bool, false),
            "Null" if !if_exists => (Op::Null, false),
            _ => {
                return Err(PolicyError(format!(
                    "{here}: unknown or unsupported condition operator (supported: String*, Arn*, \
                     Bool, Null, each but Null with ...IfExists)"
                )))
            }
        };
        let keys = keys
            .as_object()
            .ok_or_else(|| PolicyError(format!("{here}: must be an object of condition keys")))?;
        for (key, values) in keys {
            let values = super::strings(values, &format!("{here}.{key}"), true)?;
            out.push(Condition {
                op,
                negated,
                if_exists,
                key: key.clone(),
                values,
            });
        }
    }
    Ok(out)
}

impl Condition {
    /// Does the condition hold? Following IAM: a key the request lacks fails a positive operator,
    /// passes a negated one, and passes any `...IfExists`; `Null` tests for the key's absence.
    pub(crate) fn holds(&self, ctx: &Context, variables: bool) -> bool {
        let Some(actual) = ctx.get(&self.key) else {
            return match self.op {
                Op::Null => self.values.iter().any(|v| v.eq_ignore_ascii_case("true")),
                _ => self.if_exists || self.negated,
            };
        };
        if self.op == Op::Null {
            return self.values.iter().any(|v| v.eq_ignore_ascii_case("false"));
        }
        // A value with a variable that has no value matches nothing.
        let any = self.values.iter().any(|want| match self.op {
            Op::StringEquals => substitute(want, ctx, variables).is_some_and(|w| w == actual),
            Op::StringEqualsIgnoreCase | Op::Bool => substitute(want, ctx, variables)
                .is_some_and(|w| w.to_lowercase() == actual.to_lowercase()),
            Op::StringLike => wildcard_match(want, actual, ctx, variables, false).unwrap_or(false),
            Op::Null => unreachable!("handled above"),
        });
        any != self.negated
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conds(v: Value) -> Vec<Condition> {
        parse(&v, "Condition").unwrap()
    }

    fn all(v: Value, ctx: &Context) -> bool {
        conds(v).iter().all(|c| c.holds(ctx, true))
    }

    fn ctx() -> Context {
        let mut c = Context::default();
        c.set("iot:ClientId", "sensor-7");
        c.set("iot:Connection.Thing.IsAttached", "true");
        c.set("iot:Connection.Thing.ThingName", "sensor-7");
        c
    }

    #[test]
    fn string_operators() {
        let c = ctx();
        assert!(all(
            json!({"StringEquals": {"iot:ClientId": "sensor-7"}}),
            &c
        ));
        assert!(!all(
            json!({"StringEquals": {"iot:ClientId": "Sensor-7"}}),
            &c
        ));
        assert!(all(
            json!({"StringEqualsIgnoreCase": {"iot:ClientId": "SENSOR-7"}}),
            &c
        ));
        assert!(all(
            json!({"StringNotEquals": {"iot:ClientId": ["a", "b"]}}),
            &c
        ));
        assert!(!all(
            json!({"StringNotEquals": {"iot:ClientId": ["a", "sensor-7"]}}),
            &c
        ));
        assert!(all(
            json!({"StringLike": {"iot:ClientId": ["x-*", "sensor-?"]}}),
            &c
        ));
        assert!(!all(json!({"StringLike": {"iot:ClientId": "x-*"}}), &c));
        assert!(all(json!({"StringNotLike": {"iot:ClientId": "x-*"}}), &c));
        assert!(!all(
            json!({"StringNotLike": {"iot:ClientId": "sensor-*"}}),
            &c
        ));
        // `Equals` does not know wildcards.
        assert!(!all(
            json!({"StringEquals": {"iot:ClientId": "sensor-*"}}),
            &c
        ));
    }

    #[test]
    fn values_may_use_variables() {
        let c = ctx();
        let v = json!({"StringEquals": {"iot:ClientId": "${iot:Connection.Thing.ThingName}"}});
        assert!(all(v, &c));
        // A value whose variable has no value matches nothing.
        let v = json!({"StringEquals": {"iot:ClientId": "${iot:Connection.Thing.ThingTypeName}"}});
        assert!(!all(v, &c));
    }

    #[test]
    fn bool_and_several_keys_and_operators_all_must_hold() {
        let c = ctx();
        assert!(all(
            json!({"Bool": {"iot:Connection.Thing.IsAttached": "True"}}),
            &c
        ));
        assert!(!all(
            json!({"Bool": {"iot:Connection.Thing.IsAttached": ["false"]}}),
            &c
        ));
        assert!(all(
            json!({"Bool": {"iot:Connection.Thing.IsAttached": "true"},
                   "StringLike": {"iot:ClientId": "sensor-*", "iot:Connection.Thing.ThingName": "s*"}}),
            &c
        ));
        assert!(!all(
            json!({"Bool": {"iot:Connection.Thing.IsAttached": "true"},
                   "StringLike": {"iot:ClientId": "sensor-*", "iot:Connection.Thing.ThingName": "x*"}}),
            &c
        ));
    }

    #[test]
    fn missing_keys() {
        let c = ctx();
        let key = "iot:Connection.Thing.ThingTypeName";
        assert!(!all(json!({"StringEquals": {key: "meter"}}), &c));
        assert!(!all(json!({"StringLike": {key: "*"}}), &c));
        assert!(all(json!({"StringNotEquals": {key: "meter"}}), &c));
        assert!(all(json!({"StringEqualsIfExists": {key: "meter"}}), &c));
        assert!(all(json!({"Null": {key: "true"}}), &c));
        assert!(!all(json!({"Null": {key: "false"}}), &c));
        assert!(all(json!({"Null": {"iot:ClientId": "false"}}), &c));
        // IfExists on a key that exists is the plain operator.
        assert!(!all(
            json!({"StringEqualsIfExists": {"iot:ClientId": "x"}}),
            &c
        ));
    }

    #[test]
    fn unsupported_operators_are_named() {
        for (v, want) in [
            (
                json!({"NumericEquals": {"k": "1"}}),
                "Condition.NumericEquals",
            ),
            (
                json!({"ForAnyValue:StringLike": {"k": "1"}}),
                "set operators",
            ),
            (json!({"StringLike": "x"}), "object of condition keys"),
            (
                json!({"StringLike": {"k": {"x": 1}}}),
                "Condition.StringLike.k",
            ),
            (json!({"StringLike": {"k": []}}), "Condition.StringLike.k"),
            (json!([]), "object of operators"),
        ] {
            let e = parse(&v, "Condition").unwrap_err().to_string();
            assert!(e.contains(want), "{v}: {e}");
        }
    }
}
