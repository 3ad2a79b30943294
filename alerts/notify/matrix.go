package notify

import (
	"context"
	"errors"
	"fmt"
	"html"
	"strings"
	"sync"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/mxprobe/mxprobe/alerts"
	"github.com/mxprobe/mxprobe/config"
)

// Matrix posts notifications into a room through the homeserver with a
// configured account (an access token, or a password login done on first
// use and again when the token is rejected). The resolve is a reply to the
// firing message. The homeserver may be the very thing that is down: route
// alerts to another notifier as well.
type Matrix struct {
	name     string
	hs       string
	room     id.RoomID
	user     string
	password string
	opts     Options

	mu     sync.Mutex
	client *mautrix.Client
	token  string
}

// NewMatrix builds a Matrix room notifier.
func NewMatrix(name string, c *config.MatrixNotifier, opts Options) (*Matrix, error) {
	tok, err := config.Secret(c.AccessToken, c.AccessTokenFile)
	if err != nil {
		return nil, fmt.Errorf("matrix access_token: %w", err)
	}
	pw, err := config.Secret(c.Password, c.PasswordFile)
	if err != nil {
		return nil, fmt.Errorf("matrix password: %w", err)
	}
	return &Matrix{name: name, hs: c.HomeserverURL, room: id.RoomID(c.RoomID), user: c.User, password: pw, token: tok, opts: opts}, nil
}

// Name implements alerts.Notifier.
func (m *Matrix) Name() string { return m.name }

func (m *Matrix) clientFor(ctx context.Context, relogin bool) (*mautrix.Client, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.client != nil && !relogin {
		return m.client, nil
	}
	if relogin && m.password == "" {
		return nil, errors.New("matrix: the access token was rejected and no password is configured")
	}
	cli, err := mautrix.NewClient(m.hs, "", "")
	if err != nil {
		return nil, fmt.Errorf("matrix: %v", err)
	}
	cli.Client = m.opts.HTTP
	if m.opts.UserAgent != "" {
		cli.UserAgent = m.opts.UserAgent
	}
	if m.token != "" && !relogin {
		cli.AccessToken = m.token
		m.client = cli
		return cli, nil
	}
	_, err = cli.Login(ctx, &mautrix.ReqLogin{
		Type:                     mautrix.AuthTypePassword,
		Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: m.user},
		Password:                 m.password,
		DeviceID:                 "MXPROBEALERTS",
		InitialDeviceDisplayName: "mxprobe alerts",
		StoreCredentials:         true,
	})
	if err != nil {
		return nil, fmt.Errorf("matrix login as %s: %w", m.user, redact(err, m.password))
	}
	m.client = cli
	return cli, nil
}

// Notify implements alerts.Notifier; the ref is the event id.
func (m *Matrix) Notify(ctx context.Context, n alerts.Notification) (string, error) {
	content := MatrixContent(n)
	cli, err := m.clientFor(ctx, false)
	if err != nil {
		return "", err
	}
	resp, err := cli.SendMessageEvent(ctx, m.room, event.EventMessage, content)
	if errors.Is(err, mautrix.MUnknownToken) {
		if cli, err = m.clientFor(ctx, true); err != nil {
			return "", err
		}
		resp, err = cli.SendMessageEvent(ctx, m.room, event.EventMessage, content)
	}
	if err != nil {
		return "", fmt.Errorf("matrix: posting to %s: %w", m.room, redact(err, m.token))
	}
	return string(resp.EventID), nil
}

// MatrixContent renders a notification as an m.notice with HTML.
func MatrixContent(n alerts.Notification) *event.MessageEventContent {
	var plain, rich strings.Builder
	plain.WriteString(title(n) + "\n" + n.Annotations["summary"] + "\n")
	rich.WriteString("<p><strong>" + html.EscapeString(title(n)) + "</strong><br>" + html.EscapeString(n.Annotations["summary"]) + "</p><ul>")
	for _, d := range details(n) {
		plain.WriteString(d[0] + ": " + d[1] + "\n")
		rich.WriteString("<li><strong>" + html.EscapeString(d[0]) + "</strong>: " + html.EscapeString(d[1]) + "</li>")
	}
	rich.WriteString("</ul>")
	if n.StatusURL != "" {
		plain.WriteString("Status page: " + n.StatusURL + "\n")
		rich.WriteString(`<p><a href="` + html.EscapeString(n.StatusURL) + `">Status page</a></p>`)
	}
	// The configuration admits only http(s) runbook URLs; checked again so
	// that no other scheme becomes a link in a client.
	if u := n.Annotations[alerts.RunbookAnnotation]; strings.HasPrefix(u, "https://") || strings.HasPrefix(u, "http://") {
		plain.WriteString("Runbook: " + u + "\n")
		rich.WriteString(`<p><a href="` + html.EscapeString(u) + `">Runbook</a></p>`)
	}
	c := &event.MessageEventContent{MsgType: event.MsgNotice, Body: strings.TrimSpace(plain.String()),
		Format: event.FormatHTML, FormattedBody: rich.String()}
	if n.State == alerts.StateResolved && n.Ref != "" {
		c.RelatesTo = (&event.RelatesTo{}).SetReplyTo(id.EventID(n.Ref))
	}
	return c
}
