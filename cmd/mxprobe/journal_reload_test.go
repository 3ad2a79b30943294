package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/mxprobe/mxprobe/internal/testenv/fakehs"
	"github.com/mxprobe/mxprobe/probes/matrix"
)

// TestReloadsShareOneRoomJournal: configuration reloads hand the new round
// trip the process's journal instead of a new one (each holds its log
// open): after five reloads, each followed by a round trip, data_dir/rooms
// holds one log, and none once the daemon stopped with nothing in it.
func TestReloadsShareOneRoomJournal(t *testing.T) {
	hs := fakehs.New("localhost")
	t.Cleanup(hs.Close)
	hs.AddUser("bot", "bot-pw", "Bot")
	hs.AddUser("peer", "peer-pw", "Peer")
	dir := t.TempDir()
	cfg := func(timeout int) string {
		return fmt.Sprintf(`global:
  homeserver_url: %s
  server_name: localhost
  data_dir: %s
synapse_limits:
  disabled: true
tenants:
  - id: t
    bot: {user: bot, password: bot-pw}
probes:
  - name: roundtrip
    type: roundtrip
    schedule: "@every 1h"
    timeout: %ds
    roundtrip:
      peer: {user: peer, password: peer-pw}
`, hs.URL, dir, timeout)
	}
	path := writeFile(t, "mxprobe.yml", cfg(20))
	d, err := newDaemon(&cli{configFile: path}, discard())
	if err != nil {
		t.Fatal(err)
	}
	var first *matrix.Journal
	for i := range 5 {
		if err := os.WriteFile(path, []byte(cfg(20+i)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := d.reload(); err != nil {
			t.Fatal(err)
		}
		job, ok := d.engine.Job("roundtrip")
		if !ok {
			t.Fatal("no roundtrip job")
		}
		j := job.Prober.(*matrix.RoundtripProbe).Journal
		if first == nil {
			first = j
		} else if j != first {
			t.Fatalf("reload %d made a new room journal", i)
		}
		if r, err := d.engine.Run(context.Background(), "roundtrip", "t"); err != nil || !r.OK() {
			t.Fatalf("round trip after reload %d: %v %s %s", i, err, r.Class, r.Error)
		}
	}
	logs, _ := filepath.Glob(filepath.Join(dir, "rooms", "*.jlog"))
	if len(logs) != 1 {
		t.Fatalf("%d journal logs after five reloads, want 1: %v", len(logs), logs)
	}
	d.shutdown()
	if logs, _ := filepath.Glob(filepath.Join(dir, "rooms", "*.jlog")); len(logs) != 0 {
		t.Fatalf("journal logs left after a clean stop with no room in flight: %v", logs)
	}
}
