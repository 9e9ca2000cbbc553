package main

import (
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"
)

// TestAuthCacheTable checks the open-addressing table against a map through
// a long random run of inserts, overwrites, deletions and evictions,
// including the hashes that share a home slot and the runs that wrap round
// the end of the table.
func TestAuthCacheTable(t *testing.T) {
	for _, max := range []int{1, 7, 700, 5000} {
		rng := rand.New(rand.NewPCG(uint64(max), 9))
		c := newAuthCache(max)
		var gen atomic.Uint64
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
					CreatedAt: time.Unix(0, rng.Int64()).UTC(), Scopes: []string{scopeTokensRead}}
				if rng.IntN(2) == 0 {
					e := time.Unix(0, rng.Int64N(1<<62)+1).UTC()
					a.ExpiresAt = &e
				}
				c.put(h, a, &gen, gen.Load())
				want[h] = a
				known = append(known, h)
			case op < 7: // overwrite a known token
				h := known[rng.IntN(len(known))]
				if _, ok := c.get(h); ok {
					a := want[h]
					a.Scopes = []string{scopeTokensRead, scopeTokensWrite}
					c.put(h, a, &gen, gen.Load())
					want[h] = a
				}
			default: // delete some known tokens in one commit
				var deleted []tokenHash
				for range rng.IntN(4) + 1 {
					deleted = append(deleted, known[rng.IntN(len(known))])
				}
				c.committed(&gen, deleted)
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
				(got.ExpiresAt != nil && !got.ExpiresAt.Equal(*w.ExpiresAt)) ||
				len(got.Scopes) != len(w.Scopes) || got.Scopes[0] != w.Scopes[0] {
				t.Fatalf("max %d: cached %+v, want %+v", max, got, w)
			}
		}
	}
	if held != c.len() || held > max {
		t.Fatalf("max %d: %d tokens found, len() says %d", max, held, c.len())
	}
}

// TestAuthCacheRefusesStaleAndOutOfRange checks that put skips a record
// read before a commit, and records it cannot pack.
func TestAuthCacheRefusesStaleAndOutOfRange(t *testing.T) {
	c := newAuthCache(10)
	var gen atomic.Uint64
	read := gen.Load()
	c.committed(&gen, nil)
	c.put(tokenHash{1}, authRecord{ID: 1, Owner: 1}, &gen, read)
	c.put(tokenHash{2}, authRecord{ID: 2, Owner: 1 << 48}, &gen, gen.Load())
	c.put(tokenHash{3}, authRecord{ID: 3, Owner: 1<<48 - 1, Scopes: []string{}}, &gen, gen.Load())
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
