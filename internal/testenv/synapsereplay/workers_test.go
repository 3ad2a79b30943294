package synapsereplay

import (
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
