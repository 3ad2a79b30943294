package synapse

import (
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

	// Counts in the window behind the ratios (a ratio is judged only from
	// Options.MinRequests on).
	SigResponsesInWindow = "http_responses_in_window"
	SigHTTP429           = "http_429_per_second"

	SigProcessingLagEvents = "event_processing_lag_events"
	SigProcessingLagP95    = "event_processing_lag_p95_seconds"
	SigFedQueuePDUs        = "federation_send_queue_pdus"
	SigFedQueueEDUs        = "federation_send_queue_edus"
	SigFedOutRate          = "federation_outgoing_requests_per_second"
	SigFedOutFailRatio     = "federation_outgoing_failure_ratio"
	SigFedOutInWindow      = "federation_outgoing_requests_in_window"
	SigRateLimitRejects    = "federation_rate_limit_rejects_per_second"
	SigCacheHitRatio       = "cache_hit_ratio"
	SigReactorLastSeen     = "reactor_last_seen_seconds"
	SigReactorTickP99      = "reactor_tick_p99_seconds"
	SigBgInFlight          = "background_processes_in_flight"
	SigPushFailures        = "push_failures_per_second"
	SigPushFailRatio       = "push_failure_ratio"
	SigPushInWindow        = "push_attempts_in_window"
	SigForwardExtremP99    = "forward_extremities_p99"
	SigForwardExtremOver10 = "forward_extremities_rooms_over_10"
	SigProcesses           = "processes"
	SigProcessesUp         = "processes_up"
	SigRestartedProcesses  = "restarted_processes"

	// Per process ("<signal>:<worker>"); process_info is
	// "process_info:<worker>:<kind>" = 1.
	SigProcInfo     = "process_info"
	SigProcUp       = "process_up"
	SigProcRestart  = "process_restarted"
	SigProcScrape   = "process_scrape_duration_seconds"
	SigProcRequests = "process_requests_per_second"
	SigProcCPU      = "process_cpu_per_second"
	SigProcWindow   = "process_window_seconds"
)

// SyncTags are the tag values Synapse gives SyncRestServlet's requests
// (synapse/rest/client/sync.py): only incremental syncs wait out the
// long-poll timeout; initial and full-state syncs answer as soon as they are
// computed, so their latency is a real signal.
var SyncTags = []string{"incremental_sync", "initial_sync", "full_state_sync"}

// longPollTag is the one sync tag that long-polls.
const longPollTag = "incremental_sync"

// DefaultServlets always get per-servlet signals.
var DefaultServlets = []string{
	"RoomSendEventRestServlet", "SyncRestServlet", "SlidingSyncRestServlet", "RoomCreateRestServlet", "RoomMembershipRestServlet",
}

// DefaultLongPollServlets are judged apart: their requests wait up to 30 s
// by design and land in the +Inf bucket. SlidingSyncRestServlet (MSC4186,
// Element X) waits out its timeout like SyncRestServlet
// (synapse/rest/client/sync.py).
var DefaultLongPollServlets = []string{"SyncRestServlet", "SlidingSyncRestServlet", "EventStreamRestServlet"}

// DefaultMinRequests is how many requests a ratio needs in the window before
// it can warn or fail.
const DefaultMinRequests = 20

// DefaultTopCaches is how many caches (the most looked-up) get a hit ratio.
const DefaultTopCaches = 5

// Options select what Derive reports.
type Options struct {
	// Servlets get per-servlet signals (DefaultServlets when nil).
	Servlets []string
	// LongPoll servlets get quantiles over finite buckets only.
	LongPoll []string
	// MinRequests: a ratio over fewer requests is not judged (0: DefaultMinRequests).
	MinRequests int
	// TopCaches: hit ratios of this many caches (0: DefaultTopCaches).
	TopCaches int
}

func (o Options) minRequests() float64 {
	if o.MinRequests <= 0 {
		return DefaultMinRequests
	}
	return float64(o.MinRequests)
}

func (o Options) topCaches() int {
	if o.TopCaches <= 0 {
		return DefaultTopCaches
	}
	return o.TopCaches
}

// longPollPart tells whether a signal part ("<servlet>" or
// "<servlet>:<tag>") names long-polling requests.
func (o Options) longPollPart(part string) bool {
	servlet, tag, hasTag := strings.Cut(part, ":")
	if !o.longPoll(servlet) {
		return false
	}
	return !hasTag || tag == longPollTag
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
