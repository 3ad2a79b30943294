package mxclient_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// TestUserAgent: a client from NewHTTPClientAs identifies as the User-Agent
// it was given on mautrix requests and on bare ones that carry the default,
// while a User-Agent its caller chose, or Go's default on a request that
// set none, stays; NewHTTPClient sends the default.
func TestUserAgent(t *testing.T) {
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("User-Agent")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"versions":["v1.11"]}`))
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	bare := func(c *http.Client, ua string) string {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, "GET", srv.URL+"/_matrix/client/versions", nil)
		if err != nil {
			t.Fatal(err)
		}
		if ua != "" {
			req.Header.Set("User-Agent", ua)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if req.Header.Get("User-Agent") != ua {
			t.Fatal("the caller's request was modified")
		}
		return <-got
	}
	matrix := func(c *http.Client) string {
		t.Helper()
		cli, err := mxclient.New(srv.URL, c)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Versions(ctx); err != nil {
			t.Fatal(err)
		}
		return <-got
	}

	const full = "mxprobe/1.2.3"
	as := mxclient.NewHTTPClientAs(full)
	for name, ua := range map[string]string{
		"mautrix":         matrix(as),
		"no User-Agent":   bare(as, ""),
		"the default":     bare(as, mxclient.UserAgent),
		"the caller's UA": bare(as, "custom/9"),
	} {
		want := map[string]string{"no User-Agent": "Go-http-client/1.1", "the caller's UA": "custom/9"}[name]
		if want == "" {
			want = full
		}
		if ua != want {
			t.Errorf("%s: User-Agent %q, want %q", name, ua, want)
		}
	}
	if ua := matrix(mxclient.NewHTTPClient()); ua != mxclient.UserAgent {
		t.Errorf("NewHTTPClient: User-Agent %q, want %q", ua, mxclient.UserAgent)
	}
}
