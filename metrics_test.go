package main

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/julienschmidt/httprouter"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestMetricsAccess checks who may read /metrics: loopback clients without
// a token (unless -metrics-loopback is off) and tokens with the admin
// scope; anyone else is refused as RFC 6750 says.
func TestMetricsAccess(t *testing.T) {
	ts := newTestServer(t)
	admin := ts.addUser("root", true)
	alice := ts.addUser("alice", false)
	_, adminToken := ts.addToken(admin, "prometheus", []string{scopeAdmin}, 0)
	_, aliceToken := ts.addToken(alice, "rw", scopesReadWrite, 0)
	_, adminNoScope := ts.addToken(admin, "ci", scopesRead, 0)

	noLoopback := newTestServer(t)
	noLoopback.cfg.MetricsLoopback = false
	noLoopback.handler = noLoopback.routes()

	tests := []struct {
		name      string
		ts        *testServer
		req       request
		want      int
		challenge string // RFC 6750 error code of a refusal; "-" for none expected
	}{
		{"remote without a token", ts, request{}, 401, ""},
		{"remote with a bad token", ts, request{token: "tkd_nonsense"}, 401, "invalid_token"},
		{"remote with a token lacking admin", ts, request{token: aliceToken}, 403, "insufficient_scope"},
		{"remote with an admin's token lacking admin", ts, request{token: adminNoScope}, 403, "insufficient_scope"},
		{"remote with an admin token", ts, request{token: adminToken}, 200, "-"},
		{"127.0.0.1", ts, request{remote: "127.0.0.1:40000"}, 200, "-"},
		{"elsewhere in 127/8", ts, request{remote: "127.3.2.1:40000"}, 200, "-"},
		{"::1", ts, request{remote: "[::1]:40000"}, 200, "-"},
		{"a private address", ts, request{remote: "10.1.2.3:40000"}, 401, ""},
		{"loopback with -metrics-loopback=false", noLoopback, request{remote: "127.0.0.1:40000"}, 401, ""},
		{"admin token with -metrics-loopback=false", noLoopback, request{remote: "127.0.0.1:40000", token: adminTokenOf(t, noLoopback)}, 200, "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.method, tt.req.path = "GET", "/metrics"
			w := tt.ts.do(tt.req)
			what := "GET /metrics from " + tt.name
			if tt.want != 200 {
				checkProblem(t, what, w, tt.want)
				checkChallenge(t, what, w, tt.challenge, map[bool]string{true: scopeAdmin}[tt.challenge == "insufficient_scope"])
				if strings.Contains(w.Body.String(), "tokend_") {
					t.Errorf("%s leaks metrics: %s", what, w.Body)
				}
				return
			}
			checkStatus(t, what, w, 200)
			if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
				t.Errorf("%s: Content-Type = %q; want the Prometheus text format", what, ct)
			}
			if !strings.Contains(w.Body.String(), "tokend_http_requests_total") {
				t.Errorf("%s: body lacks tokend_http_requests_total:\n%s", what, w.Body)
			}
		})
	}
}

// adminTokenOf makes an admin and an admin token on ts.
func adminTokenOf(t *testing.T, ts *testServer) string {
	t.Helper()
	_, secret := ts.addToken(ts.addUser("admin", true), "prometheus", []string{scopeAdmin}, 0)
	return secret
}

// scrape reads /metrics from loopback and parses it.
func scrape(t *testing.T, ts *testServer) map[string]*dto.MetricFamily {
	t.Helper()
	w := ts.do(request{method: "GET", path: "/metrics", remote: "127.0.0.1:9090"})
	checkStatus(t, "GET /metrics", w, 200)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(w.Body)
	if err != nil {
		t.Fatalf("GET /metrics is not the Prometheus text format: %v", err)
	}
	return fams
}

// sample returns the value of the sample of family name whose labels
// include labels: a counter's or gauge's value, a histogram's count. It
// returns -1 when there is no such sample.
func sample(fams map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	f, ok := fams[name]
	if !ok {
		return -1
	}
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range labels {
			if got[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			return m.Untyped.GetValue()
		}
	}
	return -1
}

// TestMetricsMove makes requests and background work happen and checks
// that a scrape shows each of them.
func TestMetricsMove(t *testing.T) {
	ts := newTestServer(t)
	alice := ts.addUser("alice", false)
	ts.addUser("bob", false)
	_, rw := ts.addToken(alice, "rw", scopesReadWrite, 0)
	_, narrow := ts.addToken(alice, "narrow", []string{scopeIntrospect}, 0)
	_, soon := ts.addToken(alice, "soon", scopesRead, time.Hour)
	ts.addToken(alice, "doomed", scopesRead, time.Minute)

	before := scrape(t, ts)
	if got := sample(before, "tokend_users", nil); got != 2 {
		t.Errorf("tokend_users = %v; want 2", got)
	}
	if got := sample(before, "tokend_tokens", nil); got != 4 {
		t.Errorf("tokend_tokens = %v; want 4", got)
	}
	if got := sample(before, "tokend_database_size_bytes", nil); got <= 0 {
		t.Errorf("tokend_database_size_bytes = %v; want the file's size", got)
	}
	for _, r := range decisionResults {
		if got := sample(before, "tokend_auth_decisions_total", map[string]string{"result": r}); got != 0 {
			t.Errorf("tokend_auth_decisions_total{result=%q} = %v before any request; want 0", r, got)
		}
	}
	if got := sample(before, "tokend_http_requests_in_flight", nil); got != 1 {
		t.Errorf("tokend_http_requests_in_flight = %v during a scrape; want 1, the scrape", got)
	}

	ts.clock.Add(2 * time.Hour) // "soon" and "doomed" have expired
	requests := []struct {
		req      request
		status   int
		decision string
	}{
		{request{method: "GET", path: "/api/v1/user", token: rw}, 200, decisionOK},
		{request{method: "GET", path: "/api/v1/tokens/12345", token: rw}, 404, decisionOK},
		{request{method: "GET", path: "/api/v1/user"}, 401, decisionNoCredentials},
		{request{method: "GET", path: "/api/v1/user", token: "tkd_garbage"}, 401, decisionInvalidToken},
		{request{method: "GET", path: "/api/v1/user?access_token=x"}, 400, decisionInvalidRequest},
		{request{method: "GET", path: "/api/v1/user", token: soon}, 401, decisionExpired},
		{request{method: "GET", path: "/api/v1/tokens", token: narrow}, 403, decisionInsufficientScope},
		{request{method: "POST", path: "/api/v1/tokens", token: narrow, body: tokenRequest("x", nil, nil)}, 403, decisionInsufficientScope},
		{request{method: "GET", path: "/nowhere"}, 404, ""},
	}
	for _, tt := range requests {
		if w := ts.do(tt.req); w.Code != tt.status {
			t.Fatalf("%s = %d; want %d; body: %s", label(tt.req), w.Code, tt.status, w.Body)
		}
	}
	ts.purge(context.Background()) // retention is a week: nothing to delete yet
	ts.clock.Add(8 * 24 * time.Hour)
	ts.purge(context.Background()) // now "soon" and "doomed" go
	if _, err := ts.flushLastUsed(); err != nil {
		t.Fatal(err)
	}

	after := scrape(t, ts)
	counts := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"tokend_http_requests_total", map[string]string{"method": "GET", "route": "/api/v1/user", "status": "200"}, 1},
		{"tokend_http_requests_total", map[string]string{"method": "GET", "route": "/api/v1/user", "status": "401"}, 3},
		{"tokend_http_requests_total", map[string]string{"method": "GET", "route": "/api/v1/tokens/:id", "status": "404"}, 1},
		{"tokend_http_requests_total", map[string]string{"method": "GET", "route": "none", "status": "404"}, 1},
		{"tokend_http_requests_total", map[string]string{"method": "GET", "route": "/metrics", "status": "200"}, 1},
		{"tokend_http_request_duration_seconds", map[string]string{"method": "GET", "route": "/api/v1/user", "status": "401"}, 3},
		{"tokend_http_request_duration_seconds", map[string]string{"method": "POST", "route": "/api/v1/tokens", "status": "403"}, 1},
		{"tokend_auth_decisions_total", map[string]string{"result": decisionOK}, 2},
		{"tokend_auth_decisions_total", map[string]string{"result": decisionNoCredentials}, 1},
		{"tokend_auth_decisions_total", map[string]string{"result": decisionInvalidToken}, 1},
		{"tokend_auth_decisions_total", map[string]string{"result": decisionInvalidRequest}, 1},
		{"tokend_auth_decisions_total", map[string]string{"result": decisionExpired}, 1},
		{"tokend_auth_decisions_total", map[string]string{"result": decisionInsufficientScope}, 2},
		{"tokend_auth_decisions_total", map[string]string{"result": decisionError}, 0},
		{"tokend_purge_runs_total", map[string]string{"result": "ok"}, 2},
		{"tokend_purge_runs_total", map[string]string{"result": "error"}, 0},
		{"tokend_purge_deleted_tokens_total", nil, 2},
		{"tokend_last_used_flush_duration_seconds", nil, 1},
		{"tokend_tokens", nil, 2},
		{"tokend_users", nil, 2},
	}
	for _, c := range counts {
		if got := sample(after, c.name, c.labels); got != c.want {
			t.Errorf("%s %v = %v; want %v", c.name, c.labels, got, c.want)
		}
	}
	// Process and runtime metrics come along for dashboards.
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes", "go_build_info"} {
		if _, ok := after[name]; !ok {
			t.Errorf("the scrape lacks %s; families: %v", name, slices.Sorted(maps.Keys(after)))
		}
	}

	// A storage failure on the verification path is counted, and the
	// scrape goes on without the figures it cannot read.
	_, unseen := ts.addToken(alice, "never verified", scopesRead, 0)
	ts.store.Close()
	if w := ts.do(request{method: "GET", path: "/api/v1/user", token: unseen}); w.Code != 500 {
		t.Fatalf("GET /api/v1/user with the database closed = %d; want 500", w.Code)
	}
	failed := scrape(t, ts)
	if got := sample(failed, "tokend_auth_decisions_total", map[string]string{"result": decisionError}); got != 1 {
		t.Errorf("tokend_auth_decisions_total{result=error} = %v; want 1", got)
	}
	if got := sample(failed, "tokend_users", nil); got != -1 {
		t.Errorf("tokend_users with the database closed = %v; want it left out", got)
	}
}

// TestPurgeErrorCounted checks that a failed purge pass is counted as one.
func TestPurgeErrorCounted(t *testing.T) {
	ts := newTestServer(t)
	ts.store.Close()
	ts.purge(context.Background())
	if got := sample(scrapeRegistry(t, ts), "tokend_purge_runs_total", map[string]string{"result": "error"}); got != 1 {
		t.Errorf("tokend_purge_runs_total{result=error} = %v after a failed pass; want 1", got)
	}
}

// scrapeRegistry reads ts's metrics straight from its registry.
func scrapeRegistry(t *testing.T, ts *testServer) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := ts.metrics.registry.Gather()
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	if len(out) == 0 {
		t.Fatalf("gather: %v", err)
	}
	return out
}

// TestRequestLog checks the one line logged per request at -access-log
// all: at info level, with the route pattern, status, duration, client
// address and, once the request has authenticated, the token and user
// ids; never the path, the query string, headers or the body.
func TestRequestLog(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			ts := newTestServer(t)
			var logs syncBuffer
			log, err := newLogger(&logs, "info", format)
			if err != nil {
				t.Fatal(err)
			}
			ts.log = log
			ts.cfg.AccessLog = accessLogAll // the default leaves out the 200
			alice := ts.addUser("alice", false)
			tok, secret := ts.addToken(alice, "rw", scopesReadWrite, 0)

			ts.do(request{method: "GET", path: "/api/v1/tokens/987654321?note=querysecret", token: secret,
				header: map[string]string{"Cookie": "session=cookiesecret", "X-Note": "headersecret"}})
			ts.do(request{method: "POST", path: "/api/v1/revoke", body: `{"token":"tkd_bodysecret"}`})
			ts.do(request{method: "GET", path: "/no/such/path/pathsecret"})
			out := logs.String()
			for _, secretText := range []string{secret, "987654321", "querysecret", "cookiesecret", "headersecret", "bodysecret", "pathsecret"} {
				if strings.Contains(out, secretText) {
					t.Errorf("the request log holds %q:\n%s", secretText, out)
				}
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if len(lines) != 3 {
				t.Fatalf("3 requests logged %d lines; want one each:\n%s", len(lines), out)
			}
			want := []map[string]string{
				{"level": "INFO", "msg": "request", "method": "GET", "route": "/api/v1/tokens/:id", "status": "404", "remote": "192.0.2.7",
					"token_id": itoa(tok.ID), "user_id": itoa(alice.ID)},
				{"method": "POST", "route": "/api/v1/revoke", "status": "200"},
				{"method": "GET", "route": "none", "status": "404"},
			}
			for i, line := range lines {
				fields := logFields(t, format, line)
				for k, v := range want[i] {
					if fields[k] != v {
						t.Errorf("log line %d: %s = %q; want %q\n%s", i, k, fields[k], v, line)
					}
				}
				if fields["duration"] == "" {
					t.Errorf("log line %d has no duration: %s", i, line)
				}
				if i > 0 && (fields["token_id"] != "" || fields["user_id"] != "") {
					t.Errorf("log line %d names a caller for an unauthenticated request: %s", i, line)
				}
			}
		})
	}
}

// logFields parses one slog line of format text or json into strings.
func logFields(t *testing.T, format, line string) map[string]string {
	t.Helper()
	out := map[string]string{}
	if format == "json" {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		for k, v := range m {
			switch v := v.(type) {
			case string:
				out[k] = v
			default:
				b, _ := json.Marshal(v)
				out[k] = string(b)
			}
		}
		return out
	}
	for _, f := range strings.Fields(line) {
		k, v, _ := strings.Cut(f, "=")
		out[k] = strings.Trim(v, `"`)
	}
	return out
}

// TestRouterRecordsEveryPattern checks that each way of registering a
// route records its pattern, so that no matched route is logged as none.
func TestRouterRecordsEveryPattern(t *testing.T) {
	echo := func(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
		w.Write([]byte(requestInfoOf(r).route))
	}
	echoHandler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(requestInfoOf(r).route))
	})
	rt := newRouter()
	rt.GET("/get/:id", echo)
	rt.HEAD("/head", echo)
	rt.OPTIONS("/options", echo)
	rt.POST("/post", echo)
	rt.PUT("/put", echo)
	rt.PATCH("/patch", echo)
	rt.DELETE("/delete/*rest", echo)
	rt.Handle("GET", "/handle", echo)
	rt.Handler("GET", "/handler/:x", echoHandler)
	rt.HandlerFunc("GET", "/handlerfunc", echoHandler)
	files, err := newStaticFiles(fstest.MapFS{"a.txt": {Data: []byte("file a")}})
	if err != nil {
		t.Fatal(err)
	}
	rt.GET("/files/*filepath", files.handle(rt.notFound))

	ts := newTestServer(t)
	ts.cfg.AccessLog = accessLogAll // so that the file's 200 is logged
	handler := ts.instrument(rt)
	tests := []struct{ method, path, pattern string }{
		{"GET", "/get/7", "/get/:id"},
		{"HEAD", "/head", "/head"},
		{"OPTIONS", "/options", "/options"},
		{"POST", "/post", "/post"},
		{"PUT", "/put", "/put"},
		{"PATCH", "/patch", "/patch"},
		{"DELETE", "/delete/a/b", "/delete/*rest"},
		{"GET", "/handle", "/handle"},
		{"GET", "/handler/y", "/handler/:x"},
		{"GET", "/handlerfunc", "/handlerfunc"},
	}
	for _, tt := range tests {
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, httptest.NewRequest(tt.method, tt.path, nil))
		if w.Code != 200 || w.Body.String() != tt.pattern {
			t.Errorf("%s %s recorded route %q (status %d); want %q", tt.method, tt.path, w.Body, w.Code, tt.pattern)
		}
	}
	w := httptest.NewRecorder()
	handler.ServeHTTP(w, httptest.NewRequest("GET", "/files/a.txt", nil))
	if w.Code != 200 || w.Body.String() != "file a" {
		t.Errorf("GET /files/a.txt = %d %q; want the file", w.Code, w.Body)
	}
	if !strings.Contains(ts.logs.String(), "route=/files/*filepath") {
		t.Errorf("a file served through a *filepath route is not logged with its pattern:\n%s", ts.logs)
	}
}

// TestDatabaseUsedBytes checks that tokend_database_used_bytes follows the
// data, not the file: it grows with tokens, and falls when they are purged
// (the file does not shrink).
func TestDatabaseUsedBytes(t *testing.T) {
	ts := newTestServer(t)
	u := ts.addUser("alice", false)
	empty := sample(scrape(t, ts), "tokend_database_used_bytes", nil)
	if empty <= 0 {
		t.Fatalf("tokend_database_used_bytes of a new database = %v; want more than 0", empty)
	}
	past := ts.clock.Now().Add(-time.Hour)
	bulkTokens(t, ts.store, u.ID, 3000, ts.clock.Now().Add(-2*time.Hour), func(int) *time.Time { return &past })
	full := scrape(t, ts)
	used, size := sample(full, "tokend_database_used_bytes", nil), sample(full, "tokend_database_size_bytes", nil)
	if used < empty+3000*100 || used > size {
		t.Errorf("with 3000 tokens, used = %v bytes of a %v-byte file; want at least %v more than the %v of an empty one, and at most the file",
			used, size, 3000*100, empty)
	}
	if n, _, err := ts.store.PurgeExpired(context.Background(), systemActor, ts.clock.Now(), 10_000); err != nil || n != 3000 {
		t.Fatalf("PurgeExpired = %d, %v; want 3000", n, err)
	}
	// The purge recorded 3000 events: retention purges them in turn.
	if n, err := ts.store.PurgeAudit(context.Background(), time.Now().Add(time.Hour), 10_000); err != nil || n < 3000 {
		t.Fatalf("PurgeAudit = %d, %v; want at least 3000", n, err)
	}
	purged := scrape(t, ts)
	if got := sample(purged, "tokend_database_used_bytes", nil); got > used/2 {
		t.Errorf("after purging the 3000 tokens, used = %v bytes; want well under the %v before", got, used)
	}
}
