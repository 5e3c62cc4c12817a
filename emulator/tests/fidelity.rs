//! AWS's documented provisioning semantics, each checked through MQTT over mutual TLS: the
//! certificate status default, registry validation, the account's resources, pre-provisioning
//! hooks and the other template details.

use fleetprov_testkit::emulator_clients as common;

use common::*;
use fleetprov_emulator::EmulatorConfig;
use serde_json::{json, Value};

/// An emulator serving `templates` (name, body), written to files in its state directory.
async fn start_with(
    templates: &[(&str, Value)],
    configure: impl FnOnce(&mut EmulatorConfig),
) -> Env {
    Env::start_serving(templates, |cfg, _| configure(cfg)).await
}

/// CreateKeysAndCertificate then RegisterThing on `template` with `parameters`; returns the new
/// identity and the RegisterThing reply (accepted or rejected).
async fn register(env: &Env, template: &str, parameters: Value) -> (Identity, Msg) {
    let mut c = env.claim_v5("test-fidelity").await;
    let created = c.request(CREATE, "{}").await;
    assert_eq!(created.topic, format!("{CREATE}/accepted"));
    let created = created.json();
    let id = Identity {
        cert_pem: created["certificatePem"].as_str().unwrap().to_owned(),
        key_pem: created["privateKey"].as_str().unwrap().to_owned(),
    };
    let body = json!({
        "certificateOwnershipToken": created["certificateOwnershipToken"],
        "parameters": parameters,
    });
    let topic = format!("$aws/provisioning-templates/{template}/provision/json");
    let reply = c.request(&topic, &body.to_string()).await;
    (id, reply)
}

fn accepted(template: &str, reply: &Msg) -> Value {
    assert_eq!(
        reply.topic,
        format!("$aws/provisioning-templates/{template}/provision/json/accepted"),
        "{}",
        String::from_utf8_lossy(&reply.payload)
    );
    reply.json()
}

/// A rejection with exactly AWS's three fields; returns (statusCode, errorCode, errorMessage).
fn rejected(template: &str, reply: &Msg) -> (u64, String, String) {
    assert_eq!(
        reply.topic,
        format!("$aws/provisioning-templates/{template}/provision/json/rejected"),
        "{}",
        String::from_utf8_lossy(&reply.payload)
    );
    let body = reply.json();
    let body = body.as_object().unwrap();
    assert_eq!(body.len(), 3, "{body:?}");
    (
        body["statusCode"].as_u64().unwrap(),
        body["errorCode"].as_str().unwrap().to_owned(),
        body["errorMessage"].as_str().unwrap().to_owned(),
    )
}

fn thing_template(thing: Value, certificate: Value) -> Value {
    json!({
        "Parameters": {"Serial": {"Type": "String"}},
        "Resources": {
            "thing": {"Type": "AWS::IoT::Thing", "Properties": thing},
            "certificate": {"Type": "AWS::IoT::Certificate", "Properties": certificate}
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_without_status_is_active_and_its_device_connects() {
    let mut template = thing_template(
        json!({"ThingName": {"Ref": "Serial"}}),
        json!({"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}}),
    );
    // A certificate with no policy may not connect at all.
    template["Resources"]["policy"] = json!({"Type": "AWS::IoT::Policy", "Properties": {
        "PolicyDocument": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "iot:*", "Resource": "*"}]}}});
    let env = start_with(&[("NoStatus", template)], |_| {}).await;
    let (device, reply) = register(&env, "NoStatus", json!({"Serial": "nostatus-1"})).await;
    assert_eq!(accepted("NoStatus", &reply)["thingName"], "nostatus-1");
    let mut c = V5::connect(env.port(), env.tls(&device), "nostatus-1").await;
    assert_eq!(c.subscribe(&["devices/nostatus-1/#"]).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_validation_refuses_what_aws_refuses() {
    let template = |attributes: Value, thing_type: Option<&str>| {
        let mut thing = json!({"ThingName": {"Ref": "Serial"}, "AttributePayload": attributes});
        if let Some(t) = thing_type {
            thing["ThingTypeName"] = json!(t);
        }
        let mut body = thing_template(
            thing,
            json!({"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"}),
        );
        body["Parameters"]["Loc"] = json!({"Type": "String", "Default": "dock"});
        body
    };
    let four = json!({"a": "1", "b": "2", "c": "3", "d": "4"});
    let env = start_with(
        &[
            (
                "Spaces",
                template(json!({"location": {"Ref": "Loc"}}), None),
            ),
            ("FourNoType", template(four.clone(), None)),
            ("FourWithType", template(four, Some("sensor"))),
        ],
        |_| {},
    )
    .await;
    // An attribute value with a space: AWS's pattern has none.
    let (_, reply) = register(&env, "Spaces", json!({"Serial": "s1", "Loc": "a b"})).await;
    let (status, code, message) = rejected("Spaces", &reply);
    assert_eq!((status, code.as_str()), (400, "InvalidParameters"));
    assert!(message.contains("no spaces"), "{message}");
    // The same template with a valid value provisions.
    let (_, reply) = register(&env, "Spaces", json!({"Serial": "s2", "Loc": "dock-7:[a]"})).await;
    assert_eq!(accepted("Spaces", &reply)["thingName"], "s2");
    let thing = env.emu.service().registry().thing("s2").unwrap();
    assert_eq!(thing.attributes["location"], "dock-7:[a]");
    // A thing name outside [a-zA-Z0-9:_-].
    let (_, reply) = register(&env, "Spaces", json!({"Serial": "a/b"})).await;
    assert_eq!(rejected("Spaces", &reply).1, "InvalidParameters");
    // Four attributes: too many without a thing type, fine with one.
    let (_, reply) = register(&env, "FourNoType", json!({"Serial": "t4"})).await;
    let (_, _, message) = rejected("FourNoType", &reply);
    assert!(message.contains("at most 3"), "{message}");
    let (_, reply) = register(&env, "FourWithType", json!({"Serial": "t5"})).await;
    accepted("FourWithType", &reply);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_missing_from_the_account_fail_provisioning() {
    let template = thing_template(
        json!({"ThingName": {"Ref": "Serial"}, "ThingTypeName": {"Ref": "Type"},
               "ThingGroups": ["fleet"], "BillingGroup": "lab",
               "PackageVersions": {"firmware": "1.2.0"}}),
        json!({"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}}),
    );
    let mut template = template;
    template["Parameters"]["Type"] = json!({"Type": "String"});
    template["Resources"]["policy"] =
        json!({"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "DevicePolicy"}});
    let env = start_with(&[("Account", template)], |cfg| {
        let path = cfg.state_dir.join("account.json");
        std::fs::create_dir_all(&cfg.state_dir).unwrap();
        std::fs::write(
            &path,
            json!({"thingTypes": ["sensor"], "thingGroups": ["fleet"],
                   "billingGroups": ["lab"], "policies": ["DevicePolicy"]})
            .to_string(),
        )
        .unwrap();
        cfg.account = Some(path);
    })
    .await;
    let (_, reply) = register(&env, "Account", json!({"Serial": "m1", "Type": "meter"})).await;
    let (status, code, message) = rejected("Account", &reply);
    assert_eq!(
        (status, code.as_str()),
        (400, "ResourceRegistrationFailure")
    );
    assert!(message.contains("Thing type meter"), "{message}");
    assert!(env.emu.service().registry().thing("m1").is_none());
    // Everything it references exists (PackageVersions accepted too): provisioned.
    let (_, reply) = register(&env, "Account", json!({"Serial": "s1", "Type": "sensor"})).await;
    assert_eq!(accepted("Account", &reply)["thingName"], "s1");
}

fn hook_template() -> Value {
    thing_template(
        json!({"ThingName": {"Ref": "Serial"}}),
        json!({"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "ACTIVE"}),
    )
}

/// An emulator whose template `Hooked` has `command` as its pre-provisioning hook, with a short
/// time limit so the hanging case stays quick (the default is AWS's 5 s).
async fn with_hook(command: String) -> Env {
    start_with(&[("Hooked", hook_template())], |cfg| {
        cfg.hooks = vec![("Hooked".to_owned(), command)];
        cfg.hook_timeout = std::time::Duration::from_millis(500);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_hook_rejects_the_request_and_registers_nothing() {
    let env = with_hook(r#"cat >/dev/null; echo '{"allowProvisioning": false}'"#.into()).await;
    let (_, reply) = register(&env, "Hooked", json!({"Serial": "r1"})).await;
    let (status, code, _) = rejected("Hooked", &reply);
    assert_eq!((status, code.as_str()), (403, "ACCESS_DENIED"));
    assert!(env.emu.service().registry().thing("r1").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_gets_aws_input_and_its_overrides_are_applied() {
    let seen = tempfile::tempdir().unwrap();
    let input = seen.path().join("input.json");
    let env = with_hook(format!(
        r#"cat > '{}'; echo '{{"allowProvisioning": true, "parameterOverrides": {{"Serial": "from-hook"}}}}'"#,
        input.display()
    ))
    .await;
    let (device, reply) = register(&env, "Hooked", json!({"Serial": "o1"})).await;
    assert_eq!(accepted("Hooked", &reply)["thingName"], "from-hook");
    let input: Value = serde_json::from_str(&std::fs::read_to_string(&input).unwrap()).unwrap();
    let fields: Vec<&str> = input
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        fields,
        [
            "claimCertificateId",
            "certificateId",
            "certificatePem",
            "templateArn",
            "clientId",
            "parameters"
        ]
    );
    assert_eq!(input["clientId"], "test-fidelity");
    assert_eq!(input["parameters"], json!({"Serial": "o1"}));
    assert_eq!(input["certificatePem"], device.cert_pem.as_str());
    assert!(input["templateArn"]
        .as_str()
        .unwrap()
        .ends_with(":provisioningtemplate/Hooked"));
    let claim = env
        .emu
        .service()
        .registry()
        .cert_status(input["claimCertificateId"].as_str().unwrap());
    assert_eq!(claim, Some(fleetprov_emulator::registry::CertStatus::Claim));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_or_failing_hook_rejects_the_request() {
    for (command, expect) in [
        ("exec sleep 30", "did not answer within 500 ms"),
        ("exit 3", "failed"),
        ("echo yes", "not JSON"),
    ] {
        let env = with_hook(command.into()).await;
        let (_, reply) = register(&env, "Hooked", json!({"Serial": "h1"})).await;
        let (status, code, message) = rejected("Hooked", &reply);
        assert_eq!((status, code.as_str()), (403, "ACCESS_DENIED"), "{command}");
        assert!(message.contains(expect), "{command}: {message}");
        assert!(env.emu.service().registry().thing("h1").is_none());
    }
}
