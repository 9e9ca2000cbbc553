package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
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

// sessionOwnerKey is the key of h in sessions_by_owner: owner ‖ hash.
func sessionOwnerKey(user uint64, h sessionHash) []byte {
	k := make([]byte, 8+len(h))
	binary.BigEndian.PutUint64(k, user)
	copy(k[8:], h[:])
	return k
}

// sessionOwnerValue is the value of a session's sessions_by_owner entry:
// its creation time, so that the oldest is found from the index alone.
func sessionOwnerValue(rec *sessionRecord) []byte {
	return itob(uint64(max(unixNano(rec.CreatedAt), 0)))
}

// putSession writes rec under h with its index entry.
func putSession(tx *bolt.Tx, h sessionHash, rec *sessionRecord) error {
	if err := putJSON(tx.Bucket(bucketSessions), h[:], rec); err != nil {
		return err
	}
	return tx.Bucket(bucketSessionsByOwner).Put(sessionOwnerKey(rec.User, h), sessionOwnerValue(rec))
}

// deleteSession deletes the session under h, of user, with its index entry.
func deleteSession(tx *bolt.Tx, h sessionHash, user uint64) error {
	if err := tx.Bucket(bucketSessions).Delete(h[:]); err != nil {
		return err
	}
	return tx.Bucket(bucketSessionsByOwner).Delete(sessionOwnerKey(user, h))
}

// ownedSession is a session as sessions_by_owner lists it.
type ownedSession struct {
	hash    sessionHash
	created uint64 // unix ns
}

// sessionsIndexOf returns user's sessions from sessions_by_owner, reading
// no other user's entries and no session record.
func sessionsIndexOf(tx *bolt.Tx, user uint64) []ownedSession {
	var out []ownedSession
	prefix := itob(user)
	c := tx.Bucket(bucketSessionsByOwner).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(k) != 8+sha256.Size || len(v) != 8 {
			continue
		}
		out = append(out, ownedSession{hash: sessionHash(k[8:]), created: btoi(v)})
	}
	return out
}

// CreateSession stores rec under h. When replaced is not nil, that session
// is deleted in the same transaction (a new id at every sign-in). When the
// user then holds more than limit sessions (0: no limit), the oldest end.
// It returns errNotFound when rec.User does not exist, and
// errSpaceReserved when the database is too full for creations.
func (s *boltStore) CreateSession(h sessionHash, rec sessionRecord, replaced *sessionHash, limit int) error {
	return s.update(func(tx *bolt.Tx) error {
		if err := s.roomToCreate(tx); err != nil {
			return err
		}
		if tx.Bucket(bucketUsers).Get(itob(rec.User)) == nil {
			return errNotFound
		}
		sessions := tx.Bucket(bucketSessions)
		if replaced != nil {
			var old sessionRecord
			switch err := getJSON(sessions, replaced[:], &old); {
			case err == nil:
				if err := deleteSession(tx, *replaced, old.User); err != nil {
					return err
				}
			case !errors.Is(err, errNotFound):
				return err
			}
		}
		if sessions.Get(h[:]) != nil {
			return errors.New("session hash collision")
		}
		if err := putSession(tx, h, &rec); err != nil {
			return err
		}
		if limit <= 0 {
			return nil
		}
		owned := sessionsIndexOf(tx, rec.User)
		if len(owned) <= limit {
			return nil
		}
		// The oldest go; the new one is the newest, and never goes.
		slices.SortFunc(owned, func(a, b ownedSession) int {
			return cmp.Or(cmp.Compare(a.created, b.created), bytes.Compare(a.hash[:], b.hash[:]))
		})
		excess := len(owned) - limit
		for _, o := range owned {
			if excess == 0 {
				break
			}
			if o.hash == h {
				continue
			}
			if err := deleteSession(tx, o.hash, rec.User); err != nil {
				return err
			}
			excess--
		}
		return nil
	})
}

// SessionByHash returns the session stored under h and its user, or
// errNotFound. It does not check the lifetimes.
func (s *boltStore) SessionByHash(h sessionHash) (sessionRecord, userRecord, error) {
	var rec sessionRecord
	var u userRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		if err := getJSON(tx.Bucket(bucketSessions), h[:], &rec); err != nil {
			return err
		}
		return getJSON(tx.Bucket(bucketUsers), itob(rec.User), &u)
	})
	return rec, u, err
}

// updateSession applies change to the session under h. It returns
// errNotFound when there is none.
func (s *boltStore) updateSession(h sessionHash, change func(*sessionRecord)) error {
	return s.update(func(tx *bolt.Tx) error {
		sessions := tx.Bucket(bucketSessions)
		var rec sessionRecord
		if err := getJSON(sessions, h[:], &rec); err != nil {
			return err
		}
		change(&rec)
		return putJSON(sessions, h[:], &rec)
	})
}

// TouchSession records that the session under h was seen at now from addr.
// It returns errNotFound when there is no such session.
func (s *boltStore) TouchSession(h sessionHash, now time.Time, addr string) error {
	return s.updateSession(h, func(rec *sessionRecord) {
		rec.LastSeenAt = now
		rec.Addr = addr
	})
}

// ConfirmSession records that the session under h gave its password at
// now, which opens sudo mode. It returns errNotFound when there is no such
// session.
func (s *boltStore) ConfirmSession(h sessionHash, now time.Time) error {
	return s.updateSession(h, func(rec *sessionRecord) {
		rec.SignedInAt = now
		rec.LastSeenAt = now
	})
}

// DeleteSession deletes the session under h if it belongs to user (or user
// is anyOwner). It returns errNotFound otherwise.
func (s *boltStore) DeleteSession(h sessionHash, user uint64) error {
	return s.update(func(tx *bolt.Tx) error {
		sessions := tx.Bucket(bucketSessions)
		var rec sessionRecord
		if err := getJSON(sessions, h[:], &rec); err != nil {
			return err
		}
		if user != anyOwner && rec.User != user {
			return errNotFound
		}
		return deleteSession(tx, h, rec.User)
	})
}

// storedSession is a session with the hash it is stored under.
type storedSession struct {
	hash sessionHash
	rec  sessionRecord
}

// SessionsOf returns the sessions of user, newest first, expired ones
// included (the caller knows the lifetimes). It reads only user's
// sessions, through sessions_by_owner.
func (s *boltStore) SessionsOf(user uint64) ([]storedSession, error) {
	var out []storedSession
	err := s.db.View(func(tx *bolt.Tx) error {
		sessions := tx.Bucket(bucketSessions)
		for _, o := range sessionsIndexOf(tx, user) {
			var rec sessionRecord
			if err := getJSON(sessions, o.hash[:], &rec); err != nil {
				return fmt.Errorf("session of sessions_by_owner: %w", asCorruption(err))
			}
			out = append(out, storedSession{hash: o.hash, rec: rec})
		}
		return nil
	})
	slices.SortFunc(out, func(a, b storedSession) int { return b.rec.CreatedAt.Compare(a.rec.CreatedAt) })
	return out, err
}

// EndOtherSessions deletes every session of user but keep and returns how
// many it deleted.
func (s *boltStore) EndOtherSessions(user uint64, keep sessionHash) (int, error) {
	var n int
	err := s.update(func(tx *bolt.Tx) error {
		var err error
		n, err = deleteSessionsExcept(tx, user, keep)
		return err
	})
	return n, err
}

// deleteSessionsExcept deletes every session of user but keep (the zero
// hash keeps none) and returns how many it deleted. It reads only user's
// entries of sessions_by_owner.
func deleteSessionsExcept(tx *bolt.Tx, user uint64, keep sessionHash) (int, error) {
	n := 0
	for _, o := range sessionsIndexOf(tx, user) { // collected before anything is deleted
		if o.hash == keep {
			continue
		}
		if err := deleteSession(tx, o.hash, user); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// passwordChange is a new password and what should go with the old one.
type passwordChange struct {
	hash         string
	at           time.Time
	revokeTokens bool // delete every token of the user
	endSessions  bool // delete every session of the user but keep
	keep         sessionHash
}

// ChangePassword sets the password hash of user id and, as c says,
// revokes their tokens and ends their other sessions; the kept session
// counts as having just given its password. It returns how many tokens and
// sessions went, or errNotFound for an unknown user.
func (s *boltStore) ChangePassword(id uint64, c passwordChange) (tokens, sessions int, err error) {
	err = s.update(func(tx *bolt.Tx) error {
		users := tx.Bucket(bucketUsers)
		var u userRecord
		if err := getJSON(users, itob(id), &u); err != nil {
			return err
		}
		u.PasswordHash = c.hash
		u.PasswordChangedAt = c.at
		if err := putJSON(users, itob(id), &u); err != nil {
			return err
		}
		if c.revokeTokens {
			tokens = len(tokenIDsOf(tx, id))
			if err := s.deleteTokensOf(tx, id); err != nil {
				return err
			}
		}
		if c.endSessions {
			var err error
			if sessions, err = deleteSessionsExcept(tx, id, c.keep); err != nil {
				return err
			}
		}
		b := tx.Bucket(bucketSessions)
		var rec sessionRecord
		if c.keep != (sessionHash{}) && getJSON(b, c.keep[:], &rec) == nil && rec.User == id {
			rec.SignedInAt, rec.LastSeenAt = c.at, c.at
			return putJSON(b, c.keep[:], &rec)
		}
		return nil
	})
	return tokens, sessions, err
}

// PurgeSessions deletes every session that has passed its absolute expiry
// or been idle for idle at now, with its index entry, and returns how
// many it deleted. It looks at most sessionPurgeBatch sessions per write
// transaction, so that many sessions never hold the write lock for long,
// and stops early, without error, when ctx ends.
func (s *boltStore) PurgeSessions(ctx context.Context, now time.Time, idle time.Duration) (int, error) {
	total := 0
	var after []byte // the last key a batch looked at
	for ctx.Err() == nil {
		var done bool
		err := s.update(func(tx *bolt.Tx) error {
			sessions := tx.Bucket(bucketSessions)
			c := sessions.Cursor()
			k, v := c.First()
			if after != nil {
				if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			type doomed struct {
				key  []byte
				user uint64
				read bool
			}
			var batch []doomed
			for n := 0; n < sessionPurgeBatch && k != nil; n++ {
				var rec sessionRecord
				switch err := json.Unmarshal(v, &rec); {
				case err != nil || len(k) != sha256.Size:
					batch = append(batch, doomed{key: slices.Clone(k)})
				case !rec.live(now, idle):
					batch = append(batch, doomed{key: slices.Clone(k), user: rec.User, read: true})
				}
				after = slices.Clone(k)
				k, v = c.Next()
			}
			done = k == nil
			for _, d := range batch {
				var err error
				if d.read {
					err = deleteSession(tx, sessionHash(d.key), d.user)
				} else {
					err = sessions.Delete(d.key) // unreadable: no owner to find its index entry by
				}
				if err != nil {
					return err
				}
			}
			total += len(batch)
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("purge sessions: %w", err)
		}
		if done {
			break
		}
	}
	return total, nil
}

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
	if err := s.store.CreateSession(h, rec, replaced, s.cfg.MaxSessionsPerUser); err != nil {
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
	if err := s.store.DeleteSession(sess.hash, anyOwner); err != nil && !errors.Is(err, errNotFound) {
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
		SameSite: http.SameSiteLaxMode,
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
