package main

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"
)

// TestBrowserOAuth approves an app in the real consent page of a real
// chromium: the app sends the browser to tokend signed out, the person
// signs in, unticks one scope and approves, the browser lands on the app's
// loopback redirect receiver with the code, and the app exchanges it with
// x/oauth2 for a token of the scope left ticked.
func TestBrowserOAuth(t *testing.T) {
	chromium := chromiumPath(t)
	shots := screenshotDir(t)

	st, _ := newTestDB(t)
	cfg := defaultConfig()
	cfg.Argon = testArgon
	logs := &syncBuffer{}
	srv, err := newServer(st, cfg, slog.New(slog.NewTextHandler(logs, nil)), time.Now)
	if err != nil {
		t.Fatalf("newServer: %v", err)
	}
	hs := httptest.NewServer(srv.routes())
	defer hs.Close()
	const password = "correct horse battery"
	hash, err := srv.hasher.Hash(context.Background(), password)
	if err != nil {
		t.Fatal(err)
	}
	alice := newUser("alice", hash, false, time.Now())
	if err := st.CreateUser(testActor, &alice); err != nil {
		t.Fatal(err)
	}
	secret := "tkdcs_browser-test-client-secret"
	secretHash := hashToken(secret)
	client := clientRecord{ID: "browser-test-app", Name: "Photo Printer", RedirectURIs: []string{"http://127.0.0.1/callback"},
		SecretHash: &secretHash, CreatedAt: time.Now()}
	if err := st.CreateClient(testActor, &client); err != nil {
		t.Fatal(err)
	}

	// The app's loopback redirect receiver, on a port of its own: any
	// port of a registered loopback redirect URI is accepted.
	type answer struct{ code, state, err string }
	answers := make(chan answer, 1)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		select {
		case answers <- answer{q.Get("code"), q.Get("state"), q.Get("error")}:
		default:
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte("<!doctype html><title>Signed in</title><main>You can close this window.</main>"))
	}))
	defer app.Close()
	conf := oauthConfig(hs.URL, client, secret, scopeTokensRead, scopeIntrospect)
	conf.RedirectURL = app.URL + "/callback"
	verifier := oauth2.GenerateVerifier()
	authURL := conf.AuthCodeURL("browser-state", oauth2.S256ChallengeOption(verifier))

	ctx := browserTab(t, chromium, 60*time.Second)

	do := func(what, wantURL string, wantStatus int, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		resp, err := chromedp.RunResponse(ctx, steps...)
		if err != nil {
			t.Fatalf("%s: %v\nserver log:\n%s", what, err, logs)
		}
		if int(resp.Status) != wantStatus || !strings.HasPrefix(resp.URL, wantURL) {
			body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
			t.Fatalf("%s landed on %s with %d; want %s with %d; the page says:\n%s", what, resp.URL, resp.Status, wantURL, wantStatus, body)
		}
	}
	screenshot := func(name string) {
		t.Helper()
		if shots == "" {
			return
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	do("follow the app to tokend, signed out", hs.URL+"/login?next=", http.StatusOK, chromedp.Navigate(authURL))
	do("sign in", hs.URL+"/oauth/authorize?", http.StatusOK,
		chromedp.SendKeys(chromedp.CSS("#name"), "alice"),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS(`form[action^="/login"] button[type=submit]`)),
	)
	heading, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("h1")))
	if err != nil || !strings.Contains(heading, "Authorize Photo Printer?") {
		t.Fatalf("the consent page's heading is %q (%v); want it to name the app", heading, err)
	}
	screenshot("oauth-consent.png")
	do("untick introspect and approve", app.URL+"/callback?", http.StatusOK,
		chromedp.Click(chromedp.CSS(`input[name=approved][value=introspect]`)),
		chromedp.Click(chromedp.CSS(`button[name=decision][value=approve]`)),
	)
	var got answer
	select {
	case got = <-answers:
	case <-ctx.Done():
		t.Fatal("the app's redirect receiver got nothing")
	}
	if got.code == "" || got.state != "browser-state" || got.err != "" {
		t.Fatalf("the app received code %t, state %q, error %q; want a code and its state", got.code != "", got.state, got.err)
	}
	tok, err := conf.Exchange(context.Background(), got.code, oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("Exchange: %v\nserver log:\n%s", err, logs)
	}
	if tok.Extra("scope") != scopeTokensRead {
		t.Errorf("the token's scope is %v; want tokens:read alone, as approved", tok.Extra("scope"))
	}
	req, _ := http.NewRequest("GET", hs.URL+"/api/v1/user", nil)
	tok.SetAuthHeader(req)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /api/v1/user with the app's token = %d; want 200", resp.StatusCode)
	}
	if grants, err := st.GrantsOf(alice.ID); err != nil || len(grants) != 1 || grants[0].Client != client.ID {
		t.Errorf("GrantsOf(alice) = %v, %v; want the one grant to the app", grants, err)
	}
}
