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

// deliver sends an operation's outcome: the copied error, or value() (exactly one of the
// response and the error is non-NULL).
func deliver[T any](h C.uintptr_t, op string, e *C.fp_error, value func() T) {
	var o outcome[T]
	if e != nil {
		o.err = copyError(op, e)
	} else {
		o.value = value()
	}
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

// certificate copies the fields both create responses have.
func certificate(id, pem, token *C.char) Certificate {
	return Certificate{
		CertificateID:             C.GoString(id),
		CertificatePEM:            C.GoString(pem),
		CertificateOwnershipToken: C.GoString(token),
	}
}

//export fpgoCreateKeys
func fpgoCreateKeys(h C.uintptr_t, r *C.fp_create_keys_response, e *C.fp_error) {
	deliver(h, opCreateKeys, e, func() *KeysAndCertificate {
		return &KeysAndCertificate{
			Certificate: certificate(r.certificate_id, r.certificate_pem, r.certificate_ownership_token),
			// Straight from the library's buffer into a []byte: never a string, which could
			// not be wiped.
			PrivateKey: C.GoBytes(unsafe.Pointer(r.private_key), C.int(C.strlen(r.private_key))),
		}
	})
}

//export fpgoCreateFromCsr
func fpgoCreateFromCsr(h C.uintptr_t, r *C.fp_create_from_csr_response, e *C.fp_error) {
	deliver(h, opCreateFromCSR, e, func() *Certificate {
		c := certificate(r.certificate_id, r.certificate_pem, r.certificate_ownership_token)
		return &c
	})
}

//export fpgoRegisterThing
func fpgoRegisterThing(h C.uintptr_t, r *C.fp_register_thing_response, e *C.fp_error) {
	deliver(h, opRegisterThing, e, func() *Thing {
		t := &Thing{ThingName: C.GoString(r.thing_name), DeviceConfiguration: map[string]string{}}
		if r.device_configuration != nil {
			for _, kv := range unsafe.Slice(r.device_configuration, int(r.device_configuration_len)) {
				t.DeviceConfiguration[C.GoString(kv.key)] = C.GoString(kv.value)
			}
		}
		return t
	})
}
