package faultproxy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func upstream(t *testing.T) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"path":"`+r.URL.Path+`","pad":"`+strings.Repeat("x", 100)+`"}`)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func newProxy(t *testing.T) (*Proxy, *http.Client) {
	t.Helper()
	p, err := New(upstream(t).URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return p, &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func get(t *testing.T, c *http.Client, url string) (int, string, error) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func TestPassThroughAndStatusTimes(t *testing.T) {
	p, c := newProxy(t)
	h := p.Add(Rule{Method: http.MethodGet, Path: "/send/", Times: 1, Fault: RateLimited(300 * time.Millisecond)})

	status, body, err := get(t, c, p.URL+"/a/other")
	if err != nil || status != 200 || !strings.Contains(body, `"/a/other"`) {
		t.Fatalf("pass-through: %d %q %v", status, body, err)
	}
	status, body, err = get(t, c, p.URL+"/rooms/x/send/y")
	if err != nil || status != http.StatusTooManyRequests {
		t.Fatalf("rule: %d %q %v", status, body, err)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(body), &m); err != nil || m["errcode"] != "M_LIMIT_EXCEEDED" || m["retry_after_ms"] != float64(300) {
		t.Fatalf("429 body %q: %v", body, err)
	}
	status, _, err = get(t, c, p.URL+"/rooms/x/send/y")
	if err != nil || status != 200 {
		t.Fatalf("after Times the request must pass: %d %v", status, err)
	}
	if h.Hits() != 1 || p.Requests() != 3 {
		t.Fatalf("hits %d requests %d", h.Hits(), p.Requests())
	}
	h.Remove()
	p.Add(Rule{Method: http.MethodPost, Fault: Fault{Status: 502}})
	if status, _, _ := get(t, c, p.URL+"/x"); status != 200 {
		t.Fatalf("method filter: GET got %d", status)
	}
}

func TestDelay(t *testing.T) {
	p, c := newProxy(t)
	p.Add(Rule{Path: "^/slow$", Fault: Fault{Delay: 120 * time.Millisecond}})
	t0 := time.Now()
	status, _, err := get(t, c, p.URL+"/slow")
	if err != nil || status != 200 {
		t.Fatal(status, err)
	}
	if d := time.Since(t0); d < 120*time.Millisecond || d > 5*time.Second {
		t.Fatalf("delayed request took %s, want ≥120ms", d)
	}
}

func TestResetCutAndSlowBody(t *testing.T) {
	p, c := newProxy(t)
	p.Add(Rule{Path: "^/reset$", Fault: Fault{Reset: true}})
	p.Add(Rule{Path: "^/cut$", Fault: Fault{CutBody: true}})
	p.Add(Rule{Path: "^/trickle$", Fault: Fault{SlowBody: 200 * time.Millisecond}})

	if _, _, err := get(t, c, p.URL+"/reset"); err == nil {
		t.Fatal("reset: want a transport error")
	}
	if _, body, err := get(t, c, p.URL+"/cut"); err == nil {
		t.Fatalf("cut body: want a read error, got body %q", body)
	}
	t0 := time.Now()
	status, body, err := get(t, c, p.URL+"/trickle")
	if err != nil || status != 200 || !strings.Contains(body, `"/trickle"`) {
		t.Fatalf("slow body: %d %q %v", status, body, err)
	}
	if d := time.Since(t0); d < 150*time.Millisecond {
		t.Fatalf("slow body arrived in %s, want ≥150ms", d)
	}
}

func TestHangEndsWithClient(t *testing.T) {
	p, c := newProxy(t)
	p.Add(Rule{Fault: Fault{Hang: true}})
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/x", nil)
	_, err := c.Do(req)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hang: want deadline exceeded, got %v", err)
	}
}

func TestOnMatchAndBadTarget(t *testing.T) {
	if _, err := New("not a url"); err == nil {
		t.Fatal("bad target accepted")
	}
	p, c := newProxy(t)
	seen := make(chan string, 1)
	p.Add(Rule{Path: "/invite$", OnMatch: func(r *http.Request) { seen <- r.URL.Path }})
	if status, _, err := get(t, c, p.URL+"/rooms/r/invite"); err != nil || status != 200 {
		t.Fatal(status, err)
	}
	if got := <-seen; got != "/rooms/r/invite" {
		t.Fatalf("OnMatch saw %q", got)
	}
}
