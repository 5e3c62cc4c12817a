#!/bin/sh
# Runs bench/fleet.c's binary (FLEET_N devices at once, default 1000) against an emulator
# started here as a separate process, with one EC P-256 CSR made by openssl for all devices.
# Raises the descriptor limit for both (one socket per device on each side).
#
# Usage: bench/fleet.sh FLEET_BINARY EMULATOR_BINARY   (FLEET_N and FLEET_ROUNDS pass through)
#
# FLEET_BASELINE=OTHER_FLEET_BINARY (the same bench/fleet.c linked with another build of the
# library): the two run in turns against the same emulator, FLEET_ROUNDS times each, and the
# medians of their per-device CPU figures are printed with the ratio, so that a change is
# measured against its baseline under the same load.
set -eu

fleet=${1:?fleet binary}
emulator=${2:?emulator binary}
devices=${FLEET_N:-1000}
rounds=${FLEET_ROUNDS:-1}

# Each side holds a socket per device, plus files; the emulator inherits this limit.
need=$((devices + 1024))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
    ulimit -n "$need" || {
        echo "fleet.sh: cannot raise the descriptor limit to $need" >&2
        exit 2
    }
fi

. "$(dirname "$0")/../c_examples/emulator.sh"
emulator_workdir fleet

state="$work/state"
emulator_start "$emulator" "$state" "$work/ready" --quiet >/dev/null

openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=fleetprov-fleet" \
    -keyout "$work/device.key" -out "$work/device.csr" 2>/dev/null

run() {
    "$1" --devices "$devices" --rounds "$2" --port "$emulator_port" --ca "$state/ca.pem" \
        --cert "$state/claim-cert.pem" --key "$state/claim-key.pem" --csr "$work/device.csr"
}

status=0
if [ -z "${FLEET_BASELINE:-}" ]; then
    run "$fleet" "$rounds" || status=$?
else
    i=0
    while [ "$i" -lt "$rounds" ]; do
        for side in baseline current; do
            if [ "$side" = baseline ]; then bin=$FLEET_BASELINE; else bin=$fleet; fi
            run "$bin" 1 >"$work/round.out" || status=1
            sed "s/^/$side /" "$work/round.out" | tee -a "$work/$side.out"
        done
        i=$((i + 1))
    done
    # "provision 1000/1000 ok ... cpu  0.812 ms/device ...": the figure after "cpu".
    median() {
        grep "^$1 *$2 " "$work/$1.out" |
            sed 's/.* cpu *\([0-9.]*\) ms\/device.*/\1/' | sort -n |
            awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
    }
    for phase in floor provision; do
        b=$(median baseline "$phase") c=$(median current "$phase")
        printf 'median of %s rounds, %s cpu: baseline %s ms/device, current %s ms/device (%s)\n' \
            "$rounds" "$phase" "$b" "$c" "$(awk "BEGIN {printf \"%.2fx\", $c / $b}")"
    done
fi
printf 'emulator: VmHWM %s kB, threads %s\n' \
    "$(awk '/^VmHWM:/ {print $2}' "/proc/$emulator_pid/status")" \
    "$(awk '/^Threads:/ {print $2}' "/proc/$emulator_pid/status")"
exit "$status"
