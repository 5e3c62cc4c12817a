//! `fp_client_options`: connection settings, set one by one so new settings never change the ABI.

use std::ffi::{c_char, c_int};
use std::time::Duration;

use super::error::fp_result::{self, *};
use super::error::logged;
use super::handle::{check_out, Castable};
use super::signer::fp_signer;
use super::strings::{nonempty_str_arg, secret_arg, template_name_arg};
use fleetprov_core::client::{
    CheckedClientOptions, ClientOptions, Credentials, MqttVersion, Pem, PrivateKey,
};
use fleetprov_core::protocol::PayloadFormat;

/// Connection settings for fp_client_new().
///
/// Created by fp_client_options_new(), released by fp_client_options_free(). Not thread-safe:
/// do not use one options object from two threads at once. fp_client_new() copies it, so it
/// may be freed or reused right after.
pub struct fp_client_options {
    /// Everything but the client certificate and key, which are set one at a time and so are
    /// kept apart until fp_client_new() or fp_provision_options_new() pairs them.
    pub(crate) inner: ClientOptions,
    pub(crate) cert: Option<Pem>,
    /// The last key source set: a PEM key, a signer or PKCS#11 settings.
    pub(crate) key: Option<PrivateKey>,
}

impl fp_client_options {
    /// The options with their credentials: a certificate and its key, or neither
    /// (`FP_ERR_INVALID_ARGUMENT` for one without the other).
    pub(crate) fn options(&self) -> Result<ClientOptions, fp_result> {
        let mut o = self.inner.clone();
        o.credentials = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some(Credentials {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            _ => return Err(FP_ERR_INVALID_ARGUMENT),
        };
        Ok(o)
    }

    /// The options, paired and checked, for fp_client_new().
    pub(crate) fn checked(&self) -> Result<CheckedClientOptions, fp_result> {
        self.options()?.check().map_err(|e| e.kind.into())
    }
}

impl Castable for fp_client_options {}

/// Applies `f` to the options behind `options`, with the NULL check every setter needs.
pub(crate) fn with_options(
    options: *mut fp_client_options,
    f: impl FnOnce(&mut fp_client_options) -> Result<(), fp_result>,
) -> fp_result {
    // SAFETY: the caller passes NULL or a live handle from fp_client_options_new().
    let options = unsafe { fp_client_options::try_mut(options) };
    options.and_then(f).into()
}

/// Where a PEM setter stores its PEM (certificate, key, CA).
type PemSlot = fn(&mut fp_client_options, Pem);

/// The body of the `*_file` setters: stores the copied, non-empty path in `slot`.
fn set_pem_file(options: *mut fp_client_options, path: *const c_char, slot: PemSlot) -> fp_result {
    with_options(options, |o| {
        // SAFETY: NULL or a NUL-terminated string, per the header.
        let path = unsafe { nonempty_str_arg(path) }?;
        slot(o, Pem::file(path));
        Ok(())
    })
}

/// The body of the `*_pem` setters: stores the PEM text, copied into wiped-on-drop memory,
/// in `slot`.
fn set_pem_memory(options: *mut fp_client_options, pem: *const c_char, slot: PemSlot) -> fp_result {
    with_options(options, |o| {
        // SAFETY: NULL or a NUL-terminated string, per the header.
        slot(o, Pem::Memory(unsafe { secret_arg(pem) }?));
        Ok(())
    })
}

/// The body of the timeout setters: stores `milliseconds` in `slot`, refusing 0.
fn set_timeout_ms(
    options: *mut fp_client_options,
    milliseconds: u32,
    slot: fn(&mut ClientOptions) -> &mut Duration,
) -> fp_result {
    with_options(options, |o| {
        if milliseconds == 0 {
            return Err(FP_ERR_INVALID_ARGUMENT);
        }
        *slot(&mut o.inner) = Duration::from_millis(u64::from(milliseconds));
        Ok(())
    })
}

/// Creates options for connecting to `endpoint` (host name or IP address, without scheme or
/// port; also the name the server certificate must carry).
///
/// Defaults: port 8883, MQTT 5, system root CAs, client id `test-<random uuid>`, keep-alive
/// 30 s, connect and operation timeouts 30 s, no proxy. A client certificate and key are needed
/// to connect (fp_client_options_set_cert_file() and fp_client_options_set_key_file()).
///
/// `endpoint` is copied. On success writes the new options to `*out` (free them with
/// fp_client_options_free()) and returns `FP_OK`; otherwise leaves `*out` untouched and returns
/// `FP_ERR_NULL_ARGUMENT` (`endpoint` or `out` is NULL), `FP_ERR_INVALID_UTF8` (`endpoint` is
/// not UTF-8) or `FP_ERR_INVALID_ARGUMENT` (empty, or not a host name or address: no scheme,
/// path, port or spaces; the reason goes to the log callback at `FP_LOG_ERROR`).
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_new(
    endpoint: *const c_char,
    out: *mut *mut fp_client_options,
) -> fp_result {
    ffi_result! {
        check_out(out)?;
        // SAFETY: NULL or a NUL-terminated string, per the header.
        let endpoint = unsafe { nonempty_str_arg(endpoint) }?;
        let inner = ClientOptions::new(endpoint);
        inner.clone().check().map_err(|e| logged(&e))?;
        // SAFETY: `out` was checked and is writable, per the header.
        unsafe {
            fp_client_options {
                inner,
                cert: None,
                key: None,
            }
            .give(out)
        };
        Ok(())
    }
}

/// Frees options. NULL is a no-op. Clients created from them are not affected.
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_free(options: *mut fp_client_options) {
    ffi_panic_boundary! {
        // SAFETY: NULL or a pointer from fp_client_options_new(), freed once, per the header.
        unsafe { fp_client_options::free(options) }
    }
}

/// Sets the TCP port (default 8883; on 443 the client offers ALPN `x-amzn-mqtt-ca`).
/// `FP_ERR_INVALID_ARGUMENT` for 0.
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_set_port(
    options: *mut fp_client_options,
    port: u16,
) -> fp_result {
    ffi_panic_boundary! {
        with_options(options, |o| {
            if port == 0 {
                return Err(FP_ERR_INVALID_ARGUMENT);
            }
            o.inner.port = port;
            Ok(())
        })
    }
}

/// Sets the path of the client certificate PEM file (the claim certificate when
/// provisioning). The path is copied. The file is read when connecting: a missing or
/// unreadable file fails the connection with `FP_ERR_IO`, one without a certificate or with a
/// key that does not match it with `FP_ERR_TLS` (see ::FP_EVENT_CONNECTION_FAILURE).
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_set_cert_file(
    options: *mut fp_client_options,
    path: *const c_char,
) -> fp_result {
    ffi_panic_boundary! {
        set_pem_file(options, path, |o, pem| o.cert = Some(pem))
    }
}

/// Sets the path of the private key PEM file of the client certificate (PKCS#1, PKCS#8 or
/// SEC1). The path is copied; see fp_client_options_set_cert_file() for when it is read.
/// Replaces a private key, signer or PKCS#11 key set before.
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_set_key_file(
    options: *mut fp_client_options,
    path: *const c_char,
) -> fp_result {
    ffi_panic_boundary! {
        set_pem_file(options, path, |o, pem| o.key = Some(PrivateKey::Pem(pem)))
    }
}

/// Sets the path of a PEM file of CA certificates trusted to sign the server's certificate,
/// instead of the system roots. The path is copied.
///
/// Clients made from the same certificate, key and CA files (and no signer or PKCS#11 key)
/// share one TLS configuration: the files are read by the first of them, and again once a file
/// has changed or no client holds the configuration any more. Such clients check the server's
/// certificate chain in full on each connection until the same chain has
/// been seen twice; from then on, for 10 minutes, exactly that chain for that server name is
/// accepted without building its path again (it is remembered only if it is valid for the
/// whole 10 minutes). The server's handshake signature is checked on every connection.
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_set_ca_file(
    options: *mut fp_client_options,
    path: *const c_char,
) -> fp_result {
    ffi_panic_boundary! {
        set_pem_file(options, path, |o, pem| o.inner.ca = Some(pem))
    }
}

/// Sets the client certificate (chain, leaf first) from NUL-terminated PEM text in memory.
/// The text is copied.
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_set_cert_pem(
    options: *mut fp_client_options,
    pem: *const c_char,
) -> fp_result {
    ffi_panic_boundary! {
        set_pem_memory(options, pem, |o, pem| o.cert = Some(pem))
    }
}

/// Sets the client private key from NUL-terminated PEM text in memory. The text is copied
/// into memory the library wipes when the options and clients made from them are freed; the
/// caller may wipe its own buffer as soon as this returns. (The key as decoded for the TLS
/// stack while connecting is held by rustls and ring, which free it without wiping.) Replaces
/// a private key, signer or PKCS#11 key set before.
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_set_key_pem(
    options: *mut fp_client_options,
    pem: *const c_char,
) -> fp_result {
    ffi_panic_boundary! {
        set_pem_memory(options, pem, |o, pem| o.key = Some(PrivateKey::Pem(pem)))
    }
}

/// Sets the trusted CA certificates from NUL-terminated PEM text in memory (copied).
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_set_ca_pem(
    options: *mut fp_client_options,
    pem: *const c_char,
) -> fp_result {
    ffi_panic_boundary! {
        set_pem_memory(options, pem, |o, pem| o.inner.ca = Some(pem))
    }
}

/// Sets the MQTT client id (copied; default `test-<random uuid>`). Must not be empty.
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_set_client_id(
    options: *mut fp_client_options,
    client_id: *const c_char,
) -> fp_result {
    ffi_panic_boundary! {
        with_options(options, |o| {
            // SAFETY: NULL or a NUL-terminated string, per the header.
            let id = unsafe { nonempty_str_arg(client_id) }?;
            if id.len() > usize::from(u16::MAX) {
                return Err(FP_ERR_INVALID_ARGUMENT);
            }
            o.inner.client_id = Some(id.to_owned());
            Ok(())
        })
    }
}

/// Names the provisioning template the client will register with (copied; optional). The
/// first fp_create_keys() or fp_create_from_csr() then subscribes to this template's
/// RegisterThing reply topics in the same SUBSCRIBE as its own, so fp_register_thing() with
/// this template saves a round trip to the broker. fp_register_thing() with another template
/// still works and subscribes for itself. `FP_ERR_INVALID_ARGUMENT` for a name that is not 1-36
/// characters of `A-Za-z0-9_-`, `FP_ERR_INVALID_UTF8` if it is not UTF-8.
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_set_template_name(
    options: *mut fp_client_options,
    template_name: *const c_char,
) -> fp_result {
    ffi_panic_boundary! {
        with_options(options, |o| {
            // SAFETY: NULL or a NUL-terminated string, per the header.
            o.inner.template_name = Some(unsafe { template_name_arg(template_name) }?);
            Ok(())
        })
    }
}

/// Selects the MQTT version: 5 (default) or 3 for MQTT 3.1.1. `FP_ERR_INVALID_ARGUMENT` for
/// any other value.
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_set_mqtt_version(
    options: *mut fp_client_options,
    version: c_int,
) -> fp_result {
    ffi_panic_boundary! {
        with_options(options, |o| {
            o.inner.mqtt_version = match version {
                5 => MqttVersion::V5,
                3 => MqttVersion::V311,
                _ => return Err(FP_ERR_INVALID_ARGUMENT),
            };
            Ok(())
        })
    }
}

/// Sets the MQTT keep-alive interval in seconds (default 30). `FP_ERR_INVALID_ARGUMENT` below 5.
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_set_keep_alive_secs(
    options: *mut fp_client_options,
    seconds: u16,
) -> fp_result {
    ffi_panic_boundary! {
        with_options(options, |o| {
            if seconds < 5 {
                return Err(FP_ERR_INVALID_ARGUMENT);
            }
            o.inner.keep_alive = Duration::from_secs(u64::from(seconds));
            Ok(())
        })
    }
}

/// Sets how long one operation may wait for the broker's acknowledgements and the service's
/// reply, in milliseconds (default 30,000), counted from when the operation gets its turn.
/// `FP_ERR_INVALID_ARGUMENT` for 0.
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_set_operation_timeout_ms(
    options: *mut fp_client_options,
    milliseconds: u32,
) -> fp_result {
    ffi_panic_boundary! {
        set_timeout_ms(options, milliseconds, |o| &mut o.operation_timeout)
    }
}

/// Sets how long connecting (TCP, proxy, TLS, CONNACK) may take, in milliseconds (default
/// 30,000). `FP_ERR_INVALID_ARGUMENT` for 0.
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_set_connect_timeout_ms(
    options: *mut fp_client_options,
    milliseconds: u32,
) -> fp_result {
    ffi_panic_boundary! {
        set_timeout_ms(options, milliseconds, |o| &mut o.connect_timeout)
    }
}

/// Connects through an HTTP CONNECT proxy at `host`:`port` (host copied; port not 0).
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_set_proxy(
    options: *mut fp_client_options,
    host: *const c_char,
    port: u16,
) -> fp_result {
    ffi_panic_boundary! {
        with_options(options, |o| {
            // SAFETY: NULL or a NUL-terminated string, per the header.
            let host = unsafe { nonempty_str_arg(host) }?;
            if port == 0 {
                return Err(FP_ERR_INVALID_ARGUMENT);
            }
            o.inner.proxy = Some((host.to_owned(), port));
            Ok(())
        })
    }
}

/// `fp_client_options_set_payload_format`: JSON payloads on the `.../json` topics (default).
pub const FP_PAYLOAD_JSON: c_int = 0;
/// `fp_client_options_set_payload_format`: CBOR payloads on the `.../cbor` topics.
pub const FP_PAYLOAD_CBOR: c_int = 1;

/// Selects the payload format of the provisioning requests and replies: `FP_PAYLOAD_JSON`
/// (default) or `FP_PAYLOAD_CBOR`. `FP_ERR_INVALID_ARGUMENT` for any other value.
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_set_payload_format(
    options: *mut fp_client_options,
    format: c_int,
) -> fp_result {
    ffi_panic_boundary! {
        with_options(options, |o| {
            o.inner.format = match format {
                FP_PAYLOAD_JSON => PayloadFormat::Json,
                FP_PAYLOAD_CBOR => PayloadFormat::Cbor,
                _ => return Err(FP_ERR_INVALID_ARGUMENT),
            };
            Ok(())
        })
    }
}

/// Signs the TLS client authentication through `signer` instead of a private key: the key
/// stays with the application (see fp_signer_new()). The options share the signer, so it may
/// be freed right after. Replaces a private key set before. If the signer was made from a
/// certificate, that certificate becomes the client certificate (replacing one set before);
/// otherwise set the certificate with fp_client_options_set_cert_file() or
/// fp_client_options_set_cert_pem(). When connecting, a signer whose key is not the
/// certificate's fails with `FP_ERR_SIGNER` before any network I/O, and so does a handshake
/// whose signature the callback fails.
#[unsafe(no_mangle)]
pub extern "C" fn fp_client_options_set_signer(
    options: *mut fp_client_options,
    signer: *const fp_signer,
) -> fp_result {
    ffi_panic_boundary! {
        with_options(options, |o| {
            // SAFETY: NULL or a live handle from fp_signer_new(), per the header.
            let signer = unsafe { fp_signer::try_ref(signer) }?;
            if let Some(cert) = signer.certificate() {
                o.cert = Some(cert.clone());
            }
            o.key = Some(PrivateKey::Signer(signer.signer()));
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkcs11::{
        fp_client_options_set_pkcs11_key_label, fp_client_options_set_pkcs11_module,
    };

    #[test]
    fn setters_validate_and_store() {
        let mut o = std::ptr::null_mut();
        assert_eq!(
            fp_client_options_new(std::ptr::null(), &mut o),
            FP_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            fp_client_options_new(c"localhost".as_ptr(), std::ptr::null_mut()),
            FP_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            fp_client_options_new(c"".as_ptr(), &mut o),
            FP_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            fp_client_options_new(c"a b/c".as_ptr(), &mut o),
            FP_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            fp_client_options_new(c"\xff".as_ptr(), &mut o),
            FP_ERR_INVALID_UTF8
        );
        assert!(o.is_null(), "out is written only on success");
        assert_eq!(fp_client_options_new(c"localhost".as_ptr(), &mut o), FP_OK);
        assert!(!o.is_null());
        assert_eq!(fp_client_options_set_port(o, 0), FP_ERR_INVALID_ARGUMENT);
        assert_eq!(fp_client_options_set_port(o, 1883), FP_OK);
        assert_eq!(
            fp_client_options_set_mqtt_version(o, 4),
            FP_ERR_INVALID_ARGUMENT
        );
        assert_eq!(fp_client_options_set_mqtt_version(o, 3), FP_OK);
        assert_eq!(
            fp_client_options_set_keep_alive_secs(o, 4),
            FP_ERR_INVALID_ARGUMENT
        );
        assert_eq!(fp_client_options_set_keep_alive_secs(o, 5), FP_OK);
        assert_eq!(
            fp_client_options_set_operation_timeout_ms(o, 0),
            FP_ERR_INVALID_ARGUMENT
        );
        assert_eq!(fp_client_options_set_connect_timeout_ms(o, 250), FP_OK);
        assert_eq!(
            fp_client_options_set_template_name(o, c"no/slash".as_ptr()),
            FP_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            fp_client_options_set_template_name(o, std::ptr::null()),
            FP_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            fp_client_options_set_template_name(o, c"\xc3".as_ptr()),
            FP_ERR_INVALID_UTF8
        );
        assert_eq!(
            fp_client_options_set_template_name(o, c"FleetTemplate".as_ptr()),
            FP_OK
        );
        assert_eq!(
            fp_client_options_set_cert_file(o, std::ptr::null()),
            FP_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            fp_client_options_set_key_pem(o, c"".as_ptr()),
            FP_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            fp_client_options_set_client_id(o, c"\xc3".as_ptr()),
            FP_ERR_INVALID_UTF8
        );
        assert_eq!(
            fp_client_options_set_proxy(o, c"proxy".as_ptr(), 0),
            FP_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            fp_client_options_set_proxy(o, c"proxy".as_ptr(), 8080),
            FP_OK
        );
        assert_eq!(
            fp_client_options_set_port(std::ptr::null_mut(), 1),
            FP_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            fp_client_options_set_payload_format(o, 2),
            FP_ERR_INVALID_ARGUMENT
        );
        assert_eq!(
            fp_client_options_set_payload_format(std::ptr::null_mut(), FP_PAYLOAD_CBOR),
            FP_ERR_NULL_ARGUMENT
        );
        assert_eq!(unsafe { &(*o).inner }.format, PayloadFormat::Json);
        assert_eq!(
            fp_client_options_set_payload_format(o, FP_PAYLOAD_CBOR),
            FP_OK
        );
        assert_eq!(unsafe { &(*o).inner }.format, PayloadFormat::Cbor);
        let inner = unsafe { &(*o).inner };
        assert_eq!(inner.port, 1883);
        assert_eq!(inner.mqtt_version, MqttVersion::V311);
        assert_eq!(inner.keep_alive, Duration::from_secs(5));
        assert_eq!(inner.connect_timeout, Duration::from_millis(250));
        assert_eq!(inner.proxy, Some(("proxy".to_owned(), 8080)));
        assert!(unsafe { (*o).cert.is_none() && (*o).key.is_none() });
        // One key source: the last one set replaces the others.
        assert_eq!(
            fp_client_options_set_pkcs11_module(o, c"m.so".as_ptr()),
            FP_OK
        );
        assert_eq!(
            fp_client_options_set_pkcs11_key_label(o, c"k".as_ptr()),
            FP_OK
        );
        assert!(matches!(unsafe { &(*o).key }, Some(PrivateKey::Pkcs11(k)) if k.key_label == "k"));
        assert_eq!(fp_client_options_set_key_file(o, c"k.pem".as_ptr()), FP_OK);
        assert!(matches!(unsafe { &(*o).key }, Some(PrivateKey::Pem(_))));
        // A key without its certificate, then the pair.
        assert_eq!(
            unsafe { (*o).options() }.unwrap_err(),
            FP_ERR_INVALID_ARGUMENT
        );
        assert_eq!(fp_client_options_set_cert_file(o, c"c.pem".as_ptr()), FP_OK);
        assert!(unsafe { (*o).checked() }.unwrap().credentials.is_some());
        fp_client_options_free(o);
        fp_client_options_free(std::ptr::null_mut());
    }
}
