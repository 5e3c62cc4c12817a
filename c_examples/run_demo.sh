#!/bin/sh
# Runs the C demo end to end against a local emulator on a loopback port: the
# CreateKeysAndCertificate flow, then the CreateCertificateFromCsr flow with a CSR made on the
# spot, then the identity store (--output_dir): a first run that provisions with a key made on
# the device and verifies the new identity, a second that reuses it, a third that rotates it
# (a new certificate through the device's own connection, no claim); then lists the things.
# Exits non-zero if any step fails; the emulator is stopped on every exit path.
#
# The emulator serves the sample template and the rotation template
# (emulator/templates/FleetRotationTemplate.json, whose device policy allows the device to call
# CreateCertificateFromCsr and RegisterThing through it), and issues device certificates valid
# ten minutes, as a certificate provider may.
#
# Usage: c_examples/run_demo.sh [DEMO_BINARY] [EMULATOR_BINARY]
set -eu

demo=${1:-build/fleet_provisioning}
emulator=${2:-target/release/fleetprov-emulator}
for bin in "$demo" "$emulator"; do
    if [ ! -x "$bin" ]; then
        echo "run_demo: $bin is missing; run make first" >&2
        exit 1
    fi
done

. "$(dirname "$0")/emulator.sh"
emulator_workdir demo

state="$work/state"
templates="$(dirname "$0")/../emulator/templates"
emulator_start "$emulator" "$state" "$work/ready" --quiet --certificate-validity 10m \
    --template "FleetTemplate=$templates/FleetTemplate.json" \
    --template "FleetRotationTemplate=$templates/FleetRotationTemplate.json"
port=$emulator_port

common="--endpoint localhost --port $port --ca_file $state/ca.pem --cert $state/claim-cert.pem --key $state/claim-key.pem --template_name FleetTemplate"

echo "== CreateKeysAndCertificate + RegisterThing (MQTT 5), certificate and key kept in a file"
# shellcheck disable=SC2086 # $common is a list of words on purpose
"$demo" $common --template_parameters '{"SerialNumber":"1","DeviceLocation":"Seattle"}' \
    --identity_file "$work/device-1.pem"

echo
echo "== CreateCertificateFromCsr + RegisterThing (MQTT 3.1.1)"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=fleetprov-demo-device-2" -keyout "$work/device-2.key" -out "$work/device-2.csr" \
    2>/dev/null
# shellcheck disable=SC2086
# The same parameters again: the template's OverrideSettings apply to the existing thing, which
# ends up with both certificates attached.
"$demo" $common --template_parameters '{"SerialNumber":"1","DeviceLocation":"Seattle"}' \
    --csr "$work/device-2.csr" --mqtt_version 3

echo
echo "== Identity store, first run: provision (EC P-256 key made here), save, verify"
# shellcheck disable=SC2086
"$demo" $common --template_parameters '{"SerialNumber":"3","DeviceLocation":"Seattle"}' \
    --output_dir "$work/device-3" | tee "$work/run1"
grep -q "^Provisioned, saved and verified" "$work/run1"

echo
echo "== Identity store, second run: reuse, verify by connecting, no provisioning"
# shellcheck disable=SC2086
"$demo" $common --template_parameters '{"SerialNumber":"3","DeviceLocation":"Seattle"}' \
    --output_dir "$work/device-3" | tee "$work/run2"
if ! grep -q "^Reused the stored identity" "$work/run2" || grep -q "(claim)" "$work/run2"; then
    echo "run_demo: the second run did not reuse the stored identity" >&2
    exit 1
fi

echo
echo "== Identity store, third run: rotate (--rotate_before 3600: the ten-minute certificate is"
echo "   inside a one-hour window at once), through FleetRotationTemplate, without the claim"
# shellcheck disable=SC2086
"$demo" $common --template_parameters '{"SerialNumber":"3","DeviceLocation":"Seattle"}' \
    --output_dir "$work/device-3" --rotate_before 3600 --rotation_template FleetRotationTemplate \
    | tee "$work/run3"
if ! grep -q "^Rotated the stored identity" "$work/run3" || grep -q "(claim)" "$work/run3"; then
    echo "run_demo: the third run did not rotate the stored identity with itself" >&2
    exit 1
fi
old=$(sed -n 's/^Certificate id: //p' "$work/run2")
new=$(sed -n 's/^Certificate id: //p' "$work/run3")
if [ -z "$new" ] || [ "$new" = "$old" ] || ! grep -q "^Replaced certificate id: $old" "$work/run3"; then
    echo "run_demo: the rotated certificate is not new or the replaced one is not reported" >&2
    exit 1
fi

echo
echo "== Things registered in the emulator"
"$emulator" things --state-dir "$state" | tee "$work/things"
if ! grep -q "ThingPrefix_1" "$work/things"; then
    echo "run_demo: ThingPrefix_1 is not registered" >&2
    exit 1
fi
if ! grep -q "$new" "$work/things"; then
    echo "run_demo: ThingPrefix_3 does not hold the rotated certificate" >&2
    exit 1
fi
echo
echo "run_demo: all steps succeeded"
