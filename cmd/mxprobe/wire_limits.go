package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
)

// The homeserver's rate limits: the login budget that keeps full logins
// against Synapse's /login under rc_login.address, and the instance id that
// gives each process devices of its own.

// loginBudget is the password logins' budget for cfg: nil without one, the
// budget in force on m when unchanged (its window's history is kept).
// A new budget starts from the spend kept in store (data_dir), so neither a
// restart nor a changed budget spends what the homeserver's bucket has not
// refilled.
func loginBudget(cfg *config.Config, m *auth.Manager, store auth.BudgetStore) *auth.Budget {
	l := cfg.SynapseLimits
	if l.Disabled || l.LoginBudget.Logins <= 0 {
		return nil
	}
	if b := m.BudgetFor(config.MethodPassword); b != nil && b.Max == l.LoginBudget.Logins && b.Window == l.LoginBudget.Window.D() {
		return b
	}
	b := &auth.Budget{Name: "rc_login.address", Max: l.LoginBudget.Logins, Window: l.LoginBudget.Window.D(),
		Store: store, Key: "password"}
	b.Restore()
	return b
}

// budgetSkipLog is a sink: runs skipped by the login budget are not kept in
// the run history; the daemon logs why, at most once per probe and tenant
// every 10 minutes.
func budgetSkipLog(logger *slog.Logger) probes.Sink {
	var mu sync.Mutex
	last := map[string]time.Time{}
	return probes.SinkFunc(func(r probes.Result) {
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
			logger.Info("run skipped by the login budget", "probe", r.Probe, "tenant", r.Tenant, "reason", r.Error)
		}
	})
}

// logoutCLI removes the devices a CLI run logged in on.
func logoutCLI(m *auth.Manager, logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := m.LogoutAll(ctx); err != nil {
		logger.Warn("could not log out the sessions of this run", "err", err)
	}
}
