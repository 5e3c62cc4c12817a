//go:build !fleetprov_intree

package fleetprov

// The installed library (`make install` writes fleetprov.pc). Build with -tags fleetprov_intree
// to use a checkout's libfleetprov/include/ and target/release instead (link_intree.go).

// #cgo pkg-config: fleetprov
import "C"
