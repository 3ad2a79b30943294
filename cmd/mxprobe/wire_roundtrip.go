package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/matrix"
)

// The room round trip (room_message is matrix.RoomMessageType). The stale-room
// sweep runs inside the round-trip prober (first run of each tenant after
// start or reload, then every roundtrip.sweep_interval). Probe rooms are
// journalled in data_dir/rooms (without a data_dir: the per-user default),
// so a restart finishes the cleanup of a crashed run.
func buildRoundtrip(b *builder, p *config.Probe) (probes.Prober, error) {
	return &matrix.RoundtripProbe{Name: p.Name, Manager: b.st.auth, Tenants: b.cfg.TenantMap(p), Settings: p.Roundtrip,
		Journal: &matrix.Journal{Dir: journalDir(b.cfg)}, Crash: b.st.crash}, nil
}

func journalDir(cfg *config.Config) string {
	if cfg.Global.DataDir != "" {
		return filepath.Join(cfg.Global.DataDir, "rooms")
	}
	return matrix.DefaultJournalDir()
}

// CrashEnv names a test hook: "<point>" or "<point>:<n>" makes the process
// kill itself (SIGKILL) at the n-th time a round trip reaches that point
// (journal, create_room, invite, join, sync, send, receive, power_levels,
// peer_leave, bot_leave, peer_forget, bot_forget), so crash tests stop at an
// exact step instead of a random sleep.
const CrashEnv = "MXPROBE_TEST_CRASH_AT"

// crashHook returns the hook for a CrashEnv value (nil when empty); the
// process keeps one in its stores.
func crashHook(spec string) func(string) {
	if spec == "" {
		return nil
	}
	point, nStr, _ := strings.Cut(spec, ":")
	n, err := strconv.Atoi(nStr)
	if err != nil || n < 1 {
		n = 1
	}
	var mu sync.Mutex
	seen := 0
	return func(at string) {
		if at != point {
			return
		}
		mu.Lock()
		seen++
		hit := seen == n
		mu.Unlock()
		if hit {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // wait for the signal
		}
	}
}
