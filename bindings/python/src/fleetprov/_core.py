"""What the synchronous and the asyncio APIs share: argument checks, the C options, the
registry of running calls, the callbacks the library calls, and log routing.

Threads: the library calls back on its own threads. Those callbacks copy what they receive
(it is borrowed for the duration of the call) and hand it to a *sink*: a queue the waiting
thread reads (synchronous API) or ``loop.call_soon_threadsafe`` (asyncio). User code never
runs on a library thread.
"""

from __future__ import annotations

import atexit
import ctypes
import itertools
import json
import logging
import math
import os
import queue
import threading
import time
import weakref
from typing import Any, Callable, Dict, Mapping, Optional, Set, Tuple, Union

from . import _codes, _ffi
from ._errorbase import FleetprovError
from ._types import (
    Certificate,
    KeysAndCertificate,
    KeyType,
    PayloadFormat,
    Pkcs11Key,
    Progress,
    Provisioned,
    RegisteredThing,
    RetryPolicy,
    Step,
)

StrPath = Union[str, "os.PathLike[str]"]
Parameters = Union[Mapping[str, str], str, None]
ProgressCallback = Callable[[Progress], object]
Secret = Union[bytes, bytearray, str]

logger = logging.getLogger("fleetprov")
logger.addHandler(logging.NullHandler())

#: A level below DEBUG for the library's Trace messages.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")


# ---------------------------------------------------------------- errors


def result_name(code: int) -> str:
    for name, value, _doc in _codes.RESULT_CODES:
        if value == code:
            return name
    return f"FP_ERR_{code}"


def make_error(code: int, message: str, **aws: Any) -> FleetprovError:
    cls = _codes.ERROR_CLASSES.get(code)
    if cls is None:
        err = FleetprovError(message, code=code, **aws)
        err.code_name = result_name(code)
        return err
    return cls(message, **aws)


def check(code: int, what: str) -> None:
    """Raises the error class of ``code`` unless it is FP_OK; ``what`` names the argument."""
    if code != _codes.FP_OK:
        raise make_error(code, f"{what}: {_describe(code)}")


def _describe(code: int) -> str:
    text = _ffi.fp_result_str(code)
    return text.decode("utf-8", "replace") if text else f"code {code}"


def _text(raw: Optional[bytes]) -> str:
    return raw.decode("utf-8", "replace") if raw is not None else ""


def error_from(err: int) -> FleetprovError:
    """Copies a borrowed ``fp_error *`` into an exception."""
    code = _ffi.fp_error_code(err)
    message = _text(_ffi.fp_error_message(err)) or _describe(code)
    aws_code = _ffi.fp_error_aws_code(err)
    aws_message = _ffi.fp_error_aws_message(err)
    return make_error(
        code,
        message,
        status_code=_ffi.fp_error_status_code(err),
        aws_error_code=_text(aws_code) if aws_code is not None else None,
        aws_error_message=_text(aws_message) if aws_message is not None else None,
    )


# ---------------------------------------------------------------- argument checks


def c_str(name: str, value: object, *, required: bool = True, nonempty: bool = False) -> Optional[bytes]:
    """A str argument as NUL-terminated UTF-8, or a clear error naming ``name``."""
    if value is None:
        if required:
            raise _codes.NullArgumentError(f"{name} is required, got None")
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if "\0" in value:
        raise _codes.InvalidArgumentError(f"{name} contains a NUL character")
    if nonempty and value == "":
        raise _codes.InvalidArgumentError(f"{name} is empty")
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _codes.InvalidUtf8Error(f"{name} is not valid Unicode text: {e.reason}") from None


def c_path(name: str, value: object, *, required: bool = True, readable: bool = False) -> Optional[bytes]:
    """A path argument (str or os.PathLike); with ``readable``, the file must be readable."""
    if value is None:
        if required:
            raise _codes.NullArgumentError(f"{name} is required, got None")
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), not {type(value).__name__}")
    path = os.fspath(value)
    if not isinstance(path, str):
        raise TypeError(f"{name} must be a str path, not {type(path).__name__}")
    if path == "":
        raise _codes.InvalidArgumentError(f"{name} is an empty path")
    if readable:
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise _codes.IoError(f"{name} {path!r} cannot be read: {e.strerror}") from None
    return c_str(name, path)


def seconds_to_ms(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise _codes.InvalidArgumentError(f"{name} must be a positive number of seconds, got {value!r}")
    ms = max(1, round(value * 1000))
    if ms > 0xFFFFFFFF:
        raise _codes.InvalidArgumentError(f"{name} is too long: {value!r} s")
    return ms


def long_seconds_to_ms(name: str, value: object) -> int:
    """``seconds_to_ms`` for a 64-bit millisecond count (years, not minutes)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise _codes.InvalidArgumentError(f"{name} must be a positive number of seconds, got {value!r}")
    ms = max(1, round(value * 1000))
    if ms > 0xFFFFFFFFFFFFFFFF:
        raise _codes.InvalidArgumentError(f"{name} is too long: {value!r} s")
    return ms


def int_arg(name: str, value: object, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not lo <= value <= hi:
        raise _codes.InvalidArgumentError(f"{name} must be {lo}-{hi}, got {value}")
    return value


TEMPLATE_RULE = "a template name is 1-36 characters of [A-Za-z0-9_-]"


def check_template(name: Optional[bytes], parameters: Optional[bytes], what: str) -> None:
    """Checks a template name and parameters as RegisterThing will (fp_register_thing_check)."""
    rc = _ffi.fp_register_thing_check(name, parameters)
    if rc == _codes.FP_OK:
        return
    if _ffi.fp_register_thing_check(name, None) != _codes.FP_OK:
        raise make_error(rc, f"{what}: {name!r} is not a valid template name ({TEMPLATE_RULE})")
    raise make_error(rc, f"{what}: the parameters are not a JSON object whose values are all strings")


def parameters_json(value: Parameters) -> Optional[bytes]:
    """Template parameters: a mapping of str to str, a JSON object text, or None."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise _codes.InvalidArgumentError(
                    f"parameters must map str to str; {k!r}: {v!r} is not"
                )
        text = json.dumps(dict(value))
    else:
        raise TypeError(
            f"parameters must be a mapping of str to str or a JSON object text, not "
            f"{type(value).__name__}"
        )
    return c_str("parameters", text)


# ---------------------------------------------------------------- connection options


class ConnectionConfig:
    """The settings of a connection to the provisioning endpoint, checked."""

    def __init__(
        self,
        *,
        endpoint: str,
        port: int = 8883,
        cert_file: Optional[StrPath] = None,
        key_file: Optional[StrPath] = None,
        ca_file: Optional[StrPath] = None,
        cert_pem: Optional[str] = None,
        key_pem: Optional[Secret] = None,
        ca_pem: Optional[str] = None,
        client_id: Optional[str] = None,
        template_name: Optional[str] = None,
        mqtt_version: int = 5,
        payload_format: PayloadFormat = PayloadFormat.JSON,
        keep_alive_secs: Optional[int] = None,
        connect_timeout: Optional[float] = None,
        operation_timeout: Optional[float] = None,
        proxy_host: Optional[str] = None,
        proxy_port: Optional[int] = None,
        pkcs11: Optional[Pkcs11Key] = None,
        signer: Optional[Any] = None,
    ) -> None:
        self.endpoint = c_str("endpoint", endpoint, nonempty=True)
        self.port = int_arg("port", port, 1, 65535)
        self.cert_file = c_path("cert_file", cert_file, required=False, readable=True)
        self.key_file = c_path("key_file", key_file, required=False, readable=True)
        self.ca_file = c_path("ca_file", ca_file, required=False, readable=True)
        self.cert_pem = c_str("cert_pem", cert_pem, required=False)
        if key_pem is not None and not isinstance(key_pem, (bytes, bytearray, str)):
            raise TypeError(f"key_pem must be bytes, bytearray or str, not {type(key_pem).__name__}")
        self.key_pem = key_pem
        self.ca_pem = c_str("ca_pem", ca_pem, required=False)
        self.client_id = c_str("client_id", client_id, required=False)
        self.template_name = c_str("template_name", template_name, required=False)
        if self.template_name is not None:
            check_template(self.template_name, None, "template_name")
        if mqtt_version not in (3, 5) or isinstance(mqtt_version, bool):
            raise _codes.InvalidArgumentError(f"mqtt_version must be 3 or 5, got {mqtt_version!r}")
        self.mqtt_version = mqtt_version
        try:
            self.payload_format = PayloadFormat(payload_format)
        except ValueError:
            raise _codes.InvalidArgumentError(
                f"payload_format must be PayloadFormat.JSON or PayloadFormat.CBOR, got {payload_format!r}"
            ) from None
        self.keep_alive_secs = (
            None if keep_alive_secs is None else int_arg("keep_alive_secs", keep_alive_secs, 5, 65535)
        )
        self.connect_timeout_ms = (
            None if connect_timeout is None else seconds_to_ms("connect_timeout", connect_timeout)
        )
        self.operation_timeout_ms = (
            None
            if operation_timeout is None
            else seconds_to_ms("operation_timeout", operation_timeout)
        )
        self.proxy_host = c_str("proxy_host", proxy_host, required=False)
        if proxy_port is not None and proxy_host is None:
            raise _codes.InvalidArgumentError("proxy_port is set but proxy_host is not")
        self.proxy_port = 8080 if proxy_port is None else int_arg("proxy_port", proxy_port, 1, 65535)
        if pkcs11 is not None and not isinstance(pkcs11, Pkcs11Key):
            raise TypeError(f"pkcs11 must be a Pkcs11Key, not {type(pkcs11).__name__}")
        self.pkcs11 = pkcs11
        if pkcs11 is not None:
            c_path("pkcs11.module", pkcs11.module, readable=True)
            c_str("pkcs11.key_label", pkcs11.key_label)
        if signer is not None and not hasattr(signer, "_signer_ptr"):
            raise TypeError(f"signer must be a fleetprov.Signer, not {type(signer).__name__}")
        self.signer = signer
        if cert_file is None and cert_pem is None and signer is None:
            raise _codes.NullArgumentError("a client certificate is required: cert_file or cert_pem")
        if cert_file is not None and cert_pem is not None:
            raise _codes.InvalidArgumentError("give one of cert_file and cert_pem, not both")
        keys = [
            n
            for n, v in (("key_file", key_file), ("key_pem", key_pem), ("pkcs11", pkcs11), ("signer", signer))
            if v is not None
        ]
        if not keys:
            raise _codes.NullArgumentError("a private key is required: key_file, key_pem, pkcs11 or signer")
        if len(keys) > 1:
            raise _codes.InvalidArgumentError(f"give one private key, not {' and '.join(keys)}")
        if ca_file is not None and ca_pem is not None:
            raise _codes.InvalidArgumentError("give one of ca_file and ca_pem, not both")

    def build(self) -> int:
        """Makes an ``fp_client_options *``; the caller frees it."""
        out = ctypes.c_void_p()
        check(_ffi.fp_client_options_new(self.endpoint, ctypes.byref(out)), "endpoint")
        opts = out.value
        assert opts is not None
        try:
            check(_ffi.fp_client_options_set_port(opts, self.port), "port")
            check(_ffi.fp_client_options_set_mqtt_version(opts, self.mqtt_version), "mqtt_version")
            check(
                _ffi.fp_client_options_set_payload_format(opts, int(self.payload_format)),
                "payload_format",
            )
            if self.cert_file is not None:
                check(_ffi.fp_client_options_set_cert_file(opts, self.cert_file), "cert_file")
            if self.cert_pem is not None:
                check(_ffi.fp_client_options_set_cert_pem(opts, self.cert_pem), "cert_pem")
            if self.key_file is not None:
                check(_ffi.fp_client_options_set_key_file(opts, self.key_file), "key_file")
            if self.key_pem is not None:
                secret = _ffi.SecretArg(self.key_pem)
                try:
                    if secret.has_nul:
                        raise _codes.InvalidArgumentError("key_pem contains a NUL byte")
                    check(_ffi.fp_client_options_set_key_pem(opts, secret.pointer), "key_pem")
                finally:
                    secret.wipe()
            if self.ca_file is not None:
                check(_ffi.fp_client_options_set_ca_file(opts, self.ca_file), "ca_file")
            if self.ca_pem is not None:
                check(_ffi.fp_client_options_set_ca_pem(opts, self.ca_pem), "ca_pem")
            if self.client_id is not None:
                check(_ffi.fp_client_options_set_client_id(opts, self.client_id), "client_id")
            if self.template_name is not None:
                check(
                    _ffi.fp_client_options_set_template_name(opts, self.template_name),
                    "template_name",
                )
            if self.keep_alive_secs is not None:
                check(
                    _ffi.fp_client_options_set_keep_alive_secs(opts, self.keep_alive_secs),
                    "keep_alive_secs",
                )
            if self.connect_timeout_ms is not None:
                check(
                    _ffi.fp_client_options_set_connect_timeout_ms(opts, self.connect_timeout_ms),
                    "connect_timeout",
                )
            if self.operation_timeout_ms is not None:
                check(
                    _ffi.fp_client_options_set_operation_timeout_ms(opts, self.operation_timeout_ms),
                    "operation_timeout",
                )
            if self.proxy_host is not None:
                check(
                    _ffi.fp_client_options_set_proxy(opts, self.proxy_host, self.proxy_port),
                    "proxy_host/proxy_port",
                )
            if self.pkcs11 is not None:
                self._build_pkcs11(opts, self.pkcs11)
            if self.signer is not None:
                check(
                    _ffi.fp_client_options_set_signer(opts, self.signer._signer_ptr()),
                    "signer",
                )
        except BaseException:
            _ffi.fp_client_options_free(opts)
            raise
        return opts

    @staticmethod
    def _build_pkcs11(opts: int, p: Pkcs11Key) -> None:
        check(
            _ffi.fp_client_options_set_pkcs11_module(opts, c_str("pkcs11.module", p.module)),
            "pkcs11.module",
        )
        check(
            _ffi.fp_client_options_set_pkcs11_key_label(opts, c_str("pkcs11.key_label", p.key_label)),
            "pkcs11.key_label",
        )
        if p.pin is not None:
            c_str("pkcs11.pin", p.pin)
            secret = _ffi.SecretArg(p.pin)
            try:
                check(_ffi.fp_client_options_set_pkcs11_pin(opts, secret.pointer), "pkcs11.pin")
            finally:
                secret.wipe()
        if p.token_label is not None:
            check(
                _ffi.fp_client_options_set_pkcs11_token_label(
                    opts, c_str("pkcs11.token_label", p.token_label)
                ),
                "pkcs11.token_label",
            )
        if p.slot_id is not None:
            check(
                _ffi.fp_client_options_set_pkcs11_slot_id(
                    opts, int_arg("pkcs11.slot_id", p.slot_id, 0, 2**64 - 1)
                ),
                "pkcs11.slot_id",
            )


# ---------------------------------------------------------------- provision options


#: How long past ``timeout`` a provision() waits for the library's own deadline error (which
#: names the step the run was in) before raising fleetprov's.
TIMEOUT_GRACE = 0.5


class ProvisionConfig:
    """Everything ``provision()`` takes, checked before anything starts."""

    def __init__(
        self,
        connection: ConnectionConfig,
        *,
        template_name: str,
        output_dir: StrPath,
        parameters: Parameters = None,
        key_type: KeyType = KeyType.EC_P256,
        csr_subject: Optional[str] = None,
        csr_pem: Optional[str] = None,
        csr_private_key: Optional[Secret] = None,
        device_client_id: Optional[str] = None,
        force: bool = False,
        retry: Optional[RetryPolicy] = None,
        timeout: Optional[float] = None,
        rotate_before: Optional[float] = None,
        rotate_before_percent: Optional[int] = None,
        rotation_template: Optional[str] = None,
        rotation_reuse_key: bool = False,
        device_pkcs11: Optional[Pkcs11Key] = None,
        device_signer: Optional[Any] = None,
    ) -> None:
        self.connection = connection
        if device_signer is not None:
            if not hasattr(device_signer, "_signer_ptr"):
                raise TypeError(f"device_signer must be a fleetprov.Signer, not {type(device_signer).__name__}")
            device_signer._signer_ptr()  # raises if it is closed
            if device_pkcs11 is not None or csr_pem is not None:
                raise _codes.InvalidArgumentError(
                    "give one device key: device_signer, device_pkcs11 or csr_pem/csr_private_key"
                )
            if key_type == KeyType.SERVICE:
                raise _codes.InvalidArgumentError(
                    "device_signer keeps the device key with the application: key_type SERVICE "
                    "(a key from the service) does not go with it"
                )
        self.device_signer = device_signer
        if device_pkcs11 is not None:
            if not isinstance(device_pkcs11, Pkcs11Key):
                raise TypeError(f"device_pkcs11 must be a Pkcs11Key, not {type(device_pkcs11).__name__}")
            c_path("device_pkcs11.module", device_pkcs11.module, readable=True)
            c_str("device_pkcs11.key_label", device_pkcs11.key_label)
            if key_type == KeyType.SERVICE:
                raise _codes.InvalidArgumentError(
                    "device_pkcs11 keeps the device key in the token: key_type SERVICE (a key "
                    "from the service) does not go with it"
                )
        self.device_pkcs11 = device_pkcs11
        self.template_name = c_str("template_name", template_name)
        self.output_dir = c_path("output_dir", output_dir)
        self.parameters = parameters_json(parameters)
        check_template(self.template_name, self.parameters, "template_name/parameters")
        try:
            self.key_type = KeyType(key_type)
        except ValueError:
            raise _codes.InvalidArgumentError(f"key_type must be a KeyType, got {key_type!r}") from None
        self.csr_subject = c_str("csr_subject", csr_subject, required=False)
        if (csr_pem is None) != (csr_private_key is None):
            raise _codes.NullArgumentError("csr_pem and csr_private_key go together: give both or neither")
        self.csr_pem = c_str("csr_pem", csr_pem, required=False)
        if csr_private_key is not None and not isinstance(csr_private_key, (bytes, bytearray, str)):
            raise TypeError(
                f"csr_private_key must be bytes, bytearray or str, not {type(csr_private_key).__name__}"
            )
        self.csr_private_key = csr_private_key
        self.device_client_id = c_str("device_client_id", device_client_id, required=False)
        self.force = bool(force)
        if rotate_before is not None and rotate_before_percent is not None:
            raise _codes.InvalidArgumentError("give rotate_before or rotate_before_percent, not both")
        # 0 turns rotation off; otherwise whole milliseconds.
        self.rotate_before_ms: Optional[int] = None
        if rotate_before is not None:
            self.rotate_before_ms = 0 if rotate_before == 0 else long_seconds_to_ms("rotate_before", rotate_before)
        self.rotate_before_percent: Optional[int] = None
        if rotate_before_percent is not None:
            self.rotate_before_percent = int_arg("rotate_before_percent", rotate_before_percent, 0, 100)
        self.rotation_template = c_str("rotation_template", rotation_template, required=False)
        self.rotation_reuse_key = bool(rotation_reuse_key)
        retry = retry if retry is not None else RetryPolicy()
        if not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy, not {type(retry).__name__}")
        self.max_attempts = int_arg("retry.max_attempts", retry.max_attempts, 1, 0xFFFFFFFF)
        self.backoff_base_ms = seconds_to_ms("retry.backoff_base", retry.backoff_base)
        self.backoff_max_ms = seconds_to_ms("retry.backoff_max", retry.backoff_max)
        if self.backoff_base_ms > self.backoff_max_ms:
            raise _codes.InvalidArgumentError("retry.backoff_base must not exceed retry.backoff_max")
        deadline_ms = seconds_to_ms("retry.deadline", retry.deadline)
        self.timeout = None if timeout is None else seconds_to_ms("timeout", timeout) / 1000.0
        if timeout is not None:
            # The library's own deadline ends the run itself, not just our wait for it.
            deadline_ms = min(deadline_ms, seconds_to_ms("timeout", timeout))
        self.deadline_ms = deadline_ms

    @property
    def wait_limit(self) -> Optional[float]:
        """How long to wait for the outcome: the timeout, and a little more for the library's
        own deadline error, which ends the run itself."""
        return None if self.timeout is None else self.timeout + TIMEOUT_GRACE

    def build(self) -> int:
        claim = self.connection.build()
        try:
            out = ctypes.c_void_p()
            check(
                _ffi.fp_provision_options_new(claim, self.template_name, self.output_dir, ctypes.byref(out)),
                "provisioning options (template_name, output_dir, claim certificate and key)",
            )
        finally:
            _ffi.fp_client_options_free(claim)
        opts = out.value
        assert opts is not None
        try:
            check(_ffi.fp_provision_options_set_parameters(opts, self.parameters), "parameters")
            check(_ffi.fp_provision_options_set_key_type(opts, int(self.key_type)), "key_type")
            if self.device_pkcs11 is not None:
                self._build_device_pkcs11(opts, self.device_pkcs11)
            if self.device_signer is not None:
                check(
                    _ffi.fp_provision_options_set_device_key_signer(opts, self.device_signer._signer_ptr()),
                    "device_signer",
                )
            if self.csr_subject is not None:
                check(_ffi.fp_provision_options_set_csr_subject(opts, self.csr_subject), "csr_subject")
            if self.csr_pem is not None and self.csr_private_key is not None:
                secret = _ffi.SecretArg(self.csr_private_key)
                try:
                    if secret.has_nul:
                        raise _codes.InvalidArgumentError("csr_private_key contains a NUL byte")
                    check(
                        _ffi.fp_provision_options_set_user_csr(opts, self.csr_pem, secret.pointer),
                        "csr_pem/csr_private_key",
                    )
                finally:
                    secret.wipe()
            if self.device_client_id is not None:
                check(
                    _ffi.fp_provision_options_set_device_client_id(opts, self.device_client_id),
                    "device_client_id",
                )
            check(_ffi.fp_provision_options_set_force(opts, int(self.force)), "force")
            check(_ffi.fp_provision_options_set_max_attempts(opts, self.max_attempts), "retry.max_attempts")
            check(
                _ffi.fp_provision_options_set_backoff_ms(opts, self.backoff_base_ms, self.backoff_max_ms),
                "retry.backoff_base/backoff_max",
            )
            check(_ffi.fp_provision_options_set_deadline_ms(opts, self.deadline_ms), "retry.deadline")
            if self.rotate_before_ms is not None:
                check(_ffi.fp_provision_options_set_rotate_before_ms(opts, self.rotate_before_ms), "rotate_before")
            if self.rotate_before_percent is not None:
                check(
                    _ffi.fp_provision_options_set_rotate_before_percent(opts, self.rotate_before_percent),
                    "rotate_before_percent",
                )
            if self.rotation_template is not None:
                check(
                    _ffi.fp_provision_options_set_rotation_template(opts, self.rotation_template),
                    "rotation_template",
                )
            check(
                _ffi.fp_provision_options_set_rotation_reuse_key(opts, int(self.rotation_reuse_key)),
                "rotation_reuse_key",
            )
        except BaseException:
            _ffi.fp_provision_options_free(opts)
            raise
        return opts

    def _build_device_pkcs11(self, opts: int, key: Pkcs11Key) -> None:
        """The device key in the token: its settings go through client options made here."""
        token = ctypes.c_void_p()
        check(_ffi.fp_client_options_new(b"unused", ctypes.byref(token)), "device_pkcs11")
        try:
            ConnectionConfig._build_pkcs11(token.value or 0, key)
            pkcs11_type = {
                KeyType.EC_P256: _codes.FP_PKCS11_KEY_EC_P256,
                KeyType.EC_P384: _codes.FP_PKCS11_KEY_EC_P384,
                KeyType.RSA_2048: _codes.FP_PKCS11_KEY_RSA_2048,
            }[self.key_type]
            check(
                _ffi.fp_provision_options_set_device_key_pkcs11(opts, token.value, pkcs11_type, 1),
                "device_pkcs11",
            )
        finally:
            _ffi.fp_client_options_free(token.value)


# ---------------------------------------------------------------- sinks


class ProvisionRun:
    """A running ``fp_provision_start()``: its ``fp_provision_op *``, which ``cancel()`` may
    use from any thread until the run's final callback releases it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._op: Optional[int] = None
        self._ended = False
        self.cancelled = False

    def started(self, op: Optional[int]) -> None:
        with self._lock:
            if self._ended:  # the final callback came first
                _ffi.fp_provision_op_free(op)
            else:
                self._op = op
                if self.cancelled:
                    _ffi.fp_provision_cancel(op)

    def cancel(self) -> None:
        """Cancels the run (``fp_provision_cancel()``): it ends within milliseconds with
        ``CancelledError``, leaving the store's previous identity, or none. Harmless after the
        end."""
        with self._lock:
            self.cancelled = True
            if self._op is not None:
                _ffi.fp_provision_cancel(self._op)

    def ended(self) -> None:
        """The final callback has run: the handle is released."""
        live_runs.discard(self)
        with self._lock:
            self._ended = True
            if self._op is not None:
                _ffi.fp_provision_op_free(self._op)
                self._op = None


class Sink:
    """Where a call's progress and outcome go; called on library threads."""

    #: The provisioning run this sink belongs to, if any.
    run: Optional[ProvisionRun] = None

    def progress(self, event: Progress) -> None:  # pragma: no cover - overridden
        pass

    def finish(self, outcome: object) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class QueueSink(Sink):
    """For the synchronous API: the waiting thread reads the queue."""

    def __init__(self) -> None:
        self.queue: "queue.Queue[Tuple[str, object]]" = queue.Queue()
        self.abandoned = False

    def progress(self, event: Progress) -> None:
        self.queue.put(("progress", event))

    def finish(self, outcome: object) -> None:
        if self.abandoned:
            discard(outcome)
        self.queue.put(("done", outcome))

    def wait(
        self,
        timeout: Optional[float],
        on_progress: Optional[ProgressCallback],
        what: str,
    ) -> object:
        """Waits for the outcome, calling ``on_progress`` on this thread; raises errors."""
        end = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                remaining = None if end is None else max(0.0, end - time.monotonic())
                try:
                    kind, payload = self.queue.get(timeout=remaining)
                except queue.Empty:
                    raise _codes.TimeoutError(
                        f"{what}: no result within {timeout} s (the timeout); the call goes "
                        f"on in the background and its result is discarded"
                    ) from None
                if kind == "progress":
                    if on_progress is not None:
                        assert isinstance(payload, Progress)
                        on_progress(payload)
                    continue
                if isinstance(payload, FleetprovError):
                    raise payload
                return payload
        except BaseException:
            self.abandon()
            raise

    def abandon(self) -> None:
        self.abandoned = True
        # An outcome that arrived meanwhile is discarded now, one arriving later by finish().
        while True:
            try:
                kind, payload = self.queue.get_nowait()
            except queue.Empty:
                return
            if kind == "done":
                discard(payload)


def discard(outcome: object) -> None:
    """Drops an outcome nobody will read; a private key in it is wiped."""
    if isinstance(outcome, KeysAndCertificate):
        outcome.wipe()


# ---------------------------------------------------------------- registry and callbacks

_registry: Dict[int, Any] = {}
_live_clients: "weakref.WeakSet[ClientHandle]" = weakref.WeakSet()
#: Signers (``fleetprov.Signer``) not yet closed; closed at exit after the clients.
live_signers: "weakref.WeakSet[Any]" = weakref.WeakSet()
_registry_lock = threading.Lock()
_keys = itertools.count(1)
_running = threading.Condition()
_running_provisions = 0
#: Provision runs whose final callback has not run yet.
live_runs: "Set[ProvisionRun]" = set()


def register(state: object) -> int:
    key = next(_keys)
    with _registry_lock:
        _registry[key] = state
    return key


def lookup(key: Optional[int], *, remove: bool) -> Any:
    if key is None:
        return None
    with _registry_lock:
        return _registry.pop(key, None) if remove else _registry.get(key)


def _guarded(fn: Callable[..., None]) -> Callable[..., None]:
    """No exception may escape into the library's thread: log it instead.

    The C function pointers below (``on_progress = _ffi.PROGRESS_CB(...)``, ...) are made once,
    at import, and live as long as the process: one freed while a library thread still
    returns through it would be a use-after-free. Each call's state is found through
    ``user_data``, a key into ``_registry``."""

    def run(*args: Any) -> None:
        try:
            fn(*args)
        except BaseException:  # noqa: BLE001 - nothing may cross into C
            logger.exception("fleetprov: error in a callback (the result may be lost)")

    return run


def _read_config(ptr: Any, n: int) -> Dict[str, str]:
    return {_text(ptr[i].key): _text(ptr[i].value) for i in range(n)}


def _optional_text(value: Optional[bytes]) -> Optional[str]:
    return None if value is None else _text(value)


def _provisioned(result: int) -> Provisioned:
    n = _ffi.fp_provisioned_device_configuration_len(result)
    config: Dict[str, str] = {}
    for i in range(n):
        kv = _ffi.fp_provisioned_device_configuration_at(result, i)
        if kv:
            config[_text(kv.contents.key)] = _text(kv.contents.value)
    return Provisioned(
        thing_name=_text(_ffi.fp_provisioned_thing_name(result)),
        certificate_id=_text(_ffi.fp_provisioned_certificate_id(result)),
        client_id=_text(_ffi.fp_provisioned_client_id(result)),
        certificate_file=_text(_ffi.fp_provisioned_certificate_file(result)),
        private_key_file=_text(_ffi.fp_provisioned_private_key_file(result)),
        metadata_file=_text(_ffi.fp_provisioned_metadata_file(result)),
        reused=bool(_ffi.fp_provisioned_reused(result)),
        rotated=bool(_ffi.fp_provisioned_rotated(result)),
        previous_certificate_id=_optional_text(_ffi.fp_provisioned_previous_certificate_id(result)),
        attempts=int(_ffi.fp_provisioned_attempts(result)),
        device_configuration=config,
        abandoned_certificates=[
            _text(_ffi.fp_provisioned_abandoned_certificate_at(result, i))
            for i in range(_ffi.fp_provisioned_abandoned_certificate_count(result))
        ],
        key_location=KEY_LOCATIONS.get(int(_ffi.fp_provisioned_key_location(result)), "file"),
    )


#: ``fp_key_location`` values by name, for ``Provisioned.key_location``.
KEY_LOCATIONS = {
    _codes.FP_KEY_LOCATION_FILE: "file",
    _codes.FP_KEY_LOCATION_PKCS11: "pkcs11",
    _codes.FP_KEY_LOCATION_SIGNER: "signer",
}


def _on_progress(user_data: Optional[int], step: int, attempt: int, delay_ms: int, detail: Optional[bytes]) -> None:
    sink = lookup(user_data, remove=False)
    if sink is None:
        return
    try:
        kind = Step(step)
    except ValueError:
        return  # a step added in a later library version: not ours to name
    sink.progress(Progress(kind, int(attempt), int(delay_ms), _text(detail)))
    if sink.run is not None and sink.run.cancelled:
        sink.run.cancel()  # cancelled during the step: the run stops before the next one


on_progress = _ffi.PROGRESS_CB(_guarded(_on_progress))


def _on_provision(user_data: Optional[int], result: Optional[int], error: Optional[int]) -> None:
    global _running_provisions
    sink = lookup(user_data, remove=True)
    try:
        if sink is not None:
            sink.finish(_provisioned(result) if result else error_from(error or 0))
    finally:
        if sink is not None and sink.run is not None:
            sink.run.ended()
        with _running:
            _running_provisions -= 1
            _running.notify_all()


on_provision = _ffi.PROVISION_CB(_guarded(_on_provision))


def _on_create_keys(user_data: Optional[int], response: Any, error: Optional[int]) -> None:
    sink = lookup(user_data, remove=True)
    if sink is None:
        return
    if response:
        r = response.contents
        outcome: object = KeysAndCertificate(
            certificate_id=_text(r.certificate_id),
            certificate_pem=_text(r.certificate_pem),
            private_key=_ffi.copy_secret(r.private_key),
            certificate_ownership_token=_text(r.certificate_ownership_token),
        )
    else:
        outcome = error_from(error or 0)
    sink.finish(outcome)


on_create_keys = _ffi.CREATE_KEYS_CB(_guarded(_on_create_keys))


def _on_create_from_csr(user_data: Optional[int], response: Any, error: Optional[int]) -> None:
    sink = lookup(user_data, remove=True)
    if sink is None:
        return
    if response:
        r = response.contents
        outcome: object = Certificate(
            certificate_id=_text(r.certificate_id),
            certificate_pem=_text(r.certificate_pem),
            certificate_ownership_token=_text(r.certificate_ownership_token),
        )
    else:
        outcome = error_from(error or 0)
    sink.finish(outcome)


on_create_from_csr = _ffi.CREATE_FROM_CSR_CB(_guarded(_on_create_from_csr))


def _on_register_thing(user_data: Optional[int], response: Any, error: Optional[int]) -> None:
    sink = lookup(user_data, remove=True)
    if sink is None:
        return
    if response:
        r = response.contents
        outcome: object = RegisteredThing(
            thing_name=_text(r.thing_name),
            device_configuration=_read_config(r.device_configuration, r.device_configuration_len)
            if r.device_configuration
            else {},
        )
    else:
        outcome = error_from(error or 0)
    sink.finish(outcome)


on_register_thing = _ffi.REGISTER_THING_CB(_guarded(_on_register_thing))


class LifecycleState:
    """A client's connection, as its lifecycle callback reports it."""

    def __init__(self, connect_sink: Sink) -> None:
        self.connect_sink: Optional[Sink] = connect_sink
        self.lost: Optional[FleetprovError] = None
        self.stopped = threading.Event()


def _on_lifecycle(user_data: Optional[int], event: int, error: Optional[int]) -> None:
    state = lookup(user_data, remove=event == _codes.FP_EVENT_STOPPED)
    if state is None:
        return
    assert isinstance(state, LifecycleState)
    if event in (_codes.FP_EVENT_CONNECTION_SUCCESS, _codes.FP_EVENT_CONNECTION_FAILURE):
        sink, state.connect_sink = state.connect_sink, None
        if sink is not None:
            sink.finish(None if event == _codes.FP_EVENT_CONNECTION_SUCCESS else error_from(error or 0))
    elif event == _codes.FP_EVENT_DISCONNECTED:
        state.lost = error_from(error or 0)
    elif event == _codes.FP_EVENT_STOPPED:
        sink, state.connect_sink = state.connect_sink, None
        if sink is not None:  # stopped before any connect outcome: never expected, but final
            sink.finish(_codes.CancelledError("the client stopped before it connected"))
        state.stopped.set()


on_lifecycle = _ffi.LIFECYCLE_CB(_guarded(_on_lifecycle))


# ---------------------------------------------------------------- starting calls


def start_provision(config: ProvisionConfig, sink: Sink) -> ProvisionRun:
    """Starts ``fp_provision_start()``; the outcome goes to ``sink``. Raises if it cannot
    start. The returned run can be cancelled."""
    global _running_provisions
    sync_log_level()
    opts = config.build()
    run = ProvisionRun()
    sink.run = run
    live_runs.add(run)
    key = register(sink)
    out = ctypes.c_void_p()
    try:
        with _running:
            _running_provisions += 1
        rc = _ffi.fp_provision_start(opts, on_progress, on_provision, key, ctypes.byref(out))
    finally:
        _ffi.fp_provision_options_free(opts)
    if rc != _codes.FP_OK:
        lookup(key, remove=True)
        with _running:
            _running_provisions -= 1
            _running.notify_all()
        live_runs.discard(run)
        check(rc, "cannot start provisioning")
    run.started(out.value)
    return run


class ClientHandle:
    """An ``fp_client *``: made, connected once, freed once (also by the garbage collector)."""

    def __init__(self, config: ConnectionConfig) -> None:
        sync_log_level()
        opts = config.build()
        try:
            out = ctypes.c_void_p()
            check(_ffi.fp_client_new(opts, ctypes.byref(out)), "client options")
        finally:
            _ffi.fp_client_options_free(opts)
        self._ptr: Optional[int] = out.value
        self._lock = threading.Lock()
        self.lifecycle: Optional[LifecycleState] = None
        _live_clients.add(self)

    def _ptr_locked(self) -> int:
        if self._ptr is None:
            raise _codes.NotConnectedError("the client is closed")
        return self._ptr

    # The start calls below return at once; they run under the lock so that close() cannot
    # free the handle while one is in the library (fp_client_free() must not race them).

    def connect(self, sink: Sink) -> None:
        with self._lock:
            ptr = self._ptr_locked()
            if self.lifecycle is not None:
                raise _codes.AlreadyConnectedError(
                    "connect() was already called on this client (a client connects once)"
                )
            state = LifecycleState(sink)
            key = register(state)
            rc = _ffi.fp_client_connect(ptr, on_lifecycle, key)
            if rc != _codes.FP_OK:
                lookup(key, remove=True)
                check(rc, "cannot start connecting")
            self.lifecycle = state

    def start(self, name: str, fn: Callable[[int, int], int], sink: Sink) -> None:
        sync_log_level()
        with self._lock:
            ptr = self._ptr_locked()
            if self.lifecycle is None:
                raise _codes.NotConnectedError(f"{name}: call connect() first")
            key = register(sink)
            rc = fn(ptr, key)
            if rc != _codes.FP_OK:
                lookup(key, remove=True)
                check(rc, f"cannot start {name}")

    def close(self) -> None:
        """Disconnects cleanly, cancels what is pending and frees the client; blocks until
        the client's callbacks have run. Idempotent."""
        with self._lock:
            ptr, self._ptr = self._ptr, None
        if ptr is None:
            return
        if self.lifecycle is not None:
            _ffi.fp_client_disconnect(ptr)
            # STOPPED follows the clean DISCONNECT; fp_client_free() below waits in any case.
            self.lifecycle.stopped.wait(5.0)
        _ffi.fp_client_free(ptr)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - nothing to report to at collection time
            pass


# ---------------------------------------------------------------- log routing

_PY_LEVEL = {
    _codes.FP_LOG_FATAL: logging.CRITICAL,
    _codes.FP_LOG_ERROR: logging.ERROR,
    _codes.FP_LOG_WARN: logging.WARNING,
    _codes.FP_LOG_INFO: logging.INFO,
    _codes.FP_LOG_DEBUG: logging.DEBUG,
    _codes.FP_LOG_TRACE: TRACE,
}
_installed_level = _codes.FP_LOG_NONE
_log_lock = threading.Lock()


def _on_log(_user_data: Optional[int], level: int, message: Optional[bytes]) -> None:
    try:
        logger.log(_PY_LEVEL.get(level, logging.INFO), "%s", _text(message))
    except BaseException:  # noqa: BLE001 - a log line is not worth crossing into C
        pass


# Made once and kept for the life of the process: the library may call it at any time.
on_log = _ffi.LOG_CB(_on_log)


def library_level_for(py_level: int) -> int:
    """The library's log level that delivers what a logger at ``py_level`` would emit."""
    if py_level <= TRACE:
        return _codes.FP_LOG_TRACE
    if py_level <= logging.DEBUG:
        return _codes.FP_LOG_DEBUG
    if py_level <= logging.INFO:
        return _codes.FP_LOG_INFO
    if py_level <= logging.WARNING:
        return _codes.FP_LOG_WARN
    if py_level <= logging.ERROR:
        return _codes.FP_LOG_ERROR
    if py_level <= logging.CRITICAL:
        return _codes.FP_LOG_FATAL
    return _codes.FP_LOG_NONE


def sync_log_level() -> None:
    """Sets the library's log level from the "fleetprov" logger's effective level (and
    whether anything would handle a record). Called whenever a call starts."""
    global _installed_level
    want = library_level_for(logger.getEffectiveLevel())
    with _log_lock:
        if want == _installed_level:
            return
        if want == _codes.FP_LOG_NONE:
            _ffi.fp_set_log_callback(_ffi.LOG_CB(), None, None, _codes.FP_LOG_NONE)
        else:
            check(_ffi.fp_set_log_callback(on_log, None, None, want), "log level")
        _installed_level = want


def _at_exit() -> None:
    """The library's threads must not call into an interpreter that is going away: stop the
    log callback, cancel provision runs still going, and wait for them to end (a cancelled
    run ends within milliseconds)."""
    global _installed_level
    with _log_lock:
        _ffi.fp_set_log_callback(_ffi.LOG_CB(), None, None, _codes.FP_LOG_NONE)
        _installed_level = _codes.FP_LOG_NONE
    for client in list(_live_clients):
        client.close()
    for signer in list(live_signers):
        signer.close()
    # Nothing will read the outcome of a run still going: cancel it, so it ends at once.
    for run in list(live_runs):
        run.cancel()
    with _running:
        while _running_provisions > 0:
            _running.wait()


atexit.register(_at_exit)


def version() -> str:
    """The version of the bundled libfleetprov."""
    return _text(_ffi.fp_version())
