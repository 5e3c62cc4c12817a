//! AWS IoT policies enforced over real mutual TLS, MQTT 5 and 3.1.1: the sample claim policy,
//! a narrower claim policy given by file, a device held to its template's policy (inline or named
//! in the account file), device certificates calling the provisioning API, and `policy check`.

use fleetprov_testkit::emulator_clients as common;

use std::path::Path;
use std::process::Command;

use bytes::BytesMut;
use common::*;
use fleetprov_emulator::EmulatorConfig;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_fleetprov-emulator");
const ARN: &str = "arn:aws:iot:us-east-1:123456789012";

/// An emulator serving `templates` (name, body) with `configure` applied to its config.
async fn start_with(
    templates: &[(&str, Value)],
    configure: impl FnOnce(&mut EmulatorConfig, &Path),
) -> Env {
    Env::start_serving(templates, configure).await
}

/// An MQTT 3.1.1 CONNECT (clean session, keep-alive 30).
fn connect_v4(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    packet
}

/// CONNECT refused the way AWS refuses it: MQTT 5 CONNACK 0x87 then close; MQTT 3.1.1 the
/// connection closed without any CONNACK.
async fn assert_connect_refused(env: &Env, id: &Identity, client_id: &str) {
    let mut raw = Raw::connect(env.port(), env.tls(id)).await.unwrap();
    raw.send(&connect_v5(client_id, 30)).await;
    match raw.read_v5().await {
        Some(p5::Packet::ConnAck(ack)) => {
            assert_eq!(
                ack.code,
                p5::ConnectReturnCode::NotAuthorized,
                "{client_id}"
            )
        }
        other => panic!("{client_id}: expected CONNACK, got {other:?}"),
    }
    assert!(raw.read_v5().await.is_none(), "{client_id}: still open");

    let mut raw = Raw::connect(env.port(), env.tls(id)).await.unwrap();
    raw.send(&connect_v4(client_id)).await;
    assert_eq!(
        raw.drain().await,
        Vec::<u8>::new(),
        "{client_id}: MQTT 3.1.1 got bytes"
    );
}

/// A V4 connection that publishes at QoS 1 to `topic` and is closed instead of acknowledged.
async fn assert_v4_publish_closes(env: &Env, id: &Identity, client_id: &str, topic: &str) {
    let mut c = V4::connect(env.port(), env.tls(id), client_id).await;
    c.send(topic, rumqttc::QoS::AtLeastOnce, "x").await;
    loop {
        match c.next().await {
            Ok(rumqttc::Packet::PubAck(_)) => panic!("refused publish on {topic} acknowledged"),
            Ok(_) => continue,
            Err(_) => break,
        }
    }
}

fn identity(created: &Value) -> Identity {
    Identity {
        cert_pem: created["certificatePem"].as_str().unwrap().to_owned(),
        key_pem: created["privateKey"].as_str().unwrap().to_owned(),
    }
}

/// CreateKeysAndCertificate and RegisterThing on `template` through a claim connected as
/// `client_id`; returns the new identity and the RegisterThing reply body.
async fn register(env: &Env, client_id: &str, template: &str, params: Value) -> (Identity, Value) {
    let mut c = env.claim_v5(client_id).await;
    let created = c.request(CREATE, "{}").await;
    assert_eq!(created.topic, format!("{CREATE}/accepted"));
    let created = created.json();
    let body = json!({
        "certificateOwnershipToken": created["certificateOwnershipToken"],
        "parameters": params,
    });
    let topic = format!("$aws/provisioning-templates/{template}/provision/json");
    let reply = c.request(&topic, body.to_string()).await;
    assert_eq!(
        reply.topic,
        format!("{topic}/accepted"),
        "{}",
        String::from_utf8_lossy(&reply.payload)
    );
    (identity(&created), reply.json())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_claim_policy_provisions_on_both_versions_and_refuses_other_client_ids() {
    let env = Env::start().await;
    // MQTT 5 (common::provision connects as test-prov-N).
    let (_, registered) = provision(&env, "21").await;
    assert_eq!(registered["thingName"], "ThingPrefix_21");
    // MQTT 3.1.1.
    let mut c = V4::connect(env.port(), env.tls(&env.claim()), "test-v4").await;
    let created = c.request(CREATE, "{}").await;
    assert_eq!(created.topic, format!("{CREATE}/accepted"));
    let body = json!({
        "certificateOwnershipToken": created.json()["certificateOwnershipToken"],
        "parameters": {"SerialNumber": "22", "DeviceLocation": "Seattle"}
    });
    let registered = c.request(REGISTER, &body.to_string()).await;
    assert_eq!(registered.json()["thingName"], "ThingPrefix_22");
    // The sample lets only test-* connect.
    assert_connect_refused(&env, &env.claim(), "device-7").await;
    // A template it does not name: publish refused (PUBACK 0x87), subscription refused.
    let mut c = env.claim_v5("test-other-template").await;
    let other = "$aws/provisioning-templates/Other/provision/json";
    assert_eq!(
        c.publish(other, "{}").await.reason,
        p5::PubAckReason::NotAuthorized
    );
    assert_eq!(
        c.subscribe(&[&format!("{other}/accepted")]).await,
        vec![p5::SubscribeReasonCode::NotAuthorized]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_narrower_claim_policy_by_file_refuses_what_it_does_not_allow() {
    // CSR flow only, for client ids factory-*; <templatename> is filled in per template.
    let policy = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "iot:Connect", "Resource": "arn:aws:iot:<region>:<account>:client/factory-*"},
        {"Effect": "Allow", "Action": "iot:Publish", "Resource": [
            "arn:aws:iot:<region>:<account>:topic/$aws/certificates/create-from-csr/json",
            "arn:aws:iot:<region>:<account>:topic/$aws/provisioning-templates/<templatename>/provision/json"]},
        {"Effect": "Allow", "Action": ["iot:Subscribe", "iot:Receive"], "Resource": [
            "arn:aws:iot:<region>:<account>:topicfilter/$aws/certificates/create-from-csr/json/*",
            "arn:aws:iot:<region>:<account>:topic/$aws/certificates/create-from-csr/json/*"]}
    ]});
    let env = start_with(&[], |cfg, dir| {
        let path = dir.join("claim-policy.json");
        std::fs::write(&path, policy.to_string()).unwrap();
        cfg.claim_policy = Some(path);
    })
    .await;
    let claim = env.claim();
    assert_connect_refused(&env, &claim, "test-1").await;

    let mut c = V5::connect(env.port(), env.tls(&claim), "factory-1").await;
    let (_key, csr) = new_csr();
    let reply = c
        .request(
            CREATE_CSR,
            json!({"certificateSigningRequest": csr}).to_string(),
        )
        .await;
    assert_eq!(reply.topic, format!("{CREATE_CSR}/accepted"));
    // CreateKeysAndCertificate is not in this policy.
    assert_eq!(
        c.publish(CREATE, "{}").await.reason,
        p5::PubAckReason::NotAuthorized
    );
    assert_eq!(
        c.subscribe(&[
            &format!("{CREATE}/accepted"),
            &format!("{CREATE_CSR}/accepted")
        ])
        .await,
        vec![
            p5::SubscribeReasonCode::NotAuthorized,
            p5::SubscribeReasonCode::Success(QoS5::AtLeastOnce)
        ]
    );
    // The RegisterThing replies may not be received: subscribing is refused too.
    assert_eq!(
        c.subscribe(&[&format!("{REGISTER}/accepted")]).await,
        vec![p5::SubscribeReasonCode::NotAuthorized]
    );
    // MQTT 3.1.1: SUBACK failure 0x80, and a refused publish closes the connection.
    let mut v4 = V4::connect(env.port(), env.tls(&claim), "factory-2").await;
    assert_eq!(
        v4.subscribe(&[&format!("{CREATE}/accepted")]).await,
        vec![rumqttc::SubscribeReasonCode::Failure]
    );
    drop(v4);
    assert_v4_publish_closes(&env, &claim, "factory-3", CREATE).await;
}

/// A template whose device policy connects as the thing name, publishes under devices/ except
/// .../secret, subscribes to the literal filter devices/# or its own, and receives only its own
/// topics; it may also call CreateCertificateFromCsr (rotation) but not CreateKeysAndCertificate.
fn device_template() -> Value {
    json!({
        "Parameters": {"Serial": {"Type": "String"}},
        "Resources": {
            "thing": {"Type": "AWS::IoT::Thing", "Properties": {"ThingName": {"Ref": "Serial"}}},
            "certificate": {"Type": "AWS::IoT::Certificate",
                            "Properties": {"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}, "Status": "Active"}},
            "policy": {"Type": "AWS::IoT::Policy", "Properties": {"PolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": "iot:Connect",
                     "Resource": format!("{ARN}:client/${{iot:Connection.Thing.ThingName}}")},
                    {"Effect": "Allow", "Action": "iot:Publish", "Resource": [
                        format!("{ARN}:topic/devices/*"),
                        format!("{ARN}:topic/$aws/certificates/create-from-csr/json")]},
                    {"Effect": "Deny", "Action": "iot:Publish", "Resource": format!("{ARN}:topic/devices/*/secret")},
                    {"Effect": "Allow", "Action": "iot:Subscribe", "Resource": [
                        format!("{ARN}:topicfilter/devices/#"),
                        format!("{ARN}:topicfilter/devices/${{iot:Connection.Thing.ThingName}}/*"),
                        format!("{ARN}:topicfilter/$aws/certificates/create-from-csr/json/*"),
                        format!("{ARN}:topicfilter/$aws/certificates/create/json/*")]},
                    {"Effect": "Allow", "Action": "iot:Receive", "Resource": [
                        format!("{ARN}:topic/devices/${{iot:Connection.Thing.ThingName}}/*"),
                        format!("{ARN}:topic/$aws/certificates/create-from-csr/json/*")]}
                ]
            }}}
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_is_held_to_its_template_policy() {
    let env = start_with(&[("Devices", device_template())], |_, _| {}).await;
    let (a, _) = register(&env, "test-a", "Devices", json!({"Serial": "dev-a"})).await;
    let (b, _) = register(&env, "test-b", "Devices", json!({"Serial": "dev-b"})).await;

    // Connect only as its own thing name.
    assert_connect_refused(&env, &a, "dev-b").await;
    assert_connect_refused(&env, &a, "test-a").await;

    let mut da = V5::connect(env.port(), env.tls(&a), "dev-a").await;
    let mut db = V5::connect(env.port(), env.tls(&b), "dev-b").await;
    // The literal filter devices/# is allowed; another thing's filter is not.
    assert_eq!(
        db.subscribe(&["devices/#"]).await,
        vec![p5::SubscribeReasonCode::Success(QoS5::AtLeastOnce)]
    );
    assert_eq!(
        da.subscribe(&["devices/dev-b/#", "devices/dev-a/in"]).await,
        vec![
            p5::SubscribeReasonCode::NotAuthorized,
            p5::SubscribeReasonCode::Success(QoS5::AtLeastOnce)
        ]
    );
    // The explicit deny wins over the Allow on devices/*.
    assert_eq!(
        da.publish("devices/dev-a/secret", "x").await.reason,
        p5::PubAckReason::NotAuthorized
    );
    assert_eq!(
        da.publish("elsewhere", "x").await.reason,
        p5::PubAckReason::NotAuthorized
    );
    // b subscribed to devices/# but may receive only devices/dev-b/*: the first message is
    // withheld from it, the second delivered; they were queued for it in this order.
    assert_eq!(
        da.publish("devices/dev-a/status", "first").await.reason,
        p5::PubAckReason::Success
    );
    assert_eq!(
        da.publish("devices/dev-b/cmd", "second").await.reason,
        p5::PubAckReason::Success
    );
    let got = db.recv().await;
    assert_eq!(
        (got.topic.as_str(), got.payload.as_slice()),
        ("devices/dev-b/cmd", &b"second"[..])
    );

    // The provisioning API exactly where the policy allows it: CSR yes, CreateKeys no.
    let (_key, csr) = new_csr();
    let reply = da
        .request(
            CREATE_CSR,
            json!({"certificateSigningRequest": csr}).to_string(),
        )
        .await;
    assert_eq!(reply.topic, format!("{CREATE_CSR}/accepted"));
    assert_eq!(
        da.publish(CREATE, "{}").await.reason,
        p5::PubAckReason::NotAuthorized
    );

    // A QoS 0 publish cannot carry a refusal: MQTT 5 gets DISCONNECT 0x87.
    da.send("devices/dev-a/secret", QoS5::AtMostOnce, "x").await;
    da.expect_disconnect(p5::DisconnectReasonCode::NotAuthorized)
        .await;
    // MQTT 3.1.1: SUBACK 0x80 for a refused filter, the connection closed on a refused publish.
    let mut v4 = V4::connect(env.port(), env.tls(&b), "dev-b").await;
    assert_eq!(
        v4.subscribe(&["devices/dev-a/#"]).await,
        vec![rumqttc::SubscribeReasonCode::Failure]
    );
    drop(v4);
    assert_v4_publish_closes(&env, &b, "dev-b", "devices/dev-b/secret").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_named_in_the_template_takes_its_document_from_the_account_file() {
    let mut template = device_template();
    template["Resources"]["policy"] =
        json!({"Type": "AWS::IoT::Policy", "Properties": {"PolicyName": "DevicePolicy"}});
    let arn = "arn:aws:iot:eu-west-1:000011112222";
    let account = json!({
        "accountId": "000011112222", "region": "eu-west-1",
        "policies": [{"policyName": "DevicePolicy", "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "iot:Connect", "Resource": format!("{arn}:client/${{iot:ClientId}}"),
                 "Condition": {"StringEquals": {"iot:Connection.Thing.Attributes[fleet]": "blue"}}},
                {"Effect": "Allow", "Action": "iot:Publish", "Resource": format!("{arn}:topic/ok")}
            ]}}]
    });
    template["Resources"]["thing"]["Properties"]["AttributePayload"] =
        json!({"fleet": {"Ref": "Fleet"}});
    template["Parameters"]["Fleet"] = json!({"Type": "String"});
    let env = start_with(&[("Named", template)], |cfg, dir| {
        let path = dir.join("account.json");
        std::fs::write(&path, account.to_string()).unwrap();
        cfg.account = Some(path);
    })
    .await;
    let (blue, _) = register(
        &env,
        "test-1",
        "Named",
        json!({"Serial": "b1", "Fleet": "blue"}),
    )
    .await;
    let (red, _) = register(
        &env,
        "test-2",
        "Named",
        json!({"Serial": "r1", "Fleet": "red"}),
    )
    .await;
    // The condition on the thing attribute decides; a client id that is not the thing name has
    // no thing, so no attribute either.
    assert_connect_refused(&env, &red, "r1").await;
    assert_connect_refused(&env, &blue, "someone-else").await;
    let mut c = V5::connect(env.port(), env.tls(&blue), "b1").await;
    assert_eq!(c.publish("ok", "x").await.reason, p5::PubAckReason::Success);
    assert_eq!(
        c.publish("not-ok", "x").await.reason,
        p5::PubAckReason::NotAuthorized
    );
}

fn policy_check(state: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(["policy", "check", "--state-dir"])
        .arg(state)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_check_answers_with_the_deciding_statement() {
    let env = start_with(&[("Devices", device_template())], |_, _| {}).await;
    let (a, _) = register(&env, "test-a", "Devices", json!({"Serial": "dev-a"})).await;
    let cert = env.dir.path().join("dev-a.pem");
    std::fs::write(&cert, &a.cert_pem).unwrap();
    let state = env.dir.path().to_owned();
    let cert = cert.to_str().unwrap();
    let templates = ["--template", "Devices"];

    let (code, out) = policy_check(
        &state,
        &[
            &[
                "--cert",
                cert,
                "--client-id",
                "dev-a",
                "--action",
                "iot:Publish",
                "--resource",
                "devices/dev-a/x",
            ][..],
            &templates,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("allowed\n"), "{out}");
    assert!(
        out.contains(&format!("resource: {ARN}:topic/devices/dev-a/x")),
        "{out}"
    );
    assert!(out.contains("Statement[1]"), "{out}");

    let (code, out) = policy_check(
        &state,
        &[
            "--cert",
            cert,
            "--client-id",
            "dev-a",
            "--action",
            "iot:Publish",
            "--resource",
            "devices/dev-a/secret",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("denied\n")
            && out.contains("Statement[2]")
            && out.contains("explicit Deny"),
        "{out}"
    );

    let (code, out) = policy_check(
        &state,
        &[
            "--cert",
            cert,
            "--client-id",
            "dev-b",
            "--action",
            "iot:Connect",
            "--resource",
            "dev-b",
        ],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no statement allowed it"), "{out}");

    // --thing sets the thing variables whatever the client id.
    let (code, out) = policy_check(
        &state,
        &[
            "--cert",
            cert,
            "--client-id",
            "x",
            "--thing",
            "dev-a",
            "--action",
            "iot:Connect",
            "--resource",
            &format!("{ARN}:client/dev-a"),
        ],
    );
    assert_eq!(code, 0, "{out}");

    // As a claim: the sample claim policy for the templates given.
    let (code, out) = policy_check(
        &state,
        &[
            &[
                "--claim",
                "--client-id",
                "test-1",
                "--action",
                "iot:Subscribe",
                "--resource",
                "$aws/provisioning-templates/Devices/provision/json/accepted",
            ][..],
            &templates,
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Devices-claim-policy"), "{out}");

    // Usage errors and unanswerable questions exit 2, naming what was wrong.
    for (args, want) in [
        (
            vec![
                "--claim",
                "--client-id",
                "c",
                "--action",
                "iot:Delete",
                "--resource",
                "x",
            ],
            "iot:Delete",
        ),
        (
            vec![
                "--client-id",
                "c",
                "--action",
                "iot:Connect",
                "--resource",
                "x",
            ],
            "--cert",
        ),
        (
            vec![
                "--cert",
                "/nonexistent.pem",
                "--client-id",
                "c",
                "--action",
                "iot:Connect",
                "--resource",
                "x",
            ],
            "/nonexistent.pem",
        ),
        (
            vec![
                "--cert",
                cert,
                "--client-id",
                "c",
                "--thing",
                "nope",
                "--action",
                "iot:Connect",
                "--resource",
                "x",
            ],
            "\"nope\"",
        ),
    ] {
        let (code, out) = policy_check(&state, &args);
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(out.contains(want), "{args:?}: {out}");
    }
}

#[test]
fn connect_v4_bytes_are_a_valid_connect() {
    // The hand-built MQTT 3.1.1 CONNECT above decodes as one.
    let mut buf = BytesMut::from(&connect_v4("abc")[..]);
    match rumqttc::mqttbytes::v4::Packet::read(&mut buf, 1024).unwrap() {
        rumqttc::mqttbytes::v4::Packet::Connect(c) => assert_eq!(c.client_id, "abc"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_with_a_malformed_policy_fails_registration() {
    let mut template = device_template();
    template["Resources"]["policy"]["Properties"]["PolicyDocument"]["Statement"][0]["Effect"] =
        json!("Permit");
    let env = start_with(&[("Broken", template)], |_, _| {}).await;
    let mut c = env.claim_v5("test-broken").await;
    let created = c.request(CREATE, "{}").await.json();
    let body = json!({
        "certificateOwnershipToken": created["certificateOwnershipToken"],
        "parameters": {"Serial": "x1"},
    });
    let topic = "$aws/provisioning-templates/Broken/provision/json";
    let reply = c.request(topic, body.to_string()).await;
    assert_eq!(reply.topic, format!("{topic}/rejected"));
    let reply = reply.json();
    assert_eq!(reply["statusCode"], 400);
    assert_eq!(reply["errorCode"], "ResourceRegistrationFailure");
    let message = reply["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("policy") && message.contains("Statement[0].Effect"),
        "{message}"
    );
    assert!(env.emu.service().registry().thing("x1").is_none());
}

#[test]
fn serve_refuses_a_malformed_claim_policy_naming_the_file_and_place() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("claim.json");
    std::fs::write(
        &policy,
        r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iot:Connect"}]}"#,
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--port", "0", "--quiet", "--state-dir"])
        .arg(dir.path().join("state"))
        .arg("--claim-policy")
        .arg(&policy)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("claim.json: Statement[0]: Resource (or NotResource) is missing"),
        "{err}"
    );
}

#[test]
fn policy_check_knows_claims_issued_by_the_claim_command() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    let out = Command::new(BIN)
        .args(["claim", "--state-dir"])
        .arg(&state)
        .arg("--out-cert")
        .arg(&cert)
        .arg("--out-key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = cert.to_str().unwrap();
    let (code, out) = policy_check(
        &state,
        &[
            "--cert",
            cert,
            "--client-id",
            "test-9",
            "--action",
            "iot:Publish",
            "--resource",
            "$aws/certificates/create/json",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("decision: allowed by policy \"FleetTemplate-claim-policy\" Statement[0]"),
        "{out}"
    );
    let (code, out) = policy_check(
        &state,
        &[
            "--cert",
            cert,
            "--client-id",
            "device-9",
            "--action",
            "iot:Connect",
            "--resource",
            "device-9",
        ],
    );
    assert_eq!(code, 1, "{out}");
}
