//! The C-program builder (src/cprog.rs) drives the `cc` crate, which needs the target and host
//! triples that cargo tells only build scripts.
fn main() {
    for (name, var) in [
        ("FLEETPROV_BUILD_TARGET", "TARGET"),
        ("FLEETPROV_BUILD_HOST", "HOST"),
    ] {
        let value = std::env::var(var).expect("cargo sets TARGET and HOST for build scripts");
        println!("cargo:rustc-env={name}={value}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
