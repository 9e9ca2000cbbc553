package main

import (
	"container/list"
	"fmt"
	"hash/maphash"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"time"
)

// Sign-in throttling. Every password check (the sign-in page, HTTP Basic on
// the API, the password asked for again in sudo mode) counts against two
// leaky buckets: one for the account and one for the client address. A
// bucket holds burst attempts and forgets one every `every`; a check that
// would overflow either is refused with 429 and Retry-After, without
// hashing anything. A successful sign-in takes its own attempt back out,
// and so does a check that could not run (the hasher was busy): a refused
// request leaves no state behind, and an empty bucket is no bucket.
//
// An account that exists has its bucket under its user id: there is at
// most one per user, and nothing a client sends can evict it. A name that
// no user holds counts against one of unknownNameBuckets buckets chosen by
// a keyed hash of the name: made-up names share them, so any number of
// them fits in bounded memory without forgetting anyone's attempts. Both
// kinds answer alike, so the answers do not tell which names exist.
//
// An attacker guessing one account's password from many addresses fills
// its bucket and slows everybody's guesses for that name to one a minute,
// but cannot lock its owner out: an address from which the account signed
// in successfully in the last knownAddrFor skips the account's bucket (its
// own address bucket still applies). Only a correct password teaches an
// address, each account keeps its latest maxKnownAddrsPerUser, and all of
// them together at most maxKnownAddrs, the oldest success forgotten first:
// filling the memory never stops it learning. Nothing is permanent: a
// bucket empties on its own. signInThrottle keeps all of it in memory, for
// one instance; an engine that many instances share offers a throttle of
// its own that keeps it in the database (throttleStore, pgthrottle.go).
var (
	accountLimit = throttleRule{burst: 10, every: time.Minute}
	addrLimit    = throttleRule{burst: 30, every: 10 * time.Second}
)

const (
	knownAddrFor = 30 * 24 * time.Hour
	// maxThrottleKeys bounds the address buckets, whatever addresses an
	// attacker comes from: a new address in a full map evicts another.
	maxThrottleKeys = 1 << 16
	// unknownNameBuckets is the number of buckets names no user holds
	// share.
	unknownNameBuckets = 1 << 16
	// maxKnownAddrsPerUser and maxKnownAddrs bound the addresses remembered
	// for skipping the account bucket, per account and in all.
	maxKnownAddrsPerUser = 32
	maxKnownAddrs        = 1 << 16
)

// throttleRule is the size and leak rate of a bucket.
type throttleRule struct {
	burst float64
	every time.Duration
}

// bucket is the attempts counted against one key, as of at.
type bucket struct {
	level float64
	at    time.Time
}

// leak returns the level of b at now.
func (b bucket) leak(rule throttleRule, now time.Time) float64 {
	gone := float64(now.Sub(b.at)) / float64(rule.every)
	return math.Max(0, b.level-math.Max(0, gone))
}

// wait returns how long until one more attempt fits in b, 0 if it does now.
func (b bucket) wait(rule throttleRule, now time.Time) time.Duration {
	over := b.leak(rule, now) + 1 - rule.burst
	if over <= 0 {
		return 0
	}
	return time.Duration(over * float64(rule.every))
}

// throttler counts password attempts, as the rules above say. Every
// implementation is safe for concurrent use. An error from begin means the
// attempt could not be counted: the caller refuses it (the throttle fails
// closed). An error from abandoned or succeeded leaves the attempt counted.
type throttler interface {
	// begin counts an attempt for account a from addr at now. It returns 0
	// when the attempt may go ahead, or how long the client must wait; a
	// refused attempt is not counted.
	begin(a signInAccount, addr string, now time.Time) (time.Duration, error)
	// abandoned takes back the attempt begin counted when the password
	// could not be checked at all.
	abandoned(a signInAccount, addr string, now time.Time) error
	// succeeded takes back the attempt begin counted for user, and
	// remembers addr as a place from which user signs in.
	succeeded(user uint64, addr string, now time.Time) error
}

// throttleStore is an engine that many instances may share and that keeps
// the sign-in throttle for all of them: newServer takes its throttle from
// the engine when it offers one, so that N instances do not give an
// attacker N times the guesses.
type throttleStore interface {
	sharedThrottle() throttler
}

var _ throttler = (*signInThrottle)(nil)

// signInThrottle counts password attempts in memory, for one instance. It
// is safe for concurrent use.
type signInThrottle struct {
	mu        sync.Mutex
	users     map[uint64]bucket // by user id
	unknown   map[uint64]bucket // by unknownName
	seed      maphash.Seed
	addrs     map[string]bucket
	known     knownAddrs
	lastPrune time.Time
}

func newSignInThrottle() *signInThrottle {
	return &signInThrottle{
		users:   make(map[uint64]bucket),
		unknown: make(map[uint64]bucket),
		seed:    maphash.MakeSeed(),
		addrs:   make(map[string]bucket),
		known:   knownAddrs{byUser: make(map[uint64][]*list.Element)},
	}
}

// signInAccount is the account a password check is for: the user's id,
// or 0 and the name typed when no user holds it.
type signInAccount struct {
	user uint64
	name string
}

// accountBucket returns the map and key of the bucket of a.
func (t *signInThrottle) accountBucket(a signInAccount) (map[uint64]bucket, uint64) {
	if a.user != 0 {
		return t.users, a.user
	}
	return t.unknown, maphash.String(t.seed, strings.ToLower(a.name)) % unknownNameBuckets
}

// throttleAddr returns the key an attempt from addr counts under: the
// address, an IPv6 one by its /64, which one client usually holds whole.
func throttleAddr(addr string) string {
	if ip := net.ParseIP(addr); ip != nil && ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	return addr
}

// begin counts an attempt for account a from addr at now. It returns 0
// when the attempt may go ahead, or how long the client must wait; a
// refused attempt is not counted. Counting before the password is checked
// means that a burst of parallel guesses cannot slip past the limit.
func (t *signInThrottle) begin(a signInAccount, addr string, now time.Time) (time.Duration, error) {
	address := throttleAddr(addr)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.prune(now)
	accounts, key := t.accountBucket(a)
	known := t.known.has(a.user, address, now)
	wait := t.addrs[address].wait(addrLimit, now)
	if !known {
		wait = max(wait, accounts[key].wait(accountLimit, now))
	}
	if wait > 0 {
		return max(wait, time.Second), nil
	}
	add(t.addrs, address, addrLimit, now, 1)
	if !known {
		add(accounts, key, accountLimit, now, 1)
	}
	return 0, nil
}

// abandoned takes back the attempt begin counted when the password could
// not be checked at all (the server was busy, the client went away): it
// says nothing about the guess.
func (t *signInThrottle) abandoned(a signInAccount, addr string, now time.Time) error {
	t.takeBack(a, throttleAddr(addr), now)
	return nil
}

// succeeded takes back the attempt begin counted for user, and remembers
// addr as a place from which user signs in.
func (t *signInThrottle) succeeded(user uint64, addr string, now time.Time) error {
	address := throttleAddr(addr)
	t.takeBack(signInAccount{user: user}, address, now)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.known.learn(user, address, now)
	return nil
}

// takeBack takes one attempt out of the buckets of a and address.
func (t *signInThrottle) takeBack(a signInAccount, address string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	add(t.addrs, address, addrLimit, now, -1)
	if !t.known.has(a.user, address, now) {
		accounts, key := t.accountBucket(a)
		add(accounts, key, accountLimit, now, -1)
	}
}

// add changes the level of key in m by n at now, and forgets the bucket
// once it is empty. A new key in a map of maxThrottleKeys evicts an
// arbitrary other one: forgetting some attempts is better than growing
// without bound. Only the address map can get there: there are no more
// user ids than users, and no more unknown-name keys than
// unknownNameBuckets.
func add[K comparable](m map[K]bucket, key K, rule throttleRule, now time.Time, n float64) {
	b, ok := m[key]
	if !ok && n < 0 {
		return
	}
	level := math.Max(0, b.leak(rule, now)+n)
	if level == 0 {
		delete(m, key)
		return
	}
	if !ok && len(m) >= maxThrottleKeys {
		for k := range m {
			delete(m, k)
			break
		}
	}
	m[key] = bucket{level: level, at: now}
}

// prune forgets drained buckets and old successes, at most once a minute.
func (t *signInThrottle) prune(now time.Time) {
	if now.Sub(t.lastPrune) < time.Minute {
		return
	}
	t.lastPrune = now
	drain(t.users, accountLimit, now)
	drain(t.unknown, accountLimit, now)
	drain(t.addrs, addrLimit, now)
	t.known.forgetBefore(now.Add(-knownAddrFor))
}

// drain deletes the empty buckets of m.
func drain[K comparable](m map[K]bucket, rule throttleRule, now time.Time) {
	for k, b := range m {
		if b.leak(rule, now) == 0 {
			delete(m, k)
		}
	}
}

// knownAddrs remembers the addresses from which each account signed in,
// with the time of the latest success from each: at most
// maxKnownAddrsPerUser an account and maxKnownAddrs in all, forgetting the
// oldest success to make room. Its owner guards it.
type knownAddrs struct {
	byUser map[uint64][]*list.Element // an account's addresses, oldest success first
	order  list.List                  // every *knownAddr, latest success first
}

type knownAddr struct {
	user uint64
	addr string
	at   time.Time
}

// has reports whether user signed in from addr within knownAddrFor of now.
// User 0, a name no user holds, has no known address.
func (k *knownAddrs) has(user uint64, addr string, now time.Time) bool {
	for _, e := range k.byUser[user] {
		if ka := e.Value.(*knownAddr); ka.addr == addr {
			return now.Sub(ka.at) < knownAddrFor
		}
	}
	return false
}

// learn records a success of user from addr at now.
func (k *knownAddrs) learn(user uint64, addr string, now time.Time) {
	for _, e := range k.byUser[user] {
		if e.Value.(*knownAddr).addr == addr {
			k.remove(e)
			break
		}
	}
	if len(k.byUser[user]) >= maxKnownAddrsPerUser {
		k.remove(k.byUser[user][0])
	}
	if k.order.Len() >= maxKnownAddrs {
		k.remove(k.order.Back())
	}
	e := k.order.PushFront(&knownAddr{user: user, addr: addr, at: now})
	k.byUser[user] = append(k.byUser[user], e)
}

// forgetBefore forgets the successes at or before cutoff.
func (k *knownAddrs) forgetBefore(cutoff time.Time) {
	for e := k.order.Back(); e != nil && !e.Value.(*knownAddr).at.After(cutoff); e = k.order.Back() {
		k.remove(e)
	}
}

// remove forgets the success e.
func (k *knownAddrs) remove(e *list.Element) {
	ka := k.order.Remove(e).(*knownAddr)
	l := slices.DeleteFunc(k.byUser[ka.user], func(x *list.Element) bool { return x == e })
	if len(l) == 0 {
		delete(k.byUser, ka.user)
		return
	}
	k.byUser[ka.user] = l
}

// throttledError refuses a password check past the limits.
type throttledError struct {
	wait time.Duration
}

func (e *throttledError) Error() string {
	return "too many failed sign-ins: try again in " + waitText(e.wait)
}

// retryAfter is the Retry-After value: whole seconds, rounded up.
func (e *throttledError) retryAfter() string {
	return fmt.Sprint(int64(math.Ceil(e.wait.Seconds())))
}

// waitText says how long d is to a person: "40 seconds", "3 minutes".
func waitText(d time.Duration) string {
	if s := int(math.Ceil(d.Seconds())); s < 90 {
		return plural(s, "second")
	}
	return plural(int(math.Ceil(d.Minutes())), "minute")
}

// plural returns "1 day", "2 days".
func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}
