"""The exception classes against the header's fp_result enum, and bad input."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

import fleetprov
from fleetprov import _codes
from conftest import REPO, Emulator

HEADER = REPO / "libfleetprov" / "include" / "fleetprov.h"
GEN = REPO / "bindings" / "python" / "gen_codes.py"


def load_gen() -> Any:
    spec = importlib.util.spec_from_file_location("gen_codes", GEN)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_result_code_has_its_class() -> None:
    gen = load_gen()
    enums = gen.parse_enums(HEADER.read_text())
    codes = enums["fp_result"]
    assert len(codes) >= 22
    for name, value, _doc in codes:
        if name == "FP_OK":
            continue
        cls = getattr(fleetprov, gen.class_name(name))
        assert issubclass(cls, fleetprov.FleetprovError)
        assert cls.code == value and cls.code_name == name
        assert _codes.ERROR_CLASSES[value] is cls
        assert cls.__doc__ and name in cls.__doc__
    assert [(n, v) for n, v, _ in fleetprov.RESULT_CODES] == [(n, v) for n, v, _ in codes]


def test_generated_module_is_up_to_date() -> None:
    gen = load_gen()
    committed = REPO / "bindings" / "python" / "src" / "fleetprov" / "_codes.py"
    fresh = gen.generate(HEADER.read_text())
    assert committed.read_text() == fresh, "run gen_codes.py: _codes.py is older than the header"
    installed = Path(_codes.__file__).read_text()
    assert installed == fresh, "the installed package was built from another header"


def test_builtin_bases() -> None:
    assert issubclass(fleetprov.TimeoutError, TimeoutError)
    assert issubclass(fleetprov.InvalidArgumentError, ValueError)
    assert issubclass(fleetprov.NullArgumentError, TypeError)
    assert issubclass(fleetprov.IoError, OSError)
    assert issubclass(fleetprov.ConnectionError, ConnectionError)


def test_none_and_wrong_types_are_named(emulator: Emulator, tmp_path: Path) -> None:
    base = dict(emulator.claim(), template_name="FleetTemplate", output_dir=tmp_path / "s")
    for field in ("endpoint", "template_name", "output_dir"):
        with pytest.raises(fleetprov.NullArgumentError, match=f"{field} is required"):
            fleetprov.provision(**{**base, field: None})
    with pytest.raises(fleetprov.NullArgumentError, match="client certificate"):
        fleetprov.provision(**{**base, "cert_file": None})
    with pytest.raises(fleetprov.NullArgumentError, match="private key"):
        fleetprov.provision(**{**base, "key_file": None})
    with pytest.raises(TypeError, match="endpoint must be a str, not int"):
        fleetprov.provision(**{**base, "endpoint": 5})
    with pytest.raises(fleetprov.InvalidArgumentError, match="endpoint"):
        fleetprov.provision(**{**base, "endpoint": "mqtts://host:8883"})
    with pytest.raises(fleetprov.InvalidArgumentError, match="NUL"):
        fleetprov.provision(**{**base, "client_id": "a\0b"})
    with pytest.raises(fleetprov.InvalidUtf8Error, match="client_id"):
        fleetprov.provision(**{**base, "client_id": "\udcff"})
    with pytest.raises(TypeError, match="parameters"):
        fleetprov.provision(**base, parameters=["x"])  # type: ignore[arg-type]
    with pytest.raises(fleetprov.InvalidArgumentError, match="str to str"):
        fleetprov.provision(**base, parameters={"SerialNumber": 1})  # type: ignore[dict-item]
    with pytest.raises(fleetprov.InvalidArgumentError, match="JSON object"):
        fleetprov.provision(**base, parameters='{"a": 1}')
    with pytest.raises(fleetprov.InvalidArgumentError, match="valid template name"):
        fleetprov.provision(**{**base, "template_name": "no spaces"})
    with pytest.raises(fleetprov.InvalidArgumentError, match="mqtt_version"):
        fleetprov.provision(**base, mqtt_version=4)
    with pytest.raises(fleetprov.InvalidArgumentError, match="port"):
        fleetprov.provision(**{**base, "port": 0})
    with pytest.raises(fleetprov.InvalidArgumentError, match="timeout"):
        fleetprov.provision(**base, timeout=-1)
    with pytest.raises(fleetprov.InvalidArgumentError, match="retry.max_attempts"):
        fleetprov.provision(**base, retry=fleetprov.RetryPolicy(max_attempts=0))
    with pytest.raises(fleetprov.NullArgumentError, match="csr_pem and csr_private_key"):
        fleetprov.provision(**base, csr_pem="x")
    with pytest.raises(fleetprov.InvalidArgumentError, match="csr_subject"):
        fleetprov.provision(**base, csr_subject="CN=a,Bogus=b")


def test_invalid_paths_name_the_file(emulator: Emulator, tmp_path: Path) -> None:
    base = dict(emulator.claim(), template_name="FleetTemplate", output_dir=tmp_path / "s")
    missing = tmp_path / "missing.pem"
    for field in ("cert_file", "key_file", "ca_file"):
        with pytest.raises(fleetprov.IoError) as info:
            fleetprov.provision(**{**base, field: missing})
        assert field in str(info.value) and str(missing) in str(info.value)
        assert "No such file" in str(info.value)
    with pytest.raises(fleetprov.IoError, match="cannot be read: Is a directory"):
        fleetprov.provision(**{**base, "cert_file": tmp_path})
    with pytest.raises(fleetprov.IoError, match="missing.pem"):
        fleetprov.Client(**emulator.claim(key_file=str(missing)))


def test_store_that_is_a_file(emulator: Emulator, tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(fleetprov.StoreError):
        fleetprov.provision(
            **emulator.claim(), template_name="FleetTemplate", output_dir=not_a_dir,
            retry=fleetprov.RetryPolicy(max_attempts=1),
        )


def test_pem_that_is_no_certificate_is_a_tls_error(emulator: Emulator, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(fleetprov.TlsError):
        with fleetprov.Client(**emulator.claim(cert_file=str(junk))):
            pass


def test_client_input(emulator: Emulator) -> None:
    with fleetprov.Client(**emulator.claim()) as client:
        with pytest.raises(fleetprov.NullArgumentError, match="certificate_ownership_token"):
            client.register_thing("FleetTemplate", None)  # type: ignore[arg-type]
        with pytest.raises(fleetprov.InvalidArgumentError, match="valid template name"):
            client.register_thing("bad name", "token")
        with pytest.raises(fleetprov.NullArgumentError, match="csr_pem"):
            client.create_certificate_from_csr(None)  # type: ignore[arg-type]
        with pytest.raises(fleetprov.InvalidArgumentError, match="csr_pem"):
            client.create_certificate_from_csr("")


def test_version_and_library() -> None:
    assert fleetprov.version().count(".") == 2
    assert fleetprov.library_path().name == "libfleetprov.so"


# The C functions this package leaves out on purpose, and why (also in README.md).
LEFT_OUT = {
    "fp_pkcs11_generate_key": "the device key made in a token by hand: provision(device_pkcs11=) does it",
    "fp_pkcs11_store_certificate": "the device key made in a token by hand: provision(device_pkcs11=) does it",
    "fp_provision": "fp_provision_start() does the same and gives the handle cancelling needs",
    "fp_provision_wait": "the package waits on its own queue or event loop, which lets Ctrl-C "
    "and asyncio cancellation through a blocked wait",
    "fp_provision_step_str": "fleetprov.Step (an IntEnum) names the steps",
}


def test_every_c_function_is_bound_or_left_out_on_purpose() -> None:
    import re

    header = set(re.findall(r"^[a-z][\w \*]*?\b(fp_\w+)\(", HEADER.read_text(), re.M))
    assert len(header) > 50
    src = REPO / "bindings" / "python" / "src" / "fleetprov"
    declared = set(re.findall(r'_fn\(\s*"(fp_\w+)"', (src / "_ffi.py").read_text()))
    missing = header - declared - set(LEFT_OUT)
    assert not missing, f"C functions with no Python binding and no reason: {sorted(missing)}"
    assert not (declared - header), "declared but not in the header"
    assert not (set(LEFT_OUT) & declared), "listed as left out but bound: update LEFT_OUT"
    users = "".join(
        p.read_text() for p in src.glob("*.py") if p.name != "_ffi.py"
    )
    unused = {name for name in declared if f"_ffi.{name}" not in users}
    assert not unused, f"declared but never called: {sorted(unused)}"


def test_star_import_shadows_no_builtin() -> None:
    import builtins

    shadowing = [n for n in fleetprov.__all__ if hasattr(builtins, n)]
    assert shadowing == []
    for name in ("TimeoutError", "ConnectionError", "ConnectionRefusedError"):
        assert issubclass(getattr(fleetprov, name), getattr(builtins, name))
