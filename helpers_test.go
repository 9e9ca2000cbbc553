package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// testArgon keeps password hashing fast in tests; production parameters are
// covered by TestPasswordHashDefaults.
var testArgon = argonParams{Memory: 64, Time: 1, Threads: 1}

// fakeClock is a settable clock for tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// newTestDB opens a fresh store in a temporary folder and closes it when the
// test ends. It returns the store and its file's path.
func newTestDB(t testing.TB) (*boltStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tokend.db")
	st, err := openStore(path, time.Second)
	if err != nil {
		t.Fatalf("openStore(%q): %v", path, err)
	}
	t.Cleanup(func() { st.Close() })
	return st, path
}

// testServer is a server over a fresh database, driven through its router.
type testServer struct {
	*server
	// store is the server's store as the bbolt engine it is, for tests
	// that look inside it; it hides server.store.
	store   *boltStore
	t       testing.TB
	handler http.Handler
	clock   *fakeClock
	dbPath  string
	logs    *syncBuffer

	// throttle is the server's sign-in throttle as the in-memory one it
	// is, for tests that look inside it; it hides server.throttle. It is
	// nil once useThrottle gives the server another kind.
	throttle *signInThrottle
}

// syncBuffer is a bytes.Buffer safe for concurrent writers, for logs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newTestServer returns a server with a fake clock, cheap password hashing
// and debug logs captured in memory.
func newTestServer(t testing.TB) *testServer {
	t.Helper()
	st, path := newTestDB(t)
	cfg := defaultConfig()
	cfg.DB = path
	cfg.Argon = testArgon
	clock := newFakeClock()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := newServer(st, cfg, log, clock.Now)
	if err != nil {
		t.Fatalf("newServer: %v", err)
	}
	return &testServer{server: s, store: st, throttle: s.throttle.(*signInThrottle), t: t, handler: s.routes(), clock: clock, dbPath: path, logs: logs}
}

// reopenStore closes ts's database and opens its file again with bbolt's
// options opts (a size cap, say), as the store of ts and its server, closed
// when the test ends.
func (ts *testServer) reopenStore(t testing.TB, opts bolt.Options) *boltStore {
	t.Helper()
	ts.store.Close()
	st, err := openStoreWith(ts.dbPath, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ts.server.store, ts.store = st, st
	return st
}

// addUser creates a user with password "password-of-NAME".
func (ts *testServer) addUser(name string, admin bool) userRecord {
	ts.t.Helper()
	hash, err := ts.hasher.Hash(context.Background(), "password-of-"+name)
	if err != nil {
		ts.t.Fatalf("hash password: %v", err)
	}
	now := ts.clock.Now()
	u := newUser(name, hash, admin, now)
	if err := ts.server.store.CreateUser(testActor, &u); err != nil {
		ts.t.Fatalf("CreateUser(%q): %v", name, err)
	}
	return u
}

// addToken creates a token for u directly in the store and returns its
// record and secret. A zero expiresIn means it never expires.
func (ts *testServer) addToken(u userRecord, name string, scopes []string, expiresIn time.Duration) (tokenRecord, string) {
	ts.t.Helper()
	var exp *time.Time
	if expiresIn != 0 {
		e := ts.clock.Now().Add(expiresIn)
		exp = &e
	}
	t, secret, err := newToken(ts.server.store, testActor, ts.format, u, tokenSpec{name: name, scopes: scopes, expires: exp}, ts.clock.Now(), 0)
	if err != nil {
		ts.t.Fatalf("newToken(%q): %v", name, err)
	}
	return t, secret
}

// request is an HTTP request to send through the router.
type request struct {
	method, path string
	token        string            // sent as Authorization: Bearer
	header       map[string]string // more headers
	body         string            // sent as application/json unless header says otherwise
	remote       string            // the client's host:port; 192.0.2.7:4711 when empty
}

// do sends req through the whole router and returns the recorded response.
// Requests and answers of the API are checked against openapi.yaml (see
// serve).
func (ts *testServer) do(req request) *httptest.ResponseRecorder {
	ts.t.Helper()
	var body io.Reader
	if req.body != "" {
		body = strings.NewReader(req.body)
	}
	r := httptest.NewRequest(req.method, req.path, body)
	r.RemoteAddr = "192.0.2.7:4711"
	if req.remote != "" {
		r.RemoteAddr = req.remote
	}
	if req.body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	if req.token != "" {
		r.Header.Set("Authorization", "Bearer "+req.token)
	}
	for k, v := range req.header {
		r.Header.Set(k, v)
	}
	return ts.serve(r)
}

// decode parses a JSON response body into v, failing the test if it is not JSON.
func decode(t testing.TB, w *httptest.ResponseRecorder, v any) {
	t.Helper()
	if err := json.Unmarshal(w.Body.Bytes(), v); err != nil {
		t.Fatalf("response body %q is not the JSON wanted: %v", w.Body.String(), err)
	}
}

// snapshot returns every key and value of every bucket, for asserting that
// a request changed nothing.
func (ts *testServer) snapshot() map[string]string {
	ts.t.Helper()
	return dumpStore(ts.t, ts.store)
}

// dumpStore returns every key and value of every bucket of st.
func dumpStore(t testing.TB, st *boltStore) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := st.db.View(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			b := tx.Bucket(name)
			b.ForEach(func(k, v []byte) error {
				out[string(name)+"/"+hex.EncodeToString(k)] = string(v)
				return nil
			})
			out[string(name)+"#seq"] = strconv.FormatUint(b.Sequence(), 10)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("dump store: %v", err)
	}
	return out
}

// assertUnchanged fails if st's contents differ from before.
func assertUnchanged(t testing.TB, what string, before, after map[string]string) {
	t.Helper()
	if !maps.Equal(before, after) {
		t.Errorf("%s changed the database:\nbefore %d keys, after %d keys", what, len(before), len(after))
		for k, v := range after {
			if before[k] != v {
				t.Errorf("  %s: %q → %q", k, before[k], v)
			}
		}
		for k := range before {
			if _, ok := after[k]; !ok {
				t.Errorf("  %s deleted", k)
			}
		}
	}
}

// basicAuth returns an Authorization header value for HTTP Basic.
func basicAuth(name, password string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(name+":"+password))
}
