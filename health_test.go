package main

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReadyz(t *testing.T) {
	ts := newTestServer(t)
	w := ts.do(request{method: "GET", path: "/readyz"})
	if w.Code != 200 || w.Body.String() != "ready\n" {
		t.Fatalf("GET /readyz = %d %q; want 200 ready", w.Code, w.Body)
	}
	// The database stops answering: not ready, and says so without detail.
	if err := ts.store.Close(); err != nil {
		t.Fatal(err)
	}
	w = ts.do(request{method: "GET", path: "/readyz"})
	p := checkProblem(t, "GET /readyz with the database closed", w, http.StatusServiceUnavailable)
	checkDetail(t, "GET /readyz with the database closed", p, "database")
	if strings.Contains(w.Body.String(), "not open") {
		t.Errorf("GET /readyz sends the internal error to the client: %s", w.Body)
	}
	if !strings.Contains(ts.logs.String(), "not ready") {
		t.Errorf("a failed readiness check is not logged:\n%s", ts.logs)
	}
	// Liveness does no I/O: the process still runs.
	if w := ts.do(request{method: "GET", path: "/healthz"}); w.Code != 200 {
		t.Errorf("GET /healthz with the database closed = %d; want 200", w.Code)
	}
}

// startServer runs serve with cfg on a free loopback port until the test
// ends and returns its address.
func startServer(t *testing.T, cfg config) string {
	t.Helper()
	cfg.Addr = "127.0.0.1:0"
	if cfg.DB == "" || cfg.DB == defaultConfig().DB {
		cfg.DB = filepath.Join(t.TempDir(), "tokend.db")
	}
	cfg.Argon = testArgon
	addr, _, _ := startServe(t, cfg)
	return addr
}

func TestHealthcheckCommand(t *testing.T) {
	addr := startServer(t, defaultConfig())
	_, port, _ := net.SplitHostPort(addr)

	out, _, err := runCLI(t, "", "healthcheck", "-addr", addr)
	if err != nil || out != "ready\n" {
		t.Errorf("healthcheck -addr %s = %q, %v; want ready", addr, out, err)
	}
	// A server listening on all interfaces is asked on loopback.
	if _, _, err := runCLI(t, "", "healthcheck", "-addr", "0.0.0.0:"+port); err != nil {
		t.Errorf("healthcheck -addr 0.0.0.0:%s = %v; want it to ask 127.0.0.1", port, err)
	}
	if _, _, err := runCLI(t, "", "healthcheck", "-addr", ":"+port); err != nil {
		t.Errorf("healthcheck -addr :%s = %v; want it to ask 127.0.0.1", port, err)
	}
	// TOKEND_ADDR, as the server itself reads it.
	t.Setenv("TOKEND_ADDR", addr)
	if _, _, err := runCLI(t, "", "healthcheck"); err != nil {
		t.Errorf("healthcheck with TOKEND_ADDR=%s = %v; want ready", addr, err)
	}

	// Nothing listening: an error naming what was asked.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	if _, _, err := runCLI(t, "", "healthcheck", "-addr", closed); err == nil || !strings.Contains(err.Error(), closed+"/readyz") {
		t.Errorf("healthcheck -addr %s (nothing there) = %v; want an error naming it", closed, err)
	}
	if _, _, err := runCLI(t, "", "healthcheck", "-addr", "nonsense"); err == nil || !strings.Contains(err.Error(), "-addr") {
		t.Errorf("healthcheck -addr nonsense = %v; want an error naming -addr", err)
	}
}

func TestHealthcheckFailures(t *testing.T) {
	notReady := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			t.Errorf("healthcheck asked for %s; want /readyz", r.URL.Path)
		}
		writeProblem(w, http.StatusServiceUnavailable, "the database does not answer")
	}))
	defer notReady.Close()
	err := checkHealth(context.Background(), notReady.Listener.Addr().String(), time.Second)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "database does not answer") {
		t.Errorf("checkHealth of a server answering 503 = %v; want an error with the status and detail", err)
	}

	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hung.Close()
	defer close(release)
	start := time.Now()
	err = checkHealth(context.Background(), hung.Listener.Addr().String(), 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "no answer within 200ms") {
		t.Errorf("checkHealth of a hung server = %v; want a timeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("checkHealth of a hung server took %v; want about its timeout", d)
	}
}
