package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The OAuth store (oauthstore.go) in the bbolt engine. Every record is
// found from what the caller holds through an index, so that each method
// reads in proportion to what it returns or deletes:
//
//   - a client by its id, and by its lower-cased name for uniqueness;
//   - a grant by its id, a user's grants, a client's grants, and grants by
//     expiry for the purge;
//   - a grant's access tokens (grant_tokens; they are ordinary tokens, kept
//     out of tokens_by_owner so that the personal views never meet them),
//     and its refresh tokens (grant_refresh);
//   - a refresh token by its hash, with the grant it belongs to and
//     whether it was used;
//   - codes and device requests by their hashes, a device request also by
//     its user code, and both by client, by expiry and by the user who
//     approved them (requests_by_*).
var (
	bucketClients        = []byte("clients")          // client id → clientRecord
	bucketClientsByName  = []byte("clients_by_name")  // lower-cased name → client id
	bucketGrants         = []byte("grants")           // grant id → grantRecord
	bucketGrantsByUser   = []byte("grants_by_user")   // user id ‖ grant id → empty
	bucketGrantsByClient = []byte("grants_by_client") // clientKey ‖ grant id → empty
	bucketGrantsByExpiry = []byte("grants_by_expiry") // expiry unix ns ‖ grant id → empty
	bucketGrantTokens    = []byte("grant_tokens")     // grant id ‖ token id → empty
	bucketRefresh        = []byte("refresh")          // refresh token hash → refreshValue
	bucketGrantRefresh   = []byte("grant_refresh")    // grant id ‖ refresh token hash → empty
	bucketAuthCodes      = []byte("auth_codes")       // code hash → authCodeRecord
	bucketDeviceAuths    = []byte("device_auths")     // device code hash → storedDeviceAuth
	bucketDeviceByUser   = []byte("device_by_user_code")
	// clientKey ‖ request kind ‖ hash → empty: a client's codes and device
	// requests, for DeleteClient.
	bucketRequestsByClient = []byte("requests_by_client")
	// expiry unix ns ‖ request kind ‖ hash → empty, for PurgeOAuth.
	bucketRequestsByExpiry = []byte("requests_by_expiry")
	// user id ‖ request kind ‖ hash → empty: the codes a user approved and
	// the device requests they decided, which go when the user's tokens
	// are revoked, so that none makes a grant afterwards.
	bucketRequestsByUser = []byte("requests_by_user")

	oauthBuckets = [][]byte{
		bucketClients, bucketClientsByName, bucketGrants, bucketGrantsByUser, bucketGrantsByClient,
		bucketGrantsByExpiry, bucketGrantTokens, bucketRefresh, bucketGrantRefresh, bucketAuthCodes,
		bucketDeviceAuths, bucketDeviceByUser, bucketRequestsByClient, bucketRequestsByExpiry, bucketRequestsByUser,
	}
)

// Kinds of requests in flight, in the keys of requests_by_*.
const (
	requestCode   byte = 'c'
	requestDevice byte = 'd'
)

// oauthPurgeBatch is the most codes, device requests and grants that one
// PurgeOAuth transaction deletes.
const oauthPurgeBatch = 500

// deviceSlowDownStep is how much a device request's interval grows at each
// poll that comes too soon (RFC 8628 §3.5).
const deviceSlowDownStep = 5 * time.Second

// upgradeSchema2 brings a database of schema 2 to schema 3 in the
// transaction that opens it: it adds the buckets of the OAuth store.
func upgradeSchema2(tx *bolt.Tx) error {
	for _, name := range oauthBuckets {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	return tx.Bucket(bucketMeta).Put(keySchema, itob(3))
}

// clientKey is a client id as a key prefix: its length, then its bytes,
// so that no id's prefix is another's.
func clientKey(id string) []byte {
	return append([]byte{byte(len(id))}, id...)
}

// grantClientKey is the key of grant g in grants_by_client.
func grantClientKey(client string, grant uint64) []byte {
	return append(clientKey(client), itob(grant)...)
}

func grantExpiryKey(g *grantRecord) []byte {
	return pairKey(timeKey(g.ExpiresAt), g.ID)
}

// grantRefreshKey is the key of refresh token h in grant_refresh.
func grantRefreshKey(grant uint64, h tokenHash) []byte {
	return append(itob(grant), h[:]...)
}

func requestClientKey(client string, kind byte, h tokenHash) []byte {
	return append(append(clientKey(client), kind), h[:]...)
}

func requestExpiryKey(exp time.Time, kind byte, h tokenHash) []byte {
	return append(append(itob(timeKey(exp)), kind), h[:]...)
}

func requestUserKey(user uint64, kind byte, h tokenHash) []byte {
	return append(append(itob(user), kind), h[:]...)
}

// refreshValue is the value of a refresh token in the refresh bucket:
// grant id (8 bytes) ‖ used (1 byte, 0 or 1).
func refreshValue(grant uint64, used bool) []byte {
	v := append(itob(grant), 0)
	if used {
		v[8] = 1
	}
	return v
}

func parseRefreshValue(v []byte) (grant uint64, used bool, err error) {
	if len(v) != 9 || v[8] > 1 {
		return 0, false, errors.New("malformed refresh token record")
	}
	return btoi(v[:8]), v[8] == 1, nil
}

// storedDeviceAuth is a device request as the device_auths bucket holds
// it: with the hash of its user code, so that deleting the request
// deletes its device_by_user_code entry.
type storedDeviceAuth struct {
	deviceAuthRecord
	UserCode tokenHash `json:"user_code"`
}

// ---- clients ----

// CreateClient stores c. It returns errNameTaken when a client of that
// name (ignoring case) or id exists, and errSpaceReserved when the
// database is too full for creations.
func (s *boltStore) CreateClient(by actor, c *clientRecord) error {
	if c.ID == "" || len(c.ID) > 255 {
		return fmt.Errorf("client id of %d bytes: want 1 to 255", len(c.ID))
	}
	return s.update(func(tx *bolt.Tx) error {
		if err := s.roomToCreate(tx); err != nil {
			return err
		}
		clients, byName := tx.Bucket(bucketClients), tx.Bucket(bucketClientsByName)
		nameKey := []byte(strings.ToLower(c.Name))
		if byName.Get(nameKey) != nil || clients.Get([]byte(c.ID)) != nil {
			return errNameTaken
		}
		if err := putJSON(clients, []byte(c.ID), c); err != nil {
			return err
		}
		if err := byName.Put(nameKey, []byte(c.ID)); err != nil {
			return err
		}
		return appendEvents(tx, clientEvent(by, kindClientAdded, c))
	})
}

// ClientByID returns client id, or errNotFound.
func (s *boltStore) ClientByID(id string) (clientRecord, error) {
	var c clientRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(bucketClients), []byte(id), &c)
	})
	return c, err
}

// Clients returns every client, by name ignoring case.
func (s *boltStore) Clients() ([]clientRecord, error) {
	out := []clientRecord{}
	err := s.db.View(func(tx *bolt.Tx) error {
		clients := tx.Bucket(bucketClients)
		return tx.Bucket(bucketClientsByName).ForEach(func(k, id []byte) error {
			var c clientRecord
			if err := getJSON(clients, id, &c); err != nil {
				return fmt.Errorf("client %q of clients_by_name: %w", id, asCorruption(err))
			}
			out = append(out, c)
			return nil
		})
	})
	return out, err
}

// DeleteClient removes client id with its grants (their tokens with them)
// and its codes and device requests, and returns it; errNotFound for an
// unknown client.
func (s *boltStore) DeleteClient(by actor, id string) (clientRecord, error) {
	var c clientRecord
	err := s.update(func(tx *bolt.Tx) error {
		clients := tx.Bucket(bucketClients)
		if err := getJSON(clients, []byte(id), &c); err != nil {
			return err
		}
		prefix := clientKey(id)
		for _, k := range keysWithPrefix(tx.Bucket(bucketGrantsByClient), prefix) {
			if len(k) != len(prefix)+8 {
				continue
			}
			if err := s.revokeGrant(tx, btoi(k[len(prefix):])); err != nil {
				return err
			}
		}
		for _, k := range keysWithPrefix(tx.Bucket(bucketRequestsByClient), prefix) {
			if len(k) != len(prefix)+1+len(tokenHash{}) {
				continue
			}
			if err := deleteRequest(tx, k[len(prefix)], tokenHash(k[len(prefix)+1:])); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketClientsByName).Delete([]byte(strings.ToLower(c.Name))); err != nil {
			return err
		}
		if err := clients.Delete([]byte(id)); err != nil {
			return err
		}
		return appendEvents(tx, clientEvent(by, kindClientRemoved, &c))
	})
	return c, err
}

// keysWithPrefix returns copies of b's keys that begin with prefix,
// collected before the caller deletes anything under them.
func keysWithPrefix(b *bolt.Bucket, prefix []byte) [][]byte {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, slices.Clone(k))
	}
	return keys
}

// ---- grants ----

// grantIDsOf returns the ids of user's grants in ascending (creation) order.
func grantIDsOf(tx *bolt.Tx, user uint64) []uint64 {
	var ids []uint64
	for _, k := range keysWithPrefix(tx.Bucket(bucketGrantsByUser), itob(user)) {
		if len(k) == 16 {
			ids = append(ids, btoi(k[8:]))
		}
	}
	return ids
}

// grantTokenIDs returns the ids of grant's access tokens.
func grantTokenIDs(tx *bolt.Tx, grant uint64) []uint64 {
	var ids []uint64
	for _, k := range keysWithPrefix(tx.Bucket(bucketGrantTokens), itob(grant)) {
		if len(k) == 16 {
			ids = append(ids, btoi(k[8:]))
		}
	}
	return ids
}

// GrantsOf returns user's grants, newest first, each with LastUsedAt: the
// latest of its last refresh and its access tokens' last use.
func (s *boltStore) GrantsOf(user uint64) ([]grantRecord, error) {
	out := []grantRecord{}
	err := s.db.View(func(tx *bolt.Tx) error {
		grants, tokens := tx.Bucket(bucketGrants), tx.Bucket(bucketTokens)
		for _, id := range slices.Backward(grantIDsOf(tx, user)) {
			var g grantRecord
			if err := getJSON(grants, itob(id), &g); err != nil {
				return fmt.Errorf("grant %d of grants_by_user: %w", id, asCorruption(err))
			}
			var last *time.Time
			if !g.RefreshedAt.IsZero() {
				at := g.RefreshedAt
				last = &at
			}
			for _, tid := range grantTokenIDs(tx, id) {
				var t tokenRecord
				if err := getJSON(tokens, itob(tid), &t); err != nil {
					return fmt.Errorf("token %d of grant %d: %w", tid, id, asCorruption(err))
				}
				if t.LastUsedAt != nil && (last == nil || t.LastUsedAt.After(*last)) {
					at := *t.LastUsedAt
					last = &at
				}
			}
			g.LastUsedAt = last
			out = append(out, g)
		}
		return nil
	})
	return out, err
}

// DeleteGrant revokes grant id if owner made it (or owner is anyOwner),
// with its access and refresh tokens, and returns it; errNotFound
// otherwise.
func (s *boltStore) DeleteGrant(by actor, id, owner uint64) (grantRecord, error) {
	var g grantRecord
	err := s.update(func(tx *bolt.Tx) error {
		if err := getJSON(tx.Bucket(bucketGrants), itob(id), &g); err != nil {
			return err
		}
		if owner != anyOwner && g.User != owner {
			return errNotFound
		}
		if err := s.deleteGrant(tx, &g); err != nil {
			return err
		}
		return appendSessionEvent(tx, newAuditEvent(by, kindGrantRevoked).ofGrant(g), g.User)
	})
	return g, err
}

// GrantOfRefresh returns the grant that refresh token h, live or used,
// belongs to; errNotFound for an unknown one.
func (s *boltStore) GrantOfRefresh(h tokenHash) (grantRecord, error) {
	var g grantRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketRefresh).Get(h[:])
		if v == nil {
			return errNotFound
		}
		id, _, err := parseRefreshValue(v)
		if err != nil {
			return err
		}
		if err := getJSON(tx.Bucket(bucketGrants), itob(id), &g); err != nil {
			return fmt.Errorf("grant %d of a refresh token: %w", id, asCorruption(err))
		}
		return nil
	})
	return g, err
}

// revokeGrant deletes grant id with everything it issued, if it still
// exists.
func (s *boltStore) revokeGrant(tx *bolt.Tx, id uint64) error {
	var g grantRecord
	switch err := getJSON(tx.Bucket(bucketGrants), itob(id), &g); {
	case errors.Is(err, errNotFound):
		return nil
	case err != nil:
		return err
	}
	return s.deleteGrant(tx, &g)
}

// deleteGrant deletes g, its access tokens (which leave the auth cache
// when the transaction commits), its refresh tokens and its index entries.
func (s *boltStore) deleteGrant(tx *bolt.Tx, g *grantRecord) error {
	if err := s.deleteGrantTokens(tx, g.ID); err != nil {
		return err
	}
	refresh, grantRefresh := tx.Bucket(bucketRefresh), tx.Bucket(bucketGrantRefresh)
	for _, k := range keysWithPrefix(grantRefresh, itob(g.ID)) {
		if err := refresh.Delete(k[8:]); err != nil {
			return err
		}
		if err := grantRefresh.Delete(k); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bucketGrantsByUser).Delete(pairKey(g.User, g.ID)); err != nil {
		return err
	}
	if err := tx.Bucket(bucketGrantsByClient).Delete(grantClientKey(g.Client, g.ID)); err != nil {
		return err
	}
	if err := tx.Bucket(bucketGrantsByExpiry).Delete(grantExpiryKey(g)); err != nil {
		return err
	}
	return tx.Bucket(bucketGrants).Delete(itob(g.ID))
}

// deleteGrantTokens deletes the access tokens of grant.
func (s *boltStore) deleteGrantTokens(tx *bolt.Tx, grant uint64) error {
	tokens := tx.Bucket(bucketTokens)
	for _, id := range grantTokenIDs(tx, grant) {
		var t tokenRecord
		switch err := getJSON(tokens, itob(id), &t); {
		case errors.Is(err, errNotFound):
			// An index entry without its token: drop the entry alone.
			if err := tx.Bucket(bucketGrantTokens).Delete(pairKey(grant, id)); err != nil {
				return err
			}
			continue
		case err != nil:
			return err
		}
		if err := s.deleteToken(tx, &t); err != nil {
			return err
		}
	}
	return nil
}

// deleteRequestsOf deletes the codes user approved and the device
// requests they decided.
func deleteRequestsOf(tx *bolt.Tx, user uint64) error {
	byUser := tx.Bucket(bucketRequestsByUser)
	for _, k := range keysWithPrefix(byUser, itob(user)) {
		if len(k) == 8+1+len(tokenHash{}) {
			if err := deleteRequest(tx, k[8], tokenHash(k[9:])); err != nil {
				return err
			}
		}
		if err := byUser.Delete(k); err != nil { // gone already, unless astray
			return err
		}
	}
	return nil
}

// deleteGrantsOf deletes every grant of user and returns how many access
// tokens went with them.
func (s *boltStore) deleteGrantsOf(tx *bolt.Tx, user uint64) (int, error) {
	tokens := 0
	for _, id := range grantIDsOf(tx, user) {
		tokens += len(grantTokenIDs(tx, id))
		if err := s.revokeGrant(tx, id); err != nil {
			return tokens, err
		}
	}
	return tokens, nil
}

// newGrant makes a grant of client to user for scopes at now, expiring at
// until, after checking that both exist and that user holds fewer than
// maxGrantsPerUser grants.
func newGrant(tx *bolt.Tx, client string, user uint64, scopes []string, now, until time.Time) (grantRecord, error) {
	if tx.Bucket(bucketUsers).Get(itob(user)) == nil || tx.Bucket(bucketClients).Get([]byte(client)) == nil {
		return grantRecord{}, errNotFound
	}
	n := 0
	prefix := itob(user)
	c := tx.Bucket(bucketGrantsByUser).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		if n++; n >= maxGrantsPerUser {
			return grantRecord{}, errTooManyGrants
		}
	}
	grants := tx.Bucket(bucketGrants)
	grants.FillPercent = 0.9 // ids only grow
	id, err := grants.NextSequence()
	if err != nil {
		return grantRecord{}, err
	}
	g := grantRecord{ID: id, Client: client, User: user, Scopes: scopes, CreatedAt: now, ExpiresAt: until}
	return g, putGrant(tx, &g)
}

// putGrant writes g with every index entry.
func putGrant(tx *bolt.Tx, g *grantRecord) error {
	if err := putJSON(tx.Bucket(bucketGrants), itob(g.ID), g); err != nil {
		return err
	}
	if err := tx.Bucket(bucketGrantsByUser).Put(pairKey(g.User, g.ID), nil); err != nil {
		return err
	}
	if err := tx.Bucket(bucketGrantsByClient).Put(grantClientKey(g.Client, g.ID), nil); err != nil {
		return err
	}
	return tx.Bucket(bucketGrantsByExpiry).Put(grantExpiryKey(g), nil)
}

// putIssue stores what issue holds for grant g: its access token, of g's
// user and client, and its refresh token. It returns the stored token.
func putIssue(tx *bolt.Tx, g *grantRecord, issue *oauthIssue) (tokenRecord, error) {
	t := issue.Access
	if t.ExpiresAt == nil {
		return tokenRecord{}, errors.New("an OAuth access token must expire")
	}
	t.Owner, t.Grant, t.Client = g.User, g.ID, g.Client
	if err := putNewToken(tx, &t, issue.AccessHash); err != nil {
		return tokenRecord{}, err
	}
	return t, putRefresh(tx, g.ID, issue.RefreshHash)
}

// putRefresh stores refresh token h, unused, for grant.
func putRefresh(tx *bolt.Tx, grant uint64, h tokenHash) error {
	refresh := tx.Bucket(bucketRefresh)
	if refresh.Get(h[:]) != nil {
		return errors.New("refresh token hash collision")
	}
	if err := refresh.Put(h[:], refreshValue(grant, false)); err != nil {
		return err
	}
	return tx.Bucket(bucketGrantRefresh).Put(grantRefreshKey(grant, h), nil)
}

// ---- authorization codes ----

// CreateAuthCode stores code c under hash h. It returns errNotFound when
// its client or user does not exist, and errSpaceReserved when the
// database is too full for creations.
func (s *boltStore) CreateAuthCode(h tokenHash, c authCodeRecord) error {
	return s.update(func(tx *bolt.Tx) error {
		if err := s.roomToCreate(tx); err != nil {
			return err
		}
		if tx.Bucket(bucketUsers).Get(itob(c.User)) == nil || tx.Bucket(bucketClients).Get([]byte(c.Client)) == nil {
			return errNotFound
		}
		codes := tx.Bucket(bucketAuthCodes)
		if codes.Get(h[:]) != nil {
			return errors.New("authorization code hash collision")
		}
		return putAuthCode(tx, h, &c)
	})
}

// putAuthCode writes code c under h with its index entries.
func putAuthCode(tx *bolt.Tx, h tokenHash, c *authCodeRecord) error {
	if err := putJSON(tx.Bucket(bucketAuthCodes), h[:], c); err != nil {
		return err
	}
	if err := tx.Bucket(bucketRequestsByClient).Put(requestClientKey(c.Client, requestCode, h), nil); err != nil {
		return err
	}
	if err := tx.Bucket(bucketRequestsByUser).Put(requestUserKey(c.User, requestCode, h), nil); err != nil {
		return err
	}
	return tx.Bucket(bucketRequestsByExpiry).Put(requestExpiryKey(c.ExpiresAt, requestCode, h), nil)
}

// AuthCode returns the code stored under h, or errNotFound. It does not
// check expiry.
func (s *boltStore) AuthCode(h tokenHash) (authCodeRecord, error) {
	var c authCodeRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(bucketAuthCodes), h[:], &c)
	})
	return c, err
}

// RedeemAuthCode makes the grant of code h and issues its first tokens,
// in one transaction (see oauthStore). A code redeemed before has its
// grant revoked in a transaction that commits, and then errCodeUsed.
func (s *boltStore) RedeemAuthCode(by actor, h tokenHash, now time.Time, issue *oauthIssue) (grantRecord, tokenRecord, error) {
	var g grantRecord
	var t tokenRecord
	used := false
	err := s.update(func(tx *bolt.Tx) error {
		codes := tx.Bucket(bucketAuthCodes)
		var c authCodeRecord
		if err := getJSON(codes, h[:], &c); err != nil {
			return err
		}
		if c.Grant != 0 {
			used = true
			return s.revokeReusedGrant(tx, by, c.Grant)
		}
		if !now.Before(c.ExpiresAt) {
			return errTokenExpired
		}
		if err := s.roomToCreate(tx); err != nil {
			return err
		}
		var err error
		if g, err = newGrant(tx, c.Client, c.User, c.Scopes, now, issue.RefreshUntil); err != nil {
			return err
		}
		if t, err = putIssue(tx, &g, issue); err != nil {
			return err
		}
		if err := appendGrantEvent(tx, by, g); err != nil {
			return err
		}
		c.Grant = g.ID
		return putJSON(codes, h[:], &c)
	})
	if err == nil && used {
		err = errCodeUsed
	}
	if err != nil {
		return grantRecord{}, tokenRecord{}, err
	}
	return g, t, nil
}

// ---- device authorization requests ----

// CreateDeviceAuth stores request d under device code hash dev and user
// code hash uc. It returns errCodeTaken when uc belongs to a request not
// expired at d.CreatedAt (one expired is deleted to make way), errNotFound
// for an unknown client, and errSpaceReserved when the database is too
// full for creations.
func (s *boltStore) CreateDeviceAuth(dev, uc tokenHash, d deviceAuthRecord) error {
	return s.update(func(tx *bolt.Tx) error {
		if err := s.roomToCreate(tx); err != nil {
			return err
		}
		if tx.Bucket(bucketClients).Get([]byte(d.Client)) == nil {
			return errNotFound
		}
		if old := tx.Bucket(bucketDeviceByUser).Get(uc[:]); old != nil {
			var prev storedDeviceAuth
			switch err := getJSON(tx.Bucket(bucketDeviceAuths), old, &prev); {
			case errors.Is(err, errNotFound):
			case err != nil:
				return err
			case d.CreatedAt.Before(prev.ExpiresAt):
				return errCodeTaken
			default:
				if err := deleteDeviceAuth(tx, tokenHash(old), &prev); err != nil {
					return err
				}
			}
		}
		if tx.Bucket(bucketDeviceAuths).Get(dev[:]) != nil {
			return errors.New("device code hash collision")
		}
		return putDeviceAuth(tx, dev, &storedDeviceAuth{deviceAuthRecord: d, UserCode: uc})
	})
}

// putDeviceAuth writes d under dev with its index entries.
func putDeviceAuth(tx *bolt.Tx, dev tokenHash, d *storedDeviceAuth) error {
	if err := putJSON(tx.Bucket(bucketDeviceAuths), dev[:], d); err != nil {
		return err
	}
	if d.User != 0 {
		if err := tx.Bucket(bucketRequestsByUser).Put(requestUserKey(d.User, requestDevice, dev), nil); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bucketDeviceByUser).Put(d.UserCode[:], dev[:]); err != nil {
		return err
	}
	if err := tx.Bucket(bucketRequestsByClient).Put(requestClientKey(d.Client, requestDevice, dev), nil); err != nil {
		return err
	}
	return tx.Bucket(bucketRequestsByExpiry).Put(requestExpiryKey(d.ExpiresAt, requestDevice, dev), nil)
}

// deleteDeviceAuth deletes request d stored under dev with its index
// entries.
func deleteDeviceAuth(tx *bolt.Tx, dev tokenHash, d *storedDeviceAuth) error {
	byUser := tx.Bucket(bucketDeviceByUser)
	if bytes.Equal(byUser.Get(d.UserCode[:]), dev[:]) {
		if err := byUser.Delete(d.UserCode[:]); err != nil {
			return err
		}
	}
	if err := tx.Bucket(bucketRequestsByClient).Delete(requestClientKey(d.Client, requestDevice, dev)); err != nil {
		return err
	}
	if err := tx.Bucket(bucketRequestsByUser).Delete(requestUserKey(d.User, requestDevice, dev)); err != nil {
		return err
	}
	if err := tx.Bucket(bucketRequestsByExpiry).Delete(requestExpiryKey(d.ExpiresAt, requestDevice, dev)); err != nil {
		return err
	}
	return tx.Bucket(bucketDeviceAuths).Delete(dev[:])
}

// deleteAuthCode deletes code c stored under h with its index entries.
func deleteAuthCode(tx *bolt.Tx, h tokenHash, c *authCodeRecord) error {
	if err := tx.Bucket(bucketRequestsByClient).Delete(requestClientKey(c.Client, requestCode, h)); err != nil {
		return err
	}
	if err := tx.Bucket(bucketRequestsByUser).Delete(requestUserKey(c.User, requestCode, h)); err != nil {
		return err
	}
	if err := tx.Bucket(bucketRequestsByExpiry).Delete(requestExpiryKey(c.ExpiresAt, requestCode, h)); err != nil {
		return err
	}
	return tx.Bucket(bucketAuthCodes).Delete(h[:])
}

// deleteRequest deletes the code or device request of kind under h, if it
// exists.
func deleteRequest(tx *bolt.Tx, kind byte, h tokenHash) error {
	switch kind {
	case requestCode:
		var c authCodeRecord
		switch err := getJSON(tx.Bucket(bucketAuthCodes), h[:], &c); {
		case errors.Is(err, errNotFound):
			return nil
		case err != nil:
			return err
		}
		return deleteAuthCode(tx, h, &c)
	case requestDevice:
		var d storedDeviceAuth
		switch err := getJSON(tx.Bucket(bucketDeviceAuths), h[:], &d); {
		case errors.Is(err, errNotFound):
			return nil
		case err != nil:
			return err
		}
		return deleteDeviceAuth(tx, h, &d)
	}
	return fmt.Errorf("unknown request kind %q", kind)
}

// deviceAuth reads the device request stored under dev.
func deviceAuth(tx *bolt.Tx, dev []byte) (storedDeviceAuth, error) {
	var d storedDeviceAuth
	return d, getJSON(tx.Bucket(bucketDeviceAuths), dev, &d)
}

// deviceAuthByUserCode reads the device request whose user code hashes
// to uc, and its device code hash.
func deviceAuthByUserCode(tx *bolt.Tx, uc tokenHash) (tokenHash, storedDeviceAuth, error) {
	dev := tx.Bucket(bucketDeviceByUser).Get(uc[:])
	if len(dev) != len(tokenHash{}) {
		return tokenHash{}, storedDeviceAuth{}, errNotFound
	}
	d, err := deviceAuth(tx, dev)
	if err != nil {
		return tokenHash{}, d, fmt.Errorf("device request of device_by_user_code: %w", asCorruption(err))
	}
	return tokenHash(dev), d, nil
}

// DeviceAuthByUserCode returns the request whose user code hashes to uc,
// or errNotFound. It does not check expiry.
func (s *boltStore) DeviceAuthByUserCode(uc tokenHash) (deviceAuthRecord, error) {
	var d storedDeviceAuth
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		_, d, err = deviceAuthByUserCode(tx, uc)
		return err
	})
	return d.deviceAuthRecord, err
}

// DecideDeviceAuth records user's answer to the pending request whose user
// code hashes to uc: approved with scopes, or denied. It returns
// errNotFound for an unknown request or user, errTokenExpired when the
// request expired at now, and errCodeUsed when it was decided already.
func (s *boltStore) DecideDeviceAuth(uc tokenHash, user uint64, approve bool, scopes []string, now time.Time) error {
	return s.update(func(tx *bolt.Tx) error {
		dev, d, err := deviceAuthByUserCode(tx, uc)
		if err != nil {
			return err
		}
		if !now.Before(d.ExpiresAt) {
			return errTokenExpired
		}
		if d.State != devicePending {
			return errCodeUsed
		}
		if tx.Bucket(bucketUsers).Get(itob(user)) == nil {
			return errNotFound
		}
		d.User = user
		d.State = deviceDenied
		if approve {
			d.State, d.Approved = deviceApproved, scopes
		}
		return putDeviceAuth(tx, dev, &d)
	})
}

// PollDeviceAuth records a poll of request dev at now and returns the
// request as it was before. slowDown reports a poll sooner than the
// interval after the last one, which makes the stored interval grow by
// deviceSlowDownStep. errNotFound for an unknown request.
func (s *boltStore) PollDeviceAuth(dev tokenHash, now time.Time) (deviceAuthRecord, bool, error) {
	var before deviceAuthRecord
	slowDown := false
	err := s.update(func(tx *bolt.Tx) error {
		d, err := deviceAuth(tx, dev[:])
		if err != nil {
			return err
		}
		before = d.deviceAuthRecord
		if !d.LastPoll.IsZero() && now.Sub(d.LastPoll) < d.Interval {
			slowDown = true
			d.Interval += deviceSlowDownStep
		}
		d.LastPoll = now
		return putJSON(tx.Bucket(bucketDeviceAuths), dev[:], &d)
	})
	if err != nil {
		return deviceAuthRecord{}, false, err
	}
	return before, slowDown, nil
}

// RedeemDeviceAuth makes the grant of approved request dev and issues its
// first tokens, in one transaction. A request issued before has its grant
// revoked in a transaction that commits, and then errCodeUsed;
// errTokenExpired past its expiry; errNotFound for an unknown request,
// one not approved, or a user or client gone.
func (s *boltStore) RedeemDeviceAuth(by actor, dev tokenHash, now time.Time, issue *oauthIssue) (grantRecord, tokenRecord, error) {
	var g grantRecord
	var t tokenRecord
	used := false
	err := s.update(func(tx *bolt.Tx) error {
		d, err := deviceAuth(tx, dev[:])
		if err != nil {
			return err
		}
		if d.State == deviceIssued {
			used = true
			return s.revokeReusedGrant(tx, by, d.Grant)
		}
		if !now.Before(d.ExpiresAt) {
			return errTokenExpired
		}
		if d.State != deviceApproved {
			return errNotFound
		}
		if err := s.roomToCreate(tx); err != nil {
			return err
		}
		if g, err = newGrant(tx, d.Client, d.User, d.Approved, now, issue.RefreshUntil); err != nil {
			return err
		}
		if t, err = putIssue(tx, &g, issue); err != nil {
			return err
		}
		if err := appendGrantEvent(tx, by, g); err != nil {
			return err
		}
		d.State, d.Grant = deviceIssued, g.ID
		return putJSON(tx.Bucket(bucketDeviceAuths), dev[:], &d)
	})
	if err == nil && used {
		err = errCodeUsed
	}
	if err != nil {
		return grantRecord{}, tokenRecord{}, err
	}
	return g, t, nil
}

// ---- refresh ----

// RefreshGrant rotates refresh token h (see oauthStore): the grant's
// access tokens go, the issue's are stored, h is marked used and the
// grant's RefreshedAt and ExpiresAt move on. A refresh token used before
// has its grant revoked in a transaction that commits, and then
// errCodeUsed; errTokenExpired when the grant expired at now; errNotFound
// for an unknown refresh token.
func (s *boltStore) RefreshGrant(by actor, h tokenHash, now time.Time, issue *oauthIssue) (grantRecord, tokenRecord, error) {
	var g grantRecord
	var t tokenRecord
	used := false
	err := s.update(func(tx *bolt.Tx) error {
		refresh := tx.Bucket(bucketRefresh)
		v := refresh.Get(h[:])
		if v == nil {
			return errNotFound
		}
		id, wasUsed, err := parseRefreshValue(v)
		if err != nil {
			return err
		}
		if wasUsed {
			used = true
			return s.revokeReusedGrant(tx, by, id)
		}
		grants := tx.Bucket(bucketGrants)
		if err := getJSON(grants, itob(id), &g); err != nil {
			return fmt.Errorf("grant %d of a refresh token: %w", id, asCorruption(err))
		}
		if !now.Before(g.ExpiresAt) {
			return errTokenExpired
		}
		if err := s.roomToCreate(tx); err != nil {
			return err
		}
		if err := s.deleteGrantTokens(tx, g.ID); err != nil {
			return err
		}
		if err := refresh.Put(h[:], refreshValue(g.ID, true)); err != nil {
			return err
		}
		if err := tx.Bucket(bucketGrantsByExpiry).Delete(grantExpiryKey(&g)); err != nil {
			return err
		}
		g.RefreshedAt, g.ExpiresAt = now, issue.RefreshUntil
		if err := putGrant(tx, &g); err != nil {
			return err
		}
		t, err = putIssue(tx, &g, issue)
		return err
	})
	if err == nil && used {
		err = errCodeUsed
	}
	if err != nil {
		return grantRecord{}, tokenRecord{}, err
	}
	return g, t, nil
}

// ---- housekeeping ----

// PurgeOAuth deletes the codes and device requests expired at now, and
// the grants expired at now with their tokens, at most oauthPurgeBatch of
// them a transaction, until none is left or ctx ends (then without
// error). It returns how many codes, device requests and grants it
// deleted. It reads the expiry indexes from their start up to now, so its
// cost follows what it deletes, and with nothing to delete it does not
// write at all: a purge pass every minute costs no commit.
func (s *boltStore) PurgeOAuth(ctx context.Context, now time.Time) (int, error) {
	limit := timeKey(now)
	total := 0
	for ctx.Err() == nil {
		var due bool
		err := s.db.View(func(tx *bolt.Tx) error {
			due = len(expiredKeys(tx.Bucket(bucketRequestsByExpiry), limit, 1)) > 0 ||
				len(expiredKeys(tx.Bucket(bucketGrantsByExpiry), limit, 1)) > 0
			return nil
		})
		if err != nil || !due {
			return total, err
		}
		n := 0
		err = s.update(func(tx *bolt.Tx) error {
			n = 0
			byExpiry := tx.Bucket(bucketRequestsByExpiry)
			for _, k := range expiredKeys(byExpiry, limit, oauthPurgeBatch) {
				if len(k) != 8+1+len(tokenHash{}) {
					if err := byExpiry.Delete(k); err != nil {
						return err
					}
					continue
				}
				h := tokenHash(k[9:])
				if err := deleteRequest(tx, k[8], h); err != nil {
					return err
				}
				// An entry whose request is gone, or has another expiry,
				// goes too.
				if err := byExpiry.Delete(k); err != nil {
					return err
				}
				n++
			}
			grantsByExpiry := tx.Bucket(bucketGrantsByExpiry)
			for _, k := range expiredKeys(grantsByExpiry, limit, oauthPurgeBatch-n) {
				if len(k) == 16 {
					if err := s.revokeGrant(tx, btoi(k[8:])); err != nil {
						return err
					}
				}
				if err := grantsByExpiry.Delete(k); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("purge OAuth requests and grants: %w", err)
		}
		total += n
		if n < oauthPurgeBatch {
			break
		}
	}
	return total, nil
}

// expiredKeys returns copies of the first keys of b, an index keyed by
// expiry first, whose expiry is at most limit: at most n of them.
func expiredKeys(b *bolt.Bucket, limit uint64, n int) [][]byte {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.First(); k != nil && len(keys) < n; k, _ = c.Next() {
		if len(k) >= 8 && btoi(k[:8]) > limit {
			break
		}
		keys = append(keys, slices.Clone(k))
	}
	return keys
}

// ---- consistency ----

// checkOAuth adds to bad every inconsistency among the OAuth buckets:
// every record has its index entries, every index entry points at a
// record that points back, and every grant's user and client exist.
// checkGrantToken, called for each token of a grant, does the rest.
func checkOAuth(tx *bolt.Tx, bad func(format string, args ...any)) {
	users, clients, grants := tx.Bucket(bucketUsers), tx.Bucket(bucketClients), tx.Bucket(bucketGrants)
	tokens := tx.Bucket(bucketTokens)
	clientsByName := tx.Bucket(bucketClientsByName)
	clients.ForEach(func(k, v []byte) error {
		var c clientRecord
		if err := json.Unmarshal(v, &c); err != nil || c.ID != string(k) {
			bad("client %q cannot be read or has another id", k)
			return nil
		}
		if !bytes.Equal(clientsByName.Get([]byte(strings.ToLower(c.Name))), k) {
			bad("client %q (%q) has no clients_by_name entry", k, c.Name)
		}
		return nil
	})
	clientsByName.ForEach(func(k, v []byte) error {
		var c clientRecord
		if getJSON(clients, v, &c) != nil || strings.ToLower(c.Name) != string(k) {
			bad("clients_by_name %q points at no such client", k)
		}
		return nil
	})

	grantsByUser, grantsByClient := tx.Bucket(bucketGrantsByUser), tx.Bucket(bucketGrantsByClient)
	grantsByExpiry := tx.Bucket(bucketGrantsByExpiry)
	grants.ForEach(func(k, v []byte) error {
		var g grantRecord
		if err := json.Unmarshal(v, &g); err != nil || len(k) != 8 || g.ID != btoi(k) {
			bad("grant %x cannot be read or has another id", k)
			return nil
		}
		if users.Get(itob(g.User)) == nil {
			bad("grant %d belongs to missing user %d", g.ID, g.User)
		}
		if clients.Get([]byte(g.Client)) == nil {
			bad("grant %d is of missing client %q", g.ID, g.Client)
		}
		if grantsByUser.Get(pairKey(g.User, g.ID)) == nil {
			bad("grant %d has no grants_by_user entry", g.ID)
		}
		if grantsByClient.Get(grantClientKey(g.Client, g.ID)) == nil {
			bad("grant %d has no grants_by_client entry", g.ID)
		}
		if grantsByExpiry.Get(grantExpiryKey(&g)) == nil {
			bad("grant %d has no grants_by_expiry entry", g.ID)
		}
		return nil
	})
	grantOf := func(id []byte) (grantRecord, bool) {
		var g grantRecord
		return g, getJSON(grants, id, &g) == nil
	}
	grantsByUser.ForEach(func(k, _ []byte) error {
		if g, ok := grantOf(k[min(8, len(k)):]); len(k) != 16 || !ok || g.User != btoi(k[:8]) {
			bad("grants_by_user %x points at no grant of that user", k)
		}
		return nil
	})
	grantsByClient.ForEach(func(k, _ []byte) error {
		n := int(k[0])
		if len(k) != 1+n+8 {
			bad("grants_by_client %x is malformed", k)
			return nil
		}
		if g, ok := grantOf(k[1+n:]); !ok || g.Client != string(k[1:1+n]) {
			bad("grants_by_client %x points at no grant of that client", k)
		}
		return nil
	})
	grantsByExpiry.ForEach(func(k, _ []byte) error {
		if g, ok := grantOf(k[min(8, len(k)):]); len(k) != 16 || !ok || timeKey(g.ExpiresAt) != btoi(k[:8]) {
			bad("grants_by_expiry %x points at no grant of that expiry", k)
		}
		return nil
	})
	tx.Bucket(bucketGrantTokens).ForEach(func(k, _ []byte) error {
		var t tokenRecord
		if len(k) != 16 || getJSON(tokens, k[8:], &t) != nil || t.Grant != btoi(k[:8]) {
			bad("grant_tokens %x points at no token of that grant", k)
		}
		return nil
	})

	refresh, grantRefresh := tx.Bucket(bucketRefresh), tx.Bucket(bucketGrantRefresh)
	refresh.ForEach(func(k, v []byte) error {
		id, _, err := parseRefreshValue(v)
		if err != nil || len(k) != len(tokenHash{}) {
			bad("refresh token %x cannot be read", k[:min(4, len(k))])
			return nil
		}
		if _, ok := grantOf(itob(id)); !ok {
			bad("refresh token %x belongs to missing grant %d", k[:4], id)
		}
		if grantRefresh.Get(grantRefreshKey(id, tokenHash(k))) == nil {
			bad("refresh token %x has no grant_refresh entry", k[:4])
		}
		return nil
	})
	grantRefresh.ForEach(func(k, _ []byte) error {
		if len(k) != 8+len(tokenHash{}) {
			bad("grant_refresh %x is malformed", k)
			return nil
		}
		if id, _, err := parseRefreshValue(refresh.Get(k[8:])); err != nil || id != btoi(k[:8]) {
			bad("grant_refresh %x points at no refresh token of that grant", k[:12])
		}
		return nil
	})

	// Requests in flight: each with its entries in requests_by_client and
	// requests_by_expiry, and each entry pointing back.
	byClient, byExpiry := tx.Bucket(bucketRequestsByClient), tx.Bucket(bucketRequestsByExpiry)
	byUserCode := tx.Bucket(bucketDeviceByUser)
	byUser := tx.Bucket(bucketRequestsByUser)
	type request struct {
		client  string
		expires time.Time
		user    uint64
	}
	requestOf := func(kind byte, h []byte) (request, bool) {
		switch kind {
		case requestCode:
			var c authCodeRecord
			if getJSON(tx.Bucket(bucketAuthCodes), h, &c) == nil {
				return request{c.Client, c.ExpiresAt, c.User}, true
			}
		case requestDevice:
			if d, err := deviceAuth(tx, h); err == nil {
				return request{d.Client, d.ExpiresAt, d.User}, true
			}
		}
		return request{}, false
	}
	checkRequest := func(kind byte, k []byte) {
		r, ok := requestOf(kind, k)
		if !ok || len(k) != len(tokenHash{}) {
			bad("request %c %x cannot be read", kind, k[:min(4, len(k))])
			return
		}
		if byClient.Get(requestClientKey(r.client, kind, tokenHash(k))) == nil {
			bad("request %c %x has no requests_by_client entry", kind, k[:4])
		}
		if byExpiry.Get(requestExpiryKey(r.expires, kind, tokenHash(k))) == nil {
			bad("request %c %x has no requests_by_expiry entry", kind, k[:4])
		}
		if r.user != 0 && byUser.Get(requestUserKey(r.user, kind, tokenHash(k))) == nil {
			bad("request %c %x has no requests_by_user entry", kind, k[:4])
		}
	}
	tx.Bucket(bucketAuthCodes).ForEach(func(k, _ []byte) error { checkRequest(requestCode, k); return nil })
	tx.Bucket(bucketDeviceAuths).ForEach(func(k, _ []byte) error {
		checkRequest(requestDevice, k)
		if d, err := deviceAuth(tx, k); err == nil && !bytes.Equal(byUserCode.Get(d.UserCode[:]), k) {
			bad("device request %x has no device_by_user_code entry", k[:min(4, len(k))])
		}
		return nil
	})
	byUserCode.ForEach(func(k, v []byte) error {
		if d, err := deviceAuth(tx, v); err != nil || !bytes.Equal(d.UserCode[:], k) {
			bad("device_by_user_code %x points at no request of that user code", k[:min(4, len(k))])
		}
		return nil
	})
	byClient.ForEach(func(k, _ []byte) error {
		n := int(k[0])
		if len(k) != 1+n+1+len(tokenHash{}) {
			bad("requests_by_client %x is malformed", k)
			return nil
		}
		if r, ok := requestOf(k[1+n], k[2+n:]); !ok || r.client != string(k[1:1+n]) {
			bad("requests_by_client %x points at no request of that client", k[:min(len(k), 12)])
		}
		return nil
	})
	byUser.ForEach(func(k, _ []byte) error {
		if len(k) != 8+1+len(tokenHash{}) {
			bad("requests_by_user %x is malformed", k)
			return nil
		}
		if r, ok := requestOf(k[8], k[9:]); !ok || r.user != btoi(k[:8]) {
			bad("requests_by_user %x points at no request of that user", k[:12])
		}
		return nil
	})
	byExpiry.ForEach(func(k, _ []byte) error {
		if len(k) != 8+1+len(tokenHash{}) {
			bad("requests_by_expiry %x is malformed", k)
			return nil
		}
		if r, ok := requestOf(k[8], k[9:]); !ok || timeKey(r.expires) != btoi(k[:8]) {
			bad("requests_by_expiry %x points at no request of that expiry", k[:12])
		}
		return nil
	})
}

// checkGrantToken adds to bad what is wrong with t, a token of a grant:
// its grant must exist, be its owner's and client's, and list it.
func checkGrantToken(tx *bolt.Tx, t *tokenRecord, bad func(format string, args ...any)) {
	var g grantRecord
	if err := getJSON(tx.Bucket(bucketGrants), itob(t.Grant), &g); err != nil {
		bad("token %d belongs to missing grant %d", t.ID, t.Grant)
		return
	}
	if g.User != t.Owner || g.Client != t.Client {
		bad("token %d is not of the user and client of its grant %d", t.ID, t.Grant)
	}
	if tx.Bucket(bucketGrantTokens).Get(pairKey(t.Grant, t.ID)) == nil {
		bad("token %d has no grant_tokens entry", t.ID)
	}
}

// ---- copy (copy.go) ----

// exportOAuth hands every OAuth client, then every grant with its refresh
// tokens, to to, in batches of at most batch, from tx. Codes and device
// requests in flight stay behind.
func exportOAuth(ctx context.Context, tx *bolt.Tx, batch int, to importer) error {
	clients := &batcher[clientRecord]{ctx: ctx, size: batch, out: to.ImportClients}
	err := tx.Bucket(bucketClients).ForEach(func(k, v []byte) error {
		var c clientRecord
		if err := getJSON(tx.Bucket(bucketClients), k, &c); err != nil {
			return err
		}
		return clients.add(c)
	})
	if err != nil {
		return err
	}
	if err := clients.flush(); err != nil {
		return err
	}
	grants := &batcher[grantCopy]{ctx: ctx, size: batch, out: to.ImportGrants}
	refresh := tx.Bucket(bucketRefresh)
	err = tx.Bucket(bucketGrants).ForEach(func(k, v []byte) error {
		var g grantCopy
		if err := getJSON(tx.Bucket(bucketGrants), k, &g.grant); err != nil {
			return err
		}
		for _, rk := range keysWithPrefix(tx.Bucket(bucketGrantRefresh), k) {
			h := tokenHash(rk[8:])
			id, used, err := parseRefreshValue(refresh.Get(h[:]))
			if err != nil || id != g.grant.ID {
				return fmt.Errorf("refresh token %x of grant %d: %w", h[:4], g.grant.ID, asCorruption(errNotFound))
			}
			g.refresh = append(g.refresh, refreshCopy{hash: h, used: used})
		}
		return grants.add(g)
	})
	if err != nil {
		return err
	}
	return grants.flush()
}

// ImportClients stores OAuth clients with their ids and name index
// entries, in one write transaction. It returns errNameTaken when a name
// or id is taken.
func (s *boltStore) ImportClients(list []clientRecord) error {
	return s.update(func(tx *bolt.Tx) error {
		clients, byName := tx.Bucket(bucketClients), tx.Bucket(bucketClientsByName)
		for i := range list {
			c := &list[i]
			nameKey := []byte(strings.ToLower(c.Name))
			if c.ID == "" || len(c.ID) > 255 || byName.Get(nameKey) != nil || clients.Get([]byte(c.ID)) != nil {
				return fmt.Errorf("OAuth client %q (%q): %w", c.ID, c.Name, errNameTaken)
			}
			if err := putJSON(clients, []byte(c.ID), c); err != nil {
				return err
			}
			if err := byName.Put(nameKey, []byte(c.ID)); err != nil {
				return err
			}
		}
		return nil
	})
}

// ImportGrants stores grants with their ids, index entries and refresh
// tokens, in one write transaction. Their users and clients must be
// stored already.
func (s *boltStore) ImportGrants(list []grantCopy) error {
	return s.update(func(tx *bolt.Tx) error {
		users, clients, grants := tx.Bucket(bucketUsers), tx.Bucket(bucketClients), tx.Bucket(bucketGrants)
		refresh, grantRefresh := tx.Bucket(bucketRefresh), tx.Bucket(bucketGrantRefresh)
		grants.FillPercent = 0.9
		for i := range list {
			g := &list[i].grant
			switch {
			case users.Get(itob(g.User)) == nil:
				return fmt.Errorf("grant %d: %w: user %d", g.ID, errNotFound, g.User)
			case clients.Get([]byte(g.Client)) == nil:
				return fmt.Errorf("grant %d: %w: client %q", g.ID, errNotFound, g.Client)
			case g.ID == 0 || grants.Get(itob(g.ID)) != nil:
				return fmt.Errorf("grant id %d is taken or not a grant id", g.ID)
			}
			if err := putGrant(tx, g); err != nil {
				return err
			}
			for _, r := range list[i].refresh {
				if refresh.Get(r.hash[:]) != nil {
					return fmt.Errorf("a refresh token of grant %d: its hash is taken", g.ID)
				}
				if err := refresh.Put(r.hash[:], refreshValue(g.ID, r.used)); err != nil {
					return err
				}
				if err := grantRefresh.Put(grantRefreshKey(g.ID, r.hash), nil); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
