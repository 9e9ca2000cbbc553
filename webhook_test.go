package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// testWebhookSecret is the signing secret of the tests: whsec_ and the
// base64 of 32 bytes.
const testWebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

// verifyStandardWebhook checks a delivery as a receiver would, written
// from the Standard Webhooks specification alone (it does not call
// signWebhook): the secret's key is the base64 after whsec_; the signed
// content is "<webhook-id>.<webhook-timestamp>.<body>"; webhook-signature
// holds space-separated "v1,<base64 HMAC-SHA256>" entries, one of which
// must match; the timestamp must be within five minutes of now.
func verifyStandardWebhook(secret string, h http.Header, body []byte, now time.Time) error {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return fmt.Errorf("secret: %v", err)
	}
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return fmt.Errorf("missing headers: id %q, timestamp %q, signature %q", id, ts, sigs)
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q: %v", ts, err)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > 5*time.Minute || d < -5*time.Minute {
		return fmt.Errorf("webhook-timestamp %q is %v from now", ts, d)
	}
	mac := hmac.New(sha256.New, key)
	io.WriteString(mac, id+"."+ts+".")
	mac.Write(body)
	want := mac.Sum(nil)
	for _, s := range strings.Fields(sigs) {
		version, sig, ok := strings.Cut(s, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(sig)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return fmt.Errorf("no signature in %q matches", sigs)
}

// delivery is one request a test receiver got.
type delivery struct {
	id, timestamp string
	body          []byte
	verified      error
}

// webhookReceiver is a real HTTP server on loopback that takes deliveries,
// verifies each one's signature, and answers with the status that status
// returns for the n-th request (from 1). hold, when set, is waited on
// before answering the n-th request if it returns a channel.
type webhookReceiver struct {
	*httptest.Server
	clock *fakeClock
	mu    sync.Mutex
	got   []delivery
	// status returns the answer's status for the n-th request; 200 if nil.
	status func(n int) int
	// hold returns a channel that the n-th request waits on; nil: none.
	hold func(n int) chan struct{}
	// arrived hears of each request as it arrives.
	arrived chan int
}

func newWebhookReceiver(t *testing.T, clock *fakeClock) *webhookReceiver {
	t.Helper()
	rc := &webhookReceiver{clock: clock, arrived: make(chan int, 100)}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		d := delivery{id: r.Header.Get("webhook-id"), timestamp: r.Header.Get("webhook-timestamp"), body: body,
			verified: verifyStandardWebhook(testWebhookSecret, r.Header, body, rc.clock.Now())}
		rc.got = append(rc.got, d)
		n := len(rc.got)
		status, hold := rc.status, rc.hold
		rc.mu.Unlock()
		rc.arrived <- n
		if hold != nil {
			if ch := hold(n); ch != nil {
				select {
				case <-ch:
				case <-r.Context().Done():
					return
				}
			}
		}
		code := http.StatusOK
		if status != nil {
			code = status(n)
		}
		w.WriteHeader(code)
	}))
	t.Cleanup(rc.Close)
	return rc
}

// deliveries returns what rc got so far, every signature checked.
func (rc *webhookReceiver) deliveries(t *testing.T) []delivery {
	t.Helper()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for i, d := range rc.got {
		if d.verified != nil {
			t.Errorf("delivery %d (%s): signature check: %v", i+1, d.id, d.verified)
		}
	}
	return append([]delivery(nil), rc.got...)
}

// newTestWebhooks returns an outbox over st sending to endpoints with
// testWebhookSecret, on clock, with the largest backoff the jitter allows.
func newTestWebhooks(t *testing.T, st store, clock *fakeClock, endpoints ...string) *webhooks {
	t.Helper()
	cfg := defaultConfig()
	cfg.Webhooks, cfg.WebhookSecret = endpoints, testWebhookSecret
	if err := cfg.checkWebhooks(); err != nil {
		t.Fatalf("checkWebhooks: %v", err)
	}
	w := newWebhooks(st, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), clock.Now, nil)
	w.jitter = func(d time.Duration) time.Duration { return d }
	return w
}

// enqueueTestEvent stores the messages of one token.leaked event, as the
// dispatcher would, for the outbox's endpoints, and returns them.
func enqueueTestEvent(t *testing.T, w *webhooks, seq uint64) []webhookMessage {
	t.Helper()
	ev := auditEvent{Seq: seq, Time: w.now(), Kind: "token.leaked", Outcome: "ok", Actor: "anonymous",
		SubjectID: 1, Subject: "alice", TokenID: 7, TokenHint: "abcd", Via: "api"}
	endpoints, err := w.allEndpoints()
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := webhookMessages([]auditEvent{ev}, endpoints, w.now())
	if err != nil {
		t.Fatal(err)
	}
	if err := w.st.EnqueueWebhooks(seq-1, seq, msgs); err != nil {
		t.Fatalf("EnqueueWebhooks: %v", err)
	}
	return msgs
}

// deliverN runs one delivery pass and checks that it made want attempts.
func deliverN(t *testing.T, w *webhooks, want int, what string) {
	t.Helper()
	n, err := w.deliver(context.Background())
	if err != nil || n != want {
		t.Fatalf("%s: deliver = %d, %v; want %d attempts", what, n, err, want)
	}
}

// statusOf returns the outbox's figures for endpoint.
func statusOf(t *testing.T, st store, endpoint string) webhookEndpointStatus {
	t.Helper()
	all, err := st.WebhookStatus()
	if err != nil {
		t.Fatalf("WebhookStatus: %v", err)
	}
	for _, s := range all {
		if s.Endpoint == endpoint {
			return s
		}
	}
	return webhookEndpointStatus{Endpoint: endpoint}
}

// TestWebhookSignedDeliveryAndBackoff posts one message to a receiver that
// fails three times: every attempt carries the same id and body and a
// signature the independent check accepts, and the waits between attempts
// grow (5s, 10s, 20s at the jitter's ceiling) until a 2xx delivers it.
func TestWebhookSignedDeliveryAndBackoff(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		clock := newFakeClock()
		rc := newWebhookReceiver(t, clock)
		rc.status = func(n int) int {
			if n <= 3 {
				return http.StatusInternalServerError
			}
			return http.StatusNoContent
		}
		w := newTestWebhooks(t, st, clock, rc.URL+"/hook")
		msgs := enqueueTestEvent(t, w, 1)
		if len(msgs) != 1 || !strings.HasPrefix(msgs[0].ID, "msg_") {
			t.Fatalf("messages = %+v; want one with a msg_ id", msgs)
		}
		deliverN(t, w, 1, "first attempt")
		for _, wait := range []time.Duration{5 * time.Second, 10 * time.Second, 20 * time.Second} {
			clock.Add(wait - time.Second)
			deliverN(t, w, 0, fmt.Sprintf("a second before the %v wait ends", wait))
			clock.Add(time.Second)
			deliverN(t, w, 1, fmt.Sprintf("once the %v wait ends", wait))
		}
		deliverN(t, w, 0, "once delivered")
		got := rc.deliveries(t)
		if len(got) != 4 {
			t.Fatalf("receiver got %d deliveries; want 4", len(got))
		}
		for i, d := range got {
			if d.id != msgs[0].ID || string(d.body) != string(msgs[0].Payload) {
				t.Errorf("delivery %d: id %s, body %s; want id %s and the enqueued body", i+1, d.id, d.body, msgs[0].ID)
			}
		}
		var p struct {
			Type      string     `json:"type"`
			Timestamp time.Time  `json:"timestamp"`
			Data      auditEvent `json:"data"`
		}
		if err := json.Unmarshal(got[0].body, &p); err != nil {
			t.Fatalf("body %s: %v", got[0].body, err)
		}
		if p.Type != "token.leaked" || !p.Timestamp.Equal(clock.Now().Add(-35*time.Second)) || p.Data.TokenHint != "abcd" || p.Data.Seq != 1 {
			t.Errorf("payload = %+v; want type token.leaked, the event's time and the event as data", p)
		}
		s := statusOf(t, st, rc.URL+"/hook")
		if s.Pending != 0 || s.Delivered != 1 || s.Failing != 0 || s.LastSuccess == nil || !s.LastSuccess.Equal(clock.Now()) ||
			s.LastError != "answered 500 Internal Server Error" {
			t.Errorf("status = %+v; want 1 delivered now, the last error kept", s)
		}
	})
}

// TestWebhookGivesUpAfterADay keeps failing: the message is retried with
// waits capped at an hour until a day has passed since it was enqueued,
// then it is failed, never tried again, and shown as given up.
func TestWebhookGivesUpAfterADay(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		clock := newFakeClock()
		rc := newWebhookReceiver(t, clock)
		rc.status = func(int) int { return http.StatusServiceUnavailable }
		w := newTestWebhooks(t, st, clock, rc.URL)
		start := clock.Now()
		enqueueTestEvent(t, w, 1)
		attempts := 0
		for clock.Now().Sub(start) <= webhookRetryFor+time.Hour {
			n, err := w.deliver(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			attempts += n
			clock.Add(time.Minute)
		}
		// 5s·2^k up to the hour: 5s … 40m (10 waits), then hourly to the
		// day's end, plus the first attempt and the last at the end.
		if attempts < 25 || attempts > 40 {
			t.Errorf("attempts in a day = %d; want about 33", attempts)
		}
		if got := len(rc.deliveries(t)); got != attempts {
			t.Errorf("receiver got %d deliveries; deliverer made %d attempts", got, attempts)
		}
		s := statusOf(t, st, rc.URL)
		if s.Pending != 0 || s.Failed != 1 || s.LastError != "answered 503 Service Unavailable" {
			t.Errorf("status after a day = %+v; want 1 failed with its last error", s)
		}
	})
}

// TestWebhookRedirectNotFollowed: a 3xx is a failed attempt, and the
// place it points at is never sent anything.
func TestWebhookRedirectNotFollowed(t *testing.T) {
	st, _ := newTestDB(t)
	clock := newFakeClock()
	elsewhere := newWebhookReceiver(t, clock)
	rc := newWebhookReceiver(t, clock)
	rc.Config.Handler = http.RedirectHandler(elsewhere.URL, http.StatusTemporaryRedirect)
	w := newTestWebhooks(t, st, clock, rc.URL)
	enqueueTestEvent(t, w, 1)
	deliverN(t, w, 1, "attempt")
	if got := elsewhere.deliveries(t); len(got) != 0 {
		t.Errorf("the redirect's target got %d deliveries; want none", len(got))
	}
	if s := statusOf(t, st, rc.URL); s.Pending != 1 || s.Failing != 1 || s.LastError != "answered 307 Temporary Redirect" {
		t.Errorf("status = %+v; want 1 pending, failing on the redirect", s)
	}
}

// TestWebhookDeliveredAfterKill stops a deliverer while the receiver holds
// its request, as a killed process would (the database gone, nothing
// recorded), and opens the database again: the message is leased until
// the lease runs out, then delivered, under the same id, with a valid
// signature.
func TestWebhookDeliveredAfterKill(t *testing.T) {
	for _, e := range storeEngines() {
		t.Run(e.name, func(t *testing.T) {
			var first store
			var reopen func() store
			if e.name == "bbolt" {
				path := filepath.Join(t.TempDir(), "tokend.db")
				a, err := openStore(path, time.Second)
				if err != nil {
					t.Fatal(err)
				}
				first = a
				reopen = func() store {
					b, err := openStore(path, time.Second)
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { b.Close() })
					return b
				}
			} else {
				a, dbURL := newTestPGStore(t)
				first = a
				reopen = func() store { return openTestPGStore(t, dbURL) }
			}
			clock := newFakeClock()
			rc := newWebhookReceiver(t, clock)
			release := make(chan struct{})
			rc.hold = func(n int) chan struct{} {
				if n == 1 {
					return release // never closed: the first request waits for good
				}
				return nil
			}
			w := newTestWebhooks(t, first, clock, rc.URL)
			msgs := enqueueTestEvent(t, w, 1)
			ctx, kill := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { _, err := w.deliver(ctx); done <- err }()
			<-rc.arrived // the receiver holds the request
			// Killed: the database goes first, so that nothing about the
			// attempt is recorded, then the request.
			first.Close()
			kill()
			<-done

			second := reopen()
			w2 := newTestWebhooks(t, second, clock, rc.URL)
			deliverN(t, w2, 0, "restarted while the lease runs")
			clock.Add(webhookLease)
			deliverN(t, w2, 1, "restarted once the lease ran out")
			got := rc.deliveries(t)
			if len(got) != 2 || got[1].id != msgs[0].ID || string(got[1].body) != string(msgs[0].Payload) {
				t.Fatalf("deliveries = %d, last %+v; want the held one again, same id and body", len(got), got[len(got)-1])
			}
			if s := statusOf(t, second, rc.URL); s.Delivered != 1 || s.Pending != 0 {
				t.Errorf("status after restart = %+v; want delivered", s)
			}
		})
	}
}

// TestWebhookConfiguration: endpoints come from -webhook (repeatable) and
// TOKEND_WEBHOOKS (commas or spaces), and a bad setting stops serve with
// a message that names the setting, says what is wanted, never repeats a
// secret, and leaves no database behind.
func TestWebhookConfiguration(t *testing.T) {
	parse := func(t *testing.T, args ...string) config {
		t.Helper()
		cfg := defaultConfig()
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		cfg.register(fs)
		if err := parseFlags(fs, args); err != nil {
			t.Fatalf("parse %q: %v", args, err)
		}
		return cfg
	}
	t.Run("flags", func(t *testing.T) {
		cfg := parse(t, "-webhook", "https://hooks.example.com/a", "-webhook", "http://10.0.0.2:8080/b,https://hooks.example.com/a",
			"-webhook-secret", testWebhookSecret)
		if err := cfg.check(); err != nil {
			t.Fatalf("check: %v", err)
		}
		if want := []string{"https://hooks.example.com/a", "http://10.0.0.2:8080/b"}; !slices.Equal(cfg.Webhooks, want) {
			t.Errorf("Webhooks = %q; want %q", cfg.Webhooks, want)
		}
	})
	t.Run("env", func(t *testing.T) {
		t.Setenv("TOKEND_WEBHOOKS", " https://a.example/x, https://b.example/y\thttps://c.example/z ")
		t.Setenv("TOKEND_WEBHOOK_SECRET", testWebhookSecret)
		cfg := parse(t)
		if want := []string{"https://a.example/x", "https://b.example/y", "https://c.example/z"}; !slices.Equal(cfg.Webhooks, want) {
			t.Errorf("Webhooks = %q; want %q", cfg.Webhooks, want)
		}
		if err := cfg.check(); err != nil {
			t.Errorf("check: %v", err)
		}
		var out strings.Builder
		fs := flag.NewFlagSet("serve", flag.ContinueOnError)
		cfg.register(fs)
		writeConfig(&out, fs, map[string]string{"webhook-secret": "env TOKEND_WEBHOOK_SECRET"})
		if strings.Contains(out.String(), strings.TrimPrefix(testWebhookSecret, "whsec_")) || !strings.Contains(out.String(), "(hidden)") {
			t.Errorf("-print-config shows the secret:\n%s", out.String())
		}
	})
	for _, tc := range []struct {
		name   string
		args   []string
		want   string
		secret string // must not appear in the message
	}{
		{"endpoint without secret", []string{"-webhook", "https://hooks.example.com/a"},
			"-webhook-secret (TOKEND_WEBHOOK_SECRET) is required with -webhook", ""},
		{"secret without prefix", []string{"-webhook-secret", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
			"-webhook-secret (TOKEND_WEBHOOK_SECRET): want whsec_ followed by base64", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
		{"secret not base64", []string{"-webhook-secret", "whsec_not*base64*at*all*but*long*enough"},
			"is not standard base64", "not*base64"},
		{"secret too short", []string{"-webhook-secret", "whsec_c2hvcnQ="},
			"the key is 5 bytes; want 24 to 64", "c2hvcnQ="},
		{"URL with a password", []string{"-webhook", "https://bob:hunter2-secret@hooks.example.com/a"},
			"holds a user name or password", "hunter2-secret"},
		{"not http", []string{"-webhook", "ftp://hooks.example.com/a"}, "want http:// or https://", ""},
		{"no host", []string{"-webhook", "https:///a"}, "has no host", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "tokend.db")
			args := append([]string{"serve", "-addr", "127.0.0.1:0", "-db", path}, tc.args...)
			var stderr strings.Builder
			err := run(context.Background(), args, strings.NewReader(""), io.Discard, &stderr)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("tokend %q = %v; want an error saying %q", args, err, tc.want)
			}
			if tc.secret != "" && (strings.Contains(err.Error(), tc.secret) || strings.Contains(stderr.String(), tc.secret)) {
				t.Errorf("the error repeats the secret: %v", err)
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused configuration left a database behind: %v", err)
			}
		})
	}
}

// storedEndpoints returns the URLs of the endpoints st holds.
func storedEndpoints(t *testing.T, st store) []string {
	t.Helper()
	es, err := st.WebhookEndpoints()
	if err != nil {
		t.Fatalf("WebhookEndpoints: %v", err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.URL)
	}
	return out
}

// TestWebhooksPage: an admin sees every endpoint with what its outbox
// holds, adds one (checked: refused with a reason and nothing stored when
// bad or already there) and removes it, the log naming its host alone;
// other users are turned away; without a signing secret the page says to
// set one and adds nothing.
func TestWebhooksPage(t *testing.T) {
	ts := newTestServer(t)
	ts.addUser("root", true)
	ts.addUser("bob", false)
	admin, bob := ts.login("root"), ts.login("bob")

	w := ts.page(pageReq{method: "GET", path: "/admin/webhooks", cookie: admin})
	checkPage(t, "GET /admin/webhooks without a secret", w, 200, "No signing secret is configured")
	w = ts.page(pageReq{method: "POST", path: "/admin/webhooks", cookie: admin, form: url.Values{"url": {"https://added.example/services/T0PATHSECRET"}}})
	checkPage(t, "POST /admin/webhooks without a secret", w, 409, "Set the signing secret first")
	if got := storedEndpoints(t, ts.server.store); len(got) != 0 {
		t.Fatalf("endpoints stored without a secret: %q", got)
	}

	rc := newWebhookReceiver(t, ts.clock)
	rc.status = func(int) int { return http.StatusBadGateway }
	ts.webhooks = newTestWebhooks(t, ts.server.store, ts.clock, rc.URL+"/configured")
	enqueueTestEvent(t, ts.webhooks, 1)
	deliverN(t, ts.webhooks, 1, "failing attempt")
	w = ts.page(pageReq{method: "GET", path: "/admin/webhooks", cookie: admin})
	body := checkPage(t, "GET /admin/webhooks", w, 200, rc.URL+"/configured", "configured", "answered 502 Bad Gateway")
	if strings.Contains(body, "No signing secret") {
		t.Errorf("the page asks for a secret that is set")
	}

	for _, tc := range []struct {
		url    string
		status int
		says   string
	}{
		{"ftp://added.example/x", 400, "want http:// or https://"},
		{"https://u:pw@added.example/x", 400, "holds a user name or password"},
		{rc.URL + "/configured", 409, "in the configuration already"},
	} {
		w := ts.page(pageReq{method: "POST", path: "/admin/webhooks", cookie: admin, form: url.Values{"url": {tc.url}}})
		checkPage(t, "POST /admin/webhooks "+tc.url, w, tc.status, tc.says)
	}
	if got := storedEndpoints(t, ts.server.store); len(got) != 0 {
		t.Fatalf("refused endpoints were stored: %q", got)
	}
	w = ts.page(pageReq{method: "POST", path: "/admin/webhooks", cookie: admin, form: url.Values{"url": {"https://added.example/services/T0PATHSECRET"}}})
	checkRedirect(t, "POST /admin/webhooks", w, "/admin/webhooks")
	if got := storedEndpoints(t, ts.server.store); !slices.Equal(got, []string{"https://added.example/services/T0PATHSECRET"}) {
		t.Fatalf("endpoints = %q; want the added one", got)
	}
	w = ts.page(pageReq{method: "POST", path: "/admin/webhooks", cookie: admin, form: url.Values{"url": {"https://added.example/services/T0PATHSECRET"}}})
	checkPage(t, "POST /admin/webhooks again", w, 409, "added already")
	if got, err := ts.webhooks.allEndpoints(); err != nil || !slices.Equal(got, []string{rc.URL + "/configured", "https://added.example/services/T0PATHSECRET"}) {
		t.Errorf("allEndpoints = %q, %v; want the configured one and the added one", got, err)
	}

	w = ts.page(pageReq{method: "GET", path: "/admin/webhooks", cookie: bob})
	checkPage(t, "GET /admin/webhooks as a user", w, 403)
	w = ts.page(pageReq{method: "POST", path: "/admin/webhooks/1/remove", cookie: bob, form: url.Values{}})
	checkPage(t, "POST /admin/webhooks/1/remove as a user", w, 403)
	w = ts.page(pageReq{method: "POST", path: "/admin/webhooks/1/remove", cookie: admin, form: url.Values{}})
	checkRedirect(t, "POST /admin/webhooks/1/remove", w, "/admin/webhooks")
	if got := storedEndpoints(t, ts.server.store); len(got) != 0 {
		t.Errorf("endpoints after removal = %q; want none", got)
	}
	w = ts.page(pageReq{method: "POST", path: "/admin/webhooks/1/remove", cookie: admin, form: url.Values{}})
	checkPage(t, "POST /admin/webhooks/1/remove again", w, 404)
	if strings.Contains(ts.logs.String(), "T0PATHSECRET") {
		t.Errorf("the log holds an endpoint's path, where chat services keep a secret:\n%s", ts.logs)
	}
}

// TestWebhookMetrics: /metrics counts messages by state, attempts by
// outcome, and the age of the oldest pending message.
func TestWebhookMetrics(t *testing.T) {
	ts := newTestServer(t)
	rc := newWebhookReceiver(t, ts.clock)
	rc.status = func(n int) int { return map[bool]int{true: 500, false: 200}[n == 1] }
	// The server's own outbox, whose metrics it serves, given a secret and
	// an endpoint.
	ts.webhooks.key, _ = parseWebhookSecret(testWebhookSecret)
	ts.webhooks.endpoints = []string{rc.URL}
	enqueueTestEvent(t, ts.webhooks, 1)
	deliverN(t, ts.webhooks, 1, "failing attempt")
	ts.clock.Add(90 * time.Second)
	enqueueTestEvent(t, ts.webhooks, 2)
	w := ts.do(request{method: "GET", path: "/metrics", remote: "127.0.0.1:5000"})
	for _, want := range []string{
		`tokend_webhook_messages{state="pending"} 2`,
		`tokend_webhook_messages{state="delivered"} 0`,
		`tokend_webhook_deliveries_total{outcome="retry"} 1`,
		`tokend_webhook_oldest_pending_age_seconds 90`,
	} {
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("GET /metrics lacks %q", want)
		}
	}
	deliverN(t, ts.webhooks, 2, "second pass")
	w = ts.do(request{method: "GET", path: "/metrics", remote: "127.0.0.1:5000"})
	for _, want := range []string{
		`tokend_webhook_messages{state="pending"} 0`,
		`tokend_webhook_messages{state="delivered"} 2`,
		`tokend_webhook_deliveries_total{outcome="delivered"} 2`,
		`tokend_webhook_oldest_pending_age_seconds 0`,
	} {
		if !strings.Contains(w.Body.String(), want) {
			t.Errorf("GET /metrics lacks %q", want)
		}
	}
}

// TestWebhookOutboxConcurrency: of two dispatchers that read the same
// events, one stores their messages and the other is told the cursor
// moved; deliverers on two PostgreSQL instances claiming at once never
// take the same message.
func TestWebhookOutboxConcurrency(t *testing.T) {
	forEachEngine(t, func(t *testing.T, open func(t *testing.T) store) {
		st := open(t)
		clock := newFakeClock()
		w := newTestWebhooks(t, st, clock, "http://127.0.0.1:9/a", "http://127.0.0.1:9/b")
		msgs := enqueueTestEvent(t, w, 1)
		if err := st.EnqueueWebhooks(0, 1, msgs); !errors.Is(err, errWebhookCursorMoved) {
			t.Fatalf("EnqueueWebhooks from a stale cursor = %v; want errWebhookCursorMoved", err)
		}
		if cur, err := st.WebhookCursor(); err != nil || cur != 1 {
			t.Fatalf("WebhookCursor = %d, %v; want 1", cur, err)
		}
		if s := statusOf(t, st, "http://127.0.0.1:9/a"); s.Pending != 1 {
			t.Errorf("pending for /a = %d; want 1 (the stale enqueue stored nothing)", s.Pending)
		}
	})
	t.Run("claims on two PostgreSQL instances", func(t *testing.T) {
		a, dbURL := newTestPGStore(t)
		b := openTestPGStore(t, dbURL)
		clock := newFakeClock()
		w := newTestWebhooks(t, a, clock, "http://127.0.0.1:9/a")
		for seq := uint64(1); seq <= 300; seq++ {
			enqueueTestEvent(t, w, seq)
		}
		seen := make(map[string]int)
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, st := range []store{a, b, a, b} {
			wg.Go(func() {
				for {
					now := clock.Now()
					msgs, err := st.ClaimWebhooks(now, now.Add(time.Hour), 7)
					if err != nil {
						t.Error(err)
						return
					}
					if len(msgs) == 0 {
						return
					}
					mu.Lock()
					for _, m := range msgs {
						seen[m.ID]++
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if len(seen) != 300 {
			t.Errorf("claimed %d messages; want all 300", len(seen))
		}
		for id, n := range seen {
			if n != 1 {
				t.Errorf("message %s claimed %d times; want once", id, n)
			}
		}
	})
}

// sentEvent is a delivered message as a receiver reads it.
type sentEvent struct {
	Type string     `json:"type"`
	Data auditEvent `json:"data"`
}

// sentEvents returns what rc got, in the order of the events, every
// signature checked.
func sentEvents(t *testing.T, rc *webhookReceiver) []sentEvent {
	t.Helper()
	var out []sentEvent
	for _, d := range rc.deliveries(t) {
		var e sentEvent
		if err := json.Unmarshal(d.body, &e); err != nil {
			t.Fatalf("delivery %s: %v", d.body, err)
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b sentEvent) int { return int(a.Data.Seq) - int(b.Data.Seq) })
	return out
}

// TestWebhookEvents drives the actions whose events are sent, and some
// whose events are not, through the API, the pages and the store as the
// command line calls it, and checks exactly what the receiver gets: a
// revocation by the operator (not the owner's own), a leak report, a
// sign-in from an address new for the user (not the first sign-in, which
// has nothing to compare with, nor a known address), and the 7-day and
// 1-day expiry warnings, each once, across a restart (a token that lives
// less than 7 days gets the 1-day one alone).
func TestWebhookEvents(t *testing.T) {
	ts := newTestServer(t)
	rc := newWebhookReceiver(t, ts.clock)
	ts.webhooks = newTestWebhooks(t, ts.server.store, ts.clock, rc.URL)
	alice := ts.addUser("alice", false)
	own, ownSecret := ts.addToken(alice, "own", []string{scopeTokensWrite}, 0)
	byOperator, _ := ts.addToken(alice, "operator", nil, 0)
	leaked, leakedSecret := ts.addToken(alice, "leaked", nil, 0)
	expiring, _ := ts.addToken(alice, "expiring", nil, 10*24*time.Hour)
	short, _ := ts.addToken(alice, "short", nil, 5*24*time.Hour)

	if w := ts.do(request{method: "DELETE", path: "/api/v1/tokens/" + itoa(own.ID), token: ownSecret}); w.Code != 204 {
		t.Fatalf("DELETE own token = %d; want 204; %s", w.Code, w.Body)
	}
	if _, err := ts.server.store.DeleteToken(cliActor, byOperator.ID, anyOwner); err != nil { // tokend token revoke
		t.Fatal(err)
	}
	if w := ts.do(request{method: "POST", path: "/api/v1/revoke", body: `{"token":"` + leakedSecret + `"}`}); w.Code != 200 {
		t.Fatalf("POST /api/v1/revoke = %d; want 200; %s", w.Code, w.Body)
	}
	signIn := func(addr string) {
		w := ts.page(pageReq{method: "POST", path: "/login", addr: addr, form: url.Values{"name": {"alice"}, "password": {"password-of-alice"}}})
		if w.Code != http.StatusSeeOther {
			t.Fatalf("POST /login from %s = %d; want 303", addr, w.Code)
		}
	}
	signIn("192.0.2.7")
	signIn("192.0.2.7")
	signIn("198.51.100.9")

	ctx := context.Background()
	ts.clock.Add(3*24*time.Hour + time.Minute) // 7d of expiring; none of short
	ts.purge(ctx)
	ts.purge(ctx)
	ts.reopenStore(t, bolt.Options{Timeout: time.Second}) // a restart
	ts.webhooks.st = ts.server.store
	ts.purge(ctx)
	ts.clock.Add(24 * time.Hour) // 1d of short, which never had a 7d
	ts.purge(ctx)
	ts.clock.Add(5 * 24 * time.Hour) // 1d of expiring
	ts.purge(ctx)
	ts.purge(ctx)

	if n, err := ts.webhooks.dispatch(ctx); err != nil || n != 6 {
		evs, _ := ts.server.store.AuditEvents(auditQuery{Oldest: true, Limit: 100})
		t.Fatalf("dispatch = %d, %v; want 6 messages; events: %+v", n, err, evs)
	}
	if n, err := ts.webhooks.dispatch(ctx); err != nil || n != 0 {
		t.Fatalf("dispatch again = %d, %v; want none", n, err)
	}
	deliverN(t, ts.webhooks, 6, "delivery")
	type want struct {
		typ, actor, detail, addr string
		token                    uint64
	}
	wants := []want{
		{typ: "token.revoked", actor: "system", token: byOperator.ID},
		{typ: "token.leaked", actor: "anonymous", addr: "192.0.2.7", token: leaked.ID},
		{typ: "signin.new_address", actor: "alice", addr: "198.51.100.9"},
		{typ: "token.expiring", actor: "system", detail: "7d", token: expiring.ID},
		{typ: "token.expiring", actor: "system", detail: "1d", token: short.ID},
		{typ: "token.expiring", actor: "system", detail: "1d", token: expiring.ID},
	}
	got := sentEvents(t, rc)
	if len(got) != len(wants) {
		t.Fatalf("receiver got %d events: %+v; want %d", len(got), got, len(wants))
	}
	for i, w := range wants {
		g := got[i]
		if g.Type != w.typ || g.Data.Kind != w.typ || g.Data.Actor != w.actor || g.Data.Detail != w.detail ||
			g.Data.Addr != w.addr || (w.token != 0 && g.Data.TokenID != w.token) || g.Data.Subject != "alice" {
			t.Errorf("event %d = %s %+v; want %+v about alice", i+1, g.Type, g.Data, w)
		}
	}
}

// TestWebhookType pins which events make a message.
func TestWebhookType(t *testing.T) {
	for _, tc := range []struct {
		ev   auditEvent
		sent bool
	}{
		{auditEvent{Kind: kindTokenRevoked, ActorID: 1, SubjectID: 1}, false},                      // the owner
		{auditEvent{Kind: kindTokenRevoked, ActorID: 2, SubjectID: 1}, true},                       // an admin
		{auditEvent{Kind: kindTokenRevoked, Actor: "system", SubjectID: 1}, true},                  // the operator's command line
		{auditEvent{Kind: kindTokenRevoked, Actor: "anonymous", SubjectID: 1, Client: "c"}, false}, // the owner's app, RFC 7009
		{auditEvent{Kind: kindTokensRevoked, ActorID: 1, SubjectID: 1}, false},
		{auditEvent{Kind: kindTokensRevoked, ActorID: 2, SubjectID: 1}, true},
		{auditEvent{Kind: kindTokenLeaked, Actor: "anonymous", SubjectID: 1}, true},
		{auditEvent{Kind: kindTokenExpiring, Actor: "system", SubjectID: 1, Detail: "7d"}, true},
		{auditEvent{Kind: kindSigninNewAddr, ActorID: 1, SubjectID: 1}, true},
		{auditEvent{Kind: kindSigninSucceeded, ActorID: 1, SubjectID: 1}, false},
		{auditEvent{Kind: kindTokenPurged, Actor: "system", SubjectID: 1}, false},
		{auditEvent{Kind: kindTokenCreated, ActorID: 2, SubjectID: 1}, false},
	} {
		typ, sent := webhookType(&tc.ev)
		if sent != tc.sent || sent && typ != tc.ev.Kind {
			t.Errorf("webhookType(%+v) = %q, %v; want sent %v", tc.ev, typ, sent, tc.sent)
		}
	}
}

// TestExpiryWarningsOnce: two instances (bbolt: the file opened again
// after a restart; PostgreSQL: two stores on one database, warning at
// once) record each token's 7-day and 1-day warning exactly once; grant
// tokens and tokens past expiry get none.
func TestExpiryWarningsOnce(t *testing.T) {
	for _, e := range storeEngines() {
		t.Run(e.name, func(t *testing.T) {
			var a, b store
			if e.name == "bbolt" {
				st, _ := newTestDB(t)
				a, b = st, st
			} else {
				st, dbURL := newTestPGStore(t)
				a, b = st, openTestPGStore(t, dbURL)
			}
			clock := newFakeClock()
			u := userRecord{Name: "alice", PasswordHash: "x", CreatedAt: clock.Now()}
			if err := a.CreateUser(testActor, &u); err != nil {
				t.Fatal(err)
			}
			storeTokens(t, a, u.ID, 40, clock.Now(), func(i int) *time.Time {
				exp := clock.Now().Add(8*24*time.Hour + time.Duration(i)*time.Minute)
				return &exp
			})
			warnBoth := func() int {
				var wg sync.WaitGroup
				counts := make([]int, 2)
				for i, st := range []store{a, b} {
					wg.Go(func() {
						n, err := warnExpiring(context.Background(), st, clock.Now())
						if err != nil {
							t.Error(err)
						}
						counts[i] = n
					})
				}
				wg.Wait()
				return counts[0] + counts[1]
			}
			clock.Add(24*time.Hour + time.Hour) // every token within 7 days
			if n := warnBoth(); n != 40 {
				t.Errorf("7d warnings from two instances = %d; want 40", n)
			}
			if n := warnBoth(); n != 0 {
				t.Errorf("7d warnings again = %d; want none", n)
			}
			if e.name == "bbolt" {
				st := a.(*boltStore)
				path := st.db.Path()
				st.Close()
				re, err := openStore(path, time.Second)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { re.Close() })
				a, b = re, re
			}
			clock.Add(6 * 24 * time.Hour) // every token within 1 day
			if n := warnBoth(); n != 40 {
				t.Errorf("1d warnings after a restart = %d; want 40", n)
			}
			clock.Add(2 * 24 * time.Hour) // all expired
			if n := warnBoth(); n != 0 {
				t.Errorf("warnings past expiry = %d; want none", n)
			}
			evs, err := a.AuditEvents(auditQuery{Kinds: []string{kindTokenExpiring}, Oldest: true, Limit: maxAuditPage})
			if err != nil {
				t.Fatal(err)
			}
			seen := map[string]int{}
			for _, ev := range evs {
				if ev.Actor != "system" || ev.Subject != "alice" || ev.TokenHint == "" {
					t.Errorf("event %+v; want the system warning alice of a token", ev)
				}
				seen[fmt.Sprintf("%d %s", ev.TokenID, ev.Detail)]++
			}
			if len(evs) != 80 || len(seen) != 80 {
				t.Errorf("token.expiring events = %d, for %d (token, detail) pairs; want 80 for 80", len(evs), len(seen))
			}
		})
	}
}

// TestReadmeWebhookReceiver compiles the README's receiver function and
// runs it on a real delivery (accepted) and on forgeries: a changed body,
// another secret, an old timestamp. It also reads the README's sample
// body as a delivery's.
func TestReadmeWebhookReceiver(t *testing.T) {
	dec := json.NewDecoder(strings.NewReader(readmeBlocks(t, "webhook-sample")[0]))
	dec.DisallowUnknownFields()
	var sample webhookPayload
	if err := dec.Decode(&sample); err != nil || sample.Data.Kind != sample.Type || !webhookKinds[sample.Type] {
		t.Errorf("README's sample body: %+v, %v; want a delivery's", sample, err)
	}

	needTools(t, "go")
	st, _ := newTestDB(t)
	clock := &fakeClock{t: time.Now()}
	rc := newWebhookReceiver(t, clock)
	w := newTestWebhooks(t, st, clock, rc.URL)
	w.now = time.Now // the snippet checks the timestamp against the real clock
	enqueueTestEvent(t, w, 1)
	deliverN(t, w, 1, "delivery")
	got := rc.deliveries(t)
	if len(got) != 1 {
		t.Fatalf("receiver got %d deliveries; want 1", len(got))
	}
	d := got[0]
	type check struct {
		Secret  string            `json:"secret"`
		Headers map[string]string `json:"headers"`
		Body    string            `json:"body"`
		Want    bool              `json:"want"`
	}
	headers := func(id, ts, sig string) map[string]string {
		return map[string]string{"webhook-id": id, "webhook-timestamp": ts, "webhook-signature": sig}
	}
	key, _ := parseWebhookSecret(testWebhookSecret)
	old := time.Now().Add(-10 * time.Minute).Unix()
	sig := signWebhook(key, d.id, mustInt(t, d.timestamp), d.body)
	checks := []check{
		{testWebhookSecret, headers(d.id, d.timestamp, sig), string(d.body), true},
		{testWebhookSecret, headers(d.id, d.timestamp, "v1,bm9wZQ== "+sig), string(d.body), true}, // several signatures
		{testWebhookSecret, headers(d.id, d.timestamp, sig), strings.Replace(string(d.body), "alice", "mallory", 1), false},
		{"whsec_" + base64.StdEncoding.EncodeToString(make([]byte, 32)), headers(d.id, d.timestamp, sig), string(d.body), false},
		{testWebhookSecret, headers(d.id, strconv.FormatInt(old, 10), signWebhook(key, d.id, old, d.body)), string(d.body), false},
	}
	input, _ := json.Marshal(checks)
	dir := t.TempDir()
	program := `package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

` + readmeBlocks(t, "webhook-verify")[0] + `
func main() {
	var checks []struct {
		Secret  string
		Headers map[string]string
		Body    string
	}
	if err := json.NewDecoder(os.Stdin).Decode(&checks); err != nil {
		panic(err)
	}
	for _, c := range checks {
		h := http.Header{}
		for k, v := range c.Headers {
			h.Set(k, v)
		}
		fmt.Println(verifyWebhook(c.Secret, h, []byte(c.Body)))
	}
}
`
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(program), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "run", "main.go")
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(string(input))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go run the README's receiver: %v\n%s", err, out)
	}
	lines := strings.Fields(string(out))
	if len(lines) != len(checks) {
		t.Fatalf("the README's receiver printed %q; want %d answers", out, len(checks))
	}
	for i, c := range checks {
		if lines[i] != strconv.FormatBool(c.Want) {
			t.Errorf("check %d: verifyWebhook = %s; want %v", i+1, lines[i], c.Want)
		}
	}
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestWebhookDispatch: on every engine, dispatchers on two instances
// (bbolt: two over one store) tailing the same log at once store each
// event's messages once, one per endpoint, for the events that need
// attention alone, and leave the cursor at the log's head.
func TestWebhookDispatch(t *testing.T) {
	for _, e := range storeEngines() {
		t.Run(e.name, func(t *testing.T) {
			var a, b store
			if e.name == "bbolt" {
				st, _ := newTestDB(t)
				a, b = st, st
			} else {
				st, dbURL := newTestPGStore(t)
				a, b = st, openTestPGStore(t, dbURL)
			}
			clock := newFakeClock()
			u := userRecord{Name: "alice", PasswordHash: "x", CreatedAt: clock.Now()}
			if err := a.CreateUser(testActor, &u); err != nil {
				t.Fatal(err)
			}
			admin := actor{ID: 99, Name: "root", Via: viaAPI, At: clock.Now()}
			owner := actor{ID: u.ID, Name: "alice", Via: viaAPI, At: clock.Now()}
			secrets := storeTokens(t, a, u.ID, 60, clock.Now(), func(int) *time.Time { return nil })
			sent := 0
			for i, secret := range secrets {
				st := []store{a, b}[i%2]
				var err error
				switch i % 3 {
				case 0: // by an admin: sent
					_, err = st.DeleteTokenByHash(admin, hashToken(secret), kindTokenRevoked)
					sent++
				case 1: // reported leaked: sent
					_, err = st.DeleteTokenByHash(actor{Via: viaAPI, At: clock.Now()}, hashToken(secret), kindTokenLeaked)
					sent++
				case 2: // by the owner: not sent
					_, err = st.DeleteTokenByHash(owner, hashToken(secret), kindTokenRevoked)
				}
				if err != nil {
					t.Fatalf("revoke token %d: %v", i, err)
				}
			}
			endpoints := []string{"http://127.0.0.1:9/a", "http://127.0.0.1:9/b"}
			var wg sync.WaitGroup
			for _, st := range []store{a, b} {
				w := newTestWebhooks(t, st, clock, endpoints...)
				wg.Go(func() {
					for range 3 {
						if _, err := w.dispatch(context.Background()); err != nil {
							t.Error(err)
						}
					}
				})
			}
			wg.Wait()
			for _, ep := range endpoints {
				if s := statusOf(t, a, ep); s.Pending != sent {
					t.Errorf("pending for %s = %d; want %d, one per event sent", ep, s.Pending, sent)
				}
			}
			head, _, err := a.AuditHead()
			if err != nil {
				t.Fatal(err)
			}
			if cur, err := a.WebhookCursor(); err != nil || cur != head {
				t.Errorf("WebhookCursor = %d, %v; want the head %d", cur, err, head)
			}
			msgs, err := a.ClaimWebhooks(clock.Now(), clock.Now().Add(time.Hour), 1000)
			if err != nil {
				t.Fatal(err)
			}
			ids := map[string]bool{}
			perEvent := map[string]int{}
			for _, m := range msgs {
				ids[m.ID] = true
				perEvent[fmt.Sprintf("%d %s", m.Seq, m.Endpoint)]++
			}
			if len(msgs) != 2*sent || len(ids) != len(msgs) || len(perEvent) != len(msgs) {
				t.Errorf("messages = %d with %d ids for %d (event, endpoint) pairs; want %d of each", len(msgs), len(ids), len(perEvent), 2*sent)
			}
		})
	}
}

// benchStores returns a fresh store of each engine (PostgreSQL when
// TOKEND_TEST_POSTGRES is set).
func benchStores(b *testing.B) map[string]func(b *testing.B) store {
	return map[string]func(b *testing.B) store{
		"bbolt":    func(b *testing.B) store { st, _ := newTestDB(b); return st },
		"postgres": func(b *testing.B) store { st, _ := newTestPGStore(b); return st },
	}
}

// benchWebhooks returns an outbox over st sending to a loopback receiver
// that answers 204 and counts what it gets.
func benchWebhooks(b *testing.B, st store) (*webhooks, *atomic.Int64) {
	var got atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		got.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(srv.Close)
	cfg := defaultConfig()
	cfg.Webhooks, cfg.WebhookSecret = []string{srv.URL}, testWebhookSecret
	if err := cfg.checkWebhooks(); err != nil {
		b.Fatal(err)
	}
	return newWebhooks(st, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now, nil), &got
}

// BenchmarkWebhookDelivery measures the outbox's throughput: messages
// claimed, signed, posted to a loopback receiver and recorded delivered,
// webhookSenders at once.
func BenchmarkWebhookDelivery(b *testing.B) {
	for _, name := range []string{"bbolt", "postgres"} {
		b.Run(name, func(b *testing.B) {
			st := benchStores(b)[name](b)
			w, got := benchWebhooks(b, st)
			ev := auditEvent{Time: time.Now(), Kind: kindTokenLeaked, Outcome: outcomeOK, Actor: "anonymous", SubjectID: 1, Subject: "alice", TokenID: 7, TokenHint: "abcd"}
			for seq := uint64(1); seq <= uint64(b.N); seq += 1000 {
				evs := make([]auditEvent, 0, 1000)
				for i := seq; i < seq+1000 && i <= uint64(b.N); i++ {
					ev.Seq = i
					evs = append(evs, ev)
				}
				msgs, err := webhookMessages(evs, w.endpoints, time.Now())
				if err != nil {
					b.Fatal(err)
				}
				if err := st.EnqueueWebhooks(seq-1, evs[len(evs)-1].Seq, msgs); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			start := time.Now()
			if _, err := w.deliver(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "deliveries/s")
			if got.Load() != int64(b.N) {
				b.Fatalf("receiver got %d; want %d", got.Load(), b.N)
			}
		})
	}
}

// BenchmarkWebhookEventToDelivery measures one event's way from the
// security log to the receiver, once the outbox looks (it looks every
// WebhookPoll, a second, so an event waits half of that on average
// besides): the dispatcher's read and enqueue, the claim, the signed post
// and the record of its delivery.
func BenchmarkWebhookEventToDelivery(b *testing.B) {
	for _, name := range []string{"bbolt", "postgres"} {
		b.Run(name, func(b *testing.B) {
			st := benchStores(b)[name](b)
			w, got := benchWebhooks(b, st)
			ctx := context.Background()
			for i := range b.N {
				ev := auditEvent{Time: time.Now(), Kind: kindTokenLeaked, Outcome: outcomeOK, Actor: "anonymous", Via: viaAPI}
				if err := st.RecordEvents(ev); err != nil {
					b.Fatal(err)
				}
				w.step(ctx)
				if got.Load() != int64(i+1) {
					b.Fatalf("receiver got %d after %d events", got.Load(), i+1)
				}
			}
		})
	}
}

// TestWebhookIdlePollWritesNothing: the outbox looks every second; with
// no new event and no message due, a look commits no bbolt transaction.
func TestWebhookIdlePollWritesNothing(t *testing.T) {
	st, _ := newTestDB(t)
	clock := newFakeClock()
	w := newTestWebhooks(t, st, clock, "http://127.0.0.1:9/a")
	enqueueTestEvent(t, w, 1) // a message, claimed below, due again only after its lease
	if msgs, err := st.ClaimWebhooks(clock.Now(), clock.Now().Add(time.Hour), 10); err != nil || len(msgs) != 1 {
		t.Fatalf("ClaimWebhooks = %d, %v; want the message", len(msgs), err)
	}
	before := st.writeTxs.Load()
	w.step(context.Background())
	if after := st.writeTxs.Load(); after != before {
		t.Errorf("an idle look made %d write transactions; want none", after-before)
	}
}

// TestWebhookServeRestart runs the real serve: a leak report made over
// HTTP reaches the receiver through the outbox; tokend is stopped while
// the receiver holds that delivery, and once started again it sends the
// event again, under the same id, signed, and records it delivered.
func TestWebhookServeRestart(t *testing.T) {
	cfg := testServeConfig(t)
	st, err := openStore(cfg.DB, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	alice := storeUser(t, st, "alice", false)
	_, secret := storeToken(t, st, alice.ID, "leaked", nil)
	st.Close()

	rc := newWebhookReceiver(t, &fakeClock{t: time.Now()})
	release := make(chan struct{})
	defer close(release)
	rc.hold = func(n int) chan struct{} {
		if n == 1 {
			return release
		}
		return nil
	}
	cfg.Webhooks, cfg.WebhookSecret, cfg.WebhookPoll = []string{rc.URL + "/hook"}, testWebhookSecret, 20*time.Millisecond
	addr, _, stop := startServe(t, cfg)
	resp, err := http.Post("http://"+addr+"/api/v1/revoke", "application/x-www-form-urlencoded", strings.NewReader("token="+secret))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST /api/v1/revoke = %d; want 200", resp.StatusCode)
	}
	select {
	case <-rc.arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("no delivery within 10s of the leak report")
	}
	stop() // while the receiver holds the delivery

	addr, _, stop = startServe(t, cfg)
	waitFor(t, func() bool { // /metrics says the delivery was recorded
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(body), `tokend_webhook_messages{state="delivered"} 1`)
	})
	stop()
	got := sentEvents(t, rc)
	ds := rc.deliveries(t)
	if len(ds) != 2 || ds[0].id != ds[1].id || string(ds[0].body) != string(ds[1].body) || got[0].Type != kindTokenLeaked || got[0].Data.Subject != "alice" {
		t.Fatalf("deliveries = %d (%+v); want the token.leaked message twice, same id and body", len(ds), got)
	}
	file, err := os.ReadFile(cfg.DB)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{testWebhookSecret, strings.TrimPrefix(testWebhookSecret, "whsec_"), secret} {
		if strings.Contains(string(file), s) {
			t.Errorf("the database file holds the secret %q", s)
		}
	}
	st, err = openStore(cfg.DB, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if s := statusOf(t, st, rc.URL+"/hook"); s.Delivered != 1 || s.Pending != 0 || s.LastError != "interrupted: tokend stopped during the delivery" {
		t.Errorf("status after the restart = %+v; want delivered, the interruption as its last error", s)
	}
}
