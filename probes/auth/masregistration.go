package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// Dynamic client registration (MSC2966) at MAS, cached per issuer and
// registration metadata.

// registration returns the client registration body.
func (m *MASMethod) registration() map[string]any {
	r := map[string]any{
		"client_name":                m.Config.ClientName,
		"client_uri":                 m.Config.ClientURI,
		"redirect_uris":              []string{m.Config.RedirectURI},
		"grant_types":                []string{"authorization_code", "refresh_token"},
		"response_types":             []string{"code"},
		"token_endpoint_auth_method": "none",
		"application_type":           m.Config.ApplicationType(),
	}
	if len(m.Config.Contacts) > 0 {
		r["contacts"] = m.Config.Contacts // required by MAS v0.12 and older
	}
	return r
}

func (m *MASMethod) clientKey(issuer string) string {
	return issuer + "|" + m.Config.RedirectURI + "|" + m.Config.ClientURI + "|" + m.Config.ClientName
}

func (m *MASMethod) forgetClient(issuer string) {
	m.cache.mu.Lock()
	defer m.cache.mu.Unlock()
	for k := range m.cache.clients {
		if strings.HasPrefix(k, issuer+"|") {
			delete(m.cache.clients, k)
		}
	}
}

// register does the dynamic client registration (MSC2966), cached per issuer.
func (m *MASMethod) register(ctx context.Context, hc *http.Client, meta AuthMetadata) (string, bool, error) {
	key := m.clientKey(meta.Issuer)
	m.cache.mu.Lock()
	id, ok := m.cache.clients[key]
	m.cache.mu.Unlock()
	if ok {
		return id, true, nil
	}
	body, _ := json.Marshal(m.registration())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, meta.RegistrationEndpoint, bytes.NewReader(body))
	if err != nil {
		return "", false, probes.Errorf(ClassRegistration, "bad registration endpoint")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := tokenClient(hc).Do(req)
	if err != nil {
		return "", false, transportError("registration endpoint", err)
	}
	defer drain(resp)
	b, _ := io.ReadAll(io.LimitReader(resp.Body, masBodyLimit))
	var out struct {
		ClientID         string `json:"client_id"`
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	_ = json.Unmarshal(b, &out)
	switch {
	case resp.StatusCode/100 == 3:
		return "", false, refusedRedirect(req, resp)
	case resp.StatusCode >= 500:
		return "", false, &probes.Error{Class: probes.ClassHTTP5xx, Status: resp.StatusCode,
			Err: fmt.Errorf("registration endpoint: HTTP %d", resp.StatusCode)}
	case resp.StatusCode/100 != 2:
		msg := out.Error
		if msg == "" {
			msg = "no error code"
		}
		if out.ErrorDescription != "" {
			msg += ": " + mxclient.Short(out.ErrorDescription)
		}
		return "", false, &probes.Error{Class: ClassRegistration, Status: resp.StatusCode,
			Err: fmt.Errorf("client registration refused (HTTP %d): %s", resp.StatusCode, msg)}
	case out.ClientID == "":
		return "", false, &probes.Error{Class: ClassRegistration, Status: resp.StatusCode,
			Err: fmt.Errorf("registration answered without a client_id")}
	}
	m.cache.mu.Lock()
	m.cache.clients[key] = out.ClientID
	m.cache.mu.Unlock()
	return out.ClientID, false, nil
}
