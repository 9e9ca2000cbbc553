package main

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"
)

// Authentication of API requests by their Bearer token: the caller it
// makes, and the 401 and 403 answers that name the way in.

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
		if c := s.bearerCaller(w, r, scope); c != nil {
			h(w, r, ps, c)
		}
	}
}

// bearerCaller authenticates the request's Bearer token and requires scope
// (none when empty). When either fails it has written the answer and
// returns nil.
func (s *server) bearerCaller(w http.ResponseWriter, r *http.Request, scope string) *caller {
	c, err := s.authenticate(r)
	if err != nil {
		s.writeError(w, r, err)
		return nil
	}
	setExpiryHeader(w, c)
	if scope != "" && !hasScope(c.scopes, scope) {
		s.writeAuthError(w, insufficientScope(scope))
		return nil
	}
	return c
}
