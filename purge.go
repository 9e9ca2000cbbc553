package main

import (
	"context"
	"time"
)

// purgeBatch is the most tokens one purge transaction deletes.
const purgeBatch = 1000

// purgeResult is what one purge pass did.
type purgeResult struct {
	Tokens       int // tokens deleted
	Transactions int // of the tokens' purge
	// OAuth counts the authorization codes, device requests and grants
	// deleted (a grant's tokens are not counted in Tokens).
	OAuth int
}

// purgeOnce deletes tokens that expired more than retention before now,
// then the OAuth codes, device requests and grants expired at now: those
// are never shown once expired, so they keep no retention. Expired tokens
// and codes are refused at request time whether or not they have been
// purged: this is housekeeping, not security.
func purgeOnce(ctx context.Context, st store, now time.Time, retention time.Duration) (purgeResult, error) {
	var res purgeResult
	var err error
	by := systemActor
	by.At = now
	res.Tokens, res.Transactions, err = st.PurgeExpired(ctx, by, now.Add(-retention), purgeBatch)
	if err != nil {
		return res, err
	}
	res.OAuth, err = st.PurgeOAuth(ctx, now)
	return res, err
}

// expiredPurger runs a purge pass at every interval until ctx ends. A failed
// pass is logged and tried again at the next tick.
func (s *server) expiredPurger(ctx context.Context, interval time.Duration) {
	everyTick(ctx, interval, func() { s.purge(ctx) })
}

// everyTick calls fn at every interval until ctx ends; a call in progress
// when ctx ends finishes first.
func everyTick(ctx context.Context, interval time.Duration, fn func()) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			fn()
		}
	}
}

// purge runs one pass over tokens and sessions and logs what it did.
// (Setup codes live only in memory and die when used.)
func (s *server) purge(ctx context.Context) {
	start := time.Now()
	res, err := purgeOnce(ctx, s.store, s.now(), s.cfg.ExpiredRetention)
	s.metrics.purgeDeleted.Add(float64(res.Tokens))
	s.metrics.purgeDeletedOAuth.Add(float64(res.OAuth))
	if err != nil {
		s.metrics.purgeRuns.WithLabelValues("error").Inc()
		s.log.Error("purge expired tokens and OAuth requests and grants; will retry at the next tick", "err", err,
			"tokens_deleted", res.Tokens, "oauth_deleted", res.OAuth)
	} else {
		s.metrics.purgeRuns.WithLabelValues("ok").Inc()
	}
	if err == nil && res.Tokens > 0 {
		s.log.Info("purged expired tokens", "tokens", res.Tokens, "transactions", res.Transactions, "duration", time.Since(start))
	}
	if err == nil && res.OAuth > 0 {
		s.log.Info("purged expired OAuth codes, device requests and grants", "records", res.OAuth)
	}
	s.warnExpiringAndPurgeWebhooks(ctx)
	n, err := s.store.PurgeSessions(ctx, s.now(), s.cfg.SessionIdle)
	if err != nil {
		s.log.Error("purge expired sessions; will retry at the next tick", "err", err)
	} else if n > 0 {
		s.log.Info("purged expired sessions", "sessions", n)
	}
	s.purgeAudit(ctx)
}

// auditPurgeBatch is the most security events one purge transaction
// deletes.
const auditPurgeBatch = 1000

// purgeAudit deletes the security events older than -audit-retention (0:
// none), oldest first, in batches; the store keeps the hash of the last
// one deleted, so that the log verifies from its first kept event.
func (s *server) purgeAudit(ctx context.Context) {
	if s.cfg.AuditRetention <= 0 {
		return
	}
	n, err := s.store.PurgeAudit(ctx, s.now().Add(-s.cfg.AuditRetention), auditPurgeBatch)
	if err != nil {
		s.log.Error("purge old security events; will retry at the next tick", "err", err, "events_deleted", n)
	} else if n > 0 {
		s.log.Info("purged old security events", "events", n, "retention", s.cfg.AuditRetention)
	}
}
