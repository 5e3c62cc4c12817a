"""ctypes declarations of libfleetprov's C API (libfleetprov/include/fleetprov.h).

The library is the ``libfleetprov.so`` bundled in this package (``_lib/``), or the file named
by the environment variable ``FLEETPROV_LIBRARY`` (for development against a fresh build).

Callback function pointers are made once, at import, from module-level functions, and never
freed: a per-call ``CFUNCTYPE`` object freed while a library thread is still returning
through it would be a use-after-free. Each call's state is found through ``user_data``, an
integer key into a registry (see ``_core``).
"""

from __future__ import annotations

import ctypes
import os
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char_p,
    c_int,
    c_size_t,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
)
from pathlib import Path
from typing import Any

LIBRARY_ENV = "FLEETPROV_LIBRARY"


def library_path() -> Path:
    """The path of the libfleetprov.so this package loads."""
    override = os.environ.get(LIBRARY_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parent / "_lib" / "libfleetprov.so"


def _load() -> ctypes.CDLL:
    path = library_path()
    if not path.is_file():
        raise ImportError(
            f"fleetprov: the library {path} is missing: install the package with "
            f"`pip install ./bindings/python` from a fleetprov checkout (it builds and bundles "
            f"libfleetprov.so), or set {LIBRARY_ENV} to a built libfleetprov.so"
        )
    return ctypes.CDLL(str(path))


lib = _load()


class CreateKeysResponse(Structure):
    # private_key is c_void_p, not c_char_p: ctypes would turn a c_char_p field into an
    # immutable bytes object on access, a copy of the key nobody can wipe.
    _fields_ = [
        ("certificate_id", c_char_p),
        ("certificate_pem", c_char_p),
        ("private_key", c_void_p),
        ("certificate_ownership_token", c_char_p),
    ]


class CreateFromCsrResponse(Structure):
    _fields_ = [
        ("certificate_id", c_char_p),
        ("certificate_pem", c_char_p),
        ("certificate_ownership_token", c_char_p),
    ]


class KeyValue(Structure):
    _fields_ = [("key", c_char_p), ("value", c_char_p)]


class RegisterThingResponse(Structure):
    _fields_ = [
        ("thing_name", c_char_p),
        ("device_configuration", POINTER(KeyValue)),
        ("device_configuration_len", c_size_t),
    ]


LIFECYCLE_CB = CFUNCTYPE(None, c_void_p, c_int, c_void_p)
LOG_CB = CFUNCTYPE(None, c_void_p, c_int, c_char_p)
CREATE_KEYS_CB = CFUNCTYPE(None, c_void_p, POINTER(CreateKeysResponse), c_void_p)
CREATE_FROM_CSR_CB = CFUNCTYPE(None, c_void_p, POINTER(CreateFromCsrResponse), c_void_p)
REGISTER_THING_CB = CFUNCTYPE(None, c_void_p, POINTER(RegisterThingResponse), c_void_p)
PROGRESS_CB = CFUNCTYPE(None, c_void_p, c_int, c_uint32, c_uint64, c_char_p)
PROVISION_CB = CFUNCTYPE(None, c_void_p, c_void_p, c_void_p)
SIGN_CB = CFUNCTYPE(
    c_int, c_void_p, c_int, c_void_p, c_size_t, c_void_p, c_size_t, c_void_p, c_size_t,
    POINTER(c_size_t),
)
RELEASE_CB = CFUNCTYPE(None, c_void_p)


def _fn(name: str, restype: Any, *argtypes: Any) -> Any:
    f = getattr(lib, name)
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


P = c_void_p  # opaque handles
PP = POINTER(c_void_p)

fp_version = _fn("fp_version", c_char_p)
fp_result_str = _fn("fp_result_str", c_char_p, c_int)
fp_error_code = _fn("fp_error_code", c_int, P)
fp_error_message = _fn("fp_error_message", c_char_p, P)
fp_error_status_code = _fn("fp_error_status_code", c_int, P)
fp_error_aws_code = _fn("fp_error_aws_code", c_char_p, P)
fp_error_aws_message = _fn("fp_error_aws_message", c_char_p, P)
fp_set_log_callback = _fn("fp_set_log_callback", c_int, LOG_CB, P, P, c_int)

fp_client_options_new = _fn("fp_client_options_new", c_int, c_char_p, PP)
fp_client_options_free = _fn("fp_client_options_free", None, P)
fp_client_options_set_port = _fn("fp_client_options_set_port", c_int, P, c_uint16)
fp_client_options_set_cert_file = _fn("fp_client_options_set_cert_file", c_int, P, c_char_p)
fp_client_options_set_key_file = _fn("fp_client_options_set_key_file", c_int, P, c_char_p)
fp_client_options_set_ca_file = _fn("fp_client_options_set_ca_file", c_int, P, c_char_p)
fp_client_options_set_cert_pem = _fn("fp_client_options_set_cert_pem", c_int, P, c_char_p)
fp_client_options_set_key_pem = _fn("fp_client_options_set_key_pem", c_int, P, c_void_p)
fp_client_options_set_ca_pem = _fn("fp_client_options_set_ca_pem", c_int, P, c_char_p)
fp_client_options_set_client_id = _fn("fp_client_options_set_client_id", c_int, P, c_char_p)
fp_client_options_set_template_name = _fn(
    "fp_client_options_set_template_name", c_int, P, c_char_p
)
fp_client_options_set_mqtt_version = _fn("fp_client_options_set_mqtt_version", c_int, P, c_int)
fp_client_options_set_keep_alive_secs = _fn(
    "fp_client_options_set_keep_alive_secs", c_int, P, c_uint16
)
fp_client_options_set_operation_timeout_ms = _fn(
    "fp_client_options_set_operation_timeout_ms", c_int, P, c_uint32
)
fp_client_options_set_connect_timeout_ms = _fn(
    "fp_client_options_set_connect_timeout_ms", c_int, P, c_uint32
)
fp_client_options_set_proxy = _fn("fp_client_options_set_proxy", c_int, P, c_char_p, c_uint16)
fp_client_options_set_payload_format = _fn(
    "fp_client_options_set_payload_format", c_int, P, c_int
)
fp_client_options_set_pkcs11_module = _fn(
    "fp_client_options_set_pkcs11_module", c_int, P, c_char_p
)
fp_client_options_set_pkcs11_token_label = _fn(
    "fp_client_options_set_pkcs11_token_label", c_int, P, c_char_p
)
fp_client_options_set_pkcs11_slot_id = _fn(
    "fp_client_options_set_pkcs11_slot_id", c_int, P, c_uint64
)
fp_client_options_set_pkcs11_pin = _fn("fp_client_options_set_pkcs11_pin", c_int, P, c_void_p)
fp_client_options_set_pkcs11_key_label = _fn(
    "fp_client_options_set_pkcs11_key_label", c_int, P, c_char_p
)

fp_client_new = _fn("fp_client_new", c_int, P, PP)
fp_client_connect = _fn("fp_client_connect", c_int, P, LIFECYCLE_CB, P)
fp_client_disconnect = _fn("fp_client_disconnect", c_int, P)
fp_client_free = _fn("fp_client_free", None, P)
fp_create_keys = _fn("fp_create_keys", c_int, P, CREATE_KEYS_CB, P)
fp_create_from_csr = _fn("fp_create_from_csr", c_int, P, c_char_p, CREATE_FROM_CSR_CB, P)
fp_register_thing = _fn(
    "fp_register_thing", c_int, P, c_char_p, c_char_p, c_char_p, REGISTER_THING_CB, P
)
fp_register_thing_check = _fn("fp_register_thing_check", c_int, c_char_p, c_char_p)

fp_provision_options_new = _fn("fp_provision_options_new", c_int, P, c_char_p, c_char_p, PP)
fp_provision_options_free = _fn("fp_provision_options_free", None, P)
fp_provision_options_set_parameters = _fn(
    "fp_provision_options_set_parameters", c_int, P, c_char_p
)
fp_provision_options_set_key_type = _fn("fp_provision_options_set_key_type", c_int, P, c_int)
fp_provision_options_set_csr_subject = _fn(
    "fp_provision_options_set_csr_subject", c_int, P, c_char_p
)
fp_provision_options_set_user_csr = _fn(
    "fp_provision_options_set_user_csr", c_int, P, c_char_p, c_void_p
)
fp_provision_options_set_device_client_id = _fn(
    "fp_provision_options_set_device_client_id", c_int, P, c_char_p
)
fp_provision_options_set_force = _fn("fp_provision_options_set_force", c_int, P, c_int)
fp_provision_options_set_max_attempts = _fn(
    "fp_provision_options_set_max_attempts", c_int, P, c_uint32
)
fp_provision_options_set_backoff_ms = _fn(
    "fp_provision_options_set_backoff_ms", c_int, P, c_uint32, c_uint32
)
fp_provision_options_set_deadline_ms = _fn(
    "fp_provision_options_set_deadline_ms", c_int, P, c_uint32
)
fp_provision_options_set_rotate_before_ms = _fn(
    "fp_provision_options_set_rotate_before_ms", c_int, P, c_uint64
)
fp_provision_options_set_rotate_before_percent = _fn(
    "fp_provision_options_set_rotate_before_percent", c_int, P, c_uint32
)
fp_provision_options_set_rotation_template = _fn(
    "fp_provision_options_set_rotation_template", c_int, P, c_char_p
)
fp_provision_options_set_rotation_reuse_key = _fn(
    "fp_provision_options_set_rotation_reuse_key", c_int, P, c_int
)
fp_provision_options_set_device_key_pkcs11 = _fn(
    "fp_provision_options_set_device_key_pkcs11", c_int, P, P, c_int, c_int
)
fp_provision_start = _fn("fp_provision_start", c_int, P, PROGRESS_CB, PROVISION_CB, P, PP)
fp_provision_cancel = _fn("fp_provision_cancel", c_int, P)
fp_provision_op_free = _fn("fp_provision_op_free", None, P)

fp_provisioned_thing_name = _fn("fp_provisioned_thing_name", c_char_p, P)
fp_provisioned_certificate_id = _fn("fp_provisioned_certificate_id", c_char_p, P)
fp_provisioned_client_id = _fn("fp_provisioned_client_id", c_char_p, P)
fp_provisioned_certificate_file = _fn("fp_provisioned_certificate_file", c_char_p, P)
fp_provisioned_private_key_file = _fn("fp_provisioned_private_key_file", c_char_p, P)
fp_provisioned_key_location = _fn("fp_provisioned_key_location", c_int, P)
fp_provisioned_metadata_file = _fn("fp_provisioned_metadata_file", c_char_p, P)
fp_provisioned_reused = _fn("fp_provisioned_reused", c_int, P)
fp_provisioned_rotated = _fn("fp_provisioned_rotated", c_int, P)
fp_provisioned_previous_certificate_id = _fn("fp_provisioned_previous_certificate_id", c_char_p, P)
fp_provisioned_attempts = _fn("fp_provisioned_attempts", c_uint32, P)
fp_provisioned_abandoned_certificate_count = _fn(
    "fp_provisioned_abandoned_certificate_count", c_size_t, P
)
fp_provisioned_abandoned_certificate_at = _fn(
    "fp_provisioned_abandoned_certificate_at", c_char_p, P, c_size_t
)
fp_provisioned_device_configuration_len = _fn(
    "fp_provisioned_device_configuration_len", c_size_t, P
)
fp_provisioned_device_configuration_at = _fn(
    "fp_provisioned_device_configuration_at", POINTER(KeyValue), P, c_size_t
)

fp_signer_new = _fn("fp_signer_new", c_int, c_char_p, SIGN_CB, P, RELEASE_CB, PP)
fp_signer_free = _fn("fp_signer_free", None, P)
fp_signer_create_csr = _fn(
    "fp_signer_create_csr", c_int, P, c_char_p, c_void_p, c_size_t, POINTER(c_size_t)
)
fp_client_options_set_signer = _fn("fp_client_options_set_signer", c_int, P, P)
fp_provision_options_set_device_key_signer = _fn("fp_provision_options_set_device_key_signer", c_int, P, P)

_libc = ctypes.CDLL(None)
strlen = _libc.strlen
strlen.restype = c_size_t
strlen.argtypes = [c_void_p]


def copy_secret(ptr: int) -> bytearray:
    """Copies the NUL-terminated secret at ``ptr`` into a new bytearray, with no other copy."""
    n = strlen(ptr)
    out = bytearray(n)
    if n:
        ctypes.memmove((ctypes.c_char * n).from_buffer(out), ptr, n)
    return out


class SecretArg:
    """A NUL-terminated copy of a secret for one C call, wiped by ``wipe()``.

    Copied straight from the caller's buffer (no intermediate Python object), so that the
    only copies are the caller's own, which the caller may wipe, and this one.
    """

    def __init__(self, data: "bytes | bytearray | str") -> None:
        raw: "bytes | bytearray" = data.encode("utf-8") if isinstance(data, str) else data
        n = len(raw)
        self.has_nul = b"\0" in raw
        self.length = n
        self._buf = ctypes.create_string_buffer(n + 1)
        if n:
            if isinstance(raw, bytearray):
                src: Any = (ctypes.c_char * n).from_buffer(raw)
            else:
                src = raw
            ctypes.memmove(self._buf, src, n)

    @property
    def pointer(self) -> int:
        return ctypes.addressof(self._buf)

    def wipe(self) -> None:
        ctypes.memset(self._buf, 0, self.length + 1)
