package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// bulkTokens stores n tokens for owner in large transactions, the i-th
// expiring at expires(i) (nil: never), and returns their secrets. It is for
// tests and benchmarks that need many tokens quickly.
func bulkTokens(tb testing.TB, st *boltStore, owner uint64, n int, created time.Time, expires func(i int) *time.Time) []string {
	tb.Helper()
	f := mustFormat(tb, defaultTokenPrefix)
	secrets := make([]string, 0, n)
	const perTx = 10_000
	for start := 0; start < n; start += perTx {
		err := st.update(func(tx *bolt.Tx) error {
			for i := start; i < min(start+perTx, n); i++ {
				secret, err := f.generate()
				if err != nil {
					return err
				}
				t := tokenRecord{Owner: owner, Name: fmt.Sprintf("bulk %d", i), Scopes: []string{scopeTokensRead},
					CreatedAt: created, ExpiresAt: expires(i), Hint: tokenHint(secret)}
				if err := putNewToken(tx, &t, hashToken(secret)); err != nil {
					return err
				}
				secrets = append(secrets, secret)
			}
			return nil
		})
		if err != nil {
			tb.Fatalf("bulk-load tokens: %v", err)
		}
	}
	return secrets
}

func at(t time.Time) *time.Time { return &t }

func TestExpiryBoundary(t *testing.T) {
	ts := newTestServer(t)
	u := ts.addUser("alice", false)
	tok, secret := ts.addToken(u, "ci", nil, time.Hour)

	ts.clock.Add(time.Hour - time.Nanosecond)
	w := ts.do(request{method: "GET", path: "/api/v1/user", token: secret})
	if w.Code != 200 {
		t.Fatalf("GET /api/v1/user one instant before expiry = %d %s; want 200", w.Code, w.Body)
	}
	if got, want := w.Header().Get("Token-Expires-At"), tok.ExpiresAt.UTC().Format(time.RFC3339); got != want {
		t.Errorf("Token-Expires-At = %q; want %q", got, want)
	}
	ts.clock.Add(time.Nanosecond)
	w = ts.do(request{method: "GET", path: "/api/v1/user", token: secret})
	if w.Code != 401 || !strings.Contains(w.Header().Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Errorf("GET /api/v1/user at expiry = %d %q; want 401 invalid_token", w.Code, w.Header().Get("WWW-Authenticate"))
	}
}

// TestExpiredTokensStayVisibleDuringRetention: an expired token is listed,
// marked expired, until the retention has passed; then the purge removes it.
func TestExpiredTokensStayVisibleDuringRetention(t *testing.T) {
	ts := newTestServer(t)
	u := ts.addUser("alice", false)
	_, reader := ts.addToken(u, "reader", []string{scopeTokensRead}, 0)
	short, _ := ts.addToken(u, "short-lived", nil, time.Hour)

	list := func() map[uint64]tokenBody {
		t.Helper()
		w := ts.do(request{method: "GET", path: "/api/v1/tokens", token: reader})
		if w.Code != 200 {
			t.Fatalf("GET /api/v1/tokens = %d %s", w.Code, w.Body)
		}
		var got []tokenBody
		decode(t, w, &got)
		m := map[uint64]tokenBody{}
		for _, tb := range got {
			m[tb.ID] = tb
		}
		return m
	}

	ts.clock.Add(2 * time.Hour)
	ts.purge(context.Background())
	if got, ok := list()[short.ID]; !ok || !got.Expired {
		t.Fatalf("an hour after expiry the token is listed = %v, expired = %v; want listed and expired", ok, got.Expired)
	}
	ts.clock.Add(ts.cfg.ExpiredRetention - 2*time.Hour)
	ts.purge(context.Background())
	if _, ok := list()[short.ID]; !ok {
		t.Fatal("the token was purged one hour before the retention ended")
	}
	ts.clock.Add(2 * time.Hour)
	ts.purge(context.Background())
	if _, ok := list()[short.ID]; ok {
		t.Error("the token is still listed after the retention ended and a purge ran")
	}
	if err := ts.store.Check(); err != nil {
		t.Error(err)
	}
	if !strings.Contains(ts.logs.String(), "purged expired tokens") {
		t.Errorf("the purge did not log what it deleted:\n%s", ts.logs.String())
	}
}

func TestPurgeRemovesExactlyTheExpired(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		alice := storeUser(t, st, "alice", false)
		bob := storeUser(t, st, "bob", false)
		now := time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC)
		// Interleave: every third token never expires, the others expire on
		// either side of the cut-off.
		expires := func(i int) *time.Time {
			switch i % 3 {
			case 0:
				return nil
			case 1:
				return at(now.Add(-time.Duration(i) * time.Minute)) // expired before the cut-off
			}
			return at(now.Add(time.Duration(i) * time.Minute)) // still to come
		}
		storeTokens(t, st, alice.ID, 300, now.Add(-48*time.Hour), expires)
		storeTokens(t, st, bob.ID, 300, now.Add(-48*time.Hour), expires)
		// One that expires exactly at the cut-off is kept: it was valid until then.
		edge, _ := storeToken(t, st, alice.ID, "edge", at(now))

		res, err := purgeOnce(context.Background(), st, now, 0)
		if err != nil {
			t.Fatalf("purgeOnce: %v", err)
		}
		if res.Tokens != 200 {
			t.Errorf("purgeOnce deleted %d tokens; want 200", res.Tokens)
		}
		all, _ := st.AllTokens()
		if len(all) != 401 {
			t.Errorf("%d tokens left; want 401", len(all))
		}
		for _, tok := range all {
			if tok.ExpiresAt != nil && tok.ExpiresAt.Before(now) {
				t.Errorf("token %d expired at %v and was kept", tok.ID, tok.ExpiresAt)
			}
		}
		if _, err := st.TokenByID(edge.ID, anyOwner); err != nil {
			t.Errorf("the token expiring exactly at the cut-off was deleted: %v", err)
		}
		if err := st.Check(); err != nil {
			t.Errorf("after the purge: %v", err)
		}
		again, _ := purgeOnce(context.Background(), st, now, 0)
		if again.Tokens != 0 || again.Transactions != 1 {
			t.Errorf("a second purge = %+v; want nothing deleted in one transaction", again)
		}
	})
}

func TestPurgeWorksInBatches(t *testing.T) {
	st, _ := newTestDB(t)
	u := storeUser(t, st, "alice", false)
	now := time.Date(2030, 6, 1, 0, 0, 0, 0, time.UTC)
	bulkTokens(t, st, u.ID, 10_000, now.Add(-time.Hour), func(i int) *time.Time { return at(now.Add(-time.Duration(i+1) * time.Second)) })
	live := bulkTokens(t, st, u.ID, 50, now, func(int) *time.Time { return at(now.Add(time.Hour)) })

	writesBefore := st.writeTxs.Load()
	res, err := purgeOnce(context.Background(), st, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	if res.Tokens != 10_000 {
		t.Errorf("deleted %d; want 10000", res.Tokens)
	}
	if res.Transactions < 10 {
		t.Errorf("the purge used %d transactions; want at least 10 of at most %d deletions", res.Transactions, purgeBatch)
	}
	if got := st.writeTxs.Load() - writesBefore; got != uint64(res.Transactions) {
		t.Errorf("the store counted %d write transactions; the purge said %d", got, res.Transactions)
	}
	for _, s := range live {
		if _, _, err := st.TokenByHash(hashToken(s)); err != nil {
			t.Fatalf("a live token is gone after the purge: %v", err)
		}
	}
	if err := st.Check(); err != nil {
		t.Error(err)
	}
}

func TestPurgeStopsWithItsContext(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		u := storeUser(t, st, "alice", false)
		now := time.Now()
		storeTokens(t, st, u.ID, 3000, now, func(int) *time.Time { return at(now.Add(-time.Hour)) })
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		res, err := purgeOnce(ctx, st, now, 0)
		if err != nil || res.Tokens != 0 {
			t.Errorf("purge with an ended context = %+v, %v; want nothing done and no error", res, err)
		}
	})
}

func TestPurgeCommand(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokend.db")
	st, err := openStore(db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	u := storeUser(t, st, "alice", false)
	now := time.Now()
	bulkTokens(t, st, u.ID, 5, now, func(i int) *time.Time { return at(now.Add(-time.Duration(i) * 24 * time.Hour)) })
	st.Close()
	out, _, err := runCLI(t, "", "purge", "-db", db, "-expired-retention", "60h")
	// Tokens expired 0, 1, 2, 3 and 4 days ago: those older than 60h go.
	if err != nil || !strings.Contains(out, "purged 2 expired tokens") {
		t.Errorf("tokend purge = %q, %v; want 2 purged", out, err)
	}
	if _, _, err := runCLI(t, "", "purge", "-db", db, "-expired-retention", "-1h"); err == nil {
		t.Error("tokend purge -expired-retention -1h = nil error")
	}
}

func TestPurgeRemovesExpiredSessions(t *testing.T) {
	ts := newTestServer(t)
	u := ts.addUser("alice", false)
	now := ts.clock.Now()
	_, old, _ := newSessionSecret()
	_, fresh, _ := newSessionSecret()
	for h, exp := range map[sessionHash]time.Time{old: now.Add(-time.Minute), fresh: now.Add(time.Hour)} {
		rec := sessionRecord{User: u.ID, CreatedAt: now.Add(-time.Hour), ExpiresAt: exp, LastSeenAt: now}
		if err := ts.store.CreateSession(testActor, h, rec, nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	ts.purge(context.Background())
	dump := ts.snapshot()
	if _, ok := dump["sessions/"+hex.EncodeToString(old[:])]; ok {
		t.Error("the expired session survived the purge")
	}
	if _, ok := dump["sessions/"+hex.EncodeToString(fresh[:])]; !ok {
		t.Error("the live session was purged")
	}
	if !strings.Contains(ts.logs.String(), "purged expired sessions") {
		t.Errorf("the purge did not log the sessions it deleted:\n%s", ts.logs.String())
	}
}

// TestServeRunsThePurgeAndFlushLoops starts the real server with short
// intervals and waits for both loops to do their work.
func TestServeRunsThePurgeAndFlushLoops(t *testing.T) {
	cfg := testServeConfig(t)
	cfg.PurgeInterval = 20 * time.Millisecond
	cfg.LastUsedInterval = 20 * time.Millisecond
	cfg.ExpiredRetention = 0
	st, err := openStore(cfg.DB, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	u := storeUser(t, st, "alice", false)
	expired, _ := storeToken(t, st, u.ID, "old", at(time.Now().Add(-time.Minute)))
	live, secret := storeToken(t, st, u.ID, "live", nil)
	st.Close()

	addr, _, stop := startServe(t, cfg)
	req, _ := http.NewRequest("GET", "http://"+addr+"/api/v1/user", nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /api/v1/user = %v, %v", resp, err)
	}
	resp.Body.Close()
	time.Sleep(200 * time.Millisecond) // ten ticks of each loop
	stop()

	st, err = openStore(cfg.DB, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.TokenByID(expired.ID, anyOwner); err == nil {
		t.Error("the purge loop left the expired token in place")
	}
	if got, err := st.TokenByID(live.ID, anyOwner); err != nil || got.LastUsedAt == nil {
		t.Errorf("the live token after serving = %+v, %v; want it kept, with its use flushed", got, err)
	}
}

// TestPurgeAtTheEdgesOfTime checks that the purge deletes exactly the
// tokens that expired before now minus the retention, whatever the
// retention (0, a nanosecond, a week, more than the 57 years back to 1970,
// the longest duration) and however far off the expiries are (year 1,
// just before 1970, year 2262, year 9999). A cut-off before 1970 once
// wrapped around to the far future and deleted every expiring token.
func TestPurgeAtTheEdgesOfTime(t *testing.T) {
	now := newFakeClock().Now()
	expiries := []*time.Time{
		at(time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)),
		at(time.Unix(0, math.MinInt64).Add(-time.Hour)),
		at(time.Unix(-1, 0)),
		at(time.Unix(0, 0)),
		at(now.Add(-8 * 24 * time.Hour)),
		at(now.Add(-time.Hour)),
		at(now),
		at(now.Add(time.Hour)),
		at(time.Unix(0, math.MaxInt64)),
		at(time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)),
		nil,
	}
	for _, retention := range []time.Duration{0, 1, 7 * 24 * time.Hour, 58 * 365 * 24 * time.Hour, maxSetting, math.MaxInt64} {
		t.Run(retention.String(), func(t *testing.T) {
			ts := newTestServer(t)
			ts.clock.t = now
			u := ts.addUser("alice", false)
			secrets := bulkTokens(t, ts.store, u.ID, len(expiries), now.Add(-time.Hour), func(i int) *time.Time { return expiries[i] })
			cutoff := now.Add(-retention)
			res, err := purgeOnce(context.Background(), ts.store, now, retention)
			if err != nil {
				t.Fatalf("purgeOnce: %v", err)
			}
			deleted := 0
			for i, exp := range expiries {
				_, _, err := ts.store.TokenByHash(hashToken(secrets[i]))
				gone := errors.Is(err, errNotFound)
				// Expiries before 1970 all sort as 1970 in the index, so a
				// cut-off before 1970 keeps them: the safe way to be wrong.
				want := exp != nil && exp.Before(cutoff) && cutoff.After(time.Unix(0, 0))
				if gone != want {
					t.Errorf("token expiring %v: deleted %v (lookup %v); want %v with cut-off %v", exp, gone, err, want, cutoff)
				}
				if gone {
					deleted++
				}
				if exp == nil || !exp.After(now) {
					continue
				}
				// The ones to come still work, through the cache and without.
				for range 2 {
					if w := ts.do(request{method: "GET", path: "/api/v1/token", token: secrets[i]}); w.Code != 200 {
						t.Errorf("GET /api/v1/token with a token expiring %v = %d; want 200", exp, w.Code)
					}
				}
			}
			if res.Tokens != deleted {
				t.Errorf("purgeOnce says it deleted %d; %d are gone", res.Tokens, deleted)
			}
			if err := ts.store.Check(); err != nil {
				t.Errorf("Check after the purge: %v", err)
			}
		})
	}
}

// TestExpiredAtTheEdgesOfTime checks that a token that expired before
// 1678, at the epoch or in 1969 is refused, and one that expires after
// 2262 is accepted, on a first and a cached verification.
func TestExpiredAtTheEdgesOfTime(t *testing.T) {
	ts := newTestServer(t)
	u := ts.addUser("alice", false)
	now := ts.clock.Now()
	expiries := []time.Time{time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), time.Unix(0, 0), time.Unix(-1, 0), time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)}
	secrets := bulkTokens(t, ts.store, u.ID, len(expiries), now, func(i int) *time.Time { return at(expiries[i]) })
	for i, exp := range expiries {
		want := 401
		if exp.After(now) {
			want = 200
		}
		for range 2 {
			if w := ts.do(request{method: "GET", path: "/api/v1/token", token: secrets[i]}); w.Code != want {
				t.Errorf("GET /api/v1/token with a token expiring %v = %d; want %d", exp, w.Code, want)
			}
		}
	}
}

// TestPurgeCommandBounds checks that tokend purge refuses retentions and
// idle times that cannot be meant, and keeps valid tokens at the longest
// retention it takes.
func TestPurgeCommandBounds(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokend.db")
	st, err := openStore(db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	u := storeUser(t, st, "alice", false)
	now := time.Now()
	bulkTokens(t, st, u.ID, 3, now, func(i int) *time.Time { return at(now.Add(time.Duration(2*i-1) * time.Hour)) })
	st.Close()
	for _, tt := range []struct{ args, want string }{
		{"-expired-retention -1s", "-expired-retention: -1s is negative"},
		{"-expired-retention 876001h", "-expired-retention: 876001h0m0s is more than 100 years"},
		{"-session-idle 0s", "-session-idle: 0s is shorter than a minute"},
		{"-session-idle 900000h", "-session-idle: 900000h0m0s is more than 100 years"},
	} {
		args := append([]string{"purge", "-db", db}, strings.Fields(tt.args)...)
		if _, _, err := runCLI(t, "", args...); err == nil || err.Error() != tt.want {
			t.Errorf("tokend %s = %v; want %q", strings.Join(args, " "), err, tt.want)
		}
	}
	out, _, err := runCLI(t, "", "purge", "-db", db, "-expired-retention", "876000h")
	if err != nil || out != "purged 0 expired tokens in 1 transaction, 0 expired sessions and 0 expired OAuth records\n" {
		t.Errorf("tokend purge -expired-retention 876000h = %q, %v; want nothing purged, in 1 transaction", out, err)
	}
	out, _, err = runCLI(t, "", "purge", "-db", db, "-expired-retention", "0s")
	if err != nil || out != "purged 1 expired token in 1 transaction, 0 expired sessions and 0 expired OAuth records\n" {
		t.Errorf("tokend purge -expired-retention 0s = %q, %v; want the one expired token purged", out, err)
	}
	st, err = openStore(db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if all, _ := st.AllTokens(); len(all) != 2 {
		t.Errorf("%d tokens left; want the 2 that have not expired", len(all))
	}
}

// TestPurgeRemovesExpiredOAuth: each purge pass deletes the OAuth codes,
// device requests and grants expired at now, the grants with their
// tokens, logs it and counts it; what is live stays. tokend purge does
// the same offline.
func TestPurgeRemovesExpiredOAuth(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	x := newOAuthFixture(t, ts.store)
	now := ts.clock.Now()
	x.now = now.Add(-31 * 24 * time.Hour) // the grant's refresh token expired a day ago
	app := x.client("App")
	old, _, oldIs := x.grant(app, alice.ID, scopeTokensRead)
	staleCode := x.code(app, alice.ID)
	x.now = now
	live, _, liveIs := x.grant(app, alice.ID, scopeTokensRead)
	liveCode := x.code(app, alice.ID)

	ts.purge(context.Background())
	// The two codes of before (one redeemed) and the old grant.
	fams := scrape(t, ts)
	if got := sample(fams, "tokend_purge_deleted_oauth_total", nil); got != 3 {
		t.Errorf("tokend_purge_deleted_oauth_total = %v; want 3", got)
	}
	if got := sample(fams, "tokend_purge_runs_total", map[string]string{"result": "ok"}); got != 1 {
		t.Errorf("tokend_purge_runs_total{ok} = %v; want 1", got)
	}
	if !strings.Contains(ts.logs.String(), "purged expired OAuth") {
		t.Errorf("the purge did not log the OAuth records it deleted:\n%s", ts.logs.String())
	}
	if ids := grantIDs(t, ts.store, alice.ID); len(ids) != 1 || ids[0] != live.ID {
		t.Errorf("grants after the purge = %v; want [%d], not the expired %d", ids, live.ID, old.ID)
	}
	if _, _, err := ts.store.TokenByHash(hashToken(oldIs.access)); !errors.Is(err, errNotFound) {
		t.Errorf("the expired grant's access token after the purge: %v; want errNotFound", err)
	}
	if _, _, err := ts.store.TokenByHash(hashToken(liveIs.access)); err != nil {
		t.Errorf("the live grant's access token after the purge: %v", err)
	}
	if _, err := ts.store.AuthCode(staleCode); !errors.Is(err, errNotFound) {
		t.Errorf("an expired code after the purge: %v; want errNotFound", err)
	}
	if _, err := ts.store.AuthCode(liveCode); err != nil {
		t.Errorf("a live code after the purge: %v", err)
	}
	if err := ts.store.Check(); err != nil {
		t.Errorf("Check after the purge: %v", err)
	}
	// With nothing expired, the OAuth purge does not write.
	writes := ts.store.writeTxs.Load()
	if n, err := ts.store.PurgeOAuth(context.Background(), now); err != nil || n != 0 {
		t.Errorf("PurgeOAuth with nothing expired = %d, %v", n, err)
	}
	if got := ts.store.writeTxs.Load() - writes; got != 0 {
		t.Errorf("PurgeOAuth with nothing expired wrote %d transactions; want 0", got)
	}

	// Offline: a code that expired an hour ago goes.
	db := filepath.Join(t.TempDir(), "tokend.db")
	st, err := openStore(db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	bob := storeUser(t, st, "bob", false)
	x = newOAuthFixture(t, st)
	x.now = time.Now().Add(-time.Hour)
	x.code(x.client("App"), bob.ID)
	st.Close()
	out, _, err := runCLI(t, "", "purge", "-db", db)
	if err != nil || !strings.Contains(out, "1 expired OAuth record") {
		t.Errorf("tokend purge = %q, %v; want 1 expired OAuth record purged", out, err)
	}
}
