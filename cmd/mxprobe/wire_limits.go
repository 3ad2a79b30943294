package main

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/mxprobe/mxprobe/internal/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
)

// The homeserver's rate limits: the login budget that keeps full logins
// against Synapse's /login under rc_login.address, and the instance id that
// gives each process devices of its own.
func init() {
	managerHooks = append(managerHooks, func(m *auth.Manager, cfg *config.Config) error {
		if m.Instance == "" {
			m.Instance = daemonInstance(cfg)
		}
		l := cfg.SynapseLimits
		if l.Disabled || l.LoginBudget.Logins <= 0 {
			m.SetBudget(nil, config.MethodPassword)
			return nil
		}
		// Keep the window's history across reloads when the budget is unchanged.
		if b := m.BudgetFor(config.MethodPassword); b != nil && b.Max == l.LoginBudget.Logins && b.Window == l.LoginBudget.Window.D() {
			return nil
		}
		m.SetBudget(&auth.Budget{Name: "rc_login.address", Max: l.LoginBudget.Logins, Window: l.LoginBudget.Window.D()},
			config.MethodPassword)
		return nil
	})
}

// Runs skipped by the login budget are not kept in the run history; the
// daemon logs why, at most once per probe and tenant every 10 minutes.
func init() {
	startHooks = append(startHooks, func(d *daemon) error {
		var mu sync.Mutex
		last := map[string]time.Time{}
		d.sinks = append(d.sinks, probes.SinkFunc(func(r probes.Result) {
			if r.Outcome != probes.OutcomeSkipped || r.Class != probes.ClassLoginBudget {
				return
			}
			k := r.Probe + "\x00" + r.Tenant
			mu.Lock()
			due := time.Since(last[k]) >= 10*time.Minute
			if due {
				last[k] = time.Now()
			}
			mu.Unlock()
			if due {
				d.logger.Info("run skipped by the login budget", "probe", r.Probe, "tenant", r.Tenant, "reason", r.Error)
			}
		}))
		return nil
	})
}

// daemonInstance is the daemon's instance id: kept in data_dir (stable
// across restarts), else derived from the host name.
func daemonInstance(cfg *config.Config) string {
	if dir := cfg.Global.DataDir; dir != "" {
		if id, err := auth.InstanceFromDir(dir); err == nil {
			return id
		}
	}
	host, _ := os.Hostname()
	return "h-" + host
}

// logoutCLI removes the devices a CLI run logged in on.
func logoutCLI(m *auth.Manager, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.LogoutAll(ctx); err != nil {
		logger.Warn("could not log out the sessions of this run", "err", err)
	}
}
