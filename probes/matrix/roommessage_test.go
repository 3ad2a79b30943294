package matrix

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	promcfg "github.com/prometheus/common/config"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// room_message against Synapse: the bot is not in the public room, so the
// first run joins first (and says so); the second just sends and receives.
// A private room the bot cannot join fails as forbidden.
func TestRoomMessageJoinsFirst(t *testing.T) {
	d := testenv.SharedSynapse(t)
	owner, ownerPW := d.User(t, "owner")
	botUser, botPW := d.User(t, "rm-bot")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tok, err := d.Login(ctx, owner, ownerPW)
	if err != nil {
		t.Fatal(err)
	}
	mkRoom := func(preset string) string {
		b, err := d.Do(ctx, "POST", "/_matrix/client/v3/createRoom", tok, []byte(`{"preset":"`+preset+`"}`))
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			RoomID string `json:"room_id"`
		}
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatal(err)
		}
		return out.RoomID
	}
	public, private := mkRoom("public_chat"), mkRoom("private_chat")
	cfg := &config.Config{Tenants: []config.Tenant{
		{ID: "rm", HomeserverURL: d.URL, ServerName: d.ServerName, RoomID: public,
			Bot: config.Account{Method: config.MethodPassword, User: botUser, Password: promcfg.Secret(botPW)}},
		{ID: "closed", HomeserverURL: d.URL, ServerName: d.ServerName, RoomID: private,
			Bot: config.Account{Method: config.MethodPassword, User: botUser, Password: promcfg.Secret(botPW)}},
	}}
	httpc := mxclient.NewHTTPClient()
	defer httpc.CloseIdleConnections()
	p := &RoomMessageProbe{Name: "room_message", Manager: auth.NewManager(httpc), Tenants: cfg.TenantMap(nil),
		Settings: &RoomMessageSettings{SyncTimeout: config.Duration(5 * time.Second)}}

	r := p.Run(ctx, "rm")
	mustOK(t, r)
	if got := stepNames(r); !slices.Equal(got, []string{"login", "sync", "join", "send", "receive"}) {
		t.Fatalf("first run steps %v", got)
	}
	if r.Steps[2].Detail == "" {
		t.Fatal("the join step should say why it joined")
	}
	if _, ok := r.Signals[probes.SignalDeliverySeconds]; !ok {
		t.Fatal("no delivery signal")
	}
	r = p.Run(ctx, "rm")
	mustOK(t, r)
	if got := stepNames(r); !slices.Equal(got, []string{"sync", "send", "receive"}) {
		t.Fatalf("second run steps %v", got)
	}

	r = p.Run(ctx, "closed")
	if r.OK() || r.FailedStep != "join" || r.Class != probes.ClassForbidden {
		t.Fatalf("private room: want forbidden at join, got %s %s at %s: %s", r.Outcome, r.Class, r.FailedStep, r.Error)
	}
}
