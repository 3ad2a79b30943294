package config

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestLoadGood(t *testing.T) {
	cfg, err := load("testdata/good.yml", envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Tenants) != 1 || cfg.Tenants[0].Bot.Email != "bot-acme@openmeet.net" {
		t.Fatalf("tenant defaults not applied: %+v", cfg.Tenants)
	}
	p, ok := cfg.Probe("login")
	if !ok || p.Timeout.D() != 20*time.Second || p.Schedule.Interval(time.Now()) != time.Minute {
		t.Fatalf("login probe: %+v", p)
	}
	v, _ := cfg.Probe("versions")
	if got := v.Schedule.Interval(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)); got != 5*time.Minute {
		t.Fatalf("cron interval = %v", got)
	}
	if cfg.Global.Concurrency != 8 || cfg.Tenants[0].HomeserverURL != "http://127.0.0.1:8008" {
		t.Fatalf("globals: %+v", cfg.Global)
	}
}

// TestBadFileOneErrorPerProblem: unknown key, bad duration and bad cron spec
// each give one error naming file:line, and the password is never echoed.
func TestBadFileOneErrorPerProblem(t *testing.T) {
	_, err := load("testdata/bad.yml", envOf(nil))
	if err == nil {
		t.Fatal("bad config accepted")
	}
	errs, ok := err.(Errors)
	if !ok {
		t.Fatalf("error type %T", err)
	}
	want := []string{
		"testdata/bad.yml:4: field colour not found",
		"testdata/bad.yml:14: invalid duration \"5x\"",
		"testdata/bad.yml:17: invalid schedule \"61 * * * *\"",
	}
	if len(errs) != len(want) {
		t.Fatalf("got %d errors, want %d:\n%v", len(errs), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(errs[i], w) {
			t.Errorf("error %d = %q, want prefix %q", i, errs[i], w)
		}
	}
	if strings.Contains(err.Error(), "hunter2") {
		t.Fatal("password echoed in errors")
	}
}

func b64(v any) string {
	b, _ := json.Marshal(v)
	return base64.StdEncoding.EncodeToString(b)
}

func TestTenantsB64(t *testing.T) {
	value := b64([]map[string]any{
		{"id": "t1", "name": "One", "botUser": map[string]any{"email": "b1@x.org", "slug": "bot-one", "password": "pw1-SECRET"},
			"oauth": map[string]any{"clientSecret": "client-SECRET"}},
		{"id": "t2", "matrixConfig": map[string]any{"homeserverUrl": "https://hs2.example.org", "serverName": "example.org",
			"botUser": map[string]any{"password": "pw2-SECRET"}}},
	})
	cfg, err := parse(nil, "", envOf(map[string]string{
		"TENANTS_B64": value, "MATRIX_HOMESERVER_URL": "https://hs.example.org",
		"MATRIX_SERVER_NAME": "example.org", "BOT_EMAIL_DOMAIN": "bots.example.org",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Tenants) != 2 {
		t.Fatalf("tenants: %+v", cfg.Tenants)
	}
	t1, t2 := cfg.Tenants[0], cfg.Tenants[1]
	if t1.Bot.User != "bot-one" || t1.Bot.Email != "b1@x.org" || string(t1.Bot.Password) != "pw1-SECRET" ||
		t1.HomeserverURL != "https://hs.example.org" || t1.Name != "One" {
		t.Fatalf("t1: %+v", t1)
	}
	if t2.Bot.User != "openmeet-bot-t2" || t2.Bot.Email != "bot-t2@bots.example.org" ||
		t2.HomeserverURL != "https://hs2.example.org" || t2.ServerName != "example.org" {
		t.Fatalf("t2: %+v", t2)
	}
	// Secrets never render.
	js, _ := json.Marshal(cfg)
	if strings.Contains(string(js), "SECRET") {
		t.Fatalf("secret in JSON rendering: %s", js)
	}
}

func TestTenantsB64Errors(t *testing.T) {
	cases := []struct {
		name, value string
		want        []string
	}{
		{"not base64", "%%%not-base64-SECRET%%%", []string{"TENANTS_B64: not valid base64"}},
		{"not JSON", base64.StdEncoding.EncodeToString([]byte(`{"password": hunter2-SECRET`)), []string{"TENANTS_B64: decoded value is not a JSON array of tenants: invalid JSON at byte"}},
		{"not an array", b64(map[string]any{"id": "x"}), []string{"TENANTS_B64: decoded value is not a JSON array"}},
		{"missing password", b64([]map[string]any{
			{"id": "ok", "botUser": map[string]any{"password": "fine-SECRET"}},
			{"id": "nopw", "botUser": map[string]any{"email": "a@b.c", "slug": "s"}},
			{"id": "nested", "matrixConfig": map[string]any{"botUser": map[string]any{"password": ""}}},
			{"name": "no id", "botUser": map[string]any{"password": "x-SECRET"}},
			{"id": "nobot"},
			{"id": "typed", "botUser": map[string]any{"password": 12345}},
		}), []string{
			`TENANTS_B64[1] (id "nopw"): botUser.password: missing`,
			`TENANTS_B64[2] (id "nested"): matrixConfig.botUser.password: missing`,
			`TENANTS_B64[5]: botUser.password: expected string, got number`,
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := parse(nil, "", envOf(map[string]string{"TENANTS_B64": c.value, "MATRIX_HOMESERVER_URL": "http://127.0.0.1:1"}))
			if err == nil {
				t.Fatal("accepted")
			}
			errs := err.(Errors)
			if len(errs) != len(c.want) {
				t.Fatalf("got %d errors, want %d:\n%v", len(errs), len(c.want), err)
			}
			for i, w := range c.want {
				if !strings.HasPrefix(errs[i], w) {
					t.Errorf("error %d = %q, want prefix %q", i, errs[i], w)
				}
			}
			if strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "12345") {
				t.Fatalf("secret echoed: %v", err)
			}
		})
	}
}

func TestValidationNamesField(t *testing.T) {
	data := []byte(`global:
  homeserver_url: ftp://nope
tenants:
  - id: a
    bot:
      method: telepathy
  - id: b
    bot:
      user: x
  - id: b
    bot:
      user: y
      password: p
      password_file: /x
probes:
  - name: p1
    type: nonsense
  - name: login
    type: login
    tenants: [zzz]
`)
	_, err := parse(data, "m.yml", envOf(nil))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range []string{
		"m.yml: global.homeserver_url: must be an http or https URL",
		`m.yml:4: tenant "a": bot.method: unknown method "telepathy"`,
		`m.yml:7: tenant "b": bot.password: missing (or password_file)`,
		`m.yml:10: tenant "b": id: duplicate`,
		`m.yml:10: tenant "b": bot: password and password_file are mutually exclusive`,
		`m.yml:16: probe "p1": type: unknown probe type "nonsense"`,
		`m.yml:18: probe "login": tenants: unknown tenant "zzz"`,
	} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("missing %q in:\n%v", w, err)
		}
	}
}

func TestSecretFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "pw")
	if err := os.WriteFile(f, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Secret("", f)
	if err != nil || s != "from-file" {
		t.Fatalf("Secret = %q, %v", s, err)
	}
	if s, _ := Secret("inline", f); s != "inline" {
		t.Fatalf("inline should win, got %q", s)
	}
	if _, err := Secret("", filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestEnvFillsOnlyEmpty(t *testing.T) {
	cfg, err := parse([]byte("global:\n  server_name: file.example\n"), "c.yml", envOf(map[string]string{
		"MATRIX_SERVER_NAME": "env.example", "MATRIX_HOMESERVER_URL": "https://env.example",
		"MAS_SCOPES": "openid", "MAS_PUBLIC_URL": "https://mas.env.example",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Global.ServerName != "file.example" || cfg.Global.HomeserverURL != "https://env.example" ||
		cfg.MAS.Scopes != "openid" || cfg.MAS.PublicURL != "https://mas.env.example" {
		t.Fatalf("%+v %+v", cfg.Global, cfg.MAS)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"global:\n  concurrency: 3\n", "tenants: [{id: a}]", "probes:\n - type: login\n   timeout: 1d\n"} {
		f.Add([]byte(s), "")
	}
	f.Add([]byte(""), b64([]map[string]any{{"id": "x", "botUser": map[string]any{"password": "p"}}}))
	f.Fuzz(func(t *testing.T, data []byte, tenants string) {
		cfg, err := parse(data, "f.yml", envOf(map[string]string{"TENANTS_B64": tenants}))
		if err == nil && cfg == nil {
			t.Fatal("nil config without error")
		}
	})
}
