"""fleetprov.provision() (fp_provision()) against the emulator: both flows, reuse, a rejection
with AWS's fields, CBOR, MQTT 3.1.1, the log through `logging`."""

from __future__ import annotations

import logging
import stat
from pathlib import Path
from typing import List

import pytest

import fleetprov
from conftest import Emulator, make_csr, params


def test_csr_flow_then_reuse(emulator: Emulator, serial: str, tmp_path: Path) -> None:
    store = tmp_path / "identity"
    events: List[fleetprov.Progress] = []
    first = fleetprov.provision(
        **emulator.claim(),
        template_name="FleetTemplate",
        parameters=params(serial),
        output_dir=store,
        on_progress=events.append,
    )
    assert first.thing_name == f"ThingPrefix_{serial}"
    assert not first.reused
    assert first.attempts == 1
    assert len(first.certificate_id) == 64
    assert first.client_id == first.thing_name
    assert first.device_configuration == {
        "FallbackUrl": "https://www.example.com/test-site",
        "LocationUrl": "https://example.aws",
    }
    key_file = Path(first.private_key_file)
    assert key_file.parent == store and key_file.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert "PRIVATE KEY" in key_file.read_text()
    assert Path(first.metadata_file).is_file()
    steps = [e.step for e in events]
    assert steps == [
        fleetprov.Step.CONNECTING,
        fleetprov.Step.CREATING,
        fleetprov.Step.REGISTERING,
        fleetprov.Step.SAVING,
        fleetprov.Step.VERIFYING,
        fleetprov.Step.CONNECTING,
    ]
    assert events[0].detail == "claim" and events[1].detail == "CreateCertificateFromCsr"
    assert f"ThingPrefix_{serial}" in emulator.things()

    events.clear()
    again = fleetprov.provision(
        **emulator.claim(),
        template_name="FleetTemplate",
        parameters=params(serial),
        output_dir=str(store),
        on_progress=events.append,
    )
    assert again.reused
    assert again.certificate_id == first.certificate_id
    assert again.thing_name == first.thing_name
    assert events[0].step == fleetprov.Step.REUSING
    assert all(e.detail != "claim" for e in events), "a reuse made a claim connection"


def test_rotation_renews_the_identity_with_itself(emulator: Emulator, serial: str, tmp_path: Path) -> None:
    store = tmp_path / "identity"
    common = dict(template_name="FleetTemplate", parameters=params(serial), output_dir=store)
    first = fleetprov.provision(**emulator.claim(), **common)  # type: ignore[arg-type]
    assert not first.rotated and first.previous_certificate_id is None
    events: List[fleetprov.Progress] = []
    # The whole lifetime as the window: due at once (the sample template's policy allows it).
    rotated = fleetprov.provision(
        **emulator.claim(),
        **common,  # type: ignore[arg-type]
        rotate_before_percent=100,
        rotation_reuse_key=True,
        on_progress=events.append,
    )
    assert rotated.rotated and not rotated.reused
    assert rotated.previous_certificate_id == first.certificate_id
    assert rotated.certificate_id != first.certificate_id
    assert rotated.thing_name == first.thing_name
    assert events[0].step == fleetprov.Step.ROTATING
    assert events[1].step == fleetprov.Step.CONNECTING and events[1].detail == "device"
    assert all(e.detail != "claim" for e in events), "a rotation made a claim connection"
    kept = fleetprov.provision(**emulator.claim(), **common, rotate_before=0)  # type: ignore[arg-type]
    assert kept.reused and kept.certificate_id == rotated.certificate_id
    with pytest.raises(fleetprov.InvalidArgumentError):
        fleetprov.provision(**emulator.claim(), **common, rotate_before_percent=101)  # type: ignore[arg-type]


def test_keys_flow_service_key(emulator: Emulator, serial: str, tmp_path: Path) -> None:
    events: List[fleetprov.Progress] = []
    result = fleetprov.provision(
        **emulator.claim(),
        template_name="FleetTemplate",
        parameters=params(serial),
        output_dir=tmp_path / "store",
        key_type=fleetprov.KeyType.SERVICE,
        on_progress=events.append,
    )
    assert result.thing_name == f"ThingPrefix_{serial}"
    assert any(e.detail == "CreateKeysAndCertificate" for e in events)
    assert "RSA PRIVATE KEY" in Path(result.private_key_file).read_text()


def test_user_csr_and_force(emulator: Emulator, serial: str, tmp_path: Path) -> None:
    csr, key = make_csr(tmp_path)
    store = tmp_path / "store"
    first = fleetprov.provision(
        **emulator.claim(), template_name="FleetTemplate", parameters=params(serial),
        output_dir=store, csr_pem=csr, csr_private_key=bytearray(key.encode()),
    )
    assert Path(first.private_key_file).read_text().strip() == key.strip()
    second = fleetprov.provision(
        **emulator.claim(), template_name="FleetTemplate", parameters=params(serial),
        output_dir=store, force=True,
    )
    assert not second.reused and second.certificate_id != first.certificate_id


def test_unknown_template_is_rejected_with_aws_fields(emulator: Emulator, tmp_path: Path) -> None:
    with pytest.raises(fleetprov.RejectedError) as info:
        fleetprov.provision(
            **emulator.claim(), template_name="NoSuchTemplate", output_dir=tmp_path / "s",
            retry=fleetprov.RetryPolicy(max_attempts=3, backoff_base=0.05, backoff_max=0.1),
        )
    e = info.value
    assert e.code == 11 and e.code_name == "FP_ERR_REJECTED"
    assert e.status_code == 404
    assert e.aws_error_code == "ResourceNotFound"
    assert e.aws_error_message is not None and "NoSuchTemplate" in e.aws_error_message
    assert isinstance(e, fleetprov.FleetprovError)
    assert not (tmp_path / "s" / "identity.json").exists()


def test_cbor_payloads_and_library_log(
    emulator: Emulator, serial: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="fleetprov")
    result = fleetprov.provision(
        **emulator.claim(payload_format=fleetprov.PayloadFormat.CBOR),
        template_name="FleetTemplate", parameters=params(serial), output_dir=tmp_path / "s",
        key_type=fleetprov.KeyType.SERVICE,
    )
    assert result.thing_name == f"ThingPrefix_{serial}"
    lines = [r.getMessage() for r in caplog.records if r.name == "fleetprov"]
    assert any("PUBLISH $aws/certificates/create/cbor" in m for m in lines), lines
    assert not any("/json" in m for m in lines)
    assert not any("PRIVATE KEY" in m for m in lines)
    levels = {r.levelno for r in caplog.records if r.name == "fleetprov"}
    assert logging.DEBUG in levels and logging.INFO in levels


def test_mqtt_311(emulator: Emulator, serial: str, tmp_path: Path) -> None:
    result = fleetprov.provision(
        **emulator.claim(mqtt_version=3), template_name="FleetTemplate",
        parameters=params(serial), output_dir=tmp_path / "s",
    )
    assert result.thing_name == f"ThingPrefix_{serial}"
    assert f'connected as "{result.thing_name}" (MQTT 3.1.1' in emulator.log.read_text()


def test_in_memory_claim_pems(emulator: Emulator, serial: str, tmp_path: Path) -> None:
    result = fleetprov.provision(
        endpoint=emulator.host, port=emulator.port,
        ca_pem=emulator.ca.read_text(), cert_pem=emulator.claim_cert.read_text(),
        key_pem=bytearray(emulator.claim_key.read_bytes()),
        template_name="FleetTemplate", parameters=params(serial), output_dir=tmp_path / "s",
    )
    assert result.thing_name == f"ThingPrefix_{serial}"


def test_sync_timeout(emulator: Emulator, silent_server: int, tmp_path: Path) -> None:
    import time

    t0 = time.monotonic()
    with pytest.raises(fleetprov.TimeoutError) as info:
        fleetprov.provision(
            **emulator.claim(port=silent_server),
            template_name="FleetTemplate", output_dir=tmp_path / "s", timeout=1.0,
        )
    elapsed = time.monotonic() - t0
    assert 0.9 <= elapsed < 3.0, elapsed
    assert isinstance(info.value, TimeoutError)
    # The library's own deadline ended the run: its message names the step.
    assert "deadline" in str(info.value) and "connecting (claim)" in str(info.value)


def test_sync_exception_from_on_progress_cancels_the_run(
    emulator: Emulator, silent_server: int, tmp_path: Path
) -> None:
    """An exception out of the wait (here from on_progress; Ctrl-C's KeyboardInterrupt takes
    the same path) cancels the run: it ends at once despite its hour-long deadline."""
    import time

    from test_async import wait_for_background_runs

    class Stop(Exception):
        pass

    def stop(event: fleetprov.Progress) -> None:
        raise Stop(event.step.name)

    with pytest.raises(Stop):
        fleetprov.provision(
            **emulator.claim(port=silent_server), template_name="FleetTemplate",
            output_dir=tmp_path / "s", on_progress=stop,
            retry=fleetprov.RetryPolicy(deadline=3600.0), connect_timeout=3600.0,
        )
    t0 = time.monotonic()
    wait_for_background_runs(2)
    assert time.monotonic() - t0 < 2
    assert not (tmp_path / "s" / "identity.json").exists()


def test_pending_identity_is_verified_or_reported_abandoned(
    emulator: Emulator, serial: str, tmp_path: Path
) -> None:
    """A pending identity (``pending.json``: registered and stored, not verified yet, as a run
    that could not verify leaves it) is verified and committed by the next run, without the
    claim; a forced run instead gives it up and reports its certificate as abandoned, to
    ``on_progress`` (``Step.CERTIFICATE_ABANDONED``, the id as detail) and in the result."""
    store = tmp_path / "identity"
    committed, pending = store / "identity.json", store / "pending.json"

    def run(events: List[fleetprov.Progress], force: bool = False) -> fleetprov.Provisioned:
        return fleetprov.provision(
            **emulator.claim(), template_name="FleetTemplate", parameters=params(serial),
            output_dir=store, force=force, on_progress=events.append,
        )

    first = run([])
    assert first.abandoned_certificates == []
    # As a run that could not verify its new identity leaves it.
    committed.rename(pending)

    events: List[fleetprov.Progress] = []
    verified = run(events)
    assert verified.certificate_id == first.certificate_id
    assert verified.thing_name == first.thing_name
    assert verified.reused
    assert Path(verified.metadata_file) == committed
    assert verified.abandoned_certificates == []
    # Verified with a device connection, never a claim one, nothing given up.
    seen = [(e.step, e.detail) for e in events]
    assert seen == [
        (fleetprov.Step.REUSING, first.thing_name),
        (fleetprov.Step.VERIFYING, first.thing_name),
        (fleetprov.Step.CONNECTING, "device"),
    ], seen
    assert committed.is_file() and not pending.exists()

    # force: a new identity is wanted, so the pending one is given up, and reported.
    committed.rename(pending)
    events.clear()
    forced = run(events, force=True)
    assert not forced.reused
    assert forced.certificate_id != first.certificate_id
    assert forced.thing_name == first.thing_name
    assert forced.abandoned_certificates == [first.certificate_id]
    given_up = [e.detail for e in events if e.step == fleetprov.Step.CERTIFICATE_ABANDONED]
    assert given_up == [first.certificate_id], events
    assert any(e.step == fleetprov.Step.CONNECTING and e.detail == "claim" for e in events), events
    assert committed.is_file() and not pending.exists()
    assert Path(forced.private_key_file).parent == store
