//! The three provisioning operations and the responses their callbacks receive.

use std::ffi::{c_char, c_void, CString};
use std::future::Future;

use zeroize::Zeroizing;

use super::callback::Callback;
use super::client::{fp_client, shared_of};
use super::error::fp_result::{self, *};
use super::error::{fp_error, logged};
use super::panic::caught;
use super::strings::{nonempty_str_arg, str_arg, template_name_arg};
use fleetprov_core::client::Client;
use fleetprov_core::error::Error;
use fleetprov_core::protocol::{
    parse_template_parameters, CreateFromCsrResponse, CreateKeysResponse, RegisterThingRequest,
    RegisterThingResponse, TemplateName,
};

/// The reply to CreateKeysAndCertificate.
///
/// Every string is NUL-terminated and borrowed for the duration of the callback only: copy
/// what you keep. `private_key` (RSA PKCS#1 PEM) is wiped from the library's memory when the
/// callback returns; store it safely and never log it.
#[repr(C)]
pub struct fp_create_keys_response {
    /// The new certificate's id (64 hex characters).
    pub certificate_id: *const c_char,
    /// The new certificate, PEM.
    pub certificate_pem: *const c_char,
    /// The new certificate's private key, PEM. Secret.
    pub private_key: *const c_char,
    /// The token to pass to fp_register_thing() (valid for one hour).
    pub certificate_ownership_token: *const c_char,
}

/// The reply to CreateCertificateFromCsr.
///
/// Every string is NUL-terminated and borrowed for the duration of the callback only.
#[repr(C)]
pub struct fp_create_from_csr_response {
    /// The new certificate's id (64 hex characters).
    pub certificate_id: *const c_char,
    /// The new certificate, PEM, for the key the CSR was made with.
    pub certificate_pem: *const c_char,
    /// The token to pass to fp_register_thing() (valid for one hour).
    pub certificate_ownership_token: *const c_char,
}

/// One entry of a device configuration. Both strings are NUL-terminated and borrowed for the
/// duration of the callback only.
#[repr(C)]
pub struct fp_key_value {
    /// The entry's name.
    pub key: *const c_char,
    /// The entry's value.
    pub value: *const c_char,
}

/// The reply to RegisterThing.
///
/// Borrowed for the duration of the callback only, as is everything it points to.
#[repr(C)]
pub struct fp_register_thing_response {
    /// Name of the thing the template created or updated.
    pub thing_name: *const c_char,
    /// The template's `DeviceConfiguration`, sorted by key; NULL when empty.
    pub device_configuration: *const fp_key_value,
    /// Number of entries in `device_configuration`.
    pub device_configuration_len: usize,
}

/// Receives the result of fp_create_keys(): exactly one of `response` and `error` is non-NULL.
/// Both are borrowed for the duration of the call. Runs once, on a library thread; may call
/// any library function (e.g. fp_register_thing() with the token).
pub type fp_create_keys_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        response: *const fp_create_keys_response,
        error: *const fp_error,
    ),
>;

/// Receives the result of fp_create_from_csr(): exactly one of `response` and `error` is
/// non-NULL, both borrowed for the duration of the call. Runs once, on a library thread; may
/// call any library function.
pub type fp_create_from_csr_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        response: *const fp_create_from_csr_response,
        error: *const fp_error,
    ),
>;

/// Receives the result of fp_register_thing(): exactly one of `response` and `error` is
/// non-NULL, both borrowed for the duration of the call. Runs once, on a library thread; may
/// call any library function.
pub type fp_register_thing_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        response: *const fp_register_thing_response,
        error: *const fp_error,
    ),
>;

/// A string from the service as a C string; an interior NUL would silently truncate it in C,
/// so it makes the reply unusable instead.
fn reply_cstring(s: String, field: &str) -> Result<CString, fp_error> {
    CString::new(s).map_err(|_| {
        fp_error::new(
            FP_ERR_BAD_REPLY,
            &format!("{field} in the reply contains a NUL character"),
        )
    })
}

/// The private key as NUL-terminated bytes in memory that is wiped on drop, copied without
/// leaving an unwiped intermediate.
fn secret_cstring(s: &str) -> Result<Zeroizing<Vec<u8>>, fp_error> {
    if s.as_bytes().contains(&0) {
        return Err(fp_error::new(
            FP_ERR_BAD_REPLY,
            "privateKey in the reply contains a NUL character",
        ));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(s.len() + 1));
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    Ok(out)
}

fn error_ptr(e: &Result<impl Sized, fp_error>) -> *const fp_error {
    match e {
        Ok(_) => std::ptr::null(),
        Err(e) => e,
    }
}

struct KeysOwned {
    certificate_id: CString,
    certificate_pem: CString,
    private_key: Zeroizing<Vec<u8>>,
    token: CString,
}

type CreateKeysFn =
    unsafe extern "C" fn(*mut c_void, *const fp_create_keys_response, *const fp_error);
type CreateFromCsrFn =
    unsafe extern "C" fn(*mut c_void, *const fp_create_from_csr_response, *const fp_error);
type RegisterThingFn =
    unsafe extern "C" fn(*mut c_void, *const fp_register_thing_response, *const fp_error);

fn deliver_create_keys(
    callback: Callback<CreateKeysFn>,
    result: Result<CreateKeysResponse, fp_error>,
) {
    let owned = caught("preparing the reply", || {
        let r = result?;
        Ok(KeysOwned {
            private_key: secret_cstring(&r.private_key)?,
            certificate_id: reply_cstring(r.certificate_id, "certificateId")?,
            certificate_pem: reply_cstring(r.certificate_pem, "certificatePem")?,
            token: reply_cstring(r.certificate_ownership_token, "certificateOwnershipToken")?,
        })
        // `r.private_key` is Zeroizing: wiped here when `r` drops.
    });
    let response = owned.as_ref().ok().map(|o| fp_create_keys_response {
        certificate_id: o.certificate_id.as_ptr(),
        certificate_pem: o.certificate_pem.as_ptr(),
        private_key: o.private_key.as_ptr().cast(),
        certificate_ownership_token: o.token.as_ptr(),
    });
    let response_ptr = response
        .as_ref()
        .map_or(std::ptr::null(), |r| r as *const _);
    callback.invoke(|call, user_data| {
        // SAFETY: callback and user_data were supplied together by the C caller; the pointers
        // stay valid until `owned` drops after the call (which wipes the key).
        unsafe { call(user_data, response_ptr, error_ptr(&owned)) }
    });
}

fn deliver_create_from_csr(
    callback: Callback<CreateFromCsrFn>,
    result: Result<CreateFromCsrResponse, fp_error>,
) {
    let owned = caught("preparing the reply", || {
        let r = result?;
        Ok([
            reply_cstring(r.certificate_id, "certificateId")?,
            reply_cstring(r.certificate_pem, "certificatePem")?,
            reply_cstring(r.certificate_ownership_token, "certificateOwnershipToken")?,
        ])
    });
    let response = owned
        .as_ref()
        .ok()
        .map(|[id, pem, token]| fp_create_from_csr_response {
            certificate_id: id.as_ptr(),
            certificate_pem: pem.as_ptr(),
            certificate_ownership_token: token.as_ptr(),
        });
    let response_ptr = response
        .as_ref()
        .map_or(std::ptr::null(), |r| r as *const _);
    callback.invoke(|call, user_data| {
        // SAFETY: as in deliver_create_keys.
        unsafe { call(user_data, response_ptr, error_ptr(&owned)) }
    });
}

fn deliver_register_thing(
    callback: Callback<RegisterThingFn>,
    result: Result<RegisterThingResponse, fp_error>,
) {
    let owned = caught("preparing the reply", || {
        let r = result?;
        let name = reply_cstring(r.thing_name, "thingName")?;
        let config = r
            .device_configuration
            .into_iter()
            .map(|(k, v)| {
                Ok((
                    reply_cstring(k, "deviceConfiguration")?,
                    reply_cstring(v, "deviceConfiguration")?,
                ))
            })
            .collect::<Result<Vec<_>, fp_error>>()?;
        Ok((name, config))
    });
    let entries: Vec<fp_key_value> = match &owned {
        Ok((_, config)) => config
            .iter()
            .map(|(k, v)| fp_key_value {
                key: k.as_ptr(),
                value: v.as_ptr(),
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let response = owned
        .as_ref()
        .ok()
        .map(|(name, _)| fp_register_thing_response {
            thing_name: name.as_ptr(),
            device_configuration: if entries.is_empty() {
                std::ptr::null()
            } else {
                entries.as_ptr()
            },
            device_configuration_len: entries.len(),
        });
    let response_ptr = response
        .as_ref()
        .map_or(std::ptr::null(), |r| r as *const _);
    callback.invoke(|call, user_data| {
        // SAFETY: as in deliver_create_keys.
        unsafe { call(user_data, response_ptr, error_ptr(&owned)) }
    });
}

/// The start shared by the three operations. The checks run in this order, which decides the
/// code a call with several bad arguments gets: the client, the operation's own arguments
/// (`args`, which copies them), the callback, then whether the client takes operations.
/// Only when all pass is `operation` spawned, its result going to `deliver` exactly once.
fn start_operation<A, C, T, Fut>(
    client: *mut fp_client,
    args: impl FnOnce() -> Result<A, fp_result>,
    callback: Option<C>,
    user_data: *mut c_void,
    operation: impl FnOnce(A, Client) -> Fut + Send + 'static,
    deliver: fn(Callback<C>, Result<T, fp_error>),
) -> fp_result
where
    A: Send + 'static,
    C: Copy + 'static,
    T: Send + 'static,
    Fut: Future<Output = Result<T, Error>> + Send + 'static,
{
    let start = || -> Result<(), fp_result> {
        let shared = shared_of(client)?;
        let args = args()?;
        let callback = callback.ok_or(FP_ERR_NULL_ARGUMENT)?;
        let promise = shared.promise_operation()?;
        let callback = Callback::unreleased(callback, user_data);
        shared.spawn_operation(
            promise,
            move |client| operation(args, client),
            move |result| deliver(callback, result),
        );
        Ok(())
    };
    start().into()
}

/// Starts CreateKeysAndCertificate: the service generates a key pair and a certificate.
///
/// Returns `FP_OK` if the operation was accepted: `callback` will then be called exactly once,
/// on a library thread, never before this returns, with the response or an error (rejection,
/// timeout, disconnection, or `FP_ERR_CANCELLED` if the client is freed first). Any other
/// return value means the callback will never be called: `FP_ERR_NULL_ARGUMENT` (client or
/// callback NULL), `FP_ERR_NOT_CONNECTED` (fp_client_connect() never called), `FP_ERR_CANCELLED`
/// (the client is being freed). After a failed or ended connection the operation is still
/// accepted and its callback reports the connect error or `FP_ERR_NOT_CONNECTED`.
///
/// May be called before the connection is up: the operation waits for it. Operations of the
/// same kind on one client run one after another. `user_data` must stay valid, and usable from
/// library threads, until the callback has run.
#[unsafe(no_mangle)]
pub extern "C" fn fp_create_keys(
    client: *mut fp_client,
    callback: fp_create_keys_callback,
    user_data: *mut c_void,
) -> fp_result {
    ffi_panic_boundary! {
        start_operation(
            client,
            || Ok(()),
            callback,
            user_data,
            |(), client| async move { client.create_keys_and_certificate().await },
            deliver_create_keys,
        )
    }
}

/// Starts CreateCertificateFromCsr: the service signs `csr_pem` (a NUL-terminated PEM
/// certificate signing request; copied before this returns, the key never leaves the device).
///
/// Same contract as fp_create_keys(); additionally `FP_ERR_NULL_ARGUMENT` if `csr_pem` is NULL,
/// `FP_ERR_INVALID_UTF8` or `FP_ERR_INVALID_ARGUMENT` (empty) for a bad `csr_pem`. A CSR the
/// service cannot use is reported to the callback as a rejection.
#[unsafe(no_mangle)]
pub extern "C" fn fp_create_from_csr(
    client: *mut fp_client,
    csr_pem: *const c_char,
    callback: fp_create_from_csr_callback,
    user_data: *mut c_void,
) -> fp_result {
    ffi_panic_boundary! {
        start_operation(
            client,
            // SAFETY: NULL or a NUL-terminated string, per the header.
            || Ok(unsafe { nonempty_str_arg(csr_pem) }?.to_owned()),
            callback,
            user_data,
            |csr, client| async move { client.create_certificate_from_csr(&csr).await },
            deliver_create_from_csr,
        )
    }
}

/// Starts RegisterThing with the provisioning template `template_name`, the
/// `certificate_ownership_token` from a create operation, and `parameters_json`: NULL for none,
/// or a JSON object whose values are all strings, e.g. `{"SerialNumber":"1"}`. All strings are
/// copied before this returns.
///
/// Same contract as fp_create_keys(); additionally, before anything is sent:
/// `FP_ERR_NULL_ARGUMENT` for a NULL name or token, `FP_ERR_INVALID_UTF8` for a string that is
/// not UTF-8, `FP_ERR_INVALID_ARGUMENT` for a template name that is not 1-36 characters of
/// `[A-Za-z0-9_-]`, an empty token, or parameters that are not a JSON object of strings.
/// The service's refusals (bad token, unknown template, template errors) reach the callback as
/// `FP_ERR_REJECTED` with AWS's fields.
#[unsafe(no_mangle)]
pub extern "C" fn fp_register_thing(
    client: *mut fp_client,
    template_name: *const c_char,
    certificate_ownership_token: *const c_char,
    parameters_json: *const c_char,
    callback: fp_register_thing_callback,
    user_data: *mut c_void,
) -> fp_result {
    ffi_panic_boundary! {
        start_operation(
            client,
            || register_request(template_name, certificate_ownership_token, parameters_json),
            callback,
            user_data,
            |(template, request), client| async move {
                client.register_thing(&template, &request).await
            },
            deliver_register_thing,
        )
    }
}

/// Checks a template name and parameters the way fp_register_thing() will, without a client:
/// lets a program refuse bad input before it creates a certificate it could not register.
///
/// `parameters_json` may be NULL (no parameters). Returns `FP_OK`, `FP_ERR_NULL_ARGUMENT` (NULL
/// name), `FP_ERR_INVALID_UTF8`, or `FP_ERR_INVALID_ARGUMENT` (name not 1-36 characters of
/// `[A-Za-z0-9_-]`, or parameters that are not JSON, not an object, or with a value that is
/// not a string); the reason for `FP_ERR_INVALID_ARGUMENT` goes to the log callback
/// (fp_set_log_callback()) at `FP_LOG_ERROR`. Any thread.
#[unsafe(no_mangle)]
pub extern "C" fn fp_register_thing_check(
    template_name: *const c_char,
    parameters_json: *const c_char,
) -> fp_result {
    ffi_panic_boundary! {
        match register_request(template_name, c"-".as_ptr(), parameters_json) {
            Ok(_) => FP_OK,
            Err(e) => e,
        }
    }
}

/// Checks and copies fp_register_thing()'s string arguments.
fn register_request(
    template_name: *const c_char,
    token: *const c_char,
    parameters_json: *const c_char,
) -> Result<(TemplateName, RegisterThingRequest), fp_result> {
    // SAFETY (all three): NULL or NUL-terminated strings, per the header.
    let template = unsafe { template_name_arg(template_name) }?;
    let token = unsafe { nonempty_str_arg(token) }?;
    let parameters = if parameters_json.is_null() {
        Default::default()
    } else {
        let json = unsafe { str_arg(parameters_json) }?;
        parse_template_parameters(json).map_err(|e| logged(&e))?
    };
    Ok((
        template,
        RegisterThingRequest {
            certificate_ownership_token: token.to_owned(),
            parameters,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_arguments_are_checked_before_anything_is_sent() {
        let ok = c"FleetTemplate".as_ptr();
        let tok = c"token".as_ptr();
        let null = std::ptr::null();
        assert!(register_request(ok, tok, null).is_ok());
        let (_, r) = register_request(ok, tok, c"{\"SerialNumber\":\"1\"}".as_ptr()).unwrap();
        assert_eq!(
            r.parameters.get("SerialNumber").map(String::as_str),
            Some("1")
        );
        let cases: [(*const c_char, *const c_char, *const c_char, fp_result); 10] = [
            (null, tok, null, FP_ERR_NULL_ARGUMENT),
            (ok, null, null, FP_ERR_NULL_ARGUMENT),
            (c"a/b".as_ptr(), tok, null, FP_ERR_INVALID_ARGUMENT),
            (c"a+".as_ptr(), tok, null, FP_ERR_INVALID_ARGUMENT),
            (c"#".as_ptr(), tok, null, FP_ERR_INVALID_ARGUMENT),
            (c"".as_ptr(), tok, null, FP_ERR_INVALID_ARGUMENT),
            (c"\xff".as_ptr(), tok, null, FP_ERR_INVALID_UTF8),
            (ok, c"".as_ptr(), null, FP_ERR_INVALID_ARGUMENT),
            (ok, tok, c"[1]".as_ptr(), FP_ERR_INVALID_ARGUMENT),
            (ok, tok, c"{\"a\":1}".as_ptr(), FP_ERR_INVALID_ARGUMENT),
        ];
        for (i, (name, token, params, expected)) in cases.into_iter().enumerate() {
            assert_eq!(
                register_request(name, token, params).err(),
                Some(expected),
                "case {i}"
            );
        }
        let long = CString::new("a".repeat(37)).unwrap();
        assert_eq!(
            register_request(long.as_ptr(), tok, null).err(),
            Some(FP_ERR_INVALID_ARGUMENT)
        );
    }

    #[test]
    fn nul_in_a_reply_is_a_bad_reply() {
        assert_eq!(
            reply_cstring("a\0b".into(), "x").unwrap_err().code(),
            FP_ERR_BAD_REPLY
        );
        assert_eq!(secret_cstring("k\0").unwrap_err().code(), FP_ERR_BAD_REPLY);
        assert_eq!(&secret_cstring("key").unwrap()[..], b"key\0");
    }
}
