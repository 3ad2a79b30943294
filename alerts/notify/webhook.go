package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/mxprobe/mxprobe/alerts"
	"github.com/mxprobe/mxprobe/config"
)

// Webhook posts a JSON document per notification, signed with HMAC-SHA256
// when a secret is configured: header "<signature_header>: sha256=<hex>"
// over the exact body.
type Webhook struct {
	name   string
	url    string
	secret []byte
	header string
	opts   Options
}

// WebhookPayload is the body the generic webhook posts.
type WebhookPayload struct {
	Version string              `json:"version"`
	Status  alerts.State        `json:"status"`
	Alert   alerts.Notification `json:"alert"`
	SentAt  time.Time           `json:"sent_at"`
}

// NewWebhook builds a webhook notifier.
func NewWebhook(name string, c *config.WebhookNotifier, opts Options) (*Webhook, error) {
	u, err := config.Secret(c.URL, c.URLFile)
	if err != nil {
		return nil, fmt.Errorf("webhook url: %w", err)
	}
	if u == "" {
		return nil, fmt.Errorf("webhook url is empty")
	}
	sec, err := config.Secret(c.HMACSecret, c.HMACSecretFile)
	if err != nil {
		return nil, fmt.Errorf("webhook hmac_secret: %w", err)
	}
	return &Webhook{name: name, url: u, secret: []byte(sec), header: c.SignatureHeader, opts: opts}, nil
}

// Name implements alerts.Notifier.
func (w *Webhook) Name() string { return w.name }

// Sign returns the signature header value of body.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// Notify implements alerts.Notifier.
func (w *Webhook) Notify(ctx context.Context, n alerts.Notification) (string, error) {
	body, err := json.Marshal(WebhookPayload{Version: "1", Status: n.State, Alert: n, SentAt: time.Now().UTC()})
	if err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("webhook: bad url")
	}
	req.Header.Set("Content-Type", "application/json")
	if w.opts.UserAgent != "" {
		req.Header.Set("User-Agent", w.opts.UserAgent)
	}
	if len(w.secret) > 0 {
		req.Header.Set(w.header, Sign(w.secret, body))
	}
	resp, err := w.opts.HTTP.Do(req)
	if err != nil {
		return "", redact(err, w.url)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return "", fmt.Errorf("webhook answered HTTP %d", resp.StatusCode)
	}
	return "", nil
}
