//! Pre-provisioning hooks: a command run for every RegisterThing on a template, standing in for
//! the Lambda function AWS calls. The command (run by `sh -c`) gets AWS's input object as JSON
//! on stdin:
//! `{"claimCertificateId", "certificateId", "certificatePem", "templateArn", "clientId",
//! "parameters"}`, and must print `{"allowProvisioning": bool, "parameterOverrides": {...}}`
//! within the time limit (AWS's is 5 seconds). Overrides replace or add request parameters
//! before the template is evaluated. A refusal, a command that fails, prints something else or
//! runs out of time fails the request.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};

/// AWS's limit for a pre-provisioning hook's answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest answer read from a hook; AWS's Lambda responses are far smaller than this.
const MAX_OUTPUT: u64 = 128 * 1024;

/// What AWS hands the hook.
#[derive(Debug, Clone)]
pub struct HookInput<'a> {
    pub claim_certificate_id: &'a str,
    pub certificate_id: &'a str,
    pub certificate_pem: &'a str,
    pub template_name: &'a str,
    pub client_id: &'a str,
    pub parameters: &'a BTreeMap<String, String>,
}

/// Why a hook did not allow provisioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookError {
    /// It answered `"allowProvisioning": false`.
    Refused,
    /// It could not be run, failed, timed out or answered something else.
    Failed(String),
}

/// A configured hook.
#[derive(Debug, Clone)]
pub struct Hook {
    pub command: String,
    pub timeout: Duration,
}

impl Hook {
    /// Runs the hook; `Ok` carries the parameter overrides of an allowing answer.
    pub fn run(&self, input: &HookInput<'_>) -> Result<BTreeMap<String, String>, HookError> {
        let stdin = json!({
            "claimCertificateId": input.claim_certificate_id,
            "certificateId": input.certificate_id,
            "certificatePem": input.certificate_pem,
            "templateArn": format!(
                "arn:aws:iot:local:000000000000:provisioningtemplate/{}",
                input.template_name
            ),
            "clientId": input.client_id,
            "parameters": input.parameters,
        })
        .to_string();
        let failed = |what: String| HookError::Failed(format!("pre-provisioning hook {what}"));
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| failed(format!("could not be started: {e}")))?;
        let (mut pipe_in, mut pipe_out) = match (child.stdin.take(), child.stdout.take()) {
            (Some(i), Some(o)) => (i, o),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed("has no stdin or stdout".into()));
            }
        };
        // Writing and reading on a thread of their own, so the deadline holds even when the
        // command neither reads its input nor closes its output.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // A hook that ignores its input may close stdin early: not an error by itself.
            let _ = pipe_in.write_all(stdin.as_bytes());
            drop(pipe_in);
            let mut out = Vec::new();
            let read = (&mut pipe_out).take(MAX_OUTPUT).read_to_end(&mut out);
            let _ = tx.send(read.map(|_| out));
        });
        let output = match rx.recv_timeout(self.timeout) {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!("output could not be read: {e}")));
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!(
                    "did not answer within {} ms",
                    self.timeout.as_millis()
                )));
            }
        };
        let status = child
            .wait()
            .map_err(|e| failed(format!("could not be waited for: {e}")))?;
        if !status.success() {
            return Err(failed(format!("failed ({status})")));
        }
        parse_answer(&output).map_err(|e| match e {
            HookError::Failed(what) => failed(format!("answered {what}")),
            refused => refused,
        })
    }
}

fn parse_answer(output: &[u8]) -> Result<BTreeMap<String, String>, HookError> {
    let bad = |what: &str| HookError::Failed(what.to_owned());
    let value: Value =
        serde_json::from_slice(output).map_err(|_| bad("something that is not JSON"))?;
    let allow = match value.get("allowProvisioning") {
        Some(Value::Bool(b)) => *b,
        _ => return Err(bad("without a boolean allowProvisioning")),
    };
    if !allow {
        return Err(HookError::Refused);
    }
    match value.get("parameterOverrides") {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(bad("parameterOverrides that are not all strings")),
            })
            .collect(),
        Some(_) => Err(bad("parameterOverrides that is not an object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_strictly() {
        let overrides =
            parse_answer(br#"{"allowProvisioning":true,"parameterOverrides":{"a":"b"}}"#);
        assert_eq!(overrides.unwrap()["a"], "b");
        assert!(parse_answer(br#"{"allowProvisioning":true}"#)
            .unwrap()
            .is_empty());
        assert_eq!(
            parse_answer(br#"{"allowProvisioning":false}"#),
            Err(HookError::Refused)
        );
        for bad in [
            &b""[..],
            b"yes",
            br#"{"allowProvisioning":"true"}"#,
            br#"{"allowProvisioning":true,"parameterOverrides":{"a":1}}"#,
            br#"{"allowProvisioning":true,"parameterOverrides":[]}"#,
        ] {
            assert!(matches!(parse_answer(bad), Err(HookError::Failed(_))));
        }
    }
}
