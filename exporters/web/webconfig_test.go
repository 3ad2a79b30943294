package web

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/exporter-toolkit/web"
	"golang.org/x/crypto/bcrypt"

	"github.com/mxprobe/mxprobe/exporters/history"
	"github.com/mxprobe/mxprobe/probes"
)

// TestWebConfigBasicAuth is "Done when" 5: with a web config requiring basic
// auth, /metrics, the API, /probe and the page refuse requests without
// credentials. The real server runs through exporter-toolkit on loopback.
func TestWebConfigBasicAuth(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("ops-password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(t.TempDir(), "web.yml")
	if err := os.WriteFile(cfgFile, []byte(fmt.Sprintf("basic_auth_users:\n  ops: %s\n", hash)), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	engine := probes.NewEngine(2)
	engine.SetJobs([]*probes.Job{{Name: "login", Type: "login", Timeout: 5 * time.Second, Subjects: []string{"acme"},
		Prober: probes.ProberFunc(func(ctx context.Context, tenant string) probes.Result {
			return probes.NewRecorder("login", "login", tenant).Finish()
		})}})
	defer engine.Shutdown(time.Second)
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "mxprobe_test_gauge", Help: "x"}))
	srv := New(Options{Registry: reg})
	srv.Enable(Features{Runner: engine, Results: history.New(5), Settings: func() Settings { return Settings{} }})

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- srv.Serve(ctx, &web.FlagConfig{WebListenAddresses: &[]string{addr}, WebSystemdSocket: new(bool), WebConfigFile: &cfgFile})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	client := &http.Client{Timeout: 10 * time.Second}
	do := func(method, path, user, pass string) int {
		req, _ := http.NewRequest(method, "http://"+addr+path, nil)
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := client.Do(req)
		if err != nil {
			return -1
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	deadline := time.Now().Add(10 * time.Second)
	for do("GET", "/-/healthy", "ops", "ops-password") != 200 {
		if time.Now().After(deadline) {
			t.Fatal("server did not come up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, ep := range []struct{ method, path string }{
		{"GET", "/metrics"}, {"GET", "/"}, {"GET", "/api/v1/results"}, {"GET", "/api/v1/alerts"},
		{"POST", "/api/v1/probes/login/run?tenant=acme"}, {"GET", "/probe?module=login&tenant=acme"}, {"POST", "/run"},
	} {
		if code := do(ep.method, ep.path, "", ""); code != http.StatusUnauthorized {
			t.Errorf("%s %s without credentials: %d, want 401", ep.method, ep.path, code)
		}
		if code := do(ep.method, ep.path, "ops", "wrong"); code != http.StatusUnauthorized {
			t.Errorf("%s %s with a wrong password: %d, want 401", ep.method, ep.path, code)
		}
	}
	for _, ep := range []struct{ method, path string }{
		{"GET", "/metrics"}, {"GET", "/"}, {"GET", "/api/v1/results"}, {"POST", "/api/v1/probes/login/run?tenant=acme"}, {"GET", "/probe?module=login&tenant=acme"},
	} {
		if code := do(ep.method, ep.path, "ops", "ops-password"); code != http.StatusOK {
			t.Errorf("%s %s with credentials: %d, want 200", ep.method, ep.path, code)
		}
	}
}
