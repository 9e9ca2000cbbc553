package main

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestAuditRetentionFlag checks -audit-retention: a year by default, from
// TOKEND_AUDIT_RETENTION too, 0 to keep events forever, never negative.
func TestAuditRetentionFlag(t *testing.T) {
	clearTokendEnv(t)
	out, _, err := runCLI(t, "", "serve", "-print-config")
	if err != nil {
		t.Fatalf("serve -print-config = %v", err)
	}
	values, sources := configRows(t, out)
	if values["-audit-retention"] != "8760h0m0s" || sources["-audit-retention"] != "default" {
		t.Errorf("-audit-retention = %q from %q; want 8760h0m0s from default", values["-audit-retention"], sources["-audit-retention"])
	}
	t.Setenv("TOKEND_AUDIT_RETENTION", "0s")
	out, _, err = runCLI(t, "", "serve", "-print-config")
	if err != nil {
		t.Fatalf("serve -print-config with TOKEND_AUDIT_RETENTION=0s = %v", err)
	}
	values, sources = configRows(t, out)
	if values["-audit-retention"] != "0s" || sources["-audit-retention"] != "env TOKEND_AUDIT_RETENTION" {
		t.Errorf("-audit-retention = %q from %q; want 0s from env TOKEND_AUDIT_RETENTION", values["-audit-retention"], sources["-audit-retention"])
	}
	for _, bad := range []string{"-1h", "876001h"} {
		_, _, err := runCLI(t, "", "serve", "-print-config", "-audit-retention", bad)
		if err == nil || !strings.Contains(err.Error(), "-audit-retention") {
			t.Errorf("serve -audit-retention %s = %v; want an error naming -audit-retention", bad, err)
		}
	}
}

// TestAPIAuditRefusesBadValues checks that GET /api/v1/audit answers a bad
// parameter with a problem that names it, and changes nothing; and that
// only an admin's token with the admin scope reads the log.
func TestAPIAuditRefusesBadValues(t *testing.T) {
	ts := newTestServer(t)
	root := ts.addUser("root", true)
	bob := ts.addUser("bob", false)
	_, admin := ts.addToken(root, "admin", scopesAdmin, 0)
	_, rw := ts.addToken(root, "rw", scopesReadWrite, 0)
	_, bobs := ts.addToken(bob, "bob", scopesAdmin, 0)
	before := ts.snapshot()
	tests := []struct {
		query  string
		status int
		want   string // in the problem's detail
	}{
		{"user=nobody", 400, `no user called "nobody"`},
		{"kind=token.stolen", 400, `"token.stolen" is not a kind of event`},
		{"kind=token.revoked&kind=nope", 400, `"nope" is not a kind`},
		{"since=yesterday", 400, `since: "yesterday" is neither an RFC 3339 time`},
		{"until=2030-13-01", 400, "until:"},
		{"since=2030-02-01&until=2030-01-01", 400, "until must be later than since"},
		{"before=abc", 400, `before: "abc" is not a cursor`},
		{"after=0", 400, `after: "0" is not a cursor`},
		{"before=5&after=3", 400, "before or after, not both"},
		{"limit=0", 400, "limit: \"0\" is not a number from 1 to 500"},
		{"limit=501", 400, "from 1 to 500"},
		{"limit=ten", 400, "from 1 to 500"},
		{"limit=5&limit=6", 400, "limit is given 2 times"},
		{"users=root", 400, `unknown parameter "users"`},
	}
	for _, tt := range tests {
		w := ts.do(request{method: "GET", path: "/api/v1/audit?" + tt.query, token: admin})
		var p problem
		decode(t, w, &p)
		if w.Code != tt.status || w.Header().Get("Content-Type") != "application/problem+json" || !strings.Contains(p.Detail, tt.want) {
			t.Errorf("GET /api/v1/audit?%s = %d %s %s; want %d, a problem saying %q", tt.query, w.Code, w.Header().Get("Content-Type"), w.Body, tt.status, tt.want)
		}
	}
	for _, tt := range []struct {
		who, token string
		status     int
	}{
		{"no token", "", 401},
		{"a token without the admin scope", rw, 403},
		{"a user who is not an admin", bobs, 403},
	} {
		if w := ts.do(request{method: "GET", path: "/api/v1/audit", token: tt.token}); w.Code != tt.status {
			t.Errorf("GET /api/v1/audit with %s = %d; want %d; body: %s", tt.who, w.Code, tt.status, w.Body)
		}
	}
	assertUnchanged(t, "refused reads of the log", before, ts.snapshot())
}

// TestAuditPageRefusals checks that the admin audit page is for admins
// only and answers a bad filter with the form and a message, not a 500.
func TestAuditPageRefusals(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("root", true)
	ts.addUser("bob", false)
	root, bob := ts.login("root"), ts.login("bob")
	if w := ts.page(pageReq{method: "GET", path: "/admin/audit", cookie: bob}); w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "Admins only") {
		t.Errorf("GET /admin/audit as bob = %d; want 403 Admins only; body: %s", w.Code, w.Body)
	}
	if w := ts.page(pageReq{method: "GET", path: "/admin/audit"}); w.Code != http.StatusSeeOther {
		t.Errorf("GET /admin/audit signed out = %d; want 303 to the sign-in page", w.Code)
	}
	before := ts.snapshot()
	tests := []struct {
		query url.Values
		want  string
	}{
		{url.Values{"user": {"nobody"}}, "No user called &#34;nobody&#34;."},
		{url.Values{"kind": {"token.stolen"}}, "is not a kind of event"},
		{url.Values{"since": {"31/01/2030"}}, "Since: &#34;31/01/2030&#34; is neither an RFC 3339 time"},
		{url.Values{"since": {"2030-02-01"}, "until": {"2030-01-01"}}, "Until must be later than since."},
		{url.Values{"before": {"x"}}, "Before: &#34;x&#34; is not a cursor"},
	}
	for _, tt := range tests {
		w := ts.page(pageReq{method: "GET", path: "/admin/audit?" + tt.query.Encode(), cookie: root})
		body := w.Body.String()
		if w.Code != http.StatusBadRequest || !strings.Contains(body, tt.want) || !strings.Contains(body, `<form method="get" action="/admin/audit"`) {
			t.Errorf("GET /admin/audit?%s = %d; want 400 with the filter form and %q; body: %s", tt.query.Encode(), w.Code, tt.want, body)
		}
		// The form keeps what was sent.
		if v := tt.query.Get("user"); v != "" && !strings.Contains(body, `value="`+v+`"`) {
			t.Errorf("GET /admin/audit?%s lost the user name in the form", tt.query.Encode())
		}
	}
	if w := ts.page(pageReq{method: "GET", path: "/account/security-log?before=x", cookie: bob}); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "the link is broken") {
		t.Errorf("GET /account/security-log?before=x = %d; want 400 saying the link is broken; body: %s", w.Code, w.Body)
	}
	after := ts.snapshot()
	// Signing in is not what is tested: compare what the page reads only.
	for k := range after {
		if strings.HasPrefix(k, "sessions/") || strings.HasPrefix(k, "sessions#") {
			delete(after, k)
			delete(before, k)
		}
	}
	assertUnchanged(t, "refused reads of the audit page", before, after)
}
