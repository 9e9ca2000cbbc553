package main

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// introspectRequest returns POST /api/v1/introspect asking about token,
// sent with the caller's token callerSecret.
func introspectRequest(callerSecret, token string) request {
	return request{
		method: "POST", path: "/api/v1/introspect", token: callerSecret,
		header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"},
		body:   url.Values{"token": {token}, "token_type_hint": {"access_token"}}.Encode(),
	}
}

// checkInactive asserts that w is exactly the inactive answer.
func checkInactive(t *testing.T, what string, w *httptest.ResponseRecorder) {
	t.Helper()
	checkStatus(t, what, w, http.StatusOK)
	if got := w.Body.String(); got != `{"active":false}` {
		t.Errorf("%s: body = %q; want exactly {\"active\":false}", what, got)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type = %q; want application/json", what, ct)
	}
	checkNoStore(t, what, w)
}

// TestIntrospect asks about every kind of token: each inactive one gets the
// same bytes whatever the reason, and an active one its RFC 7662 members.
func TestIntrospect(t *testing.T) {
	ts := newTestServer(t)
	ts.declareScopes(treasureScopes...)
	rs := ts.addUser("resource-server", false)
	_, caller := ts.addToken(rs, "introspector", []string{scopeIntrospect}, 0)
	u := ts.addUser("alice", false)

	forever, foreverSecret := ts.addToken(u, "forever", []string{scopeTokensRead, "treasure:create"}, 0)
	ts.clock.Add(time.Minute)
	expiring, expiringSecret := ts.addToken(u, "expiring", nil, 2*time.Hour)
	_, expiredSecret := ts.addToken(u, "expired", []string{"treasure:create"}, time.Hour)
	revoked, revokedSecret := ts.addToken(u, "revoked", []string{"treasure:create"}, 0)
	if _, err := ts.store.DeleteToken(testActor, revoked.ID, u.ID); err != nil {
		t.Fatal(err)
	}
	bob := ts.addUser("bob", false)
	_, orphanSecret := ts.addToken(bob, "orphan", nil, 0)
	if err := ts.store.DeleteUser(testActor, bob.ID); err != nil {
		t.Fatal(err)
	}
	// A token of an admin who has since been demoted: admin counts for nothing.
	demoted, demotedSecret := ts.addToken(u, "old admin", []string{scopeAdmin, "user:edit"}, 0)
	ts.clock.Add(time.Hour)

	inactive := []struct {
		name  string
		token string
	}{
		{"garbage", "hello"},
		{"malformed", "tkd_nope"},
		{"bad checksum", flipChar(foreverSecret, 20)},
		{"another prefix", otherSecret(t, "ghp_")},
		{"unknown", otherSecret(t, "")},
		{"expired", expiredSecret},
		{"revoked", revokedSecret},
		{"owner removed", orphanSecret},
		{"with spaces around", " " + foreverSecret + " "},
	}
	var first *httptest.ResponseRecorder
	for _, tt := range inactive {
		t.Run("inactive "+tt.name, func(t *testing.T) {
			req := introspectRequest(caller, tt.token)
			before := ts.snapshot()
			w := ts.do(req)
			what := label(req) + " of a token " + tt.name
			checkInactive(t, what, w)
			if first == nil {
				first = w
			} else if w.Body.String() != first.Body.String() || !headersEqual(w.Header(), first.Header()) {
				t.Errorf("%s = %v %q; want the same headers and bytes as for %s: %v %q",
					what, w.Header(), w.Body, inactive[0].name, first.Header(), first.Body)
			}
			assertUnchanged(t, what, before, ts.snapshot())
		})
	}

	active := []struct {
		name  string
		token string
		want  map[string]any
	}{
		{
			name: "never expires", token: foreverSecret,
			want: map[string]any{
				"active": true, "scope": "tokens:read treasure:create", "username": "alice",
				"sub": strconv.FormatUint(u.ID, 10), "iat": float64(forever.CreatedAt.Unix()),
				"token_type": "Bearer", "client_id": strconv.FormatUint(forever.ID, 10),
			},
		},
		{
			name: "expires in an hour, no scopes", token: expiringSecret,
			want: map[string]any{
				"active": true, "scope": "", "username": "alice",
				"sub": strconv.FormatUint(u.ID, 10), "iat": float64(expiring.CreatedAt.Unix()), "exp": float64(expiring.ExpiresAt.Unix()),
				"token_type": "Bearer", "client_id": strconv.FormatUint(expiring.ID, 10),
			},
		},
		{
			name: "of a demoted admin", token: demotedSecret,
			want: map[string]any{
				"active": true, "scope": "user:edit", "username": "alice",
				"sub": strconv.FormatUint(u.ID, 10), "iat": float64(demoted.CreatedAt.Unix()),
				"token_type": "Bearer", "client_id": strconv.FormatUint(demoted.ID, 10),
			},
		},
		{
			name: "the caller's own", token: caller,
			want: map[string]any{
				"active": true, "scope": "introspect", "username": "resource-server",
				"sub": strconv.FormatUint(rs.ID, 10), "iat": float64(ts.clock.Now().Add(-time.Hour - time.Minute).Unix()),
				"token_type": "Bearer", "client_id": "1",
			},
		},
	}
	for _, tt := range active {
		t.Run("active "+tt.name, func(t *testing.T) {
			req := introspectRequest(caller, tt.token)
			w := ts.do(req)
			what := label(req) + " of a token that " + tt.name
			checkStatus(t, what, w, http.StatusOK)
			checkNoStore(t, what, w)
			var got map[string]any
			decode(t, w, &got)
			if len(got) != len(tt.want) {
				t.Errorf("%s = %v; want exactly the members %v", what, got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s: %s = %v (%T); want %v (%T)", what, k, got[k], got[k], v, v)
				}
			}
		})
	}
}

// headersEqual reports whether a and b hold the same headers.
func headersEqual(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if strings.Join(v, "\n") != strings.Join(b[k], "\n") {
			return false
		}
	}
	return true
}

// TestIntrospectRefusals checks who may not introspect and which requests
// are malformed, and that none of them changes the database.
func TestIntrospectRefusals(t *testing.T) {
	ts := newTestServer(t)
	u := ts.addUser("alice", false)
	_, caller := ts.addToken(u, "introspector", []string{scopeIntrospect}, 0)
	_, reader := ts.addToken(u, "reader", []string{scopeTokensRead, scopeTokensWrite}, 0)
	_, short := ts.addToken(u, "short", []string{scopeIntrospect}, time.Minute)
	_, subject := ts.addToken(u, "subject", nil, 0)
	ts.clock.Add(time.Hour)
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	body := "token=" + subject

	tests := []struct {
		name       string
		req        request
		wantStatus int
		wantCode   string // RFC 6750 code; "" for none
		wantScope  string
		wantDetail string
	}{
		{name: "no caller token", req: request{method: "POST", path: "/api/v1/introspect", header: form, body: body}, wantStatus: 401},
		{name: "the token asked about as the caller's", req: request{method: "POST", path: "/api/v1/introspect", header: map[string]string{"Content-Type": form["Content-Type"], "Authorization": "Bearer " + subject}, body: body}, wantStatus: 403, wantCode: "insufficient_scope", wantScope: scopeIntrospect},
		{name: "caller without introspect", req: request{method: "POST", path: "/api/v1/introspect", token: reader, header: form, body: body}, wantStatus: 403, wantCode: "insufficient_scope", wantScope: scopeIntrospect},
		{name: "caller expired", req: request{method: "POST", path: "/api/v1/introspect", token: short, header: form, body: body}, wantStatus: 401, wantCode: "invalid_token"},
		{name: "caller malformed", req: request{method: "POST", path: "/api/v1/introspect", token: "tkd_x", header: form, body: body}, wantStatus: 401, wantCode: "invalid_token"},
		{name: "JSON body", req: request{method: "POST", path: "/api/v1/introspect", token: caller, body: `{"token":"` + subject + `"}`}, wantStatus: 415, wantDetail: "application/x-www-form-urlencoded"},
		{name: "no body", req: request{method: "POST", path: "/api/v1/introspect", token: caller, header: form}, wantStatus: 400, wantDetail: "token is required"},
		{name: "empty token", req: request{method: "POST", path: "/api/v1/introspect", token: caller, header: form, body: "token=&token_type_hint=access_token"}, wantStatus: 400, wantDetail: "token is required"},
		{name: "token only in the query", req: request{method: "POST", path: "/api/v1/introspect?token=" + subject, token: caller, header: form, body: "token_type_hint=x"}, wantStatus: 400, wantDetail: "token is required"},
		{name: "malformed form", req: request{method: "POST", path: "/api/v1/introspect", token: caller, header: form, body: "token=%zz"}, wantStatus: 400, wantDetail: "malformed form"},
		{name: "body too large", req: request{method: "POST", path: "/api/v1/introspect", token: caller, header: form, body: "token=" + strings.Repeat("a", maxBodyBytes)}, wantStatus: 413},
		{name: "GET", req: request{method: "GET", path: "/api/v1/introspect", token: caller}, wantStatus: 405, wantDetail: "GET"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ts.snapshot()
			w := ts.do(tt.req)
			what := label(tt.req) + " with " + tt.name
			p := checkProblem(t, what, w, tt.wantStatus)
			if tt.wantStatus == http.StatusUnauthorized || tt.wantStatus == http.StatusForbidden {
				checkChallenge(t, what, w, tt.wantCode, tt.wantScope)
			}
			if p.Error != tt.wantCode {
				t.Errorf("%s: error = %q; want %q", what, p.Error, tt.wantCode)
			}
			checkDetail(t, what, p, tt.wantDetail)
			if strings.Contains(w.Body.String(), `"active"`) {
				t.Errorf("%s: body %q answers about the token; want a refusal only", what, w.Body)
			}
			assertUnchanged(t, what, before, ts.snapshot())
		})
	}
}

// TestIntrospectFailsLoudly checks that a storage failure is a 500, not an
// inactive answer that would hide it.
func TestIntrospectFailsLoudly(t *testing.T) {
	ts := newTestServer(t)
	u := ts.addUser("alice", false)
	_, caller := ts.addToken(u, "introspector", []string{scopeIntrospect}, 0)
	_, subject := ts.addToken(u, "subject", nil, 0)
	// The caller is checked before the store fails; the subject after.
	req := introspectRequest(caller, subject)
	ts.handler = failStoreAfterAuth(ts)
	w := ts.do(req)
	checkProblem(t, label(req)+" with the database closed", w, http.StatusInternalServerError)
	if strings.Contains(w.Body.String(), "active") {
		t.Errorf("body %q answers about the token; want only a 500", w.Body)
	}
}

// failStoreAfterAuth returns a handler that authenticates the caller and
// then closes ts's store before introspecting, so that the lookup of the
// token asked about fails.
func failStoreAfterAuth(ts *testServer) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := ts.authenticate(r)
		if err != nil {
			ts.t.Fatalf("authenticate the caller: %v", err)
		}
		if err := ts.store.Close(); err != nil {
			ts.t.Fatalf("close the store: %v", err)
		}
		ts.handleIntrospect(w, r, nil, c)
	})
}
