package notify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/robfig/cron/v3"
	"go.uber.org/goleak"

	"github.com/mxprobe/mxprobe/alerts/notify"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes"
)

// TestSlackOutage: Slack refuses connections, then answers 500, then is
// slow; meanwhile the probes keep their schedule (the sink returns at once),
// the webhook notifier delivers, and the Slack notification arrives once
// Slack is back, exactly once.
func TestSlackOutage(t *testing.T) {
	opts := append(testenv.LeakOptions(), goleak.IgnoreCurrent())
	t.Cleanup(func() { goleak.VerifyNone(t, opts...) })

	fake := newFakeSlack(t) // its handlers, served on a port we control
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	var hookMu sync.Mutex
	var hookStates []string
	var hookSig string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var p notify.WebhookPayload
		_ = json.Unmarshal(body, &p)
		hookMu.Lock()
		hookStates = append(hookStates, string(p.Status))
		hookSig = r.Header.Get("X-Mxprobe-Signature")
		if hookSig != notify.Sign([]byte("hmac-key"), body) {
			hookSig = "bad"
		}
		hookMu.Unlock()
	}))
	t.Cleanup(hook.Close)

	cfg := parse(t, fmt.Sprintf(`
global: {homeserver_url: "http://127.0.0.1:1"}
tenants: [{id: acme, bot: {user: bot-acme, password: x}}]
probes: [{name: login, type: login}]
alerting:
  rules: [{name: login_failing, probe: login, failures: 2}]
  notifiers:
    - {name: slack, type: slack, timeout: 1s, max_backoff: 400ms, slack: {token: xoxb-t, channel: C1, api_url: "http://%s/"}}
    - {name: hook, type: webhook, timeout: 1s, webhook: {url: %q, hmac_secret: hmac-key}}
`, addr, hook.URL))
	httpc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	t.Cleanup(httpc.CloseIdleConnections)
	m := newManager(t, cfg, httpc)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collector())

	// A failing probe, run by the test (no wall-clock schedule): each run
	// must return at once whatever Slack does; the sink in front of the
	// alert manager measures how long Observe takes.
	var runs atomic.Int64
	var slowest atomic.Int64
	sink := probes.SinkFunc(func(r probes.Result) {
		t0 := time.Now()
		m.Observe(r)
		if d := int64(time.Since(t0)); d > slowest.Load() {
			slowest.Store(d)
		}
		runs.Add(1)
	})
	eng := probes.NewEngine(4, sink)
	job := &probes.Job{Name: "login", Type: "login", Schedule: cron.Every(time.Second), Timeout: time.Second,
		Subjects: []string{"acme"}, Prober: probes.ProberFunc(func(ctx context.Context, tenant string) probes.Result {
			rec := probes.NewRecorder("login", "login", tenant)
			rec.AddStep("login", time.Millisecond, probes.Errorf(probes.ClassAuthFailed, "M_FORBIDDEN"))
			return rec.Finish()
		})}
	eng.SetJobs([]*probes.Job{job})
	t.Cleanup(func() { eng.Shutdown(2 * time.Second) })
	slackAttempts := func(result string) float64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "mxprobe_notifications_total" {
				continue
			}
			for _, mt := range mf.GetMetric() {
				lbl := map[string]string{}
				for _, l := range mt.GetLabel() {
					lbl[l.GetName()] = l.GetValue()
				}
				if lbl["notifier"] == "slack" && lbl["result"] == result {
					return mt.GetCounter().GetValue()
				}
			}
		}
		return 0
	}
	// runUntil runs the probe until cond holds; every run must finish well
	// within its timeout (a sink blocked by a notifier would hold it).
	runUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := eng.Run(ctx, "login", "acme")
			cancel()
			if err != nil {
				t.Fatalf("a probe run did not return during the Slack outage (%s): %v", what, err)
			}
			time.Sleep(10 * time.Millisecond) // pacing only, not a sync point
		}
	}

	// Phase 1: nothing listens on Slack's port (connection refused).
	runUntil("the webhook's firing notification", func() bool {
		hookMu.Lock()
		defer hookMu.Unlock()
		return len(hookStates) == 1
	})
	phaseStart := runs.Load()
	runUntil("a refused Slack attempt", func() bool { return slackAttempts("failure") >= 1 })

	// Phase 2: Slack answers 500. Phase 3: Slack is slower than the timeout.
	mux := http.NewServeMux()
	mux.Handle("/chat.postMessage", fake.handle("chat.postMessage"))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	fake.mode.Store("500")
	calls0 := fake.calls.Load()
	runUntil("a Slack attempt answered 500", func() bool { return fake.calls.Load() > calls0 })
	fake.mode.Store("slow")
	calls1 := fake.calls.Load()
	failures1 := slackAttempts("failure")
	runUntil("a Slack attempt timed out", func() bool { return fake.calls.Load() > calls1 && slackAttempts("failure") > failures1 })
	if n := len(fake.messages()); n != 0 {
		t.Fatalf("Slack recorded %d messages during the outage", n)
	}
	during := runs.Load() - phaseStart

	// Slack is back.
	fake.mode.Store("")
	runUntil("the Slack message after the outage", func() bool { return slackAttempts("success") >= 1 })
	if msgs := fake.messages(); len(msgs) != 1 || !firing(msgs[0]) {
		t.Fatalf("want one firing Slack message, got %+v", msgs)
	}

	// The runs went on through three failed deliveries (refused, 500,
	// timeout); each returned within its deadline (runUntil).
	if during < 3 {
		t.Errorf("only %d probe runs during the Slack outage", during)
	}
	if d := time.Duration(slowest.Load()); d > time.Second {
		t.Errorf("Observe took %v at worst: a dead notifier blocked the probes", d)
	}
	hookMu.Lock()
	if len(hookStates) != 1 || hookStates[0] != "firing" || hookSig == "bad" || hookSig == "" {
		t.Errorf("webhook: states %v, signature ok=%v", hookStates, hookSig != "bad" && hookSig != "")
	}
	hookMu.Unlock()
	failures, successes := slackAttempts("failure"), slackAttempts("success")
	if failures < 3 || successes != 1 {
		t.Errorf("mxprobe_notifications_total slack: failure %v (want >= 3), success %v (want 1)", failures, successes)
	}
	t.Logf("runs during the outage: %d; slowest Observe: %v; slack failures: %v", during, time.Duration(slowest.Load()), failures)
}
