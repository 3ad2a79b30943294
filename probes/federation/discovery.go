package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	mxfed "maunium.net/go/mautrix/federation"

	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// Target is where a server name's federation traffic goes, as the
// specification's server discovery finds it
// (https://spec.matrix.org/v1.11/server-server-api/#resolving-server-names).
type Target struct {
	// ServerName is the name discovery started from.
	ServerName string
	// HostHeader is the Host header of requests (the delegated server name
	// when .well-known delegates).
	HostHeader string
	// TLSName is the name the certificate must be valid for: HostHeader
	// without its port (an IP address for IP literals).
	TLSName string
	// Hosts are the host:port pairs to connect to, in order (SRV targets
	// by priority and weight, else one).
	Hosts []string
	// Via says how the target was found ("ip literal", "explicit port",
	// "well-known", "srv _matrix-fed._tcp", "default port 8448", ...).
	Via string
}

// StepRecord is one timed step of a server's check.
type StepRecord struct {
	Name     string
	Duration time.Duration
	Err      error
	Detail   string
}

// steps collects the timed steps of one server's check (a run checks its
// servers concurrently, each into its own list, merged in order).
type steps struct {
	list []StepRecord
}

func (s *steps) do(name string, fn func() (string, error)) error {
	t0 := time.Now()
	detail, err := fn()
	s.list = append(s.list, StepRecord{Name: name, Duration: time.Since(t0), Err: err, Detail: detail})
	return err
}

// wellKnownEntry is a cached delegation of one hostname.
type wellKnownEntry struct {
	server  string
	expires time.Time
}

// wellKnownCache keeps the delegations .well-known/matrix/server gave,
// for as long as their Cache-Control allows: remote homeservers cache them
// so, and a fetch failing while the entry is fresh does not break
// federation yet (the run warns instead of failing).
type wellKnownCache struct {
	mu sync.Mutex
	m  map[string]wellKnownEntry
}

func (c *wellKnownCache) get(host string, now time.Time) (wellKnownEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[host]
	if !ok || !now.Before(e.expires) {
		return wellKnownEntry{}, false
	}
	return e, true
}

func (c *wellKnownCache) put(host string, e wellKnownEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]wellKnownEntry{}
	}
	c.m[host] = e
}

// Cache lifetimes of .well-known/matrix/server answers: the specification's
// default when the answer says nothing, and the cap Synapse applies
// (synapse/http/federation/well_known_resolver.py).
const (
	WellKnownDefaultCache = 24 * time.Hour
	WellKnownMaxCache     = 48 * time.Hour
	// wellKnownMaxBytes bounds the .well-known body (mautrix's limit).
	wellKnownMaxBytes = 64 << 10
	// maxRedirects bounds the redirects a .well-known fetch follows.
	maxRedirects = 10
)

// cacheLifetime is how long an answer may be cached: Cache-Control
// max-age (no-store, no-cache: not at all), else Expires, else the
// default; capped. mautrix's RequestWellKnown returns 24 h whatever the
// headers say, which is why the fetch is done here.
func cacheLifetime(h http.Header, now time.Time) time.Duration {
	d := WellKnownDefaultCache
	found := false
	for _, part := range strings.Split(h.Get("Cache-Control"), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(strings.ToLower(part)), "=")
		switch k {
		case "no-store", "no-cache":
			return 0
		case "max-age":
			if n, err := strconv.Atoi(strings.Trim(v, `"`)); err == nil && n >= 0 {
				d, found = time.Duration(n)*time.Second, true
			}
		}
	}
	if !found {
		if t, err := http.ParseTime(h.Get("Expires")); err == nil {
			d = max(t.Sub(now), 0)
		}
	}
	return min(d, WellKnownMaxCache)
}

// errNoWellKnown: the hostname serves no delegation (nothing listens, or
// 404): discovery goes on with SRV records, as the specification says.
const errNoWellKnown = probes.ConstError("no .well-known/matrix/server")

// Discoverer finds federation targets, timing each step.
type Discoverer struct {
	Resolver *net.Resolver
	Roots    *x509.CertPool
	cache    *wellKnownCache
	// wellKnownPort (tests) replaces 443 for .well-known fetches, which a
	// test cannot listen on beside others.
	wellKnownPort int
}

// NewDiscoverer returns a discoverer with its own .well-known cache.
func NewDiscoverer(r *net.Resolver, roots *x509.CertPool) *Discoverer {
	if r == nil {
		r = net.DefaultResolver
	}
	return &Discoverer{Resolver: r, Roots: roots, cache: &wellKnownCache{}}
}

func (d *Discoverer) dialer() *net.Dialer {
	return &net.Dialer{Resolver: d.Resolver, Timeout: dialTimeout}
}

// Discover runs server discovery for serverName, recording its steps into
// st: well_known (hostnames without a port), srv (when the delegation
// names no port), resolve (hostnames). warn is set when a cached
// delegation stood in for a failing .well-known.
func (d *Discoverer) Discover(ctx context.Context, serverName string, st *steps) (t Target, warn error, err error) {
	host, port, ok := mxfed.ParseServerName(serverName)
	if !ok {
		err = probes.Errorf(ClassDiscovery, "%q is not a valid server name", serverName)
		st.list = append(st.list, StepRecord{Name: StepWellKnown, Err: err})
		return t, nil, err
	}
	t.ServerName = serverName
	// Steps 1 and 2: an IP literal or an explicit port needs no lookup of
	// a delegation.
	if ip := net.ParseIP(host); ip != nil {
		t.HostHeader, t.TLSName, t.Via = serverName, host, "ip literal"
		t.Hosts = []string{net.JoinHostPort(host, portOr(port))}
		return t, nil, nil
	}
	if port != 0 {
		t.HostHeader, t.TLSName, t.Via = serverName, host, "explicit port"
		return t, nil, d.resolve(ctx, &t, []string{net.JoinHostPort(host, portOr(port))}, st)
	}
	// Step 3: .well-known/matrix/server on the hostname.
	delegated := ""
	err = st.do(StepWellKnown, func() (string, error) {
		server, life, err := d.fetchWellKnown(ctx, host)
		now := time.Now()
		switch {
		case err == nil:
			delegated = server
			if life > 0 {
				d.cache.put(host, wellKnownEntry{server: server, expires: now.Add(life)})
			}
			return fmt.Sprintf("delegates to %s (cacheable %s)", server, life), nil
		case errors.Is(err, errNoWellKnown):
			return "no delegation (" + err.Error() + ")", nil
		}
		if e, ok := d.cache.get(host, now); ok {
			delegated = e.server
			warn = probes.WithClass(probes.Classify(err), fmt.Errorf("%s: .well-known failing (%v); the cached delegation to %s stands until %s", host, err, e.server, e.expires.UTC().Format(time.RFC3339)))
			return "cached delegation to " + e.server, nil
		}
		return "", err
	})
	if err != nil {
		return t, nil, err
	}
	if delegated != "" {
		dh, dp, ok := mxfed.ParseServerName(delegated)
		if !ok {
			// Checked by fetchWellKnown; a cached entry passed it too.
			return t, warn, probes.Errorf(ClassDiscovery, "m.server %q is not a server name", delegated)
		}
		t.HostHeader, t.TLSName = delegated, dh
		// 3.1, 3.2: an IP literal or a port in the delegation.
		if net.ParseIP(dh) != nil {
			t.Via = "well-known, ip literal"
			t.Hosts = []string{net.JoinHostPort(dh, portOr(dp))}
			return t, warn, nil
		}
		if dp != 0 {
			t.Via = "well-known, explicit port"
			return t, warn, d.resolve(ctx, &t, []string{net.JoinHostPort(dh, portOr(dp))}, st)
		}
		host = dh
	} else {
		t.HostHeader, t.TLSName = serverName, host
	}
	// 3.3-3.5, 4-6: SRV records of the (delegated) hostname, else 8448.
	var hosts []string
	err = st.do(StepSRV, func() (string, error) {
		for _, service := range []string{"matrix-fed", "matrix"} {
			_, srvs, err := d.Resolver.LookupSRV(ctx, service, "tcp", host)
			if err != nil {
				if notFound(err) {
					continue
				}
				return "", probes.WithClass(ClassDiscovery, fmt.Errorf("SRV _%s._tcp.%s: %w", service, host, err))
			}
			var names []string
			for _, s := range srvs {
				if s.Target == "." {
					continue // "service not available here" (RFC 2782)
				}
				hp := net.JoinHostPort(strings.TrimSuffix(s.Target, "."), strconv.Itoa(int(s.Port)))
				hosts = append(hosts, hp)
				names = append(names, hp)
			}
			if len(hosts) == 0 {
				return "", probes.Errorf(ClassDiscovery, "SRV _%s._tcp.%s says the service is not available", service, host)
			}
			t.Via = viaPrefix(delegated) + "srv _" + service + "._tcp"
			note := ""
			if service == "matrix" {
				note = " (deprecated record)"
			}
			return fmt.Sprintf("_%s._tcp.%s → %s%s", service, host, strings.Join(names, ", "), note), nil
		}
		hosts = []string{net.JoinHostPort(host, "8448")}
		t.Via = viaPrefix(delegated) + "default port 8448"
		return "no SRV record for " + host + ": port 8448", nil
	})
	if err != nil {
		return t, warn, err
	}
	return t, warn, d.resolve(ctx, &t, hosts, st)
}

func viaPrefix(delegated string) string {
	if delegated != "" {
		return "well-known, "
	}
	return ""
}

func portOr(p uint16) string {
	if p == 0 {
		return "8448"
	}
	return strconv.Itoa(int(p))
}

// resolve looks the hosts' addresses up (the resolve step): t.Hosts gets
// IP:port pairs, in order.
func (d *Discoverer) resolve(ctx context.Context, t *Target, hosts []string, st *steps) error {
	return st.do(StepResolve, func() (string, error) {
		var out, notes []string
		var last error
		for _, hp := range hosts {
			h, p, _ := net.SplitHostPort(hp)
			if net.ParseIP(h) != nil {
				out = append(out, hp)
				continue
			}
			addrs, err := d.Resolver.LookupIPAddr(ctx, h)
			if err != nil {
				last = err
				continue
			}
			for _, a := range addrs {
				out = append(out, net.JoinHostPort(a.IP.String(), p))
			}
			notes = append(notes, fmt.Sprintf("%s → %d addresses", h, len(addrs)))
		}
		if len(out) == 0 {
			if ctx.Err() != nil {
				return "", fmt.Errorf("resolving %s: %w", strings.Join(hosts, ", "), ctx.Err())
			}
			return "", probes.WithClass(ClassDiscovery, fmt.Errorf("no address for %s: %w", strings.Join(hosts, ", "), last))
		}
		t.Hosts = out
		return strings.Join(notes, "; "), nil
	})
}

// fetchWellKnown fetches https://host/.well-known/matrix/server, following
// redirects (at most maxRedirects), and returns the delegated server name
// and how long it may be cached. errNoWellKnown when nothing is served
// there; a classified error when something is served but is not a valid
// delegation (a redirect loop, an error status, a body that is not the
// JSON object, an m.server that is not a server name).
func (d *Discoverer) fetchWellKnown(ctx context.Context, host string) (string, time.Duration, error) {
	dialer := d.dialer()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if h, p, err := net.SplitHostPort(addr); err == nil && p == "443" && d.wellKnownPort != 0 {
				addr = net.JoinHostPort(h, strconv.Itoa(d.wellKnownPort))
			}
			return dialer.DialContext(ctx, network, addr)
		},
		TLSClientConfig:     &tls.Config{RootCAs: d.Roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: dialTimeout,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, CheckRedirect: func(_ *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return probes.Errorf(ClassDiscovery, "more than %d redirects (a redirect loop?)", maxRedirects)
		}
		return nil
	}}
	u := url.URL{Scheme: "https", Host: host, Path: "/.well-known/matrix/server"}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", 0, probes.Errorf(probes.ClassConfig, "well-known URL: %v", err)
	}
	req.Header.Set("User-Agent", mxclient.UserAgent)
	resp, err := client.Do(req)
	if err != nil {
		var pe *probes.Error
		switch {
		case errors.As(err, &pe):
			return "", 0, err
		case isTLSError(err):
			return "", 0, probes.WithClass(ClassTLS, fmt.Errorf("https://%s/.well-known/matrix/server: %w", host, err))
		}
		if c := probes.Classify(err); c == probes.ClassUnreachable {
			return "", 0, fmt.Errorf("%w: %v", errNoWellKnown, shortNetErr(err))
		}
		return "", 0, probes.WithClass(ClassDiscovery, fmt.Errorf("https://%s/.well-known/matrix/server: %w", host, err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, wellKnownMaxBytes+1))
	if err != nil {
		return "", 0, probes.WithClass(ClassDiscovery, fmt.Errorf("reading .well-known: %w", err))
	}
	if resp.StatusCode == http.StatusNotFound {
		return "", 0, fmt.Errorf("%w: HTTP 404", errNoWellKnown)
	}
	if resp.StatusCode != http.StatusOK {
		return "", 0, &probes.Error{Class: ClassDiscovery, Status: resp.StatusCode, Err: fmt.Errorf(".well-known/matrix/server: HTTP %d", resp.StatusCode)}
	}
	if len(body) > wellKnownMaxBytes {
		return "", 0, probes.Errorf(ClassDiscovery, ".well-known/matrix/server: body longer than %d bytes", wellKnownMaxBytes)
	}
	var wk mxfed.RespWellKnown
	if err := json.Unmarshal(body, &wk); err != nil {
		return "", 0, probes.Errorf(ClassDiscovery, ".well-known/matrix/server is not a JSON object (%d bytes: %q)", len(body), mxclient.Short(string(body)))
	}
	if wk.Server == "" {
		return "", 0, probes.Errorf(ClassDiscovery, ".well-known/matrix/server has no m.server")
	}
	if _, _, ok := mxfed.ParseServerName(wk.Server); !ok {
		return "", 0, probes.Errorf(ClassDiscovery, ".well-known/matrix/server: m.server %q is not a server name", mxclient.Short(wk.Server))
	}
	return wk.Server, cacheLifetime(resp.Header, time.Now()), nil
}

// isTLSError reports whether err is a certificate or handshake failure.
func isTLSError(err error) bool {
	var (
		ue  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		ve  *tls.CertificateVerificationError
		ae  tls.AlertError
		rhe tls.RecordHeaderError
	)
	return errors.As(err, &ue) || errors.As(err, &he) || errors.As(err, &ci) || errors.As(err, &ve) ||
		errors.As(err, &ae) || errors.As(err, &rhe)
}

// shortNetErr is err's innermost text (connection refused, no such host),
// without the URL around it.
func shortNetErr(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		return de.Error()
	}
	return err.Error()
}

// Resolve runs discovery for serverName without recording its steps (for
// probes that only need where federation traffic goes, such as tls).
func (d *Discoverer) Resolve(ctx context.Context, serverName string) (Target, error) {
	var st steps
	t, _, err := d.Discover(ctx, serverName, &st)
	return t, err
}
