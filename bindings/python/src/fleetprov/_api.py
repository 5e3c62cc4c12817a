"""The synchronous API: ``provision()`` and ``Client``."""

from __future__ import annotations

from types import TracebackType
from typing import Callable, Optional, Type, Union

from . import _codes, _core, _ffi
from ._core import (
    ConnectionConfig,
    Parameters,
    ProgressCallback,
    ProvisionConfig,
    QueueSink,
    Secret,
    Sink,
    StrPath,
)
from ._signer import Signer
from ._types import (
    Certificate,
    KeysAndCertificate,
    KeyType,
    PayloadFormat,
    Pkcs11Key,
    Provisioned,
    RegisteredThing,
    RetryPolicy,
)


def provision(
    *,
    endpoint: str,
    template_name: str,
    output_dir: StrPath,
    cert_file: Optional[StrPath] = None,
    key_file: Optional[StrPath] = None,
    ca_file: Optional[StrPath] = None,
    cert_pem: Optional[str] = None,
    key_pem: Optional[Secret] = None,
    ca_pem: Optional[str] = None,
    port: int = 8883,
    client_id: Optional[str] = None,
    mqtt_version: int = 5,
    payload_format: PayloadFormat = PayloadFormat.JSON,
    keep_alive_secs: Optional[int] = None,
    connect_timeout: Optional[float] = None,
    operation_timeout: Optional[float] = None,
    proxy_host: Optional[str] = None,
    proxy_port: Optional[int] = None,
    pkcs11: Optional[Pkcs11Key] = None,
    signer: Optional[Signer] = None,
    device_pkcs11: Optional[Pkcs11Key] = None,
    device_signer: Optional[Signer] = None,
    parameters: Parameters = None,
    key_type: KeyType = KeyType.EC_P256,
    csr_subject: Optional[str] = None,
    csr_pem: Optional[str] = None,
    csr_private_key: Optional[Secret] = None,
    device_client_id: Optional[str] = None,
    force: bool = False,
    retry: Optional[RetryPolicy] = None,
    on_progress: Optional[ProgressCallback] = None,
    timeout: Optional[float] = None,
    rotate_before: Optional[float] = None,
    rotate_before_percent: Optional[int] = None,
    rotation_template: Optional[str] = None,
    rotation_reuse_key: bool = False,
) -> Provisioned:
    """Provisions the device into the identity store ``output_dir``, or reuses the valid
    identity stored there, and proves it by connecting with it (``fp_provision()``).

    The claim connection: ``endpoint``, ``port``, the claim certificate (``cert_file`` or
    ``cert_pem``) and key (``key_file``, ``key_pem``, ``pkcs11`` or ``signer``, a ``Signer``
    made from the claim certificate, which then needs no ``cert_file``), ``ca_file``/``ca_pem``
    (default: the system's roots), ``client_id``, ``mqtt_version`` (5 or 3),
    ``payload_format``, timeouts in seconds, an HTTP CONNECT proxy. The device connection
    uses the same settings with the new identity.

    Provisioning: ``template_name`` and its ``parameters`` (a mapping of str to str or a JSON
    object text); ``key_type`` (``KeyType.SERVICE`` for CreateKeysAndCertificate, otherwise a
    key made on the device and CreateCertificateFromCsr with ``csr_subject``), or your own
    CSR with ``csr_pem`` and ``csr_private_key``, or ``device_pkcs11``: the device key kept in
    a PKCS#11 token (the token's key of that label, generated there with ``key_type`` if it has
    none; no key file is written, the certificate is stored in the token too, and a later call
    with the same ``device_pkcs11`` reuses the identity), or ``device_signer``: a ``Signer``
    made from the device key's public key, which signs the CSR and the device connection's TLS
    handshake (no key file; ``Provisioned.key_location`` is ``"signer"``; a later call reuses
    the identity only with a signer of the stored certificate's key); ``device_client_id`` (default: the thing
    name); ``force`` (provision anew even if a valid identity is stored); ``retry``.

    Rotation: a stored identity whose certificate has at most ``rotate_before`` seconds, or
    ``rotate_before_percent`` % of its lifetime (default 33), left is renewed with itself, not
    the claim (``Provisioned.rotated``, ``previous_certificate_id``); 0 turns it off.
    ``rotation_template`` is the template RegisterThing uses then (default
    ``template_name``); ``rotation_reuse_key`` keeps the key in use.

    ``on_progress`` is called with each ``Progress`` on this thread, in order. ``timeout``
    (seconds) bounds the whole run: it becomes the library's deadline (if shorter than
    ``retry.deadline``), so the run itself ends then, with ``fleetprov.TimeoutError`` naming
    the step it was in (fleetprov raises its own if the library has not answered within
    half a second more).

    Cancellation: anything that ends the wait early (``KeyboardInterrupt`` from Ctrl-C, an
    exception raised by ``on_progress``, fleetprov's own timeout) cancels the run
    (``fp_provision_cancel()``) before it propagates: the run ends within milliseconds and
    the store keeps the identity it held before, or none.

    Returns a ``Provisioned``; raises a ``FleetprovError`` subclass: ``RejectedError`` with
    AWS's fields, ``TlsError``, ``StoreError``, ``IoError`` for an unreadable file, ...
    """
    config = ProvisionConfig(
        ConnectionConfig(
            endpoint=endpoint,
            port=port,
            cert_file=cert_file,
            key_file=key_file,
            ca_file=ca_file,
            cert_pem=cert_pem,
            key_pem=key_pem,
            ca_pem=ca_pem,
            client_id=client_id,
            template_name=template_name,
            mqtt_version=mqtt_version,
            payload_format=payload_format,
            keep_alive_secs=keep_alive_secs,
            connect_timeout=connect_timeout,
            operation_timeout=operation_timeout,
            proxy_host=proxy_host,
            proxy_port=proxy_port,
            pkcs11=pkcs11,
            signer=signer,
        ),
        template_name=template_name,
        output_dir=output_dir,
        parameters=parameters,
        key_type=key_type,
        csr_subject=csr_subject,
        csr_pem=csr_pem,
        csr_private_key=csr_private_key,
        device_client_id=device_client_id,
        force=force,
        retry=retry,
        timeout=timeout,
        rotate_before=rotate_before,
        rotate_before_percent=rotate_before_percent,
        rotation_template=rotation_template,
        rotation_reuse_key=rotation_reuse_key,
        device_pkcs11=device_pkcs11,
        device_signer=device_signer,
    )
    sink = QueueSink()
    run = _core.start_provision(config, sink)
    try:
        result = sink.wait(config.wait_limit, on_progress, "provision()")
    except BaseException:
        # KeyboardInterrupt (Ctrl-C), an exception from on_progress, or fleetprov's own
        # timeout: the run is cancelled, not left running.
        run.cancel()
        raise
    assert isinstance(result, Provisioned)
    return result


class ClientBase:
    """What the synchronous and the asyncio ``Client`` share: the options and the C handle."""

    def __init__(
        self,
        endpoint: str,
        *,
        cert_file: Optional[StrPath] = None,
        key_file: Optional[StrPath] = None,
        ca_file: Optional[StrPath] = None,
        cert_pem: Optional[str] = None,
        key_pem: Optional[Secret] = None,
        ca_pem: Optional[str] = None,
        port: int = 8883,
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
        signer: Optional[Signer] = None,
    ) -> None:
        self._handle = _core.ClientHandle(
            ConnectionConfig(
                endpoint=endpoint,
                port=port,
                cert_file=cert_file,
                key_file=key_file,
                ca_file=ca_file,
                cert_pem=cert_pem,
                key_pem=key_pem,
                ca_pem=ca_pem,
                client_id=client_id,
                template_name=template_name,
                mqtt_version=mqtt_version,
                payload_format=payload_format,
                keep_alive_secs=keep_alive_secs,
                connect_timeout=connect_timeout,
                operation_timeout=operation_timeout,
                proxy_host=proxy_host,
                proxy_port=proxy_port,
                pkcs11=pkcs11,
                signer=signer,
            )
        )

    @property
    def connected(self) -> bool:
        """True once ``connect()`` was called (whatever came of it)."""
        return self._handle.lifecycle is not None

    def _start_connect(self, sink: Sink) -> None:
        self._handle.connect(sink)

    def _start_create_keys(self, sink: Sink) -> None:
        self._handle.start(
            "CreateKeysAndCertificate",
            lambda ptr, key: int(_ffi.fp_create_keys(ptr, _core.on_create_keys, key)),
            sink,
        )

    def _start_create_from_csr(self, csr_pem: Union[str, bytes], sink: Sink) -> None:
        if isinstance(csr_pem, bytes):
            try:
                csr_pem = csr_pem.decode("utf-8")
            except UnicodeDecodeError:
                raise _codes.InvalidUtf8Error("csr_pem is not UTF-8 text") from None
        csr = _core.c_str("csr_pem", csr_pem, nonempty=True)
        self._handle.start(
            "CreateCertificateFromCsr",
            lambda ptr, key: int(_ffi.fp_create_from_csr(ptr, csr, _core.on_create_from_csr, key)),
            sink,
        )

    def _start_register(
        self,
        template_name: str,
        certificate_ownership_token: str,
        parameters: Parameters,
        sink: Sink,
    ) -> None:
        name = _core.c_str("template_name", template_name)
        token = _core.c_str(
            "certificate_ownership_token", certificate_ownership_token, nonempty=True
        )
        params = _core.parameters_json(parameters)
        _core.check_template(name, params, "register_thing()")
        self._handle.start(
            "RegisterThing",
            lambda ptr, key: int(
                _ffi.fp_register_thing(ptr, name, token, params, _core.on_register_thing, key)
            ),
            sink,
        )


def _wait(start: Callable[[Sink], None], timeout: Optional[float], what: str) -> object:
    if timeout is not None:
        timeout = _core.seconds_to_ms("timeout", timeout) / 1000.0
    sink = QueueSink()
    start(sink)
    return sink.wait(timeout, None, what)


class Client(ClientBase):
    """A connection to the provisioning endpoint for the three operations, one by one.

    ``Client(endpoint, cert_file=..., key_file=..., ca_file=..., port=...)`` takes the
    connection settings of ``provision()``, and ``signer`` (a ``Signer``) for the key (``template_name`` here only lets the create call
    subscribe to that template's RegisterThing replies ahead). Call ``connect()`` (or use
    ``with``, which connects), then the operations; ``close()`` disconnects and frees.
    Each call's ``timeout`` (seconds) bounds this thread's wait; the operation's own limit is
    ``operation_timeout`` (default 30 s).
    """

    def connect(self, timeout: Optional[float] = None) -> None:
        """Connects (TLS, MQTT CONNECT); raises the failure (``TlsError``, ``IoError``...)."""
        _wait(self._start_connect, timeout, "connect()")

    def create_keys_and_certificate(self, timeout: Optional[float] = None) -> KeysAndCertificate:
        """CreateKeysAndCertificate. The private key is a ``bytearray``: wipe it when saved."""
        result = _wait(self._start_create_keys, timeout, "create_keys_and_certificate()")
        assert isinstance(result, KeysAndCertificate)
        return result

    def create_certificate_from_csr(
        self, csr_pem: Union[str, bytes], timeout: Optional[float] = None
    ) -> Certificate:
        """CreateCertificateFromCsr with a PEM certificate signing request."""
        result = _wait(
            lambda sink: self._start_create_from_csr(csr_pem, sink),
            timeout,
            "create_certificate_from_csr()",
        )
        assert isinstance(result, Certificate)
        return result

    def register_thing(
        self,
        template_name: str,
        certificate_ownership_token: str,
        parameters: Parameters = None,
        timeout: Optional[float] = None,
    ) -> RegisteredThing:
        """RegisterThing with the token of a create call and the template's parameters."""
        result = _wait(
            lambda sink: self._start_register(
                template_name, certificate_ownership_token, parameters, sink
            ),
            timeout,
            "register_thing()",
        )
        assert isinstance(result, RegisteredThing)
        return result

    def close(self) -> None:
        """Disconnects cleanly and frees the client; pending operations end with
        ``CancelledError`` (or their real outcome). Blocks until the client's callbacks have
        run. Calling it again does nothing."""
        self._handle.close()

    def __enter__(self) -> "Client":
        if not self.connected:
            try:
                self.connect()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()
