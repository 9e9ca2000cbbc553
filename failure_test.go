package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// protectedRequests returns a request to every route that needs a token
// or a password, made with credentials that work while storage does.
func protectedRequests(secret string, id uint64, u userRecord) []request {
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	return []request{
		{method: "GET", path: "/api/v1/user", token: secret},
		{method: "GET", path: "/api/v1/token", token: secret},
		{method: "DELETE", path: "/api/v1/token", token: secret},
		{method: "POST", path: "/api/v1/token/rotate", token: secret},
		{method: "GET", path: "/api/v1/tokens", token: secret},
		{method: "POST", path: "/api/v1/tokens", token: secret, body: tokenRequest("new", nil, nil)},
		{method: "POST", path: "/api/v1/tokens", header: basicHeader(u), body: tokenRequest("new", nil, nil)},
		{method: "GET", path: fmt.Sprintf("/api/v1/tokens/%d", id), token: secret},
		{method: "DELETE", path: fmt.Sprintf("/api/v1/tokens/%d", id), token: secret},
		{method: "POST", path: fmt.Sprintf("/api/v1/tokens/%d/rotate", id), token: secret},
		{method: "POST", path: "/api/v1/revoke", header: form, body: "token=" + secret},
		{method: "GET", path: "/api/v1/admin/backup", token: secret},
	}
}

// TestStorageErrorFailsClosed closes the database under a running server:
// every protected route must then fail with a 5xx problem, never a 2xx or
// 3xx, never show the secret, and log the failure with its route.
func TestStorageErrorFailsClosed(t *testing.T) {
	ts := newTestServer(t)
	u := ts.addUser("alice", true)
	tok, secret := ts.addToken(u, "everything", []string{scopeTokensRead, scopeTokensWrite, scopeIntrospect, scopeAdmin}, 0)
	reqs := protectedRequests(secret, tok.ID, u)
	// While storage works, the same requests are let in (a few of them
	// revoke the token, so check the harmless ones).
	for _, req := range reqs[:2] {
		if w := ts.do(req); w.Code != http.StatusOK {
			t.Fatalf("%s before the failure = %d; want 200", label(req), w.Code)
		}
	}

	if err := ts.store.Close(); err != nil {
		t.Fatal(err)
	}
	for _, req := range reqs {
		w := ts.do(req)
		if w.Code < 500 {
			t.Errorf("%s with the database closed = %d; want a 5xx: a storage failure must never let a request through", label(req), w.Code)
		}
		if ct := w.Header().Get("Content-Type"); ct != "application/problem+json" {
			t.Errorf("%s with the database closed: Content-Type %q; want a problem", label(req), ct)
		}
		if strings.Contains(w.Body.String(), secret) || strings.Contains(w.Body.String(), "database not open") {
			t.Errorf("%s with the database closed answered %s; want no secret and no internal detail", label(req), w.Body)
		}
		if !strings.Contains(ts.logs.String(), "path="+req.path) {
			t.Errorf("%s: the failure is not in the log with its path", label(req))
		}
	}
}

// TestCorruptRecordsFailClosed breaks the records behind a valid token in
// the ways a damaged file could, and checks that none of them lets the
// token through.
func TestCorruptRecordsFailClosed(t *testing.T) {
	tests := []struct {
		name   string
		damage func(tx *bolt.Tx, tok tokenRecord) error
		want   int
	}{
		{"undecodable auth record", func(tx *bolt.Tx, tok tokenRecord) error {
			return tx.Bucket(bucketTokensByHash).Put(tok.Hash[:], []byte{1, 2, 3})
		}, http.StatusInternalServerError},
		{"auth record of an unknown version", func(tx *bolt.Tx, tok tokenRecord) error {
			v := authRecordOf(&tok).marshal()
			v[0] = 99
			return tx.Bucket(bucketTokensByHash).Put(tok.Hash[:], v)
		}, http.StatusInternalServerError},
		{"auth record with trailing bytes", func(tx *bolt.Tx, tok tokenRecord) error {
			return tx.Bucket(bucketTokensByHash).Put(tok.Hash[:], append(authRecordOf(&tok).marshal(), 0))
		}, http.StatusInternalServerError},
		{"undecodable owner", func(tx *bolt.Tx, tok tokenRecord) error {
			return tx.Bucket(bucketUsers).Put(itob(tok.Owner), []byte("\x00garbage"))
		}, http.StatusInternalServerError},
		{"owner missing", func(tx *bolt.Tx, tok tokenRecord) error {
			return tx.Bucket(bucketUsers).Delete(itob(tok.Owner))
		}, http.StatusUnauthorized},
		{"hash index entry missing", func(tx *bolt.Tx, tok tokenRecord) error {
			return tx.Bucket(bucketTokensByHash).Delete(tok.Hash[:])
		}, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestServer(t)
			u := ts.addUser("alice", true)
			tok, secret := ts.addToken(u, "t", []string{scopeTokensRead, scopeTokensWrite, scopeAdmin}, 0)
			if err := ts.store.update(func(tx *bolt.Tx) error { return tt.damage(tx, tok) }); err != nil {
				t.Fatal(err)
			}
			for _, req := range protectedRequests(secret, tok.ID, u)[:6] {
				w := ts.do(req)
				if w.Code != tt.want {
					t.Errorf("%s with %s = %d %s; want %d", label(req), tt.name, w.Code, w.Body, tt.want)
				}
			}
		})
	}
}

// TestCorruptTokenRecordFailsClosed damages the JSON record of a token.
// Verification reads only the token's auth record, so the token still
// authenticates; every answer that would show the damaged record is a 500,
// never a 2xx with garbage or a 404.
func TestCorruptTokenRecordFailsClosed(t *testing.T) {
	for _, damage := range map[string][]byte{"undecodable": []byte(`{"id":`), "wrong type": []byte(`{"scopes":"admin"}`)} {
		ts := newTestServer(t)
		u := ts.addUser("alice", true)
		tok, secret := ts.addToken(u, "t", []string{scopeTokensRead, scopeTokensWrite}, 0)
		if err := ts.store.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketTokens).Put(itob(tok.ID), damage) }); err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"/api/v1/token", "/api/v1/tokens", fmt.Sprintf("/api/v1/tokens/%d", tok.ID)} {
			if w := ts.do(request{method: "GET", path: path, token: secret}); w.Code != http.StatusInternalServerError {
				t.Errorf("GET %s with a %q token record = %d %s; want 500", path, damage, w.Code, w.Body)
			}
		}
	}
	// An owner index entry that names a missing token is damage too.
	ts := newTestServer(t)
	u := ts.addUser("alice", true)
	_, secret := ts.addToken(u, "t", []string{scopeTokensRead}, 0)
	if err := ts.store.update(func(tx *bolt.Tx) error { return tx.Bucket(bucketTokensByOwner).Put(pairKey(u.ID, 999), nil) }); err != nil {
		t.Fatal(err)
	}
	if w := ts.do(request{method: "GET", path: "/api/v1/tokens", token: secret}); w.Code != http.StatusInternalServerError {
		t.Errorf("GET /api/v1/tokens with an index entry for a missing token = %d %s; want 500", w.Code, w.Body)
	}
}

// withUmask runs fn with the process umask set to mask, so that a file's
// mode shows what the code asked for rather than what the umask allowed.
// Tests in this package do not run in parallel, so nothing else creates
// files meanwhile.
func withUmask(mask int, fn func()) {
	old := syscall.Umask(mask)
	defer syscall.Umask(old)
	fn()
}

// TestFilesArePrivate checks that the database and a backup are created
// with mode 0600 even under an umask that would allow everyone to read them.
func TestFilesArePrivate(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "tokend.db")
	backup := filepath.Join(dir, "backup.db")
	compacted := filepath.Join(dir, "compact.db")
	withUmask(0, func() {
		st, err := openStore(db, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		storeUser(t, st, "alice", true)
		st.Close()
		if _, _, err := runCLI(t, "", "backup", "-db", db, backup); err != nil {
			t.Fatalf("tokend backup = %v", err)
		}
		if _, _, err := runCLI(t, "", "compact", db, compacted); err != nil {
			t.Fatalf("tokend compact = %v", err)
		}
	})
	for _, path := range []string{db, backup, compacted} {
		mode, err := fileMode(path)
		if err != nil || mode != 0o600 {
			t.Errorf("%s has mode %#o (%v); want 0600", filepath.Base(path), mode, err)
		}
	}
}

// fillUntilFull creates tokens through the API with secret until a
// creation is refused, and returns the secrets of those answered 201 and
// the refusal.
func fillUntilFull(t *testing.T, do func(request) (int, string), secret string) ([]string, int, string) {
	t.Helper()
	var made []string
	name := strings.Repeat("n", maxTokenNameLen)
	// bbolt's free space is not monotonic: pages freed by earlier commits
	// come back once no reader holds them, so one refused write does not
	// mean the next is refused too. Full is ten refusals in a row.
	refused := 0
	for i := range 100_000 {
		code, body := do(request{method: "POST", path: "/api/v1/tokens", token: secret, body: tokenRequest(fmt.Sprintf("%05d%s", i, name[5:]), scopesRead, nil)})
		switch {
		case code == http.StatusInsufficientStorage:
			if refused++; refused == 10 {
				return made, code, body
			}
			continue
		case code != http.StatusCreated:
			return made, code, body
		}
		refused = 0
		var b tokenBody
		if err := json.Unmarshal([]byte(body), &b); err != nil || b.Token == "" {
			t.Fatalf("creation %d answered 201 with %q", i, body)
		}
		made = append(made, b.Token)
	}
	t.Fatal("the database never filled up")
	return nil, 0, ""
}

// TestStorageFullWritesFailReadsWork caps the database at 1 MiB and fills
// it through the API. The write that does not fit must be a 507 problem
// that says storage is full and writes nothing; every token acknowledged
// before keeps working, reads keep working, and the file stays consistent.
func TestStorageFullWritesFailReadsWork(t *testing.T) {
	ts := newTestServer(t)
	ts.reopenStore(t, bolt.Options{Timeout: time.Second, MaxSize: 1 << 20})
	ts.cfg.MaxTokensPerUser = 0
	u := ts.addUser("alice", false)
	filler, secret := ts.addToken(u, "filler", scopesReadWrite, 0)
	// Most of the space goes in a few large transactions, the rest through the API.
	bulk := bulkTokens(t, ts.store, u.ID, 700, ts.clock.Now(), func(int) *time.Time { return nil })

	made, code, body := fillUntilFull(t, func(req request) (int, string) {
		w := ts.do(req)
		return w.Code, w.Body.String()
	}, secret)
	t.Logf("a 1 MiB database took %d tokens, %d of them through the API", len(bulk)+len(made), len(made))
	made = append(made, bulk...)
	if code != http.StatusInsufficientStorage {
		t.Fatalf("the creation that did not fit = %d %s; want 507", code, body)
	}

	before := ts.snapshot()
	for _, req := range []request{
		{method: "POST", path: "/api/v1/tokens", token: secret, body: tokenRequest(strings.Repeat("x", maxTokenNameLen), scopesRead, nil)},
		{method: "POST", path: "/api/v1/tokens", header: basicHeader(u), body: tokenRequest(strings.Repeat("y", maxTokenNameLen), scopesRead, nil)},
	} {
		p := checkProblem(t, label(req)+" on a full database", ts.do(req), http.StatusInsufficientStorage)
		checkDetail(t, label(req), p, "storage is full")
	}
	assertUnchanged(t, "writes refused for a full database", before, ts.snapshot())
	if !strings.Contains(ts.logs.String(), "storage full") {
		t.Errorf("the refused writes are not in the log")
	}

	// Reads keep working: who am I, the list, one token, and every token
	// acknowledged before still authenticates.
	for _, req := range []request{
		{method: "GET", path: "/api/v1/user", token: secret},
		{method: "GET", path: "/api/v1/token", token: secret},
		{method: "GET", path: "/api/v1/tokens/" + itoa(filler.ID), token: secret},
	} {
		if w := ts.do(req); w.Code != http.StatusOK {
			t.Errorf("%s on a full database = %d %s; want 200", label(req), w.Code, w.Body)
		}
	}
	w := ts.do(request{method: "GET", path: "/api/v1/tokens", token: secret})
	var list []tokenBody
	decode(t, w, &list)
	if w.Code != http.StatusOK || len(list) != len(made)+1 {
		t.Errorf("GET /api/v1/tokens on a full database = %d with %d tokens; want 200 with %d", w.Code, len(list), len(made)+1)
	}
	for i, s := range made {
		if w := ts.do(request{method: "GET", path: "/api/v1/user", token: s}); w.Code != http.StatusOK {
			t.Fatalf("token %d of %d, acknowledged before the disk filled, = %d; want 200", i, len(made), w.Code)
		}
	}
	if err := ts.store.Check(); err != nil {
		t.Errorf("the full database is inconsistent: %v", err)
	}
	if fi, err := os.Stat(ts.dbPath); err != nil || fi.Size() > 1<<20 {
		t.Errorf("the database file is %d bytes (%v); want at most the 1 MiB cap", fi.Size(), err)
	}
}

// TestServeMaxDBSize checks that -max-db-size reaches the real server: it
// answers 507 once the file is full and keeps serving reads.
func TestServeMaxDBSize(t *testing.T) {
	cfg := testServeConfig(t)
	cfg.MaxDBSize = 1 << 20
	cfg.MaxTokensPerUser = 0
	st, err := openStore(cfg.DB, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	u := storeUser(t, st, "alice", false)
	_, secret := storeToken(t, st, u.ID, "filler", nil, scopesReadWrite...)
	bulkTokens(t, st, u.ID, 700, time.Now(), func(int) *time.Time { return nil })
	st.Close()
	addr, _, _ := startServe(t, cfg)

	client := &http.Client{Timeout: 10 * time.Second}
	do := func(req request) (int, string) {
		r, _ := http.NewRequest(req.method, "http://"+addr+req.path, strings.NewReader(req.body))
		r.Header.Set("Authorization", "Bearer "+req.token)
		r.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(r)
		if err != nil {
			t.Fatalf("%s: %v", label(req), err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	made, code, body := fillUntilFull(t, do, secret)
	if code != http.StatusInsufficientStorage || !strings.Contains(body, "storage is full") {
		t.Fatalf("the creation that did not fit in -max-db-size = %d %s; want 507 saying storage is full", code, body)
	}
	if code, _ := do(request{method: "GET", path: "/api/v1/user", token: made[len(made)-1]}); code != http.StatusOK {
		t.Errorf("the last token acknowledged before the cap = %d; want 200", code)
	}
}
