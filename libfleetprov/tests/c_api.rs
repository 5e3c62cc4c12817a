//! The C API from C: the programs under `tests/c/` and the examples under `c_examples/` are
//! compiled with the `cc` crate, linked against the `libfleetprov.so` cargo built for this test
//! run, and run against the emulator over mutual TLS on loopback. Their exit codes and output
//! are asserted. Also checks the header itself: it compiles as C99 and C++, its version macros
//! match Cargo.toml, and the committed copy equals a fresh generation.
//!
//! `FLEETPROV_C_MODE` runs the same programs and assertions under a memory checker:
//! - unset: plain builds;
//! - `asan`: built with AddressSanitizer and UBSan (each program is checked to carry
//!   `__asan_init`); any sanitizer report, leaks at exit included, fails the run;
//! - `valgrind`: plain builds run under memcheck with `.ci/valgrind.supp`; any error or a
//!   definitely lost byte fails the run.
//!
//! The checker modes skip the header-only tests, which run no program.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use fleetprov_emulator::{Emulator, EmulatorConfig, EmulatorHandle, Fault};

use fleetprov_testkit::env as common;
use fleetprov_testkit::hostile as hostile_broker;

use common::CSR_PEM;
use fleetprov_testkit::cprog::{c_tests_dir, cc_build, include_dir, root, CProgram};

/// How the C programs are built and run (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Plain,
    Asan,
    Valgrind,
}

/// Compile and link flags of the `asan` mode. Without `-fno-sanitize-recover`, UBSan prints a
/// report and carries on, and the run could still exit 0.
const SANITIZE_FLAGS: &[&str] = &[
    "-fsanitize=address,undefined",
    "-fno-omit-frame-pointer",
    "-fno-sanitize-recover=undefined",
];

impl Mode {
    fn current() -> Mode {
        static MODE: OnceLock<Mode> = OnceLock::new();
        *MODE.get_or_init(|| match std::env::var("FLEETPROV_C_MODE").as_deref() {
            Err(_) | Ok("") | Ok("plain") => Mode::Plain,
            Ok("asan") => Mode::Asan,
            Ok("valgrind") => Mode::Valgrind,
            Ok(other) => panic!("FLEETPROV_C_MODE={other:?}: expected asan, valgrind or unset"),
        })
    }

    /// Builds of different modes never share a directory.
    fn dir(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Asan => "asan",
            Mode::Valgrind => "valgrind",
        }
    }

    /// Factor on the hard time limit of a run: memcheck runs these programs 10 to 50 times
    /// slower (most of the time goes into TLS), ASan about twice.
    fn time_scale(self) -> u64 {
        match self {
            Mode::Plain => 1,
            Mode::Asan => 2,
            Mode::Valgrind => 10,
        }
    }

    /// The header-only tests build no program worth checking: they run in the plain mode only.
    fn skips_header_checks(self) -> bool {
        if self != Mode::Plain {
            eprintln!(
                "skipped: FLEETPROV_C_MODE={} runs programs only",
                self.dir()
            );
            return true;
        }
        false
    }
}

enum Lang {
    C,
    Cxx,
}

/// Compiles `sources` into an executable linked to libfleetprov, with warnings as errors, for
/// the current [`Mode`].
fn build_program(name: &str, sources: &[PathBuf], lang: Lang) -> PathBuf {
    let mode = Mode::current();
    let sanitize: &[&str] = if mode == Mode::Asan {
        SANITIZE_FLAGS
    } else {
        &[]
    };
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("c_api")
        .join(mode.dir())
        .join(name);
    let exe = CProgram::new(name, &out)
        .cxx(matches!(lang, Lang::Cxx))
        .flags(sanitize)
        .sources(sources)
        .build();
    if mode == Mode::Asan {
        assert_sanitizers_linked(&exe);
    }
    exe
}

/// Proves the sanitizers are in the program: its symbol table references the ASan runtime's
/// entry point and UBSan's report handlers.
fn assert_sanitizers_linked(exe: &Path) {
    let out = Command::new("nm").arg(exe).output().unwrap();
    assert!(out.status.success(), "nm {} failed", exe.display());
    let symbols = String::from_utf8_lossy(&out.stdout);
    assert!(
        symbols.lines().any(|l| l.ends_with(" __asan_init")),
        "{} lacks __asan_init",
        exe.display()
    );
    assert!(
        symbols.contains("__ubsan_handle_"),
        "{} lacks UBSan handlers",
        exe.display()
    );
}

/// Builds each program once per test process; tests running in parallel share the result.
fn built(cell: &'static OnceLock<PathBuf>, name: &str, source: PathBuf) -> PathBuf {
    cell.get_or_init(|| build_program(name, &[source], Lang::C))
        .clone()
}

fn c_test(name: &'static str) -> PathBuf {
    static HAPPY: OnceLock<PathBuf> = OnceLock::new();
    static LIFECYCLE: OnceLock<PathBuf> = OnceLock::new();
    static BAD_INPUT: OnceLock<PathBuf> = OnceLock::new();
    static NETWORK_FAULTS: OnceLock<PathBuf> = OnceLock::new();
    static PROVISION_CANCEL: OnceLock<PathBuf> = OnceLock::new();
    let cell = match name {
        "provision_cancel" => &PROVISION_CANCEL,
        "happy_path" => &HAPPY,
        "lifecycle" => &LIFECYCLE,
        "bad_input" => &BAD_INPUT,
        "network_faults" => &NETWORK_FAULTS,
        other => panic!("unknown C test {other}"),
    };
    built(cell, name, c_tests_dir().join(format!("{name}.c")))
}

fn demo() -> PathBuf {
    static DEMO: OnceLock<PathBuf> = OnceLock::new();
    built(
        &DEMO,
        "fleet_provisioning",
        root().join("c_examples").join("fleet_provisioning.c"),
    )
}

/// Runs a program with a hard time limit (coreutils `timeout`), so a hang fails the test
/// instead of stalling it; in the checker modes, under the checker, failing on its findings.
fn run(exe: &Path, args: &[String]) -> Output {
    let (mut cmd, reports) = command(exe, args);
    let out = cmd.output().unwrap();
    finish(exe, args, out, &reports)
}

/// A program started as [`run`] starts it, with its stdout piped for the caller to read.
struct Running {
    child: std::process::Child,
    reports: tempfile::TempDir,
}

fn spawn(exe: &Path, args: &[String]) -> Running {
    let (mut cmd, reports) = command(exe, args);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    Running { child, reports }
}

impl Running {
    /// Reads stdout up to and including the first line containing `needle`; panics if the
    /// program closes stdout first.
    fn read_until(&mut self, needle: &str) -> String {
        use std::io::Read;
        let stdout = self.child.stdout.as_mut().unwrap();
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            let n = stdout.read(&mut byte).unwrap();
            assert!(
                n == 1,
                "stdout ended before {needle:?}: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.push(byte[0]);
            if byte[0] == b'\n'
                && String::from_utf8_lossy(&seen)
                    .lines()
                    .last()
                    .unwrap_or("")
                    .contains(needle)
            {
                return String::from_utf8_lossy(&seen).into_owned();
            }
        }
    }

    /// Sends `signal` to the program (through `timeout` and the checker, which pass it on).
    fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn finish(self, exe: &Path, args: &[String]) -> Output {
        let out = self.child.wait_with_output().unwrap();
        finish(exe, args, out, &self.reports)
    }
}

/// The command for `exe` in the current [`Mode`], and the directory for the checker's reports.
fn command(exe: &Path, args: &[String]) -> (Command, tempfile::TempDir) {
    let mode = Mode::current();
    // Reports of the checkers go to files, so the programs' own stderr stays as asserted.
    let reports = tempfile::tempdir().unwrap();
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5"])
        .arg((120 * mode.time_scale()).to_string());
    match mode {
        Mode::Plain => {}
        Mode::Asan => {
            let dir = reports.path().display();
            cmd.env(
                "ASAN_OPTIONS",
                format!("detect_leaks=1:halt_on_error=1:log_path={dir}/asan"),
            )
            .env(
                "UBSAN_OPTIONS",
                format!("print_stacktrace=1:halt_on_error=1:log_path={dir}/ubsan"),
            );
        }
        Mode::Valgrind => {
            cmd.arg("valgrind")
                .args(VALGRIND_FLAGS)
                .arg(format!(
                    "--suppressions={}",
                    root().join(".ci").join("valgrind.supp").display()
                ))
                .arg(format!(
                    "--log-file={}/valgrind.%p",
                    reports.path().display()
                ));
        }
    }
    cmd.arg(exe).args(args);
    (cmd, reports)
}

/// Logs a finished run and fails on the checker's findings.
fn finish(exe: &Path, args: &[String], out: Output, reports: &tempfile::TempDir) -> Output {
    let mode = Mode::current();
    eprintln!(
        "$ {} {}\n--- stdout\n{}--- stderr\n{}--- status {:?}",
        exe.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code()
    );
    check_reports(mode, reports.path());
    out
}

/// `--error-exitcode` alone would not say what went wrong: [`check_reports`] reads the log.
const VALGRIND_FLAGS: &[&str] = &[
    "--error-exitcode=1",
    "--leak-check=full",
    "--errors-for-leak-kinds=definite",
    "--show-leak-kinds=definite",
    "--num-callers=40",
    "--gen-suppressions=all",
];

/// Fails on anything the checker of `mode` reported for one run.
fn check_reports(mode: Mode, dir: &Path) {
    let mut logs: Vec<(PathBuf, String)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let text = fs::read_to_string(&path).unwrap();
            (path, text)
        })
        .collect();
    logs.sort();
    match mode {
        Mode::Plain => {}
        // The sanitizers create a log only when they have something to report.
        Mode::Asan => {
            if let Some((path, text)) = logs.first() {
                panic!("sanitizer report {}:\n{text}", path.display());
            }
        }
        Mode::Valgrind => {
            assert!(
                !logs.is_empty(),
                "valgrind wrote no log: is it installed and on PATH?"
            );
            for (path, text) in &logs {
                let clean =
                    text.contains("ERROR SUMMARY: 0 errors") && definitely_lost_bytes(text) == 0;
                assert!(clean, "valgrind found errors ({}):\n{text}", path.display());
                assert!(!text.contains("PRIVATE KEY"));
            }
        }
    }
}

/// The "definitely lost" total of a memcheck log (absent when every block was freed).
fn definitely_lost_bytes(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.split("definitely lost: ").nth(1))
        .map(|rest| {
            let n = rest.split_whitespace().next().unwrap_or("");
            n.replace(',', "").parse::<u64>().unwrap()
        })
        .sum()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

struct Env {
    emulator: EmulatorHandle,
    _state: tempfile::TempDir,
}

impl Env {
    fn start() -> Env {
        Env::with_fault(Fault::None)
    }

    fn with_fault(fault: Fault) -> Env {
        let state = tempfile::tempdir().unwrap();
        let mut cfg = EmulatorConfig::new(state.path());
        cfg.fault = fault;
        // The C programs also name templates the emulator does not serve, whose 404 must come
        // from the service rather than from the claim policy refusing the SUBSCRIBE.
        cfg.claim_policy = Some(fleetprov_testkit::env::any_template_policy(state.path()));
        let emulator = Emulator::start_blocking(cfg).unwrap();
        Env {
            emulator,
            _state: state,
        }
    }

    /// ENDPOINT PORT CA CERT KEY, as the C tests expect them.
    fn conn_args(&self) -> Vec<String> {
        vec![
            "localhost".into(),
            self.emulator.port().to_string(),
            self.emulator.ca_path().display().to_string(),
            self.emulator.claim_cert_path().display().to_string(),
            self.emulator.claim_key_path().display().to_string(),
        ]
    }

    /// The demo's connection flags.
    fn demo_args(&self) -> Vec<String> {
        let a = self.conn_args();
        [
            "--endpoint",
            &a[0],
            "--port",
            &a[1],
            "--ca_file",
            &a[2],
            "--cert",
            &a[3],
            "--key",
            &a[4],
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// The demo's connection flags and the fleet template, for the device `serial`.
    fn demo_template_args(&self, serial: &str) -> Vec<String> {
        let mut args = self.demo_args();
        args.extend(strings(&[
            "--template_name",
            "FleetTemplate",
            "--template_parameters",
        ]));
        args.push(format!(
            r#"{{"SerialNumber":"{serial}","DeviceLocation":"Seattle"}}"#
        ));
        args
    }

    fn thing_names(&self) -> Vec<String> {
        self.emulator
            .service()
            .registry()
            .things()
            .into_iter()
            .map(|t| t.name)
            .collect()
    }
}

/// Asserts that a program exited 0, with its stderr in the message.
fn succeeded(out: &Output) {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------- the header ----------

#[test]
fn header_compiles_alone_as_c99_and_cpp() {
    if Mode::current().skips_header_checks() {
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("c_api")
        .join("header");
    fs::create_dir_all(&dir).unwrap();
    let src = dir.join("header_only.c");
    fs::write(
        &src,
        // <stdlib.h> after the header: the header must not redeclare anything of the C library.
        "#include \"fleetprov.h\"\n#include <stdlib.h>\nint header_only(void);\nint header_only(void) { return FP_OK; }\n",
    )
    .unwrap();
    for (lang, std, sub) in [("c", "c99", "c99"), ("c++", "c++11", "cxx")] {
        let out = dir.join(sub);
        fs::create_dir_all(&out).unwrap();
        let mut b = cc_build();
        b.out_dir(&out)
            .cpp(lang == "c++")
            .include(include_dir())
            .flag("-x")
            .flag(lang)
            .std(std)
            .flag("-Wall")
            .flag("-Wextra")
            .flag("-pedantic")
            .flag("-Werror")
            .file(&src);
        let objects = b.compile_intermediates();
        assert_eq!(objects.len(), 1);
    }
}

#[test]
fn header_version_macros_match_cargo_toml() {
    if Mode::current().skips_header_checks() {
        return;
    }
    let header = fs::read_to_string(include_dir().join("fleetprov.h")).unwrap();
    let macro_value = |name: &str| -> String {
        let prefix = format!("#define {name} ");
        header
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{name} missing"))
            .trim()
            .to_owned()
    };
    let version = format!(
        "{}.{}.{}",
        macro_value("FP_VERSION_MAJOR"),
        macro_value("FP_VERSION_MINOR"),
        macro_value("FP_VERSION_PATCH")
    );
    assert_eq!(version, env!("CARGO_PKG_VERSION"));
}

#[test]
fn committed_header_equals_a_fresh_generation() {
    if Mode::current().skips_header_checks() {
        return;
    }
    // build.rs generates into OUT_DIR on every run of the script and rewrites include/ only
    // when the content changed; a hand edit or a stale commit shows up as a difference.
    let fresh = fs::read_to_string(concat!(env!("OUT_DIR"), "/fleetprov.h")).unwrap();
    let committed = fs::read_to_string(include_dir().join("fleetprov.h")).unwrap();
    assert!(
        fresh == committed,
        "include/fleetprov.h differs from the cbindgen output; rebuild and commit it"
    );
    // Every exported function is declared.
    for f in [
        "fp_version",
        "fp_result_str",
        "fp_client_options_new",
        "fp_client_new",
        "fp_client_connect",
        "fp_client_free",
        "fp_create_keys",
        "fp_create_from_csr",
        "fp_register_thing",
        "fp_set_log_callback",
    ] {
        assert!(committed.contains(&format!("{f}(")), "{f} not declared");
    }
}

#[test]
fn c_tests_compile_as_cpp() {
    if Mode::current().skips_header_checks() {
        return;
    }
    for name in [
        "happy_path",
        "lifecycle",
        "bad_input",
        "network_faults",
        "provision_cancel",
    ] {
        build_program(
            &format!("{name}_cxx"),
            &[c_tests_dir().join(format!("{name}.c"))],
            Lang::Cxx,
        );
    }
}

// ---------- tests/c programs ----------

fn happy_path(version: &str, serial_a: &str, serial_b: &str) {
    let env = Env::start();
    let exe = c_test("happy_path");
    let mut args = env.conn_args();
    args.extend(strings(&[version, serial_a, serial_b]));
    let out = run(&exe, &args);
    succeeded(&out);
    let text = stdout(&out);
    assert!(text.contains(&format!("thing: ThingPrefix_{serial_a}\n")));
    assert!(text.contains(&format!("thing: ThingPrefix_{serial_b}\n")));
    assert!(text.ends_with("happy_path: ok\n"));
    // The service side agrees.
    let things = env.thing_names();
    assert!(
        things.contains(&format!("ThingPrefix_{serial_a}")),
        "{things:?}"
    );
    assert!(
        things.contains(&format!("ThingPrefix_{serial_b}")),
        "{things:?}"
    );
}

#[test]
fn happy_path_mqtt5() {
    happy_path("5", "51", "52");
}

#[test]
fn happy_path_mqtt311() {
    happy_path("3", "31", "32");
}

#[test]
fn lifecycle_contract() {
    let env = Env::start();
    // Accepts TCP connections (the kernel completes them) and never answers: connecting stays
    // pending for as long as the test needs.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    // A port nothing listens on: connecting is refused at once.
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let exe = c_test("lifecycle");
    let mut args = env.conn_args();
    args.push(silent.local_addr().unwrap().port().to_string());
    args.push(closed_port.to_string());
    let out = run(&exe, &args);
    succeeded(&out);
    let text = stdout(&out);
    for line in [
        "not connected: ok",
        "free cancels pending: ok",
        "free waits for running callback: ok",
        "failed connection: ok",
        "free inside own callback: ok",
        "free while a sibling callback runs: ok",
        "free from main and from a callback: ok",
        "lifecycle: ok",
    ] {
        assert!(text.contains(line), "missing {line:?}");
    }
    drop(silent);
}

/// fp_provision_start(): a run cancelled at each step (connecting, creating, registering,
/// saving, verifying) ends with FP_ERR_CANCELLED, its callback once, within 100 ms (scaled
/// under a memory checker), leaving the previous identity or none; the blocking wait; the
/// handle's rules. See tests/c/provision_cancel.c.
#[test]
fn provision_cancel_at_each_step() {
    let env = Env::start();
    let stores = tempfile::tempdir().unwrap();
    // Accepts TCP connections and never answers: the TLS handshake stays pending.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let exe = c_test("provision_cancel");
    let mut args = env.conn_args();
    args.push(stores.path().display().to_string());
    args.push(silent.local_addr().unwrap().port().to_string());
    args.push((100 * Mode::current().time_scale()).to_string());
    let out = run(&exe, &args);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}{}", stderr(&out));
    for step in [
        "connecting",
        "creating",
        "registering",
        "saving",
        "verifying",
    ] {
        assert!(text.contains(&format!("cancel at {step} #1: ok")), "{text}");
        assert!(
            text.contains(&format!("cancel at {step} #1 with an identity: ok")),
            "{text}"
        );
    }
    for line in [
        "null arguments: ok",
        "cancel at connecting #2 with an identity: ok",
        "cancelled first runs leave no identity: ok",
        "cancelled forced runs keep the identity: ok",
        "cancel from another thread while connecting: ok",
        "free without cancel: ok",
    ] {
        assert!(text.contains(line), "missing {line:?}: {text}");
    }
    assert!(text.ends_with("provision_cancel: ok\n"), "{text}");
    drop(silent);
}

#[test]
fn bad_input_table() {
    let env = Env::start();
    let scratch = tempfile::tempdir().unwrap();
    let exe = c_test("bad_input");
    let mut args = env.conn_args();
    args.push(scratch.path().display().to_string());
    let out = run(&exe, &args);
    succeeded(&out);
    let text = stdout(&out);
    for line in [
        "missing certificate file: I/O error",
        "missing key file: I/O error",
        "missing CA file: I/O error",
        "certificate not PEM: TLS error",
        "key not PEM: TLS error",
        "mismatched key: TLS error",
        "wrong CA: TLS error",
        "empty certificate file: TLS error",
        "CA not PEM: TLS error",
        "certificate path is a directory: I/O error",
        "certificate PEM text not PEM: TLS error",
        "key PEM text not PEM: TLS error",
        "key PEM text of another certificate: TLS error",
        "CA PEM text not PEM: TLS error",
        "wrong CA PEM text: TLS error",
        "bad_input: ok",
    ] {
        assert!(text.contains(line), "missing {line:?}");
    }
    // Refused operations never reached the service.
    assert!(env.thing_names().is_empty());
}

// ---------- tests/c/network_faults: the network half of the bad-input table ----------

/// Runs one case of `network_faults` with `conn` as its ENDPOINT PORT CA CERT KEY and `extra`
/// after the case name; returns the case's report line, "<case>: <result> | <message>".
fn network_fault_case(case: &str, mut conn: Vec<String>, extra: &[String]) -> String {
    let exe = c_test("network_faults");
    conn.push(case.to_owned());
    conn.extend_from_slice(extra);
    let out = run(&exe, &conn);
    assert_eq!(out.status.code(), Some(0), "case {case}");
    let text = stdout(&out);
    assert!(text.ends_with("network_faults: ok\n"), "{text}");
    let prefix = format!("{case}: ");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap()
        .to_owned()
}

/// A case against an emulator injecting `fault`; the report line must contain `expect`.
fn fault_case(case: &str, fault: Fault, expect: &str) {
    let env = Env::with_fault(fault);
    let line = network_fault_case(case, env.conn_args(), &[]);
    assert!(line.contains(expect), "{line}");
    assert!(env.thing_names().is_empty());
}

#[test]
fn reply_not_json() {
    fault_case(
        "reply_not_json",
        Fault::ReplyAccepted(b"certainly not json".to_vec()),
        "bad reply from the service |",
    );
}

#[test]
fn reply_of_the_wrong_shape() {
    // An object without the fields of a CreateCertificateFromCsr reply.
    fault_case(
        "reply_wrong_shape",
        Fault::ReplyAccepted(br#"{"certificateId":"abc"}"#.to_vec()),
        "bad reply from the service |",
    );
}

#[test]
fn reply_of_the_wrong_types() {
    fault_case(
        "reply_wrong_types",
        Fault::ReplyAccepted(br#"{"thingName":5,"deviceConfiguration":[]}"#.to_vec()),
        "bad reply from the service |",
    );
}

#[test]
fn reply_of_one_mebibyte() {
    let huge = vec![b'x'; 1024 * 1024];
    fault_case(
        "reply_1mib_mqtt311",
        Fault::ReplyAccepted(huge.clone()),
        "limit",
    );
    fault_case(
        "reply_1mib_mqtt5",
        Fault::ReplyAccepted(huge),
        "timed out |",
    );
}

#[test]
fn reply_on_the_wrong_topic() {
    fault_case("reply_wrong_topic", Fault::ReplyOnWrongTopic, "timed out |");
}

#[test]
fn service_never_answers() {
    fault_case("service_silent", Fault::Silent, "timed out |");
}

#[test]
fn csr_that_is_not_pem_is_rejected_by_the_service() {
    fault_case("csr_not_pem", Fault::None, "rejected by the service |");
}

#[test]
fn broker_closes_the_connection_mid_operation() {
    fault_case(
        "broker_closes_mid_operation",
        Fault::DisconnectOnRequest,
        "disconnected |",
    );
    fault_case(
        "broker_closes_mid_operation_mqtt311",
        Fault::DisconnectOnRequest,
        "disconnected |",
    );
}

#[test]
fn broker_never_sends_connack() {
    fault_case("no_connack", Fault::NoConnack, "timed out |");
}

#[test]
fn broker_never_sends_suback() {
    fault_case("no_suback", Fault::NoSuback, "timed out |");
}

#[test]
fn broker_refuses_the_subscription() {
    fault_case(
        "subscribe_refused",
        Fault::RefuseSubscribe,
        "subscription refused |",
    );
    fault_case(
        "subscribe_refused_mqtt311",
        Fault::RefuseSubscribe,
        "subscription refused |",
    );
}

#[test]
fn server_name_mismatch() {
    let env = Env::start();
    // The server certificate names localhost, 127.0.0.1 and ::1. A CONNECT proxy takes the
    // client to the emulator under a name the certificate does not carry.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = rt.block_on(common::start_proxy(env.emulator.port()));
    let mut conn = env.conn_args();
    conn[0] = "wrong-name.example".into();
    let line = network_fault_case("server_name_mismatch", conn, &[proxy.port.to_string()]);
    assert!(line.contains("TLS error |"), "{line}");
    assert!(line.contains("not valid for the name"), "{line}");
    assert!(proxy.requests.lock().unwrap()[0].starts_with("CONNECT wrong-name.example:"));
    drop(proxy);
}

/// A claim from the emulator's own CA valid from `from` to `to`, written to `dir` as
/// `NAME-cert.pem` and `NAME-key.pem`, registered as a claim if `register`; returns the
/// connection arguments that use it.
fn claim_args(
    env: &Env,
    dir: &Path,
    name: &str,
    from: SystemTime,
    to: SystemTime,
    register: bool,
) -> Vec<String> {
    let issued = env
        .emulator
        .service()
        .ca()
        .issue_claim_between(name, from, to)
        .unwrap();
    if register {
        env.emulator
            .service()
            .registry()
            .add_claim(&issued.certificate_id);
    }
    let cert = dir.join(format!("{name}-cert.pem"));
    let key = dir.join(format!("{name}-key.pem"));
    fs::write(&cert, &issued.certificate_pem).unwrap();
    fs::write(&key, issued.private_key_pem.unwrap()).unwrap();
    let mut conn = env.conn_args();
    conn[3] = cert.display().to_string();
    conn[4] = key.display().to_string();
    conn
}

const DAY: Duration = Duration::from_secs(86_400);

#[test]
fn expired_client_certificate() {
    let env = Env::start();
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let conn = claim_args(&env, dir.path(), "expired", now - 2 * DAY, now - DAY, true);
    for case in ["expired_certificate", "expired_certificate_mqtt311"] {
        let line = network_fault_case(case, conn.clone(), &[]);
        assert!(line.contains("TLS error |"), "{line}");
        assert!(line.contains("expired"), "{line}");
    }
}

#[test]
fn client_certificate_the_broker_does_not_know() {
    let env = Env::start();
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    // Signed by the right CA and in date, but never registered: CONNACK "not authorized".
    let conn = claim_args(&env, dir.path(), "stranger", now - DAY, now + DAY, false);
    let line = network_fault_case("unregistered_certificate", conn, &[]);
    assert!(
        line.contains("connection refused by the broker |"),
        "{line}"
    );
}

// ---------- the demo ----------

fn perm_bits(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The one file of the identity store whose name starts with `prefix`.
fn store_file(dir: &Path, prefix: &str) -> PathBuf {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    found.into_iter().next().unwrap()
}

/// Ctrl-C with `--output_dir`: SIGINT at a step (the test waits for the demo's line for it;
/// the emulator's fault keeps the run there) cancels the run through its handle: exit 8, the
/// reason on stderr, the previous identity or none.
#[test]
fn demo_sigint_cancels_and_keeps_the_previous_identity_or_none() {
    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;
    let env = Env::start();
    let exe = demo();
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("identity");
    let mut args = env.demo_template_args("8");
    args.extend(strings(&["--output_dir", out_dir.to_str().unwrap()]));
    let interrupted = |args: &[String], step: &str, signal: i32, name: &str| {
        let mut demo = spawn(&exe, args);
        let before = demo.read_until(&format!("] {step} ("));
        demo.signal(signal);
        let out = demo.finish(&exe, args);
        let (text, err) = (before + &stdout(&out), stderr(&out));
        assert_eq!(out.status.code(), Some(8), "{text}{err}");
        assert!(
            err.contains(&format!("interrupted by {name}: provisioning cancelled")),
            "{err}"
        );
        assert!(!text.contains("Thing: "), "{text}");
    };

    // A first run, held at the create call (the service never answers): no identity after.
    env.emulator.set_fault(Fault::Silent);
    interrupted(&args, "creating", SIGINT, "SIGINT");
    assert!(!out_dir.join("identity.json").exists());

    env.emulator.set_fault(Fault::None);
    let first = run(&exe, &args);
    succeeded(&first);
    let cert = store_file(&out_dir, "certificate-");

    // A forced run, held connecting (no CONNACK): the identity stays, and is reused after.
    let mut forced = args.clone();
    forced.push("--force".into());
    env.emulator.set_fault(Fault::NoConnack);
    interrupted(&forced, "connecting", SIGTERM, "SIGTERM");
    env.emulator.set_fault(Fault::None);
    assert_eq!(store_file(&out_dir, "certificate-"), cert);
    let again = run(&exe, &args);
    succeeded(&again);
    assert!(stdout(&again).contains("Reused the stored identity"));
}

#[test]
fn demo_keys_flow_saves_the_identity_reuses_it_and_never_prints_the_key() {
    let env = Env::start();
    let exe = demo();
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("identity");
    let mut args = env.demo_template_args("7");
    args.extend(strings(&[
        "--output_dir",
        out_dir.to_str().unwrap(),
        "--key_type",
        "service",
    ]));
    let out = run(&exe, &args);
    succeeded(&out);
    let text = stdout(&out);
    assert!(text.contains("Thing: ThingPrefix_7\n"), "{text}");
    assert!(text.contains("Provisioned, saved and verified by connecting"));
    assert!(text.contains("  LocationUrl = https://example.aws\n"));
    assert!(text.contains("  FallbackUrl = https://www.example.com/test-site\n"));
    assert!(!text.contains("PRIVATE KEY") && !stderr(&out).contains("PRIVATE KEY"));
    assert!(env.thing_names().contains(&"ThingPrefix_7".to_owned()));

    let key = store_file(&out_dir, "private-key-");
    let cert = store_file(&out_dir, "certificate-");
    assert_eq!(perm_bits(&out_dir), 0o700);
    assert_eq!(perm_bits(&key), 0o600);
    let key_pem = fs::read_to_string(&key).unwrap();
    assert!(key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    assert!(fs::read_to_string(&cert)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    // The key, the certificate and identity.json; no temporary files left behind.
    assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 3);

    // A second run reuses the identity, proving it by connecting, without provisioning.
    let things_before = env.thing_names().len();
    let again = run(&exe, &args);
    succeeded(&again);
    let text = stdout(&again);
    assert!(text.contains("Thing: ThingPrefix_7\n"));
    assert!(text.contains("Reused the stored identity, verified by connecting"));
    assert!(!text.contains("creating"));
    assert_eq!(fs::read_to_string(&key).unwrap(), key_pem);
    assert_eq!(env.thing_names().len(), things_before);

    // --force provisions anew (an EC key made on the device by default) and replaces it.
    args.truncate(args.len() - 2);
    args.push("--force".into());
    let forced = run(&exe, &args);
    succeeded(&forced);
    let key = store_file(&out_dir, "private-key-");
    let new_key = fs::read_to_string(&key).unwrap();
    assert_ne!(new_key, key_pem);
    assert!(new_key.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(perm_bits(&key), 0o600);
    assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 3);
}

#[test]
fn demo_csr_flow_over_mqtt311() {
    let env = Env::start();
    let exe = demo();
    let work = tempfile::tempdir().unwrap();
    let csr = work.path().join("device.csr");
    fs::write(&csr, CSR_PEM).unwrap();
    let mut args = env.demo_template_args("8");
    args.extend(strings(&[
        "--csr",
        csr.to_str().unwrap(),
        "--mqtt_version",
        "3",
        "--verbosity",
        "Info",
    ]));
    let out = run(&exe, &args);
    succeeded(&out);
    assert!(stdout(&out).contains("Thing registered: ThingPrefix_8\n"));
    // --verbosity Info forwards the library's log lines to stderr.
    assert!(stderr(&out).contains("[fleetprov INFO] connected to localhost"));
    assert!(env.thing_names().contains(&"ThingPrefix_8".to_owned()));
}

#[test]
fn minimal_example_provisions() {
    static MINIMAL: OnceLock<PathBuf> = OnceLock::new();
    let exe = built(
        &MINIMAL,
        "minimal",
        root().join("c_examples").join("minimal.c"),
    );
    let env = Env::start();
    let mut args = env.conn_args();
    args.push("21".into());
    let out = run(&exe, &args);
    succeeded(&out);
    let text = stdout(&out);
    assert!(text.starts_with("certificate "), "{text}");
    assert!(text.ends_with("registered ThingPrefix_21\n"), "{text}");
    assert!(!text.contains("PRIVATE KEY") && !stderr(&out).contains("PRIVATE KEY"));
    assert!(env.thing_names().contains(&"ThingPrefix_21".to_owned()));
}

/// Runs the demo expecting failure `code` with a single stderr line containing `reason`.
fn expect_demo_failure(exe: &Path, args: &[String], code: i32, reason: &str) {
    let out = run(exe, args);
    assert_eq!(out.status.code(), Some(code), "expected exit {code}");
    let err = stderr(&out);
    assert!(err.contains(reason), "stderr lacks {reason:?}");
    if code != 2 {
        assert_eq!(err.lines().count(), 1, "one-line reason expected");
    }
}

#[test]
fn demo_exit_codes() {
    let env = Env::start();
    let exe = demo();
    let base = env.demo_args();
    let keys = tempfile::tempdir().unwrap();
    let runs = std::cell::Cell::new(0);
    // The keys flow: each run its own --identity_file.
    let with = |extra: &[&str]| -> Vec<String> {
        let mut a = base.clone();
        runs.set(runs.get() + 1);
        a.push("--identity_file".into());
        a.push(
            keys.path()
                .join(format!("identity-{}.pem", runs.get()))
                .display()
                .to_string(),
        );
        a.extend(strings(extra));
        a
    };
    let params = r#"{"SerialNumber":"9","DeviceLocation":"Seattle"}"#;

    // 2: usage.
    expect_demo_failure(&exe, &[], 2, "required");
    expect_demo_failure(
        &exe,
        &with(&["--template_name", "a/b"]),
        2,
        "--template_name",
    );
    expect_demo_failure(
        &exe,
        &with(&[
            "--template_name",
            "FleetTemplate",
            "--template_parameters",
            "[1]",
        ]),
        2,
        "--template_parameters",
    );
    expect_demo_failure(
        &exe,
        &with(&["--template_name", "FleetTemplate", "--mqtt_version", "4"]),
        2,
        "--mqtt_version",
    );
    // 3: the connection fails (nothing listens on the port).
    let closed_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    };
    let mut closed = with(&["--template_name", "FleetTemplate"]);
    let port_at = closed.iter().position(|a| a == "--port").unwrap() + 1;
    closed[port_at] = closed_port;
    expect_demo_failure(&exe, &closed, 3, "connection to localhost failed");
    // 4: rejected, with AWS's fields.
    expect_demo_failure(
        &exe,
        &with(&[
            "--template_name",
            "NoSuchTemplate",
            "--template_parameters",
            params,
        ]),
        4,
        "statusCode=404 errorCode=ResourceNotFound",
    );
    expect_demo_failure(
        &exe,
        &with(&["--template_name", "FleetTemplate"]),
        4,
        "statusCode=400 errorCode=InvalidParameters",
    );
    // 6: another error (an unreadable certificate file).
    let mut missing = with(&["--template_name", "FleetTemplate"]);
    let cert_at = missing.iter().position(|a| a == "--cert").unwrap() + 1;
    missing[cert_at] = "/nonexistent/claim.pem".into();
    expect_demo_failure(&exe, &missing, 6, "cannot read");
    // 7: the output directory cannot be used (it is a file).
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("file");
    fs::write(&file, "x").unwrap();
    let mut store = base.clone();
    store.extend(strings(&[
        "--template_name",
        "FleetTemplate",
        "--output_dir",
        file.to_str().unwrap(),
    ]));
    expect_demo_failure(&exe, &store, 7, "not a directory");
}

#[test]
fn demo_times_out_when_the_service_never_answers() {
    let env = Env::with_fault(Fault::Silent);
    let exe = demo();
    let mut args = env.demo_args();
    // The demo's timeout also bounds connecting, which must not be what times out: TLS under
    // valgrind on a loaded machine takes seconds.
    let timeout_ms = match Mode::current() {
        Mode::Plain => 500,
        Mode::Asan => 2_000,
        Mode::Valgrind => 10_000,
    };
    let keys = tempfile::tempdir().unwrap();
    args.extend(strings(&[
        "--template_name",
        "FleetTemplate",
        "--timeout_ms",
    ]));
    args.push(timeout_ms.to_string());
    args.push("--identity_file".into());
    args.push(keys.path().join("identity.pem").display().to_string());
    expect_demo_failure(&exe, &args, 5, "timed out");
}

/// The keys flow without --output_dir: refused without a place for the key (nothing sent);
/// with --identity_file the certificate and key are written there, private, before
/// RegisterThing; never over an existing file, and then RegisterThing is not sent.
#[test]
fn demo_keys_flow_keeps_the_key_where_the_user_says() {
    let env = Env::start();
    let exe = demo();
    let work = tempfile::tempdir().unwrap();
    let args = env.demo_template_args("41");
    expect_demo_failure(&exe, &args, 2, "needs --identity_file FILE");
    assert_eq!(env.emulator.throttle().claim_connections(), 0);

    let file = work.path().join("identity.pem");
    let mut keys = args.clone();
    keys.push("--identity_file".into());
    keys.push(file.display().to_string());
    let out = run(&exe, &keys);
    succeeded(&out);
    assert!(stdout(&out).contains("saved to"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("PRIVATE KEY") && !stderr(&out).contains("PRIVATE KEY"));
    assert_eq!(perm_bits(&file), 0o600);
    let pem = fs::read_to_string(&file).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----") && pem.contains("PRIVATE KEY-----"));
    assert!(env.thing_names().contains(&"ThingPrefix_41".to_owned()));

    // The file exists: nothing overwritten, RegisterThing not sent.
    let things = env.thing_names().len();
    let serial = keys
        .iter()
        .position(|a| a.contains(r#""SerialNumber":"41""#))
        .unwrap();
    keys[serial] = r#"{"SerialNumber":"42","DeviceLocation":"Seattle"}"#.into();
    expect_demo_failure(&exe, &keys, 7, "RegisterThing not sent");
    assert_eq!(fs::read_to_string(&file).unwrap(), pem);
    assert_eq!(env.thing_names().len(), things);

    // Not with the flows that keep the key otherwise.
    let mut store = keys.clone();
    store.extend(strings(&["--output_dir", work.path().to_str().unwrap()]));
    expect_demo_failure(&exe, &store, 2, "--identity_file is for the keys flow only");
}

/// A pending identity (registered by a run that could not verify it) is verified and
/// committed by the next run; one given up for a new identity (--force) is reported by the
/// progress step and the result's list.
#[test]
fn demo_verifies_a_pending_identity_and_reports_one_given_up() {
    let env = Env::start();
    let exe = demo();
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("s");
    let mut args = env.demo_template_args("51");
    args.extend(strings(&["--output_dir"]));
    args.push(store.display().to_string());
    let out = run(&exe, &args);
    succeeded(&out);
    let id = |text: &str| {
        let line = text
            .lines()
            .find(|l| l.starts_with("Certificate id: "))
            .unwrap();
        line["Certificate id: ".len()..].to_owned()
    };
    let first = id(&stdout(&out));
    let (committed, pending) = (store.join("identity.json"), store.join("pending.json"));
    // As a run killed while verifying leaves it.
    fs::rename(&committed, &pending).unwrap();
    let claims = env.emulator.throttle().claim_connections();
    let out = run(&exe, &args);
    succeeded(&out);
    assert_eq!(id(&stdout(&out)), first);
    assert_eq!(env.emulator.throttle().claim_connections(), claims);
    assert!(committed.is_file() && !pending.exists());

    fs::rename(&committed, &pending).unwrap();
    args.push("--force".into());
    let out = run(&exe, &args);
    succeeded(&out);
    let text = stdout(&out);
    assert_ne!(id(&text), first);
    assert!(
        text.contains(&format!("certificate abandoned ({first})")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "Abandoned certificate (not kept, may be Active): {first}"
        )),
        "{text}"
    );
    assert!(!pending.exists());
}

/// A key type this library was built without is named, at the default --verbosity.
#[test]
fn demo_names_a_missing_build_feature() {
    if cfg!(feature = "rsa-keygen") {
        return;
    }
    let env = Env::start();
    let exe = demo();
    let work = tempfile::tempdir().unwrap();
    let mut args = env.demo_args();
    args.extend(strings(&[
        "--template_name",
        "FleetTemplate",
        "--output_dir",
    ]));
    args.push(work.path().join("s").display().to_string());
    args.extend(strings(&["--key_type", "rsa-2048"]));
    expect_demo_failure(&exe, &args, 2, "cargo feature rsa-keygen");
    assert_eq!(env.emulator.throttle().claim_connections(), 0);
}

/// The demo's usage lines for mistakes in the template arguments and the endpoint: each
/// mistake gets its own reason, from the library's checks, before anything is connected.
#[test]
fn demo_names_each_template_and_endpoint_mistake() {
    let exe = demo();
    let base = strings(&["--cert", "claim.pem", "--key", "claim-key.pem"]);
    let long_name = "T".repeat(37);
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--endpoint", "h", "--template_name", "a/b"],
            &["--template_name a/b: template name contains '/'"],
        ),
        (
            &["--endpoint", "h", "--template_name", &long_name],
            &["--template_name", "37 characters long"],
        ),
        (
            &[
                "--endpoint",
                "h",
                "--template_name",
                "FleetTemplate",
                "--template_parameters",
                "{\"SerialNumber\":",
            ],
            &["--template_parameters: template parameters are not valid JSON"],
        ),
        (
            &[
                "--endpoint",
                "h",
                "--template_name",
                "FleetTemplate",
                "--template_parameters",
                "[\"1\"]",
            ],
            &["--template_parameters: template parameters must be a JSON object"],
        ),
        (
            &[
                "--endpoint",
                "h",
                "--template_name",
                "FleetTemplate",
                "--template_parameters",
                "{\"SerialNumber\":9}",
            ],
            &["--template_parameters: template parameter \"SerialNumber\" must be a string, not a number"],
        ),
        (
            &["--endpoint", "https://h.example", "--template_name", "T"],
            &["--endpoint https://h.example: drop the https:// scheme", "host name"],
        ),
        (
            &["--endpoint", "mqtts://h.example:8883", "--template_name", "T"],
            &["drop the mqtts:// scheme"],
        ),
        (
            &["--endpoint", "h.example:8883", "--template_name", "T"],
            &["--endpoint h.example:8883: drop the :8883", "port"],
        ),
        (
            &["--endpoint", "h.example/mqtt", "--template_name", "T"],
            &["--endpoint h.example/mqtt: drop the /mqtt"],
        ),
        (
            &["--endpoint", "h", "--template_name", "T", "--rotate_before", "60"],
            &["--rotate_before and --rotation_template need --output_dir"],
        ),
    ];
    for (args, needles) in cases {
        let mut all = base.clone();
        all.extend(strings(args));
        let out = run(&exe, &all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert_eq!(
            err.lines().count(),
            1,
            "{args:?}: one line expected:\n{err}"
        );
        for needle in *needles {
            assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
        }
    }
}

/// Demo flags for a scripted broker on `port` (tests/hostile/broker.rs), with its CA and a
/// client certificate of no consequence (the scripted broker asks for none) written to `dir`.
fn scripted_broker_args(port: u16, dir: &Path) -> Vec<String> {
    let client = rcgen::generate_simple_self_signed(vec!["device".to_owned()]).unwrap();
    let files = [
        ("ca.pem", hostile_broker::ca_pem().to_owned()),
        ("cert.pem", client.cert.pem()),
        ("key.pem", client.key_pair.serialize_pem()),
    ];
    for (name, pem) in &files {
        fs::write(dir.join(name), pem).unwrap();
    }
    let path = |name: &str| dir.join(name).display().to_string();
    let mut args = strings(&["--endpoint", "localhost", "--port"]);
    args.push(port.to_string());
    for (flag, name) in [
        ("--ca_file", "ca.pem"),
        ("--cert", "cert.pem"),
        ("--key", "key.pem"),
    ] {
        args.push(flag.to_owned());
        args.push(path(name));
    }
    args.extend(strings(&["--template_name", "FleetTemplate"]));
    // The keys flow: a new file for each run.
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    args.push("--identity_file".into());
    args.push(path(&format!("identity-{n}.pem")));
    args
}

/// The broker answers CreateKeysAndCertificate and ends the connection in the same write:
/// RegisterThing then starts on a connection already gone, `FP_ERR_NOT_CONNECTED` ("the
/// connection was lost"), and the demo counts that as a connection failure, exit 3, as it does
/// `FP_ERR_DISCONNECTED`. Whether the library sees the end before the demo starts RegisterThing
/// is a race (about one round in three here), hence twelve rounds, each against a new broker.
#[test]
fn demo_exits_3_when_the_connection_is_gone_before_an_operation() {
    use hostile_broker::{connack_ok, create_keys_accepted, disconnect_v5, puback, publish0};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let exe = demo();
    let dir = tempfile::tempdir().unwrap();
    for round in 0..12 {
        let broker = rt.block_on(hostile_broker::Broker::start(|mut c| async move {
            let (topic, pkid) = c.up_to_request(&connack_ok(true)).await?;
            let mut out = puback(true, pkid, None);
            out.extend(publish0(
                true,
                &format!("{topic}/accepted"),
                &create_keys_accepted(),
            ));
            // 0x8b: server shutting down.
            out.extend(disconnect_v5(0x8b, &[0]));
            c.send(&out).await
        }));
        let out = run(&exe, &scripted_broker_args(broker.port, dir.path()));
        let err = stderr(&out);
        assert!(
            stdout(&out).contains("Certificate created"),
            "round {round}"
        );
        assert_eq!(out.status.code(), Some(3), "round {round}: {err}");
        assert!(
            err.starts_with("fleet_provisioning: RegisterThing failed, connection lost: "),
            "round {round}: {err}"
        );
        rt.block_on(broker.join());
    }
}

/// A broker whose Maximum Packet Size is below the CSR's PUBLISH: with --output_dir the demo
/// reports the broker's limit (the broker refused the publish, exit 6), not a usage error.
#[test]
fn demo_reports_a_broker_packet_limit_as_the_brokers() {
    const LIMIT: u32 = 400;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let exe = demo();
    let dir = tempfile::tempdir().unwrap();
    let broker = rt.block_on(hostile_broker::broker_with_maximum_packet_size(LIMIT));
    let mut args = scripted_broker_args(broker.port, dir.path());
    // The store flow: no --identity_file.
    args.truncate(args.len() - 2);
    let store = dir.path().join("store");
    args.extend(strings(&["--max_attempts", "1", "--output_dir"]));
    args.push(store.display().to_string());
    let out = run(&exe, &args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(6), "{err}");
    assert!(
        err.contains("the broker refused the publish") && err.contains("Maximum Packet Size"),
        "{err}"
    );
    assert!(err.contains(&LIMIT.to_string()), "{err}");
    assert!(
        !err.contains("usage") && !err.contains("invalid argument"),
        "{err}"
    );
    let largest = rt.block_on(broker.join());
    assert!(
        largest <= LIMIT as usize,
        "a {largest}-byte packet was sent"
    );
}
