package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// fakeSink records what an invalidationSink hears.
type fakeSink struct {
	mu      sync.Mutex
	gone    map[tokenHash]time.Time // when each was heard
	all     int
	changes int
	trusts  []bool
}

func newFakeSink() *fakeSink { return &fakeSink{gone: map[tokenHash]time.Time{}} }

func (f *fakeSink) tokensGone(hashes []tokenHash) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range hashes {
		if _, ok := f.gone[h]; !ok {
			f.gone[h] = time.Now()
		}
	}
}

func (f *fakeSink) allTokensGone() { f.mu.Lock(); f.all++; f.mu.Unlock() }
func (f *fakeSink) changed()       { f.mu.Lock(); f.changes++; f.mu.Unlock() }
func (f *fakeSink) trust(ok bool)  { f.mu.Lock(); f.trusts = append(f.trusts, ok); f.mu.Unlock() }

func (f *fakeSink) heard(h tokenHash) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	at, ok := f.gone[h]
	return at, ok
}

func (f *fakeSink) changeCount() int { f.mu.Lock(); defer f.mu.Unlock(); return f.changes }

func (f *fakeSink) trustLog() []bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]bool(nil), f.trusts...)
}

func trusted(f *fakeSink) func() bool {
	return func() bool { l := f.trustLog(); return len(l) > 0 && l[len(l)-1] }
}

// listeningPGStore opens a store on dbURL whose invalidations go to a new
// fakeSink, and waits until the sink is told to trust its cache.
func listeningPGStore(t *testing.T, dbURL string) (*pgStore, *fakeSink) {
	t.Helper()
	st := openTestPGStore(t, dbURL)
	sink := newFakeSink()
	if err := st.startInvalidations(sink, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	if l := sink.trustLog(); len(l) != 1 || l[0] {
		t.Fatalf("trust before the first heartbeat = %v; want [false]", l)
	}
	waitFor(t, trusted(sink))
	return st, sink
}

func TestPGRevocationReachesOtherInstances(t *testing.T) {
	dbURL := newTestPG(t)
	a, sinkA := listeningPGStore(t, dbURL)
	b, sinkB := listeningPGStore(t, dbURL)
	alice := engineUser(t, a, "alice", true)
	bob := engineUser(t, a, "bob", false)

	tok, h := engineToken(t, a, alice.ID, "ci", nil)
	start := time.Now()
	if _, err := a.DeleteToken(testActor, tok.ID, alice.ID); err != nil {
		t.Fatal(err)
	}
	// The writing instance hears it before the write returns.
	if _, ok := sinkA.heard(h); !ok {
		t.Fatal("the instance that revoked had not heard of it when DeleteToken returned")
	}
	waitFor(t, func() bool { _, ok := sinkB.heard(h); return ok })
	at, _ := sinkB.heard(h)
	t.Logf("revocation heard by the other instance after %v", at.Sub(start))
	if _, _, err := b.Authenticate(h); !errors.Is(err, errNotFound) {
		t.Fatalf("B.Authenticate(revoked on A) = %v; want errNotFound", err)
	}

	// Rotation, on B this time, reaches A.
	tok, h = engineToken(t, b, bob.ID, "rotated", nil)
	if _, err := b.RotateToken(testActor, tok.ID, bob.ID, randomHash(t), "wxyz", engineNow); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, ok := sinkA.heard(h); return ok })

	// Many tokens at once: more than one notification carries them.
	var many []tokenHash
	for i := range 2 * notifyHashesPer {
		_, h := engineToken(t, a, bob.ID, fmt.Sprint("t", i), nil)
		many = append(many, h)
	}
	changes := sinkB.changeCount()
	if _, _, err := a.ChangePassword(testActor, bob.ID, passwordChange{hash: "new", at: engineNow, revokeTokens: true}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		for _, h := range many {
			if _, ok := sinkB.heard(h); !ok {
				return false
			}
		}
		return sinkB.changeCount() > changes
	})

	// A demotion changes a user: every instance starts a new generation.
	changes = sinkB.changeCount()
	if _, err := a.SetAdmin(testActor, bob.ID, true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return sinkB.changeCount() > changes })

	// Removing a user takes their tokens, everywhere.
	_, h = engineToken(t, a, bob.ID, "last", nil)
	if err := b.DeleteUser(testActor, bob.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, ok := sinkA.heard(h); return ok })

	// The purge, too.
	past := engineNow.Add(-time.Hour)
	_, h = engineToken(t, a, alice.ID, "expired", &past)
	if n, _, err := b.PurgeExpired(t.Context(), systemActor, engineNow, 10); n != 1 || err != nil {
		t.Fatalf("PurgeExpired = %d, %v", n, err)
	}
	waitFor(t, func() bool { _, ok := sinkA.heard(h); return ok })
}

func TestPGListenerLossFailsClosed(t *testing.T) {
	dbURL := newTestPG(t)
	st, sink := listeningPGStore(t, dbURL)
	for _, conn := range []struct {
		name string
		pid  func() uint32
	}{
		{"listening", st.listener.listenerPID},
		{"heartbeat", st.listener.senderPID},
	} {
		before := len(sink.trustLog())
		pid := conn.pid()
		pgExec(t, dbURL, "SELECT pg_terminate_backend($1)", int64(pid))
		waitFor(t, func() bool {
			l := sink.trustLog()
			return len(l) > before && !l[before]
		})
		waitFor(t, trusted(sink))
		if got := conn.pid(); got == pid {
			t.Fatalf("%s connection: still pid %d after it was terminated", conn.name, got)
		}
	}
	if l := sink.trustLog(); len(l) != 6 || st.listener.losses.Load() != 2 {
		t.Fatalf("trust log %v, %d losses; want [false true false true false true], 2 losses", l, st.listener.losses.Load())
	}
}

func TestInvalidationPayloads(t *testing.T) {
	hashes := func(n int) []tokenHash {
		out := make([]tokenHash, n)
		for i := range out {
			out[i] = randomHash(t)
		}
		return out
	}
	for _, tc := range []struct {
		name        string
		gone        int
		userChanged bool
		wantLen     int
		wantAll     bool
	}{
		{"nothing", 0, false, 0, false},
		{"a user", 0, true, 1, false},
		{"one token", 1, false, 1, false},
		{"a full notification", notifyHashesPer, false, 1, false},
		{"two notifications and a user", notifyHashesPer + 1, true, 3, false},
		{"the most named", notifyHashesPer * notifyMaxChunks, false, notifyMaxChunks, false},
		{"too many to name", notifyHashesPer*notifyMaxChunks + 1, false, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gone := hashes(tc.gone)
			payloads := invalidationPayloads(gone, tc.userChanged)
			if len(payloads) != tc.wantLen {
				t.Fatalf("%d payloads; want %d", len(payloads), tc.wantLen)
			}
			sink := newFakeSink()
			for _, p := range payloads {
				if len(p) >= 8000 {
					t.Fatalf("payload of %d bytes: PostgreSQL refuses 8000 or more", len(p))
				}
				dispatchInvalidation(sink, p)
			}
			if tc.wantAll {
				if sink.all != 1 || len(sink.gone) != 0 {
					t.Fatalf("heard %d alls and %d hashes; want one all", sink.all, len(sink.gone))
				}
				return
			}
			for _, h := range gone {
				if _, ok := sink.heard(h); !ok {
					t.Fatal("a deleted token's hash was not heard")
				}
			}
			if sink.all != 0 || (sink.changes == 1) != tc.userChanged {
				t.Fatalf("heard %d alls, %d changes; want 0 and user changed %v", sink.all, sink.changes, tc.userChanged)
			}
		})
	}
	// A payload it cannot read makes the sink forget everything.
	for _, p := range []string{"", "t12", "tzz" + strings.Repeat("0", 62), "x"} {
		sink := newFakeSink()
		dispatchInvalidation(sink, p)
		if sink.all != 1 {
			t.Errorf("payload %q: %d alls; want 1", p, sink.all)
		}
	}
	// Heartbeats, this instance's or another's, change nothing.
	sink := newFakeSink()
	dispatchInvalidation(sink, "h0123456789abcdef:7")
	if sink.all != 0 || sink.changes != 0 || len(sink.gone) != 0 {
		t.Fatal("a heartbeat invalidated something")
	}
}

func TestPGErrorsOfAnUnavailableServer(t *testing.T) {
	for _, tc := range []struct {
		err         error
		unavailable bool
	}{
		{&pgconn.PgError{Code: "57P01"}, true}, // admin_shutdown: a restart
		{&pgconn.PgError{Code: "57P03"}, true}, // cannot_connect_now: starting up
		{&pgconn.PgError{Code: "08006"}, true}, // connection_failure
		{&pgconn.PgError{Code: "53300"}, true}, // too_many_connections
		{&pgconn.PgError{Code: "57014"}, false},
		{&pgconn.PgError{Code: "23505"}, false},
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true},
		{errNotFound, false},
		{errors.New("something else"), false},
	} {
		got := pgError(tc.err)
		if errors.Is(got, errStoreUnavailable) != tc.unavailable || !errors.Is(got, tc.err) {
			t.Errorf("pgError(%v) = %v; want unavailable %v, wrapping the original", tc.err, got, tc.unavailable)
		}
	}
}
