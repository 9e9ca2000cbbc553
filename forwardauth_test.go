package main

import (
	"maps"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// authHeaders are the headers of a 204 from /auth, all always present.
var authHeaders = []string{headerAuthUser, headerAuthUserID, headerAuthScopes, headerAuthTokenID}

// scopedAuthPath is the forward-auth path of a route that needs two
// operator scopes.
const scopedAuthPath = "/auth/treasure:create,treasure:edit"

// otherSecret returns a token that tokend never issued: of its format when
// prefix is "", else of another prefix.
func otherSecret(t *testing.T, prefix string) string {
	t.Helper()
	f := mustFormat(t, defaultTokenPrefix)
	if prefix != "" {
		f = mustFormat(t, prefix)
	}
	secret, err := f.generate()
	if err != nil {
		t.Fatalf("generate: %v", err)
	}
	return secret
}

// flipChar changes the character at i of secret, which breaks its checksum.
func flipChar(secret string, i int) string {
	b := []byte(secret)
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

// checkAllowed asserts that w is a 204 that vouches for token tok of u
// holding scopes, and carries every X-Auth-* header.
func checkAllowed(t *testing.T, what string, w *httptest.ResponseRecorder, u userRecord, tok tokenRecord, scopes string) {
	t.Helper()
	checkStatus(t, what, w, http.StatusNoContent)
	want := map[string]string{
		headerAuthUser:    u.Name,
		headerAuthUserID:  strconv.FormatUint(u.ID, 10),
		headerAuthScopes:  scopes,
		headerAuthTokenID: strconv.FormatUint(tok.ID, 10),
	}
	for _, h := range authHeaders {
		if got := w.Header().Values(h); len(got) != 1 || got[0] != want[h] {
			t.Errorf("%s: %s = %q; want exactly one, %q", what, h, got, want[h])
		}
	}
	if w.Body.Len() != 0 {
		t.Errorf("%s: body = %q; want none", what, w.Body)
	}
	checkNoStore(t, what, w)
	if h := w.Header().Get("WWW-Authenticate"); h != "" {
		t.Errorf("%s: WWW-Authenticate = %q; want none on success", what, h)
	}
}

// checkRefused asserts that w refuses with status, an RFC 6750 challenge of
// code (and scope), no X-Auth-* header and no caching.
func checkRefused(t *testing.T, what string, w *httptest.ResponseRecorder, status int, code, scope string) {
	t.Helper()
	p := checkProblem(t, what, w, status)
	if p.Error != code {
		t.Errorf("%s: body error = %q; want %q", what, p.Error, code)
	}
	checkChallenge(t, what, w, code, scope)
	checkNoAuthHeaders(t, what, w)
	checkNoStore(t, what, w)
}

// checkNoStore asserts that w forbids caches to keep it.
func checkNoStore(t *testing.T, what string, w *httptest.ResponseRecorder) {
	t.Helper()
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("%s: Cache-Control = %q; want no-store", what, cc)
	}
}

// checkNoAuthHeaders asserts that w carries none of the X-Auth-* headers.
func checkNoAuthHeaders(t *testing.T, what string, w *httptest.ResponseRecorder) {
	t.Helper()
	for _, h := range authHeaders {
		if v, ok := w.Header()[h]; ok {
			t.Errorf("%s: %s = %q; want none on a refusal", what, h, v)
		}
	}
}

// TestForwardAuthDecisions runs every kind of credential through both
// forms of forward auth: GET /auth, which any valid token passes, and GET
// /auth/treasure:create,treasure:edit, which needs both scopes.
func TestForwardAuthDecisions(t *testing.T) {
	tests := []struct {
		name string
		// auth returns the Authorization header to send ("" for none) and
		// the token it holds, if tokend issued it.
		auth       func(t *testing.T, ts *testServer, u userRecord) (string, tokenRecord)
		wantPlain  int    // status of GET /auth
		wantScoped int    // status of GET /auth/treasure:create,treasure:edit
		wantCode   string // RFC 6750 code of a refusal
		wantScopes string // X-Auth-Scopes of a 204
	}{
		{
			name: "no token",
			auth: func(t *testing.T, ts *testServer, u userRecord) (string, tokenRecord) {
				return "", tokenRecord{}
			},
			wantPlain: 401, wantScoped: 401,
		},
		{
			name: "Basic credentials",
			auth: func(t *testing.T, ts *testServer, u userRecord) (string, tokenRecord) {
				return basicHeader(u)["Authorization"], tokenRecord{}
			},
			wantPlain: 401, wantScoped: 401, wantCode: "invalid_request",
		},
		{
			name: "Bearer and no token",
			auth: func(t *testing.T, ts *testServer, u userRecord) (string, tokenRecord) {
				return "Bearer ", tokenRecord{}
			},
			wantPlain: 401, wantScoped: 401, wantCode: "invalid_request",
		},
		{
			name: "malformed token",
			auth: func(t *testing.T, ts *testServer, u userRecord) (string, tokenRecord) {
				return "Bearer tkd_nope", tokenRecord{}
			},
			wantPlain: 401, wantScoped: 401, wantCode: "invalid_token",
		},
		{
			name: "bad checksum",
			auth: func(t *testing.T, ts *testServer, u userRecord) (string, tokenRecord) {
				_, secret := ts.addToken(u, "cli", []string{"treasure:create", "treasure:edit"}, 0)
				return "Bearer " + flipChar(secret, 10), tokenRecord{}
			},
			wantPlain: 401, wantScoped: 401, wantCode: "invalid_token",
		},
		{
			name: "another prefix",
			auth: func(t *testing.T, ts *testServer, u userRecord) (string, tokenRecord) {
				return "Bearer " + otherSecret(t, "ghp_"), tokenRecord{}
			},
			wantPlain: 401, wantScoped: 401, wantCode: "invalid_token",
		},
		{
			name: "unknown well-formed token",
			auth: func(t *testing.T, ts *testServer, u userRecord) (string, tokenRecord) {
				return "Bearer " + otherSecret(t, ""), tokenRecord{}
			},
			wantPlain: 401, wantScoped: 401, wantCode: "invalid_token",
		},
		{
			name: "expired",
			auth: func(t *testing.T, ts *testServer, u userRecord) (string, tokenRecord) {
				_, secret := ts.addToken(u, "short", []string{"treasure:create", "treasure:edit"}, time.Hour)
				ts.clock.Add(time.Hour)
				return "Bearer " + secret, tokenRecord{}
			},
			wantPlain: 401, wantScoped: 401, wantCode: "invalid_token",
		},
		{
			name: "revoked",
			auth: func(t *testing.T, ts *testServer, u userRecord) (string, tokenRecord) {
				tok, secret := ts.addToken(u, "cli", []string{"treasure:create", "treasure:edit"}, 0)
				if _, err := ts.store.DeleteToken(testActor, tok.ID, u.ID); err != nil {
					t.Fatalf("DeleteToken: %v", err)
				}
				return "Bearer " + secret, tokenRecord{}
			},
			wantPlain: 401, wantScoped: 401, wantCode: "invalid_token",
		},
		{
			name: "owner removed",
			auth: func(t *testing.T, ts *testServer, u userRecord) (string, tokenRecord) {
				bob := ts.addUser("bob", false)
				_, secret := ts.addToken(bob, "cli", []string{"treasure:create", "treasure:edit"}, 0)
				if err := ts.store.DeleteUser(testActor, bob.ID); err != nil {
					t.Fatalf("DeleteUser: %v", err)
				}
				return "Bearer " + secret, tokenRecord{}
			},
			wantPlain: 401, wantScoped: 401, wantCode: "invalid_token",
		},
		{
			name: "no scopes",
			auth: func(t *testing.T, ts *testServer, u userRecord) (string, tokenRecord) {
				tok, secret := ts.addToken(u, "cli", nil, 0)
				return "Bearer " + secret, tok
			},
			wantPlain: 204, wantScoped: 403, wantCode: "insufficient_scope",
		},
		{
			name: "missing one of two scopes",
			auth: func(t *testing.T, ts *testServer, u userRecord) (string, tokenRecord) {
				tok, secret := ts.addToken(u, "cli", []string{scopeTokensRead, "treasure:create"}, 0)
				return "Bearer " + secret, tok
			},
			wantPlain: 204, wantScoped: 403, wantCode: "insufficient_scope", wantScopes: "tokens:read treasure:create",
		},
		{
			name: "all scopes, one nanosecond before expiry",
			auth: func(t *testing.T, ts *testServer, u userRecord) (string, tokenRecord) {
				tok, secret := ts.addToken(u, "cli", []string{"treasure:create", "treasure:edit"}, time.Hour)
				ts.clock.Add(time.Hour - time.Nanosecond)
				return "Bearer " + secret, tok
			},
			wantPlain: 204, wantScoped: 204, wantScopes: "treasure:create treasure:edit",
		},
		{
			name: "all scopes and more, scheme in lower case",
			auth: func(t *testing.T, ts *testServer, u userRecord) (string, tokenRecord) {
				tok, secret := ts.addToken(u, "cli", []string{"treasure:create", "user:edit", "treasure:edit"}, 0)
				return "bearer " + secret, tok
			},
			wantPlain: 204, wantScoped: 204, wantScopes: "treasure:create user:edit treasure:edit",
		},
	}
	for _, tt := range tests {
		for _, path := range []string{"/auth", scopedAuthPath} {
			t.Run(tt.name+" "+path, func(t *testing.T) {
				ts := newTestServer(t)
				ts.declareScopes(treasureScopes...)
				u := ts.addUser("alice", false)
				auth, tok := tt.auth(t, ts, u)
				want := tt.wantPlain
				if path == scopedAuthPath {
					want = tt.wantScoped
				}
				req := request{method: "GET", path: path, header: map[string]string{}}
				if auth != "" {
					req.header["Authorization"] = auth
				}
				before := ts.snapshot()
				w := ts.do(req)
				what := label(req)
				if want == http.StatusNoContent {
					if w.Code != want {
						t.Fatalf("%s = %d; want %d; body: %s", what, w.Code, want, w.Body)
					}
					checkAllowed(t, what, w, u, tok, tt.wantScopes)
					return
				}
				scope := ""
				if want == http.StatusForbidden {
					scope = "treasure:create treasure:edit"
				}
				if w.Code != want {
					t.Errorf("%s = %d; want %d", what, w.Code, want)
				}
				checkRefused(t, what, w, want, tt.wantCode, scope)
				assertUnchanged(t, what, before, ts.snapshot())
			})
		}
	}
}

// TestForwardAuthScopesOnlyFromPath checks that nothing a client controls
// (the query string, which Caddy forwards, or a header) changes the scopes
// a route needs or the identity tokend vouches for.
func TestForwardAuthScopesOnlyFromPath(t *testing.T) {
	ts := newTestServer(t)
	ts.declareScopes(treasureScopes...)
	u := ts.addUser("alice", false)
	creator, creatorSecret := ts.addToken(u, "creator", []string{"treasure:create"}, 0)
	none, noneSecret := ts.addToken(u, "none", nil, 0)
	forged := map[string]string{
		"X-Auth-User": "root", "X-Auth-User-Id": "1", "X-Auth-Scopes": "treasure:edit admin",
		"X-Auth-Token-Id": "1", "X-Required-Scopes": "", "X-Forwarded-Uri": "/auth",
	}
	tests := []struct {
		name       string
		req        request
		wantStatus int
		wantCode   string      // of a refusal
		wantToken  tokenRecord // of a 204
		wantScopes string      // X-Auth-Scopes of a 204
	}{
		{name: "the query names fewer scopes", req: request{method: "GET", path: scopedAuthPath + "?scopes=treasure:create", token: creatorSecret}, wantStatus: 403, wantCode: "insufficient_scope"},
		{name: "the query empties the scopes", req: request{method: "GET", path: scopedAuthPath + "?scopes=&scope=", token: creatorSecret}, wantStatus: 403, wantCode: "insufficient_scope"},
		{name: "forged X-Auth-* request headers", req: request{method: "GET", path: scopedAuthPath, token: creatorSecret, header: forged}, wantStatus: 403, wantCode: "insufficient_scope"},
		{name: "the token in the query", req: request{method: "GET", path: "/auth/treasure:create?access_token=" + creatorSecret}, wantStatus: 401, wantCode: "invalid_request"},
		{name: "the token in the query too", req: request{method: "GET", path: "/auth/treasure:create?access_token=" + creatorSecret, token: creatorSecret}, wantStatus: 401, wantCode: "invalid_request"},
		{
			name: "the query names a scope the token lacks", req: request{method: "GET", path: "/auth/treasure:create?scopes=treasure:edit", token: creatorSecret},
			wantStatus: 204, wantToken: creator, wantScopes: "treasure:create",
		},
		{
			name: "the query names a scope on /auth", req: request{method: "GET", path: "/auth?scopes=treasure:edit&scope=treasure:edit", token: noneSecret},
			wantStatus: 204, wantToken: none,
		},
		{
			name: "forged X-Auth-* request headers on a passing route", req: request{method: "GET", path: "/auth/treasure:create", token: creatorSecret, header: forged},
			wantStatus: 204, wantToken: creator, wantScopes: "treasure:create",
		},
		{
			name: "forged X-Auth-* request headers, token of no scopes", req: request{method: "GET", path: "/auth", token: noneSecret, header: forged},
			wantStatus: 204, wantToken: none,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := ts.do(tt.req)
			what := label(tt.req)
			if w.Code != tt.wantStatus {
				t.Fatalf("%s = %d; want %d; body: %s", what, w.Code, tt.wantStatus, w.Body)
			}
			if tt.wantStatus == http.StatusNoContent {
				checkAllowed(t, what, w, u, tt.wantToken, tt.wantScopes)
				return
			}
			scope := ""
			if tt.wantStatus == http.StatusForbidden {
				scope = "treasure:create treasure:edit"
			}
			checkRefused(t, what, w, tt.wantStatus, tt.wantCode, scope)
		})
	}
}

// TestForwardAuthSendsEveryHeader checks on the wire that a 204 carries all
// four X-Auth-* headers even when one is empty: a proxy that copies only
// the headers present would otherwise pass a client's forged one on.
func TestForwardAuthSendsEveryHeader(t *testing.T) {
	ts := newTestServer(t)
	u := ts.addUser("alice", false)
	tok, secret := ts.addToken(u, "no scopes", nil, 0)
	srv := httptest.NewServer(ts.handler)
	defer srv.Close()
	req, err := http.NewRequest("GET", srv.URL+"/auth", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := map[string]string{
		headerAuthUser: "alice", headerAuthUserID: strconv.FormatUint(u.ID, 10),
		headerAuthScopes: "", headerAuthTokenID: strconv.FormatUint(tok.ID, 10),
	}
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("GET /auth = %d; want 204", resp.StatusCode)
	}
	for h, v := range want {
		if got, ok := resp.Header[h]; !ok || len(got) != 1 || got[0] != v {
			t.Errorf("GET /auth: %s = %q (sent: %t); want it sent as %q", h, got, ok, v)
		}
	}
}

// TestForwardAuthEffectiveScopes checks that /auth vouches only for the
// scopes a token's owner may still hold: the admin scope of a token whose
// owner is no longer an admin counts for nothing.
func TestForwardAuthEffectiveScopes(t *testing.T) {
	ts := newTestServer(t)
	u := ts.addUser("alice", false)
	// Stored directly: the token of an admin who has since been demoted.
	tok, secret := ts.addToken(u, "old admin token", []string{scopeTokensRead, scopeAdmin}, 0)

	req := request{method: "GET", path: "/auth/admin", token: secret}
	checkRefused(t, label(req), ts.do(req), http.StatusForbidden, "insufficient_scope", scopeAdmin)

	req = request{method: "GET", path: "/auth/tokens:read", token: secret}
	checkAllowed(t, label(req), ts.do(req), u, tok, scopeTokensRead)
}

// TestForwardAuthMisconfiguredRoute checks that a forward-auth path no
// token can pass, because the proxy's configuration is wrong, fails closed
// and tells the operator in the log.
func TestForwardAuthMisconfiguredRoute(t *testing.T) {
	ts := newTestServer(t)
	ts.declareScopes(treasureScopes...)
	u := ts.addUser("alice", true)
	_, secret := ts.addToken(u, "all", []string{scopeTokensRead, scopeAdmin, "treasure:create", "treasure:edit", "user:edit"}, 0)
	tests := []struct {
		path       string
		wantStatus int
		wantLog    string
	}{
		{"/auth/treasure:bury", 500, `scope \"treasure:bury\", which is not declared`},
		{"/auth/treasure:create,treasure:bury", 500, `scope \"treasure:bury\"`},
		{"/auth/treasure:create,", 500, `scope \"\", which`},
		{"/auth/treasure:create,,treasure:edit", 500, `scope \"\"`},
		{"/auth/Treasure:create", 500, `scope \"Treasure:create\"`},
		{"/auth/treasure:create%20", 500, `scope \"treasure:create \"`},
		{"/auth/treasure:create/x", 404, ""},
		{"/auth/", 301, ""}, // the router's trailing-slash redirect: no 2xx either
	}
	for _, tt := range tests {
		req := request{method: "GET", path: tt.path, token: secret}
		logged := len(ts.logs.String())
		w := ts.do(req)
		what := label(req)
		if w.Code != tt.wantStatus {
			t.Errorf("%s = %d; want %d; body: %s", what, w.Code, tt.wantStatus, w.Body)
		}
		checkNoAuthHeaders(t, what, w)
		if logs := ts.logs.String()[logged:]; !strings.Contains(logs, tt.wantLog) {
			t.Errorf("%s: the log does not say %s:\n%s", what, tt.wantLog, logs)
		}
	}
	for _, method := range []string{"POST", "PUT", "DELETE"} {
		req := request{method: method, path: "/auth/treasure:create", token: secret}
		w := ts.do(req)
		checkProblem(t, label(req), w, http.StatusMethodNotAllowed)
		checkNoAuthHeaders(t, label(req), w)
	}
}

// TestForwardAuthFailsClosed checks that a storage failure is a 500, never
// a 2xx that a proxy would take as a yes.
func TestForwardAuthFailsClosed(t *testing.T) {
	ts := newTestServer(t)
	ts.declareScopes(treasureScopes...)
	u := ts.addUser("alice", false)
	_, secret := ts.addToken(u, "cli", []string{"treasure:create"}, 0)
	if err := ts.store.Close(); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/auth", "/auth/treasure:create"} {
		req := request{method: "GET", path: path, token: secret}
		w := ts.do(req)
		checkProblem(t, label(req), w, http.StatusInternalServerError)
		checkNoAuthHeaders(t, label(req), w)
		if strings.Contains(w.Body.String(), "database") {
			t.Errorf("%s: body %q tells the client about the cause", label(req), w.Body)
		}
	}
	if !strings.Contains(ts.logs.String(), "internal error") {
		t.Errorf("the storage failure is not logged:\n%s", ts.logs)
	}
}

// TestForwardAuthLogs checks that a decision is logged with what the proxy
// says of the original request, and never with the token, a cookie, the
// Authorization header or the original query string.
func TestForwardAuthLogs(t *testing.T) {
	ts := newTestServer(t)
	ts.declareScopes(treasureScopes...)
	u := ts.addUser("alice", false)
	tok, secret := ts.addToken(u, "cli", []string{"treasure:create"}, 0)
	bad := flipChar(secret, 12)
	proxied := map[string]string{
		"X-Forwarded-Method": "PATCH",
		"X-Forwarded-Uri":    "/treasure/42?api_key=query-secret#frag",
		"X-Forwarded-For":    "198.51.100.23",
		"Cookie":             "session=cookie-secret",
	}
	for _, req := range []request{
		{method: "GET", path: "/auth/treasure:create", token: secret, header: proxied},
		{method: "GET", path: "/auth/treasure:edit", token: secret, header: proxied},
		{method: "GET", path: "/auth", token: bad, header: proxied},
		{method: "GET", path: "/auth", header: map[string]string{"X-Original-URI": "/nginx/path?token=" + secret}},
	} {
		ts.do(req)
	}
	logs := ts.logs.String()
	for _, secretText := range []string{secret, secret[len(defaultTokenPrefix):20], bad, "query-secret", "cookie-secret", "frag", "Bearer"} {
		if strings.Contains(logs, secretText) {
			t.Errorf("the log holds %q:\n%s", secretText, logs)
		}
	}
	for _, want := range []string{
		`msg="forward auth allowed" forwarded_method=PATCH forwarded_path=/treasure/42 forwarded_for=198.51.100.23 user_id=` + strconv.FormatUint(u.ID, 10) + ` token_id=` + strconv.FormatUint(tok.ID, 10),
		`msg="forward auth refused" forwarded_method=PATCH forwarded_path=/treasure/42 forwarded_for=198.51.100.23 user_id=` + strconv.FormatUint(u.ID, 10),
		`error=insufficient_scope`,
		`error=invalid_token`,
		`forwarded_path=/nginx/path`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %q:\n%s", want, logs)
		}
	}
}

// TestForwardAuthLogsNoForwardedToken sends a real token in every header a
// proxy forwards, and in the path and query of the request itself, on
// allowed and refused requests of every kind, with the log at debug level,
// and finds it nowhere in the log.
func TestForwardAuthLogsNoForwardedToken(t *testing.T) {
	ts := newTestServer(t)
	ts.declareScopes(treasureScopes...)
	u := ts.addUser("alice", false)
	_, secret := ts.addToken(u, "cli", []string{"treasure:create"}, 0)
	_, leaked := ts.addToken(u, "leaked", nil, 0) // a live token of the real format
	encoded := strings.Replace(leaked, "_", "%5F", 1)
	forwarded := map[string]string{
		"X-Original-URI":     "/app/" + leaked + "?access_token=" + leaked,
		"X-Original-URL":     "https://app.example/" + leaked,
		"X-Forwarded-Uri":    "/app/" + leaked + "/" + encoded + "?token=" + leaked + "#" + leaked,
		"X-Forwarded-Prefix": "/" + leaked,
		"X-Forwarded-Host":   leaked + ".example",
		"X-Forwarded-Method": leaked,
		"X-Forwarded-For":    leaked + ", 198.51.100.23",
		"X-Forwarded-Proto":  leaked,
		"X-Real-Ip":          leaked,
		"Forwarded":          "for=" + leaked,
		"X-Rewrite-Url":      "/" + leaked,
		"Referer":            "https://app.example/" + leaked + "?t=" + leaked,
		"User-Agent":         leaked,
		"Cookie":             "session=" + leaked,
	}
	for _, tt := range []struct {
		path  string
		token string
		want  int
	}{
		{"/auth", secret, 204},                            // allowed
		{"/auth/treasure:create", secret, 204},            // allowed, with a scope
		{"/auth/treasure:edit", secret, 403},              // lacking the scope
		{"/auth", "", 401},                                // no token
		{"/auth", flipChar(secret, 12), 401},              // a bad token
		{"/auth?token=" + leaked, secret, 204},            // a token in the query
		{"/auth/" + leaked, secret, 500},                  // a token as the route's scope
		{"/auth/treasure:create," + encoded, secret, 500}, // encoded
		{"/auth/" + leaked + "?access_token=" + leaked, secret, 500},
	} {
		for _, uriHeader := range []string{"X-Forwarded-Uri", "X-Original-URI"} {
			h := maps.Clone(forwarded)
			if uriHeader == "X-Original-URI" {
				delete(h, "X-Forwarded-Uri") // so that the other one is read
			}
			req := request{method: "GET", path: tt.path, token: tt.token, header: h}
			if w := ts.do(req); w.Code != tt.want {
				t.Errorf("%s = %d; want %d", label(req), w.Code, tt.want)
			}
		}
	}
	logs := ts.logs.String()
	for _, part := range []string{leaked, leaked[len(defaultTokenPrefix):][:12], leaked[len(leaked)-12:], secret[len(defaultTokenPrefix):][:12]} {
		if strings.Contains(logs, part) {
			t.Errorf("the log holds %q of a token:\n%s", part, logs)
		}
	}
	for _, want := range []string{"forward auth allowed", "forward auth refused", "forward auth route is misconfigured", "forwarded_path=/app/tkd_[redacted]/tkd_[redacted] "} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %q, so the test proves nothing:\n%s", want, logs)
		}
	}
}

// TestForwardAuthMisconfiguredRoutesBounded sends 1,000 anonymous requests
// for distinct undeclared scopes: each is refused with a 500 that names
// nothing internal and counted, but the log holds a bounded number of
// lines, and memory a bounded number of routes.
func TestForwardAuthMisconfiguredRoutesBounded(t *testing.T) {
	ts := newTestServer(t)
	// Straight to the handler: the route is refused before credentials
	// are looked at, which the document's rule that a request without a
	// token gets a 4xx does not foresee.
	get := func(path string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		ts.handler.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		return w
	}
	before := ts.snapshot()
	const n = 1000
	for i := range n {
		path := "/auth/undeclared:" + strconv.Itoa(i)
		w := get(path)
		p := checkProblem(t, "GET "+path, w, http.StatusInternalServerError)
		checkNoAuthHeaders(t, "GET "+path, w)
		for _, internal := range []string{"undeclared", "scope", "declare", "-scope", "flag", strconv.Itoa(i)} {
			if strings.Contains(p.Detail, internal) {
				t.Fatalf("GET %s: the answer %q names %q", path, p.Detail, internal)
			}
		}
		if w.Header().Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s: Cache-Control %q; want no-store", path, w.Header().Get("Cache-Control"))
		}
	}
	// The same route again within the interval adds no line.
	get("/auth/undeclared:0")
	logs := ts.logs.String()
	lines := strings.Count(logs, "forward auth route is misconfigured")
	if lines != ts.misconfigured.maxLogged {
		t.Errorf("%d requests for undeclared scopes logged %d lines; want %d", n+1, lines, ts.misconfigured.maxLogged)
	}
	if strings.Contains(logs, "internal error") {
		t.Errorf("a misconfigured route is logged as an internal error:\n%s", logs)
	}
	if got := len(ts.misconfigured.logged); got > ts.misconfigured.maxLogged {
		t.Errorf("%d routes remembered; want at most %d", got, ts.misconfigured.maxLogged)
	}
	if got := sample(scrapeRegistry(t, ts), "tokend_forward_auth_misconfigured_total", nil); got != n+1 {
		t.Errorf("tokend_forward_auth_misconfigured_total = %v; want %d", got, n+1)
	}
	// The next interval sums up the requests left unlogged and logs anew.
	ts.clock.Add(time.Minute)
	get("/auth/undeclared:0")
	logs = ts.logs.String()[len(logs):]
	if want := "requests=" + strconv.Itoa(n-ts.misconfigured.maxLogged); !strings.Contains(logs, "were not logged") || !strings.Contains(logs, want) {
		t.Errorf("after a minute the log does not sum up the unlogged requests (%s):\n%s", want, logs)
	}
	if !strings.Contains(logs, `path=/auth/undeclared:0 `) {
		t.Errorf("after a minute a route is not logged again:\n%s", logs)
	}
	assertUnchanged(t, "requests for undeclared scopes", before, ts.snapshot())
}
