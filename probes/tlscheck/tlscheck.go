// Package tlscheck is the `tls` probe: for every HTTPS endpoint mxprobe
// talks to (learnt from the configuration: homeserver URLs, MAS, the
// upstream provider, the federation endpoints of the server names) and
// any listed, it connects, verifies the chain and the name, and reports
// the earliest expiry of the certificates the endpoint presents
// (blackbox_exporter's probe_ssl_earliest_cert_expiry), warning when it
// is near.
package tlscheck

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/federation"
)

// Steps of a run, per endpoint.
const (
	// StepDiscovery finds a server name's federation endpoint.
	StepDiscovery = "discovery"
	// StepHandshake connects, runs the TLS handshake and verifies the
	// chain and the name.
	StepHandshake = "handshake"
	// StepExpiry compares the earliest expiry with warn_before.
	StepExpiry = "expiry"
)

// Classes of the tls probe beyond the shared ones.
const (
	// ClassTLS: the handshake failed or the chain is not trusted.
	ClassTLS = federation.ClassTLS
	// ClassHostname: the certificate is not valid for the endpoint's name.
	ClassHostname probes.Class = "hostname"
	// ClassExpired: a certificate of the chain has expired.
	ClassExpired probes.Class = "expired"
	// ClassExpiring: the earliest expiry is within warn_before (a warning).
	ClassExpiring probes.Class = "expiring"
)

// SignalNotAfter is the earliest NotAfter (Unix seconds) of an endpoint's
// certificates: "tls_cert_not_after:<endpoint>".
const SignalNotAfter = "tls_cert_not_after"

// FederationPrefix labels a server name's federation endpoint.
const FederationPrefix = "matrix-federation://"

// Probe is a configured tls probe.
type Probe struct {
	Name     string
	Settings *Settings
	disc     *federation.Discoverer
}

// NewProbe builds the probe of settings s.
func NewProbe(name string, s *Settings) *Probe {
	return &Probe{Name: name, Settings: s, disc: federation.NewDiscoverer(federation.NewResolver(s.DNSServer), s.roots)}
}

type stepRec struct {
	name   string
	d      time.Duration
	err    error
	detail string
}

type endpointCheck struct {
	steps    []stepRec
	notAfter time.Time
	warn     error
}

// Run implements probes.Prober (subject ""; the probe covers its
// endpoints).
func (p *Probe) Run(ctx context.Context, subject string) probes.Result {
	rec := probes.NewRecorder(p.Name, TypeTLS, subject)
	eps := p.Settings.endpoints
	var fed []string
	if p.Settings.federation() {
		fed = p.Settings.ServerNames
	}
	n := len(eps) + len(fed)
	if n == 0 {
		rec.AddStep(StepHandshake, 0, probes.Errorf(probes.ClassConfig, "no endpoint to check"))
		return rec.Finish()
	}
	checks := make([]endpointCheck, n)
	labels := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i < len(eps) {
				labels[i] = eps[i].label
				checks[i] = p.check(ctx, eps[i])
				return
			}
			name := fed[i-len(eps)]
			labels[i] = FederationPrefix + name
			checks[i] = p.checkFederation(ctx, name)
		}()
	}
	wg.Wait()
	var warn error
	warnStep := ""
	for i, c := range checks {
		for _, s := range c.steps {
			var err error
			if s.err != nil {
				err = &probes.Error{Class: probes.Classify(s.err), Err: fmt.Errorf("%s: %w", labels[i], s.err)}
			}
			rec.AddStep(s.name, s.d, err)
			if s.detail != "" {
				rec.Note(labels[i] + ": " + s.detail)
			}
		}
		if !c.notAfter.IsZero() {
			rec.Signal(SignalNotAfter+":"+labels[i], float64(c.notAfter.Unix()))
		}
		if c.warn != nil && warn == nil {
			warn, warnStep = fmt.Errorf("%s: %w", labels[i], c.warn), StepExpiry
		}
	}
	if warn != nil {
		rec.Warn(warnStep, ClassExpiring, warn.Error())
	}
	return rec.Finish()
}

func (c *endpointCheck) do(name string, fn func() (string, error)) error {
	t0 := time.Now()
	detail, err := fn()
	c.steps = append(c.steps, stepRec{name: name, d: time.Since(t0), err: err, detail: detail})
	return err
}

// checkFederation finds the federation endpoint of a server name and
// checks it for the name discovery gives.
func (p *Probe) checkFederation(ctx context.Context, name string) endpointCheck {
	var c endpointCheck
	var t federation.Target
	if c.do(StepDiscovery, func() (string, error) {
		var err error
		t, err = p.disc.Resolve(ctx, name)
		if err != nil {
			return "", err
		}
		return strings.Join(t.Hosts, ", ") + " (" + t.Via + ")", nil
	}) != nil {
		return c
	}
	p.verify(ctx, &c, endpoint{label: FederationPrefix + name, addrs: t.Hosts, name: t.TLSName})
	return c
}

func (p *Probe) check(ctx context.Context, ep endpoint) endpointCheck {
	var c endpointCheck
	p.verify(ctx, &c, ep)
	return c
}

// verify runs the handshake and expiry steps of ep.
func (p *Probe) verify(ctx context.Context, c *endpointCheck, ep endpoint) {
	var certs []*x509.Certificate
	err := c.do(StepHandshake, func() (string, error) {
		var err error
		var version uint16
		certs, version, err = p.handshake(ctx, ep)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s, %d certificates", tls.VersionName(version), len(certs)), nil
	})
	if len(certs) > 0 {
		c.notAfter = federation.EarliestExpiry(certs)
	}
	if err != nil {
		return
	}
	_ = c.do(StepExpiry, func() (string, error) {
		left := time.Until(c.notAfter)
		detail := fmt.Sprintf("earliest expiry %s (%d days)", c.notAfter.UTC().Format(time.RFC3339), int(left.Hours()/24))
		if left < p.Settings.WarnBefore.D() {
			c.warn = fmt.Errorf("a certificate expires %s, in %s (warn_before %s)", c.notAfter.UTC().Format(time.RFC3339), left.Round(time.Minute), p.Settings.WarnBefore)
		}
		return detail, nil
	})
}

// handshake connects to the first of ep's addresses that answers, runs the
// TLS handshake and verifies the chain, then the name. The certificates
// come back even when verification fails, so an expired or misnamed
// certificate still shows its expiry.
func (p *Probe) handshake(ctx context.Context, ep endpoint) ([]*x509.Certificate, uint16, error) {
	d := &net.Dialer{Resolver: p.disc.Resolver, Timeout: 10 * time.Second}
	var raw net.Conn
	var errs []error
	for _, a := range ep.addrs {
		c, err := d.DialContext(ctx, "tcp", a)
		if err == nil {
			raw = c
			break
		}
		errs = append(errs, err)
	}
	if raw == nil {
		if len(errs) == 1 {
			return nil, 0, errs[0]
		}
		return nil, 0, fmt.Errorf("%s: %w", strings.Join(ep.addrs, ", "), errors.Join(errs...))
	}
	defer raw.Close()
	// Verification happens below, by hand, so that the certificates of a
	// failing chain are still seen (their expiry is the point).
	conn := tls.Client(raw, &tls.Config{ServerName: ep.name, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // verified below
	if err := conn.HandshakeContext(ctx); err != nil {
		if ctx.Err() != nil {
			return nil, 0, err
		}
		return nil, 0, probes.WithClass(ClassTLS, fmt.Errorf("handshake: %w", err))
	}
	cs := conn.ConnectionState()
	_ = conn.Close()
	certs := cs.PeerCertificates
	if len(certs) == 0 {
		return nil, cs.Version, probes.Errorf(ClassTLS, "no certificate presented")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: p.Settings.roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		var ci x509.CertificateInvalidError
		if errors.As(err, &ci) && ci.Reason == x509.Expired {
			return certs, cs.Version, probes.WithClass(ClassExpired, err)
		}
		return certs, cs.Version, probes.WithClass(ClassTLS, err)
	}
	if err := certs[0].VerifyHostname(ep.name); err != nil {
		return certs, cs.Version, probes.WithClass(ClassHostname, err)
	}
	return certs, cs.Version, nil
}
