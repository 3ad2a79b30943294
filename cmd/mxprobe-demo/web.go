package main

// The web capability in the demo: an API token (so the status page shows the
// sign-in form and CSRF-protected "run now" buttons) and the URLs of the API
// and of the blackbox-style /probe endpoint.
func addWeb(e *env) error {
	const token = "demo-api-token-not-secret"
	e.config["web"] = map[string]any{
		"api_token":        token,
		"title":            "mxprobe demo",
		"refresh_interval": "10s",
	}
	base := "http://127.0.0.1:9787"
	if g, ok := e.config["global"].(map[string]any); ok {
		if u, ok := g["external_url"].(string); ok && u != "" {
			base = u
		}
	}
	e.urls = append(e.urls,
		"curl -H 'Authorization: Bearer "+token+"' '"+base+"/probe?module=login&tenant=alpha'   one fresh run, blackbox_exporter style",
		base+"/api/v1/results   latest result per probe and tenant (JSON)",
		"curl -X POST -H 'Authorization: Bearer "+token+"' '"+base+"/api/v1/probes/login/run?tenant=alpha'   run now",
		"status page sign-in token: "+token,
	)
	return nil
}
