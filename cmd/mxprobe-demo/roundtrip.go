package main

import (
	"encoding/json"
	"fmt"
)

// The room round trip and the persistent-room message probe in the demo:
// a peer account per tenant (so no account carries every tenant's invites,
// Synapse's rc_invites.per_user), logged in by access token, and a public
// room (created by a room owner) that the tenant bots are not in yet, so
// the first room_message run of each tenant shows the "joined first" path.
// Both probes run on mxprobe's default schedules, which fit Synapse's
// default limits: room_message every minute, the round trip every 10
// minutes. Tenant gamma (wrong password on purpose) is left out: its bot
// cannot log in.
func addRoundtrip(e *env) error {
	const ownerUser, ownerPassword = "mxprobe-room-owner", "demo-owner-password"
	token, err := e.hs.Register(e.ctx, ownerUser, ownerPassword, false)
	if err != nil {
		return fmt.Errorf("registering the room owner: %w", err)
	}
	b, err := e.hs.Do(e.ctx, "POST", "/_matrix/client/v3/createRoom", token,
		[]byte(`{"preset":"public_chat","name":"mxprobe demo room","topic":"room_message probe target"}`))
	if err != nil {
		return fmt.Errorf("creating the demo room: %w", err)
	}
	var created struct {
		RoomID string `json:"room_id"`
	}
	if err := json.Unmarshal(b, &created); err != nil || created.RoomID == "" {
		return fmt.Errorf("creating the demo room: unexpected answer %s", b)
	}
	var ids []string
	for _, t := range e.tenants {
		if _, own := t["room_id"]; !own { // a tenant on another homeserver brings its own room
			t["room_id"] = created.RoomID
		}
		id, _ := t["id"].(string)
		if id == "gamma" {
			continue
		}
		ids = append(ids, id)
		if _, ok := t["peer"]; ok {
			continue
		}
		peer := "mxprobe-peer-" + id
		peerToken, err := e.hs.Register(e.ctx, peer, "demo-peer-password-"+id, false)
		if err != nil {
			return fmt.Errorf("registering the round-trip peer of %s: %w", id, err)
		}
		t["peer"] = map[string]any{"method": "token", "user": peer, "access_token": peerToken}
	}
	e.probes = append(e.probes,
		map[string]any{
			"name": "roundtrip", "type": "roundtrip", "timeout": "30s", "tenants": ids,
			"roundtrip": map[string]any{"min_power_level": 50},
		},
		map[string]any{
			"name": "room_message", "type": "room_message", "timeout": "20s", "tenants": ids,
			"room_message": map[string]any{"min_power_level": 0},
		},
	)
	return nil
}
