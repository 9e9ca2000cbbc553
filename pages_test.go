package main

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"html"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// pageReq is a request as a browser on tokend's own pages sends it.
type pageReq struct {
	method, path string
	form         url.Values        // sent as a form body when not nil
	cookie       string            // the session cookie's value
	addr         string            // the client's address; 192.0.2.7 when empty
	https        bool              // the request arrives over TLS
	header       map[string]string // more headers, set last
	// noFormKey leaves out the form key that a POST form gets when it
	// has none, as if the browser had filled in a fresh page.
	noFormKey bool
}

// page sends req through the whole router. A POST carries the headers a
// browser sends from tokend's own page (Origin, Sec-Fetch-Site); header
// can override them.
func (ts *testServer) page(req pageReq) *httptest.ResponseRecorder {
	ts.t.Helper()
	target := req.path
	if req.https {
		target = "https://example.com" + req.path
	}
	var body io.Reader
	if req.form != nil {
		if req.method == http.MethodPost && !req.noFormKey && !req.form.Has("form_key") {
			req.form = maps.Clone(req.form)
			req.form.Set("form_key", newFormKey())
		}
		body = strings.NewReader(req.form.Encode())
	}
	r := httptest.NewRequest(req.method, target, body)
	addr := cmp.Or(req.addr, "192.0.2.7")
	if strings.Contains(addr, ":") {
		addr = "[" + addr + "]"
	}
	r.RemoteAddr = addr + ":4711"
	if req.form != nil {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if req.method == http.MethodPost {
		origin := "http://example.com"
		if req.https {
			origin = "https://example.com"
		}
		r.Header.Set("Origin", origin)
		r.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	if req.cookie != "" {
		name := sessionCookieName
		if req.https {
			name = sessionCookieNameHTTPS
		}
		r.AddCookie(&http.Cookie{Name: name, Value: req.cookie})
	}
	for k, v := range req.header {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	ts.handler.ServeHTTP(w, r)
	return w
}

// submit sends req like page, and when the answer is the redirect of a
// token form to the page that shows its secret, follows it as a browser
// does and returns that page.
func (ts *testServer) submit(req pageReq) *httptest.ResponseRecorder {
	ts.t.Helper()
	w := ts.page(req)
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/secret" {
		return w
	}
	return ts.page(pageReq{method: "GET", path: "/secret", cookie: req.cookie, addr: req.addr, https: req.https})
}

// login signs name in with the password addUser gave them and returns the
// session cookie's value.
func (ts *testServer) login(name string) string {
	ts.t.Helper()
	w := ts.page(pageReq{method: "POST", path: "/login", form: url.Values{"name": {name}, "password": {"password-of-" + name}}})
	if w.Code != http.StatusSeeOther {
		ts.t.Fatalf("POST /login as %s = %d; want 303; body: %s", name, w.Code, w.Body)
	}
	c := responseCookie(w, sessionCookieName)
	if c == nil || c.Value == "" {
		ts.t.Fatalf("POST /login as %s set no session cookie; Set-Cookie: %q", name, w.Header().Values("Set-Cookie"))
	}
	return c.Value
}

// responseCookie returns the cookie called name that w sets, or nil.
func responseCookie(w *httptest.ResponseRecorder, name string) *http.Cookie {
	for _, c := range w.Result().Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// checkPage asserts that w is an HTML page of status want that mentions
// every one of subs (compared after unescaping HTML).
func checkPage(t *testing.T, what string, w *httptest.ResponseRecorder, want int, subs ...string) string {
	t.Helper()
	if w.Code != want {
		t.Errorf("%s = %d; want %d; body:\n%s", what, w.Code, want, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("%s: Content-Type = %q; want an HTML page", what, ct)
	}
	text := pageText(w.Body.String())
	for _, sub := range subs {
		if !strings.Contains(text, sub) {
			t.Errorf("%s: the page does not say %q:\n%s", what, sub, text)
		}
	}
	return html.UnescapeString(w.Body.String())
}

var (
	htmlTag = regexp.MustCompile(`<[^>]*>`)
	spaces  = regexp.MustCompile(`\s+`)
)

// pageText returns what a person reads on an HTML page: no tags, HTML
// entities decoded, runs of white space as one space.
func pageText(body string) string {
	return spaces.ReplaceAllString(html.UnescapeString(htmlTag.ReplaceAllString(body, " ")), " ")
}

// checkRedirect asserts that w is a 303 to a location starting with want.
func checkRedirect(t *testing.T, what string, w *httptest.ResponseRecorder, want string) {
	t.Helper()
	if w.Code != http.StatusSeeOther || !strings.HasPrefix(w.Header().Get("Location"), want) {
		t.Errorf("%s = %d to %q; want 303 to %s; body: %s", what, w.Code, w.Header().Get("Location"), want, w.Body)
	}
}

// flashOf returns the notice w carries to the next page.
func flashOf(t *testing.T, ts *testServer, w *httptest.ResponseRecorder) string {
	t.Helper()
	c := responseCookie(w, flashCookie)
	if c == nil {
		return ""
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.AddCookie(c)
	return ts.takeFlash(httptest.NewRecorder(), r)
}

var pageSecret = regexp.MustCompile(`id="secret" class="secret">(tkd_[0-9A-Za-z]{49})<`)

// secretOnPage returns the secret a show-once page shows, failing without one.
func secretOnPage(t *testing.T, what string, w *httptest.ResponseRecorder) string {
	t.Helper()
	m := pageSecret.FindStringSubmatch(w.Body.String())
	if m == nil {
		t.Fatalf("%s shows no token secret; status %d; body:\n%s", what, w.Code, w.Body)
	}
	return m[1]
}

func tokenFormValues(name string, scopes []string, expiry, date string) url.Values {
	return url.Values{"name": {name}, "scope": scopes, "expiry": {expiry}, "expiry_date": {date}}
}

// TestPagesNeedSignIn checks that every page and form sends a signed-out
// browser to the sign-in page and changes nothing.
func TestPagesNeedSignIn(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", true)
	tok, _ := ts.addToken(alice, "ci", scopesRead, 0)
	forms := []string{"/tokens", "/tokens/1/revoke", "/tokens/1/rotate", "/account/password", "/account/sessions/end",
		"/account/sessions/end-others", "/admin/users", "/admin/users/1/password", "/admin/users/1/admin", "/admin/users/1/remove"}
	pages := []string{"/", "/account", "/admin/users", "/admin/users/1", "/tokens/1/revoke", "/tokens/1/rotate", "/secret"}
	for _, cookie := range []string{"", "not-a-session", strings.Repeat("A", 43)} {
		for _, path := range pages {
			w := ts.page(pageReq{method: "GET", path: path, cookie: cookie})
			checkRedirect(t, "GET "+path+" signed out", w, "/login?next="+url.QueryEscape(path))
		}
		for _, path := range forms {
			before := ts.snapshot()
			w := ts.page(pageReq{method: "POST", path: path, cookie: cookie,
				form: url.Values{"name": {"x"}, "scope": {"tokens:read"}, "expiry": {"never"}, "confirm": {"alice"}, "admin": {"false"}}})
			checkRedirect(t, "POST "+path+" signed out", w, "/login")
			assertUnchanged(t, "POST "+path+" signed out", before, ts.snapshot())
		}
	}
	if _, err := ts.store.TokenByID(tok.ID, alice.ID); err != nil {
		t.Errorf("alice's token is gone after signed-out requests: %v", err)
	}
	// Signed in, the sign-in page sends the browser on.
	cookie := ts.login("alice")
	checkRedirect(t, "GET /login signed in", ts.page(pageReq{method: "GET", path: "/login?next=/account", cookie: cookie}), "/account")
	checkRedirect(t, "GET /login?next=//evil.example", ts.page(pageReq{method: "GET", path: "/login?next=//evil.example", cookie: cookie}), "/")
}

// TestSafeNext checks that the sign-in page only ever sends a browser to a
// path of this site.
func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{
		"/account": "/account", "/tokens/1/revoke": "/tokens/1/revoke", "": "/", "//evil.example": "/",
		"/\\evil.example": "/", "https://evil.example/": "/", "account": "/", "/x\r\nSet-Cookie: a=b": "/",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q; want %q", in, got, want)
		}
	}
}

// TestPageHeaders checks the security headers of every HTML answer.
func TestPageHeaders(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", true)
	for _, https := range []bool{false, true} {
		w := ts.page(pageReq{method: "POST", path: "/login", https: https, form: url.Values{"name": {"alice"}, "password": {"password-of-alice"}}})
		name := sessionCookieName
		if https {
			name = sessionCookieNameHTTPS
		}
		c := responseCookie(w, name)
		if c == nil {
			t.Fatalf("POST /login (https %v) set no cookie %s", https, name)
		}
		for _, req := range []pageReq{
			{method: "GET", path: "/login"},
			{method: "GET", path: "/setup"},
			{method: "GET", path: "/", cookie: c.Value},
			{method: "GET", path: "/account", cookie: c.Value},
			{method: "GET", path: "/admin/users", cookie: c.Value},
			{method: "GET", path: "/admin/users/1", cookie: c.Value},
			{method: "GET", path: "/tokens/99/revoke", cookie: c.Value},
			{method: "POST", path: "/tokens", cookie: c.Value, form: tokenFormValues("ci", nil, "7", "")},
			{method: "POST", path: "/login", header: map[string]string{"Sec-Fetch-Site": "cross-site"}},
		} {
			req.https = https
			w := ts.submit(req)
			what := req.method + " " + req.path
			if https {
				what += " over HTTPS"
			}
			if w.Code == http.StatusSeeOther {
				t.Errorf("%s = 303 to %s; want a page", what, w.Header().Get("Location"))
				continue
			}
			h := w.Header()
			csp := h.Get("Content-Security-Policy")
			for _, want := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'", "form-action 'self'"} {
				if !strings.Contains(csp, want) {
					t.Errorf("%s: CSP %q lacks %s", what, csp, want)
				}
			}
			if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
				t.Errorf("%s: CSP %q allows inline script or eval", what, csp)
			}
			if h.Get("X-Content-Type-Options") != "nosniff" || h.Get("Referrer-Policy") != "no-referrer" {
				t.Errorf("%s: nosniff %q, referrer %q; want nosniff and no-referrer", what, h.Get("X-Content-Type-Options"), h.Get("Referrer-Policy"))
			}
			if h.Get("Content-Type") != "text/html; charset=utf-8" {
				t.Errorf("%s: Content-Type %q", what, h.Get("Content-Type"))
			}
			if hsts := h.Get("Strict-Transport-Security"); (hsts != "") != https {
				t.Errorf("%s: Strict-Transport-Security = %q; want it exactly over HTTPS", what, hsts)
			}
			if strings.Contains(w.Body.String(), "<script>") || strings.Contains(w.Body.String(), " style=") {
				t.Errorf("%s: the page has inline script or style, which the CSP blocks", what)
			}
		}
	}
}

// TestTokenPage checks the list: names, scopes, hints and times said as
// people say them.
func TestTokenPage(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	bob := ts.addUser("bob", false)
	ts.addToken(alice, "month", scopesReadWrite, 30*24*time.Hour)
	ts.addToken(alice, "short", scopesRead, 24*time.Hour)
	ts.addToken(alice, "forever", nil, 0)
	ts.addToken(bob, "bobs-secret-thing", scopesRead, 0)
	cookie := ts.login("alice")
	ts.clock.Add(4 * 24 * time.Hour)
	w := ts.page(pageReq{method: "GET", path: "/", cookie: cookie})
	body := checkPage(t, "GET /", w, http.StatusOK, "month", "in 26 days", `tkd_[0-9A-Za-z]{49}`, "short", "expired 3 days ago",
		"forever", "never expires", "never used", "tokens:read", "tokens:write", "tkd_…", "Created 4 days ago")
	if strings.Contains(body, "bobs-secret-thing") {
		t.Errorf("alice's token page lists bob's token")
	}
	// The form offers each scope with its description, but admin only to admins.
	for _, sc := range builtinScopes {
		has := strings.Contains(body, `value="`+sc.Name+`"`) && strings.Contains(body, sc.Description)
		if want := sc.Name != scopeAdmin; has != want {
			t.Errorf("the token form offers scope %s: %v; want %v", sc.Name, has, want)
		}
	}
	for _, choice := range []string{"7 days", "30 days", "60 days", "90 days", "Custom date", "No expiry"} {
		if !strings.Contains(body, choice) {
			t.Errorf("the token form lacks the expiry choice %q", choice)
		}
	}
	if !regexp.MustCompile(`value="30" checked`).MatchString(w.Body.String()) {
		t.Errorf("the token form does not preselect 30 days")
	}
}

func TestRelTime(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{
		{0, "just now"},
		{10 * time.Second, "in a few seconds"},
		{-5 * time.Minute, "5 minutes ago"},
		{time.Minute, "in 1 minute"},
		{-3 * time.Hour, "3 hours ago"},
		{29*24*time.Hour + 23*time.Hour, "in 30 days"},
		{29 * 24 * time.Hour, "in 29 days"},
		{-3 * 24 * time.Hour, "3 days ago"},
		{90 * 24 * time.Hour, "in 3 months"},
		{-3 * 365 * 24 * time.Hour, "3 years ago"},
	} {
		if got := relTime(now, now.Add(tt.d)); got != tt.want {
			t.Errorf("relTime(now, now%+v) = %q; want %q", tt.d, got, tt.want)
		}
	}
}

// TestCreateTokenPage creates tokens through the form and checks the
// show-once page and what the database holds.
func TestCreateTokenPage(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	cookie := ts.login("alice")
	now := ts.clock.Now()
	tests := []struct {
		expiry, date string
		want         *time.Time
	}{
		{"7", "", timePtr(now.Add(7 * 24 * time.Hour))},
		{"30", "", timePtr(now.Add(30 * 24 * time.Hour))},
		{"90", "", timePtr(now.Add(90 * 24 * time.Hour))},
		{"custom", "2030-02-01", timePtr(time.Date(2030, 2, 2, 0, 0, 0, 0, time.UTC))},
		{"never", "", nil},
	}
	for _, tt := range tests {
		w := ts.page(pageReq{method: "POST", path: "/tokens", cookie: cookie,
			form: tokenFormValues("ci "+tt.expiry, []string{"tokens:write", "tokens:read"}, tt.expiry, tt.date)})
		what := "POST /tokens with expiry " + tt.expiry
		// The secret is never in a URL: the form goes to a page that shows it.
		checkRedirect(t, what, w, "/secret")
		if loc := w.Header().Get("Location"); loc != "/secret" {
			t.Errorf("%s redirects to %q; want /secret and nothing more", what, loc)
		}
		w = ts.page(pageReq{method: "GET", path: "/secret", cookie: cookie})
		what = "GET /secret after " + what
		checkPage(t, what, w, http.StatusOK, "Token created", "will not be shown again", "ci "+tt.expiry)
		if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
			t.Errorf("%s: Cache-Control = %q; want no-store", what, cc)
		}
		secret := secretOnPage(t, what, w)
		tok, u, err := ts.store.TokenByHash(hashToken(secret))
		if err != nil || u.ID != alice.ID {
			t.Fatalf("%s: the secret on the page is not alice's token: %v", what, err)
		}
		if tok.Name != "ci "+tt.expiry || strings.Join(tok.Scopes, " ") != "tokens:read tokens:write" || !sameTime(tok.ExpiresAt, tt.want) {
			t.Errorf("%s stored %q %v expiring %s; want scopes tokens:read tokens:write expiring %s", what, tok.Name, tok.Scopes, fmtTime(tok.ExpiresAt), fmtTime(tt.want))
		}
		checkWorks(t, ts, what, secret, tok.ID)
		checkSecretKept(t, ts, secret)
	}
}

// TestCreateTokenPageBadInput checks that a mistake in the form shows the
// form again with a message saying what is wrong, keeps what was typed,
// and changes nothing.
func TestCreateTokenPageBadInput(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", false)
	cookie := ts.login("alice")
	tests := []struct {
		name   string
		form   url.Values
		status int
		says   string
	}{
		{"no name", tokenFormValues("  ", nil, "30", ""), 400, "Name is required"},
		{"long name", tokenFormValues(strings.Repeat("n", 101), nil, "30", ""), 400, "at most 100 characters"},
		{"control character", tokenFormValues("a\x01b", nil, "30", ""), 400, "control characters"},
		{"unknown scope", tokenFormValues("ci", []string{"root"}, "30", ""), 400, `Unknown scope "root"`},
		{"repeated scope", tokenFormValues("ci", []string{"tokens:read", "tokens:read"}, "30", ""), 400, "listed twice"},
		{"admin scope", tokenFormValues("ci", []string{"admin"}, "30", ""), 403, "Only admins"},
		{"no expiry choice", tokenFormValues("ci", nil, "", ""), 400, "Choose when the token expires"},
		{"odd expiry choice", tokenFormValues("ci", nil, "365", ""), 400, "Choose when the token expires"},
		{"custom without date", tokenFormValues("ci", nil, "custom", ""), 400, "Choose the date"},
		{"custom not a date", tokenFormValues("ci", nil, "custom", "31/01/2030"), 400, "not a date"},
		{"custom in the past", tokenFormValues("ci", nil, "custom", "2029-12-31"), 400, "in the past"},
		{"custom too far", tokenFormValues("ci", nil, "custom", "2045-01-01"), 400, "at most 10 years"},
		{"date but 30 days", tokenFormValues("ci", nil, "30", "2030-03-01"), 400, "choose Custom date"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := ts.snapshot()
			w := ts.page(pageReq{method: "POST", path: "/tokens", cookie: cookie, form: tt.form})
			body := checkPage(t, "POST /tokens with "+tt.name, w, tt.status, tt.says, "New token")
			if name := tt.form.Get("name"); name != "" && !strings.Contains(body, `value="`+name+`"`) && !strings.ContainsAny(name, "\x01") && len(name) < 100 {
				t.Errorf("the form lost the name %q", name)
			}
			if pageSecret.MatchString(w.Body.String()) {
				t.Errorf("a failed POST /tokens shows a secret")
			}
			assertUnchanged(t, "POST /tokens with "+tt.name, before, ts.snapshot())
		})
	}
	t.Run("too many tokens", func(t *testing.T) {
		ts.cfg.MaxTokensPerUser = 1
		defer func() { ts.cfg.MaxTokensPerUser = 100 }()
		checkPage(t, "first token", ts.submit(pageReq{method: "POST", path: "/tokens", cookie: cookie, form: tokenFormValues("one", nil, "7", "")}), 200)
		before := ts.snapshot()
		w := ts.page(pageReq{method: "POST", path: "/tokens", cookie: cookie, form: tokenFormValues("two", nil, "7", "")})
		text := pageText(checkPage(t, "POST /tokens past the limit", w, http.StatusConflict,
			"You already hold 1 token, the most allowed", "1 of 1 token."))
		if strings.Contains(text, "1 tokens") {
			t.Errorf("POST /tokens past a limit of 1 says %q:\n%s", "1 tokens", text)
		}
		assertUnchanged(t, "POST /tokens past the limit", before, ts.snapshot())
	})
}

// TestFormBodyLimit checks that an oversized or unreadable form is a 400
// that changes nothing, not a 500.
func TestFormBodyLimit(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", false)
	cookie := ts.login("alice")
	before := ts.snapshot()
	w := ts.page(pageReq{method: "POST", path: "/tokens", cookie: cookie,
		form: url.Values{"name": {strings.Repeat("n", maxFormBytes)}, "expiry": {"7"}}})
	checkPage(t, "POST /tokens with an oversized form", w, http.StatusBadRequest, "could not be read")
	w = ts.page(pageReq{method: "POST", path: "/tokens", cookie: cookie, form: url.Values{},
		header: map[string]string{"Content-Type": "application/x-www-form-urlencoded; charset=%%%"}})
	if w.Code >= 500 {
		t.Errorf("POST /tokens with a broken Content-Type = %d; want a client error", w.Code)
	}
	assertUnchanged(t, "bad form bodies", before, ts.snapshot())
}

// TestRevokeAndRotatePages checks the confirmation pages, the actions
// behind them, and that another user's token is not there (404).
func TestRevokeAndRotatePages(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	bob := ts.addUser("bob", false)
	bobTok, bobSecret := ts.addToken(bob, "bobs", scopesRead, 0)
	tok, secret := ts.addToken(alice, "deploy", scopesReadWrite, 30*24*time.Hour)
	cookie := ts.login("alice")

	for _, action := range []string{"revoke", "rotate"} {
		for _, path := range []string{"/tokens/" + itoa(bobTok.ID) + "/" + action, "/tokens/999/" + action, "/tokens/x/" + action, "/tokens/0/" + action} {
			checkPage(t, "GET "+path+" as alice", ts.page(pageReq{method: "GET", path: path, cookie: cookie}), http.StatusNotFound, "Not found")
			before := ts.snapshot()
			w := ts.page(pageReq{method: "POST", path: path, cookie: cookie, form: url.Values{}})
			checkPage(t, "POST "+path+" as alice", w, http.StatusNotFound, "Not found")
			assertUnchanged(t, "POST "+path+" as alice", before, ts.snapshot())
		}
	}
	checkWorks(t, ts, "bob's token after alice's tries", bobSecret, bobTok.ID)

	path := "/tokens/" + itoa(tok.ID)
	checkPage(t, "GET "+path+"/rotate", ts.page(pageReq{method: "GET", path: path + "/rotate", cookie: cookie}), 200,
		"Rotate this token?", "deploy", "stops working at once")
	w := ts.submit(pageReq{method: "POST", path: path + "/rotate", cookie: cookie, form: url.Values{}})
	checkPage(t, "POST "+path+"/rotate", w, 200, "Token rotated", "The old secret has stopped working")
	newSecret := secretOnPage(t, "POST "+path+"/rotate", w)
	checkDead(t, ts, "the rotated-away secret", secret)
	rotated, _, err := ts.store.TokenByHash(hashToken(newSecret))
	if err != nil || rotated.Name != "deploy" || !sameTime(rotated.ExpiresAt, tok.ExpiresAt) {
		t.Fatalf("the rotated token = %+v, %v; want deploy with the old expiry", rotated, err)
	}

	path = "/tokens/" + itoa(rotated.ID)
	checkPage(t, "GET "+path+"/revoke", ts.page(pageReq{method: "GET", path: path + "/revoke", cookie: cookie}), 200,
		"Revoke this token?", "deploy", "cannot be undone")
	w = ts.page(pageReq{method: "POST", path: path + "/revoke", cookie: cookie, form: url.Values{}})
	checkRedirect(t, "POST "+path+"/revoke", w, "/")
	if got := flashOf(t, ts, w); !strings.Contains(got, "Revoked “deploy”") {
		t.Errorf("after revoking, the notice says %q", got)
	}
	checkDead(t, ts, "the revoked token", newSecret)
	// Revoking it again finds nothing.
	checkPage(t, "POST "+path+"/revoke again", ts.page(pageReq{method: "POST", path: path + "/revoke", cookie: cookie, form: url.Values{}}), 404)
}

func itoa(id uint64) string { return strconv.FormatUint(id, 10) }

// TestCrossSitePosts checks that every form refuses a request from another
// site (403) and changes nothing, and that GET changes nothing anywhere.
func TestCrossSitePosts(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", true)
	bob := ts.addUser("bob", false)
	tok, _ := ts.addToken(alice, "ci", scopesRead, 0)
	cookie := ts.login("alice")
	other := ts.login("bob")
	otherHash, _ := parseSessionSecret(other)
	forms := map[string]url.Values{
		"/login":                              {"name": {"alice"}, "password": {"password-of-alice"}},
		"/logout":                             {},
		"/tokens":                             tokenFormValues("evil", []string{"tokens:write"}, "never", ""),
		"/tokens/1/revoke":                    {},
		"/tokens/1/rotate":                    {},
		"/account/password":                   {"current": {"password-of-alice"}, "password": {"evil-password-1"}, "confirm": {"evil-password-1"}},
		"/account/sessions/end":               {"session": {otherHash.String()}},
		"/account/sessions/end-others":        {},
		"/admin/users":                        {"name": {"mallory"}, "password": {"evil-password-1"}, "confirm": {"evil-password-1"}, "admin": {"1"}},
		"/admin/users/2/password":             {"password": {"evil-password-1"}, "confirm": {"evil-password-1"}},
		"/admin/users/2/admin":                {"admin": {"true"}},
		"/admin/users/2/remove":               {"confirm": {"bob"}},
		"/setup":                              {"code": {"x"}, "name": {"mallory"}, "password": {"evil-password-1"}, "confirm": {"evil-password-1"}},
		"/tokens/" + itoa(tok.ID) + "/revoke": {},
	}
	attacks := []map[string]string{
		{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
		{"Sec-Fetch-Site": "same-site", "Origin": "https://evil.example.com"},
		{"Sec-Fetch-Site": "", "Origin": "https://evil.example"},
	}
	for path, form := range forms {
		for _, attack := range attacks {
			before := ts.snapshot()
			w := ts.page(pageReq{method: "POST", path: path, cookie: cookie, form: form, header: attack})
			what := "cross-site POST " + path + " with " + attack["Sec-Fetch-Site"] + " " + attack["Origin"]
			checkPage(t, what, w, http.StatusForbidden, "sent from another site")
			assertUnchanged(t, what, before, ts.snapshot())
		}
	}
	// The session path of the API is guarded the same way.
	before := ts.snapshot()
	w := ts.do(request{method: "POST", path: "/api/v1/tokens", body: tokenRequest("evil", nil, nil),
		header: map[string]string{"Cookie": sessionCookieName + "=" + cookie, "Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}})
	checkProblem(t, "cross-site POST /api/v1/tokens with a session", w, http.StatusForbidden)
	assertUnchanged(t, "cross-site POST /api/v1/tokens with a session", before, ts.snapshot())
	// The same requests from tokend's own pages go through.
	if w := ts.page(pageReq{method: "POST", path: "/admin/users/" + itoa(bob.ID) + "/admin", cookie: cookie, form: url.Values{"admin": {"true"}}}); w.Code != http.StatusSeeOther {
		t.Errorf("same-origin POST /admin/users/%d/admin = %d; want 303", bob.ID, w.Code)
	}
}

// TestGetChangesNothing checks that no GET of a page writes to the
// database beyond the session's last-seen time.
func TestGetChangesNothing(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", true)
	tok, _ := ts.addToken(alice, "ci", scopesRead, 0)
	cookie := ts.login("alice")
	before := ts.snapshot()
	for _, path := range []string{"/", "/account", "/admin/users", "/admin/users/1", "/tokens/" + itoa(tok.ID) + "/revoke",
		"/tokens/" + itoa(tok.ID) + "/rotate", "/login", "/setup?code=x", "/logout", "/admin/users/1/remove"} {
		ts.page(pageReq{method: "GET", path: path, cookie: cookie})
	}
	assertUnchanged(t, "GET of every page", before, ts.snapshot())
}

// TestAPIIgnoresCookies checks that a session cookie alone authenticates
// no JSON endpoint but POST /api/v1/tokens.
func TestAPIIgnoresCookies(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	tok, _ := ts.addToken(alice, "ci", scopesReadWrite, 0)
	cookie := ts.login("alice")
	hdr := map[string]string{"Cookie": sessionCookieName + "=" + cookie}
	for _, req := range []request{
		{method: "GET", path: "/api/v1/user", header: hdr},
		{method: "GET", path: "/api/v1/token", header: hdr},
		{method: "GET", path: "/api/v1/tokens", header: hdr},
		{method: "GET", path: "/api/v1/tokens/" + itoa(tok.ID), header: hdr},
		{method: "DELETE", path: "/api/v1/tokens/" + itoa(tok.ID), header: hdr},
		{method: "POST", path: "/api/v1/tokens/" + itoa(tok.ID) + "/rotate", header: hdr},
	} {
		before := ts.snapshot()
		checkProblem(t, label(req)+" with only a session cookie", ts.do(req), http.StatusUnauthorized)
		assertUnchanged(t, label(req)+" with only a session cookie", before, ts.snapshot())
	}

	// POST /api/v1/tokens takes the session of tokend's own page.
	req := request{method: "POST", path: "/api/v1/tokens", body: tokenRequest("from the page", scopesRead, nil),
		header: map[string]string{"Cookie": sessionCookieName + "=" + cookie, "Sec-Fetch-Site": "same-origin"}}
	b := checkSecretAnswer(t, label(req)+" with a session", ts.do(req))
	if b.Name != "from the page" {
		t.Errorf("%s made %q", label(req), b.Name)
	}
	// A cookie of a signed-out session is a 401 that says so.
	ts.page(pageReq{method: "POST", path: "/logout", cookie: cookie, form: url.Values{}})
	before := ts.snapshot()
	p := checkProblem(t, label(req)+" with an ended session", ts.do(req), http.StatusUnauthorized)
	checkDetail(t, label(req)+" with an ended session", p, "sign in again")
	assertUnchanged(t, label(req)+" with an ended session", before, ts.snapshot())
}

// checkNotStored fails if any key or value of the database holds s.
func checkNotStored(t *testing.T, ts *testServer, what, s string) {
	t.Helper()
	for k, v := range ts.snapshot() {
		if strings.Contains(k, s) || strings.Contains(v, s) {
			t.Errorf("the database holds %s under %s", what, k)
		}
	}
}

// TestSignInPageBusy fills every hashing slot and the queue behind them:
// the next sign-in on the page is answered at once with 503, Retry-After
// and a page that says to try again, not with a 500, and starts no session.
func TestSignInPageBusy(t *testing.T) {
	ts := newTestServer(t)
	ts.hasher.maxWaiting = 1
	ts.addUser("alice", false)
	for range ts.cfg.HashConcurrency {
		if err := ts.hasher.acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var queued *httptest.ResponseRecorder
	wg.Go(func() {
		queued = ts.page(pageReq{method: "POST", path: "/login", form: url.Values{"name": {"alice"}, "password": {"password-of-alice"}}})
	})
	waitFor(t, func() bool { return ts.hasher.waiting.Load() == 1 })

	before := ts.snapshot()
	w := ts.page(pageReq{method: "POST", path: "/login", form: url.Values{"name": {"alice"}, "password": {"password-of-alice"}}})
	body := checkPage(t, "POST /login with a full hash queue", w, http.StatusServiceUnavailable, "busy", "try again in 1 second")
	if ra := w.Header().Get("Retry-After"); ra != "1" {
		t.Errorf("POST /login with a full hash queue: Retry-After = %q; want 1", ra)
	}
	if !strings.Contains(body, `value="alice"`) {
		t.Errorf("the busy sign-in page lost the name typed in:\n%s", body)
	}
	if c := responseCookie(w, sessionCookieName); c != nil && c.Value != "" {
		t.Errorf("the refused sign-in set a session cookie")
	}
	assertUnchanged(t, "a sign-in refused for a full queue", before, ts.snapshot())

	for range ts.cfg.HashConcurrency {
		ts.hasher.release()
	}
	wg.Wait()
	checkRedirect(t, "the queued POST /login", queued, "/")
}

// fillPageStore caps ts's database at 1 MiB, signs alice in, and fills the
// file until no write fits any more, not even a session's last-seen time.
// It returns alice's session cookie.
func fillPageStore(t *testing.T, ts *testServer) string {
	t.Helper()
	// Without fsync: the loops below commit hundreds of times, and what is
	// tested is how full the file is, not what survives a crash. The
	// mapping starts larger than the cap, so that no write ever has to
	// remap the file: a remap waits for every reader to end, and the last
	// loop holds readers open on purpose.
	st := ts.reopenStore(t, bolt.Options{Timeout: time.Second, MaxSize: 1 << 20, NoSync: true, InitialMmapSize: 2 << 20})
	ts.cfg.MaxTokensPerUser = 0
	u := ts.addUser("alice", true)
	cookie := ts.login("alice")
	_, secret := ts.addToken(u, "filler", scopesReadWrite, 0)
	bulkTokens(t, ts.store, u.ID, 700, ts.clock.Now(), func(int) *time.Time { return nil })
	if _, code, body := fillUntilFull(t, func(req request) (int, string) {
		w := ts.do(req)
		return w.Code, w.Body.String()
	}, secret); code != http.StatusInsufficientStorage {
		t.Fatalf("the creation that did not fit = %d %s; want 507", code, body)
	}
	// Creations stop short of the cap, in the space kept for deletions;
	// take that space too, so that the file stands at -max-db-size.
	for i := 0; ; i++ {
		err := st.db.Update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists([]byte("filler"))
			if err != nil {
				return err
			}
			return b.Put(binary.BigEndian.AppendUint64(nil, uint64(i)), make([]byte, 2048))
		})
		if errors.Is(err, bolterrors.ErrMaxSizeReached) {
			break
		}
		if err != nil || i == 10_000 {
			t.Fatalf("filling the space kept for deletions, write #%d = %v; want it to stop fitting", i, err)
		}
	}
	// Rewriting a record frees as many pages as it takes, so the free
	// pages left would last for ever. A reader opened after each rewrite
	// holds on to the pages that rewrite replaced, until no rewrite of
	// alice's session fits any more.
	h, _ := parseSessionSecret(cookie)
	for i := 0; ; i++ {
		err := st.TouchSession(h, ts.clock.Now().Add(time.Duration(i)*time.Second), "192.0.2.7")
		if isStorageFull(err) {
			break
		}
		if err != nil || i == 10_000 {
			t.Fatalf("TouchSession #%d on a full database = %v; want it to stop fitting", i, err)
		}
		reader, err := st.db.Begin(false)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { reader.Rollback() })
	}
	return cookie
}

// TestPagesOnFullStorage fills the database to -max-db-size: pages that
// only show things still answer 200 though the session's last-seen time
// cannot be recorded, and say so once in the log; a page that must write
// answers 507 with a readable page and writes nothing; signing out clears
// the cookie.
func TestPagesOnFullStorage(t *testing.T) {
	ts := newTestServer(t)
	cookie := fillPageStore(t, ts)
	ts.clock.Add(5 * time.Minute) // every page view now wants to record last-seen

	before := ts.snapshot()
	for _, path := range []string{"/", "/account", "/admin/users", "/login"} {
		w := ts.page(pageReq{method: "GET", path: path, cookie: cookie})
		if path == "/login" {
			checkRedirect(t, "GET /login signed in, on a full database", w, "/")
			continue
		}
		checkPage(t, "GET "+path+" on a full database", w, http.StatusOK)
	}
	if n := strings.Count(ts.logs.String(), "level=WARN msg=\"record session last seen\""); n != 1 {
		t.Errorf("the log warns %d times about last-seen times it could not record; want once:\n%s", n, ts.logs)
	}

	writes := []pageReq{
		{method: "POST", path: "/tokens", cookie: cookie, form: tokenFormValues("one more", nil, "never", "")},
		{method: "POST", path: "/admin/users", cookie: cookie, form: url.Values{"name": {"bob"}, "password": {"a long password"}, "confirm": {"a long password"}}},
		{method: "POST", path: "/login", form: url.Values{"name": {"alice"}, "password": {"password-of-alice"}}},
	}
	for _, req := range writes {
		w := ts.page(req)
		checkPage(t, req.method+" "+req.path+" on a full database", w, http.StatusInsufficientStorage, "Storage full", "nothing was changed")
	}
	assertUnchanged(t, "page writes on a full database", before, ts.snapshot())
	if strings.Contains(ts.logs.String(), "internal error") {
		t.Errorf("a full database was logged as an internal error:\n%s", ts.logs)
	}

	w := ts.page(pageReq{method: "POST", path: "/logout", cookie: cookie})
	checkRedirect(t, "POST /logout on a full database", w, "/login")
	if c := responseCookie(w, sessionCookieName); c == nil || c.MaxAge >= 0 {
		t.Errorf("POST /logout on a full database did not clear the session cookie: %v", c)
	}
	h, _ := parseSessionSecret(cookie)
	_, _, err := ts.store.SessionByHash(h)
	t.Logf("signing out at the cap deleted the session: %v", errors.Is(err, errNotFound))
	switch flash := flashOf(t, ts, w); {
	case err == nil && !strings.Contains(flash, "storage is full"):
		t.Errorf("the session stays on record, but the sign-out says %q", flash)
	case errors.Is(err, errNotFound) && flash != "You are signed out.":
		t.Errorf("the session is gone, but the sign-out says %q", flash)
	}
}

var formKeyField = regexp.MustCompile(`name="form_key" value="([A-Z2-7]+)"`)

// formKeyOn returns the form key of the page w shows.
func formKeyOn(t *testing.T, what string, w *httptest.ResponseRecorder) string {
	t.Helper()
	m := formKeyField.FindStringSubmatch(w.Body.String())
	if m == nil {
		t.Fatalf("%s has no form key; status %d; body:\n%s", what, w.Code, w.Body)
	}
	return m[1]
}

// TestTokenFormSentTwice sends one token form again and again, as a reload
// or a double click does: it makes one token, whose secret is shown once,
// and rotating twice with one form rotates once.
func TestTokenFormSentTwice(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	cookie := ts.login("alice")

	form := tokenFormValues("deploy script", []string{scopeTokensRead}, "30", "")
	form.Set("form_key", formKeyOn(t, "GET /", ts.page(pageReq{method: "GET", path: "/", cookie: cookie})))
	post := pageReq{method: "POST", path: "/tokens", cookie: cookie, form: form}
	checkRedirect(t, "POST /tokens", ts.page(post), "/secret")
	// Sent again before the secret was seen (a double click): nothing new,
	// and the browser still finds the secret.
	checkRedirect(t, "POST /tokens again", ts.page(post), "/secret")
	tokens, err := ts.store.TokensByOwner(alice.ID)
	if err != nil || len(tokens) != 1 {
		t.Fatalf("one form sent twice left %d tokens (err %v); want 1", len(tokens), err)
	}
	// A HEAD (a link checker, a prefetch) does not use up the showing.
	if w := ts.page(pageReq{method: "HEAD", path: "/secret", cookie: cookie}); w.Code != http.StatusOK {
		t.Fatalf("HEAD /secret = %d; want 200", w.Code)
	}
	w := ts.page(pageReq{method: "GET", path: "/secret", cookie: cookie})
	checkPage(t, "GET /secret after a HEAD", w, http.StatusOK, "Token created", "deploy script")
	secret := secretOnPage(t, "GET /secret", w)
	checkWorks(t, ts, "the token shown", secret, tokens[0].ID)
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("GET /secret: Cache-Control = %q; want no-store", cc)
	}

	// Shown once: a reload finds nothing, and another session never saw it.
	w = ts.page(pageReq{method: "GET", path: "/secret", cookie: cookie})
	checkPage(t, "GET /secret again", w, http.StatusGone, "shown only once", "rotate")
	if strings.Contains(w.Body.String(), secret) || pageSecret.MatchString(w.Body.String()) {
		t.Errorf("GET /secret again shows a secret")
	}
	// Sent again after the secret was seen: nothing new, and a notice.
	before := ts.snapshot()
	w = ts.page(post)
	checkRedirect(t, "POST /tokens a third time", w, "/")
	if got := flashOf(t, ts, w); !strings.Contains(got, "nothing new was made") {
		t.Errorf("POST /tokens a third time: the notice says %q", got)
	}
	assertUnchanged(t, "the form sent a third time", before, ts.snapshot())

	// Two copies sent at once make one token too.
	form.Set("form_key", newFormKey())
	form.Set("name", "sent together")
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { ts.page(pageReq{method: "POST", path: "/tokens", cookie: cookie, form: form}) })
	}
	wg.Wait()
	if tokens, err := ts.store.TokensByOwner(alice.ID); err != nil || len(tokens) != 2 {
		t.Errorf("four copies of one form sent at once left %d tokens (err %v); want 2 in all", len(tokens), err)
	}
	ts.page(pageReq{method: "GET", path: "/secret", cookie: cookie})

	// A form without its key makes nothing and asks for a reload.
	before = ts.snapshot()
	w = ts.page(pageReq{method: "POST", path: "/tokens", cookie: cookie, form: tokenFormValues("keyless", nil, "7", ""), noFormKey: true})
	checkPage(t, "POST /tokens without a form key", w, http.StatusBadRequest, "out of date", "reload")
	assertUnchanged(t, "POST /tokens without a form key", before, ts.snapshot())

	// Rotation: one form, sent twice, rotates once; the new token keeps
	// the secret shown.
	path := "/tokens/" + itoa(tokens[0].ID) + "/rotate"
	rotate := pageReq{method: "POST", path: path, cookie: cookie,
		form: url.Values{"form_key": {formKeyOn(t, "GET "+path, ts.page(pageReq{method: "GET", path: path, cookie: cookie}))}}}
	checkRedirect(t, "POST "+path, ts.page(rotate), "/secret")
	w = ts.page(pageReq{method: "GET", path: "/secret", cookie: cookie})
	checkPage(t, "GET /secret after rotating", w, http.StatusOK, "Token rotated")
	rotated := secretOnPage(t, "GET /secret after rotating", w)
	after, _, err := ts.store.TokenByHash(hashToken(rotated))
	if err != nil {
		t.Fatalf("the rotated secret is not in the store: %v", err)
	}
	before = ts.snapshot()
	w = ts.page(rotate)
	checkRedirect(t, "POST "+path+" again", w, "/")
	assertUnchanged(t, "the rotation sent again", before, ts.snapshot())
	checkDead(t, ts, "the secret rotated away", secret)
	checkWorks(t, ts, "the rotated token after the form was sent again", rotated, after.ID)
	checkSecretKept(t, ts, rotated)
	if strings.Contains(ts.logs.String(), rotated) || strings.Contains(ts.logs.String(), secret) {
		t.Errorf("the log holds a secret")
	}
}

// browserAccept is the Accept header of a browser loading a page.
const browserAccept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

// TestUnknownPage checks that a browser asking for a page that does not
// exist gets the layout's 404 page, signed in or not, and that API
// clients, and anything under /api/, keep problem+json.
func TestUnknownPage(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", false)
	cookie := ts.login("alice")

	w := ts.page(pageReq{method: "GET", path: "/no/such/page", header: map[string]string{"Accept": browserAccept}})
	body := checkPage(t, "GET /no/such/page from a browser", w, http.StatusNotFound, "Page not found", "Sign in")
	if !strings.Contains(body, `href="/login"`) || !strings.Contains(body, `<link rel="stylesheet" href="/static/style.css?v=`) {
		t.Errorf("the 404 page signed out is not in the layout with a way to sign in:\n%s", body)
	}
	w = ts.page(pageReq{method: "GET", path: "/tokns", cookie: cookie, header: map[string]string{"Accept": browserAccept}})
	body = checkPage(t, "GET /tokns from a signed-in browser", w, http.StatusNotFound, "Page not found", "Go to your tokens")
	if !strings.Contains(body, `title="Signed in as alice"`) {
		t.Errorf("the 404 page signed in does not show who is signed in:\n%s", body)
	}
	if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("the 404 page has CSP %q; want the pages' policy", csp)
	}

	for _, tt := range []struct{ path, accept string }{
		{"/no/such/page", ""},
		{"/no/such/page", "*/*"},
		{"/no/such/page", "application/json"},
		{"/no/such/page", "application/problem+json, text/html;q=0"},
		{"/api/v1/nope", browserAccept},
		{"/api/v2/tokens", "text/html"},
	} {
		what := "GET " + tt.path + " with Accept " + cmp.Or(tt.accept, "(none)")
		w := ts.page(pageReq{method: "GET", path: tt.path, cookie: cookie, header: map[string]string{"Accept": tt.accept}})
		if w.Code != http.StatusNotFound || w.Header().Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s = %d %s; want 404 application/problem+json", what, w.Code, w.Header().Get("Content-Type"))
		}
	}
}

// TestPageWording pins small things the pages say.
func TestPageWording(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", true)
	ts.addUser("bob", false)
	cookie := ts.login("alice")
	soonBadge := `<span class="badge warn">expires soon</span>`

	t.Run("a new token does not expire soon", func(t *testing.T) {
		week, _ := ts.addToken(alice, "week", nil, 7*24*time.Hour)
		hour, _ := ts.addToken(alice, "hour", nil, time.Hour)
		year, _ := ts.addToken(alice, "year", nil, 365*24*time.Hour)
		soon := func(what string, tok tokenRecord, want bool) {
			t.Helper()
			cookie = ts.login("alice") // the clock runs past sessions' lifetimes
			w := ts.page(pageReq{method: "GET", path: "/", cookie: cookie})
			body := w.Body.String()
			i := strings.Index(body, `id="token-`+itoa(tok.ID)+`"`)
			if i < 0 {
				t.Fatalf("%s: GET / = %d does not list the token:\n%s", what, w.Code, body)
			}
			j := strings.Index(body[i:], "</li>")
			if got := strings.Contains(body[i:i+j], soonBadge); got != want {
				t.Errorf("%s: flagged expires soon = %v; want %v", what, got, want)
			}
		}
		soon("a 7-day token just made", week, false)
		soon("a 1-hour token just made", hour, false)
		soon("a year's token just made", year, false)
		ts.clock.Add(50 * time.Minute)
		soon("a 1-hour token 10 minutes before it expires", hour, true)
		ts.clock.Add(5*24*time.Hour + 12*time.Hour)
		soon("a 7-day token a day before it expires", week, true)
		soon("a year's token with 359 days left", year, false)
		ts.clock.Add(358 * 24 * time.Hour)
		soon("a year's token with 6 days left", year, true)
		for _, tok := range []tokenRecord{week, hour, year} {
			ts.store.DeleteToken(testActor, tok.ID, alice.ID)
		}
		cookie = ts.login("alice")
	})

	t.Run("the empty token list points at nothing above", func(t *testing.T) {
		w := ts.page(pageReq{method: "GET", path: "/", cookie: cookie})
		text := pageText(w.Body.String())
		if !strings.Contains(text, "You have no tokens yet") || strings.Contains(text, "above") {
			t.Errorf("the empty token page says:\n%s", text)
		}
		ts.addToken(alice, "one", nil, 0)
		checkPage(t, "GET / with a token", ts.page(pageReq{method: "GET", path: "/", cookie: cookie}), 200, "Revoke it above")
	})

	t.Run("a used setup link leads to the sign-in it asks for", func(t *testing.T) {
		// A link issued while the database had no users, opened once an
		// admin exists (here, made by the command line meanwhile).
		link, err := ts.setupLink("http://127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		w := ts.page(pageReq{method: "GET", path: strings.TrimPrefix(link, "http://127.0.0.1")})
		body := checkPage(t, "GET /setup with an admin", w, http.StatusNotFound, "Sign in instead")
		if !strings.Contains(body, `<a class="button" href="/login">Sign in</a>`) || strings.Contains(body, "Go to your tokens") {
			t.Errorf("the used setup link's page offers another way on:\n%s", body)
		}
	})

	t.Run("sessions show the browser", func(t *testing.T) {
		w := ts.page(pageReq{method: "POST", path: "/login", form: url.Values{"name": {"alice"}, "password": {"password-of-alice"}},
			header: map[string]string{"User-Agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"}})
		phone := responseCookie(w, sessionCookieName)
		if phone == nil {
			t.Fatalf("POST /login from a phone = %d; no cookie", w.Code)
		}
		w = ts.page(pageReq{method: "GET", path: "/account", cookie: phone.Value,
			header: map[string]string{"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"}})
		checkPage(t, "GET /account", w, 200, "Safari on iOS this browser", "from 192.0.2.7")
		h, _ := parseSessionSecret(phone.Value)
		if rec, _, err := ts.store.SessionByHash(h); err != nil || rec.Agent != "Safari on iOS" {
			t.Errorf("the session record holds agent %q (err %v); want Safari on iOS", rec.Agent, err)
		}
	})

	t.Run("a taken name is named as stored", func(t *testing.T) {
		before := ts.snapshot()
		w := ts.page(pageReq{method: "POST", path: "/admin/users", cookie: cookie,
			form: url.Values{"name": {"Bob"}, "password": {"a long password"}, "confirm": {"a long password"}}})
		checkPage(t, "POST /admin/users Bob", w, http.StatusConflict, "A user called bob already exists")
		assertUnchanged(t, "adding Bob beside bob", before, ts.snapshot())
	})

	t.Run("an error shows beside its form", func(t *testing.T) {
		bob, err := ts.store.UserByName("bob")
		if err != nil {
			t.Fatal(err)
		}
		base := "/admin/users/" + itoa(bob.ID)
		for _, tt := range []struct {
			form, head, msg string
			values          url.Values
		}{
			{"password", "Reset password", "The two new passwords differ", url.Values{"password": {"a long password"}, "confirm": {"another password"}}},
			{"remove", "Remove user", "Type the user's name", url.Values{"confirm": {"bobby"}}},
		} {
			w := ts.page(pageReq{method: "POST", path: base + "/" + tt.form, cookie: cookie, form: tt.values})
			body := checkPage(t, "POST "+base+"/"+tt.form, w, http.StatusBadRequest, tt.msg)
			section := body[strings.Index(body, "<h2"):]
			section = section[strings.Index(section, tt.head):]
			section = section[:strings.Index(section, "</section>")]
			if !strings.Contains(section, tt.msg) || strings.Count(body, `id="form-error"`) != 1 {
				t.Errorf("POST %s/%s: the error %q is not in the %q form's card, once:\n%s", base, tt.form, tt.msg, tt.head, body)
			}
		}
		w := ts.page(pageReq{method: "POST", path: "/admin/users", cookie: cookie, form: url.Values{"name": {"carol"}, "password": {"short"}, "confirm": {"short"}}})
		body := checkPage(t, "POST /admin/users with a short password", w, http.StatusBadRequest)
		if i, j := strings.Index(body, `id="form-error"`), strings.Index(body, "Add a user"); i < j {
			t.Errorf("the add-user error comes before the add-user form:\n%s", body)
		}
	})
}
