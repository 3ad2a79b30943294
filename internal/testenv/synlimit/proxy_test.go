package synlimit

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is an injected clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// upstream is a homeserver stand-in: tokens are "tok-<localpart>", every
// request succeeds, nobody is joined anywhere, logins with password "bad"
// are refused.
func upstream(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer tok-")
		switch {
		case strings.HasSuffix(r.URL.Path, "/account/whoami"):
			fmt.Fprintf(w, `{"user_id":"@%s:hs"}`, tok)
		case strings.HasSuffix(r.URL.Path, "/joined_members"):
			w.WriteHeader(403)
			io.WriteString(w, `{"errcode":"M_FORBIDDEN"}`)
		case strings.HasSuffix(r.URL.Path, "/login"):
			var req struct {
				Password   string `json:"password"`
				Identifier struct {
					User string `json:"user"`
				} `json:"identifier"`
			}
			_ = json.NewDecoder(r.Body).Decode(&req)
			if req.Password == "bad" {
				w.WriteHeader(403)
				io.WriteString(w, `{"errcode":"M_FORBIDDEN"}`)
				return
			}
			fmt.Fprintf(w, `{"user_id":"@%s:hs","access_token":"tok-%s"}`, req.Identifier.User, req.Identifier.User)
		default:
			io.WriteString(w, `{"room_id":"!r:hs","event_id":"$e"}`)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// keepMessage raises rc_message for user unless an override is set, so
// another limiter can be driven alone.
func keepMessage(e *env, user string) {
	e.p.mu.Lock()
	_, set := e.p.overrides[user]
	e.p.mu.Unlock()
	if !set {
		e.p.Override(user, 1000, 1000)
	}
}

type env struct {
	p   *Proxy
	c   *clock
	cli *http.Client
}

func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	up := upstream(t)
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	opts.Upstream, opts.Now, opts.Pause, opts.ServerName = up.URL, c.Now, -1, "hs"
	p, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	cli := &http.Client{Timeout: 10 * time.Second}
	t.Cleanup(func() { cli.CloseIdleConnections(); p.Close() })
	return &env{p: p, c: c, cli: cli}
}

// do sends one request as user (a localpart; "" for none) and returns the
// status and the retry_after_ms of a 429.
func (e *env) do(t *testing.T, user, method, path, body string) (int, int64) {
	t.Helper()
	req, _ := http.NewRequest(method, e.p.URL+path, strings.NewReader(body))
	if user != "" {
		req.Header.Set("Authorization", "Bearer tok-"+user)
	}
	resp, err := e.cli.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Errcode string `json:"errcode"`
		Retry   int64  `json:"retry_after_ms"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode == 429 {
		if out.Errcode != "M_LIMIT_EXCEEDED" || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("429 without M_LIMIT_EXCEEDED/Retry-After: %+v %v", out, resp.Header)
		}
	}
	return resp.StatusCode, out.Retry
}

// limiterCase drives one limiter: act(i) performs the i-th action and
// returns its status; the limiter must refuse action burst+1 with a
// retry_after_ms of about 1/rate, allow one action after 1/rate, and let an
// exempt requester through.
type limiterCase struct {
	name   string
	s      func(Config) Settings
	act    func(t *testing.T, e *env, i int) (int, int64)
	exempt func(e *env)                                   // sets up the exemption (nil: none exists)
	exAct  func(t *testing.T, e *env, i int) (int, int64) // action of the exempt requester (act when nil)
}

func TestEachLimiter(t *testing.T) {
	login := func(user, password string) string {
		return fmt.Sprintf(`{"type":"m.login.password","identifier":{"type":"m.id.user","user":%q},"password":%q}`, user, password)
	}
	asOpts := Options{AppServices: []AppService{{Token: "tok-as", Sender: "@as:hs", RateLimited: false}}}
	cases := []limiterCase{
		{name: RcMessage, s: func(c Config) Settings { return c.Message },
			act: func(t *testing.T, e *env, i int) (int, int64) {
				return e.do(t, "bot", "PUT", fmt.Sprintf("/_matrix/client/v3/rooms/!r:hs/send/m.room.message/t%d", i), `{}`)
			},
			exempt: func(e *env) { e.p.Override("@bot:hs", 0, 0) }},
		{name: RcRoomCreation, s: func(c Config) Settings { return c.RoomCreation },
			act: func(t *testing.T, e *env, i int) (int, int64) {
				keepMessage(e, "@bot:hs") // keep rc_message out of the way
				return e.do(t, "bot", "POST", "/_matrix/client/v3/createRoom", `{}`)
			},
			exempt: func(e *env) { e.p.Override("@bot:hs", 0, 0) }},
		{name: RcJoinsLocal, s: func(c Config) Settings { return c.JoinsLocal },
			act: func(t *testing.T, e *env, i int) (int, int64) {
				keepMessage(e, "@peer:hs")
				return e.do(t, "peer", "POST", fmt.Sprintf("/_matrix/client/v3/rooms/!r%d:hs/join", i), `{}`)
			},
			exempt: func(e *env) { e.p.Override("@peer:hs", 0, 0) }},
		{name: RcJoinsPerRoom, s: func(c Config) Settings { return c.JoinsPerRoom },
			act: func(t *testing.T, e *env, i int) (int, int64) {
				u := fmt.Sprintf("u%d", i)
				keepMessage(e, "@"+u+":hs")
				return e.do(t, u, "POST", "/_matrix/client/v3/join/!same:hs", `{}`)
			},
			exempt: func(e *env) {}, exAct: func(t *testing.T, e *env, i int) (int, int64) {
				return e.do(t, "as", "POST", "/_matrix/client/v3/join/!same:hs?user_id=@x:hs", `{}`)
			}},
		{name: RcInvitesPerRoom, s: func(c Config) Settings { return c.InvitesPerRoom },
			act: func(t *testing.T, e *env, i int) (int, int64) {
				u := fmt.Sprintf("u%d", i)
				keepMessage(e, "@"+u+":hs")
				return e.do(t, u, "POST", "/_matrix/client/v3/rooms/!r:hs/invite", fmt.Sprintf(`{"user_id":"@p%d:hs"}`, i))
			},
			exempt: func(e *env) { e.p.Override("@u99:hs", 0, 0) }, exAct: func(t *testing.T, e *env, i int) (int, int64) {
				return e.do(t, "u99", "POST", "/_matrix/client/v3/rooms/!r:hs/invite", `{"user_id":"@p99:hs"}`)
			}},
		{name: RcInvitesPerUser, s: func(c Config) Settings { return c.InvitesPerUser },
			act: func(t *testing.T, e *env, i int) (int, int64) {
				u := fmt.Sprintf("u%d", i)
				keepMessage(e, "@"+u+":hs")
				return e.do(t, u, "POST", fmt.Sprintf("/_matrix/client/v3/rooms/!r%d:hs/invite", i), `{"user_id":"@peer:hs"}`)
			},
			// The override checked is the inviter's (requester), not the invitee's.
			exempt: func(e *env) { e.p.Override("@u99:hs", 0, 0) }, exAct: func(t *testing.T, e *env, i int) (int, int64) {
				return e.do(t, "u99", "POST", "/_matrix/client/v3/rooms/!r99:hs/invite", `{"user_id":"@peer:hs"}`)
			}},
		{name: RcInvitesPerIssuer, s: func(c Config) Settings { return c.InvitesPerIssuer },
			act: func(t *testing.T, e *env, i int) (int, int64) {
				keepMessage(e, "@bot:hs")
				return e.do(t, "bot", "POST", fmt.Sprintf("/_matrix/client/v3/rooms/!r%d:hs/invite", i), fmt.Sprintf(`{"user_id":"@p%d:hs"}`, i))
			},
			exempt: func(e *env) { e.p.Override("@bot:hs", 0, 0) }},
		{name: RcLoginAddress, s: func(c Config) Settings { return c.LoginAddress },
			act: func(t *testing.T, e *env, i int) (int, int64) {
				return e.do(t, "", "POST", "/_matrix/client/v3/login", login(fmt.Sprintf("u%d", i), "pw"))
			},
			// Only an appservice login of an AS with rate_limited: false is exempt.
			exempt: func(e *env) {}, exAct: func(t *testing.T, e *env, i int) (int, int64) {
				return e.do(t, "as", "POST", "/_matrix/client/v3/login", `{"type":"m.login.application_service","identifier":{"type":"m.id.user","user":"x"}}`)
			}},
		{name: RcLoginAccount, s: func(c Config) Settings { return c.LoginAccount },
			act: func(t *testing.T, e *env, i int) (int, int64) {
				// A fresh client address for each login keeps rc_login.address out of the way.
				e.p.cfg.LoginAddress = Settings{1000, 1000}
				return e.do(t, "", "POST", "/_matrix/client/v3/login", login("bot", "pw"))
			}},
		{name: RcLoginFailed, s: func(c Config) Settings { return c.LoginFailed },
			act: func(t *testing.T, e *env, i int) (int, int64) {
				e.p.cfg.LoginAddress = Settings{1000, 1000}
				st, ms := e.do(t, "", "POST", "/_matrix/client/v3/login", login("bot", "bad"))
				if st == 403 {
					st = 200 // refused password, but not rate limited
				}
				return st, ms
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, asOpts)
			s := tc.s(e.p.cfg)
			for i := 0; i < s.Burst; i++ {
				if st, _ := tc.act(t, e, i); st != 200 {
					t.Fatalf("action %d of the burst of %d: HTTP %d", i+1, s.Burst, st)
				}
			}
			st, ms := tc.act(t, e, s.Burst)
			if st != 429 {
				t.Fatalf("action burst+1 (%d): HTTP %d, want 429", s.Burst+1, st)
			}
			want := time.Duration(float64(time.Second) / s.PerSecond)
			if got := time.Duration(ms) * time.Millisecond; got < want-time.Second || got > want+time.Second {
				t.Fatalf("retry_after_ms %d, want about %s", ms, want)
			}
			ref := e.p.Refusals()
			if len(ref) != 1 || ref[0].Limiter != tc.name {
				t.Fatalf("refusals %+v, want one by %s", ref, tc.name)
			}
			e.c.Add(want / 2)
			if st, _ := tc.act(t, e, s.Burst+1); st != 429 {
				t.Fatalf("after half of 1/rate: HTTP %d, want 429", st)
			}
			e.c.Add(want/2 + 10*time.Millisecond)
			if st, _ := tc.act(t, e, s.Burst+2); st != 200 {
				t.Fatalf("after 1/rate (%s): HTTP %d, want 200", want, st)
			}
			if tc.exempt == nil {
				return
			}
			tc.exempt(e)
			ex := tc.exAct
			if ex == nil {
				ex = tc.act
			}
			for i := 0; i < 3; i++ {
				if st, _ := ex(t, e, s.Burst+3+i); st != 200 {
					t.Fatalf("exempt requester, action %d: HTTP %d", i, st)
				}
			}
		})
	}
}

// A rate-limited application service gets no exemption, and the override
// admin API is for admins only.
func TestAppServiceRateLimitedAndAdminAPI(t *testing.T) {
	e := newEnv(t, Options{
		AppServices: []AppService{{Token: "tok-as", Sender: "@as:hs", RateLimited: true}},
		Admins:      []string{"@admin:hs"},
	})
	for i := 0; i < 10; i++ {
		if st, _ := e.do(t, "as", "POST", fmt.Sprintf("/_matrix/client/v3/rooms/!r%d:hs/join?user_id=@x:hs", i), `{}`); st != 200 {
			t.Fatalf("join %d: %d", i, st)
		}
	}
	if st, _ := e.do(t, "as", "POST", "/_matrix/client/v3/rooms/!r10:hs/join?user_id=@x:hs", `{}`); st != 429 {
		t.Fatalf("11th join of a rate-limited AS user: %d, want 429", st)
	}
	if st, _ := e.do(t, "bot", "POST", "/_synapse/admin/v1/users/@x:hs/override_ratelimit", `{"messages_per_second":0}`); st != 403 {
		t.Fatalf("override by a non-admin: %d, want 403", st)
	}
	if st, _ := e.do(t, "admin", "POST", "/_synapse/admin/v1/users/@x:hs/override_ratelimit", `{"messages_per_second":0,"burst_count":0}`); st != 200 {
		t.Fatalf("override by an admin: %d", st)
	}
	if st, _ := e.do(t, "as", "POST", "/_matrix/client/v3/rooms/!r11:hs/join?user_id=@x:hs", `{}`); st != 200 {
		t.Fatalf("join after the override: %d", st)
	}
	// Forget is no event: never limited.
	for i := 0; i < 20; i++ {
		if st, _ := e.do(t, "bot", "POST", "/_matrix/client/v3/rooms/!r:hs/forget", `{}`); st != 200 {
			t.Fatalf("forget %d: %d", i, st)
		}
	}
}
