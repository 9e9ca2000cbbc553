package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// sessionsOf returns the sessions the store holds for u, failing on error.
func (ts *testServer) sessionsOf(u userRecord) []storedSession {
	ts.t.Helper()
	out, err := ts.store.SessionsOf(u.ID)
	if err != nil {
		ts.t.Fatalf("SessionsOf(%d): %v", u.ID, err)
	}
	return out
}

// TestSessionCookie checks the cookie's attributes over HTTP, over HTTPS,
// and behind a proxy that is or is not trusted, and that the database
// holds only the secret's hash.
func TestSessionCookie(t *testing.T) {
	tests := []struct {
		name       string
		https      bool
		header     map[string]string
		trustProxy bool
		wantName   string
		wantSecure bool
	}{
		{name: "plain HTTP", wantName: "tokend_session"},
		{name: "HTTPS", https: true, wantName: "__Host-tokend_session", wantSecure: true},
		{name: "trusted proxy says https", header: map[string]string{"X-Forwarded-Proto": "https"}, trustProxy: true,
			wantName: "__Host-tokend_session", wantSecure: true},
		{name: "untrusted proxy says https", header: map[string]string{"X-Forwarded-Proto": "https"},
			wantName: "tokend_session"},
		{name: "trusted proxy says http", header: map[string]string{"X-Forwarded-Proto": "http"}, trustProxy: true,
			wantName: "tokend_session"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t)
			ts.cfg.TrustProxy = tt.trustProxy
			alice := ts.addUser("alice", false)
			w := ts.page(pageReq{method: "POST", path: "/login", https: tt.https, header: tt.header,
				form: url.Values{"name": {"alice"}, "password": {"password-of-alice"}}})
			checkRedirect(t, "POST /login", w, "/")
			cookies := w.Result().Cookies()
			if len(cookies) != 1 {
				t.Fatalf("POST /login set %d cookies: %q; want one", len(cookies), w.Header().Values("Set-Cookie"))
			}
			c := cookies[0]
			if c.Name != tt.wantName || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" ||
				c.Secure != tt.wantSecure || c.Domain != "" {
				t.Errorf("Set-Cookie: %s; want %s, HttpOnly, SameSite=Lax, Path=/, no Domain, Secure %v",
					w.Header().Get("Set-Cookie"), tt.wantName, tt.wantSecure)
			}
			if c.MaxAge != int(ts.cfg.SessionLifetime/time.Second) {
				t.Errorf("cookie Max-Age = %d; want the session lifetime %v", c.MaxAge, ts.cfg.SessionLifetime)
			}
			if _, ok := parseSessionSecret(c.Value); !ok {
				t.Errorf("cookie value %q is not a 256-bit secret", c.Value)
			}
			sessions := ts.sessionsOf(alice)
			if len(sessions) != 1 || sessions[0].hash != sha256.Sum256([]byte(c.Value)) {
				t.Fatalf("the store holds %d sessions for alice, not under the secret's SHA-256", len(sessions))
			}
			checkNotStored(t, ts, "the session secret", c.Value)
			if strings.Contains(ts.logs.String(), c.Value) {
				t.Errorf("the log holds the session secret")
			}
			rec := sessions[0].rec
			now := ts.clock.Now()
			if !rec.CreatedAt.Equal(now) || !rec.SignedInAt.Equal(now) || !rec.LastSeenAt.Equal(now) ||
				!rec.ExpiresAt.Equal(now.Add(ts.cfg.SessionLifetime)) || rec.Addr != "192.0.2.7" {
				t.Errorf("session record = %+v; want created, signed in and seen now, expiring after the lifetime, from 192.0.2.7", rec)
			}
			// The cookie works under the name it was given, and only there.
			header := map[string]string{"Cookie": c.Name + "=" + c.Value}
			for k, v := range tt.header {
				header[k] = v
			}
			if w := ts.page(pageReq{method: "GET", path: "/", https: tt.https, header: header}); w.Code != http.StatusOK {
				t.Errorf("GET / with the new cookie = %d; want 200", w.Code)
			}
			// The other name is not read.
			other := sessionCookieName
			if c.Name == other {
				other = sessionCookieNameHTTPS
			}
			header["Cookie"] = other + "=" + c.Value
			if w := ts.page(pageReq{method: "GET", path: "/", https: tt.https, header: header}); w.Code != http.StatusSeeOther {
				t.Errorf("GET / with the secret under %s = %d; want 303 to sign in", other, w.Code)
			}
		})
	}
}

// TestSessionRotation checks that every sign-in makes a new session id and
// drops the one the browser had, so that a planted id is worth nothing.
func TestSessionRotation(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	ts.addUser("mallory", false)
	first := ts.login("alice")

	// Signing in again from the same browser replaces the session.
	w := ts.page(pageReq{method: "POST", path: "/login", cookie: first, form: url.Values{"name": {"alice"}, "password": {"password-of-alice"}}})
	checkRedirect(t, "POST /login with a session", w, "/")
	second := responseCookie(w, sessionCookieName).Value
	if second == first {
		t.Fatalf("signing in again kept the session id")
	}
	if n := len(ts.sessionsOf(alice)); n != 1 {
		t.Errorf("after a second sign-in in one browser alice has %d sessions; want 1", n)
	}
	checkRedirect(t, "GET / with the replaced cookie", ts.page(pageReq{method: "GET", path: "/", cookie: first}), "/login")

	// An attacker's own session planted in the victim's browser is
	// replaced when the victim signs in.
	planted := ts.login("mallory")
	w = ts.page(pageReq{method: "POST", path: "/login", cookie: planted, form: url.Values{"name": {"alice"}, "password": {"password-of-alice"}}})
	victim := responseCookie(w, sessionCookieName).Value
	if victim == planted {
		t.Fatalf("signing in kept the planted session id")
	}
	checkRedirect(t, "GET / with mallory's planted cookie after alice signed in", ts.page(pageReq{method: "GET", path: "/", cookie: planted}), "/login")
	checkPage(t, "GET / as alice", ts.page(pageReq{method: "GET", path: "/", cookie: victim}), 200, "alice")
	// A made-up id that names no session is simply replaced.
	made := strings.Repeat("x", 43)
	w = ts.page(pageReq{method: "POST", path: "/login", cookie: made, form: url.Values{"name": {"alice"}, "password": {"password-of-alice"}}})
	if c := responseCookie(w, sessionCookieName); c == nil || c.Value == made {
		t.Errorf("signing in with a made-up cookie kept it")
	}
}

// TestSignOut checks that signing out deletes the session on the server,
// so that a copy of the cookie is worth nothing afterwards.
func TestSignOut(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	cookie := ts.login("alice")
	other := ts.login("alice")
	w := ts.page(pageReq{method: "POST", path: "/logout", cookie: cookie, form: url.Values{}})
	checkRedirect(t, "POST /logout", w, "/login")
	if c := responseCookie(w, sessionCookieName); c == nil || c.MaxAge >= 0 || c.Value != "" {
		t.Errorf("POST /logout did not clear the cookie: %q", w.Header().Values("Set-Cookie"))
	}
	if got := flashOf(t, ts, w); got != "You are signed out." {
		t.Errorf("after signing out the notice says %q", got)
	}
	sessions := ts.sessionsOf(alice)
	if len(sessions) != 1 || sessions[0].hash != sha256.Sum256([]byte(other)) {
		t.Errorf("after signing out one browser, alice has %d sessions; want only the other one", len(sessions))
	}
	// Replaying the old cookie: pages send it to sign in, forms change nothing.
	checkRedirect(t, "GET / with the signed-out cookie", ts.page(pageReq{method: "GET", path: "/", cookie: cookie}), "/login")
	before := ts.snapshot()
	w = ts.page(pageReq{method: "POST", path: "/tokens", cookie: cookie, form: tokenFormValues("replay", nil, "7", "")})
	checkRedirect(t, "POST /tokens with the signed-out cookie", w, "/login")
	assertUnchanged(t, "POST /tokens with the signed-out cookie", before, ts.snapshot())
	// Signing out again is harmless.
	checkRedirect(t, "POST /logout again", ts.page(pageReq{method: "POST", path: "/logout", cookie: cookie, form: url.Values{}}), "/login")
	checkPage(t, "GET / in the other browser", ts.page(pageReq{method: "GET", path: "/", cookie: other}), 200)
}

// TestSessionLifetimes checks the idle and absolute lifetimes with the
// fake clock, and that activity keeps a session alive only until its
// absolute end.
func TestSessionLifetimes(t *testing.T) {
	ts := newTestServer(t)
	ts.cfg.SessionIdle = 2 * time.Hour
	ts.cfg.SessionLifetime = 5 * time.Hour
	ts.addUser("alice", false)

	idle := ts.login("alice")
	ts.clock.Add(2*time.Hour - time.Second)
	checkPage(t, "GET / just before the idle end", ts.page(pageReq{method: "GET", path: "/", cookie: idle}), 200)
	ts.clock.Add(2*time.Hour - time.Second)
	checkPage(t, "GET / active within the idle time", ts.page(pageReq{method: "GET", path: "/", cookie: idle}), 200)
	ts.clock.Add(2 * time.Hour)
	w := ts.page(pageReq{method: "GET", path: "/", cookie: idle})
	checkRedirect(t, "GET / after two idle hours", w, "/login")
	if got := flashOf(t, ts, w); !strings.Contains(got, "session has ended") {
		t.Errorf("after the idle end the notice says %q", got)
	}

	busy := ts.login("alice")
	for i := 0; i < 4; i++ {
		ts.clock.Add(time.Hour)
		checkPage(t, "GET / every hour", ts.page(pageReq{method: "GET", path: "/", cookie: busy}), 200)
	}
	ts.clock.Add(time.Hour)
	checkRedirect(t, "GET / after the absolute lifetime", ts.page(pageReq{method: "GET", path: "/", cookie: busy}), "/login")
}

// TestPurgeSessions checks that the purge deletes expired and idle
// sessions, across several batches, and keeps live ones.
func TestPurgeSessions(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		u := storeUser(t, st, "alice", false)
		now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		const idle = time.Hour
		n := 2*sessionPurgeBatch + 17
		live := map[sessionHash]bool{}
		for i := 0; i < n; i++ {
			_, h, err := newSessionSecret()
			if err != nil {
				t.Fatal(err)
			}
			rec := sessionRecord{User: u.ID, CreatedAt: now.Add(-time.Hour), ExpiresAt: now.Add(time.Hour), LastSeenAt: now.Add(-time.Minute)}
			switch i % 3 {
			case 0: // past its absolute end, though seen a minute ago
				rec.ExpiresAt = now
			case 1: // idle too long
				rec.LastSeenAt = now.Add(-idle)
			default:
				live[h] = true
			}
			if err := st.CreateSession(testActor, h, rec, nil, 0); err != nil {
				t.Fatal(err)
			}
		}
		deleted, err := st.PurgeSessions(context.Background(), now, idle)
		if err != nil {
			t.Fatalf("PurgeSessions: %v", err)
		}
		if want := n - len(live); deleted != want {
			t.Errorf("PurgeSessions deleted %d; want %d", deleted, want)
		}
		left, err := st.SessionsOf(u.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(left) != len(live) {
			t.Errorf("%d sessions are left; want the %d live ones", len(left), len(live))
		}
		for _, s := range left {
			if !live[s.hash] {
				t.Errorf("a dead session survived the purge: %+v", s.rec)
			}
		}
		if deleted, err := st.PurgeSessions(context.Background(), now, idle); err != nil || deleted != 0 {
			t.Errorf("a second purge deleted %d (err %v); want 0", deleted, err)
		}
	})
}

// TestAccountSessions checks the list of sessions and ending them, and
// that another user's session is not there to end.
func TestAccountSessions(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	ts.addUser("bob", false)
	mine := ts.login("alice")
	w := ts.page(pageReq{method: "POST", path: "/login", addr: "2001:db8::7", form: url.Values{"name": {"alice"}, "password": {"password-of-alice"}}})
	laptop := responseCookie(w, sessionCookieName).Value
	third := ts.login("alice")
	bobs := ts.login("bob")
	ts.clock.Add(3 * time.Hour)

	checkPage(t, "GET /account", ts.page(pageReq{method: "GET", path: "/account", cookie: mine}), 200,
		"2001:db8::7", "192.0.2.7", "this browser", "Signed in 3 hours ago", "last seen just now", "Change password")

	// Bob's session is not alice's to end.
	bobHash, _ := parseSessionSecret(bobs)
	for _, id := range []string{bobHash.String(), "nonsense", strings.Repeat("0", 64)} {
		before := ts.snapshot()
		w := ts.page(pageReq{method: "POST", path: "/account/sessions/end", cookie: mine, form: url.Values{"session": {id}}})
		checkPage(t, "POST /account/sessions/end of "+id, w, http.StatusNotFound)
		assertUnchanged(t, "POST /account/sessions/end of "+id, before, ts.snapshot())
	}
	laptopHash, _ := parseSessionSecret(laptop)
	w = ts.page(pageReq{method: "POST", path: "/account/sessions/end", cookie: mine, form: url.Values{"session": {laptopHash.String()}}})
	checkRedirect(t, "POST /account/sessions/end", w, "/account")
	checkRedirect(t, "GET / in the ended session", ts.page(pageReq{method: "GET", path: "/", cookie: laptop}), "/login")
	if n := len(ts.sessionsOf(alice)); n != 2 {
		t.Errorf("after ending one of three sessions alice has %d", n)
	}

	w = ts.page(pageReq{method: "POST", path: "/account/sessions/end-others", cookie: mine, form: url.Values{}})
	checkRedirect(t, "POST /account/sessions/end-others", w, "/account")
	if got := flashOf(t, ts, w); got != "1 other session signed out." {
		t.Errorf("the notice says %q", got)
	}
	checkRedirect(t, "GET / in another ended session", ts.page(pageReq{method: "GET", path: "/", cookie: third}), "/login")
	checkPage(t, "GET / in the kept session", ts.page(pageReq{method: "GET", path: "/", cookie: mine}), 200)
	checkPage(t, "GET / as bob", ts.page(pageReq{method: "GET", path: "/", cookie: bobs}), 200)

	// Ending the session in use signs out.
	mineHash, _ := parseSessionSecret(mine)
	w = ts.page(pageReq{method: "POST", path: "/account/sessions/end", cookie: mine, form: url.Values{"session": {mineHash.String()}}})
	checkRedirect(t, "POST /account/sessions/end of the session in use", w, "/login")
	if n := len(ts.sessionsOf(alice)); n != 0 {
		t.Errorf("alice has %d sessions after ending her last", n)
	}
}

// TestChangePassword checks the account page's password form: the
// current password is needed, bad input changes nothing, and the two
// checkboxes do what they say.
func TestChangePassword(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	aliceTok, aliceSecret := ts.addToken(alice, "ci", scopesRead, 0)
	cookie := ts.login("alice")
	other := ts.login("alice")
	form := func(current, next, confirm string, checks ...string) url.Values {
		v := url.Values{"current": {current}, "password": {next}, "confirm": {confirm}}
		for _, c := range checks {
			v.Set(c, "1")
		}
		return v
	}
	bad := []struct {
		name   string
		form   url.Values
		status int
		says   string
	}{
		{"no current password", form("", "new password 1", "new password 1"), 400, "Enter your current password"},
		{"wrong current password", form("password-of-bob", "new password 1", "new password 1"), 403, "current password is not right"},
		{"short", form("password-of-alice", "short", "short"), 400, "at least 8 characters"},
		{"common", form("password-of-alice", "password123", "password123"), 400, "most common passwords"},
		{"mismatch", form("password-of-alice", "new password 1", "new password 2"), 400, "differ"},
		{"unchanged", form("password-of-alice", "password-of-alice", "password-of-alice"), 400, "is the current one"},
	}
	for _, tt := range bad {
		before := ts.snapshot()
		w := ts.page(pageReq{method: "POST", path: "/account/password", cookie: cookie, form: tt.form})
		checkPage(t, "POST /account/password with "+tt.name, w, tt.status, tt.says, "Change password")
		assertUnchanged(t, "POST /account/password with "+tt.name, before, ts.snapshot())
	}

	// Neither box: only the password changes.
	w := ts.page(pageReq{method: "POST", path: "/account/password", cookie: cookie, form: form("password-of-alice", "second password", "second password")})
	checkRedirect(t, "POST /account/password", w, "/account")
	checkWorks(t, ts, "a token after a plain password change", aliceSecret, aliceTok.ID)
	checkPage(t, "the other session after a plain change", ts.page(pageReq{method: "GET", path: "/", cookie: other}), 200)
	if _, err := ts.signIn(httptest.NewRequest("POST", "/login", nil), "alice", "second password"); err != nil {
		t.Errorf("the new password does not sign in: %v", err)
	}
	if _, err := ts.signIn(httptest.NewRequest("POST", "/login", nil), "alice", "password-of-alice"); err == nil {
		t.Errorf("the old password still signs in")
	}

	// Both boxes: tokens and other sessions go, this one stays.
	ts.addToken(alice, "second", scopesRead, 0)
	w = ts.page(pageReq{method: "POST", path: "/account/password", cookie: cookie,
		form: form("second password", "third password", "third password", "revoke_tokens", "end_sessions")})
	checkRedirect(t, "POST /account/password with both boxes", w, "/account")
	if got := flashOf(t, ts, w); got != "Your password is changed. 2 tokens revoked. 1 other session signed out." {
		t.Errorf("the notice says %q", got)
	}
	checkDead(t, ts, "a token after a change with revoke", aliceSecret)
	if tokens, _ := ts.store.TokensByOwner(alice.ID); len(tokens) != 0 {
		t.Errorf("alice holds %d tokens after the change with revoke", len(tokens))
	}
	checkRedirect(t, "the other session after the change", ts.page(pageReq{method: "GET", path: "/", cookie: other}), "/login")
	checkPage(t, "this session after the change", ts.page(pageReq{method: "GET", path: "/", cookie: cookie}), 200)
	checkNotStored(t, ts, "the new password", "third password")
	for _, pw := range []string{"second password", "third password", "password-of-alice"} {
		if strings.Contains(ts.logs.String(), pw) {
			t.Errorf("the log holds the password %q", pw)
		}
	}
}

// TestConfigSessionFlags checks the session flags and their environment
// fallbacks.
func TestConfigSessionFlags(t *testing.T) {
	t.Setenv("TOKEND_SESSION_IDLE", "3h")
	t.Setenv("TOKEND_TRUST_PROXY", "true")
	cfg := defaultConfig()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg.register(fs)
	if err := parseFlags(fs, []string{"-session-lifetime", "48h"}); err != nil {
		t.Fatal(err)
	}
	if cfg.SessionIdle != 3*time.Hour || cfg.SessionLifetime != 48*time.Hour || !cfg.TrustProxy {
		t.Errorf("config = idle %v, lifetime %v, trust proxy %v; want 3h, 48h, true", cfg.SessionIdle, cfg.SessionLifetime, cfg.TrustProxy)
	}
	if err := cfg.check(); err != nil {
		t.Errorf("check: %v", err)
	}
	for _, bad := range []struct{ idle, lifetime time.Duration }{{time.Second, time.Hour}, {2 * time.Hour, time.Hour}} {
		c := defaultConfig()
		c.SessionIdle, c.SessionLifetime = bad.idle, bad.lifetime
		if err := c.check(); err == nil || !strings.Contains(err.Error(), "-session-") {
			t.Errorf("check with idle %v, lifetime %v = %v; want an error naming the flag", bad.idle, bad.lifetime, err)
		}
	}
}

// TestSessionCapPerUser signs a user in more often than
// -max-sessions-per-user allows: the oldest sessions end, the newest keep
// working, and another user's sessions are untouched.
func TestSessionCapPerUser(t *testing.T) {
	ts := newTestServer(t)
	ts.cfg.MaxSessionsPerUser = 3
	alice := ts.addUser("alice", false)
	bob := ts.addUser("bob", false)
	bobCookie := ts.login("bob")
	var cookies []string
	for range 5 {
		cookies = append(cookies, ts.login("alice"))
		ts.clock.Add(time.Second)
	}
	if n := len(ts.sessionsOf(alice)); n != 3 {
		t.Errorf("after 5 sign-ins alice holds %d sessions; want the cap, 3", n)
	}
	for i, c := range cookies {
		w := ts.page(pageReq{method: "GET", path: "/account", cookie: c})
		if works := w.Code == http.StatusOK; works != (i >= 2) {
			t.Errorf("sign-in %d of 5: GET /account = %d; want it to work only for the 3 newest", i+1, w.Code)
		}
	}
	if n := len(ts.sessionsOf(bob)); n != 1 {
		t.Errorf("bob holds %d sessions; want his 1", n)
	}
	if w := ts.page(pageReq{method: "GET", path: "/account", cookie: bobCookie}); w.Code != http.StatusOK {
		t.Errorf("bob's session after alice's sign-ins: GET /account = %d; want 200", w.Code)
	}
	if err := ts.store.Check(); err != nil {
		t.Errorf("Check after the cap: %v", err)
	}
}

// TestSessionsByOwnerIndex shows that per-user operations go through
// sessions_by_owner: a session record without its index entry is invisible
// to them, and Check reports the mismatch both ways.
func TestSessionsByOwnerIndex(t *testing.T) {
	st, _ := newTestDB(t)
	alice := storeUser(t, st, "alice", false)
	bob := storeUser(t, st, "bob", false)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	rec := func(u userRecord) sessionRecord {
		return sessionRecord{User: u.ID, CreatedAt: now, ExpiresAt: now.Add(time.Hour), LastSeenAt: now}
	}
	_, mine, _ := newSessionSecret()
	if err := st.CreateSession(testActor, mine, rec(alice), nil, 0); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		_, h, _ := newSessionSecret()
		if err := st.CreateSession(testActor, h, rec(bob), nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Check(); err != nil {
		t.Fatalf("Check of a sound database: %v", err)
	}
	// A record alone, with no index entry.
	_, stray, _ := newSessionSecret()
	err := st.update(func(tx *bolt.Tx) error {
		r := rec(alice)
		return putJSON(tx.Bucket(bucketSessions), stray[:], &r)
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := st.SessionsOf(alice.ID); len(got) != 1 || got[0].hash != mine {
		t.Errorf("SessionsOf(alice) = %d sessions; want only the indexed one", len(got))
	}
	if n, err := st.EndOtherSessions(testActor, alice.ID, sessionHash{}); err != nil || n != 1 {
		t.Errorf("EndOtherSessions(alice) = %d, %v; want the 1 indexed session", n, err)
	}
	if got, _ := st.SessionsOf(bob.ID); len(got) != 3 {
		t.Errorf("bob's sessions after alice's were ended: %d; want 3", len(got))
	}
	if err := st.Check(); err == nil || !strings.Contains(err.Error(), "no sessions_by_owner entry") {
		t.Errorf("Check with a session missing from the index = %v; want it reported", err)
	}
	// An index entry alone, with no record.
	err = st.update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketSessions).Delete(stray[:]); err != nil {
			return err
		}
		return tx.Bucket(bucketSessionsByOwner).Put(sessionOwnerKey(bob.ID, stray), itob(1))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Check(); err == nil || !strings.Contains(err.Error(), "sessions_by_owner") {
		t.Errorf("Check with an index entry of no session = %v; want it reported", err)
	}
}

// stopAfter is a context that ends after its Err has been asked n times.
type stopAfter struct {
	context.Context
	n int
}

func (c *stopAfter) Err() error {
	if c.n--; c.n < 0 {
		return context.Canceled
	}
	return nil
}

// TestPurgeSessionsBatchesAndStops checks that the session purge deletes
// at most sessionPurgeBatch sessions per write transaction, with their
// index entries, and stops between batches when its context ends.
func TestPurgeSessionsBatchesAndStops(t *testing.T) {
	st, _ := newTestDB(t)
	u := storeUser(t, st, "alice", false)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	n := 2*sessionPurgeBatch + 500
	err := st.update(func(tx *bolt.Tx) error {
		for range n {
			_, h, _ := newSessionSecret()
			rec := sessionRecord{User: u.ID, CreatedAt: now.Add(-2 * time.Hour), ExpiresAt: now.Add(-time.Hour), LastSeenAt: now.Add(-time.Hour)}
			if err := putSession(tx, h, &rec); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	before := dumpStore(t, st)
	if deleted, err := st.PurgeSessions(ctx, now, time.Hour); err != nil || deleted != 0 {
		t.Errorf("PurgeSessions with an ended context = %d, %v; want 0 and no error", deleted, err)
	}
	assertUnchanged(t, "a purge with an ended context", before, dumpStore(t, st))

	txs := st.writeTxs.Load()
	deleted, err := st.PurgeSessions(&stopAfter{Context: context.Background(), n: 1}, now, time.Hour)
	if err != nil || deleted != sessionPurgeBatch || st.writeTxs.Load()-txs != 1 {
		t.Errorf("PurgeSessions stopped after one batch = %d in %d transactions, %v; want %d in 1",
			deleted, st.writeTxs.Load()-txs, err, sessionPurgeBatch)
	}
	txs = st.writeTxs.Load()
	deleted, err = st.PurgeSessions(context.Background(), now, time.Hour)
	if err != nil || deleted != n-sessionPurgeBatch || st.writeTxs.Load()-txs != 2 {
		t.Errorf("PurgeSessions of the rest = %d in %d transactions, %v; want %d in 2",
			deleted, st.writeTxs.Load()-txs, err, n-sessionPurgeBatch)
	}
	if left, _ := st.SessionsOf(u.ID); len(left) != 0 {
		t.Errorf("%d sessions left after the purge; want 0", len(left))
	}
	if err := st.Check(); err != nil {
		t.Errorf("Check after the purge: %v", err)
	}
}

// TestUpgradeSchema1 writes a database in the layout of schema 1 (no
// sessions_by_owner) and opens it: the index is built in the opening
// transaction and the version raised. A read-only open of such a file and
// any open of a newer version are refused.
func TestUpgradeSchema1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "old.db")
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	hashes := map[uint64][]sessionHash{}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{"meta", "users", "users_by_name", "tokens", "tokens_by_hash", "tokens_by_owner", "tokens_by_expiry", "sessions"} {
			if _, err := tx.CreateBucket([]byte(name)); err != nil {
				return err
			}
		}
		tx.Bucket(bucketMeta).Put(keySchema, itob(1))
		for id, name := range map[uint64]string{1: "alice", 2: "bob"} {
			u := newUser(name, "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$a2V5", false, now)
			u.ID = id
			putJSON(tx.Bucket(bucketUsers), itob(id), &u)
			tx.Bucket(bucketUsersByName).Put([]byte(name), itob(id))
			tx.Bucket(bucketUsers).SetSequence(2)
			for range int(id) + 1 {
				_, h, _ := newSessionSecret()
				rec := sessionRecord{User: id, CreatedAt: now, ExpiresAt: now.Add(time.Hour), LastSeenAt: now}
				putJSON(tx.Bucket(bucketSessions), h[:], &rec)
				hashes[id] = append(hashes[id], h)
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	if _, err := openStoreWith(path, bolt.Options{Timeout: time.Second, ReadOnly: true}); !errors.Is(err, errUnsupportedData) {
		t.Errorf("read-only open of a schema 1 file = %v; want errUnsupportedData", err)
	}
	st, err := openStore(path, time.Second)
	if err != nil {
		t.Fatalf("open a schema 1 file: %v", err)
	}
	for id, want := range hashes {
		got, err := st.SessionsOf(id)
		if err != nil || len(got) != len(want) {
			t.Errorf("SessionsOf(%d) after the upgrade = %d, %v; want %d", id, len(got), err, len(want))
		}
	}
	if err := st.Check(); err != nil {
		t.Errorf("Check after the upgrade: %v", err)
	}
	err = st.db.Update(func(tx *bolt.Tx) error {
		if v := btoi(tx.Bucket(bucketMeta).Get(keySchema)); v != schemaVersion {
			t.Errorf("schema after the upgrade = %d; want %d", v, schemaVersion)
		}
		return tx.Bucket(bucketMeta).Put(keySchema, itob(schemaVersion+1))
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openStore(path, time.Second); !errors.Is(err, errUnsupportedData) {
		t.Errorf("open of a newer schema = %v; want errUnsupportedData", err)
	}
}
