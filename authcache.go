package main

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// defaultAuthCacheSize bounds the auth cache: 64 to 128 bytes a token, so
// at most 128 MiB, reached only when a million different tokens are in use.
const defaultAuthCacheSize = 1_000_000

// authCache holds the auth records of tokens verified lately, keyed by
// token hash, and their owners. It sits above every engine, written once:
// an engine reads for it (authReader) and reports to it
// (invalidationSink). It is exactly coherent with the database because
//
//   - every write, once committed and before it returns, reports what it
//     changed: the cache removes the tokens it deleted and increments gen,
//     both under mu;
//   - an entry read from the database is inserted, under mu, only if the
//     generation is still what it was before the read began: a write that
//     committed in between may have deleted it;
//   - while the engine cannot promise to report every change (trust(false))
//     the cache answers nothing and holds nothing.
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
	// gen grows after every write. A cached owner is good only while gen
	// is what it was before the owner was read: any write, to anything,
	// makes the next verification read the owner afresh.
	gen   atomic.Uint64
	users sync.Map // user id → *cachedUser
	// distrusted is set by trust(false): the engine may be missing
	// changes, so nothing is answered from memory nor kept. It changes
	// under mu.
	distrusted atomic.Bool
}

type cachedUser struct {
	user userRecord // without its password hash
	gen  uint64
}

// authReader is the read an engine does for the auth cache when the cache
// cannot answer.
type authReader interface {
	// readAuth reads, in one transaction, the auth record stored under h
	// (errNotFound when there is none) and its owner without the password
	// hash. An owner that c holds under generation gen (c.cachedUser) may
	// be taken from there rather than read, and a scope list in the
	// cache's encoding may be shared through c.scopesOf; fresh reports
	// that the owner was read from the database.
	readAuth(h tokenHash, c *authCache, gen uint64) (a authRecord, u userRecord, fresh bool, err error)
}

// authenticate returns what verification needs of the token whose hash is
// h, and its owner (without the password hash). A token verified lately
// and an owner unchanged since are answered from memory; otherwise r reads
// them, and they are kept for next time unless a write committed
// meanwhile.
func (c *authCache) authenticate(h tokenHash, r authReader) (authRecord, userRecord, error) {
	gen := c.gen.Load() // before anything is read: see authCache.gen
	if a, ok := c.get(h); ok {
		if u, ok := c.cachedUser(a.Owner, gen); ok {
			return a, u, nil
		}
	}
	a, u, fresh, err := r.readAuth(h, c, gen)
	if err != nil {
		return a, u, err
	}
	if fresh {
		c.keepUser(u, gen)
	}
	c.put(h, a, gen)
	return a, u, nil
}

// cachedUser returns user id from the owner cache if it was read under
// generation gen, the one current when the caller began.
func (c *authCache) cachedUser(id, gen uint64) (userRecord, bool) {
	if c.distrusted.Load() {
		return userRecord{}, false
	}
	v, ok := c.users.Load(id)
	if !ok || v.(*cachedUser).gen != gen {
		return userRecord{}, false
	}
	return v.(*cachedUser).user, true
}

// keepUser caches u, read under generation gen. An owner kept after a
// write bumped gen is never answered: cachedUser compares generations.
func (c *authCache) keepUser(u userRecord, gen uint64) {
	if c.distrusted.Load() {
		return
	}
	u.PasswordHash = ""
	c.users.Store(u.ID, &cachedUser{user: u, gen: gen})
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
	ok = ok && !c.distrusted.Load()
	var s authSlot
	var scopes []string
	var client string
	if ok {
		s = c.slots[i]
		scopes, client = c.lists.list(s.list()), c.lists.client(s.list())
	}
	c.mu.RUnlock()
	if !ok {
		return authRecord{}, false
	}
	a := authRecord{ID: s.id, Owner: s.owner & ownerMask, CreatedAt: time.Unix(0, s.created).UTC(), Scopes: scopes, Client: client}
	if s.expires != 0 {
		t := time.Unix(0, s.expires).UTC()
		a.ExpiresAt = &t
	}
	return a, true
}

// put caches a, read under generation readGen, unless gen has moved since
// or the cache is not trusted.
func (c *authCache) put(h tokenHash, a authRecord, readGen uint64) {
	if c.max <= 0 || a.ID == 0 || a.Owner > ownerMask {
		return
	}
	s := authSlot{hash: h, id: a.ID, created: unixNano(a.CreatedAt), expires: expiryNano(a.ExpiresAt)}
	var buf [256]byte // most lists fit: then only a new one allocates
	key := appendTail(buf[:0], a.Scopes, a.Client)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen.Load() != readGen || c.distrusted.Load() {
		return
	}
	list, ok := c.lists.intern(key, a.Scopes, a.Client)
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

// tokensGone is called once a write that deleted tokens has committed,
// before the write returns: it removes them and increments gen.
func (c *authCache) tokensGone(hashes []tokenHash) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen.Add(1)
	for k := range hashes {
		if i, ok := c.find(&hashes[k]); ok {
			c.removeAt(i)
		}
	}
}

// allTokensGone forgets every token and increments gen.
func (c *authCache) allTokensGone() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen.Add(1)
	c.clear()
}

// changed is called once a write that deleted no token has committed,
// before the write returns: it increments gen.
func (c *authCache) changed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen.Add(1)
}

// trust(false) stops the cache answering or keeping anything, and
// forgets what it holds; trust(true) starts it again, empty. Either way a
// new generation begins, so that no read begun before is kept after.
func (c *authCache) trust(ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.distrusted.Store(!ok)
	c.gen.Add(1)
	c.clear()
}

// clear forgets every token and owner. c.mu must be held for writing.
func (c *authCache) clear() {
	c.slots, c.n = nil, 0
	c.lists = newScopeLists()
	c.users.Clear()
}

// len returns the number of cached tokens.
func (c *authCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.n
}

// tailOf returns the scope list and client id encoded as key (an auth
// record's tail, see appendTail). A list the cache already knows is
// shared rather than decoded afresh, and a new one is kept to be shared:
// verifying a token that is not cached then allocates nothing for its
// scopes.
func (c *authCache) tailOf(key []byte) ([]string, string, error) {
	c.mu.RLock()
	n, ok := c.lists.lookup(key)
	var scopes []string
	var client string
	if ok {
		scopes, client = c.lists.list(n), c.lists.client(n)
	}
	c.mu.RUnlock()
	if ok {
		return scopes, client, nil
	}
	scopes, client, err := decodeTail(key)
	if err != nil {
		return nil, "", err
	}
	c.mu.Lock()
	c.lists.intern(key, scopes, client)
	c.mu.Unlock()
	return scopes, client, nil
}
