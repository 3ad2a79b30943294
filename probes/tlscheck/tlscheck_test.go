package tlscheck

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func serveTLS(t *testing.T, leaf testenv.Leaf) string {
	t.Helper()
	s := httptest.NewUnstartedServer(http.NotFoundHandler())
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point
	s.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}}
	s.StartTLS()
	t.Cleanup(s.Close)
	return s.Listener.Addr().String()
}

func parse(t *testing.T, yml string) (*config.Config, error) {
	t.Helper()
	return config.Parse([]byte(yml), "c.yml", func(string) string { return "" }, Type().Kind)
}

// probeFor builds the probe of a configuration's first probe.
func probeFor(t *testing.T, yml string) *Probe {
	t.Helper()
	cfg, err := parse(t, yml)
	if err != nil {
		t.Fatal(err)
	}
	s, err := probetype.SettingsOf[Settings](&cfg.Probes[0])
	if err != nil {
		t.Fatal(err)
	}
	return NewProbe(cfg.Probes[0].Name, s)
}

func run(t *testing.T, p *Probe) probes.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	r := p.Run(ctx, "")
	if err := probetype.CheckResult(Type(), r); err != nil {
		t.Error(err)
	}
	return r
}

func describe(r probes.Result) string {
	b, _ := json.MarshalIndent(r, "", "  ")
	return string(b)
}

// TestEndpoints: each endpoint's fault gives its class at its step, and
// the expiry of the presented certificates is a signal whenever a
// certificate was seen (an expired or misnamed one included).
func TestEndpoints(t *testing.T) {
	ca := testenv.NewTestCA(t)
	// Each expiry is computed once, for the certificate and for the
	// expected signal alike.
	now := time.Now().Truncate(time.Second)
	in := func(d time.Duration) time.Time { return now.Add(d) }
	closed := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a := l.Addr().String()
		l.Close()
		return a
	}()
	for _, c := range []struct {
		name     string
		addr     string
		caFile   string
		notAfter time.Time
		outcome  probes.Outcome
		class    probes.Class
		step     string
	}{
		{"valid", serveTLS(t, ca.Issue(t, in(90*24*time.Hour), "127.0.0.1")), ca.CAFile, in(90 * 24 * time.Hour), probes.OutcomeSuccess, "", ""},
		{"expires soon", serveTLS(t, ca.Issue(t, in(5*24*time.Hour), "127.0.0.1")), ca.CAFile, in(5 * 24 * time.Hour), probes.OutcomeWarning, ClassExpiring, StepExpiry},
		{"expired", serveTLS(t, ca.Issue(t, in(-time.Hour), "127.0.0.1")), ca.CAFile, in(-time.Hour), probes.OutcomeFailure, ClassExpired, StepHandshake},
		{"wrong hostname", serveTLS(t, ca.Issue(t, in(90*24*time.Hour), "other.test")), ca.CAFile, in(90 * 24 * time.Hour), probes.OutcomeFailure, ClassHostname, StepHandshake},
		{"untrusted chain", serveTLS(t, ca.Issue(t, in(90*24*time.Hour), "127.0.0.1")), "", in(90 * 24 * time.Hour), probes.OutcomeFailure, ClassTLS, StepHandshake},
		{"not TLS", func() string {
			s := httptest.NewServer(http.NotFoundHandler())
			t.Cleanup(s.Close)
			return s.Listener.Addr().String()
		}(), ca.CAFile, time.Time{}, probes.OutcomeFailure, ClassTLS, StepHandshake},
		{"unreachable", closed, ca.CAFile, time.Time{}, probes.OutcomeFailure, probes.ClassUnreachable, StepHandshake},
	} {
		t.Run(c.name, func(t *testing.T) {
			caLine := ""
			if c.caFile != "" {
				caLine = ", ca_file: " + c.caFile
			}
			p := probeFor(t, fmt.Sprintf("probes:\n  - {name: t, type: tls, tls: {endpoints: [%s], federation: false%s}}\n", c.addr, caLine))
			r := run(t, p)
			if r.Outcome != c.outcome || r.Class != c.class || r.FailedStep != c.step {
				t.Errorf("want %s %s at %q: %s", c.outcome, c.class, c.step, describe(r))
			}
			v, ok := r.Signals[SignalNotAfter+":"+c.addr]
			if c.notAfter.IsZero() {
				if ok {
					t.Errorf("expiry signal without a certificate: %v", v)
				}
			} else if int64(v) != c.notAfter.Unix() {
				t.Errorf("expiry signal %v, want %v", v, c.notAfter.Unix())
			}
		})
	}
}

// TestDiscoveredEndpoints: the https URLs of the configuration are
// checked (http ones are not), and the server name's federation endpoint
// is found as the federation probe finds it and checked for its name.
func TestDiscoveredEndpoints(t *testing.T) {
	ca := testenv.NewTestCA(t)
	hs := serveTLS(t, ca.Issue(t, time.Now().Add(60*24*time.Hour), "127.0.0.1"))
	fed := serveTLS(t, ca.Issue(t, time.Now().Add(30*24*time.Hour), "127.0.0.1"))
	p := probeFor(t, fmt.Sprintf(`global: {homeserver_url: "https://%s", server_name: "%s"}
mas: {public_url: "http://127.0.0.1:1"}
probes:
  - {name: t, type: tls, tls: {ca_file: %s}}
`, hs, fed, ca.CAFile))
	if got := p.Settings.EndpointLabels(); !slices.Equal(got, []string{hs}) {
		t.Errorf("discovered endpoints %v", got)
	}
	r := run(t, p)
	if r.Outcome != probes.OutcomeSuccess {
		t.Fatalf("%s", describe(r))
	}
	var names []string
	for _, s := range r.Steps {
		names = append(names, s.Name)
	}
	if !slices.Equal(names, []string{StepHandshake, StepExpiry, StepDiscovery, StepHandshake, StepExpiry}) {
		t.Errorf("steps %v", names)
	}
	for _, ep := range []string{hs, FederationPrefix + fed} {
		if _, ok := r.Signals[SignalNotAfter+":"+ep]; !ok {
			t.Errorf("no expiry of %s: %v", ep, r.Signals)
		}
	}

	reg := prometheus.NewRegistry()
	o, err := Metrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	o(r)
	// A second probe sees the homeserver's certificate expire earlier.
	o(probes.Result{Probe: "other", Signals: map[string]float64{SignalNotAfter + ":" + hs: 1000}})
	text := gather(t, reg)
	if !strings.Contains(text, fmt.Sprintf(`mxprobe_tls_cert_not_after_timestamp_seconds{endpoint="%s"} 1000`, hs)) ||
		!strings.Contains(text, `endpoint="matrix-federation://`+fed+`"`) {
		t.Errorf("metrics:\n%s", text)
	}
	// The other probe stops checking it: back to the first probe's value;
	// then the first stops too: gone.
	o(probes.Result{Probe: "other"})
	if text = gather(t, reg); strings.Contains(text, "} 1000") || !strings.Contains(text, hs) {
		t.Errorf("after the other probe stopped:\n%s", text)
	}
	o(probes.Result{Probe: "t"})
	if text = gather(t, reg); strings.Contains(text, hs) {
		t.Errorf("after both stopped:\n%s", text)
	}
}

func TestSettingsErrors(t *testing.T) {
	for _, c := range []struct{ yml, want string }{
		{"{endpoints: [\"http://x.test\"], federation: false}", `tls.endpoints[0]: "http://x.test": not an https URL`},
		{"{federation: false}", `tls: no endpoint to check`},
		{"{endpoints: [a.test], federation: false, warn_before: -1d}", `invalid duration "-1d"`},
		{"{endpoints: [a.test], nope: 1}", `tls.nope: unknown field`},
	} {
		_, err := parse(t, "probes:\n  - {name: t, type: tls, tls: "+c.yml+"}\n")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.yml, err, c.want)
		}
	}
}

func gather(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		_ = enc.Encode(mf)
	}
	return b.String()
}

// TestFederatingDendrite: a real Dendrite's federation listener, found by
// server name, with a certificate 10 days from expiry: the run warns
// (expiring) and the signal is that certificate's expiry.
func TestFederatingDendrite(t *testing.T) {
	ca := testenv.NewTestCA(t)
	notAfter := time.Now().Add(10 * 24 * time.Hour).Truncate(time.Second)
	leaf := ca.Issue(t, notAfter, "127.0.0.1")
	d := testenv.NewDendrite(t, testenv.DendriteOptions{Federation: &testenv.DendriteFederation{CertFile: leaf.CertFile, KeyFile: leaf.KeyFile}})
	p := probeFor(t, fmt.Sprintf("probes:\n  - {name: t, type: tls, tls: {discover: false, server_names: [\"%s\"], ca_file: %s}}\n", d.ServerName, ca.CAFile))
	r := run(t, p)
	if r.Outcome != probes.OutcomeWarning || r.Class != ClassExpiring || r.FailedStep != StepExpiry {
		t.Fatalf("%s", describe(r))
	}
	if v := r.Signals[SignalNotAfter+":"+FederationPrefix+d.ServerName]; int64(v) != notAfter.Unix() {
		t.Errorf("expiry %v, want %v", v, notAfter.Unix())
	}
}
