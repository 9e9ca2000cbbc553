package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

// newTestServerOn returns a test server over st, any engine, with a fake
// clock and logs in memory as newTestServer gives. Its store field is set
// only when st is bbolt's.
func newTestServerOn(t *testing.T, st store) *testServer {
	t.Helper()
	cfg := defaultConfig()
	cfg.Argon = testArgon
	clock := newFakeClock()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := newServer(st, cfg, log, clock.Now)
	if err != nil {
		t.Fatalf("newServer: %v", err)
	}
	ts := &testServer{server: s, t: t, handler: s.routes(), clock: clock, logs: logs}
	if b, ok := st.(*boltStore); ok {
		ts.store = b
	}
	if th, ok := s.throttle.(*signInThrottle); ok {
		ts.throttle = th
	}
	return ts
}

// addClient registers c as an admin does (AddClient) and returns it with
// its secret ("" for a public client).
func (ts *testServer) addClient(c clientRecord) (clientRecord, string) {
	ts.t.Helper()
	added, secret, err := ts.oauthActions().AddClient(testActor, clientSpec{Name: c.Name, RedirectURIs: c.RedirectURIs, Public: c.Public, Device: c.Device, AccessTTL: c.AccessTTL})
	if err != nil {
		ts.t.Fatalf("AddClient(%q): %v", c.Name, err)
	}
	return added, secret
}

var (
	hiddenInput     = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)
	approvedChecked = regexp.MustCompile(`name="approved" value="([^"]+)" checked`)
)

// consentForm returns the fields of the consent form on page w, with the
// scopes it ticks.
func consentForm(t *testing.T, w *httptest.ResponseRecorder) (url.Values, []string) {
	t.Helper()
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `name="decision" value="approve"`) {
		t.Fatalf("consent page = %d; want 200 with the consent form; body:\n%s", w.Code, w.Body)
	}
	form := url.Values{}
	for _, m := range hiddenInput.FindAllStringSubmatch(w.Body.String(), -1) {
		form.Set(m[1], html.UnescapeString(m[2]))
	}
	var ticked []string
	for _, m := range approvedChecked.FindAllStringSubmatch(w.Body.String(), -1) {
		ticked = append(ticked, m[1])
	}
	return form, ticked
}

// authorize opens authURL signed in with cookie, checks that the consent
// page ticks wantTicked, sends decision with the scopes approve, and returns
// where the answer redirects.
func (ts *testServer) authorize(cookie, authURL string, wantTicked []string, decision string, approve []string) *url.URL {
	ts.t.Helper()
	u, err := url.Parse(authURL)
	if err != nil {
		ts.t.Fatal(err)
	}
	form, ticked := consentForm(ts.t.(*testing.T), ts.page(pageReq{method: "GET", path: u.RequestURI(), cookie: cookie}))
	if !slices.Equal(ticked, wantTicked) {
		ts.t.Errorf("the consent page ticks %v; want %v", ticked, wantTicked)
	}
	form.Set("decision", decision)
	form["approved"] = approve
	w := ts.page(pageReq{method: "POST", path: "/oauth/authorize", cookie: cookie, form: form})
	if w.Code != http.StatusSeeOther {
		ts.t.Fatalf("POST /oauth/authorize = %d; want 303; body:\n%s", w.Code, w.Body)
	}
	loc, err := url.Parse(w.Header().Get("Location"))
	if err != nil {
		ts.t.Fatalf("POST /oauth/authorize: Location %q: %v", w.Header().Get("Location"), err)
	}
	return loc
}

// oauthConfig is x/oauth2's view of client c of the server at base.
func oauthConfig(base string, c clientRecord, secret string, scopes ...string) *oauth2.Config {
	style := oauth2.AuthStyleInHeader
	if c.Public {
		style = oauth2.AuthStyleInParams
	}
	conf := &oauth2.Config{
		ClientID: c.ID, ClientSecret: secret, Scopes: scopes,
		Endpoint: oauth2.Endpoint{
			AuthURL: base + "/oauth/authorize", TokenURL: base + "/oauth/token",
			DeviceAuthURL: base + "/oauth/device_authorization", AuthStyle: style,
		},
	}
	if len(c.RedirectURIs) > 0 {
		conf.RedirectURL = c.RedirectURIs[0]
	}
	return conf
}

// checkTokenWorks asserts that access is accepted, or refused when !live,
// by /api/v1/user and /auth.
func (ts *testServer) checkTokenWorks(what, access string, live bool) {
	ts.t.Helper()
	wantUser, wantAuth := http.StatusOK, http.StatusNoContent
	if !live {
		wantUser, wantAuth = http.StatusUnauthorized, http.StatusUnauthorized
	}
	if w := ts.do(request{method: "GET", path: "/api/v1/user", token: access}); w.Code != wantUser {
		ts.t.Errorf("%s: GET /api/v1/user = %d; want %d; body: %s", what, w.Code, wantUser, w.Body)
	}
	if w := ts.do(request{method: "GET", path: "/auth", token: access}); w.Code != wantAuth {
		ts.t.Errorf("%s: GET /auth = %d; want %d", what, w.Code, wantAuth)
	}
}

// checkNoSecretsLogged fails if the server's log holds any of secrets.
func (ts *testServer) checkNoSecretsLogged(secrets map[string]string) {
	ts.t.Helper()
	logs := ts.logs.String()
	for what, s := range secrets {
		if s != "" && strings.Contains(logs, s) {
			ts.t.Errorf("the server log holds the %s", what)
		}
	}
}

// introspect asks about token as client id with secret, by HTTP Basic or
// in the form, as a stock resource server would, and returns the answer.
func introspect(t *testing.T, base, id, secret, token string, basic bool) (int, map[string]any) {
	t.Helper()
	form := url.Values{"token": {token}}
	if !basic {
		form.Set("client_id", id)
		form.Set("client_secret", secret)
	}
	req, _ := http.NewRequest("POST", base+"/api/v1/introspect", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basic {
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /api/v1/introspect: %v", err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatalf("POST /api/v1/introspect: the answer is not JSON: %v", err)
	}
	return resp.StatusCode, m
}

// TestOAuthCodeFlow drives the authorization code flow with PKCE with
// x/oauth2 as the client: sign in through the page, approve with one scope
// unticked, exchange, use the token, introspect it as a confidential
// client by client_secret_basic and client_secret_post, refresh, and then
// present the old refresh token again, which revokes the grant.
func TestOAuthCodeFlow(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		ts := newTestServerOn(t, open(t))
		hs := httptest.NewServer(ts.handler)
		defer hs.Close()
		alice := ts.addUser("alice", false)
		c, secret := ts.addClient(clientRecord{Name: "Example App", RedirectURIs: []string{"http://127.0.0.1/callback"}})
		// AddClient wants a flow for every client, even one that only
		// introspects.
		rs, rsSecret := ts.addClient(clientRecord{Name: "Resource Server", RedirectURIs: []string{"https://rs.example/cb"}})
		conf := oauthConfig(hs.URL, c, secret, scopeTokensRead, scopeIntrospect, scopeAdmin)
		conf.RedirectURL = "http://127.0.0.1:49152/callback" // any port on loopback

		cookie := ts.login("alice")
		verifier := oauth2.GenerateVerifier()
		loc := ts.authorize(cookie, conf.AuthCodeURL("st-1", oauth2.S256ChallengeOption(verifier)),
			[]string{scopeTokensRead, scopeIntrospect}, "approve", []string{scopeTokensRead})
		q := loc.Query()
		if loc.Host != "127.0.0.1:49152" || loc.Path != "/callback" || q.Get("state") != "st-1" || q.Get("code") == "" {
			t.Fatalf("approval redirected to %s; want http://127.0.0.1:49152/callback with the code and state st-1", loc)
		}
		code := q.Get("code")

		ctx := context.Background()
		tok, err := conf.Exchange(ctx, code, oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("Exchange: %v\nlog:\n%s", err, ts.logs)
		}
		if tok.TokenType != "Bearer" || tok.RefreshToken == "" || tok.Extra("scope") != scopeTokensRead || tok.ExpiresIn != int64(defaultAccessTTL.Seconds()) {
			t.Errorf("token = %s, refresh %t, scope %v, expires_in %d; want Bearer, a refresh token, scope tokens:read, 8 hours",
				tok.TokenType, tok.RefreshToken != "", tok.Extra("scope"), tok.ExpiresIn)
		}
		if !strings.HasPrefix(tok.AccessToken, "tkd_") || !strings.HasPrefix(tok.RefreshToken, "tkdr_") {
			t.Errorf("access token %.5s…, refresh token %.5s…; want the prefixes tkd_ and tkdr_", tok.AccessToken, tok.RefreshToken)
		}
		ts.checkTokenWorks("the new access token", tok.AccessToken, true)

		grants, err := ts.server.store.GrantsOf(alice.ID)
		if err != nil || len(grants) != 1 || grants[0].Client != c.ID || !slices.Equal(grants[0].Scopes, []string{scopeTokensRead}) {
			t.Fatalf("GrantsOf(alice) = %+v, %v; want one grant to %s for tokens:read", grants, err, c.ID)
		}
		if personal, _ := ts.server.store.TokensByOwner(alice.ID); len(personal) != 0 {
			t.Errorf("alice's personal tokens = %d; want none: an app's token is not one", len(personal))
		}

		// A stock resource server introspects with its client credentials.
		for _, basic := range []bool{true, false} {
			status, m := introspect(t, hs.URL, rs.ID, rsSecret, tok.AccessToken, basic)
			if status != 200 || m["active"] != true || m["client_id"] != c.ID || m["username"] != "alice" || m["scope"] != scopeTokensRead {
				t.Errorf("introspection (basic %t) = %d %v; want active, client_id %s, alice, tokens:read", basic, status, m, c.ID)
			}
		}
		if status, m := introspect(t, hs.URL, rs.ID, "wrong", tok.AccessToken, true); status != 401 || m["error"] != "invalid_client" {
			t.Errorf("introspection with a wrong secret = %d %v; want 401 invalid_client", status, m)
		}

		// Refresh: x/oauth2 refreshes a token it holds as expired.
		old := tok.RefreshToken
		expired := *tok
		expired.Expiry = expired.Expiry.Add(-24 * defaultAccessTTL)
		fresh, err := conf.TokenSource(ctx, &expired).Token()
		if err != nil {
			t.Fatalf("refresh: %v", err)
		}
		if fresh.AccessToken == tok.AccessToken || fresh.RefreshToken == old {
			t.Fatal("refresh gave the same tokens back; want new ones")
		}
		ts.checkTokenWorks("the access token replaced by refresh", tok.AccessToken, false)
		ts.checkTokenWorks("the refreshed access token", fresh.AccessToken, true)

		// The old refresh token again: reuse, which revokes the grant.
		_, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: old, Expiry: expired.Expiry}).Token()
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
			t.Fatalf("refresh with a used refresh token: %v; want invalid_grant", err)
		}
		ts.checkTokenWorks("the access token after refresh token reuse", fresh.AccessToken, false)
		if grants, err := ts.server.store.GrantsOf(alice.ID); err != nil || len(grants) != 0 {
			t.Errorf("GrantsOf(alice) after reuse = %d grants, %v; want none", len(grants), err)
		}
		_, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: fresh.RefreshToken, Expiry: expired.Expiry}).Token()
		if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
			t.Errorf("refresh with the latest refresh token of a revoked grant: %v; want invalid_grant", err)
		}
		ts.checkNoSecretsLogged(map[string]string{"code": code, "access token": tok.AccessToken, "refresh token": old,
			"refreshed token": fresh.AccessToken, "client secret": secret, "resource server's secret": rsSecret, "verifier": verifier})
		if ts.store != nil {
			for what, s := range map[string]string{"code": code, "access token": tok.AccessToken, "refresh token": old, "client secret": secret} {
				checkNotStored(t, ts, what, s)
			}
		}
	})
}

// TestOAuthCodeReuse redeems a code twice: the second time is invalid_grant
// and revokes what the first issued (RFC 6749 §4.1.2).
func TestOAuthCodeReuse(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		ts := newTestServerOn(t, open(t))
		hs := httptest.NewServer(ts.handler)
		defer hs.Close()
		alice := ts.addUser("alice", false)
		c, _ := ts.addClient(clientRecord{Name: "CLI", Public: true, RedirectURIs: []string{"http://127.0.0.1/cb"}})
		conf := oauthConfig(hs.URL, c, "", scopeTokensRead)
		verifier := oauth2.GenerateVerifier()
		loc := ts.authorize(ts.login("alice"), conf.AuthCodeURL("s", oauth2.S256ChallengeOption(verifier)),
			[]string{scopeTokensRead}, "approve", []string{scopeTokensRead})
		ctx := context.Background()
		tok, err := conf.Exchange(ctx, loc.Query().Get("code"), oauth2.VerifierOption(verifier))
		if err != nil {
			t.Fatalf("Exchange as a public client: %v", err)
		}
		ts.checkTokenWorks("the token of the code", tok.AccessToken, true)
		_, err = conf.Exchange(ctx, loc.Query().Get("code"), oauth2.VerifierOption(verifier))
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
			t.Fatalf("second Exchange of one code: %v; want invalid_grant", err)
		}
		ts.checkTokenWorks("the token of a code used twice", tok.AccessToken, false)
		if grants, _ := ts.server.store.GrantsOf(alice.ID); len(grants) != 0 {
			t.Errorf("alice holds %d grants after the code's reuse; want none", len(grants))
		}
	})
}

// TestOAuthDeviceFlow drives the device flow with x/oauth2: the person
// approves through /device in a goroutine while the client polls; the token
// works until its grant is revoked.
func TestOAuthDeviceFlow(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		ts := newTestServerOn(t, open(t))
		// Each poll finds the server's clock a poll interval later, so
		// that polling as fast as the test does is not slow_down.
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/oauth/token" {
				ts.clock.Add(devicePollEvery)
			}
			ts.handler.ServeHTTP(w, r)
		}))
		defer hs.Close()
		bob := ts.addUser("bob", true)
		// x/oauth2 authenticates no client to the device authorization
		// endpoint: a command-line tool is a public client.
		c, secret := ts.addClient(clientRecord{Name: "tokctl", Device: true, Public: true})
		conf := oauthConfig(hs.URL, c, secret, scopeTokensRead, scopeAdmin)
		ctx := context.Background()
		da, err := conf.DeviceAuth(ctx)
		if err != nil {
			t.Fatalf("DeviceAuth: %v", err)
		}
		if !regexp.MustCompile(`^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$`).MatchString(da.UserCode) ||
			da.VerificationURI != hs.URL+"/device" || da.VerificationURIComplete != hs.URL+"/device?user_code="+da.UserCode || da.Interval != 5 {
			t.Fatalf("DeviceAuth = %+v; want a XXXX-XXXX code, %s/device, interval 5", da, hs.URL)
		}
		cookie := ts.login("bob")
		approved := make(chan error, 1)
		go func() {
			u, _ := url.Parse(da.VerificationURIComplete)
			w := ts.page(pageReq{method: "GET", path: u.RequestURI(), cookie: cookie})
			if w.Code != 200 || !strings.Contains(w.Body.String(), `value="`+da.UserCode+`"`) {
				approved <- errors.New("the /device page does not hold the code of its link")
				return
			}
			// Typed as a person might: lower case, a space for the dash.
			w = ts.page(pageReq{method: "POST", path: "/device", cookie: cookie, form: url.Values{"user_code": {strings.ToLower(strings.Replace(da.UserCode, "-", " ", 1))}}})
			if w.Code != 200 || !strings.Contains(w.Body.String(), "tokctl") {
				approved <- errors.New("POST /device did not show the consent page: " + w.Body.String())
				return
			}
			form, _ := consentForm(t, w)
			form.Set("decision", "approve")
			form["approved"] = []string{scopeAdmin}
			if w = ts.page(pageReq{method: "POST", path: "/device/approve", cookie: cookie, form: form}); w.Code != 200 {
				approved <- errors.New("POST /device/approve: " + w.Body.String())
				return
			}
			approved <- nil
		}()
		da.Interval = 1 // the test's client polls every second
		tok, err := conf.DeviceAccessToken(ctx, da)
		if err := <-approved; err != nil {
			t.Fatal(err)
		}
		if err != nil {
			t.Fatalf("DeviceAccessToken: %v\nlog:\n%s", err, ts.logs)
		}
		if tok.Extra("scope") != scopeAdmin {
			t.Errorf("device token scope = %v; want admin, as approved", tok.Extra("scope"))
		}
		ts.checkTokenWorks("the device token", tok.AccessToken, true)
		grants, err := ts.server.store.GrantsOf(bob.ID)
		if err != nil || len(grants) != 1 {
			t.Fatalf("GrantsOf(bob) = %v, %v; want one", grants, err)
		}
		if _, err := ts.oauthActions().RevokeGrant(testActor, grants[0].ID, bob.ID); err != nil {
			t.Fatalf("RevokeGrant: %v", err)
		}
		ts.checkTokenWorks("the device token after its grant is revoked", tok.AccessToken, false)
		ts.checkNoSecretsLogged(map[string]string{"device code": da.DeviceCode, "user code": da.UserCode,
			"access token": tok.AccessToken, "refresh token": tok.RefreshToken, "client secret": secret})
	})
}

// oauthPost sends form to path as a client would, with authorization
// (when not empty) as its Authorization header.
func (ts *testServer) oauthPost(path string, form url.Values, authorization string) *httptest.ResponseRecorder {
	ts.t.Helper()
	h := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	if authorization != "" {
		h["Authorization"] = authorization
	}
	return ts.do(request{method: "POST", path: path, body: form.Encode(), header: h})
}

// checkOAuthError asserts that w is the RFC 6749 §5.2 error code with
// status, not cached, and with a Basic challenge when it is a 401.
func checkOAuthError(t *testing.T, what string, w *httptest.ResponseRecorder, status int, code string) {
	t.Helper()
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if w.Code != status || w.Header().Get("Content-Type") != "application/json" {
		t.Errorf("%s = %d %s; want %d application/json; body: %s", what, w.Code, w.Header().Get("Content-Type"), status, w.Body)
		return
	}
	decode(t, w, &body)
	if body.Error != code || body.Description == "" {
		t.Errorf("%s: error %q (%q); want %q with a description", what, body.Error, body.Description, code)
	}
	if w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("%s: Cache-Control = %q; want no-store", what, w.Header().Get("Cache-Control"))
	}
	if status == http.StatusUnauthorized && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Basic ") {
		t.Errorf("%s: WWW-Authenticate = %q; want a Basic challenge", what, w.Header().Get("WWW-Authenticate"))
	}
}

// oauthServerFixture is a server with a user, alice, and three clients: a
// confidential web app, a public command-line tool with the device grant,
// and an approved code of the web app waiting to be exchanged.
type oauthServerFixture struct {
	ts              *testServer
	alice           userRecord
	web, cli        clientRecord
	webSecret       string
	code, verifier  string
	webBasic        string
	cookie          string
	redirect        string
	refresh, access string // of a grant of the web app, made by exchanging another code
}

func newOAuthServerFixture(t *testing.T) *oauthServerFixture {
	t.Helper()
	ts := newTestServer(t)
	f := &oauthServerFixture{ts: ts, alice: ts.addUser("alice", false), redirect: "https://app.example/cb"}
	f.web, f.webSecret = ts.addClient(clientRecord{Name: "Web App", RedirectURIs: []string{f.redirect, "https://app.example/other"}})
	f.cli, _ = ts.addClient(clientRecord{Name: "CLI", Public: true, Device: true})
	f.webBasic = "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(f.web.ID)+":"+url.QueryEscape(f.webSecret)))
	f.cookie = ts.login("alice")
	f.code, f.verifier = f.newCode(t, scopeTokensRead)
	code, verifier := f.newCode(t, scopeTokensRead+" "+scopeIntrospect)
	w := ts.oauthPost("/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {verifier}, "redirect_uri": {f.redirect}}, f.webBasic)
	var tr tokenResponse
	if w.Code != 200 {
		t.Fatalf("exchange a code = %d: %s", w.Code, w.Body)
	}
	decode(t, w, &tr)
	f.refresh, f.access = tr.RefreshToken, tr.AccessToken
	return f
}

// newCode has alice approve the web app for scopes and returns the code
// and its verifier.
func (f *oauthServerFixture) newCode(t *testing.T, scopes string) (string, string) {
	t.Helper()
	verifier := oauth2.GenerateVerifier()
	q := url.Values{"client_id": {f.web.ID}, "redirect_uri": {f.redirect}, "response_type": {"code"}, "scope": {scopes},
		"state": {"xyz"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"}}
	loc := f.ts.authorize(f.cookie, "/oauth/authorize?"+q.Encode(), strings.Fields(scopes), "approve", strings.Fields(scopes))
	if loc.Query().Get("code") == "" {
		t.Fatalf("approval redirected to %s; want a code", loc)
	}
	return loc.Query().Get("code"), verifier
}

// TestOAuthTokenErrors sends the token endpoint every kind of bad request
// and checks each RFC 6749 §5.2 error, and that none changes anything.
func TestOAuthTokenErrors(t *testing.T) {
	f := newOAuthServerFixture(t)
	ts := f.ts
	other, otherSecret := ts.addClient(clientRecord{Name: "Other", RedirectURIs: []string{f.redirect}})
	otherBasic := "Basic " + base64.StdEncoding.EncodeToString([]byte(other.ID+":"+otherSecret))
	codeForm := func(kv ...string) url.Values {
		v := url.Values{"grant_type": {"authorization_code"}, "code": {f.code}, "code_verifier": {f.verifier}, "redirect_uri": {f.redirect}}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				v.Del(kv[i])
			} else {
				v.Set(kv[i], kv[i+1])
			}
		}
		return v
	}
	refreshForm := func(kv ...string) url.Values {
		v := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {f.refresh}}
		for i := 0; i < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v
	}
	wrongVerifier := oauth2.GenerateVerifier()
	cases := []struct {
		name          string
		form          url.Values
		authorization string
		raw           string // a body sent as is, with contentType
		contentType   string
		status        int
		code          string
	}{
		{name: "no grant_type", form: url.Values{"code": {f.code}}, authorization: f.webBasic, status: 400, code: "invalid_request"},
		{name: "no code", form: codeForm("code", ""), authorization: f.webBasic, status: 400, code: "invalid_request"},
		{name: "no code_verifier", form: codeForm("code_verifier", ""), authorization: f.webBasic, status: 400, code: "invalid_request"},
		{name: "a parameter twice", raw: codeForm().Encode() + "&code=" + f.code, contentType: "application/x-www-form-urlencoded", authorization: f.webBasic, status: 400, code: "invalid_request"},
		{name: "a JSON body", raw: `{"grant_type":"authorization_code"}`, contentType: "application/json", authorization: f.webBasic, status: 400, code: "invalid_request"},
		{name: "two client authentication methods", form: codeForm("client_id", f.web.ID, "client_secret", f.webSecret), authorization: f.webBasic, status: 400, code: "invalid_request"},
		{name: "a Bearer header", form: codeForm(), authorization: "Bearer " + f.access, status: 400, code: "invalid_request"},
		{name: "no client authentication", form: codeForm(), status: 401, code: "invalid_client"},
		{name: "an unknown client", form: codeForm("client_id", "nobody", "client_secret", "x"), status: 401, code: "invalid_client"},
		{name: "a wrong secret by Basic", form: codeForm(), authorization: "Basic " + base64.StdEncoding.EncodeToString([]byte(f.web.ID+":wrong")), status: 401, code: "invalid_client"},
		{name: "a wrong secret in the form", form: codeForm("client_id", f.web.ID, "client_secret", "wrong"), status: 401, code: "invalid_client"},
		{name: "malformed Basic credentials", form: codeForm(), authorization: "Basic !!!", status: 401, code: "invalid_client"},
		{name: "a confidential client without its secret", form: codeForm("client_id", f.web.ID), status: 401, code: "invalid_client"},
		{name: "a public client with a secret", form: codeForm("client_id", f.cli.ID, "client_secret", "x"), status: 401, code: "invalid_client"},
		{name: "an unknown code", form: codeForm("code", "nope"), authorization: f.webBasic, status: 400, code: "invalid_grant"},
		{name: "a wrong code_verifier", form: codeForm("code_verifier", wrongVerifier), authorization: f.webBasic, status: 400, code: "invalid_grant"},
		{name: "another redirect_uri", form: codeForm("redirect_uri", "https://app.example/other"), authorization: f.webBasic, status: 400, code: "invalid_grant"},
		{name: "no redirect_uri though the request had one", form: codeForm("redirect_uri", ""), authorization: f.webBasic, status: 400, code: "invalid_grant"},
		{name: "another client's code", form: codeForm(), authorization: otherBasic, status: 400, code: "invalid_grant"},
		{name: "a malformed refresh token", form: refreshForm("refresh_token", "tkdr_nope"), authorization: f.webBasic, status: 400, code: "invalid_grant"},
		{name: "an access token as refresh token", form: refreshForm("refresh_token", f.access), authorization: f.webBasic, status: 400, code: "invalid_grant"},
		{name: "another client's refresh token", form: refreshForm(), authorization: otherBasic, status: 400, code: "invalid_grant"},
		{name: "a device code of nothing", form: url.Values{"grant_type": {grantDeviceCode}, "device_code": {"nope"}, "client_id": {f.cli.ID}}, status: 400, code: "invalid_grant"},
		{name: "the device grant by a client without it", form: url.Values{"grant_type": {grantDeviceCode}, "device_code": {"x"}}, authorization: f.webBasic, status: 400, code: "unauthorized_client"},
		{name: "a code by a client without redirect URIs", form: codeForm("client_id", f.cli.ID), status: 400, code: "unauthorized_client"},
		{name: "the password grant", form: url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"password-of-alice"}}, authorization: f.webBasic, status: 400, code: "unsupported_grant_type"},
		{name: "the client credentials grant", form: url.Values{"grant_type": {"client_credentials"}}, authorization: f.webBasic, status: 400, code: "unsupported_grant_type"},
		{name: "a refresh wider than the grant", form: refreshForm("scope", scopeTokensRead+" "+scopeTokensWrite), authorization: f.webBasic, status: 400, code: "invalid_scope"},
		{name: "a refresh with an unknown scope", form: refreshForm("scope", "nope"), authorization: f.webBasic, status: 400, code: "invalid_scope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := ts.snapshot()
			var w *httptest.ResponseRecorder
			if tc.raw != "" {
				h := map[string]string{"Content-Type": tc.contentType}
				if tc.authorization != "" {
					h["Authorization"] = tc.authorization
				}
				w = ts.do(request{method: "POST", path: "/oauth/token", body: tc.raw, header: h})
			} else {
				w = ts.oauthPost("/oauth/token", tc.form, tc.authorization)
			}
			checkOAuthError(t, tc.name, w, tc.status, tc.code)
			assertUnchanged(t, tc.name, before, ts.snapshot())
		})
	}

	// The code and the refresh token survived every bad request.
	w := ts.oauthPost("/oauth/token", codeForm(), f.webBasic)
	if w.Code != 200 {
		t.Errorf("the code after the bad requests = %d: %s", w.Code, w.Body)
	}
	w = ts.oauthPost("/oauth/token", refreshForm("scope", scopeIntrospect), f.webBasic)
	var tr tokenResponse
	if w.Code != 200 {
		t.Fatalf("a narrower refresh = %d: %s", w.Code, w.Body)
	}
	decode(t, w, &tr)
	if tr.Scope != scopeIntrospect {
		t.Errorf("a refresh for introspect alone gives scope %q", tr.Scope)
	}
}

// TestOAuthCodeExpires: a code is good for authCodeTTL, then invalid_grant.
func TestOAuthCodeExpires(t *testing.T) {
	f := newOAuthServerFixture(t)
	f.ts.clock.Add(authCodeTTL)
	w := f.ts.oauthPost("/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {f.code}, "code_verifier": {f.verifier}, "redirect_uri": {f.redirect}}, f.webBasic)
	checkOAuthError(t, "an expired code", w, 400, "invalid_grant")
}

// TestOAuthDeviceErrors checks each answer of RFC 8628 §3.5 to a poll, and
// the errors of the device authorization endpoint.
func TestOAuthDeviceErrors(t *testing.T) {
	f := newOAuthServerFixture(t)
	ts := f.ts
	start := func() deviceAuthResponse {
		t.Helper()
		w := ts.oauthPost("/oauth/device_authorization", url.Values{"client_id": {f.cli.ID}, "scope": {scopeTokensRead}}, "")
		if w.Code != 200 || w.Header().Get("Cache-Control") != "no-store" {
			t.Fatalf("POST /oauth/device_authorization = %d: %s", w.Code, w.Body)
		}
		var da deviceAuthResponse
		decode(t, w, &da)
		return da
	}
	poll := func(da deviceAuthResponse) *httptest.ResponseRecorder {
		return ts.oauthPost("/oauth/token", url.Values{"grant_type": {grantDeviceCode}, "device_code": {da.DeviceCode}, "client_id": {f.cli.ID}}, "")
	}
	decide := func(da deviceAuthResponse, decision string) {
		t.Helper()
		form := url.Values{"user_code": {da.UserCode}, "decision": {decision}, "approved": {scopeTokensRead}}
		if w := ts.page(pageReq{method: "POST", path: "/device/approve", cookie: f.cookie, form: form}); w.Code != 200 {
			t.Fatalf("POST /device/approve %s = %d: %s", decision, w.Code, w.Body)
		}
	}

	da := start()
	checkOAuthError(t, "a poll before the user answers", poll(da), 400, "authorization_pending")
	checkOAuthError(t, "a poll at once after another", poll(da), 400, "slow_down")
	ts.clock.Add(10 * devicePollEvery)
	checkOAuthError(t, "a poll after waiting", poll(da), 400, "authorization_pending")

	denied := start()
	decide(denied, "deny")
	checkOAuthError(t, "a poll of a denied request", poll(denied), 400, "access_denied")
	w := ts.page(pageReq{method: "POST", path: "/device", cookie: f.cookie, form: url.Values{"user_code": {denied.UserCode}}})
	checkPage(t, "typing the code of a denied request", w, http.StatusConflict, "That code was answered already")

	approved := start()
	decide(approved, "approve")
	ts.clock.Add(10 * devicePollEvery)
	w = poll(approved)
	var tr tokenResponse
	if w.Code != 200 {
		t.Fatalf("a poll of an approved request = %d: %s", w.Code, w.Body)
	}
	decode(t, w, &tr)
	ts.checkTokenWorks("the device token", tr.AccessToken, true)
	ts.clock.Add(10 * devicePollEvery)
	checkOAuthError(t, "a second redemption of a device code", poll(approved), 400, "invalid_grant")
	ts.checkTokenWorks("the token of a device code redeemed twice", tr.AccessToken, false)

	ts.clock.Add(deviceCodeTTL)
	checkOAuthError(t, "a poll of an expired request", poll(da), 400, "expired_token")
	w = ts.page(pageReq{method: "POST", path: "/device", cookie: f.cookie, form: url.Values{"user_code": {da.UserCode}}})
	checkPage(t, "typing the code of an expired request", w, http.StatusBadRequest, "That code has expired")
	checkOAuthError(t, "a poll by another client", ts.oauthPost("/oauth/token", url.Values{"grant_type": {grantDeviceCode}, "device_code": {da.DeviceCode}}, f.webBasic), 400, "unauthorized_client")

	before := ts.snapshot()
	checkOAuthError(t, "device authorization by a client without the grant",
		ts.oauthPost("/oauth/device_authorization", url.Values{}, f.webBasic), 400, "unauthorized_client")
	checkOAuthError(t, "device authorization with an unknown scope",
		ts.oauthPost("/oauth/device_authorization", url.Values{"client_id": {f.cli.ID}, "scope": {"nope"}}, ""), 400, "invalid_scope")
	checkOAuthError(t, "device authorization by an unknown client",
		ts.oauthPost("/oauth/device_authorization", url.Values{"client_id": {"nope"}}, ""), 401, "invalid_client")
	assertUnchanged(t, "refused device authorizations", before, ts.snapshot())
}

// TestOAuthAccessTokenLifetime: an access token lives as long as its
// client says, and the device page's link survives signing in.
func TestOAuthAccessTokenLifetime(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", false)
	c, _ := ts.addClient(clientRecord{Name: "Short", Public: true, Device: true, AccessTTL: time.Hour})
	w := ts.oauthPost("/oauth/device_authorization", url.Values{"client_id": {c.ID}}, "")
	var da deviceAuthResponse
	decode(t, w, &da)
	u, _ := url.Parse(da.VerificationURIComplete)
	checkRedirect(t, "the device link signed out", ts.page(pageReq{method: "GET", path: u.RequestURI()}), "/login?next="+url.QueryEscape(u.RequestURI()))
	cookie := ts.login("alice")
	w = ts.page(pageReq{method: "POST", path: "/device/approve", cookie: cookie, form: url.Values{"user_code": {da.UserCode}, "decision": {"approve"}}})
	checkPage(t, "approve with no scope", w, http.StatusOK, "Device connected")
	w = ts.oauthPost("/oauth/token", url.Values{"grant_type": {grantDeviceCode}, "device_code": {da.DeviceCode}, "client_id": {c.ID}}, "")
	var tr tokenResponse
	decode(t, w, &tr)
	if w.Code != 200 || tr.ExpiresIn != 3600 || tr.Scope != "" {
		t.Fatalf("device token = %d, expires_in %d, scope %q; want 200, 3600 and no scope", w.Code, tr.ExpiresIn, tr.Scope)
	}
	ts.clock.Add(time.Hour - time.Second)
	ts.checkTokenWorks("a one-hour token a second before its hour", tr.AccessToken, true)
	ts.clock.Add(time.Second)
	ts.checkTokenWorks("a one-hour token after its hour", tr.AccessToken, false)
}

// TestOAuthDeviceCodeGuesses: a person may type only so many wrong user
// codes (RFC 8628 §5.1); then even the right one waits.
func TestOAuthDeviceCodeGuesses(t *testing.T) {
	f := newOAuthServerFixture(t)
	ts := f.ts
	w := ts.oauthPost("/oauth/device_authorization", url.Values{"client_id": {f.cli.ID}}, "")
	var da deviceAuthResponse
	decode(t, w, &da)
	wrong := "BBBB-BBBB"
	if wrong == da.UserCode {
		wrong = "CCCC-CCCC"
	}
	for i := range int(userCodeLimit.burst) {
		w := ts.page(pageReq{method: "POST", path: "/device", cookie: f.cookie, form: url.Values{"user_code": {wrong}}})
		checkPage(t, "wrong code "+itoa(uint64(i+1)), w, http.StatusBadRequest, "That code is not right")
	}
	w = ts.page(pageReq{method: "POST", path: "/device", cookie: f.cookie, form: url.Values{"user_code": {da.UserCode}}})
	checkPage(t, "the right code after too many wrong ones", w, http.StatusTooManyRequests, "Too many wrong codes")
	if w.Header().Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	w = ts.page(pageReq{method: "POST", path: "/device/approve", cookie: f.cookie, form: url.Values{"user_code": {da.UserCode}, "decision": {"approve"}}})
	checkPage(t, "approving straight away after too many wrong codes", w, http.StatusTooManyRequests)
	ts.clock.Add(userCodeLimit.every)
	w = ts.page(pageReq{method: "POST", path: "/device", cookie: f.cookie, form: url.Values{"user_code": {da.UserCode}}})
	checkPage(t, "the right code a minute later", w, http.StatusOK, "Authorize CLI?", da.UserCode)
	w = ts.page(pageReq{method: "POST", path: "/device", cookie: f.cookie, form: url.Values{"user_code": {"not a code"}}})
	checkPage(t, "something that is not a code", w, http.StatusBadRequest, "A code is 8 letters")
}

// TestOAuthAuthorizeErrors checks the errors of the authorization
// endpoint: shown on a page, never redirected, when the client or its
// redirect URI is not known (no open redirect); redirected with state
// otherwise.
func TestOAuthAuthorizeErrors(t *testing.T) {
	f := newOAuthServerFixture(t)
	ts := f.ts
	challenge := oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())
	query := func(kv ...string) string {
		q := url.Values{"client_id": {f.web.ID}, "redirect_uri": {f.redirect}, "response_type": {"code"}, "state": {"st"},
			"code_challenge": {challenge}, "code_challenge_method": {"S256"}, "scope": {scopeTokensRead}}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				q.Del(kv[i])
			} else {
				q.Set(kv[i], kv[i+1])
			}
		}
		return "/oauth/authorize?" + q.Encode()
	}
	before := ts.snapshot()
	for _, tc := range []struct{ name, path string }{
		{"an unknown client", query("client_id", "nobody")},
		{"no client", query("client_id", "")},
		{"a hostile redirect_uri", query("redirect_uri", "https://evil.example/cb")},
		{"a redirect_uri differing in its path", query("redirect_uri", "https://app.example/cb/../evil")},
		{"no redirect_uri, and two registered", query("redirect_uri", "")},
		{"two client_ids", query() + "&client_id=" + f.cli.ID},
	} {
		w := ts.page(pageReq{method: "GET", path: tc.path, cookie: f.cookie})
		checkPage(t, tc.name, w, http.StatusBadRequest, "This app's request is not valid")
		if loc := w.Header().Get("Location"); loc != "" {
			t.Errorf("%s redirects to %s; want no redirect", tc.name, loc)
		}
		if strings.Contains(w.Body.String(), "evil.example") {
			t.Errorf("%s: the page links to the hostile address", tc.name)
		}
	}
	for _, tc := range []struct{ name, path, code string }{
		{"response_type token", query("response_type", "token"), "unsupported_response_type"},
		{"no response_type", query("response_type", ""), "invalid_request"},
		{"no code_challenge", query("code_challenge", "", "code_challenge_method", ""), "invalid_request"},
		{"code_challenge_method plain", query("code_challenge_method", "plain"), "invalid_request"},
		{"no code_challenge_method", query("code_challenge_method", ""), "invalid_request"},
		{"a malformed code_challenge", query("code_challenge", "short"), "invalid_request"},
		{"an unknown scope", query("scope", "tokens:read nope"), "invalid_scope"},
		{"state twice", query() + "&state=again", "invalid_request"},
	} {
		w := ts.page(pageReq{method: "GET", path: tc.path, cookie: f.cookie})
		loc, _ := url.Parse(w.Header().Get("Location"))
		if w.Code != http.StatusSeeOther || loc == nil || !strings.HasPrefix(loc.String(), f.redirect+"?") ||
			loc.Query().Get("error") != tc.code || loc.Query().Get("state") != "st" || loc.Query().Get("error_description") == "" {
			t.Errorf("%s = %d to %q; want 303 to %s with error %s and state st", tc.name, w.Code, w.Header().Get("Location"), f.redirect, tc.code)
		}
	}
	// Denying sends access_denied.
	form, _ := consentForm(t, ts.page(pageReq{method: "GET", path: query(), cookie: f.cookie}))
	form.Set("decision", "deny")
	w := ts.page(pageReq{method: "POST", path: "/oauth/authorize", cookie: f.cookie, form: form})
	if loc, _ := url.Parse(w.Header().Get("Location")); w.Code != 303 || loc.Query().Get("error") != "access_denied" || loc.Query().Get("state") != "st" {
		t.Errorf("deny = %d to %q; want 303 with access_denied and state", w.Code, w.Header().Get("Location"))
	}
	// A hostile redirect_uri in the posted form is refused as in the query.
	form.Set("decision", "approve")
	form.Set("redirect_uri", "https://evil.example/cb")
	w = ts.page(pageReq{method: "POST", path: "/oauth/authorize", cookie: f.cookie, form: form})
	checkPage(t, "a decision for a hostile redirect_uri", w, http.StatusBadRequest, "This app's request is not valid")
	assertUnchanged(t, "refused authorization requests", before, ts.snapshot())

	// Signed out, the request survives signing in.
	w = ts.page(pageReq{method: "GET", path: query()})
	checkRedirect(t, "GET /oauth/authorize signed out", w, "/login?next="+url.QueryEscape(query()))
}

// TestOAuthConsent checks what the consent page offers and protects: no
// scope beyond the user's own, a ticked scope that was not offered is
// refused, the page cannot be framed, and its form cannot be posted from
// another site.
func TestOAuthConsent(t *testing.T) {
	f := newOAuthServerFixture(t)
	ts := f.ts
	q := url.Values{"client_id": {f.web.ID}, "redirect_uri": {f.redirect}, "response_type": {"code"}, "state": {"st"},
		"code_challenge": {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())}, "code_challenge_method": {"S256"},
		"scope": {scopeAdmin + " " + scopeTokensWrite}}
	w := ts.page(pageReq{method: "GET", path: "/oauth/authorize?" + q.Encode(), cookie: f.cookie})
	checkPage(t, "the consent page", w, http.StatusOK, "Authorize Web App?", "which you do not hold")
	form, ticked := consentForm(t, w)
	if !slices.Equal(ticked, []string{scopeTokensWrite}) {
		t.Errorf("a non-admin's consent page ticks %v; want tokens:write alone", ticked)
	}
	h := w.Header()
	if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "form-action 'self' https://app.example;") ||
		h.Get("X-Frame-Options") != "DENY" {
		t.Errorf("consent page headers: CSP %q, X-Frame-Options %q; want no framing, and forms may go to the app", csp, h.Get("X-Frame-Options"))
	}
	before := ts.snapshot()
	form.Set("decision", "approve")
	form["approved"] = []string{scopeAdmin}
	w = ts.page(pageReq{method: "POST", path: "/oauth/authorize", cookie: f.cookie, form: form})
	checkPage(t, "approving a scope the user does not hold", w, http.StatusBadRequest)
	form["approved"] = []string{scopeTokensWrite}
	w = ts.page(pageReq{method: "POST", path: "/oauth/authorize", cookie: f.cookie, form: form,
		header: map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}})
	checkPage(t, "a consent posted from another site", w, http.StatusForbidden, "Request refused")
	assertUnchanged(t, "refused consents", before, ts.snapshot())
}

// TestOAuthRevoke checks RFC 7009 revocation: a client revokes its access
// token alone, or with a refresh token its whole grant; another client's
// token, a personal token and an unknown one are 200 and left alone.
func TestOAuthRevoke(t *testing.T) {
	f := newOAuthServerFixture(t)
	ts := f.ts
	other, otherSecret := ts.addClient(clientRecord{Name: "Other", Device: true})
	otherBasic := "Basic " + base64.StdEncoding.EncodeToString([]byte(other.ID+":"+otherSecret))
	_, personal := ts.addToken(f.alice, "mine", nil, 0)
	revoke := func(what, token, hint, authorization string) {
		t.Helper()
		form := url.Values{"token": {token}}
		if hint != "" {
			form.Set("token_type_hint", hint)
		}
		if w := ts.oauthPost("/oauth/revoke", form, authorization); w.Code != 200 || w.Body.Len() != 0 {
			t.Errorf("revoke %s = %d %s; want 200 and no body", what, w.Code, w.Body)
		}
	}
	revoke("another client's access token", f.access, "", otherBasic)
	revoke("another client's refresh token", f.refresh, "refresh_token", otherBasic)
	revoke("a personal token", personal, "access_token", f.webBasic)
	revoke("an unknown token", "tkd_nothing", "", f.webBasic)
	ts.checkTokenWorks("an access token another client tried to revoke", f.access, true)
	ts.checkTokenWorks("a personal token a client tried to revoke", personal, true)

	checkOAuthError(t, "revoke without client authentication", ts.oauthPost("/oauth/revoke", url.Values{"token": {f.access}}, ""), 401, "invalid_client")
	checkOAuthError(t, "revoke without a token", ts.oauthPost("/oauth/revoke", url.Values{}, f.webBasic), 400, "invalid_request")
	ts.checkTokenWorks("after refused revocations", f.access, true)

	// The hint is a hint: an access token named a refresh token still goes.
	revoke("its access token, hinted wrong", f.access, "refresh_token", f.webBasic)
	ts.checkTokenWorks("a revoked access token", f.access, false)
	if grants, _ := ts.server.store.GrantsOf(f.alice.ID); len(grants) != 1 {
		t.Errorf("alice holds %d grants after revoking an access token; want the grant kept", len(grants))
	}
	revoke("its refresh token", f.refresh, "", f.webBasic)
	if grants, _ := ts.server.store.GrantsOf(f.alice.ID); len(grants) != 0 {
		t.Errorf("alice holds %d grants after revoking the refresh token; want none", len(grants))
	}
	w := ts.oauthPost("/oauth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {f.refresh}}, f.webBasic)
	checkOAuthError(t, "refresh with a revoked refresh token", w, 400, "invalid_grant")
}

// TestOAuthIntrospectClients: only confidential clients with the right
// secret may introspect; a public client and a wrong secret get 401.
func TestOAuthIntrospectClients(t *testing.T) {
	f := newOAuthServerFixture(t)
	ts := f.ts
	form := func(kv ...string) string {
		v := url.Values{"token": {f.access}}
		for i := 0; i < len(kv); i += 2 {
			v.Set(kv[i], kv[i+1])
		}
		return v.Encode()
	}
	formHeader := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	withBasic := map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Authorization": f.webBasic}
	w := ts.do(request{method: "POST", path: "/api/v1/introspect", body: form(), header: withBasic})
	var m map[string]any
	decode(t, w, &m)
	if w.Code != 200 || m["active"] != true || m["client_id"] != f.web.ID {
		t.Errorf("introspection by client_secret_basic = %d %v; want active with client_id %s", w.Code, m, f.web.ID)
	}
	for _, tc := range []struct {
		name string
		body string
		h    map[string]string
	}{
		{"a public client", form("client_id", f.cli.ID), formHeader},
		{"a wrong secret in the form", form("client_id", f.web.ID, "client_secret", "wrong"), formHeader},
		{"an unknown client", form("client_id", "nobody", "client_secret", "x"), formHeader},
	} {
		w := ts.do(request{method: "POST", path: "/api/v1/introspect", body: tc.body, header: tc.h})
		p := checkProblem(t, tc.name, w, http.StatusUnauthorized)
		if p.Error != "invalid_client" || !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Basic ") {
			t.Errorf("%s: error %q, WWW-Authenticate %q; want invalid_client and a Basic challenge", tc.name, p.Error, w.Header().Get("WWW-Authenticate"))
		}
	}
	// A service that only introspects registers a confidential client
	// with no flow; it introspects, and can get no token.
	svc, svcSecret, err := ts.oauthActions().AddClient(testActor, clientSpec{Name: "Resource server"})
	if err != nil {
		t.Fatal(err)
	}
	svcForm := form("client_id", svc.ID, "client_secret", svcSecret)
	w = ts.do(request{method: "POST", path: "/api/v1/introspect", body: svcForm, header: formHeader})
	decode(t, w, &m)
	if w.Code != 200 || m["active"] != true {
		t.Errorf("introspection by a client with no flow = %d %v; want active", w.Code, m)
	}
	w = ts.do(request{method: "POST", path: "/oauth/device_authorization", body: url.Values{"client_id": {svc.ID}, "client_secret": {svcSecret}, "scope": {scopeTokensRead}}.Encode(), header: formHeader})
	if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "unauthorized_client") {
		t.Errorf("device authorization by a client with no flow = %d %s; want 400 unauthorized_client", w.Code, w.Body)
	}
	// A personal token keeps its token id as client_id.
	tok, secret := ts.addToken(f.alice, "mine", nil, 0)
	w = ts.do(request{method: "POST", path: "/api/v1/introspect", body: url.Values{"token": {secret}}.Encode(), header: withBasic})
	decode(t, w, &m)
	if m["client_id"] != itoa(tok.ID) {
		t.Errorf("introspection of a personal token: client_id %v; want its id %d", m["client_id"], tok.ID)
	}
}

// TestOAuthMetadata checks the RFC 8414 document and its issuer.
func TestOAuthMetadata(t *testing.T) {
	ts := newTestServer(t)
	w := ts.do(request{method: "GET", path: "http://auth.example:8443/.well-known/oauth-authorization-server"})
	var m serverMetadata
	decode(t, w, &m)
	base := "http://auth.example:8443"
	if w.Code != 200 || m.Issuer != base || m.TokenEndpoint != base+"/oauth/token" || m.AuthorizationEndpoint != base+"/oauth/authorize" ||
		m.DeviceAuthorizationEndpoint != base+"/oauth/device_authorization" || m.RevocationEndpoint != base+"/oauth/revoke" ||
		m.IntrospectionEndpoint != base+"/api/v1/introspect" || !slices.Equal(m.CodeChallengeMethodsSupported, []string{"S256"}) ||
		!slices.Equal(m.ResponseTypesSupported, []string{"code"}) || !slices.Contains(m.GrantTypesSupported, grantDeviceCode) ||
		!slices.Equal(m.TokenEndpointAuthMethodsSupported, []string{"client_secret_basic", "client_secret_post", "none"}) ||
		!slices.Contains(m.ScopesSupported, scopeTokensRead) {
		t.Errorf("metadata = %d %+v", w.Code, m)
	}
	ts.cfg.TrustProxy = true
	w = ts.do(request{method: "GET", path: "http://auth.example/.well-known/oauth-authorization-server", header: map[string]string{"X-Forwarded-Proto": "https"}})
	decode(t, w, &m)
	if m.Issuer != "https://auth.example" {
		t.Errorf("issuer behind a trusted TLS proxy = %q; want https://auth.example", m.Issuer)
	}
}

func TestRedirectMatches(t *testing.T) {
	reg := []string{"https://app.example/cb", "http://127.0.0.1/cb", "http://[::1]:8080/cb?x=1", "com.example.app:/oauth"}
	for sent, want := range map[string]bool{
		"https://app.example/cb":         true,
		"https://app.example/cb/":        false,
		"https://app.example:443/cb":     false,
		"https://APP.example/cb":         false,
		"http://127.0.0.1/cb":            true,
		"http://127.0.0.1:51000/cb":      true,
		"http://127.0.0.1:51000/other":   false,
		"http://127.0.0.1:51000/cb#frag": false,
		"http://localhost:51000/cb":      false,
		"https://127.0.0.1:51000/cb":     false,
		"http://u@127.0.0.1:51000/cb":    false,
		"http://[::1]:9/cb?x=1":          true,
		"http://[::1]:9/cb":              false,
		"com.example.app:/oauth":         true,
		"com.example.app:/other":         false,
		"":                               false,
	} {
		if got := redirectMatches(reg, sent); got != want {
			t.Errorf("redirectMatches(%q) = %t; want %t", sent, got, want)
		}
	}
}

func TestUserCodes(t *testing.T) {
	for range 100 {
		c, err := newUserCode()
		if err != nil || !regexp.MustCompile(`^[BCDFGHJKLMNPQRSTVWXZ]{8}$`).MatchString(c) {
			t.Fatalf("newUserCode() = %q, %v", c, err)
		}
	}
	for typed, want := range map[string]string{
		"BCDF-GHJK": "BCDFGHJK", "bcdf ghjk": "BCDFGHJK", " bc-df-gh-jk ": "BCDFGHJK",
		"BCDF-GHJ": "", "BCDF-GHJA": "", "BCDF-GHJ1": "", "": "", "BCDF-GHJKL": "",
	} {
		got, ok := normalizeUserCode(typed)
		if got != want || ok != (want != "") {
			t.Errorf("normalizeUserCode(%q) = %q, %t; want %q", typed, got, ok, want)
		}
	}
}

func TestPKCEChecks(t *testing.T) {
	v := oauth2.GenerateVerifier()
	if pkceS256(v) != oauth2.S256ChallengeFromVerifier(v) || !validVerifier(v) || !validChallenge(pkceS256(v)) {
		t.Errorf("pkceS256 disagrees with x/oauth2, or its verifier or challenge is refused")
	}
	for _, bad := range []string{"", strings.Repeat("a", 42), strings.Repeat("a", 129), strings.Repeat("a", 42) + "+"} {
		if validVerifier(bad) {
			t.Errorf("validVerifier(%q) = true", bad)
		}
	}
	for _, bad := range []string{"", "short", pkceS256(v) + "=", pkceS256(v)[:42] + "/"} {
		if validChallenge(bad) {
			t.Errorf("validChallenge(%q) = true", bad)
		}
	}
}
