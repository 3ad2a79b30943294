package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWebConfig(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret-token-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := "web:\n  api_token_file: " + tokenFile + "\n  protect_reads: true\n  title: Ops <b>\n"
	cfg, err := parse([]byte(good), "mx.yml", envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := cfg.Web.Token()
	if err != nil || tok != "s3cret-token-0123456789" {
		t.Fatalf("token = %q, %v", tok, err)
	}
	if cfg.Web.SparklineRuns != DefaultSparklineRuns || cfg.Web.Refresh().D().Seconds() != 30 || cfg.Web.Title != "Ops <b>" {
		t.Fatalf("defaults: %+v", cfg.Web)
	}

	bad := "global:\n  concurrency: 2\nweb:\n  api_token: inline-secret-value\n  api_token_file: " + tokenFile + "\n  sparkline_runs: -1\n"
	_, err = parse([]byte(bad), "mx.yml", envOf(nil))
	if err == nil {
		t.Fatal("bad web config accepted")
	}
	msg := err.Error()
	for _, want := range []string{"mx.yml:4: web.api_token: api_token and api_token_file are mutually exclusive", "mx.yml:4: web.sparkline_runs: must be positive"} {
		if !strings.Contains(msg, want) {
			t.Errorf("missing %q in:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "inline-secret-value") {
		t.Errorf("secret echoed in errors:\n%s", msg)
	}

	_, err = parse([]byte("web:\n  protect_reads: true\n"), "mx.yml", envOf(nil))
	if err == nil || !strings.Contains(err.Error(), "mx.yml:2: web.protect_reads: needs api_token or api_token_file") {
		t.Fatalf("protect_reads without token: %v", err)
	}
	_, err = parse([]byte("web:\n  api_token_file: "+filepath.Join(dir, "nope")+"\n"), "mx.yml", envOf(nil))
	if err == nil || !strings.Contains(err.Error(), "web.api_token_file: cannot read the token file") {
		t.Fatalf("missing token file: %v", err)
	}
}
