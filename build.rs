//! Generates `include/fleetprov.h` from `src/ffi` with cbindgen.
//!
//! The header is committed so C users need no Rust tooling to read it; CI checks that a fresh
//! generation equals the committed file. To keep ordinary builds cheap, the script reruns only
//! when the C surface or the cbindgen settings change, and it touches the header only when its
//! content differs (so an unchanged header never triggers C rebuilds or dirties the tree).

use std::env;
use std::error::Error;
use std::fs;
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=Cargo.toml");

    // The C API tests compile C programs with the `cc` crate, which needs the triples that
    // cargo only tells build scripts.
    println!(
        "cargo:rustc-env=FLEETPROV_BUILD_TARGET={}",
        env::var("TARGET")?
    );
    println!("cargo:rustc-env=FLEETPROV_BUILD_HOST={}", env::var("HOST")?);

    // The shared library's SONAME: programs record `libfleetprov.so.0` and keep working with any
    // later 0.x file it points to (the Makefile installs libfleetprov.so.<version> and the links).
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libfleetprov.so.0");

    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let header = generate(&root)?;

    // A fresh copy in OUT_DIR lets tests compare it with the committed header.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    write_if_changed(&out_dir.join("fleetprov.h"), &header)?;
    write_if_changed(&root.join("include").join("fleetprov.h"), &header)?;
    Ok(())
}

fn generate(root: &Path) -> Result<Vec<u8>, Box<dyn Error>> {
    let mut config = cbindgen::Config::from_file(root.join("cbindgen.toml"))?;
    // The version macros come from Cargo.toml so they can never drift from the crate version.
    config.after_includes = Some(format!(
        "\n/** Version of the library these declarations belong to (see also fp_version()). */\n\
         #define FP_VERSION_MAJOR {}\n#define FP_VERSION_MINOR {}\n#define FP_VERSION_PATCH {}",
        env::var("CARGO_PKG_VERSION_MAJOR")?,
        env::var("CARGO_PKG_VERSION_MINOR")?,
        env::var("CARGO_PKG_VERSION_PATCH")?,
    ));
    // Parsing only src/ffi (not the whole crate) avoids running `cargo metadata` from the build
    // script; every exported item lives there.
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src").join("ffi").join("mod.rs"))
        .generate()?;
    let mut out = Vec::new();
    bindings.write(&mut out);
    Ok(out)
}

fn write_if_changed(path: &Path, content: &[u8]) -> std::io::Result<()> {
    if fs::read(path).ok().as_deref() == Some(content) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    // Write to a sibling temp file and rename so a concurrent reader never sees half a header.
    let tmp = path.with_extension("h.tmp");
    fs::write(&tmp, content)?;
    fs::rename(&tmp, path)
}
