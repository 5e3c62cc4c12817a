//! fp_provision() from C with the claim key and the device key in a PKCS#11 token
//! (SoftHSM2): `tests/c/provision_pkcs11.c`, built with warnings as errors, provisions against
//! the emulator without writing a key file, and a second run reuses the identity with the
//! token's key; the demo does the same with its PKCS#11 flags and `--output_dir`.

#![cfg(feature = "pkcs11")]
use std::path::{Path, PathBuf};
use std::process::Output;

use fleetprov_emulator::{Emulator, EmulatorConfig, EmulatorHandle};
use fleetprov_testkit::cprog::{c_tests_dir, limited, output_logged, root, CProgram};
use fleetprov_testkit::file_names;
use fleetprov_testkit::softhsm::{softhsm, TokenCopy, CLAIM_LABEL, PIN, TOKEN};

fn program(cxx: bool) -> PathBuf {
    let name = if cxx {
        "provision_pkcs11_cxx"
    } else {
        "provision_pkcs11"
    };
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("c_provision_pkcs11")
        .join(name);
    CProgram::new(name, &out)
        .source(c_tests_dir().join("provision_pkcs11.c"))
        .cxx(cxx)
        .build()
}

/// Runs `provision_pkcs11` against the tokens that `conf` names.
fn run(
    exe: &Path,
    conf: &Path,
    (port, state): (u16, &Path),
    label: &str,
    store: &Path,
    serial: &str,
) -> Output {
    let hsm = softhsm();
    output_logged(
        limited(exe)
            .arg("localhost")
            .arg(port.to_string())
            .arg(state.join("ca.pem"))
            .arg(state.join("claim-cert.pem"))
            .arg(&hsm.module)
            .args([TOKEN, PIN, CLAIM_LABEL, label])
            .arg(store)
            .arg(serial)
            .env("SOFTHSM2_CONF", conf),
    )
}

/// What each test needs: its own copy of the tokens, an emulator on a copy of the prepared
/// state (whose claim key is in the tokens), and the identity store's path in that state.
struct Setup {
    tokens: TokenCopy,
    state: tempfile::TempDir,
    emu: EmulatorHandle,
    store: PathBuf,
}

fn setup() -> Setup {
    let hsm = softhsm();
    let tokens = hsm.copy_tokens();
    let state = tempfile::tempdir().unwrap();
    hsm.copy_state(state.path());
    let emu = Emulator::start_blocking(EmulatorConfig::new(state.path())).unwrap();
    let store = state.path().join("identity");
    Setup {
        tokens,
        state,
        emu,
        store,
    }
}

#[test]
fn c_provision_keeps_both_keys_in_the_token_and_reuses_the_identity() {
    let Setup {
        tokens,
        state,
        emu,
        store,
    } = setup();
    for (cxx, label, serial) in [
        (false, "c-device", "c-hsm"),
        (true, "cxx-device", "cxx-hsm"),
    ] {
        let exe = program(cxx);
        let store = store.join(label);
        let run_once = || {
            run(
                &exe,
                &tokens.conf,
                (emu.port(), state.path()),
                label,
                &store,
                serial,
            )
        };
        let first = run_once();
        assert_eq!(first.status.code(), Some(0));
        let text = String::from_utf8_lossy(&first.stdout);
        assert!(
            text.contains(&format!("thing: ThingPrefix_{serial}\n")),
            "{text}"
        );
        assert!(
            text.contains("reused: 0\nlocation: pkcs11\nkey file: \n"),
            "{text}"
        );
        assert!(text.ends_with("pkcs11: ok\n"), "{text}");
        assert!(store.is_dir(), "{store:?}");
        let files = file_names(&store);
        assert!(!files.iter().any(|f| f.contains("key")), "{files:?}");

        let second = run_once();
        assert_eq!(second.status.code(), Some(0));
        let text = String::from_utf8_lossy(&second.stdout);
        assert!(text.contains("reused: 1\nlocation: pkcs11\n"), "{text}");
    }
    assert_eq!(emu.service().registry().things().len(), 2);
}

fn demo() -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("c_provision_pkcs11")
        .join("fleet_provisioning");
    CProgram::new("fleet_provisioning", &out)
        .source(root().join("c_examples").join("fleet_provisioning.c"))
        .build()
}

fn run_demo(exe: &Path, conf: &Path, args: &[String]) -> Output {
    output_logged(limited(exe).args(args).env("SOFTHSM2_CONF", conf))
}

#[test]
fn demo_with_pkcs11_flags_and_output_dir_keeps_the_device_key_in_the_token() {
    let hsm = softhsm();
    let Setup {
        tokens,
        state,
        emu,
        store,
    } = setup();
    let exe = demo();
    let mut args: Vec<String> = [
        "--endpoint",
        "localhost",
        "--port",
        &emu.port().to_string(),
        "--ca_file",
        state.path().join("ca.pem").to_str().unwrap(),
        "--cert",
        state.path().join("claim-cert.pem").to_str().unwrap(),
        "--pkcs11_lib",
        hsm.module.to_str().unwrap(),
        "--token_label",
        TOKEN,
        "--pin",
        PIN,
        "--key_label",
        CLAIM_LABEL,
        "--template_name",
        "FleetTemplate",
        "--template_parameters",
        r#"{"SerialNumber":"demo-hsm","DeviceLocation":"Seattle"}"#,
        "--output_dir",
        store.to_str().unwrap(),
        "--device_key_label",
        "demo-device",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let first = run_demo(&exe, &tokens.conf, &args);
    assert_eq!(first.status.code(), Some(0));
    let text = String::from_utf8_lossy(&first.stdout);
    assert!(text.contains("Thing: ThingPrefix_demo-hsm\n"), "{text}");
    assert!(
        text.contains("Provisioned, saved and verified by connecting"),
        "{text}"
    );
    assert!(
        text.contains("the private key stays in the PKCS#11 token"),
        "{text}"
    );
    assert!(store.is_dir(), "{store:?}");
    let files = file_names(&store);
    assert_eq!(
        files.len(),
        2,
        "identity.json and the certificate: {files:?}"
    );
    assert!(!files.iter().any(|f| f.contains("key")), "{files:?}");
    let json = std::fs::read_to_string(store.join("identity.json")).unwrap();
    assert!(json.contains(r#""keyLabel": "demo-device""#), "{json}");
    assert!(!json.contains(PIN), "{json}");

    let second = run_demo(&exe, &tokens.conf, &args);
    assert_eq!(second.status.code(), Some(0));
    let text = String::from_utf8_lossy(&second.stdout);
    assert!(
        text.contains("Reused the stored identity, verified by connecting"),
        "{text}"
    );
    assert_eq!(emu.service().registry().things().len(), 1);

    // The service's keys cannot live in the token: a usage error naming the choice.
    args.extend([
        "--key_type".to_owned(),
        "service".to_owned(),
        "--force".to_owned(),
    ]);
    let refused = run_demo(&exe, &tokens.conf, &args);
    assert_eq!(refused.status.code(), Some(2));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("--key_type service gives a key in a file"),
        "{err}"
    );
}
