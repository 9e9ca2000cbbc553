package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

// The seeds of these targets run in every go test; to search further:
//
//	go test -run '^$' -fuzz FuzzParseToken -fuzztime 3m
//
// The parser of the operator's scopes file is not here yet: it will get its
// own target when it exists.

// fuzzSecret is a well-formed token that the fuzz servers store, fixed so
// that a failing input written to testdata/fuzz reproduces.
const fuzzSecret = "tkd_0lGJcgkNcs89K2HwMqyWWkMNaqi0Dj5rQ82IrzzBI6G03v03w"

// newFuzzServer returns a test server that does not keep logs (a fuzz run
// makes millions of requests), with alice holding fuzzSecret with scopes.
func newFuzzServer(f *testing.F, scopes []string) (*testServer, tokenRecord) {
	f.Helper()
	ts := newTestServer(f)
	ts.log = slog.New(slog.DiscardHandler)
	u := ts.addUser("alice", false)
	tok := tokenRecord{Owner: u.ID, Name: "fuzz", Scopes: scopes, CreatedAt: ts.clock.Now(), Hint: tokenHint(fuzzSecret)}
	if err := ts.store.CreateToken(testActor, &tok, hashToken(fuzzSecret), 0); err != nil {
		f.Fatal(err)
	}
	return ts, tok
}

// FuzzParseToken: parse accepts exactly the well-formed tokens of its
// format, returns their SHA-256, and rejects any one-character change.
func FuzzParseToken(f *testing.F) {
	format := mustFormat(f, defaultTokenPrefix)
	for _, s := range []string{
		fuzzSecret,
		strings.ToUpper(fuzzSecret),
		fuzzSecret[:len(fuzzSecret)-1],
		fuzzSecret + "0",
		"tkd_" + strings.Repeat("0", 49),
		"tkd_",
		"",
		"Bearer " + fuzzSecret,
		strings.Replace(fuzzSecret, "0", "é", 1),
		"tkd_\x00" + fuzzSecret[5:],
		"ghp_" + fuzzSecret[4:],
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		h, err := format.parse(token)
		if err != nil {
			if !errors.Is(err, errMalformedToken) {
				t.Fatalf("parse(%q) = %v; want errMalformedToken", token, err)
			}
			return
		}
		if !secretPattern.MatchString(token) {
			t.Fatalf("parse accepted %q, which is not of the form %s", token, secretPattern)
		}
		if h != hashToken(token) {
			t.Fatalf("parse(%q) returned a hash that is not the token's SHA-256", token)
		}
		// The checksum catches any single substitution in the secret.
		for _, i := range []int{len(defaultTokenPrefix), len(token) / 2, len(token) - 1} {
			b := []byte(token)
			b[i] = base62Alphabet[(strings.IndexByte(base62Alphabet, b[i])+1)%62]
			if _, err := format.parse(string(b)); err == nil {
				t.Fatalf("parse accepted %q, one character off the valid %q", b, token)
			}
		}
	})
}

// FuzzBearerHeader sends any Authorization header through bearerToken and
// the router: the parser yields one token without spaces, only from the
// Bearer scheme; the server answers 200 to exactly the stored token, and
// everything else with a 400 or 401 problem and a Bearer challenge.
func FuzzBearerHeader(f *testing.F) {
	ts, tok := newFuzzServer(f, nil)
	for _, s := range []string{
		"Bearer " + fuzzSecret,
		"bearer " + fuzzSecret,
		"BEARER\t" + fuzzSecret,
		"  Bearer   " + fuzzSecret + "  ",
		"Bearer " + fuzzSecret + " extra",
		"Bearer",
		"Bearer ",
		"Basic YWxpY2U6cGFzc3dvcmQ=",
		"Token " + fuzzSecret,
		"Bearer " + strings.Repeat("A", 4096),
		"Bearer tkd_\x00",
		"Bearer \xff\xfe",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		r := httptest.NewRequest("GET", "/api/v1/user", nil)
		r.RemoteAddr = "192.0.2.7:4711"
		r.Header["Authorization"] = []string{header}
		token, err := bearerToken(r)
		if err == nil {
			scheme, _, _ := strings.Cut(strings.TrimSpace(header), " ")
			if token == "" || strings.ContainsAny(token, " \t") || !strings.EqualFold(scheme, "Bearer") {
				t.Fatalf("bearerToken(%q) = %q; want one token after the Bearer scheme", header, token)
			}
		}

		w := httptest.NewRecorder()
		ts.handler.ServeHTTP(w, r)
		if err == nil && token == fuzzSecret {
			var got userBody
			if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &got) != nil || got.ID != tok.Owner {
				t.Fatalf("GET /api/v1/user with %q = %d %s; want 200 as alice", header, w.Code, w.Body)
			}
			return
		}
		if w.Code != http.StatusBadRequest && w.Code != http.StatusUnauthorized {
			t.Fatalf("GET /api/v1/user with %q = %d; want 400 or 401", header, w.Code)
		}
		var p problemBody
		if w.Header().Get("Content-Type") != "application/problem+json" || json.Unmarshal(w.Body.Bytes(), &p) != nil || p.Status != w.Code {
			t.Fatalf("GET /api/v1/user with %q = %d %q; want a problem", header, w.Code, w.Body)
		}
		if !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), `Bearer realm="tokend"`) {
			t.Fatalf("GET /api/v1/user with %q: WWW-Authenticate %q; want a Bearer challenge", header, w.Header().Get("WWW-Authenticate"))
		}
	})
}

// FuzzCreateTokenBody sends any body of any content type to POST
// /api/v1/tokens with a valid token. The answer is a 201 whose token is
// stored exactly as answered and keeps every rule, or a 4xx problem that
// changed nothing; never a 5xx.
func FuzzCreateTokenBody(f *testing.F) {
	ts, caller := newFuzzServer(f, scopesReadWrite)
	now := ts.clock.Now()
	for _, seed := range []struct{ ct, body string }{
		{"application/json", `{"name":"ci","scopes":["tokens:read"],"expires_at":null}`},
		{"application/json", `{"name":"ci","scopes":[],"expires_at":"2030-02-01T00:00:00Z"}`},
		{"application/json; charset=utf-8", `{"name":" padded ","scopes":["tokens:write","tokens:read"],"expires_at":"2031-01-01T00:00:00+02:00"}`},
		{"application/json", `{"name":"ci","scopes":["admin"],"expires_at":null}`},
		{"application/json", `{"name":"ci","scopes":["tokens:read","tokens:read"],"expires_at":null}`},
		{"application/json", `{"name":"x","expires_at":"2029-01-01T00:00:00Z"}`},
		{"application/json", `{"name":"x","expires_at":"10000-01-01T00:00:00Z"}`},
		{"application/json", `{"name":"\u0000","expires_at":null}`},
		{"application/json", "{\"name\":\"\xff\",\"expires_at\":null}"},
		{"application/json", `{"name":"x","expires_at":null,"admin":true}`},
		{"application/json", `{"name":"x","expires_at":null}{}`},
		{"application/json", `[{"name":"x"}]`},
		{"application/json", strings.Repeat("[", 20000)},
		{"application/json", `null`},
		{"text/plain", `{"name":"x","expires_at":null}`},
		{"", ``},
		{"multipart/form-data; boundary=x", "--x\r\n\r\n--x--"},
	} {
		f.Add(seed.ct, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		r := httptest.NewRequest("POST", "/api/v1/tokens", bytes.NewReader(body))
		r.RemoteAddr = "192.0.2.7:4711"
		r.Header.Set("Authorization", "Bearer "+fuzzSecret)
		r.Header["Content-Type"] = []string{contentType}
		before := dumpStore(t, ts.store)
		w := httptest.NewRecorder()
		ts.handler.ServeHTTP(w, r)

		if w.Code != http.StatusCreated {
			var p problemBody
			if w.Code < 400 || w.Code >= 500 || json.Unmarshal(w.Body.Bytes(), &p) != nil || p.Status != w.Code || p.Detail == "" {
				t.Fatalf("POST /api/v1/tokens (%q) %q = %d %s; want 201 or a 4xx problem", contentType, body, w.Code, w.Body)
			}
			assertUnchanged(t, "a refused creation", before, dumpStore(t, ts.store))
			return
		}

		var got tokenJSON
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || !secretPattern.MatchString(got.Token) {
			t.Fatalf("201 with %s: want a token", w.Body)
		}
		stored, owner, err := ts.store.TokenByHash(hashToken(got.Token))
		if err != nil || owner.ID != caller.Owner || stored.ID != got.ID || stored.Name != got.Name ||
			strings.Join(stored.Scopes, " ") != strings.Join(got.Scopes, " ") || !sameTime(stored.ExpiresAt, got.ExpiresAt) {
			t.Fatalf("201 answered %+v but the store holds %+v of user %d (%v)", got, stored, owner.ID, err)
		}
		name := stored.Name
		if name == "" || name != strings.TrimSpace(name) || !utf8.ValidString(name) || strings.ContainsRune(name, utf8.RuneError) ||
			strings.ContainsFunc(name, unicode.IsControl) || utf8.RuneCountInString(name) > maxTokenNameLen {
			t.Fatalf("a token was stored with the name %q", name)
		}
		for _, sc := range stored.Scopes {
			if !hasScope(caller.Scopes, sc) {
				t.Fatalf("a token holding %v made one holding %q", caller.Scopes, sc)
			}
		}
		if e := stored.ExpiresAt; e != nil && (!e.After(now) || e.After(now.AddDate(maxTokenYears, 0, 0))) {
			t.Fatalf("a token was stored expiring at %v, outside (now, now+%d years]", e, maxTokenYears)
		}
		if err := ts.store.Check(); err != nil {
			t.Fatalf("after a creation: %v", err)
		}
		// Keep the database small and below the per-user cap.
		if _, err := ts.store.DeleteToken(testActor, stored.ID, anyOwner); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzParseExpiry: parseExpiry returns nil only for "never", a time after
// now for the relative forms, and whatever it returns, checkTokenSpec
// either accepts within its bounds or refuses with a message for people.
func FuzzParseExpiry(f *testing.F) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	reg, err := newScopeRegistry(nil)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		"never", " never ", "30d", "3660d", "3661d", "0d", "-1d", "+5d", "1.5d", "d",
		"720h", "1h30m", "-1h", "0s", "9223372036854775807ns", "2562047h",
		"2031-02-03T04:05:06Z", "2031-02-03T04:05:06+14:00", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
		"2031-02-30T00:00:00Z", "", "tomorrow", "\x00", "30D",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseExpiry(s, now)
		if err != nil {
			if got != nil {
				t.Fatalf("parseExpiry(%q) = %v with error %v", s, got, err)
			}
			return
		}
		trimmed := strings.TrimSpace(s)
		if (got == nil) != (trimmed == "never") {
			t.Fatalf("parseExpiry(%q) = %v; want nil exactly for never", s, got)
		}
		if got != nil && !strings.Contains(trimmed, "T") && !got.After(now) {
			t.Fatalf("parseExpiry(%q) = %v; a relative lifetime must end after now (%v)", s, got, now)
		}
		if days, ok := strings.CutSuffix(trimmed, "d"); ok && got != nil {
			if got.After(now.AddDate(0, 0, 3660)) || got.Before(now.AddDate(0, 0, 1)) {
				t.Fatalf("parseExpiry(%q) = %v; want 1 to 3660 days (%s) from now", s, got, days)
			}
		}
		spec, err := checkTokenSpec(reg, "x", nil, got, userRecord{ID: 1}, now)
		var he *httpError
		switch {
		case err != nil && (!errors.As(err, &he) || he.status != http.StatusBadRequest || he.detail == ""):
			t.Fatalf("checkTokenSpec with the expiry of %q = %v; want a 400 with a message", s, err)
		case err == nil && spec.expires != nil && (!spec.expires.After(now) || spec.expires.After(now.AddDate(maxTokenYears, 0, 0))):
			t.Fatalf("checkTokenSpec accepted the expiry %v of %q, outside (now, now+%d years]", spec.expires, s, maxTokenYears)
		}
	})
}
