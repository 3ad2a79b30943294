package auth

import (
	"context"
	"strings"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
)

// AppServiceMethod acts with an application service's as_token instead of
// logging in: the token as bearer and ?user_id= on every request (identity
// assertion, Matrix application service API), as OpenMeet's own bot does
// (MatrixBotService: MATRIX_APPSERVICE_TOKEN, acting as
// @MATRIX_APPSERVICE_ID:<server name>). Its "login" step is a whoami with the
// token and the asserted user: a wrong, rotated or revoked token fails there
// as auth_failed (M_UNKNOWN_TOKEN), a user outside the service's namespace or
// not registered by it as forbidden.
type AppServiceMethod struct{}

// Login implements Method.
func (AppServiceMethod) Login(ctx context.Context, m *Manager, acct Account, rec *probes.Recorder) (*Session, error) {
	var sess *Session
	err := rec.Step(StepLogin, func() error {
		if acct.Token == "" {
			return probes.Errorf(probes.ClassConfig, "no application service token configured")
		}
		user := acct.ExpectedUserID()
		if user == "" || !strings.Contains(user, ":") {
			return probes.Errorf(probes.ClassConfig, "the application service needs a full user id to act as (set server_name, or a user @localpart:server)")
		}
		s := &Session{
			UserID: user, AccessToken: string(acct.Token), HomeserverURL: acct.HomeserverURL,
			Method: config.MethodAppService,
		}
		cli, err := m.Client(s)
		if err != nil {
			return err
		}
		resp, err := whoami(ctx, cli)
		if err != nil {
			if pe := (*probes.Error)(nil); asProbeErr(err, &pe) && pe.Class == probes.ClassForbidden {
				pe.Err = forbiddenAs{user: user, err: pe.Err}
			}
			return err
		}
		if resp.UserID == "" {
			return probes.Errorf(probes.ClassBadResponse, "whoami answered without a user_id")
		}
		s.DeviceID = string(resp.DeviceID)
		sess = s
		return nil
	})
	return sess, err
}

// forbiddenAs explains a 403 to an identity assertion.
type forbiddenAs struct {
	user string
	err  error
}

func (f forbiddenAs) Error() string {
	return "the application service may not act as " + f.user + " (outside its user namespace, or not registered by it): " + f.err.Error()
}

func (f forbiddenAs) Unwrap() error { return f.err }
