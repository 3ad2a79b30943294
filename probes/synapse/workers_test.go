package synapse

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/synapsereplay"
	"github.com/mxprobe/mxprobe/probes"
)

// setClock is a clock the test moves by hand (concurrent scrapes of one
// run all read the same instant).
type setClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *setClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *setClock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

var t0 = time.Unix(1767268800, 0)

// workerProbe is a probe over the fixture deployment's servers.
func workerProbe(t testing.TB, ss []*synapsereplay.WorkerServer, clk *setClock) *Probe {
	t.Helper()
	sc := &Settings{}
	for _, s := range ss {
		sc.Targets = append(sc.Targets, Target{Name: s.Spec.Name, Kind: s.Spec.Kind, URL: s.URL})
	}
	sc.ApplyDefaults()
	return &Probe{Name: "synapse", Config: sc, HTTP: &http.Client{Transport: &http.Transport{}}, Store: NewStore(), Now: clk.now}
}

func relEq(t *testing.T, name string, got map[string]float64, want float64) {
	t.Helper()
	v, ok := got[name]
	switch {
	case !ok:
		t.Errorf("%s: missing (want %.12g)", name, want)
	case want == 0 && v != 0, want != 0 && math.Abs(v-want)/math.Abs(want) > 1e-9:
		t.Errorf("%s = %.12g, want %.12g", name, v, want)
	}
}

// workerExpect computes the deployment-wide values from the fixture pages
// with the independent reader (synapsereplay's naive parser and PromQL
// arithmetic), not with the code under test.
type workerExpect struct {
	ratio5xx, reqRate, roomSendP95, stagingPDUs, stagingOldest float64
	restarted                                                  string
	perProcessRate                                             map[string]float64
}

func computeWorkerExpect(t *testing.T) workerExpect {
	t.Helper()
	e := workerExpect{perProcessRate: map[string]float64{}}
	var resp, resp5 float64
	roomSend := map[float64]float64{}
	for _, w := range synapsereplay.Workers {
		var pages [2][]synapsereplay.Sample
		for i := range pages {
			b, err := synapsereplay.WorkerPage(w, i)
			if err != nil {
				t.Fatal(err)
			}
			if pages[i], err = synapsereplay.ParseNaive(b); err != nil {
				t.Fatal(err)
			}
		}
		p0, p1 := pages[0], pages[1]
		window := 60.0
		s0 := synapsereplay.Values(p0, "process_start_time_seconds", nil)
		s1 := synapsereplay.Values(p1, "process_start_time_seconds", nil)
		if s0[0] != s1[0] {
			e.restarted = w.Name
			window = float64(t0.Unix()) + 60 - s1[0]
		}
		n := synapsereplay.Increase(p0, p1, "synapse_http_server_responses_total", nil)
		resp += n
		resp5 += synapsereplay.Increase(p0, p1, "synapse_http_server_responses_total", synapsereplay.Code5xx)
		e.reqRate += n / window
		if n > 0 {
			e.perProcessRate[w.Name] = n / window
		}
		synapsereplay.AddBuckets(roomSend, synapsereplay.BucketIncreases(p0, p1, "synapse_http_server_response_time_seconds",
			synapsereplay.Servlet("RoomSendEventRestServlet", synapsereplay.Code2xx)))
		for _, v := range synapsereplay.Values(p1, "synapse_federation_server_number_inbound_pdu_in_staging", nil) {
			e.stagingPDUs = math.Max(e.stagingPDUs, v)
		}
		for _, v := range synapsereplay.Values(p1, "synapse_federation_server_oldest_inbound_pdu_in_staging", nil) {
			e.stagingOldest = math.Max(e.stagingOldest, v/1000) // milliseconds on the page
		}
	}
	e.ratio5xx = resp5 / resp
	e.roomSendP95 = synapsereplay.HistogramQuantile(0.95, roomSend, false)
	return e
}

// TestWorkerDeployment is "Done when" 2: five loopback processes replaying
// the worker fixture; the deployment-wide 5xx ratio, RoomSend p95, request
// rate and staging backlog equal the independently computed values, the
// restarted worker is reported and its rate is over the time since its
// start.
func TestWorkerDeployment(t *testing.T) {
	ss, err := synapsereplay.StartWorkers(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer synapsereplay.CloseWorkers(ss)
	clk := &setClock{t: t0}
	p := workerProbe(t, ss, clk)
	defer p.HTTP.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if r := p.Run(ctx, ""); r.Outcome != probes.OutcomeSuccess {
		t.Fatalf("baseline: %s %s: %s", r.Outcome, r.Class, r.Error)
	}
	clk.set(t0.Add(60 * time.Second))
	r := p.Run(ctx, "")
	if r.Outcome == probes.OutcomeSkipped || r.Signals[SigProcessesUp] != 5 {
		t.Fatalf("%s %s: %s (%v processes up)", r.Outcome, r.Class, r.Error, r.Signals[SigProcessesUp])
	}
	e := computeWorkerExpect(t)
	s := r.Signals
	t.Logf("independent: 5xx %.6g, %.6g req/s, RoomSend p95 %.6g s, staging %g PDUs %g s, per process %v",
		e.ratio5xx, e.reqRate, e.roomSendP95, e.stagingPDUs, e.stagingOldest, e.perProcessRate)
	relEq(t, Sig5xxRatio, s, e.ratio5xx)
	relEq(t, SigRequests, s, e.reqRate)
	relEq(t, SigP95+":RoomSendEventRestServlet", s, e.roomSendP95)
	relEq(t, SigStagingPDUs, s, e.stagingPDUs)
	relEq(t, SigStagingOldest, s, e.stagingOldest)
	if e.stagingOldest != 96.3 || e.stagingPDUs != 482 {
		t.Errorf("fixture: staging %g PDUs, %g s; want 482, 96.3", e.stagingPDUs, e.stagingOldest)
	}
	for w, rate := range e.perProcessRate {
		relEq(t, SigProcRequests+":"+w, s, rate)
	}
	if e.restarted != "generic2" {
		t.Fatalf("fixture: restarted process %q", e.restarted)
	}
	for _, w := range synapsereplay.Workers {
		want := 0.0
		if w.Name == e.restarted {
			want = 1
		}
		relEq(t, SigProcRestart+":"+w.Name, s, want)
		relEq(t, SigProcUp+":"+w.Name, s, 1)
		relEq(t, SigProcInfo+":"+w.Name+":"+w.Kind, s, 1)
		if _, ok := s[SigProcScrape+":"+w.Name]; !ok {
			t.Errorf("no scrape duration for %s", w.Name)
		}
	}
	relEq(t, SigRestartedProcesses, s, 1)
	// Not distorted: the restarted worker served the healthy traffic of a
	// single process (EXPECTED.json: 40.6 responses/s); counting its answers
	// since the restart over the whole window would say about 10.
	healthy := expected(t, "healthy_t0->healthy_t60").AllServlets.Responses
	if v := s[SigProcRequests+":generic2"]; math.Abs(v-healthy)/healthy > 0.05 {
		t.Errorf("restarted worker: %g requests/s, want about %g", v, healthy)
	}
	// A database-wide gauge summed over five processes would be 5 × 482.
	if s[SigStagingPDUs] != 482 {
		t.Errorf("staging PDUs %g", s[SigStagingPDUs])
	}
}

// TestWorkerDeploymentProcessDown: a process that cannot be scraped is
// reported (process_up 0, a warning naming it); the others still give the
// deployment's signals.
func TestWorkerDeploymentProcessDown(t *testing.T) {
	ss, err := synapsereplay.StartWorkers(synapsereplay.Workers[:2])
	if err != nil {
		t.Fatal(err)
	}
	clk := &setClock{t: t0}
	p := workerProbe(t, ss, clk)
	defer p.HTTP.CloseIdleConnections()
	p.Config.Targets[1].URL = "http://127.0.0.1:1/_synapse/metrics"
	synapsereplay.CloseWorkers(ss[1:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := p.Run(ctx, "")
	defer synapsereplay.CloseWorkers(ss[:1])
	if r.Outcome != probes.OutcomeWarning {
		t.Fatalf("%s %s: %s", r.Outcome, r.Class, r.Error)
	}
	relEq(t, SigProcUp+":main", r.Signals, 1)
	relEq(t, SigProcUp+":generic1", r.Signals, 0)
	relEq(t, SigProcessesUp, r.Signals, 1)
}

// TestWorkerDNS: a DNS name resolving to several addresses is a set of
// processes, named by address, at most max_processes of them.
func TestWorkerDNS(t *testing.T) {
	ss, err := synapsereplay.StartWorkers(synapsereplay.Workers[:1])
	if err != nil {
		t.Fatal(err)
	}
	defer synapsereplay.CloseWorkers(ss)
	_, port := splitHostPort(t, ss[0].URL)
	sc := &Settings{DNS: &DNS{Name: "synapse-workers.matrix.svc", Port: port, MaxProcesses: 2}}
	sc.ApplyDefaults()
	var asked string
	p := &Probe{Name: "synapse", Config: sc, HTTP: &http.Client{Transport: &http.Transport{}}, Store: NewStore(),
		LookupHost: func(_ context.Context, host string) ([]string, error) {
			asked = host
			return []string{"127.0.0.3", "127.0.0.1", "127.0.0.2"}, nil
		}}
	defer p.HTTP.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := p.Run(ctx, "")
	if asked != "synapse-workers.matrix.svc" {
		t.Errorf("looked up %q", asked)
	}
	// 127.0.0.1 and 127.0.0.2 (sorted, capped at 2); the server listens on
	// 127.0.0.1 only.
	relEq(t, SigProcesses, r.Signals, 2)
	relEq(t, SigProcUp+":127.0.0.1", r.Signals, 1)
	relEq(t, SigProcInfo+":127.0.0.1:generic_worker", r.Signals, 1)
	if _, ok := r.Signals[SigProcUp+":127.0.0.3"]; ok {
		t.Errorf("max_processes not applied: %v", r.Signals)
	}
	// A pod replaced: the old address's snapshot is dropped.
	if n := p.Store.Len(); n != 1 {
		t.Errorf("%d snapshots kept, want 1", n)
	}
	p.LookupHost = func(context.Context, string) ([]string, error) { return []string{"127.0.0.4"}, nil }
	p.Config.DNS.Port = 1
	_ = p.Run(ctx, "")
	if n := p.Store.Len(); n != 0 {
		t.Errorf("%d snapshots kept after the addresses changed, want 0", n)
	}
}

func splitHostPort(t *testing.T, u string) (string, int) {
	t.Helper()
	var host string
	var port int
	rest := u[len("http://"):]
	for i := 0; i < len(rest); i++ {
		if rest[i] == ':' {
			host = rest[:i]
			for j := i + 1; j < len(rest) && rest[j] >= '0' && rest[j] <= '9'; j++ {
				port = port*10 + int(rest[j]-'0')
			}
			break
		}
	}
	return host, port
}

// TestWorkerDNSAddressFilter: the probe's bearer token reaches a DNS-found
// address only over https, on loopback, or inside synapse.dns.allowed_cidrs;
// an answer outside is an error naming the address, and nothing is sent
// to it.
func TestWorkerDNSAddressFilter(t *testing.T) {
	var (
		mu    sync.Mutex
		auths []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auths = append(auths, r.Header.Get("Authorization"))
		mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		_, _ = w.Write([]byte("# empty\n"))
	}))
	defer srv.Close()
	_, port := splitHostPort(t, srv.URL)
	for _, c := range []struct {
		name    string
		allowed []string
		answer  string
		refused string // the address named in the error; "" when scraped
	}{
		{"outside the allowed ranges", []string{"10.0.0.0/8"}, "127.0.0.1", "127.0.0.1"},
		{"inside the allowed ranges", []string{"10.0.0.0/8", "127.0.0.0/8"}, "127.0.0.1", ""},
		{"loopback without ranges", nil, "127.0.0.1", ""},
		{"routable without ranges over http", nil, "192.0.2.10", "192.0.2.10"},
		{"mapped address outside the ranges", []string{"10.0.0.0/8"}, "::ffff:127.0.0.1", "127.0.0.1"},
	} {
		mu.Lock()
		auths = nil
		mu.Unlock()
		sc := &Settings{BearerToken: "tok-SECRET-1234",
			DNS: &DNS{Name: "synapse-workers.matrix.svc", Port: port, AllowedCIDRs: c.allowed}}
		sc.ApplyDefaults()
		p := &Probe{Name: "synapse", Config: sc, HTTP: &http.Client{Transport: &http.Transport{}}, Store: NewStore(),
			LookupHost: func(context.Context, string) ([]string, error) { return []string{c.answer}, nil }}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		r := p.Run(ctx, "")
		cancel()
		p.HTTP.CloseIdleConnections()
		mu.Lock()
		seen := append([]string(nil), auths...)
		mu.Unlock()
		if c.refused != "" {
			if r.FailedStep != StepResolve || r.Class != probes.ClassConfig || !strings.Contains(r.Error, "answered "+c.refused) {
				t.Errorf("%s: %s at %s: %s", c.name, r.Class, r.FailedStep, r.Error)
			}
			if len(seen) != 0 {
				t.Errorf("%s: %d requests reached the server", c.name, len(seen))
			}
			continue
		}
		if r.FailedStep == StepResolve || len(seen) == 0 || seen[0] != "Bearer tok-SECRET-1234" {
			t.Errorf("%s: %s at %s: %s; requests %q", c.name, r.Class, r.FailedStep, r.Error, seen)
		}
	}
}
