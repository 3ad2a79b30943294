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

// The Manager records each login and each forgotten session in the store
// as it happens: a restarted process (a new store on the same directory)
// restores exactly the sessions that were live, and none of a method that
// is not kept.
func TestManagerSessionsAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	fs := &FileStore{Dir: dir}
	m := NewManager(nil)
	m.Store = fs
	s := func(tok, method string) *Session {
		return &Session{UserID: "@u:example.net", AccessToken: tok, Method: method, HomeserverURL: "https://hs.example"}
	}
	m.store("a/bot", s("syt_a1", config.MethodPassword))
	m.store("a/bot", s("syt_a2", config.MethodPassword))
	m.store("b/bot", s("syt_b", config.MethodPassword))
	m.store("c/bot", s("syt_c", config.MethodPassword))
	m.store("t/bot", s("syt_t", config.MethodToken))
	m.Forget("b/bot")
	m.store("c/bot", s("syt_c2", config.MethodToken)) // now a fixed token: not kept
	if err := fs.Close(); err != nil {
		t.Fatal(err)
	}
	m2 := NewManager(nil)
	m2.Store = &FileStore{Dir: dir}
	if n := m2.Restore(); n != 1 {
		t.Fatalf("restored %d sessions, want 1: %v", n, m2.Sessions())
	}
	if got := m2.Sessions()["a/bot"]; got == nil || got.AccessToken != "syt_a2" {
		t.Fatalf("restored: %+v", m2.Sessions())
	}
}
