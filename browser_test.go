package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
)

// chromiumPath returns the chromium to drive. Without one the browser test
// skips, unless CI is set: there it must run.
func chromiumPath(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("chromium is not installed (CI=true turns this skip into a failure)")
		}
		t.Fatalf("chromium is not installed, and with CI set the browser test must run: %v", err)
	}
	return path
}

// screenshotDir is where the browser test saves its screenshots, from
// TOKEND_SCREENSHOTS; empty means nowhere.
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("TOKEND_SCREENSHOTS")
	if dir == "" {
		return ""
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("TOKEND_SCREENSHOTS: %v", err)
	}
	return dir
}

// TestBrowser drives a real chromium through a person's first minutes with
// tokend: first-run setup, sign in, create a token and use it, reload the
// page that showed it, revoke it, rotate another, change the password
// revoking every token, sign out. Every page must fit a phone's screen.
func TestBrowser(t *testing.T) {
	chromium := chromiumPath(t)
	shots := screenshotDir(t)
	start := time.Now()

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
	link, err := srv.setupLink(hs.URL)
	if err != nil {
		t.Fatalf("setupLink: %v", err)
	}

	ctx := browserTab(t, chromium, 60*time.Second)

	// do runs steps that end on a new page, and checks where the browser
	// landed and with what status.
	do := func(what string, wantPath string, wantStatus int, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		resp, err := chromedp.RunResponse(ctx, steps...)
		if err != nil {
			t.Fatalf("%s: %v\nserver log:\n%s", what, err, logs)
		}
		if int(resp.Status) != wantStatus || !strings.HasPrefix(strings.TrimPrefix(resp.URL, hs.URL), wantPath) {
			body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
			t.Fatalf("%s landed on %s with %d; want %s with %d; the page says:\n%s", what, resp.URL, resp.Status, wantPath, wantStatus, body)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("read %s: %v", sel, err)
		}
		return s
	}
	wantText := func(what, sel, want string) {
		t.Helper()
		if got := text(sel); !strings.Contains(got, want) {
			t.Fatalf("%s: %s says %q; want it to mention %q", what, sel, got, want)
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
	// fitsPhone checks that the page is no wider than a phone's screen,
	// 390 and 320 CSS pixels wide, and keeps a screenshot of it at each.
	fitsPhone := func(name string) {
		t.Helper()
		for _, width := range []int64{390, 320} {
			if err := chromedp.Do(ctx, chromedp.EmulateViewport(width, 844)); err != nil {
				t.Fatal(err)
			}
			fit, err := chromedp.Run(ctx, chromedp.Evaluate[[]int64](`[document.documentElement.scrollWidth, innerWidth]`))
			if err != nil {
				t.Fatalf("measure %s: %v", name, err)
			}
			if fit[0] > fit[1] {
				t.Errorf("the %s page is %d px wide on a %d px screen; want no wider than the screen", name, fit[0], fit[1])
			}
			screenshot(fmt.Sprintf("%s-%d.png", name, width))
		}
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(1200, 900)); err != nil {
			t.Fatal(err)
		}
	}
	tokenCount := func(what string, u userRecord, want int) {
		t.Helper()
		if tokens, err := st.TokensByOwner(u.ID); err != nil || len(tokens) != want {
			t.Fatalf("%s: alice holds %d tokens (err %v); want %d", what, len(tokens), err, want)
		}
	}
	api := func(path, token string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest("GET", hs.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}

	const password = "correct horse battery"
	const newPassword = "staple in the tokend drawer"

	// First run: the setup link makes the first admin, then sign in.
	do("open the setup link", "/setup", http.StatusOK, chromedp.Navigate(link))
	screenshot("setup.png")
	fitsPhone("setup")
	do("create the first admin", "/login", http.StatusOK,
		chromedp.SendKeys(chromedp.CSS("#name"), "alice"),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.SendKeys(chromedp.CSS("#confirm"), password),
		chromedp.Click(chromedp.CSS(`form[action^="/setup"] button[type=submit]`)),
	)
	wantText("after setup", ".notice", "Sign in with your new password")
	screenshot("login.png")
	fitsPhone("login")
	do("sign in", "/", http.StatusOK,
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS(`form[action^="/login"] button[type=submit]`)),
	)
	wantText("a new account's token page", "main", "You have no tokens yet")
	fitsPhone("tokens-empty")
	alice, err := st.UserByName("alice")
	if err != nil {
		t.Fatal(err)
	}

	// Create a token with two scopes and a 7-day expiry.
	do("create a token", "/secret", http.StatusOK,
		chromedp.SendKeys(chromedp.CSS("#token-name"), "deploy bot"),
		chromedp.Click(chromedp.CSS(`input[name=scope][value="tokens:read"]`)),
		chromedp.Click(chromedp.CSS(`input[name=scope][value="tokens:write"]`)),
		chromedp.Click(chromedp.CSS(`input[name=expiry][value="7"]`)),
		chromedp.Click(chromedp.CSS(`form[action^="/tokens"] button[type=submit]`)),
	)
	secret := strings.TrimSpace(text("#secret"))
	if !secretPattern.MatchString(secret) {
		t.Fatalf("the show-once page shows %q; want a token matching %s", secret, secretPattern)
	}
	wantText("the show-once page", ".warning", "will not be shown again")
	// app.js unhides the copy button: proof that the CSP lets it run.
	hidden, err := chromedp.Run(ctx, chromedp.AttributeValue(chromedp.CSS("button[data-copy]"), "hidden"))
	if err != nil || hidden.Exists {
		t.Errorf("the copy button is still hidden (err %v): app.js did not run", err)
	}
	screenshot("show-once.png")
	fitsPhone("show-once")

	// Reloading the page that showed the secret makes no other token and
	// shows the secret no more.
	tokenCount("after creating one token", alice, 1)
	do("reload the show-once page", "/secret", http.StatusGone, chromedp.Reload())
	wantText("the show-once page reloaded", "main", "shown only once")
	if body := text("main"); strings.Contains(body, secret) {
		t.Errorf("the reloaded show-once page still shows the secret")
	}
	tokenCount("after reloading the show-once page", alice, 1)
	fitsPhone("already-shown")

	// An address with no page answers with a page.
	do("open a page that does not exist", "/no-such-page", http.StatusNotFound, chromedp.Navigate(hs.URL+"/no-such-page"))
	wantText("the 404 page", "main", "Page not found")
	wantText("the 404 page", ".bar", "Sign out")
	fitsPhone("not-found")
	do("back to the token page", "/", http.StatusOK, chromedp.Click(chromedp.CSS(`main a.button[href="/"]`)))

	// The secret works on the API, with the scopes and expiry chosen.
	if code, body := api("/api/v1/user", secret); code != http.StatusOK || body["name"] != "alice" {
		t.Fatalf("GET /api/v1/user with the new token = %d %v; want 200 alice", code, body)
	}
	code, self := api("/api/v1/token", secret)
	if code != http.StatusOK {
		t.Fatalf("GET /api/v1/token = %d %v; want 200", code, self)
	}
	if got := fmt.Sprint(self["scopes"]); got != "[tokens:read tokens:write]" {
		t.Errorf("the token's scopes = %s; want [tokens:read tokens:write]", got)
	}
	if exp, err := time.Parse(time.RFC3339, fmt.Sprint(self["expires_at"])); err != nil ||
		exp.Sub(time.Now()) < 7*24*time.Hour-time.Minute || exp.Sub(time.Now()) > 7*24*time.Hour {
		t.Errorf("the token expires at %v; want 7 days from now", self["expires_at"])
	}
	id := uint64(self["id"].(float64))

	// Two more tokens, made behind the page's back, so that the list
	// shows what an older account looks like.
	past := time.Now().Add(-3 * 24 * time.Hour)
	for _, spec := range []tokenSpec{
		{name: "backup cron", scopes: []string{scopeTokensRead}},
		{name: "old laptop", scopes: []string{scopeTokensRead, scopeTokensWrite}, expires: &past},
	} {
		if _, _, err := newToken(st, testActor, srv.format, alice, spec, time.Now().Add(-40*24*time.Hour), 0); err != nil {
			t.Fatal(err)
		}
	}
	do("back to the token page", "/", http.StatusOK, chromedp.Navigate(hs.URL+"/"))
	wantText("the token list", fmt.Sprintf("#token-%d", id), "in 7 days")
	wantText("the token list", "ul.tokens", "expired 3 days ago")
	wantText("the token list", "ul.tokens", "never")
	screenshot("tokens.png")
	fitsPhone("tokens")
	if shots != "" {
		dark := func(on bool) {
			t.Helper()
			p := emulation.SetEmulatedMediaParams{}
			if on {
				p.Features = []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}
			}
			if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, p); err != nil {
				t.Fatal(err)
			}
		}
		dark(true)
		screenshot("tokens-dark.png")
		dark(false)
	}

	// Revoke it in the page; the API then says 401.
	do("ask to revoke", fmt.Sprintf("/tokens/%d/revoke", id), http.StatusOK,
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`a[href="/tokens/%d/revoke"]`, id))))
	screenshot("revoke.png")
	fitsPhone("revoke")
	do("revoke", "/", http.StatusOK,
		chromedp.Click(chromedp.CSS(fmt.Sprintf(`form[action^="/tokens/%d/revoke"] button[type=submit]`, id))))
	wantText("after revoking", ".notice", "Revoked “deploy bot”")
	if code, body := api("/api/v1/user", secret); code != http.StatusUnauthorized {
		t.Fatalf("GET /api/v1/user with the revoked token = %d %v; want 401", code, body)
	}

	// Rotate the backup token: the form, sent once, rotates once.
	do("ask to rotate", "/tokens/", http.StatusOK, chromedp.Click(chromedp.CSS(`.token-actions a[href$="/rotate"]`)))
	fitsPhone("rotate")
	do("rotate", "/secret", http.StatusOK, chromedp.Click(chromedp.CSS(`form[action*="/rotate"] button[type=submit]`)))
	wantText("the rotated token's page", "main", "Token rotated")
	do("reload the rotated token's page", "/secret", http.StatusGone, chromedp.Reload())
	tokenCount("after rotating and reloading", alice, 2)

	do("open the users page", "/admin/users", http.StatusOK, chromedp.Click(chromedp.CSS(`nav a[href="/admin/users"]`)))
	screenshot("users.png")
	fitsPhone("users")
	do("open a user", "/admin/users/", http.StatusOK, chromedp.Click(chromedp.CSS(`a.button[href^="/admin/users/"]`)))
	screenshot("user.png")
	fitsPhone("user")

	// Change the password, revoking every token.
	do("open the account page", "/account", http.StatusOK, chromedp.Click(chromedp.CSS(`nav a[href="/account"]`)))
	do("change the password", "/account", http.StatusOK,
		chromedp.SendKeys(chromedp.CSS("#current"), password),
		chromedp.SendKeys(chromedp.CSS("#password"), newPassword),
		chromedp.SendKeys(chromedp.CSS("#confirm"), newPassword),
		chromedp.Click(chromedp.CSS(`input[name=revoke_tokens]`)),
		chromedp.Click(chromedp.CSS(`form[action^="/account/password"] button[type=submit]`)),
	)
	wantText("after the password change", ".notice", "2 tokens revoked")
	wantText("the account page", ".sessions", "Chrome on Linux")
	screenshot("account.png")
	fitsPhone("account")
	if tokens, err := st.TokensByOwner(alice.ID); err != nil || len(tokens) != 0 {
		t.Errorf("after the change with revoke, alice holds %d tokens (err %v); want 0", len(tokens), err)
	}
	if _, err := srv.signIn(httptest.NewRequest("POST", "/", nil), "alice", newPassword); err != nil {
		t.Errorf("the new password does not sign in: %v", err)
	}

	// Sign out: the server forgets the session.
	do("sign out", "/login", http.StatusOK, chromedp.Click(chromedp.CSS(".signout button")))
	wantText("after signing out", ".notice", "You are signed out")
	if sessions, err := st.SessionsOf(alice.ID); err != nil || len(sessions) != 0 {
		t.Errorf("after signing out alice has %d sessions (err %v); want 0", len(sessions), err)
	}
	do("the token page after signing out", "/login", http.StatusOK, chromedp.Navigate(hs.URL+"/"))
	do("a page that does not exist, signed out", "/nothing", http.StatusNotFound, chromedp.Navigate(hs.URL+"/nothing"))
	wantText("the 404 page signed out", "main", "Sign in")
	do("the used setup link", "/setup", http.StatusNotFound, chromedp.Navigate(link))
	wantText("the used setup link", "main", "Sign in instead")
	fitsPhone("setup-used")

	t.Logf("browser test took %v", time.Since(start).Round(time.Millisecond))
}

// browserTab starts a headless chromium for t and returns a tab in it,
// closed when the test ends.
func browserTab(t *testing.T, chromium string, timeout time.Duration) context.Context {
	t.Helper()
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	t.Cleanup(func() { cancel(); cancelTab(); cancelAlloc() })
	return ctx
}
