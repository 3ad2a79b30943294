package matrix

import (
	"context"
	"testing"
	"time"

	promcfg "github.com/prometheus/common/config"

	"github.com/mxprobe/mxprobe/config"
)

// TestSharedPeerSweptOncePerInterval: the first runs of two tenants that
// share the peer list the peer's rooms once (the first run's sweep covers
// every tenant's stale rooms), each bot's rooms once; an explicit Sweep
// lists both accounts again.
func TestSharedPeerSweptOncePerInterval(t *testing.T) {
	hs, p := fakeFixture(t)
	hs.AddUser("bot2", "bot2-pw", "Bot 2")
	p.Tenants["u"] = &config.Tenant{ID: "u", HomeserverURL: hs.URL, ServerName: "localhost",
		Bot: config.Account{Method: config.MethodPassword, User: "bot2", Password: promcfg.Secret("bot2-pw"), DisplayName: "Bot 2"}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	mustOK(t, p.Run(ctx, "t"))
	mustOK(t, p.Run(ctx, "u"))
	if n := hs.Requests()["GET joined_rooms"]; n != 3 {
		t.Fatalf("joined_rooms listed %d times in the first runs of two tenants, want 3 (bot, peer, bot2)", n)
	}
	mustOK(t, p.Sweep(ctx, "u"))
	if n := hs.Requests()["GET joined_rooms"]; n != 5 {
		t.Fatalf("joined_rooms listed %d times after an explicit sweep, want 5", n)
	}
}
