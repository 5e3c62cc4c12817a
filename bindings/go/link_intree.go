//go:build fleetprov_intree

package fleetprov

// The library of the checkout this package sits in: the header in libfleetprov/include/, the library built
// by `make` in target/release, found at run time through the rpath.

// #cgo CFLAGS: -I${SRCDIR}/../../libfleetprov/include
// #cgo LDFLAGS: -L${SRCDIR}/../../target/release -lfleetprov -Wl,-rpath,${SRCDIR}/../../target/release
import "C"
