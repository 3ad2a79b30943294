package synapse

import (
	"math"
	"sort"
	"strings"
)

// Process is one Synapse process (the main process or a worker) with its
// previous and current scrape. A deployment is a set of them.
type Process struct {
	// Worker names the process (bounded: from the configuration or the DNS
	// answer); Kind is its role (main, generic_worker, event_persister, ...).
	Worker, Kind string
	// Prev is nil on the first scrape of the process; Cur is nil when the
	// scrape failed (the process is down).
	Prev, Cur *Snapshot
}

// Derive compares cur with prev (nil for the first scrape) of a single
// process and computes the health signals over the time between them.
func Derive(prev, cur *Snapshot, o Options) Derived {
	return DeriveDeployment([]Process{{Prev: prev, Cur: cur}}, o)
}

// servletAgg sums one servlet's response-time histograms across processes.
type servletAgg struct {
	n     int
	count float64 // every answer
	e5    float64 // 5xx answers
	rate  float64 // answers per second (each process over its own window)
	ok    histAgg // 2xx answers only: the latency signals
	tags  map[string]*histAgg
}

type cacheAgg struct{ lookups, hits float64 }

// deployAcc accumulates every process's contribution.
type deployAcc struct {
	resets int
	// Counter increases (for ratios) and rates (increase over each process's
	// own window, summed).
	resp, resp5, respRate, r429Rate, recvRate      float64
	hist, hist5, histRate                          float64
	txnN, txnS, txnRate                            float64
	eventsRate, edusRate, presenceRate, cpuRate    float64
	fedReq, fedResp, fedResp5, fedRate, rlRate     float64
	pushFailed, pushOK, pushFailedRate             float64
	sched, tick, lagHist                           histAgg
	seenResp, seenRecv, seenHist, seenTxn, seenCPU bool
	seenEvents, seenEDUs, seenPresence, seenRL     bool
	seenFedReq, seenFedResp, seenPush              bool
	servlets                                       map[string]*servletAgg
	caches                                         map[string]*cacheAgg
}

// gauges collects gauges across processes: database-wide ones by max, one
// per process ones summed.
type gauges struct {
	seen                        [famCount]bool
	stagingPDUs, stagingOldestS float64 // max (database-wide)
	rss, fds, bgInFlight        float64 // sum
	fedPDUs, fedEDUs            float64 // sum (each sender its own queue)
	lastSeen                    float64 // max
	persistedPos                float64 // max
	positions                   map[string]float64
	extrem                      *series // the gauge histogram with most rooms
}

// DeriveDeployment computes deployment-wide signals from a set of processes:
// counters and histogram buckets are summed across processes before ratios
// and quantiles; database-wide gauges (federation staging) are taken once
// (max); each process's rates use its own window, which after a restart
// starts at process_start_time_seconds. Per-process signals
// ("<signal>:<worker>") are added for processes with a Worker name.
func DeriveDeployment(ps []Process, o Options) (d Derived) {
	d = Derived{Signals: map[string]float64{}, Baseline: true}
	defer func() {
		// A page may carry NaN or Inf; such signals are left out.
		for k, v := range d.Signals {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				delete(d.Signals, k)
			}
		}
	}()
	sig := d.Signals
	a := &deployAcc{servlets: map[string]*servletAgg{}, caches: map[string]*cacheAgg{}}
	for _, s := range o.servlets() {
		a.servlets[s] = &servletAgg{}
	}
	g := &gauges{positions: map[string]float64{}}
	var (
		bytes, samples  int
		up, restarts    int
		version         string
		window          float64
		anyWindow       bool
		synapseFamilies int
	)
	for _, p := range ps {
		w := p.Worker
		if w != "" {
			sig[SigProcInfo+":"+w+":"+p.Kind] = 1
			sig[SigProcUp+":"+w] = 0
		}
		if p.Cur == nil {
			continue
		}
		up++
		if w != "" {
			sig[SigProcUp+":"+w] = 1
		}
		bytes += p.Cur.Bytes
		samples += p.Cur.Samples
		if version == "" {
			version = p.Cur.Version
		}
		n := g.add(p.Cur)
		synapseFamilies = max(synapseFamilies, n)
		if p.Prev == nil {
			continue
		}
		dt := p.Cur.Time.Sub(p.Prev.Time).Seconds()
		if dt <= 0 {
			continue
		}
		d.Baseline = false
		anyWindow = true
		window = max(window, dt)
		restarted := false
		if ps, ok := p.Prev.gauge(famStart); ok {
			if cs, ok := p.Cur.gauge(famStart); ok && cs != ps {
				restarted = true
				// Counters start again from zero at cs: their increase
				// spans the time since the start, not the whole window.
				since := float64(p.Cur.Time.UnixNano())/1e9 - cs
				if since > 0 && since < dt {
					dt = since
				}
			}
		}
		if restarted {
			restarts++
		}
		procRate := a.add(p.Prev, p.Cur, dt)
		if w != "" {
			sig[SigProcRestart+":"+w] = b2f(restarted)
			sig[SigProcWindow+":"+w] = dt
			if procRate.reqSeen {
				sig[SigProcRequests+":"+w] = procRate.req
			}
			if procRate.cpuSeen {
				sig[SigProcCPU+":"+w] = procRate.cpu
			}
		}
	}
	sig[SigPageBytes] = float64(bytes)
	sig[SigPageSamples] = float64(samples)
	sig[SigProcesses] = float64(len(ps))
	sig[SigProcessesUp] = float64(up)
	sig[SigSynapseFamiliesSeen] = float64(synapseFamilies)
	if version != "" {
		sig[SigBuildInfo+":"+version] = 1
	}
	g.signals(sig)
	if !anyWindow {
		d.Baseline = true
		return d
	}
	sig[SigWindow] = window
	a.signals(sig, o)
	sig[SigRestarted] = b2f(restarts > 0)
	sig[SigRestartedProcesses] = float64(restarts)
	sig[SigCounterResets] = float64(a.resets)
	d.Resets = a.resets
	return d
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// add reads the gauges of one process; it returns how many of the core
// Synapse families the page has.
func (g *gauges) add(cur *Snapshot) int {
	var seen [famCount]bool
	for _, s := range cur.order {
		seen[s.fam] = true
	}
	sum := func(f family) float64 {
		v := 0.0
		for _, s := range cur.order {
			if s.fam == f {
				v += s.value
			}
		}
		return v
	}
	for _, s := range cur.order {
		switch s.fam {
		case famProcessingPos:
			if v, ok := g.positions[s.name]; !ok || s.value > v {
				g.positions[s.name] = s.value
			}
		case famForwardExtrem:
			if g.extrem == nil || s.count > g.extrem.count {
				g.extrem = s
			}
		}
	}
	if seen[famStagingPDUs] {
		g.stagingPDUs = max(g.stagingPDUs, sum(famStagingPDUs))
	}
	if seen[famStagingOldest] {
		// Synapse sets this gauge to time_msec() - received_ts, in
		// milliseconds whatever its help text says
		// (synapse/federation/federation_server.py).
		g.stagingOldestS = max(g.stagingOldestS, sum(famStagingOldest)/1000)
	}
	if seen[famPersistedPos] {
		g.persistedPos = max(g.persistedPos, sum(famPersistedPos))
	}
	if seen[famReactorLastSeen] {
		g.lastSeen = max(g.lastSeen, sum(famReactorLastSeen))
	}
	g.rss += sum(famRSS)
	g.fds += sum(famFDs)
	g.bgInFlight += sum(famBgInFlight)
	g.fedPDUs += sum(famFedPendingPDUs)
	g.fedEDUs += sum(famFedPendingEDUs)
	n := 0
	for f := famRespTime; f < famCount; f++ {
		if seen[f] {
			g.seen[f] = true
		}
		if f <= famReactorTick && seen[f] {
			n++
		}
	}
	return n
}

func (g *gauges) signals(sig map[string]float64) {
	set := func(f family, name string, v float64) {
		if g.seen[f] {
			sig[name] = v
		}
	}
	set(famStagingPDUs, SigStagingPDUs, g.stagingPDUs)
	set(famStagingOldest, SigStagingOldest, g.stagingOldestS)
	set(famRSS, SigRSS, g.rss)
	set(famFDs, SigFDs, g.fds)
	set(famBgInFlight, SigBgInFlight, g.bgInFlight)
	set(famFedPendingPDUs, SigFedQueuePDUs, g.fedPDUs)
	set(famFedPendingEDUs, SigFedQueueEDUs, g.fedEDUs)
	set(famReactorLastSeen, SigReactorLastSeen, g.lastSeen)
	if g.seen[famPersistedPos] && len(g.positions) > 0 {
		worst := 0.0
		for name, pos := range g.positions {
			lag := max(0, g.persistedPos-pos)
			sig[SigProcessingLagEvents+":"+name] = lag
			worst = max(worst, lag)
		}
		sig[SigProcessingLagEvents] = worst
	}
	if e := g.extrem; e != nil && len(e.buckets) > 0 {
		h := histAgg{buckets: append([]bucket(nil), e.buckets...), n: 1}
		if v, ok := h.quantile(0.99, false); ok {
			sig[SigForwardExtremP99] = v
		}
		for _, b := range e.buckets {
			if b.le == 10 && e.hasCnt {
				sig[SigForwardExtremOver10] = max(0, e.count-b.v)
			}
		}
	}
}

type procRates struct {
	req, cpu         float64
	reqSeen, cpuSeen bool
}

// add sums the increases of one process over its window dt.
func (a *deployAcc) add(prev, cur *Snapshot, dt float64) (pr procRates) {
	var (
		resp, resp5, r429, recv, hist, txnN, events, edus, presence float64
		cpu, cpuParts, fedResp, rl, pushFailed                      float64
		cpuSeen, cpuPartsSeen, respSeen                             bool
	)
	resets := &a.resets
	for _, s := range cur.order {
		p := prev.series[s.key]
		val := func() float64 {
			if p == nil {
				return increase(0, s.value, false, resets)
			}
			return increase(p.value, s.value, true, resets)
		}
		switch s.fam {
		case famRespTime:
			var h histAgg
			addHist(&h, s, p, resets)
			a.seenHist = true
			a.hist += h.count
			hist += h.count
			if is5xx(s.code) {
				a.hist5 += h.count
			}
			sv := a.servlets[s.servlet]
			if sv == nil {
				continue
			}
			sv.n++
			sv.count += h.count
			sv.rate += h.count / dt
			if is5xx(s.code) {
				sv.e5 += h.count
			}
			if !is2xx(s.code) {
				continue
			}
			sv.ok.merge(&h)
			if isSyncTag(s.tag) {
				if sv.tags == nil {
					sv.tags = map[string]*histAgg{}
				}
				t := sv.tags[s.tag]
				if t == nil {
					t = &histAgg{}
					sv.tags[s.tag] = t
				}
				t.merge(&h)
			}
		case famResponses:
			v := val()
			resp += v
			respSeen = true
			if is5xx(s.code) {
				resp5 += v
			}
			if s.code == "429" {
				r429 += v
			}
		case famReqReceived:
			recv += val()
			a.seenRecv = true
		case famTxnCount:
			txnN += val()
			a.seenTxn = true
		case famTxnSum:
			a.txnS += val()
		case famSchedTime:
			addHist(&a.sched, s, p, resets)
		case famReactorTick:
			addHist(&a.tick, s, p, resets)
		case famProcessingLag:
			addHist(&a.lagHist, s, p, resets)
		case famEventsPersisted:
			events += val()
			a.seenEvents = true
		case famEDUs:
			edus += val()
			a.seenEDUs = true
		case famPresence:
			presence += val()
			a.seenPresence = true
		case famCPU:
			cpu += val()
			cpuSeen = true
		case famCPUUser, famCPUSystem:
			cpuParts += val()
			cpuPartsSeen = true
		case famFedClientReq:
			a.fedReq += val()
			a.seenFedReq = true
		case famFedClientResp:
			v := val()
			fedResp += v
			a.fedResp += v
			a.seenFedResp = true
			if is5xx(s.code) {
				a.fedResp5 += v
			}
		case famRateLimitReject:
			rl += val()
			a.seenRL = true
		case famCacheLookups, famCacheHits:
			// Gauges in Synapse, but cumulative since the start.
			c := a.caches[s.name]
			if c == nil {
				c = &cacheAgg{}
				a.caches[s.name] = c
			}
			if s.fam == famCacheHits {
				c.hits += val()
			} else {
				c.lookups += val()
			}
		case famPushFailed:
			v := val()
			pushFailed += v
			a.pushFailed += v
			a.seenPush = true
		case famPushProcessed:
			a.pushOK += val()
			a.seenPush = true
		}
	}
	a.resp += resp
	a.resp5 += resp5
	a.respRate += resp / dt
	a.r429Rate += r429 / dt
	a.recvRate += recv / dt
	a.histRate += hist / dt
	a.txnN += txnN
	a.txnRate += txnN / dt
	a.eventsRate += events / dt
	a.edusRate += edus / dt
	a.presenceRate += presence / dt
	a.fedRate += fedResp / dt
	a.rlRate += rl / dt
	a.pushFailedRate += pushFailed / dt
	a.seenResp = a.seenResp || respSeen
	switch {
	case respSeen:
		pr.req, pr.reqSeen = resp/dt, true
	case hist > 0:
		pr.req, pr.reqSeen = hist/dt, true
	}
	switch {
	case cpuSeen:
		pr.cpu, pr.cpuSeen = cpu/dt, true
	case cpuPartsSeen:
		pr.cpu, pr.cpuSeen = cpuParts/dt, true
	}
	if pr.cpuSeen {
		a.cpuRate += pr.cpu
		a.seenCPU = true
	}
	return pr
}

// merge adds another aggregate's buckets, count and sum.
func (h *histAgg) merge(o *histAgg) {
	h.n++
	h.count += o.count
	h.sum += o.sum
	for _, b := range o.buckets {
		h.add(b.le, b.v)
	}
}

func is5xx(code string) bool { return len(code) == 3 && code[0] == '5' }
func is2xx(code string) bool { return len(code) == 3 && code[0] == '2' }

func isSyncTag(tag string) bool {
	for _, t := range SyncTags {
		if t == tag {
			return true
		}
	}
	return false
}

var quantiles = []struct {
	q    float64
	name string
}{{0.5, SigP50}, {0.95, SigP95}, {0.99, SigP99}}

func (a *deployAcc) signals(sig map[string]float64, o Options) {
	// Overall HTTP: synapse_http_server_responses_total carries every answer
	// with its code; without it, the response-time histogram.
	switch {
	case a.seenResp:
		sig[SigRequests] = a.respRate
		sig[SigResponsesInWindow] = a.resp
		sig[SigHTTP429] = a.r429Rate
		if a.resp > 0 {
			sig[Sig5xxRatio] = a.resp5 / a.resp
		}
	case a.seenHist:
		sig[SigRequests] = a.histRate
		sig[SigResponsesInWindow] = a.hist
		if a.hist > 0 {
			sig[Sig5xxRatio] = a.hist5 / a.hist
		}
	}
	if a.seenRecv {
		sig[SigRequestsReceived] = a.recvRate
	}
	for name, sv := range a.servlets {
		if sv.n == 0 {
			continue
		}
		sfx := ":" + name
		sig[SigRequests+sfx] = sv.rate
		sig[SigResponsesInWindow+sfx] = sv.count
		if sv.count > 0 {
			sig[Sig5xxRatio+sfx] = sv.e5 / sv.count
		}
		lp := o.longPoll(name)
		latency(sig, sfx, &sv.ok, lp)
		for tag, h := range sv.tags {
			sig[SigResponsesInWindow+sfx+":"+tag] = h.count
			latency(sig, sfx+":"+tag, h, lp && tag == longPollTag)
		}
	}
	if a.seenTxn {
		sig[SigDBTxnRate] = a.txnRate
		if a.txnN > 0 {
			sig[SigDBTxnMean] = a.txnS / a.txnN
		}
	}
	if a.sched.n > 0 {
		if a.sched.count > 0 {
			sig[SigDBScheduleMean] = a.sched.sum / a.sched.count
		}
		if v, ok := a.sched.quantile(0.95, false); ok {
			sig[SigDBScheduleP95] = v
		}
	}
	if a.tick.n > 0 {
		if a.tick.count > 0 {
			sig[SigReactorTickMean] = a.tick.sum / a.tick.count
		}
		if v, ok := a.tick.quantile(0.95, false); ok {
			sig[SigReactorTickP95] = v
		}
		if v, ok := a.tick.quantile(0.99, false); ok {
			sig[SigReactorTickP99] = v
		}
	}
	if a.lagHist.n > 0 {
		if v, ok := a.lagHist.quantile(0.95, false); ok {
			sig[SigProcessingLagP95] = v
		}
	}
	if a.seenEvents {
		sig[SigEventsPersisted] = a.eventsRate
	}
	if a.seenEDUs {
		sig[SigEDUs] = a.edusRate
	}
	if a.seenPresence {
		sig[SigPresence] = a.presenceRate
	}
	if a.seenCPU {
		sig[SigCPU] = a.cpuRate
	}
	if a.seenFedResp {
		sig[SigFedOutRate] = a.fedRate
		// Failures: 5xx answers, and attempts that got no answer at all
		// (requests_total counts every attempt, responses_total every answer:
		// synapse/http/matrixfederationclient.py).
		attempts, failed := a.fedResp, a.fedResp5
		if a.seenFedReq && a.fedReq > a.fedResp {
			attempts, failed = a.fedReq, a.fedResp5+(a.fedReq-a.fedResp)
		}
		sig[SigFedOutInWindow] = attempts
		if attempts > 0 {
			sig[SigFedOutFailRatio] = failed / attempts
		}
	}
	if a.seenRL {
		sig[SigRateLimitRejects] = a.rlRate
	}
	if a.seenPush {
		sig[SigPushFailures] = a.pushFailedRate
		n := a.pushFailed + a.pushOK
		sig[SigPushInWindow] = n
		if n > 0 {
			sig[SigPushFailRatio] = a.pushFailed / n
		}
	}
	if len(a.caches) > 0 {
		names := make([]string, 0, len(a.caches))
		var hits, lookups float64
		for n, c := range a.caches {
			names = append(names, n)
			hits += c.hits
			lookups += c.lookups
		}
		if lookups > 0 {
			sig[SigCacheHitRatio] = hits / lookups
		}
		sort.Slice(names, func(i, j int) bool {
			ci, cj := a.caches[names[i]], a.caches[names[j]]
			if ci.lookups != cj.lookups {
				return ci.lookups > cj.lookups
			}
			return names[i] < names[j]
		})
		for _, n := range names[:min(len(names), o.topCaches())] {
			if c := a.caches[n]; c.lookups > 0 && !strings.ContainsAny(n, ": ") {
				sig[SigCacheHitRatio+":"+n] = c.hits / c.lookups
			}
		}
	}
}

// latency sets the quantile (and mean or overflow) signals of a 2xx
// histogram; long-poll requests are judged on the finite buckets.
func latency(sig map[string]float64, sfx string, h *histAgg, longPoll bool) {
	if h.n == 0 {
		return
	}
	for _, q := range quantiles {
		if v, ok := h.quantile(q.q, longPoll); ok {
			sig[q.name+sfx] = v
		}
	}
	if longPoll {
		b := h.buckets
		sortBuckets(b)
		if n := len(b); n >= 2 && isInf(b[n-1].le) && b[n-1].v > 0 {
			sig[SigLongPollOverflow+sfx] = (b[n-1].v - b[n-2].v) / b[n-1].v
		}
	} else if h.count > 0 {
		sig[SigMean+sfx] = h.sum / h.count
	}
}
