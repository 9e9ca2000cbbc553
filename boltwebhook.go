package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The bbolt engine's webhook outbox and expiry warnings (webhook.go). Its
// buckets are created when a file is opened for writing, so that a file
// of an older tokend gains them without a schema change; a file opened
// read-only may lack them, and then holds no outbox.
var (
	bucketWebhookMeta      = []byte("webhook_meta")      // "cursor" → the Seq of the last event dispatched
	bucketWebhookMessages  = []byte("webhook_messages")  // message number → webhookMessage
	bucketWebhookDue       = []byte("webhook_due")       // next attempt (unix ns) ‖ message number → empty, pending messages only
	bucketWebhookEndpoints = []byte("webhook_endpoints") // endpoint id → webhookEndpoint
	// expiry (unix ns) ‖ token id ‖ detail → empty: the token was warned
	// of with that detail. Keyed by expiry so that marks of tokens past
	// expiry are dropped from the front.
	bucketTokenWarnings = []byte("token_warnings")

	webhookBuckets = [][]byte{bucketWebhookMeta, bucketWebhookMessages, bucketWebhookDue, bucketWebhookEndpoints, bucketTokenWarnings}

	keyWebhookCursor = []byte("cursor")
)

// ensureWebhookBuckets creates the outbox's buckets that tx lacks, when tx
// may write.
func ensureWebhookBuckets(tx *bolt.Tx) error {
	if !tx.Writable() {
		return nil
	}
	for _, name := range webhookBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	return nil
}

// outboxUpdate runs fn in a write transaction that changes nothing the
// auth cache holds (the outbox, the warning marks, the security log), so
// that delivering webhooks does not make the cache read every owner
// afresh.
func (s *boltStore) outboxUpdate(fn func(*bolt.Tx) error) error {
	s.writeTxs.Add(1)
	return s.db.Update(fn)
}

// dueKey is a pending message's entry in webhook_due.
func dueKey(m *webhookMessage) []byte { return pairKey(timeKey(m.NextAttempt), m.Num) }

// WebhookCursor returns the Seq of the last event dispatched (0: none).
func (s *boltStore) WebhookCursor() (uint64, error) {
	var seq uint64
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketWebhookMeta); b != nil {
			if v := b.Get(keyWebhookCursor); len(v) == 8 {
				seq = btoi(v)
			}
		}
		return nil
	})
	return seq, err
}

// EnqueueWebhooks stores msgs and moves the cursor from from to to, if it
// is still at from; errWebhookCursorMoved otherwise.
func (s *boltStore) EnqueueWebhooks(from, to uint64, msgs []webhookMessage) error {
	return s.outboxUpdate(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketWebhookMeta)
		var cur uint64
		if v := meta.Get(keyWebhookCursor); len(v) == 8 {
			cur = btoi(v)
		}
		if cur != from {
			return errWebhookCursorMoved
		}
		b, due := tx.Bucket(bucketWebhookMessages), tx.Bucket(bucketWebhookDue)
		b.FillPercent = 0.9 // numbers only grow
		for i := range msgs {
			m := &msgs[i]
			num, err := b.NextSequence()
			if err != nil {
				return err
			}
			m.Num = num
			if err := putJSON(b, itob(num), m); err != nil {
				return err
			}
			if err := due.Put(dueKey(m), nil); err != nil {
				return err
			}
		}
		return meta.Put(keyWebhookCursor, itob(to))
	})
}

// getMessage reads message num.
func getMessage(b *bolt.Bucket, num uint64) (webhookMessage, error) {
	var m webhookMessage
	if err := getJSON(b, itob(num), &m); err != nil {
		return m, err
	}
	m.Num = num
	return m, nil
}

// ClaimWebhooks returns at most limit pending messages due at now,
// earliest due first, and makes them due at until.
func (s *boltStore) ClaimWebhooks(now, until time.Time, limit int) ([]webhookMessage, error) {
	// The outbox looks every second: when nothing is due, as is usual,
	// that costs a read, not a commit.
	due := false
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketWebhookDue); b != nil {
			k, _ := b.Cursor().First()
			due = k != nil && btoi(k[:8]) <= timeKey(now)
		}
		return nil
	})
	if err != nil || !due {
		return nil, err
	}
	var out []webhookMessage
	err = s.outboxUpdate(func(tx *bolt.Tx) error {
		out = nil
		b, due := tx.Bucket(bucketWebhookMessages), tx.Bucket(bucketWebhookDue)
		end := timeKey(now)
		// Collect first, then move: changing keys under a cursor skips some.
		var keys [][]byte
		c := due.Cursor()
		for k, _ := c.First(); k != nil && len(keys) < limit && btoi(k[:8]) <= end; k, _ = c.Next() {
			keys = append(keys, slices.Clone(k))
		}
		for _, k := range keys {
			if err := due.Delete(k); err != nil {
				return err
			}
			m, err := getMessage(b, btoi(k[8:]))
			if errors.Is(err, errNotFound) {
				continue // an entry without its message: dropped
			}
			if err != nil {
				return err
			}
			m.NextAttempt = until
			if err := putJSON(b, itob(m.Num), &m); err != nil {
				return err
			}
			if err := due.Put(dueKey(&m), nil); err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	return out, err
}

// FinishWebhook records an attempt at m; errNotFound when m is no longer
// pending at m.Attempts-1 attempts.
func (s *boltStore) FinishWebhook(m webhookMessage) error {
	// Deliveries finish together: one commit records many (Batch may run
	// this twice; it reads afresh each time).
	s.writeTxs.Add(1)
	return s.db.Batch(func(tx *bolt.Tx) error {
		b, due := tx.Bucket(bucketWebhookMessages), tx.Bucket(bucketWebhookDue)
		old, err := getMessage(b, m.Num)
		if err != nil {
			return err
		}
		if old.State != webhookPending || old.Attempts != m.Attempts-1 {
			return errNotFound
		}
		if err := due.Delete(dueKey(&old)); err != nil {
			return err
		}
		if err := putJSON(b, itob(m.Num), &m); err != nil {
			return err
		}
		if m.State == webhookPending {
			return due.Put(dueKey(&m), nil)
		}
		return nil
	})
}

// WebhookStatus returns what the outbox holds for each endpoint. It reads
// every message kept: the purge keeps them for a week.
func (s *boltStore) WebhookStatus() ([]webhookEndpointStatus, error) {
	var all []webhookMessage
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketWebhookMessages)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var m webhookMessage
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("decode webhook message %d: %w", btoi(k), err)
			}
			m.Payload = nil // not needed: let it go
			all = append(all, m)
			return nil
		})
	})
	return webhookStatusOf(all), err
}

// webhookStatusOf sums msgs up by endpoint, in order of endpoint.
func webhookStatusOf(msgs []webhookMessage) []webhookEndpointStatus {
	by := map[string]*webhookEndpointStatus{}
	for i := range msgs {
		m := &msgs[i]
		st := by[m.Endpoint]
		if st == nil {
			st = &webhookEndpointStatus{Endpoint: m.Endpoint}
			by[m.Endpoint] = st
		}
		switch m.State {
		case webhookPending:
			st.Pending++
			if m.LastError != "" {
				st.Failing++
			}
			if st.OldestPending == nil || m.CreatedAt.Before(*st.OldestPending) {
				st.OldestPending = &m.CreatedAt
			}
		case webhookDelivered:
			st.Delivered++
			if m.LastAttempt != nil && (st.LastSuccess == nil || m.LastAttempt.After(*st.LastSuccess)) {
				st.LastSuccess = m.LastAttempt
			}
		case webhookFailed:
			st.Failed++
		}
		if m.LastErrorAt != nil && (st.LastErrorAt == nil || m.LastErrorAt.After(*st.LastErrorAt)) {
			st.LastError, st.LastErrorAt = m.LastError, m.LastErrorAt
		}
	}
	out := make([]webhookEndpointStatus, 0, len(by))
	for _, st := range by {
		out = append(out, *st)
	}
	slices.SortFunc(out, func(a, b webhookEndpointStatus) int { return cmpString(a.Endpoint, b.Endpoint) })
	return out
}

// cmpString orders two strings.
func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// PurgeWebhooks deletes delivered and failed messages last tried before
// before.
func (s *boltStore) PurgeWebhooks(ctx context.Context, before time.Time) (int, error) {
	n := 0
	err := s.outboxUpdate(func(tx *bolt.Tx) error {
		n = 0
		b := tx.Bucket(bucketWebhookMessages)
		var keys [][]byte
		err := b.ForEach(func(k, v []byte) error {
			var m webhookMessage
			if json.Unmarshal(v, &m) != nil {
				return nil // left for Check to name
			}
			if m.State != webhookPending && m.LastAttempt != nil && m.LastAttempt.Before(before) {
				keys = append(keys, slices.Clone(k))
			}
			return ctx.Err()
		})
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(keys)
		return nil
	})
	return n, err
}

// WebhookEndpoints returns the stored endpoints in order of addition.
func (s *boltStore) WebhookEndpoints() ([]webhookEndpoint, error) {
	var out []webhookEndpoint
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketWebhookEndpoints)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var e webhookEndpoint
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("decode webhook endpoint %d: %w", btoi(k), err)
			}
			out = append(out, e)
			return nil
		})
	})
	return out, err
}

// AddWebhookEndpoint stores e, setting e.ID; errNameTaken for a URL
// stored already.
func (s *boltStore) AddWebhookEndpoint(e *webhookEndpoint) error {
	return s.outboxUpdate(func(tx *bolt.Tx) error {
		if err := s.roomToCreate(tx); err != nil {
			return err
		}
		b := tx.Bucket(bucketWebhookEndpoints)
		taken := false
		b.ForEach(func(_, v []byte) error {
			var o webhookEndpoint
			taken = taken || json.Unmarshal(v, &o) == nil && o.URL == e.URL
			return nil
		})
		if taken {
			return errNameTaken
		}
		id, err := b.NextSequence()
		if err != nil {
			return err
		}
		rec := *e
		rec.ID = id
		if err := putJSON(b, itob(id), &rec); err != nil {
			return err
		}
		e.ID = id
		return nil
	})
}

// RemoveWebhookEndpoint deletes endpoint id and returns it; errNotFound
// when there is none.
func (s *boltStore) RemoveWebhookEndpoint(id uint64) (webhookEndpoint, error) {
	var e webhookEndpoint
	err := s.outboxUpdate(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketWebhookEndpoints)
		if err := getJSON(b, itob(id), &e); err != nil {
			return err
		}
		return b.Delete(itob(id))
	})
	return e, err
}

// warningKey is the mark of token t warned of with detail.
func warningKey(t *tokenRecord, detail string) []byte {
	return append(pairKey(timeKey(*t.ExpiresAt), t.ID), detail...)
}

// WarnExpiring records a token.expiring event for every personal token
// that expires within within of now, lives longer than within and was not
// warned of with detail: the mark and the event in one transaction. It
// walks tokens_by_expiry from now to now+within, so its cost follows the
// tokens expiring in that window, and drops the marks of tokens past
// their expiry on the way.
func (s *boltStore) WarnExpiring(now time.Time, within time.Duration, detail string, limit int) (int, error) {
	n := 0
	err := s.outboxUpdate(func(tx *bolt.Tx) error {
		n = 0
		if err := s.roomToCreate(tx); err != nil {
			return err
		}
		marks := tx.Bucket(bucketTokenWarnings)
		start, end := timeKey(now), timeKey(now.Add(within))
		var stale [][]byte
		c := marks.Cursor()
		for k, _ := c.First(); k != nil && len(stale) < limit && btoi(k[:8]) <= start; k, _ = c.Next() {
			stale = append(stale, slices.Clone(k))
		}
		for _, k := range stale {
			if err := marks.Delete(k); err != nil {
				return err
			}
		}
		var due []tokenRecord
		tokens := tx.Bucket(bucketTokens)
		ec := tx.Bucket(bucketTokensByExpiry).Cursor()
		for k, _ := ec.Seek(itob(start + 1)); k != nil && len(due) < limit; k, _ = ec.Next() {
			if len(k) != 16 || btoi(k[:8]) > end {
				break
			}
			var t tokenRecord
			if err := getJSON(tokens, k[8:], &t); err != nil {
				continue // Check names an entry without its token
			}
			if t.Grant != 0 || t.ExpiresAt == nil || t.ExpiresAt.Sub(t.CreatedAt) <= within ||
				marks.Get(warningKey(&t, detail)) != nil {
				continue
			}
			due = append(due, t)
		}
		users := tx.Bucket(bucketUsers)
		for i := range due {
			t := &due[i]
			var u userRecord
			if err := getJSON(users, itob(t.Owner), &u); err != nil {
				return fmt.Errorf("owner %d of token %d: %w", t.Owner, t.ID, asCorruption(err))
			}
			if err := marks.Put(warningKey(t, detail), nil); err != nil {
				return err
			}
			if err := s.appendEventsTx(tx, expiringEvent(now, t, &u, detail)); err != nil {
				return err
			}
		}
		n = len(due)
		return nil
	})
	return n, err
}

// expiringEvent is the security event that warns of t's expiry.
func expiringEvent(now time.Time, t *tokenRecord, owner *userRecord, detail string) auditEvent {
	by := systemActor
	by.At = now
	return newAuditEvent(by, kindTokenExpiring).ofToken(*t).about(*owner).withDetail("%s", detail)
}
