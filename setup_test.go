package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// setupCodeOf returns the code of a setup link.
func setupCodeOf(t *testing.T, link string) string {
	t.Helper()
	u, err := url.Parse(link)
	if err != nil || u.Path != "/setup" || u.Query().Get("code") == "" {
		t.Fatalf("setup link %q is not /setup?code=…", link)
	}
	return u.Query().Get("code")
}

// TestSetupLink checks the first-run page: it opens only with the live
// code, bad input keeps the code usable, and it works exactly once.
func TestSetupLink(t *testing.T) {
	ts := newTestServer(t)
	checkPage(t, "GET /setup before any link", ts.page(pageReq{method: "GET", path: "/setup"}), http.StatusNotFound, "not valid")
	link, err := ts.setupLink("http://127.0.0.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	code := setupCodeOf(t, link)
	if len(code) < 43 {
		t.Errorf("the setup code %q is shorter than 256 bits in base64", code)
	}
	checkNotStored(t, ts, "the setup code", code)
	if strings.Contains(ts.logs.String(), code) {
		t.Errorf("a setup link made for a test went to the log")
	}

	for _, bad := range []string{"", "x", code[:len(code)-1], code + "x", strings.ToUpper(code)} {
		checkPage(t, "GET /setup?code="+bad, ts.page(pageReq{method: "GET", path: "/setup?code=" + url.QueryEscape(bad)}), http.StatusNotFound, "not valid")
		before := ts.snapshot()
		w := ts.page(pageReq{method: "POST", path: "/setup", form: url.Values{"code": {bad}, "name": {"mallory"}, "password": {"mallory password"}, "confirm": {"mallory password"}}})
		checkPage(t, "POST /setup with code "+bad, w, http.StatusNotFound, "not valid")
		assertUnchanged(t, "POST /setup with a wrong code", before, ts.snapshot())
	}
	page := checkPage(t, "GET the setup link", ts.page(pageReq{method: "GET", path: "/setup?code=" + code}), http.StatusOK, "Welcome to tokend", "Create admin account")
	if !strings.Contains(page, `name="code" value="`+code+`"`) {
		t.Errorf("the setup form does not carry the code")
	}

	form := func(name, pw, confirm string) url.Values {
		return url.Values{"code": {code}, "name": {name}, "password": {pw}, "confirm": {confirm}}
	}
	for _, tt := range []struct {
		what string
		form url.Values
		says string
	}{
		{"a bad name", form("no spaces please", "admin password", "admin password"), "User name"},
		{"a short password", form("admin", "short", "short"), "at least 8 characters"},
		{"passwords that differ", form("admin", "admin password", "admin passw0rd"), "differ"},
	} {
		before := ts.snapshot()
		w := ts.page(pageReq{method: "POST", path: "/setup", form: tt.form})
		checkPage(t, "POST /setup with "+tt.what, w, http.StatusBadRequest, tt.says)
		assertUnchanged(t, "POST /setup with "+tt.what, before, ts.snapshot())
	}

	w := ts.page(pageReq{method: "POST", path: "/setup", form: form("root", "admin password", "admin password")})
	checkRedirect(t, "POST /setup", w, "/login?name=root")
	if got := flashOf(t, ts, w); !strings.Contains(got, "Sign in with your new password") {
		t.Errorf("after setup the notice says %q", got)
	}
	u, err := ts.store.UserByName("root")
	if err != nil || !u.Admin {
		t.Fatalf("after setup root = %+v, %v; want an admin", u, err)
	}
	checkNotStored(t, ts, "the admin's password", "admin password")
	checkRedirect(t, "the new admin signs in", ts.loginAttempt("root", "admin password", ""), "/")

	// The link is spent, and the page is gone.
	before := ts.snapshot()
	w = ts.page(pageReq{method: "POST", path: "/setup", form: form("second", "admin password", "admin password")})
	checkPage(t, "POST /setup a second time", w, http.StatusNotFound, "Setup is complete")
	assertUnchanged(t, "POST /setup a second time", before, ts.snapshot())
	checkPage(t, "GET the spent setup link", ts.page(pageReq{method: "GET", path: "/setup?code=" + code}), http.StatusNotFound, "Setup is complete")
	// Even a new code opens nothing once an admin exists.
	link, _ = ts.setupLink("http://127.0.0.1:8080")
	checkPage(t, "GET a new link after setup", ts.page(pageReq{method: "GET", path: "/setup?code=" + setupCodeOf(t, link)}), http.StatusNotFound, "Setup is complete")
}

// TestSetupRace checks that two setups racing with the same code make one
// admin between them.
func TestSetupRace(t *testing.T) {
	ts := newTestServer(t)
	link, _ := ts.setupLink("http://127.0.0.1")
	code := setupCodeOf(t, link)
	codes := make(chan int, 2)
	for _, name := range []string{"first", "second"} {
		go func() {
			w := ts.page(pageReq{method: "POST", path: "/setup", form: url.Values{"code": {code}, "name": {name}, "password": {"admin password"}, "confirm": {"admin password"}}})
			codes <- w.Code
		}()
	}
	got := []int{<-codes, <-codes}
	if n, _ := ts.store.CountUsers(); n != 1 {
		t.Errorf("two racing setups made %d users (answers %v); want 1", n, got)
	}
	if (got[0] == http.StatusSeeOther) == (got[1] == http.StatusSeeOther) {
		t.Errorf("two racing setups answered %v; want one 303 and one 404", got)
	}
}

// TestServeLogsSetupLink checks that serve on a database without users
// logs a working one-time link, and on one with users logs none.
func TestServeLogsSetupLink(t *testing.T) {
	cfg := defaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DB = filepath.Join(t.TempDir(), "tokend.db")
	cfg.Argon = testArgon
	run := func() (string, func()) {
		var logs syncBuffer
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan net.Addr, 1)
		done := make(chan error, 1)
		go func() { done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(&logs, nil)), ready) }()
		select {
		case <-ready:
		case err := <-done:
			t.Fatalf("serve: %v", err)
		case <-time.After(10 * time.Second):
			t.Fatal("serve did not become ready")
		}
		return logs.String(), func() { cancel(); <-done }
	}
	logs, stop := run()
	m := regexp.MustCompile(`url="?(http://127\.0\.0\.1:\d+/setup\?code=[A-Za-z0-9_-]{43})`).FindStringSubmatch(logs)
	if m == nil {
		stop()
		t.Fatalf("serve on an empty database logged no setup link:\n%s", logs)
	}
	resp, err := http.Get(m[1])
	if err != nil {
		stop()
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET the logged setup link = %d; want 200", resp.StatusCode)
	}
	resp, err = http.PostForm(strings.Replace(m[1], "?code=", "?", 1), url.Values{
		"code": {setupCodeOf(t, m[1])}, "name": {"root"}, "password": {"admin password"}, "confirm": {"admin password"}})
	if err != nil {
		stop()
		t.Fatal(err)
	}
	resp.Body.Close()
	stop()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/login" {
		t.Errorf("POST the logged setup link ended at %s with %d; want the sign-in page", resp.Request.URL, resp.StatusCode)
	}
	if strings.Contains(logs, "admin password") {
		t.Errorf("the log holds the admin's password")
	}

	logs, stop = run()
	stop()
	if strings.Contains(logs, "/setup?code=") {
		t.Errorf("serve on a database with an admin logged a setup link:\n%s", logs)
	}
}

func TestBrowsableHost(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8080": "127.0.0.1:8080", "0.0.0.0:80": "127.0.0.1:80", "[::]:8080": "[::1]:8080", "[::1]:9": "[::1]:9",
	} {
		addr, err := net.ResolveTCPAddr("tcp", in)
		if err != nil {
			t.Fatal(err)
		}
		if got := browsableHost(addr); got != want {
			t.Errorf("browsableHost(%s) = %s; want %s", in, got, want)
		}
	}
}

// TestSetupPageReadsNoUsers checks what an anonymous request to the setup
// page costs on a database of 20,000 users: with the live code, one key of
// the users bucket and no user record (a record that cannot be decoded
// stays unread); with any other code, no database read at all (the
// database is closed, and the answer is still a 404, not a 500).
func TestSetupPageReadsNoUsers(t *testing.T) {
	ts := newTestServer(t)
	err := ts.store.update(func(tx *bolt.Tx) error {
		for i := range 20_000 {
			u := newUser(fmt.Sprintf("user%d", i), "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$a2V5", false, ts.clock.Now())
			if err := putNewUser(tx, &u); err != nil {
				return err
			}
		}
		users := tx.Bucket(bucketUsers)
		last, _ := users.Cursor().Last()
		return users.Put(last, []byte("not a user record"))
	})
	if err != nil {
		t.Fatalf("add users: %v", err)
	}
	link, err := ts.setupLink("http://127.0.0.1:8080")
	if err != nil {
		t.Fatal(err)
	}
	code := setupCodeOf(t, link)
	checkPage(t, "GET the setup link with 20,000 users", ts.page(pageReq{method: "GET", path: "/setup?code=" + code}),
		http.StatusNotFound, "Setup is complete")

	if err := ts.store.db.Close(); err != nil {
		t.Fatal(err)
	}
	checkPage(t, "GET /setup with a wrong code", ts.page(pageReq{method: "GET", path: "/setup?code=wrong"}), http.StatusNotFound, "Setup is complete")
	fresh := newTestServer(t)
	fresh.setupLink("http://127.0.0.1:8080")
	if err := fresh.store.db.Close(); err != nil {
		t.Fatal(err)
	}
	checkPage(t, "GET /setup with a wrong code", fresh.page(pageReq{method: "GET", path: "/setup?code=wrong"}), http.StatusNotFound, "not valid")
	w := fresh.page(pageReq{method: "POST", path: "/setup", form: url.Values{"code": {"wrong"}, "name": {"mallory"}, "password": {"mallory password"}, "confirm": {"mallory password"}}})
	checkPage(t, "POST /setup with a wrong code", w, http.StatusNotFound, "not valid")
}
