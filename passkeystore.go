package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-webauthn/webauthn/webauthn"
)

// A passkey ceremony (registering a passkey, or signing in, the second
// step or sudo mode with one) is a challenge the server makes, the browser
// has the authenticator sign, and the server checks. Its state is kept by
// the store, never trusted from the browser: the browser holds only a
// random id in the cookie tokend_passkey (HttpOnly, SameSite=Strict), and
// the store keeps the ceremony under the id's expiry and SHA-256, so that
// a copy of the database cannot finish anybody's ceremony. Finishing takes
// the ceremony out of the store in the same transaction that reads it: a
// challenge answers once, on whichever instance (PostgreSQL), and only
// within passkeyCeremonyWait.

const (
	// passkeyCeremonyWait is how long a ceremony may take, from the
	// options to the answer.
	passkeyCeremonyWait = 5 * time.Minute
	// maxPasskeyCeremonies bounds the ceremonies under way at once, so
	// that requests for options cannot fill the database; past it new
	// ones are refused (503) until some finish or expire.
	maxPasskeyCeremonies = 10_000
)

// Kinds of passkey ceremonies.
const (
	ceremonyRegister   = "register"    // a signed-in person adds a passkey
	ceremonySignIn     = "signin"      // anybody signs in with a passkey alone
	ceremonySecondStep = "second-step" // a person whose password was right gives the second factor
	ceremonySudo       = "sudo"        // a signed-in person confirms it is them
)

// errTooManyCeremonies is returned when maxPasskeyCeremonies are under way.
var errTooManyCeremonies = &httpError{status: http.StatusServiceUnavailable, detail: "too many passkey requests are under way: try again in a minute"}

// passkeyCeremony is a ceremony under way, as stored.
type passkeyCeremony struct {
	Kind    string `json:"kind"`
	User    uint64 `json:"user,omitempty"`    // who it is for; 0 for a sign-in with a passkey alone
	Session string `json:"session,omitempty"` // the session that began it (register, sudo), as sessionHash.String
	Name    string `json:"name,omitempty"`    // the name of the passkey being registered
	// Data is what the WebAuthn library checks the answer against: the
	// challenge, the relying party, the credentials allowed.
	Data    webauthn.SessionData `json:"data"`
	Expires time.Time            `json:"expires"`
}

// ceremonyKey is what the store keeps a ceremony under: its expiry (Unix
// nanoseconds, big-endian, so that expired ones sort first) and the
// SHA-256 of its id's random part.
type ceremonyKey [8 + sha256.Size]byte

// ceremonyIDBytes is the length of a ceremony id: its expiry and 32
// random bytes.
const ceremonyIDBytes = 8 + 32

// newCeremonyID returns a fresh id for a ceremony expiring at expires, as
// the cookie holds it, and the key the store keeps the ceremony under.
func newCeremonyID(expires time.Time) (string, ceremonyKey, error) {
	var id [ceremonyIDBytes]byte
	binary.BigEndian.PutUint64(id[:8], uint64(expires.UnixNano()))
	if _, err := rand.Read(id[8:]); err != nil {
		return "", ceremonyKey{}, fmt.Errorf("read random bytes: %w", err)
	}
	v := base64.RawURLEncoding.EncodeToString(id[:])
	k, _ := parseCeremonyID(v)
	return v, k, nil
}

// parseCeremonyID returns the store key of a ceremony id from a cookie,
// and false when v does not have the shape of one.
func parseCeremonyID(v string) (ceremonyKey, bool) {
	var k ceremonyKey
	if len(v) != base64.RawURLEncoding.EncodedLen(ceremonyIDBytes) {
		return k, false
	}
	id, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil {
		return k, false
	}
	copy(k[:8], id[:8])
	sum := sha256.Sum256(id[8:])
	copy(k[8:], sum[:])
	return k, true
}

// expires returns the expiry k holds.
func (k ceremonyKey) expires() time.Time {
	return time.Unix(0, int64(binary.BigEndian.Uint64(k[:8])))
}

// passkeyCeremonyStore is the part of the store contract for passkey
// ceremonies under way.
type passkeyCeremonyStore interface {
	// PutPasskeyCeremony stores c under k until c.Expires, after deleting
	// the ceremonies expired at now; errTooManyCeremonies when limit are
	// under way.
	PutPasskeyCeremony(k ceremonyKey, c passkeyCeremony, now time.Time, limit int) error
	// TakePasskeyCeremony deletes the ceremony under k and returns it;
	// errNotFound when there is none, or it expired at now. Of two takes
	// of one key, on any instance, one gets it.
	TakePasskeyCeremony(k ceremonyKey, now time.Time) (passkeyCeremony, error)
}

// errCeremonyGone answers an answer to a ceremony that is over, was never
// begun, or took too long.
var errCeremonyGone = errors.New("passkey request expired or used")
