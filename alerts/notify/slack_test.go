package notify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	promcfg "github.com/prometheus/common/config"
	"go.uber.org/goleak"

	"github.com/mxprobe/mxprobe/alerts"
	"github.com/mxprobe/mxprobe/alerts/notify"
	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
)

// loginSetup is a tenant whose bot logs in to the local Dendrite for real.
type loginSetup struct {
	d        *testenv.Dendrite
	user, pw string
	cfg      *config.Config
	probe    probes.Prober
	httpc    *http.Client
}

func newLoginSetup(t *testing.T, alerting string) *loginSetup {
	d := testenv.SharedDendrite(t)
	user, pw := d.User(t, "alertbot")
	cfg := parse(t, fmt.Sprintf(`
global: {homeserver_url: %q, server_name: %q, external_url: "http://status.example"}
tenants:
  - {id: acme, bot: {user: %q, password: %q}}
probes:
  - {name: login, type: login, schedule: "@every 1h"}
%s`, d.URL, d.ServerName, user, pw, alerting))
	httpc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	t.Cleanup(httpc.CloseIdleConnections)
	return &loginSetup{d: d, user: user, pw: pw, cfg: cfg, httpc: httpc,
		probe: &auth.LoginProbe{Name: "login", Manager: auth.NewManager(httpc), Tenants: cfg.TenantMap(nil)}}
}

func (s *loginSetup) run(t *testing.T, m *alerts.Manager, want probes.Outcome) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res := s.probe.Run(ctx, "acme")
	if res.Outcome != want {
		t.Fatalf("login run: outcome %s (%s at %s: %s), want %s", res.Outcome, res.Class, res.FailedStep, res.Error, want)
	}
	m.Observe(res)
}

// breakPassword changes the bot's password on the homeserver, so the
// configured one is wrong; fix restores it.
func (s *loginSetup) breakPassword(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := s.d.ChangePassword(ctx, s.user, s.pw, s.pw+"-rotated"); err != nil {
		t.Fatal(err)
	}
}

func (s *loginSetup) fix(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := s.d.ChangePassword(ctx, s.user, s.pw+"-rotated", s.pw); err != nil {
		t.Fatal(err)
	}
}

// TestSlackLoginBreaksAndHeals: a real login on the local Dendrite breaks
// (the password is rotated); exactly one firing message reaches Slack after
// the threshold; the password is restored and the same message is updated
// to resolved with a reply in its thread (Web API), or one resolved message
// arrives (incoming webhook).
func TestSlackLoginBreaksAndHeals(t *testing.T) {
	for _, mode := range []string{"webapi", "webhook"} {
		t.Run(mode, func(t *testing.T) {
			opts := append(testenv.LeakOptions(), goleak.IgnoreCurrent())
			t.Cleanup(func() { goleak.VerifyNone(t, opts...) })
			slackSrv := newFakeSlack(t)
			block := fmt.Sprintf("{token: xoxb-test-token, channel: C0ALERTS, api_url: %q}", slackSrv.apiURL())
			if mode == "webhook" {
				block = fmt.Sprintf("{webhook_url: %q}", slackSrv.webhookURL())
			}
			s := newLoginSetup(t, `alerting:
  rules: [{name: login_failing, probe: login, failures: 3, successes: 2, severity: critical}]
  notifiers: [{name: slack, type: slack, slack: `+block+`}]`)
			m := newManager(t, s.cfg, s.httpc)

			s.run(t, m, probes.OutcomeSuccess)
			s.breakPassword(t)
			for i := 0; i < 2; i++ {
				s.run(t, m, probes.OutcomeFailure)
			}
			time.Sleep(200 * time.Millisecond) // give a wrong early delivery the chance to show
			if n := len(slackSrv.messages()); n != 0 {
				t.Fatalf("%d Slack messages before the threshold: %+v", n, slackSrv.messages())
			}
			s.run(t, m, probes.OutcomeFailure) // third failure: fires
			waitFor(t, "the firing message", 10*time.Second, func() bool { return count(slackSrv.messages(), firing) == 1 })
			s.run(t, m, probes.OutcomeFailure) // still failing: no second message
			time.Sleep(200 * time.Millisecond)
			msgs := slackSrv.messages()
			if len(msgs) != 1 {
				t.Fatalf("want exactly one message while firing, got %+v", msgs)
			}
			first := msgs[0]
			for _, want := range []string{"acme", "login_failing"} {
				if !contains(first.Text+first.Blocks, want) {
					t.Errorf("firing message lacks %q: %+v", want, first)
				}
			}
			// The rule sets no runbook_url: the login section is linked.
			runbook := "<" + alerts.RunbookBase + "login-failing-or-slow|Runbook>"
			if !contains(first.Text, runbook) {
				t.Errorf("firing text lacks the runbook link %q: %q", runbook, first.Text)
			}
			for _, want := range []string{"Failing step", "auth_failed", "http://status.example/?tenant=acme", jsonString(runbook)} {
				if !contains(first.Blocks, want) {
					t.Errorf("firing blocks lack %q: %s", want, first.Blocks)
				}
			}
			if contains(first.Text+first.Blocks, "xoxb-test-token") {
				t.Error("the token leaked into the message")
			}

			s.fix(t)
			s.run(t, m, probes.OutcomeSuccess)
			time.Sleep(200 * time.Millisecond)
			if n := count(slackSrv.messages(), resolved); n != 0 {
				t.Fatalf("resolved after one success, want two (successes: 2)")
			}
			s.run(t, m, probes.OutcomeSuccess)
			switch mode {
			case "webapi":
				waitFor(t, "the update and thread reply", 10*time.Second, func() bool { return len(slackSrv.messages()) >= 3 })
				time.Sleep(200 * time.Millisecond)
				msgs = slackSrv.messages()
				if len(msgs) != 3 {
					t.Fatalf("want post, update, reply; got %+v", msgs)
				}
				up, reply := msgs[1], msgs[2]
				if up.Method != "chat.update" || up.TS != first.TS || up.Channel != "C0ALERTS" || !resolved(up) {
					t.Errorf("second call is not an update of the firing message %s: %+v", first.TS, up)
				}
				if reply.Method != "chat.postMessage" || reply.ThreadTS != first.TS {
					t.Errorf("third call is not a reply in the thread of %s: %+v", first.TS, reply)
				}
			case "webhook":
				waitFor(t, "the resolved message", 10*time.Second, func() bool { return count(slackSrv.messages(), resolved) == 1 })
				time.Sleep(200 * time.Millisecond)
				if msgs = slackSrv.messages(); len(msgs) != 2 || !resolved(msgs[1]) {
					t.Fatalf("want firing then one resolved, got %+v", msgs)
				}
			}
			s.httpc.CloseIdleConnections()
		})
	}
}

func contains(s, sub string) bool { return len(sub) > 0 && stringsContains(s, sub) }

// TestSlackTextEscaped: a tenant id and a summary carrying Slack control
// sequences (<!channel>, <!here>, a link) reach neither the fallback text
// nor the blocks unescaped, by webhook or by the Web API.
func TestSlackTextEscaped(t *testing.T) {
	f := newFakeSlack(t)
	httpc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	t.Cleanup(httpc.CloseIdleConnections)
	n := alerts.Notification{ID: "x", Rule: "LoginFailing", Tenant: "ops<!channel>", Probe: "login", Severity: "critical",
		State: alerts.StateFiring, Since: time.Unix(1700000000, 0), FiredAt: time.Unix(1700000060, 0),
		Annotations: map[string]string{"summary": "down <!here> <https://evil.example|click>"}}
	for _, c := range []*config.SlackNotifier{
		{WebhookURL: promcfg.Secret(f.webhookURL())},
		{Token: "xoxb-test-token", Channel: "#ops", APIURL: f.apiURL()},
	} {
		s, err := notify.NewSlack("slack", c, notify.Options{HTTP: httpc})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = s.Notify(ctx, n)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	msgs := f.messages()
	if len(msgs) != 2 {
		t.Fatalf("%d messages", len(msgs))
	}
	for _, m := range msgs {
		if !strings.Contains(m.Text, "ops&lt;!channel&gt;") {
			t.Errorf("%s: text %q does not carry the escaped tenant", m.Method, m.Text)
		}
		for _, bad := range []string{"<!channel>", "<!here>", "<https://evil"} {
			if strings.Contains(m.Text, bad) || strings.Contains(m.Blocks, bad) {
				t.Errorf("%s: %q unescaped in text %q / blocks %s", m.Method, bad, m.Text, m.Blocks)
			}
		}
	}
}

// TestSlackLinksRunbook: a runbook_url annotation is a "Runbook" link in the
// fallback text and in the blocks, by webhook and by the Web API, with '|',
// '<', '>' and '&' in the URL unable to end the link early; without the
// annotation, or with a URL that is not http(s), there is no link.
func TestSlackLinksRunbook(t *testing.T) {
	f := newFakeSlack(t)
	httpc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	t.Cleanup(httpc.CloseIdleConnections)
	base := alerts.Notification{ID: "x", Rule: "login_failing", Tenant: "acme", Probe: "login", Severity: "critical",
		State: alerts.StateFiring, Since: time.Unix(1700000000, 0), FiredAt: time.Unix(1700000060, 0)}
	cases := []struct{ url, link string }{
		{alerts.RunbookBase + "login-failing-or-slow", "<" + alerts.RunbookBase + "login-failing-or-slow|Runbook>"},
		{"https://wiki.example/run?a=1&b=2|x><!channel>", "<https://wiki.example/run?a=1&amp;b=2%7Cx&gt;&lt;!channel&gt;|Runbook>"},
		{"javascript:alert(1)", ""},
		{"", ""},
	}
	notifiers := []*config.SlackNotifier{
		{WebhookURL: promcfg.Secret(f.webhookURL())},
		{Token: "xoxb-test-token", Channel: "#ops", APIURL: f.apiURL()},
	}
	for _, c := range cases {
		n := base
		n.Annotations = map[string]string{"summary": "tenant acme: probe login failed"}
		if c.url != "" {
			n.Annotations[alerts.RunbookAnnotation] = c.url
		}
		for _, nc := range notifiers {
			s, err := notify.NewSlack("slack", nc, notify.Options{HTTP: httpc})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err = s.Notify(ctx, n)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	msgs := f.messages()
	if len(msgs) != len(cases)*len(notifiers) {
		t.Fatalf("%d messages, want %d", len(msgs), len(cases)*len(notifiers))
	}
	for i, m := range msgs {
		c := cases[i/len(notifiers)]
		if c.link == "" {
			if strings.Contains(m.Text+m.Blocks, "Runbook") || strings.Contains(m.Text+m.Blocks, "javascript") {
				t.Errorf("%s, runbook_url %q: linked anyway: text %q, blocks %s", m.Method, c.url, m.Text, m.Blocks)
			}
			continue
		}
		if !strings.HasSuffix(m.Text, " "+c.link) {
			t.Errorf("%s, runbook_url %q: text %q does not end with %q", m.Method, c.url, m.Text, c.link)
		}
		// The blocks arrive as JSON: compare with the link as JSON encodes it.
		if !strings.Contains(m.Blocks, jsonString(c.link)) {
			t.Errorf("%s, runbook_url %q: blocks lack %s: %s", m.Method, c.url, jsonString(c.link), m.Blocks)
		}
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return strings.Trim(string(b), `"`)
}
