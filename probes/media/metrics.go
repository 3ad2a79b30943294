package media

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

// metrics registers the media type's own metrics: the uploads made (so an
// operator sees the probe keeps to one per upload_interval) and whether
// each tenant's homeserver served authenticated media at the last run.
func metrics(reg prometheus.Registerer) (probetype.Observer, error) {
	uploads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mxprobe_media_uploads_total",
		Help: "Media uploaded by media probes (at most one per tenant and upload_interval).",
	}, []string{"probe"})
	authenticated := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "mxprobe_media_authenticated",
		Help: "1 if the last media download of the tenant went through authenticated media (/_matrix/client/v1/media), 0 if it fell back to /_matrix/media/v3.",
	}, []string{"probe", "tenant"})
	for _, c := range []prometheus.Collector{uploads, authenticated} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return func(r probes.Result) {
		if n := r.Counts[CountUpload]; n > 0 {
			uploads.WithLabelValues(r.Probe).Add(float64(n))
		}
		if v, ok := r.Signals[SignalAuthenticated]; ok {
			authenticated.WithLabelValues(r.Probe, r.Tenant).Set(v)
		}
	}, nil
}
