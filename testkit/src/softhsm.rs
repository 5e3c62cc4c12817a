//! SoftHSM2 (Debian's `softhsm2`, a real PKCS#11 module) set up once per test process: two
//! tokens in a temporary directory named by `SOFTHSM2_CONF`, and an emulator state (CA, claim
//! certificate and key) whose claim key is imported into both, for tests that keep keys in a
//! token. A test that calls [`softhsm`] without SoftHSM2 installed fails, naming it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use fleetprov::pkcs11::Pkcs11Key;

/// The token most tests use.
pub const TOKEN: &str = "fleetprov-test";
/// A second token, for checks of a wrong PIN: PKCS#11 login state is per token and process,
/// so while another test is logged in to [`TOKEN`], any PIN would "log in" there.
pub const PIN_TOKEN: &str = "fleetprov-pin";
/// The user PIN of both tokens.
pub const PIN: &str = "4711";
/// The security officer PIN of both tokens.
pub const SO_PIN: &str = "0815";
/// The label of the claim key in both tokens (`CKA_ID` 01).
pub const CLAIM_LABEL: &str = "claim";

const MODULE_CANDIDATES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
];

/// The tokens, the module, and the emulator state whose claim key is in the tokens.
pub struct SoftHsm {
    /// Holds the tokens and the state (removed with it).
    dir: tempfile::TempDir,
    /// The SoftHSM2 module (`FLEETPROV_PKCS11_MODULE` if set).
    pub module: PathBuf,
    /// The emulator state to copy (see [`SoftHsm::copy_state`]).
    pub state: PathBuf,
    /// The `SOFTHSM2_CONF` file, for child processes.
    pub conf: PathBuf,
}

/// Tokens copied by [`SoftHsm::copy_tokens`]; removed when dropped.
pub struct TokenCopy {
    _dir: tempfile::TempDir,
    /// The `SOFTHSM2_CONF` file naming the copy, for child processes.
    pub conf: PathBuf,
}

/// Writes `dir/softhsm2.conf` naming `tokens` as the token directory; returns its path.
fn write_conf(dir: &Path, tokens: &Path) -> PathBuf {
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    conf
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

/// Sets SoftHSM2 up once per process (and sets `SOFTHSM2_CONF`, which the module reads when
/// it is initialised); the test fails, naming it, when it is not installed.
pub fn softhsm() -> &'static SoftHsm {
    static HSM: OnceLock<SoftHsm> = OnceLock::new();
    HSM.get_or_init(|| {
        let module = std::env::var_os("FLEETPROV_PKCS11_MODULE")
            .map(PathBuf::from)
            .or_else(|| {
                MODULE_CANDIDATES
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.is_file())
            });
        let util = Command::new("softhsm2-util").arg("--version").output();
        let (Some(module), Ok(_)) = (module, util) else {
            crate::missing_tool(
                "SoftHSM2 (softhsm2-util and libsofthsm2.so)",
                "apt-get install softhsm2",
            );
        };
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = write_conf(dir.path(), &tokens);
        std::env::set_var("SOFTHSM2_CONF", &conf);
        for token in [TOKEN, PIN_TOKEN] {
            run(Command::new("softhsm2-util").args([
                "--init-token",
                "--free",
                "--label",
                token,
                "--pin",
                PIN,
                "--so-pin",
                SO_PIN,
            ]));
        }
        let state = dir.path().join("state");
        fleetprov_emulator::ca::Ca::load_or_create(&state).unwrap();
        let claim_key = state.join("claim-key.pem");
        for token in [TOKEN, PIN_TOKEN] {
            run(Command::new("softhsm2-util")
                .args(["--import"])
                .arg(&claim_key)
                .args(["--token", token, "--label", CLAIM_LABEL])
                .args(["--id", "01", "--pin", PIN]));
        }
        SoftHsm {
            dir,
            module,
            state,
            conf,
        }
    })
}

impl SoftHsm {
    /// The key labelled `label` in [`TOKEN`], with its PIN.
    pub fn key(&self, label: &str) -> Pkcs11Key {
        Pkcs11Key {
            module: self.module.clone(),
            token_label: Some(TOKEN.to_owned()),
            slot_id: None,
            pin: Some(PIN.to_owned().into()),
            key_label: label.to_owned(),
        }
    }

    /// A copy of both tokens in a directory of its own, for a test whose child processes write
    /// to a token: SoftHSM2's file store is not safe for two processes writing one token at
    /// once (a process reading it meanwhile can find the token missing), and the tests of one
    /// file run at the same time.
    pub fn copy_tokens(&self) -> TokenCopy {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        copy_dir(&self.dir.path().join("tokens"), &tokens);
        let conf = write_conf(dir.path(), &tokens);
        TokenCopy { _dir: dir, conf }
    }

    /// Copies the prepared emulator state (CA, claim) into `dir`, so that an emulator started
    /// there has its own registry and the claim key in the tokens.
    pub fn copy_state(&self, dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        for entry in std::fs::read_dir(&self.state).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
            }
        }
    }
}
