package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
)

// softAuthenticator is a passkey authenticator written from the WebAuthn
// specification (§6.1 authenticator data, §6.5.4 "none" attestation, COSE
// ES256 keys), independent of the library under test: it answers the
// options a ceremony's first request returns, as a browser would pass
// them on.
type softAuthenticator struct {
	t      *testing.T
	origin string
	key    *ecdsa.PrivateKey
	credID []byte
	user   []byte // the user handle it was made for
	count  uint32
}

func newSoftAuthenticator(t *testing.T, origin string) *softAuthenticator {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := make([]byte, 16)
	rand.Read(id)
	return &softAuthenticator{t: t, origin: origin, key: key, credID: id}
}

var b64u = base64.RawURLEncoding

// authData is the authenticator data for rpID with flags, and attested
// credential data when attested is set.
func (a *softAuthenticator) authData(rpID string, flags byte, attested bool) []byte {
	rpHash := sha256.Sum256([]byte(rpID))
	a.count++
	d := append(rpHash[:], flags)
	d = binary.BigEndian.AppendUint32(d, a.count)
	if attested {
		d = append(d, make([]byte, 16)...) // AAGUID
		d = binary.BigEndian.AppendUint16(d, uint16(len(a.credID)))
		d = append(d, a.credID...)
		x, y := a.key.X.FillBytes(make([]byte, 32)), a.key.Y.FillBytes(make([]byte, 32))
		cose, err := cbor.Marshal(map[int]any{1: 2, 3: -7, -1: 1, -2: x, -3: y})
		if err != nil {
			a.t.Fatal(err)
		}
		d = append(d, cose...)
	}
	return d
}

const (
	flagUP = 0x01
	flagUV = 0x04
	flagAT = 0x40
)

// options reads the challenge and relying party of a ceremony's options.
func (a *softAuthenticator) options(body []byte) (challenge, rpID string, userID []byte) {
	var o struct {
		PublicKey struct {
			Challenge string `json:"challenge"`
			RPID      string `json:"rpId"`
			RP        struct {
				ID string `json:"id"`
			} `json:"rp"`
			User struct {
				ID string `json:"id"`
			} `json:"user"`
		} `json:"publicKey"`
	}
	if err := json.Unmarshal(body, &o); err != nil {
		a.t.Fatalf("options %s: %v", body, err)
	}
	rpID = o.PublicKey.RPID
	if rpID == "" {
		rpID = o.PublicKey.RP.ID
	}
	if o.PublicKey.User.ID != "" {
		var err error
		if userID, err = b64u.DecodeString(o.PublicKey.User.ID); err != nil {
			a.t.Fatalf("user id %q: %v", o.PublicKey.User.ID, err)
		}
	}
	return o.PublicKey.Challenge, rpID, userID
}

func (a *softAuthenticator) clientData(typ, challenge string) []byte {
	b, _ := json.Marshal(map[string]any{"type": typ, "challenge": challenge, "origin": a.origin, "crossOrigin": false})
	return b
}

// create answers registration options with a new credential.
func (a *softAuthenticator) create(options []byte) string {
	challenge, rpID, user := a.options(options)
	a.user = user
	att, err := cbor.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": a.authData(rpID, flagUP|flagUV|flagAT, true)})
	if err != nil {
		a.t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{
		"id": b64u.EncodeToString(a.credID), "rawId": b64u.EncodeToString(a.credID), "type": "public-key",
		"clientExtensionResults": map[string]any{},
		"response": map[string]any{
			"clientDataJSON":    b64u.EncodeToString(a.clientData("webauthn.create", challenge)),
			"attestationObject": b64u.EncodeToString(att),
			"transports":        []string{"internal"},
		},
	})
	return string(b)
}

// get answers assertion options with a signature by the credential.
func (a *softAuthenticator) get(options []byte) string {
	challenge, rpID, _ := a.options(options)
	cd := a.clientData("webauthn.get", challenge)
	ad := a.authData(rpID, flagUP|flagUV, false)
	h := sha256.Sum256(cd)
	digest := sha256.Sum256(append(append([]byte{}, ad...), h[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, a.key, digest[:])
	if err != nil {
		a.t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]any{
		"id": b64u.EncodeToString(a.credID), "rawId": b64u.EncodeToString(a.credID), "type": "public-key",
		"clientExtensionResults": map[string]any{},
		"response": map[string]any{
			"clientDataJSON":    b64u.EncodeToString(cd),
			"authenticatorData": b64u.EncodeToString(ad),
			"signature":         b64u.EncodeToString(sig),
			"userHandle":        b64u.EncodeToString(a.user),
		},
	})
	return string(b)
}

// passkeyBrowser is a browser's cookies on tokend's pages: the session and
// the ceremony under way.
type passkeyBrowser struct {
	ts      *testServer
	session string
	passkey string
}

func (b *passkeyBrowser) cookies() string {
	var c []string
	if b.session != "" {
		c = append(c, sessionCookieName+"="+b.session)
	}
	if b.passkey != "" {
		c = append(c, passkeyCookieName+"="+b.passkey)
	}
	return strings.Join(c, "; ")
}

// send posts form to path with the browser's cookies, and keeps the
// cookies the answer sets.
func (b *passkeyBrowser) send(path string, form url.Values) *httptest.ResponseRecorder {
	b.ts.t.Helper()
	w := b.ts.page(pageReq{method: "POST", path: path, form: form, noFormKey: true, header: map[string]string{"Cookie": b.cookies()}})
	if c := responseCookie(w, passkeyCookieName); c != nil {
		b.passkey = c.Value
		if c.MaxAge < 0 {
			b.passkey = ""
		}
	}
	if c := responseCookie(w, sessionCookieName); c != nil {
		b.session = c.Value
	}
	return w
}

// begin asks for a ceremony's options and checks they came.
func (b *passkeyBrowser) begin(what, path string, form url.Values) []byte {
	b.ts.t.Helper()
	w := b.send(path, form)
	if w.Code != http.StatusOK || b.passkey == "" {
		b.ts.t.Fatalf("%s: POST %s = %d, ceremony cookie %q; want 200 with one; body: %s", what, path, w.Code, b.passkey, w.Body)
	}
	return w.Body.Bytes()
}

// addPasskey adds a passkey named name for the signed-in browser b, as
// the account page does.
func (b *passkeyBrowser) addPasskey(a *softAuthenticator, name string) *httptest.ResponseRecorder {
	b.ts.t.Helper()
	options := b.begin("register "+name, "/passkey/register-options", url.Values{"name": {name}})
	return b.send("/account/passkeys", url.Values{"credential": {a.create(options)}})
}

// TestPasskeyRegisterAndSignIn adds a passkey through the account page's
// requests, signs in with it alone, and checks that each answer works
// once: a replay, an answer to another kind of ceremony and an answer
// after the ceremony's time are refused and start no session.
func TestPasskeyRegisterAndSignIn(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	a := newSoftAuthenticator(t, "http://example.com")
	b := &passkeyBrowser{ts: ts, session: ts.login("alice")}

	w := b.addPasskey(a, "  laptop ")
	checkPage(t, "the first passkey", w, http.StatusOK, "Passkey laptop added", "Save these codes now")
	keys, err := ts.store.PasskeysOf(alice.ID)
	if err != nil || len(keys) != 1 || keys[0].Name != "laptop" || string(keys[0].CredentialID) != string(a.credID) {
		t.Fatalf("after adding a passkey: %+v (err %v); want one named laptop with the authenticator's id", keys, err)
	}
	if f, _ := ts.store.SecondFactors(alice.ID); f.Passkeys != 1 || f.RecoveryLeft != recoveryCodeCount {
		t.Fatalf("second factors after the first passkey = %+v; want 1 passkey and %d recovery codes", f, recoveryCodeCount)
	}
	if b.passkey != "" {
		t.Errorf("the ceremony cookie outlived its ceremony")
	}
	w = b.ts.page(pageReq{method: "GET", path: "/account", cookie: b.session})
	checkPage(t, "the account page", w, http.StatusOK, "Passkeys", "laptop", "never used")

	// Signed out, the passkey alone signs in.
	out := &passkeyBrowser{ts: ts}
	options := out.begin("passkey sign-in", "/passkey/signin-options", nil)
	answer := a.get(options)
	ceremony := out.passkey
	w = out.send("/login/passkey", url.Values{"credential": {answer}, "next": {"/account"}})
	checkRedirect(t, "sign in with the passkey", w, "/account")
	if out.session == "" {
		t.Fatalf("signing in with the passkey set no session cookie")
	}
	sessions, _ := ts.store.SessionsOf(alice.ID)
	if len(sessions) != 2 {
		t.Fatalf("after signing in with the passkey alice has %d sessions; want 2", len(sessions))
	}
	if keys, _ := ts.store.PasskeysOf(alice.ID); keys[0].LastUsedAt.IsZero() {
		t.Errorf("the passkey used to sign in is not marked used")
	}

	// The same answer, with the same ceremony cookie, again: refused.
	replay := &passkeyBrowser{ts: ts, passkey: ceremony}
	w = replay.send("/login/passkey", url.Values{"credential": {answer}})
	checkPage(t, "the sign-in answer replayed", w, http.StatusBadRequest, "expired or was used already")
	if sessions, _ := ts.store.SessionsOf(alice.ID); len(sessions) != 2 || replay.session != "" {
		t.Fatalf("a replayed answer made a session: %d sessions; want 2", len(sessions))
	}

	// An answer to a ceremony of another kind: refused, and the ceremony
	// is spent.
	b2 := &passkeyBrowser{ts: ts, session: b.session}
	options = b2.begin("sudo options", "/passkey/sudo-options", nil)
	w = b2.send("/login/passkey", url.Values{"credential": {a.get(options)}})
	checkPage(t, "a sudo answer sent to sign in", w, http.StatusBadRequest, "expired or was used already")

	// An answer after the ceremony's time: refused.
	late := &passkeyBrowser{ts: ts}
	options = late.begin("passkey sign-in", "/passkey/signin-options", nil)
	ts.clock.Add(passkeyCeremonyWait)
	w = late.send("/login/passkey", url.Values{"credential": {a.get(options)}})
	checkPage(t, "an answer after five minutes", w, http.StatusBadRequest, "expired or was used already")
	if late.session != "" {
		t.Errorf("a late answer made a session")
	}

	// A signature by another key: refused, and logged with its reason.
	forger := newSoftAuthenticator(t, "http://example.com")
	forger.credID, forger.user = a.credID, a.user
	bad := &passkeyBrowser{ts: ts}
	options = bad.begin("passkey sign-in", "/passkey/signin-options", nil)
	w = bad.send("/login/passkey", url.Values{"credential": {forger.get(options)}})
	checkPage(t, "a forged signature", w, http.StatusBadRequest, "was not accepted")
	if bad.session != "" || !strings.Contains(ts.logs.String(), "passkey refused") {
		t.Errorf("a forged signature: session %q; logs:\n%s", bad.session, ts.logs)
	}

	// Without JavaScript the form carries no answer: it says so.
	w = (&passkeyBrowser{ts: ts}).send("/login/passkey", url.Values{"next": {"/"}})
	checkPage(t, "the passkey form without an answer", w, http.StatusBadRequest, "need JavaScript")
	if sessions, _ := ts.store.SessionsOf(alice.ID); len(sessions) != 2 {
		t.Errorf("after the refused answers alice has %d sessions; want 2", len(sessions))
	}
}

// TestPasskeyOriginChecked checks that an answer made for another origin
// (a phishing site's) is refused.
func TestPasskeyOriginChecked(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	a := newSoftAuthenticator(t, "http://example.com")
	b := &passkeyBrowser{ts: ts, session: ts.login("alice")}
	b.addPasskey(a, "laptop")

	a.origin = "http://examp1e.com"
	out := &passkeyBrowser{ts: ts}
	options := out.begin("passkey sign-in", "/passkey/signin-options", nil)
	w := out.send("/login/passkey", url.Values{"credential": {a.get(options)}})
	checkPage(t, "an answer for another origin", w, http.StatusBadRequest, "was not accepted")
	if sessions, _ := ts.store.SessionsOf(alice.ID); len(sessions) != 1 || out.session != "" {
		t.Errorf("an answer for another origin signed in: %d sessions", len(sessions))
	}

	// At an IP address there is no relying party: a clear 400.
	w = ts.page(pageReq{method: "POST", path: "http://127.0.0.1:8080/passkey/signin-options"})
	var p problem
	decode(t, w, &p)
	if w.Code != http.StatusBadRequest || !strings.Contains(p.Detail, "open tokend at a host name") || responseCookie(w, passkeyCookieName) != nil {
		t.Errorf("passkey options at an IP address = %d %q; want 400 naming the way out, and no ceremony", w.Code, p.Detail)
	}

	// With -public-url, its origin is the one accepted, whatever Host the
	// request names.
	ts.cfg.PublicURL = "https://tokens.example.com"
	a.origin = "https://tokens.example.com"
	options = out.begin("passkey sign-in", "/passkey/signin-options", nil)
	if _, rpID, _ := a.options(options); rpID != "tokens.example.com" {
		t.Fatalf("with -public-url the relying party is %q; want tokens.example.com", rpID)
	}
}

// TestPasskeyAccountForms checks adding (names, sudo), renaming and
// removing passkeys through the account page, and sudo mode with one.
func TestPasskeyAccountForms(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	bob := ts.addUser("bob", false)
	laptop, phone := newSoftAuthenticator(t, "http://example.com"), newSoftAuthenticator(t, "http://example.com")
	b := &passkeyBrowser{ts: ts, session: ts.login("alice")}
	b.addPasskey(laptop, "laptop")

	// A second passkey comes without recovery codes.
	w := b.addPasskey(phone, "phone")
	checkRedirect(t, "a second passkey", w, "/account")
	if f, _ := ts.store.SecondFactors(alice.ID); f.Passkeys != 2 {
		t.Fatalf("alice holds %d passkeys; want 2", f.Passkeys)
	}

	// Names: empty, taken (ignoring case), too long, control characters.
	for name, want := range map[string]string{
		"":                      "Give the passkey a name",
		"LAPTOP":                "of that name already",
		strings.Repeat("x", 65): "at most 64 characters",
		"bad\x01name":           "control characters",
	} {
		w := b.send("/passkey/register-options", url.Values{"name": {name}})
		var p problem
		decode(t, w, &p)
		if w.Code/100 != 4 || !strings.Contains(p.Detail, want) || b.passkey != "" {
			t.Errorf("register options named %q = %d %q, ceremony %q; want 4xx saying %q and no ceremony", name, w.Code, p.Detail, b.passkey, want)
		}
	}

	// The same authenticator twice: refused.
	again := newSoftAuthenticator(t, "http://example.com")
	again.credID, again.key = laptop.credID, laptop.key
	w = b.addPasskey(again, "laptop again")
	checkPage(t, "a passkey registered already", w, http.StatusConflict, "registered already")

	// Rename, and a name taken.
	keys, _ := ts.store.PasskeysOf(alice.ID)
	w = b.send("/account/passkeys/"+itoa(keys[1].ID)+"/rename", url.Values{"name": {"work phone"}})
	checkRedirect(t, "rename", w, "/account")
	w = b.send("/account/passkeys/"+itoa(keys[1].ID)+"/rename", url.Values{"name": {"Laptop"}})
	checkPage(t, "rename to a name taken", w, http.StatusConflict, "of that name already")
	if keys, _ := ts.store.PasskeysOf(alice.ID); keys[1].Name != "work phone" {
		t.Errorf("after renaming, the passkey is named %q; want work phone", keys[1].Name)
	}

	// Another user's passkey is not found.
	bobs := &passkeyBrowser{ts: ts, session: ts.login("bob")}
	w = bobs.send("/account/passkeys/"+itoa(keys[0].ID)+"/remove", url.Values{})
	checkPage(t, "remove another user's passkey", w, http.StatusNotFound)
	w = bobs.send("/account/passkeys/"+itoa(keys[0].ID)+"/rename", url.Values{"name": {"mine"}})
	checkPage(t, "rename another user's passkey", w, http.StatusNotFound)
	if keys, _ := ts.store.PasskeysOf(alice.ID); len(keys) != 2 || keys[0].Name != "laptop" {
		t.Errorf("bob's forms changed alice's passkeys: %+v", keys)
	}
	_ = bob

	// Past the sudo window, removing asks to confirm; a passkey does.
	ts.clock.Add(sudoWindow + 1)
	w = b.send("/account/passkeys/"+itoa(keys[0].ID)+"/remove", url.Values{})
	checkPage(t, "remove past the sudo window", w, http.StatusForbidden, "confirm it is you")
	w = b.ts.page(pageReq{method: "GET", path: "/account", cookie: b.session})
	checkPage(t, "the account page past the sudo window", w, http.StatusOK, "Confirm with a passkey instead")
	options := b.begin("sudo", "/passkey/sudo-options", nil)
	other := &passkeyBrowser{ts: ts, session: bobs.session, passkey: b.passkey}
	w = other.send("/passkey/sudo", url.Values{"credential": {laptop.get(options)}})
	if w.Code != http.StatusBadRequest {
		t.Errorf("alice's sudo answer from bob's session = %d; want 400", w.Code)
	}
	options = b.begin("sudo", "/passkey/sudo-options", nil)
	w = b.send("/passkey/sudo", url.Values{"credential": {laptop.get(options)}})
	if w.Code != http.StatusNoContent {
		t.Fatalf("POST /passkey/sudo = %d; want 204; body: %s", w.Code, w.Body)
	}
	w = b.send("/account/passkeys/"+itoa(keys[0].ID)+"/remove", url.Values{})
	checkRedirect(t, "remove after sudo with a passkey", w, "/account")
	if keys, _ := ts.store.PasskeysOf(alice.ID); len(keys) != 1 || keys[0].Name != "work phone" {
		t.Errorf("after removing laptop alice holds %+v; want work phone alone", keys)
	}
	kinds := strings.Join(auditKindsOf(t, ts.server.store, alice.ID), " ")
	if strings.Count(kinds, kindPasskeyAdded+"/") != 2 || strings.Count(kinds, kindPasskeyRemoved+"/") != 1 {
		t.Errorf("alice's security log holds %s; want two %s and one %s", kinds, kindPasskeyAdded, kindPasskeyRemoved)
	}
}

// TestPasskeySecondStep checks the second step of signing in with a
// passkey: the password leads to it, the passkey of another user does
// not finish it, the user's own does.
func TestPasskeySecondStep(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	ts.addUser("bob", false)
	a, bobs := newSoftAuthenticator(t, "http://example.com"), newSoftAuthenticator(t, "http://example.com")
	(&passkeyBrowser{ts: ts, session: ts.login("alice")}).addPasskey(a, "laptop")
	(&passkeyBrowser{ts: ts, session: ts.login("bob")}).addPasskey(bobs, "bob's")
	before, _ := ts.store.SessionsOf(alice.ID)

	w := ts.page(pageReq{method: "POST", path: "/login", form: url.Values{"name": {"alice"}, "password": {"password-of-alice"}, "next": {"/account"}}})
	checkRedirect(t, "the password of a user with a passkey", w, "/login/verify")
	pending := responseCookie(w, pendingCookieName)
	if pending == nil || responseCookie(w, sessionCookieName) != nil {
		t.Fatalf("the password alone set the session cookie, or no pending cookie")
	}
	send := func(path string, form url.Values, ceremony string) *httptest.ResponseRecorder {
		cookie := pendingCookieName + "=" + pending.Value
		if ceremony != "" {
			cookie += "; " + passkeyCookieName + "=" + ceremony
		}
		return ts.page(pageReq{method: "POST", path: path, form: form, noFormKey: true, header: map[string]string{"Cookie": cookie}})
	}
	w = ts.page(pageReq{method: "GET", path: "/login/verify", header: map[string]string{"Cookie": pendingCookieName + "=" + pending.Value}})
	checkPage(t, "the second step", w, http.StatusOK, "Use a passkey")

	begin := func() ([]byte, string) {
		w := send("/passkey/verify-options", url.Values{}, "")
		c := responseCookie(w, passkeyCookieName)
		if w.Code != http.StatusOK || c == nil {
			t.Fatalf("POST /passkey/verify-options = %d; want 200 with a ceremony; body %s", w.Code, w.Body)
		}
		return w.Body.Bytes(), c.Value
	}
	options, ceremony := begin()
	w = send("/login/verify/passkey", url.Values{"credential": {bobs.get(options)}}, ceremony)
	checkPage(t, "bob's passkey for alice's second step", w, http.StatusBadRequest, "was not accepted")
	if responseCookie(w, sessionCookieName) != nil {
		t.Fatalf("bob's passkey finished alice's sign-in")
	}
	if kinds := auditKindsOf(t, ts.server.store, alice.ID); !slices.Contains(kinds, kindSecondFactorFailed+"/"+outcomeFailed) {
		t.Errorf("after a refused passkey alice's security log holds %v; want %s/%s", kinds, kindSecondFactorFailed, outcomeFailed)
	}
	options, ceremony = begin()
	w = send("/login/verify/passkey", url.Values{"credential": {a.get(options)}}, ceremony)
	checkRedirect(t, "alice's passkey for her second step", w, "/account")
	if c := responseCookie(w, sessionCookieName); c == nil || c.Value == "" {
		t.Fatalf("the second step with the passkey set no session cookie")
	}
	if after, _ := ts.store.SessionsOf(alice.ID); len(after) != len(before)+1 {
		t.Errorf("alice has %d sessions after the second step; want %d", len(after), len(before)+1)
	}
}

// TestPasskeyAcrossInstances runs each ceremony's two requests on two
// servers over one PostgreSQL database, as a load balancer may send them:
// a ceremony begun on one finishes on the other, once.
func TestPasskeyAcrossInstances(t *testing.T) {
	dbURL := newTestPG(t)
	one, two := newTestPGServer(t, dbURL), newTestPGServer(t, dbURL)
	alice := one.addUser("alice", false)
	a := newSoftAuthenticator(t, "http://example.com")

	b := &passkeyBrowser{ts: one, session: one.login("alice")}
	options := b.begin("register on one", "/passkey/register-options", url.Values{"name": {"laptop"}})
	b.ts = two
	w := b.send("/account/passkeys", url.Values{"credential": {a.create(options)}})
	checkPage(t, "register finished on two", w, http.StatusOK, "Passkey laptop added")

	out := &passkeyBrowser{ts: two}
	options = out.begin("sign in on two", "/passkey/signin-options", nil)
	answer, ceremony := a.get(options), out.passkey
	out.ts = one
	w = out.send("/login/passkey", url.Values{"credential": {answer}})
	checkRedirect(t, "sign-in finished on one", w, "/")
	replay := &passkeyBrowser{ts: two, passkey: ceremony}
	w = replay.send("/login/passkey", url.Values{"credential": {answer}})
	checkPage(t, "the answer replayed on two", w, http.StatusBadRequest, "expired or was used already")
	if sessions, err := one.server.store.SessionsOf(alice.ID); err != nil || len(sessions) != 2 {
		t.Errorf("alice has %d sessions (err %v); want 2: the password's and the passkey's", len(sessions), err)
	}
}
