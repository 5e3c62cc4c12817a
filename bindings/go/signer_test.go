package fleetprov

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// countingSigner is a crypto.Signer that counts its signatures and can be made to fail.
type countingSigner struct {
	crypto.Signer
	calls atomic.Int32
	fail  error
}

func (c *countingSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	c.calls.Add(1)
	if c.fail != nil {
		return nil, c.fail
	}
	return c.Signer.Sign(r, digest, opts)
}

// claimSigner loads the emulator's claim key as a crypto.Signer.
func claimSigner(t *testing.T, e *emulator) *countingSigner {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(e.state, "claim-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("no PEM in claim-key.pem")
	}
	var key any
	if key, err = x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		if key, err = x509.ParseECPrivateKey(block.Bytes); err != nil {
			t.Fatalf("claim-key.pem: %v", err)
		}
	}
	return &countingSigner{Signer: key.(crypto.Signer)}
}

func newDeviceSigner(t *testing.T) *countingSigner {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &countingSigner{Signer: k}
}

// Both keys behind crypto.Signers: the claim key signs the claim connection's handshake, the
// device key the CSR and the device connection's handshake. No key file is written, the
// certificate is the device key's, and the next run reuses the identity with the same signer;
// a signer of another key provisions anew.
func TestProvisionWithSigners(t *testing.T) {
	e := startEmulator(t)
	store := filepath.Join(t.TempDir(), "identity")
	claim := claimSigner(t, e)
	device := newDeviceSigner(t)
	opts := provisionOpts(e, store, "go-signer")
	opts.Claim.KeyFile = ""
	opts.Claim.Signer = claim
	opts.DeviceSigner = device
	p, err := Provision(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if p.ThingName != "ThingPrefix_go-signer" || p.Reused || p.KeyLocation != KeyInSigner || p.PrivateKeyFile != "" {
		t.Fatalf("got %+v", p)
	}
	if p.KeyLocation.String() != "signer" {
		t.Fatalf("KeyLocation.String() = %q", p.KeyLocation)
	}
	if n := claim.calls.Load(); n != 1 {
		t.Fatalf("the claim signer signed %d times, want 1 (the claim handshake)", n)
	}
	if n := device.calls.Load(); n != 2 {
		t.Fatalf("the device signer signed %d times, want 2 (the CSR, the device handshake)", n)
	}
	entries, err := os.ReadDir(store)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range entries {
		b, _ := os.ReadFile(filepath.Join(store, f.Name()))
		if containsKey(b) {
			t.Fatalf("%s holds a private key", f.Name())
		}
	}
	if !certificateKey(t, p.CertificateFile).(*ecdsa.PublicKey).Equal(device.Public()) {
		t.Fatal("the certificate is not the device signer's key")
	}

	q, err := Provision(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if !q.Reused || q.CertificateID != p.CertificateID || q.KeyLocation != KeyInSigner {
		t.Fatalf("second run: got %+v", q)
	}
	if n := claim.calls.Load(); n != 1 {
		t.Fatalf("a reuse made a claim connection (%d claim signatures)", n)
	}

	opts.DeviceSigner = newDeviceSigner(t)
	r, err := Provision(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if r.Reused || r.CertificateID == p.CertificateID {
		t.Fatalf("another device key reused the identity: %+v", r)
	}
	waitHandles(t, 5*time.Second)
}

func containsKey(b []byte) bool {
	for rest := b; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return false
		}
		if block.Type == "PRIVATE KEY" || block.Type == "EC PRIVATE KEY" {
			return true
		}
	}
}

// A failing Sign fails the connection with ErrSigner; bad combinations are refused up front.
func TestSignerFailuresAndBadInput(t *testing.T) {
	e := startEmulator(t)
	claim := claimSigner(t, e)
	claim.fail = errors.New("the secure element is gone")
	opts := e.options()
	opts.KeyFile = ""
	opts.Signer = claim
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Connect(context.Background())
	var fe *Error
	if !errors.As(err, &fe) || fe.Code != ErrSigner {
		t.Fatalf("connect with a failing signer: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	opts.KeyFile = filepath.Join(e.state, "claim-key.pem")
	if _, err := New(opts); !errors.As(err, &fe) || fe.Code != ErrInvalidArgument || fe.Op != "Signer" {
		t.Fatalf("KeyFile and Signer: %v", err)
	}
	popts := provisionOpts(e, t.TempDir(), "go-signer-bad")
	popts.DeviceSigner = newDeviceSigner(t)
	popts.KeyType = KeyService
	if _, err := Provision(context.Background(), popts); !errors.As(err, &fe) || fe.Op != "DeviceSigner" {
		t.Fatalf("KeyService and DeviceSigner: %v", err)
	}
	waitHandles(t, 5*time.Second)
}
