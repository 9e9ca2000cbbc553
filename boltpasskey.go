package main

import (
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// bucketPasskeyCeremonies holds the passkey ceremonies under way:
// ceremonyKey → passkeyCeremony. Its sequence counts them. It is created
// by the first ceremony rather than with the schema: what it holds lives
// five minutes, and a database without it simply has none under way.
var bucketPasskeyCeremonies = []byte("passkey_ceremonies")

// PutPasskeyCeremony stores c under k until c.Expires, after deleting
// the ceremonies expired at now; errTooManyCeremonies when limit are
// under way.
func (s *boltStore) PutPasskeyCeremony(k ceremonyKey, c passkeyCeremony, now time.Time, limit int) error {
	return s.update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketPasskeyCeremonies)
		if err != nil {
			return fmt.Errorf("create bucket %s: %w", bucketPasskeyCeremonies, err)
		}
		// Keys begin with the expiry: the expired ones come first.
		var expired [][]byte
		cur := b.Cursor()
		for key, _ := cur.First(); key != nil && len(key) == len(ceremonyKey{}) && !ceremonyKey(key).expires().After(now); key, _ = cur.Next() {
			expired = append(expired, key)
		}
		for _, key := range expired {
			if err := b.Delete(key); err != nil {
				return err
			}
		}
		live := b.Sequence() - min(b.Sequence(), uint64(len(expired)))
		if live >= uint64(limit) {
			return errTooManyCeremonies
		}
		if err := putJSON(b, k[:], c); err != nil {
			return err
		}
		return b.SetSequence(live + 1)
	})
}

// TakePasskeyCeremony deletes the ceremony under k and returns it;
// errNotFound when there is none, or it expired at now.
func (s *boltStore) TakePasskeyCeremony(k ceremonyKey, now time.Time) (passkeyCeremony, error) {
	var c passkeyCeremony
	found := false
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPasskeyCeremonies)
		if b == nil {
			return nil
		}
		v := b.Get(k[:])
		if v == nil {
			return nil
		}
		// An expired or unreadable one goes all the same.
		found = json.Unmarshal(v, &c) == nil && c.Expires.After(now)
		if err := b.Delete(k[:]); err != nil {
			return err
		}
		return b.SetSequence(b.Sequence() - min(b.Sequence(), 1))
	})
	switch {
	case err != nil:
		return passkeyCeremony{}, err
	case !found:
		return passkeyCeremony{}, errNotFound
	}
	return c, nil
}
