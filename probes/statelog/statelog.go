// Package statelog is an append-only log of keyed JSON records with
// compaction: state that changes per probe run (a session per login, a
// journal entry per probe room) costs one small append instead of a file
// rewrite or creation.
//
// The file holds one record per line: {"k":key,"v":value} sets a key,
// {"k":key,"d":true} deletes it; replaying the lines gives the live
// records. Each record is written with a single write() on a descriptor
// opened with O_APPEND, so a process killed mid-write loses at most that
// record (a torn last line, ignored on replay), and appends of several
// processes to one file never interleave. When the file holds many more
// records than live ones, it is rewritten with the live ones alone
// (temporary file 0600, fsync, rename): the amortised cost of an append
// stays O(1).
//
// Files are created 0600 and opened with O_NOFOLLOW; a file not owned by
// this process's user, or readable or writable by group or others, is
// ignored with one log line naming the file and the reason, never its
// contents (the records may hold tokens).
package statelog

import (
	"bufio"
	"bytes"
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
)

// maxLine bounds one record: a longer line is treated as damaged.
const maxLine = 1 << 20

// compactSlack is the number of dead records always tolerated before a
// compaction: a log with few live records (a journal between runs) is
// rewritten once per this many appends, so the fsyncs of compaction
// (milliseconds each) cost a few microseconds per append.
const compactSlack = 16 << 10

// Log is a state log this process writes. Its methods are safe for
// concurrent use.
type Log struct {
	path   string
	logger *slog.Logger

	mu sync.Mutex
	f  *os.File // O_APPEND; nil once closed
	// live holds the keys of the live records; records counts the lines
	// in the file (live and dead), which decides compaction.
	live    map[string]struct{}
	records int
	buf     []byte
	// torn is set after a write failed: it may have left part of a line,
	// so the next record starts on a line of its own.
	torn bool
	// retryAt is the record count at which a compaction that failed (a
	// full disk) is tried again; appends go on meanwhile.
	retryAt int
}

// Error is an error of this package, constant so it can be compared.
type Error string

func (e Error) Error() string { return string(e) }

// ErrClosed is returned by writes to a closed log.
const ErrClosed = Error("statelog: log closed")

// Open opens the log at path (creating it and its directory, 0700, when
// missing) and returns it with its live records. A file that cannot be
// trusted (see the package comment) is ignored and replaced by an empty
// log; a torn or damaged line is dropped (one log line says how many).
// logger may be nil.
func Open(path string, logger *slog.Logger) (*Log, map[string]json.RawMessage, error) {
	l := &Log{path: path, logger: logger}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, nil, err
	}
	recs, st := readFrom(path, logger)
	l.live = make(map[string]struct{}, len(recs))
	for k := range recs {
		l.live[k] = struct{}{}
	}
	l.records = st.records
	if st.exists && st.trusted && st.bad == 0 && !st.tail {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|syscall.O_NOFOLLOW, 0)
		if err == nil {
			if ok, _ := trusted(f); ok {
				l.f = f
			} else {
				f.Close()
			}
		}
	}
	if l.f == nil || l.needsCompaction() {
		// Missing, untrusted or damaged: start the file anew with the
		// live records (a damaged line in the middle would otherwise be
		// kept forever, and a torn tail would swallow the next record).
		if err := l.rewrite(recs); err != nil {
			if l.f != nil {
				l.f.Close()
			}
			return nil, nil, err
		}
	}
	return l, recs, nil
}

// Path is the log's file.
func (l *Log) Path() string { return l.path }

// Put sets key to v (JSON-marshalled) with one append.
func (l *Log) Put(key string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return l.PutRaw(key, b)
}

// PutRaw sets key to the JSON value b with one append.
func (l *Log) PutRaw(key string, b json.RawMessage) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return ErrClosed
	}
	l.buf = appendRecord(l.buf[:0], key, b, false)
	if err := l.append(l.buf); err != nil {
		return err
	}
	l.live[key] = struct{}{}
	return l.maybeCompact()
}

// Delete removes key with one append (none when the key is not live).
func (l *Log) Delete(key string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return ErrClosed
	}
	if _, ok := l.live[key]; !ok {
		return nil
	}
	l.buf = appendRecord(l.buf[:0], key, nil, true)
	if err := l.append(l.buf); err != nil {
		return err
	}
	delete(l.live, key)
	return l.maybeCompact()
}

// Live is the number of live records as this process knows them (deletes
// appended by other processes are counted at the next compaction).
func (l *Log) Live() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.live)
}

// Sync flushes the file to disk.
//
// Appends are not synced one by one: a process that crashes keeps what it
// wrote (it is in the page cache), and only a crash of the machine loses
// the latest appends, which costs a login or a swept room's marker search,
// not correctness. An fsync per append would cost milliseconds per probe
// run; the log is synced at compaction and at Close instead.
func (l *Log) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return ErrClosed
	}
	return l.f.Sync()
}

// Close syncs and closes the log.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Sync()
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	return err
}

// Replace rewrites the log atomically with exactly recs.
func (l *Log) Replace(recs map[string]json.RawMessage) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return ErrClosed
	}
	return l.rewrite(recs)
}

// Compact rewrites the log with its live records now.
func (l *Log) Compact() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return ErrClosed
	}
	return l.compact()
}

func (l *Log) append(b []byte) error {
	// One write: O_APPEND makes it atomic towards other appenders, and a
	// crash tears at most this record. A write that failed may have left
	// part of a line (a full disk): the next record starts with a line
	// feed of its own, so that only the torn one is lost on replay, not
	// the next one glued to it.
	if l.torn {
		b = append([]byte{'\n'}, b...)
	}
	if _, err := l.f.Write(b); err != nil {
		l.torn = true
		return err
	}
	l.torn = false
	l.records++
	return nil
}

func (l *Log) needsCompaction() bool {
	return l.records > 2*len(l.live)+compactSlack && l.records >= l.retryAt
}

// maybeCompact compacts when dead records pile up. A compaction that fails
// is logged, not returned: the record was appended, and its caller must not
// believe it lost; the next try comes after as many records again.
func (l *Log) maybeCompact() error {
	if !l.needsCompaction() {
		return nil
	}
	if err := l.compact(); err != nil {
		l.retryAt = l.records + compactSlack
		logf(l.logger, slog.LevelWarn, l.path, "state log not compacted; it keeps growing until a later try succeeds", "err", errReason(err))
	}
	return nil
}

// compact re-reads the file (other processes may have appended deletes to
// it) under an exclusive flock, which appenders from other processes take
// too (AppendDelete), and rewrites its live records. It reads through its
// own descriptor, so a file removed or replaced under it still compacts
// (into a new file at the path). l.mu is held.
func (l *Log) compact() error {
	if err := flock(l.f, syscall.LOCK_EX); err != nil {
		return err
	}
	// The lock goes with the old file's descriptor, closed by rewrite.
	fi, err := l.f.Stat()
	if err != nil {
		_ = flock(l.f, syscall.LOCK_UN)
		return err
	}
	recs := map[string]json.RawMessage{}
	st := replayInto(io.NewSectionReader(l.f, 0, fi.Size()), recs)
	logDamage(l.logger, l.path, st)
	if err := l.rewrite(recs); err != nil {
		// The old file stays in use: let other processes' appends in.
		_ = flock(l.f, syscall.LOCK_UN)
		return err
	}
	return nil
}

// rewrite replaces the file with recs (temporary file 0600 opened
// O_APPEND, fsync, rename, fsync of the directory) and keeps appending to
// the new file. l.mu is held (or l is not shared yet).
func (l *Log) rewrite(recs map[string]json.RawMessage) error {
	dir := filepath.Dir(l.path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(l.path)+".*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	tmp.Close()
	f, err := os.OpenFile(name, os.O_RDWR|os.O_APPEND|syscall.O_NOFOLLOW, 0)
	if err != nil {
		os.Remove(name)
		return err
	}
	fail := func(err error) error {
		f.Close()
		os.Remove(name)
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		return fail(err)
	}
	var b []byte
	for k, v := range recs {
		b = appendRecord(b, k, v, false)
	}
	if _, err := f.Write(b); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := os.Rename(name, l.path); err != nil {
		return fail(err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	if l.f != nil {
		l.f.Close() // releases the old file's flock
	}
	l.f = f
	l.live = make(map[string]struct{}, len(recs))
	for k := range recs {
		l.live[k] = struct{}{}
	}
	l.records = len(recs)
	return nil
}

// appendRecord appends one record line to b.
func appendRecord(b []byte, key string, v json.RawMessage, del bool) []byte {
	kb, _ := json.Marshal(key) // a string always marshals
	b = append(b, `{"k":`...)
	b = append(b, kb...)
	if del {
		b = append(b, `,"d":true}`...)
	} else {
		b = append(b, `,"v":`...)
		b = append(b, v...)
		b = append(b, '}')
	}
	return append(b, '\n')
}

type record struct {
	K *string         `json:"k"`
	V json.RawMessage `json:"v"`
	D bool            `json:"d"`
}

// stats describes a replayed file.
type stats struct {
	exists, trusted bool
	records         int   // complete, well-formed lines
	bad             int   // damaged lines (dropped)
	tail            bool  // a last line without its newline (dropped)
	size            int64 // bytes consumed (up to the last newline)
}

// replay applies the complete lines of r with apply (v nil: a delete)
// and says how many records it read, how many lines were damaged, whether
// a torn last line was left, and how many bytes it consumed (up to the
// last newline: a torn tail is not consumed).
func replay(r io.Reader, apply func(key string, v json.RawMessage)) stats {
	var st stats
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	var pending int64 // bytes of the line not yet ended
	long := false
	for {
		chunk, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			pending += int64(len(chunk))
			if !long && len(line)+len(chunk) <= maxLine {
				line = append(line, chunk...)
			} else {
				long, line = true, line[:0]
			}
			continue
		}
		if len(chunk) > 0 && chunk[len(chunk)-1] == '\n' {
			st.size += pending + int64(len(chunk))
			full := chunk
			if len(line) > 0 {
				full = append(line, chunk...)
			}
			if long {
				st.bad++
			} else {
				applyLine(full[:len(full)-1], apply, &st)
			}
			line, long, pending = line[:0], false, 0
		} else if pending+int64(len(chunk)) > 0 {
			st.tail = true // not consumed
		}
		if err != nil {
			return st
		}
	}
}

func applyLine(b []byte, apply func(string, json.RawMessage), st *stats) {
	b = bytes.TrimSpace(b)
	var r record
	if len(b) == 0 || json.Unmarshal(b, &r) != nil || r.K == nil || (!r.D && len(r.V) == 0) {
		st.bad++
		return
	}
	st.records++
	if r.D {
		apply(*r.K, nil)
		return
	}
	apply(*r.K, append(json.RawMessage(nil), r.V...))
}

// replayInto replays r into recs.
func replayInto(r io.Reader, recs map[string]json.RawMessage) stats {
	return replay(r, func(k string, v json.RawMessage) {
		if v == nil {
			delete(recs, k)
		} else {
			recs[k] = v
		}
	})
}

// readFrom opens path (O_NOFOLLOW), checks that it can be trusted and
// replays it. A missing file gives no records silently; an untrusted or
// unreadable one gives none with one log line. Errors are left to the
// writes: reading never fails.
func readFrom(path string, logger *slog.Logger) (map[string]json.RawMessage, stats) {
	recs := map[string]json.RawMessage{}
	var st stats
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, os.ErrNotExist) {
		return recs, st
	}
	st.exists = true
	if err != nil {
		logf(logger, slog.LevelWarn, path, "state file ignored: cannot open it", "reason", errReason(err))
		return recs, st
	}
	defer f.Close()
	if ok, why := trusted(f); !ok {
		logf(logger, slog.LevelWarn, path, "state file ignored: "+why.msg, why.args...)
		return recs, st
	}
	s := replayInto(f, recs)
	s.exists, s.trusted = true, true
	logDamage(logger, path, s)
	return recs, s
}

func logDamage(logger *slog.Logger, path string, s stats) {
	if s.bad > 0 || s.tail {
		// Counts only: a line may hold a token.
		logf(logger, slog.LevelWarn, path, "state file: damaged lines dropped (a torn last line is what a crash mid-write leaves)",
			"damaged_lines", s.bad, "torn_last_line", s.tail)
	}
}

// Read replays a log this process does not write (another process's) and
// returns its live records; ok is false when the file is missing or
// cannot be trusted (logged).
func Read(path string, logger *slog.Logger) (recs map[string]json.RawMessage, ok bool) {
	recs, st := readFrom(path, logger)
	return recs, st.exists && st.trusted
}

// distrust says why a file is not trusted.
type distrust struct {
	msg  string
	args []any
}

// trusted checks an open file: regular, owned by this user, and neither
// readable nor writable by group or others.
func trusted(f *os.File) (bool, distrust) {
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return false, distrust{msg: "not a regular file"}
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return false, distrust{msg: "owned by another user", args: []any{"owner_uid", st.Uid}}
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return false, distrust{msg: "readable or writable by group or others (mode must be 0600)",
			args: []any{"mode", fmt.Sprintf("%04o", perm)}}
	}
	return true, distrust{}
}

func logf(logger *slog.Logger, level slog.Level, path, msg string, args ...any) {
	if logger == nil {
		return
	}
	logger.Log(context.Background(), level, msg, append([]any{"file", path}, args...)...)
}

// errReason is an error's text without the path (the path is logged apart).
func errReason(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

func flock(f *os.File, how int) error {
	for {
		err := syscall.Flock(int(f.Fd()), how)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}
