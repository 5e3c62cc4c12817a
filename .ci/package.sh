#!/usr/bin/env bash
# The library as a C user gets it from `make install`: installs into a temporary prefix, checks
# the SONAME, the links and the native-libraries line, builds c_examples/minimal.c against the
# installed files three ways (pkg-config shared, pkg-config static, CMake; CMake's static variant
# too), runs each against the emulator, checks that the CMake package survives a move of the
# tree, then that `make uninstall` leaves none of our files in the prefix.
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/lib.sh
need_packages make gcc binutils pkgconf cmake

fail() { echo "package: $*" >&2; exit 1; }

make all emulator
. c_examples/emulator.sh
emulator_workdir package
prefix="$work/prefix"
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
major=${version%%.*}

echo "--- native libraries of the static link (rustc --print native-static-libs)"
native=$(cat target/release/fleetprov-native-static-libs)
[ -n "$native" ] || fail "rustc printed no native-static-libs"
echo "rustc: $native"
# Every static link line of the README ends with exactly what rustc printed.
documented=$(grep -E 'libfleetprov\.a( |$)' README.md | grep -E ' -l[a-z_]+' || true)
[ -n "$documented" ] || fail "README.md documents no static link line"
while IFS= read -r line; do
    case "$line" in
        *"libfleetprov.a $native") echo "README: ok: $line" ;;
        *) fail "README.md's static link line differs from rustc's native-static-libs ($native): $line" ;;
    esac
done <<<"$documented"

echo "--- make install PREFIX=$prefix"
make install PREFIX="$prefix"
lib="$prefix/lib"
soname=$(readelf -d "$lib/libfleetprov.so.$version" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
echo "SONAME: $soname"
[ "$soname" = "libfleetprov.so.$major" ] || fail "SONAME is '$soname', expected libfleetprov.so.$major"
[ "$(readlink "$lib/libfleetprov.so.$major")" = "libfleetprov.so.$version" ] || fail "bad libfleetprov.so.$major link"
[ "$(readlink "$lib/libfleetprov.so")" = "libfleetprov.so.$major" ] || fail "bad libfleetprov.so link"
cmp libfleetprov/include/fleetprov.h "$prefix/include/fleetprov.h"
[ -s "$prefix/share/fleetprov/fleetprov.supp" ] || fail "suppression file not installed"

export PKG_CONFIG_PATH="$lib/pkgconfig"
# pkg-config prints Libs, then Libs.private (and a trailing blank, dropped by the word split).
# shellcheck disable=SC2046,SC2005
words() { echo $("$@"); }
[ "$(words pkg-config --static --libs fleetprov)" = "-L$lib -lfleetprov $native" ] ||
    fail "fleetprov.pc's Libs.private is not rustc's list: $(pkg-config --static --libs fleetprov)"
[ "$(words pkg-config --libs fleetprov-static)" = "$lib/libfleetprov.a $native" ] ||
    fail "fleetprov-static.pc: $(pkg-config --libs fleetprov-static)"
[ "$(pkg-config --modversion fleetprov)" = "$version" ] || fail "fleetprov.pc's version"

cflags=(-std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -pedantic -Werror -O2)
bin="$work/bin"
mkdir -p "$bin"
echo "--- pkg-config, shared"
# shellcheck disable=SC2046 # pkg-config's output is a list of words
cc "${cflags[@]}" $(pkg-config --cflags fleetprov) -o "$bin/minimal-pc-shared" c_examples/minimal.c \
    $(pkg-config --libs fleetprov) -Wl,-rpath,"$lib" -pthread
echo "--- pkg-config, static"
# shellcheck disable=SC2046
cc "${cflags[@]}" $(pkg-config --cflags fleetprov-static) -o "$bin/minimal-pc-static" \
    c_examples/minimal.c $(pkg-config --libs fleetprov-static) -pthread
for kind in shared static; do
    echo "--- CMake, find_package(fleetprov CONFIG), $kind"
    static=OFF
    [ "$kind" = static ] && static=ON
    cmake -S libfleetprov/cmake/consumer -B "$work/cmake-$kind" -DCMAKE_PREFIX_PATH="$prefix" \
        -DFLEETPROV_USE_STATIC_LIBS=$static -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$work/cmake-$kind"
    cp "$work/cmake-$kind/minimal" "$bin/minimal-cmake-$kind"
done

# The shared builds load the installed library through its SONAME; the static ones none.
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(libfleetprov.*\)\]/\1/p'; }
for kind in shared static; do
    for how in pc cmake; do
        exe="$bin/minimal-$how-$kind"
        n=$(needed "$exe")
        if [ "$kind" = shared ]; then
            [ "$n" = "libfleetprov.so.$major" ] || fail "$exe needs '$n'"
            grep -q "libfleetprov.so.$major => $lib/libfleetprov.so.$major" <<<"$(ldd "$exe")" ||
                fail "$exe does not load the installed library: $(ldd "$exe")"
        else
            [ -z "$n" ] || fail "$exe is static but needs '$n'"
        fi
    done
done

echo "--- each build provisions against the emulator"
state="$work/state"
emulator_start target/release/fleetprov-emulator "$state" "$work/ready" --quiet
serial=100
for exe in "$bin"/minimal-*; do
    serial=$((serial + 1))
    out="$work/out.$serial"
    status=0
    timeout -k 5 120 "$exe" localhost "$emulator_port" "$state/ca.pem" "$state/claim-cert.pem" \
        "$state/claim-key.pem" "$serial" >"$out" 2>&1 || status=$?
    cat "$out"
    [ "$status" -eq 0 ] || fail "$(basename "$exe") exited $status"
    grep -qx "registered ThingPrefix_$serial" "$out" || fail "$(basename "$exe") did not register"
    ! grep -q "PRIVATE KEY" "$out" || fail "$(basename "$exe") printed a private key"
    echo "$(basename "$exe"): ok"
done
emulator_stop
target/release/fleetprov-emulator things --state-dir "$state" >"$work/things"
for s in $(seq 101 "$serial"); do
    grep -q "ThingPrefix_$s\"" "$work/things" || fail "ThingPrefix_$s is not in the emulator's registry"
done

echo "--- the CMake package still works once the installed tree is moved (e.g. into a sysroot)"
mv "$prefix" "$work/moved"
cmake -S libfleetprov/cmake/consumer -B "$work/cmake-moved" -DCMAKE_PREFIX_PATH="$work/moved" >/dev/null
cmake --build "$work/cmake-moved" >/dev/null
grep -q "libfleetprov.so.$major => $work/moved/lib/" <<<"$(ldd "$work/cmake-moved/minimal")" ||
    fail "the moved CMake package does not point at its own directory: $(ldd "$work/cmake-moved/minimal")"
mv "$work/moved" "$prefix"

echo "--- make uninstall"
make uninstall PREFIX="$prefix"
left=$(find "$prefix" ! -type d)
[ -z "$left" ] || fail "make uninstall left: $left"
echo "package: all checks passed ($((serial - 100)) programs provisioned)"
