# `make`      builds the library (release) and the C demo at build/fleet_provisioning.
# `make demo` also builds the emulator and runs the demo against it on a loopback port.
#
# The demo links to the shared library (target/release/libfleetprov.so) with an rpath relative
# to the binary ($ORIGIN/../target/...): the binary stays small, it runs from anywhere without
# LD_LIBRARY_PATH, and it exercises the same .so a C user ships. The static library would also
# need Rust's native dependencies spelled out by hand on the link line.

CARGO   ?= cargo
CC      ?= cc
PROFILE ?= release
CFLAGS  ?= -O2 -g

ifeq ($(PROFILE),release)
CARGO_PROFILE_FLAG := --release
else
CARGO_PROFILE_FLAG := --profile $(PROFILE)
endif
# Cargo names the dev profile's directory "debug".
TARGET_DIR := target/$(if $(filter dev,$(PROFILE)),debug,$(PROFILE))

DEMO_CFLAGS := -std=c11 -D_POSIX_C_SOURCE=200809L -Wall -Wextra -pedantic -Werror
LIB         := $(TARGET_DIR)/libfleetprov.so
EMULATOR    := $(TARGET_DIR)/fleetprov-emulator
DEMO        := build/fleet_provisioning
MINIMAL     := build/minimal
SOAK        := build/soak
SOAK_CYCLES ?= 10000
FLEET       := build/fleet
FLEET_N     ?= 1000

.PHONY: all demo emulator soak fleet bench clean FORCE

all: $(DEMO) $(MINIMAL)

# Cargo decides whether anything needs rebuilding; the .so only changes when it did.
$(LIB): FORCE
	$(CARGO) build $(CARGO_PROFILE_FLAG) -p fleetprov

$(EMULATOR): FORCE
	$(CARGO) build $(CARGO_PROFILE_FLAG) -p fleetprov-emulator

$(DEMO): c_examples/fleet_provisioning.c include/fleetprov.h $(LIB)
	@mkdir -p build
	$(CC) $(DEMO_CFLAGS) $(CFLAGS) -Iinclude -o $@ c_examples/fleet_provisioning.c \
		-L$(TARGET_DIR) -lfleetprov -Wl,-rpath,'$$ORIGIN/../$(TARGET_DIR)' -pthread

# The README's smallest example, built so it keeps compiling.
$(MINIMAL): c_examples/minimal.c include/fleetprov.h $(LIB)
	@mkdir -p build
	$(CC) $(DEMO_CFLAGS) $(CFLAGS) -Iinclude -o $@ c_examples/minimal.c \
		-L$(TARGET_DIR) -lfleetprov -Wl,-rpath,'$$ORIGIN/../$(TARGET_DIR)' -pthread

emulator: $(EMULATOR)

demo: $(DEMO) $(EMULATOR)
	sh c_examples/run_demo.sh $(DEMO) $(EMULATOR)

# `make soak`: SOAK_CYCLES (default 10000) create + register cycles in one process against an
# emulator in another; fails if a cycle fails or RSS or open descriptors grow (bench/soak.c).
$(SOAK): bench/soak.c include/fleetprov.h $(LIB)
	@mkdir -p build
	$(CC) $(DEMO_CFLAGS) $(CFLAGS) -Iinclude -o $@ bench/soak.c \
		-L$(TARGET_DIR) -lfleetprov -Wl,-rpath,'$$ORIGIN/../$(TARGET_DIR)' -pthread

soak: $(SOAK) $(EMULATOR)
	SOAK_CYCLES=$(SOAK_CYCLES) sh bench/soak.sh $(SOAK) $(EMULATOR)

# `make fleet`: FLEET_N (default 1000) devices provisioned at once from one process, and the
# same number only connecting (the floor), against an emulator in another (bench/fleet.c).
$(FLEET): bench/fleet.c include/fleetprov.h $(LIB)
	@mkdir -p build
	$(CC) $(DEMO_CFLAGS) $(CFLAGS) -Iinclude -o $@ bench/fleet.c \
		-L$(TARGET_DIR) -lfleetprov -Wl,-rpath,'$$ORIGIN/../$(TARGET_DIR)' -pthread

fleet: $(FLEET) $(EMULATOR)
	FLEET_N=$(FLEET_N) sh bench/fleet.sh $(FLEET) $(EMULATOR)

# `make bench`: the demo against mosquitto_rr, and the stripped library's size (bench/measure.sh).
bench:
	bash bench/measure.sh

clean:
	rm -rf build

FORCE:
