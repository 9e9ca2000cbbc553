package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// actionFixture is a server with an admin, root, and a user, alice, who
// holds two sessions and two tokens that were verified (so that the auth
// cache holds them) before the action.
type actionFixture struct {
	ts            *testServer
	root, alice   userRecord
	rootCookie    string
	rootToken     string // holds admin
	aliceCookie   string // the first of alice's sessions
	aliceToken    string // holds tokens:write and admin (admin counts only while alice is one)
	aliceSecrets  []string
	aliceSessions int
}

const newPassword = "a brand new passphrase"

func newActionFixture(t *testing.T, aliceAdmin bool) *actionFixture {
	t.Helper()
	ts := newTestServer(t)
	f := &actionFixture{ts: ts, root: ts.addUser("root", true), alice: ts.addUser("alice", aliceAdmin)}
	f.rootCookie = ts.login("root")
	_, f.rootToken = ts.addToken(f.root, "admin", []string{scopeAdmin}, 0)
	f.aliceCookie = ts.login("alice")
	ts.login("alice")
	f.aliceSessions = 2
	_, f.aliceToken = ts.addToken(f.alice, "main", []string{scopeTokensWrite, scopeAdmin}, 0)
	_, other := ts.addToken(f.alice, "other", scopesRead, 0)
	f.aliceSecrets = []string{f.aliceToken, other}
	for _, s := range f.aliceSecrets {
		if _, err := ts.verifyToken(s); err != nil {
			t.Fatalf("alice's token before the action: %v", err)
		}
	}
	return f
}

// cli runs a command line on the fixture's database file with the server's
// store closed, then reopens the store under the server.
func (f *actionFixture) cli(t *testing.T, stdin string, args ...string) {
	t.Helper()
	if err := f.ts.store.Close(); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := runCLI(t, stdin, append(args, "-db", f.ts.dbPath)...)
	if err != nil {
		t.Fatalf("tokend %s = %v; stdout %q stderr %q", strings.Join(args, " "), err, out, errOut)
	}
	st, err := openStore(f.ts.dbPath, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	f.ts.server.store, f.ts.store = st, st
}

func (f *actionFixture) pagePost(t *testing.T, cookie, path string, form url.Values) {
	t.Helper()
	w := f.ts.page(pageReq{method: "POST", path: path, cookie: cookie, form: form})
	if w.Code != http.StatusSeeOther {
		t.Fatalf("POST %s = %d; want 303; body:\n%s", path, w.Code, pageText(w.Body.String()))
	}
}

func (f *actionFixture) api(t *testing.T, method, path, token, body string, want int) {
	t.Helper()
	w := f.ts.do(request{method: method, path: path, token: token, body: body})
	if w.Code != want {
		t.Fatalf("%s %s = %d %s; want %d", method, path, w.Code, w.Body, want)
	}
}

// outcome is what the database holds after an action, whatever carried it.
type outcome struct {
	userGone     bool
	sessions     int  // sessions of alice left, the acting one included
	tokens       int  // tokens of alice left (and still verifying)
	password     bool // alice's password is newPassword
	admin        bool // alice is an admin
	adminByToken bool // alice's token still carries the admin scope
}

func (f *actionFixture) check(t *testing.T, via string, want outcome) {
	t.Helper()
	st := f.ts.store
	u, err := st.UserByID(f.alice.ID)
	if gone := err != nil; gone != want.userGone {
		t.Fatalf("%s: alice gone = %v (%v); want %v", via, gone, err, want.userGone)
	}
	if sessions, _ := st.SessionsOf(f.alice.ID); len(sessions) != want.sessions {
		t.Errorf("%s: alice has %d sessions; want %d", via, len(sessions), want.sessions)
	}
	if tokens, _ := st.TokensByOwner(f.alice.ID); len(tokens) != want.tokens {
		t.Errorf("%s: alice has %d tokens; want %d", via, len(tokens), want.tokens)
	}
	working := 0
	for _, s := range f.aliceSecrets {
		c, err := f.ts.verifyToken(s)
		if err == nil {
			working++
			if s == f.aliceToken && hasScope(c.scopes, scopeAdmin) != want.adminByToken {
				t.Errorf("%s: alice's token carries admin = %v; want %v", via, !want.adminByToken, want.adminByToken)
			}
		}
	}
	if working != want.tokens {
		t.Errorf("%s: %d of alice's old tokens still verify; want %d", via, working, want.tokens)
	}
	if want.userGone {
		return
	}
	if ok, _, _ := f.ts.hasher.Verify(context.Background(), newPassword, u.PasswordHash); ok != want.password {
		t.Errorf("%s: alice's password is the new one = %v; want %v", via, ok, want.password)
	}
	if u.Admin != want.admin {
		t.Errorf("%s: alice admin = %v; want %v", via, u.Admin, want.admin)
	}
	if err := st.Check(); err != nil {
		t.Errorf("%s: the database is inconsistent: %v", via, err)
	}
}

// TestAccountActionsAgree runs every account action through each transport
// that offers it (page, API, command line) and checks that the database
// holds the same afterwards: sessions ended, tokens revoked when asked, and
// revoked tokens refused at once although the auth cache held them.
func TestAccountActionsAgree(t *testing.T) {
	type via func(t *testing.T, f *actionFixture)
	tests := []struct {
		action     string
		aliceAdmin bool
		transports map[string]via
		want       outcome
	}{
		{
			action: "reset password, revoking tokens",
			transports: map[string]via{
				"page": func(t *testing.T, f *actionFixture) {
					f.pagePost(t, f.rootCookie, fmt.Sprintf("/admin/users/%d/password", f.alice.ID),
						url.Values{"password": {newPassword}, "confirm": {newPassword}, "revoke_tokens": {"on"}})
				},
				"api": func(t *testing.T, f *actionFixture) {
					f.api(t, "POST", fmt.Sprintf("/api/v1/users/%d/password", f.alice.ID), f.rootToken,
						`{"password":"`+newPassword+`","revoke_tokens":true}`, 200)
				},
				"cli": func(t *testing.T, f *actionFixture) {
					f.cli(t, newPassword+"\n", "user", "passwd", "-password-stdin", "-revoke-tokens", "alice")
				},
			},
			want: outcome{sessions: 0, tokens: 0, password: true},
		},
		{
			action: "reset password, keeping tokens",
			transports: map[string]via{
				"page": func(t *testing.T, f *actionFixture) {
					f.pagePost(t, f.rootCookie, fmt.Sprintf("/admin/users/%d/password", f.alice.ID),
						url.Values{"password": {newPassword}, "confirm": {newPassword}})
				},
				"api": func(t *testing.T, f *actionFixture) {
					f.api(t, "POST", fmt.Sprintf("/api/v1/users/%d/password", f.alice.ID), f.rootToken,
						`{"password":"`+newPassword+`"}`, 200)
				},
				"cli": func(t *testing.T, f *actionFixture) {
					f.cli(t, newPassword+"\n", "user", "passwd", "-password-stdin", "alice")
				},
			},
			want: outcome{sessions: 0, tokens: 2, password: true},
		},
		{
			// The page keeps the session that makes the change; a token
			// has none to keep.
			action: "change own password, revoking tokens and ending other sessions",
			transports: map[string]via{
				"page": func(t *testing.T, f *actionFixture) {
					f.pagePost(t, f.aliceCookie, "/account/password", url.Values{"current": {"password-of-alice"},
						"password": {newPassword}, "confirm": {newPassword}, "revoke_tokens": {"on"}, "end_sessions": {"on"}})
					f.aliceSessions = 1
				},
				"api": func(t *testing.T, f *actionFixture) {
					f.api(t, "POST", "/api/v1/user/password", f.aliceToken,
						`{"current_password":"password-of-alice","password":"`+newPassword+`","revoke_tokens":true,"end_sessions":true}`, 200)
					f.aliceSessions = 0
				},
			},
			want: outcome{sessions: -1, tokens: 0, password: true},
		},
		{
			action: "remove user",
			transports: map[string]via{
				"page": func(t *testing.T, f *actionFixture) {
					f.pagePost(t, f.rootCookie, fmt.Sprintf("/admin/users/%d/remove", f.alice.ID), url.Values{"confirm": {"alice"}})
				},
				"api": func(t *testing.T, f *actionFixture) {
					f.api(t, "DELETE", fmt.Sprintf("/api/v1/users/%d", f.alice.ID), f.rootToken, "", 204)
				},
				"cli": func(t *testing.T, f *actionFixture) {
					f.cli(t, "", "user", "remove", "alice")
				},
			},
			want: outcome{userGone: true},
		},
		{
			action:     "demote an admin",
			aliceAdmin: true,
			transports: map[string]via{
				"page": func(t *testing.T, f *actionFixture) {
					f.pagePost(t, f.rootCookie, fmt.Sprintf("/admin/users/%d/admin", f.alice.ID), url.Values{"admin": {"false"}})
				},
				"api": func(t *testing.T, f *actionFixture) {
					f.api(t, "PUT", fmt.Sprintf("/api/v1/users/%d/admin", f.alice.ID), f.rootToken, `{"admin":false}`, 200)
				},
				"cli": func(t *testing.T, f *actionFixture) {
					f.cli(t, "", "user", "demote", "alice")
				},
			},
			want: outcome{sessions: 2, tokens: 2, admin: false, adminByToken: false},
		},
		{
			action: "revoke all tokens",
			transports: map[string]via{
				"page": func(t *testing.T, f *actionFixture) {
					f.pagePost(t, f.rootCookie, fmt.Sprintf("/admin/users/%d/revoke-tokens", f.alice.ID), url.Values{"confirm": {"1"}})
				},
				"api": func(t *testing.T, f *actionFixture) {
					f.api(t, "DELETE", fmt.Sprintf("/api/v1/users/%d/tokens", f.alice.ID), f.rootToken, "", 200)
				},
				"cli": func(t *testing.T, f *actionFixture) {
					f.cli(t, "", "user", "revoke-tokens", "alice")
				},
			},
			want: outcome{sessions: 2, tokens: 0},
		},
	}
	for _, tt := range tests {
		for name, do := range tt.transports {
			t.Run(tt.action+"/"+name, func(t *testing.T) {
				f := newActionFixture(t, tt.aliceAdmin)
				do(t, f)
				want := tt.want
				if want.sessions < 0 {
					want.sessions = f.aliceSessions
				}
				f.check(t, name, want)
			})
		}
	}
}

// TestAccountActionsRefuseBadInput checks that the API's account actions
// answer a clear problem for a client's mistake and change nothing.
func TestAccountActionsRefuseBadInput(t *testing.T) {
	f := newActionFixture(t, false)
	aliceID := itoa(f.alice.ID)
	for _, tt := range []struct {
		method, path, token, body string
		want                      int
		says                      string
	}{
		{"POST", "/api/v1/users/" + aliceID + "/password", f.rootToken, `{"password":"short"}`, 400, "at least"},
		{"POST", "/api/v1/users/99/password", f.rootToken, `{"password":"` + newPassword + `"}`, 404, "no user"},
		{"POST", "/api/v1/users/x/password", f.rootToken, `{"password":"` + newPassword + `"}`, 404, "no user"},
		{"POST", "/api/v1/users/" + aliceID + "/password", f.aliceToken, `{"password":"` + newPassword + `"}`, 403, ""},
		{"DELETE", "/api/v1/users/" + itoa(f.root.ID), f.rootToken, "", 409, "your own account"},
		{"PUT", "/api/v1/users/" + itoa(f.root.ID) + "/admin", f.rootToken, `{"admin":false}`, 409, "last admin"},
		{"PUT", "/api/v1/users/" + aliceID + "/admin", f.rootToken, `{}`, 400, "admin"},
		{"POST", "/api/v1/user/password", f.aliceToken, `{"current_password":"wrong password","password":"` + newPassword + `"}`, 403, "not your password"},
		{"POST", "/api/v1/user/password", f.aliceToken, `{"current_password":"password-of-alice","password":"password-of-alice"}`, 400, "current one"},
		{"POST", "/api/v1/user/password", f.aliceToken, `{"current_password":"","password":"` + newPassword + `"}`, 400, "current password"},
	} {
		before := f.ts.snapshot()
		w := f.ts.do(request{method: tt.method, path: tt.path, token: tt.token, body: tt.body})
		if w.Code != tt.want || !strings.Contains(w.Body.String(), tt.says) {
			t.Errorf("%s %s %s = %d %s; want %d saying %q", tt.method, tt.path, tt.body, w.Code, w.Body, tt.want, tt.says)
		}
		assertUnchanged(t, tt.method+" "+tt.path, before, f.ts.snapshot())
	}
}

// TestRevokeAllTokensPage checks the user page's "revoke all tokens" form:
// it asks for a ticked box, shows its error beside itself, changes nothing
// without the box, and with it revokes every token of the user at once
// while their sessions stay.
func TestRevokeAllTokensPage(t *testing.T) {
	f := newActionFixture(t, false)
	userPath := fmt.Sprintf("/admin/users/%d", f.alice.ID)
	checkPage(t, "GET "+userPath, f.ts.page(pageReq{method: "GET", path: userPath, cookie: f.rootCookie}), 200,
		"Revoke all tokens", "Yes, revoke 2 tokens")

	before := f.ts.snapshot()
	w := f.ts.page(pageReq{method: "POST", path: userPath + "/revoke-tokens", cookie: f.rootCookie})
	text := pageText(checkPage(t, "POST revoke-tokens without the box", w, http.StatusBadRequest, "Tick the box"))
	// The error sits in the revoke card, after its heading and before the
	// next card's.
	card := text[strings.Index(text, "Revoke all tokens"):]
	if i := strings.Index(card, "Tick the box"); i < 0 || i > strings.Index(card, "Remove user") {
		t.Errorf("the error of the revoke form is not beside it:\n%s", text)
	}
	assertUnchanged(t, "POST revoke-tokens without the box", before, f.ts.snapshot())
	for _, s := range f.aliceSecrets {
		checkWorks(t, f.ts, "alice's token after an unconfirmed revoke", s, mustTokenID(t, f.ts, s))
	}

	w = f.ts.page(pageReq{method: "POST", path: userPath + "/revoke-tokens", cookie: f.rootCookie, form: url.Values{"confirm": {"1"}}})
	checkRedirect(t, "POST revoke-tokens", w, userPath)
	if got, want := flashOf(t, f.ts, w), "Revoked 2 tokens of alice."; got != want {
		t.Errorf("POST revoke-tokens says %q; want %q", got, want)
	}
	for _, s := range f.aliceSecrets {
		checkDead(t, f.ts, "alice's token after revoke-tokens", s)
	}
	f.check(t, "page", outcome{sessions: 2, tokens: 0})
	page := checkPage(t, "GET "+userPath+" without tokens", f.ts.page(pageReq{method: "GET", path: userPath, cookie: f.rootCookie}), 200, "0 tokens")
	if strings.Contains(page, "/revoke-tokens") {
		t.Errorf("the user page offers to revoke the tokens of a user who holds none")
	}

	// A user who is not an admin cannot post it.
	_, bobToken := f.ts.addToken(f.ts.addUser("bob", false), "b", scopesRead, 0)
	bob, _ := f.ts.store.UserByName("bob")
	before = f.ts.snapshot()
	w = f.ts.page(pageReq{method: "POST", path: fmt.Sprintf("/admin/users/%d/revoke-tokens", bob.ID), cookie: f.aliceCookie, form: url.Values{"confirm": {"1"}}})
	checkPage(t, "POST revoke-tokens by a user who is not an admin", w, http.StatusForbidden, "Admins only")
	assertUnchanged(t, "POST revoke-tokens by a user who is not an admin", before, f.ts.snapshot())
	checkWorks(t, f.ts, "bob's token after a refused revoke", bobToken, mustTokenID(t, f.ts, bobToken))
}

// TestCLIAdminAndRevokeTokens checks user promote, demote and
// revoke-tokens: what they print, what they refuse (the last admin, an
// unknown user) without changing anything, and what the database holds.
func TestCLIAdminAndRevokeTokens(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokend.db")
	mustRun := func(stdin string, args ...string) string {
		t.Helper()
		out, errOut, err := runCLI(t, stdin, append(args, "-db", db)...)
		if err != nil {
			t.Fatalf("tokend %s = %v; stderr %q", strings.Join(args, " "), err, errOut)
		}
		return out
	}
	dump := func() map[string]string {
		t.Helper()
		st, err := openStore(db, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		return dumpStore(t, st)
	}
	user := func(name string) (userRecord, int) {
		t.Helper()
		st, err := openStore(db, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		u, err := st.UserByName(name)
		if err != nil {
			t.Fatal(err)
		}
		tokens, err := st.TokensByOwner(u.ID)
		if err != nil {
			t.Fatal(err)
		}
		return u, len(tokens)
	}
	mustRun("root password here\n", "user", "add", "-admin", "-password-stdin", "root")
	mustRun("alice password here\n", "user", "add", "-password-stdin", "alice")
	mustRun("", "token", "create", "-user", "alice", "-name", "one")

	for _, tt := range []struct {
		args []string
		says string
	}{
		{[]string{"user", "demote", "root"}, `"root" is the last admin; make another user an admin first`},
		{[]string{"user", "demote", "nobody"}, `no user called "nobody"`},
		{[]string{"user", "promote", "nobody"}, `no user called "nobody"`},
		{[]string{"user", "revoke-tokens", "nobody"}, `no user called "nobody"`},
		{[]string{"user", "revoke-tokens"}, "want 1 argument"},
		{[]string{"user", "demote", "root", "alice"}, "want 1 argument"},
	} {
		before := dump()
		_, _, err := runCLI(t, "", append(tt.args, "-db", db)...)
		if err == nil || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("tokend %s = %v; want an error saying %s", strings.Join(tt.args, " "), err, tt.says)
		}
		assertUnchanged(t, "tokend "+strings.Join(tt.args, " "), before, dump())
	}

	if out := mustRun("", "user", "promote", "alice"); out != "\"alice\" is now an admin\n" {
		t.Errorf("user promote alice printed %q", out)
	}
	if u, _ := user("alice"); !u.Admin {
		t.Errorf("alice is not an admin after user promote")
	}
	// With a second admin, root may be demoted; alice is then the last.
	if out := mustRun("", "user", "demote", "root"); !strings.Contains(out, `"root" is no longer an admin`) {
		t.Errorf("user demote root printed %q", out)
	}
	if u, _ := user("root"); u.Admin {
		t.Errorf("root is still an admin after user demote")
	}
	if out := mustRun("", "user", "demote", "root"); out != "\"root\" is not an admin; nothing changed\n" {
		t.Errorf("user demote root twice printed %q", out)
	}
	before := dump()
	if _, _, err := runCLI(t, "", "user", "demote", "-db", db, "alice"); err == nil || !strings.Contains(err.Error(), "last admin") {
		t.Errorf("user demote of the new last admin = %v; want refused", err)
	}
	assertUnchanged(t, "user demote of the new last admin", before, dump())

	if out := mustRun("", "user", "revoke-tokens", "alice"); out != "revoked 1 token of \"alice\"\n" {
		t.Errorf("user revoke-tokens alice printed %q; want 1 token", out)
	}
	if _, n := user("alice"); n != 0 {
		t.Errorf("alice holds %d tokens after user revoke-tokens", n)
	}
	if out := mustRun("", "user", "revoke-tokens", "alice"); out != "revoked 0 tokens of \"alice\"\n" {
		t.Errorf("user revoke-tokens alice twice printed %q", out)
	}
}

// TestRevokeOwnTokensPage checks the account page's "revoke all my
// tokens" form: without the ticked box it changes nothing and says so
// beside the form; with it every token of the person is refused at once
// (although the auth cache held them), their sessions stay, and nobody
// else's tokens are touched.
func TestRevokeOwnTokensPage(t *testing.T) {
	f := newActionFixture(t, false)
	checkPage(t, "GET /account", f.ts.page(pageReq{method: "GET", path: "/account", cookie: f.aliceCookie}), 200,
		"Revoke all my tokens", "Revokes your 2 tokens", "Yes, revoke 2 tokens")

	before := f.ts.snapshot()
	w := f.ts.page(pageReq{method: "POST", path: "/account/revoke-tokens", cookie: f.aliceCookie})
	text := pageText(checkPage(t, "POST /account/revoke-tokens without the box", w, http.StatusBadRequest, "Tick the box"))
	card := text[strings.Index(text, "Revoke all my tokens"):]
	if i := strings.Index(card, "Tick the box"); i < 0 || i > strings.Index(card, "Sessions") {
		t.Errorf("the error of the revoke form is not beside it:\n%s", text)
	}
	if strings.Count(text, "Tick the box") != 1 {
		t.Errorf("the error shows more than once:\n%s", text)
	}
	assertUnchanged(t, "POST /account/revoke-tokens without the box", before, f.ts.snapshot())

	w = f.ts.page(pageReq{method: "POST", path: "/account/revoke-tokens", cookie: f.aliceCookie, form: url.Values{"confirm": {"1"}}})
	checkRedirect(t, "POST /account/revoke-tokens", w, "/account")
	if got := flashOf(t, f.ts, w); !strings.HasPrefix(got, "Revoked 2 tokens.") {
		t.Errorf("POST /account/revoke-tokens says %q; want Revoked 2 tokens.", got)
	}
	for _, s := range f.aliceSecrets {
		checkDead(t, f.ts, "alice's token after revoking all of hers", s)
	}
	f.check(t, "account page", outcome{sessions: 2, tokens: 0})
	checkWorks(t, f.ts, "root's token after alice revoked hers", f.rootToken, mustTokenID(t, f.ts, f.rootToken))
	page := checkPage(t, "GET /account without tokens", f.ts.page(pageReq{method: "GET", path: "/account", cookie: f.aliceCookie}), 200)
	if strings.Contains(page, "/account/revoke-tokens") {
		t.Errorf("the account page offers to revoke the tokens of someone who holds none")
	}
}
