#!/usr/bin/env bash
# The C programs (c_examples/ and libfleetprov/tests/c/) under memory checkers, against the emulator, with
# the assertions of tests/c_api.rs (see its module docs for the modes):
#   1. built with AddressSanitizer + UBSan; each program must carry __asan_init, and any
#      sanitizer report (leaks at exit included) fails;
#   2. run under valgrind memcheck with .ci/valgrind.supp; any error or a definitely lost byte
#      fails.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null; then
  echo "c_checks: valgrind is not installed (apt-get install valgrind); refusing to skip it" >&2
  exit 1
fi
if ! command -v nm >/dev/null; then
  echo "c_checks: nm is not installed (binutils); it proves the sanitizers are linked" >&2
  exit 1
fi

for mode in asan valgrind; do
  echo "--- C programs: FLEETPROV_C_MODE=$mode"
  t0=$(date +%s)
  FLEETPROV_C_MODE=$mode cargo test -p fleetprov-ffi --test c_api
  echo "--- FLEETPROV_C_MODE=$mode passed in $(( $(date +%s) - t0 )) s"
done
