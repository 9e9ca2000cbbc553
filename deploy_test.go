package main

// Tests of what ships beside the code: the systemd unit, the Dockerfile and
// the static binary the Dockerfile builds. There is no container engine or
// init system to run them under here, so they check what can be checked
// without one.

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// TestSystemdUnit runs systemd-analyze on contrib/tokend.service: verify
// must accept it without a warning, and the sandbox must keep its
// exposure score at 2.0 or below. The unit is checked as a copy whose
// ExecStart points at an executable that exists here.
func TestSystemdUnit(t *testing.T) {
	unit, err := os.ReadFile("contrib/tokend.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"ExecStart=/usr/local/bin/tokend serve", "DynamicUser=yes", "StateDirectory=tokend",
		"Environment=TOKEND_DB=/var/lib/tokend/tokend.db", "ProtectSystem=strict", "NoNewPrivileges=yes",
		"CapabilityBoundingSet=\n", "SystemCallFilter=@system-service",
	} {
		if !bytes.Contains(unit, []byte(want)) {
			t.Errorf("contrib/tokend.service lacks %q", strings.TrimSpace(want))
		}
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is not installed")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "tokend")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "tokend.service")
	copyUnit := bytes.ReplaceAll(unit, []byte("/usr/local/bin/tokend"), []byte(bin))
	if err := os.WriteFile(path, copyUnit, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("systemd-analyze verify tokend.service = %v:\n%s\nwant no error and no warning", err, out)
	}
	// Offline scoring needs systemd 252 or later; an older one says it
	// does not know the option, which is a skip, not a failure.
	out, err = exec.Command(analyze, "security", "--offline=true", "--threshold=20", path).CombinedOutput()
	switch {
	case err != nil && bytes.Contains(out, []byte("unrecognized option")):
		t.Logf("systemd-analyze security --offline is not supported here: %s", out)
	case err != nil:
		t.Errorf("systemd-analyze security: exposure above 2.0 or failure (%v):\n%s", err, out)
	}
}

// TestDockerfile checks the Dockerfile for what the image promises: a
// multi-stage build of a static binary with the Go of go.mod, a non-root
// user, the database on a volume, the listening address and port in step,
// and a health check through tokend healthcheck.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var froms []string
	final := map[string][]string{} // instruction → arguments, in the last stage
	var buildRuns []string
	for _, line := range strings.Split(strings.ReplaceAll(string(data), "\\\n", " "), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		instr, args, _ := strings.Cut(line, " ")
		instr = strings.ToUpper(instr)
		if instr == "FROM" {
			froms = append(froms, args)
			final = map[string][]string{}
			continue
		}
		if len(froms) == 1 && instr == "RUN" {
			buildRuns = append(buildRuns, args)
		}
		final[instr] = append(final[instr], args)
	}
	if len(froms) != 2 {
		t.Fatalf("Dockerfile has %d stages; want a build stage and a run stage", len(froms))
	}
	goMod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindSubmatch(goMod)
	if goVersion == nil || !strings.HasPrefix(froms[0], "golang:"+string(goVersion[1])) {
		t.Errorf("build stage FROM %q; want golang:%s, the Go of go.mod", froms[0], goVersion[1])
	}
	if !strings.HasPrefix(froms[1], "scratch") && !strings.HasPrefix(froms[1], "gcr.io/distroless/static") {
		t.Errorf("run stage FROM %q; want scratch or distroless static", froms[1])
	}
	if runs := strings.Join(buildRuns, "\n"); !strings.Contains(runs, "CGO_ENABLED=0") || !strings.Contains(runs, "go build") {
		t.Errorf("the build stage does not build with CGO_ENABLED=0:\n%s", runs)
	}
	users := final["USER"]
	if len(users) != 1 || users[0] == "root" || strings.HasPrefix(users[0], "0") {
		t.Errorf("run stage USER = %q; want one non-root user", users)
	}
	env := strings.Join(final["ENV"], " ")
	addr := regexp.MustCompile(`TOKEND_ADDR=(\S+)`).FindStringSubmatch(env)
	if addr == nil || !strings.HasPrefix(addr[1], "0.0.0.0:") {
		t.Fatalf("run stage ENV %q; want TOKEND_ADDR=0.0.0.0:PORT", env)
	}
	port := strings.TrimPrefix(addr[1], "0.0.0.0:")
	if len(final["EXPOSE"]) != 1 || final["EXPOSE"][0] != port {
		t.Errorf("EXPOSE %q; want %s, the port of TOKEND_ADDR", final["EXPOSE"], port)
	}
	db := regexp.MustCompile(`TOKEND_DB=(\S+)`).FindStringSubmatch(env)
	var volumes []string
	for _, v := range final["VOLUME"] {
		var list []string
		if json.Unmarshal([]byte(v), &list) != nil {
			list = strings.Fields(v)
		}
		volumes = append(volumes, list...)
	}
	if db == nil || len(volumes) != 1 || filepath.Dir(db[1]) != volumes[0] {
		t.Errorf("ENV TOKEND_DB %q and VOLUME %q; want the database inside the one volume", db, volumes)
	}
	if hc := final["HEALTHCHECK"]; len(hc) != 1 || !strings.HasSuffix(hc[0], `CMD ["/tokend","healthcheck"]`) {
		t.Errorf("HEALTHCHECK %q; want CMD [\"/tokend\",\"healthcheck\"]", hc)
	}
	if ep := final["ENTRYPOINT"]; len(ep) != 1 || ep[0] != `["/tokend"]` {
		t.Errorf("ENTRYPOINT %q; want [\"/tokend\"]", ep)
	}
	ignore, err := os.ReadFile(".dockerignore")
	if err != nil || !bytes.Contains(ignore, []byte("*.db")) {
		t.Errorf(".dockerignore does not keep database files out of the image (%v)", err)
	}
}

// TestStaticBuild builds tokend as the Dockerfile does, with CGO_ENABLED=0,
// and checks that the binary is static (no ELF interpreter, no shared
// library needed), that test-only dependencies stay out of it, and that
// it reports its own build information.
func TestStaticBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	if runtime.GOOS != "linux" {
		t.Skip("checks a Linux ELF binary")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("find the go command: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "tokend")
	build := func(vcs string) ([]byte, error) {
		cmd := exec.Command(goTool, "build", "-trimpath", "-buildvcs="+vcs, "-ldflags=-s -w", "-o", bin, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		return cmd.CombinedOutput()
	}
	// -buildvcs=auto stamps the revision when built from a checkout (and
	// overrides a GOFLAGS=-buildvcs=false).
	if out, err := build("auto"); err != nil {
		if !bytes.Contains(out, []byte("VCS")) {
			t.Fatalf("CGO_ENABLED=0 go build = %v:\n%s", err, out)
		}
		t.Logf("no VCS stamping here (%s); building without", bytes.TrimSpace(out))
		if out, err := build("false"); err != nil {
			t.Fatalf("CGO_ENABLED=0 go build -buildvcs=false = %v:\n%s", err, out)
		}
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the binary names an ELF interpreter: it is dynamically linked")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) != 0 {
		t.Errorf("the binary needs shared libraries %v (%v); want none", libs, err)
	}

	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, dep := range info.Deps {
		if strings.Contains(dep.Path, "kin-openapi") {
			t.Errorf("the binary links %s, a test-only dependency", dep.Path)
		}
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatalf("tokend version = %v", err)
	}
	if want := formatVersion(info, true); string(out) != want {
		t.Errorf("tokend version =\n%s\nwant\n%s", out, want)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" {
		t.Errorf("build setting CGO_ENABLED = %q; want 0", settings["CGO_ENABLED"])
	}
	if rev := settings["vcs.revision"]; rev != "" && !bytes.Contains(out, []byte("revision:    "+rev)) {
		t.Errorf("tokend version = %q; want the revision %s", out, rev)
	}
	if settings["vcs.revision"] == "" && !bytes.Contains(out, []byte("without VCS information")) {
		t.Errorf("tokend version = %q; want it to say the build has no VCS information", out)
	}
	t.Logf("tokend version:\n%s", out)
}
