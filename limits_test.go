package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// testServeConfig returns the configuration of a real server on a free
// loopback port over a fresh database, with cheap password hashing.
func testServeConfig(t *testing.T) config {
	t.Helper()
	cfg := defaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DB = filepath.Join(t.TempDir(), "tokend.db")
	cfg.Argon = testArgon
	return cfg
}

// startServe runs the real serve with cfg and debug logs. It returns the
// address it listens on, its logs, and a stop function that shuts it down
// and waits for it; the test's cleanup stops it too.
func startServe(t *testing.T, cfg config) (addr string, logs *syncBuffer, stop func()) {
	t.Helper()
	if !filepath.IsAbs(cfg.DB) && !isPostgresURL(cfg.DB) {
		t.Fatalf("startServe: database %q is not in a temporary folder; set cfg.DB under t.TempDir()", cfg.DB)
	}
	logs = &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, log, ready) }()
	select {
	case a := <-ready:
		addr = a.String()
	case err := <-done:
		cancel()
		t.Fatalf("serve returned before it was ready: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("serve did not become ready within 10s")
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("serve = %v; want nil after shutdown", err)
				}
			case <-time.After(20 * time.Second):
				t.Error("serve did not stop within 20s")
			}
		})
	}
	t.Cleanup(stop)
	return addr, logs, stop
}

// TestHTTPServerLimits checks that the server serve builds carries every
// limit of its configuration, that the defaults set them all, and that a
// limit cannot be switched off from the command line.
func TestHTTPServerLimits(t *testing.T) {
	cfg := defaultConfig()
	cfg.ReadHeaderTimeout, cfg.ReadTimeout, cfg.WriteTimeout, cfg.IdleTimeout = 1*time.Second, 2*time.Second, 3*time.Second, 4*time.Second
	cfg.MaxHeaderBytes = 5000
	srv := newHTTPServer(cfg, http.NotFoundHandler(), slog.New(slog.DiscardHandler))
	if srv.ReadHeaderTimeout != time.Second || srv.ReadTimeout != 2*time.Second || srv.WriteTimeout != 3*time.Second ||
		srv.IdleTimeout != 4*time.Second || srv.MaxHeaderBytes != 5000 || srv.ErrorLog == nil {
		t.Errorf("newHTTPServer = read header %v, read %v, write %v, idle %v, header bytes %d, error log %v; want 1s, 2s, 3s, 4s, 5000 and a log",
			srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout, srv.MaxHeaderBytes, srv.ErrorLog)
	}

	def := defaultConfig()
	if def.ReadHeaderTimeout <= 0 || def.ReadTimeout <= 0 || def.WriteTimeout <= 0 || def.IdleTimeout <= 0 ||
		def.MaxHeaderBytes <= 0 || def.MaxHeaderBytes > 64<<10 || def.HashQueue <= 0 || def.HashConcurrency <= 0 {
		t.Errorf("default limits %+v: want every timeout, the header cap and the hashing bounds set", def)
	}
	if err := def.check(); err != nil {
		t.Errorf("the default configuration fails its own check: %v", err)
	}

	for _, args := range [][]string{
		{"-read-header-timeout", "0s"},
		{"-read-timeout", "0s"},
		{"-write-timeout", "-1s"},
		{"-idle-timeout", "0s"},
		{"-max-header-bytes", "0"},
		{"-hash-queue", "-1"},
		{"-max-db-size", "-1"},
		{"-max-db-size", "1000"},
	} {
		all := append([]string{"serve", "-db", filepath.Join(t.TempDir(), "x.db")}, args...)
		if _, _, err := runCLI(t, "", all...); err == nil || !strings.Contains(err.Error(), args[0]) {
			t.Errorf("tokend %s = %v; want an error naming %s", strings.Join(all, " "), err, args[0])
		}
	}
}

// dribble writes msg to conn one byte every interval until the message
// ends, a write fails or stop closes. It returns how many bytes it wrote.
func dribble(conn net.Conn, msg string, interval time.Duration, stop <-chan struct{}) int {
	for i := range len(msg) {
		if _, err := conn.Write([]byte{msg[i]}); err != nil {
			return i
		}
		select {
		case <-stop:
			return i + 1
		case <-time.After(interval):
		}
	}
	return len(msg)
}

// readUntilClosed reads conn until the server closes it or limit passes,
// and returns what it read, how long it took and whether the server closed.
func readUntilClosed(conn net.Conn, limit time.Duration) (string, time.Duration, bool) {
	start := time.Now()
	conn.SetReadDeadline(start.Add(limit))
	got, err := io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return string(got), time.Since(start), false
	}
	return string(got), time.Since(start), true
}

// TestSlowHeadersCutOff is a slowloris: a client sends its request line and
// headers one byte a second. The server must hang up once
// ReadHeaderTimeout passes, long before the request is complete, without
// answering, and keep serving others.
func TestSlowHeadersCutOff(t *testing.T) {
	cfg := testServeConfig(t)
	cfg.ReadHeaderTimeout = 2 * time.Second // ReadTimeout stays at 30s: only this limit can cut it
	addr, _, _ := startServe(t, cfg)

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg := "GET /healthz HTTP/1.1\r\nHost: tokend\r\nUser-Agent: slow\r\n\r\n"
	stop := make(chan struct{})
	sent := make(chan int, 1)
	go func() { sent <- dribble(conn, msg, time.Second, stop) }()
	got, took, closed := readUntilClosed(conn, 10*time.Second)
	close(stop)
	n := <-sent
	if !closed {
		t.Fatalf("a client sending headers at 1 byte/s still had its connection after %v (%d of %d bytes sent); want it cut after %v", took, n, len(msg), cfg.ReadHeaderTimeout)
	}
	if took < cfg.ReadHeaderTimeout-500*time.Millisecond || took > cfg.ReadHeaderTimeout+3*time.Second {
		t.Errorf("the slow client was cut off after %v; want about %v", took, cfg.ReadHeaderTimeout)
	}
	// net/http hangs up, at most with a plain 400: the request never
	// reaches tokend.
	if n >= len(msg) || (got != "" && !strings.HasPrefix(got, "HTTP/1.1 400 ")) {
		t.Errorf("the slow client sent %d of %d bytes and got %q; want it cut off mid-headers, unanswered or with a 400", n, len(msg), got)
	}

	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("GET /healthz after the slow client: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("GET /healthz after the slow client = %d; want 200", resp.StatusCode)
	}
}

// TestSlowBodyCutOff: headers arrive at once but the body at one byte a
// second. ReadTimeout ends the request; nothing is written.
func TestSlowBodyCutOff(t *testing.T) {
	cfg := testServeConfig(t)
	cfg.ReadTimeout = 2 * time.Second
	addr, _, stop := startServe(t, cfg)

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := "token=" + strings.Repeat("x", 60)
	fmt.Fprintf(conn, "POST /api/v1/revoke HTTP/1.1\r\nHost: tokend\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n", len(body))
	stopDribble := make(chan struct{})
	sent := make(chan int, 1)
	go func() { sent <- dribble(conn, body, time.Second, stopDribble) }()
	got, took, closed := readUntilClosed(conn, 10*time.Second)
	close(stopDribble)
	n := <-sent
	if !closed || took > cfg.ReadTimeout+3*time.Second {
		t.Fatalf("a body sent at 1 byte/s held its connection for %v (closed: %v, %d of %d bytes sent); want it cut after %v", took, closed, n, len(body), cfg.ReadTimeout)
	}
	if n >= len(body) {
		t.Errorf("the whole slow body (%d bytes) went through; want it cut off", n)
	}
	if strings.HasPrefix(got, "HTTP/1.1 2") {
		t.Errorf("the cut-off request was answered %q; want no 2xx", firstLine(got))
	}
	stop()
	st, err := openStore(cfg.DB, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Check(); err != nil {
		t.Errorf("database after the slow body: %v", err)
	}
}

// TestIdleConnectionClosed: a keep-alive connection left idle is closed
// after IdleTimeout.
func TestIdleConnectionClosed(t *testing.T) {
	cfg := testServeConfig(t)
	cfg.IdleTimeout = time.Second
	addr, _, _ := startServe(t, cfg)

	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprint(conn, "GET /healthz HTTP/1.1\r\nHost: tokend\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("GET /healthz over a raw connection: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("GET /healthz = %d, close %v; want 200 on a kept-alive connection", resp.StatusCode, resp.Close)
	}
	start := time.Now()
	conn.SetReadDeadline(start.Add(10 * time.Second))
	_, err = br.ReadByte()
	took := time.Since(start)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("an idle connection was still open after %v; want it closed after %v", took, cfg.IdleTimeout)
	}
	if took > cfg.IdleTimeout+3*time.Second {
		t.Errorf("an idle connection was closed after %v; want about %v", took, cfg.IdleTimeout)
	}
}

// burstArgon makes each hash slow enough (4 MiB) that a burst overlaps.
var burstArgon = argonParams{Memory: 4 << 10, Time: 1, Threads: 1}

// TestSignInBurstBoundsHashing sends 500 Basic sign-ins at once. No more
// than -hash-concurrency hashes may ever run together, so memory stays at
// concurrency × m, not 500 × m; what cannot wait in the queue gets a 503
// with Retry-After; nothing else fails, and every 201 is a stored token.
func TestSignInBurstBoundsHashing(t *testing.T) {
	ts := newTestServer(t)
	ts.cfg.MaxTokensPerUser = 0
	// Four slots, whatever the machine's default, so that hashes overlap.
	ts.cfg.HashConcurrency = 4
	ts.hasher = newPasswordHasher(burstArgon, ts.cfg.HashConcurrency)
	ts.hasher.maxWaiting = int64(ts.cfg.HashQueue)
	u := ts.addUser("alice", false)
	limit := int64(ts.cfg.HashConcurrency)

	const burst = 500
	// Each sign-in comes from an address alice has signed in from before,
	// so that the sign-in throttle lets the whole burst reach the hasher.
	addr := func(i int) string { return fmt.Sprintf("10.0.0.%d", i%maxKnownAddrsPerUser+1) }
	for i := range maxKnownAddrsPerUser {
		ts.throttle.succeeded(u.ID, addr(i), ts.clock.Now())
	}
	start := make(chan struct{})
	codes := make([]int, burst)
	var wg sync.WaitGroup
	for i := range burst {
		wg.Go(func() {
			<-start
			w := ts.do(request{method: "POST", path: "/api/v1/tokens", header: basicHeader(u), remote: addr(i) + ":4711",
				body: tokenRequest(fmt.Sprintf("burst %d", i), nil, nil)})
			codes[i] = w.Code
			switch w.Code {
			case http.StatusCreated:
			case http.StatusServiceUnavailable:
				if w.Header().Get("Retry-After") == "" || w.Header().Get("Content-Type") != "application/problem+json" {
					t.Errorf("sign-in %d = 503 with Retry-After %q, Content-Type %q; want both", i, w.Header().Get("Retry-After"), w.Header().Get("Content-Type"))
				}
			default:
				t.Errorf("sign-in %d = %d %s; want 201, or 503 when the queue is full", i, w.Code, w.Body)
			}
		})
	}
	close(start)
	wg.Wait()

	created, busy := 0, 0
	for _, c := range codes {
		switch c {
		case http.StatusCreated:
			created++
		case http.StatusServiceUnavailable:
			busy++
		}
	}
	peak := ts.hasher.peak.Load()
	t.Logf("%d sign-ins at once: %d created, %d told to retry; at most %d hashes ran at once (limit %d, %d KiB each)", burst, created, busy, peak, limit, burstArgon.Memory)
	if peak > limit {
		t.Errorf("%d password hashes ran at once; want at most -hash-concurrency = %d", peak, limit)
	}
	if peak < 2 {
		t.Errorf("at most %d hash ran at once during a burst of %d; the burst did not overlap, so it shows nothing", peak, burst)
	}
	if created == 0 {
		t.Error("no sign-in of the burst succeeded")
	}
	tokens, err := ts.store.TokensByOwner(u.ID)
	if err != nil || len(tokens) != created {
		t.Errorf("the store holds %d tokens (%v); want the %d answered 201", len(tokens), err, created)
	}
	if r := ts.hasher.running.Load(); r != 0 {
		t.Errorf("%d hashes still counted as running after the burst", r)
	}
}

// TestHashQueueFullAnswers503 fills every hashing slot and the queue, and
// checks that the next sign-in is refused at once with 503 and
// Retry-After, writes nothing, and that the queued ones complete once
// slots free up.
func TestHashQueueFullAnswers503(t *testing.T) {
	ts := newTestServer(t)
	ts.cfg.HashQueue = 8
	ts.hasher.maxWaiting = int64(ts.cfg.HashQueue)
	u := ts.addUser("alice", false)

	for range ts.cfg.HashConcurrency {
		if err := ts.hasher.acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	queued := make([]int, ts.cfg.HashQueue)
	for i := range queued {
		wg.Go(func() {
			w := ts.do(request{method: "POST", path: "/api/v1/tokens", header: basicHeader(u), body: tokenRequest(fmt.Sprint("queued ", i), nil, nil)})
			queued[i] = w.Code
		})
	}
	waitFor(t, func() bool { return ts.hasher.waiting.Load() == int64(ts.cfg.HashQueue) })

	before := ts.snapshot()
	for i := range 3 {
		req := request{method: "POST", path: "/api/v1/tokens", header: basicHeader(u), body: tokenRequest("one too many", nil, nil)}
		w := ts.do(req)
		p := checkProblem(t, fmt.Sprintf("%s with a full queue (#%d)", label(req), i), w, http.StatusServiceUnavailable)
		checkDetail(t, label(req), p, "try again")
		if ra := w.Header().Get("Retry-After"); ra != "1" {
			t.Errorf("%s with a full queue: Retry-After = %q; want 1", label(req), ra)
		}
	}
	assertUnchanged(t, "sign-ins refused for a full queue", before, ts.snapshot())

	for range ts.cfg.HashConcurrency {
		ts.hasher.release()
	}
	wg.Wait()
	for i, c := range queued {
		if c != http.StatusCreated {
			t.Errorf("queued sign-in %d = %d; want 201 once a slot was free", i, c)
		}
	}
	if tokens, _ := ts.store.TokensByOwner(u.ID); len(tokens) != len(queued) {
		t.Errorf("the store holds %d tokens; want the %d queued sign-ins' tokens", len(tokens), len(queued))
	}
}

// TestTokenCapThroughAPI configures a cap of 3 tokens per user and checks
// the API: three creations succeed, the fourth is a 409 problem that names
// the cap and writes nothing, by Basic and by Bearer alike; rotating at the
// cap still works (it replaces); revoking makes room again.
func TestTokenCapThroughAPI(t *testing.T) {
	ts := newTestServer(t)
	ts.cfg.MaxTokensPerUser = 3
	u := ts.addUser("alice", false)
	other := ts.addUser("bob", false)

	var first tokenBody
	for i := range 3 {
		req := request{method: "POST", path: "/api/v1/tokens", header: basicHeader(u), body: tokenRequest(fmt.Sprint("t", i), scopesReadWrite, nil)}
		got := checkSecretAnswer(t, label(req), ts.do(req))
		if i == 0 {
			first = got
		}
	}
	before := ts.snapshot()
	for _, req := range []request{
		{method: "POST", path: "/api/v1/tokens", header: basicHeader(u), body: tokenRequest("fourth", nil, nil)},
		{method: "POST", path: "/api/v1/tokens", token: first.Token, body: tokenRequest("fourth", nil, nil)},
	} {
		p := checkProblem(t, label(req)+" past the cap", ts.do(req), http.StatusConflict)
		checkDetail(t, label(req), p, "3 tokens")
	}
	assertUnchanged(t, "creations past the cap", before, ts.snapshot())

	// The cap is per user: bob is not affected by alice's tokens.
	req := request{method: "POST", path: "/api/v1/tokens", header: basicHeader(other), body: tokenRequest("bob's", nil, nil)}
	checkSecretAnswer(t, label(req)+" for another user", ts.do(req))

	req = request{method: "POST", path: "/api/v1/token/rotate", token: first.Token}
	rotated := checkSecretAnswer(t, label(req)+" at the cap", ts.do(req))
	if tokens, _ := ts.store.TokensByOwner(u.ID); len(tokens) != 3 {
		t.Fatalf("after rotating at the cap alice holds %d tokens; want 3", len(tokens))
	}
	req = request{method: "DELETE", path: fmt.Sprintf("/api/v1/tokens/%d", rotated.ID), token: rotated.Token}
	if w := ts.do(req); w.Code != http.StatusNoContent {
		t.Fatalf("%s = %d; want 204", label(req), w.Code)
	}
	req = request{method: "POST", path: "/api/v1/tokens", header: basicHeader(u), body: tokenRequest("after revoking", nil, nil)}
	checkSecretAnswer(t, label(req)+" after revoking one", ts.do(req))
	if tokens, _ := ts.store.TokensByOwner(u.ID); len(tokens) != 3 {
		t.Errorf("alice holds %d tokens; want the cap of 3", len(tokens))
	}
}

// firstLine returns the status line of a raw HTTP answer.
func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\r\n")
	return line
}

// TestDeletionsSucceedAtTheCap fills a database capped at 1 MiB through the
// API until creations are refused, and then checks that every kind of
// deletion still succeeds and takes effect: revoking a token through the
// API and the page, a token revoking itself, a leak report, a password
// change that revokes every token, a sign-out and a user's removal. Before
// each one the database is filled again, so none lives off the space
// another freed. A creation stays 507 throughout.
func TestDeletionsSucceedAtTheCap(t *testing.T) {
	ts := newTestServer(t)
	st := ts.reopenStore(t, bolt.Options{Timeout: time.Second, MaxSize: 1 << 20})
	ts.cfg.MaxTokensPerUser = 0
	root := ts.addUser("root", true)
	alice := ts.addUser("alice", false)
	bob := ts.addUser("bob", false)
	_, rootToken := ts.addToken(root, "admin", []string{scopeAdmin}, 0)
	_, filler := ts.addToken(alice, "filler", scopesReadWrite, 0)
	victims := map[string]string{}
	var victimIDs = map[string]uint64{}
	for _, name := range []string{"api", "page", "self", "leak", "pw1", "pw2"} {
		tok, secret := ts.addToken(alice, name, scopesRead, 0)
		victims[name], victimIDs[name] = secret, tok.ID
	}
	_, bobToken := ts.addToken(bob, "bob's", scopesRead, 0)
	aliceCookie := ts.login("alice")
	bobCookie := ts.login("bob")
	// bob's tokens lie among alice's, so that his removal touches many pages.
	for range 20 {
		ts.addToken(bob, "spread", scopesRead, 0)
		bulkTokens(t, st, alice.ID, 30, ts.clock.Now(), func(int) *time.Time { return nil })
	}

	fill := func(step string) {
		t.Helper()
		_, code, body := fillUntilFull(t, func(req request) (int, string) {
			w := ts.do(req)
			return w.Code, w.Body.String()
		}, filler)
		if code != http.StatusInsufficientStorage || !strings.Contains(body, "storage is full") {
			t.Fatalf("before %s: the creation that did not fit = %d %s; want 507", step, code, body)
		}
	}
	refused := func(step, secret string) {
		t.Helper()
		if _, err := ts.verifyToken(secret); err == nil {
			t.Errorf("%s at the cap: the token still works", step)
		}
	}

	fill("the API revoke")
	if w := ts.do(request{method: "DELETE", path: "/api/v1/tokens/" + itoa(victimIDs["api"]), token: filler}); w.Code != http.StatusNoContent {
		t.Errorf("DELETE /api/v1/tokens/:id at the cap = %d %s; want 204", w.Code, w.Body)
	}
	refused("the API revoke", victims["api"])

	fill("the page revoke")
	w := ts.page(pageReq{method: "POST", path: "/tokens/" + itoa(victimIDs["page"]) + "/revoke", cookie: aliceCookie, form: url.Values{}})
	checkRedirect(t, "POST /tokens/:id/revoke at the cap", w, "/")
	refused("the page revoke", victims["page"])

	fill("the self-revoke")
	if w := ts.do(request{method: "DELETE", path: "/api/v1/token", token: victims["self"]}); w.Code != http.StatusNoContent {
		t.Errorf("DELETE /api/v1/token at the cap = %d %s; want 204", w.Code, w.Body)
	}
	refused("the self-revoke", victims["self"])

	fill("the leak report")
	if w := ts.do(request{method: "POST", path: "/api/v1/revoke", body: `{"token":"` + victims["leak"] + `"}`}); w.Code != http.StatusOK {
		t.Errorf("POST /api/v1/revoke at the cap = %d %s; want 200", w.Code, w.Body)
	}
	refused("the leak report", victims["leak"])

	fill("the password change")
	w = ts.page(pageReq{method: "POST", path: "/account/password", cookie: aliceCookie, form: url.Values{
		"current": {"password-of-alice"}, "password": {newPassword}, "confirm": {newPassword}, "revoke_tokens": {"on"}}})
	checkRedirect(t, "POST /account/password with revoke_tokens at the cap", w, "/account")
	refused("the password change", victims["pw1"])
	refused("the password change", victims["pw2"])
	refused("the password change", filler)
	if n, _ := ts.store.TokensByOwner(alice.ID); len(n) != 0 {
		t.Errorf("after the password change at the cap alice holds %d tokens; want 0", len(n))
	}

	// alice's tokens are gone, so the space is filled by root from here.
	_, filler = ts.addToken(root, "filler", scopesReadWrite, 0)
	fill("the sign-out")
	w = ts.page(pageReq{method: "POST", path: "/logout", cookie: bobCookie, form: url.Values{}})
	checkRedirect(t, "POST /logout at the cap", w, "/login")
	if n := len(ts.sessionsOf(bob)); n != 0 {
		t.Errorf("after signing out at the cap bob has %d sessions; want 0", n)
	}

	fill("the removal")
	if w := ts.do(request{method: "DELETE", path: "/api/v1/users/" + itoa(bob.ID), token: rootToken}); w.Code != http.StatusNoContent {
		t.Errorf("DELETE /api/v1/users/:id at the cap = %d %s; want 204", w.Code, w.Body)
	}
	refused("the removal", bobToken)
	if _, err := ts.store.UserByID(bob.ID); err == nil {
		t.Errorf("bob is still there after his removal at the cap")
	}

	fill("the last check")
	if err := ts.store.Check(); err != nil {
		t.Errorf("the database is inconsistent at the cap: %v", err)
	}
	if fi, err := os.Stat(ts.dbPath); err != nil || fi.Size() > 1<<20 {
		t.Errorf("the database file is %d bytes (%v); want at most the 1 MiB cap", fi.Size(), err)
	}
}

func TestCreationLimit(t *testing.T) {
	const alloc = 16 << 20
	for _, tt := range []struct{ maxSize, data int }{
		{1 << 20, 1 << 20},
		{3 << 20, 2 << 20},
		{16 << 20, 16 << 20},
		{20 << 20, 16 << 20},
		{100 << 20, 84 << 20},
	} {
		if got := boltDataLimit(tt.maxSize, alloc); got != tt.data {
			t.Errorf("boltDataLimit(%d) = %d; want %d", tt.maxSize, got, tt.data)
		}
		if got := creationLimit(tt.maxSize, alloc); got >= tt.data || got < tt.data*7/8-minDeletionReserve {
			t.Errorf("creationLimit(%d) = %d; want a reserve below %d", tt.maxSize, got, tt.data)
		}
	}
	if got := creationLimit(0, alloc); got != 0 {
		t.Errorf("creationLimit(0) = %d; want 0, no limit", got)
	}
}
