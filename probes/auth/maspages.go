package auth

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// pageKind is what an HTML page of the login is, recognised by its content
// (forms, inputs, links) the way a person reads it, not by its URL. The
// shapes are those of MAS v1.22.0's templates (docs/mas.md lists them).
type pageKind string

const (
	pageUnknown     pageKind = ""
	pageLogin       pageKind = "login"        // templates/pages/login.html
	pageRegister    pageKind = "register"     // templates/pages/upstream_oauth2/do_register.html
	pageDisplayName pageKind = "display_name" // templates/pages/register/steps/display_name.html
	pageConsent     pageKind = "consent"      // templates/pages/consent.html, sso.html
	pagePolicy      pageKind = "policy"       // templates/pages/policy_violation.html
	pageFormPost    pageKind = "form_post"    // templates/form_post.html, a provider's form_post answer
)

// classifiedPage is a page with its kind and the form (or link) to use.
type classifiedPage struct {
	kind      pageKind
	form      *HTMLForm // the form to submit (register, consent, form_post, display name: the set form)
	skip      *HTMLForm // display name: the skip form
	providers []Link    // login: the upstream provider links
}

// classify recognises a MAS page. Forms posting to /logout are never
// candidates: on a policy violation page the logout form is the only one.
func classify(p *Page) classifiedPage {
	var usable []*HTMLForm
	logout := 0
	for _, f := range p.Forms {
		if f.postsTo("/logout") {
			logout++
			continue
		}
		if f.Method == http.MethodPost {
			usable = append(usable, f)
		}
	}
	if p.AutoSubmit {
		for _, f := range usable {
			if len(f.Inputs) > 0 && allHidden(f) {
				return classifiedPage{kind: pageFormPost, form: f}
			}
		}
	}
	var set, skip, register *HTMLForm
	for _, f := range usable {
		switch f.value("action") {
		case "set":
			set = f
		case "skip":
			skip = f
		case "register":
			register = f
		}
	}
	if set != nil || skip != nil {
		return classifiedPage{kind: pageDisplayName, form: set, skip: skip}
	}
	if register != nil {
		return classifiedPage{kind: pageRegister, form: register}
	}
	var providers []Link
	for _, l := range p.Links {
		if strings.Contains(l.URL.Path, "/upstream/authorize/") {
			providers = append(providers, l)
		}
	}
	if len(providers) > 0 {
		return classifiedPage{kind: pageLogin, providers: providers}
	}
	if _, pw := firstOfType(usable, "password"); pw {
		return classifiedPage{kind: pageLogin}
	}
	for _, f := range usable {
		if f.has("csrf") && onlyHiddenAndButtons(f) {
			return classifiedPage{kind: pageConsent, form: f}
		}
	}
	if len(usable) == 0 && logout > 0 {
		return classifiedPage{kind: pagePolicy}
	}
	return classifiedPage{}
}

func allHidden(f *HTMLForm) bool {
	for _, in := range f.Inputs {
		if in.Type != "hidden" && !strings.HasPrefix(in.Type, "button-") && in.Type != "submit" {
			return false
		}
	}
	return true
}

func onlyHiddenAndButtons(f *HTMLForm) bool { return allHidden(f) }

func firstOfType(forms []*HTMLForm, typ string) (*HTMLForm, bool) {
	for _, f := range forms {
		if _, ok := f.hasType(typ); ok {
			return f, true
		}
	}
	return nil, false
}

// pageStep names the step of a page kind met at a request whose URL gave
// step (policy violations and login pages are named for what they are).
func pageStep(kind pageKind, step string) string {
	switch kind {
	case pagePolicy:
		return StepPolicyViolation
	case pageLogin:
		return StepMASLogin
	}
	return step
}

// pageDetail describes a page for an error: title, heading and path, never
// its HTML.
func pageDetail(p *Page, u *url.URL) string {
	parts := []string{}
	if p.Title != "" {
		parts = append(parts, "title "+fmt.Sprintf("%q", mxclient.Short(p.Title)))
	}
	if p.Heading != "" && p.Heading != p.Title {
		parts = append(parts, "heading "+fmt.Sprintf("%q", mxclient.Short(p.Heading)))
	}
	return redactURL(u) + " (" + strings.Join(parts, ", ") + ")"
}

// page handles an HTML page of the chain and returns the request that
// submits it (or follows its link), the step name when the page's kind
// names it better than its URL, and a note.
func (h *hopper) page(ctx context.Context, step string, pageURL *url.URL, body []byte) (*http.Request, string, string, error) {
	p := parsePage(body, pageURL)
	if step == StepProviderAuthorize || step == StepProviderLogin {
		if c := classify(p); c.kind == pageFormPost {
			req, note, err := h.formPost(ctx, c.form)
			return req, "", note, err
		}
		h.formLogins++
		if h.formLogins > 1 {
			return nil, "", "", probes.Errorf(ClassUpstreamLogin,
				"the provider showed its login form again: it refused the bot's credentials")
		}
		f := postForm(p.Forms)
		if f == nil {
			return nil, "", "", probes.Errorf(ClassUpstreamLogin, "the provider showed a page without a login form: %s", pageDetail(p, pageURL))
		}
		// The origin rules come first: a password form on an origin the
		// configuration does not name fails as config whatever the adapter.
		if err := h.checkPasswordForm(pageURL, f, nil); err != nil {
			return nil, "", "", err
		}
		vals, err := h.adapter.FillForm(f, h.acct)
		if err != nil {
			return nil, "", "", err
		}
		if err := h.checkPasswordForm(pageURL, f, vals); err != nil {
			return nil, "", "", err
		}
		req, err := formRequest(ctx, f, vals)
		return req, "", "login form filled", err
	}
	c := classify(p)
	step = pageStep(c.kind, step)
	h.seen[c.kind]++
	if c.kind != pageUnknown && c.kind != pageFormPost && h.seen[c.kind] > 1 && c.kind != pageLogin {
		// The page came back after it was submitted: MAS refused the form.
		msg := p.Error
		if msg == "" {
			msg = "no message"
		}
		return nil, step, "", probes.Errorf(hopClass(step), "MAS showed the %s page again after it was submitted: %s (%s)",
			c.kind, mxclient.Short(msg), redactURL(pageURL))
	}
	switch c.kind {
	case pageLogin:
		if h.seen[pageLogin] > 2 {
			return nil, step, "", probes.Errorf(ClassAuthorize, "MAS showed its login page again (%s)", redactURL(pageURL))
		}
		l, note, err := h.chooseProvider(c.providers)
		if err != nil {
			return nil, step, "", err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.URL.String(), nil)
		if err != nil {
			return nil, step, "", probes.Errorf(ClassAuthorize, "the login page's provider link is not a URL")
		}
		return req, step, note, nil
	case pageRegister:
		f := c.form
		if f.value("csrf") == "" {
			return nil, step, "", probes.Errorf(ClassAccountLink, "the account creation form has no csrf field")
		}
		vals := f.browserValues()
		var notes []string
		if f.has("username") {
			if vals.Get("username") == "" {
				// The localpart the bot is expected as (matrix_user, or the
				// provider's rule under the openmeet adapter), so the account
				// MAS creates is the one whoami then accepts.
				local := h.acct.ExpectedUserID()
				if local == "" {
					return nil, step, "", probes.Errorf(probes.ClassConfig, "MAS asks for a username and the bot has no user (localpart) configured")
				}
				local, _, _ = strings.Cut(strings.TrimPrefix(local, "@"), ":")
				vals.Set("username", local)
				notes = append(notes, "username filled")
			} else {
				notes = append(notes, "username suggested by MAS")
			}
		} else {
			notes = append(notes, "username set by the provider")
		}
		for _, in := range f.Inputs {
			if in.Type == "checkbox" && (strings.HasPrefix(in.Name, "import_") || in.Name == "accept_terms") {
				vals.Set(in.Name, "on")
				if in.Name == "accept_terms" {
					notes = append(notes, "terms accepted")
				}
			}
		}
		req, err := formRequest(ctx, f, vals)
		return req, step, "account registration form: " + strings.Join(notes, ", "), err
	case pageDisplayName:
		name := h.displayName()
		if name != "" && c.form != nil {
			vals := c.form.browserValues()
			vals.Set("display_name", name)
			req, err := formRequest(ctx, c.form, vals)
			return req, step, "display name set", err
		}
		if c.skip == nil {
			return nil, step, "", probes.Errorf(ClassAccountLink, "the display name step has no skip form and no display name is configured (bot.display_name)")
		}
		req, err := formRequest(ctx, c.skip, c.skip.browserValues())
		return req, step, "display name skipped", err
	case pageConsent:
		req, err := formRequest(ctx, c.form, c.form.browserValues())
		return req, step, "consent form", err
	case pagePolicy:
		msg := p.Heading
		if p.Lead != "" {
			msg += ": " + p.Lead
		}
		if msg == "" {
			msg = "a page whose only form is logout"
		}
		return nil, step, "", probes.Errorf(ClassPolicy, "MAS's policy refused the login at %s: %s", redactURL(pageURL), mxclient.Short(msg))
	case pageFormPost:
		req, note, err := h.formPost(ctx, c.form)
		return req, step, note, err
	}
	if step == StepConsent && postForm(p.Forms) != nil && !postForm(p.Forms).has("csrf") {
		return nil, step, "", probes.Errorf(ClassConsent, "the consent page has no csrf field")
	}
	return nil, step, "", probes.Errorf(hopClass(step), "unexpected page at %s", pageDetail(p, pageURL))
}

// formPost submits an auto-posting form (a provider's response_mode
// form_post answer to /upstream/callback/<id>, or MAS re-posting it); a form
// that posts to the redirect URI ends the flow with its values.
func (h *hopper) formPost(ctx context.Context, f *HTMLForm) (*http.Request, string, error) {
	vals := f.browserValues()
	if u, err := url.Parse(f.Action); err == nil && h.isTarget(u) {
		h.targetQuery = vals
		return nil, "form_post to redirect_uri", nil
	}
	req, err := formRequest(ctx, f, vals)
	return req, "auto-submitted form_post", err
}

// displayName is the name the bot takes at MAS's display-name step:
// bot.display_name, else the tenant's name.
func (h *hopper) displayName() string {
	if h.acct.Config.DisplayName != "" {
		return h.acct.Config.DisplayName
	}
	return h.acct.TenantName
}

// chooseProvider picks the upstream provider link of the login page: the
// only one, or the one mas.upstream.provider names (its id or the name the
// page shows, case-insensitive).
func (h *hopper) chooseProvider(links []Link) (Link, string, error) {
	if len(links) == 0 {
		return Link{}, "", probes.Errorf(ClassAuthorize,
			"MAS's login page offers no upstream provider (only password login, which mas_oidc never uses)")
	}
	type prov struct {
		id, name string
		link     Link
	}
	var ps []prov
	for _, l := range links {
		id := l.URL.Path[strings.LastIndex(l.URL.Path, "/")+1:]
		name := strings.TrimSpace(strings.TrimPrefix(l.Text, "Continue with "))
		ps = append(ps, prov{id, name, l})
	}
	want := strings.TrimSpace(h.provider)
	if want == "" && len(ps) == 1 {
		return ps[0].link, "login page: provider " + ps[0].name, nil
	}
	for _, p := range ps {
		if want != "" && (strings.EqualFold(want, p.id) || strings.EqualFold(want, p.name) || strings.EqualFold(want, p.link.Text)) {
			return p.link, "login page: provider " + p.name, nil
		}
	}
	var found []string
	for _, p := range ps {
		found = append(found, fmt.Sprintf("%q (id %s)", mxclient.Short(p.name), p.id))
	}
	sort.Strings(found)
	if want == "" {
		return Link{}, "", probes.Errorf(probes.ClassConfig,
			"MAS's login page lists %d upstream providers: %s; set mas.upstream.provider to one of them", len(ps), strings.Join(found, ", "))
	}
	return Link{}, "", probes.Errorf(probes.ClassConfig,
		"mas.upstream.provider %q is not on MAS's login page, which lists: %s", mxclient.Short(want), strings.Join(found, ", "))
}
