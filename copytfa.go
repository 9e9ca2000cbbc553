package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	bolt "go.etcd.io/bbolt"
)

// Second factors in `tokend copy` (copy.go): a user's TOTP secret (still
// sealed: the target deployment takes the same key file), recovery code
// hashes and passkeys move together, with the passkeys' ids.

// secondFactorsCopy is what one user holds beside the password.
type secondFactorsCopy struct {
	User     uint64
	TOTP     *totpRecord
	Recovery []tokenHash
	Passkeys []passkeyRecord
}

// count adds what f holds to c.
func (f *secondFactorsCopy) count(c *copyCounts) {
	if f.TOTP != nil {
		c.TOTP++
	}
	c.Passkeys += len(f.Passkeys)
	c.Recovery += len(f.Recovery)
}

func (r *copyRecorder) ImportSecondFactors(list []secondFactorsCopy) error {
	if err := r.importer.ImportSecondFactors(list); err != nil {
		return fmt.Errorf("write second factors: %w", err)
	}
	for i := range list {
		list[i].count(&r.counts)
	}
	return nil
}

// ---- bbolt ----

// exportSecondFactors hands every user's second factors to to.
func exportSecondFactors(ctx context.Context, tx *bolt.Tx, batch int, to importer) error {
	out := &batcher[secondFactorsCopy]{ctx: ctx, size: batch, out: to.ImportSecondFactors}
	err := tx.Bucket(bucketUsers).ForEach(func(k, _ []byte) error {
		user := btoi(k)
		f := secondFactorsCopy{User: user}
		var t totpRecord
		switch err := getJSON(tx.Bucket(bucketTOTP), k, &t); {
		case err == nil:
			f.TOTP = &t
		case err != errNotFound:
			return err
		}
		for _, rk := range keysWithPrefix(tx.Bucket(bucketRecoveryCodes), k) {
			f.Recovery = append(f.Recovery, tokenHash(rk[8:]))
		}
		var err error
		if f.Passkeys, err = passkeysOf(tx, user); err != nil {
			return err
		}
		if f.TOTP == nil && len(f.Recovery) == 0 && len(f.Passkeys) == 0 {
			return nil
		}
		return out.add(f)
	})
	if err != nil {
		return err
	}
	return out.flush()
}

// ImportSecondFactors stores users' second factors, passkeys with their
// ids, in one write transaction.
func (s *boltStore) ImportSecondFactors(list []secondFactorsCopy) error {
	return s.update(func(tx *bolt.Tx) error {
		for _, f := range list {
			if err := userExists(tx, f.User); err != nil {
				return fmt.Errorf("second factors of user %d: %w", f.User, err)
			}
			if f.TOTP != nil {
				if err := putJSON(tx.Bucket(bucketTOTP), itob(f.User), f.TOTP); err != nil {
					return err
				}
			}
			if err := replaceRecoveryCodes(tx, f.User, f.Recovery); err != nil {
				return err
			}
			keys, byCred := tx.Bucket(bucketPasskeys), tx.Bucket(bucketPasskeysByCredential)
			for _, p := range f.Passkeys {
				if p.ID == 0 || keys.Get(itob(p.ID)) != nil || byCred.Get(p.CredentialID) != nil {
					return fmt.Errorf("passkey %d: its id or credential id is taken", p.ID)
				}
				p.User = f.User
				if err := putJSON(keys, itob(p.ID), &p); err != nil {
					return err
				}
				if err := byCred.Put(p.CredentialID, itob(p.ID)); err != nil {
					return err
				}
				if err := tx.Bucket(bucketPasskeysByUser).Put(pairKey(f.User, p.ID), nil); err != nil {
					return err
				}
				if p.ID > keys.Sequence() {
					if err := keys.SetSequence(p.ID); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
}

// countSecondFactors counts the TOTP secrets, passkeys and recovery codes
// of a bbolt database.
func countSecondFactors(tx *bolt.Tx, c *copyCounts) {
	c.TOTP = tx.Bucket(bucketTOTP).Stats().KeyN
	c.Passkeys = tx.Bucket(bucketPasskeys).Stats().KeyN
	c.Recovery = tx.Bucket(bucketRecoveryCodes).Stats().KeyN
}

// ---- PostgreSQL ----

// pgExportSecondFactors hands every user's second factors to to, from tx.
func pgExportSecondFactors(ctx context.Context, tx pgx.Tx, batch int, to importer) error {
	byUser := map[uint64]*secondFactorsCopy{}
	var order []uint64
	of := func(user uint64) *secondFactorsCopy {
		f := byUser[user]
		if f == nil {
			f = &secondFactorsCopy{User: user}
			byUser[user] = f
			order = append(order, user)
		}
		return f
	}
	err := pgEach(ctx, tx, "SELECT user_id, sealed, last_step, created_at FROM totp_secrets ORDER BY user_id", func(r pgx.Rows) error {
		var user, created int64
		var t totpRecord
		if err := r.Scan(&user, &t.Sealed, &t.LastStep, &created); err != nil {
			return err
		}
		t.CreatedAt = nanoTime(created)
		of(uint64(user)).TOTP = &t
		return nil
	})
	if err != nil {
		return err
	}
	err = pgEach(ctx, tx, "SELECT user_id, hash FROM recovery_codes ORDER BY user_id", func(r pgx.Rows) error {
		var user int64
		var b []byte
		if err := r.Scan(&user, &b); err != nil {
			return err
		}
		h, err := hashOf(b)
		if err != nil {
			return err
		}
		f := of(uint64(user))
		f.Recovery = append(f.Recovery, h)
		return nil
	})
	if err != nil {
		return err
	}
	err = pgEach(ctx, tx, "SELECT "+pgPasskeyColumns+" FROM passkeys p ORDER BY p.id", func(r pgx.Rows) error {
		p, err := scanPasskey(r)
		if err != nil {
			return err
		}
		f := of(p.User)
		f.Passkeys = append(f.Passkeys, p)
		return nil
	})
	if err != nil {
		return err
	}
	out := &batcher[secondFactorsCopy]{ctx: ctx, size: batch, out: to.ImportSecondFactors}
	for _, user := range order {
		if err := out.add(*byUser[user]); err != nil {
			return err
		}
	}
	return out.flush()
}

// ImportSecondFactors stores users' second factors, passkeys with their
// ids, and moves the passkeys' id sequence past them.
func (p *pgImport) ImportSecondFactors(list []secondFactorsCopy) error {
	var totp, recovery, passkeys [][]any
	for _, f := range list {
		user, err := pgID("user", f.User)
		if err != nil {
			return err
		}
		if f.TOTP != nil {
			totp = append(totp, []any{user, f.TOTP.Sealed, f.TOTP.LastStep, unixNano(f.TOTP.CreatedAt)})
		}
		for _, h := range f.Recovery {
			recovery = append(recovery, []any{user, h[:]})
		}
		for _, k := range f.Passkeys {
			id, err := pgID("passkey", k.ID)
			if err != nil {
				return err
			}
			var used *int64
			if !k.LastUsedAt.IsZero() {
				n := unixNano(k.LastUsedAt)
				used = &n
			}
			passkeys = append(passkeys, []any{id, user, k.CredentialID, nonNil(k.Credential), k.Name, strings.ToLower(k.Name), unixNano(k.CreatedAt), used})
		}
	}
	if err := p.copyRows("totp_secrets", []string{"user_id", "sealed", "last_step", "created_at"}, totp); err != nil {
		return err
	}
	if err := p.copyRows("recovery_codes", []string{"user_id", "hash"}, recovery); err != nil {
		return err
	}
	if err := p.copyRows("passkeys", []string{"id", "user_id", "credential_id", "credential", "name", "name_key", "created_at", "last_used_at"}, passkeys); err != nil {
		return err
	}
	if len(passkeys) == 0 {
		return nil
	}
	_, err := p.tx.Exec(p.ctx, "SELECT setval(pg_get_serial_sequence('passkeys', 'id'), (SELECT max(id) FROM passkeys))")
	return err
}
