package synapse

import (
	"sort"
	"strings"
)

// The signals of a deployment, one function per family, in the order
// DeriveDeployment calls them: the pages and processes, the gauges (from the
// first scrape on), then the counters and histograms (over a window).

// pageSignals: the pages' size, the processes configured and up, the core
// Synapse families seen and the version.
func (pa *procAcc) pageSignals(sig map[string]float64, processes int) {
	sig[SigPageBytes] = float64(pa.bytes)
	sig[SigPageSamples] = float64(pa.samples)
	sig[SigProcesses] = float64(processes)
	sig[SigProcessesUp] = float64(pa.up)
	sig[SigSynapseFamiliesSeen] = float64(pa.synapseFamilies)
	if pa.version != "" {
		sig[SigBuildInfo+":"+pa.version] = 1
	}
}

// restartSignals: restarted processes and counter resets in the window.
func (pa *procAcc) restartSignals(sig map[string]float64, resets int) {
	sig[SigRestarted] = b2f(pa.restarts > 0)
	sig[SigRestartedProcesses] = float64(pa.restarts)
	sig[SigCounterResets] = float64(resets)
}

// set reports a gauge when some process had its family.
func (g *gauges) set(sig map[string]float64, f family, name string, v float64) {
	if g.seen[f] {
		sig[name] = v
	}
}

// federationSignals: the inbound staging area (database-wide) and the
// federation senders' queues.
func (g *gauges) federationSignals(sig map[string]float64) {
	g.set(sig, famStagingPDUs, SigStagingPDUs, g.stagingPDUs)
	g.set(sig, famStagingOldest, SigStagingOldest, g.stagingOldestS)
	g.set(sig, famFedPendingPDUs, SigFedQueuePDUs, g.fedPDUs)
	g.set(sig, famFedPendingEDUs, SigFedQueueEDUs, g.fedEDUs)
}

// processSignals: memory, file descriptors and background processes,
// summed over processes.
func (g *gauges) processSignals(sig map[string]float64) {
	g.set(sig, famRSS, SigRSS, g.rss)
	g.set(sig, famFDs, SigFDs, g.fds)
	g.set(sig, famBgInFlight, SigBgInFlight, g.bgInFlight)
}

// reactorSignals: the time since a reactor last ticked (worst process).
func (g *gauges) reactorSignals(sig map[string]float64) {
	g.set(sig, famReactorLastSeen, SigReactorLastSeen, g.lastSeen)
}

// eventSignals: how far each event processing loop is behind the persisted
// position, and the worst loop.
func (g *gauges) eventSignals(sig map[string]float64) {
	if g.seen[famPersistedPos] && len(g.positions) > 0 {
		worst := 0.0
		for name, pos := range g.positions {
			lag := max(0, g.persistedPos-pos)
			sig[SigProcessingLagEvents+":"+name] = lag
			worst = max(worst, lag)
		}
		sig[SigProcessingLagEvents] = worst
	}
}

// extremitySignals: forward extremities per room (a database-wide gauge
// histogram).
func (g *gauges) extremitySignals(sig map[string]float64) {
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

// httpSignals: the request rate, 5xx ratio and 429 rate over all servlets,
// and the requests received.
func (a *deployAcc) httpSignals(sig map[string]float64) {
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
}

// servletSignals: each selected servlet's rate, 5xx ratio and 2xx latency,
// and its latency by sync tag.
func (a *deployAcc) servletSignals(sig map[string]float64, o Options) {
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
}

var quantiles = []struct {
	q    float64
	name string
}{{0.5, SigP50}, {0.95, SigP95}, {0.99, SigP99}}

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

// databaseSignals: transactions and the wait for a database connection.
func (a *deployAcc) databaseSignals(sig map[string]float64) {
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
}

// reactorSignals: the Twisted reactor's tick time, all processes.
func (a *deployAcc) reactorSignals(sig map[string]float64) {
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
}

// eventSignals: the time events wait for their processing loops, and the
// events persisted.
func (a *deployAcc) eventSignals(sig map[string]float64) {
	if a.lagHist.n > 0 {
		if v, ok := a.lagHist.quantile(0.95, false); ok {
			sig[SigProcessingLagP95] = v
		}
	}
	if a.seenEvents {
		sig[SigEventsPersisted] = a.eventsRate
	}
}

// presenceSignals: presence updates.
func (a *deployAcc) presenceSignals(sig map[string]float64) {
	if a.seenPresence {
		sig[SigPresence] = a.presenceRate
	}
}

// processSignals: CPU used, all processes.
func (a *deployAcc) processSignals(sig map[string]float64) {
	if a.seenCPU {
		sig[SigCPU] = a.cpuRate
	}
}

// federationSignals: EDUs received, outgoing requests and their failures,
// and the federation rate limiter's rejects.
func (a *deployAcc) federationSignals(sig map[string]float64) {
	if a.seenEDUs {
		sig[SigEDUs] = a.edusRate
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
}

// pushSignals: HTTP pushes failed, their rate and ratio.
func (a *deployAcc) pushSignals(sig map[string]float64) {
	if a.seenPush {
		sig[SigPushFailures] = a.pushFailedRate
		n := a.pushFailed + a.pushOK
		sig[SigPushInWindow] = n
		if n > 0 {
			sig[SigPushFailRatio] = a.pushFailed / n
		}
	}
}

// cacheSignals: the hit ratio over every cache, and of the most looked-up
// caches.
func (a *deployAcc) cacheSignals(sig map[string]float64, o Options) {
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
