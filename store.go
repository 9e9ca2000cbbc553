package main

import (
	"context"
	"io"
	"time"
)

// store is the contract between tokend and the engine that keeps its
// users, tokens and sessions: the server, the pages, the command line,
// the account actions, the purge and the last-used flush use nothing else.
// It is shaped by what they ask, not by how an engine lays its data out.
// bbolt (boltStore, db.go) is the default engine.
//
// Every method is one transaction, and a write has committed (durably)
// when it returns. Errors that callers decide on are the sentinels of
// db.go (errNotFound, errNameTaken, errTooManyTokens, errLastAdmin,
// errTokenExpired, errSetupDone, errSpaceReserved), checked with errors.Is.
// A method that takes an owner or user id takes anyOwner to skip the
// ownership check. A write that makes a security-relevant change takes who
// makes it (by actor) first, and records its events (auditstore.go) in its
// transaction.
//
// Authenticate answers from the auth cache (authcache.go) when it can; the
// cache is written once, above the engines: an engine reads an auth record
// for it (authReader) and reports every committed write to it
// (invalidationSink), before the write returns.
type store interface {
	// ---- users ----

	// CreateUser stores u, setting u.ID; errNameTaken when the name is
	// taken, ignoring case.
	CreateUser(by actor, u *userRecord) error
	// CreateFirstAdmin stores u, an admin, unless a user exists already
	// (errSetupDone): exactly one first admin, however many ask at once.
	CreateFirstAdmin(by actor, u *userRecord) error
	UserByID(id uint64) (userRecord, error)
	UserByName(name string) (userRecord, error) // ignoring case
	Users() ([]userRecord, error)               // in order of creation
	CountUsers() (int, error)
	HasUsers() (bool, error)
	// UpgradePasswordHash replaces the hash of user id with newHash if it
	// is still oldHash.
	UpgradePasswordHash(id uint64, oldHash, newHash string) error
	// SetAdmin makes user id an admin or not; errLastAdmin when that would
	// leave no admin.
	SetAdmin(by actor, id uint64, admin bool) (userRecord, error)
	// DeleteUser removes user id with their tokens and sessions;
	// errLastAdmin for the only admin.
	DeleteUser(by actor, id uint64) error
	// ChangePassword sets a password and, as c says, revokes the user's
	// tokens and ends their other sessions, in one transaction.
	ChangePassword(by actor, id uint64, c passwordChange) (tokens, sessions int, err error)
	// RevokeTokensOf deletes every token and grant of user id and returns
	// how many tokens went, the grants' access tokens counted.
	RevokeTokensOf(by actor, id uint64) (int, error)
	// TokenCounts returns how many tokens each user holds.
	TokenCounts() (map[uint64]int, error)

	// ---- tokens ----

	// CreateToken stores t under hash h, setting t.ID; errNotFound for an
	// unknown owner, errTooManyTokens past limit (0: none).
	CreateToken(by actor, t *tokenRecord, h tokenHash, limit int) error
	// Authenticate returns what verification needs of the token whose
	// hash is h and its owner without the password hash; errNotFound for
	// an unknown token. It does not check expiry.
	Authenticate(h tokenHash) (authRecord, userRecord, error)
	TokenByHash(h tokenHash) (tokenRecord, userRecord, error)
	TokenByID(id, owner uint64) (tokenRecord, error)
	TokensByOwner(owner uint64) ([]tokenRecord, error) // newest first
	AllTokens() ([]tokenRecord, error)                 // newest first
	DeleteToken(by actor, id, owner uint64) (tokenRecord, error)
	// DeleteTokenByHash revokes the token whose hash is h; kind says why,
	// for the security log: kindTokenRevoked or kindTokenLeaked.
	DeleteTokenByHash(by actor, h tokenHash, kind string) (tokenRecord, error)
	// RotateToken replaces token id with a new one under h, in one
	// transaction; errTokenExpired when the old one has expired at now.
	RotateToken(by actor, id, owner uint64, h tokenHash, hint string, now time.Time) (tokenRecord, error)
	// FlushLastUsed records uses, never moving a time backwards and never
	// re-creating a deleted token.
	FlushLastUsed(uses map[uint64]lastUse) error
	// PurgeExpired deletes tokens that expired before cutoff, at most
	// batch a transaction, until none is left or ctx ends.
	PurgeExpired(ctx context.Context, by actor, cutoff time.Time, batch int) (deleted, txs int, err error)

	// ---- sessions ----

	// CreateSession stores rec under h, deleting replaced (if not nil)
	// and, past limit sessions of the user (0: no limit), the oldest.
	CreateSession(by actor, h sessionHash, rec sessionRecord, replaced *sessionHash, limit int) error
	SessionByHash(h sessionHash) (sessionRecord, userRecord, error)
	TouchSession(h sessionHash, now time.Time, addr string) error
	ConfirmSession(h sessionHash, now time.Time) error
	DeleteSession(by actor, h sessionHash, user uint64) error
	SessionsOf(user uint64) ([]storedSession, error) // newest first
	EndOtherSessions(by actor, user uint64, keep sessionHash) (int, error)
	// ClaimFormKey records key as used by session h and reports true, or
	// false if it was used already, atomically: of the forms sent with one
	// key, whichever instance answers, one claims it. A session remembers
	// its latest formKeysPerSession keys, which SessionByHash returns in
	// FormKeys. errNotFound for no such session.
	ClaimFormKey(h sessionHash, key string) (bool, error)
	// ReleaseFormKey forgets that session h used key, for a form that
	// claimed it and then failed.
	ReleaseFormKey(h sessionHash, key string) error
	// PurgeSessions deletes the sessions past their lifetimes at now.
	PurgeSessions(ctx context.Context, now time.Time, idle time.Duration) (int, error)

	// ---- OAuth (oauthstore.go) ----

	oauthStore

	// ---- passkey ceremonies under way (passkeystore.go) ----

	passkeyCeremonyStore

	// ---- the security log (auditstore.go) ----

	auditStore

	// ---- second factors (tfastore.go) ----

	tfaStore

	// ---- the webhook outbox and expiry warnings (webhook.go) ----

	webhookStore

	// ---- the whole ----

	// Ping fails when the engine cannot answer, for /readyz.
	Ping() error
	// Totals returns the numbers of users and tokens, for metrics.
	Totals() (users, tokens int, err error)
	// Check verifies that the stored data is consistent and returns every
	// problem found, joined.
	Check() error
	// Close ends the store: from then on it authenticates nobody.
	Close() error
}

// fileStore is what an engine that keeps a whole deployment in one local
// file (bbolt) offers besides the contract: the file's size and use, for
// metrics, and a consistent copy of it, for the backup endpoint. Callers
// ask for it with a type assertion; an engine without a file of its own
// (PostgreSQL, whose backups are the database's business) has none.
// Restore, compaction and the id sequences work on bbolt files alone and
// use *boltStore directly.
type fileStore interface {
	FileSize() (int64, error)
	UsedBytes() (int64, error)
	WriteBackup(w io.Writer, begin func(size int64)) (int64, error)
}

// invalidationSink is what the auth cache above the engines hears from an
// engine. An engine calls it synchronously once a write has committed and
// before the write returns, for every write it commits, and, when it also
// hears other processes' writes (several instances on one database), for
// theirs. Its methods must be quick and must not call the store.
type invalidationSink interface {
	// tokensGone says that the tokens with these hashes were deleted.
	// The cache drops them and, as for changed, starts a new generation, so
	// that a read begun before the deletion is not cached after it.
	tokensGone(hashes []tokenHash)
	// allTokensGone says that too many tokens were deleted at once to name
	// them: the cache forgets every token.
	allTokensGone()
	// changed says that something else was written (a user changed or
	// removed, anything): the cache starts a new generation, so that every
	// owner it holds is read afresh.
	changed()
	// trust(false) says that changes may be going unheard: the cache
	// forgets everything and verifies every token from the database until
	// trust(true), after which it starts empty, in a new generation.
	trust(ok bool)
}

var (
	_ store            = (*boltStore)(nil)
	_ fileStore        = (*boltStore)(nil)
	_ invalidationSink = (*authCache)(nil)
)
