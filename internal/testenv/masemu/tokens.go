package masemu

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"time"
)

// codeReplayWindow: a replayed code ends the session it started only when
// the replay comes more than 20 s after the exchange
// (crates/handlers/src/oauth2/token.rs, authorization_code_grant).
const codeReplayWindow = 20 * time.Second

// token is POST /oauth2/token (crates/handlers/src/oauth2/token.rs). With
// a Synapse attached, the device of a new session is created there before
// the tokens are handed out (authorization_code_grant: "so that when we
// respond, the access token works completely"); if that fails the answer is
// a server error and the session is ended.
func (e *Emulator) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "unreadable form")
		return
	}
	rec := httptest.NewRecorder()
	e.mu.Lock()
	started := e.tokenLocked(rec, r.PostForm)
	e.mu.Unlock()
	if started != nil {
		ctx, cancel := ctxTimeout(r)
		err := e.upsertDevice(ctx, started.user, started.device, e.clientName(started.clientID))
		cancel()
		if err != nil {
			e.mu.Lock()
			started.finished = true
			e.mu.Unlock()
			oauthError(w, http.StatusInternalServerError, "server_error", "failed to provision the device")
			return
		}
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// clientName is a client's registered name (the device's display name).
func (e *Emulator) clientName(id string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c := e.clients[id]; c != nil {
		return c.name
	}
	return ""
}

// tokenLocked answers a token request into w with mu held; it returns the
// session an authorization code started (whose device needs provisioning).
func (e *Emulator) tokenLocked(w http.ResponseWriter, f url.Values) (started *oauthSession) {
	c := e.clients[f.Get("client_id")]
	if c == nil {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "unknown client")
		return
	}
	switch f.Get("grant_type") {
	case "authorization_code":
		ac := e.codes[f.Get("code")]
		switch {
		case ac == nil:
			oauthError(w, http.StatusBadRequest, "invalid_grant", "unknown code")
			return
		case ac.used:
			e.stats.CodeReuse++
			if ac.session != nil && e.now().Sub(ac.exchanged) > codeReplayWindow {
				// "Ending potentially compromised session", with no
				// device sync (authorization_code_grant schedules no
				// SyncDevicesJob here): the device stays at the homeserver
				// until the user's next sync; its tokens are inactive at
				// the next introspection.
				ac.session.finished = true
			}
			oauthError(w, http.StatusBadRequest, "invalid_grant", "the code was already used")
			return
		case e.now().Sub(ac.issued) > e.opts.CodeTTL:
			oauthError(w, http.StatusBadRequest, "invalid_grant", "the code has expired")
			return
		case ac.grant.clientID != c.id:
			oauthError(w, http.StatusBadRequest, "invalid_grant", "the code was issued to another client")
			return
		case f.Get("redirect_uri") != ac.grant.redirectURI:
			oauthError(w, http.StatusBadRequest, "invalid_grant", "redirect_uri does not match")
			return
		}
		verifier := f.Get("code_verifier")
		switch {
		case ac.grant.challenge != "" && verifier == "":
			oauthError(w, http.StatusBadRequest, "invalid_request", "code_verifier is required")
			return
		case ac.grant.challenge == "" && verifier != "":
			oauthError(w, http.StatusBadRequest, "invalid_request", "code_verifier without a code_challenge")
			return
		case ac.grant.challenge != "":
			want := verifier
			if ac.grant.challengeMethod == "S256" {
				want = s256(verifier)
			}
			if want != ac.grant.challenge {
				ac.used = true
				oauthError(w, http.StatusBadRequest, "invalid_grant", "PKCE verification failed")
				return
			}
		}
		// Every exchange starts a new OAuth 2.0 session (token.rs,
		// authorization_code_grant: add_from_browser_session).
		s := &oauthSession{id: ulid(), user: ac.user, clientID: c.id, device: ac.grant.device,
			scope: ac.grant.scope, created: e.now()}
		e.oauthSessions = append(e.oauthSessions, s)
		ac.used, ac.exchanged, ac.session = true, e.now(), s
		a, rt := e.issue(s)
		e.tokenResponse(w, a, rt, s.scope)
		if s.device != "" {
			started = s
		}
	case "refresh_token":
		old := e.refresh[f.Get("refresh_token")]
		switch {
		case old == nil || old.revoked || old.session.finished:
			e.stats.RefreshRejected++
			oauthError(w, http.StatusBadRequest, "invalid_grant", "unknown or revoked refresh token")
			return
		case old.clientID != c.id:
			e.stats.RefreshRejected++
			oauthError(w, http.StatusBadRequest, "invalid_grant", "the refresh token belongs to another client")
			return
		}
		if old.used {
			// token.rs refresh_token_grant: a consumed token is a replay
			// unless its successor pair was never used (a lost answer: revoke
			// it and issue again).
			next := old.next
			if next == nil || next.used || next.revoked || (next.access != nil && next.access.used) {
				e.stats.RefreshRejected++
				oauthError(w, http.StatusBadRequest, "invalid_grant", "the refresh token was already used")
				return
			}
			next.revoked = true
			if next.access != nil {
				next.access.revoked = true
			}
		}
		a, rt := e.issue(old.session)
		old.used, old.next = true, rt
		// The previous access token is revoked with the rotation
		// (token.rs, refresh_token_grant).
		if old.access != nil {
			old.access.revoked = true
		}
		e.stats.Refreshes++
		e.tokenResponse(w, a, rt, old.scope)
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
	}
	return started
}

// issue makes an access/refresh pair of a session (mu held).
func (e *Emulator) issue(s *oauthSession) (*accessToken, *refreshToken) {
	a := &accessToken{token: random("mat_"), user: s.user, device: s.device, clientID: s.clientID,
		expires: e.now().Add(e.opts.AccessTTL), session: s}
	rt := &refreshToken{token: random("mar_"), user: s.user, device: s.device, clientID: s.clientID, scope: s.scope,
		access: a, session: s}
	a.pair = rt
	e.access[a.token] = a
	e.refresh[rt.token] = rt
	e.stats.TokensIssued++
	return a, rt
}

func (e *Emulator) tokenResponse(w http.ResponseWriter, a *accessToken, rt *refreshToken, scope string) {
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": a.token, "token_type": "Bearer", "expires_in": int(e.opts.AccessTTL / time.Second),
		"refresh_token": rt.token, "scope": scope,
	})
}

// revoke is POST /oauth2/revoke (crates/handlers/src/oauth2/revoke.rs): a
// public client names itself with client_id; a valid access or refresh
// token ends its whole session (post()); an unknown or dead token is a
// 200 all the same; another client's token is unauthorized_client.
func (e *Emulator) revoke(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "")
		return
	}
	// The user's SyncDevicesJob runs once the session has ended
	// (revoke.rs), after mu is released.
	var ended string
	defer func() {
		if ended != "" {
			e.syncDevicesLater(ended)
		}
	}()
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.clients[r.PostForm.Get("client_id")]
	if c == nil {
		oauthError(w, http.StatusUnauthorized, "invalid_client", "unknown client")
		return
	}
	t, hint := r.PostForm.Get("token"), r.PostForm.Get("token_type_hint")
	var s *oauthSession
	if a := e.access[t]; a != nil && hint != "refresh_token" && a.session != nil &&
		!a.revoked && (a.expires.IsZero() || e.now().Before(a.expires)) {
		s = a.session
	}
	if rt := e.refresh[t]; rt != nil && hint != "access_token" && !rt.revoked && !rt.used {
		s = rt.session
	}
	if s == nil || s.finished {
		w.WriteHeader(http.StatusOK)
		return
	}
	if s.clientID != c.id {
		oauthError(w, http.StatusUnauthorized, "unauthorized_client", "")
		return
	}
	s.finished = true
	ended = s.user
	e.stats.Revocations++
	w.WriteHeader(http.StatusOK)
}

// lookupToken checks an access token for the Matrix front (marks it used).
func (e *Emulator) lookupToken(t string) (*accessToken, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	a := e.access[t]
	if a == nil || a.revoked || (!a.expires.IsZero() && !e.now().Before(a.expires)) ||
		(a.session != nil && a.session.finished) || (a.compat != nil && a.compat.finished) {
		e.stats.UnknownTokenReply++
		return nil, false
	}
	a.used = true
	return a, true
}
