package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestAuthCacheTable checks the open-addressing table against a map through
// a long random run of inserts, overwrites, deletions and evictions,
// including the hashes that share a home slot and the runs that wrap round
// the end of the table.
func TestAuthCacheTable(t *testing.T) {
	for _, max := range []int{1, 7, 700, 5000} {
		rng := rand.New(rand.NewPCG(uint64(max), 9))
		c := newAuthCache(max)
		want := map[tokenHash]authRecord{}
		var known []tokenHash
		newHash := func() tokenHash {
			var h tokenHash
			for i := range h {
				h[i] = byte(rng.Uint32())
			}
			if rng.IntN(4) == 0 {
				// Crowd a few home slots, and the table's last slots, so
				// that probe runs collide and wrap.
				h[0], h[1] = byte(rng.IntN(3)), 0xff
			}
			return h
		}
		for step := range 20_000 {
			switch op := rng.IntN(10); {
			case op < 5 || len(known) == 0: // insert a new token
				h := newHash()
				a := authRecord{ID: uint64(step + 1), Owner: uint64(rng.IntN(5) + 1),
					CreatedAt: time.Unix(0, rng.Int64()).UTC(), Scopes: []string{fmt.Sprintf("app:%d", rng.IntN(300))}}
				if rng.IntN(2) == 0 {
					e := time.Unix(0, rng.Int64N(1<<62)+1).UTC()
					a.ExpiresAt = &e
				}
				c.put(h, a, c.gen.Load())
				want[h] = a
				known = append(known, h)
			case op < 7: // overwrite a known token
				h := known[rng.IntN(len(known))]
				if _, ok := c.get(h); ok {
					a := want[h]
					a.Scopes = []string{scopeTokensRead, fmt.Sprintf("app:%d", rng.IntN(300))}
					c.put(h, a, c.gen.Load())
					want[h] = a
				}
			default: // delete some known tokens in one commit
				var deleted []tokenHash
				for range rng.IntN(4) + 1 {
					deleted = append(deleted, known[rng.IntN(len(known))])
				}
				c.tokensGone(deleted)
				for _, h := range deleted {
					delete(want, h)
				}
			}
			if step%997 == 0 || step == 19_999 {
				checkAuthCache(t, c, want, known, max)
			}
		}
	}
}

// checkAuthCache checks that every token c holds is one of want, as want
// has it, that c holds no more than max, and that the count is right.
func checkAuthCache(t *testing.T, c *authCache, want map[tokenHash]authRecord, known []tokenHash, max int) {
	t.Helper()
	held := 0
	seen := map[tokenHash]bool{}
	for _, h := range known {
		if seen[h] {
			continue
		}
		seen[h] = true
		got, ok := c.get(h)
		w, live := want[h]
		switch {
		case ok && !live:
			t.Fatalf("max %d: a deleted token is still cached", max)
		case ok:
			held++
			if got.ID != w.ID || got.Owner != w.Owner || !got.CreatedAt.Equal(w.CreatedAt) ||
				(got.ExpiresAt == nil) != (w.ExpiresAt == nil) ||
				(got.ExpiresAt != nil && !got.ExpiresAt.Equal(*w.ExpiresAt)) || !slices.Equal(got.Scopes, w.Scopes) {
				t.Fatalf("max %d: cached %+v, want %+v", max, got, w)
			}
		}
	}
	if held != c.len() || held > max {
		t.Fatalf("max %d: %d tokens found, len() says %d", max, held, c.len())
	}
	checkScopeLists(t, c)
}

// checkScopeLists checks that each scope list of c counts exactly the
// slots that name it, that the idle ring holds exactly the lists no slot
// names, and that at most maxIdleScopeLists are idle.
func checkScopeLists(t *testing.T, c *authCache) {
	t.Helper()
	c.mu.RLock()
	defer c.mu.RUnlock()
	l := &c.lists
	named := make([]int, len(l.entries))
	for _, s := range c.slots {
		if s.id != 0 {
			named[s.list()]++
		}
	}
	ring := map[uint32]bool{}
	for n := l.entries[0].next; n != 0; n = l.entries[n].next {
		if ring[n] || len(ring) > len(l.entries) {
			t.Fatalf("the idle ring loops at list %d", n)
		}
		ring[n] = true
	}
	free := map[uint32]bool{}
	for _, n := range l.free {
		free[n] = true
	}
	for n := 1; n < len(l.entries); n++ {
		e := l.entries[n]
		if free[uint32(n)] {
			if e.key != "" || e.refs != 0 || named[n] != 0 || ring[uint32(n)] {
				t.Fatalf("free number %d is in use: %+v, named by %d slots", n, e, named[n])
			}
			continue
		}
		if e.refs != named[n] {
			t.Fatalf("scope list %d %v counts %d slots; %d name it", n, e.list, e.refs, named[n])
		}
		if ring[uint32(n)] != (e.refs == 0) {
			t.Fatalf("scope list %d named by %d slots: in the idle ring %v", n, e.refs, ring[uint32(n)])
		}
		if got, ok := l.ids[e.key]; !ok || got != uint32(n) {
			t.Fatalf("scope list %d is not found by its encoding", n)
		}
	}
	if len(ring) != l.idle || l.idle > maxIdleScopeLists || len(free) != len(l.free) || len(l.ids) != len(l.entries)-1-len(free) {
		t.Fatalf("%d idle lists in the ring, %d counted (at most %d); %d encodings for %d lists, %d of them free",
			len(ring), l.idle, maxIdleScopeLists, len(l.ids), len(l.entries)-1, len(free))
	}
}

// TestOneUserCannotFillTheScopeLists plays the attack on the scope lists
// the auth cache keeps: one user creates tokens with thousands of distinct
// scope lists, uses each once so that it is cached, revokes them all, and
// does it again. Another user's token with a list never seen before must
// still be cached, and the lists of the revoked tokens must not pile up.
func TestOneUserCannotFillTheScopeLists(t *testing.T) {
	ts := newTestServer(t)
	mallory := ts.addUser("mallory", false)
	alice := ts.addUser("alice", false)
	const rounds, perRound = 6, 1000 // 6,000 lists: more than maxIdleScopeLists
	for round := range rounds {
		var secrets []string
		err := ts.store.update(func(tx *bolt.Tx) error {
			for i := range perRound {
				secret, err := ts.format.generate()
				if err != nil {
					return err
				}
				tok := tokenRecord{Owner: mallory.ID, Name: "churn", CreatedAt: ts.clock.Now(), Hint: tokenHint(secret),
					Scopes: []string{scopeTokensRead, fmt.Sprintf("app:%d", round*perRound+i)}}
				if err := putNewToken(tx, &tok, hashToken(secret)); err != nil {
					return err
				}
				secrets = append(secrets, secret)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("create round %d: %v", round, err)
		}
		for _, secret := range secrets {
			if _, err := ts.verifyToken(secret); err != nil {
				t.Fatalf("verify a token of round %d: %v", round, err)
			}
		}
		if _, err := ts.store.RevokeTokensOf(testActor, mallory.ID); err != nil {
			t.Fatalf("revoke round %d: %v", round, err)
		}
		if toks, _ := ts.store.TokensByOwner(mallory.ID); len(toks) != 0 {
			t.Fatalf("after revoking round %d mallory holds %d tokens", round, len(toks))
		}
	}
	checkScopeLists(t, ts.store.auth)
	if n := len(ts.store.auth.lists.ids); n > maxIdleScopeLists {
		t.Errorf("after the churn the auth cache keeps %d scope lists; want at most %d", n, maxIdleScopeLists)
	}

	scopes := []string{scopeTokensRead, "app:alice"}
	tok, secret := ts.addToken(alice, "ci", scopes, 0)
	for i := range 2 {
		c, err := ts.verifyToken(secret)
		if err != nil || !slices.Equal(c.token.Scopes, scopes) {
			t.Fatalf("verify alice's token (%d) = %+v, %v; want scopes %v", i, c, err, scopes)
		}
	}
	got, ok := ts.store.auth.get(tok.Hash)
	if !ok || got.ID != tok.ID || !slices.Equal(got.Scopes, scopes) {
		t.Fatalf("after the churn alice's verified token is cached: %v, %+v; want cached with scopes %v", ok, got, scopes)
	}
	// And her next verification reads nothing: with the database closed,
	// only the cache can answer.
	ts.store.db.Close()
	if _, err := ts.verifyToken(secret); err != nil {
		t.Errorf("verify alice's cached token with the database closed: %v", err)
	}
}

// TestAuthCacheRefusesStaleAndOutOfRange checks that put skips a record
// read before a commit, and records it cannot pack.
func TestAuthCacheRefusesStaleAndOutOfRange(t *testing.T) {
	c := newAuthCache(10)
	read := c.gen.Load()
	c.changed()
	c.put(tokenHash{1}, authRecord{ID: 1, Owner: 1}, read)
	c.put(tokenHash{2}, authRecord{ID: 2, Owner: 1 << 48}, c.gen.Load())
	c.put(tokenHash{3}, authRecord{ID: 3, Owner: 1<<48 - 1, Scopes: []string{}}, c.gen.Load())
	if _, ok := c.get(tokenHash{1}); ok {
		t.Error("a record read before a commit was cached")
	}
	if _, ok := c.get(tokenHash{2}); ok {
		t.Error("an owner id past 48 bits was cached")
	}
	got, ok := c.get(tokenHash{3})
	if !ok || got.Owner != 1<<48-1 || got.Scopes == nil || len(got.Scopes) != 0 {
		t.Errorf("get = %+v, %v; want owner 2^48-1 and no scopes", got, ok)
	}
	if c.len() != 1 {
		t.Errorf("len = %d, want 1", c.len())
	}
}

// TestUntrustedCacheAnswersFromTheDatabase plays an engine that can no
// longer promise to report every change (trust(false)): the cache forgets
// what it holds, keeps nothing, and every verification reads the
// database, so that a token deleted and an owner demoted behind the
// cache's back, with nothing reported, are seen at once. After
// trust(true) the cache starts empty and fills again.
func TestUntrustedCacheAnswersFromTheDatabase(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", true)
	early, earlySecret := ts.addToken(alice, "early", scopesReadWrite, 0)
	late, lateSecret := ts.addToken(alice, "late", scopesReadWrite, 0)
	verified := func(secret string) (*caller, bool) {
		t.Helper()
		c, err := ts.verifyToken(secret)
		var ae *authError
		if err != nil && (!errors.As(err, &ae) || ae.status != http.StatusUnauthorized) {
			t.Fatalf("verify = %v; want a 401 or nothing", err)
		}
		return c, err == nil
	}
	// Writes the engine does not report, as when its notifications are lost.
	behindTheBack := func(fn func(tx *bolt.Tx) error) {
		t.Helper()
		if err := ts.store.db.Update(fn); err != nil {
			t.Fatal(err)
		}
	}
	cache := ts.store.auth

	verified(earlySecret)
	if n := cache.len(); n != 1 {
		t.Fatalf("before: the cache holds %d tokens; want 1", n)
	}
	cache.trust(false)
	if n := cache.len(); n != 0 {
		t.Fatalf("trust(false): the cache still holds %d tokens", n)
	}
	// A token cached before: forgotten, so its deletion is seen.
	behindTheBack(func(tx *bolt.Tx) error { return ts.store.deleteToken(tx, &early) })
	if _, ok := verified(earlySecret); ok {
		t.Error("untrusted: a token cached before trust(false) and deleted unreported still verifies")
	}
	// A token verified while untrusted: answered, but not kept.
	if c, ok := verified(lateSecret); !ok || !c.user.Admin {
		t.Fatalf("untrusted: a live token = %v, %+v; want verified, its owner an admin", ok, c)
	}
	if n := cache.len(); n != 0 {
		t.Errorf("untrusted: the cache keeps %d tokens; want none", n)
	}
	behindTheBack(func(tx *bolt.Tx) error {
		var u userRecord
		if err := getJSON(tx.Bucket(bucketUsers), itob(alice.ID), &u); err != nil {
			return err
		}
		u.Admin = false
		return putJSON(tx.Bucket(bucketUsers), itob(alice.ID), &u)
	})
	if c, ok := verified(lateSecret); !ok || c.user.Admin {
		t.Errorf("untrusted: after an unreported demotion the owner = %v, %+v; want verified, not an admin", ok, c)
	}
	behindTheBack(func(tx *bolt.Tx) error { return ts.store.deleteToken(tx, &late) })
	if _, ok := verified(lateSecret); ok {
		t.Error("untrusted: a token verified while untrusted and then deleted unreported still verifies")
	}

	cache.trust(true)
	if n := cache.len(); n != 0 {
		t.Fatalf("trust(true): the cache holds %d tokens; want it empty", n)
	}
	_, secret := ts.addToken(alice, "after", scopesReadWrite, 0)
	verified(secret)
	if n := cache.len(); n != 1 {
		t.Errorf("trusted again: the cache holds %d tokens after a verification; want 1", n)
	}
	if _, _, err := ts.store.TokenByHash(early.Hash); !errors.Is(err, errNotFound) {
		t.Errorf("the early token in the database: %v; want errNotFound", err)
	}
	if err := ts.store.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}
}
