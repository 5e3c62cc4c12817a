#!/usr/bin/env bash
# The Go and Node.js packages (bindings/go, bindings/node): their test suites against the
# emulator (both flows, rejections, a timeout, cancellations, keys in a SoftHSM2 token), the Go
# package built once more through pkg-config, the TypeScript declarations checked by tsc, then
# the two examples.
# Installs what it needs; a missing tool fails the gate, nothing is skipped (the test suites
# fail instead of skipping when CI is set, which this script sets).
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/lib.sh

need_packages golang-go nodejs openssl pkg-config gcc softhsm2
# Debian packages npm apart; NodeSource's nodejs carries its own.
command -v npm >/dev/null 2>&1 || need_packages npm
export CI="${CI:-1}"
# Never let `go` fetch another toolchain; the Go build cache under HOME, or /tmp without one.
export GOTOOLCHAIN=local
export GOCACHE="${GOCACHE:-${HOME:-/tmp}/.cache/go-build}"

# The library and the emulator the packages load and test against (no-ops when up to date);
# the library as `make` builds it.
make
cargo build --release -p fleetprov-emulator

echo "== Go: gofmt, vet, go test -race (the checkout's library: -tags fleetprov_intree)"
for dir in bindings/go examples/go; do
    unformatted=$(gofmt -l "$dir")
    if [ -n "$unformatted" ]; then
        echo "gofmt: these files need formatting: $unformatted" >&2
        exit 1
    fi
done
(cd bindings/go && go vet -tags fleetprov_intree ./... && go test -race -count=1 -tags fleetprov_intree ./...)

echo "== Go: the default build, flags from pkg-config fleetprov (make install into a scratch prefix)"
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
make install PREFIX="$prefix" >/dev/null
# A build cache of its own: Go's cache does not key the link on pkg-config's -L path, so a
# cache from an earlier run (whose scratch prefix is gone) would link against a missing library.
(cd bindings/go && GOCACHE="$prefix/go-build" PKG_CONFIG_PATH="$prefix/lib/pkgconfig" \
    LD_LIBRARY_PATH="$prefix/lib" go test -count=1 ./...)

echo "== Node.js: npm ci, node --test, tsc"
(cd bindings/node && npm ci --no-audit --no-fund --loglevel=error && npm test && npm run types)

echo "== the examples"
sh examples/go/run.sh
sh examples/node/run.sh
