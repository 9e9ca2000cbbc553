package main

import (
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	describedBy = regexp.MustCompile(`aria-describedby="([^"]*)"`)
	controlTag  = regexp.MustCompile(`(?s)<(a|button)\b[^>]*>(.*?)</(?:a|button)>`)
	otherChoice = regexp.MustCompile(`<label class="choice"><input type="radio"`)
)

// checkDescribedBy asserts that every aria-describedby of body names
// elements that are there.
func checkDescribedBy(t *testing.T, what, body string) {
	t.Helper()
	for _, m := range describedBy.FindAllStringSubmatch(body, -1) {
		for _, id := range strings.Fields(m[1]) {
			if strings.Count(body, ` id="`+id+`"`) != 1 {
				t.Errorf("%s: aria-describedby names %q, which the page has %d times", what, id, strings.Count(body, ` id="`+id+`"`))
			}
		}
	}
}

// controlNames returns the accessible names of the links and buttons of
// body, in order: their text, hidden parts included.
func controlNames(body string) []string {
	var names []string
	for _, m := range controlTag.FindAllStringSubmatch(body, -1) {
		names = append(names, strings.TrimSpace(pageText(m[2])))
	}
	return names
}

// inputTag returns the tag of the element of body whose id is id.
func inputTag(body, id string) (tag string, at int) {
	at = strings.Index(body, ` id="`+id+`"`)
	if at < 0 {
		return "", -1
	}
	start := strings.LastIndex(body[:at], "<")
	end := strings.Index(body[at:], ">")
	return body[start : at+end+1], start
}

// checkFieldError asserts that the page body shows the error msg beside
// the field whose id is id, which is marked invalid, names the message and
// takes the focus; that the form sends its answer to the message; and
// that nothing else is marked.
func checkFieldError(t *testing.T, what, body, id, msg string) {
	t.Helper()
	checkDescribedBy(t, what, body)
	if n := strings.Count(body, `id="form-error"`); n != 1 {
		t.Fatalf("%s: the page has %d elements with id form-error; want 1:\n%s", what, n, body)
	}
	tag, at := inputTag(body, id)
	if at < 0 {
		t.Fatalf("%s: no element with id %q:\n%s", what, id, body)
	}
	for _, attr := range []string{`aria-invalid="true"`, ` autofocus`} {
		if !strings.Contains(tag, attr) || strings.Count(body, attr) != 1 {
			t.Errorf("%s: %s, and only it, should have %s; the page has it %d times", what, tag, attr, strings.Count(body, attr))
		}
	}
	if m := describedBy.FindStringSubmatch(tag); m == nil || !slices.Contains(strings.Fields(m[1]), "form-error") {
		t.Errorf("%s: %s does not name the message with aria-describedby", what, tag)
	}
	rest := body[at+len(tag):]
	errAt := strings.Index(rest, `id="form-error"`)
	if errAt < 0 {
		t.Fatalf("%s: the message comes before the field %s:\n%s", what, id, body)
	}
	// Between them may stand the field's own label, and the other choices
	// of a group of radio buttons that the field ends.
	between := otherChoice.ReplaceAllString(strings.Replace(rest[:errAt], `<label for="`+id+`">`, "", 1), "")
	if strings.Contains(between, "<input") || strings.Contains(between, "<label") {
		t.Errorf("%s: another field stands between %s and its message: %s", what, id, between)
	}
	if got := pageText(rest[errAt : strings.Index(rest[errAt:], "</p>")+errAt]); !strings.Contains(got, msg) {
		t.Errorf("%s: the message beside %s says %q; want %q", what, id, got, msg)
	}
	form := body[strings.LastIndex(body[:at], "<form "):]
	if action := form[:strings.Index(form, ">")]; !strings.Contains(action, `#form-error"`) {
		t.Errorf("%s: the form %s does not answer at #form-error, where the message is", what, action)
	}
}

// TestFormErrorsBesideTheirField checks that a form sent with a mistake
// answers with the message beside the field at fault, marked
// aria-invalid, focused, and reached through the form's anchor, and
// changes nothing.
func TestFormErrorsBesideTheirField(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", true)
	bob := ts.addUser("bob", false)
	ts.addToken(alice, "deploy script", []string{scopeTokensRead}, 0)
	ts.addToken(bob, "laptop", nil, 0)
	cookie := ts.login("alice")
	user := "/admin/users/" + itoa(bob.ID)
	client, _ := addTestClient(t, ts, "deploy-cli")
	tests := []struct {
		what, path string
		form       url.Values
		status     int
		id, msg    string
	}{
		{"a wrong password", "/login", url.Values{"name": {"alice"}, "password": {"not it at all"}}, http.StatusUnauthorized, "password", "Wrong user name or password"},
		{"a token without a name", "/tokens", tokenFormValues(" ", nil, "30", ""), http.StatusBadRequest, "token-name", "Name is required"},
		{"a custom expiry without a date", "/tokens", tokenFormValues("ci", nil, "custom", ""), http.StatusBadRequest, "expiry-date", "Choose the date"},
		{"a date with 30 days", "/tokens", tokenFormValues("ci", nil, "30", "2030-03-01"), http.StatusBadRequest, "expiry-date", "choose Custom date"},
		{"a wrong current password", "/account/password", url.Values{"current": {"not it at all"}, "password": {"a long new password"}, "confirm": {"a long new password"}}, http.StatusForbidden, "current", "current password is not right"},
		{"two new passwords", "/account/password", url.Values{"current": {"password-of-alice"}, "password": {"a long new password"}, "confirm": {"another new password"}}, http.StatusBadRequest, "confirm", "differ"},
		{"a short new password", "/account/password", url.Values{"current": {"password-of-alice"}, "password": {"short"}, "confirm": {"short"}}, http.StatusBadRequest, "password", "at least 8 characters"},
		{"revoking all my tokens unticked", "/account/revoke-tokens", url.Values{}, http.StatusBadRequest, "revoke-all", "Tick the box"},
		{"a bad user name", "/admin/users", url.Values{"name": {"no spaces"}, "password": {"a long password"}, "confirm": {"a long password"}}, http.StatusBadRequest, "name", "User name"},
		{"a taken user name", "/admin/users", url.Values{"name": {"Bob"}, "password": {"a long password"}, "confirm": {"a long password"}}, http.StatusConflict, "name", "already exists"},
		{"a short password for a new user", "/admin/users", url.Values{"name": {"carol"}, "password": {"short"}, "confirm": {"short"}}, http.StatusBadRequest, "password", "at least 8 characters"},
		{"a reset with two passwords", user + "/password", url.Values{"password": {"a long password"}, "confirm": {"another password"}}, http.StatusBadRequest, "confirm", "differ"},
		{"revoking a user's tokens unticked", user + "/revoke-tokens", url.Values{}, http.StatusBadRequest, "revoke-all", "Tick the box"},
		{"a removal with the wrong name", user + "/remove", url.Values{"confirm": {"bobby"}}, http.StatusBadRequest, "confirm-name", "Type the user's name"},
		{"a client without a name", "/admin/clients", url.Values{"name": {" "}, "device": {"1"}}, http.StatusBadRequest, "client-name", "Name is required"},
		{"a taken client name", "/admin/clients", url.Values{"name": {"Deploy-CLI"}, "device": {"1"}}, http.StatusConflict, "client-name", "already exists"},
		{"a bad redirect URI", "/admin/clients", url.Values{"name": {"wiki"}, "redirect_uris": {"https://wiki.example/cb\nhttp://wiki.example/cb"}}, http.StatusBadRequest, "redirect-uris", "loopback"},
		{"a bad token lifetime", "/admin/clients", url.Values{"name": {"wiki"}, "device": {"1"}, "access_ttl": {"forever"}}, http.StatusBadRequest, "access-ttl", "lifetime"},
		{"a lifetime out of range", "/admin/clients", url.Values{"name": {"wiki"}, "device": {"1"}, "access_ttl": {"1m"}}, http.StatusBadRequest, "access-ttl", "from 5m to 720h"},
		{"removing a client unticked", "/admin/clients/" + client.ID + "/remove", url.Values{}, http.StatusBadRequest, "remove-confirm", "Tick the box"},
		{"a device code of the wrong shape", "/device", url.Values{"user_code": {"12"}}, http.StatusBadRequest, "user-code", "A code is 8 letters"},
		{"a wrong device code", "/device", url.Values{"user_code": {"BCDF-GHJK"}}, http.StatusBadRequest, "user-code", "That code is not right"},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			req := pageReq{method: "POST", path: tt.path, cookie: cookie, form: tt.form}
			if tt.path == "/login" {
				req.cookie = ""
			}
			before := ts.snapshot()
			w := ts.page(req)
			body := checkPage(t, "POST "+tt.path+" with "+tt.what, w, tt.status, tt.msg)
			checkFieldError(t, "POST "+tt.path+" with "+tt.what, body, tt.id, tt.msg)
			if tt.path == "/login" {
				assertUnchangedButRefusals(t, "POST "+tt.path+" with "+tt.what, before, ts.snapshot())
			} else {
				assertUnchanged(t, "POST "+tt.path+" with "+tt.what, before, ts.snapshot())
			}
		})
	}

	t.Run("a form about no one field", func(t *testing.T) {
		w := ts.page(pageReq{method: "POST", path: "/tokens", cookie: cookie, form: tokenFormValues("ci", nil, "30", ""), noFormKey: true})
		body := checkPage(t, "POST /tokens without a form key", w, http.StatusBadRequest, "out of date")
		if strings.Contains(body, "aria-invalid") || strings.Count(body, `id="form-error"`) != 1 {
			t.Errorf("an error about the whole form marks a field, or is not shown once:\n%s", body)
		}
		section := body[strings.Index(body, `<section class="card" aria-labelledby="new"`):]
		if i, j := strings.Index(section, `id="form-error"`), strings.Index(section, "<form "); i < 0 || i > j {
			t.Errorf("the error about the whole token form is not at its head:\n%s", section)
		}

		before := ts.snapshot()
		w = ts.page(pageReq{method: "POST", path: "/admin/clients", cookie: cookie, form: url.Values{"name": {"wiki"}, "public": {"1"}}})
		body = checkPage(t, "POST /admin/clients public with no flow", w, http.StatusBadRequest, "Give a public client a redirect URI")
		if strings.Contains(body, "aria-invalid") || strings.Count(body, `id="form-error"`) != 1 {
			t.Errorf("an error about the whole client form marks a field, or is not shown once:\n%s", body)
		}
		section = body[strings.Index(body, `<section class="card" aria-labelledby="add-client-head"`):]
		if i, j := strings.Index(section, `id="form-error"`), strings.Index(section, "<form "); i < 0 || i > j {
			t.Errorf("the error about the whole client form is not at its head:\n%s", section)
		}
		assertUnchanged(t, "POST /admin/clients public with no flow", before, ts.snapshot())
	})

	t.Run("sudo mode", func(t *testing.T) {
		ts.clock.Add(2 * time.Hour)
		checkPage(t, "GET / two hours on", ts.page(pageReq{method: "GET", path: "/", cookie: cookie}), http.StatusOK, "Your password")
		tok, _ := ts.addToken(alice, "backup cron", nil, 0)
		for _, tt := range []struct{ path, id string }{
			{"/tokens", "sudo-create"},
			{fmt.Sprintf("/tokens/%d/rotate", tok.ID), "sudo-confirm"},
			{user + "/admin", "sudo-admin"},
			{"/admin/clients", "sudo-add"},
			{"/admin/clients/" + client.ID + "/remove", "sudo-remove"},
		} {
			before := ts.snapshot()
			w := ts.page(pageReq{method: "POST", path: tt.path, cookie: cookie, form: tokenFormValues("ci", nil, "30", "")})
			body := checkPage(t, "POST "+tt.path+" without the password", w, http.StatusForbidden, "enter your password")
			checkFieldError(t, "POST "+tt.path+" without the password", body, tt.id, "enter your password")
			assertUnchanged(t, "POST "+tt.path+" without the password", before, ts.snapshot())
		}
	})

	t.Run("setup", func(t *testing.T) {
		ts := newTestServer(t)
		link, err := ts.setupLink("http://127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		code := setupCodeOf(t, link)
		for _, tt := range []struct {
			what, name, password, confirm, id, msg string
		}{
			{"a bad name", "no spaces", "a long password", "a long password", "name", "User name"},
			{"a short password", "alice", "short", "short", "password", "at least 8 characters"},
			{"two passwords", "alice", "a long password", "another password", "confirm", "differ"},
		} {
			before := ts.snapshot()
			w := ts.page(pageReq{method: "POST", path: "/setup", form: url.Values{"code": {code}, "name": {tt.name}, "password": {tt.password}, "confirm": {tt.confirm}}})
			body := checkPage(t, "POST /setup with "+tt.what, w, http.StatusBadRequest, tt.msg)
			checkFieldError(t, "POST /setup with "+tt.what, body, tt.id, tt.msg)
			assertUnchanged(t, "POST /setup with "+tt.what, before, ts.snapshot())
		}
	})
}

// TestPageNames checks what assistive technology reads of the pages: every
// link and button of a page has a name of its own that says what it acts
// on, hints and descriptions are tied to their fields, scopes are named
// without their descriptions, password forms carry the user name for
// password managers, and pages describe themselves.
func TestPageNames(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", true)
	bob := ts.addUser("bob", false)
	ts.addUser("carol", false)
	ts.addToken(alice, "deploy script", []string{scopeTokensRead}, 0)
	ts.addToken(alice, "backup cron", nil, 24*time.Hour)
	w := ts.page(pageReq{method: "POST", path: "/login", form: url.Values{"name": {"alice"}, "password": {"password-of-alice"}},
		header: map[string]string{"User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"}})
	if w.Code != http.StatusSeeOther {
		t.Fatalf("POST /login from Firefox = %d; want 303", w.Code)
	}
	cookie := ts.login("alice")
	cli, _ := addTestClient(t, ts, "deploy-cli")
	wiki, _ := addTestClient(t, ts, "Wiki")
	grant, _ := issueTestGrant(t, ts, alice, wiki, []string{scopeTokensRead})
	var all []string
	for _, sc := range ts.scopes.all() {
		all = append(all, sc.Name)
	}
	consent := "/oauth/authorize?" + url.Values{"client_id": {wiki.ID}, "redirect_uri": {wiki.RedirectURIs[0]}, "response_type": {"code"},
		"code_challenge": {"E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"}, "code_challenge_method": {"S256"},
		"scope": {strings.Join(all, " ")}, "state": {"s"}}.Encode()

	pages := []struct {
		path string
		want []string // names some control must have
	}{
		{"/login", []string{"Sign in"}},
		{"/", []string{"Skip to content", "New token", "Rotate deploy script", "Revoke deploy script", "Rotate backup cron", "Revoke backup cron", "Sign out", "Create token"}},
		{"/account", []string{"Sign out Firefox on Linux signed in just now from 192.0.2.7", "Sign out this browser, Unknown browser signed in just now from 192.0.2.7", "Sign out all other sessions"}},
		{"/admin/users", []string{"Manage alice", "Manage bob", "Manage carol"}},
		{"/admin/users/" + itoa(bob.ID), []string{"Make bob an admin", "Remove bob"}},
		{"/account", []string{"Revoke Wiki approved just now"}},
		{"/account/grants/" + itoa(grant.ID) + "/revoke", []string{"Revoke Wiki", "Cancel"}},
		{"/admin/clients", []string{"Manage deploy-cli", "Manage Wiki", "Register client"}},
		{"/admin/clients/" + cli.ID, []string{"Remove deploy-cli", "← All clients"}},
		{consent, []string{"Approve Wiki", "Deny Wiki"}},
		{"/device", []string{"Continue"}},
	}
	for _, p := range pages {
		req := pageReq{method: "GET", path: p.path, cookie: cookie}
		if p.path == "/login" {
			req.cookie = ""
		}
		body := checkPage(t, "GET "+p.path, ts.page(req), http.StatusOK)
		names := controlNames(body)
		seen := map[string]bool{}
		for _, n := range names {
			if seen[n] {
				t.Errorf("GET %s: two controls are called %q; all names: %q", p.path, n, names)
			}
			seen[n] = true
		}
		for _, n := range p.want {
			if !seen[n] {
				t.Errorf("GET %s: no control is called %q; all names: %q", p.path, n, names)
			}
		}
		checkDescribedBy(t, "GET "+p.path, body)
		if !strings.Contains(body, `<meta name="description" content="`) {
			t.Errorf("GET %s has no meta description", p.path)
		}
		if !strings.Contains(body, `<a class="skip" href="#main">`) || !strings.Contains(body, `<main id="main" tabindex="-1">`) {
			t.Errorf("GET %s has no skip link to its main content", p.path)
		}
	}

	var body string
	for _, path := range []string{"/", consent} {
		body = ts.page(pageReq{method: "GET", path: path, cookie: cookie}).Body.String()
		for _, sc := range ts.scopes.all() {
			label := regexp.MustCompile(`<label for="(scope-\d+)"><code>` + regexp.QuoteMeta(sc.Name) + `</code></label><span class="desc" id="(scope-\d+-desc)">` + regexp.QuoteMeta(html.EscapeString(sc.Description)) + `</span>`).FindStringSubmatch(body)
			if label == nil {
				t.Errorf("GET %s: the scope %s is not labelled by its name alone with its description beside:\n%s", path, sc.Name, body)
				continue
			}
			if tag, _ := inputTag(body, label[1]); !strings.Contains(tag, `aria-describedby="`+label[2]+`"`) {
				t.Errorf("GET %s: the checkbox of scope %s is not described by its description: %s", path, sc.Name, tag)
			}
		}
	}
	// The clients page's checkboxes too.
	body = ts.page(pageReq{method: "GET", path: "/admin/clients", cookie: cookie}).Body.String()
	for _, id := range []string{"client-public", "client-device"} {
		if tag, _ := inputTag(body, id); !strings.Contains(tag, `aria-describedby="`+id+`-desc"`) || !strings.Contains(body, `<label for="`+id+`">`) {
			t.Errorf("GET /admin/clients: %s is not labelled alone and described by its description: %s", id, tag)
		}
	}
	for _, hint := range []struct{ path, id, hint string }{
		{"/", "token-name", ""},
		{"/account", "password", "password-hint"},
		{"/admin/users", "name", "name-hint"},
		{"/admin/users", "password", "password-hint"},
		{"/admin/clients", "client-name", "client-name-hint"},
		{"/admin/clients", "redirect-uris", "redirect-uris-hint"},
		{"/admin/clients", "access-ttl", "access-ttl-hint"},
		{"/device", "user-code", "user-code-hint"},
	} {
		body := ts.page(pageReq{method: "GET", path: hint.path, cookie: cookie}).Body.String()
		if tag, _ := inputTag(body, hint.id); hint.hint != "" && !strings.Contains(tag, `aria-describedby="`+hint.hint+`"`) {
			t.Errorf("GET %s: %s is not described by its hint %s", hint.path, tag, hint.hint)
		}
	}

	// Password forms without a user name field carry a hidden one.
	for _, p := range []struct{ path, action, name string }{
		{"/account", "/account/password", "alice"},
		{"/admin/users/" + itoa(bob.ID), "/admin/users/" + itoa(bob.ID) + "/password", "bob"},
	} {
		body := ts.page(pageReq{method: "GET", path: p.path, cookie: cookie}).Body.String()
		form := body[strings.Index(body, `action="`+p.action):]
		form = form[:strings.Index(form, "</form>")]
		if !strings.Contains(form, `<input type="text" value="`+p.name+`" autocomplete="username" hidden>`) {
			t.Errorf("GET %s: the password form has no hidden user name %s for password managers:\n%s", p.path, p.name, form)
		}
	}
	ts.clock.Add(2 * time.Hour)
	for _, path := range []string{"/", "/admin/clients", "/admin/clients/" + cli.ID} {
		body = ts.page(pageReq{method: "GET", path: path, cookie: cookie}).Body.String()
		if !strings.Contains(body, `<input type="text" value="alice" autocomplete="username" hidden>`) {
			t.Errorf("GET %s: the sudo password field has no hidden user name:\n%s", path, body)
		}
		checkDescribedBy(t, "GET "+path+" in need of sudo", body)
	}
}

// TestFormErrorsNeverVanish renders every page with an error said to be
// about every form and field that any page has, and about ones that none
// has, and with messages in every wording errorField knows and in one it
// does not: whatever the field, each page shows the message once, where
// the forms' #form-error anchor is.
func TestFormErrorsNeverVanish(t *testing.T) {
	ts := newTestServer(t)
	data := map[string]any{
		"account.html": accountPage{Grants: []grantRow{{ID: 1, ClientName: "Wiki"}}, TokensText: "2 tokens"},
		"client.html":  clientRow{ID: "c1", Name: "deploy-cli"},
		"clients.html": clientsPage{},
		"confirm.html": confirmPage{Heading: "Rotate ci?", Action: "/tokens/1/rotate", Button: "Rotate ci", Sudo: true},
		"consent.html": consentPage{Client: "Wiki", Action: "/oauth/authorize", Scopes: []scopeChoice{{Name: scopeTokensRead, Description: "Read tokens"}}},
		"device.html":  devicePage{},
		"grant.html":   grantRow{ID: 1, ClientName: "Wiki"},
		"login.html":   loginPage{Name: "alice"},
		"message.html": messagePage{Heading: "Done", Text: "It is done.", Link: "/", Button: "Go to your tokens"},
		"secret.html":  secretPage{Secret: "secret"},
		"setup.html":   setupPage{Code: "code"},
		"tokens.html":  tokensPage{Scopes: []scopeChoice{{Name: scopeTokensRead}}, Expiries: []expiryChoice{{Value: "30", Label: "30 days"}, {Value: "custom"}}},
		"user.html":    userPage{ID: 2, Name: "bob", TokensText: "1 token"},
		"users.html":   usersPage{},
	}

	// The forms each page names, and one none has; every field any page
	// names, and one none has.
	forms, fields := map[string]map[string]bool{}, map[string]bool{"": true, "no_such_field": true, "sudo_password": true}
	var templates []string
	named := regexp.MustCompile(`(?:ErrorAt|sudoIn \$|Bad) "([a-z-]+)"(?: "([a-z_]+)")?`)
	for _, tmpl := range ts.server.templates.Templates() {
		name := tmpl.Name()
		if !strings.HasSuffix(name, ".html") {
			continue
		}
		// A page starts with the layout's top; the rest (layout.html,
		// passkey.html) only define parts that pages include.
		if src, err := webFS.ReadFile("web/templates/" + name); err == nil && strings.Contains(string(src), `{{template "top"`) {
			templates = append(templates, name)
		}
	}
	slices.Sort(templates)
	for _, name := range templates {
		src, err := webFS.ReadFile("web/templates/" + name)
		if err != nil {
			t.Fatal(err)
		}
		forms[name] = map[string]bool{"": true, "no-such-form": true}
		for _, m := range named.FindAllStringSubmatch(string(src), -1) {
			forms[name][m[1]], fields[m[2]] = true, true
		}
	}
	for _, e := range fieldErrors {
		fields[e.field] = true
	}
	// Messages: one in a wording errorField does not know, which the
	// field is set for, and each wording it knows, left to it to guess.
	// Sudo mode, which adds a password field to forms, matters only to
	// the messages about a password.
	type message struct {
		text, field string
		sudo        []bool
	}
	var messages []message
	for f := range fields {
		messages = append(messages, message{"Zebras may not use this form", f, []bool{false, f == "sudo_password"}})
	}
	for _, e := range fieldErrors {
		messages = append(messages, message{strings.TrimSpace(e.prefix) + " is what the message begins with", "", []bool{false}})
	}
	for _, prefix := range passwordErrors {
		messages = append(messages, message{prefix + " is what the message begins with", "", []bool{false, true}})
	}

	user := &userRecord{ID: 1, Name: "alice", Admin: true}
	renders := 0
	for _, name := range templates {
		for form := range forms[name] {
			for _, m := range messages {
				for _, sudo := range slices.Compact(m.sudo) {
					p := &page{Title: "A page", User: user, NeedSudo: sudo, Error: m.text, ErrorAt: form, ErrorField: m.field, Data: data[name]}
					if p.ErrorField == "" {
						p.ErrorField = errorField(p)
					}
					what := fmt.Sprintf("%s with %q at form %q, field %q, sudo %t", name, m.text, form, p.ErrorField, sudo)
					w := httptest.NewRecorder()
					ts.server.render(w, httptest.NewRequest("GET", "/", nil), http.StatusBadRequest, name, p)
					renders++
					body := w.Body.String()
					if w.Code != http.StatusBadRequest {
						t.Fatalf("%s = %d; want 400:\n%s", what, w.Code, body)
					}
					if n := strings.Count(body, `id="form-error"`); n != 1 {
						t.Fatalf("%s: the page has %d elements with id form-error; want the message once:\n%s", what, n, body)
					}
					at := body[strings.Index(body, `id="form-error"`):]
					if got := pageText(at[:strings.Index(at, "</p>")]); !strings.Contains(got, m.text) {
						t.Fatalf("%s: the page says %q at #form-error; want %q:\n%s", what, got, m.text, body)
					}
					if strings.Count(pageText(body), m.text) != 1 {
						t.Fatalf("%s: the message is shown %d times; want once:\n%s", what, strings.Count(pageText(body), m.text), body)
					}
				}
			}
		}
	}
	t.Logf("%d pages rendered, every one showing its message once", renders)
}
