package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestLastUsedOneWritePerFlush: many concurrent verifications write nothing;
// one flush writes them all in one transaction, with the right time and
// address.
func TestLastUsedOneWritePerFlush(t *testing.T) {
	ts := newTestServer(t)
	u := ts.addUser("alice", false)
	tok, secret := ts.addToken(u, "ci", nil, 0)
	other, otherSecret := ts.addToken(u, "other", nil, 0)

	writes := ts.store.writeTxs.Load()
	var wg sync.WaitGroup
	for g := range 50 {
		wg.Go(func() {
			for range 20 {
				s := secret
				if g%10 == 0 {
					s = otherSecret
				}
				if w := ts.do(request{method: "GET", path: "/api/v1/user", token: s}); w.Code != 200 {
					t.Errorf("GET /api/v1/user = %d", w.Code)
				}
			}
		})
	}
	wg.Wait()
	if got := ts.store.writeTxs.Load() - writes; got != 0 {
		t.Fatalf("1000 verifications made %d write transactions; want 0", got)
	}
	stored, _ := ts.store.TokenByID(tok.ID, anyOwner)
	if stored.LastUsedAt != nil {
		t.Fatalf("last_used_at reached the database before any flush: %v", stored.LastUsedAt)
	}

	n, err := ts.flushLastUsed()
	if err != nil || n != 2 {
		t.Fatalf("flushLastUsed = %d, %v; want 2 tokens", n, err)
	}
	if got := ts.store.writeTxs.Load() - writes; got != 1 {
		t.Errorf("the flush made %d write transactions; want 1", got)
	}
	for _, id := range []uint64{tok.ID, other.ID} {
		stored, _ := ts.store.TokenByID(id, anyOwner)
		if stored.LastUsedAt == nil || !stored.LastUsedAt.Equal(ts.clock.Now()) || stored.LastUsedIP != "192.0.2.7" {
			t.Errorf("token %d after the flush: last used %v from %q; want %v from 192.0.2.7", id, stored.LastUsedAt, stored.LastUsedIP, ts.clock.Now())
		}
	}
	if n, _ := ts.flushLastUsed(); n != 0 || ts.store.writeTxs.Load()-writes != 1 {
		t.Errorf("a flush with nothing pending wrote %d tokens", n)
	}
}

func TestLastUsedShownBeforeFlush(t *testing.T) {
	ts := newTestServer(t)
	u := ts.addUser("alice", false)
	_, secret := ts.addToken(u, "ci", []string{scopeTokensRead}, 0)
	w := ts.do(request{method: "GET", path: "/api/v1/token", token: secret})
	var got tokenBody
	decode(t, w, &got)
	if got.LastUsedAt == nil || !got.LastUsedAt.Equal(ts.clock.Now()) || got.LastUsedIP == nil || *got.LastUsedIP != "192.0.2.7" {
		t.Errorf("GET /api/v1/token last used = %v from %v; want now from 192.0.2.7", got.LastUsedAt, got.LastUsedIP)
	}
}

func TestLastUsedFlushDoesNotResurrect(t *testing.T) {
	ts := newTestServer(t)
	u := ts.addUser("alice", false)
	tok, secret := ts.addToken(u, "ci", nil, 0)
	if w := ts.do(request{method: "GET", path: "/api/v1/user", token: secret}); w.Code != 200 {
		t.Fatalf("GET /api/v1/user = %d", w.Code)
	}
	if w := ts.do(request{method: "DELETE", path: "/api/v1/token", token: secret}); w.Code != 204 {
		t.Fatalf("DELETE /api/v1/token = %d", w.Code)
	}
	before := ts.snapshot()
	if _, err := ts.flushLastUsed(); err != nil {
		t.Fatal(err)
	}
	assertUnchanged(t, "flushing the use of a revoked token", before, ts.snapshot())
	if _, err := ts.store.TokenByID(tok.ID, anyOwner); err == nil {
		t.Error("the revoked token is back after the flush")
	}
}

func TestLastUsedNeverMovesBack(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		u := storeUser(t, st, "alice", false)
		tok, _ := storeToken(t, st, u.ID, "t", nil)
		late := time.Date(2030, 1, 2, 0, 0, 0, 0, time.UTC)
		st.FlushLastUsed(map[uint64]lastUse{tok.ID: {At: late, IP: "192.0.2.1"}})
		st.FlushLastUsed(map[uint64]lastUse{tok.ID: {At: late.Add(-time.Hour), IP: "192.0.2.2"}})
		got, _ := st.TokenByID(tok.ID, anyOwner)
		if !got.LastUsedAt.Equal(late) || got.LastUsedIP != "192.0.2.1" {
			t.Errorf("last used = %v from %s; want the later %v from 192.0.2.1", got.LastUsedAt, got.LastUsedIP, late)
		}
	})
}

func TestLastUsedFailedFlushKeepsUses(t *testing.T) {
	ts := newTestServer(t)
	u := ts.addUser("alice", false)
	tok, secret := ts.addToken(u, "ci", nil, 0)
	ts.do(request{method: "GET", path: "/api/v1/user", token: secret})
	ts.store.db.Close() // every write now fails
	if _, err := ts.flushLastUsed(); err == nil {
		t.Fatal("flushLastUsed on a closed database = nil error")
	}
	if use, ok := ts.lastUsed.peek(tok.ID); !ok || !use.At.Equal(ts.clock.Now()) {
		t.Errorf("after a failed flush the use is %v, %v; want it kept for the next flush", use, ok)
	}
}

func TestExpiryWarnings(t *testing.T) {
	ts := newTestServer(t)
	u := ts.addUser("alice", false)
	soon, soonSecret := ts.addToken(u, "soon", nil, 3*24*time.Hour)
	_, laterSecret := ts.addToken(u, "later", nil, 30*24*time.Hour)
	_, neverSecret := ts.addToken(u, "never", nil, 0)

	warnings := func() int { return strings.Count(ts.logs.String(), "token in use expires soon") }
	for range 3 {
		ts.do(request{method: "GET", path: "/api/v1/user", token: soonSecret})
	}
	if warnings() != 1 {
		t.Errorf("three uses in one day logged %d warnings; want 1", warnings())
	}
	if !strings.Contains(ts.logs.String(), fmt.Sprintf("token_id=%d", soon.ID)) || !strings.Contains(ts.logs.String(), fmt.Sprintf("user_id=%d", u.ID)) {
		t.Errorf("the warning does not name the token and its owner:\n%s", ts.logs.String())
	}
	ts.clock.Add(24 * time.Hour)
	ts.do(request{method: "GET", path: "/api/v1/user", token: soonSecret})
	if warnings() != 2 {
		t.Errorf("a use the next day made %d warnings in all; want 2", warnings())
	}
	w := ts.do(request{method: "GET", path: "/api/v1/user", token: laterSecret})
	if w.Header().Get("Token-Expires-At") == "" || warnings() != 2 {
		t.Errorf("a token 30 days from expiry: header %q, %d warnings; want the header and no new warning", w.Header().Get("Token-Expires-At"), warnings())
	}
	w = ts.do(request{method: "GET", path: "/api/v1/user", token: neverSecret})
	if _, ok := w.Header()["Token-Expires-At"]; ok {
		t.Error("a token that never expires got a Token-Expires-At header")
	}
	for _, s := range []string{soonSecret, laterSecret, neverSecret} {
		if strings.Contains(ts.logs.String(), s) {
			t.Fatal("a secret reached the log")
		}
	}
}

// TestShutdownOrder starts the real server, holds a request in flight while
// shutdown begins, and checks that the request completes, that its token's
// use is flushed, and that the steps run once each, in order.
func TestShutdownOrder(t *testing.T) {
	cfg := defaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DB = filepath.Join(t.TempDir(), "tokend.db")
	cfg.Argon = testArgon
	st, err := openStore(cfg.DB, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	u := storeUser(t, st, "alice", false)
	secret, _ := mustFormat(t, defaultTokenPrefix).generate()
	tok := tokenRecord{Owner: u.ID, Name: "deploy", Scopes: []string{scopeTokensRead, scopeTokensWrite},
		CreatedAt: time.Now(), ExpiresAt: at(time.Now().Add(24 * time.Hour)), Hint: tokenHint(secret)}
	if err := st.CreateToken(testActor, &tok, hashToken(secret), 0); err != nil {
		t.Fatal(err)
	}
	st.Close()

	var logs syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, slog.New(slog.NewTextHandler(&logs, nil)), ready) }()
	addr := <-ready

	// The body arrives in two parts; shutdown starts between them.
	body, bodyWriter := io.Pipe()
	req, _ := http.NewRequest("POST", "http://"+addr.String()+"/api/v1/tokens", body)
	req.Header.Set("Authorization", "Bearer "+secret)
	req.Header.Set("Content-Type", "application/json")
	answer := make(chan *http.Response, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("in-flight request: %v", err)
		}
		answer <- resp
	}()
	bodyWriter.Write([]byte(`{"name":"made during shutdown",`))
	// The server has authenticated the request once it warns that the
	// token expires within a week: then the request is in flight.
	waitFor(t, func() bool { return strings.Contains(logs.String(), "token in use expires soon") })
	cancel()
	waitFor(t, func() bool { return strings.Contains(logs.String(), "shutting down") })
	fmt.Fprintf(bodyWriter, `"scopes":["tokens:read"],"expires_at":%q}`, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	bodyWriter.Close()

	resp := <-answer
	if resp == nil {
		t.Fatal("no answer to the in-flight request")
	}
	created, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || !bytes.Contains(created, []byte(`"token":"tkd_`)) {
		t.Fatalf("in-flight POST /api/v1/tokens = %d %s; want 201 with the new token", resp.StatusCode, created)
	}
	var made tokenJSON
	json.Unmarshal(created, &made)
	if err := <-done; err != nil {
		t.Fatalf("serve = %v", err)
	}

	steps := []string{"shutting down", "requests drained", "background loops stopped", "last-used times flushed", "database closed"}
	out := logs.String()
	last := -1
	for _, step := range steps {
		if n := strings.Count(out, step); n != 1 {
			t.Errorf("%q logged %d times; want once", step, n)
		}
		i := strings.Index(out, step)
		if i < last {
			t.Errorf("%q logged out of order:\n%s", step, out)
		}
		last = i
	}

	st, err = openStore(cfg.DB, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got, err := st.TokenByID(tok.ID, anyOwner)
	if err != nil || got.LastUsedAt == nil || got.LastUsedIP != "127.0.0.1" {
		t.Errorf("after shutdown the token was last used %v from %q (%v); want the in-flight use flushed", got.LastUsedAt, got.LastUsedIP, err)
	}
	if _, _, err := st.TokenByHash(hashToken(made.Token)); err != nil {
		t.Errorf("the token made by the in-flight request is not in the database: %v", err)
	}
}

// waitFor polls cond until it holds, failing the test after ten seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for start := time.Now(); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatal("condition not met within 10s")
		}
	}
}

func TestIntrospectionCountsAsUse(t *testing.T) {
	ts := newTestServer(t)
	u := ts.addUser("alice", false)
	_, asker := ts.addToken(u, "service", []string{scopeIntrospect}, 0)
	asked, askedSecret := ts.addToken(u, "script", nil, 0)
	w := ts.do(request{method: "POST", path: "/api/v1/introspect", token: asker,
		header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, body: "token=" + askedSecret})
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"active":true`) {
		t.Fatalf("POST /api/v1/introspect = %d %s; want 200 active", w.Code, w.Body)
	}
	if use, ok := ts.lastUsed.peek(asked.ID); !ok || !use.At.Equal(ts.clock.Now()) {
		t.Errorf("after introspection the token's last use is %v, %v; want now", use, ok)
	}
}

// TestLastUsedAddressBehindTrustedProxy: with -trust-proxy the last-used
// address is the client the proxy names, as for sign-in throttling.
func TestLastUsedAddressBehindTrustedProxy(t *testing.T) {
	ts := newTestServer(t)
	ts.cfg.TrustProxy = true
	u := ts.addUser("alice", false)
	tok, secret := ts.addToken(u, "ci", nil, 0)
	ts.do(request{method: "GET", path: "/api/v1/user", token: secret, header: map[string]string{"X-Forwarded-For": "198.51.100.9"}})
	if use, ok := ts.lastUsed.peek(tok.ID); !ok || use.IP != "198.51.100.9" {
		t.Errorf("last use behind a trusted proxy = %+v, %v; want from 198.51.100.9", use, ok)
	}
}

// TestNoUseRecordedAfterFinalFlush blocks a request across shutdown: an
// introspection whose caller was verified before the final last-used flush
// and whose body, naming the token to check, arrives after it. The use of
// the introspected token could no longer be written, so the request must
// fail (503) rather than answer "active" and lose the use; a use recorded
// before the flush is in the database.
func TestNoUseRecordedAfterFinalFlush(t *testing.T) {
	ts := newTestServer(t)
	u := ts.addUser("alice", false)
	checker, checkerSecret := ts.addToken(u, "checker", []string{scopeIntrospect}, 0)
	checked, checkedSecret := ts.addToken(u, "checked", nil, 0)

	body, bodyWriter := io.Pipe()
	r := httptest.NewRequest("POST", "/api/v1/introspect", body)
	r.RemoteAddr = "192.0.2.7:4711"
	r.Header.Set("Authorization", "Bearer "+checkerSecret)
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	w := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { defer close(done); ts.handler.ServeHTTP(w, r) }()
	// The caller is verified before the body is read.
	waitFor(t, func() bool { _, ok := ts.lastUsed.peek(checker.ID); return ok })

	n, err := ts.finalFlushLastUsed()
	if err != nil || n != 1 {
		t.Fatalf("final flush = %d, %v; want the checker's use written", n, err)
	}
	bodyWriter.Write([]byte("token=" + checkedSecret))
	bodyWriter.Close()
	<-done

	if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "shutting down") {
		t.Errorf("introspection finished after the final flush = %d %s; want 503 saying the server is shutting down", w.Code, w.Body)
	}
	if got, _ := ts.store.TokenByID(checker.ID, anyOwner); got.LastUsedAt == nil {
		t.Errorf("the checker's use, recorded before the final flush, is not in the database")
	}
	if _, ok := ts.lastUsed.peek(checked.ID); ok {
		t.Errorf("a use was recorded after the final flush: it would never be written")
	}
	// Forward auth and the API refuse as well.
	for _, req := range []request{
		{method: "GET", path: "/auth", token: checkedSecret},
		{method: "GET", path: "/api/v1/user", token: checkedSecret},
	} {
		r := httptest.NewRequest(req.method, req.path, nil)
		r.Header.Set("Authorization", "Bearer "+req.token)
		w := httptest.NewRecorder()
		ts.handler.ServeHTTP(w, r)
		if w.Code != http.StatusServiceUnavailable {
			t.Errorf("%s %s after the final flush = %d; want 503", req.method, req.path, w.Code)
		}
	}
}
