package masemu

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"
)

// --- compatibility layer (served by MAS on /_matrix/client/v3/login) --------

func (e *Emulator) compatLogin(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet:
		flows := []map[string]any{
			{"type": "m.login.sso", "identity_providers": []map[string]string{{"id": "oidc-" + Provider, "name": "OpenMeet"}}},
			{"type": "m.login.token"},
		}
		if !e.opts.PasswordsDisabled {
			flows = append(flows, map[string]any{"type": "m.login.password"})
		}
		writeJSON(w, http.StatusOK, map[string]any{"flows": flows})
		return
	case http.MethodPost:
	default:
		matrixError(w, http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "method not allowed", nil)
		return
	}
	var req struct {
		Type       string `json:"type"`
		Identifier struct {
			Type string `json:"type"`
			User string `json:"user"`
		} `json:"identifier"`
		User     string `json:"user"`
		Password string `json:"password"`
		Token    string `json:"token"`
		DeviceID string `json:"device_id"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
		matrixError(w, http.StatusBadRequest, "M_NOT_JSON", "body is not JSON", nil)
		return
	}
	var localpart string
	switch req.Type {
	case "m.login.password":
		if e.opts.PasswordsDisabled {
			matrixError(w, http.StatusBadRequest, "M_UNKNOWN", "password login is disabled", nil)
			return
		}
		u := req.Identifier.User
		if u == "" {
			u = req.User
		}
		u = strings.TrimPrefix(u, "@")
		u, _, _ = strings.Cut(u, ":")
		e.mu.Lock()
		pw, ok := e.masPass[u]
		e.mu.Unlock()
		if !ok || pw == "" || pw != req.Password {
			matrixError(w, http.StatusForbidden, "M_FORBIDDEN", "invalid username or password", nil)
			return
		}
		localpart = u
	case "m.login.token":
		e.mu.Lock()
		lt := e.loginTokens[req.Token]
		delete(e.loginTokens, req.Token)
		e.mu.Unlock()
		if lt == nil || !e.now().Before(lt.expires) {
			matrixError(w, http.StatusForbidden, "M_FORBIDDEN", "invalid login token", nil)
			return
		}
		localpart = lt.user
	default:
		matrixError(w, http.StatusBadRequest, "M_UNKNOWN", "unsupported login type", nil)
		return
	}
	device := req.DeviceID
	if device == "" {
		device = ulid()
	}
	// A compat login on a device ends the user's earlier compat sessions of
	// that device (crates/handlers/src/compat/login.rs, token_login and
	// user_password_login: finish_sessions_to_replace_device).
	cs := &compatSession{id: ulid(), user: localpart, device: device}
	a := &accessToken{token: random("mct_"), user: localpart, device: device, compat: cs}
	e.mu.Lock()
	for _, o := range e.compatSess {
		if o.user == localpart && o.device == device {
			o.finished = true
		}
	}
	e.compatSess = append(e.compatSess, cs)
	e.access[a.token] = a
	e.stats.CompatLogins++
	e.mu.Unlock()
	// The device is created at the homeserver before the answer
	// (compat/login.rs post); if that fails the session ends.
	ctx, cancel := ctxTimeout(r)
	err := e.upsertDevice(ctx, localpart, device, "")
	cancel()
	if err != nil {
		e.mu.Lock()
		cs.finished = true
		e.mu.Unlock()
		e.syncDevicesLater(localpart)
		matrixError(w, http.StatusInternalServerError, "M_UNKNOWN", "Internal error", nil)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": a.token, "device_id": device, "user_id": "@" + localpart + ":" + e.ServerName,
		"home_server": e.ServerName,
	})
}

func (e *Emulator) compatSSORedirect(w http.ResponseWriter, r *http.Request) {
	ru := r.URL.Query().Get("redirectUrl")
	u, err := url.Parse(ru)
	if ru == "" || err != nil || u.Scheme == "" {
		matrixError(w, http.StatusBadRequest, "M_MISSING_PARAM", "redirectUrl is required", nil)
		return
	}
	c := &compatLogin{id: ulid(), redirectURL: ru}
	e.mu.Lock()
	e.compat[c.id] = c
	e.mu.Unlock()
	redirect(w, http.StatusSeeOther, e.MASURL+"/complete-compat-sso/"+c.id)
}

func (e *Emulator) compatPage(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	c := e.compat[r.PathValue("id")]
	e.mu.Unlock()
	if c == nil || c.done {
		errorPage(w, http.StatusBadRequest, "Invalid login", "Unknown or finished compat login.")
		return
	}
	if e.sessionUser(r) == "" {
		redirect(w, http.StatusSeeOther, "/login?"+url.Values{"kind": {"continue_compat_sso_login"}, "id": {c.id}}.Encode())
		return
	}
	renderPage(w, http.StatusOK, page{Title: "Continue to your client?", Form: true, Button: "Continue",
		Hidden: []field{{Name: "csrf", Value: csrfToken(w, r, "csrf")}}})
}

func (e *Emulator) compatSubmit(w http.ResponseWriter, r *http.Request) {
	u := e.sessionUser(r)
	if u == "" || !csrfOK(r, "csrf") {
		errorPage(w, http.StatusBadRequest, "CSRF check failed", "Missing session or csrf token.")
		return
	}
	e.mu.Lock()
	c := e.compat[r.PathValue("id")]
	if c == nil || c.done {
		e.mu.Unlock()
		errorPage(w, http.StatusBadRequest, "Invalid login", "")
		return
	}
	c.done = true
	lt := &loginToken{token: random(""), user: u, expires: e.now().Add(30 * time.Second)}
	e.loginTokens[lt.token] = lt
	e.mu.Unlock()
	redirect(w, http.StatusSeeOther, withQuery(c.redirectURL, url.Values{"loginToken": {lt.token}}))
}

// --- the Matrix front ------------------------------------------------------------

func (e *Emulator) frontHandler() http.Handler {
	mux := http.NewServeMux()
	meta := func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		f := e.faults.AuthMetadata404
		e.mu.Unlock()
		if f {
			matrixError(w, http.StatusNotFound, "M_UNRECOGNIZED", "Unrecognized request", nil)
			return
		}
		if syn := e.attached(); syn != nil {
			// A delegating Synapse answers this itself, with the
			// metadata it loaded from MAS (rest/client/auth_metadata.py).
			syn.ServeHTTP(w, r)
			return
		}
		writeJSON(w, http.StatusOK, e.Metadata())
	}
	mux.HandleFunc("GET /_matrix/client/v1/auth_metadata", meta)
	mux.HandleFunc("GET /_matrix/client/unstable/org.matrix.msc2965/auth_metadata", meta)
	compat := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			e.mu.Lock()
			down := e.masDown
			e.mu.Unlock()
			if down {
				matrixError(w, http.StatusBadGateway, "M_UNKNOWN", "authentication service unavailable", nil)
				return
			}
			h(w, r)
		}
	}
	mux.HandleFunc("/_matrix/client/v3/login", compat(e.compatLogin))
	mux.HandleFunc("GET /_matrix/client/v3/login/sso/redirect", compat(e.compatSSORedirect))
	// The reverse proxy sends logout to MAS too (MAS's documentation:
	// /_matrix/client/*/login, logout and refresh go to MAS).
	mux.HandleFunc("POST /_matrix/client/v3/logout", compat(e.compatLogout))
	var proxy *httputil.ReverseProxy
	if d := e.opts.Dendrite; d != nil {
		target, _ := url.Parse(d.URL)
		proxy = &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = target.Host
		}}
	}
	e.dendProxy = proxy
	mux.HandleFunc("/", e.frontDefault)
	return mux
}

// attached is the reverse proxy to a delegating Synapse, or nil.
func (e *Emulator) attached() *httputil.ReverseProxy {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.synapse == nil {
		return nil
	}
	if e.synProxy == nil {
		target, _ := url.Parse(e.synapse.URL)
		e.synProxy = &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = target.Host
		}, ModifyResponse: func(resp *http.Response) error {
			// Synapse's refusals of a presented token (M_UNKNOWN_TOKEN)
			// count as the front's own did in front of Dendrite.
			if resp.StatusCode == http.StatusUnauthorized && bearer(resp.Request) != "" {
				e.mu.Lock()
				e.stats.UnknownTokenReply++
				e.mu.Unlock()
			}
			return nil
		}}
	}
	return e.synProxy
}

// frontDefault serves what the reverse proxy sends to the homeserver: to a
// delegating Synapse as it is (Synapse introspects the token at MAS), to
// Dendrite with the MAS session mapped to a Dendrite session of the same
// user and device.
func (e *Emulator) frontDefault(w http.ResponseWriter, r *http.Request) {
	if syn := e.attached(); syn != nil {
		syn.ServeHTTP(w, r)
		return
	}
	proxy := e.dendProxy
	tok := bearer(r)
	if tok == "" {
		if proxy == nil {
			matrixError(w, http.StatusNotFound, "M_UNRECOGNIZED", "Unrecognized request", nil)
			return
		}
		proxy.ServeHTTP(w, r)
		return
	}
	a, ok := e.lookupToken(tok)
	if !ok {
		matrixError(w, http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "Token is not active", map[string]any{"soft_logout": false})
		return
	}
	if proxy == nil {
		if r.URL.Path == "/_matrix/client/v3/account/whoami" {
			writeJSON(w, http.StatusOK, map[string]any{"user_id": "@" + a.user + ":" + e.ServerName, "device_id": a.device, "is_guest": false})
			return
		}
		matrixError(w, http.StatusNotFound, "M_UNRECOGNIZED", "Unrecognized request (no homeserver behind the emulator)", nil)
		return
	}
	dt, err := e.dendriteToken(r, a.user, a.device)
	if err != nil {
		matrixError(w, http.StatusBadGateway, "M_UNKNOWN", "emulator could not open a homeserver session: "+err.Error(), nil)
		return
	}
	r.Header.Set("Authorization", "Bearer "+dt)
	if q := r.URL.Query(); q.Has("access_token") {
		q.Del("access_token")
		r.URL.RawQuery = q.Encode()
	}
	proxy.ServeHTTP(w, r)
}

func bearer(r *http.Request) string {
	if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
		return strings.TrimPrefix(h, "Bearer ")
	}
	return r.URL.Query().Get("access_token")
}

// dendriteToken maps a MAS session (user and device) to a Dendrite session
// of the same user, creating the Dendrite account on first use with a
// password only the emulator knows.
func (e *Emulator) dendriteToken(r *http.Request, localpart, device string) (string, error) {
	e.dendriteMu.Lock()
	defer e.dendriteMu.Unlock()
	key := localpart + "|" + device
	if t, ok := e.dendTokens[key]; ok {
		return t, nil
	}
	ctx, cancel := ctxTimeout(r)
	defer cancel()
	d := e.opts.Dendrite
	pw, ok := e.dendPass[localpart]
	if !ok {
		pw = random("dp-")
		if _, err := d.Register(ctx, localpart, pw, false); err != nil {
			return "", fmt.Errorf("register %s at the homeserver failed", localpart)
		}
		e.dendPass[localpart] = pw
	}
	body, _ := json.Marshal(map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": localpart},
		"password": pw, "device_id": device, "initial_device_display_name": "mxprobe via masemu",
	})
	b, err := d.Do(ctx, http.MethodPost, "/_matrix/client/v3/login", "", body)
	if err != nil {
		return "", fmt.Errorf("homeserver login of %s failed", localpart)
	}
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(b, &out); err != nil || out.AccessToken == "" {
		return "", fmt.Errorf("homeserver login of %s answered no token", localpart)
	}
	e.dendTokens[key] = out.AccessToken
	return out.AccessToken, nil
}
