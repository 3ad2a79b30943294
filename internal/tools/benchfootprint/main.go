// Command benchfootprint compares the idle footprint of `mxprobe serve` with
// Debian's prometheus-blackbox-exporter, both watching the same local
// Dendrite on loopback: mxprobe with 10 tenants on its usual schedules,
// blackbox_exporter asked for /_matrix/client/versions every 15 s (as a
// Prometheus scrape would). After a warm-up it samples VmRSS and CPU ticks
// of both processes from /proc for a fixed window and prints a table plus
// benchstat-style lines. It is run by scripts/bench-footprint.sh (make bench).
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/internal/testenv"
)

func main() {
	bin := flag.String("mxprobe", "bin/mxprobe", "mxprobe binary")
	bb := flag.String("blackbox", "/usr/bin/prometheus-blackbox-exporter", "blackbox_exporter binary")
	tenants := flag.Int("tenants", 10, "tenants mxprobe watches")
	warmup := flag.Duration("warmup", 30*time.Second, "time before sampling")
	window := flag.Duration("window", 2*time.Minute, "sampling window")
	flag.Parse()
	if err := run(*bin, *bb, *tenants, *warmup, *window); err != nil {
		fmt.Fprintln(os.Stderr, "bench-footprint:", err)
		os.Exit(1)
	}
}

type proc struct {
	name string
	*testenv.Proc
}

func start(name string, args []string, logPath string) (*proc, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	tp, err := testenv.StartProc(cmd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	go func() { <-tp.Done(); f.Close() }()
	return &proc{name: name, Proc: tp}, nil
}

func (p *proc) stop() { p.Stop(syscall.SIGTERM, 15*time.Second) }

func (p *proc) alive() bool {
	select {
	case <-p.Done():
		return false
	default:
		return true
	}
}

// memKB reads VmRSS and its anonymous part (heap, stacks: RssAnon) of pid;
// the rest is mostly the binary's pages (RssFile).
func memKB(pid int) (rss, anon float64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		switch fs[0] {
		case "VmRSS:":
			rss, _ = strconv.ParseFloat(fs[1], 64)
		case "RssAnon:":
			anon, _ = strconv.ParseFloat(fs[1], 64)
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("no VmRSS for %d", pid)
	}
	return rss, anon, nil
}

// cpuTicks reads utime+stime of pid in clock ticks (USER_HZ, 100 on Linux).
func cpuTicks(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	// The command name is in parentheses and may hold spaces: fields after ')'.
	fs := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	ut, _ := strconv.ParseFloat(fs[11], 64)
	st, _ := strconv.ParseFloat(fs[12], 64)
	return ut + st, nil
}

func waitHTTP(url string, p *proc, within time.Duration) error {
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if !p.alive() {
			return fmt.Errorf("%s exited during start-up", p.name)
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer %s within %s", p.name, url, within)
}

func run(bin, bb string, tenants int, warmup, window time.Duration) error {
	if _, err := os.Stat(bb); err != nil {
		return fmt.Errorf("%s not found: install it with `sudo apt-get install prometheus-blackbox-exporter` (or pass --blackbox)", bb)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "mxprobe-footprint-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	sctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	d, err := testenv.StartDendrite(sctx, testenv.DendriteOptions{Dir: filepath.Join(dir, "dendrite")})
	cancel()
	if err != nil {
		return err
	}
	defer d.Stop()

	// mxprobe: 10 tenants, versions every 15 s (what blackbox does) plus a
	// login per tenant every minute, its everyday load.
	var ts []map[string]any
	for i := range tenants {
		user, pw := fmt.Sprintf("fp-bot-%02d", i), fmt.Sprintf("fp-pw-%02d", i)
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		_, err := d.Register(rctx, user, pw, false)
		cancel()
		if err != nil {
			return err
		}
		ts = append(ts, map[string]any{"id": fmt.Sprintf("t%02d", i), "bot": map[string]any{"method": "password", "user": user, "password": pw}})
	}
	cfg := map[string]any{
		"global":         map[string]any{"homeserver_url": d.URL, "server_name": d.ServerName, "data_dir": filepath.Join(dir, "data")},
		"synapse_limits": map[string]any{"disabled": true}, // measures mxprobe, not the schedules
		"tenants":        ts,
		"probes": []map[string]any{
			{"name": "versions", "type": "versions", "schedule": "@every 15s"},
			{"name": "login", "type": "login", "schedule": "@every 1m"},
		},
	}
	b, _ := yaml.Marshal(cfg)
	cfgPath := filepath.Join(dir, "mxprobe.yml")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		return err
	}
	mxPort, _ := testenv.FreePort()
	mx, err := start("mxprobe", []string{bin, "serve", "--config.file", cfgPath,
		"--web.listen-address", fmt.Sprintf("127.0.0.1:%d", mxPort), "--log.level", "warn"}, filepath.Join(dir, "mxprobe.log"))
	if err != nil {
		return err
	}
	defer mx.stop()

	bbCfg := filepath.Join(dir, "blackbox.yml")
	if err := os.WriteFile(bbCfg, []byte("modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n"), 0o600); err != nil {
		return err
	}
	bbPort, _ := testenv.FreePort()
	bbx, err := start("blackbox_exporter", []string{bb, "--config.file", bbCfg,
		"--web.listen-address", fmt.Sprintf("127.0.0.1:%d", bbPort)}, filepath.Join(dir, "blackbox.log"))
	if err != nil {
		return err
	}
	defer bbx.stop()
	if err := waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/-/ready", mxPort), mx, 30*time.Second); err != nil {
		return err
	}
	if err := waitHTTP(fmt.Sprintf("http://127.0.0.1:%d/-/healthy", bbPort), bbx, 30*time.Second); err != nil {
		return err
	}

	// The scrape loop a Prometheus would run against each: /probe on
	// blackbox every 15 s, /metrics on mxprobe every 15 s.
	probeURL := fmt.Sprintf("http://127.0.0.1:%d/probe?module=http_2xx&target=%s/_matrix/client/versions", bbPort, d.URL)
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", mxPort)
	bbOK, bbFail := 0, 0
	scrape := func() {
		for _, u := range []string{probeURL, metricsURL} {
			resp, err := http.Get(u)
			if err != nil {
				bbFail++
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if u == probeURL {
				if strings.Contains(string(body), "\nprobe_success 1") {
					bbOK++
				} else {
					bbFail++
				}
			}
		}
	}
	ticker := time.NewTicker(15 * time.Second)
	defer ticker.Stop()
	scrape()

	fmt.Printf("warming up %s, then sampling %s (mxprobe: %d tenants; blackbox_exporter: versions every 15s)\n", warmup, window, tenants)
	wait := func(d time.Duration, each func()) error {
		end := time.Now().Add(d)
		sample := time.NewTicker(time.Second)
		defer sample.Stop()
		for time.Now().Before(end) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-ticker.C:
				scrape()
			case <-sample.C:
				if each != nil {
					each()
				}
			}
			if !mx.alive() || !bbx.alive() {
				return fmt.Errorf("a process exited early (logs in %s)", dir)
			}
		}
		return nil
	}
	if err := wait(warmup, nil); err != nil {
		return err
	}
	type stats struct{ sum, max, anon, n, cpu0 float64 }
	st := map[*proc]*stats{mx: {}, bbx: {}}
	for p, s := range st {
		s.cpu0, _ = cpuTicks(p.Cmd.Process.Pid)
	}
	t0 := time.Now()
	if err := wait(window, func() {
		for p, s := range st {
			if kb, anon, err := memKB(p.Cmd.Process.Pid); err == nil {
				s.sum += kb
				s.anon += anon
				s.n++
				s.max = max(s.max, kb)
			}
		}
	}); err != nil {
		return err
	}
	secs := time.Since(t0).Seconds()
	fmt.Printf("\n%-20s %14s %14s %14s %16s\n", "process", "RSS mean MB", "RSS max MB", "anon mean MB", "CPU ms/min")
	out := map[*proc][4]float64{}
	for _, p := range []*proc{mx, bbx} {
		s := st[p]
		c1, _ := cpuTicks(p.Cmd.Process.Pid)
		cpuMsPerMin := (c1 - s.cpu0) * 10 / secs * 60 // ticks are 10 ms
		v := [4]float64{s.sum / s.n / 1024, s.max / 1024, cpuMsPerMin, s.anon / s.n / 1024}
		out[p] = v
		fmt.Printf("%-20s %14.1f %14.1f %14.1f %16.1f\n", p.name, v[0], v[1], v[3], v[2])
	}
	fmt.Printf("blackbox probes of versions: %d ok, %d failed\n\n", bbOK, bbFail)
	for _, p := range []*proc{mx, bbx} {
		v := out[p]
		fmt.Printf("BenchmarkFootprint/process=%s 1 %.1f RSS-mean-MB %.1f RSS-max-MB %.1f anon-MB %.1f cpu-ms/min\n", p.name, v[0], v[1], v[3], v[2])
	}
	ratio := out[mx][0] / out[bbx][0]
	verdict := "met"
	if ratio > 1 {
		verdict = "MISSED"
	}
	fmt.Printf("\nmxprobe RSS / blackbox_exporter RSS = %.2f (target <= 1.00: %s)\n", ratio, verdict)
	if bbOK == 0 {
		return fmt.Errorf("blackbox_exporter never probed the homeserver successfully (logs in %s)", dir)
	}
	return nil
}
