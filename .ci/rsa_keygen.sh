#!/usr/bin/env bash
# The optional RSA-2048 device keys (cargo feature rsa-keygen, off in the default build):
# generation, the CSR, and provisioning with such a key against the emulator.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -p fleetprov --features rsa-keygen --lib keygen
cargo test -p fleetprov --features rsa-keygen --test provision service_keys
