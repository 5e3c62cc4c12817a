#!/usr/bin/env bash
# Measures the C demo against the emulator (wall, CPU, peak RSS) with GNU time, next to a baseline
# run in the same invocation: mosquitto_rr (libmosquitto + OpenSSL, a small C client) doing one
# CreateKeysAndCertificate round trip with the same claim over the same TLS. Also prints the size of
# the stripped shared library. Usage: bench/measure.sh [RUNS]   (default 20)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
make all emulator >/dev/null
EMU=target/release/fleetprov-emulator
DEMO=build/fleet_provisioning
work=$(mktemp -d)
emu_pid=
cleanup() { [ -n "$emu_pid" ] && kill "$emu_pid" 2>/dev/null && wait "$emu_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$EMU" serve --state-dir "$work/state" --port 0 --ready-file "$work/port" --quiet >/dev/null &
emu_pid=$!
for _ in $(seq 1 200); do [ -s "$work/port" ] && break; sleep 0.05; done
port=$(cat "$work/port")
s="$work/state"
tls=(--cafile "$s/ca.pem" --cert "$s/claim-cert.pem" --key "$s/claim-key.pem")

for i in 1 2; do  # warm the emulator's key pool and the page cache
  "$DEMO" --endpoint localhost --port "$port" --ca_file "$s/ca.pem" --cert "$s/claim-cert.pem" \
    --key "$s/claim-key.pem" --template_name FleetTemplate \
    --template_parameters '{"SerialNumber":"w","DeviceLocation":"Seattle"}' >/dev/null
done
# Alternate the two so drift on a noisy machine hits both alike.
: >"$work/demo.times"; : >"$work/base.times"
for i in $(seq 1 "$runs"); do
  /usr/bin/time -f "%e %U %S %M" -o "$work/t" "$DEMO" --endpoint localhost --port "$port" \
    --ca_file "$s/ca.pem" --cert "$s/claim-cert.pem" --key "$s/claim-key.pem" \
    --template_name FleetTemplate \
    --template_parameters "{\"SerialNumber\":\"b$i\",\"DeviceLocation\":\"Seattle\"}" >/dev/null
  cat "$work/t" >>"$work/demo.times"
  /usr/bin/time -f "%e %U %S %M" -o "$work/t" mosquitto_rr -V 5 -h localhost -p "$port" "${tls[@]}" \
    -t '$aws/certificates/create/json' -e '$aws/certificates/create/json/accepted' -m '{}' -W 10 >/dev/null
  cat "$work/t" >>"$work/base.times"
done
python3 - "$work/demo.times" "$work/base.times" <<'PY'
import statistics, sys
def load(p):
    rows = [list(map(float, l.split())) for l in open(p) if l.strip()]
    wall = statistics.median(r[0] for r in rows)
    cpu = statistics.median(r[1] + r[2] for r in rows)
    rss = statistics.median(r[3] for r in rows) / 1024
    return wall, cpu, rss
d, b = load(sys.argv[1]), load(sys.argv[2])
print(f"{'':38} {'wall s':>8} {'cpu s':>8} {'peak RSS MiB':>13}")
print(f"{'demo: connect+create keys+register':38} {d[0]:8.3f} {d[1]:8.3f} {d[2]:13.2f}")
print(f"{'mosquitto_rr: connect+create keys':38} {b[0]:8.3f} {b[1]:8.3f} {b[2]:13.2f}")
print(f"{'ratio demo/baseline':38} {d[0]/b[0]:8.2f} {(d[1]/b[1]) if b[1] else float('nan'):8.2f} {d[2]/b[2]:13.2f}")
PY
strip -o "$work/lib.so" target/release/libfleetprov.so
echo "stripped libfleetprov.so: $(stat -c %s "$work/lib.so") bytes"
echo "runs: $runs each (medians)"
