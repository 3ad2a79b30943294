package synapse

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/synapsereplay"
)

// page reads a reference page from testdata (gzipped or not).
func page(t testing.TB, name string) []byte {
	t.Helper()
	for _, f := range []string{name + ".prom.gz", name + ".prom", name} {
		b, err := os.ReadFile(filepath.Join("testdata", f))
		if err != nil {
			continue
		}
		if strings.HasSuffix(f, ".gz") {
			zr, err := gzip.NewReader(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			b, err = io.ReadAll(zr)
			if err != nil {
				t.Fatal(err)
			}
		}
		return b
	}
	t.Fatalf("no reference page %s in testdata", name)
	return nil
}

type expectedServlet struct {
	RequestsPerS float64  `json:"requests_per_s"`
	Ratio5xx     float64  `json:"ratio_5xx"`
	P95          float64  `json:"p95_seconds"`
	P50          float64  `json:"p50_seconds"`
	Mean         *float64 `json:"mean_latency_seconds"`
}

type expectedPair struct {
	RoomSend    expectedServlet `json:"RoomSendEventRestServlet"`
	Sync        expectedServlet `json:"SyncRestServlet"`
	AllServlets struct {
		Received  float64 `json:"requests_received_per_s"`
		Responses float64 `json:"responses_per_s"`
		Ratio5xx  float64 `json:"ratio_5xx_responses_total"`
	} `json:"all_servlets"`
	DB struct {
		TxnPerS float64 `json:"txn_per_s"`
		Mean    float64 `json:"mean_txn_seconds"`
	} `json:"db"`
	Presence    float64 `json:"presence_updates_per_s"`
	EDUs        float64 `json:"federation_received_edus_per_s"`
	StagingPDUs struct {
		After float64 `json:"after"`
	} `json:"staging_pdus"`
	CounterDecreased int `json:"counter_like_series_decreased"`
}

func expected(t testing.TB, pair string) expectedPair {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "EXPECTED.json"))
	if err != nil {
		t.Fatal(err)
	}
	// Python's json writes Infinity (bucket regions); no field read here needs it.
	b = bytes.ReplaceAll(b, []byte("Infinity"), []byte("null"))
	var v struct {
		Pairs map[string]json.RawMessage `json:"pairs"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	var p expectedPair
	if err := json.Unmarshal(v.Pairs[pair], &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// derivePair parses two reference pages 60 s apart and derives.
func derivePair(t testing.TB, a, b string, o Options) Derived {
	t.Helper()
	t0 := time.Unix(1767268800, 0)
	s0, err := Parse(page(t, a), nil)
	if err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	s0.Time = t0
	s1, err := Parse(page(t, b), s0)
	if err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	s1.Time = t0.Add(60 * time.Second)
	return Derive(s0, s1, o)
}

func within(t *testing.T, name string, got map[string]float64, want, rel float64) {
	t.Helper()
	v, ok := got[name]
	if !ok {
		t.Errorf("%s: missing (want %g)", name, want)
		return
	}
	if want == 0 {
		if v != 0 {
			t.Errorf("%s = %g, want 0", name, v)
		}
		return
	}
	if math.Abs(v-want)/math.Abs(want) > rel {
		t.Errorf("%s = %g, want %g (within %.1f%%)", name, v, want, rel*100)
	}
}

func TestReferenceHealthy(t *testing.T) {
	d := derivePair(t, "healthy_t0", "healthy_t60", Options{})
	e := expected(t, "healthy_t0->healthy_t60")
	s := d.Signals
	const rel = 0.01
	within(t, SigRequests+":RoomSendEventRestServlet", s, e.RoomSend.RequestsPerS, rel)
	within(t, Sig5xxRatio+":RoomSendEventRestServlet", s, e.RoomSend.Ratio5xx, rel)
	within(t, SigP95+":RoomSendEventRestServlet", s, e.RoomSend.P95, rel)
	within(t, SigP50+":RoomSendEventRestServlet", s, e.RoomSend.P50, rel)
	within(t, SigMean+":RoomSendEventRestServlet", s, *e.RoomSend.Mean, rel)
	within(t, SigRequests+":SyncRestServlet", s, e.Sync.RequestsPerS, rel)
	within(t, SigRequests, s, e.AllServlets.Responses, rel)
	within(t, SigRequestsReceived, s, e.AllServlets.Received, rel)
	within(t, Sig5xxRatio, s, e.AllServlets.Ratio5xx, rel)
	within(t, SigDBTxnRate, s, e.DB.TxnPerS, rel)
	within(t, SigDBTxnMean, s, e.DB.Mean, rel)
	within(t, SigPresence, s, e.Presence, rel)
	within(t, SigEDUs, s, e.EDUs, rel)
	within(t, SigStagingPDUs, s, e.StagingPDUs.After, rel)
	within(t, SigBuildInfo+":1.157.1", s, 1, 0)
	within(t, SigCounterResets, s, 0, 0)
	within(t, SigRestarted, s, 0, 0)
	// The long-poll servlet: the naive p95 is the 10 s top bound; judged on
	// finite buckets it is below it, and the overflow share is reported.
	if v := s[SigP95+":SyncRestServlet"]; !(v > 0 && v < 10) {
		t.Errorf("SyncRestServlet p95 over finite buckets = %g, want inside (0, 10)", v)
	}
	if v := s[SigLongPollOverflow+":SyncRestServlet"]; !(v > 0.05 && v < 1) {
		t.Errorf("SyncRestServlet overflow ratio = %g", v)
	}
	if _, ok := s[SigMean+":SyncRestServlet"]; ok {
		t.Errorf("long-poll servlet has a mean latency signal")
	}
	for k, v := range s {
		if v < 0 {
			t.Errorf("negative signal %s = %g", k, v)
		}
	}
	t.Logf("signals: %v", s)
}

func TestReferenceDegraded(t *testing.T) {
	d := derivePair(t, "healthy_t0", "degraded_t60", Options{})
	e := expected(t, "healthy_t0->degraded_t60")
	s := d.Signals
	within(t, SigRequests+":RoomSendEventRestServlet", s, e.RoomSend.RequestsPerS, 0.01)
	within(t, Sig5xxRatio+":RoomSendEventRestServlet", s, e.RoomSend.Ratio5xx, 0.01)
	// Latency from 2xx answers only (as Synapse's dashboard: code=~"2.."):
	// EXPECTED.json's p95 mixes in the slow 5xx answers.
	p0, p1 := naive(t, "healthy_t0"), naive(t, "degraded_t60")
	p95ok := synapsereplay.HistogramQuantile(0.95, synapsereplay.BucketIncreases(p0, p1,
		"synapse_http_server_response_time_seconds", synapsereplay.Servlet("RoomSendEventRestServlet", synapsereplay.Code2xx)), false)
	within(t, SigP95+":RoomSendEventRestServlet", s, p95ok, 1e-9)
	if p95ok >= e.RoomSend.P95 {
		t.Errorf("2xx p95 %g not below the all-codes p95 %g", p95ok, e.RoomSend.P95)
	}
	within(t, Sig5xxRatio+":SyncRestServlet", s, e.Sync.Ratio5xx, 0.01)
	// Done when 1: the staging age is 96.3 s (the page holds 96300 ms).
	within(t, SigStagingOldest, s, 96.3, 1e-9)
	within(t, Sig5xxRatio, s, e.AllServlets.Ratio5xx, 0.01)
	within(t, SigDBTxnMean, s, e.DB.Mean, 0.01)
	within(t, SigPresence, s, e.Presence, 0.01)
	within(t, SigStagingPDUs, s, e.StagingPDUs.After, 0.01)
}

func TestReferenceRestarted(t *testing.T) {
	d := derivePair(t, "healthy_t0", "restarted_t60", Options{})
	e := expected(t, "healthy_t0->restarted_t60")
	s := d.Signals
	if d.Resets == 0 || s[SigCounterResets] == 0 {
		t.Errorf("no counter reset reported: %v", s[SigCounterResets])
	}
	within(t, SigRestarted, s, 1, 0)
	for k, v := range s {
		if v < 0 {
			t.Errorf("negative signal %s = %g", k, v)
		}
	}
	// EXPECTED.json divides the counts since the restart by the whole 60 s
	// (PromQL's increase()); the rate is over the time since the start.
	start := synapsereplay.Values(naive(t, "restarted_t60"), "process_start_time_seconds", nil)[0]
	k := 60 / (1767268800 + 60 - start)
	within(t, SigRequests+":RoomSendEventRestServlet", s, e.RoomSend.RequestsPerS*k, 1e-9)
	within(t, SigP95+":RoomSendEventRestServlet", s, e.RoomSend.P95, 0.01)
	within(t, SigRequests, s, e.AllServlets.Responses*k, 1e-9)
	within(t, SigDBTxnRate, s, e.DB.TxnPerS*k, 1e-9)
	within(t, SigPresence, s, e.Presence*k, 1e-9)
	within(t, SigRestartedProcesses, s, 1, 0)
}

// naive reads a reference page with the independent reader.
func naive(t testing.TB, name string) []synapsereplay.Sample {
	t.Helper()
	ss, err := synapsereplay.ParseNaive(page(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return ss
}
