package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// formatVersion describes a build from its build information (ok false:
// none was embedded): the module version, the VCS revision, the time of
// that commit and whether the tree had uncommitted changes, one per line.
// Go records the commit's time, not the wall clock at build time, so that
// two builds of one commit are the same binary. A build made without VCS
// information (-buildvcs=false, or outside a checkout) says so instead of
// printing empty fields.
func formatVersion(info *debug.BuildInfo, ok bool) string {
	if !ok || info == nil {
		return "tokend (no build information)\n"
	}
	version := info.Main.Version
	if version == "" {
		version = "(devel)"
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	goos, goarch := settings["GOOS"], settings["GOARCH"]
	if goos == "" || goarch == "" {
		goos, goarch = runtime.GOOS, runtime.GOARCH
	}

	var b strings.Builder
	fmt.Fprintf(&b, "tokend %s\n", version)
	if rev := settings["vcs.revision"]; rev != "" {
		fmt.Fprintf(&b, "revision:    %s\n", rev)
		if t := settings["vcs.time"]; t != "" {
			fmt.Fprintf(&b, "commit time: %s\n", t)
		}
		switch settings["vcs.modified"] {
		case "true":
			b.WriteString("modified:    yes, built from a tree with uncommitted changes\n")
		case "false":
			b.WriteString("modified:    no\n")
		}
	} else {
		b.WriteString("revision:    unknown: built without VCS information (-buildvcs=false, or not from a checkout)\n")
	}
	fmt.Fprintf(&b, "go:          %s %s/%s\n", info.GoVersion, goos, goarch)
	return b.String()
}
