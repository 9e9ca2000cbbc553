package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The security log in bbolt: events keyed by seq, with an index by user
// (actor and subject) and one by kind; time ranges are seq ranges (events
// are kept in time order, see auditEvent.chain), found by binary search.
// The head (seq, hash, time) and the purge anchor live in meta.
var (
	bucketAudit       = []byte("audit")         // seq → auditEvent
	bucketAuditByUser = []byte("audit_by_user") // user id ‖ seq → empty
	bucketAuditByKind = []byte("audit_by_kind") // len(kind) ‖ kind ‖ seq → empty
	bucketAuditSeen   = []byte("audit_seen")    // user id ‖ address → empty

	auditBuckets = [][]byte{bucketAudit, bucketAuditByUser, bucketAuditByKind, bucketAuditSeen}

	keyAuditHead   = []byte("audit_head")   // seq ‖ unix ns ‖ hash (hex)
	keyAuditAnchor = []byte("audit_anchor") // hash (hex) of the last event purged
)

// upgradeSchema3 brings a database of schema 3 to schema 4 in the
// transaction that opens it: it adds the buckets of the security log.
func upgradeSchema3(tx *bolt.Tx) error {
	for _, name := range auditBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	return tx.Bucket(bucketMeta).Put(keySchema, itob(4))
}

// auditKindKey is the key prefix of kind in audit_by_kind.
func auditKindKey(kind string) []byte {
	return append([]byte{byte(len(kind))}, kind...)
}

// auditUsers returns the users event e is indexed under: its actor and its
// subject, once each.
func auditUsers(e *auditEvent) []uint64 {
	var ids []uint64
	if e.ActorID != 0 {
		ids = append(ids, e.ActorID)
	}
	if e.SubjectID != 0 && e.SubjectID != e.ActorID {
		ids = append(ids, e.SubjectID)
	}
	return ids
}

// boltAuditHead reads the head of the log from meta.
func boltAuditHead(tx *bolt.Tx) (seq uint64, hash string, at time.Time) {
	v := tx.Bucket(bucketMeta).Get(keyAuditHead)
	if len(v) < 16 {
		return 0, "", time.Time{}
	}
	return btoi(v[:8]), string(v[16:]), time.Unix(0, int64(btoi(v[8:16]))).UTC()
}

// appendEvents chains evs after the head of the log and stores them with
// their index entries, in tx: the events commit with the change they
// describe, or not at all.
func appendEvents(tx *bolt.Tx, evs ...auditEvent) error {
	if len(evs) == 0 {
		return nil
	}
	seq, prev, at := boltAuditHead(tx)
	events := tx.Bucket(bucketAudit)
	events.FillPercent = 0.95 // seqs only grow
	byUser, byKind := tx.Bucket(bucketAuditByUser), tx.Bucket(bucketAuditByKind)
	for i := range evs {
		e := &evs[i]
		e.chain(seq, prev, at)
		if err := putJSON(events, itob(e.Seq), e); err != nil {
			return err
		}
		for _, u := range auditUsers(e) {
			if err := byUser.Put(pairKey(u, e.Seq), nil); err != nil {
				return err
			}
		}
		if err := byKind.Put(append(auditKindKey(e.Kind), itob(e.Seq)...), nil); err != nil {
			return err
		}
		seq, prev, at = e.Seq, e.Hash, e.Time
	}
	head := append(append(itob(seq), itob(uint64(at.UnixNano()))...), prev...)
	return tx.Bucket(bucketMeta).Put(keyAuditHead, head)
}

// seeAddress records that user signed in from addr and reports whether
// it is new for them: false also for their first sign-in ever, which is
// no news, and for an unknown address.
func seeAddress(tx *bolt.Tx, user uint64, addr string) (bool, error) {
	if addr == "" {
		return false, nil
	}
	seen := tx.Bucket(bucketAuditSeen)
	key := append(itob(user), addr...)
	if seen.Get(key) != nil {
		return false, nil
	}
	k, _ := seen.Cursor().Seek(itob(user))
	first := k == nil || !bytes.HasPrefix(k, itob(user))
	return !first, seen.Put(key, nil)
}

// forgetAddresses deletes the addresses user was seen at.
func forgetAddresses(tx *bolt.Tx, user uint64) error {
	seen := tx.Bucket(bucketAuditSeen)
	var keys [][]byte
	c := seen.Cursor()
	for k, _ := c.Seek(itob(user)); k != nil && bytes.HasPrefix(k, itob(user)); k, _ = c.Next() {
		keys = append(keys, slices.Clone(k))
	}
	for _, k := range keys {
		if err := seen.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// signinEvents returns the events of user u signing in as by, with
// signin.new_address when u never signed in from by.Addr before.
func signinEvents(tx *bolt.Tx, by actor, u userRecord) ([]auditEvent, error) {
	evs := []auditEvent{newAuditEvent(by, kindSigninSucceeded).about(u)}
	isNew, err := seeAddress(tx, u.ID, by.Addr)
	if isNew {
		evs = append(evs, newAuditEvent(by, kindSigninNewAddr).about(u))
	}
	return evs, err
}

// appendEventsTx chains and appends evs in tx, for a write whose
// transaction is not one of this file's (see appendEvents).
func (s *boltStore) appendEventsTx(tx *bolt.Tx, evs ...auditEvent) error {
	return appendEvents(tx, evs...)
}

// appendTokenEvent appends e about token t, its subject t's owner.
func appendTokenEvent(tx *bolt.Tx, e auditEvent, t tokenRecord) error {
	owner := userRecord{ID: t.Owner}
	if err := getJSON(tx.Bucket(bucketUsers), itob(t.Owner), &owner); err != nil && !errors.Is(err, errNotFound) {
		return err
	}
	return appendEvents(tx, e.about(owner).ofToken(t))
}

// appendSessionEvent appends e about a session of user.
func appendSessionEvent(tx *bolt.Tx, e auditEvent, user uint64) error {
	u := userRecord{ID: user}
	if err := getJSON(tx.Bucket(bucketUsers), itob(user), &u); err != nil && !errors.Is(err, errNotFound) {
		return err
	}
	return appendEvents(tx, e.about(u))
}

// appendGrantEvent appends grant.created for g, made by its user through
// by (the client's request).
func appendGrantEvent(tx *bolt.Tx, by actor, g grantRecord) error {
	return appendSessionEvent(tx, newAuditEvent(by, kindGrantCreated).ofGrant(g).withDetail("%s", strings.Join(g.Scopes, " ")), g.User)
}

// revokeReusedGrant revokes grant id, whose code or refresh token was used
// a second time, and records grant.reused; nothing when it is gone
// already.
func (s *boltStore) revokeReusedGrant(tx *bolt.Tx, by actor, id uint64) error {
	var g grantRecord
	switch err := getJSON(tx.Bucket(bucketGrants), itob(id), &g); {
	case errors.Is(err, errNotFound):
		return nil
	case err != nil:
		return err
	}
	if err := s.deleteGrant(tx, &g); err != nil {
		return err
	}
	return appendSessionEvent(tx, newAuditEvent(by, kindGrantReused).ofGrant(g), g.User)
}

// RecordEvents appends events that come with no change of their own.
func (s *boltStore) RecordEvents(evs ...auditEvent) error {
	return s.update(func(tx *bolt.Tx) error { return appendEvents(tx, evs...) })
}

// AuditHead returns the newest event's Seq and Hash ("" when none).
func (s *boltStore) AuditHead() (seq uint64, hash string, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		seq, hash, _ = boltAuditHead(tx)
		return nil
	})
	return seq, hash, err
}

// AuditAnchor returns the Hash of the last event purged ("" when none).
func (s *boltStore) AuditAnchor() (string, error) {
	var anchor string
	err := s.db.View(func(tx *bolt.Tx) error {
		anchor = string(tx.Bucket(bucketMeta).Get(keyAuditAnchor))
		return nil
	})
	return anchor, err
}

// auditSeqAt returns the lowest seq whose event is at or after t (one past
// the head when none is), by binary search over the kept events.
func auditSeqAt(tx *bolt.Tx, t time.Time) uint64 {
	events := tx.Bucket(bucketAudit)
	k, _ := events.Cursor().First()
	if k == nil {
		return 1
	}
	first := btoi(k)
	head, _, _ := boltAuditHead(tx)
	n := sort.Search(int(head-first+1), func(i int) bool {
		var e auditEvent
		if getJSON(events, itob(first+uint64(i)), &e) != nil {
			return true
		}
		return !e.Time.Before(t)
	})
	return first + uint64(n)
}

// AuditEvents returns the events q selects: newest first, or oldest first
// with q.After. It reads the index that fits q (by user, by kind, or the
// events themselves) over the seq range of q's times and pages.
func (s *boltStore) AuditEvents(q auditQuery) ([]auditEvent, error) {
	limit := q.Limit
	if limit <= 0 || limit > maxAuditPage {
		limit = maxAuditPage
	}
	forward := q.After > 0 || q.Oldest
	out := []auditEvent{}
	err := s.db.View(func(tx *bolt.Tx) error {
		lo, hi := uint64(1), uint64(1<<63) // seq range [lo, hi)
		if !q.Since.IsZero() {
			lo = max(lo, auditSeqAt(tx, q.Since))
		}
		if !q.Until.IsZero() {
			hi = min(hi, auditSeqAt(tx, q.Until))
		}
		if q.After > 0 {
			lo = max(lo, q.After+1)
		}
		if q.Before > 0 {
			hi = min(hi, q.Before)
		}
		if lo >= hi {
			return nil
		}
		events := tx.Bucket(bucketAudit)
		kinds := map[string]bool{}
		for _, k := range q.Kinds {
			kinds[k] = true
		}
		// scan walks the keys under prefix whose last 8 bytes are a seq in
		// [lo, hi), in the direction asked, and adds the events keep
		// accepts, up to limit.
		scan := func(b *bolt.Bucket, prefix []byte, keep func(*auditEvent) bool) error {
			c := b.Cursor()
			var k []byte
			if forward {
				k, _ = c.Seek(append(slices.Clone(prefix), itob(lo)...))
			} else if k, _ = c.Seek(append(slices.Clone(prefix), itob(hi)...)); k == nil {
				k, _ = c.Last()
			} else {
				k, _ = c.Prev()
			}
			for n := 0; k != nil && bytes.HasPrefix(k, prefix) && n < limit; {
				seq := btoi(k[len(k)-8:])
				if forward && seq >= hi || !forward && seq < lo {
					break
				}
				if seq >= lo && seq < hi {
					var e auditEvent
					if err := getJSON(events, itob(seq), &e); err != nil {
						return fmt.Errorf("audit event %d: %w", seq, asCorruption(err))
					}
					if keep(&e) {
						out = append(out, e)
						n++
					}
				}
				if forward {
					k, _ = c.Next()
				} else {
					k, _ = c.Prev()
				}
			}
			return nil
		}
		ofKind := func(e *auditEvent) bool { return len(kinds) == 0 || kinds[e.Kind] }
		switch {
		case q.User != 0:
			return scan(tx.Bucket(bucketAuditByUser), itob(q.User), ofKind)
		case len(kinds) > 0:
			for k := range kinds {
				if err := scan(tx.Bucket(bucketAuditByKind), auditKindKey(k), ofKind); err != nil {
					return err
				}
			}
			return nil
		default:
			return scan(events, nil, ofKind)
		}
	})
	if err != nil {
		return nil, err
	}
	// Several kinds were read one by one: put them in order and cut.
	slices.SortFunc(out, func(a, b auditEvent) int {
		if forward {
			return cmp.Compare(a.Seq, b.Seq)
		}
		return cmp.Compare(b.Seq, a.Seq)
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// PurgeAudit deletes events older than before, oldest first, at most batch
// a transaction, until none is left or ctx ends, keeping in meta the hash
// of the last one deleted as the anchor of the chain.
func (s *boltStore) PurgeAudit(ctx context.Context, before time.Time, batch int) (int, error) {
	deleted := 0
	for ctx.Err() == nil {
		n := 0
		err := s.update(func(tx *bolt.Tx) error {
			events := tx.Bucket(bucketAudit)
			var purged []auditEvent
			c := events.Cursor()
			for k, v := c.First(); k != nil && len(purged) < batch; k, v = c.Next() {
				var e auditEvent
				if err := json.Unmarshal(v, &e); err != nil {
					return fmt.Errorf("decode audit event %d: %w", btoi(k), err)
				}
				if !e.Time.Before(before) {
					break
				}
				purged = append(purged, e)
			}
			for _, e := range purged {
				for _, u := range auditUsers(&e) {
					if err := tx.Bucket(bucketAuditByUser).Delete(pairKey(u, e.Seq)); err != nil {
						return err
					}
				}
				if err := tx.Bucket(bucketAuditByKind).Delete(append(auditKindKey(e.Kind), itob(e.Seq)...)); err != nil {
					return err
				}
				if err := events.Delete(itob(e.Seq)); err != nil {
					return err
				}
			}
			n = len(purged)
			if n == 0 {
				return nil
			}
			return tx.Bucket(bucketMeta).Put(keyAuditAnchor, []byte(purged[n-1].Hash))
		})
		if err != nil {
			return deleted, fmt.Errorf("purge security log: %w", err)
		}
		deleted += n
		if n < batch {
			break
		}
	}
	return deleted, nil
}

// checkAudit reports every index entry of the security log that points at
// no event indexed so, and every event missing from an index.
func checkAudit(tx *bolt.Tx, bad func(string, ...any)) {
	events := tx.Bucket(bucketAudit)
	byUser, byKind := tx.Bucket(bucketAuditByUser), tx.Bucket(bucketAuditByKind)
	events.ForEach(func(k, v []byte) error {
		var e auditEvent
		if err := json.Unmarshal(v, &e); err != nil || e.Seq != btoi(k) {
			bad("audit event %d cannot be read", btoi(k))
			return nil
		}
		for _, u := range auditUsers(&e) {
			if byUser.Get(pairKey(u, e.Seq)) == nil {
				bad("audit event %d has no audit_by_user entry for user %d", e.Seq, u)
			}
		}
		if byKind.Get(append(auditKindKey(e.Kind), itob(e.Seq)...)) == nil {
			bad("audit event %d has no audit_by_kind entry", e.Seq)
		}
		return nil
	})
	byUser.ForEach(func(k, _ []byte) error {
		var e auditEvent
		if len(k) != 16 || getJSON(events, k[8:], &e) != nil || !slices.Contains(auditUsers(&e), btoi(k[:8])) {
			bad("audit_by_user %x points at no event of that user", k)
		}
		return nil
	})
	byKind.ForEach(func(k, _ []byte) error {
		var e auditEvent
		if len(k) < 9 || int(k[0]) != len(k)-9 || getJSON(events, k[len(k)-8:], &e) != nil || e.Kind != string(k[1:len(k)-8]) {
			bad("audit_by_kind %x points at no event of that kind", k)
		}
		return nil
	})
}
