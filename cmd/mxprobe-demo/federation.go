package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/mxprobe/mxprobe/internal/testenv"
)

// addFederation shows the federation, federation_roundtrip and tls probes:
// two Dendrites federating with each other over TLS on loopback (server
// names 127.0.0.1:<port>, certificates from a demo CA the probes trust),
// beside the demo's main homeserver, which does not federate. Tenant delta's
// bot lives on the first Dendrite and makes a round trip with a peer on the
// second; the federation probe checks both server names, the tls probe
// their federation endpoints.
func addFederation(e *env) error {
	ca, err := testenv.NewCA(filepath.Join(e.dir, "federation-ca"))
	if err != nil {
		return err
	}
	leaf, err := ca.IssueLeaf(time.Now().Add(90*24*time.Hour), "127.0.0.1")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	var ds []*testenv.Dendrite
	for _, name := range []string{"a", "b"} {
		d, err := testenv.StartDendrite(ctx, testenv.DendriteOptions{
			Dir:        filepath.Join(e.dir, "dendrite-fed-"+name),
			Federation: &testenv.DendriteFederation{CertFile: leaf.CertFile, KeyFile: leaf.KeyFile},
		})
		if err != nil {
			return fmt.Errorf("federating Dendrite %s: %w", name, err)
		}
		e.cleanup = append(e.cleanup, d.Stop)
		ds = append(ds, d)
	}
	local, remote := ds[0], ds[1]
	fmt.Printf("two Dendrites federate over TLS: %s (%s) and %s (%s)\n", local.ServerName, local.URL, remote.ServerName, remote.URL)
	const bot, botPW = "openmeet-bot-delta", "demo-delta-password"
	const peer, peerPW = "mxprobe-federation-peer", "demo-federation-peer-password"
	if _, err := local.Register(ctx, bot, botPW, false); err != nil {
		return fmt.Errorf("registering %s: %w", bot, err)
	}
	if _, err := remote.Register(ctx, peer, peerPW, false); err != nil {
		return fmt.Errorf("registering %s: %w", peer, err)
	}
	e.tenants = append(e.tenants, map[string]any{
		"id": "delta", "name": "Demo tenant delta (federating homeserver)",
		"homeserver_url": local.URL, "server_name": local.ServerName,
		"bot": map[string]any{"method": "password", "user": bot, "password": botPW},
	})
	names := []string{local.ServerName, remote.ServerName}
	e.probes = append(e.probes,
		map[string]any{"name": "federation", "type": "federation", "schedule": "@every 30s",
			"federation": map[string]any{"server_names": names, "ca_file": ca.CAFile}},
		map[string]any{"name": "federation_roundtrip", "type": "federation_roundtrip", "schedule": "@every 1m", "tenants": []string{"delta"},
			"federation_roundtrip": map[string]any{"peer": map[string]any{
				"homeserver_url": remote.URL, "server_name": remote.ServerName, "user": peer, "password": peerPW}}},
		map[string]any{"name": "tls", "type": "tls", "schedule": "@every 1m",
			"tls": map[string]any{"server_names": names, "ca_file": ca.CAFile}},
	)
	return nil
}
