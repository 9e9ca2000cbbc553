package main

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// defaultAuthCacheSize bounds the auth cache: 64 to 128 bytes a token, so
// at most 128 MiB, reached only when a million different tokens are in use.
const defaultAuthCacheSize = 1_000_000

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
// The cache is one open-addressing table of 64-byte slots, a cache line
// each, found by linear probing from the slot the hash's first bytes name.
// A lookup among a million tokens then costs one random memory access where
// a Go map costs two or three, and the table holds no pointers, so the
// garbage collector never scans it. A slot names its scope list by its
// number in lists, which counts the slots naming each list.
type authCache struct {
	mu    sync.RWMutex
	slots []authSlot // a power of two long, at most 3/4 full; nil until the first put
	n     int        // occupied slots
	max   int
	lists scopeLists
}

// authSlot is an authRecord as the cache keeps it.
type authSlot struct {
	hash             tokenHash
	id               uint64 // 0: the slot is empty (token ids start at 1)
	owner            uint64 // the owner's id in the low 48 bits, the scope list's number above
	created, expires int64  // Unix nanoseconds; expires 0: never
}

// list returns the number of the slot's scope list.
func (s *authSlot) list() uint32 { return uint32(s.owner >> ownerBits) }

const (
	ownerBits     = 48
	ownerMask     = 1<<ownerBits - 1
	minCacheSlots = 1024
)

func newAuthCache(max int) *authCache {
	return &authCache{max: max, lists: newScopeLists()}
}

// home returns the slot where the search for h starts. Token hashes are
// SHA-256 digests of random secrets, and only the server's own tokens are
// ever inserted, so their first bytes spread evenly.
func (c *authCache) home(h *tokenHash) int {
	return int(binary.LittleEndian.Uint64(h[:8]) & uint64(len(c.slots)-1))
}

// find returns the slot holding h, or the empty slot where the search for
// it ended and false.
func (c *authCache) find(h *tokenHash) (int, bool) {
	if len(c.slots) == 0 {
		return 0, false
	}
	mask := len(c.slots) - 1
	for i := c.home(h); ; i = (i + 1) & mask {
		s := &c.slots[i]
		if s.id == 0 {
			return i, false
		}
		if s.hash == *h {
			return i, true
		}
	}
}

func (c *authCache) get(h tokenHash) (authRecord, bool) {
	c.mu.RLock()
	i, ok := c.find(&h)
	var s authSlot
	var scopes []string
	if ok {
		s = c.slots[i]
		scopes = c.lists.list(s.list())
	}
	c.mu.RUnlock()
	if !ok {
		return authRecord{}, false
	}
	a := authRecord{ID: s.id, Owner: s.owner & ownerMask, CreatedAt: time.Unix(0, s.created).UTC(), Scopes: scopes}
	if s.expires != 0 {
		t := time.Unix(0, s.expires).UTC()
		a.ExpiresAt = &t
	}
	return a, true
}

// put caches a, read under generation readGen, unless gen has moved since.
func (c *authCache) put(h tokenHash, a authRecord, gen *atomic.Uint64, readGen uint64) {
	if c.max <= 0 || a.ID == 0 || a.Owner > ownerMask {
		return
	}
	s := authSlot{hash: h, id: a.ID, created: unixNano(a.CreatedAt), expires: expiryNano(a.ExpiresAt)}
	var buf [256]byte // most lists fit: then only a new one allocates
	key := appendScopes(buf[:0], a.Scopes)
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen.Load() != readGen {
		return
	}
	list, ok := c.lists.intern(key, a.Scopes)
	if !ok {
		return
	}
	s.owner = a.Owner | uint64(list)<<ownerBits
	c.lists.hold(list)
	if i, ok := c.find(&h); ok {
		c.lists.release(c.slots[i].list())
		c.slots[i] = s
		return
	}
	if c.n >= c.max {
		c.evictOne()
	}
	if (c.n+1)*4 > len(c.slots)*3 {
		c.resize(max(minCacheSlots, 2*len(c.slots)))
	}
	i, _ := c.find(&h)
	c.slots[i] = s
	c.n++
}

// evictOne removes a token chosen at random. c.mu must be held for writing
// and the table must not be empty.
func (c *authCache) evictOne() {
	mask := len(c.slots) - 1
	i := rand.IntN(len(c.slots))
	for c.slots[i].id == 0 {
		i = (i + 1) & mask
	}
	c.removeAt(i)
}

// resize moves every entry into a new table of n slots.
func (c *authCache) resize(n int) {
	old := c.slots
	c.slots = make([]authSlot, n)
	for k := range old {
		if old[k].id != 0 {
			i, _ := c.find(&old[k].hash)
			c.slots[i] = old[k]
		}
	}
}

// removeAt empties slot i and shifts back the entries after it that would
// otherwise no longer be found: linear probing's deletion, which leaves no
// tombstones behind.
func (c *authCache) removeAt(i int) {
	mask := len(c.slots) - 1
	c.n--
	c.lists.release(c.slots[i].list())
	for j := i; ; {
		c.slots[i] = authSlot{}
		for {
			j = (j + 1) & mask
			if c.slots[j].id == 0 {
				return
			}
			// The entry at j moves back to i unless its home lies in
			// (i, j], counting round the end of the table.
			h := c.home(&c.slots[j].hash)
			if (j > i && (h <= i || h > j)) || (j < i && h <= i && h > j) {
				break
			}
		}
		c.slots[i] = c.slots[j]
		i = j
	}
}

// committed is called once a write transaction has committed: it removes
// the tokens the transaction deleted and increments gen.
func (c *authCache) committed(gen *atomic.Uint64, deleted []tokenHash) {
	c.mu.Lock()
	defer c.mu.Unlock()
	gen.Add(1)
	for k := range deleted {
		if i, ok := c.find(&deleted[k]); ok {
			c.removeAt(i)
		}
	}
}

// len returns the number of cached tokens.
func (c *authCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.n
}

// authByHash is the package's authByHash, but a scope list the cache
// already knows is shared rather than decoded afresh, and a new one is
// kept to be shared: verifying a token that is not cached then allocates
// nothing for its scopes.
func (c *authCache) authByHash(tx *bolt.Tx, h tokenHash) (authRecord, error) {
	var a authRecord
	v := tx.Bucket(bucketTokensByHash).Get(h[:])
	if v == nil {
		return a, errNotFound
	}
	if err := a.unmarshalHead(v); err != nil {
		return a, err
	}
	key := v[authRecordHead:]
	c.mu.RLock()
	n, ok := c.lists.lookup(key)
	if ok {
		a.Scopes = c.lists.list(n)
	}
	c.mu.RUnlock()
	if ok {
		return a, nil
	}
	scopes, err := decodeScopes(key)
	if err != nil {
		return a, err
	}
	a.Scopes = scopes
	c.mu.Lock()
	c.lists.intern(key, scopes)
	c.mu.Unlock()
	return a, nil
}
