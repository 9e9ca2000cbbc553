package main

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// TestUsersPageAdminsOnly checks that a user who is not an admin gets 403
// on every admin page and form, changing nothing.
func TestUsersPageAdminsOnly(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("root", true)
	ts.addUser("bob", false)
	cookie := ts.login("bob")
	page := checkPage(t, "GET / as bob", ts.page(pageReq{method: "GET", path: "/", cookie: cookie}), 200)
	if strings.Contains(page, `href="/admin/users"`) {
		t.Errorf("bob's menu links to the users page")
	}
	for _, path := range []string{"/admin/users", "/admin/users/1", "/admin/users/2"} {
		checkPage(t, "GET "+path+" as bob", ts.page(pageReq{method: "GET", path: path, cookie: cookie}), http.StatusForbidden, "Only admins")
	}
	for _, tt := range []struct {
		path string
		form url.Values
	}{
		{"/admin/users", url.Values{"name": {"carol"}, "password": {"carol password"}, "confirm": {"carol password"}, "admin": {"1"}}},
		{"/admin/users/2/admin", url.Values{"admin": {"true"}}},
		{"/admin/users/1/admin", url.Values{"admin": {"false"}}},
		{"/admin/users/1/password", url.Values{"password": {"bobs password"}, "confirm": {"bobs password"}}},
		{"/admin/users/1/remove", url.Values{"confirm": {"root"}}},
	} {
		before := ts.snapshot()
		checkPage(t, "POST "+tt.path+" as bob", ts.page(pageReq{method: "POST", path: tt.path, cookie: cookie, form: tt.form}), http.StatusForbidden, "Only admins")
		assertUnchanged(t, "POST "+tt.path+" as bob", before, ts.snapshot())
	}
}

// TestUsersPage walks an admin through the users page: list, add, reset,
// make and unmake admin, remove.
func TestUsersPage(t *testing.T) {
	ts := newTestServer(t)
	root := ts.addUser("root", true)
	bob := ts.addUser("bob", false)
	ts.addToken(bob, "one", scopesRead, 0)
	_, bobSecret := ts.addToken(bob, "two", scopesRead, 0)
	cookie := ts.login("root")
	bobCookie := ts.login("bob")

	checkPage(t, "GET /admin/users", ts.page(pageReq{method: "GET", path: "/admin/users", cookie: cookie}), 200,
		"root (you) admin 0", "bob user 2", "Add a user")
	checkPage(t, "GET /admin/users/2", ts.page(pageReq{method: "GET", path: "/admin/users/" + itoa(bob.ID), cookie: cookie}), 200,
		"bob", "2 tokens", "1 session", "Reset password", "Make bob an admin", "Remove bob")
	checkPage(t, "GET /admin/users/99", ts.page(pageReq{method: "GET", path: "/admin/users/99", cookie: cookie}), http.StatusNotFound)

	// Add a user; bad input changes nothing.
	add := func(name, pw, confirm string) url.Values {
		return url.Values{"name": {name}, "password": {pw}, "confirm": {confirm}}
	}
	for _, tt := range []struct {
		what   string
		form   url.Values
		status int
		says   string
	}{
		{"a bad name", add("carol smith", "carol password", "carol password"), 400, "User name"},
		{"a taken name", add("BOB", "carol password", "carol password"), 409, "already exists"},
		{"a short password", add("carol", "short", "short"), 400, "at least 8"},
		{"passwords that differ", add("carol", "carol password", "carol passw0rd"), 400, "differ"},
	} {
		before := ts.snapshot()
		w := ts.page(pageReq{method: "POST", path: "/admin/users", cookie: cookie, form: tt.form})
		page := checkPage(t, "POST /admin/users with "+tt.what, w, tt.status, tt.says)
		if !strings.Contains(page, `value="`+tt.form.Get("name")+`"`) {
			t.Errorf("POST /admin/users with %s lost the name typed", tt.what)
		}
		assertUnchanged(t, "POST /admin/users with "+tt.what, before, ts.snapshot())
	}
	w := ts.page(pageReq{method: "POST", path: "/admin/users", cookie: cookie, form: url.Values{"name": {"carol"}, "password": {"carol password"}, "confirm": {"carol password"}, "admin": {"1"}}})
	checkRedirect(t, "POST /admin/users", w, "/admin/users")
	carol, err := ts.store.UserByName("carol")
	if err != nil || !carol.Admin {
		t.Fatalf("after adding carol as admin: %+v, %v", carol, err)
	}
	checkRedirect(t, "carol signs in", ts.loginAttempt("carol", "carol password", ""), "/")
	checkNotStored(t, ts, "carol's password", "carol password")

	// Reset bob's password: his sessions end; with the box, his tokens go.
	w = ts.page(pageReq{method: "POST", path: "/admin/users/" + itoa(bob.ID) + "/password", cookie: cookie,
		form: url.Values{"password": {"bob new password"}, "confirm": {"bob new password"}}})
	checkRedirect(t, "POST /admin/users/2/password", w, "/admin/users/"+itoa(bob.ID))
	checkRedirect(t, "bob's session after the reset", ts.page(pageReq{method: "GET", path: "/", cookie: bobCookie}), "/login")
	checkWorks(t, ts, "bob's token after a reset without the box", bobSecret, mustTokenID(t, ts, bobSecret))
	checkRedirect(t, "bob signs in with the new password", ts.loginAttempt("bob", "bob new password", ""), "/")
	w = ts.page(pageReq{method: "POST", path: "/admin/users/" + itoa(bob.ID) + "/password", cookie: cookie,
		form: url.Values{"password": {"bob third password"}, "confirm": {"bob third password"}, "revoke_tokens": {"1"}}})
	checkRedirect(t, "POST /admin/users/2/password with revoke", w, "/admin/users/")
	checkDead(t, ts, "bob's token after a reset with revoke", bobSecret)
	checkPage(t, "root's own session after resetting bob", ts.page(pageReq{method: "GET", path: "/admin/users", cookie: cookie}), 200)

	// Make and unmake admin.
	w = ts.page(pageReq{method: "POST", path: "/admin/users/" + itoa(bob.ID) + "/admin", cookie: cookie, form: url.Values{"admin": {"true"}}})
	checkRedirect(t, "make bob admin", w, "/admin/users/")
	if u, _ := ts.store.UserByID(bob.ID); !u.Admin {
		t.Errorf("bob is not an admin after being made one")
	}
	w = ts.page(pageReq{method: "POST", path: "/admin/users/" + itoa(bob.ID) + "/admin", cookie: cookie, form: url.Values{"admin": {"false"}}})
	checkRedirect(t, "unmake bob admin", w, "/admin/users/")
	if u, _ := ts.store.UserByID(bob.ID); u.Admin {
		t.Errorf("bob is still an admin after being unmade")
	}

	// Remove bob: the name must be typed; his tokens and sessions go too.
	ts.addToken(bob, "three", scopesRead, 0)
	checkRedirect(t, "bob signs in again", ts.loginAttempt("bob", "bob third password", ""), "/")
	for _, confirm := range []string{"", "Bob ", "root"} {
		before := ts.snapshot()
		w := ts.page(pageReq{method: "POST", path: "/admin/users/" + itoa(bob.ID) + "/remove", cookie: cookie, form: url.Values{"confirm": {confirm}}})
		checkPage(t, "POST remove bob confirmed with "+confirm, w, http.StatusBadRequest, "Type the user's name")
		assertUnchanged(t, "POST remove bob confirmed with "+confirm, before, ts.snapshot())
	}
	w = ts.page(pageReq{method: "POST", path: "/admin/users/" + itoa(bob.ID) + "/remove", cookie: cookie, form: url.Values{"confirm": {"bob"}}})
	checkRedirect(t, "remove bob", w, "/admin/users")
	if _, err := ts.store.UserByID(bob.ID); !errors.Is(err, errNotFound) {
		t.Errorf("bob is still there after removal: %v", err)
	}
	if n := len(ts.sessionsOf(bob)); n != 0 {
		t.Errorf("bob has %d sessions after removal", n)
	}
	if tokens, _ := ts.store.TokensByOwner(bob.ID); len(tokens) != 0 {
		t.Errorf("bob has %d tokens after removal", len(tokens))
	}
	checkStoreConsistent(t, ts)
	checkPage(t, "GET /admin/users after the removal", ts.page(pageReq{method: "GET", path: "/admin/users", cookie: cookie}), 200, root.Name)
}

func mustTokenID(t *testing.T, ts *testServer, secret string) uint64 {
	t.Helper()
	tok, _, err := ts.store.TokenByHash(hashToken(secret))
	if err != nil {
		t.Fatalf("TokenByHash: %v", err)
	}
	return tok.ID
}

// TestLastAdmin checks that the last admin can be neither demoted nor
// removed, and that an admin cannot remove the account they are using.
func TestLastAdmin(t *testing.T) {
	ts := newTestServer(t)
	root := ts.addUser("root", true)
	cookie := ts.login("root")
	path := "/admin/users/" + itoa(root.ID)

	before := ts.snapshot()
	w := ts.page(pageReq{method: "POST", path: path + "/admin", cookie: cookie, form: url.Values{"admin": {"false"}}})
	checkPage(t, "demote the last admin", w, http.StatusConflict, "root is the last admin")
	assertUnchanged(t, "demote the last admin", before, ts.snapshot())
	w = ts.page(pageReq{method: "POST", path: path + "/remove", cookie: cookie, form: url.Values{"confirm": {"root"}}})
	checkPage(t, "remove yourself", w, http.StatusConflict, "cannot remove your own account")
	assertUnchanged(t, "remove yourself", before, ts.snapshot())
	if _, err := ts.store.SetAdmin(testActor, root.ID, false); !errors.Is(err, errLastAdmin) {
		t.Errorf("store.SetAdmin demoting the last admin = %v; want errLastAdmin", err)
	}

	// With a second admin, root may step down, and lands on a page she
	// may still see.
	second := ts.addUser("second", true)
	w = ts.page(pageReq{method: "POST", path: path + "/admin", cookie: cookie, form: url.Values{"admin": {"false"}}})
	checkRedirect(t, "root steps down", w, "/")
	checkPage(t, "GET /admin/users after stepping down", ts.page(pageReq{method: "GET", path: "/admin/users", cookie: cookie}), http.StatusForbidden)
	// Now second is the last admin.
	other := ts.login("second")
	before = ts.snapshot()
	w = ts.page(pageReq{method: "POST", path: "/admin/users/" + itoa(second.ID) + "/admin", cookie: other, form: url.Values{"admin": {"false"}}})
	checkPage(t, "demote the new last admin", w, http.StatusConflict, "last admin")
	assertUnchanged(t, "demote the new last admin", before, ts.snapshot())
}
