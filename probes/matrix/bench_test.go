package matrix

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	promcfg "github.com/prometheus/common/config"
	mxid "maunium.net/go/mautrix/id"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv/fakehs"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

func fakeFixture(tb testing.TB) (*fakehs.Server, *RoundtripProbe) {
	hs := fakehs.New("localhost")
	tb.Cleanup(hs.Close)
	hs.AddUser("bot", "bot-pw", "Bot")
	hs.AddUser("peer", "peer-pw", "Peer")
	cfg := &config.Config{Tenants: []config.Tenant{{
		ID: "t", HomeserverURL: hs.URL, ServerName: "localhost",
		Bot: config.Account{Method: config.MethodPassword, User: "bot", Password: promcfg.Secret("bot-pw"), DisplayName: "Bot"},
	}}}
	minPL := 50
	httpc := mxclient.NewHTTPClient()
	tb.Cleanup(httpc.CloseIdleConnections)
	p := &RoundtripProbe{Name: "roundtrip", Manager: auth.NewManager(httpc), Tenants: cfg.TenantMap(nil), Settings: &RoundtripSettings{
		Peer:          &config.Account{Method: config.MethodPassword, User: "peer", Password: promcfg.Secret("peer-pw")},
		MinPowerLevel: &minPL, RoomNamePrefix: DefaultRoomNamePrefix,
		SyncTimeout: config.Duration(5 * time.Second), CleanupTimeout: config.Duration(5 * time.Second),
		SweepMaxAge: config.Duration(time.Hour), SweepInterval: config.Duration(time.Hour),
	}}
	return hs, p
}

// TestRoundtripFakeHS runs the round trip against the in-process stand-in
// (the benchmark's set-up must itself be a passing round trip).
func TestRoundtripFakeHS(t *testing.T) {
	hs, p := fakeFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 3; i++ {
		mustOK(t, p.Run(ctx, "t"))
	}
	if len(hs.JoinedRooms("bot")) != 0 || len(hs.JoinedRooms("peer")) != 0 {
		t.Fatal("rooms left behind on the stand-in")
	}
	if n := hs.Requests()["PUT send"]; n != 3 {
		t.Fatalf("sends: %d", n)
	}
}

// bareRoundtrip makes the requests of one steady-state round trip (no
// login, no sweep) with plain net/http.
func bareRoundtrip(ctx context.Context, c *http.Client, base, botTok, peerTok, botID, peerID string, n int) error {
	do := func(method, path, tok string, body any, out any) error {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequestWithContext(ctx, method, base+"/_matrix/client/v3"+path, rd)
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
		}
		if out != nil {
			return json.Unmarshal(b, out)
		}
		return nil
	}
	var created struct {
		RoomID string `json:"room_id"`
	}
	ms := time.Now().UnixMilli()
	if err := do("POST", "/createRoom", botTok, map[string]any{
		"preset": "private_chat", "visibility": "private", "name": fmt.Sprintf("mxprobe-probe t %d", ms),
		"creation_content": map[string]any{CreationMarker: true},
		"initial_state":    []any{map[string]any{"type": MarkerEventType, "state_key": "", "content": Marker{Tenant: "t", CreatedMS: ms}}},
	}, &created); err != nil {
		return err
	}
	room := url.PathEscape(created.RoomID)
	if err := do("POST", "/rooms/"+room+"/invite", botTok, map[string]any{"user_id": peerID}, nil); err != nil {
		return err
	}
	if err := do("POST", "/rooms/"+room+"/join", peerTok, map[string]any{}, nil); err != nil {
		return err
	}
	filter := url.QueryEscape(roomFilter(mxid.RoomID(created.RoomID), 1))
	var sync struct {
		NextBatch string `json:"next_batch"`
		Rooms     struct {
			Join map[string]struct {
				Timeline struct {
					Events []struct {
						Content map[string]any `json:"content"`
					} `json:"events"`
				} `json:"timeline"`
			} `json:"join"`
		} `json:"rooms"`
	}
	if err := do("GET", "/sync?timeout=0&filter="+filter, peerTok, nil, &sync); err != nil {
		return err
	}
	nonce := fmt.Sprintf("bare%d", n)
	if err := do("PUT", "/rooms/"+room+"/send/m.room.message/bare"+nonce, botTok, map[string]any{"msgtype": "m.notice", "body": nonce, NonceField: nonce}, nil); err != nil {
		return err
	}
	filter = url.QueryEscape(roomFilter(mxid.RoomID(created.RoomID), 50))
	for found := false; !found; {
		since := sync.NextBatch
		sync.Rooms.Join = nil
		if err := do("GET", "/sync?timeout=5000&since="+since+"&filter="+filter, peerTok, nil, &sync); err != nil {
			return err
		}
		for _, e := range sync.Rooms.Join[created.RoomID].Timeline.Events {
			if e.Content[NonceField] == nonce {
				found = true
			}
		}
	}
	var pl map[string]any
	if err := do("GET", "/rooms/"+room+"/state/m.room.power_levels/", botTok, nil, &pl); err != nil {
		return err
	}
	if users, _ := pl["users"].(map[string]any); users[botID] == nil {
		return fmt.Errorf("no power level for the bot")
	}
	if err := do("GET", "/profile/"+url.PathEscape(botID)+"/displayname", botTok, nil, nil); err != nil {
		return err
	}
	for _, tok := range []string{peerTok, botTok} {
		if err := do("POST", "/rooms/"+room+"/leave", tok, map[string]any{}, nil); err != nil {
			return err
		}
	}
	for _, tok := range []string{peerTok, botTok} {
		if err := do("POST", "/rooms/"+room+"/forget", tok, map[string]any{}, nil); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkRoundtripOverhead compares a steady-state round trip through
// mxprobe (mautrix, recorder, classification) with the same requests from a
// bare net/http loop, both against the in-process stand-in, alternating run
// by run. It reports both times per round trip and their ratio.
//
// latency=0 shows the client-side cost alone (the worst case for the ratio);
// latency=2ms gives each answer a small processing time, still well below
// the 10–60 ms a real homeserver takes.
func BenchmarkRoundtripOverhead(b *testing.B) {
	for _, lat := range []time.Duration{0, 2 * time.Millisecond} {
		b.Run(fmt.Sprintf("latency=%s", lat), func(b *testing.B) { benchOverhead(b, lat) })
	}
}

func benchOverhead(b *testing.B, latency time.Duration) {
	hs, p := fakeFixture(b)
	hs.Latency = latency
	ctx := context.Background()
	if r := p.Run(ctx, "t"); r.Outcome != probes.OutcomeSuccess { // log in and sweep once
		b.Fatalf("warm-up: %s %s", r.Outcome, r.Error)
	}
	botTok, peerTok := hs.Token("bot"), hs.Token("peer")
	bare := &http.Client{Transport: mxclient.NewHTTPClient().Transport}
	defer bare.CloseIdleConnections()
	if err := bareRoundtrip(ctx, bare, hs.URL, botTok, peerTok, "@bot:localhost", "@peer:localhost", -1); err != nil {
		b.Fatal(err)
	}
	var tProbe, tBare time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		r := p.Run(ctx, "t")
		tProbe += time.Since(t0)
		if r.Outcome != probes.OutcomeSuccess {
			b.Fatalf("run %d: %s %s at %s", i, r.Outcome, r.Error, r.FailedStep)
		}
		t1 := time.Now()
		if err := bareRoundtrip(ctx, bare, hs.URL, botTok, peerTok, "@bot:localhost", "@peer:localhost", i); err != nil {
			b.Fatal(err)
		}
		tBare += time.Since(t1)
	}
	b.StopTimer()
	b.ReportMetric(float64(tProbe.Nanoseconds())/float64(b.N), "mxprobe-ns/roundtrip")
	b.ReportMetric(float64(tBare.Nanoseconds())/float64(b.N), "bare-ns/roundtrip")
	b.ReportMetric(float64(tProbe)/float64(tBare), "ratio")
}
