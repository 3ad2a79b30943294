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

// TestMayHoldEncodedNeverMisses: the prefilter that spares compiling
// secretPattern never says "no" for a text the pattern matches, over split,
// encoded and unrelated texts.
func TestMayHoldEncodedNeverMisses(t *testing.T) {
	secrets := []string{"pw-bot000123", "s3cr3t-token_ABCdef", "syt_Ym90_abcdefghijklmnop_0a1b2c"}
	var texts []string
	for _, s := range secrets {
		mid := len(s) / 2
		texts = append(texts,
			"session proven; last full login 3s ago (one every 0s)",
			"login failed: "+s[:mid]+" "+s[mid:],
			"login failed: "+s[:mid]+"\n\t"+s[mid:]+" and more",
			url.QueryEscape(s), url.PathEscape(s), strings.ReplaceAll(s, "-", "%2d"),
			strconv.Quote(s[:mid])+s[mid:], `{"password":"`+strings.ReplaceAll(s, "_", `\u005f`)+`"}`,
			s[:mid]+`\n`+s[mid:], strings.Repeat("x", len(s)+3), "no secret here at all, only words of some length")
	}
	for _, s := range secrets {
		re := secretPattern(s)
		for _, msg := range texts {
			msg = strings.ReplaceAll(msg, s, "<redacted>")
			if re.MatchString(msg) && !mayHoldEncoded(msg, s) {
				t.Errorf("secret %q: %q matches the pattern but the prefilter skips it", s, msg)
			}
		}
	}
	if mayHoldEncoded("session proven; last full login 3s ago (one every 0s)", "pw-bot000123") {
		t.Error("a plain note without the secret still compiles its pattern")
	}
}
