"""``python -m fleetprov`` / ``fleetprov-provision``: fleet provisioning from the command line.

Takes the flags of AWS's Python fleet provisioning sample (``--endpoint --port --cert --key
--ca_file --client_id --template_name --template_parameters --csr --proxy_host --proxy_port
--verbosity``) plus ``--mqtt_version`` and ``--output_dir``, and those of the C demo
(``c_examples/fleet_provisioning.c``): ``--payload_format``, ``--timeout_ms``, ``--force``,
``--key_type``, ``--max_attempts``, ``--rotate_before``, ``--rotation_template`` and the PKCS#11
flags (the claim key in a token with ``--key_label``; with ``--output_dir`` the device key made
and kept in the token, ``--device_key_label``).

Without ``--output_dir``: connect with the claim, CreateKeysAndCertificate (or
CreateCertificateFromCsr with ``--csr``), RegisterThing, print the result. The keys flow (no
``--csr``) needs ``--identity_file FILE``, unlike AWS's sample: CreateKeysAndCertificate's
answer is the only copy of the private key and RegisterThing activates its certificate, so the
certificate and key are written to FILE (0600, never over an existing file) before RegisterThing
is sent, and never printed. With ``--output_dir DIR`` the directory is the device's identity
store (``fleetprov.provision()``): the first run provisions and saves the identity, later runs
reuse it.

Exit codes (those of the C demo): 0 success, 2 usage, 3 connection failure, 4 rejected by the
service, 5 timeout, 6 other error, 7 identity store or ``--identity_file`` error; 130
interrupted.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, NoReturn, Optional, Sequence

from . import _codes, _ffi
from ._api import Client, provision
from ._core import TEMPLATE_RULE, TRACE
from ._errorbase import FleetprovError
from ._types import KeysAndCertificate, KeyType, PayloadFormat, Pkcs11Key, Progress, RetryPolicy, Step

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_CONNECTION = 3
EXIT_REJECTED = 4
EXIT_TIMEOUT = 5
EXIT_OTHER = 6
EXIT_STORE = 7
EXIT_INTERRUPTED = 130

PROG = "fleetprov-provision"

VERBOSITY = {
    "NoLogs": None,
    "Fatal": logging.CRITICAL,
    "Error": logging.ERROR,
    "Warn": logging.WARNING,
    "Info": logging.INFO,
    "Debug": logging.DEBUG,
    "Trace": TRACE,
}

KEY_TYPES = {
    "ec-p256": KeyType.EC_P256,
    "ec-p384": KeyType.EC_P384,
    "rsa-2048": KeyType.RSA_2048,
    "service": KeyType.SERVICE,
}

STEP_NAMES = {
    Step.CONNECTING: "connecting",
    Step.CREATING: "creating",
    Step.REGISTERING: "registering",
    Step.SAVING: "saving",
    Step.VERIFYING: "verifying",
    Step.RETRY_SCHEDULED: "retry scheduled",
    Step.REUSING: "reusing",
    Step.ROTATING: "rotating",
    Step.CERTIFICATE_ABANDONED: "certificate abandoned",
}


class UsageError(Exception):
    pass


def exit_code_of(error: FleetprovError) -> int:
    """The exit code of a failure, as the C demo maps its ``fp_result``."""
    code = error.code
    if code in (
        _codes.FP_ERR_CONNECTION,
        _codes.FP_ERR_CONNECTION_REFUSED,
        _codes.FP_ERR_TLS,
        _codes.FP_ERR_DISCONNECTED,
    ):
        return EXIT_CONNECTION
    if code == _codes.FP_ERR_REJECTED:
        return EXIT_REJECTED
    if code == _codes.FP_ERR_TIMEOUT:
        return EXIT_TIMEOUT
    if code == _codes.FP_ERR_STORE:
        return EXIT_STORE
    if code in (_codes.FP_ERR_INVALID_ARGUMENT, _codes.FP_ERR_INVALID_UTF8, _codes.FP_ERR_NULL_ARGUMENT):
        return EXIT_USAGE
    return EXIT_OTHER


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="AWS IoT fleet provisioning with a claim certificate (fleetprov).",
        allow_abbrev=False,
    )
    a = p.add_argument
    a("--endpoint", required=True, help="the AWS IoT endpoint host (no scheme or port)")
    a("--port", type=int, default=None, help="TCP port (default 8883)")
    a("--cert", required=True, help="claim certificate PEM file")
    a("--key", help="claim private key PEM file (or --key_label with --pkcs11_lib)")
    a("--ca_file", help="CA certificates PEM file (default: the system's roots)")
    a("--client_id", help="MQTT client id of the claim connection (default test-<uuid>)")
    a("--template_name", required=True, help="provisioning template name")
    a("--template_parameters", help='template parameters, a JSON object of strings')
    a("--csr", help="PEM CSR file: CreateCertificateFromCsr instead of CreateKeysAndCertificate")
    a("--proxy_host", help="HTTP CONNECT proxy host")
    a("--proxy_port", type=int, default=None, help="HTTP CONNECT proxy port (default 8080)")
    a("--verbosity", default="NoLogs", choices=list(VERBOSITY), help="library log level (stderr)")
    a("--mqtt_version", type=int, default=5, choices=[3, 5], help="MQTT 5 (default) or 3 (3.1.1)")
    a("--output_dir", help="identity store: provision once, then reuse the stored identity")
    a("--identity_file", help="the keys flow without --output_dir (no --csr): the new certificate "
                             "and private key are written to this new file (0600) before RegisterThing")
    a("--payload_format", choices=["json", "cbor"], default=None, help="payload format (json)")
    a("--timeout_ms", type=int, default=None, help="connect and operation timeout, ms")
    a("--force", action="store_true", help="with --output_dir: provision anew even if stored")
    a("--key_type", choices=list(KEY_TYPES), default=None,
      help="with --output_dir: the device key (default ec-p256; service: CreateKeysAndCertificate)")
    a("--max_attempts", type=int, default=None, help="with --output_dir: tries in all (8)")
    a("--rotate_before", type=int, default=None,
      help="with --output_dir: rotate the stored identity once at most SECONDS are left (0: never)")
    a("--rotation_template", default=None, help="with --output_dir: the template used when rotating")
    a("--pkcs11_lib", help="PKCS#11 module holding the claim key and, with --output_dir, the device key")
    a("--pin", help="PKCS#11 user PIN")
    a("--token_label", help="PKCS#11 token label")
    a("--slot_id", type=int, default=None, help="PKCS#11 slot id")
    a("--key_label", help="PKCS#11 label of the claim key (instead of --key)")
    a("--device_key_label", default=None,
      help="with --pkcs11_lib and --output_dir: label of the device key made and kept in the "
           "token (default fleetprov-device)")
    return p


def _fail(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def _check_args(args: argparse.Namespace) -> None:
    if (args.key is None) == (args.key_label is None):
        raise UsageError("give one of --key and --key_label (with --pkcs11_lib) for the claim key")
    if args.device_key_label is not None and args.output_dir is None:
        raise UsageError("--device_key_label needs --output_dir")
    if args.pkcs11_lib is None:
        for flag in ("pin", "token_label", "slot_id", "key_label", "device_key_label"):
            if getattr(args, flag) is not None:
                raise UsageError(f"--{flag} needs --pkcs11_lib")
    if args.port is not None and not 1 <= args.port <= 65535:
        raise UsageError("--port must be 1-65535")
    if args.proxy_port is not None:
        if args.proxy_host is None:
            raise UsageError("--proxy_port needs --proxy_host")
        if not 1 <= args.proxy_port <= 65535:
            raise UsageError("--proxy_port must be 1-65535")
    if args.timeout_ms is not None and not 1 <= args.timeout_ms <= 3_600_000:
        raise UsageError("--timeout_ms must be 1-3600000")
    if args.output_dir is None:
        for flag in ("force", "key_type", "max_attempts", "rotate_before", "rotation_template"):
            if getattr(args, flag) not in (None, False):
                raise UsageError(
                    "--force, --key_type, --max_attempts, --rotate_before and --rotation_template "
                    "need --output_dir"
                )
    if args.rotate_before is not None and not 0 <= args.rotate_before <= 1_000_000_000:
        raise UsageError("--rotate_before must be 0-1000000000 seconds")
    if args.output_dir is not None and args.pkcs11_lib is not None and args.key_type == "service":
        raise UsageError(
            "--key_type service gives a key in a file: with --pkcs11_lib the device key is made "
            "in the token (ec-p256, ec-p384 or rsa-2048)"
        )
    if args.max_attempts is not None and not 1 <= args.max_attempts <= 1000:
        raise UsageError("--max_attempts must be 1-1000")
    if args.output_dir is not None and args.csr is not None:
        raise UsageError(
            "--csr and --output_dir do not mix: the store needs the CSR's private key; with "
            "--output_dir the key is made on the device (--key_type)"
        )
    if args.identity_file is not None and (args.csr is not None or args.output_dir is not None):
        raise UsageError(
            "--identity_file is for the keys flow only: with --csr the key is yours, with "
            "--output_dir the store keeps it"
        )
    name = args.template_name.encode("utf-8", "surrogateescape")
    if "\0" in args.template_name or _ffi.fp_register_thing_check(name, None) != _codes.FP_OK:
        raise UsageError(f"bad --template_name {args.template_name!r}: {TEMPLATE_RULE}")
    if args.template_parameters is not None:
        import json

        try:
            params = json.loads(args.template_parameters)
        except ValueError as e:
            raise UsageError(f"--template_parameters is not JSON: {e}") from None
        if not isinstance(params, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in params.items()
        ):
            raise UsageError("--template_parameters must be a JSON object of strings")
    if args.identity_file is None and args.csr is None and args.output_dir is None:
        # The service's answer is the only copy of the key, and RegisterThing activates its
        # certificate: never one without the other.
        raise UsageError(
            "the keys flow (no --csr) needs --identity_file FILE, where the new certificate and "
            "private key are saved before RegisterThing, or --output_dir DIR (--key_type service)"
        )


def _read_file_flag(flag: str, path: Optional[str]) -> None:
    """An unreadable file is named with its flag before anything connects (exit 6)."""
    if path is None:
        return
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise _FileError(f"cannot read {flag} {path}: {e.strerror}") from None


class _FileError(Exception):
    pass


def _configure_logging(verbosity: str) -> None:
    level = VERBOSITY[verbosity]
    log = logging.getLogger("fleetprov")
    if level is None:
        log.setLevel(logging.CRITICAL + 10)  # nothing, and the library sends nothing
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[fleetprov %(levelname)s] %(message)s"))
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def _connection_kwargs(args: argparse.Namespace) -> dict[str, object]:
    pkcs11 = None
    if args.key_label is not None:
        pkcs11 = Pkcs11Key(
            module=args.pkcs11_lib,
            key_label=args.key_label,
            pin=args.pin,
            token_label=args.token_label,
            slot_id=args.slot_id,
        )
    timeout = None if args.timeout_ms is None else args.timeout_ms / 1000.0
    return dict(
        endpoint=args.endpoint,
        port=args.port if args.port is not None else 8883,
        cert_file=args.cert,
        key_file=args.key,
        ca_file=args.ca_file,
        client_id=args.client_id,
        template_name=args.template_name,
        mqtt_version=args.mqtt_version,
        payload_format=PayloadFormat.CBOR if args.payload_format == "cbor" else PayloadFormat.JSON,
        connect_timeout=timeout,
        operation_timeout=timeout,
        proxy_host=args.proxy_host,
        proxy_port=args.proxy_port,
        pkcs11=pkcs11,
    )


def _print_progress(event: Progress) -> None:
    if event.step == Step.RETRY_SCHEDULED:
        print(f"[attempt {event.attempt}] retry in {event.delay_ms} ms: {event.detail}", flush=True)
    else:
        print(f"[attempt {event.attempt}] {STEP_NAMES.get(event.step, 'step')} ({event.detail})", flush=True)


def _run_store(args: argparse.Namespace) -> int:
    kwargs = _connection_kwargs(args)
    retry = RetryPolicy() if args.max_attempts is None else RetryPolicy(max_attempts=args.max_attempts)
    device_pkcs11 = None
    if args.pkcs11_lib is not None:
        device_pkcs11 = Pkcs11Key(
            module=args.pkcs11_lib,
            key_label=args.device_key_label or "fleetprov-device",
            pin=args.pin,
            token_label=args.token_label,
            slot_id=args.slot_id,
        )
    result = provision(
        output_dir=args.output_dir,
        device_pkcs11=device_pkcs11,
        parameters=args.template_parameters,
        key_type=KEY_TYPES[args.key_type or "ec-p256"],
        force=args.force,
        retry=retry,
        rotate_before=args.rotate_before,
        rotation_template=args.rotation_template,
        on_progress=_print_progress,
        **kwargs,  # type: ignore[arg-type]
    )
    attempts = f"{result.attempts} attempt{'' if result.attempts == 1 else 's'}"
    print(f"Thing: {result.thing_name}")
    if result.reused:
        print(f"Reused the stored identity, verified by connecting (connected as {result.client_id}, {attempts}).")
    elif result.rotated:
        print(
            "Rotated the stored identity without the claim, saved and verified by connecting "
            f"(connected as {result.client_id}, {attempts})."
        )
    else:
        print(f"Provisioned, saved and verified by connecting (connected as {result.client_id}, {attempts}).")
    print(f"Certificate id: {result.certificate_id}")
    if result.previous_certificate_id is not None:
        print(
            f"Replaced certificate id: {result.previous_certificate_id} (still active in the "
            "account: deactivate it once the device uses the new one)"
        )
    if result.private_key_file:
        print(f"Stored: {result.metadata_file}, {result.certificate_file}, {result.private_key_file}")
    else:
        print(f"Stored: {result.metadata_file}, {result.certificate_file}; the private key stays in the PKCS#11 token")
    _print_config(result.device_configuration)
    return EXIT_OK


def _print_config(config: dict[str, str]) -> None:
    print("Device configuration:")
    for k, v in config.items():
        print(f"  {k} = {v}")


def _save_identity(path: str, created: KeysAndCertificate) -> Optional[str]:
    """Writes the certificate and its key to a new file ``path`` (0600, never over an existing
    file), synced; the reason on failure."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        return f"cannot create --identity_file {path}: {e.strerror}"
    cert = created.certificate_pem.encode("utf-8")
    if not cert.endswith(b"\n"):
        cert += b"\n"
    # One buffer of the final size: no reallocation leaves a copy of the key behind.
    data = bytearray(len(cert) + len(created.private_key))
    data[: len(cert)] = cert
    data[len(cert):] = created.private_key
    try:
        with memoryview(data) as view:
            done = 0
            while done < len(view):
                done += os.write(fd, view[done:])
        os.fsync(fd)
    except OSError as e:
        return f"cannot write --identity_file {path}: {e.strerror}"
    finally:
        data[:] = bytes(len(data))
        os.close(fd)
    return None


def _run_client(args: argparse.Namespace, csr: Optional[str]) -> int:
    kwargs = _connection_kwargs(args)
    endpoint = kwargs.pop("endpoint")
    client = Client(endpoint, **kwargs)  # type: ignore[arg-type]
    try:
        try:
            client.connect()
        except FleetprovError as e:
            _fail(f"connection to {args.endpoint} failed ({e.code_name}): {e.message}")
            # An unreadable certificate or key file is a local problem, not the connection's.
            return EXIT_OTHER if e.code == _codes.FP_ERR_IO else EXIT_CONNECTION
        print(f"Connected to {args.endpoint}.", flush=True)
        operation = "CreateCertificateFromCsr" if csr is not None else "CreateKeysAndCertificate"
        try:
            if csr is not None:
                created: object = client.create_certificate_from_csr(csr)
            else:
                created = client.create_keys_and_certificate()
        except FleetprovError as e:
            return _operation_failure(operation, e)
        try:
            cert_id = getattr(created, "certificate_id")
            token = getattr(created, "certificate_ownership_token")
            print(f"Certificate created: {cert_id}", flush=True)
            if isinstance(created, KeysAndCertificate):
                problem = _save_identity(args.identity_file, created)
                if problem is not None:
                    _fail(f"{problem} (RegisterThing not sent)")
                    return EXIT_STORE
                print(f"Certificate and private key saved to {args.identity_file} (not shown).", flush=True)
            try:
                thing = client.register_thing(args.template_name, token, args.template_parameters)
            except FleetprovError as e:
                return _operation_failure("RegisterThing", e)
            print(f"Thing registered: {thing.thing_name}")
            _print_config(thing.device_configuration)
        finally:
            if isinstance(created, KeysAndCertificate):
                created.wipe()
        return EXIT_OK
    finally:
        client.close()


def _operation_failure(operation: str, e: FleetprovError) -> int:
    if isinstance(e, _codes.RejectedError):
        _fail(
            f"{operation} rejected: statusCode={e.status_code} errorCode={e.aws_error_code} "
            f"errorMessage={e.aws_error_message}"
        )
    elif isinstance(e, _codes.TimeoutError):
        _fail(f"{operation} timed out: {e.message}")
    elif e.code in (_codes.FP_ERR_DISCONNECTED, _codes.FP_ERR_CONNECTION):
        _fail(f"{operation} failed, connection lost: {e.message}")
    else:
        _fail(f"{operation} failed ({e.code_name}): {e.message}")
    return exit_code_of(e)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    try:
        _check_args(args)
    except UsageError as e:
        _fail(str(e))
        return EXIT_USAGE
    try:
        for flag, path in (("--cert", args.cert), ("--key", args.key), ("--ca_file", args.ca_file),
                           ("--pkcs11_lib", args.pkcs11_lib)):
            _read_file_flag(flag, path)
        csr: Optional[str] = None
        if args.csr is not None:
            try:
                with open(args.csr, encoding="utf-8") as f:
                    csr = f.read()
            except (OSError, UnicodeDecodeError) as e:
                reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
                raise _FileError(f"cannot read --csr {args.csr}: {reason}") from None
    except _FileError as e:
        _fail(str(e))
        return EXIT_OTHER
    _configure_logging(args.verbosity)
    try:
        if args.output_dir is not None:
            return _run_store(args)
        return _run_client(args, csr)
    except FleetprovError as e:
        if isinstance(e, _codes.RejectedError):
            _fail(
                f"provisioning failed ({e.code_name}): statusCode={e.status_code} "
                f"errorCode={e.aws_error_code}: {e.message}"
            )
        else:
            _fail(f"provisioning failed ({e.code_name}): {e.message}")
        return exit_code_of(e)
    except KeyboardInterrupt:
        # As a C program killed by SIGINT: exit now. A provision run cannot be cancelled yet
        # (fp_provision() has no cancellation); the store is crash-safe (the previous identity
        # or the new one, never a mixture), so there is nothing to wait for. os._exit skips the
        # atexit wait for the abandoned run, which could last until its deadline.
        _fail("interrupted")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)


def console_main() -> None:
    """Entry point of the ``fleetprov-provision`` console script."""
    sys.exit(main())


__all__: List[str] = ["main", "console_main", "exit_code_of"]
