// Package synapse is the synapse_metrics probe: it scrapes Synapse's
// Prometheus page, keeps the previous scrape of each target, and derives
// health signals (request rate, 5xx ratio and latency quantiles per servlet,
// database, federation, presence, reactor and process signals) from counter
// and histogram deltas. Thresholds turn them into a pass / warn / fail Result.
package synapse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// Steps of a run.
const (
	StepResolve    = "resolve"
	StepBaseline   = "baseline_scrape"
	StepScrape     = "scrape"
	StepParse      = "parse"
	StepDerive     = "derive"
	StepThresholds = "thresholds"
)

// Store keeps the previous snapshot of each target between runs. It is
// owned by the wiring so it survives configuration reloads.
type Store struct {
	mu sync.Mutex
	m  map[string]*Snapshot
}

// NewStore returns an empty store.
func NewStore() *Store { return &Store{m: map[string]*Snapshot{}} }

func (s *Store) get(k string) *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[k]
}

func (s *Store) put(k string, v *Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[k] = v
}

// prune drops the snapshots under prefix whose key is not in keep (processes
// gone from the configuration or the DNS answer), so the store stays
// bounded however often pods are replaced.
func (s *Store) prune(prefix string, keep map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.m {
		if strings.HasPrefix(k, prefix) && !keep[k] {
			delete(s.m, k)
		}
	}
}

// Len is the number of snapshots kept.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// Probe scrapes the processes of one Synapse deployment (one URL, listed
// targets, or the addresses behind a DNS name), concurrently within the
// run's deadline, and derives deployment-wide signals.
type Probe struct {
	Name   string
	Config *Settings
	HTTP   *http.Client
	// Store keeps previous scrapes; a private one if nil.
	Store *Store
	// Window, when positive, makes a run without a previous scrape take a
	// baseline scrape and wait this long before the real one (mxprobe run).
	Window time.Duration
	// Now is the clock (tests).
	Now func() time.Time
	// LookupHost resolves synapse.dns.name (net.DefaultResolver when nil).
	LookupHost func(ctx context.Context, host string) ([]string, error)
}

func (p *Probe) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Probe) storeKey(url string) string { return p.Name + "\x00" + url }

func (p *Probe) options() Options {
	sv := append([]string(nil), DefaultServlets...)
	for _, s := range p.Config.Servlets {
		dup := false
		for _, x := range sv {
			dup = dup || x == s
		}
		if !dup {
			sv = append(sv, s)
		}
	}
	return Options{Servlets: sv, LongPoll: p.Config.LongPollServlets, MinRequests: p.Config.MinRequests, TopCaches: p.Config.TopCaches}
}

// targets lists the processes to scrape: the configured ones, then the
// addresses behind synapse.dns (sorted, at most max_processes).
func (p *Probe) targets(ctx context.Context) ([]Target, error) {
	ts := p.Config.Processes()
	d := p.Config.DNS
	if d == nil {
		return ts, nil
	}
	lookup := p.LookupHost
	if lookup == nil {
		lookup = net.DefaultResolver.LookupHost
	}
	addrs, err := lookup(ctx, d.Name)
	if err != nil {
		return nil, probes.WithClass(probes.ClassUnreachable, fmt.Errorf("synapse.dns.name %s: %w", d.Name, err))
	}
	sort.Strings(addrs)
	limit := d.MaxProcesses
	if limit <= 0 {
		limit = DefaultMaxProcesses
	}
	if len(addrs) > limit {
		addrs = addrs[:limit]
	}
	scheme, path, kind := d.Scheme, d.Path, d.Kind
	if scheme == "" {
		scheme = "http"
	}
	if path == "" {
		path = "/_synapse/metrics"
	}
	if kind == "" {
		kind = "generic_worker"
	}
	if err := p.checkAddrs(d, scheme, addrs); err != nil {
		return nil, err
	}
	for _, a := range addrs {
		ts = append(ts, Target{
			// Signal parts are separated by ':', so an IPv6 address is
			// written with '_'.
			Name: strings.ReplaceAll(a, ":", "_"),
			Kind: kind,
			URL:  scheme + "://" + net.JoinHostPort(a, strconv.Itoa(d.Port)) + path,
		})
	}
	if len(ts) == 0 {
		return nil, probes.Errorf(probes.ClassUnreachable, "synapse.dns.name %s: no addresses", d.Name)
	}
	return ts, nil
}

// checkAddrs refuses a DNS answer the probe must not scrape: with
// synapse.dns.allowed_cidrs, any address outside them; without, when the
// probe sends credentials over plain http, any address but loopback. A
// hijacked or misconfigured DNS name then cannot collect the bearer token
// or the basic auth password. The error names the address.
func (p *Probe) checkAddrs(d *DNS, scheme string, addrs []string) error {
	allowed, err := d.Allowed()
	if err != nil {
		return probes.Errorf(probes.ClassConfig, "synapse.dns.allowed_cidrs: %v", err)
	}
	creds := p.Config.BasicAuth != nil || p.Config.BearerToken != "" || p.Config.BearerTokenFile != ""
	for _, a := range addrs {
		ip, err := netip.ParseAddr(a)
		if err != nil {
			return probes.Errorf(probes.ClassBadResponse, "synapse.dns.name %s answered %q, not an IP address", d.Name, mxclient.Short(a))
		}
		ip = ip.Unmap()
		switch {
		case len(allowed) > 0:
			if !slices.ContainsFunc(allowed, func(r netip.Prefix) bool { return r.Contains(ip) }) {
				return probes.Errorf(probes.ClassConfig, "synapse.dns.name %s answered %s, outside synapse.dns.allowed_cidrs: not scraped", d.Name, ip)
			}
		case creds && scheme != "https" && !ip.IsLoopback():
			return probes.Errorf(probes.ClassConfig, "synapse.dns.name %s answered %s: the probe's credentials go over plain http only to loopback or to synapse.dns.allowed_cidrs (set them, or synapse.dns.scheme: https); not scraped", d.Name, ip)
		}
	}
	return nil
}

// scrapeResult is one process's scrape.
type scrapeResult struct {
	snap     *Snapshot
	dur      time.Duration // fetching the page
	parseDur time.Duration
	err      error
	parseErr bool
}

// scrapeAll fetches and parses every target concurrently, each page as soon
// as it arrives (prev[i], if any, is the previous snapshot of target i); it
// returns when all are done (each fetch is bound by ctx).
func (p *Probe) scrapeAll(ctx context.Context, ts []Target, prev []*Snapshot) []scrapeResult {
	out := make([]scrapeResult, len(ts))
	var wg sync.WaitGroup
	for i := range ts {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := &out[i]
			start := time.Now()
			body, err := p.fetch(ctx, ts[i].URL)
			fetched := p.now()
			r.dur = time.Since(start)
			if err != nil {
				r.err = err
				return
			}
			var pv *Snapshot
			if prev != nil {
				pv = prev[i]
			}
			start = time.Now()
			snap, err := Parse(body, pv)
			r.parseDur = time.Since(start)
			if err != nil {
				r.err = probes.WithClass(probes.ClassBadResponse, fmt.Errorf("metrics page: %w", err))
				r.parseErr = true
				return
			}
			snap.Time = fetched
			r.snap = snap
		}(i)
	}
	wg.Wait()
	return out
}

// firstErr summarises failed scrapes: the error of the first, naming the
// process when the deployment has several.
func firstErr(ts []Target, rs []scrapeResult) (error, []string) {
	return firstErrOf(ts, rs, len(ts) > 1)
}

func firstErrOf(ts []Target, rs []scrapeResult, named bool) (error, []string) {
	var first error
	var down []string
	for i, r := range rs {
		if r.err == nil {
			continue
		}
		down = append(down, ts[i].Name)
		if first == nil {
			first = r.err
			if named {
				first = &probes.Error{Class: probes.Classify(r.err), Status: probes.StatusOf(r.err),
					Err: fmt.Errorf("process %s (%s): %w", ts[i].Name, ts[i].Kind, r.err)}
			}
		}
	}
	return first, down
}

// Run implements probes.Prober.
func (p *Probe) Run(ctx context.Context, tenant string) probes.Result {
	rec := probes.NewRecorder(p.Name, TypeSynapseMetrics, tenant)
	if p.Store == nil {
		p.Store = NewStore()
	}
	var ts []Target
	if rec.Step(StepResolve, func() error {
		var err error
		ts, err = p.targets(ctx)
		return err
	}) != nil {
		return rec.Finish()
	}
	keep := map[string]bool{}
	for _, t := range ts {
		keep[p.storeKey(t.URL)] = true
	}
	p.Store.prune(p.storeKey(""), keep)
	prev := make([]*Snapshot, len(ts))
	havePrev := false
	for i, t := range ts {
		prev[i] = p.Store.get(p.storeKey(t.URL))
		havePrev = havePrev || prev[i] != nil
	}
	if !havePrev && p.Window > 0 {
		var base []scrapeResult
		err := rec.Step(StepBaseline, func() error {
			base = p.scrapeAll(ctx, ts, nil)
			if err, down := firstErr(ts, base); len(down) == len(ts) {
				return err
			}
			return nil
		})
		if err != nil {
			return rec.Finish()
		}
		rec.Note(fmt.Sprintf("waiting %s for the second scrape", p.Window))
		t := time.NewTimer(p.Window)
		select {
		case <-ctx.Done():
			t.Stop()
			rec.Fail(StepBaseline, ctx.Err())
			return rec.Finish()
		case <-t.C:
		}
		for i := range base {
			prev[i] = base[i].snap
		}
	}

	// Fetch and parse every process concurrently. The scrape step (as long
	// as the slowest fetch) fails when no page was fetched, the parse step
	// (as long as the slowest parse) when none of the fetched pages parsed;
	// otherwise the missing processes are reported.
	rs := p.scrapeAll(ctx, ts, prev)
	var fetchDur, parseDur time.Duration
	var fetched []scrapeResult // the pages that arrived
	var fetchedTs []Target
	for i, r := range rs {
		fetchDur, parseDur = max(fetchDur, r.dur), max(parseDur, r.parseDur)
		if r.err == nil || r.parseErr {
			fetched = append(fetched, r)
			fetchedTs = append(fetchedTs, ts[i])
		}
	}
	if len(fetched) == 0 {
		err, _ := firstErr(ts, rs)
		rec.AddStep(StepScrape, fetchDur, err)
		return rec.Finish()
	}
	rec.AddStep(StepScrape, fetchDur, nil)
	_, down := firstErr(ts, rs)
	if len(down) == len(ts) {
		err, _ := firstErrOf(fetchedTs, fetched, len(ts) > 1)
		rec.AddStep(StepParse, parseDur, err)
		return rec.Finish()
	}
	rec.AddStep(StepParse, parseDur, nil)
	procs := make([]Process, len(ts))
	total := 0
	for i, t := range ts {
		procs[i] = Process{Worker: t.Name, Kind: t.Kind, Prev: prev[i], Cur: rs[i].snap}
		if rs[i].snap != nil {
			total += rs[i].snap.Bytes
			p.Store.put(p.storeKey(t.URL), rs[i].snap)
		}
	}
	rec.Note(fmt.Sprintf("%d of %d processes scraped, %d bytes", len(ts)-len(down), len(ts), total))
	var d Derived
	_ = rec.Step(StepDerive, func() error {
		d = DeriveDeployment(procs, p.options())
		return nil
	})
	for i, t := range ts {
		d.Signals[SigProcScrape+":"+t.Name] = rs[i].dur.Seconds()
	}
	switch {
	case d.Baseline:
		rec.Note("first scrape: baseline kept, rates from the next run")
	case d.Resets > 0:
		rec.Note(fmt.Sprintf("%d counter resets (%g processes restarted): counted from zero, rates over the time since the start", d.Resets, d.Signals[SigRestartedProcesses]))
	}
	for _, t := range ts {
		if d.Signals[SigProcRestart+":"+t.Name] == 1 {
			rec.Note(fmt.Sprintf("process %s (%s) restarted in the window", t.Name, t.Kind))
		}
	}
	if d.Signals[SigSynapseFamiliesSeen] == 0 {
		rec.Note("no Synapse families on the page")
	}
	for k, v := range d.Signals {
		rec.Signal(k, v)
	}
	_ = rec.Step(StepThresholds, func() error {
		fails, warns := Evaluate(d.Signals, p.Config.Thresholds, p.options())
		if len(down) > 0 {
			err, _ := firstErr(ts, rs)
			warns = append(warns, fmt.Sprintf("%d of %d processes not scraped (%s): %v", len(down), len(ts), strings.Join(down, ", "), err))
		}
		if len(fails) > 0 {
			return probes.Errorf(probes.ClassThreshold, "%s", strings.Join(append(fails, warns...), "; "))
		}
		if len(warns) > 0 {
			rec.Note(strings.Join(warns, "; "))
			rec.Warn(StepThresholds, probes.ClassThreshold, strings.Join(warns, "; "))
		}
		return nil
	})
	return rec.Finish()
}

// acceptHeader asks for the text format Synapse serves; protobuf is decoded
// with expfmt if a server insists on it.
const acceptHeader = "text/plain;version=0.0.4;q=1,application/openmetrics-text;version=1.0.0;q=0.5,*/*;q=0.1"

// fetch GETs the page within ctx, with auth, checking status, content type
// and size.
func (p *Probe) fetch(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, probes.Errorf(probes.ClassConfig, "synapse.url: %v", err)
	}
	req.Header.Set("Accept", acceptHeader)
	if ba := p.Config.BasicAuth; ba != nil {
		pw, err := config.Secret(ba.Password, ba.PasswordFile)
		if err != nil {
			return nil, probes.Errorf(probes.ClassConfig, "basic_auth password: %v", err)
		}
		req.SetBasicAuth(ba.Username, pw)
	}
	if p.Config.BearerToken != "" || p.Config.BearerTokenFile != "" {
		tok, err := config.Secret(p.Config.BearerToken, p.Config.BearerTokenFile)
		if err != nil {
			return nil, probes.Errorf(probes.ClassConfig, "bearer token: %v", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	httpc := p.HTTP
	if httpc == nil {
		httpc = http.DefaultClient
	}
	resp, err := httpc.Do(req)
	if err != nil {
		return nil, scrubURLError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		class := probes.ClassForStatus(resp.StatusCode)
		if class == probes.ClassNone {
			class = probes.ClassBadResponse
		}
		return nil, &probes.Error{Class: class, Status: resp.StatusCode, Err: fmt.Errorf("metrics page: HTTP %d", resp.StatusCode)}
	}
	ct := resp.Header.Get("Content-Type")
	mt, params, _ := mime.ParseMediaType(ct)
	if mt == "text/html" {
		return nil, &probes.Error{Class: probes.ClassBadResponse, Status: resp.StatusCode,
			Err: fmt.Errorf("metrics page: got an HTML page (Content-Type %s), not Prometheus metrics", mt)}
	}
	limit := p.Config.MaxBodyBytes
	if limit <= 0 {
		limit = DefaultMaxBodyBytes
	}
	if resp.ContentLength > limit {
		return nil, probes.Errorf(probes.ClassBadResponse, "metrics page: %d bytes announced, over the limit of %d bytes (synapse.max_body_bytes)", resp.ContentLength, limit)
	}
	var buf bytes.Buffer
	if resp.ContentLength > 0 {
		buf.Grow(int(resp.ContentLength))
	}
	n, err := buf.ReadFrom(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return nil, err
		}
		return nil, probes.Errorf(probes.ClassBadResponse, "metrics page: reading the body after %d bytes: %v (truncated?)", n, err)
	}
	if n > limit {
		return nil, probes.Errorf(probes.ClassBadResponse, "metrics page: over the limit of %d bytes (synapse.max_body_bytes)", limit)
	}
	if mt == "application/vnd.google.protobuf" && params["proto"] == "io.prometheus.client.MetricFamily" {
		return protoToText(buf.Bytes(), resp.Header)
	}
	return buf.Bytes(), nil
}

// protoToText decodes a delimited protobuf page with expfmt and renders it
// as text for the line parser.
func protoToText(b []byte, h http.Header) ([]byte, error) {
	dec := expfmt.NewDecoder(bytes.NewReader(b), expfmt.ResponseFormat(h))
	var out bytes.Buffer
	for i := 0; ; i++ {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); err != nil {
			if errors.Is(err, io.EOF) {
				return out.Bytes(), nil
			}
			return nil, probes.Errorf(probes.ClassBadResponse, "metrics page (protobuf): family %d: %v", i+1, err)
		}
		if _, err := expfmt.MetricFamilyToText(&out, &mf); err != nil {
			return nil, probes.Errorf(probes.ClassBadResponse, "metrics page (protobuf): family %d: %v", i+1, err)
		}
	}
}

// scrubURLError keeps the class of a transport error but drops the URL,
// which may carry credentials in odd configurations.
func scrubURLError(err error) error {
	class := probes.Classify(err)
	var ue interface{ Unwrap() error }
	inner := err
	if errors.As(err, &ue) {
		if u := ue.Unwrap(); u != nil {
			inner = u
		}
	}
	return &probes.Error{Class: class, Err: fmt.Errorf("metrics page: %w", inner)}
}

// ratioCounts names, for each ratio signal, the count in the window it is
// computed over.
var ratioCounts = map[string]string{
	Sig5xxRatio:        SigResponsesInWindow,
	SigFedOutFailRatio: SigFedOutInWindow,
	SigPushFailRatio:   SigPushInWindow,
}

// Evaluate applies thresholds to signals. A threshold named "<signal>"
// applies to the signal and to each "<signal>:<part>" (not to latency
// signals of long-poll requests); "<signal>:<part>" applies to that part and
// overrides the general one. A ratio, or a servlet's latency, computed over
// fewer than Options.MinRequests requests is not judged. It returns the failing and
// warning findings, each naming the signal, its value and the limit, sorted.
func Evaluate(signals map[string]float64, th map[string]Threshold, o Options) (fails, warns []string) {
	names := make([]string, 0, len(signals))
	for k := range signals {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		v := signals[name]
		base, part := Part(name)
		t, ok := th[name]
		if !ok {
			if part == "" {
				continue
			}
			if t, ok = th[base]; !ok {
				continue
			}
			if isLatency(base) && o.longPollPart(part) {
				continue
			}
		}
		cnt, judged := ratioCounts[base]
		if isLatency(base) && part != "" {
			cnt, judged = SigResponsesInWindow, true
		}
		if judged {
			k := cnt
			if part != "" {
				k += ":" + part
			}
			if n, ok := signals[k]; ok && n < o.minRequests() {
				continue
			}
		}
		switch {
		case t.Fail != nil && v > *t.Fail:
			fails = append(fails, fmt.Sprintf("%s = %.4g above %g", name, v, *t.Fail))
		case t.FailBelow != nil && v < *t.FailBelow:
			fails = append(fails, fmt.Sprintf("%s = %.4g below %g", name, v, *t.FailBelow))
		case t.Warn != nil && v > *t.Warn:
			warns = append(warns, fmt.Sprintf("%s = %.4g above warning level %g", name, v, *t.Warn))
		case t.WarnBelow != nil && v < *t.WarnBelow:
			warns = append(warns, fmt.Sprintf("%s = %.4g below warning level %g", name, v, *t.WarnBelow))
		}
	}
	return fails, warns
}

func isLatency(base string) bool {
	switch base {
	case SigP50, SigP95, SigP99, SigMean:
		return true
	}
	return false
}
