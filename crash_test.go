package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// buildTokend compiles this package into a binary in a temporary folder.
func buildTokend(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go") // go test puts its own go first on PATH
	if err != nil {
		t.Fatalf("find the go command to build tokend: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "tokend")
	out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// child is a tokend serve process.
type child struct {
	cmd    *exec.Cmd
	addr   string
	stderr *syncBuffer
	done   chan struct{}
}

// startChild runs `bin serve` on a port the kernel picks and waits until it
// logs the address it listens on. The test's cleanup kills it.
func startChild(t *testing.T, bin string, args ...string) *child {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "-addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), "TOKEND_LOG_FORMAT=text")
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	c := &child{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	t.Cleanup(func() { c.kill(t) })
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(c.stderr, line)
			if _, url, ok := strings.Cut(line, "msg=listening url=http://"); ok {
				a, _, _ := strings.Cut(url, " ")
				addr <- a
			}
		}
		io.Copy(io.Discard, pipe)
		cmd.Wait()
		close(c.done)
	}()
	select {
	case c.addr = <-addr:
	case <-c.done:
		t.Fatalf("tokend exited before listening:\n%s", c.stderr)
	case <-time.After(15 * time.Second):
		t.Fatalf("tokend did not log its address within 15s:\n%s", c.stderr)
	}
	return c
}

// kill ends the process with SIGKILL, at once and without any cleanup of
// its own, and waits until it is gone.
func (c *child) kill(t *testing.T) {
	c.cmd.Process.Kill()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Errorf("tokend (pid %d) did not die within 10s of SIGKILL", c.cmd.Process.Pid)
	}
}

// crashLedger is what the clients of the crash test were told: tokens
// answered 201 (and not revoked since), tokens whose revocation was
// answered 204 (or whose rotation was answered 201), and tokens whose fate
// is unknown because the process died in the middle of changing them.
type crashLedger struct {
	mu        sync.Mutex
	acked     map[string]uint64 // secret → id
	revoked   map[string]bool
	uncertain int
	creates   int // 201s, over all rounds
	revokes   int // 204s and rotations
	// unexpected holds answers other than success from a live server:
	// a killed server answers nothing, so each of these is a bug.
	unexpected []string
}

// failed notes a request that ended without success: a transport error
// means the server died under it; a complete answer is unexpected.
func (l *crashLedger) failed(what string, code int, body []byte, err error, unknown int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.uncertain += unknown
	if err == nil {
		l.unexpected = append(l.unexpected, fmt.Sprintf("%s = %d %s", what, code, body))
	}
}

// creator is one client of the crash test: it creates tokens with its
// bootstrap token, and now and then revokes or rotates one it made, until
// a request fails because the server died.
func (l *crashLedger) creator(client *http.Client, base, bootstrap string, id, round int) (creates int) {
	var mine []string // this creator's acknowledged tokens, oldest first
	do := func(method, path, body string) (int, []byte, error) {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+bootstrap)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}
	for i := 0; ; i++ {
		switch {
		case i%5 == 4 && len(mine) > 0: // revoke the oldest
			secret := mine[0]
			l.mu.Lock()
			tokID := l.acked[secret]
			delete(l.acked, secret) // unknown until answered
			l.mu.Unlock()
			mine = mine[1:]
			path := fmt.Sprintf("/api/v1/tokens/%d", tokID)
			code, body, err := do("DELETE", path, "")
			if err != nil || code != http.StatusNoContent {
				l.failed("DELETE "+path, code, body, err, 1)
				return creates
			}
			l.mu.Lock()
			l.revoked[secret] = true
			l.revokes++
			l.mu.Unlock()
		case i%7 == 6 && len(mine) > 0: // rotate the newest
			secret := mine[len(mine)-1]
			l.mu.Lock()
			tokID := l.acked[secret]
			delete(l.acked, secret)
			l.mu.Unlock()
			mine = mine[:len(mine)-1]
			path := fmt.Sprintf("/api/v1/tokens/%d/rotate", tokID)
			code, body, err := do("POST", path, "")
			var made tokenJSON
			if err == nil && code == http.StatusCreated && json.Unmarshal(body, &made) == nil && made.Token != "" {
				l.mu.Lock()
				l.revoked[secret] = true
				l.acked[made.Token] = made.ID
				l.revokes++
				l.creates++
				l.mu.Unlock()
				mine = append(mine, made.Token)
				creates++
				continue
			}
			l.failed("POST "+path, code, body, err, 2)
			return creates
		default:
			var expires *time.Time
			if i%2 == 0 {
				e := time.Now().Add(24 * time.Hour).UTC()
				expires = &e // exercises tokens_by_expiry too
			}
			code, body, err := do("POST", "/api/v1/tokens", tokenRequest(fmt.Sprintf("r%d c%d #%d", round, id, i), scopesRead, expires))
			var made tokenJSON
			if err != nil || code != http.StatusCreated || json.Unmarshal(body, &made) != nil || made.Token == "" {
				l.failed("POST /api/v1/tokens", code, body, err, 1)
				return creates
			}
			l.mu.Lock()
			l.acked[made.Token] = made.ID
			l.creates++
			l.mu.Unlock()
			mine = append(mine, made.Token)
			creates++
		}
	}
}

// verifyOverHTTP checks through a live server that every acknowledged
// token authenticates as itself and every revoked one is refused.
func (l *crashLedger) verifyOverHTTP(t *testing.T, base string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	type check struct {
		secret string
		id     uint64 // 0: must be refused
	}
	work := make(chan check)
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	for range 16 {
		wg.Go(func() {
			for c := range work {
				req, _ := http.NewRequest("GET", base+"/api/v1/token", nil)
				req.Header.Set("Authorization", "Bearer "+c.secret)
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("GET /api/v1/token after the restart: %v", err)
					continue
				}
				var got tokenJSON
				json.NewDecoder(resp.Body).Decode(&got)
				resp.Body.Close()
				switch {
				case c.id != 0 && (resp.StatusCode != 200 || got.ID != c.id):
					t.Errorf("token %d, answered 201 before the crash, after the restart = %d (id %d); want 200: an acknowledged token was lost", c.id, resp.StatusCode, got.ID)
				case c.id == 0 && resp.StatusCode != 401:
					t.Errorf("a token whose revocation was acknowledged before the crash, after the restart = %d; want 401", resp.StatusCode)
				}
			}
		})
	}
	for s, id := range l.acked {
		work <- check{s, id}
	}
	for s := range l.revoked {
		work <- check{s, 0}
	}
	close(work)
	wg.Wait()
}

// verifyOffline opens the database of a dead server and checks bbolt's
// structure, every index, and every acknowledged change.
func (l *crashLedger) verifyOffline(t *testing.T, db, when string) {
	t.Helper()
	st, err := openStore(db, time.Second)
	if err != nil {
		t.Fatalf("%s: the database does not open: %v", when, err)
	}
	defer st.Close()
	if st.db.NoSync {
		t.Errorf("the store runs with NoSync: commits would not survive a power cut")
	}
	if err := st.Check(); err != nil {
		t.Errorf("%s: store.Check = %v", when, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for s, id := range l.acked {
		if tok, _, err := st.TokenByHash(hashToken(s)); err != nil || tok.ID != id {
			t.Errorf("%s: token %d, answered 201, is not in the database (%v)", when, id, err)
		}
	}
	for s := range l.revoked {
		if _, _, err := st.TokenByHash(hashToken(s)); err == nil {
			t.Errorf("%s: a token whose revocation was acknowledged is back", when)
		}
	}
}

// TestCrashConsistency builds tokend and runs it as a separate process that
// 16 clients keep busy creating, revoking and rotating tokens, then kills it
// with SIGKILL at a random moment. After every kill the file must open,
// pass bbolt's check and the index check, and hold every change that was
// acknowledged; after every restart every acknowledged token must
// authenticate. TOKEND_CRASH_ROUNDS sets the number of kills (3 by default).
func TestCrashConsistency(t *testing.T) {
	rounds := 3
	if v := os.Getenv("TOKEND_CRASH_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("TOKEND_CRASH_ROUNDS=%q: want a positive number", v)
		}
		rounds = n
	}
	const creators = 16
	bin := buildTokend(t)
	db := filepath.Join(t.TempDir(), "tokend.db")
	serveArgs := []string{"-db", db, "-max-tokens-per-user", "0", "-last-used-interval", "20ms", "-purge-interval", "50ms"}

	// Users come first, from the command line, as an operator would add them.
	names := []string{"ann", "ben", "cat", "dan"}
	for _, name := range names {
		cmd := exec.Command(bin, "user", "add", "-db", db, "-password-stdin", name)
		cmd.Stdin = strings.NewReader("password-of-" + name + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("tokend user add %s: %v\n%s", name, err, out)
		}
	}

	l := &crashLedger{acked: map[string]uint64{}, revoked: map[string]bool{}}
	// Each creator signs in once with Basic to get the token it works with.
	srv := startChild(t, bin, serveArgs...)
	bootstrap := make([]string, creators)
	for i := range bootstrap {
		name := names[i%len(names)]
		req, _ := http.NewRequest("POST", "http://"+srv.addr+"/api/v1/tokens",
			strings.NewReader(tokenRequest(fmt.Sprint("creator ", i), scopesReadWrite, nil)))
		req.Header.Set("Authorization", basicAuth(name, "password-of-"+name))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var made tokenJSON
		if err := decodeJSONBody(resp, &made); err != nil || resp.StatusCode != 201 {
			t.Fatalf("bootstrap POST /api/v1/tokens as %s = %d, %v", name, resp.StatusCode, err)
		}
		bootstrap[i] = made.Token
		l.acked[made.Token] = made.ID
		l.creates++
	}
	http.DefaultClient.CloseIdleConnections()

	for round := 1; round <= rounds; round++ {
		if round > 1 {
			srv = startChild(t, bin, serveArgs...)
			l.verifyOverHTTP(t, "http://"+srv.addr)
			if t.Failed() {
				t.Fatalf("round %d: acknowledged work was lost in the crash before; server log:\n%s", round, srv.stderr)
			}
		}
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: creators}}
		var wg sync.WaitGroup
		made := make([]int, creators)
		for i := range creators {
			wg.Go(func() { made[i] = l.creator(client, "http://"+srv.addr, bootstrap[i], i, round) })
		}
		delay := 50*time.Millisecond + rand.N(600*time.Millisecond)
		time.Sleep(delay)
		srv.kill(t)
		wg.Wait()
		client.CloseIdleConnections()
		total := 0
		for _, n := range made {
			total += n
		}
		t.Logf("round %d: SIGKILL after %v, %d tokens acknowledged in the round", round, delay.Round(time.Millisecond), total)
		if len(l.unexpected) > 0 {
			t.Fatalf("round %d: a live server answered with failures:\n%s", round, strings.Join(l.unexpected, "\n"))
		}
		if total == 0 {
			t.Fatalf("round %d: no token was acknowledged before the kill; the round shows nothing\n%s", round, srv.stderr)
		}
		l.verifyOffline(t, db, fmt.Sprintf("after the kill of round %d", round))
		if t.Failed() {
			t.Fatalf("round %d failed; server log:\n%s", round, srv.stderr)
		}
	}

	// One last restart: everything acknowledged over all rounds works; then
	// a final kill, and the file is checked once more.
	srv = startChild(t, bin, serveArgs...)
	l.verifyOverHTTP(t, "http://"+srv.addr)
	srv.kill(t)
	l.verifyOffline(t, db, "after the final kill")
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("%d rounds: %d creations and %d revocations acknowledged, %d tokens live, %d in flight at a kill; 0 lost",
		rounds, l.creates, l.revokes, len(l.acked), l.uncertain)
	if bytes.Contains([]byte(srv.stderr.String()), []byte("level=ERROR")) {
		t.Errorf("the server logged errors:\n%s", srv.stderr)
	}
}
