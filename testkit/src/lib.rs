//! Test fixtures shared by the workspace's test suites (a dev-dependency only, never published):
//!
//! - [`env`](mod@env): an in-process emulator with the claim's client options, a CONNECT proxy, a relay
//!   that can hold traffic, CSRs, and polling with a deadline;
//! - [`emulator_clients`]: MQTT test clients (rumqttc, MQTT 5 and 3.1.1) and a raw TLS
//!   connection for the emulator's own tests;
//! - [`hostile`]: a scripted TLS broker that answers with raw bytes, for protocol faults;
//! - [`mosquitto`]: Debian's mosquitto broker with the emulator's CA, for responder mode;
//! - [`softhsm`]: SoftHSM2 tokens holding the claim key, for keys in a PKCS#11 token;
//! - [`cprog`]: where the C library of this build is, and one recipe that compiles and links a
//!   C program against it.

// The client traits are used only by these tests, on multi-thread runtimes.
#![allow(async_fn_in_trait)]

pub mod cprog;
pub mod emulator_clients;
pub mod env;
pub mod hostile;
pub mod mosquitto;
pub mod softhsm;

/// Fails the calling test for want of a tool it needs: such a test is never counted as passed
/// without having run. `make test-deps` installs every tool the suites use.
#[track_caller]
pub fn missing_tool(what: &str, install: &str) -> ! {
    panic!("not run: this test needs {what}; install it with `make test-deps` ({install})")
}

/// The names of the files in `dir`, sorted; none when `dir` does not exist.
pub fn file_names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
