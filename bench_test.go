package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// benchTokens is the number of tokens the benchmarks load: small by default
// so that CI runs them quickly, TOKEND_BENCH_TOKENS=1000000 for the figures
// in BENCHMARKS.md.
func benchTokens(b *testing.B) int {
	n := 10_000
	if v := os.Getenv("TOKEND_BENCH_TOKENS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("TOKEND_BENCH_TOKENS=%q is not a positive number", v)
		}
	}
	return n
}

// BenchmarkVerify measures the verification path (header value → checksum
// → SHA-256 → auth cache or one bbolt lookup → expiry and owner) over
// TOKEND_BENCH_TOKENS tokens: a random token each op (from the warm auth
// cache, and from the database with the cache off), one token repeated,
// tokens that fail the checksum or are unknown, in parallel, and with
// last-used tracking. It counts the write transactions each op makes.
func BenchmarkVerify(b *testing.B) {
	ts := newTestServer(b)
	u := ts.addUser("alice", false)
	secrets := bulkTokens(b, ts.store, u.ID, benchTokens(b), ts.clock.Now(), func(int) *time.Time { return nil })
	unknown, _ := ts.format.generate()
	garbled := secrets[0][:20] + "x" + secrets[0][21:]
	if garbled == secrets[0] {
		garbled = secrets[0][:20] + "y" + secrets[0][21:]
	}

	stream := shuffled(secrets, 1)
	// A server that has answered for a while: every token verified once,
	// so that the auth cache holds them all (it holds a million by
	// default). random-uncached measures the database path instead.
	for _, t := range stream {
		if _, err := ts.verifyToken(t); err != nil {
			b.Fatal(err)
		}
	}
	run := func(name string, pick func(i int) string, wantOK, track bool) {
		b.Run(name, func(b *testing.B) {
			writes := ts.store.writeTxs.Load()
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				c, err := ts.verifyToken(pick(i))
				if (err == nil) != wantOK {
					b.Fatalf("verify = %v; want ok %v", err, wantOK)
				}
				if track {
					ts.noteUse(c, "192.0.2.7")
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(ts.store.writeTxs.Load()-writes)/float64(b.N), "writes/op")
		})
	}
	random := func(i int) string { return stream[i%len(stream)] }
	run("random", random, true, false)
	run("random+tracking", random, true, true)
	run("repeated", func(int) string { return secrets[0] }, true, false)
	run("bad-checksum", func(int) string { return garbled }, false, false)
	run("unknown", func(int) string { return unknown }, false, false)
	// With every token read from the database: the auth cache off, then
	// the warm one back for the parallel run.
	warm := ts.store.auth
	ts.store.auth = newAuthCache(0)
	run("random-uncached", random, true, false)
	ts.store.auth = warm
	b.Run("parallel-random+tracking", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := rand.IntN(len(stream))
			for pb.Next() {
				i++
				c, err := ts.verifyToken(random(i))
				if err != nil {
					b.Error(err)
					return
				}
				ts.noteUse(c, "192.0.2.7")
			}
		})
	})
}

// shuffled returns secrets in a random order and laid out one after another
// in memory, as tokens arrive in request buffers: picking the next one then
// costs nothing, and a benchmark measures verification rather than the
// cache misses of finding one random string among a million.
func shuffled(secrets []string, seed uint64) []string {
	order := slices.Clone(secrets)
	rand.New(rand.NewPCG(seed, 1)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	joined := strings.Join(order, "")
	for i, s := range order {
		order[i], joined = joined[:len(s)], joined[len(s):]
	}
	return order
}

// BenchmarkPurge deletes N expired tokens that sit among N live ones while
// a verifier checks live tokens as fast as it can, and reports the purge's
// transactions and the verifier's worst latency.
func BenchmarkPurge(b *testing.B) {
	n := benchTokens(b)
	for range b.N {
		b.StopTimer()
		st, _ := newTestDB(b)
		u := storeUser(b, st, "alice", false)
		now := time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC)
		// Expired and live tokens interleave in creation order.
		secrets := bulkTokens(b, st, u.ID, 2*n, now.Add(-time.Hour), func(i int) *time.Time {
			if i%2 == 0 {
				return at(now.Add(-time.Duration(i+1) * time.Millisecond))
			}
			return at(now.Add(time.Hour))
		})
		f := mustFormat(b, defaultTokenPrefix)

		var stop atomic.Bool
		var worst atomic.Int64
		var checks atomic.Int64
		var wg sync.WaitGroup
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(3, 4))
			for !stop.Load() {
				s := secrets[2*rng.IntN(n)+1]
				start := time.Now()
				h, _ := f.parse(s)
				if _, _, err := st.TokenByHash(h); err != nil {
					b.Errorf("a live token failed to verify during the purge: %v", err)
					return
				}
				if d := time.Since(start).Nanoseconds(); d > worst.Load() {
					worst.Store(d)
				}
				checks.Add(1)
			}
		})
		b.StartTimer()
		res, err := purgeOnce(context.Background(), st, now, 0)
		b.StopTimer()
		stop.Store(true)
		wg.Wait()
		if err != nil || res.Tokens != n {
			b.Fatalf("purge = %+v, %v; want %d deleted", res, err, n)
		}
		b.ReportMetric(float64(res.Transactions), "txs")
		b.ReportMetric(float64(worst.Load())/1e6, "worst-verify-ms")
		b.ReportMetric(float64(checks.Load()), "verifies")
		st.Close()
	}
}

// BenchmarkCreate measures token creation through the store with one
// creator and with 64 concurrent creators (on GOMAXPROCS=2, parallelism
// 32), on a database preloaded with TOKEND_BENCH_TOKENS tokens. Every
// create waits for its durable commit.
func BenchmarkCreate(b *testing.B) {
	st, path := newTestDB(b)
	const users = 64
	var owners []userRecord
	for i := range users {
		owners = append(owners, storeUser(b, st, "user"+strconv.Itoa(i), false))
	}
	bulkTokens(b, st, owners[0].ID, benchTokens(b), time.Now(), func(int) *time.Time { return nil })
	f := mustFormat(b, defaultTokenPrefix)
	spec := func(owner uint64) (tokenRecord, tokenHash) {
		secret, _ := f.generate()
		return tokenRecord{Owner: owner, Name: "bench", Scopes: []string{scopeTokensRead}, CreatedAt: time.Now(), Hint: tokenHint(secret)}, hashToken(secret)
	}

	b.Run("serial", func(b *testing.B) {
		for range b.N {
			t, h := spec(owners[1].ID)
			if err := st.CreateToken(testActor, &t, h, 0); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
	})
	b.Run("parallel64", func(b *testing.B) {
		var next atomic.Int64
		b.SetParallelism(32)
		b.RunParallel(func(pb *testing.PB) {
			owner := owners[next.Add(1)%users].ID
			for pb.Next() {
				t, h := spec(owner)
				if err := st.CreateToken(testActor, &t, h, 0); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "creates/s")
	})
	if fi, err := os.Stat(path); err == nil {
		b.ReportMetric(float64(fi.Size())/(1<<20), "db-MiB")
	}
}

// BenchmarkHandlers drives GET /auth/tokens:read and GET /api/v1/user
// through the whole router without a network, with a random token of
// TOKEND_BENCH_TOKENS for every request, logging at info level to
// io.Discard: at the default -access-log errors, and at all, where each
// request formats its line.
func BenchmarkHandlers(b *testing.B) {
	ts := newTestServer(b)
	ts.log = slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
	u := ts.addUser("alice", false)
	secrets := bulkTokens(b, ts.store, u.ID, benchTokens(b), ts.clock.Now(), func(int) *time.Time { return nil })
	for _, bench := range []struct{ path, accessLog string }{
		{"/auth/tokens:read", accessLogErrors}, {"/api/v1/user", accessLogErrors},
		{"/auth/tokens:read", accessLogAll}, {"/api/v1/user", accessLogAll},
	} {
		path := bench.path
		b.Run(strings.TrimPrefix(path, "/")+"/access-log="+bench.accessLog, func(b *testing.B) {
			ts.cfg.AccessLog = bench.accessLog
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				rng := rand.New(rand.NewPCG(rand.Uint64(), 5))
				r := httptest.NewRequest("GET", path, nil)
				r.RemoteAddr = "192.0.2.7:4711"
				for pb.Next() {
					r.Header.Set("Authorization", "Bearer "+secrets[rng.IntN(len(secrets))])
					w := httptest.NewRecorder()
					ts.handler.ServeHTTP(w, r)
					if w.Code != 200 && w.Code != 204 {
						b.Errorf("GET %s = %d %s", path, w.Code, w.Body)
						return
					}
				}
			})
		})
	}
}

// BenchmarkVerifyUnderSignIns measures what a flood of password sign-ins
// does to token checks, with production argon2id parameters, over real
// HTTP on loopback: one client sends GET /auth with a valid token, one
// request after another, first alone and then while 16 clients send
// sign-ins with made-up names as fast as they are answered (each costs a
// full hash against the dummy, and X-Forwarded-For spreads them over
// addresses so that the throttle lets them all through). It reports the
// /auth latencies of both phases, their p99 ratio, and the sign-ins
// checked per second, with -hash-concurrency at the old fixed default of 4
// and at today's default (GOMAXPROCS-1, at least 1). Each phase takes
// max(b.N, 200) checks and, under the flood, at least 3 seconds: run it
// with -benchtime 2000x for the figures in BENCHMARKS.md.
func BenchmarkVerifyUnderSignIns(b *testing.B) {
	for _, conc := range []int{4, defaultHashConcurrency(runtime.GOMAXPROCS(0))} {
		b.Run(fmt.Sprintf("hash-concurrency=%d", conc), func(b *testing.B) {
			benchVerifyUnderSignIns(b, conc)
		})
	}
}

func benchVerifyUnderSignIns(b *testing.B, concurrency int) {
	st, path := newTestDB(b)
	cfg := defaultConfig()
	cfg.DB = path
	cfg.HashConcurrency = concurrency
	cfg.TrustProxy = true
	log := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := newServer(st, cfg, log, time.Now)
	if err != nil {
		b.Fatal(err)
	}
	hash, err := srv.hasher.Hash(context.Background(), "password-of-alice")
	if err != nil {
		b.Fatal(err)
	}
	u := newUser("alice", hash, false, time.Now())
	if err := st.CreateUser(testActor, &u); err != nil {
		b.Fatal(err)
	}
	_, secret, err := newToken(st, testActor, srv.format, u, tokenSpec{name: "proxy", scopes: []string{scopeTokensRead}}, time.Now(), 0)
	if err != nil {
		b.Fatal(err)
	}
	hs := httptest.NewServer(srv.routes())
	defer hs.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()

	samples := max(b.N, 200)
	check := func(least time.Duration) []time.Duration {
		lat := make([]time.Duration, 0, samples)
		for start := time.Now(); len(lat) < samples || time.Since(start) < least; {
			req, _ := http.NewRequest("GET", hs.URL+"/auth", nil)
			req.Header.Set("Authorization", "Bearer "+secret)
			start := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			lat = append(lat, time.Since(start))
			if resp.StatusCode != http.StatusNoContent {
				b.Fatalf("GET /auth = %d; want 204", resp.StatusCode)
			}
		}
		slices.Sort(lat)
		return lat
	}
	pct := func(lat []time.Duration, p float64) float64 {
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}

	check(0) // connect and warm up
	b.ResetTimer()
	idle := check(0)

	const flooders = 16
	stop := make(chan struct{})
	var signIns atomic.Int64
	var wg sync.WaitGroup
	for f := range flooders {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("POST", hs.URL+"/api/v1/tokens", strings.NewReader(`{"name":"x","scopes":[],"expires_at":null}`))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", basicAuth(fmt.Sprintf("nobody-%d-%d", f, i), "wrong password"))
				req.Header.Set("X-Forwarded-For", fmt.Sprintf("10.%d.%d.%d", f, i>>8&255, i&255))
				resp, err := client.Do(req)
				if err != nil {
					continue // the server is closing
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusUnauthorized {
					signIns.Add(1)
				}
			}
		})
	}
	// Measure once every hash slot is busy.
	for srv.hasher.running.Load() < int64(concurrency) {
		time.Sleep(time.Millisecond)
	}
	before, start := signIns.Load(), time.Now()
	flood := check(3 * time.Second)
	rate := float64(signIns.Load()-before) / time.Since(start).Seconds()
	close(stop)
	wg.Wait()
	b.StopTimer()

	b.ReportMetric(pct(idle, 0.5), "idle-p50-ms")
	b.ReportMetric(pct(idle, 0.99), "idle-p99-ms")
	b.ReportMetric(pct(flood, 0.5), "flood-p50-ms")
	b.ReportMetric(pct(flood, 0.99), "flood-p99-ms")
	b.ReportMetric(pct(flood, 0.99)/pct(idle, 0.99), "p99-ratio")
	b.ReportMetric(rate, "sign-ins/s")
}

// BenchmarkAuthenticateGrantTokens compares Authenticate for personal
// tokens (auth records of version 1) and grants' access tokens (version 2,
// which carry their client) on one bbolt store: from the warm auth cache
// and, with the cache off, from the database. Ten clients, 100 users with
// ten grants each and as many personal tokens.
func BenchmarkAuthenticateGrantTokens(b *testing.B) {
	st, _ := newTestDB(b)
	x := &oauthFixture{st: st, now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), f: mustFormat(b, defaultTokenPrefix)}
	var clients []clientRecord
	for i := range 10 {
		_, sh := x.secretTB(b)
		c := clientRecord{ID: fmt.Sprintf("client-%02d-%s", i, strings.Repeat("x", 12)), Name: fmt.Sprint("app ", i), SecretHash: &sh, CreatedAt: x.now}
		if err := st.CreateClient(testActor, &c); err != nil {
			b.Fatal(err)
		}
		clients = append(clients, c)
	}
	var personal, grants []tokenHash
	for u := range 100 {
		user := storeUser(b, st, fmt.Sprint("user", u), false)
		for i, s := range bulkTokens(b, st, user.ID, 10, x.now, func(int) *time.Time { return nil }) {
			personal = append(personal, hashToken(s))
			_, code := x.secretTB(b)
			rec := authCodeRecord{Client: clients[i].ID, User: user.ID, Scopes: []string{scopeTokensRead}, CreatedAt: x.now, ExpiresAt: x.now.Add(time.Minute)}
			if err := st.CreateAuthCode(code, rec); err != nil {
				b.Fatal(err)
			}
			_, ah := x.secretTB(b)
			_, rh := x.secretTB(b)
			exp := x.now.Add(time.Hour)
			issue := oauthIssue{Access: tokenRecord{Name: "oauth", Scopes: rec.Scopes, CreatedAt: x.now, ExpiresAt: &exp}, AccessHash: ah, RefreshHash: rh, RefreshUntil: exp}
			if _, _, err := st.RedeemAuthCode(testActor, code, x.now, &issue); err != nil {
				b.Fatal(err)
			}
			grants = append(grants, ah)
		}
	}
	for _, kind := range []struct {
		name   string
		hashes []tokenHash
	}{{"personal", personal}, {"grant", grants}} {
		for _, cached := range []bool{true, false} {
			name := kind.name + "-uncached"
			if cached {
				name = kind.name + "-cached"
			}
			b.Run(name, func(b *testing.B) {
				warm := st.auth
				if !cached {
					st.auth = newAuthCache(0)
				}
				defer func() { st.auth = warm }()
				for _, h := range kind.hashes { // warm the cache, when there is one
					if _, _, err := st.Authenticate(h); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := range b.N {
					if _, _, err := st.Authenticate(kind.hashes[i%len(kind.hashes)]); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
