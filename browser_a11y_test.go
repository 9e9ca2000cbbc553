package main

import (
	"encoding/base32"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// axeSource returns the source of axe-core's axe.min.js, from the file
// TOKEND_TEST_AXE names (.ci/run installs it with npm). Without it the
// accessibility test skips, unless CI is set: there it must run.
func axeSource(t *testing.T) string {
	t.Helper()
	path := os.Getenv("TOKEND_TEST_AXE")
	if path == "" {
		if os.Getenv("CI") == "" {
			t.Skip("TOKEND_TEST_AXE does not name axe-core's axe.min.js (CI=true turns this skip into a failure)")
		}
		t.Fatal("TOKEND_TEST_AXE does not name axe-core's axe.min.js, and with CI set the accessibility test must run")
	}
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("TOKEND_TEST_AXE: %v", err)
	}
	return string(src)
}

// axeViolation is one rule that axe found broken, with where.
type axeViolation struct {
	ID     string `json:"id"`
	Impact string `json:"impact"`
	Help   string `json:"help"`
	Nodes  []struct {
		Target  []any  `json:"target"`
		Summary string `json:"failureSummary"`
	} `json:"nodes"`
}

// axeRun runs axe on the whole document for the WCAG 2.2 A and AA rules
// and axe's best practices, and returns what it found broken.
const axeRun = `axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice']}, resultTypes: ['violations']}).then(r => r.violations)`

// fieldBorders lists the text fields whose border has less than 3:1
// contrast (WCAG 1.4.11, which axe does not check) with the field's inside
// or with what lies around it (in light mode the border is all that shows
// where a field is), or whose placeholder has less than 4.5:1.
const fieldBorders = `(() => {
	const rgb = c => c.match(/[\d.]+/g).map(Number);
	const lum = c => { const [r, g, b] = rgb(c).slice(0, 3).map(v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }); return 0.2126 * r + 0.7152 * g + 0.0722 * b; };
	const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
	const opaque = c => { const v = rgb(c); return v.length < 4 || v[3] === 1; };
	const behind = e => { for (let p = e.parentElement; p; p = p.parentElement) { const c = getComputedStyle(p).backgroundColor; if (opaque(c)) return c; } return "rgb(255, 255, 255)"; };
	const out = [];
	for (const e of document.querySelectorAll("input:not([type]), input[type=text], input[type=password], input[type=date]")) {
		if (!e.getClientRects().length) continue;
		const s = getComputedStyle(e), border = s.borderTopColor, inside = s.backgroundColor;
		const worst = Math.min(ratio(border, opaque(inside) ? inside : behind(e)), ratio(border, behind(e)));
		if (worst < 3) out.push((e.id || e.name) + " " + worst.toFixed(2) + ":1");
		const hint = getComputedStyle(e, "::placeholder").color;
		if (e.placeholder && ratio(hint, opaque(inside) ? inside : behind(e)) < 4.5) out.push((e.id || e.name) + " placeholder " + ratio(hint, inside).toFixed(2) + ":1");
	}
	return out;
})()`

// pageVariant is how a page is looked at: light or dark, wide or narrow.
type pageVariant struct {
	dark  bool
	width int64
}

func (v pageVariant) String() string {
	scheme := "light"
	if v.dark {
		scheme = "dark"
	}
	return fmt.Sprintf("%s, %d px", scheme, v.width)
}

var pageVariants = []pageVariant{{false, 1280}, {true, 1280}, {false, 320}, {true, 320}}

// TestBrowserAccessibility runs axe-core in a real chromium on every page
// and state of tokend, in light and dark at 1280 and 320 px, and wants no
// violation of WCAG 2.2 A and AA nor of axe's best practices, and no page
// wider than the screen.
func TestBrowserAccessibility(t *testing.T) {
	chromium := chromiumPath(t)
	axe := axeSource(t)

	ts := newTestServer(t)
	ts.cfg.MaxTokensPerUser = 100
	hs := httptest.NewServer(ts.handler)
	defer hs.Close()
	link, err := ts.setupLink(hs.URL)
	if err != nil {
		t.Fatalf("setupLink: %v", err)
	}
	ctx := browserTab(t, chromium, 8*time.Minute)
	shots := screenshotDir(t)

	total := 0
	// check runs axe on the page the tab shows, in every variant.
	check := func(state string) {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](axe)); err != nil {
			t.Fatalf("%s: inject axe: %v", state, err)
		}
		for _, v := range pageVariants {
			p := emulation.SetEmulatedMediaParams{Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "light"}}}
			if v.dark {
				p.Features[0].Value = "dark"
			}
			if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, p); err != nil {
				t.Fatal(err)
			}
			if err := chromedp.Do(ctx, chromedp.EmulateViewport(v.width, 900)); err != nil {
				t.Fatal(err)
			}
			fit, err := chromedp.Run(ctx, chromedp.Evaluate[[]int64](`[document.documentElement.scrollWidth, innerWidth]`))
			if err != nil {
				t.Fatalf("%s (%s): measure: %v", state, v, err)
			}
			if fit[0] > fit[1] {
				t.Errorf("%s (%s): the page is %d px wide on a %d px screen; want no wider than the screen", state, v, fit[0], fit[1])
			}
			if weak, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](fieldBorders)); err != nil || len(weak) > 0 {
				t.Errorf("%s (%s): field borders below 3:1 or placeholders below 4.5:1 (err %v): %q", state, v, err, weak)
			}
			if shots != "" {
				png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
				if err != nil {
					t.Fatalf("%s (%s): screenshot: %v", state, v, err)
				}
				name := strings.NewReplacer(" ", "-", ",", "").Replace(fmt.Sprintf("a11y %s %s.png", state, v))
				if err := os.WriteFile(filepath.Join(shots, name), png, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			found, err := chromedp.Run(ctx, chromedp.Evaluate[[]axeViolation](axeRun, chromedp.EvalAwaitPromise))
			if err != nil {
				t.Fatalf("%s (%s): run axe: %v", state, v, err)
			}
			for _, f := range found {
				total += len(f.Nodes)
				var where []string
				for _, n := range f.Nodes {
					where = append(where, fmt.Sprint(n.Target))
				}
				t.Errorf("%s (%s): axe %s (%s, %d nodes): %s at %s\n%s", state, v, f.ID, f.Impact, len(f.Nodes), f.Help,
					strings.Join(where, ", "), f.Nodes[0].Summary)
			}
		}
	}
	// open loads path with the steps and checks where the browser landed.
	open := func(what, wantPath string, wantStatus int, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		resp, err := chromedp.RunResponse(ctx, steps...)
		if err != nil {
			t.Fatalf("%s: %v\nserver log:\n%s", what, err, ts.logs)
		}
		if got := strings.TrimPrefix(resp.URL, hs.URL); int(resp.Status) != wantStatus || !strings.HasPrefix(got, wantPath) {
			t.Fatalf("%s landed on %s with %d; want %s with %d", what, got, resp.Status, wantPath, wantStatus)
		}
	}

	const password = "correct horse battery"
	open("the setup page", "/setup", http.StatusOK, chromedp.Navigate(link))
	check("setup")
	open("create the first admin", "/login", http.StatusOK,
		chromedp.SendKeys(chromedp.CSS("#name"), "alice"),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.SendKeys(chromedp.CSS("#confirm"), password),
		chromedp.Click(chromedp.CSS(`form[action^="/setup"] button[type=submit]`)),
	)
	check("sign-in")
	open("sign in wrongly", "/login", http.StatusUnauthorized,
		chromedp.SendKeys(chromedp.CSS("#password"), "not the password"),
		chromedp.Click(chromedp.CSS(`form[action^="/login"] button[type=submit]`)),
	)
	check("sign-in error")
	open("sign in", "/", http.StatusOK,
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS(`form[action^="/login"] button[type=submit]`)),
	)
	check("token list, empty")
	open("send the token form with a custom expiry and no date", "/tokens", http.StatusBadRequest,
		chromedp.SendKeys(chromedp.CSS("#token-name"), "deploy script"),
		chromedp.Click(chromedp.CSS(`input[name=expiry][value=custom]`)),
		chromedp.Click(chromedp.CSS(`form[action^="/tokens"] button[type=submit]`)),
	)
	check("token form error")
	open("create a token", "/secret", http.StatusOK,
		chromedp.Click(chromedp.CSS(`input[name=scope][value="tokens:read"]`)),
		chromedp.Click(chromedp.CSS(`input[name=expiry][value="30"]`)),
		chromedp.Click(chromedp.CSS(`form[action^="/tokens"] button[type=submit]`)),
	)
	check("show-once")

	alice, err := ts.store.UserByName("alice")
	if err != nil {
		t.Fatal(err)
	}
	for i := 2; i <= 100; i++ {
		scopes := []string{scopeTokensRead}
		if i%3 == 0 {
			scopes = append(scopes, scopeTokensWrite)
		}
		ts.addToken(alice, fmt.Sprintf("token number %d", i), scopes, time.Duration(i-20)*24*time.Hour)
	}
	open("the token list, full", "/", http.StatusOK, chromedp.Navigate(hs.URL+"/"))
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("li.token").length`)); err != nil || n != 100 {
		t.Fatalf("the token list shows %d tokens (err %v); want 100", n, err)
	}
	check("token list, 100 tokens")
	open("ask to revoke", "/tokens/", http.StatusOK, chromedp.Click(chromedp.CSS(`.token-actions a[href$="/revoke"]`)))
	check("revoke confirmation")
	open("back to the token list", "/", http.StatusOK, chromedp.Navigate(hs.URL+"/"))
	open("ask to rotate", "/tokens/", http.StatusOK, chromedp.Click(chromedp.CSS(`.token-actions a[href$="/rotate"]`)))
	check("rotate confirmation")

	// A second browser of alice's, and more people, for the account and
	// users pages.
	form := url.Values{"name": {"alice"}, "password": {password}, "next": {"/"}}
	if w := ts.do(request{method: "POST", path: "/login", body: form.Encode(), header: map[string]string{
		"Content-Type": "application/x-www-form-urlencoded",
		"User-Agent":   "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
	}}); w.Code != http.StatusSeeOther {
		t.Fatalf("sign in from a second browser = %d; want 303\n%s", w.Code, w.Body)
	}
	bob := ts.addUser("bob", false)
	ts.addUser("carol-with-a-rather-long-name", true)
	ts.addToken(bob, "laptop", []string{scopeTokensRead}, 0)
	open("the account page", "/account", http.StatusOK, chromedp.Navigate(hs.URL+"/account"))
	check("account")
	open("the users page", "/admin/users", http.StatusOK, chromedp.Navigate(hs.URL+"/admin/users"))
	check("users")
	open("a user's page", "/admin/users/", http.StatusOK, chromedp.Navigate(fmt.Sprintf("%s/admin/users/%d", hs.URL, bob.ID)))
	check("user")

	// The OAuth pages: clients, a client, consent in both flows, the
	// device page and its answers, and the account page's authorized apps.
	open("the clients page, empty", "/admin/clients", http.StatusOK, chromedp.Navigate(hs.URL+"/admin/clients"))
	check("clients, none")
	addClient := `form[action^="/admin/clients"] button[type=submit]`
	open("register a client with a bad lifetime", "/admin/clients", http.StatusBadRequest,
		chromedp.SendKeys(chromedp.CSS("#client-name"), "deploy-cli"),
		chromedp.Click(chromedp.CSS("#client-device")),
		chromedp.SendKeys(chromedp.CSS("#access-ttl"), "forever"),
		chromedp.Click(chromedp.CSS(addClient)),
	)
	check("clients, form error")
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`document.getElementById("access-ttl").value = ""`)); err != nil {
		t.Fatal(err)
	}
	open("register a client", "/admin/clients", http.StatusCreated,
		chromedp.SendKeys(chromedp.CSS("#redirect-uris"), "http://127.0.0.1/callback"),
		chromedp.Click(chromedp.CSS(addClient)),
	)
	check("clients, secret shown once")
	wiki, _ := ts.addClient(clientRecord{Name: "The team's wiki, with a rather long name", RedirectURIs: []string{"https://wiki.example.com/oauth/callback"}})
	tokctl, _ := ts.addClient(clientRecord{Name: "tokctl", Device: true, Public: true})
	open("the clients page", "/admin/clients", http.StatusOK, chromedp.Navigate(hs.URL+"/admin/clients"))
	check("clients")
	clients, err := ts.store.Clients()
	if err != nil || len(clients) != 3 {
		t.Fatalf("clients after registering deploy-cli: %+v, %v; want 3", clients, err)
	}
	deploy := clients[slices.IndexFunc(clients, func(c clientRecord) bool { return c.Name == "deploy-cli" })]
	open("a client's page", "/admin/clients/", http.StatusOK, chromedp.Navigate(hs.URL+"/admin/clients/"+deploy.ID))
	check("client")
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`document.getElementById("remove-confirm").required = false`)); err != nil {
		t.Fatal(err)
	}
	open("remove a client without ticking the box", "/admin/clients/", http.StatusBadRequest,
		chromedp.Click(chromedp.CSS(`form[action*="/remove"] button[type=submit]`)))
	check("client, removal error")

	consent := url.Values{"client_id": {wiki.ID}, "redirect_uri": {wiki.RedirectURIs[0]}, "response_type": {"code"},
		"code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}, "code_challenge_method": {"S256"},
		"scope": {scopeTokensRead + " " + scopeTokensWrite}, "state": {"s"}}
	open("the consent page", "/oauth/authorize", http.StatusOK, chromedp.Navigate(hs.URL+"/oauth/authorize?"+consent.Encode()))
	check("consent, code flow")

	// startDevice starts the device flow for tokctl and returns its code.
	startDevice := func() string {
		t.Helper()
		w := ts.oauthPost("/oauth/device_authorization", url.Values{"client_id": {tokctl.ID}, "scope": {scopeTokensRead}}, "")
		var da deviceAuthResponse
		if err := json.Unmarshal(w.Body.Bytes(), &da); w.Code != http.StatusOK || err != nil {
			t.Fatalf("POST /oauth/device_authorization = %d (%v): %s", w.Code, err, w.Body)
		}
		return da.UserCode
	}
	code := startDevice()
	sendCode := `form[action^="/device"] button[type=submit]`
	open("the device page", "/device", http.StatusOK, chromedp.Navigate(hs.URL+"/device"))
	check("device, code entry")
	open("type a wrong code", "/device", http.StatusBadRequest,
		chromedp.SendKeys(chromedp.CSS("#user-code"), "BCDF-BCDF"),
		chromedp.Click(chromedp.CSS(sendCode)),
	)
	check("device, wrong code")
	open("open the device page with the code", "/device", http.StatusOK, chromedp.Navigate(hs.URL+"/device?user_code="+url.QueryEscape(code)))
	open("send the code", "/device", http.StatusOK, chromedp.Click(chromedp.CSS(sendCode)))
	if h, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("h1"))); err != nil || h != "Authorize tokctl?" {
		t.Fatalf("after sending the code the page's heading is %q (err %v); want the consent page", h, err)
	}
	check("consent, device flow")
	open("approve the device", "/device/approve", http.StatusOK, chromedp.Click(chromedp.CSS(`button[name=decision][value=approve]`)))
	check("device, approved")
	open("open the device page with another code", "/device", http.StatusOK, chromedp.Navigate(hs.URL+"/device?user_code="+url.QueryEscape(startDevice())))
	open("send the code", "/device", http.StatusOK, chromedp.Click(chromedp.CSS(sendCode)))
	open("deny the device", "/device/approve", http.StatusOK, chromedp.Click(chromedp.CSS(`button[name=decision][value=deny]`)))
	check("device, denied")
	issueTestGrant(t, ts, alice, wiki, []string{scopeTokensRead, scopeTokensWrite})
	issueTestGrant(t, ts, alice, deploy, nil)
	open("the account page with authorized apps", "/account", http.StatusOK, chromedp.Navigate(hs.URL+"/account"))
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll('a[href^="/account/grants/"]').length`)); err != nil || n != 2 {
		t.Fatalf("the account page lists %d authorized apps (err %v); want 2", n, err)
	}
	check("account, authorized apps")
	open("ask to revoke an app", "/account/grants/", http.StatusOK, chromedp.Click(chromedp.CSS(`a[href^="/account/grants/"]`)))
	check("grant revoke confirmation")

	open("the audit log", "/admin/audit", http.StatusOK, chromedp.Navigate(hs.URL+"/admin/audit"))
	check("audit log")
	open("the audit log with a bad filter", "/admin/audit", http.StatusBadRequest, chromedp.Navigate(hs.URL+"/admin/audit?user=nobody"))
	check("audit log, filter error")
	open("the security log's older events", "/account/security-log", http.StatusOK, chromedp.Navigate(hs.URL+"/account/security-log?before=1000000"))
	check("security log")
	open("a page that does not exist", "/nothing", http.StatusNotFound, chromedp.Navigate(hs.URL+"/nothing"))
	check("not found")

	// Two hours on, sensitive forms ask for the password again.
	ts.clock.Add(2 * time.Hour)
	open("the token list in need of sudo", "/", http.StatusOK, chromedp.Navigate(hs.URL+"/"))
	open("ask to rotate in need of sudo", "/tokens/", http.StatusOK, chromedp.Click(chromedp.CSS(`.token-actions a[href$="/rotate"]`)))
	check("rotate confirmation, asking for the password")
	open("rotate with a wrong password", "/tokens/", http.StatusForbidden,
		chromedp.SendKeys(chromedp.CSS(`input[name=sudo_password]`), "not the password"),
		chromedp.Click(chromedp.CSS(`form[action*="/rotate"] button[type=submit]`)),
	)
	check("rotate confirmation, wrong password")

	// The webhooks page, and the second factor's pages: enrolling an
	// authenticator app, its error, the recovery codes shown once, and the
	// sign-in's second step with its error.
	open("the webhooks page", "/admin/webhooks", http.StatusOK, chromedp.Navigate(hs.URL+"/admin/webhooks"))
	check("webhooks")
	open("the authenticator app page", "/account/totp", http.StatusOK, chromedp.Navigate(hs.URL+"/account/totp"))
	check("TOTP enrolment, asking for the password")
	openRefused := func(what, wantPath string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		resp, err := chromedp.RunResponse(ctx, steps...)
		if err != nil {
			t.Fatalf("%s: %v\nserver log:\n%s", what, err, ts.logs)
		}
		if got := strings.TrimPrefix(resp.URL, hs.URL); resp.Status < 400 || resp.Status > 499 || !strings.HasPrefix(got, wantPath) {
			t.Fatalf("%s landed on %s with %d; want %s refused with a 4xx", what, got, resp.Status, wantPath)
		}
	}
	enrol := `form[action^="/account/totp"] button[type=submit]`
	openRefused("enrol with a wrong code", "/account/totp",
		chromedp.SendKeys(chromedp.CSS("#code"), "000000"),
		chromedp.SendKeys(chromedp.CSS(`input[name=sudo_password]`), password),
		chromedp.Click(chromedp.CSS(enrol)),
	)
	check("TOTP enrolment, wrong code")
	shown, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("code.secret")))
	if err != nil {
		t.Fatal(err)
	}
	secret, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(strings.ReplaceAll(shown, " ", ""))
	if err != nil {
		t.Fatalf("the TOTP secret on the page %q: %v", shown, err)
	}
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`document.getElementById("code").value = ""`)); err != nil {
		t.Fatal(err)
	}
	steps := []chromedp.Action[chromedp.Void]{chromedp.SendKeys(chromedp.CSS("#code"), refTOTP(secret, ts.clock.Now()))}
	if n, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("input[name=sudo_password]").length`)); err == nil && n > 0 {
		steps = append(steps, chromedp.SendKeys(chromedp.CSS(`input[name=sudo_password]`), password))
	}
	open("enrol", "/account/totp", http.StatusOK, append(steps, chromedp.Click(chromedp.CSS(enrol)))...)
	check("recovery codes")
	open("the account page", "/account", http.StatusOK, chromedp.Navigate(hs.URL+"/account"))
	open("sign out", "/login", http.StatusOK, chromedp.Click(chromedp.CSS(".signout button")))
	open("sign in with the password alone", "/login/verify", http.StatusOK,
		chromedp.SendKeys(chromedp.CSS("#name"), "alice"),
		chromedp.SendKeys(chromedp.CSS("#password"), password),
		chromedp.Click(chromedp.CSS(`form[action^="/login"] button[type=submit]`)),
	)
	check("second step")
	openRefused("a wrong code at the second step", "/login/verify",
		chromedp.SendKeys(chromedp.CSS("#code"), "000000"),
		chromedp.Click(chromedp.CSS(`form[action^="/login/verify"] button[type=submit]`)),
	)
	check("second step, wrong code")
	t.Logf("axe found %d failing nodes", total)
}

// focusState is what the keyboard test learns of the focused element.
type focusState struct {
	Tag, ID, Name, Href, Type, Text string
	Ring, InView                    bool
}

// readFocus describes document.activeElement: whether it shows a focus
// ring (an outline or a box shadow) and lies wholly within the viewport.
const readFocus = `(() => {
	const e = document.activeElement;
	if (!e || e === document.body) return {Tag: "body"};
	const s = getComputedStyle(e), r = e.getBoundingClientRect();
	return {
		Tag: e.tagName.toLowerCase(), ID: e.id, Name: e.getAttribute("name") || "",
		Href: e.getAttribute("href") || "", Type: e.type || "", Text: e.textContent.trim().slice(0, 60),
		Ring: (s.outlineStyle !== "none" && parseFloat(s.outlineWidth) > 0) || s.boxShadow !== "none",
		InView: r.width > 0 && r.height > 0 && r.top >= 0 && r.left >= 0 && r.bottom <= innerHeight && r.right <= innerWidth,
	};
})()`

// headerOrder lists the header's links and buttons whose places on the
// screen do not follow the order Tab takes them in: each must stand to the
// right of the one before on its row, or on a lower row.
const headerOrder = `(() => {
	const out = [];
	const els = [...document.querySelectorAll(".bar a, .bar button")].filter(e => e.getClientRects().length);
	for (let i = 1; i < els.length; i++) {
		const a = els[i-1].getBoundingClientRect(), b = els[i].getBoundingClientRect();
		const sameRow = Math.abs((a.top + a.bottom) / 2 - (b.top + b.bottom) / 2) < a.height / 2;
		if (sameRow ? b.left < a.right : b.top < a.bottom - 1) out.push(els[i-1].textContent.trim() + " before " + els[i].textContent.trim());
	}
	return out;
})()`

// TestBrowserKeyboard walks the token page with the keyboard alone: Tab to
// the skip link, on to the New token link, to the name, a scope and the
// create button, then on the page that shows the secret to the copy
// button. Each element Tab reaches shows a focus ring and lies on screen.
// On a phone the header reads in the order Tab takes it.
func TestBrowserKeyboard(t *testing.T) {
	chromium := chromiumPath(t)
	ts := newTestServer(t)
	alice := ts.addUser("alice", true)
	for i := 1; i <= 30; i++ {
		ts.addToken(alice, fmt.Sprintf("token number %d", i), []string{scopeTokensRead}, 0)
	}
	hs := httptest.NewServer(ts.handler)
	defer hs.Close()
	ctx := browserTab(t, chromium, 2*time.Minute)

	if _, err := chromedp.RunResponse(ctx, chromedp.Navigate(hs.URL+"/login")); err != nil {
		t.Fatal(err)
	}
	resp, err := chromedp.RunResponse(ctx,
		chromedp.SendKeys(chromedp.CSS("#name"), "alice"),
		chromedp.SendKeys(chromedp.CSS("#password"), "password-of-alice"),
		chromedp.Click(chromedp.CSS(`form[action^="/login"] button[type=submit]`)),
	)
	if err != nil || resp.Status != http.StatusOK {
		t.Fatalf("sign in: %v", err)
	}

	for _, width := range []int64{390, 320} {
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(width, 800)); err != nil {
			t.Fatal(err)
		}
		if out, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](headerOrder)); err != nil || len(out) > 0 {
			t.Errorf("at %d px the header is out of Tab order (err %v): %q", width, err, out)
		}
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 800)); err != nil {
		t.Fatal(err)
	}

	focus := func() focusState {
		t.Helper()
		f, err := chromedp.Run(ctx, chromedp.Evaluate[focusState](readFocus))
		if err != nil {
			t.Fatalf("read the focus: %v", err)
		}
		return f
	}
	// press sends one key and returns what has the focus then, which must
	// be visibly focused unless it is a target that is not a control.
	press := func(key string) focusState {
		t.Helper()
		if err := chromedp.Do(ctx, chromedp.KeyEvent(key)); err != nil {
			t.Fatalf("press %q: %v", key, err)
		}
		f := focus()
		if f.Tag != "main" && f.Tag != "h2" && (!f.Ring || !f.InView) {
			t.Errorf("after %q the focus is on %+v: want it on screen with a focus ring", key, f)
		}
		return f
	}
	// tabTo presses Tab until the focus is on what is says is wanted.
	tabTo := func(what string, is func(focusState) bool) focusState {
		t.Helper()
		for range 20 {
			if f := press(kb.Tab); is(f) {
				return f
			}
		}
		t.Fatalf("20 Tabs did not reach %s; the focus is on %+v", what, focus())
		return focusState{}
	}

	if f := press(kb.Tab); f.Tag != "a" || f.Href != "#main" {
		t.Fatalf("the first Tab focuses %+v; want the skip link", f)
	}
	if f := press(kb.Enter); f.Tag != "main" {
		t.Fatalf("the skip link moved the focus to %+v; want the main content", f)
	}
	if f := press(kb.Tab); f.Tag != "a" || f.Href != "#new" {
		t.Fatalf("Tab from the main content focuses %+v; want the New token link", f)
	}
	press(kb.Enter)
	if f := press(kb.Tab); f.ID != "token-name" {
		t.Fatalf("Tab after the New token link focuses %+v; want the name field", f)
	}
	if err := chromedp.Do(ctx, chromedp.KeyEvent("keyboard only")); err != nil {
		t.Fatal(err)
	}
	if f := press(kb.Tab); f.Name != "scope" || f.Type != "checkbox" {
		t.Fatalf("Tab after the name focuses %+v; want the first scope", f)
	}
	press(" ")
	tabTo("the create button", func(f focusState) bool { return f.Tag == "button" && f.Text == "Create token" })
	resp, err = chromedp.RunResponse(ctx, chromedp.KeyEvent(kb.Enter))
	if err != nil || resp.Status != http.StatusOK || !strings.HasSuffix(resp.URL, "/secret") {
		t.Fatalf("Enter on the create button: %v; want the page of the secret", err)
	}
	tabTo("the copy button", func(f focusState) bool { return f.Tag == "button" && f.Text == "Copy" })
	press(kb.Enter)
	said, err := chromedp.Run(ctx, chromedp.Poll[string](`document.getElementById("copied").textContent`, chromedp.WithPollingTimeout(5*time.Second)))
	if err != nil || !strings.Contains(said, "Ctrl+C") && !strings.Contains(said, "clipboard") {
		t.Errorf("the copy button says %q (err %v); want that the token was copied, or how to copy it", said, err)
	}

	tokens, err := ts.store.TokensByOwner(alice.ID)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(tokens, func(t tokenRecord) bool { return t.Name == "keyboard only" })
	if len(tokens) != 31 || i < 0 || fmt.Sprint(tokens[i].Scopes) != "["+ts.scopes.all()[0].Name+"]" {
		t.Errorf("after the keyboard walk alice holds %d tokens (%d called keyboard only); want 31, one of them keyboard only with the first scope alone", len(tokens), i)
	}
}
