#!/usr/bin/env bash
# Measures the C demo against the emulator (wall, CPU, peak RSS, and the emulator's own CPU time
# for each run) next to a baseline run in the same invocation: mosquitto_rr (libmosquitto +
# OpenSSL, a small C client) doing one CreateKeysAndCertificate round trip with the same claim
# over the same TLS. Also prints the size of the stripped shared library.
# Usage: bench/measure.sh [RUNS]   (default 20; needs python3 and mosquitto-clients)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
make all emulator >/dev/null 2>&1 || make all emulator
EMU=target/release/fleetprov-emulator
mkdir -p build
${CC:-cc} -O2 -Wall -Wextra -Werror -o build/rusage bench/rusage.c
. c_examples/emulator.sh
emulator_workdir bench

emulator_start "$EMU" "$work/state" "$work/port" --quiet >/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=fleetprov-bench" \
  -keyout "$work/device.key" -out "$work/device.csr" 2>/dev/null

python3 bench/measure.py "$runs" "$emulator_pid" "$emulator_port" "$work/state" "$work/device.csr"

strip -o "$work/lib.so" target/release/libfleetprov.so
echo "stripped libfleetprov.so: $(stat -c %s "$work/lib.so") bytes"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
