package mxclient_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/mxprobe/mxprobe/internal/testenv/fuzzmut"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// fuzzToken is the access token the client sends; a classified error must
// never carry it (unless the hostile body itself contains it).
const fuzzToken = "syt_FUZZ_SEKRIT_token_7c1e"

// canned answers every request with one fixed response, so the whole mautrix
// request/response path runs without a network.
type canned struct {
	status int
	ctype  string
	body   []byte
}

func (c canned) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		_, _ = io.Copy(io.Discard, r.Body)
		_ = r.Body.Close()
	}
	h := http.Header{}
	if c.ctype != "" {
		h.Set("Content-Type", c.ctype)
	}
	return &http.Response{
		StatusCode: c.status, Status: http.StatusText(c.status), Header: h, Request: r,
		Body: io.NopCloser(bytes.NewReader(c.body)), ContentLength: int64(len(c.body)),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
	}, nil
}

var knownClasses = map[probes.Class]bool{
	probes.ClassUnreachable: true, probes.ClassTimeout: true, probes.ClassHTTP5xx: true,
	probes.ClassAuthFailed: true, probes.ClassRateLimited: true, probes.ClassBadResponse: true,
	probes.ClassIdentityMismatch: true, probes.ClassForbidden: true, probes.ClassNotFound: true,
	probes.ClassInternal: true, probes.ClassCancelled: true, probes.ClassConfig: true,
}

// call runs one Matrix request (chosen by op) against the canned answer.
func call(ctx context.Context, cli *mautrix.Client, op byte) error {
	var err error
	switch op % 7 {
	case 0:
		_, err = cli.Whoami(ctx)
	case 1:
		_, err = cli.FullSyncRequest(ctx, mautrix.ReqSync{Timeout: 0, Since: "s1"})
	case 2:
		_, err = cli.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "bot"}, Password: "pw-FUZZ-SEKRIT"})
	case 3:
		_, err = cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	case 4:
		_, err = cli.SendMessageEvent(ctx, id.RoomID("!r:hs"), event.EventMessage, map[string]any{"msgtype": "m.text", "body": "x"})
	case 5:
		_, err = cli.JoinedRooms(ctx)
	case 6:
		_, err = cli.Versions(ctx)
	}
	return err
}

// checkReply is the fuzz body: a homeserver answer of any status, content
// type and body gives either success or a classified, bounded, secret-free
// error; never a panic.
func checkReply(t *testing.T, op byte, status uint16, ctype string, body []byte) {
	st := 100 + int(status)%500 // 100..599
	if st < 200 {
		st += 100 // 1xx answers are the transport's business, not a reply
	}
	httpc := &http.Client{Transport: canned{status: st, ctype: ctype, body: body}}
	cli, err := mxclient.New("https://hs.example", httpc)
	if err != nil {
		t.Fatal(err)
	}
	cli.AccessToken = fuzzToken
	cli.UserID = "@bot:hs.example"
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = mxclient.Call(ctx, nil, func(ctx context.Context) error { return call(ctx, cli, op) })
	if st/100 != 2 && st/100 != 3 && err == nil {
		t.Fatalf("HTTP %d accepted as success", st)
	}
	if err == nil {
		return
	}
	class := probes.Classify(err)
	if !knownClasses[class] {
		t.Fatalf("unknown class %q for %v", class, err)
	}
	if st/100 == 5 && class != probes.ClassHTTP5xx {
		t.Fatalf("HTTP %d classified %q: %v", st, class, err)
	}
	if st == 429 && class != probes.ClassRateLimited {
		t.Fatalf("HTTP 429 classified %q: %v", class, err)
	}
	msg := err.Error()
	if len(msg) > 600 {
		t.Fatalf("error message of %d bytes (remote text must be shortened)", len(msg))
	}
	if strings.Contains(msg, fuzzToken) && !bytes.Contains(body, []byte(fuzzToken)) {
		t.Fatalf("error carries the access token: %q", msg)
	}
	if strings.Contains(msg, "pw-FUZZ-SEKRIT") && !bytes.Contains(body, []byte("pw-FUZZ-SEKRIT")) {
		t.Fatalf("error carries the password: %q", msg)
	}
}

type replySeed struct {
	op     byte
	status uint16
	ctype  string
	body   string
}

func replySeeds() []replySeed {
	j := "application/json"
	syncBody, _ := json.Marshal(map[string]any{
		"next_batch": "s2",
		"rooms": map[string]any{"join": map[string]any{"!r:hs": map[string]any{
			"timeline": map[string]any{"events": []any{map[string]any{
				"type": "m.room.message", "event_id": "$e", "sender": "@peer:hs", "origin_server_ts": 1,
				"content": map[string]any{"msgtype": "m.text", "body": "mxprobe nonce 123"}}}},
		}}, "invite": map[string]any{"!i:hs": map[string]any{"invite_state": map[string]any{"events": []any{}}}}},
	})
	return []replySeed{
		{0, 100, j, `{"user_id":"@bot:hs.example","device_id":"D"}`},
		{1, 100, j, string(syncBody)},
		{2, 100, j, `{"user_id":"@bot:hs.example","access_token":"t","device_id":"D","expires_in_ms":60000,"refresh_token":"r"}`},
		{3, 100, j, `{"room_id":"!new:hs"}`},
		{4, 100, j, `{"event_id":"$ev"}`},
		{5, 100, j, `{"joined_rooms":["!a:hs","!b:hs"]}`},
		{6, 100, j, `{"versions":["v1.11"],"unstable_features":{"x":true}}`},
		{0, 301, j, `{"errcode":"M_UNKNOWN_TOKEN","error":"Unknown token","soft_logout":true}`},
		{3, 303, j, `{"errcode":"M_FORBIDDEN","error":"You are not allowed"}`},
		{4, 329, j, `{"errcode":"M_LIMIT_EXCEEDED","error":"Too many","retry_after_ms":20}`},
		{4, 329, j, `{"errcode":"M_LIMIT_EXCEEDED","error":"Too many"}`},
		{1, 400, "text/html", `<html><body>502 Bad Gateway</body></html>`},
		{1, 100, "text/html", `<html>login here</html>`},
		{2, 100, j, `{"user_id":`},
		{5, 100, j, `{"joined_rooms":"nope"}`},
		{1, 100, j, `{"next_batch":1,"rooms":[]}`},
		{0, 304, j, `{"errcode":"M_NOT_FOUND","error":"` + strings.Repeat("long line\n", 100) + `"}`},
	}
}

func FuzzMatrixReply(f *testing.F) {
	for _, s := range replySeeds() {
		f.Add(s.op, s.status, s.ctype, []byte(s.body))
	}
	f.Fuzz(checkReply)
}

// TestFuzzMatrixReplyShort runs the fuzz body over mutations of the seeds in
// `make test`: the input is packed as op, status, content type and body.
func TestFuzzMatrixReplyShort(t *testing.T) {
	pack := func(s replySeed) []byte {
		b := []byte{s.op, 0, 0, byte(len(s.ctype))}
		binary.BigEndian.PutUint16(b[1:3], s.status)
		return append(append(b, s.ctype...), s.body...)
	}
	var seeds [][]byte
	for _, s := range replySeeds() {
		seeds = append(seeds, pack(s))
	}
	fuzzmut.Run(t, seeds, fuzzmut.Options{Iterations: 1500, Seed: 21}, func(t *testing.T, b []byte) {
		if len(b) < 4 {
			return
		}
		n := min(int(b[3]), len(b)-4)
		checkReply(t, b[0], binary.BigEndian.Uint16(b[1:3]), string(b[4:4+n]), b[4+n:])
	})
}
