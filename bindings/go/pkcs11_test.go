package fleetprov

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	hsmToken = "fleetprov-go"
	hsmPIN   = "4711"
)

var (
	hsmOnce   sync.Once
	hsmModule string
	hsmErr    string
)

// softHSM sets up a SoftHSM2 token for this test process (SOFTHSM2_CONF, read when the module
// is first loaded) and returns the module. Without SoftHSM2 the test skips, unless CI is set:
// then it fails.
func softHSM(t *testing.T) string {
	t.Helper()
	hsmOnce.Do(func() {
		candidates := []string{os.Getenv("FLEETPROV_PKCS11_MODULE"), "/usr/lib/softhsm/libsofthsm2.so",
			"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so", "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so"}
		for _, c := range candidates {
			if _, err := os.Stat(c); c != "" && err == nil {
				hsmModule = c
				break
			}
		}
		if _, err := exec.LookPath("softhsm2-util"); err != nil || hsmModule == "" {
			hsmErr = "SoftHSM2 (softhsm2-util, libsofthsm2.so) is missing: apt-get install softhsm2"
			return
		}
		dir, err := os.MkdirTemp("", "fleetprov-go-softhsm")
		if err == nil {
			err = os.Mkdir(filepath.Join(dir, "tokens"), 0o700)
		}
		conf := filepath.Join(dir, "softhsm2.conf")
		if err == nil {
			err = os.WriteFile(conf, []byte(fmt.Sprintf(
				"directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n",
				filepath.Join(dir, "tokens"))), 0o600)
		}
		if err == nil {
			os.Setenv("SOFTHSM2_CONF", conf)
			err = run("softhsm2-util", "--init-token", "--free", "--label", hsmToken, "--pin", hsmPIN,
				"--so-pin", "0815")
		}
		if err != nil {
			hsmErr = err.Error()
		}
	})
	if hsmErr != "" {
		if os.Getenv("CI") != "" {
			t.Fatal(hsmErr)
		}
		t.Skip(hsmErr)
	}
	return hsmModule
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// hsmKey imports the emulator's claim key into the token under a label of its own.
func hsmClaimKey(t *testing.T, module string, e *emulator) *PKCS11Key {
	t.Helper()
	label := fmt.Sprintf("claim-%d", time.Now().UnixNano())
	if err := run("softhsm2-util", "--import", filepath.Join(e.state, "claim-key.pem"), "--token", hsmToken,
		"--label", label, "--id", "01", "--pin", hsmPIN); err != nil {
		t.Fatal(err)
	}
	return &PKCS11Key{Module: module, TokenLabel: hsmToken, PIN: hsmPIN, KeyLabel: label}
}

// A claim key in the token provisions and reuses; a device key kept in the token is
// provisioned without a key file and reused.
func TestProvisionWithKeysInAToken(t *testing.T) {
	module := softHSM(t)
	e := startEmulator(t)
	claimKey := hsmClaimKey(t, module, e)
	ctx := context.Background()

	opts := provisionOpts(e, filepath.Join(t.TempDir(), "claim-in-token"), "go-hsm-claim")
	opts.Claim.KeyFile = ""
	opts.Claim.PKCS11 = claimKey
	first, err := Provision(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if first.Reused || first.ThingName != "ThingPrefix_go-hsm-claim" || first.PrivateKeyFile == "" || first.KeyLocation != KeyInFile {
		t.Fatalf("first run: %+v", first)
	}
	again, err := Provision(ctx, opts)
	if err != nil || !again.Reused || again.CertificateID != first.CertificateID {
		t.Fatalf("reuse: %+v, %v", again, err)
	}

	store := filepath.Join(t.TempDir(), "device-in-token")
	opts = provisionOpts(e, store, "go-hsm-device")
	opts.Claim.KeyFile = ""
	opts.Claim.PKCS11 = claimKey
	opts.DevicePKCS11 = &PKCS11Key{Module: module, TokenLabel: hsmToken, PIN: hsmPIN,
		KeyLabel: fmt.Sprintf("device-%d", time.Now().UnixNano())}
	device, err := Provision(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if device.Reused || device.PrivateKeyFile != "" || device.KeyLocation != KeyInPKCS11 {
		t.Fatalf("device key in the token: %+v", device)
	}
	entries, err := os.ReadDir(store)
	if err != nil {
		t.Fatal(err)
	}
	for _, entry := range entries {
		if strings.Contains(entry.Name(), "key") {
			t.Fatalf("a key file was written: %s", entry.Name())
		}
	}
	metadata, err := os.ReadFile(device.MetadataFile)
	if err != nil || !strings.Contains(string(metadata), `"kind": "pkcs11"`) || strings.Contains(string(metadata), hsmPIN) {
		t.Fatalf("identity.json: %s, %v", metadata, err)
	}
	again, err = Provision(ctx, opts)
	if err != nil || !again.Reused || again.CertificateID != device.CertificateID {
		t.Fatalf("reuse with the token's key: %+v, %v", again, err)
	}

	// The service's keys cannot be kept in the token.
	opts.KeyType = KeyService
	opts.Force = true
	if _, err := Provision(ctx, opts); err == nil || !strings.Contains(err.Error(), "DevicePKCS11") {
		t.Fatalf("KeyService with DevicePKCS11: %v", err)
	}
}
