package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Serving and managing a PostgreSQL deployment: -db URLs in serve and the
// commands, several servers on one database, and a database restart.

// newTestPGServer returns a server over the PostgreSQL database at dbURL,
// opened as serve opens it (openServeStore: its auth cache follows the
// invalidation channel), once its cache trusts the channel. Its store
// field is nil: it has no bbolt file to look inside; ts.server.store is
// the PostgreSQL store.
func newTestPGServer(t *testing.T, dbURL string) *testServer {
	t.Helper()
	cfg := defaultConfig()
	cfg.DB = dbURL
	cfg.Argon = testArgon
	clock := newFakeClock()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := openServeStore(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("openServeStore: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	pg := st.(*pgStore)
	waitFor(t, func() bool { return !pg.auth.distrusted.Load() })
	s, err := newServer(st, cfg, log, clock.Now)
	if err != nil {
		t.Fatalf("newServer: %v", err)
	}
	return &testServer{server: s, t: t, handler: s.routes(), clock: clock, logs: logs}
}

func TestRedactDB(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"tokend.db", "tokend.db"},
		{"/var/lib/tokend/a:b@c.db", "/var/lib/tokend/a:b@c.db"},
		{"postgres://tokend:s3cret@db.example:5432/tokend", "postgres://tokend:***@db.example:5432/tokend"},
		{"postgresql://tokend:s3cret@db.example/tokend?sslmode=require", "postgresql://tokend:***@db.example/tokend?sslmode=require"},
		{"postgres://tokend@db.example/tokend", "postgres://tokend@db.example/tokend"},
		{"postgres://db.example/tokend", "postgres://db.example/tokend"},
		{"postgres://tok:p@ss@h1:5432,h2:5432/tokend", "postgres://tok:***@h1:5432,h2:5432/tokend"},
		{"postgres://u:x@h/db?password=s3cret&pool_max_conns=8", "postgres://u:***@h/db?password=***&pool_max_conns=8"},
		{"postgres://h/db?sslmode=disable&pass%77ord=s3cret", "postgres://h/db?sslmode=disable&pass%77ord=***"},
	} {
		if got := redactDB(tc.in); got != tc.want {
			t.Errorf("redactDB(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

// TestPostgresURLNeverShowsPassword checks -print-config, the start-up
// log and the errors of serve and of the commands with a URL that holds a
// password.
func TestPostgresURLNeverShowsPassword(t *testing.T) {
	const secret = "s3cretPW"
	// Nothing listens on port 1: the database is unreachable.
	unreachable := "postgres://tokend:" + secret + "@127.0.0.1:1/tokend?connect_timeout=2"

	out, _, err := runCLI(t, "", "serve", "-print-config", "-db", unreachable)
	if err != nil {
		t.Fatalf("serve -print-config = %v", err)
	}
	if strings.Contains(out, secret) || !strings.Contains(out, "postgres://tokend:***@127.0.0.1:1/tokend") {
		t.Errorf("serve -print-config shows the database as:\n%s\nwant the URL with *** for the password", out)
	}
	t.Setenv("TOKEND_DB", unreachable)
	out, _, err = runCLI(t, "", "serve", "-print-config")
	if err != nil || strings.Contains(out, secret) || !strings.Contains(out, "env TOKEND_DB") {
		t.Errorf("serve -print-config with TOKEND_DB = %v:\n%s\nwant the URL from env TOKEND_DB without its password", err, out)
	}

	for _, args := range [][]string{
		{"serve", "-addr", "127.0.0.1:0"},
		{"user", "list"},
		{"token", "revoke", "7"},
		{"purge"},
	} {
		_, stderr, err := runCLI(t, "", args...)
		if err == nil {
			t.Errorf("%v on an unreachable database succeeded", args)
			continue
		}
		if strings.Contains(err.Error(), secret) || strings.Contains(stderr, secret) {
			t.Errorf("%v shows the password: %v\n%s", args, err, stderr)
		}
		if !strings.Contains(err.Error(), errStoreUnavailable.Error()) {
			t.Errorf("%v = %v; want it to say %q", args, err, errStoreUnavailable)
		}
	}

	// A reachable database, given with a password (the test server trusts
	// its local connections and ignores it): the log never shows it.
	dbURL := newTestPG(t)
	withPassword := strings.Replace(dbURL, "postgres://postgres@", "postgres://postgres:"+secret+"@", 1)
	if withPassword == dbURL {
		t.Fatalf("TOKEND_TEST_POSTGRES %q is not postgres://postgres@…", dbURL)
	}
	cfg := testServeConfig(t)
	cfg.DB = withPassword
	_, logs, stop := startServe(t, cfg)
	stop()
	if strings.Contains(logs.String(), secret) || !strings.Contains(logs.String(), "postgres:***@") {
		t.Errorf("the log of serve shows the password, or not the redacted URL:\n%s", logs)
	}
}

// TestFileCommandsRefusePostgres checks that the commands that work on a
// bbolt file refuse a URL, naming PostgreSQL's tools, and that
// -max-db-size is refused with PostgreSQL.
func TestFileCommandsRefusePostgres(t *testing.T) {
	const pgURL = "postgres://tokend:s3cretPW@127.0.0.1:1/tokend"
	dir := t.TempDir()
	file := filepath.Join(dir, "tokend.db")
	for _, args := range [][]string{
		{"backup", "-db", pgURL, filepath.Join(dir, "backup.db")},
		{"restore", "-db", pgURL, file},
		{"restore", "-db", file, pgURL},
		{"compact", pgURL, filepath.Join(dir, "compact.db")},
		{"compact", file, pgURL},
	} {
		_, _, err := runCLI(t, "", args...)
		if err == nil || !strings.Contains(err.Error(), "pg_dump") || !strings.Contains(err.Error(), "pg_restore") || strings.Contains(err.Error(), "s3cretPW") {
			t.Errorf("%v = %v; want a refusal naming pg_dump and pg_restore, without the password", args[0], err)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("the refused commands left %d files behind", len(entries))
	}
	_, _, err := runCLI(t, "", "serve", "-db", pgURL, "-max-db-size", "100000000")
	if err == nil || !strings.Contains(err.Error(), "-max-db-size") {
		t.Errorf("serve -db URL -max-db-size = %v; want -max-db-size refused", err)
	}
}

// TestCLIOnPostgres runs the commands on a PostgreSQL database and checks
// what it holds afterwards.
func TestCLIOnPostgres(t *testing.T) {
	dbURL := newTestPG(t)
	if _, _, err := runCLI(t, "correct horse battery staple\n", "user", "add", "-db", dbURL, "-admin", "-password-stdin", "alice"); err != nil {
		t.Fatalf("user add: %v", err)
	}
	t.Setenv("TOKEND_DB", dbURL)
	secret, _, err := runCLI(t, "", "token", "create", "-user", "alice", "-name", "ci", "-expires", "never")
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM tokens t JOIN users u ON u.id = t.owner WHERE u.name = 'alice' AND t.name = 'ci' AND t.id = 1"); n != 1 {
		t.Fatalf("after token create the database holds %d token 1 \"ci\" of alice; want 1", n)
	}
	out, _, err := runCLI(t, "", "token", "list")
	if err != nil || !strings.Contains(out, "alice") || !strings.Contains(out, "ci") {
		t.Errorf("token list = %v:\n%s\nwant alice's token ci", err, out)
	}

	// A server on the database takes the token; the command's revocation
	// reaches it.
	ts := newTestPGServer(t, dbURL)
	if w := ts.do(request{method: "GET", path: "/auth", token: strings.TrimSpace(secret)}); w.Code != http.StatusNoContent {
		t.Fatalf("GET /auth with the token from token create = %d; want 204", w.Code)
	}
	if out, _, err := runCLI(t, "", "token", "revoke", "1"); err != nil || !strings.Contains(out, "revoked token 1") {
		t.Fatalf("token revoke 1 = %v, %q", err, out)
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM tokens"); n != 0 {
		t.Errorf("after token revoke the database holds %d tokens; want 0", n)
	}
	start := time.Now()
	waitFor(t, func() bool {
		return ts.do(request{method: "GET", path: "/auth", token: strings.TrimSpace(secret)}).Code == http.StatusUnauthorized
	})
	t.Logf("revocation by the command refused by the server after %v", time.Since(start))
}

// TestPGIDsStaySequential checks that opening a PostgreSQL store leaves
// the id sequences alone: ids follow on from the last one, open after
// open, as on bbolt.
func TestPGIDsStaySequential(t *testing.T) {
	dbURL := newTestPG(t)
	for i := uint64(1); i <= 3; i++ {
		st := openTestPGStore(t, dbURL)
		u := newUser(fmt.Sprintf("user%d", i), "hash", false, time.Now().UTC())
		if err := st.CreateUser(testActor, &u); err != nil {
			t.Fatalf("CreateUser: %v", err)
		}
		tok := tokenRecord{Owner: u.ID, Name: "t", CreatedAt: time.Now().UTC(), Hint: "abcd"}
		if err := st.CreateToken(testActor, &tok, tokenHash{byte(i)}, 0); err != nil {
			t.Fatalf("CreateToken: %v", err)
		}
		if u.ID != i || tok.ID != i {
			t.Errorf("open %d: new user id %d, token id %d; want %d and %d", i, u.ID, tok.ID, i, i)
		}
		st.Close()
	}
}

// TestServeOnPostgres runs the real serve on a PostgreSQL database: ready,
// the cache trusted (as the metrics say), and a clean shutdown.
func TestServeOnPostgres(t *testing.T) {
	cfg := testServeConfig(t)
	cfg.DB = newTestPG(t)
	cfg.AuthCacheSize = 1000
	addr, logs, stop := startServe(t, cfg)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/readyz"); code != 200 {
		t.Errorf("GET /readyz = %d %q; want 200", code, body)
	}
	waitFor(t, func() bool {
		_, body := get("/metrics")
		return strings.Contains(body, "\ntokend_auth_cache_trusted 1\n")
	})
	if _, body := get("/metrics"); !strings.Contains(body, "\ntokend_invalidation_channel_losses_total 0\n") {
		t.Errorf("/metrics lacks tokend_invalidation_channel_losses_total 0:\n%s", body)
	}
	stop()
	for _, line := range []string{"invalidation channel up", "background loops stopped", "last-used times flushed", "database closed"} {
		if !strings.Contains(logs.String(), line) {
			t.Errorf("the log of serve lacks %q:\n%s", line, logs)
		}
	}
}

// TestTwoServersOnePostgres signs in on one server and uses the session on
// another over the same database, creates a token on one and uses it on
// the other, and revokes it on one: the other refuses it.
func TestTwoServersOnePostgres(t *testing.T) {
	dbURL := newTestPG(t)
	a, b := newTestPGServer(t, dbURL), newTestPGServer(t, dbURL)
	alice := a.addUser("alice", false)

	cookie := a.login("alice")
	checkPage(t, "GET / on the other server with the session", b.page(pageReq{method: "GET", path: "/", cookie: cookie}), http.StatusOK, "alice")

	_, writer := a.addToken(alice, "writer", []string{scopeTokensRead, scopeTokensWrite}, 0)
	w := a.do(request{method: "POST", path: "/api/v1/tokens", token: writer, body: tokenRequest("deploy", nil, nil)})
	if w.Code != http.StatusCreated {
		t.Fatalf("POST /api/v1/tokens on a = %d; want 201; body %s", w.Code, w.Body)
	}
	var created tokenJSON
	decode(t, w, &created)
	if w := b.do(request{method: "GET", path: "/auth", token: created.Token}); w.Code != http.StatusNoContent || w.Header().Get(headerAuthUser) != "alice" {
		t.Fatalf("GET /auth on b with the token created on a = %d %q; want 204 as alice", w.Code, w.Header().Get(headerAuthUser))
	}
	// b now holds the token in its cache.
	w = a.do(request{method: "DELETE", path: "/api/v1/tokens/" + strconv.FormatUint(created.ID, 10), token: writer})
	if w.Code != http.StatusNoContent {
		t.Fatalf("DELETE the token on a = %d; want 204; body %s", w.Code, w.Body)
	}
	revoked := time.Now()
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM tokens WHERE id = $1", int64(created.ID)); n != 0 {
		t.Fatalf("after DELETE the database still holds token %d", created.ID)
	}
	var last *httptest.ResponseRecorder
	waitFor(t, func() bool {
		last = b.do(request{method: "GET", path: "/auth", token: created.Token})
		return last.Code != http.StatusNoContent
	})
	t.Logf("revocation on a refused by b after %v", time.Since(revoked))
	if last.Code != http.StatusUnauthorized {
		t.Errorf("GET /auth on b with the revoked token = %d; want 401", last.Code)
	}
	// Signing out on b ends the session on a too.
	if w := b.page(pageReq{method: "POST", path: "/logout", cookie: cookie, form: url.Values{}}); w.Code != http.StatusSeeOther {
		t.Fatalf("POST /logout on b = %d; want 303; body %s", w.Code, w.Body)
	}
	if w := a.page(pageReq{method: "GET", path: "/", cookie: cookie}); w.Code != http.StatusSeeOther || !strings.HasPrefix(w.Header().Get("Location"), "/login") {
		t.Errorf("GET / on a after signing out on b = %d to %q; want 303 to /login", w.Code, w.Header().Get("Location"))
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM sessions"); n != 0 {
		t.Errorf("after signing out the database holds %d sessions; want 0", n)
	}
}

// testCluster is a PostgreSQL cluster of the test's own, in t.TempDir(),
// which the test may stop and start again.
type testCluster struct {
	t       *testing.T
	bin     string
	dir     string
	URL     string
	running bool
}

// newTestCluster initialises and starts a cluster as the postgres user,
// listening only on a socket in its folder, and stops it when the test
// ends. It skips (fails in CI) without PostgreSQL's programs or root.
func newTestCluster(t *testing.T) *testCluster {
	t.Helper()
	skip := t.Skipf
	if os.Getenv("CI") != "" {
		skip = t.Fatalf
	}
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(bins) == 0 {
		skip("no /usr/lib/postgresql/*/bin/initdb: install postgresql to run this test")
	}
	pg, err := user.Lookup("postgres")
	if err != nil || os.Geteuid() != 0 {
		skip("this test starts PostgreSQL as the postgres user, so it runs as root with that user present")
	}
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	dir := t.TempDir()
	// The postgres user must reach the folder through its parents.
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	c := &testCluster{t: t, bin: filepath.Dir(bins[len(bins)-1]), dir: dir,
		URL: "postgres://postgres@/postgres?host=" + dir + "&port=5432"}
	c.run("initdb", "-D", dir+"/data", "-A", "trust", "-U", "postgres")
	c.start()
	t.Cleanup(func() {
		if c.running {
			c.run("pg_ctl", "-D", dir+"/data", "-m", "immediate", "stop")
		}
	})
	return c
}

// run runs a PostgreSQL program as the postgres user.
func (c *testCluster) run(prog string, args ...string) {
	c.t.Helper()
	quoted := []string{shellQuote(filepath.Join(c.bin, prog))}
	for _, a := range args {
		quoted = append(quoted, shellQuote(a))
	}
	cmd := exec.Command("su", "postgres", "-s", "/bin/sh", "-c", strings.Join(quoted, " "))
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("%s %v: %v\n%s", prog, args, err, out)
	}
}

// shellQuote quotes s for sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func (c *testCluster) start() {
	c.t.Helper()
	c.run("pg_ctl", "-D", c.dir+"/data", "-l", c.dir+"/log", "-w", "-o", "-k "+c.dir+" -p 5432 -c listen_addresses=''", "start")
	c.running = true
}

func (c *testCluster) stop() {
	c.t.Helper()
	c.run("pg_ctl", "-D", c.dir+"/data", "-m", "fast", "-w", "stop")
	c.running = false
}

// metricValue returns the line of the metric name in ts's /metrics.
func metricLine(t *testing.T, ts *testServer, name string) string {
	t.Helper()
	w := ts.do(request{method: "GET", path: "/metrics", remote: "127.0.0.1:1234"})
	for _, line := range strings.Split(w.Body.String(), "\n") {
		if strings.HasPrefix(line, name+" ") {
			return line
		}
	}
	t.Fatalf("/metrics = %d without %s:\n%s", w.Code, name, w.Body)
	return ""
}

// TestPostgresRestart stops the database under a server and starts it
// again: meanwhile the API answers 503 problems with Retry-After, pages a
// readable 503, forward auth refuses (503) every token the cache no
// longer vouches for, /readyz says 503; afterwards the server recovers by
// itself.
func TestPostgresRestart(t *testing.T) {
	cluster := newTestCluster(t)
	ts := newTestPGServer(t, cluster.URL)
	alice := ts.addUser("alice", false)
	_, cached := ts.addToken(alice, "cached", []string{scopeTokensRead}, 0)
	_, uncached := ts.addToken(alice, "uncached", []string{scopeTokensRead}, 0)
	cookie := ts.login("alice")
	if w := ts.do(request{method: "GET", path: "/auth", token: cached}); w.Code != http.StatusNoContent {
		t.Fatalf("GET /auth before the restart = %d; want 204", w.Code)
	}

	cluster.stop()
	w := ts.do(request{method: "GET", path: "/api/v1/tokens", token: uncached})
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" || w.Header().Get("Content-Type") != "application/problem+json" {
		t.Errorf("GET /api/v1/tokens with the database down = %d, Retry-After %q, %q; want a 503 problem with Retry-After; body %s",
			w.Code, w.Header().Get("Retry-After"), w.Header().Get("Content-Type"), w.Body)
	}
	if w := ts.do(request{method: "GET", path: "/auth", token: uncached}); w.Code != http.StatusServiceUnavailable {
		t.Errorf("GET /auth with an uncached token and the database down = %d; want 503", w.Code)
	}
	checkPage(t, "GET / with the database down", ts.page(pageReq{method: "GET", path: "/", cookie: cookie}), http.StatusServiceUnavailable, "cannot reach its database")
	if w := ts.do(request{method: "GET", path: "/readyz"}); w.Code != http.StatusServiceUnavailable {
		t.Errorf("GET /readyz with the database down = %d; want 503", w.Code)
	}
	// Fail closed: once the channel is lost, the cache vouches for nobody.
	pg := ts.server.store.(*pgStore)
	waitFor(t, func() bool { return pg.auth.distrusted.Load() })
	if w := ts.do(request{method: "GET", path: "/auth", token: cached}); w.Code != http.StatusServiceUnavailable {
		t.Errorf("GET /auth with a once-cached token after the channel was lost = %d; want 503", w.Code)
	}
	if line := metricLine(t, ts, "tokend_auth_cache_trusted"); line != "tokend_auth_cache_trusted 0" {
		t.Errorf("with the channel lost, /metrics says %q; want tokend_auth_cache_trusted 0", line)
	}
	if line := metricLine(t, ts, "tokend_invalidation_channel_losses_total"); line != "tokend_invalidation_channel_losses_total 1" {
		t.Errorf("with the channel lost, /metrics says %q; want one loss", line)
	}

	cluster.start()
	down := time.Now()
	waitFor(t, func() bool { return ts.do(request{method: "GET", path: "/readyz"}).Code == http.StatusOK })
	waitFor(t, func() bool { return !pg.auth.distrusted.Load() })
	t.Logf("ready and trusting the cache %v after the database started again", time.Since(down))
	for _, secret := range []string{cached, uncached} {
		if w := ts.do(request{method: "GET", path: "/api/v1/tokens", token: secret}); w.Code != http.StatusOK {
			t.Errorf("GET /api/v1/tokens after the restart = %d; want 200; body %s", w.Code, w.Body)
		}
	}
	checkPage(t, "GET / after the restart", ts.page(pageReq{method: "GET", path: "/", cookie: cookie}), http.StatusOK, "alice")
	if line := metricLine(t, ts, "tokend_auth_cache_trusted"); line != "tokend_auth_cache_trusted 1" {
		t.Errorf("after the restart /metrics says %q; want tokend_auth_cache_trusted 1", line)
	}
	if strings.Contains(ts.logs.String(), "internal error") {
		t.Errorf("the restart caused internal errors:\n%s", ts.logs)
	}
}

// TestReadmeRaisesIDsAfterPGRestore runs the README's SQL for a database
// restored from an older dump: afterwards ids continue past the clock's
// floor, as after tokend restore on bbolt, and running it again lowers
// nothing.
func TestReadmeRaisesIDsAfterPGRestore(t *testing.T) {
	sql := readmeBlocks(t, "pg-raise-ids")[0]
	st, dbURL := newTestPGStore(t)
	u := newUser("alice", "hash", false, time.Now().UTC())
	if err := st.CreateUser(testActor, &u); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	floor := idFloorAt(time.Now())
	for _, stmt := range strings.Split(strings.TrimSpace(sql), ";") {
		if stmt = strings.TrimSpace(stmt); stmt != "" {
			pgExec(t, dbURL, stmt)
		}
	}
	users := uint64(pgQueryInt(t, dbURL, "SELECT last_value FROM users_id_seq"))
	tokens := uint64(pgQueryInt(t, dbURL, "SELECT last_value FROM tokens_id_seq"))
	grants := uint64(pgQueryInt(t, dbURL, "SELECT last_value FROM grants_id_seq"))
	if users < floor.Users || tokens < floor.Tokens || grants < floor.Grants || users > idFloorAt(time.Now()).Users {
		t.Errorf("after the README's SQL the sequences are at %d, %d and %d; want at least the floor %d, %d and %d",
			users, tokens, grants, floor.Users, floor.Tokens, floor.Grants)
	}
	pgExec(t, dbURL, "SELECT setval('users_id_seq', $1)", int64(users+1000))
	pgExec(t, dbURL, strings.Split(sql, ";")[0])
	if got := uint64(pgQueryInt(t, dbURL, "SELECT last_value FROM users_id_seq")); got != users+1000 {
		t.Errorf("the README's SQL moved users_id_seq from %d to %d; want it left alone above the floor", users+1000, got)
	}
	next := newUser("bob", "hash", false, time.Now().UTC())
	if err := st.CreateUser(testActor, &next); err != nil || next.ID != users+1001 {
		t.Errorf("CreateUser after the README's SQL = id %d, %v; want %d", next.ID, err, users+1001)
	}
}

// secretCookieOf returns the tokend_secret cookie that w sets, or nil.
func secretCookieOf(w *httptest.ResponseRecorder) *http.Cookie {
	for _, c := range w.Result().Cookies() {
		if c.Name == secretCookieName {
			return c
		}
	}
	return nil
}

// The page flow of a new secret works whichever instance answers each
// request: the secret made on one is shown once by another, and a form
// resent to another makes nothing.
func TestTokenFormsAcrossInstances(t *testing.T) {
	dbURL := newTestPG(t)
	a, b := newTestPGServer(t, dbURL), newTestPGServer(t, dbURL)
	alice := a.addUser("alice", false)
	a.addUser("bob", false)
	cookie := a.login("alice")
	// with sends the session cookie and, when c is not nil, the secret's.
	with := func(req pageReq, c *http.Cookie) pageReq {
		v := sessionCookieName + "=" + cookie
		if c != nil {
			v += "; " + c.Name + "=" + c.Value
		}
		req.header = map[string]string{"Cookie": v}
		return req
	}
	tokenCount := func() int64 {
		return pgQueryInt(t, dbURL, "SELECT count(*) FROM tokens WHERE owner = $1", int64(alice.ID))
	}

	form := tokenFormValues("deploy script", []string{scopeTokensRead}, "30", "")
	form.Set("form_key", formKeyOn(t, "GET / on a", a.page(pageReq{method: "GET", path: "/", cookie: cookie})))
	post := pageReq{method: "POST", path: "/tokens", form: form}
	w := a.page(with(post, nil))
	checkRedirect(t, "POST /tokens on a", w, "/secret")
	sc := secretCookieOf(w)
	if sc == nil {
		t.Fatalf("POST /tokens on a sets no %s cookie; Set-Cookie %q", secretCookieName, w.Header().Values("Set-Cookie"))
	}
	if !sc.HttpOnly || sc.SameSite != http.SameSiteStrictMode || sc.MaxAge != int(secretWait/time.Second) || sc.Path != "/" {
		t.Errorf("the secret cookie = %+v; want HttpOnly, SameSite=Strict, Max-Age=600, Path=/", sc)
	}
	// Sent again to b before the secret was seen: nothing new, and the
	// browser still finds the secret.
	checkRedirect(t, "POST /tokens again on b", b.page(with(post, sc)), "/secret")
	if n := tokenCount(); n != 1 {
		t.Fatalf("one form sent to two instances left %d tokens; want 1", n)
	}
	// A HEAD on b does not use up the showing, nor clear the cookie.
	if w := b.page(with(pageReq{method: "HEAD", path: "/secret"}, sc)); w.Code != http.StatusOK || secretCookieOf(w) != nil {
		t.Fatalf("HEAD /secret on b = %d, Set-Cookie %q; want 200 and no cookie", w.Code, w.Header().Values("Set-Cookie"))
	}
	w = b.page(with(pageReq{method: "GET", path: "/secret"}, sc))
	checkPage(t, "GET /secret on b", w, http.StatusOK, "Token created", "deploy script")
	secret := secretOnPage(t, "GET /secret on b", w)
	tokens, err := b.server.store.TokensByOwner(alice.ID)
	if err != nil || len(tokens) != 1 {
		t.Fatalf("TokensByOwner = %d tokens, %v", len(tokens), err)
	}
	checkWorks(t, a, "the token shown on b", secret, tokens[0].ID)
	if c := secretCookieOf(w); c == nil || c.MaxAge >= 0 {
		t.Errorf("GET /secret on b does not clear the secret cookie: %q", w.Header().Values("Set-Cookie"))
	}

	// The cookie is no readable secret: not the token in any encoding,
	// and it opens under alice's session alone.
	for _, enc := range []string{secret, base64.StdEncoding.EncodeToString([]byte(secret)), base64.RawURLEncoding.EncodeToString([]byte(secret)), fmt.Sprintf("%x", secret)} {
		if strings.Contains(sc.Value, enc) || strings.Contains(sc.Value, enc[:len(enc)-4]) {
			t.Errorf("the secret cookie %q holds the secret as %q", sc.Value, enc)
		}
	}
	bob := a.login("bob")
	if n := openSecret(bob, sc.Value, a.clock.Now()); n != nil {
		t.Errorf("the secret cookie opens under another session's secret")
	}
	if n := openSecret(cookie, sc.Value, a.clock.Now()); n == nil || n.secret != secret {
		t.Errorf("the secret cookie does not open under its own session")
	}
	if n := openSecret(cookie, sc.Value, a.clock.Now().Add(secretWait)); n != nil {
		t.Errorf("the secret cookie opens after %v", secretWait)
	}
	if got := pgQueryInt(t, dbURL, "SELECT count(*) FROM sessions WHERE position($1 in array_to_string(form_keys, ' ')) > 0", secret); got != 0 {
		t.Errorf("the database holds the secret")
	}

	// Shown once, whichever instance is asked, even with the old cookie
	// sent again: a, which made it, finds it shown too.
	for _, ts := range []*testServer{a, b} {
		w := ts.page(with(pageReq{method: "GET", path: "/secret"}, sc))
		checkPage(t, "GET /secret again", w, http.StatusGone, "shown only once")
		if strings.Contains(w.Body.String(), secret) {
			t.Errorf("GET /secret again shows the secret")
		}
	}
	// Sent again after the secret was seen, to b: nothing new, a notice.
	w = b.page(with(post, nil))
	checkRedirect(t, "POST /tokens on b after the showing", w, "/")
	if got := flashOf(t, b, w); !strings.Contains(got, "nothing new was made") {
		t.Errorf("POST /tokens on b after the showing: the notice says %q", got)
	}
	if n := tokenCount(); n != 1 {
		t.Fatalf("the form sent a third time left %d tokens; want 1", n)
	}

	// Rotating: the form from b, sent to b and again to a, rotates once;
	// a shows the new secret.
	path := fmt.Sprintf("/tokens/%d/rotate", tokens[0].ID)
	rotate := pageReq{method: "POST", path: path, form: url.Values{"form_key": {formKeyOn(t, "GET rotate on b", b.page(pageReq{method: "GET", path: path, cookie: cookie}))}}}
	w = b.page(with(rotate, nil))
	checkRedirect(t, "POST rotate on b", w, "/secret")
	sc = secretCookieOf(w)
	checkRedirect(t, "POST rotate again on a", a.page(with(rotate, sc)), "/secret")
	w = a.page(with(pageReq{method: "GET", path: "/secret"}, sc))
	checkPage(t, "GET /secret on a after rotating", w, http.StatusOK, "rotated")
	rotated := secretOnPage(t, "GET /secret on a after rotating", w)
	tokens, err = a.server.store.TokensByOwner(alice.ID)
	if err != nil || len(tokens) != 1 || tokenCount() != 1 {
		t.Fatalf("after one rotation sent twice: %d tokens, %v; want 1", len(tokens), err)
	}
	checkWorks(t, b, "the rotated token shown on a", rotated, tokens[0].ID)
	if w := b.do(request{method: "GET", path: "/api/v1/token", token: secret}); w.Code != http.StatusUnauthorized {
		t.Errorf("the secret before rotating = %d on b; want 401", w.Code)
	}
}
