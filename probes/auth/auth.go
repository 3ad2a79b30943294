// Package auth logs tenant bots in (Matrix password login, a fixed token, and
// the MAS flows registered by other files of this package), caches their
// sessions, and recovers from expired tokens by a refresh or a fresh login.
package auth

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	promcfg "github.com/prometheus/common/config"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/mxprobe/mxprobe/config"
	"github.com/mxprobe/mxprobe/probes"
	"github.com/mxprobe/mxprobe/probes/mxclient"
)

// Session is a logged-in account.
type Session struct {
	UserID        string
	AccessToken   string
	RefreshToken  string
	DeviceID      string
	Expiry        time.Time // zero: no known expiry
	Method        string
	HomeserverURL string
	// Extra holds method-specific state (the MAS client id and token endpoint).
	Extra map[string]string
	// LoggedIn is when the fresh login that made the session happened.
	LoggedIn time.Time

	// restored: the session was read from the SessionStore and has not
	// served a request since; it is proven (whoami or a refresh) before
	// first use.
	restored bool
}

// Account is an account to log in as, with its secrets resolved.
type Account struct {
	// Key identifies the cached session: tenant id and role ("bot", "peer", "login").
	Key    string
	Tenant string
	Role   string
	// TenantName is the tenant's display name (the bot's display name at
	// MAS's registration when bot.display_name is not set).
	TenantName    string
	HomeserverURL string
	ServerName    string
	// Config is the account's configuration without its secrets: NewAccount
	// moves them into Password and Token, so each secret is held once.
	Config config.Account
	// Password and Token are the account's secrets, resolved from the
	// inline value or the *_file (read when the account is built, so a
	// rotated file counts from the next run). promcfg.Secret marshals as
	// "<secret>" in JSON and YAML; Account's String (%v, %+v, slog) and
	// GoString (%#v) name the account, never its secrets.
	Password promcfg.Secret
	Token    promcfg.Secret
	// Instance is the process's instance id (set by the Manager), part of
	// the device id.
	Instance string
}

// NewAccount builds the account of a tenant's role, resolving its secrets
// (inline or from *_file) into Password and Token and leaving them out of
// Config.
func NewAccount(tenant *config.Tenant, role string, acct config.Account) (Account, error) {
	pw, err := config.Secret(acct.Password, acct.PasswordFile)
	if err != nil {
		return Account{}, probes.Errorf(probes.ClassConfig, "%s password: %v", role, err)
	}
	tok, err := config.Secret(acct.AccessToken, acct.AccessTokenFile)
	if err != nil {
		return Account{}, probes.Errorf(probes.ClassConfig, "%s access token: %v", role, err)
	}
	acct.Password, acct.PasswordFile, acct.AccessToken, acct.AccessTokenFile = "", "", "", ""
	return Account{
		Key: tenant.ID + "/" + role, Tenant: tenant.ID, Role: role, TenantName: tenant.Name,
		HomeserverURL: tenant.HomeserverURL, ServerName: tenant.ServerName, Config: acct,
		Password: promcfg.Secret(pw), Token: promcfg.Secret(tok),
	}, nil
}

// Secrets are the account's secrets as text, for Recorder.Scrub.
func (a Account) Secrets() []string { return []string{string(a.Password), string(a.Token)} }

// GoString is String, so that %#v of an Account keeps its secrets out too.
func (a Account) GoString() string { return a.String() }

// ExpectedUserID is the Matrix user the account must end up as: the
// configured matrix_user (with MAS, the provider's preferred_username), else
// the user, as @localpart:server_name (a full user id is taken as is), or ""
// when the user is not known.
func (a Account) ExpectedUserID() string {
	u := a.Config.MatrixUser
	if u == "" {
		u = a.Config.User
	}
	switch {
	case u == "":
		return ""
	case strings.HasPrefix(u, "@"):
		return u
	case a.ServerName == "":
		return "@" + u
	}
	return "@" + u + ":" + a.ServerName
}

// DeviceID is a device id per process instance, account and role: repeated
// logins of one process reuse one device instead of piling up devices, and
// another process (a replica, a CLI run) logs in on a device of its own, so
// no process cancels another's token.
func (a Account) DeviceID() string {
	return deviceID(a.Instance, a.Key)
}

// Method performs a fresh login, recording each of its hops as steps.
type Method interface {
	Login(ctx context.Context, m *Manager, acct Account, rec *probes.Recorder) (*Session, error)
}

// Refresher is a Method that can renew a session with its refresh token.
type Refresher interface {
	Refresh(ctx context.Context, m *Manager, acct Account, sess *Session, rec *probes.Recorder) (*Session, error)
}

// Revoker is a Method whose sessions can be ended at the server (MAS's
// revocation_endpoint). A session a fresh login replaces is revoked, so
// repeated logins do not pile sessions up.
type Revoker interface {
	Revoke(ctx context.Context, m *Manager, sess *Session) error
}

// CountRevocationPrefix prefixes the Result.Counts keys that count
// revocations of replaced sessions: "mas_revocation:success" / ":failure".
const CountRevocationPrefix = probes.CountRevocationPrefix

// revokeTimeout bounds one revocation (best effort).
const revokeTimeout = 5 * time.Second

// Manager logs accounts in and caches their sessions. It is shared by every
// probe and survives config reloads.
type Manager struct {
	HTTP *http.Client
	// RefreshBefore renews a session this long before its expiry.
	RefreshBefore time.Duration
	// Instance identifies this process in device ids (see InstanceFromDir);
	// set it before the first login.
	Instance string
	// Now is the clock of login times (time.Now when nil).
	Now func() time.Time
	// Store keeps the sessions across restarts (nil: memory only); set it
	// before Restore and the first login. A process that must not take
	// another's sessions (`mxprobe run`) has none.
	Store SessionStore

	// storeMu orders the changes of sessions with their records in Store:
	// the last record of a key is its last change (held apart from mu, so
	// a slow disk never blocks a session lookup).
	storeMu sync.Mutex

	mu       sync.Mutex
	methods  map[string]Method
	sessions map[string]*Session
	locks    map[string]*sync.Mutex
	budgets  map[string]*Budget
	refused  map[string]time.Time // account key → its last refused login
}

// NewManager returns a manager with the password and token methods.
func NewManager(httpc *http.Client) *Manager {
	if httpc == nil {
		httpc = mxclient.NewHTTPClient()
	}
	m := &Manager{
		HTTP:          httpc,
		RefreshBefore: 30 * time.Second,
		methods:       map[string]Method{},
		sessions:      map[string]*Session{},
		locks:         map[string]*sync.Mutex{},
	}
	m.SetMethods(BaseMethods())
	return m
}

// BaseMethods are the login methods every configuration has: password,
// token and appservice.
func BaseMethods() map[string]Method {
	return map[string]Method{
		config.MethodPassword:   PasswordMethod{},
		config.MethodToken:      TokenMethod{},
		config.MethodAppService: AppServiceMethod{},
	}
}

// SetMethods replaces the whole set of login methods at once (a
// configuration reload); sessions, budgets and locks stay.
func (m *Manager) SetMethods(methods map[string]Method) {
	next := make(map[string]Method, len(methods))
	for k, v := range methods {
		next[k] = v
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.methods = next
}

// LoginMethod returns the login method registered under name.
func (m *Manager) LoginMethod(name string) (Method, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	meth, ok := m.methods[name]
	return meth, ok
}

// Register adds a login method.
func (m *Manager) Register(name string, meth Method) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.methods[name] = meth
}

func (m *Manager) method(name string) (Method, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	meth, ok := m.methods[name]
	if !ok {
		return nil, probes.Errorf(probes.ClassConfig, "login method %q is not available", name)
	}
	return meth, nil
}

// keyLock serialises logins of one account, so concurrent probes of a tenant
// do not log in twice.
func (m *Manager) keyLock(key string) *sync.Mutex {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.locks[key]
	if !ok {
		l = &sync.Mutex{}
		m.locks[key] = l
	}
	return l
}

// Cached returns the cached session of an account, if any.
func (m *Manager) Cached(key string) *Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sessions[key]
}

// Sessions returns the cached sessions by account key (a copy of the map).
func (m *Manager) Sessions() map[string]*Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]*Session, len(m.sessions))
	for k, s := range m.sessions {
		out[k] = s
	}
	return out
}

// Forget drops the cached session of an account.
func (m *Manager) Forget(key string) {
	m.storeMu.Lock()
	defer m.storeMu.Unlock()
	m.mu.Lock()
	old, had := m.sessions[key]
	delete(m.sessions, key)
	m.mu.Unlock()
	if had && persisted(old.Method) {
		m.persistDelete(key)
	}
}

func (m *Manager) store(key string, s *Session) {
	m.storeMu.Lock()
	defer m.storeMu.Unlock()
	m.mu.Lock()
	old := m.sessions[key]
	m.sessions[key] = s
	m.mu.Unlock()
	switch {
	case persisted(s.Method):
		m.persistSave(key, s)
	case old != nil && persisted(old.Method):
		m.persistDelete(key)
	}
}

// Login performs a fresh login with the account's method and caches it.
func (m *Manager) Login(ctx context.Context, acct Account, rec *probes.Recorder) (*Session, error) {
	l := m.keyLock(acct.Key)
	l.Lock()
	defer l.Unlock()
	return m.login(ctx, acct, rec, m.Cached(acct.Key))
}

// login logs in afresh; prev is the session the new one replaces (revoked
// once the new one works).
func (m *Manager) login(ctx context.Context, acct Account, rec *probes.Recorder, prev *Session) (*Session, error) {
	meth, err := m.method(acct.Config.Method)
	if err != nil {
		rec.AddStep(StepLogin, 0, err)
		return nil, err
	}
	rec.SetMethod(acct.Config.Method)
	rec.Scrub(acct.Secrets()...)
	acct.Instance = m.Instance
	if err := m.spend(ctx, acct.Config.Method, acct.Key, m.Cached(acct.Key) == nil, rec); err != nil {
		rec.AddStep(StepLogin, 0, err)
		if be, ok := err.(*BudgetError); ok {
			rec.Signal(probes.SignalNextLoginSeconds, be.Next.Seconds())
		}
		return nil, err
	}
	sess, err := meth.Login(ctx, m, acct, rec)
	m.noteLogin(acct.Config.Method, acct.Key, err)
	rec.Count(loginCountName(acct.Config.Method, err == nil), 1)
	if err != nil {
		return nil, err
	}
	sess.Method = acct.Config.Method
	if sess.HomeserverURL == "" {
		sess.HomeserverURL = acct.HomeserverURL
	}
	if sess.LoggedIn.IsZero() {
		sess.LoggedIn = m.now()
	}
	m.store(acct.Key, sess)
	rec.Scrub(sess.AccessToken, sess.RefreshToken)
	if prev != nil && prev.AccessToken != sess.AccessToken {
		m.revokeReplaced(ctx, prev, rec)
	}
	return sess, nil
}

// revoker returns the Revoker of a session's method, if it has one.
func (m *Manager) revoker(sess *Session) Revoker {
	if sess == nil || sess.Method == "" {
		return nil
	}
	meth, err := m.method(sess.Method)
	if err != nil {
		return nil
	}
	r, _ := meth.(Revoker)
	return r
}

// revokeReplaced ends a replaced session at the server: best effort, a step
// of its own that never fails the run, counted by result.
func (m *Manager) revokeReplaced(ctx context.Context, prev *Session, rec *probes.Recorder) {
	r := m.revoker(prev)
	if r == nil {
		return
	}
	rec.Scrub(prev.AccessToken, prev.RefreshToken)
	err := rec.SoftStep(StepTokenRevoke, func() error {
		rctx, cancel := context.WithTimeout(ctx, revokeTimeout)
		defer cancel()
		return r.Revoke(rctx, m, prev)
	})
	if err != nil {
		rec.Count(CountRevocationPrefix+"failure", 1)
		return
	}
	rec.Count(CountRevocationPrefix+"success", 1)
	rec.Note("replaced session revoked")
}

// RevokeAll ends every held session whose method can revoke (the daemon on
// SIGTERM, `mxprobe run` before it exits) and forgets them; other sessions
// stay cached for the caller to log out or keep. It returns
// how many revocations succeeded and failed.
func (m *Manager) RevokeAll(ctx context.Context) (ok, failed int) {
	m.mu.Lock()
	held := make(map[string]*Session, len(m.sessions))
	for k, s := range m.sessions {
		held[k] = s
	}
	m.mu.Unlock()
	for key, s := range held {
		l := m.keyLock(key)
		l.Lock()
		// Sessions without a revocation endpoint (password, token,
		// appservice) stay cached: the caller logs them out or keeps them.
		if r := m.revoker(s); r != nil && m.Cached(key) == s {
			rctx, cancel := context.WithTimeout(ctx, revokeTimeout)
			if err := r.Revoke(rctx, m, s); err != nil {
				failed++
			} else {
				ok++
			}
			cancel()
			m.Forget(key)
		}
		l.Unlock()
	}
	return ok, failed
}

// LoginCountPrefix prefixes the Result.Counts keys that count logins by method
// and result: "login:<method>:success" / "login:<method>:failure".
const LoginCountPrefix = probes.CountLoginPrefix

func loginCountName(method string, ok bool) string {
	if ok {
		return LoginCountPrefix + method + ":success"
	}
	return LoginCountPrefix + method + ":failure"
}

// Session returns the cached session, refreshing it when it is about to
// expire, or logs in when there is none.
func (m *Manager) Session(ctx context.Context, acct Account, rec *probes.Recorder) (*Session, error) {
	l := m.keyLock(acct.Key)
	l.Lock()
	defer l.Unlock()
	sess := m.restoredFor(acct, m.Cached(acct.Key))
	if sess == nil {
		return m.login(ctx, acct, rec, nil)
	}
	rec.Scrub(append(acct.Secrets(), sess.AccessToken, sess.RefreshToken)...)
	if !sess.Expiry.IsZero() && time.Until(sess.Expiry) < m.RefreshBefore {
		return m.renew(ctx, acct, sess, rec)
	}
	if sess.restored {
		return m.resume(ctx, acct, sess, rec)
	}
	return sess, nil
}

// Recover is called after the homeserver answered M_UNKNOWN_TOKEN for
// stale: it drops that session, refreshes (when the method can) or logs in
// again, and counts the refresh. If another probe already replaced the
// session, the new one is returned as is.
func (m *Manager) Recover(ctx context.Context, acct Account, stale *Session, rec *probes.Recorder) (*Session, error) {
	l := m.keyLock(acct.Key)
	l.Lock()
	defer l.Unlock()
	cur := m.Cached(acct.Key)
	if cur != nil && stale != nil && cur.AccessToken != stale.AccessToken {
		return cur, nil
	}
	m.Forget(acct.Key)
	if stale == nil {
		stale = cur
	}
	return m.renew(ctx, acct, stale, rec)
}

func (m *Manager) renew(ctx context.Context, acct Account, sess *Session, rec *probes.Recorder) (*Session, error) {
	rec.Count(probes.CountTokenRefresh, 1)
	if sess != nil && sess.RefreshToken != "" {
		if meth, err := m.method(acct.Config.Method); err == nil {
			if r, ok := meth.(Refresher); ok {
				ns, err := r.Refresh(ctx, m, acct, sess, rec)
				if err == nil {
					ns.Method = acct.Config.Method
					if ns.LoggedIn.IsZero() { // a refresh continues the login's session
						ns.LoggedIn = sess.LoggedIn
					}
					if ns.HomeserverURL == "" {
						ns.HomeserverURL = acct.HomeserverURL
					}
					m.store(acct.Key, ns)
					return ns, nil
				}
				rec.Note("refresh failed, logging in again")
			}
		}
	}
	return m.login(ctx, acct, rec, sess)
}

// Client returns a mautrix client for a session.
func (m *Manager) Client(sess *Session) (*mautrix.Client, error) {
	cli, err := mxclient.New(sess.HomeserverURL, m.HTTP)
	if err != nil {
		return nil, err
	}
	cli.AccessToken = sess.AccessToken
	cli.UserID = id.UserID(sess.UserID)
	cli.DeviceID = id.DeviceID(sess.DeviceID)
	// An application service asserts the identity it acts as on every request.
	cli.SetAppServiceUserID = sess.Method == config.MethodAppService
	return cli, nil
}

// Whoami proves a session's token and checks the user id against the
// expected one: a different localpart or domain fails as identity_mismatch.
func (m *Manager) Whoami(ctx context.Context, acct Account, sess *Session) error {
	cli, err := m.Client(sess)
	if err != nil {
		return err
	}
	resp, err := whoami(ctx, cli)
	if err != nil {
		return err
	}
	if resp.UserID == "" {
		return probes.Errorf(probes.ClassBadResponse, "whoami answered without a user_id")
	}
	if want := acct.ExpectedUserID(); want != "" {
		got := string(resp.UserID)
		if !strings.Contains(want, ":") {
			got, _, _ = strings.Cut(got, ":")
		}
		if got != want {
			return probes.Errorf(probes.ClassIdentityMismatch,
				"whoami says %s, expected %s (domain or localpart mismatch)", resp.UserID, want)
		}
	}
	sess.UserID = string(resp.UserID)
	if resp.DeviceID != "" {
		sess.DeviceID = string(resp.DeviceID)
	}
	return nil
}

// PasswordMethod is m.login.password against the homeserver's client API.
type PasswordMethod struct{}

// Login implements Method.
func (PasswordMethod) Login(ctx context.Context, m *Manager, acct Account, rec *probes.Recorder) (*Session, error) {
	var sess *Session
	err := rec.Step(StepLogin, func() error {
		var err error
		sess, err = PasswordLogin(ctx, m, acct)
		return err
	})
	if probes.Classify(err) == probes.ClassRateLimited {
		rec.Count(CountRateLimitedLogin, 1)
	}
	return sess, err
}

// PasswordLogin does one m.login.password request (also used by the MAS
// compatibility method, which MAS serves on the same path).
func PasswordLogin(ctx context.Context, m *Manager, acct Account) (*Session, error) {
	if acct.Password == "" {
		return nil, probes.Errorf(probes.ClassConfig, "no password configured")
	}
	cli, err := mxclient.New(acct.HomeserverURL, m.HTTP)
	if err != nil {
		return nil, err
	}
	var resp *mautrix.RespLogin
	err = mxclient.Call(ctx, nil, func(ctx context.Context) error {
		var err error
		resp, err = cli.Login(ctx, &mautrix.ReqLogin{
			Type:                     mautrix.AuthTypePassword,
			Identifier:               mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: acct.Config.User},
			Password:                 string(acct.Password),
			DeviceID:                 id.DeviceID(acct.DeviceID()),
			InitialDeviceDisplayName: "mxprobe",
		})
		return err
	})
	if err != nil {
		var pe *probes.Error
		if asProbeErr(err, &pe) && pe.Status == http.StatusForbidden {
			pe.Class = probes.ClassAuthFailed
		}
		return nil, err
	}
	if resp.AccessToken == "" {
		return nil, probes.Errorf(probes.ClassBadResponse, "login answered without an access_token")
	}
	s := &Session{
		UserID: string(resp.UserID), AccessToken: resp.AccessToken, DeviceID: string(resp.DeviceID),
		RefreshToken: resp.RefreshToken, HomeserverURL: acct.HomeserverURL,
	}
	if resp.ExpiresInMS > 0 {
		s.Expiry = time.Now().Add(time.Duration(resp.ExpiresInMS) * time.Millisecond)
	}
	return s, nil
}

// CountRateLimitedLogin counts a login the homeserver refused with 429
// (mxprobe_rate_limited_total{step="login"}; a peer's is "peer_login").
const CountRateLimitedLogin = probes.CountRateLimited + ":login"

// TokenMethod uses a fixed access token; it cannot log in again, so an
// expired token fails as auth_failed.
type TokenMethod struct{}

// Login implements Method.
func (TokenMethod) Login(ctx context.Context, m *Manager, acct Account, rec *probes.Recorder) (*Session, error) {
	var sess *Session
	err := rec.Step(StepLogin, func() error {
		if acct.Token == "" {
			return probes.Errorf(probes.ClassConfig, "no access token configured")
		}
		if st := m.Cached(acct.Key); st == nil || st.AccessToken != string(acct.Token) {
			sess = &Session{AccessToken: string(acct.Token), HomeserverURL: acct.HomeserverURL}
			return nil
		}
		// The same fixed token was already rejected: nothing new to try.
		return probes.Errorf(probes.ClassAuthFailed, "the configured access token is no longer valid")
	})
	return sess, err
}

func asProbeErr(err error, target **probes.Error) bool {
	pe, ok := err.(*probes.Error)
	if ok {
		*target = pe
	}
	return ok
}

// String keeps secrets out of accidental prints.
func (s *Session) String() string {
	if s == nil {
		return "<nil session>"
	}
	return fmt.Sprintf("session{user=%s device=%s method=%s}", s.UserID, s.DeviceID, s.Method)
}

// String keeps secrets out of accidental prints.
func (a Account) String() string {
	return fmt.Sprintf("account{%s user=%s method=%s}", a.Key, a.Config.User, a.Config.Method)
}

// whoami asks the homeserver whose token cli carries.
func whoami(ctx context.Context, cli *mautrix.Client) (*mautrix.RespWhoami, error) {
	var resp *mautrix.RespWhoami
	err := mxclient.Call(ctx, nil, func(ctx context.Context) error {
		var err error
		resp, err = cli.Whoami(ctx)
		return err
	})
	return resp, err
}
