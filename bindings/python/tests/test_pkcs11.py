"""Keys in a PKCS#11 token (SoftHSM2): provision() with the claim key in the token and with
the device key kept there, the CLI's --pkcs11_lib flags in a subprocess (with --output_dir the
device key in the token), and a wrong PIN refused.

Without SoftHSM2 (apt-get install softhsm2) these tests are skipped, except under CI, where
its absence fails them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

import fleetprov
from conftest import Emulator, make_csr, params

MODULES = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
]
TOKEN = "fleetprov-py"
PIN = "4711"


@dataclass
class Hsm:
    module: str
    conf: Path


@pytest.fixture(scope="module")
def hsm(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hsm]:
    module = os.environ.get("FLEETPROV_PKCS11_MODULE") or next(
        (m for m in MODULES if os.path.isfile(m)), None
    )
    if module is None or shutil.which("softhsm2-util") is None:
        if os.environ.get("CI"):
            pytest.fail("SoftHSM2 (softhsm2-util, libsofthsm2.so) is required in CI: apt-get install softhsm2")
        pytest.skip("SoftHSM2 is not installed (apt-get install softhsm2)")
    work = tmp_path_factory.mktemp("softhsm")
    (work / "tokens").mkdir()
    conf = work / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {work / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    saved = os.environ.get("SOFTHSM2_CONF")
    # Read by the module when it is initialised: in softhsm2-util, and in this process the
    # first time the library loads it.
    os.environ["SOFTHSM2_CONF"] = str(conf)
    util = ["softhsm2-util"]
    subprocess.run([*util, "--init-token", "--free", "--label", TOKEN, "--pin", PIN, "--so-pin", "0815"],
                   check=True, capture_output=True, timeout=60)
    subprocess.run([*util, "--import", str(emulator.claim_key), "--token", TOKEN, "--label", "claim",
                    "--id", "01", "--pin", PIN], check=True, capture_output=True, timeout=60)
    try:
        yield Hsm(module=module, conf=conf)
    finally:
        if saved is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = saved


def test_client_with_claim_key_in_token(emulator: Emulator, hsm: Hsm, serial: str, tmp_path: Path) -> None:
    claim = emulator.claim()
    del claim["key_file"]
    key = fleetprov.Pkcs11Key(module=hsm.module, key_label="claim", pin=PIN, token_label=TOKEN)
    assert PIN not in repr(key)
    csr, _ = make_csr(tmp_path)
    with fleetprov.Client(**claim, pkcs11=key) as client:
        created = client.create_keys_and_certificate()
        created.wipe()
        thing = client.register_thing("FleetTemplate", created.certificate_ownership_token, params(serial))
        assert thing.thing_name == f"ThingPrefix_{serial}"
        cert = client.create_certificate_from_csr(csr)
        thing = client.register_thing("FleetTemplate", cert.certificate_ownership_token, params(serial + "-csr"))
        assert thing.thing_name == f"ThingPrefix_{serial}-csr"


def test_provision_with_claim_key_in_token_then_reuse(
    emulator: Emulator, hsm: Hsm, serial: str, tmp_path: Path
) -> None:
    claim = emulator.claim()
    del claim["key_file"]
    key = fleetprov.Pkcs11Key(module=hsm.module, key_label="claim", pin=PIN, token_label=TOKEN)
    store = tmp_path / "s"
    first = fleetprov.provision(
        **claim, pkcs11=key, template_name="FleetTemplate", output_dir=store, parameters=params(serial)
    )
    assert not first.reused and first.thing_name == f"ThingPrefix_{serial}"
    assert Path(first.private_key_file).is_file() and first.key_location == "file"
    again = fleetprov.provision(
        **claim, pkcs11=key, template_name="FleetTemplate", output_dir=store, parameters=params(serial)
    )
    assert again.reused and again.certificate_id == first.certificate_id


def test_provision_keeps_the_device_key_in_the_token(
    emulator: Emulator, hsm: Hsm, serial: str, tmp_path: Path
) -> None:
    claim = emulator.claim()
    device = fleetprov.Pkcs11Key(module=hsm.module, key_label=f"device-{serial}", pin=PIN, token_label=TOKEN)
    store = tmp_path / "s"
    first = fleetprov.provision(
        **claim, device_pkcs11=device, template_name="FleetTemplate", output_dir=store,
        parameters=params(serial),
    )
    assert not first.reused and first.private_key_file == "" and first.key_location == "pkcs11"
    assert not any("key" in p.name for p in store.iterdir())
    metadata = Path(first.metadata_file).read_text()
    assert '"kind": "pkcs11"' in metadata and PIN not in metadata
    again = fleetprov.provision(
        **claim, device_pkcs11=device, template_name="FleetTemplate", output_dir=store,
        parameters=params(serial),
    )
    assert again.reused and again.certificate_id == first.certificate_id
    with pytest.raises(fleetprov.InvalidArgumentError, match="SERVICE"):
        fleetprov.provision(
            **claim, device_pkcs11=device, key_type=fleetprov.KeyType.SERVICE,
            template_name="FleetTemplate", output_dir=store,
        )


def cli(emulator: Emulator, hsm: Hsm, extra: List[str]) -> "subprocess.CompletedProcess[str]":
    args = [a for a in emulator.cli_args()]
    i = args.index("--key")
    del args[i:i + 2]
    env: Dict[str, str] = dict(os.environ, SOFTHSM2_CONF=str(hsm.conf))
    return subprocess.run(
        [sys.executable, "-m", "fleetprov", *args, "--pkcs11_lib", hsm.module,
         "--token_label", TOKEN, "--key_label", "claim", "--template_name", "FleetTemplate", *extra],
        capture_output=True, text=True, timeout=120, env=env,
    )


def test_cli_pkcs11_flags_both_flows(emulator: Emulator, hsm: Hsm, serial: str, tmp_path: Path) -> None:
    done = cli(emulator, hsm, ["--pin", PIN, "--template_parameters",
                               f'{{"SerialNumber":"{serial}","DeviceLocation":"Seattle"}}',
                               "--identity_file", str(tmp_path / "device.pem")])
    assert done.returncode == 0, done.stderr
    assert f"Thing registered: ThingPrefix_{serial}" in done.stdout
    assert "PRIVATE KEY" in (tmp_path / "device.pem").read_text()
    make_csr(tmp_path)
    done = cli(emulator, hsm, ["--pin", PIN, "--csr", str(tmp_path / "device.csr"),
                               "--template_parameters",
                               f'{{"SerialNumber":"{serial}-2","DeviceLocation":"Seattle"}}'])
    assert done.returncode == 0, done.stderr
    assert f"Thing registered: ThingPrefix_{serial}-2" in done.stdout
    # With --output_dir the device key is made in the token too, and the next run reuses it.
    store = ["--pin", PIN, "--output_dir", str(tmp_path / "id"), "--device_key_label", f"cli-{serial}",
             "--template_parameters", f'{{"SerialNumber":"{serial}-3","DeviceLocation":"Seattle"}}']
    done = cli(emulator, hsm, store)
    assert done.returncode == 0, done.stderr
    assert "the private key stays in the PKCS#11 token" in done.stdout
    assert not any("key" in p.name for p in (tmp_path / "id").iterdir())
    done = cli(emulator, hsm, store)
    assert done.returncode == 0, done.stderr
    assert "Reused the stored identity" in done.stdout
    done = cli(emulator, hsm, [*store, "--key_type", "service"])
    assert done.returncode == 2
    assert "--key_type service gives a key in a file" in done.stderr


def test_cli_wrong_pin(emulator: Emulator, hsm: Hsm, tmp_path: Path) -> None:
    done = cli(emulator, hsm, ["--pin", "0000", "--template_parameters",
                               '{"SerialNumber":"pin","DeviceLocation":"Seattle"}',
                               "--identity_file", str(tmp_path / "device.pem")])
    assert done.returncode == 3, done.stderr  # a failed connection, as in the C demo
    assert "FP_ERR_SIGNER" in done.stderr and "PIN" in done.stderr
