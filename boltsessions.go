package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Sessions in the bbolt engine: the sessions bucket, keyed by the hash of
// the secret, and sessions_by_owner beside it.

// sessionOwnerKey is the key of h in sessions_by_owner: owner ‖ hash.
func sessionOwnerKey(user uint64, h sessionHash) []byte {
	k := make([]byte, 8+len(h))
	binary.BigEndian.PutUint64(k, user)
	copy(k[8:], h[:])
	return k
}

// sessionOwnerValue is the value of a session's sessions_by_owner entry:
// its creation time, so that the oldest is found from the index alone.
func sessionOwnerValue(rec *sessionRecord) []byte {
	return itob(uint64(max(unixNano(rec.CreatedAt), 0)))
}

// putSession writes rec under h with its index entry.
func putSession(tx *bolt.Tx, h sessionHash, rec *sessionRecord) error {
	if err := putJSON(tx.Bucket(bucketSessions), h[:], rec); err != nil {
		return err
	}
	return tx.Bucket(bucketSessionsByOwner).Put(sessionOwnerKey(rec.User, h), sessionOwnerValue(rec))
}

// deleteSession deletes the session under h, of user, with its index entry.
func deleteSession(tx *bolt.Tx, h sessionHash, user uint64) error {
	if err := tx.Bucket(bucketSessions).Delete(h[:]); err != nil {
		return err
	}
	return tx.Bucket(bucketSessionsByOwner).Delete(sessionOwnerKey(user, h))
}

// ownedSession is a session as sessions_by_owner lists it.
type ownedSession struct {
	hash    sessionHash
	created uint64 // unix ns
}

// sessionsIndexOf returns user's sessions from sessions_by_owner, reading
// no other user's entries and no session record.
func sessionsIndexOf(tx *bolt.Tx, user uint64) []ownedSession {
	var out []ownedSession
	prefix := itob(user)
	c := tx.Bucket(bucketSessionsByOwner).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(k) != 8+sha256.Size || len(v) != 8 {
			continue
		}
		out = append(out, ownedSession{hash: sessionHash(k[8:]), created: btoi(v)})
	}
	return out
}

// CreateSession stores rec under h. When replaced is not nil, that session
// is deleted in the same transaction (a new id at every sign-in). When the
// user then holds more than limit sessions (0: no limit), the oldest end.
// It returns errNotFound when rec.User does not exist, and
// errSpaceReserved when the database is too full for creations. It is a
// sign-in by by: it records signin.succeeded, and signin.new_address when
// the user never signed in from by.Addr before.
func (s *boltStore) CreateSession(by actor, h sessionHash, rec sessionRecord, replaced *sessionHash, limit int) error {
	return s.update(func(tx *bolt.Tx) error {
		if err := s.roomToCreate(tx); err != nil {
			return err
		}
		var u userRecord
		if err := getJSON(tx.Bucket(bucketUsers), itob(rec.User), &u); err != nil {
			return err
		}
		evs, err := signinEvents(tx, by, u)
		if err != nil {
			return err
		}
		if err := appendEvents(tx, evs...); err != nil {
			return err
		}
		sessions := tx.Bucket(bucketSessions)
		if replaced != nil {
			var old sessionRecord
			switch err := getJSON(sessions, replaced[:], &old); {
			case err == nil:
				if err := deleteSession(tx, *replaced, old.User); err != nil {
					return err
				}
			case !errors.Is(err, errNotFound):
				return err
			}
		}
		if sessions.Get(h[:]) != nil {
			return errors.New("session hash collision")
		}
		if err := putSession(tx, h, &rec); err != nil {
			return err
		}
		if limit <= 0 {
			return nil
		}
		owned := sessionsIndexOf(tx, rec.User)
		if len(owned) <= limit {
			return nil
		}
		// The oldest go; the new one is the newest, and never goes.
		slices.SortFunc(owned, func(a, b ownedSession) int {
			return cmp.Or(cmp.Compare(a.created, b.created), bytes.Compare(a.hash[:], b.hash[:]))
		})
		excess := len(owned) - limit
		for _, o := range owned {
			if excess == 0 {
				break
			}
			if o.hash == h {
				continue
			}
			if err := deleteSession(tx, o.hash, rec.User); err != nil {
				return err
			}
			excess--
		}
		return nil
	})
}

// SessionByHash returns the session stored under h and its user, or
// errNotFound. It does not check the lifetimes.
func (s *boltStore) SessionByHash(h sessionHash) (sessionRecord, userRecord, error) {
	var rec sessionRecord
	var u userRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		if err := getJSON(tx.Bucket(bucketSessions), h[:], &rec); err != nil {
			return err
		}
		return getJSON(tx.Bucket(bucketUsers), itob(rec.User), &u)
	})
	return rec, u, err
}

// updateSession applies change to the session under h. It returns
// errNotFound when there is none.
func (s *boltStore) updateSession(h sessionHash, change func(*sessionRecord)) error {
	return s.update(func(tx *bolt.Tx) error {
		sessions := tx.Bucket(bucketSessions)
		var rec sessionRecord
		if err := getJSON(sessions, h[:], &rec); err != nil {
			return err
		}
		change(&rec)
		return putJSON(sessions, h[:], &rec)
	})
}

// TouchSession records that the session under h was seen at now from addr.
// It returns errNotFound when there is no such session.
func (s *boltStore) TouchSession(h sessionHash, now time.Time, addr string) error {
	return s.updateSession(h, func(rec *sessionRecord) {
		rec.LastSeenAt = now
		rec.Addr = addr
	})
}

// ConfirmSession records that the session under h gave its password at
// now, which opens sudo mode. It returns errNotFound when there is no such
// session.
func (s *boltStore) ConfirmSession(h sessionHash, now time.Time) error {
	return s.updateSession(h, func(rec *sessionRecord) {
		rec.SignedInAt = now
		rec.LastSeenAt = now
	})
}

// ClaimFormKey records key as used by the session under h, in one write
// transaction, and reports whether it was not used before.
func (s *boltStore) ClaimFormKey(h sessionHash, key string) (bool, error) {
	claimed := false
	err := s.updateSession(h, func(rec *sessionRecord) {
		if slices.Contains(rec.FormKeys, key) {
			return
		}
		claimed = true
		rec.FormKeys = append(rec.FormKeys, key)
		if n := len(rec.FormKeys) - formKeysPerSession; n > 0 {
			rec.FormKeys = slices.Delete(rec.FormKeys, 0, n)
		}
	})
	return claimed, err
}

// ReleaseFormKey forgets that the session under h used key.
func (s *boltStore) ReleaseFormKey(h sessionHash, key string) error {
	return s.updateSession(h, func(rec *sessionRecord) {
		rec.FormKeys = slices.DeleteFunc(rec.FormKeys, func(k string) bool { return k == key })
		if len(rec.FormKeys) == 0 {
			rec.FormKeys = nil
		}
	})
}

// DeleteSession deletes the session under h if it belongs to user (or user
// is anyOwner). It returns errNotFound otherwise. With anyOwner it is a
// sign-out (only the holder of the session's secret knows h): signout;
// otherwise session.ended.
func (s *boltStore) DeleteSession(by actor, h sessionHash, user uint64) error {
	return s.update(func(tx *bolt.Tx) error {
		sessions := tx.Bucket(bucketSessions)
		var rec sessionRecord
		if err := getJSON(sessions, h[:], &rec); err != nil {
			return err
		}
		if user != anyOwner && rec.User != user {
			return errNotFound
		}
		if err := deleteSession(tx, h, rec.User); err != nil {
			return err
		}
		return appendSessionEvent(tx, newAuditEvent(by, sessionEndKind(user)), rec.User)
	})
}

// SessionsOf returns the sessions of user, newest first, expired ones
// included (the caller knows the lifetimes). It reads only user's
// sessions, through sessions_by_owner.
func (s *boltStore) SessionsOf(user uint64) ([]storedSession, error) {
	var out []storedSession
	err := s.db.View(func(tx *bolt.Tx) error {
		sessions := tx.Bucket(bucketSessions)
		for _, o := range sessionsIndexOf(tx, user) {
			var rec sessionRecord
			if err := getJSON(sessions, o.hash[:], &rec); err != nil {
				return fmt.Errorf("session of sessions_by_owner: %w", asCorruption(err))
			}
			out = append(out, storedSession{hash: o.hash, rec: rec})
		}
		return nil
	})
	slices.SortFunc(out, func(a, b storedSession) int { return b.rec.CreatedAt.Compare(a.rec.CreatedAt) })
	return out, err
}

// EndOtherSessions deletes every session of user but keep and returns how
// many it deleted.
func (s *boltStore) EndOtherSessions(by actor, user uint64, keep sessionHash) (int, error) {
	var n int
	err := s.update(func(tx *bolt.Tx) error {
		var err error
		if n, err = deleteSessionsExcept(tx, user, keep); err != nil || n == 0 {
			return err
		}
		return appendSessionEvent(tx, newAuditEvent(by, kindSessionEnded).withDetail("%s", plural(n, "session")), user)
	})
	return n, err
}

// deleteSessionsExcept deletes every session of user but keep (the zero
// hash keeps none) and returns how many it deleted. It reads only user's
// entries of sessions_by_owner.
func deleteSessionsExcept(tx *bolt.Tx, user uint64, keep sessionHash) (int, error) {
	n := 0
	for _, o := range sessionsIndexOf(tx, user) { // collected before anything is deleted
		if o.hash == keep {
			continue
		}
		if err := deleteSession(tx, o.hash, user); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// ChangePassword sets the password hash of user id and, as c says,
// revokes their tokens and grants and ends their other sessions; the kept
// session counts as having just given its password. It returns how many
// tokens (a grant's access tokens counted) and sessions went, or
// errNotFound for an unknown user.
func (s *boltStore) ChangePassword(by actor, id uint64, c passwordChange) (tokens, sessions int, err error) {
	err = s.update(func(tx *bolt.Tx) error {
		users := tx.Bucket(bucketUsers)
		var u userRecord
		if err := getJSON(users, itob(id), &u); err != nil {
			return err
		}
		u.PasswordHash = c.hash
		u.PasswordChangedAt = c.at
		if err := putJSON(users, itob(id), &u); err != nil {
			return err
		}
		if c.revokeTokens {
			var err error
			if tokens, err = s.revokeAllOf(tx, id); err != nil {
				return err
			}
		}
		if c.endSessions {
			var err error
			if sessions, err = deleteSessionsExcept(tx, id, c.keep); err != nil {
				return err
			}
		}
		if err := appendEvents(tx, passwordEvent(by, u, tokens, sessions)); err != nil {
			return err
		}
		b := tx.Bucket(bucketSessions)
		var rec sessionRecord
		if c.keep != (sessionHash{}) && getJSON(b, c.keep[:], &rec) == nil && rec.User == id {
			rec.SignedInAt, rec.LastSeenAt = c.at, c.at
			return putJSON(b, c.keep[:], &rec)
		}
		return nil
	})
	return tokens, sessions, err
}

// PurgeSessions deletes every session that has passed its absolute expiry
// or been idle for idle at now, with its index entry, and returns how
// many it deleted. It looks at most sessionPurgeBatch sessions per write
// transaction, so that many sessions never hold the write lock for long,
// and stops early, without error, when ctx ends.
func (s *boltStore) PurgeSessions(ctx context.Context, now time.Time, idle time.Duration) (int, error) {
	total := 0
	var after []byte // the last key a batch looked at
	for ctx.Err() == nil {
		var done bool
		err := s.update(func(tx *bolt.Tx) error {
			sessions := tx.Bucket(bucketSessions)
			c := sessions.Cursor()
			k, v := c.First()
			if after != nil {
				if k, v = c.Seek(after); k != nil && bytes.Equal(k, after) {
					k, v = c.Next()
				}
			}
			type doomed struct {
				key  []byte
				user uint64
				read bool
			}
			var batch []doomed
			for n := 0; n < sessionPurgeBatch && k != nil; n++ {
				var rec sessionRecord
				switch err := json.Unmarshal(v, &rec); {
				case err != nil || len(k) != sha256.Size:
					batch = append(batch, doomed{key: slices.Clone(k)})
				case !rec.live(now, idle):
					batch = append(batch, doomed{key: slices.Clone(k), user: rec.User, read: true})
				}
				after = slices.Clone(k)
				k, v = c.Next()
			}
			done = k == nil
			for _, d := range batch {
				var err error
				if d.read {
					err = deleteSession(tx, sessionHash(d.key), d.user)
				} else {
					err = sessions.Delete(d.key) // unreadable: no owner to find its index entry by
				}
				if err != nil {
					return err
				}
			}
			total += len(batch)
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("purge sessions: %w", err)
		}
		if done {
			break
		}
	}
	return total, nil
}
