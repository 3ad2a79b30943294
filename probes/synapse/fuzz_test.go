package synapse

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

// fuzzSeeds are page fragments: the real Synapse fragment, the start of a
// reference page, and hand-written edge cases.
func fuzzSeeds(t testing.TB) [][]byte {
	healthy := page(t, "healthy_t0")
	cut := bytes.LastIndexByte(healthy[:8192], '\n')
	return [][]byte{
		page(t, "real_fragment_test_metrics"),
		healthy[:cut+1],
		[]byte("# TYPE synapse_http_server_response_time_seconds histogram\n" +
			`synapse_http_server_response_time_seconds_bucket{code="500",le="0.5",method="PUT",servlet="RoomSendEventRestServlet",tag=""} 3.0` + "\n" +
			`synapse_http_server_response_time_seconds_bucket{code="500",le="+Inf",method="PUT",servlet="RoomSendEventRestServlet",tag=""} 4.0` + "\n" +
			`synapse_http_server_response_time_seconds_count{code="500",method="PUT",servlet="RoomSendEventRestServlet",tag=""} 4.0` + "\n" +
			`synapse_http_server_response_time_seconds_sum{code="500",method="PUT",servlet="RoomSendEventRestServlet",tag=""} 1.5` + "\n"),
		[]byte(`synapse_build_info{version="1.2\"3\\x\n"} 1 1700000000000` + "\n"),
		[]byte("process_start_time_seconds NaN\nprocess_open_fds +Inf\n# EOF\n"),
		[]byte("<html>\n"),
		[]byte("a{b=\"c\",} 1\n"),
	}
}

// checkParse is the fuzz body: parsing never panics, a failure is a
// ParseError naming a line of the page, and deriving from what parsed never
// panics nor yields NaN.
func checkParse(t *testing.T, prev *Snapshot, data []byte) {
	snap, err := Parse(data, prev)
	if err != nil {
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Fatalf("error is not a ParseError: %v", err)
		}
		if lines := bytes.Count(data, []byte("\n")) + 1; pe.Line < 0 || pe.Line > lines {
			t.Fatalf("error names line %d of a %d-line page: %v", pe.Line, lines, err)
		}
		return
	}
	if snap.Samples > bytes.Count(data, []byte("\n")) {
		t.Fatalf("%d samples on %d lines", snap.Samples, bytes.Count(data, []byte("\n")))
	}
	snap.Time = time.Unix(100, 0)
	var base *Snapshot
	if prev != nil {
		base = prev
		base.Time = time.Unix(40, 0)
	}
	d := Derive(base, snap, Options{})
	for k, v := range d.Signals {
		if v != v {
			t.Fatalf("signal %s is NaN", k)
		}
	}
}

func FuzzParsePage(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	prev, err := Parse(page(f, "healthy_t0"), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkParse(t, nil, data)
		checkParse(t, prev, data)
	})
}

// TestFuzzParsePageShort runs the fuzz body over the seeds and a fixed
// budget of deterministic random mutations, so `make test` exercises it
// without `go test -fuzz` (which `make fuzz` runs for FUZZTIME).
func TestFuzzParsePageShort(t *testing.T) {
	seeds := fuzzSeeds(t)
	prev, err := Parse(page(t, "healthy_t0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(5, 2026))
	alphabet := []byte("{}\",=\\ \n#\t<>+-.eE0123456789abcINFnaleservlt_:")
	deadline := time.Now().Add(2 * time.Second)
	n := 0
	for ; n < 200000 && time.Now().Before(deadline); n++ {
		s := seeds[rng.IntN(len(seeds))]
		b := append([]byte(nil), s...)
		for k := rng.IntN(6) + 1; k > 0 && len(b) > 0; k-- {
			i := rng.IntN(len(b))
			switch rng.IntN(5) {
			case 0: // flip a byte
				b[i] = alphabet[rng.IntN(len(alphabet))]
			case 1: // delete a run
				j := min(len(b), i+rng.IntN(16)+1)
				b = append(b[:i], b[j:]...)
			case 2: // insert
				b = append(b[:i], append([]byte{alphabet[rng.IntN(len(alphabet))]}, b[i:]...)...)
			case 3: // truncate
				b = b[:i]
			case 4: // random byte
				b[i] = byte(rng.IntN(256))
			}
		}
		var p *Snapshot
		if n%2 == 1 {
			p = prev
		}
		checkParse(t, p, b)
	}
	t.Logf("%d mutated pages parsed", n)
}
