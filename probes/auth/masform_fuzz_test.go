package auth

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv/fuzzmut"
)

const formFuzzPassword = "pw-FORM-SEKRIT-91b2"

var formSeeds = []string{
	`<!doctype html><html><head><title>Sign in</title></head><body>
<form method="post" action="/login?next=%2Fauthorize"><input type="hidden" name="csrf" value="c1">
<input type="email" name="email"><input type="password" name="password"><button type="submit" name="action" value="login">Go</button></form></body></html>`,
	`<html><title>Consent</title><form method="POST" action="https://mas.example/consent/01H"><input type=hidden name=csrf value=x><button name=action value=consent>Allow</button></form>`,
	`<form action="javascript:alert(1)"><input name=username><input type=password name=pw></form>`,
	`<form action="http://[::1">` + strings.Repeat(`<div>`, 200) + `<input type=password name=p>`,
	`<form><form><input name="a" value="&amp;&#0;"></form>`,
	`<title></title><form method=get action="//other.example/cb?x=1"><input type=text><input type=password name=""></form>`,
	"\xff\xfe<\x00form>",
	`<h1>Denied</h1><p class="text">policy</p><form method="POST" action="/logout"><input type="hidden" name="csrf" value="c"></form><a href="/account">x</a>`,
	`<form method="POST"><input type="hidden" name="csrf" value="c"><input type="hidden" name="action" value="set"><input name="display_name"></form><form method="POST"><input type="hidden" name="action" value="skip"></form>`,
	`<form method="post" action="https://mas.example/upstream/callback/01H"><input type="hidden" name="code" value="c"><input type="hidden" name="state" value="s"></form><script>document.forms[0].submit()</script>`,
	`<form method="POST"><input type="hidden" name="csrf" value="c"><input type="hidden" name="action" value="register"><input name="username" value=""><input type="checkbox" name="import_email" checked="checked"><input type="checkbox" name="accept_terms" required></form>`,
	``,
}

// checkForms is the fuzz body for the MAS and upstream HTML pages: parsing,
// picking the form, filling it and building the request never panic, every
// form gets an action URL, and no error carries the bot's password.
func checkForms(t *testing.T, body []byte) {
	base, _ := url.Parse("https://mas.example/upstream/authorize/01H?state=s")
	forms, _ := parseForms(body, base)
	acct := Account{Password: formFuzzPassword, Config: config.Account{User: "bot", Email: "bot@example.org"}}
	for _, f := range forms {
		if f.Action == "" || f.Method == "" {
			t.Fatalf("form without action or method: %+v", f)
		}
		for _, a := range []*FormAdapter{{}, {UsernameField: "username", PasswordField: "password"}} {
			vals, err := a.FillForm(f, acct)
			if err != nil {
				if strings.Contains(err.Error(), formFuzzPassword) {
					t.Fatalf("FillForm error carries the password: %v", err)
				}
				continue
			}
			req, err := formRequest(context.Background(), f, vals)
			if err != nil {
				if strings.Contains(err.Error(), formFuzzPassword) {
					t.Fatalf("formRequest error carries the password: %v", err)
				}
				continue
			}
			if req.URL == nil {
				t.Fatal("request without URL")
			}
		}
	}
	_ = postForm(forms)
	c := classify(parsePage(body, base))
	for _, f := range []*HTMLForm{c.form, c.skip} {
		if f != nil && f.postsTo("/logout") {
			t.Fatalf("a logout form was chosen to submit: %+v", f)
		}
		if f != nil {
			_ = f.browserValues()
		}
	}
}

func FuzzMASForm(f *testing.F) {
	for _, s := range formSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(checkForms)
}

func TestFuzzMASFormShort(t *testing.T) {
	var seeds [][]byte
	for _, s := range formSeeds {
		seeds = append(seeds, []byte(s))
	}
	fuzzmut.Run(t, seeds, fuzzmut.Options{Iterations: 1500, Seed: 31}, checkForms)
}
