package notify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	promcfg "github.com/prometheus/common/config"

	"github.com/mxprobe/mxprobe/alerts"
	"github.com/mxprobe/mxprobe/alerts/notify"
	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
)

// TestMatrixRoomPostReadBack: the Matrix notifier logs in with a password on
// the local Dendrite, posts a firing and a resolved notice into a room, and
// a member of the room reads both back; the resolve replies to the firing.
func TestMatrixRoomPostReadBack(t *testing.T) {
	d := testenv.SharedDendrite(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	user, pw := d.User(t, "alerts")
	token, err := d.Login(ctx, user, pw)
	if err != nil {
		t.Fatal(err)
	}
	b, err := d.Do(ctx, http.MethodPost, "/_matrix/client/v3/createRoom", token, []byte(`{"preset":"private_chat","name":"alerts"}`))
	if err != nil {
		t.Fatal(err)
	}
	var room struct {
		RoomID string `json:"room_id"`
	}
	if err := json.Unmarshal(b, &room); err != nil {
		t.Fatal(err)
	}

	httpc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	defer httpc.CloseIdleConnections()
	n, err := notify.NewMatrix("ops-room", &config.MatrixNotifier{HomeserverURL: d.URL, RoomID: room.RoomID, User: user, Password: promcfg.Secret(pw)}, notify.Options{HTTP: httpc})
	if err != nil {
		t.Fatal(err)
	}
	since := time.Now().Add(-5 * time.Minute)
	note := alerts.Notification{ID: "x", Rule: "login_failing", Tenant: "acme", Probe: "login", Severity: "critical",
		State: alerts.StateFiring, Since: since, FiredAt: since, Class: "auth_failed", Step: "login",
		Annotations: map[string]string{"summary": "tenant acme: probe login failed 3 times in a row",
			alerts.RunbookAnnotation: alerts.RunbookBase + "login-failing-or-slow"}}
	ref, err := n.Notify(ctx, note)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ref, "$") {
		t.Fatalf("ref %q is not an event id", ref)
	}
	note.State, note.ResolvedAt, note.Ref = alerts.StateResolved, time.Now(), ref
	if _, err := n.Notify(ctx, note); err != nil {
		t.Fatal(err)
	}

	// Read back as the room's member, newest first.
	path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/messages?dir=b&limit=10", url.PathEscape(room.RoomID))
	b, err = d.Do(ctx, http.MethodGet, path, token, nil)
	if err != nil {
		t.Fatal(err)
	}
	var msgs struct {
		Chunk []struct {
			Type    string `json:"type"`
			EventID string `json:"event_id"`
			Content struct {
				MsgType       string `json:"msgtype"`
				Body          string `json:"body"`
				FormattedBody string `json:"formatted_body"`
				RelatesTo     struct {
					InReplyTo struct {
						EventID string `json:"event_id"`
					} `json:"m.in_reply_to"`
				} `json:"m.relates_to"`
			} `json:"content"`
		} `json:"chunk"`
	}
	if err := json.Unmarshal(b, &msgs); err != nil {
		t.Fatal(err)
	}
	var bodies []string
	var resolvedReply string
	for _, e := range msgs.Chunk {
		if e.Type != "m.room.message" {
			continue
		}
		bodies = append(bodies, e.Content.Body)
		link := `<a href="` + alerts.RunbookBase + `login-failing-or-slow">Runbook</a>`
		if !strings.Contains(e.Content.Body, "Runbook: "+alerts.RunbookBase+"login-failing-or-slow") || !strings.Contains(e.Content.FormattedBody, link) {
			t.Errorf("message read back does not link the runbook: %q / %q", e.Content.Body, e.Content.FormattedBody)
		}
		if strings.Contains(e.Content.Body, "[RESOLVED]") {
			resolvedReply = e.Content.RelatesTo.InReplyTo.EventID
		}
		if e.Content.MsgType != "m.notice" {
			t.Errorf("msgtype %q, want m.notice", e.Content.MsgType)
		}
	}
	if len(bodies) != 2 || !strings.Contains(bodies[1], "[FIRING] login_failing · tenant acme") ||
		!strings.Contains(bodies[1], "Failing step: login") || !strings.Contains(bodies[0], "[RESOLVED]") {
		t.Fatalf("room messages read back: %q", bodies)
	}
	if resolvedReply != ref {
		t.Errorf("resolve replies to %q, want the firing event %q", resolvedReply, ref)
	}
	for _, body := range bodies {
		if strings.Contains(body, pw) {
			t.Fatal("the password leaked into the room")
		}
	}
}

// TestMatrixRunbookLink: the runbook_url annotation becomes a "Runbook" link
// in the HTML (attribute-escaped) and a line of the plain body; a URL of
// another scheme is not linked, and no annotation means no link.
func TestMatrixRunbookLink(t *testing.T) {
	base := alerts.Notification{Rule: "r", Probe: "login", Severity: "warning", State: alerts.StateFiring,
		Since: time.Unix(1700000000, 0)}
	for _, c := range []struct {
		url, body, html string
	}{
		{"https://wiki.example/run?a=1&b=\"x\"", "Runbook: https://wiki.example/run?a=1&b=\"x\"",
			`<a href="https://wiki.example/run?a=1&amp;b=&#34;x&#34;">Runbook</a>`},
		{"javascript:alert(1)", "", ""},
		{"", "", ""},
	} {
		n := base
		n.Annotations = map[string]string{"summary": "s"}
		if c.url != "" {
			n.Annotations[alerts.RunbookAnnotation] = c.url
		}
		got := notify.MatrixContent(n)
		if c.body == "" {
			if strings.Contains(got.Body, "Runbook") || strings.Contains(got.FormattedBody, "Runbook") || strings.Contains(got.FormattedBody, "javascript") {
				t.Errorf("%q: linked: %q / %q", c.url, got.Body, got.FormattedBody)
			}
			continue
		}
		if !strings.Contains(got.Body, c.body) || !strings.Contains(got.FormattedBody, c.html) {
			t.Errorf("%q: body %q, html %q; want %q and %q", c.url, got.Body, got.FormattedBody, c.body, c.html)
		}
	}
}
