#!/bin/sh
# What the Go and Node.js packages add to a provisioning: the CSR flow (new client, connect,
# CreateCertificateFromCsr, RegisterThing, close) through each package, N times in one process,
# against the same flow run by the C demo (a process per run, which adds about 1 ms of process
# start). Runs the C demo before and after the packages, to show how much the machine drifted.
# Prints medians; each part starts its own emulator on loopback.
#
# Needs `make` (library, demo), the release emulator, Go, and `npm ci` in bindings/node.
# Usage: bindings/bench.sh [N (20)]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-20}
export GOTOOLCHAIN=local

. "$root/c_examples/emulator.sh"
emulator_workdir bindings-bench
emulator_start "$root/target/release/fleetprov-emulator" "$work/state" "$work/ready" --quiet >/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=bench \
    -keyout "$work/device.key" -out "$work/device.csr" 2>/dev/null

c_demo() {
    : >"$work/times"
    i=0
    while [ "$i" -lt "$runs" ]; do
        t0=$(date +%s%N)
        "$root/build/fleet_provisioning" --endpoint localhost --port "$emulator_port" \
            --ca_file "$work/state/ca.pem" --cert "$work/state/claim-cert.pem" \
            --key "$work/state/claim-key.pem" --csr "$work/device.csr" \
            --template_name FleetTemplate \
            --template_parameters "{\"SerialNumber\":\"c-$1-$i\",\"DeviceLocation\":\"Seattle\"}" >/dev/null
        t1=$(date +%s%N)
        echo $(( (t1 - t0) / 1000 )) >>"$work/times"
        i=$((i + 1))
    done
    sort -n "$work/times" | awk -v what="C demo ($1), CSR flow" \
        '{a[NR]=$1} END {printf "%s: median %.2f ms, fastest %.2f ms (n=%d)\n", what, a[int((NR+1)/2)]/1000, a[1]/1000, NR}'
}

c_demo before
(cd "$root/bindings/go" && go test -tags fleetprov_intree -run '^$' -bench CSRFlow \
    -benchtime "${runs}x" . | awk '/^BenchmarkCSRFlow/ {printf "Go package, CSR flow: median %s ms, fastest %s ms (n=%d)\n", $7, $5, $2}')
(cd "$root/bindings/node" && node bench/csr-flow.js "$runs")
c_demo after
