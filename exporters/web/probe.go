package web

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mxprobe/mxprobe/probes"
)

func (s *Server) registerProbe() {
	s.Mux.HandleFunc("GET /probe", s.probeHandler) // GET also serves HEAD
}

// scrapeTimeoutOffset leaves Prometheus time to receive the answer.
const scrapeTimeoutOffset = 500 * time.Millisecond

// probeHandler is /probe?module=PROBE&tenant=T in blackbox_exporter style:
// one run now, and the exposition of that run only, on a registry of its own.
// With a token configured it needs the token, unless the module is in
// web.probe_anonymous_modules. A fresh run starts at most once per probe and
// tenant per run floor; callers in between get that run's result. HEAD
// starts nothing.
func (s *Server) probeHandler(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	module, tenant := q.Get("module"), q.Get("tenant")
	st := s.settings()
	if !(st.Token != "" && anonymousProbe(st, module)) && !s.allow(w, r, st, accessWrite) {
		return
	}
	run := s.features.Runner
	if module == "" {
		http.Error(w, "module parameter is missing: /probe?module=<probe name>&tenant=<tenant id>", http.StatusBadRequest)
		return
	}
	if run == nil {
		http.Error(w, "no probes are configured yet", http.StatusServiceUnavailable)
		return
	}
	job, err := run.Lookup(module, tenant)
	if err != nil {
		http.Error(w, probeLookupMessage(err, module, tenant, run), http.StatusBadRequest)
		return
	}
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		return
	}
	ctx := r.Context()
	if v := r.Header.Get("X-Prometheus-Scrape-Timeout-Seconds"); v != "" {
		if secs, err := strconv.ParseFloat(v, 64); err == nil && secs > 0 {
			d := time.Duration(secs*float64(time.Second)) - scrapeTimeoutOffset
			if d < 100*time.Millisecond {
				d = 100 * time.Millisecond
			}
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, d)
			defer cancel()
		}
	}
	start := time.Now()
	res, _, err := s.runFloored(ctx, job.Name, tenant, st.RunFloor)
	if err != nil {
		// The run goes on in the engine and reaches the sinks; this scrape
		// reports what it saw: no success within its timeout.
		s.opts.Logger.Warn("probe via /probe did not finish within the scrape timeout", "probe", job.Name, "tenant", tenant, "err", err)
		res = probes.Result{Probe: job.Name, Type: job.Type, Tenant: tenant, Outcome: probes.OutcomeFailure,
			Class: probes.ClassTimeout, Duration: time.Since(start)}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(resultCollector{res})
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: log.New(levelWriter{s.opts.Logger}, "", 0),
	}).ServeHTTP(w, r)
}

func probeLookupMessage(err error, module, tenant string, run Runner) string {
	switch {
	case errors.Is(err, probes.ErrUnknownProbe):
		var names []string
		for _, j := range run.Jobs() {
			names = append(names, j.Name)
		}
		return fmt.Sprintf("unknown module %q: the module parameter names a configured probe (configured: %s)", module, strings.Join(names, ", "))
	case errors.Is(err, probes.ErrUnknownTenant):
		if tenant == "" {
			return fmt.Sprintf("module %q runs per tenant: add &tenant=<tenant id>", module)
		}
		return fmt.Sprintf("unknown tenant %q for module %q: %v", tenant, module, err)
	}
	return err.Error()
}

// resultCollector exposes one Result.
type resultCollector struct{ res probes.Result }

func (resultCollector) Describe(chan<- *prometheus.Desc) {} // unchecked: a per-request registry

var (
	descSuccess  = prometheus.NewDesc("probe_success", "Whether the probe run succeeded (a warning, such as being rate limited, counts as success).", nil, nil)
	descDuration = prometheus.NewDesc("probe_duration_seconds", "How long the probe run took.", nil, nil)
	descStep     = prometheus.NewDesc("probe_step_duration_seconds", "Duration of each step of the run.", []string{"step"}, nil)
	descStepOK   = prometheus.NewDesc("probe_step_success", "Whether each step of the run succeeded.", []string{"step"}, nil)
	descWarning  = prometheus.NewDesc("probe_warning", "Whether the run ended with a warning (rate limited).", nil, nil)
	descFailure  = prometheus.NewDesc("probe_failure_info", "The failure class and failed step of a failed run.", []string{"class", "step"}, nil)
)

func (c resultCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.res
	ch <- prometheus.MustNewConstMetric(descSuccess, prometheus.GaugeValue, b2f(r.OK()))
	ch <- prometheus.MustNewConstMetric(descDuration, prometheus.GaugeValue, r.Duration.Seconds())
	ch <- prometheus.MustNewConstMetric(descWarning, prometheus.GaugeValue, b2f(r.Outcome == probes.OutcomeWarning))
	if !r.OK() {
		ch <- prometheus.MustNewConstMetric(descFailure, prometheus.GaugeValue, 1, string(r.Class), r.FailedStep)
	}
	seen := map[string]bool{}
	for _, st := range r.Steps {
		if seen[st.Name] { // a repeated step name (retry) keeps its first record
			continue
		}
		seen[st.Name] = true
		ch <- prometheus.MustNewConstMetric(descStep, prometheus.GaugeValue, st.Duration.Seconds(), st.Name)
		ch <- prometheus.MustNewConstMetric(descStepOK, prometheus.GaugeValue, b2f(st.OK), st.Name)
	}
	collectSignals(ch, r.Signals)
}

// collectSignals exposes each signal as a gauge probe_<signal>; a signal
// about one part ("name:part") carries the part as a label, and every
// member of a family with parts has the label ("" for the whole).
func collectSignals(ch chan<- prometheus.Metric, signals map[string]float64) {
	type part struct {
		part string
		v    float64
	}
	fams := map[string][]part{}
	hasPart := map[string]bool{}
	seen := map[[2]string]bool{}
	keys := make([]string, 0, len(signals))
	for k := range signals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		name, p, ok := strings.Cut(k, ":")
		name = "probe_" + sanitizeMetricName(name)
		if seen[[2]string{name, p}] { // "x" and "x:" (or names equal once sanitized)
			continue
		}
		seen[[2]string{name, p}] = true
		fams[name] = append(fams[name], part{p, signals[k]})
		if ok {
			hasPart[name] = true
		}
	}
	names := make([]string, 0, len(fams))
	for n := range fams {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if reservedProbeMetrics[n] {
			continue // never shadow the run's own metrics
		}
		var labels []string
		if hasPart[n] {
			labels = []string{"part"}
		}
		desc := prometheus.NewDesc(n, "Signal "+strings.TrimPrefix(n, "probe_")+" of the run.", labels, nil)
		for _, p := range fams[n] {
			var lv []string
			if hasPart[n] {
				lv = []string{p.part}
			}
			if m, err := prometheus.NewConstMetric(desc, prometheus.GaugeValue, p.v, lv...); err == nil {
				ch <- m
			}
		}
	}
}

var reservedProbeMetrics = map[string]bool{
	"probe_success": true, "probe_duration_seconds": true, "probe_warning": true,
	"probe_step_duration_seconds": true, "probe_step_success": true, "probe_failure_info": true,
}

func sanitizeMetricName(s string) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r == '_':
			b.WriteRune(r)
		case r >= '0' && r <= '9' && i > 0:
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
