package main

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The PostgreSQL engine. It keeps the records the bbolt engine keeps, in
// three tables (migrations/0001_init.sql), and its exported methods have
// the bbolt store's names, signatures, sentinel errors and contracts, so
// that many tokend instances can share one database.
//
// Locking, so that transactions never wait on each other in a circle: a
// write takes the advisory admins lock first (when it needs it), then the
// user's row, then the rows of tokens or sessions.

//go:embed migrations/*.sql
var pgMigrationFiles embed.FS

// errStoreUnavailable wraps every error that says the database cannot be
// reached at the moment (refused or dropped connections, a server shutting
// down or starting up, too many connections, no answer in time): the
// request may succeed if tried again later, and nothing is wrong with it.
var errStoreUnavailable = errors.New("the database is unavailable")

// pgOpTimeout bounds each method that takes no context: a database that
// does not answer within it is unavailable, not slow.
const pgOpTimeout = 10 * time.Second

// Advisory lock keys: "tokend" in the high six bytes, then a number.
const (
	pgLockMigrate       int64 = 0x746f6b656e64_0001 // schema migrations at open
	pgLockPurgeTokens   int64 = 0x746f6b656e64_0002 // one expired-token purge at a time
	pgLockPurgeSessions int64 = 0x746f6b656e64_0003 // one session purge at a time
	pgLockAdmins        int64 = 0x746f6b656e64_0004 // who is an admin: the last-admin rule
)

// pgDefaultMaxConns is the pool size when the URL sets none
// (pool_max_conns): pgxpool's default, four on small machines, leaves
// concurrent writers waiting for a connection rather than for a commit.
const pgDefaultMaxConns = 16

// pgStore is the PostgreSQL engine. Each exported method is one SQL
// transaction (a single statement, or a BEGIN … COMMIT).
type pgStore struct {
	pool *pgxpool.Pool
	// sink hears, synchronously once a write has committed and before the
	// write returns, what it deleted or changed (see invalidationSink).
	// Other instances hear it through the notification the write sends.
	sink     atomic.Pointer[invalidationSink]
	listener *pgListener // nil until startInvalidations
	// auth caches verified tokens. It trusts nothing until the listener
	// hears this instance's own heartbeat: other instances' writes reach
	// it only through notifications.
	auth    *authCache
	closed  atomic.Bool
	closing sync.Once
}

// isPostgresURL reports whether a -db value names a PostgreSQL database
// rather than a bbolt file.
func isPostgresURL(db string) bool {
	return strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://")
}

// openPGStore connects to the PostgreSQL database at url, brings its
// schema up to this binary's under an advisory lock (several instances
// may start at once). A database of a newer schema is refused with
// errUnsupportedData; a server that cannot be reached gives
// errStoreUnavailable.
func openPGStore(ctx context.Context, url string) (*pgStore, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		// The parser's message may quote the URL, password included.
		return nil, errors.New("open database: not a valid PostgreSQL URL")
	}
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = max(cfg.MaxConns, pgDefaultMaxConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", pgError(err))
	}
	s := &pgStore{pool: pool, auth: newAuthCache(defaultAuthCacheSize)}
	s.auth.trust(false)
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open database: %w", err)
	}
	return s, nil
}

// pgMigration is one file of migrations/: NNNN_name.sql brings the schema
// from version NNNN-1 to NNNN.
type pgMigration struct {
	version int
	name    string
	sql     string
}

// pgMigrations returns the embedded migrations in order. Their versions
// run from 1 without a gap.
func pgMigrations() ([]pgMigration, error) {
	entries, err := pgMigrationFiles.ReadDir("migrations")
	if err != nil {
		return nil, err
	}
	var out []pgMigration
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || !strings.HasSuffix(e.Name(), ".sql") {
			return nil, fmt.Errorf("migration %q: not named NNNN_name.sql", e.Name())
		}
		b, err := pgMigrationFiles.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, pgMigration{version: v, name: e.Name(), sql: string(b)})
	}
	slices.SortFunc(out, func(a, b pgMigration) int { return a.version - b.version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %q: want version %d", m.name, i+1)
		}
	}
	return out, nil
}

// migrate applies the migrations the database lacks, each in its own
// transaction with its row in tokend_schema, holding the migration lock so
// that instances starting together apply each exactly once. Ids stay
// sequential: nothing moves the id sequences at open.
func (s *pgStore) migrate(ctx context.Context) error {
	migrations, err := pgMigrations()
	if err != nil {
		return err
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return pgError(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", pgLockMigrate); err != nil {
		return pgError(err)
	}
	defer func() {
		if _, err := conn.Exec(context.Background(), "SELECT pg_advisory_unlock($1)", pgLockMigrate); err != nil {
			conn.Hijack().Close(context.Background()) // a lock must not stay behind in the pool
		}
	}()
	_, err = conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS tokend_schema (
		version    integer     PRIMARY KEY,
		applied_at timestamptz NOT NULL DEFAULT now())`)
	if err != nil {
		return fmt.Errorf("create tokend_schema: %w", pgError(err))
	}
	var current int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM tokend_schema").Scan(&current); err != nil {
		return fmt.Errorf("read schema version: %w", pgError(err))
	}
	if current > len(migrations) {
		return fmt.Errorf("%w %d (this tokend understands %d)", errUnsupportedData, current, len(migrations))
	}
	for _, m := range migrations[current:] {
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO tokend_schema (version) VALUES ($1)", m.version)
			return err
		})
		if err != nil {
			return fmt.Errorf("apply migration %s: %w", m.name, pgError(err))
		}
	}
	return nil
}

// Close stops the notification listener and closes the pool. From then on
// every method fails.
func (s *pgStore) Close() error {
	s.closing.Do(func() {
		s.closed.Store(true)
		if s.listener != nil {
			s.listener.stop()
		}
		s.pool.Close()
	})
	return nil
}

// pgError maps err to errStoreUnavailable, wrapped around the original,
// when it says the database cannot be reached now; other errors come back
// as they are.
func pgError(err error) error {
	if err == nil || errors.Is(err, errStoreUnavailable) {
		return err
	}
	if pgUnavailable(err) {
		return fmt.Errorf("%w: %w", errStoreUnavailable, err)
	}
	return err
}

// pgUnavailable reports whether err means that the server is down,
// starting, shutting down, out of connections or unreachable.
func pgUnavailable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "57014": // query_canceled: a statement timeout, not the server
			return false
		case strings.HasPrefix(pgErr.Code, "57"), // operator intervention: admin_shutdown, crash_shutdown, cannot_connect_now
			strings.HasPrefix(pgErr.Code, "08"), // connection exception
			strings.HasPrefix(pgErr.Code, "53"): // insufficient resources: too many connections, disk full, out of memory
			return true
		}
		return false
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, context.DeadlineExceeded) ||
		pgconn.SafeToRetry(err)
}

// pgConstraint returns the name of the constraint err violates, if any.
func pgConstraint(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.ConstraintName
	}
	return ""
}

// pgForeignKeyViolation reports whether err is a row naming a user (or
// token) that does not exist.
func pgForeignKeyViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23503"
}

// opContext bounds one method's work.
func (s *pgStore) opContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), pgOpTimeout)
}

// pgChanges is what a write changed that an auth cache may hold.
type pgChanges struct {
	gone        []tokenHash // tokens deleted
	userChanged bool        // a user was changed or removed
}

// update runs fn in one transaction. Every write that deletes a token or
// changes a user goes through here: before the commit, it sends the
// invalidation notifications of what fn changed, in the same transaction,
// so that other instances hear of it exactly when it commits; after the
// commit, and before it returns, it tells this instance's sink directly.
// When the commit's outcome is unknown (the connection dropped during
// COMMIT) the sink is told anyway: forgetting is always safe.
func (s *pgStore) update(fn func(ctx context.Context, tx pgx.Tx, c *pgChanges) error) error {
	return s.updateOn(s.pool, fn)
}

// updateOn is update on db: the pool, or a connection the caller holds.
func (s *pgStore) updateOn(db pgBeginner, fn func(ctx context.Context, tx pgx.Tx, c *pgChanges) error) error {
	ctx, cancel := s.opContext()
	defer cancel()
	var c pgChanges
	tell := false
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if err := fn(ctx, tx, &c); err != nil {
			return err
		}
		if payloads := invalidationPayloads(c.gone, c.userChanged); len(payloads) > 0 {
			_, err := tx.Exec(ctx, "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p", pgInvalidateChannel, payloads)
			if err != nil {
				return err
			}
		}
		tell = true
		return nil
	})
	if tell {
		s.tellSink(&c)
	}
	return pgError(err)
}

// pgBeginner is a pool or a connection.
type pgBeginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// tellSink hands c to this instance's sink, if it has one.
func (s *pgStore) tellSink(c *pgChanges) {
	p := s.sink.Load()
	if p == nil {
		return
	}
	if len(c.gone) > 0 {
		(*p).tokensGone(c.gone)
	}
	if c.userChanged {
		(*p).changed()
	}
}

// scanner is a pgx.Row or pgx.Rows.
type scanner interface{ Scan(dest ...any) error }

// nanoTime is a stored time.
func nanoTime(n int64) time.Time { return time.Unix(0, n).UTC() }

// nanoTimePtr is a stored time that may be NULL.
func nanoTimePtr(n *int64) *time.Time {
	if n == nil {
		return nil
	}
	t := nanoTime(*n)
	return &t
}

// expiryParam is an expiry as stored: NULL for never, else expiryNano's
// value, which is never 0.
func expiryParam(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	n := expiryNano(t)
	return &n
}

// idParam is an id as a bigint. Ids above the int64 range name nothing.
func idParam(id uint64) int64 {
	if id > math.MaxInt64 {
		return -1
	}
	return int64(id)
}

// hashOf copies a 32-byte hash read from the database.
func hashOf(b []byte) ([32]byte, error) {
	var h [32]byte
	if len(b) != len(h) {
		return h, fmt.Errorf("stored hash of %d bytes: the database is damaged", len(b))
	}
	copy(h[:], b)
	return h, nil
}

const pgUserColumns = "u.id, u.name, u.password_hash, u.admin, u.created_at, u.password_changed_at"

func scanUser(r scanner, extra ...any) (userRecord, error) {
	var u userRecord
	var id, created, changed int64
	dest := append([]any{&id, &u.Name, &u.PasswordHash, &u.Admin, &created, &changed}, extra...)
	if err := r.Scan(dest...); err != nil {
		return userRecord{}, err
	}
	u.ID, u.CreatedAt, u.PasswordChangedAt = uint64(id), nanoTime(created), nanoTime(changed)
	return u, nil
}

const pgTokenColumns = "t.id, t.owner, t.name, t.scopes, t.created_at, t.expires_at, t.last_used_at, t.last_used_ip, t.hint, t.hash, t.grant_id, t.client_id"

// pgPersonal is the condition that leaves the access tokens of OAuth
// grants out of the personal-token views (oauthstore.go).
const pgPersonal = "t.grant_id IS NULL"

func scanToken(r scanner, extra ...any) (tokenRecord, error) {
	var t tokenRecord
	var id, owner, created int64
	var expires, lastUsed, grant *int64
	var client *string
	var hash []byte
	dest := append([]any{&id, &owner, &t.Name, &t.Scopes, &created, &expires, &lastUsed, &t.LastUsedIP, &t.Hint, &hash, &grant, &client}, extra...)
	if err := r.Scan(dest...); err != nil {
		return tokenRecord{}, err
	}
	h, err := hashOf(hash)
	if err != nil {
		return tokenRecord{}, fmt.Errorf("token %d: %w", id, err)
	}
	t.ID, t.Owner, t.Hash = uint64(id), uint64(owner), h
	if grant != nil && client != nil {
		t.Grant, t.Client = uint64(*grant), *client
	}
	t.CreatedAt, t.ExpiresAt, t.LastUsedAt = nanoTime(created), nanoTimePtr(expires), nanoTimePtr(lastUsed)
	return t, nil
}

// notFound turns pgx's "no rows" into errNotFound.
func notFound(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return errNotFound
	}
	return err
}

// The statements on hot paths, named so that a test can show that each
// uses an index (TestPGHotQueriesUseIndexes).
const (
	pgSQLAuthenticate = `SELECT t.id, t.owner, t.created_at, t.expires_at, t.scopes, t.client_id,
			u.id, u.name, u.admin, u.created_at, u.password_changed_at
		FROM tokens t JOIN users u ON u.id = t.owner WHERE t.hash = $1`
	pgSQLTokensByOwner = "SELECT " + pgTokenColumns + " FROM tokens t WHERE t.owner = $1 AND " + pgPersonal + " ORDER BY t.id DESC"
	// = ANY(ARRAY(…)) rather than IN (…): the planner then looks each id
	// up in the primary key rather than joining against the whole table.
	pgSQLPurgeTokens = `DELETE FROM tokens t WHERE t.id = ANY (ARRAY(
			SELECT id FROM tokens WHERE expires_at < $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED))
		RETURNING ` + pgTokenColumns
	pgSQLSessionByHash = "SELECT " + pgSessionColumns + `, u.id, u.name, u.password_hash, u.admin, u.created_at, u.password_changed_at
		FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.hash = $1`
	pgSQLSessionsOf    = "SELECT " + pgSessionColumns + " FROM sessions s WHERE s.user_id = $1 ORDER BY s.created_at DESC"
	pgSQLPurgeSessions = `DELETE FROM sessions WHERE hash = ANY (ARRAY(
			SELECT hash FROM sessions WHERE expires_at <= $1 OR last_seen_at <= $2
			LIMIT $3 FOR UPDATE SKIP LOCKED))`
)

// ---- users ----

// CreateUser stores u, setting u.ID. It returns errNameTaken when a user of
// the same name (ignoring case) exists.
func (s *pgStore) CreateUser(by actor, u *userRecord) error {
	ctx, cancel := s.opContext()
	defer cancel()
	return pgError(pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := insertUser(ctx, tx, u); err != nil {
			return err
		}
		return appendPGEvents(ctx, tx, newAuditEvent(by, kindUserAdded).about(*u).withDetail("%s", adminWord(u.Admin)))
	}))
}

// pgQuerier is a pool, a connection or a transaction.
type pgQuerier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// insertUser stores u with a new id and sets u.ID. It returns
// errNameTaken when a user of the same name (ignoring case) exists.
func insertUser(ctx context.Context, q pgQuerier, u *userRecord) error {
	var id int64
	err := q.QueryRow(ctx, `INSERT INTO users (name, name_key, password_hash, admin, created_at, password_changed_at)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
		u.Name, strings.ToLower(u.Name), u.PasswordHash, u.Admin, unixNano(u.CreatedAt), unixNano(u.PasswordChangedAt)).Scan(&id)
	if pgConstraint(err) == "users_name_key" {
		return errNameTaken
	}
	if err != nil {
		return err
	}
	u.ID = uint64(id)
	return nil
}

// UserByID returns the user with id, or errNotFound.
func (s *pgStore) UserByID(id uint64) (userRecord, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	u, err := scanUser(s.pool.QueryRow(ctx, "SELECT "+pgUserColumns+" FROM users u WHERE u.id = $1", idParam(id)))
	return u, pgError(notFound(err))
}

// UserByName returns the user called name (ignoring case), or errNotFound.
func (s *pgStore) UserByName(name string) (userRecord, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	u, err := scanUser(s.pool.QueryRow(ctx, "SELECT "+pgUserColumns+" FROM users u WHERE u.name_key = $1", strings.ToLower(name)))
	return u, pgError(notFound(err))
}

// Users returns every user in order of creation.
func (s *pgStore) Users() ([]userRecord, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	rows, err := s.pool.Query(ctx, "SELECT "+pgUserColumns+" FROM users u ORDER BY u.id")
	if err != nil {
		return nil, pgError(err)
	}
	var out []userRecord
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			rows.Close()
			return nil, pgError(err)
		}
		out = append(out, u)
	}
	return out, pgError(rows.Err())
}

// CountUsers returns the number of users.
func (s *pgStore) CountUsers() (int, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	var n int
	err := s.pool.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n)
	return n, pgError(err)
}

// HasUsers reports whether any user exists. It reads one row at most.
func (s *pgStore) HasUsers() (bool, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	var has bool
	err := s.pool.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM users)").Scan(&has)
	return has, pgError(err)
}

// Totals returns the number of users and of tokens, read in one
// statement (one snapshot). It counts both tables: for scrapes, not
// requests.
func (s *pgStore) Totals() (users, tokens int, err error) {
	ctx, cancel := s.opContext()
	defer cancel()
	err = s.pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM tokens)").Scan(&users, &tokens)
	return users, tokens, pgError(err)
}

// Ping reads the schema version, so that it fails when the database
// cannot answer.
func (s *pgStore) Ping() error {
	ctx, cancel := s.opContext()
	defer cancel()
	var v *int
	if err := s.pool.QueryRow(ctx, "SELECT max(version) FROM tokend_schema").Scan(&v); err != nil {
		return pgError(err)
	}
	if v == nil {
		return errNotTokendDB
	}
	return nil
}

// UpgradePasswordHash replaces the hash of user id with newHash if it is
// still oldHash, for re-hashing with stronger parameters at sign-in. A
// password changed in the meantime is left alone. It returns errNotFound
// for an unknown user.
func (s *pgStore) UpgradePasswordHash(id uint64, oldHash, newHash string) error {
	return s.update(func(ctx context.Context, tx pgx.Tx, c *pgChanges) error {
		var changed bool
		err := tx.QueryRow(ctx, `SELECT password_hash = $2 FROM users WHERE id = $1 FOR UPDATE`, idParam(id), oldHash).Scan(&changed)
		if err != nil || !changed {
			return notFound(err)
		}
		if _, err := tx.Exec(ctx, "UPDATE users SET password_hash = $2 WHERE id = $1", idParam(id), newHash); err != nil {
			return err
		}
		c.userChanged = true
		return nil
	})
}

// lockPGUser locks user id's row against changes and removal until the
// transaction ends, and returns it; errNotFound when there is none.
func lockPGUser(ctx context.Context, tx pgx.Tx, id uint64) (userRecord, error) {
	u, err := scanUser(tx.QueryRow(ctx, "SELECT "+pgUserColumns+" FROM users u WHERE u.id = $1 FOR UPDATE", idParam(id)))
	return u, notFound(err)
}

// countPGAdmins counts admins; the caller holds pgLockAdmins.
func countPGAdmins(ctx context.Context, tx pgx.Tx) (int, error) {
	var n int
	err := tx.QueryRow(ctx, "SELECT count(*) FROM users WHERE admin").Scan(&n)
	return n, err
}

// deletePGTokensOf deletes every token of owner, and their OAuth grants
// with the requests they approved (deletePGGrantsOf), notes the tokens'
// hashes in c and returns how many tokens went: personal tokens and the
// grants' access tokens. The caller holds owner's row.
func deletePGTokensOf(ctx context.Context, tx pgx.Tx, owner uint64, c *pgChanges) (int, error) {
	n, err := deletePGGrantsOf(ctx, tx, owner, c)
	if err != nil {
		return 0, err
	}
	rows, err := tx.Query(ctx, "DELETE FROM tokens WHERE owner = $1 RETURNING hash", idParam(owner))
	if err != nil {
		return 0, err
	}
	m, err := collectGone(rows, c)
	return n + m, err
}

// collectGone reads the hashes a DELETE … RETURNING hash returned into c.
func collectGone(rows pgx.Rows, c *pgChanges) (int, error) {
	n := 0
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			rows.Close()
			return n, err
		}
		h, err := hashOf(b)
		if err != nil {
			rows.Close()
			return n, err
		}
		c.gone = append(c.gone, h)
		n++
	}
	return n, rows.Err()
}

// DeleteUser removes user id with all of their tokens and sessions. It
// returns errNotFound for an unknown user and errLastAdmin when id is the
// only admin.
func (s *pgStore) DeleteUser(by actor, id uint64) error {
	return s.update(func(ctx context.Context, tx pgx.Tx, c *pgChanges) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", pgLockAdmins); err != nil {
			return err
		}
		u, err := lockPGUser(ctx, tx, id)
		if err != nil {
			return err
		}
		if u.Admin {
			n, err := countPGAdmins(ctx, tx)
			if err != nil {
				return err
			}
			if n <= 1 {
				return errLastAdmin
			}
		}
		if _, err := deletePGTokensOf(ctx, tx, id, c); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM sessions WHERE user_id = $1", idParam(id)); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "DELETE FROM users WHERE id = $1", idParam(id)); err != nil {
			return err
		}
		c.userChanged = true
		return appendPGEvents(ctx, tx, newAuditEvent(by, kindUserRemoved).about(u))
	})
}

// SetAdmin makes user id an admin or not and returns the record. It
// returns errNotFound for an unknown user and errLastAdmin when that would
// leave no admin.
func (s *pgStore) SetAdmin(by actor, id uint64, admin bool) (userRecord, error) {
	var u userRecord
	err := s.update(func(ctx context.Context, tx pgx.Tx, c *pgChanges) error {
		if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", pgLockAdmins); err != nil {
			return err
		}
		var err error
		if u, err = lockPGUser(ctx, tx, id); err != nil || u.Admin == admin {
			return err
		}
		if !admin {
			n, err := countPGAdmins(ctx, tx)
			if err != nil {
				return err
			}
			if n <= 1 {
				return errLastAdmin
			}
		}
		if _, err := tx.Exec(ctx, "UPDATE users SET admin = $2 WHERE id = $1", idParam(id), admin); err != nil {
			return err
		}
		u.Admin = admin
		c.userChanged = true
		return appendPGEvents(ctx, tx, newAuditEvent(by, roleKind(admin)).about(u))
	})
	return u, err
}

// RevokeTokensOf deletes every token of user id and their OAuth grants,
// and returns how many tokens went (the grants' access tokens included).
// It returns errNotFound for an unknown user.
func (s *pgStore) RevokeTokensOf(by actor, id uint64) (int, error) {
	var n int
	err := s.update(func(ctx context.Context, tx pgx.Tx, c *pgChanges) error {
		u, err := lockPGUser(ctx, tx, id)
		if err != nil {
			return err
		}
		if n, err = deletePGTokensOf(ctx, tx, id, c); err != nil || n == 0 {
			return err
		}
		return appendPGEvents(ctx, tx, newAuditEvent(by, kindTokensRevoked).about(u).withDetail("%s", plural(n, "token")))
	})
	return n, err
}

// ChangePassword sets the password hash of user id and, as c says,
// revokes their tokens and ends their other sessions; the kept session
// counts as having just given its password. It returns how many tokens and
// sessions went, or errNotFound for an unknown user.
func (s *pgStore) ChangePassword(by actor, id uint64, pc passwordChange) (tokens, sessions int, err error) {
	err = s.update(func(ctx context.Context, tx pgx.Tx, c *pgChanges) error {
		tokens, sessions = 0, 0
		u, err := lockPGUser(ctx, tx, id)
		if err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE users SET password_hash = $2, password_changed_at = $3 WHERE id = $1",
			idParam(id), pc.hash, unixNano(pc.at))
		if err != nil {
			return err
		}
		c.userChanged = true
		if pc.revokeTokens {
			if tokens, err = deletePGTokensOf(ctx, tx, id, c); err != nil {
				return err
			}
		}
		if pc.endSessions {
			tag, err := tx.Exec(ctx, "DELETE FROM sessions WHERE user_id = $1 AND hash <> $2", idParam(id), pc.keep[:])
			if err != nil {
				return err
			}
			sessions = int(tag.RowsAffected())
		}
		if pc.keep != (sessionHash{}) {
			_, err := tx.Exec(ctx, "UPDATE sessions SET signed_in_at = $3, last_seen_at = $3 WHERE hash = $1 AND user_id = $2",
				pc.keep[:], idParam(id), unixNano(pc.at))
			if err != nil {
				return err
			}
		}
		return appendPGEvents(ctx, tx, passwordEvent(by, u, tokens, sessions))
	})
	return tokens, sessions, err
}

// TokenCounts returns how many personal tokens each user holds; users
// without any are missing from the map.
func (s *pgStore) TokenCounts() (map[uint64]int, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	rows, err := s.pool.Query(ctx, "SELECT t.owner, count(*) FROM tokens t WHERE "+pgPersonal+" GROUP BY t.owner")
	if err != nil {
		return nil, pgError(err)
	}
	counts := make(map[uint64]int)
	for rows.Next() {
		var owner int64
		var n int
		if err := rows.Scan(&owner, &n); err != nil {
			rows.Close()
			return nil, pgError(err)
		}
		counts[uint64(owner)] = n
	}
	return counts, pgError(rows.Err())
}

// CreateFirstAdmin stores u, who must be an admin, setting u.ID, unless a
// user exists already: then it returns errSetupDone. The users table is
// locked against every other write for the check and the insert, so that
// of two instances racing, exactly one makes the first admin.
func (s *pgStore) CreateFirstAdmin(by actor, u *userRecord) error {
	if !u.Admin {
		return errors.New("the first user must be an admin")
	}
	ctx, cancel := s.opContext()
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE"); err != nil {
			return err
		}
		var has bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM users)").Scan(&has); err != nil {
			return err
		}
		if has {
			return errSetupDone
		}
		if err := insertUser(ctx, tx, u); err != nil {
			return err
		}
		return appendPGEvents(ctx, tx, newAuditEvent(by, kindSetupUsed).about(*u).withDetail("first admin"))
	})
	return pgError(err)
}

// ---- tokens ----

// CreateToken stores t under hash h, setting t.ID. It returns errNotFound
// when the owner does not exist and errTooManyTokens when the owner
// already holds limit tokens (0: no limit). With a limit, the owner's row
// is locked so that concurrent creations for one owner count exactly.
func (s *pgStore) CreateToken(by actor, t *tokenRecord, h tokenHash, limit int) error {
	ctx, cancel := s.opContext()
	defer cancel()
	rec := *t
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rec = *t
		rec.Hash = h
		// Without a limit, a key share lock is enough to keep the owner
		// (and name them in the event); with one, the row is locked so
		// that concurrent creations for one owner count exactly.
		lock := "FOR KEY SHARE"
		if limit > 0 {
			lock = "FOR NO KEY UPDATE"
		}
		owner, err := scanUser(tx.QueryRow(ctx, "SELECT "+pgUserColumns+" FROM users u WHERE u.id = $1 "+lock, idParam(rec.Owner)))
		if err != nil {
			return notFound(err)
		}
		if limit > 0 {
			var full bool
			err = tx.QueryRow(ctx, "SELECT count(*) >= $2 FROM (SELECT 1 FROM tokens t WHERE t.owner = $1 AND "+pgPersonal+" LIMIT $2) AS held",
				idParam(rec.Owner), limit).Scan(&full)
			if err != nil {
				return err
			}
			if full {
				return errTooManyTokens
			}
		}
		if err := insertToken(ctx, tx, &rec); err != nil {
			return err
		}
		return appendPGEvents(ctx, tx, newAuditEvent(by, kindTokenCreated).about(owner).ofToken(rec))
	})
	if err != nil {
		return pgError(err)
	}
	*t = rec
	return nil
}

// insertToken stores t (its Hash set) with a new id and sets t.ID. It
// returns errNotFound when the owner does not exist.
func insertToken(ctx context.Context, q pgQuerier, t *tokenRecord) error {
	scopes := t.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	var grant *int64
	var client *string
	if t.Grant != 0 {
		g := idParam(t.Grant)
		grant, client = &g, &t.Client
	}
	var id int64
	err := q.QueryRow(ctx, `INSERT INTO tokens (owner, hash, name, scopes, created_at, expires_at, hint, grant_id, client_id)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id`,
		idParam(t.Owner), t.Hash[:], t.Name, scopes, unixNano(t.CreatedAt), expiryParam(t.ExpiresAt), t.Hint, grant, client).Scan(&id)
	switch {
	case pgForeignKeyViolation(err):
		return errNotFound
	case pgConstraint(err) == "tokens_hash_key":
		// 2^-256: a broken random source, not bad luck.
		return errors.New("token hash collision")
	case err != nil:
		return err
	}
	t.ID = uint64(id)
	return nil
}

// Authenticate returns what verification needs of the token whose hash is
// h, and its owner (without the password hash): from the auth cache while
// it trusts the notification channel, else in one statement. It returns
// errNotFound for an unknown token. It does not check expiry.
func (s *pgStore) Authenticate(h tokenHash) (authRecord, userRecord, error) {
	if s.closed.Load() {
		return authRecord{}, userRecord{}, errors.New("database is closed")
	}
	return s.auth.authenticate(h, s)
}

// readAuth is the auth cache's read (see authReader): one query for the
// token's auth record and its owner, always read afresh.
func (s *pgStore) readAuth(h tokenHash, _ *authCache, _ uint64) (authRecord, userRecord, bool, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	var a authRecord
	var id, owner, created int64
	var expires *int64
	var client *string
	var u userRecord
	var uid, ucreated, uchanged int64
	err := s.pool.QueryRow(ctx, pgSQLAuthenticate, h[:]).
		Scan(&id, &owner, &created, &expires, &a.Scopes, &client, &uid, &u.Name, &u.Admin, &ucreated, &uchanged)
	if err != nil {
		return authRecord{}, userRecord{}, false, pgError(notFound(err))
	}
	if client != nil {
		a.Client = *client
	}
	a.ID, a.Owner, a.CreatedAt, a.ExpiresAt = uint64(id), uint64(owner), nanoTime(created), nanoTimePtr(expires)
	u.ID, u.CreatedAt, u.PasswordChangedAt = uint64(uid), nanoTime(ucreated), nanoTime(uchanged)
	return a, u, true, nil
}

// TokenByHash returns the token whose hash is h and its owner, or
// errNotFound. It does not check expiry.
func (s *pgStore) TokenByHash(h tokenHash) (tokenRecord, userRecord, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	var u userRecord
	var uid, ucreated, uchanged int64
	t, err := scanToken(s.pool.QueryRow(ctx, "SELECT "+pgTokenColumns+`, u.id, u.name, u.password_hash, u.admin, u.created_at, u.password_changed_at
		FROM tokens t JOIN users u ON u.id = t.owner WHERE t.hash = $1`, h[:]),
		&uid, &u.Name, &u.PasswordHash, &u.Admin, &ucreated, &uchanged)
	if err != nil {
		return tokenRecord{}, userRecord{}, pgError(notFound(err))
	}
	u.ID, u.CreatedAt, u.PasswordChangedAt = uint64(uid), nanoTime(ucreated), nanoTime(uchanged)
	return t, u, nil
}

// TokenByID returns token id if owner holds it (or owner is anyOwner), and
// errNotFound otherwise.
func (s *pgStore) TokenByID(id, owner uint64) (tokenRecord, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	t, err := scanToken(s.pool.QueryRow(ctx, "SELECT "+pgTokenColumns+" FROM tokens t WHERE t.id = $1 AND ($2::bigint = 0 OR t.owner = $2) AND "+pgPersonal,
		idParam(id), idParam(owner)))
	return t, pgError(notFound(err))
}

// queryTokens returns the tokens a query of pgTokenColumns selects.
func (s *pgStore) queryTokens(sql string, args ...any) ([]tokenRecord, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	rows, err := s.pool.Query(ctx, sql, args...)
	if err != nil {
		return nil, pgError(err)
	}
	out := []tokenRecord{}
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			rows.Close()
			return nil, pgError(err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, pgError(err)
	}
	return out, nil
}

// TokensByOwner returns owner's tokens, newest first.
func (s *pgStore) TokensByOwner(owner uint64) ([]tokenRecord, error) {
	return s.queryTokens(pgSQLTokensByOwner, idParam(owner))
}

// AllTokens returns every token, newest first.
func (s *pgStore) AllTokens() ([]tokenRecord, error) {
	return s.queryTokens("SELECT " + pgTokenColumns + " FROM tokens t WHERE " + pgPersonal + " ORDER BY t.id DESC")
}

// DeleteToken revokes token id if owner holds it (or owner is anyOwner) and
// returns it; errNotFound otherwise.
func (s *pgStore) DeleteToken(by actor, id, owner uint64) (tokenRecord, error) {
	var t tokenRecord
	err := s.update(func(ctx context.Context, tx pgx.Tx, c *pgChanges) error {
		var err error
		t, err = scanToken(tx.QueryRow(ctx, "DELETE FROM tokens t WHERE t.id = $1 AND ($2::bigint = 0 OR t.owner = $2) AND "+pgPersonal+" RETURNING "+pgTokenColumns,
			idParam(id), idParam(owner)))
		if err != nil {
			return notFound(err)
		}
		c.gone = append(c.gone, t.Hash)
		return appendPGToken(ctx, tx, newAuditEvent(by, kindTokenRevoked), t)
	})
	return t, err
}

// DeleteTokenByHash revokes the token whose hash is h and returns it, or
// errNotFound.
func (s *pgStore) DeleteTokenByHash(by actor, h tokenHash, kind string) (tokenRecord, error) {
	var t tokenRecord
	err := s.update(func(ctx context.Context, tx pgx.Tx, c *pgChanges) error {
		var err error
		t, err = scanToken(tx.QueryRow(ctx, "DELETE FROM tokens t WHERE t.hash = $1 RETURNING "+pgTokenColumns, h[:]))
		if err != nil {
			return notFound(err)
		}
		c.gone = append(c.gone, t.Hash)
		return appendPGToken(ctx, tx, newAuditEvent(by, kind), t)
	})
	return t, err
}

// RotateToken replaces token id, if owner holds it (or owner is anyOwner),
// with a new token under hash h: same owner, name, scopes and expiry, a new
// id, created at now. The old token stops working in the same transaction.
// It returns the new record, errNotFound, or errTokenExpired when the old
// token has expired at now.
func (s *pgStore) RotateToken(by actor, id, owner uint64, h tokenHash, hint string, now time.Time) (tokenRecord, error) {
	var t tokenRecord
	err := s.update(func(ctx context.Context, tx pgx.Tx, c *pgChanges) error {
		// The owner's row first (see the locking order at the top), then the token's.
		var holder int64
		err := tx.QueryRow(ctx, "SELECT t.owner FROM tokens t WHERE t.id = $1 AND ($2::bigint = 0 OR t.owner = $2) AND "+pgPersonal, idParam(id), idParam(owner)).Scan(&holder)
		if err != nil {
			return notFound(err)
		}
		if _, err := tx.Exec(ctx, "SELECT 1 FROM users WHERE id = $1 FOR KEY SHARE", holder); err != nil {
			return err
		}
		old, err := scanToken(tx.QueryRow(ctx, "SELECT "+pgTokenColumns+" FROM tokens t WHERE t.id = $1 FOR UPDATE", idParam(id)))
		if err != nil {
			return notFound(err) // rotated or revoked meanwhile
		}
		if old.expired(now) {
			return errTokenExpired
		}
		if _, err := tx.Exec(ctx, "DELETE FROM tokens WHERE id = $1", idParam(id)); err != nil {
			return err
		}
		c.gone = append(c.gone, old.Hash)
		t = tokenRecord{Owner: old.Owner, Name: old.Name, Scopes: old.Scopes, CreatedAt: now, ExpiresAt: old.ExpiresAt, Hint: hint, Hash: h}
		if err := insertToken(ctx, tx, &t); err != nil {
			return err
		}
		return appendPGToken(ctx, tx, newAuditEvent(by, kindTokenRotated).withDetail("replaces token %d (…%s)", old.ID, old.Hint), t)
	})
	if err != nil {
		return tokenRecord{}, err
	}
	return t, nil
}

// withPurgeLock runs fn on one connection holding the session advisory
// lock key, and reports false without running it when another instance
// holds the lock: background work runs on one instance at a time.
func (s *pgStore) withPurgeLock(key int64, fn func(conn *pgxpool.Conn) error) (bool, error) {
	ctx, cancel := s.opContext()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		cancel()
		return false, pgError(err)
	}
	defer conn.Release()
	var got bool
	err = conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", key).Scan(&got)
	cancel()
	if err != nil || !got {
		return false, pgError(err)
	}
	defer func() {
		ctx, cancel := s.opContext()
		defer cancel()
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", key); err != nil {
			// The lock dies with the session: never hand it back to the pool.
			conn.Hijack().Close(context.Background())
		}
	}()
	return true, fn(conn)
}

// PurgeExpired deletes tokens that expired before cutoff, walking the
// expiry index from its oldest, at most batch per transaction, and stops
// early, without error, when ctx ends. It runs on one instance at a time:
// when another instance is purging, it returns at once with nothing done.
// It returns how many tokens it deleted in how many transactions.
func (s *pgStore) PurgeExpired(ctx context.Context, by actor, cutoff time.Time, batch int) (deleted, txs int, err error) {
	limit := unixNano(cutoff)
	_, err = s.withPurgeLock(pgLockPurgeTokens, func(conn *pgxpool.Conn) error {
		for ctx.Err() == nil {
			n := 0
			// A batch that has begun finishes: ctx is checked between batches.
			err := s.updateOn(conn, func(ctx context.Context, tx pgx.Tx, c *pgChanges) error {
				rows, err := tx.Query(ctx, pgSQLPurgeTokens, limit, batch)
				if err != nil {
					return err
				}
				purged, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (tokenRecord, error) { return scanToken(r) })
				if err != nil {
					return err
				}
				n = len(purged)
				owners := map[uint64]userRecord{}
				evs := make([]auditEvent, 0, n)
				for _, t := range purged {
					c.gone = append(c.gone, t.Hash)
					u, ok := owners[t.Owner]
					if !ok {
						if u, err = pgUserOf(ctx, tx, t.Owner); err != nil {
							return err
						}
						owners[t.Owner] = u
					}
					evs = append(evs, newAuditEvent(by, kindTokenPurged).about(u).ofToken(t))
				}
				return appendPGEvents(ctx, tx, evs...)
			})
			if err != nil {
				return fmt.Errorf("purge expired tokens: %w", err)
			}
			txs++
			deleted += n
			if n < batch {
				break
			}
		}
		return nil
	})
	return deleted, txs, err
}

// FlushLastUsed records uses in one transaction. A token that no longer
// exists is skipped, never re-created, and a recorded time is never moved
// backwards, whichever instance flushes first: a use is written only over
// an older one (the GREATEST of the two, with its address). The rows are
// locked in id order, so that instances flushing together never deadlock.
func (s *pgStore) FlushLastUsed(uses map[uint64]lastUse) error {
	if len(uses) == 0 {
		return nil
	}
	ids := make([]int64, 0, len(uses))
	for id := range uses {
		ids = append(ids, idParam(id))
	}
	slices.Sort(ids)
	ats := make([]int64, len(ids))
	ips := make([]string, len(ids))
	for i, id := range ids {
		u := uses[uint64(id)]
		ats[i], ips[i] = unixNano(u.At), u.IP
	}
	ctx, cancel := s.opContext()
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT 1 FROM tokens WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE", ids); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `UPDATE tokens t SET last_used_at = u.at, last_used_ip = u.ip
			FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS u(id, at, ip)
			WHERE t.id = u.id AND (t.last_used_at IS NULL OR t.last_used_at < u.at)`, ids, ats, ips)
		return err
	})
	return pgError(err)
}

// ---- sessions ----

const pgSessionColumns = "s.hash, s.user_id, s.created_at, s.expires_at, s.last_seen_at, s.signed_in_at, s.addr, s.agent, s.form_keys"

func scanSession(r scanner, extra ...any) (sessionHash, sessionRecord, error) {
	var rec sessionRecord
	var hash []byte
	var user, created, expires, seen, signed int64
	dest := append([]any{&hash, &user, &created, &expires, &seen, &signed, &rec.Addr, &rec.Agent, &rec.FormKeys}, extra...)
	if err := r.Scan(dest...); err != nil {
		return sessionHash{}, rec, err
	}
	h, err := hashOf(hash)
	if err != nil {
		return sessionHash{}, rec, fmt.Errorf("session: %w", err)
	}
	rec.User = uint64(user)
	rec.CreatedAt, rec.ExpiresAt, rec.LastSeenAt, rec.SignedInAt = nanoTime(created), nanoTime(expires), nanoTime(seen), nanoTime(signed)
	return h, rec, nil
}

// CreateSession stores rec under h. When replaced is not nil, that session
// is deleted in the same transaction (a new id at every sign-in). When the
// user then holds more than limit sessions (0: no limit), the oldest end;
// the user's row is locked so that concurrent sign-ins count exactly. It
// returns errNotFound when rec.User does not exist.
func (s *pgStore) CreateSession(by actor, h sessionHash, rec sessionRecord, replaced *sessionHash, limit int) error {
	ctx, cancel := s.opContext()
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		u, err := scanUser(tx.QueryRow(ctx, "SELECT "+pgUserColumns+" FROM users u WHERE u.id = $1 FOR NO KEY UPDATE", idParam(rec.User)))
		if err != nil {
			return notFound(err)
		}
		evs, err := pgSigninEvents(ctx, tx, by, u)
		if err != nil {
			return err
		}
		if replaced != nil {
			if _, err := tx.Exec(ctx, "DELETE FROM sessions WHERE hash = $1", replaced[:]); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, `INSERT INTO sessions (hash, user_id, created_at, expires_at, last_seen_at, signed_in_at, addr, agent)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			h[:], idParam(rec.User), unixNano(rec.CreatedAt), unixNano(rec.ExpiresAt), unixNano(rec.LastSeenAt),
			unixNano(rec.SignedInAt), rec.Addr, rec.Agent)
		switch {
		case pgConstraint(err) == "sessions_pkey":
			return errors.New("session hash collision")
		case err != nil:
			return err
		}
		if limit > 0 {
			// The oldest go; the new one is the newest, and never goes.
			_, err = tx.Exec(ctx, `DELETE FROM sessions WHERE hash IN (
					SELECT hash FROM sessions WHERE user_id = $1 AND hash <> $2 ORDER BY created_at, hash
					LIMIT greatest((SELECT count(*) FROM sessions WHERE user_id = $1) - $3, 0))`,
				idParam(rec.User), h[:], limit)
			if err != nil {
				return err
			}
		}
		return appendPGEvents(ctx, tx, evs...)
	})
	return pgError(err)
}

// SessionByHash returns the session stored under h and its user, or
// errNotFound. It does not check the lifetimes.
func (s *pgStore) SessionByHash(h sessionHash) (sessionRecord, userRecord, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	var u userRecord
	var uid, ucreated, uchanged int64
	_, rec, err := scanSession(s.pool.QueryRow(ctx, pgSQLSessionByHash, h[:]),
		&uid, &u.Name, &u.PasswordHash, &u.Admin, &ucreated, &uchanged)
	if err != nil {
		return sessionRecord{}, userRecord{}, pgError(notFound(err))
	}
	u.ID, u.CreatedAt, u.PasswordChangedAt = uint64(uid), nanoTime(ucreated), nanoTime(uchanged)
	return rec, u, nil
}

// execOne runs a statement that changes one row, and returns errNotFound
// when it changed none.
func (s *pgStore) execOne(sql string, args ...any) error {
	ctx, cancel := s.opContext()
	defer cancel()
	tag, err := s.pool.Exec(ctx, sql, args...)
	if err != nil {
		return pgError(err)
	}
	if tag.RowsAffected() == 0 {
		return errNotFound
	}
	return nil
}

// TouchSession records that the session under h was seen at now from addr.
// It returns errNotFound when there is no such session.
func (s *pgStore) TouchSession(h sessionHash, now time.Time, addr string) error {
	return s.execOne("UPDATE sessions SET last_seen_at = $2, addr = $3 WHERE hash = $1", h[:], unixNano(now), addr)
}

// ConfirmSession records that the session under h gave its password at
// now, which opens sudo mode. It returns errNotFound when there is no such
// session.
func (s *pgStore) ConfirmSession(h sessionHash, now time.Time) error {
	return s.execOne("UPDATE sessions SET signed_in_at = $2, last_seen_at = $2 WHERE hash = $1", h[:], unixNano(now))
}

// ClaimFormKey records key as used by the session under h and reports
// whether it was not used before, in one statement: of two claims at once
// the row lock lets one through.
func (s *pgStore) ClaimFormKey(h sessionHash, key string) (bool, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	var claimed, found bool
	err := s.pool.QueryRow(ctx, `WITH c AS (
			UPDATE sessions SET form_keys = (form_keys || $2::text)[greatest(cardinality(form_keys) + 2 - $3, 1):]
			WHERE hash = $1 AND NOT ($2 = ANY (form_keys)) RETURNING true)
		SELECT EXISTS (SELECT FROM c), EXISTS (SELECT FROM sessions WHERE hash = $1)`,
		h[:], key, formKeysPerSession).Scan(&claimed, &found)
	switch {
	case err != nil:
		return false, pgError(err)
	case !found:
		return false, errNotFound
	}
	return claimed, nil
}

// ReleaseFormKey forgets that the session under h used key.
func (s *pgStore) ReleaseFormKey(h sessionHash, key string) error {
	return s.execOne("UPDATE sessions SET form_keys = array_remove(form_keys, $2) WHERE hash = $1", h[:], key)
}

// DeleteSession deletes the session under h if it belongs to user (or user
// is anyOwner). It returns errNotFound otherwise.
func (s *pgStore) DeleteSession(by actor, h sessionHash, user uint64) error {
	ctx, cancel := s.opContext()
	defer cancel()
	return pgError(pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var holder int64
		err := tx.QueryRow(ctx, "DELETE FROM sessions WHERE hash = $1 AND ($2::bigint = 0 OR user_id = $2) RETURNING user_id", h[:], idParam(user)).Scan(&holder)
		if err != nil {
			return notFound(err)
		}
		return appendPGAbout(ctx, tx, newAuditEvent(by, sessionEndKind(user)), uint64(holder))
	}))
}

// SessionsOf returns the sessions of user, newest first, expired ones
// included (the caller knows the lifetimes).
func (s *pgStore) SessionsOf(user uint64) ([]storedSession, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	rows, err := s.pool.Query(ctx, pgSQLSessionsOf, idParam(user))
	if err != nil {
		return nil, pgError(err)
	}
	var out []storedSession
	for rows.Next() {
		h, rec, err := scanSession(rows)
		if err != nil {
			rows.Close()
			return nil, pgError(err)
		}
		out = append(out, storedSession{hash: h, rec: rec})
	}
	return out, pgError(rows.Err())
}

// EndOtherSessions deletes every session of user but keep and returns how
// many it deleted.
func (s *pgStore) EndOtherSessions(by actor, user uint64, keep sessionHash) (int, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	n := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, "DELETE FROM sessions WHERE user_id = $1 AND hash <> $2", idParam(user), keep[:])
		if n = int(tag.RowsAffected()); err != nil || n == 0 {
			return err
		}
		return appendPGAbout(ctx, tx, newAuditEvent(by, kindSessionEnded).withDetail("%s", plural(n, "session")), user)
	})
	return n, pgError(err)
}

// PurgeSessions deletes every session that has passed its absolute expiry
// or been idle for idle at now, and returns how many it deleted: at most
// sessionPurgeBatch per transaction, stopping early, without error, when
// ctx ends. It runs on one instance at a time: when another instance is
// purging, it returns 0 at once.
func (s *pgStore) PurgeSessions(ctx context.Context, now time.Time, idle time.Duration) (int, error) {
	total := 0
	expired, idleSince := unixNano(now), unixNano(now.Add(-idle))
	_, err := s.withPurgeLock(pgLockPurgeSessions, func(conn *pgxpool.Conn) error {
		for ctx.Err() == nil {
			opCtx, cancel := s.opContext()
			tag, err := conn.Exec(opCtx, pgSQLPurgeSessions, expired, idleSince, sessionPurgeBatch)
			cancel()
			if err != nil {
				return fmt.Errorf("purge sessions: %w", pgError(err))
			}
			total += int(tag.RowsAffected())
			if tag.RowsAffected() < sessionPurgeBatch {
				break
			}
		}
		return nil
	})
	return total, err
}

// ---- consistency ----

// Check verifies what the schema's constraints do not: that the schema is
// this binary's, that every user's and client's name key is its
// lower-cased name as tokend lowers it, and that each access token of a
// grant has the grant's user and client (checkOAuth). It returns every
// problem found, joined.
func (s *pgStore) Check() error {
	ctx, cancel := s.opContext()
	defer cancel()
	var problems []error
	bad := func(format string, args ...any) { problems = append(problems, fmt.Errorf(format, args...)) }
	migrations, err := pgMigrations()
	if err != nil {
		return err
	}
	var version int
	if err := s.pool.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM tokend_schema").Scan(&version); err != nil {
		return pgError(err)
	}
	if version != len(migrations) {
		bad("schema version %d, want %d", version, len(migrations))
	}
	rows, err := s.pool.Query(ctx, "SELECT id, name, name_key FROM users")
	if err != nil {
		return pgError(err)
	}
	for rows.Next() {
		var id int64
		var name, key string
		if err := rows.Scan(&id, &name, &key); err != nil {
			rows.Close()
			return pgError(err)
		}
		if key != strings.ToLower(name) {
			bad("user %d (%q) has the name key %q", id, name, key)
		}
	}
	if err := rows.Err(); err != nil {
		return pgError(err)
	}
	if err := s.checkOAuth(ctx, bad); err != nil {
		return pgError(err)
	}
	if err := s.checkAudit(ctx, bad); err != nil {
		return pgError(err)
	}
	return errors.Join(problems...)
}
