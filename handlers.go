package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/julienschmidt/httprouter"
)

const (
	maxTokenNameLen = 100 // characters
	maxTokenYears   = 10
)

// server holds everything a request needs. Build it with newServer.
type server struct {
	store     store
	format    tokenFormat
	scopes    *scopeRegistry
	hasher    *passwordHasher
	log       *slog.Logger
	now       func() time.Time
	cfg       config
	templates *template.Template
	lastUsed  *lastUsedTracker
	// dummyHash is verified against when a sign-in names no user, so that
	// a failure takes as long whether the user exists or not.
	dummyHash string
	throttle  *signInThrottle
	setup     *setupCode
	cop       *http.CrossOriginProtection // guards every form and session POST
	metrics   *metrics
	static    staticFiles // served under /static/
	// misconfigured counts and logs forward auth for undeclared scopes.
	misconfigured *misconfiguredRoutes
	// routeList is "METHOD /pattern" of every route, as routes()
	// registered them.
	routeList []string
	forms     *formOnce // the token forms already answered, and secrets to show once
	// touchFailing is set while recording sessions' last-seen times fails,
	// so that a full disk logs one warning, not one per page view.
	touchFailing atomic.Bool
}

// newServer returns a server over st configured by cfg.
func newServer(st store, cfg config, log *slog.Logger, now func() time.Time) (*server, error) {
	format, err := newTokenFormat(cfg.TokenPrefix)
	if err != nil {
		return nil, err
	}
	scopes, err := newScopeRegistry(cfg.Scopes.list())
	if err != nil {
		return nil, err
	}
	tmpl, err := parseTemplates()
	if err != nil {
		return nil, err
	}
	s := &server{
		store:     st,
		format:    format,
		scopes:    scopes,
		hasher:    newPasswordHasher(cfg.Argon, cfg.HashConcurrency),
		log:       log,
		now:       now,
		cfg:       cfg,
		templates: tmpl,
		lastUsed:  newLastUsedTracker(),
		throttle:  newSignInThrottle(),
		setup:     &setupCode{},
		cop:       http.NewCrossOriginProtection(),
		forms:     newFormOnce(),
	}
	s.hasher.maxWaiting = int64(cfg.HashQueue)
	// The dummy is hashed with the live parameters so that verifying against
	// it costs what verifying a real password does.
	if s.dummyHash, err = s.hasher.Hash(context.Background(), "tokend dummy password"); err != nil {
		return nil, err
	}
	s.metrics = newMetrics(st, log)
	s.misconfigured = newMisconfiguredRoutes(s.metrics.registry, log, now)
	if s.static, err = newStaticFiles(staticFS); err != nil {
		return nil, fmt.Errorf("read static files: %w", err)
	}
	return s, nil
}

// routes returns the whole HTTP surface.
func (s *server) routes() http.Handler {
	r := newRouter() // an httprouter.Router that records the matched pattern
	r.GET("/healthz", s.handleHealthz)
	r.GET("/readyz", s.handleReadyz)
	r.GET("/metrics", s.handleMetrics)
	r.GET("/static/*filepath", s.static.handle(r.notFound))

	// Pages (pages.go, admin.go, setup.go). Every POST goes through form:
	// cross-origin protection and a bounded body.
	r.GET("/", s.signedIn(s.handleTokenPage))
	r.GET("/setup", s.handleSetupPage)
	r.POST("/setup", s.form(s.handleSetup))
	r.GET("/login", s.handleLoginPage)
	r.POST("/login", s.form(s.handleLogin))
	r.POST("/logout", s.form(s.handleLogout))
	r.POST("/tokens", s.form(s.signedIn(s.handleCreateTokenPage)))
	r.GET("/secret", s.signedIn(s.handleSecretPage))
	r.GET("/tokens/:id/revoke", s.signedIn(s.confirmTokenPage(revokeConfirmation)))
	r.POST("/tokens/:id/revoke", s.form(s.signedIn(s.handleRevokeTokenForm)))
	r.GET("/tokens/:id/rotate", s.signedIn(s.confirmTokenPage(rotateConfirmation)))
	r.POST("/tokens/:id/rotate", s.form(s.signedIn(s.handleRotateTokenForm)))
	r.GET("/account", s.signedIn(s.handleAccountPage))
	r.POST("/account/password", s.form(s.signedIn(s.handleChangePassword)))
	r.POST("/account/sessions/end", s.form(s.signedIn(s.handleEndSession)))
	r.POST("/account/sessions/end-others", s.form(s.signedIn(s.handleEndOtherSessions)))
	r.POST("/account/revoke-tokens", s.form(s.signedIn(s.handleRevokeOwnTokens)))
	r.GET("/admin/users", s.signedIn(s.adminOnly(s.handleUsersPage)))
	r.POST("/admin/users", s.form(s.signedIn(s.adminOnly(s.handleAddUser))))
	r.GET("/admin/users/:id", s.signedIn(s.adminOnly(s.handleUserPage)))
	r.POST("/admin/users/:id/password", s.form(s.signedIn(s.adminOnly(s.handleResetPassword))))
	r.POST("/admin/users/:id/admin", s.form(s.signedIn(s.adminOnly(s.handleSetAdmin))))
	r.POST("/admin/users/:id/remove", s.form(s.signedIn(s.adminOnly(s.handleRemoveUser))))
	r.POST("/admin/users/:id/revoke-tokens", s.form(s.signedIn(s.adminOnly(s.handleRevokeUserTokens))))

	r.GET("/api/v1/user", s.withToken("", s.handleGetUser))
	r.GET("/api/v1/token", s.withToken("", s.handleGetSelf))
	r.DELETE("/api/v1/token", s.withToken("", s.handleRevokeSelf))
	r.POST("/api/v1/token/rotate", s.withToken("", s.handleRotateSelf))
	r.GET("/api/v1/tokens", s.withToken(scopeTokensRead, s.handleListTokens))
	r.POST("/api/v1/tokens", s.handleCreateToken)
	r.GET("/api/v1/tokens/:id", s.withToken(scopeTokensRead, s.handleGetToken))
	r.DELETE("/api/v1/tokens/:id", s.withToken(scopeTokensWrite, s.handleRevokeToken))
	r.POST("/api/v1/tokens/:id/rotate", s.withToken(scopeTokensWrite, s.handleRotateToken))
	r.POST("/api/v1/revoke", s.handleLeakReport)
	r.POST("/api/v1/introspect", s.withToken(scopeIntrospect, s.handleIntrospect))
	r.GET("/auth", s.handleForwardAuth)
	r.GET("/auth/:scopes", s.handleForwardAuth)
	r.GET("/api/v1/openapi.yaml", s.handleOpenAPI)
	r.GET("/api/v1/admin/backup", s.withToken(scopeAdmin, s.handleBackup))
	r.POST("/api/v1/user/password", s.withToken("", s.handleAPIChangePassword))
	r.DELETE("/api/v1/users/:id", s.apiAdmin(s.handleAPIRemoveUser))
	r.POST("/api/v1/users/:id/password", s.apiAdmin(s.handleAPIResetPassword))
	r.PUT("/api/v1/users/:id/admin", s.apiAdmin(s.handleAPISetAdmin))
	r.DELETE("/api/v1/users/:id/tokens", s.apiAdmin(s.handleAPIRevokeUserTokens))

	r.NotFound = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if wantsPage(r) {
			s.notFoundPage(w, r)
			return
		}
		writeProblem(w, http.StatusNotFound, "no such endpoint: "+truncate(redactTokens(r.URL.Path), 200))
	})
	r.MethodNotAllowed = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed here; allowed: %s", truncate(r.Method, 20), w.Header().Get("Allow")))
	})
	r.PanicHandler = func(w http.ResponseWriter, r *http.Request, v any) {
		s.internalError(w, r, fmt.Errorf("panic: %v", v))
	}
	s.routeList = r.routes()
	return s.instrument(s.secureHeaders(r))
}

// ---- authentication ----

// caller is who a request acts as: the owner of a valid token, limited to
// that token's scopes.
type caller struct {
	user   userRecord // without its password hash
	token  authRecord
	scopes []string  // the token's scopes that its owner may still hold
	at     time.Time // when the token was verified: the time of its use
}

// authError is a failed Bearer authentication, answered as RFC 6750 says.
type authError struct {
	status int
	code   string // "" when no credentials were sent
	detail string
	scope  string // with insufficient_scope: what was needed
	cause  error  // why, for errors.Is: errTokenExpired for an expired token
}

func (e *authError) Error() string { return e.detail }

func (e *authError) Unwrap() error { return e.cause }

var errNoCredentials = &authError{status: http.StatusUnauthorized, detail: "this endpoint needs a token: send Authorization: Bearer <token>"}

func invalidRequest(detail string) *authError {
	return &authError{status: http.StatusBadRequest, code: "invalid_request", detail: detail}
}

func invalidToken(detail string) *authError {
	return &authError{status: http.StatusUnauthorized, code: "invalid_token", detail: detail}
}

func insufficientScope(scope string) *authError {
	return &authError{
		status: http.StatusForbidden, code: "insufficient_scope", scope: scope,
		detail: "the token lacks the " + scope + " scope",
	}
}

// writeAuthError answers with the WWW-Authenticate challenge of RFC 6750
// §3 and a problem body.
func (s *server) writeAuthError(w http.ResponseWriter, e *authError) {
	challenge := `Bearer realm="tokend"`
	if e.code != "" {
		challenge += `, error="` + e.code + `", error_description="` + challengeText(e.detail) + `"`
	}
	if e.scope != "" {
		challenge += fmt.Sprintf(`, scope=%q`, e.scope)
	}
	w.Header().Set("WWW-Authenticate", challenge)
	writeProblemCode(w, e.status, e.detail, e.code)
}

// challengeText keeps only the characters RFC 6750 §3 allows in an
// error_description: printable ASCII without the double quote and backslash.
func challengeText(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return '\''
		}
		return r
	}, s)
}

// bearerToken returns the token of r's Authorization header. It never reads
// the query string: a token there would end up in logs and histories.
func bearerToken(r *http.Request) (string, error) {
	if r.URL.RawQuery != "" && r.URL.Query().Has("access_token") {
		return "", invalidRequest("tokens are not accepted in the query string; send Authorization: Bearer <token>")
	}
	values := r.Header.Values("Authorization")
	switch len(values) {
	case 0:
		return "", errNoCredentials
	case 1:
	default:
		return "", invalidRequest("send one Authorization header, not several")
	}
	scheme, token, _ := strings.Cut(strings.TrimSpace(values[0]), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", invalidRequest("the Authorization scheme must be Bearer")
	}
	token = strings.TrimSpace(token)
	if token == "" || strings.ContainsAny(token, " \t") {
		return "", invalidRequest("the Authorization header must be Bearer followed by one token")
	}
	return token, nil
}

// authenticate checks r's Bearer token. It returns an *authError for any
// client-side failure and another error when storage fails (the request
// must then fail closed).
func (s *server) authenticate(r *http.Request) (c *caller, err error) {
	defer func() { noteAuthentication(r, c, err) }()
	token, err := bearerToken(r)
	if err != nil {
		return nil, err
	}
	c, err = s.verifyToken(token)
	if err != nil {
		return nil, err
	}
	if err := s.noteUse(c, s.clientAddr(r)); err != nil {
		return nil, err
	}
	return c, nil
}

// setExpiryHeader tells the client of an expiring token when it expires, so
// that its automation can warn before it breaks.
func setExpiryHeader(w http.ResponseWriter, c *caller) {
	if e := c.token.ExpiresAt; e != nil {
		w.Header().Set("Token-Expires-At", e.UTC().Format(time.RFC3339))
	}
}

// verifyToken checks token: format and checksum first, then storage, then
// expiry.
func (s *server) verifyToken(token string) (*caller, error) {
	h, err := s.format.parse(token)
	if err != nil {
		return nil, invalidToken("the token is malformed: wrong prefix, length or checksum")
	}
	t, u, err := s.store.Authenticate(h)
	if errors.Is(err, errNotFound) {
		return nil, invalidToken("the token is unknown or revoked")
	}
	if err != nil {
		return nil, fmt.Errorf("look up token: %w", err)
	}
	now := s.now()
	if t.expired(now) {
		e := invalidToken("the token expired at " + t.ExpiresAt.UTC().Format(time.RFC3339))
		e.cause = errTokenExpired
		return nil, e
	}
	return &caller{user: u, token: t, scopes: effectiveScopes(t.Scopes, u), at: now}, nil
}

// effectiveScopes returns the scopes of a token that its owner may still
// hold: an admin token of a demoted admin loses its admin scope.
func effectiveScopes(scopes []string, u userRecord) []string {
	if u.Admin || !hasScope(scopes, scopeAdmin) {
		return scopes
	}
	out := make([]string, 0, len(scopes))
	for _, sc := range scopes {
		if sc != scopeAdmin {
			out = append(out, sc)
		}
	}
	return out
}

type tokenHandler func(w http.ResponseWriter, r *http.Request, ps httprouter.Params, c *caller)

// withToken authenticates the request's Bearer token and requires scope
// (none when empty) before calling h.
func (s *server) withToken(scope string, h tokenHandler) httprouter.Handle {
	return func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		c, err := s.authenticate(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		setExpiryHeader(w, c)
		if scope != "" && !hasScope(c.scopes, scope) {
			s.writeAuthError(w, insufficientScope(scope))
			return
		}
		h(w, r, ps, c)
	}
}

// ---- JSON API ----

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
	if _, err := s.store.DeleteToken(c.token.ID, c.user.ID); err != nil && !errors.Is(err, errNotFound) {
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
	if _, err := s.store.DeleteToken(id, c.user.ID); err != nil {
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
	t, err := s.store.RotateToken(id, c.user.ID, hashToken(secret), tokenHint(secret), s.now())
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
		c, err := s.authenticate(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		setExpiryHeader(w, c)
		if !hasScope(c.scopes, scopeTokensWrite) {
			s.writeAuthError(w, insufficientScope(scopeTokensWrite))
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
	t, secret, err := s.createToken(owner, spec, now)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeSecret(w, r, t, secret)
}

// createToken generates and stores a token for owner.
func (s *server) createToken(owner userRecord, spec tokenSpec, now time.Time) (tokenRecord, string, error) {
	t, secret, err := newToken(s.store, s.format, owner, spec, now, s.cfg.MaxTokensPerUser)
	if err != nil {
		return tokenRecord{}, "", err
	}
	s.log.Info("token created", "token_id", t.ID, "user_id", owner.ID, "scopes", strings.Join(t.Scopes, " "))
	return t, secret, nil
}

// newToken generates a token of format for owner and stores its hash. It
// returns the record and the secret, which exists nowhere else.
func newToken(st store, format tokenFormat, owner userRecord, spec tokenSpec, now time.Time, limit int) (tokenRecord, string, error) {
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
	if err := st.CreateToken(&t, hashToken(secret), limit); err != nil {
		return tokenRecord{}, "", err
	}
	return t, secret, nil
}

var errBadCredentials = &httpError{status: http.StatusUnauthorized, detail: "wrong user name or password"}

// basicChallenge is sent with a failed Basic sign-in: every 401 names a way in.
const basicChallenge = `Basic realm="tokend", charset="UTF-8"`

// signIn checks a name and password. A failure takes as long whether or not
// the user exists, and says the same. On success with a hash of weaker
// parameters than today's, the hash is replaced.
func (s *server) signIn(r *http.Request, name, password string) (userRecord, error) {
	addr := s.clientAddr(r)
	// The user is looked up first, whether the attempt goes ahead or not,
	// so that the throttle keeps an account's attempts under its id, where
	// made-up names cannot reach them.
	u, err := s.store.UserByName(name)
	if err != nil && !errors.Is(err, errNotFound) {
		return userRecord{}, err
	}
	account := signInAccount{user: u.ID, name: name}
	if wait := s.throttle.begin(account, addr, s.now()); wait > 0 {
		s.log.Info("sign-in throttled", "remote", addr) // never the name: it may be a token or a password
		return userRecord{}, &throttledError{wait: wait}
	}
	encoded := u.PasswordHash
	if u.ID == 0 {
		encoded = s.dummyHash
	}
	ok, rehash, err := s.hasher.Verify(r.Context(), password, encoded)
	if err != nil {
		s.throttle.abandoned(account, addr, s.now())
		return userRecord{}, fmt.Errorf("verify password of user %d: %w", u.ID, err)
	}
	if !ok || u.ID == 0 {
		s.log.Info("sign-in failed", "user", signInName(u), "remote", addr)
		return userRecord{}, errBadCredentials
	}
	if rehash {
		if h, err := s.hasher.Hash(r.Context(), password); err == nil {
			if err := s.store.UpgradePasswordHash(u.ID, encoded, h); err != nil {
				s.log.Warn("re-hash password", "user_id", u.ID, "err", err)
			}
		}
	}
	s.throttle.succeeded(u.ID, addr, s.now())
	return u, nil
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
		t, err := s.store.DeleteTokenByHash(h)
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

func (s *server) handleHealthz(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}

// ---- HTML ----

// render executes the named page into a buffer and sends it, so that a
// template failure is a clean 500.
func (s *server) render(w http.ResponseWriter, r *http.Request, status int, page string, data any) {
	var buf bytes.Buffer
	if err := s.templates.ExecuteTemplate(&buf, page, data); err != nil {
		s.internalError(w, r, fmt.Errorf("render %s: %w", page, err))
		return
	}
	s.setPageHeaders(w, r)
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// ---- logging ----

// clientIP returns the address of r's peer, without port.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (w *statusRecorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController and innermost reach the server's writer.
func (w *statusRecorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}
