package main

import (
	"fmt"
	"math"
	"net"
	"strings"
	"sync"
	"time"
)

// Sign-in throttling. Every password check (the sign-in page, HTTP Basic on
// the API, the password asked for again in sudo mode) counts against two
// leaky buckets: one for the account name and one for the client address.
// A bucket holds burst attempts and forgets one every `every`; a check that
// would overflow either is refused with 429 and Retry-After, without
// hashing anything. A successful sign-in takes its own attempt back out.
//
// An attacker guessing one account's password from many addresses fills
// its bucket and slows everybody's guesses for that name to one a minute,
// but cannot lock its owner out: an address from which the account signed
// in successfully in the last knownAddrFor skips the account's bucket (its
// own address bucket still applies). Nothing is permanent: a bucket empties
// on its own, and all of it lives in memory.
var (
	accountLimit = throttleRule{burst: 10, every: time.Minute}
	addrLimit    = throttleRule{burst: 30, every: 10 * time.Second}
)

const (
	knownAddrFor = 30 * 24 * time.Hour
	// maxThrottleKeys bounds the memory of each map below, whatever
	// names and addresses an attacker makes up.
	maxThrottleKeys = 1 << 16
	// maxThrottleName bounds the bytes kept of an account name.
	maxThrottleName = 64
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

// signInThrottle counts password attempts. It is safe for concurrent use.
type signInThrottle struct {
	mu        sync.Mutex
	accounts  map[string]bucket
	addrs     map[string]bucket
	known     map[string]time.Time // account + "\x00" + address → last success
	lastPrune time.Time
}

func newSignInThrottle() *signInThrottle {
	return &signInThrottle{
		accounts: make(map[string]bucket),
		addrs:    make(map[string]bucket),
		known:    make(map[string]time.Time),
	}
}

// throttleKeys returns the keys an attempt for name from addr counts
// under: the lower-cased name, and the address (an IPv6 address by its
// /64, which one client usually holds whole).
func throttleKeys(name, addr string) (account, address string) {
	account = truncate(strings.ToLower(name), maxThrottleName)
	address = addr
	if ip := net.ParseIP(addr); ip != nil && ip.To4() == nil {
		address = ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	return account, address
}

// begin counts an attempt for name from addr at now. It returns 0 when the
// attempt may go ahead, or how long the client must wait; a refused
// attempt is not counted. Counting before the password is checked means
// that a burst of parallel guesses cannot slip past the limit.
func (t *signInThrottle) begin(name, addr string, now time.Time) time.Duration {
	account, address := throttleKeys(name, addr)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.prune(now)
	known := now.Sub(t.known[account+"\x00"+address]) < knownAddrFor
	wait := t.addrs[address].wait(addrLimit, now)
	if !known {
		wait = max(wait, t.accounts[account].wait(accountLimit, now))
	}
	if wait > 0 {
		return max(wait, time.Second)
	}
	add(t.addrs, address, addrLimit, now, 1)
	if !known {
		add(t.accounts, account, accountLimit, now, 1)
	}
	return 0
}

// abandoned takes back the attempt begin counted when the password could
// not be checked at all (the server was busy, the client went away): it
// says nothing about the guess.
func (t *signInThrottle) abandoned(name, addr string, now time.Time) {
	account, address := throttleKeys(name, addr)
	t.mu.Lock()
	defer t.mu.Unlock()
	add(t.addrs, address, addrLimit, now, -1)
	if now.Sub(t.known[account+"\x00"+address]) >= knownAddrFor {
		add(t.accounts, account, accountLimit, now, -1)
	}
}

// succeeded takes back the attempt begin counted, and remembers addr as a
// place from which name signs in.
func (t *signInThrottle) succeeded(name, addr string, now time.Time) {
	account, address := throttleKeys(name, addr)
	t.mu.Lock()
	defer t.mu.Unlock()
	pair := account + "\x00" + address
	add(t.addrs, address, addrLimit, now, -1)
	if now.Sub(t.known[pair]) >= knownAddrFor {
		add(t.accounts, account, accountLimit, now, -1)
	}
	if _, ok := t.known[pair]; ok || len(t.known) < maxThrottleKeys {
		t.known[pair] = now
	}
}

// add changes the level of key in m by n at now. A new key in a full map
// evicts an arbitrary other one: forgetting some attempts is better than
// growing without bound.
func add(m map[string]bucket, key string, rule throttleRule, now time.Time, n float64) {
	b, ok := m[key]
	if !ok && n < 0 {
		return
	}
	if !ok && len(m) >= maxThrottleKeys {
		for k := range m {
			delete(m, k)
			break
		}
	}
	m[key] = bucket{level: math.Max(0, b.leak(rule, now)+n), at: now}
}

// prune forgets empty buckets and old successes, at most once a minute.
func (t *signInThrottle) prune(now time.Time) {
	if now.Sub(t.lastPrune) < time.Minute {
		return
	}
	t.lastPrune = now
	for k, b := range t.accounts {
		if b.leak(accountLimit, now) == 0 {
			delete(t.accounts, k)
		}
	}
	for k, b := range t.addrs {
		if b.leak(addrLimit, now) == 0 {
			delete(t.addrs, k)
		}
	}
	for k, at := range t.known {
		if now.Sub(at) >= knownAddrFor {
			delete(t.known, k)
		}
	}
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
