package main

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The sign-in throttle of the PostgreSQL engine: the rules of throttle.go,
// kept in the database (migrations/0002_throttle.sql) so that every
// instance on it counts against the same buckets, and N instances do not
// give an attacker N times the guesses.
//
// A bucket is one row, keyed 'u:<user id>', 'n:<number>' (the buckets of
// names no user holds, chosen by a keyed hash whose key the database
// holds, so that every instance picks the same) or 'a:<address>'. It
// holds the time it will be empty: adding an attempt moves that time on
// by the rule's interval, and the bucket is full when it lies more than
// burst intervals ahead. Each check is one round trip, one
// transaction of two statements: it locks the buckets it needs, and adds
// to all of them or, when one is full, to none, so that a refused request
// leaves no row behind, and checks on any instance at once count exactly
// as one after the other would. Successes are remembered
// per account in throttle_known, the latest maxKnownAddrsPerUser kept.
//
// Drained buckets and old successes are deleted at most once a minute by
// each instance, during a check; address buckets are then cut back to the
// fullest maxThrottleKeys. Between two clean-ups a flood of addresses can
// add at most a minute's worth of rows; names no user holds add at most
// unknownNameBuckets. The memory's bound on known addresses in all
// (maxKnownAddrs) has no counterpart here: only a correct password adds
// one, and an account keeps at most maxKnownAddrsPerUser.
//
// When the database cannot be reached, begin fails with
// errStoreUnavailable and the caller refuses the sign-in: the throttle
// fails closed, never open.

var _ throttleStore = (*pgStore)(nil)

// sharedThrottle returns a sign-in throttle kept in the database, shared
// with every instance on it.
func (s *pgStore) sharedThrottle() throttler {
	return newPGThrottle(s.pool)
}

// pgThrottle is the throttle kept in PostgreSQL. It is safe for
// concurrent use.
type pgThrottle struct {
	pool *pgxpool.Pool
	// nameBuckets and maxAddrs are unknownNameBuckets and maxThrottleKeys;
	// tests make them small.
	nameBuckets uint64
	maxAddrs    int

	mu        sync.Mutex
	key       []byte // the unknown-name hash key, read at first need
	lastPrune time.Time
}

var _ throttler = (*pgThrottle)(nil)

func newPGThrottle(pool *pgxpool.Pool) *pgThrottle {
	return &pgThrottle{pool: pool, nameBuckets: unknownNameBuckets, maxAddrs: maxThrottleKeys}
}

// pgThrottleCTEs begin every statement on an attempt: known says whether
// the account ($1) signed in from the address ($2) within knownAddrFor
// ($5) of now ($4); want lists the buckets the attempt counts against,
// with their intervals and capacities in nanoseconds: the address's
// ('a:' || $2, $6, $7) and the account's ($3, $8, $9) unless the address
// is known.
const pgThrottleCTEs = `WITH known AS (
	SELECT count(*) > 0 AS yes FROM throttle_known
	WHERE user_id = $1::bigint AND addr = $2::text AND seen_at > $4::bigint - $5::bigint
),
want (key, every, capacity) AS (
	SELECT 'a:' || $2::text, $6::bigint, $7::bigint
	UNION ALL
	SELECT $3::text, $8::bigint, $9::bigint FROM known WHERE NOT known.yes
),
`

// pgThrottleLock takes the transaction advisory locks of the buckets
// named in $1, in the order of their lock numbers, so that checks never
// wait on each other in a circle. A check holds them while it reads and
// writes its buckets: a bucket no row holds yet cannot be locked as a row,
// and two checks must not both find it empty.
const pgThrottleLock = `SELECT pg_advisory_xact_lock(` + pgLockThrottleClass + `, h)
FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest($1::text[]) AS k ORDER BY h) AS locks`

// pgLockThrottleClass is the first number of the buckets' advisory locks
// ("toke"), in the space of two-number locks, apart from the one-number
// locks of pgstore.go.
const pgLockThrottleClass = "1953459045"

// pgThrottleBegin counts an attempt when every bucket has room for it and
// returns by how much the fullest bucket would overflow (≤ 0: counted).
// It runs after pgThrottleLock, in its transaction. Rows it locks are read
// as committed last, whoever wrote them (an attempt taken back).
const pgThrottleBegin = pgThrottleCTEs + `cur AS (
	SELECT key, empty_at FROM throttle_buckets
	WHERE key IN (SELECT key FROM want)
	ORDER BY key FOR UPDATE
),
next AS (
	SELECT want.key, want.every,
		greatest(cur.empty_at, $4::bigint) + want.every - $4::bigint - want.capacity AS over
	FROM want LEFT JOIN cur USING (key)
),
verdict AS (SELECT max(over) AS over FROM next),
counted AS (
	INSERT INTO throttle_buckets AS b (key, empty_at)
	SELECT key, $4::bigint + every FROM next WHERE (SELECT over FROM verdict) <= 0
	ORDER BY key
	ON CONFLICT (key) DO UPDATE SET empty_at = greatest(b.empty_at, $4::bigint) + (excluded.empty_at - $4::bigint)
)
SELECT over FROM verdict`

// pgThrottleTakeBack takes one attempt out of the buckets an attempt
// counted against, deleting those it empties. A bucket that is not there
// stays away.
const pgThrottleTakeBack = `cur AS (
	SELECT b.key, b.empty_at - want.every AS empty_at
	FROM throttle_buckets b JOIN want USING (key)
	ORDER BY b.key FOR UPDATE OF b
),
emptied AS (
	DELETE FROM throttle_buckets b USING cur WHERE b.key = cur.key AND cur.empty_at <= $4::bigint
)
UPDATE throttle_buckets b SET empty_at = cur.empty_at FROM cur
WHERE b.key = cur.key AND cur.empty_at > $4::bigint`

// pgThrottleLearn remembers a success of the account from the address at
// now and forgets all but its latest $10 other addresses. (The statement
// it is part of does not see the success it adds.)
const pgThrottleLearn = `learned AS (
	INSERT INTO throttle_known (user_id, addr, seen_at) VALUES ($1::bigint, $2::text, $4::bigint)
	ON CONFLICT (user_id, addr) DO UPDATE SET seen_at = greatest(throttle_known.seen_at, excluded.seen_at)
),
crowded_out AS (
	DELETE FROM throttle_known
	WHERE user_id = $1::bigint AND addr <> $2::text AND addr NOT IN (
		SELECT addr FROM throttle_known WHERE user_id = $1::bigint AND addr <> $2::text
		ORDER BY seen_at DESC, addr LIMIT $10::bigint)
),
`

// opContext bounds one call.
func (t *pgThrottle) opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), pgOpTimeout)
}

// args returns the parameters of pgThrottleCTEs for an attempt on a.
func (t *pgThrottle) args(ctx context.Context, a signInAccount, addr string, now time.Time) ([]any, error) {
	account, err := t.accountKey(ctx, a)
	if err != nil {
		return nil, err
	}
	return []any{
		int64(a.user), throttleAddr(addr), account, unixNano(now), int64(knownAddrFor),
		int64(addrLimit.every), int64(addrLimit.burst * float64(addrLimit.every)),
		int64(accountLimit.every), int64(accountLimit.burst * float64(accountLimit.every)),
	}, nil
}

// accountKey returns the key of a's account bucket.
func (t *pgThrottle) accountKey(ctx context.Context, a signInAccount) (string, error) {
	if a.user != 0 {
		return "u:" + strconv.FormatUint(a.user, 10), nil
	}
	key, err := t.hashKey(ctx)
	if err != nil {
		return "", err
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(strings.ToLower(a.name)))
	return "n:" + strconv.FormatUint(binary.BigEndian.Uint64(mac.Sum(nil))%t.nameBuckets, 10), nil
}

// hashKey returns the key of the unknown-name hash, which the first
// instance to need it stores.
func (t *pgThrottle) hashKey(ctx context.Context) ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.key != nil {
		return t.key, nil
	}
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, err
	}
	// No row comes back when another instance stored its key after this
	// statement began: the next one sees it.
	for range 3 {
		var key []byte
		err := t.pool.QueryRow(ctx, `WITH stored AS (
			INSERT INTO throttle_key (key) VALUES ($1) ON CONFLICT DO NOTHING RETURNING key)
			SELECT key FROM stored UNION ALL SELECT key FROM throttle_key`, fresh).Scan(&key)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read the throttle's hash key: %w", pgError(err))
		}
		t.key = key
		return key, nil
	}
	return nil, errors.New("read the throttle's hash key: none stored")
}

func (t *pgThrottle) begin(a signInAccount, addr string, now time.Time) (time.Duration, error) {
	ctx, cancel := t.opContext()
	defer cancel()
	t.prune(ctx, now)
	args, err := t.args(ctx, a, addr, now)
	if err != nil {
		return 0, err
	}
	// The locks are the transaction's: they hold until the batch ends.
	batch := &pgx.Batch{}
	batch.Queue(pgThrottleLock, []string{"a:" + args[1].(string), args[2].(string)})
	var over int64
	batch.Queue(pgThrottleBegin, args...).QueryRow(func(row pgx.Row) error { return row.Scan(&over) })
	if err := t.pool.SendBatch(ctx, batch).Close(); err != nil {
		return 0, fmt.Errorf("count sign-in attempt: %w", pgError(err))
	}
	if over <= 0 {
		return 0, nil
	}
	return max(time.Duration(over), time.Second), nil
}

func (t *pgThrottle) abandoned(a signInAccount, addr string, now time.Time) error {
	ctx, cancel := t.opContext()
	defer cancel()
	args, err := t.args(ctx, a, addr, now)
	if err != nil {
		return err
	}
	if _, err := t.pool.Exec(ctx, pgThrottleCTEs+pgThrottleTakeBack, args...); err != nil {
		return fmt.Errorf("take back sign-in attempt: %w", pgError(err))
	}
	return nil
}

func (t *pgThrottle) succeeded(user uint64, addr string, now time.Time) error {
	ctx, cancel := t.opContext()
	defer cancel()
	args, err := t.args(ctx, signInAccount{user: user}, addr, now)
	if err != nil {
		return err
	}
	args = append(args, int64(maxKnownAddrsPerUser-1))
	if _, err := t.pool.Exec(ctx, pgThrottleCTEs+pgThrottleLearn+pgThrottleTakeBack, args...); err != nil {
		return fmt.Errorf("record sign-in: %w", pgError(err))
	}
	return nil
}

// prune deletes drained buckets and old successes, and cuts the address
// buckets back to the fullest maxAddrs, at most once a minute. It is
// housekeeping: a failure waits for the next minute. It never waits for a
// row a check holds.
func (t *pgThrottle) prune(ctx context.Context, now time.Time) {
	t.mu.Lock()
	due := now.Sub(t.lastPrune) >= time.Minute
	if due {
		t.lastPrune = now
	}
	t.mu.Unlock()
	if !due {
		return
	}
	_, err := t.pool.Exec(ctx, `WITH drained AS (
			DELETE FROM throttle_buckets WHERE key IN (
				SELECT key FROM throttle_buckets WHERE empty_at <= $1::bigint FOR UPDATE SKIP LOCKED)
		)
		DELETE FROM throttle_known WHERE seen_at <= $1::bigint - $2::bigint`,
		unixNano(now), int64(knownAddrFor))
	if err != nil {
		return
	}
	// Only address buckets can be more than there are users and shared
	// name buckets. This statement holds address rows alone, and a check
	// waits for none once it holds one: no circle.
	t.pool.Exec(ctx, `DELETE FROM throttle_buckets WHERE key IN (
		SELECT key FROM throttle_buckets WHERE key LIKE 'a:%'
		ORDER BY empty_at DESC OFFSET $1::bigint)`, int64(t.maxAddrs))
}
