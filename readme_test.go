package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readmeBlocks returns the fenced code blocks of README.md that follow a
// line <!-- readme-test: NAME… --> naming name among its space-separated
// names (blank lines between are allowed), in order, without their fences.
// It fails the test if there are none.
func readmeBlocks(t *testing.T, name string) []string {
	t.Helper()
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		marker := strings.TrimSpace(lines[i])
		names, isMarker := strings.CutPrefix(marker, "<!-- readme-test: ")
		names, closed := strings.CutSuffix(names, " -->")
		if !isMarker || !closed || !slices.Contains(strings.Fields(names), name) {
			continue
		}
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) == ""; i++ {
		}
		if i == len(lines) || !strings.HasPrefix(lines[i], "```") {
			t.Fatalf("README.md: %s is not followed by a fenced block", marker)
		}
		var b strings.Builder
		for i++; i < len(lines) && !strings.HasPrefix(lines[i], "```"); i++ {
			b.WriteString(lines[i] + "\n")
		}
		blocks = append(blocks, b.String())
	}
	if len(blocks) == 0 {
		t.Fatalf("README.md has no block marked <!-- readme-test: %s -->", name)
	}
	return blocks
}

// TestReadmePrintConfig checks that the README's -print-config sample is
// what the command it shows prints, so that the two cannot drift apart
// when a flag is added or changed.
func TestReadmePrintConfig(t *testing.T) {
	block := readmeBlocks(t, "print-config")[0]
	command, want, _ := strings.Cut(block, "\n")
	words := strings.Fields(strings.TrimPrefix(command, "$ "))
	clearTokendEnv(t)
	for len(words) > 0 && strings.Contains(words[0], "=") {
		k, v, _ := strings.Cut(words[0], "=")
		t.Setenv(k, v)
		words = words[1:]
	}
	if !strings.HasPrefix(command, "$ ") || len(words) == 0 || words[0] != "tokend" {
		t.Fatalf("README's -print-config sample starts %q; want $ [NAME=VALUE…] tokend ARGS", command)
	}
	// The default of -hash-concurrency follows the CPUs; the sample is
	// printed on a machine with two, as the README says.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	got, _, err := runCLI(t, "", words[1:]...)
	if err != nil {
		t.Fatalf("%s: %v", command, err)
	}
	if got != want {
		t.Errorf("README's -print-config sample differs from what %q prints; make the block after <!-- readme-test: print-config --> this:\n```\n%s\n%s```", command, command, got)
	}
}

// needTools skips the test when a command the README's examples use is
// missing, or fails it when CI is set.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is missing: %v", tool, err)
			}
			t.Skipf("%s is missing: %v", tool, err)
		}
	}
}

// runReadmeScript runs script with sh -e in dir, from a file, so that its
// commands can read stdin, with env added to the test's environment. It
// fails the test, with what it printed, if any command fails.
func runReadmeScript(t *testing.T, what, script, dir, stdin string, env ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "readme.sh")
	if err := os.WriteFile(path, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-e", path)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's %s failed: %v\n%s\nthe script:\n%s", what, err, out, script)
	}
	return string(out)
}

// TestReadmeWalkthrough runs every README example that talks to tokend
// directly, the blocks marked walkthrough, in the order of the file, with
// sh -e against a real tokend started by the README's serve block (so with
// its scopes declared). The database holds only the admin alice, whose
// password is in PASSWORD as the README asks, and a token she made on the
// token page, which the first block reads from stdin. Any failing command
// fails the test: the examples use curl -f, which fails on a 4xx.
func TestReadmeWalkthrough(t *testing.T) {
	needTools(t, "sh", "curl", "sed")
	clearTokendEnv(t)
	const password = "a walk through the README"
	serverDir := t.TempDir()
	db := filepath.Join(serverDir, "tokend.db")
	if _, _, err := runCLI(t, password+"\n", "user", "add", "-db", db, "-admin", "-password-stdin", "alice"); err != nil {
		t.Fatal(err)
	}
	pageToken, _, err := runCLI(t, "", "token", "create", "-db", db, "-user", "alice", "-name", "from the page")
	if err != nil {
		t.Fatal(err)
	}

	// The README's serve block, as printed, with the binary on PATH. It
	// serves ./tokend.db, which is db; only the address differs, so that
	// tests can run side by side.
	serveBlock := readmeBlocks(t, "serve")[0]
	bin := buildTokend(t)
	serverLog := filepath.Join(t.TempDir(), "tokend.log")
	addr := startProxy(t, func(addr string) error {
		cmd := exec.Command("sh", "-e", "-c", serveBlock)
		cmd.Dir = serverDir
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"), "TOKEND_ADDR="+addr)
		return startProcess(t, cmd, addr, serverLog)
	})

	script := strings.Join(readmeBlocks(t, "walkthrough"), "\n")
	script = strings.ReplaceAll(script, "http://"+defaultConfig().Addr, "http://"+addr)
	workDir := t.TempDir()
	out := runReadmeScript(t, "walkthrough", script, workDir, pageToken, "PASSWORD="+password)
	for _, want := range []string{
		`"name":"alice"`, `"name":"laptop"`, `"token":"tkd_`,
		// Introspection of the digger token, the fifth made.
		`{"active":true,"scope":"treasure:create","username":"alice","sub":"1",`, `"client_id":"5"}`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the walkthrough printed no %s:\n%s", want, out)
		}
	}
	if log, _ := os.ReadFile(serverLog); strings.Contains(string(log), "level=ERROR") || t.Failed() {
		t.Errorf("tokend's log:\n%s", log)
	}

	// It ends with a backup, taken through the API into the working folder:
	// the only file the examples leave there. It holds what the database
	// held then.
	entries, err := os.ReadDir(workDir)
	if err != nil || len(entries) != 1 || !strings.HasPrefix(entries[0].Name(), "tokend-") || !strings.HasSuffix(entries[0].Name(), ".db") {
		t.Fatalf("the walkthrough left %v, %v; want one backup tokend-*.db", entries, err)
	}
	backup := filepath.Join(workDir, entries[0].Name())
	if info, err := os.Stat(backup); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("the backup's mode is %v, %v; want 0600", info.Mode().Perm(), err)
	}
	st, err := openStore(backup, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Check(); err != nil {
		t.Errorf("the backup fails the consistency check: %v", err)
	}
	if u, err := st.UserByName("alice"); err != nil || !u.Admin {
		t.Errorf("the backup holds alice as %+v, %v; want an admin", u, err)
	}
	// The page's token; laptop, ci and laptop rotated (ids 2, 3 and 4) are
	// revoked; then digger, the service's token and the backup token.
	all, err := st.AllTokens()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tok := range all {
		got = append(got, fmt.Sprintf("%d %s %v", tok.ID, tok.Name, tok.Scopes))
	}
	slices.Sort(got)
	want := []string{"1 from the page []", "5 digger [treasure:create]", "6 treasure service [introspect]", "7 backups [admin]"}
	if !slices.Equal(got, want) {
		t.Errorf("after the walkthrough the database holds tokens %q; want %q", got, want)
	}
}

// runReadmeProxyExamples runs the README's examples marked proxy against
// tokend and the proxy at proxyAddr, with alice's password in PASSWORD,
// and checks that the app was reached with alice's new token once, and
// that the request without a token got tokend's 401.
func runReadmeProxyExamples(t *testing.T, f *proxyFixture, proxyAddr string) {
	t.Helper()
	needTools(t, "sh", "curl", "sed")
	script := replaceAll(t, strings.Join(readmeBlocks(t, "proxy"), "\n"),
		"http://127.0.0.1:8080", "http://"+f.tokend.Listener.Addr().String(),
		"http://127.0.0.1:8000", "http://"+proxyAddr,
	)
	out := runReadmeScript(t, "proxy examples", script, t.TempDir(), "", "PASSWORD=password-of-"+f.alice.Name)
	if want := "the app answers\n401\n"; out != want {
		t.Errorf("the README's proxy examples printed %q; want %q", out, want)
	}
	tokens, err := f.ts.store.TokensByOwner(f.alice.ID)
	if err != nil {
		t.Fatal(err)
	}
	var digger *tokenRecord
	for i := range tokens {
		if tokens[i].Name == "digger" && tokens[i].ID != f.digger.ID {
			digger = &tokens[i]
		}
	}
	if digger == nil || !slices.Equal(digger.Scopes, []string{"treasure:create"}) {
		t.Fatalf("after the README's proxy examples alice holds %+v; want a new digger token with treasure:create", tokens)
	}
	seen := f.app.requests("") // curl sends no X-Test-Case
	if len(seen) != 1 || seen[0].path != "/api/treasure/" || seen[0].header.Get(headerAuthUser) != "alice" ||
		seen[0].header.Get(headerAuthScopes) != "treasure:create" || seen[0].header.Get(headerAuthTokenID) != strconv.FormatUint(digger.ID, 10) {
		t.Errorf("the app saw %+v; want one GET /api/treasure/ from alice's new digger token", seen)
	}
}
