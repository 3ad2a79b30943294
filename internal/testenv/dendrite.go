// Package testenv starts the real things mxprobe is tested against: a local
// Dendrite homeserver (SQLite, loopback only) with accounts made by shared
// secret registration. It is used by tests and the demo, never by the daemon.
package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"gopkg.in/yaml.v3"
)

// DendriteVersion is the pinned release the harness installs (see scripts/install-dendrite.sh).
const DendriteVersion = "v0.13.8"

// MetricsUser and MetricsPassword guard Dendrite's /metrics.
const (
	MetricsUser     = "metrics"
	MetricsPassword = "metrics-pass"
)

// DendriteOptions tune a harness homeserver.
type DendriteOptions struct {
	// Dir holds config, keys and databases; a temp dir if empty.
	Dir string
	// Port to listen on (127.0.0.1); a free one if 0.
	Port int
	// RateLimit turns Dendrite's rate limiting on with this threshold per cooloff.
	RateLimit  int
	CooloffMS  int
	ServerName string
	// Log receives Dendrite's output; discarded if nil.
	Log io.Writer
	// AppServices are registered with the homeserver (appservice.go).
	AppServices []AppService
}

// Dendrite is a running local homeserver.
type Dendrite struct {
	Homeserver
	Dir  string
	Port int

	bin  string
	opts DendriteOptions

	mu      sync.Mutex
	proc    *Proc
	tempDir bool
}

// ToolsDir returns the git-ignored folder where the project's scripts install
// Dendrite (MXPROBE_TOOLS overrides it).
func ToolsDir() (string, error) {
	if d := os.Getenv("MXPROBE_TOOLS"); d != "" {
		return d, nil
	}
	root, err := ModuleRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".tools", "bin"), nil
}

// ModuleRoot finds the directory holding go.mod, walking up from the working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// DendriteBinaries returns the paths of the dendrite tools, or an error that
// says how to install them.
func DendriteBinaries() (dendrite, genKeys, genConfig string, err error) {
	dir, err := ToolsDir()
	if err != nil {
		return "", "", "", err
	}
	dendrite = filepath.Join(dir, "dendrite")
	genKeys = filepath.Join(dir, "generate-keys")
	genConfig = filepath.Join(dir, "generate-config")
	for _, p := range []string{dendrite, genKeys, genConfig} {
		if _, statErr := os.Stat(p); statErr != nil {
			return "", "", "", fmt.Errorf("%s not found: run `make tools` (installs Dendrite %s with go install)", p, DendriteVersion)
		}
	}
	return dendrite, genKeys, genConfig, nil
}

// StartDendrite writes a config and starts Dendrite, returning once it answers.
func StartDendrite(ctx context.Context, opts DendriteOptions) (*Dendrite, error) {
	bin, genKeys, genConfig, err := DendriteBinaries()
	if err != nil {
		return nil, err
	}
	d := &Dendrite{bin: bin, opts: opts}
	if opts.Dir == "" {
		opts.Dir, err = os.MkdirTemp("", "mxprobe-dendrite-")
		if err != nil {
			return nil, err
		}
		d.tempDir = true
	}
	if opts.ServerName == "" {
		opts.ServerName = "localhost"
	}
	callerPort := opts.Port != 0
	if opts.Port == 0 {
		opts.Port, err = FreePort()
		if err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, err
	}
	d.opts = opts
	d.Dir, d.Port, d.ServerName = opts.Dir, opts.Port, opts.ServerName
	d.URL = fmt.Sprintf("http://127.0.0.1:%d", opts.Port)
	d.SharedSecret = randomHex(16)
	if err := d.writeConfig(ctx, genKeys, genConfig); err != nil {
		return nil, err
	}
	// A port found free may be taken by another process (a test binary of
	// another package starting its own homeserver) before Dendrite binds it;
	// then the readiness check would reach the other homeserver. start
	// notices and a new port is tried, unless the caller chose the port.
	for attempt := 1; ; attempt++ {
		err := d.start(ctx)
		if err == nil {
			return d, nil
		}
		if !errors.Is(err, errPortTaken) || callerPort || attempt == 3 {
			d.Stop()
			return nil, err
		}
		d.kill()
		if d.Port, err = FreePort(); err != nil {
			d.Stop()
			return nil, err
		}
		d.opts.Port = d.Port
		d.URL = fmt.Sprintf("http://127.0.0.1:%d", d.Port)
	}
}

// errPortTaken says the homeserver's port answered from another process.
const errPortTaken = constError("the port answers from another process")

// constError is an error that can be a constant (no package state).
type constError string

func (e constError) Error() string { return string(e) }

func (d *Dendrite) writeConfig(ctx context.Context, genKeys, genConfig string) error {
	keyPath := filepath.Join(d.Dir, "matrix_key.pem")
	if _, err := os.Stat(keyPath); err != nil {
		out, err := exec.CommandContext(ctx, genKeys, "--private-key", keyPath).CombinedOutput()
		if err != nil {
			return fmt.Errorf("generate-keys: %v: %s", err, out)
		}
	}
	out, err := exec.CommandContext(ctx, genConfig, "-dir", d.Dir, "-server", d.ServerName).Output()
	if err != nil {
		return fmt.Errorf("generate-config: %v", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(out, &doc); err != nil {
		return fmt.Errorf("parsing generated dendrite config: %v", err)
	}
	set := func(path []string, v any) {
		m := doc
		for _, k := range path[:len(path)-1] {
			next, ok := m[k].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[k] = next
			}
			m = next
		}
		m[path[len(path)-1]] = v
	}
	set([]string{"global", "private_key"}, keyPath)
	set([]string{"global", "disable_federation"}, true)
	set([]string{"global", "jetstream", "in_memory"}, true)
	set([]string{"global", "metrics", "enabled"}, true)
	set([]string{"global", "metrics", "basic_auth", "username"}, MetricsUser)
	set([]string{"global", "metrics", "basic_auth", "password"}, MetricsPassword)
	set([]string{"global", "dns_cache", "enabled"}, false)
	set([]string{"client_api", "registration_shared_secret"}, d.SharedSecret)
	set([]string{"client_api", "rate_limiting", "enabled"}, d.opts.RateLimit > 0)
	if d.opts.RateLimit > 0 {
		set([]string{"client_api", "rate_limiting", "threshold"}, d.opts.RateLimit)
		cool := d.opts.CooloffMS
		if cool == 0 {
			cool = 500
		}
		set([]string{"client_api", "rate_limiting", "cooloff_ms"}, cool)
	}
	set([]string{"federation_api", "key_perspectives"}, []any{})
	set([]string{"user_api", "bcrypt_cost"}, 4)
	set([]string{"logging"}, []any{map[string]any{"type": "std", "level": "warn"}})
	if len(d.opts.AppServices) > 0 {
		files, err := d.writeAppServices()
		if err != nil {
			return err
		}
		set([]string{"app_service_api", "config_files"}, files)
	}
	b, err := yaml.Marshal(doc)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(d.Dir, "dendrite.yaml"), b, 0o600)
}

func (d *Dendrite) start(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	cmd := exec.Command(d.bin, "--config", filepath.Join(d.Dir, "dendrite.yaml"),
		"--http-bind-address", fmt.Sprintf("127.0.0.1:%d", d.Port))
	cmd.Dir = d.Dir
	logw := d.opts.Log
	if logw == nil {
		f, err := os.OpenFile(filepath.Join(d.Dir, "dendrite.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		logw = f
	}
	cmd.Stdout, cmd.Stderr = logw, logw
	proc, err := startProc(cmd, serviceWait)
	if err != nil {
		return fmt.Errorf("starting dendrite: %w", err)
	}
	d.proc = proc // d.mu held

	deadline := time.Now().Add(60 * time.Second)
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		select {
		case <-proc.Done():
			return fmt.Errorf("dendrite exited during start-up (log in %s)", d.Dir)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		resp, err := client.Get(d.URL + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				if owns, known := listensOn(cmd.Process.Pid, d.Port); known && !owns {
					return fmt.Errorf("dendrite on %s: %w", d.URL, errPortTaken)
				}
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("dendrite did not answer on %s within 60s", d.URL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends the homeserver (and removes its temp dir if the harness made it).
func (d *Dendrite) Stop() {
	d.kill()
	if d.tempDir {
		_ = os.RemoveAll(d.Dir)
	}
}

func (d *Dendrite) kill() {
	d.mu.Lock()
	proc := d.proc
	d.proc = nil
	d.mu.Unlock()
	if proc != nil {
		proc.Stop(os.Interrupt, 5*time.Second)
	}
}

// Pause stops the process but keeps its data, so Resume brings the same
// homeserver back on the same port.
func (d *Dendrite) Pause() { d.kill() }

// Resume starts the homeserver again after Pause.
func (d *Dendrite) Resume(ctx context.Context) error { return d.start(ctx) }

// FreePort asks the kernel for a free loopback port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// listensOn reports whether process pid holds the listening IPv4 socket of
// port, read from /proc (known is false where /proc cannot tell).
func listensOn(pid, port int) (owns, known bool) {
	tab, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return false, false
	}
	want := fmt.Sprintf(":%04X", port)
	inode := ""
	for _, line := range strings.Split(string(tab), "\n")[1:] {
		f := strings.Fields(line)
		// sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
		if len(f) > 9 && strings.HasSuffix(f[1], want) && f[3] == "0A" {
			inode = f[9]
			break
		}
	}
	if inode == "" {
		return false, true // nobody listens yet (or only on IPv6)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return false, false
	}
	target := "socket:[" + inode + "]"
	for _, fd := range fds {
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && l == target {
			return true, true
		}
	}
	return false, true
}
