package auth_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/probes/auth"
	"github.com/mxprobe/mxprobe/probes/matrix"
	"github.com/mxprobe/mxprobe/probes/mxclient"
	"github.com/mxprobe/mxprobe/probes/probetype"
)

// kinds are the probe types these tests' configurations name.
func kinds() []config.Kind {
	return []config.Kind{auth.LoginType().Kind, matrix.RoundtripType().Kind}
}

// roundtripSettings and loginInterval are the decoded settings of a probe.
func roundtripSettings(t *testing.T, p *config.Probe) *matrix.RoundtripSettings {
	t.Helper()
	s, err := probetype.SettingsOf[matrix.RoundtripSettings](p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func loginInterval(t *testing.T, p *config.Probe) time.Duration {
	t.Helper()
	s, err := probetype.SettingsOf[auth.LoginSettings](p)
	if err != nil {
		t.Fatal(err)
	}
	return s.FullLoginInterval.D()
}

// TestLoginTypeBuildsAndDeclares: the login type builds its prober from the
// configuration (its full-login interval, the Need'ed login manager), and a
// real run against Synapse reports only declared steps and classes, as
// does a run for an unknown tenant.
func TestLoginTypeBuildsAndDeclares(t *testing.T) {
	s := testenv.SharedSynapse(t)
	user, pw := s.User(t, "login-type")
	y := "global: {homeserver_url: " + s.URL + ", server_name: " + s.ServerName + "}\n" +
		"tenants:\n  - {id: acme, bot: {user: " + user + ", password: " + pw + "}}\n" +
		"probes:\n  - {name: login, type: login, login: {full_login_interval: 2h}}\n"
	cfg, err := config.Parse([]byte(y), "c.yml", func(string) string { return "" }, kinds()...)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := cfg.Probe("login")
	typ := auth.LoginType()
	in := probetype.Inputs{Name: p.Name, Probe: p, Tenants: cfg.TenantMap(p), Deps: &probetype.Deps{}}
	if _, err := typ.New(in); err == nil || !strings.Contains(err.Error(), "Manager") {
		t.Errorf("without a login manager: %v", err)
	}
	httpc := mxclient.NewHTTPClient()
	t.Cleanup(httpc.CloseIdleConnections)
	mgr := auth.NewManager(httpc)
	probetype.Provide(in.Deps, mgr)
	pr, err := typ.New(in)
	if err != nil {
		t.Fatal(err)
	}
	if lp, ok := pr.(*auth.LoginProbe); !ok || lp.FullLoginInterval != 2*time.Hour {
		t.Fatalf("prober %#v", pr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tenant := range []string{"acme", "acme", "nobody"} {
		r := pr.Run(ctx, tenant)
		if tenant == "acme" && r.Outcome != "success" {
			t.Errorf("run: %+v", r)
		}
		if err := probetype.CheckResult(typ, r); err != nil {
			t.Error(err)
		}
	}
}
