package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The security log on PostgreSQL (migrations/0005_audit.sql): events in
// audit_events, the head of the chain in the one row of audit_head, which
// every append locks FOR UPDATE as the last thing its transaction does, so
// that appends of several instances take their seqs one after another and
// commit in that order.

// pgAuditColumns are the columns of audit_events, in scanAuditEvent's order.
const pgAuditColumns = "seq, at, kind, outcome, actor_id, actor, subject_id, subject, token_id, token_hint, client, grant_id, addr, agent, via, detail, prev, hash"

// appendPGEvents chains evs after the head and inserts them, in tx. The
// caller calls it last, after its other locks: the head row is held until
// the commit.
func appendPGEvents(ctx context.Context, tx pgx.Tx, evs ...auditEvent) error {
	if len(evs) == 0 {
		return nil
	}
	var seq, atNano int64
	var prev string
	if err := tx.QueryRow(ctx, "SELECT seq, hash, at FROM audit_head FOR UPDATE").Scan(&seq, &prev, &atNano); err != nil {
		return fmt.Errorf("lock the head of the security log: %w", err)
	}
	at := time.Time{}
	if atNano != 0 {
		at = nanoTime(atNano)
	}
	for i := range evs {
		e := &evs[i]
		e.chain(uint64(seq), prev, at)
		_, err := tx.Exec(ctx, "INSERT INTO audit_events ("+pgAuditColumns+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)`,
			idParam(e.Seq), unixNano(e.Time), e.Kind, e.Outcome, idParam(e.ActorID), e.Actor, idParam(e.SubjectID), e.Subject,
			idParam(e.TokenID), e.TokenHint, e.Client, idParam(e.GrantID), e.Addr, e.Agent, e.Via, e.Detail, e.Prev, e.Hash)
		if err != nil {
			return fmt.Errorf("append to the security log: %w", err)
		}
		seq, prev, at = int64(e.Seq), e.Hash, e.Time
	}
	_, err := tx.Exec(ctx, "UPDATE audit_head SET seq = $1, hash = $2, at = $3", seq, prev, unixNano(at))
	return err
}

// appendEventsTx chains and appends evs in tx, for a write whose
// transaction is not one of this engine's methods (see appendPGEvents:
// call it last).
func (s *pgStore) appendEventsTx(ctx context.Context, tx pgx.Tx, evs ...auditEvent) error {
	return appendPGEvents(ctx, tx, evs...)
}

// pgUserOf returns user id as an event names them: the stored record, or
// the id alone when the user is gone.
func pgUserOf(ctx context.Context, tx pgx.Tx, id uint64) (userRecord, error) {
	u, err := scanUser(tx.QueryRow(ctx, "SELECT "+pgUserColumns+" FROM users u WHERE u.id = $1", idParam(id)))
	if errors.Is(err, pgx.ErrNoRows) {
		return userRecord{ID: id}, nil
	}
	return u, err
}

// appendPGAbout appends e about user id.
func appendPGAbout(ctx context.Context, tx pgx.Tx, e auditEvent, id uint64) error {
	u, err := pgUserOf(ctx, tx, id)
	if err != nil {
		return err
	}
	return appendPGEvents(ctx, tx, e.about(u))
}

// appendPGToken appends e about token t, its subject t's owner.
func appendPGToken(ctx context.Context, tx pgx.Tx, e auditEvent, t tokenRecord) error {
	return appendPGAbout(ctx, tx, e.ofToken(t), t.Owner)
}

// appendPGGrantEvent appends grant.created for g, made by its user through
// by (the client's request).
func appendPGGrantEvent(ctx context.Context, tx pgx.Tx, by actor, g grantRecord) error {
	return appendPGAbout(ctx, tx, newAuditEvent(by, kindGrantCreated).ofGrant(g).withDetail("%s", strings.Join(g.Scopes, " ")), g.User)
}

// revokeReusedPGGrant revokes grant id, whose code or refresh token was
// used a second time, and records grant.reused; nothing when it is gone
// already.
func revokeReusedPGGrant(ctx context.Context, tx pgx.Tx, by actor, id int64, c *pgChanges) error {
	g, err := scanGrant(tx.QueryRow(ctx, "SELECT "+pgGrantColumns+" FROM grants g WHERE g.id = $1 FOR UPDATE", id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := deletePGGrants(ctx, tx, []int64{id}, c); err != nil {
		return err
	}
	return appendPGAbout(ctx, tx, newAuditEvent(by, kindGrantReused).ofGrant(g), g.User)
}

// pgSigninEvents returns the events of u signing in as by, recording by's
// address as seen: signin.new_address when u signed in before, never from
// there. The caller holds u's row.
func pgSigninEvents(ctx context.Context, tx pgx.Tx, by actor, u userRecord) ([]auditEvent, error) {
	evs := []auditEvent{newAuditEvent(by, kindSigninSucceeded).about(u)}
	if by.Addr == "" {
		return evs, nil
	}
	var before, inserted bool
	err := tx.QueryRow(ctx, `WITH b AS (SELECT EXISTS (SELECT 1 FROM audit_seen WHERE user_id = $1) AS before),
			i AS (INSERT INTO audit_seen (user_id, addr) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true)
		SELECT (SELECT before FROM b), EXISTS (SELECT FROM i)`, idParam(u.ID), by.Addr).Scan(&before, &inserted)
	if err != nil {
		return nil, err
	}
	if before && inserted {
		evs = append(evs, newAuditEvent(by, kindSigninNewAddr).about(u))
	}
	return evs, nil
}

// RecordEvents appends events that come with no change of their own.
func (s *pgStore) RecordEvents(evs ...auditEvent) error {
	return s.update(func(ctx context.Context, tx pgx.Tx, _ *pgChanges) error {
		return appendPGEvents(ctx, tx, evs...)
	})
}

// AuditHead returns the newest event's Seq and Hash ("" when none).
func (s *pgStore) AuditHead() (uint64, string, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	var seq int64
	var hash string
	err := s.pool.QueryRow(ctx, "SELECT seq, hash FROM audit_head").Scan(&seq, &hash)
	return uint64(seq), hash, pgError(err)
}

// AuditAnchor returns the Hash of the last event purged ("" when none).
func (s *pgStore) AuditAnchor() (string, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	var anchor string
	err := s.pool.QueryRow(ctx, "SELECT anchor FROM audit_head").Scan(&anchor)
	return anchor, pgError(err)
}

// scanAuditEvent reads the columns of pgAuditColumns.
func scanAuditEvent(r scanner) (auditEvent, error) {
	var e auditEvent
	var seq, at, actorID, subjectID, tokenID, grantID int64
	err := r.Scan(&seq, &at, &e.Kind, &e.Outcome, &actorID, &e.Actor, &subjectID, &e.Subject, &tokenID, &e.TokenHint,
		&e.Client, &grantID, &e.Addr, &e.Agent, &e.Via, &e.Detail, &e.Prev, &e.Hash)
	e.Seq, e.Time = uint64(seq), nanoTime(at)
	e.ActorID, e.SubjectID, e.TokenID, e.GrantID = uint64(actorID), uint64(subjectID), uint64(tokenID), uint64(grantID)
	return e, err
}

// AuditEvents returns the events q selects: newest first, or oldest first
// with q.After or q.Oldest. A user's events are read through the actor and
// subject indexes, each up to the limit, so that the cost follows what is
// returned.
func (s *pgStore) AuditEvents(q auditQuery) ([]auditEvent, error) {
	limit := q.Limit
	if limit <= 0 || limit > maxAuditPage {
		limit = maxAuditPage
	}
	forward := q.After > 0 || q.Oldest
	order := "DESC"
	if forward {
		order = "ASC"
	}
	args := []any{limit}
	var conds []string
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if len(q.Kinds) > 0 {
		conds = append(conds, "kind = ANY("+arg(q.Kinds)+")")
	}
	if !q.Since.IsZero() {
		conds = append(conds, "at >= "+arg(unixNano(q.Since)))
	}
	if !q.Until.IsZero() {
		conds = append(conds, "at < "+arg(unixNano(q.Until)))
	}
	if q.After > 0 {
		conds = append(conds, "seq > "+arg(idParam(q.After)))
	}
	if q.Before > 0 {
		conds = append(conds, "seq < "+arg(idParam(q.Before)))
	}
	where := func(extra ...string) string {
		all := append(append([]string{}, conds...), extra...)
		if len(all) == 0 {
			return ""
		}
		return " WHERE " + strings.Join(all, " AND ")
	}
	sql := "SELECT " + pgAuditColumns + " FROM audit_events" + where() + " ORDER BY seq " + order + " LIMIT $1"
	if q.User != 0 {
		u := arg(idParam(q.User))
		sql = "SELECT " + pgAuditColumns + " FROM (" +
			"(SELECT * FROM audit_events" + where("actor_id = "+u) + " ORDER BY seq " + order + " LIMIT $1) UNION " +
			"(SELECT * FROM audit_events" + where("subject_id = "+u) + " ORDER BY seq " + order + " LIMIT $1)" +
			") AS e ORDER BY seq " + order + " LIMIT $1"
	}
	ctx, cancel := s.opContext()
	defer cancel()
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, pgError(err)
	}
	out := []auditEvent{}
	for rows.Next() {
		e, err := scanAuditEvent(rows)
		if err != nil {
			rows.Close()
			return nil, pgError(err)
		}
		out = append(out, e)
	}
	return out, pgError(rows.Err())
}

// PurgeAudit deletes events older than before, oldest first, at most batch
// a transaction, until none is left or ctx ends, keeping in the head row
// the hash of the last one deleted as the anchor.
func (s *pgStore) PurgeAudit(ctx context.Context, before time.Time, batch int) (int, error) {
	deleted := 0
	for ctx.Err() == nil {
		n := 0
		err := s.update(func(opCtx context.Context, tx pgx.Tx, _ *pgChanges) error {
			var last *int64
			var anchor *string
			err := tx.QueryRow(opCtx, `WITH d AS (
					DELETE FROM audit_events WHERE seq IN (
						SELECT seq FROM audit_events WHERE at < $1 ORDER BY seq LIMIT $2)
					RETURNING seq, hash)
				SELECT count(*), max(seq), (SELECT hash FROM d ORDER BY seq DESC LIMIT 1) FROM d`,
				unixNano(before), batch).Scan(&n, &last, &anchor)
			if err != nil || n == 0 {
				return err
			}
			_, err = tx.Exec(opCtx, "UPDATE audit_head SET anchor = $1", *anchor)
			return err
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

// checkAudit reports a head that is not the newest event.
func (s *pgStore) checkAudit(ctx context.Context, bad func(format string, args ...any)) error {
	var headSeq, maxSeq int64
	var headHash, maxHash string
	err := s.pool.QueryRow(ctx, `SELECT h.seq, h.hash, coalesce(e.seq, 0), coalesce(e.hash, '')
		FROM audit_head h LEFT JOIN LATERAL (SELECT seq, hash FROM audit_events ORDER BY seq DESC LIMIT 1) e ON true`).
		Scan(&headSeq, &headHash, &maxSeq, &maxHash)
	if err != nil {
		return err
	}
	if maxSeq != 0 && (headSeq != maxSeq || headHash != maxHash) {
		bad("the head of the security log (event %d) is not its newest event (%d)", headSeq, maxSeq)
	}
	return nil
}
