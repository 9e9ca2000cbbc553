package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	bolt "go.etcd.io/bbolt"
)

// `tokend copy -from SRC -to DST` moves a whole deployment between stores,
// each a bbolt file or a PostgreSQL database: every user with their
// password hash, every token with its hash, scopes, expiry, last use and
// hint (and, for a grant's access token, its grant and client), every
// session, every OAuth client and grant with the hashes of its refresh
// tokens, and the id sequences. Ids are kept, so the apps behind the proxy
// still know everyone by X-Auth-User-Id. Authorization codes and device
// requests in flight are left behind: they live for minutes, and a client
// whose code is lost asks the user again.
//
// The source is only read, from one consistent snapshot (a bbolt file
// opened read-only, which no server can hold meanwhile; one read-only
// REPEATABLE READ transaction on PostgreSQL). The target must hold no
// user, token or session, and takes the copy all or nothing: on
// PostgreSQL in one transaction, on bbolt in a temporary file that is
// moved into place once it is complete and checked (placeFile). Within
// that, records go in batches of copyBatch, not one write per record.
// Before the copy is made visible, the target's counts must equal what
// was read and a sample of its records must read back as they were read.

// copyBatch is how many records the copy writes at once: one bbolt write
// transaction, or one COPY statement on PostgreSQL.
const copyBatch = 5000

// copySamples is how many records of each kind the copy reads back from
// the target, chosen at random among all it wrote.
const copySamples = 64

// copyCounts is how many records of each kind a store holds. Refresh
// counts refresh tokens, used ones included.
type copyCounts struct {
	Users, Tokens, Sessions  int
	Clients, Grants, Refresh int
	// Second factors: TOTP secrets, passkeys, unused recovery codes.
	TOTP, Passkeys, Recovery int
}

func (c copyCounts) String() string {
	s := fmt.Sprintf("%d users, %d tokens, %d sessions", c.Users, c.Tokens, c.Sessions)
	if c.Clients+c.Grants+c.Refresh > 0 {
		s += fmt.Sprintf(", %d OAuth clients, %d grants with %d refresh tokens", c.Clients, c.Grants, c.Refresh)
	}
	if c.TOTP+c.Passkeys+c.Recovery > 0 {
		s += fmt.Sprintf(", %d authenticator apps, %d passkeys, %d recovery codes", c.TOTP, c.Passkeys, c.Recovery)
	}
	return s
}

// grantCopy is a grant as the copy moves it: with every refresh token it
// issued, by hash, used or not.
type grantCopy struct {
	grant   grantRecord
	refresh []refreshCopy
}

type refreshCopy struct {
	hash tokenHash
	used bool
}

// importer is a store that a deployment is being copied into: it takes
// records with the ids (and hashes) they already have, reports what it
// holds and where its id sequences stand, and reads records back for the
// copy's check. boltStore is one; pgImport, a transaction on a
// PostgreSQL store, is the other.
type importer interface {
	// ImportUsers stores users with their ids; errNameTaken when a name
	// is taken, ignoring case.
	ImportUsers(users []userRecord) error
	// ImportClients stores OAuth clients with their ids; errNameTaken
	// when a name is taken, ignoring case.
	ImportClients(clients []clientRecord) error
	// ImportGrants stores grants with their ids and their refresh tokens;
	// their users and clients are stored already.
	ImportGrants(grants []grantCopy) error
	// ImportTokens stores tokens with their ids and hashes; their owners,
	// and the grants of grants' tokens, are stored already.
	ImportTokens(tokens []tokenRecord) error
	// ImportSessions stores sessions under their hashes; their users are
	// stored already.
	ImportSessions(sessions []storedSession) error
	// ImportSecondFactors stores users' second factors (copytfa.go);
	// their users are stored already.
	ImportSecondFactors(list []secondFactorsCopy) error
	// IDSequences returns the last user, token and grant ids handed out.
	IDSequences() (idSequences, error)
	// RaiseIDSequences raises each sequence to at least its value in to,
	// never lowering one, and returns the sequences as they now stand.
	RaiseIDSequences(to idSequences) (idSequences, error)
	// Counts returns how many records of each kind it holds.
	Counts() (copyCounts, error)
	UserByID(id uint64) (userRecord, error)
	TokenByID(id, owner uint64) (tokenRecord, error)
	// TokenByHash reads back grants' tokens, which TokenByID leaves out.
	TokenByHash(h tokenHash) (tokenRecord, userRecord, error)
	SessionByHash(h sessionHash) (sessionRecord, userRecord, error)
	ClientByID(id string) (clientRecord, error)
	GrantOfRefresh(h tokenHash) (grantRecord, error)
}

// exporter is a store that a deployment is copied out of.
type exporter interface {
	// Export hands every user, then every OAuth client, then every grant,
	// then every token, then every session, then every user's second
	// factors to to, in batches of at most
	// batch, all from one consistent snapshot,
	// and returns the id sequences as they stood at that snapshot or
	// later. It stops at the first error, or when ctx ends.
	Export(ctx context.Context, batch int, to importer) (idSequences, error)
}

var (
	_ importer = (*boltStore)(nil)
	_ importer = (*pgImport)(nil)
	_ exporter = (*boltStore)(nil)
	_ exporter = (*pgStore)(nil)
)

// copyResult is what a copy wrote.
type copyResult struct {
	counts  copyCounts
	sampled int         // records read back and compared
	ids     idSequences // where the target's sequences stand
}

// runCopy is `tokend copy -from SRC -to DST`.
func runCopy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fset := flag.NewFlagSet("copy", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() {
		fmt.Fprint(stderr, "Usage: tokend copy -from SRC -to DST\n\n"+
			"Copy a whole deployment (users with their password hashes, tokens, sessions and\n"+
			"id sequences) from SRC to DST, each a bbolt file or a postgres:// URL, keeping\n"+
			"every id. SRC is only read; a bbolt SRC must not be held by a running server.\n"+
			"DST must hold no user, token or session, and gets the whole copy or nothing:\n"+
			"a missing bbolt DST is created. The counts and a sample of records are checked\n"+
			"before the copy is made visible.\n\nFlags:\n")
		fset.PrintDefaults()
	}
	from := fset.String("from", "", "the store to copy: a bbolt `file` or a postgres:// URL")
	to := fset.String("to", "", "the empty store to copy into: a bbolt `file` or a postgres:// URL")
	if _, err := parseArgs(fset, args, 0); err != nil {
		return err
	}
	if *from == "" || *to == "" {
		fset.Usage()
		return errors.New("copy: name both stores with -from and -to")
	}
	if sameStore(*from, *to) {
		return fmt.Errorf("copy: -from and -to name the same store, %s", storeName(*from))
	}

	src, err := openCopySource(ctx, *from)
	if err != nil {
		return fmt.Errorf("copy: source: %w", err)
	}
	defer src.Close()

	var res copyResult
	if isPostgresURL(*to) {
		res, err = copyToPG(ctx, src, *to)
	} else {
		res, err = copyToBolt(ctx, src, *to)
	}
	if err != nil {
		return fmt.Errorf("copy: %w; nothing was written to %s", err, storeName(*to))
	}
	fmt.Fprintf(stdout, "copied %s from %s to %s, and read back the counts and %d sampled records; new user ids start after %d, new token ids after %d\n",
		res.counts, storeName(*from), storeName(*to), res.sampled, res.ids.Users, res.ids.Tokens)
	return nil
}

// storeName is how messages name a store: a bbolt path as it is, a
// PostgreSQL URL without its password.
func storeName(db string) string {
	if !isPostgresURL(db) {
		return db
	}
	u, err := url.Parse(db)
	if err != nil {
		return "the PostgreSQL database" // the text may hold a password
	}
	return u.Redacted()
}

// sameStore reports whether a and b name one store: one file, however
// the paths spell it, or one URL.
func sameStore(a, b string) bool {
	if isPostgresURL(a) || isPostgresURL(b) {
		return a == b
	}
	if filepath.Clean(a) == filepath.Clean(b) {
		return true
	}
	ia, errA := os.Stat(a)
	ib, errB := os.Stat(b)
	return errA == nil && errB == nil && os.SameFile(ia, ib)
}

// copySource is an exporter that the copy closes.
type copySource interface {
	exporter
	Close() error
}

// openCopySource opens the store at db for reading only: a bbolt file
// read-only, as `tokend backup` does (refused within a second while a
// server holds it), or a PostgreSQL database whose every transaction is
// read-only.
func openCopySource(ctx context.Context, db string) (copySource, error) {
	if isPostgresURL(db) {
		return openPGSource(ctx, db)
	}
	st, err := openSource(db)
	switch {
	case errors.Is(err, errNoDatabase):
		return nil, fmt.Errorf("%w at %s; name an existing bbolt file or a postgres:// URL", errNoDatabase, db)
	case errors.Is(err, errDatabaseInUse):
		return nil, fmt.Errorf("%w; stop it before copying", err)
	case err != nil:
		return nil, err
	}
	return st, nil
}

// openPGSource connects to the PostgreSQL database at dbURL with every
// transaction read-only, and checks that it holds a tokend schema this
// binary reads. Unlike openPGStore it applies no migration and raises no
// sequence: it writes nothing.
func openPGSource(ctx context.Context, dbURL string) (*pgStore, error) {
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		// The parser's message may quote the URL, password included.
		return nil, errors.New("open database: not a valid PostgreSQL URL")
	}
	cfg.ConnConfig.RuntimeParams["default_transaction_read_only"] = "on"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", pgError(err))
	}
	s := &pgStore{pool: pool, auth: newAuthCache(defaultAuthCacheSize)}
	s.auth.trust(false)
	migrations, err := pgMigrations()
	if err != nil {
		pool.Close()
		return nil, err
	}
	var version int
	err = pool.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM tokend_schema").Scan(&version)
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "42P01": // undefined_table
		err = fmt.Errorf("%w at %s: it has no tokend tables", errNoDatabase, storeName(dbURL))
	case err != nil:
		err = fmt.Errorf("open database: %w", pgError(err))
	case version < 1:
		err = fmt.Errorf("%w at %s: it has no tokend schema", errNoDatabase, storeName(dbURL))
	case version > len(migrations):
		err = fmt.Errorf("open database: %w %d (this tokend understands %d)", errUnsupportedData, version, len(migrations))
	}
	if err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// copyToPG copies src into the PostgreSQL database at dbURL, creating its
// schema if it has none, in one transaction that first locks the tables
// against writers and refuses them if they hold anything.
func copyToPG(ctx context.Context, src exporter, dbURL string) (copyResult, error) {
	st, err := openPGStore(ctx, dbURL)
	if err != nil {
		return copyResult{}, fmt.Errorf("target: %w", err)
	}
	defer st.Close()
	var res copyResult
	err = pgx.BeginFunc(ctx, st.pool, func(tx pgx.Tx) error {
		// Servers on the target may read meanwhile; none writes until the
		// copy has committed or rolled back.
		if _, err := tx.Exec(ctx, "LOCK TABLE users, tokens, sessions, clients, grants, refresh_tokens, auth_codes, device_auths IN EXCLUSIVE MODE"); err != nil {
			return err
		}
		dst := &pgImport{ctx: ctx, tx: tx}
		if err := checkEmpty(dst, storeName(dbURL)); err != nil {
			return err
		}
		var err error
		if res, err = copyInto(ctx, src, dst); err != nil {
			return err
		}
		// Instances already running on the target forget what they hold.
		_, err = tx.Exec(ctx, "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
			pgInvalidateChannel, invalidationPayloads(nil, true))
		return err
	})
	return res, pgError(err)
}

// copyToBolt copies src into a new bbolt file at path, written beside it
// and moved into place once complete and checked. An existing file is
// replaced only if it holds no user, token or session; it stays open
// (read-only, so that no server starts on it) until then, and its id
// sequences carry over, so that no id it handed out is handed out again.
func copyToBolt(ctx context.Context, src exporter, path string) (copyResult, error) {
	var floor idSequences
	existing := false
	cur, err := openBoltCLIStore(path, readOnlyDB)
	switch {
	case errors.Is(err, errNoDatabase):
	case errors.Is(err, errDatabaseInUse):
		return copyResult{}, fmt.Errorf("target: %w; stop it before copying into it", err)
	case err != nil:
		return copyResult{}, fmt.Errorf("target: %w", err)
	default:
		defer cur.Close()
		existing = true
		if err := checkEmpty(cur, path); err != nil {
			return copyResult{}, err
		}
		if floor, err = cur.IDSequences(); err != nil {
			return copyResult{}, fmt.Errorf("target: %w", err)
		}
	}
	var res copyResult
	err = placeFile(path, existing, func(tmp string) error {
		st, err := openStore(tmp, lockTimeout)
		if err != nil {
			return err
		}
		if _, err = st.RaiseIDSequences(floor); err == nil {
			res, err = copyInto(ctx, src, st)
		}
		if cerr := st.Close(); err == nil {
			err = cerr
		}
		return err
	})
	return res, err
}

// errTargetNotEmpty refuses a copy into a store that holds anything.
var errTargetNotEmpty = errors.New("the target is not empty")

// checkEmpty returns errTargetNotEmpty, saying what it holds, unless dst
// holds no user, token or session.
func checkEmpty(dst importer, name string) error {
	c, err := dst.Counts()
	if err != nil {
		return fmt.Errorf("target: %w", err)
	}
	if c != (copyCounts{}) {
		return fmt.Errorf("%w: %s holds %s; copy into an empty store", errTargetNotEmpty, name, c)
	}
	return nil
}

// copyInto copies everything src holds into dst, raises dst's id
// sequences past the source's and past every id copied, and checks that
// dst holds as many records as were read and that a sample of them reads
// back unchanged.
func copyInto(ctx context.Context, src exporter, dst importer) (copyResult, error) {
	rec := &copyRecorder{importer: dst}
	seq, err := src.Export(ctx, copyBatch, rec)
	if err != nil {
		return copyResult{}, err
	}
	ids, err := dst.RaiseIDSequences(seq.atLeast(rec.maxIDs))
	if err != nil {
		return copyResult{}, fmt.Errorf("set the id sequences: %w", err)
	}
	got, err := dst.Counts()
	if err != nil {
		return copyResult{}, fmt.Errorf("count the copy: %w", err)
	}
	if got != rec.counts {
		return copyResult{}, fmt.Errorf("the target holds %s after the copy; the source gave %s", got, rec.counts)
	}
	sampled, err := rec.verify()
	if err != nil {
		return copyResult{}, err
	}
	return copyResult{counts: rec.counts, sampled: sampled, ids: ids}, nil
}

// copyRecorder passes batches on to an importer, counting them, noting
// the highest ids, and keeping a random sample of each kind (reservoir
// sampling) to read back.
type copyRecorder struct {
	importer
	counts   copyCounts
	maxIDs   idSequences
	users    []userRecord
	tokens   []tokenRecord
	sessions []storedSession
	clients  []clientRecord
	grants   []grantCopy
}

// keepSample keeps v in *kept with the probability that leaves every one of
// the n seen so far equally likely to be kept.
func keepSample[T any](kept *[]T, n int, v T) {
	if len(*kept) < copySamples {
		*kept = append(*kept, v)
	} else if i := rand.IntN(n); i < copySamples {
		(*kept)[i] = v
	}
}

func (r *copyRecorder) ImportUsers(users []userRecord) error {
	if err := r.importer.ImportUsers(users); err != nil {
		return fmt.Errorf("write users: %w", err)
	}
	for _, u := range users {
		r.counts.Users++
		r.maxIDs.Users = max(r.maxIDs.Users, u.ID)
		keepSample(&r.users, r.counts.Users, u)
	}
	return nil
}

func (r *copyRecorder) ImportClients(clients []clientRecord) error {
	if err := r.importer.ImportClients(clients); err != nil {
		return fmt.Errorf("write OAuth clients: %w", err)
	}
	for _, c := range clients {
		r.counts.Clients++
		keepSample(&r.clients, r.counts.Clients, c)
	}
	return nil
}

func (r *copyRecorder) ImportGrants(grants []grantCopy) error {
	if err := r.importer.ImportGrants(grants); err != nil {
		return fmt.Errorf("write grants: %w", err)
	}
	for _, g := range grants {
		r.counts.Grants++
		r.counts.Refresh += len(g.refresh)
		r.maxIDs.Grants = max(r.maxIDs.Grants, g.grant.ID)
		keepSample(&r.grants, r.counts.Grants, g)
	}
	return nil
}

func (r *copyRecorder) ImportTokens(tokens []tokenRecord) error {
	if err := r.importer.ImportTokens(tokens); err != nil {
		return fmt.Errorf("write tokens: %w", err)
	}
	for _, t := range tokens {
		r.counts.Tokens++
		r.maxIDs.Tokens = max(r.maxIDs.Tokens, t.ID)
		keepSample(&r.tokens, r.counts.Tokens, t)
	}
	return nil
}

func (r *copyRecorder) ImportSessions(sessions []storedSession) error {
	if err := r.importer.ImportSessions(sessions); err != nil {
		return fmt.Errorf("write sessions: %w", err)
	}
	for _, s := range sessions {
		r.counts.Sessions++
		keepSample(&r.sessions, r.counts.Sessions, s)
	}
	return nil
}

// verify reads the sampled records back from the target and returns how
// many it compared, or an error naming the first that differs.
func (r *copyRecorder) verify() (int, error) {
	for _, want := range r.users {
		got, err := r.importer.UserByID(want.ID)
		if err != nil || !sameUser(got, want) {
			return 0, fmt.Errorf("user %d does not read back from the target as it was read (%v)", want.ID, err)
		}
	}
	for _, want := range r.tokens {
		var got tokenRecord
		var err error
		if want.Grant != 0 {
			got, _, err = r.importer.TokenByHash(want.Hash)
		} else {
			got, err = r.importer.TokenByID(want.ID, anyOwner)
		}
		if err != nil || !sameToken(got, want) {
			return 0, fmt.Errorf("token %d does not read back from the target as it was read (%v)", want.ID, err)
		}
	}
	for _, want := range r.sessions {
		got, _, err := r.importer.SessionByHash(want.hash)
		if err != nil || !sameSession(got, want.rec) {
			return 0, fmt.Errorf("a session of user %d does not read back from the target as it was read (%v)", want.rec.User, err)
		}
	}
	for _, want := range r.clients {
		got, err := r.importer.ClientByID(want.ID)
		if err != nil || !sameClient(got, want) {
			return 0, fmt.Errorf("OAuth client %q does not read back from the target as it was read (%v)", want.ID, err)
		}
	}
	for _, want := range r.grants {
		// Every refresh token names the grant: a grant has at least one.
		for _, rt := range want.refresh {
			got, err := r.importer.GrantOfRefresh(rt.hash)
			if err != nil || !sameGrant(got, want.grant) {
				return 0, fmt.Errorf("grant %d does not read back from the target by its refresh tokens (%v)", want.grant.ID, err)
			}
		}
	}
	return len(r.users) + len(r.tokens) + len(r.sessions) + len(r.clients) + len(r.grants), nil
}

// sameStoredTime compares times as both engines keep them: Unix nanoseconds,
// saturated.
func sameStoredTime(a, b time.Time) bool { return unixNano(a) == unixNano(b) }

func sameStoredTimePtr(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == b
	}
	return sameStoredTime(*a, *b)
}

func sameUser(a, b userRecord) bool {
	return a.ID == b.ID && a.Name == b.Name && a.PasswordHash == b.PasswordHash && a.Admin == b.Admin &&
		sameStoredTime(a.CreatedAt, b.CreatedAt) && sameStoredTime(a.PasswordChangedAt, b.PasswordChangedAt)
}

func sameToken(a, b tokenRecord) bool {
	return a.ID == b.ID && a.Owner == b.Owner && a.Name == b.Name && slices.Equal(a.Scopes, b.Scopes) &&
		sameStoredTime(a.CreatedAt, b.CreatedAt) && expiryNano(a.ExpiresAt) == expiryNano(b.ExpiresAt) &&
		sameStoredTimePtr(a.LastUsedAt, b.LastUsedAt) && a.LastUsedIP == b.LastUsedIP && a.Hint == b.Hint && a.Hash == b.Hash &&
		a.Grant == b.Grant && a.Client == b.Client
}

func sameClient(a, b clientRecord) bool {
	return a.ID == b.ID && a.Name == b.Name && slices.Equal(a.RedirectURIs, b.RedirectURIs) && a.Public == b.Public &&
		a.Device == b.Device && (a.SecretHash == nil) == (b.SecretHash == nil) && (a.SecretHash == nil || *a.SecretHash == *b.SecretHash) &&
		a.AccessTTL == b.AccessTTL && sameStoredTime(a.CreatedAt, b.CreatedAt) && a.CreatedBy == b.CreatedBy
}

func sameGrant(a, b grantRecord) bool {
	return a.ID == b.ID && a.Client == b.Client && a.User == b.User && slices.Equal(a.Scopes, b.Scopes) &&
		sameStoredTime(a.CreatedAt, b.CreatedAt) && sameStoredTime(a.RefreshedAt, b.RefreshedAt) && sameStoredTime(a.ExpiresAt, b.ExpiresAt)
}

func sameSession(a, b sessionRecord) bool {
	return a.User == b.User && sameStoredTime(a.CreatedAt, b.CreatedAt) && sameStoredTime(a.ExpiresAt, b.ExpiresAt) &&
		sameStoredTime(a.LastSeenAt, b.LastSeenAt) && sameStoredTime(a.SignedInAt, b.SignedInAt) && a.Addr == b.Addr && a.Agent == b.Agent
}

// batcher gathers records and hands them on size at a time.
type batcher[T any] struct {
	ctx  context.Context
	size int
	buf  []T
	out  func([]T) error
}

func (b *batcher[T]) add(v T) error {
	b.buf = append(b.buf, v)
	if len(b.buf) < b.size {
		return nil
	}
	return b.flush()
}

func (b *batcher[T]) flush() error {
	if err := b.ctx.Err(); err != nil {
		return err
	}
	if len(b.buf) == 0 {
		return nil
	}
	err := b.out(b.buf)
	b.buf = make([]T, 0, b.size) // the importer may hold on to the last batch
	return err
}

// ---- bbolt ----

// Export hands everything the database holds to to, from one read
// transaction (see exporter).
func (s *boltStore) Export(ctx context.Context, batch int, to importer) (idSequences, error) {
	var seq idSequences
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, r := range idFloorRates {
			*seq.of(r.bucket) = tx.Bucket(r.bucket).Sequence()
		}
		users := &batcher[userRecord]{ctx: ctx, size: batch, out: to.ImportUsers}
		err := tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			var u userRecord
			if err := getJSON(tx.Bucket(bucketUsers), k, &u); err != nil {
				return err
			}
			return users.add(u)
		})
		if err != nil {
			return err
		}
		if err := users.flush(); err != nil {
			return err
		}
		if err := exportOAuth(ctx, tx, batch, to); err != nil {
			return err
		}
		tokens := &batcher[tokenRecord]{ctx: ctx, size: batch, out: to.ImportTokens}
		err = tx.Bucket(bucketTokens).ForEach(func(k, v []byte) error {
			var t tokenRecord
			if err := getJSON(tx.Bucket(bucketTokens), k, &t); err != nil {
				return err
			}
			return tokens.add(t)
		})
		if err != nil {
			return err
		}
		if err := tokens.flush(); err != nil {
			return err
		}
		sessions := &batcher[storedSession]{ctx: ctx, size: batch, out: to.ImportSessions}
		err = tx.Bucket(bucketSessions).ForEach(func(k, v []byte) error {
			if len(k) != len(sessionHash{}) {
				return fmt.Errorf("session key %x: not a session hash", k)
			}
			ss := storedSession{hash: sessionHash(k)}
			if err := getJSON(tx.Bucket(bucketSessions), k, &ss.rec); err != nil {
				return err
			}
			return sessions.add(ss)
		})
		if err != nil {
			return err
		}
		if err := sessions.flush(); err != nil {
			return err
		}
		return exportSecondFactors(ctx, tx, batch, to)
	})
	return seq, err
}

// ImportUsers stores users with their ids and name index entries, in one
// write transaction. It returns errNameTaken when a name is taken.
func (s *boltStore) ImportUsers(list []userRecord) error {
	return s.update(func(tx *bolt.Tx) error {
		users, byName := tx.Bucket(bucketUsers), tx.Bucket(bucketUsersByName)
		users.FillPercent = 0.95 // ids only grow
		for i := range list {
			u := &list[i]
			nameKey := []byte(strings.ToLower(u.Name))
			if byName.Get(nameKey) != nil {
				return fmt.Errorf("user %d (%q): %w", u.ID, u.Name, errNameTaken)
			}
			if u.ID == anyOwner || users.Get(itob(u.ID)) != nil {
				return fmt.Errorf("user id %d is taken or not a user id", u.ID)
			}
			if err := putJSON(users, itob(u.ID), u); err != nil {
				return err
			}
			if err := byName.Put(nameKey, itob(u.ID)); err != nil {
				return err
			}
		}
		return nil
	})
}

// ImportTokens stores tokens with their ids, hashes and every index
// entry, in one write transaction.
func (s *boltStore) ImportTokens(list []tokenRecord) error {
	return s.update(func(tx *bolt.Tx) error {
		users, tokens, grants := tx.Bucket(bucketUsers), tx.Bucket(bucketTokens), tx.Bucket(bucketGrants)
		byHash, byExpiry := tx.Bucket(bucketTokensByHash), tx.Bucket(bucketTokensByExpiry)
		tokens.FillPercent = 0.95
		for i := range list {
			t := &list[i]
			switch {
			case users.Get(itob(t.Owner)) == nil:
				return fmt.Errorf("token %d: %w: owner %d", t.ID, errNotFound, t.Owner)
			case t.Grant != 0 && grants.Get(itob(t.Grant)) == nil:
				return fmt.Errorf("token %d: %w: grant %d", t.ID, errNotFound, t.Grant)
			case tokens.Get(itob(t.ID)) != nil, byHash.Get(t.Hash[:]) != nil:
				return fmt.Errorf("token %d: its id or hash is taken", t.ID)
			}
			if err := putJSON(tokens, itob(t.ID), t); err != nil {
				return err
			}
			if err := byHash.Put(t.Hash[:], authRecordOf(t).marshal()); err != nil {
				return err
			}
			if err := putTokenOwner(tx, t); err != nil {
				return err
			}
			if t.ExpiresAt != nil {
				if err := byExpiry.Put(expiryKey(t), nil); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// ImportSessions stores sessions under their hashes with their index
// entries, in one write transaction.
func (s *boltStore) ImportSessions(list []storedSession) error {
	return s.update(func(tx *bolt.Tx) error {
		users := tx.Bucket(bucketUsers)
		for i := range list {
			ss := &list[i]
			if users.Get(itob(ss.rec.User)) == nil {
				return fmt.Errorf("session of %w user %d", errNotFound, ss.rec.User)
			}
			if err := putSession(tx, ss.hash, &ss.rec); err != nil {
				return err
			}
		}
		return nil
	})
}

// Counts returns how many records of each kind the database holds.
func (s *boltStore) Counts() (copyCounts, error) {
	var c copyCounts
	err := s.db.View(func(tx *bolt.Tx) error {
		c.Users = tx.Bucket(bucketUsers).Stats().KeyN
		c.Tokens = tx.Bucket(bucketTokens).Stats().KeyN
		c.Sessions = tx.Bucket(bucketSessions).Stats().KeyN
		c.Clients = tx.Bucket(bucketClients).Stats().KeyN
		c.Grants = tx.Bucket(bucketGrants).Stats().KeyN
		c.Refresh = tx.Bucket(bucketRefresh).Stats().KeyN
		countSecondFactors(tx, &c)
		return nil
	})
	return c, err
}

// ---- PostgreSQL ----

// pgIDSequences returns the last user, token and grant ids handed out.
func pgIDSequences(ctx context.Context, q pgQuerier) (idSequences, error) {
	var users, tokens, grants int64
	err := q.QueryRow(ctx, `SELECT
		(SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM users_id_seq),
		(SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM tokens_id_seq),
		(SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM grants_id_seq)`).Scan(&users, &tokens, &grants)
	return idSequences{Users: uint64(max(users, 0)), Tokens: uint64(max(tokens, 0)), Grants: uint64(max(grants, 0))}, err
}

// Export hands everything the database holds to to, from one read-only
// REPEATABLE READ transaction (see exporter). The sequences, which no
// snapshot holds, are read at its start: at or past every id in it.
func (s *pgStore) Export(ctx context.Context, batch int, to importer) (idSequences, error) {
	var seq idSequences
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		if seq, err = pgIDSequences(ctx, tx); err != nil {
			return err
		}
		if err := pgExportRows(ctx, tx, batch, "SELECT "+pgUserColumns+" FROM users u ORDER BY u.id", scanUser, to.ImportUsers); err != nil {
			return err
		}
		if err := pgExportOAuth(ctx, tx, batch, to); err != nil {
			return err
		}
		if err := pgExportRows(ctx, tx, batch, "SELECT "+pgTokenColumns+" FROM tokens t ORDER BY t.id", scanToken, to.ImportTokens); err != nil {
			return err
		}
		scanStored := func(r scanner, _ ...any) (storedSession, error) {
			h, rec, err := scanSession(r)
			return storedSession{hash: h, rec: rec}, err
		}
		if err := pgExportRows(ctx, tx, batch, "SELECT "+pgSessionColumns+" FROM sessions s ORDER BY s.user_id, s.created_at", scanStored, to.ImportSessions); err != nil {
			return err
		}
		return pgExportSecondFactors(ctx, tx, batch, to)
	})
	return seq, pgError(err)
}

// pgExportRows reads every row of sql with scan (scanUser, scanToken …)
// and hands the records to out in batches of batch.
func pgExportRows[T any](ctx context.Context, q pgQuerier, batch int, sql string, scan func(scanner, ...any) (T, error), out func([]T) error) error {
	b := &batcher[T]{ctx: ctx, size: batch, out: out}
	err := pgEach(ctx, q, sql, func(r pgx.Rows) error {
		v, err := scan(r)
		if err != nil {
			return err
		}
		return b.add(v)
	})
	if err != nil {
		return err
	}
	return b.flush()
}

// pgEach runs sql and calls fn for each row, stopping at its first error.
func pgEach(ctx context.Context, q pgQuerier, sql string, fn func(pgx.Rows) error) error {
	rows, err := q.Query(ctx, sql)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// pgImport is a copy into a PostgreSQL store, within the one transaction
// tx that holds the whole copy.
type pgImport struct {
	ctx context.Context
	tx  pgx.Tx
}

// pgID is an id as a bigint; ids past the int64 range cannot be stored.
func pgID(what string, id uint64) (int64, error) {
	if id == 0 || id > math.MaxInt64 {
		return 0, fmt.Errorf("%s id %d cannot be stored in PostgreSQL", what, id)
	}
	return int64(id), nil
}

// timeParam is a time that may be missing, as stored.
func timeParam(t *time.Time) *int64 {
	if t == nil {
		return nil
	}
	n := unixNano(*t)
	return &n
}

// copyRows writes rows into table's columns with one COPY.
func (p *pgImport) copyRows(table string, columns []string, rows [][]any) error {
	_, err := p.tx.CopyFrom(p.ctx, pgx.Identifier{table}, columns, pgx.CopyFromRows(rows))
	if pgConstraint(err) == "users_name_key" {
		return errNameTaken
	}
	return err
}

func (p *pgImport) ImportUsers(users []userRecord) error {
	rows := make([][]any, 0, len(users))
	for _, u := range users {
		id, err := pgID("user", u.ID)
		if err != nil {
			return err
		}
		rows = append(rows, []any{id, u.Name, strings.ToLower(u.Name), u.PasswordHash, u.Admin,
			unixNano(u.CreatedAt), unixNano(u.PasswordChangedAt)})
	}
	return p.copyRows("users", []string{"id", "name", "name_key", "password_hash", "admin", "created_at", "password_changed_at"}, rows)
}

func (p *pgImport) ImportTokens(tokens []tokenRecord) error {
	rows := make([][]any, 0, len(tokens))
	for _, t := range tokens {
		id, err := pgID("token", t.ID)
		if err != nil {
			return err
		}
		scopes := t.Scopes
		if scopes == nil {
			scopes = []string{}
		}
		var grant *int64
		var client *string
		if t.Grant != 0 {
			g, err := pgID("grant", t.Grant)
			if err != nil {
				return err
			}
			grant, client = &g, &t.Client
		}
		rows = append(rows, []any{id, idParam(t.Owner), t.Hash[:], t.Name, scopes, unixNano(t.CreatedAt),
			expiryParam(t.ExpiresAt), timeParam(t.LastUsedAt), t.LastUsedIP, t.Hint, grant, client})
	}
	return p.copyRows("tokens", []string{"id", "owner", "hash", "name", "scopes", "created_at", "expires_at", "last_used_at", "last_used_ip", "hint", "grant_id", "client_id"}, rows)
}

func (p *pgImport) ImportSessions(sessions []storedSession) error {
	rows := make([][]any, 0, len(sessions))
	for _, s := range sessions {
		rows = append(rows, []any{s.hash[:], idParam(s.rec.User), unixNano(s.rec.CreatedAt), unixNano(s.rec.ExpiresAt),
			unixNano(s.rec.LastSeenAt), unixNano(s.rec.SignedInAt), s.rec.Addr, s.rec.Agent})
	}
	return p.copyRows("sessions", []string{"hash", "user_id", "created_at", "expires_at", "last_seen_at", "signed_in_at", "addr", "agent"}, rows)
}

// ImportClients stores clients with their ids; errNameTaken when a name
// (ignoring case) or an id is taken.
func (p *pgImport) ImportClients(clients []clientRecord) error {
	rows := make([][]any, 0, len(clients))
	for _, c := range clients {
		var secret []byte
		if c.SecretHash != nil {
			secret = c.SecretHash[:]
		}
		uris := c.RedirectURIs
		if uris == nil {
			uris = []string{}
		}
		rows = append(rows, []any{c.ID, c.Name, strings.ToLower(c.Name), uris, c.Public, c.Device, secret,
			int64(c.AccessTTL), unixNano(c.CreatedAt), idParam(c.CreatedBy)})
	}
	_, err := p.tx.CopyFrom(p.ctx, pgx.Identifier{"clients"},
		[]string{"id", "name", "name_key", "redirect_uris", "public", "device", "secret_hash", "access_ttl", "created_at", "created_by"},
		pgx.CopyFromRows(rows))
	switch pgConstraint(err) {
	case "clients_name_key", "clients_pkey":
		return fmt.Errorf("OAuth client: %w", errNameTaken)
	}
	return err
}

// ImportGrants stores grants with their ids, then their refresh tokens.
func (p *pgImport) ImportGrants(grants []grantCopy) error {
	rows := make([][]any, 0, len(grants))
	var refresh [][]any
	for _, gc := range grants {
		g := gc.grant
		id, err := pgID("grant", g.ID)
		if err != nil {
			return err
		}
		scopes := g.Scopes
		if scopes == nil {
			scopes = []string{}
		}
		var refreshed *int64
		if !g.RefreshedAt.IsZero() {
			n := unixNano(g.RefreshedAt)
			refreshed = &n
		}
		rows = append(rows, []any{id, g.Client, idParam(g.User), scopes, unixNano(g.CreatedAt), refreshed, unixNano(g.ExpiresAt)})
		for _, r := range gc.refresh {
			refresh = append(refresh, []any{r.hash[:], id, r.used})
		}
	}
	_, err := p.tx.CopyFrom(p.ctx, pgx.Identifier{"grants"},
		[]string{"id", "client_id", "user_id", "scopes", "created_at", "refreshed_at", "expires_at"}, pgx.CopyFromRows(rows))
	if err != nil {
		return err
	}
	_, err = p.tx.CopyFrom(p.ctx, pgx.Identifier{"refresh_tokens"}, []string{"hash", "grant_id", "used"}, pgx.CopyFromRows(refresh))
	return err
}

func (p *pgImport) ClientByID(id string) (clientRecord, error) {
	c, err := scanClient(p.tx.QueryRow(p.ctx, "SELECT "+pgClientColumns+" FROM clients c WHERE c.id = $1", id))
	return c, notFound(err)
}

func (p *pgImport) GrantOfRefresh(h tokenHash) (grantRecord, error) {
	g, err := scanGrant(p.tx.QueryRow(p.ctx, pgSQLGrantOfRefresh, h[:]))
	return g, notFound(err)
}

func (p *pgImport) TokenByHash(h tokenHash) (tokenRecord, userRecord, error) {
	t, err := scanToken(p.tx.QueryRow(p.ctx, "SELECT "+pgTokenColumns+" FROM tokens t WHERE t.hash = $1", h[:]))
	if err != nil {
		return tokenRecord{}, userRecord{}, notFound(err)
	}
	u, err := p.UserByID(t.Owner)
	return t, u, err
}

func (p *pgImport) IDSequences() (idSequences, error) {
	return pgIDSequences(p.ctx, p.tx)
}

// RaiseIDSequences raises each sequence to at least its value in to (see
// importer). A sequence never used yet counts as at 0.
func (p *pgImport) RaiseIDSequences(to idSequences) (idSequences, error) {
	for _, seq := range []struct {
		name string
		to   uint64
	}{{"users_id_seq", to.Users}, {"tokens_id_seq", to.Tokens}, {"grants_id_seq", to.Grants}} {
		v, err := pgID("sequence", max(seq.to, 1))
		if err != nil {
			return idSequences{}, err
		}
		_, err = p.tx.Exec(p.ctx, "SELECT setval('"+seq.name+"', greatest(last_value, $1)) FROM "+seq.name+
			" WHERE $2 AND (NOT is_called OR last_value < $1)", v, seq.to > 0)
		if err != nil {
			return idSequences{}, fmt.Errorf("raise %s: %w", seq.name, err)
		}
	}
	return p.IDSequences()
}

func (p *pgImport) Counts() (copyCounts, error) {
	var c copyCounts
	err := p.tx.QueryRow(p.ctx, `SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM tokens), (SELECT count(*) FROM sessions),
		(SELECT count(*) FROM clients), (SELECT count(*) FROM grants), (SELECT count(*) FROM refresh_tokens),
		(SELECT count(*) FROM totp_secrets), (SELECT count(*) FROM passkeys), (SELECT count(*) FROM recovery_codes)`).
		Scan(&c.Users, &c.Tokens, &c.Sessions, &c.Clients, &c.Grants, &c.Refresh, &c.TOTP, &c.Passkeys, &c.Recovery)
	return c, err
}

func (p *pgImport) UserByID(id uint64) (userRecord, error) {
	u, err := scanUser(p.tx.QueryRow(p.ctx, "SELECT "+pgUserColumns+" FROM users u WHERE u.id = $1", idParam(id)))
	return u, notFound(err)
}

// TokenByID returns token id of any owner; owner must be anyOwner.
func (p *pgImport) TokenByID(id, owner uint64) (tokenRecord, error) {
	if owner != anyOwner {
		return tokenRecord{}, errors.New("pgImport.TokenByID reads any owner's token only")
	}
	t, err := scanToken(p.tx.QueryRow(p.ctx, "SELECT "+pgTokenColumns+" FROM tokens t WHERE t.id = $1", idParam(id)))
	return t, notFound(err)
}

func (p *pgImport) SessionByHash(h sessionHash) (sessionRecord, userRecord, error) {
	_, rec, err := scanSession(p.tx.QueryRow(p.ctx, "SELECT "+pgSessionColumns+" FROM sessions s WHERE s.hash = $1", h[:]))
	if err != nil {
		return sessionRecord{}, userRecord{}, notFound(err)
	}
	u, err := p.UserByID(rec.User)
	return rec, u, err
}
