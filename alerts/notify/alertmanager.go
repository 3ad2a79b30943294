package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/mxprobe/mxprobe/alerts"
)

// Alertmanager posts alerts to Alertmanager's API v2. Firing alerts are
// re-sent every resend interval with an endsAt four intervals ahead (the
// longer of the resend interval and the alert's refresh interval, as
// Prometheus takes the longer of resend delay and evaluation interval), so
// Alertmanager expires them if mxprobe dies, but not while a busy replica's
// sender lags or while a resharded tenant waits for its new owner's first
// probe; the resolve sets endsAt to the time of recovery. Several replicas posting the same labels are
// deduplicated by Alertmanager: this is the HA path.
type Alertmanager struct {
	name   string
	urls   []string
	resend time.Duration
	http   *http.Client
	ua     string
}

// NewAlertmanager builds an Alertmanager notifier.
func NewAlertmanager(name string, urls []string, resend time.Duration, opts Options) *Alertmanager {
	if opts.HTTP == nil {
		opts.HTTP = http.DefaultClient
	}
	return &Alertmanager{name: name, urls: urls, resend: resend, http: opts.HTTP, ua: opts.UserAgent}
}

// Name implements alerts.Notifier.
func (a *Alertmanager) Name() string { return a.name }

// ResendInterval implements alerts.Resender.
func (a *Alertmanager) ResendInterval() time.Duration { return a.resend }

type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt,omitzero"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// Notify implements alerts.Notifier: success when at least one Alertmanager
// accepted the alert (they gossip among themselves).
func (a *Alertmanager) Notify(ctx context.Context, n alerts.Notification) (string, error) {
	al := amAlert{Labels: n.Labels, Annotations: map[string]string{}, StartsAt: n.FiredAt.UTC(), GeneratorURL: n.StatusURL}
	for k, v := range n.Annotations {
		al.Annotations[k] = v
	}
	if n.Step != "" {
		al.Annotations["failed_step"] = n.Step
		al.Annotations["failure_class"] = n.Class
	}
	if n.State == alerts.StateResolved {
		al.EndsAt = n.ResolvedAt.UTC()
	} else {
		al.EndsAt = time.Now().Add(4 * max(a.resend, n.RefreshInterval)).UTC()
	}
	body, err := json.Marshal([]amAlert{al})
	if err != nil {
		return "", err
	}
	var errs []error
	for _, u := range a.urls {
		if err := a.post(ctx, strings.TrimRight(u, "/")+"/api/v2/alerts", body); err != nil {
			errs = append(errs, err)
			continue
		}
		return "", nil
	}
	return "", errors.Join(errs...)
}

func (a *Alertmanager) post(ctx context.Context, u string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if a.ua != "" {
		req.Header.Set("User-Agent", a.ua)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("alertmanager %s: HTTP %d: %s", u, resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return nil
}
