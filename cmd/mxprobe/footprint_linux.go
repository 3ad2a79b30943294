package main

import (
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// An idle exporter's resident memory is mostly its binary: the kernel reads
// the file ahead in large windows as code and tables are first touched, so
// nearly every page of mxprobe's 19 MB binary was resident a minute after
// start although an idle daemon runs a small part of it (start-up, the
// configuration and the probe types a configuration does not use stay
// cold). Once start-up is over, serve advises the kernel to page the
// binary's read-only mappings out (MADV_PAGEOUT, Linux 5.4+) and to fault
// them back page by page without read-ahead (MADV_RANDOM): what the running
// daemon uses comes back on first touch, the rest leaves RSS (measured in
// docs/bench.md, "Idle footprint"). Errors are ignored: an older kernel
// simply keeps the pages.

// pageOutAfter is how long after start-up serve pages its binary out.
const pageOutAfter = 20 * time.Second

const (
	madvRandom  = 1  // MADV_RANDOM: no read-ahead on faults in the range
	madvPageout = 21 // MADV_PAGEOUT: reclaim the range's pages now
)

// pageOutBinary applies the advice to the read-only mappings of the
// running executable and returns how many bytes of mappings it covered.
func pageOutBinary(logger *slog.Logger) int64 {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0
	}
	var total int64
	for _, line := range strings.Split(string(maps), "\n") {
		// address perms offset dev inode path
		f := strings.Fields(line)
		if len(f) < 6 || f[5] != exe || strings.Contains(f[1], "w") {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		n := uintptr(end - start)
		_, _, e1 := syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), n, madvRandom)
		_, _, e2 := syscall.Syscall(syscall.SYS_MADVISE, uintptr(start), n, madvPageout)
		if e1 != 0 || e2 != 0 {
			logger.Debug("binary pages not paged out", "random", e1, "pageout", e2)
			continue
		}
		total += int64(n)
	}
	return total
}
