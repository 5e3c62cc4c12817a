//! The C entry points that take strings and numbers from the caller, called through their C
//! symbols as a C program would: fp_client_options_new and every setter, fp_client_new,
//! fp_register_thing_check, fp_register_thing / fp_create_from_csr on a client that is not
//! connected, fp_result_str. Besides "no crash", each result is checked against the rules
//! of the header (NULL, invalid UTF-8 and empty strings get their own codes; a refused start
//! never calls back).
//!
//! Input: a 12-byte header of numbers, then NUL-separated strings; a string the input does
//! not reach is passed as NULL.
#![no_main]

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

// The symbols come from the C library's sources built as an rlib (fuzz/ffi); nothing in Rust
// names the crate otherwise.
extern crate fleetprov_c;

/// Opaque handles, as C sees them.
type Options = c_void;
type Client = c_void;
type Callback = Option<unsafe extern "C" fn(*mut c_void, *const c_void, *const c_void)>;

// Return types are `fp_result`, a C enum: an `int` in the C ABI.
extern "C" {
    fn fp_result_str(result: c_int) -> *const c_char;
    fn fp_client_options_new(endpoint: *const c_char, out: *mut *mut Options) -> c_int;
    fn fp_client_options_free(options: *mut Options);
    fn fp_client_options_set_port(options: *mut Options, port: u16) -> c_int;
    fn fp_client_options_set_cert_file(options: *mut Options, path: *const c_char) -> c_int;
    fn fp_client_options_set_key_file(options: *mut Options, path: *const c_char) -> c_int;
    fn fp_client_options_set_ca_file(options: *mut Options, path: *const c_char) -> c_int;
    fn fp_client_options_set_cert_pem(options: *mut Options, pem: *const c_char) -> c_int;
    fn fp_client_options_set_key_pem(options: *mut Options, pem: *const c_char) -> c_int;
    fn fp_client_options_set_ca_pem(options: *mut Options, pem: *const c_char) -> c_int;
    fn fp_client_options_set_client_id(options: *mut Options, id: *const c_char) -> c_int;
    fn fp_client_options_set_mqtt_version(options: *mut Options, version: c_int) -> c_int;
    fn fp_client_options_set_keep_alive_secs(options: *mut Options, seconds: u16) -> c_int;
    fn fp_client_options_set_operation_timeout_ms(options: *mut Options, ms: u32) -> c_int;
    fn fp_client_options_set_connect_timeout_ms(options: *mut Options, ms: u32) -> c_int;
    fn fp_client_options_set_proxy(options: *mut Options, host: *const c_char, port: u16) -> c_int;
    fn fp_client_new(options: *const Options, out: *mut *mut Client) -> c_int;
    fn fp_client_free(client: *mut Client);
    fn fp_register_thing_check(name: *const c_char, parameters: *const c_char) -> c_int;
    fn fp_register_thing(
        client: *mut Client,
        name: *const c_char,
        token: *const c_char,
        parameters: *const c_char,
        callback: Callback,
        user_data: *mut c_void,
    ) -> c_int;
    fn fp_create_from_csr(
        client: *mut Client,
        csr: *const c_char,
        callback: Callback,
        user_data: *mut c_void,
    ) -> c_int;
}

const FP_OK: c_int = 0;
const FP_ERR_NULL_ARGUMENT: c_int = 1;
const FP_ERR_INVALID_UTF8: c_int = 2;
const FP_ERR_INVALID_ARGUMENT: c_int = 3;
const FP_ERR_NOT_CONNECTED: c_int = 14;
const FP_ERR_INTERNAL: c_int = 17;

/// Calls of the callback; a start call that fails never calls it, and nothing here succeeds.
static CALLBACKS: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn never_called(_: *mut c_void, _: *const c_void, _: *const c_void) {
    CALLBACKS.fetch_add(1, Ordering::SeqCst);
}

/// A client that is never connected, kept for the whole run: it also keeps the library's
/// runtime up, so fp_client_new/fp_client_free below do not start and stop it every time.
struct Anchor(*mut Client);
// SAFETY: fp_client handles may be used from any thread (see the header).
unsafe impl Send for Anchor {}
unsafe impl Sync for Anchor {}

fn anchor() -> *mut Client {
    static ANCHOR: OnceLock<Anchor> = OnceLock::new();
    ANCHOR
        .get_or_init(|| unsafe {
            let mut o = ptr::null_mut();
            assert_eq!(fp_client_options_new(c"localhost".as_ptr(), &mut o), FP_OK);
            let mut c = ptr::null_mut();
            assert_eq!(fp_client_new(o, &mut c), FP_OK);
            fp_client_options_free(o);
            Anchor(c)
        })
        .0
}

/// One string argument: absent (NULL), or its bytes.
struct Arg(Option<CString>);

impl Arg {
    fn ptr(&self) -> *const c_char {
        self.0.as_ref().map_or(ptr::null(), |s| s.as_ptr())
    }

    /// What a setter that copies a non-empty string must return for it.
    fn string_result(&self) -> c_int {
        match &self.0 {
            None => FP_ERR_NULL_ARGUMENT,
            Some(s) => match s.to_str() {
                Err(_) => FP_ERR_INVALID_UTF8,
                Ok("") => FP_ERR_INVALID_ARGUMENT,
                Ok(_) => FP_OK,
            },
        }
    }
}

fn u16_at(h: &[u8; 12], i: usize) -> u16 {
    u16::from_le_bytes([h[i], h[i + 1]])
}

fn valid_result(r: c_int) -> bool {
    (FP_OK..=FP_ERR_INTERNAL).contains(&r)
}

fuzz_target!(|data: &[u8]| {
    let mut header = [0u8; 12];
    let n = data.len().min(12);
    header[..n].copy_from_slice(&data[..n]);
    let mut parts = data[n..].split(|b| *b == 0);
    // Pieces between NULs contain no NUL: CString::new cannot fail.
    let mut next = || Arg(parts.next().and_then(|p| CString::new(p).ok()));
    let endpoint = next();
    let files = [next(), next(), next()];
    let pems = [next(), next(), next()];
    let client_id = next();
    let proxy_host = next();
    let template = next();
    let token = next();
    let parameters = next();
    let csr = next();

    let port = u16_at(&header, 0);
    let version = c_int::from(header[2] as i8);
    let keep_alive = u16_at(&header, 3);
    let op_timeout = u32::from(u16_at(&header, 5));
    let connect_timeout = u32::from(u16_at(&header, 7));
    let proxy_port = u16_at(&header, 9);
    let code = c_int::from(header[11] as i8);

    unsafe {
        let name = fp_result_str(code);
        assert!(!name.is_null());
        assert!(!CStr::from_ptr(name).to_bytes().is_empty());

        let mut options = ptr::null_mut();
        let made = fp_client_options_new(endpoint.ptr(), &mut options);
        if endpoint.string_result() != FP_OK {
            assert_eq!(made, endpoint.string_result());
        }
        assert_eq!(made == FP_OK, !options.is_null());
        if !options.is_null() {
            let o = options;
            let expect = |r: c_int, want: c_int| assert_eq!(r, want);
            expect(
                fp_client_options_set_port(o, port),
                if port == 0 {
                    FP_ERR_INVALID_ARGUMENT
                } else {
                    FP_OK
                },
            );
            let setters: [unsafe extern "C" fn(*mut Options, *const c_char) -> c_int; 3] = [
                fp_client_options_set_cert_file,
                fp_client_options_set_key_file,
                fp_client_options_set_ca_file,
            ];
            for (set, arg) in setters.iter().zip(&files) {
                expect(set(o, arg.ptr()), arg.string_result());
                expect(set(ptr::null_mut(), arg.ptr()), FP_ERR_NULL_ARGUMENT);
            }
            let setters: [unsafe extern "C" fn(*mut Options, *const c_char) -> c_int; 3] = [
                fp_client_options_set_cert_pem,
                fp_client_options_set_key_pem,
                fp_client_options_set_ca_pem,
            ];
            for (set, arg) in setters.iter().zip(&pems) {
                expect(set(o, arg.ptr()), arg.string_result());
            }
            let id = fp_client_options_set_client_id(o, client_id.ptr());
            assert!(id == client_id.string_result() || id == FP_ERR_INVALID_ARGUMENT);
            let v = fp_client_options_set_mqtt_version(o, version);
            assert_eq!(
                v == FP_OK,
                version == 3 || version == 5,
                "version {version}"
            );
            let k = fp_client_options_set_keep_alive_secs(o, keep_alive);
            assert_eq!(k == FP_OK, keep_alive >= 5, "keep-alive {keep_alive}");
            let t = fp_client_options_set_operation_timeout_ms(o, op_timeout);
            assert_eq!(t == FP_OK, op_timeout > 0);
            let t = fp_client_options_set_connect_timeout_ms(o, connect_timeout);
            assert_eq!(t == FP_OK, connect_timeout > 0);
            let p = fp_client_options_set_proxy(o, proxy_host.ptr(), proxy_port);
            let host_ok = proxy_host.string_result();
            if host_ok != FP_OK {
                assert_eq!(p, host_ok);
            } else {
                assert_eq!(p == FP_OK, proxy_port != 0);
            }

            // Validates the whole set: a certificate without its key and the like.
            let mut client = ptr::null_mut();
            let r = fp_client_new(o, &mut client);
            assert!(
                r == FP_OK || r == FP_ERR_INVALID_ARGUMENT,
                "fp_client_new: {r}"
            );
            assert_eq!(r == FP_OK, !client.is_null());
            fp_client_free(client);
            fp_client_options_free(o);
        }

        let check = fp_register_thing_check(template.ptr(), parameters.ptr());
        assert!(
            matches!(
                check,
                FP_OK | FP_ERR_NULL_ARGUMENT | FP_ERR_INVALID_UTF8 | FP_ERR_INVALID_ARGUMENT
            ),
            "check: {check}"
        );
        // Arguments are checked before the connection state: an unconnected client shows
        // which pass. Any result is an error, so the callback must never run.
        let reg = fp_register_thing(
            anchor(),
            template.ptr(),
            token.ptr(),
            parameters.ptr(),
            Some(never_called),
            ptr::null_mut(),
        );
        assert!(valid_result(reg) && reg != FP_OK, "register: {reg}");
        // The order of its checks: name, token, parameters, then the connection.
        let name_only = fp_register_thing_check(template.ptr(), ptr::null());
        let want = if name_only != FP_OK {
            name_only
        } else if token.string_result() != FP_OK {
            token.string_result()
        } else if check != FP_OK {
            check
        } else {
            FP_ERR_NOT_CONNECTED
        };
        assert_eq!(reg, want);
        let c = fp_create_from_csr(anchor(), csr.ptr(), Some(never_called), ptr::null_mut());
        let want = match csr.string_result() {
            FP_OK => FP_ERR_NOT_CONNECTED,
            other => other,
        };
        assert_eq!(c, want);
        assert_eq!(CALLBACKS.load(Ordering::SeqCst), 0);
    }
});
