package faultmatrix

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	promcfg "github.com/prometheus/common/config"

	"github.com/mxprobe/mxprobe/alerts"
	"github.com/mxprobe/mxprobe/alerts/notify"
	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/internal/testenv/masemu"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/matrix"
	"github.com/mxprobe/mxprobe/probes/synapse"
)

func dependencies() []*dependency {
	return []*dependency{homeserverDep(), masDep(), upstreamDep(), synapseDep(), slackDep(), alertmanagerDep()}
}

// homeserverDep: the room round trip against the real local Dendrite; the
// faulted requests are the room creations.
func homeserverDep() *dependency {
	return &dependency{
		name: "homeserver", path: "/createRoom$", loop: "/_matrix/client/v3/createRoom", timeout: 5 * time.Second,
		start: func(t *testing.T) (string, func(f, h *http.Client) (probes.Prober, probes.Prober)) {
			d := testenv.SharedDendrite(t)
			peerU, peerPW := d.User(t, "fm-peer")
			mk := func(hc *http.Client) probes.Prober {
				u, pw := d.User(t, "fm-bot")
				cfg := &config.Config{Global: config.Global{HomeserverURL: d.URL, ServerName: d.ServerName},
					Tenants: []config.Tenant{{ID: "t", HomeserverURL: d.URL, ServerName: d.ServerName,
						Bot: config.Account{Method: config.MethodPassword, User: u, Password: promcfg.Secret(pw)}}}}
				minPL := 50
				return &matrix.RoundtripProbe{Name: "roundtrip", Manager: auth.NewManager(hc), Tenants: cfg.TenantMap(nil),
					Settings: &matrix.RoundtripSettings{
						Peer:          &config.Account{Method: config.MethodPassword, User: peerU, Password: promcfg.Secret(peerPW)},
						MinPowerLevel: &minPL, RoomNamePrefix: matrix.DefaultRoomNamePrefix,
						SyncTimeout: config.Duration(2 * time.Second), CleanupTimeout: config.Duration(3 * time.Second),
						SweepMaxAge: config.Duration(time.Hour), SweepInterval: config.Duration(time.Hour),
					}}
			}
			return d.URL, func(f, h *http.Client) (probes.Prober, probes.Prober) { return mk(f), mk(h) }
		},
		def: stdWant("create_room"),
	}
}

// masEnv starts the MAS emulator and returns login probes for two bots of
// tenant "t" (one per client).
func masLogin(t *testing.T) (*masemu.Emulator, func(f, h *http.Client) (probes.Prober, probes.Prober)) {
	emu, err := masemu.Start(masemu.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emu.Close)
	var n atomic.Int64
	mk := func(hc *http.Client) probes.Prober {
		i := n.Add(1)
		email := fmt.Sprintf("bot-%d@openmeet.net", i)
		local := fmt.Sprintf("openmeet-bot-fm%d", i)
		emu.AddUpstreamUser("t", email, "fm-bot-pw", local)
		mc := config.MAS{PublicURL: emu.MASURL, RedirectURI: "http://localhost:9005/auth/matrix/callback",
			Scopes: "openid email", ClientURI: config.DefaultMASClientURI, ClientName: "mxprobe-faultmatrix",
			Upstream: config.Upstream{Adapter: config.UpstreamOpenMeet, APIURL: emu.UpstreamURL}}
		mgr := auth.NewManager(hc)
		auth.RegisterMAS(mgr, mc)
		cfg := &config.Config{Global: config.Global{HomeserverURL: emu.HomeserverURL, ServerName: emu.ServerName},
			Tenants: []config.Tenant{{ID: "t", HomeserverURL: emu.HomeserverURL, ServerName: emu.ServerName,
				Bot: config.Account{Method: config.MethodMASOIDC, User: local, Email: email, Password: "fm-bot-pw"}}}}
		return &auth.LoginProbe{Name: "login", Manager: mgr, Tenants: cfg.TenantMap(nil)}
	}
	return emu, func(f, h *http.Client) (probes.Prober, probes.Prober) { return mk(f), mk(h) }
}

// masDep: MAS's token endpoint (the code exchange every fresh login makes).
func masDep() *dependency {
	return &dependency{
		name: "mas", path: "^/oauth2/token$", loop: "/oauth2/token", timeout: 3 * time.Second,
		start: func(t *testing.T) (string, func(f, h *http.Client) (probes.Prober, probes.Prober)) {
			emu, build := masLogin(t)
			return emu.MASURL, build
		},
		def: func(f string) want {
			switch f {
			case fRefused:
				// Registration is cached: the first request to a MAS that is
				// down is the authorization request.
				return want{class: probes.ClassUnreachable, step: auth.StepAuthorize}
			case fSlowHeaders, fSlowBody, f5xx, fRedirectLoop:
				return stdWant(auth.StepTokenExchange)(f)
			}
			// The MAS login names the hop that broke: any other refusal or
			// unreadable answer of the token endpoint is a token_exchange
			// failure (a 429 from MAS included: it is not the homeserver's
			// M_LIMIT_EXCEEDED).
			return want{class: auth.ClassTokenExchange, step: auth.StepTokenExchange}
		},
	}
}

// upstreamDep: the platform's email login at the upstream OIDC provider.
func upstreamDep() *dependency {
	return &dependency{
		name: "upstream_oidc", path: "/api/v1/auth/email/login$", loop: "/api/v1/auth/email/login", timeout: 3 * time.Second,
		start: func(t *testing.T) (string, func(f, h *http.Client) (probes.Prober, probes.Prober)) {
			emu, build := masLogin(t)
			return emu.UpstreamURL, build
		},
		def: stdWant(auth.StepUpstreamLogin),
		want: map[string]want{
			// The platform login's answer body is not read (its session
			// cookie is the result): a cut body after the cookie is harmless.
			fReset: {ok: true},
			// A 200 without the session cookie is a failed platform login.
			fMalformed:   {class: auth.ClassUpstreamLogin, step: auth.StepUpstreamLogin},
			fContentType: {class: auth.ClassUpstreamLogin, step: auth.StepUpstreamLogin},
			fHuge:        {class: auth.ClassUpstreamLogin, step: auth.StepUpstreamLogin},
		},
	}
}

// synapseDep: the Synapse metrics page (a replay of the reference pages).
func synapseDep() *dependency {
	return &dependency{
		name: "synapse_metrics", path: "^/_synapse/metrics$", loop: "/_synapse/metrics", timeout: 2 * time.Second,
		start: func(t *testing.T) (string, func(f, h *http.Client) (probes.Prober, probes.Prober)) {
			fsrv, hsrv := testenv.SynapseReplay(t), testenv.SynapseReplay(t)
			mk := func(url string, hc *http.Client) probes.Prober {
				return &synapse.Probe{Name: "synapse", HTTP: hc,
					Config: &synapse.Settings{URL: url + "/_synapse/metrics", MaxBodyBytes: 4 << 20}}
			}
			return fsrv.URL, func(f, h *http.Client) (probes.Prober, probes.Prober) {
				return mk(fsrv.URL, f), mk(hsrv.URL, h)
			}
		},
		def: stdWant(synapse.StepScrape),
		// A page that is not the text format is fetched fine and fails to parse.
		want: map[string]want{fMalformed: {class: probes.ClassBadResponse, step: synapse.StepParse}},
	}
}

// notifierProber turns a notifier into a prober: one firing notification
// per run, the delivery a step named "notify".
func notifierProber(n alerts.Notifier) probes.Prober {
	return probes.ProberFunc(func(ctx context.Context, tenant string) probes.Result {
		rec := probes.NewRecorder("notify", "notify", tenant)
		_ = rec.Step("notify", func() error {
			now := time.Now()
			_, err := n.Notify(ctx, alerts.Notification{ID: "fm-1", Rule: "LoginFailing", Tenant: tenant, Probe: "login",
				Severity: "critical", State: alerts.StateFiring, Since: now, FiredAt: now,
				Labels:      map[string]string{"alertname": "LoginFailing", "tenant": tenant},
				Annotations: map[string]string{"summary": "login failing"}, Class: "auth_failed", Step: "login"})
			if err != nil && isTimeout(err) {
				return probes.WithClass(probes.ClassTimeout, err)
			}
			return err
		})
		return rec.Finish()
	})
}

// notifierWant: delivery errors are not classified (they are counted per
// notifier and retried); the cell asserts the failure, the step, the
// deadline and recovery.
func notifierWant(string) want { return want{step: "notify"} }

func slackDep() *dependency {
	return &dependency{
		name: "slack", path: "^/api/chat\\.", loop: "/api/chat.postMessage", timeout: 2 * time.Second,
		start: func(t *testing.T) (string, func(f, h *http.Client) (probes.Prober, probes.Prober)) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprint(w, `{"ok":true,"channel":"C0FAULT","ts":"1700000000.000100"}`)
			}))
			t.Cleanup(srv.Close)
			mk := func(hc *http.Client) probes.Prober {
				s, err := notify.NewSlack("slack", &config.SlackNotifier{Token: "xoxb-fault-matrix", Channel: "C0FAULT", APIURL: srv.URL + "/api/"},
					notify.Options{HTTP: hc})
				if err != nil {
					t.Fatal(err)
				}
				return notifierProber(s)
			}
			return srv.URL, func(f, h *http.Client) (probes.Prober, probes.Prober) { return mk(f), mk(h) }
		},
		def: notifierWant,
	}
}

func alertmanagerDep() *dependency {
	return &dependency{
		name: "alertmanager", path: "^/api/v2/alerts$", loop: "/api/v2/alerts", timeout: 2 * time.Second,
		start: func(t *testing.T) (string, func(f, h *http.Client) (probes.Prober, probes.Prober)) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.Copy(io.Discard, r.Body)
				w.WriteHeader(http.StatusOK)
			}))
			t.Cleanup(srv.Close)
			mk := func(hc *http.Client) probes.Prober {
				return notifierProber(notify.NewAlertmanager("am", []string{srv.URL}, time.Minute, notify.Options{HTTP: hc}))
			}
			return srv.URL, func(f, h *http.Client) (probes.Prober, probes.Prober) { return mk(f), mk(h) }
		},
		def: notifierWant,
		// Alertmanager's answer body is not read: a 2xx is delivery.
		// Alertmanager answers 200 with an empty body: cutting or slowing
		// an empty body changes nothing.
		want: map[string]want{fMalformed: {ok: true}, fContentType: {ok: true}, fHuge: {ok: true}, fReset: {ok: true}, fSlowBody: {ok: true}},
	}
}
