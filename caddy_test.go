package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestCaddyForwardAuth runs the README's Caddyfile in front of the app,
// with tokend answering its forward_auth.
func TestCaddyForwardAuth(t *testing.T) {
	caddy := findProxy(t, "caddy", "/usr/bin/caddy")
	f := newProxyFixture(t)
	site := readmeBlock(t, "Caddy", "caddy")
	addr := startProxy(t, func(addr string) error {
		dir := t.TempDir()
		// Caddy keeps state under HOME and the XDG folders: keep it in dir,
		// with no admin endpoint and no certificates.
		conf := "{\n\tadmin off\n\tauto_https off\n\tdefault_bind 127.0.0.1\n}\n\n" + replaceAll(t, site,
			"http://127.0.0.1:8000 {", "http://"+addr+" {",
			"127.0.0.1:8080", f.tokend.Listener.Addr().String(),
			"127.0.0.1:3000", f.app.Listener.Addr().String(),
		)
		confPath := filepath.Join(dir, "Caddyfile")
		if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(caddy, "run", "--config", confPath, "--adapter", "caddyfile")
		cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "XDG_DATA_HOME="+filepath.Join(dir, "data"))
		if err := startProcess(t, cmd, addr, filepath.Join(dir, "caddy.log")); err != nil {
			return fmt.Errorf("%w\nCaddyfile:\n%s", err, conf)
		}
		return nil
	})
	checkThroughProxy(t, f, addr)
	runReadmeProxyExamples(t, f, addr)
	if t.Failed() {
		t.Logf("tokend's log:\n%s", f.ts.logs)
	}
}
