// Package fuzzmut lets `make test` exercise the body of a native Go fuzz
// target beyond its seeds without running the fuzzing engine: a bounded,
// deterministic loop of mutations (bit flips, insertions of tokens that break
// parsers, truncations, splices of two seeds). `make fuzz` still runs the real
// coverage-guided fuzzer for longer.
//
// It is used by tests only.
package fuzzmut

import (
	"math/rand/v2"
	"testing"
	"time"
)

// Tokens are inserted by the mutator: they break JSON, YAML, HTML, the
// Prometheus text format and base64 in the ways hostile input usually does.
var Tokens = [][]byte{
	[]byte("{"), []byte("}"), []byte("["), []byte("]"), []byte(`"`), []byte(`\`), []byte(":"),
	[]byte(","), []byte("\n"), []byte("\r\n"), []byte("\x00"), []byte("\xff\xfe"), []byte("null"),
	[]byte("-1"), []byte("1e999"), []byte("NaN"), []byte("+Inf"), []byte("9223372036854775808"),
	[]byte(`\u0000`), []byte(`\ud800`), []byte("<"), []byte(">"), []byte("</form>"),
	[]byte("<form action=\"http://x/\">"), []byte("<input name=\"a\" value=\""), []byte("&amp;"),
	[]byte("# TYPE x histogram\n"), []byte("{le=\""), []byte("\t"), []byte("- "), []byte("&anchor "),
	[]byte("*anchor"), []byte("!!binary "), []byte("==="), []byte("é"), []byte("😀"),
}

// Options bound a loop.
type Options struct {
	// Iterations is the most mutated inputs tried (default 2000).
	Iterations int
	// Budget is the most time spent (default 1.5 s); the loop stops at
	// whichever limit comes first, so a slow machine runs fewer inputs.
	Budget time.Duration
	// Seed makes the sequence of mutations reproducible (default 1).
	Seed uint64
	// MaxLen caps a mutated input's length (default 64 KiB).
	MaxLen int
}

// Run calls fn with every seed and then with mutations of them. A failure
// names the iteration and the input (quoted, cut to 512 bytes) so it can be
// added to the fuzz target's seeds.
func Run(t *testing.T, seeds [][]byte, opt Options, fn func(t *testing.T, data []byte)) {
	t.Helper()
	if opt.Iterations <= 0 {
		opt.Iterations = 2000
	}
	if opt.Budget <= 0 {
		opt.Budget = 1500 * time.Millisecond
	}
	if opt.Seed == 0 {
		opt.Seed = 1
	}
	if opt.MaxLen <= 0 {
		opt.MaxLen = 64 << 10
	}
	if len(seeds) == 0 {
		seeds = [][]byte{nil}
	}
	for i, s := range seeds {
		check(t, "seed", i, s, fn)
	}
	rng := rand.New(rand.NewPCG(opt.Seed, 0x6d7870726f6265))
	deadline := time.Now().Add(opt.Budget)
	n := 0
	for ; n < opt.Iterations && time.Now().Before(deadline); n++ {
		in := Mutate(rng, seeds[rng.IntN(len(seeds))], seeds, opt.MaxLen)
		if !check(t, "mutation", n, in, fn) {
			return
		}
	}
	t.Logf("fuzzmut: %d seeds and %d mutations passed", len(seeds), n)
}

func check(t *testing.T, kind string, i int, in []byte, fn func(t *testing.T, data []byte)) bool {
	t.Helper()
	// No subtest per input (thousands of them would flood `go test -json`):
	// fn runs on t itself, and a deferred report names the input when fn
	// failed, panicked or called t.Fatal (which unwinds through here).
	done := false
	defer func() {
		if done {
			return
		}
		if p := recover(); p != nil {
			t.Fatalf("%s %d panicked: %v\ninput: %q", kind, i, p, cut(in))
		}
		t.Logf("%s %d failing input: %q", kind, i, cut(in))
	}()
	fn(t, in)
	done = !t.Failed()
	if !done {
		t.Logf("%s %d failing input: %q", kind, i, cut(in))
		done = true
		return false
	}
	return true
}

func cut(b []byte) []byte {
	if len(b) > 512 {
		return b[:512]
	}
	return b
}

// Mutate returns a mutated copy of in: one to four edits drawn from flips,
// insertions (of random bytes, Tokens or a copy of a part of the input),
// deletions, truncation and splicing with another seed.
func Mutate(rng *rand.Rand, in []byte, seeds [][]byte, maxLen int) []byte {
	out := append([]byte(nil), in...)
	for edits := 1 + rng.IntN(4); edits > 0; edits-- {
		pos := 0
		if len(out) > 0 {
			pos = rng.IntN(len(out) + 1)
		}
		switch rng.IntN(8) {
		case 0: // flip a bit
			if len(out) > 0 {
				i := rng.IntN(len(out))
				out[i] ^= 1 << rng.IntN(8)
			}
		case 1: // random byte
			out = insert(out, pos, []byte{byte(rng.IntN(256))})
		case 2, 3: // a token
			out = insert(out, pos, Tokens[rng.IntN(len(Tokens))])
		case 4: // delete a run
			if len(out) > 0 {
				i := rng.IntN(len(out))
				j := min(len(out), i+1+rng.IntN(16))
				out = append(out[:i], out[j:]...)
			}
		case 5: // duplicate a part (deep nesting, repeated keys)
			if len(out) > 0 {
				i := rng.IntN(len(out))
				j := min(len(out), i+1+rng.IntN(64))
				part := append([]byte(nil), out[i:j]...)
				for k := rng.IntN(8); k >= 0; k-- {
					out = insert(out, pos, part)
				}
			}
		case 6: // truncate
			if len(out) > 0 {
				out = out[:rng.IntN(len(out))]
			}
		case 7: // splice with another seed
			if len(seeds) > 0 {
				o := seeds[rng.IntN(len(seeds))]
				if len(o) > 0 {
					i := rng.IntN(len(o))
					out = append(out[:pos:pos], append(append([]byte(nil), o[i:]...), out[pos:]...)...)
				}
			}
		}
		if len(out) > maxLen {
			out = out[:maxLen]
		}
	}
	return out
}

func insert(b []byte, pos int, ins []byte) []byte {
	if pos > len(b) {
		pos = len(b)
	}
	out := make([]byte, 0, len(b)+len(ins))
	out = append(out, b[:pos]...)
	out = append(out, ins...)
	return append(out, b[pos:]...)
}
