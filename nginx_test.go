package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// These tests run the README's proxy configurations, as printed there, with
// a real proxy in front of a test app and a real tokend: what the README
// tells an operator to copy is what is tested.

// findProxy returns the path of a proxy's binary, looked up in PATH and then
// at fallback. Without it the test is skipped, unless the CI variable is set:
// CI installs the proxies (see .ci/run), so there a missing one is a failure.
func findProxy(t *testing.T, name, fallback string) string {
	t.Helper()
	if path, err := exec.LookPath(name); err == nil {
		return path
	}
	if info, err := os.Stat(fallback); err == nil && !info.IsDir() && info.Mode()&0o111 != 0 {
		return fallback
	}
	if _, ci := os.LookupEnv("CI"); ci {
		t.Fatalf("%s is not installed, and CI is set: install it (.ci/run does)", name)
	}
	t.Skipf("%s is not installed; set CI to make its absence a failure", name)
	return ""
}

// readmeBlock returns the first code block of language lang under the
// README heading "### heading".
func readmeBlock(t *testing.T, heading, lang string) string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n### "+heading+"\n")
	if !ok {
		t.Fatalf("README.md has no heading ### %s", heading)
	}
	_, block, ok := strings.Cut(section, "\n```"+lang+"\n")
	if !ok {
		t.Fatalf("README.md has no ```%s block under ### %s", lang, heading)
	}
	block, _, ok = strings.Cut(block, "\n```\n")
	if !ok {
		t.Fatalf("README.md: the ```%s block under ### %s does not end", lang, heading)
	}
	return block + "\n"
}

// replaceAll replaces every old with new in s, in the order given as pairs,
// failing the test when an old is missing: the README changed under the test.
func replaceAll(t *testing.T, s string, pairs ...string) string {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("the README's configuration no longer holds %q:\n%s", pairs[i], s)
		}
		s = strings.ReplaceAll(s, pairs[i], pairs[i+1])
	}
	return s
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startProcess starts cmd in a process group of its own, with its output
// in logPath, and waits until addr accepts connections. When the test ends
// it stops the group with SIGTERM, and SIGKILL if that takes over ten
// seconds. It returns an error, with the output, if the process exits
// first or does not listen within ten seconds; the process is gone then.
func startProcess(t *testing.T, cmd *exec.Cmd, addr, logPath string) error {
	t.Helper()
	out, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	pid := cmd.Process.Pid
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	stop := func() {
		syscall.Kill(-pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s did not stop within 10s of SIGTERM; killing it", cmd.Path)
			syscall.Kill(-pid, syscall.SIGKILL)
			<-done
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		select {
		case <-done:
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("%s exited before listening on %s: %v\n%s", cmd.Path, addr, waitErr, log)
		default:
		}
		if conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			conn.Close()
			t.Cleanup(stop)
			return nil
		}
		if time.Now().After(deadline) {
			stop()
			log, _ := os.ReadFile(logPath)
			return fmt.Errorf("%s does not listen on %s after 10s:\n%s", cmd.Path, addr, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startProxy picks a loopback port, has start run the proxy on it, and
// retries with another port if the proxy could not start (another process
// may have taken the port in between). It returns the proxy's address.
func startProxy(t *testing.T, start func(addr string) error) string {
	t.Helper()
	var err error
	for range 3 {
		addr := freeAddr(t)
		if err = start(addr); err == nil {
			return addr
		}
	}
	t.Fatal(err)
	return ""
}

// seenRequest is what the app behind a proxy received.
type seenRequest struct {
	method, path, body string
	header             http.Header
}

// testApp is the app behind a proxy: it records every request, keyed by
// its X-Test-Case header, and answers 200.
type testApp struct {
	*httptest.Server
	mu   sync.Mutex
	seen map[string][]seenRequest
}

func newTestApp(t *testing.T) *testApp {
	app := &testApp{seen: map[string][]seenRequest{}}
	app.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		app.mu.Lock()
		app.seen[r.Header.Get("X-Test-Case")] = append(app.seen[r.Header.Get("X-Test-Case")], seenRequest{r.Method, r.URL.Path, string(body), r.Header.Clone()})
		app.mu.Unlock()
		w.Write([]byte("the app answers\n"))
	}))
	t.Cleanup(app.Close)
	return app
}

// requests returns what the app saw of test case name.
func (app *testApp) requests(name string) []seenRequest {
	app.mu.Lock()
	defer app.mu.Unlock()
	return app.seen[name]
}

// proxyFixture is tokend and an app, ready for a proxy to stand before them.
type proxyFixture struct {
	ts     *testServer
	tokend *httptest.Server
	app    *testApp
	alice  userRecord
	// Tokens of alice, each with its record.
	plain, digger, expired                   tokenRecord
	plainSecret, diggerSecret, expiredSecret string
}

// newProxyFixture starts tokend, with the README's example scopes, and the
// app, both on loopback ports.
func newProxyFixture(t *testing.T) *proxyFixture {
	f := &proxyFixture{ts: newTestServer(t), app: newTestApp(t)}
	f.ts.declareScopes("treasure:create=Bury new treasure", "user:edit=Change user profiles")
	f.alice = f.ts.addUser("alice", false)
	f.plain, f.plainSecret = f.ts.addToken(f.alice, "no scopes", nil, 0)
	f.digger, f.diggerSecret = f.ts.addToken(f.alice, "digger", []string{"treasure:create"}, 0)
	f.expired, f.expiredSecret = f.ts.addToken(f.alice, "short", []string{"treasure:create", "user:edit"}, time.Hour)
	f.ts.clock.Add(2 * time.Hour)
	f.tokend = httptest.NewServer(f.ts.handler)
	t.Cleanup(f.tokend.Close)
	return f
}

// proxyCase is a request a client sends through the proxy and what must
// come of it.
type proxyCase struct {
	name       string
	method     string
	path       string
	body       string
	auth       string            // the Authorization header; "" for none
	forged     map[string]string // headers the client adds to pass for someone
	wantStatus int
	wantCode   string      // error of the Bearer challenge of a 401 or 403
	wantToken  tokenRecord // whom the app is told of, when it is reached
	wantScopes string
}

// forgery is what a client sends to pass for an admin.
var forgery = map[string]string{
	"X-Auth-User": "root", "X-Auth-User-Id": "999", "X-Auth-Scopes": "treasure:create user:edit admin", "X-Auth-Token-Id": "999",
}

// checkThroughProxy sends every case through the proxy at proxyAddr and
// checks what the client gets, what the app sees and what tokend logs.
func checkThroughProxy(t *testing.T, f *proxyFixture, proxyAddr string) {
	bearer := func(secret string) string { return "Bearer " + secret }
	cases := []proxyCase{
		{name: "no token", method: "GET", path: "/hello", wantStatus: 401},
		{name: "no token, forged identity", method: "GET", path: "/api/treasure/gold", forged: forgery, wantStatus: 401},
		{name: "Basic credentials", method: "GET", path: "/hello", auth: basicAuth("alice", "x"), wantStatus: 401, wantCode: "invalid_request"},
		{name: "unknown token", method: "GET", path: "/hello", auth: bearer(flipChar(f.plainSecret, 9)), wantStatus: 401, wantCode: "invalid_token"},
		{name: "expired token", method: "GET", path: "/api/treasure/gold", auth: bearer(f.expiredSecret), wantStatus: 401, wantCode: "invalid_token"},
		{name: "token without the route's scope", method: "GET", path: "/api/treasure/gold", auth: bearer(f.plainSecret), wantStatus: 403, wantCode: "insufficient_scope"},
		{name: "token without the route's scope, forged scopes", method: "GET", path: "/api/treasure/gold", auth: bearer(f.plainSecret), forged: forgery, wantStatus: 403, wantCode: "insufficient_scope"},
		{name: "token without the route's scope, scopes in the query", method: "GET", path: "/api/treasure/gold?scopes=&scope=", auth: bearer(f.plainSecret), wantStatus: 403, wantCode: "insufficient_scope"},
		{name: "token with another scope", method: "GET", path: "/api/users/bob", auth: bearer(f.diggerSecret), wantStatus: 403, wantCode: "insufficient_scope"},
		{name: "good token", method: "GET", path: "/hello", auth: bearer(f.plainSecret), wantStatus: 200, wantToken: f.plain},
		{name: "good token, forged identity", method: "GET", path: "/hello", auth: bearer(f.plainSecret), forged: forgery, wantStatus: 200, wantToken: f.plain},
		{name: "token with the route's scope", method: "GET", path: "/api/treasure/gold", auth: bearer(f.diggerSecret), wantStatus: 200, wantToken: f.digger, wantScopes: "treasure:create"},
		{name: "token with the route's scope, forged identity", method: "GET", path: "/api/treasure/gold", auth: bearer(f.diggerSecret), forged: forgery, wantStatus: 200, wantToken: f.digger, wantScopes: "treasure:create"},
		{name: "token with the route's scope, POST with a body", method: "POST", path: "/api/treasure/gold", body: "depth=3", auth: bearer(f.diggerSecret), wantStatus: 200, wantToken: f.digger, wantScopes: "treasure:create"},
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			what := fmt.Sprintf("%s %s through the proxy with %s", c.method, c.path, c.name)
			req, err := http.NewRequest(c.method, "http://"+proxyAddr+c.path, strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Test-Case", c.name)
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			for k, v := range c.forged {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != c.wantStatus {
				t.Fatalf("%s = %d; want %d; body: %s", what, resp.StatusCode, c.wantStatus, body)
			}
			seen := f.app.requests(c.name)
			if c.wantStatus != http.StatusOK {
				if len(seen) != 0 {
					t.Errorf("%s = %d, yet the app saw the request: %+v", what, resp.StatusCode, seen)
				}
				if resp.StatusCode == http.StatusUnauthorized {
					checkProxiedChallenge(t, what, resp.Header, c.wantCode)
				}
				return
			}
			if len(seen) != 1 {
				t.Fatalf("%s: the app saw %d requests; want 1", what, len(seen))
			}
			got := seen[0]
			if got.method != c.method || got.body != c.body || !strings.HasPrefix(c.path, got.path) {
				t.Errorf("%s: the app saw %s %s with body %q; want %s %s with body %q", what, got.method, got.path, got.body, c.method, c.path, c.body)
			}
			want := map[string]string{
				headerAuthUser:    f.alice.Name,
				headerAuthUserID:  strconv.FormatUint(f.alice.ID, 10),
				headerAuthScopes:  c.wantScopes,
				headerAuthTokenID: strconv.FormatUint(c.wantToken.ID, 10),
			}
			for _, h := range authHeaders {
				// An empty header may arrive empty or not at all; a forged
				// one must never arrive.
				if v := got.header.Values(h); strings.Join(v, ",") != want[h] {
					t.Errorf("%s: the app saw %s = %q; want %q", what, h, v, want[h])
				}
			}
		})
	}

	logs := f.ts.logs.String()
	for _, secret := range []string{f.plainSecret, f.diggerSecret, f.expiredSecret} {
		if strings.Contains(logs, secret) {
			t.Errorf("tokend's log holds a token:\n%s", logs)
		}
	}
	if want := `msg="forward auth allowed" forwarded_method=POST forwarded_path=/api/treasure/gold`; !strings.Contains(logs, want) {
		t.Errorf("tokend's log lacks %s:\n%s", want, logs)
	}
}

// checkProxiedChallenge asserts that the proxy passed tokend's Bearer
// challenge on to the client.
func checkProxiedChallenge(t *testing.T, what string, h http.Header, code string) {
	t.Helper()
	values := h.Values("WWW-Authenticate")
	if len(values) != 1 {
		t.Errorf("%s: WWW-Authenticate = %q; want tokend's one Bearer challenge", what, values)
		return
	}
	scheme, params, err := parseChallenge(values[0])
	if err != nil || scheme != "Bearer" || params["realm"] != "tokend" || params["error"] != code {
		t.Errorf("%s: WWW-Authenticate = %q (%v); want Bearer realm=\"tokend\" with error %q", what, values[0], err, code)
	}
}

// TestNginxForwardAuth runs the README's nginx configuration in front of
// the app, with tokend answering its auth_request.
func TestNginxForwardAuth(t *testing.T) {
	nginx := findProxy(t, "nginx", "/usr/sbin/nginx")
	f := newProxyFixture(t)
	server := readmeBlock(t, "nginx", "nginx")
	addr := startProxy(t, func(addr string) error {
		dir := t.TempDir()
		conf := nginxConfig(dir, replaceAll(t, server,
			"listen 127.0.0.1:8000;", "listen "+addr+";",
			"127.0.0.1:8080", f.tokend.Listener.Addr().String(),
			"127.0.0.1:3000", f.app.Listener.Addr().String(),
		))
		confPath := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		errorLog := filepath.Join(dir, "error.log")
		cmd := exec.Command(nginx, "-p", dir+"/", "-c", confPath, "-e", errorLog)
		err := startProcess(t, cmd, addr, filepath.Join(dir, "stderr.log"))
		if err != nil {
			log, _ := os.ReadFile(errorLog)
			err = fmt.Errorf("%w\nerror.log:\n%s", err, log)
		}
		return err
	})
	checkThroughProxy(t, f, addr)
	runReadmeProxyExamples(t, f, addr)
	if t.Failed() {
		t.Logf("tokend's log:\n%s", f.ts.logs)
	}
}

// nginxConfig returns a whole nginx configuration that keeps every file in
// dir, runs in the foreground and serves server, a server block.
func nginxConfig(dir, server string) string {
	user := ""
	if os.Geteuid() == 0 {
		// Workers would run as nobody, who cannot enter the test's
		// private temporary folder.
		user = "user root;\n"
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	return fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
pid %s;
error_log %s notice;
%s
events {
    worker_connections 64;
}

http {
    access_log %s;
    client_body_temp_path %s;
    proxy_temp_path %s;
    fastcgi_temp_path %s;
    uwsgi_temp_path %s;
    scgi_temp_path %s;

%s}
`, p("nginx.pid"), p("error.log"), user, p("access.log"),
		p("client_body"), p("proxy"), p("fastcgi"), p("uwsgi"), p("scgi"), server)
}
