use super::*;
use crate::cert::CertInfo;
use serde_json::json;

const SEED: &str = include_str!("../../templates/FleetTemplate.json");
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
    let body = json!({"Resources": {}, "DeviceConfiguration": device_configuration}).to_string();
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
    let spec =
        eval(json!({"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "Inactive"}))
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
