package masemu

import (
	"fmt"
	"regexp"
	"strings"
)

// The authorization grant policy
// (policies/authorization_grant/authorization_grant.rego, MAS v1.22.0), as
// MAS evaluates it at consent (crates/handlers/src/oauth2/authorization/
// consent.rs, evaluate_authorization_grant in get() for the page and in
// post() for the POST).

const (
	apiUnstable    = "urn:matrix:org.matrix.msc2967.client:api:"
	deviceUnstable = "urn:matrix:org.matrix.msc2967.client:device:"
	apiStable      = "urn:matrix:client:api:"
	deviceStable   = "urn:matrix:client:device:"
)

// deviceScopeRe is the rego's device scope pattern (authorization_grant.rego
// allowed_scope for the device scopes).
var deviceScopeRe = regexp.MustCompile(`^urn:matrix:(org\.matrix\.msc2967\.client|client):device:[A-Za-z0-9._~!$&'()*+,;=:@/-]{10,}$`)

// violation is one policy violation: its message, and its code where the
// rego gives one ("too-many-sessions").
type violation struct {
	msg, code    string
	needToRemove int
}

// allowedScope is the rego's allowed_scope for a user logging in with the
// authorization_code grant (no admin users configured).
func allowedScope(s string) bool {
	switch s {
	case "", "openid", "email", "urn:mas:graphql:*",
		"urn:matrix:client:api:*", "urn:matrix:org.matrix.msc2967.client:api:*":
		return true
	}
	return deviceScopeRe.MatchString(s)
}

// grantViolations evaluates the policy for a scope and the user's session
// count (sessionLimit 0: experimental.session_limit not configured).
func grantViolations(scope string, sessions, sessionLimit int) []violation {
	var out []violation
	list := strings.Split(scope, " ")
	var stable, unstable, api bool
	devUnstable, devStable := 0, 0
	for _, s := range list {
		if !allowedScope(s) {
			out = append(out, violation{msg: fmt.Sprintf("scope '%s' not allowed", s)})
		}
		switch {
		case strings.HasPrefix(s, "urn:matrix:org.matrix.msc2967.client:"):
			unstable = true
		case strings.HasPrefix(s, "urn:matrix:client:"):
			stable = true
		}
		switch {
		case strings.HasPrefix(s, deviceUnstable):
			devUnstable++
		case strings.HasPrefix(s, deviceStable):
			devStable++
		case strings.HasPrefix(s, apiUnstable), strings.HasPrefix(s, apiStable):
			api = true
		}
	}
	if devUnstable > 1 || devStable > 1 {
		out = append(out, violation{msg: "only one device scope is allowed at a time"})
	}
	if devUnstable+devStable > 0 && !api {
		out = append(out, violation{msg: "device scopes are only allowed when the client-server API scope is requested"})
	}
	if stable && unstable {
		out = append(out, violation{msg: "request cannot mix unstable and stable scopes"})
	}
	// session_limit: the soft limit already reached refuses a new session;
	// "+ 1" makes room for the new one (authorization_grant.rego, the
	// too-many-sessions violation).
	if sessionLimit > 0 && sessionLimit <= sessions {
		out = append(out, violation{msg: "user has too many active sessions", code: "too-many-sessions",
			needToRemove: sessions - sessionLimit + 1})
	}
	return out
}

// deviceOf returns the device id a valid scope asks for ("" if none).
func deviceOf(scope string) string {
	for _, s := range strings.Fields(scope) {
		if strings.HasPrefix(s, deviceUnstable) {
			return strings.TrimPrefix(s, deviceUnstable)
		}
		if strings.HasPrefix(s, deviceStable) {
			return strings.TrimPrefix(s, deviceStable)
		}
	}
	return ""
}
