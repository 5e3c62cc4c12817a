#!/bin/sh
# N devices through fp_provision() against an emulator (a separate process) whose
# RegisterThing is limited to RATE per second: prints the time to the last device against
# the floor N / RATE.
#
# Usage: bench/provision_fleet.sh [N (200)] [RATE (10)]
#   builds with `make` first; needs target/release/{libfleetprov.so,fleetprov-emulator}.
set -eu

n=${1:-200}
rate=${2:-10}
root=$(cd "$(dirname "$0")/.." && pwd)
lib="$root/target/release"
emulator="$lib/fleetprov-emulator"

. "$root/c_examples/emulator.sh"
emulator_workdir provision-fleet

cc -std=c99 -D_POSIX_C_SOURCE=200809L -O2 -Wall -Wextra -pedantic -I"$root/libfleetprov/include" \
    "$root/bench/provision_fleet.c" -L"$lib" -Wl,-rpath,"$lib" -lfleetprov -pthread \
    -o "$work/provision_fleet"

state="$work/state"
emulator_start "$emulator" "$state" "$work/ready" --quiet --rate-limit "RegisterThing=$rate" \
    >/dev/null
ulimit -n 4096 2>/dev/null || true
"$work/provision_fleet" "$emulator_port" "$state/ca.pem" "$state/claim-cert.pem" \
    "$state/claim-key.pem" "$work" "$n" "$rate"
