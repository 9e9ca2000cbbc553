package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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
	if _, _, err := runCLI(t, "good password here\n", "user", "add", "-password-stdin", "-db", other, "bob"); err != nil {
		t.Fatal(err)
	}
	out, _, err = runCLI(t, "", "user", "list", "-db", other)
	if err != nil || strings.Contains(out, "alice") || !strings.Contains(out, "bob") {
		t.Errorf("user list -db other = %q, %v; want bob and no alice", out, err)
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

// TestCLIRefusesMissingDatabase checks that only serve and user add create
// a database: every other command refuses a missing file, says where it
// looked and how to point it elsewhere, and leaves nothing behind.
func TestCLIRefusesMissingDatabase(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "typo.db")
	tests := []struct {
		stdin string
		args  []string
	}{
		{"", []string{"user", "list"}},
		{"new password here\n", []string{"user", "passwd", "-password-stdin", "alice"}},
		{"", []string{"user", "remove", "alice"}},
		{"", []string{"token", "create", "-user", "alice", "-name", "x"}},
		{"", []string{"token", "list"}},
		{"", []string{"token", "list", "-user", "alice"}},
		{"", []string{"token", "revoke", "1"}},
		{"", []string{"purge"}},
		{"", []string{"backup", filepath.Join(dir, "copy.db")}},
	}
	want := "no database at " + missing + " (set -db or TOKEND_DB)"
	for _, tt := range tests {
		for _, viaEnv := range []bool{false, true} {
			args := append(tt.args[:len(tt.args):len(tt.args)], "-db", missing)
			if viaEnv {
				t.Setenv("TOKEND_DB", missing)
				args = tt.args
			}
			_, _, err := runCLI(t, tt.stdin, args...)
			if err == nil || !strings.HasSuffix(err.Error(), want) {
				t.Errorf("tokend %s (TOKEND_DB set: %v) = %v; want an error ending %q", strings.Join(args, " "), viaEnv, err, want)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Fatalf("tokend %s left %v behind", strings.Join(args, " "), entries)
			}
		}
		os.Unsetenv("TOKEND_DB")
	}
	if _, _, err := runCLI(t, "", "compact", missing, filepath.Join(dir, "c.db")); err == nil || !strings.Contains(err.Error(), "no database at "+missing) {
		t.Errorf("compact of a missing SRC = %v; want no database at %s", err, missing)
	}

	// user add creates it; then the others find it.
	if _, _, err := runCLI(t, "good password here\n", "user", "add", "-db", missing, "-password-stdin", "alice"); err != nil {
		t.Fatalf("user add on a new file = %v", err)
	}
	if out, _, err := runCLI(t, "", "user", "list", "-db", missing); err != nil || !strings.Contains(out, "alice") {
		t.Errorf("user list after user add = %q, %v; want alice", out, err)
	}
}

// TestCreateInMissingDirectory checks that serve and user add, which may
// create a database, say which folder is missing and what to do.
func TestCreateInMissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "no", "such")
	db := filepath.Join(dir, "tokend.db")
	want := "directory " + dir + " does not exist: create it or choose another -db"
	for _, tt := range []struct {
		stdin string
		args  []string
	}{
		{"good password here\n", []string{"user", "add", "-db", db, "-password-stdin", "alice"}},
		{"", []string{"serve", "-addr", "127.0.0.1:0", "-db", db}},
	} {
		_, _, err := runCLI(t, tt.stdin, tt.args...)
		if err == nil || err.Error() != want {
			t.Errorf("tokend %s = %v; want %q", strings.Join(tt.args, " "), err, want)
		}
	}
	if _, err := os.Stat(filepath.Dir(dir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused command created %s: %v", filepath.Dir(dir), err)
	}
}

// TestServePortTaken checks that a taken port names -addr and
// TOKEND_ADDR, and that serve creates nothing on disk before it has bound
// its port.
func TestServePortTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	db := filepath.Join(t.TempDir(), "tokend.db")
	_, _, err = runCLI(t, "", "serve", "-addr", ln.Addr().String(), "-db", db)
	if err == nil || !strings.Contains(err.Error(), "address already in use") || !strings.Contains(err.Error(), "-addr (TOKEND_ADDR)") {
		t.Errorf("serve on a taken port = %v; want address already in use, naming -addr and TOKEND_ADDR", err)
	}
	if _, err := os.Stat(db); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("serve on a taken port created the database: %v", err)
	}
}

// TestMessagesNameTheWayOut checks messages that once left a newcomer
// guessing: an unknown scope lists the declared ones (CLI and API), and a
// backup into a missing folder names that folder, not a temporary file.
func TestMessagesNameTheWayOut(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "tokend.db")
	runCLI(t, "good password here\n", "user", "add", "-db", db, "-password-stdin", "alice")

	_, _, err := runCLI(t, "", "token", "create", "-db", db, "-user", "alice", "-name", "x", "-scopes", "treasure:dig", "-scope", "treasure:create=Bury")
	want := `token create: unknown scope "treasure:dig"; the scopes are tokens:read, tokens:write, introspect, admin, treasure:create`
	if err == nil || err.Error() != want {
		t.Errorf("token create with an unknown scope = %v; want %q", err, want)
	}

	ts := newTestServer(t)
	u := ts.addUser("bob", false)
	_, secret := ts.addToken(u, "writer", []string{scopeTokensWrite}, 0)
	w := ts.do(request{method: "POST", path: "/api/v1/tokens", token: secret, body: tokenRequest("x", []string{"root"}, nil)})
	var p problemBody
	decode(t, w, &p)
	if w.Code != 400 || !strings.Contains(p.Detail, `unknown scope "root"; the scopes are tokens:read, tokens:write, introspect, admin`) {
		t.Errorf("POST /api/v1/tokens with scope root = %d %q; want 400 listing the scopes", w.Code, p.Detail)
	}

	missing := filepath.Join(dir, "no", "such")
	_, _, err = runCLI(t, "", "backup", "-db", db, filepath.Join(missing, "copy.db"))
	want = "backup: directory " + missing + " does not exist: create it or choose another file"
	if err == nil || err.Error() != want {
		t.Errorf("backup into a missing folder = %v; want %q", err, want)
	}
}

// TestHelpShowsEveryFlag checks that tokend -h lists the commands, one
// line each, and that tokend help COMMAND prints, on stdout and without
// an error, that command's usage with every flag its FlagSet declares
// (as its own -h enumerates them through flag.PrintDefaults).
func TestHelpShowsEveryFlag(t *testing.T) {
	top, _, err := runCLI(t, "", "-h")
	if err != nil || top != usage {
		t.Fatalf("tokend -h = %q, %v; want the usage", top, err)
	}
	_, section, _ := strings.Cut(top, "Commands:\n")
	section, _, _ = strings.Cut(section, "\n\n")
	var commands [][]string
	for _, line := range strings.Split(section, "\n") {
		synopsis, summary, ok := strings.Cut(strings.TrimSpace(line), "  ")
		if !ok || strings.TrimSpace(summary) == "" {
			t.Errorf("tokend -h line %q has no summary", line)
		}
		var words []string
		for _, w := range strings.Fields(synopsis) {
			if w != strings.ToLower(w) || strings.HasPrefix(w, "[") {
				break
			}
			words = append(words, w)
		}
		commands = append(commands, words)
	}
	if len(commands) < 14 {
		t.Fatalf("tokend -h lists %d commands: %q", len(commands), commands)
	}
	flagLine := regexp.MustCompile(`(?m)^  (-[a-z][a-z-]*)`)
	for _, cmd := range commands {
		name := strings.Join(cmd, " ")
		t.Run(name, func(t *testing.T) {
			_, own, err := runCLI(t, "", append(slices.Clone(cmd), "-h")...)
			if err != nil {
				t.Fatalf("tokend %s -h = %v; want the usage and no error", name, err)
			}
			help, stderr, err := runCLI(t, "", append([]string{"help"}, cmd...)...)
			if err != nil || stderr != "" || !strings.Contains(help, "Usage: tokend") {
				t.Fatalf("tokend help %s = %q, stderr %q, %v; want the usage on stdout", name, help, stderr, err)
			}
			if name != "help" && help != own {
				t.Errorf("tokend help %s printed\n%s\ntokend %s -h printed\n%s", name, help, name, own)
			}
			for _, m := range flagLine.FindAllStringSubmatch(own, -1) {
				if !strings.Contains(help, m[1]) {
					t.Errorf("tokend help %s does not show %s", name, m[1])
				}
			}
			if name != "version" && name != "help" && len(flagLine.FindAllString(help, -1)) == 0 {
				t.Errorf("tokend help %s shows no flags:\n%s", name, help)
			}
		})
	}
	// The flag the usage once left out.
	if help, _, _ := runCLI(t, "", "help", "user", "passwd"); !strings.Contains(help, "-revoke-tokens") {
		t.Errorf("tokend help user passwd = %q; want -revoke-tokens", help)
	}
}
