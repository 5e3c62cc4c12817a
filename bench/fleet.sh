#!/bin/sh
# Runs bench/fleet.c's binary (FLEET_N devices at once, default 1000) against an emulator
# started here as a separate process, with one EC P-256 CSR made by openssl for all devices.
# Raises the descriptor limit for both (one socket per device on each side).
#
# Usage: bench/fleet.sh FLEET_BINARY EMULATOR_BINARY   (FLEET_N and FLEET_ROUNDS pass through)
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

status=0
"$fleet" --devices "$devices" --rounds "$rounds" --port "$emulator_port" --ca "$state/ca.pem" \
    --cert "$state/claim-cert.pem" --key "$state/claim-key.pem" --csr "$work/device.csr" ||
    status=$?
printf 'emulator: VmHWM %s kB, threads %s\n' \
    "$(awk '/^VmHWM:/ {print $2}' "/proc/$emulator_pid/status")" \
    "$(awk '/^Threads:/ {print $2}' "/proc/$emulator_pid/status")"
exit "$status"
