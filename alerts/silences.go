package alerts

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/mxprobe/mxprobe/probes"
)

// Silences (from the configuration and the API) and maintenance windows.

// muted reports whether a silence or maintenance window covers the labels.
func (m *Manager) muted(labels map[string]string, now time.Time) bool {
	for _, s := range m.silences {
		if s.active(now) && matches(s.Matchers, labels) {
			return true
		}
	}
	for _, w := range m.windows {
		if matches(w.cfg.Matchers, labels) && windowActive(w.sched, w.cfg.Duration.D(), now) {
			return true
		}
	}
	return false
}

// windowActive: a window opened by the schedule at t covers [t, t+d).
func windowActive(s cron.Schedule, d time.Duration, now time.Time) bool {
	start := s.Next(now.Add(-d - time.Nanosecond))
	return !start.After(now)
}

// Silences lists silences that are in force or scheduled.
func (m *Manager) Silences() []Silence {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	var out []Silence
	for _, s := range m.silences {
		if now.Before(s.EndsAt) {
			s.Matchers = maps.Clone(s.Matchers)
			out = append(out, s)
		}
	}
	return out
}

// AddSilence validates and stores a silence (persisted with the state).
func (m *Manager) AddSilence(s Silence) (Silence, error) {
	if len(s.Matchers) == 0 {
		return Silence{}, errors.New("a silence needs at least one matcher")
	}
	m.mu.Lock()
	now := m.now()
	if s.StartsAt.IsZero() {
		s.StartsAt = now
	}
	if !s.EndsAt.After(s.StartsAt) || !s.EndsAt.After(now) {
		m.mu.Unlock()
		return Silence{}, errors.New("ends_at must be in the future and after starts_at")
	}
	s.ID = randomID()
	s.FromConfig = false
	s.Matchers = maps.Clone(s.Matchers)
	m.silences = append(m.silences, s)
	m.mu.Unlock()
	m.saveAsync()
	return s, nil
}

// DeleteSilence expires an API silence. An id it does not know is an error
// wrapping probes.ErrUnknownSilence (the API answers 404 for it).
func (m *Manager) DeleteSilence(id string) error {
	m.mu.Lock()
	found := false
	for i, s := range m.silences {
		if s.ID == id {
			if s.FromConfig {
				m.mu.Unlock()
				return fmt.Errorf("silence %s comes from the configuration; remove it there", id)
			}
			m.silences = append(m.silences[:i], m.silences[i+1:]...)
			found = true
			break
		}
	}
	m.mu.Unlock()
	if !found {
		return fmt.Errorf("%w %q", probes.ErrUnknownSilence, id)
	}
	m.saveAsync()
	m.wake()
	return nil
}

func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
