package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv/masemu"
)

// The MAS login in the demo: the MAS emulator (with its OpenMeet-like
// upstream provider) starts in front of the demo Dendrite in MAS's default
// configuration (password login on, so /login is a page; localpart import
// ignore, so the registration form asks for a username; no display name
// imported, so the display-name step follows), and tenant "masdemo" logs its
// bot in with method mas_oidc through it: the login probe shows every page
// (discovery, registration, platform login, login page, provider, account
// registration, display name, consent, token exchange, whoami) with its
// timing. Its round-trip peer logs in through MAS's compatibility password
// login.
func addMAS(e *env) error {
	emu, err := masemu.Start(masemu.Options{Dendrite: e.dendrite})
	if err != nil {
		return fmt.Errorf("starting the MAS emulator: %w", err)
	}
	e.cleanup = append(e.cleanup, emu.Close)

	const id, password = "masdemo", "demo-masdemo-platform-password"
	user, email := "openmeet-bot-"+id, "bot-"+id+"@openmeet.net"
	emu.AddUpstreamUser(id, email, password, user)

	const peer, peerPassword = "mxprobe-mas-peer", "demo-mas-peer-password"
	if _, err := e.dendrite.Register(e.ctx, peer, peerPassword, false); err != nil {
		return fmt.Errorf("registering the MAS tenant's peer: %w", err)
	}
	emu.SetMASPassword(peer, peerPassword)
	emu.UseHomeserverAccount(peer, peerPassword)

	e.config["mas"] = map[string]any{
		"public_url":   emu.MASURL,
		"redirect_uri": "http://localhost:9005/auth/matrix/callback",
		"scopes":       "openid email",
		"upstream":     map[string]any{"adapter": "openmeet", "api_url": emu.UpstreamURL},
	}
	e.tenants = append(e.tenants, map[string]any{
		"id": id, "name": "Demo tenant masdemo (MAS login)", "homeserver_url": emu.HomeserverURL,
		"bot":  map[string]any{"method": "mas_oidc", "user": user, "email": email, "password": password},
		"peer": map[string]any{"method": "mas_compat_password", "user": peer, "password": peerPassword},
	})
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
