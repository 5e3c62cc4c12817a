//! The fleet-provisioning request handlers: a request topic and payload in, the reply out.
//!
//! Transport-free, so the broker, the responder mode and tests all drive the same code.
//! Requests on `.../json` topics are JSON objects and are answered in JSON; on `.../cbor` they
//! are CBOR maps with the same keys and are answered, rejections included, in CBOR.
//! Error codes: malformed payloads 400 `InvalidPayload`, CSRs the CA refuses 400 `InvalidCsr`
//! (AWS publishes no code for this; ours names the problem), token problems 400
//! `InvalidCertificateOwnershipToken`, unknown templates 404 `ResourceNotFound`, template
//! evaluation errors 400 `InvalidParameters`, a thing whose `OverrideSettings` say FAIL 400
//! `ResourceRegistrationFailure`, failures of the emulator itself 500 `InternalFailure`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::account::Account;
use crate::aws_limits::valid_template_name;
use crate::ca::{Ca, CsrError, Issued};
use crate::cert::{cert_info, certificate_id, pem_block, CertInfo};
use crate::hook::{Hook, HookError, HookInput};
use crate::registry::{RegistrationError, Registry};
use crate::request_topic::{self, Format, Operation};
use crate::template::Template;

/// AWS IoT's MQTT message size limit; the broker refuses larger messages too.
pub const MAX_PAYLOAD_BYTES: usize = 128 * 1024;

/// errorCode of a request a pre-provisioning hook refused or failed on (our fact sheet's; AWS's
/// hook page names none).
const HOOK_DENIED: &str = "ACCESS_DENIED";

/// A reply for the connection that sent the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// The fleet-provisioning service: answers the three operations.
pub struct Service {
    ca: Arc<Ca>,
    registry: Arc<Registry>,
    templates: BTreeMap<String, Template>,
    /// Requests answered, by format: json, cbor.
    answered: [AtomicU64; 2],
    account: Option<Account>,
    hooks: BTreeMap<String, Hook>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("templates", &self.templates.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// A rejection: becomes `{"statusCode", "errorCode", "errorMessage"}`.
#[derive(Debug)]
struct Rejection {
    status: u16,
    code: &'static str,
    message: String,
}

fn reject(status: u16, code: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        status,
        code,
        message: message.into(),
    }
}

fn invalid_payload(message: impl Into<String>) -> Rejection {
    reject(400, "InvalidPayload", message)
}

impl Service {
    /// The service over `ca`, `registry` and the named templates. The CA's default claim
    /// certificate is recorded in the registry as a claim.
    pub fn new(
        ca: Arc<Ca>,
        registry: Arc<Registry>,
        templates: BTreeMap<String, Template>,
    ) -> Service {
        registry.add_claim(&certificate_id(&ca.claim_der()));
        Service {
            ca,
            registry,
            templates,
            answered: Default::default(),
            account: None,
            hooks: BTreeMap::new(),
        }
    }

    /// Run `hooks` (by template name) before evaluating their templates.
    pub fn with_hooks(mut self, hooks: BTreeMap<String, Hook>) -> Service {
        self.hooks = hooks;
        self
    }

    /// Check templates against `account`: a referenced resource it lacks fails the request.
    pub fn with_account(mut self, account: Option<Account>) -> Service {
        self.account = account;
        self
    }

    /// Is `topic` one of the fleet-provisioning request topics this service answers (json or
    /// cbor)?
    pub fn is_request_topic(topic: &str) -> bool {
        request_topic::parse(topic).is_some()
    }

    /// Handle one request published by a client authenticated with `requester_cert_id`.
    /// Returns the reply to send back to that client only (accepted or rejected topic, in the
    /// request's format), or None if not a provisioning topic.
    pub fn handle(&self, topic: &str, payload: &[u8], requester_cert_id: &str) -> Option<Reply> {
        self.handle_from(topic, payload, requester_cert_id, "")
    }

    /// [`Service::handle`] for a request from the MQTT client `client_id` (which a
    /// pre-provisioning hook is told).
    pub fn handle_from(
        &self,
        topic: &str,
        payload: &[u8],
        requester_cert_id: &str,
        client_id: &str,
    ) -> Option<Reply> {
        let (operation, format) = request_topic::parse(topic)?;
        let result = if payload.len() > MAX_PAYLOAD_BYTES {
            Err(invalid_payload(format!(
                "the payload is {} bytes; the limit is {MAX_PAYLOAD_BYTES}",
                payload.len()
            )))
        } else {
            decode(payload, format).and_then(|request| match operation {
                Operation::CreateKeys => self.create_keys(requester_cert_id),
                Operation::CreateFromCsr => {
                    self.create_from_csr(required(request)?, requester_cert_id)
                }
                Operation::Register(name) => {
                    self.register(name, request, requester_cert_id, client_id)
                }
            })
        };
        let (suffix, body) = match result {
            Ok(body) => ("accepted", body),
            Err(r) => (
                "rejected",
                json!({
                    "statusCode": r.status,
                    "errorCode": r.code,
                    "errorMessage": r.message,
                }),
            ),
        };
        self.answered[format as usize].fetch_add(1, Ordering::Relaxed);
        Some(Reply {
            topic: format!("{topic}/{suffix}"),
            payload: encode(&body, format),
        })
    }

    /// How many requests were answered so far on the json topics and on the cbor topics.
    pub fn answered(&self) -> (u64, u64) {
        (
            self.answered[Format::Json as usize].load(Ordering::Relaxed),
            self.answered[Format::Cbor as usize].load(Ordering::Relaxed),
        )
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// Names of the templates served.
    pub fn template_names(&self) -> impl Iterator<Item = &str> {
        self.templates.keys().map(String::as_str)
    }

    /// Issue a further claim certificate (what `aws iot create-provisioning-claim` gives) and
    /// record it as a claim. Nothing is written to disk.
    pub fn issue_claim(&self, common_name: &str, valid_for: Duration) -> Result<Issued, CsrError> {
        let issued = self.ca.issue_claim(common_name, valid_for)?;
        self.registry.add_claim(&issued.certificate_id);
        Ok(issued)
    }

    /// SDKs send either nothing or `{}`; any map is accepted, its fields ignored.
    fn create_keys(&self, requester: &str) -> Result<Value, Rejection> {
        let issued = self
            .ca
            .create_keys_and_certificate()
            .map_err(|e| reject(500, "InternalFailure", e.0))?;
        let token = self.registry.add_pending(&issued, requester);
        Ok(json!({
            "certificateId": issued.certificate_id,
            "certificatePem": issued.certificate_pem,
            "privateKey": issued.private_key_pem.unwrap_or_default(),
            "certificateOwnershipToken": token,
        }))
    }

    fn create_from_csr(
        &self,
        request: Map<String, Value>,
        requester: &str,
    ) -> Result<Value, Rejection> {
        let csr = match request.get("certificateSigningRequest") {
            Some(Value::String(csr)) => csr,
            Some(_) => {
                return Err(invalid_payload(
                    "certificateSigningRequest must be a string",
                ))
            }
            None => return Err(invalid_payload("certificateSigningRequest is required")),
        };
        let issued = self
            .ca
            .sign_csr(csr)
            .map_err(|e| reject(400, "InvalidCsr", e.0))?;
        let token = self.registry.add_pending(&issued, requester);
        Ok(json!({
            "certificateId": issued.certificate_id,
            "certificatePem": issued.certificate_pem,
            "certificateOwnershipToken": token,
        }))
    }

    fn register(
        &self,
        name: &str,
        request: Option<Map<String, Value>>,
        requester: &str,
        client_id: &str,
    ) -> Result<Value, Rejection> {
        if !valid_template_name(name) {
            return Err(reject(
                400,
                "InvalidParameters",
                "a template name is 1-36 characters of A-Z, a-z, 0-9, _ and -",
            ));
        }
        let template = self.templates.get(name).ok_or_else(|| {
            reject(
                404,
                "ResourceNotFound",
                format!("Template {name} was not found."),
            )
        })?;
        let request = required(request)?;
        let token = match request.get("certificateOwnershipToken") {
            Some(Value::String(token)) => token.as_str(),
            None | Some(Value::Null) => "",
            Some(_) => {
                return Err(invalid_payload(
                    "certificateOwnershipToken must be a string",
                ))
            }
        };
        let mut parameters = parameters(request.get("parameters"))?;

        let token_error = |e: &dyn std::fmt::Display| {
            reject(400, "InvalidCertificateOwnershipToken", e.to_string())
        };
        let cert = self
            .registry
            .check_token(token, requester)
            .map_err(|e| token_error(&e))?;
        // Pseudo-parameters describe the certificate being registered, not the requester's.
        let info = cert
            .certificate_pem
            .as_deref()
            .and_then(|pem| pem_block(pem.as_bytes(), "CERTIFICATE"))
            .map(|der| cert_info(&der))
            .unwrap_or_else(|| CertInfo {
                certificate_id: cert.certificate_id.clone(),
                ..CertInfo::default()
            });
        if let Some(hook) = self.hooks.get(name) {
            let input = HookInput {
                claim_certificate_id: requester,
                certificate_id: &cert.certificate_id,
                certificate_pem: cert.certificate_pem.as_deref().unwrap_or_default(),
                template_name: name,
                client_id,
                parameters: &parameters,
            };
            let overrides = hook.run(&input).map_err(|e| match e {
                HookError::Refused => reject(
                    403,
                    HOOK_DENIED,
                    "The pre-provisioning hook did not allow provisioning.",
                ),
                HookError::Failed(m) => reject(403, HOOK_DENIED, m),
            })?;
            parameters.extend(overrides);
        }
        let provisioned = template
            .evaluate(&parameters, &info)
            .map_err(|e| reject(400, "InvalidParameters", e.0))?;
        if let Some(missing) = self.account.as_ref().and_then(|a| a.missing(&provisioned)) {
            return Err(reject(400, "ResourceRegistrationFailure", missing));
        }
        // AWS refuses to create a malformed policy, and the provisioning with it.
        for p in &provisioned.policies {
            if let Some(doc) = &p.policy_document {
                crate::policy::Policy::parse(&p.logical_id, doc).map_err(|e| {
                    let msg = format!(
                        "Policy document of resource {} is malformed: {e}",
                        p.logical_id
                    );
                    reject(400, "ResourceRegistrationFailure", msg)
                })?;
            }
        }
        let thing = self
            .registry
            .apply_registration(token, requester, &provisioned)
            .map_err(|e| match e {
                RegistrationError::Token(e) => token_error(&e),
                RegistrationError::Invalid(m) => reject(400, "InvalidParameters", m),
                RegistrationError::Conflict(m) => reject(400, "ResourceRegistrationFailure", m),
                RegistrationError::Storage(m) => reject(500, "InternalFailure", m),
            })?;

        let mut reply = Map::new();
        reply.insert(
            "deviceConfiguration".into(),
            Value::Object(
                provisioned
                    .device_configuration
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect(),
            ),
        );
        if let Some(thing) = thing {
            reply.insert("thingName".into(), Value::String(thing.name));
        }
        Ok(Value::Object(reply))
    }
}

/// The request as a map of fields; an empty payload is `None`.
fn decode(payload: &[u8], format: Format) -> Result<Option<Map<String, Value>>, Rejection> {
    if payload.is_empty() {
        return Ok(None);
    }
    let value = match format {
        Format::Json => serde_json::from_slice::<Value>(payload)
            .map_err(|e| invalid_payload(format!("the payload is not valid JSON: {e}")))?,
        Format::Cbor => {
            let mut rest = payload;
            let value = ciborium::de::from_reader::<Value, _>(&mut rest).map_err(|e| {
                invalid_payload(format!(
                    "the payload is not CBOR made of maps, text, numbers, booleans and null: {e}"
                ))
            })?;
            if !rest.is_empty() {
                return Err(invalid_payload(format!(
                    "{} bytes follow the CBOR payload",
                    rest.len()
                )));
            }
            value
        }
    };
    match value {
        Value::Object(map) => Ok(Some(map)),
        _ => Err(invalid_payload(match format {
            Format::Json => "the payload must be a JSON object",
            Format::Cbor => "the payload must be a CBOR map",
        })),
    }
}

fn required(request: Option<Map<String, Value>>) -> Result<Map<String, Value>, Rejection> {
    request.ok_or_else(|| invalid_payload("the payload is empty"))
}

fn encode(body: &Value, format: Format) -> Vec<u8> {
    match format {
        Format::Json => serde_json::to_vec(body).unwrap_or_default(),
        Format::Cbor => {
            let mut out = Vec::new();
            // Writing maps, text and integers into a Vec cannot fail.
            let _ = ciborium::ser::into_writer(body, &mut out);
            out
        }
    }
}

/// The request's `parameters`: absent or null is none, else an object of strings.
fn parameters(value: Option<&Value>) -> Result<BTreeMap<String, String>, Rejection> {
    match value {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(invalid_payload(format!(
                    "parameters must map names to strings; '{k}' is not a string"
                ))),
            })
            .collect(),
        Some(_) => Err(invalid_payload("parameters must be a JSON object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};

    const SEED: &str = include_str!("../templates/FleetTemplate.json");
    const CREATE: &str = "$aws/certificates/create/json";
    const CSR: &str = "$aws/certificates/create-from-csr/json";
    const REGISTER: &str = "$aws/provisioning-templates/FleetTemplate/provision/json";

    struct Fixture {
        dir: tempfile::TempDir,
        service: Service,
        claim: String,
    }

    fn templates() -> BTreeMap<String, Template> {
        let by_cn = r#"{
            "Resources": {
                "thing": {"Type": "AWS::IoT::Thing",
                          "Properties": {"ThingName": {"Ref": "AWS::IoT::Certificate::CommonName"}}},
                "certificate": {"Type": "AWS::IoT::Certificate",
                                "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"},
                                               "Status": "ACTIVE"}}
            },
            "DeviceConfiguration": {"id": {"Ref": "AWS::IoT::Certificate::Id"}}
        }"#;
        [
            ("FleetTemplate".to_owned(), Template::parse(SEED).unwrap()),
            ("ByCommonName".to_owned(), Template::parse(by_cn).unwrap()),
        ]
        .into()
    }

    fn fixture_in(dir: tempfile::TempDir) -> Fixture {
        let ca = Arc::new(Ca::load_or_create(dir.path()).unwrap());
        let registry = Arc::new(Registry::open(dir.path()).unwrap());
        let claim = certificate_id(&ca.claim_der());
        let service = Service::new(ca, registry, templates());
        Fixture {
            dir,
            service,
            claim,
        }
    }

    fn fixture() -> Fixture {
        fixture_in(tempfile::tempdir().unwrap())
    }

    fn call(f: &Fixture, topic: &str, payload: &[u8]) -> (String, Value) {
        call_as(f, topic, payload, &f.claim)
    }

    fn call_as(f: &Fixture, topic: &str, payload: &[u8], requester: &str) -> (String, Value) {
        let reply = f
            .service
            .handle(topic, payload, requester)
            .expect("a reply");
        (reply.topic, serde_json::from_slice(&reply.payload).unwrap())
    }

    /// A rejection has exactly AWS's three fields; returns (statusCode, errorCode, errorMessage).
    fn rejected(topic: &str, reply: (String, Value)) -> (u64, String, String) {
        assert_eq!(reply.0, format!("{topic}/rejected"), "{}", reply.1);
        let body = reply.1.as_object().unwrap();
        assert_eq!(body.len(), 3, "{body:?}");
        (
            body["statusCode"].as_u64().unwrap(),
            body["errorCode"].as_str().unwrap().to_owned(),
            body["errorMessage"].as_str().unwrap().to_owned(),
        )
    }

    fn accepted(topic: &str, reply: (String, Value)) -> Value {
        assert_eq!(reply.0, format!("{topic}/accepted"), "{}", reply.1);
        reply.1
    }

    fn csr(cn: &str) -> String {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    /// CreateCertificateFromCsr; returns (certificateId, token).
    fn new_token(f: &Fixture, requester: &str) -> (String, String) {
        let body = json!({"certificateSigningRequest": csr("device")}).to_string();
        let reply = accepted(CSR, call_as(f, CSR, body.as_bytes(), requester));
        (
            reply["certificateId"].as_str().unwrap().to_owned(),
            reply["certificateOwnershipToken"]
                .as_str()
                .unwrap()
                .to_owned(),
        )
    }

    fn register_body(token: &str) -> Vec<u8> {
        json!({
            "certificateOwnershipToken": token,
            "parameters": {"SerialNumber": "1", "DeviceLocation": "Seattle"}
        })
        .to_string()
        .into_bytes()
    }

    /// The names of a reply's fields, in the order they were sent.
    fn field_names(reply: &serde_json::Value) -> Vec<&str> {
        reply
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn create_keys_then_register_with_the_seed_template() {
        let f = fixture();
        for payload in [&b""[..], b"{}"] {
            let reply = accepted(CREATE, call(&f, CREATE, payload));
            assert_eq!(
                field_names(&reply),
                [
                    "certificateId",
                    "certificatePem",
                    "privateKey",
                    "certificateOwnershipToken"
                ]
            );
            assert!(reply["privateKey"]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        }
        let reply = accepted(CREATE, call(&f, CREATE, b""));
        let cert_id = reply["certificateId"].as_str().unwrap();
        let token = reply["certificateOwnershipToken"].as_str().unwrap();
        let registry = f.service.registry();
        assert_eq!(
            registry.cert_status(cert_id),
            Some(crate::registry::CertStatus::PendingActivation)
        );
        assert_eq!(
            registry.cert_status(&f.claim),
            Some(crate::registry::CertStatus::Claim)
        );

        let reply = accepted(REGISTER, call(&f, REGISTER, &register_body(token)));
        assert_eq!(
            reply,
            json!({
                "deviceConfiguration": {
                    "FallbackUrl": "https://www.example.com/test-site",
                    "LocationUrl": "https://example.aws"
                },
                "thingName": "ThingPrefix_1"
            })
        );
        assert_eq!(
            registry.cert_status(cert_id),
            Some(crate::registry::CertStatus::Active)
        );
        let thing = registry.thing("ThingPrefix_1").unwrap();
        assert_eq!(thing.certificate_ids, [cert_id]);
        assert_eq!(thing.attributes["version"], "v1");
    }

    #[test]
    fn csr_flow_registers_and_pseudo_parameters_come_from_the_new_certificate() {
        let f = fixture();
        let body = json!({"certificateSigningRequest": csr("meter-17")}).to_string();
        let reply = accepted(CSR, call(&f, CSR, body.as_bytes()));
        assert_eq!(
            field_names(&reply),
            [
                "certificateId",
                "certificatePem",
                "certificateOwnershipToken"
            ]
        );
        let cert_id = reply["certificateId"].as_str().unwrap();
        let token = reply["certificateOwnershipToken"].as_str().unwrap();

        let topic = "$aws/provisioning-templates/ByCommonName/provision/json";
        let body = json!({"certificateOwnershipToken": token}).to_string();
        let reply = accepted(topic, call(&f, topic, body.as_bytes()));
        assert_eq!(reply["thingName"], "meter-17");
        assert_eq!(reply["deviceConfiguration"]["id"], cert_id);
    }

    #[test]
    fn token_reuse_expiry_foreign_unknown_and_empty_are_rejected() {
        let f = fixture();
        let token_error = |reply| {
            let (status, code, message) = rejected(REGISTER, reply);
            assert_eq!(
                (status, code.as_str()),
                (400, "InvalidCertificateOwnershipToken")
            );
            message
        };

        let (_, token) = new_token(&f, &f.claim);
        accepted(REGISTER, call(&f, REGISTER, &register_body(&token)));
        let reused = token_error(call(&f, REGISTER, &register_body(&token)));
        assert!(reused.contains("already been used"), "{reused}");

        let (_, token) = new_token(&f, &f.claim);
        assert!(f.service.registry().expire_token_for_test(&token));
        let expired = token_error(call(&f, REGISTER, &register_body(&token)));
        assert!(expired.contains("expired"), "{expired}");

        let (_, token) = new_token(&f, &f.claim);
        let foreign = token_error(call_as(
            &f,
            REGISTER,
            &register_body(&token),
            "another-claim",
        ));
        assert!(
            foreign.contains("different client certificate"),
            "{foreign}"
        );
        // The rightful owner can still use it.
        accepted(REGISTER, call(&f, REGISTER, &register_body(&token)));

        let unknown = token_error(call(&f, REGISTER, &register_body("not-a-token")));
        assert!(unknown.contains("not valid"), "{unknown}");

        let empty = token_error(call(&f, REGISTER, &register_body("")));
        assert_eq!(empty, "Certificate ownership token cannot be empty.");
        let missing = token_error(call(&f, REGISTER, br#"{"parameters":{}}"#));
        assert_eq!(missing, empty);

        let mut messages = vec![reused, expired, foreign, unknown, empty];
        messages.sort();
        messages.dedup();
        assert_eq!(messages.len(), 5);
    }

    #[test]
    fn unknown_or_invalid_template_and_evaluation_errors() {
        let f = fixture();
        let (_, token) = new_token(&f, &f.claim);
        let topic = "$aws/provisioning-templates/NoSuchTemplate/provision/json";
        let (status, code, message) = rejected(topic, call(&f, topic, &register_body(&token)));
        assert_eq!((status, code.as_str()), (404, "ResourceNotFound"));
        assert!(message.contains("NoSuchTemplate"));

        for name in ["", &"x".repeat(37), "a.b", "a/b"] {
            let topic = format!("$aws/provisioning-templates/{name}/provision/json");
            let (status, code, _) = rejected(&topic, call(&f, &topic, &register_body(&token)));
            assert_eq!(
                (status, code.as_str()),
                (400, "InvalidParameters"),
                "{name}"
            );
        }

        // The seed template needs SerialNumber.
        let body = json!({"certificateOwnershipToken": token, "parameters": {"DeviceLocation": "Seattle"}});
        let (status, code, message) =
            rejected(REGISTER, call(&f, REGISTER, body.to_string().as_bytes()));
        assert_eq!(
            (status, code.as_str()),
            (400, "InvalidParameters"),
            "{message}"
        );
        // A failed evaluation does not spend the token.
        accepted(REGISTER, call(&f, REGISTER, &register_body(&token)));
    }

    #[test]
    fn malformed_payloads_are_400_invalid_payload() {
        let f = fixture();
        let cases: [(&str, &[u8]); 11] = [
            (CREATE, b"nope"),
            (CREATE, b"[]"),
            (CREATE, b"null"),
            (CSR, b""),
            (CSR, b"{\"certificateSigningRequest\": 5}"),
            (CSR, b"{}"),
            (REGISTER, b""),
            (REGISTER, b"{\"certificateOwnershipToken\": "),
            (REGISTER, b"{\"certificateOwnershipToken\": 7}"),
            (
                REGISTER,
                b"{\"certificateOwnershipToken\": \"t\", \"parameters\": []}",
            ),
            (
                REGISTER,
                b"{\"certificateOwnershipToken\": \"t\", \"parameters\": {\"SerialNumber\": 1}}",
            ),
        ];
        for (topic, payload) in cases {
            let (status, code, _) = rejected(topic, call(&f, topic, payload));
            assert_eq!(
                (status, code.as_str()),
                (400, "InvalidPayload"),
                "{topic} {payload:?}"
            );
        }
        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        let (status, code, message) = rejected(CREATE, call(&f, CREATE, &big));
        assert_eq!((status, code.as_str()), (400, "InvalidPayload"));
        assert!(message.contains("limit"));

        let body = json!({"certificateSigningRequest": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"});
        let (status, code, _) = rejected(CSR, call(&f, CSR, body.to_string().as_bytes()));
        assert_eq!((status, code.as_str()), (400, "InvalidCsr"));
    }

    fn cbor(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(value, &mut out).unwrap();
        out
    }

    fn call_cbor(f: &Fixture, topic: &str, payload: &[u8]) -> (String, Value) {
        let reply = f.service.handle(topic, payload, &f.claim).expect("a reply");
        let value = ciborium::de::from_reader(reply.payload.as_slice()).unwrap();
        (reply.topic, value)
    }

    #[test]
    fn cbor_requests_are_answered_in_cbor() {
        let f = fixture();
        let create = "$aws/certificates/create/cbor";
        for payload in [&b""[..], b"\xa0"] {
            let reply = accepted(create, call_cbor(&f, create, payload));
            assert!(reply["privateKey"]
                .as_str()
                .unwrap()
                .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        }
        let csr_topic = "$aws/certificates/create-from-csr/cbor";
        let body = cbor(&json!({"certificateSigningRequest": csr("cbor-device")}));
        let reply = accepted(csr_topic, call_cbor(&f, csr_topic, &body));
        let token = reply["certificateOwnershipToken"].as_str().unwrap();
        let register = "$aws/provisioning-templates/FleetTemplate/provision/cbor";
        let body = cbor(&json!({
            "certificateOwnershipToken": token,
            "parameters": {"SerialNumber": "c1", "DeviceLocation": "Seattle"}
        }));
        let reply = accepted(register, call_cbor(&f, register, &body));
        assert_eq!(reply["thingName"], "ThingPrefix_c1");
        assert_eq!(f.service.answered(), (0, 4));

        // Rejections come back in CBOR with AWS's three fields.
        let cases: [(&str, &[u8], &str); 6] = [
            (create, b"\x01", "InvalidPayload"),
            (create, b"{}", "InvalidPayload"),
            (create, b"\xa0\x00", "InvalidPayload"),
            (csr_topic, b"\xa1\x61x\x41\x00", "InvalidPayload"),
            (csr_topic, b"", "InvalidPayload"),
            (register, &body, "InvalidCertificateOwnershipToken"),
        ];
        for (topic, payload, code) in cases {
            let (status, got, _) = rejected(topic, call_cbor(&f, topic, payload));
            assert_eq!((status, got.as_str()), (400, code), "{topic} {payload:x?}");
        }
    }

    #[test]
    fn request_topics_and_other_topics() {
        let f = fixture();
        for topic in [
            CREATE,
            CSR,
            REGISTER,
            "$aws/certificates/create/cbor",
            "$aws/certificates/create-from-csr/cbor",
            "$aws/provisioning-templates/FleetTemplate/provision/cbor",
        ] {
            assert!(Service::is_request_topic(topic));
        }
        for topic in [
            "$aws/certificates/create/json/accepted",
            "$aws/certificates/create/xml",
            "$aws/provisioning-templates/FleetTemplate/provision/json/rejected",
            "$aws/provisioning-templates/FleetTemplate",
            "devices/telemetry",
            "",
        ] {
            assert!(!Service::is_request_topic(topic), "{topic}");
            assert!(
                f.service.handle(topic, b"{}", &f.claim).is_none(),
                "{topic}"
            );
        }
    }

    #[test]
    fn registrations_and_spent_tokens_survive_a_restart() {
        let f = fixture();
        let (cert_id, token) = new_token(&f, &f.claim);
        accepted(REGISTER, call(&f, REGISTER, &register_body(&token)));
        let (_, unused) = new_token(&f, &f.claim);
        let Fixture { dir, service, .. } = f;
        drop(service);

        let f = fixture_in(dir);
        let registry = f.service.registry();
        assert_eq!(
            registry.cert_status(&cert_id),
            Some(crate::registry::CertStatus::Active)
        );
        assert_eq!(registry.things().len(), 1);
        let (_, _, message) = rejected(REGISTER, call(&f, REGISTER, &register_body(&token)));
        assert!(message.contains("already been used"));
        accepted(REGISTER, call(&f, REGISTER, &register_body(&unused)));
        assert!(f.dir.path().join("registry.json").exists());
    }

    #[test]
    fn shared_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Ca>();
        check::<Registry>();
        check::<Service>();
    }

    #[test]
    fn further_claims_are_recorded_as_claims() {
        let f = fixture();
        let claim = f
            .service
            .issue_claim("line-3", Duration::from_secs(300))
            .unwrap();
        assert_eq!(
            f.service.registry().cert_status(&claim.certificate_id),
            Some(crate::registry::CertStatus::Claim)
        );
        assert_eq!(
            f.service.template_names().collect::<Vec<_>>(),
            ["ByCommonName", "FleetTemplate"]
        );
        assert!(valid_template_name("FleetTemplate"));
        assert!(valid_template_name(&"a".repeat(36)));
        assert!(!valid_template_name("+"));
    }
}
