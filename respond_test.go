package main

import (
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"
)

// TestEveryAnswerCarriesSecurityHeaders checks the headers that
// secureHeaders sets on answers of every kind: pages, JSON, problems, the
// router's own errors and redirects, static files, 304s and forward
// auth's refusals; HSTS exactly over HTTPS.
func TestEveryAnswerCarriesSecurityHeaders(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", true)
	_, secret := ts.addToken(alice, "rw", scopesReadWrite, 0)
	etag := ts.page(pageReq{method: "GET", path: "/static/style.css"}).Header().Get("ETag")
	for _, https := range []bool{false, true} {
		for _, tt := range []struct {
			name   string
			req    pageReq
			status int
		}{
			{"a page", pageReq{method: "GET", path: "/login"}, 200},
			{"a page's redirect", pageReq{method: "GET", path: "/account"}, 303},
			{"a form's redirect", pageReq{method: "POST", path: "/login", form: url.Values{"name": {"alice"}, "password": {"password-of-alice"}}}, 303},
			{"JSON", pageReq{method: "GET", path: "/api/v1/user", header: map[string]string{"Authorization": "Bearer " + secret}}, 200},
			{"a problem", pageReq{method: "GET", path: "/api/v1/user"}, 401},
			{"the router's 404", pageReq{method: "GET", path: "/api/v1/nothing"}, 404},
			{"the router's 405", pageReq{method: "PUT", path: "/api/v1/user"}, 405},
			{"the router's redirect", pageReq{method: "GET", path: "/login/"}, 301},
			{"a static file", pageReq{method: "GET", path: "/static/style.css"}, 200},
			{"a static 304", pageReq{method: "GET", path: "/static/style.css", header: map[string]string{"If-None-Match": etag}}, 304},
			{"a static folder", pageReq{method: "GET", path: "/static/"}, 404},
			{"a forward-auth refusal", pageReq{method: "GET", path: "/auth"}, 401},
			{"a forward-auth refusal for scopes", pageReq{method: "GET", path: "/auth/admin", header: map[string]string{"Authorization": "Bearer " + secret}}, 403},
			{"a misconfigured forward-auth route", pageReq{method: "GET", path: "/auth/no-such-scope", header: map[string]string{"Authorization": "Bearer " + secret}}, 500},
			{"HEAD", pageReq{method: "HEAD", path: "/healthz"}, 200},
		} {
			tt.req.https = https
			what := tt.req.method + " " + tt.req.path + " (" + tt.name + ")"
			if https {
				what += " over HTTPS"
			}
			w := ts.page(tt.req)
			if w.Code != tt.status {
				t.Errorf("%s = %d; want %d", what, w.Code, tt.status)
			}
			h := w.Header()
			for k, want := range map[string]string{
				"X-Content-Type-Options":       "nosniff",
				"X-Frame-Options":              "DENY",
				"Referrer-Policy":              "no-referrer",
				"Cross-Origin-Opener-Policy":   "same-origin",
				"Cross-Origin-Resource-Policy": "same-origin",
			} {
				if got := h.Get(k); got != want {
					t.Errorf("%s: %s = %q; want %q", what, k, got, want)
				}
			}
			if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("%s: Content-Security-Policy = %q; want default-src and frame-ancestors 'none'", what, csp)
			}
			pp := h.Get("Permissions-Policy")
			for _, feature := range []string{"camera=()", "microphone=()", "geolocation=()", "payment=()", "usb=()"} {
				if !strings.Contains(pp, feature) {
					t.Errorf("%s: Permissions-Policy %q lacks %s", what, pp, feature)
				}
			}
			// Deprecated or never shipped features make browsers complain.
			for _, old := range []string{"interest-cohort", "document-domain", "vibrate", "speaker", "ambient-light-sensor"} {
				if strings.Contains(pp, old) {
					t.Errorf("%s: Permissions-Policy names %s, which browsers no longer know", what, old)
				}
			}
			if hsts := h.Get("Strict-Transport-Security"); (hsts == "max-age=31536000") != https {
				t.Errorf("%s: Strict-Transport-Security = %q; want it exactly over HTTPS", what, hsts)
			}
		}
	}
}

// TestForwardAuthPassesWithoutPageHeaders checks that a check forward auth
// lets through carries no page security headers, which no proxy hands a
// browser, and no more than its own: see secureHeaders.
func TestForwardAuthPassesWithoutPageHeaders(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", true)
	_, secret := ts.addToken(alice, "rw", scopesReadWrite, 0)
	for _, method := range []string{"GET", "HEAD"} {
		for _, path := range []string{"/auth", "/auth/" + scopeTokensRead} {
			w := ts.page(pageReq{method: method, path: path, https: true, header: map[string]string{"Authorization": "Bearer " + secret}})
			if w.Code != http.StatusNoContent {
				t.Fatalf("%s %s = %d; want 204", method, path, w.Code)
			}
			var keys []string
			for k := range w.Header() {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			want := []string{"Cache-Control", headerAuthScopes, headerAuthTokenID, headerAuthUser, headerAuthUserID}
			if !slices.Equal(keys, want) {
				t.Errorf("%s %s: headers %v; want exactly %v", method, path, keys, want)
			}
		}
	}
}

// TestSignInAndOutHeaders checks the answers that set and clear the
// session cookie: never cached, and sign-out clears what the browser
// keeps for tokend.
func TestSignInAndOutHeaders(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("alice", false)
	w := ts.page(pageReq{method: "POST", path: "/login", form: url.Values{"name": {"alice"}, "password": {"password-of-alice"}}})
	c := responseCookie(w, sessionCookieName)
	if w.Code != http.StatusSeeOther || c == nil {
		t.Fatalf("POST /login = %d, cookie %v; want 303 with the session cookie", w.Code, c)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("POST /login: the redirect that sets the session cookie has Cache-Control %q; want no-store", cc)
	}
	w = ts.page(pageReq{method: "POST", path: "/logout", cookie: c.Value, form: url.Values{}})
	checkRedirect(t, "POST /logout", w, "/login")
	if csd := w.Header().Get("Clear-Site-Data"); csd != `"cache", "storage"` {
		t.Errorf("POST /logout: Clear-Site-Data = %q; want \"cache\", \"storage\"", csd)
	}
	if cc := w.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("POST /logout: Cache-Control = %q; want no-store", cc)
	}
	if sessions, err := ts.store.SessionsOf(1); err != nil || len(sessions) != 0 {
		t.Errorf("after POST /logout the store holds sessions %v (%v); want none", sessions, err)
	}
}
