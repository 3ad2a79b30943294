package auth

import (
	"context"
	"time"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
)

func (m *Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// isMASMethod reports whether a login method's full logins go through MAS
// and the upstream provider.
func isMASMethod(method string) bool { return config.IsMASMethod(method) }

// Refresh renews the cached session of acct now with its refresh token: for
// MAS a refresh_token grant at MAS, which never reaches the upstream
// provider. When the refresh fails it logs in afresh (spending the login
// budget); with no cached session it logs in.
func (m *Manager) Refresh(ctx context.Context, acct Account, rec *probes.Recorder) (*Session, error) {
	l := m.keyLock(acct.Key)
	l.Lock()
	defer l.Unlock()
	sess := m.restoredFor(acct, m.Cached(acct.Key))
	if sess == nil {
		return m.login(ctx, acct, rec, nil)
	}
	rec.Scrub(append(acct.Secrets(), sess.AccessToken, sess.RefreshToken)...)
	return m.renew(ctx, acct, sess, rec)
}

// canRefresh reports whether a login method renews sessions by refresh.
func (m *Manager) canRefresh(method string) bool {
	meth, err := m.method(method)
	if err != nil {
		return false
	}
	_, ok := meth.(Refresher)
	return ok
}
