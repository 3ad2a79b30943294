package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/exporter-toolkit/web"
	"gopkg.in/yaml.v3"
)

// `mxprobe healthcheck` asks a running daemon's /-/healthy and exits 0 when
// it answers 200, 1 otherwise: a container healthcheck for the distroless
// image, which has no shell, curl or wget. It reads the same web config file
// as serve (exporter-toolkit's format): with tls_server_config it speaks
// HTTPS and trusts exactly the certificate the daemon serves from that file;
// with basic_auth_users it sends the credentials it is given (the file only
// holds bcrypt hashes).

// healthcheckDefaultTimeout keeps the whole command, start-up included, well
// inside the 2 s a container healthcheck allows it.
const healthcheckDefaultTimeout = time.Second

// healthcheckFlags are the healthcheck's command line.
type healthcheckFlags struct {
	url          string
	listen       string
	webConfig    string
	username     string
	passwordFile string
	timeout      time.Duration
}

// healthcheck runs the check; every failure is exit code 1 (Docker's
// "unhealthy"; 2 is reserved there), with the reason on stderr.
func healthcheck(f healthcheckFlags, stdout, stderr io.Writer) int {
	if err := checkHealth(f); err != nil {
		fmt.Fprintf(stderr, "mxprobe healthcheck: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "healthy")
	return 0
}

func checkHealth(f healthcheckFlags) error {
	ctx, cancel := context.WithTimeout(context.Background(), f.timeout)
	defer cancel()
	wc, err := loadHealthcheckWebConfig(f.webConfig)
	if err != nil {
		return err
	}
	target := f.url
	if target == "" {
		scheme := "http"
		if wc.TLSConfig.IsEnabled() {
			scheme = "https"
		}
		host, err := healthcheckHost(f.listen)
		if err != nil {
			return err
		}
		target = scheme + "://" + host + "/-/healthy"
	}
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("--url %q: want http(s)://host:port/path", target)
	}
	transport := &http.Transport{Proxy: nil, DisableKeepAlives: true}
	if u.Scheme == "https" {
		if transport.TLSClientConfig, err = healthcheckTLS(wc); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	if len(wc.Users) > 0 || f.username != "" {
		if f.username == "" || f.passwordFile == "" {
			return fmt.Errorf("%s requires basic auth (basic_auth_users): give --basic-auth.username and --basic-auth.password-file", f.webConfig)
		}
		pw, err := os.ReadFile(f.passwordFile)
		if err != nil {
			return fmt.Errorf("--basic-auth.password-file: %w", err)
		}
		req.SetBasicAuth(f.username, strings.TrimRight(string(pw), "\r\n"))
	}
	resp, err := (&http.Client{Transport: transport}).Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is said below, once
		}
		return fmt.Errorf("GET %s: %w", u.Redacted(), err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u.Redacted(), resp.Status)
	}
	return nil
}

// loadHealthcheckWebConfig validates the web config as serve does (the
// same errors) and reads the parts a client needs; no file, no TLS and no
// users.
func loadHealthcheckWebConfig(path string) (*web.Config, error) {
	c := &web.Config{}
	if path == "" {
		return c, nil
	}
	if err := web.Validate(path); err != nil {
		return nil, fmt.Errorf("--web.config.file %s: %w", path, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--web.config.file: %w", err)
	}
	if err := yaml.Unmarshal(b, c); err != nil {
		return nil, fmt.Errorf("--web.config.file %s: %w", path, err)
	}
	// Relative certificate paths are relative to the file, as for serve.
	c.TLSConfig.SetDirectory(filepath.Dir(path))
	switch c.TLSConfig.ClientAuth {
	case "RequireAnyClientCert", "RequireAndVerifyClientCert":
		return nil, fmt.Errorf("--web.config.file %s: client_auth_type %s requires a client certificate, which the healthcheck does not present", path, c.TLSConfig.ClientAuth)
	}
	return c, nil
}

// healthcheckTLS trusts exactly the certificate the daemon serves (the web
// config's cert or cert_file): the check talks to its own daemon, usually
// at localhost, a name the certificate rarely carries, and a CA bundle
// would accept any other server of that CA on the port.
func healthcheckTLS(wc *web.Config) (*tls.Config, error) {
	pemBytes := []byte(wc.TLSConfig.TLSCert)
	if wc.TLSConfig.TLSCertPath != "" {
		b, err := os.ReadFile(wc.TLSConfig.TLSCertPath)
		if err != nil {
			return nil, fmt.Errorf("tls_server_config.cert_file: %w", err)
		}
		pemBytes = b
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("an https URL needs the daemon's certificate: the web config has no tls_server_config cert or cert_file")
	}
	want := block.Bytes
	if _, err := x509.ParseCertificate(want); err != nil {
		return nil, fmt.Errorf("tls_server_config certificate: %w", err)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verification is the pin below, not a chain to a CA and a name.
		InsecureSkipVerify: true, //nolint:gosec // VerifyPeerCertificate pins the certificate
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 || !bytes.Equal(raw[0], want) {
				return errors.New("the server's certificate is not the one of the web config")
			}
			return nil
		},
	}, nil
}

// healthcheckHost turns serve's --web.listen-address into the address to
// ask: a wildcard host (":9787", "0.0.0.0:9787", "[::]:9787") is this host.
func healthcheckHost(listen string) (string, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("--web.listen-address %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return net.JoinHostPort(host, port), nil
}
