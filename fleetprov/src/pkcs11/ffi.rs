//! The few PKCS#11 calls the library makes, on a module's function list.
//!
//! The module is opened with `dlopen` (libloading) and only `C_GetFunctionList` is looked up;
//! everything else goes through the list it returns. The C types and constants are
//! cryptoki-sys's (types only: its loader, which looks up every function, is not used).
//! No Rust code runs under a module's frames (no callbacks are given: no mutex functions,
//! no session notification), so nothing can unwind into C.

use std::ffi::c_void;
use std::fmt;
use std::path::Path;
use std::ptr;

use cryptoki_sys::*;
use zeroize::Zeroizing;

/// A PKCS#11 function that failed: its return value and its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CkError {
    pub rv: CK_RV,
    pub function: &'static str,
}

/// Names of the return values users and tests meet; others are shown as numbers.
const RV_NAMES: &[(CK_RV, &str)] = &[
    (CKR_CANCEL, "CKR_CANCEL"),
    (CKR_HOST_MEMORY, "CKR_HOST_MEMORY"),
    (CKR_SLOT_ID_INVALID, "CKR_SLOT_ID_INVALID"),
    (CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR"),
    (CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED"),
    (CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD"),
    (CKR_CANT_LOCK, "CKR_CANT_LOCK"),
    (CKR_ATTRIBUTE_READ_ONLY, "CKR_ATTRIBUTE_READ_ONLY"),
    (CKR_ATTRIBUTE_SENSITIVE, "CKR_ATTRIBUTE_SENSITIVE"),
    (CKR_ATTRIBUTE_TYPE_INVALID, "CKR_ATTRIBUTE_TYPE_INVALID"),
    (CKR_ATTRIBUTE_VALUE_INVALID, "CKR_ATTRIBUTE_VALUE_INVALID"),
    (CKR_DATA_INVALID, "CKR_DATA_INVALID"),
    (CKR_DATA_LEN_RANGE, "CKR_DATA_LEN_RANGE"),
    (CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR"),
    (CKR_DEVICE_MEMORY, "CKR_DEVICE_MEMORY"),
    (CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED"),
    (CKR_FUNCTION_CANCELED, "CKR_FUNCTION_CANCELED"),
    (CKR_FUNCTION_NOT_SUPPORTED, "CKR_FUNCTION_NOT_SUPPORTED"),
    (CKR_KEY_HANDLE_INVALID, "CKR_KEY_HANDLE_INVALID"),
    (CKR_KEY_SIZE_RANGE, "CKR_KEY_SIZE_RANGE"),
    (CKR_KEY_TYPE_INCONSISTENT, "CKR_KEY_TYPE_INCONSISTENT"),
    (
        CKR_KEY_FUNCTION_NOT_PERMITTED,
        "CKR_KEY_FUNCTION_NOT_PERMITTED",
    ),
    (CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID"),
    (CKR_MECHANISM_PARAM_INVALID, "CKR_MECHANISM_PARAM_INVALID"),
    (CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID"),
    (CKR_OPERATION_ACTIVE, "CKR_OPERATION_ACTIVE"),
    (
        CKR_OPERATION_NOT_INITIALIZED,
        "CKR_OPERATION_NOT_INITIALIZED",
    ),
    (CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT"),
    (CKR_PIN_LEN_RANGE, "CKR_PIN_LEN_RANGE"),
    (CKR_PIN_EXPIRED, "CKR_PIN_EXPIRED"),
    (CKR_PIN_LOCKED, "CKR_PIN_LOCKED"),
    (CKR_SESSION_CLOSED, "CKR_SESSION_CLOSED"),
    (CKR_SESSION_COUNT, "CKR_SESSION_COUNT"),
    (CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID"),
    (CKR_SESSION_READ_ONLY, "CKR_SESSION_READ_ONLY"),
    (
        CKR_SESSION_READ_WRITE_SO_EXISTS,
        "CKR_SESSION_READ_WRITE_SO_EXISTS",
    ),
    (CKR_TEMPLATE_INCOMPLETE, "CKR_TEMPLATE_INCOMPLETE"),
    (CKR_TEMPLATE_INCONSISTENT, "CKR_TEMPLATE_INCONSISTENT"),
    (CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT"),
    (CKR_TOKEN_NOT_RECOGNIZED, "CKR_TOKEN_NOT_RECOGNIZED"),
    (CKR_TOKEN_WRITE_PROTECTED, "CKR_TOKEN_WRITE_PROTECTED"),
    (CKR_USER_ALREADY_LOGGED_IN, "CKR_USER_ALREADY_LOGGED_IN"),
    (CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN"),
    (CKR_USER_PIN_NOT_INITIALIZED, "CKR_USER_PIN_NOT_INITIALIZED"),
    (CKR_USER_TYPE_INVALID, "CKR_USER_TYPE_INVALID"),
    (CKR_DOMAIN_PARAMS_INVALID, "CKR_DOMAIN_PARAMS_INVALID"),
    (CKR_CURVE_NOT_SUPPORTED, "CKR_CURVE_NOT_SUPPORTED"),
    (CKR_BUFFER_TOO_SMALL, "CKR_BUFFER_TOO_SMALL"),
    (CKR_CRYPTOKI_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED"),
    (
        CKR_CRYPTOKI_ALREADY_INITIALIZED,
        "CKR_CRYPTOKI_ALREADY_INITIALIZED",
    ),
];

/// `CKR_PIN_INCORRECT`, or `CKR 0x80000001` for a value without a name here.
pub(crate) struct RvName(pub CK_RV);

impl fmt::Display for RvName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match RV_NAMES.iter().find(|(rv, _)| *rv == self.0) {
            Some((_, name)) => f.write_str(name),
            None => write!(f, "CKR {:#010x}", self.0),
        }
    }
}

impl fmt::Display for CkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} from {}", RvName(self.rv), self.function)
    }
}

fn check(rv: CK_RV, function: &'static str) -> Result<(), CkError> {
    if rv == CKR_OK {
        Ok(())
    } else {
        Err(CkError { rv, function })
    }
}

/// A function of the list, or `CKR_FUNCTION_NOT_SUPPORTED` if the module left it out.
fn function<F>(f: Option<F>, name: &'static str) -> Result<F, CkError> {
    f.ok_or(CkError {
        rv: CKR_FUNCTION_NOT_SUPPORTED,
        function: name,
    })
}

fn ulong(n: usize) -> CK_ULONG {
    n as CK_ULONG
}

/// A loaded module: its function list. Modules are never unloaded, so the list lives as long
/// as the process.
#[derive(Clone, Copy)]
pub(crate) struct Module {
    list: &'static CK_FUNCTION_LIST,
}

impl fmt::Debug for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Module")
    }
}

impl Module {
    /// Opens the module at `path` and asks it for its function list. The module stays loaded
    /// for the rest of the process. The error names what went wrong (not the path: the
    /// caller's message does).
    pub(crate) fn load(path: &Path) -> Result<Module, String> {
        // SAFETY: loading a library runs its initialisers. The path is the module the caller
        // named to be loaded as a PKCS#11 module; running its code is what it is for.
        let library = unsafe { libloading::Library::new(path) }.map_err(|e| e.to_string())?;
        // SAFETY: the symbol is declared with the type PKCS#11 gives C_GetFunctionList; the
        // function pointer is used only while `library` is loaded (forever, below).
        let get: libloading::Symbol<unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV> =
            unsafe { library.get(b"C_GetFunctionList\0") }
                .map_err(|_| "it has no C_GetFunctionList (is it a PKCS#11 module?)".to_owned())?;
        let mut list: *mut CK_FUNCTION_LIST = ptr::null_mut();
        // SAFETY: C_GetFunctionList writes one pointer to the out-parameter, which is valid.
        let rv = unsafe { get(&mut list) };
        check(rv, "C_GetFunctionList").map_err(|e| e.to_string())?;
        // SAFETY: on success the module returns a pointer to its function list, which stays
        // valid while the module is loaded; the library is leaked below, so for the process.
        // A NULL pointer is turned into an error by `as_ref`.
        let list = unsafe { list.as_ref() }
            .ok_or_else(|| "C_GetFunctionList returned no function list".to_owned())?;
        // Never unloaded: other code in the process may use the module too, and unloading
        // PKCS#11 modules is a known source of crashes.
        std::mem::forget(library);
        Ok(Module { list })
    }

    /// `C_Initialize` with the operating system's locking; a module that another part of the
    /// process initialised already is fine.
    pub(crate) fn initialize(self) -> Result<(), CkError> {
        let f = function(self.list.C_Initialize, "C_Initialize")?;
        let mut args = CK_C_INITIALIZE_ARGS {
            CreateMutex: None,
            DestroyMutex: None,
            LockMutex: None,
            UnlockMutex: None,
            flags: CKF_OS_LOCKING_OK,
            pReserved: ptr::null_mut(),
        };
        // SAFETY: `args` is a valid CK_C_INITIALIZE_ARGS for the duration of the call.
        let rv = unsafe { f((&mut args as *mut CK_C_INITIALIZE_ARGS).cast()) };
        match rv {
            CKR_CRYPTOKI_ALREADY_INITIALIZED => Ok(()),
            rv => check(rv, "C_Initialize"),
        }
    }

    /// The slots that have a token.
    pub(crate) fn slots_with_token(self) -> Result<Vec<CK_SLOT_ID>, CkError> {
        let f = function(self.list.C_GetSlotList, "C_GetSlotList")?;
        loop {
            let mut count: CK_ULONG = 0;
            // SAFETY: with a NULL list the module only writes the count, a valid pointer.
            check(
                unsafe { f(CK_TRUE, ptr::null_mut(), &mut count) },
                "C_GetSlotList",
            )?;
            let mut slots: Vec<CK_SLOT_ID> = vec![0; count as usize];
            // SAFETY: `slots` has room for `count` ids, and the module writes at most that many
            // (or says CKR_BUFFER_TOO_SMALL); `count` is valid to write.
            let rv = unsafe { f(CK_TRUE, slots.as_mut_ptr(), &mut count) };
            if rv == CKR_BUFFER_TOO_SMALL {
                continue; // a token came in between the two calls
            }
            check(rv, "C_GetSlotList")?;
            slots.truncate(count as usize);
            return Ok(slots);
        }
    }

    /// The label of the token in `slot`, without its trailing blanks.
    pub(crate) fn token_label(self, slot: CK_SLOT_ID) -> Result<String, CkError> {
        let f = function(self.list.C_GetTokenInfo, "C_GetTokenInfo")?;
        let mut info = CK_TOKEN_INFO::default();
        // SAFETY: `info` is a valid CK_TOKEN_INFO for the module to fill in.
        check(unsafe { f(slot, &mut info) }, "C_GetTokenInfo")?;
        Ok(String::from_utf8_lossy(&info.label).trim_end().to_owned())
    }

    /// A serial session on the token in `slot`, read-write if asked; closed when dropped.
    pub(crate) fn open_session(
        self,
        slot: CK_SLOT_ID,
        read_write: bool,
    ) -> Result<Session, CkError> {
        let f = function(self.list.C_OpenSession, "C_OpenSession")?;
        let flags = if read_write {
            CKF_SERIAL_SESSION | CKF_RW_SESSION
        } else {
            CKF_SERIAL_SESSION
        };
        let mut handle: CK_SESSION_HANDLE = 0;
        // SAFETY: no notification callback and no application pointer; `handle` is valid to
        // write.
        check(
            unsafe { f(slot, flags, ptr::null_mut(), None, &mut handle) },
            "C_OpenSession",
        )?;
        Ok(Session {
            module: self,
            handle,
        })
    }
}

/// The value of an attribute in a template.
pub(crate) enum Value<'a> {
    Bool(bool),
    Ulong(CK_ULONG),
    Bytes(&'a [u8]),
}

/// One attribute of a template: its type and value.
pub(crate) struct Attr<'a>(pub CK_ATTRIBUTE_TYPE, pub Value<'a>);

/// The C form of `attrs`, pointing into them: valid while `attrs` is borrowed. The module
/// only reads a template's values; the pointers are `*mut` because the C type says so.
fn template<'a>(attrs: &'a [Attr<'a>], bools: &'a [CK_BBOOL]) -> Vec<CK_ATTRIBUTE> {
    attrs
        .iter()
        .zip(bools)
        .map(|(Attr(ty, value), b)| {
            let (p, len): (*const c_void, usize) = match value {
                Value::Bool(_) => ((b as *const CK_BBOOL).cast(), 1),
                Value::Ulong(n) => (
                    (n as *const CK_ULONG).cast(),
                    std::mem::size_of::<CK_ULONG>(),
                ),
                Value::Bytes(v) => (v.as_ptr().cast(), v.len()),
            };
            CK_ATTRIBUTE {
                type_: *ty,
                pValue: p as *mut c_void,
                ulValueLen: ulong(len),
            }
        })
        .collect()
}

/// The CK_BBOOL form of the booleans of `attrs` (one per attribute, unused for others).
fn bools(attrs: &[Attr<'_>]) -> Vec<CK_BBOOL> {
    attrs
        .iter()
        .map(|a| match a.1 {
            Value::Bool(true) => CK_TRUE,
            _ => CK_FALSE,
        })
        .collect()
}

/// A mechanism and its parameter.
pub(crate) enum Mechanism {
    Plain(CK_MECHANISM_TYPE),
    Pss(CK_RSA_PKCS_PSS_PARAMS),
}

impl Mechanism {
    /// The C form, pointing into `self`.
    fn c(&mut self) -> CK_MECHANISM {
        match self {
            Mechanism::Plain(m) => CK_MECHANISM {
                mechanism: *m,
                pParameter: ptr::null_mut(),
                ulParameterLen: 0,
            },
            Mechanism::Pss(params) => CK_MECHANISM {
                mechanism: CKM_RSA_PKCS_PSS,
                pParameter: (params as *mut CK_RSA_PKCS_PSS_PARAMS).cast(),
                ulParameterLen: ulong(std::mem::size_of::<CK_RSA_PKCS_PSS_PARAMS>()),
            },
        }
    }
}

/// An open session; closed when dropped.
#[derive(Debug)]
pub(crate) struct Session {
    module: Module,
    handle: CK_SESSION_HANDLE,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(f) = function(self.module.list.C_CloseSession, "C_CloseSession") {
            // SAFETY: the handle is this session's, opened by this module and closed only
            // here. A failure leaves nothing to do.
            let _ = unsafe { f(self.handle) };
        }
    }
}

impl Session {
    /// `C_Login` as the user. The PIN is copied into a buffer the module may read (the C type
    /// is not const), wiped after the call.
    pub(crate) fn login(&self, pin: &str) -> Result<(), CkError> {
        let f = function(self.module.list.C_Login, "C_Login")?;
        let mut pin = Zeroizing::new(pin.as_bytes().to_vec());
        // SAFETY: the PIN buffer is valid for its length during the call.
        let rv = unsafe { f(self.handle, CKU_USER, pin.as_mut_ptr(), ulong(pin.len())) };
        check(rv, "C_Login")
    }

    /// The objects that match `attrs`.
    pub(crate) fn find(&self, attrs: &[Attr<'_>]) -> Result<Vec<CK_OBJECT_HANDLE>, CkError> {
        let init = function(self.module.list.C_FindObjectsInit, "C_FindObjectsInit")?;
        let next = function(self.module.list.C_FindObjects, "C_FindObjects")?;
        let last = function(self.module.list.C_FindObjectsFinal, "C_FindObjectsFinal")?;
        let bools = bools(attrs);
        let mut template = template(attrs, &bools);
        // SAFETY: the template points into `attrs` and `bools`, borrowed for the call.
        check(
            unsafe { init(self.handle, template.as_mut_ptr(), ulong(template.len())) },
            "C_FindObjectsInit",
        )?;
        let mut found = Vec::new();
        let mut batch: [CK_OBJECT_HANDLE; 16] = [0; 16];
        let result = loop {
            let mut count: CK_ULONG = 0;
            // SAFETY: `batch` has room for the number of handles given; `count` is valid to
            // write.
            let rv = unsafe {
                next(
                    self.handle,
                    batch.as_mut_ptr(),
                    ulong(batch.len()),
                    &mut count,
                )
            };
            if let Err(e) = check(rv, "C_FindObjects") {
                break Err(e);
            }
            let count = (count as usize).min(batch.len());
            if count == 0 {
                break Ok(());
            }
            found.extend_from_slice(&batch[..count]);
        };
        // SAFETY: ends the search begun above on this session.
        let rv = unsafe { last(self.handle) };
        result?;
        check(rv, "C_FindObjectsFinal")?;
        Ok(found)
    }

    /// The value of one attribute of `object`; an error if the object has none, or it is
    /// sensitive.
    pub(crate) fn attribute(
        &self,
        object: CK_OBJECT_HANDLE,
        ty: CK_ATTRIBUTE_TYPE,
    ) -> Result<Vec<u8>, CkError> {
        let f = function(self.module.list.C_GetAttributeValue, "C_GetAttributeValue")?;
        let mut attr = CK_ATTRIBUTE {
            type_: ty,
            pValue: ptr::null_mut(),
            ulValueLen: 0,
        };
        // SAFETY: with a NULL value the module writes only the length into `attr`.
        check(
            unsafe { f(self.handle, object, &mut attr, 1) },
            "C_GetAttributeValue",
        )?;
        if attr.ulValueLen == CK_UNAVAILABLE_INFORMATION {
            return Err(CkError {
                rv: CKR_ATTRIBUTE_TYPE_INVALID,
                function: "C_GetAttributeValue",
            });
        }
        let mut value = vec![0u8; attr.ulValueLen as usize];
        attr.pValue = value.as_mut_ptr().cast();
        // SAFETY: `value` has room for the length the module gave, which `attr` says.
        check(
            unsafe { f(self.handle, object, &mut attr, 1) },
            "C_GetAttributeValue",
        )?;
        value.truncate(attr.ulValueLen as usize);
        Ok(value)
    }

    /// Signs `data` with the private key `key`.
    pub(crate) fn sign(
        &self,
        mut mechanism: Mechanism,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
    ) -> Result<Vec<u8>, CkError> {
        let init = function(self.module.list.C_SignInit, "C_SignInit")?;
        let sign = function(self.module.list.C_Sign, "C_Sign")?;
        let mut m = mechanism.c();
        // SAFETY: `m` and the parameter it points to (in `mechanism`) live through the call.
        check(unsafe { init(self.handle, &mut m, key) }, "C_SignInit")?;
        // The module only reads the data (the C type is not const).
        let input = data.as_ptr() as *mut CK_BYTE;
        // SAFETY (both calls): the data is valid for its length; `out` is NULL (the module
        // writes only the signature's length, and the operation stays active) or has room
        // for `len` bytes, the length the module asked for.
        let call = |out: *mut CK_BYTE, len: &mut CK_ULONG| {
            check(
                unsafe { sign(self.handle, input, ulong(data.len()), out, len) },
                "C_Sign",
            )
        };
        let mut len: CK_ULONG = 0;
        call(ptr::null_mut(), &mut len)?;
        let mut signature = vec![0u8; len as usize];
        call(signature.as_mut_ptr(), &mut len)?;
        signature.truncate(len as usize);
        Ok(signature)
    }

    /// Generates a key pair: the public and the private key's handles.
    pub(crate) fn generate_key_pair(
        &self,
        mechanism: CK_MECHANISM_TYPE,
        public: &[Attr<'_>],
        private: &[Attr<'_>],
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE), CkError> {
        let f = function(self.module.list.C_GenerateKeyPair, "C_GenerateKeyPair")?;
        let mut m = Mechanism::Plain(mechanism).c();
        let (public_bools, private_bools) = (bools(public), bools(private));
        let mut public = template(public, &public_bools);
        let mut private = template(private, &private_bools);
        let (mut public_key, mut private_key): (CK_OBJECT_HANDLE, CK_OBJECT_HANDLE) = (0, 0);
        // SAFETY: the mechanism has no parameter; both templates point into values borrowed
        // for the call; the two handles are valid to write.
        let rv = unsafe {
            f(
                self.handle,
                &mut m,
                public.as_mut_ptr(),
                ulong(public.len()),
                private.as_mut_ptr(),
                ulong(private.len()),
                &mut public_key,
                &mut private_key,
            )
        };
        check(rv, "C_GenerateKeyPair")?;
        Ok((public_key, private_key))
    }

    /// Creates an object from `attrs`.
    pub(crate) fn create_object(&self, attrs: &[Attr<'_>]) -> Result<CK_OBJECT_HANDLE, CkError> {
        let f = function(self.module.list.C_CreateObject, "C_CreateObject")?;
        let bools = bools(attrs);
        let mut template = template(attrs, &bools);
        let mut object: CK_OBJECT_HANDLE = 0;
        // SAFETY: the template points into values borrowed for the call; `object` is valid to
        // write.
        let rv = unsafe {
            f(
                self.handle,
                template.as_mut_ptr(),
                ulong(template.len()),
                &mut object,
            )
        };
        check(rv, "C_CreateObject")?;
        Ok(object)
    }

    /// Destroys `object`.
    pub(crate) fn destroy_object(&self, object: CK_OBJECT_HANDLE) -> Result<(), CkError> {
        let f = function(self.module.list.C_DestroyObject, "C_DestroyObject")?;
        // SAFETY: plain handles, no pointers.
        check(unsafe { f(self.handle, object) }, "C_DestroyObject")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_values_are_named_or_shown_in_hex() {
        let e = |rv| {
            CkError {
                rv,
                function: "C_Sign",
            }
            .to_string()
        };
        assert_eq!(e(CKR_PIN_INCORRECT), "CKR_PIN_INCORRECT from C_Sign");
        assert_eq!(e(CKR_PIN_LOCKED), "CKR_PIN_LOCKED from C_Sign");
        assert_eq!(e(CKR_GENERAL_ERROR), "CKR_GENERAL_ERROR from C_Sign");
        assert_eq!(
            e(CKR_USER_NOT_LOGGED_IN),
            "CKR_USER_NOT_LOGGED_IN from C_Sign"
        );
        assert_eq!(e(0x8000_0123), "CKR 0x80000123 from C_Sign");
        assert_eq!(e(0x42), "CKR 0x00000042 from C_Sign");
        // Each name is its own constant's: no value twice, every name a CKR_ name.
        for (i, (rv, name)) in RV_NAMES.iter().enumerate() {
            assert!(name.starts_with("CKR_"), "{name}");
            assert!(
                RV_NAMES[i + 1..].iter().all(|(other, _)| other != rv),
                "{name} twice"
            );
        }
        for (rv, name) in [
            (0xa0, "CKR_PIN_INCORRECT"),
            (0xa4, "CKR_PIN_LOCKED"),
            (0x101, "CKR_USER_NOT_LOGGED_IN"),
            (0xe0, "CKR_TOKEN_NOT_PRESENT"),
            (0x3, "CKR_SLOT_ID_INVALID"),
            (0x60, "CKR_KEY_HANDLE_INVALID"),
            (0x70, "CKR_MECHANISM_INVALID"),
            (0xd0, "CKR_TEMPLATE_INCOMPLETE"),
            (0x13, "CKR_ATTRIBUTE_VALUE_INVALID"),
            (0x6, "CKR_FUNCTION_FAILED"),
            (0x5, "CKR_GENERAL_ERROR"),
            (0x30, "CKR_DEVICE_ERROR"),
            (0x7, "CKR_ARGUMENTS_BAD"),
            (0x190, "CKR_CRYPTOKI_NOT_INITIALIZED"),
            (0xb3, "CKR_SESSION_HANDLE_INVALID"),
            (0x82, "CKR_OBJECT_HANDLE_INVALID"),
            (0x150, "CKR_BUFFER_TOO_SMALL"),
            (0x2, "CKR_HOST_MEMORY"),
        ] {
            assert_eq!(RvName(rv).to_string(), name);
        }
    }

    #[test]
    fn a_library_that_is_not_a_module_is_refused() {
        let e = Module::load(Path::new("/nonexistent/libpkcs11.so")).unwrap_err();
        assert!(e.contains("/nonexistent/libpkcs11.so"), "{e}");
        // A shared library without C_GetFunctionList.
        let e = Module::load(Path::new("libc.so.6")).unwrap_err();
        assert!(e.contains("has no C_GetFunctionList"), "{e}");
        // A file that is not a shared library at all.
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake.so");
        std::fs::write(&fake, b"not an ELF file").unwrap();
        assert!(Module::load(&fake).is_err());
    }

    #[test]
    fn templates_point_at_their_values() {
        let id = [1u8, 2, 3];
        let attrs = [
            Attr(CKA_TOKEN, Value::Bool(true)),
            Attr(CKA_MODULUS_BITS, Value::Ulong(2048)),
            Attr(CKA_ID, Value::Bytes(&id)),
            Attr(CKA_PRIVATE, Value::Bool(false)),
        ];
        let b = bools(&attrs);
        let t = template(&attrs, &b);
        assert_eq!(t.len(), 4);
        // SAFETY (test): each pointer points at a live value of the length given.
        unsafe {
            assert_eq!(*(t[0].pValue as *const CK_BBOOL), CK_TRUE);
            assert_eq!(t[0].ulValueLen, 1);
            assert_eq!(*(t[1].pValue as *const CK_ULONG), 2048);
            assert_eq!(std::slice::from_raw_parts(t[2].pValue as *const u8, 3), &id);
            assert_eq!(*(t[3].pValue as *const CK_BBOOL), CK_FALSE);
        }
        assert_eq!(t[1].type_, CKA_MODULUS_BITS);
    }
}
