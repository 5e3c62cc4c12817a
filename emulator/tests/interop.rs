//! Other MQTT implementations against the emulator (Debian's mosquitto-clients), the
//! `fleetprov-emulator` command line, and responder mode behind Debian's mosquitto broker.
//! These tests fail, never skip, when the mosquitto tools are missing.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fleetprov_emulator::responder::{Responder, ResponderConfig};
use fleetprov_emulator::{ca::Ca, Emulator, EmulatorConfig};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fleetprov-emulator");
const CREATE: &str = "$aws/certificates/create/json";
const REGISTER: &str = "$aws/provisioning-templates/FleetTemplate/provision/json";

fn run(cmd: &mut Command) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {program}: {e} (mosquitto tools come from Debian's mosquitto and mosquitto-clients packages)")
    })
}

/// One request/response exchange with `mosquitto_rr` over MQTT 5 and mutual TLS.
fn mosquitto_rr(port: u16, ca: &Path, cert: &Path, key: &Path, topic: &str, body: &str) -> Value {
    let out = run(Command::new("mosquitto_rr")
        .args(["-V", "5", "-h", "localhost", "-W", "20"])
        // The sample claim policy lets client ids test-* connect.
        .args(["-i", "test-mosquitto-rr"])
        .args(["-p", &port.to_string()])
        .arg("--cafile")
        .arg(ca)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .args(["-t", topic, "-e", &format!("{topic}/accepted"), "-m", body]));
    assert!(
        out.status.success(),
        "mosquitto_rr failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// CreateKeysAndCertificate, then RegisterThing with its token for `serial`, each through its
/// own `mosquitto_rr` connection; returns both replies.
fn mosquitto_provision(
    port: u16,
    ca: &Path,
    cert: &Path,
    key: &Path,
    serial: &str,
) -> (Value, Value) {
    let created = mosquitto_rr(port, ca, cert, key, CREATE, "{}");
    let body = register_body(&created, serial);
    let registered = mosquitto_rr(port, ca, cert, key, REGISTER, &body);
    (created, registered)
}

fn register_body(created: &Value, serial: &str) -> String {
    serde_json::json!({
        "certificateOwnershipToken": created["certificateOwnershipToken"],
        "parameters": {"SerialNumber": serial, "DeviceLocation": "Seattle"}
    })
    .to_string()
}

#[test]
fn mosquitto_rr_creates_keys_and_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let emu = Emulator::start_blocking(EmulatorConfig::new(dir.path())).unwrap();
    let (ca, cert, key) = (emu.ca_path(), emu.claim_cert_path(), emu.claim_key_path());
    let (created, registered) = mosquitto_provision(emu.port(), &ca, &cert, &key, "5");
    let id = created["certificateId"].as_str().unwrap();
    assert_eq!(id.len(), 64);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert!(created["privateKey"]
        .as_str()
        .unwrap()
        .starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    // The token worked from another connection with the same claim.
    assert_eq!(registered["thingName"], "ThingPrefix_5");
}

/// A child process ended (by its id) when the test ends, pass or fail.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Poll `ready` until it gives a value; fails if `child` exits first or `limit` passes.
fn wait_for<T>(
    child: &mut Child,
    what: &str,
    limit: Duration,
    mut ready: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = ready() {
            return value;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("exited before {what}: {status}");
        }
        assert!(Instant::now() < deadline, "no {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_file(path: &Path, child: &mut Child) -> String {
    wait_for(child, "ready file", Duration::from_secs(30), || {
        std::fs::read_to_string(path).ok().filter(|s| !s.is_empty())
    })
}

#[test]
fn command_line_serve_claim_things_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ready = dir.path().join("ready");
    let mut server = Proc(
        Command::new(BIN)
            .arg("serve")
            .arg("--state-dir")
            .arg(&state)
            .args(["--port", "0", "--quiet"])
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let port: u16 = wait_for_file(&ready, &mut server.0).trim().parse().unwrap();

    // A further claim, issued while the server runs, is accepted at once.
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    let out = run(Command::new(BIN)
        .arg("claim")
        .arg("--state-dir")
        .arg(&state)
        .arg("--out-cert")
        .arg(&cert)
        .arg("--out-key")
        .arg(&key)
        .args(["--valid-for", "300"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let ca = state.join("ca.pem");
    let (_, registered) = mosquitto_provision(port, &ca, &cert, &key, "7");
    assert_eq!(registered["thingName"], "ThingPrefix_7");

    let out = run(Command::new(BIN)
        .arg("things")
        .arg("--state-dir")
        .arg(&state));
    assert!(out.status.success());
    let things: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(things
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "ThingPrefix_7"));

    // SIGTERM: a clean stop, exit 0, the ready file gone.
    let pid = server.0.id().to_string();
    assert!(run(Command::new("kill").args(["-TERM", &pid]))
        .status
        .success());
    let status = server.0.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!ready.exists());
    let mut stdout = String::new();
    server
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(stdout.contains(&format!("port:       {port}")), "{stdout}");
    assert!(stdout.contains("claim-key.pem"), "{stdout}");
}

#[test]
fn command_line_usage() {
    let out = run(Command::new(BIN).arg("--help"));
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["serve", "claim", "things", "respond"] {
        assert!(help.contains(word), "{word}");
    }
    let out = run(Command::new(BIN).args(["serve", "--no-such-flag"]));
    assert_eq!(out.status.code(), Some(2));
    let out = run(Command::new(BIN).args(["serve", "--template", "bad/name=x.json"]));
    assert_eq!(out.status.code(), Some(2));
    let out = run(Command::new(BIN).arg("claim"));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn responder_answers_through_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    let state: PathBuf = dir.path().join("state");
    let ca = Ca::load_or_create(&state).unwrap();
    let (claim_cert, claim_key) = ca.claim_paths();
    drop(ca);
    let mosquitto = fleetprov_testkit::mosquitto::start(&state, dir.path());
    let port = mosquitto.port;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let responder = rt
        .block_on(Responder::start(ResponderConfig {
            host: "localhost".into(),
            port,
            ca: state.join("ca.pem"),
            cert: claim_cert.clone(),
            key: claim_key.clone(),
            state_dir: state.clone(),
            templates: Vec::new(),
            client_id: "responder-test".into(),
        }))
        .unwrap();

    let ca_path = state.join("ca.pem");
    let (created, registered) = mosquitto_provision(port, &ca_path, &claim_cert, &claim_key, "9");
    assert_eq!(created["certificateId"].as_str().unwrap().len(), 64);
    assert_eq!(registered["thingName"], "ThingPrefix_9");
    assert!(responder
        .service()
        .registry()
        .things()
        .iter()
        .any(|t| t.name == "ThingPrefix_9"));
    // A CBOR request through the same broker: the reply is CBOR, on the CBOR reply topic.
    let request = dir.path().join("create.cbor");
    std::fs::write(&request, [0xa0]).unwrap(); // an empty map
    let out = run(Command::new("mosquitto_rr")
        .args(["-V", "5", "-h", "localhost", "-W", "20", "-N"])
        .args(["-i", "test-mosquitto-rr-cbor"])
        .args(["-p", &port.to_string()])
        .arg("--cafile")
        .arg(&ca_path)
        .arg("--cert")
        .arg(&claim_cert)
        .arg("--key")
        .arg(&claim_key)
        .args(["-t", "$aws/certificates/create/cbor"])
        .args(["-e", "$aws/certificates/create/cbor/accepted", "-f"])
        .arg(&request));
    assert!(
        out.status.success(),
        "mosquitto_rr failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: ciborium::Value = ciborium::from_reader(&out.stdout[..])
        .unwrap_or_else(|e| panic!("not CBOR ({e}): {:?}", out.stdout));
    let id = reply
        .as_map()
        .and_then(|m| {
            m.iter()
                .find(|(k, _)| k.as_text() == Some("certificateId"))
                .and_then(|(_, v)| v.as_text())
        })
        .unwrap_or_else(|| panic!("no certificateId in {reply:?}"));
    assert_eq!(id.len(), 64);
    rt.block_on(responder.stop());
}
