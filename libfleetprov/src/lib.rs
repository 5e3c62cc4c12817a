//! The C surface: a thin skin over the Rust core, declared in `include/fleetprov.h`.
//!
//! One file per C type (`options`, `client`, `provision`, `signer`, `pkcs11`, `operations`, `log`,
//! `error`) over two shared layers: `handle` (how an `fp_*` handle crosses the boundary; a NULL
//! argument becomes `FP_ERR_NULL_ARGUMENT`) and `callback` (one type for every C callback kept:
//! function, `user_data`, release). No MQTT or JSON logic lives here.
//!
//! Every exported function is written `#[unsafe(no_mangle)] pub extern "C" fn` (so cbindgen
//! sees it) with its body inside [`ffi_panic_boundary!`], or `ffi_result!` for a body that
//! checks its arguments with `?`. Pointer validity beyond NULL is the C caller's contract,
//! stated in the header, which is why these functions are not `unsafe fn` (C has no such
//! notion) and the lint about it is off.
//!
//! The release profile keeps `panic = "unwind"` on purpose: with `abort`, a bug anywhere in
//! the library (or a dependency) would kill the host process, which for a device agent means
//! losing whatever else it was doing. Unwinding lets the boundary turn the panic into
//! `FP_ERR_PANIC` (or an error delivered to the callback) at the cost of a somewhat larger
//! binary for the unwind tables.
#![allow(non_camel_case_types, clippy::not_unsafe_ptr_arg_deref)]

#[macro_use]
mod panic;
#[macro_use]
mod handle;

// In this order in the header: results and errors, logging, options, client, operations,
// provisioning.
mod callback;
mod client;
mod error;
mod log;
mod operations;
mod options;
mod pkcs11;
mod provision;
mod provision_key;
mod provision_op;
mod runtime;
mod signer;
mod strings;

use std::ffi::c_char;

/// The library version, e.g. "0.1.0": a static string, never freed. Equals
/// `FP_VERSION_MAJOR.FP_VERSION_MINOR.FP_VERSION_PATCH` of the header it was built with.
#[unsafe(no_mangle)]
pub extern "C" fn fp_version() -> *const c_char {
    ffi_panic_boundary! {
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_is_the_crate_version() {
        let v = unsafe { std::ffi::CStr::from_ptr(super::fp_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
