"""fleetprov.aio: provision() and Client on an event loop; cancellation and timeouts."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import List

import pytest

import fleetprov
from fleetprov import _core
from fleetprov.aio import LoopSink
from conftest import Emulator, params


def wait_for_background_runs(deadline: float) -> None:
    """Waits (bounded) until no abandoned provision run is left in the library."""
    end = time.monotonic() + deadline
    with _core._running:
        while _core._running_provisions > 0:
            left = end - time.monotonic()
            assert left > 0, "an abandoned provision run did not end by its deadline"
            _core._running.wait(left)


def test_provision_and_reuse(emulator: Emulator, serial: str, tmp_path: Path) -> None:
    loop_threads: List[int] = []

    def progress(event: fleetprov.Progress) -> None:
        loop_threads.append(threading.get_ident())

    async def main() -> None:
        first = await fleetprov.aio.provision(
            **emulator.claim(), template_name="FleetTemplate", parameters=params(serial),
            output_dir=tmp_path / "s", on_progress=progress,
        )
        assert first.thing_name == f"ThingPrefix_{serial}" and not first.reused
        again = await fleetprov.aio.provision(
            **emulator.claim(), template_name="FleetTemplate", parameters=params(serial),
            output_dir=tmp_path / "s",
        )
        assert again.reused and again.certificate_id == first.certificate_id

    asyncio.run(main())
    # Progress ran on the loop's thread (this one), never on a library thread.
    assert loop_threads and set(loop_threads) == {threading.get_ident()}


def test_rejection(emulator: Emulator, tmp_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(fleetprov.RejectedError) as info:
            await fleetprov.aio.provision(
                **emulator.claim(), template_name="Missing", output_dir=tmp_path / "s",
                key_type=fleetprov.KeyType.SERVICE,
            )
        assert info.value.aws_error_code == "ResourceNotFound"

    asyncio.run(main())


def test_client_both_flows(emulator: Emulator, serial: str) -> None:
    async def main() -> None:
        async with fleetprov.aio.Client(**emulator.claim()) as client:
            created, _other = await asyncio.gather(
                client.create_keys_and_certificate(), asyncio.sleep(0)
            )
            thing = await client.register_thing(
                "FleetTemplate", created.certificate_ownership_token, params(serial)
            )
            created.wipe()
            assert thing.thing_name == f"ThingPrefix_{serial}"

    asyncio.run(main())


def test_cancellation_is_prompt(emulator: Emulator, silent_server: int, tmp_path: Path) -> None:
    """A cancelled provision() raises CancelledError at once, and the library's run is
    cancelled too: it ends at once (an hour-long deadline could not end it)."""

    async def main() -> float:
        started = asyncio.Event()
        task = asyncio.ensure_future(
            fleetprov.aio.provision(
                **emulator.claim(port=silent_server), template_name="FleetTemplate",
                output_dir=tmp_path / "s", on_progress=lambda e: started.set(),
                retry=fleetprov.RetryPolicy(deadline=3600.0), connect_timeout=3600.0,
            )
        )
        await asyncio.wait_for(started.wait(), 10)
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - t0

    assert asyncio.run(main()) < 0.25
    wait_for_background_runs(2)
    assert not (tmp_path / "s" / "identity.json").exists()


def test_wait_for_timeout_cancels_the_run(emulator: Emulator, silent_server: int, tmp_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(
                fleetprov.aio.provision(
                    **emulator.claim(port=silent_server), template_name="FleetTemplate",
                    output_dir=tmp_path / "s", retry=fleetprov.RetryPolicy(deadline=3600.0),
                    connect_timeout=3600.0,
                ),
                0.3,
            )

    asyncio.run(main())
    wait_for_background_runs(2)


def test_a_cancelled_forced_run_keeps_the_identity(
    emulator: Emulator, serial: str, silent_server: int, tmp_path: Path
) -> None:
    async def main() -> None:
        store = tmp_path / "s"
        first = await fleetprov.aio.provision(
            **emulator.claim(), template_name="FleetTemplate", parameters=params(serial),
            output_dir=store,
        )
        started = asyncio.Event()
        task = asyncio.ensure_future(
            fleetprov.aio.provision(
                **emulator.claim(port=silent_server), template_name="FleetTemplate",
                parameters=params(serial), output_dir=store, force=True,
                on_progress=lambda e: started.set(), connect_timeout=3600.0,
            )
        )
        await asyncio.wait_for(started.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        again = await fleetprov.aio.provision(
            **emulator.claim(), template_name="FleetTemplate", parameters=params(serial),
            output_dir=store,
        )
        assert again.reused and again.certificate_id == first.certificate_id

    asyncio.run(main())
    wait_for_background_runs(2)


def test_timeout(emulator: Emulator, silent_server: int, tmp_path: Path) -> None:
    async def main() -> None:
        t0 = time.monotonic()
        with pytest.raises(fleetprov.TimeoutError) as info:
            await fleetprov.aio.provision(
                **emulator.claim(port=silent_server), template_name="FleetTemplate",
                output_dir=tmp_path / "s", timeout=0.5,
            )
        assert 0.4 <= time.monotonic() - t0 < 2.0
        assert isinstance(info.value, TimeoutError)
        assert "deadline" in str(info.value)

    asyncio.run(main())
    wait_for_background_runs(10)


def test_client_op_timeout(emulator: Emulator, silent_server: int) -> None:
    async def main() -> None:
        client = fleetprov.aio.Client(**emulator.claim(port=silent_server))
        try:
            with pytest.raises(fleetprov.TimeoutError):
                await client.connect(timeout=0.3)
        finally:
            await client.close()  # cancels the pending connect; returns once its callbacks ran

    asyncio.run(main())


def test_late_result_of_a_cancelled_call_is_wiped() -> None:
    async def main() -> None:
        sink = LoopSink(asyncio.get_running_loop())
        sink.future.cancel()
        created = fleetprov.KeysAndCertificate("id", "cert", bytearray(b"secret key"), "token")
        sink.finish(created)  # as a library thread would, after the caller gave up
        await asyncio.sleep(0)  # let the loop run the posted settle
        assert created.private_key == bytearray(len(b"secret key"))

    asyncio.run(main())


def test_exit_right_after_a_cancelled_run(emulator: Emulator, silent_server: int, tmp_path: Path) -> None:
    """A program that cancels a run and exits at once: the run is cancelled and the
    interpreter waits for its end before it goes away, so no library thread calls into a
    finalized interpreter; the exit is clean."""
    import subprocess
    import sys
    import textwrap

    program = textwrap.dedent(
        f"""
        import asyncio, fleetprov
        async def main():
            task = asyncio.ensure_future(fleetprov.aio.provision(
                endpoint="localhost", port={silent_server}, ca_file={str(emulator.ca)!r},
                cert_file={str(emulator.claim_cert)!r}, key_file={str(emulator.claim_key)!r},
                template_name="FleetTemplate", output_dir={str(tmp_path / "s")!r},
                retry=fleetprov.RetryPolicy(deadline=1.0)))
            await asyncio.sleep(0.2)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                print("cancelled")
        asyncio.run(main())
        """
    )
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "cancelled"
    assert done.stderr == ""
    assert time.monotonic() - t0 < 10


def test_close_cancels_pending_calls(emulator: Emulator, silent_server: int) -> None:
    async def main() -> None:
        client = fleetprov.aio.Client(**emulator.claim(port=silent_server))
        connecting = asyncio.ensure_future(client.connect())
        creating = asyncio.ensure_future(client.create_keys_and_certificate())
        await asyncio.sleep(0)  # one loop turn: both have started their C call and wait
        assert not connecting.done() and not creating.done()
        t0 = time.monotonic()
        await client.close()
        assert time.monotonic() - t0 < 5  # no waiting for the 30 s connect timeout
        for task in (connecting, creating):
            with pytest.raises(fleetprov.FleetprovError) as info:
                await task
            print(type(info.value).__name__, info.value)
            assert isinstance(info.value, fleetprov.CancelledError), info.value
        with pytest.raises(fleetprov.NotConnectedError, match="closed"):
            await client.create_keys_and_certificate()

    asyncio.run(main())


def test_many_devices_at_once(emulator: Emulator, serial: str, tmp_path: Path) -> None:
    """Eight provision() runs on one loop at once, half of them CBOR: each gets its own thing."""

    async def main() -> List[fleetprov.Provisioned]:
        return await asyncio.gather(*(
            fleetprov.aio.provision(
                **emulator.claim(payload_format=fleetprov.PayloadFormat(i % 2)),
                template_name="FleetTemplate", parameters=params(f"{serial}-{i}"),
                output_dir=tmp_path / f"d{i}",
            )
            for i in range(8)
        ))

    results = asyncio.run(main())
    assert [r.thing_name for r in results] == [f"ThingPrefix_{serial}-{i}" for i in range(8)]
    assert len({r.certificate_id for r in results}) == 8
