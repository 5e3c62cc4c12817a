#!/usr/bin/env bash
# Installs what `cargo test --workspace` needs beyond the Rust toolchain, on Debian or Ubuntu,
# as root (or through sudo): a C compiler and binutils for the C programs the tests build,
# OpenSSL's headers (the C signer test), mosquitto and its clients (interoperability), SoftHSM2
# (PKCS#11 keys), and Python 3 with cbor2 (decodes the emulator's CBOR replies).
# Installs only what is missing; run by `make test-deps` and `make test`.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

packages=(gcc g++ make binutils pkg-config libssl-dev openssl mosquitto mosquitto-clients softhsm2
          ca-certificates)
command -v python3 >/dev/null || packages+=(python3 python3-cbor2)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}"
fi

# cbor2 for whichever python3 is first on PATH (Debian's, or one from pyenv).
if ! python3 -c 'import cbor2' 2>/dev/null; then
  python3 -m pip install --quiet cbor2 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages cbor2 2>/dev/null \
    || { as_root apt-get update -qq &&
         as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-cbor2; }
fi
python3 -c 'import cbor2' || { echo "python3 cannot import cbor2 after installing it" >&2; exit 1; }
command -v softhsm2-util >/dev/null || { echo "softhsm2-util is missing after install" >&2; exit 1; }
command -v mosquitto_rr >/dev/null || { echo "mosquitto_rr is missing after install" >&2; exit 1; }
echo "test prerequisites present"
