"""Fixtures: the real emulator (fleetprov-emulator serve) over mutual TLS on loopback.

The emulator binary is FLEETPROV_EMULATOR, or target/release/fleetprov-emulator of the
checkout these tests are in (`cargo build --release -p fleetprov-emulator`). Its absence
fails the tests: nothing here is skipped for want of it.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

REPO = Path(__file__).resolve().parents[3]
READY_DEADLINE = 30.0


@dataclass
class Emulator:
    host: str
    port: int
    state: Path
    ca: Path
    claim_cert: Path
    claim_key: Path
    binary: Path
    log: Path

    def claim(self, **extra: Any) -> Dict[str, Any]:
        """The claim connection's keyword arguments for provision() / Client."""
        kw: Dict[str, Any] = dict(
            endpoint=self.host,
            port=self.port,
            ca_file=str(self.ca),
            cert_file=str(self.claim_cert),
            key_file=str(self.claim_key),
        )
        kw.update(extra)
        return kw

    def cli_args(self) -> List[str]:
        """The AWS sample's connection flags for this emulator."""
        return [
            "--endpoint", self.host,
            "--port", str(self.port),
            "--ca_file", str(self.ca),
            "--cert", str(self.claim_cert),
            "--key", str(self.claim_key),
        ]

    def things(self) -> str:
        out = subprocess.run(
            [str(self.binary), "things", "--state-dir", str(self.state)],
            check=True, capture_output=True, text=True, timeout=30,
        )
        return out.stdout


def emulator_binary() -> Path:
    env = os.environ.get("FLEETPROV_EMULATOR")
    path = Path(env) if env else REPO / "target" / "release" / "fleetprov-emulator"
    if not path.is_file():
        pytest.fail(
            f"the emulator {path} is missing: `cargo build --release -p fleetprov-emulator` "
            f"in the repository, or set FLEETPROV_EMULATOR"
        )
    return path


ANY_TEMPLATE_POLICY = Path(__file__).resolve().parents[3] / "emulator" / "policies" / "claim-policy-any-template.json"


def start_emulator(binary: Path, work: Path, *extra: str) -> "tuple[subprocess.Popen[bytes], Emulator]":
    state = work / "state"
    ready = work / "ready"
    log = work / "emulator.log"
    with open(log, "wb") as log_f:
        proc = subprocess.Popen(
            [str(binary), "serve", "--state-dir", str(state), "--port", "0", "--ready-file", str(ready),
             # Any template's topics allowed: the rejection tests name a template the emulator
             # does not serve, whose 404 must come from the service.
             "--claim-policy", str(ANY_TEMPLATE_POLICY), *extra],
            stdout=log_f, stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + READY_DEADLINE
    while not (ready.is_file() and ready.read_text().strip()):
        if proc.poll() is not None:
            pytest.fail(f"the emulator exited ({proc.returncode}) before it was ready: {log.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"the emulator was not ready within {READY_DEADLINE} s")
        time.sleep(0.05)  # polling the ready file, bounded by the deadline above
    port = int(ready.read_text().strip())
    return proc, Emulator(
        host="localhost",
        port=port,
        state=state,
        ca=state / "ca.pem",
        claim_cert=state / "claim-cert.pem",
        claim_key=state / "claim-key.pem",
        binary=binary,
        log=log,
    )


def stop_emulator(proc: "subprocess.Popen[bytes]") -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    proc, emu = start_emulator(emulator_binary(), tmp_path_factory.mktemp("emulator"))
    try:
        yield emu
    finally:
        stop_emulator(proc)


_serials = itertools.count(1)


@pytest.fixture
def serial() -> str:
    """A serial number no other test uses: each test registers its own thing."""
    return f"py-{os.getpid()}-{next(_serials)}"


def params(serial: str) -> Dict[str, str]:
    return {"SerialNumber": serial, "DeviceLocation": "Seattle"}


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers: a call to it waits until a
    deadline, which makes cancellation and timeouts observable."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    conns: List[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
                conns.append(c)
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        t.join()
        for c in conns:
            c.close()
        srv.close()


def make_csr(work: Path, name: str = "device") -> "tuple[str, str]":
    """An EC P-256 key and a CSR for it, made with openssl: (csr_pem, key_pem)."""
    key = work / f"{name}.key"
    csr = work / f"{name}.csr"
    subprocess.run(
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr)],
        check=True, capture_output=True, timeout=30,
    )
    return csr.read_text(), key.read_text()


class ConnectProxy:
    """A minimal HTTP CONNECT proxy on loopback that records the targets it was asked for."""

    def __init__(self) -> None:
        import socketserver

        self.targets: List[str] = []
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                conn: socket.socket = self.request
                head = b""
                while b"\r\n\r\n" not in head:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    head += chunk
                request_line = head.split(b"\r\n", 1)[0].decode()
                method, target, _version = request_line.split(" ")
                if method != "CONNECT":
                    conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                    return
                proxy.targets.append(target)
                host, port = target.rsplit(":", 1)
                upstream = socket.create_connection((host, int(port)), timeout=10)
                upstream.settimeout(None)
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

                def pipe(src: socket.socket, dst: socket.socket) -> None:
                    try:
                        while True:
                            data = src.recv(65536)
                            if not data:
                                break
                            dst.sendall(data)
                    except OSError:
                        pass
                    finally:
                        try:
                            dst.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass

                t = threading.Thread(target=pipe, args=(upstream, conn), daemon=True)
                t.start()
                pipe(conn, upstream)
                t.join(30)
                upstream.close()

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def connect_proxy() -> Iterator[ConnectProxy]:
    proxy = ConnectProxy()
    try:
        yield proxy
    finally:
        proxy.close()
