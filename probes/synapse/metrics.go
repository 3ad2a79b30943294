package synapse

import (
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxprobe/mxprobe/probes"
)

// metricsNamespace prefixes the type's metrics, like every mxprobe metric.
const metricsNamespace = "mxprobe"

// collector re-exports the derived signals of synapse_metrics Results as
// mxprobe_synapse_* gauges. Labels are bounded: probe (one deployment per
// probe), servlet (only the servlets the probe was configured to report,
// plus "all"), tag (Synapse's three sync kinds), quantile, loop (Synapse's
// event processing loops), cache (the top caches, synapse.top_caches),
// worker and kind (the configured processes, or at most
// synapse.dns.max_processes addresses), and version for build_info. Signals
// absent from the last run have no series.
type collector struct {
	mu   sync.Mutex
	last map[string]probes.Result // by probe name

	up         *prometheus.Desc
	perServlet map[string]*prometheus.Desc // signal base → desc with servlet label
	latency    *prometheus.Desc
	byTag      *prometheus.Desc
	scalars    map[string]*prometheus.Desc // signal → desc with probe label only
	perProcess map[string]*prometheus.Desc // signal base → desc with worker, kind labels
	lag        *prometheus.Desc
	cache      *prometheus.Desc
	buildInfo  *prometheus.Desc
	// quantiles maps latency signals to their quantile label.
	quantiles map[string]string
}

// synapseScalars maps plain signals to their gauge names (after
// mxprobe_synapse_) and help (unit and meaning; docs/synapse.md has more).
func synapseScalars() map[string][2]string {
	return map[string][2]string{
		"http_requests_received_per_second":        {"requests_received_per_second", "Requests received per second, all processes (synapse_http_server_requests_received_total)."},
		"http_429_per_second":                      {"http_429_per_second", "Client-API answers with 429 (rate limited) per second, all processes."},
		"db_txn_per_second":                        {"db_txn_per_second", "Database transactions per second, all processes."},
		"db_txn_mean_seconds":                      {"db_txn_mean_seconds", "Mean database transaction time in seconds, all processes."},
		"db_schedule_mean_seconds":                 {"db_schedule_mean_seconds", "Mean wait for a database connection in seconds (synapse_storage_schedule_time)."},
		"db_schedule_p95_seconds":                  {"db_schedule_p95_seconds", "95th percentile wait for a database connection in seconds."},
		"events_persisted_per_second":              {"events_persisted_per_second", "Events persisted per second (event persisters only)."},
		"federation_staging_pdus":                  {"federation_staging_pdus", "Inbound federation PDUs waiting in the staging area (database-wide: max over processes)."},
		"federation_staging_oldest_seconds":        {"federation_staging_oldest_seconds", "Age in seconds of the oldest staged inbound PDU (Synapse exposes milliseconds; database-wide)."},
		"federation_received_edus_per_second":      {"federation_received_edus_per_second", "Inbound federation EDUs per second."},
		"federation_send_queue_pdus":               {"federation_send_queue_pdus", "PDUs waiting in the federation senders' transmission queues (sum over senders)."},
		"federation_send_queue_edus":               {"federation_send_queue_edus", "EDUs waiting in the federation senders' transmission queues (sum over senders)."},
		"federation_outgoing_requests_per_second":  {"federation_outgoing_requests_per_second", "Outgoing federation responses per second (synapse_http_matrixfederationclient_responses_total)."},
		"federation_outgoing_failure_ratio":        {"federation_outgoing_failure_ratio", "Share of outgoing federation requests that got a 5xx or no answer."},
		"federation_rate_limit_rejects_per_second": {"federation_rate_limit_rejects_per_second", "Requests rejected by Synapse's federation rate limiter per second."},
		"event_processing_lag_p95_seconds":         {"event_processing_lag_p95_seconds", "95th percentile of the time between an event's persistence and its processing by the loops, in seconds."},
		"presence_updates_per_second":              {"presence_updates_per_second", "Presence updates per second."},
		"reactor_tick_mean_seconds":                {"reactor_tick_mean_seconds", "Mean Twisted reactor tick time in seconds, all processes."},
		"reactor_tick_p95_seconds":                 {"reactor_tick_p95_seconds", "95th percentile reactor tick time in seconds, all processes."},
		"reactor_tick_p99_seconds":                 {"reactor_tick_p99_seconds", "99th percentile reactor tick time in seconds, all processes."},
		"reactor_last_seen_seconds":                {"reactor_last_seen_seconds", "Seconds since a reactor last ticked, worst process (a stalled reactor grows it)."},
		"background_processes_in_flight":           {"background_processes_in_flight", "Background processes running, all processes."},
		"push_failures_per_second":                 {"push_failures_per_second", "Failed HTTP pushes (to push gateways) per second."},
		"push_failure_ratio":                       {"push_failure_ratio", "Share of HTTP pushes that failed."},
		"forward_extremities_p99":                  {"forward_extremities_p99", "99th percentile of forward extremities per room (a gauge histogram, database-wide)."},
		"forward_extremities_rooms_over_10":        {"forward_extremities_rooms_over_10", "Rooms with more than 10 forward extremities."},
		"process_cpu_seconds_per_second":           {"process_cpu_seconds_per_second", "CPU seconds per second, all processes."},
		"process_resident_memory_bytes":            {"process_resident_memory_bytes", "Resident memory in bytes, all processes."},
		"process_open_fds":                         {"process_open_fds", "Open file descriptors, all processes."},
		"counter_resets":                           {"counter_resets", "Counter samples that went down between the last two scrapes (restarts)."},
		"restarted":                                {"restarted", "1 if a process restarted between the last two scrapes."},
		"restarted_processes":                      {"restarted_processes", "Processes that restarted between the last two scrapes."},
		"processes":                                {"processes", "Processes of the deployment the probe scrapes."},
		"processes_up":                             {"processes_up", "Processes whose last scrape was fetched and parsed."},
	}
}

// synapseProcess maps per-process signals to gauges with worker and kind.
func synapseProcess() map[string][2]string {
	return map[string][2]string{
		"process_up":                      {"process_up", "1 if the last scrape of this Synapse process was fetched and parsed."},
		"process_restarted":               {"process_restarted", "1 if this process restarted between the last two scrapes."},
		"process_scrape_duration_seconds": {"process_scrape_duration_seconds", "Time the last scrape of this process's metrics page took, in seconds."},
		"process_requests_per_second":     {"process_requests_per_second", "HTTP responses per second of this process (since its start if it restarted)."},
		"process_cpu_per_second":          {"process_cpu_seconds_per_second_by_worker", "CPU seconds per second of this process."},
	}
}

// synapseServlet maps signals that have an overall value and per-servlet
// parts to gauges with a servlet label ("all" for the overall value).
func synapseServlet() map[string][2]string {
	return map[string][2]string{
		"http_requests_per_second":     {"requests_per_second", "HTTP responses per second between the last two scrapes, all processes, by servlet (all: every servlet)."},
		"http_5xx_ratio":               {"http_5xx_ratio", "Share of 5xx responses between the last two scrapes, all processes, by servlet (all: every servlet)."},
		"http_longpoll_overflow_ratio": {"http_longpoll_overflow_ratio", "Long-poll servlets: share of 2xx requests beyond the top finite response-time bucket."},
		"http_response_mean_seconds":   {"http_response_mean_seconds", "Mean response time of 2xx answers between the last two scrapes, by servlet (not for long-poll servlets)."},
	}
}

func synapseQuantiles() map[string]string {
	return map[string]string{
		"http_response_p50_seconds": "0.5",
		"http_response_p95_seconds": "0.95",
		"http_response_p99_seconds": "0.99",
	}
}

// newCollector builds the gauges' descriptions (Metrics registers them).
func newCollector() *collector {
	name := func(n string) string { return prometheus.BuildFQName(metricsNamespace, "synapse", n) }
	s := &collector{
		last:      map[string]probes.Result{},
		quantiles: synapseQuantiles(),
		up: prometheus.NewDesc(name("up"),
			"1 if the last scrape of the Synapse deployment reached at least one process.", []string{"probe"}, nil),
		latency: prometheus.NewDesc(name("http_response_seconds"),
			"Response time quantiles of 2xx answers from histogram bucket deltas between the last two scrapes, all processes (long-poll servlets: finite buckets only).",
			[]string{"probe", "servlet", "quantile"}, nil),
		byTag: prometheus.NewDesc(name("http_response_by_tag_seconds"),
			"Response time quantiles of 2xx answers by sync kind (tag): initial and full-state syncs over all buckets, incremental (long-poll) syncs over finite buckets.",
			[]string{"probe", "servlet", "tag", "quantile"}, nil),
		lag: prometheus.NewDesc(name("event_processing_lag_events"),
			"Stream positions an event processing loop is behind the persisted position (loop all: the worst loop).",
			[]string{"probe", "loop"}, nil),
		cache: prometheus.NewDesc(name("cache_hit_ratio"),
			"Cache hit ratio between the last two scrapes, rate(hits)/rate(lookups), for the most looked-up caches (cache all: every cache).",
			[]string{"probe", "cache"}, nil),
		buildInfo: prometheus.NewDesc(name("build_info"),
			"Synapse version from synapse_build_info; always 1.", []string{"probe", "version"}, nil),
		perServlet: map[string]*prometheus.Desc{},
		scalars:    map[string]*prometheus.Desc{},
		perProcess: map[string]*prometheus.Desc{},
	}
	for sig, v := range synapseServlet() {
		s.perServlet[sig] = prometheus.NewDesc(name(v[0]), v[1], []string{"probe", "servlet"}, nil)
	}
	for sig, v := range synapseScalars() {
		s.scalars[sig] = prometheus.NewDesc(name(v[0]), v[1]+" Derived by mxprobe from the last two scrapes (docs/synapse.md).", []string{"probe"}, nil)
	}
	for sig, v := range synapseProcess() {
		s.perProcess[sig] = prometheus.NewDesc(name(v[0]), v[1], []string{"probe", "worker", "kind"}, nil)
	}
	return s
}

// observe keeps the last synapse_metrics Result of each probe (the
// type's Observer).
func (s *collector) observe(r probes.Result) {
	if r.Type != TypeSynapseMetrics || r.Outcome == probes.OutcomeSkipped {
		return
	}
	s.mu.Lock()
	s.last[r.Probe] = r
	s.mu.Unlock()
}

// Describe implements prometheus.Collector.
func (s *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.up
	ch <- s.latency
	ch <- s.byTag
	ch <- s.lag
	ch <- s.cache
	ch <- s.buildInfo
	for _, d := range s.perServlet {
		ch <- d
	}
	for _, d := range s.perProcess {
		ch <- d
	}
	for _, d := range s.scalars {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s *collector) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for probe, r := range s.last {
		up := 1.0
		for _, st := range r.Steps {
			if !st.OK && (st.Name == StepResolve || st.Name == StepScrape || st.Name == StepParse || st.Name == StepBaseline) {
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
		kinds := map[string]string{}
		for sig := range r.Signals {
			if rest, ok := strings.CutPrefix(sig, "process_info:"); ok {
				if w, k, ok := strings.Cut(rest, ":"); ok {
					kinds[w] = k
				}
			}
		}
		for sig, v := range r.Signals {
			base, part, hasPart := strings.Cut(sig, ":")
			servlet, tag, hasTag := strings.Cut(part, ":")
			if d, ok := s.perProcess[base]; ok && hasPart {
				ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, probe, part, kinds[part])
				continue
			}
			switch base {
			case "event_processing_lag_events":
				loop := "all"
				if hasPart {
					loop = part
				}
				ch <- prometheus.MustNewConstMetric(s.lag, prometheus.GaugeValue, v, probe, loop)
				continue
			case "cache_hit_ratio":
				cache := "all"
				if hasPart {
					cache = part
				}
				ch <- prometheus.MustNewConstMetric(s.cache, prometheus.GaugeValue, v, probe, cache)
				continue
			}
			if hasTag {
				if q, ok := s.quantiles[base]; ok {
					ch <- prometheus.MustNewConstMetric(s.byTag, prometheus.GaugeValue, v, probe, servlet, tag, q)
				}
				continue
			}
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
			if q, ok := s.quantiles[base]; ok && hasPart {
				ch <- prometheus.MustNewConstMetric(s.latency, prometheus.GaugeValue, v, probe, part, q)
				continue
			}
			if base == "build_info" && hasPart {
				ch <- prometheus.MustNewConstMetric(s.buildInfo, prometheus.GaugeValue, 1, probe, part)
			}
		}
	}
}
