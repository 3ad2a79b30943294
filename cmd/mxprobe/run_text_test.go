package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/mxprobe/mxprobe/probes"
)

// hostileText is what a hostile homeserver puts in its error: clear the
// screen, set the terminal title (OSC), ring the bell, move the cursor
// home, and reverse the text direction.
const hostileText = "\x1b[2J\x1b]0;pwned\x07\a\rrewritten\u202esdrawkcab\u009b31m\xff"

// TestRunOutputHasNoControlCharacters: `mxprobe run` prints a homeserver's
// error text with its control characters escaped (main printed ESC, the
// OSC title and BEL raw), in the one-line and the detailed form; the
// stored Result has them escaped too.
func TestRunOutputHasNoControlCharacters(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_, _ = w.Write([]byte(`{"errcode":"M_FORBIDDEN","error":"` + strings.NewReplacer("\x1b", `\u001b`, "\x07", `\u0007`, "\r", `\r`, "\u202e", `\u202e`, "\u009b", `\u009b`).Replace(hostileText) + `"}`))
	}))
	defer srv.Close()
	cfg := writeFile(t, "mx.yml", "global: {homeserver_url: "+srv.URL+"}\ntenants:\n  - {id: acme, bot: {user: bot, password: bot-password}}\nprobes:\n  - {name: login, type: login}\n")
	code, out, errOut := runCLI(t, "run", "login", "--tenant", "acme", "--config.file", cfg)
	if code != 1 || !strings.Contains(out, "M_FORBIDDEN") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(out, `\x1b[2J\x1b]0;pwned\x07`) {
		t.Errorf("the escaped text is not shown:\n%q", out)
	}
	for _, bad := range []string{"\x1b", "\x07", "\r", "\u202e", "\u009b"} {
		if strings.Contains(out+errOut, bad) {
			t.Errorf("output carries %q:\n%q", bad, out)
		}
	}
	// The printers themselves, on a Result that did not come through a
	// recorder.
	r := probes.Result{Probe: "p", Outcome: probes.OutcomeFailure, FailedStep: "s" + hostileText, Error: hostileText,
		Steps: []probes.Step{{Name: "s", Detail: hostileText}}, Signals: map[string]float64{"x:" + hostileText: 1}}
	var b strings.Builder
	printResult(&b, r)
	b.WriteString(summaryLine(r))
	printTable(&b, []probes.Result{r})
	for _, bad := range []string{"\x1b", "\x07", "\r", "\u202e", "\u009b"} {
		if strings.Contains(b.String(), bad) {
			t.Errorf("printers let %q through:\n%q", bad, b.String())
		}
	}
}
