package fleetprov

// #include <stdlib.h>
// #include "shim.h"
import "C"

import (
	"fmt"
	"runtime/cgo"
)

// LogLevel is the level of a library log message (enum fp_log_level).
type LogLevel int

// The levels, with the values of the C header; LogNone turns logging off.
const (
	LogNone  LogLevel = C.FP_LOG_NONE
	LogFatal LogLevel = C.FP_LOG_FATAL
	LogError LogLevel = C.FP_LOG_ERROR
	LogWarn  LogLevel = C.FP_LOG_WARN
	LogInfo  LogLevel = C.FP_LOG_INFO
	LogDebug LogLevel = C.FP_LOG_DEBUG // every PUBLISH and SUBSCRIBE
	LogTrace LogLevel = C.FP_LOG_TRACE
)

func (l LogLevel) String() string {
	names := [...]string{"none", "fatal", "error", "warn", "info", "debug", "trace"}
	if l >= 0 && int(l) < len(names) {
		return names[l]
	}
	return fmt.Sprintf("log level %d", int(l))
}

// SetLogger sends the library's log, for the whole process, to f: messages up to maxLevel
// (fp_set_log_callback), replacing the logger set before. f nil or maxLevel LogNone turns
// logging off (the default). f is called on library threads, possibly on several at once, and
// must not call this package; messages never hold key material. For example:
//
//	fleetprov.SetLogger(fleetprov.LogInfo, func(l fleetprov.LogLevel, msg string) { log.Printf("fleetprov %v: %s", l, msg) })
func SetLogger(maxLevel LogLevel, f func(level LogLevel, message string)) error {
	if f == nil || maxLevel == LogNone {
		return resultError("SetLogger", C.fp_set_log_callback(nil, nil, nil, C.FP_LOG_NONE))
	}
	if maxLevel < LogFatal || maxLevel > LogTrace {
		return &Error{Op: "SetLogger", Code: ErrInvalidArgument, Message: fmt.Sprintf("%v is not a log level", maxLevel)}
	}
	// On failure the library releases the handle at once.
	return resultError("SetLogger", C.fpgo_set_log_callback(C.uintptr_t(newHandle(f)), C.int(maxLevel)))
}

//export fpgoLog
func fpgoLog(h C.uintptr_t, level C.int, message *C.char) {
	defer func() { _ = recover() }() // nothing may escape into the library's thread
	f := cgo.Handle(h).Value().(func(LogLevel, string))
	f(LogLevel(level), C.GoString(message))
}

// fpgoLogRelease: the library is done with the logger (replaced or removed).
//
//export fpgoLogRelease
func fpgoLogRelease(h C.uintptr_t) {
	deleteHandle(cgo.Handle(h))
}
