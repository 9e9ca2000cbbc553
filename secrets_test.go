package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// exchange is one request of a session and what came back.
type exchange struct {
	what   string
	status int
	header http.Header
	body   string
	shows  string // the one new secret this answer may show, if any
}

// secretSession drives a real server through HTTP and keeps every answer.
type secretSession struct {
	t         *testing.T
	base      string
	client    *http.Client
	exchanges []exchange
}

// do sends a request with the given headers and body and records the
// answer. shows is true for the answers that create or rotate a token.
func (s *secretSession) do(method, path string, header map[string]string, body string, want int, shows bool) exchange {
	s.t.Helper()
	req, err := http.NewRequest(method, s.base+path, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	ex := exchange{what: method + " " + redactTokens(path), status: resp.StatusCode, header: resp.Header, body: string(b)}
	if resp.StatusCode != want {
		s.t.Fatalf("%s = %d %s; want %d", ex.what, resp.StatusCode, b, want)
	}
	if shows {
		var tok tokenJSON
		if err := json.Unmarshal(b, &tok); err != nil || tok.Token == "" {
			s.t.Fatalf("%s answered %s; want a new token", ex.what, b)
		}
		ex.shows = tok.Token
	}
	s.exchanges = append(s.exchanges, ex)
	return ex
}

func bearer(token string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + token}
}

func jsonBearer(token string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + token, "Content-Type": "application/json"}
}

func basicJSON(name, password string) map[string]string {
	return map[string]string{"Authorization": basicAuth(name, password), "Content-Type": "application/json"}
}

func tokenOf(ex exchange) (string, uint64) {
	var tok tokenJSON
	json.Unmarshal([]byte(ex.body), &tok)
	return tok.Token, tok.ID
}

// TestSecretsStaySecret runs a whole session against the real server with
// debug logging and every request in the request log (-access-log all):
// sign-ins by password, tokens created, used, rotated and revoked, failed
// sign-ins, tokens pasted where they do not belong, a leak report and a
// backup. Afterwards no log line, no response header and no
// answer other than the one that shows a new token may hold a token (or a
// good part of one), a password or a Basic credential. (There are no
// browser sessions yet, so there are no session ids to look for.)
func TestSecretsStaySecret(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) { testSecretsStaySecret(t, format) })
	}
}

func testSecretsStaySecret(t *testing.T, logFormat string) {
	dir := t.TempDir()
	db := filepath.Join(dir, "tokend.db")
	passwords := map[string]string{"alice": "correct horse alice", "bob": "battery staple bob"}
	for name, pw := range passwords {
		args := []string{"user", "add", "-db", db, "-password-stdin", name}
		if name == "alice" {
			args = append(args, "-admin")
		}
		if _, _, err := runCLI(t, pw+"\n", args...); err != nil {
			t.Fatalf("tokend user add %s: %v", name, err)
		}
	}
	wrongPasswords := []string{"wrong guess for alice", "mallory tries this"}

	logs := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "-addr", "127.0.0.1:0", "-db", db, "-log-level", "debug", "-log-format", logFormat,
			"-access-log", "all", "-last-used-interval", "50ms"}, strings.NewReader(""), io.Discard, logs)
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("tokend serve = %v", err)
			}
		}
	}
	defer stop()
	addrPattern := regexp.MustCompile(`http://(127\.0\.0\.1:\d+)`)
	waitFor(t, func() bool { return addrPattern.MatchString(logs.String()) })
	s := &secretSession{t: t, base: "http://" + addrPattern.FindStringSubmatch(logs.String())[1], client: &http.Client{Timeout: 30 * time.Second}}
	alicePW, bobPW := passwords["alice"], passwords["bob"]

	// Create by password, then use.
	a := s.do("POST", "/api/v1/tokens", basicJSON("alice", alicePW), tokenRequest("laptop", []string{scopeTokensRead, scopeTokensWrite, scopeAdmin}, nil), 201, true)
	tokA, idA := tokenOf(a)
	s.do("GET", "/api/v1/user", bearer(tokA), "", 200, false)
	s.do("GET", "/api/v1/token", bearer(tokA), "", 200, false)
	s.do("GET", "/api/v1/tokens", bearer(tokA), "", 200, false)
	s.do("GET", fmt.Sprintf("/api/v1/tokens/%d", idA), bearer(tokA), "", 200, false)
	b := s.do("POST", "/api/v1/tokens", jsonBearer(tokA), tokenRequest("ci", []string{scopeTokensRead}, timePtr(time.Now().Add(48*time.Hour))), 201, true)
	tokB, idB := tokenOf(b)
	s.do("GET", "/api/v1/user", bearer(tokB), "", 200, false)
	bob := s.do("POST", "/api/v1/tokens", basicJSON("bob", bobPW), tokenRequest("bob's", []string{scopeTokensRead}, nil), 201, true)
	tokBob, _ := tokenOf(bob)
	s.do("GET", "/api/v1/tokens", bearer(tokBob), "", 200, false)

	// Rotate another token and the token itself; revoke.
	b2 := s.do("POST", fmt.Sprintf("/api/v1/tokens/%d/rotate", idB), bearer(tokA), "", 201, true)
	tokB2, idB2 := tokenOf(b2)
	a2 := s.do("POST", "/api/v1/token/rotate", bearer(tokA), "", 201, true)
	tokA2, _ := tokenOf(a2)
	s.do("DELETE", fmt.Sprintf("/api/v1/tokens/%d", idB2), bearer(tokA2), "", 204, false)
	for _, dead := range []string{tokA, tokB, tokB2} {
		s.do("GET", "/api/v1/user", bearer(dead), "", 401, false)
	}

	// Failed sign-ins, and secrets where they do not belong.
	body := tokenRequest("x", nil, nil)
	s.do("POST", "/api/v1/tokens", basicJSON("alice", wrongPasswords[0]), body, 401, false)
	s.do("POST", "/api/v1/tokens", basicJSON("mallory", wrongPasswords[1]), body, 401, false)
	s.do("POST", "/api/v1/tokens", basicJSON("alice", bobPW), body, 401, false)
	s.do("POST", "/api/v1/tokens", basicJSON(alicePW, alicePW), body, 401, false) // the password in the name field
	s.do("POST", "/api/v1/tokens", basicJSON(tokA2, ""), body, 401, false)        // curl -u $TOKEN:
	s.do("POST", "/api/v1/tokens", basicJSON(tokA2, "x-oauth-basic"), body, 401, false)
	typo := tokA2[:len(tokA2)-1] + string(base62Alphabet[(strings.IndexByte(base62Alphabet, tokA2[len(tokA2)-1])+1)%62])
	s.do("GET", "/api/v1/user", bearer(typo), "", 401, false)
	s.do("GET", "/api/v1/user?access_token="+tokA2, nil, "", 400, false)
	s.do("GET", "/api/v1/tokens/"+tokA2, bearer(tokA2), "", 404, false)
	s.do("GET", "/"+tokA2, nil, "", 404, false)
	s.do("GET", "/api/v1/user", map[string]string{"Authorization": "Token " + tokA2}, "", 400, false)

	// A backup holds hashes only.
	s.do("GET", "/api/v1/admin/backup", bearer(tokA2), "", 200, false)

	// Leak reports kill the rest.
	s.do("POST", "/api/v1/revoke", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, "token="+tokA2, 200, false)
	s.do("POST", "/api/v1/revoke", map[string]string{"Content-Type": "application/json"}, `{"token":"`+tokBob+`"}`, 200, false)
	s.do("GET", "/api/v1/user", bearer(tokA2), "", 401, false)
	s.do("GET", "/api/v1/user", bearer(tokBob), "", 401, false)
	time.Sleep(100 * time.Millisecond) // a last-used flush or two
	stop()

	// What must appear nowhere: every token and typo, good parts of them,
	// every password, every Basic credential.
	tokens := []string{tokA, tokB, tokBob, tokB2, tokA2, typo}
	var needles []string
	for _, tok := range tokens {
		for i := len(defaultTokenPrefix); i+12 <= len(tok); i++ {
			needles = append(needles, tok[i:i+12])
		}
	}
	pws := append([]string{alicePW, bobPW}, wrongPasswords...)
	needles = append(needles, pws...)
	for _, name := range []string{"alice", "bob", "mallory", alicePW, tokA2} {
		for _, pw := range append(pws, "", "x-oauth-basic") {
			needles = append(needles, base64.StdEncoding.EncodeToString([]byte(name+":"+pw)))
		}
	}
	tokenRE := regexp.MustCompile(mustFormat(t, defaultTokenPrefix).pattern())
	find := func(where, text, allowed string) {
		t.Helper()
		for _, m := range tokenRE.FindAllString(text, -1) {
			if m != allowed {
				t.Errorf("%s holds a token (…%s)", where, m[len(m)-4:])
			}
		}
		rest := strings.ReplaceAll(text, allowed, "")
		if allowed == "" {
			rest = text
		}
		for _, n := range needles {
			if strings.Contains(rest, n) {
				t.Errorf("%s holds a secret or part of one: %q", where, n)
				return
			}
		}
	}

	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	requestLines := 0
	for i, line := range lines {
		find(fmt.Sprintf("log line %d", i+1), line, "")
		if strings.Contains(line, "msg=request ") || strings.Contains(line, `"msg":"request"`) {
			requestLines++
		}
	}
	if requestLines < len(s.exchanges) {
		t.Errorf("the log holds %d request lines for %d requests; -access-log all logs each", requestLines, len(s.exchanges))
	}
	shown := 0
	for _, ex := range s.exchanges {
		for name, values := range ex.header {
			for _, v := range values {
				find(ex.what+" header "+name, name+": "+v, "")
			}
		}
		find(ex.what+" body", ex.body, ex.shows)
		if ex.shows != "" {
			shown++
			if !strings.Contains(ex.body, ex.shows) || ex.header.Get("Cache-Control") != "no-store" {
				t.Errorf("%s: the new token is not shown once with Cache-Control: no-store", ex.what)
			}
		}
	}
	dbFile, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	find("the database file", string(dbFile), "")

	// The checks must have had something to look at.
	if len(lines) < len(s.exchanges) || !strings.Contains(logs.String(), "sign-in failed") || !strings.Contains(logs.String(), "token rotated") {
		t.Errorf("the debug log has %d lines for %d requests; want a request line each and the events:\n%s", len(lines), len(s.exchanges), logs)
	}
	if !bytes.Contains(dbFile, []byte("argon2id")) {
		t.Errorf("the database holds no password hash: the search of it shows nothing")
	}
	t.Logf("%s logs: %d lines, %d answers (%d showing a new token), %d things searched for: none found", logFormat, len(lines), len(s.exchanges), shown, len(needles)+1)
}

func TestRedactTokens(t *testing.T) {
	tok := "tkd_0lGJcgkNcs89K2HwMqyWWkMNaqi0Dj5rQ82IrzzBI6G03v03w"
	tests := []struct{ in, want string }{
		{"/api/v1/tokens/12", "/api/v1/tokens/12"},
		{"/" + tok, "/tkd_[redacted]"},
		{"/api/v1/tokens/" + tok[:40] + "/rotate", "/api/v1/tokens/tkd_[redacted]/rotate"},
		{"acme_" + tok[4:], "acme_[redacted]"},
		{tok + " and " + tok, "tkd_[redacted] and tkd_[redacted]"},
		{"my_var", "my_var"},
		{"tkd_short", "tkd_short"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := redactTokens(tt.in); got != tt.want {
			t.Errorf("redactTokens(%q) = %q; want %q", tt.in, got, tt.want)
		}
	}
}
