package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Tests of the PostgreSQL engine's OAuth store that the behaviour suite
// cannot make: instances racing on one database, and what the tables hold.

// pgClient registers a confidential client called name that may use the
// device grant.
func pgClient(t testing.TB, st store, name string) clientRecord {
	t.Helper()
	secret := tokenHash(randomHash(t))
	c := clientRecord{ID: "id-" + name, Name: name, RedirectURIs: []string{"https://app.example/cb"}, Device: true,
		SecretHash: &secret, AccessTTL: time.Hour, CreatedAt: engineNow, CreatedBy: 1}
	if err := st.CreateClient(testActor, &c); err != nil {
		t.Fatalf("CreateClient(%q): %v", name, err)
	}
	return c
}

// pgCode stores an authorization code of client for user, valid for a
// minute from engineNow, and returns its hash.
func pgCode(t testing.TB, st store, client string, user uint64) tokenHash {
	t.Helper()
	h := tokenHash(randomHash(t))
	c := authCodeRecord{Client: client, User: user, Scopes: []string{"tokens:read"}, RedirectURI: "https://app.example/cb",
		Challenge: "challenge", CreatedAt: engineNow, ExpiresAt: engineNow.Add(time.Minute)}
	if err := st.CreateAuthCode(h, c); err != nil {
		t.Fatalf("CreateAuthCode: %v", err)
	}
	return h
}

// pgIssue is what an exchange at at issues to user: new random hashes.
func pgIssue(t testing.TB, user uint64, at time.Time) *oauthIssue {
	t.Helper()
	exp := at.Add(time.Hour)
	return &oauthIssue{
		Access:       tokenRecord{Owner: user, Name: "app", Scopes: []string{"tokens:read"}, CreatedAt: at, ExpiresAt: &exp, Hint: "oaut"},
		AccessHash:   randomHash(t),
		RefreshHash:  randomHash(t),
		RefreshUntil: at.Add(30 * 24 * time.Hour),
	}
}

func TestPGOAuthGrantLifecycle(t *testing.T) {
	st, dbURL := newTestPGStore(t)
	sink := newFakeSink()
	st.sink.Store(new(invalidationSink(sink)))
	alice := engineUser(t, st, "alice", true)
	personal, _ := engineToken(t, st, alice.ID, "ci", nil)
	app := pgClient(t, st, "App")
	dup := clientRecord{ID: "other", Name: "aPP", CreatedAt: engineNow}
	if err := st.CreateClient(testActor, &dup); !errors.Is(err, errNameTaken) {
		t.Fatalf("CreateClient(same name, other case) = %v; want errNameTaken", err)
	}
	if got, err := st.ClientByID(app.ID); err != nil || got.Name != "App" || *got.SecretHash != *app.SecretHash || got.AccessTTL != time.Hour ||
		!slices.Equal(got.RedirectURIs, app.RedirectURIs) || !got.Device || got.Public {
		t.Fatalf("ClientByID = %+v, %v; want %+v", got, err, app)
	}

	code := pgCode(t, st, app.ID, alice.ID)
	issue := pgIssue(t, alice.ID, engineNow)
	g, tok, err := st.RedeemAuthCode(testActor, code, engineNow, issue)
	if err != nil {
		t.Fatalf("RedeemAuthCode: %v", err)
	}
	if g.Client != app.ID || g.User != alice.ID || !slices.Equal(g.Scopes, []string{"tokens:read"}) || tok.Grant != g.ID || tok.Client != app.ID || tok.ID == 0 {
		t.Fatalf("RedeemAuthCode = %+v, %+v", g, tok)
	}
	if a, _, err := st.Authenticate(issue.AccessHash); err != nil || a.ID != tok.ID {
		t.Fatalf("Authenticate(access token) = %+v, %v", a, err)
	}
	if got, err := st.AuthCode(code); err != nil || got.Grant != g.ID {
		t.Fatalf("AuthCode after redemption = %+v, %v; want grant %d", got, err, g.ID)
	}

	// The personal-token views do not see it.
	if list, err := st.TokensByOwner(alice.ID); err != nil || len(list) != 1 || list[0].ID != personal.ID {
		t.Fatalf("TokensByOwner = %+v, %v; want the personal token only", list, err)
	}
	if list, err := st.AllTokens(); err != nil || len(list) != 1 {
		t.Fatalf("AllTokens = %+v, %v; want the personal token only", list, err)
	}
	if counts, err := st.TokenCounts(); err != nil || counts[alice.ID] != 1 {
		t.Fatalf("TokenCounts = %v, %v; want 1", counts, err)
	}
	if _, err := st.TokenByID(tok.ID, anyOwner); !errors.Is(err, errNotFound) {
		t.Fatalf("TokenByID(grant token) = %v; want errNotFound", err)
	}
	if _, err := st.DeleteToken(testActor, tok.ID, alice.ID); !errors.Is(err, errNotFound) {
		t.Fatalf("DeleteToken(grant token) = %v; want errNotFound", err)
	}
	if _, err := st.RotateToken(testActor, tok.ID, alice.ID, randomHash(t), "wxyz", engineNow); !errors.Is(err, errNotFound) {
		t.Fatalf("RotateToken(grant token) = %v; want errNotFound", err)
	}
	second := tokenRecord{Owner: alice.ID, Name: "second", CreatedAt: engineNow}
	if err := st.CreateToken(testActor, &second, randomHash(t), 2); err != nil {
		t.Fatalf("CreateToken with limit 2 beside one personal and one grant token: %v", err)
	}
	if got, _, err := st.TokenByHash(issue.AccessHash); err != nil || got.Grant != g.ID || got.Client != app.ID {
		t.Fatalf("TokenByHash(access token) = %+v, %v", got, err)
	}

	// Refresh rotates: the old access token goes, the new one works.
	later := engineNow.Add(time.Hour)
	next := pgIssue(t, alice.ID, later)
	g2, tok2, err := st.RefreshGrant(testActor, issue.RefreshHash, later, next)
	if err != nil {
		t.Fatalf("RefreshGrant: %v", err)
	}
	if g2.ID != g.ID || !g2.RefreshedAt.Equal(later) || !g2.ExpiresAt.Equal(next.RefreshUntil) || tok2.Grant != g.ID {
		t.Fatalf("RefreshGrant = %+v, %+v", g2, tok2)
	}
	if _, ok := sink.heard(issue.AccessHash); !ok {
		t.Fatal("the cache did not hear of the access token the refresh replaced")
	}
	if _, _, err := st.Authenticate(issue.AccessHash); !errors.Is(err, errNotFound) {
		t.Fatalf("Authenticate(replaced access token) = %v; want errNotFound", err)
	}
	if _, _, err := st.Authenticate(next.AccessHash); err != nil {
		t.Fatalf("Authenticate(new access token) = %v", err)
	}
	if got, err := st.GrantOfRefresh(issue.RefreshHash); err != nil || got.ID != g.ID {
		t.Fatalf("GrantOfRefresh(used refresh token) = %+v, %v", got, err)
	}
	st.FlushLastUsed(map[uint64]lastUse{tok2.ID: {At: later.Add(time.Minute), IP: "192.0.2.1"}})
	if list, err := st.GrantsOf(alice.ID); err != nil || len(list) != 1 || list[0].LastUsedAt == nil || !list[0].LastUsedAt.Equal(later.Add(time.Minute)) {
		t.Fatalf("GrantsOf = %+v, %v; want one grant last used a minute after the refresh", list, err)
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM refresh_tokens WHERE grant_id = $1 AND used", int64(g.ID)); n != 1 {
		t.Fatalf("%d used refresh tokens kept; want 1", n)
	}

	// The used refresh token again: the grant goes, committed, with the
	// access token it holds now.
	if _, _, err := st.RefreshGrant(testActor, issue.RefreshHash, later, pgIssue(t, alice.ID, later)); !errors.Is(err, errCodeUsed) {
		t.Fatalf("RefreshGrant(used refresh token) = %v; want errCodeUsed", err)
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM grants") + pgQueryInt(t, dbURL, "SELECT count(*) FROM refresh_tokens") +
		pgQueryInt(t, dbURL, "SELECT count(*) FROM tokens WHERE grant_id IS NOT NULL"); n != 0 {
		t.Fatalf("%d grant, refresh and access rows left after refresh token reuse; want 0", n)
	}
	if _, ok := sink.heard(next.AccessHash); !ok {
		t.Fatal("the cache did not hear of the access token the reuse revoked")
	}
	if _, _, err := st.RefreshGrant(testActor, next.RefreshHash, later, pgIssue(t, alice.ID, later)); !errors.Is(err, errNotFound) {
		t.Fatalf("RefreshGrant(refresh token of a revoked grant) = %v; want errNotFound", err)
	}

	// The code again, now that its grant is gone: still used.
	if _, _, err := st.RedeemAuthCode(testActor, code, engineNow, pgIssue(t, alice.ID, engineNow)); !errors.Is(err, errCodeUsed) {
		t.Fatalf("RedeemAuthCode(used code) = %v; want errCodeUsed", err)
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM grants"); n != 0 {
		t.Fatalf("%d grants after a used code; want 0", n)
	}
	expired := pgCode(t, st, app.ID, alice.ID)
	if _, _, err := st.RedeemAuthCode(testActor, expired, engineNow.Add(time.Minute), pgIssue(t, alice.ID, engineNow)); !errors.Is(err, errTokenExpired) {
		t.Fatalf("RedeemAuthCode(at its expiry) = %v; want errTokenExpired", err)
	}
	if err := st.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

func TestPGOAuthRedeemedCodeReuseRevokes(t *testing.T) {
	st, dbURL := newTestPGStore(t)
	alice := engineUser(t, st, "alice", true)
	app := pgClient(t, st, "app")
	code := pgCode(t, st, app.ID, alice.ID)
	issue := pgIssue(t, alice.ID, engineNow)
	g, _, err := st.RedeemAuthCode(testActor, code, engineNow, issue)
	if err != nil {
		t.Fatal(err)
	}
	// A second redemption fails, and its revocation has committed: another
	// instance no longer finds the grant or its token.
	if _, _, err := st.RedeemAuthCode(testActor, code, engineNow, pgIssue(t, alice.ID, engineNow)); !errors.Is(err, errCodeUsed) {
		t.Fatalf("second RedeemAuthCode = %v; want errCodeUsed", err)
	}
	other := openTestPGStore(t, dbURL)
	if _, err := other.GrantOfRefresh(issue.RefreshHash); !errors.Is(err, errNotFound) {
		t.Fatalf("GrantOfRefresh on another instance = %v; want errNotFound", err)
	}
	if _, _, err := other.TokenByHash(issue.AccessHash); !errors.Is(err, errNotFound) {
		t.Fatalf("TokenByHash on another instance = %v; want errNotFound", err)
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM grants WHERE id = $1", int64(g.ID)); n != 0 {
		t.Fatalf("grant %d still stored", g.ID)
	}
}

func TestPGOAuthGrantLimit(t *testing.T) {
	st, dbURL := newTestPGStore(t)
	alice := engineUser(t, st, "alice", true)
	app := pgClient(t, st, "app")
	// maxGrantsPerUser grants, made behind the store's back.
	pgExec(t, dbURL, `INSERT INTO grants (client_id, user_id, scopes, created_at, expires_at)
		SELECT $1, $2, '{}', 0, 9000000000000000000 FROM generate_series(1, $3::int)`, app.ID, int64(alice.ID), maxGrantsPerUser)
	code := pgCode(t, st, app.ID, alice.ID)
	if _, _, err := st.RedeemAuthCode(testActor, code, engineNow, pgIssue(t, alice.ID, engineNow)); !errors.Is(err, errTooManyGrants) {
		t.Fatalf("RedeemAuthCode past the grant limit = %v; want errTooManyGrants", err)
	}
	if a, err := st.AuthCode(code); err != nil || a.Grant != 0 {
		t.Fatalf("AuthCode after a refused redemption = %+v, %v; want it unredeemed", a, err)
	}
}

func TestPGOAuthDeviceFlow(t *testing.T) {
	st, dbURL := newTestPGStore(t)
	alice := engineUser(t, st, "alice", true)
	app := pgClient(t, st, "tv")
	dev, uc := tokenHash(randomHash(t)), tokenHash(randomHash(t))
	d := deviceAuthRecord{Client: app.ID, Scopes: []string{"tokens:read"}, CreatedAt: engineNow, ExpiresAt: engineNow.Add(10 * time.Minute), Interval: 5 * time.Second}
	if err := st.CreateDeviceAuth(dev, uc, d); err != nil {
		t.Fatalf("CreateDeviceAuth: %v", err)
	}
	if err := st.CreateDeviceAuth(randomHash(t), uc, d); !errors.Is(err, errCodeTaken) {
		t.Fatalf("CreateDeviceAuth(user code in use) = %v; want errCodeTaken", err)
	}
	if _, _, err := st.RedeemDeviceAuth(testActor, dev, engineNow, pgIssue(t, alice.ID, engineNow)); !errors.Is(err, errNotFound) {
		t.Fatalf("RedeemDeviceAuth(pending) = %v; want errNotFound", err)
	}

	// Polls: the first is never too soon; one sooner than the interval
	// slows the device down by 5 s.
	got, slow, err := st.PollDeviceAuth(dev, engineNow)
	if err != nil || slow || got.State != devicePending || !got.LastPoll.IsZero() {
		t.Fatalf("first PollDeviceAuth = %+v, %v, %v", got, slow, err)
	}
	if got, slow, err = st.PollDeviceAuth(dev, engineNow.Add(time.Second)); err != nil || !slow || !got.LastPoll.Equal(engineNow) {
		t.Fatalf("PollDeviceAuth 1 s later = %+v, %v, %v; want slowDown", got, slow, err)
	}
	if got, slow, err = st.PollDeviceAuth(dev, engineNow.Add(7*time.Second)); err != nil || !slow || got.Interval != 10*time.Second {
		t.Fatalf("PollDeviceAuth 6 s later = %+v, %v, %v; want slowDown with an interval of 10 s", got, slow, err)
	}
	if got, slow, err = st.PollDeviceAuth(dev, engineNow.Add(30*time.Second)); err != nil || slow || got.Interval != 15*time.Second {
		t.Fatalf("PollDeviceAuth 23 s later = %+v, %v, %v; want no slowDown, interval 15 s", got, slow, err)
	}

	if err := st.DecideDeviceAuth(uc, alice.ID, true, []string{"tokens:read"}, engineNow); err != nil {
		t.Fatalf("DecideDeviceAuth: %v", err)
	}
	if err := st.DecideDeviceAuth(uc, alice.ID, false, nil, engineNow); !errors.Is(err, errCodeUsed) {
		t.Fatalf("DecideDeviceAuth twice = %v; want errCodeUsed", err)
	}
	if got, err := st.DeviceAuthByUserCode(uc); err != nil || got.State != deviceApproved || got.User != alice.ID || !slices.Equal(got.Approved, []string{"tokens:read"}) {
		t.Fatalf("DeviceAuthByUserCode = %+v, %v", got, err)
	}
	issue := pgIssue(t, alice.ID, engineNow)
	g, tok, err := st.RedeemDeviceAuth(testActor, dev, engineNow, issue)
	if err != nil || g.User != alice.ID || g.Client != app.ID || tok.Grant != g.ID {
		t.Fatalf("RedeemDeviceAuth = %+v, %+v, %v", g, tok, err)
	}
	if _, _, err := st.RedeemDeviceAuth(testActor, dev, engineNow, pgIssue(t, alice.ID, engineNow)); !errors.Is(err, errCodeUsed) {
		t.Fatalf("RedeemDeviceAuth twice = %v; want errCodeUsed", err)
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM grants"); n != 0 {
		t.Fatalf("%d grants after a second device redemption; want 0", n)
	}

	// An expired request gives its user code up; decisions past expiry fail.
	if err := st.CreateDeviceAuth(randomHash(t), uc, deviceAuthRecord{Client: app.ID, CreatedAt: d.ExpiresAt, ExpiresAt: d.ExpiresAt.Add(time.Minute), Interval: 5 * time.Second}); err != nil {
		t.Fatalf("CreateDeviceAuth(user code of an expired request) = %v", err)
	}
	if err := st.DecideDeviceAuth(uc, alice.ID, true, nil, d.ExpiresAt.Add(time.Minute)); !errors.Is(err, errTokenExpired) {
		t.Fatalf("DecideDeviceAuth past expiry = %v; want errTokenExpired", err)
	}
	if err := st.CreateDeviceAuth(randomHash(t), randomHash(t), deviceAuthRecord{Client: "nobody", CreatedAt: engineNow, ExpiresAt: engineNow}); !errors.Is(err, errNotFound) {
		t.Fatalf("CreateDeviceAuth(unknown client) = %v; want errNotFound", err)
	}
}

func TestPGOAuthCascades(t *testing.T) {
	st, dbURL := newTestPGStore(t)
	sink := newFakeSink()
	st.sink.Store(new(invalidationSink(sink)))
	alice := engineUser(t, st, "alice", true)
	bob := engineUser(t, st, "bob", false)
	app, tv := pgClient(t, st, "app"), pgClient(t, st, "tv")
	grant := func(c clientRecord, u userRecord) (grantRecord, tokenHash) {
		issue := pgIssue(t, u.ID, engineNow)
		g, _, err := st.RedeemAuthCode(testActor, pgCode(t, st, c.ID, u.ID), engineNow, issue)
		if err != nil {
			t.Fatal(err)
		}
		return g, issue.AccessHash
	}
	_, bobApp := grant(app, bob)
	bobTV, bobTVAccess := grant(tv, bob)
	_, aliceApp := grant(app, alice)
	_, aliceTV := grant(tv, alice)
	pgCode(t, st, app.ID, bob.ID) // in flight

	if _, err := st.DeleteGrant(testActor, bobTV.ID, alice.ID); !errors.Is(err, errNotFound) {
		t.Fatalf("DeleteGrant(another user's) = %v; want errNotFound", err)
	}
	engineToken(t, st, bob.ID, "personal", nil)
	n, err := st.RevokeTokensOf(testActor, bob.ID)
	if err != nil || n != 3 {
		t.Fatalf("RevokeTokensOf = %d, %v; want 3 (a personal token and two grants' access tokens)", n, err)
	}
	for _, h := range []tokenHash{bobApp, bobTVAccess} {
		if _, ok := sink.heard(h); !ok {
			t.Fatal("the cache did not hear of a revoked grant's access token")
		}
	}
	if list, err := st.GrantsOf(bob.ID); err != nil || len(list) != 0 {
		t.Fatalf("GrantsOf(bob) after RevokeTokensOf = %+v, %v", list, err)
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM auth_codes WHERE user_id = $1", int64(bob.ID)); n != 0 {
		t.Fatalf("%d codes of bob left in flight after RevokeTokensOf", n)
	}

	// Removing a client takes its grants and their tokens, not others'.
	if _, err := st.DeleteClient(testActor, tv.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok := sink.heard(aliceTV); !ok {
		t.Fatal("the cache did not hear of the removed client's access token")
	}
	if _, _, err := st.Authenticate(aliceApp); err != nil {
		t.Fatalf("Authenticate(another client's token) after DeleteClient = %v", err)
	}
	if list, err := st.Clients(); err != nil || len(list) != 1 || list[0].ID != app.ID {
		t.Fatalf("Clients = %+v, %v; want app only", list, err)
	}
	if _, err := st.DeleteClient(testActor, tv.ID); !errors.Is(err, errNotFound) {
		t.Fatalf("DeleteClient twice = %v; want errNotFound", err)
	}

	// Removing a user takes theirs.
	engineUser(t, st, "carol", true)
	if err := st.DeleteUser(testActor, alice.ID); err != nil {
		t.Fatal(err)
	}
	if _, ok := sink.heard(aliceApp); !ok {
		t.Fatal("the cache did not hear of a removed user's access token")
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM grants") + pgQueryInt(t, dbURL, "SELECT count(*) FROM refresh_tokens"); n != 0 {
		t.Fatalf("%d grant and refresh rows left; want 0", n)
	}
	if err := st.Check(); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

func TestPGOAuthPurge(t *testing.T) {
	st, dbURL := newTestPGStore(t)
	sink := newFakeSink()
	st.sink.Store(new(invalidationSink(sink)))
	alice := engineUser(t, st, "alice", true)
	app := pgClient(t, st, "app")
	old := pgIssue(t, alice.ID, engineNow)
	old.RefreshUntil = engineNow.Add(time.Hour)
	if _, _, err := st.RedeemAuthCode(testActor, pgCode(t, st, app.ID, alice.ID), engineNow, old); err != nil {
		t.Fatal(err)
	}
	live := pgIssue(t, alice.ID, engineNow)
	if _, _, err := st.RedeemAuthCode(testActor, pgCode(t, st, app.ID, alice.ID), engineNow, live); err != nil {
		t.Fatal(err)
	}
	pgCode(t, st, app.ID, alice.ID) // expires a minute after engineNow
	if err := st.CreateDeviceAuth(randomHash(t), randomHash(t), deviceAuthRecord{Client: app.ID, CreatedAt: engineNow, ExpiresAt: engineNow.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	n, err := st.PurgeOAuth(t.Context(), engineNow.Add(time.Hour))
	if err != nil || n != 5 {
		t.Fatalf("PurgeOAuth = %d, %v; want 5 (3 codes, a device request, a grant)", n, err)
	}
	if _, ok := sink.heard(old.AccessHash); !ok {
		t.Fatal("the cache did not hear of the purged grant's access token")
	}
	if _, _, err := st.Authenticate(live.AccessHash); err != nil {
		t.Fatalf("Authenticate(live grant's token) after the purge = %v", err)
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM grants") + pgQueryInt(t, dbURL, "SELECT count(*) FROM auth_codes") +
		pgQueryInt(t, dbURL, "SELECT count(*) FROM device_auths"); n != 1 {
		t.Fatalf("%d grants, codes and device requests left; want the live grant only", n)
	}
	if n, err := st.PurgeOAuth(t.Context(), engineNow.Add(time.Hour)); n != 0 || err != nil {
		t.Fatalf("second PurgeOAuth = %d, %v; want 0", n, err)
	}
}

// TestPGOAuthRedeemRaceMakesOneGrant redeems one code from two instances
// at once, many times over: each time one redemption makes the grant and
// the other, finding the code used, revokes it.
func TestPGOAuthRedeemRaceMakesOneGrant(t *testing.T) {
	a, dbURL := newTestPGStore(t)
	b := openTestPGStore(t, dbURL)
	alice := engineUser(t, a, "alice", true)
	app := pgClient(t, a, "app")
	const rounds = 20
	for round := range rounds {
		code := pgCode(t, a, app.ID, alice.ID)
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, st := range []*pgStore{a, b} {
			wg.Go(func() {
				_, _, errs[i] = st.RedeemAuthCode(testActor, code, engineNow, pgIssue(t, alice.ID, engineNow))
			})
		}
		wg.Wait()
		slices.SortFunc(errs, func(x, y error) int { return cmpNil(x) - cmpNil(y) })
		if errs[0] != nil || !errors.Is(errs[1], errCodeUsed) {
			t.Fatalf("round %d: redemptions at once = %v; want one nil and one errCodeUsed", round, errs)
		}
	}
	// One grant made per round (the sequence counts them), none left.
	if n := pgQueryInt(t, dbURL, "SELECT last_value FROM grants_id_seq"); n != rounds {
		t.Fatalf("%d grants made in %d rounds; want one a round", n, rounds)
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM grants") + pgQueryInt(t, dbURL, "SELECT count(*) FROM tokens"); n != 0 {
		t.Fatalf("%d grants and tokens left; want 0", n)
	}
}

// cmpNil orders nil errors first.
func cmpNil(err error) int {
	if err == nil {
		return 0
	}
	return 1
}

// TestPGOAuthRefreshRace refreshes one refresh token from two instances at
// once: the first to lock the grant rotates it, the second finds the token
// used and revokes the grant, with the first's new tokens, everywhere.
func TestPGOAuthRefreshRace(t *testing.T) {
	dbURL := newTestPG(t)
	a, sinkA := listeningPGStore(t, dbURL)
	b, sinkB := listeningPGStore(t, dbURL)
	alice := engineUser(t, a, "alice", true)
	app := pgClient(t, a, "app")
	for round := range 10 {
		first := pgIssue(t, alice.ID, engineNow)
		if _, _, err := a.RedeemAuthCode(testActor, pgCode(t, a, app.ID, alice.ID), engineNow, first); err != nil {
			t.Fatal(err)
		}
		issues := []*oauthIssue{pgIssue(t, alice.ID, engineNow), pgIssue(t, alice.ID, engineNow)}
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i, st := range []*pgStore{a, b} {
			wg.Go(func() { _, _, errs[i] = st.RefreshGrant(testActor, first.RefreshHash, engineNow, issues[i]) })
		}
		wg.Wait()
		winner := slices.IndexFunc(errs, func(err error) bool { return err == nil })
		if winner < 0 || !errors.Is(errs[1-winner], errCodeUsed) {
			t.Fatalf("round %d: refreshes at once = %v; want one nil and one errCodeUsed", round, errs)
		}
		for _, sink := range []*fakeSink{sinkA, sinkB} {
			waitFor(t, func() bool { _, ok := sink.heard(issues[winner].AccessHash); return ok })
		}
		for _, st := range []*pgStore{a, b} {
			if _, _, err := st.Authenticate(issues[winner].AccessHash); !errors.Is(err, errNotFound) {
				t.Fatalf("round %d: Authenticate(winner's new token) = %v; want errNotFound", round, err)
			}
		}
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM grants") + pgQueryInt(t, dbURL, "SELECT count(*) FROM tokens"); n != 0 {
		t.Fatalf("%d grants and tokens left; want 0", n)
	}
}

// TestPGOAuthConcurrentRemovals runs refreshes, redemptions, client and
// user removals at once on two instances: none deadlocks (PostgreSQL
// would abort one transaction with an error) and nothing is left behind.
func TestPGOAuthConcurrentRemovals(t *testing.T) {
	a, dbURL := newTestPGStore(t)
	b := openTestPGStore(t, dbURL)
	engineUser(t, a, "root", true)
	for round := range 5 {
		var users []userRecord
		var clients []clientRecord
		for i := range 3 {
			users = append(users, engineUser(t, a, fmt.Sprintf("u%d-%d", round, i), false))
			clients = append(clients, pgClient(t, a, fmt.Sprintf("c%d-%d", round, i)))
		}
		var refresh []tokenHash
		var codes []tokenHash
		for _, u := range users {
			for _, c := range clients {
				issue := pgIssue(t, u.ID, engineNow)
				if _, _, err := a.RedeemAuthCode(testActor, pgCode(t, a, c.ID, u.ID), engineNow, issue); err != nil {
					t.Fatal(err)
				}
				refresh = append(refresh, issue.RefreshHash)
				codes = append(codes, pgCode(t, a, c.ID, u.ID))
			}
		}
		var wg sync.WaitGroup
		check := func(what string, err error) {
			if err != nil && !errors.Is(err, errNotFound) && !errors.Is(err, errCodeUsed) {
				t.Errorf("%s: %v", what, err)
			}
		}
		for i, h := range refresh {
			st := []*pgStore{a, b}[i%2]
			u := users[i/len(clients)]
			wg.Go(func() {
				_, _, err := st.RefreshGrant(testActor, h, engineNow, pgIssue(t, u.ID, engineNow))
				check("RefreshGrant", err)
			})
		}
		for i, h := range codes {
			st := []*pgStore{b, a}[i%2]
			u := users[i/len(clients)]
			wg.Go(func() {
				_, _, err := st.RedeemAuthCode(testActor, h, engineNow, pgIssue(t, u.ID, engineNow))
				check("RedeemAuthCode", err)
			})
		}
		for i, c := range clients {
			st := []*pgStore{a, b}[i%2]
			wg.Go(func() { _, err := st.DeleteClient(testActor, c.ID); check("DeleteClient", err) })
		}
		for i, u := range users {
			st := []*pgStore{b, a}[i%2]
			wg.Go(func() { check("DeleteUser", st.DeleteUser(testActor, u.ID)) })
		}
		wg.Wait()
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM grants") + pgQueryInt(t, dbURL, "SELECT count(*) FROM tokens") +
		pgQueryInt(t, dbURL, "SELECT count(*) FROM auth_codes") + pgQueryInt(t, dbURL, "SELECT count(*) FROM clients"); n != 0 {
		t.Fatalf("%d grants, tokens, codes and clients left; want 0", n)
	}
}

func TestPGOAuthCheckFindsMismatches(t *testing.T) {
	st, dbURL := newTestPGStore(t)
	alice := engineUser(t, st, "alice", true)
	app, tv := pgClient(t, st, "app"), pgClient(t, st, "tv")
	_, tok, err := st.RedeemAuthCode(testActor, pgCode(t, st, app.ID, alice.ID), engineNow, pgIssue(t, alice.ID, engineNow))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Check(); err != nil {
		t.Fatalf("Check of a sound database: %v", err)
	}
	pgExec(t, dbURL, "UPDATE tokens SET client_id = $2 WHERE id = $1", int64(tok.ID), tv.ID)
	pgExec(t, dbURL, "UPDATE clients SET name_key = 'other' WHERE id = $1", tv.ID)
	err = st.Check()
	for _, want := range []string{fmt.Sprintf("token %d is not of the user and client of its grant", tok.ID), `client "id-tv" ("tv") has the name key "other"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check = %v; want it to say %q", err, want)
		}
	}
}

// TestCopyKeepsOAuthThroughPG copies a bbolt deployment with OAuth clients
// and grants to PostgreSQL and back: clients, grants, their access tokens
// (with grant and client) and refresh tokens (used ones still known as
// used) arrive on both, and new grant ids continue past the copied ones.
func TestCopyKeepsOAuthThroughPG(t *testing.T) {
	pgURL := newTestPG(t)
	src := filepath.Join(t.TempDir(), "src.db")
	st, err := openStore(src, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	x := newOAuthFixture(t, st)
	alice := storeUser(t, st, "alice", false)
	bob := storeUser(t, st, "bob", false)
	app, tv := x.client("App"), x.client("TV")
	pub := clientRecord{ID: "id-cli", Name: "cli", Public: true, Device: true, CreatedAt: x.now}
	if err := st.CreateClient(testActor, &pub); err != nil {
		t.Fatal(err)
	}
	_, _, kept := x.grant(app, alice.ID, scopeTokensRead)
	rotated, _, first := x.grant(tv, bob.ID, scopeTokensRead, scopeTokensWrite)
	next := x.issue(bob.ID, x.now.Add(time.Hour), scopeTokensRead)
	if _, _, err := st.RefreshGrant(testActor, hashToken(first.refresh), x.now.Add(time.Hour), &next.issue); err != nil {
		t.Fatal(err)
	}
	_, personal := storeToken(t, st, alice.ID, "ci", nil)
	code := x.code(app, alice.ID)
	wantClients, _ := st.Clients()
	wantGrants := map[uint64][]grantRecord{}
	for _, u := range []uint64{alice.ID, bob.ID} {
		wantGrants[u], _ = st.GrantsOf(u)
	}
	st.Close()

	out, _, err := runCLI(t, "", "copy", "-from", src, "-to", pgURL)
	if err != nil || !strings.Contains(out, "3 OAuth clients, 2 grants with 3 refresh tokens") {
		t.Fatalf("copy bbolt → PostgreSQL = %q, %v; want 3 clients and 2 grants with 3 refresh tokens copied", out, err)
	}
	back := filepath.Join(t.TempDir(), "back.db")
	out, _, err = runCLI(t, "", "copy", "-from", pgURL, "-to", back)
	if err != nil || !strings.Contains(out, "3 OAuth clients, 2 grants with 3 refresh tokens") {
		t.Fatalf("copy PostgreSQL → bbolt = %q, %v; want 3 clients and 2 grants with 3 refresh tokens copied", out, err)
	}
	if n := pgQueryInt(t, pgURL, "SELECT count(*) FROM refresh_tokens WHERE used"); n != 1 {
		t.Errorf("%d used refresh tokens on PostgreSQL; want 1", n)
	}

	for _, tc := range []struct {
		name string
		st   store
	}{{"PostgreSQL", openTestPGStore(t, pgURL)}, {"bbolt copied back", openCopied(t, back)}} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.st
			if err := got.Check(); err != nil {
				t.Errorf("Check: %v", err)
			}
			clients, err := got.Clients()
			if err != nil || len(clients) != len(wantClients) {
				t.Fatalf("Clients = %+v, %v; want %d", clients, err, len(wantClients))
			}
			for i := range clients {
				if !sameClient(clients[i], wantClients[i]) {
					t.Errorf("client %d = %+v; want %+v", i, clients[i], wantClients[i])
				}
			}
			for user, want := range wantGrants {
				grants, err := got.GrantsOf(user)
				if err != nil || len(grants) != len(want) {
					t.Fatalf("GrantsOf(%d) = %+v, %v; want %d", user, grants, err, len(want))
				}
				for i := range grants {
					if !sameGrant(grants[i], want[i]) {
						t.Errorf("grant of user %d = %+v; want %+v", user, grants[i], want[i])
					}
				}
			}
			for _, secret := range []string{kept.access, next.access} {
				a, _, err := got.Authenticate(hashToken(secret))
				tok, _, terr := got.TokenByHash(hashToken(secret))
				if err != nil || terr != nil || a.Client == "" || tok.Grant == 0 || tok.Client != a.Client {
					t.Errorf("a grant's access token: %+v, %v / %+v, %v; want it with its grant and client", a, err, tok, terr)
				}
			}
			if list, err := got.TokensByOwner(alice.ID); err != nil || len(list) != 1 {
				t.Errorf("alice's personal tokens = %+v, %v; want the one personal token", list, err)
			}
			if _, _, err := got.Authenticate(hashToken(personal)); err != nil {
				t.Errorf("the personal token: %v", err)
			}
			if _, err := got.AuthCode(code); !errors.Is(err, errNotFound) {
				t.Errorf("a code in flight: %v; want errNotFound (not copied)", err)
			}
			// The live refresh token rotates; the rotated one replays as used.
			y := newOAuthFixture(t, got)
			again := y.issue(bob.ID, x.now.Add(2*time.Hour))
			if _, _, err := got.RefreshGrant(testActor, hashToken(next.refresh), x.now.Add(2*time.Hour), &again.issue); err != nil {
				t.Errorf("RefreshGrant with the live refresh token = %v", err)
			}
			if _, _, err := got.RefreshGrant(testActor, hashToken(first.refresh), x.now.Add(2*time.Hour), &y.issue(bob.ID, x.now).issue); !errors.Is(err, errCodeUsed) {
				t.Errorf("RefreshGrant with the rotated refresh token = %v; want errCodeUsed", err)
			}
			if g, _, _ := y.grant(app, bob.ID); g.ID <= rotated.ID {
				t.Errorf("a new grant got id %d; want past %d", g.ID, rotated.ID)
			}
		})
	}
}

// BenchmarkOAuthExchangeEngines times one authorization code redemption
// followed by one refresh, each a durable write transaction, on each
// engine, from one caller.
func BenchmarkOAuthExchangeEngines(b *testing.B) {
	pg, _ := newTestPGStore(b)
	bolt, _ := newTestDB(b)
	for _, e := range []struct {
		name string
		st   store
	}{{"bbolt", bolt}, {"postgres", pg}} {
		u := engineUser(b, e.st, "alice", false)
		app := pgClient(b, e.st, "app")
		b.Run(e.name, func(b *testing.B) {
			for b.Loop() {
				first := pgIssue(b, u.ID, engineNow)
				g, _, err := e.st.RedeemAuthCode(testActor, pgCode(b, e.st, app.ID, u.ID), engineNow, first)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := e.st.RefreshGrant(testActor, first.RefreshHash, engineNow, pgIssue(b, u.ID, engineNow)); err != nil {
					b.Fatal(err)
				}
				if _, err := e.st.DeleteGrant(testActor, g.ID, anyOwner); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
