package fleetprov

// #include <stdlib.h>
// #include "shim.h"
import "C"

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"runtime/cgo"
	"unsafe"
)

// goSigner is what a C fp_signer's user_data handle points at.
type goSigner struct {
	signer crypto.Signer
}

// The values fpgoSign returns on failure; the library's error message names the value.
const (
	signUnknownScheme = 1 // a scheme this package does not know
	signFailed        = 2 // crypto.Signer.Sign returned an error
	signTooLong       = 3 // the signature does not fit the library's buffer
	signPanicked      = 4 // Sign panicked
)

// signerOpts maps a library signature scheme to what crypto.Signer.Sign takes.
func signerOpts(scheme C.int) crypto.SignerOpts {
	switch scheme {
	case C.FP_SIGNATURE_ECDSA_P256_SHA256, C.FP_SIGNATURE_RSA_PKCS1_SHA256:
		return crypto.SHA256
	case C.FP_SIGNATURE_ECDSA_P384_SHA384, C.FP_SIGNATURE_RSA_PKCS1_SHA384:
		return crypto.SHA384
	case C.FP_SIGNATURE_RSA_PKCS1_SHA512:
		return crypto.SHA512
	case C.FP_SIGNATURE_RSA_PSS_SHA256:
		return &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
	case C.FP_SIGNATURE_RSA_PSS_SHA384:
		return &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA384}
	case C.FP_SIGNATURE_RSA_PSS_SHA512:
		return &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA512}
	}
	return nil
}

// fpgoSign signs the digest the library hands over with the Go signer. It runs on a library
// thread (a TLS handshake) or the thread making a CSR; nothing may escape into C.
//
//export fpgoSign
func fpgoSign(h C.uintptr_t, scheme C.int, digest *C.uint8_t, digestLen C.size_t,
	sig *C.uint8_t, capacity C.size_t, sigLen *C.size_t) (rc C.int) {
	defer func() {
		if recover() != nil {
			rc = signPanicked
		}
	}()
	s := cgo.Handle(h).Value().(*goSigner)
	opts := signerOpts(scheme)
	if opts == nil {
		return signUnknownScheme
	}
	d := C.GoBytes(unsafe.Pointer(digest), C.int(digestLen))
	out, err := s.signer.Sign(rand.Reader, d, opts)
	if err != nil {
		return signFailed
	}
	if len(out) == 0 || len(out) > int(capacity) {
		return signTooLong
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(sig)), int(capacity)), out)
	*sigLen = C.size_t(len(out))
	return 0
}

// fpgoSignerRelease is called once, when the library has freed the signer and everything
// that took it: the handle's last use.
//
//export fpgoSignerRelease
func fpgoSignerRelease(h C.uintptr_t) {
	deleteHandle(cgo.Handle(h))
}

// newCSigner makes a library signer for s, made from its public key (fp_signer_new). The
// caller frees it (fp_signer_free) once the options that need it have taken it; the Go signer
// is kept reachable until the library releases it.
func newCSigner(op string, s crypto.Signer) (*C.fp_signer, error) {
	der, err := x509.MarshalPKIXPublicKey(s.Public())
	if err != nil {
		return nil, &Error{Op: op, Code: ErrInvalidArgument,
			Message: fmt.Sprintf("the signer's public key (%T): %v", s.Public(), err)}
	}
	pub := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	h := newHandle(&goSigner{signer: s})
	var out *C.fp_signer
	r := cBytes(pub, false, func(p *C.char) C.enum_fp_result {
		return C.fpgo_signer_new(p, C.uintptr_t(h), &out)
	})
	if err := resultError(op, r); err != nil {
		deleteHandle(h) // release is never called on failure
		if e, ok := err.(*Error); ok && e.Code == ErrInvalidArgument {
			e.Message = fmt.Sprintf("the signer's key (%T) is not EC P-256, EC P-384 or RSA 2048-8192", s.Public())
		}
		return nil, err
	}
	return out, nil
}

// setClaimSigner makes the options sign the TLS client authentication through s.
func setClaimSigner(o *C.fp_client_options, s crypto.Signer) error {
	return setSigner("Signer", s, func(cs *C.fp_signer) C.enum_fp_result {
		return C.fp_client_options_set_signer(o, cs)
	})
}

// setDeviceSigner keeps the device key of po behind s
// (fp_provision_options_set_device_key_signer).
func setDeviceSigner(po *C.fp_provision_options, s crypto.Signer) error {
	return setSigner("DeviceSigner", s, func(cs *C.fp_signer) C.enum_fp_result {
		return C.fp_provision_options_set_device_key_signer(po, cs)
	})
}

// setSigner hands set a C signer over s; the options set shares it. field names the option
// in errors.
func setSigner(field string, s crypto.Signer, set func(*C.fp_signer) C.enum_fp_result) error {
	cs, err := newCSigner(field, s)
	if err != nil {
		return err
	}
	defer C.fp_signer_free(cs) // the options share it
	return resultError(field, set(cs))
}
