#!/usr/bin/env bash
# Cross builds for the ARM Linux boards devices ship on: `make TARGET=...` for
# aarch64-unknown-linux-gnu and armv7-unknown-linux-gnueabihf (rustup targets, Debian's cross
# compilers), then the demo of each target, under qemu-user, provisions against the emulator
# running natively on this machine, in both flows (c_examples/run_demo.sh: CreateKeysAndCertificate,
# then CreateCertificateFromCsr). Prints the stripped library's size per target.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/lib.sh
need_packages make gcc openssl qemu-user-static binutils \
    gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross

fail() { echo "cross: $*" >&2; exit 1; }

# TRIPLE GNU-PREFIX QEMU ELF-MACHINE
targets=(
    "aarch64-unknown-linux-gnu aarch64-linux-gnu qemu-aarch64-static AArch64"
    "armv7-unknown-linux-gnueabihf arm-linux-gnueabihf qemu-arm-static ARM"
)
installed=$(rustup target list --installed)
for t in "${targets[@]}"; do
    read -r triple _ _ _ <<<"$t"
    grep -qx "$triple" <<<"$installed" || rustup target add "$triple"
done

make emulator
work=$(mktemp -d "${TMPDIR:-/tmp}/fleetprov-cross.XXXXXX")
trap 'rm -rf "$work"' EXIT
sizes=()
for t in "${targets[@]}"; do
    read -r triple gnu qemu machine <<<"$t"
    echo "--- make TARGET=$triple"
    t0=$(date +%s)
    make all TARGET="$triple"
    echo "built in $(( $(date +%s) - t0 )) s"
    so="target/$triple/release/libfleetprov.so"
    demo="build/$triple/fleet_provisioning"
    for f in "$so" "$demo" "build/$triple/minimal"; do
        grep -q "Machine: *$machine" <<<"$(readelf -h "$f")" || fail "$f is not an $machine binary"
    done
    grep -q '(SONAME).*\[libfleetprov.so.0\]' <<<"$(readelf -d "$so")" || fail "$so has no SONAME"
    # The release profile strips the library; strip it again to show nothing is left to strip.
    "$gnu-strip" -o "$work/$triple.so" "$so"
    size=$(stat -c %s "$so")
    [ "$(stat -c %s "$work/$triple.so")" -eq "$size" ] || fail "$so was not stripped"
    sizes+=("$triple: $size bytes")

    echo "--- $triple demo under $qemu against the emulator on this machine"
    command -v "$qemu" >/dev/null || fail "$qemu is missing"
    # run_demo.sh runs its first argument as the demo: a wrapper that starts it under qemu-user,
    # with the target's C library (Debian's cross libc) as the root for its loader.
    wrapper="$work/demo-$triple"
    printf '#!/bin/sh\nexec %s -L /usr/%s %s "$@"\n' "$qemu" "$gnu" "$PWD/$demo" >"$wrapper"
    chmod +x "$wrapper"
    t0=$(date +%s)
    sh c_examples/run_demo.sh "$wrapper" target/release/fleetprov-emulator
    echo "ran in $(( $(date +%s) - t0 )) s"
done
echo "--- stripped libfleetprov.so per target"
printf '%s\n' "${sizes[@]}" "x86_64-unknown-linux-gnu: $(stat -c %s target/release/libfleetprov.so) bytes"
