package synapsereplay

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// An independent reading of the pages for tests: a naive line parser and
// PromQL's increase() / histogram_quantile() arithmetic, written apart from
// the probe's parser and derivation so that tests compare two
// implementations, not one with itself.

// Sample is one sample line.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
	key    string
}

var (
	sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)`)
	labelRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)
)

// ParseNaive reads every sample line of a text page.
func ParseNaive(page []byte) ([]Sample, error) {
	var out []Sample
	sc := bufio.NewScanner(bytes.NewReader(page))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleRE.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("cannot read %q", line)
		}
		v, err := strconv.ParseFloat(m[3], 64)
		if err != nil {
			return nil, fmt.Errorf("%q: %v", line, err)
		}
		s := Sample{Name: m[1], Labels: map[string]string{}, Value: v}
		var ks []string
		for _, l := range labelRE.FindAllStringSubmatch(m[2], -1) {
			s.Labels[l[1]] = l[2]
			ks = append(ks, l[1]+"="+l[2])
		}
		sort.Strings(ks)
		s.key = s.Name + "{" + strings.Join(ks, ",") + "}"
		out = append(out, s)
	}
	return out, sc.Err()
}

// Match selects samples by labels; nil matches all.
type Match func(labels map[string]string) bool

// Increase is the sum over the samples named name (and matched) of their
// increase from prev to cur: a sample that went down, or is new, counts
// from zero.
func Increase(prev, cur []Sample, name string, m Match) float64 {
	pv := map[string]float64{}
	for _, s := range prev {
		if s.Name == name {
			pv[s.key] = s.Value
		}
	}
	total := 0.0
	for _, s := range cur {
		if s.Name != name || (m != nil && !m(s.Labels)) {
			continue
		}
		p, ok := pv[s.key]
		if ok && s.Value >= p {
			total += s.Value - p
		} else {
			total += s.Value
		}
	}
	return total
}

// Values lists the values of the samples named name (and matched).
func Values(cur []Sample, name string, m Match) []float64 {
	var out []float64
	for _, s := range cur {
		if s.Name == name && (m == nil || m(s.Labels)) {
			out = append(out, s.Value)
		}
	}
	return out
}

// BucketIncreases sums, by bound, the increases of the buckets of histogram
// base (and matched, the le label aside).
func BucketIncreases(prev, cur []Sample, base string, m Match) map[float64]float64 {
	out := map[float64]float64{}
	les := map[string]bool{}
	for _, s := range cur {
		if s.Name == base+"_bucket" {
			les[s.Labels["le"]] = true
		}
	}
	for le := range les {
		b, _ := strconv.ParseFloat(le, 64)
		out[b] += Increase(prev, cur, base+"_bucket", func(l map[string]string) bool {
			return l["le"] == le && (m == nil || m(l))
		})
	}
	return out
}

// AddBuckets adds b into a.
func AddBuckets(a, b map[float64]float64) {
	for k, v := range b {
		a[k] += v
	}
}

// HistogramQuantile is PromQL's histogram_quantile over cumulative buckets;
// with finiteOnly the +Inf bucket is dropped first.
func HistogramQuantile(q float64, buckets map[float64]float64, finiteOnly bool) float64 {
	var les []float64
	for le := range buckets {
		if finiteOnly && math.IsInf(le, 1) {
			continue
		}
		les = append(les, le)
	}
	sort.Float64s(les)
	if len(les) == 0 {
		return math.NaN()
	}
	total := buckets[les[len(les)-1]]
	if total == 0 {
		return math.NaN()
	}
	rank := q * total
	prevLE, prevC := 0.0, 0.0
	for i, le := range les {
		c := buckets[le]
		if c >= rank {
			if math.IsInf(le, 1) {
				return les[i-1]
			}
			if c == prevC {
				return le
			}
			return prevLE + (le-prevLE)*(rank-prevC)/(c-prevC)
		}
		prevLE, prevC = le, c
	}
	return les[len(les)-1]
}

// Code5xx, Code2xx and Servlet are common matches.
func Code5xx(l map[string]string) bool { return strings.HasPrefix(l["code"], "5") }

// Code2xx matches 2xx answers.
func Code2xx(l map[string]string) bool { return strings.HasPrefix(l["code"], "2") }

// Servlet matches one servlet (and, with more matches, all of them).
func Servlet(name string, more ...Match) Match {
	return func(l map[string]string) bool {
		if l["servlet"] != name {
			return false
		}
		for _, m := range more {
			if !m(l) {
				return false
			}
		}
		return true
	}
}

// ExpectNewSignals computes, with the independent reader, the signals of
// Synapse's own dashboard rows (event processing lag, federation queues and
// failures, rate limiting, caches, reactor, background processes, pushes,
// forward extremities, staging age) for two scrapes of one process w
// seconds apart (no restart), with hit ratios of the top most looked-up
// caches. Keys are the probe's signal names.
func ExpectNewSignals(p0, p1 []Sample, w float64, top int) (map[string]float64, error) {
	var err error
	e := map[string]float64{}
	one := func(name string) float64 {
		v := Values(p1, name, nil)
		if len(v) != 1 {
			if err == nil {
				err = fmt.Errorf("%s: %d samples, want 1", name, len(v))
			}
			return math.NaN()
		}
		return v[0]
	}
	// Event processing lag: persisted position minus each loop's position.
	persisted := one("synapse_event_persisted_position")
	worst := 0.0
	for _, s := range p1 {
		if s.Name == "synapse_event_processing_positions" {
			lag := math.Max(0, persisted-s.Value)
			e["event_processing_lag_events"+":"+s.Labels["name"]] = lag
			worst = math.Max(worst, lag)
		}
	}
	e["event_processing_lag_events"] = worst
	e["event_processing_lag_p95_seconds"] = HistogramQuantile(0.95, BucketIncreases(p0, p1, "synapse_event_processing_lag_by_event", nil), false)
	e["federation_send_queue_pdus"] = one("synapse_federation_transaction_queue_pending_pdus")
	e["federation_send_queue_edus"] = one("synapse_federation_transaction_queue_pending_edus")
	resp := Increase(p0, p1, "synapse_http_matrixfederationclient_responses_total", nil)
	resp5 := Increase(p0, p1, "synapse_http_matrixfederationclient_responses_total", Code5xx)
	req := Increase(p0, p1, "synapse_http_matrixfederationclient_requests_total", nil)
	e["federation_outgoing_requests_per_second"] = resp / w
	attempts, failed := resp, resp5
	if req > resp {
		attempts, failed = req, resp5+req-resp
	}
	e["federation_outgoing_failure_ratio"] = failed / attempts
	e["federation_rate_limit_rejects_per_second"] = Increase(p0, p1, "synapse_rate_limit_reject_total", nil) / w
	e["http_429_per_second"] = Increase(p0, p1, "synapse_http_server_responses_total", func(l map[string]string) bool { return l["code"] == "429" }) / w
	// Caches: hits over lookups (synapse_util_caches_cache counts both).
	type cache struct {
		name          string
		lookups, hits float64
	}
	var cs []cache
	var allHits, allLookups float64
	for _, s := range p1 {
		if s.Name != "synapse_util_caches_cache" {
			continue
		}
		n := s.Labels["name"]
		byName := func(l map[string]string) bool { return l["name"] == n }
		c := cache{n, Increase(p0, p1, "synapse_util_caches_cache", byName), Increase(p0, p1, "synapse_util_caches_cache_hits", byName)}
		cs = append(cs, c)
		allHits += c.hits
		allLookups += c.lookups
	}
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].lookups != cs[j].lookups {
			return cs[i].lookups > cs[j].lookups
		}
		return cs[i].name < cs[j].name
	})
	for _, c := range cs[:min(top, len(cs))] {
		e["cache_hit_ratio"+":"+c.name] = c.hits / c.lookups
	}
	e["cache_hit_ratio"] = allHits / allLookups
	e["reactor_last_seen_seconds"] = one("python_twisted_reactor_last_seen")
	e["reactor_tick_p99_seconds"] = HistogramQuantile(0.99, BucketIncreases(p0, p1, "python_twisted_reactor_tick_time", nil), false)
	bg := 0.0
	for _, v := range Values(p1, "synapse_background_process_in_flight_count", nil) {
		bg += v
	}
	e["background_processes_in_flight"] = bg
	failedPush := Increase(p0, p1, "synapse_http_httppusher_http_pushes_failed_total", nil)
	okPush := Increase(p0, p1, "synapse_http_httppusher_http_pushes_processed_total", nil)
	e["push_failures_per_second"] = failedPush / w
	e["push_failure_ratio"] = failedPush / (failedPush + okPush)
	// Forward extremities: a gauge histogram, read as it stands.
	ext := map[float64]float64{}
	for _, s := range p1 {
		if s.Name == "synapse_forward_extremities_bucket" {
			le, perr := strconv.ParseFloat(s.Labels["le"], 64)
			if perr != nil {
				return nil, perr
			}
			ext[le] = s.Value
		}
	}
	e["forward_extremities_p99"] = HistogramQuantile(0.99, ext, false)
	e["forward_extremities_rooms_over_10"] = one("synapse_forward_extremities_gcount") - ext[10]
	e["federation_staging_oldest_seconds"] = one("synapse_federation_server_oldest_inbound_pdu_in_staging") / 1000
	return e, err
}
