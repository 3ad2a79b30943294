package matrix

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// TestReceivePausesWhenSyncIgnoresTimeout: a homeserver that answers /sync
// at once with nothing new, although a long poll was asked for, is polled at
// a gentle pace until the deadline, not back to back.
func TestReceivePausesWhenSyncIgnoresTimeout(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"next_batch":"s1"}`))
	}))
	defer srv.Close()
	httpc := mxclient.NewHTTPClient()
	defer httpc.CloseIdleConnections()
	cli, err := mxclient.New(srv.URL, httpc)
	if err != nil {
		t.Fatal(err)
	}
	cli.AccessToken = "t"
	r := &runner{rec: probes.NewRecorder("p", "roundtrip", "x")}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err = r.receive(ctx, &actor{cli: cli}, "!room:x", "s0", "nonce", time.Now(), 30*time.Second)
	if probes.Classify(err) != probes.ClassTimeout {
		t.Fatalf("receive: %v (class %s)", err, probes.Classify(err))
	}
	// 2 s minus the final margin at one poll per emptySyncPause is about 19
	// polls; back to back it would be hundreds.
	if n := calls.Load(); n < 5 || n > 40 {
		t.Fatalf("%d /sync requests in 2 s", n)
	}
}

// Two fresh filters of one room differ (Synapse's sync cache key includes
// the filter) and keep what the room filter asks for.
func TestFreshFilterIsUniqueAndKeepsTheRoom(t *testing.T) {
	base := roomFilter("!r:example.org", 1)
	a, b := freshFilter(base), freshFilter(base)
	if a == b || a == base {
		t.Fatalf("fresh filters are not unique: %s", a)
	}
	var f struct {
		Presence struct {
			NotTypes []string `json:"not_types"`
		} `json:"presence"`
		Room struct {
			Rooms []string `json:"rooms"`
		} `json:"room"`
	}
	if err := json.Unmarshal([]byte(a), &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Room.Rooms) != 1 || f.Room.Rooms[0] != "!r:example.org" || len(f.Presence.NotTypes) != 2 || f.Presence.NotTypes[0] != "*" {
		t.Fatalf("fresh filter %s", a)
	}
}
