"""Times provisioning runs against a running emulator; called by bench/measure.sh.

For every run it records, with microsecond resolution (GNU time's %e/%U/%S stop at 10 ms):
- the client's wall time (fork to exit), user+sys CPU and peak RSS, from wait4()'s rusage as
  reported by bench/rusage.c;
- the emulator's CPU time spent on that run: the growth of every emulator thread's
  /proc/PID/task/TID/schedstat run time (nanoseconds), leaving out the RSA key-pool thread,
  whose key generation happens off the request path.
The emulator is single-tenant here and idle between runs, so its CPU growth is its own handling
time for the run; wall - client CPU - server CPU is time nobody computed (waiting on the network
stack, timers, wake-ups).

Before each run it waits until the key pool's thread is asleep (the pool is full), so a
CreateKeysAndCertificate never waits for a key to be generated and no run pays for another's.
"""

import os
import statistics
import subprocess
import sys
import time


def tasks(pid):
    """{tid: (name, cpu ns)} for every thread of the process."""
    out = {}
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            with open(f"{base}/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"{base}/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the thread ended while we looked
        out[tid] = (name, ns)
    return out


def server_cpu_ns(before, after):
    total = 0
    for tid, (name, ns) in after.items():
        if name.startswith("fleetprov-rsa"):
            continue
        total += ns - before.get(tid, (name, 0))[1]
    return total


def thread_state(pid, tid):
    with open(f"/proc/{pid}/task/{tid}/stat") as f:
        # The state follows the parenthesised name, which may itself hold spaces.
        return f.read().rsplit(")", 1)[1].split()[0]


def wait_pool_full(pid, limit_s=30.0):
    """Waits until the key-pool thread has slept on two looks 20 ms apart."""
    pool = [tid for tid, (name, _) in tasks(pid).items() if name.startswith("fleetprov-rsa")]
    if not pool:
        return
    deadline = time.monotonic() + limit_s
    asleep = 0
    while asleep < 2 and time.monotonic() < deadline:
        try:
            asleep = asleep + 1 if thread_state(pid, pool[0]) in ("S", "D") else 0
        except FileNotFoundError:
            return
        time.sleep(0.02)


def run_once(launcher, cmd, emulator_pid):
    before = tasks(emulator_pid)
    done = subprocess.run([launcher] + cmd, stderr=subprocess.PIPE, text=True, check=True)
    after = tasks(emulator_pid)
    wall, cpu, rss_kb, code = done.stderr.split()[-4:]
    if code != "0":
        sys.exit(f"measure: {cmd[0]} exited with {code}: {done.stderr.strip()}")
    return {
        "wall": float(wall),
        "cpu": float(cpu),
        "rss": int(rss_kb) / 1024.0,
        "server": server_cpu_ns(before, after) / 1e9,
    }


def main():
    runs = int(sys.argv[1])
    emulator_pid = int(sys.argv[2])
    port, state, csr = sys.argv[3], sys.argv[4], sys.argv[5]
    demo = os.environ.get("DEMO", "build/fleet_provisioning")
    launcher = os.environ.get("RUSAGE", "build/rusage")
    common = [demo, "--endpoint", "localhost", "--port", port,
              "--ca_file", f"{state}/ca.pem", "--cert", f"{state}/claim-cert.pem",
              "--key", f"{state}/claim-key.pem", "--template_name", "FleetTemplate"]
    tls = ["-h", "localhost", "-p", port, "--cafile", f"{state}/ca.pem",
           "--cert", f"{state}/claim-cert.pem", "--key", f"{state}/claim-key.pem"]
    rows = {
        "demo, keys flow (create keys+register)": lambda i: common + [
            "--template_parameters", f'{{"SerialNumber":"k{i}","DeviceLocation":"Seattle"}}'],
        "demo, CSR flow (from CSR+register)": lambda i: common + [
            "--csr", csr,
            "--template_parameters", f'{{"SerialNumber":"c{i}","DeviceLocation":"Seattle"}}'],
        "mosquitto_rr, create keys only": lambda i: ["mosquitto_rr", "-V", "5"] + tls + [
            "-t", "$aws/certificates/create/json",
            "-e", "$aws/certificates/create/json/accepted", "-m", "{}", "-W", "10"],
    }
    results = {name: [] for name in rows}
    for i in range(-2, runs):  # two warm-up rounds: page cache, emulator allocations
        # Interleaved, so drift on a shared machine hits every row alike.
        for name, cmd in rows.items():
            wait_pool_full(emulator_pid)
            r = run_once(launcher, cmd(i), emulator_pid)
            if i >= 0:
                results[name].append(r)

    med = lambda rs, k: statistics.median(r[k] for r in rs)
    print(f"{'medians of ' + str(runs) + ' runs, ms (RSS MiB)':40} {'wall':>7} {'min':>6} "
          f"{'cpu':>6} {'server':>7} {'waiting':>8} {'peak RSS':>9}")
    for name, rs in results.items():
        wall, cpu, server = med(rs, "wall"), med(rs, "cpu"), med(rs, "server")
        waiting = statistics.median(r["wall"] - r["cpu"] - r["server"] for r in rs)
        print(f"{name:40} {wall * 1e3:7.2f} {min(r['wall'] for r in rs) * 1e3:6.2f} "
              f"{cpu * 1e3:6.2f} {server * 1e3:7.2f} {waiting * 1e3:8.2f} {med(rs, 'rss'):9.2f}")
    print("wall: fork to exit (min: fastest run); cpu: the client's user+sys; server: the"
          " emulator's CPU for the run (key-pool thread excluded); waiting: wall - cpu - server")


if __name__ == "__main__":
    main()
