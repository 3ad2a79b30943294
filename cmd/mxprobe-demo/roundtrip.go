package main

import (
	"encoding/json"
	"fmt"
)

// The room round trip and the persistent-room message probe in the demo: a
// peer account shared by the tenants, and a public room (created by the
// peer) that the tenant bots are not in yet, so the first room_message run
// of each tenant shows the "joined first" path.
func init() {
	hooks = append(hooks, func(e *env) error {
		const peerUser, peerPassword = "mxprobe-peer", "demo-peer-password"
		if _, err := e.dendrite.Register(e.ctx, peerUser, peerPassword, false); err != nil {
			return fmt.Errorf("registering the round-trip peer: %w", err)
		}
		token, err := e.dendrite.Login(e.ctx, peerUser, peerPassword)
		if err != nil {
			return fmt.Errorf("peer login: %w", err)
		}
		b, err := e.dendrite.Do(e.ctx, "POST", "/_matrix/client/v3/createRoom", token,
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
		for _, t := range e.tenants {
			t["room_id"] = created.RoomID
		}
		e.probes = append(e.probes,
			map[string]any{
				"name": "roundtrip", "type": "roundtrip", "schedule": "@every 1m", "timeout": "30s",
				"roundtrip": map[string]any{
					"peer":            map[string]any{"method": "password", "user": peerUser, "password": peerPassword},
					"min_power_level": 50,
				},
			},
			map[string]any{
				"name": "room_message", "type": "room_message", "schedule": "@every 30s", "timeout": "20s",
				"room_message": map[string]any{"min_power_level": 0},
			},
		)
		return nil
	})
}
