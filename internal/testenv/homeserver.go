package testenv

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Homeserver is the client side of a harness homeserver (Dendrite or
// Synapse): its URL, server name and the shared secret of Synapse's admin
// registration API, which both implement the same way
// (synapse/rest/admin/users.py UserRegisterServlet: an HMAC-SHA1 over nonce,
// user, password and admin flag).
type Homeserver struct {
	URL          string
	ServerName   string
	SharedSecret string
}

// Register creates an account with shared-secret registration and returns
// its access token.
func (d *Homeserver) Register(ctx context.Context, user, password string, admin bool) (string, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	endpoint := d.URL + "/_synapse/admin/v1/register"
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	err = json.NewDecoder(resp.Body).Decode(&nonce)
	resp.Body.Close()
	if err != nil {
		return "", fmt.Errorf("register nonce: %w", err)
	}
	mac := hmac.New(sha1.New, []byte(d.SharedSecret))
	adminStr := "notadmin"
	if admin {
		adminStr = "admin"
	}
	mac.Write([]byte(nonce.Nonce + "\x00" + user + "\x00" + password + "\x00" + adminStr))
	body, _ := json.Marshal(map[string]any{
		"nonce": nonce.Nonce, "username": user, "password": password, "admin": admin,
		"mac": hex.EncodeToString(mac.Sum(nil)),
	})
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err = client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("register %s: HTTP %d: %s", user, resp.StatusCode, b)
	}
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return "", err
	}
	return out.AccessToken, nil
}

// ChangePassword sets a new password for a user through the client API,
// using the old one (user-interactive auth with m.login.password).
func (d *Homeserver) ChangePassword(ctx context.Context, user, oldPassword, newPassword string) error {
	token, err := d.Login(ctx, user, oldPassword)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(map[string]any{
		"new_password": newPassword, "logout_devices": false,
		"auth": map[string]any{
			"type":       "m.login.password",
			"identifier": map[string]any{"type": "m.id.user", "user": user},
			"password":   oldPassword,
		},
	})
	_, err = d.do(ctx, http.MethodPost, "/_matrix/client/v3/account/password", token, body)
	return err
}

// Login does a password login and returns the access token.
func (d *Homeserver) Login(ctx context.Context, user, password string) (string, error) {
	body, _ := json.Marshal(map[string]any{
		"type":       "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": user},
		"password":   password,
	})
	b, err := d.do(ctx, http.MethodPost, "/_matrix/client/v3/login", "", body)
	if err != nil {
		return "", err
	}
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return "", err
	}
	return out.AccessToken, nil
}

// Logout invalidates an access token.
func (d *Homeserver) Logout(ctx context.Context, token string) error {
	_, err := d.do(ctx, http.MethodPost, "/_matrix/client/v3/logout", token, []byte("{}"))
	return err
}

// LogoutAll invalidates every token of the user the token belongs to.
func (d *Homeserver) LogoutAll(ctx context.Context, token string) error {
	_, err := d.do(ctx, http.MethodPost, "/_matrix/client/v3/logout/all", token, []byte("{}"))
	return err
}

// JoinedRooms lists the rooms the token's user is in.
func (d *Homeserver) JoinedRooms(ctx context.Context, token string) ([]string, error) {
	b, err := d.do(ctx, http.MethodGet, "/_matrix/client/v3/joined_rooms", token, nil)
	if err != nil {
		return nil, err
	}
	var out struct {
		JoinedRooms []string `json:"joined_rooms"`
	}
	err = json.Unmarshal(b, &out)
	return out.JoinedRooms, err
}

// Do sends a client-API request with an optional token and returns the body
// of a 2xx answer.
func (d *Homeserver) Do(ctx context.Context, method, path, token string, body []byte) ([]byte, error) {
	return d.do(ctx, method, path, token, body)
}

func (d *Homeserver) do(ctx context.Context, method, path, token string, body []byte) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, d.URL+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if resp.StatusCode/100 != 2 {
		return b, fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, b)
	}
	return b, nil
}
