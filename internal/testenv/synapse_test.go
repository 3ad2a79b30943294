package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The harness runs the real Synapse, registers users with the shared
// secret, serves its metrics page, and leaves no process, mount, port or
// folder behind when stopped.
func TestSynapseHarness(t *testing.T) {
	for _, pg := range []bool{false, true} {
		name := "sqlite"
		if pg {
			name = "postgresql"
		}
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			s, err := StartSynapse(ctx, SynapseOptions{Postgres: pg})
			if err != nil {
				missingSynapse(t, err)
			}
			MarkIntegration(t, "real Synapse "+s.Version)
			stopped := false
			defer func() {
				if !stopped {
					s.Stop()
				}
			}()

			user, password := s.User(t, "harness")
			token, err := s.Login(ctx, user, password)
			if err != nil {
				t.Fatal(err)
			}
			b, err := s.Do(ctx, http.MethodGet, "/_matrix/client/v3/account/whoami", token, nil)
			if err != nil {
				t.Fatal(err)
			}
			var who struct {
				UserID string `json:"user_id"`
			}
			if err := json.Unmarshal(b, &who); err != nil || who.UserID != "@"+user+":"+s.ServerName {
				t.Fatalf("whoami: %s (%v)", b, err)
			}
			page, err := s.Metrics(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(page, []byte("synapse_build_info{")) ||
				!bytes.Contains(page, []byte(`servlet="LoginRestServlet"`)) {
				t.Fatalf("metrics page lacks build info or the login servlet (%d bytes)", len(page))
			}
			if pg {
				// Synapse really uses PostgreSQL: its tables are there.
				n, err := s.pg.SQL(ctx, "synapse", "SELECT count(*) FROM users WHERE name = '@"+user+":"+s.ServerName+"'")
				if err != nil || n != "1" {
					t.Fatalf("user row in PostgreSQL: %q %v", n, err)
				}
			}

			pid, pgDir := s.PID(), ""
			if pid == 0 {
				t.Fatal("no Synapse process while it runs")
			}
			if s.pg != nil {
				pgDir = s.pg.Dir
			}
			dir := s.Dir
			s.Stop()
			stopped = true
			if err := syscall.Kill(pid, 0); err == nil {
				t.Errorf("Synapse (pid %d) still runs after Stop", pid)
			}
			for _, p := range ProcessesIn(s.root) {
				if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p)); bytes.Contains(b, []byte(s.inner)) {
					t.Errorf("process %d of this instance is left: %q", p, b)
				}
			}
			if m := MountsUnder(s.root); len(m) > 0 {
				t.Errorf("mounts left under the root: %v", m)
			}
			for _, port := range []int{s.Port, s.MetricsPort} {
				l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
				if err != nil {
					t.Errorf("port %d still taken: %v", port, err)
				} else {
					l.Close()
				}
			}
			for _, d := range []string{dir, pgDir} {
				if d == "" {
					continue
				}
				if _, err := os.Stat(d); !os.IsNotExist(err) {
					t.Errorf("folder %s left behind (%v)", d, err)
				}
			}
		})
	}
}

// A Synapse that cannot start says why, with the last lines of its log.
func TestSynapseStartFailureSaysWhy(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := StartSynapse(ctx, SynapseOptions{Config: map[string]any{"database": map[string]any{"name": "no-such-engine"}}})
	if err == nil {
		t.Fatal("Synapse started with an unknown database engine")
	}
	if why := SynapseAvailable(); why != "" {
		missingSynapse(t, err)
	}
	MarkIntegration(t, "real Synapse (start-up failure)")
	if !strings.Contains(err.Error(), "last lines of its log") || !strings.Contains(err.Error(), "no-such-engine") {
		t.Fatalf("start-up failure without Synapse's reason: %v", err)
	}
}
