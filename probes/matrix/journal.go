package matrix

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mxprobe/mxprobe/probes/statelog"
)

// Journal records every probe room before it is created, and forgets it
// only after both accounts forgot the room. A process that crashed mid-run
// leaves its entries behind; the next sweep (of any process using the same
// directory) finishes their cleanup, rooms left but not forgotten included.
//
// Each Journal appends to a state log of its own in Dir (package statelog;
// named after the host, the process id and start time, and a nonce, so
// several Journals of one process never share one), one line per Add,
// Update or Remove: a probe room costs three small appends, not three
// file creations. Orphans reads the logs of all processes; finishing an
// orphan of another process appends its delete to that process's log, and
// a dead process's log with nothing left in it is removed. One-file-per-
// room entries of earlier versions (*.json) are still read and removed.
type Journal struct {
	Dir string
	// Logger reports damaged or untrusted journal files (nil: discarded).
	Logger *slog.Logger

	mu  sync.Mutex
	log *statelog.Log // this Journal's log (nil: not opened yet)
	// own are the live entries of this Journal's log, by key: Orphans
	// reads them here instead of reading its own log back (every tenant's
	// first sweep re-read the rooms appended since the previous one: a
	// fifth of all a 25,000-tenant daemon allocated).
	own  map[string]JournalEntry
	path string
	proc string // "<pid>:<start time>", read once
	host string
	seq  uint64

	// cacheMu guards logs: the logs in Dir as last read, by path, so
	// that every tenant's sweep reads only what was appended since.
	cacheMu sync.Mutex
	logs    map[string]*journalLog
}

// journalLog is one process's journal as read by Orphans.
type journalLog struct {
	fl   statelog.Follower
	host string // from the file name (safeName of the host name)
	proc string // "<pid>:<start time>" from the file name
	// byTenant indexes the live entries: a sweep is per tenant.
	byTenant map[string]map[string]*JournalEntry
	tenant   map[string]string // entry key → tenant
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

	// file is the log holding the entry (or, for an entry of an earlier
	// version, its own file); key is its key in the log ("" for the
	// latter).
	file, key string
}

// ref identifies an entry across Journals and reads.
func (e *JournalEntry) ref() string { return e.file + "#" + e.key }

// journalExt ends the name of a journal log; legacyExt that of a
// one-room entry of earlier versions.
const (
	journalExt = ".jlog"
	legacyExt  = ".json"
)

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

// open opens this Journal's log at the first Add (mu held).
func (j *Journal) open() (*statelog.Log, error) {
	if j.log != nil {
		return j.log, nil
	}
	if j.proc == "" {
		j.proc, j.host = selfProcess(), hostname()
	}
	pid, start, _ := strings.Cut(j.proc, ":")
	path := filepath.Join(j.Dir, safeName(j.host)+"-"+pid+"-"+start+"-"+newNonce()[:8]+journalExt)
	l, _, err := statelog.Open(path, j.Logger)
	if err != nil {
		return nil, err
	}
	j.log, j.path = l, path
	return l, nil
}

// Add records a new entry (before createRoom).
func (j *Journal) Add(e *JournalEntry) error {
	if j == nil {
		return nil
	}
	j.mu.Lock()
	l, err := j.open()
	if err != nil {
		j.mu.Unlock()
		return err
	}
	j.seq++
	e.key = strconv.FormatUint(j.seq, 36)
	e.file, e.Process, e.Host = j.path, j.proc, j.host
	if j.own == nil {
		j.own = map[string]JournalEntry{}
	}
	j.own[e.key] = *e
	j.mu.Unlock()
	return l.Put(e.key, e)
}

// Update records an entry again (the room id once known).
func (j *Journal) Update(e *JournalEntry) error {
	if j == nil || e.file == "" {
		return nil
	}
	if e.key == "" {
		return writeEntry(e.file, e)
	}
	j.mu.Lock()
	l := j.log
	own := e.file == j.path
	if own {
		j.own[e.key] = *e
	}
	j.mu.Unlock()
	if !own || l == nil {
		return fmt.Errorf("journal entry of another log: %s", filepath.Base(e.file))
	}
	return l.Put(e.key, e)
}

// Remove forgets an entry (both accounts forgot the room, or it was never
// created): one appended delete in the log that holds it (this Journal's,
// or that of another process, dead or older than the sweep's max age).
func (j *Journal) Remove(e *JournalEntry) error {
	if j == nil || e.file == "" {
		return nil
	}
	if e.key == "" {
		err := os.Remove(e.file)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return err
	}
	j.mu.Lock()
	l := j.log
	own := e.file == j.path
	if own {
		delete(j.own, e.key)
	}
	j.mu.Unlock()
	if own && l != nil {
		return l.Delete(e.key)
	}
	if err := statelog.AppendDelete(e.file, e.key); err != nil {
		return err
	}
	j.cacheMu.Lock()
	defer j.cacheMu.Unlock()
	if jl := j.logs[e.file]; jl != nil {
		jl.drop(e.key)
		j.removeIfDone(e.file, jl)
	}
	return nil
}

// Close syncs and closes this Journal's log, and removes it when nothing
// in it is left (a later Add opens a new one).
func (j *Journal) Close() error {
	if j == nil {
		return nil
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.log == nil {
		return nil
	}
	empty := j.log.Live() == 0
	err := j.log.Close()
	if empty && err == nil {
		_, err = statelog.RemoveIfEmpty(j.path)
	}
	j.log, j.path, j.own = nil, "", nil
	return err
}

// Orphans lists the entries of a tenant whose process is gone (or, for
// entries of another host or without a process, older than maxAge; and
// entries of live processes older than maxAge: a run never lasts that
// long). Each log is read once, then only what was appended to it since.
func (j *Journal) Orphans(tenant string, maxAge time.Duration) ([]*JournalEntry, error) {
	if j == nil {
		return nil, nil
	}
	ents, err := os.ReadDir(j.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	j.mu.Lock()
	if j.proc == "" {
		j.proc, j.host = selfProcess(), hostname()
	}
	host, ownPath := j.host, j.path
	var mine []JournalEntry
	for _, e := range j.own {
		if e.Tenant == tenant {
			mine = append(mine, e)
		}
	}
	j.mu.Unlock()
	alive := map[string]bool{} // processes checked in this call
	isAlive := func(proc string) bool {
		a, ok := alive[proc]
		if !ok {
			a = processAlive(proc)
			alive[proc] = a
		}
		return a
	}
	var out []*JournalEntry
	legacyPrefix := safeName(tenant) + "-"
	j.cacheMu.Lock()
	defer j.cacheMu.Unlock()
	if j.logs == nil {
		j.logs = map[string]*journalLog{}
	}
	seen := map[string]bool{}
	for _, de := range ents {
		name := de.Name()
		path := filepath.Join(j.Dir, name)
		switch {
		case strings.HasSuffix(name, legacyExt) && strings.HasPrefix(name, legacyPrefix):
			if e := readLegacy(path, tenant); e != nil && e.orphaned(maxAge, host, isAlive) {
				out = append(out, e)
			}
		case path == ownPath:
			// This process is alive: only an entry older than maxAge
			// (a run never lasts that long) is an orphan.
			for i := range mine {
				if mine[i].orphaned(maxAge, host, isAlive) {
					out = append(out, &mine[i])
				}
			}
		case strings.HasSuffix(name, journalExt) && !strings.HasPrefix(name, "."):
			seen[path] = true
			jl := j.logs[path]
			if jl == nil {
				jl = newJournalLog(path, j.Logger)
				j.logs[path] = jl
			}
			jl.refresh()
			for _, e := range jl.byTenant[tenant] {
				if e.orphaned(maxAge, host, isAlive) {
					cp := *e
					out = append(out, &cp)
				}
			}
			if len(jl.tenant) == 0 && jl.host == safeName(host) && !isAlive(jl.proc) {
				j.removeIfDone(path, jl)
			}
		}
	}
	for path := range j.logs {
		if !seen[path] {
			delete(j.logs, path)
		}
	}
	return out, nil
}

// removeIfDone removes a dead process's log in which every entry is
// done (cacheMu held). Only logs of this host are removed: whether a
// process of another host lives cannot be told, and its log would be
// lost under it.
func (j *Journal) removeIfDone(path string, jl *journalLog) {
	if len(jl.tenant) > 0 {
		return
	}
	j.mu.Lock()
	if j.proc == "" {
		j.proc, j.host = selfProcess(), hostname()
	}
	host, own := j.host, path == j.path
	j.mu.Unlock()
	if own || jl.host != safeName(host) || processAlive(jl.proc) {
		return
	}
	if gone, err := statelog.RemoveIfEmpty(path); gone && err == nil {
		delete(j.logs, path)
	}
}

func newJournalLog(path string, logger *slog.Logger) *journalLog {
	jl := &journalLog{fl: statelog.Follower{Path: path, Logger: logger}}
	// <host>-<pid>-<start>-<nonce>.jlog; the host's safeName has no '-'.
	if f := strings.Split(strings.TrimSuffix(filepath.Base(path), journalExt), "-"); len(f) == 4 {
		jl.host, jl.proc = f[0], f[1]+":"+f[2]
	}
	jl.reset()
	return jl
}

func (jl *journalLog) reset() {
	jl.byTenant = map[string]map[string]*JournalEntry{}
	jl.tenant = map[string]string{}
}

func (jl *journalLog) refresh() {
	jl.fl.Refresh(jl.reset, func(key string, v json.RawMessage) {
		if v == nil {
			jl.drop(key)
			return
		}
		e := &JournalEntry{}
		if json.Unmarshal(v, e) != nil {
			return
		}
		jl.drop(key)
		e.file, e.key = jl.fl.Path, key
		m := jl.byTenant[e.Tenant]
		if m == nil {
			m = map[string]*JournalEntry{}
			jl.byTenant[e.Tenant] = m
		}
		m[key] = e
		jl.tenant[key] = e.Tenant
	})
}

func (jl *journalLog) drop(key string) {
	t, ok := jl.tenant[key]
	if !ok {
		return
	}
	delete(jl.tenant, key)
	if m := jl.byTenant[t]; m != nil {
		delete(m, key)
		if len(m) == 0 {
			delete(jl.byTenant, t)
		}
	}
}

// readLegacy reads a one-room entry file of earlier versions.
func readLegacy(path, tenant string) *JournalEntry {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil // removed meanwhile
	}
	e := &JournalEntry{}
	if err := json.Unmarshal(b, e); err != nil || e.Tenant != tenant {
		return nil
	}
	e.file = path
	return e
}

func (e *JournalEntry) orphaned(maxAge time.Duration, host string, alive func(string) bool) bool {
	if time.Since(time.UnixMilli(e.CreatedMS)) > maxAge {
		return true
	}
	if e.Host != host || e.Process == "" {
		return false
	}
	return !alive(e.Process)
}

// writeEntry rewrites a one-room entry file of earlier versions.
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
