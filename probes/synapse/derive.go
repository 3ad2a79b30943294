package synapse

import (
	"math"
	"sort"
	"strings"
)

// Signal names (see docs/synapse.md). Per-servlet signals are
// "<signal>:<servlet>".
const (
	SigWindow              = "window_seconds"
	SigPageBytes           = "page_bytes"
	SigPageSamples         = "page_samples"
	SigRequests            = "http_requests_per_second"
	SigRequestsReceived    = "http_requests_received_per_second"
	Sig5xxRatio            = "http_5xx_ratio"
	SigP50                 = "http_response_p50_seconds"
	SigP95                 = "http_response_p95_seconds"
	SigP99                 = "http_response_p99_seconds"
	SigMean                = "http_response_mean_seconds"
	SigLongPollOverflow    = "http_longpoll_overflow_ratio"
	SigDBTxnRate           = "db_txn_per_second"
	SigDBTxnMean           = "db_txn_mean_seconds"
	SigDBScheduleMean      = "db_schedule_mean_seconds"
	SigDBScheduleP95       = "db_schedule_p95_seconds"
	SigEventsPersisted     = "events_persisted_per_second"
	SigStagingPDUs         = "federation_staging_pdus"
	SigStagingOldest       = "federation_staging_oldest_seconds"
	SigEDUs                = "federation_received_edus_per_second"
	SigPresence            = "presence_updates_per_second"
	SigReactorTickMean     = "reactor_tick_mean_seconds"
	SigReactorTickP95      = "reactor_tick_p95_seconds"
	SigCPU                 = "process_cpu_seconds_per_second"
	SigRSS                 = "process_resident_memory_bytes"
	SigFDs                 = "process_open_fds"
	SigStartTime           = "process_start_time_seconds"
	SigRestarted           = "restarted"
	SigCounterResets       = "counter_resets"
	SigBuildInfo           = "build_info"
	SigSynapseFamiliesSeen = "synapse_families"
)

// DefaultServlets always get per-servlet signals.
var DefaultServlets = []string{
	"RoomSendEventRestServlet", "SyncRestServlet", "RoomCreateRestServlet", "RoomMembershipRestServlet",
}

// DefaultLongPollServlets are judged apart: their requests wait up to 30 s
// by design and land in the +Inf bucket.
var DefaultLongPollServlets = []string{"SyncRestServlet", "EventStreamRestServlet"}

// Options select what Derive reports.
type Options struct {
	// Servlets get per-servlet signals (DefaultServlets when nil).
	Servlets []string
	// LongPoll servlets get quantiles over finite buckets only.
	LongPoll []string
}

func (o Options) servlets() []string {
	if o.Servlets == nil {
		return DefaultServlets
	}
	return o.Servlets
}

func (o Options) longPoll(s string) bool {
	lp := o.LongPoll
	if lp == nil {
		lp = DefaultLongPollServlets
	}
	for _, x := range lp {
		if x == s {
			return true
		}
	}
	return false
}

// Derived is the outcome of comparing two snapshots.
type Derived struct {
	Signals map[string]float64
	// Resets counts samples that went down (counter resets).
	Resets int
	// Baseline is true when there was no previous snapshot: only gauges.
	Baseline bool
}

// increase is Prometheus' increase over two samples: a decrease is a reset,
// after which the counter counts from zero.
func increase(prev, cur float64, hasPrev bool, resets *int) float64 {
	if !hasPrev {
		return cur
	}
	if cur < prev {
		*resets++
		return cur
	}
	return cur - prev
}

// histAgg sums bucket increases of several series with the same bounds.
type histAgg struct {
	buckets []bucket
	sum     float64
	count   float64
	n       int
}

func (h *histAgg) add(le, v float64) {
	for i := range h.buckets {
		if h.buckets[i].le == le {
			h.buckets[i].v += v
			return
		}
	}
	h.buckets = append(h.buckets, bucket{le, v})
}

// quantile is histogram_quantile as Prometheus computes it. With finiteOnly,
// the +Inf bucket is left out and the quantile is over the requests that
// completed within the top finite bound.
func (h *histAgg) quantile(q float64, finiteOnly bool) (float64, bool) {
	b := h.buckets
	sortBuckets(b)
	// Like Prometheus: at least two buckets, the last one +Inf.
	if len(b) < 2 || !isInf(b[len(b)-1].le) {
		return 0, false
	}
	// Cumulative counts must not decrease (per-sample reset handling can break it).
	for i := 1; i < len(b); i++ {
		if b[i].v < b[i-1].v {
			b[i].v = b[i-1].v
		}
	}
	if finiteOnly {
		b = b[:len(b)-1]
		if len(b) == 0 {
			return 0, false
		}
	}
	total := b[len(b)-1].v
	if total <= 0 {
		return 0, false
	}
	rank := q * total
	i := sort.Search(len(b), func(i int) bool { return b[i].v >= rank })
	if i == len(b) {
		i = len(b) - 1
	}
	if isInf(b[i].le) {
		return b[len(b)-2].le, true
	}
	start, cprev := 0.0, 0.0
	if i > 0 {
		start, cprev = b[i-1].le, b[i-1].v
	} else if b[i].le <= 0 {
		return b[i].le, true
	}
	if b[i].v == cprev {
		return b[i].le, true
	}
	return start + (b[i].le-start)*(rank-cprev)/(b[i].v-cprev), true
}

// addHist adds the increase of histogram series s (prev may be nil).
func addHist(h *histAgg, s, p *series, resets *int) {
	h.n++
	for i, b := range s.buckets {
		var pv float64
		has := false
		if p != nil {
			if i < len(p.buckets) && p.buckets[i].le == b.le {
				pv, has = p.buckets[i].v, true
			} else {
				for _, pb := range p.buckets {
					if pb.le == b.le {
						pv, has = pb.v, true
						break
					}
				}
			}
		}
		h.add(b.le, increase(pv, b.v, has, resets))
	}
	if s.hasCnt {
		h.count += increase(pcount(p), s.count, p != nil && p.hasCnt, resets)
	}
	if s.hasSum {
		h.sum += increase(psum(p), s.sum, p != nil && p.hasSum, resets)
	}
}

func pcount(p *series) float64 {
	if p == nil {
		return 0
	}
	return p.count
}

func psum(p *series) float64 {
	if p == nil {
		return 0
	}
	return p.sum
}

type servletAgg struct {
	hist        histAgg
	e5          float64
	legacy      float64
	legacy5     float64
	hasLegacy   bool
	legacyCodes bool
}

func is5xx(code string) bool { return len(code) == 3 && code[0] == '5' }

// Derive compares cur with prev (nil for the first scrape) and computes the
// health signals over the time between them.
func Derive(prev, cur *Snapshot, o Options) (d Derived) {
	d = Derived{Signals: map[string]float64{}}
	defer func() {
		// A page may carry NaN or Inf; such signals are left out.
		for k, v := range d.Signals {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				delete(d.Signals, k)
			}
		}
	}()
	sig := d.Signals
	sig[SigPageBytes] = float64(cur.Bytes)
	sig[SigPageSamples] = float64(cur.Samples)

	// Gauges need no previous scrape.
	var seen [famCount]bool
	for _, s := range cur.order {
		seen[s.fam] = true
	}
	gauge := func(f family, name string) {
		if !seen[f] {
			return
		}
		v := 0.0
		for _, s := range cur.order {
			if s.fam == f {
				v += s.value
			}
		}
		sig[name] = v
	}
	gauge(famStagingPDUs, SigStagingPDUs)
	gauge(famStagingOldest, SigStagingOldest)
	gauge(famRSS, SigRSS)
	gauge(famFDs, SigFDs)
	gauge(famStart, SigStartTime)
	if cur.Version != "" {
		sig[SigBuildInfo+":"+cur.Version] = 1
	}
	synapseFams := 0
	for f := famRespTime; f <= famReactorTick; f++ {
		if seen[f] {
			synapseFams++
		}
	}
	sig[SigSynapseFamiliesSeen] = float64(synapseFams)

	if prev == nil {
		d.Baseline = true
		return d
	}
	dt := cur.Time.Sub(prev.Time).Seconds()
	if dt <= 0 {
		d.Baseline = true
		return d
	}
	sig[SigWindow] = dt

	wantServlet := map[string]*servletAgg{}
	for _, s := range o.servlets() {
		wantServlet[s] = &servletAgg{}
	}
	var (
		resp, resp5, recv, txnN, txnS, events, edus, presence, cpu, cpuParts float64
		allHistCount, allHist5, legacyAll, legacyAll5                        float64
		sched, tick                                                          histAgg
		cpuSeen, cpuPartsSeen                                                bool
	)
	resets := 0
	for _, s := range cur.order {
		p := prev.series[s.key]
		val := func() float64 {
			if p == nil {
				return increase(0, s.value, false, &resets)
			}
			return increase(p.value, s.value, true, &resets)
		}
		switch s.fam {
		case famRespTime:
			var h histAgg
			addHist(&h, s, p, &resets)
			allHistCount += h.count
			if is5xx(s.code) {
				allHist5 += h.count
			}
			if a := wantServlet[s.servlet]; a != nil {
				a.hist.n++
				a.hist.count += h.count
				a.hist.sum += h.sum
				if is5xx(s.code) {
					a.e5 += h.count
				}
				for _, b := range h.buckets {
					a.hist.add(b.le, b.v)
				}
			}
		case famResponses:
			v := val()
			resp += v
			if is5xx(s.code) {
				resp5 += v
			}
		case famReqReceived:
			recv += val()
		case famRespCountLegacy:
			v := val()
			legacyAll += v
			if is5xx(s.code) {
				legacyAll5 += v
			}
			if a := wantServlet[s.servlet]; a != nil {
				a.hasLegacy = true
				a.legacy += v
				if s.code != "" {
					a.legacyCodes = true
				}
				if is5xx(s.code) {
					a.legacy5 += v
				}
			}
		case famTxnCount:
			txnN += val()
		case famTxnSum:
			txnS += val()
		case famSchedTime:
			addHist(&sched, s, p, &resets)
		case famReactorTick:
			addHist(&tick, s, p, &resets)
		case famEventsPersisted:
			events += val()
		case famEDUs:
			edus += val()
		case famPresence:
			presence += val()
		case famCPU:
			cpu += val()
			cpuSeen = true
		case famCPUUser, famCPUSystem:
			cpuParts += val()
			cpuPartsSeen = true
		}
	}

	// Overall HTTP.
	switch {
	case seen[famResponses]:
		sig[SigRequests] = resp / dt
		if resp > 0 {
			sig[Sig5xxRatio] = resp5 / resp
		}
	case seen[famRespTime]:
		sig[SigRequests] = allHistCount / dt
		if allHistCount > 0 {
			sig[Sig5xxRatio] = allHist5 / allHistCount
		}
	case seen[famRespCountLegacy]:
		sig[SigRequests] = legacyAll / dt
		if legacyAll > 0 {
			sig[Sig5xxRatio] = legacyAll5 / legacyAll
		}
	}
	if seen[famReqReceived] {
		sig[SigRequestsReceived] = recv / dt
	}

	// Per servlet.
	for name, a := range wantServlet {
		sfx := ":" + name
		switch {
		case a.hist.n > 0:
			sig[SigRequests+sfx] = a.hist.count / dt
			if a.hist.count > 0 {
				sig[Sig5xxRatio+sfx] = a.e5 / a.hist.count
			}
			lp := o.longPoll(name)
			for _, q := range []struct {
				q    float64
				name string
			}{{0.5, SigP50}, {0.95, SigP95}, {0.99, SigP99}} {
				if v, ok := a.hist.quantile(q.q, lp); ok {
					sig[q.name+sfx] = v
				}
			}
			if lp {
				if n := len(a.hist.buckets); n >= 2 && a.hist.buckets[n-1].v > 0 {
					b := a.hist.buckets
					sig[SigLongPollOverflow+sfx] = (b[n-1].v - b[n-2].v) / b[n-1].v
				}
			} else if a.hist.count > 0 {
				sig[SigMean+sfx] = a.hist.sum / a.hist.count
			}
		case a.hasLegacy:
			sig[SigRequests+sfx] = a.legacy / dt
			if a.legacy > 0 && a.legacyCodes {
				sig[Sig5xxRatio+sfx] = a.legacy5 / a.legacy
			}
		}
	}

	if seen[famTxnCount] {
		sig[SigDBTxnRate] = txnN / dt
		if txnN > 0 && seen[famTxnSum] {
			sig[SigDBTxnMean] = txnS / txnN
		}
	}
	if sched.n > 0 {
		if sched.count > 0 {
			sig[SigDBScheduleMean] = sched.sum / sched.count
		}
		if v, ok := sched.quantile(0.95, false); ok {
			sig[SigDBScheduleP95] = v
		}
	}
	if tick.n > 0 {
		if tick.count > 0 {
			sig[SigReactorTickMean] = tick.sum / tick.count
		}
		if v, ok := tick.quantile(0.95, false); ok {
			sig[SigReactorTickP95] = v
		}
	}
	if seen[famEventsPersisted] {
		sig[SigEventsPersisted] = events / dt
	}
	if seen[famEDUs] {
		sig[SigEDUs] = edus / dt
	}
	if seen[famPresence] {
		sig[SigPresence] = presence / dt
	}
	switch {
	case cpuSeen:
		sig[SigCPU] = cpu / dt
	case cpuPartsSeen:
		sig[SigCPU] = cpuParts / dt
	}
	restarted := 0.0
	if ps, ok := prev.gauge(famStart); ok {
		if cs, ok := cur.gauge(famStart); ok && cs != ps {
			restarted = 1
		}
	}
	sig[SigRestarted] = restarted
	sig[SigCounterResets] = float64(resets)
	d.Resets = resets
	return d
}

// gauge returns the value of a single-series family.
func (s *Snapshot) gauge(f family) (float64, bool) {
	for _, x := range s.order {
		if x.fam == f {
			return x.value, true
		}
	}
	return 0, false
}

// Part splits a signal name into its base and part ("" for the whole).
func Part(signal string) (base, part string) {
	if i := strings.IndexByte(signal, ':'); i >= 0 {
		return signal[:i], signal[i+1:]
	}
	return signal, ""
}
