package main

import (
	"errors"
	"time"
)

// Second factors: a user may hold a TOTP secret and passkeys, and, once
// they hold one of them, ten single-use recovery codes. The store keeps
// them through the methods of tfaStore; the code that checks them (tfa.go
// for TOTP and recovery codes, passkey.go for passkeys) never keeps a
// secret of its own.
//
// What the store holds reveals no secret: a TOTP secret is stored sealed
// (AES-256-GCM under the key file, not in the database; see tfakey.go),
// a recovery code as its SHA-256, a passkey as its public key.
//
// Deleting a user deletes their second factors. When a user's last factor
// (TOTP or passkey) goes, their recovery codes go with it.
//
// Writes that change what guards an account take the actor who makes them
// (auditstore.go), for the security log.

// Errors of the second-factor store, beside those of db.go.
var (
	// errTOTPEnrolled: the user holds a TOTP secret already; they remove it
	// before enrolling another.
	errTOTPEnrolled = errors.New("an authenticator app is enrolled already")
	// errStepUsed: a TOTP step at or before the last one accepted for the
	// user; its code is refused (replay).
	errStepUsed = errors.New("code already used")
	// errPasskeyTaken: a passkey with this credential id is stored already.
	errPasskeyTaken = errors.New("passkey already registered")
	// errTooManyPasskeys: the user holds maxPasskeysPerUser passkeys.
	errTooManyPasskeys = errors.New("too many passkeys")
)

// maxPasskeysPerUser bounds the passkeys of one user.
const maxPasskeysPerUser = 20

// recoveryCodeCount is how many recovery codes a user gets at a time.
const recoveryCodeCount = 10

// totpRecord is a user's TOTP secret, as stored.
type totpRecord struct {
	// Sealed is the secret sealed by the key file (nonce, then AES-256-GCM
	// ciphertext, the user id as additional data).
	Sealed []byte `json:"sealed"`
	// LastStep is the latest time step (Unix time / 30 s) whose code was
	// accepted; only later steps are accepted (a code is used once).
	LastStep  int64     `json:"last_step"`
	CreatedAt time.Time `json:"created_at"`
}

// passkeyRecord is a WebAuthn credential of a user.
type passkeyRecord struct {
	ID   uint64 `json:"id"` // set by the store
	User uint64 `json:"user"`
	// CredentialID is the authenticator's credential id, unique among all
	// users' passkeys.
	CredentialID []byte `json:"credential_id"`
	// Credential is what the WebAuthn library needs to verify an assertion
	// (public key, sign count, flags, transports), encoded by passkey.go;
	// the store keeps it as it is.
	Credential []byte    `json:"credential"`
	Name       string    `json:"name"` // unique per user, ignoring case
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at,omitzero"` // zero when never used
}

// secondFactors is what guards a user's account beside the password.
type secondFactors struct {
	TOTP         bool
	Passkeys     int
	RecoveryLeft int // unused recovery codes
}

// any reports whether the user holds a second factor.
func (f secondFactors) any() bool { return f.TOTP || f.Passkeys > 0 }

// tfaStore is the part of the store contract for second factors. A method
// that takes a user returns errNotFound for an unknown user.
type tfaStore interface {
	// SecondFactors returns what user holds.
	SecondFactors(user uint64) (secondFactors, error)

	// ---- TOTP ----

	// EnrolTOTP stores t as user's TOTP secret and, when recovery is not
	// nil, replaces their recovery codes with these hashes;
	// errTOTPEnrolled when they hold one already.
	EnrolTOTP(by actor, user uint64, t totpRecord, recovery []tokenHash) error
	// TOTPOf returns user's TOTP secret; errNotFound when they hold none.
	TOTPOf(user uint64) (totpRecord, error)
	// UseTOTPStep records step as used by user if it is later than the
	// last one accepted; errStepUsed if not, errNotFound when they hold
	// no TOTP secret. Of two uses of one step at once, one succeeds.
	UseTOTPStep(user uint64, step int64) error
	// RemoveTOTP deletes user's TOTP secret (and their recovery codes if
	// no passkey remains); errNotFound when they hold none.
	RemoveTOTP(by actor, user uint64) error

	// ---- recovery codes ----

	// UseRecoveryCode deletes user's unused recovery code whose hash is h
	// and returns how many are left; errNotFound when there is none such.
	// Of two uses of one code at once, one succeeds.
	UseRecoveryCode(by actor, user uint64, h tokenHash) (left int, err error)
	// ReplaceRecoveryCodes replaces user's recovery codes with these
	// hashes; errNotFound also when the user holds no second factor.
	ReplaceRecoveryCodes(by actor, user uint64, codes []tokenHash) error

	// ---- passkeys ----

	// AddPasskey stores p, setting p.ID, and, when recovery is not nil,
	// replaces the user's recovery codes with these hashes; errPasskeyTaken
	// for a known credential id, errNameTaken for a name the user gave
	// another passkey, errTooManyPasskeys past maxPasskeysPerUser.
	AddPasskey(by actor, p *passkeyRecord, recovery []tokenHash) error
	// PasskeysOf returns user's passkeys, in order of creation.
	PasskeysOf(user uint64) ([]passkeyRecord, error)
	// PasskeyByCredentialID returns the passkey with this credential id
	// and its user; errNotFound when there is none.
	PasskeyByCredentialID(credentialID []byte) (passkeyRecord, userRecord, error)
	// UpdatePasskeyUse replaces the Credential of user's passkey id (its
	// sign count and flags after an assertion) and sets its LastUsedAt to
	// now; errNotFound when there is none such.
	UpdatePasskeyUse(user, id uint64, credential []byte, now time.Time) error
	// RenamePasskey renames user's passkey id; errNotFound, errNameTaken.
	RenamePasskey(by actor, user, id uint64, name string) error
	// DeletePasskey deletes user's passkey id (and their recovery codes if
	// no factor remains); errNotFound when there is none such.
	DeletePasskey(by actor, user, id uint64) error

	// ---- the admin ----

	// ResetSecondFactors deletes user's TOTP secret, passkeys and recovery
	// codes and ends their sessions, in one transaction, and returns how
	// many sessions ended.
	ResetSecondFactors(by actor, user uint64) (sessions int, err error)
}

// tfaEnrolledEvent is the event of an authenticator app enrolled, with
// recovery codes when not nil.
func tfaEnrolledEvent(by actor, recovery []tokenHash) auditEvent {
	if recovery != nil {
		return newAuditEvent(by, kindTFAEnrolled).withDetail("authenticator app, %d recovery codes", len(recovery))
	}
	return newAuditEvent(by, kindTFAEnrolled).withDetail("authenticator app")
}
