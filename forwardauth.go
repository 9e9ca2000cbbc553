package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/julienschmidt/httprouter"
)

// Forward auth: a reverse proxy (nginx auth_request, Traefik ForwardAuth,
// Caddy forward_auth) asks GET /auth or GET /auth/:scopes before it passes
// a request on to the app it protects, and passes the X-Auth-* headers of a
// 2xx answer on to the app.

// The headers of a successful forward-auth answer. All four are sent every
// time, empty or not: some proxies copy a header only when the answer has
// it, and would otherwise let a client's forged one through.
const (
	headerAuthUser    = "X-Auth-User"
	headerAuthUserID  = "X-Auth-User-Id"
	headerAuthScopes  = "X-Auth-Scopes"
	headerAuthTokenID = "X-Auth-Token-Id"
)

// handleForwardAuth answers 204 with the X-Auth-* headers when the request's
// Bearer token is valid and holds every scope of the comma-separated :scopes
// (none for GET /auth), 401 with a Bearer challenge when the token is
// missing or bad, 403 insufficient_scope when it lacks a scope, and 500 when
// anything fails on tokend's side, so that the proxy lets nothing through.
//
// The required scopes come only from the path, which the proxy's
// configuration sets, never from the query string or a header, which a
// client controls (Caddy, for one, forwards the client's query).
func (s *server) handleForwardAuth(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	required := ps.ByName("scopes")
	if err := s.checkRequiredScopes(required); err != nil {
		s.internalError(w, r, err)
		return
	}
	c, err := s.authenticate(r)
	if err == nil {
		err = lackingScopes(c.scopes, required)
	}
	if err != nil {
		err = asProxyRefusal(err)
	}
	s.logForwardAuth(r, c, err)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	setExpiryHeader(w, c)
	// This is the hot path of every request a proxy lets through: the
	// four values share one allocation, the two ids one string, and the
	// keys are already canonical.
	ids := strconv.AppendUint(make([]byte, 0, 40), c.user.ID, 10)
	userIDEnd := len(ids)
	ids = strconv.AppendUint(ids, c.token.ID, 10)
	idText := string(ids)
	vs := []string{c.user.Name, idText[:userIDEnd], joinScopes(c.scopes), idText[userIDEnd:]}
	h[headerAuthUser] = vs[0:1:1]
	h[headerAuthUserID] = vs[1:2:2]
	h[headerAuthScopes] = vs[2:3:3]
	h[headerAuthTokenID] = vs[3:4:4]
	w.WriteHeader(http.StatusNoContent)
}

// asProxyRefusal returns err as forward auth must answer it. A proxy takes
// only 401 and 403 as a refusal: nginx turns any other status into a 500 of
// its own, which would hide from the client that its Authorization header
// is what is wrong. So a 400 becomes a 401.
func asProxyRefusal(err error) error {
	var ae *authError
	if errors.As(err, &ae) && ae.status == http.StatusBadRequest {
		e := *ae
		e.status = http.StatusUnauthorized
		return &e
	}
	return err
}

// checkRequiredScopes checks the :scopes of GET /auth/:scopes: declared
// scope names separated by commas. Anything else is a mistake in the
// proxy's configuration, which no token can pass.
func (s *server) checkRequiredScopes(list string) error {
	if list == "" {
		return nil
	}
	for n := range strings.SplitSeq(list, ",") {
		if !s.scopes.known(n) {
			return fmt.Errorf("forward auth asks for scope %q, which is not declared: declare it with -scope or fix the proxy's URL", truncate(n, 80))
		}
	}
	return nil
}

// joinScopes returns scopes separated by spaces, without allocating for
// the common token of one scope.
func joinScopes(scopes []string) string {
	if len(scopes) == 1 {
		return scopes[0]
	}
	return strings.Join(scopes, " ")
}

// lackingScopes returns an insufficient_scope error naming the scopes of
// required, a comma-separated list of declared scopes, that held lacks, or
// nil when it lacks none.
func lackingScopes(held []string, required string) error {
	if required == "" {
		return nil
	}
	var missing []string
	for sc := range strings.SplitSeq(required, ",") {
		if !hasScope(held, sc) && !hasScope(missing, sc) {
			missing = append(missing, sc)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	e := insufficientScope(strings.ReplaceAll(required, ",", " "))
	e.detail = "the token lacks " + strings.Join(missing, " and ") + "; this route needs " + strings.ReplaceAll(required, ",", ", ")
	return e
}

// logForwardAuth logs a forward-auth decision with what the proxy says of
// the original request: its method, its path (never its query, which may
// carry secrets) and its client. Never a token, a cookie or another header.
func (s *server) logForwardAuth(r *http.Request, c *caller, err error) {
	if err == nil && !s.log.Enabled(r.Context(), slog.LevelDebug) {
		return // the hot path: an allowed request, logged only at debug
	}
	uri := r.Header.Get("X-Forwarded-Uri")
	if uri == "" {
		uri = r.Header.Get("X-Original-URI")
	}
	path, _, _ := strings.Cut(uri, "?")
	path, _, _ = strings.Cut(path, "#")
	attrs := []any{
		"forwarded_method", truncate(r.Header.Get("X-Forwarded-Method"), 20),
		"forwarded_path", truncate(path, 200),
		"forwarded_for", truncate(r.Header.Get("X-Forwarded-For"), 100),
	}
	var ae *authError
	switch {
	case err == nil:
		s.log.Debug("forward auth allowed", append(attrs, "user_id", c.user.ID, "token_id", c.token.ID)...)
	case errors.As(err, &ae) && ae.code == "":
		s.log.Debug("forward auth refused", append(attrs, "error", "no credentials")...)
	case errors.As(err, &ae):
		// A token was shown: worth a line at the default level.
		if c != nil {
			attrs = append(attrs, "user_id", c.user.ID, "token_id", c.token.ID)
		}
		s.log.Info("forward auth refused", append(attrs, "error", ae.code)...)
	}
	// Any other error is logged by internalError as it answers 500.
}
