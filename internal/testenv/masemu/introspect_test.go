package masemu

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// introspectAs posts a token to /oauth2/introspect with the given bearer
// (and the device-id header when explicit) and returns status and reply.
func introspectAs(t *testing.T, e *Emulator, bearer, token, hint string, explicit bool) (int, map[string]any) {
	t.Helper()
	form := url.Values{"token": {token}}
	if hint != "" {
		form.Set("token_type_hint", hint)
	}
	req, _ := http.NewRequest(http.MethodPost, e.MASURL+"/oauth2/introspect", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	if explicit {
		req.Header.Set("X-MAS-Supports-Device-Id", "1")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// oauth2/introspection.rs post: the homeserver's bearer must be the shared
// secret and clients without credentials are refused; compat tokens carry
// the API scopes in both forms and the device as a scope, or as device_id
// when the homeserver says it reads one; an ended session, an expired
// token, another type than the hint, or an unknown token is inactive.
func TestIntrospectionRules(t *testing.T) {
	e, c := start(t, Options{AccessTTL: time.Minute})
	e.SetMASPassword("alice", "pw")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := e.CompatPasswordLogin(ctx, "alice", "pw")
	if err != nil {
		t.Fatal(err)
	}
	secret := e.SynapseMAS().Secret

	if code, out := introspectAs(t, e, "", tok, "", false); code != http.StatusUnauthorized || out["error"] != "invalid_client" {
		t.Errorf("no credentials: %d %v", code, out)
	}
	// A registered (public) client may not introspect.
	form := url.Values{"token": {tok}, "client_id": {clientID(t, e)}}
	resp, err := http.PostForm(e.MASURL+"/oauth2/introspect", form)
	if err != nil {
		t.Fatal(err)
	}
	var denied map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&denied)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || denied["error"] != "access_denied" {
		t.Errorf("public client: %d %v", resp.StatusCode, denied)
	}
	if code, out := introspectAs(t, e, "not-the-secret", tok, "", false); code != http.StatusUnauthorized || out["error"] != "access_denied" {
		t.Errorf("wrong bearer: %d %v", code, out)
	}

	code, out := introspectAs(t, e, secret, tok, "access_token", false)
	scope, _ := out["scope"].(string)
	if code != 200 || out["active"] != true || out["username"] != "alice" || out["client_id"] != "legacy" ||
		!strings.Contains(scope, "urn:matrix:client:api:*") || !strings.Contains(scope, "urn:matrix:org.matrix.msc2967.client:api:*") ||
		!strings.Contains(scope, "urn:matrix:client:device:") || out["device_id"] != nil {
		t.Errorf("compat token: %d %v", code, out)
	}
	_, out = introspectAs(t, e, secret, tok, "", true)
	scope, _ = out["scope"].(string)
	if dev, _ := out["device_id"].(string); dev == "" || strings.Contains(scope, ":device:") {
		t.Errorf("explicit device id: %v", out)
	}
	if _, out := introspectAs(t, e, secret, tok, "refresh_token", false); out["active"] != false {
		t.Errorf("access token under a refresh hint: %v", out)
	}
	if _, out := introspectAs(t, e, secret, "mat_unknown", "", false); out["active"] != false || len(out) != 1 {
		t.Errorf("unknown token: %v", out)
	}
	// Compatibility tokens have no expiry (introspection.rs gives none,
	// and Synapse treats a missing expires_in as never expiring).
	c.add(2 * time.Minute)
	if _, out := introspectAs(t, e, secret, tok, "", false); out["active"] != true || out["expires_in"] != nil {
		t.Errorf("compat token after two minutes: %v", out)
	}
	// Logout at the front (MAS's compat logout) ends the session.
	req, _ := http.NewRequest(http.MethodPost, e.HomeserverURL+"/_matrix/client/v3/logout", strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, out := introspectAs(t, e, secret, tok, "", false); resp.StatusCode != 200 || out["active"] != false {
		t.Errorf("after logout (HTTP %d): %v", resp.StatusCode, out)
	}
}

// normalize_scope: the stable and unstable forms of the API and device
// scopes are both given.
func TestNormalizeScope(t *testing.T) {
	got := normalizeScope("openid urn:matrix:client:api:* urn:matrix:org.matrix.msc2967.client:device:ABC")
	want := "openid urn:matrix:client:api:* urn:matrix:client:device:ABC urn:matrix:org.matrix.msc2967.client:api:* urn:matrix:org.matrix.msc2967.client:device:ABC"
	if got != want {
		t.Fatalf("normalizeScope = %q\nwant %q", got, want)
	}
}

// StopMAS then StartMAS: MAS refuses connections meanwhile and the front
// answers its login 502; afterwards it is back on the same address with its
// state, so a token issued before the outage is active again, and an
// operator's admin compatibility token carries Synapse's admin scope.
func TestMASOutageKeepsState(t *testing.T) {
	e, _ := start(t, Options{})
	e.SetMASPassword("alice", "pw")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := e.CompatPasswordLogin(ctx, "alice", "pw")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := e.IssueCompatibilityToken(ctx, "alice", true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.IssueCompatibilityToken(ctx, "nobody", false); err == nil {
		t.Error("a compatibility token for a user MAS does not have")
	}
	secret, before := e.SynapseMAS().Secret, e.MASURL
	e.StopMAS()
	if resp, err := http.PostForm(e.MASURL+"/oauth2/introspect", url.Values{"token": {tok}}); err == nil {
		resp.Body.Close()
		t.Fatalf("MAS answered while down: %d", resp.StatusCode)
	}
	if _, err := e.CompatPasswordLogin(ctx, "alice", "pw"); err == nil || !strings.Contains(err.Error(), "HTTP 502") {
		t.Errorf("compat login while MAS is down: %v", err)
	}
	if err := e.StartMAS(); err != nil {
		t.Fatal(err)
	}
	if e.MASURL != before {
		t.Errorf("MAS moved from %s to %s", before, e.MASURL)
	}
	if code, out := introspectAs(t, e, secret, tok, "access_token", false); code != 200 || out["active"] != true {
		t.Errorf("token of before the outage: %d %v", code, out)
	}
	code, out := introspectAs(t, e, secret, admin, "access_token", false)
	if scope, _ := out["scope"].(string); code != 200 || out["active"] != true || !strings.Contains(scope, "urn:synapse:admin:*") {
		t.Errorf("admin compatibility token: %d %v", code, out)
	}
	if code, out := introspectAs(t, e, secret, tok, "access_token", false); strings.Contains(out["scope"].(string), "urn:synapse:admin:*") {
		t.Errorf("a user's own login is admin: %d %v", code, out)
	}
	if _, err := e.CompatPasswordLogin(ctx, "alice", "pw"); err != nil {
		t.Errorf("compat login after the outage: %v", err)
	}
}
