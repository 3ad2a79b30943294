package auth_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes/auth"
)

// TestAccountHoldsSecretsOnce: NewAccount resolves the password (inline)
// and the access token (from its file) into Account.Password and
// Account.Token and leaves them out of Account.Config, and no way of
// printing, logging or marshalling an Account shows either.
func TestAccountHoldsSecretsOnce(t *testing.T) {
	const pw, tok = "pw-SECRET-1234", "syt_TOKEN-SECRET-5678"
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tenant := &config.Tenant{ID: "acme", Name: "ACME", HomeserverURL: "https://hs.test", ServerName: "example.org"}
	a, err := auth.NewAccount(tenant, "bot", config.Account{Method: config.MethodPassword, User: "bot-acme", Password: pw, AccessTokenFile: file})
	if err != nil {
		t.Fatal(err)
	}
	if string(a.Password) != pw || string(a.Token) != tok {
		t.Fatalf("resolved secrets: %q %q", a.Password, a.Token)
	}
	if a.Config.Password != "" || a.Config.PasswordFile != "" || a.Config.AccessToken != "" || a.Config.AccessTokenFile != "" {
		t.Fatalf("a secret is held twice: %+v", a.Config)
	}
	if a.Config.User != "bot-acme" || a.Config.Method != config.MethodPassword || a.Key != "acme/bot" {
		t.Fatalf("account: %s", a)
	}
	var b strings.Builder
	for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
		fmt.Fprintf(&b, f+"\n", a)
	}
	js, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	b.Write(js)
	slog.New(slog.NewTextHandler(&b, nil)).Info("login", "account", a)
	slog.New(slog.NewJSONHandler(&b, nil)).Info("login", "account", a)
	if out := b.String(); strings.Contains(out, "SECRET") || !strings.Contains(out, "acme/bot") {
		t.Fatalf("an Account printed, logged or marshalled shows a secret (or not its key):\n%s", out)
	}

	// A secret file that cannot be read is a configuration error naming
	// the role, and no account.
	if _, err := auth.NewAccount(tenant, "peer", config.Account{PasswordFile: filepath.Join(t.TempDir(), "missing")}); err == nil || !strings.Contains(err.Error(), "peer password") {
		t.Fatalf("missing password file: %v", err)
	}
}
