package config

import (
	"strings"
	"testing"
)

const alertingBase = `
global: {homeserver_url: "http://127.0.0.1:8008", server_name: localhost}
tenants:
  - id: acme
    bot: {user: bot, password: pw}
probes:
  - {name: login, type: login}
`

// TestAlertingValidationMessages pins every alerting message, in order: the
// rules, silences, maintenance windows, notifiers and routes are checked in
// that order, each naming its file:line and field, and no secret is echoed.
func TestAlertingValidationMessages(t *testing.T) {
	yml := alertingBase + `
alerting:
  rules:
    - {name: "bad name", probe: nope, tenants: [ghost], failures: -1, successes: -1, labels: {"bad-label": x}}
    - {name: dup, probe: login}
    - {name: dup, probe: login, failures: 1, threshold: {signal: ""}}
    - {name: ratio, probe: login, success_ratio: {below: 2}, labels: {tenant: y}}
    - {name: thr, probe: login, threshold: {signal: "step:", aggregate: p999x}}
    - {name: anom, probe: login, anomaly: {signal: "", alpha: 1.5, deviations: -1, min_samples: 1}}
    - {name: stale, stale: {intervals: -1}}
    - {name: rb1, probe: login, failures: 1, annotations: {runbook_url: "javascript:alert(1)"}}
    - {name: rb2, probe: login, failures: 1, annotations: {runbook_url: "docs/runbook.md#login"}}
    - {name: rb3, probe: login, failures: 1, annotations: {runbook_url: ""}}
    - {name: rb4, probe: login, failures: 1, annotations: {runbook_url: "https://wiki.example/login"}}
  silences:
    - {ends_at: ""}
    - {matchers: {a: b}, ends_at: tomorrow, starts_at: today}
  maintenance_windows:
    - {name: mw, schedule: "61 * * * *", duration: 0s}
  notifiers:
    - {type: slack, slack: {token: tok-SECRET, webhook_url: "http://hook-SECRET", token_file: /x}, matrix: {}}
    - {name: s2, type: slack, slack: {}}
    - {name: s3, type: slack, slack: {token: tok-SECRET, api_url: "not a url"}}
    - {name: s4, type: slack}
    - {name: m1, type: matrix, matrix: {homeserver_url: "ftp://x", room_id: "#a:b", password: pw-SECRET, password_file: /y}}
    - {name: m2, type: matrix}
    - {name: am, type: alertmanager, alertmanager: {urls: ["::bad"]}}
    - {name: am2, type: alertmanager}
    - {name: wh, type: webhook, webhook: {url: "::SECRET", url_file: /z, hmac_secret: h-SECRET, hmac_secret_file: /w}}
    - {name: wh2, type: webhook}
    - {name: c, type: console}
    - {name: c, type: pager}
  routes:
    - {match: {a: b}}
    - {notifiers: [c, ghost]}
`
	_, err := parse([]byte(yml), "a.yml", envOf(nil))
	if err == nil {
		t.Fatal("bad alerting config accepted")
	}
	var got []string
	for _, e := range err.(Errors) {
		if strings.Contains(e, "alerting") {
			got = append(got, e)
		}
	}
	want := strings.Split(strings.TrimSpace(alertingWant), "\n")
	if len(got) != len(want) {
		t.Errorf("got %d alerting errors, want %d", len(got), len(want))
	}
	for i := 0; i < len(got) || i < len(want); i++ {
		var g, w string
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			t.Errorf("error %d:\n got  %q\n want %q", i, g, w)
		}
	}
	if strings.Contains(err.Error(), "SECRET") {
		t.Errorf("a secret is echoed: %v", err)
	}
}

const alertingWant = `
a.yml:11: alerting.rules[0] "bad name": name: use letters, digits, _ : . - (it becomes the alertname label)
a.yml:11: alerting.rules[0] "bad name": probe: unknown probe "nope"
a.yml:11: alerting.rules[0] "bad name": tenants: unknown tenant "ghost"
a.yml:11: alerting.rules[0] "bad name": no condition: set one of failures, success_ratio, threshold, anomaly, stale
a.yml:11: alerting.rules[0] "bad name": failures: must be positive
a.yml:11: alerting.rules[0] "bad name": successes: must be at least 1
a.yml:11: alerting.rules[0] "bad name": labels: "bad-label" is not a valid label name
a.yml:12: alerting.rules[1] "dup": no condition: set one of failures, success_ratio, threshold, anomaly, stale
a.yml:13: alerting.rules[2] "dup": name: duplicate
a.yml:13: alerting.rules[2] "dup": one condition per rule, found failures, threshold
a.yml:13: alerting.rules[2] "dup": threshold.signal: missing (success, duration, step:<name>, or a result signal such as message_delivery_seconds)
a.yml:13: alerting.rules[2] "dup": threshold: set above or below
a.yml:14: alerting.rules[3] "ratio": success_ratio.below: must be a fraction in (0, 1], such as 0.99
a.yml:14: alerting.rules[3] "ratio": labels: "tenant" is set by mxprobe
a.yml:15: alerting.rules[4] "thr": threshold.signal: step: needs a step name
a.yml:15: alerting.rules[4] "thr": threshold: set above or below
a.yml:15: alerting.rules[4] "thr": threshold.aggregate: unknown aggregate "p999x" (last, mean, max, min, or a quantile such as p95)
a.yml:15: alerting.rules[4] "thr": threshold.window: needed with aggregate "p999x"
a.yml:16: alerting.rules[5] "anom": anomaly.signal: missing (success, duration, step:<name>, or a result signal such as message_delivery_seconds)
a.yml:16: alerting.rules[5] "anom": anomaly.alpha: must be in (0, 1)
a.yml:16: alerting.rules[5] "anom": anomaly.deviations: must be positive
a.yml:16: alerting.rules[5] "anom": anomaly.min_samples: must be at least 2
a.yml:17: alerting.rules[6] "stale": probe: missing (the name of a configured probe)
a.yml:17: alerting.rules[6] "stale": stale.intervals: must be positive
a.yml:18: alerting.rules[7] "rb1": annotations.runbook_url: "javascript:alert(1)" is not an absolute http(s) URL (an empty value turns the default runbook link off)
a.yml:19: alerting.rules[8] "rb2": annotations.runbook_url: "docs/runbook.md#login" is not an absolute http(s) URL (an empty value turns the default runbook link off)
a.yml: alerting.silences[0]: matchers: at least one label is needed
a.yml: alerting.silences[0]: ends_at: missing (RFC 3339, such as 2030-01-02T15:04:05Z)
a.yml: alerting.silences[1]: ends_at: not an RFC 3339 time such as 2030-01-02T15:04:05Z
a.yml: alerting.silences[1]: starts_at: not an RFC 3339 time such as 2030-01-02T15:04:05Z
a.yml:26: alerting.maintenance_windows[0] "mw": schedule: invalid cron spec "61 * * * *": end of range (61) above maximum (59): 61
a.yml:26: alerting.maintenance_windows[0] "mw": duration: must be positive
a.yml:28: alerting.notifiers[0] "slack": only the block of the notifier's type may be set
a.yml:28: alerting.notifiers[0] "slack": slack: token and webhook_url are mutually exclusive
a.yml:28: alerting.notifiers[0] "slack": slack.token and token_file are mutually exclusive
a.yml:29: alerting.notifiers[1] "s2": slack: set token (Web API, with channel) or webhook_url (or their _file variants)
a.yml:30: alerting.notifiers[2] "s3": slack.channel: missing (needed with a token)
a.yml:30: alerting.notifiers[2] "s3": slack.api_url: must be an http or https URL
a.yml:31: alerting.notifiers[3] "s4": slack: missing
a.yml:32: alerting.notifiers[4] "m1": matrix.homeserver_url: must be an http or https URL
a.yml:32: alerting.notifiers[4] "m1": matrix.room_id: must be a room id (!...:server)
a.yml:32: alerting.notifiers[4] "m1": matrix.user: missing (needed with a password)
a.yml:32: alerting.notifiers[4] "m1": matrix.password and password_file are mutually exclusive
a.yml:33: alerting.notifiers[5] "m2": matrix: missing
a.yml:34: alerting.notifiers[6] "am": alertmanager.urls: not a URL
a.yml:35: alerting.notifiers[7] "am2": alertmanager.urls: at least one Alertmanager URL is needed
a.yml:36: alerting.notifiers[8] "wh": webhook.url: not a URL
a.yml:36: alerting.notifiers[8] "wh": webhook.url and url_file are mutually exclusive
a.yml:36: alerting.notifiers[8] "wh": webhook.hmac_secret and hmac_secret_file are mutually exclusive
a.yml:37: alerting.notifiers[9] "wh2": webhook.url: missing (or url_file)
a.yml:39: alerting.notifiers[11] "c": name: duplicate
a.yml:39: alerting.notifiers[11] "c": type: unknown notifier type "pager" (known: alertmanager, console, matrix, slack, webhook)
a.yml:41: alerting.routes[0]: notifiers: at least one notifier name is needed
a.yml:42: alerting.routes[1]: notifiers: unknown notifier "ghost" (known: am, am2, c, m1, m2, s2, s3, s4, slack, wh, wh2)
`

// TestAlertingDefaults pins the defaults of rules and notifiers.
func TestAlertingDefaults(t *testing.T) {
	yml := alertingBase + `
alerting:
  rules:
    - {name: r, probe: login, failures: 3}
    - {name: sr, probe: login, success_ratio: {below: 0.9}}
    - {name: th, probe: login, threshold: {signal: duration, above: 1}}
    - {name: an, probe: login, anomaly: {signal: duration}}
  notifiers:
    - {type: console}
    - {name: am, type: alertmanager, alertmanager: {urls: ["http://am:9093"]}}
    - {name: mx, type: matrix, matrix: {room_id: "!r:x", access_token: t}}
    - {name: wh, type: webhook, webhook: {url: "http://hook"}}
`
	cfg, err := parse([]byte(yml), "a.yml", envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Alerting
	if a.EvaluationInterval.D().Seconds() != 15 || a.ResolvedRetention.D().Hours() != 1 {
		t.Errorf("intervals: %v %v", a.EvaluationInterval, a.ResolvedRetention)
	}
	r := a.Rules
	if r[0].Successes != 1 || r[0].Severity != "warning" || r[0].Condition() != "failures" || r[0].Line() == 0 {
		t.Errorf("rule: %+v", r[0])
	}
	if s := r[1].SuccessRatio; s.Window.D().Hours() != 1 || s.MinSamples != 5 {
		t.Errorf("success_ratio: %+v", s)
	}
	if th := r[2].Threshold; th.Aggregate != "last" || th.MinSamples != 1 {
		t.Errorf("threshold: %+v", th)
	}
	if an := r[3].Anomaly; an.Alpha != 0.1 || an.Deviations != 4 || an.MinSamples != 30 {
		t.Errorf("anomaly: %+v", an)
	}
	n := a.Notifiers
	if n[0].Name != "console" || n[0].Timeout.D().Seconds() != 10 || n[0].MaxBackoff.D().Minutes() != 5 {
		t.Errorf("notifier: %+v", n[0])
	}
	if n[1].Alertmanager.ResendInterval.D().Seconds() != 60 {
		t.Errorf("alertmanager: %+v", n[1].Alertmanager)
	}
	if n[2].Matrix.HomeserverURL != "http://127.0.0.1:8008" {
		t.Errorf("matrix: %+v", n[2].Matrix)
	}
	if n[3].Webhook.SignatureHeader != "X-Mxprobe-Signature" {
		t.Errorf("webhook: %+v", n[3].Webhook)
	}
}
