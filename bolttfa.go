package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Second factors in the bbolt engine (see tfastore.go).
var (
	bucketTOTP = []byte("totp") // user id → totpRecord
	// user id ‖ SHA-256 of an unused recovery code → empty
	bucketRecoveryCodes = []byte("recovery_codes")
	bucketPasskeys      = []byte("passkeys") // passkey id → passkeyRecord
	// user id ‖ passkey id → empty
	bucketPasskeysByUser = []byte("passkeys_by_user")
	// credential id → passkey id
	bucketPasskeysByCredential = []byte("passkeys_by_credential")

	tfaBuckets = [][]byte{bucketTOTP, bucketRecoveryCodes, bucketPasskeys, bucketPasskeysByUser, bucketPasskeysByCredential}
)

// upgradeSchema4 brings a database of schema 4 to schema 5 in the
// transaction that opens it: it adds the buckets of second factors.
func upgradeSchema4(tx *bolt.Tx) error {
	for _, name := range tfaBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	return tx.Bucket(bucketMeta).Put(keySchema, itob(5))
}

// userExists returns errNotFound for an unknown user.
func userExists(tx *bolt.Tx, user uint64) error {
	if tx.Bucket(bucketUsers).Get(itob(user)) == nil {
		return errNotFound
	}
	return nil
}

// secondFactorsOf counts what user holds.
func secondFactorsOf(tx *bolt.Tx, user uint64) secondFactors {
	var f secondFactors
	f.TOTP = tx.Bucket(bucketTOTP).Get(itob(user)) != nil
	f.Passkeys = len(keysWithPrefix(tx.Bucket(bucketPasskeysByUser), itob(user)))
	f.RecoveryLeft = len(keysWithPrefix(tx.Bucket(bucketRecoveryCodes), itob(user)))
	return f
}

// deleteKeys deletes keys from b.
func deleteKeys(b *bolt.Bucket, keys [][]byte) error {
	for _, k := range keys {
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// replaceRecoveryCodes replaces user's recovery codes with codes.
func replaceRecoveryCodes(tx *bolt.Tx, user uint64, codes []tokenHash) error {
	b := tx.Bucket(bucketRecoveryCodes)
	if err := deleteKeys(b, keysWithPrefix(b, itob(user))); err != nil {
		return err
	}
	for _, h := range codes {
		if err := b.Put(append(itob(user), h[:]...), nil); err != nil {
			return err
		}
	}
	return nil
}

// dropRecoveryIfBare deletes user's recovery codes when they hold no
// factor any more.
func dropRecoveryIfBare(tx *bolt.Tx, user uint64) error {
	if secondFactorsOf(tx, user).any() {
		return nil
	}
	return replaceRecoveryCodes(tx, user, nil)
}

// deleteSecondFactors deletes everything user holds beside the password.
func deleteSecondFactors(tx *bolt.Tx, user uint64) error {
	if err := tx.Bucket(bucketTOTP).Delete(itob(user)); err != nil {
		return err
	}
	if err := replaceRecoveryCodes(tx, user, nil); err != nil {
		return err
	}
	byUser := tx.Bucket(bucketPasskeysByUser)
	keys := keysWithPrefix(byUser, itob(user))
	for _, k := range keys {
		if err := deletePasskey(tx, btoi(k[8:])); err != nil {
			return err
		}
	}
	return deleteKeys(byUser, keys)
}

// SecondFactors returns what user holds; errNotFound for an unknown user.
func (s *boltStore) SecondFactors(user uint64) (secondFactors, error) {
	var f secondFactors
	err := s.db.View(func(tx *bolt.Tx) error {
		if err := userExists(tx, user); err != nil {
			return err
		}
		f = secondFactorsOf(tx, user)
		return nil
	})
	return f, err
}

// EnrolTOTP stores t as user's TOTP secret and, when recovery is not nil,
// replaces their recovery codes; errTOTPEnrolled when they hold one,
// errNotFound for an unknown user.
func (s *boltStore) EnrolTOTP(by actor, user uint64, t totpRecord, recovery []tokenHash) error {
	return s.update(func(tx *bolt.Tx) error {
		if err := userExists(tx, user); err != nil {
			return err
		}
		if err := s.roomToCreate(tx); err != nil {
			return err
		}
		b := tx.Bucket(bucketTOTP)
		if b.Get(itob(user)) != nil {
			return errTOTPEnrolled
		}
		if err := putJSON(b, itob(user), &t); err != nil {
			return err
		}
		if recovery != nil {
			if err := replaceRecoveryCodes(tx, user, recovery); err != nil {
				return err
			}
		}
		return appendSessionEvent(tx, tfaEnrolledEvent(by, recovery), user)
	})
}

// TOTPOf returns user's TOTP secret; errNotFound when they hold none.
func (s *boltStore) TOTPOf(user uint64) (totpRecord, error) {
	var t totpRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(bucketTOTP), itob(user), &t)
	})
	return t, err
}

// UseTOTPStep records step as used by user if it is later than the last
// one; errStepUsed if not, errNotFound when they hold no TOTP secret.
func (s *boltStore) UseTOTPStep(user uint64, step int64) error {
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTOTP)
		var t totpRecord
		if err := getJSON(b, itob(user), &t); err != nil {
			return err
		}
		if step <= t.LastStep {
			return errStepUsed
		}
		t.LastStep = step
		return putJSON(b, itob(user), &t)
	})
}

// RemoveTOTP deletes user's TOTP secret, and their recovery codes if no
// passkey remains; errNotFound when they hold none.
func (s *boltStore) RemoveTOTP(by actor, user uint64) error {
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTOTP)
		if b.Get(itob(user)) == nil {
			return errNotFound
		}
		if err := b.Delete(itob(user)); err != nil {
			return err
		}
		if err := dropRecoveryIfBare(tx, user); err != nil {
			return err
		}
		return appendSessionEvent(tx, newAuditEvent(by, kindTFARemoved).withDetail("authenticator app"), user)
	})
}

// UseRecoveryCode deletes user's unused recovery code h and returns how
// many are left; errNotFound when there is none such.
func (s *boltStore) UseRecoveryCode(by actor, user uint64, h tokenHash) (int, error) {
	left := 0
	err := s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecoveryCodes)
		k := append(itob(user), h[:]...)
		if b.Get(k) == nil {
			return errNotFound
		}
		if err := b.Delete(k); err != nil {
			return err
		}
		left = len(keysWithPrefix(b, itob(user)))
		return appendSessionEvent(tx, newAuditEvent(by, kindRecoveryUsed).withDetail("%d left", left), user)
	})
	return left, err
}

// ReplaceRecoveryCodes replaces user's recovery codes; errNotFound for an
// unknown user or one with no second factor.
func (s *boltStore) ReplaceRecoveryCodes(by actor, user uint64, codes []tokenHash) error {
	return s.update(func(tx *bolt.Tx) error {
		if err := userExists(tx, user); err != nil {
			return err
		}
		if !secondFactorsOf(tx, user).any() {
			return errNotFound
		}
		if err := replaceRecoveryCodes(tx, user, codes); err != nil {
			return err
		}
		return appendSessionEvent(tx, newAuditEvent(by, kindRecoveryRegenerated), user)
	})
}

// passkeysOf returns user's passkeys in order of creation (of ids).
func passkeysOf(tx *bolt.Tx, user uint64) ([]passkeyRecord, error) {
	var out []passkeyRecord
	keys := tx.Bucket(bucketPasskeys)
	for _, k := range keysWithPrefix(tx.Bucket(bucketPasskeysByUser), itob(user)) {
		var p passkeyRecord
		if err := getJSON(keys, k[8:], &p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// passkeyNameTaken reports whether user gave name to a passkey other than
// except.
func passkeyNameTaken(keys []passkeyRecord, name string, except uint64) bool {
	for _, p := range keys {
		if p.ID != except && strings.EqualFold(p.Name, name) {
			return true
		}
	}
	return false
}

// deletePasskey deletes passkey id and its credential entry (not its
// passkeys_by_user entry).
func deletePasskey(tx *bolt.Tx, id uint64) error {
	b := tx.Bucket(bucketPasskeys)
	var p passkeyRecord
	if err := getJSON(b, itob(id), &p); err != nil {
		return err
	}
	if err := tx.Bucket(bucketPasskeysByCredential).Delete(p.CredentialID); err != nil {
		return err
	}
	return b.Delete(itob(id))
}

// AddPasskey stores p, setting p.ID, and, when recovery is not nil,
// replaces the user's recovery codes; errNotFound for an unknown user,
// errPasskeyTaken, errNameTaken, errTooManyPasskeys.
func (s *boltStore) AddPasskey(by actor, p *passkeyRecord, recovery []tokenHash) error {
	return s.update(func(tx *bolt.Tx) error {
		if err := userExists(tx, p.User); err != nil {
			return err
		}
		if err := s.roomToCreate(tx); err != nil {
			return err
		}
		if len(p.CredentialID) == 0 {
			return fmt.Errorf("passkey without a credential id")
		}
		byCred := tx.Bucket(bucketPasskeysByCredential)
		if byCred.Get(p.CredentialID) != nil {
			return errPasskeyTaken
		}
		existing, err := passkeysOf(tx, p.User)
		if err != nil {
			return err
		}
		if len(existing) >= maxPasskeysPerUser {
			return errTooManyPasskeys
		}
		if passkeyNameTaken(existing, p.Name, 0) {
			return errNameTaken
		}
		b := tx.Bucket(bucketPasskeys)
		id, err := b.NextSequence()
		if err != nil {
			return err
		}
		rec := *p
		rec.ID = id
		if err := putJSON(b, itob(id), &rec); err != nil {
			return err
		}
		if err := byCred.Put(rec.CredentialID, itob(id)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketPasskeysByUser).Put(pairKey(rec.User, id), nil); err != nil {
			return err
		}
		if recovery != nil {
			if err := replaceRecoveryCodes(tx, rec.User, recovery); err != nil {
				return err
			}
		}
		p.ID = id
		return appendSessionEvent(tx, newAuditEvent(by, kindPasskeyAdded).withDetail("%s", rec.Name), rec.User)
	})
}

// PasskeysOf returns user's passkeys in order of creation; errNotFound for
// an unknown user.
func (s *boltStore) PasskeysOf(user uint64) ([]passkeyRecord, error) {
	var out []passkeyRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		if err := userExists(tx, user); err != nil {
			return err
		}
		var err error
		out, err = passkeysOf(tx, user)
		return err
	})
	return out, err
}

// PasskeyByCredentialID returns the passkey with this credential id and
// its user; errNotFound when there is none.
func (s *boltStore) PasskeyByCredentialID(credentialID []byte) (passkeyRecord, userRecord, error) {
	var p passkeyRecord
	var u userRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		if len(credentialID) == 0 {
			return errNotFound
		}
		id := tx.Bucket(bucketPasskeysByCredential).Get(credentialID)
		if id == nil {
			return errNotFound
		}
		if err := getJSON(tx.Bucket(bucketPasskeys), id, &p); err != nil {
			return err
		}
		return getJSON(tx.Bucket(bucketUsers), itob(p.User), &u)
	})
	return p, u, err
}

// updatePasskey applies change to user's passkey id; errNotFound when
// there is none such.
func (s *boltStore) updatePasskey(user, id uint64, change func(tx *bolt.Tx, p *passkeyRecord) error) error {
	return s.update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPasskeys)
		var p passkeyRecord
		if err := getJSON(b, itob(id), &p); err != nil {
			return err
		}
		if p.User != user {
			return errNotFound
		}
		if err := change(tx, &p); err != nil {
			return err
		}
		return putJSON(b, itob(id), &p)
	})
}

// UpdatePasskeyUse replaces the Credential of user's passkey id and sets
// its LastUsedAt; errNotFound when there is none such.
func (s *boltStore) UpdatePasskeyUse(user, id uint64, credential []byte, now time.Time) error {
	return s.updatePasskey(user, id, func(_ *bolt.Tx, p *passkeyRecord) error {
		p.Credential = credential
		p.LastUsedAt = now
		return nil
	})
}

// RenamePasskey renames user's passkey id; errNotFound, errNameTaken.
func (s *boltStore) RenamePasskey(by actor, user, id uint64, name string) error {
	return s.updatePasskey(user, id, func(tx *bolt.Tx, p *passkeyRecord) error {
		keys, err := passkeysOf(tx, user)
		if err != nil {
			return err
		}
		if passkeyNameTaken(keys, name, id) {
			return errNameTaken
		}
		p.Name = name
		return nil
	})
}

// DeletePasskey deletes user's passkey id, and their recovery codes if no
// factor remains; errNotFound when there is none such.
func (s *boltStore) DeletePasskey(by actor, user, id uint64) error {
	return s.update(func(tx *bolt.Tx) error {
		byUser := tx.Bucket(bucketPasskeysByUser)
		if byUser.Get(pairKey(user, id)) == nil {
			return errNotFound
		}
		var p passkeyRecord
		if err := getJSON(tx.Bucket(bucketPasskeys), itob(id), &p); err != nil {
			return err
		}
		if err := deletePasskey(tx, id); err != nil {
			return err
		}
		if err := byUser.Delete(pairKey(user, id)); err != nil {
			return err
		}
		if err := dropRecoveryIfBare(tx, user); err != nil {
			return err
		}
		return appendSessionEvent(tx, newAuditEvent(by, kindPasskeyRemoved).withDetail("%s", p.Name), user)
	})
}

// ResetSecondFactors deletes everything user holds beside the password
// and ends their sessions; errNotFound for an unknown user.
func (s *boltStore) ResetSecondFactors(by actor, user uint64) (int, error) {
	n := 0
	err := s.update(func(tx *bolt.Tx) error {
		if err := userExists(tx, user); err != nil {
			return err
		}
		if err := deleteSecondFactors(tx, user); err != nil {
			return err
		}
		var err error
		if n, err = deleteSessionsExcept(tx, user, sessionHash{}); err != nil {
			return err
		}
		return appendSessionEvent(tx, newAuditEvent(by, kindTFAReset).withDetail("%s ended", plural(n, "session")), user)
	})
	return n, err
}

// checkSecondFactors reports second factors of missing users and passkey
// index entries that do not match their passkeys, for Check.
func checkSecondFactors(tx *bolt.Tx, bad func(string, ...any)) {
	users := tx.Bucket(bucketUsers)
	tx.Bucket(bucketTOTP).ForEach(func(k, _ []byte) error {
		if users.Get(k) == nil {
			bad("TOTP secret of missing user %d", btoi(k))
		}
		return nil
	})
	tx.Bucket(bucketRecoveryCodes).ForEach(func(k, _ []byte) error {
		if len(k) != 8+len(tokenHash{}) || users.Get(k[:8]) == nil {
			bad("recovery code %x of no user", k[:min(len(k), 8)])
		}
		return nil
	})
	keys, byCred, byUser := tx.Bucket(bucketPasskeys), tx.Bucket(bucketPasskeysByCredential), tx.Bucket(bucketPasskeysByUser)
	keys.ForEach(func(k, v []byte) error {
		var p passkeyRecord
		if err := json.Unmarshal(v, &p); err != nil {
			bad("passkey %d: %v", btoi(k), err)
			return nil
		}
		if users.Get(itob(p.User)) == nil {
			bad("passkey %d belongs to missing user %d", p.ID, p.User)
		}
		if id := byCred.Get(p.CredentialID); id == nil || !bytes.Equal(id, k) {
			bad("passkey %d has no passkeys_by_credential entry", p.ID)
		}
		if byUser.Get(pairKey(p.User, p.ID)) == nil {
			bad("passkey %d has no passkeys_by_user entry", p.ID)
		}
		return nil
	})
	byCred.ForEach(func(k, v []byte) error {
		if len(v) != 8 || keys.Get(v) == nil {
			bad("passkeys_by_credential %x points at no passkey", k[:min(len(k), 4)])
		}
		return nil
	})
	byUser.ForEach(func(k, _ []byte) error {
		if len(k) != 16 || keys.Get(k[8:]) == nil {
			bad("passkeys_by_user entry %x points at no passkey", k)
		}
		return nil
	})
}
