package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/julienschmidt/httprouter"
)

// The token API: /api/v1/user, /api/v1/token and /api/v1/tokens, token
// creation (shared with the pages and the command line), and leak reports.

const (
	maxTokenNameLen = 100 // characters
	maxTokenYears   = 10
)

// tokenJSON is a token as the API shows it.
type tokenJSON struct {
	ID         uint64     `json:"id"`
	Name       string     `json:"name"`
	Scopes     []string   `json:"scopes"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	LastUsedIP *string    `json:"last_used_ip"`
	Hint       string     `json:"hint"`
	Expired    bool       `json:"expired"`
	Token      string     `json:"token,omitempty"`
}

func (s *server) tokenJSON(t tokenRecord) tokenJSON {
	j := tokenJSON{
		ID:         t.ID,
		Name:       t.Name,
		Scopes:     t.Scopes,
		CreatedAt:  t.CreatedAt.UTC(),
		ExpiresAt:  utcPtr(t.ExpiresAt),
		LastUsedAt: utcPtr(t.LastUsedAt),
		Hint:       t.Hint,
		Expired:    t.expired(s.now()),
	}
	if j.Scopes == nil {
		j.Scopes = []string{}
	}
	if s.withPendingUse(&t) {
		j.LastUsedAt = utcPtr(t.LastUsedAt)
	}
	if t.LastUsedIP != "" {
		ip := t.LastUsedIP
		j.LastUsedIP = &ip
	}
	return j
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

type userJSON struct {
	ID        uint64    `json:"id"`
	Name      string    `json:"name"`
	Admin     bool      `json:"admin"`
	CreatedAt time.Time `json:"created_at"`
}

func (s *server) handleGetUser(w http.ResponseWriter, r *http.Request, _ httprouter.Params, c *caller) {
	s.writeJSON(w, r, http.StatusOK, userJSON{ID: c.user.ID, Name: c.user.Name, Admin: c.user.Admin, CreatedAt: c.user.CreatedAt.UTC()})
}

func (s *server) handleGetSelf(w http.ResponseWriter, r *http.Request, _ httprouter.Params, c *caller) {
	t, err := s.store.TokenByID(c.token.ID, c.user.ID)
	if err != nil {
		// Revoked since it was verified a moment ago.
		s.writeError(w, r, notFoundAs(err, "the token was revoked"))
		return
	}
	s.writeJSON(w, r, http.StatusOK, s.tokenJSON(t))
}

func (s *server) handleRevokeSelf(w http.ResponseWriter, r *http.Request, _ httprouter.Params, c *caller) {
	if _, err := s.store.DeleteToken(s.actorOf(r, c.user, viaAPI), c.token.ID, c.user.ID); err != nil && !errors.Is(err, errNotFound) {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("token revoked", "token_id", c.token.ID, "user_id", c.user.ID, "by", "itself")
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) handleRotateSelf(w http.ResponseWriter, r *http.Request, _ httprouter.Params, c *caller) {
	s.rotate(w, r, c.token.ID, c)
}

func (s *server) handleListTokens(w http.ResponseWriter, r *http.Request, _ httprouter.Params, c *caller) {
	tokens, err := s.store.TokensByOwner(c.user.ID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]tokenJSON, 0, len(tokens))
	for _, t := range tokens {
		out = append(out, s.tokenJSON(t))
	}
	s.writeJSON(w, r, http.StatusOK, out)
}

// tokenID parses the :id path parameter. A malformed id names no token of
// the caller's, so it is a 404 like any other.
func tokenID(ps httprouter.Params) (uint64, error) {
	id, err := strconv.ParseUint(ps.ByName("id"), 10, 64)
	if err != nil || id == 0 {
		return 0, clientError(http.StatusNotFound, "no token with id %q", truncate(redactTokens(ps.ByName("id")), 40))
	}
	return id, nil
}

func (s *server) handleGetToken(w http.ResponseWriter, r *http.Request, ps httprouter.Params, c *caller) {
	id, err := tokenID(ps)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	t, err := s.store.TokenByID(id, c.user.ID)
	if err != nil {
		s.writeError(w, r, notFoundAs(err, "no token with id %d", id))
		return
	}
	s.writeJSON(w, r, http.StatusOK, s.tokenJSON(t))
}

func (s *server) handleRevokeToken(w http.ResponseWriter, r *http.Request, ps httprouter.Params, c *caller) {
	id, err := tokenID(ps)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if _, err := s.store.DeleteToken(s.actorOf(r, c.user, viaAPI), id, c.user.ID); err != nil {
		s.writeError(w, r, notFoundAs(err, "no token with id %d", id))
		return
	}
	s.log.Info("token revoked", "token_id", id, "user_id", c.user.ID, "by_token", c.token.ID)
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) handleRotateToken(w http.ResponseWriter, r *http.Request, ps httprouter.Params, c *caller) {
	id, err := tokenID(ps)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.rotate(w, r, id, c)
}

// rotate replaces token id of c's user with a new secret. A token may rotate
// only tokens that hold no more than it does: the new secret must not be a
// way to gain scopes or lifetime.
func (s *server) rotate(w http.ResponseWriter, r *http.Request, id uint64, c *caller) {
	if id != c.token.ID {
		target, err := s.store.TokenByID(id, c.user.ID)
		if err != nil {
			s.writeError(w, r, notFoundAs(err, "no token with id %d", id))
			return
		}
		if err := c.mayGrant(target.Scopes, target.ExpiresAt); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	secret, err := s.format.generate()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	t, err := s.store.RotateToken(s.actorOf(r, c.user, viaAPI), id, c.user.ID, hashToken(secret), tokenHint(secret), s.now())
	if err != nil {
		s.writeError(w, r, notFoundAs(err, "no token with id %d", id))
		return
	}
	s.log.Info("token rotated", "old_token_id", id, "token_id", t.ID, "user_id", c.user.ID)
	s.writeSecret(w, r, t, secret)
}

// writeSecret answers 201 with t and, shown this once, its secret.
func (s *server) writeSecret(w http.ResponseWriter, r *http.Request, t tokenRecord, secret string) {
	j := s.tokenJSON(t)
	j.Token = secret
	w.Header().Set("Cache-Control", "no-store")
	s.writeJSON(w, r, http.StatusCreated, j)
}

// notFoundAs gives a not-found error a message naming what was looked for.
func notFoundAs(err error, format string, args ...any) error {
	if errors.Is(err, errNotFound) {
		return clientError(http.StatusNotFound, format, args...)
	}
	return err
}

// mayGrant fails unless c's token holds every scope in scopes and lives at
// least until expires (nil: forever).
func (c *caller) mayGrant(scopes []string, expires *time.Time) error {
	for _, sc := range scopes {
		if !hasScope(c.scopes, sc) {
			return clientError(http.StatusForbidden, "the calling token cannot grant scope %q: it does not hold it", sc)
		}
	}
	if ce := c.token.ExpiresAt; ce != nil && (expires == nil || expires.After(*ce)) {
		return clientError(http.StatusForbidden, "the calling token expires at %s; a token it makes or rotates cannot outlive it", ce.UTC().Format(time.RFC3339))
	}
	return nil
}

// optionalTime is a JSON time that remembers whether it was present, so
// that a missing expires_at can be told from an explicit null.
type optionalTime struct {
	set  bool
	time *time.Time
}

func (o *optionalTime) UnmarshalJSON(b []byte) error {
	o.set = true
	if string(b) == "null" {
		o.time = nil
		return nil
	}
	var text string
	t, err := time.Time{}, json.Unmarshal(b, &text)
	if err == nil {
		t, err = parseRFC3339(text)
	}
	if err != nil {
		return clientError(http.StatusBadRequest, "expires_at must be an RFC 3339 time such as 2030-01-31T12:00:00Z, or null for a token that never expires")
	}
	o.time = &t
	return nil
}

// parseRFC3339 parses an RFC 3339 date-time, such as 2030-01-31T12:00:00Z.
// RFC 3339 §5.6 allows a lower-case "t" and "z", which Go's parser refuses,
// so they are raised first: no other letter can be in a valid time.
func parseRFC3339(s string) (time.Time, error) {
	var t time.Time
	err := t.UnmarshalText([]byte(strings.ToUpper(s)))
	return t, err
}

type createTokenRequest struct {
	Name      string       `json:"name"`
	Scopes    []string     `json:"scopes"`
	ExpiresAt optionalTime `json:"expires_at"`
}

// tokenSpec is a validated request for a new token.
type tokenSpec struct {
	name    string
	scopes  []string
	expires *time.Time
}

// checkTokenSpec validates a token's name, scopes (against reg) and expiry
// for owner at now. Its errors are httpErrors that say what is wrong.
func checkTokenSpec(reg *scopeRegistry, name string, scopes []string, expires *time.Time, owner userRecord, now time.Time) (tokenSpec, error) {
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return tokenSpec{}, clientError(http.StatusBadRequest, "name is required: say what the token is for")
	case !utf8.ValidString(name) || strings.ContainsRune(name, utf8.RuneError):
		return tokenSpec{}, clientError(http.StatusBadRequest, "name must be valid UTF-8")
	case strings.ContainsFunc(name, unicode.IsControl):
		return tokenSpec{}, clientError(http.StatusBadRequest, "name must not contain control characters")
	case utf8.RuneCountInString(name) > maxTokenNameLen:
		return tokenSpec{}, clientError(http.StatusBadRequest, "name must be at most %d characters", maxTokenNameLen)
	}
	norm, err := reg.normalize(scopes)
	if err != nil {
		return tokenSpec{}, clientError(http.StatusBadRequest, "%s", err)
	}
	if hasScope(norm, scopeAdmin) && !owner.Admin {
		return tokenSpec{}, clientError(http.StatusForbidden, "only admins may hold the %q scope", scopeAdmin)
	}
	if expires != nil {
		e := expires.UTC()
		switch {
		case !e.After(now):
			return tokenSpec{}, clientError(http.StatusBadRequest, "expires_at %s is not in the future", e.Format(time.RFC3339))
		case e.After(now.AddDate(maxTokenYears, 0, 0)):
			return tokenSpec{}, clientError(http.StatusBadRequest, "expires_at may be at most %d years ahead; use null for a token that never expires", maxTokenYears)
		}
		expires = &e
	}
	return tokenSpec{name: name, scopes: norm, expires: expires}, nil
}

// handleCreateToken makes a token. The caller proves who they are with a
// Bearer token holding tokens:write, with HTTP Basic name:password so
// that a script can get its first token, or with the session of a
// signed-in browser on tokend's own pages.
func (s *server) handleCreateToken(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	var (
		owner  userRecord
		viaTok *caller
	)
	if len(r.Header.Values("Authorization")) > 1 {
		s.writeAuthError(w, invalidRequest("send one Authorization header, not several"))
		return
	}
	if name, password, ok := r.BasicAuth(); ok {
		u, err := s.signIn(r, name, password)
		if err != nil {
			if err == errBadCredentials {
				w.Header().Set("WWW-Authenticate", basicChallenge)
			}
			s.writeError(w, r, err)
			return
		}
		owner = u
		noteUser(r, u.ID)
	} else if u, ok, err := s.apiSessionUser(r); ok || err != nil {
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		owner = u
		noteUser(r, u.ID)
	} else {
		c := s.bearerCaller(w, r, scopeTokensWrite)
		if c == nil {
			return
		}
		owner, viaTok = c.user, c
	}

	var req createTokenRequest
	if err := decodeJSON(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if !req.ExpiresAt.set {
		s.writeError(w, r, clientError(http.StatusBadRequest, "expires_at is required: an RFC 3339 time, or null for a token that never expires"))
		return
	}
	now := s.now()
	spec, err := checkTokenSpec(s.scopes, req.Name, req.Scopes, req.ExpiresAt.time, owner, now)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if viaTok != nil {
		if err := viaTok.mayGrant(spec.scopes, spec.expires); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	t, secret, err := s.createToken(s.actorOf(r, owner, viaAPI), owner, spec, now)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeSecret(w, r, t, secret)
}

// createToken generates and stores a token for owner.
func (s *server) createToken(by actor, owner userRecord, spec tokenSpec, now time.Time) (tokenRecord, string, error) {
	t, secret, err := newToken(s.store, by, s.format, owner, spec, now, s.cfg.MaxTokensPerUser)
	if err != nil {
		return tokenRecord{}, "", err
	}
	s.log.Info("token created", "token_id", t.ID, "user_id", owner.ID, "scopes", strings.Join(t.Scopes, " "))
	return t, secret, nil
}

// newToken generates a token of format for owner and stores its hash. It
// returns the record and the secret, which exists nowhere else.
func newToken(st store, by actor, format tokenFormat, owner userRecord, spec tokenSpec, now time.Time, limit int) (tokenRecord, string, error) {
	secret, err := format.generate()
	if err != nil {
		return tokenRecord{}, "", err
	}
	t := tokenRecord{
		Owner:     owner.ID,
		Name:      spec.name,
		Scopes:    spec.scopes,
		CreatedAt: now,
		ExpiresAt: spec.expires,
		Hint:      tokenHint(secret),
	}
	if err := st.CreateToken(by, &t, hashToken(secret), limit); err != nil {
		return tokenRecord{}, "", err
	}
	return t, secret, nil
}

// handleLeakReport revokes whatever token it is given, no questions asked:
// holding a token is the right to kill it. The answer is the same whether
// or not the token existed, so it tells a guesser nothing.
func (s *server) handleLeakReport(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	token, err := leakReportToken(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if h, err := s.format.parse(token); err == nil {
		t, err := s.store.DeleteTokenByHash(s.actorOf(r, userRecord{}, viaAPI), h, kindTokenLeaked)
		switch {
		case err == nil:
			s.log.Warn("token revoked by leak report", "token_id", t.ID, "user_id", t.Owner, "remote", s.clientAddr(r))
		case !errors.Is(err, errNotFound):
			s.writeError(w, r, err)
			return
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	s.writeJSON(w, r, http.StatusOK, struct{}{})
}

// leakReportToken reads the token of a leak report: a form field or a JSON
// object, both called token.
func leakReportToken(w http.ResponseWriter, r *http.Request) (string, error) {
	if requireContentType(r, "application/x-www-form-urlencoded") == nil {
		return formValue(w, r, "token")
	}
	var req struct {
		Token string `json:"token"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		var he *httpError
		if errors.As(err, &he) && he.status == http.StatusUnsupportedMediaType {
			return "", clientError(http.StatusUnsupportedMediaType, "send the token as a form field (application/x-www-form-urlencoded) or a JSON object (application/json)")
		}
		return "", err
	}
	if req.Token == "" {
		return "", clientError(http.StatusBadRequest, "the field token is required")
	}
	return req.Token, nil
}
