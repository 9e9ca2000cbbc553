package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The figures of the PostgreSQL engine, side by side with bbolt's in one
// run: /auth with a cached token over real HTTP, uncached verification,
// revocation across three instances, and 64 concurrent creators. Each
// skips without TOKEND_TEST_POSTGRES (newTestPG), runs quickly at
// -benchtime 1x, and takes its sample count from b.N: BENCHMARKS.md gives
// the -benchtime of its figures.

// quietLog discards everything below a warning.
func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// benchPGStore opens the database at dbURL with its notification listener
// feeding sink (its own auth cache when nil), and waits until its cache
// trusts the channel, as a server's does once it has started.
func benchPGStore(b *testing.B, dbURL string, sink invalidationSink) *pgStore {
	b.Helper()
	st := openTestPGStore(b, dbURL)
	if sink == nil {
		sink = st.auth
	}
	if err := st.startInvalidations(sink, quietLog()); err != nil {
		b.Fatalf("startInvalidations: %v", err)
	}
	for start := time.Now(); st.auth.distrusted.Load(); time.Sleep(5 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			b.Fatal("the auth cache did not come to trust the notification channel within 10s")
		}
	}
	return st
}

// benchEngine is one engine's store for the benchmarks that compare them.
type benchEngine struct {
	name string
	st   store
}

// benchEngines opens a fresh bbolt store and a fresh PostgreSQL store (with
// its listener up), or skips without TOKEND_TEST_POSTGRES.
func benchEngines(b *testing.B) []benchEngine {
	b.Helper()
	dbURL := newTestPG(b)
	bolt, _ := newTestDB(b)
	return []benchEngine{{"bbolt", bolt}, {"postgres", benchPGStore(b, dbURL, nil)}}
}

// createTokens stores n tokens for owner through st.CreateToken, 32 at a
// time, and returns their secrets.
func createTokens(b *testing.B, st store, owner uint64, n int) []string {
	b.Helper()
	f := mustFormat(b, defaultTokenPrefix)
	secrets := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				secret, err := f.generate()
				if err != nil {
					b.Error(err)
					return
				}
				t := tokenRecord{Owner: owner, Name: "bench " + strconv.Itoa(i), Scopes: []string{scopeTokensRead},
					CreatedAt: time.Now(), Hint: tokenHint(secret)}
				if err := st.CreateToken(testActor, &t, hashToken(secret), 0); err != nil {
					b.Errorf("CreateToken: %v", err)
					return
				}
				secrets[i] = secret
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
	return secrets
}

// percentileMicros returns the p-th quantile (0 to 1) of sorted, in µs.
func percentileMicros(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return float64(sorted[int(p*float64(len(sorted)-1))].Nanoseconds()) / 1e3
}

// BenchmarkAuthCachedEngines serves GET /auth from a server built with
// newServer over each engine, on a loopback listener, and drives both
// with 64 parallel clients over keep-alive connections, each request
// carrying one of 1,000 tokens that every server has verified once (so
// that they sit in its auth cache). The engines take turns over 10 rounds
// of b.N/10 requests each; it reports each engine's rate (requests over
// the time of its rounds), postgres/bbolt, which should be near 1, and
// pg-queries, the connections PostgreSQL's pool handed out meanwhile,
// which must be 0: the hot path never touches the database.
func BenchmarkAuthCachedEngines(b *testing.B) {
	const clients, tokens, rounds = 64, 1000, 10
	type target struct {
		name    string
		url     string
		secrets []string
		srv     *server
		st      store
		cache   *authCache
		elapsed time.Duration
		sent    int
	}
	var targets []*target
	for _, e := range benchEngines(b) {
		cfg := defaultConfig()
		srv, err := newServer(e.st, cfg, quietLog(), time.Now)
		if err != nil {
			b.Fatal(err)
		}
		u := storeUser(b, e.st, "alice", false)
		secrets := createTokens(b, e.st, u.ID, tokens)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		hs := &http.Server{Handler: srv.routes()}
		go hs.Serve(ln)
		b.Cleanup(func() { hs.Close() })
		targets = append(targets, &target{name: e.name, url: "http://" + ln.Addr().String() + "/auth", secrets: secrets, srv: srv, st: e.st, cache: authCacheOf(b, e.st)})
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: clients}}
	b.Cleanup(client.CloseIdleConnections)

	// drive sends n requests to t from the clients, and fails the
	// benchmark unless every one is answered 204.
	drive := func(t *target, n int) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for c := range clients {
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(c), 7))
				req, _ := http.NewRequest("GET", t.url, nil)
				for next.Add(1) <= int64(n) {
					req.Header.Set("Authorization", "Bearer "+t.secrets[rng.IntN(len(t.secrets))])
					resp, err := client.Do(req)
					if err != nil {
						b.Errorf("GET %s: %v", t.url, err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusNoContent {
						b.Errorf("%s: GET /auth = %d; want 204", t.name, resp.StatusCode)
						return
					}
				}
			})
		}
		wg.Wait()
		if b.Failed() {
			b.FailNow()
		}
	}
	// Every token verified once, so that all are cached, and a round of
	// requests so that every client has its connection.
	for _, t := range targets {
		for _, s := range t.secrets {
			if _, err := t.srv.verifyToken(s); err != nil {
				b.Fatalf("%s: verify: %v", t.name, err)
			}
		}
		drive(t, len(t.secrets))
	}
	for _, t := range targets {
		if n := t.cache.len(); n < tokens {
			b.Fatalf("%s: the auth cache holds %d tokens after warming; want %d", t.name, n, tokens)
		}
	}

	var pg *pgStore
	for _, t := range targets {
		if st, ok := t.st.(*pgStore); ok {
			pg = st
		}
	}
	acquired := func() int64 { return pg.pool.Stat().AcquireCount() }
	before := acquired()
	b.ResetTimer()
	per := max(b.N/rounds, 1)
	for r := range rounds {
		for i := range targets {
			t := targets[(i+r)%len(targets)] // who goes first alternates
			start := time.Now()
			drive(t, per)
			t.elapsed += time.Since(start)
			t.sent += per
		}
	}
	b.StopTimer()
	rate := map[string]float64{}
	for _, t := range targets {
		rate[t.name] = float64(t.sent) / t.elapsed.Seconds()
		b.ReportMetric(rate[t.name], t.name+"-req/s")
	}
	b.ReportMetric(rate["postgres"]/rate["bbolt"], "pg/bbolt")
	// The hot path never touches the database: no connection was taken
	// from the pool (the listener has connections of its own).
	b.ReportMetric(float64(acquired()-before), "pg-queries")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkVerifyUncachedEngines times store.Authenticate for tokens that
// are not in the auth cache (the cache is off: every call reads the
// database), over 1,000 tokens in a random order, one caller and then 16
// at once, on each engine. It reports the p50 and p99 latency of one
// call; on PostgreSQL that is one indexed query over a Unix socket.
func BenchmarkVerifyUncachedEngines(b *testing.B) {
	const tokens = 1000
	for _, e := range benchEngines(b) {
		u := storeUser(b, e.st, "alice", false)
		secrets := createTokens(b, e.st, u.ID, tokens)
		f := mustFormat(b, defaultTokenPrefix)
		hashes := make([]tokenHash, len(secrets))
		for i, s := range secrets {
			var err error
			if hashes[i], err = f.parse(s); err != nil {
				b.Fatal(err)
			}
		}
		// The cache off, as in BenchmarkVerify's random-uncached.
		switch st := e.st.(type) {
		case *boltStore:
			st.auth = newAuthCache(0)
		case *pgStore:
			st.auth = newAuthCache(0)
		}
		for _, callers := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/callers=%d", e.name, callers), func(b *testing.B) {
				lat := make([]time.Duration, b.N)
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				for c := range callers {
					wg.Go(func() {
						rng := rand.New(rand.NewPCG(uint64(c), 11))
						for i := next.Add(1) - 1; i < int64(b.N); i = next.Add(1) - 1 {
							h := hashes[rng.IntN(len(hashes))]
							start := time.Now()
							a, _, err := e.st.Authenticate(h)
							lat[i] = time.Since(start)
							if err != nil || a.Owner != u.ID {
								b.Errorf("Authenticate = owner %d, %v; want %d", a.Owner, err, u.ID)
								return
							}
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				slices.Sort(lat)
				b.ReportMetric(percentileMicros(lat, 0.5), "p50-µs")
				b.ReportMetric(percentileMicros(lat, 0.99), "p99-µs")
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "verifies/s")
			})
		}
	}
}

// revocationWatch is the sink of one instance's notification listener:
// it passes everything on to the instance's auth cache and notes when the
// token it waits for is named as gone.
type revocationWatch struct {
	invalidationSink
	mu   sync.Mutex
	want tokenHash
	seen chan time.Time // one send when want is gone
}

// await makes the watch look out for h, and returns the channel that
// hears when h is gone.
func (w *revocationWatch) await(h tokenHash) <-chan time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.want, w.seen = h, make(chan time.Time, 1)
	return w.seen
}

func (w *revocationWatch) tokensGone(hashes []tokenHash) {
	w.invalidationSink.tokensGone(hashes) // the cache first: then it is refused
	at := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seen != nil && slices.Contains(hashes, w.want) {
		w.seen <- at
		w.seen = nil
	}
}

func (w *revocationWatch) allTokensGone() {
	w.invalidationSink.allTokensGone()
	at := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seen != nil {
		w.seen <- at
		w.seen = nil
	}
}

// BenchmarkPGRevocationPropagation runs three instances (three pgStores,
// each with its own pool, listener and auth cache) on one database. Each
// of b.N times, a token is created on one instance, verified on all three
// (so that every cache holds it), and revoked on the next instance in
// turn; it measures the time from the start of the revoking call until
// the other two instances' caches have dropped the token, as their
// listeners hear the notification, and checks that all three then refuse
// it. It reports the p50, p99 and worst time over the revocations.
func BenchmarkPGRevocationPropagation(b *testing.B) {
	dbURL := newTestPG(b)
	const instances = 3
	var sts [instances]*pgStore
	var watches [instances]*revocationWatch
	for i := range instances {
		st := openTestPGStore(b, dbURL)
		watches[i] = &revocationWatch{invalidationSink: st.auth}
		if err := st.startInvalidations(watches[i], quietLog()); err != nil {
			b.Fatalf("startInvalidations: %v", err)
		}
		sts[i] = st
	}
	for _, st := range sts {
		for start := time.Now(); st.auth.distrusted.Load(); time.Sleep(5 * time.Millisecond) {
			if time.Since(start) > 10*time.Second {
				b.Fatal("an instance's auth cache did not come to trust the notification channel within 10s")
			}
		}
	}
	u := storeUser(b, sts[0], "alice", false)
	f := mustFormat(b, defaultTokenPrefix)

	b.Run("3-instances", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		var total time.Duration
		for i := range b.N {
			b.StopTimer()
			maker, revoker := sts[i%instances], i%instances
			secret, err := f.generate()
			if err != nil {
				b.Fatal(err)
			}
			h := hashToken(secret)
			t := tokenRecord{Owner: u.ID, Name: "revoked", CreatedAt: time.Now(), Hint: tokenHint(secret)}
			if err := maker.CreateToken(testActor, &t, h, 0); err != nil {
				b.Fatal(err)
			}
			var seen []<-chan time.Time
			for j, st := range sts {
				if _, _, err := st.Authenticate(h); err != nil {
					b.Fatalf("instance %d: Authenticate a new token: %v", j, err)
				}
				if _, ok := st.auth.get(h); !ok {
					b.Fatalf("instance %d: the token is not in the auth cache after verifying it", j)
				}
				if j != revoker {
					seen = append(seen, watches[j].await(h))
				}
			}
			b.StartTimer()
			start := time.Now()
			if _, err := sts[revoker].DeleteTokenByHash(testActor, h, kindTokenRevoked); err != nil {
				b.Fatalf("DeleteTokenByHash: %v", err)
			}
			var last time.Time
			for _, ch := range seen {
				select {
				case at := <-ch:
					if at.After(last) {
						last = at
					}
				case <-time.After(10 * time.Second):
					b.Fatal("an instance did not hear of a revocation within 10s")
				}
			}
			b.StopTimer()
			lat = append(lat, last.Sub(start))
			total += last.Sub(start)
			for j, st := range sts {
				if _, _, err := st.Authenticate(h); !errors.Is(err, errNotFound) {
					b.Fatalf("instance %d: Authenticate a revoked token = %v; want errNotFound", j, err)
				}
			}
		}
		slices.Sort(lat)
		b.ReportMetric(percentileMicros(lat, 0.5)/1e3, "p50-ms")
		b.ReportMetric(percentileMicros(lat, 0.99)/1e3, "p99-ms")
		b.ReportMetric(percentileMicros(lat, 1)/1e3, "max-ms")
		b.ReportMetric(float64(total.Nanoseconds())/float64(b.N), "ns/op")
	})
}

// BenchmarkCreateEngines has 64 writers create tokens through
// store.CreateToken at once (spread over 64 owners, no per-user limit),
// each call returning after its durable commit, on each engine: bbolt
// syncs every commit, and PostgreSQL must run with synchronous_commit on,
// which it checks. It reports creates/s.
func BenchmarkCreateEngines(b *testing.B) {
	const writers = 64
	dbURL := newTestPG(b)
	bolt, _ := newTestDB(b)
	pg := benchPGStore(b, dbURL, nil)
	engines := []benchEngine{{"bbolt", bolt}, {"postgres", pg}}
	// The same with a pool of a connection per writer, on a database of
	// its own (the URL's query holds the host at least).
	if wide, err := url.Parse(newTestPG(b)); err == nil {
		q := wide.Query()
		q.Set("pool_max_conns", strconv.Itoa(writers))
		wide.RawQuery = q.Encode()
		engines = append(engines, benchEngine{"postgres-pool64", benchPGStore(b, wide.String(), nil)})
	} else {
		b.Fatal(err)
	}
	var syncCommit string
	if err := pg.pool.QueryRow(context.Background(), "SHOW synchronous_commit").Scan(&syncCommit); err != nil {
		b.Fatal(err)
	}
	if syncCommit != "on" {
		b.Fatalf("synchronous_commit is %q; the figure is for durable commits (on)", syncCommit)
	}
	f := mustFormat(b, defaultTokenPrefix)
	for _, e := range engines {
		var owners []uint64
		for i := range writers {
			owners = append(owners, storeUser(b, e.st, "user"+strconv.Itoa(i), false).ID)
		}
		b.Run(e.name, func(b *testing.B) {
			var next atomic.Int64
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					for next.Add(1) <= int64(b.N) {
						secret, err := f.generate()
						if err != nil {
							b.Error(err)
							return
						}
						t := tokenRecord{Owner: owners[w], Name: "bench", Scopes: []string{scopeTokensRead}, CreatedAt: time.Now(), Hint: tokenHint(secret)}
						if err := e.st.CreateToken(testActor, &t, hashToken(secret), 0); err != nil {
							b.Errorf("CreateToken: %v", err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
			if st, ok := e.st.(*pgStore); ok {
				b.ReportMetric(float64(st.pool.Config().MaxConns), "pool-conns")
			}
		})
	}
}
