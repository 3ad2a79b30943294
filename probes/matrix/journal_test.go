package matrix

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// deadJournal is a Journal that writes as a process that no longer runs
// on this host (its pid is free), as a crashed daemon's journal reads.
func deadJournal(dir string) *Journal {
	return &Journal{Dir: dir, proc: "4194303:12345", host: hostname()}
}

func logFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*"+journalExt))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func rooms(es []*JournalEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.RoomID)
	}
	sort.Strings(out)
	return out
}

// A dead process's entries are orphans for another Journal, per tenant;
// finishing them appends their deletes to the dead log, which a second
// Journal's cache sees, and the emptied dead log is removed.
func TestJournalOrphansOfDeadProcess(t *testing.T) {
	dir := t.TempDir()
	dead := deadJournal(dir)
	now := time.Now().UnixMilli()
	add := func(tenant, room string) *JournalEntry {
		e := &JournalEntry{Tenant: tenant, Probe: "roundtrip", Homeserver: "https://hs.example", CreatedMS: now}
		if err := dead.Add(e); err != nil {
			t.Fatal(err)
		}
		if room != "" {
			e.RoomID = room
			if err := dead.Update(e); err != nil {
				t.Fatal(err)
			}
		}
		return e
	}
	add("acme", "!a1:hs")
	add("acme", "")
	add("beta", "!b1:hs")
	done := add("acme", "!a2:hs")
	if err := dead.Remove(done); err != nil {
		t.Fatal(err)
	}
	// The process "crashes": its log is left as written (no Close).
	if n := len(logFiles(t, dir)); n != 1 {
		t.Fatalf("%d logs, want 1", n)
	}

	live := &Journal{Dir: dir}
	other := &Journal{Dir: dir}
	got, err := live.Orphans("acme", 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if r := rooms(got); len(r) != 2 || r[0] != "" || r[1] != "!a1:hs" {
		t.Fatalf("acme orphans: %q", r)
	}
	if b, _ := other.Orphans("beta", 15*time.Minute); len(b) != 1 || b[0].RoomID != "!b1:hs" || b[0].Tenant != "beta" {
		t.Fatalf("beta orphans: %+v", b)
	}
	for _, e := range got {
		if err := live.Remove(e); err != nil {
			t.Fatal(err)
		}
	}
	if again, _ := live.Orphans("acme", 15*time.Minute); len(again) != 0 {
		t.Fatalf("finished orphans found again: %q", rooms(again))
	}
	// The other Journal read the log before: it reads the deletes.
	if again, _ := other.Orphans("acme", 15*time.Minute); len(again) != 0 {
		t.Fatalf("finished orphans found again by another Journal: %q", rooms(again))
	}
	b, _ := other.Orphans("beta", 15*time.Minute)
	if len(b) != 1 {
		t.Fatalf("beta: %+v", b)
	}
	if err := other.Remove(b[0]); err != nil {
		t.Fatal(err)
	}
	if files := logFiles(t, dir); len(files) != 0 {
		t.Fatalf("the finished dead log is left: %v", files)
	}
	// A Journal that still caches it forgets it.
	if x, err := live.Orphans("beta", 15*time.Minute); len(x) != 0 || err != nil {
		t.Fatalf("after removal: %v %v", x, err)
	}
}

// A live process's entries are not orphans until they are older than the
// max age; its log is never removed. Close removes an emptied log.
func TestJournalLiveProcess(t *testing.T) {
	dir := t.TempDir()
	j := &Journal{Dir: dir}
	e := &JournalEntry{Tenant: "acme", Probe: "roundtrip", CreatedMS: time.Now().UnixMilli(), RoomID: "!x:hs"}
	if err := j.Add(e); err != nil {
		t.Fatal(err)
	}
	other := &Journal{Dir: dir}
	if got, _ := other.Orphans("acme", 15*time.Minute); len(got) != 0 {
		t.Fatalf("a live run's room is an orphan: %+v", got)
	}
	old := &JournalEntry{Tenant: "acme", Probe: "roundtrip", CreatedMS: time.Now().Add(-time.Hour).UnixMilli(), RoomID: "!old:hs"}
	if err := j.Add(old); err != nil {
		t.Fatal(err)
	}
	got, _ := other.Orphans("acme", 15*time.Minute)
	if len(got) != 1 || got[0].RoomID != "!old:hs" {
		t.Fatalf("orphans: %+v", got)
	}
	// The writing Journal finds its own old entry too (from memory, not
	// by reading its log back), and not its young one.
	if mine, _ := j.Orphans("acme", 15*time.Minute); len(mine) != 1 || mine[0].RoomID != "!old:hs" {
		t.Fatalf("own orphans: %+v", mine)
	}
	if mine, _ := j.Orphans("beta", 0); len(mine) != 0 {
		t.Fatalf("own orphans of another tenant: %+v", mine)
	}
	// Finished by another Journal of the same process: its delete lands
	// in j's log, and survives j's compaction.
	if err := other.Remove(got[0]); err != nil {
		t.Fatal(err)
	}
	j.mu.Lock()
	err := j.log.Compact()
	j.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := other.Orphans("acme", 0); len(got) != 1 || got[0].RoomID != "!x:hs" {
		t.Fatalf("after compaction (max age 0): %+v", got)
	}
	if len(logFiles(t, dir)) != 1 {
		t.Fatal("a live process's log was removed")
	}
	if err := j.Remove(e); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if files := logFiles(t, dir); len(files) != 0 {
		t.Fatalf("an emptied log is left at Close: %v", files)
	}
}

// A dead log whose writer was killed mid-append (a torn last line) still
// gives its complete entries, and is removed once they are finished.
func TestJournalTornDeadLog(t *testing.T) {
	dir := t.TempDir()
	dead := deadJournal(dir)
	e := &JournalEntry{Tenant: "acme", CreatedMS: time.Now().UnixMilli(), RoomID: "!t:hs"}
	if err := dead.Add(e); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(e.file, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString(`{"k":"zz","v":{"tenant":"acme","room_id":"!torn`)
	f.Close()
	j := &Journal{Dir: dir}
	got, _ := j.Orphans("acme", 15*time.Minute)
	if len(got) != 1 || got[0].RoomID != "!t:hs" {
		t.Fatalf("orphans: %+v", got)
	}
	if err := j.Remove(got[0]); err != nil {
		t.Fatal(err)
	}
	if files := logFiles(t, dir); len(files) != 0 {
		t.Fatalf("left: %v", files)
	}
}

// One-file-per-room entries of earlier versions are still found and
// removed (an upgrade after a crash leaks no room).
func TestJournalLegacyEntries(t *testing.T) {
	dir := t.TempDir()
	e := JournalEntry{Tenant: "acme", Probe: "roundtrip", CreatedMS: time.Now().UnixMilli(), RoomID: "!legacy:hs",
		Process: "4194303:12345", Host: hostname()}
	b, _ := json.Marshal(e)
	p := filepath.Join(dir, "acme-123-abcdef12.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	j := &Journal{Dir: dir}
	got, _ := j.Orphans("acme", 15*time.Minute)
	if len(got) != 1 || got[0].RoomID != "!legacy:hs" {
		t.Fatalf("orphans: %+v", got)
	}
	if got2, _ := j.Orphans("acme_other", 15*time.Minute); len(got2) != 0 {
		t.Fatalf("another tenant's: %+v", got2)
	}
	if err := j.Remove(got[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Fatalf("legacy entry kept: %v", err)
	}
}

// The log's name carries the host, the pid and the start time; entries
// carry the process.
func TestJournalLogName(t *testing.T) {
	dir := t.TempDir()
	j := &Journal{Dir: dir}
	e := &JournalEntry{Tenant: "acme"}
	if err := j.Add(e); err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	self := selfProcess()
	pid, start, _ := strings.Cut(self, ":")
	base := filepath.Base(e.file)
	if !strings.HasPrefix(base, safeName(hostname())+"-"+pid+"-"+start+"-") || e.Process != self {
		t.Fatalf("log %s, process %q (self %s)", base, e.Process, self)
	}
	if fi, err := os.Stat(e.file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("log mode: %v %v", err, fi)
	}
}
