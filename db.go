package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// schemaVersion is the layout of the buckets below. A database of another
// version is refused rather than guessed at.
// Version 2 added sessions_by_owner, version 3 the buckets of the OAuth
// store (boltoauth.go), version 4 those of the security log (boltaudit.go),
// version 5 those of second factors (bolttfa.go); a file of an older
// version is upgraded when it is opened for writing.
const schemaVersion = 5

// Bucket names. Integer keys are big-endian uint64 so that they sort in
// numeric order; records are JSON.
var (
	bucketMeta           = []byte("meta")             // "schema" → version
	bucketUsers          = []byte("users")            // user id → userRecord
	bucketUsersByName    = []byte("users_by_name")    // lower-cased name → user id
	bucketTokens         = []byte("tokens")           // token id → tokenRecord
	bucketTokensByHash   = []byte("tokens_by_hash")   // SHA-256 of the token → authRecord (binary)
	bucketTokensByOwner  = []byte("tokens_by_owner")  // owner id ‖ token id → empty, personal tokens only
	bucketTokensByExpiry = []byte("tokens_by_expiry") // expiry unix ns ‖ token id → empty
	bucketSessions       = []byte("sessions")         // SHA-256 of the session secret → sessionRecord
	// owner id ‖ session hash → the session's creation time (unix ns), so
	// that a user's sessions are found, counted and the oldest ended
	// without reading anybody else's.
	bucketSessionsByOwner = []byte("sessions_by_owner")

	allBuckets = append([][]byte{
		bucketMeta, bucketUsers, bucketUsersByName, bucketTokens, bucketTokensByHash,
		bucketTokensByOwner, bucketTokensByExpiry, bucketSessions, bucketSessionsByOwner,
	}, slices.Concat(oauthBuckets, auditBuckets, tfaBuckets)...)

	keySchema = []byte("schema")
)

// Errors returned by the store. Check them with errors.Is.
var (
	errNotFound        = errors.New("not found")
	errNameTaken       = errors.New("name already taken")
	errTooManyTokens   = errors.New("too many tokens")
	errLastAdmin       = errors.New("the last admin cannot be removed or demoted")
	errTokenExpired    = errors.New("token has expired")
	errDatabaseInUse   = errors.New("database is in use by another process (is tokend serve running?)")
	errNotTokendDB     = errors.New("not a tokend database, or corrupt")
	errUnsupportedData = errors.New("unsupported schema version")
)

// anyOwner, passed where a method takes an owner id, skips the ownership
// check. User ids start at 1, so no user has it.
const anyOwner uint64 = 0

// userRecord is a user as stored in the users bucket.
type userRecord struct {
	ID                uint64    `json:"id"`
	Name              string    `json:"name"`
	PasswordHash      string    `json:"password_hash"`
	Admin             bool      `json:"admin"`
	CreatedAt         time.Time `json:"created_at"`
	PasswordChangedAt time.Time `json:"password_changed_at"`
}

// newUser returns a user to be created at now: its password was set then.
func newUser(name, passwordHash string, admin bool, now time.Time) userRecord {
	return userRecord{Name: name, PasswordHash: passwordHash, Admin: admin, CreatedAt: now, PasswordChangedAt: now}
}

// tokenRecord is a token as stored in the tokens bucket. It never holds the
// token itself: only its hash and its last few characters.
type tokenRecord struct {
	ID         uint64     `json:"id"`
	Owner      uint64     `json:"owner"`
	Name       string     `json:"name"`
	Scopes     []string   `json:"scopes"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`   // nil: never
	LastUsedAt *time.Time `json:"last_used_at,omitempty"` // nil: never used
	LastUsedIP string     `json:"last_used_ip,omitempty"`
	Hint       string     `json:"hint"`
	Hash       tokenHash  `json:"hash"`
	// Grant and Client mark an access token issued through OAuth: the
	// grant it belongs to and the client that obtained it. Both are zero
	// for a personal token.
	Grant  uint64 `json:"grant,omitempty"`
	Client string `json:"client,omitempty"`
}

// expired reports whether t is no longer valid at now. A token is valid up to
// but not including its expiry.
func (t *tokenRecord) expired(now time.Time) bool {
	return t.ExpiresAt != nil && !now.Before(*t.ExpiresAt)
}

// boltStore owns the bbolt database. Each exported method is one transaction.
type boltStore struct {
	db *bolt.DB
	// writeTxs counts write transactions, so that tests and benchmarks can
	// show which paths write and which never do.
	writeTxs atomic.Uint64
	// auth is the auth cache (see authCache): it answers Authenticate
	// when it can, and hears of every write once it has committed.
	auth   *authCache
	closed atomic.Bool
	// creationLimit is the bytes of pages in use past which creations are
	// refused (0: never), keeping the rest for deletions; see roomToCreate.
	creationLimit int
	// evict lists the tokens the running write transaction deletes. bbolt
	// runs one write transaction at a time, so it needs no lock.
	evict []tokenHash
}

// update runs fn in a write transaction. Every write goes through here.
// Once the transaction has committed, and before anyone can see its
// effects through a cache, it reports to the auth cache: the tokens it
// deleted leave the cache and the cache's generation grows.
func (s *boltStore) update(fn func(*bolt.Tx) error) error {
	s.writeTxs.Add(1)
	return s.db.Update(func(tx *bolt.Tx) error {
		s.evict = nil // a fresh list: the last one may still be in use
		if err := fn(tx); err != nil {
			return err
		}
		deleted := s.evict
		// Commit handlers run after bbolt releases its writer lock, before
		// Update returns: before any answer to this write is sent.
		tx.OnCommit(func() {
			if len(deleted) > 0 {
				s.auth.tokensGone(deleted)
			} else {
				s.auth.changed()
			}
		})
		return nil
	})
}

// openStore opens or creates the tokend database at path. It waits at most
// lockTimeout for another process to release the file and then fails with
// errDatabaseInUse. A file that is not a tokend database is refused with
// errNotTokendDB and left untouched.
func openStore(path string, lockTimeout time.Duration) (*boltStore, error) {
	return openStoreWith(path, bolt.Options{Timeout: lockTimeout})
}

// openStoreWith is openStore with bbolt's options. With MaxSize the file
// grows to at most that many bytes: a write that would grow it further
// fails with an error that isStorageFull recognises, and reads keep
// working. With ReadOnly the file is neither created nor written, and other
// readers may hold it too, but never a server.
func openStoreWith(path string, opts bolt.Options) (*boltStore, error) {
	db, err := bolt.Open(path, 0o600, &opts)
	switch {
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("open database %q: %w", path, errDatabaseInUse)
	case errors.Is(err, bolterrors.ErrInvalid), errors.Is(err, bolterrors.ErrVersionMismatch),
		errors.Is(err, bolterrors.ErrChecksum), errors.Is(err, bolterrors.ErrInvalidMapping):
		return nil, fmt.Errorf("open database %q: %w (%v)", path, errNotTokendDB, err)
	case err != nil:
		return nil, fmt.Errorf("open database %q: %w", path, err)
	}
	// Token creation batches its transactions: with many concurrent
	// creators, one commit (two fsyncs) serves them all.
	db.MaxBatchSize = 256
	db.MaxBatchDelay = 2 * time.Millisecond
	initTx := db.Update
	if opts.ReadOnly {
		initTx = db.View // checks an existing database, creates nothing
	}
	err = initTx(func(tx *bolt.Tx) error {
		if err := initSchema(tx); err != nil {
			return err
		}
		return ensureWebhookBuckets(tx)
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %q: %w", path, err)
	}
	return &boltStore{db: db, auth: newAuthCache(defaultAuthCacheSize), creationLimit: creationLimit(opts.MaxSize, db.AllocSize)}, nil
}

// Ids of users, tokens and grants are never handed out twice for one
// deployment, even when the database is put back from a backup: the apps
// behind the proxy know people by X-Auth-User-Id. Ids come from each bucket's
// sequence, one after another, and a restarted server carries on where the
// last run stopped. A backup holds the sequences of its time, so `tokend
// restore` (see runRestore) raises them past every id handed out since:
// past the sequences of the database it replaces, and past the id floor of
// the wall-clock time, a number of ids for every millisecond since idEpoch,
// for when that database is lost. No id handed out before time t lies at
// or above the floor of t, as long as the deployment never hands out more
// ids than its rate for every millisecond since idEpoch (or since the last
// restore), and the clock does not go back.
//
// Tokens get 1,024 ids a millisecond (a million a second; each id costs a
// commit). Users get one a millisecond (each costs a password hash), which
// keeps user ids below 2^48, the most the auth cache packs beside a scope
// list, for thousands of years; token ids stay below 2^53, safe in JSON,
// until the year 2270. Grants get one a millisecond (each costs a user's
// consent).
var idFloorRates = []struct {
	bucket   []byte
	perMilli uint64
}{
	{bucketUsers, 1},
	{bucketTokens, 1 << 10},
	{bucketGrants, 1},
}

var idEpoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// idFloor returns the lowest id that may be handed out from t on by a
// deployment that hands out at most perMilli ids a millisecond.
func idFloor(t time.Time, perMilli uint64) uint64 {
	ms := t.Sub(idEpoch).Milliseconds()
	if ms <= 0 {
		return 0
	}
	return uint64(ms) * perMilli
}

// idSequences holds the last user, token and grant ids handed out.
type idSequences struct {
	Users, Tokens, Grants uint64
}

// of returns where q holds the sequence of bucket, one of idFloorRates'.
func (q *idSequences) of(bucket []byte) *uint64 {
	switch {
	case bytes.Equal(bucket, bucketUsers):
		return &q.Users
	case bytes.Equal(bucket, bucketGrants):
		return &q.Grants
	}
	return &q.Tokens
}

// idFloorAt returns the id floor of every sequence at t.
func idFloorAt(t time.Time) idSequences {
	var q idSequences
	for _, r := range idFloorRates {
		*q.of(r.bucket) = idFloor(t, r.perMilli)
	}
	return q
}

// atLeast returns, sequence by sequence, the larger of q and o.
func (q idSequences) atLeast(o idSequences) idSequences {
	return idSequences{Users: max(q.Users, o.Users), Tokens: max(q.Tokens, o.Tokens), Grants: max(q.Grants, o.Grants)}
}

// IDSequences returns the last user, token and grant ids handed out.
func (s *boltStore) IDSequences() (idSequences, error) {
	var q idSequences
	err := s.db.View(func(tx *bolt.Tx) error {
		for _, r := range idFloorRates {
			*q.of(r.bucket) = tx.Bucket(r.bucket).Sequence()
		}
		return nil
	})
	return q, err
}

// RaiseIDSequences raises each id sequence to at least its value in to,
// never lowering one, so that every id handed out from now on lies above
// it. It returns the sequences as they now stand.
func (s *boltStore) RaiseIDSequences(to idSequences) (idSequences, error) {
	var q idSequences
	err := s.update(func(tx *bolt.Tx) error {
		for _, r := range idFloorRates {
			b := tx.Bucket(r.bucket)
			v := max(b.Sequence(), *to.of(r.bucket))
			if err := b.SetSequence(v); err != nil {
				return err
			}
			*q.of(r.bucket) = v
		}
		return nil
	})
	return q, err
}

// initSchema creates every bucket of a new database, or checks that an existing one is a tokend database of a version this
// binary understands.
func initSchema(tx *bolt.Tx) error {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		empty := true
		tx.ForEach(func([]byte, *bolt.Bucket) error { empty = false; return nil })
		if !empty {
			return errNotTokendDB
		}
		for _, name := range allBuckets {
			if _, err := tx.CreateBucket(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, itob(schemaVersion))
	}
	v := meta.Get(keySchema)
	if len(v) != 8 {
		return errNotTokendDB
	}
	switch version := btoi(v); {
	case version >= 1 && version < schemaVersion && tx.Writable():
		if version == 1 {
			if err := upgradeSchema1(tx); err != nil {
				return fmt.Errorf("upgrade schema 1 to %d: %w", schemaVersion, err)
			}
		}
		if version <= 2 {
			if err := upgradeSchema2(tx); err != nil {
				return fmt.Errorf("upgrade schema 2 to %d: %w", schemaVersion, err)
			}
		}
		if version <= 3 {
			if err := upgradeSchema3(tx); err != nil {
				return fmt.Errorf("upgrade schema 3 to %d: %w", schemaVersion, err)
			}
		}
		if err := upgradeSchema4(tx); err != nil {
			return fmt.Errorf("upgrade schema 4 to %d: %w", schemaVersion, err)
		}
	case version >= 1 && version < schemaVersion:
		return olderSchemaError(version)
	case version != schemaVersion:
		return fmt.Errorf("%w %d (this tokend understands %d)", errUnsupportedData, version, schemaVersion)
	}
	for _, name := range allBuckets {
		if tx.Bucket(name) == nil {
			return fmt.Errorf("%w: bucket %s is missing", errNotTokendDB, name)
		}
	}
	return nil
}

// olderSchemaError is initSchema's answer, read-only, for a file of an
// older schema: it would be upgraded when opened for writing.
type olderSchemaError uint64

func (v olderSchemaError) Error() string {
	return fmt.Sprintf("%v %d: open it once with a writable tokend command (such as tokend serve) to upgrade it", errUnsupportedData, uint64(v))
}

func (olderSchemaError) Unwrap() error { return errUnsupportedData }

// upgradeSchema1 brings a database of schema 1 to schema 2 in the
// transaction that opens it: it builds sessions_by_owner from the sessions.
func upgradeSchema1(tx *bolt.Tx) error {
	if tx.Bucket(bucketSessions) == nil {
		return fmt.Errorf("%w: bucket %s is missing", errNotTokendDB, bucketSessions)
	}
	byOwner, err := tx.CreateBucket(bucketSessionsByOwner)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketSessionsByOwner, err)
	}
	err = tx.Bucket(bucketSessions).ForEach(func(k, v []byte) error {
		var rec sessionRecord
		if len(k) != len(sessionHash{}) || json.Unmarshal(v, &rec) != nil {
			return nil // the purge deletes what cannot be read
		}
		return byOwner.Put(sessionOwnerKey(rec.User, sessionHash(k)), sessionOwnerValue(&rec))
	})
	if err != nil {
		return err
	}
	return tx.Bucket(bucketMeta).Put(keySchema, itob(2))
}

// Close closes the database. From then on nothing is answered from the
// caches either: a closed store authenticates nobody.
func (s *boltStore) Close() error {
	s.closed.Store(true)
	return s.db.Close()
}

// itob encodes an id or a time as an 8-byte big-endian key.
func itob(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// btoi decodes an 8-byte big-endian key.
func btoi(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// Every time that tokend stores or compares as Unix nanoseconds goes
// through unixNano: time.Time.UnixNano is undefined outside the years
// 1678 to 2262, where it wraps and a time long past can pass for one to
// come.
var (
	minUnixNano = time.Unix(0, math.MinInt64)
	maxUnixNano = time.Unix(0, math.MaxInt64)
)

// unixNano is t as Unix nanoseconds, saturated to the int64 range: a time
// before 1678 gives the least value, one after 2262 the greatest.
func unixNano(t time.Time) int64 {
	switch {
	case t.Before(minUnixNano):
		return math.MinInt64
	case t.After(maxUnixNano):
		return math.MaxInt64
	}
	return t.UnixNano()
}

// expiryNano is an expiry as Unix nanoseconds (see unixNano), 0 for
// never. An expiry at the very epoch becomes a nanosecond earlier, so that
// it cannot read as never.
func expiryNano(t *time.Time) int64 {
	if t == nil {
		return 0
	}
	if n := unixNano(*t); n != 0 {
		return n
	}
	return -1
}

// timeKey is t as an 8-byte key part that sorts in time order: Unix
// nanoseconds, with every time before 1970 as 0.
func timeKey(t time.Time) uint64 {
	return uint64(max(0, unixNano(t)))
}

// pairKey is a 16-byte key of two ids, for the owner and expiry indexes.
func pairKey(a, b uint64) []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, a)
	binary.BigEndian.PutUint64(k[8:], b)
	return k
}

// putTokenOwner writes the entry that lists t under its owner: in
// tokens_by_owner for a personal token, in grant_tokens for a token of a
// grant, which the personal views leave out.
func putTokenOwner(tx *bolt.Tx, t *tokenRecord) error {
	if t.Grant != 0 {
		return tx.Bucket(bucketGrantTokens).Put(pairKey(t.Grant, t.ID), nil)
	}
	// Each owner's keys only grow: fill pages further than the default.
	byOwner := tx.Bucket(bucketTokensByOwner)
	byOwner.FillPercent = 0.9
	return byOwner.Put(pairKey(t.Owner, t.ID), nil)
}

func expiryKey(t *tokenRecord) []byte {
	return pairKey(timeKey(*t.ExpiresAt), t.ID)
}

func getJSON(b *bolt.Bucket, key []byte, v any) error {
	data := b.Get(key)
	if data == nil {
		return errNotFound
	}
	if err := json.Unmarshal(data, v); err != nil {
		// A *bolt.Bucket does not know its name; the record's type tells
		// which bucket it is.
		return fmt.Errorf("decode %T %x: %w", v, key, err)
	}
	return nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, data)
}

// ---- users ----

// CreateUser stores u, setting u.ID. It returns errNameTaken when a user of
// the same name (ignoring case) exists, and errSpaceReserved when the
// database is too full for creations.
func (s *boltStore) CreateUser(by actor, u *userRecord) error {
	return s.update(func(tx *bolt.Tx) error {
		if err := s.roomToCreate(tx); err != nil {
			return err
		}
		if err := putNewUser(tx, u); err != nil {
			return err
		}
		return appendEvents(tx, newAuditEvent(by, kindUserAdded).about(*u).withDetail("%s", adminWord(u.Admin)))
	})
}

// putNewUser assigns u an id and writes it with its name index entry. It
// returns errNameTaken when a user of the same name (ignoring case) exists.
func putNewUser(tx *bolt.Tx, u *userRecord) error {
	byName := tx.Bucket(bucketUsersByName)
	nameKey := []byte(strings.ToLower(u.Name))
	if byName.Get(nameKey) != nil {
		return errNameTaken
	}
	users := tx.Bucket(bucketUsers)
	id, err := users.NextSequence()
	if err != nil {
		return err
	}
	rec := *u
	rec.ID = id
	if err := putJSON(users, itob(id), &rec); err != nil {
		return err
	}
	if err := byName.Put(nameKey, itob(id)); err != nil {
		return err
	}
	u.ID = id
	return nil
}

// UserByID returns the user with id, or errNotFound.
func (s *boltStore) UserByID(id uint64) (userRecord, error) {
	var u userRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(bucketUsers), itob(id), &u)
	})
	return u, err
}

// UserByName returns the user called name (ignoring case), or errNotFound.
func (s *boltStore) UserByName(name string) (userRecord, error) {
	var u userRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		u, err = userByName(tx, name)
		return err
	})
	return u, err
}

func userByName(tx *bolt.Tx, name string) (userRecord, error) {
	var u userRecord
	id := tx.Bucket(bucketUsersByName).Get([]byte(strings.ToLower(name)))
	if id == nil {
		return u, errNotFound
	}
	return u, getJSON(tx.Bucket(bucketUsers), id, &u)
}

// Users returns every user in order of creation.
func (s *boltStore) Users() ([]userRecord, error) {
	var out []userRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
			var u userRecord
			if err := json.Unmarshal(v, &u); err != nil {
				return fmt.Errorf("decode user %d: %w", btoi(k), err)
			}
			out = append(out, u)
			return nil
		})
	})
	return out, err
}

// CountUsers returns the number of users.
func (s *boltStore) CountUsers() (int, error) {
	var n int
	err := s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketUsers).Stats().KeyN
		return nil
	})
	return n, err
}

// Totals returns the number of users and of tokens, read in one
// transaction. It walks both buckets' pages: for scrapes, not requests.
func (s *boltStore) Totals() (users, tokens int, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		users = tx.Bucket(bucketUsers).Stats().KeyN
		tokens = tx.Bucket(bucketTokens).Stats().KeyN
		return nil
	})
	return users, tokens, err
}

// FileSize returns the size in bytes of the database file.
func (s *boltStore) FileSize() (int64, error) {
	fi, err := os.Stat(s.db.Path())
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// UsedBytes returns how much of the database file holds data: the pages
// up to its high-water mark less the free ones (freed pages that a reader
// may still see count as free, since a write can use them once it is
// done). Writes fail at -max-db-size when this nears the cap, which the
// file's size alone does not tell: the file keeps its size as data goes.
func (s *boltStore) UsedBytes() (int64, error) {
	var used int64
	err := s.db.View(func(tx *bolt.Tx) error {
		used = s.usedBytes(tx)
		return nil
	})
	return used, err
}

// usedBytes returns the bytes of pages in use as tx sees the file: its
// pages up to the high-water mark less the free ones.
func (s *boltStore) usedBytes(tx *bolt.Tx) int64 {
	return max(0, tx.Size()-int64(s.db.Stats().FreeAlloc))
}

// Ping runs a read transaction that reads the schema version, so that it
// fails when the database cannot answer (closed, or its file unreadable).
func (s *boltStore) Ping() error {
	return s.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketMeta).Get(keySchema) == nil {
			return errNotTokendDB
		}
		return nil
	})
}

// UpgradePasswordHash replaces the hash of user id with newHash if it is
// still oldHash, for re-hashing with stronger parameters at sign-in. A
// password changed in the meantime is left alone.
func (s *boltStore) UpgradePasswordHash(id uint64, oldHash, newHash string) error {
	return s.update(func(tx *bolt.Tx) error {
		users := tx.Bucket(bucketUsers)
		var u userRecord
		if err := getJSON(users, itob(id), &u); err != nil {
			return err
		}
		if u.PasswordHash != oldHash {
			return nil
		}
		u.PasswordHash = newHash
		return putJSON(users, itob(id), &u)
	})
}

// DeleteUser removes user id with all of their tokens, grants and sessions,
// and the codes and device requests they approved. It
// returns errNotFound for an unknown user and errLastAdmin when id is the
// only admin.
func (s *boltStore) DeleteUser(by actor, id uint64) error {
	return s.update(func(tx *bolt.Tx) error {
		users := tx.Bucket(bucketUsers)
		var u userRecord
		if err := getJSON(users, itob(id), &u); err != nil {
			return err
		}
		if u.Admin {
			admins, err := countAdmins(tx)
			if err != nil {
				return err
			}
			if admins <= 1 {
				return errLastAdmin
			}
		}
		if err := s.deleteTokensOf(tx, id); err != nil {
			return err
		}
		if _, err := s.revokeAllOf(tx, id); err != nil {
			return err
		}
		if _, err := deleteSessionsExcept(tx, id, sessionHash{}); err != nil {
			return err
		}
		if err := deleteSecondFactors(tx, id); err != nil {
			return err
		}
		if err := tx.Bucket(bucketUsersByName).Delete([]byte(strings.ToLower(u.Name))); err != nil {
			return err
		}
		if err := forgetAddresses(tx, id); err != nil {
			return err
		}
		if err := users.Delete(itob(id)); err != nil {
			return err
		}
		return appendEvents(tx, newAuditEvent(by, kindUserRemoved).about(u))
	})
}

func countAdmins(tx *bolt.Tx) (int, error) {
	n := 0
	err := tx.Bucket(bucketUsers).ForEach(func(k, v []byte) error {
		var u userRecord
		if err := json.Unmarshal(v, &u); err != nil {
			return fmt.Errorf("decode user %d: %w", btoi(k), err)
		}
		if u.Admin {
			n++
		}
		return nil
	})
	return n, err
}

// RevokeTokensOf deletes every token of user id and every grant they
// made, and returns how many tokens went: personal ones and the grants'
// access tokens. It returns errNotFound for an unknown user.
func (s *boltStore) RevokeTokensOf(by actor, id uint64) (int, error) {
	var n int
	err := s.update(func(tx *bolt.Tx) error {
		var u userRecord
		if err := getJSON(tx.Bucket(bucketUsers), itob(id), &u); err != nil {
			return err
		}
		var err error
		if n, err = s.revokeAllOf(tx, id); err != nil {
			return err
		}
		return appendEvents(tx, newAuditEvent(by, kindTokensRevoked).about(u).withDetail("%s", plural(n, "token")))
	})
	return n, err
}

// revokeAllOf deletes every personal token and grant of user, and the
// codes and device requests they approved, and returns how many tokens
// went, the grants' access tokens counted.
func (s *boltStore) revokeAllOf(tx *bolt.Tx, user uint64) (int, error) {
	n := len(tokenIDsOf(tx, user))
	if err := s.deleteTokensOf(tx, user); err != nil {
		return 0, err
	}
	m, err := s.deleteGrantsOf(tx, user)
	if err != nil {
		return 0, err
	}
	return n + m, deleteRequestsOf(tx, user)
}

// ---- tokens ----

// CreateToken stores t under hash h with all of its index entries, setting
// t.ID. It returns errNotFound when the owner does not exist and
// errTooManyTokens when the owner already holds limit tokens (0: no limit).
//
// Concurrent calls share write transactions (bbolt's Batch), so that many
// creators pay for one commit; each call still returns only after the
// transaction holding its token is durably committed.
func (s *boltStore) CreateToken(by actor, t *tokenRecord, h tokenHash, limit int) error {
	s.writeTxs.Add(1)
	var rec tokenRecord
	// Batch may run this function twice: it starts afresh from *t each time.
	err := s.db.Batch(func(tx *bolt.Tx) error {
		rec = *t
		if err := s.roomToCreate(tx); err != nil {
			return err
		}
		var owner userRecord
		if err := getJSON(tx.Bucket(bucketUsers), itob(rec.Owner), &owner); err != nil {
			return err
		}
		if limit > 0 && hasTokensAtLeast(tx, rec.Owner, limit) {
			return errTooManyTokens
		}
		// Creating a token changes nothing that is cached (see authCache.gen),
		// so this transaction needs no commit handler.
		if err := putNewToken(tx, &rec, h); err != nil {
			return err
		}
		return appendEvents(tx, newAuditEvent(by, kindTokenCreated).about(owner).ofToken(rec))
	})
	if err != nil {
		return err
	}
	*t = rec
	return nil
}

// hasTokensAtLeast reports whether owner holds n or more tokens, reading at
// most n index entries.
func hasTokensAtLeast(tx *bolt.Tx, owner uint64, n int) bool {
	prefix := itob(owner)
	c := tx.Bucket(bucketTokensByOwner).Cursor()
	count := 0
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if count++; count >= n {
			return true
		}
	}
	return false
}

// putNewToken assigns t an id and writes it with every index entry.
func putNewToken(tx *bolt.Tx, t *tokenRecord, h tokenHash) error {
	tokens := tx.Bucket(bucketTokens)
	// Ids only grow: pages of the id-keyed bucket can be filled, where
	// bbolt's default leaves each half empty for inserts in between.
	tokens.FillPercent = 0.95
	id, err := tokens.NextSequence()
	if err != nil {
		return err
	}
	rec := *t
	rec.ID = id
	rec.Hash = h
	byHash := tx.Bucket(bucketTokensByHash)
	if byHash.Get(h[:]) != nil {
		// 2^-256: a broken random source, not bad luck.
		return errors.New("token hash collision")
	}
	if err := putJSON(tokens, itob(id), &rec); err != nil {
		return err
	}
	if err := byHash.Put(h[:], authRecordOf(&rec).marshal()); err != nil {
		return err
	}
	if err := putTokenOwner(tx, &rec); err != nil {
		return err
	}
	if rec.ExpiresAt != nil {
		if err := tx.Bucket(bucketTokensByExpiry).Put(expiryKey(&rec), nil); err != nil {
			return err
		}
	}
	*t = rec
	return nil
}

// deleteToken removes token t and every index entry that points at it, and
// marks it to leave the auth cache when the transaction commits.
func (s *boltStore) deleteToken(tx *bolt.Tx, t *tokenRecord) error {
	if err := tx.Bucket(bucketTokensByHash).Delete(t.Hash[:]); err != nil {
		return err
	}
	s.evict = append(s.evict, t.Hash)
	ownerIndex, key := tx.Bucket(bucketTokensByOwner), pairKey(t.Owner, t.ID)
	if t.Grant != 0 {
		ownerIndex, key = tx.Bucket(bucketGrantTokens), pairKey(t.Grant, t.ID)
	}
	if err := ownerIndex.Delete(key); err != nil {
		return err
	}
	if t.ExpiresAt != nil {
		if err := tx.Bucket(bucketTokensByExpiry).Delete(expiryKey(t)); err != nil {
			return err
		}
	}
	return tx.Bucket(bucketTokens).Delete(itob(t.ID))
}

// tokenIDsOf returns the ids of owner's tokens in ascending (creation) order.
func tokenIDsOf(tx *bolt.Tx, owner uint64) []uint64 {
	var ids []uint64
	prefix := itob(owner)
	c := tx.Bucket(bucketTokensByOwner).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		ids = append(ids, btoi(k[8:]))
	}
	return ids
}

// deleteTokensOf deletes every token of owner. Keys are collected before
// anything is deleted: deleting under a cursor skips entries.
func (s *boltStore) deleteTokensOf(tx *bolt.Tx, owner uint64) error {
	tokens := tx.Bucket(bucketTokens)
	for _, id := range tokenIDsOf(tx, owner) {
		var t tokenRecord
		if err := getJSON(tokens, itob(id), &t); err != nil {
			return fmt.Errorf("token %d of user %d: %w", id, owner, err)
		}
		if err := s.deleteToken(tx, &t); err != nil {
			return err
		}
	}
	return nil
}

// Authenticate returns what verification needs of the token whose hash is
// h, and its owner (without the password hash). A token verified lately
// and an owner unchanged since are answered from the auth cache; otherwise
// it is readAuth's one read transaction. It returns errNotFound for an
// unknown token. It does not check expiry.
func (s *boltStore) Authenticate(h tokenHash) (authRecord, userRecord, error) {
	if s.closed.Load() {
		return authRecord{}, userRecord{}, bolterrors.ErrDatabaseNotOpen
	}
	return s.auth.authenticate(h, s)
}

// readAuth is the auth cache's read (see authReader): one read
// transaction with one binary lookup and no JSON for the token, and the
// owner's JSON only when c does not hold the owner.
func (s *boltStore) readAuth(h tokenHash, c *authCache, gen uint64) (a authRecord, u userRecord, fresh bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketTokensByHash).Get(h[:])
		if v == nil {
			return errNotFound
		}
		if err := a.unmarshalHead(v); err != nil {
			return err
		}
		scopes, client, err := c.tailOf(v[authRecordHead:])
		if err != nil {
			return err
		}
		if err := a.setTail(v[0], scopes, client); err != nil {
			return err
		}
		var ok bool
		if u, ok = c.cachedUser(a.Owner, gen); ok {
			return nil
		}
		var rec userRecord // on the heap only when the owner is not cached
		if err := getJSON(tx.Bucket(bucketUsers), itob(a.Owner), &rec); err != nil {
			return err
		}
		rec.PasswordHash = ""
		u, fresh = rec, true
		return nil
	})
	return a, u, fresh, err
}

// TokenByHash returns the token whose hash is h and its owner, or
// errNotFound. It does not check expiry.
func (s *boltStore) TokenByHash(h tokenHash) (tokenRecord, userRecord, error) {
	var t tokenRecord
	var u userRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		a, err := authByHash(tx, h)
		if err != nil {
			return err
		}
		if err := getJSON(tx.Bucket(bucketTokens), itob(a.ID), &t); err != nil {
			return err
		}
		return getJSON(tx.Bucket(bucketUsers), itob(t.Owner), &u)
	})
	return t, u, err
}

// TokenByID returns token id if owner holds it (or owner is anyOwner), and
// errNotFound otherwise.
func (s *boltStore) TokenByID(id, owner uint64) (tokenRecord, error) {
	var t tokenRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		t, err = ownedToken(tx, id, owner)
		return err
	})
	return t, err
}

// asCorruption turns errNotFound, for a record that an index or another
// record names, into an error that says the database is damaged: it must
// not reach a client as a 404.
func asCorruption(err error) error {
	if errors.Is(err, errNotFound) {
		return errors.New("record missing: the database is damaged")
	}
	return err
}

func ownedToken(tx *bolt.Tx, id, owner uint64) (tokenRecord, error) {
	var t tokenRecord
	if err := getJSON(tx.Bucket(bucketTokens), itob(id), &t); err != nil {
		return t, err
	}
	// A grant's token is no personal token: the grant owns it.
	if t.Grant != 0 || owner != anyOwner && t.Owner != owner {
		return tokenRecord{}, errNotFound
	}
	return t, nil
}

// TokensByOwner returns owner's tokens, newest first.
func (s *boltStore) TokensByOwner(owner uint64) ([]tokenRecord, error) {
	out := []tokenRecord{}
	err := s.db.View(func(tx *bolt.Tx) error {
		ids := tokenIDsOf(tx, owner)
		tokens := tx.Bucket(bucketTokens)
		for _, id := range slices.Backward(ids) {
			var t tokenRecord
			if err := getJSON(tokens, itob(id), &t); err != nil {
				return fmt.Errorf("token %d of tokens_by_owner: %w", id, asCorruption(err))
			}
			out = append(out, t)
		}
		return nil
	})
	return out, err
}

// AllTokens returns every personal token, newest first.
func (s *boltStore) AllTokens() ([]tokenRecord, error) {
	out := []tokenRecord{}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketTokens).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			var t tokenRecord
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("decode token %d: %w", btoi(k), err)
			}
			if t.Grant == 0 {
				out = append(out, t)
			}
		}
		return nil
	})
	return out, err
}

// DeleteToken revokes token id if owner holds it (or owner is anyOwner) and
// returns it; errNotFound otherwise.
func (s *boltStore) DeleteToken(by actor, id, owner uint64) (tokenRecord, error) {
	var t tokenRecord
	err := s.update(func(tx *bolt.Tx) error {
		var err error
		if t, err = ownedToken(tx, id, owner); err != nil {
			return err
		}
		if err := s.deleteToken(tx, &t); err != nil {
			return err
		}
		return appendTokenEvent(tx, newAuditEvent(by, kindTokenRevoked), t)
	})
	return t, err
}

// DeleteTokenByHash revokes the token whose hash is h and returns it, or
// errNotFound. kind says why: kindTokenRevoked or kindTokenLeaked.
func (s *boltStore) DeleteTokenByHash(by actor, h tokenHash, kind string) (tokenRecord, error) {
	var t tokenRecord
	err := s.update(func(tx *bolt.Tx) error {
		a, err := authByHash(tx, h)
		if err != nil {
			return err
		}
		if err := getJSON(tx.Bucket(bucketTokens), itob(a.ID), &t); err != nil {
			return err
		}
		if err := s.deleteToken(tx, &t); err != nil {
			return err
		}
		return appendTokenEvent(tx, newAuditEvent(by, kind), t)
	})
	return t, err
}

// RotateToken replaces token id, if owner holds it (or owner is anyOwner),
// with a new token under hash h: same owner, name, scopes and expiry, a new
// id, created at now. The old token stops working in the same transaction.
// It returns the new record, errNotFound, or errTokenExpired when the old
// token has expired at now.
func (s *boltStore) RotateToken(by actor, id, owner uint64, h tokenHash, hint string, now time.Time) (tokenRecord, error) {
	var t tokenRecord
	err := s.update(func(tx *bolt.Tx) error {
		old, err := ownedToken(tx, id, owner)
		if err != nil {
			return err
		}
		if err := s.roomToCreate(tx); err != nil {
			return err
		}
		if old.expired(now) {
			return errTokenExpired
		}
		if err := s.deleteToken(tx, &old); err != nil {
			return err
		}
		t = tokenRecord{
			Owner:     old.Owner,
			Name:      old.Name,
			Scopes:    old.Scopes,
			CreatedAt: now,
			ExpiresAt: old.ExpiresAt,
			Hint:      hint,
		}
		if err := putNewToken(tx, &t, h); err != nil {
			return err
		}
		return appendTokenEvent(tx, newAuditEvent(by, kindTokenRotated).withDetail("replaces token %d (…%s)", old.ID, old.Hint), t)
	})
	return t, err
}

// PurgeExpired deletes tokens that expired before cutoff, with all of their
// index entries. It walks tokens_by_expiry from its start and stops at
// cutoff, so its cost follows what it deletes, not how many tokens exist. It
// deletes at most batch tokens per write transaction so that other writers
// get their turn between batches, and stops early, without error, when ctx
// ends. It returns how many tokens it deleted in how many transactions.
func (s *boltStore) PurgeExpired(ctx context.Context, by actor, cutoff time.Time, batch int) (deleted, txs int, err error) {
	limit := timeKey(cutoff)
	for ctx.Err() == nil {
		n := 0
		err := s.update(func(tx *bolt.Tx) error {
			// Collect first, then delete: deleting under a cursor skips keys.
			var keys [][]byte
			c := tx.Bucket(bucketTokensByExpiry).Cursor()
			for k, _ := c.First(); k != nil && len(keys) < batch; k, _ = c.Next() {
				if len(k) != 16 || btoi(k[:8]) >= limit {
					break
				}
				keys = append(keys, slices.Clone(k))
			}
			tokens := tx.Bucket(bucketTokens)
			for _, k := range keys {
				var t tokenRecord
				switch err := getJSON(tokens, k[8:], &t); {
				case errors.Is(err, errNotFound):
					// An index entry without its token: drop the entry alone.
					if err := tx.Bucket(bucketTokensByExpiry).Delete(k); err != nil {
						return err
					}
					continue
				case err != nil:
					return err
				}
				if err := s.deleteToken(tx, &t); err != nil {
					return err
				}
				if err := appendTokenEvent(tx, newAuditEvent(by, kindTokenPurged), t); err != nil {
					return err
				}
			}
			n = len(keys)
			return nil
		})
		if err != nil {
			return deleted, txs, fmt.Errorf("purge expired tokens: %w", err)
		}
		txs++
		deleted += n
		if n < batch {
			break
		}
	}
	return deleted, txs, nil
}

// lastUse is when and from where a token was last used.
type lastUse struct {
	At time.Time
	IP string
}

// FlushLastUsed records uses in one write transaction. A token that no
// longer exists is skipped, never re-created, and a recorded time is never
// moved backwards.
func (s *boltStore) FlushLastUsed(uses map[uint64]lastUse) error {
	if len(uses) == 0 {
		return nil
	}
	return s.update(func(tx *bolt.Tx) error {
		tokens := tx.Bucket(bucketTokens)
		for id, use := range uses {
			var t tokenRecord
			switch err := getJSON(tokens, itob(id), &t); {
			case errors.Is(err, errNotFound):
				continue
			case err != nil:
				return err
			}
			if t.LastUsedAt != nil && !use.At.After(*t.LastUsedAt) {
				continue
			}
			at := use.At
			t.LastUsedAt, t.LastUsedIP = &at, use.IP
			if err := putJSON(tokens, itob(id), &t); err != nil {
				return err
			}
		}
		return nil
	})
}

// ---- sessions ----

// sessionRecord is a signed-in browser session, stored under the SHA-256 of
// its secret. ExpiresAt is the absolute end, however active the session is.
type sessionRecord struct {
	User       uint64    `json:"user"`
	CreatedAt  time.Time `json:"created_at"`
	ExpiresAt  time.Time `json:"expires_at"`
	LastSeenAt time.Time `json:"last_seen_at"` // for the idle lifetime; updated at most once a minute
	SignedInAt time.Time `json:"signed_in_at"` // when the password was last given, for sudo mode
	Addr       string    `json:"addr"`         // client address last seen

	// Agent is the browser and system at sign-in, as browserLabel names them.
	Agent string `json:"agent,omitempty"`

	// FormKeys are the latest form keys the session used, oldest first
	// (ClaimFormKey). A copy between stores leaves them behind.
	FormKeys []string `json:"form_keys,omitempty"`
}

// ---- consistency ----

// Check verifies the database file's structure (bbolt's own check) and that
// every index entry points at a live record that points back, and that every
// record has all of its index entries. It returns every problem found, joined.
func (s *boltStore) Check() error {
	var problems []error
	bad := func(format string, args ...any) { problems = append(problems, fmt.Errorf(format, args...)) }
	err := s.db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			bad("bbolt: %v", err)
		}
		users := tx.Bucket(bucketUsers)
		tokens := tx.Bucket(bucketTokens)
		byHash := tx.Bucket(bucketTokensByHash)
		byOwner := tx.Bucket(bucketTokensByOwner)
		byExpiry := tx.Bucket(bucketTokensByExpiry)
		byName := tx.Bucket(bucketUsersByName)

		users.ForEach(func(k, v []byte) error {
			var u userRecord
			if err := json.Unmarshal(v, &u); err != nil {
				bad("user %d: %v", btoi(k), err)
				return nil
			}
			if id := byName.Get([]byte(strings.ToLower(u.Name))); id == nil || !bytes.Equal(id, k) {
				bad("user %d (%q) has no users_by_name entry", u.ID, u.Name)
			}
			return nil
		})
		byName.ForEach(func(k, v []byte) error {
			var u userRecord
			if err := getJSON(users, v, &u); err != nil || strings.ToLower(u.Name) != string(k) {
				bad("users_by_name %q points at no such user", k)
			}
			return nil
		})
		tokens.ForEach(func(k, v []byte) error {
			var t tokenRecord
			if err := json.Unmarshal(v, &t); err != nil {
				bad("token %d: %v", btoi(k), err)
				return nil
			}
			var a authRecord
			if v := byHash.Get(t.Hash[:]); v == nil || a.unmarshal(v) != nil || !slices.Equal(a.marshal(), authRecordOf(&t).marshal()) {
				bad("token %d has no tokens_by_hash entry that matches it", t.ID)
			}
			if t.Grant != 0 {
				checkGrantToken(tx, &t, bad)
			} else if byOwner.Get(pairKey(t.Owner, t.ID)) == nil {
				bad("token %d has no tokens_by_owner entry", t.ID)
			}
			if users.Get(itob(t.Owner)) == nil {
				bad("token %d belongs to missing user %d", t.ID, t.Owner)
			}
			if t.ExpiresAt != nil && byExpiry.Get(expiryKey(&t)) == nil {
				bad("token %d has no tokens_by_expiry entry", t.ID)
			}
			return nil
		})
		byHash.ForEach(func(k, v []byte) error {
			var t tokenRecord
			var a authRecord
			if a.unmarshal(v) != nil || getJSON(tokens, itob(a.ID), &t) != nil || !bytes.Equal(t.Hash[:], k) {
				bad("tokens_by_hash %x points at no token that has it", k[:4])
			}
			return nil
		})
		byOwner.ForEach(func(k, _ []byte) error {
			var t tokenRecord
			if len(k) != 16 || getJSON(tokens, k[8:], &t) != nil || t.Owner != btoi(k[:8]) || t.Grant != 0 {
				bad("tokens_by_owner %x points at no personal token of that owner", k)
			}
			return nil
		})
		byExpiry.ForEach(func(k, _ []byte) error {
			var t tokenRecord
			if len(k) != 16 || getJSON(tokens, k[8:], &t) != nil || t.ExpiresAt == nil ||
				timeKey(*t.ExpiresAt) != btoi(k[:8]) {
				bad("tokens_by_expiry %x points at no token of that expiry", k)
			}
			return nil
		})
		sessions := tx.Bucket(bucketSessions)
		sessionsByOwner := tx.Bucket(bucketSessionsByOwner)
		sessions.ForEach(func(k, v []byte) error {
			var rec sessionRecord
			if len(k) != sha256.Size || json.Unmarshal(v, &rec) != nil {
				bad("session %x cannot be read", k[:min(len(k), 4)])
				return nil
			}
			if got := sessionsByOwner.Get(sessionOwnerKey(rec.User, sessionHash(k))); !bytes.Equal(got, sessionOwnerValue(&rec)) {
				bad("session %x of user %d has no sessions_by_owner entry that matches it", k[:4], rec.User)
			}
			if users.Get(itob(rec.User)) == nil {
				bad("session %x belongs to missing user %d", k[:4], rec.User)
			}
			return nil
		})
		sessionsByOwner.ForEach(func(k, _ []byte) error {
			var rec sessionRecord
			if len(k) != 8+sha256.Size || getJSON(sessions, k[8:], &rec) != nil || rec.User != btoi(k[:8]) {
				bad("sessions_by_owner %x points at no session of that owner", k[:min(len(k), 12)])
			}
			return nil
		})
		checkOAuth(tx, bad)
		checkAudit(tx, bad)
		checkSecondFactors(tx, bad)
		return nil
	})
	if err != nil {
		return err
	}
	return errors.Join(problems...)
}

// fileMode returns the permission bits of the database file, for tests and
// the start-up warning about world-readable files.
func fileMode(path string) (os.FileMode, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return fi.Mode().Perm(), nil
}
