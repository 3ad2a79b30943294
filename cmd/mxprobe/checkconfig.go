package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/mxclient"
	"github.com/mxprobe/mxprobe/probes/shard"
)

// checkConfig is `mxprobe check-config`: one line per problem, exit 1 on any.
func checkConfig(c *cli, stdout, stderr io.Writer) int {
	e := &env{logger: discard(), shard: shard.Shard{Index: 0, Count: 1}}
	cfg, err := config.Load(c.configFile, os.Getenv, e.kinds()...)
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		if errs, ok := err.(config.Errors); ok {
			fmt.Fprintf(stderr, "mxprobe: %d configuration problem(s)\n", len(errs))
		}
		return 1
	}
	// Assembling touches nothing (no login, data_dir untouched).
	st := newStores(mxclient.NewHTTPClientAs(userAgent()), func(string) string { return "" })
	if _, err := assembleProbes(cfg, e, st); err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return 1
	}
	src := c.configFile
	if src == "" {
		src = "(no file)"
	}
	for _, s := range cfg.Skipped {
		fmt.Fprintln(stdout, s.String())
	}
	// The Matrix user each MAS bot must end up as: a provider that names
	// users its own way (OpenMeet: <slug>_<tenant>) is the usual cause of
	// identity_mismatch, so the expectation is shown before the first login.
	for i := range cfg.Tenants {
		t := &cfg.Tenants[i]
		if !config.IsMASMethod(t.Bot.Method) {
			continue
		}
		// Only what names the user: no secret is copied (or read) here.
		acct := auth.Account{ServerName: t.ServerName, Config: config.Account{User: t.Bot.User, MatrixUser: t.Bot.MatrixUser, Method: t.Bot.Method}}
		if want := acct.ExpectedUserID(); want != "" {
			fmt.Fprintf(stdout, "%s: tenant %s: bot logs in as %s (%s)\n", src, t.ID, want, t.Bot.Method)
		}
	}
	for _, f := range config.CheckFirstLogins(cfg) {
		fmt.Fprintf(stdout, "%s: %s\n", src, f)
	}
	findings := config.CheckBudget(cfg)
	for _, f := range findings {
		fmt.Fprintf(stdout, "%s: rate limit: %s\n", src, f)
	}
	if len(findings) > 0 && c.strict {
		fmt.Fprintf(stderr, "mxprobe: %d rate limit(s) would be exceeded (--strict)\n", len(findings))
		return 1
	}
	if len(findings) > 0 {
		fmt.Fprintf(stdout, "%s: OK with %d rate-limit finding(s) (see docs/roundtrip.md; --strict makes them errors): %d tenant(s), %d probe(s)\n",
			src, len(findings), len(cfg.Tenants), len(cfg.Probes))
		return 0
	}
	fmt.Fprintf(stdout, "%s: OK: %d tenant(s), %d probe(s)\n", src, len(cfg.Tenants), len(cfg.Probes))
	return 0
}

func signalNotify(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
}
