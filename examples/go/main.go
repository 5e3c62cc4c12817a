// Command provision runs AWS IoT fleet provisioning from Go through libfleetprov's C API:
// connect with a claim certificate, get a certificate (CreateKeysAndCertificate, or
// CreateCertificateFromCsr with --csr), register the thing with a provisioning template
// (RegisterThing), print the result, disconnect.
//
// The library calls back on its own threads. Each callback reaches Go through a C trampoline
// (shim.c) and finds its channel through a cgo.Handle passed as user_data, so C never holds a
// Go pointer. The main goroutine waits on those channels; the header's contract (every
// accepted operation calls back exactly once, with its own timeout) means every wait ends.
//
// Exit codes: 0 success, 1 failure, 2 usage. The private key is never printed.
package main

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: -L${SRCDIR}/../../target/release -lfleetprov -Wl,-rpath,${SRCDIR}/../../target/release
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime/cgo"
	"unsafe"
)

// fpError is a library failure, copied out of the borrowed fp_error or made from a start
// call's fp_result.
type fpError struct {
	op         string
	code       C.enum_fp_result
	message    string
	statusCode int
	awsCode    string
	awsMessage string
}

func (e *fpError) Error() string {
	if e.code == C.FP_ERR_REJECTED {
		return fmt.Sprintf("%s rejected: statusCode=%d errorCode=%s errorMessage=%s",
			e.op, e.statusCode, e.awsCode, e.awsMessage)
	}
	return fmt.Sprintf("%s failed (%s): %s", e.op, resultStr(e.code), e.message)
}

func resultStr(r C.enum_fp_result) string {
	return C.GoString(C.fp_result_str(C.int(r)))
}

// copyError copies what it needs: e is valid only while the callback runs.
func copyError(op string, e *C.fp_error) *fpError {
	return &fpError{
		op:         op,
		code:       C.fp_error_code(e),
		message:    C.GoString(C.fp_error_message(e)),
		statusCode: int(C.fp_error_status_code(e)),
		awsCode:    C.GoString(C.fp_error_aws_code(e)),
		awsMessage: C.GoString(C.fp_error_aws_message(e)),
	}
}

// startError reports a start call that returned something other than FP_OK (its callback
// will never run).
func startError(op string, r C.enum_fp_result) error {
	return &fpError{op: op, code: r, message: "the library refused to start it"}
}

// lifecycleEvent is one event of the connection.
type lifecycleEvent struct {
	event C.int
	err   *fpError
}

// Enough room for every event one connect can produce (success or failure, disconnected,
// stopped), so the library thread never waits on Go.
const lifecycleBuffer = 4

//export fpgoLifecycle
func fpgoLifecycle(h C.uintptr_t, event C.int, e *C.fp_error) {
	ev := lifecycleEvent{event: event}
	if e != nil {
		ev.err = copyError("connection", e)
	}
	select {
	case cgo.Handle(h).Value().(chan lifecycleEvent) <- ev:
	default: // more events than one connect can produce: nothing is waiting for them
	}
}

// outcome is an operation's result; the channel it travels on has room for it, as the
// callback runs exactly once.
type outcome[T any] struct {
	value T
	err   *fpError
}

type certificate struct {
	id, token string
	gotKey    bool
}

type thing struct {
	name   string
	config [][2]string
}

//export fpgoCreateKeys
func fpgoCreateKeys(h C.uintptr_t, r *C.fp_create_keys_response, e *C.fp_error) {
	var o outcome[certificate]
	if r != nil {
		// A real device stores certificate_pem and private_key (securely) here: both are
		// borrowed and the key is wiped when this returns. This example keeps neither, so the
		// key never enters Go's memory, which could not wipe it.
		o.value = certificate{
			id:     C.GoString(r.certificate_id),
			token:  C.GoString(r.certificate_ownership_token),
			gotKey: r.private_key != nil,
		}
	} else {
		o.err = copyError("CreateKeysAndCertificate", e)
	}
	cgo.Handle(h).Value().(chan outcome[certificate]) <- o
}

//export fpgoCreateFromCsr
func fpgoCreateFromCsr(h C.uintptr_t, r *C.fp_create_from_csr_response, e *C.fp_error) {
	var o outcome[certificate]
	if r != nil {
		o.value = certificate{
			id:    C.GoString(r.certificate_id),
			token: C.GoString(r.certificate_ownership_token),
		}
	} else {
		o.err = copyError("CreateCertificateFromCsr", e)
	}
	cgo.Handle(h).Value().(chan outcome[certificate]) <- o
}

//export fpgoRegisterThing
func fpgoRegisterThing(h C.uintptr_t, r *C.fp_register_thing_response, e *C.fp_error) {
	var o outcome[thing]
	if r != nil {
		o.value.name = C.GoString(r.thing_name)
		if r.device_configuration != nil {
			entries := unsafe.Slice(r.device_configuration, int(r.device_configuration_len))
			for _, kv := range entries {
				o.value.config = append(o.value.config,
					[2]string{C.GoString(kv.key), C.GoString(kv.value)})
			}
		}
	} else {
		o.err = copyError("RegisterThing", e)
	}
	cgo.Handle(h).Value().(chan outcome[thing]) <- o
}

// await starts an operation with a fresh handle and waits for its single callback.
func await[T any](op string, start func(C.uintptr_t) C.enum_fp_result) (T, error) {
	ch := make(chan outcome[T], 1)
	h := cgo.NewHandle(ch)
	// Deleted after the callback has sent its result, the handle's last use.
	defer h.Delete()
	if r := start(C.uintptr_t(h)); r != C.FP_OK {
		var zero T
		return zero, startError(op, r)
	}
	o := <-ch
	if o.err != nil {
		return o.value, o.err
	}
	return o.value, nil
}

type config struct {
	endpoint, caFile, cert, key  string
	templateName, templateParams string
	csr                          string
	port                         uint
}

// usageError marks bad command-line input (exit code 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func parseFlags(args []string) (*config, error) {
	var c config
	fs := flag.NewFlagSet("provision", flag.ContinueOnError)
	fs.StringVar(&c.endpoint, "endpoint", "", "provisioning endpoint host name (required)")
	fs.UintVar(&c.port, "port", 8883, "MQTT port")
	fs.StringVar(&c.caFile, "ca_file", "",
		"PEM file of the CAs trusted to sign the server's certificate (default: system roots)")
	fs.StringVar(&c.cert, "cert", "", "claim certificate PEM file (required)")
	fs.StringVar(&c.key, "key", "", "claim certificate's private key PEM file (required)")
	fs.StringVar(&c.templateName, "template_name", "", "provisioning template name (required)")
	fs.StringVar(&c.templateParams, "template_parameters", "",
		`template parameters, a JSON object of strings, e.g. {"SerialNumber":"1"}`)
	fs.StringVar(&c.csr, "csr", "",
		"CSR PEM file: use CreateCertificateFromCsr instead of CreateKeysAndCertificate")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err.Error()}
	}
	switch {
	case fs.NArg() != 0:
		return nil, usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	case c.endpoint == "" || c.cert == "" || c.key == "" || c.templateName == "":
		return nil, usageError{"--endpoint, --cert, --key and --template_name are required"}
	case c.port < 1 || c.port > 65535:
		return nil, usageError{"--port must be 1-65535"}
	}
	return &c, nil
}

// cstr converts for one call: the library copies every string before it returns.
func cstr(s string) *C.char { return C.CString(s) }

func free(p *C.char) { C.free(unsafe.Pointer(p)) }

// optionalCstr gives NULL for "" (e.g. no template parameters).
func optionalCstr(s string) *C.char {
	if s == "" {
		return nil
	}
	return C.CString(s)
}

// checkTemplate refuses bad input before a certificate is created that could not be
// registered.
func checkTemplate(c *config) error {
	name, params := cstr(c.templateName), optionalCstr(c.templateParams)
	defer free(name)
	defer free(params)
	if r := C.fp_register_thing_check(name, params); r != C.FP_OK {
		return usageError{fmt.Sprintf("bad --template_name or --template_parameters (%s): "+
			"the name is 1-36 of [A-Za-z0-9_-], the parameters a JSON object of strings",
			resultStr(r))}
	}
	return nil
}

func newClient(c *config) (*C.fp_client, error) {
	endpoint := cstr(c.endpoint)
	defer free(endpoint)
	var opts *C.fp_client_options
	if r := C.fp_client_options_new(endpoint, &opts); r != C.FP_OK {
		return nil, usageError{fmt.Sprintf("invalid --endpoint %q: %s", c.endpoint, resultStr(r))}
	}
	// The client copies the options.
	defer C.fp_client_options_free(opts)

	if r := C.fp_client_options_set_port(opts, C.uint16_t(c.port)); r != C.FP_OK {
		return nil, usageError{"--port: " + resultStr(r)}
	}
	type pathSetter func(*C.fp_client_options, *C.char) C.enum_fp_result
	paths := []struct {
		flag, path string
		set        pathSetter
	}{
		{"--ca_file", c.caFile, func(o *C.fp_client_options, p *C.char) C.enum_fp_result {
			return C.fp_client_options_set_ca_file(o, p)
		}},
		{"--cert", c.cert, func(o *C.fp_client_options, p *C.char) C.enum_fp_result {
			return C.fp_client_options_set_cert_file(o, p)
		}},
		{"--key", c.key, func(o *C.fp_client_options, p *C.char) C.enum_fp_result {
			return C.fp_client_options_set_key_file(o, p)
		}},
	}
	for _, p := range paths {
		if p.path == "" { // only --ca_file is optional: the system roots are the default
			continue
		}
		cp := cstr(p.path)
		r := p.set(opts, cp)
		free(cp)
		if r != C.FP_OK {
			return nil, usageError{p.flag + ": " + resultStr(r)}
		}
	}
	var client *C.fp_client
	if r := C.fp_client_new(opts, &client); r != C.FP_OK {
		return nil, startError("creating the client", r)
	}
	return client, nil
}

func provision(c *config) error {
	if err := checkTemplate(c); err != nil {
		return err
	}
	var csr *C.char
	if c.csr != "" {
		pem, err := os.ReadFile(c.csr)
		if err != nil {
			return fmt.Errorf("cannot read --csr: %w", err)
		}
		csr = cstr(string(pem))
		defer free(csr)
	}

	client, err := newClient(c)
	if err != nil {
		return err
	}
	events := make(chan lifecycleEvent, lifecycleBuffer)
	lifecycle := cgo.NewHandle(events)
	// fp_client_free returns after the client's last callback, so the handle is unused then.
	defer func() {
		C.fp_client_free(client)
		lifecycle.Delete()
	}()

	if r := C.fpgo_connect(client, C.uintptr_t(lifecycle)); r != C.FP_OK {
		return startError("connect", r)
	}
	if ev := <-events; ev.event != C.FP_EVENT_CONNECTION_SUCCESS {
		if ev.err != nil {
			ev.err.op = "connection to " + c.endpoint
			return ev.err
		}
		return fmt.Errorf("connection failed (lifecycle event %d)", int(ev.event))
	}
	fmt.Printf("Connected to %s.\n", c.endpoint)

	var cert certificate
	if csr != nil {
		cert, err = await[certificate]("CreateCertificateFromCsr", func(h C.uintptr_t) C.enum_fp_result {
			return C.fpgo_create_from_csr(client, csr, h)
		})
	} else {
		cert, err = await[certificate]("CreateKeysAndCertificate", func(h C.uintptr_t) C.enum_fp_result {
			return C.fpgo_create_keys(client, h)
		})
	}
	if err != nil {
		return err
	}
	fmt.Printf("Certificate created: %s\n", cert.id)
	if cert.gotKey {
		fmt.Println("Private key received (not shown, not kept by this example).")
	}

	name, token, params := cstr(c.templateName), cstr(cert.token), optionalCstr(c.templateParams)
	defer free(name)
	defer free(token)
	defer free(params)
	t, err := await[thing]("RegisterThing", func(h C.uintptr_t) C.enum_fp_result {
		return C.fpgo_register_thing(client, name, token, params, h)
	})
	if err != nil {
		return err
	}
	fmt.Printf("Thing registered: %s\n", t.name)
	fmt.Println("Device configuration:")
	for _, kv := range t.config {
		fmt.Printf("  %s = %s\n", kv[0], kv[1])
	}

	if r := C.fp_client_disconnect(client); r != C.FP_OK {
		return startError("disconnect", r)
	}
	// STOPPED is always the last event; anything before it (a loss racing the disconnect)
	// no longer matters.
	for ev := range events {
		if ev.event == C.FP_EVENT_STOPPED {
			break
		}
	}
	fmt.Println("Disconnected.")
	return nil
}

func main() {
	c, err := parseFlags(os.Args[1:])
	if err == nil {
		err = provision(c)
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "provision: %v\n", err)
		var u usageError
		if errors.As(err, &u) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}
