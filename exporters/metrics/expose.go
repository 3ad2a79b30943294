package metrics

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Handler serves /metrics: the registry's families and the per-tenant ones
// (tenants.go), merged by name, in the Prometheus text format or, when the
// scraper asks for it, OpenMetrics 1.0; gzipped when the scraper accepts
// it. The per-tenant series are written as they are read, so a scrape of a
// million series holds no more than a write buffer of them.
//
// It offers no protobuf: that format holds a whole family in one message,
// and Prometheus asks for it only to scrape native histograms, which
// mxprobe does not have; a scraper that asks for it alone gets text, as
// content negotiation allows.
func (m *Metrics) Handler(logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		format := expfmt.NegotiateAccept(r.Header, expfmt.FmtOpenMetrics_1_0_0, expfmt.FmtOpenMetrics_0_0_1, expfmt.FmtText)
		mfs, err := m.Registry.Gather()
		if err != nil {
			// As promhttp's HTTPErrorOnError: a partial answer would look
			// like series that vanished.
			logger.Error("gathering metrics", "err", err)
			http.Error(w, "An error has occurred while serving metrics:\n\n"+err.Error(), http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", string(format))
		var out io.Writer = w
		if acceptsGzip(r.Header.Get("Accept-Encoding")) {
			h.Set("Content-Encoding", "gzip")
			h.Add("Vary", "Accept-Encoding")
			// The fastest level: the page is large and mostly label text,
			// which compresses well at any level.
			gz, _ := m.gzips.Get().(*gzip.Writer)
			if gz == nil {
				gz, _ = gzip.NewWriterLevel(w, gzip.BestSpeed)
			} else {
				gz.Reset(w)
			}
			defer func() {
				_ = gz.Close()
				m.gzips.Put(gz)
			}()
			out = gz
		}
		bw := bufio.NewWriterSize(out, 64<<10)
		if err := m.write(bw, mfs, format); err != nil {
			logger.Debug("writing /metrics", "err", err) // the scraper went away
			return
		}
		_ = bw.Flush()
	})
}

// acceptsGzip reports whether an Accept-Encoding header allows gzip.
func acceptsGzip(h string) bool {
	for _, part := range strings.Split(h, ",") {
		enc, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.TrimSpace(enc) != "gzip" {
			continue
		}
		q := strings.ReplaceAll(params, " ", "")
		return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
	}
	return false
}

// write writes the registry's families mfs and the per-tenant ones in
// format, sorted by name.
func (m *Metrics) write(w *bufio.Writer, mfs []*dto.MetricFamily, format expfmt.Format) error {
	om := format.FormatType() == expfmt.TypeOpenMetrics
	enc := expfmt.NewEncoder(w, format)
	recs, names := m.tenants.records()
	fams := m.order
	i, j := 0, 0
	for i < len(mfs) || j < len(fams) {
		if j == len(fams) || (i < len(mfs) && mfs[i].GetName() < m.families[fams[j]].name) {
			if err := enc.Encode(mfs[i]); err != nil {
				return err
			}
			i++
			continue
		}
		if err := m.writeFamily(w, fams[j], recs, names, om); err != nil {
			return err
		}
		j++
	}
	if c, ok := enc.(expfmt.Closer); ok {
		return c.Close() // OpenMetrics' "# EOF"
	}
	return nil
}

// familyOrder is the per-tenant families' indexes sorted by name.
func familyOrder(fams *[famCount]tenantFamily) []int {
	out := make([]int, famCount)
	for i := range out {
		out[i] = i
	}
	slices.SortFunc(out, func(a, b int) int { return strings.Compare(fams[a].name, fams[b].name) })
	return out
}

// writeFamily writes one per-tenant family: its HELP and TYPE lines (when
// it has series) and one line per series, labels sorted by name.
func (m *Metrics) writeFamily(w *bufio.Writer, f int, recs []tenantRecord, names []string, om bool) error {
	fam := &m.families[f]
	head := false
	var num []byte
	var scratch []stepValue
	line := func(v float64, labels ...string) {
		if !head {
			head = true
			writeHead(w, fam, om)
		}
		w.WriteString(fam.name)
		w.WriteByte('{')
		for i := 0; i+1 < len(labels); i += 2 {
			if i > 0 {
				w.WriteByte(',')
			}
			w.WriteString(labels[i])
			w.WriteString(`="`)
			w.WriteString(labels[i+1])
			w.WriteByte('"')
		}
		w.WriteString("} ")
		num = appendValue(num[:0], v, om)
		w.Write(num)
		w.WriteByte('\n')
	}
	for _, s := range recs {
		switch f {
		case famDeliveryLast:
			if s.measured && s.hasDelivery {
				line(s.delivery, "probe", s.probe, "tenant", s.tenant)
			}
		case famFailedStep:
			if s.measured && s.success == 0 {
				line(1, "class", s.failedClass, "probe", s.probe, "step", s.failedStep, "tenant", s.tenant)
			}
		case famLastDuration:
			if s.measured {
				line(s.duration, "probe", s.probe, "tenant", s.tenant)
			}
		case famLastRun:
			if s.measured {
				line(s.started, "probe", s.probe, "tenant", s.tenant)
			}
		case famLastStep:
			scratch = s.sortedSteps(names, scratch)
			for _, st := range scratch {
				line(st.v, "probe", s.probe, "step", st.step, "tenant", s.tenant)
			}
		case famLastSuccess:
			if s.measured && s.lastSuccess > 0 {
				line(s.lastSuccess, "probe", s.probe, "tenant", s.tenant)
			}
		case famRuns:
			for r := range numResults {
				if s.runsSeen&(1<<r) != 0 {
					line(s.runs[r], "probe", s.probe, "result", string(runResult(r)), "tenant", s.tenant)
				}
			}
		case famSuccess:
			if s.measured {
				line(s.success, "probe", s.probe, "tenant", s.tenant)
			}
		case famRateLimited:
			for _, st := range s.rate {
				line(st.v, "probe", s.probe, "step", st.step, "tenant", s.tenant)
			}
		case famTokenRefresh:
			if s.hasRefresh {
				line(s.refresh, "probe", s.probe, "tenant", s.tenant)
			}
		}
	}
	_, err := w.Write(nil) // the writer's first error, if any
	return err
}

// sortedSteps are the record's step durations by step name, in name
// order, in buf's memory.
func (r tenantRecord) sortedSteps(names []string, buf []stepValue) []stepValue {
	out := buf[:0]
	for _, s := range r.steps {
		out = append(out, stepValue{names[s.i], s.v})
	}
	slices.SortFunc(out, func(a, b stepValue) int { return strings.Compare(a.step, b.step) })
	return out
}

// writeHead writes a family's HELP and TYPE lines. OpenMetrics names a
// counter family without its _total suffix and escapes double quotes in
// HELP too.
func writeHead(w *bufio.Writer, fam *tenantFamily, om bool) {
	name, typ := fam.name, "gauge"
	if fam.counter {
		typ = "counter"
		if om {
			name = strings.TrimSuffix(name, "_total")
		}
	}
	help := strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(fam.help)
	if om {
		help = strings.ReplaceAll(help, `"`, `\"`)
	}
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
}

// appendValue formats a sample value as the expfmt encoders do: the
// shortest exact form, with ".0" on whole numbers in OpenMetrics.
func appendValue(b []byte, v float64, om bool) []byte {
	switch {
	case math.IsNaN(v):
		return append(b, "NaN"...)
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	}
	start := len(b)
	b = strconv.AppendFloat(b, v, 'g', -1, 64)
	if om && !bytes.ContainsAny(b[start:], "e.") {
		b = append(b, '.', '0')
	}
	return b
}

// Gather implements prometheus.Gatherer: the registry's families and the
// per-tenant ones, as a scrape shows them (it reads back what the scrape
// writes, so both cannot differ), sorted by name and each family's series
// by label values. It builds an object per series: for tests and small
// uses; /metrics is Handler.
func (m *Metrics) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := m.Registry.Gather()
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	recs, names := m.tenants.records()
	for _, f := range m.order {
		if werr := m.writeFamily(bw, f, recs, names, false); werr != nil {
			return nil, werr
		}
	}
	if werr := bw.Flush(); werr != nil {
		return nil, werr
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	parsed, perr := p.TextToMetricFamilies(&buf)
	if perr != nil {
		return nil, fmt.Errorf("per-tenant series: %w", perr)
	}
	own := make([]*dto.MetricFamily, 0, len(parsed))
	for _, mf := range parsed {
		slices.SortStableFunc(mf.Metric, func(a, b *dto.Metric) int { return compareLabels(a.Label, b.Label) })
		own = append(own, mf)
	}
	out := append(mfs, own...)
	slices.SortStableFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out, err
}

// compareLabels orders two series of one family by their label values
// (labels sorted by name), as the registry sorts series.
func compareLabels(a, b []*dto.LabelPair) int {
	for i := range min(len(a), len(b)) {
		if c := strings.Compare(a[i].GetValue(), b[i].GetValue()); c != 0 {
			return c
		}
	}
	return len(a) - len(b)
}
