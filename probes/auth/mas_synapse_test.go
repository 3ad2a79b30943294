package auth_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/internal/testenv"
	"github.com/mxprobe/mxprobe/internal/testenv/masemu"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/auth"
)

// whoamiAt asks a homeserver directly (not through the emulator's front)
// who a token belongs to; it returns the user and device, or the refusal.
func whoamiAt(ctx context.Context, base, token string) (user, device string, err error) {
	b, err := (&testenv.Homeserver{URL: base}).Do(ctx, "GET", "/_matrix/client/v3/account/whoami", token, nil)
	if err != nil {
		return "", "", err
	}
	var who struct {
		UserID   string `json:"user_id"`
		DeviceID string `json:"device_id"`
	}
	if err := json.Unmarshal(b, &who); err != nil {
		return "", "", err
	}
	return who.UserID, who.DeviceID, nil
}

// refusedBySynapse waits (up to 30 s: MAS syncs devices in a background
// job) until Synapse refuses the token with M_UNKNOWN_TOKEN.
func refusedBySynapse(t *testing.T, syn *testenv.Synapse, token string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _, err := whoamiAt(ctx, syn.URL, token)
		cancel()
		if err != nil && strings.Contains(err.Error(), "HTTP 401") && strings.Contains(err.Error(), "M_UNKNOWN_TOKEN") {
			return
		}
		if err != nil && !strings.Contains(err.Error(), "HTTP 401") {
			t.Fatalf("whoami at Synapse: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("Synapse still accepts the ended session's token after 30 s (last: %v)", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// A mas_oidc login through the emulator ends with a token Synapse itself
// accepts (whoami at Synapse, which introspects it at the emulator); once
// the session is revoked at MAS, Synapse refuses the token; Synapse's log
// shows the introspection calls.
func TestMASDelegatedSynapseJudgesTokens(t *testing.T) {
	emu, syn := masemu.StartWithSynapse(t, masemu.Options{}, testenv.SynapseOptions{})
	env := masEnvFor(t, emu, nil)
	res, sess := env.login(t)
	requireOK(t, res)
	if sess == nil || !strings.HasPrefix(sess.AccessToken, "mat_") {
		t.Fatalf("no MAS session: %+v", sess)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	user, device, err := whoamiAt(ctx, syn.URL, sess.AccessToken)
	cancel()
	if err != nil {
		t.Fatalf("Synapse refused the MAS token: %v", err)
	}
	if user != sess.UserID || device != sess.DeviceID || user != "@openmeet-bot-acme_acme:"+syn.ServerName {
		t.Fatalf("Synapse says %s / %s, the session is %s / %s", user, device, sess.UserID, sess.DeviceID)
	}
	if st := emu.Stats(); st.IntrospectionsActive == 0 || st.SynapseProvisions == 0 || st.SynapseDeviceUpserts == 0 {
		t.Fatalf("emulator saw no introspection or provisioning: %+v", st)
	}
	if log := syn.Log(); !strings.Contains(log, "Fetched token from MAS") {
		t.Fatalf("Synapse's log shows no introspection call")
	}

	if n := emu.RevokeUserSessions(strings.TrimPrefix(strings.Split(sess.UserID, ":")[0], "@")); n == 0 {
		t.Fatal("no session to revoke")
	}
	refusedBySynapse(t, syn, sess.AccessToken)

	// mxprobe notices and logs in again: a new session Synapse accepts.
	res, sess2 := env.login(t)
	requireOK(t, res)
	ctx, cancel = context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, _, err := whoamiAt(ctx, syn.URL, sess2.AccessToken); err != nil {
		t.Fatalf("Synapse refused the new session: %v", err)
	}
}

// The compatibility logins (SSO through the platform, and password) end
// with tokens Synapse accepts; an expired access token is refused by
// Synapse itself (it honours the introspection's expires_in), and mxprobe
// refreshes to a token Synapse accepts again.
func TestMASDelegatedSynapseCompatAndExpiry(t *testing.T) {
	// Ten seconds: long enough for a login and a whoami on a loaded
	// machine, short enough to wait for.
	emu, syn := masemu.StartWithSynapse(t, masemu.Options{AccessTTL: 10 * time.Second}, testenv.SynapseOptions{})
	env := masEnvFor(t, emu, nil)

	sso := env.bot(t, "sso", "openmeet-bot-sso", config.MethodMASCompatSSO)
	pw := env.bot(t, "pw", "openmeet-bot-pw", config.MethodMASCompatPassword)
	emu.SetMASPassword(pw.Config.User, botPassword)
	for _, acct := range []struct {
		name string
		a    auth.Account
	}{{"sso", sso}, {"password", pw}} {
		env.acct = acct.a
		res, sess := env.login(t)
		requireOK(t, res)
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		user, _, err := whoamiAt(ctx, syn.URL, sess.AccessToken)
		cancel()
		if err != nil || user != sess.UserID {
			t.Fatalf("%s: Synapse says %q, %v; session of %s", acct.name, user, err, sess.UserID)
		}
	}

	// mas_oidc with a 10 s access token: after expiry Synapse refuses the
	// token although its introspection is cached, and a refresh brings a
	// token it accepts.
	env.acct = env.bot(t, "ttl", "openmeet-bot-ttl", config.MethodMASOIDC)
	res, sess := env.login(t)
	requireOK(t, res)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, _, err := whoamiAt(ctx, syn.URL, sess.AccessToken); err != nil && time.Until(sess.Expiry) > time.Second {
		t.Fatalf("fresh token refused: %v", err)
	}
	time.Sleep(time.Until(sess.Expiry) + 500*time.Millisecond)
	refusedBySynapse(t, syn, sess.AccessToken)
	fresh, err := env.mgr.Refresh(ctx, env.acct, probes.NewRecorder("login", "login", env.acct.Tenant))
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if _, _, err := whoamiAt(ctx, syn.URL, fresh.AccessToken); err != nil {
		t.Fatalf("Synapse refused the refreshed token: %v", err)
	}
}
