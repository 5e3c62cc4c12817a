package fleetprov

// #include <string.h>
// #include "shim.h"
import "C"

import (
	"runtime/cgo"
	"sync/atomic"
	"unsafe"
)

// The library calls back on its own threads. Each callback reaches Go through a C trampoline
// (shim.c) and finds its Go value through a cgo.Handle passed as user_data, so C never holds a
// Go pointer. Callbacks only copy and send on a buffered channel: they never block the
// library's thread.

// liveHandles counts the handles made by newHandle and not yet deleted (for the tests: none
// may be left once a client is closed).
var liveHandles atomic.Int64

func newHandle(v any) cgo.Handle {
	liveHandles.Add(1)
	return cgo.NewHandle(v)
}

func deleteHandle(h cgo.Handle) {
	h.Delete()
	liveHandles.Add(-1)
}

// outcome is an operation's result; its channel has room for it, as the callback runs
// exactly once.
type outcome[T any] struct {
	value T
	err   *Error
}

func send[T any](h C.uintptr_t, o outcome[T]) {
	cgo.Handle(h).Value().(chan outcome[T]) <- o
}

//export fpgoLifecycle
func fpgoLifecycle(h C.uintptr_t, event C.int, e *C.fp_error) {
	var err *Error
	if e != nil {
		err = copyError("connect", e)
	}
	cgo.Handle(h).Value().(*lifecycle).event(event, err)
}

//export fpgoCreateKeys
func fpgoCreateKeys(h C.uintptr_t, r *C.fp_create_keys_response, e *C.fp_error) {
	var o outcome[*KeysAndCertificate]
	if r != nil {
		o.value = &KeysAndCertificate{
			Certificate: Certificate{
				CertificateID:             C.GoString(r.certificate_id),
				CertificatePEM:            C.GoString(r.certificate_pem),
				CertificateOwnershipToken: C.GoString(r.certificate_ownership_token),
			},
			// Straight from the library's buffer into a []byte: never a string, which could
			// not be wiped.
			PrivateKey: C.GoBytes(unsafe.Pointer(r.private_key), C.int(C.strlen(r.private_key))),
		}
	} else {
		o.err = copyError(opCreateKeys, e)
	}
	send(h, o)
}

//export fpgoCreateFromCsr
func fpgoCreateFromCsr(h C.uintptr_t, r *C.fp_create_from_csr_response, e *C.fp_error) {
	var o outcome[*Certificate]
	if r != nil {
		o.value = &Certificate{
			CertificateID:             C.GoString(r.certificate_id),
			CertificatePEM:            C.GoString(r.certificate_pem),
			CertificateOwnershipToken: C.GoString(r.certificate_ownership_token),
		}
	} else {
		o.err = copyError(opCreateFromCSR, e)
	}
	send(h, o)
}

//export fpgoRegisterThing
func fpgoRegisterThing(h C.uintptr_t, r *C.fp_register_thing_response, e *C.fp_error) {
	var o outcome[*Thing]
	if r != nil {
		t := &Thing{ThingName: C.GoString(r.thing_name), DeviceConfiguration: map[string]string{}}
		if r.device_configuration != nil {
			for _, kv := range unsafe.Slice(r.device_configuration, int(r.device_configuration_len)) {
				t.DeviceConfiguration[C.GoString(kv.key)] = C.GoString(kv.value)
			}
		}
		o.value = t
	} else {
		o.err = copyError(opRegisterThing, e)
	}
	send(h, o)
}
