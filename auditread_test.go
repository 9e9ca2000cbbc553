package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestAuditRetentionFlag checks -audit-retention: a year by default, from
// TOKEND_AUDIT_RETENTION too, 0 to keep events forever, never negative.
func TestAuditRetentionFlag(t *testing.T) {
	clearTokendEnv(t)
	out, _, err := runCLI(t, "", "serve", "-print-config")
	if err != nil {
		t.Fatalf("serve -print-config = %v", err)
	}
	values, sources := configRows(t, out)
	if values["-audit-retention"] != "8760h0m0s" || sources["-audit-retention"] != "default" {
		t.Errorf("-audit-retention = %q from %q; want 8760h0m0s from default", values["-audit-retention"], sources["-audit-retention"])
	}
	t.Setenv("TOKEND_AUDIT_RETENTION", "0s")
	out, _, err = runCLI(t, "", "serve", "-print-config")
	if err != nil {
		t.Fatalf("serve -print-config with TOKEND_AUDIT_RETENTION=0s = %v", err)
	}
	values, sources = configRows(t, out)
	if values["-audit-retention"] != "0s" || sources["-audit-retention"] != "env TOKEND_AUDIT_RETENTION" {
		t.Errorf("-audit-retention = %q from %q; want 0s from env TOKEND_AUDIT_RETENTION", values["-audit-retention"], sources["-audit-retention"])
	}
	for _, bad := range []string{"-1h", "876001h"} {
		_, _, err := runCLI(t, "", "serve", "-print-config", "-audit-retention", bad)
		if err == nil || !strings.Contains(err.Error(), "-audit-retention") {
			t.Errorf("serve -audit-retention %s = %v; want an error naming -audit-retention", bad, err)
		}
	}
}

// TestAPIAuditRefusesBadValues checks that GET /api/v1/audit answers a bad
// parameter with a problem that names it, and changes nothing; and that
// only an admin's token with the admin scope reads the log.
func TestAPIAuditRefusesBadValues(t *testing.T) {
	ts := newTestServer(t)
	root := ts.addUser("root", true)
	bob := ts.addUser("bob", false)
	_, admin := ts.addToken(root, "admin", scopesAdmin, 0)
	_, rw := ts.addToken(root, "rw", scopesReadWrite, 0)
	_, bobs := ts.addToken(bob, "bob", scopesAdmin, 0)
	before := ts.snapshot()
	tests := []struct {
		query  string
		status int
		want   string // in the problem's detail
	}{
		{"user=nobody", 400, `no user called "nobody"`},
		{"kind=token.stolen", 400, `kind: "token.stolen" is not a kind of event`},
		{"kind=token.revoked&kind=nope", 400, `"nope" is not a kind`},
		{"since=yesterday", 400, `since: "yesterday" is neither an RFC 3339 time`},
		{"until=2030-13-01", 400, "until:"},
		{"since=2030-02-01&until=2030-01-01", 400, "until must be later than since"},
		{"before=abc", 400, `before: "abc" is not a cursor`},
		{"after=0", 400, `after: "0" is not a cursor`},
		{"before=5&after=3", 400, "before or after, not both"},
		{"limit=0", 400, "limit: \"0\" is not a number from 1 to 500"},
		{"limit=501", 400, "from 1 to 500"},
		{"limit=ten", 400, "from 1 to 500"},
		{"limit=5&limit=6", 400, "limit is given 2 times"},
		{"users=root", 400, `unknown parameter "users"`},
	}
	for _, tt := range tests {
		w := ts.do(request{method: "GET", path: "/api/v1/audit?" + tt.query, token: admin})
		var p problem
		decode(t, w, &p)
		if w.Code != tt.status || w.Header().Get("Content-Type") != "application/problem+json" || !strings.Contains(p.Detail, tt.want) {
			t.Errorf("GET /api/v1/audit?%s = %d %s %s; want %d, a problem saying %q", tt.query, w.Code, w.Header().Get("Content-Type"), w.Body, tt.status, tt.want)
		}
	}
	for _, tt := range []struct {
		who, token string
		status     int
	}{
		{"no token", "", 401},
		{"a token without the admin scope", rw, 403},
		{"a user who is not an admin", bobs, 403},
	} {
		if w := ts.do(request{method: "GET", path: "/api/v1/audit", token: tt.token}); w.Code != tt.status {
			t.Errorf("GET /api/v1/audit with %s = %d; want %d; body: %s", tt.who, w.Code, tt.status, w.Body)
		}
	}
	assertUnchanged(t, "refused reads of the log", before, ts.snapshot())
}

// TestAuditPageRefusals checks that the admin audit page is for admins
// only and answers a bad filter with the form and a message, not a 500.
func TestAuditPageRefusals(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("root", true)
	ts.addUser("bob", false)
	root, bob := ts.login("root"), ts.login("bob")
	if w := ts.page(pageReq{method: "GET", path: "/admin/audit", cookie: bob}); w.Code != http.StatusForbidden || !strings.Contains(w.Body.String(), "Admins only") {
		t.Errorf("GET /admin/audit as bob = %d; want 403 Admins only; body: %s", w.Code, w.Body)
	}
	if w := ts.page(pageReq{method: "GET", path: "/admin/audit"}); w.Code != http.StatusSeeOther {
		t.Errorf("GET /admin/audit signed out = %d; want 303 to the sign-in page", w.Code)
	}
	before := ts.snapshot()
	tests := []struct {
		query url.Values
		want  string
		field string // the field marked invalid; "" for none
	}{
		{url.Values{"user": {"nobody"}}, "No user called &#34;nobody&#34;.", "user"},
		{url.Values{"kind": {"token.stolen"}}, "Kind: &#34;token.stolen&#34; is not a kind of event", "kind"},
		{url.Values{"since": {"31/01/2030"}}, "Since: &#34;31/01/2030&#34; is neither an RFC 3339 time", "since"},
		{url.Values{"since": {"2030-02-01"}, "until": {"2030-01-01"}}, "Until must be later than since.", "until"},
		{url.Values{"before": {"x"}}, "Before: &#34;x&#34; is not a cursor", ""},
	}
	for _, tt := range tests {
		w := ts.page(pageReq{method: "GET", path: "/admin/audit?" + tt.query.Encode(), cookie: root})
		body := w.Body.String()
		if w.Code != http.StatusBadRequest || !strings.Contains(body, tt.want) || !strings.Contains(body, `<form method="get" action="/admin/audit"`) {
			t.Errorf("GET /admin/audit?%s = %d; want 400 with the filter form and %q; body: %s", tt.query.Encode(), w.Code, tt.want, body)
		}
		invalid := regexp.MustCompile(`<(?:input|select) id="(\w+)"[^>]*aria-invalid="true"`).FindAllStringSubmatch(body, -1)
		if tt.field == "" && len(invalid) != 0 || tt.field != "" && (len(invalid) != 1 || invalid[0][1] != tt.field) {
			t.Errorf("GET /admin/audit?%s marks %q invalid; want only %q", tt.query.Encode(), invalid, tt.field)
		}
		// The form keeps what was sent.
		if v := tt.query.Get("user"); v != "" && !strings.Contains(body, `value="`+v+`"`) {
			t.Errorf("GET /admin/audit?%s lost the user name in the form", tt.query.Encode())
		}
	}
	if w := ts.page(pageReq{method: "GET", path: "/account/security-log?before=x", cookie: bob}); w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), "the link is broken") {
		t.Errorf("GET /account/security-log?before=x = %d; want 400 saying the link is broken; body: %s", w.Code, w.Body)
	}
	after := ts.snapshot()
	// Signing in is not what is tested: compare what the page reads only.
	for k := range after {
		if strings.HasPrefix(k, "sessions/") || strings.HasPrefix(k, "sessions#") {
			delete(after, k)
			delete(before, k)
		}
	}
	assertUnchanged(t, "refused reads of the audit page", before, after)
}

// auditFixture is a server whose log holds many events of three users,
// one minute apart, made straight through the store.
type auditFixture struct {
	ts              *testServer
	root, alice, bo userRecord
	adminToken      string
	kinds           []string // the kinds recorded, in turn
}

// newAuditFixture records n events after those of making the users and
// the admin's token: in turn alice failing to sign in, bob creating a
// token, root resetting alice's password and a backup taken by root.
func newAuditFixture(t *testing.T, n int) *auditFixture {
	t.Helper()
	return newAuditFixtureOn(t, newTestServer(t), n)
}

// newAuditFixtureOn is newAuditFixture on the server ts.
func newAuditFixtureOn(t *testing.T, ts *testServer, n int) *auditFixture {
	t.Helper()
	f := &auditFixture{ts: ts, root: ts.addUser("root", true), alice: ts.addUser("alice", false), bo: ts.addUser("bob", false)}
	_, f.adminToken = ts.addToken(f.root, "admin", scopesAdmin, 0)
	f.kinds = []string{kindSigninFailed, kindTokenCreated, kindPasswordReset, kindBackupTaken}
	var evs []auditEvent
	for i := range n {
		ts.clock.Add(time.Minute)
		by := actor{ID: f.root.ID, Name: "root", Addr: "192.0.2.1", Agent: "curl/8.5.0", Via: viaAPI, At: ts.clock.Now()}
		var e auditEvent
		switch f.kinds[i%len(f.kinds)] {
		case kindSigninFailed:
			by = actor{Name: "anonymous", Addr: "198.51.100.9", Agent: "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0", Via: viaPage, At: ts.clock.Now()}
			e = newAuditEvent(by, kindSigninFailed).about(f.alice)
			e.Outcome = outcomeFailed
		case kindTokenCreated:
			by.ID, by.Name = f.bo.ID, "bob"
			e = newAuditEvent(by, kindTokenCreated).about(f.bo)
			e.TokenID, e.TokenHint = uint64(100+i), "x7Qa"
		case kindPasswordReset:
			e = newAuditEvent(by, kindPasswordReset).about(f.alice).withDetail("0 tokens revoked, 0 sessions ended")
		case kindBackupTaken:
			e = newAuditEvent(by, kindBackupTaken)
		}
		evs = append(evs, e)
	}
	if err := ts.server.store.RecordEvents(evs...); err != nil {
		t.Fatalf("RecordEvents: %v", err)
	}
	return f
}

// allEvents returns every event of the log, newest first, read straight
// from the store.
func (f *auditFixture) allEvents(t *testing.T) []auditEvent {
	t.Helper()
	return storedEvents(t, f.ts.server.store)
}

// storedEvents returns every event of st's log, newest first.
func storedEvents(t *testing.T, st store) []auditEvent {
	t.Helper()
	var all []auditEvent
	q := auditQuery{Limit: maxAuditPage}
	for {
		evs, err := st.AuditEvents(q)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, evs...)
		if len(evs) < q.Limit {
			return all
		}
		q.Before = evs[len(evs)-1].Seq
	}
}

// apiWalk pages through GET /api/v1/audit?query with cursor (before or
// after) until next is null, and returns every event seen.
func (f *auditFixture) apiWalk(t *testing.T, query url.Values, cursor string) []auditEvent {
	t.Helper()
	var all []auditEvent
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatalf("GET /api/v1/audit?%s: more than 100 pages", query.Encode())
		}
		w := f.ts.do(request{method: "GET", path: "/api/v1/audit?" + query.Encode(), token: f.adminToken})
		if w.Code != http.StatusOK {
			t.Fatalf("GET /api/v1/audit?%s = %d; want 200; body: %s", query.Encode(), w.Code, w.Body)
		}
		var page struct {
			Events []auditEvent `json:"events"`
			Next   *uint64      `json:"next"`
		}
		decode(t, w, &page)
		all = append(all, page.Events...)
		if page.Next == nil {
			return all
		}
		if len(page.Events) == 0 || *page.Next != page.Events[len(page.Events)-1].Seq {
			t.Fatalf("GET /api/v1/audit?%s: next %d is not the seq of the page's last event", query.Encode(), *page.Next)
		}
		query = maps.Clone(query)
		query.Set(cursor, strconv.FormatUint(*page.Next, 10))
	}
}

func seqs(evs []auditEvent) []uint64 {
	out := make([]uint64, len(evs))
	for i, e := range evs {
		out[i] = e.Seq
	}
	return out
}

// TestAPIAuditPagesAndFilters checks that GET /api/v1/audit pages through
// the whole log by cursor, both ways, each event once, and that its
// filters select what they say, as a filter over the whole log does.
func TestAPIAuditPagesAndFilters(t *testing.T) {
	t.Run("bbolt", func(t *testing.T) { testAPIAuditPagesAndFilters(t, newTestServer(t)) })
	t.Run("postgres", func(t *testing.T) { testAPIAuditPagesAndFilters(t, newTestPGServer(t, newTestPG(t))) })
}

func testAPIAuditPagesAndFilters(t *testing.T, ts *testServer) {
	f := newAuditFixtureOn(t, ts, 230)
	all := f.allEvents(t)
	head, _, err := f.ts.server.store.AuditHead()
	if err != nil || len(all) != int(head) || len(all) < 230 {
		t.Fatalf("the log holds %d events, head %d (%v); want the head's count, at least 230", len(all), head, err)
	}

	// Newest first by before, in pages of 37; oldest first by after.
	got := f.apiWalk(t, url.Values{"limit": {"37"}}, "before")
	if !slices.Equal(seqs(got), seqs(all)) {
		t.Errorf("paging back by 37 saw seqs %v; want %v", seqs(got), seqs(all))
	}
	if got[0].Hash != all[0].Hash || got[0].Prev != all[1].Hash || got[0].Kind == "" || got[0].Time.IsZero() {
		t.Errorf("the newest event through the API is %+v; want it as stored: %+v", got[0], all[0])
	}
	first := all[len(all)-1].Seq
	forward := f.apiWalk(t, url.Values{"after": {strconv.FormatUint(first, 10)}, "limit": {"500"}}, "after")
	reversed := slices.Clone(all[:len(all)-1])
	slices.Reverse(reversed)
	if !slices.Equal(seqs(forward), seqs(reversed)) {
		t.Errorf("paging forward after %d saw %d events; want %d, oldest first", first, len(forward), len(reversed))
	}
	// The default page is 100.
	w := f.ts.do(request{method: "GET", path: "/api/v1/audit", token: f.adminToken})
	var page struct {
		Events []auditEvent `json:"events"`
		Next   *uint64      `json:"next"`
	}
	decode(t, w, &page)
	if len(page.Events) != defaultAuditLimit || page.Next == nil || *page.Next != all[defaultAuditLimit-1].Seq {
		t.Errorf("GET /api/v1/audit = %d events, next %v; want 100, next %d", len(page.Events), page.Next, all[99].Seq)
	}

	filter := func(keep func(auditEvent) bool) []auditEvent {
		var out []auditEvent
		for _, e := range all {
			if keep(e) {
				out = append(out, e)
			}
		}
		return out
	}
	since, until := all[150].Time, all[40].Time
	tests := []struct {
		name  string
		query url.Values
		want  []auditEvent
	}{
		{"user by name", url.Values{"user": {"alice"}}, filter(func(e auditEvent) bool { return e.ActorID == f.alice.ID || e.SubjectID == f.alice.ID })},
		{"user by id", url.Values{"user": {strconv.FormatUint(f.bo.ID, 10)}}, filter(func(e auditEvent) bool { return e.ActorID == f.bo.ID || e.SubjectID == f.bo.ID })},
		{"one kind", url.Values{"kind": {kindBackupTaken}}, filter(func(e auditEvent) bool { return e.Kind == kindBackupTaken })},
		{"two kinds", url.Values{"kind": {kindBackupTaken, kindSigninFailed}}, filter(func(e auditEvent) bool { return e.Kind == kindBackupTaken || e.Kind == kindSigninFailed })},
		{"user and kind", url.Values{"user": {"alice"}, "kind": {kindPasswordReset}}, filter(func(e auditEvent) bool { return e.SubjectID == f.alice.ID && e.Kind == kindPasswordReset })},
		{"since and until", url.Values{"since": {since.Format(time.RFC3339Nano)}, "until": {until.Format(time.RFC3339Nano)}},
			filter(func(e auditEvent) bool { return !e.Time.Before(since) && e.Time.Before(until) })},
		{"a user with no events", url.Values{"user": {"999"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.query.Set("limit", "25")
			got := f.apiWalk(t, tt.query, "before")
			if len(tt.want) == 0 && tt.name != "a user with no events" {
				t.Fatalf("the fixture has no events for %s", tt.name)
			}
			if !slices.Equal(seqs(got), seqs(tt.want)) {
				t.Errorf("GET /api/v1/audit?%s saw seqs %v; want %v", tt.query.Encode(), seqs(got), seqs(tt.want))
			}
		})
	}
}

// eventIDs returns the seqs of the events a page lists, in order.
func eventIDs(body string) []uint64 {
	var out []uint64
	for _, m := range regexp.MustCompile(`<li id="event-(\d+)">`).FindAllStringSubmatch(body, -1) {
		n, _ := strconv.ParseUint(m[1], 10, 64)
		out = append(out, n)
	}
	return out
}

// TestAccountSecurityLog checks the account page's "Security log": your
// own newest 20 events and no one else's, then the paged view behind its
// "more" link.
func TestAccountSecurityLog(t *testing.T) {
	f := newAuditFixture(t, 160)
	var alices []uint64
	for _, e := range f.allEvents(t) {
		if e.ActorID == f.alice.ID || e.SubjectID == f.alice.ID {
			alices = append(alices, e.Seq)
		}
	}
	cookie := f.ts.login("alice") // a sign-in of her own, the newest
	all := f.allEvents(t)
	var own []uint64
	for _, e := range all {
		if e.ActorID == f.alice.ID || e.SubjectID == f.alice.ID {
			own = append(own, e.Seq)
		}
	}
	if len(own) <= len(alices) || len(own) < accountAuditEvents+auditPageEvents {
		t.Fatalf("alice has %d events after signing in (%d before); want more, and more than 70", len(own), len(alices))
	}
	w := f.ts.page(pageReq{method: "GET", path: "/account", cookie: cookie})
	body := w.Body.String()
	more := "/account/security-log?before=" + strconv.FormatUint(own[accountAuditEvents-1], 10)
	if w.Code != http.StatusOK || !strings.Contains(body, `<h2 id="log-head">Security log</h2>`) || !strings.Contains(body, `href="`+more+`"`) {
		t.Fatalf("GET /account = %d; want 200 with the security log and a link to %s; body: %s", w.Code, more, body)
	}
	if got := eventIDs(body); !slices.Equal(got, own[:accountAuditEvents]) {
		t.Errorf("the account page lists events %v; want alice's newest 20: %v", got, own[:accountAuditEvents])
	}
	for _, want := range []string{"Signed in", "Sign-in failed", "Password reset", "from 198.51.100.9 · Firefox on Linux · via page", "to alice"} {
		if !strings.Contains(body, want) {
			t.Errorf("the account page's log does not say %q", want)
		}
	}
	if strings.Contains(body, "Backup taken") || strings.Contains(body, "Token created") {
		t.Errorf("the account page of alice shows others' events: %s", body)
	}

	// The paged view: 50 older ones, then the rest, then no more link.
	w = f.ts.page(pageReq{method: "GET", path: more, cookie: cookie})
	body = w.Body.String()
	if w.Code != http.StatusOK || !slices.Equal(eventIDs(body), own[accountAuditEvents:accountAuditEvents+auditPageEvents]) {
		t.Fatalf("GET %s = %d listing %v; want 200 listing %v", more, w.Code, eventIDs(body), own[accountAuditEvents:accountAuditEvents+auditPageEvents])
	}
	older := "/account/security-log?before=" + strconv.FormatUint(own[accountAuditEvents+auditPageEvents-1], 10)
	if !strings.Contains(body, `href="`+older+`"`) || !strings.Contains(body, `href="/account/security-log">Newest events`) {
		t.Errorf("GET %s links no older page %s or no newest", more, older)
	}
	w = f.ts.page(pageReq{method: "GET", path: older, cookie: cookie})
	body = w.Body.String()
	if rest := own[accountAuditEvents+auditPageEvents:]; w.Code != http.StatusOK || !slices.Equal(eventIDs(body), rest) || strings.Contains(body, "Older events") {
		t.Errorf("GET %s = %d listing %v; want 200 listing %v and no older link", older, w.Code, eventIDs(body), rest)
	}
	// Signed out, the paged view asks to sign in.
	if w := f.ts.page(pageReq{method: "GET", path: more}); w.Code != http.StatusSeeOther {
		t.Errorf("GET %s signed out = %d; want 303", more, w.Code)
	}
}

// TestAdminAuditPage checks the admin "Audit log": its link in the admin
// menu, everyone's events, each filter, and paging that keeps the filters.
func TestAdminAuditPage(t *testing.T) {
	f := newAuditFixture(t, 160)
	cookie := f.ts.login("root")
	all := f.allEvents(t)
	w := f.ts.page(pageReq{method: "GET", path: "/admin/audit", cookie: cookie})
	body := w.Body.String()
	if w.Code != http.StatusOK || !strings.Contains(body, `<a href="/admin/audit" aria-current="page">Audit log</a>`) || !strings.Contains(body, "<h1>Audit log</h1>") {
		t.Fatalf("GET /admin/audit = %d; want 200, the Audit log marked in the menu; body: %s", w.Code, body)
	}
	if !slices.Equal(eventIDs(body), seqs(all[:auditPageEvents])) {
		t.Errorf("GET /admin/audit lists %v; want the newest 50: %v", eventIDs(body), seqs(all[:auditPageEvents]))
	}
	if home := f.ts.page(pageReq{method: "GET", path: "/", cookie: cookie}); !strings.Contains(home.Body.String(), `<a href="/admin/audit">Audit log</a>`) {
		t.Errorf("the token page's menu has no link to the audit log")
	}

	filter := func(keep func(auditEvent) bool) []uint64 {
		var out []uint64
		for _, e := range all {
			if keep(e) {
				out = append(out, e.Seq)
			}
		}
		return out
	}
	day := all[0].Time.Format(time.DateOnly)
	tests := []struct {
		name  string
		query url.Values
		want  []uint64
	}{
		{"user", url.Values{"user": {"bob"}}, filter(func(e auditEvent) bool { return e.ActorID == f.bo.ID || e.SubjectID == f.bo.ID })},
		{"kind", url.Values{"kind": {kindPasswordReset}}, filter(func(e auditEvent) bool { return e.Kind == kindPasswordReset })},
		{"user and kind", url.Values{"user": {"alice"}, "kind": {kindSigninFailed}}, filter(func(e auditEvent) bool { return e.SubjectID == f.alice.ID && e.Kind == kindSigninFailed })},
		{"until a day before", url.Values{"until": {all[len(all)-1].Time.AddDate(0, 0, -1).Format(time.DateOnly)}}, nil},
		{"since and until the same day", url.Values{"since": {day}, "until": {day}}, filter(func(e auditEvent) bool { return e.Time.Format(time.DateOnly) == day })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []uint64
			path := "/admin/audit?" + tt.query.Encode()
			for pages := 0; path != ""; pages++ {
				if pages > 10 {
					t.Fatalf("more than 10 pages")
				}
				w := f.ts.page(pageReq{method: "GET", path: path, cookie: cookie})
				body := w.Body.String()
				if w.Code != http.StatusOK {
					t.Fatalf("GET %s = %d; want 200; body: %s", path, w.Code, body)
				}
				for k := range tt.query {
					if k == "user" && !strings.Contains(body, `value="`+tt.query.Get(k)+`"`) {
						t.Errorf("GET %s: the form lost the user name", path)
					}
				}
				got = append(got, eventIDs(body)...)
				m := regexp.MustCompile(`href="(/admin/audit\?[^"]*)">Older events`).FindStringSubmatch(body)
				path = ""
				if m != nil {
					path = html.UnescapeString(m[1])
					for k, v := range tt.query {
						if !strings.Contains(path, url.Values{k: v}.Encode()) {
							t.Errorf("the older page's link %s lost the filter %s", path, k)
						}
					}
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("GET /admin/audit?%s, every page, lists %v; want %v", tt.query.Encode(), got, tt.want)
			}
		})
	}
}

// closedFixture returns an audit fixture of n events whose database the
// server has let go, for the offline commands, and the file's path.
func closedFixture(t *testing.T, n int) (*auditFixture, string) {
	t.Helper()
	f := newAuditFixture(t, n)
	if err := f.ts.store.Close(); err != nil {
		t.Fatal(err)
	}
	return f, f.ts.dbPath
}

// editEvent rewrites the stored event seq of the bbolt file at path with
// edit, or deletes it when edit is nil, behind the store's back.
func editEvent(t *testing.T, path string, seq uint64, edit func(*auditEvent)) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		if edit == nil {
			return b.Delete(itob(seq))
		}
		var e auditEvent
		if err := json.Unmarshal(b.Get(itob(seq)), &e); err != nil {
			return err
		}
		edit(&e)
		v, err := json.Marshal(e)
		if err != nil {
			return err
		}
		return b.Put(itob(seq), v)
	})
	if err != nil {
		t.Fatalf("edit event %d: %v", seq, err)
	}
}

// TestAuditVerify checks tokend audit verify on a sound log, then on logs
// with one event changed, changed and hashed again, removed in the middle
// and removed at the end: each names the event where the chain breaks.
func TestAuditVerify(t *testing.T) {
	_, db := closedFixture(t, 700) // more than a page of 500
	st, err := openStore(db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	head, hash, err := st.AuditHead()
	st.Close()
	if err != nil || head < 700 {
		t.Fatalf("AuditHead = %d, %v; want at least 700", head, err)
	}
	out, _, err := runCLI(t, "", "audit", "verify", "-db", db)
	if want := fmt.Sprintf("ok: %d events, head %d %s\n", head, head, hash); err != nil || out != want {
		t.Fatalf("tokend audit verify = %q, %v; want %q", out, err, want)
	}

	tests := []struct {
		name string
		seq  uint64
		edit func(*auditEvent)
		want string
	}{
		{"a changed detail", 600, func(e *auditEvent) { e.Detail = "nothing happened" }, "security log broken at event 600: its content does not match its hash"},
		{"a changed actor, hashed again", 42, func(e *auditEvent) { e.Actor = "mallory"; e.Hash = e.hash() }, "security log broken at event 43: its previous hash is not the hash of event 42"},
		{"a removed event", 300, nil, "security log broken at event 301: comes after event 299"},
		{"the newest removed", head, nil, fmt.Sprintf("security log broken at event %d: the head kept apart is event %d, but the log ends at event %d", head, head, head-1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			copyPath := filepath.Join(t.TempDir(), "tokend.db")
			data, err := os.ReadFile(db)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(copyPath, data, 0o600); err != nil {
				t.Fatal(err)
			}
			editEvent(t, copyPath, tt.seq, tt.edit)
			out, _, err := runCLI(t, "", "audit", "verify", "-db", copyPath)
			if err == nil || !strings.Contains(err.Error(), tt.want) || out != "" {
				t.Errorf("tokend audit verify after %s = %q, %v; want an error saying %q", tt.name, out, err, tt.want)
			}
		})
	}
}

// TestAuditExport checks tokend audit export: every event as JSON Lines,
// oldest first, byte for byte the stored events; filters; a file of mode
// 0600; bad values refused.
func TestAuditExport(t *testing.T) {
	f, db := closedFixture(t, 620)
	st, err := openStore(db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	all := storedEvents(t, st)
	st.Close()
	slices.Reverse(all) // oldest first

	lines := func(out string) []auditEvent {
		t.Helper()
		var evs []auditEvent
		for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
			if line == "" {
				continue
			}
			var e auditEvent
			dec := json.NewDecoder(strings.NewReader(line))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&e); err != nil {
				t.Fatalf("line %q is not an event: %v", line, err)
			}
			evs = append(evs, e)
		}
		return evs
	}
	out, _, err := runCLI(t, "", "audit", "export", "-db", db)
	if err != nil {
		t.Fatalf("tokend audit export = %v", err)
	}
	got := lines(out)
	if len(got) != len(all) {
		t.Fatalf("tokend audit export wrote %d events; want %d", len(got), len(all))
	}
	for i := range all {
		if got[i].Hash != all[i].Hash || got[i].hash() != all[i].Hash || !got[i].Time.Equal(all[i].Time) {
			t.Fatalf("exported event %d = %+v; want the stored %+v, hashing the same", i, got[i], all[i])
		}
	}
	if err := verifyAudit("", got); err != nil {
		t.Errorf("the export does not verify as a chain: %v", err)
	}

	keep := func(pred func(auditEvent) bool) []uint64 {
		var out []uint64
		for _, e := range all {
			if pred(e) {
				out = append(out, e.Seq)
			}
		}
		return out
	}
	since, until := all[100].Time, all[400].Time
	file := filepath.Join(t.TempDir(), "audit.jsonl")
	tests := []struct {
		args []string
		want []uint64
	}{
		{[]string{"-user", "alice"}, keep(func(e auditEvent) bool { return e.ActorID == f.alice.ID || e.SubjectID == f.alice.ID })},
		{[]string{"-kind", kindBackupTaken, "-kind", kindTokenCreated}, keep(func(e auditEvent) bool { return e.Kind == kindBackupTaken || e.Kind == kindTokenCreated })},
		{[]string{"-since", since.Format(time.RFC3339Nano), "-until", until.Format(time.RFC3339Nano), "-user", "bob"},
			keep(func(e auditEvent) bool {
				return e.SubjectID == f.bo.ID && !e.Time.Before(since) && e.Time.Before(until)
			})},
	}
	for _, tt := range tests {
		args := append([]string{"audit", "export", "-db", db, "-o", file}, tt.args...)
		out, stderr, err := runCLI(t, "", args...)
		if err != nil || out != "" || !strings.Contains(stderr, fmt.Sprintf("wrote %s to %s", plural(len(tt.want), "event"), file)) {
			t.Fatalf("tokend %s = %q, %q, %v", strings.Join(args, " "), out, stderr, err)
		}
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if len(tt.want) == 0 || !slices.Equal(seqs(lines(string(data))), tt.want) {
			t.Errorf("tokend %s wrote %v; want %v", strings.Join(args, " "), seqs(lines(string(data))), tt.want)
		}
		if info, err := os.Stat(file); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("the export file's mode is %v, %v; want 0600", info.Mode().Perm(), err)
		}
	}

	for _, bad := range [][]string{{"-user", "nobody"}, {"-kind", "token.stolen"}, {"-since", "last week"}, {"-since", "2030-02-01", "-until", "2030-01-01"}} {
		other := filepath.Join(t.TempDir(), "never.jsonl")
		args := append([]string{"audit", "export", "-db", db, "-o", other}, bad...)
		if _, _, err := runCLI(t, "", args...); err == nil {
			t.Errorf("tokend %s = nil error; want it refused", strings.Join(args, " "))
		}
		if _, err := os.Stat(other); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("tokend %s, refused, left a file: %v", strings.Join(args, " "), err)
		}
	}
}

// TestAuditHeadLoggedAndInMetrics checks that serve logs the head of the
// security log at start-up and that /metrics shows it, moving with the
// log.
func TestAuditHeadLoggedAndInMetrics(t *testing.T) {
	_, db := closedFixture(t, 30)
	st, err := openStore(db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	seq, hash, err := st.AuditHead()
	st.Close()
	if err != nil || seq == 0 || len(hash) != 64 {
		t.Fatalf("AuditHead = %d %q, %v; want an event", seq, hash, err)
	}
	cfg := testServeConfig(t)
	cfg.DB = db
	addr, logs, stop := startServe(t, cfg)
	if want := fmt.Sprintf("audit head seq=%d hash=%s", seq, hash); !strings.Contains(logs.String(), want) {
		t.Errorf("serve's start-up log does not say %q:\n%s", want, logs)
	}
	metricsBody := func() string {
		t.Helper()
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /metrics = %d, %v", resp.StatusCode, err)
		}
		return string(b)
	}
	body := metricsBody()
	for _, want := range []string{
		fmt.Sprintf("\ntokend_audit_head_seq %d\n", seq),
		fmt.Sprintf("\ntokend_audit_head_info{hash=%q} 1\n", hash),
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", strings.TrimSpace(want))
		}
	}
	// A token made records an event: the head moves.
	req, err := http.NewRequest("POST", "http://"+addr+"/api/v1/tokens", strings.NewReader(`{"name":"ci","expires_at":null}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", basicAuth("alice", "password-of-alice"))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /api/v1/tokens = %d; want 201", resp.StatusCode)
	}
	body = metricsBody()
	if !strings.Contains(body, fmt.Sprintf("\ntokend_audit_head_seq %d\n", seq+1)) || strings.Contains(body, hash) {
		t.Errorf("after a token was made /metrics shows the head at:\n%s\nwant seq %d and a new hash", grepLines(body, "tokend_audit_head"), seq+1)
	}
	stop()
}

// grepLines returns the lines of s that contain sub.
func grepLines(s, sub string) string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, sub) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}

// TestReadmeAudit runs the README's audit commands, as written, on a
// database where alice made a token through the API, and checks that the
// README's sample event is one tokend wrote: it hashes to its hash.
func TestReadmeAudit(t *testing.T) {
	needTools(t, "sh", "wc")
	clearTokendEnv(t)
	dir := t.TempDir()
	cfg := testServeConfig(t)
	cfg.DB = filepath.Join(dir, "tokend.db")
	if _, _, err := runCLI(t, "a long sample password\n", "user", "add", "-db", cfg.DB, "-admin", "-password-stdin", "alice"); err != nil {
		t.Fatal(err)
	}
	addr, _, stop := startServe(t, cfg)
	req, err := http.NewRequest("POST", "http://"+addr+"/api/v1/tokens", strings.NewReader(`{"name":"laptop","expires_at":null}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", basicAuth("alice", "a long sample password"))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /api/v1/tokens = %d; want 201", resp.StatusCode)
	}
	stop()

	bin := buildTokend(t)
	out := runReadmeScript(t, "audit commands", readmeBlocks(t, "audit")[0], dir, "",
		"PATH="+filepath.Dir(bin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 3 ||
		!regexp.MustCompile(`^ok: 2 events, head 2 [0-9a-f]{64}$`).MatchString(lines[0]) ||
		lines[1] != "wrote 1 event to alice-tokens.jsonl" || strings.TrimSpace(lines[2]) != "2" {
		t.Errorf("the README's audit commands printed:\n%s\nwant ok: 2 events, head 2 HASH; wrote 1 event; then 2", out)
	}
	data, err := os.ReadFile(filepath.Join(dir, "alice-tokens.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var made auditEvent
	if err := json.Unmarshal(data, &made); err != nil || made.Kind != kindTokenCreated || made.Actor != "alice" || made.Via != viaAPI || made.TokenHint == "" {
		t.Errorf("the export of alice's token.created is %q (%v); want the one event", data, err)
	}

	var sample auditEvent
	dec := json.NewDecoder(strings.NewReader(readmeBlocks(t, "audit-sample")[0]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sample); err != nil {
		t.Fatalf("the README's sample event does not decode: %v", err)
	}
	if sample.hash() != sample.Hash || sample.Kind != made.Kind || sample.Actor != made.Actor {
		t.Errorf("the README's sample event hashes to %s, not to its hash %s: it is not one tokend wrote", sample.hash(), sample.Hash)
	}
	// Every kind of event is in the README's table.
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range auditKinds {
		if !strings.Contains(string(readme), "`"+k.Kind+"`") {
			t.Errorf("README.md does not list the kind %s", k.Kind)
		}
	}
}

// TestAuditCommandsOnPostgres checks audit verify and export on a
// PostgreSQL database beside the server, over more than a page of events.
func TestAuditCommandsOnPostgres(t *testing.T) {
	dbURL := newTestPG(t)
	f := newAuditFixtureOn(t, newTestPGServer(t, dbURL), 620)
	all := f.allEvents(t)
	out, _, err := runCLI(t, "", "audit", "verify", "-db", dbURL)
	if want := fmt.Sprintf("ok: %d events, head %d %s\n", len(all), all[0].Seq, all[0].Hash); err != nil || out != want {
		t.Errorf("tokend audit verify on PostgreSQL = %q, %v; want %q", out, err, want)
	}
	out, _, err = runCLI(t, "", "audit", "export", "-db", dbURL, "-kind", kindBackupTaken)
	var want []string
	for _, e := range slices.Backward(all) {
		if e.Kind == kindBackupTaken {
			want = append(want, e.Hash)
		}
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e auditEvent
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("tokend audit export wrote %q: %v", line, err)
		}
		got = append(got, e.Hash)
	}
	if err != nil || len(want) == 0 || !slices.Equal(got, want) {
		t.Errorf("tokend audit export -kind backup.taken on PostgreSQL = %d events, %v; want %d, oldest first", len(got), err, len(want))
	}
}

// TestPurgeCommandKeepsTheChainVerifiable checks that tokend purge deletes
// security events older than -audit-retention, and that audit verify then
// checks the chain from the first kept event against the anchor.
func TestPurgeCommandKeepsTheChainVerifiable(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokend.db")
	st, err := openStore(db, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var evs []auditEvent
	for i := range 1500 { // 1200 over a year old, in two batches; 300 recent
		at := now.Add(-400*24*time.Hour + time.Duration(i)*time.Minute)
		if i >= 1200 {
			at = now.Add(-time.Duration(1500-i) * time.Minute)
		}
		evs = append(evs, newAuditEvent(actor{Name: "system", Via: viaSystem, At: at}, kindBackupTaken))
	}
	if err := st.RecordEvents(evs...); err != nil {
		t.Fatal(err)
	}
	head, hash, err := st.AuditHead()
	st.Close()
	if err != nil || head != 1500 {
		t.Fatalf("AuditHead = %d, %v; want 1500", head, err)
	}
	if _, _, err := runCLI(t, "", "purge", "-db", db, "-audit-retention", "-1h"); err == nil || err.Error() != "-audit-retention: -1h0m0s is negative" {
		t.Errorf("tokend purge -audit-retention -1h = %v; want it refused", err)
	}
	out, _, err := runCLI(t, "", "purge", "-db", db)
	if err != nil || !strings.HasSuffix(out, "\npurged 1200 security events older than 8760h0m0s\n") {
		t.Fatalf("tokend purge = %q, %v; want 1200 security events purged", out, err)
	}
	out, _, err = runCLI(t, "", "audit", "verify", "-db", db)
	if want := fmt.Sprintf("ok: 300 events, head 1500 %s\n", hash); err != nil || out != want {
		t.Errorf("tokend audit verify after the purge = %q, %v; want %q", out, err, want)
	}
	// The first kept event, changed, no longer fits the anchor.
	editEvent(t, db, 1201, func(e *auditEvent) { e.Prev = strings.Repeat("0", 64); e.Hash = e.hash() })
	if _, _, err := runCLI(t, "", "audit", "verify", "-db", db); err == nil || !strings.Contains(err.Error(), "event 1201: its previous hash is not the anchor") {
		t.Errorf("tokend audit verify with the first kept event's prev changed = %v; want it named", err)
	}
	if out, _, err := runCLI(t, "", "purge", "-db", db, "-audit-retention", "0s"); err != nil || strings.Contains(out, "security event") {
		t.Errorf("tokend purge -audit-retention 0s = %q, %v; want no security event purged", out, err)
	}
}

// TestAuditHeadLoggedAtEveryTick checks that the head logger logs the
// current head at each tick, as it moves, and stops with its context.
func TestAuditHeadLoggedAtEveryTick(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", false)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ts.auditHeadLogger(ctx, time.Millisecond); close(done) }()
	seq, hash, err := ts.server.store.AuditHead()
	if err != nil || seq == 0 {
		t.Fatalf("AuditHead = %d, %v", seq, err)
	}
	waitFor(t, func() bool { return strings.Contains(ts.logs.String(), fmt.Sprintf("audit head seq=%d hash=%s", seq, hash)) })
	ts.addUser("bob", false)
	seq, hash, _ = ts.server.store.AuditHead()
	waitFor(t, func() bool { return strings.Contains(ts.logs.String(), fmt.Sprintf("audit head seq=%d hash=%s", seq, hash)) })
	cancel()
	<-done
}
