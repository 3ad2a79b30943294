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
	// Text that merely shares characters with a secret is left alone.
	rec := NewRecorder("login", "login", "acme")
	rec.Scrub(tok)
	rec.Fail("login", errors.New("syt_YWNtZQ_other 0123"))
	if res := rec.Finish(); res.Error != "syt_YWNtZQ_other 0123" {
		t.Errorf("unrelated text changed: %s", res.Error)
	}
}
