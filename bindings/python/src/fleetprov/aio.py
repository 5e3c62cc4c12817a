"""The asyncio API: ``await fleetprov.aio.provision(...)`` and ``fleetprov.aio.Client``.

Results come from the library's threads to the event loop through
``loop.call_soon_threadsafe``; the loop is never blocked by a wait.

Cancellation: cancelling the task awaiting ``provision()`` (``task.cancel()``, or
``asyncio.wait_for`` running out) cancels the run itself (``fp_provision_cancel()``): it ends
within milliseconds, its connections closed, and the store keeps the identity it held
before, or none. The task raises ``asyncio.CancelledError`` at once. ``timeout`` (seconds)
becomes the library's deadline, so the run ends by then with ``fleetprov.TimeoutError``.

The C library cannot cancel one operation of a ``Client``: cancelling a task awaiting one
raises ``asyncio.CancelledError`` at once, the operation goes on until it ends and its result
is discarded (a private key in it is wiped). Closing a ``Client`` cancels its pending
operations.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Callable, Optional, Type, Union

from . import _codes, _core
from ._api import ClientBase
from ._core import (
    ConnectionConfig,
    Parameters,
    ProgressCallback,
    ProvisionConfig,
    Secret,
    Sink,
    StrPath,
    discard,
)
from ._errorbase import FleetprovError
from ._signer import Signer
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
)

__all__ = ["provision", "Client"]


class LoopSink(Sink):
    """Hands a call's progress and outcome to an event loop (from library threads)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_progress: Optional[ProgressCallback] = None
    ) -> None:
        self.loop = loop
        self.future: "asyncio.Future[object]" = loop.create_future()
        self.on_progress = on_progress

    def progress(self, event: Progress) -> None:
        if self.on_progress is not None:
            self._post(self._deliver_progress, event)

    def finish(self, outcome: object) -> None:
        if not self._post(self._settle, outcome):
            discard(outcome)  # the loop is closed: nobody will read it

    def _post(self, fn: Callable[[object], None], arg: object) -> bool:
        try:
            self.loop.call_soon_threadsafe(fn, arg)
            return True
        except RuntimeError:
            return False

    def _deliver_progress(self, event: object) -> None:
        if self.future.done() or self.on_progress is None:
            return
        assert isinstance(event, Progress)
        try:
            self.on_progress(event)
        except Exception as e:  # noqa: BLE001 - handed to the awaiting task
            self.future.set_exception(e)

    def _settle(self, outcome: object) -> None:
        if self.future.done():  # cancelled or timed out: the result is nobody's
            discard(outcome)
        elif isinstance(outcome, BaseException):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)


async def _await(sink: LoopSink, timeout: Optional[float], what: str) -> object:
    if timeout is None:
        return await sink.future
    try:
        return await asyncio.wait_for(sink.future, timeout)
    except (asyncio.TimeoutError, TimeoutError) as e:  # one class from Python 3.11 on
        if isinstance(e, FleetprovError):  # the library's own timeout
            raise
        raise _codes.TimeoutError(
            f"{what}: no result within {timeout} s (the timeout); the call goes on in the "
            f"background and its result is discarded"
        ) from None


async def provision(
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
    """``fleetprov.provision()`` for asyncio: the same arguments; ``on_progress`` runs on the
    event loop. See the module's documentation for cancellation and ``timeout``."""
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
    sink = LoopSink(asyncio.get_running_loop(), on_progress)
    run = _core.start_provision(config, sink)
    try:
        result = await _await(sink, config.wait_limit, "provision()")
    except BaseException:
        run.cancel()  # the task was cancelled (or timed out): so is the run
        raise
    assert isinstance(result, Provisioned)
    return result


class Client(ClientBase):
    """``fleetprov.Client`` for asyncio: the same constructor; ``await`` the operations.

    ``async with Client(...) as c:`` connects, and closes on the way out. ``close()`` runs the
    blocking free in the loop's default executor.
    """

    async def _run(self, start: Callable[[Sink], None], timeout: Optional[float], what: str) -> object:
        if timeout is not None:
            timeout = _core.seconds_to_ms("timeout", timeout) / 1000.0
        sink = LoopSink(asyncio.get_running_loop())
        start(sink)
        return await _await(sink, timeout, what)

    async def connect(self, timeout: Optional[float] = None) -> None:
        await self._run(self._start_connect, timeout, "connect()")

    async def create_keys_and_certificate(
        self, timeout: Optional[float] = None
    ) -> KeysAndCertificate:
        result = await self._run(self._start_create_keys, timeout, "create_keys_and_certificate()")
        assert isinstance(result, KeysAndCertificate)
        return result

    async def create_certificate_from_csr(
        self, csr_pem: Union[str, bytes], timeout: Optional[float] = None
    ) -> Certificate:
        result = await self._run(
            lambda sink: self._start_create_from_csr(csr_pem, sink),
            timeout,
            "create_certificate_from_csr()",
        )
        assert isinstance(result, Certificate)
        return result

    async def register_thing(
        self,
        template_name: str,
        certificate_ownership_token: str,
        parameters: Parameters = None,
        timeout: Optional[float] = None,
    ) -> RegisteredThing:
        result = await self._run(
            lambda sink: self._start_register(
                template_name, certificate_ownership_token, parameters, sink
            ),
            timeout,
            "register_thing()",
        )
        assert isinstance(result, RegisteredThing)
        return result

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._handle.close)

    async def __aenter__(self) -> "Client":
        if not self.connected:
            try:
                await self.connect()
            except BaseException:
                await self.close()
                raise
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()
