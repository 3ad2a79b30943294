package media

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	promcfg "github.com/prometheus/common/config"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/mxclient"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// proxy sits in front of a real homeserver: it counts uploads and, when
// told, changes downloaded bytes, answers the authenticated media
// endpoints with 404 M_UNRECOGNIZED (a homeserver without them), or
// replaces thumbnails with a page that is no image.
type proxy struct {
	*httptest.Server
	uploads     atomic.Int64
	v1Requests  atomic.Int64
	corrupt     atomic.Bool
	noV1        atomic.Bool
	badThumb    atomic.Bool
	goneMedia   atomic.Bool
	legacyCalls atomic.Int64
	// refuseToken and limitUpload answer that many requests with 401
	// M_UNKNOWN_TOKEN (downloads) and 429 M_LIMIT_EXCEEDED (uploads).
	refuseToken atomic.Int64
	limitUpload atomic.Int64
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(u) },
		Transport: tr,
		ModifyResponse: func(resp *http.Response) error {
			path := resp.Request.URL.Path
			isDownload := strings.Contains(path, "/media/download/")
			isThumb := strings.Contains(path, "/media/thumbnail/")
			switch {
			case isDownload && resp.StatusCode == 200 && p.corrupt.Load():
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil {
					return err
				}
				b = append([]byte(nil), b...)
				b[len(b)/2] ^= 0xff
				resp.Body = io.NopCloser(bytes.NewReader(b))
			case isThumb && resp.StatusCode == 200 && p.badThumb.Load():
				b := []byte("<html>thumbnails are off</html>")
				resp.Header.Set("Content-Type", "text/html")
				resp.Body = io.NopCloser(bytes.NewReader(b))
				resp.ContentLength = int64(len(b))
				resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
			}
			if isDownload && resp.StatusCode == 200 && p.corrupt.Load() {
				resp.ContentLength = -1
				resp.Header.Del("Content-Length")
			}
			return nil
		},
	}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.Path
		if r.Method == http.MethodPost && path == "/_matrix/media/v3/upload" {
			if p.limitUpload.Add(-1) >= 0 {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusTooManyRequests)
				_, _ = io.WriteString(w, `{"errcode":"M_LIMIT_EXCEEDED","error":"Too Many Requests","retry_after_ms":200}`)
				return
			}
			p.uploads.Add(1)
		}
		if strings.Contains(path, "/media/download/") && p.refuseToken.Add(-1) >= 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"errcode":"M_UNKNOWN_TOKEN","error":"Invalid access token passed.","soft_logout":true}`)
			return
		}
		if strings.HasPrefix(path, "/_matrix/client/v1/media/") {
			p.v1Requests.Add(1)
			if p.noV1.Load() {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusNotFound)
				_, _ = io.WriteString(w, `{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`)
				return
			}
		}
		if strings.HasPrefix(path, "/_matrix/media/v3/download/") || strings.HasPrefix(path, "/_matrix/media/v3/thumbnail/") {
			p.legacyCalls.Add(1)
		}
		if strings.Contains(path, "/media/download/") && p.goneMedia.Load() {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"errcode":"M_NOT_FOUND","error":"Not found"}`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(func() {
		p.Close()
		tr.CloseIdleConnections()
	})
	return p
}

// fixture is a bot on a real homeserver, reached through a proxy.
type fixture struct {
	proxy   *proxy
	tenants map[string]*config.Tenant
	manager *auth.Manager
	httpc   *http.Client
}

func newFixture(t *testing.T, hs *testenv.Homeserver) *fixture {
	t.Helper()
	user, pw := hs.User(t, "media-bot")
	px := newProxy(t, hs.URL)
	cfg := &config.Config{Tenants: []config.Tenant{{ID: "acme", HomeserverURL: px.URL, ServerName: hs.ServerName,
		Bot: config.Account{Method: config.MethodPassword, User: user, Password: promcfg.Secret(pw)}}}}
	httpc := mxclient.NewHTTPClient()
	t.Cleanup(httpc.CloseIdleConnections)
	return &fixture{proxy: px, tenants: cfg.TenantMap(nil), manager: auth.NewManager(httpc), httpc: httpc}
}

func (f *fixture) probe(s *Settings) *Probe {
	if s.UploadInterval == 0 {
		s.UploadInterval = config.Duration(DefaultUploadInterval)
	}
	if s.ThumbnailSize == 0 {
		s.ThumbnailSize = DefaultThumbnailSize
	}
	return New("media", f.manager, f.tenants, s)
}

// homeservers are the real homeservers the probe is tested against.
func homeservers(t *testing.T) map[string]func(t *testing.T) *testenv.Homeserver {
	return map[string]func(t *testing.T) *testenv.Homeserver{
		"dendrite": func(t *testing.T) *testenv.Homeserver { return &testenv.SharedDendrite(t).Homeserver },
		"synapse":  func(t *testing.T) *testenv.Homeserver { return &testenv.SharedSynapse(t).Homeserver },
	}
}

func runOnce(t *testing.T, p *Probe) probes.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := p.Run(ctx, "acme")
	if err := probetype.CheckResult(Type(), r); err != nil {
		t.Fatal(err)
	}
	return r
}

func mustOK(t *testing.T, r probes.Result) {
	t.Helper()
	if r.Outcome != probes.OutcomeSuccess {
		t.Fatalf("run %s: %s at %s: %s (steps %+v)", r.Outcome, r.Class, r.FailedStep, r.Error, r.Steps)
	}
}

func stepNames(r probes.Result) []string {
	var out []string
	for _, s := range r.Steps {
		out = append(out, s.Name)
	}
	return out
}

// The probe uploads, downloads the same bytes through authenticated media
// and gets a thumbnail that is an image, on each real homeserver; later
// runs within the upload interval reuse the upload (the proxy counts one
// upload over several runs), and a run after the interval uploads again.
func TestMediaOnRealHomeservers(t *testing.T) {
	for name, hs := range homeservers(t) {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, hs(t))
			now := time.Now()
			var mu sync.Mutex
			p := f.probe(&Settings{UploadInterval: config.Duration(time.Hour)})
			p.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }

			r := runOnce(t, p)
			mustOK(t, r)
			if got := stepNames(r); !slices.Equal(got, []string{"login", "upload", "download", "thumbnail"}) {
				t.Fatalf("first run steps %v", got)
			}
			if r.Counts[CountUpload] != 1 || r.Signals[SignalAuthenticated] != 1 {
				t.Fatalf("first run: counts %v signals %v", r.Counts, r.Signals)
			}
			for range 3 {
				mu.Lock()
				now = now.Add(10 * time.Minute)
				mu.Unlock()
				r = runOnce(t, p)
				mustOK(t, r)
				if got := stepNames(r); !slices.Equal(got, []string{"download", "thumbnail"}) {
					t.Fatalf("later run steps %v", got)
				}
				if !strings.Contains(r.Steps[0].Detail, "reused") {
					t.Fatalf("a reused upload should be said: %+v", r.Steps[0])
				}
			}
			if n := f.proxy.uploads.Load(); n != 1 {
				t.Fatalf("%d uploads over 4 runs within the interval, want 1", n)
			}
			if f.proxy.legacyCalls.Load() != 0 {
				t.Fatal("the unauthenticated endpoints were used on a homeserver with authenticated media")
			}
			mu.Lock()
			now = now.Add(time.Hour)
			mu.Unlock()
			r = runOnce(t, p)
			mustOK(t, r)
			if n := f.proxy.uploads.Load(); n != 2 || r.Counts[CountUpload] != 1 {
				t.Fatalf("after the interval: %d uploads (run counts %v), want 2", n, r.Counts)
			}
		})
	}
}

// A proxy that changes the downloaded bytes gives content_mismatch at the
// download step; restored, the same upload passes again.
func TestMediaContentMismatch(t *testing.T) {
	for name, hs := range homeservers(t) {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, hs(t))
			p := f.probe(&Settings{})
			mustOK(t, runOnce(t, p))
			f.proxy.corrupt.Store(true)
			r := runOnce(t, p)
			if r.Outcome != probes.OutcomeFailure || r.Class != ClassContentMismatch || r.FailedStep != StepDownload {
				t.Fatalf("corrupted download: %s %s at %s: %s", r.Outcome, r.Class, r.FailedStep, r.Error)
			}
			if st := r.Steps[len(r.Steps)-1]; st.Name != StepDownload || st.OK || st.Class != ClassContentMismatch {
				t.Fatalf("the download step itself should fail as content_mismatch: %+v", st)
			}
			f.proxy.corrupt.Store(false)
			mustOK(t, runOnce(t, p))
			if n := f.proxy.uploads.Load(); n != 1 {
				t.Fatalf("%d uploads, want 1", n)
			}
		})
	}
}

// A homeserver without authenticated media (the proxy answers 404
// M_UNRECOGNIZED for /_matrix/client/v1/media, as a server of before spec
// v1.11 does): the download and the thumbnail fall back to
// /_matrix/media/v3, the step says so and the signal is 0. Synapse serves
// new media only through authenticated media (enable_authenticated_media,
// on by default), so the fallback runs against Dendrite.
func TestMediaFallbackToUnauthenticated(t *testing.T) {
	f := newFixture(t, &testenv.SharedDendrite(t).Homeserver)
	f.proxy.noV1.Store(true)
	p := f.probe(&Settings{})
	r := runOnce(t, p)
	mustOK(t, r)
	if v, ok := r.Signals[SignalAuthenticated]; !ok || v != 0 {
		t.Fatalf("signals %v: want %s 0", r.Signals, SignalAuthenticated)
	}
	var dl probes.Step
	for _, s := range r.Steps {
		if s.Name == StepDownload {
			dl = s
		}
	}
	if !strings.Contains(dl.Detail, "no authenticated media") {
		t.Fatalf("the download step should say it fell back: %+v", dl)
	}
	// One v1 request (the download's), then the thumbnail went to v3 at once.
	if v1, legacy := f.proxy.v1Requests.Load(), f.proxy.legacyCalls.Load(); v1 != 1 || legacy != 2 {
		t.Fatalf("v1 requests %d, legacy requests %d; want 1 and 2", v1, legacy)
	}
}

// A thumbnail that is not an image fails as thumbnail; media that is gone
// fails as not_found and the next run uploads anew.
func TestMediaThumbnailAndGone(t *testing.T) {
	f := newFixture(t, &testenv.SharedDendrite(t).Homeserver)
	p := f.probe(&Settings{})
	mustOK(t, runOnce(t, p))
	f.proxy.badThumb.Store(true)
	r := runOnce(t, p)
	if r.Outcome != probes.OutcomeFailure || r.Class != ClassThumbnail || r.FailedStep != StepThumbnail {
		t.Fatalf("html thumbnail: %s %s at %s: %s", r.Outcome, r.Class, r.FailedStep, r.Error)
	}
	f.proxy.badThumb.Store(false)
	noThumb := false
	p.Settings.Thumbnail = &noThumb
	f.proxy.goneMedia.Store(true)
	r = runOnce(t, p)
	if r.Outcome != probes.OutcomeFailure || r.Class != probes.ClassNotFound || r.FailedStep != StepDownload {
		t.Fatalf("gone media: %s %s at %s: %s", r.Outcome, r.Class, r.FailedStep, r.Error)
	}
	f.proxy.goneMedia.Store(false)
	r = runOnce(t, p)
	mustOK(t, r)
	if got := stepNames(r); !slices.Equal(got, []string{"upload", "download"}) {
		t.Fatalf("after gone media: steps %v, want a new upload and no thumbnail", got)
	}
	if n := f.proxy.uploads.Load(); n != 2 {
		t.Fatalf("%d uploads, want 2", n)
	}
}

// With data_dir, the last upload survives a restart (a new Probe reading
// the same folder downloads it without uploading) in a file of mode 0600;
// an unusable file means one upload more, never a failure.
func TestMediaUploadSurvivesRestart(t *testing.T) {
	f := newFixture(t, &testenv.SharedDendrite(t).Homeserver)
	dir := t.TempDir()
	s := &Settings{dataDir: dir}
	mustOK(t, runOnce(t, f.probe(s)))
	path := filepath.Join(dir, stateFileName("media"))
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	r := runOnce(t, f.probe(&Settings{dataDir: dir}))
	mustOK(t, r)
	if n := f.proxy.uploads.Load(); n != 1 || r.Counts[CountUpload] != 0 {
		t.Fatalf("after a restart: %d uploads, want 1", n)
	}
	if err := os.WriteFile(path, []byte("{truncated"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustOK(t, runOnce(t, f.probe(&Settings{dataDir: dir})))
	if n := f.proxy.uploads.Load(); n != 2 {
		t.Fatalf("after a corrupted state file: %d uploads, want 2", n)
	}
}

// The session helpers of probes/matrix do their part: a 429 at the upload
// is waited out and counted under the upload step, an M_UNKNOWN_TOKEN at
// the download logs the bot in again (a login step of its own) and the
// download is retried; and two runs of one tenant at once upload once.
func TestMediaSessionHelpers(t *testing.T) {
	f := newFixture(t, &testenv.SharedDendrite(t).Homeserver)
	p := f.probe(&Settings{})
	f.proxy.limitUpload.Store(1)
	f.proxy.refuseToken.Store(1)
	r := runOnce(t, p)
	mustOK(t, r)
	if got := stepNames(r); !slices.Equal(got, []string{"login", "upload", "login", "download", "thumbnail"}) {
		t.Fatalf("steps %v, want a second login before the download", got)
	}
	if r.Counts["rate_limited:upload"] != 1 || r.Counts[probes.CountTokenRefresh] != 1 {
		t.Fatalf("counts %v: want one 429 at upload and one token refresh", r.Counts)
	}

	f2 := newFixture(t, &testenv.SharedDendrite(t).Homeserver)
	p2 := f2.probe(&Settings{})
	var wg sync.WaitGroup
	results := make([]probes.Result, 3)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			results[i] = p2.Run(ctx, "acme")
		}()
	}
	wg.Wait()
	for _, r := range results {
		mustOK(t, r)
	}
	if n := f2.proxy.uploads.Load(); n != 1 {
		t.Fatalf("%d uploads by 3 concurrent runs, want 1", n)
	}
}
