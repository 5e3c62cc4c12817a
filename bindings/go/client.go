// Package fleetprov is AWS IoT Fleet Provisioning for Go: connect with a claim certificate over
// mutual-TLS MQTT, obtain a certificate (CreateKeysAndCertificate or CreateCertificateFromCsr)
// and register the thing through a provisioning template (RegisterThing). It wraps libfleetprov's
// C API (fleetprov.h) with cgo.
//
//	c, err := fleetprov.New(fleetprov.Options{Endpoint: host, CertFile: claimCert, KeyFile: claimKey})
//	defer c.Close()
//	err = c.Connect(ctx)
//	keys, err := c.CreateKeys(ctx)
//	defer keys.WipeKey()
//	thing, err := c.RegisterThing(ctx, "FleetTemplate", keys.CertificateOwnershipToken, params)
//
// Every method may be called from any goroutine. Cancelling the context of a pending call
// closes the client's connection, because the C API cancels operations only by disconnecting:
// the call then returns an *Error whose Unwrap is the context's error, and the client is no
// longer connected (make a new one to go on). A result that arrived before the cancellation
// took effect is returned instead, so a created certificate is never lost.
package fleetprov

// #include <stdlib.h>
// #include <string.h>
// #include "shim.h"
import "C"

import (
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"math"
	"runtime/cgo"
	"sync"
	"time"
	"unsafe"
)

const (
	opCreateKeys    = "CreateKeysAndCertificate"
	opCreateFromCSR = "CreateCertificateFromCsr"
	opRegisterThing = "RegisterThing"
)

// Options are the connection settings. Zero values keep the library's defaults (port 8883,
// the system's root CAs, client id "test-<uuid>", MQTT 5, keep-alive 30 s, 30 s timeouts).
// A certificate and its key (file or PEM) are needed to connect.
type Options struct {
	Endpoint string // host name or address of the endpoint, no scheme or port (required)
	Port     uint16

	CertFile, KeyFile, CAFile string // read when connecting
	// PEM text in memory, instead of the files. The library wipes its copy of KeyPEM when
	// the client is closed; the caller may wipe its own as soon as New returns.
	CertPEM, KeyPEM, CAPEM []byte

	ClientID         string
	MQTTVersion      int           // 5 or 3 (MQTT 3.1.1)
	KeepAlive        time.Duration // whole seconds, at least 5 s
	OperationTimeout time.Duration // per operation, from when it gets its turn
	ConnectTimeout   time.Duration // TCP, proxy, TLS and CONNACK

	ProxyHost string // HTTP CONNECT proxy
	ProxyPort uint16

	// PayloadFormat selects JSON (the default) or CBOR payloads on the provisioning topics.
	PayloadFormat PayloadFormat
	// TemplateName, when set, makes Connect subscribe to that template's RegisterThing reply
	// topics up front (for a claim policy that allows only that template's topics).
	TemplateName string

	// PKCS11, when set, is the client certificate's private key in a PKCS#11 token, instead
	// of KeyFile or KeyPEM (for Provision: the claim key).
	PKCS11 *PKCS11Key

	// Signer, when set, is the client certificate's private key held by the application (a
	// secure element, a TPM, a key store), instead of KeyFile, KeyPEM or PKCS11: the library
	// asks it for the TLS handshake's signature (fp_signer_new, fp_client_options_set_signer),
	// with the digest and the hash as its SignerOpts (*rsa.PSSOptions for RSA-PSS). Keys: EC
	// P-256, EC P-384, RSA 2048-8192. Sign runs on a library thread while that client's I/O
	// waits: keep it to the signature, and do not call this package from it. The certificate
	// still comes from CertFile or CertPEM.
	Signer crypto.Signer
}

// PayloadFormat is the encoding of the provisioning requests and replies.
type PayloadFormat int

// The payload formats (FP_PAYLOAD_JSON, FP_PAYLOAD_CBOR).
const (
	PayloadJSON PayloadFormat = C.FP_PAYLOAD_JSON
	PayloadCBOR PayloadFormat = C.FP_PAYLOAD_CBOR
)

// Certificate is what CreateCertificateFromCsr returns.
type Certificate struct {
	CertificateID             string
	CertificatePEM            string
	CertificateOwnershipToken string // for RegisterThing, valid one hour
}

// KeysAndCertificate is what CreateKeysAndCertificate returns: the certificate and its new
// private key (PKCS#1 PEM). The key is only in PrivateKey, memory of the caller's: store it
// safely, never log it, and wipe it (WipeKey) once stored.
type KeysAndCertificate struct {
	Certificate
	PrivateKey []byte
}

// WipeKey overwrites PrivateKey with zeros.
func (k *KeysAndCertificate) WipeKey() {
	for i := range k.PrivateKey {
		k.PrivateKey[i] = 0
	}
}

// Thing is what RegisterThing returns.
type Thing struct {
	ThingName           string
	DeviceConfiguration map[string]string // the template's DeviceConfiguration
}

// Client is one connection to the provisioning endpoint. It connects once; Close releases it.
type Client struct {
	mu sync.RWMutex
	c  *C.fp_client // nil once closed

	life       *lifecycle
	lifeHandle cgo.Handle
}

// lifecycle receives the connection's events on a library thread.
type lifecycle struct {
	connected chan *Error // one value: nil on success
	stopped   chan struct{}
	stopOnce  sync.Once
	mu        sync.Mutex
	lost      *Error
}

func (l *lifecycle) stop() { l.stopOnce.Do(func() { close(l.stopped) }) }

func (l *lifecycle) event(event C.int, err *Error) {
	switch event {
	case C.FP_EVENT_CONNECTION_SUCCESS, C.FP_EVENT_CONNECTION_FAILURE:
		if event == C.FP_EVENT_CONNECTION_SUCCESS {
			err = nil
		}
		select {
		case l.connected <- err:
		default: // one connect gives one of these; never block the library's thread
		}
	case C.FP_EVENT_DISCONNECTED:
		if err != nil {
			err.Op = "connection"
		}
		l.mu.Lock()
		l.lost = err
		l.mu.Unlock()
	case C.FP_EVENT_STOPPED:
		l.stop()
	}
}

// cBytes runs f with b as a NUL-terminated C string in C memory, which it wipes and frees
// afterwards (b may be a key). An empty b gives NULL when nullIfEmpty.
func cBytes(b []byte, nullIfEmpty bool, f func(*C.char) C.enum_fp_result) C.enum_fp_result {
	if len(b) == 0 && nullIfEmpty {
		return f(nil)
	}
	p := C.malloc(C.size_t(len(b) + 1))
	buf := unsafe.Slice((*byte)(p), len(b)+1)
	copy(buf, b)
	buf[len(b)] = 0
	defer func() {
		C.memset(p, 0, C.size_t(len(b)+1))
		C.free(p)
	}()
	return f((*C.char)(p))
}

func cString(s string, f func(*C.char) C.enum_fp_result) C.enum_fp_result {
	p := C.CString(s)
	defer C.free(unsafe.Pointer(p))
	return f(p)
}

func millis(op string, d time.Duration) (C.uint32_t, error) {
	if d < time.Millisecond || d.Milliseconds() > math.MaxUint32 {
		return 0, &Error{Op: op, Code: ErrInvalidArgument, Message: fmt.Sprintf("%v is out of range", d)}
	}
	return C.uint32_t(d.Milliseconds()), nil
}

func setOptions(o *C.fp_client_options, opts *Options) error {
	if opts.Signer != nil && (opts.KeyFile != "" || opts.KeyPEM != nil || opts.PKCS11 != nil) {
		return &Error{Op: "Signer", Code: ErrInvalidArgument,
			Message: "give one private key: KeyFile, KeyPEM, PKCS11 or Signer"}
	}
	var opTimeout, connTimeout C.uint32_t
	var err error
	if opts.OperationTimeout != 0 {
		if opTimeout, err = millis("OperationTimeout", opts.OperationTimeout); err != nil {
			return err
		}
	}
	if opts.ConnectTimeout != 0 {
		if connTimeout, err = millis("ConnectTimeout", opts.ConnectTimeout); err != nil {
			return err
		}
	}
	keepAlive := opts.KeepAlive / time.Second
	if keepAlive > math.MaxUint16 {
		return &Error{Op: "KeepAlive", Code: ErrInvalidArgument, Message: "too long"}
	}
	// Each setting that is not its zero value, in order; cgo cannot take C functions as
	// values, hence a closure each.
	settings := []struct {
		name string
		set  bool
		call func() C.enum_fp_result
	}{
		{"Port", opts.Port != 0, func() C.enum_fp_result { return C.fp_client_options_set_port(o, C.uint16_t(opts.Port)) }},
		{"CertFile", opts.CertFile != "", func() C.enum_fp_result {
			return cString(opts.CertFile, func(s *C.char) C.enum_fp_result { return C.fp_client_options_set_cert_file(o, s) })
		}},
		{"KeyFile", opts.KeyFile != "", func() C.enum_fp_result {
			return cString(opts.KeyFile, func(s *C.char) C.enum_fp_result { return C.fp_client_options_set_key_file(o, s) })
		}},
		{"CAFile", opts.CAFile != "", func() C.enum_fp_result {
			return cString(opts.CAFile, func(s *C.char) C.enum_fp_result { return C.fp_client_options_set_ca_file(o, s) })
		}},
		{"CertPEM", opts.CertPEM != nil, func() C.enum_fp_result {
			return cBytes(opts.CertPEM, false, func(s *C.char) C.enum_fp_result { return C.fp_client_options_set_cert_pem(o, s) })
		}},
		{"KeyPEM", opts.KeyPEM != nil, func() C.enum_fp_result {
			return cBytes(opts.KeyPEM, false, func(s *C.char) C.enum_fp_result { return C.fp_client_options_set_key_pem(o, s) })
		}},
		{"CAPEM", opts.CAPEM != nil, func() C.enum_fp_result {
			return cBytes(opts.CAPEM, false, func(s *C.char) C.enum_fp_result { return C.fp_client_options_set_ca_pem(o, s) })
		}},
		{"ClientID", opts.ClientID != "", func() C.enum_fp_result {
			return cString(opts.ClientID, func(s *C.char) C.enum_fp_result { return C.fp_client_options_set_client_id(o, s) })
		}},
		{"MQTTVersion", opts.MQTTVersion != 0, func() C.enum_fp_result {
			return C.fp_client_options_set_mqtt_version(o, C.int(opts.MQTTVersion))
		}},
		{"KeepAlive", opts.KeepAlive != 0, func() C.enum_fp_result {
			return C.fp_client_options_set_keep_alive_secs(o, C.uint16_t(keepAlive))
		}},
		{"OperationTimeout", opts.OperationTimeout != 0, func() C.enum_fp_result {
			return C.fp_client_options_set_operation_timeout_ms(o, opTimeout)
		}},
		{"ConnectTimeout", opts.ConnectTimeout != 0, func() C.enum_fp_result {
			return C.fp_client_options_set_connect_timeout_ms(o, connTimeout)
		}},
		{"ProxyHost", opts.ProxyHost != "", func() C.enum_fp_result {
			return cString(opts.ProxyHost, func(s *C.char) C.enum_fp_result {
				return C.fp_client_options_set_proxy(o, s, C.uint16_t(opts.ProxyPort))
			})
		}},
		{"PayloadFormat", opts.PayloadFormat != PayloadJSON, func() C.enum_fp_result {
			return C.fp_client_options_set_payload_format(o, C.int(opts.PayloadFormat))
		}},
		{"TemplateName", opts.TemplateName != "", func() C.enum_fp_result {
			return cString(opts.TemplateName, func(s *C.char) C.enum_fp_result {
				return C.fp_client_options_set_template_name(o, s)
			})
		}},
	}
	for _, s := range settings {
		if s.set {
			if err := resultError(s.name, s.call()); err != nil {
				return err
			}
		}
	}
	if opts.PKCS11 != nil {
		return setPKCS11(o, "PKCS11", opts.PKCS11)
	}
	if opts.Signer != nil {
		return setClaimSigner(o, opts.Signer)
	}
	return nil
}

// clientOptions makes the library's options from opts; the caller frees them.
func clientOptions(opts *Options) (*C.fp_client_options, error) {
	var o *C.fp_client_options
	r := cString(opts.Endpoint, func(s *C.char) C.enum_fp_result { return C.fp_client_options_new(s, &o) })
	if err := resultError("Endpoint", r); err != nil {
		return nil, err
	}
	if err := setOptions(o, opts); err != nil {
		C.fp_client_options_free(o)
		return nil, err
	}
	return o, nil
}

// New checks the options and makes a client; it does not touch the network or read files
// (Connect does). Close it when done.
func New(opts Options) (*Client, error) {
	o, err := clientOptions(&opts)
	if err != nil {
		return nil, err
	}
	// The client keeps a copy of the options.
	defer C.fp_client_options_free(o)
	c := &Client{life: &lifecycle{connected: make(chan *Error, 1), stopped: make(chan struct{})}}
	if err := resultError("New", C.fp_client_new(o, &c.c)); err != nil {
		return nil, err
	}
	c.lifeHandle = newHandle(c.life)
	return c, nil
}

// errOrNil keeps a nil *Error from becoming a non-nil error.
func errOrNil(e *Error) error {
	if e == nil {
		return nil
	}
	return e
}

// Connect connects (TLS, MQTT) and returns once the session is up or connecting failed. A
// client connects once.
func (c *Client) Connect(ctx context.Context) error {
	c.mu.RLock()
	if c.c == nil {
		c.mu.RUnlock()
		return ErrClosed
	}
	r := C.fpgo_connect(c.c, C.uintptr_t(c.lifeHandle))
	c.mu.RUnlock()
	if err := resultError("connect", r); err != nil {
		return err
	}
	select {
	case err := <-c.life.connected:
		return errOrNil(err)
	case <-ctx.Done():
		c.disconnect()
		err := <-c.life.connected
		if err != nil {
			err.cancelledBy(ctx.Err())
		}
		return errOrNil(err)
	}
}

// Done is closed once the connection has ended (failed, lost, disconnected) or the client is
// closed.
func (c *Client) Done() <-chan struct{} { return c.life.stopped }

// Err tells why an established connection was lost (nil if it was not).
func (c *Client) Err() error {
	c.life.mu.Lock()
	defer c.life.mu.Unlock()
	return errOrNil(c.life.lost)
}

// disconnect starts closing the connection; pending operations then call back with an error.
func (c *Client) disconnect() {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.c != nil {
		C.fp_client_disconnect(c.c)
	}
}

// testHookStarted, when set by a test, runs after an operation has been accepted.
var testHookStarted func()

// await starts an operation with a fresh handle and waits for its single callback, or for ctx
// (then it disconnects, which makes the callback come).
func await[T any](ctx context.Context, c *Client, op string,
	start func(*C.fp_client, C.uintptr_t) C.enum_fp_result) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, &Error{Op: op, Code: ErrCancelled, Message: "not started", cause: err}
	}
	ch := make(chan outcome[T], 1)
	h := newHandle(ch)
	// Deleted after the callback has sent its result, the handle's last use.
	defer deleteHandle(h)
	c.mu.RLock()
	if c.c == nil {
		c.mu.RUnlock()
		return zero, ErrClosed
	}
	r := start(c.c, C.uintptr_t(h))
	c.mu.RUnlock()
	if err := resultError(op, r); err != nil {
		return zero, err // its callback will never run
	}
	if testHookStarted != nil {
		testHookStarted()
	}
	var o outcome[T]
	select {
	case o = <-ch:
	case <-ctx.Done():
		c.disconnect()
		if o = <-ch; o.err != nil {
			o.err.cancelledBy(ctx.Err())
		}
	}
	if o.err != nil {
		return zero, o.err
	}
	return o.value, nil
}

// CreateKeys runs CreateKeysAndCertificate: the service makes the key pair and the certificate.
func (c *Client) CreateKeys(ctx context.Context) (*KeysAndCertificate, error) {
	return await[*KeysAndCertificate](ctx, c, opCreateKeys, func(cl *C.fp_client, h C.uintptr_t) C.enum_fp_result {
		return C.fpgo_create_keys(cl, h)
	})
}

// CreateFromCSR runs CreateCertificateFromCsr with a PEM certificate signing request: the
// private key never leaves the device.
func (c *Client) CreateFromCSR(ctx context.Context, csrPEM []byte) (*Certificate, error) {
	return await[*Certificate](ctx, c, opCreateFromCSR, func(cl *C.fp_client, h C.uintptr_t) C.enum_fp_result {
		return cBytes(csrPEM, false, func(csr *C.char) C.enum_fp_result {
			return C.fpgo_create_from_csr(cl, csr, h)
		})
	})
}

// withRegistration runs f with the template name and the parameters as C strings.
func withRegistration(template string, params map[string]string,
	f func(name, params *C.char) C.enum_fp_result) (C.enum_fp_result, error) {
	var js []byte
	if len(params) > 0 {
		var err error
		if js, err = json.Marshal(params); err != nil {
			return 0, err
		}
	}
	return cString(template, func(name *C.char) C.enum_fp_result {
		return cBytes(js, true, func(p *C.char) C.enum_fp_result { return f(name, p) })
	}), nil
}

// RegisterThing runs RegisterThing with a provisioning template, the ownership token of a
// create call and the template's parameters (nil for none).
func (c *Client) RegisterThing(ctx context.Context, template, token string,
	params map[string]string) (*Thing, error) {
	return await[*Thing](ctx, c, opRegisterThing, func(cl *C.fp_client, h C.uintptr_t) C.enum_fp_result {
		r, err := withRegistration(template, params, func(name, p *C.char) C.enum_fp_result {
			return cString(token, func(t *C.char) C.enum_fp_result {
				return C.fpgo_register_thing(cl, name, t, p, h)
			})
		})
		if err != nil {
			return C.FP_ERR_INVALID_ARGUMENT
		}
		return r
	})
}

// CheckRegistration checks a template name and parameters the way RegisterThing will, without
// a client: a program can refuse bad input before it creates a certificate it could not
// register.
func CheckRegistration(template string, params map[string]string) error {
	r, err := withRegistration(template, params, func(name, p *C.char) C.enum_fp_result {
		return C.fp_register_thing_check(name, p)
	})
	if err != nil {
		return err
	}
	return resultError("CheckRegistration", r)
}

// Close cancels pending operations (they return ErrCancelled), disconnects, and returns once
// the library has called back for the last time. Calling it again does nothing.
func (c *Client) Close() error {
	c.mu.Lock()
	cl := c.c
	c.c = nil
	c.mu.Unlock()
	if cl == nil {
		return nil
	}
	C.fp_client_free(cl)
	deleteHandle(c.lifeHandle)
	c.life.stop() // also when it never connected
	return nil
}

// Version is the library's version, e.g. "0.1.0".
func Version() string { return C.GoString(C.fp_version()) }
