package notify

import (
	"context"
	"fmt"
	"strings"

	"github.com/slack-go/slack"

	"github.com/mxprobe/mxprobe/alerts"
	"github.com/mxprobe/mxprobe/config"
)

// Slack posts to Slack. With a bot token it uses the Web API: the firing
// message is updated in place on resolve and a reply is posted in its
// thread. With an incoming webhook it posts a firing and a resolved message.
type Slack struct {
	name    string
	api     *slack.Client
	token   string
	channel string
	hook    string
	opts    Options
}

// NewSlack builds a Slack notifier from its configuration.
func NewSlack(name string, c *config.SlackNotifier, opts Options) (*Slack, error) {
	token, err := config.Secret(c.Token, c.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("slack token: %w", err)
	}
	hook, err := config.Secret(c.WebhookURL, c.WebhookURLFile)
	if err != nil {
		return nil, fmt.Errorf("slack webhook_url: %w", err)
	}
	if token == "" && hook == "" {
		return nil, fmt.Errorf("slack: no token and no webhook_url (is the secret file empty?)")
	}
	s := &Slack{name: name, token: token, channel: c.Channel, hook: hook, opts: opts}
	if token != "" {
		o := []slack.Option{slack.OptionHTTPClient(opts.HTTP)}
		if c.APIURL != "" {
			u := c.APIURL
			if !strings.HasSuffix(u, "/") {
				u += "/"
			}
			o = append(o, slack.OptionAPIURL(u))
		}
		s.api = slack.New(token, o...)
	}
	return s, nil
}

// Name implements alerts.Notifier.
func (s *Slack) Name() string { return s.name }

// Notify implements alerts.Notifier. The ref of a Web API firing message is
// "<channel> <ts>".
func (s *Slack) Notify(ctx context.Context, n alerts.Notification) (string, error) {
	blocks := SlackBlocks(n)
	// The fallback text is mrkdwn too (notifications, clients without
	// blocks): escaped like the blocks, so a tenant id or summary cannot
	// write <!channel> or a link.
	text := escape(title(n) + ": " + n.Annotations["summary"])
	if u := slackURL(n.Annotations[alerts.RunbookAnnotation]); u != "" {
		text += " <" + u + "|Runbook>"
	}
	if s.api == nil {
		msg := &slack.WebhookMessage{Text: text, Blocks: &slack.Blocks{BlockSet: blocks}}
		err := slack.PostWebhookCustomHTTPContext(ctx, s.hook, s.opts.HTTP, msg)
		return "", redact(err, s.hook)
	}
	opts := []slack.MsgOption{slack.MsgOptionText(text, false), slack.MsgOptionBlocks(blocks...)}
	channel, ts, _ := strings.Cut(n.Ref, " ")
	if n.State == alerts.StateResolved && ts != "" {
		if _, _, _, err := s.api.UpdateMessageContext(ctx, channel, ts, opts...); err != nil {
			return "", redact(err, s.token)
		}
		reply := fmt.Sprintf("Resolved after %s.", n.ResolvedAt.Sub(n.Since).Round(1e9))
		if _, _, err := s.api.PostMessageContext(ctx, channel, slack.MsgOptionText(reply, false), slack.MsgOptionTS(ts)); err != nil {
			// The update went through; a lost thread reply is not worth a
			// second update, so report success and log.
			s.opts.Logger.Warn("slack thread reply failed", "notifier", s.name, "err", redact(err, s.token))
		}
		return n.Ref, nil
	}
	ch, ts, err := s.api.PostMessageContext(ctx, s.channel, opts...)
	if err != nil {
		return "", redact(err, s.token)
	}
	if ts == "" {
		// slack-go accepts an answer without "ok" or "error" (a proxy's page,
		// a truncated body) as success; without a ts nothing was posted.
		return "", fmt.Errorf("slack: chat.postMessage answered without a message ts")
	}
	return ch + " " + ts, nil
}

// SlackBlocks renders a notification as Block Kit blocks.
func SlackBlocks(n alerts.Notification) []slack.Block {
	head := ":rotating_light: " + title(n)
	if n.State == alerts.StateResolved {
		head = ":white_check_mark: " + title(n)
	}
	var fields []*slack.TextBlockObject
	for _, d := range details(n) {
		fields = append(fields, slack.NewTextBlockObject(slack.MarkdownType, fmt.Sprintf("*%s*\n%s", d[0], escape(d[1])), false, false))
	}
	blocks := []slack.Block{
		slack.NewHeaderBlock(slack.NewTextBlockObject(slack.PlainTextType, truncateRunes(head, 150), true, false)),
		slack.NewSectionBlock(slack.NewTextBlockObject(slack.MarkdownType, escape(n.Annotations["summary"]), false, false), nil, nil),
		slack.NewSectionBlock(nil, fields, nil),
	}
	var links []slack.MixedElement
	if n.StatusURL != "" {
		links = append(links, slack.NewTextBlockObject(slack.MarkdownType, fmt.Sprintf("<%s|Status page>", n.StatusURL), false, false))
	}
	if u := slackURL(n.Annotations[alerts.RunbookAnnotation]); u != "" {
		links = append(links, slack.NewTextBlockObject(slack.MarkdownType, fmt.Sprintf("<%s|Runbook>", u), false, false))
	}
	if len(links) > 0 {
		blocks = append(blocks, slack.NewContextBlock("", links...))
	}
	return blocks
}

// slackURL makes u safe inside a mrkdwn link <u|label>: the configuration
// admits only http(s) URLs, but '|' would end the URL early and '<', '>'
// the link, so they are escaped as Slack asks (&, <, > as entities) and '|'
// percent-encoded. Anything but an http(s) URL gives "" (no link).
func slackURL(u string) string {
	if !strings.HasPrefix(u, "https://") && !strings.HasPrefix(u, "http://") {
		return ""
	}
	return escape(strings.ReplaceAll(u, "|", "%7C"))
}

func escape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

func truncateRunes(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
