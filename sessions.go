package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// Browser sessions. The cookie holds a 256-bit random secret; the database
// holds only its SHA-256, so a copy of the file signs nobody in.
const (
	sessionCookieName      = "tokend_session"
	sessionCookieNameHTTPS = "__Host-tokend_session" // the prefix binds it to this host, Secure, Path=/
	sessionSecretBytes     = 32
	// sessionTouchEvery is how stale LastSeenAt may grow before a request
	// writes it again: the idle lifetime needs no write per request.
	sessionTouchEvery = time.Minute
	// sudoWindow is how long after giving the password a session may do
	// sensitive things without giving it again.
	sudoWindow = time.Hour
	// sessionPurgeBatch bounds the keys one purge transaction looks at, so
	// that a purge never holds the write lock for long.
	sessionPurgeBatch = 1000
)

// sessionHash is the SHA-256 of a session secret: the key of the sessions bucket.
type sessionHash [sha256.Size]byte

// newSessionSecret returns a fresh session secret and its hash.
func newSessionSecret() (string, sessionHash, error) {
	b := make([]byte, sessionSecretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", sessionHash{}, fmt.Errorf("read random bytes: %w", err)
	}
	secret := base64.RawURLEncoding.EncodeToString(b)
	return secret, sha256.Sum256([]byte(secret)), nil
}

// parseSessionSecret returns the hash of a cookie value that has the shape
// of a session secret, and false for anything else.
func parseSessionSecret(v string) (sessionHash, bool) {
	if len(v) != base64.RawURLEncoding.EncodedLen(sessionSecretBytes) {
		return sessionHash{}, false
	}
	if _, err := base64.RawURLEncoding.DecodeString(v); err != nil {
		return sessionHash{}, false
	}
	return sha256.Sum256([]byte(v)), true
}

// String returns h in hex: the name a session goes by in forms.
func (h sessionHash) String() string { return hex.EncodeToString(h[:]) }

// parseSessionID reads a session's name from a form.
func parseSessionID(s string) (sessionHash, bool) {
	var h sessionHash
	if hex.DecodedLen(len(s)) != len(h) {
		return h, false
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, false
	}
	return h, true
}

// live reports whether the session still signs its user in at now.
func (rec *sessionRecord) live(now time.Time, idle time.Duration) bool {
	return now.Before(rec.ExpiresAt) && now.Sub(rec.LastSeenAt) < idle
}

// session is the signed-in person behind a page request.
type session struct {
	hash sessionHash
	rec  sessionRecord
	user userRecord
}

// sudo reports whether the session gave its password recently enough for
// sensitive actions.
func (sess *session) sudo(now time.Time) bool {
	return now.Sub(sess.rec.SignedInAt) < sudoWindow
}

// ---- store ----

// storedSession is a session with the hash it is stored under.
type storedSession struct {
	hash sessionHash
	rec  sessionRecord
}

// passwordChange is a new password and what should go with the old one.
type passwordChange struct {
	hash         string
	at           time.Time
	revokeTokens bool // delete every token of the user
	endSessions  bool // delete every session of the user but keep
	keep         sessionHash
}

// The bbolt engine keeps sessions as boltsessions.go says.

// ---- requests ----

// isHTTPS reports whether r reached tokend over HTTPS: directly, or through
// a proxy that says so when the operator trusts it with -trust-proxy.
func (s *server) isHTTPS(r *http.Request) bool {
	if r.TLS != nil {
		return true
	}
	return s.cfg.TrustProxy && strings.EqualFold(strings.TrimSpace(r.Header.Get("X-Forwarded-Proto")), "https")
}

// clientAddr returns the address of the client behind r: the peer, or with
// -trust-proxy the last address the proxy put in X-Forwarded-For (earlier
// ones come from the client and prove nothing).
func (s *server) clientAddr(r *http.Request) string {
	if s.cfg.TrustProxy {
		if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
			hops := strings.Split(xff[len(xff)-1], ",")
			if ip := net.ParseIP(strings.TrimSpace(hops[len(hops)-1])); ip != nil {
				return ip.String()
			}
		}
	}
	return clientIP(r)
}

// sessionCookie returns the name of the session cookie for r.
func (s *server) sessionCookie(r *http.Request) string {
	if s.isHTTPS(r) {
		return sessionCookieNameHTTPS
	}
	return sessionCookieName
}

// hasSessionCookie reports whether r carries a session cookie at all.
func (s *server) hasSessionCookie(r *http.Request) bool {
	_, err := r.Cookie(s.sessionCookie(r))
	return err == nil
}

// currentSession returns the live session r's cookie names, or nil when
// there is none. An error means storage failed. A request seen more than
// sessionTouchEvery after the last one is recorded, for the idle lifetime.
func (s *server) currentSession(r *http.Request) (*session, error) {
	c, err := r.Cookie(s.sessionCookie(r))
	if err != nil {
		return nil, nil
	}
	h, ok := parseSessionSecret(c.Value)
	if !ok {
		return nil, nil
	}
	rec, u, err := s.store.SessionByHash(h)
	if errors.Is(err, errNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up session: %w", err)
	}
	now := s.now()
	if !rec.live(now, s.cfg.SessionIdle) {
		return nil, nil
	}
	addr := s.clientAddr(r)
	if now.Sub(rec.LastSeenAt) >= sessionTouchEvery || rec.Addr != addr {
		// Recording it is best effort: a full disk must not stop a page
		// from showing. The first failure in a row is a warning.
		err := s.store.TouchSession(h, now, addr)
		switch {
		case err == nil || errors.Is(err, errNotFound):
			s.touchFailing.Store(false)
		case s.touchFailing.CompareAndSwap(false, true):
			s.log.Warn("record session last seen", "err", err)
		default:
			s.log.Debug("record session last seen", "err", err)
		}
		rec.LastSeenAt, rec.Addr = now, addr
	}
	return &session{hash: h, rec: rec, user: u}, nil
}

// startSession signs u in: a new session with a new secret, replacing old
// (the session the browser had, if any) so that an id planted before
// sign-in is worth nothing after it.
func (s *server) startSession(w http.ResponseWriter, r *http.Request, u userRecord, old *session) error {
	secret, h, err := newSessionSecret()
	if err != nil {
		return err
	}
	now := s.now()
	rec := sessionRecord{
		User:       u.ID,
		CreatedAt:  now,
		ExpiresAt:  now.Add(s.cfg.SessionLifetime),
		LastSeenAt: now,
		SignedInAt: now,
		Addr:       s.clientAddr(r),
		Agent:      browserLabel(r.UserAgent()),
	}
	var replaced *sessionHash
	if old != nil {
		replaced = &old.hash
	} else if c, err := r.Cookie(s.sessionCookie(r)); err == nil {
		if oh, ok := parseSessionSecret(c.Value); ok {
			replaced = &oh
		}
	}
	if err := s.store.CreateSession(s.actorOf(r, u, viaPage), h, rec, replaced, s.cfg.MaxSessionsPerUser); err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	s.setCookie(w, r, sessionCookieName, secret, rec.ExpiresAt.Sub(now))
	s.log.Info("signed in", "user_id", u.ID, "remote", rec.Addr)
	return nil
}

// endSession deletes sess (when not nil) and clears the cookie.
func (s *server) endSession(w http.ResponseWriter, r *http.Request, sess *session) error {
	s.setCookie(w, r, sessionCookieName, "", -1)
	if sess == nil {
		return nil
	}
	if err := s.store.DeleteSession(s.actorOf(r, sess.user, viaPage), sess.hash, anyOwner); err != nil && !errors.Is(err, errNotFound) {
		return fmt.Errorf("delete session: %w", err)
	}
	s.log.Info("signed out", "user_id", sess.user.ID, "remote", s.clientAddr(r))
	return nil
}

// setCookie sets cookie name (with the __Host- prefix over HTTPS) to value
// for maxAge; a negative maxAge deletes it. Every cookie of tokend is
// HttpOnly, SameSite=Lax and Path=/, and Secure over HTTPS, and its answer
// is never cached.
func (s *server) setCookie(w http.ResponseWriter, r *http.Request, name, value string, maxAge time.Duration) {
	s.setCookieSameSite(w, r, name, value, maxAge, http.SameSiteLaxMode)
}

// setCookieSameSite is setCookie with the given SameSite.
func (s *server) setCookieSameSite(w http.ResponseWriter, r *http.Request, name, value string, maxAge time.Duration, sameSite http.SameSite) {
	secure := s.isHTTPS(r)
	if secure {
		name = "__Host-" + name
	}
	c := &http.Cookie{
		Name:     name,
		Value:    value,
		Path:     "/",
		HttpOnly: true,
		Secure:   secure,
		SameSite: sameSite,
	}
	if maxAge < 0 {
		c.MaxAge = -1
	} else {
		c.MaxAge = int(maxAge / time.Second)
	}
	http.SetCookie(w, c)
	// No cache may keep an answer that sets a cookie, nor replay it.
	w.Header().Set("Cache-Control", "no-store")
}

// cookieValue returns the value of cookie name as setCookie named it for r.
func (s *server) cookieValue(r *http.Request, name string) string {
	if s.isHTTPS(r) {
		name = "__Host-" + name
	}
	c, err := r.Cookie(name)
	if err != nil {
		return ""
	}
	return c.Value
}

// errSessionEnded answers POST /api/v1/tokens with a session cookie that no
// longer signs anybody in.
var errSessionEnded = &authError{status: http.StatusUnauthorized,
	detail: "the session cookie has expired or been signed out: sign in again, or send Authorization: Bearer <token>"}

// apiSessionUser authenticates POST /api/v1/tokens by the session cookie of
// a signed-in browser. It reports false, with no error, when the request
// carries an Authorization header or no session cookie: the other ways in
// then apply. A cross-origin request is refused (403), and so is a session
// past its sudo window, since making a token is a sensitive action.
func (s *server) apiSessionUser(r *http.Request) (userRecord, bool, error) {
	if r.Header.Get("Authorization") != "" || !s.hasSessionCookie(r) {
		return userRecord{}, false, nil
	}
	if err := s.cop.Check(r); err != nil {
		return userRecord{}, false, clientError(http.StatusForbidden, "cross-origin request refused: a session cookie only works from tokend's own pages")
	}
	sess, err := s.currentSession(r)
	if err != nil {
		return userRecord{}, false, err
	}
	if sess == nil {
		return userRecord{}, false, errSessionEnded
	}
	if !sess.sudo(s.now()) {
		return userRecord{}, false, clientError(http.StatusForbidden, "you signed in more than an hour ago: give your password again on the token page, or send HTTP Basic name:password")
	}
	return sess.user, true, nil
}
