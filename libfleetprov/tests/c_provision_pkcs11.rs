//! fp_provision() from C with the claim key and the device key in a PKCS#11 token
//! (SoftHSM2): `tests/c/provision_pkcs11.c`, built with warnings as errors, provisions against
//! the emulator without writing a key file, and a second run reuses the identity with the
//! token's key.

#![cfg(feature = "pkcs11")]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fleetprov_emulator::{Emulator, EmulatorConfig};
use fleetprov_testkit::cprog::{c_tests_dir, CProgram};
use fleetprov_testkit::softhsm::{softhsm, CLAIM_LABEL, PIN, TOKEN};

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

fn run(exe: &Path, port: u16, state: &Path, label: &str, store: &Path, serial: &str) -> Output {
    let hsm = softhsm();
    let out = Command::new("timeout")
        .args(["-k", "5", "120"])
        .arg(exe)
        .arg("localhost")
        .arg(port.to_string())
        .arg(state.join("ca.pem"))
        .arg(state.join("claim-cert.pem"))
        .arg(&hsm.module)
        .args([TOKEN, PIN, CLAIM_LABEL, label])
        .arg(store)
        .arg(serial)
        .env("SOFTHSM2_CONF", &hsm.conf)
        .output()
        .unwrap();
    eprintln!(
        "--- stdout\n{}--- stderr\n{}--- status {:?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code()
    );
    out
}

#[test]
fn c_provision_keeps_both_keys_in_the_token_and_reuses_the_identity() {
    let hsm = softhsm();
    let state = tempfile::tempdir().unwrap();
    hsm.copy_state(state.path());
    let emu = Emulator::start_blocking(EmulatorConfig::new(state.path())).unwrap();
    let store = state.path().join("identity");
    for (cxx, label, serial) in [
        (false, "c-device", "c-hsm"),
        (true, "cxx-device", "cxx-hsm"),
    ] {
        let exe = program(cxx);
        let store = store.join(label);
        let first = run(&exe, emu.port(), state.path(), label, &store, serial);
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
        let files: Vec<String> = std::fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!files.iter().any(|f| f.contains("key")), "{files:?}");

        let second = run(&exe, emu.port(), state.path(), label, &store, serial);
        assert_eq!(second.status.code(), Some(0));
        let text = String::from_utf8_lossy(&second.stdout);
        assert!(text.contains("reused: 1\nlocation: pkcs11\n"), "{text}");
    }
    assert_eq!(emu.service().registry().things().len(), 2);
}
