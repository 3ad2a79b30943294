// Command mxprobe-demo is `make demo`: it starts a local Synapse (Dendrite
// where Synapse cannot run: no root or no Synapse root file system), the
// other local stand-ins the capabilities add, creates demo tenants, writes a
// config that switches on every probe that can run locally, and runs
// `mxprobe serve` against it until Ctrl-C, then cleans up.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/internal/testenv/synapsereplay"
)

// env is what the demo builds up before starting mxprobe.
type env struct {
	ctx context.Context
	dir string
	// hs is the demo homeserver's client side (users, rooms): Synapse's,
	// or Dendrite's where Synapse cannot run.
	hs        *testenv.Homeserver
	synapseHS *testenv.Synapse
	dendrite  *testenv.Dendrite
	// config is the mxprobe configuration, as YAML-ready maps.
	config  map[string]any
	tenants []map[string]any
	probes  []map[string]any
	// urls are printed for the newcomer to open.
	urls    []string
	cleanup []func()
	// extraEnv is added to mxprobe's environment.
	extraEnv []string
	// synapse are the replayed Synapse processes (synapse.go).
	synapse []*synapsereplay.WorkerServer
}

// capabilities add what the demo shows, in this order: each adds tenants,
// probes, configuration and the stand-ins they need to the env.
func capabilities() []func(e *env) error {
	return []func(e *env) error{addAlerting, addAppService, addRateLimits, addMAS, addPrometheus, addRoundtrip, addSynapse, addWeb, addFederation}
}

// beforeServe run once the config is written, before mxprobe serves (bin
// is the mxprobe binary, cfg the config file).
func beforeServe() []func(e *env, bin, cfg string) error {
	return []func(e *env, bin, cfg string) error{addMASBeforeServe}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:9787", "address mxprobe listens on")
	bin := flag.String("mxprobe", "bin/mxprobe", "path of the mxprobe binary")
	keep := flag.Bool("keep", false, "keep the demo directory at exit")
	flag.Parse()
	if err := run(*listen, *bin, *keep); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		os.Exit(1)
	}
}

func run(listen, bin string, keep bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "mxprobe-demo-")
	if err != nil {
		return err
	}
	e := &env{ctx: ctx, dir: dir, config: map[string]any{}}
	defer func() {
		for i := len(e.cleanup) - 1; i >= 0; i-- {
			e.cleanup[i]()
		}
		if !keep {
			_ = os.RemoveAll(dir)
		} else {
			fmt.Println("demo directory kept:", dir)
		}
	}()

	if err := e.startHomeserver(); err != nil {
		return err
	}

	e.config["global"] = map[string]any{
		"homeserver_url": e.hs.URL,
		"server_name":    e.hs.ServerName,
		"data_dir":       filepath.Join(dir, "data"),
		"external_url":   "http://" + listen,
	}
	for _, id := range []string{"alpha", "beta"} {
		if err := e.addPasswordTenant(id, "Demo tenant "+id, ""); err != nil {
			return err
		}
	}
	e.probes = append(e.probes,
		map[string]any{"name": "versions", "type": "versions", "schedule": "@every 15s"},
		map[string]any{"name": "login", "type": "login", "schedule": "@every 20s"},
		// The media repository: one upload per tenant and day (docs/media.md).
		map[string]any{"name": "media", "type": "media", "schedule": "@every 1m", "tenants": []string{"alpha", "beta"}},
	)
	for _, h := range capabilities() {
		if err := h(e); err != nil {
			return err
		}
	}
	e.config["tenants"] = e.tenants
	e.config["probes"] = e.probes
	cfgPath := filepath.Join(dir, "mxprobe.yml")
	b, err := yaml.Marshal(e.config)
	if err != nil {
		return err
	}
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		return err
	}

	for _, h := range beforeServe() {
		if err := h(e, bin, cfgPath); err != nil {
			return err
		}
	}
	cmd := exec.Command(bin, "serve", "--config.file", cfgPath, "--web.listen-address", listen)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), e.extraEnv...)
	proc, err := testenv.StartProc(cmd)
	if err != nil {
		return fmt.Errorf("starting mxprobe: %w", err)
	}

	base := "http://" + listen
	fmt.Println()
	fmt.Println("mxprobe is running against the local deployment. Open:")
	fmt.Printf("  %s/          status page\n", base)
	fmt.Printf("  %s/metrics   Prometheus metrics (mxprobe_probe_success, mxprobe_build_info, ...)\n", base)
	for _, u := range e.urls {
		fmt.Println("  " + u)
	}
	fmt.Printf("  config: %s\n", cfgPath)
	fmt.Println("Press Ctrl-C to stop; everything the demo started is cleaned up.")

	select {
	case <-proc.Done():
		return fmt.Errorf("mxprobe exited: %v", proc.Err())
	case <-ctx.Done():
	}
	fmt.Println("\nstopping ...")
	proc.Stop(syscall.SIGTERM, 20*time.Second)
	return nil
}

// startHomeserver starts Synapse, or Dendrite with one line saying why
// Synapse cannot run here.
func (e *env) startHomeserver() error {
	sctx, cancel := context.WithTimeout(e.ctx, 2*time.Minute)
	defer cancel()
	why := testenv.SynapseAvailable()
	if why == "" {
		fmt.Println("starting a local Synapse homeserver (Debian's matrix-synapse, .tools/synapse-root) ...")
		s, err := testenv.StartSynapse(sctx, testenv.SynapseOptions{AppServices: demoAppServices()})
		if err != nil {
			return err
		}
		e.cleanup = append(e.cleanup, s.Stop)
		e.synapseHS, e.hs = s, &s.Homeserver
		fmt.Printf("Synapse %s is up at %s (metrics %s)\n", s.Version, s.URL, s.MetricsURL)
		return nil
	}
	fmt.Printf("Synapse cannot run here (%s); falling back to Dendrite %s\n", why, testenv.DendriteVersion)
	d, err := testenv.StartDendrite(sctx, testenv.DendriteOptions{Dir: filepath.Join(e.dir, "dendrite"), AppServices: demoAppServices()})
	if err != nil {
		return err
	}
	e.cleanup = append(e.cleanup, d.Stop)
	e.dendrite, e.hs = d, &d.Homeserver
	fmt.Println("Dendrite is up at", d.URL)
	return nil
}

// addPasswordTenant registers a tenant bot on the local homeserver and adds the
// tenant to the config. A non-empty wrongPassword is put in the config
// instead of the real one (a tenant whose login is meant to fail).
func (e *env) addPasswordTenant(id, name, wrongPassword string) error {
	user := "openmeet-bot-" + id
	password := "demo-" + id + "-password"
	if _, err := e.hs.Register(e.ctx, user, password, false); err != nil {
		return fmt.Errorf("registering %s: %w", user, err)
	}
	if wrongPassword != "" {
		password = wrongPassword
	}
	e.tenants = append(e.tenants, map[string]any{
		"id": id, "name": name,
		"bot": map[string]any{"method": "password", "user": user, "password": password},
	})
	return nil
}
