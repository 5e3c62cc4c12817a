//! The C API from C: the programs under `tests/c/` and the demo under `c_examples/` are
//! compiled with the `cc` crate, linked against the `libfleetprov.so` cargo built for this test
//! run, and run against the emulator over mutual TLS on loopback. Their exit codes and output
//! are asserted. Also checks the header itself: it compiles as C99 and C++, its version macros
//! match Cargo.toml, and the committed copy equals a fresh generation.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use fleetprov_emulator::{Emulator, EmulatorConfig, EmulatorHandle, Fault};

const TARGET: &str = env!("FLEETPROV_BUILD_TARGET");
const HOST: &str = env!("FLEETPROV_BUILD_HOST");

/// An EC P-256 certificate signing request (its key was thrown away: only the service's
/// signature over the public key matters here).
const CSR_PEM: &str = "-----BEGIN CERTIFICATE REQUEST-----
MIHUMH0CAQAwGzEZMBcGA1UEAwwQZmxlZXRwcm92LWMtdGVzdDBZMBMGByqGSM49
AgEGCCqGSM49AwEHA0IABACAY7h3p4d7Uh+nfeUmCEVW3rxF83h2ADtjC4obDqPC
SyqiAgvXezTvjbs0ZmEDG/6I1VwkxrKYpzEaUWfakUigADAKBggqhkjOPQQDAgNH
ADBEAiA58EUnHiuUy88he3bLsoUTpnMZx9I6pQaCgvixSs3M9AIgHaX7SkGt3WAQ
5ST9/qISA+geLhDrY0xkrgK6gbbp/1I=
-----END CERTIFICATE REQUEST-----
";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory of the cdylib cargo built alongside this test binary
/// (`target/<profile>/deps/`, next to the test executable).
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    let candidates = [deps.clone(), deps.parent().unwrap().to_path_buf()];
    for dir in candidates {
        if dir.join("libfleetprov.so").is_file() {
            return dir;
        }
    }
    panic!("libfleetprov.so not found next to {}", exe.display());
}

enum Lang {
    C,
    Cxx,
}

/// Compiles `sources` into an executable linked to libfleetprov, with warnings as errors.
fn build_program(name: &str, sources: &[PathBuf], lang: Lang) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("c_api")
        .join(name);
    fs::create_dir_all(&out).unwrap();
    let mut build = cc::Build::new();
    build
        .target(TARGET)
        .host(HOST)
        .opt_level(0)
        .debug(true)
        .out_dir(&out)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .include(root().join("include"))
        .include(root().join("tests").join("c"))
        .flag("-Wall")
        .flag("-Wextra")
        .flag("-pedantic")
        .flag("-Werror");
    match &lang {
        Lang::C => {
            build.std("c11").define("_POSIX_C_SOURCE", "200809L");
        }
        Lang::Cxx => {
            build.cpp(true).flag("-x").flag("c++");
        }
    }
    for s in sources {
        build.file(s);
    }
    let objects = build.compile_intermediates();
    let exe = out.join(name);
    let lib = lib_dir();
    // Link with a clean driver: the compile flags (e.g. `-x c++`) would apply to the objects.
    let status = cc::Build::new()
        .target(TARGET)
        .host(HOST)
        .opt_level(0)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .cpp(matches!(lang, Lang::Cxx))
        .get_compiler()
        .to_command()
        .args(&objects)
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", lib.display()))
        .arg("-lfleetprov")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-pthread")
        .status()
        .unwrap();
    assert!(status.success(), "linking {name} failed");
    exe
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
    let cell = match name {
        "happy_path" => &HAPPY,
        "lifecycle" => &LIFECYCLE,
        "bad_input" => &BAD_INPUT,
        other => panic!("unknown C test {other}"),
    };
    built(
        cell,
        name,
        root().join("tests").join("c").join(format!("{name}.c")),
    )
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
/// instead of stalling it.
fn run(exe: &Path, args: &[String]) -> Output {
    let out = Command::new("timeout")
        .args(["-k", "5", "120"])
        .arg(exe)
        .args(args)
        .output()
        .unwrap();
    eprintln!(
        "$ {} {}\n--- stdout\n{}--- stderr\n{}--- status {:?}",
        exe.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code()
    );
    out
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

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------- the header ----------

#[test]
fn header_compiles_alone_as_c99_and_cpp() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("c_api")
        .join("header");
    fs::create_dir_all(&dir).unwrap();
    let src = dir.join("header_only.c");
    fs::write(
        &src,
        "#include \"fleetprov.h\"\nint header_only(void);\nint header_only(void) { return FP_OK; }\n",
    )
    .unwrap();
    for (lang, std, sub) in [("c", "c99", "c99"), ("c++", "c++11", "cxx")] {
        let out = dir.join(sub);
        fs::create_dir_all(&out).unwrap();
        let mut b = cc::Build::new();
        b.target(TARGET)
            .host(HOST)
            .opt_level(0)
            .out_dir(&out)
            .cargo_metadata(false)
            .cargo_warnings(false)
            .cpp(lang == "c++")
            .include(root().join("include"))
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
    let header = fs::read_to_string(root().join("include").join("fleetprov.h")).unwrap();
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
    // build.rs generates into OUT_DIR on every run of the script and rewrites include/ only
    // when the content changed; a hand edit or a stale commit shows up as a difference.
    let fresh = fs::read_to_string(concat!(env!("OUT_DIR"), "/fleetprov.h")).unwrap();
    let committed = fs::read_to_string(root().join("include").join("fleetprov.h")).unwrap();
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
    for name in ["happy_path", "lifecycle", "bad_input"] {
        build_program(
            &format!("{name}_cxx"),
            &[root().join("tests").join("c").join(format!("{name}.c"))],
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
    assert_eq!(out.status.code(), Some(0));
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
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for line in [
        "not connected: ok",
        "free cancels pending: ok",
        "free waits for running callback: ok",
        "failed connection: ok",
        "free inside own callback: ok",
        "lifecycle: ok",
    ] {
        assert!(text.contains(line), "missing {line:?}");
    }
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
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    for line in [
        "missing certificate file: I/O error",
        "missing key file: I/O error",
        "missing CA file: I/O error",
        "certificate not PEM: TLS error",
        "key not PEM: TLS error",
        "mismatched key: TLS error",
        "wrong CA: TLS error",
        "bad_input: ok",
    ] {
        assert!(text.contains(line), "missing {line:?}");
    }
    // Refused operations never reached the service.
    assert!(env.thing_names().is_empty());
}

// ---------- the demo ----------

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn demo_keys_flow_saves_the_identity_and_never_prints_the_key() {
    let env = Env::start();
    let exe = demo();
    let work = tempfile::tempdir().unwrap();
    let out_dir = work.path().join("identity");
    let mut args = env.demo_args();
    args.extend(strings(&[
        "--template_name",
        "FleetTemplate",
        "--template_parameters",
        r#"{"SerialNumber":"7","DeviceLocation":"Seattle"}"#,
        "--output_dir",
        out_dir.to_str().unwrap(),
    ]));
    let out = run(&exe, &args);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(text.contains("Thing registered: ThingPrefix_7\n"));
    assert!(text.contains("  LocationUrl = https://example.aws\n"));
    assert!(text.contains("  FallbackUrl = https://www.example.com/test-site\n"));
    assert!(!text.contains("PRIVATE KEY") && !stderr(&out).contains("PRIVATE KEY"));
    assert!(env.thing_names().contains(&"ThingPrefix_7".to_owned()));

    let key = out_dir.join("private.key");
    let cert = out_dir.join("certificate.pem");
    assert_eq!(mode(&out_dir), 0o700);
    assert_eq!(mode(&key), 0o600);
    let key_pem = fs::read_to_string(&key).unwrap();
    assert!(key_pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    assert!(fs::read_to_string(&cert)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
    // No temporary files left behind.
    assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 2);

    // A second run refuses to overwrite the identity, before provisioning anything.
    let things_before = env.thing_names().len();
    let again = run(&exe, &args);
    assert_eq!(again.status.code(), Some(7));
    assert_eq!(stderr(&again).lines().count(), 1);
    assert_eq!(fs::read_to_string(&key).unwrap(), key_pem);
    assert_eq!(env.thing_names().len(), things_before);

    // --force replaces it.
    args.push("--force".into());
    let forced = run(&exe, &args);
    assert_eq!(forced.status.code(), Some(0));
    assert_ne!(fs::read_to_string(&key).unwrap(), key_pem);
    assert_eq!(mode(&key), 0o600);
}

#[test]
fn demo_csr_flow_over_mqtt311() {
    let env = Env::start();
    let exe = demo();
    let work = tempfile::tempdir().unwrap();
    let csr = work.path().join("device.csr");
    fs::write(&csr, CSR_PEM).unwrap();
    let mut args = env.demo_args();
    args.extend(strings(&[
        "--template_name",
        "FleetTemplate",
        "--template_parameters",
        r#"{"SerialNumber":"8","DeviceLocation":"Seattle"}"#,
        "--csr",
        csr.to_str().unwrap(),
        "--mqtt_version",
        "3",
        "--verbosity",
        "Info",
    ]));
    let out = run(&exe, &args);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("Thing registered: ThingPrefix_8\n"));
    // --verbosity Info forwards the library's log lines to stderr.
    assert!(stderr(&out).contains("[fleetprov INFO] connected to localhost"));
    assert!(env.thing_names().contains(&"ThingPrefix_8".to_owned()));
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
    let with = |extra: &[&str]| -> Vec<String> {
        let mut a = base.clone();
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
    expect_demo_failure(
        &exe,
        &with(&[
            "--template_name",
            "FleetTemplate",
            "--output_dir",
            file.to_str().unwrap(),
        ]),
        7,
        "not a directory",
    );
}

#[test]
fn demo_times_out_when_the_service_never_answers() {
    let env = Env::with_fault(Fault::Silent);
    let exe = demo();
    let mut args = env.demo_args();
    args.extend(strings(&[
        "--template_name",
        "FleetTemplate",
        "--timeout_ms",
        "500",
    ]));
    expect_demo_failure(&exe, &args, 5, "timed out");
}
