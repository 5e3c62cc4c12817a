"""``Signer``: a private key the application holds, signing through a Python function."""

from __future__ import annotations

import ctypes
import threading
from types import TracebackType
from typing import Any, Callable, Optional, Type, Union

from . import _codes, _core, _ffi
from ._types import SignatureScheme

#: ``sign(scheme, message, digest) -> signature``.
SignFunction = Callable[[SignatureScheme, bytes, bytes], Union[bytes, bytearray]]


class _SignerState:
    def __init__(self, sign: SignFunction) -> None:
        self.sign = sign


def _on_sign(
    user_data: Optional[int],
    scheme: int,
    message: Optional[int],
    message_len: int,
    digest: Optional[int],
    digest_len: int,
    signature: Optional[int],
    capacity: int,
    signature_len: Any,
) -> int:
    # Every path returns a non-zero failure unless a signature was written: an exception
    # escaping a ctypes callback would return 0, which the library would take for success.
    try:
        state = _core.lookup(user_data, remove=False)
        if not isinstance(state, _SignerState) or not signature:
            return 1
        sig = state.sign(
            SignatureScheme(scheme),
            ctypes.string_at(message, message_len) if message else b"",
            ctypes.string_at(digest, digest_len) if digest else b"",
        )
        if not isinstance(sig, (bytes, bytearray)):
            _core.logger.error(
                "fleetprov: the signer's sign function returned %s, not bytes", type(sig).__name__
            )
            return 2
        if len(sig) == 0 or len(sig) > capacity:
            _core.logger.error("fleetprov: the signer's signature has %d bytes", len(sig))
            return 3
        ctypes.memmove(signature, bytes(sig), len(sig))
        signature_len[0] = len(sig)
        return 0
    except BaseException:  # noqa: BLE001 - nothing may cross into C
        try:
            _core.logger.exception("fleetprov: the signer's sign function failed")
        except BaseException:  # noqa: BLE001
            pass
        return 1


def _on_release(user_data: Optional[int]) -> None:
    try:
        _core.lookup(user_data, remove=True)
    except BaseException:  # noqa: BLE001 - nothing may cross into C
        pass


# Made once and kept for the life of the process (see _core).
on_sign = _ffi.SIGN_CB(_on_sign)
on_release = _ffi.RELEASE_CB(_on_release)


class Signer:
    """A private key the application holds (a secure element, a TPM, an HSM, its own store):
    the library asks ``sign`` for each signature and never sees the key (``fp_signer_new()``).

    ``public_pem`` holds the key's certificate (``CERTIFICATE``; it then becomes the client
    certificate of a ``Client`` that takes the signer) or its public key (``PUBLIC KEY``, for a
    device key before its certificate exists: ``create_csr()``). Keys: EC P-256, P-384, RSA
    2048-8192.

    ``sign(scheme, message, digest)`` returns the signature as bytes: for ``scheme`` (a
    ``SignatureScheme``), of ``message`` (the data itself); ``digest`` is the message already
    hashed with the scheme's hash, for key stores that sign a digest. ECDSA signatures may be
    DER or ``r || s``. Raise to fail (the operation then fails with ``SignerError``). It runs on
    the library's network thread during TLS handshakes (every connection's I/O waits for it:
    keep it to the signature, and do not call fleetprov from it), and on the calling thread in
    ``create_csr()``.

    Use it with ``Client(endpoint, signer=...)``, or in ``provision()``: ``signer=`` for the
    claim key, ``device_signer=`` for the device key. Each takes its own reference: the signer
    may be closed as soon as the client or ``provision()`` has it.
    """

    def __init__(self, public_pem: str, sign: SignFunction) -> None:
        pem = _core.c_str("public_pem", public_pem, nonempty=True)
        if not callable(sign):
            raise TypeError(f"sign must be callable, not {type(sign).__name__}")
        key = _core.register(_SignerState(sign))
        out = ctypes.c_void_p()
        rc = _ffi.fp_signer_new(pem, on_sign, key, on_release, ctypes.byref(out))
        if rc != _codes.FP_OK:
            _core.lookup(key, remove=True)  # release is never called on failure
            _core.check(
                rc,
                "public_pem (a CERTIFICATE or PUBLIC KEY PEM of an EC P-256, P-384 or RSA "
                "2048-8192 key)",
            )
        self._ptr: Optional[int] = out.value
        self._lock = threading.Lock()
        _core.live_signers.add(self)

    def _signer_ptr(self) -> int:
        with self._lock:
            if self._ptr is None:
                raise _codes.InvalidArgumentError("the signer is closed")
            return self._ptr

    def create_csr(self, common_name: Optional[str] = None) -> str:
        """A PEM certificate signing request for the key, signed through ``sign`` (on this
        thread), subject ``CN=<common_name>`` or empty; for ``create_certificate_from_csr``."""
        cn = _core.c_str("common_name", common_name, required=False, nonempty=True)
        buf = ctypes.create_string_buffer(_codes.FP_CSR_PEM_MAX_LEN)
        written = ctypes.c_size_t()
        with self._lock:
            if self._ptr is None:
                raise _codes.InvalidArgumentError("the signer is closed")
            rc = _ffi.fp_signer_create_csr(
                self._ptr, cn, buf, len(buf), ctypes.byref(written)
            )
        _core.check(rc, "create_csr() (see the log for the signer's failure)")
        return buf.raw[: written.value].decode("utf-8")

    def close(self) -> None:
        """Frees the handle; clients made with it keep the key until they are closed."""
        with self._lock:
            ptr, self._ptr = self._ptr, None
        if ptr is not None:
            _ffi.fp_signer_free(ptr)

    def __enter__(self) -> "Signer":
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing to report to at collection time
            pass
