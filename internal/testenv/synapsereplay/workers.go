package synapsereplay

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// A worker deployment built from the reference pages. Synapse's workers
// each serve their own metrics listener (docs/metrics-howto.md, jobs
// master, generic_worker, ...); a worker exposes the families of the code it
// runs. The pages here are the reference pages cut by family (every family
// block, HELP and TYPE lines included, is copied verbatim, so each family
// and label set stays Synapse's):
//
//   - every process: process_*, python_*, build info, caches, database
//     transactions and scheduling, background processes, and the
//     database-wide federation staging gauges (the same value on every
//     process: synapse/federation/federation_server.py reads them from the
//     database);
//   - main: the HTTP server families, presence, received EDUs, pushers, rate
//     limiter, forward extremities, event processing loops;
//   - two generic workers with the HTTP server families: one degrades, the
//     other restarts between the two scrapes (restarted_t60);
//   - an event persister: persisted events and the persisted position;
//   - a federation sender: its transmission queue, the outgoing federation
//     client, and its event processing loop.

// WorkerSpec describes one process of the fixture deployment.
type WorkerSpec struct {
	Name, Kind string
	// From and To are the reference pages of the two scrapes.
	From, To string
	// Families are the family-name prefixes the process exposes (besides
	// the common ones).
	Families []string
	// Delay is how long the server takes to answer (Synapse renders a big
	// page in tens of milliseconds); benchmarks set it.
	Delay time.Duration
}

// commonFamilies are exposed by every process.
var commonFamilies = []string{
	"process_", "python_", "synapse_build_info", "synapse_util_caches_", "synapse_storage_transaction_",
	"synapse_storage_schedule_time", "synapse_background_process_",
}

// databaseWide families hold the same value on every process: at each
// scrape they are copied from DatabasePage.
var databaseWide = []string{
	"synapse_federation_server_number_inbound_pdu_in_staging",
	"synapse_federation_server_oldest_inbound_pdu_in_staging",
}

// DatabasePage is the page the database-wide families come from at the
// second scrape (the first is healthy_t0).
const DatabasePage = "degraded_t60"

// Workers is the fixture deployment: main, two generic workers (gw2
// restarts between the scrapes), an event persister and a federation
// sender.
var Workers = []WorkerSpec{
	{Name: "main", Kind: "main", From: "healthy_t0", To: "healthy_t60", Families: []string{
		"synapse_http_server_", "synapse_handler_presence_", "synapse_federation_server_received_edus",
		"synapse_http_httppusher_", "synapse_rate_limit_", "synapse_forward_extremities", "synapse_event_processing_"}},
	{Name: "generic1", Kind: "generic_worker", From: "healthy_t0", To: "degraded_t60", Families: []string{"synapse_http_server_"}},
	{Name: "generic2", Kind: "generic_worker", From: "healthy_t0", To: "restarted_t60", Families: []string{"synapse_http_server_"}},
	{Name: "persister1", Kind: "event_persister", From: "healthy_t0", To: "degraded_t60", Families: []string{
		"synapse_storage_events_persisted_", "synapse_event_persisted_position"}},
	{Name: "fedsender1", Kind: "federation_sender", From: "healthy_t0", To: "degraded_t60", Families: []string{
		"synapse_federation_transaction_queue_", "synapse_http_matrixfederationclient_", "synapse_event_processing_"}},
}

// blocks splits a page into family blocks keyed by the name of its HELP
// (or TYPE) line, in page order.
func blocks(page []byte) (names []string, m map[string][]byte) {
	m = map[string][]byte{}
	cur := ""
	for _, line := range bytes.SplitAfter(page, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		if f := strings.Fields(string(line)); len(f) >= 3 && f[0] == "#" && (f[1] == "HELP" || f[1] == "TYPE") {
			if f[2] != cur {
				cur = f[2]
				if _, ok := m[cur]; !ok {
					names = append(names, cur)
				}
			}
		}
		m[cur] = append(m[cur], line...)
	}
	return names, m
}

func hasPrefix(name string, ps []string) bool {
	for _, p := range ps {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// WorkerPage builds the page of a process at scrape 0 or 1.
func WorkerPage(w WorkerSpec, scrape int) ([]byte, error) {
	src, db := w.From, "healthy_t0"
	if scrape > 0 {
		src, db = w.To, DatabasePage
	}
	page, err := Page(src)
	if err != nil {
		return nil, err
	}
	dbPage, err := Page(db)
	if err != nil {
		return nil, err
	}
	names, m := blocks(page)
	_, dbm := blocks(dbPage)
	var out bytes.Buffer
	for _, n := range names {
		switch {
		case hasPrefix(n, databaseWide):
			out.Write(dbm[n])
		case hasPrefix(n, commonFamilies), hasPrefix(n, w.Families):
			out.Write(m[n])
		}
	}
	return out.Bytes(), nil
}

// WorkerServer serves one process's pages: page 0, page 1, then page 1
// with every cumulative sample advanced by the increase between the two
// pages per scrape (so a replay that runs for long keeps counting up as a
// process does, with no spurious resets; the restarting worker restarts
// once, then counts up at the healthy pace). Gauges keep page 1's values.
type WorkerServer struct {
	Spec WorkerSpec
	URL  string

	srv           *http.Server
	first, second []byte
	plan          []planLine
	mu            sync.Mutex
	n             int
	done          chan struct{}
}

// planLine is one line of the pages after the first: a sample advanced by
// delta per scrape from base, or a line served as it is.
type planLine struct {
	raw         string
	prefix      string
	base, delta float64
}

// render is page k ≥ 1.
func (s *WorkerServer) render(k int) []byte {
	var b bytes.Buffer
	b.Grow(len(s.first) + len(s.first)/8)
	for _, l := range s.plan {
		if l.delta == 0 {
			b.WriteString(l.raw)
			continue
		}
		b.WriteString(l.prefix)
		b.WriteByte(' ')
		b.WriteString(strconv.FormatFloat(l.base+float64(k-1)*l.delta, 'g', -1, 64))
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// cumulative tells whether samples of a family of this type and name only
// grow in a running process: counters and histograms, and Synapse's gauges
// that hold cumulative values (process_cpu_*_seconds_total, the cache
// lookup and hit counts).
func cumulative(typ, name string) bool {
	switch typ {
	case "counter", "histogram", "summary":
		return true
	case "gauge":
		return strings.HasSuffix(name, "_seconds_total") || name == "synapse_util_caches_cache" ||
			name == "synapse_util_caches_cache_hits" || name == "synapse_util_caches_cache_evicted_size"
	}
	return false
}

// sampleValues maps "name{labels}" to the value of every sample line.
func sampleValues(page []byte) map[string]float64 {
	m := map[string]float64{}
	for _, line := range strings.Split(string(page), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

// plan builds the pages after the first from page 1 (base) and the
// increase per scrape (from page a to page b).
func plan(base, a, b []byte) []planLine {
	va, vb := sampleValues(a), sampleValues(b)
	var out []planLine
	typ, fam := "", ""
	for _, line := range strings.SplitAfter(string(base), "\n") {
		if line == "" {
			continue
		}
		l := planLine{raw: line}
		if f := strings.Fields(line); len(f) >= 4 && f[0] == "#" && f[1] == "TYPE" {
			fam, typ = f[2], f[3]
		} else if line[0] != '#' && cumulative(typ, fam) {
			t := strings.TrimSuffix(line, "\n")
			if i := strings.LastIndexByte(t, ' '); i > 0 {
				v, err := strconv.ParseFloat(t[i+1:], 64)
				x := va[t[:i]] // a series new in b counts from zero
				y, okB := vb[t[:i]]
				if err == nil && okB && y > x {
					l.prefix, l.base, l.delta = t[:i], v, y-x
				}
			}
		}
		out = append(out, l)
	}
	return out
}

// Served is how many pages the server has answered.
func (s *WorkerServer) Served() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n
}

// StartWorkers starts one loopback server per process of specs (Workers
// when nil), each at /_synapse/metrics.
func StartWorkers(specs []WorkerSpec) ([]*WorkerServer, error) {
	if specs == nil {
		specs = Workers
	}
	var out []*WorkerServer
	for _, w := range specs {
		s := &WorkerServer{Spec: w, done: make(chan struct{})}
		if err := s.load(); err != nil {
			CloseWorkers(out)
			return nil, fmt.Errorf("synapsereplay: %s: %w", w.Name, err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			CloseWorkers(out)
			return nil, err
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/_synapse/metrics", func(rw http.ResponseWriter, r *http.Request) {
			if w.Delay > 0 {
				t := time.NewTimer(w.Delay)
				select {
				case <-t.C:
				case <-r.Context().Done():
					t.Stop()
					return
				}
			}
			s.mu.Lock()
			k := s.n
			s.n++
			s.mu.Unlock()
			b := s.first
			switch {
			case k == 1:
				b = s.second
			case k > 1:
				b = s.render(k)
			}
			rw.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
			_, _ = rw.Write(b)
		})
		s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		s.URL = "http://" + ln.Addr().String() + "/_synapse/metrics"
		go func() {
			defer close(s.done)
			_ = s.srv.Serve(ln)
		}()
		out = append(out, s)
	}
	return out, nil
}

// load builds the first page and the plan of the others. A process that
// restarts between its two pages keeps counting after the restart at the
// pace of the healthy pair.
func (s *WorkerServer) load() error {
	p0, err := WorkerPage(s.Spec, 0)
	if err != nil {
		return err
	}
	p1, err := WorkerPage(s.Spec, 1)
	if err != nil {
		return err
	}
	a, b := p0, p1
	if st0, st1 := sampleValues(p0)["process_start_time_seconds"], sampleValues(p1)["process_start_time_seconds"]; st0 != st1 {
		healthy := s.Spec
		healthy.To = "healthy_t60"
		if b, err = WorkerPage(healthy, 1); err != nil {
			return err
		}
	}
	s.first, s.second, s.plan = p0, p1, plan(p1, a, b)
	return nil
}

// CloseWorkers stops the servers.
func CloseWorkers(ss []*WorkerServer) {
	for _, s := range ss {
		_ = s.srv.Close()
		<-s.done
	}
}

// Job is the Prometheus job Synapse's docs/metrics-howto.md gives a process
// of this kind: master for the main process, the worker app otherwise (an
// event persister or federation sender is a generic_worker named in
// stream_writers or federation_sender_instances).
func Job(kind string) string {
	switch kind {
	case "main":
		return "master"
	case "event_persister", "federation_sender":
		return "generic_worker"
	}
	return kind
}
