#!/usr/bin/env bash
# Provisioning through a broker nobody here wrote: Debian's mosquitto with mutual TLS on loopback,
# the emulator attached to it as an ordinary MQTT client (`fleetprov-emulator respond`), and the
# C demo (the library) provisioning through it in both flows.
set -euo pipefail
cd "$(dirname "$0")/.."
EMU=target/release/fleetprov-emulator
DEMO=build/fleet_provisioning
[ -x "$EMU" ] && [ -x "$DEMO" ] || make all emulator >/dev/null
command -v mosquitto >/dev/null || { echo "mosquitto is not installed" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

state="$work/state"
# Creates the CA, the server certificate and the claim; the responder gets a certificate of its own.
"$EMU" claim --state-dir "$state" --out-cert "$work/responder-cert.pem" --out-key "$work/responder-key.pem" >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/mosquitto.conf" <<CONF
# The key files are 0600 and owned by root; keep mosquitto's privileges for this loopback test.
user root
listener $port 127.0.0.1
cafile $state/ca.pem
certfile $state/server-cert.pem
keyfile $state/server-key.pem
require_certificate true
use_identity_as_username true
allow_anonymous true
log_dest stderr
CONF
mosquitto -c "$work/mosquitto.conf" 2>"$work/mosquitto.log" &
pids+=($!)
# Wait (bounded) until mosquitto accepts TLS connections.
for _ in $(seq 1 100); do
  if mosquitto_pub -h localhost -p "$port" --cafile "$state/ca.pem" --cert "$work/responder-cert.pem" \
       --key "$work/responder-key.pem" -t probe -m x 2>/dev/null; then ready=1; break; fi
  sleep 0.1
done
[ "${ready:-0}" = 1 ] || { echo "mosquitto did not come up" >&2; cat "$work/mosquitto.log" >&2; exit 1; }

"$EMU" respond --host localhost --port "$port" --ca "$state/ca.pem" --cert "$work/responder-cert.pem" \
  --key "$work/responder-key.pem" --state-dir "$state" --ready-file "$work/responder.ready" \
  >"$work/responder.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do [ -f "$work/responder.ready" ] && break; sleep 0.1; done
[ -f "$work/responder.ready" ] || { echo "responder did not subscribe" >&2; cat "$work/responder.log" >&2; exit 1; }

common=(--endpoint localhost --port "$port" --ca_file "$state/ca.pem" --cert "$state/claim-cert.pem"
        --key "$state/claim-key.pem" --template_name FleetTemplate)

echo "--- keys flow through mosquitto"
"$DEMO" "${common[@]}" --template_parameters '{"SerialNumber":"101","DeviceLocation":"Seattle"}' \
  --identity_file "$work/device-101.pem" | tee "$work/keys.out"
grep -q 'ThingPrefix_101' "$work/keys.out"

echo "--- CSR flow through mosquitto"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=interop-device" \
  -keyout "$work/device.key" -out "$work/device.csr" 2>/dev/null
"$DEMO" "${common[@]}" --csr "$work/device.csr" --template_parameters '{"SerialNumber":"102","DeviceLocation":"Seattle"}' | tee "$work/csr.out"
grep -q 'ThingPrefix_102' "$work/csr.out"

"$EMU" things --state-dir "$state" | tee "$work/things.out"
grep -q 'ThingPrefix_101' "$work/things.out"
grep -q 'ThingPrefix_102' "$work/things.out"
echo "mosquitto interop: both flows provisioned"
