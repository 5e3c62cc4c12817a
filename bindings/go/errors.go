package fleetprov

// #include <stdlib.h>
// #include "fleetprov.h"
import "C"

import (
	"errors"
	"fmt"
)

// Code is one of the library's result codes (enum fp_result in fleetprov.h). A Code is also an
// error, so errors.Is(err, fleetprov.ErrTimeout) tells what an *Error is about.
type Code int

// The result codes, with the values of the C header.
const (
	OK                   Code = C.FP_OK
	ErrNullArgument      Code = C.FP_ERR_NULL_ARGUMENT
	ErrInvalidUTF8       Code = C.FP_ERR_INVALID_UTF8
	ErrInvalidArgument   Code = C.FP_ERR_INVALID_ARGUMENT
	ErrIO                Code = C.FP_ERR_IO
	ErrTLS               Code = C.FP_ERR_TLS
	ErrConnectionRefused Code = C.FP_ERR_CONNECTION_REFUSED
	ErrConnection        Code = C.FP_ERR_CONNECTION
	ErrDisconnected      Code = C.FP_ERR_DISCONNECTED
	ErrTimeout           Code = C.FP_ERR_TIMEOUT
	ErrSubscribeRefused  Code = C.FP_ERR_SUBSCRIBE_REFUSED
	ErrRejected          Code = C.FP_ERR_REJECTED
	ErrBadReply          Code = C.FP_ERR_BAD_REPLY
	ErrCancelled         Code = C.FP_ERR_CANCELLED
	ErrNotConnected      Code = C.FP_ERR_NOT_CONNECTED
	ErrAlreadyConnected  Code = C.FP_ERR_ALREADY_CONNECTED
	ErrPanic             Code = C.FP_ERR_PANIC
	ErrInternal          Code = C.FP_ERR_INTERNAL
	ErrProtocol          Code = C.FP_ERR_PROTOCOL
	ErrPublishRefused    Code = C.FP_ERR_PUBLISH_REFUSED
	ErrSigner            Code = C.FP_ERR_SIGNER
	ErrStore             Code = C.FP_ERR_STORE
)

// String is the library's name for the code (fp_result_str), e.g. "timed out".
func (c Code) String() string { return C.GoString(C.fp_result_str(C.int(c))) }

func (c Code) Error() string { return "fleetprov: " + c.String() }

// ErrClosed is returned by a Client's methods after Close.
var ErrClosed = errors.New("fleetprov: client closed")

// Error is a failure the library reported: a refused call, a failed connection or operation.
// For a service rejection (Code ErrRejected) StatusCode, ErrorCode and ErrorMessage are AWS's
// statusCode, errorCode and errorMessage as received; otherwise they are zero.
type Error struct {
	Op           string // what failed: "connect", "CreateKeysAndCertificate", ...
	Code         Code
	Message      string // the library's one-line message (never key material)
	StatusCode   int
	ErrorCode    string
	ErrorMessage string
	// cause is the context's error when the operation ended because its context did.
	cause error
}

func (e *Error) Error() string {
	if e.Code == ErrRejected {
		return fmt.Sprintf("fleetprov: %s rejected: statusCode=%d errorCode=%s errorMessage=%s",
			e.Op, e.StatusCode, e.ErrorCode, e.ErrorMessage)
	}
	msg := fmt.Sprintf("fleetprov: %s: %s", e.Op, e.Code.String())
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.cause != nil {
		msg += " (" + e.cause.Error() + ")"
	}
	return msg
}

// Is reports whether target is this error's Code.
func (e *Error) Is(target error) bool {
	c, ok := target.(Code)
	return ok && c == e.Code
}

// Unwrap gives context.Canceled or context.DeadlineExceeded when the operation was abandoned
// because its context ended.
func (e *Error) Unwrap() error { return e.cause }

// cancelledBy marks an error that the disconnect made for a context's end. What the library
// reports then depends on how far the operation had got (cancelled, disconnected, or not
// connected when it was queued behind the disconnect); callers get ErrCancelled for all three.
func (e *Error) cancelledBy(ctxErr error) {
	e.cause = ctxErr
	switch e.Code {
	case ErrDisconnected, ErrNotConnected:
		e.Code = ErrCancelled
	}
}

// copyError copies what it needs: e is valid only while the callback runs.
func copyError(op string, e *C.fp_error) *Error {
	return &Error{
		Op:           op,
		Code:         Code(C.fp_error_code(e)),
		Message:      C.GoString(C.fp_error_message(e)),
		StatusCode:   int(C.fp_error_status_code(e)),
		ErrorCode:    C.GoString(C.fp_error_aws_code(e)),
		ErrorMessage: C.GoString(C.fp_error_aws_message(e)),
	}
}

// resultError reports a call that returned something other than FP_OK, or nil for FP_OK.
func resultError(op string, r C.enum_fp_result) error {
	if r == C.FP_OK {
		return nil
	}
	return &Error{Op: op, Code: Code(r)}
}
