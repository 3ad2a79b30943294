package media

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/matrix"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// maxThumbnailBytes bounds a thumbnail's body (a 32x32 image is a few KiB).
const maxThumbnailBytes = 1 << 20

// Probe is a configured media probe.
type Probe struct {
	Name    string
	Manager *auth.Manager
	// Tenants are the tenants the probe runs for, by id.
	Tenants  map[string]*config.Tenant
	Settings *Settings
	// Now is the clock (tests move it; time.Now when nil).
	Now func() time.Time

	mu sync.Mutex
	// uploads are the tenants' last uploads (read from the state file at
	// the first run).
	uploads map[string]*upload
	loaded  bool
	// busy holds a token per tenant while a run decides on and makes its
	// upload, so two runs of one tenant (a scheduled one and one asked for
	// through the API) never upload twice.
	busy map[string]chan struct{}
}

// New returns the media probe name for tenants.
func New(name string, m *auth.Manager, tenants map[string]*config.Tenant, s *Settings) *Probe {
	if s == nil {
		s = &Settings{UploadInterval: config.Duration(DefaultUploadInterval), ThumbnailSize: DefaultThumbnailSize}
	}
	return &Probe{Name: name, Manager: m, Tenants: tenants, Settings: s}
}

func (p *Probe) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// statePath is the probe's state file ("" without data_dir).
func (p *Probe) statePath() string {
	if p.Settings.dataDir == "" {
		return ""
	}
	return filepath.Join(p.Settings.dataDir, stateFileName(p.Name))
}

// lockTenant waits for the tenant's token (or the end of ctx) and returns
// its release.
func (p *Probe) lockTenant(ctx context.Context, tenant string) (func(), error) {
	p.mu.Lock()
	if p.busy == nil {
		p.busy = map[string]chan struct{}{}
	}
	ch, ok := p.busy[tenant]
	if !ok {
		ch = make(chan struct{}, 1)
		p.busy[tenant] = ch
	}
	p.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// last returns the tenant's upload that may be reused now by user on hs.
func (p *Probe) last(tenant, hs, user string) *upload {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.loaded {
		p.loaded = true
		if path := p.statePath(); path != "" {
			p.uploads = loadUploads(path)
		}
	}
	u := p.uploads[tenant]
	if u == nil || u.HomeserverURL != hs || u.UserID != user {
		return nil
	}
	if age := p.now().Sub(u.Uploaded); age < 0 || age >= p.Settings.UploadInterval.D() {
		return nil
	}
	return u
}

// remember keeps u as the tenant's last upload (nil forgets it) and saves
// the state file.
func (p *Probe) remember(tenant string, u *upload) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.uploads == nil {
		p.uploads = map[string]*upload{}
	}
	if u == nil {
		delete(p.uploads, tenant)
	} else {
		p.uploads[tenant] = u
	}
	path := p.statePath()
	if path == "" {
		return nil
	}
	cp := make(map[string]*upload, len(p.uploads))
	for k, v := range p.uploads {
		c := *v
		cp[k] = &c
	}
	return saveUploads(path, cp)
}

// Run implements probes.Prober.
func (p *Probe) Run(ctx context.Context, tenant string) probes.Result {
	rec := probes.NewRecorder(p.Name, TypeMedia, tenant)
	t, ok := p.Tenants[tenant]
	if !ok {
		rec.AddStep(StepLogin, 0, probes.Errorf(probes.ClassConfig, "unknown tenant %q", tenant))
		return rec.Finish()
	}
	acct, err := auth.NewAccount(t, "bot", t.Bot)
	if err != nil {
		rec.AddStep(StepLogin, 0, err)
		return rec.Finish()
	}
	bot := matrix.NewBotSession(rec, p.Manager, acct)
	if bot.Login(ctx) != nil {
		return rec.Finish()
	}
	r := &run{p: p, rec: rec, bot: bot}
	u, reused, err := r.current(ctx, tenant, acct.HomeserverURL)
	if err != nil {
		return rec.Finish()
	}
	rec.Signal(SignalUploadAge, max(0, p.now().Sub(u.Uploaded).Seconds()))
	mxc, err := id.ParseContentURI(u.MXC)
	if err != nil {
		// A stored URI that no longer parses: upload anew next time.
		_ = p.remember(tenant, nil)
		rec.AddStep(StepDownload, 0, probes.Errorf(probes.ClassInternal, "stored media URI: %v", err))
		return rec.Finish()
	}
	if reused {
		r.notes = append(r.notes, fmt.Sprintf("the upload of %s reused (one upload per %s)", u.Uploaded.UTC().Format(time.RFC3339), p.Settings.UploadInterval))
	}
	err = r.download(ctx, mxc, u)
	if err != nil {
		if reused && probes.Classify(err) == probes.ClassNotFound {
			// The media is gone (a media retention policy, a lost store):
			// the run fails, and the next one uploads anew.
			_ = p.remember(tenant, nil)
			rec.Note("the stored upload is gone: the next run uploads anew")
		}
		return rec.Finish()
	}
	if p.Settings.WantThumbnail() {
		_ = r.thumbnail(ctx, mxc, p.Settings.ThumbnailSize)
	}
	return rec.Finish()
}

// current returns the tenant's upload to download: the last one while it
// is younger than the upload interval (reused), else a fresh one.
func (r *run) current(ctx context.Context, tenant, hs string) (u *upload, reused bool, err error) {
	release, err := r.p.lockTenant(ctx, tenant)
	if err != nil {
		r.rec.AddStep(StepUpload, 0, probes.WithClass(probes.Classify(err), err))
		return nil, false, err
	}
	defer release()
	if u := r.p.last(tenant, hs, r.bot.UserID()); u != nil {
		return u, true, nil
	}
	if u, err = r.upload(ctx); err != nil {
		return nil, false, err
	}
	u.HomeserverURL, u.UserID = hs, r.bot.UserID()
	r.rec.Count(CountUpload, 1)
	if err := r.p.remember(tenant, u); err != nil {
		r.rec.Note("the upload could not be saved in data_dir: the next start uploads again")
	}
	return u, false, nil
}

// run carries what the steps of one run share.
type run struct {
	p   *Probe
	rec *probes.Recorder
	bot *matrix.BotSession
	// legacy is set once the homeserver said it has no authenticated media
	// (the download fell back): the thumbnail goes to the old endpoint at
	// once.
	legacy bool
	// notes are attached to the step in progress once it is recorded.
	notes []string
}

// step runs fn as the timed step name (without the time of a re-login)
// and records it.
func (r *run) step(ctx context.Context, name string, fn func(ctx context.Context, cli *mautrix.Client) error, check func() error) error {
	t0 := time.Now()
	err, _, relog := r.bot.Attempt(ctx, name, fn)
	d := time.Since(t0) - relog
	if err == nil && check != nil {
		err = check()
	}
	if probes.Classify(err) == probes.ClassRateLimited {
		err = &probes.Error{Class: probes.ClassRateLimited, Status: http.StatusTooManyRequests,
			Err: fmt.Errorf("%v; retry_after_ms %d: Synapse limits uploads by media_upload_limits and remote downloads only, so a reverse proxy's limit is likely; make this probe rarer",
				err, r.bot.LastRetryAfter().Milliseconds())}
	}
	r.rec.AddStep(name, d, err)
	for _, n := range r.notes {
		r.rec.Note(n)
	}
	r.notes = nil
	return err
}

// upload sends a fresh image to /_matrix/media/v3/upload.
func (r *run) upload(ctx context.Context) (*upload, error) {
	img, err := newImage()
	if err != nil {
		r.rec.AddStep(StepUpload, 0, probes.WithClass(probes.ClassInternal, err))
		return nil, err
	}
	var u *upload
	err = r.step(ctx, StepUpload, func(ctx context.Context, cli *mautrix.Client) error {
		resp, err := cli.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: img, ContentType: "image/png", FileName: "mxprobe.png"})
		if err != nil {
			return err
		}
		if resp == nil || resp.ContentURI.IsEmpty() {
			return probes.Errorf(probes.ClassBadResponse, "the upload answered without a content_uri")
		}
		sum := sha256.Sum256(img)
		u = &upload{MXC: resp.ContentURI.String(), SHA256: hex.EncodeToString(sum[:]), Size: len(img),
			ContentType: "image/png", Uploaded: r.p.now()}
		return nil
	}, nil)
	return u, err
}

// unsupported reports whether raw is the homeserver not knowing the
// endpoint (M_UNRECOGNIZED, or a 404/405 without a Matrix error, as a
// reverse proxy that does not route the path answers), which a client
// takes as "no authenticated media here" (spec v1.11, MSC3916). A 404
// M_NOT_FOUND is the media missing, not the endpoint.
func unsupported(raw error) bool {
	if mxclient.ErrCode(raw) == "M_UNRECOGNIZED" {
		return true
	}
	s := mxclient.HTTPStatus(raw)
	return (s == http.StatusNotFound || s == http.StatusMethodNotAllowed) && mxclient.ErrCode(raw) == ""
}

// fetch GETs an authenticated media path (/_matrix/client/v1/media/...),
// falling back to the unauthenticated one (/_matrix/media/v3/...) when the
// homeserver has no authenticated media, and returns the body (at most
// limit bytes; more is a bad_response) and its content type.
func (r *run) fetch(ctx context.Context, cli *mautrix.Client, kind string, mxc id.ContentURI, query map[string]string, limit int64) ([]byte, string, error) {
	get := func(path mautrix.PrefixableURLPath) ([]byte, string, error) {
		_, resp, err := cli.MakeFullRequestWithResp(ctx, mautrix.FullRequest{
			Method: http.MethodGet, URL: cli.BuildURLWithQuery(path, query), DontReadResponse: true,
		})
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
		if err != nil {
			return nil, "", probes.WithClass(probes.ClassNone, err)
		}
		if int64(len(body)) > limit {
			return nil, "", &probes.Error{Class: probes.ClassBadResponse, Status: resp.StatusCode,
				Err: fmt.Errorf("the %s is larger than %d bytes", kind, limit)}
		}
		return body, resp.Header.Get("Content-Type"), nil
	}
	if !r.legacy {
		body, ct, err := get(mautrix.ClientURLPath{"v1", "media", kind, mxc.Homeserver, mxc.FileID})
		if err == nil || !unsupported(err) {
			return body, ct, err
		}
		r.legacy = true
		r.notes = append(r.notes, "the homeserver has no authenticated media (/_matrix/client/v1/media answered "+strconv.Itoa(mxclient.HTTPStatus(err))+" "+mxclient.ErrCode(err)+"): the unauthenticated /_matrix/media/v3 was used")
	}
	return get(mautrix.MediaURLPath{"v3", kind, mxc.Homeserver, mxc.FileID})
}

// download fetches the upload and compares its bytes.
func (r *run) download(ctx context.Context, mxc id.ContentURI, u *upload) error {
	var body []byte
	limit := int64(max(u.Size*4, 64<<10))
	err := r.step(ctx, StepDownload, func(ctx context.Context, cli *mautrix.Client) error {
		var err error
		body, _, err = r.fetch(ctx, cli, "download", mxc, nil, limit)
		return err
	}, func() error {
		sum := sha256.Sum256(body)
		if got := hex.EncodeToString(sum[:]); got != u.SHA256 {
			return probes.Errorf(ClassContentMismatch, "the download returned %d bytes (sha256 %.12s...), not the %d uploaded (sha256 %.12s...)",
				len(body), got, u.Size, u.SHA256)
		}
		return nil
	})
	if r.legacy {
		r.rec.Signal(SignalAuthenticated, 0)
	} else if err == nil || probes.Classify(err) == ClassContentMismatch {
		r.rec.Signal(SignalAuthenticated, 1)
	}
	return err
}

// thumbnail fetches a size x size cropped thumbnail and checks that it is
// an image.
func (r *run) thumbnail(ctx context.Context, mxc id.ContentURI, size int) error {
	var body []byte
	var ct string
	q := map[string]string{"width": strconv.Itoa(size), "height": strconv.Itoa(size), "method": "crop"}
	return r.step(ctx, StepThumbnail, func(ctx context.Context, cli *mautrix.Client) error {
		var err error
		body, ct, err = r.fetch(ctx, cli, "thumbnail", mxc, q, maxThumbnailBytes)
		return err
	}, func() error {
		if err := checkImage(ct, body); err != nil {
			return probes.WithClass(ClassThumbnail, fmt.Errorf("thumbnail: %w", err))
		}
		return nil
	})
}
