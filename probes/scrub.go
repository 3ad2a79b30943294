package probes

import (
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// secretPattern matches s as a server may echo it back: as is, or with any
// of its characters percent-encoded (either hex case, as url.QueryEscape,
// url.PathEscape or a full encoding writes them; a space also as '+'), or
// JSON/Go-escaped (\u00XX, \", \\, \/), or split by white space, raw or
// escaped, between its characters (a wrapped line). A homeserver that
// reflects a request in an error (a query string, a JSON body) echoes the
// encoded form, which an exact-copy replacement misses.
func secretPattern(s string) *regexp.Regexp {
	var b strings.Builder
	for i, r := range s {
		if i > 0 {
			// White space as is, or as escaped by JSON, Go or
			// mxclient.Short (\t, \x09, \u0009 and the other
			// white-space controls).
			b.WriteString(`(?:\s|\\[rntvf]|\\x0(?i:[9abcd])|\\u000(?i:[9abcd]))*`)
		}
		alts := []string{regexp.QuoteMeta(string(r))}
		var buf [utf8.UTFMax]byte
		n := utf8.EncodeRune(buf[:], r)
		pct := ""
		for _, c := range buf[:n] {
			pct += fmt.Sprintf("%%(?i:%02x)", c)
		}
		alts = append(alts, pct)
		if r <= 0xFFFF {
			alts = append(alts, fmt.Sprintf(`\\u(?i:%04x)`, r))
		}
		switch r {
		case ' ':
			alts = append(alts, `\+`)
		case '"', '\\', '/', '\'':
			alts = append(alts, `\\`+regexp.QuoteMeta(string(r)))
		}
		b.WriteString("(?:" + strings.Join(alts, "|") + ")")
	}
	return regexp.MustCompile(b.String())
}

// mayHoldEncoded reports whether msg could hold an encoded or split form of
// secret, so that secretPattern need not be compiled for every run (a
// compile per run and secret was most of a login probe's allocations at
// 10,000 tenants). Every form other than the exact copy (replaced before)
// needs a '%', a '\\' or a '+' in msg, unless it is the secret split by
// raw white space only: with none of the three in msg (nor in the secret,
// nor white space), msg holds a form exactly when msg without its white
// space holds the secret.
func mayHoldEncoded(msg, secret string) bool {
	const escapes = "%\\+"
	if strings.ContainsAny(msg, escapes) || strings.ContainsAny(secret, escapes+" \t\n\f\r\v") {
		return true
	}
	return strings.Contains(stripRegexpSpace(msg), secret)
}

// stripRegexpSpace removes what `\s` matches in secretPattern.
func stripRegexpSpace(s string) string {
	if !strings.ContainsAny(s, " \t\n\f\r") {
		return s
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\n', '\f', '\r':
			return -1
		}
		return r
	}, s)
}

// minSecretPrefix is the shortest start of a secret that is redacted when a
// text ends with it (see cutSecretPrefix).
const minSecretPrefix = 8

// cutSecretPrefix redacts the start of secret where a text was cut in the
// middle of it: at the end of msg, or before a cut mark (" …", as
// CutText and mxclient.Short write it). A remote message cut at 200 bytes
// would otherwise keep the secret's first characters.
func cutSecretPrefix(msg, secret string) string {
	if len(secret) <= minSecretPrefix {
		return msg
	}
	head := secret[:minSecretPrefix]
	for from := 0; from < len(msg); {
		i := strings.Index(msg[from:], head)
		if i < 0 {
			break
		}
		i += from
		n := minSecretPrefix
		for i+n < len(msg) && n < len(secret) && msg[i+n] == secret[n] {
			n++
		}
		if rest := msg[i+n:]; rest == "" || strings.HasPrefix(strings.TrimLeft(rest, " "), "…") {
			msg = msg[:i] + "<redacted>" + rest
			from = i + len("<redacted>")
			continue
		}
		from = i + 1
	}
	return msg
}
