//! PKCS#11: the options' token settings (a key that never leaves its token), and a device key
//! generated in a token with its certificate stored there.

use std::ffi::{c_char, c_int};

use super::error::fp_result::{self, *};
use super::error::log_failure;
use super::handle::Castable;
use super::options::{fp_client_options, with_options};
use super::signer::OutBuffer;
use super::strings::{nonempty_str_arg, opt_str_arg};
use fleetprov_core::client::PrivateKey;
use fleetprov_core::signer::{certificate_request, KeyAlgorithm};

/// The body of the PKCS#11 setters: applies `f` to the options' PKCS#11 key, created empty on
/// first use, replacing a private key or signer set before (one source of the key).
fn with_pkcs11(
    options: *mut fp_client_options,
    f: impl FnOnce(&mut fleetprov_core::pkcs11::Pkcs11Key) -> Result<(), fp_result>,
) -> fp_result {
    with_options(options, |o| {
        let mut key = match o.key.take() {
            Some(PrivateKey::Pkcs11(key)) => key,
            _ => Default::default(),
        };
        let result = f(&mut key);
        o.key = Some(PrivateKey::Pkcs11(key));
        result
    })
}

/// Takes the client certificate's private key from a PKCS#11 token: `path` is the module
/// (e.g. `/usr/lib/softhsm/libsofthsm2.so`), copied. Also set the key label
/// (fp_client_options_set_pkcs11_key_label()), usually the PIN, and the token label or slot id
/// if the module has more than one token. Replaces a private key or signer set before.
///
/// Nothing is loaded here: when connecting, the library loads the module (once per process;
/// it stays loaded), opens a session, logs in and finds the key; a missing module, token or
/// key, or a refused PIN, fails the connection with `FP_ERR_SIGNER` and a message naming the
/// cause. The key never leaves the token; the handshake is signed by it.
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_set_pkcs11_module(
    options: *mut fp_client_options,
    path: *const c_char,
) -> fp_result {
    ffi_panic_boundary! {
        with_pkcs11(options, |k| {
            // SAFETY: NULL or a NUL-terminated string, per the header.
            k.module = unsafe { nonempty_str_arg(path) }?.into();
            Ok(())
        })
    }
}

/// Selects the PKCS#11 token by its label (copied; 1 to 32 bytes). See
/// fp_client_options_set_pkcs11_module().
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_set_pkcs11_token_label(
    options: *mut fp_client_options,
    label: *const c_char,
) -> fp_result {
    ffi_panic_boundary! {
        with_pkcs11(options, |k| {
            // SAFETY: NULL or a NUL-terminated string, per the header.
            let label = unsafe { nonempty_str_arg(label) }?;
            if label.len() > 32 {
                return Err(FP_ERR_INVALID_ARGUMENT);
            }
            k.token_label = Some(label.to_owned());
            Ok(())
        })
    }
}

/// Selects the PKCS#11 token by its slot id. See fp_client_options_set_pkcs11_module().
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_set_pkcs11_slot_id(
    options: *mut fp_client_options,
    slot_id: u64,
) -> fp_result {
    ffi_panic_boundary! {
        with_pkcs11(options, |k| {
            k.slot_id = Some(slot_id);
            Ok(())
        })
    }
}

/// Sets the PKCS#11 user PIN (copied into memory the library wipes when the options and
/// clients made from them are freed). Without a PIN the library does not log in.
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_set_pkcs11_pin(
    options: *mut fp_client_options,
    pin: *const c_char,
) -> fp_result {
    ffi_panic_boundary! {
        with_pkcs11(options, |k| {
            // SAFETY: NULL or a NUL-terminated string, per the header.
            let pin = unsafe { nonempty_str_arg(pin) }?;
            let mut copy = zeroize::Zeroizing::new(String::with_capacity(pin.len()));
            copy.push_str(pin);
            k.pin = Some(copy);
            Ok(())
        })
    }
}

/// Sets the label (`CKA_LABEL`) of the private key in the PKCS#11 token (copied). Its public
/// key is read from the public key object of the same label, or from the client certificate.
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_set_pkcs11_key_label(
    options: *mut fp_client_options,
    label: *const c_char,
) -> fp_result {
    ffi_panic_boundary! {
        with_pkcs11(options, |k| {
            // SAFETY: NULL or a NUL-terminated string, per the header.
            k.key_label = unsafe { nonempty_str_arg(label) }?.to_owned();
            Ok(())
        })
    }
}

/// A key type for fp_pkcs11_generate_key().
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum fp_pkcs11_key_type {
    /// EC P-256 (signs with ECDSA SHA-256).
    FP_PKCS11_KEY_EC_P256 = 1,
    /// EC P-384 (signs with ECDSA SHA-384).
    FP_PKCS11_KEY_EC_P384 = 2,
    /// RSA, 2048 bits.
    FP_PKCS11_KEY_RSA_2048 = 3,
}

use fp_pkcs11_key_type::*;

/// The key algorithm of an ::fp_pkcs11_key_type value.
pub(crate) fn algorithm_of(key_type: c_int) -> Result<KeyAlgorithm, fp_result> {
    Ok(match key_type {
        k if k == FP_PKCS11_KEY_EC_P256 as c_int => KeyAlgorithm::EcP256,
        k if k == FP_PKCS11_KEY_EC_P384 as c_int => KeyAlgorithm::EcP384,
        k if k == FP_PKCS11_KEY_RSA_2048 as c_int => KeyAlgorithm::Rsa { bits: 2048 },
        _ => return Err(FP_ERR_INVALID_ARGUMENT),
    })
}

/// The PKCS#11 settings of `options` (fp_client_options_set_pkcs11_module() and the others).
pub(crate) fn pkcs11_of<'a>(
    options: *const fp_client_options,
) -> Result<&'a fleetprov_core::pkcs11::Pkcs11Key, fp_result> {
    // SAFETY: NULL or a live handle from fp_client_options_new(), per the header; the
    // reference does not outlive the call that made it.
    let o = unsafe { fp_client_options::try_ref(options) }?;
    match &o.key {
        Some(PrivateKey::Pkcs11(key)) => Ok(key),
        _ => Err(FP_ERR_INVALID_ARGUMENT),
    }
}

/// Generates the device key inside the PKCS#11 token that `options` name (module, token,
/// PIN, and the key label the new key gets) and builds its certificate signing request,
/// signed by the token, for fp_create_from_csr(). Then connect with options that carry the
/// issued certificate (fp_client_options_set_cert_pem()) and the same PKCS#11 settings.
///
/// The private key is created as a token object, sensitive and not extractable: it never
/// leaves the token. A token that already has a private key with that label is left as it is
/// and the call fails. Blocking (key generation in a token can take seconds); call it from a
/// thread that may wait. The CSR's subject is `CN=<common_name>` (NULL: empty subject). Writes
/// the NUL-terminated PEM to `buf` (::FP_CSR_PEM_MAX_LEN suffices) and its length to
/// `*written`. Returns `FP_OK`, `FP_ERR_NULL_ARGUMENT`, `FP_ERR_INVALID_ARGUMENT` (no PKCS#11
/// settings in `options`, no module or key label, an unknown key type, `buf_len` too small) or
/// `FP_ERR_SIGNER` (module, token, PIN or generation failed: the reason goes to the log
/// callback at FP_LOG_ERROR).
#[unsafe(no_mangle)]
pub extern "C" fn fp_pkcs11_generate_key(
    options: *const fp_client_options,
    key_type: c_int,
    common_name: *const c_char,
    buf: *mut c_char,
    buf_len: usize,
    written: *mut usize,
) -> fp_result {
    ffi_result! {
        let key = pkcs11_of(options)?;
        let out = OutBuffer::new(buf, buf_len, written)?;
        let algorithm = algorithm_of(key_type)?;
        // SAFETY: NULL or a NUL-terminated string, per the header.
        let common_name = unsafe { opt_str_arg(common_name) }?;
        let signer = fleetprov_core::pkcs11::generate(key, algorithm)
            .map_err(|e| log_failure("PKCS#11 key generation", &e))?;
        let pem = certificate_request(signer, common_name).map_err(|e| log_failure("CSR", &e))?;
        out.write(pem.as_bytes())
    }
}

/// Stores `certificate_pem` (NUL-terminated; its first certificate) in the PKCS#11 token that
/// `options` name, as an X.509 certificate object with the key's label and `CKA_ID`, e.g. the
/// device certificate from fp_create_from_csr(). Certificates stored with that label before
/// are removed once the new one is in. Blocking. Returns `FP_OK`, `FP_ERR_NULL_ARGUMENT`,
/// `FP_ERR_INVALID_UTF8`, `FP_ERR_INVALID_ARGUMENT` (no PKCS#11 settings, no certificate in
/// the PEM) or `FP_ERR_SIGNER` (module, token, PIN, key or the token's refusal; the reason
/// goes to the log callback).
#[unsafe(no_mangle)]
pub extern "C" fn fp_pkcs11_store_certificate(
    options: *const fp_client_options,
    certificate_pem: *const c_char,
) -> fp_result {
    ffi_result! {
        let key = pkcs11_of(options)?;
        // SAFETY: NULL or a NUL-terminated string, per the header.
        let pem = unsafe { nonempty_str_arg(certificate_pem) }?;
        fleetprov_core::pkcs11::store_certificate(key, pem)
            .map_err(|e| log_failure("PKCS#11 certificate store", &e))
    }
}
