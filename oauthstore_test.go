package main

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The behaviour suite of the OAuth store (oauthstore.go): every test runs
// on every engine through forEachEngine.

// oauthFixture makes clients, codes and tokens on one store at a fixed
// time.
type oauthFixture struct {
	t   *testing.T
	st  store
	now time.Time
	f   tokenFormat
}

func newOAuthFixture(t *testing.T, st store) *oauthFixture {
	return &oauthFixture{t: t, st: st, now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), f: mustFormat(t, defaultTokenPrefix)}
}

// secret returns a new random secret and its hash.
func (x *oauthFixture) secret() (string, tokenHash) {
	x.t.Helper()
	return x.secretTB(x.t)
}

// secretTB is secret for a benchmark, or any tb.
func (x *oauthFixture) secretTB(tb testing.TB) (string, tokenHash) {
	tb.Helper()
	s, err := x.f.generate()
	if err != nil {
		tb.Fatal(err)
	}
	return s, hashToken(s)
}

// client registers a confidential client called name that may also use
// the device grant.
func (x *oauthFixture) client(name string) clientRecord {
	x.t.Helper()
	_, sh := x.secret()
	c := clientRecord{
		ID: "id-" + strings.ToLower(name), Name: name, RedirectURIs: []string{"https://app.example/cb", "http://127.0.0.1/cb"},
		Device: true, SecretHash: &sh, AccessTTL: time.Hour, CreatedAt: x.now, CreatedBy: 1,
	}
	if err := x.st.CreateClient(testActor, &c); err != nil {
		x.t.Fatalf("CreateClient(%q): %v", name, err)
	}
	return c
}

// issued is an issue and the secrets it hashes.
type issued struct {
	issue           oauthIssue
	access, refresh string
}

// issue returns what an exchange at at issues for user: an access token
// with scopes for an hour, and a refresh token until at+30 days.
func (x *oauthFixture) issue(user uint64, at time.Time, scopes ...string) *issued {
	x.t.Helper()
	access, ah := x.secret()
	refresh, rh := x.secret()
	exp := at.Add(time.Hour)
	return &issued{
		issue: oauthIssue{
			Access:     tokenRecord{Owner: user, Name: "oauth", Scopes: scopes, CreatedAt: at, ExpiresAt: &exp, Hint: tokenHint(access)},
			AccessHash: ah, RefreshHash: rh, RefreshUntil: at.Add(30 * 24 * time.Hour),
		},
		access: access, refresh: refresh,
	}
}

// code stores an authorization code of c for user, valid for ten
// minutes from the fixture's time, and returns its hash.
func (x *oauthFixture) code(c clientRecord, user uint64, scopes ...string) tokenHash {
	x.t.Helper()
	_, h := x.secret()
	rec := authCodeRecord{Client: c.ID, User: user, Scopes: scopes, RedirectURI: c.RedirectURIs[0],
		Challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGlaWxjQ6I", CreatedAt: x.now, ExpiresAt: x.now.Add(10 * time.Minute)}
	if err := x.st.CreateAuthCode(h, rec); err != nil {
		x.t.Fatalf("CreateAuthCode: %v", err)
	}
	return h
}

// grant makes a grant of c to user through a code and returns it, its
// first access token and the secrets.
func (x *oauthFixture) grant(c clientRecord, user uint64, scopes ...string) (grantRecord, tokenRecord, *issued) {
	x.t.Helper()
	h := x.code(c, user, scopes...)
	is := x.issue(user, x.now, scopes...)
	g, tok, err := x.st.RedeemAuthCode(testActor, h, x.now, &is.issue)
	if err != nil {
		x.t.Fatalf("RedeemAuthCode: %v", err)
	}
	return g, tok, is
}

// authenticates reports whether secret verifies, twice so that the auth
// cache holds it; any error but errNotFound fails the test.
func authenticates(t *testing.T, st store, secret string) bool {
	t.Helper()
	for range 2 {
		_, _, err := st.Authenticate(hashToken(secret))
		if errors.Is(err, errNotFound) {
			return false
		}
		if err != nil {
			t.Fatalf("Authenticate: %v", err)
		}
	}
	return true
}

// grantIDs returns the ids of user's grants, as GrantsOf lists them.
func grantIDs(t *testing.T, st store, user uint64) []uint64 {
	t.Helper()
	list, err := st.GrantsOf(user)
	if err != nil {
		t.Fatalf("GrantsOf(%d): %v", user, err)
	}
	var ids []uint64
	for _, g := range list {
		ids = append(ids, g.ID)
	}
	return ids
}

func checkStore(t *testing.T, st store) {
	t.Helper()
	if err := st.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}
}

// TestEngineOAuthClients: clients are stored as given, unique by name
// ignoring case and by id, listed by name, and deleted.
func TestEngineOAuthClients(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		x := newOAuthFixture(t, st)
		zeta := x.client("Zeta")
		pub := clientRecord{ID: "id-alpha", Name: "alpha", RedirectURIs: []string{"com.example.app:/cb"}, Public: true, CreatedAt: x.now, CreatedBy: 1}
		if err := st.CreateClient(testActor, &pub); err != nil {
			t.Fatalf("CreateClient(public): %v", err)
		}
		got, err := st.ClientByID(zeta.ID)
		if err != nil || got.Name != "Zeta" || !slices.Equal(got.RedirectURIs, zeta.RedirectURIs) || !got.Device || got.Public ||
			got.SecretHash == nil || *got.SecretHash != *zeta.SecretHash || got.AccessTTL != time.Hour || !sameStoredTime(got.CreatedAt, x.now) || got.CreatedBy != 1 {
			t.Errorf("ClientByID = %+v, %v; want the client as stored", got, err)
		}
		if got, err := st.ClientByID("id-alpha"); err != nil || !got.Public || got.SecretHash != nil {
			t.Errorf("ClientByID(public) = %+v, %v; want a public client without secret", got, err)
		}
		for _, c := range []clientRecord{
			{ID: "id-other", Name: "ZETA", CreatedAt: x.now},
			{ID: zeta.ID, Name: "another name", CreatedAt: x.now},
		} {
			if err := st.CreateClient(testActor, &c); !errors.Is(err, errNameTaken) {
				t.Errorf("CreateClient(%q, %q) = %v; want errNameTaken", c.ID, c.Name, err)
			}
		}
		list, err := st.Clients()
		if err != nil || len(list) != 2 || list[0].Name != "alpha" || list[1].Name != "Zeta" {
			t.Errorf("Clients = %+v, %v; want alpha then Zeta", list, err)
		}
		if _, err := st.ClientByID("nope"); !errors.Is(err, errNotFound) {
			t.Errorf("ClientByID(unknown) = %v; want errNotFound", err)
		}
		if _, err := st.DeleteClient(testActor, "nope"); !errors.Is(err, errNotFound) {
			t.Errorf("DeleteClient(unknown) = %v; want errNotFound", err)
		}
		if c, err := st.DeleteClient(testActor, zeta.ID); err != nil || c.Name != "Zeta" {
			t.Errorf("DeleteClient = %+v, %v", c, err)
		}
		if _, err := st.ClientByID(zeta.ID); !errors.Is(err, errNotFound) {
			t.Errorf("ClientByID(deleted) = %v; want errNotFound", err)
		}
		// Its name is free again.
		again := clientRecord{ID: "id-zeta2", Name: "zeta", CreatedAt: x.now}
		if err := st.CreateClient(testActor, &again); err != nil {
			t.Errorf("CreateClient with a deleted client's name = %v", err)
		}
		checkStore(t, st)
	})
}

// TestEngineOAuthAuthCode: a code is stored as given and redeemed once
// into a grant and its first tokens; a second redemption revokes that
// grant, and the revocation has committed when errCodeUsed comes back.
func TestEngineOAuthAuthCode(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		x := newOAuthFixture(t, st)
		alice := storeUser(t, st, "alice", false)
		app := x.client("App")

		if _, h := x.secret(); st.CreateAuthCode(h, authCodeRecord{Client: "nope", User: alice.ID, ExpiresAt: x.now.Add(time.Minute)}) == nil {
			t.Error("CreateAuthCode for an unknown client succeeded")
		}
		_, personal := storeToken(t, st, alice.ID, "ci", nil, scopeTokensRead)
		h := x.code(app, alice.ID, scopeTokensRead, scopeTokensWrite)
		c, err := st.AuthCode(h)
		if err != nil || c.Client != app.ID || c.User != alice.ID || !slices.Equal(c.Scopes, []string{scopeTokensRead, scopeTokensWrite}) ||
			c.RedirectURI != app.RedirectURIs[0] || c.Challenge == "" || !sameStoredTime(c.ExpiresAt, x.now.Add(10*time.Minute)) || c.Grant != 0 {
			t.Fatalf("AuthCode = %+v, %v; want the code as stored", c, err)
		}
		if _, err := st.AuthCode(tokenHash{1}); !errors.Is(err, errNotFound) {
			t.Errorf("AuthCode(unknown) = %v; want errNotFound", err)
		}

		// Unknown, expired: refused, nothing made.
		is := x.issue(alice.ID, x.now, scopeTokensRead)
		if _, _, err := st.RedeemAuthCode(testActor, tokenHash{1}, x.now, &is.issue); !errors.Is(err, errNotFound) {
			t.Errorf("RedeemAuthCode(unknown) = %v; want errNotFound", err)
		}
		if _, _, err := st.RedeemAuthCode(testActor, h, x.now.Add(10*time.Minute), &is.issue); !errors.Is(err, errTokenExpired) {
			t.Errorf("RedeemAuthCode at its expiry = %v; want errTokenExpired", err)
		}
		if ids := grantIDs(t, st, alice.ID); len(ids) != 0 || authenticates(t, st, is.access) {
			t.Fatalf("after refused redemptions alice holds grants %v or the access token works", ids)
		}

		g, tok, err := st.RedeemAuthCode(testActor, h, x.now.Add(time.Minute), &is.issue)
		if err != nil {
			t.Fatalf("RedeemAuthCode = %v", err)
		}
		if g.ID == 0 || g.Client != app.ID || g.User != alice.ID || !slices.Equal(g.Scopes, c.Scopes) ||
			!sameStoredTime(g.CreatedAt, x.now.Add(time.Minute)) || !sameStoredTime(g.ExpiresAt, is.issue.RefreshUntil) || !g.RefreshedAt.IsZero() {
			t.Errorf("grant = %+v; want alice's grant of the code's scopes, created at redemption, expiring with the refresh token", g)
		}
		if tok.ID == 0 || tok.Grant != g.ID || tok.Client != app.ID || tok.Owner != alice.ID || !slices.Equal(tok.Scopes, []string{scopeTokensRead}) {
			t.Errorf("access token = %+v; want one of the grant, client and user", tok)
		}
		for _, from := range []string{"the database", "the auth cache"} {
			a, u, err := st.Authenticate(hashToken(is.access))
			if err != nil || a.ID != tok.ID || a.Owner != alice.ID || u.Name != "alice" || !slices.Equal(a.Scopes, []string{scopeTokensRead}) || a.Client != app.ID {
				t.Errorf("Authenticate(access) from %s = %+v, %+v, %v; want the token of alice and its client", from, a, u, err)
			}
		}
		if a, _, err := st.Authenticate(hashToken(personal)); err != nil || a.Client != "" {
			t.Errorf("Authenticate(personal token) = %+v, %v; want no client", a, err)
		}
		if got, _, err := st.TokenByHash(hashToken(is.access)); err != nil || got.Grant != g.ID || got.Client != app.ID {
			t.Errorf("TokenByHash(access) = %+v, %v; want Grant and Client kept", got, err)
		}
		if got, err := st.GrantOfRefresh(hashToken(is.refresh)); err != nil || got.ID != g.ID {
			t.Errorf("GrantOfRefresh = %+v, %v; want grant %d", got, err, g.ID)
		}
		if c, err := st.AuthCode(h); err != nil || c.Grant != g.ID {
			t.Errorf("AuthCode after redemption = %+v, %v; want Grant %d", c, err, g.ID)
		}
		if ids := grantIDs(t, st, alice.ID); !slices.Equal(ids, []uint64{g.ID}) {
			t.Errorf("GrantsOf(alice) = %v; want [%d]", ids, g.ID)
		}
		checkStore(t, st)

		// Replay: the grant goes, in a committed transaction.
		if !authenticates(t, st, is.access) {
			t.Fatal("the access token does not verify")
		}
		again := x.issue(alice.ID, x.now, scopeTokensRead)
		for range 2 {
			if _, _, err := st.RedeemAuthCode(testActor, h, x.now.Add(2*time.Minute), &again.issue); !errors.Is(err, errCodeUsed) {
				t.Errorf("RedeemAuthCode(used) = %v; want errCodeUsed", err)
			}
		}
		if authenticates(t, st, is.access) || authenticates(t, st, again.access) {
			t.Error("after a replayed code an access token still verifies")
		}
		if ids := grantIDs(t, st, alice.ID); len(ids) != 0 {
			t.Errorf("after a replayed code alice holds grants %v; want none", ids)
		}
		if _, err := st.GrantOfRefresh(hashToken(is.refresh)); !errors.Is(err, errNotFound) {
			t.Errorf("GrantOfRefresh of the revoked grant = %v; want errNotFound", err)
		}
		checkStore(t, st)

		// A code whose user is gone redeems nothing.
		bob := storeUser(t, st, "bob", false)
		hb := x.code(app, bob.ID)
		if err := st.DeleteUser(testActor, bob.ID); err != nil {
			t.Fatal(err)
		}
		bobs := x.issue(bob.ID, x.now)
		if _, _, err := st.RedeemAuthCode(testActor, hb, x.now, &bobs.issue); !errors.Is(err, errNotFound) {
			t.Errorf("RedeemAuthCode for a deleted user = %v; want errNotFound", err)
		}
		checkStore(t, st)
	})
}

// TestEngineOAuthRefresh: a refresh rotates the grant's tokens in one
// transaction: the old access token stops verifying (the auth cache
// included), the new one works, the old refresh token still names the
// grant, and using it again revokes the grant.
func TestEngineOAuthRefresh(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		x := newOAuthFixture(t, st)
		alice := storeUser(t, st, "alice", false)
		app := x.client("App")
		g, first, is := x.grant(app, alice.ID, scopeTokensRead)
		if !authenticates(t, st, is.access) {
			t.Fatal("the first access token does not verify")
		}

		at := x.now.Add(2 * time.Hour)
		next := x.issue(alice.ID, at, scopeTokensRead)
		g2, tok, err := st.RefreshGrant(testActor, hashToken(is.refresh), at, &next.issue)
		if err != nil {
			t.Fatalf("RefreshGrant = %v", err)
		}
		if g2.ID != g.ID || !sameStoredTime(g2.RefreshedAt, at) || !sameStoredTime(g2.ExpiresAt, next.issue.RefreshUntil) || !sameStoredTime(g2.CreatedAt, g.CreatedAt) {
			t.Errorf("refreshed grant = %+v; want the same grant refreshed at %v until %v", g2, at, next.issue.RefreshUntil)
		}
		if tok.Grant != g.ID || tok.Client != app.ID || tok.Owner != alice.ID || tok.ID == first.ID {
			t.Errorf("new access token = %+v; want a new token of the grant", tok)
		}
		if authenticates(t, st, is.access) {
			t.Error("the old access token verifies after the refresh")
		}
		if !authenticates(t, st, next.access) {
			t.Error("the new access token does not verify")
		}
		list, err := st.GrantsOf(alice.ID)
		if err != nil || len(list) != 1 || list[0].LastUsedAt == nil || !sameStoredTime(*list[0].LastUsedAt, at) {
			t.Errorf("GrantsOf after a refresh = %+v, %v; want one grant last used at the refresh", list, err)
		}
		if got, err := st.GrantOfRefresh(hashToken(is.refresh)); err != nil || got.ID != g.ID {
			t.Errorf("GrantOfRefresh(rotated) = %+v, %v; want the grant", got, err)
		}
		if _, _, err := st.TokenByHash(hashToken(next.access)); err != nil {
			t.Errorf("TokenByHash(new access) = %v", err)
		}
		checkStore(t, st)

		// The old refresh token again: the grant goes, committed.
		replay := x.issue(alice.ID, at, scopeTokensRead)
		if _, _, err := st.RefreshGrant(testActor, hashToken(is.refresh), at.Add(time.Minute), &replay.issue); !errors.Is(err, errCodeUsed) {
			t.Fatalf("RefreshGrant(rotated) = %v; want errCodeUsed", err)
		}
		if authenticates(t, st, next.access) || authenticates(t, st, replay.access) {
			t.Error("after a replayed refresh token an access token still verifies")
		}
		if ids := grantIDs(t, st, alice.ID); len(ids) != 0 {
			t.Errorf("after a replayed refresh token alice holds grants %v", ids)
		}
		if _, _, err := st.RefreshGrant(testActor, hashToken(next.refresh), at.Add(time.Minute), &replay.issue); !errors.Is(err, errNotFound) {
			t.Errorf("RefreshGrant with the revoked grant's latest refresh token = %v; want errNotFound", err)
		}
		checkStore(t, st)

		// A grant past its expiry refreshes nothing.
		g, _, is = x.grant(app, alice.ID, scopeTokensRead)
		late := x.issue(alice.ID, g.ExpiresAt, scopeTokensRead)
		if _, _, err := st.RefreshGrant(testActor, hashToken(is.refresh), g.ExpiresAt, &late.issue); !errors.Is(err, errTokenExpired) {
			t.Errorf("RefreshGrant at the grant's expiry = %v; want errTokenExpired", err)
		}
		if authenticates(t, st, late.access) || !authenticates(t, st, is.access) {
			t.Error("a refused refresh changed the grant's tokens")
		}
		if _, _, err := st.RefreshGrant(testActor, tokenHash{3}, x.now, &late.issue); !errors.Is(err, errNotFound) {
			t.Errorf("RefreshGrant(unknown) = %v; want errNotFound", err)
		}
		if _, err := st.GrantOfRefresh(tokenHash{3}); !errors.Is(err, errNotFound) {
			t.Errorf("GrantOfRefresh(unknown) = %v; want errNotFound", err)
		}
		checkStore(t, st)
	})
}

// TestEngineOAuthDevice: a device request from creation to tokens: user
// codes unique while live, polls that come too soon slow the device down
// and make the interval grow, one decision only, one redemption only, and
// expiry.
func TestEngineOAuthDevice(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		x := newOAuthFixture(t, st)
		alice := storeUser(t, st, "alice", false)
		tv := x.client("TV")
		request := func(at time.Time) (dev, uc tokenHash) {
			t.Helper()
			_, dev = x.secret()
			_, uc = x.secret()
			d := deviceAuthRecord{Client: tv.ID, Scopes: []string{scopeTokensRead, scopeTokensWrite}, CreatedAt: at, ExpiresAt: at.Add(10 * time.Minute), Interval: 5 * time.Second}
			if err := st.CreateDeviceAuth(dev, uc, d); err != nil {
				t.Fatalf("CreateDeviceAuth: %v", err)
			}
			return dev, uc
		}
		dev, uc := request(x.now)
		var other tokenHash
		other[0] = 7
		if err := st.CreateDeviceAuth(other, uc, deviceAuthRecord{Client: tv.ID, CreatedAt: x.now.Add(time.Minute), ExpiresAt: x.now.Add(time.Hour), Interval: time.Second}); !errors.Is(err, errCodeTaken) {
			t.Errorf("CreateDeviceAuth with a live user code = %v; want errCodeTaken", err)
		}
		d, err := st.DeviceAuthByUserCode(uc)
		if err != nil || d.Client != tv.ID || d.State != devicePending || d.Interval != 5*time.Second || !sameStoredTime(d.ExpiresAt, x.now.Add(10*time.Minute)) ||
			!slices.Equal(d.Scopes, []string{scopeTokensRead, scopeTokensWrite}) {
			t.Fatalf("DeviceAuthByUserCode = %+v, %v; want the request as stored", d, err)
		}
		if _, err := st.DeviceAuthByUserCode(tokenHash{1}); !errors.Is(err, errNotFound) {
			t.Errorf("DeviceAuthByUserCode(unknown) = %v; want errNotFound", err)
		}

		// Polls: the first is never too soon; one 2 s later is, and the
		// interval grows to 10 s; one 10 s after that is not.
		poll := func(at time.Time, wantSlow bool, wantInterval time.Duration) deviceAuthRecord {
			t.Helper()
			d, slow, err := st.PollDeviceAuth(dev, at)
			if err != nil || slow != wantSlow || d.Interval != wantInterval {
				t.Fatalf("PollDeviceAuth at +%v = interval %v, slowDown %v, %v; want interval %v, slowDown %v",
					at.Sub(x.now), d.Interval, slow, err, wantInterval, wantSlow)
			}
			return d
		}
		poll(x.now.Add(5*time.Second), false, 5*time.Second)
		poll(x.now.Add(7*time.Second), true, 5*time.Second)
		p := poll(x.now.Add(17*time.Second), false, 10*time.Second)
		if !sameStoredTime(p.LastPoll, x.now.Add(7*time.Second)) || p.State != devicePending {
			t.Errorf("the request before the third poll = %+v; want pending, last polled at +7s", p)
		}
		if _, _, err := st.PollDeviceAuth(tokenHash{1}, x.now); !errors.Is(err, errNotFound) {
			t.Errorf("PollDeviceAuth(unknown) = %v; want errNotFound", err)
		}

		is := x.issue(alice.ID, x.now.Add(time.Minute), scopeTokensRead)
		if _, _, err := st.RedeemDeviceAuth(testActor, dev, x.now.Add(time.Minute), &is.issue); !errors.Is(err, errNotFound) {
			t.Errorf("RedeemDeviceAuth(pending) = %v; want errNotFound", err)
		}
		if err := st.DecideDeviceAuth(uc, alice.ID, true, []string{scopeTokensRead}, x.now.Add(time.Minute)); err != nil {
			t.Fatalf("DecideDeviceAuth(approve) = %v", err)
		}
		if err := st.DecideDeviceAuth(uc, alice.ID, false, nil, x.now.Add(time.Minute)); !errors.Is(err, errCodeUsed) {
			t.Errorf("DecideDeviceAuth a second time = %v; want errCodeUsed", err)
		}
		if d, err := st.DeviceAuthByUserCode(uc); err != nil || d.State != deviceApproved || d.User != alice.ID || !slices.Equal(d.Approved, []string{scopeTokensRead}) {
			t.Errorf("after approval = %+v, %v; want approved by alice for tokens:read", d, err)
		}
		if d, _, err := st.PollDeviceAuth(dev, x.now.Add(time.Minute)); err != nil || d.State != deviceApproved {
			t.Errorf("PollDeviceAuth after approval = %+v, %v; want approved", d, err)
		}
		g, tok, err := st.RedeemDeviceAuth(testActor, dev, x.now.Add(time.Minute), &is.issue)
		if err != nil || g.User != alice.ID || g.Client != tv.ID || !slices.Equal(g.Scopes, []string{scopeTokensRead}) || tok.Grant != g.ID {
			t.Fatalf("RedeemDeviceAuth = %+v, %+v, %v; want alice's grant of the approved scopes", g, tok, err)
		}
		if d, err := st.DeviceAuthByUserCode(uc); err != nil || d.State != deviceIssued || d.Grant != g.ID {
			t.Errorf("after redemption = %+v, %v; want issued, grant %d", d, err, g.ID)
		}
		if !authenticates(t, st, is.access) {
			t.Fatal("the device's access token does not verify")
		}
		checkStore(t, st)
		replay := x.issue(alice.ID, x.now.Add(time.Minute), scopeTokensRead)
		if _, _, err := st.RedeemDeviceAuth(testActor, dev, x.now.Add(2*time.Minute), &replay.issue); !errors.Is(err, errCodeUsed) {
			t.Errorf("RedeemDeviceAuth a second time = %v; want errCodeUsed", err)
		}
		if authenticates(t, st, is.access) || len(grantIDs(t, st, alice.ID)) != 0 {
			t.Error("after a second redemption the grant or its access token remains")
		}

		// Denied: nothing to redeem.
		dev2, uc2 := request(x.now)
		if err := st.DecideDeviceAuth(uc2, alice.ID, false, nil, x.now.Add(time.Minute)); err != nil {
			t.Fatalf("DecideDeviceAuth(deny) = %v", err)
		}
		if d, _, err := st.PollDeviceAuth(dev2, x.now.Add(time.Minute)); err != nil || d.State != deviceDenied || d.User != alice.ID {
			t.Errorf("PollDeviceAuth after denial = %+v, %v; want denied by alice", d, err)
		}
		if _, _, err := st.RedeemDeviceAuth(testActor, dev2, x.now.Add(time.Minute), &replay.issue); !errors.Is(err, errNotFound) {
			t.Errorf("RedeemDeviceAuth(denied) = %v; want errNotFound", err)
		}

		// Expiry: no decision, no redemption.
		dev3, uc3 := request(x.now)
		if err := st.DecideDeviceAuth(uc3, alice.ID, true, nil, x.now.Add(10*time.Minute)); !errors.Is(err, errTokenExpired) {
			t.Errorf("DecideDeviceAuth at its expiry = %v; want errTokenExpired", err)
		}
		if err := st.DecideDeviceAuth(uc3, alice.ID, true, []string{scopeTokensRead}, x.now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.RedeemDeviceAuth(testActor, dev3, x.now.Add(10*time.Minute), &replay.issue); !errors.Is(err, errTokenExpired) {
			t.Errorf("RedeemDeviceAuth at its expiry = %v; want errTokenExpired", err)
		}
		if err := st.DecideDeviceAuth(tokenHash{1}, alice.ID, true, nil, x.now); !errors.Is(err, errNotFound) {
			t.Errorf("DecideDeviceAuth(unknown) = %v; want errNotFound", err)
		}
		// An expired request's user code may be given out again.
		var dev4 tokenHash
		dev4[0] = 4
		d4 := deviceAuthRecord{Client: tv.ID, CreatedAt: x.now.Add(10 * time.Minute), ExpiresAt: x.now.Add(20 * time.Minute), Interval: 5 * time.Second}
		if err := st.CreateDeviceAuth(dev4, uc3, d4); err != nil {
			t.Fatalf("CreateDeviceAuth with an expired request's user code = %v", err)
		}
		if d, err := st.DeviceAuthByUserCode(uc3); err != nil || d.State != devicePending || !sameStoredTime(d.ExpiresAt, d4.ExpiresAt) {
			t.Errorf("DeviceAuthByUserCode(reused) = %+v, %v; want the new request", d, err)
		}
		if len(grantIDs(t, st, alice.ID)) != 0 || authenticates(t, st, replay.access) {
			t.Error("refused redemptions made a grant")
		}
		checkStore(t, st)
	})
}

// TestEngineOAuthCascades: revoking a user's tokens (directly or with a
// password change), deleting the user, deleting a client and deleting a
// grant take every grant concerned with its tokens, from the very next
// verification on, and nothing else.
func TestEngineOAuthCascades(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		x := newOAuthFixture(t, st)
		root := storeUser(t, st, "root", true)
		alice := storeUser(t, st, "alice", false)
		bob := storeUser(t, st, "bob", false)
		app, other := x.client("App"), x.client("Other")

		// requests returns a code alice approved, a device request she
		// approved, and a device request no one decided yet.
		requests := func() (code, approved, pending tokenHash) {
			t.Helper()
			code = x.code(app, alice.ID)
			for i, uc := range []*tokenHash{&approved, &pending} {
				_, dev := x.secret()
				_, *uc = x.secret()
				if err := st.CreateDeviceAuth(dev, *uc, deviceAuthRecord{Client: app.ID, CreatedAt: x.now, ExpiresAt: x.now.Add(time.Hour), Interval: time.Second}); err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					if err := st.DecideDeviceAuth(*uc, alice.ID, true, nil, x.now); err != nil {
						t.Fatal(err)
					}
				}
			}
			return code, approved, pending
		}
		// requestsGone checks that alice's code and approved request went
		// with her tokens, and the undecided request stayed.
		requestsGone := func(what string, code, approved, pending tokenHash) {
			t.Helper()
			if _, err := st.AuthCode(code); !errors.Is(err, errNotFound) {
				t.Errorf("after %s alice's code: %v; want errNotFound", what, err)
			}
			if _, err := st.DeviceAuthByUserCode(approved); !errors.Is(err, errNotFound) {
				t.Errorf("after %s the device request alice approved: %v; want errNotFound", what, err)
			}
			if _, err := st.DeviceAuthByUserCode(pending); err != nil {
				t.Errorf("after %s an undecided device request: %v; want it kept", what, err)
			}
		}

		// RevokeTokensOf: a personal token and a grant's access token, and
		// the requests alice approved.
		_, personal := storeToken(t, st, alice.ID, "ci", nil)
		_, _, is := x.grant(app, alice.ID, scopeTokensRead)
		bobGrant, _, bobIs := x.grant(app, bob.ID, scopeTokensRead)
		bobCode := x.code(app, bob.ID)
		code, approved, pending := requests()
		for _, s := range []string{personal, is.access, bobIs.access} {
			if !authenticates(t, st, s) {
				t.Fatal("a fresh token does not verify")
			}
		}
		if n, err := st.RevokeTokensOf(testActor, alice.ID); err != nil || n != 2 {
			t.Errorf("RevokeTokensOf(alice) = %d, %v; want 2 (a personal token and a grant's)", n, err)
		}
		if authenticates(t, st, personal) || authenticates(t, st, is.access) || len(grantIDs(t, st, alice.ID)) != 0 {
			t.Error("after RevokeTokensOf alice's token, grant or access token remains")
		}
		if _, err := st.GrantOfRefresh(hashToken(is.refresh)); !errors.Is(err, errNotFound) {
			t.Errorf("GrantOfRefresh after RevokeTokensOf = %v; want errNotFound", err)
		}
		if !authenticates(t, st, bobIs.access) || !slices.Equal(grantIDs(t, st, bob.ID), []uint64{bobGrant.ID}) {
			t.Error("RevokeTokensOf(alice) touched bob's grant")
		}
		requestsGone("RevokeTokensOf", code, approved, pending)
		if _, err := st.AuthCode(bobCode); err != nil {
			t.Errorf("RevokeTokensOf(alice) took bob's code: %v", err)
		}

		// ChangePassword with revocation.
		_, _, is = x.grant(app, alice.ID, scopeTokensRead)
		authenticates(t, st, is.access)
		code, approved, pending = requests()
		n, _, err := st.ChangePassword(testActor, alice.ID, passwordChange{hash: "$argon2id$v=19$m=64,t=1,p=1$bmV3$a2V5", at: x.now, revokeTokens: true})
		if err != nil || n != 1 {
			t.Errorf("ChangePassword(revoke) = %d tokens, %v; want 1", n, err)
		}
		if authenticates(t, st, is.access) || len(grantIDs(t, st, alice.ID)) != 0 {
			t.Error("after ChangePassword with revocation alice's grant remains")
		}
		requestsGone("ChangePassword with revocation", code, approved, pending)
		// Without revocation, grants stay.
		g, _, is := x.grant(app, alice.ID, scopeTokensRead)
		if _, _, err := st.ChangePassword(testActor, alice.ID, passwordChange{hash: "$argon2id$v=19$m=64,t=1,p=1$b2xk$a2V5", at: x.now}); err != nil {
			t.Fatal(err)
		}
		if !authenticates(t, st, is.access) || !slices.Equal(grantIDs(t, st, alice.ID), []uint64{g.ID}) {
			t.Error("ChangePassword without revocation took alice's grant")
		}

		// DeleteGrant: only the owner's, or anyone's with anyOwner.
		if _, err := st.DeleteGrant(testActor, g.ID, bob.ID); !errors.Is(err, errNotFound) {
			t.Errorf("DeleteGrant(alice's, as bob) = %v; want errNotFound", err)
		}
		if got, err := st.DeleteGrant(testActor, g.ID, alice.ID); err != nil || got.ID != g.ID {
			t.Errorf("DeleteGrant(own) = %+v, %v", got, err)
		}
		if authenticates(t, st, is.access) {
			t.Error("a deleted grant's access token verifies")
		}
		if _, err := st.DeleteGrant(testActor, g.ID, anyOwner); !errors.Is(err, errNotFound) {
			t.Errorf("DeleteGrant(deleted) = %v; want errNotFound", err)
		}
		g, _, _ = x.grant(other, alice.ID)
		if _, err := st.DeleteGrant(testActor, g.ID, anyOwner); err != nil {
			t.Errorf("DeleteGrant(anyOwner) = %v", err)
		}

		// DeleteClient: its grants, tokens, codes and device requests go;
		// another client's stay.
		_, _, is = x.grant(app, alice.ID, scopeTokensRead)
		og, _, ois := x.grant(other, alice.ID, scopeTokensRead)
		authenticates(t, st, is.access)
		code = x.code(app, alice.ID)
		_, dev := x.secret()
		_, uc := x.secret()
		if err := st.CreateDeviceAuth(dev, uc, deviceAuthRecord{Client: app.ID, CreatedAt: x.now, ExpiresAt: x.now.Add(time.Hour), Interval: time.Second}); err != nil {
			t.Fatal(err)
		}
		if _, err := st.DeleteClient(testActor, app.ID); err != nil {
			t.Fatalf("DeleteClient = %v", err)
		}
		if authenticates(t, st, is.access) || authenticates(t, st, bobIs.access) || len(grantIDs(t, st, bob.ID)) != 0 {
			t.Error("after DeleteClient a grant of it or its token remains")
		}
		if _, err := st.AuthCode(code); !errors.Is(err, errNotFound) {
			t.Errorf("AuthCode of a deleted client = %v; want errNotFound", err)
		}
		if _, err := st.DeviceAuthByUserCode(uc); !errors.Is(err, errNotFound) {
			t.Errorf("DeviceAuthByUserCode of a deleted client = %v; want errNotFound", err)
		}
		if _, _, err := st.PollDeviceAuth(dev, x.now); !errors.Is(err, errNotFound) {
			t.Errorf("PollDeviceAuth of a deleted client = %v; want errNotFound", err)
		}
		if !authenticates(t, st, ois.access) || !slices.Equal(grantIDs(t, st, alice.ID), []uint64{og.ID}) {
			t.Error("DeleteClient(App) touched the grant of another client")
		}
		checkStore(t, st)

		// DeleteUser.
		app = x.client("App again")
		code, approved, pending = requests()
		if err := st.DeleteUser(testActor, alice.ID); err != nil {
			t.Fatal(err)
		}
		requestsGone("DeleteUser", code, approved, pending)
		if authenticates(t, st, ois.access) || len(grantIDs(t, st, alice.ID)) != 0 {
			t.Error("a deleted user's grant or its access token remains")
		}
		if _, err := st.GrantOfRefresh(hashToken(ois.refresh)); !errors.Is(err, errNotFound) {
			t.Errorf("GrantOfRefresh of a deleted user's grant = %v; want errNotFound", err)
		}
		if _, err := st.UserByID(root.ID); err != nil {
			t.Fatal(err)
		}
		checkStore(t, st)
	})
}

// TestEngineOAuthPersonalViews: a grant's access token is no personal
// token: the personal views and the per-user limit leave it out, while
// verification, lookup by hash, deletion by hash and last-use recording
// treat it as any token.
func TestEngineOAuthPersonalViews(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		x := newOAuthFixture(t, st)
		alice := storeUser(t, st, "alice", false)
		app := x.client("App")
		personal, _ := storeToken(t, st, alice.ID, "ci", nil)
		g, tok, is := x.grant(app, alice.ID, scopeTokensRead)

		if list, err := st.TokensByOwner(alice.ID); err != nil || len(list) != 1 || list[0].ID != personal.ID {
			t.Errorf("TokensByOwner = %+v, %v; want the personal token alone", list, err)
		}
		if list, err := st.AllTokens(); err != nil || len(list) != 1 || list[0].ID != personal.ID {
			t.Errorf("AllTokens = %+v, %v; want the personal token alone", list, err)
		}
		if counts, err := st.TokenCounts(); err != nil || counts[alice.ID] != 1 {
			t.Errorf("TokenCounts = %v, %v; want alice 1", counts, err)
		}
		for _, owner := range []uint64{alice.ID, anyOwner} {
			if _, err := st.TokenByID(tok.ID, owner); !errors.Is(err, errNotFound) {
				t.Errorf("TokenByID(grant's token, %d) = %v; want errNotFound", owner, err)
			}
			if _, err := st.DeleteToken(testActor, tok.ID, owner); !errors.Is(err, errNotFound) {
				t.Errorf("DeleteToken(grant's token, %d) = %v; want errNotFound", owner, err)
			}
			_, h := x.secret()
			if _, err := st.RotateToken(testActor, tok.ID, owner, h, "hint", x.now); !errors.Is(err, errNotFound) {
				t.Errorf("RotateToken(grant's token, %d) = %v; want errNotFound", owner, err)
			}
		}
		if !authenticates(t, st, is.access) {
			t.Error("the grant's token stopped verifying after refused personal-token calls")
		}
		// The limit counts personal tokens only: one more under a limit of 2.
		extra := tokenRecord{Owner: alice.ID, Name: "second", CreatedAt: x.now}
		_, h := x.secret()
		if err := st.CreateToken(testActor, &extra, h, 2); err != nil {
			t.Errorf("CreateToken under a limit of 2 with one personal token and one grant's = %v", err)
		}
		_, h = x.secret()
		third := tokenRecord{Owner: alice.ID, Name: "third", CreatedAt: x.now}
		if err := st.CreateToken(testActor, &third, h, 2); !errors.Is(err, errTooManyTokens) {
			t.Errorf("CreateToken past the limit = %v; want errTooManyTokens", err)
		}

		// Last use reaches GrantsOf.
		used := x.now.Add(5 * time.Minute)
		if err := st.FlushLastUsed(map[uint64]lastUse{tok.ID: {At: used, IP: "192.0.2.1"}}); err != nil {
			t.Fatal(err)
		}
		if list, err := st.GrantsOf(alice.ID); err != nil || len(list) != 1 || list[0].LastUsedAt == nil || !sameStoredTime(*list[0].LastUsedAt, used) {
			t.Errorf("GrantsOf after a use = %+v, %v; want last used at %v", list, err, used)
		}
		if got, _, err := st.TokenByHash(hashToken(is.access)); err != nil || got.LastUsedIP != "192.0.2.1" {
			t.Errorf("TokenByHash after a use = %+v, %v", got, err)
		}
		checkStore(t, st)
		if got, err := st.DeleteTokenByHash(testActor, hashToken(is.access), kindTokenRevoked); err != nil || got.ID != tok.ID {
			t.Errorf("DeleteTokenByHash(grant's token) = %+v, %v", got, err)
		}
		if authenticates(t, st, is.access) {
			t.Error("a grant's token deleted by hash still verifies")
		}
		if ids := grantIDs(t, st, alice.ID); !slices.Equal(ids, []uint64{g.ID}) {
			t.Errorf("GrantsOf after its access token was deleted = %v; want the grant kept", ids)
		}
		checkStore(t, st)
	})
}

// TestEngineOAuthGrantLimit: a user holds at most maxGrantsPerUser grants;
// a code refused for that stays unredeemed, and redeems once a grant went.
// GrantsOf lists them newest first.
func TestEngineOAuthGrantLimit(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		x := newOAuthFixture(t, st)
		alice := storeUser(t, st, "alice", false)
		bob := storeUser(t, st, "bob", false)
		app := x.client("App")
		var made []uint64
		for range maxGrantsPerUser {
			g, _, _ := x.grant(app, alice.ID)
			made = append(made, g.ID)
		}
		h := x.code(app, alice.ID)
		is := x.issue(alice.ID, x.now)
		if _, _, err := st.RedeemAuthCode(testActor, h, x.now, &is.issue); !errors.Is(err, errTooManyGrants) {
			t.Fatalf("RedeemAuthCode past the limit = %v; want errTooManyGrants", err)
		}
		if c, err := st.AuthCode(h); err != nil || c.Grant != 0 {
			t.Errorf("the refused code = %+v, %v; want it unredeemed", c, err)
		}
		if authenticates(t, st, is.access) {
			t.Error("a refused redemption's access token verifies")
		}
		x.grant(app, bob.ID) // another user's limit is their own
		slices.Reverse(made)
		if got := grantIDs(t, st, alice.ID); !slices.Equal(got, made) {
			t.Errorf("GrantsOf = %v; want %v, newest first", got, made)
		}
		if _, err := st.DeleteGrant(testActor, made[50], alice.ID); err != nil {
			t.Fatal(err)
		}
		if _, _, err := st.RedeemAuthCode(testActor, h, x.now, &is.issue); err != nil {
			t.Errorf("RedeemAuthCode once a grant went = %v", err)
		}
		checkStore(t, st)
	})
}

// TestEngineOAuthPurge: PurgeOAuth deletes the codes, device requests and
// grants expired at now, the grants with their tokens, and nothing live.
func TestEngineOAuthPurge(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		x := newOAuthFixture(t, st)
		alice := storeUser(t, st, "alice", false)
		app := x.client("App")
		oldCode := x.code(app, alice.ID) // expires at now+10m
		newDevice := func(exp time.Time) (tokenHash, tokenHash) {
			_, dev := x.secret()
			_, uc := x.secret()
			if err := st.CreateDeviceAuth(dev, uc, deviceAuthRecord{Client: app.ID, CreatedAt: x.now, ExpiresAt: exp, Interval: time.Second}); err != nil {
				t.Fatal(err)
			}
			return dev, uc
		}
		oldDev, oldUC := newDevice(x.now.Add(10 * time.Minute))
		liveDev, liveUC := newDevice(x.now.Add(time.Hour))

		// A grant expiring at now+30 days, one refreshed to later.
		expiring, _, expIs := x.grant(app, alice.ID, scopeTokensRead)
		_, _, liveIs := x.grant(app, alice.ID, scopeTokensRead)
		next := x.issue(alice.ID, x.now.Add(time.Hour), scopeTokensRead)
		next.issue.RefreshUntil = expiring.ExpiresAt.Add(time.Hour)
		live, _, err := st.RefreshGrant(testActor, hashToken(liveIs.refresh), x.now.Add(time.Hour), &next.issue)
		if err != nil {
			t.Fatal(err)
		}
		authenticates(t, st, expIs.access)
		// Codes expire ten minutes after the fixture's time: move it on.
		x.now = x.now.Add(20 * time.Minute)
		liveCode := x.code(app, alice.ID)

		ended, cancel := context.WithCancel(context.Background())
		cancel()
		if n, err := st.PurgeOAuth(ended, expiring.ExpiresAt); err != nil || n != 0 {
			t.Errorf("PurgeOAuth with an ended context = %d, %v; want nothing done, no error", n, err)
		}
		n, err := st.PurgeOAuth(context.Background(), x.now.Add(-10*time.Minute))
		// Then the old code, the two redeemed ones and oldDev expire.
		if err != nil || n != 4 {
			t.Errorf("PurgeOAuth at the codes' expiry = %d, %v; want 4", n, err)
		}
		if _, err := st.AuthCode(oldCode); !errors.Is(err, errNotFound) {
			t.Errorf("an expired code after the purge: %v; want errNotFound", err)
		}
		if _, err := st.DeviceAuthByUserCode(oldUC); !errors.Is(err, errNotFound) {
			t.Errorf("an expired device request after the purge: %v; want errNotFound", err)
		}
		if _, _, err := st.PollDeviceAuth(oldDev, x.now); !errors.Is(err, errNotFound) {
			t.Errorf("PollDeviceAuth(purged) = %v; want errNotFound", err)
		}
		if _, err := st.AuthCode(liveCode); err != nil {
			t.Errorf("a live code after the purge: %v", err)
		}
		if _, err := st.DeviceAuthByUserCode(liveUC); err != nil {
			t.Errorf("a live device request after the purge: %v", err)
		}
		if _, _, err := st.PollDeviceAuth(liveDev, x.now); err != nil {
			t.Errorf("PollDeviceAuth(live) after the purge: %v", err)
		}
		if got := grantIDs(t, st, alice.ID); len(got) != 2 {
			t.Errorf("grants after a purge before their expiry = %v; want both", got)
		}

		n, err = st.PurgeOAuth(context.Background(), expiring.ExpiresAt)
		if err != nil || n != 3 { // the expiring grant, liveCode, liveDev
			t.Errorf("PurgeOAuth at the grant's expiry = %d, %v; want 3", n, err)
		}
		if got := grantIDs(t, st, alice.ID); !slices.Equal(got, []uint64{live.ID}) {
			t.Errorf("grants after the purge = %v; want the refreshed one alone", got)
		}
		if authenticates(t, st, expIs.access) {
			t.Error("a purged grant's access token verifies")
		}
		if _, err := st.GrantOfRefresh(hashToken(expIs.refresh)); !errors.Is(err, errNotFound) {
			t.Errorf("GrantOfRefresh of a purged grant = %v; want errNotFound", err)
		}
		if !authenticates(t, st, next.access) {
			t.Error("the live grant's access token stopped verifying")
		}
		if n, err := st.PurgeOAuth(context.Background(), expiring.ExpiresAt); err != nil || n != 0 {
			t.Errorf("a second purge = %d, %v; want 0", n, err)
		}
		checkStore(t, st)
	})
}

// TestBoltOAuthCheckFindsBrokenIndexes breaks one index entry of the OAuth
// buckets at a time behind the store's back: Check names each.
func TestBoltOAuthCheckFindsBrokenIndexes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		want   string
		damage func(tx *bolt.Tx, g grantRecord, tok tokenRecord, refresh tokenHash) error
	}{
		{"grants_by_user entry missing", "no grants_by_user entry", func(tx *bolt.Tx, g grantRecord, _ tokenRecord, _ tokenHash) error {
			return tx.Bucket(bucketGrantsByUser).Delete(pairKey(g.User, g.ID))
		}},
		{"grants_by_client entry astray", "grants_by_client", func(tx *bolt.Tx, g grantRecord, _ tokenRecord, _ tokenHash) error {
			return tx.Bucket(bucketGrantsByClient).Put(grantClientKey("ghost", g.ID), nil)
		}},
		{"grant_tokens entry missing", "no grant_tokens entry", func(tx *bolt.Tx, g grantRecord, tok tokenRecord, _ tokenHash) error {
			return tx.Bucket(bucketGrantTokens).Delete(pairKey(g.ID, tok.ID))
		}},
		{"grant gone under its token", "missing grant", func(tx *bolt.Tx, g grantRecord, _ tokenRecord, _ tokenHash) error {
			return tx.Bucket(bucketGrants).Delete(itob(g.ID))
		}},
		{"grant token in tokens_by_owner", "tokens_by_owner", func(tx *bolt.Tx, _ grantRecord, tok tokenRecord, _ tokenHash) error {
			return tx.Bucket(bucketTokensByOwner).Put(pairKey(tok.Owner, tok.ID), nil)
		}},
		{"refresh row without index", "no grant_refresh entry", func(tx *bolt.Tx, g grantRecord, _ tokenRecord, h tokenHash) error {
			return tx.Bucket(bucketGrantRefresh).Delete(grantRefreshKey(g.ID, h))
		}},
		{"clients_by_name astray", "clients_by_name", func(tx *bolt.Tx, _ grantRecord, _ tokenRecord, _ tokenHash) error {
			return tx.Bucket(bucketClientsByName).Put([]byte("ghost"), []byte("id-app"))
		}},
		{"device_by_user_code astray", "device_by_user_code", func(tx *bolt.Tx, _ grantRecord, _ tokenRecord, h tokenHash) error {
			return tx.Bucket(bucketDeviceByUser).Put(h[:], h[:])
		}},
		{"code without user entry", "no requests_by_user entry", func(tx *bolt.Tx, _ grantRecord, _ tokenRecord, _ tokenHash) error {
			k, _ := tx.Bucket(bucketRequestsByUser).Cursor().First()
			return tx.Bucket(bucketRequestsByUser).Delete(slices.Clone(k))
		}},
		{"code without expiry entry", "no requests_by_expiry entry", func(tx *bolt.Tx, _ grantRecord, _ tokenRecord, _ tokenHash) error {
			c := tx.Bucket(bucketRequestsByExpiry).Cursor()
			k, _ := c.First()
			return tx.Bucket(bucketRequestsByExpiry).Delete(slices.Clone(k))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, _ := newTestDB(t)
			x := newOAuthFixture(t, st)
			alice := storeUser(t, st, "alice", false)
			app := x.client("App")
			g, tok, is := x.grant(app, alice.ID, scopeTokensRead)
			x.code(app, alice.ID)
			if err := st.Check(); err != nil {
				t.Fatalf("Check before breaking = %v", err)
			}
			if err := st.db.Update(func(tx *bolt.Tx) error { return tc.damage(tx, g, tok, hashToken(is.refresh)) }); err != nil {
				t.Fatal(err)
			}
			if err := st.Check(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Check = %v; want a problem naming %q", err, tc.want)
			}
		})
	}
}

// TestUpgradeSchema2 opens a file of schema 2 (no OAuth buckets): read-only
// it is refused, opened for writing it gains the buckets and works.
func TestUpgradeSchema2(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v2.db")
	st, err := openStore(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	alice := storeUser(t, st, "alice", false)
	_, secret := storeToken(t, st, alice.ID, "ci", nil)
	err = st.db.Update(func(tx *bolt.Tx) error {
		for _, name := range oauthBuckets {
			if err := tx.DeleteBucket(name); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, itob(2))
	})
	st.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openStoreWith(path, bolt.Options{Timeout: time.Second, ReadOnly: true}); !errors.Is(err, errUnsupportedData) {
		t.Errorf("read-only open of a schema 2 file = %v; want errUnsupportedData", err)
	}
	st, err = openStore(path, time.Second)
	if err != nil {
		t.Fatalf("open a schema 2 file: %v", err)
	}
	defer st.Close()
	if _, _, err := st.Authenticate(hashToken(secret)); err != nil {
		t.Errorf("a token of before the upgrade: %v", err)
	}
	x := newOAuthFixture(t, st)
	app := x.client("App")
	if _, _, is := x.grant(app, alice.ID); !authenticates(t, st, is.access) {
		t.Error("a grant made after the upgrade does not verify")
	}
	checkStore(t, st)
	st.db.View(func(tx *bolt.Tx) error {
		if v := btoi(tx.Bucket(bucketMeta).Get(keySchema)); v != schemaVersion || schemaVersion != 4 {
			t.Errorf("schema after the upgrade = %d; want 4", v)
		}
		return nil
	})
}

// TestEngineOAuthRedeemRace redeems one code, and then rotates one refresh
// token, from many goroutines at once: exactly one succeeds, the next
// hears errCodeUsed, and since a second use revokes the grant, none is
// left and no access token issued verifies. (A code stays to answer
// errCodeUsed to every later use; a refresh token goes with its grant, so
// uses after the revocation hear errNotFound.)
func TestEngineOAuthRedeemRace(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		x := newOAuthFixture(t, st)
		alice := storeUser(t, st, "alice", false)
		app := x.client("App")
		const racers = 6
		race := func(what string, afterRevocation error, call func(is *issued) error) {
			t.Helper()
			var issues [racers]*issued
			for i := range issues {
				issues[i] = x.issue(alice.ID, x.now, scopeTokensRead)
			}
			errs := make(chan error, racers)
			var wg sync.WaitGroup
			for i := range racers {
				wg.Go(func() { errs <- call(issues[i]) })
			}
			wg.Wait()
			close(errs)
			won, used := 0, 0
			for err := range errs {
				switch {
				case err == nil:
					won++
				case errors.Is(err, errCodeUsed):
					used++
				case !errors.Is(err, afterRevocation):
					t.Errorf("%s raced: %v; want nil, errCodeUsed or %v", what, err, afterRevocation)
				}
			}
			if won != 1 || used == 0 {
				t.Errorf("%s raced: %d succeeded, %d heard errCodeUsed; want exactly 1 and at least 1", what, won, used)
			}
			if ids := grantIDs(t, st, alice.ID); len(ids) != 0 {
				t.Errorf("after %s raced alice holds grants %v; want none (reuse revokes)", what, ids)
			}
			for _, is := range issues {
				if authenticates(t, st, is.access) {
					t.Errorf("after %s raced an access token verifies", what)
				}
			}
		}
		h := x.code(app, alice.ID, scopeTokensRead)
		race("RedeemAuthCode", errCodeUsed, func(is *issued) error {
			_, _, err := st.RedeemAuthCode(testActor, h, x.now, &is.issue)
			return err
		})
		_, _, first := x.grant(app, alice.ID, scopeTokensRead)
		race("RefreshGrant", errNotFound, func(is *issued) error {
			_, _, err := st.RefreshGrant(testActor, hashToken(first.refresh), x.now.Add(time.Minute), &is.issue)
			return err
		})
		checkStore(t, st)
	})
}

// TestBoltOAuthAtTheCreationLimit: once the database has reached its
// creation limit, the OAuth store refuses what creates (clients, codes,
// device requests, grants, refreshes) with errSpaceReserved and changes
// nothing, while revocations, a replayed code's revocation and deletions
// still go through.
func TestBoltOAuthAtTheCreationLimit(t *testing.T) {
	st, _ := newTestDB(t)
	x := newOAuthFixture(t, st)
	alice := storeUser(t, st, "alice", false)
	app := x.client("App")
	g, _, is := x.grant(app, alice.ID, scopeTokensRead)
	replayed := x.code(app, alice.ID)
	first := x.issue(alice.ID, x.now)
	if _, _, err := st.RedeemAuthCode(testActor, replayed, x.now, &first.issue); err != nil {
		t.Fatal(err)
	}
	pending := x.code(app, alice.ID)
	before := dumpStore(t, st)

	st.creationLimit = 1 // every page in use lies past it: the database is full
	more := x.issue(alice.ID, x.now)
	c := clientRecord{ID: "id-new", Name: "new", CreatedAt: x.now}
	_, h := x.secret()
	_, uc := x.secret()
	for what, err := range map[string]error{
		"CreateClient":     st.CreateClient(testActor, &c),
		"CreateAuthCode":   st.CreateAuthCode(h, authCodeRecord{Client: app.ID, User: alice.ID, ExpiresAt: x.now.Add(time.Minute)}),
		"CreateDeviceAuth": st.CreateDeviceAuth(h, uc, deviceAuthRecord{Client: app.ID, CreatedAt: x.now, ExpiresAt: x.now.Add(time.Minute)}),
	} {
		if !errors.Is(err, errSpaceReserved) {
			t.Errorf("%s when full = %v; want errSpaceReserved", what, err)
		}
	}
	if _, _, err := st.RedeemAuthCode(testActor, pending, x.now, &more.issue); !errors.Is(err, errSpaceReserved) {
		t.Errorf("RedeemAuthCode when full = %v; want errSpaceReserved", err)
	}
	if _, _, err := st.RefreshGrant(testActor, hashToken(is.refresh), x.now, &more.issue); !errors.Is(err, errSpaceReserved) {
		t.Errorf("RefreshGrant when full = %v; want errSpaceReserved", err)
	}
	assertUnchanged(t, "refused creations when full", before, dumpStore(t, st))

	if _, _, err := st.RedeemAuthCode(testActor, replayed, x.now, &more.issue); !errors.Is(err, errCodeUsed) {
		t.Errorf("RedeemAuthCode(replayed) when full = %v; want errCodeUsed", err)
	}
	if authenticates(t, st, first.access) {
		t.Error("a replayed code's grant survived when full")
	}
	if _, err := st.DeleteGrant(testActor, g.ID, alice.ID); err != nil {
		t.Errorf("DeleteGrant when full = %v", err)
	}
	if _, err := st.DeleteClient(testActor, app.ID); err != nil {
		t.Errorf("DeleteClient when full = %v", err)
	}
	if _, err := st.AuthCode(pending); !errors.Is(err, errNotFound) {
		t.Errorf("a deleted client's code: %v; want errNotFound", err)
	}
	checkStore(t, st)
}
