package main

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"
)

// readmeBlocks returns the fenced code blocks of README.md that follow a
// line <!-- readme-test: name --> (blank lines between are allowed), in
// order, without their fences. It fails the test if there are none.
func readmeBlocks(t *testing.T, name string) []string {
	t.Helper()
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	marker := "<!-- readme-test: " + name + " -->"
	var blocks []string
	lines := strings.Split(string(data), "\n")
	for i := 0; i < len(lines); i++ {
		if strings.TrimSpace(lines[i]) != marker {
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
		t.Fatalf("README.md has no block marked %s", marker)
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

// TestReadmeWalkthrough runs the README's curl walkthrough, every block
// marked walkthrough in order, with sh -e against a real server on a fresh
// database that holds only alice, whose password is in PASSWORD as the
// README asks. Any failing command (curl -f fails on a 4xx) fails the test.
func TestReadmeWalkthrough(t *testing.T) {
	for _, tool := range []string{"sh", "curl", "sed"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s is missing: %v", tool, err)
			}
			t.Skipf("%s is missing: %v", tool, err)
		}
	}
	script := strings.Join(readmeBlocks(t, "walkthrough"), "\n")
	const password = "a walk through the README"
	cfg := testServeConfig(t)
	if _, _, err := runCLI(t, password+"\n", "user", "add", "-db", cfg.DB, "-password-stdin", "alice"); err != nil {
		t.Fatal(err)
	}
	addr, logs, stop := startServe(t, cfg)
	// The README's server listens on the default address; this one wherever
	// the kernel put it.
	script = strings.ReplaceAll(script, "http://"+defaultConfig().Addr, "http://"+addr)
	cmd := exec.Command("sh", "-e")
	cmd.Stdin = strings.NewReader(script)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "PASSWORD="+password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the README's walkthrough failed: %v\n%s\nserver log:\n%s", err, out, logs.String())
	}
	for _, want := range []string{`"name":"laptop"`, `"token":"tkd_`, `"name":"alice"`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the walkthrough printed no %s:\n%s", want, out)
		}
	}
	stop()

	// It made two tokens, rotated one (a third id) and revoked both.
	st, err := openStore(cfg.DB, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if all, err := st.AllTokens(); err != nil || len(all) != 0 {
		t.Errorf("after the walkthrough the database holds tokens %+v, %v; want none", all, err)
	}
	if seq := dumpStore(t, st)[string(bucketTokens)+"#seq"]; seq != "3" {
		t.Errorf("the walkthrough issued token ids up to %s; want 3 (laptop, ci, laptop rotated)", seq)
	}
	if entries, _ := os.ReadDir(cmd.Dir); len(entries) != 0 {
		t.Errorf("the walkthrough left files behind: %v", entries)
	}
}
