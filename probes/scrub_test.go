package probes

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// TestScrubEncodedSecrets: a server echoing a password or token URL-,
// percent- (either hex case) or JSON-escaped gets no form of it into the
// Result; text around it survives.
func TestScrubEncodedSecrets(t *testing.T) {
	const pw = `p@ss w/rd+"<&>é\x`
	const tok = "syt_YWNtZQ_abcdEFGH_0123"
	jsonOf := func(s string) string { b, _ := json.Marshal(s); return strings.Trim(string(b), `"`) }
	var full, fullLower strings.Builder
	for _, c := range []byte(tok) {
		fmt.Fprintf(&full, "%%%02X", c)
		fmt.Fprintf(&fullLower, "%%%02x", c)
	}
	forms := map[string]string{
		"exact":       pw,
		"query":       url.QueryEscape(pw),
		"path":        url.PathEscape(pw),
		"query lower": strings.ToLower(url.QueryEscape(pw)),
		"json":        jsonOf(pw),
		"go quoted":   strings.Trim(strconv.Quote(pw), `"`),
		"json ascii":  strings.Trim(strconv.QuoteToASCII(pw), `"`),
		"token full":  full.String(),
		"token lower": fullLower.String(),
		"wrapped":     tok[:10] + "\n  " + tok[10:],
		"json split":  tok[:10] + `\n` + tok[10:],
		// A tab in the echo, as the remote-text escaping shows it.
		"escaped tab": tok[:10] + `\x09` + tok[10:],
		"json tab":    tok[:10] + `\u0009` + tok[10:],
	}
	for name, echo := range forms {
		rec := NewRecorder("login", "login", "acme")
		rec.Scrub(pw, tok)
		rec.Fail("login", errors.New(`M_FORBIDDEN: bad request body {"password":"`+echo+`"} at /login?x=1`))
		res := rec.Finish()
		if strings.Contains(res.Error, echo) {
			t.Errorf("%s form %q survived: %s", name, echo, res.Error)
		}
		if !strings.Contains(res.Error, `{"password":"<redacted>"} at /login?x=1`) {
			t.Errorf("%s: %s", name, res.Error)
		}
	}
	// A remote message cut in the middle of the token (mxclient.Short cuts
	// at 200 bytes, CutText at MaxText) keeps none of its start.
	for _, msg := range []string{
		"M_UNKNOWN: " + strings.Repeat("x", 180) + " token " + tok[:12] + " …",
		"M_UNKNOWN: token " + tok[:9],
	} {
		rec := NewRecorder("login", "login", "acme")
		rec.Scrub(tok)
		rec.Fail("login", errors.New(msg))
		if res := rec.Finish(); strings.Contains(res.Error, tok[:8]) || !strings.Contains(res.Error, "token <redacted>") {
			t.Errorf("cut echo: %s", res.Error)
		}
	}
	// Text that merely shares characters with a secret is left alone.
	rec := NewRecorder("login", "login", "acme")
	rec.Scrub(tok)
	rec.Fail("login", errors.New("syt_YWNtZQ_other 0123 syt_YWNt"))
	if res := rec.Finish(); res.Error != "syt_YWNtZQ_other 0123 <redacted>" {
		t.Errorf("unrelated text changed: %s", res.Error)
	}
}
