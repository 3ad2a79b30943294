package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/internal/testenv/masemu"
)

// The MAS login in the demo: the MAS emulator (with its OpenMeet-like
// upstream provider) in MAS's default configuration (password login on, so
// /login is a page; localpart import ignore, so the registration form asks
// for a username; no display name imported, so the display-name step
// follows), and tenant "masdemo" logs its bot in with method mas_oidc
// through it: the login probe shows every page (discovery, registration,
// platform login, login page, provider, account registration, display
// name, consent, token exchange, whoami) with its timing. Its round-trip
// peer logs in through MAS's compatibility password login.
//
// On Synapse, a second Synapse delegates its authentication to the
// emulator as the platform's does (matrix_authentication_service): it
// introspects every token at the emulator, which provisions users and
// devices in it. On Dendrite the emulator's front maps MAS sessions to
// Dendrite sessions.
func addMAS(e *env) error {
	opts := masemu.Options{}
	if e.synapseHS == nil {
		opts.Dendrite = e.dendrite
	}
	emu, err := masemu.Start(opts)
	if err != nil {
		return fmt.Errorf("starting the MAS emulator: %w", err)
	}
	e.cleanup = append(e.cleanup, emu.Close)

	const id, password = "masdemo", "demo-masdemo-platform-password"
	user, email := "openmeet-bot-"+id, "bot-"+id+"@openmeet.net"
	emu.AddUpstreamUser(id, email, password, user)

	const peer, peerPassword = "mxprobe-mas-peer", "demo-mas-peer-password"
	emu.SetMASPassword(peer, peerPassword)
	tenant := map[string]any{
		"id": id, "name": "Demo tenant masdemo (MAS login)", "homeserver_url": emu.HomeserverURL,
		"bot":  map[string]any{"method": "mas_oidc", "user": user, "email": email, "password": password},
		"peer": map[string]any{"method": "mas_compat_password", "user": peer, "password": peerPassword},
	}
	if e.synapseHS != nil {
		sctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
		s, err := testenv.StartSynapse(sctx, testenv.SynapseOptions{MAS: emu.SynapseMAS(), ServerName: emu.ServerName})
		cancel()
		if err != nil {
			return fmt.Errorf("starting the Synapse behind MAS: %w", err)
		}
		e.cleanup = append(e.cleanup, s.Stop)
		emu.AttachSynapse(s)
		fmt.Printf("Synapse %s behind the MAS emulator is up at %s (front %s)\n", s.Version, s.URL, emu.HomeserverURL)
		// room_message's room on that Synapse, made by the peer (a MAS
		// user: the delegating Synapse registers no one itself).
		room, err := masRoom(e.ctx, emu, peer, peerPassword)
		if err != nil {
			return err
		}
		tenant["room_id"] = room
		e.probes = append(e.probes, map[string]any{"name": "synapse_mas", "type": "synapse_metrics",
			"schedule": "@every 15s", "synapse": map[string]any{"url": s.MetricsURL}})
	} else {
		if _, err := e.dendrite.Register(e.ctx, peer, peerPassword, false); err != nil {
			return fmt.Errorf("registering the MAS tenant's peer: %w", err)
		}
		emu.UseHomeserverAccount(peer, peerPassword)
	}

	e.config["mas"] = map[string]any{
		"public_url":   emu.MASURL,
		"redirect_uri": "http://localhost:9005/auth/matrix/callback",
		"scopes":       "openid email",
		"upstream":     map[string]any{"adapter": "openmeet", "api_url": emu.UpstreamURL},
	}
	e.tenants = append(e.tenants, tenant)
	e.urls = append(e.urls,
		fmt.Sprintf("MAS emulator %s (homeserver front %s, upstream provider %s)", emu.MASURL, emu.HomeserverURL, emu.UpstreamURL),
		"tenant masdemo logs in through MAS: bin/mxprobe run login --tenant masdemo --config.file <config below>")
	return nil
}

// The tenant's first login, before the daemon starts, so the demo shows
// MAS's pages of a first login: login page, registration, display name.
func addMASBeforeServe(e *env, bin, cfg string) error {
	fmt.Println("first MAS login of tenant masdemo (mxprobe run login --tenant masdemo):")
	ctx, cancel := context.WithTimeout(e.ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "run", "login", "--tenant", "masdemo", "--config.file", cfg)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Println("  (the first MAS login failed; the daemon will show why)")
	}
	return nil
}

// masRoom makes the public room of the MAS tenant's room_message probe on
// the Synapse behind the emulator.
func masRoom(ctx context.Context, emu *masemu.Emulator, user, password string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	token, err := emu.CompatPasswordLogin(ctx, user, password)
	if err != nil {
		return "", fmt.Errorf("the MAS peer's first login: %w", err)
	}
	fronted := &testenv.Homeserver{URL: emu.HomeserverURL, ServerName: emu.ServerName}
	b, err := fronted.Do(ctx, "POST", "/_matrix/client/v3/createRoom", token,
		[]byte(`{"preset":"public_chat","name":"mxprobe MAS demo room"}`))
	if err != nil {
		return "", fmt.Errorf("creating the MAS demo room: %w", err)
	}
	var created struct {
		RoomID string `json:"room_id"`
	}
	if err := json.Unmarshal(b, &created); err != nil || created.RoomID == "" {
		return "", fmt.Errorf("creating the MAS demo room: unexpected answer %s", b)
	}
	return created.RoomID, nil
}
