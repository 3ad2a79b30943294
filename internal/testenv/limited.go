package testenv

import (
	"testing"

	"github.com/mxprobe/mxprobe/internal/testenv/synlimit"
)

// Limited starts a Synapse-faithful rate limiter (synlimit, Synapse's
// defaults unless opts.Config says otherwise) in front of d and returns it;
// probes talk to its URL. It is stopped at the end of the test.
func Limited(t testing.TB, d *Homeserver, opts synlimit.Options) *synlimit.Proxy {
	t.Helper()
	opts.Upstream = d.URL
	if opts.ServerName == "" {
		opts.ServerName = d.ServerName
	}
	p, err := synlimit.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	MarkIntegration(t, "Synapse rate limiter model (synlimit) in front of a homeserver")
	return p
}

// NoRefusals fails the test when the limiter answered any 429.
func NoRefusals(t testing.TB, p *synlimit.Proxy) {
	t.Helper()
	if r := p.Refusals(); len(r) > 0 {
		t.Errorf("the Synapse limiter answered %d 429(s), first: %+v", len(r), r[0])
	}
}
