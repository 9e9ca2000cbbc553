package main

import (
	"fmt"
	"html"
	"net/http"
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
			assertUnchanged(t, "POST "+tt.path+" with "+tt.what, before, ts.snapshot())
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
	})

	t.Run("sudo mode", func(t *testing.T) {
		ts.clock.Add(2 * time.Hour)
		checkPage(t, "GET / two hours on", ts.page(pageReq{method: "GET", path: "/", cookie: cookie}), http.StatusOK, "Your password")
		tok, _ := ts.addToken(alice, "backup cron", nil, 0)
		for _, tt := range []struct{ path, id string }{
			{"/tokens", "sudo-create"},
			{fmt.Sprintf("/tokens/%d/rotate", tok.ID), "sudo-confirm"},
			{user + "/admin", "sudo-admin"},
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

	pages := []struct {
		path string
		want []string // names some control must have
	}{
		{"/login", []string{"Sign in"}},
		{"/", []string{"Skip to content", "New token", "Rotate deploy script", "Revoke deploy script", "Rotate backup cron", "Revoke backup cron", "Sign out", "Create token"}},
		{"/account", []string{"Sign out Firefox on Linux signed in just now from 192.0.2.7", "Sign out this browser, Unknown browser signed in just now from 192.0.2.7", "Sign out all other sessions"}},
		{"/admin/users", []string{"Manage alice", "Manage bob", "Manage carol"}},
		{"/admin/users/" + itoa(bob.ID), []string{"Make bob an admin", "Remove bob"}},
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

	body := ts.page(pageReq{method: "GET", path: "/", cookie: cookie}).Body.String()
	for _, sc := range ts.scopes.all() {
		label := regexp.MustCompile(`<label for="(scope-\d+)"><code>` + regexp.QuoteMeta(sc.Name) + `</code></label><span class="desc" id="(scope-\d+-desc)">` + regexp.QuoteMeta(html.EscapeString(sc.Description)) + `</span>`).FindStringSubmatch(body)
		if label == nil {
			t.Errorf("the scope %s is not labelled by its name alone with its description beside:\n%s", sc.Name, body)
			continue
		}
		if tag, _ := inputTag(body, label[1]); !strings.Contains(tag, `aria-describedby="`+label[2]+`"`) {
			t.Errorf("the checkbox of scope %s is not described by its description: %s", sc.Name, tag)
		}
	}
	for _, hint := range []struct{ path, id, hint string }{
		{"/", "token-name", ""},
		{"/account", "password", "password-hint"},
		{"/admin/users", "name", "name-hint"},
		{"/admin/users", "password", "password-hint"},
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
	body = ts.page(pageReq{method: "GET", path: "/", cookie: cookie}).Body.String()
	if !strings.Contains(body, `<input type="text" value="alice" autocomplete="username" hidden>`) {
		t.Errorf("the sudo password field of the token form has no hidden user name:\n%s", body)
	}
	checkDescribedBy(t, "GET / in need of sudo", body)
}
