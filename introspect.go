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
	ClientID  string `json:"client_id"` // the token's id
}

// handleIntrospect answers RFC 7662 token introspection to a caller whose
// token holds the introspect scope. The token asked about comes in the form
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
	if e := c.token.ExpiresAt; e != nil {
		exp := e.Unix()
		answer.Exp = &exp
	}
	w.Header().Set("Cache-Control", "no-store")
	s.writeJSON(w, r, http.StatusOK, answer)
}
