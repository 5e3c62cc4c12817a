"""fleetprov.Signer: the claim key and a device key held by the application (here: openssl
in a subprocess), signing through a Python function on the library's threads."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Callable, List

import pytest

import fleetprov
from fleetprov import _core
from conftest import Emulator, make_csr, params


def openssl_sign(key_file: Path, calls: List[fleetprov.SignatureScheme]) -> fleetprov.SignFunction:
    def sign(scheme: fleetprov.SignatureScheme, message: bytes, digest: bytes) -> bytes:
        calls.append(scheme)
        assert scheme == fleetprov.SignatureScheme.ECDSA_P256_SHA256
        assert hashlib.sha256(message).digest() == digest
        done = subprocess.run(
            ["openssl", "pkeyutl", "-sign", "-inkey", str(key_file)],
            input=digest, capture_output=True, check=True, timeout=30,
        )
        return done.stdout  # DER Ecdsa-Sig-Value

    return sign


def test_claim_key_through_a_signer(emulator: Emulator, serial: str) -> None:
    calls: List[fleetprov.SignatureScheme] = []
    keys_before = len(_core._registry)
    signer = fleetprov.Signer(emulator.claim_cert.read_text(), openssl_sign(emulator.claim_key, calls))
    # The signer made from the certificate gives the client its certificate too.
    with fleetprov.Client(emulator.host, port=emulator.port, ca_file=str(emulator.ca), signer=signer) as client:
        signer.close()  # the client keeps the key until it is closed
        created = client.create_keys_and_certificate()
        created.wipe()
        thing = client.register_thing("FleetTemplate", created.certificate_ownership_token, params(serial))
    assert thing.thing_name == f"ThingPrefix_{serial}"
    assert calls == [fleetprov.SignatureScheme.ECDSA_P256_SHA256]  # one TLS handshake
    # The library released the sign function once the signer and the client were freed.
    assert len(_core._registry) == keys_before


def test_device_key_csr_through_a_signer(emulator: Emulator, serial: str, tmp_path: Path) -> None:
    _csr, _key = make_csr(tmp_path, "held")
    public = subprocess.run(
        ["openssl", "pkey", "-in", str(tmp_path / "held.key"), "-pubout"],
        capture_output=True, check=True, text=True, timeout=30,
    ).stdout
    calls: List[fleetprov.SignatureScheme] = []
    with fleetprov.Signer(public, openssl_sign(tmp_path / "held.key", calls)) as signer:
        csr = signer.create_csr("held-device")
    assert csr.startswith("-----BEGIN CERTIFICATE REQUEST-----")
    assert len(calls) == 1
    subject = subprocess.run(
        ["openssl", "req", "-noout", "-subject", "-verify"], input=csr,
        capture_output=True, check=True, text=True, timeout=30,
    )
    assert "held-device" in subject.stdout
    with fleetprov.Client(**emulator.claim()) as client:
        cert = client.create_certificate_from_csr(csr)
        thing = client.register_thing("FleetTemplate", cert.certificate_ownership_token, params(serial))
    assert thing.thing_name == f"ThingPrefix_{serial}"


@pytest.mark.parametrize(
    "sign, message",
    [
        (lambda s, m, d: (_ for _ in ()).throw(RuntimeError("the secure element is gone")),
         "the sign callback returned 1"),
        (lambda s, m, d: b"\x30\x06\x02\x01\x01\x02\x01\x01", "does not verify with its public key"),
        (lambda s, m, d: "not bytes", "the sign callback returned 2"),
    ],
)
def test_failing_sign_function_is_a_signer_error(
    emulator: Emulator, sign: Callable[..., bytes], message: str, caplog: pytest.LogCaptureFixture
) -> None:
    signer = fleetprov.Signer(emulator.claim_cert.read_text(), sign)
    client = fleetprov.Client(emulator.host, port=emulator.port, ca_file=str(emulator.ca), signer=signer)
    try:
        with pytest.raises(fleetprov.SignerError, match=message):
            client.connect(timeout=30)
    finally:
        client.close()
        signer.close()
    if "returned 1" in message:  # the function's own exception is logged, with its text
        assert any("the secure element is gone" in (r.exc_text or "") or
                   (r.exc_info and "the secure element is gone" in str(r.exc_info[1]))
                   for r in caplog.records if r.name == "fleetprov")


def test_bad_signer_input(emulator: Emulator, tmp_path: Path) -> None:
    with pytest.raises(fleetprov.InvalidArgumentError, match="public_pem"):
        fleetprov.Signer("no PEM here", lambda s, m, d: b"")
    with pytest.raises(fleetprov.NullArgumentError, match="public_pem"):
        fleetprov.Signer(None, lambda s, m, d: b"")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="callable"):
        fleetprov.Signer(emulator.claim_cert.read_text(), None)  # type: ignore[arg-type]
    signer = fleetprov.Signer(emulator.claim_cert.read_text(), lambda s, m, d: b"")
    with pytest.raises(fleetprov.InvalidArgumentError, match="one private key"):
        fleetprov.Client(**emulator.claim(signer=signer))
    with pytest.raises(fleetprov.InvalidArgumentError, match="one device key"):
        fleetprov.provision(**emulator.claim(), template_name="FleetTemplate", output_dir=tmp_path,
                            device_signer=signer, device_pkcs11=fleetprov.Pkcs11Key(
                                module=str(emulator.claim_key), key_label="k"))
    with pytest.raises(fleetprov.InvalidArgumentError, match="key_type SERVICE"):
        fleetprov.provision(**emulator.claim(), template_name="FleetTemplate", output_dir=tmp_path,
                            device_signer=signer, key_type=fleetprov.KeyType.SERVICE)
    with pytest.raises(TypeError, match="device_signer must be a fleetprov.Signer"):
        fleetprov.provision(**emulator.claim(), template_name="FleetTemplate", output_dir=tmp_path,
                            device_signer="key.pem")  # type: ignore[arg-type]
    signer.close()
    with pytest.raises(fleetprov.InvalidArgumentError, match="closed"):
        fleetprov.Client(emulator.host, signer=signer)
    with pytest.raises(fleetprov.InvalidArgumentError, match="closed"):
        fleetprov.provision(**emulator.claim(), template_name="FleetTemplate", output_dir=tmp_path,
                            device_signer=signer)


def public_key_of(key_file: Path) -> str:
    return subprocess.run(
        ["openssl", "pkey", "-in", str(key_file), "-pubout"],
        capture_output=True, check=True, text=True, timeout=30,
    ).stdout


def test_provision_with_signer_claim_and_device_keys(emulator: Emulator, serial: str, tmp_path: Path) -> None:
    """provision() with both keys behind sign functions: the claim key signs the claim
    connection's handshake, the device key the CSR and the device connection's handshake; no
    key file is written, and a second run reuses the identity with the same device signer."""
    make_csr(tmp_path, "held")
    device_key = tmp_path / "held.key"
    claim_calls: List[fleetprov.SignatureScheme] = []
    device_calls: List[fleetprov.SignatureScheme] = []
    store = tmp_path / "identity"
    keys_before = len(_core._registry)
    claim = fleetprov.Signer(emulator.claim_cert.read_text(), openssl_sign(emulator.claim_key, claim_calls))
    device = fleetprov.Signer(public_key_of(device_key), openssl_sign(device_key, device_calls))
    first = fleetprov.provision(
        endpoint=emulator.host, port=emulator.port, ca_file=str(emulator.ca), signer=claim,
        device_signer=device, template_name="FleetTemplate", parameters=params(serial),
        output_dir=store,
    )
    assert first.thing_name == f"ThingPrefix_{serial}"
    assert first.key_location == "signer"
    assert first.private_key_file == ""
    assert not any(p.name.endswith(".key") or "key" in p.name and p.suffix == ".pem" for p in store.iterdir())
    assert len(claim_calls) == 1  # the claim connection's handshake
    assert len(device_calls) == 2  # the CSR, then the device connection's handshake
    # The certificate is the device key's.
    cert_pub = subprocess.run(
        ["openssl", "x509", "-in", first.certificate_file, "-noout", "-pubkey"],
        capture_output=True, check=True, text=True, timeout=30,
    ).stdout
    assert cert_pub == public_key_of(device_key)

    again = fleetprov.provision(
        endpoint=emulator.host, port=emulator.port, ca_file=str(emulator.ca), signer=claim,
        device_signer=device, template_name="FleetTemplate", parameters=params(serial),
        output_dir=store,
    )
    assert again.reused and again.key_location == "signer"
    assert again.certificate_id == first.certificate_id
    assert len(claim_calls) == 1, "a reuse made a claim connection"
    claim.close()
    device.close()

    # Another key behind the signer: the stored identity is not its own, so it provisions anew.
    make_csr(tmp_path, "other")
    other_calls: List[fleetprov.SignatureScheme] = []
    with fleetprov.Signer(public_key_of(tmp_path / "other.key"),
                          openssl_sign(tmp_path / "other.key", other_calls)) as other:
        third = fleetprov.provision(
            **emulator.claim(), device_signer=other, template_name="FleetTemplate",
            parameters=params(serial), output_dir=store,
        )
    assert not third.reused and third.certificate_id != first.certificate_id
    assert third.key_location == "signer"
    # The library released every sign function.
    assert len(_core._registry) == keys_before
