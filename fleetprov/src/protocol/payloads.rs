//! Request and reply payloads, with AWS's exact JSON field names.
//!
//! Reply parsers tolerate extra fields and refuse wrong types or missing required fields with
//! [`ErrorKind::BadReply`](crate::ErrorKind::BadReply).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use zeroize::Zeroizing;

use super::cbor::{CborMap, MapWriter};
use super::topics::PayloadFormat;
use crate::error::{Error, Rejection};

/// Largest MQTT payload AWS IoT accepts or sends: 128 KiB.
pub const MAX_PAYLOAD_LEN: usize = 128 * 1024;

/// Payload of a CreateKeysAndCertificate request: an empty JSON object.
pub const CREATE_KEYS_REQUEST: &[u8] = b"{}";

/// Payload of a CreateKeysAndCertificate request in `format`: an empty map.
pub fn create_keys_request(format: PayloadFormat) -> &'static [u8] {
    match format {
        PayloadFormat::Json => CREATE_KEYS_REQUEST,
        PayloadFormat::Cbor => b"\xa0",
    }
}

fn cbor_reply<'b>(payload: &'b [u8], op: &str) -> Result<CborMap<'b>, Error> {
    CborMap::parse(payload)
        .map_err(|e| Error::bad_reply(format!("{op} accepted reply is not the expected CBOR: {e}")))
}

fn cbor_field<T>(op: &str, field: Result<T, String>) -> Result<T, Error> {
    field.map_err(|e| Error::bad_reply(format!("{op} accepted reply: {e}")))
}

/// Accepted reply of CreateKeysAndCertificate.
#[derive(Clone, PartialEq, Eq)]
pub struct CreateKeysResponse {
    /// `certificateId`: SHA-256 of the DER certificate, hex.
    pub certificate_id: String,
    /// `certificatePem`: the new certificate.
    pub certificate_pem: String,
    /// `privateKey`: the new private key in PEM; wiped from memory when dropped.
    pub private_key: Zeroizing<String>,
    /// `certificateOwnershipToken`: proof of ownership for RegisterThing.
    pub certificate_ownership_token: String,
}

impl fmt::Debug for CreateKeysResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateKeysResponse")
            .field("certificate_id", &self.certificate_id)
            .field("certificate_pem", &self.certificate_pem)
            .field("private_key", &"<redacted>")
            .field(
                "certificate_ownership_token",
                &self.certificate_ownership_token,
            )
            .finish()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateKeysWire<'a> {
    certificate_id: String,
    certificate_pem: String,
    // Borrowed still escaped, so serde_json's scratch buffer never holds the key.
    #[serde(borrow)]
    private_key: &'a RawValue,
    certificate_ownership_token: String,
}

impl CreateKeysResponse {
    /// Parses an accepted CreateKeysAndCertificate reply.
    ///
    /// The key is unescaped straight into its zeroizing buffer; the only other copies are in
    /// `payload` itself, which the caller owns.
    pub fn from_json(payload: &[u8]) -> Result<CreateKeysResponse, Error> {
        let wire: CreateKeysWire<'_> = serde_json::from_slice(payload).map_err(|e| {
            Error::bad_reply(format!(
                "CreateKeysAndCertificate accepted reply is not the expected JSON: {}",
                describe_json_error(&e)
            ))
        })?;
        let private_key = unescape_json_string(wire.private_key.get()).ok_or_else(|| {
            Error::bad_reply("CreateKeysAndCertificate accepted reply: privateKey is not a string")
        })?;
        CreateKeysResponse {
            certificate_id: wire.certificate_id,
            certificate_pem: wire.certificate_pem,
            private_key,
            certificate_ownership_token: wire.certificate_ownership_token,
        }
        .complete()
    }

    /// Parses an accepted CreateKeysAndCertificate reply in CBOR; the key is copied once, into
    /// its zeroizing buffer.
    pub fn from_cbor(payload: &[u8]) -> Result<CreateKeysResponse, Error> {
        const OP: &str = "CreateKeysAndCertificate";
        let map = cbor_reply(payload, OP)?;
        let r = CreateKeysResponse {
            certificate_id: cbor_field(OP, map.required_text("certificateId"))?,
            certificate_pem: cbor_field(OP, map.required_text("certificatePem"))?,
            private_key: cbor_field(OP, map.secret_text("privateKey"))?,
            certificate_ownership_token: cbor_field(
                OP,
                map.required_text("certificateOwnershipToken"),
            )?,
        };
        r.complete()
    }

    /// The reply, if none of its required fields is empty (for both formats).
    fn complete(self) -> Result<CreateKeysResponse, Error> {
        require_fields(
            "CreateKeysAndCertificate",
            &[
                ("certificateId", &self.certificate_id),
                ("certificatePem", &self.certificate_pem),
                ("privateKey", &self.private_key),
                (
                    "certificateOwnershipToken",
                    &self.certificate_ownership_token,
                ),
            ],
        )?;
        Ok(self)
    }

    /// Parses an accepted reply in `format`.
    pub fn parse(payload: &[u8], format: PayloadFormat) -> Result<CreateKeysResponse, Error> {
        match format {
            PayloadFormat::Json => CreateKeysResponse::from_json(payload),
            PayloadFormat::Cbor => CreateKeysResponse::from_cbor(payload),
        }
    }
}

/// serde_json's messages may quote the offending input; for a reply that carries a key we
/// keep only the category and position.
fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Io => "I/O error",
        Category::Syntax => "not valid JSON",
        Category::Data => "wrong shape or field types",
        Category::Eof => "truncated JSON",
    };
    format!("{what} (line {}, column {})", e.line(), e.column())
}

/// Decodes a JSON string literal (quotes included) into a zeroizing buffer sized up front, so
/// no reallocation leaves a stray copy behind.
fn unescape_json_string(raw: &str) -> Option<Zeroizing<String>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    // Unescaping never lengthens: every escape is at least as long as what it encodes.
    let mut out = Zeroizing::new(String::with_capacity(inner.len()));
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let decoded = match chars.next()? {
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let hi = hex4(&mut chars)?;
                if (0xD800..0xDC00).contains(&hi) {
                    if chars.next()? != '\\' || chars.next()? != 'u' {
                        return None;
                    }
                    let lo = hex4(&mut chars)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return None;
                    }
                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                } else {
                    char::from_u32(hi)?
                }
            }
            _ => return None,
        };
        out.push(decoded);
    }
    Some(out)
}

fn hex4(chars: &mut std::str::Chars<'_>) -> Option<u32> {
    let mut v = 0;
    for _ in 0..4 {
        v = v * 16 + chars.next()?.to_digit(16)?;
    }
    Some(v)
}

/// Request of CreateCertificateFromCsr.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateFromCsrRequest<'a> {
    /// `certificateSigningRequest`: the CSR in PEM.
    pub certificate_signing_request: &'a str,
}

impl CreateFromCsrRequest<'_> {
    /// The JSON payload.
    pub fn to_json(&self) -> Vec<u8> {
        json_bytes(self)
    }

    /// The payload in `format`.
    pub fn encode(&self, format: PayloadFormat) -> Vec<u8> {
        match format {
            PayloadFormat::Json => self.to_json(),
            PayloadFormat::Cbor => MapWriter::new(1)
                .text(
                    "certificateSigningRequest",
                    self.certificate_signing_request,
                )
                .finish(),
        }
    }
}

/// Accepted reply of CreateCertificateFromCsr.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateFromCsrResponse {
    /// `certificateId`.
    pub certificate_id: String,
    /// `certificatePem`.
    pub certificate_pem: String,
    /// `certificateOwnershipToken`.
    pub certificate_ownership_token: String,
}

impl CreateFromCsrResponse {
    /// Parses an accepted CreateCertificateFromCsr reply.
    pub fn from_json(payload: &[u8]) -> Result<Self, Error> {
        let r: Self = parse_reply(payload, "CreateCertificateFromCsr")?;
        r.complete()
    }

    /// Parses an accepted CreateCertificateFromCsr reply in CBOR.
    pub fn from_cbor(payload: &[u8]) -> Result<Self, Error> {
        const OP: &str = "CreateCertificateFromCsr";
        let map = cbor_reply(payload, OP)?;
        let r = CreateFromCsrResponse {
            certificate_id: cbor_field(OP, map.required_text("certificateId"))?,
            certificate_pem: cbor_field(OP, map.required_text("certificatePem"))?,
            certificate_ownership_token: cbor_field(
                OP,
                map.required_text("certificateOwnershipToken"),
            )?,
        };
        r.complete()
    }

    /// The reply, if none of its required fields is empty (for both formats).
    fn complete(self) -> Result<Self, Error> {
        require_fields(
            "CreateCertificateFromCsr",
            &[
                ("certificateId", &self.certificate_id),
                ("certificatePem", &self.certificate_pem),
                (
                    "certificateOwnershipToken",
                    &self.certificate_ownership_token,
                ),
            ],
        )?;
        Ok(self)
    }

    /// Parses an accepted reply in `format`.
    pub fn parse(payload: &[u8], format: PayloadFormat) -> Result<Self, Error> {
        match format {
            PayloadFormat::Json => Self::from_json(payload),
            PayloadFormat::Cbor => Self::from_cbor(payload),
        }
    }
}

/// Request of RegisterThing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterThingRequest {
    /// `certificateOwnershipToken` from the create reply.
    pub certificate_ownership_token: String,
    /// `parameters` of the template; left out of the JSON when empty.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
}

impl RegisterThingRequest {
    /// The JSON payload.
    pub fn to_json(&self) -> Vec<u8> {
        json_bytes(self)
    }

    /// The payload in `format` (`parameters` left out when empty, as in JSON).
    pub fn encode(&self, format: PayloadFormat) -> Vec<u8> {
        match format {
            PayloadFormat::Json => self.to_json(),
            PayloadFormat::Cbor if self.parameters.is_empty() => MapWriter::new(1)
                .text(
                    "certificateOwnershipToken",
                    &self.certificate_ownership_token,
                )
                .finish(),
            PayloadFormat::Cbor => MapWriter::new(2)
                .text(
                    "certificateOwnershipToken",
                    &self.certificate_ownership_token,
                )
                .string_map("parameters", &self.parameters)
                .finish(),
        }
    }
}

/// Accepted reply of RegisterThing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterThingResponse {
    /// `thingName`.
    pub thing_name: String,
    /// `deviceConfiguration`: the template's flat map (empty when absent).
    #[serde(default)]
    pub device_configuration: BTreeMap<String, String>,
}

impl RegisterThingResponse {
    /// Parses an accepted RegisterThing reply.
    pub fn from_json(payload: &[u8]) -> Result<Self, Error> {
        let r: Self = parse_reply(payload, "RegisterThing")?;
        require_fields("RegisterThing", &[("thingName", &r.thing_name)])?;
        Ok(r)
    }

    /// Parses an accepted RegisterThing reply in CBOR.
    pub fn from_cbor(payload: &[u8]) -> Result<Self, Error> {
        const OP: &str = "RegisterThing";
        let map = cbor_reply(payload, OP)?;
        let r = RegisterThingResponse {
            thing_name: cbor_field(OP, map.required_text("thingName"))?,
            device_configuration: cbor_field(OP, map.string_map("deviceConfiguration"))?,
        };
        require_fields(OP, &[("thingName", &r.thing_name)])?;
        Ok(r)
    }

    /// Parses an accepted reply in `format`.
    pub fn parse(payload: &[u8], format: PayloadFormat) -> Result<Self, Error> {
        match format {
            PayloadFormat::Json => Self::from_json(payload),
            PayloadFormat::Cbor => Self::from_cbor(payload),
        }
    }
}

impl Rejection {
    /// Parses a rejected reply; only a payload that is not a JSON object is an error.
    pub fn from_json(payload: &[u8]) -> Result<Rejection, Error> {
        let value: serde_json::Value = serde_json::from_slice(payload).map_err(|e| {
            Error::bad_reply(format!(
                "rejected reply is not JSON: {}",
                describe_json_error(&e)
            ))
        })?;
        let obj = value
            .as_object()
            .ok_or_else(|| Error::bad_reply("rejected reply is not a JSON object"))?;
        let text = |k: &str| match obj.get(k) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        // An HTTP status, if present; anything else means the reply is not what AWS sends.
        let status_code = match obj.get("statusCode") {
            None | Some(serde_json::Value::Null) => 0,
            Some(serde_json::Value::Number(n)) => n.as_i64().unwrap_or(-1),
            Some(serde_json::Value::String(s)) => s.trim().parse().unwrap_or(-1),
            Some(_) => -1,
        };
        if !(100..=599).contains(&status_code) && status_code != 0 {
            return Err(Error::bad_reply(format!(
                "rejected reply has statusCode {}, not an HTTP status",
                obj.get("statusCode")
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            )));
        }
        Ok(Rejection {
            status_code,
            error_code: text("errorCode"),
            error_message: text("errorMessage"),
        })
    }

    /// Parses a rejected reply in CBOR; only a payload that is not one CBOR map is an error,
    /// and a field of another type than expected is left at 0 or empty.
    pub fn from_cbor(payload: &[u8]) -> Result<Rejection, Error> {
        let map = CborMap::parse(payload)
            .map_err(|e| Error::bad_reply(format!("rejected reply: {e}")))?;
        let text = |k: &str| map.text(k).ok().flatten().unwrap_or_default();
        // As in JSON: absent or null is 0, anything but an HTTP status is a bad reply.
        let status_code = if map.is_absent_or_null("statusCode") {
            0
        } else {
            match map.int("statusCode") {
                Some(code) if (100..=599).contains(&code) => code,
                _ => {
                    return Err(Error::bad_reply(
                        "rejected reply has a statusCode that is not an HTTP status",
                    ))
                }
            }
        };
        Ok(Rejection {
            status_code,
            error_code: text("errorCode"),
            error_message: text("errorMessage"),
        })
    }

    /// Parses a rejected reply in `format`.
    pub fn parse(payload: &[u8], format: PayloadFormat) -> Result<Rejection, Error> {
        match format {
            PayloadFormat::Json => Rejection::from_json(payload),
            PayloadFormat::Cbor => Rejection::from_cbor(payload),
        }
    }
}

/// Parses `--template_parameters`: a JSON object whose values are all strings.
/// Anything else is [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument).
pub fn parse_template_parameters(json: &str) -> Result<BTreeMap<String, String>, Error> {
    let value: serde_json::Value = serde_json::from_str(json)
        .map_err(|e| Error::invalid(format!("template parameters are not valid JSON: {e}")))?;
    let serde_json::Value::Object(obj) = value else {
        return Err(Error::invalid(
            "template parameters must be a JSON object such as {\"SerialNumber\":\"1\"}",
        ));
    };
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        match v {
            serde_json::Value::String(s) => {
                out.insert(k, s);
            }
            other => {
                return Err(Error::invalid(format!(
                    "template parameter {k:?} must be a string, not {}",
                    json_type_name(&other)
                )))
            }
        }
    }
    Ok(out)
}

fn json_type_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn parse_reply<T: serde::de::DeserializeOwned>(payload: &[u8], op: &str) -> Result<T, Error> {
    serde_json::from_slice(payload)
        .map_err(|e| Error::bad_reply(format!("{op} accepted reply is not the expected JSON: {e}")))
}

/// An accepted reply whose required fields are empty is as unusable as one without them.
fn require_fields(op: &str, fields: &[(&str, &str)]) -> Result<(), Error> {
    match fields.iter().find(|(_, v)| v.trim().is_empty()) {
        Some((name, _)) => Err(Error::bad_reply(format!(
            "{op} accepted reply has an empty {name}"
        ))),
        None => Ok(()),
    }
}

fn json_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising plain strings and string maps into memory cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    const KEY: &str = "-----BEGIN RSA PRIVATE KEY-----\nMIIB\"/\\x\u{e9}\u{1F600}\n-----END RSA PRIVATE KEY-----\n";

    #[test]
    fn create_keys_accepted_with_exact_names() {
        let json = serde_json::json!({
            "certificateId": "ab12",
            "certificatePem": "-----BEGIN CERTIFICATE-----\n...",
            "privateKey": KEY,
            "certificateOwnershipToken": "tok",
            "extra": [1, 2]
        });
        let r = CreateKeysResponse::from_json(json.to_string().as_bytes()).unwrap();
        assert_eq!(r.certificate_id, "ab12");
        assert_eq!(r.certificate_pem, "-----BEGIN CERTIFICATE-----\n...");
        assert_eq!(r.private_key.as_str(), KEY);
        assert_eq!(r.certificate_ownership_token, "tok");
        assert!(
            !format!("{r:?}").contains("MIIB"),
            "Debug must hide the key"
        );
    }

    #[test]
    fn create_keys_unescapes_every_json_escape() {
        let raw = r#"{"certificateId":"i","certificatePem":"p","certificateOwnershipToken":"t","privateKey":"a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00"}"#;
        let r = CreateKeysResponse::from_json(raw.as_bytes()).unwrap();
        assert_eq!(
            r.private_key.as_str(),
            "a\"b\\c/d\u{8}\u{c}\n\r\t\u{e9}\u{1F600}"
        );
    }

    #[test]
    fn create_keys_wrong_shapes_are_bad_replies() {
        for bad in [
            &b"not json"[..],
            br#"[]"#,
            br#"{"certificateId":"i","certificatePem":"p","certificateOwnershipToken":"t"}"#,
            br#"{"certificateId":"i","certificatePem":"p","certificateOwnershipToken":"t","privateKey":5}"#,
            br#"{"certificateId":1,"certificatePem":"p","certificateOwnershipToken":"t","privateKey":"k"}"#,
        ] {
            let e = CreateKeysResponse::from_json(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadReply, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn bad_reply_message_never_quotes_the_key() {
        // serde_json itself would quote the string in its message; ours must not.
        let raw = br#""-----BEGIN RSA PRIVATE KEY-----SECRETKEY""#;
        let plain = serde_json::from_slice::<CreateKeysWire<'_>>(raw)
            .err()
            .unwrap();
        assert!(plain.to_string().contains("SECRETKEY"));
        let e = CreateKeysResponse::from_json(raw).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadReply);
        assert!(!e.message.contains("SECRETKEY"), "{}", e.message);
    }

    #[test]
    fn unescape_rejects_malformed_literals() {
        for bad in [
            "abc",
            "\"abc",
            "\"a\\qb\"",
            "\"\\u12\"",
            "\"\\ud83d\"",
            "\"\\ud83d\\u0041\"",
        ] {
            assert!(unescape_json_string(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn csr_request_and_reply() {
        let req = CreateFromCsrRequest {
            certificate_signing_request: "-----BEGIN CERTIFICATE REQUEST-----\n",
        };
        assert_eq!(
            String::from_utf8(req.to_json()).unwrap(),
            r#"{"certificateSigningRequest":"-----BEGIN CERTIFICATE REQUEST-----\n"}"#
        );
        let r = CreateFromCsrResponse::from_json(
            br#"{"certificateId":"i","certificatePem":"p","certificateOwnershipToken":"t","x":1}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            CreateFromCsrResponse {
                certificate_id: "i".into(),
                certificate_pem: "p".into(),
                certificate_ownership_token: "t".into()
            }
        );
        let e = CreateFromCsrResponse::from_json(br#"{"certificateId":"i"}"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadReply);
    }

    #[test]
    fn register_thing_request_omits_empty_parameters() {
        let mut req = RegisterThingRequest {
            certificate_ownership_token: "tok".into(),
            parameters: BTreeMap::new(),
        };
        assert_eq!(
            String::from_utf8(req.to_json()).unwrap(),
            r#"{"certificateOwnershipToken":"tok"}"#
        );
        req.parameters.insert("SerialNumber".into(), "1".into());
        req.parameters
            .insert("DeviceLocation".into(), "Seattle".into());
        assert_eq!(
            String::from_utf8(req.to_json()).unwrap(),
            r#"{"certificateOwnershipToken":"tok","parameters":{"DeviceLocation":"Seattle","SerialNumber":"1"}}"#
        );
    }

    #[test]
    fn register_thing_reply() {
        let r = RegisterThingResponse::from_json(
            br#"{"deviceConfiguration":{"FallbackUrl":"https://x","LocationUrl":"y"},"thingName":"ThingPrefix_1"}"#,
        )
        .unwrap();
        assert_eq!(r.thing_name, "ThingPrefix_1");
        assert_eq!(r.device_configuration.len(), 2);
        assert_eq!(r.device_configuration["LocationUrl"], "y");
        let r = RegisterThingResponse::from_json(br#"{"thingName":"t"}"#).unwrap();
        assert!(r.device_configuration.is_empty());
        for bad in [
            &br#"{"deviceConfiguration":{}}"#[..],
            br#"{"thingName":"t","deviceConfiguration":{"a":{"nested":"x"}}}"#,
            br#"{"thingName":7}"#,
            b"",
        ] {
            let e = RegisterThingResponse::from_json(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadReply);
        }
    }

    #[test]
    fn rejection_fields_and_tolerance() {
        let r = Rejection::from_json(
            br#"{"statusCode":400,"errorCode":"InvalidCertificateOwnershipToken","errorMessage":"Certificate ownership token cannot be empty."}"#,
        )
        .unwrap();
        assert_eq!(r.status_code, 400);
        assert_eq!(r.error_code, "InvalidCertificateOwnershipToken");
        assert_eq!(
            r.error_message,
            "Certificate ownership token cannot be empty."
        );
        let r = Rejection::from_json(br#"{"statusCode":"404","errorCode":"ResourceNotFound"}"#)
            .unwrap();
        assert_eq!((r.status_code, r.error_message.as_str()), (404, ""));
        assert_eq!(Rejection::from_json(b"{}").unwrap(), Rejection::default());
        for bad in [
            &b"nope"[..],
            b"[1]",
            b"\"x\"",
            br#"{"statusCode":99999999999}"#,
            br#"{"statusCode":-1}"#,
            br#"{"statusCode":4.5}"#,
            br#"{"statusCode":"lots"}"#,
            br#"{"statusCode":true}"#,
        ] {
            assert_eq!(
                Rejection::from_json(bad).unwrap_err().kind,
                ErrorKind::BadReply
            );
        }
    }

    #[test]
    fn accepted_replies_with_empty_required_fields_are_bad() {
        let e = CreateFromCsrResponse::from_json(
            br#"{"certificateId":"ab","certificatePem":"p","certificateOwnershipToken":""}"#,
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadReply);
        assert!(e.message.contains("certificateOwnershipToken"), "{e}");
        let e = CreateKeysResponse::from_json(
            br#"{"certificateId":" ","certificatePem":"p","privateKey":"k","certificateOwnershipToken":"t"}"#,
        )
        .unwrap_err();
        assert!(e.message.contains("certificateId"), "{e}");
        let e = RegisterThingResponse::from_json(br#"{"thingName":""}"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadReply);
    }

    #[test]
    fn template_parameters() {
        let p = parse_template_parameters(r#"{"SerialNumber":"1","DeviceLocation":"Seattle"}"#)
            .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p["DeviceLocation"], "Seattle");
        assert!(parse_template_parameters("{}").unwrap().is_empty());
        for (bad, needle) in [
            (r#"["a"]"#, "JSON object"),
            (r#""a""#, "JSON object"),
            ("null", "JSON object"),
            (r#"{"SerialNumber":1}"#, "a number"),
            (r#"{"a":null}"#, "null"),
            (r#"{"a":{"b":"c"}}"#, "an object"),
            (r#"{"a":["x"]}"#, "an array"),
            (r#"{"a":true}"#, "a boolean"),
            (r#"{"a":"b""#, "not valid JSON"),
            ("", "not valid JSON"),
            ("{'a':'b'}", "not valid JSON"),
        ] {
            let e = parse_template_parameters(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidArgument, "{bad}");
            assert!(e.message.contains(needle), "{bad}: {}", e.message);
        }
    }

    fn cbor(fields: &[(&str, &str)]) -> Vec<u8> {
        fields
            .iter()
            .fold(MapWriter::new(fields.len() as u64), |w, (k, v)| {
                w.text(k, v)
            })
            .finish()
    }

    #[test]
    fn cbor_requests_are_maps_with_the_json_names() {
        assert_eq!(create_keys_request(PayloadFormat::Cbor), b"\xa0");
        assert_eq!(create_keys_request(PayloadFormat::Json), b"{}");
        let csr = CreateFromCsrRequest {
            certificate_signing_request: "C",
        };
        let mut want = vec![0xa1, 0x78, 25];
        want.extend_from_slice(b"certificateSigningRequest\x61C");
        assert_eq!(csr.encode(PayloadFormat::Cbor), want);
        let mut req = RegisterThingRequest {
            certificate_ownership_token: "t".into(),
            parameters: BTreeMap::new(),
        };
        let mut want = vec![0xa1, 0x78, 25];
        want.extend_from_slice(b"certificateOwnershipToken\x61t");
        assert_eq!(req.encode(PayloadFormat::Cbor), want);
        req.parameters.insert("SerialNumber".into(), "1".into());
        let mut want = vec![0xa2, 0x78, 25];
        want.extend_from_slice(
            b"certificateOwnershipToken\x61t\x6aparameters\xa1\x6cSerialNumber\x611",
        );
        assert_eq!(req.encode(PayloadFormat::Cbor), want);
        assert_eq!(req.encode(PayloadFormat::Json), req.to_json());
    }

    #[test]
    fn cbor_replies_parse_and_wrong_shapes_are_bad_replies() {
        let keys = cbor(&[
            ("certificateId", "ab12"),
            ("certificatePem", "P"),
            ("privateKey", KEY),
            ("certificateOwnershipToken", "tok"),
            ("extra", "x"),
        ]);
        let r = CreateKeysResponse::parse(&keys, PayloadFormat::Cbor).unwrap();
        assert_eq!(r.private_key.as_str(), KEY);
        assert_eq!(
            r.private_key.capacity(),
            KEY.len(),
            "sized once, never reallocated"
        );
        assert_eq!(r.certificate_ownership_token, "tok");
        let csr = CreateFromCsrResponse::parse(&keys, PayloadFormat::Cbor).unwrap();
        assert_eq!(csr.certificate_id, "ab12");
        let thing = MapWriter::new(2)
            .string_map(
                "deviceConfiguration",
                &[("k".to_owned(), "v".to_owned())].into(),
            )
            .text("thingName", "T")
            .finish();
        let r = RegisterThingResponse::parse(&thing, PayloadFormat::Cbor).unwrap();
        assert_eq!(
            (r.thing_name.as_str(), r.device_configuration["k"].as_str()),
            ("T", "v")
        );
        let r = RegisterThingResponse::parse(&cbor(&[("thingName", "T")]), PayloadFormat::Cbor)
            .unwrap();
        assert!(r.device_configuration.is_empty());

        let no_key = cbor(&[
            ("certificateId", "i"),
            ("certificatePem", "p"),
            ("certificateOwnershipToken", "t"),
        ]);
        for bad in [&b""[..], b"{}", b"\x80", &no_key, &keys[..keys.len() - 1]] {
            let e = CreateKeysResponse::parse(bad, PayloadFormat::Cbor).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadReply, "{bad:x?}");
            assert!(!e.message.contains("MIIB"), "{}", e.message);
        }
        // privateKey as a byte string, not text.
        let mut bytes_key = no_key.clone();
        bytes_key[0] = 0xa4;
        bytes_key.extend_from_slice(b"\x6aprivateKey\x44MIIB");
        let e = CreateKeysResponse::parse(&bytes_key, PayloadFormat::Cbor).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadReply);
        assert!(e.message.contains("privateKey"), "{}", e.message);
        assert!(!e.message.contains("MIIB"), "{}", e.message);
        let e = RegisterThingResponse::parse(&cbor(&[("thing", "T")]), PayloadFormat::Cbor)
            .unwrap_err();
        assert!(e.message.contains("thingName"), "{}", e.message);
    }

    #[test]
    fn cbor_rejections_parse_as_received() {
        // {"statusCode": 400, "errorCode": "E", "errorMessage": "M"}
        let mut payload = vec![0xa3, 0x6a];
        payload.extend_from_slice(b"statusCode\x19\x01\x90\x69errorCode\x61E\x6cerrorMessage\x61M");
        let r = Rejection::parse(&payload, PayloadFormat::Cbor).unwrap();
        assert_eq!(
            r,
            Rejection {
                status_code: 400,
                error_code: "E".into(),
                error_message: "M".into()
            }
        );
        let r = Rejection::parse(&cbor(&[("statusCode", "403")]), PayloadFormat::Cbor).unwrap();
        assert_eq!((r.status_code, r.error_code.as_str()), (403, ""));
        assert_eq!(
            Rejection::parse(b"\xa0", PayloadFormat::Cbor).unwrap(),
            Rejection::default()
        );
        for bad in [
            &cbor(&[("statusCode", "lots")])[..],
            b"\xa1\x6astatusCode\x19\x03\xe7",
        ] {
            let e = Rejection::parse(bad, PayloadFormat::Cbor).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadReply, "{bad:x?}");
        }
        let e = RegisterThingResponse::parse(&cbor(&[("thingName", "")]), PayloadFormat::Cbor)
            .unwrap_err();
        assert!(e.message.contains("empty thingName"), "{}", e.message);
        for bad in [&b""[..], b"\x01", b"{\"statusCode\":400}"] {
            let e = Rejection::parse(bad, PayloadFormat::Cbor).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadReply);
        }
    }
}
