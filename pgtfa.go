package main

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Second factors in the PostgreSQL engine (see tfastore.go and
// migrations/0007_second_factors.sql). A write that depends on what else
// the user holds (the passkey limit, recovery codes going with the last
// factor, the reset) locks the user's row first, so that the user's
// second-factor writes run one after another and none races the user's
// removal.

// pgSecondFactors counts what user holds; errNotFound for an unknown user.
func pgSecondFactors(ctx context.Context, q pgQuerier, user uint64) (secondFactors, error) {
	var f secondFactors
	var totp int
	err := q.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM totp_secrets WHERE user_id = u.id),
			(SELECT count(*) FROM passkeys WHERE user_id = u.id),
			(SELECT count(*) FROM recovery_codes WHERE user_id = u.id)
		FROM users u WHERE u.id = $1`, idParam(user)).Scan(&totp, &f.Passkeys, &f.RecoveryLeft)
	f.TOTP = totp > 0
	return f, notFound(err)
}

// pgReplaceRecoveryCodes replaces user's recovery codes with codes.
func pgReplaceRecoveryCodes(ctx context.Context, tx pgx.Tx, user uint64, codes []tokenHash) error {
	if _, err := tx.Exec(ctx, "DELETE FROM recovery_codes WHERE user_id = $1", idParam(user)); err != nil {
		return err
	}
	if len(codes) == 0 {
		return nil
	}
	hashes := make([][]byte, len(codes))
	for i := range codes {
		hashes[i] = codes[i][:]
	}
	_, err := tx.Exec(ctx, "INSERT INTO recovery_codes (user_id, hash) SELECT $1, h FROM unnest($2::bytea[]) AS h", idParam(user), hashes)
	return err
}

// pgDropRecoveryIfBare deletes user's recovery codes when they hold no
// factor any more.
func pgDropRecoveryIfBare(ctx context.Context, tx pgx.Tx, user uint64) error {
	_, err := tx.Exec(ctx, `DELETE FROM recovery_codes WHERE user_id = $1
		AND NOT EXISTS (SELECT FROM totp_secrets WHERE user_id = $1)
		AND NOT EXISTS (SELECT FROM passkeys WHERE user_id = $1)`, idParam(user))
	return err
}

// SecondFactors returns what user holds; errNotFound for an unknown user.
func (s *pgStore) SecondFactors(user uint64) (secondFactors, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	f, err := pgSecondFactors(ctx, s.pool, user)
	return f, pgError(err)
}

// EnrolTOTP stores t as user's TOTP secret and, when recovery is not nil,
// replaces their recovery codes; errTOTPEnrolled, errNotFound.
func (s *pgStore) EnrolTOTP(by actor, user uint64, t totpRecord, recovery []tokenHash) error {
	return s.update(func(ctx context.Context, tx pgx.Tx, _ *pgChanges) error {
		u, err := lockPGUser(ctx, tx, user)
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `INSERT INTO totp_secrets (user_id, sealed, last_step, created_at)
			VALUES ($1, $2, $3, $4) ON CONFLICT (user_id) DO NOTHING`,
			idParam(user), t.Sealed, t.LastStep, unixNano(t.CreatedAt))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return errTOTPEnrolled
		}
		if recovery != nil {
			if err := pgReplaceRecoveryCodes(ctx, tx, user, recovery); err != nil {
				return err
			}
		}
		return appendPGEvents(ctx, tx, tfaEnrolledEvent(by, recovery).about(u))
	})
}

// TOTPOf returns user's TOTP secret; errNotFound when they hold none.
func (s *pgStore) TOTPOf(user uint64) (totpRecord, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	var t totpRecord
	var created int64
	err := s.pool.QueryRow(ctx, "SELECT sealed, last_step, created_at FROM totp_secrets WHERE user_id = $1", idParam(user)).
		Scan(&t.Sealed, &t.LastStep, &created)
	t.CreatedAt = nanoTime(created)
	return t, pgError(notFound(err))
}

// UseTOTPStep records step as used by user if it is later than the last
// one, in one statement (of two at once, the row lock lets one through);
// errStepUsed if not, errNotFound when they hold no TOTP secret.
func (s *pgStore) UseTOTPStep(user uint64, step int64) error {
	ctx, cancel := s.opContext()
	defer cancel()
	var used, found bool
	err := s.pool.QueryRow(ctx, `WITH u AS (
			UPDATE totp_secrets SET last_step = $2 WHERE user_id = $1 AND last_step < $2 RETURNING true)
		SELECT EXISTS (SELECT FROM u), EXISTS (SELECT FROM totp_secrets WHERE user_id = $1)`,
		idParam(user), step).Scan(&used, &found)
	switch {
	case err != nil:
		return pgError(err)
	case used:
		return nil
	case !found:
		return errNotFound
	}
	return errStepUsed
}

// RemoveTOTP deletes user's TOTP secret, and their recovery codes if no
// passkey remains; errNotFound when they hold none.
func (s *pgStore) RemoveTOTP(by actor, user uint64) error {
	return s.update(func(ctx context.Context, tx pgx.Tx, _ *pgChanges) error {
		u, err := lockPGUser(ctx, tx, user)
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, "DELETE FROM totp_secrets WHERE user_id = $1", idParam(user))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return errNotFound
		}
		if err := pgDropRecoveryIfBare(ctx, tx, user); err != nil {
			return err
		}
		return appendPGEvents(ctx, tx, newAuditEvent(by, kindTFARemoved).about(u).withDetail("authenticator app"))
	})
}

// UseRecoveryCode deletes user's unused recovery code h and returns how
// many are left; errNotFound when there is none such.
func (s *pgStore) UseRecoveryCode(by actor, user uint64, h tokenHash) (int, error) {
	left := 0
	err := s.update(func(ctx context.Context, tx pgx.Tx, _ *pgChanges) error {
		u, err := lockPGUser(ctx, tx, user)
		if err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, "DELETE FROM recovery_codes WHERE user_id = $1 AND hash = $2", idParam(user), h[:])
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return errNotFound
		}
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM recovery_codes WHERE user_id = $1", idParam(user)).Scan(&left); err != nil {
			return err
		}
		return appendPGEvents(ctx, tx, newAuditEvent(by, kindRecoveryUsed).about(u).withDetail("%d left", left))
	})
	return left, err
}

// ReplaceRecoveryCodes replaces user's recovery codes; errNotFound for an
// unknown user or one with no second factor.
func (s *pgStore) ReplaceRecoveryCodes(by actor, user uint64, codes []tokenHash) error {
	return s.update(func(ctx context.Context, tx pgx.Tx, _ *pgChanges) error {
		u, err := lockPGUser(ctx, tx, user)
		if err != nil {
			return err
		}
		f, err := pgSecondFactors(ctx, tx, user)
		if err != nil {
			return err
		}
		if !f.any() {
			return errNotFound
		}
		if err := pgReplaceRecoveryCodes(ctx, tx, user, codes); err != nil {
			return err
		}
		return appendPGEvents(ctx, tx, newAuditEvent(by, kindRecoveryRegenerated).about(u))
	})
}

const pgPasskeyColumns = "p.id, p.user_id, p.credential_id, p.credential, p.name, p.created_at, p.last_used_at"

func scanPasskey(r scanner, extra ...any) (passkeyRecord, error) {
	var p passkeyRecord
	var id, user, created int64
	var used *int64
	dest := append([]any{&id, &user, &p.CredentialID, &p.Credential, &p.Name, &created, &used}, extra...)
	if err := r.Scan(dest...); err != nil {
		return passkeyRecord{}, err
	}
	p.ID, p.User, p.CreatedAt = uint64(id), uint64(user), nanoTime(created)
	if used != nil {
		p.LastUsedAt = nanoTime(*used)
	}
	return p, nil
}

// nonNil returns b, or an empty slice for nil: pgx sends nil as NULL.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// passkeyError turns the constraints of the passkeys table into the
// contract's errors.
func passkeyError(err error) error {
	switch pgConstraint(err) {
	case "passkeys_credential_key":
		return errPasskeyTaken
	case "passkeys_name_key":
		return errNameTaken
	}
	return err
}

// AddPasskey stores p, setting p.ID, and, when recovery is not nil,
// replaces the user's recovery codes; errNotFound, errPasskeyTaken,
// errNameTaken, errTooManyPasskeys.
func (s *pgStore) AddPasskey(by actor, p *passkeyRecord, recovery []tokenHash) error {
	var id int64
	err := s.update(func(ctx context.Context, tx pgx.Tx, _ *pgChanges) error {
		u, err := lockPGUser(ctx, tx, p.User)
		if err != nil {
			return err
		}
		if len(p.CredentialID) == 0 {
			return errors.New("passkey without a credential id")
		}
		var n int
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM passkeys WHERE user_id = $1", idParam(p.User)).Scan(&n); err != nil {
			return err
		}
		if n >= maxPasskeysPerUser {
			return errTooManyPasskeys
		}
		err = tx.QueryRow(ctx, `INSERT INTO passkeys (user_id, credential_id, credential, name, name_key, created_at)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
			idParam(p.User), p.CredentialID, nonNil(p.Credential), p.Name, strings.ToLower(p.Name), unixNano(p.CreatedAt)).Scan(&id)
		if err != nil {
			return passkeyError(err)
		}
		if recovery != nil {
			if err := pgReplaceRecoveryCodes(ctx, tx, p.User, recovery); err != nil {
				return err
			}
		}
		return appendPGEvents(ctx, tx, newAuditEvent(by, kindPasskeyAdded).about(u).withDetail("%s", p.Name))
	})
	if err == nil {
		p.ID = uint64(id)
	}
	return err
}

// PasskeysOf returns user's passkeys in order of creation; errNotFound for
// an unknown user.
func (s *pgStore) PasskeysOf(user uint64) ([]passkeyRecord, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	rows, err := s.pool.Query(ctx, "SELECT "+pgPasskeyColumns+" FROM passkeys p WHERE p.user_id = $1 ORDER BY p.id", idParam(user))
	if err != nil {
		return nil, pgError(err)
	}
	var out []passkeyRecord
	for rows.Next() {
		p, err := scanPasskey(rows)
		if err != nil {
			rows.Close()
			return nil, pgError(err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, pgError(err)
	}
	if len(out) == 0 {
		if _, err := s.UserByID(user); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// PasskeyByCredentialID returns the passkey with this credential id and
// its user; errNotFound when there is none.
func (s *pgStore) PasskeyByCredentialID(credentialID []byte) (passkeyRecord, userRecord, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	var u userRecord
	var uid, ucreated, uchanged int64
	p, err := scanPasskey(s.pool.QueryRow(ctx, "SELECT "+pgPasskeyColumns+`, u.id, u.name, u.password_hash, u.admin, u.created_at, u.password_changed_at
		FROM passkeys p JOIN users u ON u.id = p.user_id WHERE p.credential_id = $1`, credentialID),
		&uid, &u.Name, &u.PasswordHash, &u.Admin, &ucreated, &uchanged)
	if err != nil {
		return passkeyRecord{}, userRecord{}, pgError(notFound(err))
	}
	u.ID, u.CreatedAt, u.PasswordChangedAt = uint64(uid), nanoTime(ucreated), nanoTime(uchanged)
	return p, u, nil
}

// UpdatePasskeyUse replaces the Credential of user's passkey id and sets
// its LastUsedAt; errNotFound when there is none such.
func (s *pgStore) UpdatePasskeyUse(user, id uint64, credential []byte, now time.Time) error {
	return s.execOne("UPDATE passkeys SET credential = $3, last_used_at = $4 WHERE id = $1 AND user_id = $2",
		idParam(id), idParam(user), nonNil(credential), unixNano(now))
}

// RenamePasskey renames user's passkey id; errNotFound, errNameTaken.
func (s *pgStore) RenamePasskey(by actor, user, id uint64, name string) error {
	return passkeyError(s.execOne("UPDATE passkeys SET name = $3, name_key = $4 WHERE id = $1 AND user_id = $2",
		idParam(id), idParam(user), name, strings.ToLower(name)))
}

// DeletePasskey deletes user's passkey id, and their recovery codes if no
// factor remains; errNotFound when there is none such.
func (s *pgStore) DeletePasskey(by actor, user, id uint64) error {
	return s.update(func(ctx context.Context, tx pgx.Tx, _ *pgChanges) error {
		u, err := lockPGUser(ctx, tx, user)
		if err != nil {
			return err
		}
		var name string
		err = tx.QueryRow(ctx, "DELETE FROM passkeys WHERE id = $1 AND user_id = $2 RETURNING name", idParam(id), idParam(user)).Scan(&name)
		if err != nil {
			return notFound(err)
		}
		if err := pgDropRecoveryIfBare(ctx, tx, user); err != nil {
			return err
		}
		return appendPGEvents(ctx, tx, newAuditEvent(by, kindPasskeyRemoved).about(u).withDetail("%s", name))
	})
}

// ResetSecondFactors deletes everything user holds beside the password
// and ends their sessions; errNotFound for an unknown user.
func (s *pgStore) ResetSecondFactors(by actor, user uint64) (int, error) {
	n := 0
	err := s.update(func(ctx context.Context, tx pgx.Tx, _ *pgChanges) error {
		u, err := lockPGUser(ctx, tx, user)
		if err != nil {
			return err
		}
		for _, table := range []string{"totp_secrets", "passkeys", "recovery_codes"} {
			if _, err := tx.Exec(ctx, "DELETE FROM "+table+" WHERE user_id = $1", idParam(user)); err != nil {
				return err
			}
		}
		tag, err := tx.Exec(ctx, "DELETE FROM sessions WHERE user_id = $1", idParam(user))
		if err != nil {
			return err
		}
		n = int(tag.RowsAffected())
		return appendPGEvents(ctx, tx, newAuditEvent(by, kindTFAReset).about(u).withDetail("%s ended", plural(n, "session")))
	})
	return n, err
}
