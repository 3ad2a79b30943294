package config

import (
	"fmt"
	"math"
	"strings"
)

// MinTokenBits is the least entropy, estimated from the token's own
// character frequencies, an api_token or metrics_token must carry. A token
// from `openssl rand -hex 16` estimates at about 55 bits; a repeated pattern
// such as "abababababababab" at 16.
const MinTokenBits = 40

// placeholderTokens are the fragments of texts shipped or commonly written
// in place of a token (the deploy examples' "replace-with-the-output-of-
// openssl-rand-hex-32" among them). A token containing one is refused
// whatever its length: a placeholder is known to every reader of the
// repository, so it protects nothing.
var placeholderTokens = []string{
	"replace-with", "replace_with", "replaceme", "replace-me", "replace_me",
	"changeme", "change-me", "change_me", "openssl-rand", "openssl rand",
	"placeholder", "your-token", "your_token", "yourtoken", "example-token",
	"insert-token", "put-token", "fill-me", "fillme",
	"xxxxxxxx", "password", "<", ">",
}

// WeakToken says why tok is unfit as a bearer token (empty, too short, a
// known placeholder, too little entropy), or "" when it is fit. The reason
// never quotes the token.
func WeakToken(tok string) string {
	if tok == "" {
		return "is empty"
	}
	if n := len(tok); n < MinTokenLength {
		return fmt.Sprintf("is %d characters long, use at least %d", n, MinTokenLength)
	}
	low := strings.ToLower(tok)
	for _, p := range placeholderTokens {
		if strings.Contains(low, p) {
			return "is a placeholder from an example, not a secret"
		}
	}
	if u := repeatUnit(tok); u < len(tok) {
		return fmt.Sprintf("repeats a %d-character pattern: use random characters", u)
	}
	if b := tokenBits(tok); b < MinTokenBits {
		return fmt.Sprintf("has too little entropy (about %d bits, use at least %d: random characters, not a pattern)", int(b), MinTokenBits)
	}
	return ""
}

// tokenBits estimates a token's entropy as its length times the Shannon
// entropy of its character frequencies: repeated patterns and single-class
// runs score low, random text scores close to length × log2(alphabet).
func tokenBits(tok string) float64 {
	counts := map[rune]int{}
	n := 0
	for _, r := range tok {
		counts[r]++
		n++
	}
	h := 0.0
	for _, c := range counts {
		p := float64(c) / float64(n)
		h -= p * math.Log2(p)
	}
	return h * float64(n)
}

// repeatUnit is the length of the shortest text whose repetition makes up
// tok ("1234123412" → 4); len(tok) when there is none.
func repeatUnit(tok string) int {
	for u := 1; u <= len(tok)/2; u++ {
		if tok[u:] == tok[:len(tok)-u] {
			return u
		}
	}
	return len(tok)
}
