package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var engineNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func randomHash(t testing.TB) [32]byte {
	t.Helper()
	var h [32]byte
	if _, err := rand.Read(h[:]); err != nil {
		t.Fatal(err)
	}
	return h
}

func engineUser(t testing.TB, st store, name string, admin bool) userRecord {
	t.Helper()
	u := newUser(name, "hash-of-"+name, admin, engineNow)
	if err := st.CreateUser(testActor, &u); err != nil {
		t.Fatalf("CreateUser(%q): %v", name, err)
	}
	return u
}

func engineToken(t testing.TB, st store, owner uint64, name string, expires *time.Time) (tokenRecord, tokenHash) {
	t.Helper()
	h := tokenHash(randomHash(t))
	tok := tokenRecord{Owner: owner, Name: name, Scopes: []string{"tokens:read", "app:x"}, CreatedAt: engineNow, ExpiresAt: expires, Hint: "abcd"}
	if err := st.CreateToken(testActor, &tok, h, 0); err != nil {
		t.Fatalf("CreateToken(%q): %v", name, err)
	}
	return tok, h
}

func TestEngineUsers(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		if has, err := st.HasUsers(); err != nil || has {
			t.Fatalf("HasUsers on an empty store = %v, %v; want false", has, err)
		}
		alice := engineUser(t, st, "Alice", true)
		bob := engineUser(t, st, "bob", false)
		if alice.ID == 0 || bob.ID <= alice.ID {
			t.Fatalf("ids %d, %d: want growing, from 1", alice.ID, bob.ID)
		}
		dup := newUser("ALICE", "x", false, engineNow)
		if err := st.CreateUser(testActor, &dup); !errors.Is(err, errNameTaken) {
			t.Fatalf("CreateUser(ALICE) = %v; want errNameTaken", err)
		}
		got, err := st.UserByName("aLiCe")
		if err != nil || got.ID != alice.ID || got.Name != "Alice" || !got.Admin || got.PasswordHash != "hash-of-Alice" || !got.CreatedAt.Equal(engineNow) {
			t.Fatalf("UserByName(aLiCe) = %+v, %v; want %+v", got, err, alice)
		}
		if _, err := st.UserByID(bob.ID + 1000); !errors.Is(err, errNotFound) {
			t.Fatalf("UserByID(unknown) = %v; want errNotFound", err)
		}
		if _, err := st.UserByName("carol"); !errors.Is(err, errNotFound) {
			t.Fatalf("UserByName(carol) = %v; want errNotFound", err)
		}
		users, err := st.Users()
		if err != nil || len(users) != 2 || users[0].ID != alice.ID || users[1].ID != bob.ID {
			t.Fatalf("Users = %+v, %v; want alice then bob", users, err)
		}
		if n, err := st.CountUsers(); n != 2 || err != nil {
			t.Fatalf("CountUsers = %d, %v; want 2", n, err)
		}

		// Re-hashing applies only over the hash it was computed from.
		if err := st.UpgradePasswordHash(bob.ID, "stale", "new"); err != nil {
			t.Fatalf("UpgradePasswordHash(stale): %v", err)
		}
		if u, _ := st.UserByID(bob.ID); u.PasswordHash != "hash-of-bob" {
			t.Fatalf("hash after a stale upgrade = %q; want it unchanged", u.PasswordHash)
		}
		if err := st.UpgradePasswordHash(bob.ID, "hash-of-bob", "new"); err != nil {
			t.Fatalf("UpgradePasswordHash: %v", err)
		}
		if u, _ := st.UserByID(bob.ID); u.PasswordHash != "new" {
			t.Fatalf("hash after upgrade = %q; want new", u.PasswordHash)
		}
		if err := st.UpgradePasswordHash(bob.ID+1000, "a", "b"); !errors.Is(err, errNotFound) {
			t.Fatalf("UpgradePasswordHash(unknown) = %v; want errNotFound", err)
		}

		// The last admin stays.
		if _, err := st.SetAdmin(testActor, alice.ID, false); !errors.Is(err, errLastAdmin) {
			t.Fatalf("SetAdmin(last admin, false) = %v; want errLastAdmin", err)
		}
		if err := st.DeleteUser(testActor, alice.ID); !errors.Is(err, errLastAdmin) {
			t.Fatalf("DeleteUser(last admin) = %v; want errLastAdmin", err)
		}
		if u, err := st.SetAdmin(testActor, bob.ID, true); err != nil || !u.Admin {
			t.Fatalf("SetAdmin(bob, true) = %+v, %v", u, err)
		}
		if u, err := st.SetAdmin(testActor, alice.ID, false); err != nil || u.Admin {
			t.Fatalf("SetAdmin(alice, false) with two admins = %+v, %v", u, err)
		}
		if _, err := st.SetAdmin(testActor, bob.ID+1000, true); !errors.Is(err, errNotFound) {
			t.Fatalf("SetAdmin(unknown) = %v; want errNotFound", err)
		}

		// Removing a user removes their tokens and sessions, and nobody else's.
		engineToken(t, st, alice.ID, "a1", nil)
		engineToken(t, st, alice.ID, "a2", nil)
		_, bobHash := engineToken(t, st, bob.ID, "b1", nil)
		sess := sessionHash(randomHash(t))
		if err := st.CreateSession(testActor, sess, sessionRecord{User: alice.ID, CreatedAt: engineNow, ExpiresAt: engineNow.Add(time.Hour), LastSeenAt: engineNow, SignedInAt: engineNow}, nil, 0); err != nil {
			t.Fatalf("CreateSession: %v", err)
		}
		if counts, err := st.TokenCounts(); err != nil || counts[alice.ID] != 2 || counts[bob.ID] != 1 {
			t.Fatalf("TokenCounts = %v, %v; want alice 2, bob 1", counts, err)
		}
		if err := st.DeleteUser(testActor, alice.ID); err != nil {
			t.Fatalf("DeleteUser(alice): %v", err)
		}
		if _, err := st.UserByID(alice.ID); !errors.Is(err, errNotFound) {
			t.Fatalf("UserByID(removed) = %v; want errNotFound", err)
		}
		if toks, _ := st.TokensByOwner(alice.ID); len(toks) != 0 {
			t.Fatalf("removed user still holds %d tokens", len(toks))
		}
		if _, _, err := st.SessionByHash(sess); !errors.Is(err, errNotFound) {
			t.Fatalf("SessionByHash(removed user's) = %v; want errNotFound", err)
		}
		if _, _, err := st.Authenticate(bobHash); err != nil {
			t.Fatalf("Authenticate(bob's token) after removing alice: %v", err)
		}
		if users, tokens, err := st.Totals(); users != 1 || tokens != 1 || err != nil {
			t.Fatalf("Totals = %d, %d, %v; want 1, 1", users, tokens, err)
		}
		if err := st.DeleteUser(testActor, alice.ID); !errors.Is(err, errNotFound) {
			t.Fatalf("DeleteUser twice = %v; want errNotFound", err)
		}
		if err := st.Ping(); err != nil {
			t.Fatalf("Ping: %v", err)
		}
		if err := st.Check(); err != nil {
			t.Fatalf("Check: %v", err)
		}
	})
}

func TestEngineTokens(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		alice := engineUser(t, st, "alice", true)
		bob := engineUser(t, st, "bob", false)
		exp := engineNow.Add(24 * time.Hour)
		t1, h1 := engineToken(t, st, alice.ID, "one", &exp)
		t2, h2 := engineToken(t, st, alice.ID, "two", nil)
		tb, hb := engineToken(t, st, bob.ID, "bob's", nil)
		if t1.ID == 0 || t2.ID <= t1.ID || t1.Hash != h1 {
			t.Fatalf("CreateToken ids %d, %d (hash kept: %v); want growing ids", t1.ID, t2.ID, t1.Hash == h1)
		}

		orphan := tokenRecord{Owner: bob.ID + 1000, Name: "x", CreatedAt: engineNow}
		if err := st.CreateToken(testActor, &orphan, randomHash(t), 0); !errors.Is(err, errNotFound) {
			t.Fatalf("CreateToken(unknown owner) = %v; want errNotFound", err)
		}
		if err := st.CreateToken(testActor, &orphan, randomHash(t), 5); !errors.Is(err, errNotFound) {
			t.Fatalf("CreateToken(unknown owner, limit) = %v; want errNotFound", err)
		}
		third := tokenRecord{Owner: alice.ID, Name: "three", CreatedAt: engineNow}
		if err := st.CreateToken(testActor, &third, randomHash(t), 2); !errors.Is(err, errTooManyTokens) {
			t.Fatalf("CreateToken beyond the limit = %v; want errTooManyTokens", err)
		}

		a, u, err := st.Authenticate(h1)
		if err != nil || a.ID != t1.ID || a.Owner != alice.ID || !slices.Equal(a.Scopes, t1.Scopes) ||
			a.ExpiresAt == nil || !a.ExpiresAt.Equal(exp) || !a.CreatedAt.Equal(engineNow) {
			t.Fatalf("Authenticate = %+v, %v; want token %d", a, err, t1.ID)
		}
		if u.ID != alice.ID || u.Name != "alice" || !u.Admin || u.PasswordHash != "" {
			t.Fatalf("Authenticate's owner = %+v; want alice without her password hash", u)
		}
		if a, _, err := st.Authenticate(h2); err != nil || a.ExpiresAt != nil {
			t.Fatalf("Authenticate(never expires) = %+v, %v; want a nil expiry", a, err)
		}
		if _, _, err := st.Authenticate(randomHash(t)); !errors.Is(err, errNotFound) {
			t.Fatalf("Authenticate(unknown) = %v; want errNotFound", err)
		}
		if tok, owner, err := st.TokenByHash(hb); err != nil || tok.ID != tb.ID || owner.ID != bob.ID || tok.Hint != "abcd" {
			t.Fatalf("TokenByHash = %+v, %+v, %v", tok, owner, err)
		}
		if _, err := st.TokenByID(t1.ID, bob.ID); !errors.Is(err, errNotFound) {
			t.Fatalf("TokenByID(alice's, as bob) = %v; want errNotFound", err)
		}
		if tok, err := st.TokenByID(t1.ID, anyOwner); err != nil || tok.Name != "one" {
			t.Fatalf("TokenByID(anyOwner) = %+v, %v", tok, err)
		}
		if toks, err := st.TokensByOwner(alice.ID); err != nil || len(toks) != 2 || toks[0].ID != t2.ID || toks[1].ID != t1.ID {
			t.Fatalf("TokensByOwner = %+v, %v; want two, newest first", toks, err)
		}
		if toks, err := st.TokensByOwner(bob.ID + 1000); err != nil || toks == nil || len(toks) != 0 {
			t.Fatalf("TokensByOwner(nobody) = %#v, %v; want an empty list", toks, err)
		}
		if all, err := st.AllTokens(); err != nil || len(all) != 3 || all[0].ID != tb.ID {
			t.Fatalf("AllTokens = %+v, %v; want three, newest first", all, err)
		}

		// Last used: a missing token is skipped, and times never go back.
		later, earlier := engineNow.Add(time.Hour), engineNow.Add(time.Minute)
		if err := st.FlushLastUsed(map[uint64]lastUse{t1.ID: {At: later, IP: "192.0.2.1"}, 999999: {At: later}}); err != nil {
			t.Fatalf("FlushLastUsed: %v", err)
		}
		if err := st.FlushLastUsed(map[uint64]lastUse{t1.ID: {At: earlier, IP: "192.0.2.2"}}); err != nil {
			t.Fatalf("FlushLastUsed(earlier): %v", err)
		}
		if tok, _ := st.TokenByID(t1.ID, anyOwner); tok.LastUsedAt == nil || !tok.LastUsedAt.Equal(later) || tok.LastUsedIP != "192.0.2.1" {
			t.Fatalf("last used = %v from %q; want %v from 192.0.2.1", tok.LastUsedAt, tok.LastUsedIP, later)
		}
		if _, err := st.TokenByID(999999, anyOwner); !errors.Is(err, errNotFound) {
			t.Fatalf("a flush re-created a deleted token: %v", err)
		}

		// Revocation.
		if _, err := st.DeleteToken(testActor, t1.ID, bob.ID); !errors.Is(err, errNotFound) {
			t.Fatalf("DeleteToken(alice's, as bob) = %v; want errNotFound", err)
		}
		if tok, err := st.DeleteToken(testActor, t1.ID, alice.ID); err != nil || tok.Name != "one" {
			t.Fatalf("DeleteToken = %+v, %v", tok, err)
		}
		if _, _, err := st.Authenticate(h1); !errors.Is(err, errNotFound) {
			t.Fatalf("Authenticate(revoked) = %v; want errNotFound", err)
		}
		if tok, err := st.DeleteTokenByHash(testActor, hb, kindTokenRevoked); err != nil || tok.ID != tb.ID {
			t.Fatalf("DeleteTokenByHash = %+v, %v", tok, err)
		}
		if _, err := st.DeleteTokenByHash(testActor, hb, kindTokenRevoked); !errors.Is(err, errNotFound) {
			t.Fatalf("DeleteTokenByHash twice = %v; want errNotFound", err)
		}
		engineToken(t, st, alice.ID, "three", nil)
		if n, err := st.RevokeTokensOf(testActor, alice.ID); n != 2 || err != nil {
			t.Fatalf("RevokeTokensOf = %d, %v; want 2", n, err)
		}
		if _, _, err := st.Authenticate(h2); !errors.Is(err, errNotFound) {
			t.Fatalf("Authenticate after RevokeTokensOf = %v; want errNotFound", err)
		}
		if _, err := st.RevokeTokensOf(testActor, bob.ID+1000); !errors.Is(err, errNotFound) {
			t.Fatalf("RevokeTokensOf(unknown) = %v; want errNotFound", err)
		}
		if _, tokens, _ := st.Totals(); tokens != 0 {
			t.Fatalf("%d tokens left; want 0", tokens)
		}
		if err := st.Check(); err != nil {
			t.Fatalf("Check: %v", err)
		}
	})
}

func TestEngineRotateToken(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		alice := engineUser(t, st, "alice", true)
		bob := engineUser(t, st, "bob", false)
		exp := engineNow.Add(time.Hour)
		old, oldHash := engineToken(t, st, alice.ID, "ci", &exp)
		newHash := tokenHash(randomHash(t))
		if _, err := st.RotateToken(testActor, old.ID, bob.ID, newHash, "wxyz", engineNow); !errors.Is(err, errNotFound) {
			t.Fatalf("RotateToken(as bob) = %v; want errNotFound", err)
		}
		if _, err := st.RotateToken(testActor, old.ID, alice.ID, newHash, "wxyz", exp); !errors.Is(err, errTokenExpired) {
			t.Fatalf("RotateToken(expired) = %v; want errTokenExpired", err)
		}
		later := engineNow.Add(time.Minute)
		got, err := st.RotateToken(testActor, old.ID, alice.ID, newHash, "wxyz", later)
		if err != nil || got.ID <= old.ID || got.Name != "ci" || !slices.Equal(got.Scopes, old.Scopes) ||
			got.ExpiresAt == nil || !got.ExpiresAt.Equal(exp) || !got.CreatedAt.Equal(later) || got.Hint != "wxyz" || got.Hash != newHash {
			t.Fatalf("RotateToken = %+v, %v", got, err)
		}
		if _, _, err := st.Authenticate(oldHash); !errors.Is(err, errNotFound) {
			t.Fatalf("Authenticate(rotated away) = %v; want errNotFound", err)
		}
		if a, _, err := st.Authenticate(newHash); err != nil || a.ID != got.ID {
			t.Fatalf("Authenticate(new) = %+v, %v", a, err)
		}
		if _, err := st.RotateToken(testActor, old.ID, anyOwner, randomHash(t), "zzzz", later); !errors.Is(err, errNotFound) {
			t.Fatalf("RotateToken(old again) = %v; want errNotFound", err)
		}
	})
}

func TestEngineSessionLifecycle(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		alice := engineUser(t, st, "alice", true)
		bob := engineUser(t, st, "bob", false)
		rec := func(user uint64, created time.Time) sessionRecord {
			return sessionRecord{User: user, CreatedAt: created, ExpiresAt: created.Add(24 * time.Hour),
				LastSeenAt: created, SignedInAt: created, Addr: "192.0.2.9", Agent: "Firefox on Linux"}
		}
		if err := st.CreateSession(testActor, randomHash(t), rec(bob.ID+1000, engineNow), nil, 3); !errors.Is(err, errNotFound) {
			t.Fatalf("CreateSession(unknown user) = %v; want errNotFound", err)
		}
		// With a cap of 3, a fourth and fifth sign-in end the oldest.
		var hs []sessionHash
		for i := range 5 {
			h := sessionHash(randomHash(t))
			if err := st.CreateSession(testActor, h, rec(alice.ID, engineNow.Add(time.Duration(i)*time.Minute)), nil, 3); err != nil {
				t.Fatalf("CreateSession %d: %v", i, err)
			}
			hs = append(hs, h)
		}
		list, err := st.SessionsOf(alice.ID)
		if err != nil || len(list) != 3 || list[0].hash != hs[4] || list[1].hash != hs[3] || list[2].hash != hs[2] {
			t.Fatalf("SessionsOf after 5 sign-ins with a cap of 3 = %d sessions, %v; want the newest 3, newest first", len(list), err)
		}
		if list[0].rec.Agent != "Firefox on Linux" || list[0].rec.Addr != "192.0.2.9" || !list[0].rec.CreatedAt.Equal(engineNow.Add(4*time.Minute)) {
			t.Fatalf("session record = %+v", list[0].rec)
		}
		// A sign-in replaces the session the browser had.
		bobOld := sessionHash(randomHash(t))
		if err := st.CreateSession(testActor, bobOld, rec(bob.ID, engineNow), nil, 0); err != nil {
			t.Fatal(err)
		}
		bobNew := sessionHash(randomHash(t))
		if err := st.CreateSession(testActor, bobNew, rec(bob.ID, engineNow.Add(time.Second)), &bobOld, 0); err != nil {
			t.Fatalf("CreateSession(replacing): %v", err)
		}
		if _, _, err := st.SessionByHash(bobOld); !errors.Is(err, errNotFound) {
			t.Fatalf("replaced session = %v; want errNotFound", err)
		}
		got, u, err := st.SessionByHash(bobNew)
		if err != nil || got.User != bob.ID || u.Name != "bob" {
			t.Fatalf("SessionByHash = %+v, %+v, %v", got, u, err)
		}
		later := engineNow.Add(10 * time.Minute)
		if err := st.TouchSession(bobNew, later, "198.51.100.1"); err != nil {
			t.Fatalf("TouchSession: %v", err)
		}
		if got, _, _ := st.SessionByHash(bobNew); !got.LastSeenAt.Equal(later) || got.Addr != "198.51.100.1" || !got.SignedInAt.Equal(engineNow.Add(time.Second)) {
			t.Fatalf("after TouchSession: %+v", got)
		}
		if err := st.ConfirmSession(bobNew, later); err != nil {
			t.Fatalf("ConfirmSession: %v", err)
		}
		if got, _, _ := st.SessionByHash(bobNew); !got.SignedInAt.Equal(later) {
			t.Fatalf("after ConfirmSession: %+v", got)
		}
		if err := st.TouchSession(bobOld, later, "x"); !errors.Is(err, errNotFound) {
			t.Fatalf("TouchSession(gone) = %v; want errNotFound", err)
		}
		if err := st.DeleteSession(testActor, bobNew, alice.ID); !errors.Is(err, errNotFound) {
			t.Fatalf("DeleteSession(bob's, as alice) = %v; want errNotFound", err)
		}
		if err := st.DeleteSession(testActor, bobNew, bob.ID); err != nil {
			t.Fatalf("DeleteSession: %v", err)
		}
		if n, err := st.EndOtherSessions(testActor, alice.ID, hs[4]); n != 2 || err != nil {
			t.Fatalf("EndOtherSessions = %d, %v; want 2", n, err)
		}

		// A password change with everything: tokens revoked, other sessions ended, the kept one confirmed.
		other := sessionHash(randomHash(t))
		if err := st.CreateSession(testActor, other, rec(alice.ID, engineNow), nil, 0); err != nil {
			t.Fatal(err)
		}
		engineToken(t, st, alice.ID, "t", nil)
		at := engineNow.Add(time.Hour)
		tokens, sessions, err := st.ChangePassword(testActor, alice.ID, passwordChange{hash: "h2", at: at, revokeTokens: true, endSessions: true, keep: hs[4]})
		if tokens != 1 || sessions != 1 || err != nil {
			t.Fatalf("ChangePassword = %d tokens, %d sessions, %v; want 1, 1", tokens, sessions, err)
		}
		if u, _ := st.UserByID(alice.ID); u.PasswordHash != "h2" || !u.PasswordChangedAt.Equal(at) {
			t.Fatalf("after ChangePassword: %+v", u)
		}
		if kept, _, err := st.SessionByHash(hs[4]); err != nil || !kept.SignedInAt.Equal(at) || !kept.LastSeenAt.Equal(at) {
			t.Fatalf("kept session = %+v, %v; want confirmed at %v", kept, err, at)
		}
		if _, _, err := st.ChangePassword(testActor, bob.ID+1000, passwordChange{hash: "x", at: at}); !errors.Is(err, errNotFound) {
			t.Fatalf("ChangePassword(unknown) = %v; want errNotFound", err)
		}

		// The purge: past the absolute expiry, or idle too long.
		idle := 2 * time.Hour
		fresh, stale, ended := sessionHash(randomHash(t)), sessionHash(randomHash(t)), sessionHash(randomHash(t))
		now := engineNow.Add(20 * time.Hour)
		r := rec(bob.ID, now.Add(-time.Hour)) // seen an hour ago
		if err := st.CreateSession(testActor, fresh, r, nil, 0); err != nil {
			t.Fatal(err)
		}
		r = rec(bob.ID, now.Add(-idle)) // idle for exactly the idle lifetime
		if err := st.CreateSession(testActor, stale, r, nil, 0); err != nil {
			t.Fatal(err)
		}
		r = rec(bob.ID, now.Add(-time.Hour))
		r.ExpiresAt = now
		if err := st.CreateSession(testActor, ended, r, nil, 0); err != nil {
			t.Fatal(err)
		}
		// Alice's kept session was last seen at engineNow+1h: 19 hours idle.
		n, err := st.PurgeSessions(context.Background(), now, idle)
		if n != 3 || err != nil {
			t.Fatalf("PurgeSessions = %d, %v; want 3 (stale, ended, alice's)", n, err)
		}
		left, _ := st.SessionsOf(bob.ID)
		if len(left) != 1 || left[0].hash != fresh {
			t.Fatalf("after the purge bob has %d sessions; want only the fresh one", len(left))
		}
		if err := st.Check(); err != nil {
			t.Fatalf("Check: %v", err)
		}
	})
}

func TestEnginePurgeExpiredInBatches(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		alice := engineUser(t, st, "alice", true)
		past, future := engineNow.Add(-time.Hour), engineNow.Add(time.Hour)
		for i := range 25 {
			engineToken(t, st, alice.ID, fmt.Sprint("old", i), &past)
		}
		_, keepHash := engineToken(t, st, alice.ID, "future", &future)
		_, neverHash := engineToken(t, st, alice.ID, "never", nil)
		_, atCutoff := engineToken(t, st, alice.ID, "at the cutoff", &engineNow)

		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if n, _, err := st.PurgeExpired(ctx, systemActor, engineNow, 10); n != 0 || err != nil {
			t.Fatalf("PurgeExpired(ended ctx) = %d, %v; want 0", n, err)
		}
		n, txs, err := st.PurgeExpired(context.Background(), systemActor, engineNow, 10)
		if n != 25 || txs != 3 || err != nil {
			t.Fatalf("PurgeExpired = %d in %d transactions, %v; want 25 in 3", n, txs, err)
		}
		for _, h := range []tokenHash{keepHash, neverHash, atCutoff} {
			if _, _, err := st.Authenticate(h); err != nil {
				t.Fatalf("a token not expired before the cutoff was purged: %v", err)
			}
		}
		if _, tokens, _ := st.Totals(); tokens != 3 {
			t.Fatalf("%d tokens left; want 3", tokens)
		}
		if err := st.Check(); err != nil {
			t.Fatalf("Check: %v", err)
		}
	})
}

func TestEngineCreateFirstAdmin(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		plain := newUser("x", "h", false, engineNow)
		if err := st.CreateFirstAdmin(testActor, &plain); err == nil {
			t.Fatal("CreateFirstAdmin(not an admin) succeeded")
		}
		first := newUser("root", "h", true, engineNow)
		if err := st.CreateFirstAdmin(testActor, &first); err != nil || first.ID == 0 {
			t.Fatalf("CreateFirstAdmin = %v (id %d)", err, first.ID)
		}
		second := newUser("other", "h", true, engineNow)
		if err := st.CreateFirstAdmin(testActor, &second); !errors.Is(err, errSetupDone) {
			t.Fatalf("CreateFirstAdmin again = %v; want errSetupDone", err)
		}
		if n, _ := st.CountUsers(); n != 1 {
			t.Fatalf("%d users; want 1", n)
		}
	})
}

// ---- PostgreSQL only: several instances on one database ----

func TestPGFirstAdminRaceMakesOne(t *testing.T) {
	a, dbURL := newTestPGStore(t)
	b := openTestPGStore(t, dbURL)
	var wg sync.WaitGroup
	var mu sync.Mutex
	made := 0
	for i := range 16 {
		st := a
		if i%2 == 1 {
			st = b
		}
		wg.Go(func() {
			u := newUser(fmt.Sprint("admin", i), "h", true, engineNow)
			switch err := st.CreateFirstAdmin(testActor, &u); {
			case err == nil:
				mu.Lock()
				made++
				mu.Unlock()
			case !errors.Is(err, errSetupDone):
				t.Errorf("CreateFirstAdmin = %v; want nil or errSetupDone", err)
			}
		})
	}
	wg.Wait()
	if n, err := a.CountUsers(); made != 1 || n != 1 || err != nil {
		t.Fatalf("16 racing setups on two instances made %d admins, %d users (%v); want exactly 1", made, n, err)
	}
}

func TestPGLastUsedMergesFromInstances(t *testing.T) {
	a, dbURL := newTestPGStore(t)
	b := openTestPGStore(t, dbURL)
	alice := engineUser(t, a, "alice", true)
	var ids []uint64
	for i := range 200 {
		tok, _ := engineToken(t, a, alice.ID, fmt.Sprint("t", i), nil)
		ids = append(ids, tok.ID)
	}
	// Both instances flush every token many times over, each at its own
	// times: every token must end with the latest time either saw.
	var wg sync.WaitGroup
	for inst, st := range []*pgStore{a, b} {
		wg.Go(func() {
			for round := range 20 {
				uses := map[uint64]lastUse{}
				for _, id := range ids {
					// Instance 0 saw rounds at even seconds, 1 at odd ones.
					at := engineNow.Add(time.Duration(2*round+inst) * time.Second)
					uses[id] = lastUse{At: at, IP: fmt.Sprint("10.0.0.", inst)}
				}
				if err := st.FlushLastUsed(uses); err != nil {
					t.Errorf("instance %d FlushLastUsed: %v", inst, err)
					return
				}
			}
		})
	}
	wg.Wait()
	// A late flush of an old time changes nothing.
	if err := a.FlushLastUsed(map[uint64]lastUse{ids[0]: {At: engineNow, IP: "10.9.9.9"}}); err != nil {
		t.Fatal(err)
	}
	want := engineNow.Add(39 * time.Second)
	toks, err := b.TokensByOwner(alice.ID)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range toks {
		if tok.LastUsedAt == nil || !tok.LastUsedAt.Equal(want) || tok.LastUsedIP != "10.0.0.1" {
			t.Fatalf("token %d last used %v from %q; want %v from 10.0.0.1", tok.ID, tok.LastUsedAt, tok.LastUsedIP, want)
		}
	}
}

func TestPGPurgeRunsOnOneInstanceAtATime(t *testing.T) {
	st, dbURL := newTestPGStore(t)
	alice := engineUser(t, st, "alice", true)
	past := engineNow.Add(-time.Hour)
	engineToken(t, st, alice.ID, "old", &past)
	sess := sessionHash(randomHash(t))
	err := st.CreateSession(testActor, sess, sessionRecord{User: alice.ID, CreatedAt: past, ExpiresAt: past, LastSeenAt: past, SignedInAt: past}, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	// Another instance is purging: it holds both locks.
	other := openTestPGStore(t, dbURL)
	conn, err := other.pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []int64{pgLockPurgeTokens, pgLockPurgeSessions} {
		if _, err := conn.Exec(context.Background(), "SELECT pg_advisory_lock($1)", key); err != nil {
			t.Fatal(err)
		}
	}
	if n, txs, err := st.PurgeExpired(context.Background(), systemActor, engineNow, 10); n != 0 || txs != 0 || err != nil {
		t.Fatalf("PurgeExpired while another instance purges = %d, %d, %v; want 0, 0, nil", n, txs, err)
	}
	if n, err := st.PurgeSessions(context.Background(), engineNow, time.Hour); n != 0 || err != nil {
		t.Fatalf("PurgeSessions while another instance purges = %d, %v; want 0, nil", n, err)
	}
	if got := pgQueryInt(t, dbURL, "SELECT count(*) FROM tokens") + pgQueryInt(t, dbURL, "SELECT count(*) FROM sessions"); got != 2 {
		t.Fatalf("%d rows left; want both untouched", got)
	}
	for _, key := range []int64{pgLockPurgeTokens, pgLockPurgeSessions} {
		if _, err := conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", key); err != nil {
			t.Fatal(err)
		}
	}
	conn.Release()
	if n, _, err := st.PurgeExpired(context.Background(), systemActor, engineNow, 10); n != 1 || err != nil {
		t.Fatalf("PurgeExpired once the lock is free = %d, %v; want 1", n, err)
	}
	if n, err := st.PurgeSessions(context.Background(), engineNow, time.Hour); n != 1 || err != nil {
		t.Fatalf("PurgeSessions once the lock is free = %d, %v; want 1", n, err)
	}
	// The lock went back: a second pass on the same store gets it again.
	if _, _, err := st.PurgeExpired(context.Background(), systemActor, engineNow, 10); err != nil {
		t.Fatal(err)
	}
	if held := pgQueryInt(t, dbURL, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"); held != 0 {
		t.Fatalf("%d advisory locks held after the purges; want 0", held)
	}
}

func TestPGMigrationsUnderConcurrentOpens(t *testing.T) {
	dbURL := newTestPG(t)
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() {
			st, err := openPGStore(context.Background(), dbURL)
			if err == nil {
				st.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("open %d of 3 at once: %v", i, err)
		}
	}
	migrations, err := pgMigrations()
	if err != nil {
		t.Fatal(err)
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM tokend_schema"); n != int64(len(migrations)) {
		t.Fatalf("tokend_schema holds %d rows; want one per migration, %d", n, len(migrations))
	}
	st := openTestPGStore(t, dbURL)
	if err := st.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

func TestPGNewerSchemaRefused(t *testing.T) {
	st, dbURL := newTestPGStore(t)
	engineUser(t, st, "alice", true)
	st.Close()
	migrations, _ := pgMigrations()
	pgExec(t, dbURL, "INSERT INTO tokend_schema (version) VALUES ($1)", len(migrations)+1)
	_, err := openPGStore(context.Background(), dbURL)
	if !errors.Is(err, errUnsupportedData) || !strings.Contains(err.Error(), fmt.Sprintf("understands %d", len(migrations))) {
		t.Fatalf("openPGStore(newer schema) = %v; want errUnsupportedData naming the version understood", err)
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM users"); n != 1 {
		t.Fatalf("refusing the database changed it: %d users", n)
	}
}

func TestPGUnreachableIsUnavailable(t *testing.T) {
	_, err := openPGStore(context.Background(), "postgres://nobody@127.0.0.1:1/tokend?connect_timeout=2")
	if !errors.Is(err, errStoreUnavailable) {
		t.Fatalf("openPGStore(nothing listening) = %v; want errStoreUnavailable", err)
	}
	_, err = openPGStore(context.Background(), "postgres://user:sekrit@[::1/x")
	if err == nil || strings.Contains(err.Error(), "sekrit") {
		t.Fatalf("openPGStore(bad URL) = %v; want an error without the password", err)
	}
}

func TestPGServerShutdownIsUnavailable(t *testing.T) {
	st, dbURL := newTestPGStore(t)
	alice := engineUser(t, st, "alice", true)
	// Every connection of the store's pool is ended by the server, as a
	// restart would: the next calls fail as unavailable, or succeed on a
	// new connection, and never with another error.
	pgExec(t, dbURL, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
	for range 3 {
		if _, err := st.UserByID(alice.ID); err != nil && !errors.Is(err, errStoreUnavailable) {
			t.Fatalf("UserByID after the server ended the connection = %v; want nil or errStoreUnavailable", err)
		}
	}
	if _, err := st.UserByID(alice.ID); err != nil {
		t.Fatalf("UserByID once reconnected: %v", err)
	}
}

// TestPGHotQueriesUseIndexes shows, with EXPLAIN on tables of realistic
// shape and fresh statistics, that no hot path reads a table from end to
// end: verification, a user's tokens, sessions and grants, a session, a
// refresh token, a grant's tokens, and the purges each go through an index.
func TestPGHotQueriesUseIndexes(t *testing.T) {
	st, dbURL := newTestPGStore(t)
	// 5,000 users; 20,000 tokens, 5% expired long ago, half the rest never
	// expiring; 20,000 sessions, 2% ended and 2% idle.
	pgExec(t, dbURL, `INSERT INTO users (name, name_key, password_hash, admin, created_at, password_changed_at)
		SELECT 'u' || i, 'u' || i, 'h', i = 1, 0, 0 FROM generate_series(1, 5000) AS i`)
	pgExec(t, dbURL, `INSERT INTO tokens (owner, hash, name, scopes, created_at, expires_at, hint)
		SELECT (SELECT min(id) FROM users) + i % 5000, sha256(('t' || i)::bytea), 't', '{tokens:read}', 0,
			CASE WHEN i % 20 = 0 THEN 1000 WHEN i % 2 = 0 THEN 9000000000000000000 END, 'abcd'
		FROM generate_series(1, 20000) AS i`)
	pgExec(t, dbURL, `INSERT INTO sessions (hash, user_id, created_at, expires_at, last_seen_at, signed_in_at, addr, agent)
		SELECT sha256(('s' || i)::bytea), (SELECT min(id) FROM users) + i % 5000, i,
			CASE WHEN i % 50 = 0 THEN 10 ELSE 9000000000000000000 END,
			CASE WHEN i % 50 = 1 THEN 10 ELSE 9000000000000000000 END, 0, '', ''
		FROM generate_series(1, 20000) AS i`)
	// 50 clients; 10,000 grants, 5% expired, each with a token and two
	// refresh tokens; 5,000 codes and 5,000 device requests, 5% expired.
	pgExec(t, dbURL, `INSERT INTO clients (id, name, name_key, redirect_uris, public, device, access_ttl, created_at, created_by)
		SELECT 'c' || i, 'c' || i, 'c' || i, '{}', false, false, 0, 0, 1 FROM generate_series(1, 50) AS i`)
	pgExec(t, dbURL, `INSERT INTO grants (client_id, user_id, scopes, created_at, expires_at)
		SELECT 'c' || i % 50 + 1, (SELECT min(id) FROM users) + i % 5000, '{tokens:read}', 0,
			CASE WHEN i % 20 = 0 THEN 1000 ELSE 9000000000000000000 END
		FROM generate_series(1, 10000) AS i`)
	pgExec(t, dbURL, `INSERT INTO tokens (owner, hash, name, scopes, created_at, expires_at, hint, grant_id, client_id)
		SELECT user_id, sha256(('g' || id)::bytea), 'g', scopes, 0, 9000000000000000000, 'abcd', id, client_id FROM grants`)
	pgExec(t, dbURL, `INSERT INTO refresh_tokens (hash, grant_id, used)
		SELECT sha256(('r' || id || '.' || n)::bytea), id, n = 1 FROM grants, generate_series(1, 2) AS n`)
	pgExec(t, dbURL, `INSERT INTO auth_codes (hash, client_id, user_id, scopes, redirect_uri, challenge, created_at, expires_at)
		SELECT sha256(('a' || i)::bytea), 'c' || i % 50 + 1, (SELECT min(id) FROM users) + i % 5000, '{}', '', '', 0,
			CASE WHEN i % 20 = 0 THEN 1000 ELSE 9000000000000000000 END
		FROM generate_series(1, 5000) AS i`)
	pgExec(t, dbURL, `INSERT INTO device_auths (hash, user_code_hash, client_id, scopes, created_at, expires_at, poll_interval, state)
		SELECT sha256(('d' || i)::bytea), sha256(('u' || i)::bytea), 'c' || i % 50 + 1, '{}', 0,
			CASE WHEN i % 20 = 0 THEN 1000 ELSE 9000000000000000000 END, 5000000000, 0
		FROM generate_series(1, 5000) AS i`)
	pgExec(t, dbURL, "ANALYZE")
	owner := pgQueryInt(t, dbURL, "SELECT min(id) + 7 FROM users")
	grants := []int64{pgQueryInt(t, dbURL, "SELECT min(id) + 7 FROM grants")}
	tokenHash := sha256Bytes("t77")
	sessHash := sha256Bytes("s77")

	for _, tc := range []struct {
		name    string
		sql     string
		args    []any
		indexes []string
	}{
		{"verification", pgSQLAuthenticate, []any{tokenHash}, []string{"tokens_hash_key", "users_pkey"}},
		{"a user's tokens", pgSQLTokensByOwner, []any{owner}, []string{"tokens_owner"}},
		{"expired tokens purge", pgSQLPurgeTokens, []any{int64(2000), purgeBatch}, []string{"tokens_expiry", "tokens_pkey"}},
		{"a session", pgSQLSessionByHash, []any{sessHash}, []string{"sessions_pkey", "users_pkey"}},
		{"a user's sessions", pgSQLSessionsOf, []any{owner}, []string{"sessions_owner"}},
		{"sessions purge", pgSQLPurgeSessions, []any{int64(100), int64(100), sessionPurgeBatch}, []string{"sessions_expiry", "sessions_last_seen", "sessions_pkey"}},
		{"a user's grants", pgSQLGrantsOf, []any{owner}, []string{"grants_user", "tokens_grant"}},
		{"a refresh token's grant", pgSQLGrantOfRefresh, []any{sha256Bytes("r77.1")}, []string{"refresh_tokens_pkey", "grants_pkey"}},
		{"a grant's tokens", pgSQLGrantTokens, []any{grants}, []string{"tokens_grant"}},
		{"expired codes purge", pgSQLPurgeCodes, []any{int64(2000), oauthPurgeBatch}, []string{"auth_codes_expiry", "auth_codes_pkey"}},
		{"expired device requests purge", pgSQLPurgeDevice, []any{int64(2000), oauthPurgeBatch}, []string{"device_auths_expiry", "device_auths_pkey"}},
		{"expired grants purge", pgSQLExpiredGrants, []any{int64(2000), oauthPurgeBatch}, []string{"grants_expiry"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rows, err := st.pool.Query(t.Context(), "EXPLAIN "+tc.sql, tc.args...)
			if err != nil {
				t.Fatalf("EXPLAIN: %v", err)
			}
			var plan strings.Builder
			for rows.Next() {
				var line string
				if err := rows.Scan(&line); err != nil {
					t.Fatal(err)
				}
				plan.WriteString(line + "\n")
			}
			if err := rows.Err(); err != nil {
				t.Fatal(err)
			}
			t.Logf("plan:\n%s", plan.String())
			if strings.Contains(plan.String(), "Seq Scan") {
				t.Errorf("the plan reads a table sequentially")
			}
			for _, idx := range tc.indexes {
				if !strings.Contains(plan.String(), idx) {
					t.Errorf("the plan does not use %s", idx)
				}
			}
		})
	}
}

func sha256Bytes(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}
