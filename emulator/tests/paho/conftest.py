"""Starts `fleetprov-emulator serve` once per test module and provisions its devices with paho.

The binary is $FLEETPROV_EMULATOR, or target/release/fleetprov-emulator of this repository
(`cargo build --release -p fleetprov-emulator`). The server listens on a free port (--port 0)
and says which in its --ready-file; the fixture polls that file with a deadline and fails
early if the server exits instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from paho_helpers import Device, Server, TIMEOUT, provision

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
SAMPLE_TEMPLATE = REPO / "emulator" / "templates" / "FleetTemplate.json"
NARROW_TEMPLATE = HERE / "NarrowTemplate.json"
START_DEADLINE = 30.0


def emulator_binary() -> Path:
    path = Path(os.environ.get("FLEETPROV_EMULATOR", REPO / "target" / "release" / "fleetprov-emulator"))
    if not os.access(path, os.X_OK):
        pytest.fail(f"{path} is not an executable: build it with `cargo build --release -p fleetprov-emulator`")
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    work = tmp_path_factory.mktemp("emulator")
    state = work / "state"
    ready = work / "ready"
    stderr_path = work / "stderr.log"
    cmd = [
        str(emulator_binary()),
        "serve",
        "--state-dir", str(state),
        "--port", "0",
        "--ready-file", str(ready),
        # The AWS sample's template, and one whose policy allows a device only its own topics.
        "--template", f"FleetTemplate={SAMPLE_TEMPLATE}",
        "--template", f"NarrowTemplate={NARROW_TEMPLATE}",
    ]
    with open(stderr_path, "wb") as err, open(work / "stdout.log", "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
    try:
        deadline = time.monotonic() + START_DEADLINE
        port = None
        while port is None:
            if proc.poll() is not None:
                pytest.fail(f"the emulator exited with {proc.returncode} before it was ready:\n"
                            + stderr_path.read_text(errors="replace"))
            if time.monotonic() > deadline:
                pytest.fail(f"the emulator did not write {ready} within {START_DEADLINE} s")
            try:
                text = ready.read_text()
            except FileNotFoundError:
                text = ""
            if text.endswith("\n"):
                port = int(text)
            else:
                time.sleep(0.02)
        for name in ("ca.pem", "claim-cert.pem", "claim-key.pem"):
            assert (state / name).is_file(), f"the state directory has no {name}"
        yield Server("localhost", port, state, stderr_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    # A clean stop, and the ready file removed as `help serve` says.
    assert proc.returncode == 0, f"the emulator exited with {proc.returncode}:\n" + stderr_path.read_text(errors="replace")
    assert not ready.exists(), "the ready file outlived the server"


def _serial() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def devices(server: Server) -> tuple[Device, Device]:
    """Two devices provisioned through the sample template (its policy allows every topic)."""
    a = provision(server, "FleetTemplate", _serial())
    b = provision(server, "FleetTemplate", _serial())
    assert a.thing_name != b.thing_name
    assert a.thing_name.startswith("ThingPrefix_") and b.thing_name.startswith("ThingPrefix_")
    return a, b


@pytest.fixture(scope="module")
def narrow_device(server: Server) -> Device:
    """A device provisioned through NarrowTemplate: connect as its thing name, publish, receive
    and subscribe only under devices/<thing>/."""
    d = provision(server, "NarrowTemplate", _serial())
    assert d.thing_name.startswith("Narrow_")
    return d


@pytest.fixture
def clients() -> Iterator[list]:
    """A test appends the paho clients it opens; they are closed after it, whatever happened."""
    opened: list = []
    yield opened
    for c in opened:
        c.close()
