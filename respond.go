package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
)

// maxBodyBytes caps every JSON request body.
const maxBodyBytes = 64 << 10

// problem is an RFC 9457 problem details object.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
	// Error is the RFC 6750 error code on authentication failures.
	Error string `json:"error,omitempty"`
}

// httpError is an error with the status and message a client should see.
type httpError struct {
	status int
	detail string
}

func (e *httpError) Error() string { return e.detail }

// clientError returns an httpError with a formatted message.
func clientError(status int, format string, args ...any) *httpError {
	return &httpError{status: status, detail: fmt.Sprintf(format, args...)}
}

// commonHeaders are the security headers of every answer, following the
// OWASP Secure Headers project: no sniffing of types; a content security
// policy that allows scripts, styles and images only from /static and no
// framing (it matters on pages, and costs nothing on the rest); no
// referrer; a window and resources of tokend's own, kept from other
// origins; and no browser feature a page of tokend has no use for (the
// copy button may write to the clipboard). The value slices are shared by
// every answer: net/http only reads them, and a handler that sets one of
// these headers replaces its slice rather than editing it.
var commonHeaders = http.Header{
	"X-Content-Type-Options": {"nosniff"},
	"Content-Security-Policy": {"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
		"form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"},
	"X-Frame-Options":              {"DENY"},
	"Referrer-Policy":              {"no-referrer"},
	"Cross-Origin-Opener-Policy":   {"same-origin"},
	"Cross-Origin-Resource-Policy": {"same-origin"},
	"Permissions-Policy": {"accelerometer=(), autoplay=(), camera=(), clipboard-read=(), clipboard-write=(self), " +
		"display-capture=(), encrypted-media=(), fullscreen=(), geolocation=(), gyroscope=(), hid=(), " +
		"idle-detection=(), magnetometer=(), microphone=(), midi=(), payment=(), picture-in-picture=(), " +
		"publickey-credentials-get=(), screen-wake-lock=(), serial=(), usb=(), web-share=(), xr-spatial-tracking=()"},
}

var hstsHeader = []string{"max-age=31536000"}

// secureHeaders sets the security headers of every answer before next
// handles the request: commonHeaders, and HSTS over HTTPS. Whatever answers
// under it — a handler, the router's redirects and errors, a static file —
// sends them.
//
// Forward auth is the exception: handleForwardAuth adds them to its
// refusals only. A proxy never hands a browser the headers of a check it
// let through (nginx's auth_request keeps only what it is told to copy,
// Traefik and Caddy only the X-Auth-* headers they are told to copy), while
// they are a third of what the hottest answer of all costs net/http to
// write; a refusal, which Traefik and Caddy pass on, carries them.
func (s *server) secureHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isForwardAuth(r) {
			s.setSecureHeaders(w.Header(), r)
		}
		next.ServeHTTP(w, r)
	})
}

// setSecureHeaders sets commonHeaders in h, and HSTS over HTTPS.
func (s *server) setSecureHeaders(h http.Header, r *http.Request) {
	for k, v := range commonHeaders {
		h[k] = v
	}
	if s.isHTTPS(r) {
		h["Strict-Transport-Security"] = hstsHeader
	}
}

// isForwardAuth reports whether r is a forward-auth check: GET or HEAD of
// /auth or /auth/SCOPES.
func isForwardAuth(r *http.Request) bool {
	p := r.URL.Path
	return (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
		strings.HasPrefix(p, "/auth") && (len(p) == len("/auth") || p[len("/auth")] == '/')
}

// writeJSON encodes v into a buffer first, so that an encoding failure
// becomes a clean 500 rather than half a response.
func (s *server) writeJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		s.internalError(w, r, fmt.Errorf("encode response: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// writeProblem sends an application/problem+json answer.
func writeProblem(w http.ResponseWriter, status int, detail string) {
	writeProblemCode(w, status, detail, "")
}

func writeProblemCode(w http.ResponseWriter, status int, detail, code string) {
	var body bytes.Buffer
	enc := json.NewEncoder(&body)
	enc.SetEscapeHTML(false)
	enc.Encode(problem{
		Type:   "about:blank",
		Title:  http.StatusText(status),
		Status: status,
		Detail: detail,
		Error:  code,
	})
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	w.Write(body.Bytes())
}

// errorAnswer is what an error stands for to a client, whichever way it is
// answered: the status, a lower-case text the client may read (empty for
// a 500, whose cause is never sent), and the Retry-After value ("" for
// none).
type errorAnswer struct {
	status     int
	detail     string
	retryAfter string
}

// storeUnavailableDetail answers a request that failed because the
// database could not be reached (errStoreUnavailable): nothing is wrong
// with the request, and nothing was changed.
const storeUnavailableDetail = "the database is unavailable at the moment; nothing was changed; try again in a few seconds"

// classifyError returns what err stands for. It is the one mapping from
// errors to statuses: the API (writeError) and the pages (pageError,
// formFailed) both answer through it, so that they cannot disagree.
func (s *server) classifyError(err error) errorAnswer {
	var he *httpError
	var ae *authError
	var te *throttledError
	switch {
	case errors.As(err, &ae):
		return errorAnswer{status: ae.status, detail: ae.detail}
	case errors.As(err, &te):
		return errorAnswer{status: http.StatusTooManyRequests, detail: te.Error(), retryAfter: te.retryAfter()}
	case errors.As(err, &he):
		return errorAnswer{status: he.status, detail: he.detail}
	case errors.Is(err, errNotFound):
		return errorAnswer{status: http.StatusNotFound, detail: "no such object"}
	case errors.Is(err, errTooManyTokens):
		return errorAnswer{status: http.StatusConflict, detail: fmt.Sprintf("you already hold %s, the most allowed; revoke some first", plural(s.cfg.MaxTokensPerUser, "token"))}
	case errors.Is(err, errTokenExpired):
		return errorAnswer{status: http.StatusConflict, detail: "the token has expired; create a new one instead"}
	case errors.Is(err, errLastAdmin):
		return errorAnswer{status: http.StatusConflict, detail: errLastAdmin.Error()}
	case errors.Is(err, errNameTaken):
		return errorAnswer{status: http.StatusConflict, detail: "a user of that name already exists"}
	case errors.Is(err, errHashBusy):
		return errorAnswer{status: http.StatusServiceUnavailable, detail: "too many sign-ins at once; try again in a second, or use a token", retryAfter: "1"}
	case errors.Is(err, errStoreUnavailable):
		return errorAnswer{status: http.StatusServiceUnavailable, detail: storeUnavailableDetail, retryAfter: "2"}
	case isStorageFull(err):
		return errorAnswer{status: http.StatusInsufficientStorage, detail: "storage is full: nothing was written; reads still work; tell the operator"}
	}
	return errorAnswer{status: http.StatusInternalServerError}
}

// writeError answers err as classifyError says: an httpError with its own
// status and text, a store error with the status it stands for, anything
// else with a 500 whose cause is logged, never sent.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *authError
	if errors.As(err, &ae) {
		s.writeAuthError(w, ae)
		return
	}
	a := s.classifyError(err)
	switch a.status {
	case http.StatusInternalServerError:
		s.internalError(w, r, err)
		return
	case http.StatusInsufficientStorage:
		s.log.Error("storage full", "method", r.Method, "path", redactPath(r.URL.Path), "err", err)
	case http.StatusServiceUnavailable:
		if errors.Is(err, errStoreUnavailable) {
			s.log.Warn("database unavailable", "method", r.Method, "path", redactPath(r.URL.Path), "err", err)
		}
	}
	if a.retryAfter != "" {
		w.Header().Set("Retry-After", a.retryAfter)
	}
	writeProblem(w, a.status, a.detail)
}

// internalError logs err with the request's method and path and sends a 500
// that says nothing of the cause.
func (s *server) internalError(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error("internal error", "method", r.Method, "path", redactPath(r.URL.Path), "err", err)
	writeProblem(w, http.StatusInternalServerError, "the server failed to handle the request; see its log")
}

// decodeJSON reads r's body, which must be one JSON object of no unknown
// fields and at most maxBodyBytes, into dst. Its errors are httpErrors that
// say what is wrong.
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any) error {
	if err := requireContentType(r, "application/json"); err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(innermost(w), r.Body, maxBodyBytes)
	dec := json.NewDecoder(r.Body)
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return jsonError(err)
		}
		return clientError(http.StatusBadRequest, "the body must hold a single JSON object and nothing after it")
	}
	// Decoding null into a struct is a silent no-op: insist on an object.
	if raw[0] != '{' {
		return clientError(http.StatusBadRequest, "the body must be a JSON object, not %s", jsonKind(raw[0]))
	}
	obj := json.NewDecoder(bytes.NewReader(raw))
	obj.DisallowUnknownFields()
	if err := obj.Decode(dst); err != nil {
		return jsonError(err)
	}
	return nil
}

// formValue reads r's body, which must be a URL-encoded form of at most
// maxBodyBytes, and returns the field name, which must not be empty. Its
// errors are httpErrors that say what is wrong. It never reads the query
// string.
func formValue(w http.ResponseWriter, r *http.Request, name string) (string, error) {
	if err := requireContentType(r, "application/x-www-form-urlencoded"); err != nil {
		return "", err
	}
	r.Body = http.MaxBytesReader(innermost(w), r.Body, maxBodyBytes)
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return "", jsonError(err)
		}
		return "", clientError(http.StatusBadRequest, "malformed form body: %v", err)
	}
	v := r.PostForm.Get(name)
	if v == "" {
		return "", clientError(http.StatusBadRequest, "the form field %s is required", name)
	}
	return v, nil
}

// jsonKind names the JSON value that starts with c.
func jsonKind(c byte) string {
	switch c {
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	}
	return "a number"
}

// requireContentType fails with 415 unless r's body is of media type want.
func requireContentType(r *http.Request, want string) error {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || mt != want {
		if ct == "" {
			ct = "none"
		}
		return clientError(http.StatusUnsupportedMediaType, "Content-Type must be %s, got %s", want, truncate(ct, 100))
	}
	return nil
}

// jsonError turns a decoding error into a message a person can act on.
func jsonError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return clientError(http.StatusRequestEntityTooLarge, "the body is larger than %d bytes", mbe.Limit)
	case errors.Is(err, io.EOF):
		return clientError(http.StatusBadRequest, "the body is empty; send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return clientError(http.StatusBadRequest, "the body ends in the middle of the JSON")
	case errors.As(err, &syntax):
		return clientError(http.StatusBadRequest, "malformed JSON at byte %d: %s", syntax.Offset, strings.TrimPrefix(syntax.Error(), "json: "))
	case errors.As(err, &typ):
		if typ.Field == "" {
			return clientError(http.StatusBadRequest, "the body must be a JSON object, not %s", typ.Value)
		}
		return clientError(http.StatusBadRequest, "field %q must be %s, not %s", typ.Field, jsonTypeName(typ.Type.Kind().String()), typ.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return clientError(http.StatusBadRequest, "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	}
	var he *httpError
	if errors.As(err, &he) {
		return he
	}
	return clientError(http.StatusBadRequest, "invalid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
}

func jsonTypeName(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	case "bool":
		return "true or false"
	default:
		return "a number"
	}
}
