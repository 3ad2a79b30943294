package main

import (
	"os"
)

// The alerting part of the demo: a third tenant whose bot password is
// deliberately wrong, a rule on login failures that fires at the first one
// (a refused login is retried only once per its share of the login budget,
// 5.5 minutes on Synapse's defaults, so waiting for a second failure would
// keep the demo's alert back that long),
// the console notifier (the alert shows in mxprobe's log and in
// mxprobe_alerts), and Slack when SLACK_BOT_TOKEN + SLACK_CHANNEL or
// SLACK_WEBHOOK_URL are set in the environment.
func addAlerting(e *env) error {
	if err := e.addPasswordTenant("gamma", "Demo tenant gamma (wrong password on purpose)", "not-the-password"); err != nil {
		return err
	}
	notifiers := []map[string]any{{"name": "console", "type": "console"}}
	switch {
	case os.Getenv("SLACK_BOT_TOKEN") != "" && os.Getenv("SLACK_CHANNEL") != "":
		// The token stays in the environment file of the demo, not in
		// the config: token_file points at it.
		tokenFile := e.dir + "/slack-token"
		if err := os.WriteFile(tokenFile, []byte(os.Getenv("SLACK_BOT_TOKEN")), 0o600); err != nil {
			return err
		}
		notifiers = append(notifiers, map[string]any{"name": "slack", "type": "slack",
			"slack": map[string]any{"token_file": tokenFile, "channel": os.Getenv("SLACK_CHANNEL")}})
	case os.Getenv("SLACK_WEBHOOK_URL") != "":
		hookFile := e.dir + "/slack-webhook"
		if err := os.WriteFile(hookFile, []byte(os.Getenv("SLACK_WEBHOOK_URL")), 0o600); err != nil {
			return err
		}
		notifiers = append(notifiers, map[string]any{"name": "slack", "type": "slack",
			"slack": map[string]any{"webhook_url_file": hookFile}})
	}
	e.config["alerting"] = map[string]any{
		"evaluation_interval": "5s",
		"rules": []map[string]any{{
			"name": "login_failing", "probe": "login", "failures": 1, "successes": 2, "severity": "critical",
			// No runbook_url: mxprobe links the runbook's login section.
			"annotations": map[string]string{"description": "check the bot's password in the tenant config"},
		}},
		"notifiers": notifiers,
	}
	e.urls = append(e.urls, "tenant gamma's password is wrong on purpose: watch the log for ALERT FIRING and mxprobe_alerts{rule=\"login_failing\"} in /metrics (within a minute: it fires at the first failed login)")
	return nil
}
