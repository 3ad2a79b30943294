package synapse

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// BenchmarkLargePage compares, on the large reference page (6 MB, 42,000
// samples), mxprobe's parse + derive (with the previous scrape in hand, as in
// a scheduled run) against expfmt's bare text parse of the same bytes.
//
//	go test -run '^$' -bench LargePage -benchmem -count 6 ./probes/synapse/ | benchstat -
func BenchmarkLargePage(b *testing.B) {
	data := page(b, "large")
	prev, err := Parse(data, nil)
	if err != nil {
		b.Fatal(err)
	}
	prev.Time = time.Unix(0, 0)
	b.Run("mxprobe_parse_derive", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			cur, err := Parse(data, prev)
			if err != nil {
				b.Fatal(err)
			}
			cur.Time = prev.Time.Add(30 * time.Second)
			d := Derive(prev, cur, Options{})
			if len(d.Signals) == 0 {
				b.Fatal("no signals")
			}
		}
	})
	b.Run("mxprobe_parse_first_scrape", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Parse(data, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("expfmt_text_parse", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			p := expfmt.NewTextParser(model.UTF8Validation)
			if _, err := p.TextToMetricFamilies(bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestPagesSampleCount checks that the line scanner sees every sample line
// of the reference pages (EXPECTED.json counts them), and that expfmt also
// accepts the pages (so both parsers read the same input).
func TestPagesSampleCount(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "EXPECTED.json"))
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.ReplaceAll(b, []byte("Infinity"), []byte("null"))
	var v struct {
		Pages map[string]struct {
			Bytes       int `json:"bytes"`
			SampleLines int `json:"sample_lines"`
		} `json:"pages"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	for name, want := range v.Pages {
		data := page(t, name)
		snap, err := Parse(data, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if snap.Samples != want.SampleLines || snap.Bytes != want.Bytes {
			t.Errorf("%s: %d samples, %d bytes; want %d, %d", name, snap.Samples, snap.Bytes, want.SampleLines, want.Bytes)
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		if _, err := p.TextToMetricFamilies(bytes.NewReader(data)); err != nil {
			t.Errorf("%s: expfmt: %v", name, err)
		}
	}
}
