package main

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestFormatVersion(t *testing.T) {
	settings := func(kv ...string) []debug.BuildSetting {
		var out []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			out = append(out, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return out
	}
	tests := []struct {
		name   string
		info   *debug.BuildInfo
		ok     bool
		want   []string // lines, in order
		absent []string
	}{
		{
			name: "release from a clean checkout",
			info: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "tokend", Version: "v1.4.0"},
				Settings: settings("GOOS", "linux", "GOARCH", "arm64", "vcs", "git",
					"vcs.revision", "0a8cd7c752d76e61cb8ce6ff5696969e011370e0", "vcs.time", "2026-11-28T17:03:02Z", "vcs.modified", "false")},
			ok: true,
			want: []string{"tokend v1.4.0", "revision:    0a8cd7c752d76e61cb8ce6ff5696969e011370e0",
				"commit time: 2026-11-28T17:03:02Z", "modified:    no", "go:          go1.26.8 linux/arm64"},
			absent: []string{"unknown"},
		},
		{
			name: "dirty tree",
			info: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "tokend", Version: "v0.0.0-20261128170302-0a8cd7c752d7+dirty"},
				Settings: settings("vcs.revision", "0a8cd7c", "vcs.time", "2026-11-28T17:03:02Z", "vcs.modified", "true")},
			ok:   true,
			want: []string{"tokend v0.0.0-20261128170302-0a8cd7c752d7+dirty", "revision:    0a8cd7c", "modified:    yes, built from a tree with uncommitted changes"},
		},
		{
			name:   "built with -buildvcs=false",
			info:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "tokend", Version: "(devel)"}, Settings: settings("GOOS", "linux", "GOARCH", "amd64")},
			ok:     true,
			want:   []string{"tokend (devel)", "revision:    unknown: built without VCS information (-buildvcs=false, or not from a checkout)", "go:          go1.26.8 linux/amd64"},
			absent: []string{"commit time", "modified"},
		},
		{
			name: "no version at all",
			info: &debug.BuildInfo{GoVersion: "go1.26.8"},
			ok:   true,
			want: []string{"tokend (devel)", "revision:    unknown"},
		},
		{
			name: "no build information",
			ok:   false,
			want: []string{"tokend (no build information)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := formatVersion(tt.info, tt.ok)
			if !strings.HasSuffix(out, "\n") {
				t.Errorf("formatVersion = %q; want it to end with a newline", out)
			}
			rest := out
			for _, line := range tt.want {
				i := strings.Index(rest, line)
				if i < 0 {
					t.Errorf("formatVersion =\n%s\nwant the line %q (in this order)", out, line)
					continue
				}
				rest = rest[i+len(line):]
			}
			for _, s := range tt.absent {
				if strings.Contains(out, s) {
					t.Errorf("formatVersion =\n%s\nwant no %q", out, s)
				}
			}
		})
	}
}

// TestVersionCommand checks that `tokend version`, `tokend -version` and
// `tokend serve -version` all print this binary's build information and
// start nothing.
func TestVersionCommand(t *testing.T) {
	want := formatVersion(debug.ReadBuildInfo())
	if !strings.HasPrefix(want, "tokend ") || !strings.Contains(want, "go:") {
		t.Fatalf("this test binary's version is %q; want tokend and the Go version", want)
	}
	for _, args := range [][]string{{"version"}, {"-version"}, {"serve", "-version"}, {"serve", "-db", "/nonexistent/dir/x.db", "-version"}} {
		out, _, err := runCLI(t, "", args...)
		if err != nil || out != want {
			t.Errorf("tokend %s = %q, %v; want %q", strings.Join(args, " "), out, err, want)
		}
	}
}
