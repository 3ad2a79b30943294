package metrics

import (
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxprobe/mxprobe/probes"
)

// SynapseType is the probe type whose Results the Synapse hook reads.
const SynapseType = "synapse_metrics"

// Synapse re-exports the derived signals of synapse_metrics Results as
// mxprobe_synapse_* gauges. Labels are bounded: probe (one target per probe),
// servlet (only the servlets the probe was configured to report, plus "all"),
// quantile, and version for build_info. Signals absent from the last run have
// no series.
type Synapse struct {
	mu   sync.Mutex
	last map[string]probes.Result // by probe name

	up         *prometheus.Desc
	perServlet map[string]*prometheus.Desc // signal base → desc with servlet label
	latency    *prometheus.Desc
	scalars    map[string]*prometheus.Desc // signal → desc with probe label only
	buildInfo  *prometheus.Desc
}

// synapseScalars maps plain signals to their gauge names (after mxprobe_synapse_).
var synapseScalars = map[string]string{
	"http_requests_received_per_second":   "requests_received_per_second",
	"db_txn_per_second":                   "db_txn_per_second",
	"db_txn_mean_seconds":                 "db_txn_mean_seconds",
	"db_schedule_mean_seconds":            "db_schedule_mean_seconds",
	"db_schedule_p95_seconds":             "db_schedule_p95_seconds",
	"events_persisted_per_second":         "events_persisted_per_second",
	"federation_staging_pdus":             "federation_staging_pdus",
	"federation_staging_oldest_seconds":   "federation_staging_oldest_seconds",
	"federation_received_edus_per_second": "federation_received_edus_per_second",
	"presence_updates_per_second":         "presence_updates_per_second",
	"reactor_tick_mean_seconds":           "reactor_tick_mean_seconds",
	"reactor_tick_p95_seconds":            "reactor_tick_p95_seconds",
	"process_cpu_seconds_per_second":      "process_cpu_seconds_per_second",
	"process_resident_memory_bytes":       "process_resident_memory_bytes",
	"process_open_fds":                    "process_open_fds",
	"counter_resets":                      "counter_resets",
	"restarted":                           "restarted",
}

// synapseServlet maps signals that have an overall value and per-servlet
// parts to gauges with a servlet label ("all" for the overall value).
var synapseServlet = map[string][2]string{
	"http_requests_per_second":     {"requests_per_second", "HTTP responses per second between the last two scrapes, by servlet (all: every servlet)."},
	"http_5xx_ratio":               {"http_5xx_ratio", "Share of 5xx responses between the last two scrapes, by servlet (all: every servlet)."},
	"http_longpoll_overflow_ratio": {"http_longpoll_overflow_ratio", "Long-poll servlets: share of requests beyond the top finite response-time bucket."},
	"http_response_mean_seconds":   {"http_response_mean_seconds", "Mean response time between the last two scrapes, by servlet (not for long-poll servlets)."},
}

var synapseQuantiles = map[string]string{
	"http_response_p50_seconds": "0.5",
	"http_response_p95_seconds": "0.95",
	"http_response_p99_seconds": "0.99",
}

// NewSynapse builds the hook; register it with Metrics.AddHook.
func NewSynapse() *Synapse {
	name := func(n string) string { return prometheus.BuildFQName(namespace, "synapse", n) }
	s := &Synapse{
		last: map[string]probes.Result{},
		up: prometheus.NewDesc(name("up"),
			"1 if the last scrape of the Synapse metrics page was fetched and parsed.", []string{"probe"}, nil),
		latency: prometheus.NewDesc(name("http_response_seconds"),
			"Response time quantiles from histogram bucket deltas between the last two scrapes (long-poll servlets: finite buckets only).",
			[]string{"probe", "servlet", "quantile"}, nil),
		buildInfo: prometheus.NewDesc(name("build_info"),
			"Synapse version from synapse_build_info; always 1.", []string{"probe", "version"}, nil),
		perServlet: map[string]*prometheus.Desc{},
		scalars:    map[string]*prometheus.Desc{},
	}
	for sig, v := range synapseServlet {
		s.perServlet[sig] = prometheus.NewDesc(name(v[0]), v[1], []string{"probe", "servlet"}, nil)
	}
	for sig, n := range synapseScalars {
		s.scalars[sig] = prometheus.NewDesc(name(n),
			"Synapse health signal "+sig+" derived by mxprobe from the last two scrapes (see docs/synapse.md).",
			[]string{"probe"}, nil)
	}
	return s
}

// Observe keeps the last synapse_metrics Result of each probe.
func (s *Synapse) Observe(r probes.Result) {
	if r.Type != SynapseType || r.Outcome == probes.OutcomeSkipped {
		return
	}
	s.mu.Lock()
	s.last[r.Probe] = r
	s.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (s *Synapse) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.up
	ch <- s.latency
	ch <- s.buildInfo
	for _, d := range s.perServlet {
		ch <- d
	}
	for _, d := range s.scalars {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s *Synapse) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for probe, r := range s.last {
		up := 1.0
		for _, st := range r.Steps {
			if !st.OK && (st.Name == "scrape" || st.Name == "parse" || st.Name == "baseline_scrape") {
				up = 0
			}
		}
		if len(r.Steps) == 0 {
			up = 0
		}
		ch <- prometheus.MustNewConstMetric(s.up, prometheus.GaugeValue, up, probe)
		if up == 0 {
			continue
		}
		for sig, v := range r.Signals {
			base, part, hasPart := strings.Cut(sig, ":")
			if d, ok := s.scalars[sig]; ok {
				ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, probe)
				continue
			}
			if d, ok := s.perServlet[base]; ok {
				servlet := "all"
				if hasPart {
					servlet = part
				}
				ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, probe, servlet)
				continue
			}
			if q, ok := synapseQuantiles[base]; ok && hasPart {
				ch <- prometheus.MustNewConstMetric(s.latency, prometheus.GaugeValue, v, probe, part, q)
				continue
			}
			if base == "build_info" && hasPart {
				ch <- prometheus.MustNewConstMetric(s.buildInfo, prometheus.GaugeValue, 1, probe, part)
			}
		}
	}
}
