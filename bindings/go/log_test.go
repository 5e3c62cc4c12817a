package fleetprov

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"
)

// The library's log reaches the Go logger, up to its level, and stops once it is removed.
func TestSetLogger(t *testing.T) {
	e := startEmulator(t)
	var mu sync.Mutex
	var lines []string
	levels := map[LogLevel]bool{}
	if err := SetLogger(LogDebug, func(l LogLevel, msg string) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, msg)
		levels[l] = true
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = SetLogger(LogNone, nil) })
	c, err := New(e.options())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	keys, err := c.CreateKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	keys.WipeKey()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := SetLogger(LogNone, nil); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	all := strings.Join(lines, "\n")
	if !strings.Contains(all, "PUBLISH $aws/certificates/create/json") {
		t.Errorf("no PUBLISH of the create request in the log:\n%s", all)
	}
	if strings.Contains(all, "PRIVATE KEY") {
		t.Error("the log holds a private key")
	}
	if levels[LogTrace] {
		t.Error("a trace message above the logger's level")
	}
	n := len(lines)
	mu.Unlock()
	waitHandles(t, 5*time.Second) // the library released the logger

	c2 := connected(t, e.options())
	if _, err := c2.CreateKeys(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lines) != n {
		t.Errorf("%d messages after the logger was removed", len(lines)-n)
	}

	if err := SetLogger(LogLevel(42), func(LogLevel, string) {}); err == nil {
		t.Error("level 42 accepted")
	}
}
