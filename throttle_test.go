package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

// loginAttempt posts the sign-in form for name from addr.
func (ts *testServer) loginAttempt(name, password, addr string) *httptest.ResponseRecorder {
	ts.t.Helper()
	return ts.page(pageReq{method: "POST", path: "/login", addr: addr, form: url.Values{"name": {name}, "password": {password}}})
}

// checkThrottled asserts a 429 with a Retry-After of at most max seconds.
func checkThrottled(t *testing.T, what string, w *httptest.ResponseRecorder, max int) int {
	t.Helper()
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("%s = %d; want 429; body: %s", what, w.Code, w.Body)
	}
	secs, err := strconv.Atoi(w.Header().Get("Retry-After"))
	if err != nil || secs < 1 || secs > max {
		t.Fatalf("%s: Retry-After = %q; want 1 to %d seconds", what, w.Header().Get("Retry-After"), max)
	}
	return secs
}

// TestSignInFailuresLookAlike checks that a wrong name and a wrong
// password get the same answer.
func TestSignInFailuresLookAlike(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", false)
	wrongPassword := ts.loginAttempt("alice", "not-her-password", "")
	unknownUser := ts.loginAttempt("mallory", "not-her-password", "")
	checkPage(t, "POST /login with a wrong password", wrongPassword, http.StatusUnauthorized, "Wrong user name or password.")
	checkPage(t, "POST /login as nobody", unknownUser, http.StatusUnauthorized, "Wrong user name or password.")
	// The pages differ only in the name typed, which the form keeps.
	a := strings.Replace(wrongPassword.Body.String(), `value="alice"`, `value=""`, 1)
	b := strings.Replace(unknownUser.Body.String(), `value="mallory"`, `value=""`, 1)
	if a != b {
		t.Errorf("a wrong password and an unknown user get different pages:\n%s\n----\n%s", a, b)
	}
	if responseCookie(wrongPassword, sessionCookieName) != nil || responseCookie(unknownUser, sessionCookieName) != nil {
		t.Errorf("a failed sign-in set a session cookie")
	}
	if strings.Contains(ts.logs.String(), "not-her-password") {
		t.Errorf("the log holds a password tried")
	}
}

// TestSignInThrottle checks the limits per account and per address, that
// they lift with time, and that an attacker cannot lock a user out of an
// address they signed in from before.
func TestSignInThrottle(t *testing.T) {
	forEachThrottle(t, func(t *testing.T, newThrottle func(t *testing.T) throttler) {
		t.Run("per account", func(t *testing.T) {
			ts := newTestServer(t)
			ts.useThrottle(newThrottle(t))
			ts.addUser("alice", false)
			ts.addUser("bob", false)
			for i := 0; i < int(accountLimit.burst); i++ {
				checkPage(t, fmt.Sprintf("guess %d", i), ts.loginAttempt("alice", "guess", fmt.Sprintf("198.51.100.%d", i)), http.StatusUnauthorized)
			}
			// The account is now throttled from anywhere new, even with the
			// right password, and the answer does not say whether it was right.
			before, counted := ts.snapshot(), throttleContents(t, ts.server.throttle)
			w := ts.loginAttempt("alice", "password-of-alice", "203.0.113.1")
			secs := checkThrottled(t, "POST /login past the account limit", w, int(accountLimit.every/time.Second))
			checkPage(t, "POST /login past the account limit", w, http.StatusTooManyRequests, "Too many failed password attempts")
			assertUnchangedButRefusals(t, "a throttled sign-in", before, ts.snapshot())
			if now := throttleContents(t, ts.server.throttle); now != counted {
				t.Errorf("a throttled sign-in changed the throttle:\n%s\n----\n%s", counted, now)
			}
			// The same goes for HTTP Basic on the API and for names of any case.
			api := ts.do(request{method: "POST", path: "/api/v1/tokens", body: tokenRequest("ci", nil, nil),
				header: map[string]string{"Authorization": basicAuth("ALICE", "password-of-alice")}})
			checkProblem(t, "POST /api/v1/tokens with Basic past the account limit", api, http.StatusTooManyRequests)
			checkThrottled(t, "POST /api/v1/tokens with Basic past the account limit", api, 60)
			// Other accounts are not affected.
			checkRedirect(t, "bob signs in", ts.loginAttempt("bob", "password-of-bob", "203.0.113.1"), "/")
			// After Retry-After, one more try goes through.
			ts.clock.Add(time.Duration(secs) * time.Second)
			checkRedirect(t, "alice after Retry-After", ts.loginAttempt("alice", "password-of-alice", "203.0.113.1"), "/")
		})

		t.Run("per address", func(t *testing.T) {
			ts := newTestServer(t)
			ts.useThrottle(newThrottle(t))
			ts.addUser("alice", false)
			for i := 0; i < int(addrLimit.burst); i++ {
				checkPage(t, fmt.Sprintf("guess %d", i), ts.loginAttempt(fmt.Sprintf("user%d", i), "guess", "198.51.100.9"), http.StatusUnauthorized)
			}
			checkThrottled(t, "POST /login past the address limit", ts.loginAttempt("alice", "password-of-alice", "198.51.100.9"), int(addrLimit.every/time.Second))
			// An IPv6 client is one /64.
			for i := 0; i < int(addrLimit.burst); i++ {
				ts.loginAttempt(fmt.Sprintf("v6user%d", i), "guess", fmt.Sprintf("2001:db8:1:2::%x", i+1))
			}
			checkThrottled(t, "POST /login from the same /64", ts.loginAttempt("alice", "password-of-alice", "2001:db8:1:2:ffff::1"), 10)
			checkRedirect(t, "POST /login from another /64", ts.loginAttempt("alice", "password-of-alice", "2001:db8:1:3::1"), "/")
		})

		t.Run("no lock-out from a known address", func(t *testing.T) {
			ts := newTestServer(t)
			ts.useThrottle(newThrottle(t))
			ts.addUser("alice", false)
			checkRedirect(t, "alice signs in at home", ts.loginAttempt("alice", "password-of-alice", "192.0.2.10"), "/")
			for i := 0; i < 3*int(accountLimit.burst); i++ {
				ts.loginAttempt("alice", "guess", fmt.Sprintf("198.51.100.%d", i))
			}
			checkThrottled(t, "alice from a new address during the attack", ts.loginAttempt("alice", "password-of-alice", "203.0.113.5"), 60)
			checkRedirect(t, "alice at home during the attack", ts.loginAttempt("alice", "password-of-alice", "192.0.2.10"), "/")
			// Nothing is permanent: once the guessing stops, the limit drains.
			ts.clock.Add(time.Duration(accountLimit.burst) * accountLimit.every)
			checkRedirect(t, "alice from a new address after the attack", ts.loginAttempt("alice", "password-of-alice", "203.0.113.5"), "/")
		})

		t.Run("success gives the attempt back", func(t *testing.T) {
			ts := newTestServer(t)
			ts.useThrottle(newThrottle(t))
			ts.addUser("alice", false)
			for i := 0; i < 3*int(accountLimit.burst); i++ {
				checkRedirect(t, "sign in", ts.loginAttempt("alice", "password-of-alice", fmt.Sprintf("198.51.100.%d", i%5)), "/")
			}
		})

		t.Run("sudo and the current password count too", func(t *testing.T) {
			ts := newTestServer(t)
			ts.useThrottle(newThrottle(t))
			ts.addUser("alice", false)
			cookie := ts.login("alice")
			for i := 0; i < int(accountLimit.burst); i++ {
				w := ts.page(pageReq{method: "POST", path: "/account/password", cookie: cookie, addr: fmt.Sprintf("198.51.100.%d", i),
					form: url.Values{"current": {"guess"}, "password": {"new password 1"}, "confirm": {"new password 1"}}})
				checkPage(t, "a wrong current password", w, http.StatusForbidden)
			}
			w := ts.page(pageReq{method: "POST", path: "/account/password", cookie: cookie, addr: "203.0.113.9",
				form: url.Values{"current": {"password-of-alice"}, "password": {"new password 1"}, "confirm": {"new password 1"}}})
			checkThrottled(t, "POST /account/password past the limit", w, 60)
			checkPage(t, "POST /account/password past the limit", w, http.StatusTooManyRequests, "Too many failed password attempts")
		})
	})
}

// TestThrottleMemoryIsBounded checks that made-up names and addresses
// cannot grow the throttle without bound, and that drained buckets go.
func TestThrottleMemoryIsBounded(t *testing.T) {
	th := newSignInThrottle()
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < maxThrottleKeys+500; i++ {
		th.begin(signInAccount{name: fmt.Sprintf("name%d", i)}, fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), now)
	}
	if len(th.unknown) > unknownNameBuckets || len(th.addrs) > maxThrottleKeys || len(th.users) != 0 {
		t.Errorf("the throttle holds %d unknown-name buckets, %d addresses and %d users; want at most %d, %d and none",
			len(th.unknown), len(th.addrs), len(th.users), unknownNameBuckets, maxThrottleKeys)
	}
	th.begin(signInAccount{name: "late"}, "192.0.2.1", now.Add(time.Hour))
	if len(th.unknown) > 1 || len(th.addrs) > 1 {
		t.Errorf("an hour later the throttle still holds %d unknown names and %d addresses; want the drained ones gone", len(th.unknown), len(th.addrs))
	}
}

// TestJunkNameFloodKeepsAccountThrottled floods the sign-in with 300,000
// names no user holds, the way a soak test did (half of them refused for
// a busy hasher), after an attacker has throttled alice's account. The
// flood must not reset her bucket: the next guesses are refused, not
// checked. The flood goes straight to the throttle, as each sign-in's does
// after its user lookup; -short floods with 70,000, still more than the
// old 65,536 keys.
func TestJunkNameFloodKeepsAccountThrottled(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", false)
	for i := range int(accountLimit.burst) {
		checkPage(t, fmt.Sprintf("guess %d", i), ts.loginAttempt("alice", "guess", fmt.Sprintf("198.51.100.%d", i)), http.StatusUnauthorized)
	}
	checkThrottled(t, "alice's next guess", ts.loginAttempt("alice", "guess", "198.51.100.200"), 60)
	checked := strings.Count(ts.logs.String(), "sign-in failed")

	flood := 300_000
	if testing.Short() {
		flood = 70_000
	}
	now := ts.clock.Now()
	for i := range flood {
		junk := signInAccount{name: fmt.Sprintf("junk-%d", i)}
		addr := fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255)
		if wait, _ := ts.throttle.begin(junk, addr, now); wait == 0 && i%2 == 0 {
			ts.throttle.abandoned(junk, addr, now) // answered 503
		}
	}
	if len(ts.throttle.unknown) > unknownNameBuckets {
		t.Errorf("after the flood the throttle holds %d unknown-name buckets; want at most %d", len(ts.throttle.unknown), unknownNameBuckets)
	}

	before := ts.snapshot()
	for i := range 10 {
		checkThrottled(t, fmt.Sprintf("guess %d at alice after the flood", i), ts.loginAttempt("alice", "guess", fmt.Sprintf("203.0.113.%d", i)), 60)
	}
	checkThrottled(t, "alice's password after the flood", ts.loginAttempt("alice", "password-of-alice", "203.0.113.99"), 60)
	assertUnchangedButRefusals(t, "throttled guesses after the flood", before, ts.snapshot())
	if n := strings.Count(ts.logs.String(), "sign-in failed") - checked; n != 0 {
		t.Errorf("%d guesses at alice were checked after the flood; want none", n)
	}
}

// TestRefusedSignInsLeaveNoState checks that sign-ins refused for a busy
// hasher (503) or by the throttle (429), for real and made-up names, leave
// nothing behind in the throttle.
func TestRefusedSignInsLeaveNoState(t *testing.T) {
	forEachThrottle(t, func(t *testing.T, newThrottle func(t *testing.T) throttler) {
		ts := newTestServer(t)
		ts.useThrottle(newThrottle(t))
		u := ts.addUser("alice", false)
		ts.hasher.maxWaiting = 1
		for range cap(ts.hasher.slots) {
			if err := ts.hasher.acquire(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		// One sign-in waits for a slot; the queue is full.
		ctx, cancel := context.WithCancel(context.Background())
		waited := make(chan error, 1)
		go func() { waited <- ts.hasher.acquire(ctx) }()
		waitFor(t, func() bool { return ts.hasher.waiting.Load() == 1 })
		for i, name := range []string{u.Name, "nobody"} {
			req := request{method: "POST", path: "/api/v1/tokens", remote: fmt.Sprintf("198.51.100.%d:4711", i),
				header: map[string]string{"Authorization": basicAuth(name, "password-of-alice")}, body: tokenRequest("busy", nil, nil)}
			checkProblem(t, label(req)+" as "+name+" with the hasher busy", ts.do(req), http.StatusServiceUnavailable)
		}
		cancel()
		<-waited
		for range cap(ts.hasher.slots) {
			ts.hasher.release()
		}
		checkThrottleEmpty(t, ts.server.throttle, "after sign-ins answered 503")

		// Throttled by address: the refused attempts add no account.
		for i := range int(addrLimit.burst) {
			ts.loginAttempt(fmt.Sprintf("user%d", i), "guess", "198.51.100.9")
		}
		before := throttleContents(t, ts.server.throttle)
		checkThrottled(t, "alice from a throttled address", ts.loginAttempt("alice", "guess", "198.51.100.9"), 10)
		checkThrottled(t, "a new name from a throttled address", ts.loginAttempt("someone-new", "guess", "198.51.100.9"), 10)
		if after := throttleContents(t, ts.server.throttle); after != before {
			t.Errorf("refused sign-ins changed the throttle:\n%s\n----\n%s", before, after)
		}
	})
}

// checkThrottleEmpty fails unless th holds no bucket.
func checkThrottleEmpty(t *testing.T, th throttler, when string) {
	t.Helper()
	if c := throttleContents(t, th); strings.Contains(c, "bucket") {
		t.Errorf("%s the throttle holds buckets; want none:\n%s", when, c)
	}
}

// TestKnownAddressesKeepLearning checks the memory of the addresses an
// account signed in from: each account keeps its latest
// maxKnownAddrsPerUser, and once maxKnownAddrs are known in all the oldest
// success makes room, so that a full memory still learns alice's home and
// an attack on her account does not lock her out of it.
func TestKnownAddressesKeepLearning(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	start := ts.clock.Now()
	// Other accounts fill the memory, each from more addresses than it keeps.
	for user := uint64(1000); ts.throttle.known.order.Len() < maxKnownAddrs; user++ {
		for i := range maxKnownAddrsPerUser + 3 {
			ts.throttle.succeeded(user, fmt.Sprintf("10.%d.%d.%d", user>>8&255, user&255, i), start)
		}
	}
	if n := len(ts.throttle.known.byUser[1000]); n != maxKnownAddrsPerUser {
		t.Errorf("an account that signed in from %d addresses has %d known; want the latest %d", maxKnownAddrsPerUser+3, n, maxKnownAddrsPerUser)
	}
	if ts.throttle.known.has(1000, "10.3.232.0", start) || !ts.throttle.known.has(1000, fmt.Sprintf("10.3.232.%d", maxKnownAddrsPerUser+2), start) {
		t.Errorf("an account's oldest address is still known or its latest is not")
	}

	ts.clock.Add(time.Minute)
	checkRedirect(t, "alice signs in at home with the memory full", ts.loginAttempt("alice", "password-of-alice", "192.0.2.10"), "/")
	if n := ts.throttle.known.order.Len(); n != maxKnownAddrs {
		t.Errorf("%d addresses known; want the bound %d", n, maxKnownAddrs)
	}
	for i := range 3 * int(accountLimit.burst) {
		ts.loginAttempt("alice", "guess", fmt.Sprintf("198.51.100.%d", i))
	}
	checkThrottled(t, "alice from a new address during the attack", ts.loginAttempt("alice", "password-of-alice", "203.0.113.5"), 60)
	checkRedirect(t, "alice at home during the attack", ts.loginAttempt("alice", "password-of-alice", "192.0.2.10"), "/")

	// After knownAddrFor without signing in from it, home is forgotten.
	ts.clock.Add(knownAddrFor)
	ts.throttle.begin(signInAccount{user: alice.ID}, "192.0.2.11", ts.clock.Now()) // prunes
	if ts.throttle.known.has(alice.ID, "192.0.2.10", ts.clock.Now()) || ts.throttle.known.order.Len() != 0 {
		t.Errorf("%d addresses still known %v later", ts.throttle.known.order.Len(), knownAddrFor)
	}
}

// TestTrustProxyAddress checks which address the throttle and the session
// list see behind a proxy.
func TestTrustProxyAddress(t *testing.T) {
	ts := newTestServer(t)
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "127.0.0.1:5000"
	r.Header.Set("X-Forwarded-For", "10.9.9.9, 198.51.100.4")
	if got := ts.clientAddr(r); got != "127.0.0.1" {
		t.Errorf("without -trust-proxy clientAddr = %q; want the peer 127.0.0.1", got)
	}
	ts.cfg.TrustProxy = true
	if got := ts.clientAddr(r); got != "198.51.100.4" {
		t.Errorf("with -trust-proxy clientAddr = %q; want the last hop 198.51.100.4", got)
	}
	r.Header.Set("X-Forwarded-For", "garbage")
	if got := ts.clientAddr(r); got != "127.0.0.1" {
		t.Errorf("with a garbage X-Forwarded-For clientAddr = %q; want the peer", got)
	}
}

// TestSudoMode checks that an hour after sign-in sensitive actions ask for
// the password again, and that giving it opens another hour.
func TestSudoMode(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", true)
	bob := ts.addUser("bob", false)
	tok, _ := ts.addToken(alice, "ci", scopesRead, 0)
	cookie := ts.login("alice")

	ts.clock.Add(sudoWindow - time.Second)
	page := checkPage(t, "GET / within the hour", ts.page(pageReq{method: "GET", path: "/", cookie: cookie}), 200)
	if strings.Contains(page, "sudo_password") {
		t.Errorf("the token page asks for the password within the hour")
	}
	ts.clock.Add(time.Second)
	page = checkPage(t, "GET / after an hour", ts.page(pageReq{method: "GET", path: "/", cookie: cookie}), 200, "confirm it is you")
	if !strings.Contains(page, `name="sudo_password"`) {
		t.Errorf("the token page does not ask for the password after an hour")
	}

	sensitive := []struct {
		path string
		form url.Values
	}{
		{"/tokens", tokenFormValues("ci2", nil, "7", "")},
		{"/tokens/" + itoa(tok.ID) + "/rotate", url.Values{}},
		{"/admin/users", url.Values{"name": {"carol"}, "password": {"carol password"}, "confirm": {"carol password"}}},
		{"/admin/users/" + itoa(bob.ID) + "/password", url.Values{"password": {"bob password 2"}, "confirm": {"bob password 2"}}},
		{"/admin/users/" + itoa(bob.ID) + "/admin", url.Values{"admin": {"true"}}},
		{"/admin/users/" + itoa(bob.ID) + "/remove", url.Values{"confirm": {"bob"}}},
		{"/admin/users/" + itoa(alice.ID) + "/revoke-tokens", url.Values{"confirm": {"1"}}},
	}
	for _, s := range sensitive {
		for _, pw := range []string{"", "password-of-bob"} {
			form := url.Values{}
			for k, v := range s.form {
				form[k] = v
			}
			if pw != "" {
				form.Set("sudo_password", pw)
			}
			before := ts.snapshot()
			w := ts.page(pageReq{method: "POST", path: s.path, cookie: cookie, form: form})
			what := "POST " + s.path + " after an hour with password " + strconv.Quote(pw)
			want := "confirm it is you"
			if pw != "" {
				want = "That is not your password"
			}
			checkPage(t, what, w, http.StatusForbidden, want)
			assertUnchanged(t, what, before, ts.snapshot())
		}
	}
	// The API's session path has no form to ask in: it refuses.
	api := request{method: "POST", path: "/api/v1/tokens", body: tokenRequest("api", nil, nil),
		header: map[string]string{"Cookie": sessionCookieName + "=" + cookie}}
	before := ts.snapshot()
	p := checkProblem(t, label(api)+" with a session after an hour", ts.do(api), http.StatusForbidden)
	checkDetail(t, label(api)+" with a session after an hour", p, "more than an hour ago")
	assertUnchanged(t, label(api)+" with a session after an hour", before, ts.snapshot())

	// The right password lets the action through and opens another hour.
	w := ts.submit(pageReq{method: "POST", path: "/tokens", cookie: cookie,
		form: url.Values{"name": {"after sudo"}, "expiry": {"7"}, "sudo_password": {"password-of-alice"}}})
	checkPage(t, "POST /tokens with the password", w, 200, "Token created", "after sudo")
	h, _ := parseSessionSecret(cookie)
	rec, _, err := ts.store.SessionByHash(h)
	if err != nil || !rec.SignedInAt.Equal(ts.clock.Now()) {
		t.Errorf("after confirming, the session was signed in at %v (err %v); want now", rec.SignedInAt, err)
	}
	ts.clock.Add(sudoWindow - time.Minute)
	checkPage(t, "POST /tokens within the new hour", ts.submit(pageReq{method: "POST", path: "/tokens", cookie: cookie,
		form: tokenFormValues("no password needed", nil, "7", "")}), 200, "Token created")
	checkSecretAnswer(t, label(api)+" within the new hour", ts.do(api))
	if strings.Contains(ts.logs.String(), "password-of-") {
		t.Errorf("the log holds a password")
	}
}
