package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/media"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

// TestRunMediaCLI: the media type is in the registry: `mxprobe run media`
// uploads, downloads and fetches a thumbnail on Dendrite, and a second
// process with the same data_dir reuses the upload instead of uploading
// again.
func TestRunMediaCLI(t *testing.T) {
	d := testenv.SharedDendrite(t)
	user, pw := d.User(t, "media-cli")
	dir := t.TempDir()
	cfg := writeFile(t, "c.yml", fmt.Sprintf(`global: {homeserver_url: %s, server_name: %s, data_dir: %s}
tenants:
  - {id: acme, bot: {user: %s, password: %s}}
probes:
  - {name: media, type: media, media: {upload_interval: 1h}}
`, d.URL, d.ServerName, dir, user, pw))
	for i, wantUploads := range []int{1, 0} {
		code, out, errOut := runCLI(t, "run", "media", "--tenant", "acme", "--config.file", cfg, "-o", "json")
		if code != 0 {
			t.Fatalf("run %d: exit %d\n%s\n%s", i, code, out, errOut)
		}
		var r probes.Result
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("json: %v\n%s", err, out)
		}
		if err := probetype.CheckResult(media.Type(), r); err != nil {
			t.Fatal(err)
		}
		if r.Outcome != probes.OutcomeSuccess || r.Counts[media.CountUpload] != wantUploads {
			t.Fatalf("run %d: %s %s %s, counts %v", i, r.Outcome, r.Class, r.Error, r.Counts)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "media-media.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}
}
