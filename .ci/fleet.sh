#!/usr/bin/env bash
# Smoke run of the fleet benchmark: 100 devices provisioned at once through the C API, and the
# connect-only floor, against the emulator. Fails if any device fails; the figures are printed
# for information only (`make fleet FLEET_N=1000` and 10000 are the measured runs).
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/lib.sh
need_packages openssl make gcc
make fleet FLEET_N=100
