package auth

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/mxprobe/mxprobe/config"
)

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// Cookies go back only to the origin that set them: not to another port
// or scheme of the same host, nor to a sibling host of a Domain cookie
// (net/http/cookiejar alone would send all three).
func TestOriginJarKeepsOriginsApart(t *testing.T) {
	j := newOriginJar()
	j.SetCookies(mustURL(t, "http://127.0.0.1:8080/login"), []*http.Cookie{{Name: "a", Value: "1", Path: "/"}})
	j.SetCookies(mustURL(t, "https://api.example.org/api/v1/auth/email/login"),
		[]*http.Cookie{{Name: "oidc_session", Value: "2", Path: "/", Domain: "example.org"}})
	for _, tc := range []struct {
		url  string
		want int
	}{
		{"http://127.0.0.1:8080/other", 1},
		{"http://127.0.0.1:9999/", 0},
		{"https://127.0.0.1:8080/", 0},
		{"https://api.example.org:443/api/oidc/auth", 1},
		{"https://mas.example.org/", 0},
		{"http://api.example.org/", 0},
	} {
		if got := len(j.Cookies(mustURL(t, tc.url))); got != tc.want {
			t.Errorf("%s: %d cookies, want %d", tc.url, got, tc.want)
		}
	}
}

func TestOriginDefaultPorts(t *testing.T) {
	for a, b := range map[string]string{
		"https://A.example.org/x": "https://a.example.org:443",
		"http://[::1]/":           "http://[::1]:80",
		"http://[::1]:8008/":      "http://[::1]:8008",
	} {
		if got := origin(mustURL(t, a)); got != b {
			t.Errorf("origin(%s) = %s, want %s", a, got, b)
		}
	}
}

func TestCheckRedirect(t *testing.T) {
	for _, tc := range []struct {
		from, to string
		ok       bool
	}{
		{"https://mas.example.org/authorize", "https://api.example.org/api/oidc/auth", true},
		{"http://127.0.0.1:8080/", "https://mas.example.org/", true},
		{"https://mas.example.org/", "http://mas.example.org/login", false},
		{"https://mas.example.org/", "http://127.0.0.1:8080/", false},
		{"https://127.0.0.1:8443/", "http://localhost:8080/", true},
		{"https://[::1]:8443/", "http://127.0.0.2:8080/", true},
		{"https://localhost.example.org/", "http://localhost:8080/", false},
		{"https://mas.example.org/", "javascript:alert(1)", false},
		{"https://mas.example.org/", "file:///etc/passwd", false},
		{"https://mas.example.org/", "https://user:pw@mas.example.org/", false},
	} {
		err := checkRedirect(mustURL(t, tc.from), mustURL(t, tc.to))
		if (err == nil) != tc.ok {
			t.Errorf("%s → %s: %v, want ok=%v", tc.from, tc.to, err, tc.ok)
		}
	}
}

func TestPasswordOrigins(t *testing.T) {
	got := passwordOrigins(config.Upstream{APIURL: "https://api.example.org/base"})
	if len(got) != 1 || !got["https://api.example.org:443"] {
		t.Errorf("from api_url: %v", got)
	}
	got = passwordOrigins(config.Upstream{APIURL: "https://api.example.org", Origin: "https://login.example.org"})
	if len(got) != 1 || !got["https://login.example.org:443"] {
		t.Errorf("origin wins: %v", got)
	}
	if got = passwordOrigins(config.Upstream{}); len(got) != 0 {
		t.Errorf("nothing configured: %v", got)
	}
}
