package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/prometheus/common/model"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/mxclient"
	"github.com/mxprobe/mxprobe/probes/shard"
)

// runOnce is `mxprobe run PROBE`: run the probe now for the chosen tenants,
// print each result, exit 0 only if all succeeded.
func runOnce(c *cli, logger *slog.Logger, stdout, stderr io.Writer) int {
	e := &env{logger: logger, shard: shard.Shard{Index: 0, Count: 1}}
	cfg, err := config.Load(c.configFile, os.Getenv, e.kinds()...)
	if err != nil {
		fmt.Fprintf(stderr, "mxprobe: configuration errors:\n%v\n", err)
		return 2
	}
	p, err := cfg.EnsureProbe(c.runProbe)
	if err != nil {
		fmt.Fprintf(stderr, "mxprobe: %v\n", err)
		return 2
	}
	if pt, ok := e.probeTypes()[p.Type]; ok && pt.prepareRun != nil {
		if err := pt.prepareRun(c, e, cfg, p); err != nil {
			fmt.Fprintf(stderr, "mxprobe: %v\n", err)
			return 2
		}
	}
	if p.Settings() == nil {
		if err := cfg.Decode(p); err != nil {
			fmt.Fprintf(stderr, "mxprobe: %v\n", err)
			return 2
		}
	}
	if c.runTimeout != "" {
		d, err := model.ParseDuration(c.runTimeout)
		if err != nil {
			fmt.Fprintf(stderr, "mxprobe: --timeout: %v\n", err)
			return 2
		}
		p.Timeout = config.Duration(d)
	}
	st := newStores(mxclient.NewHTTPClientAs(userAgent()), os.Getenv)
	st.provideJournals(logger)
	defer func() { _ = st.journals.Close() }()
	mgr := st.auth
	// A CLI run logs in on devices of its own and removes them at the end,
	// so it never cancels the daemon's sessions nor leaves devices behind.
	mgr.Instance = "cli-" + auth.RandomID()
	defer logoutCLI(mgr, logger)
	rt, err := assembleProbes(cfg, e, st)
	if err != nil {
		fmt.Fprintf(stderr, "mxprobe: %v\n", err)
		return 2
	}
	commitLogin(mgr, rt, nil)
	jobs := rt.jobs
	var job *probes.Job
	for _, j := range jobs {
		if j.Name == p.Name {
			job = j
		}
	}
	subjects, err := chooseSubjects(c, job)
	if err != nil {
		fmt.Fprintf(stderr, "mxprobe: %v\n", err)
		return 2
	}

	engine := probes.NewEngine(cfg.Global.Concurrency)
	engine.SetJobs(jobs)
	ctx, stop := signalContext()
	defer stop()

	live := c.runOutput == "text" && len(subjects) > 1
	results := make([]probes.Result, len(subjects))
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		bad  []string
		done int
	)
	// On a terminal a status line under the finished ones shows how far the
	// run is; piped output gets the finished lines only.
	tty := live && c.sys.isTerminal != nil && c.sys.isTerminal(stdout)
	status := func() {
		if tty {
			fmt.Fprintf(stdout, "\r\033[K%s: %d/%d done, %d failed, %d running ...", job.Name, done, len(subjects), len(bad), len(subjects)-done)
		}
	}
	if live {
		fmt.Fprintf(stdout, "running %s for %d tenants (at most %d at once)\n", job.Name, len(subjects), cfg.Global.Concurrency)
		mu.Lock()
		status()
		mu.Unlock()
	}
	for i, s := range subjects {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := engine.Run(ctx, job.Name, s)
			if err != nil {
				res = probes.Result{Probe: job.Name, Type: job.Type, Tenant: s, Outcome: probes.OutcomeFailure,
					Class: probes.ClassCancelled, Error: err.Error(), Steps: []probes.Step{}}
			}
			mu.Lock()
			defer mu.Unlock()
			results[i] = res
			if !res.OK() {
				bad = append(bad, displayTenant(s))
			}
			done++
			if live {
				if tty {
					fmt.Fprint(stdout, "\r\033[K")
				}
				fmt.Fprintln(stdout, summaryLine(res))
				status()
			}
		}()
	}
	wg.Wait()
	engine.Shutdown(0)
	revokeHeld(mgr, logger, slog.LevelDebug)
	if tty {
		fmt.Fprint(stdout, "\r\033[K")
	}

	switch {
	case c.runOutput == "json":
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		var v any = results
		if len(results) == 1 && !c.runAll {
			v = results[0]
		}
		_ = enc.Encode(v)
	case live:
		fmt.Fprintln(stdout)
		printTable(stdout, results)
	default:
		for i, r := range results {
			if i > 0 {
				fmt.Fprintln(stdout)
			}
			printResult(stdout, r)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		fmt.Fprintf(stderr, "mxprobe: %s failed for: %s\n", job.Name, strings.Join(bad, ", "))
		return 1
	}
	return 0
}

func chooseSubjects(c *cli, job *probes.Job) ([]string, error) {
	global := len(job.Subjects) == 1 && job.Subjects[0] == ""
	switch {
	case global:
		if len(c.runTenants) > 0 {
			return nil, fmt.Errorf("probe %q runs for the deployment as a whole; drop --tenant", job.Name)
		}
		return []string{""}, nil
	case c.runAll:
		if len(job.Subjects) == 0 {
			return nil, fmt.Errorf("probe %q has no tenants (configure tenants or TENANTS_B64)", job.Name)
		}
		return job.Subjects, nil
	case len(c.runTenants) > 0:
		known := map[string]bool{}
		for _, s := range job.Subjects {
			known[s] = true
		}
		for _, t := range c.runTenants {
			if !known[t] {
				return nil, fmt.Errorf("unknown tenant %q for probe %q (known: %s)", t, job.Name, strings.Join(job.Subjects, ", "))
			}
		}
		return c.runTenants, nil
	case len(job.Subjects) == 1:
		return job.Subjects, nil
	}
	return nil, fmt.Errorf("probe %q has %d tenants: name one with --tenant or use --all", job.Name, len(job.Subjects))
}

func displayTenant(t string) string {
	if t == "" {
		return "(deployment)"
	}
	return term(t)
}

// term makes remote text safe for a terminal, one line: control
// characters (ESC sequences, BEL, CR, newlines, tabs that would shift the
// table) are written as visible escapes.
func term(s string) string { return probes.EscapeControls(s, false) }

func verdict(r probes.Result) string {
	switch r.Outcome {
	case probes.OutcomeSuccess:
		return "OK"
	case probes.OutcomeWarning:
		return "WARN " + string(r.Class)
	case probes.OutcomeSkipped:
		return "SKIPPED " + string(r.Class)
	}
	return "FAIL " + string(r.Class)
}

func summaryLine(r probes.Result) string {
	s := fmt.Sprintf("%-20s %-12s %-8s %s", displayTenant(r.Tenant), r.Probe, fmtDur(r.Duration), verdict(r))
	if !r.OK() || r.Outcome == probes.OutcomeWarning {
		s += fmt.Sprintf(" at %s: %s", term(r.FailedStep), term(r.Error)) // a skipped run says why
	}
	return s
}

func printTable(w io.Writer, results []probes.Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tPROBE\tRESULT\tDURATION\tFAILED STEP")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", displayTenant(r.Tenant), r.Probe, verdict(r), fmtDur(r.Duration), term(r.FailedStep))
	}
	_ = tw.Flush()
}

func printResult(w io.Writer, r probes.Result) {
	fmt.Fprintf(w, "probe %s  tenant %s  %s  in %s", r.Probe, displayTenant(r.Tenant), verdict(r), fmtDur(r.Duration))
	if r.Method != "" {
		fmt.Fprintf(w, "  (login method %s)", term(r.Method))
	}
	fmt.Fprintln(w)
	if r.Error != "" {
		fmt.Fprintf(w, "  failed at %s: %s\n", term(r.FailedStep), term(r.Error))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  STEP\tSTATUS\tHTTP\tTIME\tDETAIL")
	for _, s := range r.Steps {
		st := "ok"
		if !s.OK {
			st = "FAIL " + string(s.Class)
		}
		code := ""
		if s.Status != 0 {
			code = fmt.Sprint(s.Status)
		}
		detail := s.Detail
		if s.Error != "" {
			detail = strings.TrimSpace(s.Error + " " + detail)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", term(s.Name), st, code, fmtDur(s.Duration), term(detail))
	}
	_ = tw.Flush()
	if len(r.Signals) > 0 {
		names := make([]string, 0, len(r.Signals))
		for k := range r.Signals {
			names = append(names, k)
		}
		sort.Strings(names)
		fmt.Fprintln(w, "  signals:")
		for _, k := range names {
			fmt.Fprintf(w, "    %s = %g\n", term(k), r.Signals[k])
		}
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < 10*time.Second:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return d.Round(10 * time.Millisecond).String()
}

// isCharDevice reports whether w is a terminal (a character device), where
// `mxprobe run` shows live progress.
func isCharDevice(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// revokeHeld ends the sessions a process holds (MAS sessions are revoked at
// MAS, so runs and restarts do not pile them up), within a bounded time.
func revokeHeld(mgr *auth.Manager, logger *slog.Logger, level slog.Level) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if ok, failed := mgr.RevokeAll(ctx); ok+failed > 0 {
		if failed > 0 {
			level = slog.LevelWarn
		}
		logger.Log(ctx, level, "held sessions revoked", "revoked", ok, "failed", failed)
	}
}

func signalContext() (context.Context, context.CancelFunc) {
	return signalNotify(context.Background())
}
