package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Scope sets used throughout these tests.
var (
	scopesRead      = []string{scopeTokensRead}
	scopesWrite     = []string{scopeTokensWrite}
	scopesReadWrite = []string{scopeTokensRead, scopeTokensWrite}
)

// secretPattern is what every token of the default format looks like.
var secretPattern = regexp.MustCompile(`^tkd_[0-9A-Za-z]{49}$`)

// problemBody is an RFC 9457 answer as the API sends it.
type problemBody struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	Error  string `json:"error"`
}

// tokenBody is a token as the API shows it.
type tokenBody = tokenJSON

// userBody is the answer of GET /api/v1/user.
type userBody struct {
	ID        uint64    `json:"id"`
	Name      string    `json:"name"`
	Admin     bool      `json:"admin"`
	CreatedAt time.Time `json:"created_at"`
}

// basicHeader returns the headers that sign in as u with the password
// addUser gave them.
func basicHeader(u userRecord) map[string]string {
	return map[string]string{"Authorization": basicAuth(u.Name, "password-of-"+u.Name)}
}

// serveRaw sends r through ts's whole router, for requests that ts.do
// cannot build (repeated headers, say).
func serveRaw(ts *testServer, r *http.Request) *httptest.ResponseRecorder {
	ts.t.Helper()
	r.RemoteAddr = "192.0.2.7:4711"
	return ts.serve(r)
}

// label names a request in failure messages: "GET /api/v1/user".
func label(req request) string { return req.method + " " + req.path }

// checkStatus fails the test now unless w has status want: what follows
// would only report the same failure again.
func checkStatus(t *testing.T, what string, w *httptest.ResponseRecorder, want int) {
	t.Helper()
	if w.Code != want {
		t.Fatalf("%s = %d; want %d; body: %s", what, w.Code, want, w.Body)
	}
}

// checkProblem asserts that w is an application/problem+json answer of
// status want with every member of RFC 9457 that tokend sends, and returns it.
func checkProblem(t *testing.T, what string, w *httptest.ResponseRecorder, want int) problemBody {
	t.Helper()
	if w.Code != want {
		t.Errorf("%s = %d; want %d; body: %s", what, w.Code, want, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("%s: Content-Type = %q; want application/problem+json", what, ct)
	}
	var p problemBody
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Errorf("%s: body %q is not a JSON problem: %v", what, w.Body, err)
		return p
	}
	if p.Type == "" || p.Title != http.StatusText(want) || p.Status != want || p.Detail == "" {
		t.Errorf("%s: problem = %+v; want type, title %q, status %d and a detail", what, p, http.StatusText(want), want)
	}
	return p
}

// checkDetail asserts that a problem's detail contains every one of subs.
func checkDetail(t *testing.T, what string, p problemBody, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(p.Detail, sub) {
			t.Errorf("%s: detail %q does not mention %q", what, p.Detail, sub)
		}
	}
}

// parseChallenge splits a WWW-Authenticate value of one challenge into its
// scheme and auth-params (RFC 9110 §11.2), unquoting quoted strings.
func parseChallenge(h string) (scheme string, params map[string]string, err error) {
	scheme, rest, _ := strings.Cut(h, " ")
	params = map[string]string{}
	rest = strings.TrimSpace(rest)
	for rest != "" {
		name, after, ok := strings.Cut(rest, "=")
		if !ok {
			return "", nil, fmt.Errorf("auth-param %q has no '='", rest)
		}
		name = strings.ToLower(strings.TrimSpace(name))
		var value string
		if strings.HasPrefix(after, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(after) && after[i] != '"'; i++ {
				if after[i] == '\\' && i+1 < len(after) {
					i++
				}
				b.WriteByte(after[i])
			}
			if i == len(after) {
				return "", nil, fmt.Errorf("auth-param %s: unterminated quoted string", name)
			}
			value, after = b.String(), after[i+1:]
		} else {
			end := strings.IndexByte(after, ',')
			if end < 0 {
				end = len(after)
			}
			value, after = strings.TrimSpace(after[:end]), after[end:]
		}
		if _, dup := params[name]; dup {
			return "", nil, fmt.Errorf("auth-param %s appears twice", name)
		}
		params[name] = value
		after = strings.TrimSpace(after)
		if after != "" {
			if after[0] != ',' {
				return "", nil, fmt.Errorf("junk %q after auth-param %s", after, name)
			}
			after = strings.TrimSpace(after[1:])
		}
		rest = after
	}
	return scheme, params, nil
}

// checkChallenge asserts that w carries one RFC 6750 Bearer challenge of
// realm tokend with error code (none when "") and, if scope is not "", that
// scope. Without a code the header must be exactly the bare challenge.
func checkChallenge(t *testing.T, what string, w *httptest.ResponseRecorder, code, scope string) {
	t.Helper()
	values := w.Header().Values("WWW-Authenticate")
	if len(values) != 1 {
		t.Errorf("%s: WWW-Authenticate = %q; want one Bearer challenge", what, values)
		return
	}
	if code == "" {
		if values[0] != `Bearer realm="tokend"` {
			t.Errorf("%s: WWW-Authenticate = %q; want exactly %q", what, values[0], `Bearer realm="tokend"`)
		}
		return
	}
	scheme, params, err := parseChallenge(values[0])
	if err != nil {
		t.Errorf("%s: WWW-Authenticate %q: %v", what, values[0], err)
		return
	}
	if scheme != "Bearer" || params["realm"] != "tokend" || params["error"] != code {
		t.Errorf("%s: WWW-Authenticate = %q; want Bearer realm=\"tokend\", error=%q", what, values[0], code)
	}
	if params["scope"] != scope {
		t.Errorf("%s: WWW-Authenticate = %q; want scope=%q", what, values[0], scope)
	}
}

// checkTokenKeys asserts that a token object has every member the design
// lists, scopes as an array, and the secret only where withSecret says.
func checkTokenKeys(t *testing.T, what string, m map[string]any, withSecret bool) {
	t.Helper()
	for _, k := range []string{"id", "name", "scopes", "created_at", "expires_at", "last_used_at", "last_used_ip", "hint", "expired"} {
		if _, ok := m[k]; !ok {
			t.Errorf("%s: token object %v lacks %q", what, m, k)
		}
	}
	if _, ok := m["scopes"].([]any); !ok {
		t.Errorf("%s: scopes = %v; want a JSON array", what, m["scopes"])
	}
	if _, ok := m["token"]; ok != withSecret {
		t.Errorf("%s: token object has the secret: %t; want %t", what, ok, withSecret)
	}
}

// decodeToken decodes a single token answer and checks its members.
func decodeToken(t *testing.T, what string, w *httptest.ResponseRecorder, withSecret bool) tokenBody {
	t.Helper()
	var m map[string]any
	decode(t, w, &m)
	checkTokenKeys(t, what, m, withSecret)
	var b tokenBody
	decode(t, w, &b)
	return b
}

// checkSecretAnswer asserts that w is the 201 that shows a new secret once,
// and returns the token it describes.
func checkSecretAnswer(t *testing.T, what string, w *httptest.ResponseRecorder) tokenBody {
	t.Helper()
	checkStatus(t, what, w, http.StatusCreated)
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("%s: Cache-Control = %q; want no-store", what, cc)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type = %q; want application/json", what, ct)
	}
	b := decodeToken(t, what, w, true)
	if !secretPattern.MatchString(b.Token) {
		t.Fatalf("%s: token %q does not match %s", what, b.Token, secretPattern)
	}
	if want := b.Token[len(b.Token)-4:]; b.Hint != want {
		t.Errorf("%s: hint = %q; want %q, the last 4 characters of the token", what, b.Hint, want)
	}
	if b.ID == 0 {
		t.Errorf("%s: id = 0; want the id of the new token", what)
	}
	return b
}

// checkSecretKept asserts that secret appears in no bbolt key or value and
// no log line.
func checkSecretKept(t *testing.T, ts *testServer, secret string) {
	t.Helper()
	for k, v := range ts.snapshot() {
		if strings.Contains(k, secret) || strings.Contains(v, secret) {
			t.Errorf("the database holds the plaintext token at %s", k)
		}
	}
	if strings.Contains(ts.logs.String(), secret) {
		t.Errorf("the log holds the plaintext token:\n%s", ts.logs)
	}
}

// checkStoreConsistent fails if any record lacks an index entry or the reverse.
func checkStoreConsistent(t *testing.T, ts *testServer) {
	t.Helper()
	if err := ts.store.Check(); err != nil {
		t.Errorf("store.Check after the requests: %v", err)
	}
}

// checkWorks asserts that secret authenticates as token id.
func checkWorks(t *testing.T, ts *testServer, what, secret string, id uint64) {
	t.Helper()
	w := ts.do(request{method: "GET", path: "/api/v1/token", token: secret})
	if w.Code != http.StatusOK {
		t.Errorf("%s: GET /api/v1/token = %d; want 200; body: %s", what, w.Code, w.Body)
		return
	}
	var b tokenBody
	decode(t, w, &b)
	if b.ID != id {
		t.Errorf("%s: GET /api/v1/token shows token %d; want %d", what, b.ID, id)
	}
}

// checkDead asserts that secret is refused as an invalid token.
func checkDead(t *testing.T, ts *testServer, what, secret string) {
	t.Helper()
	w := ts.do(request{method: "GET", path: "/api/v1/user", token: secret})
	p := checkProblem(t, what+": GET /api/v1/user", w, http.StatusUnauthorized)
	if p.Error != "invalid_token" {
		t.Errorf("%s: GET /api/v1/user error = %q; want invalid_token", what, p.Error)
	}
	if _, _, err := ts.store.TokenByHash(hashToken(secret)); !errors.Is(err, errNotFound) {
		t.Errorf("%s: store.TokenByHash = %v; want errNotFound", what, err)
	}
}

func timePtr(t time.Time) *time.Time { return &t }

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Equal(*b)
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "null"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// tokenRequest returns the JSON body of POST /api/v1/tokens.
func tokenRequest(name string, scopes []string, expires *time.Time) string {
	b, err := json.Marshal(map[string]any{"name": name, "scopes": scopes, "expires_at": expires})
	if err != nil {
		panic(err)
	}
	return string(b)
}

// bearerGet returns GET path with the Authorization header auth ("" for none).
func bearerGet(path, auth string) *http.Request {
	r := httptest.NewRequest("GET", path, nil)
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	return r
}

// TestBearerErrors checks the RFC 6750 answers to every way a Bearer
// token can be missing, malformed, bad or short of a scope.
func TestBearerErrors(t *testing.T) {
	tests := []struct {
		name       string
		req        func(t *testing.T, ts *testServer, u userRecord) *http.Request
		wantStatus int
		wantCode   string // RFC 6750 error code; "" for none
		wantScope  string
	}{
		{
			name: "no Authorization header",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				return bearerGet("/api/v1/user", "")
			},
			wantStatus: http.StatusUnauthorized,
		},
		{
			name: "no Authorization header on POST /api/v1/tokens",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				r := httptest.NewRequest("POST", "/api/v1/tokens", strings.NewReader(tokenRequest("x", nil, nil)))
				r.Header.Set("Content-Type", "application/json")
				return r
			},
			wantStatus: http.StatusUnauthorized,
		},
		{
			name: "Bearer alone",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				return bearerGet("/api/v1/user", "Bearer")
			},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_request",
		},
		{
			name: "Bearer and spaces",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				return bearerGet("/api/v1/user", "Bearer    ")
			},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_request",
		},
		{
			name: "empty Authorization header",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				r := bearerGet("/api/v1/user", "")
				r.Header["Authorization"] = []string{""}
				return r
			},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_request",
		},
		{
			name: "Bearer a b",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				_, secret := ts.addToken(u, "cli", nil, 0)
				return bearerGet("/api/v1/user", "Bearer "+secret+" "+secret)
			},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_request",
		},
		{
			name: "Basic on /api/v1/user",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				return bearerGet("/api/v1/user", "Basic xyz")
			},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_request",
		},
		{
			name: "valid Basic credentials on /api/v1/user",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				return bearerGet("/api/v1/user", basicHeader(u)["Authorization"])
			},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_request",
		},
		{
			name: "two Authorization headers",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				_, secret := ts.addToken(u, "cli", nil, 0)
				r := bearerGet("/api/v1/user", "")
				r.Header.Add("Authorization", "Bearer "+secret)
				r.Header.Add("Authorization", "Bearer "+secret)
				return r
			},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_request",
		},
		{
			name: "token in the access_token query parameter",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				_, secret := ts.addToken(u, "cli", nil, 0)
				return bearerGet("/api/v1/user?access_token="+secret, "")
			},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_request",
		},
		{
			name: "token in the query as well as the header",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				_, secret := ts.addToken(u, "cli", nil, 0)
				return bearerGet("/api/v1/user?access_token="+secret, "Bearer "+secret)
			},
			wantStatus: http.StatusBadRequest, wantCode: "invalid_request",
		},
		{
			name: "unknown well-formed token",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				secret, err := ts.format.generate()
				if err != nil {
					t.Fatalf("generate: %v", err)
				}
				return bearerGet("/api/v1/user", "Bearer "+secret)
			},
			wantStatus: http.StatusUnauthorized, wantCode: "invalid_token",
		},
		{
			name: "bad checksum",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				_, secret := ts.addToken(u, "cli", nil, 0)
				b := []byte(secret)
				if b[10] == 'A' {
					b[10] = 'B'
				} else {
					b[10] = 'A'
				}
				return bearerGet("/api/v1/user", "Bearer "+string(b))
			},
			wantStatus: http.StatusUnauthorized, wantCode: "invalid_token",
		},
		{
			name: "wrong prefix",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				other, err := newTokenFormat("xyz_")
				if err != nil {
					t.Fatalf("newTokenFormat: %v", err)
				}
				secret, err := other.generate()
				if err != nil {
					t.Fatalf("generate: %v", err)
				}
				return bearerGet("/api/v1/user", "Bearer "+secret)
			},
			wantStatus: http.StatusUnauthorized, wantCode: "invalid_token",
		},
		{
			name: "truncated token",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				_, secret := ts.addToken(u, "cli", nil, 0)
				return bearerGet("/api/v1/user", "Bearer "+secret[:len(secret)-1])
			},
			wantStatus: http.StatusUnauthorized, wantCode: "invalid_token",
		},
		{
			name: "expired at its expiry, working one nanosecond before",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				_, secret := ts.addToken(u, "short", nil, time.Hour)
				ts.clock.Add(time.Hour - time.Nanosecond)
				if w := ts.do(request{method: "GET", path: "/api/v1/user", token: secret}); w.Code != http.StatusOK {
					t.Fatalf("GET /api/v1/user 1ns before expiry = %d; want 200; body: %s", w.Code, w.Body)
				}
				ts.clock.Add(time.Nanosecond)
				return bearerGet("/api/v1/user", "Bearer "+secret)
			},
			wantStatus: http.StatusUnauthorized, wantCode: "invalid_token",
		},
		{
			name: "expired a day ago",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				_, secret := ts.addToken(u, "short", nil, time.Hour)
				ts.clock.Add(25 * time.Hour)
				return bearerGet("/api/v1/user", "Bearer "+secret)
			},
			wantStatus: http.StatusUnauthorized, wantCode: "invalid_token",
		},
		{
			name: "revoked",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				_, secret := ts.addToken(u, "cli", nil, 0)
				if w := ts.do(request{method: "DELETE", path: "/api/v1/token", token: secret}); w.Code != http.StatusNoContent {
					t.Fatalf("DELETE /api/v1/token = %d; want 204; body: %s", w.Code, w.Body)
				}
				return bearerGet("/api/v1/user", "Bearer "+secret)
			},
			wantStatus: http.StatusUnauthorized, wantCode: "invalid_token",
		},
		{
			name: "missing tokens:read on GET /api/v1/tokens",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				_, secret := ts.addToken(u, "writer", scopesWrite, 0)
				return bearerGet("/api/v1/tokens", "Bearer "+secret)
			},
			wantStatus: http.StatusForbidden, wantCode: "insufficient_scope", wantScope: scopeTokensRead,
		},
		{
			name: "missing tokens:read on GET /api/v1/tokens/:id",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				tok, secret := ts.addToken(u, "writer", scopesWrite, 0)
				return bearerGet("/api/v1/tokens/"+strconv.FormatUint(tok.ID, 10), "Bearer "+secret)
			},
			wantStatus: http.StatusForbidden, wantCode: "insufficient_scope", wantScope: scopeTokensRead,
		},
		{
			name: "missing tokens:write on DELETE /api/v1/tokens/:id",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				tok, secret := ts.addToken(u, "reader", scopesRead, 0)
				r := httptest.NewRequest("DELETE", "/api/v1/tokens/"+strconv.FormatUint(tok.ID, 10), nil)
				r.Header.Set("Authorization", "Bearer "+secret)
				return r
			},
			wantStatus: http.StatusForbidden, wantCode: "insufficient_scope", wantScope: scopeTokensWrite,
		},
		{
			name: "missing tokens:write on POST /api/v1/tokens",
			req: func(t *testing.T, ts *testServer, u userRecord) *http.Request {
				_, secret := ts.addToken(u, "reader", scopesRead, 0)
				r := httptest.NewRequest("POST", "/api/v1/tokens", strings.NewReader(tokenRequest("x", nil, nil)))
				r.Header.Set("Content-Type", "application/json")
				r.Header.Set("Authorization", "Bearer "+secret)
				return r
			},
			wantStatus: http.StatusForbidden, wantCode: "insufficient_scope", wantScope: scopeTokensWrite,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t)
			u := ts.addUser("alice", false)
			r := tt.req(t, ts, u)
			before := ts.snapshot()
			w := serveRaw(ts, r)
			what := r.Method + " " + r.URL.Path
			p := checkProblem(t, what, w, tt.wantStatus)
			checkChallenge(t, what, w, tt.wantCode, tt.wantScope)
			if p.Error != tt.wantCode {
				t.Errorf("%s: body error = %q; want %q", what, p.Error, tt.wantCode)
			}
			assertUnchanged(t, what, before, ts.snapshot())
		})
	}

	// The table above only means something if good tokens get through.
	t.Run("valid token, scheme in any case", func(t *testing.T) {
		ts := newTestServer(t)
		u := ts.addUser("alice", false)
		_, secret := ts.addToken(u, "cli", scopesRead, time.Hour)
		for _, auth := range []string{"Bearer " + secret, "bearer " + secret, "BEARER  " + secret} {
			w := serveRaw(ts, bearerGet("/api/v1/tokens", auth))
			if w.Code != http.StatusOK {
				t.Errorf("GET /api/v1/tokens with %q = %d; want 200; body: %s", auth[:8], w.Code, w.Body)
			}
			if h := w.Header().Get("WWW-Authenticate"); h != "" {
				t.Errorf("GET /api/v1/tokens with a good token: WWW-Authenticate = %q; want none", h)
			}
		}
	})
}

// TestBearerChallengeSyntax checks that every challenge tokend sends keeps
// to the character set RFC 6750 §3 allows in error, error_description and
// scope (no '"' and no '\'), so that clients can parse it.
func TestBearerChallengeSyntax(t *testing.T) {
	ts := newTestServer(t)
	u := ts.addUser("alice", false)
	_, writer := ts.addToken(u, "writer", scopesWrite, 0)
	_, reader := ts.addToken(u, "reader", scopesRead, 0)
	_, short := ts.addToken(u, "short", scopesRead, time.Minute)
	unknown, err := ts.format.generate()
	if err != nil {
		t.Fatalf("generate: %v", err)
	}
	ts.clock.Add(time.Hour)

	tests := []struct {
		name string
		req  request
	}{
		{"invalid_request", request{method: "GET", path: "/api/v1/user", header: map[string]string{"Authorization": "Basic xyz"}}},
		{"invalid_token, malformed", request{method: "GET", path: "/api/v1/user", token: "tkd_nope"}},
		{"invalid_token, unknown", request{method: "GET", path: "/api/v1/user", token: unknown}},
		{"invalid_token, expired", request{method: "GET", path: "/api/v1/user", token: short}},
		{"insufficient_scope tokens:read", request{method: "GET", path: "/api/v1/tokens", token: writer}},
		{"insufficient_scope tokens:write", request{method: "POST", path: "/api/v1/tokens", token: reader, body: tokenRequest("x", nil, nil)}},
	}
	// qdtext of RFC 6750 §3 for error and error_description; scope-token
	// adds nothing but excludes the space, which separates scope tokens.
	allowed := func(c rune) bool { return c == 0x20 || c == 0x21 || 0x23 <= c && c <= 0x5B || 0x5D <= c && c <= 0x7E }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := ts.do(tt.req)
			h := w.Header().Get("WWW-Authenticate")
			if h == "" {
				t.Fatalf("%s = %d with no WWW-Authenticate; want a Bearer challenge; body: %s", label(tt.req), w.Code, w.Body)
			}
			_, params, err := parseChallenge(h)
			if err != nil {
				t.Fatalf("%s: WWW-Authenticate %q: %v", label(tt.req), h, err)
			}
			for _, name := range []string{"error", "error_description", "scope"} {
				v, ok := params[name]
				if !ok {
					continue
				}
				if i := strings.IndexFunc(v, func(c rune) bool { return !allowed(c) }); i >= 0 {
					t.Errorf("%s: WWW-Authenticate %s=%q holds %q, which RFC 6750 §3 forbids (allowed: %%x20-21 / %%x23-5B / %%x5D-7E); header: %s",
						label(tt.req), name, v, v[i:i+1], h)
				}
			}
		})
	}
}

// TestOwnership checks that a user can neither see, revoke nor rotate
// another user's tokens, and learns of them nothing but 404.
func TestOwnership(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	bob := ts.addUser("bob", false)
	aliceCLI, aliceSecret := ts.addToken(alice, "alice-cli", scopesReadWrite, 0)
	aliceCI, _ := ts.addToken(alice, "alice-ci", scopesRead, time.Hour)
	bobCLI, bobSecret := ts.addToken(bob, "bob-cli", scopesReadWrite, 0)
	bobCI, bobCISecret := ts.addToken(bob, "bob-ci", scopesRead, time.Hour)

	// Controls: the same routes answer their owners, so a 404 below is
	// about ownership, not a broken route.
	for _, c := range []struct {
		secret string
		id     uint64
	}{{aliceSecret, aliceCI.ID}, {bobSecret, bobCI.ID}} {
		req := request{method: "GET", path: fmt.Sprintf("/api/v1/tokens/%d", c.id), token: c.secret}
		checkStatus(t, label(req)+" by its owner", ts.do(req), http.StatusOK)
	}

	id := func(n uint64) string { return strconv.FormatUint(n, 10) }
	var reqs []request
	for _, target := range []string{id(bobCLI.ID), id(bobCI.ID), "abc", "0", "-1", "1.5", "+1", "0x1", "18446744073709551616", "999"} {
		reqs = append(reqs,
			request{method: "GET", path: "/api/v1/tokens/" + target},
			request{method: "DELETE", path: "/api/v1/tokens/" + target},
			request{method: "POST", path: "/api/v1/tokens/" + target + "/rotate"},
		)
	}
	for _, req := range reqs {
		t.Run(label(req), func(t *testing.T) {
			req.token = aliceSecret
			before := ts.snapshot()
			w := ts.do(req)
			p := checkProblem(t, label(req)+" by alice", w, http.StatusNotFound)
			for _, secret := range []string{"bob", bobCLI.Name, bobCI.Name, bobCLI.Hint, bobCI.Hint} {
				if strings.Contains(p.Detail, secret) {
					t.Errorf("%s by alice: detail %q reveals %q", label(req), p.Detail, secret)
				}
			}
			assertUnchanged(t, label(req)+" by alice", before, ts.snapshot())
		})
	}

	t.Run("bob's tokens still work", func(t *testing.T) {
		checkWorks(t, ts, "bob-cli", bobSecret, bobCLI.ID)
		checkWorks(t, ts, "bob-ci", bobCISecret, bobCI.ID)
		checkStoreConsistent(t, ts)
	})

	t.Run("each list holds only its owner's tokens", func(t *testing.T) {
		for _, c := range []struct {
			who     string
			secret  string
			wantIDs []uint64
		}{
			{"alice", aliceSecret, []uint64{aliceCI.ID, aliceCLI.ID}},
			{"bob", bobSecret, []uint64{bobCI.ID, bobCLI.ID}},
		} {
			w := ts.do(request{method: "GET", path: "/api/v1/tokens", token: c.secret})
			checkStatus(t, "GET /api/v1/tokens by "+c.who, w, http.StatusOK)
			var list []tokenBody
			decode(t, w, &list)
			var got []uint64
			for _, tok := range list {
				got = append(got, tok.ID)
			}
			if !slices.Equal(got, c.wantIDs) {
				t.Errorf("GET /api/v1/tokens by %s lists ids %v; want %v", c.who, got, c.wantIDs)
			}
		}
	})
}

// TestAPICreateToken creates tokens every way the API allows and checks the
// answer and what the store holds.
func TestAPICreateToken(t *testing.T) {
	now := newFakeClock().Now()
	tests := []struct {
		name         string
		admin        bool          // the owner is an admin
		basic        bool          // sign in with name:password instead of a token
		callerScopes []string      // without basic: the calling token's scopes
		callerLife   time.Duration // without basic: 0 for never
		body         string
		wantName     string
		wantScopes   []string
		wantExpires  *time.Time
	}{
		{
			name:  "Basic, expiring, scopes put in order",
			basic: true,
			body:  tokenRequest("ci", []string{scopeTokensWrite, scopeTokensRead}, timePtr(now.Add(30*24*time.Hour))),
			// declaration order of the registry, not the request's
			wantName: "ci", wantScopes: scopesReadWrite, wantExpires: timePtr(now.Add(30 * 24 * time.Hour)),
		},
		{
			name:     "Basic, never expires, no scopes",
			basic:    true,
			body:     `{"name":"laptop","scopes":[],"expires_at":null}`,
			wantName: "laptop", wantScopes: []string{},
		},
		{
			name:     "Basic, scopes omitted",
			basic:    true,
			body:     `{"name":"laptop","expires_at":null}`,
			wantName: "laptop", wantScopes: []string{},
		},
		{
			name:     "Basic, an admin may hold admin",
			admin:    true,
			basic:    true,
			body:     tokenRequest("ops", []string{scopeAdmin}, nil),
			wantName: "ops", wantScopes: []string{scopeAdmin},
		},
		{
			name:     "Basic, name trimmed, 100 characters of two bytes each",
			basic:    true,
			body:     tokenRequest("  "+strings.Repeat("é", 100)+" ", nil, nil),
			wantName: strings.Repeat("é", 100), wantScopes: []string{},
		},
		{
			name:         "Bearer with tokens:write, expiry given in another zone",
			callerScopes: scopesReadWrite,
			body:         `{"name":"deploy","scopes":["tokens:read"],"expires_at":"2030-01-03T00:00:00+01:00"}`,
			wantName:     "deploy", wantScopes: scopesRead,
			wantExpires: timePtr(time.Date(2030, 1, 2, 23, 0, 0, 0, time.UTC)),
		},
		{
			name:         "Bearer expiring in 1h makes one of 30m",
			callerScopes: scopesWrite,
			callerLife:   time.Hour,
			body:         tokenRequest("job", nil, timePtr(now.Add(30*time.Minute))),
			wantName:     "job", wantScopes: []string{}, wantExpires: timePtr(now.Add(30 * time.Minute)),
		},
		{
			name:         "Bearer expiring in 1h makes one of exactly 1h",
			callerScopes: scopesReadWrite,
			callerLife:   time.Hour,
			body:         tokenRequest("job", scopesReadWrite, timePtr(now.Add(time.Hour))),
			wantName:     "job", wantScopes: scopesReadWrite, wantExpires: timePtr(now.Add(time.Hour)),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t)
			u := ts.addUser("alice", tt.admin)
			req := request{method: "POST", path: "/api/v1/tokens", body: tt.body}
			if tt.basic {
				req.header = basicHeader(u)
			} else {
				_, req.token = ts.addToken(u, "caller", tt.callerScopes, tt.callerLife)
			}
			before := ts.snapshot()

			w := ts.do(req)
			what := label(req)
			got := checkSecretAnswer(t, what, w)
			if got.Name != tt.wantName || !slices.Equal(got.Scopes, tt.wantScopes) || !sameTime(got.ExpiresAt, tt.wantExpires) {
				t.Errorf("%s = name %q, scopes %q, expires %s; want %q, %q, %s",
					what, got.Name, got.Scopes, fmtTime(got.ExpiresAt), tt.wantName, tt.wantScopes, fmtTime(tt.wantExpires))
			}
			if !got.CreatedAt.Equal(ts.clock.Now()) || got.Expired || got.LastUsedAt != nil || got.LastUsedIP != nil {
				t.Errorf("%s = created %v, expired %t, last used %v from %v; want created %v, not expired, never used",
					what, got.CreatedAt, got.Expired, got.LastUsedAt, got.LastUsedIP, ts.clock.Now())
			}

			rec, owner, err := ts.store.TokenByHash(hashToken(got.Token))
			if err != nil {
				t.Fatalf("store.TokenByHash(new token): %v", err)
			}
			if rec.ID != got.ID || owner.ID != u.ID || rec.Name != tt.wantName || !slices.Equal(rec.Scopes, tt.wantScopes) ||
				!sameTime(rec.ExpiresAt, tt.wantExpires) || rec.Hint != got.Hint {
				t.Errorf("store holds %+v of user %d; want id %d of user %d named %q with scopes %q, expiry %s, hint %q",
					rec, owner.ID, got.ID, u.ID, tt.wantName, tt.wantScopes, fmtTime(tt.wantExpires), got.Hint)
			}
			after := ts.snapshot()
			for k, v := range after {
				if strings.HasPrefix(k, "users") && before[k] != v {
					t.Errorf("%s changed %s: %q → %q; a sign-in must not write", what, k, before[k], v)
				}
			}
			checkSecretKept(t, ts, got.Token)
			if strings.Contains(ts.logs.String(), "password-of-") {
				t.Errorf("the log holds the password:\n%s", ts.logs)
			}
			checkStoreConsistent(t, ts)
			checkWorks(t, ts, "the new token", got.Token, got.ID)
		})
	}
}

// TestAPIBasicAuthFailures checks that a wrong password and an unknown user
// get the same 401 and write nothing.
func TestAPIBasicAuthFailures(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", false)
	body := tokenRequest("ci", nil, nil)
	tests := []struct {
		name, user, password string
	}{
		{"wrong password", "alice", "password-of-bob"},
		{"empty password", "alice", ""},
		{"unknown user", "mallory", "password-of-mallory"},
		{"empty user", "", "password-of-alice"},
	}
	// Every failure must answer what a wrong password for a real user does,
	// so that nobody can tell which names exist.
	ref := ts.do(request{method: "POST", path: "/api/v1/tokens", body: body,
		header: map[string]string{"Authorization": basicAuth("alice", "not-her-password")}})
	checkStatus(t, "POST /api/v1/tokens with a wrong password", ref, http.StatusUnauthorized)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request{method: "POST", path: "/api/v1/tokens", body: body,
				header: map[string]string{"Authorization": basicAuth(tt.user, tt.password)}}
			what := label(req) + " as " + tt.name
			before := ts.snapshot()
			w := ts.do(req)
			checkProblem(t, what, w, http.StatusUnauthorized)
			if w.Body.String() != ref.Body.String() {
				t.Errorf("%s answers %q; a wrong password answers %q; want the same bytes", what, w.Body, ref.Body)
			}
			assertUnchanged(t, what, before, ts.snapshot())
			if tt.password != "" && strings.Contains(ts.logs.String(), tt.password) {
				t.Errorf("the log holds the password %q:\n%s", tt.password, ts.logs)
			}
		})
	}
	// RFC 9110 §15.5.2: a 401 must carry a WWW-Authenticate challenge.
	t.Run("401 has a challenge", func(t *testing.T) {
		req := request{method: "POST", path: "/api/v1/tokens", body: body,
			header: map[string]string{"Authorization": basicAuth("alice", "wrong")}}
		w := ts.do(req)
		checkStatus(t, label(req)+" with a wrong password", w, http.StatusUnauthorized)
		if h := w.Header().Values("WWW-Authenticate"); len(h) == 0 {
			t.Errorf("%s with a wrong password = 401 without WWW-Authenticate; want a challenge such as %q",
				label(req), `Basic realm="tokend", Bearer realm="tokend"`)
		}
	})
	t.Run("right password works", func(t *testing.T) {
		req := request{method: "POST", path: "/api/v1/tokens", body: body,
			header: map[string]string{"Authorization": basicAuth("ALICE", "password-of-alice")}}
		checkSecretAnswer(t, label(req)+" as ALICE", ts.do(req))
	})
}

// TestAPISelf checks what a token says about its user and itself.
func TestAPISelf(t *testing.T) {
	ts := newTestServer(t)
	u := ts.addUser("alice", true)
	tok, secret := ts.addToken(u, "cli", scopesRead, 48*time.Hour)

	t.Run("GET /api/v1/user", func(t *testing.T) {
		w := ts.do(request{method: "GET", path: "/api/v1/user", token: secret})
		checkStatus(t, "GET /api/v1/user", w, http.StatusOK)
		var got userBody
		decode(t, w, &got)
		if got.ID != u.ID || got.Name != "alice" || !got.Admin || !got.CreatedAt.Equal(u.CreatedAt) {
			t.Errorf("GET /api/v1/user = %+v; want id %d, alice, admin, created %v", got, u.ID, u.CreatedAt)
		}
		if strings.Contains(w.Body.String(), "argon2") || strings.Contains(w.Body.String(), "password") {
			t.Errorf("GET /api/v1/user shows the password hash: %s", w.Body)
		}
	})

	t.Run("GET /api/v1/token", func(t *testing.T) {
		w := ts.do(request{method: "GET", path: "/api/v1/token", token: secret})
		checkStatus(t, "GET /api/v1/token", w, http.StatusOK)
		got := decodeToken(t, "GET /api/v1/token", w, false)
		if got.ID != tok.ID || got.Name != "cli" || !slices.Equal(got.Scopes, scopesRead) ||
			!sameTime(got.ExpiresAt, tok.ExpiresAt) || got.Hint != secret[len(secret)-4:] || got.Expired {
			t.Errorf("GET /api/v1/token = %+v; want token %d, cli, %q, expires %s, hint of the secret", got, tok.ID, scopesRead, fmtTime(tok.ExpiresAt))
		}
		if strings.Contains(w.Body.String(), secret) {
			t.Errorf("GET /api/v1/token shows the secret: %s", w.Body)
		}
	})
}

// TestAPIRevoke checks that a revoked token dies at once, through either
// route, and that nothing else does.
func TestAPIRevoke(t *testing.T) {
	tests := []struct {
		name    string
		path    func(victim tokenRecord) string
		byOther bool // revoked by another token, not by itself
	}{
		{"DELETE /api/v1/token", func(tokenRecord) string { return "/api/v1/token" }, false},
		{"DELETE /api/v1/tokens/:id", func(v tokenRecord) string { return fmt.Sprintf("/api/v1/tokens/%d", v.ID) }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t)
			u := ts.addUser("alice", false)
			victim, victimSecret := ts.addToken(u, "victim", scopesRead, time.Hour)
			keeper, keeperSecret := ts.addToken(u, "keeper", scopesReadWrite, 0)
			caller := victimSecret
			if tt.byOther {
				caller = keeperSecret
			}
			req := request{method: "DELETE", path: tt.path(victim), token: caller}
			w := ts.do(req)
			checkStatus(t, label(req), w, http.StatusNoContent)
			if w.Body.Len() != 0 {
				t.Errorf("%s = 204 with body %q; want none", label(req), w.Body)
			}
			checkDead(t, ts, "revoked token", victimSecret)
			if _, err := ts.store.TokenByID(victim.ID, u.ID); !errors.Is(err, errNotFound) {
				t.Errorf("store.TokenByID(%d) after %s = %v; want errNotFound", victim.ID, label(req), err)
			}
			checkWorks(t, ts, "the other token", keeperSecret, keeper.ID)
			checkStoreConsistent(t, ts)
		})
	}
}

// TestAPIRotate checks that rotation gives a new secret to the same token
// and kills the old one in the same step.
func TestAPIRotate(t *testing.T) {
	tests := []struct {
		name        string
		path        func(old tokenRecord) string
		byOther     bool // rotated by another token of the same user
		oldScopes   []string
		oldLifetime time.Duration
	}{
		{"POST /api/v1/token/rotate", func(tokenRecord) string { return "/api/v1/token/rotate" }, false, scopesRead, 24 * time.Hour},
		{"POST /api/v1/token/rotate, never expires", func(tokenRecord) string { return "/api/v1/token/rotate" }, false, nil, 0},
		{"POST /api/v1/tokens/:id/rotate", func(o tokenRecord) string { return fmt.Sprintf("/api/v1/tokens/%d/rotate", o.ID) }, true, scopesRead, 24 * time.Hour},
		{"POST /api/v1/tokens/:id/rotate of itself", func(o tokenRecord) string { return fmt.Sprintf("/api/v1/tokens/%d/rotate", o.ID) }, false, scopesReadWrite, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t)
			u := ts.addUser("alice", false)
			rotator, rotatorSecret := ts.addToken(u, "rotator", scopesReadWrite, 0)
			old, oldSecret := ts.addToken(u, "nightly", tt.oldScopes, tt.oldLifetime)
			if !tt.byOther {
				rotatorSecret = oldSecret
			}
			ts.clock.Add(time.Minute)

			req := request{method: "POST", path: tt.path(old), token: rotatorSecret}
			w := ts.do(req)
			got := checkSecretAnswer(t, label(req), w)
			wantScopes := tt.oldScopes
			if wantScopes == nil {
				wantScopes = []string{}
			}
			if got.Token == oldSecret || got.ID == old.ID {
				t.Errorf("%s = token %d %q; want a new id and secret", label(req), got.ID, got.Hint)
			}
			if got.Name != old.Name || !slices.Equal(got.Scopes, wantScopes) || !sameTime(got.ExpiresAt, old.ExpiresAt) {
				t.Errorf("%s = name %q, scopes %q, expires %s; want the old %q, %q, %s",
					label(req), got.Name, got.Scopes, fmtTime(got.ExpiresAt), old.Name, wantScopes, fmtTime(old.ExpiresAt))
			}
			if !got.CreatedAt.Equal(ts.clock.Now()) {
				t.Errorf("%s: created_at = %v; want %v", label(req), got.CreatedAt, ts.clock.Now())
			}

			rec, owner, err := ts.store.TokenByHash(hashToken(got.Token))
			if err != nil {
				t.Fatalf("store.TokenByHash(new secret): %v", err)
			}
			if rec.ID != got.ID || owner.ID != u.ID || rec.Name != old.Name || !slices.Equal(rec.Scopes, old.Scopes) ||
				!sameTime(rec.ExpiresAt, old.ExpiresAt) {
				t.Errorf("store holds %+v of user %d; want a copy of %+v under id %d", rec, owner.ID, old, got.ID)
			}
			checkWorks(t, ts, "the new secret", got.Token, got.ID)
			checkDead(t, ts, "the old secret", oldSecret)
			if _, err := ts.store.TokenByID(old.ID, u.ID); !errors.Is(err, errNotFound) {
				t.Errorf("store.TokenByID(old id %d) = %v; want errNotFound", old.ID, err)
			}
			if tt.byOther {
				checkWorks(t, ts, "the rotating token", rotatorSecret, rotator.ID)
			}
			list, err := ts.store.TokensByOwner(u.ID)
			if err != nil {
				t.Fatalf("store.TokensByOwner: %v", err)
			}
			if len(list) != 2 {
				t.Errorf("after %s the user holds %d tokens; want 2", label(req), len(list))
			}
			checkSecretKept(t, ts, got.Token)
			checkStoreConsistent(t, ts)
		})
	}
}

// TestAPIListTokens checks that the list is newest first and marks expired
// tokens that are still kept.
func TestAPIListTokens(t *testing.T) {
	ts := newTestServer(t)
	u := ts.addUser("alice", false)
	other := ts.addUser("bob", false)
	caller, secret := ts.addToken(u, "caller", scopesRead, 0)
	var want []tokenRecord
	for i, life := range []time.Duration{0, time.Minute, 24 * time.Hour} {
		ts.clock.Add(time.Second)
		tok, _ := ts.addToken(u, fmt.Sprintf("t%d", i), scopesReadWrite, life)
		ts.addToken(other, fmt.Sprintf("bob-%d", i), nil, 0)
		want = append([]tokenRecord{tok}, want...)
	}
	want = append(want, caller)
	ts.clock.Add(2 * time.Minute) // t1 has expired but is not purged

	w := ts.do(request{method: "GET", path: "/api/v1/tokens", token: secret})
	checkStatus(t, "GET /api/v1/tokens", w, http.StatusOK)
	var raw []map[string]any
	decode(t, w, &raw)
	for i, m := range raw {
		checkTokenKeys(t, fmt.Sprintf("GET /api/v1/tokens [%d]", i), m, false)
	}
	var got []tokenBody
	decode(t, w, &got)
	if len(got) != len(want) {
		t.Fatalf("GET /api/v1/tokens lists %d tokens; want %d; body: %s", len(got), len(want), w.Body)
	}
	for i := range want {
		g, wt := got[i], want[i]
		wantExpired := wt.Name == "t1"
		if g.ID != wt.ID || g.Name != wt.Name || !sameTime(g.ExpiresAt, wt.ExpiresAt) || g.Expired != wantExpired {
			t.Errorf("GET /api/v1/tokens [%d] = id %d %q expires %s expired %t; want id %d %q expires %s expired %t",
				i, g.ID, g.Name, fmtTime(g.ExpiresAt), g.Expired, wt.ID, wt.Name, fmtTime(wt.ExpiresAt), wantExpired)
		}
	}
}

// TestScopeEscalation checks that no token or sign-in yields a token with
// more scopes or a longer life than its maker holds.
func TestScopeEscalation(t *testing.T) {
	now := newFakeClock().Now()
	createTests := []struct {
		name         string
		admin        bool
		basic        bool
		callerScopes []string
		callerLife   time.Duration
		body         string
	}{
		{name: "tokens:write token asks for tokens:read", callerScopes: scopesWrite,
			body: tokenRequest("x", scopesRead, nil)},
		{name: "tokens:write token of an admin asks for admin", admin: true, callerScopes: scopesWrite,
			body: tokenRequest("x", []string{scopeAdmin}, nil)},
		{name: "tokens:write token of a non-admin asks for admin", callerScopes: scopesWrite,
			body: tokenRequest("x", []string{scopeAdmin}, nil)},
		{name: "tokens:write token asks for introspect", callerScopes: scopesWrite,
			body: tokenRequest("x", []string{scopeIntrospect}, nil)},
		{name: "non-admin asks for admin via Basic", basic: true,
			body: tokenRequest("x", []string{scopeAdmin}, nil)},
		{name: "token of 1h asks for one that never expires", callerScopes: scopesWrite, callerLife: time.Hour,
			body: tokenRequest("x", nil, nil)},
		{name: "token of 1h asks for 2h", callerScopes: scopesWrite, callerLife: time.Hour,
			body: tokenRequest("x", nil, timePtr(now.Add(2*time.Hour)))},
		{name: "token of 1h asks for 1h and 1ns", callerScopes: scopesWrite, callerLife: time.Hour,
			body: tokenRequest("x", nil, timePtr(now.Add(time.Hour+time.Nanosecond)))},
	}
	for _, tt := range createTests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t)
			u := ts.addUser("alice", tt.admin)
			req := request{method: "POST", path: "/api/v1/tokens", body: tt.body}
			if tt.basic {
				req.header = basicHeader(u)
			} else {
				_, req.token = ts.addToken(u, "caller", tt.callerScopes, tt.callerLife)
			}
			before := ts.snapshot()
			checkProblem(t, label(req), ts.do(req), http.StatusForbidden)
			assertUnchanged(t, label(req), before, ts.snapshot())
		})
	}

	rotateTests := []struct {
		name         string
		callerScopes []string
		callerLife   time.Duration
		targetScopes []string
		targetLife   time.Duration
	}{
		{"tokens:write token rotates a token with more scopes", scopesWrite, 0, scopesReadWrite, 0},
		{"tokens:write token rotates a tokens:read token", scopesWrite, 0, scopesRead, time.Hour},
		{"token of 1h rotates a token that never expires", scopesReadWrite, time.Hour, scopesRead, 0},
		{"token of 1h rotates a token of 2h", scopesReadWrite, time.Hour, scopesRead, 2 * time.Hour},
	}
	for _, tt := range rotateTests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t)
			u := ts.addUser("alice", false)
			_, callerSecret := ts.addToken(u, "caller", tt.callerScopes, tt.callerLife)
			target, targetSecret := ts.addToken(u, "target", tt.targetScopes, tt.targetLife)
			req := request{method: "POST", path: fmt.Sprintf("/api/v1/tokens/%d/rotate", target.ID), token: callerSecret}
			before := ts.snapshot()
			checkProblem(t, label(req), ts.do(req), http.StatusForbidden)
			assertUnchanged(t, label(req), before, ts.snapshot())
			checkWorks(t, ts, "the target", targetSecret, target.ID)
		})
	}

	t.Run("demoted admin's token loses admin", func(t *testing.T) {
		ts := newTestServer(t)
		root := ts.addUser("root", true)
		_, rootSecret := ts.addToken(root, "root-cli", []string{scopeTokensRead, scopeTokensWrite, scopeAdmin}, 0)
		target, _ := ts.addToken(root, "ops", []string{scopeAdmin}, 0)

		// Before the demotion the token may pass admin on.
		req := request{method: "POST", path: fmt.Sprintf("/api/v1/tokens/%d/rotate", target.ID), token: rootSecret}
		rotated := checkSecretAnswer(t, label(req)+" as an admin", ts.do(req))

		ts.addUser("other-admin", true) // so that root is not the last admin
		if _, err := ts.store.SetAdmin(testActor, root.ID, false); err != nil {
			t.Fatalf("demote root: %v", err)
		}

		w := ts.do(request{method: "GET", path: "/api/v1/user", token: rootSecret})
		checkStatus(t, "GET /api/v1/user after demotion", w, http.StatusOK)
		var ub userBody
		decode(t, w, &ub)
		if ub.Admin {
			t.Errorf("GET /api/v1/user after demotion = admin; want not")
		}

		for _, req := range []request{
			{method: "POST", path: fmt.Sprintf("/api/v1/tokens/%d/rotate", rotated.ID), token: rootSecret},
			{method: "POST", path: "/api/v1/tokens", token: rootSecret, body: tokenRequest("x", []string{scopeAdmin}, nil)},
		} {
			before := ts.snapshot()
			checkProblem(t, label(req)+" after demotion", ts.do(req), http.StatusForbidden)
			assertUnchanged(t, label(req)+" after demotion", before, ts.snapshot())
		}
		checkWorks(t, ts, "the admin-scoped token", rotated.Token, rotated.ID)

		// The token keeps the scopes its owner may still hold.
		w = ts.do(request{method: "GET", path: "/api/v1/tokens", token: rootSecret})
		checkStatus(t, "GET /api/v1/tokens after demotion", w, http.StatusOK)
		w = ts.do(request{method: "POST", path: "/api/v1/tokens", token: rootSecret, body: tokenRequest("y", scopesRead, nil)})
		checkSecretAnswer(t, "POST /api/v1/tokens with tokens:read after demotion", w)
	})
}

// TestCreateTokenBadInput checks that every malformed or refused request
// body says what is wrong and writes nothing.
// TestExpiresAtTakesRFC3339 checks that expires_at takes every form of
// date-time RFC 3339 allows, lower-case "t" and "z" included (§5.6), and
// stores the instant it names; anything else is 400 and stores nothing.
func TestExpiresAtTakesRFC3339(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	_, rw := ts.addToken(alice, "rw", scopesReadWrite, 0)
	want := time.Date(2030, 1, 31, 12, 0, 0, 0, time.UTC)
	for _, in := range []string{
		"2030-01-31T12:00:00Z", "2030-01-31t12:00:00z", "2030-01-31t12:00:00Z", "2030-01-31T12:00:00z",
		"2030-01-31t13:00:00+01:00", "2030-01-31t11:30:00-00:30", "2030-01-31t12:00:00.000z",
	} {
		w := ts.do(request{method: "POST", path: "/api/v1/tokens", token: rw, body: `{"name":"ci","scopes":[],"expires_at":"` + in + `"}`})
		if w.Code != http.StatusCreated {
			t.Errorf("POST /api/v1/tokens with expires_at %q = %d; want 201; body: %s", in, w.Code, w.Body)
			continue
		}
		got := decodeToken(t, "POST /api/v1/tokens", w, true)
		stored, err := ts.store.TokenByID(got.ID, alice.ID)
		if err != nil || stored.ExpiresAt == nil || !stored.ExpiresAt.Equal(want) {
			t.Errorf("expires_at %q: the store holds %v (%v); want %v", in, stored.ExpiresAt, err, want)
		}
	}
	before := ts.snapshot()
	for _, in := range []string{"2030-01-31x12:00:00z", "2030-01-31 12:00:00Z", "2030-1-31T12:00:00Z", "2030-01-31T12:00:00", "2030-01-31", "2030-01-31T12:00:00ZZ", "2030-01-31T12:00:00Ｚ"} {
		w := ts.do(request{method: "POST", path: "/api/v1/tokens", token: rw, body: `{"name":"ci","scopes":[],"expires_at":"` + in + `"}`})
		p := checkProblem(t, "POST /api/v1/tokens with expires_at "+in, w, http.StatusBadRequest)
		checkDetail(t, "expires_at "+in, p, "RFC 3339")
	}
	assertUnchanged(t, "bad expires_at", before, ts.snapshot())
}

func TestCreateTokenBadInput(t *testing.T) {
	now := newFakeClock().Now()
	manyScopes := make([]string, 65)
	for i := range manyScopes {
		manyScopes[i] = scopeTokensRead
	}
	tests := []struct {
		name       string
		body       string
		header     map[string]string
		setup      func(ts *testServer, u userRecord)
		wantStatus int
		wantDetail []string
	}{
		{name: "malformed JSON", body: `{"name" "x"}`,
			wantStatus: 400, wantDetail: []string{"malformed JSON"}},
		{name: "JSON cut short", body: `{"name":"x",`,
			wantStatus: 400, wantDetail: []string{"ends in the middle"}},
		{name: "empty body", header: map[string]string{"Content-Type": "application/json"},
			wantStatus: 400, wantDetail: []string{"empty"}},
		{name: "trailing garbage", body: `{"name":"x","scopes":[],"expires_at":null} x`,
			wantStatus: 400, wantDetail: []string{"nothing after it"}},
		{name: "second object", body: `{"name":"x","scopes":[],"expires_at":null}{}`,
			wantStatus: 400, wantDetail: []string{"nothing after it"}},
		{name: "array instead of object", body: `[{"name":"x","scopes":[],"expires_at":null}]`,
			wantStatus: 400, wantDetail: []string{"JSON object", "array"}},
		{name: "string instead of object", body: `"x"`,
			wantStatus: 400, wantDetail: []string{"JSON object"}},
		{name: "null instead of object", body: `null`,
			wantStatus: 400, wantDetail: []string{"JSON object"}},
		{name: "name as number", body: `{"name":5,"scopes":[],"expires_at":null}`,
			wantStatus: 400, wantDetail: []string{`"name"`, "string"}},
		{name: "scopes as string", body: `{"name":"x","scopes":"tokens:read","expires_at":null}`,
			wantStatus: 400, wantDetail: []string{`"scopes"`, "array"}},
		{name: "unknown field", body: `{"name":"x","scopes":[],"expires_at":null,"owner":2}`,
			wantStatus: 400, wantDetail: []string{"unknown field", `"owner"`}},
		{name: "body over 64 KiB", body: tokenRequest(strings.Repeat("a", 70000), nil, nil),
			wantStatus: 413, wantDetail: []string{"65536 bytes"}},
		{name: "Content-Type text/plain", body: tokenRequest("x", nil, nil), header: map[string]string{"Content-Type": "text/plain"},
			wantStatus: 415, wantDetail: []string{"application/json", "text/plain"}},
		{name: "no Content-Type", body: tokenRequest("x", nil, nil), header: map[string]string{"Content-Type": ""},
			wantStatus: 415, wantDetail: []string{"application/json"}},
		{name: "missing name", body: `{"scopes":[],"expires_at":null}`,
			wantStatus: 400, wantDetail: []string{"name is required"}},
		{name: "blank name", body: tokenRequest(" \t ", nil, nil),
			wantStatus: 400, wantDetail: []string{"name is required"}},
		{name: "name of 101 characters", body: tokenRequest(strings.Repeat("a", 101), nil, nil),
			wantStatus: 400, wantDetail: []string{"name", "100 characters"}},
		{name: "name with a control character", body: tokenRequest("ci\x07bot", nil, nil),
			wantStatus: 400, wantDetail: []string{"name", "control"}},
		{name: "unknown scope", body: tokenRequest("x", []string{"tokens:read", "repo:write"}, nil),
			wantStatus: 400, wantDetail: []string{"unknown scope", `"repo:write"`}},
		{name: "duplicate scope", body: tokenRequest("x", []string{"tokens:read", "tokens:read"}, nil),
			wantStatus: 400, wantDetail: []string{`"tokens:read"`, "twice"}},
		{name: "65 scopes", body: tokenRequest("x", manyScopes, nil),
			wantStatus: 400, wantDetail: []string{"64 scopes", "65"}},
		{name: "missing expires_at", body: `{"name":"x","scopes":[]}`,
			wantStatus: 400, wantDetail: []string{"expires_at is required"}},
		{name: "expires_at a date without time", body: `{"name":"x","scopes":[],"expires_at":"2031-01-01"}`,
			wantStatus: 400, wantDetail: []string{"expires_at", "RFC 3339"}},
		{name: "expires_at without zone", body: `{"name":"x","scopes":[],"expires_at":"2031-01-01T00:00:00"}`,
			wantStatus: 400, wantDetail: []string{"expires_at", "RFC 3339"}},
		{name: "expires_at a number", body: `{"name":"x","scopes":[],"expires_at":1893456000}`,
			wantStatus: 400, wantDetail: []string{"expires_at", "RFC 3339"}},
		{name: "expires_at in the past", body: tokenRequest("x", nil, timePtr(now.Add(-time.Second))),
			wantStatus: 400, wantDetail: []string{"expires_at", "not in the future"}},
		{name: "expires_at now", body: tokenRequest("x", nil, timePtr(now)),
			wantStatus: 400, wantDetail: []string{"expires_at", "not in the future"}},
		{name: "expires_at 11 years ahead", body: tokenRequest("x", nil, timePtr(now.AddDate(11, 0, 0))),
			wantStatus: 400, wantDetail: []string{"expires_at", "10 years"}},
		{name: "per-user token cap", body: tokenRequest("x", nil, nil),
			setup: func(ts *testServer, u userRecord) {
				ts.cfg.MaxTokensPerUser = 2
				ts.addToken(u, "second", nil, 0) // the caller is the first
			},
			wantStatus: 409, wantDetail: []string{"2 tokens"}},
		{name: "per-user token cap of one", body: tokenRequest("x", nil, nil),
			setup:      func(ts *testServer, u userRecord) { ts.cfg.MaxTokensPerUser = 1 },
			wantStatus: 409, wantDetail: []string{"you already hold 1 token, the most allowed"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t)
			u := ts.addUser("alice", false)
			_, secret := ts.addToken(u, "caller", scopesReadWrite, 0)
			if tt.setup != nil {
				tt.setup(ts, u)
			}
			req := request{method: "POST", path: "/api/v1/tokens", token: secret, body: tt.body, header: tt.header}
			before := ts.snapshot()
			w := ts.do(req)
			p := checkProblem(t, label(req), w, tt.wantStatus)
			checkDetail(t, label(req), p, tt.wantDetail...)
			assertUnchanged(t, label(req), before, ts.snapshot())
		})
	}
}

// TestCreateTokenLimits checks the edges that must still be accepted: a
// body of exactly 64 KiB, a token just under the cap, an expiry of 10 years.
func TestCreateTokenLimits(t *testing.T) {
	now := newFakeClock().Now()
	body := tokenRequest("x", nil, nil)
	tests := []struct {
		name  string
		body  string
		setup func(ts *testServer)
	}{
		{"body of exactly 64 KiB", body + strings.Repeat(" ", maxBodyBytes-len(body)), nil},
		{"one below the cap", body, func(ts *testServer) { ts.cfg.MaxTokensPerUser = 2 }},
		{"expires in 10 years", tokenRequest("x", nil, timePtr(now.AddDate(10, 0, 0))), nil},
		{"expires in 1ns", tokenRequest("x", nil, timePtr(now.Add(time.Nanosecond))), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t)
			u := ts.addUser("alice", false)
			_, secret := ts.addToken(u, "caller", scopesReadWrite, 0)
			if tt.setup != nil {
				tt.setup(ts)
			}
			req := request{method: "POST", path: "/api/v1/tokens", token: secret, body: tt.body}
			checkSecretAnswer(t, label(req), ts.do(req))
		})
	}
}

// TestLeakReport checks that whoever holds a token can kill it, and that the
// answer tells nothing about whether it existed.
func TestLeakReport(t *testing.T) {
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	jsonBody := func(token string) string {
		b, _ := json.Marshal(map[string]string{"token": token})
		return string(b)
	}
	ts := newTestServer(t)
	u := ts.addUser("alice", false)
	keeper, keeperSecret := ts.addToken(u, "keeper", scopesRead, 0)

	kills := []struct {
		name string
		req  func(secret string) request
	}{
		{"form", func(s string) request {
			return request{method: "POST", path: "/api/v1/revoke", body: "token=" + s, header: form}
		}},
		{"JSON", func(s string) request { return request{method: "POST", path: "/api/v1/revoke", body: jsonBody(s)} }},
	}
	// The answer to a real kill, which every other report must match.
	_, first := ts.addToken(u, "first", nil, 0)
	ref := ts.do(kills[0].req(first))
	checkStatus(t, "POST /api/v1/revoke of a live token", ref, http.StatusOK)
	killBody := ref.Body.String()

	for _, k := range kills {
		t.Run("kill by "+k.name, func(t *testing.T) {
			leakedTok, leaked := ts.addToken(u, "leaked", scopesReadWrite, time.Hour)
			checkWorks(t, ts, "the leaked token before the report", leaked, leakedTok.ID)
			req := k.req(leaked)
			w := ts.do(req)
			checkStatus(t, label(req)+" by "+k.name, w, http.StatusOK)
			if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
				t.Errorf("%s: Cache-Control = %q; want no-store", label(req), cc)
			}
			if w.Body.String() != killBody {
				t.Errorf("%s by %s = %q; the first kill answered %q; want the same", label(req), k.name, w.Body, killBody)
			}
			checkDead(t, ts, "the reported token", leaked)
			checkWorks(t, ts, "another token of the same user", keeperSecret, keeper.ID)
			checkSecretKept(t, ts, leaked)
			checkStoreConsistent(t, ts)
		})
	}

	unknown, err := ts.format.generate()
	if err != nil {
		t.Fatalf("generate: %v", err)
	}
	_, revoked := ts.addToken(u, "revoked", nil, 0)
	if w := ts.do(request{method: "DELETE", path: "/api/v1/token", token: revoked}); w.Code != http.StatusNoContent {
		t.Fatalf("DELETE /api/v1/token = %d; want 204; body: %s", w.Code, w.Body)
	}
	badSum := []byte(keeperSecret)
	badSum[len(badSum)-1] ^= 1 // '0'↔'1', 'a'↔'b': still base62
	for _, c := range []struct{ name, token string }{
		{"unknown token", unknown},
		{"revoked token", revoked},
		{"bad checksum", string(badSum)},
		{"garbage", "hello"},
		{"huge garbage", strings.Repeat("x", 10000)},
	} {
		for _, k := range kills {
			t.Run(c.name+" by "+k.name, func(t *testing.T) {
				req := k.req(c.token)
				before := ts.snapshot()
				w := ts.do(req)
				checkStatus(t, label(req)+" of "+c.name, w, http.StatusOK)
				if w.Body.String() != killBody {
					t.Errorf("%s of %s = %q; a real kill answers %q; want the same bytes", label(req), c.name, w.Body, killBody)
				}
				if ct := w.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("%s of %s: Content-Type = %q; want application/json", label(req), c.name, ct)
				}
				assertUnchanged(t, label(req)+" of "+c.name, before, ts.snapshot())
			})
		}
	}
	checkWorks(t, ts, "the token whose checksum was mangled", keeperSecret, keeper.ID)

	for _, c := range []struct {
		name       string
		req        request
		wantStatus int
		wantDetail string
	}{
		{"form without token", request{method: "POST", path: "/api/v1/revoke", body: "tok=x", header: form}, 400, "token"},
		{"form with empty token", request{method: "POST", path: "/api/v1/revoke", body: "token=", header: form}, 400, "token"},
		{"empty form", request{method: "POST", path: "/api/v1/revoke", header: form}, 400, "token"},
		{"malformed form", request{method: "POST", path: "/api/v1/revoke", body: "token=%zz", header: form}, 400, "form"},
		{"JSON without token", request{method: "POST", path: "/api/v1/revoke", body: `{}`}, 400, "token"},
		{"JSON with empty token", request{method: "POST", path: "/api/v1/revoke", body: `{"token":""}`}, 400, "token"},
		{"JSON with unknown field", request{method: "POST", path: "/api/v1/revoke", body: `{"token":"x","why":"leak"}`}, 400, "unknown field"},
		{"text/plain", request{method: "POST", path: "/api/v1/revoke", body: keeperSecret, header: map[string]string{"Content-Type": "text/plain"}}, 415, "form"},
		{"no Content-Type", request{method: "POST", path: "/api/v1/revoke"}, 415, "application/json"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := ts.snapshot()
			w := ts.do(c.req)
			p := checkProblem(t, label(c.req)+" with "+c.name, w, c.wantStatus)
			checkDetail(t, label(c.req)+" with "+c.name, p, c.wantDetail)
			assertUnchanged(t, label(c.req)+" with "+c.name, before, ts.snapshot())
		})
	}
	checkWorks(t, ts, "the token sent as text/plain", keeperSecret, keeper.ID)
}

// TestRouteErrors checks that unknown paths and wrong methods are answered
// as problems too.
func TestRouteErrors(t *testing.T) {
	ts := newTestServer(t)
	tests := []struct {
		req        request
		wantStatus int
		wantAllow  []string
	}{
		{request{method: "GET", path: "/api/v1/nope"}, 404, nil},
		{request{method: "GET", path: "/api/v2/tokens"}, 404, nil},
		{request{method: "GET", path: "/api/v1/tokens/1/nope"}, 404, nil},
		{request{method: "POST", path: "/nope"}, 404, nil},
		{request{method: "PUT", path: "/api/v1/tokens"}, 405, []string{"GET", "POST"}},
		{request{method: "PATCH", path: "/api/v1/tokens/1"}, 405, []string{"GET", "DELETE"}},
		{request{method: "DELETE", path: "/api/v1/user"}, 405, []string{"GET"}},
		{request{method: "GET", path: "/api/v1/revoke"}, 405, []string{"POST"}},
		{request{method: "GET", path: "/api/v1/token/rotate"}, 405, []string{"POST"}},
	}
	for _, tt := range tests {
		t.Run(label(tt.req), func(t *testing.T) {
			w := ts.do(tt.req)
			p := checkProblem(t, label(tt.req), w, tt.wantStatus)
			allow := w.Header().Get("Allow")
			if tt.wantStatus == http.StatusMethodNotAllowed {
				checkDetail(t, label(tt.req), p, tt.req.method)
				methods := strings.Split(allow, ", ")
				for _, m := range tt.wantAllow {
					if !slices.Contains(methods, m) {
						t.Errorf("%s: Allow = %q; want it to hold %s", label(tt.req), allow, m)
					}
				}
				if slices.Contains(methods, tt.req.method) {
					t.Errorf("%s: Allow = %q holds the refused method", label(tt.req), allow)
				}
			} else {
				checkDetail(t, label(tt.req), p, tt.req.path)
			}
		})
	}
}
