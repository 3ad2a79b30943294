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
// JSON/Go-escaped (\u00XX, \", \\, \/), or split by white space or escaped
// line breaks between its characters (a wrapped line). A homeserver that
// reflects a request in an error (a query string, a JSON body) echoes the
// encoded form, which an exact-copy replacement misses.
func secretPattern(s string) *regexp.Regexp {
	var b strings.Builder
	for i, r := range s {
		if i > 0 {
			b.WriteString(`(?:\s|\\[rnt])*`)
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
