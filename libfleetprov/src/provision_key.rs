//! fp_provision()'s device key outside the store: generated in a PKCS#11 token, or behind the
//! application's ::fp_signer.

use std::ffi::c_int;

use super::error::fp_result::{self, *};
use super::handle::Castable;
use super::options::fp_client_options;
use super::pkcs11::{algorithm_of, pkcs11_of};
use super::provision::{fp_provision_options, with_options};
use super::signer::fp_signer;
use fleetprov_core::provision::KeySource;

/// Where the private key of an ::fp_provisioned identity is (fp_provisioned_key_location()).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum fp_key_location {
    /// A PEM file in the store: fp_provisioned_private_key_file().
    FP_KEY_LOCATION_FILE = 0,
    /// A key in a PKCS#11 token (fp_provision_options_set_device_key_pkcs11()); no key file.
    FP_KEY_LOCATION_PKCS11 = 1,
    /// The application's signer (fp_provision_options_set_device_key_signer()); no key file.
    FP_KEY_LOCATION_SIGNER = 2,
}

impl crate::panic::PanicValue for fp_key_location {
    fn panic_value() -> Self {
        fp_key_location::FP_KEY_LOCATION_FILE
    }
}

/// Keeps the device key in a PKCS#11 token: fp_provision() uses the token's private key with
/// the key label of `token` (the settings of fp_client_options_set_pkcs11_module() and its
/// siblings on `token`: module, token label or slot id, PIN, key label; copied), and if the
/// token has none, generates one there as fp_pkcs11_generate_key() does (`key_type`, an
/// ::fp_pkcs11_key_type: sensitive, not extractable). The CSR is signed by the token
/// (CreateCertificateFromCsr) and so is the connection that verifies the identity. Non-zero
/// `store_certificate` also stores the issued certificate in the token (as
/// fp_pkcs11_store_certificate() does), before the identity is committed.
///
/// No key file is written: `identity.json` records the module, token and key label (never the
/// PIN). A later fp_provision() reuses the identity only with options that name the same
/// module, token and key label; it logs in with the PIN given then, and checks that the
/// token's key is the certificate's. A provisioning repeated with the same label (forced, or
/// after the certificate expired) gives the key already in the token a new certificate.
///
/// Replaces a key type, user CSR or signer set before. Returns `FP_OK`,
/// `FP_ERR_NULL_ARGUMENT`, or `FP_ERR_INVALID_ARGUMENT` (`token` has no PKCS#11 settings, or no
/// module or key label; an unknown key type). Nothing is loaded here: module, token, PIN and
/// key failures come from fp_provision(), as `FP_ERR_SIGNER` with a message naming the cause.
#[unsafe(no_mangle)]
pub extern "C" fn fp_provision_options_set_device_key_pkcs11(
    options: *mut fp_provision_options,
    token: *const fp_client_options,
    key_type: c_int,
    store_certificate: c_int,
) -> fp_result {
    ffi_panic_boundary! {
        with_options(options, |o| {
            let key = pkcs11_of(token)?.clone();
            if key.module.as_os_str().is_empty() || key.key_label.is_empty() {
                return Err(FP_ERR_INVALID_ARGUMENT);
            }
            o.device_key = KeySource::Pkcs11 {
                key,
                algorithm: algorithm_of(key_type)?,
                store_certificate: store_certificate != 0,
            };
            Ok(())
        })
    }
}

/// Keeps the device key with the application: the CSR is signed through `signer`'s callback
/// (CreateCertificateFromCsr), and so is the connection that verifies the identity (see
/// fp_signer_new() for the threads the callback runs on). The options share the signer, so it
/// may be freed right after.
///
/// No key file is written: `identity.json` records that the key is a signer's. A later
/// fp_provision() reuses the identity only with a signer whose public key is the stored
/// certificate's; otherwise it provisions anew. Replaces a key type, user CSR or PKCS#11 key
/// set before. Returns `FP_OK` or `FP_ERR_NULL_ARGUMENT`.
#[unsafe(no_mangle)]
pub extern "C" fn fp_provision_options_set_device_key_signer(
    options: *mut fp_provision_options,
    signer: *const fp_signer,
) -> fp_result {
    ffi_panic_boundary! {
        with_options(options, |o| {
            // SAFETY: NULL or a live handle from fp_signer_new(), per the header.
            let signer = unsafe { fp_signer::try_ref(signer) }?;
            o.device_key = KeySource::Signer(signer.signer());
            Ok(())
        })
    }
}
