package federation

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"
)

// NewResolver returns a resolver asking the DNS server at addr (host:port)
// for every name, or the system's resolver when addr is empty. Tests point
// it at a local DNS server that serves SRV records for test names.
func NewResolver(addr string) *net.Resolver {
	if addr == "" {
		return net.DefaultResolver
	}
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

// LoadRoots reads the PEM certificates of file as the only trusted roots
// (nil, the system's roots, when file is empty).
func LoadRoots(file string) (*x509.CertPool, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return pool, nil
}

// CheckDNSServer validates a dns_server setting (host:port, the host an IP).
func CheckDNSServer(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want IP:port (%v)", addr, err)
	}
	if net.ParseIP(host) == nil {
		return fmt.Errorf("%q: the host must be an IP address", addr)
	}
	if port == "" || port == "0" {
		return fmt.Errorf("%q: no port", addr)
	}
	return nil
}

// notFound reports whether err says the DNS name or record does not exist
// (as opposed to a DNS server that failed or did not answer).
func notFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// dialTimeout bounds one TCP connection attempt when the run's deadline
// is further away, so a black-holed SRV target leaves time for the next.
const dialTimeout = 10 * time.Second

// EarliestExpiry is the earliest NotAfter of certs (the zero time for
// none): blackbox_exporter's probe_ssl_earliest_cert_expiry.
func EarliestExpiry(certs []*x509.Certificate) time.Time {
	var t time.Time
	for _, c := range certs {
		if t.IsZero() || c.NotAfter.Before(t) {
			t = c.NotAfter
		}
	}
	return t
}
