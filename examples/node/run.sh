#!/bin/sh
# Runs the Node.js example end to end against a local emulator on a loopback port: installs the
# locked dependencies (the fleetprov package of bindings/node, and its koffi), then provisions with CreateKeysAndCertificate and with
# CreateCertificateFromCsr (a CSR made on the spot). Exits non-zero if a step fails, the thing
# is not registered, a private key is printed, or node does not exit by itself within 60 s; the
# emulator is stopped on every exit path.
#
# Needs the library and the emulator: `make` and `cargo build --release -p fleetprov-emulator`.
# Usage: examples/node/run.sh [LIBRARY] [EMULATOR_BINARY]
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
lib=${1:-$root/target/release/libfleetprov.so}
emulator=${2:-$root/target/release/fleetprov-emulator}
for file in "$lib" "$emulator"; do
    if [ ! -f "$file" ]; then
        echo "run.sh: $file is missing; run make and cargo build --release -p fleetprov-emulator" >&2
        exit 1
    fi
done

for dir in "$root/bindings/node" "$here"; do
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
done

. "$root/c_examples/emulator.sh"
. "$root/examples/check_provision.sh"
emulator_workdir node

state="$work/state"
emulator_start "$emulator" "$state" "$work/ready" --quiet

# A hang (a callback never delivered, a handle keeping the loop alive) fails the run.
limit=
if command -v timeout >/dev/null 2>&1; then
    limit="timeout 60"
fi

# provision NAME ARGS...: runs provision.mjs, shows its output, checks the result.
provision() {
    _name=$1
    shift
    _status=0
    # shellcheck disable=SC2086 # $limit is empty or a command and its argument
    FLEETPROV_LIB=$lib $limit node "$here/provision.mjs" --endpoint localhost \
        --port "$emulator_port" --ca_file "$state/ca.pem" --cert "$state/claim-cert.pem" \
        --key "$state/claim-key.pem" --template_name FleetTemplate "$@" \
        >"$work/$_name.out" 2>&1 || _status=$?
    check_provision "$_name" "$_status" "$work/$_name.out" "ThingPrefix_"
}

echo "== Node.js: CreateKeysAndCertificate + RegisterThing"
provision keys --template_parameters '{"SerialNumber":"1","DeviceLocation":"Seattle"}'

echo
echo "== Node.js: CreateCertificateFromCsr + RegisterThing"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=node-device \
    -keyout "$work/node-device.key" -out "$work/node-device.csr" 2>/dev/null
provision csr --template_parameters '{"SerialNumber":"2","DeviceLocation":"Seattle"}' \
    --csr "$work/node-device.csr"

emulator_stop
echo
echo "run.sh: all steps succeeded"
