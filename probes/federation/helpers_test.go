package federation

import (
	"bytes"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/mxprobe/mxprobe/config"
)

func parse(t *testing.T, yml string) (*config.Config, error) {
	t.Helper()
	return config.Parse([]byte(yml), "c.yml", func(string) string { return "" }, Type().Kind, DeliveryType().Kind)
}

func newRegistry() *prometheus.Registry { return prometheus.NewRegistry() }

func gatherText(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if err := enc.Encode(mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}
