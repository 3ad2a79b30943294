package media

import (
	"bytes"
	"image/png"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/config"
)

// The generated image is a PNG of a few hundred bytes, different at every
// upload, and passes the thumbnail check itself; what is not an image does
// not.
func TestImage(t *testing.T) {
	a, err := newImage()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := newImage()
	if bytes.Equal(a, b) {
		t.Fatal("two uploads' images are equal")
	}
	if len(a) < 100 || len(a) > 1000 {
		t.Fatalf("image of %d bytes, want a few hundred", len(a))
	}
	img, err := png.Decode(bytes.NewReader(a))
	if err != nil || img.Bounds().Dx() != imageSide {
		t.Fatalf("not a %dpx PNG: %v", imageSide, err)
	}
	if err := checkImage("image/png", a); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ ct, body string }{
		{"text/html", "<html></html>"},
		{"image/png", "<html></html>"},
		{"image/png", ""},
		{"image/webp", "RIFF0000WEBX"},
	} {
		if err := checkImage(c.ct, []byte(c.body)); err == nil {
			t.Errorf("%s %q passed as an image", c.ct, c.body)
		}
	}
	if err := checkImage("image/webp; charset=binary", []byte("RIFF\x00\x00\x00\x00WEBPVP8 ")); err != nil {
		t.Errorf("a WebP signature: %v", err)
	}
}

func decode(t *testing.T, src string) (*Settings, error) {
	t.Helper()
	cfg := &config.Config{File: "c.yml", Global: config.Global{DataDir: "/var/lib/mxprobe"}}
	p := &config.Probe{Name: "m", Type: TypeMedia}
	if src == "" {
		return DecodeSettings(cfg, p, nil)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatal(err)
	}
	return DecodeSettings(cfg, p, doc.Content[0])
}

func TestDecodeSettings(t *testing.T) {
	s, err := decode(t, "")
	if err != nil {
		t.Fatal(err)
	}
	if s.UploadInterval.D() != 24*time.Hour || s.ThumbnailSize != 32 || !s.WantThumbnail() || s.dataDir != "/var/lib/mxprobe" {
		t.Fatalf("defaults: %+v", s)
	}
	s, err = decode(t, "upload_interval: 6h\nthumbnail: false\nthumbnail_size: 96\n")
	if err != nil || s.UploadInterval.D() != 6*time.Hour || s.WantThumbnail() || s.ThumbnailSize != 96 {
		t.Fatalf("%+v %v", s, err)
	}
	for src, want := range map[string]string{
		"upload_interval: 30s\n":      "c.yml:1: probe \"m\": media.upload_interval: 30s is below 1m",
		"thumbnail_size: 5000\n":      "media.thumbnail_size: 5000 is outside 1..800",
		"upload_interval: 1h\nx: 1\n": "c.yml:2: probe \"m\": media.x: unknown field",
	} {
		if _, err := decode(t, src); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", src, err, want)
		}
	}
}
