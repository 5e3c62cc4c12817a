//! AWS IoT Core policies: parsing and evaluating policy documents for the MQTT actions
//! (`iot:Connect`, `iot:Publish`, `iot:Subscribe`, `iot:Receive`).
//!
//! The engine is pure: [`Policy::parse`] reads a document, [`evaluate`] decides a request from
//! the policies attached to a certificate and the connection's [`Context`] (the values of the
//! policy variables). What a connection holds and how its certificate's policies are found is
//! [`crate::access`]'s; docs/emulator-policies.md says what is implemented.
//!
//! The rules, as AWS documents them: all policies of a certificate count together; an explicit
//! `Deny` wins over any `Allow`; what no statement allows is denied.

mod condition;
pub mod context;
mod pattern;

use std::fmt;

use serde_json::Value;

use crate::template::describe;

use condition::Condition;
pub use context::Context;

/// A policy document that cannot be used, with where in it and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

/// The MQTT actions the broker checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Connect,
    Publish,
    Subscribe,
    Receive,
}

impl Action {
    pub const ALL: [Action; 4] = [
        Action::Connect,
        Action::Publish,
        Action::Subscribe,
        Action::Receive,
    ];

    /// The action's name in a policy, e.g. `iot:Publish`.
    pub fn name(self) -> &'static str {
        match self {
            Action::Connect => "iot:Connect",
            Action::Publish => "iot:Publish",
            Action::Subscribe => "iot:Subscribe",
            Action::Receive => "iot:Receive",
        }
    }

    /// The resource type in the action's ARN: `client`, `topic` or `topicfilter`.
    pub fn resource_type(self) -> &'static str {
        match self {
            Action::Connect => "client",
            Action::Publish | Action::Receive => "topic",
            Action::Subscribe => "topicfilter",
        }
    }

    /// Parse `iot:Publish` (any case).
    pub fn from_name(name: &str) -> Option<Action> {
        Action::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The account and region resource ARNs are built in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn {
    pub region: String,
    pub account_id: String,
}

impl Default for Arn {
    fn default() -> Arn {
        Arn {
            region: DEFAULT_REGION.to_owned(),
            account_id: DEFAULT_ACCOUNT_ID.to_owned(),
        }
    }
}

pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_ACCOUNT_ID: &str = "123456789012";

impl Arn {
    /// `arn:aws:iot:REGION:ACCOUNT:TYPE/NAME` for the resource of `action` named `name` (a client
    /// id, a topic or a topic filter).
    pub fn resource(&self, action: Action, name: &str) -> String {
        format!(
            "arn:aws:iot:{}:{}:{}/{name}",
            self.region,
            self.account_id,
            action.resource_type()
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// `Action`/`Resource` or their `Not...` forms.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Patterns {
    In(Vec<String>),
    NotIn(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    actions: Patterns,
    resources: Patterns,
    conditions: Vec<Condition>,
}

/// A named, parsed policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub statements: Vec<Statement>,
    /// Policy variables are only replaced in documents of version 2012-10-17, as in IAM.
    variables: bool,
}

/// A string or a non-empty list of strings (`Action`, `Resource`, condition values).
fn strings(value: &Value, at: &str, allow_scalars: bool) -> Result<Vec<String>, PolicyError> {
    let one = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        // Condition values like `"Bool": {"k": true}` are written unquoted too.
        Value::Bool(b) if allow_scalars => Some(b.to_string()),
        Value::Number(n) if allow_scalars => Some(n.to_string()),
        _ => None,
    };
    let list = match value {
        Value::Array(items) => items.iter().map(one).collect::<Option<Vec<_>>>(),
        v => one(v).map(|s| vec![s]),
    };
    match list {
        Some(list) if !list.is_empty() => Ok(list),
        _ => Err(PolicyError(format!(
            "{at}: must be a string or a non-empty list of strings"
        ))),
    }
}

impl Statement {
    fn parse(value: &Value, at: &str) -> Result<Statement, PolicyError> {
        let obj = value.as_object().ok_or_else(|| {
            PolicyError(format!("{at}: must be an object, got {}", describe(value)))
        })?;
        for key in obj.keys() {
            if !matches!(
                key.as_str(),
                "Sid"
                    | "Effect"
                    | "Action"
                    | "NotAction"
                    | "Resource"
                    | "NotResource"
                    | "Condition"
            ) {
                return Err(PolicyError(format!(
                    "{at}: unknown element {key:?} (expected Sid, Effect, Action or NotAction, \
                     Resource or NotResource, Condition)"
                )));
            }
        }
        let sid = match obj.get("Sid") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(v) => {
                return Err(PolicyError(format!(
                    "{at}.Sid: must be a string, got {}",
                    describe(v)
                )))
            }
        };
        let effect = match obj.get("Effect") {
            Some(Value::String(e)) if e == "Allow" => Effect::Allow,
            Some(Value::String(e)) if e == "Deny" => Effect::Deny,
            Some(v) => {
                return Err(PolicyError(format!(
                    "{at}.Effect: must be \"Allow\" or \"Deny\", got {v}"
                )))
            }
            None => return Err(PolicyError(format!("{at}: Effect is missing"))),
        };
        let pair = |yes: &str, no: &str| -> Result<Patterns, PolicyError> {
            match (obj.get(yes), obj.get(no)) {
                (Some(v), None) => Ok(Patterns::In(strings(v, &format!("{at}.{yes}"), false)?)),
                (None, Some(v)) => Ok(Patterns::NotIn(strings(v, &format!("{at}.{no}"), false)?)),
                (Some(_), Some(_)) => {
                    Err(PolicyError(format!("{at}: give {yes} or {no}, not both")))
                }
                (None, None) => Err(PolicyError(format!("{at}: {yes} (or {no}) is missing"))),
            }
        };
        let actions = pair("Action", "NotAction")?;
        let resources = pair("Resource", "NotResource")?;
        let conditions = match obj.get("Condition") {
            Some(c) => condition::parse(c, &format!("{at}.Condition"))?,
            None => Vec::new(),
        };
        Ok(Statement {
            sid,
            effect,
            actions,
            resources,
            conditions,
        })
    }

    /// Does the statement apply to `action` on `resource` (a full ARN) for this connection?
    fn applies(&self, action: Action, resource: &str, ctx: &Context, variables: bool) -> bool {
        // Action names carry no variables and compare case-insensitively.
        let action_in = |pats: &[String]| {
            pats.iter().any(|p| {
                pattern::wildcard_match(p, action.name(), ctx, false, true).unwrap_or(false)
            })
        };
        let action_ok = match &self.actions {
            Patterns::In(p) => action_in(p),
            Patterns::NotIn(p) => !action_in(p),
        };
        if !action_ok {
            return false;
        }
        let resource_ok = match &self.resources {
            // A pattern whose variable has no value matches nothing.
            Patterns::In(p) => p.iter().any(|p| {
                pattern::wildcard_match(p, resource, ctx, variables, false).unwrap_or(false)
            }),
            // ...and makes a NotResource statement not apply at all, rather than apply to
            // everything.
            Patterns::NotIn(p) => {
                let mut outside = true;
                for pat in p {
                    match pattern::wildcard_match(pat, resource, ctx, variables, false) {
                        None => return false,
                        Some(true) => outside = false,
                        Some(false) => {}
                    }
                }
                outside
            }
        };
        resource_ok && self.conditions.iter().all(|c| c.holds(ctx, variables))
    }
}

impl Policy {
    /// Parse a policy document (a JSON object, or a string holding one).
    pub fn parse(name: &str, document: &Value) -> Result<Policy, PolicyError> {
        let parsed;
        let document = match document {
            Value::String(text) => {
                parsed = serde_json::from_str::<Value>(text)
                    .map_err(|e| PolicyError(format!("not valid JSON: {e}")))?;
                &parsed
            }
            other => other,
        };
        let obj = document.as_object().ok_or_else(|| {
            PolicyError(format!(
                "a policy document must be a JSON object, got {}",
                describe(document)
            ))
        })?;
        for key in obj.keys() {
            if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
                return Err(PolicyError(format!(
                    "unknown element {key:?} (expected Version, Id, Statement)"
                )));
            }
        }
        let variables = match obj.get("Version") {
            None => false,
            Some(Value::String(v)) if v == "2012-10-17" => true,
            Some(Value::String(v)) if v == "2008-10-17" => false,
            Some(v) => {
                return Err(PolicyError(format!(
                    "Version: must be \"2012-10-17\" or \"2008-10-17\", got {v}"
                )))
            }
        };
        let statements = match obj.get("Statement") {
            None => return Err(PolicyError("Statement is missing".into())),
            Some(Value::Array(items)) if items.is_empty() => {
                return Err(PolicyError("Statement: the list is empty".into()))
            }
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, s)| Statement::parse(s, &format!("Statement[{i}]")))
                .collect::<Result<Vec<_>, _>>()?,
            Some(one) => vec![Statement::parse(one, "Statement")?],
        };
        Ok(Policy {
            name: name.to_owned(),
            statements,
            variables,
        })
    }

    /// A policy allowing every MQTT action on every resource.
    pub fn allow_all(name: &str) -> Policy {
        Policy {
            name: name.to_owned(),
            statements: vec![Statement {
                sid: None,
                effect: Effect::Allow,
                actions: Patterns::In(vec!["iot:*".into()]),
                resources: Patterns::In(vec!["*".into()]),
                conditions: Vec::new(),
            }],
            variables: true,
        }
    }
}

/// The statement that decided a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decider {
    pub policy: String,
    /// Index in the document's `Statement` list (0 for a single statement object).
    pub statement: usize,
    pub sid: Option<String>,
}

impl fmt::Display for Decider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy {:?} Statement[{}]", self.policy, self.statement)?;
        if let Some(sid) = &self.sid {
            write!(f, " (Sid {sid:?})")?;
        }
        Ok(())
    }
}

/// The outcome of [`evaluate`]: allowed by a statement, denied by an explicit `Deny`, or denied
/// because no statement allowed it (`by` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub by: Option<Decider>,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.by, self.allowed) {
            (Some(by), true) => write!(f, "allowed by {by}"),
            (Some(by), false) => write!(f, "denied by {by} (explicit Deny)"),
            (None, _) => f.write_str("denied: no statement allowed it"),
        }
    }
}

/// Decide `action` on `resource` (a full ARN, see [`Arn::resource`]) for a connection whose
/// certificate has `policies`. The first explicit `Deny` (in policy and statement order) decides;
/// otherwise the first `Allow`; otherwise the request is denied.
pub fn evaluate(policies: &[Policy], ctx: &Context, action: Action, resource: &str) -> Decision {
    let mut allowed_by = None;
    for policy in policies {
        for (i, s) in policy.statements.iter().enumerate() {
            if !s.applies(action, resource, ctx, policy.variables) {
                continue;
            }
            let by = || Decider {
                policy: policy.name.clone(),
                statement: i,
                sid: s.sid.clone(),
            };
            match s.effect {
                Effect::Deny => {
                    return Decision {
                        allowed: false,
                        by: Some(by()),
                    }
                }
                Effect::Allow if allowed_by.is_none() => allowed_by = Some(by()),
                Effect::Allow => {}
            }
        }
    }
    Decision {
        allowed: allowed_by.is_some(),
        by: allowed_by,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(name: &str, doc: Value) -> Policy {
        Policy::parse(name, &doc).unwrap()
    }

    fn arn(action: Action, name: &str) -> String {
        Arn::default().resource(action, name)
    }

    fn decide(policies: &[Policy], ctx: &Context, action: Action, name: &str) -> Decision {
        evaluate(policies, ctx, action, &arn(action, name))
    }

    fn client(id: &str) -> Context {
        let mut c = Context::default();
        c.set("iot:ClientId", id);
        c
    }

    const R: &str = "arn:aws:iot:us-east-1:123456789012";

    #[test]
    fn arns_per_action() {
        assert_eq!(arn(Action::Connect, "c1"), format!("{R}:client/c1"));
        assert_eq!(arn(Action::Publish, "a/b"), format!("{R}:topic/a/b"));
        assert_eq!(arn(Action::Receive, "a/b"), format!("{R}:topic/a/b"));
        assert_eq!(
            arn(Action::Subscribe, "a/#"),
            format!("{R}:topicfilter/a/#")
        );
        let other = Arn {
            region: "eu-west-1".into(),
            account_id: "000000000001".into(),
        };
        assert_eq!(
            other.resource(Action::Connect, "x"),
            "arn:aws:iot:eu-west-1:000000000001:client/x"
        );
    }

    #[test]
    fn each_action_needs_its_own_allow() {
        let p = policy(
            "p",
            json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "iot:Connect", "Resource": format!("{R}:client/c1")},
                {"Effect": "Allow", "Action": "iot:Publish", "Resource": format!("{R}:topic/t/pub")},
                {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": format!("{R}:topicfilter/t/sub")},
                {"Effect": "Allow", "Action": "iot:Receive", "Resource": format!("{R}:topic/t/sub")}
            ]}),
        );
        let ctx = client("c1");
        let ok = |a, n| decide(std::slice::from_ref(&p), &ctx, a, n).allowed;
        assert!(ok(Action::Connect, "c1"));
        assert!(!ok(Action::Connect, "c2"));
        assert!(ok(Action::Publish, "t/pub"));
        assert!(!ok(Action::Publish, "t/sub"));
        assert!(ok(Action::Subscribe, "t/sub"));
        assert!(ok(Action::Receive, "t/sub"));
        assert!(!ok(Action::Receive, "t/pub"));
        // The classic mistake: Subscribe on a topic/ ARN grants nothing.
        let wrong = policy(
            "wrong",
            json!({"Version": "2012-10-17", "Statement": {"Effect": "Allow",
                   "Action": "iot:Subscribe", "Resource": format!("{R}:topic/t/sub")}}),
        );
        assert!(!decide(&[wrong], &ctx, Action::Subscribe, "t/sub").allowed);
    }

    #[test]
    fn action_wildcards_and_case() {
        let ctx = client("c");
        for (actions, want) in [
            (json!("iot:*"), [true, true, true, true]),
            (json!("*"), [true, true, true, true]),
            (json!("iot:Pub*"), [false, true, false, false]),
            (
                json!(["IOT:CONNECT", "iot:?eceive"]),
                [true, false, false, true],
            ),
            (json!("iot:Get*"), [false, false, false, false]),
        ] {
            let p = policy(
                "p",
                json!({"Statement": {"Effect": "Allow", "Action": actions, "Resource": "*"}}),
            );
            let got = Action::ALL.map(|a| decide(std::slice::from_ref(&p), &ctx, a, "x").allowed);
            assert_eq!(got, want, "{actions}");
        }
    }

    #[test]
    fn resource_wildcards() {
        let ctx = client("c");
        let p = policy(
            "p",
            json!({"Statement": {"Effect": "Allow", "Action": "iot:Publish", "Resource": [
                format!("{R}:topic/sensors/*/temp"),
                format!("{R}:topic/dev/?"),
                format!("{R}:topic/lit/+/#"),
            ]}}),
        );
        let ok = |n| decide(std::slice::from_ref(&p), &ctx, Action::Publish, n).allowed;
        assert!(ok("sensors/a/temp"));
        assert!(ok("sensors/a/b/temp"));
        assert!(!ok("sensors/a/hum"));
        assert!(ok("dev/1"));
        assert!(!ok("dev/12"));
        assert!(ok("lit/+/#"));
        assert!(!ok("lit/x/y"));
        // Another account or region is another resource.
        let foreign = "arn:aws:iot:eu-west-1:123456789012:topic/dev/1";
        assert!(!evaluate(std::slice::from_ref(&p), &ctx, Action::Publish, foreign).allowed);
    }

    #[test]
    fn explicit_deny_wins_and_default_is_deny() {
        let ctx = client("c");
        let p = policy(
            "p",
            json!({"Statement": [
                {"Effect": "Allow", "Action": "iot:*", "Resource": "*"},
                {"Sid": "noSecrets", "Effect": "Deny", "Action": "iot:Publish", "Resource": format!("{R}:topic/secret/*")}
            ]}),
        );
        let d = decide(std::slice::from_ref(&p), &ctx, Action::Publish, "secret/x");
        assert!(!d.allowed);
        assert_eq!(
            d.by,
            Some(Decider {
                policy: "p".into(),
                statement: 1,
                sid: Some("noSecrets".into())
            })
        );
        assert_eq!(
            d.to_string(),
            "denied by policy \"p\" Statement[1] (Sid \"noSecrets\") (explicit Deny)"
        );
        let d = decide(std::slice::from_ref(&p), &ctx, Action::Publish, "open/x");
        assert!(d.allowed);
        assert_eq!(d.by.as_ref().unwrap().statement, 0);
        assert_eq!(d.to_string(), "allowed by policy \"p\" Statement[0]");
        let none = decide(&[], &ctx, Action::Publish, "open/x");
        assert_eq!(
            none,
            Decision {
                allowed: false,
                by: None
            }
        );
        assert_eq!(none.to_string(), "denied: no statement allowed it");
    }

    #[test]
    fn several_policies_are_a_union_and_any_deny_wins() {
        let ctx = client("c");
        let publish = policy(
            "publish",
            json!({"Statement": {"Effect": "Allow", "Action": "iot:Publish", "Resource": "*"}}),
        );
        let connect = policy(
            "connect",
            json!({"Statement": {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*"}}),
        );
        let deny = policy(
            "deny",
            json!({"Statement": {"Effect": "Deny", "Action": "iot:Publish", "Resource": format!("{R}:topic/x")}}),
        );
        let both = [publish.clone(), connect.clone()];
        assert!(decide(&both, &ctx, Action::Publish, "x").allowed);
        assert!(decide(&both, &ctx, Action::Connect, "c").allowed);
        assert!(!decide(&both, &ctx, Action::Subscribe, "x").allowed);
        // The deny decides in whichever order the policies come.
        for set in [
            vec![publish.clone(), deny.clone()],
            vec![deny.clone(), publish.clone()],
        ] {
            let d = decide(&set, &ctx, Action::Publish, "x");
            assert!(!d.allowed);
            assert_eq!(d.by.unwrap().policy, "deny");
            assert!(decide(&set, &ctx, Action::Publish, "y").allowed);
        }
    }

    #[test]
    fn not_action_and_not_resource() {
        let ctx = client("c");
        let p = policy(
            "p",
            json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "NotAction": "iot:Subscribe", "Resource": "*"},
                {"Effect": "Deny", "Action": "iot:Publish", "NotResource": format!("{R}:topic/ok/*")}
            ]}),
        );
        let ok = |a, n| decide(std::slice::from_ref(&p), &ctx, a, n).allowed;
        assert!(ok(Action::Connect, "c"));
        assert!(!ok(Action::Subscribe, "x"));
        assert!(ok(Action::Publish, "ok/1"));
        assert!(!ok(Action::Publish, "other"));
        // A NotResource pattern with an unresolvable variable makes the statement not apply.
        let q = policy(
            "q",
            json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "iot:*", "Resource": "*"},
                {"Effect": "Deny", "Action": "iot:Publish",
                 "NotResource": format!("{R}:topic/${{iot:Connection.Thing.ThingName}}/*")}
            ]}),
        );
        assert!(decide(&[q], &ctx, Action::Publish, "any").allowed);
    }

    #[test]
    fn policy_variables_in_resources() {
        let p = policy(
            "p",
            json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "iot:Connect", "Resource": format!("{R}:client/${{iot:Connection.Thing.ThingName}}")},
                {"Effect": "Allow", "Action": "iot:Publish", "Resource": format!("{R}:topic/things/${{iot:ClientId}}/*")},
                {"Effect": "Allow", "Action": "iot:Publish", "Resource": format!("{R}:topic/fleet/${{iot:Connection.Thing.Attributes[fleet]}}")},
                {"Effect": "Allow", "Action": "iot:Publish", "Resource": format!("{R}:topic/type/${{iot:Connection.Thing.ThingTypeName}}")},
                {"Effect": "Allow", "Action": "iot:Publish", "Resource": format!("{R}:topic/cn/${{iot:Certificate.Subject.CommonName}}")},
                {"Effect": "Allow", "Action": "iot:Publish", "Resource": format!("{R}:topic/ca/${{iot:Certificate.Issuer.Organization}}")}
            ]}),
        );
        let mut ctx = client("dev-1");
        let ps = std::slice::from_ref(&p);
        // Without a thing the thing variables have no value: those statements match nothing.
        assert!(!decide(ps, &ctx, Action::Connect, "dev-1").allowed);
        assert!(decide(ps, &ctx, Action::Publish, "things/dev-1/x").allowed);
        assert!(!decide(ps, &ctx, Action::Publish, "things/dev-2/x").allowed);
        assert!(!decide(ps, &ctx, Action::Publish, "fleet/blue").allowed);
        ctx.set("iot:Connection.Thing.ThingName", "dev-1");
        ctx.set("iot:Connection.Thing.Attributes[fleet]", "blue");
        ctx.set("iot:Connection.Thing.ThingTypeName", "meter");
        ctx.set("iot:Certificate.Subject.CommonName", "dev-1.example");
        ctx.set("iot:Certificate.Issuer.Organization", "Acme");
        assert!(decide(ps, &ctx, Action::Connect, "dev-1").allowed);
        assert!(!decide(ps, &ctx, Action::Connect, "dev-2").allowed);
        assert!(decide(ps, &ctx, Action::Publish, "fleet/blue").allowed);
        assert!(!decide(ps, &ctx, Action::Publish, "fleet/red").allowed);
        assert!(decide(ps, &ctx, Action::Publish, "type/meter").allowed);
        assert!(decide(ps, &ctx, Action::Publish, "cn/dev-1.example").allowed);
        assert!(decide(ps, &ctx, Action::Publish, "ca/Acme").allowed);
    }

    #[test]
    fn variables_need_version_2012() {
        let ctx = client("dev-1");
        let old = policy(
            "old",
            json!({"Version": "2008-10-17", "Statement": {"Effect": "Allow", "Action": "iot:Connect",
                   "Resource": format!("{R}:client/${{iot:ClientId}}")}}),
        );
        assert!(!decide(std::slice::from_ref(&old), &ctx, Action::Connect, "dev-1").allowed);
        assert!(decide(&[old], &ctx, Action::Connect, "${iot:ClientId}").allowed);
    }

    #[test]
    fn conditions_gate_statements() {
        let p = policy(
            "p",
            json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "iot:Connect", "Resource": "*",
                 "Condition": {"Bool": {"iot:Connection.Thing.IsAttached": "true"}}},
                {"Effect": "Deny", "Action": "iot:Connect", "Resource": "*",
                 "Condition": {"StringLike": {"iot:ClientId": "blocked-*"}}}
            ]}),
        );
        let ps = std::slice::from_ref(&p);
        let mut ctx = client("dev");
        ctx.set("iot:Connection.Thing.IsAttached", "false");
        assert!(!decide(ps, &ctx, Action::Connect, "dev").allowed);
        ctx.set("iot:Connection.Thing.IsAttached", "true");
        assert!(decide(ps, &ctx, Action::Connect, "dev").allowed);
        let mut blocked = client("blocked-1");
        blocked.set("iot:Connection.Thing.IsAttached", "true");
        let d = decide(ps, &blocked, Action::Connect, "blocked-1");
        assert!(!d.allowed && d.by.unwrap().statement == 1);
    }

    #[test]
    fn malformed_documents_say_where() {
        for (doc, want) in [
            (json!([]), "must be a JSON object"),
            (json!({"Version": "2012-10-17"}), "Statement is missing"),
            (json!({"Statement": []}), "the list is empty"),
            (
                json!({"Statement": {"Effect": "allow", "Action": "*", "Resource": "*"}}),
                "Statement.Effect",
            ),
            (
                json!({"Statement": [{"Effect": "Allow", "Resource": "*"}]}),
                "Statement[0]: Action (or NotAction) is missing",
            ),
            (
                json!({"Statement": [{"Effect": "Allow", "Action": "*"}]}),
                "Resource (or NotResource) is missing",
            ),
            (
                json!({"Statement": [{"Effect": "Allow", "Action": "*", "NotAction": "*", "Resource": "*"}]}),
                "not both",
            ),
            (
                json!({"Statement": [{"Effect": "Allow", "Action": [], "Resource": "*"}]}),
                "Statement[0].Action",
            ),
            (
                json!({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": 3}]}),
                "Statement[0].Resource",
            ),
            (
                json!({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Principal": "*"}]}),
                "\"Principal\"",
            ),
            (json!({"Version": "2020-01-01", "Statement": []}), "Version"),
            (json!({"Statment": []}), "\"Statment\""),
            (json!("{not json"), "not valid JSON"),
        ] {
            let e = Policy::parse("p", &doc).unwrap_err().to_string();
            assert!(e.contains(want), "{doc}: {e}");
        }
        // A document given as a string (as Fn::Sub makes them) is parsed.
        let text =
            json!(r#"{"Statement": {"Effect": "Allow", "Action": "iot:*", "Resource": "*"}}"#);
        assert_eq!(Policy::parse("p", &text).unwrap().statements.len(), 1);
    }

    #[test]
    fn action_names() {
        assert_eq!(Action::from_name("iot:publish"), Some(Action::Publish));
        assert_eq!(Action::from_name("iot:Delete"), None);
        assert!(Action::ALL
            .iter()
            .all(|a| Action::from_name(a.name()) == Some(*a)));
    }
}
