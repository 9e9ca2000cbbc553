package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// auditLog returns every event st keeps, oldest first, reading it page by
// page as `audit verify` does.
func auditLog(t testing.TB, st store) []auditEvent {
	t.Helper()
	var out []auditEvent
	q := auditQuery{Oldest: true, Limit: 7}
	for {
		page, err := st.AuditEvents(q)
		if err != nil {
			t.Fatalf("AuditEvents(%+v): %v", q, err)
		}
		out = append(out, page...)
		if len(page) < q.Limit {
			return out
		}
		q.After = page[len(page)-1].Seq
	}
}

// auditSince returns the events after seq, oldest first.
func auditSince(t testing.TB, st store, seq uint64) []auditEvent {
	t.Helper()
	var out []auditEvent
	for _, e := range auditLog(t, st) {
		if e.Seq > seq {
			out = append(out, e)
		}
	}
	return out
}

// auditHeadSeq returns the seq of st's newest event.
func auditHeadSeq(t testing.TB, st store) uint64 {
	t.Helper()
	seq, _, err := st.AuditHead()
	if err != nil {
		t.Fatalf("AuditHead: %v", err)
	}
	return seq
}

// checkAuditVerifies fails unless st's log verifies from its anchor and
// its head is its newest event.
func checkAuditVerifies(t testing.TB, st store) []auditEvent {
	t.Helper()
	evs := auditLog(t, st)
	anchor, err := st.AuditAnchor()
	if err != nil {
		t.Fatalf("AuditAnchor: %v", err)
	}
	if err := verifyAudit(anchor, evs); err != nil {
		t.Fatalf("the security log does not verify: %v", err)
	}
	seq, hash, err := st.AuditHead()
	if err != nil || len(evs) > 0 && (seq != evs[len(evs)-1].Seq || hash != evs[len(evs)-1].Hash) {
		t.Fatalf("AuditHead = %d %q, %v; want the newest event's", seq, hash, err)
	}
	return evs
}

// describeEvent is what the exact-events test compares of an event: all
// but its time and chain.
func describeEvent(e auditEvent) string {
	s := fmt.Sprintf("%s %s %s#%d>%s#%d via=%s addr=%s", e.Kind, e.Outcome, e.Actor, e.ActorID, e.Subject, e.SubjectID, e.Via, e.Addr)
	if e.TokenID != 0 || e.TokenHint != "" {
		s += fmt.Sprintf(" token=%d/%s", e.TokenID, e.TokenHint)
	}
	if e.Client != "" || e.GrantID != 0 {
		s += fmt.Sprintf(" client=%s grant=%d", e.Client, e.GrantID)
	}
	if e.Detail != "" {
		s += fmt.Sprintf(" detail=%q", e.Detail)
	}
	return s
}

// checkEvents compares the events recorded with those wanted.
func checkEvents(t *testing.T, what string, got []auditEvent, want []string) {
	t.Helper()
	n := max(len(got), len(want))
	for i := range n {
		g, w := "(none)", "(none)"
		if i < len(got) {
			g = describeEvent(got[i])
		}
		if i < len(want) {
			w = want[i]
		}
		if g != w {
			t.Errorf("%s: event %d = %s\n\twant %s", what, i+1, g, w)
		}
	}
}

// tamperEvent changes the stored address of event seq behind the store's
// back, keeping its hash.
func tamperEvent(t *testing.T, st store, seq uint64) {
	t.Helper()
	switch e := st.(type) {
	case *boltStore:
		// Rewrite its JSON in the file, through bolt.
		err := e.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketAudit)
			v := b.Get(itob(seq))
			if v == nil {
				return fmt.Errorf("no event %d", seq)
			}
			var m map[string]any
			if err := json.Unmarshal(v, &m); err != nil {
				return err
			}
			m["addr"] = "203.0.113.66"
			nv, err := json.Marshal(m)
			if err != nil {
				return err
			}
			return b.Put(itob(seq), nv)
		})
		if err != nil {
			t.Fatalf("tamper with event %d: %v", seq, err)
		}
	case *pgStore:
		tag, err := e.pool.Exec(context.Background(), "UPDATE audit_events SET addr = '203.0.113.66' WHERE seq = $1", int64(seq))
		if err != nil || tag.RowsAffected() != 1 {
			t.Fatalf("tamper with event %d: %v (%d rows)", seq, err, tag.RowsAffected())
		}
	default:
		t.Fatalf("no way to tamper with a %T", st)
	}
}

// TestAuditChainNamesTamperedEvent records events through the store's
// writes and RecordEvents, checks that the chain verifies and then that
// rewriting one stored event makes verify name it.
func TestAuditChainNamesTamperedEvent(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		clock := newFakeClock()
		by := actor{Name: "system", Via: viaCLI, At: clock.Now()}
		root := newUser("root", "x", true, clock.Now())
		if err := st.CreateUser(by, &root); err != nil {
			t.Fatal(err)
		}
		alice := newUser("alice", "x", false, clock.Now())
		if err := st.CreateUser(by, &alice); err != nil {
			t.Fatal(err)
		}
		tok := tokenRecord{Owner: alice.ID, Name: "t", Scopes: []string{scopeTokensRead}, CreatedAt: clock.Now(), Hint: "abcd"}
		if err := st.CreateToken(by, &tok, hashToken("secret-of-t"), 0); err != nil {
			t.Fatal(err)
		}
		refused := newAuditEvent(actor{Addr: "192.0.2.1", Via: viaPage, At: clock.Now()}, kindSigninFailed).about(alice)
		refused.Outcome = outcomeFailed
		if err := st.RecordEvents(refused); err != nil {
			t.Fatal(err)
		}
		if _, err := st.DeleteToken(by, tok.ID, anyOwner); err != nil {
			t.Fatal(err)
		}
		evs := checkAuditVerifies(t, st)
		if len(evs) != 5 || evs[0].Prev != "" || evs[0].Seq != 1 {
			t.Fatalf("log = %d events from seq %d (prev %q); want 5 from 1, the first with no prev", len(evs), evs[0].Seq, evs[0].Prev)
		}
		tamperEvent(t, st, 3)
		var brk *auditBreak
		err := verifyAudit("", auditLog(t, st))
		if !errors.As(err, &brk) || brk.Seq != 3 || !strings.Contains(brk.Reason, "does not match its hash") {
			t.Fatalf("verify after event 3 was changed = %v; want it to name event 3 as changed", err)
		}
		if got := auditLog(t, st)[2].Addr; got != "203.0.113.66" {
			t.Fatalf("tampering left addr %q", got)
		}
	})
}

// TestAuditVerifyNamesBreaks feeds the verifier chains broken each way.
func TestAuditVerifyNamesBreaks(t *testing.T) {
	var evs []auditEvent
	var seq uint64
	prev := ""
	at := newFakeClock().Now()
	for i := range 4 {
		e := newAuditEvent(actor{Name: "system", Via: viaSystem, At: at}, kindTokenPurged)
		e.TokenID = uint64(i + 1)
		e.chain(seq, prev, time.Time{})
		evs = append(evs, e)
		seq, prev = e.Seq, e.Hash
	}
	if err := verifyAudit("", evs); err != nil {
		t.Fatalf("an unbroken chain: %v", err)
	}
	tests := []struct {
		name   string
		anchor string
		evs    []auditEvent
		seq    uint64
		reason string
	}{
		{"one missing", "", []auditEvent{evs[0], evs[1], evs[3]}, 4, "missing"},
		{"the first missing with no anchor", "", evs[1:], 2, "no purge anchor"},
		{"purged with its anchor", evs[0].Hash, evs[1:], 0, ""},
		{"a wrong anchor", evs[1].Hash, evs[1:], 2, "anchor"},
		{"a changed event", "", []auditEvent{evs[0], func() auditEvent { e := evs[1]; e.Detail = "x"; return e }(), evs[2]}, 2, "does not match its hash"},
		{"a rehashed event", "", []auditEvent{evs[0], func() auditEvent { e := evs[1]; e.Detail = "x"; e.Hash = e.hash(); return e }(), evs[2]}, 3, "not the hash of event 2"},
	}
	for _, tt := range tests {
		err := verifyAudit(tt.anchor, tt.evs)
		var brk *auditBreak
		switch {
		case tt.seq == 0 && err != nil:
			t.Errorf("%s: verify = %v; want nil", tt.name, err)
		case tt.seq != 0 && (!errors.As(err, &brk) || brk.Seq != tt.seq || !strings.Contains(brk.Reason, tt.reason)):
			t.Errorf("%s: verify = %v; want event %d named (%q)", tt.name, err, tt.seq, tt.reason)
		}
	}
}

// TestAuditOnlyWhatCommits checks that a change that fails records nothing,
// and that a change that changes nothing records nothing either.
func TestAuditOnlyWhatCommits(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		root := newUser("root", "x", true, time.Now())
		if err := st.CreateUser(testActor, &root); err != nil {
			t.Fatal(err)
		}
		tok := tokenRecord{Owner: root.ID, Name: "one", CreatedAt: time.Now(), Hint: "abcd"}
		if err := st.CreateToken(testActor, &tok, hashToken("one"), 1); err != nil {
			t.Fatal(err)
		}
		head := auditHeadSeq(t, st)
		failures := []struct {
			what string
			do   func() error
			want error
		}{
			{"CreateToken past the limit", func() error {
				t2 := tokenRecord{Owner: root.ID, Name: "two", CreatedAt: time.Now(), Hint: "efgh"}
				return st.CreateToken(testActor, &t2, hashToken("two"), 1)
			}, errTooManyTokens},
			{"CreateToken for nobody", func() error {
				t2 := tokenRecord{Owner: 999, Name: "two", CreatedAt: time.Now(), Hint: "efgh"}
				return st.CreateToken(testActor, &t2, hashToken("two"), 0)
			}, errNotFound},
			{"demote the last admin", func() error { _, err := st.SetAdmin(testActor, root.ID, false); return err }, errLastAdmin},
			{"remove the last admin", func() error { return st.DeleteUser(testActor, root.ID) }, errLastAdmin},
			{"CreateUser of a taken name", func() error { u := newUser("ROOT", "x", false, time.Now()); return st.CreateUser(testActor, &u) }, errNameTaken},
			{"DeleteToken of no token", func() error { _, err := st.DeleteToken(testActor, 999, anyOwner); return err }, errNotFound},
			{"DeleteTokenByHash of no token", func() error {
				_, err := st.DeleteTokenByHash(testActor, hashToken("nope"), kindTokenLeaked)
				return err
			}, errNotFound},
			{"DeleteSession of no session", func() error { return st.DeleteSession(testActor, sessionHash{1}, anyOwner) }, errNotFound},
			{"ChangePassword of nobody", func() error {
				_, _, err := st.ChangePassword(testActor, 999, passwordChange{hash: "y", at: time.Now()})
				return err
			}, errNotFound},
			{"promote an admin", func() error { _, err := st.SetAdmin(testActor, root.ID, true); return err }, nil},
			{"end no other session", func() error { _, err := st.EndOtherSessions(testActor, root.ID, sessionHash{}); return err }, nil},
		}
		for _, f := range failures {
			if err := f.do(); !errors.Is(err, f.want) {
				t.Errorf("%s = %v; want %v", f.what, err, f.want)
			}
			if got := auditHeadSeq(t, st); got != head {
				t.Errorf("%s recorded events: head %d, was %d: %v", f.what, got, head, auditSince(t, st, head))
				head = got
			}
		}
	})
}

// TestAuditRetention purges the oldest events in batches and checks that
// the log still verifies from its first kept event against the anchor.
func TestAuditRetention(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		clock := newFakeClock()
		for day := range 10 {
			e := newAuditEvent(actor{Name: "system", Via: viaSystem, At: clock.Now().Add(time.Duration(day) * 24 * time.Hour)}, kindBackupTaken)
			if err := st.RecordEvents(e); err != nil {
				t.Fatal(err)
			}
		}
		all := checkAuditVerifies(t, st)
		cut := clock.Now().Add(5*24*time.Hour + time.Minute) // days 0 to 5 go
		n, err := st.PurgeAudit(context.Background(), cut, 4)
		if err != nil || n != 6 {
			t.Fatalf("PurgeAudit(batch 4) = %d, %v; want 6", n, err)
		}
		kept := checkAuditVerifies(t, st)
		if len(kept) != 4 || kept[0].Seq != 7 {
			t.Fatalf("after the purge the log holds %d events from %d; want 4 from 7", len(kept), kept[0].Seq)
		}
		if anchor, _ := st.AuditAnchor(); anchor != all[5].Hash {
			t.Errorf("anchor = %q; want the hash of event 6, %q", anchor, all[5].Hash)
		}
		if err := verifyAudit("", kept); err == nil {
			t.Errorf("the kept events verify without the anchor; want event 7 named")
		}
		// A new event after the purge carries on the chain.
		if err := st.RecordEvents(newAuditEvent(systemActor, kindBackupTaken)); err != nil {
			t.Fatal(err)
		}
		if evs := checkAuditVerifies(t, st); evs[len(evs)-1].Seq != 11 {
			t.Errorf("the event after the purge has seq %d; want 11", evs[len(evs)-1].Seq)
		}
		if n, err := st.PurgeAudit(context.Background(), cut, 4); err != nil || n != 0 {
			t.Errorf("PurgeAudit again = %d, %v; want 0", n, err)
		}
		if err := st.Check(); err != nil {
			t.Errorf("Check after the purge: %v", err)
		}
	})
}

// TestAuditQueries reads the log by user, by kind, by time and by pages.
func TestAuditQueries(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		clock := newFakeClock()
		at := func(h int) actor {
			return actor{Name: "system", Via: viaCLI, At: clock.Now().Add(time.Duration(h) * time.Hour)}
		}
		alice := newUser("alice", "x", true, clock.Now())
		bob := newUser("bob", "x", false, clock.Now())
		for _, u := range []*userRecord{&alice, &bob} {
			if err := st.CreateUser(at(0), u); err != nil { // seqs 1, 2
				t.Fatal(err)
			}
		}
		byAlice := actor{ID: alice.ID, Name: "alice", Via: viaPage, Addr: "192.0.2.1", At: clock.Now().Add(time.Hour)}
		if _, err := st.SetAdmin(byAlice, bob.ID, true); err != nil { // 3: alice → bob
			t.Fatal(err)
		}
		tok := tokenRecord{Owner: bob.ID, Name: "t", CreatedAt: clock.Now(), Hint: "abcd"}
		if err := st.CreateToken(at(2), &tok, hashToken("t"), 0); err != nil { // 4: system → bob
			t.Fatal(err)
		}
		if err := st.RecordEvents(newAuditEvent(at(3), kindBackupTaken)); err != nil { // 5
			t.Fatal(err)
		}
		seqs := func(q auditQuery) []uint64 {
			t.Helper()
			evs, err := st.AuditEvents(q)
			if err != nil {
				t.Fatalf("AuditEvents(%+v): %v", q, err)
			}
			out := []uint64{}
			for _, e := range evs {
				out = append(out, e.Seq)
			}
			return out
		}
		tests := []struct {
			q    auditQuery
			want []uint64
		}{
			{auditQuery{}, []uint64{5, 4, 3, 2, 1}},
			{auditQuery{Oldest: true, Limit: 2}, []uint64{1, 2}},
			{auditQuery{After: 2}, []uint64{3, 4, 5}},
			{auditQuery{Before: 4, Limit: 2}, []uint64{3, 2}},
			{auditQuery{User: alice.ID}, []uint64{3, 1}},
			{auditQuery{User: bob.ID}, []uint64{4, 3, 2}},
			{auditQuery{User: bob.ID, Oldest: true, Limit: 2}, []uint64{2, 3}},
			{auditQuery{Kinds: []string{kindUserAdded, kindBackupTaken}}, []uint64{5, 2, 1}},
			{auditQuery{Kinds: []string{kindUserAdded}, User: bob.ID}, []uint64{2}},
			{auditQuery{Since: clock.Now().Add(time.Hour), Until: clock.Now().Add(3 * time.Hour)}, []uint64{4, 3}},
			{auditQuery{Since: clock.Now().Add(2 * time.Hour), Oldest: true}, []uint64{4, 5}},
			{auditQuery{Until: clock.Now().Add(time.Hour)}, []uint64{2, 1}},
			{auditQuery{User: 999}, []uint64{}},
		}
		for _, tt := range tests {
			if got := seqs(tt.q); fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("AuditEvents(%+v) = %v; want %v", tt.q, got, tt.want)
			}
		}
		if err := st.Check(); err != nil {
			t.Errorf("Check: %v", err)
		}
	})
}

// TestAuditPGInstancesStayLinear has two instances on one database append
// events at once: the chain stays one line, with no seq twice or missing.
func TestAuditPGInstancesStayLinear(t *testing.T) {
	a, dbURL := newTestPGStore(t)
	b := openTestPGStore(t, dbURL)
	u := newUser("alice", "x", false, time.Now())
	if err := a.CreateUser(testActor, &u); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i, st := range []*pgStore{a, b, a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				tok := tokenRecord{Owner: u.ID, Name: fmt.Sprintf("t%d-%d", i, j), CreatedAt: time.Now(), Hint: "abcd"}
				if err := st.CreateToken(testActor, &tok, hashToken(tok.Name), 0); err != nil {
					errs <- err
					return
				}
				if j%4 == 0 {
					if err := st.RecordEvents(newAuditEvent(systemActor, kindBackupTaken)); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a concurrent write: %v", err)
	}
	evs := checkAuditVerifies(t, b)
	if want := 1 + 4*20 + 4*5; len(evs) != want {
		t.Fatalf("the log holds %d events; want %d", len(evs), want)
	}
	for i, e := range evs {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i+1, e.Seq)
		}
	}
	if err := a.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}
}

// TestAuditExactEvents drives actions through the API, the pages, the
// OAuth endpoints and the command line, and checks the exact events they
// recorded; that a refused change recorded nothing; that the log verifies;
// and that no secret made on the way is in the database file.
func TestAuditExactEvents(t *testing.T) {
	f := newOAuthServerFixture(t)
	ts := f.ts
	alice := f.alice
	root := ts.addUser("root", true)
	bob := ts.addUser("bob", false)
	start := auditHeadSeq(t, ts.store)
	secrets := map[string]string{"web client secret": f.webSecret, "code": f.code, "verifier": f.verifier,
		"refresh": f.refresh, "access": f.access, "alice's cookie": f.cookie,
		"alice's password": "password-of-alice", "root's password": "password-of-root"}

	// The API.
	create := func(auth, scopes string) *httptest.ResponseRecorder {
		return ts.do(request{method: "POST", path: "/api/v1/tokens", header: map[string]string{"Authorization": auth},
			body: `{"name":"deploy","scopes":[` + scopes + `],"expires_at":null}`})
	}
	if w := create(basicAuth("alice", "wrong password"), `"tokens:read"`); w.Code != http.StatusUnauthorized {
		t.Fatalf("POST /api/v1/tokens with a wrong password = %d; want 401", w.Code)
	}
	secrets["a wrong password"] = "wrong password"
	w := create(basicAuth("alice", "password-of-alice"), `"tokens:read","tokens:write"`)
	if w.Code != http.StatusCreated {
		t.Fatalf("POST /api/v1/tokens = %d; want 201: %s", w.Code, w.Body)
	}
	var t1 struct {
		ID    uint64 `json:"id"`
		Token string `json:"token"`
	}
	decode(t, w, &t1)
	secrets["token 1"] = t1.Token
	if w := ts.do(request{method: "POST", path: "/api/v1/revoke", body: `{"token":"` + t1.Token + `"}`}); w.Code != http.StatusOK {
		t.Fatalf("POST /api/v1/revoke = %d; want 200: %s", w.Code, w.Body)
	}

	// The pages.
	rootCookie := ts.login("root")
	secrets["root's cookie"] = rootCookie
	for _, admin := range []string{"true", "false"} {
		w := ts.page(pageReq{method: "POST", path: "/admin/users/" + itoa(alice.ID) + "/admin", cookie: rootCookie, form: url.Values{"admin": {admin}}})
		if w.Code != http.StatusSeeOther {
			t.Fatalf("POST /admin/users/%d/admin admin=%s = %d; want 303: %s", alice.ID, admin, w.Code, w.Body)
		}
	}
	// Demoting the last admin is refused, and records nothing.
	before := auditHeadSeq(t, ts.store)
	w = ts.page(pageReq{method: "POST", path: "/admin/users/" + itoa(root.ID) + "/admin", cookie: rootCookie, form: url.Values{"admin": {"false"}}})
	if w.Code != http.StatusConflict {
		t.Fatalf("demoting the last admin = %d; want 409", w.Code)
	}
	if got := auditHeadSeq(t, ts.store); got != before {
		t.Errorf("demoting the last admin, refused, recorded %v", auditSince(t, ts.store, before))
	}
	w = ts.page(pageReq{method: "POST", path: "/login", addr: "198.51.100.9", form: url.Values{"name": {"alice"}, "password": {"password-of-alice"}}})
	if w.Code != http.StatusSeeOther {
		t.Fatalf("POST /login as alice from a new address = %d; want 303", w.Code)
	}
	newCookie := responseCookie(w, sessionCookieName).Value
	secrets["alice's new cookie"] = newCookie
	if w := ts.page(pageReq{method: "POST", path: "/logout", cookie: newCookie, addr: "198.51.100.9", form: url.Values{}}); w.Code != http.StatusSeeOther {
		t.Fatalf("POST /logout = %d; want 303", w.Code)
	}
	if w := ts.page(pageReq{method: "POST", path: "/login", form: url.Values{"name": {"root"}, "password": {"not-roots-password"}}}); w.Code != http.StatusUnauthorized {
		t.Fatalf("POST /login with a wrong password = %d; want 401", w.Code)
	}
	secrets["another wrong password"] = "not-roots-password"

	// OAuth: a code exchanged, then exchanged again (which revokes its
	// grant), and a refresh token revoked by its client.
	exchange := func() *httptest.ResponseRecorder {
		return ts.oauthPost("/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {f.code},
			"code_verifier": {f.verifier}, "redirect_uri": {f.redirect}}, f.webBasic)
	}
	w = exchange()
	if w.Code != http.StatusOK {
		t.Fatalf("exchange a code = %d: %s", w.Code, w.Body)
	}
	var tr tokenResponse
	decode(t, w, &tr)
	secrets["access 2"], secrets["refresh 2"] = tr.AccessToken, tr.RefreshToken
	grants, err := ts.server.store.GrantsOf(alice.ID)
	if err != nil || len(grants) != 2 {
		t.Fatalf("GrantsOf(alice) = %d grants, %v; want 2", len(grants), err)
	}
	g2, g1 := grants[0], grants[1]
	if w := exchange(); w.Code != http.StatusBadRequest {
		t.Fatalf("exchange a code twice = %d; want 400", w.Code)
	}
	if w := ts.oauthPost("/oauth/revoke", url.Values{"token": {f.refresh}}, f.webBasic); w.Code != http.StatusOK {
		t.Fatalf("POST /oauth/revoke = %d: %s", w.Code, w.Body)
	}

	// The command line, on the file with the server's store closed.
	ts.store.Close()
	out, _, err := runCLI(t, "", "token", "create", "-db", ts.dbPath, "-user", "bob", "-name", "cli", "-scopes", "tokens:read", "-expires", "7d")
	if err != nil {
		t.Fatalf("token create: %v", err)
	}
	cliSecret := strings.TrimSpace(out)
	secrets["the command line's token"] = cliSecret
	cliTok := tokenIDInFile(t, ts.dbPath, cliSecret)
	if _, _, err := runCLI(t, "", "token", "revoke", "-db", ts.dbPath, itoa(cliTok)); err != nil {
		t.Fatalf("token revoke: %v", err)
	}
	if _, _, err := runCLI(t, "", "user", "remove", "-db", ts.dbPath, "bob"); err != nil {
		t.Fatalf("user remove: %v", err)
	}
	st, err := openStore(ts.dbPath, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ts.server.store, ts.store = st, st

	at := "addr=192.0.2.7"
	ali := fmt.Sprintf("alice#%d", alice.ID)
	rt := fmt.Sprintf("root#%d", root.ID)
	web := fmt.Sprintf("client=%s", f.web.ID)
	t1Hint := tokenHint(t1.Token)
	cliHint := tokenHint(cliSecret)
	want := []string{
		"signin.failed failed anonymous#0>" + ali + " via=api " + at,
		fmt.Sprintf("token.created ok %s>%s via=api %s token=%d/%s", ali, ali, at, t1.ID, t1Hint),
		fmt.Sprintf("token.leaked ok anonymous#0>%s via=api %s token=%d/%s", ali, at, t1.ID, t1Hint),
		"signin.succeeded ok " + rt + ">" + rt + " via=page " + at,
		"user.promoted ok " + rt + ">" + ali + " via=page " + at,
		"user.demoted ok " + rt + ">" + ali + " via=page " + at,
		"signin.succeeded ok " + ali + ">" + ali + " via=page addr=198.51.100.9",
		"signin.new_address ok " + ali + ">" + ali + " via=page addr=198.51.100.9",
		"signout ok " + ali + ">" + ali + " via=page addr=198.51.100.9",
		"signin.failed failed anonymous#0>" + rt + " via=page " + at,
		fmt.Sprintf("grant.created ok anonymous#0>%s via=oauth %s %s grant=%d detail=%q", ali, at, web, g2.ID, scopeTokensRead),
		fmt.Sprintf("grant.reused ok anonymous#0>%s via=oauth %s %s grant=%d", ali, at, web, g2.ID),
		fmt.Sprintf("grant.revoked ok anonymous#0>%s via=oauth %s %s grant=%d", ali, at, web, g1.ID),
		fmt.Sprintf("token.created ok system#0>bob#%d via=cli addr= token=%d/%s", bob.ID, cliTok, cliHint),
		fmt.Sprintf("token.revoked ok system#0>bob#%d via=cli addr= token=%d/%s", bob.ID, cliTok, cliHint),
		fmt.Sprintf("user.removed ok system#0>bob#%d via=cli addr=", bob.ID),
	}
	checkEvents(t, "the security log", auditSince(t, st, start), want)
	checkAuditVerifies(t, st)
	if err := st.Check(); err != nil {
		t.Errorf("Check: %v", err)
	}

	// No secret made on the way is in the database file, nor in any event.
	file, err := os.ReadFile(ts.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	all, err := json.Marshal(auditLog(t, st))
	if err != nil {
		t.Fatal(err)
	}
	for what, secret := range secrets {
		if secret == "" {
			t.Fatalf("no %s was made", what)
		}
		if bytes.Contains(file, []byte(secret)) {
			t.Errorf("the database file holds %s", what)
		}
		if bytes.Contains(all, []byte(secret)) {
			t.Errorf("the security log holds %s", what)
		}
	}
}

// tokenIDInFile returns the id of the token secret in the database file at
// path, which no store holds open.
func tokenIDInFile(t *testing.T, path, secret string) uint64 {
	t.Helper()
	st, err := openStore(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	tok, _, err := st.TokenByHash(hashToken(secret))
	if err != nil {
		t.Fatalf("the token the command line made: %v", err)
	}
	return tok.ID
}

// TestAuditNoSecretsInPG drives sign-ins and tokens through a server on
// PostgreSQL and reads the whole audit table as text: no secret made on
// the way is in it.
func TestAuditNoSecretsInPG(t *testing.T) {
	st, dbURL := newTestPGStore(t)
	ts := newTestServerOn(t, st)
	ts.addUser("alice", false)
	secrets := map[string]string{"alice's password": "password-of-alice", "a wrong password": "wrong password"}
	if w := ts.do(request{method: "POST", path: "/api/v1/tokens", header: map[string]string{"Authorization": basicAuth("alice", "wrong password")},
		body: `{"name":"deploy","scopes":["tokens:read"],"expires_at":null}`}); w.Code != http.StatusUnauthorized {
		t.Fatalf("POST /api/v1/tokens with a wrong password = %d; want 401", w.Code)
	}
	w := ts.do(request{method: "POST", path: "/api/v1/tokens", header: map[string]string{"Authorization": basicAuth("alice", "password-of-alice")},
		body: `{"name":"deploy","scopes":["tokens:read"],"expires_at":null}`})
	if w.Code != http.StatusCreated {
		t.Fatalf("POST /api/v1/tokens = %d; want 201: %s", w.Code, w.Body)
	}
	var tok struct {
		Token string `json:"token"`
	}
	decode(t, w, &tok)
	secrets["the token"] = tok.Token
	if w := ts.do(request{method: "POST", path: "/api/v1/revoke", body: `{"token":"` + tok.Token + `"}`}); w.Code != http.StatusOK {
		t.Fatalf("POST /api/v1/revoke = %d", w.Code)
	}
	cookie := ts.login("alice")
	secrets["the session cookie"] = cookie
	if w := ts.page(pageReq{method: "POST", path: "/logout", cookie: cookie, form: url.Values{}}); w.Code != http.StatusSeeOther {
		t.Fatalf("POST /logout = %d; want 303", w.Code)
	}
	if n := pgQueryInt(t, dbURL, "SELECT count(*) FROM audit_events WHERE kind = ANY($1)",
		[]string{kindSigninFailed, kindTokenCreated, kindTokenLeaked, kindSigninSucceeded, kindSignout}); n != 5 {
		t.Fatalf("the audit table holds %d of the events made; want 5", n)
	}
	var table string
	if err := st.pool.QueryRow(context.Background(), "SELECT string_agg(e::text, E'\\n') FROM audit_events e").Scan(&table); err != nil {
		t.Fatal(err)
	}
	for what, secret := range secrets {
		if strings.Contains(table, secret) {
			t.Errorf("the audit table holds %s", what)
		}
	}
	checkAuditVerifies(t, st)
}

// BenchmarkAuditEvent measures what building, chaining and encoding one
// event costs in CPU, outside any transaction: the part of an event's cost
// that is not the storage's.
func BenchmarkAuditEvent(b *testing.B) {
	by := actor{ID: 7, Name: "alice", Addr: "192.0.2.7", Agent: strings.Repeat("Mozilla/5.0 ", 10), Via: viaPage, At: time.Now()}
	u := userRecord{ID: 7, Name: "alice"}
	tok := tokenRecord{ID: 12345, Owner: 7, Hint: "abcd"}
	prev := strings.Repeat("ab", 32)
	for range b.N {
		e := newAuditEvent(by, kindTokenCreated).about(u).ofToken(tok)
		e.chain(41, prev, time.Time{})
		if _, err := json.Marshal(&e); err != nil {
			b.Fatal(err)
		}
	}
}

// TestPurgeAuditRetention runs the server's purge pass over a log with
// events older and younger than -audit-retention: the old go, in batches,
// the rest still verifies from the anchor, and the pass says so in the log;
// with a retention of 0 nothing goes.
func TestPurgeAuditRetention(t *testing.T) {
	ts := newTestServer(t)
	ts.server.cfg.AuditRetention = 0
	now := ts.clock.Now()
	n := auditPurgeBatch + 5
	evs := make([]auditEvent, 0, n+1)
	for i := range n {
		evs = append(evs, newAuditEvent(actor{Name: "system", Via: viaSystem, At: now.Add(-400*24*time.Hour + time.Duration(i)*time.Second)}, kindBackupTaken))
	}
	evs = append(evs, newAuditEvent(actor{Name: "system", Via: viaSystem, At: now.Add(-time.Hour)}, kindBackupTaken))
	if err := ts.store.RecordEvents(evs...); err != nil {
		t.Fatal(err)
	}
	ts.server.purge(context.Background())
	if got := len(auditLog(t, ts.store)); got != n+1 {
		t.Fatalf("with -audit-retention 0, the purge left %d events of %d", got, n+1)
	}
	ts.server.cfg.AuditRetention = 365 * 24 * time.Hour
	ts.server.purge(context.Background())
	kept := checkAuditVerifies(t, ts.store)
	if len(kept) != 1 || kept[0].Seq != uint64(n+1) {
		t.Fatalf("after the purge, %d events are kept; want only the last, %d", len(kept), n+1)
	}
	if !strings.Contains(ts.logs.String(), fmt.Sprintf("msg=\"purged old security events\" events=%d", n)) {
		t.Errorf("the purge logged no line of %d security events purged:\n%s", n, ts.logs)
	}
	if err := ts.store.Check(); err != nil {
		t.Errorf("Check after the purge: %v", err)
	}
}

// TestCheckAuditIndexes damages the security log's indexes in a bbolt file
// and checks that Check names each damage.
func TestCheckAuditIndexes(t *testing.T) {
	st, _ := newTestDB(t)
	u := newUser("alice", "x", false, time.Now())
	if err := st.CreateUser(testActor, &u); err != nil { // event 1, about alice
		t.Fatal(err)
	}
	if err := st.Check(); err != nil {
		t.Fatalf("Check of a sound file: %v", err)
	}
	err := st.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketAuditByUser).Put(pairKey(u.ID, 99), nil); err != nil {
			return err
		}
		return tx.Bucket(bucketAuditByKind).Delete(append(auditKindKey(kindUserAdded), itob(1)...))
	})
	if err != nil {
		t.Fatal(err)
	}
	err = st.Check()
	for _, want := range []string{"audit_by_user", "audit event 1 has no audit_by_kind entry"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check of damaged indexes = %v; want it to mention %q", err, want)
		}
	}
}
