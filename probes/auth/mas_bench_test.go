package auth_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv/masemu"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// The benchmark runs the emulator in a child process (this test binary,
// re-executed), so the benchmark's own allocations and CPU time are the
// client's alone, and the child reports the emulator's share.
const emuChildEnv = "MXPROBE_MASEMU_CHILD"

type childStats struct {
	Mallocs uint64 `json:"mallocs"`
	Bytes   uint64 `json:"bytes"`
	CPUNs   int64  `json:"cpu_ns"`
}

type childURLs struct {
	MAS, Upstream, Homeserver, ServerName string
}

func processCPU() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// runEmulatorChild serves an emulator until stdin closes; "stats" lines are
// answered with its allocation and CPU counters.
func runEmulatorChild() int {
	// b.N logins in a row, as fast as they go (a benchtime of 1 s reaches
	// far more than the platform's non-production 1000 per minute, counted
	// twice): the benchmark measures CPU per login, not the provider's
	// limit, so the limit is out of reach.
	emu, err := masemu.Start(masemu.Options{ProviderTokenLimit: 1 << 30})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer emu.Close()
	emu.AddUpstreamUser("bench", "bot-bench@openmeet.net", "bench-pw", "openmeet-bot-bench")
	enc := json.NewEncoder(os.Stdout)
	_ = enc.Encode(childURLs{emu.MASURL, emu.UpstreamURL, emu.HomeserverURL, emu.ServerName})
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		_ = enc.Encode(childStats{Mallocs: ms.Mallocs, Bytes: ms.TotalAlloc, CPUNs: processCPU()})
	}
	return 0
}

type emuChild struct {
	cmd   *exec.Cmd
	in    io.WriteCloser
	dec   *json.Decoder
	urls  childURLs
	close func()
}

func startEmuChild(b *testing.B) *emuChild {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), emuChildEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &emuChild{cmd: cmd, in: in, dec: json.NewDecoder(out)}
	c.close = func() { in.Close(); _ = cmd.Wait() }
	if err := c.dec.Decode(&c.urls); err != nil {
		c.close()
		b.Fatalf("emulator child: %v", err)
	}
	return c
}

func (c *emuChild) stats(b *testing.B) childStats {
	b.Helper()
	var s childStats
	if _, err := io.WriteString(c.in, "stats\n"); err != nil {
		b.Fatal(err)
	}
	if err := c.dec.Decode(&s); err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkMASLogin is one full mas_oidc login (cold discovery and
// registration caches, platform login, every MAS hop with the login page of
// MAS's default configuration, consent, token exchange, whoami, and the
// revocation of the session it replaces) against the emulator in a child
// process. allocs/op,
// B/op and client-cpu-ms/op are the client's; emulator-* are the emulator's
// share of the same logins.
func BenchmarkMASLogin(b *testing.B) {
	child := startEmuChild(b)
	defer child.close()
	cfg := config.MAS{
		PublicURL: child.urls.MAS, RedirectURI: "http://localhost:9005/auth/matrix/callback", Scopes: "openid email",
		ClientURI: config.DefaultMASClientURI, ClientName: "mxprobe-bench",
		Upstream: config.Upstream{Adapter: config.UpstreamOpenMeet, APIURL: child.urls.Upstream},
	}
	httpc := mxclient.NewHTTPClient()
	defer httpc.CloseIdleConnections()
	mgr := auth.NewManager(httpc)
	acct := auth.Account{Key: "bench/login", Tenant: "bench", Role: "login", HomeserverURL: child.urls.Homeserver,
		ServerName: child.urls.ServerName, Password: "bench-pw",
		Config: config.Account{Method: config.MethodMASOIDC, User: masemu.UpstreamLocalpart("openmeet-bot-bench", "bench"), Email: "bot-bench@openmeet.net"}}
	login := func() {
		mgr.Register(config.MethodMASOIDC, auth.NewMASMethod(cfg)) // cold caches: a full login
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rec := probes.NewRecorder("login", "login", "bench")
		if _, err := mgr.Login(ctx, acct, rec); err != nil {
			r := rec.Finish()
			b.Fatalf("login failed at %s: %s", r.FailedStep, r.Error)
		}
	}
	login() // the first login creates the account; the benchmark measures returning logins
	b.ReportAllocs()
	before, cpu0 := child.stats(b), processCPU()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		login()
	}
	b.StopTimer()
	after, cpu1 := child.stats(b), processCPU()
	n := float64(b.N)
	b.ReportMetric(float64(cpu1-cpu0)/n/1e6, "client-cpu-ms/op")
	b.ReportMetric(float64(after.CPUNs-before.CPUNs)/n/1e6, "emulator-cpu-ms/op")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/n, "emulator-allocs/op")
	b.ReportMetric(float64(after.Bytes-before.Bytes)/n, "emulator-B/op")
}
