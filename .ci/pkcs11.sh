#!/usr/bin/env bash
# The demo with its claim key in a PKCS#11 token (Debian's SoftHSM2, a real PKCS#11 module),
# both flows, and a wrong PIN refused. The PKCS#11 and signer tests of the test suite (make test)
# cover the library itself.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/lib.sh
need_packages softhsm2 libssl-dev
command -v softhsm2-util >/dev/null || { echo "softhsm2-util is missing after install" >&2; exit 1; }

# The demo with the claim key in a token (--pkcs11_lib, AWS's samples' flags), both flows.
make all emulator >/dev/null
module=$(for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*-linux-gnu/softhsm/libsofthsm2.so; do
  [ -f "$m" ] && { echo "$m"; break; }; done)
[ -n "$module" ] || { echo "libsofthsm2.so not found" >&2; exit 1; }
. c_examples/emulator.sh
emulator_workdir pkcs11
mkdir "$work/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$work/tokens" \
  >"$work/softhsm2.conf"
export SOFTHSM2_CONF="$work/softhsm2.conf"
softhsm2-util --init-token --free --label demo --pin 1234 --so-pin 5678 >/dev/null
emulator_start target/release/fleetprov-emulator "$work/state" "$work/ready"
softhsm2-util --import "$work/state/claim-key.pem" --token demo --label claim --id 01 --pin 1234 >/dev/null
hsm=(--endpoint localhost --port "$emulator_port" --ca_file "$work/state/ca.pem"
     --cert "$work/state/claim-cert.pem" --pkcs11_lib "$module" --token_label demo --pin 1234
     --key_label claim --template_name FleetTemplate)
build/fleet_provisioning "${hsm[@]}" --template_parameters '{"SerialNumber":"hsm-1","DeviceLocation":"Seattle"}' \
  --identity_file "$work/hsm-1.pem" | tee "$work/keys.out"
grep -q 'ThingPrefix_hsm-1' "$work/keys.out"
[ "$(stat -c %a "$work/hsm-1.pem")" = 600 ] && grep -q 'PRIVATE KEY' "$work/hsm-1.pem"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=hsm-device" \
  -keyout "$work/device.key" -out "$work/device.csr" 2>/dev/null
build/fleet_provisioning "${hsm[@]}" --csr "$work/device.csr" \
  --template_parameters '{"SerialNumber":"hsm-2","DeviceLocation":"Seattle"}' | tee "$work/csr.out"
grep -q 'ThingPrefix_hsm-2' "$work/csr.out"
# With --output_dir the device key is made in the token too, and a second run reuses it.
build/fleet_provisioning "${hsm[@]}" --output_dir "$work/identity" --device_key_label demo-device \
  --template_parameters '{"SerialNumber":"hsm-3","DeviceLocation":"Seattle"}' | tee "$work/store.out"
grep -q 'the private key stays in the PKCS#11 token' "$work/store.out"
if ls "$work/identity" | grep -q key; then echo "a key file was written" >&2; exit 1; fi
build/fleet_provisioning "${hsm[@]}" --output_dir "$work/identity" --device_key_label demo-device \
  --template_parameters '{"SerialNumber":"hsm-3","DeviceLocation":"Seattle"}' | tee "$work/reuse.out"
grep -q 'Reused the stored identity' "$work/reuse.out"
# A wrong PIN fails the connection (exit 3) with the token's refusal in the message.
if build/fleet_provisioning "${hsm[@]}" --pin 0000 --identity_file "$work/pin.pem" >"$work/pin.out" 2>&1; then
  echo "a wrong PIN was accepted" >&2; exit 1
fi
grep -q 'refused the PIN' "$work/pin.out" || { cat "$work/pin.out" >&2; exit 1; }
echo "demo with a PKCS#11 claim key: both flows provisioned, the device key kept in the token and reused, a wrong PIN refused"
