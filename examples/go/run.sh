#!/bin/sh
# Builds the Go example (cgo, linked to target/release/libfleetprov.so) and runs it against a
# local emulator on a loopback port: the CreateKeysAndCertificate flow, the
# CreateCertificateFromCsr flow with a CSR made on the spot, and a rejected RegisterThing that
# must exit non-zero with the service's error. Exits non-zero if any step fails; the emulator
# is stopped on every exit path.
#
# Needs Go >= 1.18 with cgo (Debian: apt-get install golang-go), openssl, and `make` plus
# `cargo build --release -p fleetprov-emulator` run first.
#
# Usage: examples/go/run.sh [EMULATOR_BINARY]
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
emulator=${1:-$root/target/release/fleetprov-emulator}
for f in "$root/target/release/libfleetprov.so" "$emulator"; do
    if [ ! -e "$f" ]; then
        echo "run.sh: $f is missing; run make and cargo build --release -p fleetprov-emulator" >&2
        exit 1
    fi
done
# Never let `go` fetch another toolchain: build with the one installed.
export GOTOOLCHAIN=local

. "$root/c_examples/emulator.sh"
. "$root/examples/check_provision.sh"
emulator_workdir go

echo "== go vet, go build"
(cd "$here" && go vet -tags fleetprov_intree ./... && go build -tags fleetprov_intree -o "$work/provision" .)

state="$work/state"
# Any template's topics allowed: one run names a template the emulator does not serve.
emulator_start "$emulator" "$state" "$work/ready" --quiet \
  --claim-policy "$root/emulator/policies/claim-policy-any-template.json"
set -- --endpoint localhost --port "$emulator_port" --ca_file "$state/ca.pem" \
    --cert "$state/claim-cert.pem" --key "$state/claim-key.pem"

# provision_thing SERIAL NAME [FLAGS...]: runs the example and checks that it exited 0, printed
# the thing, and printed no key material. (Output goes through a file: a pipe into tee would
# hide the exit status from POSIX sh.)
provision_thing() {
    serial=$1 out="$work/$2.out" status=0
    shift 2
    "$work/provision" "$@" --template_name FleetTemplate \
        --template_parameters "{\"SerialNumber\":\"$serial\",\"DeviceLocation\":\"Seattle\"}" \
        >"$out" 2>&1 || status=$?
    check_provision "$serial" "$status" "$out" "ThingPrefix_$serial\$"
}

echo
echo "== CreateKeysAndCertificate + RegisterThing"
provision_thing 1 keys "$@"

echo
echo "== CreateCertificateFromCsr + RegisterThing"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=go-device \
    -keyout "$work/device.key" -out "$work/device.csr" 2>/dev/null
provision_thing 2 csr "$@" --csr "$work/device.csr"

echo
echo "== RegisterThing with an unknown template: must fail with the service's error"
status=0
"$work/provision" "$@" --template_name NoSuchTemplate >"$work/bad.out" 2>&1 || status=$?
cat "$work/bad.out"
if [ "$status" -ne 1 ] || ! grep -q "RegisterThing rejected: .*errorCode=" "$work/bad.out"; then
    echo "run.sh: expected exit 1 and a rejection, got exit $status" >&2
    exit 1
fi

echo
echo "run.sh: all steps succeeded"
