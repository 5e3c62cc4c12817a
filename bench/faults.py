#!/usr/bin/env python3
"""Fault-injection run: many devices provision through a TCP proxy that breaks connections,
and the certificates the emulator issued that no device holds are counted.

Each side (a demo binary linked against one build of the library) gets its own emulator
(RegisterThing rate-limited, throttled requests answered by closing the connection) and its
own proxy. The proxy picks a fault per connection from a seeded random stream:

  reset    closes both ends (RST) after a random number of client bytes;
  lose     forwards a request, then closes before the answer reaches the client
           (a lost answer: the service did the work);
  stall    stops passing the server's bytes after a while, holding the connection open;
  latency  delays every chunk by up to 50 ms;
  (none)   passes everything.

Some demo processes are killed (SIGKILL) at a random moment and run again on the same store.
At the end, for each side: devices provisioned, certificates issued, held (named by a store's
identity.json or pending.json), left behind (issued, not held; split into Active, i.e.
registered, and never registered), and how many of those the run reported (the demo prints
"certificate abandoned (ID)" and "Abandoned certificate ...: ID").

Usage:
  bench/faults.py --emulator EMULATOR --side NAME=DEMO [--side NAME=DEMO ...]
                  [--devices N (710)] [--parallel P (20)] [--seed S] [--fault-scale F (1)]
Prints one JSON object per side and a summary table.
"""

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import struct
import sys
import tempfile
import time

FAULTS = [("reset", 0.08), ("lose", 0.08), ("stall", 0.04), ("latency", 0.20)]
KILL_SHARE = 0.10
ID = re.compile(r"[0-9a-f]{64}")


class Proxy:
    """A TCP proxy to 127.0.0.1:target that injects one fault per connection."""

    def __init__(self, target, rng, scale):
        self.target = target
        self.rng = rng
        # The breaking faults scaled, latency as it is.
        self.faults = [(n, p if n == "latency" else p * scale) for n, p in FAULTS]
        self.counts = {}
        self.server = None
        self.port = None

    async def start(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def pick(self):
        x = self.rng.random()
        for name, share in self.faults:
            if x < share:
                return name
            x -= share
        return "none"

    async def handle(self, c_reader, c_writer):
        fault = self.pick()
        self.counts[fault] = self.counts.get(fault, 0) + 1
        try:
            s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            c_writer.close()
            return
        done = asyncio.Event()
        reset_after = self.rng.randint(0, 4000)
        # Chunks from the client: the TLS handshake takes 2; a request comes after.
        lose_after = self.rng.randint(3, 6)
        stall_after = self.rng.randint(0, 6000)
        state = {"up": 0, "chunks": 0, "down": 0, "mute": False}

        def rst(writer):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                except OSError:
                    pass
            writer.close()

        async def delay():
            if fault == "latency":
                await asyncio.sleep(self.rng.random() * 0.05)

        async def upstream():
            while not done.is_set():
                data = await c_reader.read(65536)
                if not data:
                    break
                state["up"] += len(data)
                state["chunks"] += 1
                if fault == "reset" and state["up"] >= reset_after:
                    rst(c_writer)
                    rst(s_writer)
                    break
                await delay()
                s_writer.write(data)
                await s_writer.drain()
                if fault == "lose" and state["chunks"] >= lose_after:
                    # The request went through; its answer never comes back.
                    state["mute"] = True
                    await asyncio.sleep(0.3)
                    rst(c_writer)
                    s_writer.close()
                    break
            done.set()

        async def downstream():
            while not done.is_set():
                data = await s_reader.read(65536)
                if not data:
                    break
                if state["mute"]:
                    continue
                state["down"] += len(data)
                if fault == "stall" and state["down"] >= stall_after:
                    # Hold the connection open, passing nothing, until the client leaves.
                    state["mute"] = True
                    continue
                await delay()
                c_writer.write(data)
                await c_writer.drain()
            done.set()

        tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
        try:
            await done.wait()
        except asyncio.CancelledError:
            pass
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in (c_writer, s_writer):
            try:
                w.close()
            except Exception:
                pass


async def start_emulator(binary, state):
    ready = os.path.join(state, "ready")
    proc = await asyncio.create_subprocess_exec(
        binary, "serve", "--state-dir", state, "--port", "0", "--ready-file", ready, "--quiet",
        "--rate-limit", "RegisterThing=10", "--throttle", "disconnect",
        stdout=asyncio.subprocess.DEVNULL,
    )
    for _ in range(600):
        if os.path.exists(ready) and open(ready).read().strip():
            return proc, int(open(ready).read().strip())
        await asyncio.sleep(0.1)
    raise RuntimeError("the emulator was not ready within 60 s")


def registry_certificates(state):
    """Device certificates in the emulator's registry: {id: status}."""
    path = os.path.join(state, "registry.json")
    certs = {}
    if os.path.exists(path):
        certs = {k: v["status"] for k, v in json.load(open(path)).get("certificates", {}).items()}
    journal = os.path.join(state, "registry.journal")
    if os.path.exists(journal):
        for line in open(journal):
            line = line.strip()
            if not line:
                continue
            change = json.loads(line)
            for rec in find_certificate_records(change):
                certs[rec["certificate_id"]] = rec["status"]
    return {k: v for k, v in certs.items() if v != "Claim"}


def find_certificate_records(value):
    if isinstance(value, dict):
        if "certificate_id" in value and "status" in value:
            yield value
        for v in value.values():
            yield from find_certificate_records(v)
    elif isinstance(value, list):
        for v in value:
            yield from find_certificate_records(v)


async def run_device(demo, args, store, kill_after, log, own_log):
    cmd = [demo] + args + ["--output_dir", store, "--max_attempts", "8", "--timeout_ms", "3000"]
    runs = [kill_after, None] if kill_after is not None else [None]
    outcome = None
    for kill in runs:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        # Read to the end whatever happens: what a killed run printed counts too.
        reading = asyncio.ensure_future(proc.communicate())
        if kill is not None:
            done, _ = await asyncio.wait({reading}, timeout=kill)
            if not done:
                proc.send_signal(signal.SIGKILL)
        out, _ = await reading
        text = out.decode(errors="replace")
        log.write(text)
        with open(own_log, "a") as f:
            f.write(f"=== run (kill after {kill}) exit {proc.returncode}\n{text}")
        outcome = proc.returncode
    return outcome


async def side(name, demo, emulator, devices, parallel, seed, scale):
    rng = random.Random(seed)
    work = tempfile.mkdtemp(prefix=f"fleetprov-faults-{name}.")
    state = os.path.join(work, "state")
    os.makedirs(state)
    emu, port = await start_emulator(emulator, state)
    proxy = Proxy(port, random.Random(seed + 1), scale)
    await proxy.start()
    base = [
        "--endpoint", "localhost", "--port", str(proxy.port),
        "--ca_file", os.path.join(state, "ca.pem"),
        "--cert", os.path.join(state, "claim-cert.pem"),
        "--key", os.path.join(state, "claim-key.pem"),
        "--template_name", "FleetTemplate",
    ]
    log_path = os.path.join(work, "demo.log")
    log = open(log_path, "w")
    sem = asyncio.Semaphore(parallel)
    codes = {}
    started = time.monotonic()

    async def one(i):
        kill = rng.uniform(0.3, 4.0) if rng.random() < KILL_SHARE else None
        params = json.dumps({"SerialNumber": f"f{i}", "DeviceLocation": "Seattle"})
        async with sem:
            code = await run_device(
                demo, base + ["--template_parameters", params],
                os.path.join(work, f"dev-{i}"), kill, log, os.path.join(work, f"dev-{i}.log"))
        codes[code] = codes.get(code, 0) + 1

    await asyncio.gather(*(one(i) for i in range(devices)))
    elapsed = time.monotonic() - started
    log.close()
    proxy.server.close()
    emu.send_signal(signal.SIGTERM)
    await emu.wait()

    issued = registry_certificates(state)
    held = set()
    provisioned = 0
    for i in range(devices):
        for f in ("identity.json", "pending.json"):
            p = os.path.join(work, f"dev-{i}", f)
            if os.path.exists(p):
                held.add(json.load(open(p))["certificateId"])
                provisioned += f == "identity.json"
    reported = set()
    for line in open(log_path):
        if "certificate abandoned" in line or "Abandoned certificate" in line:
            reported.update(ID.findall(line))
    left = {k: v for k, v in issued.items() if k not in held}
    with open(os.path.join(work, "left.txt"), "w") as f:
        for k, v in sorted(left.items()):
            f.write(f"{k} {v} {'reported' if k in reported else 'unreported'}\n")
    result = {
        "side": name,
        "devices": devices,
        "provisioned": provisioned,
        "exit_codes": {str(k): v for k, v in sorted(codes.items(), key=lambda kv: str(kv[0]))},
        "issued": len(issued),
        "left_behind": len(left),
        "left_active": sum(1 for v in left.values() if v == "Active"),
        "left_never_registered": sum(1 for v in left.values() if v != "Active"),
        "left_reported": len(set(left) & reported),
        "left_active_reported": sum(1 for k, v in left.items() if v == "Active" and k in reported),
        "per_device": round(len(left) / devices, 3),
        "fault_scale": scale,
        "proxy_faults": proxy.counts,
        "seconds": round(elapsed, 1),
        "work": work,
    }
    print(json.dumps(result), flush=True)
    return result


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--emulator", required=True)
    ap.add_argument("--side", action="append", required=True, help="NAME=DEMO_BINARY")
    ap.add_argument("--devices", type=int, default=710)
    ap.add_argument("--parallel", type=int, default=20)
    ap.add_argument("--seed", type=int, default=20)
    ap.add_argument("--fault-scale", type=float, default=1.0,
                    help="multiplies the shares of reset, lose and stall (default 1)")
    a = ap.parse_args()
    results = []
    for s in a.side:
        name, demo = s.split("=", 1)
        results.append(
            await side(name, demo, a.emulator, a.devices, a.parallel, a.seed, a.fault_scale))
    print()
    print("| side | devices | provisioned | issued | left behind (per device) | Active | never registered | reported |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['side']} | {r['devices']} | {r['provisioned']} | {r['issued']} | "
              f"{r['left_behind']} ({r['per_device']}) | {r['left_active']} | "
              f"{r['left_never_registered']} | {r['left_reported']} |")


if __name__ == "__main__":
    asyncio.run(main())
