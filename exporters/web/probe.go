package web

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mxprobe/mxprobe/exporters/metrics"
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
	reg.MustRegister(metrics.ResultCollector(res)) // the translation /metrics uses too
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
