package main

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// expiryWarningWindow is how long before its expiry a token in use is
// warned about in the log.
const expiryWarningWindow = 7 * 24 * time.Hour

// lastUsedTracker gathers token uses in memory so that verification never
// writes to disk; lastUsedFlusher writes them out in one transaction at a
// fixed interval. A million uses of one token between flushes cost one
// record write. It also remembers which tokens it warned about today.
type lastUsedTracker struct {
	mu      sync.Mutex
	closed  bool // after the final flush: no use may be recorded
	pending map[uint64]lastUse
	warned  map[uint64]time.Time // token id → day of the last expiry warning
}

func newLastUsedTracker() *lastUsedTracker {
	return &lastUsedTracker{pending: make(map[uint64]lastUse), warned: make(map[uint64]time.Time)}
}

// record notes that token id was used at at from ip. It reports false,
// noting nothing, once the tracker is closed: the use would never be
// written.
func (t *lastUsedTracker) record(id uint64, at time.Time, ip string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	if prev, ok := t.pending[id]; !ok || at.After(prev.At) {
		t.pending[id] = lastUse{At: at, IP: ip}
	}
	return true
}

// close hands over every pending use and refuses every use from then on.
func (t *lastUsedTracker) close() map[uint64]lastUse {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	out := t.pending
	t.pending = make(map[uint64]lastUse)
	return out
}

// peek returns the use of token id not yet flushed, if any.
func (t *lastUsedTracker) peek(id uint64) (lastUse, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	u, ok := t.pending[id]
	return u, ok
}

// take hands over every pending use and starts afresh.
func (t *lastUsedTracker) take() map[uint64]lastUse {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.pending) == 0 {
		return nil
	}
	out := t.pending
	t.pending = make(map[uint64]lastUse, len(out))
	return out
}

// putBack returns uses that could not be written, keeping any newer use
// recorded since.
func (t *lastUsedTracker) putBack(uses map[uint64]lastUse) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, u := range uses {
		if prev, ok := t.pending[id]; !ok || u.At.After(prev.At) {
			t.pending[id] = u
		}
	}
}

// shouldWarn reports whether token id, expiring at expires, deserves a log
// warning at now: it expires within expiryWarningWindow and was not warned
// about yet today. Days are UTC.
func (t *lastUsedTracker) shouldWarn(id uint64, expires, now time.Time) bool {
	if expires.Sub(now) > expiryWarningWindow {
		return false
	}
	day := now.UTC().Truncate(24 * time.Hour)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.warned[id].Equal(day) {
		return false
	}
	if len(t.warned) > 100_000 {
		clear(t.warned) // bounded memory; at worst a token is warned about twice in a day
	}
	t.warned[id] = day
	return true
}

// flushLastUsed writes the pending uses in one transaction. On failure they
// go back to be tried at the next flush.
func (s *server) flushLastUsed() (int, error) {
	uses := s.lastUsed.take()
	start := time.Now()
	if err := s.store.FlushLastUsed(uses); err != nil {
		s.lastUsed.putBack(uses)
		return 0, err
	}
	if len(uses) > 0 {
		s.metrics.flushDuration.Observe(time.Since(start).Seconds())
	}
	return len(uses), nil
}

// finalFlushLastUsed writes the pending uses for the last time, at
// shutdown. From then on no use is recorded: a request still running (the
// shutdown timeout passed) that verifies a token is answered 503 by
// noteUse, so that no use is acknowledged and then lost.
func (s *server) finalFlushLastUsed() (int, error) {
	uses := s.lastUsed.close()
	start := time.Now()
	if err := s.store.FlushLastUsed(uses); err != nil {
		return 0, err
	}
	if len(uses) > 0 {
		s.metrics.flushDuration.Observe(time.Since(start).Seconds())
	}
	return len(uses), nil
}

// lastUsedFlusher flushes at every interval until ctx ends. The final flush
// at shutdown is the caller's, after the last request has finished.
func (s *server) lastUsedFlusher(ctx context.Context, interval time.Duration) {
	everyTick(ctx, interval, func() {
		if n, err := s.flushLastUsed(); err != nil {
			s.log.Error("flush last-used times; will retry", "err", err)
		} else if n > 0 {
			s.log.Debug("flushed last-used times", "tokens", n)
		}
	})
}

// withPendingUse sets t's last use to one not yet flushed, if it is later
// than the stored one, and reports whether it did: the pages and the API
// show a use at once, not after the next flush.
func (s *server) withPendingUse(t *tokenRecord) bool {
	use, ok := s.lastUsed.peek(t.ID)
	if !ok || (t.LastUsedAt != nil && !use.At.After(*t.LastUsedAt)) {
		return false
	}
	t.LastUsedAt, t.LastUsedIP = &use.At, use.IP
	return true
}

// errShuttingDown answers a request that verified a token after the final
// last-used flush: its use could not be recorded.
var errShuttingDown = clientError(http.StatusServiceUnavailable, "the server is shutting down; try again in a moment")

// noteUse records a successful verification of c's token from ip, and
// warns once a day about a token that will soon expire. The use happened
// when the token was verified. After the final flush it records nothing
// and returns errShuttingDown: the request must not succeed.
func (s *server) noteUse(c *caller, ip string) error {
	now := c.at
	if !s.lastUsed.record(c.token.ID, now, ip) {
		return errShuttingDown
	}
	if e := c.token.ExpiresAt; e != nil && s.lastUsed.shouldWarn(c.token.ID, *e, now) {
		s.log.Warn("token in use expires soon", slog.Uint64("token_id", c.token.ID),
			slog.Uint64("user_id", c.user.ID), "expires_at", e.UTC().Format(time.RFC3339))
	}
	return nil
}
