package masemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv"
)

// The emulator toward a Synapse that delegates authentication to it
// (matrix_authentication_service enabled): MAS's side of the contract.
//
//   - Synapse checks every access token at POST /oauth2/introspect, with the
//     shared secret as bearer (synapse/api/auth/mas.py _introspect_token);
//     MAS answers as crates/handlers/src/oauth2/introspection.rs post does.
//   - MAS provisions users and devices through Synapse's /_synapse/mas/*
//     (crates/matrix-synapse/src/modern.rs SynapseConnection): a user when it
//     is created (ProvisionUserJob, crates/tasks/src/matrix.rs), a device
//     synchronously before a token is handed out (oauth2/token.rs
//     authorization_code_grant, compat/login.rs), and the device list after
//     a session ends (SyncDevicesJob, run in the background).
//   - The Matrix front is the deployment's reverse proxy: login, logout and
//     refresh go to MAS's compatibility layer, everything else to Synapse,
//     tokens untouched, so Synapse alone judges them.

// synapseConn is MAS's connection to Synapse.
type synapseConn struct {
	url, secret string
	client      *http.Client
}

func (c *synapseConn) call(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.secret)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, b, fmt.Errorf("synapse %s: HTTP %d: %s", path, resp.StatusCode, b)
	}
	return resp.StatusCode, b, nil
}

// AttachSynapse makes s, configured with SynapseMAS(), the homeserver behind
// the emulator: users and devices are provisioned there and the Matrix front
// proxies to it.
func (e *Emulator) AttachSynapse(s *testenv.Synapse) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.syn = &synapseConn{url: s.URL, secret: e.synapseSecret, client: &http.Client{Timeout: 15 * time.Second}}
	e.synapse = s
}

// SynapseMAS is the matrix_authentication_service section a Synapse needs to
// delegate its authentication to this emulator.
func (e *Emulator) SynapseMAS() *testenv.SynapseMAS {
	return &testenv.SynapseMAS{Endpoint: e.MASURL + "/", Secret: e.synapseSecret}
}

// StartWithSynapse starts an emulator and a Synapse delegating to it (the
// deployment the platform runs), both stopped at the end of the test.
func StartWithSynapse(t testing.TB, opts Options, syn testenv.SynapseOptions) (*Emulator, *testenv.Synapse) {
	t.Helper()
	if opts.ServerName == "" {
		opts.ServerName = "localhost"
	}
	e, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	syn.MAS = e.SynapseMAS()
	syn.ServerName = opts.ServerName
	s := testenv.NewSynapse(t, syn)
	e.AttachSynapse(s)
	return e, s
}

// subOf is a user's stable subject (MAS's user ULID).
func subOf(localpart string) string {
	h := sha256.Sum256([]byte("sub:" + localpart))
	return strings.ToUpper(hex.EncodeToString(h[:13]))
}

// provisionUser creates or updates the Synapse user of a MAS user
// (ProvisionUserJob: provision_user with the display name; 201 created,
// 200 updated).
func (e *Emulator) provisionUser(ctx context.Context, localpart string) error {
	e.mu.Lock()
	c, u := e.syn, e.users[localpart]
	e.mu.Unlock()
	if c == nil || u == nil {
		return nil
	}
	body := map[string]any{"localpart": localpart, "locked": false}
	if u.displayName != "" {
		body["set_displayname"] = u.displayName
	}
	if u.email != "" {
		body["set_emails"] = []string{u.email}
	}
	if _, _, err := c.call(ctx, http.MethodPost, "/_synapse/mas/provision_user", body); err != nil {
		return err
	}
	e.mu.Lock()
	e.provisioned[localpart] = true
	e.stats.SynapseProvisions++
	e.mu.Unlock()
	return nil
}

// upsertDevice creates a device at Synapse before its token is handed out.
// A user not yet provisioned (created before a Synapse was attached) is
// provisioned first, as the user's ProvisionUserJob would have done.
func (e *Emulator) upsertDevice(ctx context.Context, localpart, device, name string) error {
	e.mu.Lock()
	c, done := e.syn, e.provisioned[localpart]
	e.mu.Unlock()
	if c == nil {
		return nil
	}
	if !done {
		if err := e.provisionUser(ctx, localpart); err != nil {
			return err
		}
	}
	body := map[string]any{"localpart": localpart, "device_id": device}
	if name != "" {
		body["display_name"] = name
	}
	_, _, err := c.call(ctx, http.MethodPost, "/_synapse/mas/upsert_device", body)
	if err == nil {
		e.mu.Lock()
		e.stats.SynapseDeviceUpserts++
		e.mu.Unlock()
	}
	return err
}

// syncDevicesLater runs a user's SyncDevicesJob in the background: Synapse
// keeps exactly the devices of the user's active sessions, so the device of
// an ended session goes, and with it Synapse's acceptance of its tokens
// (synapse/api/auth/mas.py get_user_by_access_token checks the device).
func (e *Emulator) syncDevicesLater(localpart string) {
	e.mu.Lock()
	c := e.syn
	if c == nil || e.closed {
		e.mu.Unlock()
		return
	}
	e.jobs.Add(1)
	e.mu.Unlock()
	go func() {
		defer e.jobs.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		e.mu.Lock()
		set := map[string]bool{}
		for _, s := range e.activeSessions(localpart) {
			if s.DeviceID != "" {
				set[s.DeviceID] = true
			}
		}
		e.mu.Unlock()
		devices := make([]string, 0, len(set))
		for d := range set {
			devices = append(devices, d)
		}
		sort.Strings(devices)
		_, _, err := c.call(ctx, http.MethodPost, "/_synapse/mas/sync_devices",
			map[string]any{"localpart": localpart, "devices": devices})
		e.mu.Lock()
		if err != nil {
			e.stats.SynapseSyncErrors++
		} else {
			e.stats.SynapseDeviceSyncs++
		}
		e.mu.Unlock()
	}()
}

// Matrix API scopes (introspection.rs: the stable and unstable forms are
// both given, whichever the session holds).
const (
	stableAPIScope      = "urn:matrix:client:api:*"
	unstableAPIScope    = "urn:matrix:org.matrix.msc2967.client:api:*"
	stableDevicePrefix  = "urn:matrix:client:device:"
	unstableDevicePrefx = "urn:matrix:org.matrix.msc2967.client:device:"
	// synapseAdminScope makes the requester a Synapse admin
	// (synapse/api/auth/mas.py is_server_admin; synapse-real.md). MAS
	// puts it in the introspection of a compatibility session made with
	// issue-compatibility-token's admin flag, and of no other.
	synapseAdminScope = "urn:synapse:admin:*"
)

// normalizeScope adds the stable and unstable equivalents of the API and
// device scopes (introspection.rs normalize_scope); the result is sorted,
// as MAS's scope is a BTreeSet.
func normalizeScope(scope string) string {
	set := map[string]bool{}
	for _, tok := range strings.Fields(scope) {
		set[tok] = true
		switch {
		case tok == stableAPIScope:
			set[unstableAPIScope] = true
		case tok == unstableAPIScope:
			set[stableAPIScope] = true
		case strings.HasPrefix(tok, stableDevicePrefix):
			set[unstableDevicePrefx+strings.TrimPrefix(tok, stableDevicePrefix)] = true
		case strings.HasPrefix(tok, unstableDevicePrefx):
			set[stableDevicePrefix+strings.TrimPrefix(tok, unstableDevicePrefx)] = true
		}
	}
	out := make([]string, 0, len(set))
	for tok := range set {
		out = append(out, tok)
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

// introspect is POST /oauth2/introspect (oauth2/introspection.rs post): the
// homeserver authenticates with the shared secret as bearer; a public
// client may not introspect. Every token that is unknown, of another type
// than its hint, expired, revoked or of an ended session is
// {"active": false}.
func (e *Emulator) introspect(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	switch {
	case strings.HasPrefix(auth, "Bearer "):
		if e.synapseSecret == "" || strings.TrimPrefix(auth, "Bearer ") != e.synapseSecret {
			oauthError(w, http.StatusUnauthorized, "access_denied", "bearer token presented is invalid")
			return
		}
	default:
		// Client credentials: an unknown client is invalid_client
		// (ClientNotFound); the emulator registers public clients only,
		// and those may not introspect (NotAllowed: access_denied).
		_ = r.ParseForm()
		e.mu.Lock()
		known := e.clients[r.PostForm.Get("client_id")] != nil
		e.mu.Unlock()
		if known {
			oauthError(w, http.StatusUnauthorized, "access_denied", "")
		} else {
			oauthError(w, http.StatusUnauthorized, "invalid_client", "")
		}
		return
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("token") == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "")
		return
	}
	// The token's type is read from its prefix (TokenType::check; MAS's
	// tokens also carry a checksum, which the emulator's do not).
	tok, hint := r.PostForm.Get("token"), r.PostForm.Get("token_type_hint")
	inactive := map[string]any{"active": false}
	kind := ""
	switch {
	case strings.HasPrefix(tok, "mat_"), strings.HasPrefix(tok, "mct_"):
		kind = "access_token"
	case strings.HasPrefix(tok, "mar_"), strings.HasPrefix(tok, "mcr_"):
		kind = "refresh_token"
	}
	if kind == "" || (hint != "" && hint != kind) {
		e.countIntrospection(false)
		writeJSON(w, http.StatusOK, inactive)
		return
	}
	explicitDevice := r.Header.Get("X-MAS-Supports-Device-Id") == "1"
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	if kind == "refresh_token" {
		rt := e.refresh[tok]
		if rt == nil || rt.revoked || rt.used || rt.session == nil || rt.session.finished || e.users[rt.user] == nil {
			e.stats.Introspections++
			writeJSON(w, http.StatusOK, inactive)
			return
		}
		e.stats.Introspections++
		e.stats.IntrospectionsActive++
		writeJSON(w, http.StatusOK, map[string]any{
			"active": true, "scope": normalizeScope(rt.session.scope), "client_id": rt.clientID,
			"username": rt.user, "token_type": "refresh_token", "sub": subOf(rt.user),
			"iat": rt.session.created.Unix(), "nbf": rt.session.created.Unix(),
		})
		return
	}
	a := e.access[tok]
	e.stats.Introspections++
	if a == nil || a.revoked || (!a.expires.IsZero() && !now.Before(a.expires)) ||
		(a.session != nil && a.session.finished) || (a.compat != nil && a.compat.finished) || e.users[a.user] == nil {
		writeJSON(w, http.StatusOK, inactive)
		return
	}
	a.used = true
	e.stats.IntrospectionsActive++
	reply := map[string]any{
		"active": true, "username": a.user, "token_type": "access_token", "sub": subOf(a.user),
	}
	if !a.expires.IsZero() {
		reply["exp"] = a.expires.Unix()
		reply["expires_in"] = int(a.expires.Sub(now) / time.Second)
	}
	if a.compat != nil {
		// Compatibility sessions: the API scopes, and the device either as
		// an explicit device_id (when the homeserver says it reads one) or
		// as a device scope.
		scope := []string{stableAPIScope, unstableAPIScope}
		if a.compat.synapseAdmin {
			scope = append(scope, synapseAdminScope)
		}
		reply["client_id"] = "legacy"
		if explicitDevice {
			reply["device_id"] = a.device
		} else {
			scope = append(scope, stableDevicePrefix+a.device, unstableDevicePrefx+a.device)
		}
		sort.Strings(scope)
		reply["scope"] = strings.Join(scope, " ")
	} else {
		reply["client_id"] = a.clientID
		reply["scope"] = normalizeScope(a.session.scope)
		reply["iat"] = a.session.created.Unix()
	}
	writeJSON(w, http.StatusOK, reply)
}

func (e *Emulator) countIntrospection(active bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.stats.Introspections++
	if active {
		e.stats.IntrospectionsActive++
	}
}

// compatLogout is POST /_matrix/client/v3/logout served by MAS
// (compat/logout.rs post): only a valid compatibility access token is
// accepted (anything else is M_UNKNOWN_TOKEN); its session ends and the
// user's devices are synced in the background.
func (e *Emulator) compatLogout(w http.ResponseWriter, r *http.Request) {
	tok := bearer(r)
	if tok == "" {
		matrixError(w, http.StatusUnauthorized, "M_MISSING_TOKEN", "Missing access token", nil)
		return
	}
	e.mu.Lock()
	a := e.access[tok]
	if a == nil || a.compat == nil || a.compat.finished || a.revoked ||
		(!a.expires.IsZero() && !e.now().Before(a.expires)) {
		e.mu.Unlock()
		matrixError(w, http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "Invalid access token", nil)
		return
	}
	a.compat.finished = true
	user := a.user
	e.mu.Unlock()
	e.syncDevicesLater(user)
	writeJSON(w, http.StatusOK, map[string]any{})
}

// CompatPasswordLogin logs a MAS user with a password (SetMASPassword) in
// through the Matrix front's compatibility login, as a client would, and
// returns the access token (a test's way to act as a user of a
// MAS-delegated homeserver, which has no shared-secret registration).
func (e *Emulator) CompatPasswordLogin(ctx context.Context, localpart, password string) (string, error) {
	body, _ := json.Marshal(map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": localpart},
		"password": password,
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.HomeserverURL+"/_matrix/client/v3/login", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &out) != nil || out.AccessToken == "" {
		return "", fmt.Errorf("compat login of %s: HTTP %d: %s", localpart, resp.StatusCode, b)
	}
	return out.AccessToken, nil
}

// RevokeUserSessions ends every session of a user, as an administrator
// does in MAS (admin API oauth2_sessions/compat_sessions finish): the
// tokens are dead at once for MAS, and the user's devices are synced to
// Synapse in the background (SyncDevicesJob).
func (e *Emulator) RevokeUserSessions(localpart string) int {
	e.mu.Lock()
	n := 0
	for _, s := range e.oauthSessions {
		if s.user == localpart && !s.finished {
			s.finished = true
			n++
		}
	}
	for _, s := range e.compatSess {
		if s.user == localpart && !s.finished {
			s.finished = true
			n++
		}
	}
	e.mu.Unlock()
	e.syncDevicesLater(localpart)
	return n
}

// ProvisionUser provisions a MAS user at the attached Synapse now, as MAS's
// ProvisionUserJob does when a user is created (users made by
// SetMASPassword or LinkUpstreamUser are otherwise provisioned at their
// first login).
func (e *Emulator) ProvisionUser(ctx context.Context, localpart string) error {
	return e.provisionUser(ctx, localpart)
}

// IssueCompatibilityToken is an operator's
// `mas-cli manage issue-compatibility-token <user>` (with admin:
// --yes-i-want-to-grant-synapse-admin-privileges): a compatibility session
// on a new device, provisioned at the homeserver, whose access token never
// expires; an admin session's introspection carries urn:synapse:admin:*, so
// Synapse serves its admin API to it. The MAS user must exist.
func (e *Emulator) IssueCompatibilityToken(ctx context.Context, localpart string, admin bool) (string, error) {
	e.mu.Lock()
	known := e.users[localpart] != nil
	e.mu.Unlock()
	if !known {
		return "", fmt.Errorf("masemu: no MAS user %q", localpart)
	}
	device := ulid()
	if err := e.upsertDevice(ctx, localpart, device, ""); err != nil {
		return "", err
	}
	cs := &compatSession{id: ulid(), user: localpart, device: device, synapseAdmin: admin}
	a := &accessToken{token: random("mct_"), user: localpart, device: device, compat: cs}
	e.mu.Lock()
	e.compatSess = append(e.compatSess, cs)
	e.access[a.token] = a
	e.mu.Unlock()
	return a.token, nil
}
