package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// scopesAdmin is what a token needs to take a backup.
var scopesAdmin = []string{scopeAdmin}

// openBackup writes data to a file and opens it as a store, failing the
// test unless it opens and passes Check. The store is closed at the end of
// the test.
func openBackup(t *testing.T, data []byte) *boltStore {
	t.Helper()
	path := filepath.Join(t.TempDir(), "backup.db")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := openStore(path, time.Second)
	if err != nil {
		t.Fatalf("the backup (%d bytes) does not open: %v", len(data), err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Check(); err != nil {
		t.Fatalf("the backup fails its consistency check: %v", err)
	}
	return st
}

// TestBackupEndpoint takes a backup through the API and checks its headers
// and that it holds exactly what the database holds.
func TestBackupEndpoint(t *testing.T) {
	ts := newTestServer(t)
	admin := ts.addUser("alice", true)
	bob := ts.addUser("bob", false)
	_, secret := ts.addToken(admin, "backups", scopesAdmin, 0)
	_, bobSecret := ts.addToken(bob, "ci", scopesRead, time.Hour)

	want := ts.snapshot()
	writes := ts.store.writeTxs.Load()
	w := ts.do(request{method: "GET", path: "/api/v1/admin/backup", token: secret})
	checkStatus(t, "GET /api/v1/admin/backup", w, http.StatusOK)
	h := w.Header()
	for k, v := range map[string]string{
		"Content-Type":           "application/octet-stream",
		"Content-Disposition":    `attachment; filename="tokend-20300102T030405Z.db"`,
		"Content-Length":         strconv.Itoa(w.Body.Len()),
		"Cache-Control":          "no-store",
		"X-Content-Type-Options": "nosniff",
	} {
		if h.Get(k) != v {
			t.Errorf("GET /api/v1/admin/backup: %s = %q; want %q", k, h.Get(k), v)
		}
	}
	if got := ts.store.writeTxs.Load() - writes; got != 0 {
		t.Errorf("taking a backup made %d write transactions; want 0", got)
	}
	backup := openBackup(t, w.Body.Bytes())
	if got := dumpStore(t, backup); !maps.Equal(got, want) {
		t.Errorf("the backup holds %d keys; want the database's %d, the same", len(got), len(want))
	}
	if _, owner, err := backup.TokenByHash(hashToken(bobSecret)); err != nil || owner.Name != "bob" {
		t.Errorf("bob's token in the backup: owner %q, %v; want it there", owner.Name, err)
	}
	if !strings.Contains(ts.logs.String(), "backup sent") {
		t.Error("the backup is not in the log")
	}
}

// TestBackupNeedsAdmin checks every way short of an admin's admin token:
// none may take the file that holds every password hash.
func TestBackupNeedsAdmin(t *testing.T) {
	ts := newTestServer(t)
	admin := ts.addUser("alice", true)
	bob := ts.addUser("bob", false)
	demoted := ts.addUser("carol", true)
	_, adminNoScope := ts.addToken(admin, "no admin scope", scopesReadWrite, 0)
	_, bobToken := ts.addToken(bob, "bob", scopesReadWrite, 0)
	_, demotedToken := ts.addToken(demoted, "was admin", scopesAdmin, 0)
	if _, err := ts.store.SetAdmin(testActor, demoted.ID, false); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		req  request
		want int
	}{
		{"no token", request{}, http.StatusUnauthorized},
		{"Basic password of an admin", request{header: basicHeader(admin)}, http.StatusBadRequest},
		{"an admin's token without the admin scope", request{token: adminNoScope}, http.StatusForbidden},
		{"a user's token", request{token: bobToken}, http.StatusForbidden},
		{"a demoted admin's admin token", request{token: demotedToken}, http.StatusForbidden},
		{"the token in the query string", request{path: "/api/v1/admin/backup?access_token=" + demotedToken}, http.StatusBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := tt.req
			req.method = "GET"
			if req.path == "" {
				req.path = "/api/v1/admin/backup"
			}
			w := ts.do(req)
			checkProblem(t, tt.name, w, tt.want)
			if bytes.Contains(w.Body.Bytes(), []byte("tokens_by_hash")) || w.Body.Len() > 4096 {
				t.Errorf("%s: the refusal carries %d bytes; want a short problem, never the file", tt.name, w.Body.Len())
			}
		})
	}
}

// revokeAll deletes the tokens of secrets in one transaction.
func revokeAll(t *testing.T, st *boltStore, secrets []string) {
	t.Helper()
	err := st.update(func(tx *bolt.Tx) error {
		for _, s := range secrets {
			h := hashToken(s)
			a, err := authByHash(tx, h)
			if err != nil {
				return err
			}
			var tok tokenRecord
			if err := getJSON(tx.Bucket(bucketTokens), itob(a.ID), &tok); err != nil {
				return err
			}
			if err := st.deleteToken(tx, &tok); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("revoke %d tokens: %v", len(secrets), err)
	}
}

// pausingRecorder is a ResponseRecorder whose first Write calls pause:
// the backup's read transaction is then open, and pause decides when it
// may go on.
type pausingRecorder struct {
	*httptest.ResponseRecorder
	once  sync.Once
	pause func()
}

func (p *pausingRecorder) Write(b []byte) (int, error) {
	p.once.Do(p.pause)
	return p.ResponseRecorder.Write(b)
}

// TestBackupWhileWriting holds a backup open in the middle of its copy
// while four clients keep creating tokens. Writes must carry on meanwhile;
// the backup must hold every token acknowledged before it began, none of
// those begun after, and pass the consistency check.
func TestBackupWhileWriting(t *testing.T) {
	ts := newTestServer(t)
	ts.cfg.MaxTokensPerUser = 0
	admin := ts.addUser("alice", true)
	bob := ts.addUser("bob", false)
	_, adminToken := ts.addToken(admin, "backups", scopesAdmin, 0)
	_, writer := ts.addToken(bob, "writer", scopesWrite, 0)
	// Tokens made and revoked before leave free pages, so that writes
	// during the backup need not grow the file: bbolt grows its memory
	// map only when no read transaction is open.
	revokeAll(t, ts.store, bulkTokens(t, ts.store, bob.ID, 3000, ts.clock.Now(), func(int) *time.Time { return nil }))

	type ack struct {
		secret      string
		afterBackup bool // the request began once the backup's transaction was open
	}
	var (
		mu      sync.Mutex
		acked   []ack
		during  atomic.Int64 // acks of requests begun during the backup
		backing atomic.Bool
	)
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				began := backing.Load()
				w := ts.do(request{method: "POST", path: "/api/v1/tokens", token: writer, body: tokenRequest(fmt.Sprintf("w%d-%d", g, i), nil, nil)})
				if w.Code != http.StatusCreated {
					t.Errorf("POST /api/v1/tokens during the backup = %d %s", w.Code, w.Body)
					return
				}
				var b tokenBody
				decode(t, w, &b)
				mu.Lock()
				acked = append(acked, ack{b.Token, began})
				mu.Unlock()
				if began {
					during.Add(1)
				}
			}
		})
	}
	t.Cleanup(func() { stop(); wg.Wait() })
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) >= 50 })

	mu.Lock()
	before := len(acked)
	mu.Unlock()
	rec := &pausingRecorder{ResponseRecorder: httptest.NewRecorder()}
	rec.pause = func() {
		backing.Store(true)
		deadline := time.Now().Add(10 * time.Second)
		for during.Load() < 30 {
			if time.Now().After(deadline) {
				t.Errorf("only %d tokens were created in 10s while a backup was open; want writes to carry on", during.Load())
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	r := httptest.NewRequest("GET", "/api/v1/admin/backup", nil)
	r.Header.Set("Authorization", "Bearer "+adminToken)
	ts.handler.ServeHTTP(rec, r)
	stop()
	wg.Wait()
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /api/v1/admin/backup = %d %s", rec.Code, rec.Body)
	}

	backup := openBackup(t, rec.Body.Bytes())
	mu.Lock()
	defer mu.Unlock()
	present, absent := 0, 0
	for i, a := range acked {
		_, _, err := backup.TokenByHash(hashToken(a.secret))
		switch {
		case i < before && err != nil:
			t.Errorf("token %d, acknowledged before the backup began, is not in it: %v", i, err)
		case a.afterBackup && err == nil:
			t.Errorf("token %d, requested after the backup began, is in it: the copy is not one point in time", i)
		case err == nil:
			present++
		default:
			absent++
		}
	}
	t.Logf("%d tokens acknowledged before the backup, %d during it; the backup holds %d of them", before, during.Load(), present)
	if int64(absent) < during.Load() {
		t.Errorf("%d tokens are missing from the backup; want at least the %d made during it", absent, during.Load())
	}
	for _, a := range acked {
		if _, _, err := ts.store.TokenByHash(hashToken(a.secret)); err != nil {
			t.Fatalf("an acknowledged token is missing from the live database: %v", err)
		}
	}
}

// TestBackupRestore takes a backup from the real server over HTTP, makes
// a token after it, then restores the backup as the README says (stop,
// tokend restore, start): the earlier token works, the later one is gone,
// and the restored file is sound.
func TestBackupRestore(t *testing.T) {
	cfg := testServeConfig(t)
	st, err := openStore(cfg.DB, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	admin := storeUser(t, st, "alice", true)
	_, secret := storeToken(t, st, admin.ID, "admin", nil, scopeTokensWrite, scopeAdmin)
	st.Close()

	addr, _, stop := startServe(t, cfg)
	get := func(path, token string) (*http.Response, []byte) {
		req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s: reading the body: %v", path, err)
		}
		return resp, body
	}
	resp, data := get("/api/v1/admin/backup", secret)
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(data)) {
		t.Fatalf("GET /api/v1/admin/backup = %d with %d of %d bytes", resp.StatusCode, len(data), resp.ContentLength)
	}
	cd := resp.Header.Get("Content-Disposition")
	if !strings.HasPrefix(cd, `attachment; filename="tokend-`+time.Now().UTC().Format("2006")) {
		t.Errorf("Content-Disposition = %q; want a file name with today's UTC time", cd)
	}
	backupFile := filepath.Join(t.TempDir(), "tokend-backup.db")
	if err := os.WriteFile(backupFile, data, 0o600); err != nil {
		t.Fatal(err)
	}

	req, _ := http.NewRequest("POST", "http://"+addr+"/api/v1/tokens", strings.NewReader(tokenRequest("after the backup", nil, nil)))
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var later tokenBody
	if err := decodeJSONBody(resp, &later); err != nil || resp.StatusCode != 201 {
		t.Fatalf("POST /api/v1/tokens = %d, %v", resp.StatusCode, err)
	}
	stop()

	// Restore: the server is stopped.
	if _, _, err := runCLI(t, "", "restore", "-db", cfg.DB, "-force", backupFile); err != nil {
		t.Fatalf("tokend restore = %v", err)
	}
	addr, _, stop = startServe(t, cfg)
	if resp, _ := get("/api/v1/user", secret); resp.StatusCode != 200 {
		t.Errorf("the token from before the backup, after the restore = %d; want 200", resp.StatusCode)
	}
	if resp, _ := get("/api/v1/user", later.Token); resp.StatusCode != 401 {
		t.Errorf("the token made after the backup, after the restore = %d; want 401", resp.StatusCode)
	}
	stop()
	st, err = openStore(cfg.DB, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Check(); err != nil {
		t.Errorf("the restored database: %v", err)
	}
}

// decodeJSONBody decodes and closes an HTTP response's JSON body.
func decodeJSONBody(resp *http.Response, v any) error {
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// dirNames returns the names in dir, to catch temporary files left behind.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// TestBackupCommand checks tokend backup: a sound copy of mode 0600, no
// overwriting without -force, no database made from a mistyped name, a
// clear refusal while a server holds the file, and no temporary file left
// behind by any of it.
func TestBackupCommand(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "tokend.db")
	st, err := openStore(db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	u := storeUser(t, st, "alice", true)
	_, secret := storeToken(t, st, u.ID, "kept", nil)
	want := dumpStore(t, st)
	st.Close()

	out := filepath.Join(dir, "copy.db")
	stdout, _, err := runCLI(t, "", "backup", "-db", db, out)
	if err != nil || !strings.Contains(stdout, "backed up") {
		t.Fatalf("tokend backup = %q, %v", stdout, err)
	}
	if mode, _ := fileMode(out); mode != 0o600 {
		t.Errorf("the backup has mode %#o; want 0600", mode)
	}
	data, _ := os.ReadFile(out)
	copied := openBackup(t, data)
	if got := dumpStore(t, copied); !maps.Equal(got, want) {
		t.Errorf("the backup holds %d keys; want the database's %d", len(got), len(want))
	}
	if _, _, err := copied.TokenByHash(hashToken(secret)); err != nil {
		t.Errorf("the token is not in the backup: %v", err)
	}

	os.WriteFile(out, []byte("precious"), 0o600)
	if _, _, err := runCLI(t, "", "backup", "-db", db, out); err == nil || !strings.Contains(err.Error(), "-force") {
		t.Errorf("tokend backup over an existing file = %v; want a refusal naming -force", err)
	}
	if got, _ := os.ReadFile(out); string(got) != "precious" {
		t.Errorf("a refused backup changed the existing file")
	}
	if _, _, err := runCLI(t, "", "backup", "-db", db, "-force", out); err != nil {
		t.Errorf("tokend backup -force = %v", err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Errorf("tokend backup -force did not replace the file with the database")
	}

	missing := filepath.Join(dir, "typo.db")
	if _, _, err := runCLI(t, "", "backup", "-db", missing, filepath.Join(dir, "x.db")); err == nil || !strings.Contains(err.Error(), "no database") {
		t.Errorf("tokend backup of a missing database = %v; want no database", err)
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("tokend backup created the database it was asked to copy")
	}
	if _, _, err := runCLI(t, "", "backup", "-db", db, filepath.Join(dir, "no", "such", "folder.db")); err == nil {
		t.Error("tokend backup into a missing folder = nil error")
	}

	cfg := testServeConfig(t)
	cfg.DB = db
	_, _, stop := startServe(t, cfg)
	start := time.Now()
	_, _, err = runCLI(t, "", "backup", "-db", db, filepath.Join(dir, "while-serving.db"))
	if err == nil || !strings.Contains(err.Error(), "/api/v1/admin/backup") || time.Since(start) > 3*time.Second {
		t.Errorf("tokend backup while serving = %v after %v; want a refusal within seconds that points at the API", err, time.Since(start))
	}
	stop()

	if names := dirNames(t, dir); strings.Join(names, " ") != "copy.db tokend.db" {
		t.Errorf("the folder holds %v; want only the database and its backup, no temporary files", names)
	}
}

// TestCompactCommand fills a database, revokes most of it and compacts it:
// the copy is smaller, holds the same records, sequences included, and
// passes the check; the source is untouched.
func TestCompactCommand(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "tokend.db")
	st, err := openStore(src, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	u := storeUser(t, st, "alice", false)
	secrets := bulkTokens(t, st, u.ID, 2000, time.Now(), func(int) *time.Time { return nil })
	revokeAll(t, st, secrets[:1950])
	want := dumpStore(t, st)
	st.Close()
	srcBytes, _ := os.ReadFile(src)

	dst := filepath.Join(dir, "compact.db")
	stdout, _, err := runCLI(t, "", "compact", src, dst)
	if err != nil || !strings.Contains(stdout, "compacted") {
		t.Fatalf("tokend compact = %q, %v", stdout, err)
	}
	before, _ := os.Stat(src)
	after, _ := os.Stat(dst)
	t.Logf("compacted %d bytes to %d", before.Size(), after.Size())
	if after.Size() >= before.Size()/2 {
		t.Errorf("compacting a database most of which was revoked took %d bytes to %d; want much smaller", before.Size(), after.Size())
	}
	if got, _ := os.ReadFile(src); !bytes.Equal(got, srcBytes) {
		t.Error("tokend compact changed its source")
	}
	data, _ := os.ReadFile(dst)
	compacted := openBackup(t, data)
	if got := dumpStore(t, compacted); !maps.Equal(got, want) {
		t.Errorf("the compacted copy holds %d keys; want the source's %d, the same", len(got), len(want))
	}
	for _, s := range secrets[1950:] {
		if _, _, err := compacted.TokenByHash(hashToken(s)); err != nil {
			t.Fatalf("a kept token is missing from the compacted copy: %v", err)
		}
	}

	if _, _, err := runCLI(t, "", "compact", src, dst); err == nil || !strings.Contains(err.Error(), "-force") {
		t.Errorf("tokend compact onto an existing file = %v; want a refusal naming -force", err)
	}
	if _, _, err := runCLI(t, "", "compact", src, src); err == nil {
		t.Error("tokend compact SRC SRC = nil error")
	}
	if _, _, err := runCLI(t, "", "compact", src); err == nil {
		t.Error("tokend compact with one argument = nil error")
	}
}

// slowBackup asks addr for a backup on a connection with a small receive
// buffer, so that the server cannot push the file into socket buffers and
// be done, waits first, then reads it chunk bytes every pause. It returns the announced length, the bytes read and the time taken.
func slowBackup(t *testing.T, addr, token string, first time.Duration, chunk int, pause time.Duration) (int64, []byte, time.Duration) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.(*net.TCPConn).SetReadBuffer(256 << 10)
	start := time.Now()
	conn.SetDeadline(start.Add(60 * time.Second))
	fmt.Fprintf(conn, "GET /api/v1/admin/backup HTTP/1.1\r\nHost: tokend\r\nAuthorization: Bearer %s\r\n\r\n", token)
	br := bufio.NewReaderSize(conn, chunk)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /api/v1/admin/backup = %v, %v", resp, err)
	}
	time.Sleep(first)
	var got bytes.Buffer
	buf := make([]byte, chunk)
	for {
		n, err := resp.Body.Read(buf)
		got.Write(buf[:n])
		if err != nil {
			break
		}
		time.Sleep(pause)
	}
	return resp.ContentLength, got.Bytes(), time.Since(start)
}

// deadlineRecorder is a ResponseRecorder that, like the server's own
// writer, takes write deadlines, and records each with the moment it was set.
type deadlineRecorder struct {
	*httptest.ResponseRecorder
	writes    int
	deadlines []time.Duration // each deadline minus the moment it was set
}

func (d *deadlineRecorder) SetWriteDeadline(t time.Time) error {
	d.deadlines = append(d.deadlines, time.Until(t))
	return nil
}

func (d *deadlineRecorder) Write(b []byte) (int, error) {
	d.writes++
	return d.ResponseRecorder.Write(b)
}

// TestBackupMovesWriteDeadline: a backup pushes the connection's write
// deadline -write-timeout ahead before every write, so that a large copy
// read steadily may take longer than -write-timeout in all.
func TestBackupMovesWriteDeadline(t *testing.T) {
	ts := newTestServer(t)
	ts.cfg.WriteTimeout = 7 * time.Second
	admin := ts.addUser("alice", true)
	_, secret := ts.addToken(admin, "backups", scopesAdmin, 0)
	bulkTokens(t, ts.store, admin.ID, 5000, ts.clock.Now(), func(int) *time.Time { return nil })

	rec := &deadlineRecorder{ResponseRecorder: httptest.NewRecorder()}
	r := httptest.NewRequest("GET", "/api/v1/admin/backup", nil)
	r.Header.Set("Authorization", "Bearer "+secret)
	ts.handler.ServeHTTP(rec, r)
	if rec.Code != 200 || rec.Body.Len() < 1<<20 {
		t.Fatalf("GET /api/v1/admin/backup = %d with %d bytes; want 200 with at least 1 MiB", rec.Code, rec.Body.Len())
	}
	if len(rec.deadlines) < rec.writes || rec.writes < 10 {
		t.Fatalf("%d writes moved the write deadline %d times; want before every write", rec.writes, len(rec.deadlines))
	}
	for i, d := range rec.deadlines {
		if d < ts.cfg.WriteTimeout-time.Second || d > ts.cfg.WriteTimeout {
			t.Fatalf("deadline %d was set %v ahead; want -write-timeout (%v)", i, d, ts.cfg.WriteTimeout)
		}
	}
}

// TestBackupStalledClientCutOff: a client that stops reading a backup is
// cut off after -write-timeout, and the server logs it.
func TestBackupStalledClientCutOff(t *testing.T) {
	cfg := testServeConfig(t)
	cfg.WriteTimeout = time.Second
	st, err := openStore(cfg.DB, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	admin := storeUser(t, st, "alice", true)
	_, secret := storeToken(t, st, admin.ID, "backups", nil, scopesAdmin...)
	err = st.db.Update(func(tx *bolt.Tx) error {
		// Ballast, so that the copy outgrows the socket buffers.
		b, err := tx.CreateBucket([]byte("ballast"))
		if err != nil {
			return err
		}
		for i := range 16 {
			if err := b.Put(itob(uint64(i)), bytes.Repeat([]byte{byte(i)}, 1<<20)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	addr, logs, _ := startServe(t, cfg)

	size, data, _ := slowBackup(t, addr, secret, 3*time.Second, 64<<10, 0)
	if int64(len(data)) >= size {
		t.Errorf("a client that stopped reading for 3s still got the whole backup (%d bytes); want it cut off after -write-timeout", len(data))
	}
	waitFor(t, func() bool { return strings.Contains(logs.String(), "backup interrupted") })
}

// idLedger records the user and token ids a test hands out and fails the
// test when one is handed out twice.
type idLedger struct {
	t      *testing.T
	issued map[string]string // "user 7" → the run that issued it
}

// issue opens the database at path, as a restarted server would, hands out
// three user and three token ids in it, and closes it. It returns the
// users made.
func (l *idLedger) issue(path, run string) []userRecord {
	l.t.Helper()
	st, err := openStore(path, time.Second)
	if err != nil {
		l.t.Fatalf("open %s for the %s run: %v", path, run, err)
	}
	defer st.Close()
	var users []userRecord
	for i := range 3 {
		u := storeUser(l.t, st, fmt.Sprintf("%s%d", run, i), false)
		tok, _ := storeToken(l.t, st, u.ID, run, nil)
		for _, id := range []string{fmt.Sprint("user ", u.ID), fmt.Sprint("token ", tok.ID)} {
			if before, ok := l.issued[id]; ok {
				l.t.Errorf("%s run: %s was issued before, in the %s run", run, id, before)
			}
			l.issued[id] = run
		}
		users = append(users, u)
	}
	return users
}

// restoreIDs parses what tokend restore prints: where user and token ids
// continue.
func restoreIDs(t *testing.T, stdout string) idSequences {
	t.Helper()
	var q idSequences
	i := strings.Index(stdout, "new user ids")
	if i < 0 {
		t.Fatalf("tokend restore printed %q; want where ids continue", stdout)
	}
	if _, err := fmt.Sscanf(stdout[i:], "new user ids start after %d, new token ids after %d", &q.Users, &q.Tokens); err != nil {
		t.Fatalf("tokend restore printed %q: %v", stdout, err)
	}
	return q
}

// TestIDsNeverReusedAfterRestore backs a database up, hands out more user
// and token ids (across a restart), restores the backup with tokend
// restore and hands out more: none of the ids issued after the backup may
// be issued again, or X-Auth-User-Id would name another person to the
// apps behind the proxy. The restore moves past the replaced database's
// sequences even where they lie above the clock's floor (a clock that went
// back), and the restored file holds the backup's data.
func TestIDsNeverReusedAfterRestore(t *testing.T) {
	dir := t.TempDir()
	db, backup := filepath.Join(dir, "tokend.db"), filepath.Join(dir, "backup.db")
	ids := &idLedger{t: t, issued: map[string]string{}}
	ids.issue(db, "first")
	if _, _, err := runCLI(t, "", "backup", "-db", db, backup); err != nil {
		t.Fatalf("tokend backup = %v", err)
	}
	ids.issue(db, "second")
	ids.issue(db, "third") // after a restart

	// The replaced database's user sequence lies past the clock's floor.
	ahead := idFloor(time.Now().Add(365*24*time.Hour), 1)
	st, err := openStore(db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = st.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketUsers).SetSequence(ahead) })
	st.Close()
	if err != nil {
		t.Fatal(err)
	}

	floor := idFloorAt(time.Now())
	stdout, _, err := runCLI(t, "", "restore", "-db", db, "-force", backup)
	if err != nil {
		t.Fatalf("tokend restore -force = %v", err)
	}
	next := restoreIDs(t, stdout)
	if next.Users != ahead {
		t.Errorf("tokend restore: new user ids start after %d; want after %d, the replaced database's sequence", next.Users, ahead)
	}
	if next.Tokens < floor.Tokens || next.Tokens > idFloorAt(time.Now()).Tokens {
		t.Errorf("tokend restore: new token ids start after %d; want after the clock's floor, %d or a little more", next.Tokens, floor.Tokens)
	}
	if mode, _ := fileMode(db); mode != 0o600 {
		t.Errorf("the restored database has mode %#o; want 0600", mode)
	}
	if names := dirNames(t, dir); strings.Join(names, " ") != "backup.db tokend.db" {
		t.Errorf("the folder holds %v; want the database and the backup, no temporary files", names)
	}

	users := ids.issue(db, "restored")
	if users[0].ID != next.Users+1 {
		t.Errorf("the first user after the restore has id %d; want %d", users[0].ID, next.Users+1)
	}
	st, err = openStore(db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Check(); err != nil {
		t.Errorf("Check after the restore: %v", err)
	}
	if _, err := st.UserByName("first0"); err != nil {
		t.Errorf("a user from the backup, after the restore: %v", err)
	}
	if _, err := st.UserByName("second0"); !errors.Is(err, errNotFound) {
		t.Errorf("a user made after the backup, after the restore = %v; want errNotFound", err)
	}
}

// TestRestoreWithTheDatabaseLost restores a backup where the database is
// gone (its disk died): only the clock's floor knows what ids were handed
// out since the backup, and none is handed out again. User ids stay within
// what the auth cache holds.
func TestRestoreWithTheDatabaseLost(t *testing.T) {
	dir := t.TempDir()
	db, backup := filepath.Join(dir, "tokend.db"), filepath.Join(dir, "backup.db")
	ids := &idLedger{t: t, issued: map[string]string{}}
	ids.issue(db, "first")
	if _, _, err := runCLI(t, "", "backup", "-db", db, backup); err != nil {
		t.Fatalf("tokend backup = %v", err)
	}
	ids.issue(db, "second")
	if err := os.Remove(db); err != nil {
		t.Fatal(err)
	}

	floor := idFloorAt(time.Now())
	stdout, _, err := runCLI(t, "", "restore", "-db", db, backup)
	if err != nil {
		t.Fatalf("tokend restore onto a lost database = %v; want it restored without -force", err)
	}
	if next, later := restoreIDs(t, stdout), idFloorAt(time.Now()); next.Users < floor.Users || next.Users > later.Users ||
		next.Tokens < floor.Tokens || next.Tokens > later.Tokens {
		t.Errorf("tokend restore: ids continue after %+v; want the clock's floor, %+v or a little more", next, floor)
	}
	users := ids.issue(db, "restored")
	if users[0].ID > ownerMask {
		t.Errorf("the first user after the restore has id %d; want one the auth cache can hold (below 2^%d)", users[0].ID, ownerBits)
	}
	// Grant ids, shown in URLs, continue past the clock's floor too.
	st, err := openStore(db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if seq, err := st.IDSequences(); err != nil || seq.Grants < floor.Grants || seq.Grants == 0 {
		t.Errorf("the grant sequence after the restore = %d, %v; want at least the clock's floor, %d", seq.Grants, err, floor.Grants)
	}
}

// TestPlainRestartKeepsIDsSequential: a server restarted on its own file
// carries on where it stopped, so ids read 1, 2, 3 and not some number
// taken from the clock.
func TestPlainRestartKeepsIDsSequential(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokend.db")
	for run := uint64(1); run <= 3; run++ {
		st, err := openStore(path, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		u := storeUser(t, st, fmt.Sprint("user", run), false)
		tok, _ := storeToken(t, st, u.ID, "t", nil)
		st.Close()
		if u.ID != run || tok.ID != run {
			t.Errorf("run %d handed out user %d and token %d; want %d and %d", run, u.ID, tok.ID, run, run)
		}
	}
}

// TestRestoreRefusals: tokend restore refuses a backup that is missing,
// not a tokend database, of a schema this binary does not read, or
// unsound; a database a server holds; an existing database without
// -force; and the database as its own backup. Each refusal says why and
// leaves the database and its folder as they were.
func TestRestoreRefusals(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "tokend.db")
	st, err := openStore(db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	alice := storeUser(t, st, "alice", true)
	storeToken(t, st, alice.ID, "kept", nil)
	st.Close()
	good := filepath.Join(dir, "good.db")
	if _, _, err := runCLI(t, "", "backup", "-db", db, good); err != nil {
		t.Fatal(err)
	}

	// makeBackup writes a bbolt file named name, filled by fill.
	makeBackup := func(name string, fill func(tx *bolt.Tx) error) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if _, _, err := runCLI(t, "", "backup", "-db", db, path); err != nil {
			t.Fatal(err)
		}
		bdb, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer bdb.Close()
		if err := bdb.Update(fill); err != nil {
			t.Fatal(err)
		}
		return path
	}
	foreign := filepath.Join(dir, "foreign.db")
	fdb, err := bolt.Open(foreign, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := fdb.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("widgets")); return err }); err != nil {
		t.Fatal(err)
	}
	fdb.Close()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, bytes.Repeat([]byte("not a database "), 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	newer := makeBackup("newer.db", func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySchema, itob(schemaVersion+1)) })
	unsound := makeBackup("unsound.db", func(tx *bolt.Tx) error { return tx.Bucket(bucketUsersByName).Delete([]byte("alice")) })

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"missing backup", []string{"-force", filepath.Join(dir, "typo.db")}, "no backup at " + filepath.Join(dir, "typo.db")},
		{"garbage", []string{"-force", garbage}, errNotTokendDB.Error()},
		{"another program's bbolt file", []string{"-force", foreign}, errNotTokendDB.Error()},
		{"a newer schema", []string{"-force", newer}, errUnsupportedData.Error()},
		{"unsound", []string{"-force", unsound}, "does not pass the consistency check"},
		{"without -force", []string{good}, "exists; pass -force"},
		{"the database itself", []string{"-force", db}, "is the database itself"},
		{"no backup named", []string{"-force"}, "want 1 argument"},
	}
	data, _ := os.ReadFile(db)
	files := dirNames(t, dir)
	check := func(what string) {
		t.Helper()
		if got, _ := os.ReadFile(db); !bytes.Equal(got, data) {
			t.Errorf("%s changed the database", what)
		}
		if got := dirNames(t, dir); !slices.Equal(got, files) {
			t.Errorf("%s left the folder holding %v; want %v", what, got, files)
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := runCLI(t, "", append([]string{"restore", "-db", db}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("tokend restore %s = %v; want an error saying %q", strings.Join(tt.args, " "), err, tt.want)
			}
			check("tokend restore " + strings.Join(tt.args, " "))
		})
	}

	// A server holds the database.
	held, err := openStore(db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	data, _ = os.ReadFile(db) // opening it for writing committed a transaction
	before := dumpStore(t, held)
	_, _, err = runCLI(t, "", "restore", "-db", db, "-force", good)
	if !errors.Is(err, errDatabaseInUse) || !strings.Contains(err.Error(), "stop it before restoring") {
		t.Errorf("tokend restore while a server holds the database = %v; want %v and what to do", err, errDatabaseInUse)
	}
	check("tokend restore beside a server")
	assertUnchanged(t, "tokend restore beside a server", before, dumpStore(t, held))
}

// TestUserIDFloorFitsTheAuthCache pins the user id floor's rate: the auth
// cache packs owner ids into 48 bits, and a user id past them is never
// cached, so every restore must leave user ids far below 2^48.
func TestUserIDFloorFitsTheAuthCache(t *testing.T) {
	year3000 := time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, r := range idFloorRates {
		if string(r.bucket) != string(bucketUsers) {
			continue
		}
		if floor := idFloor(year3000, r.perMilli); floor >= ownerMask {
			t.Errorf("user id floor in the year 3000 = %d; want below 2^%d, the owners the auth cache holds", floor, ownerBits)
		}
		return
	}
	t.Fatal("idFloorRates has no rate for users")
}

// storeWithoutFile is a store that keeps no file of its own, as a
// database server's engine: it offers the contract and nothing more.
type storeWithoutFile struct{ store }

// TestBackupWithoutAFile asks a server whose store keeps no file of its
// own for a backup: a 501 problem that names the way to back it up, and
// nothing written; its metrics leave out the file's size.
func TestBackupWithoutAFile(t *testing.T) {
	ts := newTestServer(t)
	admin := ts.addUser("alice", true)
	_, secret := ts.addToken(admin, "backups", scopesAdmin, 0)
	ts.server.store = storeWithoutFile{ts.store}
	ts.metrics = newMetrics(ts.server.store, ts.log)
	writes := ts.store.writeTxs.Load()
	w := ts.do(request{method: "GET", path: "/api/v1/admin/backup", token: secret})
	p := checkProblem(t, "backup of a store without a file", w, http.StatusNotImplemented)
	checkDetail(t, "backup of a store without a file", p, "pg_dump")
	if got := ts.store.writeTxs.Load() - writes; got != 0 {
		t.Errorf("the refused backup made %d write transactions", got)
	}
	mw := ts.do(request{method: "GET", path: "/metrics", token: secret})
	if body := mw.Body.String(); mw.Code != http.StatusOK || !strings.Contains(body, "tokend_users 1") || strings.Contains(body, "tokend_database_size_bytes") {
		t.Errorf("GET /metrics = %d; want the totals and no file size:\n%s", mw.Code, body)
	}
}

// TestRestoreOlderBackup: a backup taken by an older tokend, of an older
// schema, restores: the restored database is upgraded and holds what the
// backup held, and the backup file itself is left as it was.
func TestRestoreOlderBackup(t *testing.T) {
	dir := t.TempDir()
	db, backup := filepath.Join(dir, "tokend.db"), filepath.Join(dir, "old-backup.db")
	st, err := openStore(backup, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	alice := storeUser(t, st, "alice", false)
	_, secret := storeToken(t, st, alice.ID, "ci", nil)
	// Schema 2: the same file before the OAuth buckets.
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
	before, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}

	if _, stderr, err := runCLI(t, "", "restore", "-db", db, backup); err != nil {
		t.Fatalf("tokend restore of a schema 2 backup = %v (%s); want it restored", err, stderr)
	}
	if after, err := os.ReadFile(backup); err != nil || !bytes.Equal(before, after) {
		t.Errorf("the backup changed while it was restored (%v)", err)
	}
	st, err = openStoreWith(db, bolt.Options{Timeout: time.Second, ReadOnly: true})
	if err != nil {
		t.Fatalf("the restored database does not open read-only, as a current one does: %v", err)
	}
	defer st.Close()
	if a, u, err := st.Authenticate(hashToken(secret)); err != nil || u.Name != "alice" || a.Owner != alice.ID {
		t.Errorf("the backup's token in the restored database: %+v %+v %v; want alice's", a, u, err)
	}
	if err := st.Check(); err != nil {
		t.Errorf("the restored database: %v", err)
	}
}
