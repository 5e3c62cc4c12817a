//! CBOR end to end: the C demo provisions with `--payload_format cbor` against the emulator,
//! in the keys flow and the CSR flow, and the emulator counts the requests it answered on the
//! `.../cbor` topics. The library's decoder (minicbor) reads what the emulator's encoder
//! (ciborium) wrote, and the other way round.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fleetprov_emulator::{Emulator, EmulatorConfig};

use fleetprov_testkit::cprog::{limited, root, CProgram};
use fleetprov_testkit::env::CSR_PEM;

/// The demo, compiled once per test process with warnings as errors and linked to that library.
fn demo() -> PathBuf {
    static DEMO: OnceLock<PathBuf> = OnceLock::new();
    DEMO.get_or_init(build_demo).clone()
}

fn build_demo() -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cbor_demo");
    CProgram::new("fleet_provisioning", &out)
        .source(root().join("c_examples").join("fleet_provisioning.c"))
        .build()
}

/// Runs the demo against a fresh emulator with `extra` flags; returns (exit code, stdout,
/// stderr, requests answered on json and cbor topics).
fn run_demo(extra: &[&str]) -> (Option<i32>, String, String, (u64, u64)) {
    let state = tempfile::tempdir().unwrap();
    let emu = Emulator::start_blocking(EmulatorConfig::new(state.path())).unwrap();
    let port = emu.port().to_string();
    let (ca, cert, key) = (emu.ca_path(), emu.claim_cert_path(), emu.claim_key_path());
    let out = limited(demo())
        .args(["--endpoint", "localhost", "--port", &port])
        .arg("--ca_file")
        .arg(&ca)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .args(["--template_name", "FleetTemplate"])
        .args(extra)
        // The keys flow keeps its key in a file.
        .args(if extra.contains(&"--csr") {
            Vec::new()
        } else {
            vec!["--identity_file".into(), state.path().join("identity.pem")]
        })
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("--- stdout\n{stdout}--- stderr\n{stderr}");
    (out.status.code(), stdout, stderr, emu.service().answered())
}

#[test]
fn demo_keys_flow_in_cbor() {
    let (code, stdout, stderr, answered) = run_demo(&[
        "--template_parameters",
        r#"{"SerialNumber":"cbor7","DeviceLocation":"Seattle"}"#,
        "--payload_format",
        "cbor",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("Thing registered: ThingPrefix_cbor7\n"));
    assert!(stdout.contains("  LocationUrl = https://example.aws\n"));
    assert!(!stdout.contains("PRIVATE KEY") && !stderr.contains("PRIVATE KEY"));
    assert_eq!(
        answered,
        (0, 2),
        "CreateKeysAndCertificate and RegisterThing, both in CBOR"
    );
}

#[test]
fn demo_csr_flow_in_cbor_over_mqtt311() {
    let work = tempfile::tempdir().unwrap();
    let csr = work.path().join("device.csr");
    std::fs::write(&csr, CSR_PEM).unwrap();
    let (code, stdout, stderr, answered) = run_demo(&[
        "--template_parameters",
        r#"{"SerialNumber":"cbor8","DeviceLocation":"Seattle"}"#,
        "--csr",
        csr.to_str().unwrap(),
        "--mqtt_version",
        "3",
        "--payload_format",
        "cbor",
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("Thing registered: ThingPrefix_cbor8\n"));
    assert_eq!(answered, (0, 2));
}

#[test]
fn demo_rejection_in_cbor_is_reported_with_aws_fields() {
    // No SerialNumber: the seed template's evaluation fails, and the CBOR rejection's fields
    // reach the demo's message.
    let (code, _, stderr, answered) = run_demo(&[
        "--template_parameters",
        r#"{"DeviceLocation":"Seattle"}"#,
        "--payload_format",
        "cbor",
    ]);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("InvalidParameters"), "{stderr}");
    assert!(stderr.contains("400"), "{stderr}");
    assert_eq!(answered, (0, 2));
}

#[test]
fn demo_json_stays_the_default_and_bad_formats_are_usage_errors() {
    let (code, _, _, answered) = run_demo(&[
        "--template_parameters",
        r#"{"SerialNumber":"json9","DeviceLocation":"Seattle"}"#,
    ]);
    assert_eq!((code, answered), (Some(0), (2, 0)));
    let (code, _, stderr, answered) = run_demo(&["--payload_format", "xml"]);
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains("--payload_format must be json or cbor"),
        "{stderr}"
    );
    assert_eq!(answered, (0, 0));
}
