package synapse

import "math"

// Bounds on the names a page may bring in per scrape, whatever it lists
// (Synapse has about 200 caches and a handful of event processing loops):
// caches beyond MaxCaches and loops beyond MaxLoops, in page order, are
// left out. Servlets and sync tags are bounded already: only configured
// servlets and known tags are kept.
const (
	MaxCaches = 1024
	MaxLoops  = 64
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
	pa := &procAcc{}
	for _, p := range ps {
		pa.add(p, a, g, sig)
	}
	pa.pageSignals(sig, len(ps))
	// Gauges: from the first scrape on.
	g.federationSignals(sig)
	g.processSignals(sig)
	g.reactorSignals(sig)
	g.eventSignals(sig)
	g.extremitySignals(sig)
	if !pa.anyWindow {
		return d
	}
	d.Baseline = false
	sig[SigWindow] = pa.window
	// Counters and histograms: over each process's window.
	a.httpSignals(sig)
	a.servletSignals(sig, o)
	a.databaseSignals(sig)
	a.reactorSignals(sig)
	a.eventSignals(sig)
	a.presenceSignals(sig)
	a.processSignals(sig)
	a.federationSignals(sig)
	a.pushSignals(sig)
	a.cacheSignals(sig, o)
	pa.restartSignals(sig, a.resets)
	d.Resets = a.resets
	return d
}

// procAcc counts a deployment's processes and pages.
type procAcc struct {
	bytes, samples  int
	up, restarts    int
	version         string
	window          float64
	anyWindow       bool
	synapseFamilies int
}

// add reads one process: its page and gauges, and its counters over its
// window; it sets the process's own signals ("<signal>:<worker>").
func (pa *procAcc) add(p Process, a *deployAcc, g *gauges, sig map[string]float64) {
	w := p.Worker
	if w != "" {
		sig[SigProcInfo+":"+w+":"+p.Kind] = 1
		sig[SigProcUp+":"+w] = 0
	}
	if p.Cur == nil {
		return
	}
	pa.up++
	if w != "" {
		sig[SigProcUp+":"+w] = 1
	}
	pa.bytes += p.Cur.Bytes
	pa.samples += p.Cur.Samples
	if pa.version == "" {
		pa.version = p.Cur.Version
	}
	n := g.add(p.Cur)
	pa.synapseFamilies = max(pa.synapseFamilies, n)
	if p.Prev == nil {
		return
	}
	dt := p.Cur.Time.Sub(p.Prev.Time).Seconds()
	if dt <= 0 {
		return
	}
	pa.anyWindow = true
	pa.window = max(pa.window, dt)
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
		pa.restarts++
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
			if v, ok := g.positions[s.name]; (!ok && len(g.positions) < MaxLoops) || (ok && s.value > v) {
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
				if len(a.caches) >= MaxCaches {
					continue // bounded whatever the page lists
				}
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
