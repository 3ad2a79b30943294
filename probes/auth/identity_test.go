package auth_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
)

func TestExpectedUserID(t *testing.T) {
	for _, c := range []struct {
		user, matrixUser, server, want string
	}{
		{"openmeet-bot-acme", "", "example.net", "@openmeet-bot-acme:example.net"},
		{"openmeet-bot-acme", "openmeet-bot-acme_acme", "example.net", "@openmeet-bot-acme_acme:example.net"},
		{"openmeet-bot-acme", "@handle:other.example", "example.net", "@handle:other.example"},
		{"@bot:example.net", "", "", "@bot:example.net"},
		{"bot", "", "", "@bot"},
		{"", "", "example.net", ""},
	} {
		a := auth.Account{ServerName: c.server, Config: config.Account{User: c.user, MatrixUser: c.matrixUser}}
		if got := a.ExpectedUserID(); got != c.want {
			t.Errorf("user %q matrix_user %q server %q: %q, want %q", c.user, c.matrixUser, c.server, got, c.want)
		}
	}
}

// identity_mismatch names the expected and the actual user.
func TestWhoamiMismatchNamesBoth(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"user_id":"@openmeet-bot-acme:example.net","device_id":"D"}`))
	}))
	defer srv.Close()
	m := auth.NewManager(srv.Client())
	acct := auth.Account{Key: "acme/login", ServerName: "example.net", HomeserverURL: srv.URL,
		Config: config.Account{Method: config.MethodMASOIDC, User: "openmeet-bot-acme", MatrixUser: "openmeet-bot-acme_acme"}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := m.Whoami(ctx, acct, &auth.Session{AccessToken: "t", HomeserverURL: srv.URL})
	if probes.Classify(err) != probes.ClassIdentityMismatch ||
		!strings.Contains(err.Error(), "@openmeet-bot-acme:example.net") || !strings.Contains(err.Error(), "expected @openmeet-bot-acme_acme:example.net") {
		t.Fatalf("got %v (%s)", err, probes.Classify(err))
	}
	acct.Config.MatrixUser = ""
	if err := m.Whoami(ctx, acct, &auth.Session{AccessToken: "t", HomeserverURL: srv.URL}); err != nil {
		t.Fatalf("matching user refused: %v", err)
	}
}
