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
// JSON/Go-escaped (\u00XX, \", \\, \/). A homeserver that reflects a request
// in an error (a query string, a JSON body) echoes the encoded form, which
// an exact-copy replacement misses.
func secretPattern(s string) *regexp.Regexp {
	var b strings.Builder
	for _, r := range s {
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
