//! The signer callback from C: `tests/c/signer.c` keeps its keys in OpenSSL's libcrypto and
//! signs through `fp_signer_new()`'s callback; it is compiled with the `cc` crate, linked
//! against the `libfleetprov.so` cargo built for this test run, and run against the emulator.
//! Needs libcrypto's headers (Debian's libssl-dev); `.ci/pkcs11.sh` installs them.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use fleetprov_emulator::{Emulator, EmulatorConfig, EmulatorHandle};

use fleetprov_testkit::cprog::{c_tests_dir, limited, output_logged, CProgram};
use fleetprov_testkit::file_names;

/// Compiles `tests/c/signer.c` (as C11, or as C++ when `cxx`) with warnings as errors and
/// links it to libfleetprov and libcrypto.
fn build(cxx: bool) -> PathBuf {
    let name = if cxx { "signer_cxx" } else { "signer" };
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("c_signer")
        .join(name);
    CProgram::new(name, &out)
        .source(c_tests_dir().join("signer.c"))
        .cxx(cxx)
        .lib("crypto")
        .build()
}

/// Fails the test, naming the package, unless libcrypto's headers are installed.
fn require_openssl() {
    if !Path::new("/usr/include/openssl/evp.h").is_file() {
        fleetprov_testkit::missing_tool("OpenSSL's headers", "apt-get install libssl-dev");
    }
}

fn program() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| build(false)).clone()
}

struct Env {
    emulator: EmulatorHandle,
    _state: tempfile::TempDir,
}

impl Env {
    fn start() -> Env {
        let state = tempfile::tempdir().unwrap();
        let emulator = Emulator::start_blocking(EmulatorConfig::new(state.path())).unwrap();
        Env {
            emulator,
            _state: state,
        }
    }

    /// Runs the program in `mode` with a hard time limit, so a hang fails the test.
    fn run(&self, mode: &str) -> Output {
        self.run_with(mode, &[])
    }

    fn run_with(&self, mode: &str, extra: &[&Path]) -> Output {
        let e = &self.emulator;
        output_logged(
            limited(program())
                .arg("localhost")
                .arg(e.port().to_string())
                .arg(e.ca_path())
                .arg(e.claim_cert_path())
                .arg(e.claim_key_path())
                .arg(mode)
                .args(extra),
        )
    }
}

#[test]
fn c_signer_callback_provisions_in_both_flows_and_the_device_key_connects() {
    require_openssl();
    let env = Env::start();
    let out = env.run("provision");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("thing: ThingPrefix_c-signer-keys\n"),
        "{text}"
    );
    assert!(text.contains("thing: ThingPrefix_c-signer-csr\n"), "{text}");
    assert!(text.contains("device connected\n"), "{text}");
    assert!(text.ends_with("signer: ok\n"), "{text}");
    let things: Vec<String> = env
        .emulator
        .service()
        .registry()
        .things()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert!(things.contains(&"ThingPrefix_c-signer-csr".to_owned()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("PRIVATE KEY"));
}

#[test]
fn c_failing_signers_give_fp_err_signer() {
    require_openssl();
    let env = Env::start();
    let out = env.run("failing");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("signer error: ") && text.contains("the sign callback returned -5"),
        "{text}"
    );
    assert!(
        text.contains("does not verify with its public key"),
        "{text}"
    );
    assert!(text.ends_with("signer: ok\n"), "{text}");
    // Nothing registered: no connection got past the handshake.
    assert!(env.emulator.service().registry().things().is_empty());
}

#[test]
fn c_signer_test_compiles_as_cpp() {
    require_openssl();
    build(true);
}

#[test]
fn c_provision_with_signer_keys_writes_no_key_and_reuses_with_the_signer() {
    require_openssl();
    let env = Env::start();
    let store = env._state.path().join("identity");
    let out = env.run_with("provision_device", &[&store]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let thing = "ThingPrefix_c-signer-device";
    assert!(
        text.contains(&format!(
            "provisioned: {thing} reused=0 location=signer key_file=''\n\
             provisioned: {thing} reused=1 location=signer key_file=''\n"
        )),
        "{text}"
    );
    assert!(text.ends_with("signer: ok\n"), "{text}");
    assert!(store.is_dir(), "{store:?}");
    let files = file_names(&store);
    assert!(!files.iter().any(|f| f.contains("key")), "{files:?}");
}
