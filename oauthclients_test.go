package main

import (
	"bytes"
	"errors"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCheckRedirectURI(t *testing.T) {
	for _, uri := range []string{
		"https://app.example.com/callback",
		"https://app.example.com:8443/cb?tenant=7",
		"http://127.0.0.1/callback",
		"http://127.0.0.1:49152/callback",
		"http://[::1]:8080/cb",
		"http://localhost:3000/cb",
		"com.example.app:/oauth2redirect",
		"com.example.app:callback",
	} {
		if err := checkRedirectURI(uri); err != nil {
			t.Errorf("checkRedirectURI(%q) = %v; want it accepted", uri, err)
		}
	}
	for _, tt := range []struct{ uri, says string }{
		{"", "empty"},
		{"/callback", "absolute"},
		{"app.example.com/callback", "absolute"},
		{"https://app.example.com/cb#frag", "fragment"},
		{"https://app.example.com/cb#", "fragment"},
		{"http://app.example.com/cb", "loopback"},
		{"http://127.0.0.2/cb", "loopback"},
		{"http://localhost.example.com/cb", "loopback"},
		{"https:///cb", "host"},
		{"https://user:pw@app.example.com/cb", "user name"},
		{"javascript:alert(1)", "private-use"},
		{"data:text/html,hi", "private-use"},
		{"file:///etc/passwd", "private-use"},
		{"myapp:/cb", "private-use"},
		{"com.example.app://host/cb", "private-use"},
		{"com.example.app:", "private-use"},
		{"https://app.example.com/c b", "spaces"},
		{"https://app.example.com/\ncb", "control"},
		{"https://app.example.com/" + strings.Repeat("a", maxRedirectURILen), "longer"},
	} {
		err := checkRedirectURI(tt.uri)
		var he *httpError
		if !errors.As(err, &he) || he.status != http.StatusBadRequest || !strings.Contains(he.detail, tt.says) {
			t.Errorf("checkRedirectURI(%q) = %v; want a 400 that says %q", tt.uri, err, tt.says)
		}
	}
}

// TestAddClientRefusesBadSpecs checks every refusal of AddClient: a clear
// 400 or 409, and nothing stored.
func TestAddClientRefusesBadSpecs(t *testing.T) {
	ts := newTestServer(t)
	acts := ts.oauthActions()
	if _, _, err := acts.AddClient(testActor, clientSpec{Name: "Taken", RedirectURIs: []string{"https://a.example/cb"}}); err != nil {
		t.Fatal(err)
	}
	many := make([]string, maxRedirectURIs+1)
	for i := range many {
		many[i] = "https://a.example/cb" + itoa(uint64(i))
	}
	cb := []string{"https://app.example.com/cb"}
	for _, tt := range []struct {
		what   string
		spec   clientSpec
		status int
		says   string
	}{
		{"no name", clientSpec{Name: "  ", RedirectURIs: cb}, 400, "name is required"},
		{"a long name", clientSpec{Name: strings.Repeat("x", maxClientNameLen+1), RedirectURIs: cb}, 400, "at most 60"},
		{"a control character", clientSpec{Name: "a\tb", RedirectURIs: cb}, 400, "control"},
		{"invalid UTF-8", clientSpec{Name: "a\xffb", RedirectURIs: cb}, 400, "UTF-8"},
		{"a taken name", clientSpec{Name: "tAKEN", RedirectURIs: cb}, 409, `"tAKEN" already exists`},
		{"a public client with no flow", clientSpec{Name: "x", Public: true}, 400, "redirect URI"},
		{"a bad redirect URI", clientSpec{Name: "x", RedirectURIs: []string{"http://evil.example/cb"}}, 400, "loopback"},
		{"too many redirect URIs", clientSpec{Name: "x", RedirectURIs: many}, 400, "at most 10"},
		{"a short lifetime", clientSpec{Name: "x", Device: true, AccessTTL: time.Minute}, 400, "lifetime"},
		{"a long lifetime", clientSpec{Name: "x", Device: true, AccessTTL: 31 * 24 * time.Hour}, 400, "lifetime"},
		{"a negative lifetime", clientSpec{Name: "x", Device: true, AccessTTL: -time.Hour}, 400, "lifetime"},
	} {
		before := ts.snapshot()
		_, secret, err := acts.AddClient(testActor, tt.spec)
		var he *httpError
		if !errors.As(err, &he) || he.status != tt.status || !strings.Contains(he.detail, tt.says) || secret != "" {
			t.Errorf("AddClient with %s = %q, %v; want %d saying %q", tt.what, secret, err, tt.status, tt.says)
		}
		if a := ts.classifyError(err); a.status != tt.status {
			t.Errorf("classifyError(AddClient with %s) = %d; want %d", tt.what, a.status, tt.status)
		}
		assertUnchanged(t, "AddClient with "+tt.what, before, ts.snapshot())
	}
}

// TestAddClient checks what AddClient stores: a random id, the secret's
// hash only for a confidential client, none for a public one, repeated
// redirect URIs once.
func TestAddClient(t *testing.T) {
	ts := newTestServer(t)
	acts := ts.oauthActions()
	c, secret, err := acts.AddClient(testActor, clientSpec{Name: " Web app ", RedirectURIs: []string{"https://app.example.com/cb", "https://app.example.com/cb"}, CreatedBy: 7})
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9A-Za-z]{22}$`).MatchString(c.ID) {
		t.Errorf("client id %q is not 22 base62 characters", c.ID)
	}
	if _, err := clientSecretFormat.parse(secret); err != nil || !strings.HasPrefix(secret, "tkdcs_") {
		t.Errorf("client secret %q does not parse as a tkdcs_ secret: %v", secret, err)
	}
	stored, err := ts.store.ClientByID(c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if stored.Name != "Web app" || len(stored.RedirectURIs) != 1 || stored.Public || stored.SecretHash == nil ||
		*stored.SecretHash != hashToken(secret) || stored.CreatedBy != 7 || !stored.CreatedAt.Equal(ts.clock.Now()) || stored.AccessTTL != 0 {
		t.Errorf("stored client = %+v; want Web app with one URI, the secret's hash, by 7, now", stored)
	}
	checkNotStored(t, ts, "the client secret", secret)

	pub, secret, err := acts.AddClient(testActor, clientSpec{Name: "cli", Public: true, Device: true, AccessTTL: time.Hour})
	if err != nil || secret != "" {
		t.Fatalf("AddClient of a public client = %q, %v; want no secret", secret, err)
	}
	if stored, _ := ts.store.ClientByID(pub.ID); stored.SecretHash != nil || !stored.Public || !stored.Device || stored.AccessTTL != time.Hour {
		t.Errorf("stored public client = %+v", stored)
	}
	if pub.ID == c.ID {
		t.Errorf("two clients got the id %q", c.ID)
	}
}

// issueTestGrant makes user u approve client c for scopes, through the
// store as the protocol does, and returns the grant with its access
// token's secret.
func issueTestGrant(t *testing.T, ts *testServer, u userRecord, c clientRecord, scopes []string) (grantRecord, string) {
	t.Helper()
	return storeTestGrant(t, ts.server.store, ts.clock.Now(), u, c, scopes)
}

// storeTestGrant is issueTestGrant on st at now.
func storeTestGrant(t *testing.T, st store, now time.Time, u userRecord, c clientRecord, scopes []string) (grantRecord, string) {
	t.Helper()
	code := hashToken("code " + newFormKey())
	err := st.CreateAuthCode(code, authCodeRecord{Client: c.ID, User: u.ID, Scopes: scopes,
		RedirectURI: c.RedirectURIs[0], Challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", CreatedAt: now, ExpiresAt: now.Add(time.Minute)})
	if err != nil {
		t.Fatalf("CreateAuthCode: %v", err)
	}
	access, err := mustFormat(t, defaultTokenPrefix).generate()
	if err != nil {
		t.Fatal(err)
	}
	expires := now.Add(c.accessTTL())
	issue := &oauthIssue{
		Access:       tokenRecord{Owner: u.ID, Name: c.Name, Scopes: scopes, CreatedAt: now, ExpiresAt: &expires, Hint: tokenHint(access)},
		AccessHash:   hashToken(access),
		RefreshHash:  hashToken("refresh " + newFormKey()),
		RefreshUntil: now.Add(30 * 24 * time.Hour),
	}
	g, _, err := st.RedeemAuthCode(testActor, code, now, issue)
	if err != nil {
		t.Fatalf("RedeemAuthCode: %v", err)
	}
	return g, access
}

// addTestClient registers a confidential client with one redirect URI.
func addTestClient(t *testing.T, ts *testServer, name string) (clientRecord, string) {
	t.Helper()
	c, secret, err := ts.oauthActions().AddClient(testActor, clientSpec{Name: name, RedirectURIs: []string{"https://" + strings.ToLower(strings.ReplaceAll(name, " ", "-")) + ".example/cb"}})
	if err != nil {
		t.Fatalf("AddClient(%q): %v", name, err)
	}
	return c, secret
}

// TestCLIClientLifecycle drives client add, list and remove: what they
// print, what they exit with, what the database holds, and that bad input
// changes nothing.
func TestCLIClientLifecycle(t *testing.T) {
	clearTokendEnv(t)
	db := filepath.Join(t.TempDir(), "tokend.db")
	if _, _, err := runCLI(t, "a password for alice\n", "user", "add", "-db", db, "-password-stdin", "-admin", "alice"); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := runCLI(t, "", "client", "add", "-db", db, "-redirect-uri", "https://app.example.com/cb",
		"-redirect-uri", "http://127.0.0.1/cb", "-access-ttl", "1h", "Web App")
	if err != nil {
		t.Fatalf("client add Web App = %v (stderr %q)", err, stderr)
	}
	m := regexp.MustCompile(`^client_id: ([0-9A-Za-z]{22})\nclient_secret: (tkdcs_[0-9A-Za-z]{49})\n$`).FindStringSubmatch(stdout)
	if m == nil {
		t.Fatalf("client add printed %q; want the client id and secret lines", stdout)
	}
	id, secret := m[1], m[2]
	if strings.Contains(stderr, secret) || !strings.Contains(stderr, "shown this once") {
		t.Errorf("client add's stderr = %q; want a warning and never the secret", stderr)
	}
	stdout, _, err = runCLI(t, "", "client", "add", "-db", db, "-public", "-device", "cli tool")
	pub := regexp.MustCompile(`^client_id: ([0-9A-Za-z]{22})\n$`).FindStringSubmatch(stdout)
	if err != nil || pub == nil {
		t.Fatalf("client add -public -device = %q, %v; want the id alone", stdout, err)
	}

	// Bad input: an error that says what is wrong, and nothing written.
	before := dumpFile(t, db)
	for _, tt := range []struct {
		args []string
		says string
	}{
		{[]string{"-redirect-uri", "http://app.example.com/cb", "x"}, "loopback"},
		{[]string{"-redirect-uri", "https://a.example/cb#top", "x"}, "fragment"},
		{[]string{"-public", "x"}, "redirect URI"},
		{[]string{"-device", "WEB APP"}, "already exists"},
		{[]string{"-device", "-access-ttl", "2m", "x"}, "lifetime"},
		{[]string{"-device", "-access-ttl", "soon", "x"}, "-access-ttl"},
		{[]string{"-device"}, "want 1 argument"},
		{[]string{"-device", "-bogus", "x"}, "bogus"},
	} {
		args := append([]string{"client", "add", "-db", db}, tt.args...)
		if _, _, err := runCLI(t, "", args...); err == nil || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("tokend %s = %v; want an error saying %q", strings.Join(args, " "), err, tt.says)
		}
	}
	assertUnchanged(t, "refused client add commands", before, dumpFile(t, db))

	stdout, _, err = runCLI(t, "", "client", "list", "-db", db)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[2], id) ||
		!strings.Contains(lines[2], "Web App") || !strings.Contains(lines[2], "confidential") || !strings.Contains(lines[2], "1h0m0s") ||
		!strings.Contains(lines[2], "https://app.example.com/cb http://127.0.0.1/cb") ||
		!strings.Contains(lines[1], "cli tool") || !strings.Contains(lines[1], "public") || !strings.Contains(lines[1], "device") ||
		!strings.Contains(lines[1], "8h0m0s") || strings.Contains(stdout, "tkdcs_") {
		t.Errorf("client list =\n%s\nwant a header, cli tool then Web App (by name, ignoring case), no secret", stdout)
	}

	// Only the secret's hash is in the database file.
	raw, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	h := hashToken(secret)
	if bytes.Contains(raw, []byte(secret)) || bytes.Contains(raw, []byte(secret[len(clientSecretPrefix):])) {
		t.Errorf("the database file holds the client secret")
	}
	st, err := openStore(db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.ClientByID(id)
	st.Close()
	if err != nil || c.SecretHash == nil || *c.SecretHash != h || c.AccessTTL != time.Hour || len(c.RedirectURIs) != 2 {
		t.Fatalf("stored client = %+v, %v; want the secret's hash, 1h and two URIs", c, err)
	}

	// Remove by name (any case), then by id; a second removal fails.
	stdout, _, err = runCLI(t, "", "client", "remove", "-db", db, "web app")
	if err != nil || !strings.Contains(stdout, `removed client "Web App"`) {
		t.Errorf("client remove web app = %q, %v", stdout, err)
	}
	if _, _, err = runCLI(t, "", "client", "remove", "-db", db, pub[1]); err != nil {
		t.Errorf("client remove %s = %v", pub[1], err)
	}
	before = dumpFile(t, db)
	if _, _, err := runCLI(t, "", "client", "remove", "-db", db, id); err == nil || !strings.Contains(err.Error(), "no client") {
		t.Errorf("client remove of a removed client = %v; want no client", err)
	}
	assertUnchanged(t, "a refused client remove", before, dumpFile(t, db))
	if stdout, _, _ := runCLI(t, "", "client", "list", "-db", db); strings.Count(stdout, "\n") != 1 {
		t.Errorf("client list after removing both = %q; want the header alone", stdout)
	}
	if _, _, err := runCLI(t, "", "client", "frobnicate", "-db", db); err == nil || !strings.Contains(err.Error(), "want add, list or remove") {
		t.Errorf("client frobnicate = %v; want the subcommands named", err)
	}
}

// TestCLIClientRemoveRevokesGrants checks that removing a client at the
// command line revokes what its grants issued.
func TestCLIClientRemoveRevokesGrants(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	c, _ := addTestClient(t, ts, "Web App")
	g, access := issueTestGrant(t, ts, alice, c, scopesRead)
	checkAccessWorks(t, ts, "the grant's access token", access)
	ts.store.Close()
	stdout, _, err := runCLI(t, "", "client", "remove", "-db", ts.dbPath, c.ID)
	if err != nil || !strings.Contains(stdout, c.ID) {
		t.Fatalf("client remove = %q, %v", stdout, err)
	}
	st, err := openStore(ts.dbPath, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if grants, err := st.GrantsOf(alice.ID); err != nil || len(grants) != 0 {
		t.Errorf("alice's grants after the removal = %+v, %v; want none (grant %d gone)", grants, err, g.ID)
	}
	if _, _, err := st.TokenByHash(hashToken(access)); !errors.Is(err, errNotFound) {
		t.Errorf("the grant's access token after the removal: %v; want errNotFound", err)
	}
	if err := st.Check(); err != nil {
		t.Errorf("Check after the removal: %v", err)
	}
}

// clientBody is a client as the API answers it.
type clientBody = clientJSON

func TestAPIClients(t *testing.T) {
	ts := newTestServer(t)
	root := ts.addUser("root", true)
	bob := ts.addUser("bob", false)
	_, admin := ts.addToken(root, "admin", []string{scopeAdmin}, 0)
	_, rootRead := ts.addToken(root, "read", scopesRead, 0)
	_, bobAdmin := ts.addToken(bob, "not really", []string{scopeAdmin}, 0) // admin scope, but bob is no admin

	// Who may: an admin's token with the admin scope, nobody else.
	before := ts.snapshot()
	body := `{"name":"Web App","redirect_uris":["https://app.example.com/cb"]}`
	for _, tt := range []struct {
		what, token string
		status      int
	}{
		{"no token", "", 401},
		{"an admin's token without the admin scope", rootRead, 403},
		{"a non-admin's token", bobAdmin, 403},
	} {
		checkProblem(t, "POST /api/v1/clients with "+tt.what, ts.do(request{method: "POST", path: "/api/v1/clients", token: tt.token, body: body}), tt.status)
		checkProblem(t, "GET /api/v1/clients with "+tt.what, ts.do(request{method: "GET", path: "/api/v1/clients", token: tt.token}), tt.status)
	}
	assertUnchanged(t, "refused client requests", before, ts.snapshot())

	w := ts.do(request{method: "POST", path: "/api/v1/clients", token: admin, body: body})
	if w.Code != http.StatusCreated || w.Header().Get("Cache-Control") != "no-store" {
		t.Fatalf("POST /api/v1/clients = %d, Cache-Control %q; want 201 no-store; body: %s", w.Code, w.Header().Get("Cache-Control"), w.Body)
	}
	var web clientBody
	decode(t, w, &web)
	if web.Name != "Web App" || web.Public || web.AccessTTLSeconds != 8*3600 || !strings.HasPrefix(web.Secret, clientSecretPrefix) {
		t.Errorf("POST /api/v1/clients answered %+v", web)
	}
	if c, err := ts.store.ClientByID(web.ID); err != nil || c.SecretHash == nil || *c.SecretHash != hashToken(web.Secret) || c.CreatedBy != root.ID {
		t.Errorf("stored client = %+v, %v; want the secret's hash, made by root", c, err)
	}
	checkNotStored(t, ts, "the client secret", web.Secret)
	if strings.Contains(ts.logs.String(), web.Secret) {
		t.Errorf("the log holds the client secret")
	}
	w = ts.do(request{method: "POST", path: "/api/v1/clients", token: admin, body: `{"name":"cli","public":true,"device":true,"access_ttl_seconds":600}`})
	var cli clientBody
	decode(t, w, &cli)
	if w.Code != 201 || cli.Secret != "" || !cli.Public || !cli.Device || cli.AccessTTLSeconds != 600 || len(cli.RedirectURIs) != 0 {
		t.Errorf("POST /api/v1/clients of a public device client = %d %+v", w.Code, cli)
	}

	// Bad input: a problem that says what is wrong, nothing stored.
	before = ts.snapshot()
	for _, tt := range []struct {
		body   string
		status int
		says   string
	}{
		{`{"name":"web app","redirect_uris":["https://x.example/cb"]}`, 409, "already exists"},
		{`{"name":"x","redirect_uris":["http://x.example/cb"]}`, 400, "loopback"},
		{`{"name":"x","public":true}`, 400, "redirect URI"},
		{`{"name":"","device":true}`, 400, "name is required"},
		{`{"name":"x","device":true,"access_ttl_seconds":60}`, 400, "access_ttl_seconds"},
		{`{"name":"x","device":true,"access_ttl_seconds":-1}`, 400, "access_ttl_seconds"},
		{`{"name":"x","device":true,"access_ttl_seconds":9223372036854775807}`, 400, "access_ttl_seconds"},
		{`{"name":"x","device":true,"secret":"mine"}`, 400, "unknown field"},
		{`{"name":"x","device":"yes"}`, 400, "device"},
	} {
		p := checkProblem(t, "POST /api/v1/clients "+tt.body, ts.do(request{method: "POST", path: "/api/v1/clients", token: admin, body: tt.body}), tt.status)
		checkDetail(t, "POST /api/v1/clients "+tt.body, p, tt.says)
	}
	assertUnchanged(t, "refused POST /api/v1/clients", before, ts.snapshot())

	var list []clientBody
	w = ts.do(request{method: "GET", path: "/api/v1/clients", token: admin})
	decode(t, w, &list)
	if w.Code != 200 || len(list) != 2 || list[0].ID != cli.ID || list[1].ID != web.ID || list[1].Secret != "" {
		t.Errorf("GET /api/v1/clients = %d %+v; want cli then Web App, no secret", w.Code, list)
	}
	var one clientBody
	w = ts.do(request{method: "GET", path: "/api/v1/clients/" + web.ID, token: admin})
	decode(t, w, &one)
	if w.Code != 200 || one.ID != web.ID || one.Secret != "" || !slices.Equal(one.RedirectURIs, []string{"https://app.example.com/cb"}) {
		t.Errorf("GET /api/v1/clients/%s = %d %+v", web.ID, w.Code, one)
	}
	checkProblem(t, "GET /api/v1/clients/nope", ts.do(request{method: "GET", path: "/api/v1/clients/nope", token: admin}), 404)

	// Removing a client revokes its grants: their tokens die at once,
	// though the auth cache held them.
	c, _ := ts.store.ClientByID(web.ID)
	_, access := issueTestGrant(t, ts, bob, c, scopesRead)
	checkAccessWorks(t, ts, "bob's grant's token", access)
	before = ts.snapshot()
	checkProblem(t, "DELETE /api/v1/clients/nope", ts.do(request{method: "DELETE", path: "/api/v1/clients/nope", token: admin}), 404)
	checkProblem(t, "DELETE as bob", ts.do(request{method: "DELETE", path: "/api/v1/clients/" + web.ID, token: bobAdmin}), 403)
	assertUnchanged(t, "refused DELETE /api/v1/clients", before, ts.snapshot())
	if w := ts.do(request{method: "DELETE", path: "/api/v1/clients/" + web.ID, token: admin}); w.Code != http.StatusNoContent {
		t.Fatalf("DELETE /api/v1/clients/%s = %d; want 204; body: %s", web.ID, w.Code, w.Body)
	}
	checkDead(t, ts, "bob's grant's token after the client went", access)
	if grants, err := ts.store.GrantsOf(bob.ID); err != nil || len(grants) != 0 {
		t.Errorf("bob's grants after the client went = %+v, %v", grants, err)
	}
	checkProblem(t, "GET a removed client", ts.do(request{method: "GET", path: "/api/v1/clients/" + web.ID, token: admin}), 404)
	checkStoreConsistent(t, ts)
}

// grantBody is a grant as the API answers it.
type grantBody = grantJSON

func TestAPIGrants(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	bob := ts.addUser("bob", false)
	_, aliceRead := ts.addToken(alice, "read", scopesRead, 0)
	_, aliceWrite := ts.addToken(alice, "write", []string{scopeTokensWrite}, 0)
	_, bobAll := ts.addToken(bob, "all", []string{scopeTokensRead, scopeTokensWrite}, 0)
	web, _ := addTestClient(t, ts, "Web App")
	other, _ := addTestClient(t, ts, "Other")
	g1, access1 := issueTestGrant(t, ts, alice, web, scopesRead)
	ts.clock.Add(time.Minute)
	g2, access2 := issueTestGrant(t, ts, alice, other, []string{scopeTokensRead, scopeTokensWrite})

	var grants []grantBody
	w := ts.do(request{method: "GET", path: "/api/v1/user/grants", token: aliceRead})
	decode(t, w, &grants)
	if w.Code != 200 || len(grants) != 2 || grants[0].ID != g2.ID || grants[0].ClientName != "Other" || grants[0].ClientID != other.ID ||
		!slices.Equal(grants[0].Scopes, []string{scopeTokensRead, scopeTokensWrite}) || grants[1].ID != g1.ID || grants[1].LastUsedAt != nil {
		t.Errorf("GET /api/v1/user/grants = %d %+v; want Other then Web App", w.Code, grants)
	}
	checkProblem(t, "GET /api/v1/user/grants with tokens:write alone", ts.do(request{method: "GET", path: "/api/v1/user/grants", token: aliceWrite}), 403)
	w = ts.do(request{method: "GET", path: "/api/v1/user/grants", token: bobAll})
	if w.Code != 200 || strings.TrimSpace(w.Body.String()) != "[]" {
		t.Errorf("GET /api/v1/user/grants as bob = %d %s; want []", w.Code, w.Body)
	}

	// Revoking: tokens:write, one's own grant only; the token dies at
	// once, though the auth cache held it.
	checkAccessWorks(t, ts, "the grant's token", access1)
	before := ts.snapshot()
	for _, tt := range []struct {
		what, path, token string
		status            int
	}{
		{"with tokens:read alone", "/api/v1/user/grants/" + itoa(g1.ID), aliceRead, 403},
		{"of another user", "/api/v1/user/grants/" + itoa(g1.ID), bobAll, 404},
		{"of no grant", "/api/v1/user/grants/999", aliceWrite, 404},
		{"of a malformed id", "/api/v1/user/grants/x1", aliceWrite, 404},
	} {
		checkProblem(t, "DELETE a grant "+tt.what, ts.do(request{method: "DELETE", path: tt.path, token: tt.token}), tt.status)
	}
	assertUnchanged(t, "refused grant revocations", before, ts.snapshot())
	if w := ts.do(request{method: "DELETE", path: "/api/v1/user/grants/" + itoa(g1.ID), token: aliceWrite}); w.Code != http.StatusNoContent {
		t.Fatalf("DELETE /api/v1/user/grants/%d = %d; want 204; body: %s", g1.ID, w.Code, w.Body)
	}
	checkDead(t, ts, "the revoked grant's token", access1)
	checkAccessWorks(t, ts, "the other grant's token", access2)
	if left, _ := ts.store.GrantsOf(alice.ID); len(left) != 1 || left[0].ID != g2.ID {
		t.Errorf("alice's grants after revoking one = %+v; want %d alone", left, g2.ID)
	}
	checkProblem(t, "DELETE a revoked grant", ts.do(request{method: "DELETE", path: "/api/v1/user/grants/" + itoa(g1.ID), token: aliceWrite}), 404)
	checkStoreConsistent(t, ts)
}

func TestClientsPage(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("root", true)
	bob := ts.addUser("bob", false)
	cookie := ts.login("root")
	bobCookie := ts.login("bob")

	// Admins only.
	page := checkPage(t, "GET / as bob", ts.page(pageReq{method: "GET", path: "/", cookie: bobCookie}), 200)
	if strings.Contains(page, `href="/admin/clients"`) {
		t.Errorf("bob's menu links to the clients page")
	}
	page = checkPage(t, "GET / as root", ts.page(pageReq{method: "GET", path: "/", cookie: cookie}), 200)
	if !strings.Contains(page, `href="/admin/clients"`) {
		t.Errorf("root's menu does not link to the clients page")
	}
	before := ts.snapshot()
	checkPage(t, "GET /admin/clients as bob", ts.page(pageReq{method: "GET", path: "/admin/clients", cookie: bobCookie}), 403, "Only admins")
	checkPage(t, "POST /admin/clients as bob", ts.page(pageReq{method: "POST", path: "/admin/clients", cookie: bobCookie,
		form: url.Values{"name": {"x"}, "device": {"1"}}}), 403, "Only admins")
	assertUnchanged(t, "bob on the clients page", before, ts.snapshot())

	checkPage(t, "GET /admin/clients", ts.page(pageReq{method: "GET", path: "/admin/clients", cookie: cookie}), 200, "No clients yet", "Register a client")

	// Bad input shows the form again, as sent, with what is wrong.
	for _, tt := range []struct {
		what   string
		form   url.Values
		status int
		says   string
	}{
		{"a bad redirect URI", url.Values{"name": {"Web App"}, "redirect_uris": {"http://app.example.com/cb"}}, 400, "loopback"},
		{"a public client with no flow", url.Values{"name": {"Web App"}, "public": {"1"}}, 400, "redirect URI"},
		{"a bad lifetime", url.Values{"name": {"Web App"}, "device": {"1"}, "access_ttl": {"forever"}}, 400, "lifetime"},
	} {
		before := ts.snapshot()
		page := checkPage(t, "POST /admin/clients with "+tt.what, ts.page(pageReq{method: "POST", path: "/admin/clients", cookie: cookie, form: tt.form}), tt.status, tt.says)
		if !strings.Contains(page, `value="Web App"`) {
			t.Errorf("POST /admin/clients with %s lost the name typed", tt.what)
		}
		assertUnchanged(t, "POST /admin/clients with "+tt.what, before, ts.snapshot())
	}

	w := ts.page(pageReq{method: "POST", path: "/admin/clients", cookie: cookie, form: url.Values{"name": {"Web App"},
		"redirect_uris": {"https://app.example.com/cb\r\n\r\nhttp://127.0.0.1/cb\r\n"}, "access_ttl": {"2h"}}})
	page = checkPage(t, "POST /admin/clients", w, http.StatusCreated, "Client Web App registered", "Copy the client secret now")
	if w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("the page with the secret has Cache-Control %q; want no-store", w.Header().Get("Cache-Control"))
	}
	secret := regexp.MustCompile(`tkdcs_[0-9A-Za-z]{49}`).FindString(page)
	clients, _ := ts.store.Clients()
	if secret == "" || len(clients) != 1 || clients[0].SecretHash == nil || *clients[0].SecretHash != hashToken(secret) ||
		!strings.Contains(page, clients[0].ID) || len(clients[0].RedirectURIs) != 2 || clients[0].AccessTTL != 2*time.Hour {
		t.Fatalf("after registering Web App on the page: clients %+v, secret %q", clients, secret)
	}
	web := clients[0]
	checkNotStored(t, ts, "the client secret", secret)
	// The list shows it, never its secret again.
	page = checkPage(t, "GET /admin/clients", ts.page(pageReq{method: "GET", path: "/admin/clients", cookie: cookie}), 200, "Web App", "confidential", "code")
	if strings.Contains(page, "tkdcs_") {
		t.Errorf("the clients page shows a secret again")
	}
	// Sending the form again makes nothing.
	before = ts.snapshot()
	checkPage(t, "POST /admin/clients again", ts.page(pageReq{method: "POST", path: "/admin/clients", cookie: cookie,
		form: url.Values{"name": {"web app"}, "device": {"1"}}}), http.StatusConflict, "already exists")
	assertUnchanged(t, "POST /admin/clients again", before, ts.snapshot())

	// A public device client has no secret to show.
	page = checkPage(t, "POST /admin/clients public", ts.page(pageReq{method: "POST", path: "/admin/clients", cookie: cookie,
		form: url.Values{"name": {"cli"}, "public": {"1"}, "device": {"1"}}}), http.StatusCreated, "Client cli registered")
	if strings.Contains(page, "tkdcs_") || strings.Contains(page, "Copy the client secret") {
		t.Errorf("the page for a public client shows a secret")
	}

	// Remove, with the box ticked; its grants go.
	_, access := issueTestGrant(t, ts, bob, web, scopesRead)
	checkAccessWorks(t, ts, "bob's grant's token", access)
	path := "/admin/clients/" + web.ID
	checkPage(t, "GET "+path, ts.page(pageReq{method: "GET", path: path, cookie: cookie}), 200, "Web App", web.ID, "https://app.example.com/cb", "2h0m0s", "Remove Web App")
	checkPage(t, "GET a client that is not", ts.page(pageReq{method: "GET", path: "/admin/clients/nope", cookie: cookie}), 404)
	before = ts.snapshot()
	checkPage(t, "remove without the box", ts.page(pageReq{method: "POST", path: path + "/remove", cookie: cookie, form: url.Values{}}), 400, "Tick the box")
	checkPage(t, "remove as bob", ts.page(pageReq{method: "POST", path: path + "/remove", cookie: bobCookie, form: url.Values{"confirm": {"1"}}}), 403)
	assertUnchanged(t, "refused removals", before, ts.snapshot())
	w = ts.page(pageReq{method: "POST", path: path + "/remove", cookie: cookie, form: url.Values{"confirm": {"1"}}})
	checkRedirect(t, "remove Web App", w, "/admin/clients")
	if _, err := ts.store.ClientByID(web.ID); !errors.Is(err, errNotFound) {
		t.Errorf("Web App after removal: %v", err)
	}
	checkDead(t, ts, "bob's grant's token after the client went", access)
	checkStoreConsistent(t, ts)
}

// TestClientsPageNeedsSudo checks that registering a client is a
// sensitive action: past the sudo window it wants the password.
func TestClientsPageNeedsSudo(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("root", true)
	cookie := ts.login("root")
	ts.clock.Add(2 * time.Hour)
	form := url.Values{"name": {"cli"}, "device": {"1"}}
	checkPage(t, "POST /admin/clients past the sudo window", ts.page(pageReq{method: "POST", path: "/admin/clients", cookie: cookie, form: form}), 403, "enter your password")
	if clients, err := ts.store.Clients(); err != nil || len(clients) != 0 {
		t.Errorf("clients after a refused POST = %+v, %v; want none", clients, err)
	}
	form.Set("sudo_password", "password-of-root")
	checkPage(t, "POST /admin/clients with the password", ts.page(pageReq{method: "POST", path: "/admin/clients", cookie: cookie, form: form}), 201, "Client cli registered")
}

// TestAuthorizedApps checks the account page's list of grants and their
// revocation, with its confirmation.
func TestAuthorizedApps(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	bob := ts.addUser("bob", false)
	cookie := ts.login("alice")
	checkPage(t, "GET /account with no grant", ts.page(pageReq{method: "GET", path: "/account", cookie: cookie}), 200, "Authorized apps", "No app acts as you")

	web, _ := addTestClient(t, ts, "Web App")
	g, access := issueTestGrant(t, ts, alice, web, []string{scopeTokensRead, scopeIntrospect})
	bobGrant, _ := issueTestGrant(t, ts, bob, web, scopesRead)
	checkAccessWorks(t, ts, "alice's grant's token", access)
	ts.clock.Add(3 * time.Hour)
	if _, err := ts.flushLastUsed(); err != nil {
		t.Fatal(err)
	}
	page := checkPage(t, "GET /account", ts.page(pageReq{method: "GET", path: "/account", cookie: cookie}), 200,
		"Authorized apps", "Web App", "tokens:read", "introspect", "Approved 3 hours ago", "last used 3 hours ago")
	link := "/account/grants/" + itoa(g.ID) + "/revoke"
	if !strings.Contains(page, `href="`+link+`"`) {
		t.Errorf("the account page has no link to %s", link)
	}

	checkPage(t, "GET "+link, ts.page(pageReq{method: "GET", path: link, cookie: cookie}), 200, "Revoke Web App?", "tokens:read")
	before := ts.snapshot()
	other := "/account/grants/" + itoa(bobGrant.ID) + "/revoke"
	checkPage(t, "GET bob's grant as alice", ts.page(pageReq{method: "GET", path: other, cookie: cookie}), 404)
	checkPage(t, "POST bob's grant as alice", ts.page(pageReq{method: "POST", path: other, cookie: cookie, form: url.Values{}}), 404)
	checkPage(t, "POST a malformed grant id", ts.page(pageReq{method: "POST", path: "/account/grants/x/revoke", cookie: cookie, form: url.Values{}}), 404)
	w := ts.page(pageReq{method: "POST", path: link, cookie: cookie, form: url.Values{}, header: map[string]string{"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}})
	checkPage(t, "POST from another site", w, 403, "another site")
	assertUnchanged(t, "refused grant revocations", before, ts.snapshot())

	w = ts.page(pageReq{method: "POST", path: link, cookie: cookie, form: url.Values{}})
	checkRedirect(t, "POST "+link, w, "/account")
	if flash := flashOf(t, ts, w); !strings.Contains(flash, "Revoked Web App") {
		t.Errorf("the flash after revoking = %q", flash)
	}
	checkDead(t, ts, "alice's grant's token after revoking", access)
	if left, _ := ts.store.GrantsOf(bob.ID); len(left) != 1 {
		t.Errorf("bob's grants after alice revoked hers = %+v; want his one", left)
	}
	checkPage(t, "GET /account after revoking", ts.page(pageReq{method: "GET", path: "/account", cookie: cookie}), 200, "No app acts as you")
}

// checkAccessWorks asserts that the access token secret of a grant is
// accepted, as the caller's own.
func checkAccessWorks(t *testing.T, ts *testServer, what, secret string) {
	t.Helper()
	if w := ts.do(request{method: "GET", path: "/api/v1/user", token: secret}); w.Code != http.StatusOK {
		t.Errorf("%s: GET /api/v1/user = %d; want 200; body: %s", what, w.Code, w.Body)
	}
}

// TestReadmeOAuthClients runs the README's client commands, as written,
// on a fresh database.
func TestReadmeOAuthClients(t *testing.T) {
	clearTokendEnv(t)
	db := filepath.Join(t.TempDir(), "tokend.db")
	if _, _, err := runCLI(t, "a password for alice\n", "user", "add", "-db", db, "-password-stdin", "-admin", "alice"); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for _, line := range strings.Split(strings.TrimSpace(readmeBlocks(t, "oauth-clients")[0]), "\n") {
		words := strings.Fields(line)
		if len(words) < 3 || words[0] != "tokend" {
			t.Fatalf("README line %q is not a tokend command", line)
		}
		stdout, stderr, err := runCLI(t, "", append(append(words[1:3:3], "-db", db), words[3:]...)...)
		if err != nil {
			t.Fatalf("README line %q: %v (stderr %q)", line, err, stderr)
		}
		out.WriteString(stdout)
	}
	for _, want := range []string{"client_secret: tkdcs_", "Wiki", "deploy-cli", "public", `removed client "deploy-cli"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the README's client commands printed no %q:\n%s", want, &out)
		}
	}
	st, err := openStore(db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if clients, err := st.Clients(); err != nil || len(clients) != 1 || clients[0].Name != "Wiki" {
		t.Errorf("after the README's client commands the database holds %+v, %v; want Wiki alone", clients, err)
	}
}

// dumpFile returns every key and value of the bbolt file at path.
func dumpFile(t *testing.T, path string) map[string]string {
	t.Helper()
	st, err := openStore(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	return dumpStore(t, st)
}

func TestParseAccessTTL(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, true},
		{" 8h ", 8 * time.Hour, true},
		{"90m", 90 * time.Minute, true},
		{"1d", 24 * time.Hour, true},
		{"30d", 30 * 24 * time.Hour, true},
		{"31d", 0, false},
		{"0d", 0, false},
		{"-1d", 0, false},
		{"99999999999999999999d", 0, false},
		{"1.5d", 0, false},
		{"d", 0, false},
		{"soon", 0, false},
	} {
		got, err := parseAccessTTL(tt.in)
		if tt.ok && (err != nil || got != tt.want) || !tt.ok && err == nil {
			t.Errorf("parseAccessTTL(%q) = %v, %v; want %v (ok %v)", tt.in, got, err, tt.want, tt.ok)
		}
	}
	// What parses is still bounded by AddClient.
	if _, err := checkClientSpec(clientSpec{Name: "x", Device: true, AccessTTL: 1<<63 - 1}); err == nil {
		t.Errorf("checkClientSpec took the longest duration as a lifetime")
	}
}

// TestEngineClientActions runs the client and grant actions on every
// engine: what the transports rely on holds whichever stores the data.
func TestEngineClientActions(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
		acts := oauthActions{store: st, now: func() time.Time { return now }}
		alice := newUser("alice", "x", false, now)
		bob := newUser("bob", "x", false, now)
		for _, u := range []*userRecord{&alice, &bob} {
			if err := st.CreateUser(testActor, u); err != nil {
				t.Fatal(err)
			}
		}
		web, secret, err := acts.AddClient(testActor, clientSpec{Name: "Web App", RedirectURIs: []string{"https://app.example.com/cb"}})
		if err != nil {
			t.Fatal(err)
		}
		cli, _, err := acts.AddClient(testActor, clientSpec{Name: "cli", Public: true, Device: true, RedirectURIs: []string{"http://127.0.0.1/cb"}})
		if err != nil {
			t.Fatal(err)
		}
		var he *httpError
		if _, _, err := acts.AddClient(testActor, clientSpec{Name: "WEB APP", Device: true}); !errors.As(err, &he) || he.status != http.StatusConflict {
			t.Errorf("AddClient of a taken name = %v; want 409", err)
		}
		if got, err := st.Clients(); err != nil || len(got) != 2 {
			t.Errorf("Clients after a refused AddClient = %+v, %v; want two", got, err)
		}
		if c, err := acts.FindClient(" web app "); err != nil || c.ID != web.ID || *c.SecretHash != hashToken(secret) {
			t.Errorf("FindClient by name = %+v, %v; want Web App with its secret's hash", c, err)
		}
		if c, err := acts.FindClient(cli.ID); err != nil || c.Name != "cli" || c.SecretHash != nil {
			t.Errorf("FindClient by id = %+v, %v; want cli without a secret", c, err)
		}
		if _, err := acts.RemoveClient(testActor, "nobody"); !errors.As(err, &he) || he.status != http.StatusNotFound {
			t.Errorf("RemoveClient of nobody = %v; want 404", err)
		}

		gWeb, accessWeb := storeTestGrant(t, st, now, alice, web, []string{scopeTokensRead})
		gCli, accessCli := storeTestGrant(t, st, now, alice, cli, []string{scopeTokensRead})
		if _, _, err := st.Authenticate(hashToken(accessWeb)); err != nil {
			t.Fatalf("Authenticate the grant's token: %v", err)
		}
		grants, err := acts.GrantsOf(alice.ID)
		if err != nil || len(grants) != 2 || grants[0].ID != gCli.ID || grants[0].ClientName != "cli" || grants[1].ClientName != "Web App" {
			t.Errorf("GrantsOf(alice) = %+v, %v; want cli then Web App, named", grants, err)
		}
		before := storeContents(t, st)
		if _, err := acts.RevokeGrant(testActor, gCli.ID, bob.ID); !errors.As(err, &he) || he.status != http.StatusNotFound {
			t.Errorf("RevokeGrant of alice's grant by bob = %v; want 404", err)
		}
		if after := storeContents(t, st); after != before {
			t.Errorf("a refused RevokeGrant changed the store:\n%s\nthen\n%s", before, after)
		}
		if _, err := acts.RevokeGrant(testActor, gCli.ID, alice.ID); err != nil {
			t.Fatalf("RevokeGrant: %v", err)
		}
		if _, _, err := st.Authenticate(hashToken(accessCli)); !errors.Is(err, errNotFound) {
			t.Errorf("Authenticate a revoked grant's token = %v; want errNotFound", err)
		}
		// Removing a client takes its grants and their tokens, cached ones
		// included.
		if _, err := acts.RemoveClient(testActor, "Web App"); err != nil {
			t.Fatalf("RemoveClient: %v", err)
		}
		if _, _, err := st.Authenticate(hashToken(accessWeb)); !errors.Is(err, errNotFound) {
			t.Errorf("Authenticate the removed client's token = %v; want errNotFound", err)
		}
		if grants, err := acts.GrantsOf(alice.ID); err != nil || len(grants) != 0 {
			t.Errorf("GrantsOf(alice) after both went = %+v, %v (grant %d)", grants, err, gWeb.ID)
		}
		if clients, err := acts.ListClients(); err != nil || len(clients) != 1 || clients[0].ID != cli.ID {
			t.Errorf("ListClients after removing Web App = %+v, %v", clients, err)
		}
		if err := st.Check(); err != nil {
			t.Errorf("Check: %v", err)
		}
	})
}
