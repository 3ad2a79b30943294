package media

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// upload is one tenant's last upload, reused until the upload interval has
// passed. It is kept for the homeserver and user it was made with: another
// bot or homeserver for the tenant uploads anew.
type upload struct {
	MXC           string    `json:"mxc"`
	SHA256        string    `json:"sha256"`
	Size          int       `json:"size"`
	ContentType   string    `json:"content_type"`
	Uploaded      time.Time `json:"uploaded"`
	HomeserverURL string    `json:"homeserver_url"`
	UserID        string    `json:"user_id"`
}

// stateVersion is the format of the state file.
const stateVersion = 1

type stateFile struct {
	Version int                `json:"version"`
	Uploads map[string]*upload `json:"uploads"`
}

// stateFileName is the probe's file in data_dir: one per configured probe,
// named after it with anything outside [A-Za-z0-9_-] replaced.
func stateFileName(probe string) string {
	return "media-" + strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_':
			return r
		}
		return '_'
	}, probe) + ".json"
}

// loadUploads reads the stored uploads (nil when there is no usable file:
// the probe then uploads anew, which costs one upload per tenant).
func loadUploads(path string) map[string]*upload {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var sf stateFile
	if json.Unmarshal(b, &sf) != nil || sf.Version != stateVersion {
		return nil
	}
	out := map[string]*upload{}
	for k, u := range sf.Uploads {
		if u != nil && u.MXC != "" && u.SHA256 != "" {
			out[k] = u
		}
	}
	return out
}

// saveUploads writes the uploads atomically (temporary file, then rename),
// mode 0600.
func saveUploads(path string, uploads map[string]*upload) error {
	b, err := json.Marshal(stateFile{Version: stateVersion, Uploads: uploads})
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".media-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
