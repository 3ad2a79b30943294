package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWebHardeningSettings: short tokens, a metrics token without
// protect_reads, bad proxy ranges and anonymous /probe modules that are not
// configured are refused with the field named; good values parse (the cap of
// synapse.max_body_bytes is probes/synapse's TestSettingsErrors).
func TestWebHardeningSettings(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("abc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := `probes:
  - name: versions
    type: versions
web:
  api_token: short-SECRET
  metrics_token_file: ` + short + `
  probe_anonymous_modules: [versions, roundtrip]
  trusted_proxies: [10.0.0.0/8, not-an-address]
  run_floor: -1s
`
	_, err := parse([]byte(bad), "mx.yml", envOf(nil))
	if err == nil {
		t.Fatal("bad web settings accepted")
	}
	msg := err.Error()
	for _, want := range []string{
		"web.api_token: the token is 12 characters long, use at least 16",
		"web.metrics_token_file: the token in " + short + " is 3 characters long",
		"web.metrics_token: only used with protect_reads: true",
		`web.probe_anonymous_modules: no probe named "roundtrip" is configured`,
		`web.trusted_proxies: "not-an-address" is neither an address nor a CIDR range`,
		`mx.yml:9: invalid duration "-1s"`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "short-SECRET") {
		t.Fatal("token echoed")
	}
	good := `probes:
  - name: versions
    type: versions
web:
  api_token: a-long-enough-api-token
  protect_reads: true
  metrics_token: a-long-enough-scrape-token
  probe_anonymous_modules: [versions]
  trusted_proxies: [10.0.0.0/8, "::1"]
  cookie_secure: true
  run_floor: 10s
`
	cfg, err := parse([]byte(good), "mx.yml", envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	px, err := cfg.Web.Proxies()
	if err != nil || len(px) != 2 || px[1].String() != "::1/128" {
		t.Fatalf("proxies %v %v", px, err)
	}
	if m, _ := cfg.Web.MetricsTokenValue(); m != "a-long-enough-scrape-token" || cfg.Web.Floor().D().Seconds() != 10 || !*cfg.Web.CookieSecure {
		t.Fatalf("web: %+v", cfg.Web)
	}
}

// TestPlaceholderAndWeakTokensRefused: the placeholder the deploy examples
// ship, other placeholders and long but patterned tokens are refused as api
// and metrics tokens, inline or from a file; the error names the file and
// never the value. A random token passes.
func TestPlaceholderAndWeakTokensRefused(t *testing.T) {
	dir := t.TempDir()
	for _, tok := range []string{
		"replace-with-the-output-of-openssl-rand-hex-32", // deploy/kubernetes/api-token as shipped
		"CHANGEME-CHANGEME-CHANGEME",
		"<your-api-token-goes-here>",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
		"abababababababababababababababab",
		"12341234123412341234",
	} {
		file := filepath.Join(dir, "api-token")
		if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		for _, doc := range []string{
			"web:\n  api_token_file: " + file + "\n",
			"web:\n  api_token: " + tok + "\n",
			"web:\n  api_token: 9f86d081884c7d659a2feaa0c55ad015\n  protect_reads: true\n  metrics_token_file: " + file + "\n",
		} {
			_, err := parse([]byte(doc), "mx.yml", envOf(nil))
			if err == nil {
				t.Errorf("token %q accepted:\n%s", tok, doc)
				continue
			}
			msg := err.Error()
			if strings.Contains(msg, tok) {
				t.Errorf("token echoed: %s", msg)
			}
			if strings.Contains(doc, file) && !strings.Contains(msg, "the token in "+file+" ") {
				t.Errorf("file not named: %s", msg)
			}
			if !strings.Contains(msg, "placeholder") && !strings.Contains(msg, "too little entropy") && !strings.Contains(msg, "pattern") {
				t.Errorf("no reason given: %s", msg)
			}
		}
	}
	// openssl rand -hex 16 and -hex 32.
	for _, tok := range []string{"9f86d081884c7d659a2feaa0c55ad015", "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"} {
		if why := WeakToken(tok); why != "" {
			t.Errorf("random token refused: %s", why)
		}
	}
}
