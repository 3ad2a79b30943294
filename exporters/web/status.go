package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/mxprobe/mxprobe/exporters/history"
	"github.com/mxprobe/mxprobe/probes"
)

//go:embed templates/status.html
var templateFS embed.FS

var statusTmpl = template.Must(template.New("status.html").ParseFS(templateFS, "templates/status.html"))

func (s *Server) registerStatus() {
	s.Mux.HandleFunc("GET /{$}", s.statusPage)
	s.Mux.HandleFunc("POST /run", s.pageRun)
	s.Mux.HandleFunc("POST /login", s.pageLogin)
	s.Mux.HandleFunc("POST /logout", s.pageLogout)
}

// page is what the template renders.
type page struct {
	Title     string
	Generated time.Time
	Refresh   int
	// AuthOn: a token is configured; SignedIn: this browser has a session.
	AuthOn, SignedIn, ReadsLocked bool
	CanRun                        bool
	CSRF                          string
	Message, Error                string
	Counts                        map[string]int
	Rows                          []row
	Alerts                        []alertRow
	AlertingOff                   bool
}

type row struct {
	ID          string
	TenantID    string
	TenantName  string
	Probe       string
	Type        string
	State       string // ok, warn, fail, pending
	StateText   string
	Disabled    bool
	LastRun     *timeRef
	LastSuccess *timeRef
	LastFailure *failureRef
	Steps       []stepView
	Duration    string
	Spark       *sparkline
	Alerts      []alertRow
}

type timeRef struct {
	At  string // RFC 3339 for the title attribute
	Ago string
}

type failureRef struct {
	timeRef
	Step, Class, Error string
}

type stepView struct {
	Name, Duration, Class string
	OK                    bool
}

type alertRow struct {
	Rule, Tenant, Probe, State, Severity, Summary string
	Since                                         timeRef
}

type sparkline struct {
	Width, Height int
	Points        string
	Dots          []sparkDot
	Title         string
}

type sparkDot struct {
	X, Y float64
	Fail bool
}

func (s *Server) statusPage(w http.ResponseWriter, r *http.Request) {
	st := s.settings()
	tokenOK := false
	if requestToken(r) != "" && st.Token != "" {
		var wait time.Duration
		if tokenOK, wait = s.checkToken(r, st, accessRead); wait > 0 {
			tooMany(w, wait)
			return
		}
	}
	p := s.basePage(r, st, tokenOK)
	q := r.URL.Query()
	switch {
	case q.Get("m") == "signedin":
		p.Message = "Signed in."
	case q.Has("ran") && s.features.Runner != nil && !p.ReadsLocked:
		// Only configured names are echoed, with the verdict from the history.
		probe, tenant := q.Get("ran"), q.Get("tenant")
		if _, err := s.features.Runner.Lookup(probe, tenant); err == nil && s.features.Results != nil {
			for _, res := range s.features.Results.Latest() {
				if res.Probe == probe && res.Tenant == tenant {
					p.Message = "Ran " + probe
					if tenant != "" {
						p.Message += " for " + tenant
					}
					p.Message += ": " + verdict(res)
				}
			}
		}
	}
	switch q.Get("e") {
	case "unknown":
		p.Error = "Run not done: that probe or tenant is not configured (any more)."
	case "timeout":
		p.Error = "The run did not finish in time; its result appears here when it does."
	case "unavailable":
		p.Error = "No probes are configured yet."
	}
	if p.ReadsLocked {
		s.render(w, http.StatusUnauthorized, p)
		return
	}
	s.fillRows(&p, st)
	s.render(w, http.StatusOK, p)
}

// basePage is the page's frame; tokenOK: the request carried the right token
// (checked by the caller, through the throttle).
func (s *Server) basePage(r *http.Request, st Settings, tokenOK bool) page {
	now := s.features.Now()
	p := page{Title: st.Title, Generated: now, Refresh: int(st.Refresh / time.Second), AuthOn: st.Token != ""}
	if p.AuthOn {
		if sess, ok := s.session(r, st); ok {
			p.SignedIn = true
			p.CSRF = s.csrfToken(sess)
		}
	}
	p.ReadsLocked = p.AuthOn && st.ProtectReads && !p.SignedIn && !tokenOK
	p.CanRun = !p.AuthOn || p.SignedIn
	return p
}

func (s *Server) render(w http.ResponseWriter, code int, p page) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	// No scripts, no external assets: a strict policy costs nothing.
	w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "same-origin")
	var buf bytes.Buffer
	if err := statusTmpl.Execute(&buf, p); err != nil {
		s.opts.Logger.Error("rendering the status page", "err", err)
		http.Error(w, "the status page could not be rendered, see the log", http.StatusInternalServerError)
		return
	}
	w.WriteHeader(code)
	if _, err := w.Write(buf.Bytes()); err != nil {
		if clientGone(err) {
			// Broken pipe, reset, timeout: nothing to fix here.
			s.opts.Logger.Debug("writing the status page", "err", err)
		} else {
			s.opts.Logger.Warn("writing the status page", "err", err)
		}
	}
}

func rowID(probe, tenant string) string {
	h := sha256.Sum256([]byte(probe + "\x00" + tenant))
	return "r-" + hex.EncodeToString(h[:6])
}

func (s *Server) fillRows(p *page, st Settings) {
	now := p.Generated
	entries := map[history.Key]history.Entry{}
	if s.features.Results != nil {
		for _, e := range s.features.Results.Entries() {
			entries[e.Key] = e
		}
	}
	var alerts []AlertView
	if a := s.alertsSource(); a != nil {
		alerts = a.Alerts()
	} else {
		p.AlertingOff = true
	}
	for _, a := range alerts {
		p.Alerts = append(p.Alerts, alertView(a, now))
	}
	p.Counts = map[string]int{}
	if s.features.Runner != nil {
		for _, j := range s.features.Runner.Jobs() {
			for _, t := range j.Subjects {
				e, ok := entries[history.Key{Probe: j.Name, Tenant: t}]
				rw := makeRow(j, t, e, ok, st, now)
				// A tenant the login budget holds back says when its login
				// comes, besides what its last run (if any) saw.
				if ok && e.NextLogin.After(now) {
					w := "next login in " + e.NextLogin.Sub(now).Round(time.Second).String() + " (login budget)"
					if rw.State == "pending" {
						rw.StateText = w
					} else {
						rw.StateText += "; " + w
					}
				}
				for _, a := range alerts {
					if a.Probe == j.Name && a.Tenant == t {
						rw.Alerts = append(rw.Alerts, alertView(a, now))
					}
				}
				p.Counts[rw.State]++
				p.Rows = append(p.Rows, rw)
			}
		}
	}
	sort.SliceStable(p.Rows, func(a, b int) bool {
		ra, rb := p.Rows[a], p.Rows[b]
		if (ra.TenantID == "") != (rb.TenantID == "") {
			return ra.TenantID == "" // the deployment-wide probes first
		}
		if ra.TenantName != rb.TenantName {
			return ra.TenantName < rb.TenantName
		}
		if ra.TenantID != rb.TenantID {
			return ra.TenantID < rb.TenantID
		}
		return ra.Probe < rb.Probe
	})
}

func makeRow(j *probes.Job, tenant string, e history.Entry, ok bool, st Settings, now time.Time) row {
	rw := row{ID: rowID(j.Name, tenant), TenantID: tenant, Probe: j.Name, Type: j.Type, Disabled: j.Disabled,
		State: "pending", StateText: "no run yet"}
	switch {
	case tenant == "":
		rw.TenantName = "(deployment)"
	case st.TenantNames[tenant] != "":
		rw.TenantName = st.TenantNames[tenant]
	default:
		rw.TenantName = tenant
	}
	if !ok || len(e.Recent) == 0 {
		return rw
	}
	l := e.Latest
	switch l.Outcome {
	case probes.OutcomeSuccess:
		rw.State, rw.StateText = "ok", "OK"
	case probes.OutcomeWarning:
		rw.State, rw.StateText = "warn", "WARN "+string(l.Class)
	default:
		rw.State, rw.StateText = "fail", "FAIL "+string(l.Class)
	}
	rw.LastRun = ref(l.Started, now)
	rw.Duration = fmtDuration(l.Duration)
	if e.LastSuccess != nil {
		rw.LastSuccess = ref(e.LastSuccess.Started, now)
	}
	if f := e.LastFailure; f != nil {
		rw.LastFailure = &failureRef{timeRef: *ref(f.Started, now), Step: f.FailedStep, Class: string(f.Class), Error: probes.CutText(f.Error, 300)}
	}
	if l.Outcome == probes.OutcomeWarning && l.Error != "" {
		// A warning (rate limited) says what happened and what to change.
		rw.LastFailure = &failureRef{timeRef: *ref(l.Started, now), Step: l.FailedStep, Class: string(l.Class), Error: probes.CutText(l.Error, 300)}
	}
	for _, s := range l.Steps {
		rw.Steps = append(rw.Steps, stepView{Name: s.Name, Duration: fmtDuration(s.Duration), OK: s.OK, Class: string(s.Class)})
	}
	rw.Spark = makeSparkline(e.Recent, st.SparklineRuns)
	return rw
}

func alertView(a AlertView, now time.Time) alertRow {
	sum := a.Annotations["summary"]
	if sum == "" {
		sum = a.Annotations["description"]
	}
	ar := alertRow{Rule: a.Rule, Tenant: a.Tenant, Probe: a.Probe, State: a.State, Severity: a.Severity,
		Summary: probes.CutText(sum, 300)}
	if r := ref(a.Since, now); r != nil {
		ar.Since = *r
	}
	return ar
}

func ref(t, now time.Time) *timeRef {
	if t.IsZero() {
		return nil
	}
	return &timeRef{At: t.UTC().Format(time.RFC3339), Ago: ago(now.Sub(t))}
}

func ago(d time.Duration) string {
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm ago", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd ago", int(d.Hours()/24))
}

func fmtDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	return d.Round(time.Second).String()
}

// makeSparkline draws the durations of the last n runs; failed runs are red dots.
func makeSparkline(runs []history.Run, n int) *sparkline {
	if len(runs) > n {
		runs = runs[len(runs)-n:]
	}
	if len(runs) == 0 {
		return nil
	}
	const w, h, pad = 120, 28, 3
	maxD := time.Duration(0)
	for _, r := range runs {
		maxD = max(maxD, r.Duration())
	}
	if maxD <= 0 {
		maxD = 1
	}
	sp := &sparkline{Width: w, Height: h}
	step := 0.0
	if len(runs) > 1 {
		step = float64(w-2*pad) / float64(len(runs)-1)
	}
	pts := make([]string, 0, len(runs))
	fails := 0
	for i, r := range runs {
		x := pad + step*float64(i)
		if len(runs) == 1 {
			x = w / 2
		}
		y := float64(h-pad) - float64(h-2*pad)*float64(r.Duration())/float64(maxD)
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", x, y))
		if !r.OK() {
			fails++
			sp.Dots = append(sp.Dots, sparkDot{X: x, Y: y, Fail: true})
		}
	}
	last := runs[len(runs)-1]
	sp.Dots = append(sp.Dots, sparkDot{X: pad + step*float64(len(runs)-1), Y: float64(h-pad) - float64(h-2*pad)*float64(last.Duration())/float64(maxD), Fail: !last.OK()})
	if len(runs) == 1 {
		sp.Dots[len(sp.Dots)-1].X = w / 2
	}
	sp.Points = strings.Join(pts, " ")
	sp.Title = fmt.Sprintf("last %d runs: max %s, %d failed", len(runs), fmtDuration(maxD), fails)
	return sp
}

// pageRun is the "run now" form: POST /run (probe, tenant, csrf), then back
// to the page. With a token configured it needs a session and its CSRF token.
func (s *Server) pageRun(w http.ResponseWriter, r *http.Request) {
	st := s.settings()
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if st.Token != "" && !s.csrfOK(r, st) {
		http.Error(w, "forbidden: sign in on the status page first (the form's CSRF token or the session is missing or stale)", http.StatusForbidden)
		return
	}
	probe, tenant := r.PostFormValue("probe"), r.PostFormValue("tenant")
	_, _, code, err := s.runNow(r.Context(), probe, tenant)
	q := url.Values{}
	switch {
	case err == nil:
		q.Set("ran", probe)
		q.Set("tenant", tenant)
	case code == http.StatusNotFound:
		q.Set("e", "unknown")
	case code == http.StatusGatewayTimeout:
		q.Set("e", "timeout")
	default:
		q.Set("e", "unavailable")
	}
	http.Redirect(w, r, "/?"+q.Encode()+"#"+rowID(probe, tenant), http.StatusSeeOther)
}

func verdict(r probes.Result) string {
	switch r.Outcome {
	case probes.OutcomeSuccess:
		return "OK in " + fmtDuration(r.Duration)
	case probes.OutcomeWarning:
		return "warning " + string(r.Class)
	}
	return "FAILED at " + r.FailedStep + " (" + string(r.Class) + ")"
}

func (s *Server) pageLogin(w http.ResponseWriter, r *http.Request) {
	st := s.settings()
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if st.Token == "" {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	addr := clientAddr(r, st.TrustedProxies)
	now := s.features.Now()
	if wait := s.throttle.wait(addr, now); wait > 0 {
		tooMany(w, wait)
		return
	}
	given := r.PostFormValue("token")
	if !tokenEqual(given, st.Token) {
		if given != "" {
			s.throttle.fail(addr, now)
		}
		p := s.basePage(r, st, false)
		p.Error = "Wrong token."
		if !p.ReadsLocked {
			s.fillRows(&p, st)
		}
		s.render(w, http.StatusUnauthorized, p)
		return
	}
	s.throttle.ok(addr)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: s.newSession(st), Path: "/", HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: cookieSecure(r, st), MaxAge: int(sessionTTL / time.Second)})
	http.Redirect(w, r, "/?m=signedin", http.StatusSeeOther)
}

// pageLogout ends the session server-side (a copy of the cookie is worth
// nothing afterwards) and clears the cookie.
func (s *Server) pageLogout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil && c.Value != "" {
		s.sessions.end(c.Value)
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: cookieSecure(r, s.settings()), MaxAge: -1})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}
