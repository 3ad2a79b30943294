// Package synapsereplay serves the Synapse reference metrics pages (healthy,
// healthy 60 s later, degraded) in a cycle, one page per scrape, so the demo
// and tests can show the synapse_metrics probe's Synapse-specific signals
// without a Synapse. Used by tests and cmd/mxprobe-demo only.
package synapsereplay

import (
	"bytes"
	"compress/gzip"
	"embed"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

//go:embed pages/*.prom.gz
var pages embed.FS

// Sequence is the order the pages are served in.
var Sequence = []string{"healthy_t0", "healthy_t60", "degraded_t60"}

// Page returns a reference page by name.
func Page(name string) ([]byte, error) {
	b, err := pages.ReadFile("pages/" + name + ".prom.gz")
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}

// Server serves the pages in Sequence, one per request, cycling.
type Server struct {
	URL string

	srv   *http.Server
	ln    net.Listener
	pages [][]byte
	mu    sync.Mutex
	n     int
	done  chan struct{}
}

// Start listens on addr (for example 127.0.0.1:0) and serves /_synapse/metrics.
func Start(addr string) (*Server, error) {
	s := &Server{done: make(chan struct{})}
	for _, name := range Sequence {
		b, err := Page(name)
		if err != nil {
			return nil, fmt.Errorf("synapsereplay: %s: %w", name, err)
		}
		s.pages = append(s.pages, b)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/_synapse/metrics", s.serve)
	s.ln = ln
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	s.URL = "http://" + ln.Addr().String() + "/_synapse/metrics"
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln)
	}()
	return s, nil
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	b := s.pages[s.n%len(s.pages)]
	s.n++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write(b)
}

// Close stops the server.
func (s *Server) Close() {
	_ = s.srv.Close()
	<-s.done
}
