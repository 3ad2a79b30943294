// Package media is the media probe type: per tenant, the bot uploads a
// small generated PNG to the homeserver's media repository (at most once per
// upload_interval, reusing its mxc URI in between), downloads it through
// authenticated media and compares the bytes, and fetches a thumbnail.
package media

import (
	"fmt"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

// TypeMedia is the media probe type's name.
const TypeMedia = "media"

// Steps of media runs (the login's own steps come before).
const (
	StepLogin     = "login"
	StepUpload    = "upload"
	StepDownload  = "download"
	StepThumbnail = "thumbnail"
)

// Classes of media runs beyond the shared and login ones.
const (
	// ClassContentMismatch: the download answered 200 with other bytes
	// than were uploaded (a proxy rewriting bodies, a corrupted store).
	ClassContentMismatch probes.Class = "content_mismatch"
	// ClassThumbnail: the thumbnail answered 200 with something that is
	// not an image.
	ClassThumbnail probes.Class = "thumbnail"
)

// Defaults of the settings.
const (
	DefaultUploadInterval = 24 * time.Hour
	DefaultThumbnailSize  = 32
)

// Result counts and signals of media runs.
const (
	// CountUpload counts uploads made (0 or 1 per run).
	CountUpload = "media_upload"
	// SignalAuthenticated is 1 when the homeserver served the download
	// through authenticated media (/_matrix/client/v1/media), 0 when the
	// run fell back to the unauthenticated endpoint.
	SignalAuthenticated = "media_authenticated"
	// SignalUploadAge is the age in seconds of the upload the run used.
	SignalUploadAge = "media_upload_age_seconds"
)

// Settings configure a media probe (its `media:` key).
type Settings struct {
	// UploadInterval is the shortest time between two uploads of one
	// tenant's bot: a normal user cannot delete media, so runs in between
	// download the last upload again (default 24h).
	UploadInterval config.Duration `yaml:"upload_interval" json:"upload_interval"`
	// Thumbnail fetches a thumbnail of the upload (default true).
	Thumbnail *bool `yaml:"thumbnail" json:"thumbnail,omitempty"`
	// ThumbnailSize is the width and height asked for (default 32, a size
	// Synapse and Dendrite generate at upload by default).
	ThumbnailSize int `yaml:"thumbnail_size" json:"thumbnail_size"`

	// dataDir is global.data_dir (the last uploads survive a restart
	// there); set by DecodeSettings.
	dataDir string
}

// WantThumbnail reports whether runs fetch a thumbnail.
func (s *Settings) WantThumbnail() bool { return s == nil || s.Thumbnail == nil || *s.Thumbnail }

// Type is the media probe type: per tenant, every 5 minutes by default.
func Type() probetype.Type {
	return probetype.Define(probetype.Def[Settings]{
		Name: TypeMedia, PerTenant: true, Schedule: "@every 5m", Timeout: 30 * time.Second,
		SettingsKey: "media",
		Steps: []string{StepLogin, auth.StepSessionResume, auth.StepLoginBudgetWait, auth.StepTokenRefresh,
			StepUpload, StepDownload, StepThumbnail},
		Classes: append(append(probes.SharedClasses(), auth.LoginClasses()...), ClassContentMismatch, ClassThumbnail),
		Decode:  DecodeSettings,
		New: func(in probetype.Inputs, s *Settings) (probes.Prober, error) {
			m, err := probetype.Need[*auth.Manager](in)
			if err != nil {
				return nil, err
			}
			return New(in.Name, m, in.Tenants, s), nil
		},
		// Local media passes through none of Synapse's rc_* limiters:
		// rc_media_create guards /_matrix/media/v1/create only (not used),
		// the remote media download limit applies to other servers' media,
		// and media_upload_limits (bytes per user and period, off by
		// default) sees a few hundred bytes per upload_interval. The login
		// is the login probe's cost (the session is shared).
		Costs:   func(*config.Config, *config.Probe, *Settings, *config.Tenant) []config.Cost { return nil },
		Metrics: metrics,
	})
}

// DecodeSettings decodes the settings of probe p from n (nil: all
// defaults), applies the defaults and validates them.
func DecodeSettings(cfg *config.Config, p *config.Probe, n *yaml.Node) (*Settings, error) {
	s, w, err := probetype.DecodeInto[Settings](cfg, p, n, "media")
	if err != nil {
		return nil, err
	}
	var errs config.Errors
	add := func(format string, args ...any) { errs = append(errs, w+": "+fmt.Sprintf(format, args...)) }
	switch {
	case s.UploadInterval == 0:
		s.UploadInterval = config.Duration(DefaultUploadInterval)
	case s.UploadInterval < config.Duration(time.Minute):
		add("media.upload_interval: %s is below 1m (every upload stays on the homeserver: a normal user cannot delete media)", s.UploadInterval)
	}
	switch {
	case s.ThumbnailSize == 0:
		s.ThumbnailSize = DefaultThumbnailSize
	case s.ThumbnailSize < 1 || s.ThumbnailSize > 800:
		add("media.thumbnail_size: %d is outside 1..800", s.ThumbnailSize)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	s.dataDir = cfg.Global.DataDir
	return s, nil
}
