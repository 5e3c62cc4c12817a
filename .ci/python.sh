#!/usr/bin/env bash
# The Python package (bindings/python) as a user gets it: `pip install ./bindings/python` in a
# fresh virtual environment (the build step runs make for libfleetprov.so and bundles it), then
# mypy --strict and pytest against the real emulator over mutual TLS on loopback, including
# the PKCS#11 claim-key tests with SoftHSM2 (CI=true: their absence fails, never skips).
# Fails if pytest ran no test, or skipped one.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/lib.sh
need_packages softhsm2 openssl make
command -v python3 >/dev/null || need_packages python3 python3-venv python3-pip
python3 -c 'import venv, ensurepip' 2>/dev/null || need_packages python3-venv

work=$(mktemp -d "${TMPDIR:-/tmp}/fleetprov-python.XXXXXX")
trap 'rm -rf "$work"' EXIT

cargo build --release -p fleetprov-emulator

python3 -m venv "$work/venv"
py="$work/venv/bin/python"
# Nothing from the developer's environment: the tests use the installed package and its
# bundled library.
unset PYTHONPATH FLEETPROV_LIBRARY
"$py" -m pip install --quiet pytest mypy
"$py" -m pip install ./bindings/python
"$py" -c 'import fleetprov; print("fleetprov", fleetprov.version(), "from", fleetprov.library_path())'
# The console script is installed beside the interpreter.
[ -x "$work/venv/bin/fleetprov-provision" ] || { echo "fleetprov-provision was not installed" >&2; exit 1; }

cd bindings/python
"$py" -m mypy --strict --cache-dir "$work/mypy-cache" src tests gen_codes.py
PATH="$work/venv/bin:$PATH" CI="${CI:-true}" "$py" -m pytest -p no:cacheprovider -q -rs \
  --junitxml="$work/junit.xml" tests
"$py" - "$work/junit.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
count = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
print("python tests:", count)
if count["tests"] == 0:
    sys.exit("no Python test ran")
if count["failures"] or count["errors"] or count["skipped"]:
    sys.exit("Python tests failed or were skipped")
EOF
