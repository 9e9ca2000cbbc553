package main

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/julienschmidt/httprouter"
)

// inactiveBody is the whole answer about a token that is not active, for
// whatever reason: unknown, malformed, expired or revoked all read the same
// (RFC 7662 §2.2), so the answer tells a prober nothing more.
const inactiveBody = `{"active":false}`

// introspection is the RFC 7662 §2.2 answer about an active token.
type introspection struct {
	Active    bool   `json:"active"`
	Scope     string `json:"scope"`
	Username  string `json:"username"`
	Sub       string `json:"sub"`           // the owner's user id
	Exp       *int64 `json:"exp,omitempty"` // absent when it never expires
	Iat       int64  `json:"iat"`
	TokenType string `json:"token_type"`
	// ClientID is the OAuth client that obtained the token; for a
	// personal token, which no client requested, the token's own id, as
	// before clients existed.
	ClientID string `json:"client_id"`
}

// handleIntrospectRoute lets in the two kinds of caller of introspection:
// a registered confidential client, with client_secret_basic or
// client_secret_post as the token endpoint takes them (what stock OAuth
// libraries of resource servers send), or a Bearer token that holds the
// introspect scope.
func (s *server) handleIntrospectRoute(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	if !sendsClientCredentials(w, r) {
		s.withToken(scopeIntrospect, s.handleIntrospect)(w, r, ps)
		return
	}
	err := parseOAuthForm(w, r)
	var c clientRecord
	if err == nil {
		c, err = s.authenticateClient(r)
	}
	if err == nil && c.Public {
		err = oauthErr("invalid_client", "a public client cannot introspect tokens: only confidential clients, with their secret")
	}
	var oe *oauthError
	switch {
	case errors.As(err, &oe) && oe.code == "invalid_client":
		w.Header().Set("WWW-Authenticate", `Basic realm="tokend"`)
		writeProblemCode(w, http.StatusUnauthorized, oe.detail, oe.code)
		return
	case errors.As(err, &oe):
		writeProblemCode(w, http.StatusBadRequest, oe.detail, oe.code)
		return
	case err != nil:
		s.writeError(w, r, err)
		return
	}
	s.handleIntrospect(w, r, ps, nil)
}

// sendsClientCredentials reports whether r authenticates as an OAuth
// client: HTTP Basic, or (without an Authorization header) client_id or
// client_secret in its form body, which it then reads.
func sendsClientCredentials(w http.ResponseWriter, r *http.Request) bool {
	authz := r.Header.Values("Authorization")
	if len(authz) > 0 {
		scheme, _, _ := strings.Cut(strings.TrimSpace(authz[0]), " ")
		return len(authz) == 1 && strings.EqualFold(scheme, "Basic")
	}
	if requireContentType(r, "application/x-www-form-urlencoded") != nil {
		return false
	}
	r.Body = http.MaxBytesReader(innermost(w), r.Body, maxBodyBytes)
	if r.ParseForm() != nil {
		return false
	}
	return r.PostForm.Has("client_id") || r.PostForm.Has("client_secret")
}

// handleIntrospect answers RFC 7662 token introspection to a caller that
// handleIntrospectRoute let in. The token asked about comes in the form
// field token (token_type_hint is ignored: tokend has one kind of token).
// Asking counts as a use of that token, as any verification does.
func (s *server) handleIntrospect(w http.ResponseWriter, r *http.Request, _ httprouter.Params, _ *caller) {
	token, err := formValue(w, r, "token")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	c, err := s.verifyToken(token)
	var ae *authError
	switch {
	case errors.As(err, &ae):
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte(inactiveBody))
		return
	case err != nil:
		s.writeError(w, r, err)
		return
	}
	if err := s.noteUse(c, s.clientAddr(r)); err != nil { // from the address of the service that asks
		s.writeError(w, r, err)
		return
	}
	answer := introspection{
		Active:    true,
		Scope:     strings.Join(c.scopes, " "),
		Username:  c.user.Name,
		Sub:       strconv.FormatUint(c.user.ID, 10),
		Iat:       c.token.CreatedAt.Unix(),
		TokenType: "Bearer",
		ClientID:  strconv.FormatUint(c.token.ID, 10),
	}
	if c.token.Client != "" {
		answer.ClientID = c.token.Client
	}
	if e := c.token.ExpiresAt; e != nil {
		exp := e.Unix()
		answer.Exp = &exp
	}
	w.Header().Set("Cache-Control", "no-store")
	s.writeJSON(w, r, http.StatusOK, answer)
}
