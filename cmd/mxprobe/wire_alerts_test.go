package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxprobe/mxprobe/alerts"
	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/exporters/history"
	"github.com/mxprobe/mxprobe/exporters/web"
	"github.com/mxprobe/mxprobe/probes"
)

// TestSilenceDeleteThroughManager: DELETE /api/v1/silences/{id} goes from the
// API through the daemon's adapter (alertsView) into the real alert manager,
// and answers as docs/api.md says: 204 for a silence the API added, 404 for
// an id nobody knows (also for one just deleted), 400 for a silence of the
// configuration.
func TestSilenceDeleteThroughManager(t *testing.T) {
	yml := `global: {homeserver_url: "http://127.0.0.1:1", server_name: localhost}
tenants:
  - {id: acme, bot: {user: bot-acme, password: x}}
probes:
  - {name: login, type: login, schedule: "@every 1m"}
alerting:
  silences:
    - {matchers: {tenant: acme}, ends_at: "2999-01-01T00:00:00Z", comment: from the file}
`
	cfg, err := config.Parse([]byte(yml), "test.yml", func(string) string { return "" }, (&env{}).kinds()...)
	if err != nil {
		t.Fatal(err)
	}
	m, err := alerts.New(alerts.Options{Config: cfg, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		m.Stop(ctx)
	})
	st := &stores{}
	st.alerts.Store(m)
	srv := web.New(web.Options{Registry: prometheus.NewRegistry(), Logger: discard()})
	srv.SetAlerts(alertsView{st})
	// As serve wires it, with an API token (writes need it).
	const token = "test-api-token"
	srv.Enable(web.Features{Runner: probes.NewEngine(1), Results: history.New(10),
		Settings: func() web.Settings { return web.Settings{Token: token} }})
	hs := httptest.NewServer(srv.Mux)
	t.Cleanup(hs.Close)

	do := func(method, path, body string) (int, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, method, hs.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	if code, body := do("DELETE", "/api/v1/silences/0123456789abcdef", ""); code != http.StatusNotFound {
		t.Fatalf("unknown silence: %d %s, want 404", code, body)
	}
	if code, body := do("DELETE", "/api/v1/silences?id=0123456789abcdef", ""); code != http.StatusNotFound {
		t.Fatalf("unknown silence (?id=): %d %s, want 404", code, body)
	}

	sil := `{"matchers":{"tenant":"acme"},"ends_at":"` + time.Now().Add(time.Hour).UTC().Format(time.RFC3339) + `","comment":"maintenance"}`
	code, body := do("POST", "/api/v1/silences", sil)
	var added web.Silence
	if code != http.StatusCreated || json.Unmarshal([]byte(body), &added) != nil || added.ID == "" {
		t.Fatalf("add silence: %d %s", code, body)
	}
	var fromFile string
	for _, s := range m.Silences() {
		if s.FromConfig {
			fromFile = s.ID
		}
	}
	if fromFile == "" {
		t.Fatal("the configuration's silence is not in the manager")
	}

	if code, body := do("DELETE", "/api/v1/silences/"+added.ID, ""); code != http.StatusNoContent && code != http.StatusOK {
		t.Fatalf("known silence: %d %s, want 204", code, body)
	}
	for _, s := range m.Silences() {
		if s.ID == added.ID {
			t.Fatal("the deleted silence is still in the manager")
		}
	}
	if code, body := do("DELETE", "/api/v1/silences/"+added.ID, ""); code != http.StatusNotFound {
		t.Fatalf("silence deleted twice: %d %s, want 404", code, body)
	}
	if code, body := do("DELETE", "/api/v1/silences/"+fromFile, ""); code != http.StatusBadRequest || !strings.Contains(body, "configuration") {
		t.Fatalf("silence of the configuration: %d %s, want 400", code, body)
	}
}
