package matrix

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Journal records every probe room before it is created, in a directory
// (one small JSON file per room), and forgets it only after both accounts
// forgot the room. A process that crashed mid-run leaves its entries behind;
// the next sweep (of any process using the same directory) finishes their
// cleanup, rooms left but not forgotten included.
type Journal struct {
	Dir string
}

// JournalEntry is one probe room.
type JournalEntry struct {
	Tenant     string `json:"tenant"`
	Probe      string `json:"probe"`
	Homeserver string `json:"homeserver"`
	// CreatedMS is the room's marker timestamp (also in its name), known
	// before the room exists.
	CreatedMS int64 `json:"created_ms"`
	// RoomID is set once createRoom answered.
	RoomID string `json:"room_id,omitempty"`
	// Process identifies the writing process on its host: "<pid>:<start
	// time>" from /proc, so a restarted process (even with the same pid)
	// knows the entry is an orphan.
	Process string `json:"process"`
	Host    string `json:"host"`

	file string
}

// DefaultJournalDir is where a process without a data_dir keeps its
// journal: $XDG_STATE_HOME/mxprobe/rooms or ~/.local/state/mxprobe/rooms.
func DefaultJournalDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "mxprobe", "rooms")
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return filepath.Join(os.TempDir(), "mxprobe-"+strconv.Itoa(os.Getuid()), "rooms")
	}
	return filepath.Join(home, ".local", "state", "mxprobe", "rooms")
}

// Add writes a new entry (before createRoom).
func (j *Journal) Add(e *JournalEntry) error {
	if j == nil {
		return nil
	}
	if err := os.MkdirAll(j.Dir, 0o700); err != nil {
		return err
	}
	e.Process, e.Host = selfProcess(), hostname()
	e.file = filepath.Join(j.Dir, fmt.Sprintf("%s-%d-%s.json", safeName(e.Tenant), e.CreatedMS, newNonce()[:8]))
	return writeEntry(e.file, e)
}

// Update rewrites an entry (the room id once known).
func (j *Journal) Update(e *JournalEntry) error {
	if j == nil || e.file == "" {
		return nil
	}
	return writeEntry(e.file, e)
}

// Remove deletes an entry (both accounts forgot the room, or it was never
// created).
func (j *Journal) Remove(e *JournalEntry) error {
	if j == nil || e.file == "" {
		return nil
	}
	err := os.Remove(e.file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// Orphans lists the entries of a tenant whose process is gone (or, for
// entries of another host or without a process, older than maxAge).
func (j *Journal) Orphans(tenant string, maxAge time.Duration) ([]*JournalEntry, error) {
	if j == nil {
		return nil, nil
	}
	files, err := filepath.Glob(filepath.Join(j.Dir, safeName(tenant)+"-*.json"))
	if err != nil {
		return nil, err
	}
	var out []*JournalEntry
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // removed meanwhile
		}
		e := &JournalEntry{}
		if err := json.Unmarshal(b, e); err != nil || e.Tenant != tenant {
			continue
		}
		e.file = f
		if e.orphaned(maxAge) {
			out = append(out, e)
		}
	}
	return out, nil
}

func (e *JournalEntry) orphaned(maxAge time.Duration) bool {
	if time.Since(time.UnixMilli(e.CreatedMS)) > maxAge {
		return true
	}
	if e.Host != hostname() || e.Process == "" {
		return false
	}
	return !processAlive(e.Process)
}

func writeEntry(path string, e *JournalEntry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func safeName(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, s)
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// selfProcess is "<pid>:<start time>" of this process.
func selfProcess() string {
	pid := os.Getpid()
	return strconv.Itoa(pid) + ":" + procStart(pid)
}

// procStart is field 22 of /proc/<pid>/stat (the start time since boot),
// or "" where /proc is not available.
func procStart(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ""
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s)
	// After the command: field 3 is f[0], so field 22 is f[19].
	if len(f) < 20 {
		return ""
	}
	return f[19]
}

func processAlive(proc string) bool {
	pidStr, start, _ := strings.Cut(proc, ":")
	pid, err := strconv.Atoi(pidStr)
	if err != nil || pid <= 0 {
		return false
	}
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		return true // cannot tell: wait for max age
	}
	cur := procStart(pid)
	return cur != "" && cur == start
}
