package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func mustFormat(t testing.TB, prefix string) tokenFormat {
	t.Helper()
	f, err := newTokenFormat(prefix)
	if err != nil {
		t.Fatalf("newTokenFormat(%q): %v", prefix, err)
	}
	return f
}

func TestTokenFormat(t *testing.T) {
	f := mustFormat(t, defaultTokenPrefix)
	re := regexp.MustCompile("^" + f.pattern() + "$")
	if f.pattern() != `tkd_[0-9A-Za-z]{49}` {
		t.Errorf("pattern() = %q; want the README's tkd_[0-9A-Za-z]{49}", f.pattern())
	}
	seen := map[string]bool{}
	for range 1000 {
		tok, err := f.generate()
		if err != nil {
			t.Fatalf("generate: %v", err)
		}
		if len(tok) != 53 {
			t.Fatalf("len(%q) = %d; want 53", tok, len(tok))
		}
		if !re.MatchString(tok) {
			t.Fatalf("%q does not match %s", tok, f.pattern())
		}
		if seen[tok] {
			t.Fatalf("generate returned %q twice", tok)
		}
		seen[tok] = true
		h, err := f.parse(tok)
		if err != nil {
			t.Fatalf("parse(generate()) = %v; want nil", err)
		}
		if h != tokenHash(sha256.Sum256([]byte(tok))) {
			t.Fatalf("parse(%q) hash = %x; want SHA-256 of the token", tok, h)
		}
		if got := tokenHint(tok); got != tok[49:] {
			t.Fatalf("tokenHint(%q) = %q; want the last 4 characters", tok, got)
		}
	}
}

func TestTokenFormatCustomPrefix(t *testing.T) {
	f := mustFormat(t, "acme_")
	tok, err := f.generate()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(tok, "acme_") || len(tok) != 54 {
		t.Errorf("generate() = %q; want acme_ and 54 characters", tok)
	}
	if _, err := f.parse(tok); err != nil {
		t.Errorf("parse(%q) = %v", tok, err)
	}
	if _, err := mustFormat(t, defaultTokenPrefix).parse(tok); err == nil {
		t.Errorf("a tkd_ format accepted %q", tok)
	}
	for _, bad := range []string{"", "_", "tkd", "TKD_", "1tk_", "tk-_", "averyveryverylongprefix_"} {
		if _, err := newTokenFormat(bad); err == nil {
			t.Errorf("newTokenFormat(%q) = nil error; want it refused", bad)
		}
	}
}

func TestParseRejectsMalformed(t *testing.T) {
	f := mustFormat(t, defaultTokenPrefix)
	good, _ := f.generate()
	tests := []struct {
		name, token string
	}{
		{"empty", ""},
		{"prefix only", "tkd_"},
		{"one short", good[:52]},
		{"one long", good + "a"},
		{"wrong prefix", "ghp_" + good[4:]},
		{"upper-case prefix", "TKD_" + good[4:]},
		{"non-base62 character", good[:10] + "-" + good[11:]},
		{"non-ASCII", good[:10] + "é" + good[12:]},
		{"NUL", good[:10] + "\x00" + good[11:]},
		{"space", good[:52] + " "},
		{"checksum of another token", good[:47] + func() string { o, _ := f.generate(); return o[47:] }()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := f.parse(tt.token); !errors.Is(err, errMalformedToken) {
				t.Errorf("parse(%q) = %v; want errMalformedToken", tt.token, err)
			}
		})
	}
}

// TestChecksumCatchesEverySingleCharacterChange replaces each character of
// a token with every other base62 character, and each must be refused.
func TestChecksumCatchesEverySingleCharacterChange(t *testing.T) {
	f := mustFormat(t, defaultTokenPrefix)
	for range 20 {
		tok, _ := f.generate()
		for i := len(defaultTokenPrefix); i < len(tok); i++ {
			for _, c := range []byte(base62Alphabet) {
				if c == tok[i] {
					continue
				}
				changed := tok[:i] + string(c) + tok[i+1:]
				if _, err := f.parse(changed); err == nil {
					t.Fatalf("parse accepted %q, %q with character %d changed", changed, tok, i)
				}
			}
		}
		// Swapping two neighbours is the other common typo.
		for i := len(defaultTokenPrefix); i < len(tok)-1; i++ {
			if tok[i] == tok[i+1] {
				continue
			}
			b := []byte(tok)
			b[i], b[i+1] = b[i+1], b[i]
			if _, err := f.parse(string(b)); err == nil {
				t.Fatalf("parse accepted %q, %q with characters %d and %d swapped", b, tok, i, i+1)
			}
		}
	}
}

// TestSecretAlphabetUnbiased draws many tokens and checks, with a chi-square
// test per position and over all positions, that every base62 character is
// equally likely. A modulo-biased encoder fails the pooled test.
func TestSecretAlphabetUnbiased(t *testing.T) {
	f := mustFormat(t, defaultTokenPrefix)
	const n = 20000
	var counts [secretLen][62]int
	var total [62]int
	for range n {
		tok, err := f.generate()
		if err != nil {
			t.Fatal(err)
		}
		for i := range secretLen {
			v := strings.IndexByte(base62Alphabet, tok[len(defaultTokenPrefix)+i])
			counts[i][v]++
			total[v]++
		}
	}
	chi := func(obs []int, samples int) float64 {
		exp := float64(samples) / 62
		sum := 0.0
		for _, o := range obs {
			d := float64(o) - exp
			sum += d * d / exp
		}
		return sum
	}
	// 61 degrees of freedom: the 99.99th percentile is about 113.
	const limit = 113.0
	if x := chi(total[:], n*secretLen); x > limit {
		t.Errorf("chi-square over all positions = %.1f; want ≤ %.0f (character counts %v)", x, limit, total)
	}
	worst := 0.0
	for i := range secretLen {
		worst = math.Max(worst, chi(counts[i][:], n))
	}
	// With 43 positions, allow the per-position percentile 1 - 1e-4/43.
	if worst > 125 {
		t.Errorf("worst per-position chi-square = %.1f; want ≤ 125", worst)
	}
}

func TestTokenHashMarshalRoundTrip(t *testing.T) {
	h := hashToken("tkd_example")
	text, err := h.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	if len(text) != 43 {
		t.Errorf("MarshalText = %q; want 43 base64 characters", text)
	}
	var back tokenHash
	if err := back.UnmarshalText(text); err != nil || back != h {
		t.Errorf("UnmarshalText(MarshalText(h)) = %x, %v; want %x", back, err, h)
	}
	if err := back.UnmarshalText([]byte("abcd")); err == nil {
		t.Error("UnmarshalText of 4 characters = nil error; want one")
	}
	if err := back.UnmarshalText([]byte(strings.Repeat("!", 43))); err == nil {
		t.Error("UnmarshalText of non-base64 = nil error; want one")
	}
}

func TestScopeRegistry(t *testing.T) {
	reg, err := newScopeRegistry([]scope{{"treasure:create", "Bury treasure"}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := reg.normalize([]string{"treasure:create", "tokens:write", "tokens:read"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "tokens:read tokens:write treasure:create"; strings.Join(got, " ") != want {
		t.Errorf("normalize = %v; want declaration order %q", got, want)
	}
	for _, bad := range [][]string{{"nope"}, {"tokens:read", "tokens:read"}, {"TOKENS:READ"}, make([]string, 65)} {
		if _, err := reg.normalize(bad); err == nil {
			t.Errorf("normalize(%q) = nil error; want one", bad)
		}
	}
	for _, bad := range [][]scope{{{"Upper", ""}}, {{"tokens:read", "again"}}, {{"", ""}}, {{"has space", ""}}} {
		if _, err := newScopeRegistry(bad); err == nil {
			t.Errorf("newScopeRegistry(%v) = nil error; want one", bad)
		}
	}
}

// ---- store ----

// checkIndexes fails the test unless every index entry points at a live
// record and every record has its entries.
func checkIndexes(t testing.TB, st store, after string) {
	t.Helper()
	if err := st.Check(); err != nil {
		t.Fatalf("after %s, Check() = %v", after, err)
	}
}

// storeToken stores a token holding tokens:read, or the given scopes, and
// returns its record and secret.
func storeToken(t testing.TB, st store, owner uint64, name string, expires *time.Time, scopes ...string) (tokenRecord, string) {
	t.Helper()
	if scopes == nil {
		scopes = []string{scopeTokensRead}
	}
	f := mustFormat(t, defaultTokenPrefix)
	secret, _ := f.generate()
	tok := tokenRecord{Owner: owner, Name: name, Scopes: scopes, CreatedAt: time.Now(), ExpiresAt: expires, Hint: tokenHint(secret)}
	if err := st.CreateToken(testActor, &tok, hashToken(secret), 0); err != nil {
		t.Fatalf("CreateToken(%q): %v", name, err)
	}
	return tok, secret
}

func storeUser(t testing.TB, st store, name string, admin bool) userRecord {
	t.Helper()
	u := userRecord{Name: name, PasswordHash: "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$a2V5", Admin: admin, CreatedAt: time.Now()}
	if err := st.CreateUser(testActor, &u); err != nil {
		t.Fatalf("CreateUser(%q): %v", name, err)
	}
	return u
}

func TestStoreTokenLifecycleKeepsIndexes(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		alice := storeUser(t, st, "alice", true)
		bob := storeUser(t, st, "bob", false)
		exp := time.Now().Add(time.Hour)

		a1, a1secret := storeToken(t, st, alice.ID, "a1", &exp)
		a2, _ := storeToken(t, st, alice.ID, "a2", nil)
		b1, _ := storeToken(t, st, bob.ID, "b1", &exp)
		checkIndexes(t, st, "creating three tokens")

		got, owner, err := st.TokenByHash(hashToken(a1secret))
		if err != nil || got.ID != a1.ID || owner.ID != alice.ID {
			t.Fatalf("TokenByHash(a1) = %d, owner %d, %v; want %d, owner %d", got.ID, owner.ID, err, a1.ID, alice.ID)
		}
		list, err := st.TokensByOwner(alice.ID)
		if err != nil || len(list) != 2 || list[0].ID != a2.ID || list[1].ID != a1.ID {
			t.Fatalf("TokensByOwner(alice) = %v, %v; want [a2 a1], newest first", list, err)
		}
		if _, err := st.TokenByID(b1.ID, alice.ID); !errors.Is(err, errNotFound) {
			t.Errorf("TokenByID(bob's, alice) = %v; want errNotFound", err)
		}
		if _, err := st.DeleteToken(testActor, b1.ID, alice.ID); !errors.Is(err, errNotFound) {
			t.Errorf("DeleteToken(bob's, alice) = %v; want errNotFound", err)
		}

		newSecret, _ := mustFormat(t, defaultTokenPrefix).generate()
		rotated, err := st.RotateToken(testActor, a1.ID, alice.ID, hashToken(newSecret), tokenHint(newSecret), time.Now())
		if err != nil {
			t.Fatalf("RotateToken(a1): %v", err)
		}
		if rotated.ID == a1.ID || rotated.Name != "a1" || !rotated.ExpiresAt.Equal(exp) || rotated.Owner != alice.ID {
			t.Errorf("RotateToken(a1) = %+v; want a new id with a1's name, owner and expiry", rotated)
		}
		if _, _, err := st.TokenByHash(hashToken(a1secret)); !errors.Is(err, errNotFound) {
			t.Errorf("TokenByHash(old a1) after rotate = %v; want errNotFound", err)
		}
		if _, _, err := st.TokenByHash(hashToken(newSecret)); err != nil {
			t.Errorf("TokenByHash(new a1) after rotate = %v; want nil", err)
		}
		checkIndexes(t, st, "rotating")

		if _, err := st.DeleteToken(testActor, a2.ID, alice.ID); err != nil {
			t.Fatalf("DeleteToken(a2): %v", err)
		}
		checkIndexes(t, st, "revoking")

		if err := st.DeleteUser(testActor, bob.ID); err != nil {
			t.Fatalf("DeleteUser(bob): %v", err)
		}
		checkIndexes(t, st, "removing a user")
		if _, err := st.TokenByID(b1.ID, anyOwner); !errors.Is(err, errNotFound) {
			t.Errorf("bob's token after DeleteUser: %v; want errNotFound", err)
		}
		if _, err := st.UserByName("BOB"); !errors.Is(err, errNotFound) {
			t.Errorf("UserByName(BOB) after DeleteUser = %v; want errNotFound", err)
		}

		if _, _, err := st.ChangePassword(testActor, alice.ID, passwordChange{hash: "$argon2id$v=19$m=64,t=1,p=1$bmV3$a2V5", at: time.Now(), revokeTokens: true}); err != nil {
			t.Fatalf("ChangePassword(revoke): %v", err)
		}
		if list, _ := st.TokensByOwner(alice.ID); len(list) != 0 {
			t.Errorf("alice's tokens after a password change that revokes all: %d; want 0", len(list))
		}
		checkIndexes(t, st, "a password change that revokes all tokens")

		if all, err := st.AllTokens(); err != nil || len(all) != 0 {
			t.Errorf("AllTokens after every token was deleted = %d, %v; want none", len(all), err)
		}
		b, ok := st.(*boltStore)
		if !ok {
			return
		}
		for k := range dumpStore(t, b) {
			if (strings.HasPrefix(k, "tokens/") || strings.HasPrefix(k, "tokens_by_")) && !strings.HasSuffix(k, "#seq") {
				t.Errorf("entry %s left after every token was deleted", k)
			}
		}
	})
}

func TestStoreUsers(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		alice := storeUser(t, st, "Alice", true)
		if u := (userRecord{Name: "aLiCe"}); !errors.Is(st.CreateUser(testActor, &u), errNameTaken) {
			t.Error("CreateUser(aLiCe) beside Alice succeeded; want errNameTaken")
		}
		got, err := st.UserByName("ALICE")
		if err != nil || got.ID != alice.ID || got.Name != "Alice" {
			t.Errorf("UserByName(ALICE) = %+v, %v; want Alice", got, err)
		}
		if err := st.DeleteUser(testActor, alice.ID); !errors.Is(err, errLastAdmin) {
			t.Errorf("DeleteUser(last admin) = %v; want errLastAdmin", err)
		}
		storeUser(t, st, "carol", true)
		if err := st.DeleteUser(testActor, alice.ID); err != nil {
			t.Errorf("DeleteUser(alice) with another admin = %v; want nil", err)
		}
		if err := st.DeleteUser(testActor, alice.ID); !errors.Is(err, errNotFound) {
			t.Errorf("DeleteUser twice = %v; want errNotFound", err)
		}
		if _, err := st.UserByID(999); !errors.Is(err, errNotFound) {
			t.Errorf("UserByID(999) = %v; want errNotFound", err)
		}
		tok := tokenRecord{Owner: 999, Name: "orphan"}
		if err := st.CreateToken(testActor, &tok, hashToken("x"), 0); !errors.Is(err, errNotFound) {
			t.Errorf("CreateToken for a missing user = %v; want errNotFound", err)
		}
		checkIndexes(t, st, "user operations")
	})
}

func TestStoreTokenLimit(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		u := storeUser(t, st, "alice", false)
		for i := range 3 {
			tok := tokenRecord{Owner: u.ID, Name: "t"}
			if err := st.CreateToken(testActor, &tok, hashToken(string(rune('a'+i))), 3); err != nil {
				t.Fatalf("CreateToken %d of 3: %v", i+1, err)
			}
		}
		tok := tokenRecord{Owner: u.ID, Name: "t"}
		if err := st.CreateToken(testActor, &tok, hashToken("d"), 3); !errors.Is(err, errTooManyTokens) {
			t.Errorf("CreateToken past the limit = %v; want errTooManyTokens", err)
		}
	})
}

func TestStoreRotateExpired(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		u := storeUser(t, st, "alice", false)
		exp := time.Now().Add(time.Minute)
		tok, secret := storeToken(t, st, u.ID, "t", &exp)
		before := storeContents(t, st)
		if _, err := st.RotateToken(testActor, tok.ID, u.ID, hashToken("new"), "xxxx", exp); !errors.Is(err, errTokenExpired) {
			t.Errorf("RotateToken at expiry = %v; want errTokenExpired", err)
		}
		if after := storeContents(t, st); after != before {
			t.Errorf("a refused rotation changed the store:\n%s\nthen\n%s", before, after)
		}
		if _, _, err := st.TokenByHash(hashToken(secret)); err != nil {
			t.Errorf("the old token after a refused rotation: %v", err)
		}
	})
}

func TestCheckFindsBrokenIndexes(t *testing.T) {
	st, _ := newTestDB(t)
	u := storeUser(t, st, "alice", false)
	exp := time.Now().Add(time.Hour)
	tok, _ := storeToken(t, st, u.ID, "t", &exp)
	for _, bucket := range [][]byte{bucketTokensByHash, bucketTokensByOwner, bucketTokensByExpiry} {
		t.Run(string(bucket), func(t *testing.T) {
			// Break one index, see Check notice, then put it back.
			var key, val []byte
			st.db.View(func(tx *bolt.Tx) error {
				key, val = tx.Bucket(bucket).Cursor().First()
				key, val = bytes.Clone(key), bytes.Clone(val)
				return nil
			})
			st.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Delete(key) })
			if err := st.Check(); err == nil || !strings.Contains(err.Error(), string(bucket)) {
				t.Errorf("Check with %s/%x missing = %v; want it named", bucket, key, err)
			}
			st.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put(key, val) })
			if err := st.Check(); err != nil {
				t.Errorf("Check after repair = %v", err)
			}
		})
	}
	_ = tok
}

func TestOpenStoreRefusesForeignFiles(t *testing.T) {
	dir := t.TempDir()

	text := filepath.Join(dir, "notes.txt")
	content := bytes.Repeat([]byte("not a database\n"), 1000)
	os.WriteFile(text, content, 0o600)
	if _, err := openStore(text, time.Second); !errors.Is(err, errNotTokendDB) {
		t.Errorf("openStore(text file) = %v; want errNotTokendDB", err)
	}
	if got, _ := os.ReadFile(text); !bytes.Equal(got, content) {
		t.Error("openStore modified a text file it refused")
	}

	other := filepath.Join(dir, "other.db")
	db, err := bolt.Open(other, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		b, _ := tx.CreateBucket([]byte("widgets"))
		return b.Put([]byte("k"), []byte("v"))
	})
	db.Close()
	before, _ := os.ReadFile(other)
	if _, err := openStore(other, time.Second); !errors.Is(err, errNotTokendDB) {
		t.Errorf("openStore(another app's bbolt file) = %v; want errNotTokendDB", err)
	}
	if after, _ := os.ReadFile(other); !bytes.Equal(before, after) {
		t.Error("openStore modified another app's bbolt file")
	}

	future := filepath.Join(dir, "future.db")
	st, err := openStore(future, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	st.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, itob(99)) })
	st.Close()
	if _, err := openStore(future, time.Second); !errors.Is(err, errUnsupportedData) {
		t.Errorf("openStore(schema 99) = %v; want errUnsupportedData", err)
	}
}

func TestOpenStoreInUse(t *testing.T) {
	_, path := newTestDB(t)
	start := time.Now()
	_, err := openStore(path, 200*time.Millisecond)
	if !errors.Is(err, errDatabaseInUse) {
		t.Fatalf("second openStore = %v; want errDatabaseInUse", err)
	}
	if !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not say the file %q is in use", err, path)
	}
	if time.Since(start) > 5*time.Second {
		t.Errorf("second openStore took %v to give up", time.Since(start))
	}
}

func TestDatabaseFileMode(t *testing.T) {
	_, path := newTestDB(t)
	mode, err := fileMode(path)
	if err != nil || mode != 0o600 {
		t.Errorf("database file mode = %#o, %v; want 0600", mode, err)
	}
}

// TestDatabaseFileHoldsNoSecrets creates users and tokens through the API and
// then searches the raw file for every password and token.
func TestDatabaseFileHoldsNoSecrets(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", true)
	ts.addUser("bob", false)
	secrets := []string{"password-of-alice", "password-of-bob"}
	for _, who := range []string{"alice", "bob"} {
		for range 3 {
			w := ts.do(request{method: "POST", path: "/api/v1/tokens",
				header: map[string]string{"Authorization": basicAuth(who, "password-of-"+who)},
				body:   `{"name":"ci","scopes":["tokens:read","tokens:write"],"expires_at":null}`})
			if w.Code != 201 {
				t.Fatalf("POST /api/v1/tokens as %s = %d %s; want 201", who, w.Code, w.Body)
			}
			var got tokenJSON
			decode(t, w, &got)
			secrets = append(secrets, got.Token)
			// Rotate once so that both the dead and the live secret are looked for.
			w = ts.do(request{method: "POST", path: "/api/v1/token/rotate", token: got.Token})
			if w.Code != 201 {
				t.Fatalf("POST /api/v1/token/rotate = %d %s; want 201", w.Code, w.Body)
			}
			decode(t, w, &got)
			secrets = append(secrets, got.Token)
		}
	}
	ts.store.Close()
	raw, err := os.ReadFile(ts.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		for _, needle := range []string{s, s[4 : len(s)-6]} {
			if bytes.Contains(raw, []byte(needle)) {
				t.Errorf("the database file contains the secret %q", needle)
			}
		}
	}
	if !bytes.Contains(raw, []byte("$argon2id$")) {
		t.Error("the database file holds no argon2id hash; is the file the one written?")
	}
}

func TestPasswordHashDefaults(t *testing.T) {
	h := newPasswordHasher(defaultArgonParams, 1)
	enc, err := h.Hash(context.Background(), "correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`).MatchString(enc) {
		t.Errorf("Hash = %q; want a PHC string with m=19456,t=2,p=1, a 16-byte salt and 32-byte key", enc)
	}
	ok, rehash, err := h.Verify(context.Background(), "correct horse battery staple", enc)
	if !ok || rehash || err != nil {
		t.Errorf("Verify(right) = %v, %v, %v; want true, false, nil", ok, rehash, err)
	}
	ok, _, _ = h.Verify(context.Background(), "correct horse battery stapl", enc)
	if ok {
		t.Error("Verify(wrong) = true")
	}
	weak, _ := newPasswordHasher(testArgon, 1).Hash(context.Background(), "correct horse battery staple")
	ok, rehash, _ = h.Verify(context.Background(), "correct horse battery staple", weak)
	if !ok || !rehash {
		t.Errorf("Verify(weaker hash) = %v, rehash %v; want true, true", ok, rehash)
	}
	for _, bad := range []string{"", "$argon2i$v=19$m=64,t=1,p=1$c2FsdA$a2V5", "$argon2id$v=19$m=0,t=1,p=1$c2FsdA$a2V5", "$argon2id$v=19$m=64,t=1,p=1$!!$a2V5"} {
		if _, _, err := h.Verify(context.Background(), "x", bad); err == nil {
			t.Errorf("Verify(hash %q) = nil error; want malformed", bad)
		}
	}
}

func TestPasswordPolicy(t *testing.T) {
	tests := []struct {
		password string
		want     error
	}{
		{"short", errPasswordShort},
		{"1234567", errPasswordShort},
		{"password", errPasswordCommon},
		{"PASSWORD1", errPasswordCommon},
		{"12345678", errPasswordCommon},
		{"tab\tinside", errPasswordInvalid},
		{"bad\xffutf8!", errPasswordInvalid},
		{strings.Repeat("a", maxPasswordLen+1), errPasswordLong},
		{"correct horse battery staple", nil},
		{"日本語のパスワード", nil},
		{"ünïcødé!", nil},
		{strings.Repeat("long passphrase ", 60), nil},
	}
	for _, tt := range tests {
		if got := checkPassword(tt.password); !errors.Is(got, tt.want) {
			t.Errorf("checkPassword(%q) = %v; want %v", truncate(tt.password, 30), got, tt.want)
		}
	}
}

func TestUserNames(t *testing.T) {
	for _, ok := range []string{"a", "alice", "Alice.Smith", "bob_2", "x-y", strings.Repeat("a", 40)} {
		if err := checkUserName(ok); err != nil {
			t.Errorf("checkUserName(%q) = %v; want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "-alice", "alice-", "al ice", "al/ice", "élise", strings.Repeat("a", 41), "a\x00b"} {
		if err := checkUserName(bad); err == nil {
			t.Errorf("checkUserName(%q) = nil; want an error", bad)
		}
	}
}

func TestAuthRecordRoundTrip(t *testing.T) {
	exp := time.Date(2031, 2, 3, 4, 5, 6, 7, time.UTC)
	for _, a := range []authRecord{
		{ID: 1, Owner: 2, CreatedAt: time.Date(2030, 1, 1, 0, 0, 0, 1, time.UTC), ExpiresAt: &exp, Scopes: []string{scopeTokensRead, "treasure:create"}},
		{ID: 1<<64 - 1, Owner: 7, CreatedAt: time.Unix(0, 0).UTC(), Scopes: []string{}},
		{ID: 9, Owner: 3, CreatedAt: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), ExpiresAt: &exp, Scopes: []string{scopeTokensRead}, Client: "client-id"},
		{ID: 10, Owner: 3, CreatedAt: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), ExpiresAt: &exp, Scopes: []string{}, Client: "c"},
	} {
		var back authRecord
		if err := back.unmarshal(a.marshal()); err != nil {
			t.Fatalf("unmarshal(marshal(%+v)) = %v", a, err)
		}
		if back.ID != a.ID || back.Owner != a.Owner || !back.CreatedAt.Equal(a.CreatedAt) ||
			(a.ExpiresAt == nil) != (back.ExpiresAt == nil) || (a.ExpiresAt != nil && !back.ExpiresAt.Equal(*a.ExpiresAt)) ||
			strings.Join(back.Scopes, " ") != strings.Join(a.Scopes, " ") || back.Client != a.Client {
			t.Errorf("round trip of %+v = %+v", a, back)
		}
		b := a.marshal()
		// Version 1, as every record was before clients, unless a client
		// is named.
		if want := map[bool]byte{false: 1, true: 2}[a.Client != ""]; b[0] != want {
			t.Errorf("marshal(%+v) is of version %d; want %d", a, b[0], want)
		}
		other := append([]byte(nil), b...)
		other[0] ^= 3 // 1 ↔ 2: the version must agree with the client
		if err := back.unmarshal(other); err == nil {
			t.Errorf("unmarshal of %+v under the other version = nil error", a)
		}
		for n := range len(b) - 1 {
			if err := back.unmarshal(b[:n]); err == nil {
				t.Errorf("unmarshal of %d of %d bytes = nil error", n, len(b))
			}
		}
		if err := back.unmarshal(append(b, 0)); err == nil {
			t.Error("unmarshal with a trailing byte = nil error")
		}
	}
}

// TestVerificationIsCoherent revokes, demotes and removes in a tight loop
// and checks that every change shows at the very next verification,
// whatever was read and cached before.
// TestVerificationIsCoherent verifies a token, changes what verification
// depends on, and verifies again, many times over: the auth cache never
// answers with what a returned write changed. Demotion and promotion show
// at once in the owner and the token's effective scopes; revocation,
// rotation, a password change that revokes all and the owner's removal
// make the token unknown at once.
func TestVerificationIsCoherent(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		root := storeUser(t, st, "root", true)
		storeUser(t, st, "other-admin", true)
		verify := func(secret string) ([]string, userRecord, error) {
			a, u, err := st.Authenticate(hashToken(secret))
			return effectiveScopes(a.Scopes, u), u, err
		}
		for i := range 100 {
			tok, secret := storeToken(t, st, root.ID, "loop", nil, scopeAdmin)
			if scopes, _, err := verify(secret); err != nil || !hasScope(scopes, scopeAdmin) {
				t.Fatalf("round %d: verify new token = %v, scopes %v", i, err, scopes)
			}
			if _, err := st.SetAdmin(testActor, root.ID, false); err != nil {
				t.Fatal(err)
			}
			if scopes, u, err := verify(secret); err != nil || hasScope(scopes, scopeAdmin) || u.Admin {
				t.Fatalf("round %d: right after demotion the token still acts as an admin (%v)", i, err)
			}
			if _, err := st.SetAdmin(testActor, root.ID, true); err != nil {
				t.Fatal(err)
			}
			if scopes, _, err := verify(secret); err != nil || !hasScope(scopes, scopeAdmin) {
				t.Fatalf("round %d: right after promotion the token lacks admin (%v)", i, err)
			}
			if i%2 == 0 {
				if _, err := st.DeleteTokenByHash(testActor, hashToken(secret), kindTokenRevoked); err != nil {
					t.Fatal(err)
				}
				if _, _, err := verify(secret); !errors.Is(err, errNotFound) {
					t.Fatalf("round %d: a revoked token verified (%v)", i, err)
				}
				continue
			}
			next, _ := mustFormat(t, defaultTokenPrefix).generate()
			if _, err := st.RotateToken(testActor, tok.ID, root.ID, hashToken(next), tokenHint(next), time.Now()); err != nil {
				t.Fatal(err)
			}
			if _, _, err := verify(secret); !errors.Is(err, errNotFound) {
				t.Fatalf("round %d: a rotated-away token verified (%v)", i, err)
			}
			if scopes, _, err := verify(next); err != nil || !hasScope(scopes, scopeAdmin) {
				t.Fatalf("round %d: the token a rotation made = %v, scopes %v", i, err, scopes)
			}
		}
		bob := storeUser(t, st, "bob", false)
		_, secret := storeToken(t, st, bob.ID, "b", nil)
		if _, _, err := verify(secret); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteUser(testActor, bob.ID); err != nil {
			t.Fatal(err)
		}
		if _, _, err := verify(secret); !errors.Is(err, errNotFound) {
			t.Errorf("a removed user's token verified (%v)", err)
		}
		_, secret = storeToken(t, st, root.ID, "pw", nil)
		verify(secret)
		if _, _, err := st.ChangePassword(testActor, root.ID, passwordChange{hash: "$argon2id$v=19$m=64,t=1,p=1$c2FsdA$a2V5", at: time.Now(), revokeTokens: true}); err != nil {
			t.Fatal(err)
		}
		if _, _, err := verify(secret); !errors.Is(err, errNotFound) {
			t.Errorf("a token verified after a password change that revokes all tokens (%v)", err)
		}
	})
}

func TestLongestPrefix(t *testing.T) {
	f := mustFormat(t, "abcdefghijklmnop_")
	tok, _ := f.generate()
	if len(tok) != maxTokenLen {
		t.Fatalf("a token with the longest prefix is %d characters; maxTokenLen is %d", len(tok), maxTokenLen)
	}
	if _, err := f.parse(tok); err != nil {
		t.Errorf("parse(%q) = %v", tok, err)
	}
}

// TestRevocationBeatsConcurrentVerifiers revokes tokens while other
// goroutines verify them as fast as they can, filling the auth cache: once
// the revocation has returned, no verification may succeed.
func TestRevocationBeatsConcurrentVerifiers(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		u := storeUser(t, st, "alice", false)
		for round := range 100 {
			_, secret := storeToken(t, st, u.ID, "hot", nil)
			h := hashToken(secret)
			var revoked atomic.Bool
			var wg sync.WaitGroup
			for range 4 {
				wg.Go(func() {
					for range 200 {
						after := revoked.Load()
						_, _, err := st.Authenticate(h)
						if after && err == nil {
							t.Errorf("round %d: the token verified after its revocation returned", round)
							return
						}
					}
				})
			}
			if _, err := st.DeleteTokenByHash(testActor, h, kindTokenRevoked); err != nil {
				t.Fatal(err)
			}
			revoked.Store(true)
			wg.Wait()
			if _, _, err := st.Authenticate(h); !errors.Is(err, errNotFound) {
				t.Fatalf("round %d: the revoked token verified (%v)", round, err)
			}
		}
		if n := authCacheOf(t, st).len(); n != 0 {
			t.Errorf("%d revoked tokens are still cached", n)
		}
	})
}
