package main

import (
	"sync"
	"sync/atomic"
	"time"
)

// defaultAuthCacheSize bounds the auth cache: about 100 bytes an entry, so
// at most about 100 MiB, reached only when a million different tokens are
// in use.
const defaultAuthCacheSize = 1_000_000

// maxScopeSets bounds the distinct scope lists the auth cache interns; a
// token with yet another list is verified from the database instead.
const maxScopeSets = 4096

// authCache holds the auth records of tokens verified lately, keyed by
// token hash. It is exactly coherent with the database because
//
//   - every write transaction, once committed, removes the tokens it
//     deleted and increments the store's generation, both under mu;
//   - an entry read from the database is inserted, under mu, only if the
//     generation is still what it was before the read began: a write that
//     committed in between may have deleted it.
//
// It never holds unknown tokens, so guessing cannot fill it.
//
// Entries hold no pointers (scope lists are interned and referred to by
// index), so that a cache of a million tokens is one flat table that the
// garbage collector never scans and a lookup touches little memory.
type authCache struct {
	mu      sync.RWMutex
	entries map[tokenHash]authEntry
	max     int
	sets    [][]string        // interned scope lists, by index; only grows
	setIDs  map[string]uint32 // a scope list, joined by NUL, → its index
}

// authEntry is an authRecord as the cache keeps it.
type authEntry struct {
	id, owner        uint64
	created, expires int64  // Unix nanoseconds; expires 0: never
	scopes           uint32 // index into authCache.sets
}

func newAuthCache(max int) *authCache {
	return &authCache{entries: make(map[tokenHash]authEntry), max: max, setIDs: make(map[string]uint32)}
}

func (c *authCache) get(h tokenHash) (authRecord, bool) {
	c.mu.RLock()
	e, ok := c.entries[h]
	var scopes []string
	if ok {
		scopes = c.sets[e.scopes]
	}
	c.mu.RUnlock()
	if !ok {
		return authRecord{}, false
	}
	a := authRecord{ID: e.id, Owner: e.owner, CreatedAt: time.Unix(0, e.created).UTC(), Scopes: scopes}
	if e.expires != 0 {
		t := time.Unix(0, e.expires).UTC()
		a.ExpiresAt = &t
	}
	return a, true
}

// put caches a, read under generation readGen, unless gen has moved since.
func (c *authCache) put(h tokenHash, a authRecord, gen *atomic.Uint64, readGen uint64) {
	if c.max <= 0 {
		return
	}
	e := authEntry{id: a.ID, owner: a.Owner, created: a.CreatedAt.UnixNano()}
	if a.ExpiresAt != nil {
		e.expires = a.ExpiresAt.UnixNano()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen.Load() != readGen {
		return
	}
	set, ok := c.scopeSet(a.Scopes)
	if !ok {
		return
	}
	e.scopes = set
	if len(c.entries) >= c.max {
		for k := range c.entries { // map order is arbitrary: a random victim
			delete(c.entries, k)
			break
		}
	}
	c.entries[h] = e
}

// scopeSet returns the index of the interned list equal to scopes,
// interning it if need be, or false when the table is full. c.mu must be
// held for writing.
func (c *authCache) scopeSet(scopes []string) (uint32, bool) {
	var buf [256]byte // most lists fit: then only a new one allocates
	key := buf[:0]
	for i, sc := range scopes {
		if i > 0 {
			key = append(key, 0)
		}
		key = append(key, sc...)
	}
	if i, ok := c.setIDs[string(key)]; ok {
		return i, true
	}
	if len(c.sets) >= maxScopeSets {
		return 0, false
	}
	i := uint32(len(c.sets))
	c.sets = append(c.sets, append(make([]string, 0, len(scopes)), scopes...))
	c.setIDs[string(key)] = i
	return i, true
}

// committed is called once a write transaction has committed: it removes
// the tokens the transaction deleted and increments gen.
func (c *authCache) committed(gen *atomic.Uint64, deleted []tokenHash) {
	c.mu.Lock()
	defer c.mu.Unlock()
	gen.Add(1)
	for _, h := range deleted {
		delete(c.entries, h)
	}
}

// len returns the number of cached tokens.
func (c *authCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}
