package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/mxprobe/mxprobe/exporters/history"
	"github.com/mxprobe/mxprobe/probes"
)

const maxBody = 64 << 10

func (s *Server) registerAPI() {
	s.Mux.HandleFunc("POST /api/v1/probes/{probe}/run", s.apiRun)
	s.Mux.HandleFunc("GET /api/v1/probes", s.read(s.apiProbes))
	s.Mux.HandleFunc("GET /api/v1/results", s.read(s.apiResults))
	s.Mux.HandleFunc("GET /api/v1/alerts", s.read(s.apiAlerts))
	s.Mux.HandleFunc("GET /api/v1/silences", s.read(s.apiSilences))
	s.Mux.HandleFunc("POST /api/v1/silences", s.write(s.apiAddSilence))
	s.Mux.HandleFunc("DELETE /api/v1/silences", s.write(s.apiDeleteSilence))
	s.Mux.HandleFunc("DELETE /api/v1/silences/{id}", s.write(s.apiDeleteSilence))
}

// apiError is the body of every API error.
type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false) // JSON with nosniff is never rendered as HTML
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func jsonError(w http.ResponseWriter, code int, format string, args ...any) {
	writeJSON(w, code, apiError{Error: fmt.Sprintf(format, args...)})
}

func unauthorized(w http.ResponseWriter, write bool) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="mxprobe"`)
	what := "this endpoint needs the API token"
	if write {
		what = "changes need the API token"
	}
	jsonError(w, http.StatusUnauthorized, "%s: send \"Authorization: Bearer <web.api_token>\" (or X-Mxprobe-Token behind basic auth)", what)
}

func (s *Server) read(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.allow(w, r, s.settings(), accessRead) {
			return
		}
		h(w, r)
	}
}

func (s *Server) write(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !s.allow(w, r, s.settings(), accessWrite) {
			return
		}
		h(w, r)
	}
}

// lookupStatus maps a Lookup error to a message and status.
func lookupError(err error) (int, string) {
	if errors.Is(err, probes.ErrUnknownProbe) || errors.Is(err, probes.ErrUnknownTenant) {
		return http.StatusNotFound, err.Error()
	}
	return http.StatusInternalServerError, err.Error()
}

// apiRun is POST /api/v1/probes/{probe}/run?tenant=T: run now and return the
// Result. A run already in flight for the probe and tenant is joined, not
// stacked, and within the run floor the last run's Result is returned; the
// engine's concurrency limit applies.
func (s *Server) apiRun(w http.ResponseWriter, r *http.Request) {
	if !s.allow(w, r, s.settings(), accessWrite) {
		return
	}
	probe, tenant := r.PathValue("probe"), r.URL.Query().Get("tenant")
	res, cached, code, err := s.runNow(r.Context(), probe, tenant)
	if err != nil {
		jsonError(w, code, "%v", err)
		return
	}
	if cached {
		// A run of this probe and tenant started less than web.run_floor ago.
		w.Header().Set("X-Mxprobe-Cached", "true")
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) runNow(ctx context.Context, probe, tenant string) (probes.Result, bool, int, error) {
	run := s.features.Runner
	if run == nil {
		return probes.Result{}, false, http.StatusServiceUnavailable, errors.New("no probes are configured yet")
	}
	if _, err := run.Lookup(probe, tenant); err != nil {
		code, msg := lookupError(err)
		return probes.Result{}, false, code, errors.New(msg)
	}
	ctx, cancel := context.WithTimeout(ctx, s.features.RunTimeout)
	defer cancel()
	res, cached, err := s.runFloored(ctx, probe, tenant, s.settings().RunFloor)
	if err != nil {
		code, msg := lookupError(err)
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			code, msg = http.StatusGatewayTimeout, "the run did not finish in time; its result will appear in /api/v1/results"
		}
		return probes.Result{}, cached, code, errors.New(msg)
	}
	return res, cached, http.StatusOK, nil
}

// ProbeInfo lists a configured probe and its tenants.
type ProbeInfo struct {
	Name     string   `json:"name"`
	Type     string   `json:"type"`
	Disabled bool     `json:"disabled,omitempty"`
	Tenants  []string `json:"tenants"`
}

func (s *Server) apiProbes(w http.ResponseWriter, r *http.Request) {
	out := []ProbeInfo{}
	if s.features.Runner != nil {
		for _, j := range s.features.Runner.Jobs() {
			ts := j.Subjects
			if len(ts) == 1 && ts[0] == "" {
				ts = []string{}
			}
			out = append(out, ProbeInfo{Name: j.Name, Type: j.Type, Disabled: j.Disabled, Tenants: append([]string{}, ts...)})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// apiResults is GET /api/v1/results[?probe=P][&tenant=T]: the latest Result
// per probe and tenant; one the login budget holds back also says when its
// next login comes (next_login, next_login_in_seconds), and a tenant
// waiting for its first login is listed without a Result.
func (s *Server) apiResults(w http.ResponseWriter, r *http.Request) {
	out := []resultView{}
	if s.features.Results != nil {
		q := r.URL.Query()
		now := time.Now()
		for _, e := range s.features.Results.Entries() {
			if p := q.Get("probe"); p != "" && p != e.Probe {
				continue
			}
			if q.Has("tenant") && q.Get("tenant") != e.Tenant {
				continue
			}
			v := resultView{Key: e.Key}
			if len(e.Recent) > 0 {
				res := e.Latest
				v.Result = &res
			}
			if e.NextLogin.After(now) {
				v.NextLogin = e.NextLogin.UTC().Format(time.RFC3339)
				v.NextLoginIn = e.NextLogin.Sub(now).Seconds()
			}
			if v.Result == nil && v.NextLogin == "" {
				continue
			}
			out = append(out, v)
		}
		sort.Slice(out, func(a, b int) bool {
			if out[a].Probe != out[b].Probe {
				return out[a].Probe < out[b].Probe
			}
			return out[a].Tenant < out[b].Tenant
		})
	}
	writeJSON(w, http.StatusOK, out)
}

// resultView is a Result as the API lists it, with the login budget's wait.
type resultView struct {
	history.Key
	Result      *probes.Result
	NextLogin   string
	NextLoginIn float64
}

// MarshalJSON writes the Result's own fields (or only probe and tenant
// when there is none yet) and the wait, when there is one.
func (v resultView) MarshalJSON() ([]byte, error) {
	m := map[string]any{}
	if v.Result != nil {
		b, err := json.Marshal(*v.Result)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, err
		}
	} else {
		m["probe"], m["tenant"] = v.Probe, v.Tenant
	}
	if v.NextLogin != "" {
		m["next_login"] = v.NextLogin
		m["next_login_in_seconds"] = math.Round(v.NextLoginIn)
		m["waiting"] = fmt.Sprintf("next login in %s (login budget)", (time.Duration(math.Round(v.NextLoginIn)) * time.Second).String())
	}
	return json.Marshal(m)
}

func (s *Server) apiAlerts(w http.ResponseWriter, r *http.Request) {
	out := []AlertView{}
	if a := s.alertsSource(); a != nil {
		out = append(out, a.Alerts()...)
	}
	writeJSON(w, http.StatusOK, out)
}

func noAlerting(w http.ResponseWriter) {
	jsonError(w, http.StatusNotFound, "alerting is not configured (no alerting section in the configuration)")
}

func (s *Server) apiSilences(w http.ResponseWriter, r *http.Request) {
	a := s.alertsSource()
	if a == nil {
		noAlerting(w)
		return
	}
	out := append([]Silence{}, a.Silences()...)
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) apiAddSilence(w http.ResponseWriter, r *http.Request) {
	a := s.alertsSource()
	if a == nil {
		noAlerting(w)
		return
	}
	var sil Silence
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sil); err != nil {
		jsonError(w, http.StatusBadRequest, "bad silence: %v (expected {\"matchers\": {\"label\": \"value\"}, \"starts_at\": RFC 3339, \"ends_at\": RFC 3339, \"comment\": \"...\", \"created_by\": \"...\"})", err)
		return
	}
	if len(sil.Matchers) == 0 {
		jsonError(w, http.StatusBadRequest, "bad silence: matchers must name at least one label")
		return
	}
	if sil.EndsAt.IsZero() {
		jsonError(w, http.StatusBadRequest, "bad silence: ends_at is missing")
		return
	}
	if sil.StartsAt.IsZero() {
		sil.StartsAt = s.features.Now()
	}
	if !sil.EndsAt.After(sil.StartsAt) {
		jsonError(w, http.StatusBadRequest, "bad silence: ends_at must be after starts_at")
		return
	}
	if strings.TrimSpace(sil.CreatedBy) == "" {
		sil.CreatedBy = "api"
	}
	sil.ID = ""
	out, err := a.AddSilence(sil)
	if err != nil {
		jsonError(w, http.StatusBadRequest, "silence not added: %v", err)
		return
	}
	writeJSON(w, http.StatusCreated, out)
}

func (s *Server) apiDeleteSilence(w http.ResponseWriter, r *http.Request) {
	a := s.alertsSource()
	if a == nil {
		noAlerting(w)
		return
	}
	id := r.PathValue("id")
	if id == "" {
		id = r.URL.Query().Get("id")
	}
	if id == "" {
		jsonError(w, http.StatusBadRequest, "name the silence: DELETE /api/v1/silences/{id} or ?id=")
		return
	}
	if err := a.DeleteSilence(id); err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, probes.ErrUnknownSilence) {
			code = http.StatusNotFound
		}
		jsonError(w, code, "silence %q not deleted: %v", id, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
