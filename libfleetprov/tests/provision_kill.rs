//! A process running fp_provision() killed with SIGKILL after create, after register and in
//! the middle of saving leaves no half identity, and the next run completes. The program
//! (tests/c/provision_kill.c) kills itself from its progress callback at the chosen step.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fleetprov_testkit::cprog::{c_tests_dir, CProgram};
use fleetprov_testkit::env::Env;
use fleetprov_testkit::file_names;

fn build_program(out: &Path) -> PathBuf {
    CProgram::new("provision_kill", out)
        .source(c_tests_dir().join("provision_kill.c"))
        .build()
}

fn run(exe: &Path, env: &Env, store: &Path, serial: &str, kill_at: &str) -> Output {
    command(exe, env, store, serial, kill_at).output().unwrap()
}

fn command(exe: &Path, env: &Env, store: &Path, serial: &str, kill_at: &str) -> Command {
    let mut c = Command::new(exe);
    c.arg(env.emu.port().to_string())
        .arg(env.emu.ca_path())
        .arg(env.emu.claim_cert_path())
        .arg(env.emu.claim_key_path())
        .arg(store)
        .arg(serial)
        .arg(kill_at);
    c
}

/// Runs with rotation on every run (the `rotate` argument).
fn run_rotating(exe: &Path, env: &Env, store: &Path, serial: &str, kill_at: &str) -> Output {
    command(exe, env, store, serial, kill_at)
        .arg("rotate")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    format!(
        "{:?}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_any_step_leaves_no_half_identity_and_the_next_run_completes() {
    let env = Env::start().await;
    let exe = build_program(env.dir.path());
    for (i, step) in ["registering", "saving", "verifying"]
        .into_iter()
        .enumerate()
    {
        let store = env.dir.path().join(format!("store-{step}"));
        let serial = format!("kill-{i}");
        let killed = run(&exe, &env, &store, &serial, step);
        assert_eq!(
            killed.status.signal(),
            Some(9),
            "{step}: {}",
            stdout(&killed)
        );
        // Never a committed identity; after "verifying" the key and certificate are on disk,
        // registered but not verified: pending.
        let left = file_names(&store);
        assert!(
            !left.contains(&"identity.json".to_owned()),
            "{step}: {left:?}"
        );
        let pending = step == "verifying";
        if pending {
            assert!(
                left.iter().any(|n| n.starts_with("private-key-"))
                    && left.contains(&"pending.json".to_owned()),
                "{left:?}"
            );
        }
        let claims = env.emu.throttle().claim_connections();
        let next = run(&exe, &env, &store, &serial, "none");
        let out = stdout(&next);
        assert!(next.status.success(), "{step}: {out}");
        if pending {
            // The pending identity is verified and committed: no second certificate.
            assert!(out.contains("reused=1"), "{out}");
            assert_eq!(env.emu.throttle().claim_connections(), claims);
        } else if step == "registering" {
            // Killed before RegisterThing was sent: the next run sends it with the staged
            // certificate's token, and asks for no other certificate.
            assert!(out.contains("reused=0"), "{out}");
            assert!(!out.contains("step creating"), "{out}");
            assert!(!out.contains("step abandoned"), "{out}");
        } else {
            // Killed after RegisterThing went through: its token is spent, so the next run
            // reports that certificate and provisions another.
            assert!(out.contains("reused=0"), "{out}");
            assert!(out.contains("step abandoned attempt=1"), "{step}: {out}");
        }
        // Exactly one identity: the leftovers of the killed run are gone.
        let files = file_names(&store);
        assert_eq!(files.len(), 3, "{files:?}");
        assert_eq!(
            files
                .iter()
                .filter(|n| n.starts_with("private-key-"))
                .count(),
            1
        );
        let claims = env.emu.throttle().claim_connections();
        let again = run(&exe, &env, &store, &serial, "none");
        assert_eq!(
            env.emu.throttle().claim_connections(),
            claims,
            "reuse made a claim connection"
        );
        let out = stdout(&again);
        assert!(again.status.success() && out.contains("reused=1"), "{out}");
        assert!(!out.contains("step connecting attempt=1 delay_ms=0 detail=claim"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::start().await;
    let exe = build_program(env.dir.path());
    let store = env.dir.path().join("store");
    let ok = run(&exe, &env, &store, "perm-1", "none");
    let out = stdout(&ok);
    assert!(ok.status.success(), "{out}");
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("key="))
        .unwrap()
        .to_owned();
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::fs::metadata(&store).unwrap().permissions().mode();
    assert_eq!(dir_mode & 0o777, 0o700);
    // The key itself is never printed.
    assert!(!out.contains("PRIVATE KEY"));
}

/// The certificate id `identity.json` names, and its files.
fn committed(store: &Path) -> (String, Vec<String>) {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("identity.json")).unwrap()).unwrap();
    let files = ["certificateFile", "privateKeyFile"]
        .iter()
        .map(|k| m[*k].as_str().unwrap().to_owned())
        .collect();
    (m["certificateId"].as_str().unwrap().to_owned(), files)
}

fn line<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_any_step_of_a_rotation_leaves_the_old_identity_and_the_next_run_rotates() {
    let emulator = Path::new(env!("CARGO_MANIFEST_DIR")).join("../emulator/templates");
    let template = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(emulator.join(format!("{name}.json"))).unwrap())
            .unwrap()
    };
    let templates = [
        ("FleetTemplate", template("FleetTemplate")),
        ("FleetRotationTemplate", template("FleetRotationTemplate")),
    ];
    // Ten-minute certificates; every run rotates (the window is the whole lifetime).
    let env = Env::start_serving(&templates, |cfg, _| {
        cfg.device_certificates.validity = Some(std::time::Duration::from_secs(600));
    })
    .await;
    let exe = build_program(env.dir.path());
    let store = env.dir.path().join("store");
    let first = run(&exe, &env, &store, "rot-kill", "none");
    assert!(first.status.success(), "{}", stdout(&first));
    assert_eq!(env.emu.throttle().claim_connections(), 1);
    for step in [
        "rotating",
        "connecting",
        "creating",
        "registering",
        "saving",
        "verifying",
    ] {
        let (before, files) = committed(&store);
        let killed = run_rotating(&exe, &env, &store, "rot-kill", step);
        let out = stdout(&killed);
        assert_eq!(killed.status.signal(), Some(9), "{step}: {out}");
        assert!(out.contains("step rotating"), "{step}: {out}");
        // The old identity, whole and still committed.
        assert_eq!(committed(&store), (before.clone(), files.clone()), "{step}");
        for f in &files {
            assert!(store.join(f).is_file(), "{step}: {f} is gone");
        }
        let next = run_rotating(&exe, &env, &store, "rot-kill", "none");
        let out = stdout(&next);
        assert!(next.status.success(), "{step}: {out}");
        assert!(out.contains("reused=0 rotated=1"), "{step}: {out}");
        assert_eq!(line(&out, "previous="), before, "{step}");
        let (after, new_files) = committed(&store);
        assert_eq!(line(&out, "certificate="), after);
        assert_ne!(after, before);
        // Only the new identity's files are left.
        let mut expected = vec!["identity.json".to_owned()];
        expected.extend(new_files);
        expected.sort();
        assert_eq!(file_names(&store), expected, "{step}");
        let thing = env
            .emu
            .service()
            .registry()
            .thing(line(&out, "thing=").split(' ').next().unwrap())
            .unwrap();
        assert!(thing.certificate_ids.contains(&after), "{step}");
    }
    // Rotations, killed or not, never used the claim.
    assert_eq!(env.emu.throttle().claim_connections(), 1);
}
