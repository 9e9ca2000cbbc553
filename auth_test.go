package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestHashConcurrencyDefault checks that -hash-concurrency defaults to one
// fewer than the CPUs Go runs on, and never below one, so that password
// hashing always leaves a core to token checks.
func TestHashConcurrencyDefault(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, tt := range []struct{ procs, want int }{
		{procs: 1, want: 1},
		{procs: 2, want: 1},
		{procs: 3, want: 2},
		{procs: 4, want: 3},
		{procs: 16, want: 15},
	} {
		runtime.GOMAXPROCS(tt.procs)
		if got := defaultConfig().HashConcurrency; got != tt.want {
			t.Errorf("with GOMAXPROCS %d, the default -hash-concurrency = %d; want %d", tt.procs, got, tt.want)
		}
	}
}

// TestShutdownRefusesQueuedSignIns fills every hashing slot with a hash
// that does not end, queues sign-ins behind them, and starts the graceful
// shutdown serve runs. The queued sign-ins are answered 503 with
// Retry-After at once — while the slots are still held, so without
// waiting for any hash — nothing is written, and the shutdown completes
// with the slots still held. New sign-ins are refused the same way.
func TestShutdownRefusesQueuedSignIns(t *testing.T) {
	ts := newTestServer(t)
	u := ts.addUser("alice", false)
	for range cap(ts.hasher.slots) {
		if err := ts.hasher.acquire(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	httpSrv := &http.Server{Handler: ts.handler}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go httpSrv.Serve(ln)
	defer httpSrv.Close()

	const queued = 5
	before := ts.snapshot()
	answers := make(chan *http.Response, queued)
	for i := range queued {
		go func() {
			req, _ := http.NewRequest("POST", "http://"+ln.Addr().String()+"/api/v1/tokens", strings.NewReader(tokenRequest(fmt.Sprint("queued ", i), nil, nil)))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", basicAuth(u.Name, "password-of-alice"))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Errorf("queued sign-in %d: %v", i, err)
				answers <- nil
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			answers <- resp
		}()
	}
	waitFor(t, func() bool { return ts.hasher.waiting.Load() == queued })

	// The deadline only keeps a failure from hanging the test: with the
	// slots held, a drain that waits for the queue never ends.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.drain(ctx, httpSrv); err != nil {
		t.Fatalf("drain with %d sign-ins queued behind held slots = %v; want nil", queued, err)
	}
	for range queued {
		resp := <-answers
		if resp == nil {
			continue
		}
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("a sign-in queued at shutdown = %d with Retry-After %q; want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
	if n := ts.hasher.running.Load(); n != int64(cap(ts.hasher.slots)) {
		t.Errorf("%d hashes running after the shutdown; want the %d still holding their slots", n, cap(ts.hasher.slots))
	}
	assertUnchanged(t, "sign-ins refused at shutdown", before, ts.snapshot())

	// After the drain began, no sign-in waits for a slot, even a free one.
	for range cap(ts.hasher.slots) {
		ts.hasher.release()
	}
	w := ts.do(request{method: "POST", path: "/api/v1/tokens", header: basicHeader(u), body: tokenRequest("late", nil, nil)})
	checkProblem(t, "POST /api/v1/tokens with Basic during shutdown", w, http.StatusServiceUnavailable)
	if w.Header().Get("Retry-After") == "" {
		t.Error("a sign-in during shutdown got no Retry-After")
	}
	checkThrottleEmpty(t, ts.throttle, "after sign-ins refused at shutdown")
}
