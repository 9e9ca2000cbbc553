package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"
)

// requestInfo is what the request log and metrics learn about a request
// while it is handled. instrument puts one in every request's context; the
// router fills in the route, the authentication path the caller. It is
// only touched by the goroutine that handles the request.
type requestInfo struct {
	route   string // the pattern that matched, "" when none did
	tokenID uint64 // the token that authenticated the request, 0 if none
	userID  uint64 // the user it acts as, 0 if unknown
	auth    string // the authentication decision, "" when none was made
}

// requestState is everything instrument adds to a request, allocated
// together: the recorder of the answer's status, the requestInfo, and the
// context that carries it.
type requestState struct {
	rec  statusRecorder
	info requestInfo
	ctx  infoContext
}

// infoContext is a context that carries a requestInfo: context.WithValue's
// work without its allocation.
type infoContext struct {
	context.Context
	info *requestInfo
}

type requestInfoKey struct{}

func (c *infoContext) Value(key any) any {
	if key == (requestInfoKey{}) {
		return c.info
	}
	return c.Context.Value(key)
}

// requestInfoOf returns the requestInfo of r, or nil outside instrument.
func requestInfoOf(r *http.Request) *requestInfo {
	info, _ := r.Context().Value(requestInfoKey{}).(*requestInfo)
	return info
}

// router is an httprouter.Router that records in each request which route
// pattern matched it, which httprouter v1.3.0 does not tell, and answers
// HEAD wherever it answers GET, as RFC 9110 §9.3.2 requires (httprouter
// v1.3.0 does not). Every way of registering a route goes through Handle
// here, which also keeps the list of what was registered.
type router struct {
	*httprouter.Router
	registered *[]string // "METHOD /pattern" of every route, in order
}

func newRouter() router { return router{httprouter.New(), new([]string)} }

// Handle registers h for method and path; for GET, also for HEAD: the
// handler writes as for GET and net/http sends the headers without the
// body. So HEAD must not be registered on its own beside GET.
func (rt router) Handle(method, path string, h httprouter.Handle) {
	recorded := func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		if info := requestInfoOf(r); info != nil {
			info.route = path
		}
		h(w, r, ps)
	}
	rt.Router.Handle(method, path, recorded)
	*rt.registered = append(*rt.registered, method+" "+path)
	if method == http.MethodGet {
		rt.Router.Handle(http.MethodHead, path, recorded)
		*rt.registered = append(*rt.registered, http.MethodHead+" "+path)
	}
}

func (rt router) GET(path string, h httprouter.Handle)     { rt.Handle(http.MethodGet, path, h) }
func (rt router) HEAD(path string, h httprouter.Handle)    { rt.Handle(http.MethodHead, path, h) }
func (rt router) OPTIONS(path string, h httprouter.Handle) { rt.Handle(http.MethodOptions, path, h) }
func (rt router) POST(path string, h httprouter.Handle)    { rt.Handle(http.MethodPost, path, h) }
func (rt router) PUT(path string, h httprouter.Handle)     { rt.Handle(http.MethodPut, path, h) }
func (rt router) PATCH(path string, h httprouter.Handle)   { rt.Handle(http.MethodPatch, path, h) }
func (rt router) DELETE(path string, h httprouter.Handle)  { rt.Handle(http.MethodDelete, path, h) }

func (rt router) Handler(method, path string, h http.Handler) {
	rt.Handle(method, path, func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		if len(ps) > 0 { // as httprouter's own Handler does
			r = r.WithContext(context.WithValue(r.Context(), httprouter.ParamsKey, ps))
		}
		h.ServeHTTP(w, r)
	})
}

func (rt router) HandlerFunc(method, path string, h http.HandlerFunc) { rt.Handler(method, path, h) }

// routes returns "METHOD /pattern" for every route registered so far.
func (rt router) routes() []string { return slices.Clone(*rt.registered) }

// notFound answers as the router's NotFound handler does at the time of
// the request, so that handlers registered before it is set can use it.
func (rt router) notFound(w http.ResponseWriter, r *http.Request) {
	rt.NotFound.ServeHTTP(w, r)
}

// The settings of -access-log: which requests the request log holds.
const (
	accessLogAll    = "all"    // every request
	accessLogErrors = "errors" // requests answered 4xx or 5xx, and slow ones
	accessLogOff    = "off"    // none
)

// slowRequest is how long a request may take before the request log holds
// it at -access-log errors (config.SlowRequest, which tests change). Answers take far less in the normal course, a
// password hash included; what takes longer (a sign-in queued behind a
// flood of them, a backup of a large database) is worth a line.
const slowRequest = time.Second

// checkAccessLog refuses a value of -access-log other than its three.
func checkAccessLog(v string) error {
	switch v {
	case accessLogAll, accessLogErrors, accessLogOff:
		return nil
	}
	return fmt.Errorf("-access-log: %q is not all, errors or off", truncate(v, 40))
}

// logsRequest reports whether the request log holds a request answered
// status after d. At the default, errors, it leaves out what succeeded in
// time: the bulk of the traffic, every allowed /auth among it, which the
// request metrics count; a line per request would cost more than checking
// the token does. What a request changed is logged by its handler at any
// setting.
func (s *server) logsRequest(status int, d time.Duration) bool {
	switch s.cfg.AccessLog {
	case accessLogAll:
		return true
	case accessLogOff:
		return false
	}
	return status >= http.StatusBadRequest || d >= s.cfg.SlowRequest
}

// instrument wraps the whole router: for each request it records the
// request metrics and, when -access-log asks for it (see logsRequest),
// logs one line at info level. The line holds the method, the route
// pattern (never the path, which may hold anything a client typed), the
// status, the duration, the token and user ids when the request
// authenticated, and the client address. Never headers, cookies, query
// strings or bodies: they carry secrets.
func (s *server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		s.metrics.inFlight.Inc()
		defer s.metrics.inFlight.Dec()
		st := &requestState{rec: statusRecorder{ResponseWriter: w}}
		st.ctx = infoContext{Context: r.Context(), info: &st.info}
		r = r.WithContext(&st.ctx)
		next.ServeHTTP(&st.rec, r)

		d := time.Since(start)
		info := &st.info
		status := st.rec.status
		if status == 0 {
			status = http.StatusOK // nothing written: net/http sends 200
		}
		route := info.route
		if route == "" {
			route = "none"
		}
		method := metricMethod(r.Method)
		s.metrics.observeRequest(method, route, status, d)
		if result := authDecision(info, status, st.rec.Header()); result != "" {
			s.metrics.observeDecision(result)
		}
		if !s.logsRequest(status, d) || !s.log.Enabled(r.Context(), slog.LevelInfo) {
			return
		}
		attrs := []slog.Attr{
			slog.String("method", method),
			slog.String("route", route),
			slog.Int("status", status),
			slog.Duration("duration", d),
			slog.String("remote", s.clientAddr(r)),
		}
		if info.tokenID != 0 {
			attrs = append(attrs, slog.Uint64("token_id", info.tokenID))
		}
		if info.userID != 0 {
			attrs = append(attrs, slog.Uint64("user_id", info.userID))
		}
		if d >= s.cfg.SlowRequest {
			attrs = append(attrs, slog.Bool("slow", true))
		}
		s.log.LogAttrs(r.Context(), slog.LevelInfo, "request", attrs...)
	})
}

// metricMethod returns method if it is a standard one and OTHER if not, so
// that clients cannot mint label values.
func metricMethod(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return method
	}
	return "OTHER"
}

// authDecision is the authentication decision of a request that answered
// status with header h. A token that authenticated but lacked the scope
// the route needs is insufficient_scope: every such refusal goes through
// writeAuthError, which names the error in its challenge.
func authDecision(info *requestInfo, status int, h http.Header) string {
	if info.auth == decisionOK && status == http.StatusForbidden &&
		strings.Contains(h.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
		return decisionInsufficientScope
	}
	return info.auth
}

// noteAuthentication records the outcome of authenticate in r's
// requestInfo: the decision, and on success who the request acts as.
func noteAuthentication(r *http.Request, c *caller, err error) {
	info := requestInfoOf(r)
	switch {
	case info == nil:
	case err == nil:
		info.auth = decisionOK
		info.tokenID, info.userID = c.token.ID, c.user.ID
	default:
		info.auth = decisionOf(err)
	}
}

// decisionOf returns the authentication decision that err, a failure of
// authenticate, stands for.
func decisionOf(err error) string {
	var ae *authError
	switch {
	case !errors.As(err, &ae):
		return decisionError
	case ae.code == "":
		return decisionNoCredentials
	case errors.Is(err, errTokenExpired):
		return decisionExpired
	case ae.code == "invalid_request" || ae.code == "invalid_token":
		return ae.code
	default:
		return decisionError
	}
}

// noteUser records in r's requestInfo the user a request acts as, for
// sign-ins that use no token.
func noteUser(r *http.Request, userID uint64) {
	if info := requestInfoOf(r); info != nil {
		info.userID = userID
	}
}

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
