package main

import (
	"context"
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"
)

// The PostgreSQL engine's webhook outbox and expiry warnings (webhook.go;
// tables in migrations/0006_webhooks.sql). None of these writes changes
// what an auth cache holds, so they send no invalidation.

const pgWebhookColumns = "m.num, m.id, m.seq, m.endpoint, m.type, m.payload, m.created_at, m.state, m.attempts, m.next_attempt, m.last_attempt, m.last_error, m.last_error_at"

// The statements that run at every poll, named so that a test can show
// that each uses an index.
const (
	// SKIP LOCKED: instances claiming at once take different messages.
	pgSQLClaimWebhooks = `UPDATE webhook_messages m SET next_attempt = $2 WHERE m.num = ANY (ARRAY(
			SELECT num FROM webhook_messages WHERE state = 'pending' AND next_attempt <= $1
			ORDER BY next_attempt LIMIT $3 FOR UPDATE SKIP LOCKED))
		RETURNING ` + pgWebhookColumns
	// The tokens to warn of, locked so that none is deleted before its
	// mark is stored; a token another transaction holds is left for the
	// next pass. ON CONFLICT: of two instances marking one token, one
	// stores the mark and records the event.
	pgSQLWarnExpiring = `WITH due AS (
			SELECT t.id FROM tokens t
			WHERE t.expires_at > $1 AND t.expires_at <= $2 AND t.grant_id IS NULL AND t.expires_at - t.created_at > $3
				AND NOT EXISTS (SELECT 1 FROM token_warnings w WHERE w.token_id = t.id AND w.detail = $4)
			ORDER BY t.expires_at LIMIT $5 FOR UPDATE OF t SKIP LOCKED),
		marked AS (
			INSERT INTO token_warnings (token_id, detail) SELECT id, $4 FROM due
			ON CONFLICT DO NOTHING RETURNING token_id)
		SELECT ` + pgTokenColumns + `, u.id, u.name FROM marked
			JOIN tokens t ON t.id = marked.token_id JOIN users u ON u.id = t.owner
		ORDER BY t.expires_at, t.id`
)

func scanWebhookMessage(r scanner) (webhookMessage, error) {
	var m webhookMessage
	var num, seq, created, next int64
	var last, errAt *int64
	var payload []byte
	if err := r.Scan(&num, &m.ID, &seq, &m.Endpoint, &m.Type, &payload, &created, &m.State, &m.Attempts, &next, &last, &m.LastError, &errAt); err != nil {
		return m, err
	}
	m.LastErrorAt = nanoTimePtr(errAt)
	m.Num, m.Seq, m.Payload = uint64(num), uint64(seq), json.RawMessage(payload)
	m.CreatedAt, m.NextAttempt, m.LastAttempt = nanoTime(created), nanoTime(next), nanoTimePtr(last)
	return m, nil
}

// lastAttemptParam is m's last attempt as stored.
func lastAttemptParam(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	n := unixNano(*t)
	return &n
}

// WebhookCursor returns the Seq of the last event dispatched (0: none).
func (s *pgStore) WebhookCursor() (uint64, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	var seq int64
	err := s.pool.QueryRow(ctx, "SELECT seq FROM webhook_cursor").Scan(&seq)
	return uint64(seq), pgError(err)
}

// EnqueueWebhooks stores msgs and moves the cursor from from to to, if it
// is still at from, holding the cursor's row; errWebhookCursorMoved
// otherwise.
func (s *pgStore) EnqueueWebhooks(from, to uint64, msgs []webhookMessage) error {
	ctx, cancel := s.opContext()
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var cur int64
		if err := tx.QueryRow(ctx, "SELECT seq FROM webhook_cursor FOR UPDATE").Scan(&cur); err != nil {
			return err
		}
		if uint64(cur) != from {
			return errWebhookCursorMoved
		}
		for i := range msgs {
			m := &msgs[i]
			var num int64
			err := tx.QueryRow(ctx, `INSERT INTO webhook_messages
				(id, seq, endpoint, type, payload, created_at, state, attempts, next_attempt, last_attempt, last_error, last_error_at)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING num`,
				m.ID, idParam(m.Seq), m.Endpoint, m.Type, []byte(m.Payload), unixNano(m.CreatedAt), m.State, m.Attempts,
				unixNano(m.NextAttempt), lastAttemptParam(m.LastAttempt), m.LastError, lastAttemptParam(m.LastErrorAt)).Scan(&num)
			if err != nil {
				return err
			}
			m.Num = uint64(num)
		}
		_, err := tx.Exec(ctx, "UPDATE webhook_cursor SET seq = $1", idParam(to))
		return err
	})
	return pgError(err)
}

// ClaimWebhooks returns at most limit pending messages due at now,
// earliest due first, and makes them due at until.
func (s *pgStore) ClaimWebhooks(now, until time.Time, limit int) ([]webhookMessage, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	rows, err := s.pool.Query(ctx, pgSQLClaimWebhooks, unixNano(now), unixNano(until), limit)
	if err != nil {
		return nil, pgError(err)
	}
	msgs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (webhookMessage, error) { return scanWebhookMessage(r) })
	return msgs, pgError(err)
}

// FinishWebhook records an attempt at m; errNotFound when m is no longer
// pending at m.Attempts-1 attempts.
func (s *pgStore) FinishWebhook(m webhookMessage) error {
	ctx, cancel := s.opContext()
	defer cancel()
	tag, err := s.pool.Exec(ctx, `UPDATE webhook_messages SET state = $2, attempts = $3, next_attempt = $4, last_attempt = $5, last_error = $6, last_error_at = $7
		WHERE num = $1 AND state = 'pending' AND attempts = $3 - 1`,
		idParam(m.Num), m.State, m.Attempts, unixNano(m.NextAttempt), lastAttemptParam(m.LastAttempt), m.LastError, lastAttemptParam(m.LastErrorAt))
	if err != nil {
		return pgError(err)
	}
	if tag.RowsAffected() == 0 {
		return errNotFound
	}
	return nil
}

// WebhookStatus returns what the outbox holds for each endpoint, summed
// up by the database.
func (s *pgStore) WebhookStatus() ([]webhookEndpointStatus, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	rows, err := s.pool.Query(ctx, `SELECT endpoint,
			count(*) FILTER (WHERE state = 'pending'),
			count(*) FILTER (WHERE state = 'pending' AND last_error_at IS NOT NULL),
			count(*) FILTER (WHERE state = 'failed'),
			count(*) FILTER (WHERE state = 'delivered'),
			min(created_at) FILTER (WHERE state = 'pending'),
			max(last_attempt) FILTER (WHERE state = 'delivered'),
			(array_agg(last_error ORDER BY last_error_at DESC) FILTER (WHERE last_error_at IS NOT NULL))[1],
			max(last_error_at)
		FROM webhook_messages GROUP BY endpoint ORDER BY endpoint`)
	if err != nil {
		return nil, pgError(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (webhookEndpointStatus, error) {
		var st webhookEndpointStatus
		var oldest, success, errAt *int64
		var lastErr *string
		err := r.Scan(&st.Endpoint, &st.Pending, &st.Failing, &st.Failed, &st.Delivered, &oldest, &success, &lastErr, &errAt)
		st.OldestPending, st.LastSuccess, st.LastErrorAt = nanoTimePtr(oldest), nanoTimePtr(success), nanoTimePtr(errAt)
		if lastErr != nil {
			st.LastError = *lastErr
		}
		return st, err
	})
	return out, pgError(err)
}

// PurgeWebhooks deletes delivered and failed messages last tried before
// before.
func (s *pgStore) PurgeWebhooks(ctx context.Context, before time.Time) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, pgOpTimeout)
	defer cancel()
	tag, err := s.pool.Exec(ctx, "DELETE FROM webhook_messages WHERE state <> 'pending' AND last_attempt < $1", unixNano(before))
	if err != nil {
		return 0, pgError(err)
	}
	return int(tag.RowsAffected()), nil
}

// WebhookEndpoints returns the stored endpoints in order of addition.
func (s *pgStore) WebhookEndpoints() ([]webhookEndpoint, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	rows, err := s.pool.Query(ctx, "SELECT id, url, created_at, created_by FROM webhook_endpoints ORDER BY id")
	if err != nil {
		return nil, pgError(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (webhookEndpoint, error) {
		var e webhookEndpoint
		var id, created, by int64
		err := r.Scan(&id, &e.URL, &created, &by)
		e.ID, e.CreatedAt, e.CreatedBy = uint64(id), nanoTime(created), uint64(by)
		return e, err
	})
	return out, pgError(err)
}

// AddWebhookEndpoint stores e, setting e.ID; errNameTaken for a URL
// stored already.
func (s *pgStore) AddWebhookEndpoint(e *webhookEndpoint) error {
	ctx, cancel := s.opContext()
	defer cancel()
	var id int64
	err := s.pool.QueryRow(ctx, "INSERT INTO webhook_endpoints (url, created_at, created_by) VALUES ($1, $2, $3) RETURNING id",
		e.URL, unixNano(e.CreatedAt), idParam(e.CreatedBy)).Scan(&id)
	if pgConstraint(err) == "webhook_endpoints_url_key" {
		return errNameTaken
	}
	if err != nil {
		return pgError(err)
	}
	e.ID = uint64(id)
	return nil
}

// RemoveWebhookEndpoint deletes endpoint id and returns it; errNotFound
// when there is none.
func (s *pgStore) RemoveWebhookEndpoint(id uint64) (webhookEndpoint, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	e := webhookEndpoint{ID: id}
	var created, by int64
	err := s.pool.QueryRow(ctx, "DELETE FROM webhook_endpoints WHERE id = $1 RETURNING url, created_at, created_by", idParam(id)).
		Scan(&e.URL, &created, &by)
	e.CreatedAt, e.CreatedBy = nanoTime(created), uint64(by)
	return e, pgError(notFound(err))
}

// WarnExpiring records a token.expiring event for every personal token
// that expires within within of now, lives longer than within and was not
// warned of with detail: the marks and the events in one transaction.
func (s *pgStore) WarnExpiring(now time.Time, within time.Duration, detail string, limit int) (int, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	n := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, pgSQLWarnExpiring, unixNano(now), unixNano(now.Add(within)), int64(within), detail, limit)
		if err != nil {
			return err
		}
		type due struct {
			t tokenRecord
			u userRecord
		}
		warned, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (due, error) {
			var d due
			var uid int64
			t, err := scanToken(r, &uid, &d.u.Name)
			d.t, d.u.ID = t, uint64(uid)
			return d, err
		})
		if err != nil {
			return err
		}
		evs := make([]auditEvent, len(warned))
		for i, d := range warned {
			evs[i] = expiringEvent(now, &d.t, &d.u, detail)
		}
		if len(evs) > 0 {
			// Last in the transaction: it holds the log's head row till the commit.
			if err := s.appendEventsTx(ctx, tx, evs...); err != nil {
				return err
			}
		}
		n = len(warned)
		return nil
	})
	if err != nil {
		return 0, pgError(err)
	}
	return n, nil
}
