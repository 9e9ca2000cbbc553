package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// runCLI calls run with args, stdin and fresh output buffers.
func runCLI(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestCLIUserAndTokenLifecycle(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokend.db")
	out, _, err := runCLI(t, "correct horse battery\n", "user", "add", "-db", db, "-password-stdin", "-admin", "alice")
	if err != nil || !strings.Contains(out, `added admin "alice"`) {
		t.Fatalf("user add alice = %q, %v; want it added", out, err)
	}
	// Flags after the name work too.
	if _, _, err := runCLI(t, "another good one\n", "user", "add", "bob", "-db", db, "-password-stdin"); err != nil {
		t.Fatalf("user add bob -db … = %v", err)
	}
	if _, _, err := runCLI(t, "whatever else\n", "user", "add", "-db", db, "-password-stdin", "ALICE"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("user add ALICE beside alice = %v; want already exists", err)
	}

	out, _, err = runCLI(t, "", "user", "list", "-db", db)
	if err != nil || !strings.Contains(out, "alice") || !strings.Contains(out, "bob") {
		t.Fatalf("user list = %q, %v; want alice and bob", out, err)
	}

	out, stderr, err := runCLI(t, "", "token", "create", "-db", db, "-user", "alice", "-name", "deploy", "-scopes", "tokens:read, tokens:write", "-expires", "7d")
	if err != nil {
		t.Fatalf("token create = %v (stderr %q)", err, stderr)
	}
	secret := strings.TrimSpace(out)
	h, err := mustFormat(t, defaultTokenPrefix).parse(secret)
	if err != nil {
		t.Fatalf("token create printed %q, which does not parse: %v", out, err)
	}
	if strings.Contains(stderr, secret) {
		t.Errorf("token create also printed the secret to stderr")
	}

	st, err := openStore(db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tok, owner, err := st.TokenByHash(h)
	st.Close()
	if err != nil || owner.Name != "alice" || tok.Name != "deploy" || strings.Join(tok.Scopes, " ") != "tokens:read tokens:write" {
		t.Fatalf("stored token = %+v of %q, %v; want alice's deploy with two scopes", tok, owner.Name, err)
	}
	if d := time.Until(*tok.ExpiresAt); d < 6*24*time.Hour || d > 7*24*time.Hour {
		t.Errorf("token expires in %v; want 7 days", d)
	}

	out, _, err = runCLI(t, "", "token", "list", "-db", db, "-user", "alice")
	if err != nil || !strings.Contains(out, "deploy") || !strings.Contains(out, tok.Hint) || strings.Contains(out, secret) {
		t.Errorf("token list = %q, %v; want deploy with its hint and never the secret", out, err)
	}

	if _, _, err := runCLI(t, "", "token", "revoke", "-db", db, fmt.Sprint(tok.ID)); err != nil {
		t.Fatalf("token revoke = %v", err)
	}
	if _, _, err := runCLI(t, "", "token", "revoke", "-db", db, fmt.Sprint(tok.ID)); err == nil || !strings.Contains(err.Error(), "no token") {
		t.Errorf("token revoke twice = %v; want no token", err)
	}

	runCLI(t, "", "token", "create", "-db", db, "-user", "bob", "-name", "x", "-expires", "never")
	if _, _, err := runCLI(t, "", "user", "remove", "-db", db, "bob"); err != nil {
		t.Fatalf("user remove bob = %v", err)
	}
	if _, _, err := runCLI(t, "", "user", "remove", "-db", db, "alice"); err == nil || !strings.Contains(err.Error(), "last admin") {
		t.Errorf("user remove of the last admin = %v; want refused", err)
	}
	st, err = openStore(db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if all, _ := st.AllTokens(); len(all) != 0 {
		t.Errorf("tokens left after revoking alice's and removing bob: %d", len(all))
	}
	if err := st.Check(); err != nil {
		t.Errorf("Check after the CLI run: %v", err)
	}
}

func TestCLIPasswd(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokend.db")
	runCLI(t, "first password\n", "user", "add", "-db", db, "-password-stdin", "alice")
	runCLI(t, "", "token", "create", "-db", db, "-user", "alice", "-name", "x")
	if _, _, err := runCLI(t, "second password\n", "user", "passwd", "-db", db, "-password-stdin", "-revoke-tokens", "alice"); err != nil {
		t.Fatalf("user passwd = %v", err)
	}
	st, _ := openStore(db, time.Second)
	defer st.Close()
	u, _ := st.UserByName("alice")
	ok, _, err := newPasswordHasher(defaultArgonParams, 1).Verify(context.Background(), "second password", u.PasswordHash)
	if !ok || err != nil {
		t.Errorf("the new password does not verify: %v, %v", ok, err)
	}
	if toks, _ := st.TokensByOwner(u.ID); len(toks) != 0 {
		t.Errorf("passwd -revoke-tokens left %d tokens", len(toks))
	}
}

func TestCLIRejectsBadInput(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokend.db")
	runCLI(t, "good password here\n", "user", "add", "-db", db, "-password-stdin", "alice")
	tests := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"weak password", "password\n", []string{"user", "add", "-db", db, "-password-stdin", "bob"}, "common"},
		{"short password", "abc\n", []string{"user", "add", "-db", db, "-password-stdin", "bob"}, "at least 8"},
		{"no terminal", "", []string{"user", "add", "-db", db, "bob"}, "-password-stdin"},
		{"bad name", "good password here\n", []string{"user", "add", "-db", db, "-password-stdin", "bob smith"}, "user name"},
		{"two names", "good password here\n", []string{"user", "add", "-db", db, "-password-stdin", "bob", "carol"}, "want 1 argument"},
		{"unknown user", "", []string{"token", "create", "-db", db, "-user", "nobody", "-name", "x"}, "no user called"},
		{"missing name", "", []string{"token", "create", "-db", db, "-user", "alice"}, "-name are required"},
		{"unknown scope", "", []string{"token", "create", "-db", db, "-user", "alice", "-name", "x", "-scopes", "root"}, "unknown scope"},
		{"admin scope for a non-admin", "", []string{"token", "create", "-db", db, "-user", "alice", "-name", "x", "-scopes", "admin"}, "only admins"},
		{"bad expiry", "", []string{"token", "create", "-db", db, "-user", "alice", "-name", "x", "-expires", "soon"}, "-expires"},
		{"past expiry", "", []string{"token", "create", "-db", db, "-user", "alice", "-name", "x", "-expires", "2001-01-01T00:00:00Z"}, "not in the future"},
		{"bad id", "", []string{"token", "revoke", "-db", db, "abc"}, "not a token id"},
		{"unknown command", "", []string{"frobnicate"}, "unknown command"},
		{"unknown subcommand", "", []string{"user", "frobnicate"}, "unknown subcommand"},
		{"unknown flag", "", []string{"user", "list", "-nope"}, "not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := snapshotFile(t, db)
			_, _, err := runCLI(t, tt.stdin, tt.args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("tokend %s = %v; want an error mentioning %q", strings.Join(tt.args, " "), err, tt.want)
			}
			assertUnchanged(t, strings.Join(tt.args, " "), before, snapshotFile(t, db))
		})
	}
}

// snapshotFile dumps the database at path, opening and closing it.
func snapshotFile(t *testing.T, path string) map[string]string {
	t.Helper()
	st, err := openStore(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	return dumpStore(t, st)
}

func TestCLIDatabaseInUse(t *testing.T) {
	_, db := newTestDB(t) // holds the file's lock, as a running server would
	start := time.Now()
	_, _, err := runCLI(t, "", "user", "list", "-db", db)
	if err == nil || !strings.Contains(err.Error(), "in use by another process") {
		t.Fatalf("user list on a held database = %v; want it to say the database is in use", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("user list took %v to give up; want about a second", took)
	}
}

func TestCLIEnvironmentFallback(t *testing.T) {
	db := filepath.Join(t.TempDir(), "from-env.db")
	t.Setenv("TOKEND_DB", db)
	if _, _, err := runCLI(t, "good password here\n", "user", "add", "-password-stdin", "alice"); err != nil {
		t.Fatal(err)
	}
	out, _, err := runCLI(t, "", "user", "list")
	if err != nil || !strings.Contains(out, "alice") {
		t.Errorf("user list with TOKEND_DB = %q, %v; want alice", out, err)
	}
	// A flag beats the environment.
	other := filepath.Join(t.TempDir(), "flag.db")
	out, _, err = runCLI(t, "", "user", "list", "-db", other)
	if err != nil || strings.Contains(out, "alice") {
		t.Errorf("user list -db other = %q, %v; want no alice", out, err)
	}
	t.Setenv("TOKEND_MAX_TOKENS_PER_USER", "many")
	_, _, err = runCLI(t, "", "serve")
	if err == nil || !strings.Contains(err.Error(), "TOKEND_MAX_TOKENS_PER_USER") {
		t.Errorf("serve with TOKEND_MAX_TOKENS_PER_USER=many = %v; want it named", err)
	}
}

func TestCLIHelpAndVersion(t *testing.T) {
	out, _, err := runCLI(t, "", "version")
	if err != nil || !strings.HasPrefix(out, "tokend ") {
		t.Errorf("version = %q, %v", out, err)
	}
	out, _, err = runCLI(t, "", "help")
	if err != nil || !strings.Contains(out, "token create") {
		t.Errorf("help = %q, %v", out, err)
	}
	for _, args := range [][]string{{"serve", "-h"}, {"user", "add", "-h"}, {"token", "create", "-h"}, {"user", "-h"}} {
		_, stderr, err := runCLI(t, "", args...)
		if err != nil || !strings.Contains(stderr, "Usage: tokend") {
			t.Errorf("tokend %s = %v, stderr %q; want usage and no error", strings.Join(args, " "), err, stderr)
		}
	}
}

func TestServeBadConfig(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-token-prefix", "BAD"}, "-token-prefix"},
		{[]string{"-max-tokens-per-user", "-1"}, "-max-tokens-per-user"},
		{[]string{"-log-level", "loud"}, "-log-level"},
		{[]string{"-log-format", "xml"}, "-log-format"},
		{[]string{"stray"}, "unexpected argument"},
	}
	for _, tt := range tests {
		args := append([]string{"serve", "-db", filepath.Join(t.TempDir(), "x.db")}, tt.args...)
		if _, _, err := runCLI(t, "", args...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("tokend %s = %v; want an error naming %s", strings.Join(args, " "), err, tt.want)
		}
	}
}

func TestServeStartsAndStops(t *testing.T) {
	cfg := testServeConfig(t)
	addr, logs, stop := startServe(t, cfg)
	log := slog.New(slog.NewTextHandler(logs, nil))
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "ok\n" {
		t.Errorf("GET /healthz = %d %q; want 200 ok", resp.StatusCode, body)
	}
	if !strings.Contains(logs.String(), "tokend user add -admin") {
		t.Errorf("start-up log does not tell how to add the first user:\n%s", logs.String())
	}

	// A second server on the same file fails at once, saying why.
	if err := serve(context.Background(), cfg, log, nil); !errors.Is(err, errDatabaseInUse) {
		t.Errorf("a second serve on the same file = %v; want errDatabaseInUse", err)
	}
	// A taken port is an error, not a hang.
	other := cfg
	other.DB = filepath.Join(t.TempDir(), "other.db")
	other.Addr = addr
	if err := serve(context.Background(), other, log, nil); err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("serve on a taken port = %v; want address already in use", err)
	}

	stop() // fails the test unless serve returns nil in time
	if !strings.Contains(logs.String(), "database closed") {
		t.Errorf("shutdown did not close the database:\n%s", logs.String())
	}
}

func TestParseExpiry(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time // zero: never
		err  bool
	}{
		{in: "never"},
		{in: "30d", want: now.AddDate(0, 0, 30)},
		{in: "720h", want: now.Add(720 * time.Hour)},
		{in: "90m", want: now.Add(90 * time.Minute)},
		{in: "2031-02-03T04:05:06Z", want: time.Date(2031, 2, 3, 4, 5, 6, 0, time.UTC)},
		{in: "2031-02-03t04:05:06z", want: time.Date(2031, 2, 3, 4, 5, 6, 0, time.UTC)},
		{in: "2031-02-03t05:05:06.5+01:00", want: time.Date(2031, 2, 3, 4, 5, 6, 5e8, time.UTC)},
		{in: "2031-02-03x04:05:06Z", err: true},
		{in: "0d", err: true},
		{in: "-5d", err: true},
		{in: "-1h", err: true},
		{in: "99999d", err: true},
		{in: "tomorrow", err: true},
		{in: "", err: true},
	}
	for _, tt := range tests {
		got, err := parseExpiry(tt.in, now)
		switch {
		case tt.err:
			if err == nil {
				t.Errorf("parseExpiry(%q) = %v; want an error", tt.in, got)
			}
		case err != nil:
			t.Errorf("parseExpiry(%q) = %v", tt.in, err)
		case tt.want.IsZero() && got != nil:
			t.Errorf("parseExpiry(%q) = %v; want never", tt.in, got)
		case !tt.want.IsZero() && (got == nil || !got.Equal(tt.want)):
			t.Errorf("parseExpiry(%q) = %v; want %v", tt.in, got, tt.want)
		}
	}
}
