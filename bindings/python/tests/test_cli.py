"""python -m fleetprov / fleetprov-provision with the AWS sample's arguments, in a
subprocess: exit codes, output, and no private key in anything printed."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest

from conftest import ConnectProxy, Emulator, make_csr

PARAMS = '{{"SerialNumber":"{}","DeviceLocation":"Seattle"}}'


def run(args: List[str], *, script: bool = False) -> "subprocess.CompletedProcess[str]":
    if script:
        exe = shutil.which("fleetprov-provision")
        assert exe is not None, "the console script fleetprov-provision is not installed"
        cmd = [exe, *args]
    else:
        cmd = [sys.executable, "-m", "fleetprov", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    for stream in (done.stdout, done.stderr):
        assert "PRIVATE KEY" not in stream, "a private key was printed"
    return done


def test_keys_flow_sample_arguments(emulator: Emulator, serial: str, tmp_path: Path) -> None:
    """The AWS sample's own arguments, which print the new private key there: here the keys
    flow refuses to start without --identity_file (exit 2, nothing sent); with it the
    certificate and key are saved (0600) before RegisterThing, and never printed."""
    sample = [*emulator.cli_args(), "--template_name", "FleetTemplate",
              "--template_parameters", PARAMS.format(serial), "--verbosity", "Trace"]
    refused = run(sample, script=True)
    assert refused.returncode == 2, refused.stderr
    assert "the keys flow (no --csr) needs --identity_file FILE" in refused.stderr
    assert "Connected" not in refused.stdout and "PUBLISH" not in refused.stderr
    assert f"ThingPrefix_{serial}" not in emulator.things()

    identity = tmp_path / "device.pem"
    done = run([*sample, "--identity_file", str(identity)], script=True)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"Connected to {emulator.host}." in out
    assert f"Certificate and private key saved to {identity} (not shown)." in out
    assert f"Thing registered: ThingPrefix_{serial}" in out
    assert "  FallbackUrl = https://www.example.com/test-site" in out
    assert "[fleetprov DEBUG] PUBLISH $aws/certificates/create/json" in done.stderr
    # Saved before RegisterThing was sent.
    assert out.index("saved to") < out.index("Thing registered")
    assert stat.S_IMODE(identity.stat().st_mode) == 0o600
    text = identity.read_text()
    assert text.startswith("-----BEGIN CERTIFICATE-----") and "PRIVATE KEY-----" in text
    # The key is the certificate's.
    pub = [subprocess.run(cmd, input=text, capture_output=True, text=True, check=True, timeout=30).stdout
           for cmd in (["openssl", "x509", "-noout", "-pubkey"], ["openssl", "pkey", "-pubout"])]
    assert pub[0] == pub[1]


def test_identity_file_is_never_overwritten(emulator: Emulator, serial: str, tmp_path: Path) -> None:
    identity = tmp_path / "device.pem"
    identity.write_text("kept\n")
    done = run([*emulator.cli_args(), "--template_name", "FleetTemplate",
                "--template_parameters", PARAMS.format(serial), "--identity_file", str(identity)])
    assert done.returncode == 7, done.stderr
    assert f"cannot create --identity_file {identity}: File exists (RegisterThing not sent)" in done.stderr
    assert identity.read_text() == "kept\n"
    assert f"ThingPrefix_{serial}" not in emulator.things()


def test_csr_flow_mqtt3(emulator: Emulator, serial: str, tmp_path: Path) -> None:
    make_csr(tmp_path)
    done = run(
        [*emulator.cli_args(), "--template_name", "FleetTemplate",
         "--template_parameters", PARAMS.format(serial), "--csr", str(tmp_path / "device.csr"),
         "--mqtt_version", "3", "--client_id", f"test-cli-{serial}"]
    )
    assert done.returncode == 0, done.stderr
    assert f"Thing registered: ThingPrefix_{serial}" in done.stdout
    assert "Private key" not in done.stdout
    assert f'connected as "test-cli-{serial}" (MQTT 3.1.1' in emulator.log.read_text()


def test_output_dir_provisions_then_reuses(emulator: Emulator, serial: str, tmp_path: Path) -> None:
    args = [*emulator.cli_args(), "--template_name", "FleetTemplate",
            "--template_parameters", PARAMS.format(serial), "--output_dir", str(tmp_path / "id")]
    first = run(args)
    assert first.returncode == 0, first.stderr
    assert "Provisioned, saved and verified by connecting" in first.stdout
    assert "[attempt 1] connecting (claim)" in first.stdout
    second = run([*args, "--payload_format", "cbor"])
    assert second.returncode == 0, second.stderr
    assert "Reused the stored identity, verified by connecting" in second.stdout
    assert "(claim)" not in second.stdout
    cert_line = [l for l in first.stdout.splitlines() if l.startswith("Certificate id: ")]
    assert cert_line and cert_line[0] in second.stdout


def test_output_dir_rotates_with_rotate_before(emulator: Emulator, serial: str, tmp_path: Path) -> None:
    args = [*emulator.cli_args(), "--template_name", "FleetTemplate",
            "--template_parameters", PARAMS.format(serial), "--output_dir", str(tmp_path / "id")]
    first = run(args)
    assert first.returncode == 0, first.stderr
    cert_line = [l for l in first.stdout.splitlines() if l.startswith("Certificate id: ")]
    assert cert_line
    # The emulator's certificates last until 2049: a window of 31 years is entered at once.
    rotated = run([*args, "--rotate_before", "1000000000"])
    assert rotated.returncode == 0, rotated.stderr
    out = rotated.stdout
    assert "[attempt 1] rotating (ThingPrefix_" in out
    assert "Rotated the stored identity without the claim" in out
    assert "(claim)" not in out
    assert f"Replaced certificate id: {cert_line[0].split(': ')[1]}" in out
    assert cert_line[0] not in out
    assert run([*args[:-2], "--rotate_before", "60"]).returncode == 2


def test_rejection_exit_4(emulator: Emulator, tmp_path: Path) -> None:
    done = run([*emulator.cli_args(), "--template_name", "NoSuchTemplate",
                "--template_parameters", PARAMS.format("x"), "--identity_file", str(tmp_path / "id.pem")])
    assert done.returncode == 4
    assert "RegisterThing rejected: statusCode=404 errorCode=ResourceNotFound" in done.stderr


def test_rejection_in_store_mode_exit_4(emulator: Emulator, tmp_path: Path) -> None:
    done = run([*emulator.cli_args(), "--template_name", "NoSuchTemplate",
                "--output_dir", str(tmp_path / "id"), "--max_attempts", "1"])
    assert done.returncode == 4
    assert "errorCode=ResourceNotFound" in done.stderr


def test_missing_files_are_named(emulator: Emulator, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    args = [*emulator.cli_args(), "--template_name", "FleetTemplate", "--identity_file", str(tmp_path / "id.pem")]
    cert_i = args.index("--cert") + 1
    bad = list(args)
    bad[cert_i] = str(missing)
    done = run(bad)
    assert done.returncode == 6
    assert f"cannot read --cert {missing}: No such file or directory" in done.stderr
    done = run([*args[:-2], "--csr", str(missing)])
    assert done.returncode == 6
    assert f"cannot read --csr {missing}" in done.stderr


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--template_name", "bad name!"], "--template_name"),
        (["--template_name", "FleetTemplate", "--template_parameters", "[1]"], "--template_parameters"),
        (["--template_name", "FleetTemplate", "--mqtt_version", "4"], "--mqtt_version"),
        (["--template_name", "FleetTemplate", "--verbosity", "Loud"], "--verbosity"),
        (["--template_name", "FleetTemplate", "--force"], "need --output_dir"),
        (["--template_name", "FleetTemplate", "--proxy_port", "8080"], "--proxy_port needs --proxy_host"),
        (["--template_name", "FleetTemplate", "--output_dir", "x", "--csr", "y"], "--csr and --output_dir"),
        (["--template_name", "FleetTemplate", "--unknown"], "unrecognized arguments: --unknown"),
        (["--template_name", "FleetTemplate"], "the keys flow (no --csr) needs --identity_file FILE"),
        (["--template_name", "FleetTemplate", "--csr", "y", "--identity_file", "z"],
         "--identity_file is for the keys flow only"),
        (["--template_name", "FleetTemplate", "--output_dir", "x", "--identity_file", "z"],
         "--identity_file is for the keys flow only"),
        ([], "--template_name"),
    ],
)
def test_usage_errors_exit_2(emulator: Emulator, extra: List[str], message: str) -> None:
    done = run([*emulator.cli_args(), *extra])
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


def test_proxy_flags_reach_the_connection(emulator: Emulator, tmp_path: Path) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # no proxy listens there
    done = run([*emulator.cli_args(), "--template_name", "FleetTemplate",
                "--template_parameters", PARAMS.format("proxy"),
                "--proxy_host", "127.0.0.1", "--proxy_port", str(port),
                "--identity_file", str(tmp_path / "id.pem")])
    assert done.returncode == 3, done.stderr
    assert "connection to localhost failed (FP_ERR_CONNECTION)" in done.stderr
    assert "proxy" in done.stderr.lower()


def test_help() -> None:
    done = run(["--help"])
    assert done.returncode == 0
    for flag in ("--endpoint", "--port", "--cert", "--key", "--ca_file", "--client_id",
                 "--template_name", "--template_parameters", "--csr", "--proxy_host",
                 "--proxy_port", "--verbosity", "--mqtt_version", "--output_dir",
                 "--identity_file"):
        assert flag in done.stdout


def test_ctrl_c_exits_130_at_once(emulator: Emulator, silent_server: int, tmp_path: Path) -> None:
    import signal
    import time

    args = list(emulator.cli_args())
    args[args.index("--port") + 1] = str(silent_server)
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleetprov", *args, "--template_name", "FleetTemplate",
         "--output_dir", str(tmp_path / "id")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # the first progress line: the run has started
        assert line.startswith("[attempt 1] connecting (claim)"), line
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert time.monotonic() - t0 < 2.0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert "interrupted" in err
    assert not (tmp_path / "id" / "identity.json").exists()


def test_through_an_http_connect_proxy(
    emulator: Emulator, connect_proxy: ConnectProxy, serial: str, tmp_path: Path
) -> None:
    done = run([*emulator.cli_args(), "--template_name", "FleetTemplate",
                "--template_parameters", PARAMS.format(serial), "--identity_file", str(tmp_path / "id.pem"),
                "--proxy_host", "127.0.0.1", "--proxy_port", str(connect_proxy.port)])
    assert done.returncode == 0, done.stderr
    assert f"Thing registered: ThingPrefix_{serial}" in done.stdout
    assert connect_proxy.targets == [f"localhost:{emulator.port}"]
