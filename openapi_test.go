package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// apiContract checks exchanges with the server against openapi.yaml. Every
// request the tests send through testServer.serve goes through it, so that
// the document cannot drift from the code.
type apiContract struct {
	doc    *openapi3.T
	router routers.Router
}

// loadContract parses and validates the embedded document once per test
// binary.
var loadContract = sync.OnceValues(func() (*apiContract, error) {
	// kin-openapi checks date-time with a pattern that wants an upper-case
	// T and Z; RFC 3339 §5.6 allows lower case too.
	openapi3.DefineStringFormatValidator("date-time", openapi3.NewRegexpFormatValidator("(?i)"+openapi3.FormatOfStringDateTime))
	doc, err := openapi3.NewLoader().LoadFromData(openapiYAML)
	if err != nil {
		return nil, fmt.Errorf("load openapi.yaml: %w", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, fmt.Errorf("openapi.yaml is not a valid OpenAPI document: %w", err)
	}
	// The servers say where a deployment may listen; the tests' requests
	// go to other hosts, so route by path alone.
	doc.Servers = nil
	rt, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("route openapi.yaml: %w", err)
	}
	return &apiContract{doc: doc, router: rt}, nil
})

// contractCovers reports whether the document speaks for path: the JSON
// API (but not the document itself), forward auth and the operational
// endpoints. The HTML pages are not part of it.
func contractCovers(path string) bool {
	switch {
	case path == "/api/v1/openapi.yaml":
		return false
	case strings.HasPrefix(path, "/api/"), path == "/auth", strings.HasPrefix(path, "/auth/"):
		return true
	case path == "/.well-known/oauth-authorization-server", path == "/oauth/token", path == "/oauth/revoke",
		path == "/oauth/device_authorization":
		return true // OAuth's endpoints for clients; its pages are not
	}
	return path == "/healthz" || path == "/readyz" || path == "/metrics"
}

// contractOptions are the validator's options: every status must be
// documented, and credentials must be of a scheme the operation lists.
var contractOptions = &openapi3filter.Options{
	IncludeResponseStatus: true,
	AuthenticationFunc:    checkCredentials,
}

// checkCredentials passes when the request's Authorization header uses the
// security scheme asked about. Whether the credentials are good is the
// server's business; the document only says which kinds an operation takes.
func checkCredentials(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	scheme, _, _ := strings.Cut(in.RequestValidationInput.Request.Header.Get("Authorization"), " ")
	if in.SecurityScheme == nil || !strings.EqualFold(scheme, in.SecurityScheme.Scheme) {
		return fmt.Errorf("no %s credentials", in.SecuritySchemeName)
	}
	return nil
}

// check returns why the exchange breaks the document, or nil: r was sent
// with body and answered with status, header and respBody. Rules:
//
//   - a method and path the document lacks must be refused with 405 or
//     404, as a problem;
//   - a request the document forbids must be refused with a 4xx;
//   - every answer must be documented for its operation and status: its
//     media type, body and headers;
//   - an answer documented without content must have no body;
//   - HEAD is checked as the GET it stands for (the document says that
//     every GET answers HEAD), on its status and headers: net/http sends
//     no body, whatever the handler writes.
func (c *apiContract) check(r *http.Request, body []byte, status int, header http.Header, respBody []byte) error {
	ctx := context.Background()
	req := r.Clone(ctx)
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.ContentLength = int64(len(body))
	head := req.Method == http.MethodHead
	options := contractOptions
	if head {
		req.Method = http.MethodGet
		headOptions := *contractOptions
		headOptions.ExcludeResponseBody = true
		options = &headOptions
	}
	route, params, err := c.findRoute(req)
	if err != nil {
		var re *routers.RouteError
		if !errors.As(err, &re) {
			return fmt.Errorf("find the operation: %v", err)
		}
		documented := c.methodsOf(req)
		want := http.StatusNotFound
		if len(documented) > 0 {
			want = http.StatusMethodNotAllowed
		}
		if status != want {
			return fmt.Errorf("the document has no such operation (%s), but the server answered %d, not %d", re.Reason, status, want)
		}
		if want == http.StatusMethodNotAllowed {
			var allowed []string
			for _, m := range strings.Split(header.Get("Allow"), ",") {
				if m = strings.TrimSpace(m); m != http.MethodOptions {
					allowed = append(allowed, m)
				}
			}
			slices.Sort(allowed)
			if !slices.Equal(allowed, documented) {
				return fmt.Errorf("the server allows %v on this path; the document describes %v", allowed, documented)
			}
		}
		if head {
			return nil
		}
		return c.checkProblem(header, respBody)
	}

	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: options}
	if reqErr := openapi3filter.ValidateRequest(ctx, in); reqErr != nil && (status < 400 || status > 499) {
		return fmt.Errorf("the server answered %d to a request that the document forbids: %v", status, reqErr)
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 status,
		Header:                 header,
		Body:                   io.NopCloser(bytes.NewReader(respBody)),
		Options:                options,
	}
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		return fmt.Errorf("the answer %d breaks the document: %v", status, err)
	}
	if head {
		return nil
	}
	if resp := route.Operation.Responses.Status(status); resp != nil && len(resp.Value.Content) == 0 && len(respBody) > 0 {
		return fmt.Errorf("the answer %d has a body of %d bytes; the document says it has none", status, len(respBody))
	}
	return nil
}

// findRoute finds the operation of r. kin-openapi's legacy router lets a
// path parameter match nothing (/api/v1/tokens as /api/v1/tokens/{id}); a
// path segment is never empty, so such a match is no match.
func (c *apiContract) findRoute(r *http.Request) (*routers.Route, map[string]string, error) {
	route, params, err := c.router.FindRoute(r)
	if err != nil {
		return nil, nil, err
	}
	for _, v := range params {
		if v == "" {
			return nil, nil, &routers.RouteError{Reason: routers.ErrPathNotFound.Error()}
		}
	}
	return route, params, nil
}

// methodsOf returns, sorted, the methods the document describes for the
// path of r: HEAD wherever it describes GET.
func (c *apiContract) methodsOf(r *http.Request) []string {
	var methods []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		probe := r.Clone(context.Background())
		probe.Method = m
		if _, _, err := c.findRoute(probe); err == nil {
			methods = append(methods, m)
			if m == http.MethodGet {
				methods = append(methods, http.MethodHead)
			}
		}
	}
	slices.Sort(methods)
	return methods
}

// checkProblem returns why an answer is not an RFC 9457 problem as the
// document's Problem schema describes it, or nil.
func (c *apiContract) checkProblem(header http.Header, body []byte) error {
	if ct := header.Get("Content-Type"); ct != "application/problem+json" {
		return fmt.Errorf("Content-Type = %q; want application/problem+json", ct)
	}
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("the problem %q is not JSON: %v", body, err)
	}
	if err := c.doc.Components.Schemas["Problem"].Value.VisitJSON(v, openapi3.EnableJSONSchema2020()); err != nil {
		return fmt.Errorf("the problem breaks the Problem schema: %v", err)
	}
	return nil
}

// serve sends r through the whole router and, for paths the document
// covers, checks the request and the answer against it. A breach fails the
// test (without stopping it) with the reason.
func (ts *testServer) serve(r *http.Request) *httptest.ResponseRecorder {
	ts.t.Helper()
	var body []byte
	if r.Body != nil {
		var err error
		if body, err = io.ReadAll(r.Body); err != nil {
			ts.t.Fatalf("read the body of %s %s: %v", r.Method, r.URL.Path, err)
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	sent := r.Clone(context.Background()) // as sent: handlers may rewrite r.URL
	w := httptest.NewRecorder()
	ts.handler.ServeHTTP(w, r)
	if !contractCovers(sent.URL.Path) {
		return w
	}
	c, err := loadContract()
	if err != nil {
		ts.t.Fatal(err)
	}
	if err := c.check(sent, body, w.Code, w.Header(), w.Body.Bytes()); err != nil {
		ts.t.Errorf("%s %s: openapi.yaml: %v", sent.Method, sent.URL.RequestURI(), err)
	}
	return w
}

// TestOpenAPIDocument checks that the document is valid OpenAPI 3.1, that
// it is served as is, and that every route of the JSON API is in it.
func TestOpenAPIDocument(t *testing.T) {
	c, err := loadContract()
	if err != nil {
		t.Fatal(err)
	}
	if c.doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi.yaml declares OpenAPI %q; want 3.1.0", c.doc.OpenAPI)
	}
	ts := newTestServer(t)
	w := ts.do(request{method: "GET", path: "/api/v1/openapi.yaml"})
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/yaml" || !bytes.Equal(w.Body.Bytes(), openapiYAML) {
		t.Errorf("GET /api/v1/openapi.yaml = %d %q, %d bytes; want 200 application/yaml with the document", w.Code, w.Header().Get("Content-Type"), w.Body.Len())
	}
	// Every route the router holds under /api/v1, forward auth and the
	// operational ones are documented with their methods (HEAD is GET's).
	routes := 0
	for _, route := range ts.routeList {
		method, pattern, _ := strings.Cut(route, " ")
		if method == http.MethodHead || !contractCovers(pattern) && pattern != "/api/v1/openapi.yaml" {
			continue
		}
		routes++
		rt := struct{ method, path string }{method, regexp.MustCompile(`:(\w+)`).ReplaceAllString(pattern, "{$1}")}
		item := c.doc.Paths.Value(rt.path)
		if item == nil || item.GetOperation(rt.method) == nil {
			t.Errorf("openapi.yaml does not describe %s %s", rt.method, rt.path)
		}
	}
	if routes < 18 {
		t.Errorf("only %d routes of the router checked against the document; the list is broken", routes)
	}
}

// TestOpenAPIValidatorCatchesDrift feeds the validator exchanges that the
// document forbids and checks that each is caught: without this, a
// validator that never ran would pass every test.
func TestOpenAPIValidatorCatchesDrift(t *testing.T) {
	c, err := loadContract()
	if err != nil {
		t.Fatal(err)
	}
	bearer := map[string]string{"Authorization": "Bearer tkd_x"}
	problemJSON := map[string]string{"Content-Type": "application/problem+json"}
	appJSON := map[string]string{"Content-Type": "application/json"}
	goodToken := `{"id":1,"name":"n","scopes":[],"created_at":"2030-01-02T03:04:05Z","expires_at":null,"last_used_at":null,"last_used_ip":null,"hint":"abcd","expired":false}`
	tests := []struct {
		name           string
		method, path   string
		reqHeader      map[string]string
		reqBody        string
		status         int
		respHeader     map[string]string
		respBody       string
		wantErr        string // "" when the exchange keeps to the document
		wantErrAnyText bool
	}{
		{name: "a good answer passes", method: "GET", path: "/api/v1/token", reqHeader: bearer,
			status: 200, respHeader: appJSON, respBody: goodToken},
		{name: "a member missing", method: "GET", path: "/api/v1/user", reqHeader: bearer,
			status: 200, respHeader: appJSON, respBody: `{"id":1,"admin":false,"created_at":"2030-01-02T03:04:05Z"}`,
			wantErr: "name"},
		{name: "an unknown member", method: "GET", path: "/api/v1/user", reqHeader: bearer,
			status: 200, respHeader: appJSON, respBody: `{"id":1,"name":"a","admin":false,"created_at":"2030-01-02T03:04:05Z","password_hash":"x"}`,
			wantErr: "password_hash"},
		{name: "a secret in a listed token", method: "GET", path: "/api/v1/token", reqHeader: bearer,
			status: 200, respHeader: appJSON, respBody: strings.Replace(goodToken, `"id":1`, `"id":1,"token":"tkd_x"`, 1),
			wantErrAnyText: true},
		{name: "an undocumented status", method: "GET", path: "/api/v1/user", reqHeader: bearer,
			status: 418, respHeader: problemJSON, respBody: `{"type":"about:blank","title":"I'm a teapot","status":418,"detail":"x"}`,
			wantErr: "status is not supported"},
		{name: "the wrong media type", method: "GET", path: "/api/v1/user", reqHeader: bearer,
			status: 401, respHeader: map[string]string{"Content-Type": "application/json", "WWW-Authenticate": `Bearer realm="tokend"`},
			respBody: `{"type":"about:blank","title":"Unauthorized","status":401,"detail":"x"}`, wantErr: "Content-Type"},
		{name: "a 401 without a challenge", method: "GET", path: "/api/v1/user",
			status: 401, respHeader: problemJSON, respBody: `{"type":"about:blank","title":"Unauthorized","status":401,"detail":"x"}`,
			wantErr: "WWW-Authenticate"},
		{name: "a body where none is documented", method: "DELETE", path: "/api/v1/token", reqHeader: bearer,
			status: 204, respBody: "x", wantErr: "body"},
		{name: "a secret without no-store", method: "POST", path: "/api/v1/token/rotate", reqHeader: bearer,
			status: 201, respHeader: appJSON, respBody: strings.Replace(goodToken, `"id":1`, `"id":1,"token":"tkd_x"`, 1),
			wantErr: "Cache-Control"},
		{name: "a forbidden request accepted", method: "POST", path: "/api/v1/tokens", reqHeader: map[string]string{"Authorization": "Bearer tkd_x", "Content-Type": "application/json"},
			reqBody: `{"name":"x","expires_at":null,"owner":2}`,
			status:  201, respHeader: map[string]string{"Content-Type": "application/json", "Cache-Control": "no-store"},
			respBody: strings.Replace(goodToken, `"id":1`, `"id":1,"token":"tkd_x"`, 1), wantErr: "forbids"},
		{name: "a request without credentials accepted", method: "GET", path: "/api/v1/tokens",
			status: 200, respHeader: appJSON, respBody: `[]`, wantErr: "forbids"},
		{name: "an undocumented route answered", method: "GET", path: "/api/v1/secrets",
			status: 200, respHeader: appJSON, respBody: `{}`, wantErr: "no such operation"},
		{name: "an undocumented method answered", method: "PUT", path: "/api/v1/user",
			status: 200, respHeader: appJSON, respBody: `{}`, wantErr: "no such operation"},
		{name: "an undocumented route refused as it should", method: "GET", path: "/api/v1/secrets",
			status: 404, respHeader: problemJSON, respBody: `{"type":"about:blank","title":"Not Found","status":404,"detail":"no such endpoint"}`},
		{name: "an inactive introspection that says more", method: "POST", path: "/api/v1/introspect",
			reqHeader: map[string]string{"Authorization": "Bearer tkd_x", "Content-Type": "application/x-www-form-urlencoded"}, reqBody: "token=tkd_y",
			status: 200, respHeader: appJSON, respBody: `{"active":false,"reason":"expired"}`, wantErrAnyText: true},
		{name: "forward auth without the caller", method: "GET", path: "/auth/deploy", reqHeader: bearer,
			status: 204, respHeader: map[string]string{"X-Auth-User": "alice", "X-Auth-Scopes": "deploy", "X-Auth-Token-Id": "3"},
			wantErr: "X-Auth-User-Id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, tt.path, strings.NewReader(tt.reqBody))
			for k, v := range tt.reqHeader {
				r.Header.Set(k, v)
			}
			h := http.Header{}
			for k, v := range tt.respHeader {
				h.Set(k, v)
			}
			err := c.check(r, []byte(tt.reqBody), tt.status, h, []byte(tt.respBody))
			switch {
			case tt.wantErr == "" && !tt.wantErrAnyText:
				if err != nil {
					t.Errorf("check = %v; want no breach", err)
				}
			case err == nil:
				t.Errorf("check = nil; want a breach (%s)", tt.name)
			case !strings.Contains(err.Error(), tt.wantErr):
				t.Errorf("check = %v; want it to mention %q", err, tt.wantErr)
			}
		})
	}
}

// failRecorder is a testing.TB that records failures instead of failing,
// to show that testServer.serve reports a breach.
type failRecorder struct {
	testing.TB
	mu     sync.Mutex
	errors []string
}

func (f *failRecorder) Errorf(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
}

func (f *failRecorder) Helper() {}

// TestServeChecksEveryAPIRequest checks the hook itself: an answer through
// testServer.do that breaks the document fails the test, and one outside
// the document's paths is left alone.
func TestServeChecksEveryAPIRequest(t *testing.T) {
	ts := newTestServer(t)
	rec := &failRecorder{TB: t}
	ts.t = rec
	ts.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"id":"not a number"}`))
	})
	ts.do(request{method: "GET", path: "/api/v1/user", token: "tkd_x"})
	if len(rec.errors) != 1 || !strings.Contains(rec.errors[0], "GET /api/v1/user: openapi.yaml") {
		t.Errorf("a bad answer to GET /api/v1/user through ts.do reported %q; want one openapi.yaml breach", rec.errors)
	}
	rec.errors = nil
	ts.do(request{method: "GET", path: "/"})
	if len(rec.errors) != 0 {
		t.Errorf("GET / (not in the document) reported %q; want nothing", rec.errors)
	}
}

// TestAPIAnswersKeepToTheDocument walks one user through the API with the
// real server, so that each documented operation is exercised against
// the document at least once, including its error answers.
func TestAPIAnswersKeepToTheDocument(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", true)
	_, rw := ts.addToken(alice, "rw", scopesReadWrite, 48*time.Hour)
	_, narrow := ts.addToken(alice, "narrow", []string{scopeIntrospect}, 0)
	reqs := []struct {
		req  request
		want int
	}{
		{request{method: "GET", path: "/api/v1/user", token: rw}, 200},
		{request{method: "GET", path: "/api/v1/user"}, 401},
		{request{method: "GET", path: "/api/v1/user", token: "tkd_garbage"}, 401},
		{request{method: "GET", path: "/api/v1/user?access_token=x", token: rw}, 400},
		{request{method: "GET", path: "/api/v1/token", token: rw}, 200},
		{request{method: "GET", path: "/api/v1/tokens", token: rw}, 200},
		{request{method: "GET", path: "/api/v1/tokens", token: narrow}, 403},
		{request{method: "POST", path: "/api/v1/tokens", token: rw, body: tokenRequest("ci", scopesRead, nil)}, 403},
		{request{method: "POST", path: "/api/v1/tokens", token: rw, body: `{"name":"ci","expires_at":null,"owner":1}`}, 400},
		{request{method: "POST", path: "/api/v1/tokens", header: basicHeader(alice), body: tokenRequest("ci", scopesRead, nil)}, 201},
		{request{method: "POST", path: "/api/v1/tokens", header: map[string]string{"Authorization": basicAuth("alice", "wrong password")}, body: tokenRequest("ci", nil, nil)}, 401},
		{request{method: "POST", path: "/api/v1/tokens", token: rw, body: "name=x", header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}, 415},
		{request{method: "GET", path: "/api/v1/tokens/999", token: rw}, 404},
		{request{method: "GET", path: "/api/v1/tokens/abc", token: rw}, 404},
		{request{method: "POST", path: "/api/v1/revoke", body: `{"token":"tkd_nothing"}`}, 200},
		{request{method: "POST", path: "/api/v1/revoke", body: "token=tkd_nothing", header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}}, 200},
		{request{method: "POST", path: "/api/v1/revoke", body: `{}`}, 400},
		{request{method: "POST", path: "/api/v1/token/rotate", token: rw}, 201},
		{request{method: "GET", path: "/healthz"}, 200},
		{request{method: "GET", path: "/readyz"}, 200},
		{request{method: "GET", path: "/metrics"}, 401},
		{request{method: "GET", path: "/metrics", remote: "127.0.0.1:5555"}, 200},
		{request{method: "PUT", path: "/api/v1/user"}, 405},
		{request{method: "GET", path: "/api/v1/nope"}, 404},
	}
	for _, tt := range reqs {
		if w := ts.do(tt.req); w.Code != tt.want {
			t.Errorf("%s = %d; want %d; body: %s", label(tt.req), w.Code, tt.want, w.Body)
		}
	}
}
