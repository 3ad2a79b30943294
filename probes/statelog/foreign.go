package statelog

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"
)

// Logs of other processes: a process finishing the work a dead one left
// (a room its crashed run journalled) appends a delete to that process's
// log, and removes the log once nothing in it is live. Both hold an
// exclusive flock on the file, as compaction does, and check after taking
// it that the path still names the file they locked: a compaction or a
// removal that came first replaced or unlinked it, and an append to the
// old file would be lost.

// lockedOpen opens path for appending, locked, and checks it is still the
// file at path (nil, nil: the file is gone).
func lockedOpen(path string) (*os.File, error) {
	for try := 0; try < 5; try++ {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND|syscall.O_NOFOLLOW, 0)
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if ok, why := trusted(f); !ok {
			f.Close()
			return nil, fmt.Errorf("statelog: %s not trusted: %s", path, why.msg)
		}
		if err := flock(f, syscall.LOCK_EX); err != nil {
			f.Close()
			return nil, err
		}
		a, err1 := f.Stat()
		b, err2 := os.Lstat(path)
		if err1 == nil && err2 == nil && os.SameFile(a, b) {
			return f, nil
		}
		f.Close() // releases the lock
		if errors.Is(err2, os.ErrNotExist) {
			return nil, nil
		}
	}
	return nil, fmt.Errorf("statelog: %s keeps being replaced", path)
}

// AppendDelete appends a delete of key to the log at path, which another
// process writes or wrote. A missing file is no error (nothing left to
// delete). A torn last line (its writer crashed mid-write) is ended first,
// so the delete is a line of its own.
func AppendDelete(path, key string) error {
	f, err := lockedOpen(path)
	if f == nil || err != nil {
		return err
	}
	defer f.Close()
	var b []byte
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, fi.Size()-1); err == nil && last[0] != '\n' {
			b = append(b, '\n')
		}
	}
	b = appendRecord(b, key, nil, true)
	_, err = f.Write(b)
	return err
}

// RemoveIfEmpty removes the log at path when it holds no live record (a
// dead process's log whose work is all finished). It reports whether the
// file is gone.
func RemoveIfEmpty(path string) (bool, error) {
	f, err := lockedOpen(path)
	if err != nil {
		return false, err
	}
	if f == nil {
		return true, nil
	}
	defer f.Close()
	recs := map[string]json.RawMessage{}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return false, err
	}
	replayInto(f, recs)
	if len(recs) > 0 {
		return false, nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	return true, nil
}

// Follower reads a log another process writes, incrementally: each
// Refresh reads only what was appended since the last one, unless the
// file was replaced (a compaction), when it reads it all again. Not safe
// for concurrent use.
type Follower struct {
	Path   string
	Logger *slog.Logger

	file   os.FileInfo // the file last read (nil: none)
	off    int64       // bytes consumed of it
	logged bool        // the file's distrust was logged
}

// Refresh brings the caller's view up to date: when the file is new or
// was replaced it calls reset, then apply for each record appended since
// (v nil: the key was deleted). It reports whether anything was applied
// or reset; ok is false when the file is gone or cannot be trusted (the
// view was reset).
func (fl *Follower) Refresh(reset func(), apply func(key string, v json.RawMessage)) (changed, ok bool) {
	f, err := os.OpenFile(fl.Path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) && !fl.logged {
			fl.logged = true
			logf(fl.Logger, slog.LevelWarn, fl.Path, "state file ignored: cannot open it", "reason", errReason(err))
		}
		return fl.drop(reset), false
	}
	defer f.Close()
	if trust, why := trusted(f); !trust {
		if !fl.logged {
			fl.logged = true
			logf(fl.Logger, slog.LevelWarn, fl.Path, "state file ignored: "+why.msg, why.args...)
		}
		return fl.drop(reset), false
	}
	fi, err := f.Stat()
	if err != nil {
		return fl.drop(reset), false
	}
	if fl.file == nil || !os.SameFile(fl.file, fi) || fi.Size() < fl.off {
		fl.file, fl.off = fi, 0
		reset()
		changed = true
	}
	if fi.Size() == fl.off {
		return changed, true
	}
	if _, err := f.Seek(fl.off, io.SeekStart); err != nil {
		return changed, true
	}
	st := replay(f, apply)
	fl.off += st.size
	if st.bad > 0 {
		logDamage(fl.Logger, fl.Path, stats{bad: st.bad})
	}
	return changed || st.records > 0, true
}

func (fl *Follower) drop(reset func()) bool {
	had := fl.file != nil
	fl.file, fl.off = nil, 0
	if had {
		reset()
	}
	return had
}
