package auth

import (
	"net/url"
	"testing"
)

// A browser submits every named, enabled control with its own value,
// checked boxes only, and the first submit button.
func TestBrowserValues(t *testing.T) {
	base, _ := url.Parse("https://mas.example/upstream/link/01H")
	p := parsePage([]byte(`<form method="POST">
<input type="hidden" name="csrf" value="c1"><input type="hidden" name="action" value="register">
<input name="mxid" value="@bot:example.org" readonly><input name="username" value="">
<input type="checkbox" name="import_email" checked="checked"><input type="checkbox" name="import_display_name">
<input type="checkbox" name="opt" value="yes" checked><input name="off" value="x" disabled>
<textarea name="note">hello</textarea>
<button type="submit" name="go" value="1">Go</button><button type="submit" name="other" value="2">Other</button>
</form>`), base)
	if len(p.Forms) != 1 {
		t.Fatalf("%d forms", len(p.Forms))
	}
	got := p.Forms[0].browserValues()
	want := url.Values{"csrf": {"c1"}, "action": {"register"}, "mxid": {"@bot:example.org"}, "username": {""},
		"import_email": {"on"}, "opt": {"yes"}, "note": {"hello"}, "go": {"1"}}
	if got.Encode() != want.Encode() {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	if p.Forms[0].Action != base.String() {
		t.Errorf("action %q: a form without action posts to its page", p.Forms[0].Action)
	}
}

func TestClassifyPages(t *testing.T) {
	base, _ := url.Parse("https://mas.example/x")
	for _, tc := range []struct {
		name string
		html string
		want pageKind
	}{
		{"login with password", `<form method="POST"><input type="hidden" name="csrf" value="c"><input name="username"><input type="password" name="password"><a href="/upstream/authorize/01H?kind=k&amp;id=1">Continue with OpenMeet</a></form>`, pageLogin},
		{"login providers only", `<form method="POST"><input type="hidden" name="csrf" value="c"><a href="/upstream/authorize/01H">Continue with A</a><a href="/upstream/authorize/01J">Continue with B</a></form>`, pageLogin},
		{"register", `<form method="POST"><input type="hidden" name="csrf" value="c"><input type="hidden" name="action" value="register"><input name="username"></form>`, pageRegister},
		{"display name", `<form method="POST"><input type="hidden" name="csrf" value="c"><input type="hidden" name="action" value="set"><input name="display_name"></form><form method="POST"><input type="hidden" name="csrf" value="c"><input type="hidden" name="action" value="skip"></form>`, pageDisplayName},
		{"consent", `<form method="POST"><input type="hidden" name="csrf" value="c"><button type="submit">Continue</button></form><form method="POST" action="/logout"><input type="hidden" name="csrf" value="c"><input type="hidden" name="kind" value="k"></form>`, pageConsent},
		{"policy", `<h1>Denied</h1><p class="text">why</p><form method="POST" action="/logout"><input type="hidden" name="csrf" value="c"></form><a href="http://localhost/cb?error=access_denied">Cancel</a>`, pagePolicy},
		{"form_post", `<form method="post" action="https://mas.example/upstream/callback/01H"><input type="hidden" name="code" value="c"><input type="hidden" name="state" value="s"></form><script>setTimeout(function() { document.forms[0].submit(); }, 0);</script>`, pageFormPost},
		{"unknown", `<title>Oops</title><form method="POST"><input name="q"></form>`, pageUnknown},
	} {
		c := classify(parsePage([]byte(tc.html), base))
		if c.kind != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, c.kind, tc.want)
		}
		if c.form != nil && c.form.postsTo("/logout") {
			t.Errorf("%s: chose the logout form", tc.name)
		}
	}
}
