package main

import (
	"encoding/binary"
	"errors"
	"sync"
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
// per scope: length (1) and bytes.
type authRecord struct {
	ID        uint64
	Owner     uint64
	CreatedAt time.Time
	ExpiresAt *time.Time
	Scopes    []string
}

const authRecordVersion = 1

var errBadAuthRecord = errors.New("malformed auth record")

// expired reports whether the token is no longer valid at now.
func (a *authRecord) expired(now time.Time) bool {
	return a.ExpiresAt != nil && !now.Before(*a.ExpiresAt)
}

// authRecordOf returns the auth record of token t.
func authRecordOf(t *tokenRecord) authRecord {
	return authRecord{ID: t.ID, Owner: t.Owner, CreatedAt: t.CreatedAt, ExpiresAt: t.ExpiresAt, Scopes: t.Scopes}
}

func (a authRecord) marshal() []byte {
	n := 1 + 8*4 + 1
	for _, s := range a.Scopes {
		n += 1 + len(s)
	}
	b := make([]byte, 0, n)
	b = append(b, authRecordVersion)
	b = binary.BigEndian.AppendUint64(b, a.ID)
	b = binary.BigEndian.AppendUint64(b, a.Owner)
	b = binary.BigEndian.AppendUint64(b, uint64(unixNano(a.CreatedAt)))
	b = binary.BigEndian.AppendUint64(b, uint64(expiryNano(a.ExpiresAt)))
	return appendScopes(b, a.Scopes)
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

// unmarshal decodes b, which it does not keep: bytes from bbolt die with
// their transaction.
func (a *authRecord) unmarshal(b []byte) error {
	if len(b) < 1+8*4+1 || b[0] != authRecordVersion {
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
	scopes, err := scopeSets.decode(b[33:])
	if err != nil {
		return err
	}
	a.Scopes = scopes
	return nil
}

// maxScopeSets bounds the distinct scope lists scopeSets interns. A record
// with yet another list is decoded into a list of its own, and the auth
// cache does not keep it.
const maxScopeSets = 4096

// scopeSets interns the scope lists of auth records, keyed by their
// encoding, and numbers them: decoding a record allocates nothing for its
// scopes, and the auth cache keeps a list's number instead of the list.
// The lists are shared: nothing may change one in place.
var scopeSets = &scopeSetTable{ids: make(map[string]uint32)}

type scopeSetTable struct {
	mu    sync.RWMutex
	ids   map[string]uint32      // encoding → number
	lists [maxScopeSets][]string // by number; set once, before its number is handed out
}

// decode returns the scope list encoded in b, which must be exactly the
// encoding appendScopes writes.
func (t *scopeSetTable) decode(b []byte) ([]string, error) {
	t.mu.RLock()
	id, ok := t.ids[string(b)] // no allocation: the key is not kept
	t.mu.RUnlock()
	if ok {
		return t.lists[id], nil
	}
	l, err := decodeScopes(b)
	if err != nil {
		return nil, err
	}
	if id, ok := t.intern(b, l); ok {
		return t.lists[id], nil
	}
	return l, nil
}

// number returns the number of the list equal to scopes, interning it if
// need be, or false when the table is full.
func (t *scopeSetTable) number(scopes []string) (uint32, bool) {
	var buf [256]byte // most lists fit: then only a new one allocates
	key := appendScopes(buf[:0], scopes)
	t.mu.RLock()
	id, ok := t.ids[string(key)]
	t.mu.RUnlock()
	if ok {
		return id, true
	}
	return t.intern(key, scopes)
}

// intern adds scopes under its encoding key, unless it is there already or
// the table is full.
func (t *scopeSetTable) intern(key []byte, scopes []string) (uint32, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if id, ok := t.ids[string(key)]; ok {
		return id, true
	}
	if len(t.ids) >= maxScopeSets {
		return 0, false
	}
	id := uint32(len(t.ids))
	t.lists[id] = append(make([]string, 0, len(scopes)), scopes...)
	t.ids[string(key)] = id
	return id, true
}

// list returns list number id. Whoever learnt id from number or decode, or
// read it from memory written after that under a lock it has since taken,
// sees the list.
func (t *scopeSetTable) list(id uint32) []string { return t.lists[id] }

func decodeScopes(b []byte) ([]string, error) {
	count := int(b[0])
	rest := b[1:]
	scopes := make([]string, 0, count)
	for range count {
		if len(rest) < 1 || len(rest) < 1+int(rest[0]) {
			return nil, errBadAuthRecord
		}
		scopes = append(scopes, string(rest[1:1+int(rest[0])]))
		rest = rest[1+int(rest[0]):]
	}
	if len(rest) != 0 {
		return nil, errBadAuthRecord
	}
	return scopes, nil
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
