package auth

import (
	"fmt"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/config"
)

// BenchmarkSessionStore is the state write of one login (Manager.store)
// with 10,000 other tenants' sessions stored: what a daemon with that many
// tenants pays per login.
func BenchmarkSessionStore(b *testing.B) {
	const tenants = 10_000
	m := NewManager(nil)
	m.Store = &FileStore{Dir: b.TempDir()}
	sess := func(i int) *Session {
		return &Session{UserID: fmt.Sprintf("@bot%d:example.net", i), DeviceID: "MXPROBEDEV", AccessToken: fmt.Sprintf("syt_%032d", i),
			RefreshToken: fmt.Sprintf("syr_%032d", i), Method: config.MethodPassword, HomeserverURL: "https://matrix.example.net",
			LoggedIn: time.Unix(1_800_000_000, 0)}
	}
	m.mu.Lock()
	for i := 0; i < tenants; i++ {
		m.sessions[fmt.Sprintf("t%d/bot", i)] = sess(i)
	}
	m.mu.Unlock()
	if err := m.Store.(*FileStore).SaveSessions(m.Sessions()); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		m.store(fmt.Sprintf("t%d/bot", i%tenants), sess(i))
	}
}
