package alerts

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// collector exports mxprobe_alerts{rule,state} (computed at scrape time
// from the entries) and mxprobe_notifications_total{notifier,result}.
type collector struct {
	m          *Manager
	alertsDesc *prometheus.Desc
	notifs     *prometheus.CounterVec
	saveErrs   prometheus.Counter

	mu    sync.Mutex
	rules []string
}

func newCollector(m *Manager) *collector {
	return &collector{
		m: m,
		alertsDesc: prometheus.NewDesc("mxprobe_alerts",
			"Alerts by rule and state (pending, firing; muted ones count too).", []string{"rule", "state"}, nil),
		notifs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mxprobe_notifications_total",
			Help: "Notification delivery attempts by notifier and result (success, failure).",
		}, []string{"notifier", "result"}),
		saveErrs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "mxprobe_alert_state_save_failures_total",
			Help: "Failed writes of the alert state file.",
		}),
	}
}

// Collector returns the Prometheus collector of the manager.
func (m *Manager) Collector() prometheus.Collector { return m.metrics }

func (c *collector) setRules(rules []string) {
	c.mu.Lock()
	c.rules = append([]string(nil), rules...)
	c.mu.Unlock()
}

func (c *collector) notified(notifier, result string) {
	c.notifs.WithLabelValues(notifier, result).Inc()
}

func (c *collector) saveFailed() { c.saveErrs.Inc() }

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.alertsDesc
	c.notifs.Describe(ch)
	c.saveErrs.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	rules := c.rules
	c.mu.Unlock()
	counts := map[string]map[State]int{}
	for _, r := range rules {
		counts[r] = map[State]int{StatePending: 0, StateFiring: 0}
	}
	c.m.mu.Lock()
	for _, e := range c.m.entries {
		if cs, ok := counts[e.Rule]; ok && (e.State == StatePending || e.State == StateFiring) {
			cs[e.State]++
		}
	}
	c.m.mu.Unlock()
	for r, cs := range counts {
		for s, n := range cs {
			ch <- prometheus.MustNewConstMetric(c.alertsDesc, prometheus.GaugeValue, float64(n), r, string(s))
		}
	}
	c.notifs.Collect(ch)
	c.saveErrs.Collect(ch)
}
