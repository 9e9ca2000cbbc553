package main

import (
	"errors"

	bolt "go.etcd.io/bbolt"
)

// Users in the bbolt engine, for the users page and the first run; the
// rest of users' storage is in db.go.

// TokenCounts returns how many tokens each user holds; users without
// tokens are missing from the map.
func (s *boltStore) TokenCounts() (map[uint64]int, error) {
	counts := make(map[uint64]int)
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTokensByOwner).ForEach(func(k, _ []byte) error {
			if len(k) == 16 {
				counts[btoi(k[:8])]++
			}
			return nil
		})
	})
	return counts, err
}

// SetAdmin makes user id an admin or not and returns the record. It
// returns errNotFound for an unknown user and errLastAdmin when that would
// leave no admin.
func (s *boltStore) SetAdmin(by actor, id uint64, admin bool) (userRecord, error) {
	var u userRecord
	err := s.update(func(tx *bolt.Tx) error {
		users := tx.Bucket(bucketUsers)
		if err := getJSON(users, itob(id), &u); err != nil {
			return err
		}
		if u.Admin == admin {
			return nil
		}
		if !admin {
			n, err := countAdmins(tx)
			if err != nil {
				return err
			}
			if n <= 1 {
				return errLastAdmin
			}
		}
		u.Admin = admin
		if err := putJSON(users, itob(id), &u); err != nil {
			return err
		}
		return appendEvents(tx, newAuditEvent(by, roleKind(admin)).about(u))
	})
	return u, err
}

// HasUsers reports whether any user exists. It reads one key, however
// many users there are.
func (s *boltStore) HasUsers() (bool, error) {
	var has bool
	err := s.db.View(func(tx *bolt.Tx) error {
		has = hasUsers(tx)
		return nil
	})
	return has, err
}

func hasUsers(tx *bolt.Tx) bool {
	k, _ := tx.Bucket(bucketUsers).Cursor().First()
	return k != nil
}

// CreateFirstAdmin stores u, who must be an admin, setting u.ID, unless a
// user exists already: then it returns errSetupDone.
func (s *boltStore) CreateFirstAdmin(by actor, u *userRecord) error {
	if !u.Admin {
		return errors.New("the first user must be an admin")
	}
	return s.update(func(tx *bolt.Tx) error {
		if hasUsers(tx) {
			return errSetupDone
		}
		if err := putNewUser(tx, u); err != nil {
			return err
		}
		return appendEvents(tx, newAuditEvent(by, kindSetupUsed).about(*u).withDetail("first admin"))
	})
}
