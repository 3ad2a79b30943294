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
