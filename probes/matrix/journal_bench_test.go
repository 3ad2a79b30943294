package matrix

import (
	"testing"
	"time"
)

// BenchmarkJournalRoom is the journal's share of one round trip: the room
// recorded before createRoom, its id once known, and forgotten after the
// cleanup.
func BenchmarkJournalRoom(b *testing.B) {
	j := &Journal{Dir: b.TempDir()}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		e := &JournalEntry{Tenant: "acme", Probe: "roundtrip", Homeserver: "https://matrix.example.net", CreatedMS: time.Now().UnixMilli()}
		if err := j.Add(e); err != nil {
			b.Fatal(err)
		}
		e.RoomID = "!abcdefghijklmnop:example.net"
		if err := j.Update(e); err != nil {
			b.Fatal(err)
		}
		if err := j.Remove(e); err != nil {
			b.Fatal(err)
		}
	}
}
