package main

import (
	"sync"
	"sync/atomic"
)

// defaultAuthCacheSize bounds the auth cache: about 200 bytes an entry.
const defaultAuthCacheSize = 100_000

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
type authCache struct {
	mu      sync.RWMutex
	entries map[tokenHash]authRecord
	max     int
}

func newAuthCache(max int) *authCache {
	return &authCache{entries: make(map[tokenHash]authRecord), max: max}
}

func (c *authCache) get(h tokenHash) (authRecord, bool) {
	c.mu.RLock()
	a, ok := c.entries[h]
	c.mu.RUnlock()
	return a, ok
}

// put caches a, read under generation readGen, unless gen has moved since.
func (c *authCache) put(h tokenHash, a authRecord, gen *atomic.Uint64, readGen uint64) {
	if c.max <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen.Load() != readGen {
		return
	}
	if len(c.entries) >= c.max {
		for k := range c.entries { // map order is arbitrary: a random victim
			delete(c.entries, k)
			break
		}
	}
	c.entries[h] = a
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
