//! AWS's documented provisioning semantics, each checked through MQTT over mutual TLS: the
//! certificate status default, registry validation, the account's resources, pre-provisioning
//! hooks and the other template details.

mod common;

use std::path::PathBuf;

use common::*;
use fleetprov_emulator::{Emulator, EmulatorConfig};
use serde_json::{json, Value};

/// An emulator serving `templates` (name, body), written to files in its state directory.
async fn start_with(
    templates: &[(&str, Value)],
    configure: impl FnOnce(&mut EmulatorConfig),
) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = EmulatorConfig::new(dir.path());
    for (name, body) in templates {
        let path: PathBuf = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, body.to_string()).unwrap();
        cfg.templates.push(((*name).to_owned(), path));
    }
    configure(&mut cfg);
    let emu = Emulator::start(cfg).await.unwrap();
    Env { dir, emu }
}

/// CreateKeysAndCertificate then RegisterThing on `template` with `parameters`; returns the new
/// identity and the RegisterThing reply (accepted or rejected).
async fn register(env: &Env, template: &str, parameters: Value) -> (Identity, Msg) {
    let mut c = V5::connect(env.port(), env.tls(&env.claim()), "fidelity").await;
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
    let template = thing_template(
        json!({"ThingName": {"Ref": "Serial"}}),
        json!({"CertificateId": {"Ref": "AWS::IoT::Certificate::Id"}}),
    );
    let env = start_with(&[("NoStatus", template)], |_| {}).await;
    let (device, reply) = register(&env, "NoStatus", json!({"Serial": "nostatus-1"})).await;
    assert_eq!(accepted("NoStatus", &reply)["thingName"], "nostatus-1");
    let mut c = V5::connect(env.port(), env.tls(&device), "nostatus-1").await;
    assert_eq!(c.subscribe(&["devices/nostatus-1/#"]).await.len(), 1);
}
