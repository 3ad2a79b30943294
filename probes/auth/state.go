package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/mxprobe/mxprobe/probes/statelog"
)

// Login state that survives a restart: a session costs a full login (a
// share of Synapse's rc_login.address, or a code exchange at MAS's upstream
// provider), so a restarted daemon that forgot its sessions spends the
// homeserver's login bucket again at once and meets 429s for half an hour.
// The Manager and the budgets keep their state through the interfaces
// below; cmd gives them a FileStore on data_dir.

// SessionStore keeps a process's sessions across restarts.
type SessionStore interface {
	// LoadSessions returns the stored sessions by account key (none when
	// there is nothing usable).
	LoadSessions() map[string]*Session
	// SaveSession stores (or replaces) the session of one account.
	SaveSession(key string, s *Session) error
	// DeleteSession drops the stored session of one account.
	DeleteSession(key string) error
}

// BudgetStore keeps the spend of login budgets across restarts.
type BudgetStore interface {
	// LoadSpend returns the login times a budget spent, by budget key.
	LoadSpend(key string) []time.Time
	// SaveSpend replaces the login times of one budget.
	SaveSpend(key string, taken []time.Time) error
}

// FileStore keeps sessions and budget spend in a directory (data_dir), with
// mode 0600. Sessions are a state log (package statelog: one appended line
// per login or forgotten session, compacted now and then), so a login
// costs one small write whatever the number of tenants; the budget spend,
// written at most a few times a minute, is one file written atomically
// (temporary file, then rename). A file that is missing, unreadable,
// truncated, corrupted, not owned by this process's user, or readable by
// group or others is ignored with one log line naming the file and the
// reason, never its contents: the process then starts as if it had none.
type FileStore struct {
	Dir string
	// Logger reports ignored files (nil: discarded).
	Logger *slog.Logger

	mu sync.Mutex
	// budgets is the budget file as last read or written (nil: not read).
	budgets map[string][]int64
	// sessions is the open session log (nil: not opened yet).
	sessions *statelog.Log
}

// File names inside the directory.
const (
	SessionsFile = "sessions.log"
	// LegacySessionsFile is the sessions file of earlier versions (all
	// sessions rewritten at every login): read once at start and taken
	// over into SessionsFile, then removed.
	LegacySessionsFile = "sessions.json"
	BudgetsFile        = "login-budgets.json"
	// stateVersion is the format of the JSON files.
	stateVersion = 1
)

type sessionsFile struct {
	Version  int                      `json:"version"`
	Sessions map[string]storedSession `json:"sessions"`
}

// storedSession is a Session as written: every field a restarted process
// needs to use the session, prove it, renew it and know where it is from.
type storedSession struct {
	UserID        string            `json:"user_id"`
	DeviceID      string            `json:"device_id,omitempty"`
	AccessToken   string            `json:"access_token"`
	RefreshToken  string            `json:"refresh_token,omitempty"`
	Expiry        time.Time         `json:"expiry,omitzero"`
	Method        string            `json:"method"`
	HomeserverURL string            `json:"homeserver_url"`
	Extra         map[string]string `json:"extra,omitempty"`
	LoggedIn      time.Time         `json:"logged_in,omitzero"`
}

type budgetsFile struct {
	Version int `json:"version"`
	// Spend is every budget's login times, in Unix milliseconds.
	Spend map[string][]int64 `json:"spend"`
}

func (f *FileStore) logf(level slog.Level, file, msg string, args ...any) {
	if f.Logger == nil {
		return
	}
	f.Logger.Log(context.Background(), level, msg, append([]any{"file", filepath.Join(f.Dir, file)}, args...)...)
}

// read returns a state file's bytes when it can be trusted: a regular file
// owned by this user, not readable by group or others. Otherwise it logs
// once why the file is ignored and returns nil (a missing file silently
// when quiet).
func (f *FileStore) read(name string, quiet bool) []byte {
	p := filepath.Join(f.Dir, name)
	fd, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		if !quiet {
			f.logf(slog.LevelInfo, name, "no stored login state; starting without it")
		}
		return nil
	}
	if err != nil {
		f.logf(slog.LevelWarn, name, "stored login state ignored: cannot open it", "reason", errReason(err))
		return nil
	}
	defer fd.Close()
	fi, err := fd.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.logf(slog.LevelWarn, name, "stored login state ignored: not a regular file")
		return nil
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		f.logf(slog.LevelWarn, name, "stored login state ignored: owned by another user", "owner_uid", st.Uid)
		return nil
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		f.logf(slog.LevelWarn, name, "stored login state ignored: readable or writable by group or others (it holds tokens; mode must be 0600)",
			"mode", fmt.Sprintf("%04o", perm))
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(fd, 16<<20))
	if err != nil {
		f.logf(slog.LevelWarn, name, "stored login state ignored: cannot read it", "reason", errReason(err))
		return nil
	}
	return b
}

// errReason is an error's text without the path (the path is logged apart).
func errReason(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// write replaces a state file atomically with mode 0600. A failure is
// logged (the file, and the system's error, never the contents): it costs
// full logins after the next restart, not now.
func (f *FileStore) write(name string, v any) error {
	err := f.writeFile(name, v)
	if err != nil {
		f.logf(slog.LevelWarn, name, "state not saved; the next start may log in again", "err", err)
	}
	return err
}

func (f *FileStore) writeFile(name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(f.Dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(f.Dir, "."+name+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // gone after the rename; removes a failed one
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(f.Dir, name))
}

func toStored(s *Session) storedSession {
	return storedSession{UserID: s.UserID, DeviceID: s.DeviceID, AccessToken: s.AccessToken, RefreshToken: s.RefreshToken,
		Expiry: s.Expiry, Method: s.Method, HomeserverURL: s.HomeserverURL, Extra: s.Extra, LoggedIn: s.LoggedIn}
}

func fromStored(s storedSession) *Session {
	if s.AccessToken == "" || s.Method == "" || s.HomeserverURL == "" {
		return nil
	}
	return &Session{UserID: s.UserID, DeviceID: s.DeviceID, AccessToken: s.AccessToken, RefreshToken: s.RefreshToken,
		Expiry: s.Expiry, Method: s.Method, HomeserverURL: s.HomeserverURL, Extra: s.Extra, LoggedIn: s.LoggedIn}
}

// sessionLog opens the session log once (mu held), taking over the
// sessions of a LegacySessionsFile: an upgraded daemon must not lose its
// sessions (each costs a login). The legacy file is removed once its
// sessions are in the log; a session the log already has is the newer.
func (f *FileStore) sessionLog() (*statelog.Log, error) {
	if f.sessions != nil {
		return f.sessions, nil
	}
	p := filepath.Join(f.Dir, SessionsFile)
	_, err := os.Lstat(p)
	fresh := errors.Is(err, os.ErrNotExist)
	_, err = os.Lstat(filepath.Join(f.Dir, LegacySessionsFile))
	legacy := err == nil
	if fresh && !legacy {
		f.logf(slog.LevelInfo, SessionsFile, "no stored login state; starting without it")
	}
	l, recs, err := statelog.Open(p, f.Logger)
	if err != nil {
		return nil, err
	}
	if legacy {
		old := f.loadLegacy()
		n := 0
		for k, s := range old {
			if _, ok := recs[k]; ok {
				continue
			}
			b, err := json.Marshal(toStored(s))
			if err != nil {
				continue
			}
			recs[k] = b
			n++
		}
		if n > 0 {
			if err := l.Replace(recs); err != nil {
				l.Close()
				return nil, err
			}
			f.logf(slog.LevelInfo, SessionsFile, "sessions of the former sessions file taken over", "sessions", n)
		}
		// Taken over or unusable (logged): either way it holds tokens
		// that the log now keeps, or that must not be used.
		_ = os.Remove(filepath.Join(f.Dir, LegacySessionsFile))
	}
	f.sessions = l
	return l, nil
}

// loadLegacy reads a LegacySessionsFile.
func (f *FileStore) loadLegacy() map[string]*Session {
	b := f.read(LegacySessionsFile, true)
	if b == nil {
		return nil
	}
	var sf sessionsFile
	if err := json.Unmarshal(b, &sf); err != nil || sf.Version != stateVersion {
		// The parser's message may quote the file: only its kind is logged.
		f.logf(slog.LevelWarn, LegacySessionsFile, "stored login state ignored: not a sessions file of this version (truncated or corrupted?)")
		return nil
	}
	out := make(map[string]*Session, len(sf.Sessions))
	for k, s := range sf.Sessions {
		if sess := fromStored(s); sess != nil {
			out[k] = sess
		}
	}
	return out
}

// LoadSessions implements SessionStore.
func (f *FileStore) LoadSessions() map[string]*Session {
	f.mu.Lock()
	l, err := f.sessionLog()
	f.mu.Unlock()
	if err != nil {
		f.logf(slog.LevelWarn, SessionsFile, "stored login state ignored: cannot open it", "reason", errReason(err))
		return nil
	}
	recs, _ := statelog.Read(l.Path(), f.Logger)
	out := make(map[string]*Session, len(recs))
	for k, b := range recs {
		var s storedSession
		if json.Unmarshal(b, &s) != nil {
			continue
		}
		if sess := fromStored(s); sess != nil {
			out[k] = sess
		}
	}
	return out
}

// SaveSession implements SessionStore: one append.
func (f *FileStore) SaveSession(key string, s *Session) error {
	return f.saveErr(f.withLog(func(l *statelog.Log) error { return l.Put(key, toStored(s)) }))
}

// DeleteSession implements SessionStore: one append.
func (f *FileStore) DeleteSession(key string) error {
	return f.saveErr(f.withLog(func(l *statelog.Log) error { return l.Delete(key) }))
}

// SaveSessions replaces all stored sessions at once (a new store's
// contents; the Manager saves one session at a time).
func (f *FileStore) SaveSessions(sessions map[string]*Session) error {
	recs := make(map[string]json.RawMessage, len(sessions))
	for k, s := range sessions {
		b, err := json.Marshal(toStored(s))
		if err != nil {
			return err
		}
		recs[k] = b
	}
	return f.saveErr(f.withLog(func(l *statelog.Log) error { return l.Replace(recs) }))
}

func (f *FileStore) withLog(do func(*statelog.Log) error) error {
	f.mu.Lock()
	l, err := f.sessionLog()
	f.mu.Unlock()
	if err != nil {
		return err
	}
	return do(l)
}

func (f *FileStore) saveErr(err error) error {
	if err != nil {
		f.logf(slog.LevelWarn, SessionsFile, "state not saved; the next start may log in again", "err", err)
	}
	return err
}

// Close syncs and closes the session log (a later use opens it again).
func (f *FileStore) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sessions == nil {
		return nil
	}
	err := f.sessions.Close()
	f.sessions = nil
	return err
}

// loadBudgets reads the budget file once (mu held).
func (f *FileStore) loadBudgets() {
	if f.budgets != nil {
		return
	}
	f.budgets = map[string][]int64{}
	b := f.read(BudgetsFile, false)
	if b == nil {
		return
	}
	var bf budgetsFile
	if err := json.Unmarshal(b, &bf); err != nil || bf.Version != stateVersion {
		f.logf(slog.LevelWarn, BudgetsFile, "stored login budgets ignored: not a budgets file of this version (truncated or corrupted?)")
		return
	}
	for k, v := range bf.Spend {
		f.budgets[k] = v
	}
}

// LoadSpend implements BudgetStore.
func (f *FileStore) LoadSpend(key string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loadBudgets()
	var out []time.Time
	for _, ms := range f.budgets[key] {
		out = append(out, time.UnixMilli(ms))
	}
	return out
}

// SaveSpend implements BudgetStore.
func (f *FileStore) SaveSpend(key string, taken []time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.loadBudgets()
	ms := make([]int64, len(taken))
	for i, t := range taken {
		ms[i] = t.UnixMilli()
	}
	f.budgets[key] = ms
	return f.write(BudgetsFile, budgetsFile{Version: stateVersion, Spend: f.budgets})
}
