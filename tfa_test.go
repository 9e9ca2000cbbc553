package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base32"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// refTOTP is RFC 6238's TOTP with SHA-1 and six digits, written here from
// the RFCs (RFC 4226 §5.3) so that the tests do not check the code under
// test against itself.
func refTOTP(secret []byte, at time.Time) string {
	counter := uint64(at.Unix() / 30)
	msg := make([]byte, 8)
	for i := 7; i >= 0; i-- {
		msg[i] = byte(counter)
		counter >>= 8
	}
	mac := hmac.New(sha1.New, secret)
	mac.Write(msg)
	hs := mac.Sum(nil)
	offset := int(hs[19] & 0xf)
	bin := int(hs[offset]&0x7f)<<24 | int(hs[offset+1])<<16 | int(hs[offset+2])<<8 | int(hs[offset+3])
	return fmt.Sprintf("%06d", bin%1000000)
}

// TestTOTPVectors checks the reference against RFC 6238's appendix B
// (SHA-1, its eight digits cut to six), and the code under test against
// both.
func TestTOTPVectors(t *testing.T) {
	secret := []byte("12345678901234567890")
	for _, c := range []struct {
		unix int64
		want string
	}{{59, "287082"}, {1111111109, "081804"}, {1111111111, "050471"}, {1234567890, "005924"}, {2000000000, "279037"}, {20000000000, "353130"}} {
		at := time.Unix(c.unix, 0)
		if got := refTOTP(secret, at); got != c.want {
			t.Errorf("refTOTP(%d) = %s; want %s", c.unix, got, c.want)
		}
		if got := totpCode(secret, totpStep(at)); got != c.want {
			t.Errorf("totpCode at %d = %s; want %s", c.unix, got, c.want)
		}
	}
}

// tfaClient is a browser going through the second-factor pages: it keeps
// its cookies.
type tfaClient struct {
	ts      *testServer
	cookies map[string]string
}

func newTFAClient(ts *testServer) *tfaClient {
	return &tfaClient{ts: ts, cookies: map[string]string{}}
}

// do sends a page request with the client's cookies and keeps those the
// answer sets.
func (c *tfaClient) do(method, path string, form url.Values) *httptest.ResponseRecorder {
	c.ts.t.Helper()
	var parts []string
	for k, v := range c.cookies {
		parts = append(parts, k+"="+v)
	}
	req := pageReq{method: method, path: path, form: form}
	if len(parts) > 0 {
		req.header = map[string]string{"Cookie": strings.Join(parts, "; ")}
	}
	if method == http.MethodPost && form == nil {
		req.form = url.Values{}
	}
	w := c.ts.page(req)
	for _, ck := range w.Result().Cookies() {
		if ck.MaxAge < 0 || ck.Value == "" {
			delete(c.cookies, ck.Name)
		} else {
			c.cookies[ck.Name] = ck.Value
		}
	}
	return w
}

func (c *tfaClient) session() string { return c.cookies[sessionCookieName] }

// password posts the sign-in form.
func (c *tfaClient) password(name string) *httptest.ResponseRecorder {
	c.ts.t.Helper()
	return c.do("POST", "/login", url.Values{"name": {name}, "password": {"password-of-" + name}, "next": {"/account"}})
}

// verify posts the second step.
func (c *tfaClient) verify(code string) *httptest.ResponseRecorder {
	c.ts.t.Helper()
	return c.do("POST", "/login/verify", url.Values{"code": {code}})
}

var (
	totpSecretOnPage = regexp.MustCompile(`Secret: <code class="secret">([A-Z2-7 ]+)</code>`)
	codeOnPage       = regexp.MustCompile(`<li><code>([a-z2-7-]+)</code></li>`)
	enrolmentOnPage  = regexp.MustCompile(`name="enrolment" value="([A-Z2-7]+)"`)
)

// enrolTOTP signs name in (password only: they have no factor yet),
// enrols an authenticator app through the pages and returns the client,
// the TOTP secret and the recovery codes shown.
func enrolTOTP(t *testing.T, ts *testServer, name string) (*tfaClient, []byte, []string) {
	t.Helper()
	c := newTFAClient(ts)
	if w := c.password(name); w.Code != http.StatusSeeOther || c.session() == "" {
		t.Fatalf("POST /login as %s = %d, session %q; want 303 and a session", name, w.Code, c.session())
	}
	w := c.do("GET", "/account/totp", nil)
	body := checkPage(t, "GET /account/totp", w, http.StatusOK, "Scan this code")
	if !strings.Contains(body, "<svg") {
		t.Errorf("GET /account/totp shows no QR code")
	}
	m := totpSecretOnPage.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("GET /account/totp shows no secret:\n%s", body)
	}
	secret, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(strings.ReplaceAll(m[1], " ", ""))
	if err != nil || len(secret) < 16 {
		t.Fatalf("secret %q on the page: %v", m[1], err)
	}
	e := enrolmentOnPage.FindStringSubmatch(body)
	if e == nil {
		t.Fatalf("GET /account/totp has no enrolment field:\n%s", body)
	}
	if strings.Contains(e[1], strings.ReplaceAll(m[1], " ", "")) {
		t.Fatal("the enrolment field holds the secret in the clear")
	}
	// A wrong code enrols nothing, and shows the same secret again.
	wrong := fmt.Sprintf("%06d", (atoiOr(refTOTP(secret, ts.clock.Now()))+1)%1000000)
	w = c.do("POST", "/account/totp", url.Values{"code": {wrong}, "enrolment": {e[1]}})
	again := checkPage(t, "POST /account/totp with a wrong code", w, http.StatusBadRequest, "does not match", m[1])
	if f, _ := ts.store.SecondFactors(mustUser(t, ts, name).ID); f.TOTP {
		t.Fatal("a wrong code enrolled the app")
	}
	// Another session cannot use the enrolment.
	other := newTFAClient(ts)
	other.password(name)
	w = other.do("POST", "/account/totp", url.Values{"code": {refTOTP(secret, ts.clock.Now())}, "enrolment": {e[1]}})
	checkPage(t, "POST /account/totp with another session's enrolment", w, http.StatusBadRequest, "waited too long")
	if f, _ := ts.store.SecondFactors(mustUser(t, ts, name).ID); f.TOTP {
		t.Fatal("another session's enrolment enrolled the app")
	}
	e = enrolmentOnPage.FindStringSubmatch(again)
	if e == nil {
		t.Fatal("the page shown again has no enrolment field")
	}
	w = c.do("POST", "/account/totp", url.Values{"code": {refTOTP(secret, ts.clock.Now())}, "enrolment": {e[1]}})
	body = checkPage(t, "POST /account/totp", w, http.StatusOK, "Save these codes now")
	var codes []string
	for _, m := range codeOnPage.FindAllStringSubmatch(body, -1) {
		codes = append(codes, m[1])
	}
	if len(codes) != 10 {
		t.Fatalf("enrolment showed %d recovery codes; want 10:\n%s", len(codes), body)
	}
	for _, code := range codes {
		if raw := strings.ReplaceAll(code, "-", ""); len(raw) != 16 { // 16 base32 characters: 80 bits
			t.Errorf("recovery code %q has %d characters; want 16", code, len(raw))
		}
	}
	f, err := ts.store.SecondFactors(mustUser(t, ts, name).ID)
	if err != nil || !f.TOTP || f.RecoveryLeft != 10 {
		t.Fatalf("after enrolment the store holds %+v, %v; want TOTP and 10 codes", f, err)
	}
	return c, secret, codes
}

func atoiOr(s string) int {
	n := 0
	fmt.Sscanf(s, "%d", &n)
	return n
}

func mustUser(t *testing.T, ts *testServer, name string) userRecord {
	t.Helper()
	u, err := ts.store.UserByName(name)
	if err != nil {
		t.Fatalf("UserByName(%s): %v", name, err)
	}
	return u
}

// checkPending asserts that w, the answer to a right password, started
// the second step and no session.
func checkSecondStep(t *testing.T, what string, c *tfaClient, w *httptest.ResponseRecorder) {
	t.Helper()
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/login/verify" {
		t.Fatalf("%s = %d to %q; want 303 to /login/verify", what, w.Code, w.Header().Get("Location"))
	}
	if responseCookie(w, sessionCookieName) != nil {
		t.Fatalf("%s set a session cookie before the second factor", what)
	}
}

// checkSignedIn asserts that w, the answer to the second step, started a
// session and went on to /account.
func checkVerified(t *testing.T, what string, c *tfaClient, w *httptest.ResponseRecorder) {
	t.Helper()
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/account" || c.session() == "" {
		t.Fatalf("%s = %d to %q, session %q; want 303 to /account with a session; body: %s", what, w.Code, w.Header().Get("Location"), c.session(), w.Body)
	}
}

// checkRefused asserts that the second step refused a code and started
// no session.
func checkCodeRefused(t *testing.T, what string, c *tfaClient, w *httptest.ResponseRecorder) {
	t.Helper()
	checkPage(t, what, w, http.StatusUnauthorized, "That code is not right")
	if c.session() != "" {
		t.Fatalf("%s started a session", what)
	}
}

// TestTOTPSignIn enrols an app and signs in with its codes, computed by
// refTOTP: the enrolment's own code is not accepted again, a code is
// accepted once, one step of drift either way passes and two do not, and
// the second step expires.
func TestTOTPSignIn(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", false)
	_, secret, _ := enrolTOTP(t, ts, "alice")
	enrolledAt := ts.clock.Now()

	c := newTFAClient(ts)
	checkSecondStep(t, "POST /login", c, c.password("alice"))
	checkPage(t, "GET /login/verify", c.do("GET", "/login/verify", nil), http.StatusOK, "Second step", "alice")
	checkCodeRefused(t, "the enrolment's code again", c, c.verify(refTOTP(secret, enrolledAt)))

	ts.clock.Add(10 * time.Minute)
	c = newTFAClient(ts)
	checkSecondStep(t, "POST /login", c, c.password("alice"))
	now := ts.clock.Now()
	checkCodeRefused(t, "a code two steps old", c, c.verify(refTOTP(secret, now.Add(-60*time.Second))))
	checkCodeRefused(t, "a code two steps ahead", c, c.verify(refTOTP(secret, now.Add(60*time.Second))))
	checkCodeRefused(t, "no code at all but letters", c, c.verify("abcdef"))
	code := refTOTP(secret, now.Add(-30*time.Second))
	checkVerified(t, "a code one step old", c, c.verify(code))
	checkPage(t, "GET /account after the second step", c.do("GET", "/account", nil), http.StatusOK, "Signed in as alice")

	again := newTFAClient(ts)
	checkSecondStep(t, "POST /login", again, again.password("alice"))
	checkCodeRefused(t, "the same code again (replay)", again, again.verify(code))

	ts.clock.Add(10 * time.Minute)
	c = newTFAClient(ts)
	checkSecondStep(t, "POST /login", c, c.password("alice"))
	ahead := ts.clock.Now().Add(30 * time.Second)
	checkVerified(t, "a code one step ahead", c, c.verify(refTOTP(secret, ahead)))
	c = newTFAClient(ts)
	checkSecondStep(t, "POST /login", c, c.password("alice"))
	checkCodeRefused(t, "the current code after a later one was used", c, c.verify(refTOTP(secret, ts.clock.Now())))

	// The second step waits 5 minutes, no more.
	ts.clock.Add(10 * time.Minute)
	c = newTFAClient(ts)
	checkSecondStep(t, "POST /login", c, c.password("alice"))
	ts.clock.Add(5*time.Minute + time.Second)
	w := c.verify(refTOTP(secret, ts.clock.Now()))
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/login" || c.session() != "" {
		t.Errorf("the second step after 5 minutes = %d to %q; want 303 to /login and no session", w.Code, w.Header().Get("Location"))
	}
	// Without the pending cookie there is nothing to verify.
	stranger := newTFAClient(ts)
	if w := stranger.verify(refTOTP(secret, ts.clock.Now())); w.Code != http.StatusSeeOther || stranger.session() != "" {
		t.Errorf("POST /login/verify with no pending sign-in = %d, session %q; want 303 to /login", w.Code, stranger.session())
	}
	// A wrong password still says only that.
	w = ts.loginAttempt("alice", "not-her-password", "")
	checkPage(t, "a wrong password for a 2FA user", w, http.StatusUnauthorized, "Wrong user name or password")
}

// TestRecoveryCodeSignIn signs in with a recovery code, typed in another
// case and grouping, once, and sees how many are left.
func TestRecoveryCodeSignIn(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	_, _, codes := enrolTOTP(t, ts, "alice")

	c := newTFAClient(ts)
	checkSecondStep(t, "POST /login", c, c.password("alice"))
	typed := strings.ToUpper(strings.ReplaceAll(codes[3], "-", " "))
	checkVerified(t, "a recovery code", c, c.verify(typed))
	checkPage(t, "GET /account after a recovery code", c.do("GET", "/account", nil), http.StatusOK, "9 codes left", "9 left")
	if f, _ := ts.store.SecondFactors(alice.ID); f.RecoveryLeft != 9 {
		t.Errorf("after one use %d codes left; want 9", f.RecoveryLeft)
	}

	c = newTFAClient(ts)
	checkSecondStep(t, "POST /login", c, c.password("alice"))
	checkCodeRefused(t, "a recovery code used twice", c, c.verify(codes[3]))
	checkVerified(t, "another recovery code", c, c.verify(codes[4]))
	if f, _ := ts.store.SecondFactors(alice.ID); f.RecoveryLeft != 8 {
		t.Errorf("after two uses %d codes left; want 8", f.RecoveryLeft)
	}
}

// TestBasicRefusedForSecondFactor: HTTP Basic creates no token for a user
// with a second factor, and says why, only once the password is right.
func TestBasicRefusedForSecondFactor(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	enrolTOTP(t, ts, "alice")
	body := `{"name":"ci","scopes":["tokens:read"],"expires_at":null}`
	w := ts.do(request{method: "POST", path: "/api/v1/tokens", body: body,
		header: map[string]string{"Authorization": basicAuth("alice", "password-of-alice")}})
	p := checkProblem(t, "POST /api/v1/tokens with Basic for a 2FA user", w, http.StatusForbidden)
	if want := "this account uses a second factor: create the token in the page, or with an existing token"; p.Detail != want {
		t.Errorf("detail = %q; want %q", p.Detail, want)
	}
	if p.Type != "about:blank" {
		t.Errorf("type = %q; want about:blank", p.Type)
	}
	if tokens, _ := ts.store.TokensByOwner(alice.ID); len(tokens) != 0 {
		t.Errorf("Basic made %d tokens for a 2FA user", len(tokens))
	}
	w = ts.do(request{method: "POST", path: "/api/v1/tokens", body: body,
		header: map[string]string{"Authorization": basicAuth("alice", "wrong-password")}})
	p = checkProblem(t, "POST /api/v1/tokens with a wrong password", w, http.StatusUnauthorized)
	if strings.Contains(p.Detail, "second factor") {
		t.Errorf("a wrong password learns that the account has a second factor: %q", p.Detail)
	}
	// Bob, without one, still may.
	ts.addUser("bob", false)
	w = ts.do(request{method: "POST", path: "/api/v1/tokens", body: body,
		header: map[string]string{"Authorization": basicAuth("bob", "password-of-bob")}})
	if w.Code != http.StatusCreated {
		t.Errorf("Basic for a user without a second factor = %d; want 201", w.Code)
	}
}

// TestRequire2FA: under -require-2fa a user without a second factor signs
// in, is sent to enrol before the token page, and gets there once
// enrolled.
func TestRequire2FA(t *testing.T) {
	ts := newTestServer(t)
	ts.server.cfg.Require2FA = true
	alice := ts.addUser("alice", false)
	cookie := ts.login("alice")
	w := ts.page(pageReq{method: "GET", path: "/", cookie: cookie})
	if w.Code != http.StatusSeeOther || w.Header().Get("Location") != "/account" {
		t.Fatalf("GET / without a second factor = %d to %q; want 303 to /account", w.Code, w.Header().Get("Location"))
	}
	checkPage(t, "GET /account", ts.page(pageReq{method: "GET", path: "/account", cookie: cookie}), http.StatusOK, "This server requires a second factor")
	w = ts.do(request{method: "POST", path: "/api/v1/tokens", body: `{"name":"x","scopes":["tokens:read"],"expires_at":null}`,
		header: map[string]string{"Cookie": sessionCookieName + "=" + cookie, "Origin": "http://example.com", "Sec-Fetch-Site": "same-origin"}})
	checkProblem(t, "POST /api/v1/tokens by a session that must enrol", w, http.StatusForbidden)
	if tokens, _ := ts.store.TokensByOwner(alice.ID); len(tokens) != 0 {
		t.Errorf("a session that must enrol made %d tokens", len(tokens))
	}

	c, _, _ := enrolTOTP(t, ts, "alice")
	checkPage(t, "GET / once enrolled", c.do("GET", "/", nil), http.StatusOK)
}

// TestResetSecondFactors: an admin's reset removes the factors and ends
// the user's sessions; the password then signs in alone. So does the
// command line's.
func TestResetSecondFactors(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("root", true)
	alice := ts.addUser("alice", false)
	c, _, _ := enrolTOTP(t, ts, "alice")
	admin := ts.login("root")

	w := ts.page(pageReq{method: "POST", path: fmt.Sprintf("/admin/users/%d/reset-2fa", alice.ID), cookie: admin, form: url.Values{}})
	if w.Code != http.StatusSeeOther {
		t.Fatalf("POST reset-2fa = %d; want 303; body: %s", w.Code, w.Body)
	}
	if f, _ := ts.store.SecondFactors(alice.ID); f.any() || f.RecoveryLeft != 0 {
		t.Errorf("after the reset alice holds %+v", f)
	}
	if list, _ := ts.store.SessionsOf(alice.ID); len(list) != 0 {
		t.Errorf("after the reset alice holds %d sessions", len(list))
	}
	if w := c.do("GET", "/account", nil); w.Code != http.StatusSeeOther || !strings.HasPrefix(w.Header().Get("Location"), "/login") {
		t.Errorf("alice's old session after the reset = %d to %q; want the sign-in page", w.Code, w.Header().Get("Location"))
	}
	ts.login("alice") // the password alone again

	// The API.
	enrolTOTP(t, ts, "alice")
	_, adminToken := ts.addToken(mustUser(t, ts, "root"), "ops", []string{scopeAdmin}, 0)
	live, _ := ts.store.SessionsOf(alice.ID)
	if len(live) == 0 {
		t.Fatal("alice holds no session before the API's reset")
	}
	w = ts.do(request{method: "DELETE", path: fmt.Sprintf("/api/v1/users/%d/second-factors", alice.ID), token: adminToken})
	if want := fmt.Sprintf(`"sessions_ended":%d`, len(live)); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), want) {
		t.Errorf("DELETE second-factors = %d %s; want 200 with %s", w.Code, w.Body, want)
	}
	if f, _ := ts.store.SecondFactors(alice.ID); f.any() {
		t.Errorf("after the API's reset alice holds %+v", f)
	}
	w = ts.do(request{method: "DELETE", path: "/api/v1/users/999/second-factors", token: adminToken})
	checkProblem(t, "DELETE second-factors of nobody", w, http.StatusNotFound)

	// The command line.
	enrolTOTP(t, ts, "alice")
	ts.store.Close()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"user", "reset-2fa", "-db", ts.dbPath, "alice"}, strings.NewReader(""), &out, &errOut); err != nil {
		t.Fatalf("tokend user reset-2fa alice: %v; stderr: %s", err, errOut.String())
	}
	if err := run(context.Background(), []string{"user", "reset-2fa", "-db", ts.dbPath, "nobody"}, strings.NewReader(""), &out, &errOut); err == nil || !strings.Contains(err.Error(), "nobody") {
		t.Errorf("tokend user reset-2fa nobody = %v; want an error naming nobody", err)
	}
	st := ts.reopenStore(t, bolt.Options{Timeout: time.Second})
	if f, _ := st.SecondFactors(alice.ID); f.any() {
		t.Errorf("after tokend user reset-2fa alice holds %+v", f)
	}
	if !strings.Contains(out.String(), "alice") {
		t.Errorf("tokend user reset-2fa said %q; want it to name alice", out.String())
	}
}

// TestSecondFactorThrottled: wrong codes fill the account's bucket, and
// then even the right code waits.
func TestSecondFactorThrottled(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	_, secret, _ := enrolTOTP(t, ts, "alice")
	ts.clock.Add(time.Hour)
	before, _ := ts.store.SessionsOf(alice.ID)
	c := newTFAClient(ts)
	checkSecondStep(t, "POST /login", c, c.password("alice"))
	var w *httptest.ResponseRecorder
	for i := range 40 {
		w = c.verify("000000")
		if w.Code == http.StatusTooManyRequests {
			break
		}
		if w.Code != http.StatusUnauthorized {
			t.Fatalf("wrong code %d = %d; want 401", i, w.Code)
		}
	}
	checkThrottled(t, "the second step after many wrong codes", w, 60)
	w = c.verify(refTOTP(secret, ts.clock.Now()))
	checkThrottled(t, "the right code while throttled", w, 60)
	if c.session() != "" {
		t.Error("a throttled second step started a session")
	}
	if list, _ := ts.store.SessionsOf(alice.ID); len(list) != len(before) {
		t.Errorf("alice holds %d sessions after the throttled second step; want the %d she held", len(list), len(before))
	}
}

// TestSudoAsksForSecondFactor: past the sudo window, a user with a second
// factor confirms a sensitive action with their password and a code.
func TestSudoAsksForSecondFactor(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	c, secret, _ := enrolTOTP(t, ts, "alice")
	ts.clock.Add(2 * time.Hour)
	checkPage(t, "GET /account past the sudo window", c.do("GET", "/account", nil), http.StatusOK)
	if body := c.do("GET", "/account", nil).Body.String(); !strings.Contains(body, `name="sudo_code"`) {
		t.Error("the account page asks for no code in sudo mode")
	}
	w := c.do("POST", "/account/recovery-codes", url.Values{"sudo_password": {"password-of-alice"}})
	checkPage(t, "new recovery codes with the password alone", w, http.StatusForbidden, "authenticator app")
	w = c.do("POST", "/account/recovery-codes", url.Values{"sudo_password": {"password-of-alice"}, "sudo_code": {"123456"}})
	if w.Code == http.StatusOK {
		t.Fatal("a wrong code opened sudo mode")
	}
	w = c.do("POST", "/account/recovery-codes", url.Values{"sudo_password": {"password-of-alice"}, "sudo_code": {refTOTP(secret, ts.clock.Now())}})
	checkPage(t, "new recovery codes with password and code", w, http.StatusOK, "Save these codes now", "old recovery codes no longer work")
	if f, _ := ts.store.SecondFactors(alice.ID); f.RecoveryLeft != 10 {
		t.Errorf("after regeneration %d codes; want 10", f.RecoveryLeft)
	}
}

// TestSecondFactorSecretsStayOut: no TOTP secret or recovery code reaches
// the database file or the log; the key file is the owner's alone.
func TestSecondFactorSecretsStayOut(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", false)
	_, secret, codes := enrolTOTP(t, ts, "alice")
	c := newTFAClient(ts)
	checkSecondStep(t, "POST /login", c, c.password("alice"))
	checkVerified(t, "a recovery code", c, c.verify(codes[0]))
	ts.clock.Add(time.Hour)
	c = newTFAClient(ts)
	checkSecondStep(t, "POST /login", c, c.password("alice"))
	checkVerified(t, "a TOTP code", c, c.verify(refTOTP(secret, ts.clock.Now())))

	ts.store.Close()
	db, err := os.ReadFile(ts.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	enc := base32.StdEncoding.WithPadding(base32.NoPadding)
	needles := map[string][]byte{"the raw secret": secret, "the base32 secret": []byte(enc.EncodeToString(secret))}
	for i, code := range codes {
		needles[fmt.Sprintf("recovery code %d", i)] = []byte(code)
		needles[fmt.Sprintf("recovery code %d, raw", i)] = []byte(strings.ToUpper(strings.ReplaceAll(code, "-", "")))
	}
	logs := ts.logs.String()
	for what, needle := range needles {
		if bytes.Contains(db, needle) {
			t.Errorf("the database file holds %s", what)
		}
		if strings.Contains(logs, string(needle)) {
			t.Errorf("the log holds %s", what)
		}
	}
	fi, err := os.Stat(ts.dbPath + ".key")
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Errorf("key file: %v, %v; want 32 bytes, mode 0600", fi, err)
	}
}

// auditKindsOf returns the kinds of user's events, oldest first.
func auditKindsOf(t *testing.T, st store, user uint64) []string {
	t.Helper()
	evs, err := st.AuditEvents(auditQuery{User: user, Oldest: true, Limit: 100})
	if err != nil {
		t.Fatalf("AuditEvents: %v", err)
	}
	var kinds []string
	for _, e := range evs {
		kinds = append(kinds, e.Kind+"/"+e.Outcome)
	}
	return kinds
}

// TestSecondFactorEvents: enrolment, a refused code, a recovery code, new
// codes and the admin's reset are in the security log, about the user.
func TestSecondFactorEvents(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("root", true)
	alice := ts.addUser("alice", false)
	c, _, codes := enrolTOTP(t, ts, "alice")
	c.do("POST", "/account/recovery-codes", url.Values{})
	v := newTFAClient(ts)
	checkSecondStep(t, "POST /login", v, v.password("alice"))
	checkCodeRefused(t, "a wrong code", v, v.verify("000000"))
	checkCodeRefused(t, "an old recovery code", v, v.verify(codes[0]))
	admin := ts.login("root")
	ts.page(pageReq{method: "POST", path: fmt.Sprintf("/admin/users/%d/reset-2fa", alice.ID), cookie: admin, form: url.Values{}})
	got := strings.Join(auditKindsOf(t, ts.store, alice.ID), " ")
	for _, want := range []string{"tfa.enrolled/ok", "recovery.regenerated/ok", "signin.second_factor_failed/failed", "tfa.reset/ok"} {
		if !strings.Contains(got, want) {
			t.Errorf("alice's events %q lack %s", got, want)
		}
	}
	if strings.Contains(got, "recovery.used") {
		t.Errorf("alice's events %q hold a recovery code used, but none was", got)
	}
}

// TestKeyFile: with bbolt the key file defaults to the database's path
// with .key appended, made (0600, 32 bytes) when first needed and read
// again later; a sealed secret opens only for its user and under its key;
// a bad file stops the start; PostgreSQL has no default and refuses TOTP
// with a message saying why.
func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	cfg := defaultConfig()
	cfg.DB = dir + "/tokend.db"
	keys, err := newTFAKeys(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(cfg.DB + ".key"); !os.IsNotExist(err) {
		t.Fatalf("the key file exists before it is needed: %v", err)
	}
	sealed, err := keys.sealTOTP(7, []byte("12345678901234567890"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("12345678901234567890")) {
		t.Error("the sealed secret holds the secret")
	}
	fi, err := os.Stat(cfg.DB + ".key")
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Fatalf("key file after first use: %v, %v; want 32 bytes, 0600", fi, err)
	}
	again, err := newTFAKeys(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if secret, err := again.openTOTP(7, sealed); err != nil || string(secret) != "12345678901234567890" {
		t.Errorf("opening with the key file read again = %q, %v", secret, err)
	}
	if _, err := again.openTOTP(8, sealed); err == nil {
		t.Error("a sealed secret opened for another user")
	}

	other := cfg
	other.KeyFile = dir + "/other.key"
	otherKeys, err := newTFAKeys(other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := otherKeys.openTOTP(7, sealed); err == nil {
		t.Error("a sealed secret opened under another key file")
	}

	if err := os.WriteFile(dir+"/short.key", []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := cfg
	bad.KeyFile = dir + "/short.key"
	if _, err := newTFAKeys(bad); err == nil || !strings.Contains(err.Error(), "short.key") {
		t.Errorf("newTFAKeys with a 5-byte key file = %v; want an error naming it", err)
	}

	pg := defaultConfig()
	pg.DB = "postgres://tokend@db.example/tokend"
	pgKeys, err := newTFAKeys(pg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pgKeys.sealTOTP(7, []byte("x")); err != errNoKeyFile {
		t.Errorf("sealing on PostgreSQL without a key file = %v; want errNoKeyFile", err)
	}
	pg.KeyFile = dir + "/missing.key"
	if _, err := newTFAKeys(pg); err == nil || !strings.Contains(err.Error(), "missing.key") {
		t.Errorf("PostgreSQL with a key file that does not exist = %v; want an error naming it (each instance must share one)", err)
	}
}
