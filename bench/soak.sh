#!/bin/sh
# Runs bench/soak.c's binary against an emulator started here as a separate process (so the soak
# process's RSS and descriptors are the library's own), with an EC P-256 CSR made by openssl.
# Also prints the emulator's own RSS and descriptors before and after, for information.
#
# Usage: bench/soak.sh SOAK_BINARY EMULATOR_BINARY   (SOAK_CYCLES, SOAK_RSS_TOLERANCE_KB pass through)
set -eu

soak=${1:?soak binary}
emulator=${2:?emulator binary}

. "$(dirname "$0")/../c_examples/emulator.sh"
emulator_workdir soak

state="$work/state"
emulator_start "$emulator" "$state" "$work/ready" --quiet >/dev/null
port=$emulator_port

openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=fleetprov-soak" \
    -keyout "$work/device.key" -out "$work/device.csr" 2>/dev/null

emulator_usage() {
    printf 'emulator %s: VmRSS %s kB, fds %s\n' "$1" \
        "$(awk '/^VmRSS:/ {print $2}' "/proc/$emulator_pid/status")" \
        "$(ls "/proc/$emulator_pid/fd" | wc -l)"
}
emulator_usage before
status=0
"$soak" --port "$port" --ca "$state/ca.pem" --cert "$state/claim-cert.pem" \
    --key "$state/claim-key.pem" --csr "$work/device.csr" || status=$?
emulator_usage after
exit "$status"
