package synapsereplay

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
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

// WorkerServer serves one process's pages: page 0, then page 1, then
// alternately (a demo that runs for long sees counter resets, as after
// restarts).
type WorkerServer struct {
	Spec WorkerSpec
	URL  string

	srv   *http.Server
	pages [2][]byte
	mu    sync.Mutex
	n     int
	done  chan struct{}
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
		for i := range s.pages {
			b, err := WorkerPage(w, i)
			if err != nil {
				CloseWorkers(out)
				return nil, fmt.Errorf("synapsereplay: %s: %w", w.Name, err)
			}
			s.pages[i] = b
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
			b := s.pages[s.n%2]
			s.n++
			s.mu.Unlock()
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
