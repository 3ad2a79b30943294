package config

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// encodings are the ways a TENANTS_B64 value reaches mxprobe: as the
// platform's examples write it, without padding, URL-safe, wrapped by
// `base64` at 76 columns, quoted by an env file, with stray whitespace.
func encodings(raw []byte) map[string]string {
	std := base64.StdEncoding.EncodeToString(raw)
	var wrapped strings.Builder
	for i := 0; i < len(std); i += 76 {
		end := min(i+76, len(std))
		wrapped.WriteString(std[i:end] + "\n")
	}
	return map[string]string{
		"std":     std,
		"raw":     base64.RawStdEncoding.EncodeToString(raw),
		"url":     base64.URLEncoding.EncodeToString(raw),
		"rawurl":  base64.RawURLEncoding.EncodeToString(raw),
		"wrapped": wrapped.String(),
		"quoted":  `"` + std + `"`,
		"spaces":  "  " + std[:10] + " \t" + std[10:] + "\r\n",
	}
}

func readShipped(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/openmeet/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The arrays the platform ships start: every entry skipped, each reported,
// nothing fatal.
func TestTenantsB64ShippedExamples(t *testing.T) {
	cases := map[string][]SkippedTenant{
		"relational.json": {
			{Index: 0, Name: "Public", Reason: SkipEmptyID},
			{Index: 1, ID: "1", Name: "OpenMeet", Reason: SkipNoBot},
			{Index: 2, ID: "testing", Name: "Testing", Reason: SkipNoBot},
		},
		"relational-ci.json": {
			{Index: 0, Name: "Public", Reason: SkipEmptyID},
			{Index: 1, ID: "ciTenantA", Name: "Tenant A", Reason: SkipNoBot},
			{Index: 2, ID: "ciTenantB", Name: "Tenant B", Reason: SkipNoBot},
		},
	}
	for file, want := range cases {
		for enc, value := range encodings(readShipped(t, file)) {
			t.Run(file+"/"+enc, func(t *testing.T) {
				cfg, err := parse(nil, "", envOf(map[string]string{"TENANTS_B64": value, "MATRIX_HOMESERVER_URL": "https://matrix.example.net"}))
				if err != nil {
					t.Fatalf("shipped example refused:\n%v", err)
				}
				if len(cfg.Tenants) != 0 {
					t.Fatalf("tenants: %+v", cfg.Tenants)
				}
				if !reflect.DeepEqual(cfg.Skipped, want) {
					t.Fatalf("skipped:\n got %+v\nwant %+v", cfg.Skipped, want)
				}
			})
		}
	}
	s := SkippedTenant{Index: 0, Name: "Public", Reason: SkipEmptyID}.String()
	if !strings.Contains(s, "TENANTS_B64[0]") || !strings.Contains(s, "empty id") {
		t.Errorf("empty id message: %q", s)
	}
	s = SkippedTenant{Index: 2, ID: "ciTenantB", Reason: SkipNoBot}.String()
	if !strings.Contains(s, `TENANTS_B64[2] (id "ciTenantB")`) || !strings.Contains(s, "no bot") {
		t.Errorf("no bot message: %q", s)
	}
}

const masYAML = `
mas:
  redirect_uri: http://localhost:9005/auth/matrix/callback
  upstream:
    api_url: https://api.example.net
`

func productionEnv(extra map[string]string) func(string) string {
	raw, _ := os.ReadFile("testdata/openmeet/production.json")
	env := map[string]string{
		"TENANTS_B64":           base64.StdEncoding.EncodeToString(raw),
		"MATRIX_HOMESERVER_URL": "https://matrix.example.net",
		"MATRIX_SERVER_NAME":    "example.net",
	}
	for k, v := range extra {
		env[k] = v
	}
	return envOf(env)
}

func TestTenantsB64Production(t *testing.T) {
	cfg, err := parse([]byte(masYAML), "f.yml", productionEnv(map[string]string{"MAS_PUBLIC_BASE": "https://mas.example.net"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MAS.PublicURL != "https://mas.example.net" {
		t.Errorf("MAS_PUBLIC_BASE not read: %q", cfg.MAS.PublicURL)
	}
	got := map[string]Account{}
	for _, tn := range cfg.Tenants {
		got[tn.ID] = tn.Bot
	}
	if len(got) != 4 {
		t.Fatalf("tenants: %+v", cfg.Tenants)
	}
	check := func(id, method, user, matrixUser, email, secret string) {
		t.Helper()
		b := got[id]
		if b.Method != method || b.User != user || b.MatrixUser != matrixUser || b.Email != email {
			t.Errorf("%s: method %q user %q matrix_user %q email %q; want %q %q %q %q", id, b.Method, b.User, b.MatrixUser, b.Email, method, user, matrixUser, email)
		}
		if s := string(b.Password) + string(b.AccessToken); s != secret {
			t.Errorf("%s: secret %q, want %q", id, s, secret)
		}
	}
	// matrixConfig.botUser, email lower-cased, the provider's localpart rule.
	check("acme", MethodMASOIDC, "openmeet-bot-acme", "openmeet-bot-acme_acme", "bot-acme@openmeet.net", "acme-bot-pw-TESTSECRET")
	// The July 2025 top-level botUser.
	check("legacy", MethodMASOIDC, "openmeet-bot-legacy", "openmeet-bot-legacy_legacy", "bot-legacy@openmeet.net", "legacy-bot-pw-TESTSECRET")
	// Both: matrixConfig.botUser wins; the tenant id is lower-cased in the localpart.
	check("Both", MethodMASOIDC, "openmeet-bot-both", "openmeet-bot-both_both", "bot-both@openmeet.net", "both-bot-pw-TESTSECRET")
	// Only an application service: its token, acting as its sender.
	check("asonly", MethodAppService, "openmeet-appservice-asonly", "", "bot-asonly@openmeet.net", "as-token-TESTSECRET")
	want := []SkippedTenant{{Index: 0, Name: "Public", Reason: SkipEmptyID}, {Index: 5, ID: "nobot", Name: "No bot", Reason: SkipNoBot}}
	if !reflect.DeepEqual(cfg.Skipped, want) {
		t.Errorf("skipped %+v, want %+v", cfg.Skipped, want)
	}
	js, _ := json.Marshal(cfg)
	if strings.Contains(string(js), "TESTSECRET") {
		t.Fatalf("secret in the JSON rendering: %s", js)
	}

	// Without MAS the global default applies; an explicit global method wins over mas_oidc.
	for name, c := range map[string]struct {
		yaml string
		env  map[string]string
		want string
	}{
		"no MAS":          {"", nil, MethodPassword},
		"explicit method": {masYAML + "global:\n  login_method: password\n", map[string]string{"MAS_PUBLIC_URL": "https://mas.example.net"}, MethodPassword},
	} {
		cfg, err := parse([]byte(c.yaml), "f.yml", productionEnv(c.env))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		tn, _ := cfg.Tenant("acme")
		if tn.Bot.Method != c.want || tn.Bot.MatrixUser != "" {
			t.Errorf("%s: method %q matrix_user %q, want %q and none", name, tn.Bot.Method, tn.Bot.MatrixUser, c.want)
		}
	}
}

func TestMASPublicBaseFallback(t *testing.T) {
	cfg, err := parse(nil, "", envOf(map[string]string{"MAS_PUBLIC_URL": "https://a.example.net", "MAS_PUBLIC_BASE": "https://b.example.net"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MAS.PublicURL != "https://a.example.net" {
		t.Errorf("MAS_PUBLIC_URL should win over MAS_PUBLIC_BASE: %q", cfg.MAS.PublicURL)
	}
	cfg, err = parse([]byte("mas:\n  public_url: https://file.example.net\n"), "f.yml", envOf(map[string]string{"MAS_PUBLIC_BASE": "https://b.example.net"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MAS.PublicURL != "https://file.example.net" {
		t.Errorf("the file should win: %q", cfg.MAS.PublicURL)
	}
	cfg, err = parse(nil, "", envOf(map[string]string{"BACKEND_DOMAIN": "https://api.example.net"}))
	if err != nil || cfg.MAS.Upstream.APIURL != "https://api.example.net" {
		t.Errorf("BACKEND_DOMAIN not read as mas.upstream.api_url: %v %+v", err, cfg.MAS.Upstream)
	}
}

func TestMatrixUserOverride(t *testing.T) {
	y := masYAML + `
global:
  homeserver_url: https://matrix.example.net
  server_name: example.net
  login_method: mas_oidc
tenants:
  - id: Acme
    bot: {email: Bot@Example.NET, password: pw}
  - id: stated
    bot: {user: openmeet-bot-stated, email: d@example.net, password: pw}
  - id: handle
    bot: {user: openmeet-bot-handle, email: b@example.net, password: pw, matrix_user: acmebot}
  - id: full
    bot: {user: openmeet-bot-full, email: c@example.net, password: pw, matrix_user: "@acmebot:other.example"}
  - id: pw
    bot: {method: password, user: openmeet-bot-pw, password: pw}
`
	cfg, err := parse([]byte(y), "f.yml", envOf(map[string]string{"MAS_PUBLIC_URL": "https://mas.example.net"}))
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{"Acme": "openmeet-bot-acme_acme", "handle": "acmebot", "full": "@acmebot:other.example", "pw": "", "stated": "openmeet-bot-stated_stated"} {
		tn, _ := cfg.Tenant(id)
		if tn.Bot.MatrixUser != want {
			t.Errorf("%s: matrix_user %q, want %q", id, tn.Bot.MatrixUser, want)
		}
	}
	// A file tenant without a user has the default slug, openmeet-bot-<id>;
	// one that names its user names the slug too (issue 22, done-when 6).
	if tn, _ := cfg.Tenant("Acme"); tn.Bot.User != "openmeet-bot-Acme" || tn.Bot.Email != "bot@example.net" {
		t.Errorf("email not lower-cased: %q", tn.Bot.Email)
	}
	// The tenant header override is the tenant id the provider sees.
	cfg, err = parse([]byte(strings.Replace(y, "api_url: https://api.example.net", "api_url: https://api.example.net\n    tenant_id: XYZ", 1)), "f.yml",
		envOf(map[string]string{"MAS_PUBLIC_URL": "https://mas.example.net"}))
	if err != nil {
		t.Fatal(err)
	}
	if tn, _ := cfg.Tenant("Acme"); tn.Bot.MatrixUser != "openmeet-bot-acme_xyz" {
		t.Errorf("with tenant_id: %q", tn.Bot.MatrixUser)
	}
	bad := strings.Replace(y, "matrix_user: acmebot", "matrix_user: \"@acmebot\"", 1)
	bad = strings.Replace(bad, `matrix_user: "@acmebot:other.example"`, "matrix_user: a:b", 1)
	_, err = parse([]byte(bad), "f.yml", envOf(map[string]string{"MAS_PUBLIC_URL": "https://mas.example.net"}))
	if err == nil || !strings.Contains(err.Error(), `tenant "handle": bot.matrix_user: a full user id is @localpart:server`) ||
		!strings.Contains(err.Error(), `tenant "full": bot.matrix_user: a localpart`) {
		t.Fatalf("bad matrix_user accepted or badly reported: %v", err)
	}
}

func TestAppServiceConfig(t *testing.T) {
	env := map[string]string{
		"MATRIX_HOMESERVER_URL": "https://matrix.example.net", "MATRIX_SERVER_NAME": "example.net",
		"MATRIX_APPSERVICE_ID": "openmeet-appservice", "MATRIX_APPSERVICE_TOKEN": "as-TESTSECRET",
	}
	y := `
tenants:
  - id: asbot
    bot: {method: appservice, user: openmeet-bot-asbot}
  - id: own
    bot: {method: appservice, access_token_file: /run/secrets/as}
`
	cfg, err := parse([]byte(y), "f.yml", envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Tenants) != 3 {
		t.Fatalf("tenants: %+v", cfg.Tenants)
	}
	as, ok := cfg.Tenant(DefaultAppServiceTenant)
	if !ok || as.Bot.Method != MethodAppService || as.Bot.User != "openmeet-appservice" || as.Bot.AccessToken != "as-TESTSECRET" ||
		as.HomeserverURL != "https://matrix.example.net" || cfg.TenantSources[as.ID] != "appservice section" {
		t.Fatalf("appservice tenant: %+v", as)
	}
	if tn, _ := cfg.Tenant("asbot"); tn.Bot.User != "openmeet-bot-asbot" || tn.Bot.AccessToken != "as-TESTSECRET" {
		t.Errorf("asbot: %+v", tn.Bot)
	}
	if tn, _ := cfg.Tenant("own"); tn.Bot.User != "openmeet-appservice" || tn.Bot.AccessToken != "" || tn.Bot.AccessTokenFile != "/run/secrets/as" {
		t.Errorf("own: %+v", tn.Bot)
	}
	js, _ := json.Marshal(cfg)
	if strings.Contains(string(js), "TESTSECRET") {
		t.Fatalf("secret in the JSON rendering: %s", js)
	}

	// Renamed, disabled, colliding, missing token or user.
	cfg, err = parse([]byte("appservice:\n  tenant: platform-bot\n"), "f.yml", envOf(env))
	if err != nil || len(cfg.Tenants) != 1 || cfg.Tenants[0].ID != "platform-bot" {
		t.Fatalf("renamed: %v %+v", err, cfg)
	}
	cfg, err = parse([]byte("appservice:\n  disabled: true\n"), "f.yml", envOf(env))
	if err != nil || len(cfg.Tenants) != 0 {
		t.Fatalf("disabled: %v %+v", err, cfg)
	}
	_, err = parse([]byte("tenants:\n  - id: appservice\n    bot: {password: x}\n"), "f.yml", envOf(env))
	if err == nil || !strings.Contains(err.Error(), `appservice.tenant: tenant id "appservice" is also defined in the file`) {
		t.Fatalf("collision: %v", err)
	}
	_, err = parse([]byte("tenants:\n  - id: a\n    bot: {method: appservice}\n"), "f.yml",
		envOf(map[string]string{"MATRIX_HOMESERVER_URL": "https://matrix.example.net"}))
	if err == nil || !strings.Contains(err.Error(), `tenant "a": bot.access_token: missing: the as_token`) ||
		!strings.Contains(err.Error(), `tenant "a": bot.user: missing: the user to act as`) {
		t.Fatalf("missing token and user: %v", err)
	}
	if strings.Contains(err.Error(), "TESTSECRET") {
		t.Fatal("secret echoed")
	}
}

// decodeBase64 accepts what Node's Buffer.from(s, "base64") accepts in
// practice, and names the position of anything else.
func TestDecodeBase64Lenient(t *testing.T) {
	raw := []byte(`[{"id":"a?b>c","name":"ü~"}]`) // bytes that need + and / (or - and _)
	std := base64.StdEncoding.EncodeToString(raw)
	if !strings.ContainsAny(std, "+/") {
		t.Fatalf("test value %q has no + or /", std)
	}
	url := base64.URLEncoding.EncodeToString(raw)
	mixed := []byte(url)
	for i, c := range std { // keep the standard characters in the first half
		if i < len(std)/2 {
			mixed[i] = byte(c)
		}
	}
	for name, v := range map[string]string{
		"std": std, "url": url, "mixed": string(mixed), "no padding": strings.TrimRight(std, "="),
		"tabs and CRLF": "\t" + std[:4] + "\r\n" + std[4:] + "\n", "single quotes": "'" + std + "'",
	} {
		got, err := decodeBase64(v)
		if err != nil || string(got) != string(raw) {
			t.Errorf("%s: %q, %v", name, got, err)
		}
	}
	for name, c := range map[string]struct{ v, want string }{
		"bad character":     {std[:8] + "*" + std[9:], "illegal data at byte 8"},
		"data after =":      {std + "QQ", "illegal data at byte"},
		"one char too many": {"QUFBQ", "illegal data at byte 4"},
	} {
		if _, err := decodeBase64(c.v); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

// TENANTS_B64 entries carry no mxprobe settings: tenant_overrides adjusts
// them by id (a registered handle as the expected user, another method).
func TestTenantOverrides(t *testing.T) {
	y := masYAML + `
tenant_overrides:
  acme: {matrix_user: acmebot}
  legacy: {method: password}
`
	cfg, err := parse([]byte(y), "f.yml", productionEnv(map[string]string{"MAS_PUBLIC_BASE": "https://mas.example.net"}))
	if err != nil {
		t.Fatal(err)
	}
	acme, _ := cfg.Tenant("acme")
	legacy, _ := cfg.Tenant("legacy")
	if acme.Bot.MatrixUser != "acmebot" || acme.Bot.Method != MethodMASOIDC {
		t.Errorf("acme: %+v", acme.Bot)
	}
	if legacy.Bot.Method != MethodPassword || legacy.Bot.MatrixUser != "" {
		t.Errorf("legacy: %+v", legacy.Bot)
	}
	_, err = parse([]byte(masYAML+"tenant_overrides:\n  nobot: {method: password}\n  ghost: {method: password}\n  acme: {method: bogus}\n"), "f.yml",
		productionEnv(map[string]string{"MAS_PUBLIC_BASE": "https://mas.example.net"}))
	for _, want := range []string{
		`f.yml: tenant_overrides.ghost: no such tenant`,
		`f.yml: tenant_overrides.nobot: no such tenant (TENANTS_B64[5] is skipped: no_bot)`,
		`TENANTS_B64[1] (id "acme"): bot.method: unknown method "bogus"`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in %v", want, err)
		}
	}
}

// The example configuration for OpenMeet loads with the platform's
// environment: its TENANTS_B64, MAS under MAS_PUBLIC_BASE, the platform API
// under BACKEND_DOMAIN, the application service.
func TestOpenMeetExampleConfig(t *testing.T) {
	cfg, err := load("testdata/openmeet/mxprobe.yml", productionEnv(map[string]string{
		"MAS_PUBLIC_BASE": "https://mas.example.net", "BACKEND_DOMAIN": "https://api.example.net",
		"MATRIX_APPSERVICE_ID": "openmeet-appservice", "MATRIX_APPSERVICE_TOKEN": "as-TESTSECRET",
	}), Kind{Name: "http", Schedule: "@every 30s", Timeout: 10 * time.Second, SettingsKey: "http"}) // probes/httpcheck decodes and checks its settings
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, tn := range cfg.Tenants {
		ids = append(ids, tn.ID+":"+tn.Bot.Method)
	}
	if got := strings.Join(ids, " "); got != "acme:mas_oidc legacy:mas_oidc Both:mas_oidc asonly:appservice platform-bot:appservice" {
		t.Errorf("tenants %s", got)
	}
	if tn, _ := cfg.Tenant("acme"); tn.Bot.MatrixUser != "acmebot" {
		t.Errorf("acme: %+v", tn.Bot)
	}
	if tn, _ := cfg.Tenant("platform-bot"); tn.Bot.User != "openmeet-appservice" {
		t.Errorf("platform-bot: %+v", tn.Bot)
	}
	if p, _ := cfg.Probe("openmeet_matrix"); p.PerTenant() || p.SettingsNode("http") == nil {
		t.Errorf("http probe: %+v", p)
	}
	if len(cfg.Skipped) != 2 {
		t.Errorf("skipped: %+v", cfg.Skipped)
	}
}

// TestTenantIDCharset: a tenant id outside letters, digits and ._- (a Slack
// mention, markup, a newline, a space, an over-long one) is a config error
// naming the entry for file tenants, and a reported skip for TENANTS_B64;
// the platform's own ids pass.
func TestTenantIDCharset(t *testing.T) {
	bad := []string{"ops<!channel>", "a b", "x\ny", "é", "a/b", strings.Repeat("a", MaxTenantIDLength+1)}
	for _, id := range bad {
		doc := fmt.Sprintf("global: {homeserver_url: https://m.example.org}\ntenants:\n  - {id: %q, bot: {user: bot, password: pw}}\n", id)
		_, err := parse([]byte(doc), "mx.yml", envOf(nil))
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("mx.yml:3: tenant %q: id: %s", id, TenantIDRule)) {
			t.Errorf("file tenant %q: %v", id, err)
		}
	}
	var entries []map[string]any
	for _, id := range append([]string{"1", "testing", "acme.eu_2-b"}, bad...) {
		entries = append(entries, map[string]any{"id": id, "name": "N", "botUser": map[string]any{"slug": "s", "email": "e@x", "password": "p"}})
	}
	raw, err := json.Marshal(entries)
	if err != nil {
		t.Fatal(err)
	}
	tenants, skipped, errs := ParseTenantsB64Skipped(base64.StdEncoding.EncodeToString(raw), "")
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	if len(tenants) != 3 {
		t.Fatalf("tenants %v", tenants)
	}
	if len(skipped) != len(bad) {
		t.Fatalf("skipped %v", skipped)
	}
	for i, s := range skipped {
		if s.Reason != SkipBadID || s.Index != 3+i || !strings.Contains(s.String(), fmt.Sprintf("TENANTS_B64[%d]", 3+i)) {
			t.Errorf("skip %d: %+v %s", i, s, s)
		}
	}
}
