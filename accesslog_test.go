package main

import (
	"flag"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestAccessLogSettings sends the same requests at each -access-log
// setting and checks which of them the request log holds: every one at
// all; only the refused and failed ones (4xx, 5xx) at errors, the default;
// none at off. The request metrics count every request at every setting.
func TestAccessLogSettings(t *testing.T) {
	if got := defaultConfig().AccessLog; got != accessLogErrors {
		t.Fatalf("the default -access-log is %q; want %q", got, accessLogErrors)
	}
	tests := []struct {
		setting string
		want    []string // "ROUTE STATUS" of each line, in order
	}{
		{accessLogAll, []string{"/api/v1/user 200", "/auth 204", "/auth 401", "/api/v1/tokens/:id 404", "/api/v1/user 401", "none 404", "/api/v1/user 500"}},
		{accessLogErrors, []string{"/auth 401", "/api/v1/tokens/:id 404", "/api/v1/user 401", "none 404", "/api/v1/user 500"}},
		{accessLogOff, nil},
	}
	for _, tt := range tests {
		t.Run(tt.setting, func(t *testing.T) {
			ts := newTestServer(t)
			ts.cfg.AccessLog = tt.setting
			ts.cfg.SlowRequest = time.Hour // however busy the machine, none is slow
			alice := ts.addUser("alice", false)
			tok, secret := ts.addToken(alice, "rw", scopesReadWrite, 0)
			_, unused := ts.addToken(alice, "unused", scopesReadWrite, 0)
			for _, c := range []struct {
				req    request
				status int
			}{
				{request{method: "GET", path: "/api/v1/user", token: secret}, http.StatusOK},
				{request{method: "GET", path: "/auth", token: secret}, http.StatusNoContent},
				{request{method: "GET", path: "/auth"}, http.StatusUnauthorized},
				{request{method: "GET", path: "/api/v1/tokens/987654321", token: secret}, http.StatusNotFound},
				{request{method: "GET", path: "/api/v1/user", token: secret + "x"}, http.StatusUnauthorized},
				{request{method: "GET", path: "/no/such/path"}, http.StatusNotFound},
			} {
				if w := ts.do(c.req); w.Code != c.status {
					t.Fatalf("%s %s = %d %s; want %d", c.req.method, c.req.path, w.Code, w.Body, c.status)
				}
			}
			// A failure on tokend's side: the database is gone, and the
			// token was never verified, so no cache answers for it.
			ts.store.Close()
			if w := ts.do(request{method: "GET", path: "/api/v1/user", token: unused}); w.Code != http.StatusInternalServerError {
				t.Fatalf("GET /api/v1/user with the database closed = %d %s; want 500", w.Code, w.Body)
			}

			var got []string
			for line := range strings.Lines(ts.logs.String()) {
				fields := logFields(t, "text", line)
				if fields["msg"] != "request" {
					continue
				}
				got = append(got, fields["route"]+" "+fields["status"])
				if fields["route"] == "/api/v1/tokens/:id" && fields["token_id"] != itoa(tok.ID) {
					t.Errorf("the line of an authenticated request names token %q; want %d: %s", fields["token_id"], tok.ID, line)
				}
				if fields["slow"] != "" {
					t.Errorf("a quick request is logged as slow: %s", line)
				}
			}
			if strings.Join(got, ", ") != strings.Join(tt.want, ", ") {
				t.Errorf("-access-log %s logged %q; want %q\n%s", tt.setting, got, tt.want, ts.logs)
			}
			fams := scrapeRegistry(t, ts)
			for _, route := range []string{"/api/v1/user", "/auth"} {
				status := map[string]string{"/api/v1/user": "200", "/auth": "204"}[route]
				labels := map[string]string{"method": "GET", "route": route, "status": status}
				if n := sample(fams, "tokend_http_requests_total", labels); n != 1 {
					t.Errorf("tokend_http_requests_total%v = %v at -access-log %s; want 1", labels, n, tt.setting)
				}
			}
		})
	}
}

// TestAccessLogSlowLine checks that at -access-log errors a success slower
// than the slow-request limit gets a line marked slow=true, and one
// quicker gets none. (The limit is lowered to 0, not waited for.)
func TestAccessLogSlowLine(t *testing.T) {
	for _, limit := range []time.Duration{0, time.Hour} {
		ts := newTestServer(t)
		ts.cfg.SlowRequest = limit
		alice := ts.addUser("alice", false)
		_, secret := ts.addToken(alice, "rw", scopesReadWrite, 0)
		if w := ts.do(request{method: "GET", path: "/api/v1/user", token: secret}); w.Code != http.StatusOK {
			t.Fatalf("GET /api/v1/user = %d %s; want 200", w.Code, w.Body)
		}
		var lines []map[string]string
		for line := range strings.Lines(ts.logs.String()) {
			if fields := logFields(t, "text", line); fields["msg"] == "request" {
				lines = append(lines, fields)
			}
		}
		switch {
		case limit == 0 && (len(lines) != 1 || lines[0]["status"] != "200" || lines[0]["slow"] != "true"):
			t.Errorf("a success at the slow-request limit logged %v; want one line, status 200, slow=true\n%s", lines, ts.logs)
		case limit > 0 && len(lines) != 0:
			t.Errorf("a quick success logged %v at -access-log errors; want no line", lines)
		}
	}
}

// TestAccessLogSlowRequests checks which answers each setting logs by
// status and duration: at errors, a success is logged once it took
// slowRequest (the default limit) or more.
func TestAccessLogSlowRequests(t *testing.T) {
	tests := []struct {
		setting string
		status  int
		d       time.Duration
		want    bool
	}{
		{accessLogErrors, 200, slowRequest - time.Millisecond, false},
		{accessLogErrors, 204, slowRequest, true},
		{accessLogErrors, 303, 5 * time.Second, true},
		{accessLogErrors, 399, time.Millisecond, false},
		{accessLogErrors, 400, time.Millisecond, true},
		{accessLogErrors, 503, 0, true},
		{accessLogAll, 200, 0, true},
		{accessLogOff, 500, 5 * time.Second, false},
	}
	ts := newTestServer(t)
	if ts.cfg.SlowRequest != slowRequest {
		t.Fatalf("the default slow-request limit is %v; want %v", ts.cfg.SlowRequest, slowRequest)
	}
	for _, tt := range tests {
		ts.cfg.AccessLog = tt.setting
		if got := ts.logsRequest(tt.status, tt.d); got != tt.want {
			t.Errorf("-access-log %s: logsRequest(%d, %v) = %v; want %v", tt.setting, tt.status, tt.d, got, tt.want)
		}
	}
}

// TestAccessLogFlag checks that -access-log and TOKEND_ACCESS_LOG set the
// setting, the flag beating the variable. (Bad values are in
// TestConfigRejectsBadValues.)
func TestAccessLogFlag(t *testing.T) {
	tests := []struct {
		args []string
		env  string
		want string
	}{
		{nil, "", accessLogErrors},
		{[]string{"-access-log", "all"}, "", accessLogAll},
		{nil, "off", accessLogOff},
		{[]string{"-access-log=errors"}, "all", accessLogErrors},
	}
	clearTokendEnv(t)
	for _, tt := range tests {
		if tt.env != "" {
			t.Setenv("TOKEND_ACCESS_LOG", tt.env)
		}
		cfg := defaultConfig()
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		cfg.register(fs)
		if err := parseFlags(fs, tt.args); err != nil {
			t.Fatalf("parse %v with TOKEND_ACCESS_LOG=%q: %v", tt.args, tt.env, err)
		}
		if err := cfg.check(); err != nil || cfg.AccessLog != tt.want {
			t.Errorf("%v with TOKEND_ACCESS_LOG=%q: -access-log %q, check %v; want %q", tt.args, tt.env, cfg.AccessLog, err, tt.want)
		}
		clearTokendEnv(t)
	}
}
