package alerts

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// truncate never cuts a UTF-8 character.
func TestTruncateRuneSafe(t *testing.T) {
	s := strings.Repeat("é€", 100) // 2- and 3-byte characters
	for n := 0; n < 40; n++ {
		got := truncate(s, n)
		if !utf8.ValidString(got) || len(got) > n+len("…") {
			t.Fatalf("truncate(%d) = %q", n, got)
		}
	}
	if truncate("short", 10) != "short" {
		t.Error("short strings must stay as they are")
	}
}
