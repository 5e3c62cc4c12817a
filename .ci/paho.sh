#!/usr/bin/env bash
# Issue 21's paho-mqtt checks: pytest drives `fleetprov-emulator serve` with paho-mqtt (a client
# nobody on this project wrote) over mutual TLS: fleet provisioning with the claim, then the
# MQTT 5 broker rules and the AWS IoT policies as two provisioned devices (emulator/tests/paho).
# Fails if a test fails, errs or is skipped, or if none ran.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/lib.sh
command -v python3 >/dev/null || need_packages python3 python3-venv python3-pip
python3 -c 'import venv, ensurepip' 2>/dev/null || need_packages python3-venv

work=$(mktemp -d "${TMPDIR:-/tmp}/fleetprov-paho.XXXXXX")
trap 'rm -rf "$work"' EXIT

cargo build --release -p fleetprov-emulator
export FLEETPROV_EMULATOR="$PWD/target/release/fleetprov-emulator"

python3 -m venv "$work/venv"
py="$work/venv/bin/python"
unset PYTHONPATH
"$py" -m pip install --quiet --disable-pip-version-check paho-mqtt pytest
"$py" -c 'import importlib.metadata as m; print("paho-mqtt", m.version("paho-mqtt"), "pytest", m.version("pytest"))'

cd emulator/tests/paho
status=0
"$py" -m pytest -q -rfEs --basetemp="$work/pytest" --junitxml="$work/junit.xml" . || status=$?
"$py" - "$work/junit.xml" <<'PY' || status=1
import sys
import xml.etree.ElementTree as ET

root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
count = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
print("paho checks: {tests} tests, {failures} failed, {errors} errors, {skipped} skipped".format(**count))
if count["tests"] == 0:
    sys.exit("no paho test ran")
if count["skipped"]:
    sys.exit("a paho test was skipped")
if count["failures"] or count["errors"]:
    sys.exit(1)
PY
exit "$status"
