// Package federation is the `federation` probe: for each server name it
// runs server discovery as the specification orders it (.well-known with
// caching, SRV _matrix-fed._tcp then _matrix._tcp, port 8448, IP literals),
// each step timed, connects over TLS to the name discovery says the
// certificate must hold, asks /_matrix/federation/v1/version, and checks
// /_matrix/key/v2/server: the keys parse, their self-signature verifies and
// valid_until_ts is ahead; optionally a notary serves the same keys.
// mautrix's federation package parses server names and keys and verifies
// the signatures.
package federation

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	mxfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/federation/signutil"
	"maunium.net/go/mautrix/id"

	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// Steps of a run, per server name, in order. Discovery steps run only
// where the name needs them: an IP literal has none, a name with a port
// only resolve.
const (
	StepWellKnown   = "well_known"   // GET https://host/.well-known/matrix/server
	StepSRV         = "srv"          // _matrix-fed._tcp, then _matrix._tcp
	StepResolve     = "resolve"      // A/AAAA of the target hosts
	StepConnect     = "connect"      // TCP to the first target that answers
	StepTLS         = "tls"          // handshake, chain, name
	StepVersion     = "version"      // GET /_matrix/federation/v1/version
	StepKeys        = "keys"         // GET /_matrix/key/v2/server, parsed
	StepSignature   = "signature"    // the keys' self-signature (ed25519)
	StepKeyValidity = "key_validity" // valid_until_ts ahead
	StepNotary      = "notary"       // POST /_matrix/key/v2/query at the notary
)

// AllSteps are the steps a run may report.
func AllSteps() []string {
	return []string{StepWellKnown, StepSRV, StepResolve, StepConnect, StepTLS, StepVersion, StepKeys, StepSignature, StepKeyValidity, StepNotary}
}

// Failure classes of the federation probe (beyond the shared ones, of
// which unreachable and timeout are the usual).
const (
	// ClassDiscovery: a .well-known that is served but broken (garbage,
	// redirect loop, error status), a DNS failure, a name without address.
	ClassDiscovery probes.Class = "discovery"
	// ClassTLS: handshake failure, untrusted chain, a certificate not
	// valid for the name discovery gives, an expired one.
	ClassTLS probes.Class = "tls"
	// ClassKeys: the key answer is not a valid key set for the server
	// (unparsable, another server_name, no key, valid_until_ts past).
	ClassKeys probes.Class = "keys"
	// ClassSignature: the key set's self-signature does not verify.
	ClassSignature probes.Class = "signature"
)

// Classes are the classes a run may report.
func Classes() []probes.Class {
	return append(probes.SharedClasses(), ClassDiscovery, ClassTLS, ClassKeys, ClassSignature)
}

// Signals of a run, per server name: "<signal>:<server name>"; step
// durations as "step_seconds.<step>:<server name>".
const (
	SignalUp            = "federation_up"
	SignalKeyValidUntil = "federation_key_valid_until_seconds"
	SignalStepPrefix    = "federation_step_seconds."
)

// maxKeyBytes bounds a key answer (a few keys and signatures: a few kB).
const maxKeyBytes = 1 << 20

// Probe is a configured federation probe.
type Probe struct {
	Name     string
	Settings *Settings
	disc     *Discoverer
}

// NewProbe builds the probe of settings s (its resolver, trust and
// .well-known cache).
func NewProbe(name string, s *Settings) *Probe {
	return &Probe{Name: name, Settings: s, disc: NewDiscoverer(NewResolver(s.DNSServer), s.roots)}
}

// serverCheck is what checking one server name gave.
type serverCheck struct {
	steps *steps
	warn  error
	ok    bool
	keys  *mxfed.ServerKeyResponse
}

// Run implements probes.Prober. subject is "" (the probe covers its
// configured server names).
func (p *Probe) Run(ctx context.Context, subject string) probes.Result {
	rec := probes.NewRecorder(p.Name, TypeFederation, subject)
	names := p.Settings.ServerNames
	checks := make([]serverCheck, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			checks[i] = p.check(ctx, name)
		}()
	}
	wg.Wait()
	var warn error
	warnStep := ""
	for i, name := range names {
		c := checks[i]
		for _, s := range c.steps.list {
			rec.AddStep(s.Name, s.Duration, prefixErr(name, s.Err))
			if s.Detail != "" {
				rec.Note(name + ": " + s.Detail)
			}
			rec.Signal(SignalStepPrefix+s.Name+":"+name, s.Duration.Seconds())
		}
		up := 0.0
		if c.ok {
			up = 1
		}
		rec.Signal(SignalUp+":"+name, up)
		if c.keys != nil {
			rec.Signal(SignalKeyValidUntil+":"+name, float64(c.keys.ValidUntilTS.UnixMilli())/1000)
		}
		if c.warn != nil && warn == nil {
			warn, warnStep = prefixErr(name, c.warn), StepWellKnown
		}
	}
	if warn != nil {
		rec.Warn(warnStep, probes.Classify(warn), warn.Error())
	}
	return rec.Finish()
}

// prefixErr names the server in err's text, keeping its class.
func prefixErr(name string, err error) error {
	if err == nil {
		return nil
	}
	return &probes.Error{Class: probes.Classify(err), Status: probes.StatusOf(err), Err: fmt.Errorf("%s: %w", name, err)}
}

// check runs discovery and the checks of one server name.
func (p *Probe) check(ctx context.Context, name string) serverCheck {
	c := serverCheck{steps: &steps{}}
	st := c.steps
	t, warn, err := p.disc.Discover(ctx, name, st)
	c.warn = warn
	if err != nil {
		return c
	}
	conn, err := p.disc.Connect(ctx, t, st)
	if err != nil {
		return c
	}
	client, done := oneConnClient(conn, p.disc, t)
	defer done()
	if st.do(StepVersion, func() (string, error) {
		var v mxfed.RespServerVersion
		if err := getJSON(ctx, client, t.HostHeader, "/_matrix/federation/v1/version", &v, ClassForStatus); err != nil {
			return "", err
		}
		if v.Server.Name == "" {
			return "", probes.Errorf(probes.ClassBadResponse, "version: no server.name in the answer")
		}
		return mxclient.Short(v.Server.Name + " " + v.Server.Version), nil
	}) != nil {
		return c
	}
	var keys *mxfed.ServerKeyResponse
	if st.do(StepKeys, func() (string, error) {
		var err error
		keys, err = fetchKeys(ctx, client, t.HostHeader, name)
		if err != nil {
			return "", err
		}
		ids := make([]string, 0, len(keys.VerifyKeys))
		for k := range keys.VerifyKeys {
			ids = append(ids, string(k))
		}
		slices.Sort(ids)
		return "keys " + strings.Join(ids, ", "), nil
	}) != nil {
		return c
	}
	if st.do(StepSignature, func() (string, error) { return "", verifySelf(keys) }) != nil {
		return c
	}
	c.keys = keys
	if st.do(StepKeyValidity, func() (string, error) {
		until := keys.ValidUntilTS.Time
		left := time.Until(until)
		if left <= 0 {
			return "", probes.Errorf(ClassKeys, "valid_until_ts %s is %s past", until.UTC().Format(time.RFC3339), (-left).Round(time.Second))
		}
		return fmt.Sprintf("valid until %s (%s ahead)", until.UTC().Format(time.RFC3339), left.Round(time.Minute)), nil
	}) != nil {
		return c
	}
	if n := p.Settings.Notary; n != "" {
		if st.do(StepNotary, func() (string, error) { return p.checkNotary(ctx, n, keys) }) != nil {
			return c
		}
	}
	c.ok = true
	return c
}

// ClassForStatus is the class of an error status of a federation answer.
func ClassForStatus(status int) probes.Class {
	if c := probes.ClassForStatus(status); c != probes.ClassNone {
		return c
	}
	return probes.ClassBadResponse
}

// Connect opens a TCP connection to the first of t.Hosts that answers
// (step connect) and runs the TLS handshake for t.TLSName over it (step
// tls).
func (d *Discoverer) Connect(ctx context.Context, t Target, st *steps) (*tls.Conn, error) {
	var raw net.Conn
	if err := st.do(StepConnect, func() (string, error) {
		var errs []error
		for _, hp := range t.Hosts {
			dctx, cancel := context.WithTimeout(ctx, dialTimeout)
			c, err := d.dialer().DialContext(dctx, "tcp", hp)
			cancel()
			if err == nil {
				raw = c
				return hp + " (" + t.Via + ")", nil
			}
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
		}
		if len(errs) == 1 {
			return "", errs[0]
		}
		return "", fmt.Errorf("%d targets (%s): %w", len(t.Hosts), strings.Join(t.Hosts, ", "), errors.Join(errs...))
	}); err != nil {
		return nil, err
	}
	var conn *tls.Conn
	err := st.do(StepTLS, func() (string, error) {
		conn = tls.Client(raw, &tls.Config{ServerName: t.TLSName, RootCAs: d.Roots, MinVersion: tls.VersionTLS12})
		if err := conn.HandshakeContext(ctx); err != nil {
			if ctx.Err() != nil {
				return "", err
			}
			return "", probes.WithClass(ClassTLS, fmt.Errorf("TLS for %s: %w", t.TLSName, err))
		}
		cs := conn.ConnectionState()
		exp := EarliestExpiry(cs.PeerCertificates)
		return fmt.Sprintf("%s, certificate for %s valid until %s", tls.VersionName(cs.Version), t.TLSName, exp.UTC().Format(time.DateOnly)), nil
	})
	if err != nil {
		_ = raw.Close()
		return nil, err
	}
	return conn, nil
}

// oneConnClient is an HTTP client whose first connection is conn (already
// checked) and whose later ones go to the same target; done closes them.
func oneConnClient(conn *tls.Conn, d *Discoverer, t Target) (*http.Client, func()) {
	var mu sync.Mutex
	first := conn
	tr := &http.Transport{
		DialTLSContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			mu.Lock()
			c := first
			first = nil
			mu.Unlock()
			if c != nil {
				return c, nil
			}
			raw, err := d.dialer().DialContext(ctx, "tcp", t.Hosts[0])
			if err != nil {
				return nil, err
			}
			tc := tls.Client(raw, &tls.Config{ServerName: t.TLSName, RootCAs: d.Roots, MinVersion: tls.VersionTLS12})
			if err := tc.HandshakeContext(ctx); err != nil {
				_ = raw.Close()
				return nil, err
			}
			return tc, nil
		},
		MaxIdleConnsPerHost: 1,
	}
	return &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		func() {
			tr.CloseIdleConnections()
			mu.Lock()
			if first != nil {
				_ = first.Close()
			}
			mu.Unlock()
		}
}

// getJSON GETs path from host (the Host header; the client knows where to
// connect) and decodes a 200 answer into out.
func getJSON(ctx context.Context, client *http.Client, host, path string, out any, classFor func(int) probes.Class) error {
	body, status, err := do(ctx, client, http.MethodGet, host, path, nil)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return &probes.Error{Class: classFor(status), Status: status, Err: fmt.Errorf("%s: HTTP %d", path, status)}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return &probes.Error{Class: probes.ClassBadResponse, Status: status, Err: fmt.Errorf("%s: not the expected JSON (%d bytes)", path, len(body))}
	}
	return nil
}

func do(ctx context.Context, client *http.Client, method, host, path string, reqBody []byte) ([]byte, int, error) {
	u := url.URL{Scheme: "https", Host: host, Path: path}
	var rd io.Reader
	if reqBody != nil {
		rd = bytes.NewReader(reqBody)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, 0, probes.Errorf(probes.ClassConfig, "request: %v", err)
	}
	req.Header.Set("User-Agent", mxclient.UserAgent)
	if reqBody != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		if isTLSError(err) {
			return nil, 0, probes.WithClass(ClassTLS, err)
		}
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxKeyBytes+1))
	if err != nil {
		return nil, resp.StatusCode, probes.WithClass(probes.ClassBadResponse, fmt.Errorf("%s: reading the answer: %w", path, err))
	}
	if len(body) > maxKeyBytes {
		return nil, resp.StatusCode, &probes.Error{Class: probes.ClassBadResponse, Status: resp.StatusCode, Err: fmt.Errorf("%s: answer longer than %d bytes", path, maxKeyBytes)}
	}
	return body, resp.StatusCode, nil
}

// keysClass: an error status of the key endpoint (a 404: no keys served).
func keysClass(status int) probes.Class {
	if status == http.StatusNotFound {
		return ClassKeys
	}
	return ClassForStatus(status)
}

// fetchKeys gets and parses /_matrix/key/v2/server of server name (sent to
// host) and checks it is a key set of that server.
func fetchKeys(ctx context.Context, client *http.Client, host, name string) (*mxfed.ServerKeyResponse, error) {
	body, status, err := do(ctx, client, http.MethodGet, host, "/_matrix/key/v2/server", nil)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, &probes.Error{Class: keysClass(status), Status: status, Err: fmt.Errorf("/_matrix/key/v2/server: HTTP %d", status)}
	}
	var keys mxfed.ServerKeyResponse
	if err := json.Unmarshal(body, &keys); err != nil {
		return nil, &probes.Error{Class: ClassKeys, Status: status, Err: fmt.Errorf("key answer is not a key set: %v", err)}
	}
	if err := checkKeySet(&keys, name); err != nil {
		return nil, &probes.Error{Class: ClassKeys, Status: status, Err: err}
	}
	return &keys, nil
}

// checkKeySet: the key set is of server name, has keys, and they decode
// to ed25519 public keys.
func checkKeySet(keys *mxfed.ServerKeyResponse, name string) error {
	if keys.ServerName != name {
		return fmt.Errorf("key set of %q, expected %q", mxclient.Short(keys.ServerName), name)
	}
	if len(keys.VerifyKeys) == 0 {
		return errors.New("no verify_keys")
	}
	for kid, k := range keys.VerifyKeys {
		alg, _ := kid.Parse()
		if alg != id.KeyAlgorithmEd25519 {
			return fmt.Errorf("key %s: algorithm %q, expected ed25519", mxclient.Short(string(kid)), alg)
		}
		if pub, err := k.Decode(); err != nil || len(pub) != 32 {
			return fmt.Errorf("key %s is not an ed25519 public key (unpadded base64 of 32 bytes)", mxclient.Short(string(kid)))
		}
	}
	if keys.ValidUntilTS.IsZero() {
		return errors.New("no valid_until_ts")
	}
	return nil
}

// verifySelf checks that every verify key signed the key set.
func verifySelf(keys *mxfed.ServerKeyResponse) error {
	if err := keys.VerifySelfSignature(); err != nil {
		return probes.WithClass(ClassSignature, err)
	}
	return nil
}

// checkNotary asks the notary for the key set of keys.ServerName and
// checks that the notary serves the same keys, self-signed and signed by
// the notary (whose own keys come from its /_matrix/key/v2/server).
func (p *Probe) checkNotary(ctx context.Context, notary string, keys *mxfed.ServerKeyResponse) (string, error) {
	var nst steps
	t, _, err := p.disc.Discover(ctx, notary, &nst)
	if err != nil {
		return "", fmt.Errorf("notary %s: %w", notary, err)
	}
	conn, err := p.disc.Connect(ctx, t, &nst)
	if err != nil {
		return "", fmt.Errorf("notary %s: %w", notary, err)
	}
	client, done := oneConnClient(conn, p.disc, t)
	defer done()
	nkeys, err := fetchKeys(ctx, client, t.HostHeader, notary)
	if err != nil {
		return "", fmt.Errorf("notary %s's own keys: %w", notary, err)
	}
	if err := verifySelf(nkeys); err != nil {
		return "", fmt.Errorf("notary %s's own keys: %w", notary, err)
	}
	req, _ := json.Marshal(mxfed.ReqQueryKeys{ServerKeys: map[string]map[id.KeyID]mxfed.QueryKeysCriteria{keys.ServerName: {}}})
	body, status, err := do(ctx, client, http.MethodPost, t.HostHeader, "/_matrix/key/v2/query", req)
	if err != nil {
		return "", fmt.Errorf("notary %s: %w", notary, err)
	}
	if status != http.StatusOK {
		return "", &probes.Error{Class: ClassForStatus(status), Status: status, Err: fmt.Errorf("notary %s: /_matrix/key/v2/query: HTTP %d", notary, status)}
	}
	var q mxfed.QueryKeysResponse
	if err := json.Unmarshal(body, &q); err != nil {
		return "", probes.Errorf(ClassKeys, "notary %s: query answer is not JSON key sets", notary)
	}
	for _, sk := range q.ServerKeys {
		if sk == nil || sk.ServerName != keys.ServerName {
			continue
		}
		if err := checkKeySet(sk, keys.ServerName); err != nil {
			return "", probes.Errorf(ClassKeys, "notary %s: %v", notary, err)
		}
		if err := sk.VerifySelfSignature(); err != nil {
			return "", probes.WithClass(ClassSignature, fmt.Errorf("notary %s serves keys of %s whose self-signature fails: %w", notary, keys.ServerName, err))
		}
		signed := false
		for kid, k := range nkeys.VerifyKeys {
			if signutil.VerifyJSON(notary, kid, k.Key, sk.Raw) == nil {
				signed = true
				break
			}
		}
		if !signed {
			return "", probes.Errorf(ClassSignature, "notary %s did not sign the keys it serves for %s", notary, keys.ServerName)
		}
		for kid, k := range keys.VerifyKeys {
			if got, ok := sk.VerifyKeys[kid]; !ok || got.Key != k.Key {
				return "", probes.Errorf(ClassKeys, "notary %s serves other keys for %s than the server (key %s)", notary, keys.ServerName, kid)
			}
		}
		return fmt.Sprintf("notary %s serves the same keys, signed", notary), nil
	}
	return "", probes.Errorf(ClassKeys, "notary %s has no keys of %s", notary, keys.ServerName)
}
