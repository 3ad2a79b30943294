package masemu

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
)

func (e *Emulator) masHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, e.Metadata())
	})
	mux.HandleFunc("POST /oauth2/registration", e.register)
	mux.HandleFunc("GET /authorize", e.authorize)
	mux.HandleFunc("GET /login", e.login)
	mux.HandleFunc("POST /login", e.loginSubmit)
	mux.HandleFunc("POST /logout", e.logout)
	mux.HandleFunc("GET /upstream/authorize/{provider}", e.upstreamAuthorize)
	mux.HandleFunc("GET /upstream/callback/{provider}", e.upstreamCallback)
	mux.HandleFunc("POST /upstream/callback/{provider}", e.upstreamCallback)
	mux.HandleFunc("GET /upstream/link/{id}", e.linkPage)
	mux.HandleFunc("POST /upstream/link/{id}", e.linkSubmit)
	mux.HandleFunc("GET /register/steps/{id}/finish", e.registerFinish)
	mux.HandleFunc("GET /register/steps/{id}/display-name", e.displayNamePage)
	mux.HandleFunc("POST /register/steps/{id}/display-name", e.displayNameSubmit)
	mux.HandleFunc("GET /consent/{grant}", e.consentPage)
	mux.HandleFunc("POST /consent/{grant}", e.consentSubmit)
	mux.HandleFunc("POST /oauth2/token", e.token)
	mux.HandleFunc("POST /oauth2/revoke", e.revoke)
	mux.HandleFunc("POST /oauth2/introspect", e.introspect)
	mux.HandleFunc("POST /_matrix/client/v3/logout", e.compatLogout)
	mux.HandleFunc("GET /complete-compat-sso/{id}", e.compatPage)
	mux.HandleFunc("POST /complete-compat-sso/{id}", e.compatSubmit)
	mux.HandleFunc("/_matrix/client/v3/login", e.compatLogin)
	mux.HandleFunc("GET /_matrix/client/v3/login/sso/redirect", e.compatSSORedirect)
	return e.logRequests(mux)
}

// logRequests records every request MAS serves (for tests that assert what
// a client did, or did not, ask for).
func (e *Emulator) logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		if len(e.requests) < 100000 {
			e.requests = append(e.requests, r.Method+" "+r.URL.Path)
		}
		e.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

// --- dynamic client registration (MSC2966) ---------------------------------

type clientMetadata struct {
	ClientName              string   `json:"client_name"`
	ClientURI               string   `json:"client_uri"`
	RedirectURIs            []string `json:"redirect_uris"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
	ApplicationType         string   `json:"application_type"`
	TOSURI                  string   `json:"tos_uri"`
	PolicyURI               string   `json:"policy_uri"`
	LogoURI                 string   `json:"logo_uri"`
	Contacts                []string `json:"contacts"`
}

// isLoopback is the registration policy's is_localhost: exactly the hosts
// localhost, 127.0.0.1 and [::1], not the rest of 127.0.0.0/8
// (policies/client_registration/client_registration.rego, is_localhost and
// the http valid_native_redirector rule).
func isLoopback(host string) bool {
	switch strings.ToLower(host) {
	case "localhost", "127.0.0.1", "[::1]", "::1":
		return true
	}
	return false
}

func hostWithin(host, parent string) bool {
	host, parent = strings.ToLower(host), strings.ToLower(parent)
	return host == parent || strings.HasSuffix(host, "."+parent)
}

// publicSuffixes are hosts MAS refuses as client hosts (a small stand-in for
// the public suffix list).
var publicSuffixes = map[string]bool{"com": true, "org": true, "net": true, "io": true, "co.uk": true, "github.io": true}

// checkClient applies MAS's registration policy; it returns the OAuth error
// code and the reasons.
func checkClient(m *clientMetadata) (string, []string) {
	var reasons []string
	cu, err := url.Parse(m.ClientURI)
	switch {
	case m.ClientURI == "":
		reasons = append(reasons, "client_uri is required")
	case err != nil || cu.Scheme != "https" || cu.Host == "":
		reasons = append(reasons, "client_uri must be an https URL")
	case isLoopback(cu.Hostname()):
		reasons = append(reasons, "client_uri must not be localhost")
	case publicSuffixes[strings.ToLower(cu.Hostname())]:
		reasons = append(reasons, "client_uri host is a public suffix")
	}
	for _, f := range []struct{ name, v string }{{"tos_uri", m.TOSURI}, {"policy_uri", m.PolicyURI}, {"logo_uri", m.LogoURI}} {
		if f.v == "" || cu == nil {
			continue
		}
		u, err := url.Parse(f.v)
		if err != nil || u.Scheme != "https" || !hostWithin(u.Hostname(), cu.Hostname()) {
			reasons = append(reasons, f.name+" must be https on the client_uri host")
		}
	}
	gt := map[string]bool{}
	for _, g := range m.GrantTypes {
		switch g {
		case "authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code":
			gt[g] = true
		default:
			reasons = append(reasons, "grant type "+g+" is not allowed")
		}
	}
	if len(m.GrantTypes) == 0 {
		gt["authorization_code"] = true
	}
	if gt["authorization_code"] {
		ok := len(m.ResponseTypes) == 0
		for _, rt := range m.ResponseTypes {
			if rt == "code" {
				ok = true
			}
		}
		if !ok {
			reasons = append(reasons, "response_types must include code for the authorization_code grant")
		}
	}
	switch m.TokenEndpointAuthMethod {
	case "none", "":
	default:
		reasons = append(reasons, "the emulator only registers public clients (token_endpoint_auth_method none)")
	}
	if len(reasons) > 0 {
		return "invalid_client_metadata", reasons
	}
	appType := m.ApplicationType
	if appType == "" {
		appType = "web"
	}
	if appType != "web" && appType != "native" {
		return "invalid_client_metadata", []string{"application_type must be web or native"}
	}
	if gt["authorization_code"] && len(m.RedirectURIs) == 0 {
		return "invalid_redirect_uri", []string{"redirect_uris is required"}
	}
	for _, ru := range m.RedirectURIs {
		u, err := url.Parse(ru)
		if err != nil || u.Scheme == "" {
			reasons = append(reasons, "redirect_uri is not a URL")
			continue
		}
		if u.Fragment != "" || strings.Contains(ru, "#") {
			reasons = append(reasons, "redirect_uri must not have a fragment")
			continue
		}
		switch appType {
		case "web":
			if u.Scheme != "https" || !hostWithin(u.Hostname(), cu.Hostname()) {
				reasons = append(reasons, "web redirect_uri must be https on the client_uri host")
			}
		case "native":
			switch {
			case u.Scheme == "http" && isLoopback(u.Hostname()):
			case u.Scheme != "http" && u.Scheme != "https" && u.Host == "" && u.Scheme == reverseHost(cu.Hostname()):
				// A private-use scheme: no authority, the reversed client_uri
				// host (client_registration.rego, the custom-scheme
				// valid_native_redirector rule and reverse_dns_match).
			default:
				reasons = append(reasons, "native redirect_uri must be http on a loopback host or a private-use scheme of the reversed client_uri host")
			}
		}
	}
	if len(reasons) > 0 {
		return "invalid_redirect_uri", reasons
	}
	return "", nil
}

func reverseHost(h string) string {
	parts := strings.Split(strings.ToLower(h), ".")
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, ".")
}

func (e *Emulator) register(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	down := e.faults.RegistrationDown
	e.mu.Unlock()
	if down {
		oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "registration is down")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<16))
	if err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "unreadable body")
		return
	}
	var m clientMetadata
	if err := json.Unmarshal(body, &m); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_client_metadata", "body is not client metadata JSON")
		return
	}
	if code, reasons := checkClient(&m); code != "" {
		oauthError(w, http.StatusBadRequest, code, strings.Join(reasons, "; "))
		return
	}
	appType := m.ApplicationType
	if appType == "" {
		appType = "web"
	}
	// Identical public registrations get the same id.
	canon, _ := json.Marshal(m)
	sum := sha256.Sum256(canon)
	id := "01" + strings.ToUpper(hex.EncodeToString(sum[:12]))
	e.mu.Lock()
	e.clients[id] = &client{id: id, name: m.ClientName, redirectURIs: m.RedirectURIs, applicationType: appType}
	e.stats.Registrations++
	e.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]any{
		"client_id": id, "client_id_issued_at": e.now().Unix(), "client_name": m.ClientName,
		"client_uri": m.ClientURI, "redirect_uris": m.RedirectURIs, "grant_types": m.GrantTypes,
		"response_types": m.ResponseTypes, "token_endpoint_auth_method": "none", "application_type": appType,
	})
}
