package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestEveryGetAnswersHead sends GET and then HEAD to every GET route the
// router holds, over a real connection: HEAD must answer with the status
// and headers of GET and no body (RFC 9110 §9.3.2).
func TestEveryGetAnswersHead(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", true)
	tok, secret := ts.addToken(alice, "all", []string{scopeTokensRead, scopeTokensWrite, scopeIntrospect, scopeAdmin}, 0)
	if alice.ID != 1 || tok.ID != 1 {
		t.Fatalf("the first user and token have ids %d and %d; the paths below assume 1", alice.ID, tok.ID)
	}
	cookie := ts.login("alice")
	srv := httptest.NewServer(ts.handler)
	t.Cleanup(srv.Close)

	var paths []string
	for _, rt := range ts.routeList {
		pattern, ok := strings.CutPrefix(rt, "GET ")
		if !ok {
			continue
		}
		if !slices.Contains(ts.routeList, "HEAD "+pattern) {
			t.Errorf("GET %s is registered without HEAD", pattern)
		}
		switch {
		case strings.HasSuffix(pattern, "/*filepath"):
			dir := strings.TrimSuffix(pattern, "*filepath")
			for _, name := range slices.Sorted(maps.Keys(ts.static)) {
				paths = append(paths, dir+name)
			}
			paths = append(paths, dir, dir+"no-such-file.css")
		default:
			p := strings.ReplaceAll(pattern, ":id", "1")
			paths = append(paths, strings.ReplaceAll(p, ":scopes", scopeTokensRead))
		}
	}
	if len(paths) < 20 {
		t.Fatalf("only %d GET paths derived from the router's %d routes; the list is broken", len(paths), len(ts.routeList))
	}
	send := func(method, path string) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+secret)
		// Asked for by GET and HEAD alike: the transport asks for gzip on
		// its own on GET only.
		req.Header.Set("Accept-Encoding", "gzip")
		req.AddCookie(&http.Cookie{Name: sessionCookieName, Value: cookie})
		resp, err := srv.Client().Transport.RoundTrip(req) // no redirects followed
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: read body: %v", method, path, err)
		}
		return resp, body
	}
	for _, path := range paths {
		get, getBody := send("GET", path)
		head, headBody := send("HEAD", path)
		if head.StatusCode != get.StatusCode || get.StatusCode == http.StatusMethodNotAllowed {
			t.Errorf("HEAD %s = %d, GET = %d; want the same, and not 405", path, head.StatusCode, get.StatusCode)
		}
		if len(headBody) != 0 {
			t.Errorf("HEAD %s sent a body of %d bytes; want none", path, len(headBody))
		}
		for _, h := range []http.Header{get.Header, head.Header} {
			h.Del("Date")
			if get.Header.Get("Content-Length") == "" || head.Header.Get("Content-Length") == "" {
				h.Del("Content-Length") // a streamed GET, or a HEAD whose handler wrote nothing
			}
		}
		if !headersEqual(get.Header, head.Header) {
			t.Errorf("HEAD %s headers differ from GET's:\nGET  %v\nHEAD %v", path, get.Header, head.Header)
		}
		if cl := head.Header.Get("Content-Length"); cl != "" && get.StatusCode == 200 && cl != itoa(uint64(len(getBody))) {
			t.Errorf("HEAD %s: Content-Length %s; GET sent %d bytes", path, cl, len(getBody))
		}
	}
	// /healthz is what container health checks and curl -I ask.
	if resp, _ := send("HEAD", "/healthz"); resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Errorf("HEAD /healthz = %d %q; want 200 text/plain", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// TestDecisionOfReadsTheCauseNotTheWording checks that an expired token
// is told from other invalid tokens by its cause, whatever its message
// says.
func TestDecisionOfReadsTheCauseNotTheWording(t *testing.T) {
	expired := invalidToken("reworded: past its date")
	expired.cause = errTokenExpired
	lookalike := invalidToken("the token expired at 2030-01-01T00:00:00Z")
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{"expired, whatever the wording", expired, decisionExpired},
		{"expired, refused to a proxy", asProxyRefusal(expired), decisionExpired},
		{"expired, wrapped", fmt.Errorf("verify: %w", expired), decisionExpired},
		{"the wording of expiry without the cause", lookalike, decisionInvalidToken},
		{"unknown token", invalidToken("the token is unknown or revoked"), decisionInvalidToken},
		{"no credentials", errNoCredentials, decisionNoCredentials},
		{"storage failure", errors.New("disk on fire"), decisionError},
	} {
		if got := decisionOf(tt.err); got != tt.want {
			t.Errorf("decisionOf(%s) = %q; want %q", tt.name, got, tt.want)
		}
	}
	// And as verifyToken refuses a token past its expiry.
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	_, secret := ts.addToken(alice, "soon", nil, time.Minute)
	ts.clock.Add(time.Hour)
	if _, err := ts.verifyToken(secret); decisionOf(err) != decisionExpired {
		t.Errorf("verifyToken of an expired token = %v, decided %q; want %q", err, decisionOf(err), decisionExpired)
	}
}

// TestCorruptRecordNamesWhatItIs checks that a record that fails to decode
// is named by its kind and key, not by a bucket name bbolt cannot give.
func TestCorruptRecordNamesWhatItIs(t *testing.T) {
	st, _ := newTestDB(t)
	err := st.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).Put(itob(7), []byte("{not json"))
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.UserByID(7)
	var syntax *json.SyntaxError
	if err == nil || strings.Contains(err.Error(), "<nil>") || !strings.Contains(err.Error(), "userRecord") ||
		!strings.Contains(err.Error(), "0000000000000007") || !errors.As(err, &syntax) {
		t.Errorf("UserByID of a corrupt record = %v; want a wrapped *json.SyntaxError naming userRecord and key 7", err)
	}
}
