package testenv

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"
)

// Synapse runs the real homeserver: Debian's matrix-synapse package in a
// root file system built by scripts/build-synapse-root.sh (make tools). Each
// instance runs in private mount and PID namespaces (unshare), chrooted into
// the root, so its /proc and /dev mounts exist only for it and vanish with
// it, and no process of it outlives its namespace's first process.
//
// It needs root (unshare, chroot, mount); without root, or without the
// root file system, StartSynapse says why and the test helpers fail or, with
// MXPROBE_SKIP_INTEGRATION=1, skip.

// SynapseOptions tune a harness Synapse.
type SynapseOptions struct {
	// ServerName of the homeserver (default "localhost").
	ServerName string
	// Postgres runs Synapse on a PostgreSQL of its own (Debian's postgresql
	// on the host, data in a temp dir) instead of SQLite.
	Postgres bool
	// RateLimits are rc_* settings written as they are into homeserver.yaml;
	// nil leaves Synapse's defaults (rate-limits.md).
	RateLimits map[string]any
	// MAS delegates authentication to a MAS (matrix_authentication_service):
	// Synapse then introspects every access token there and refuses password
	// login and registration of its own.
	MAS *SynapseMAS
	// AppServices are registered with the homeserver
	// (app_service_config_files).
	AppServices []AppService
	// Config holds further homeserver.yaml keys, set last.
	Config map[string]any
}

// SynapseMAS is the matrix_authentication_service section.
type SynapseMAS struct {
	// Endpoint is MAS's URL as Synapse reaches it.
	Endpoint string
	// Secret is the shared secret MAS and Synapse use toward each other.
	Secret string
}

// Synapse is a running homeserver.
type Synapse struct {
	Homeserver
	// MetricsURL is the metrics listener's page (/_synapse/metrics).
	MetricsURL string
	// Version is the matrix-synapse package version in the root.
	Version string
	// Dir is the instance's folder on the host (config, signing key, log,
	// SQLite database, media); inside the root it is /srv/<name>.
	Dir string
	// Port and MetricsPort are the client and metrics listeners' ports.
	Port, MetricsPort int

	root  string
	inner string
	opts  SynapseOptions
	pg    *Postgres
	// secrets of the homeserver.yaml, kept across rewrites (Resume, a
	// rotated application service token).
	macaroonSecret, formSecret string

	mu   sync.Mutex
	proc *Proc
}

// SynapseRoot returns the folder of the Synapse root file system
// (MXPROBE_SYNAPSE_ROOT overrides it; next to the Dendrite tools by default).
func SynapseRoot() (string, error) {
	if d := os.Getenv("MXPROBE_SYNAPSE_ROOT"); d != "" {
		return d, nil
	}
	tools, err := ToolsDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(filepath.Dir(tools), "synapse-root"), nil
}

// SynapseAvailable says why Synapse cannot be started here ("" when it can).
func SynapseAvailable() string {
	root, err := SynapseRoot()
	if err != nil {
		return err.Error()
	}
	if os.Geteuid() != 0 {
		return "the Synapse harness needs root (unshare, chroot, mount); on a machine without root point mxprobe at an existing Synapse instead (docs/synapse.md)"
	}
	if _, err := os.Stat(filepath.Join(root, "usr", "bin", "python3")); err != nil {
		return fmt.Sprintf("no Synapse root file system in %s: run `make tools` (scripts/build-synapse-root.sh, mmdebstrap)", root)
	}
	for _, tool := range []string{"unshare", "chroot"} {
		if _, err := exec.LookPath(tool); err != nil {
			return tool + " not found (util-linux, coreutils)"
		}
	}
	return ""
}

// StartSynapse writes a configuration and starts Synapse, returning once its
// client API answers.
func StartSynapse(ctx context.Context, opts SynapseOptions) (*Synapse, error) {
	if why := SynapseAvailable(); why != "" {
		return nil, errors.New(why)
	}
	root, _ := SynapseRoot()
	if opts.ServerName == "" {
		opts.ServerName = "localhost"
	}
	srv := filepath.Join(root, "srv")
	if err := os.MkdirAll(srv, 0o755); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(srv, "synapse-")
	if err != nil {
		return nil, err
	}
	s := &Synapse{root: root, opts: opts, Dir: dir, inner: "/srv/" + filepath.Base(dir)}
	s.ServerName = opts.ServerName
	s.SharedSecret = randomHex(16)
	s.macaroonSecret, s.formSecret = randomHex(16), randomHex(16)
	if v, err := os.ReadFile(filepath.Join(root, ".mxprobe-synapse-version")); err == nil {
		s.Version = strings.TrimSpace(string(v))
	}
	fail := func(err error) (*Synapse, error) {
		s.Stop()
		return nil, err
	}
	if opts.Postgres {
		if s.pg, err = StartPostgres(ctx); err != nil {
			return fail(fmt.Errorf("postgresql for synapse: %w", err))
		}
		if err := s.pg.CreateDatabase(ctx, "synapse"); err != nil {
			return fail(err)
		}
	}
	if err := s.writeSigningKey(); err != nil {
		return fail(err)
	}
	if err := s.startOnFreePorts(ctx); err != nil {
		return fail(err)
	}
	return s, nil
}

// startOnFreePorts writes the configuration with free ports and starts
// Synapse. A free port may be taken by another test binary's server before
// Synapse binds it: Synapse then exits (address in use) or the readiness
// check reaches the other server, and new ports are tried.
func (s *Synapse) startOnFreePorts(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		var err error
		if s.Port, err = FreePort(); err != nil {
			return err
		}
		if s.MetricsPort, err = FreePort(); err != nil {
			return err
		}
		s.URL = fmt.Sprintf("http://127.0.0.1:%d", s.Port)
		s.MetricsURL = fmt.Sprintf("http://127.0.0.1:%d/_synapse/metrics", s.MetricsPort)
		if err := s.writeConfig(); err != nil {
			return err
		}
		err = s.start(ctx)
		if err == nil {
			return nil
		}
		s.kill()
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			return err
		}
	}
}

// writeSigningKey writes the server's ed25519 signing key in Synapse's
// format ("ed25519 <key id> <unpadded base64 seed>",
// signedjson.key.write_signing_keys), saving a Python start-up that
// --generate-keys would cost.
func (s *Synapse) writeSigningKey() error {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	line := fmt.Sprintf("ed25519 a_%s %s\n", randomHex(2), base64.RawStdEncoding.EncodeToString(priv.Seed()))
	return os.WriteFile(filepath.Join(s.Dir, "signing.key"), []byte(line), 0o600)
}

func (s *Synapse) writeConfig() error {
	in := s.inner
	doc := map[string]any{
		"server_name": s.ServerName,
		"pid_file":    in + "/homeserver.pid",
		"listeners": []any{
			map[string]any{"port": s.Port, "tls": false, "type": "http", "x_forwarded": false,
				"bind_addresses": []string{"127.0.0.1"},
				"resources":      []any{map[string]any{"names": []string{"client"}, "compress": false}}},
			map[string]any{"port": s.MetricsPort, "type": "metrics", "bind_addresses": []string{"127.0.0.1"}},
		},
		"database":                    map[string]any{"name": "sqlite3", "args": map[string]any{"database": in + "/homeserver.db"}},
		"log_config":                  in + "/log.yaml",
		"media_store_path":            in + "/media",
		"report_stats":                false,
		"macaroon_secret_key":         s.macaroonSecret,
		"form_secret":                 s.formSecret,
		"signing_key_path":            in + "/signing.key",
		"trusted_key_servers":         []any{},
		"suppress_key_server_warning": true,
		"enable_metrics":              true,
	}
	if s.pg != nil {
		doc["database"] = map[string]any{"name": "psycopg2", "args": map[string]any{
			"user": "postgres", "database": "synapse", "host": "127.0.0.1", "port": s.pg.Port,
			"cp_min": 1, "cp_max": 5,
		}}
	}
	if m := s.opts.MAS; m != nil {
		// Synapse refuses its own password login and registration next to
		// MAS (synapse/config/mas.py check_config_conflicts); shared-secret
		// registration is not served either (synapse/rest/admin
		// register_servlets: auth_delegated), MAS provisions users.
		doc["matrix_authentication_service"] = map[string]any{"enabled": true, "endpoint": m.Endpoint, "secret": m.Secret}
		doc["password_config"] = map[string]any{"enabled": false}
	} else {
		doc["registration_shared_secret"] = s.SharedSecret
	}
	for k, v := range s.opts.RateLimits {
		doc[k] = v
	}
	if len(s.opts.AppServices) > 0 {
		var files []string
		for _, a := range s.opts.AppServices {
			b, err := a.registration(s.ServerName)
			if err != nil {
				return err
			}
			name := "appservice-" + a.ID + ".yaml"
			if err := os.WriteFile(filepath.Join(s.Dir, name), b, 0o600); err != nil {
				return err
			}
			files = append(files, in+"/"+name)
		}
		doc["app_service_config_files"] = files
	}
	for k, v := range s.opts.Config {
		doc[k] = v
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.Dir, "homeserver.yaml"), b, 0o600); err != nil {
		return err
	}
	// Token introspection is logged at DEBUG (synapse/api/auth/mas.py
	// _introspect_token); the access log at INFO names every request.
	logCfg := `version: 1
formatters:
  precise: {format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s'}
handlers:
  file: {class: logging.FileHandler, formatter: precise, filename: ` + in + `/homeserver.log}
loggers:
  synapse.storage.SQL: {level: INFO}
  synapse.api.auth.mas: {level: DEBUG}
root: {level: INFO, handlers: [file]}
disable_existing_loggers: false
`
	return os.WriteFile(filepath.Join(s.Dir, "log.yaml"), []byte(logCfg), 0o600)
}

// start runs Synapse in its namespaces and waits until it answers.
func (s *Synapse) start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// unshare gives the child a mount and PID namespace of its own; /proc is
	// mounted for it and /dev bound into the root inside that namespace
	// only, so nothing stays mounted on the host whatever happens to the
	// test. --kill-child: if unshare dies, Synapse is killed.
	cmd := exec.Command("unshare", "--mount", "--pid", "--fork", "--kill-child",
		"--mount-proc="+filepath.Join(s.root, "proc"),
		"sh", "-c", `mount --bind /dev "$0/dev" && exec chroot "$0" "$@"`, s.root,
		"python3", "-m", "synapse.app.homeserver", "--config-path", s.inner+"/homeserver.yaml")
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/root"}
	out, err := os.OpenFile(filepath.Join(s.Dir, "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	// Its own process group: a test's Ctrl-C reaches the test binary, which
	// stops Synapse in order, not Synapse behind its back.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	proc, err := startProc(cmd, serviceWait)
	if err != nil {
		return fmt.Errorf("starting synapse: %w", err)
	}
	s.proc = proc

	deadline := time.Now().Add(90 * time.Second)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case <-proc.Done():
			if strings.Contains(s.logTail(40), "Address already in use") {
				return fmt.Errorf("synapse on %s: %w", s.URL, errPortTaken)
			}
			return fmt.Errorf("synapse exited during start-up: %v; last lines of its log:\n%s", proc.Err(), s.logTail(15))
		case <-ctx.Done():
			return fmt.Errorf("synapse did not answer on %s: %w; last lines of its log:\n%s", s.URL, ctx.Err(), s.logTail(15))
		default:
		}
		resp, err := client.Get(s.URL + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				if pid := s.childPID(); pid > 0 {
					if owns, known := listensOn(pid, s.Port); known && !owns {
						return fmt.Errorf("synapse on %s: %w", s.URL, errPortTaken)
					}
				}
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("synapse did not answer on %s within 90s; last lines of its log:\n%s", s.URL, s.logTail(15))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// childPID is Synapse's process id on the host (unshare's only child), or 0.
func (s *Synapse) childPID() int {
	if s.proc == nil {
		return 0
	}
	pid := s.proc.Cmd.Process.Pid
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	n, _ := strconv.Atoi(f[0])
	return n
}

// logTail returns the last n lines of Synapse's log and its output.
func (s *Synapse) logTail(n int) string {
	var lines []string
	for _, name := range []string{"homeserver.log", "stdout.log"} {
		b, err := os.ReadFile(filepath.Join(s.Dir, name))
		if err != nil {
			continue
		}
		l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(l) > n {
			l = l[len(l)-n:]
		}
		lines = append(lines, l...)
	}
	if len(lines) == 0 {
		return "(no log)"
	}
	return strings.Join(lines, "\n")
}

// Log returns Synapse's log so far.
func (s *Synapse) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "homeserver.log"))
	return string(b)
}

// kill stops Synapse: SIGTERM to Synapse itself (unshare ignores it while
// it waits), then SIGKILL to unshare, whose --kill-child takes Synapse and
// its namespaces down with it.
func (s *Synapse) kill() {
	s.mu.Lock()
	proc := s.proc
	pid := s.childPID()
	s.proc = nil
	s.mu.Unlock()
	if proc == nil {
		return
	}
	if pid > 0 {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-proc.Done():
		case <-time.After(15 * time.Second):
		}
	}
	proc.Stop(syscall.SIGKILL, 5*time.Second)
}

// Stop ends Synapse, its PostgreSQL, and removes its folder.
func (s *Synapse) Stop() {
	s.kill()
	if s.pg != nil {
		s.pg.Stop()
	}
	// The instance folder holds no mount (those lived in Synapse's own
	// namespace), but never delete a tree something is mounted in.
	if s.Dir != "" && len(MountsUnder(s.Dir)) == 0 {
		_ = os.RemoveAll(s.Dir)
	}
}

// Pause stops the process but keeps its data, so Resume brings the same
// homeserver back.
func (s *Synapse) Pause() { s.kill() }

// Resume starts the homeserver again after Pause, on the same ports unless
// another process took one meanwhile (then on new ones: URL and MetricsURL
// change).
func (s *Synapse) Resume(ctx context.Context) error {
	err := s.start(ctx)
	if err == nil {
		return nil
	}
	s.kill()
	if !errors.Is(err, errPortTaken) {
		return err
	}
	return s.startOnFreePorts(ctx)
}

// PID is Synapse's process id on the host while it runs (0 otherwise).
func (s *Synapse) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.childPID()
}

// Metrics fetches Synapse's metrics page.
func (s *Synapse) Metrics(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.MetricsURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("synapse metrics: HTTP %d", resp.StatusCode)
	}
	return b, err
}

// OverrideRateLimit exempts a user from Synapse's limiters keyed by the
// requester, as operators do for bots (POST
// /_synapse/admin/v1/users/<user_id>/override_ratelimit with 0 messages per
// second: synapse/rest/admin/users.py RateLimitRestServlet).
func (s *Synapse) OverrideRateLimit(ctx context.Context, adminToken, userID string) error {
	_, err := s.do(ctx, http.MethodPost, "/_synapse/admin/v1/users/"+userID+"/override_ratelimit", adminToken,
		[]byte(`{"messages_per_second": 0, "burst_count": 0}`))
	return err
}

// MountsUnder lists the mount points below dir on the host.
func MountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return nil
	}
	prefix := strings.TrimRight(dir, "/") + "/"
	var out []string
	for _, line := range bytes.Split(b, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) > 1 && (strings.HasPrefix(f[1], prefix) || f[1] == strings.TrimRight(dir, "/")) {
			out = append(out, f[1])
		}
	}
	return out
}

// ProcessesIn lists the host processes whose root directory is dir (what
// runs chrooted into it).
func ProcessesIn(dir string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	want := strings.TrimRight(dir, "/")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if r, err := os.Readlink("/proc/" + e.Name() + "/root"); err == nil && r == want {
			out = append(out, pid)
		}
	}
	return out
}

// RotateAppServiceToken gives an application service a new as_token the
// way an operator does: edit the registration file and restart Synapse.
// The old token stops working.
func (s *Synapse) RotateAppServiceToken(ctx context.Context, id, newToken string) error {
	if err := setASToken(s.opts.AppServices, id, newToken); err != nil {
		return err
	}
	s.Pause()
	if err := s.writeConfig(); err != nil {
		return err
	}
	return s.Resume(ctx)
}

// Count sums the samples of a counter on Synapse's metrics page whose
// labels include every label="value" pair of match (for example
// Count(ctx, "synapse_http_server_responses_total", `code="429"`), or the
// logins Synapse served: Count(ctx,
// "synapse_http_server_response_time_seconds_count",
// `servlet="LoginRestServlet"`)).
func (s *Synapse) Count(ctx context.Context, name string, match ...string) (float64, error) {
	page, err := s.Metrics(ctx)
	if err != nil {
		return 0, err
	}
	total := 0.0
lines:
	for _, line := range strings.Split(string(page), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		for _, m := range match {
			if !strings.Contains(line, m) {
				continue lines
			}
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("synapse metrics line %q: %v", line, err)
		}
		total += v
	}
	return total, nil
}

// SetRateLimits restarts Synapse with other rc_* settings (nil: Synapse's
// defaults). Synapse keeps its limiters' buckets and its metrics in
// memory: both start afresh.
func (s *Synapse) SetRateLimits(ctx context.Context, limits map[string]any) error {
	s.opts.RateLimits = limits
	s.Pause()
	if err := s.writeConfig(); err != nil {
		return err
	}
	return s.Resume(ctx)
}
