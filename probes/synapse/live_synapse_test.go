package synapse

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	promcfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/matrix"
	"github.com/mxprobe/mxprobe/probes/mxclient"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

// livePage is Synapse's metrics page as the test reads it itself, with
// Prometheus' own text parser (not the probe's).
type livePage map[string]*dto.MetricFamily

func readPage(t *testing.T, s *testenv.Synapse) livePage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	b, err := s.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("Prometheus' parser on Synapse's livePage: %v", err)
	}
	return fams
}

// sum adds the values of a counter's (or a histogram's count or sum)
// samples whose labels hold every pair of match.
func (p livePage) sum(name, part string, match map[string]string) float64 {
	f := p[name]
	if f == nil {
		return 0
	}
	total := 0.0
next:
	for _, m := range f.Metric {
		for k, want := range match {
			got := ""
			for _, l := range m.Label {
				if l.GetName() == k {
					got = l.GetValue()
				}
			}
			if strings.HasSuffix(want, "xx") {
				if !strings.HasPrefix(got, want[:1]) {
					continue next
				}
			} else if got != want {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			total += m.Counter.GetValue()
		case m.Untyped != nil:
			total += m.Untyped.GetValue()
		case m.Gauge != nil:
			total += m.Gauge.GetValue()
		case m.Histogram != nil && part == "count":
			total += float64(m.Histogram.GetSampleCount())
		case m.Histogram != nil && part == "sum":
			total += m.Histogram.GetSampleSum()
		}
	}
	return total
}

// bracket is a quantity read around the probe's two scrapes: its change
// over the probe's window lies between inner (read after the first scrape,
// before the second) and outer (before the first, after the second).
type bracket struct{ inner, outer float64 }

func brackets(a1, a2, b1, b2 livePage, f func(livePage) float64) bracket {
	return bracket{inner: f(b1) - f(a2), outer: f(b2) - f(a1)}
}

func (b bracket) holds(v float64) bool {
	const eps = 1e-9
	return v >= b.inner-eps && v <= b.outer+eps
}

// Synapse's real metrics livePage through the Synapse probe, after real traffic
// (room round trips of three tenants), on SQLite and on PostgreSQL: the
// probe's request counts, rates and latencies and its database signals
// agree with Synapse's own counters read independently around the probe's
// two scrapes.
func TestLiveSynapseSignalsMatchItsCounters(t *testing.T) {
	for _, pg := range []bool{false, true} {
		name := "sqlite"
		if pg {
			name = "postgresql"
		}
		t.Run(name, func(t *testing.T) { liveSynapse(t, pg) })
	}
}

func liveSynapse(t *testing.T, pg bool) {
	syn := testenv.NewSynapse(t, testenv.SynapseOptions{Postgres: pg, RateLimits: testenv.TestLoginLimits()})
	httpc := mxclient.NewHTTPClient()
	defer httpc.CloseIdleConnections()

	// Three tenants, each with a bot and a peer of its own (a shared peer
	// would meet Synapse's rc_invites.per_user after five invitations),
	// password logins: the round trip exercises create, invite, join,
	// sync, send, leave and forget.
	tenants := []string{"alpha", "beta", "gamma"}
	cfg := &config.Config{Global: config.Global{HomeserverURL: syn.URL, ServerName: syn.ServerName}}
	for _, id := range tenants {
		bot, botPW := syn.User(t, "bot-"+id)
		peer, peerPW := syn.User(t, "peer-"+id)
		cfg.Tenants = append(cfg.Tenants, config.Tenant{ID: id, HomeserverURL: syn.URL, ServerName: syn.ServerName,
			Bot:  config.Account{Method: config.MethodPassword, User: bot, Password: promcfg.Secret(botPW)},
			Peer: &config.Account{Method: config.MethodPassword, User: peer, Password: promcfg.Secret(peerPW)}})
	}
	minPL := 50
	rt := &matrix.RoundtripProbe{Name: "roundtrip", Manager: auth.NewManager(httpc), Tenants: cfg.TenantMap(nil),
		Settings: &matrix.RoundtripSettings{
			MinPowerLevel: &minPL, RoomNamePrefix: matrix.DefaultRoomNamePrefix,
			SyncTimeout: config.Duration(10 * time.Second), CleanupTimeout: config.Duration(10 * time.Second),
			SweepMaxAge: config.Duration(time.Hour), SweepInterval: config.Duration(time.Hour),
		}}
	roundTrips := func() {
		for _, id := range tenants {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			r := rt.Run(ctx, id)
			cancel()
			if r.Outcome != probes.OutcomeSuccess {
				t.Fatalf("round trip of %s on Synapse: %s %s at %s: %s", id, r.Outcome, r.Class, r.FailedStep, r.Error)
			}
		}
	}
	roundTrips() // logins and sweeps: the measured window has steady round trips only

	sc := &Settings{URL: syn.MetricsURL}
	sc.ApplyDefaults()
	mhttp := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	defer mhttp.CloseIdleConnections()
	probe := &Probe{Name: "synapse", Config: sc, HTTP: mhttp, Store: NewStore()}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	a1 := readPage(t, syn)
	if first := probe.Run(ctx, ""); first.Outcome != probes.OutcomeSuccess {
		t.Fatalf("first scrape: %s %s: %s", first.Outcome, first.Class, first.Error)
	}
	a2 := readPage(t, syn)
	roundTrips()
	roundTrips()
	b1 := readPage(t, syn)
	res := probe.Run(ctx, "")
	b2 := readPage(t, syn)
	if res.Outcome != probes.OutcomeSuccess {
		t.Fatalf("second scrape: %s %s at %s: %s", res.Outcome, res.Class, res.FailedStep, res.Error)
	}
	if err := probetype.CheckResult(Type(), res); err != nil {
		t.Error(err)
	}
	sig := res.Signals
	window := sig[SigWindow]
	if window <= 0 {
		t.Fatalf("no window: %v", sig)
	}
	check := func(what string, got float64, b bracket) {
		t.Helper()
		if !b.holds(got) {
			t.Errorf("%s: the probe says %g, Synapse's counters %g..%g", what, got, b.inner, b.outer)
		}
	}
	const send = "RoomSendEventRestServlet"
	all := func(name string, match map[string]string) func(livePage) float64 {
		return func(p livePage) float64 { return p.sum(name, "", match) }
	}
	check("responses in the window", sig[SigResponsesInWindow],
		brackets(a1, a2, b1, b2, all("synapse_http_server_responses_total", nil)))
	// Three round trips in a row exceed a bot's rc_message burst (about
	// four events each, ten at once): Synapse answers some 429s, which the
	// round trip waits out; the probe counts them as Synapse does.
	check("429 answers", sig[SigHTTP429]*window,
		brackets(a1, a2, b1, b2, all("synapse_http_server_responses_total", map[string]string{"code": "429"})))
	check("requests per second × window", sig[SigRequests]*window,
		brackets(a1, a2, b1, b2, all("synapse_http_server_responses_total", nil)))
	check("requests received per second × window", sig[SigRequestsReceived]*window,
		brackets(a1, a2, b1, b2, all("synapse_http_server_requests_received_total", nil)))
	// Per servlet, Synapse counts on its latency histogram (its
	// responses_total has no servlet label).
	sends := brackets(a1, a2, b1, b2, func(p livePage) float64 {
		return p.sum("synapse_http_server_response_time_seconds", "count", map[string]string{"servlet": send})
	})
	check("sends in the window", sig[SigResponsesInWindow+":"+send], sends)
	// Every send the test made succeeded once in the window (a send
	// refused with 429 and tried again counts among the responses, not
	// among the 2xx ones).
	sent := b1.sum("synapse_http_server_response_time_seconds", "count", map[string]string{"servlet": send, "code": "2xx"}) -
		a2.sum("synapse_http_server_response_time_seconds", "count", map[string]string{"servlet": send, "code": "2xx"})
	if want := float64(2 * len(tenants)); sent != want || sig[SigResponsesInWindow+":"+send] < want {
		t.Errorf("the window holds %g successful sends by Synapse's count, %g sends by the probe's; the test sent %g",
			sent, sig[SigResponsesInWindow+":"+send], want)
	}
	// Mean 2xx latency of sends: the probe's against the histogram's own
	// sum over count (sends happen only between the scrapes, so the
	// inner and outer windows agree on them).
	ok := map[string]string{"servlet": send, "code": "2xx"}
	count := b1.sum("synapse_http_server_response_time_seconds", "count", ok) - a2.sum("synapse_http_server_response_time_seconds", "count", ok)
	total := b1.sum("synapse_http_server_response_time_seconds", "sum", ok) - a2.sum("synapse_http_server_response_time_seconds", "sum", ok)
	if count == 0 || math.Abs(sig[SigMean+":"+send]-total/count) > 1e-9 {
		t.Errorf("mean send latency: the probe says %g, Synapse's histogram %g/%g", sig[SigMean+":"+send], total, count)
	}
	if p95 := sig[SigP95+":"+send]; p95 <= 0 || p95 > 10 {
		t.Errorf("p95 send latency %g", p95)
	}
	// Database transactions: Synapse counts its background work too, which
	// is why the probe's figure is judged within the brackets.
	txn := brackets(a1, a2, b1, b2, all("synapse_storage_transaction_time_count_total", nil))
	check("database transactions × window", sig[SigDBTxnRate]*window, txn)
	if txn.inner < 10 {
		t.Errorf("only %g database transactions in a window of round trips", txn.inner)
	}
	lo := (b1.sum("synapse_storage_transaction_time_sum_total", "", nil) - a2.sum("synapse_storage_transaction_time_sum_total", "", nil)) / txn.outer
	hi := (b2.sum("synapse_storage_transaction_time_sum_total", "", nil) - a1.sum("synapse_storage_transaction_time_sum_total", "", nil)) / txn.inner
	if m := sig[SigDBTxnMean]; !(m >= lo-1e-9 && m <= hi+1e-9) || m <= 0 {
		t.Errorf("mean database transaction %g outside %g..%g", m, lo, hi)
	}
	if _, ok := sig[SigDBScheduleMean]; !ok {
		t.Errorf("no database scheduling signal")
	}
	if sig[SigEventsPersisted] <= 0 || sig[SigRSS] <= 0 || sig[SigBuildInfo+":"+strings.SplitN(syn.Version, "-", 2)[0]] != 1 {
		t.Errorf("events persisted %g, RSS %g, build info %v", sig[SigEventsPersisted], sig[SigRSS], buildInfo(sig))
	}
	if fails, warns := Evaluate(sig, sc.Thresholds, probe.options()); len(fails) > 0 {
		t.Errorf("a healthy Synapse judged failing: %v (warnings %v)", fails, warns)
	}
	t.Logf("window %.2fs: %g responses, %g sends (mean %.1f ms), %g transactions (mean %.2f ms)",
		window, sig[SigResponsesInWindow], sig[SigResponsesInWindow+":"+send], 1000*sig[SigMean+":"+send],
		sig[SigDBTxnRate]*window, 1000*sig[SigDBTxnMean])
}

func buildInfo(sig map[string]float64) []string {
	var out []string
	for k := range sig {
		if strings.HasPrefix(k, SigBuildInfo+":") {
			out = append(out, fmt.Sprint(k))
		}
	}
	return out
}
