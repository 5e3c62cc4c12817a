#!/usr/bin/env bash
# What a user sees running their own program under valgrind against the release library, with
# nothing but the installed share/fleetprov/fleetprov.supp: `make install` into a temporary
# prefix, the demo built against it with pkg-config, then both flows of c_examples/run_demo.sh
# (CreateKeysAndCertificate, then CreateCertificateFromCsr) under memcheck. Twice: linked to the
# stripped libfleetprov.so (no function names for valgrind) and to libfleetprov.a (names). Every
# run must show 0 errors and 0 bytes definitely lost; the suppressions used are printed.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/lib.sh
need_packages make gcc binutils pkgconf valgrind openssl

fail() { echo "valgrind_user: $*" >&2; exit 1; }

make all emulator
work=$(mktemp -d "${TMPDIR:-/tmp}/fleetprov-valgrind-user.XXXXXX")
trap 'rm -rf "$work"' EXIT
prefix="$work/prefix"
make install PREFIX="$prefix" >/dev/null
supp="$prefix/share/fleetprov/fleetprov.supp"
so=$(readlink -f "$prefix/lib/libfleetprov.so.0")
# Stripped: no static symbol table, only the exported fp_* symbols. Valgrind cannot name a
# frame of the library's own code, which is why the suppressions match the object.
sections=$(readelf -S "$so")
if grep -q '\.symtab' <<<"$sections"; then
    fail "$so is not stripped"
fi

export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
cflags=(-std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -pedantic -Werror -O2 -g)
# shellcheck disable=SC2046 # pkg-config's output is a list of words
cc "${cflags[@]}" $(pkg-config --cflags fleetprov) -o "$work/demo-shared" \
    c_examples/fleet_provisioning.c $(pkg-config --libs fleetprov) -Wl,-rpath,"$prefix/lib" -pthread
grep -q "=> $prefix/lib/libfleetprov.so.0" <<<"$(ldd "$work/demo-shared")" ||
    fail "the demo does not load the installed library"
# Linked statically, the library's code is in the program with its symbols (the archive is not
# stripped): this exercises the suppressions that name ring's and rustls's functions.
# shellcheck disable=SC2046
cc "${cflags[@]}" $(pkg-config --cflags fleetprov-static) -o "$work/demo-static" \
    c_examples/fleet_provisioning.c $(pkg-config --libs fleetprov-static) -pthread

for kind in shared static; do
    echo "--- the demo ($kind library) under valgrind, both flows"
    logs="$work/logs-$kind"
    mkdir "$logs"
    # run_demo.sh runs its first argument as the demo: each run goes under memcheck, one log each.
    cat >"$work/run-$kind" <<WRAP
#!/bin/sh
exec timeout -k 5 900 valgrind --error-exitcode=1 --leak-check=full \\
    --errors-for-leak-kinds=definite --show-leak-kinds=definite --num-callers=40 \\
    --gen-suppressions=all -v --suppressions="$supp" --log-file="$logs/vg.%p" \\
    "$work/demo-$kind" "\$@"
WRAP
    chmod +x "$work/run-$kind"
    t0=$(date +%s)
    sh c_examples/run_demo.sh "$work/run-$kind" target/release/fleetprov-emulator
    echo "the five demo runs under valgrind in $(( $(date +%s) - t0 )) s"

    set -- "$logs"/vg.*
    [ $# -eq 5 ] || fail "expected 5 valgrind logs (keys flow, CSR flow, identity store: provision, reuse and rotation), got $#"
    for log in "$@"; do
        grep -q "ERROR SUMMARY: 0 errors" "$log" || { cat "$log"; fail "memcheck errors in $log"; }
        lost=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$log" | tr -d ,)
        [ "${lost:-0}" -eq 0 ] || { cat "$log"; fail "$lost bytes definitely lost in $log"; }
        ! grep -q "PRIVATE KEY" "$log" || fail "a private key in $log"
        # -v lists the suppressions used: "used_suppression: COUNT NAME FILE:LINE".
        echo "$kind $(basename "$log"): 0 errors, 0 bytes definitely lost; suppressed:"
        grep 'used_suppression:' "$log" | sed 's/^--[0-9]*-- */  /' || echo "  (none)"
    done
done
echo "--- the suppressions still let a user's own bug through"
# An uninitialised port handed to the library from the program's main thread: memcheck must
# report the branch on it inside libfleetprov.so (a few library frames on the user's stack).
cat >"$work/bug.c" <<'EOF_C'
#include <stdint.h>
#include <stdlib.h>
#include "fleetprov.h"
int main(void) {
    fp_client_options *o = NULL;
    uint16_t *port = malloc(sizeof *port); /* never written */
    int r;
    if (fp_client_options_new("localhost", &o) != FP_OK) return 2;
    r = fp_client_options_set_port(o, *port) == FP_OK;
    fp_client_options_free(o);
    free(port);
    return r;
}
EOF_C
# shellcheck disable=SC2046
cc -std=c11 -O0 -g $(pkg-config --cflags fleetprov) -o "$work/bug" "$work/bug.c" \
    $(pkg-config --libs fleetprov) -Wl,-rpath,"$prefix/lib"
valgrind --suppressions="$supp" "$work/bug" 2>"$work/bug.log" || true
grep -q "ERROR SUMMARY: 1 errors" "$work/bug.log" || { cat "$work/bug.log"; fail "the user's bug was hidden"; }
grep -q "fp_client_options_set_port" <<<"$(grep -A1 "Conditional jump" "$work/bug.log")" ||
    { cat "$work/bug.log"; fail "unexpected report for the user's bug"; }
echo "reported: $(grep -A1 'Conditional jump' "$work/bug.log" | tail -1 | sed 's/^==[0-9]*== *//')"
echo "valgrind_user: clean in both flows, shared and static"
