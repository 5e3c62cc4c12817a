//! The few C functions the hostile cases need, called from Rust: the C surface has semantics
//! of its own (an operation may start before the connection is up) that the Rust `Client`
//! cannot reach.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::oneshot;

/// Declares each function as a field of a table loaded once from the library, and an `unsafe fn`
/// of the same name that calls through it.
macro_rules! c_api {
    ($($name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;)*) => {
        struct Api {
            $($name: unsafe extern "C" fn($($ty),*) $(-> $ret)?,)*
            _lib: libloading::Library,
        }

        fn api() -> &'static Api {
            static API: OnceLock<Api> = OnceLock::new();
            API.get_or_init(|| {
                let path = fleetprov_testkit::cprog::lib_dir().join("libfleetprov.so");
                // SAFETY: the library's initialisers are Rust's and tokio's, safe to run here;
                // each symbol has the C signature the header declares.
                unsafe {
                    let lib = libloading::Library::new(&path)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    Api {
                        $($name: *lib
                            .get(concat!(stringify!($name), "\0").as_bytes())
                            .unwrap_or_else(|e| panic!("{}: {e}", stringify!($name))),)*
                        _lib: lib,
                    }
                }
            })
        }

        $(
            unsafe fn $name($($arg: $ty),*) $(-> $ret)? {
                (api().$name)($($arg),*)
            }
        )*
    };
}

/// Result codes as numbered in `include/fleetprov.h`.
pub const FP_OK: c_int = 0;
pub const FP_ERR_DISCONNECTED: c_int = 8;
pub const FP_ERR_PROTOCOL: c_int = 18;
pub const FP_ERR_PUBLISH_REFUSED: c_int = 19;

type Handle = *mut c_void;
type LifecycleCb = extern "C" fn(*mut c_void, c_int, *const c_void);
type OpCb = extern "C" fn(*mut c_void, *const c_void, *const c_void);

// The library is a cdylib only (no rlib to link into this test), so its functions are looked
// up in the libfleetprov.so of this build, the file a C program links to.
c_api! {
    fp_client_options_new(endpoint: *const c_char, out: *mut Handle) -> c_int;
    fp_client_options_free(options: Handle);
    fp_client_options_set_port(options: Handle, port: u16) -> c_int;
    fp_client_options_set_ca_pem(options: Handle, pem: *const c_char) -> c_int;
    fp_client_options_set_client_id(options: Handle, id: *const c_char) -> c_int;
    fp_client_options_set_mqtt_version(options: Handle, version: c_int) -> c_int;
    fp_client_options_set_operation_timeout_ms(options: Handle, ms: u32) -> c_int;
    fp_client_options_set_connect_timeout_ms(options: Handle, ms: u32) -> c_int;
    fp_client_new(options: Handle, out: *mut Handle) -> c_int;
    fp_client_connect(client: Handle, cb: Option<LifecycleCb>, user_data: *mut c_void) -> c_int;
    fp_client_free(client: Handle);
    fp_create_keys(client: Handle, cb: Option<OpCb>, user_data: *mut c_void) -> c_int;
    fp_error_code(error: *const c_void) -> c_int;
    fp_error_message(error: *const c_void) -> *const c_char;
}

/// Where an operation's callback leaves (code, message).
type Outcome = Mutex<Option<oneshot::Sender<(c_int, String)>>>;

extern "C" fn on_op(user_data: *mut c_void, _response: *const c_void, error: *const c_void) {
    // SAFETY: `user_data` is the `Outcome` that `CClient` keeps alive until the client is freed.
    let outcome = unsafe { &*(user_data as *const Outcome) };
    let result = if error.is_null() {
        (FP_OK, String::new())
    } else {
        // SAFETY: the library passes a valid error for the duration of the callback.
        unsafe {
            let m = fp_error_message(error);
            let msg = if m.is_null() {
                String::new()
            } else {
                CStr::from_ptr(m).to_string_lossy().into_owned()
            };
            (fp_error_code(error), msg)
        }
    };
    if let Some(tx) = outcome.lock().unwrap().take() {
        let _ = tx.send(result);
    }
}

/// A C client connected to 127.0.0.1:`port` (name `localhost`) trusting `ca_pem`, with a
/// CreateKeysAndCertificate started right after fp_client_connect(), before any CONNACK.
pub struct CClient {
    client: Handle,
    outcome: Box<Outcome>,
    rx: Option<oneshot::Receiver<(c_int, String)>>,
}

// The handle is used from one test task at a time; the library allows any thread.
unsafe impl Send for CClient {}

impl CClient {
    pub fn connect_and_create_keys(port: u16, ca_pem: &str, mqtt5: bool) -> CClient {
        let (tx, rx) = oneshot::channel();
        let outcome: Box<Outcome> = Box::new(Mutex::new(Some(tx)));
        let endpoint = CString::new("localhost").unwrap();
        let ca = CString::new(ca_pem).unwrap();
        let id = CString::new("hostile-c").unwrap();
        let mut opts: Handle = std::ptr::null_mut();
        let mut client: Handle = std::ptr::null_mut();
        // SAFETY: the pointers are valid C strings and out-parameters for the calls' duration;
        // `outcome` outlives the client (freed in Drop before it).
        unsafe {
            assert_eq!(fp_client_options_new(endpoint.as_ptr(), &mut opts), FP_OK);
            assert_eq!(fp_client_options_set_port(opts, port), FP_OK);
            assert_eq!(fp_client_options_set_ca_pem(opts, ca.as_ptr()), FP_OK);
            assert_eq!(fp_client_options_set_client_id(opts, id.as_ptr()), FP_OK);
            assert_eq!(
                fp_client_options_set_mqtt_version(opts, if mqtt5 { 5 } else { 3 }),
                FP_OK
            );
            assert_eq!(fp_client_options_set_connect_timeout_ms(opts, 5000), FP_OK);
            assert_eq!(
                fp_client_options_set_operation_timeout_ms(opts, 8000),
                FP_OK
            );
            assert_eq!(fp_client_new(opts, &mut client), FP_OK);
            fp_client_options_free(opts);
            assert_eq!(fp_client_connect(client, None, std::ptr::null_mut()), FP_OK);
            let ud = &*outcome as *const Outcome as *mut c_void;
            assert_eq!(fp_create_keys(client, Some(on_op), ud), FP_OK);
        }
        CClient {
            client,
            outcome,
            rx: Some(rx),
        }
    }

    /// The operation's (code, message), within `limit`.
    pub async fn outcome(&mut self, limit: Duration) -> (c_int, String) {
        let rx = self.rx.take().expect("outcome taken twice");
        tokio::time::timeout(limit, rx)
            .await
            .expect("the operation's callback did not fire in time")
            .expect("the callback was dropped without firing")
    }
}

impl Drop for CClient {
    fn drop(&mut self) {
        let client = self.client;
        // fp_client_free blocks until the client's callbacks are done: not on a runtime thread.
        // SAFETY: the handle came from fp_client_new and is freed once.
        tokio::task::block_in_place(|| unsafe { fp_client_free(client) });
        let _ = &self.outcome;
    }
}
