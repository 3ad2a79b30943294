package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// AppService is an application-service registration the harness Dendrite
// loads (app_service_api.config_files). Its file has the shape of the
// Matrix application service registration, as OpenMeet writes it
// (openmeet-api matrix-config/openmeet-appservice.gomplate.yaml): id, url,
// as_token, hs_token, sender_localpart, rate_limited and the user, room and
// alias namespaces.
type AppService struct {
	ID string
	// URL receives transactions; empty: the homeserver pushes nothing.
	URL             string
	ASToken         string
	HSToken         string
	SenderLocalpart string
	// ExclusiveUsers is the exclusive user namespace regex
	// (OpenMeet: "@openmeet-bot-.*:<server name>").
	ExclusiveUsers string
}

// registration renders the registration file.
func (a AppService) registration(serverName string) ([]byte, error) {
	users := []map[string]any{}
	if a.ExclusiveUsers != "" {
		users = append(users, map[string]any{"exclusive": true, "regex": a.ExclusiveUsers})
	}
	// No URL is null: the homeserver then pushes no transactions
	// (synapse/config/appservice.py load_appservices takes url None).
	var url any
	if a.URL != "" {
		url = a.URL
	}
	doc := map[string]any{
		"id": a.ID, "url": url, "as_token": a.ASToken, "hs_token": a.HSToken,
		"sender_localpart": a.SenderLocalpart, "rate_limited": false,
		"namespaces": map[string]any{
			"users":   users,
			"rooms":   []map[string]any{},
			"aliases": []map[string]any{},
		},
	}
	return yaml.Marshal(doc)
}

// writeAppServices writes one registration file per application service and
// returns their paths for app_service_api.config_files.
func (d *Dendrite) writeAppServices() ([]string, error) {
	var files []string
	for _, a := range d.opts.AppServices {
		b, err := a.registration(d.ServerName)
		if err != nil {
			return nil, err
		}
		p := filepath.Join(d.Dir, "appservice-"+a.ID+".yaml")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			return nil, err
		}
		files = append(files, p)
	}
	return files, nil
}

// RegisterAppServiceUser registers a user of an application service's
// namespace (m.login.application_service, as the service itself does) and
// returns its user id.
func (d *Homeserver) RegisterAppServiceUser(ctx context.Context, asToken, localpart string) (string, error) {
	body, _ := json.Marshal(map[string]any{
		"type": "m.login.application_service", "username": localpart, "inhibit_login": true,
	})
	b, err := d.do(ctx, http.MethodPost, "/_matrix/client/v3/register", asToken, body)
	if err != nil {
		return "", err
	}
	var out struct {
		UserID string `json:"user_id"`
	}
	if err := json.Unmarshal(b, &out); err != nil || out.UserID == "" {
		return "", fmt.Errorf("register %s: no user_id in %s", localpart, b)
	}
	return out.UserID, nil
}

// RotateAppServiceToken gives an application service a new as_token the way
// an operator does: edit the registration file and restart the homeserver.
// The old token stops working.
func (d *Dendrite) RotateAppServiceToken(ctx context.Context, id, newToken string) error {
	if err := setASToken(d.opts.AppServices, id, newToken); err != nil {
		return err
	}
	d.Pause()
	if _, err := d.writeAppServices(); err != nil {
		return err
	}
	return d.Resume(ctx)
}

// setASToken gives the application service id a new as_token in list.
func setASToken(list []AppService, id, token string) error {
	for i := range list {
		if list[i].ID == id {
			list[i].ASToken = token
			return nil
		}
	}
	return fmt.Errorf("no application service %q", id)
}
