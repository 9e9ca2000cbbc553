package main

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// The actions a person can take on an account. Each is one function that
// the pages, the JSON API and the command line all call, so that they
// cannot drift apart: the transports only read their input, check who may
// ask, and present the outcome. Every action commits in one transaction,
// and the auth cache forgets every token it deletes and every user it
// changes before the action returns (see boltStore.update).

// accounts performs account actions on a store. It needs no server: the
// command line builds one over the database file it opened.
type accounts struct {
	store  store
	hasher *passwordHasher
	now    func() time.Time
}

// accounts returns the account actions over the server's store.
func (s *server) accounts() accounts {
	return accounts{store: s.store, hasher: s.hasher, now: s.now}
}

// accountChange says what an action took away with it.
type accountChange struct {
	Tokens   int // tokens revoked
	Sessions int // sessions ended
}

// Errors of the account actions, for the transports to present.
var (
	errSamePassword = clientError(http.StatusBadRequest, "the new password is the current one: choose another")
	errNoCurrent    = clientError(http.StatusBadRequest, "enter your current password")
	errRemoveSelf   = clientError(http.StatusConflict, "you cannot remove your own account while signed in to it")
)

// passwordPolicyError turns a password the policy refuses into a client
// error that says why.
func passwordPolicyError(pw string) error {
	if err := checkPassword(pw); err != nil {
		return clientError(http.StatusBadRequest, "%s", err.Error())
	}
	return nil
}

// ResetPassword gives user id a new password chosen by someone else (an
// admin, or the operator at the command line). Whoever knew the old
// password may hold a session, so every session of the user ends, except
// keep (the zero hash keeps none): an admin resetting their own password
// keeps the session they use. With revokeTokens every token of the user
// is revoked too. It returns errNotFound for an unknown user and an
// httpError for a password the policy refuses.
func (a accounts) ResetPassword(ctx context.Context, by actor, id uint64, password string, revokeTokens bool, keep sessionHash) (accountChange, error) {
	if err := passwordPolicyError(password); err != nil {
		return accountChange{}, err
	}
	hash, err := a.hasher.Hash(ctx, password)
	if err != nil {
		return accountChange{}, err
	}
	tokens, sessions, err := a.store.ChangePassword(by, id, passwordChange{
		hash: hash, at: a.now(), revokeTokens: revokeTokens, endSessions: true, keep: keep,
	})
	return accountChange{Tokens: tokens, Sessions: sessions}, err
}

// ownPasswordChange is what a person sends to change their own password.
type ownPasswordChange struct {
	Current, New     string
	RevokeTokens     bool        // revoke every token of the user
	EndOtherSessions bool        // end every session but Keep
	Keep             sessionHash // the session making the change; zero when a token makes it
}

// ChangePassword changes u's own password. confirm checks that c.Current
// is u's password (the server counts it against the sign-in throttle); it
// returns its own errors. The kept session counts as having just given its
// password. It returns an httpError for a missing current password, a
// password the policy refuses or one equal to the current one.
func (a accounts) ChangePassword(ctx context.Context, by actor, u userRecord, c ownPasswordChange, confirm func(password string) error) (accountChange, error) {
	if c.Current == "" {
		return accountChange{}, errNoCurrent
	}
	if err := confirm(c.Current); err != nil {
		return accountChange{}, err
	}
	if err := passwordPolicyError(c.New); err != nil {
		return accountChange{}, err
	}
	if c.New == c.Current {
		return accountChange{}, errSamePassword
	}
	hash, err := a.hasher.Hash(ctx, c.New)
	if err != nil {
		return accountChange{}, err
	}
	tokens, sessions, err := a.store.ChangePassword(by, u.ID, passwordChange{
		hash: hash, at: a.now(), revokeTokens: c.RevokeTokens, endSessions: c.EndOtherSessions, keep: c.Keep,
	})
	return accountChange{Tokens: tokens, Sessions: sessions}, err
}

// RemoveUser removes user id with every token and session. by is who
// asks (the operator's ID is anyOwner): nobody removes the account they
// are signed in to. It returns errNotFound, errLastAdmin or errRemoveSelf.
func (a accounts) RemoveUser(by actor, id uint64) error {
	if by.ID != anyOwner && id == by.ID {
		return errRemoveSelf
	}
	return a.store.DeleteUser(by, id)
}

// SetAdmin makes user id an admin or not and returns the record. A
// demoted admin's sessions and tokens stay, without admin powers: every
// request reads the user afresh after the change, and a token's admin
// scope counts only while its owner is an admin. It returns errNotFound,
// or errLastAdmin when that would leave no admin.
func (a accounts) SetAdmin(by actor, id uint64, admin bool) (userRecord, error) {
	return a.store.SetAdmin(by, id, admin)
}

// RevokeAllTokens revokes every token of user id and returns how many. It
// returns errNotFound for an unknown user.
func (a accounts) RevokeAllTokens(by actor, id uint64) (accountChange, error) {
	n, err := a.store.RevokeTokensOf(by, id)
	return accountChange{Tokens: n}, err
}

// describe says what an action took away, for logs and messages.
func (c accountChange) describe() string {
	return fmt.Sprintf("%s revoked, %s ended", plural(c.Tokens, "token"), plural(c.Sessions, "session"))
}
