package federation

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/rs/zerolog"
	"go.mau.fi/util/jsontime"
	mxfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// fedServer is a federation endpoint on loopback over TLS: mautrix's key
// server (the real key endpoints and signatures), and a .well-known a test
// sets; keyBody, when set, replaces the key answer (fault injection).
type fedServer struct {
	srv  *httptest.Server
	port int

	mu        sync.Mutex
	wellKnown func(w http.ResponseWriter, r *http.Request)
	keyBody   []byte
	hits      map[string]int
}

func startFedServer(t *testing.T, leaf testenv.Leaf, serverName string, key *mxfed.SigningKey) *fedServer {
	t.Helper()
	f := &fedServer{hits: map[string]int{}}
	ks := &mxfed.KeyServer{
		KeyProvider: &mxfed.StaticServerKey{ServerName: serverName, Key: key},
		Version:     mxfed.ServerVersion{Name: "mautrix-keyserver", Version: "test"},
	}
	inner := http.NewServeMux()
	ks.Register(inner, zerolog.Nop())
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.hits[r.URL.Path]++
		wk, body := f.wellKnown, f.keyBody
		f.mu.Unlock()
		switch {
		case r.URL.Path == "/.well-known/matrix/server":
			if wk == nil {
				http.NotFound(w, r)
				return
			}
			wk(w, r)
		case r.URL.Path == "/_matrix/key/v2/server" && body != nil:
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
		default:
			inner.ServeHTTP(w, r)
		}
	})
	f.srv = httptest.NewUnstartedServer(mux)
	f.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the point of some tests
	f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	_, p, _ := net.SplitHostPort(f.srv.Listener.Addr().String())
	f.port, _ = strconv.Atoi(p)
	return f
}

func (f *fedServer) set(fn func(*fedServer)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// zone is the DNS of the tests' names: hs.test delegates (.well-known) to
// fed.hs.test, whose SRV record names the server's port.
func zone(t *testing.T, port int) *testenv.DNSServer {
	d := testenv.NewDNSServer(t)
	d.A("hs.test", "127.0.0.1")
	d.A("fed.hs.test", "127.0.0.1")
	d.SRV("_matrix-fed._tcp.fed.hs.test", 10, 5, uint16(port), "fed.hs.test")
	return d
}

func newTestProbe(t *testing.T, dnsAddr, caFile string, wellKnownPort int, names ...string) *Probe {
	t.Helper()
	roots, err := LoadRoots(caFile)
	if err != nil {
		t.Fatal(err)
	}
	s := &Settings{ServerNames: names, DNSServer: dnsAddr, CAFile: caFile, roots: roots}
	p := NewProbe("fed", s)
	p.disc.wellKnownPort = wellKnownPort
	return p
}

func stepNames(r probes.Result) []string {
	var out []string
	for _, s := range r.Steps {
		out = append(out, s.Name)
	}
	return out
}

func runChecked(t *testing.T, p *Probe) probes.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
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

// TestDiscoveryThroughWellKnownAndSRV: hs.test delegates to fed.hs.test
// (.well-known, served with a max-age), whose _matrix-fed._tcp SRV record
// names the port; the certificate must be valid for fed.hs.test, the keys
// are hs.test's. Every discovery step runs and is timed, and the keys'
// validity is a signal.
func TestDiscoveryThroughWellKnownAndSRV(t *testing.T) {
	ca := testenv.NewTestCA(t)
	leaf := ca.Issue(t, time.Now().Add(90*24*time.Hour), "hs.test", "fed.hs.test")
	key := mxfed.GenerateSigningKey()
	f := startFedServer(t, leaf, "hs.test", key)
	f.set(func(f *fedServer) {
		f.wellKnown = func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Cache-Control", "max-age=3600")
			_, _ = w.Write([]byte(`{"m.server": "fed.hs.test"}`))
		}
	})
	d := zone(t, f.port)
	p := newTestProbe(t, d.Addr, ca.CAFile, f.port, "hs.test")
	r := runChecked(t, p)
	if r.Outcome != probes.OutcomeSuccess {
		t.Fatalf("run: %s", describe(r))
	}
	want := []string{StepWellKnown, StepSRV, StepResolve, StepConnect, StepTLS, StepVersion, StepKeys, StepSignature, StepKeyValidity}
	if got := stepNames(r); !slices.Equal(got, want) {
		t.Errorf("steps %v, want %v", got, want)
	}
	for _, s := range r.Steps {
		if s.Duration <= 0 {
			t.Errorf("step %s not timed", s.Name)
		}
		if _, ok := r.Signals[SignalStepPrefix+s.Name+":hs.test"]; !ok {
			t.Errorf("no step signal for %s", s.Name)
		}
	}
	details := strings.Join(func() []string {
		var o []string
		for _, s := range r.Steps {
			o = append(o, s.Detail)
		}
		return o
	}(), "\n")
	for _, w := range []string{"delegates to fed.hs.test (cacheable 1h0m0s)", "_matrix-fed._tcp.fed.hs.test → fed.hs.test:" + strconv.Itoa(f.port), "mautrix-keyserver test", string(key.ID)} {
		if !strings.Contains(details, w) {
			t.Errorf("details lack %q:\n%s", w, details)
		}
	}
	if v := r.Signals[SignalKeyValidUntil+":hs.test"]; v < float64(time.Now().Add(23*time.Hour).Unix()) {
		t.Errorf("key validity signal %v", v)
	}
	if r.Signals[SignalUp+":hs.test"] != 1 {
		t.Errorf("up signal %v", r.Signals)
	}

	// A .well-known failing while its delegation is cached: remote
	// servers still federate, so the run warns.
	f.set(func(f *fedServer) {
		f.wellKnown = func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "oops", http.StatusInternalServerError) }
	})
	r = runChecked(t, p)
	if r.Outcome != probes.OutcomeWarning || r.Class != ClassDiscovery || !strings.Contains(r.Error, "cached delegation to fed.hs.test") {
		t.Errorf("failing .well-known with a cached delegation: %s", describe(r))
	}
	// Without the cache, the same answer fails discovery.
	p2 := newTestProbe(t, d.Addr, ca.CAFile, f.port, "hs.test")
	r = runChecked(t, p2)
	if r.Outcome != probes.OutcomeFailure || r.Class != ClassDiscovery || r.FailedStep != StepWellKnown {
		t.Errorf("failing .well-known, nothing cached: %s", describe(r))
	}
}

// TestDiscoveryOrder: the deprecated _matrix._tcp record is used when
// _matrix-fed._tcp is absent; a name with neither goes to port 8448; IP
// literals and explicit ports skip the delegation; a .well-known 404 is
// "no delegation".
func TestDiscoveryOrder(t *testing.T) {
	d := testenv.NewDNSServer(t)
	d.A("old.test", "127.0.0.1")
	d.SRV("_matrix._tcp.old.test", 10, 5, 9999, "old.test")
	d.A("plain.test", "127.0.0.1")
	d.A("port.test", "127.0.0.1")
	disc := NewDiscoverer(NewResolver(d.Addr), nil)
	disc.wellKnownPort = closedPort(t)
	for _, c := range []struct {
		name, via string
		hosts     []string
		steps     []string
	}{
		{"old.test", "srv _matrix._tcp", []string{"127.0.0.1:9999"}, []string{StepWellKnown, StepSRV, StepResolve}},
		{"plain.test", "default port 8448", []string{"127.0.0.1:8448"}, []string{StepWellKnown, StepSRV, StepResolve}},
		{"port.test:1234", "explicit port", []string{"127.0.0.1:1234"}, []string{StepResolve}},
		{"127.0.0.1", "ip literal", []string{"127.0.0.1:8448"}, nil},
		{"[::1]:8000", "ip literal", []string{"[::1]:8000"}, nil},
	} {
		var st steps
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		tg, warn, err := disc.Discover(ctx, c.name, &st)
		cancel()
		var names []string
		for _, s := range st.list {
			names = append(names, s.Name)
		}
		if err != nil || warn != nil || tg.Via != c.via || !slices.Equal(tg.Hosts, c.hosts) || !slices.Equal(names, c.steps) {
			t.Errorf("%s: %+v, steps %v, warn %v, err %v", c.name, tg, names, warn, err)
		}
	}
	// A name that does not exist: discovery, at resolve.
	var st steps
	_, _, err := disc.Discover(context.Background(), "missing.test", &st)
	if probes.Classify(err) != ClassDiscovery || st.list[len(st.list)-1].Name != StepResolve {
		t.Errorf("missing name: %v (%v)", err, st.list)
	}
	// A DNS server failing (SERVFAIL) is not "no record".
	d.Fail("_matrix-fed._tcp.plain.test", dns.RcodeServerFailure)
	st = steps{}
	_, _, err = disc.Discover(context.Background(), "plain.test", &st)
	if probes.Classify(err) != ClassDiscovery || st.list[len(st.list)-1].Name != StepSRV {
		t.Errorf("SERVFAIL: %v (%v)", err, st.list)
	}
}

func closedPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := l.Addr().(*net.TCPAddr).Port
	l.Close()
	return p
}

// signedKeys is a key answer for server name, signed by signer while
// naming key's public half (signer != key: a signature that does not
// verify), valid until until.
func signedKeys(t *testing.T, name string, key, signer *mxfed.SigningKey, until time.Time) []byte {
	t.Helper()
	skr := &mxfed.ServerKeyResponse{
		ServerName:   name,
		ValidUntilTS: jsontime.UM(until),
		VerifyKeys:   map[id.KeyID]mxfed.ServerVerifyKey{key.ID: {Key: key.Pub}},
	}
	sig, err := signer.SignJSON(skr)
	if err != nil {
		t.Fatal(err)
	}
	skr.Signatures = map[string]map[id.KeyID]string{name: {key.ID: sig}}
	b, err := json.Marshal(skr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFaults: each fault gives its class at its step.
func TestFaults(t *testing.T) {
	ca := testenv.NewTestCA(t)
	good := ca.Issue(t, time.Now().Add(90*24*time.Hour), "hs.test", "fed.hs.test")
	key := mxfed.GenerateSigningKey()
	other := mxfed.GenerateSigningKey()
	other.ID = key.ID
	delegate := func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"m.server":"fed.hs.test"}`)) }

	cases := []struct {
		name   string
		leaf   testenv.Leaf
		setup  func(f *fedServer)
		class  probes.Class
		step   string
		errHas string
	}{
		{"wrong hostname", ca.Issue(t, time.Now().Add(90*24*time.Hour), "hs.test", "elsewhere.test"),
			func(f *fedServer) { f.wellKnown = delegate }, ClassTLS, StepTLS, "fed.hs.test"},
		{"expired certificate", ca.Issue(t, time.Now().Add(-time.Hour), "hs.test", "fed.hs.test"),
			nil, ClassTLS, StepWellKnown, "expired"},
		{"signature does not verify", good, func(f *fedServer) {
			f.wellKnown = delegate
			f.keyBody = signedKeys(t, "hs.test", key, other, time.Now().Add(24*time.Hour))
		}, ClassSignature, StepSignature, "signature"},
		{"valid_until_ts past", good, func(f *fedServer) {
			f.wellKnown = delegate
			f.keyBody = signedKeys(t, "hs.test", key, key, time.Now().Add(-time.Hour))
		}, ClassKeys, StepKeyValidity, "past"},
		{"keys of another server", good, func(f *fedServer) {
			f.wellKnown = delegate
			f.keyBody = signedKeys(t, "other.test", key, key, time.Now().Add(time.Hour))
		}, ClassKeys, StepKeys, `key set of "other.test"`},
		{"keys garbage", good, func(f *fedServer) {
			f.wellKnown = delegate
			f.keyBody = []byte("<html>")
		}, ClassKeys, StepKeys, "not a key set"},
		{"well-known garbage", good, func(f *fedServer) {
			f.wellKnown = func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("<html>hello</html>")) }
		}, ClassDiscovery, StepWellKnown, "not a JSON object"},
		{"well-known without m.server", good, func(f *fedServer) {
			f.wellKnown = func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"m.homeserver":{}}`)) }
		}, ClassDiscovery, StepWellKnown, "no m.server"},
		{"well-known redirect loop", good, func(f *fedServer) {
			f.wellKnown = func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, "/.well-known/matrix/server", http.StatusFound)
			}
		}, ClassDiscovery, StepWellKnown, "redirect loop"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := startFedServer(t, c.leaf, "hs.test", key)
			if c.setup != nil {
				f.set(c.setup)
			}
			d := zone(t, f.port)
			p := newTestProbe(t, d.Addr, ca.CAFile, f.port, "hs.test")
			r := runChecked(t, p)
			if r.Outcome != probes.OutcomeFailure || r.Class != c.class || r.FailedStep != c.step || !strings.Contains(r.Error, c.errHas) {
				t.Errorf("want %s at %s (%q): %s", c.class, c.step, c.errHas, describe(r))
			}
			if r.Signals[SignalUp+":hs.test"] != 0 {
				t.Errorf("up signal %v", r.Signals)
			}
		})
	}
	// An untrusted chain (the system's roots, not the test CA).
	f := startFedServer(t, good, "hs.test", key)
	f.set(func(f *fedServer) { f.wellKnown = delegate })
	d := zone(t, f.port)
	p := newTestProbe(t, d.Addr, "", f.port, "hs.test")
	if r := runChecked(t, p); r.Class != ClassTLS || r.FailedStep != StepWellKnown {
		t.Errorf("untrusted chain: %s", describe(r))
	}
}

// TestNotary: a notary that serves the server's keys, signed by itself,
// passes; one that serves other keys fails as keys.
func TestNotary(t *testing.T) {
	ca := testenv.NewTestCA(t)
	leaf := ca.Issue(t, time.Now().Add(90*24*time.Hour), "127.0.0.1")
	key := mxfed.GenerateSigningKey()
	f := startFedServer(t, leaf, "", key)
	name := "127.0.0.1:" + strconv.Itoa(f.port)
	f.set(func(f *fedServer) {
		f.keyBody = func() []byte {
			skr := key.GenerateKeyResponse(name, nil)
			b, _ := json.Marshal(skr)
			return b
		}()
	})
	notaryKey := mxfed.GenerateSigningKey()
	var served *mxfed.SigningKey = key
	var mu sync.Mutex
	nmux := http.NewServeMux()
	notaryName := ""
	nmux.HandleFunc("GET /_matrix/key/v2/server", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(notaryKey.GenerateKeyResponse(notaryName, nil))
	})
	nmux.HandleFunc("POST /_matrix/key/v2/query", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		k := served
		mu.Unlock()
		skr := k.GenerateKeyResponse(name, nil)
		sig, err := notaryKey.SignJSON(skr)
		if err != nil {
			t.Error(err)
		}
		skr.Signatures[notaryName] = map[id.KeyID]string{notaryKey.ID: sig}
		_ = json.NewEncoder(w).Encode(mxfed.QueryKeysResponse{ServerKeys: []*mxfed.ServerKeyResponse{skr}})
	})
	ns := httptest.NewUnstartedServer(nmux)
	ns.Config.ErrorLog = log.New(io.Discard, "", 0)
	ns.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS}}
	ns.StartTLS()
	t.Cleanup(ns.Close)
	notaryName = ns.Listener.Addr().String()

	roots, _ := LoadRoots(ca.CAFile)
	p := NewProbe("fed", &Settings{ServerNames: []string{name}, Notary: notaryName, CAFile: ca.CAFile, roots: roots})
	r := runChecked(t, p)
	if r.Outcome != probes.OutcomeSuccess || stepNames(r)[len(r.Steps)-1] != StepNotary {
		t.Fatalf("notary: %s", describe(r))
	}
	mu.Lock()
	served = mxfed.GenerateSigningKey()
	mu.Unlock()
	r = runChecked(t, p)
	if r.Class != ClassKeys || r.FailedStep != StepNotary || !strings.Contains(r.Error, "other keys") {
		t.Errorf("notary serving other keys: %s", describe(r))
	}
}

func TestSettings(t *testing.T) {
	for _, c := range []struct{ yml, want string }{
		{"{server_names: [\"bad name!\"]}", `federation.server_names[0]: "bad name!" is not a server name`},
		{"{server_names: [a.test, a.test]}", `listed twice`},
		{"{dns_server: localhost:53}", `federation.dns_server: "localhost:53": the host must be an IP address`},
		{"{ca_file: /nonexistent}", `federation.ca_file:`},
		{"{bogus: 1}", `federation.bogus: unknown field`},
	} {
		_, err := parse(t, "global: {homeserver_url: http://127.0.0.1:1, server_name: example.org}\nprobes:\n  - {name: f, type: federation, federation: "+c.yml+"}\n")
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "c.yml:3") {
			t.Errorf("%s: %v, want %q", c.yml, err, c.want)
		}
	}
	cfg, err := parse(t, "global: {homeserver_url: http://127.0.0.1:1, server_name: example.org}\ntenants:\n  - {id: a, server_name: other.org, bot: {user: b, password: pw}}\nprobes:\n  - {name: f, type: federation}\n")
	if err != nil {
		t.Fatal(err)
	}
	s, err := probetype.SettingsOf[Settings](&cfg.Probes[0])
	if err != nil || !slices.Equal(s.ServerNames, []string{"example.org", "other.org"}) {
		t.Errorf("default server names: %+v %v", s, err)
	}
}

func TestMetricsObserver(t *testing.T) {
	reg := newRegistry()
	o, err := Metrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	o(probes.Result{Probe: "fed", Type: TypeFederation, Started: now, Signals: map[string]float64{
		SignalUp + ":a.test": 1, SignalUp + ":b.test": 0,
		SignalKeyValidUntil + ":a.test":     float64(now.Add(time.Hour).Unix()),
		SignalStepPrefix + "connect:a.test": 0.01, SignalStepPrefix + "connect:b.test": 0.02,
	}})
	if got := gatherText(t, reg); !strings.Contains(got, `mxprobe_federation_up{probe="fed",server_name="b.test"} 0`) ||
		!strings.Contains(got, `mxprobe_federation_step_seconds{probe="fed",server_name="b.test",step="connect"} 0.02`) ||
		!strings.Contains(got, `mxprobe_federation_key_validity_seconds{probe="fed",server_name="a.test"} 3`) {
		t.Errorf("metrics:\n%s", got)
	}
	// b.test no longer configured, a.test failing before its keys: b's
	// series go, a's last verified key validity stays.
	o(probes.Result{Probe: "fed", Type: TypeFederation, Started: now, Signals: map[string]float64{
		SignalUp + ":a.test": 0, SignalStepPrefix + "connect:a.test": 0.5,
	}})
	got := gatherText(t, reg)
	if strings.Contains(got, "b.test") || !strings.Contains(got, `mxprobe_federation_key_valid_until_timestamp_seconds{probe="fed",server_name="a.test"}`) {
		t.Errorf("after b.test went:\n%s", got)
	}
}

func TestDeliverySettings(t *testing.T) {
	head := "global: {homeserver_url: http://127.0.0.1:1, server_name: example.org}\ntenants:\n  - {id: a, bot: {user: b, password: pw}}\nprobes:\n"
	for _, c := range []struct{ yml, want string }{
		{"  - {name: d, type: federation_roundtrip}\n", `c.yml:5: probe "d": federation_roundtrip.peer: missing`},
		{"  - {name: d, type: federation_roundtrip, federation_roundtrip: {peer: {homeserver_url: https://hs.test, server_name: hs.test, user: \"@p:hs.test\", password: x}}}\n", `federation_roundtrip.peer.user: the peer's localpart`},
		{"  - {name: d, type: federation_roundtrip, federation_roundtrip: {peer: {homeserver_url: https://hs.test, server_name: hs.test, user: p}}}\n", `federation_roundtrip.peer: one of password and password_file`},
	} {
		_, err := parse(t, head+c.yml)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.yml, err, c.want)
		}
	}
	cfg, err := parse(t, head+"  - {name: d, type: federation_roundtrip, federation_roundtrip: {peer: {homeserver_url: https://hs.test, server_name: hs.test, user: p, password: x}}}\n")
	if err != nil {
		t.Fatal(err)
	}
	if s, err := probetype.SettingsOf[DeliverySettings](&cfg.Probes[0]); err != nil || s.SyncTimeout == 0 || !cfg.Probes[0].PerTenant() {
		t.Errorf("settings %+v, %v", s, err)
	}
}
