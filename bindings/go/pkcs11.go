package fleetprov

// #include <stdlib.h>
// #include "fleetprov.h"
import "C"

// PKCS11Key names a private key in a PKCS#11 token (an HSM, a TPM or secure element with a
// PKCS#11 module, SoftHSM2): Options.PKCS11 for the claim key, ProvisionOptions.DevicePKCS11
// for the device key. Nothing is loaded until the key is used; a missing module, token or key,
// or a refused PIN, is then an *Error with Code ErrSigner whose message names the cause.
type PKCS11Key struct {
	// Module is the path of the PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so
	// (required).
	Module string
	// TokenLabel or SlotID selects the token when the module has more than one.
	TokenLabel string
	SlotID     *uint64
	// PIN is the user PIN; empty: no login. The library wipes its copy when done.
	PIN string
	// KeyLabel is the private key's CKA_LABEL (required).
	KeyLabel string
}

// setPKCS11 puts k's settings on o (the fp_client_options_set_pkcs11_* setters).
func setPKCS11(o *C.fp_client_options, op string, k *PKCS11Key) error {
	settings := []struct {
		name string
		set  bool
		call func() C.enum_fp_result
	}{
		{"Module", true, func() C.enum_fp_result {
			return cString(k.Module, func(s *C.char) C.enum_fp_result { return C.fp_client_options_set_pkcs11_module(o, s) })
		}},
		{"KeyLabel", true, func() C.enum_fp_result {
			return cString(k.KeyLabel, func(s *C.char) C.enum_fp_result { return C.fp_client_options_set_pkcs11_key_label(o, s) })
		}},
		{"TokenLabel", k.TokenLabel != "", func() C.enum_fp_result {
			return cString(k.TokenLabel, func(s *C.char) C.enum_fp_result { return C.fp_client_options_set_pkcs11_token_label(o, s) })
		}},
		{"SlotID", k.SlotID != nil, func() C.enum_fp_result {
			return C.fp_client_options_set_pkcs11_slot_id(o, C.uint64_t(*k.SlotID))
		}},
		{"PIN", k.PIN != "", func() C.enum_fp_result {
			return cBytes([]byte(k.PIN), false, func(s *C.char) C.enum_fp_result { return C.fp_client_options_set_pkcs11_pin(o, s) })
		}},
	}
	for _, s := range settings {
		if s.set {
			if err := resultError(op+"."+s.name, s.call()); err != nil {
				return err
			}
		}
	}
	return nil
}

// setDevicePKCS11 keeps the device key of po in the token k names
// (fp_provision_options_set_device_key_pkcs11), generated there with keyType if the token
// has no key of that label, and the certificate stored in the token too.
func setDevicePKCS11(po *C.fp_provision_options, k *PKCS11Key, keyType KeyType) C.enum_fp_result {
	var pkcs11Type C.int
	switch keyType {
	case KeyECP256:
		pkcs11Type = C.FP_PKCS11_KEY_EC_P256
	case KeyECP384:
		pkcs11Type = C.FP_PKCS11_KEY_EC_P384
	case KeyRSA2048:
		pkcs11Type = C.FP_PKCS11_KEY_RSA_2048
	default:
		return C.FP_ERR_INVALID_ARGUMENT
	}
	var token *C.fp_client_options
	r := cString("unused", func(s *C.char) C.enum_fp_result { return C.fp_client_options_new(s, &token) })
	if r != C.FP_OK {
		return r
	}
	defer C.fp_client_options_free(token) // copied by the setter
	if err := setPKCS11(token, "DevicePKCS11", k); err != nil {
		return C.FP_ERR_INVALID_ARGUMENT
	}
	return C.fp_provision_options_set_device_key_pkcs11(po, token, pkcs11Type, 1)
}
