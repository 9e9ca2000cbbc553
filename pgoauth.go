package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The OAuth store (oauthstore.go) of the PostgreSQL engine, on the tables
// of migrations/0004_oauth.sql.
//
// Locking, beside pgstore.go's order (admins lock, user's row, then the
// rows of tokens or sessions): a client's row comes after its user's, and
// a grant's row before the rows of its tokens and refresh tokens. A
// redemption locks the user, the client, then the code or device request;
// a refresh the user, then the grant; a removal of a user or a client
// locks its grants, in id order, before deleting their tokens.
//
// A use of a code, device request or refresh token that was used before
// revokes the grant the first use made and answers errCodeUsed: the
// method's transaction deletes the grant and commits, and only then does
// the method fail. Of two uses at once, the row lock lets one through
// first; the second then finds the code used, so two redemptions of one
// code make one grant, which the second revokes, and of two refreshes
// with one token the first rotates it and the second revokes the grant,
// the first's new tokens with it.

// pgLockPurgeOAuth: one OAuth purge at a time (see pgLockMigrate).
const pgLockPurgeOAuth int64 = 0x746f6b656e64_0005

// The hot statements of the OAuth store, named for
// TestPGHotQueriesUseIndexes.
const (
	pgSQLGrantsOf = "SELECT " + pgGrantColumns + `,
			(SELECT max(t.last_used_at) FROM tokens t WHERE t.grant_id = g.id)
		FROM grants g WHERE g.user_id = $1 ORDER BY g.id DESC`
	pgSQLGrantOfRefresh = "SELECT " + pgGrantColumns + " FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id WHERE r.hash = $1"
	pgSQLPurgeCodes     = `DELETE FROM auth_codes WHERE hash = ANY (ARRAY(
			SELECT hash FROM auth_codes WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED))`
	pgSQLPurgeDevice = `DELETE FROM device_auths WHERE hash = ANY (ARRAY(
			SELECT hash FROM device_auths WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED))`
	pgSQLExpiredGrants = "SELECT id FROM grants WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED"
	pgSQLGrantTokens   = "DELETE FROM tokens WHERE grant_id = ANY ($1) RETURNING hash"
)

// ---- clients ----

const pgClientColumns = "c.id, c.name, c.redirect_uris, c.public, c.device, c.secret_hash, c.access_ttl, c.created_at, c.created_by"

func scanClient(r scanner) (clientRecord, error) {
	var c clientRecord
	var secret []byte
	var ttl, created, by int64
	if err := r.Scan(&c.ID, &c.Name, &c.RedirectURIs, &c.Public, &c.Device, &secret, &ttl, &created, &by); err != nil {
		return clientRecord{}, err
	}
	if secret != nil {
		h, err := hashOf(secret)
		if err != nil {
			return clientRecord{}, fmt.Errorf("client %q: %w", c.ID, err)
		}
		sh := tokenHash(h)
		c.SecretHash = &sh
	}
	if len(c.RedirectURIs) == 0 {
		c.RedirectURIs = nil
	}
	c.AccessTTL, c.CreatedAt, c.CreatedBy = time.Duration(ttl), nanoTime(created), uint64(by)
	return c, nil
}

// CreateClient stores c; errNameTaken when its name (ignoring case) or
// its id is taken.
func (s *pgStore) CreateClient(by actor, c *clientRecord) error {
	ctx, cancel := s.opContext()
	defer cancel()
	var secret []byte
	if c.SecretHash != nil {
		secret = c.SecretHash[:]
	}
	uris := c.RedirectURIs
	if uris == nil {
		uris = []string{}
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO clients (id, name, name_key, redirect_uris, public, device, secret_hash, access_ttl, created_at, created_by)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)`,
			c.ID, c.Name, strings.ToLower(c.Name), uris, c.Public, c.Device, secret, int64(c.AccessTTL),
			unixNano(c.CreatedAt), idParam(c.CreatedBy))
		if err != nil {
			return err
		}
		return appendPGEvents(ctx, tx, clientEvent(by, kindClientAdded, c))
	})
	switch pgConstraint(err) {
	case "clients_name_key", "clients_pkey":
		return errNameTaken
	}
	return pgError(err)
}

// ClientByID returns client id, or errNotFound.
func (s *pgStore) ClientByID(id string) (clientRecord, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	c, err := scanClient(s.pool.QueryRow(ctx, "SELECT "+pgClientColumns+" FROM clients c WHERE c.id = $1", id))
	return c, pgError(notFound(err))
}

// Clients returns every client, by name (ignoring case, in byte order as
// the bbolt engine sorts them).
func (s *pgStore) Clients() ([]clientRecord, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	rows, err := s.pool.Query(ctx, "SELECT "+pgClientColumns+` FROM clients c ORDER BY c.name_key COLLATE "C"`)
	if err != nil {
		return nil, pgError(err)
	}
	out := []clientRecord{}
	for rows.Next() {
		c, err := scanClient(rows)
		if err != nil {
			rows.Close()
			return nil, pgError(err)
		}
		out = append(out, c)
	}
	return out, pgError(rows.Err())
}

// DeleteClient removes client id, every grant it holds with their tokens,
// and (by cascade) its codes and device requests; errNotFound for an
// unknown client.
func (s *pgStore) DeleteClient(by actor, id string) (clientRecord, error) {
	var c clientRecord
	err := s.update(func(ctx context.Context, tx pgx.Tx, ch *pgChanges) error {
		var err error
		c, err = scanClient(tx.QueryRow(ctx, "SELECT "+pgClientColumns+" FROM clients c WHERE c.id = $1 FOR UPDATE", id))
		if err != nil {
			return notFound(err)
		}
		grants, err := lockPGGrants(ctx, tx, "client_id = $1", id)
		if err != nil {
			return err
		}
		if _, err := deletePGGrants(ctx, tx, grants, ch); err != nil {
			return err
		}
		if _, err = tx.Exec(ctx, "DELETE FROM clients WHERE id = $1", id); err != nil {
			return err
		}
		return appendPGEvents(ctx, tx, clientEvent(by, kindClientRemoved, &c))
	})
	if err != nil {
		return clientRecord{}, err
	}
	return c, nil
}

// ---- grants ----

const pgGrantColumns = "g.id, g.client_id, g.user_id, g.scopes, g.created_at, g.refreshed_at, g.expires_at"

func scanGrant(r scanner, extra ...any) (grantRecord, error) {
	var g grantRecord
	var id, user, created, expires int64
	var refreshed *int64
	dest := append([]any{&id, &g.Client, &user, &g.Scopes, &created, &refreshed, &expires}, extra...)
	if err := r.Scan(dest...); err != nil {
		return grantRecord{}, err
	}
	g.ID, g.User, g.CreatedAt, g.ExpiresAt = uint64(id), uint64(user), nanoTime(created), nanoTime(expires)
	if refreshed != nil {
		g.RefreshedAt = nanoTime(*refreshed)
	}
	return g, nil
}

// lockPGGrants locks the grants that where (on grants, with args) selects,
// in id order, and returns their ids.
func lockPGGrants(ctx context.Context, tx pgx.Tx, where string, args ...any) ([]int64, error) {
	rows, err := tx.Query(ctx, "SELECT id FROM grants WHERE "+where+" ORDER BY id FOR UPDATE", args...)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[int64])
}

// deletePGGrants deletes grants ids, which the caller has locked, with
// their access tokens (noted in c) and refresh tokens, and returns how many
// access tokens went.
func deletePGGrants(ctx context.Context, tx pgx.Tx, ids []int64, c *pgChanges) (int, error) {
	if len(ids) == 0 {
		return 0, nil
	}
	rows, err := tx.Query(ctx, pgSQLGrantTokens, ids)
	if err != nil {
		return 0, err
	}
	n, err := collectGone(rows, c)
	if err != nil {
		return n, err
	}
	_, err = tx.Exec(ctx, "DELETE FROM grants WHERE id = ANY ($1)", ids)
	return n, err
}

// deletePGGrantsOf deletes the grants of user with their tokens, and the
// codes and device requests the user approved that are still in flight,
// so that none of them makes a grant afterwards. It returns how many
// access tokens went. The caller holds the user's row.
func deletePGGrantsOf(ctx context.Context, tx pgx.Tx, user uint64, c *pgChanges) (int, error) {
	ids, err := lockPGGrants(ctx, tx, "user_id = $1", idParam(user))
	if err != nil {
		return 0, err
	}
	n, err := deletePGGrants(ctx, tx, ids, c)
	if err != nil {
		return n, err
	}
	if _, err := tx.Exec(ctx, "DELETE FROM auth_codes WHERE user_id = $1", idParam(user)); err != nil {
		return n, err
	}
	_, err = tx.Exec(ctx, "DELETE FROM device_auths WHERE user_id = $1", idParam(user))
	return n, err
}

// GrantsOf returns the grants of user, newest first, each with LastUsedAt:
// the latest of its refresh and its access tokens' last use.
func (s *pgStore) GrantsOf(user uint64) ([]grantRecord, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	rows, err := s.pool.Query(ctx, pgSQLGrantsOf, idParam(user))
	if err != nil {
		return nil, pgError(err)
	}
	out := []grantRecord{}
	for rows.Next() {
		var used *int64
		g, err := scanGrant(rows, &used)
		if err != nil {
			rows.Close()
			return nil, pgError(err)
		}
		if used != nil || !g.RefreshedAt.IsZero() {
			last := g.RefreshedAt
			if used != nil && nanoTime(*used).After(last) {
				last = nanoTime(*used)
			}
			g.LastUsedAt = &last
		}
		out = append(out, g)
	}
	return out, pgError(rows.Err())
}

// DeleteGrant revokes grant id of owner (anyOwner: of anyone) with its
// tokens and returns it; errNotFound otherwise.
func (s *pgStore) DeleteGrant(by actor, id, owner uint64) (grantRecord, error) {
	var g grantRecord
	err := s.update(func(ctx context.Context, tx pgx.Tx, c *pgChanges) error {
		var err error
		g, err = scanGrant(tx.QueryRow(ctx, "SELECT "+pgGrantColumns+" FROM grants g WHERE g.id = $1 AND ($2::bigint = 0 OR g.user_id = $2) FOR UPDATE",
			idParam(id), idParam(owner)))
		if err != nil {
			return notFound(err)
		}
		if _, err = deletePGGrants(ctx, tx, []int64{idParam(id)}, c); err != nil {
			return err
		}
		return appendPGAbout(ctx, tx, newAuditEvent(by, kindGrantRevoked).ofGrant(g), g.User)
	})
	if err != nil {
		return grantRecord{}, err
	}
	return g, nil
}

// GrantOfRefresh returns the grant that refresh token h, live or used,
// belongs to; errNotFound for an unknown one.
func (s *pgStore) GrantOfRefresh(h tokenHash) (grantRecord, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	g, err := scanGrant(s.pool.QueryRow(ctx, pgSQLGrantOfRefresh, h[:]))
	return g, pgError(notFound(err))
}

// issuePGGrant stores a new grant of client to user with scopes, made at
// now, and the first tokens of issue, and returns both. The caller holds
// the user's row (FOR NO KEY UPDATE), so that concurrent grants count
// exactly: errTooManyGrants past maxGrantsPerUser. errNotFound when the
// client or user is gone.
func issuePGGrant(ctx context.Context, tx pgx.Tx, client string, user uint64, scopes []string, now time.Time, issue *oauthIssue) (grantRecord, tokenRecord, error) {
	var full bool
	err := tx.QueryRow(ctx, "SELECT count(*) >= $2 FROM (SELECT 1 FROM grants WHERE user_id = $1 LIMIT $2) AS held",
		idParam(user), maxGrantsPerUser).Scan(&full)
	if err != nil {
		return grantRecord{}, tokenRecord{}, err
	}
	if full {
		return grantRecord{}, tokenRecord{}, errTooManyGrants
	}
	if scopes == nil {
		scopes = []string{}
	}
	g := grantRecord{Client: client, User: user, Scopes: scopes, CreatedAt: now, ExpiresAt: issue.RefreshUntil}
	var id int64
	err = tx.QueryRow(ctx, `INSERT INTO grants (client_id, user_id, scopes, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5) RETURNING id`,
		client, idParam(user), scopes, unixNano(now), unixNano(g.ExpiresAt)).Scan(&id)
	if pgForeignKeyViolation(err) {
		return grantRecord{}, tokenRecord{}, errNotFound
	}
	if err != nil {
		return grantRecord{}, tokenRecord{}, err
	}
	g.ID = uint64(id)
	t, err := issuePGTokens(ctx, tx, g, issue)
	return g, t, err
}

// issuePGTokens stores the access and refresh tokens of issue for grant g
// and returns the access token as stored.
func issuePGTokens(ctx context.Context, tx pgx.Tx, g grantRecord, issue *oauthIssue) (tokenRecord, error) {
	t := issue.Access
	if t.ExpiresAt == nil {
		return tokenRecord{}, errors.New("an OAuth access token must expire")
	}
	t.Owner, t.Grant, t.Client, t.Hash = g.User, g.ID, g.Client, issue.AccessHash
	if err := insertToken(ctx, tx, &t); err != nil {
		return tokenRecord{}, err
	}
	_, err := tx.Exec(ctx, "INSERT INTO refresh_tokens (hash, grant_id) VALUES ($1, $2)", issue.RefreshHash[:], idParam(g.ID))
	if pgConstraint(err) == "refresh_tokens_pkey" {
		return tokenRecord{}, errors.New("refresh token hash collision")
	}
	return t, err
}

// lockPGGrantee locks the row of user (FOR NO KEY UPDATE: grants are
// counted under it) and then client's (FOR KEY SHARE: it stays while the
// grant is made), in the locking order; errNotFound when either is gone.
func lockPGGrantee(ctx context.Context, tx pgx.Tx, user int64, client string) error {
	var one int
	if err := tx.QueryRow(ctx, "SELECT 1 FROM users WHERE id = $1 FOR NO KEY UPDATE", user).Scan(&one); err != nil {
		return notFound(err)
	}
	return notFound(tx.QueryRow(ctx, "SELECT 1 FROM clients WHERE id = $1 FOR KEY SHARE", client).Scan(&one))
}

// ---- authorization codes ----

const pgCodeColumns = "user_id, client_id, scopes, redirect_uri, challenge, created_at, expires_at, grant_id"

func scanCode(r scanner) (authCodeRecord, error) {
	var a authCodeRecord
	var user, created, expires int64
	var grant *int64
	if err := r.Scan(&user, &a.Client, &a.Scopes, &a.RedirectURI, &a.Challenge, &created, &expires, &grant); err != nil {
		return authCodeRecord{}, err
	}
	a.User, a.CreatedAt, a.ExpiresAt = uint64(user), nanoTime(created), nanoTime(expires)
	if grant != nil {
		a.Grant = uint64(*grant)
	}
	return a, nil
}

// CreateAuthCode stores code c under h; errNotFound when its client or
// user does not exist.
func (s *pgStore) CreateAuthCode(h tokenHash, c authCodeRecord) error {
	ctx, cancel := s.opContext()
	defer cancel()
	scopes := c.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO auth_codes (hash, client_id, user_id, scopes, redirect_uri, challenge, created_at, expires_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		h[:], c.Client, idParam(c.User), scopes, c.RedirectURI, c.Challenge, unixNano(c.CreatedAt), unixNano(c.ExpiresAt))
	switch {
	case pgForeignKeyViolation(err):
		return errNotFound
	case pgConstraint(err) == "auth_codes_pkey":
		return errors.New("authorization code hash collision")
	}
	return pgError(err)
}

// AuthCode returns the code stored under h, or errNotFound.
func (s *pgStore) AuthCode(h tokenHash) (authCodeRecord, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	a, err := scanCode(s.pool.QueryRow(ctx, "SELECT "+pgCodeColumns+" FROM auth_codes WHERE hash = $1", h[:]))
	return a, pgError(notFound(err))
}

// RedeemAuthCode makes the grant of code h and issues its first tokens
// (see oauthStore). A code used before revokes its grant, committed, and
// gives errCodeUsed, whether or not it has expired since.
func (s *pgStore) RedeemAuthCode(by actor, h tokenHash, now time.Time, issue *oauthIssue) (grantRecord, tokenRecord, error) {
	var g grantRecord
	var t tokenRecord
	used := false
	err := s.update(func(ctx context.Context, tx pgx.Tx, c *pgChanges) error {
		used = false
		var user int64
		var client string
		if err := tx.QueryRow(ctx, "SELECT user_id, client_id FROM auth_codes WHERE hash = $1", h[:]).Scan(&user, &client); err != nil {
			return notFound(err)
		}
		if err := lockPGGrantee(ctx, tx, user, client); err != nil {
			return err
		}
		code, err := scanCode(tx.QueryRow(ctx, "SELECT "+pgCodeColumns+" FROM auth_codes WHERE hash = $1 FOR UPDATE", h[:]))
		if err != nil {
			return notFound(err) // gone meanwhile
		}
		switch {
		case code.Grant != 0:
			used = true
			return revokeReusedPGGrant(ctx, tx, by, idParam(code.Grant), c)
		case !now.Before(code.ExpiresAt):
			return errTokenExpired
		}
		if g, t, err = issuePGGrant(ctx, tx, code.Client, code.User, code.Scopes, now, issue); err != nil {
			return err
		}
		if _, err = tx.Exec(ctx, "UPDATE auth_codes SET grant_id = $2 WHERE hash = $1", h[:], idParam(g.ID)); err != nil {
			return err
		}
		return appendPGGrantEvent(ctx, tx, by, g)
	})
	switch {
	case err != nil:
		return grantRecord{}, tokenRecord{}, err
	case used:
		return grantRecord{}, tokenRecord{}, errCodeUsed
	}
	return g, t, nil
}

// ---- device authorization requests ----

const pgDeviceColumns = "client_id, scopes, created_at, expires_at, poll_interval, last_poll, state, user_id, approved, grant_id"

func scanDevice(r scanner) (deviceAuthRecord, error) {
	var d deviceAuthRecord
	var created, expires, interval int64
	var lastPoll, user, grant *int64
	var state int16
	if err := r.Scan(&d.Client, &d.Scopes, &created, &expires, &interval, &lastPoll, &state, &user, &d.Approved, &grant); err != nil {
		return deviceAuthRecord{}, err
	}
	d.CreatedAt, d.ExpiresAt, d.Interval, d.State = nanoTime(created), nanoTime(expires), time.Duration(interval), deviceState(state)
	if lastPoll != nil {
		d.LastPoll = nanoTime(*lastPoll)
	}
	if user != nil {
		d.User = uint64(*user)
	}
	if grant != nil {
		d.Grant = uint64(*grant)
	}
	if len(d.Approved) == 0 {
		d.Approved = nil
	}
	return d, nil
}

// CreateDeviceAuth stores request d under device code hash dev and user
// code hash uc. An expired request (at d.CreatedAt) holding uc goes;
// errCodeTaken when one not yet expired holds it; errNotFound for an
// unknown client.
func (s *pgStore) CreateDeviceAuth(dev, uc tokenHash, d deviceAuthRecord) error {
	scopes := d.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	return s.update(func(ctx context.Context, tx pgx.Tx, _ *pgChanges) error {
		if _, err := tx.Exec(ctx, "DELETE FROM device_auths WHERE user_code_hash = $1 AND expires_at <= $2", uc[:], unixNano(d.CreatedAt)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO device_auths (hash, user_code_hash, client_id, scopes, created_at, expires_at, poll_interval, state)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			dev[:], uc[:], d.Client, scopes, unixNano(d.CreatedAt), unixNano(d.ExpiresAt), int64(d.Interval), int16(devicePending))
		switch {
		case pgForeignKeyViolation(err):
			return errNotFound
		case pgConstraint(err) == "device_auths_user_code_key":
			return errCodeTaken
		case pgConstraint(err) == "device_auths_pkey":
			return errors.New("device code hash collision")
		}
		return err
	})
}

// DeviceAuthByUserCode returns the request whose user code hashes to uc,
// or errNotFound.
func (s *pgStore) DeviceAuthByUserCode(uc tokenHash) (deviceAuthRecord, error) {
	ctx, cancel := s.opContext()
	defer cancel()
	d, err := scanDevice(s.pool.QueryRow(ctx, "SELECT "+pgDeviceColumns+" FROM device_auths WHERE user_code_hash = $1", uc[:]))
	return d, pgError(notFound(err))
}

// DecideDeviceAuth records user's answer to pending request uc.
// errNotFound for an unknown request or user, errTokenExpired when it
// expired at now, errCodeUsed when it was decided already.
func (s *pgStore) DecideDeviceAuth(uc tokenHash, user uint64, approve bool, scopes []string, now time.Time) error {
	return s.update(func(ctx context.Context, tx pgx.Tx, _ *pgChanges) error {
		d, err := scanDevice(tx.QueryRow(ctx, "SELECT "+pgDeviceColumns+" FROM device_auths WHERE user_code_hash = $1 FOR UPDATE", uc[:]))
		switch {
		case err != nil:
			return notFound(err)
		case !now.Before(d.ExpiresAt):
			return errTokenExpired
		case d.State != devicePending:
			return errCodeUsed
		}
		state, approved := deviceDenied, []string{}
		if approve {
			state = deviceApproved
			if scopes != nil {
				approved = scopes
			}
		}
		_, err = tx.Exec(ctx, "UPDATE device_auths SET state = $2, user_id = $3, approved = $4 WHERE user_code_hash = $1",
			uc[:], int16(state), idParam(user), approved)
		if pgForeignKeyViolation(err) {
			return errNotFound
		}
		return err
	})
}

// PollDeviceAuth records a poll of request dev at now and returns the
// request as it was before, and whether the poll came too soon (the
// interval then grows by 5 s). The row lock makes polls at once count one
// after the other.
func (s *pgStore) PollDeviceAuth(dev tokenHash, now time.Time) (deviceAuthRecord, bool, error) {
	var d deviceAuthRecord
	var slowDown bool
	err := s.update(func(ctx context.Context, tx pgx.Tx, _ *pgChanges) error {
		var err error
		d, err = scanDevice(tx.QueryRow(ctx, "SELECT "+pgDeviceColumns+" FROM device_auths WHERE hash = $1 FOR UPDATE", dev[:]))
		if err != nil {
			return notFound(err)
		}
		slowDown = !d.LastPoll.IsZero() && now.Sub(d.LastPoll) < d.Interval
		interval := d.Interval
		if slowDown {
			interval += 5 * time.Second
		}
		_, err = tx.Exec(ctx, "UPDATE device_auths SET last_poll = $2, poll_interval = $3 WHERE hash = $1",
			dev[:], unixNano(now), int64(interval))
		return err
	})
	if err != nil {
		return deviceAuthRecord{}, false, err
	}
	return d, slowDown, nil
}

// RedeemDeviceAuth makes the grant of approved request dev and issues its
// first tokens, as RedeemAuthCode does for a code.
func (s *pgStore) RedeemDeviceAuth(by actor, dev tokenHash, now time.Time, issue *oauthIssue) (grantRecord, tokenRecord, error) {
	var g grantRecord
	var t tokenRecord
	used := false
	err := s.update(func(ctx context.Context, tx pgx.Tx, c *pgChanges) error {
		used = false
		var user *int64
		var client string
		if err := tx.QueryRow(ctx, "SELECT user_id, client_id FROM device_auths WHERE hash = $1", dev[:]).Scan(&user, &client); err != nil {
			return notFound(err)
		}
		if user != nil {
			if err := lockPGGrantee(ctx, tx, *user, client); err != nil {
				return err
			}
		}
		d, err := scanDevice(tx.QueryRow(ctx, "SELECT "+pgDeviceColumns+" FROM device_auths WHERE hash = $1 FOR UPDATE", dev[:]))
		switch {
		case err != nil:
			return notFound(err)
		case d.State == deviceIssued:
			used = true
			return revokeReusedPGGrant(ctx, tx, by, idParam(d.Grant), c)
		case !now.Before(d.ExpiresAt):
			return errTokenExpired
		case d.State != deviceApproved, user == nil || uint64(*user) != d.User:
			// Not approved (or approved since the first read, which then
			// locked no user): not yet.
			return errNotFound
		}
		if g, t, err = issuePGGrant(ctx, tx, d.Client, d.User, d.Approved, now, issue); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, "UPDATE device_auths SET state = $2, grant_id = $3 WHERE hash = $1", dev[:], int16(deviceIssued), idParam(g.ID))
		if err != nil {
			return err
		}
		return appendPGGrantEvent(ctx, tx, by, g)
	})
	switch {
	case err != nil:
		return grantRecord{}, tokenRecord{}, err
	case used:
		return grantRecord{}, tokenRecord{}, errCodeUsed
	}
	return g, t, nil
}

// ---- refresh ----

// RefreshGrant rotates refresh token h (see oauthStore). The grant's row
// lock orders refreshes of one grant: of two with one token at once, the
// first rotates and the second, finding it used, revokes the grant.
func (s *pgStore) RefreshGrant(by actor, h tokenHash, now time.Time, issue *oauthIssue) (grantRecord, tokenRecord, error) {
	var g grantRecord
	var t tokenRecord
	used := false
	err := s.update(func(ctx context.Context, tx pgx.Tx, c *pgChanges) error {
		used = false
		var user, grant int64
		err := tx.QueryRow(ctx, "SELECT g.user_id, g.id FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id WHERE r.hash = $1", h[:]).
			Scan(&user, &grant)
		if err != nil {
			return notFound(err)
		}
		var one int
		if err := tx.QueryRow(ctx, "SELECT 1 FROM users WHERE id = $1 FOR KEY SHARE", user).Scan(&one); err != nil {
			return notFound(err)
		}
		g, err = scanGrant(tx.QueryRow(ctx, "SELECT "+pgGrantColumns+" FROM grants g WHERE g.id = $1 FOR UPDATE", grant))
		if err != nil {
			return notFound(err) // revoked meanwhile
		}
		var wasUsed bool
		if err := tx.QueryRow(ctx, "SELECT used FROM refresh_tokens WHERE hash = $1", h[:]).Scan(&wasUsed); err != nil {
			return notFound(err)
		}
		switch {
		case wasUsed:
			used = true
			if _, err := deletePGGrants(ctx, tx, []int64{grant}, c); err != nil {
				return err
			}
			return appendPGAbout(ctx, tx, newAuditEvent(by, kindGrantReused).ofGrant(g), g.User)
		case !now.Before(g.ExpiresAt):
			return errTokenExpired
		}
		rows, err := tx.Query(ctx, "DELETE FROM tokens WHERE grant_id = $1 RETURNING hash", grant)
		if err != nil {
			return err
		}
		if _, err := collectGone(rows, c); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "UPDATE refresh_tokens SET used = true WHERE hash = $1", h[:]); err != nil {
			return err
		}
		g.RefreshedAt, g.ExpiresAt = now, issue.RefreshUntil
		_, err = tx.Exec(ctx, "UPDATE grants SET refreshed_at = $2, expires_at = $3 WHERE id = $1",
			grant, unixNano(g.RefreshedAt), unixNano(g.ExpiresAt))
		if err != nil {
			return err
		}
		t, err = issuePGTokens(ctx, tx, g, issue)
		return err
	})
	switch {
	case err != nil:
		return grantRecord{}, tokenRecord{}, err
	case used:
		return grantRecord{}, tokenRecord{}, errCodeUsed
	}
	return g, t, nil
}

// ---- housekeeping ----

// PurgeOAuth deletes the codes and device requests expired at now, and the
// grants expired at now with their tokens, at most oauthPurgeBatch of each
// per transaction, stopping early, without error, when ctx ends. It runs
// on one instance at a time: when another is purging, it returns 0 at
// once. It returns how many codes, device requests and grants went.
func (s *pgStore) PurgeOAuth(ctx context.Context, now time.Time) (int, error) {
	total := 0
	at := unixNano(now)
	_, err := s.withPurgeLock(pgLockPurgeOAuth, func(conn *pgxpool.Conn) error {
		for _, sql := range []string{pgSQLPurgeCodes, pgSQLPurgeDevice} {
			for ctx.Err() == nil {
				opCtx, cancel := s.opContext()
				tag, err := conn.Exec(opCtx, sql, at, oauthPurgeBatch)
				cancel()
				if err != nil {
					return fmt.Errorf("purge OAuth requests: %w", pgError(err))
				}
				total += int(tag.RowsAffected())
				if tag.RowsAffected() < oauthPurgeBatch {
					break
				}
			}
		}
		for ctx.Err() == nil {
			n := 0
			err := s.updateOn(conn, func(ctx context.Context, tx pgx.Tx, c *pgChanges) error {
				rows, err := tx.Query(ctx, pgSQLExpiredGrants, at, oauthPurgeBatch)
				if err != nil {
					return err
				}
				ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
				if err != nil {
					return err
				}
				n = len(ids)
				_, err = deletePGGrants(ctx, tx, ids, c)
				return err
			})
			if err != nil {
				return fmt.Errorf("purge expired grants: %w", err)
			}
			total += n
			if n < oauthPurgeBatch {
				break
			}
		}
		return nil
	})
	return total, err
}

// checkOAuth reports to bad what the OAuth tables hold that the schema's
// constraints let through: a client whose name key is not its lower-cased
// name, and an access token whose owner or client is not its grant's.
func (s *pgStore) checkOAuth(ctx context.Context, bad func(format string, args ...any)) error {
	err := pgEach(ctx, s.pool, "SELECT id, name, name_key FROM clients", func(r pgx.Rows) error {
		var id, name, key string
		if err := r.Scan(&id, &name, &key); err != nil {
			return err
		}
		if key != strings.ToLower(name) {
			bad("client %q (%q) has the name key %q", id, name, key)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return pgEach(ctx, s.pool, `SELECT t.id, t.grant_id FROM tokens t JOIN grants g ON g.id = t.grant_id
		WHERE t.owner <> g.user_id OR t.client_id <> g.client_id`, func(r pgx.Rows) error {
		var id, grant int64
		if err := r.Scan(&id, &grant); err != nil {
			return err
		}
		bad("token %d is not of the user and client of its grant %d", id, grant)
		return nil
	})
}

// pgExportOAuth hands every client, then every grant with its refresh
// tokens, to to, from tx (see pgStore.Export). Codes and device requests
// in flight are not copied.
func pgExportOAuth(ctx context.Context, tx pgx.Tx, batch int, to importer) error {
	if err := pgExportRows(ctx, tx, batch, "SELECT "+pgClientColumns+" FROM clients c ORDER BY c.id",
		func(r scanner, _ ...any) (clientRecord, error) { return scanClient(r) }, to.ImportClients); err != nil {
		return err
	}
	// One row a refresh token, in grant order: a grant is complete when
	// the next one begins. Every grant has at least one refresh token.
	grants := &batcher[grantCopy]{ctx: ctx, size: batch, out: to.ImportGrants}
	var cur grantCopy
	err := pgEach(ctx, tx, "SELECT "+pgGrantColumns+`, r.hash, r.used
		FROM grants g LEFT JOIN refresh_tokens r ON r.grant_id = g.id ORDER BY g.id, r.hash`, func(r pgx.Rows) error {
		var hash []byte
		var used *bool
		g, err := scanGrant(r, &hash, &used)
		if err != nil {
			return err
		}
		if g.ID != cur.grant.ID {
			if cur.grant.ID != 0 {
				if err := grants.add(cur); err != nil {
					return err
				}
			}
			cur = grantCopy{grant: g}
		}
		if hash != nil {
			h, err := hashOf(hash)
			if err != nil {
				return fmt.Errorf("refresh token of grant %d: %w", g.ID, err)
			}
			cur.refresh = append(cur.refresh, refreshCopy{hash: h, used: used != nil && *used})
		}
		return nil
	})
	if err != nil {
		return err
	}
	if cur.grant.ID != 0 {
		if err := grants.add(cur); err != nil {
			return err
		}
	}
	return grants.flush()
}
