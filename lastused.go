package main

import (
	"context"
	"log/slog"
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
	pending map[uint64]lastUse
	warned  map[uint64]time.Time // token id → day of the last expiry warning
}

func newLastUsedTracker() *lastUsedTracker {
	return &lastUsedTracker{pending: make(map[uint64]lastUse), warned: make(map[uint64]time.Time)}
}

// record notes that token id was used at at from ip.
func (t *lastUsedTracker) record(id uint64, at time.Time, ip string) {
	t.mu.Lock()
	if prev, ok := t.pending[id]; !ok || at.After(prev.At) {
		t.pending[id] = lastUse{At: at, IP: ip}
	}
	t.mu.Unlock()
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

// noteUse records a successful verification of c's token from ip, and
// warns once a day about a token that will soon expire. The use happened
// when the token was verified.
func (s *server) noteUse(c *caller, ip string) {
	now := c.at
	s.lastUsed.record(c.token.ID, now, ip)
	if e := c.token.ExpiresAt; e != nil && s.lastUsed.shouldWarn(c.token.ID, *e, now) {
		s.log.Warn("token in use expires soon", slog.Uint64("token_id", c.token.ID),
			slog.Uint64("user_id", c.user.ID), "expires_at", e.UTC().Format(time.RFC3339))
	}
}
