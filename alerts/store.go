package alerts

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// stateFormat is the version of the state file. A file of another version
// is reported and replaced (its alerts start afresh).
const stateFormat = 2

type stateFile struct {
	Format   int       `json:"format"`
	SavedAt  time.Time `json:"saved_at"`
	Entries  []*entry  `json:"entries"`
	Silences []Silence `json:"silences,omitempty"`
}

// load reads the state file. Problems are reported, never fatal: the daemon
// must come up even with a damaged file.
func (m *Manager) load() {
	if m.statePath == "" {
		return
	}
	b, err := os.ReadFile(m.statePath)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	report := func(msg string, args ...any) {
		m.LoadReport = fmt.Sprintf(msg, args...)
		m.logger.Error(m.LoadReport)
		// Keep the bad file for a post-mortem; the next save replaces it.
		_ = os.Rename(m.statePath, m.statePath+".bad")
	}
	if err != nil {
		report("alert state file %s unreadable (%v); starting with no alert state, the file will be replaced", m.statePath, err)
		return
	}
	var probe struct {
		Format *int `json:"format"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		report("alert state file %s is corrupt (%v); starting with no alert state, the file will be replaced (old copy: %s.bad)", m.statePath, err, m.statePath)
		return
	}
	if probe.Format == nil || *probe.Format != stateFormat {
		v := "none"
		if probe.Format != nil {
			v = fmt.Sprint(*probe.Format)
		}
		report("alert state file %s has format %s, this mxprobe writes format %d; starting with no alert state, the file will be replaced (old copy: %s.bad)", m.statePath, v, stateFormat, m.statePath)
		return
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		report("alert state file %s is corrupt (%v); starting with no alert state, the file will be replaced (old copy: %s.bad)", m.statePath, err, m.statePath)
		return
	}
	for _, e := range st.Entries {
		if e == nil || e.Rule == "" {
			continue
		}
		switch e.State {
		case StateInactive, StatePending, StateFiring, StateResolved:
		default:
			continue
		}
		m.entries[entryKey(e.Rule, e.Tenant)] = e
	}
	for _, s := range st.Silences {
		if !s.FromConfig && s.ID != "" {
			m.silences = append(m.silences, s)
		}
	}
	m.logger.Info("alert state loaded", "file", m.statePath, "alerts", len(m.entries), "saved_at", st.SavedAt)
}

// Save writes the state file atomically (temp file, fsync, rename).
func (m *Manager) Save() error {
	if m.statePath == "" {
		return nil
	}
	m.saveMu.Lock()
	defer m.saveMu.Unlock()
	m.mu.Lock()
	st := stateFile{Format: stateFormat, SavedAt: time.Now().UTC()}
	for _, e := range m.entries {
		st.Entries = append(st.Entries, e)
	}
	for _, s := range m.silences {
		if !s.FromConfig {
			st.Silences = append(st.Silences, s)
		}
	}
	b, err := json.Marshal(st)
	m.mu.Unlock()
	if err != nil {
		return err
	}
	dir := filepath.Dir(m.statePath)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, filepath.Base(m.statePath)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, m.statePath)
	}
	if err != nil {
		_ = os.Remove(tmp)
		m.metrics.saveFailed()
		return fmt.Errorf("writing alert state %s: %w", m.statePath, err)
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

// saveAsync saves in the background without blocking the caller (Observe
// runs on the probe's goroutine); saves are serialised by saveMu.
func (m *Manager) saveAsync() {
	if m.statePath == "" {
		return
	}
	m.runMu.Lock()
	running := m.running
	if running {
		m.wg.Add(1)
	}
	m.runMu.Unlock()
	if !running {
		if err := m.Save(); err != nil {
			m.logger.Error("saving alert state failed", "err", err)
		}
		return
	}
	go func() {
		defer m.wg.Done()
		if err := m.Save(); err != nil {
			m.logger.Error("saving alert state failed", "err", err)
		}
	}()
}
