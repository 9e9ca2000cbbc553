package main

import (
	"os"
	"strings"
	"testing"
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
	got, _, err := runCLI(t, "", words[1:]...)
	if err != nil {
		t.Fatalf("%s: %v", command, err)
	}
	if got != want {
		t.Errorf("README's -print-config sample differs from what %q prints; make the block after <!-- readme-test: print-config --> this:\n```\n%s\n%s```", command, command, got)
	}
}
