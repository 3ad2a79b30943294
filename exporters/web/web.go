// Package web serves mxprobe over HTTP: /metrics, the Prometheus-style
// lifecycle endpoints (/-/healthy, /-/ready, /-/reload), and whatever
// handlers the API, /probe and the status page add to its mux. TLS and basic
// auth come from the exporter-toolkit web config.
package web

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"
)

// Options configure the server.
type Options struct {
	Registry *prometheus.Registry
	// Reload re-reads the configuration; its error is shown to the caller.
	Reload func() error
	// Ready reports whether the daemon has a loaded config and a running schedule.
	Ready  func() bool
	Logger *slog.Logger
}

// Server is the HTTP front of the daemon.
type Server struct {
	Mux  *http.ServeMux
	opts Options

	mu         sync.RWMutex
	alerts     Alerts
	features   Features
	sessionKey []byte
}

// New builds the server and its lifecycle routes.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{Mux: http.NewServeMux(), opts: opts}
	s.Mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{
		Registry:          opts.Registry,
		EnableOpenMetrics: true,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelError),
	}))
	s.Mux.HandleFunc("GET /-/healthy", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("Healthy.\n"))
	})
	s.Mux.HandleFunc("GET /-/ready", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if opts.Ready != nil && !opts.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("Not ready.\n"))
			return
		}
		_, _ = w.Write([]byte("Ready.\n"))
	})
	reload := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if opts.Reload == nil {
			http.Error(w, "reload is not available", http.StatusNotImplemented)
			return
		}
		if err := opts.Reload(); err != nil {
			http.Error(w, "reload failed, the previous configuration stays in force:\n"+err.Error(), http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("Reloaded.\n"))
	}
	s.Mux.HandleFunc("POST /-/reload", reload)
	s.Mux.HandleFunc("PUT /-/reload", reload)
	return s
}

// Handler returns the server's root handler.
func (s *Server) Handler() http.Handler { return s.Mux }

// Serve listens on the flag-configured addresses (with the web config's TLS
// and basic auth) until ctx ends, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, flags *web.FlagConfig) error {
	srv := &http.Server{
		Handler:           s.Mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	errc := make(chan error, 1)
	go func() { errc <- web.ListenAndServe(srv, flags, s.opts.Logger) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := srv.Shutdown(sctx)
		<-errc
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}
