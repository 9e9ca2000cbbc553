package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/julienschmidt/httprouter"
	"github.com/prometheus/client_golang/prometheus"
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
// A :scopes that names an undeclared scope is a mistake in the proxy's
// configuration, which no token can pass: also a 500, since it is the
// operator's to fix, not the client's (and nginx turns any status but 401
// and 403 into a 500 of its own anyway).
//
// The required scopes come only from the path, which the proxy's
// configuration sets, never from the query string or a header, which a
// client controls (Caddy, for one, forwards the client's query).
func (s *server) handleForwardAuth(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	required := ps.ByName("scopes")
	if err := s.checkRequiredScopes(required); err != nil {
		s.setSecureHeaders(h, r) // only refusals carry them: see secureHeaders
		s.misconfigured.note(r, err)
		writeProblem(w, http.StatusInternalServerError, "this route's access check is misconfigured; tell the operator")
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
		s.setSecureHeaders(h, r)
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

// misconfiguredRoutes counts and logs forward-auth requests for routes no
// token can pass. Anyone who can reach tokend can make such requests, so
// the log is bounded: each distinct route is logged once per interval, at
// most maxLogged of them per interval, and the requests left unlogged are
// summed up in one line when the next interval begins. Every request is
// counted in tokend_forward_auth_misconfigured_total.
type misconfiguredRoutes struct {
	count     prometheus.Counter
	log       *slog.Logger
	now       func() time.Time
	interval  time.Duration
	maxLogged int

	mu       sync.Mutex
	start    time.Time           // of the current interval
	logged   map[string]struct{} // routes logged in it; at most maxLogged
	unlogged int                 // requests in it not logged
}

func newMisconfiguredRoutes(reg prometheus.Registerer, log *slog.Logger, now func() time.Time) *misconfiguredRoutes {
	m := &misconfiguredRoutes{
		count: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokend_forward_auth_misconfigured_total",
			Help: "Forward-auth requests refused because the route asks for a scope that is not declared.",
		}),
		log: log, now: now, interval: time.Minute, maxLogged: 20,
		logged: map[string]struct{}{},
	}
	reg.MustRegister(m.count)
	return m
}

// note counts r, refused for err, and logs it unless its route was logged
// in this interval or the interval's lines are used up.
func (m *misconfiguredRoutes) note(r *http.Request, err error) {
	m.count.Inc()
	route := redactPath(r.URL.Path)
	now := m.now()
	m.mu.Lock()
	var unlogged int
	if !now.Before(m.start.Add(m.interval)) || now.Before(m.start) {
		unlogged = m.unlogged
		m.start, m.unlogged = now, 0
		clear(m.logged)
	}
	_, seen := m.logged[route]
	full := !seen && len(m.logged) >= m.maxLogged
	switch {
	case full:
		m.unlogged++
	case !seen:
		m.logged[route] = struct{}{}
	}
	m.mu.Unlock()

	if unlogged > 0 {
		m.log.Error("forward auth: more requests for misconfigured routes were not logged", "requests", unlogged, "interval", m.interval)
	}
	if !seen && !full {
		m.log.Error("forward auth route is misconfigured", "path", route, "err", redactTokens(err.Error()),
			"note", "logged once per route per interval; see tokend_forward_auth_misconfigured_total")
	}
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
// carry secrets) and its client, each with tokens redacted. Never a token,
// a cookie or another header.
func (s *server) logForwardAuth(r *http.Request, c *caller, err error) {
	if err == nil && !s.log.Enabled(r.Context(), slog.LevelDebug) {
		return // the hot path: an allowed request, logged only at debug
	}
	uri := r.Header.Get("X-Forwarded-Uri")
	if uri == "" {
		uri = r.Header.Get("X-Original-URI")
	}
	// Every value comes from the client through the proxy: a token pasted
	// into any of them must not reach the log.
	attrs := []any{
		"forwarded_method", truncate(redactTokens(r.Header.Get("X-Forwarded-Method")), 20),
		"forwarded_path", redactPath(uri),
		"forwarded_for", truncate(redactTokens(r.Header.Get("X-Forwarded-For")), 100),
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
