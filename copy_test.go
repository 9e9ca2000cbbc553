package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// copyFixture is a deployment in a closed bbolt file: what the copy
// tests move around, with the secrets that must keep working.
type copyFixture struct {
	path     string
	users    []userRecord
	secrets  map[uint64]string // token id → secret
	sessions []sessionHash
	used     uint64 // the token with a last use
}

// newCopyFixture writes users, tokens (one expiring, one without scopes,
// one used), sessions and a gap in the ids (a removed user and a revoked
// token) to a bbolt file, and closes it.
func newCopyFixture(t *testing.T) copyFixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "src.db")
	st, err := openStore(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	fx := copyFixture{path: path, secrets: map[uint64]string{}}
	now := time.Date(2030, 1, 2, 3, 4, 5, 678, time.UTC)
	for i, name := range []string{"alice", "gone", "Bob", "carol"} {
		u := newUser(name, fmt.Sprintf("$argon2id$v=19$m=64,t=1,p=1$c2FsdA$%d", i), i == 0, now.Add(time.Duration(i)*time.Minute))
		if err := st.CreateUser(testActor, &u); err != nil {
			t.Fatal(err)
		}
		fx.users = append(fx.users, u)
	}
	if err := st.DeleteUser(testActor, fx.users[1].ID); err != nil {
		t.Fatal(err)
	}
	fx.users = append(fx.users[:1], fx.users[2:]...)
	f := mustFormat(t, defaultTokenPrefix)
	expires := now.Add(48 * time.Hour)
	for i := range 9 {
		secret, err := f.generate()
		if err != nil {
			t.Fatal(err)
		}
		tok := tokenRecord{Owner: fx.users[i%3].ID, Name: fmt.Sprintf("token %d", i), Scopes: []string{scopeTokensRead, "app:write"},
			CreatedAt: now.Add(time.Duration(i) * time.Second), Hint: tokenHint(secret)}
		switch i {
		case 1:
			tok.ExpiresAt = &expires
		case 2:
			tok.Scopes = nil
		}
		if err := st.CreateToken(testActor, &tok, hashToken(secret), 0); err != nil {
			t.Fatal(err)
		}
		if i == 4 {
			if _, err := st.DeleteToken(testActor, tok.ID, anyOwner); err != nil {
				t.Fatal(err)
			}
			continue
		}
		fx.secrets[tok.ID] = secret
		fx.used = tok.ID
	}
	if err := st.FlushLastUsed(map[uint64]lastUse{fx.used: {At: now.Add(time.Hour), IP: "192.0.2.7"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		_, h, err := newSessionSecret()
		if err != nil {
			t.Fatal(err)
		}
		at := now.Add(time.Duration(i) * time.Minute)
		rec := sessionRecord{User: fx.users[i%2].ID, CreatedAt: at, ExpiresAt: at.Add(12 * time.Hour), LastSeenAt: at.Add(time.Second),
			SignedInAt: at, Addr: "192.0.2.1", Agent: "Firefox on Linux"}
		if err := st.CreateSession(testActor, h, rec, nil, 0); err != nil {
			t.Fatal(err)
		}
		fx.sessions = append(fx.sessions, h)
	}
	return fx
}

// openCopied opens the bbolt file at path and closes it when the test ends.
func openCopied(t *testing.T, path string) *boltStore {
	t.Helper()
	st, err := openStore(path, time.Second)
	if err != nil {
		t.Fatalf("open the copy %s: %v", path, err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// checkCopied checks that st holds the fixture as want (the source)
// describes it: every token verifies with its secret, every session is
// found, and the next ids lie past every copied one.
func checkCopied(t *testing.T, name string, st store, want string, fx copyFixture) {
	t.Helper()
	if got := storeContents(t, st); got != want {
		t.Errorf("%s holds\n%s\nwant, as the source holds,\n%s", name, got, want)
	}
	for id, secret := range fx.secrets {
		a, u, err := st.Authenticate(hashToken(secret))
		if err != nil || a.ID != id || u.ID != a.Owner {
			t.Errorf("%s: Authenticate(token %d's secret) = %+v, %+v, %v; want token %d and its owner", name, id, a, u, err, id)
		}
	}
	tok, err := st.TokenByID(fx.used, anyOwner)
	if err != nil || tok.LastUsedAt == nil || tok.LastUsedIP != "192.0.2.7" {
		t.Errorf("%s: token %d = %+v, %v; want its last use from 192.0.2.7", name, fx.used, tok, err)
	}
	for _, h := range fx.sessions {
		if _, u, err := st.SessionByHash(h); err != nil || u.ID == 0 {
			t.Errorf("%s: SessionByHash(%x) = user %d, %v; want the session", name, h[:4], u.ID, err)
		}
	}
	u := newUser("dave", "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$x", false, time.Now())
	if err := st.CreateUser(testActor, &u); err != nil {
		t.Fatalf("%s: CreateUser after the copy: %v", name, err)
	}
	var maxToken uint64
	for id := range fx.secrets {
		maxToken = max(maxToken, id)
	}
	tok = tokenRecord{Owner: u.ID, Name: "new", CreatedAt: time.Now(), Hint: "abcd"}
	if err := st.CreateToken(testActor, &tok, hashToken("tkd_new"+name), 0); err != nil {
		t.Fatalf("%s: CreateToken after the copy: %v", name, err)
	}
	// The removed user (id 2) and the revoked token (id 5) count too: their
	// ids were handed out.
	if u.ID <= 4 || tok.ID <= max(maxToken, 9) {
		t.Errorf("%s: after the copy a new user got id %d and a new token %d; want them past every id handed out (user 4, token %d)", name, u.ID, tok.ID, max(maxToken, 9))
	}
}

// TestCopyRoundTrip copies a bbolt deployment to PostgreSQL and back to a
// new bbolt file: users with their password hashes, tokens that verify
// with their secrets, last uses, sessions and ids all arrive unchanged,
// the source is left as it was, and new ids continue past the copied ones.
func TestCopyRoundTrip(t *testing.T) {
	pgURL := newTestPG(t)
	fx := newCopyFixture(t)
	before := snapshotFile(t, fx.path)
	want := contentsOf(t, fx.path)

	stdout, _, err := runCLI(t, "", "copy", "-from", fx.path, "-to", pgURL)
	if err != nil {
		t.Fatalf("copy bbolt → PostgreSQL: %v", err)
	}
	if !strings.HasPrefix(stdout, "copied 3 users, 8 tokens, 3 sessions from "+fx.path+" to ") ||
		!strings.Contains(stdout, "new user ids start after") {
		t.Errorf("copy printed %q; want the counts and where ids continue", stdout)
	}
	assertUnchanged(t, "the source after the copy", before, snapshotFile(t, fx.path))

	back := filepath.Join(t.TempDir(), "back.db")
	if _, _, err := runCLI(t, "", "copy", "-from", pgURL, "-to", back); err != nil {
		t.Fatalf("copy PostgreSQL → bbolt: %v", err)
	}
	if mode, err := fileMode(back); err != nil || mode != 0o600 {
		t.Errorf("the bbolt copy has mode %v, %v; want 0600", mode, err)
	}

	pgAgain := newTestPG(t)
	if _, _, err := runCLI(t, "", "copy", "-from", pgURL, "-to", pgAgain); err != nil {
		t.Fatalf("copy PostgreSQL → PostgreSQL: %v", err)
	}

	checkCopied(t, "PostgreSQL", openTestPGStore(t, pgURL), want, fx)
	checkCopied(t, "PostgreSQL copied from PostgreSQL", openTestPGStore(t, pgAgain), want, fx)
	checkCopied(t, "bbolt", openCopied(t, back), want, fx)
}

// contentsOf returns storeContents of the bbolt file at path, opening and
// closing it.
func contentsOf(t *testing.T, path string) string {
	t.Helper()
	st, err := openStore(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	return storeContents(t, st)
}

// TestCopyRefusals pins what tokend copy refuses, each time changing
// nothing: a target that holds anything, a URL that does not parse, a
// missing source, one store named twice, a folder that does not exist,
// and a target that fails part-way, which keeps none of the copy.
func TestCopyRefusals(t *testing.T) {
	pgURL := newTestPG(t)
	fx := newCopyFixture(t)
	source := snapshotFile(t, fx.path)
	dir := t.TempDir()

	// A bbolt target with a user in it.
	full, fullPath := newTestDB(t)
	storeUser(t, full, "zoe", true)
	full.Close()
	fullBefore := snapshotFile(t, fullPath)

	// A PostgreSQL target with a user in it.
	occupied := newTestPG(t)
	pgOccupied := openTestPGStore(t, occupied)
	storeUser(t, pgOccupied, "zoe", true)
	occupiedBefore := storeContents(t, pgOccupied)

	// A PostgreSQL target that takes the users and then fails on a token.
	failing := newTestPG(t)
	pgFailing := openTestPGStore(t, failing)
	pgExec(t, failing, "ALTER TABLE tokens ADD CONSTRAINT no_token_7 CHECK (name <> 'token 7')")

	missing := filepath.Join(dir, "missing.db")
	newFile := filepath.Join(dir, "new.db")
	for _, tc := range []struct {
		name     string
		from, to string
		want     string
	}{
		{"bbolt target not empty", fx.path, fullPath, "the target is not empty: " + fullPath + " holds 1 users, 0 tokens, 0 sessions"},
		{"PostgreSQL target not empty", fx.path, occupied, "the target is not empty"},
		{"bad target URL", fx.path, "postgres://a:b@%zz/x", "not a valid PostgreSQL URL"},
		{"bad source URL", "postgres://a:b@%zz/x", newFile, "not a valid PostgreSQL URL"},
		{"missing source", missing, newFile, "source: no database at " + missing + "; name"},
		{"source without tokend tables", pgURL, newFile, "no database at"},
		{"same file", fx.path, filepath.Join(filepath.Dir(fx.path), ".", "src.db"), "name the same store"},
		{"same database", pgURL, pgURL, "name the same store"},
		{"missing folder", fx.path, filepath.Join(dir, "nope", "x.db"), "does not exist"},
		{"target fails part-way", fx.path, failing, "no_token_7"},
		{"nothing named", fx.path, "", "name both stores"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := runCLI(t, "", "copy", "-from", tc.from, "-to", tc.to)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("copy -from %s -to %s = %v; want an error saying %q", tc.from, tc.to, err, tc.want)
			}
			if strings.Contains(err.Error(), ":b@") {
				t.Errorf("the error %q shows a URL's password", err)
			}
		})
	}
	assertUnchanged(t, "the source", source, snapshotFile(t, fx.path))
	assertUnchanged(t, "the bbolt target that held a user", fullBefore, snapshotFile(t, fullPath))
	if got := storeContents(t, pgOccupied); got != occupiedBefore {
		t.Errorf("the PostgreSQL target that held a user now holds\n%s\nwant\n%s", got, occupiedBefore)
	}
	if got := storeContents(t, pgFailing); got != "" {
		t.Errorf("the PostgreSQL target that failed part-way holds\n%s\nwant nothing", got)
	}
	if names := dirNames(t, dir); len(names) != 0 {
		t.Errorf("the refusals left %q behind; want nothing", names)
	}
	if n := pgQueryInt(t, pgURL, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"); n != 0 {
		t.Errorf("reading an empty database as a source created %d tables there; want none", n)
	}
}

// TestCopyIntoEmptyBoltFile copies into a bbolt file that exists but
// holds nothing, as a server leaves it before anyone signs up: it is
// replaced, and ids it handed out are not handed out again.
func TestCopyIntoEmptyBoltFile(t *testing.T) {
	fx := newCopyFixture(t)
	st, path := newTestDB(t)
	if _, err := st.RaiseIDSequences(idSequences{Users: 100, Tokens: 1000}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if _, _, err := runCLI(t, "", "copy", "-from", fx.path, "-to", path); err != nil {
		t.Fatalf("copy into an empty file: %v", err)
	}
	got := openCopied(t, path)
	if want := contentsOf(t, fx.path); storeContents(t, got) != want {
		t.Errorf("the copy holds\n%s\nwant\n%s", storeContents(t, got), want)
	}
	if ids, err := got.IDSequences(); err != nil || ids.Users < 100 || ids.Tokens < 1000 {
		t.Errorf("the copy's sequences = %+v, %v; want at least the replaced file's (100, 1000)", ids, err)
	}
}

// TestCopyFromHeldSource: a bbolt source that a server holds is refused
// within about a second, as tokend backup refuses it, and no target
// appears.
func TestCopyFromHeldSource(t *testing.T) {
	held, path := newTestDB(t) // holds the file's lock, as a running server would
	storeUser(t, held, "alice", true)
	target := filepath.Join(t.TempDir(), "copy.db")
	start := time.Now()
	_, _, err := runCLI(t, "", "copy", "-from", path, "-to", target)
	if !errors.Is(err, errDatabaseInUse) {
		t.Fatalf("copy from a held database = %v; want it to say the database is in use", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("copy took %v to give up; want about a second", took)
	}
	if names := dirNames(t, filepath.Dir(target)); len(names) != 0 {
		t.Errorf("the refused copy left %q behind", names)
	}
}

// TestCopyKeepsOAuth copies a bbolt deployment that holds OAuth clients
// and grants to a new bbolt file: clients, grants, their access tokens
// (with grant and client) and refresh tokens (used ones still known as
// used) arrive unchanged, new grant ids continue past the copied ones,
// and codes and device requests in flight stay behind.
func TestCopyKeepsOAuth(t *testing.T) {
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
	_, dev := x.secret()
	_, uc := x.secret()
	if err := st.CreateDeviceAuth(dev, uc, deviceAuthRecord{Client: tv.ID, CreatedAt: x.now, ExpiresAt: x.now.Add(time.Hour), Interval: time.Second}); err != nil {
		t.Fatal(err)
	}
	wantClients, _ := st.Clients()
	wantAlice, _ := st.GrantsOf(alice.ID)
	wantBob, _ := st.GrantsOf(bob.ID)
	srcIDs, _ := st.IDSequences()
	st.Close()

	dst := filepath.Join(t.TempDir(), "dst.db")
	out, _, err := runCLI(t, "", "copy", "-from", src, "-to", dst)
	if err != nil || !strings.Contains(out, "3 OAuth clients, 2 grants with 3 refresh tokens") {
		t.Fatalf("tokend copy = %q, %v; want 3 clients and 2 grants with 3 refresh tokens copied", out, err)
	}
	got := openCopied(t, dst)
	if err := got.Check(); err != nil {
		t.Errorf("Check of the copy: %v", err)
	}
	clients, err := got.Clients()
	if err != nil || len(clients) != len(wantClients) {
		t.Fatalf("Clients of the copy = %+v, %v; want %d", clients, err, len(wantClients))
	}
	for i := range clients {
		if !sameClient(clients[i], wantClients[i]) {
			t.Errorf("client %d of the copy = %+v; want %+v", i, clients[i], wantClients[i])
		}
	}
	for _, w := range []struct {
		user uint64
		want []grantRecord
	}{{alice.ID, wantAlice}, {bob.ID, wantBob}} {
		grants, err := got.GrantsOf(w.user)
		if err != nil || len(grants) != len(w.want) {
			t.Fatalf("GrantsOf(%d) of the copy = %+v, %v; want %d", w.user, grants, err, len(w.want))
		}
		for i := range grants {
			if !sameGrant(grants[i], w.want[i]) {
				t.Errorf("grant of user %d in the copy = %+v; want %+v", w.user, grants[i], w.want[i])
			}
		}
	}
	for _, secret := range []string{kept.access, next.access} {
		a, _, err := got.Authenticate(hashToken(secret))
		tok, _, terr := got.TokenByHash(hashToken(secret))
		if err != nil || terr != nil || a.Client == "" || tok.Grant == 0 || tok.Client != a.Client {
			t.Errorf("a grant's access token in the copy: %+v, %v / %+v, %v; want it with its grant and client", a, err, tok, terr)
		}
	}
	if _, _, err := got.Authenticate(hashToken(personal)); err != nil {
		t.Errorf("the personal token in the copy: %v", err)
	}
	if list, _ := got.TokensByOwner(alice.ID); len(list) != 1 {
		t.Errorf("alice's personal tokens in the copy = %+v; want the one personal token", list)
	}
	// Codes and device requests in flight stay behind.
	if _, err := got.AuthCode(code); !errors.Is(err, errNotFound) {
		t.Errorf("a code in the copy: %v; want errNotFound", err)
	}
	if _, err := got.DeviceAuthByUserCode(uc); !errors.Is(err, errNotFound) {
		t.Errorf("a device request in the copy: %v; want errNotFound", err)
	}
	// The live refresh token rotates; the rotated one is still known as used.
	again := x.issue(bob.ID, x.now.Add(2*time.Hour))
	x.st = got
	if _, _, err := got.RefreshGrant(testActor, hashToken(next.refresh), x.now.Add(2*time.Hour), &again.issue); err != nil {
		t.Errorf("RefreshGrant with the live refresh token in the copy = %v", err)
	}
	if _, _, err := got.RefreshGrant(testActor, hashToken(first.refresh), x.now.Add(2*time.Hour), &again.issue); !errors.Is(err, errCodeUsed) {
		t.Errorf("RefreshGrant with the rotated refresh token in the copy = %v; want errCodeUsed", err)
	}
	if ids := grantIDs(t, got, bob.ID); len(ids) != 0 {
		t.Errorf("bob's grants after the replay in the copy = %v; want none", ids)
	}
	// New grants get ids past the copied ones.
	g, _, _ := x.grant(app, bob.ID)
	if g.ID <= max(rotated.ID, srcIDs.Grants) {
		t.Errorf("a new grant in the copy got id %d; want past %d", g.ID, max(rotated.ID, srcIDs.Grants))
	}
}
