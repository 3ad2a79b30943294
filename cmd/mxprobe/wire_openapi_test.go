package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestWarnOpenAPI: no token on ":9787" (the default, every interface) or a
// routable address logs one warning; loopback only, or a token, logs none.
func TestWarnOpenAPI(t *testing.T) {
	for _, c := range []struct {
		listen []string
		token  string
		warn   bool
	}{
		{[]string{":9787"}, "", true},
		{[]string{"0.0.0.0:9787"}, "", true},
		{[]string{"127.0.0.1:9787", "10.1.2.3:9787"}, "", true},
		{[]string{"mxprobe.internal:9787"}, "", true},
		{[]string{"127.0.0.1:9787", "[::1]:9787", "localhost:9787"}, "", false},
		{[]string{":9787"}, "9f86d081884c7d659a2feaa0c55ad015", false},
	} {
		var buf bytes.Buffer
		got := warnOpenAPI(slog.New(slog.NewTextHandler(&buf, nil)), c.listen, c.token)
		if got != c.warn || strings.Count(buf.String(), "level=WARN") != map[bool]int{true: 1}[c.warn] {
			t.Errorf("%v token=%v: warned %v, log:\n%s", c.listen, c.token != "", got, buf.String())
		}
	}
}
