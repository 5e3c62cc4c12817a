//! `fp_signer`: a private key the library never holds, behind the application's sign callback.

use std::ffi::{c_char, c_int, c_void};
use std::sync::Arc;

use super::callback::{fp_release_callback, Callback};
use super::error::fp_result::{self, *};
use super::error::log_failure;
use super::handle::{check_out, Castable};
use super::strings::{nonempty_str_arg, opt_str_arg};
use fleetprov_core::client::Pem;
use fleetprov_core::error::{Error, ErrorKind};
use fleetprov_core::signer::{certificate_request, PublicKey, SignatureScheme, Signer};

/// A signature scheme the library asks a sign callback for.
///
/// Which ones a key is asked for depends on its type: an EC P-256 key only
/// `FP_SIGNATURE_ECDSA_P256_SHA256`, an EC P-384 key only `FP_SIGNATURE_ECDSA_P384_SHA384`, an
/// RSA key (2048 to 8192 bits) any RSA scheme. For RSA keys TLS 1.3 uses the PSS schemes
/// (`FP_SIGNATURE_RSA_PSS_SHA256` in practice) and a certificate signing request is signed
/// with `FP_SIGNATURE_RSA_PKCS1_SHA256`, so an RSA signer must offer both. New schemes may be
/// added in later versions: fail on a value you do not know.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum fp_signature_scheme {
    /// ECDSA on P-256 with SHA-256.
    FP_SIGNATURE_ECDSA_P256_SHA256 = 1,
    /// ECDSA on P-384 with SHA-384.
    FP_SIGNATURE_ECDSA_P384_SHA384 = 2,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    FP_SIGNATURE_RSA_PKCS1_SHA256 = 3,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    FP_SIGNATURE_RSA_PKCS1_SHA384 = 4,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    FP_SIGNATURE_RSA_PKCS1_SHA512 = 5,
    /// RSASSA-PSS with SHA-256, MGF1 with SHA-256, a 32-byte salt.
    FP_SIGNATURE_RSA_PSS_SHA256 = 6,
    /// RSASSA-PSS with SHA-384, MGF1 with SHA-384, a 48-byte salt.
    FP_SIGNATURE_RSA_PSS_SHA384 = 7,
    /// RSASSA-PSS with SHA-512, MGF1 with SHA-512, a 64-byte salt.
    FP_SIGNATURE_RSA_PSS_SHA512 = 8,
}

use fp_signature_scheme::*;

impl From<SignatureScheme> for fp_signature_scheme {
    fn from(s: SignatureScheme) -> fp_signature_scheme {
        match s {
            SignatureScheme::EcdsaP256Sha256 => FP_SIGNATURE_ECDSA_P256_SHA256,
            SignatureScheme::EcdsaP384Sha384 => FP_SIGNATURE_ECDSA_P384_SHA384,
            SignatureScheme::RsaPkcs1Sha256 => FP_SIGNATURE_RSA_PKCS1_SHA256,
            SignatureScheme::RsaPkcs1Sha384 => FP_SIGNATURE_RSA_PKCS1_SHA384,
            SignatureScheme::RsaPkcs1Sha512 => FP_SIGNATURE_RSA_PKCS1_SHA512,
            SignatureScheme::RsaPssSha256 => FP_SIGNATURE_RSA_PSS_SHA256,
            SignatureScheme::RsaPssSha384 => FP_SIGNATURE_RSA_PSS_SHA384,
            SignatureScheme::RsaPssSha512 => FP_SIGNATURE_RSA_PSS_SHA512,
        }
    }
}

/// The size of the signature buffer a sign callback gets: room for an RSA-8192 signature.
pub const FP_SIGNATURE_MAX_LEN: usize = 1024;

/// A buffer of this many bytes always holds the CSR PEM of fp_signer_create_csr(), NUL
/// included (an RSA-8192 key needs about 3,100).
#[allow(dead_code)] // for C callers; the library checks the buffer it is given
pub const FP_CSR_PEM_MAX_LEN: usize = 4096;

/// Signs with the application's private key.
///
/// Sign `message` (`message_len` bytes: the data itself, not a digest) with `scheme`, using the
/// key whose public key the ::fp_signer was made from. `digest` (`digest_len` bytes) is the
/// message already hashed with the scheme's hash, for key stores that sign a digest (a PKCS#11
/// `CKM_ECDSA` or `CKM_RSA_PKCS_PSS` mechanism, a TPM, OpenSSL's EVP_PKEY_sign()). Write the
/// signature to `signature`, which has room for `signature_capacity` bytes
/// (::FP_SIGNATURE_MAX_LEN), store its length in `*signature_len`, and return 0. Return any
/// other value on failure: the operation that needed the signature fails with
/// `FP_ERR_SIGNER`, and the message names the value returned.
///
/// Encoding: for RSA the `k`-byte signature (as long as the modulus); for ECDSA either the DER
/// `Ecdsa-Sig-Value` (what OpenSSL gives) or `r || s`, each padded to the curve's size (64
/// bytes for P-256, 96 for P-384: what PKCS#11 and most secure elements give). The library
/// checks every signature against the public key; one that does not verify is an
/// `FP_ERR_SIGNER` that says so.
///
/// Threads: called during the TLS handshake of a client whose options carry the signer, on
/// the library's network thread, so while it runs no client's network I/O moves: keep it to
/// the signature (a secure element takes 10 to 200 ms). Called inside fp_signer_create_csr() on
/// the calling thread. It may therefore run on several threads at once, and must not call
/// functions of this library. All pointers are borrowed for the duration of the call.
pub type fp_sign_callback = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        scheme: fp_signature_scheme,
        message: *const u8,
        message_len: usize,
        digest: *const u8,
        digest_len: usize,
        signature: *mut u8,
        signature_capacity: usize,
        signature_len: *mut usize,
    ) -> c_int,
>;

/// A private key held by the application (a secure element, a TPM, an HSM, its own store):
/// the library asks its sign callback for signatures and never sees the key.
///
/// Made by fp_signer_new() and released by fp_signer_free(). Options that take it
/// (fp_client_options_set_signer()) share it, so it may be freed right after. May be used from
/// any thread.
pub struct fp_signer {
    inner: Arc<CallbackSigner>,
    /// The certificate PEM the signer was made from, if it was one.
    certificate: Option<Pem>,
}

/// The sign callback's function.
type SignFn = unsafe extern "C" fn(
    *mut c_void,
    fp_signature_scheme,
    *const u8,
    usize,
    *const u8,
    usize,
    *mut u8,
    usize,
    *mut usize,
) -> c_int;

struct CallbackSigner {
    public: PublicKey,
    /// Released when the last options object or client holding the signer lets go.
    sign: Callback<SignFn>,
}

impl std::fmt::Debug for CallbackSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CallbackSigner({:?})", self.public)
    }
}

impl Signer for CallbackSigner {
    fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn sign(&self, scheme: SignatureScheme, message: &[u8]) -> Result<Vec<u8>, Error> {
        let digest = scheme.digest(message);
        let mut signature = vec![0u8; FP_SIGNATURE_MAX_LEN];
        // Past the buffer on purpose: a callback that never stores a length is caught.
        let mut len = usize::MAX;
        let rc = self
            .sign
            .invoke(|sign, user_data| {
                // SAFETY: the application's callback with its own `user_data`; every pointer is
                // valid for the stated length during the call.
                unsafe {
                    sign(
                        user_data,
                        scheme.into(),
                        message.as_ptr(),
                        message.len(),
                        digest.as_ptr(),
                        digest.len(),
                        signature.as_mut_ptr(),
                        signature.len(),
                        &mut len,
                    )
                }
            })
            .ok_or_else(|| Error::new(ErrorKind::Internal, "the library panicked while signing"))?;
        if rc != 0 {
            return Err(Error::new(
                ErrorKind::Signer,
                format!("the sign callback returned {rc}"),
            ));
        }
        if len == 0 || len > signature.len() {
            return Err(Error::new(
                ErrorKind::Signer,
                if len == usize::MAX {
                    "the sign callback returned 0 but did not set *signature_len".to_owned()
                } else {
                    format!(
                        "the sign callback returned a {len}-byte signature for a \
                         {FP_SIGNATURE_MAX_LEN}-byte buffer"
                    )
                },
            ));
        }
        signature.truncate(len);
        Ok(signature)
    }
}

impl Castable for fp_signer {}

impl fp_signer {
    pub(crate) fn signer(&self) -> Arc<dyn Signer> {
        self.inner.clone()
    }

    pub(crate) fn certificate(&self) -> Option<&Pem> {
        self.certificate.as_ref()
    }
}

/// Creates a signer for the private key whose public half is in `public_pem`, signing through
/// `sign`.
///
/// `public_pem` is NUL-terminated PEM text holding either the key's certificate (`CERTIFICATE`,
/// the leaf first if it is a chain: for a claim, or a device certificate already issued) or
/// its public key (`PUBLIC KEY`, a SubjectPublicKeyInfo: for a device key before its
/// certificate exists, to sign a CSR with fp_signer_create_csr()). It is copied. Keys: EC P-256,
/// EC P-384, RSA of 2048 to 8192 bits (see ::fp_signature_scheme for what each is asked for).
///
/// On success writes the new handle to `*out` (free it with fp_signer_free()) and returns
/// `FP_OK`; from then on the library owns `user_data` and calls `release` (if not NULL)
/// exactly once, when the signer and every options object and client that took it have been
/// freed, on the thread that freed the last of them or on a library thread; the sign callback
/// is never called after it. On failure `*out` is untouched,
/// `release` is never called and `user_data` stays the caller's: `FP_ERR_NULL_ARGUMENT`
/// (`public_pem`, `sign` or `out` is NULL), `FP_ERR_INVALID_UTF8`, `FP_ERR_INVALID_ARGUMENT`
/// (no certificate or public key in the PEM, or a key of another type or size).
#[unsafe(no_mangle)]
pub extern "C" fn fp_signer_new(
    public_pem: *const c_char,
    sign: fp_sign_callback,
    user_data: *mut c_void,
    release: fp_release_callback,
    out: *mut *mut fp_signer,
) -> fp_result {
    ffi_result! {
        check_out(out)?;
        let sign = sign.ok_or(FP_ERR_NULL_ARGUMENT)?;
        // SAFETY: NULL or a NUL-terminated string, per the header.
        let pem = unsafe { nonempty_str_arg(public_pem) }?;
        let public = PublicKey::from_pem(pem.as_bytes()).map_err(|e| fp_result::from(e.kind))?;
        let is_certificate = pem.contains("-----BEGIN CERTIFICATE-----");
        let handle = fp_signer {
            inner: Arc::new(CallbackSigner {
                public,
                sign: Callback::with_release(sign, user_data, release),
            }),
            certificate: is_certificate.then(|| Pem::memory(pem)),
        };
        // SAFETY: `out` was checked and is writable, per the header.
        unsafe { handle.give(out) };
        Ok(())
    }
}

/// Frees the handle. NULL is a no-op. Options and clients that took the signer keep it until
/// they are freed; the release callback runs when the last of them lets go.
#[unsafe(no_mangle)]
pub extern "C" fn fp_signer_free(signer: *mut fp_signer) {
    ffi_panic_boundary! {
        // SAFETY: NULL or a pointer from fp_signer_new(), freed once, per the header.
        unsafe { fp_signer::free(signer) }
    }
}

/// Builds a PEM certificate signing request for the signer's key, signed through its sign
/// callback (called once, on this thread, with `FP_SIGNATURE_ECDSA_P256_SHA256`,
/// `FP_SIGNATURE_ECDSA_P384_SHA384` or `FP_SIGNATURE_RSA_PKCS1_SHA256`), for
/// fp_create_from_csr().
///
/// The subject is `CN=<common_name>` (1 to 64 bytes, copied), or empty if `common_name` is
/// NULL. Writes the NUL-terminated PEM to `buf` (`buf_len` bytes; ::FP_CSR_PEM_MAX_LEN always
/// suffices) and its length without the NUL to `*written`, and returns `FP_OK`. Otherwise
/// writes nothing and returns `FP_ERR_NULL_ARGUMENT` (`signer`, `buf` or `written` NULL),
/// `FP_ERR_INVALID_UTF8`, `FP_ERR_INVALID_ARGUMENT` (empty or too long a common name, or
/// `buf_len` too small) or `FP_ERR_SIGNER` (the callback failed or its signature does not
/// verify).
#[unsafe(no_mangle)]
pub extern "C" fn fp_signer_create_csr(
    signer: *const fp_signer,
    common_name: *const c_char,
    buf: *mut c_char,
    buf_len: usize,
    written: *mut usize,
) -> fp_result {
    ffi_result! {
        // SAFETY: NULL or a live handle from fp_signer_new(), per the header.
        let signer = unsafe { fp_signer::try_ref(signer) }?;
        // SAFETY: NULL or a NUL-terminated string, per the header.
        let common_name = unsafe { opt_str_arg(common_name) }?;
        let out = OutBuffer::new(buf, buf_len, written)?;
        let pem = certificate_request(signer.signer(), common_name)
            .map_err(|e| log_failure("CSR", &e))?;
        out.write(pem.as_bytes())
    }
}

/// A caller's buffer for a NUL-terminated string and where its length goes, both checked
/// non-NULL.
pub(crate) struct OutBuffer {
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
}

impl OutBuffer {
    pub(crate) fn new(
        buf: *mut c_char,
        len: usize,
        written: *mut usize,
    ) -> Result<OutBuffer, fp_result> {
        if buf.is_null() || written.is_null() {
            return Err(FP_ERR_NULL_ARGUMENT);
        }
        Ok(OutBuffer { buf, len, written })
    }

    /// Copies `text` and a NUL into the buffer, or refuses if it does not fit.
    pub(crate) fn write(self, text: &[u8]) -> Result<(), fp_result> {
        if text.len() >= self.len {
            return Err(FP_ERR_INVALID_ARGUMENT);
        }
        // SAFETY: `buf` holds `len` writable bytes and `written` is writable, per the header.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), self.buf, text.len());
            self.buf.add(text.len()).write(0);
            self.written.write(text.len());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static RELEASED: AtomicUsize = AtomicUsize::new(0);

    unsafe extern "C" fn refuse(
        _: *mut c_void,
        _: fp_signature_scheme,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: *mut u8,
        _: usize,
        _: *mut usize,
    ) -> c_int {
        -7
    }

    unsafe extern "C" fn count_release(user_data: *mut c_void) {
        assert_eq!(user_data as usize, 42);
        RELEASED.fetch_add(1, Ordering::SeqCst);
    }

    #[test]
    fn arguments_are_checked_and_release_runs_once() {
        let key = rcgen::KeyPair::generate().unwrap();
        let public = std::ffi::CString::new(key.public_key_pem()).unwrap();
        let ud = 42usize as *mut c_void;
        let mut s = std::ptr::null_mut();
        let none: fp_sign_callback = None;
        assert_eq!(
            fp_signer_new(public.as_ptr(), none, ud, None, &mut s),
            FP_ERR_NULL_ARGUMENT
        );
        assert_eq!(
            fp_signer_new(
                c"not pem".as_ptr(),
                Some(refuse),
                ud,
                Some(count_release),
                &mut s
            ),
            FP_ERR_INVALID_ARGUMENT
        );
        assert!(s.is_null());
        assert_eq!(RELEASED.load(Ordering::SeqCst), 0, "not on failure");
        assert_eq!(
            fp_signer_new(
                public.as_ptr(),
                Some(refuse),
                ud,
                Some(count_release),
                &mut s
            ),
            FP_OK
        );
        assert!(unsafe { (*s).certificate().is_none() });
        let mut buf = [0 as c_char; FP_CSR_PEM_MAX_LEN];
        let mut n = 0usize;
        assert_eq!(
            fp_signer_create_csr(s, c"d".as_ptr(), buf.as_mut_ptr(), buf.len(), &mut n),
            FP_ERR_SIGNER
        );
        assert_eq!(
            fp_signer_create_csr(s, c"".as_ptr(), buf.as_mut_ptr(), buf.len(), &mut n),
            FP_ERR_INVALID_ARGUMENT
        );
        assert_eq!(n, 0);
        let shared = unsafe { (*s).signer() };
        fp_signer_free(s);
        assert_eq!(RELEASED.load(Ordering::SeqCst), 0, "still shared");
        drop(shared);
        assert_eq!(RELEASED.load(Ordering::SeqCst), 1);
        fp_signer_free(std::ptr::null_mut());
    }

    #[test]
    fn out_buffer_needs_room_for_the_nul() {
        let mut buf = [1 as c_char; 4];
        let mut n = 9usize;
        let (b, w) = (buf.as_mut_ptr(), &mut n as *mut usize);
        let out = || OutBuffer::new(b, 4, w).unwrap();
        assert_eq!(out().write(b"abcd"), Err(FP_ERR_INVALID_ARGUMENT));
        assert_eq!(n, 9, "nothing written on failure");
        assert_eq!(out().write(b"abc"), Ok(()));
        assert_eq!((n, buf[3]), (3, 0));
        assert!(OutBuffer::new(std::ptr::null_mut(), 4, w).is_err());
    }
}
