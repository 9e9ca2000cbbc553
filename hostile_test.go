package main

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

// hostileRequest is a request built to hurt, and the 4xx it must get.
type hostileRequest struct {
	name   string
	method string
	path   string
	header map[string][]string // set as given: repeated, empty, odd bytes
	body   string
	want   int
	detail string // a word the problem's detail must hold ("" to skip)
}

// rawTokenBody returns a JSON body for POST /api/v1/tokens with a raw name,
// raw scopes and a raw expires_at, so that each can be made malformed.
func rawTokenBody(name, scopes, expires string) string {
	return `{"name":` + name + `,"scopes":` + scopes + `,"expires_at":` + expires + `}`
}

// routeMethods is every route of routes() with the methods it takes. The
// hostile table swaps each for every method it does not take.
var routeMethods = []struct {
	path    string
	methods []string
}{
	{"/", []string{"GET"}},
	{"/healthz", []string{"GET"}},
	{"/static/style.css", []string{"GET"}},
	{"/api/v1/user", []string{"GET"}},
	{"/api/v1/token", []string{"GET", "DELETE"}},
	{"/api/v1/token/rotate", []string{"POST"}},
	{"/api/v1/tokens", []string{"GET", "POST"}},
	{"/api/v1/tokens/1", []string{"GET", "DELETE"}},
	{"/api/v1/tokens/1/rotate", []string{"POST"}},
	{"/api/v1/revoke", []string{"POST"}},
	{"/api/v1/admin/backup", []string{"GET"}},
}

// hostileRequests returns the table for a server where bearer is a token
// of alice's with tokens:read and tokens:write, and bobsToken is the id of
// a token of another user.
func hostileRequests(bearer string, bobsToken uint64, now time.Time) []hostileRequest {
	auth := map[string][]string{"Authorization": {"Bearer " + bearer}}
	jsonAuth := func(extra ...string) map[string][]string {
		h := map[string][]string{"Authorization": {"Bearer " + bearer}, "Content-Type": {"application/json"}}
		for i := 0; i+1 < len(extra); i += 2 {
			h[extra[i]] = []string{extra[i+1]}
		}
		return h
	}
	rfc := func(t time.Time) string { return `"` + t.UTC().Format(time.RFC3339Nano) + `"` }
	create := func(name, body string, want int, detail string) hostileRequest {
		return hostileRequest{name: name, method: "POST", path: "/api/v1/tokens", header: jsonAuth(), body: body, want: want, detail: detail}
	}
	scopes := func(n int, name string) string {
		return "[" + strings.TrimSuffix(strings.Repeat(`"`+name+`",`, n), ",") + "]"
	}
	form := map[string][]string{"Content-Type": {"application/x-www-form-urlencoded"}}
	basic := func(name, password string) map[string][]string {
		return map[string][]string{"Authorization": {basicAuth(name, password)}, "Content-Type": {"application/json"}}
	}

	reqs := []hostileRequest{
		// Bodies too big or too deep.
		create("1 MiB body", rawTokenBody(`"`+strings.Repeat("a", 1<<20)+`"`, "[]", "null"), 413, "larger than"),
		create("one byte over 64 KiB", rawTokenBody(`"x"`, "[]", "null")+strings.Repeat(" ", maxBodyBytes), 413, "larger than"),
		create("arrays nested 20,000 deep", strings.Repeat("[", 20000)+strings.Repeat("]", 20000), 400, ""),
		create("objects nested 5,000 deep in the name", rawTokenBody(strings.Repeat(`{"a":`, 5000)+"1"+strings.Repeat("}", 5000), "[]", "null"), 400, "name"),
		create("10,000 scopes", rawTokenBody(`"x"`, scopes(10000, "a"), "null"), 400, "at most 64 scopes"),
		create("10,000 real scopes, past the size cap", rawTokenBody(`"x"`, scopes(10000, scopeTokensRead), "null"), 413, "larger than"),
		create("65 scopes", rawTokenBody(`"x"`, scopes(65, scopeTokensRead), "null"), 400, "at most 64"),
		// Names no person typed.
		create("invalid UTF-8 in the name", rawTokenBody("\"a\xff\xfeb\"", "[]", "null"), 400, "UTF-8"),
		create("invalid UTF-8 outside any string", "{\xff}", 400, "malformed JSON"),
		create("escaped NUL in the name", rawTokenBody(`"a\u0000b"`, "[]", "null"), 400, "control"),
		create("raw NUL in the body", "{\"name\":\"a\x00b\",\"expires_at\":null}", 400, "malformed JSON"),
		create("terminal escape in the name", rawTokenBody(`"\u001b[31mred"`, "[]", "null"), 400, "control"),
		create("newline in the name", rawTokenBody(`"line\nbreak"`, "[]", "null"), 400, "control"),
		create("DEL in the name", rawTokenBody(`"a\u007fb"`, "[]", "null"), 400, "control"),
		create("C1 control in the name", rawTokenBody(`"a\u0085b"`, "[]", "null"), 400, "control"),
		create("lone surrogate in the name", rawTokenBody(`"a\ud800b"`, "[]", "null"), 400, "UTF-8"),
		create("101-character name", rawTokenBody(`"`+strings.Repeat("é", 101)+`"`, "[]", "null"), 400, "100"),
		create("name of spaces", rawTokenBody(`"   \t  "`, "[]", "null"), 400, "name is required"),
		create("name is a number", rawTokenBody(`7`, "[]", "null"), 400, "name"),
		// Expiries.
		create("expires_at in the past", rawTokenBody(`"x"`, "[]", rfc(now.Add(-time.Second))), 400, "not in the future"),
		create("expires_at now", rawTokenBody(`"x"`, "[]", rfc(now)), 400, "not in the future"),
		create("expires_at in year 10000", rawTokenBody(`"x"`, "[]", `"10000-01-01T00:00:00Z"`), 400, "RFC 3339"),
		create("expires_at 11 years ahead", rawTokenBody(`"x"`, "[]", rfc(now.AddDate(11, 0, 0))), 400, "10 years"),
		create("expires_at in year 0", rawTokenBody(`"x"`, "[]", `"0000-01-01T00:00:00Z"`), 400, "not in the future"),
		create("expires_at a number", rawTokenBody(`"x"`, "[]", `1893456000`), 400, "RFC 3339"),
		create("expires_at not a date", rawTokenBody(`"x"`, "[]", `"2031-02-30T00:00:00Z"`), 400, "RFC 3339"),
		create("expires_at missing", `{"name":"x","scopes":[]}`, 400, "expires_at is required"),
		// Scopes.
		create("duplicate scopes", rawTokenBody(`"x"`, `["tokens:read","tokens:read"]`, "null"), 400, "twice"),
		create("unknown scope", rawTokenBody(`"x"`, `["root"]`, "null"), 400, "unknown scope"),
		create("scope with NUL", rawTokenBody(`"x"`, `["tokens:read\u0000"]`, "null"), 400, "unknown scope"),
		create("admin scope for a non-admin", rawTokenBody(`"x"`, `["admin"]`, "null"), 403, "admin"),
		create("scopes an object", rawTokenBody(`"x"`, `{"tokens:read":true}`, "null"), 400, "scopes"),
		// Shapes and types.
		create("unknown field", `{"name":"x","expires_at":null,"owner":1}`, 400, "unknown field"),
		create("two objects", `{"name":"x","expires_at":null}{"name":"y","expires_at":null}`, 400, "single JSON object"),
		create("an array", `[{"name":"x","expires_at":null}]`, 400, "an array"),
		create("null", `null`, 400, "null"),
		create("empty body", ``, 400, "empty"),
		create("truncated JSON", `{"name":"x","expires_at":nu`, 400, ""),
		{name: "UTF-16 body", method: "POST", path: "/api/v1/tokens", header: jsonAuth(), body: "\xff\xfe{\x00}\x00", want: 400, detail: "malformed JSON"},
		// Content types.
		{name: "text/plain", method: "POST", path: "/api/v1/tokens", header: map[string][]string{"Authorization": {"Bearer " + bearer}, "Content-Type": {"text/plain"}}, body: `{"name":"x","expires_at":null}`, want: 415, detail: "application/json"},
		{name: "no Content-Type", method: "POST", path: "/api/v1/tokens", header: auth, body: `{"name":"x","expires_at":null}`, want: 415, detail: "none"},
		{name: "form body", method: "POST", path: "/api/v1/tokens", header: map[string][]string{"Authorization": {"Bearer " + bearer}, "Content-Type": {"application/x-www-form-urlencoded"}}, body: "name=x&expires_at=", want: 415, detail: "application/json"},
		{name: "multipart body", method: "POST", path: "/api/v1/tokens", header: map[string][]string{"Authorization": {"Bearer " + bearer}, "Content-Type": {"multipart/form-data; boundary=x"}}, body: "--x\r\n\r\n--x--", want: 415, detail: "application/json"},
		{name: "malformed Content-Type", method: "POST", path: "/api/v1/tokens", header: map[string][]string{"Authorization": {"Bearer " + bearer}, "Content-Type": {"application/json; charset"}}, body: `{}`, want: 415, detail: "Content-Type"},
		{name: "two Content-Types", method: "POST", path: "/api/v1/tokens", header: map[string][]string{"Authorization": {"Bearer " + bearer}, "Content-Type": {"text/plain", "application/json"}}, body: `{}`, want: 415, detail: "Content-Type"},
		// Credentials.
		{name: "NUL in the Bearer token", method: "GET", path: "/api/v1/user", header: map[string][]string{"Authorization": {"Bearer tkd_\x00" + strings.Repeat("A", 48)}}, want: 401, detail: "malformed"},
		{name: "1 MiB Bearer token", method: "GET", path: "/api/v1/user", header: map[string][]string{"Authorization": {"Bearer " + strings.Repeat("A", 1<<20)}}, want: 401, detail: "malformed"},
		{name: "control characters in the Bearer token", method: "GET", path: "/api/v1/user", header: map[string][]string{"Authorization": {"Bearer \x1b[2J\x07"}}, want: 401, detail: "malformed"},
		{name: "two Authorization headers", method: "GET", path: "/api/v1/user", header: map[string][]string{"Authorization": {"Bearer " + bearer, "Bearer " + bearer}}, want: 400, detail: "one Authorization"},
		{name: "token in the query string", method: "GET", path: "/api/v1/user?access_token=" + bearer, want: 400, detail: "query string"},
		{name: "Basic with invalid base64", method: "POST", path: "/api/v1/tokens", header: map[string][]string{"Authorization": {"Basic !!!notbase64"}, "Content-Type": {"application/json"}}, body: `{}`, want: 400, detail: "Bearer"},
		{name: "Basic with a wrong password", method: "POST", path: "/api/v1/tokens", header: basic("alice", "wrong password"), body: rawTokenBody(`"x"`, "[]", "null"), want: 401, detail: "wrong user name or password"},
		{name: "Basic with NUL in the name", method: "POST", path: "/api/v1/tokens", header: basic("alice\x00", "password-of-alice"), body: rawTokenBody(`"x"`, "[]", "null"), want: 401, detail: "wrong user name or password"},
		{name: "Basic with a 1 MiB password", method: "POST", path: "/api/v1/tokens", header: basic("alice", strings.Repeat("p", 1<<20)), body: rawTokenBody(`"x"`, "[]", "null"), want: 401, detail: "wrong user name or password"},
		{name: "Basic with invalid UTF-8", method: "POST", path: "/api/v1/tokens", header: map[string][]string{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("\xff:\xfe"))}, "Content-Type": {"application/json"}}, body: `{}`, want: 401, detail: "wrong user name or password"},
		// Ids and paths.
		{name: "id past uint64", method: "DELETE", path: "/api/v1/tokens/99999999999999999999999", header: auth, want: 404, detail: "no token"},
		{name: "negative id", method: "DELETE", path: "/api/v1/tokens/-1", header: auth, want: 404, detail: "no token"},
		{name: "id 0", method: "GET", path: "/api/v1/tokens/0", header: auth, want: 404, detail: "no token"},
		{name: "NUL id", method: "GET", path: "/api/v1/tokens/%00", header: auth, want: 404, detail: "no token"},
		{name: "invalid UTF-8 id", method: "GET", path: "/api/v1/tokens/%ff%fe", header: auth, want: 404, detail: "no token"},
		{name: "another user's token", method: "POST", path: fmt.Sprintf("/api/v1/tokens/%d/rotate", bobsToken), header: auth, want: 404, detail: "no token"},
		{name: "another user's token, revoked", method: "DELETE", path: fmt.Sprintf("/api/v1/tokens/%d", bobsToken), header: auth, want: 404, detail: "no token"},
		{name: "backup without admin", method: "GET", path: "/api/v1/admin/backup", header: auth, want: 403, detail: "admin"},
		{name: "100 KiB unknown path", method: "GET", path: "/" + strings.Repeat("a", 100<<10), want: 404, detail: "no such endpoint"},
		{name: "control characters in the path", method: "GET", path: "/api/v1/%1b%5b2J", want: 404, detail: "no such endpoint"},
		// Leak reports.
		{name: "leak report of 1 MiB", method: "POST", path: "/api/v1/revoke", header: form, body: "token=" + strings.Repeat("a", 1<<20), want: 413, detail: "larger than"},
		{name: "leak report without token", method: "POST", path: "/api/v1/revoke", header: form, body: "nothing=here", want: 400, detail: "token"},
		{name: "leak report with bad escapes", method: "POST", path: "/api/v1/revoke", header: form, body: "token=%zz", want: 400, detail: "form"},
		{name: "leak report as text", method: "POST", path: "/api/v1/revoke", header: map[string][]string{"Content-Type": {"text/plain"}}, body: bearer, want: 415, detail: "form field"},
		{name: "leak report with unknown field", method: "POST", path: "/api/v1/revoke", header: map[string][]string{"Content-Type": {"application/json"}}, body: `{"token":"x","why":"y"}`, want: 400, detail: "unknown field"},
	}

	// Every route, with every method it does not take.
	for _, route := range routeMethods {
		for _, m := range []string{"GET", "POST", "PUT", "DELETE", "PATCH"} {
			if slices.Contains(route.methods, m) {
				continue
			}
			reqs = append(reqs, hostileRequest{name: m + " " + route.path, method: m, path: route.path, header: auth, body: `{}`, want: 405, detail: m})
		}
	}
	return reqs
}

// TestHostileRequests sends every request of the hostile table through the
// router. Each must get its 4xx as an RFC 9457 problem, never a 5xx, and
// leave the database as it was, record for record.
func TestHostileRequests(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	bob := ts.addUser("bob", false)
	tok, bearer := ts.addToken(alice, "hostile", scopesReadWrite, 0)
	bobs, _ := ts.addToken(bob, "bob's", scopesReadWrite, 0)

	reqs := hostileRequests(bearer, bobs.ID, ts.clock.Now())
	names := map[string]bool{}
	for _, hr := range reqs {
		if names[hr.name] {
			t.Fatalf("two hostile requests are called %q", hr.name)
		}
		names[hr.name] = true
		t.Run(hr.name, func(t *testing.T) {
			var body io.Reader
			if hr.body != "" {
				body = strings.NewReader(hr.body)
			}
			r := httptest.NewRequest(hr.method, hr.path, body)
			maps.Copy(r.Header, hr.header)
			before := ts.snapshot()
			w := serveRaw(ts, r)
			p := checkProblem(t, hr.name, w, hr.want)
			if hr.detail != "" {
				checkDetail(t, hr.name, p, hr.detail)
			}
			if strings.Contains(w.Body.String(), bearer) {
				t.Errorf("%s: the answer repeats the caller's token", hr.name)
			}
			assertUnchanged(t, hr.name, before, ts.snapshot())
		})
	}
	t.Logf("%d hostile requests through the router", len(reqs))
	if len(reqs) < 40 {
		t.Errorf("only %d hostile requests; want at least 40", len(reqs))
	}
	checkWorks(t, ts, "alice's token after the hostile requests", bearer, tok.ID)
}

// rawExchange sends raw bytes on a new connection to addr and returns the
// status line and the body of the answer ("" when the server hung up
// without one).
func rawExchange(t *testing.T, addr, raw string) (status, contentType, body string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	go io.WriteString(conn, raw) // the server may answer before it has read everything
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", "", ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.Status, resp.Header.Get("Content-Type"), string(b)
}

// TestHostileConnections sends what only a real server can be sent: headers
// past -max-header-bytes, and requests that break HTTP itself. net/http
// answers these before any handler runs (with a plain-text 4xx), so no
// problem body is possible; what matters is the 4xx, that the server keeps
// serving, and that the database is unchanged.
func TestHostileConnections(t *testing.T) {
	cfg := testServeConfig(t)
	st, err := openStore(cfg.DB, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	alice := storeUser(t, st, "alice", false)
	// A real password hash, so that Basic works and tokens:write bodies are read.
	hash, err := newPasswordHasher(testArgon, 1).Hash(t.Context(), "password-of-alice")
	if err != nil {
		t.Fatal(err)
	}
	st.ChangePassword(testActor, alice.ID, passwordChange{hash: hash, at: time.Now()})
	before := dumpStore(t, st)
	st.Close()
	addr, logs, stop := startServe(t, cfg)

	big := strings.Repeat("a", 64<<10)
	many := strings.Repeat("X-Filler: 0123456789abcdef\r\n", 2000)
	tests := []struct {
		name    string
		raw     string
		want    int
		problem bool // the answer comes from tokend, as a problem
	}{
		{"one 64 KiB header", "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + big + "\r\n\r\n", 431, false},
		{"2,000 small headers", "GET /healthz HTTP/1.1\r\nHost: t\r\n" + many + "\r\n", 431, false},
		{"64 KiB request target", "GET /" + big + " HTTP/1.1\r\nHost: t\r\n\r\n", 431, false},
		{"64 KiB Authorization", "GET /api/v1/user HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer " + big + "\r\n\r\n", 431, false},
		{"NUL in a header value", "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Nul: a\x00b\r\n\r\n", 400, false},
		{"control character in a header value", "GET /healthz HTTP/1.1\r\nHost: t\r\nX-Esc: a\x1bb\r\n\r\n", 400, false},
		{"space in a header name", "GET /healthz HTTP/1.1\r\nHost: t\r\nBad Header: x\r\n\r\n", 400, false},
		{"NUL in the method", "G\x00T /healthz HTTP/1.1\r\nHost: t\r\n\r\n", 400, false},
		{"no Host", "GET /healthz HTTP/1.1\r\n\r\n", 400, false},
		{"Content-Length and Transfer-Encoding", "POST /api/v1/revoke HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n0\r\n\r\n", 400, false},
		{"two different Content-Lengths", "POST /api/v1/revoke HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400, false},
		{"Content-Length not a number", "POST /api/v1/revoke HTTP/1.1\r\nHost: t\r\nContent-Length: lots\r\n\r\n", 400, false},
		{"10 MiB body announced", "POST /api/v1/tokens HTTP/1.1\r\nHost: t\r\nAuthorization: " + basicAuth("alice", "password-of-alice") +
			"\r\nContent-Type: application/json\r\nContent-Length: 10485760\r\n\r\n{\"name\":\"" + strings.Repeat("a", 100<<10), 413, true},
		{"chunked body past the cap", "POST /api/v1/revoke HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n" +
			strings.Repeat(fmt.Sprintf("%x\r\n%s\r\n", 8<<10, strings.Repeat("a", 8<<10)), 10) + "0\r\n\r\n", 413, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, ct, body := rawExchange(t, addr, tt.raw)
			if !strings.HasPrefix(status, fmt.Sprint(tt.want)) {
				t.Errorf("%s = %q %s; want %d", tt.name, status, truncate(body, 200), tt.want)
			}
			if tt.problem && (ct != "application/problem+json" || !strings.Contains(body, fmt.Sprintf(`"status":%d`, tt.want))) {
				t.Errorf("%s: Content-Type %q, body %s; want a problem", tt.name, ct, truncate(body, 200))
			}
		})
	}
	t.Logf("%d hostile requests over real connections", len(tests))

	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /healthz after the hostile connections = %v, %v; want 200", resp, err)
	}
	resp.Body.Close()
	stop()
	if strings.Contains(logs.String(), "level=ERROR") || strings.Contains(logs.String(), "panic") {
		t.Errorf("the hostile connections made the server log errors:\n%s", logs)
	}
	st, err = openStore(cfg.DB, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	assertUnchanged(t, "the hostile connections", before, dumpStore(t, st))
}
