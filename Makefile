# `make test`  installs what the tests need (`make test-deps`, Debian packages and cbor2) and runs
#             the whole test suite (`cargo test --workspace`).
# `make`      builds the library (release) and the C demo at build/fleet_provisioning.
# `make demo` also builds the emulator and runs the demo against it on a loopback port.
# `make install PREFIX=/usr/local DESTDIR=` installs the header, the shared and static libraries,
#             pkg-config files, a CMake package and the valgrind suppressions; `make uninstall`
#             removes exactly those files again.
# `make TARGET=aarch64-unknown-linux-gnu` (or armv7-unknown-linux-gnueabihf) cross-builds the
#             library and the C programs into target/TARGET/ and build/TARGET/.
#
# The demo links to the shared library (target/release/libfleetprov.so) with an rpath relative
# to the binary ($ORIGIN/../target/...): the binary stays small, it runs from anywhere without
# LD_LIBRARY_PATH, and it exercises the same .so a C user ships.

CARGO   ?= cargo
CC      ?= cc
PROFILE ?= release
CFLAGS  ?= -O2 -g
# Empty for the host; a Rust target triple for a cross build.
TARGET  ?=

ifeq ($(PROFILE),release)
CARGO_PROFILE_FLAG := --release
else
CARGO_PROFILE_FLAG := --profile $(PROFILE)
endif
# The emulator is built for the build machine: without --target.
HOST_CARGO_FLAGS := $(CARGO_PROFILE_FLAG)
# Cargo names the dev profile's directory "debug".
PROFILE_DIR := $(if $(filter dev,$(PROFILE)),debug,$(PROFILE))

# The version, from the workspace's Cargo.toml ([workspace.package]); the SONAME carries its
# major number.
VERSION := $(shell sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
SOMAJOR := $(firstword $(subst ., ,$(VERSION)))

ifeq ($(TARGET),)
TARGET_DIR := target/$(PROFILE_DIR)
BUILD_DIR  := build
TARGET_CC  := $(CC)
CARGO_ENV  :=
else
# Debian's cross compilers (gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf); TARGET_CC=... for
# another. They link the library (cargo's linker, set through the environment so no cargo
# configuration is needed), compile ring's C and assembly (cc-rs), and build the C programs.
CROSS_CC_aarch64-unknown-linux-gnu     := aarch64-linux-gnu-gcc
CROSS_CC_armv7-unknown-linux-gnueabihf := arm-linux-gnueabihf-gcc
TARGET_CC ?= $(CROSS_CC_$(TARGET))
ifeq ($(TARGET_CC),)
$(error no C cross compiler known for TARGET=$(TARGET): pass TARGET_CC=...)
endif
TARGET_DIR := target/$(TARGET)/$(PROFILE_DIR)
BUILD_DIR  := build/$(TARGET)
CARGO_ENV  := CARGO_TARGET_$(shell echo '$(TARGET)' | tr 'a-z-' 'A-Z_')_LINKER=$(TARGET_CC) \
              CC_$(subst -,_,$(TARGET))=$(TARGET_CC)
CARGO_PROFILE_FLAG += --target $(TARGET)
endif
# From the C programs' directory back to the repository root, for their rpath.
RPATH_UP := $(if $(TARGET),../..,..)

# The C library crate: its header, pkg-config and CMake templates.
CLIB        := libfleetprov
INCLUDE     := $(CLIB)/include
HEADER      := $(INCLUDE)/fleetprov.h
DEMO_CFLAGS := -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -pedantic -Werror
LIB         := $(TARGET_DIR)/libfleetprov.so
STATICLIB   := $(TARGET_DIR)/libfleetprov.a
# What rustc says a static link of libfleetprov.a needs (--print native-static-libs), written by
# the build of the library itself (see $(LIB)); the .pc and the CMake package take it from here.
NATIVE_LIBS := $(TARGET_DIR)/fleetprov-native-static-libs
# The emulator always runs on the build machine.
EMULATOR    := target/$(PROFILE_DIR)/fleetprov-emulator
DEMO        := $(BUILD_DIR)/fleet_provisioning
MINIMAL     := $(BUILD_DIR)/minimal
SOAK        := $(BUILD_DIR)/soak
SOAK_CYCLES ?= 10000
FLEET       := $(BUILD_DIR)/fleet
FLEET_N     ?= 1000
FLEET_ROUNDS ?= 1
LINK_LIB     = -L$(TARGET_DIR) -lfleetprov -Wl,-rpath,'$$ORIGIN/$(RPATH_UP)/$(TARGET_DIR)' -pthread

.PHONY: all demo emulator soak fleet bench clean install uninstall test test-deps FORCE

all: $(DEMO) $(MINIMAL)

# Cargo decides whether anything needs rebuilding; the .so only changes when it did.
# The library crate (libfleetprov/, package fleetprov-ffi) makes only the C libraries, so this is
# the library `cargo build --release -p fleetprov-ffi` makes. `cargo rustc` rather than
# `cargo build` so rustc writes the native libraries of the static library to $(NATIVE_LIBS)
# whenever it builds it (a fresh build leaves the file as it was).
# The library's SONAME is libfleetprov.so.0 (build.rs): programs linked to it here look for that
# name in their rpath directory, so it is made next to the .so (cargo makes only the .so).
$(LIB): FORCE
	$(CARGO_ENV) $(CARGO) rustc $(CARGO_PROFILE_FLAG) -p fleetprov-ffi --lib -- \
		--print native-static-libs=$(CURDIR)/$(NATIVE_LIBS)
	@test -s $(NATIVE_LIBS) || { echo "$(NATIVE_LIBS) is missing: touch libfleetprov/src/lib.rs and rerun" >&2; exit 1; }
	ln -sf libfleetprov.so $(TARGET_DIR)/libfleetprov.so.$(SOMAJOR)

$(EMULATOR): FORCE
	$(CARGO) build $(HOST_CARGO_FLAGS) -p fleetprov-emulator

$(DEMO): c_examples/fleet_provisioning.c $(HEADER) $(LIB)
	@mkdir -p $(BUILD_DIR)
	$(TARGET_CC) $(DEMO_CFLAGS) $(CFLAGS) -I$(INCLUDE) -o $@ c_examples/fleet_provisioning.c $(LINK_LIB)

# The README's smallest example, built so it keeps compiling.
$(MINIMAL): c_examples/minimal.c $(HEADER) $(LIB)
	@mkdir -p $(BUILD_DIR)
	$(TARGET_CC) $(DEMO_CFLAGS) $(CFLAGS) -I$(INCLUDE) -o $@ c_examples/minimal.c $(LINK_LIB)

emulator: $(EMULATOR)

test-deps:
	bash scripts/install-test-deps.sh

test: test-deps
	$(CARGO) test --workspace --no-fail-fast

demo: $(DEMO) $(EMULATOR)
	sh c_examples/run_demo.sh $(DEMO) $(EMULATOR)

# `make soak`: SOAK_CYCLES (default 10000) create + register cycles in one process against an
# emulator in another; fails if a cycle fails or RSS or open descriptors grow (bench/soak.c).
$(SOAK): bench/soak.c $(HEADER) $(LIB)
	@mkdir -p $(BUILD_DIR)
	$(TARGET_CC) $(DEMO_CFLAGS) $(CFLAGS) -I$(INCLUDE) -o $@ bench/soak.c $(LINK_LIB)

soak: $(SOAK) $(EMULATOR)
	SOAK_CYCLES=$(SOAK_CYCLES) sh bench/soak.sh $(SOAK) $(EMULATOR)

# `make fleet`: FLEET_N (default 1000) devices provisioned at once from one process, and the
# same number only connecting (the floor), against an emulator in another (bench/fleet.c).
$(FLEET): bench/fleet.c $(HEADER) $(LIB)
	@mkdir -p $(BUILD_DIR)
	$(TARGET_CC) $(DEMO_CFLAGS) $(CFLAGS) -I$(INCLUDE) -o $@ bench/fleet.c $(LINK_LIB)

fleet: $(FLEET) $(EMULATOR)
	FLEET_N=$(FLEET_N) FLEET_ROUNDS=$(FLEET_ROUNDS) sh bench/fleet.sh $(FLEET) $(EMULATOR)

# `make bench`: the demo against mosquitto_rr, and the stripped library's size (bench/measure.sh).
bench:
	bash bench/measure.sh

clean:
	rm -rf build

# --- install ------------------------------------------------------------------------------------
# GNU conventions: PREFIX is where the files will live, DESTDIR a staging root in front of it
# (packaging); the .pc and CMake files name PREFIX's paths.
PREFIX       ?= /usr/local
DESTDIR      ?=
LIBDIR       ?= $(PREFIX)/lib
INCLUDEDIR   ?= $(PREFIX)/include
DATADIR      ?= $(PREFIX)/share
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
CMAKEDIR     ?= $(LIBDIR)/cmake/fleetprov
SUPPDIR      := $(DATADIR)/fleetprov
INSTALL      ?= install

SO_REAL   := libfleetprov.so.$(VERSION)
SO_NAME   := libfleetprov.so.$(SOMAJOR)
# For the CMake version file: a package for another pointer width is not offered to a project.
SIZEOF_VOID_P := $(if $(filter armv7% arm% i686% i586%,$(TARGET)),4,8)

# The CMake package finds its files relative to its own directory, so a prefix copied into a
# board's sysroot (or moved) still works: the paths below PREFIX, and the way up to it.
below_prefix = $(patsubst $(PREFIX)/%,%,$(1))
REL_LIBDIR     := $(call below_prefix,$(LIBDIR))
REL_INCLUDEDIR := $(call below_prefix,$(INCLUDEDIR))
REL_CMAKEDIR   := $(call below_prefix,$(CMAKEDIR))
empty :=
space := $(empty) $(empty)
CMAKEDIR_UP    := $(subst $(space),/,$(foreach c,$(subst /, ,$(REL_CMAKEDIR)),..))

# Every file `make install` creates, relative to DESTDIR; `make uninstall` removes these.
INSTALLED := $(INCLUDEDIR)/fleetprov.h \
	$(LIBDIR)/$(SO_REAL) $(LIBDIR)/$(SO_NAME) $(LIBDIR)/libfleetprov.so $(LIBDIR)/libfleetprov.a \
	$(PKGCONFIGDIR)/fleetprov.pc $(PKGCONFIGDIR)/fleetprov-static.pc \
	$(CMAKEDIR)/fleetprovConfig.cmake $(CMAKEDIR)/fleetprovConfigVersion.cmake \
	$(SUPPDIR)/fleetprov.supp

# @NAME@ placeholders of $(CLIB)/dist/*.pc.in and $(CLIB)/cmake/*.in.
SUBST = sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' \
	-e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' -e 's|@VERSION@|$(VERSION)|g' \
	-e 's|@SOMAJOR@|$(SOMAJOR)|g' -e 's|@SIZEOF_VOID_P@|$(SIZEOF_VOID_P)|g' \
	-e 's|@REL_LIBDIR@|$(REL_LIBDIR)|g' -e 's|@REL_INCLUDEDIR@|$(REL_INCLUDEDIR)|g' \
	-e 's|@CMAKEDIR_UP@|$(CMAKEDIR_UP)|g' \
	-e "s|@NATIVE_STATIC_LIBS@|$$(cat $(NATIVE_LIBS))|g" \
	-e "s|@NATIVE_STATIC_LIBS_CMAKE@|$$(tr -s ' ' ';' < $(NATIVE_LIBS))|g"

install: $(LIB)
	@for d in $(REL_LIBDIR) $(REL_INCLUDEDIR) $(REL_CMAKEDIR); do case $$d in /*) \
		echo "LIBDIR, INCLUDEDIR and CMAKEDIR must be below PREFIX ($$d)" >&2; exit 1;; esac; done
	$(INSTALL) -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR) \
		$(DESTDIR)$(CMAKEDIR) $(DESTDIR)$(SUPPDIR)
	$(INSTALL) -m 644 $(HEADER) $(DESTDIR)$(INCLUDEDIR)/fleetprov.h
	$(INSTALL) -m 755 $(LIB) $(DESTDIR)$(LIBDIR)/$(SO_REAL)
	ln -sf $(SO_REAL) $(DESTDIR)$(LIBDIR)/$(SO_NAME)
	ln -sf $(SO_NAME) $(DESTDIR)$(LIBDIR)/libfleetprov.so
	$(INSTALL) -m 644 $(STATICLIB) $(DESTDIR)$(LIBDIR)/libfleetprov.a
	$(SUBST) $(CLIB)/dist/fleetprov.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/fleetprov.pc
	$(SUBST) $(CLIB)/dist/fleetprov-static.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/fleetprov-static.pc
	$(SUBST) $(CLIB)/cmake/fleetprovConfig.cmake.in > $(DESTDIR)$(CMAKEDIR)/fleetprovConfig.cmake
	$(SUBST) $(CLIB)/cmake/fleetprovConfigVersion.cmake.in > $(DESTDIR)$(CMAKEDIR)/fleetprovConfigVersion.cmake
	$(INSTALL) -m 644 $(CLIB)/dist/fleetprov.supp $(DESTDIR)$(SUPPDIR)/fleetprov.supp

# Removes the installed files, then the two directories that only this package uses.
uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))
	-rmdir $(DESTDIR)$(CMAKEDIR) $(DESTDIR)$(SUPPDIR) 2>/dev/null

FORCE:
