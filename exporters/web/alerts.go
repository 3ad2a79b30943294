package web

import "time"

// Alerts is what the API and the status page need from the alert engine. The
// alerting side implements it through an adapter in cmd/mxprobe; web does not
// import the alerts package.
type Alerts interface {
	// Alerts returns the alerts that are pending or firing (and, if the engine
	// keeps them, recently resolved ones).
	Alerts() []AlertView
	// Silences returns the silences in force or scheduled.
	Silences() []Silence
	// AddSilence validates and stores a silence; the returned one carries its ID.
	AddSilence(Silence) (Silence, error)
	// DeleteSilence expires a silence; an unknown id is an error wrapping
	// probes.ErrUnknownSilence (answered 404), any other error is 400.
	DeleteSilence(id string) error
}

// AlertView is one alert as the API and the page show it.
type AlertView struct {
	Rule        string            `json:"rule"`
	Tenant      string            `json:"tenant,omitempty"`
	Probe       string            `json:"probe,omitempty"`
	State       string            `json:"state"`
	Severity    string            `json:"severity,omitempty"`
	Since       time.Time         `json:"since"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Value       float64           `json:"value"`
}

// Silence mutes the alerts whose labels match all Matchers (exact match)
// between StartsAt and EndsAt.
type Silence struct {
	ID        string            `json:"id"`
	Matchers  map[string]string `json:"matchers"`
	StartsAt  time.Time         `json:"starts_at"`
	EndsAt    time.Time         `json:"ends_at"`
	Comment   string            `json:"comment,omitempty"`
	CreatedBy string            `json:"created_by,omitempty"`
}

// SetAlerts plugs in the alert engine; nil means no alerting is configured
// (the API answers with empty lists and 404 for silences, the page shows none).
func (s *Server) SetAlerts(a Alerts) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.alerts = a
}

func (s *Server) alertsSource() Alerts {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.alerts
}
