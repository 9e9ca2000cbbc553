package main

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// The passkey ceremonies under way live in passkey_ceremonies: key (the
// ceremonyKey), expires_at (Unix nanoseconds) and the record as JSON.

// PutPasskeyCeremony stores c under k until c.Expires, after deleting the
// ceremonies expired at now, in one statement; errTooManyCeremonies when
// limit are under way. Instances that put at the same
// moment may each see room for one more: the bound is approximate by as
// many.
func (s *pgStore) PutPasskeyCeremony(k ceremonyKey, c passkeyCeremony, now time.Time, limit int) error {
	rec, err := json.Marshal(c)
	if err != nil {
		return err
	}
	ctx, cancel := s.opContext()
	defer cancel()
	tag, err := s.pool.Exec(ctx, `WITH gone AS (DELETE FROM passkey_ceremonies WHERE expires_at <= $3)
		INSERT INTO passkey_ceremonies (key, expires_at, record)
		SELECT $1, $2, $4 WHERE (SELECT count(*) FROM passkey_ceremonies WHERE expires_at > $3) < $5`,
		k[:], unixNano(c.Expires), unixNano(now), rec, limit)
	if err != nil {
		return pgError(err)
	}
	if tag.RowsAffected() == 0 {
		return errTooManyCeremonies
	}
	return nil
}

// TakePasskeyCeremony deletes the ceremony under k and returns it, in one
// statement, so that of two takes one gets it; errNotFound when there is
// none, or it expired at now.
func (s *pgStore) TakePasskeyCeremony(k ceremonyKey, now time.Time) (passkeyCeremony, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	var expires int64
	var rec []byte
	err := s.pool.QueryRow(ctx, "DELETE FROM passkey_ceremonies WHERE key = $1 RETURNING expires_at, record", k[:]).Scan(&expires, &rec)
	if errors.Is(err, pgx.ErrNoRows) {
		return passkeyCeremony{}, errNotFound
	}
	if err != nil {
		return passkeyCeremony{}, pgError(err)
	}
	var c passkeyCeremony
	if json.Unmarshal(rec, &c) != nil || !nanoTime(expires).After(now) {
		return passkeyCeremony{}, errNotFound
	}
	return c, nil
}
