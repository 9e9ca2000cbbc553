package main

import (
	"encoding/binary"
	"errors"
	"time"

	bolt "go.etcd.io/bbolt"
)

// authRecord is what verifying a token needs to know, stored in binary as
// the value of tokens_by_hash so that verification is one lookup and no
// JSON. It repeats fields of the token's record; both are written in the
// same transaction and never change apart (rotation makes a new token).
//
// Layout, big-endian: version (1 byte) | token id (8) | owner id (8) |
// created unix ns (8) | expires unix ns, 0 for never (8) | scope count (1) |
// per scope: length (1) and bytes. Version 2, written for the access
// tokens of OAuth grants alone, then has the client id: length (1, never
// 0) and bytes. Everything after the expiry is the record's tail, which
// the auth cache keeps once for every token that shares it (scopeLists).
type authRecord struct {
	ID        uint64
	Owner     uint64
	CreatedAt time.Time
	ExpiresAt *time.Time
	Scopes    []string
	// Client is the client id of a grant's access token, "" for a
	// personal token.
	Client string
}

const (
	authRecordVersion       = 1 // without a client
	authRecordVersionClient = 2 // with one
)

var errBadAuthRecord = errors.New("malformed auth record")

// expired reports whether the token is no longer valid at now.
func (a *authRecord) expired(now time.Time) bool {
	return a.ExpiresAt != nil && !now.Before(*a.ExpiresAt)
}

// authRecordOf returns the auth record of token t.
func authRecordOf(t *tokenRecord) authRecord {
	return authRecord{ID: t.ID, Owner: t.Owner, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, Scopes: t.Scopes, Client: t.Client}
}

func (a authRecord) marshal() []byte {
	n := 1 + 8*4 + 1 + 1 + len(a.Client)
	for _, s := range a.Scopes {
		n += 1 + len(s)
	}
	b := make([]byte, 0, n)
	version := byte(authRecordVersion)
	if a.Client != "" {
		version = authRecordVersionClient
	}
	b = append(b, version)
	b = binary.BigEndian.AppendUint64(b, a.ID)
	b = binary.BigEndian.AppendUint64(b, a.Owner)
	b = binary.BigEndian.AppendUint64(b, uint64(unixNano(a.CreatedAt)))
	b = binary.BigEndian.AppendUint64(b, uint64(expiryNano(a.ExpiresAt)))
	return appendTail(b, a.Scopes, a.Client)
}

// appendTail appends the tail of an auth record: its scopes and, for a
// grant's access token, its client id.
func appendTail(b []byte, scopes []string, client string) []byte {
	b = appendScopes(b, scopes)
	if client != "" {
		b = append(b, byte(len(client)))
		b = append(b, client...)
	}
	return b
}

// appendScopes appends the encoding of scopes in an auth record: a count,
// then per scope its length and bytes.
func appendScopes(b []byte, scopes []string) []byte {
	b = append(b, byte(len(scopes)))
	for _, s := range scopes {
		b = append(b, byte(len(s)))
		b = append(b, s...)
	}
	return b
}

// authRecordHead is the length of an auth record before its scopes.
const authRecordHead = 1 + 8*4

// unmarshal decodes b, which it does not keep: bytes from bbolt die with
// their transaction. The scope list is a new one; authCache.tailOf
// shares it instead.
func (a *authRecord) unmarshal(b []byte) error {
	if err := a.unmarshalHead(b); err != nil {
		return err
	}
	scopes, client, err := decodeTail(b[authRecordHead:])
	if err != nil {
		return err
	}
	return a.setTail(b[0], scopes, client)
}

// setTail sets the scopes and client decoded from the tail of a record of
// version, which must say whether the record names a client.
func (a *authRecord) setTail(version byte, scopes []string, client string) error {
	if (client != "") != (version == authRecordVersionClient) {
		return errBadAuthRecord
	}
	a.Scopes, a.Client = scopes, client
	return nil
}

// unmarshalHead decodes the fields of b before its scopes, and checks
// that b is long enough to hold a scope count.
func (a *authRecord) unmarshalHead(b []byte) error {
	if len(b) < authRecordHead+1 || (b[0] != authRecordVersion && b[0] != authRecordVersionClient) {
		return errBadAuthRecord
	}
	a.ID = binary.BigEndian.Uint64(b[1:])
	a.Owner = binary.BigEndian.Uint64(b[9:])
	a.CreatedAt = time.Unix(0, int64(binary.BigEndian.Uint64(b[17:]))).UTC()
	a.ExpiresAt = nil
	if exp := binary.BigEndian.Uint64(b[25:]); exp != 0 {
		t := time.Unix(0, int64(exp)).UTC()
		a.ExpiresAt = &t
	}
	return nil
}

// Bounds of a scopeLists table. It keeps at most maxIdleScopeLists lists
// that no cached token names, and never more than maxScopeLists in all:
// only when more distinct lists than that are held by cached tokens at
// once is a token with yet another list not cached.
const (
	maxIdleScopeLists = 4096
	maxScopeLists     = 1<<(64-ownerBits) - 1 // numbers 1 to 2^16-1; 0 heads the idle ring
)

// scopeLists numbers the scope lists of auth records, keyed by their
// encoding, for one authCache: a cache slot keeps a list's number instead
// of the list, and decoding a record whose list is known allocates nothing
// for its scopes. The lists are shared: nothing may change one in place.
//
// Each list counts the cache slots that name it. A list no slot names is
// idle: it stays to be found again, but once maxIdleScopeLists are idle the
// one idle the longest is dropped and its number handed out again. So the
// lists of revoked or evicted tokens never crowd out the lists of live
// ones, whoever made them. The authCache's mu guards the table.
type scopeLists struct {
	ids     map[string]uint32 // encoding → number
	entries []scopeListEntry  // by number; entries[0] heads the idle ring
	idle    int               // entries in the idle ring
	free    []uint32          // numbers of dropped lists, to hand out again
}

type scopeListEntry struct {
	key        string // the encoding; "" once dropped
	list       []string
	client     string // for the tail of a grant's access token
	refs       int    // cache slots that name this list
	prev, next uint32 // neighbours in the idle ring while refs is 0, newest after the head
}

func newScopeLists() scopeLists {
	return scopeLists{ids: make(map[string]uint32), entries: make([]scopeListEntry, 1)}
}

// lookup returns the number of the list encoded as key.
func (l *scopeLists) lookup(key []byte) (uint32, bool) {
	n, ok := l.ids[string(key)] // no allocation: the key is not kept
	return n, ok
}

// list returns list number n.
func (l *scopeLists) list(n uint32) []string { return l.entries[n].list }

// client returns the client id that list number n carries, "" for none.
func (l *scopeLists) client(n uint32) string { return l.entries[n].client }

// intern returns the number of the tail encoded as key (appendTail),
// adding scopes and client under it as an idle list if need be. It
// returns false when the table is full of lists that cached tokens name.
func (l *scopeLists) intern(key []byte, scopes []string, client string) (uint32, bool) {
	if n, ok := l.ids[string(key)]; ok {
		return n, true
	}
	if l.idle >= maxIdleScopeLists || (len(l.free) == 0 && len(l.entries) > maxScopeLists && l.idle > 0) {
		l.drop(l.entries[0].prev) // the list idle the longest
	}
	var n uint32
	switch {
	case len(l.free) > 0:
		n = l.free[len(l.free)-1]
		l.free = l.free[:len(l.free)-1]
	case len(l.entries) <= maxScopeLists:
		n = uint32(len(l.entries))
		l.entries = append(l.entries, scopeListEntry{})
	default:
		return 0, false
	}
	e := &l.entries[n]
	e.key = string(key)
	e.list = append(make([]string, 0, len(scopes)), scopes...)
	e.client = client
	l.ids[e.key] = n
	l.pushIdle(n)
	return n, true
}

// hold counts one more cache slot naming list n.
func (l *scopeLists) hold(n uint32) {
	if l.entries[n].refs == 0 {
		l.unlink(n)
	}
	l.entries[n].refs++
}

// release counts one cache slot fewer naming list n.
func (l *scopeLists) release(n uint32) {
	if l.entries[n].refs--; l.entries[n].refs == 0 {
		l.pushIdle(n)
		if l.idle > maxIdleScopeLists {
			l.drop(l.entries[0].prev)
		}
	}
}

// drop forgets idle list n and frees its number. Records decoded with the
// list keep it: a list is never changed, only forgotten.
func (l *scopeLists) drop(n uint32) {
	l.unlink(n)
	delete(l.ids, l.entries[n].key)
	l.entries[n] = scopeListEntry{}
	l.free = append(l.free, n)
}

// pushIdle puts n at the newest end of the idle ring.
func (l *scopeLists) pushIdle(n uint32) {
	head := &l.entries[0]
	l.entries[n].prev, l.entries[n].next = 0, head.next
	l.entries[head.next].prev = n
	head.next = n
	l.idle++
}

// unlink takes n out of the idle ring.
func (l *scopeLists) unlink(n uint32) {
	e := &l.entries[n]
	l.entries[e.prev].next = e.next
	l.entries[e.next].prev = e.prev
	e.prev, e.next = 0, 0
	l.idle--
}

// decodeTail decodes the tail of an auth record: its scopes and the client
// id that may follow them.
func decodeTail(b []byte) ([]string, string, error) {
	count := int(b[0])
	rest := b[1:]
	scopes := make([]string, 0, count)
	for range count {
		if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
			return nil, "", errBadAuthRecord
		}
		scopes = append(scopes, string(rest[1:1+int(rest[0])]))
		rest = rest[1+int(rest[0]):]
	}
	switch {
	case len(rest) == 0:
		return scopes, "", nil
	case rest[0] == 0 || len(rest) != 1+int(rest[0]):
		return nil, "", errBadAuthRecord
	}
	return scopes, string(rest[1:]), nil
}

// authByHash reads the auth record stored under h, or errNotFound.
func authByHash(tx *bolt.Tx, h tokenHash) (authRecord, error) {
	var a authRecord
	v := tx.Bucket(bucketTokensByHash).Get(h[:])
	if v == nil {
		return a, errNotFound
	}
	return a, a.unmarshal(v)
}
