// Command standin is the homeserver stand-in (internal/testenv/fakehs) in a
// process of its own, for the scale tests and benchmarks that run mxprobe as
// a separate process: the figures measured on mxprobe are then mxprobe's
// alone, and the stand-in runs without the race detector of the test.
//
// It creates --users bot accounts (localpart bot%06d, password pw-bot%06d)
// and a peer account (peer / peer-pw), listens on --listeners loopback
// ports, one per mxprobe replica, and records every probe run it can
// attribute: a whoami (the login probe's last step) or a refused login, with
// the listener it came through. It also serves the Synapse reference pages
// at /_synapse/metrics on every listener.
//
// On start it prints one JSON line to stdout: {"urls": [...]} (one base URL
// per listener) and {"control": url}. The control listener serves:
//
//	GET /runs   the runs recorded since the previous call, one per line:
//	            "<listener>\t<localpart>\t<kind>\t<unix ms>", then forgets them
//	GET /stats  requests per endpoint, rooms left per user, own CPU and RSS
//
// It runs until SIGTERM or SIGINT.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/fakehs"
	"github.com/mxprobe/mxprobe/internal/testenv/synapsereplay"
)

func main() {
	users := flag.Int("users", 1000, "bot accounts bot000000.. with password pw-<localpart>")
	listeners := flag.Int("listeners", 1, "client-server API listeners (one per mxprobe replica)")
	latency := flag.Duration("latency", 0, "added to every client-server answer")
	flag.Parse()
	if err := run(*users, *listeners, *latency); err != nil {
		fmt.Fprintln(os.Stderr, "standin:", err)
		os.Exit(1)
	}
}

// recorder keeps the attributed runs until the control listener hands them out.
type recorder struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	runs int
}

func (r *recorder) add(listener int, uid, kind string) {
	local := strings.TrimPrefix(uid, "@")
	if i := strings.IndexByte(local, ':'); i >= 0 {
		local = local[:i]
	}
	r.mu.Lock()
	fmt.Fprintf(&r.buf, "%d\t%s\t%s\t%d\n", listener, local, kind, time.Now().UnixMilli())
	r.runs++
	r.mu.Unlock()
}

func (r *recorder) drain(w io.Writer) {
	r.mu.Lock()
	b := bytes.Clone(r.buf.Bytes())
	r.buf.Reset()
	r.mu.Unlock()
	_, _ = w.Write(b)
}

// statusWriter remembers the status of an answer.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func run(users, listeners int, latency time.Duration) error {
	hs := fakehs.New("localhost")
	defer hs.Close()
	hs.Latency = latency
	hs.AddUser("peer", "peer-pw", "Peer")
	for i := range users {
		u := fmt.Sprintf("bot%06d", i)
		hs.AddUser(u, "pw-"+u, "Bot "+u)
	}
	syn, err := newSynapsePages()
	if err != nil {
		return err
	}
	rec := &recorder{}
	api := hs.Handler()
	var servers []*http.Server
	var urls []string
	for i := range listeners {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		idx := i
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p := r.URL.Path
			switch {
			case p == "/_synapse/metrics":
				syn.serve(w)
				return
			case strings.HasSuffix(p, "/account/whoami"):
				sw := &statusWriter{ResponseWriter: w, status: 200}
				api.ServeHTTP(sw, r)
				if sw.status == 200 {
					rec.add(idx, hs.UserOf(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")), "whoami")
				}
				return
			case strings.HasSuffix(p, "/login") && r.Method == http.MethodPost:
				body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
				r.Body = io.NopCloser(bytes.NewReader(body))
				sw := &statusWriter{ResponseWriter: w, status: 200}
				api.ServeHTTP(sw, r)
				if sw.status == http.StatusForbidden {
					rec.add(idx, loginUser(body), "login_refused")
				}
				return
			}
			api.ServeHTTP(w, r)
		})
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		servers = append(servers, srv)
		urls = append(urls, "http://"+ln.Addr().String())
	}
	cln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/runs", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		rec.drain(w)
	})
	mux.HandleFunc("/stats", func(w http.ResponseWriter, _ *http.Request) {
		left := 0
		if n := len(hs.JoinedRooms("peer")); n > 0 {
			left = n
		}
		rec.mu.Lock()
		runs := rec.runs
		rec.mu.Unlock()
		cpu, rss := selfUsage()
		b, _ := json.Marshal(map[string]any{"requests": hs.Requests(), "peer_rooms": left, "runs": runs,
			"cpu_seconds": cpu, "rss_bytes": rss})
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	})
	csrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = csrv.Serve(cln) }()
	b, _ := json.Marshal(map[string]any{"urls": urls, "control": "http://" + cln.Addr().String()})
	fmt.Println(string(b))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	for _, s := range append(servers, csrv) {
		_ = s.Close()
	}
	return nil
}

// synapsePages serves the Synapse reference pages in turn (the healthy
// ones: a synapse_metrics probe then derives every signal without failing).
type synapsePages struct {
	mu    sync.Mutex
	n     int
	pages [][]byte
}

func newSynapsePages() (*synapsePages, error) {
	s := &synapsePages{}
	for _, name := range []string{"healthy_t0", "healthy_t60"} {
		b, err := synapsereplay.Page(name)
		if err != nil {
			return nil, err
		}
		s.pages = append(s.pages, b)
	}
	return s, nil
}

func (s *synapsePages) serve(w http.ResponseWriter) {
	s.mu.Lock()
	b := s.pages[s.n%len(s.pages)]
	s.n++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	_, _ = w.Write(b)
}

// loginUser is the localpart a login request names.
func loginUser(body []byte) string {
	var b struct {
		User       string `json:"user"`
		Identifier struct {
			User string `json:"user"`
		} `json:"identifier"`
	}
	_ = json.Unmarshal(body, &b)
	if b.Identifier.User != "" {
		return b.Identifier.User
	}
	return b.User
}

// selfUsage returns this process's CPU time and resident set size.
func selfUsage() (cpuSeconds float64, rssBytes int64) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		cpuSeconds = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 1 {
			pages, _ := strconv.ParseInt(f[1], 10, 64)
			rssBytes = pages * int64(os.Getpagesize())
		}
	}
	return cpuSeconds, rssBytes
}
