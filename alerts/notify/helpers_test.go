package notify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/slack-go/slack/slacktest"

	"github.com/mxprobe/mxprobe/alerts"
	"github.com/mxprobe/mxprobe/alerts/notify"
	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/matrix"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// slackMsg is one call the fake Slack received.
type slackMsg struct {
	Method   string // chat.postMessage, chat.update, webhook
	Channel  string
	TS       string // the message's ts (for an update: the one updated)
	ThreadTS string
	Text     string
	Blocks   string
}

// fakeSlack is a slacktest server with recording handlers for the calls the
// notifier makes (slacktest's own postMessage feeds an RTM hub we do not
// use) and a switch to make it fail.
type fakeSlack struct {
	srv  *slacktest.Server
	mu   sync.Mutex
	msgs []slackMsg
	seq  atomic.Int64
	// mode: "" ok, "500" answers 500, "slow" waits before answering.
	mode atomic.Value
	// calls counts requests answered (or given up by the client).
	calls atomic.Int64
	quit  chan struct{}
}

func newFakeSlack(t *testing.T) *fakeSlack {
	f := &fakeSlack{quit: make(chan struct{})}
	f.mode.Store("")
	f.srv = slacktest.NewTestServer(func(c slacktest.Customize) {
		c.Handle("/chat.postMessage", f.handle("chat.postMessage"))
		c.Handle("/chat.update", f.handle("chat.update"))
		c.Handle("/webhook", f.handle("webhook"))
	})
	f.srv.Start()
	t.Cleanup(f.srv.Stop)
	t.Cleanup(func() { close(f.quit) })
	return f
}

func (f *fakeSlack) apiURL() string     { return f.srv.GetAPIURL() }
func (f *fakeSlack) webhookURL() string { return "http://" + f.srv.ServerAddr + "/webhook" }

func (f *fakeSlack) handle(method string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		// Read the body first: only then does net/http notice a client
		// that gives up (its timeout), which cancels r.Context().
		body, _ := io.ReadAll(r.Body)
		defer f.calls.Add(1)
		switch f.mode.Load().(string) {
		case "500":
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		case "slow":
			select {
			case <-time.After(3 * time.Second):
			case <-r.Context().Done():
				return
			case <-f.quit:
				return
			}
			if r.Context().Err() != nil {
				return // the client gave up: Slack is too slow to have posted
			}
		}
		m := slackMsg{Method: method}
		if method == "webhook" {
			var wm struct {
				Text   string          `json:"text"`
				Blocks json.RawMessage `json:"blocks"`
			}
			_ = json.Unmarshal(body, &wm)
			m.Text, m.Blocks = wm.Text, string(wm.Blocks)
			f.record(m)
			_, _ = w.Write([]byte("ok"))
			return
		}
		v, _ := url.ParseQuery(string(body))
		m.Channel, m.Text, m.Blocks, m.ThreadTS, m.TS = v.Get("channel"), v.Get("text"), v.Get("blocks"), v.Get("thread_ts"), v.Get("ts")
		if method == "chat.postMessage" {
			m.TS = fmt.Sprintf("1700000000.%06d", f.seq.Add(1))
		}
		f.record(m)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"ok": true, "channel": m.Channel, "ts": m.TS})
	}
}

func (f *fakeSlack) record(m slackMsg) {
	f.mu.Lock()
	f.msgs = append(f.msgs, m)
	f.mu.Unlock()
}

func (f *fakeSlack) messages() []slackMsg {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]slackMsg(nil), f.msgs...)
}

// waitFor polls cond until it holds or the (generous) deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func parse(t *testing.T, yml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(yml), "test.yml", func(string) string { return "" }, auth.LoginType().Kind, matrix.VersionsType().Kind, matrix.RoundtripType().Kind)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

// newManager builds notifiers and a started manager; both are stopped at
// cleanup.
func newManager(t *testing.T, cfg *config.Config, httpc *http.Client, extra ...alerts.Notifier) *alerts.Manager {
	t.Helper()
	ns, err := notify.Build(cfg, notify.Options{HTTP: httpc})
	if err != nil {
		t.Fatal(err)
	}
	m, err := alerts.New(alerts.Options{Config: cfg, Notifiers: append(ns, extra...), PollInterval: 25 * time.Millisecond, BaseBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		m.Stop(ctx)
	})
	return m
}

func count(msgs []slackMsg, pred func(slackMsg) bool) int {
	n := 0
	for _, m := range msgs {
		if pred(m) {
			n++
		}
	}
	return n
}

func firing(m slackMsg) bool   { return strings.Contains(m.Text, "[FIRING]") }
func resolved(m slackMsg) bool { return strings.Contains(m.Text, "[RESOLVED]") }

func stringsContains(s, sub string) bool { return strings.Contains(s, sub) }

func contextTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
