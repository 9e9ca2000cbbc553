package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The behaviour suite: tests that pin what the store contract promises run
// once for every engine through forEachEngine, so that no engine can keep
// a promise the others break. Tests that look inside one engine's storage
// (bbolt's buckets, its write-transaction count) stay with that engine.

// storeEngine is one engine the behaviour suite runs against.
type storeEngine struct {
	name string
	// open returns a fresh, empty store with its auth cache, closed when
	// the test ends.
	open func(t *testing.T) store
}

// storeEngines lists every engine.
func storeEngines() []storeEngine {
	return []storeEngine{
		{name: "bbolt", open: func(t *testing.T) store {
			st, _ := newTestDB(t)
			return st
		}},
		// A fresh database from newTestPG (which skips when neither
		// TOKEND_TEST_POSTGRES nor CI is set), with its auth cache
		// trusting the notification channel, as a server's does.
		{name: "postgres", open: func(t *testing.T) store {
			st, _ := newTestPGStore(t)
			if err := st.startInvalidations(st.auth, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
				t.Fatalf("startInvalidations: %v", err)
			}
			waitFor(t, func() bool { return !st.auth.distrusted.Load() })
			return st
		}},
	}
}

// forEachEngine runs body as a subtest for every engine; open gives it a
// fresh store of that engine, as many as it asks for.
func forEachEngine(t *testing.T, body func(t *testing.T, open func(t *testing.T) store)) {
	t.Helper()
	for _, e := range storeEngines() {
		t.Run(e.name, func(t *testing.T) { body(t, e.open) })
	}
}

// authCacheOf returns the auth cache above st.
func authCacheOf(t testing.TB, st store) *authCache {
	t.Helper()
	switch e := st.(type) {
	case *boltStore:
		return e.auth
	case *pgStore:
		return e.auth
	}
	t.Fatalf("no auth cache known for a %T", st)
	return nil
}

// storeContents describes everything st holds as its contract shows it:
// every user with their password hash, every token and every session. Two
// equal descriptions mean that nothing a caller can see has changed.
func storeContents(t testing.TB, st store) string {
	t.Helper()
	var b strings.Builder
	users, err := st.Users()
	if err != nil {
		t.Fatalf("Users: %v", err)
	}
	for _, u := range users {
		fmt.Fprintf(&b, "user %+v\n", u)
		sessions, err := st.SessionsOf(u.ID)
		if err != nil {
			t.Fatalf("SessionsOf(%d): %v", u.ID, err)
		}
		for _, s := range sessions {
			fmt.Fprintf(&b, "  session %x %+v\n", s.hash[:4], s.rec)
		}
	}
	tokens, err := st.AllTokens()
	if err != nil {
		t.Fatalf("AllTokens: %v", err)
	}
	for _, tok := range tokens {
		fmt.Fprintf(&b, "token %+v\n", tok)
	}
	return b.String()
}

// storeTokens stores n tokens for owner, the i-th expiring at expires(i)
// (nil: never), and returns their secrets: in bbolt's large transactions
// when st is bbolt, one CreateToken each otherwise.
func storeTokens(t testing.TB, st store, owner uint64, n int, created time.Time, expires func(i int) *time.Time) []string {
	t.Helper()
	if b, ok := st.(*boltStore); ok {
		return bulkTokens(t, b, owner, n, created, expires)
	}
	f := mustFormat(t, defaultTokenPrefix)
	secrets := make([]string, 0, n)
	for i := range n {
		secret, err := f.generate()
		if err != nil {
			t.Fatal(err)
		}
		tok := tokenRecord{Owner: owner, Name: fmt.Sprintf("bulk %d", i), Scopes: []string{scopeTokensRead},
			CreatedAt: created, ExpiresAt: expires(i), Hint: tokenHint(secret)}
		if err := st.CreateToken(testActor, &tok, hashToken(secret), 0); err != nil {
			t.Fatalf("CreateToken %d: %v", i, err)
		}
		secrets = append(secrets, secret)
	}
	return secrets
}

// TestEngineSessions pins the sessions of the contract: a sign-in that
// replaces the browser's old session, the per-user cap that ends the
// oldest (never the new one, never another user's), touching and
// confirming, ending one, ending all others, and ownership.
func TestEngineSessions(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		alice := storeUser(t, st, "alice", false)
		bob := storeUser(t, st, "bob", false)
		now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
		newSession := func(u userRecord, at time.Time, replaced *sessionHash, limit int) sessionHash {
			t.Helper()
			_, h, err := newSessionSecret()
			if err != nil {
				t.Fatal(err)
			}
			rec := sessionRecord{User: u.ID, CreatedAt: at, ExpiresAt: at.Add(time.Hour), LastSeenAt: at, SignedInAt: at, Addr: "192.0.2.1", Agent: "Firefox on Linux"}
			if err := st.CreateSession(testActor, h, rec, replaced, limit); err != nil {
				t.Fatalf("CreateSession: %v", err)
			}
			return h
		}
		hashesOf := func(u userRecord) []sessionHash {
			t.Helper()
			list, err := st.SessionsOf(u.ID)
			if err != nil {
				t.Fatal(err)
			}
			var out []sessionHash
			for _, s := range list {
				out = append(out, s.hash)
			}
			return out
		}

		bobs := newSession(bob, now, nil, 3)
		var alices []sessionHash
		for i := range 5 {
			alices = append(alices, newSession(alice, now.Add(time.Duration(i)*time.Second), nil, 3))
		}
		if got, want := hashesOf(alice), []sessionHash{alices[4], alices[3], alices[2]}; !slices.Equal(got, want) {
			t.Errorf("after 5 sign-ins under a cap of 3, alice's sessions = %x; want the 3 newest, newest first", got)
		}
		if got := hashesOf(bob); !slices.Equal(got, []sessionHash{bobs}) {
			t.Errorf("bob's sessions after alice's sign-ins = %x; want his one", got)
		}
		if _, _, err := st.SessionByHash(alices[0]); !errors.Is(err, errNotFound) {
			t.Errorf("the oldest session past the cap: %v; want errNotFound", err)
		}

		replacing := newSession(alice, now.Add(time.Minute), &alices[4], 0)
		if _, _, err := st.SessionByHash(alices[4]); !errors.Is(err, errNotFound) {
			t.Errorf("a replaced session: %v; want errNotFound", err)
		}
		rec, u, err := st.SessionByHash(replacing)
		if err != nil || u.ID != alice.ID || rec.Agent != "Firefox on Linux" || !rec.CreatedAt.Equal(now.Add(time.Minute)) {
			t.Errorf("SessionByHash(new) = %+v, %+v, %v; want alice's session as stored", rec, u, err)
		}

		later := now.Add(10 * time.Minute)
		if err := st.TouchSession(replacing, later, "192.0.2.9"); err != nil {
			t.Fatal(err)
		}
		if rec, _, _ := st.SessionByHash(replacing); !rec.LastSeenAt.Equal(later) || rec.Addr != "192.0.2.9" || !rec.SignedInAt.Equal(now.Add(time.Minute)) {
			t.Errorf("after TouchSession: %+v; want last seen at %v from 192.0.2.9, signed in unchanged", rec, later)
		}
		if err := st.ConfirmSession(replacing, later.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if rec, _, _ := st.SessionByHash(replacing); !rec.SignedInAt.Equal(later.Add(time.Minute)) {
			t.Errorf("after ConfirmSession: signed in at %v; want %v", rec.SignedInAt, later.Add(time.Minute))
		}
		if err := st.TouchSession(alices[0], later, "x"); !errors.Is(err, errNotFound) {
			t.Errorf("TouchSession(ended) = %v; want errNotFound", err)
		}

		if err := st.DeleteSession(testActor, bobs, alice.ID); !errors.Is(err, errNotFound) {
			t.Errorf("DeleteSession(bob's, as alice) = %v; want errNotFound", err)
		}
		if n, err := st.EndOtherSessions(testActor, alice.ID, replacing); err != nil || n != 2 {
			t.Errorf("EndOtherSessions = %d, %v; want 2", n, err)
		}
		if got := hashesOf(alice); !slices.Equal(got, []sessionHash{replacing}) {
			t.Errorf("after EndOtherSessions alice holds %x; want the kept one", got)
		}
		if err := st.DeleteSession(testActor, bobs, anyOwner); err != nil {
			t.Errorf("DeleteSession(bob's, anyOwner) = %v", err)
		}
		if got := hashesOf(bob); len(got) != 0 {
			t.Errorf("bob holds %d sessions after his was deleted", len(got))
		}
		ghost := sessionRecord{User: 999, CreatedAt: now, ExpiresAt: now.Add(time.Hour), LastSeenAt: now}
		if err := st.CreateSession(testActor, sessionHash{9}, ghost, nil, 0); !errors.Is(err, errNotFound) {
			t.Errorf("CreateSession for a missing user = %v; want errNotFound", err)
		}
		if err := st.Check(); err != nil {
			t.Errorf("Check: %v", err)
		}
	})
}

// TestEngineFirstAdminRace asks for the first admin from many goroutines
// at once: exactly one is made, the others hear errSetupDone, and so does
// anyone asking later.
func TestEngineFirstAdminRace(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		if has, err := st.HasUsers(); err != nil || has {
			t.Fatalf("HasUsers on a new store = %v, %v; want false", has, err)
		}
		const racers = 8
		errs := make(chan error, racers)
		var wg sync.WaitGroup
		for i := range racers {
			wg.Go(func() {
				u := newUser(fmt.Sprintf("admin%d", i), "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$a2V5", true, time.Now())
				errs <- st.CreateFirstAdmin(testActor, &u)
			})
		}
		wg.Wait()
		close(errs)
		made := 0
		for err := range errs {
			switch {
			case err == nil:
				made++
			case !errors.Is(err, errSetupDone):
				t.Errorf("CreateFirstAdmin = %v; want nil or errSetupDone", err)
			}
		}
		if n, err := st.CountUsers(); made != 1 || n != 1 || err != nil {
			t.Errorf("racing first admins: %d made, %d users (%v); want exactly 1", made, n, err)
		}
		late := newUser("late", "x", true, time.Now())
		if err := st.CreateFirstAdmin(testActor, &late); !errors.Is(err, errSetupDone) {
			t.Errorf("CreateFirstAdmin once a user exists = %v; want errSetupDone", err)
		}
		notAdmin := newUser("plain", "x", false, time.Now())
		if err := st.CreateFirstAdmin(testActor, &notAdmin); err == nil {
			t.Error("CreateFirstAdmin of a user who is not an admin succeeded")
		}
		if has, err := st.HasUsers(); err != nil || !has {
			t.Errorf("HasUsers after setup = %v, %v; want true", has, err)
		}
	})
}

// TestEngineAccountActions runs every account action over every engine and
// checks what each leaves: the tokens it revokes are refused by the very
// next verification (the auth cache forgot them before the action
// returned), the sessions it ends are gone, and what it keeps still works.
func TestEngineAccountActions(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		clock := newFakeClock()
		acts := accounts{store: st, hasher: newPasswordHasher(testArgon, 1), now: clock.Now}
		root := storeUser(t, st, "root", true)
		alice := storeUser(t, st, "alice", true)
		tok, secret := storeToken(t, st, alice.ID, "ci", nil, scopeAdmin)
		session := func(u userRecord) sessionHash {
			t.Helper()
			_, h, _ := newSessionSecret()
			now := clock.Now()
			if err := st.CreateSession(testActor, h, sessionRecord{User: u.ID, CreatedAt: now, ExpiresAt: now.Add(time.Hour), LastSeenAt: now, SignedInAt: now}, nil, 0); err != nil {
				t.Fatal(err)
			}
			return h
		}
		verify := func(secret string) (authRecord, userRecord, error) {
			t.Helper()
			a, u, err := st.Authenticate(hashToken(secret))
			if err != nil && !errors.Is(err, errNotFound) {
				t.Fatalf("Authenticate: %v", err)
			}
			return a, u, err
		}
		for range 2 { // cached from the second on
			if _, u, err := verify(secret); err != nil || !u.Admin {
				t.Fatalf("verify alice's token = %+v, %v; want an admin", u, err)
			}
		}

		// Demotion: the token stays, its owner is no admin from the next verification on.
		if u, err := acts.SetAdmin(testActor, alice.ID, false); err != nil || u.Admin {
			t.Fatalf("SetAdmin(alice, false) = %+v, %v", u, err)
		}
		if a, u, err := verify(secret); err != nil || u.Admin || a.ID != tok.ID {
			t.Errorf("after demotion: %+v, %v; want the token, its owner no admin", u, err)
		}
		if _, err := acts.SetAdmin(testActor, root.ID, false); !errors.Is(err, errLastAdmin) {
			t.Errorf("demote the last admin = %v; want errLastAdmin", err)
		}

		// Reset with revocation: tokens refused, every session ends.
		kept := session(alice)
		session(alice)
		before := storeContents(t, st)
		if _, err := acts.ResetPassword(context.Background(), testActor, alice.ID, "short", true, sessionHash{}); err == nil {
			t.Error("ResetPassword with a password the policy refuses succeeded")
		}
		if after := storeContents(t, st); after != before {
			t.Errorf("a refused reset changed the store:\n%s\nthen\n%s", before, after)
		}
		done, err := acts.ResetPassword(context.Background(), testActor, alice.ID, "a new long password", true, kept)
		if err != nil || done.Tokens != 1 || done.Sessions != 1 {
			t.Fatalf("ResetPassword(revoke) = %+v, %v; want 1 token and 1 session", done, err)
		}
		if _, _, err := verify(secret); !errors.Is(err, errNotFound) {
			t.Errorf("after a reset that revokes: verify = %v; want errNotFound", err)
		}
		if _, _, err := st.SessionByHash(kept); err != nil {
			t.Errorf("the kept session after the reset: %v", err)
		}
		if u, _ := st.UserByID(alice.ID); u.PasswordHash == "" || u.PasswordHash == root.PasswordHash || !u.PasswordChangedAt.Equal(clock.Now()) {
			t.Errorf("after the reset alice = %+v; want a new hash, changed now", u)
		}

		// Revoke all.
		_, s1 := storeToken(t, st, alice.ID, "one", nil)
		_, s2 := storeToken(t, st, alice.ID, "two", nil)
		verify(s1)
		verify(s2)
		if done, err := acts.RevokeAllTokens(testActor, alice.ID); err != nil || done.Tokens != 2 {
			t.Errorf("RevokeAllTokens = %+v, %v; want 2", done, err)
		}
		for _, s := range []string{s1, s2} {
			if _, _, err := verify(s); !errors.Is(err, errNotFound) {
				t.Errorf("after RevokeAllTokens: verify = %v; want errNotFound", err)
			}
		}
		if _, err := acts.RevokeAllTokens(testActor, 999); !errors.Is(err, errNotFound) {
			t.Errorf("RevokeAllTokens(unknown) = %v; want errNotFound", err)
		}

		// Removal: refused for oneself, then the user, tokens and sessions go.
		_, s3 := storeToken(t, st, alice.ID, "three", nil)
		verify(s3)
		if err := acts.RemoveUser(actor{ID: alice.ID, Name: alice.Name}, alice.ID); !errors.Is(err, errRemoveSelf) {
			t.Errorf("RemoveUser(self) = %v; want errRemoveSelf", err)
		}
		if err := acts.RemoveUser(actor{ID: root.ID, Name: root.Name}, alice.ID); err != nil {
			t.Fatalf("RemoveUser(alice) = %v", err)
		}
		if _, _, err := verify(s3); !errors.Is(err, errNotFound) {
			t.Errorf("a removed user's token: verify = %v; want errNotFound", err)
		}
		if _, _, err := st.SessionByHash(kept); !errors.Is(err, errNotFound) {
			t.Errorf("a removed user's session: %v; want errNotFound", err)
		}
		if err := acts.RemoveUser(testActor, root.ID); !errors.Is(err, errLastAdmin) {
			t.Errorf("RemoveUser(last admin) = %v; want errLastAdmin", err)
		}
		if err := st.Check(); err != nil {
			t.Errorf("Check: %v", err)
		}
	})
}

// A form key is claimed once per session, whichever instance asks; a
// session remembers its latest formKeysPerSession keys.
func TestClaimFormKey(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		alice := storeUser(t, st, "alice", false)
		now := newFakeClock().Now()
		var hs [2]sessionHash
		for i := range hs {
			_, hs[i], _ = newSessionSecret()
			if err := st.CreateSession(testActor, hs[i], sessionRecord{User: alice.ID, CreatedAt: now, ExpiresAt: now.Add(time.Hour), LastSeenAt: now, SignedInAt: now}, nil, 0); err != nil {
				t.Fatal(err)
			}
		}
		claim := func(h sessionHash, key string, want bool) {
			t.Helper()
			if got, err := st.ClaimFormKey(h, key); err != nil || got != want {
				t.Fatalf("ClaimFormKey(%q) = %v, %v; want %v", key, got, err, want)
			}
		}
		claim(hs[0], "K0", true)
		claim(hs[0], "K0", false)
		claim(hs[1], "K0", true) // another session's keys are its own
		for i := 1; i <= formKeysPerSession; i++ {
			claim(hs[0], fmt.Sprint("K", i), true)
		}
		// K0 was the oldest of 33: forgotten; the latest 32 are not.
		claim(hs[0], "K0", true)
		for i := 2; i <= formKeysPerSession; i++ {
			claim(hs[0], fmt.Sprint("K", i), false)
		}
		// A key given back (its form failed) may be claimed again.
		if err := st.ReleaseFormKey(hs[0], "K5"); err != nil {
			t.Fatalf("ReleaseFormKey: %v", err)
		}
		claim(hs[0], "K5", true)
		claim(hs[0], "K5", false)
		if _, err := st.ClaimFormKey(sessionHash{7}, "K0"); !errors.Is(err, errNotFound) {
			t.Errorf("ClaimFormKey for no session: %v; want errNotFound", err)
		}
		// The session reads back as it was stored, keys aside.
		rec, _, err := st.SessionByHash(hs[0])
		if err != nil || rec.User != alice.ID || !sameStoredTime(rec.ExpiresAt, now.Add(time.Hour)) {
			t.Errorf("SessionByHash after claims = %+v, %v", rec, err)
		}
	})
}
