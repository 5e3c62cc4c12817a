package fleetprov

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The tests run the fleetprov-emulator binary: $FLEETPROV_EMULATOR, or the checkout's release
// or debug build. Without one they skip, unless CI is set: then they fail.
func emulatorBinary(t testing.TB) string {
	t.Helper()
	candidates := []string{os.Getenv("FLEETPROV_EMULATOR"),
		"../../target/release/fleetprov-emulator", "../../target/debug/fleetprov-emulator"}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if _, err := os.Stat(c); err == nil {
			return c
		}
	}
	msg := "no fleetprov-emulator: set FLEETPROV_EMULATOR or run cargo build --release -p fleetprov-emulator"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

type emulator struct {
	cmd   *exec.Cmd
	state string
	port  uint16
}

// startEmulator runs `fleetprov-emulator serve` on an ephemeral loopback port and waits until it
// has written the port to its ready file; the test stops it.
func startEmulator(t testing.TB) *emulator {
	t.Helper()
	// The claim policy that allows any template's topics: the rejection tests name a template
	// the emulator does not serve, whose 404 must come from the service.
	return startEmulatorWithPolicy(t,
		filepath.Join("..", "..", "emulator", "policies", "claim-policy-any-template.json"))
}

// startEmulatorWithPolicy is startEmulator with the claim policy in the file claimPolicy.
func startEmulatorWithPolicy(t testing.TB, claimPolicy string) *emulator {
	t.Helper()
	dir := t.TempDir()
	e := &emulator{state: filepath.Join(dir, "state")}
	ready := filepath.Join(dir, "ready")
	e.cmd = exec.Command(emulatorBinary(t), "serve", "--state-dir", e.state, "--port", "0",
		"--ready-file", ready, "--quiet", "--claim-policy", claimPolicy)
	e.cmd.Stderr = os.Stderr
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- e.cmd.Wait() }()
	t.Cleanup(func() {
		_ = e.cmd.Process.Signal(syscall.SIGTERM)
		<-exited
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, err := os.ReadFile(ready); err == nil && len(bytes.TrimSpace(b)) > 0 {
			p, err := strconv.ParseUint(string(bytes.TrimSpace(b)), 10, 16)
			if err != nil {
				t.Fatalf("ready file: %v", err)
			}
			e.port = uint16(p)
			return e
		}
		select {
		case err := <-exited:
			t.Fatalf("the emulator exited before it was ready: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the emulator was not ready within 30 s")
		}
	}
}

func (e *emulator) options() Options {
	return Options{
		Endpoint: "localhost",
		Port:     e.port,
		CAFile:   filepath.Join(e.state, "ca.pem"),
		CertFile: filepath.Join(e.state, "claim-cert.pem"),
		KeyFile:  filepath.Join(e.state, "claim-key.pem"),
	}
}

// connected gives a connected client, closed (and checked for left-over handles) at the end.
func connected(t *testing.T, opts Options) *Client {
	t.Helper()
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
		if n := liveHandles.Load(); n != 0 {
			t.Errorf("%d cgo handles left after Close", n)
		}
	})
	if err := c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c
}

func params(serial string) map[string]string {
	return map[string]string{"SerialNumber": serial, "DeviceLocation": "Seattle"}
}

func register(t *testing.T, c *Client, token, serial string) {
	t.Helper()
	thing, err := c.RegisterThing(context.Background(), "FleetTemplate", token, params(serial))
	if err != nil {
		t.Fatal(err)
	}
	if want := "ThingPrefix_" + serial; thing.ThingName != want {
		t.Fatalf("thing %q, want %q", thing.ThingName, want)
	}
}

func newCSR(t testing.TB) []byte {
	t.Helper()
	_, csr := newKeyAndCSR(t, "go-test-device")
	return csr
}

// newKeyAndCSR makes an EC P-256 key and a PEM CSR for it with the common name cn.
func newKeyAndCSR(t testing.TB, cn string) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader,
		&x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// certificateKey is the public key of the PEM certificate in the file path.
func certificateKey(t testing.TB, path string) crypto.PublicKey {
	t.Helper()
	certPEM, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatalf("%s holds no PEM block", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert.PublicKey
}

func TestCreateKeysAndRegister(t *testing.T) {
	c := connected(t, startEmulator(t).options())
	keys, err := c.CreateKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(keys.PrivateKey, []byte("-----BEGIN RSA PRIVATE KEY-----")) {
		t.Fatal("the private key is not a PKCS#1 PEM")
	}
	if len(keys.CertificateID) != 64 || !strings.Contains(keys.CertificatePEM, "BEGIN CERTIFICATE") {
		t.Fatalf("bad certificate: id %q", keys.CertificateID)
	}
	keys.WipeKey()
	if !bytes.Equal(keys.PrivateKey, make([]byte, len(keys.PrivateKey))) {
		t.Fatal("WipeKey left key bytes")
	}
	register(t, c, keys.CertificateOwnershipToken, "go-1")
}

func TestCreateFromCSRAndRegister(t *testing.T) {
	e := startEmulator(t)
	opts := e.options()
	// The claim from memory this time (the key's buffer wiped right after New).
	var err error
	if opts.CertPEM, err = os.ReadFile(opts.CertFile); err != nil {
		t.Fatal(err)
	}
	if opts.KeyPEM, err = os.ReadFile(opts.KeyFile); err != nil {
		t.Fatal(err)
	}
	opts.CertFile, opts.KeyFile = "", ""
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range opts.KeyPEM {
		opts.KeyPEM[i] = 0
	}
	defer c.Close()
	if err := c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	cert, err := c.CreateFromCSR(context.Background(), newCSR(t))
	if err != nil {
		t.Fatal(err)
	}
	register(t, c, cert.CertificateOwnershipToken, "go-2")
}

func TestRejections(t *testing.T) {
	c := connected(t, startEmulator(t).options())
	cert, err := c.CreateFromCSR(context.Background(), newCSR(t))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		template, token string
		status          int
		code            string
	}{
		{"NoSuchTemplate", cert.CertificateOwnershipToken, 404, "ResourceNotFound"},
		{"FleetTemplate", "not-a-token", 400, "InvalidCertificateOwnershipToken"},
	}
	for _, tc := range cases {
		_, err := c.RegisterThing(context.Background(), tc.template, tc.token, params("go-3"))
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("%s: want an *Error, got %v", tc.template, err)
		}
		if e.Code != ErrRejected || !errors.Is(err, ErrRejected) || e.StatusCode != tc.status ||
			e.ErrorCode != tc.code || e.ErrorMessage == "" || e.Op != opRegisterThing {
			t.Fatalf("%s: got %#v", tc.template, e)
		}
	}
	// Refused before anything is sent: the callback never runs, no handle is left.
	_, err = c.RegisterThing(context.Background(), "bad name!", cert.CertificateOwnershipToken, nil)
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad template name: got %v", err)
	}
	if err := CheckRegistration("bad name!", nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("CheckRegistration: got %v", err)
	}
}

// link is a TCP relay between the client and the emulator that can stop passing the client's
// bytes on: after stall(), what the client sends (requests, or its TLS handshake) never
// arrives, as on a network that has gone quiet. The connection itself stays open.
type link struct {
	port    uint16
	stalled atomic.Bool
}

func newLink(t testing.TB, upstream uint16) *link {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &link{port: uint16(ln.Addr().(*net.TCPAddr).Port)}
	var conns sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		conns.Wait()
	})
	go func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return // closed by the cleanup
			}
			up, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", upstream))
			if err != nil {
				down.Close()
				continue
			}
			conns.Add(2)
			closeBoth := func() { down.Close(); up.Close() }
			go func() { // client to emulator, unless stalled
				defer conns.Done()
				defer closeBoth()
				buf := make([]byte, 16<<10)
				for {
					n, err := down.Read(buf)
					if err != nil {
						return
					}
					if !l.stalled.Load() {
						if _, err := up.Write(buf[:n]); err != nil {
							return
						}
					}
				}
			}()
			go func() { // emulator to client
				defer conns.Done()
				defer closeBoth()
				_, _ = io.Copy(down, up)
			}()
		}
	}()
	return l
}

// stalled gives a client connected to the emulator through a link that then stalls: requests
// are sent and never answered.
func stalled(t *testing.T, opTimeout time.Duration) *Client {
	t.Helper()
	opts := startEmulator(t).options()
	l := newLink(t, opts.Port)
	opts.Port = l.port
	opts.OperationTimeout = opTimeout
	c := connected(t, opts)
	l.stalled.Store(true)
	return c
}

func TestTimeout(t *testing.T) {
	c := stalled(t, 300*time.Millisecond)
	_, err := c.CreateKeys(context.Background())
	var e *Error
	if !errors.As(err, &e) || e.Code != ErrTimeout || e.Op != opCreateKeys {
		t.Fatalf("want a timeout, got %v", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("the library's timeout is not the context's")
	}
}

func TestCancel(t *testing.T) {
	c := stalled(t, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	testHookStarted = cancel // cancels once the library has accepted the operation
	defer func() { testHookStarted = nil }()
	_, err := c.CreateFromCSR(ctx, newCSR(t))
	var e *Error
	if !errors.Is(err, context.Canceled) || !errors.As(err, &e) || e.Code != ErrCancelled {
		t.Fatalf("want a cancellation, got %v", err)
	}
	<-c.Done() // the cancellation closed the connection
	if _, err := c.CreateKeys(context.Background()); !errors.Is(err, ErrNotConnected) {
		t.Fatalf("after the cancellation: want not connected, got %v", err)
	}
}

func TestContextDeadline(t *testing.T) {
	c := stalled(t, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.CreateKeys(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want the context's deadline, got %v", err)
	}
}

func TestCloseCancelsPending(t *testing.T) {
	c := stalled(t, time.Hour)
	done := make(chan error, 1)
	started := make(chan struct{})
	testHookStarted = func() { close(started) }
	defer func() { testHookStarted = nil }()
	go func() {
		_, err := c.CreateKeys(context.Background())
		done <- err
	}()
	<-started
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrCancelled) {
		t.Fatalf("want cancelled, got %v", err)
	}
	if _, err := c.CreateKeys(context.Background()); err != ErrClosed {
		t.Fatalf("after Close: got %v", err)
	}
}

func TestConnectFailure(t *testing.T) {
	opts := startEmulator(t).options()
	opts.CAFile = ""
	opts.CAPEM = []byte(fmt.Sprintf("not a PEM %d", 1))
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Connect(context.Background())
	var e *Error
	if !errors.As(err, &e) || e.Op != "connect" || e.Message == "" {
		t.Fatalf("want a connect error, got %v", err)
	}
}

func TestConnectCancelled(t *testing.T) {
	opts := startEmulator(t).options()
	l := newLink(t, opts.Port)
	l.stalled.Store(true) // TCP is accepted, the TLS handshake never arrives
	opts.Port = l.port
	opts.ConnectTimeout = time.Hour
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	err = c.Connect(ctx)
	var fe *Error
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &fe) || fe.Code != ErrCancelled {
		t.Fatalf("want a cancelled connect, got %v after %v (ctx %v)", err, time.Since(t0), ctx.Err())
	}
}

// BenchmarkCSRFlow: one provisioning per iteration, as a device does it (new client, connect,
// CreateCertificateFromCsr, RegisterThing, Close). `bash bindings/bench.sh` compares it with
// the C demo and the Node package.
func BenchmarkCSRFlow(b *testing.B) {
	opts := startEmulator(b).options()
	csr := newCSR(b)
	times := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		c, err := New(opts)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Connect(context.Background()); err != nil {
			b.Fatal(err)
		}
		cert, err := c.CreateFromCSR(context.Background(), csr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.RegisterThing(context.Background(), "FleetTemplate",
			cert.CertificateOwnershipToken, params(fmt.Sprintf("bench-%d", i))); err != nil {
			b.Fatal(err)
		}
		c.Close()
		times = append(times, time.Since(t0))
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	b.ReportMetric(float64(times[(len(times)-1)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(times[0].Microseconds())/1000, "fastest-ms")
}
