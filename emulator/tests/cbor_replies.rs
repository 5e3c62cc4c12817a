//! The emulator's CBOR replies, decoded by software nobody here wrote: Python's `cbor2` (from
//! PyPI; `.ci/cbor.sh` installs it). Requests go over MQTT 5 and mutual TLS; the raw reply
//! payloads are handed to cbor2, which must read each as exactly one map with AWS's fields.

use fleetprov_testkit::emulator_clients as common;

use std::process::Command;

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const CREATE: &str = "$aws/certificates/create/cbor";
const CREATE_CSR: &str = "$aws/certificates/create-from-csr/cbor";
const REGISTER: &str = "$aws/provisioning-templates/FleetTemplate/provision/cbor";

/// Decodes each payload with cbor2, refusing trailing bytes; returns them as JSON values.
/// Fails the test when cbor2 is not installed.
fn decode_with_cbor2(payloads: &[&[u8]]) -> Vec<Value> {
    const SCRIPT: &str = r#"
import io, json, sys
import cbor2
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    stream = io.BytesIO(data)
    value = cbor2.CBORDecoder(stream).decode()
    if stream.tell() != len(data):
        sys.exit("%s: %d bytes after the CBOR item" % (path, len(data) - stream.tell()))
    if not isinstance(value, dict):
        sys.exit("%s: not a map but %s" % (path, type(value).__name__))
    print(json.dumps(value))
"#;
    let probe = Command::new("python3")
        .args(["-c", "import cbor2"])
        .output();
    if !probe.map(|o| o.status.success()).unwrap_or(false) {
        fleetprov_testkit::missing_tool("python3 with cbor2", "pip install cbor2");
    }
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let path = dir.path().join(format!("reply-{i}.cbor"));
            std::fs::write(&path, p).unwrap();
            path
        })
        .collect();
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .args(&files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cbor2 refused a reply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let values: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(values.len(), payloads.len());
    values
}

fn cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).unwrap();
    out
}

fn pem_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cbor2_reads_every_kind_of_reply() {
    let env = Env::start().await;
    let mut c = env.claim_v5("test-cbor2-check").await;

    // An empty map, as AWS's embedded C library sends.
    let keys = c.request(CREATE, vec![0xa0]).await;
    let (_key, csr) = new_csr();
    let from_csr = c
        .request(CREATE_CSR, cbor(&json!({"certificateSigningRequest": csr})))
        .await;
    let token = {
        let v: Value = ciborium::de::from_reader(from_csr.payload.as_slice()).unwrap();
        v["certificateOwnershipToken"].as_str().unwrap().to_owned()
    };
    let register_body = cbor(&json!({
        "certificateOwnershipToken": token,
        "parameters": {"SerialNumber": "cbor2", "DeviceLocation": "Seattle"}
    }));
    let registered = c.request(REGISTER, register_body.clone()).await;
    // The token is spent now: a rejection.
    let refused = c.request(REGISTER, register_body).await;

    assert_eq!(keys.topic, format!("{CREATE}/accepted"));
    assert_eq!(from_csr.topic, format!("{CREATE_CSR}/accepted"));
    assert_eq!(registered.topic, format!("{REGISTER}/accepted"));
    assert_eq!(refused.topic, format!("{REGISTER}/rejected"));
    let decoded = decode_with_cbor2(&[
        &keys.payload,
        &from_csr.payload,
        &registered.payload,
        &refused.payload,
    ]);
    let [keys, from_csr, registered, refused] = <[Value; 4]>::try_from(decoded).unwrap();

    let names = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&keys),
        [
            "certificateId",
            "certificatePem",
            "privateKey",
            "certificateOwnershipToken"
        ]
    );
    let pem = keys["certificatePem"].as_str().unwrap();
    let id: String = Sha256::digest(pem_der(pem))
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(keys["certificateId"], id);
    assert!(keys["privateKey"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN RSA PRIVATE KEY-----"));

    assert_eq!(
        names(&from_csr),
        [
            "certificateId",
            "certificatePem",
            "certificateOwnershipToken"
        ]
    );
    assert_eq!(from_csr["certificateOwnershipToken"], token.as_str());

    assert_eq!(
        registered,
        json!({
            "deviceConfiguration": {
                "FallbackUrl": "https://www.example.com/test-site",
                "LocationUrl": "https://example.aws"
            },
            "thingName": "ThingPrefix_cbor2"
        })
    );

    assert_eq!(names(&refused), ["statusCode", "errorCode", "errorMessage"]);
    assert_eq!(refused["statusCode"], 400);
    assert_eq!(refused["errorCode"], "InvalidCertificateOwnershipToken");
    assert!(refused["errorMessage"].is_string());
}
