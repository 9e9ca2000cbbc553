package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// forEachThrottle runs body as a subtest for every implementation of the
// sign-in throttle: the in-memory one of the bbolt engine and the one the
// PostgreSQL engine keeps in its database (skipped like every PostgreSQL
// test without TOKEND_TEST_POSTGRES). newThrottle gives it a fresh
// throttle of that kind, as many as it asks for.
func forEachThrottle(t *testing.T, body func(t *testing.T, newThrottle func(t *testing.T) throttler)) {
	t.Helper()
	t.Run("memory", func(t *testing.T) {
		body(t, func(t *testing.T) throttler { return newSignInThrottle() })
	})
	t.Run("postgres", func(t *testing.T) {
		body(t, func(t *testing.T) throttler {
			st, _ := newTestPGStore(t)
			return st.sharedThrottle()
		})
	})
}

// useThrottle makes th the server's sign-in throttle.
func (ts *testServer) useThrottle(th throttler) {
	ts.server.throttle = th
	ts.throttle, _ = th.(*signInThrottle)
}

// throttleContents describes everything th holds, one line a bucket or
// known address, in a stable order: two equal descriptions mean that
// nothing changed.
func throttleContents(t testing.TB, th throttler) string {
	t.Helper()
	var lines []string
	switch th := th.(type) {
	case *signInThrottle:
		th.mu.Lock()
		defer th.mu.Unlock()
		for id, b := range th.users {
			lines = append(lines, fmt.Sprintf("bucket u:%d %v %v", id, b.level, b.at.UnixNano()))
		}
		for n, b := range th.unknown {
			lines = append(lines, fmt.Sprintf("bucket n:%d %v %v", n, b.level, b.at.UnixNano()))
		}
		for addr, b := range th.addrs {
			lines = append(lines, fmt.Sprintf("bucket a:%s %v %v", addr, b.level, b.at.UnixNano()))
		}
		for e := th.known.order.Front(); e != nil; e = e.Next() {
			ka := e.Value.(*knownAddr)
			lines = append(lines, fmt.Sprintf("known %d %s %v", ka.user, ka.addr, ka.at.UnixNano()))
		}
	case *pgThrottle:
		ctx := context.Background()
		rows, err := th.pool.Query(ctx, `SELECT 'bucket ' || key || ' ' || empty_at FROM throttle_buckets
			UNION ALL SELECT 'known ' || user_id || ' ' || addr || ' ' || seen_at FROM throttle_known`)
		if err != nil {
			t.Fatalf("read the throttle's tables: %v", err)
		}
		for rows.Next() {
			var l string
			if err := rows.Scan(&l); err != nil {
				t.Fatalf("read the throttle's tables: %v", err)
			}
			lines = append(lines, l)
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("read the throttle's tables: %v", err)
		}
	default:
		t.Fatalf("no way known to look inside a %T", th)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// twoInstances returns a test server and the throttles of two instances
// on one fresh database, each from a store of its own.
func twoInstances(t *testing.T) (ts *testServer, a, b *pgThrottle, dbURL string) {
	t.Helper()
	st, dbURL := newTestPGStore(t)
	other := openTestPGStore(t, dbURL)
	return newTestServer(t), st.sharedThrottle().(*pgThrottle), other.sharedThrottle().(*pgThrottle), dbURL
}

// TestPGThrottleSharedByInstances checks that instances on one database
// count against the same buckets: guesses split between two instances
// throttle an account, a made-up name and an address on both as guesses
// on one would, an address known from a sign-in on one skips the account
// bucket on the other, and a refused attempt writes no row.
func TestPGThrottleSharedByInstances(t *testing.T) {
	ts, a, b, dbURL := twoInstances(t)
	alice := ts.addUser("alice", false)
	on := func(th throttler) *testServer { ts.useThrottle(th); return ts }

	checkRedirect(t, "alice signs in at home on A", on(a).loginAttempt("alice", "password-of-alice", "192.0.2.10"), "/")
	for i := range int(accountLimit.burst) {
		th := []throttler{a, b}[i%2]
		checkPage(t, fmt.Sprintf("guess %d at alice", i), on(th).loginAttempt("alice", "guess", fmt.Sprintf("198.51.100.%d", i)), http.StatusUnauthorized)
		checkPage(t, fmt.Sprintf("guess %d at mallory", i), on(th).loginAttempt("Mallory", "guess", fmt.Sprintf("198.51.100.%d", 100+i)), http.StatusUnauthorized)
	}
	rows := throttleContents(t, a)
	for _, th := range []throttler{a, b} {
		checkThrottled(t, "alice's password from a new address", on(th).loginAttempt("alice", "password-of-alice", "203.0.113.1"), 60)
		checkThrottled(t, "a guess at mallory from a new address", on(th).loginAttempt("mallory", "guess", "203.0.113.2"), 60)
	}
	if after := throttleContents(t, a); after != rows {
		t.Errorf("refused sign-ins changed the throttle's tables:\n%s\n----\n%s", rows, after)
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM throttle_buckets WHERE key IN ('a:203.0.113.1', 'a:203.0.113.2')"); n != 0 {
		t.Errorf("refused sign-ins left %d address buckets; want none", n)
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM throttle_buckets WHERE key LIKE 'n:%'"); n != 1 {
		t.Errorf("guesses at one made-up name on two instances fill %d buckets; want one", n)
	}
	// Home, learnt on A, skips the account bucket on B.
	checkRedirect(t, "alice at home on B during the attack", on(b).loginAttempt("alice", "password-of-alice", "192.0.2.10"), "/")
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM throttle_known WHERE user_id = $1 AND addr = '192.0.2.10'", int64(alice.ID)); n != 1 {
		t.Errorf("alice's home is known %d times; want once", n)
	}

	// An address's budget is shared too.
	for i := range int(addrLimit.burst) {
		th := []throttler{a, b}[i%2]
		checkPage(t, fmt.Sprintf("guess %d from one address", i), on(th).loginAttempt(fmt.Sprintf("user%d", i), "guess", "198.51.100.250"), http.StatusUnauthorized)
	}
	for _, th := range []throttler{a, b} {
		checkThrottled(t, "a guess from the busy address", on(th).loginAttempt("bob", "guess", "198.51.100.250"), 10)
	}

	// Nothing is permanent, whichever instance answers.
	ts.clock.Add(time.Duration(accountLimit.burst) * accountLimit.every)
	checkRedirect(t, "alice from a new address on B after the attack", on(b).loginAttempt("alice", "password-of-alice", "203.0.113.1"), "/")
}

// TestPGThrottleRowsAreBounded floods one instance with made-up names from
// as many addresses, half of them abandoned as a busy hasher would: names
// no user holds fill at most the shared buckets, the clean-up cuts the
// address buckets back to the fullest and later deletes the drained ones,
// the flood does not reset alice's bucket, and an account keeps only its
// latest known addresses. The bounds are small here so that a flood of a
// few thousand crosses them.
func TestPGThrottleRowsAreBounded(t *testing.T) {
	ts, th, _, dbURL := twoInstances(t)
	th.nameBuckets, th.maxAddrs = 64, 100
	ts.useThrottle(th)
	alice := ts.addUser("alice", false)
	for i := range int(accountLimit.burst) {
		checkPage(t, fmt.Sprintf("guess %d", i), ts.loginAttempt("alice", "guess", fmt.Sprintf("198.51.100.%d", i)), http.StatusUnauthorized)
	}

	now := ts.clock.Now()
	for i := range 2000 {
		junk := signInAccount{name: fmt.Sprintf("junk-%d", i)}
		addr := fmt.Sprintf("10.0.%d.%d", i>>8&255, i&255)
		wait, err := th.begin(junk, addr, now)
		if err != nil {
			t.Fatalf("begin: %v", err)
		}
		if wait == 0 && i%2 == 0 {
			if err := th.abandoned(junk, addr, now); err != nil {
				t.Fatalf("abandoned: %v", err)
			}
		}
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM throttle_buckets WHERE key LIKE 'n:%'"); n > 64 {
		t.Errorf("after the flood %d buckets of made-up names; want at most 64", n)
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM throttle_buckets WHERE key LIKE 'a:%'"); n <= 100 {
		t.Fatalf("the flood left %d address buckets; want more than the bound of 100 before the clean-up", n)
	}
	th.lastPrune = time.Time{} // the clean-up is due
	checkThrottled(t, "alice's password after the flood", ts.loginAttempt("alice", "password-of-alice", "203.0.113.99"), 60)
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM throttle_buckets WHERE key LIKE 'a:%'"); n > 100 {
		t.Errorf("after the clean-up %d address buckets; want at most 100", n)
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM throttle_buckets WHERE key = $1", fmt.Sprintf("u:%d", alice.ID)); n != 1 {
		t.Errorf("alice's bucket is gone after the flood")
	}

	// An account keeps its latest maxKnownAddrsPerUser addresses.
	for i := range maxKnownAddrsPerUser + 3 {
		if err := th.succeeded(alice.ID, fmt.Sprintf("192.0.2.%d", i), now.Add(time.Duration(i)*time.Second)); err != nil {
			t.Fatalf("succeeded: %v", err)
		}
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM throttle_known WHERE user_id = $1", int64(alice.ID)); n != maxKnownAddrsPerUser {
		t.Errorf("alice signed in from %d addresses and %d are known; want the latest %d", maxKnownAddrsPerUser+3, n, maxKnownAddrsPerUser)
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM throttle_known WHERE user_id = $1 AND addr IN ('192.0.2.0', '192.0.2.2')", int64(alice.ID)); n != 0 {
		t.Errorf("alice's oldest addresses are still known")
	}

	// Once everything has drained and gone stale, the clean-up leaves
	// only what the next attempt adds.
	later := now.Add(knownAddrFor + time.Hour)
	if _, err := th.begin(signInAccount{name: "late"}, "192.0.2.200", later); err != nil {
		t.Fatalf("begin: %v", err)
	}
	if c := throttleContents(t, th); strings.Count(c, "\n") != 1 || strings.Contains(c, "known") {
		t.Errorf("later the throttle still holds:\n%s\nwant only the latest attempt's two buckets", c)
	}
}

// TestPGThrottleFailsClosed checks that when the database cannot be
// reached the throttle refuses to count, and the sign-in is refused
// without a password check, never let through.
func TestPGThrottleFailsClosed(t *testing.T) {
	pool, err := pgxpool.New(context.Background(), "postgres://nobody@127.0.0.1:1/tokend?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	th := newPGThrottle(pool)
	ts := newTestServer(t)
	ts.addUser("alice", false)
	if wait, err := th.begin(signInAccount{user: 1}, "192.0.2.1", ts.clock.Now()); !errors.Is(err, errStoreUnavailable) || wait != 0 {
		t.Fatalf("begin with the database away = %v, %v; want errStoreUnavailable", wait, err)
	}
	if _, err := th.begin(signInAccount{name: "nobody"}, "192.0.2.1", ts.clock.Now()); !errors.Is(err, errStoreUnavailable) {
		t.Fatalf("begin for a made-up name with the database away = %v; want errStoreUnavailable", err)
	}
	ts.useThrottle(th)
	before := ts.snapshot()
	w := ts.loginAttempt("alice", "password-of-alice", "192.0.2.1")
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" || responseCookie(w, sessionCookieName) != nil {
		t.Fatalf("POST /login with the throttle's database away = %d, cookie %v; want 503 with Retry-After and no session",
			w.Code, responseCookie(w, sessionCookieName))
	}
	assertUnchanged(t, "a sign-in with the throttle's database away", before, ts.snapshot())
	if strings.Contains(ts.logs.String(), "sign-in failed") {
		t.Errorf("the password was checked although the attempt could not be counted")
	}
}

// TestPGThrottleConcurrentInstances sends 40 guesses at once at one
// account, from 40 addresses, half through each of two instances: exactly
// the account's burst goes ahead, however the checks interleave.
func TestPGThrottleConcurrentInstances(t *testing.T) {
	_, a, b, dbURL := twoInstances(t)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	results := make(chan error, 40)
	var counted atomic.Int64
	for i := range 40 {
		th := []*pgThrottle{a, b}[i%2]
		go func() {
			wait, err := th.begin(signInAccount{user: 42}, fmt.Sprintf("198.51.100.%d", i), now)
			if err == nil && wait == 0 {
				counted.Add(1)
			}
			results <- err
		}()
	}
	for range 40 {
		if err := <-results; err != nil {
			t.Fatalf("begin: %v", err)
		}
	}
	if n := counted.Load(); n != int64(accountLimit.burst) {
		t.Errorf("%d of 40 guesses at once went ahead; want the burst, %v", n, accountLimit.burst)
	}
	want := unixNano(now) + int64(accountLimit.burst)*int64(accountLimit.every)
	if got := pgQueryInt(t, dbURL, "SELECT empty_at FROM throttle_buckets WHERE key = 'u:42'"); got != want {
		t.Errorf("the account's bucket empties at %d; want %d, ten attempts from now", got, want)
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM throttle_buckets WHERE key LIKE 'a:%'"); n != int64(accountLimit.burst) {
		t.Errorf("%d address buckets; want one for each guess that went ahead, %v", n, accountLimit.burst)
	}
}

// TestPGServerSharesThrottle checks that a server over the PostgreSQL
// engine takes its sign-in throttle from the engine, and one over bbolt
// keeps its own in memory.
func TestPGServerSharesThrottle(t *testing.T) {
	st, _ := newTestPGStore(t)
	cfg := defaultConfig()
	cfg.Argon = testArgon
	s, err := newServer(st, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now)
	if err != nil {
		t.Fatalf("newServer: %v", err)
	}
	if _, ok := s.throttle.(*pgThrottle); !ok {
		t.Errorf("a server over PostgreSQL throttles with a %T; want the database's", s.throttle)
	}
	if ts := newTestServer(t); ts.throttle == nil {
		t.Errorf("a server over bbolt does not throttle in memory")
	}
}

// TestPGThrottleCheckWaitsForAnother checks that a check finds a bucket
// another check is filling, even one no row held when it began: while a
// transaction that holds the bucket's lock fills alice's new bucket, a
// check on another instance waits for it, and is then refused without
// adding to any bucket.
func TestPGThrottleCheckWaitsForAnother(t *testing.T) {
	_, a, _, dbURL := twoInstances(t)
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	full := unixNano(now) + int64(accountLimit.burst)*int64(accountLimit.every)
	ctx := context.Background()
	other, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close(ctx)
	tx, err := other.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, pgThrottleLock, []string{"u:42"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO throttle_buckets (key, empty_at) VALUES ('u:42', $1)", full); err != nil {
		t.Fatal(err)
	}
	type result struct {
		wait time.Duration
		err  error
	}
	done := make(chan result, 1)
	go func() {
		wait, err := a.begin(signInAccount{user: 42}, "198.51.100.1", now)
		done <- result{wait, err}
	}()
	waitFor(t, func() bool { return pgQueryInt(t, dbURL, "SELECT count(*) FROM pg_locks WHERE NOT granted") > 0 })
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.wait <= 0 {
		t.Fatalf("a guess at a bucket filled meanwhile = %v, %v; want it refused", r.wait, r.err)
	}
	if got := pgQueryInt(t, dbURL, "SELECT empty_at FROM throttle_buckets WHERE key = 'u:42'"); got != full {
		t.Errorf("the refused guess moved the account's bucket from %d to %d", full, got)
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM throttle_buckets WHERE key LIKE 'a:%'"); n != 0 {
		t.Errorf("the refused guess left %d address buckets", n)
	}
}
