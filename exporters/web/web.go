// Package web serves mxprobe over HTTP: /metrics, the Prometheus-style
// lifecycle endpoints (/-/healthy, /-/ready, /-/reload), and whatever
// handlers the API, /probe and the status page add to its mux. TLS and basic
// auth come from the exporter-toolkit web config.
package web

import (
	"context"
	"errors"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/mdlayher/vsock"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"
)

// Options configure the server.
type Options struct {
	// Registry takes the server's own metrics; Metrics serves /metrics
	// (default: Registry's series through promhttp).
	Registry *prometheus.Registry
	Metrics  http.Handler
	// Reload re-reads the configuration; its error goes to the log, the
	// caller only learns that it failed.
	Reload func() error
	// EnableLifecycle serves POST/PUT /-/reload (off: 404). With an API
	// token configured, it needs the token.
	EnableLifecycle bool
	// ReadTimeout bounds reading a whole request, body included, and
	// ReadHeaderTimeout its headers (defaults DefaultReadTimeout,
	// DefaultReadHeaderTimeout).
	ReadTimeout, ReadHeaderTimeout time.Duration
	// MaxConnections caps open connections per listener (default
	// DefaultMaxConnections); at the cap the one that waited on its client
	// the longest is closed.
	MaxConnections int
	// WriteStall bounds each write of an answer (default DefaultWriteStall).
	WriteStall time.Duration
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
	enabled    bool
	sessionKey []byte

	sessions sessionStore
	throttle throttle
	floorMu  sync.Mutex
	floors   map[string]*floorRun
	// limiters are the connection limiters of the listeners being served.
	limiters []*connLimiter
}

// New builds the server and its lifecycle routes.
func New(opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = DefaultReadTimeout
	}
	if opts.ReadHeaderTimeout <= 0 {
		opts.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = DefaultMaxConnections
	}
	if opts.WriteStall <= 0 {
		opts.WriteStall = DefaultWriteStall
	}
	s := &Server{Mux: http.NewServeMux(), opts: opts}
	metricsHandler := opts.Metrics
	if metricsHandler == nil {
		metricsHandler = promhttp.HandlerFor(opts.Registry, promhttp.HandlerOpts{
			Registry:          opts.Registry,
			EnableOpenMetrics: true,
			ErrorLog:          log.New(levelWriter{opts.Logger}, "", 0),
		})
	}
	s.Mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		if !s.allow(w, r, s.settings(), accessMetrics) {
			return
		}
		metricsHandler.ServeHTTP(w, r)
	})
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
	if !opts.EnableLifecycle {
		return s // /-/reload is not served: 404, as in Prometheus without --web.enable-lifecycle
	}
	reload := func(w http.ResponseWriter, r *http.Request) {
		if !s.allow(w, r, s.settings(), accessWrite) {
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if opts.Reload == nil {
			http.Error(w, "reload is not available", http.StatusNotImplemented)
			return
		}
		if err := opts.Reload(); err != nil {
			// The details (file path, YAML errors) are in the log only.
			http.Error(w, "reload failed, see the log", http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte("Reloaded.\n"))
	}
	s.Mux.HandleFunc("POST /-/reload", reload)
	s.Mux.HandleFunc("PUT /-/reload", reload)
	return s
}

// Handler returns the server's root handler: the mux behind a cross-origin
// check (a POST, PUT or DELETE a browser sends from another origin is
// refused with 403; clients that are not browsers are not affected).
func (s *Server) Handler() http.Handler {
	return http.NewCrossOriginProtection().Handler(s.Mux)
}

// Serve listens on the flag-configured addresses (with the web config's TLS
// and basic auth) until ctx ends, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, flags *web.FlagConfig) error {
	srv := &http.Server{
		Handler:           trackBusy(s.Handler(), s.opts.WriteStall),
		ReadTimeout:       s.opts.ReadTimeout,
		ReadHeaderTimeout: s.opts.ReadHeaderTimeout,
		IdleTimeout:       2 * time.Minute,
		ConnState:         connState,
		ConnContext:       connContext,
		ErrorLog:          log.New(levelWriter{s.opts.Logger}, "", 0),
	}
	listeners, err := s.listen(flags)
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { errc <- web.ServeMultiple(listeners, srv, flags, s.opts.Logger) }()
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

// listen opens the flag-configured listeners as exporter-toolkit's
// ListenAndServe would (TCP addresses, vsock://, systemd sockets), each
// behind a connection limiter.
func (s *Server) listen(flags *web.FlagConfig) ([]net.Listener, error) {
	var raw []net.Listener
	switch {
	case flags.WebSystemdSocket != nil && *flags.WebSystemdSocket:
		ls, err := activation.Listeners()
		if err != nil {
			return nil, err
		}
		if len(ls) < 1 {
			return nil, errors.New("no socket activation file descriptors found")
		}
		raw = ls
	default:
		if flags.WebListenAddresses == nil || len(*flags.WebListenAddresses) == 0 {
			return nil, errors.New("no --web.listen-address given")
		}
		for _, addr := range *flags.WebListenAddresses {
			var l net.Listener
			var err error
			if strings.HasPrefix(addr, "vsock://") {
				l, err = listenVsock(addr)
			} else {
				l, err = net.Listen("tcp", addr)
			}
			if err != nil {
				for _, o := range raw {
					_ = o.Close()
				}
				return nil, err
			}
			raw = append(raw, l)
		}
	}
	out := make([]net.Listener, len(raw))
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, l := range raw {
		cl := newConnLimiter(l, s.opts.MaxConnections)
		s.limiters = append(s.limiters, cl)
		out[i] = cl
	}
	return out, nil
}

func listenVsock(address string) (net.Listener, error) {
	u, err := url.Parse(address)
	if err != nil {
		return nil, err
	}
	_, portStr, err := net.SplitHostPort(u.Host)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 32)
	if err != nil {
		return nil, err
	}
	return vsock.Listen(uint32(port), nil)
}
