package synapsereplay

import (
	"bytes"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
)

// TestWorkerPagesKeepFamilies checks the cut: every family of a worker page
// comes whole from a reference page, the database-wide staging gauge is the
// same on every process, and only the event persister persists events.
func TestWorkerPagesKeepFamilies(t *testing.T) {
	for _, w := range Workers {
		for i := 0; i < 2; i++ {
			b, err := WorkerPage(w, i)
			if err != nil {
				t.Fatal(err)
			}
			ss, err := ParseNaive(b)
			if err != nil {
				t.Fatalf("%s/%d: %v", w.Name, i, err)
			}
			staging := Values(ss, "synapse_federation_server_number_inbound_pdu_in_staging", nil)
			want := 1.0
			if i == 1 {
				want = 482
			}
			if len(staging) != 1 || staging[0] != want {
				t.Errorf("%s/%d: staging %v, want [%g]", w.Name, i, staging, want)
			}
			persisted := len(Values(ss, "synapse_storage_events_persisted_events_total", nil)) > 0
			if persisted != (w.Kind == "event_persister") {
				t.Errorf("%s: persisted events on the page: %v", w.Name, persisted)
			}
			if !strings.Contains(string(b), "# TYPE process_start_time_seconds gauge") {
				t.Errorf("%s/%d: no process_start_time_seconds", w.Name, i)
			}
		}
	}
}

// TestWorkerServerCountsUp: the first two answers are the fixture pages
// (byte for byte); later ones advance every cumulative sample by the
// increase of the pair, keep gauges, and the restarting worker restarts
// once only.
func TestWorkerServerCountsUp(t *testing.T) {
	ss, err := StartWorkers(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer CloseWorkers(ss)
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	for _, s := range ss {
		var got [][]Sample
		for k := 0; k < 4; k++ {
			resp, err := c.Get(s.URL)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if k < 2 {
				want, _ := WorkerPage(s.Spec, k)
				if !bytes.Equal(b, want) {
					t.Fatalf("%s: answer %d is not the fixture page", s.Spec.Name, k)
				}
			}
			ss, err := ParseNaive(b)
			if err != nil {
				t.Fatalf("%s/%d: %v", s.Spec.Name, k, err)
			}
			got = append(got, ss)
		}
		start := func(k int) float64 { return Values(got[k], "process_start_time_seconds", nil)[0] }
		if start(1) != start(2) || start(2) != start(3) {
			t.Errorf("%s: restarts after the second page", s.Spec.Name)
		}
		cpu := func(k int) float64 { return Values(got[k], "process_cpu_seconds_total", nil)[0] }
		if d1, d2 := cpu(2)-cpu(1), cpu(3)-cpu(2); !(d1 > 0) || math.Abs(d1-d2) > 1e-6*d1 {
			t.Errorf("%s: CPU advances by %g then %g", s.Spec.Name, d1, d2)
		}
		if s.Spec.Name == "generic1" {
			n := func(k int) float64 { return Increase(got[k-1], got[k], "synapse_http_server_responses_total", nil) }
			want := Increase(got[0], got[1], "synapse_http_server_responses_total", nil)
			if math.Abs(n(2)-want) > 1e-6*want || math.Abs(n(3)-want) > 1e-6*want {
				t.Errorf("generic1: %g, %g answers per scrape, want %g", n(2), n(3), want)
			}
		}
	}
}
