package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
)

// TestBrowserPasskey drives a real chromium with a virtual authenticator
// (a CTAP2 platform authenticator that keeps resident keys and verifies
// its user, from the DevTools WebAuthn domain): alice signs in with her
// password, adds a passkey on the account page, signs out, and signs in
// with the passkey alone; then, her account having a second factor, her
// password leads to the second step, where the passkey finishes it.
func TestBrowserPasskey(t *testing.T) {
	chromium := chromiumPath(t)

	st, _ := newTestDB(t)
	cfg := defaultConfig()
	cfg.Argon = testArgon
	logs := &syncBuffer{}
	srv, err := newServer(st, cfg, slog.New(slog.NewTextHandler(logs, nil)), time.Now)
	if err != nil {
		t.Fatalf("newServer: %v", err)
	}
	const password = "correct horse battery"
	hash, err := srv.hasher.Hash(context.Background(), password)
	if err != nil {
		t.Fatal(err)
	}
	alice := newUser("alice", hash, false, time.Now())
	if err := st.CreateUser(testActor, &alice); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.routes())
	defer hs.Close()
	// A relying party id is a host name, never an IP address: the browser
	// opens tokend as localhost.
	base := strings.Replace(hs.URL, "127.0.0.1", "localhost", 1)

	ctx := browserTab(t, chromium, 60*time.Second)

	var authenticator webauthn.AuthenticatorID
	err = chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, webauthn.Enable, webauthn.EnableParams{}); err != nil {
			return err
		}
		res, err := cdp.Call(ctx, tg, webauthn.AddVirtualAuthenticator, webauthn.AddVirtualAuthenticatorParams{
			Options: &webauthn.VirtualAuthenticatorOptions{
				Protocol:                    webauthn.AuthenticatorProtocolCtap2,
				Ctap2version:                webauthn.Ctap2versionCtap21,
				Transport:                   webauthn.AuthenticatorTransportInternal,
				HasResidentKey:              true,
				HasUserVerification:         true,
				IsUserVerified:              true,
				AutomaticPresenceSimulation: true,
			},
		})
		authenticator = res.AuthenticatorID
		return err
	}))
	if err != nil {
		t.Fatalf("add a virtual authenticator: %v", err)
	}

	// do runs steps that end on a new page, and checks where the browser
	// landed and with what status.
	do := func(what string, wantPath string, wantStatus int, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		resp, err := chromedp.RunResponse(ctx, steps...)
		if err != nil {
			body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
			t.Fatalf("%s: %v\nthe page says:\n%s\nserver log:\n%s", what, err, body, logs)
		}
		if int(resp.Status) != wantStatus || !strings.HasPrefix(strings.TrimPrefix(resp.URL, base), wantPath) {
			body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("main")))
			t.Fatalf("%s landed on %s with %d; want %s with %d; the page says:\n%s\nserver log:\n%s", what, resp.URL, resp.Status, wantPath, wantStatus, body, logs)
		}
	}
	wantText := func(what, sel, want string) {
		t.Helper()
		got, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil || !strings.Contains(got, want) {
			t.Fatalf("%s: %s says %q (err %v); want it to mention %q", what, sel, got, err, want)
		}
	}
	shots := screenshotDir(t)
	// fitsPhone checks that the page is no wider than a phone's screen,
	// and keeps a screenshot of it.
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
			if shots != "" {
				png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(shots, fmt.Sprintf("%s-%d.png", name, width)), png, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(1200, 900)); err != nil {
			t.Fatal(err)
		}
	}
	sessions := func(what string, want int) {
		t.Helper()
		if s, err := st.SessionsOf(alice.ID); err != nil || len(s) != want {
			t.Fatalf("%s: alice has %d sessions (err %v); want %d", what, len(s), err, want)
		}
	}

	do("open the sign-in page", "/login", http.StatusOK, chromedp.Navigate(base+"/login"))
	do("sign in with the password", "/", http.StatusOK,
		chromedp.SendKeys(chromedp.CSS("#name"), "alice"),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS(`form[action="/login#form-error"] button[type=submit]`)),
	)

	// Add a passkey: the first second factor comes with recovery codes.
	do("open the account page", "/account", http.StatusOK, chromedp.Navigate(base+"/account"))
	do("add a passkey", "/account/passkeys", http.StatusOK,
		chromedp.SendKeys(chromedp.CSS("#passkey-name"), "laptop"),
		chromedp.Click(chromedp.CSS(`form[data-passkey=register] button[data-passkey-button]`)),
	)
	wantText("after adding the first passkey", "main", "Passkey laptop added")
	wantText("after adding the first passkey", "main", "Save these codes now")
	keys, err := st.PasskeysOf(alice.ID)
	if err != nil || len(keys) != 1 || keys[0].Name != "laptop" || !keys[0].LastUsedAt.IsZero() {
		t.Fatalf("after adding a passkey alice holds %+v (err %v); want one named laptop, never used", keys, err)
	}
	f, err := st.SecondFactors(alice.ID)
	if err != nil || f.Passkeys != 1 || f.RecoveryLeft != recoveryCodeCount {
		t.Fatalf("alice's second factors = %+v (err %v); want 1 passkey and %d recovery codes", f, err, recoveryCodeCount)
	}
	creds, err := chromedp.Run(ctx, func(ctx context.Context, tg *chromedp.Target) (webauthn.GetCredentialsResult, error) {
		return cdp.Call(ctx, tg, webauthn.GetCredentials, webauthn.GetCredentialsParams{AuthenticatorID: authenticator})
	})
	if err != nil || len(creds.Credentials) != 1 {
		t.Fatalf("the authenticator holds %v (err %v); want one credential", creds, err)
	}
	if c := creds.Credentials[0]; !c.IsResidentCredential || c.RpID != "localhost" ||
		!bytes.Equal(c.CredentialID, keys[0].CredentialID) || !bytes.Equal(c.UserHandle, passkeyUserHandle(alice.ID)) {
		t.Fatalf("the authenticator's credential = resident %t, rp %q, id %x, user %x; want a resident one for localhost, id %x, user %x",
			c.IsResidentCredential, c.RpID, c.CredentialID, c.UserHandle, keys[0].CredentialID, passkeyUserHandle(alice.ID))
	}
	do("back to the account page", "/account", http.StatusOK, chromedp.Click(chromedp.CSS(`main a.button[href="/account"]`)))
	wantText("the account page lists the passkey", "#passkey-list", "laptop")
	fitsPhone("account-passkeys")

	// Sign out, and in again with the passkey alone: no name, no password.
	do("sign out", "/login", http.StatusOK, chromedp.Click(chromedp.CSS(".signout button")))
	sessions("after signing out", 0)
	fitsPhone("login-passkey")
	do("sign in with the passkey", "/", http.StatusOK,
		chromedp.Click(chromedp.CSS(`form[data-passkey=signin] button[data-passkey-button]`)),
	)
	wantText("signed in with the passkey", ".who", "alice")
	sessions("after signing in with the passkey", 1)
	if keys, err := st.PasskeysOf(alice.ID); err != nil || len(keys) != 1 || keys[0].LastUsedAt.IsZero() {
		t.Fatalf("after signing in with it, the passkey is %+v (err %v); want it marked used", keys, err)
	}

	// The password alone no longer signs alice in: the second step asks
	// for the passkey.
	do("sign out again", "/login", http.StatusOK, chromedp.Click(chromedp.CSS(".signout button")))
	do("sign in with the password", "/login/verify", http.StatusOK,
		chromedp.SendKeys(chromedp.CSS("#name"), "alice"),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS(`form[action="/login#form-error"] button[type=submit]`)),
	)
	sessions("after the password alone", 0)
	fitsPhone("verify-passkey")
	do("give the passkey as the second factor", "/", http.StatusOK,
		chromedp.Click(chromedp.CSS(`form[data-passkey=verify] button[data-passkey-button]`)),
	)
	wantText("signed in with password and passkey", ".who", "alice")
	sessions("after the second step", 1)
}
