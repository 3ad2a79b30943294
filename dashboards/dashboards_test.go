package dashboards

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/mxprobe/mxprobe/exporters/metrics"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/federation"
	"github.com/mxprobe/mxprobe/probes/probetype"
	"github.com/mxprobe/mxprobe/probes/tlscheck"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestCheckerRejectsUnknownMetric is the checker's own test: a panel that
// names a metric nobody exports (a deliberate typo), a query that does not
// parse, and a selector without a metric name are all reported; correct
// ones are not.
func TestCheckerRejectsUnknownMetric(t *testing.T) {
	known := func(n string) bool {
		return n == "mxprobe_probe_success" || n == "mxprobe_probe_runs_total" || n == "synapse_build_info"
	}
	qs := []Query{
		{Dashboard: "t.json", Where: "good", Expr: `sum by (tenant) (mxprobe_probe_success{job=~"$job",probe=~"$probe"})`},
		{Dashboard: "t.json", Where: "good rate", Expr: `rate(mxprobe_probe_runs_total{tenant=~"$tenant"}[$__rate_interval]) and on() synapse_build_info`},
		{Dashboard: "t.json", Where: "typo", Expr: `sum(rate(mxprobe_probe_sucess_total{probe=~"$probe"}[$__rate_interval]))`},
		{Dashboard: "t.json", Where: "broken", Expr: `sum(rate(mxprobe_probe_runs_total[$__rate_interval])`},
		{Dashboard: "t.json", Where: "nameless", Expr: `{job="mxprobe"}`},
		{Dashboard: "t.json", Where: "unknown var", Expr: `mxprobe_probe_success{tenant=~"$nosuchvar"}`},
	}
	probs := Check(qs, known)
	got := map[string]string{}
	for _, p := range probs {
		got[p.Query.Where] = p.Err
	}
	want := map[string]string{
		"typo":        "metric mxprobe_probe_sucess_total is exported by neither",
		"broken":      "does not parse",
		"nameless":    "names no metric",
		"unknown var": "no value for variable(s) nosuchvar",
	}
	for where, frag := range want {
		if !strings.Contains(got[where], frag) {
			t.Errorf("%s: problem %q, want it to contain %q", where, got[where], frag)
		}
	}
	for _, where := range []string{"good", "good rate"} {
		if e, bad := got[where]; bad {
			t.Errorf("%s rejected: %s", where, e)
		}
	}
	if len(probs) != len(want) {
		t.Errorf("%d problems, want %d: %v", len(probs), len(want), probs)
	}
}

func TestVariableExpr(t *testing.T) {
	for q, want := range map[string]string{
		`label_values(mxprobe_probe_success{job=~"$job"}, probe)`: `mxprobe_probe_success{job=~"$job"}`,
		`query_result(count by (tenant) (mxprobe_probe_success))`: `count by (tenant) (mxprobe_probe_success)`,
		`label_values(job)`: ``,
	} {
		got, err := VariableExpr(q)
		if err != nil || got != want {
			t.Errorf("%s: got %q, %v; want %q", q, got, err, want)
		}
	}
	if _, err := VariableExpr("metrics(mxprobe_.*)"); err == nil {
		t.Error("metrics() accepted")
	}
}

// TestShippedDashboardsParse loads every dashboard and parses every query
// (the quick part of the check, without a daemon).
func TestShippedDashboardsParse(t *testing.T) {
	qs, err := All()
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) < 40 {
		t.Fatalf("only %d queries in the shipped dashboards", len(qs))
	}
	probs := Check(qs, func(string) bool { return true })
	for _, p := range probs {
		t.Error(p)
	}
	for _, name := range []string{"mxprobe-overview.json", "mxprobe-synapse.json", "mxprobe-federation.json", "provisioning.yml"} {
		if _, err := Files.ReadFile(name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestShippedDashboardsNameExportedMetrics is "Done when" 2: every metric a
// shipped panel or variable names is one that a live mxprobe daemon (probing
// the local Dendrite, with a synapse_metrics probe reading a replay of the
// Synapse reference pages) exports, or a Synapse series of the reference
// catalogue.
func TestShippedDashboardsNameExportedMetrics(t *testing.T) {
	qs, err := All()
	if err != nil {
		t.Fatal(err)
	}
	exported := LiveMxprobeNames(t)
	synapse := SynapseCatalogue(t)
	// up is the series Prometheus writes for every scrape target.
	probs := Check(qs, func(n string) bool { return exported[n] || synapse[n] || n == "up" })
	for _, p := range probs {
		t.Error(p)
	}
	// Every mxprobe family the overview is about really is used.
	used := map[string]bool{}
	for _, q := range qs {
		names, _ := MetricNames(q.Expr, ParseValues)
		for _, n := range names {
			used[n] = true
		}
	}
	for _, n := range []string{"mxprobe_probe_success", "mxprobe_probe_failed_step", "mxprobe_message_delivery_seconds_bucket",
		"mxprobe_probe_step_duration_seconds_bucket", "mxprobe_rate_limited_total", "mxprobe_token_refresh_total",
		"mxprobe_synapse_http_5xx_ratio", "synapse_http_server_response_time_seconds_bucket"} {
		if !used[n] {
			t.Errorf("no dashboard query uses %s", n)
		}
	}
}

// LiveMxprobeNames returns the series names mxprobe exports (the families
// of liveFamilies, histograms and summaries with their _bucket, _sum and
// _count series).
func LiveMxprobeNames(t *testing.T) map[string]bool {
	t.Helper()
	seen := map[string]bool{}
	for name, typ := range liveFamilies(t) {
		seen[name] = true
		switch typ {
		case dto.MetricType_HISTOGRAM:
			seen[name+"_bucket"], seen[name+"_sum"], seen[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			seen[name+"_sum"], seen[name+"_count"] = true, true
		}
	}
	return seen
}

// liveFamilies returns the metric families mxprobe exports, by name: those
// on the /metrics of a live daemon probing the local Dendrite (scraped
// until the probes have run and its own alerting has notified), plus the
// families of the exporter that only appear after an event the local
// deployment does not produce on its own (a 429, a token refresh, a failed
// cleanup, a MAS revocation), taken from the same exporter fed one Result
// that reports each event.
func liveFamilies(t *testing.T) map[string]dto.MetricType {
	t.Helper()
	d := testenv.SharedDendrite(t)
	m := testenv.StartMxprobe(t, d)
	want := []string{"mxprobe_probe_success", "mxprobe_probe_failed_step", "mxprobe_probe_last_step_duration_seconds",
		"mxprobe_probe_step_duration_seconds_bucket", "mxprobe_login_total", "mxprobe_build_info", "mxprobe_shard_info",
		"mxprobe_alerts", "mxprobe_notifications_total", "mxprobe_probe_last_success_timestamp_seconds"}
	for _, p := range m.Probes {
		switch p {
		case "synapse":
			want = append(want, "mxprobe_synapse_up", "mxprobe_synapse_http_5xx_ratio", "mxprobe_synapse_db_txn_per_second")
		case "roundtrip":
			want = append(want, "mxprobe_message_delivery_seconds_bucket", "mxprobe_message_delivery_last_seconds")
		case "media":
			want = append(want, "mxprobe_media_uploads_total", "mxprobe_media_authenticated")
		}
	}
	m.WaitForSeries(t, want, 2*time.Minute)
	fams := map[string]dto.MetricType{}
	// A few more scrapes: the Synapse replay alternates pages, so signals
	// derived from one pair only are caught too.
	for i := 0; i < 5; i++ {
		if i > 0 {
			time.Sleep(time.Second)
		}
		for name, f := range m.Scrape(t) {
			fams[name] = f.GetType()
		}
	}
	ex := metrics.New()
	ex.Observe(probes.Result{
		Probe: "roundtrip", Type: "roundtrip", Tenant: "t", Outcome: probes.OutcomeSuccess, Started: time.Now(),
		Steps:   []probes.Step{{Name: "send", OK: true}},
		Signals: map[string]float64{probes.SignalDeliverySeconds: 0.1, probes.LatenessKey: 0.01},
		Counts: map[string]int{probes.CountRateLimited: 1, probes.CountTokenRefresh: 1, probes.CountCleanupFailure: 1,
			"login:password:success": 1, probes.CountRevocationPrefix + "success": 1},
	})
	// The federation and tls types' own families, from one Result each
	// (the local Dendrite does not federate).
	for _, c := range []struct {
		typ     probetype.Type
		signals map[string]float64
	}{
		{federation.Type(), map[string]float64{federation.SignalUp + ":example.org": 1,
			federation.SignalKeyValidUntil + ":example.org":                       float64(time.Now().Add(time.Hour).Unix()),
			federation.SignalStepPrefix + federation.StepConnect + ":example.org": 0.01}},
		{tlscheck.Type(), map[string]float64{tlscheck.SignalNotAfter + ":matrix.example.org:443": float64(time.Now().Add(time.Hour).Unix())}},
	} {
		o, err := c.typ.Metrics(ex.Registry)
		if err != nil {
			t.Fatal(err)
		}
		ex.AddObserver(c.typ.Name, o)
		ex.Observe(probes.Result{Probe: c.typ.Name, Type: c.typ.Name, Outcome: probes.OutcomeSuccess, Started: time.Now(), Signals: c.signals})
	}
	exported, err := ex.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range exported {
		fams[f.GetName()] = f.GetType()
	}
	var names []string
	for n := range fams {
		if strings.HasPrefix(n, "mxprobe_") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	t.Logf("mxprobe families: %d (probes %v, left out %v)", len(names), m.Probes, m.Dropped)
	return fams
}

// SynapseCatalogue returns the series names of the Synapse reference
// catalogue (probes/synapse/testdata/catalog-v1.157.1.tsv: the families
// Synapse v1.157.1 defines, with the series each exposes).
func SynapseCatalogue(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "probes", "synapse", "testdata", "catalog-v1.157.1.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.HasPrefix(line, "family\t") || line == "" {
			continue
		}
		cols := strings.Split(line, "\t")
		if len(cols) < 3 {
			t.Fatalf("catalogue line %q has %d columns", line, len(cols))
		}
		for _, s := range strings.Split(cols[2], ",") {
			if i := strings.IndexByte(s, '{'); i >= 0 {
				s = s[:i]
			}
			out[strings.TrimSpace(s)] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) < 150 {
		t.Fatalf("only %d series in the Synapse catalogue", len(out))
	}
	return out
}

// TestSynapseDashboardSurvivesReplicas: every panel over mxprobe's Synapse
// gauges aggregates away the replica (instance) before any sum, so two
// mxprobe replicas running the global synapse_metrics probe are not
// counted twice; Synapse's own series are selected by the multi-value job
// and instance variables.
func TestSynapseDashboardSurvivesReplicas(t *testing.T) {
	b, err := Files.ReadFile("mxprobe-synapse.json")
	if err != nil {
		t.Fatal(err)
	}
	qs, err := Load("mxprobe-synapse.json", b)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if q.Variable {
			continue
		}
		e := q.Expr
		switch {
		case strings.Contains(e, "mxprobe_synapse_"):
			if !strings.HasPrefix(e, "max by (probe") && !strings.HasPrefix(e, "min(") && !strings.HasPrefix(e, "max(") &&
				!strings.HasPrefix(e, "sum(max by (probe)") {
				t.Errorf("%s: %s: not aggregated over replicas first", q.Where, e)
			}
		case strings.Contains(e, "synapse_") || strings.Contains(e, "python_") || strings.Contains(e, "process_"):
			if !strings.Contains(e, `job=~"$synapse_job",instance=~"$synapse_instance"`) {
				t.Errorf("%s: %s: does not select $synapse_job and $synapse_instance", q.Where, e)
			}
		}
	}
	var d struct {
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Multi      bool   `json:"multi"`
				IncludeAll bool   `json:"includeAll"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, v := range d.Templating.List {
		seen[v.Name] = true
		if v.Name != "datasource" && (!v.Multi || !v.IncludeAll) {
			t.Errorf("variable %s: not multi-select with All", v.Name)
		}
	}
	for _, n := range []string{"job", "synapse_job", "synapse_instance", "worker"} {
		if !seen[n] {
			t.Errorf("no variable %s", n)
		}
	}
}
