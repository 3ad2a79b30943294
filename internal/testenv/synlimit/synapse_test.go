package synlimit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/internal/testenv/synlimit"
)

// The limiter model against Synapse itself: one scripted burst of logins,
// invitations and messages, sent once to a Synapse with its default limits
// and once to the model (with its defaults) in front of Dendrite, gets its
// 429s at the same requests from both.
//
// rc_message is the one limiter whose refill (0.2/s) a slow machine could
// reach within the burst (Synapse holds each refusal 0.5 s); both sides
// get the same slower refill so the comparison does not depend on how fast
// the machine is. Every other limiter keeps Synapse's default.
func TestModelMatchesSynapse(t *testing.T) {
	const slowMessage = 0.001

	syn := testenv.NewSynapse(t, testenv.SynapseOptions{RateLimits: map[string]any{
		"rc_message": map[string]any{"per_second": slowMessage, "burst_count": 10},
	}})
	fromSynapse := burst(t, &syn.Homeserver, syn.URL)

	d := testenv.NewDendrite(t, testenv.DendriteOptions{})
	cfg := synlimit.Defaults()
	cfg.Message.PerSecond = slowMessage
	p, err := synlimit.Start(synlimit.Options{Upstream: d.URL, ServerName: d.ServerName, Config: &cfg})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	fromModel := burst(t, &d.Homeserver, p.URL)

	refused := 0
	for i := range fromSynapse {
		if i >= len(fromModel) || fromSynapse[i] != fromModel[i] {
			t.Errorf("request %d: Synapse %q, model %q", i, fromSynapse[i], at(fromModel, i))
		}
		if strings.HasSuffix(fromSynapse[i], " 429") {
			refused++
		}
	}
	if len(fromModel) != len(fromSynapse) {
		t.Errorf("%d requests against the model, %d against Synapse", len(fromModel), len(fromSynapse))
	}
	// The burst reaches rc_login.address and .account, rc_invites.per_user
	// and rc_message: a script that met no limit would compare nothing.
	if refused < 6 {
		t.Fatalf("Synapse refused only %d requests of the burst:\n%s", refused, strings.Join(fromSynapse, "\n"))
	}
	t.Logf("%d requests, %d refused alike:\n%s", len(fromSynapse), refused, strings.Join(fromSynapse, "\n"))
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "(none)"
}

// burst sends the script to base (users registered on hs with the shared
// secret, which no limiter counts) and returns "<request> <status>" lines.
func burst(t *testing.T, hs *testenv.Homeserver, base string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	reg := func(prefix string) (user, token string) {
		user, pw := hs.User(t, prefix)
		tok, err := hs.Register(ctx, user+"-t", pw, false)
		if err != nil {
			t.Fatal(err)
		}
		return user + "-t", tok
	}
	var out []string
	call := func(label, method, path, token string, body any) []byte {
		b, _ := json.Marshal(body)
		req, _ := http.NewRequestWithContext(ctx, method, base+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		rb, _ := io.ReadAll(resp.Body)
		out = append(out, fmt.Sprintf("%s %d", label, resp.StatusCode))
		return rb
	}
	roomOf := func(b []byte) string {
		var r struct {
			RoomID string `json:"room_id"`
		}
		_ = json.Unmarshal(b, &r)
		return r.RoomID
	}

	// Seven password logins of one account from one address: rc_login
	// .address and .account allow five.
	loginUser, loginPW := hs.User(t, "burst-login")
	for i := 1; i <= 7; i++ {
		call(fmt.Sprintf("login %d", i), "POST", "/_matrix/client/v3/login", "", map[string]any{
			"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": loginUser},
			"password": loginPW,
		})
	}
	// Seven inviters invite one user, each into a room of its own:
	// rc_invites.per_user (keyed by the invitee) allows five.
	invitee, _ := reg("burst-invitee")
	for i := 1; i <= 7; i++ {
		_, tok := reg(fmt.Sprintf("burst-inviter%d", i))
		room := roomOf(call(fmt.Sprintf("inviter %d createRoom", i), "POST", "/_matrix/client/v3/createRoom", tok,
			map[string]any{"preset": "private_chat"}))
		call(fmt.Sprintf("inviter %d invite", i), "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/invite", tok,
			map[string]any{"user_id": "@" + invitee + ":" + hs.ServerName})
	}
	// One user makes a room and sends twelve messages: rc_message.
	_, tok := reg("burst-sender")
	room := roomOf(call("sender createRoom", "POST", "/_matrix/client/v3/createRoom", tok, map[string]any{"preset": "private_chat"}))
	for i := 1; i <= 12; i++ {
		call(fmt.Sprintf("message %d", i), "PUT",
			fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/burst%d", url.PathEscape(room), i), tok,
			map[string]any{"msgtype": "m.text", "body": "burst"})
	}
	return out
}
