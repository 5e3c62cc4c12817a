//! The `fleetprov-emulator` binary's command line and log: the flags scripts and the README
//! use are in `--help` and accepted, bad ones are usage errors, and `--quiet` silences every
//! message while a device provisions.

use fleetprov_testkit::emulator_clients as common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Client, Identity, CREATE, REGISTER, V5};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_fleetprov-emulator");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Each command's flags as the scripts under `.ci/`, `bench/`, `c_examples/`, `examples/` and
/// `bindings/`, the tests and the README spell them.
const FLAGS: &[(&str, &[&str])] = &[
    (
        "serve",
        &[
            "--state-dir",
            "--bind",
            "--port",
            "--template",
            "--account",
            "--hook",
            "--ready-file",
            "--quiet",
            "--rate-limit",
            "--throttle",
            "--certificate-validity",
            "--intermediate-ca",
        ],
    ),
    (
        "claim",
        &[
            "--state-dir",
            "--out-cert",
            "--out-key",
            "--valid-for",
            "--common-name",
        ],
    ),
    ("things", &["--state-dir"]),
    (
        "respond",
        &[
            "--host",
            "--port",
            "--ca",
            "--cert",
            "--key",
            "--state-dir",
            "--template",
            "--client-id",
            "--ready-file",
            "--quiet",
        ],
    ),
];

#[test]
fn help_lists_every_command_and_flag() {
    for args in [&["--help"][..], &["-h"], &["help"]] {
        let out = run(args);
        assert!(out.status.success(), "{args:?}");
        let help = text(&out.stdout);
        for (command, _) in FLAGS {
            assert!(help.contains(command), "{args:?} lacks {command}:\n{help}");
        }
    }
    for (command, flags) in FLAGS {
        for args in [[command, "--help"], ["help", command]] {
            let out = run(&args);
            assert!(out.status.success(), "{args:?}");
            let help = text(&out.stdout);
            for flag in *flags {
                assert!(
                    help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                    "{args:?} lacks {flag}:\n{help}"
                );
            }
        }
    }
}

#[test]
fn bad_command_lines_are_usage_errors() {
    for args in [
        &[][..],
        &["nosuchcommand"],
        &["serve", "--no-such-flag"],
        &["serve", "--port"],
        &["serve", "--port", "eighty"],
        &["serve", "--template", "bad/name=x.json"],
        &["serve", "--hook", "FleetTemplate"],
        &["serve", "--rate-limit", "RegisterThing=-1"],
        &["serve", "--throttle", "sometimes"],
        &["things", "--bogus"],
        &["claim"],
        &[
            "claim",
            "--out-cert",
            "c.pem",
            "--out-key",
            "k.pem",
            "--valid-for",
            "0",
        ],
        &["respond", "--host", "localhost"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.starts_with("error: ") || err.starts_with("A local AWS IoT"),
            "{args:?}: {err}"
        );
    }
}

/// A `serve` process, ended by its id when the test ends, pass or fail.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(state: &Path, ready: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--state-dir")
            .arg(state)
            .arg("--ready-file")
            .arg(ready)
            .args(["--port=0", "--rate-limit", "RegisterThing=1000"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(ready)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the server exited early: {status}");
            }
            assert!(Instant::now() < deadline, "no ready file");
            std::thread::sleep(Duration::from_millis(20));
        };
        Server { child, port }
    }

    /// SIGTERM, then its stdout and stderr once it has exited.
    fn stop(mut self) -> (String, String) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
        let (mut out, mut err) = (String::new(), String::new());
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (out, err)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A device provisions (CreateKeysAndCertificate, RegisterThing), connects with its new
/// certificate, and a claim tries a topic it may not use, which the broker refuses and logs.
async fn provision(state: &Path, port: u16, serial: &str) {
    let ca = state.join("ca.pem");
    let claim = Identity::from_files(&state.join("claim-cert.pem"), &state.join("claim-key.pem"));
    let mut c = V5::connect(port, common::client_tls(&ca, &claim), "test-device-claim").await;
    let created = c.request(CREATE, "{}").await.json();
    let body = json!({
        "certificateOwnershipToken": created["certificateOwnershipToken"],
        "parameters": {"SerialNumber": serial, "DeviceLocation": "Seattle"},
    });
    let registered: Value = c.request(REGISTER, body.to_string()).await.json();
    assert_eq!(registered["thingName"], format!("ThingPrefix_{serial}"));
    let refused = c.publish("not/a/provisioning/topic", "x").await;
    assert_ne!(
        refused.reason,
        rumqttc::v5::mqttbytes::v5::PubAckReason::Success
    );
    c.disconnect().await;

    let device = Identity {
        cert_pem: created["certificatePem"].as_str().unwrap().to_owned(),
        key_pem: created["privateKey"].as_str().unwrap().to_owned(),
    };
    let d = V5::connect(port, common::client_tls(&ca, &device), "device").await;
    d.disconnect().await;
}

fn provision_blocking(state: &Path, port: u16, serial: &str) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(provision(state, port, serial));
}

#[test]
fn quiet_logs_nothing_through_a_provisioning_and_the_log_speaks_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ready = dir.path().join("ready");

    let server = Server::start(&state, &ready, &["--quiet"]);
    provision_blocking(&state, server.port, "1");
    let (out, err) = server.stop();
    assert_eq!(err, "", "--quiet wrote on stderr");
    // What a device needs to connect is the command's output, not a log message.
    assert!(out.contains("claim-key.pem"), "{out}");

    let server = Server::start(&state, &ready, &[]);
    let port = server.port;
    provision_blocking(&state, port, "2");
    let (out, err) = server.stop();
    assert!(out.contains(&format!("port:       {port}")), "{out}");
    for line in [
        "fleetprov-emulator: rate limit: RegisterThing 1000/s",
        "connected as \"test-device-claim\"",
        "fleetprov-emulator: warning: ",
        "not authorized",
        "connected as \"device\"",
        "\"device\" closed: client disconnected",
    ] {
        assert!(err.contains(line), "{line:?} is not in the log:\n{err}");
    }
    assert!(!err.contains("PRIVATE KEY"), "{err}");
    // Words, not Rust's Debug output of internal types (`ClientDisconnect { will: false }`).
    for line in err.lines() {
        assert!(
            !line.contains(['{', '}']),
            "a log line prints internals: {line}"
        );
    }
}

/// `kill -TERM pid`, asserting it was delivered.
fn sigterm(child: &Child) {
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
}

/// Stopped the moment its ready file appears, the server still stops cleanly: SIGTERM is
/// caught from before anything is announced, so it exits 0 and removes the ready file.
#[test]
fn a_stop_right_after_the_ready_file_appears_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ready = dir.path().join("ready");
    for round in 0..20 {
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--state-dir")
            .arg(&state)
            .arg("--ready-file")
            .arg(&ready)
            .args(["--port=0", "--quiet"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ready.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("round {round}: the server exited before it was ready: {status}");
            }
            assert!(Instant::now() < deadline, "round {round}: no ready file");
            std::thread::sleep(Duration::from_millis(1));
        }
        sigterm(&child);
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "round {round}: {:?}, stderr: {}",
            out.status,
            text(&out.stderr)
        );
        assert!(!ready.exists(), "round {round}: the ready file was left");
    }
}

/// A port another process holds: the message names it (and says what to do).
#[test]
fn a_taken_port_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let out = run(&[
        "serve",
        "--state-dir",
        dir.path().join("state").to_str().unwrap(),
        "--port",
        &port,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")) && err.contains("--port"),
        "{err}"
    );
}

/// File and directory problems name the path and what was being done with it.
#[test]
fn state_dir_and_file_problems_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let file = file.to_str().unwrap();
    let missing = dir.path().join("no/such/dir");
    let missing = missing.to_str().unwrap();
    let state = dir.path().join("state");
    let state = state.to_str().unwrap();
    let in_missing = |name: &str| format!("{missing}/{name}");

    let cases: [(Vec<String>, String); 5] = [
        (
            vec!["serve".into(), "--state-dir".into(), file.into()],
            format!("{file} exists and is not a directory"),
        ),
        (
            vec!["things".into(), "--state-dir".into(), missing.into()],
            format!("cannot read the state directory {missing}"),
        ),
        (
            vec![
                "claim".into(),
                "--state-dir".into(),
                state.into(),
                "--out-cert".into(),
                in_missing("c.pem"),
                "--out-key".into(),
                format!("{state}/k.pem"),
            ],
            format!("--out-cert: cannot write {}", in_missing("c.pem")),
        ),
        (
            vec![
                "claim".into(),
                "--state-dir".into(),
                format!("{file}/state"),
                "--out-cert".into(),
                "c.pem".into(),
                "--out-key".into(),
                "k.pem".into(),
            ],
            format!("cannot create the directory {file}/state"),
        ),
        (
            vec![
                "serve".into(),
                "--state-dir".into(),
                state.into(),
                "--port=0".into(),
                "--ready-file".into(),
                in_missing("ready"),
            ],
            format!("--ready-file: cannot write {}", in_missing("ready")),
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains(&expected),
            "{args:?}: {expected:?} not in {err}"
        );
    }
}

/// `serve --certificate-validity 10m --intermediate-ca`: CreateKeysAndCertificate answers with
/// the certificate and the intermediate's, the certificate lasts exactly ten minutes, and the
/// device connects with the chain (the server trusts only the root).
#[test]
fn certificate_validity_and_intermediate_ca_on_the_command_line() {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let ready = dir.path().join("ready");
    let server = Server::start(
        &state,
        &ready,
        &[
            "--quiet",
            "--certificate-validity",
            "10m",
            "--intermediate-ca",
        ],
    );
    let port = server.port;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let ca = state.join("ca.pem");
            let claim =
                Identity::from_files(&state.join("claim-cert.pem"), &state.join("claim-key.pem"));
            let mut c = V5::connect(port, common::client_tls(&ca, &claim), "test-claim").await;
            let created = c.request(CREATE, "{}").await.json();
            // Registered, the certificate is active and may connect.
            let body = json!({
                "certificateOwnershipToken": created["certificateOwnershipToken"],
                "parameters": {"SerialNumber": "chain", "DeviceLocation": "Seattle"},
            });
            let registered: Value = c.request(REGISTER, body.to_string()).await.json();
            assert_eq!(registered["thingName"], "ThingPrefix_chain");
            c.client.disconnect().await.unwrap();
            let chain = created["certificatePem"].as_str().unwrap().to_owned();
            let blocks: Vec<Vec<u8>> = x509_parser::pem::Pem::iter_from_buffer(chain.as_bytes())
                .map(|p| p.unwrap().contents)
                .collect();
            assert_eq!(blocks.len(), 2, "{chain}");
            let leaf = X509Certificate::from_der(&blocks[0]).unwrap().1;
            let inter = X509Certificate::from_der(&blocks[1]).unwrap().1;
            let v = leaf.validity();
            assert_eq!(v.not_after.timestamp() - v.not_before.timestamp(), 600);
            assert_eq!(leaf.issuer(), inter.subject());
            let intermediate = std::fs::read_to_string(state.join("intermediate-ca.pem")).unwrap();
            assert!(chain.ends_with(&intermediate), "{chain}");
            let device = Identity {
                cert_pem: chain,
                key_pem: created["privateKey"].as_str().unwrap().to_owned(),
            };
            let d = V5::connect(port, common::client_tls(&ca, &device), "device").await;
            d.client.disconnect().await.unwrap();
        });
    server.stop();
}
