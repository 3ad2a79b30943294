package masemu

import (
	"html/template"
	"net/http"
)

// The pages below keep the structure of MAS v1.22.0's templates (the forms,
// their inputs and values, the links a browser can follow), not their looks.
// Strings are MAS's English translations (translations/en.json).

var masPages = template.Must(template.New("base").Parse(`{{define "head"}}<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>matrix-authentication-service</title></head><body>{{end}}
{{define "foot"}}</body></html>{{end}}

{{/* templates/pages/login.html: one POST form (no action: it posts to
     itself) with csrf, and username/password when password login is on;
     each provider is only a link to /upstream/authorize/{id}{params}. */}}
{{define "login"}}{{template "head"}}
<form method="POST">
<header class="page-heading"><h1 class="title">Sign in</h1><p class="text">Welcome back! Sign in with your username or email.</p></header>
{{if .Error}}<div class="text-critical font-medium">{{.Error}}</div>{{end}}
<input type="hidden" name="csrf" value="{{.CSRF}}" />
{{if .Password}}<input name="username" id="username" class="cpd-text-control" type="text" autocomplete="username" required />
<input name="password" id="password" class="cpd-text-control" type="password" autocomplete="password" required />
<button type="submit" class="cpd-button">Continue</button>{{end}}
{{range .Providers}}<a class="cpd-button" data-kind="secondary" href="/upstream/authorize/{{.ID}}{{$.Params}}">Continue with {{.Name}}</a>
{{end}}
</form>{{template "foot"}}{{end}}

{{/* templates/pages/upstream_oauth2/do_register.html */}}
{{define "register"}}{{template "head"}}
<header class="page-heading"><h1 class="title">{{if .ForceLocalpart}}Import your data{{else}}Choose your username{{end}}</h1></header>
<form method="POST" class="cpd-form-root">
<input type="hidden" name="csrf" value="{{.CSRF}}" />
<input type="hidden" name="action" value="register" />
{{if .Error}}<div class="text-critical font-medium">{{.Error}}</div>{{end}}
{{if .ForceLocalpart}}<input name="mxid" id="mxid" class="cpd-text-control" type="text" value="@{{.Localpart}}:{{.ServerName}}" readonly />
{{else}}<input name="username" id="username" class="cpd-text-control" type="text" autocomplete="username" value="{{.Localpart}}" data-choose-username />
{{end}}
{{if .Email}}<input name="email" id="email" class="cpd-text-control" type="email" value="{{.Email}}" readonly />
{{if not .ForceEmail}}<input class="cpd-checkbox-input" type="checkbox" name="import_email" id="import_email" checked="checked" />{{end}}
{{end}}
{{if .DisplayName}}<input name="display_name" id="display_name" class="cpd-text-control" type="text" value="{{.DisplayName}}" readonly />
{{if not .ForceDisplayName}}<input class="cpd-checkbox-input" type="checkbox" name="import_display_name" id="import_display_name" checked="checked" />{{end}}
{{end}}
{{if .Terms}}<label for="accept_terms">I agree to the <a href="https://openmeet.net/terms">Terms and Conditions</a></label>
<input name="accept_terms" id="accept_terms" class="cpd-checkbox-input" type="checkbox" required />{{end}}
<button type="submit" class="cpd-button">Create account</button>
</form>{{template "foot"}}{{end}}

{{/* templates/pages/register/steps/display_name.html: two forms. */}}
{{define "display_name"}}{{template "head"}}
<header class="page-heading"><h1 class="title">Choose your display name</h1><p class="text">This is the name other people will see. You can change this at any time.</p></header>
<div class="cpd-form-root">
<form method="POST" class="cpd-form-root">
{{if .Error}}<div class="text-critical font-medium">{{.Error}}</div>{{end}}
<input type="hidden" name="csrf" value="{{.CSRF}}" />
<input type="hidden" name="action" value="set" />
<input name="display_name" id="cpd-text-control" type="text" maxlength="256" class="cpd-text-control" required />
<button type="submit" class="cpd-button">Continue</button>
</form>
<form method="POST" class="cpd-form-root">
<input type="hidden" name="csrf" value="{{.CSRF}}" />
<input type="hidden" name="action" value="skip" />
<button type="submit" class="cpd-button" data-kind="tertiary">Skip</button>
</form>
</div>{{template "foot"}}{{end}}

{{/* templates/components/logout.html */}}
{{define "logout"}}<form method="POST" action="/logout" class="inline-flex">
<input type="hidden" name="csrf" value="{{.CSRF}}" />
{{range .Action}}<input type="hidden" name="{{.Name}}" value="{{.Value}}" />
{{end}}<button class="cpd-link" data-kind="critical" type="submit">{{.LogoutText}}</button>
</form>{{end}}

{{/* templates/pages/consent.html (and sso.html for compat logins): the
     consent form has only csrf; a logout form and a cancel link follow. */}}
{{define "consent"}}{{template "head"}}
<header class="page-heading"><h1 class="title">{{.Heading}}</h1></header>
<section class="flex flex-col gap-6">
<form method="POST" class="cpd-form-root">
<input type="hidden" name="csrf" value="{{.CSRF}}" />
<button type="submit" class="cpd-button">Continue</button>
</form>
{{template "logout" .}}
{{if .Cancel}}<a class="cpd-button" data-kind="tertiary" href="{{.Cancel}}">Cancel</a>{{end}}
</section>{{template "foot"}}{{end}}

{{/* templates/pages/policy_violation.html: the only POST form is logout. */}}
{{define "policy_violation"}}{{template "head"}}
<header class="page-heading">
{{if .TooManySessions}}<h1 class="title">Device limit reached</h1><p class="text">Your account is already signed in on the maximum number of devices. To continue, remove {{.NeedToRemove}} of your existing devices and sign in again.</p>
{{else}}<h1 class="title">The authorization request was denied by the policy enforced by this service</h1><p class="text">This might be because of the client which authored the request, the currently logged in user, or the request itself.</p>{{end}}
</header>
<main class="flex flex-col gap-10">
<div class="flex gap-1"><p class="cpd-text-secondary">Logged as {{.Username}}</p>{{template "logout" .}}</div>
<div class="flex flex-col gap-6">
{{if .TooManySessions}}<a class="cpd-button" href="/account/sessions">Manage devices</a>{{end}}
{{if .Cancel}}<a class="cpd-button destructive" href="{{.Cancel}}">Cancel</a>{{end}}
</div>
</main>{{template "foot"}}{{end}}

{{/* templates/form_post.html: an auto-submitting form of hidden inputs. */}}
{{define "form_post"}}{{template "head"}}
<header class="page-heading"><div class="header"><h1 class="title">Loading…</h1></div></header>
<form method="post" class="flex flex-col"{{if .Action}} action="{{.Action}}"{{end}}>
{{range .Params}}<input type="hidden" name="{{.Name}}" value="{{.Value}}" />
{{end}}<noscript><button type="submit" class="cpd-button">Continue</button></noscript>
</form>
<script>setTimeout(function() { document.forms[0].submit(); }, 0);</script>
{{template "foot"}}{{end}}
`))

type providerLink struct{ ID, Name string }

type loginView struct {
	CSRF, Params, Error string
	Password            bool
	Providers           []providerLink
}

type registerView struct {
	CSRF, Error, Localpart, ServerName, Email, DisplayName string
	ForceLocalpart, ForceEmail, ForceDisplayName, Terms    bool
}

type displayNameView struct{ CSRF, Error string }

type consentView struct {
	CSRF, Heading, Cancel, LogoutText string
	Action                            []field
	TooManySessions                   bool
	NeedToRemove                      int
	Username                          string
}

type formPostView struct {
	Action string
	Params []field
}

func renderMAS(w http.ResponseWriter, status int, name string, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = masPages.ExecuteTemplate(w, name, data)
}
