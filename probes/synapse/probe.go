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
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"github.com/mxprobe/mxprobe/internal/config"
	"github.com/mxprobe/mxprobe/probes"
)

// Steps of a run.
const (
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

// Probe scrapes one target.
type Probe struct {
	Name   string
	Config *config.SynapseConfig
	HTTP   *http.Client
	// Store keeps previous scrapes; a private one if nil.
	Store *Store
	// Window, when positive, makes a run without a previous scrape take a
	// baseline scrape and wait this long before the real one (mxprobe run).
	Window time.Duration
	// Now is the clock (tests).
	Now func() time.Time
}

func (p *Probe) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Probe) storeKey() string { return p.Name + "\x00" + p.Config.URL }

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
	return Options{Servlets: sv, LongPoll: p.Config.LongPollServlets}
}

// Run implements probes.Prober.
func (p *Probe) Run(ctx context.Context, tenant string) probes.Result {
	rec := probes.NewRecorder(p.Name, config.TypeSynapseMetrics, tenant)
	if p.Store == nil {
		p.Store = NewStore()
	}
	key := p.storeKey()
	prev := p.Store.get(key)
	if prev == nil && p.Window > 0 {
		var base *Snapshot
		err := rec.Step(StepBaseline, func() error {
			body, err := p.fetch(ctx)
			if err != nil {
				return err
			}
			base, err = Parse(body, nil)
			if err != nil {
				return probes.WithClass(probes.ClassBadResponse, err)
			}
			base.Time = p.now()
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
		prev = base
	}

	var body []byte
	var fetched time.Time
	if rec.Step(StepScrape, func() error {
		var err error
		body, err = p.fetch(ctx)
		fetched = p.now()
		return err
	}) != nil {
		return rec.Finish()
	}
	rec.Note(fmt.Sprintf("%d bytes", len(body)))
	var cur *Snapshot
	if rec.Step(StepParse, func() error {
		var err error
		cur, err = Parse(body, prev)
		if err != nil {
			return probes.WithClass(probes.ClassBadResponse, fmt.Errorf("metrics page: %w", err))
		}
		cur.Time = fetched
		return nil
	}) != nil {
		return rec.Finish()
	}
	rec.Note(fmt.Sprintf("%d samples", cur.Samples))
	var d Derived
	_ = rec.Step(StepDerive, func() error {
		d = Derive(prev, cur, p.options())
		return nil
	})
	switch {
	case d.Baseline:
		rec.Note("first scrape: baseline kept, rates from the next run")
	case d.Resets > 0:
		rec.Note(fmt.Sprintf("%d counter resets (Synapse restarted?): counted from zero", d.Resets))
	}
	if d.Signals[SigSynapseFamiliesSeen] == 0 {
		rec.Note("no Synapse families on the page")
	}
	p.Store.put(key, cur)
	for k, v := range d.Signals {
		rec.Signal(k, v)
	}
	_ = rec.Step(StepThresholds, func() error {
		fails, warns := Evaluate(d.Signals, p.Config.Thresholds, p.options())
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
func (p *Probe) fetch(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.Config.URL, nil)
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
		limit = config.DefaultSynapseMaxBodyBytes
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

// Evaluate applies thresholds to signals. A threshold named "<signal>"
// applies to the signal and to each "<signal>:<part>" (not to latency
// signals of long-poll servlets); "<signal>:<part>" applies to that part and
// overrides the general one. It returns the failing and warning findings,
// each naming the signal, its value and the limit, sorted.
func Evaluate(signals map[string]float64, th map[string]config.Threshold, o Options) (fails, warns []string) {
	names := make([]string, 0, len(signals))
	for k := range signals {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, name := range names {
		v := signals[name]
		t, ok := th[name]
		if !ok {
			base, part := Part(name)
			if part == "" {
				continue
			}
			if t, ok = th[base]; !ok {
				continue
			}
			if isLatency(base) && o.longPoll(part) {
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
