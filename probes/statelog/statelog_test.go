package statelog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func open(t *testing.T, path string, logs *bytes.Buffer) (*Log, map[string]json.RawMessage) {
	t.Helper()
	var lg *slog.Logger
	if logs != nil {
		lg = slog.New(slog.NewTextHandler(logs, nil))
	}
	l, recs, err := Open(path, lg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, recs
}

func lines(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(b, []byte("\n"))
}

// Put, Delete and a reopen give back exactly the live records, in a 0600
// file.
func TestLogReplay(t *testing.T) {
	p := filepath.Join(t.TempDir(), "sub", "state.log")
	l, recs := open(t, p, nil)
	if len(recs) != 0 {
		t.Fatalf("new log: %v", recs)
	}
	for i := 0; i < 10; i++ {
		if err := l.Put(fmt.Sprint("k", i), map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	_ = l.Put("k3", map[string]int{"n": 33})
	_ = l.Delete("k5")
	_ = l.Delete("never")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Put("x", 1); err != ErrClosed {
		t.Fatalf("put after close: %v", err)
	}
	fi, err := os.Stat(p)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode: %v %v", err, fi)
	}
	if n := lines(t, p); n != 12 {
		t.Fatalf("%d lines, want 12 (a delete of a missing key writes nothing)", n)
	}
	_, recs = open(t, p, nil)
	if len(recs) != 9 || string(recs["k3"]) != `{"n":33}` || recs["k5"] != nil {
		t.Fatalf("replayed: %s", recs)
	}
}

// A torn last line (a crash mid-write) is dropped with one log line that
// holds no contents, and the next record is not swallowed by it.
func TestLogTornLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.log")
	l, _ := open(t, p, nil)
	_ = l.Put("a", "secret-a")
	_ = l.Put("b", "secret-b")
	l.Close()
	b, _ := os.ReadFile(p)
	if err := os.WriteFile(p, b[:len(b)-5], 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	l, recs := open(t, p, &logs)
	if len(recs) != 1 || string(recs["a"]) != `"secret-a"` {
		t.Fatalf("replayed: %s", recs)
	}
	out := logs.String()
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, "torn_last_line=true") || !strings.Contains(out, p) ||
		strings.Contains(out, "secret") {
		t.Fatalf("log: %q", out)
	}
	_ = l.Put("c", "C")
	l.Close()
	logs.Reset()
	_, recs = open(t, p, &logs)
	if len(recs) != 2 || recs["c"] == nil || logs.Len() != 0 {
		t.Fatalf("after the torn line: %s, log %q", recs, logs.String())
	}

	// A damaged line in the middle is dropped, the rest kept.
	if err := os.WriteFile(p, []byte("{\"k\":\"a\",\"v\":1}\n{\"k\":\"b\",\"v\n{\"k\":\"c\",\"v\":3}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs.Reset()
	_, recs = open(t, p, &logs)
	if len(recs) != 2 || recs["b"] != nil || !strings.Contains(logs.String(), "damaged_lines=1") {
		t.Fatalf("damaged: %s, log %q", recs, logs.String())
	}
}

// Compaction keeps exactly the live records, and the log goes on in the
// new file; the file's length stays bounded by the live records.
func TestLogCompaction(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.log")
	l, _ := open(t, p, nil)
	want := map[string]string{}
	for i := 0; i < 3*compactSlack; i++ {
		k := fmt.Sprint("k", i%50)
		if i%7 == 0 {
			_ = l.Delete(k)
			delete(want, k)
			continue
		}
		v := fmt.Sprint("v", i)
		if err := l.Put(k, v); err != nil {
			t.Fatal(err)
		}
		want[k] = v
		if i%1000 != 0 {
			continue
		}
		if n := lines(t, p); n > 2*50+compactSlack+1 {
			t.Fatalf("%d lines after %d records: no compaction", n, i)
		}
	}
	// Reopen after compaction: appends went to the new file.
	_ = l.Put("last", "L")
	want["last"] = "L"
	if err := l.Compact(); err != nil {
		t.Fatal(err)
	}
	if n := lines(t, p); n != len(want) {
		t.Fatalf("%d lines after compaction, %d live", n, len(want))
	}
	_ = l.Put("after", "A")
	want["after"] = "A"
	l.Close()
	_, recs := open(t, p, nil)
	if len(recs) != len(want) {
		t.Fatalf("%d records, want %d", len(recs), len(want))
	}
	for k, v := range want {
		var got string
		if json.Unmarshal(recs[k], &got) != nil || got != v {
			t.Errorf("%s = %s, want %s", k, recs[k], v)
		}
	}
	ents, _ := os.ReadDir(filepath.Dir(p))
	if len(ents) != 1 {
		t.Fatalf("temporary files left: %v", ents)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode after compaction %v", fi.Mode())
	}
}

// A file readable by others, owned by another user, or a symlink is
// ignored with one log line naming it and the reason, and replaced.
func TestLogUntrusted(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.log")
	good := []byte("{\"k\":\"a\",\"v\":\"TOKEN\"}\n")
	cases := map[string]struct {
		prepare func(t *testing.T)
		reason  string
	}{
		"0644": {func(t *testing.T) { writeMode(t, p, good, 0o644) }, "mode must be 0600"},
		"0660": {func(t *testing.T) { writeMode(t, p, good, 0o660) }, "mode must be 0600"},
		"symlink": {func(t *testing.T) {
			other := filepath.Join(t.TempDir(), "elsewhere")
			writeMode(t, other, good, 0o600)
			if err := os.Symlink(other, p); err != nil {
				t.Fatal(err)
			}
		}, "cannot open it"},
		"foreign": {func(t *testing.T) {
			writeMode(t, p, good, 0o600)
			if os.Getuid() != 0 {
				t.Skip("making a file of another user needs root")
			}
			if err := os.Chown(p, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, "owned by another user"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_ = os.Remove(p)
			c.prepare(t)
			var logs bytes.Buffer
			l, recs := open(t, p, &logs)
			if len(recs) != 0 {
				t.Fatalf("%s file used: %s", name, recs)
			}
			out := logs.String()
			if strings.Count(out, "\n") != 1 || !strings.Contains(out, c.reason) || !strings.Contains(out, p) || strings.Contains(out, "TOKEN") {
				t.Errorf("want one log line naming the file and %q, got %q", c.reason, out)
			}
			if _, ok := Read(p, nil); ok {
				// Replaced by an empty log of ours.
				fi, err := os.Lstat(p)
				if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
					t.Fatalf("not replaced: %v %v", err, fi)
				}
			} else {
				t.Fatal("the replacement is not readable")
			}
			_ = l.Put("b", 1)
			l.Close()
			if recs, _ := Read(p, nil); len(recs) != 1 || recs["a"] != nil {
				t.Fatalf("after the replacement: %s", recs)
			}
		})
	}
}

func writeMode(t *testing.T, p string, b []byte, mode os.FileMode) {
	t.Helper()
	_ = os.Remove(p)
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// Appends from many goroutines (and compactions between them) lose
// nothing and tear no line.
func TestLogConcurrent(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.log")
	l, _ := open(t, p, nil)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 600; i++ {
				k := fmt.Sprintf("g%d-%d", g, i%40)
				if err := l.Put(k, strings.Repeat("x", i%300)); err != nil {
					t.Error(err)
					return
				}
				if i%3 == 0 {
					_ = l.Delete(k)
				}
			}
		}(g)
	}
	wg.Wait()
	live := l.Live()
	l.Close()
	recs, ok := Read(p, nil)
	if !ok || len(recs) != live {
		t.Fatalf("%d records read, %d live", len(recs), live)
	}
}

// Another process's appends (a delete) reach the owner's next compaction;
// a follower sees appends incrementally and a compaction as a reset; an
// emptied log is removed.
func TestForeignAppendFollowRemove(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.log")
	l, _ := open(t, p, nil)
	_ = l.Put("a", 1)
	_ = l.Put("b", 2)

	view := map[string]json.RawMessage{}
	fl := &Follower{Path: p}
	reset := func() { clear(view) }
	apply := func(k string, v json.RawMessage) {
		if v == nil {
			delete(view, k)
		} else {
			view[k] = v
		}
	}
	if ch, ok := fl.Refresh(reset, apply); !ch || !ok || len(view) != 2 {
		t.Fatalf("first refresh: %v %v %s", ch, ok, view)
	}
	if ch, _ := fl.Refresh(reset, apply); ch {
		t.Fatal("unchanged file seen as changed")
	}
	if err := AppendDelete(p, "a"); err != nil {
		t.Fatal(err)
	}
	_ = l.Put("c", 3)
	resets := 0
	countReset := func() { resets++; reset() }
	if ch, _ := fl.Refresh(countReset, apply); !ch || resets != 0 || len(view) != 2 || view["a"] != nil {
		t.Fatalf("incremental refresh: %v resets %d %s", ch, resets, view)
	}
	if err := l.Compact(); err != nil {
		t.Fatal(err)
	}
	if n := lines(t, p); n != 2 {
		t.Fatalf("compaction kept %d lines, want b and c", n)
	}
	if _, _ = fl.Refresh(countReset, apply); resets != 1 || len(view) != 2 {
		t.Fatalf("after compaction: resets %d %s", resets, view)
	}
	if gone, err := RemoveIfEmpty(p); gone || err != nil {
		t.Fatalf("a log with live records removed: %v %v", gone, err)
	}
	l.Close()
	// The owner is gone; another process finishes its work.
	_ = AppendDelete(p, "b")
	_ = AppendDelete(p, "c")
	if gone, err := RemoveIfEmpty(p); !gone || err != nil {
		t.Fatalf("emptied log not removed: %v %v", gone, err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("still there: %v", err)
	}
	if err := AppendDelete(p, "b"); err != nil {
		t.Fatalf("delete in a removed log: %v", err)
	}
}

// A delete appended after a torn line starts a line of its own.
func TestForeignAppendAfterTornLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.log")
	if err := os.WriteFile(p, []byte("{\"k\":\"a\",\"v\":1}\n{\"k\":\"b\",\"v\":2}\n{\"k\":\"c\",\"v"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := AppendDelete(p, "a"); err != nil {
		t.Fatal(err)
	}
	recs, _ := Read(p, nil)
	if len(recs) != 1 || recs["b"] == nil {
		t.Fatalf("records: %s", recs)
	}
}

func BenchmarkLogPut(b *testing.B) {
	l, _, err := Open(filepath.Join(b.TempDir(), "state.log"), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	v := json.RawMessage(`{"user_id":"@bot:example.net","access_token":"syt_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx","method":"password"}`)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := l.PutRaw(fmt.Sprint("tenant", i%1000, "/bot"), v); err != nil {
			b.Fatal(err)
		}
	}
}

// A log whose file was removed under it keeps its records: the next
// compaction writes them to a new file at the path.
func TestLogFileRemovedUnderIt(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.log")
	l, _ := open(t, p, nil)
	_ = l.Put("a", 1)
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	_ = l.Put("b", 2)
	if err := l.Compact(); err != nil {
		t.Fatal(err)
	}
	_ = l.Put("c", 3)
	l.Close()
	if recs, ok := Read(p, nil); !ok || len(recs) != 3 {
		t.Fatalf("records: %s", recs)
	}
}

// A write that failed may leave part of a line behind (a full disk): the
// next record starts on a line of its own, so only the failed one is lost.
// (The failure is set up as it leaves the log: a fragment without its line
// feed at the end of the file, and the log knowing its write failed.)
func TestLogWriteFailureLeavesNextRecordWhole(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.log")
	l, _ := open(t, p, nil)
	if err := l.Put("a", 1); err != nil {
		t.Fatal(err)
	}
	// A write through a descriptor that cannot write fails as a full disk
	// would, and marks the log.
	good := l.f
	ro, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	l.f = ro
	if err := l.Put("b", 2); err == nil {
		t.Fatal("a write through a read-only descriptor succeeded")
	}
	l.f = good
	ro.Close()
	if err := os.WriteFile(p, append(readFile(t, p), `{"k":"b","v":`...), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := l.Put("c", 3); err != nil {
		t.Fatal(err)
	}
	l.Close()
	_, recs := open(t, p, nil)
	if string(recs["a"]) != "1" || string(recs["c"]) != "3" || recs["b"] != nil {
		t.Fatalf("replayed %s; want a and c whole, b lost", recs)
	}
}

// A compaction that fails (here: its directory is gone, as a full disk
// would refuse its temporary file) neither fails the write that triggered
// it nor keeps the file locked against other processes' appends; it is
// tried again after as many records.
func TestLogCompactionFailureBacksOff(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "state.log")
	l, _ := open(t, p, nil)
	defer l.Close()
	l.path = filepath.Join(dir, "gone", "state.log") // rewrite's temporary file cannot be made
	for i := 0; i <= compactSlack+2; i++ {
		if err := l.Put("k", i); err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
	}
	if l.retryAt <= l.records-compactSlack || l.retryAt == 0 {
		t.Fatalf("no back-off after a failed compaction: records %d, retry at %d", l.records, l.retryAt)
	}
	other, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := flock(other, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatalf("the log's file stayed locked after a failed compaction: %v", err)
	}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
