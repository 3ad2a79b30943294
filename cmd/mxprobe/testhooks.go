//go:build mxprobe_testhooks

package main

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/mxprobe/mxprobe/probes/matrix"
)

// This file is built only with the tag mxprobe_testhooks (the crash tests
// build their binary with it, leak_test.go); production builds get
// testhooks_off.go, without the hook.

// CrashEnv names a test hook: "<point>" or "<point>:<n>" makes the process
// kill itself (SIGKILL) at the n-th time a round trip reaches that point
// (journal, create_room, invite, join, sync, send, receive, power_levels,
// peer_leave, bot_leave, peer_forget, bot_forget), so crash tests stop at an
// exact step instead of a random sleep.
const CrashEnv = "MXPROBE_TEST_CRASH_AT"

// crashHook returns the hook CrashEnv asks for (nil when it is empty); the
// process provides it to the round trips (matrix.CrashHook).
func crashHook(getenv func(string) string) matrix.CrashHook {
	spec := getenv(CrashEnv)
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
