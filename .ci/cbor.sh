#!/usr/bin/env bash
# CBOR replies of the emulator decoded by Python's cbor2 (installed from PyPI here), a decoder
# that neither the library (minicbor) nor the emulator (ciborium) shares code with.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/lib.sh
command -v python3 >/dev/null || need_packages python3 python3-pip
python3 -c 'import cbor2' 2>/dev/null || python3 -m pip install --quiet cbor2 \
  || python3 -m pip install --quiet --break-system-packages cbor2
python3 -c 'import cbor2'
CI=${CI:-true} cargo test -p fleetprov-emulator --test cbor_replies
