#!/bin/sh
# What the Go and Node.js packages cost over the C library, in the CSR flow (new client,
# connect, CreateCertificateFromCsr, RegisterThing, free/close), against one emulator:
# - in one process, N flows: the C library (bench/soak.c, its mean CSR cycle), the Go package
#   (go test -bench), the Node package (bench/csr-flow.js);
# - a process per flow, interleaved: the C demo, the Go example, the Node example (what a
#   device runs; includes starting the runtime).
# Prints figures in ms and each one's ratio to the C figure of the same part.
#
# Needs `make build/fleet_provisioning build/soak`, the release emulator, Go, and `npm ci` in
# bindings/node. Usage: bindings/bench.sh [N (20, at least 10)]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-20}
export GOTOOLCHAIN=local

. "$root/c_examples/emulator.sh"
emulator_workdir bindings-bench
state=$work/state
emulator_start "$root/target/release/fleetprov-emulator" "$state" "$work/ready" --quiet >/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=bench \
    -keyout "$work/device.key" -out "$work/device.csr" 2>/dev/null

# ratio LABEL MS BASE_MS: one output line.
ratio() { awk -v l="$1" -v v="$2" -v b="$3" 'BEGIN {printf "  %-34s %8.2f ms  %5.2fx\n", l, v, v / b}'; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)] / 1000}'; }

echo "in one process, mean of $runs flows (ratio to the C library):"
c=$(SOAK_CYCLES=$runs "$root/build/soak" --port "$emulator_port" --ca "$state/ca.pem" \
    --cert "$state/claim-cert.pem" --key "$state/claim-key.pem" --csr "$work/device.csr" |
    sed -n 's/^mean cycle: \([0-9.]*\) ms with CreateCertificateFromCsr.*/\1/p')
go=$(cd "$root/bindings/go" && go test -tags fleetprov_intree -run '^$' -bench CSRFlow \
    -benchtime "${runs}x" . | awk '/^BenchmarkCSRFlow/ {print $3 / 1e6}')
node=$(cd "$root/bindings/node" && node bench/csr-flow.js "$runs" | sed 's/.*mean \([0-9.]*\) ms.*/\1/')
ratio "C library (bench/soak.c)" "$c" "$c"
ratio "Go package" "$go" "$c"
ratio "Node package" "$node" "$c"

echo "a process per flow, median of $runs (ratio to the C demo):"
(cd "$root/examples/go" && go build -tags fleetprov_intree -o "$work/go-provision" .)
(cd "$root/examples/node" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
i=0
while [ "$i" -lt "$runs" ]; do
    for who in c go node; do
        set -- "$root/build/fleet_provisioning"
        [ "$who" = go ] && set -- "$work/go-provision"
        [ "$who" = node ] && set -- node "$root/examples/node/provision.mjs"
        t0=$(date +%s%N)
        "$@" --endpoint localhost --port "$emulator_port" --ca_file "$state/ca.pem" \
            --cert "$state/claim-cert.pem" --key "$state/claim-key.pem" --csr "$work/device.csr" \
            --template_name FleetTemplate \
            --template_parameters "{\"SerialNumber\":\"$who-$i\",\"DeviceLocation\":\"Seattle\"}" >/dev/null
        t1=$(date +%s%N)
        echo $(((t1 - t0) / 1000)) >>"$work/$who.times"
    done
    i=$((i + 1))
done
c=$(median <"$work/c.times")
ratio "C demo" "$c" "$c"
ratio "Go example" "$(median <"$work/go.times")" "$c"
ratio "Node example" "$(median <"$work/node.times")" "$c"
ratio "(node -e '' alone)" "$(t0=$(date +%s%N); node -e ''; t1=$(date +%s%N); echo $(((t1 - t0) / 1000000)))" "$c"
