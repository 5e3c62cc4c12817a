//! C programs built against the C library of this build: where the library and the header are,
//! and one recipe that compiles (C11 or C++, warnings as errors) and links a program to it.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The target triple this build is for.
pub const TARGET: &str = env!("FLEETPROV_BUILD_TARGET");
/// The triple of the build machine.
pub const HOST: &str = env!("FLEETPROV_BUILD_HOST");

/// The checkout's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the test kit sits in the workspace")
        .to_path_buf()
}

/// The directory of the C library crate (`libfleetprov/`).
pub fn lib_crate() -> PathBuf {
    root().join("libfleetprov")
}

/// The directory holding `fleetprov.h`.
pub fn include_dir() -> PathBuf {
    lib_crate().join("include")
}

/// The directory of the C test programs and their `test_util.h`.
pub fn c_tests_dir() -> PathBuf {
    lib_crate().join("tests").join("c")
}

/// The directory of the libfleetprov.so of this build, with the `libfleetprov.so.0` link its
/// SONAME needs at run time (cargo makes only `libfleetprov.so`; the link is relative, so it
/// always names the library of this build).
///
/// The library crate makes no rlib, so no test target depends on it and `cargo test` alone
/// would neither build it nor rebuild it after a change: the first call in each test process
/// runs `cargo build -p fleetprov-ffi` for the profile and target directory of the running
/// test (a no-op when the library is up to date), so C programs never test a stale library.
pub fn lib_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        // target/<profile>/deps/<test>: the library goes to target/<profile>/.
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .unwrap_or_else(|| panic!("{} is not in a cargo target directory", exe.display()))
            .to_path_buf();
        build_library(&dir);
        let link = dir.join("libfleetprov.so.0");
        let target = Path::new("libfleetprov.so");
        if !std::fs::read_link(&link).is_ok_and(|t| t == target) {
            let _ = std::fs::remove_file(&link);
            // Another test binary may make the same link at the same time: either one will do.
            match std::os::unix::fs::symlink(target, &link) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => panic!("{}: {e}", link.display()),
            }
        }
        dir
    })
    .clone()
}

/// Builds the C library into `dir` (`target/<profile>`) with the cargo that built the tests.
fn build_library(dir: &Path) {
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
    let target_dir = dir.parent().expect("target/<profile> has a parent");
    let mut cargo = std::process::Command::new(env!("CARGO"));
    cargo
        .current_dir(root())
        .args(["build", "--quiet", "-p", "fleetprov-ffi", "--target-dir"])
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cargo.arg("--release");
        }
        other => {
            cargo.args(["--profile", other]);
        }
    }
    let status = cargo
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", env!("CARGO")));
    assert!(status.success(), "cargo build -p fleetprov-ffi failed");
    assert!(
        dir.join("libfleetprov.so").is_file(),
        "libfleetprov.so not in {} after building it",
        dir.display()
    );
}

/// A `cc` build for this target with cargo's side channels off, at -O0.
pub fn cc_build() -> cc::Build {
    let mut b = cc::Build::new();
    b.target(TARGET)
        .host(HOST)
        .opt_level(0)
        .cargo_metadata(false)
        .cargo_warnings(false);
    b
}

/// One C (or C++) program linked to libfleetprov, built into a directory of its own.
///
/// Nextest runs each test as a process of its own and several build the same program, so each
/// build compiles and links in a directory named after its process and then renames the result
/// into place: a test running the program never finds it half written, and no build links
/// objects another is rewriting.
pub struct CProgram {
    name: String,
    out: PathBuf,
    sources: Vec<PathBuf>,
    cxx: bool,
    flags: Vec<String>,
    libs: Vec<String>,
}

impl CProgram {
    /// A program called `name`, put into the directory `out`.
    pub fn new(name: &str, out: &Path) -> CProgram {
        CProgram {
            name: name.to_owned(),
            out: out.to_path_buf(),
            sources: Vec::new(),
            cxx: false,
            flags: Vec::new(),
            libs: Vec::new(),
        }
    }

    pub fn source(mut self, path: impl Into<PathBuf>) -> CProgram {
        self.sources.push(path.into());
        self
    }

    pub fn sources(mut self, paths: &[PathBuf]) -> CProgram {
        self.sources.extend(paths.iter().cloned());
        self
    }

    /// Compiles the sources as C++ rather than C11.
    pub fn cxx(mut self, cxx: bool) -> CProgram {
        self.cxx = cxx;
        self
    }

    /// Flags for both the compiler and the link (a sanitizer's, say).
    pub fn flags(mut self, flags: &[&str]) -> CProgram {
        self.flags.extend(flags.iter().map(|f| f.to_string()));
        self
    }

    /// Another library to link, by its `-l` name.
    pub fn lib(mut self, name: &str) -> CProgram {
        self.libs.push(name.to_owned());
        self
    }

    /// Compiles and links; returns the program's path. Panics with the program's name when the
    /// compiler or the linker fails.
    pub fn build(self) -> PathBuf {
        let dir = self.out.join(format!("build-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let linked = dir.join(&self.name);
        let mut build = cc_build();
        build
            .debug(true)
            .out_dir(&dir)
            .include(include_dir())
            .include(c_tests_dir())
            .flag("-Wall")
            .flag("-Wextra")
            .flag("-pedantic")
            .flag("-Werror");
        for f in &self.flags {
            build.flag(f);
        }
        if self.cxx {
            build.cpp(true).flag("-x").flag("c++");
        } else {
            build.std("c11").define("_POSIX_C_SOURCE", "200809L");
        }
        for s in &self.sources {
            build.file(s);
        }
        let objects = build.compile_intermediates();
        let lib = lib_dir();
        // Link with a clean driver: the compile flags (e.g. `-x c++`) would apply to the objects.
        let status = cc_build()
            .cpp(self.cxx)
            .get_compiler()
            .to_command()
            .args(&objects)
            .args(&self.flags)
            .arg("-o")
            .arg(&linked)
            .arg(format!("-L{}", lib.display()))
            .arg("-lfleetprov")
            .args(self.libs.iter().map(|l| format!("-l{l}")))
            .arg(format!("-Wl,-rpath,{}", lib.display()))
            // DT_RPATH, not DT_RUNPATH: cargo runs tests with LD_LIBRARY_PATH listing
            // `target/<profile>/` first, whose libfleetprov.so only `cargo build` refreshes; a
            // RUNPATH would lose to it and the programs would test a stale library.
            .arg("-Wl,--disable-new-dtags")
            .arg("-pthread")
            .status()
            .unwrap();
        assert!(status.success(), "linking {} failed", self.name);
        let exe = self.out.join(&self.name);
        std::fs::rename(&linked, &exe).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        exe
    }
}

/// A command running `exe` under coreutils `timeout` (killed 5 s after a 120 s limit), so a
/// hang fails the test instead of stalling it.
pub fn limited(exe: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", "120"]).arg(exe);
    cmd
}

/// Runs `cmd` to the end and prints its stdout, stderr and exit status for the test's log.
pub fn output_logged(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    eprintln!(
        "--- stdout\n{}--- stderr\n{}--- status {:?}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        out.status.code()
    );
    out
}
