package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/mxprobe/mxprobe/internal/testenv"
)

// selfSigned writes a self-signed certificate for name (not for 127.0.0.1:
// only the healthcheck's pin can accept it there) and its key into dir.
func selfSigned(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// healthcheckRun runs the built binary's healthcheck and returns its exit
// code, output and how long the whole command took.
func healthcheckRun(t *testing.T, bin string, args ...string) (int, string, time.Duration) {
	t.Helper()
	start := time.Now()
	out, err := exec.Command(bin, append([]string{"healthcheck"}, args...)...).CombinedOutput()
	took := time.Since(start)
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out), took
	case errors.As(err, &ee):
		return ee.ExitCode(), string(out), took
	}
	t.Fatalf("healthcheck: %v", err)
	return -1, "", 0
}

// TestHealthcheck is issue 25's "Done when" 5: `mxprobe healthcheck`, the
// binary as the container runs it, exits 0 against a healthy daemon and 1
// against a stopped one (SIGSTOP: it accepts connections and never answers)
// and an exited one, each within 2 s. The daemon serves TLS with a
// self-signed certificate and basic auth from its web config; the check
// reads the same file, trusts that certificate only and sends the
// credentials it is given.
func TestHealthcheck(t *testing.T) {
	bin := testenv.BuildMxprobe(t)
	dir := t.TempDir()
	hs, _ := versionsCounter(t)
	cert, key := selfSigned(t, dir, "mxprobe.test")
	hash, err := bcrypt.GenerateFromPassword([]byte("ops-password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users := fmt.Sprintf("basic_auth_users:\n  ops: %s\n", hash)
	// Relative paths: relative to the web config file, as for serve.
	webCfg := filepath.Join(dir, "web.yml")
	if err := os.WriteFile(webCfg, []byte(fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n%s",
		filepath.Base(cert), filepath.Base(key), users)), 0o600); err != nil {
		t.Fatal(err)
	}
	// The same users behind another certificate: the pin must refuse it.
	otherDir := t.TempDir()
	otherCert, otherKey := selfSigned(t, otherDir, "mxprobe.test")
	otherWebCfg := filepath.Join(otherDir, "web.yml")
	if err := os.WriteFile(otherWebCfg, []byte(fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n%s",
		otherCert, otherKey, users)), 0o600); err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(dir, "password")
	wrongPwFile := filepath.Join(dir, "wrong-password")
	if err := os.WriteFile(pwFile, []byte("ops-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(wrongPwFile, []byte("guess\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "mxprobe.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`global:
  homeserver_url: %s
  data_dir: %s
probes:
  - name: versions
    type: versions
    schedule: "@every 1m"
`, hs.URL, filepath.Join(dir, "data"))), 0o600); err != nil {
		t.Fatal(err)
	}
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	// A wildcard listen address, as in the container: the check asks localhost.
	listen := fmt.Sprintf(":%d", port)
	log := &testenv.SyncBuffer{}
	cmd := exec.Command(bin, "serve", "--config.file", cfg, "--web.listen-address", listen, "--web.config.file", webCfg, "--log.level", "warn")
	cmd.Stdout, cmd.Stderr = log, log
	proc, err := testenv.StartProc(cmd)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if stopped {
			_ = proc.Cmd.Process.Signal(syscall.SIGCONT)
		}
		proc.Stop(syscall.SIGTERM, 20*time.Second)
		if t.Failed() {
			t.Logf("mxprobe log:\n%s", log.String())
		}
	})

	good := []string{"--web.listen-address", listen, "--web.config.file", webCfg,
		"--basic-auth.username", "ops", "--basic-auth.password-file", pwFile}
	// The daemon is up once the check itself passes (in-process, polled).
	flags := healthcheckFlags{listen: listen, webConfig: webCfg, username: "ops", passwordFile: pwFile, timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for checkHealth(flags) != nil {
		select {
		case <-proc.Done():
			t.Fatalf("mxprobe exited at start:\n%s", log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not healthy after 30s: %v", checkHealth(flags))
		}
		time.Sleep(50 * time.Millisecond)
	}

	expect := func(what string, wantCode int, wantOut string, args ...string) {
		t.Helper()
		code, out, took := healthcheckRun(t, bin, args...)
		if code != wantCode || !strings.Contains(out, wantOut) {
			t.Errorf("%s: exit %d, want %d; output %q, want it to contain %q", what, code, wantCode, out, wantOut)
		}
		if took >= 2*time.Second {
			t.Errorf("%s: took %v, want under 2s", what, took)
		}
		if strings.Contains(out, "ops-password") {
			t.Errorf("%s: the password is in the output: %q", what, out)
		}
		t.Logf("%s: exit %d in %v: %s", what, code, took.Round(time.Millisecond), strings.TrimSpace(out))
	}
	expect("healthy", 0, "healthy", good...)
	expect("explicit URL", 0, "healthy", append(good, "--url", fmt.Sprintf("https://127.0.0.1:%d/-/healthy", port))...)
	expect("no credentials", 1, "requires basic auth", "--web.listen-address", listen, "--web.config.file", webCfg)
	expect("wrong password", 1, "401", "--web.listen-address", listen, "--web.config.file", webCfg,
		"--basic-auth.username", "ops", "--basic-auth.password-file", wrongPwFile)
	expect("another certificate", 1, "not the one of the web config", "--web.listen-address", listen, "--web.config.file", otherWebCfg,
		"--basic-auth.username", "ops", "--basic-auth.password-file", pwFile)
	expect("plain HTTP to a TLS daemon", 1, "", append(good, "--url", fmt.Sprintf("http://127.0.0.1:%d/-/healthy", port))...)

	// Stopped: the kernel still accepts the connection, nobody answers.
	if err := proc.Cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped = true
	expect("stopped daemon", 1, "deadline exceeded", good...)
	if err := proc.Cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	stopped = false
	expect("resumed daemon", 0, "healthy", good...)

	// Exited: nothing listens.
	proc.Stop(syscall.SIGTERM, 20*time.Second)
	expect("exited daemon", 1, "connection refused", good...)
}

func TestHealthcheckHost(t *testing.T) {
	for in, want := range map[string]string{
		":9787":          "localhost:9787",
		"0.0.0.0:9787":   "localhost:9787",
		"[::]:9787":      "localhost:9787",
		"127.0.0.1:1234": "127.0.0.1:1234",
		"[::1]:9787":     "[::1]:9787",
		"mxprobe:9787":   "mxprobe:9787",
	} {
		got, err := healthcheckHost(in)
		if err != nil || got != want {
			t.Errorf("%s: %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := healthcheckHost("9787"); err == nil {
		t.Error("a port without a colon accepted")
	}
}
