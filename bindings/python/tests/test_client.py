"""fleetprov.Client: the three operations one by one against the emulator."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest

import fleetprov
from conftest import Emulator, make_csr, params


def test_keys_flow(emulator: Emulator, serial: str) -> None:
    with fleetprov.Client(**emulator.claim(template_name="FleetTemplate")) as client:
        created = client.create_keys_and_certificate(timeout=30)
        assert isinstance(created.private_key, bytearray)
        assert created.private_key.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
        assert "BEGIN CERTIFICATE" in created.certificate_pem
        # Neither repr nor str shows the key or the token.
        shown = repr(created) + str(created)
        assert "PRIVATE KEY" not in shown
        assert created.certificate_ownership_token not in shown
        thing = client.register_thing(
            "FleetTemplate", created.certificate_ownership_token, params(serial)
        )
        assert thing.thing_name == f"ThingPrefix_{serial}"
        assert thing.device_configuration["FallbackUrl"] == "https://www.example.com/test-site"
        # The caller can wipe the key in place: the same buffer, zeroed.
        addr = ctypes.addressof((ctypes.c_char * len(created.private_key)).from_buffer(created.private_key))
        created.wipe()
        assert created.private_key == bytearray(len(created.private_key))
        assert ctypes.addressof(
            (ctypes.c_char * len(created.private_key)).from_buffer(created.private_key)
        ) == addr


def test_csr_flow_mqtt3_cbor(emulator: Emulator, serial: str, tmp_path: Path) -> None:
    csr, _key = make_csr(tmp_path)
    client = fleetprov.Client(
        **emulator.claim(mqtt_version=3, payload_format=fleetprov.PayloadFormat.CBOR)
    )
    try:
        client.connect(timeout=30)
        cert = client.create_certificate_from_csr(csr.encode())
        assert len(cert.certificate_id) == 64
        thing = client.register_thing(
            "FleetTemplate", cert.certificate_ownership_token, f'{{"SerialNumber":"{serial}","DeviceLocation":"Seattle"}}'
        )
        assert thing.thing_name == f"ThingPrefix_{serial}"
    finally:
        client.close()
    client.close()  # a second close does nothing


def test_register_with_bad_token_is_rejected(emulator: Emulator) -> None:
    with fleetprov.Client(**emulator.claim()) as client:
        with pytest.raises(fleetprov.RejectedError) as info:
            client.register_thing("FleetTemplate", "not-a-token", {"SerialNumber": "x"})
    e = info.value
    assert e.status_code == 400
    assert e.aws_error_code == "InvalidCertificateOwnershipToken"
    assert e.aws_error_message


def test_bad_csr_is_rejected(emulator: Emulator) -> None:
    with fleetprov.Client(**emulator.claim()) as client:
        with pytest.raises(fleetprov.RejectedError) as info:
            client.create_certificate_from_csr("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
    assert info.value.status_code == 400


def test_operation_before_connect_and_after_close(emulator: Emulator) -> None:
    client = fleetprov.Client(**emulator.claim())
    with pytest.raises(fleetprov.NotConnectedError, match="connect"):
        client.create_keys_and_certificate()
    client.close()
    with pytest.raises(fleetprov.NotConnectedError, match="closed"):
        client.connect()


def test_connect_twice(emulator: Emulator) -> None:
    with fleetprov.Client(**emulator.claim()) as client:
        with pytest.raises(fleetprov.AlreadyConnectedError):
            client.connect()


def test_untrusted_server_is_a_tls_error(emulator: Emulator, tmp_path: Path) -> None:
    # The claim certificate is no CA of the server's: the handshake fails.
    client = fleetprov.Client(**emulator.claim(ca_file=str(emulator.claim_cert)))
    with pytest.raises(fleetprov.TlsError):
        try:
            client.connect(timeout=30)
        finally:
            client.close()


def test_nothing_listening_is_a_connection_error(emulator: Emulator) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(fleetprov.ConnectionError) as info:
        with fleetprov.Client(**emulator.claim(port=port)):
            pass
    assert isinstance(info.value, ConnectionError)  # the built-in one too
