package main

import (
	"fmt"

	"github.com/mxprobe/mxprobe/internal/testenv"
)

// The application-service bot in the demo: the homeserver starts with an
// application-service registration (as OpenMeet's bot uses one), and tenant
// "asdemo" acts through its as_token as a user of its namespace, with
// identity assertion; its login, round trip and room_message probes run like
// any other tenant's. An http probe checks the homeserver's versions page,
// the way an operator checks the platform's health endpoints.
const (
	demoASID    = "mxprobe-demo-appservice"
	demoASToken = "demo-as-token-not-secret"
	demoASBot   = "openmeet-asbot-asdemo"
)

// demoAppServices are the application services the demo's homeserver loads.
func demoAppServices() []testenv.AppService {
	return []testenv.AppService{{
		ID: demoASID, ASToken: demoASToken, HSToken: "demo-hs-token", SenderLocalpart: demoASID,
		ExclusiveUsers: "@openmeet-asbot-.*",
	}}
}

func addAppService(e *env) error {
	if _, err := e.hs.RegisterAppServiceUser(e.ctx, demoASToken, demoASBot); err != nil {
		return fmt.Errorf("registering the application service's bot: %w", err)
	}
	e.tenants = append(e.tenants, map[string]any{
		"id": "asdemo", "name": "Demo tenant asdemo (application service)",
		"bot": map[string]any{"method": "appservice", "user": demoASBot, "access_token": demoASToken},
	})
	e.probes = append(e.probes, map[string]any{
		"name": "homeserver_versions_http", "type": "http", "schedule": "@every 30s",
		"http": map[string]any{"url": e.hs.URL + "/_matrix/client/versions", "body_regex": `"versions"`},
	})
	return nil
}
