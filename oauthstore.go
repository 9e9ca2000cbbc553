package main

import (
	"context"
	"errors"
	"time"
)

// The OAuth 2 authorization server (oauth.go) keeps what it knows in the
// store, through the methods of oauthStore, so that several instances on
// one database share it: registered clients, the grants users made to
// them, and the requests in flight (authorization codes, device requests).
//
// A grant is one approval of a client by a user. What it issued lives and
// dies with it: its access tokens are ordinary tokens (tokenRecord, with
// Grant and Client set), verified like any other, and its refresh tokens
// are kept by hash beside it. Deleting a grant deletes them all, and the
// auth cache hears of the access tokens as of any deleted token.
//
// Access tokens of grants are not personal tokens: TokensByOwner,
// AllTokens, TokenByID, DeleteToken, RotateToken and the per-user token
// limit leave them out. Authenticate, TokenByHash, DeleteTokenByHash,
// FlushLastUsed and PurgeExpired treat them as any token. RevokeTokensOf,
// ChangePassword with revocation and DeleteUser delete the user's grants
// as well, and the codes and device requests the user approved (or
// denied), so that none of them makes a grant afterwards.

// Errors of the OAuth store, beside those of db.go.
var (
	// errCodeUsed: an authorization code, device request or refresh token
	// was used already. The method that returns it has revoked the grant
	// the first use made, in the same transaction (RFC 6749 §4.1.2 and
	// §10.4, refresh token reuse detection).
	errCodeUsed = errors.New("already used")
	// errCodeTaken: a new user code collides with one in flight; the caller
	// draws another.
	errCodeTaken = errors.New("user code in use")
	// errTooManyGrants: the user holds maxGrantsPerUser grants.
	errTooManyGrants = errors.New("too many authorized apps")
)

// clientRecord is an OAuth client that an admin registered.
type clientRecord struct {
	// ID is the public client_id: random, URL-safe, set by the caller.
	ID   string `json:"id"`
	Name string `json:"name"` // unique ignoring case, shown on the consent page
	// RedirectURIs are matched exactly (loopback ones on any port).
	RedirectURIs []string `json:"redirect_uris,omitempty"`
	// Public clients hold no secret and rely on PKCE alone.
	Public bool `json:"public,omitempty"`
	// Device clients may use the device authorization grant.
	Device bool `json:"device,omitempty"`
	// SecretHash is the SHA-256 of a confidential client's secret; nil for
	// a public client. The secret itself is shown once and never stored.
	SecretHash *tokenHash `json:"secret_hash,omitempty"`
	// AccessTTL is the lifetime of the access tokens it receives; 0 means
	// defaultAccessTTL.
	AccessTTL time.Duration `json:"access_ttl,omitempty"`
	CreatedAt time.Time     `json:"created_at"`
	CreatedBy uint64        `json:"created_by"` // the admin's user id
}

// grantRecord is one approval of a client by a user.
type grantRecord struct {
	ID     uint64   `json:"id"`
	Client string   `json:"client"` // client id
	User   uint64   `json:"user"`
	Scopes []string `json:"scopes"` // as approved; tokens get these or fewer
	// CreatedAt is when the user approved.
	CreatedAt time.Time `json:"created_at"`
	// RefreshedAt is the last time a refresh token of it was used; zero
	// when never.
	RefreshedAt time.Time `json:"refreshed_at,omitzero"`
	// ExpiresAt is when its current refresh token expires. Past it the
	// grant can issue nothing more and PurgeOAuth deletes it.
	ExpiresAt time.Time `json:"expires_at"`
	// LastUsedAt is filled in by GrantsOf, not stored: the latest of
	// RefreshedAt and its access tokens' last use; nil when never used.
	LastUsedAt *time.Time `json:"-"`
}

// oauthIssue is what one exchange issues, made by the caller: a new access
// token, which must expire, and a new refresh token. The store sets
// Access.ID, Access.Grant and Access.Client, and Access.Owner to the
// grant's user.
type oauthIssue struct {
	Access       tokenRecord // Owner, Name, Scopes, CreatedAt, ExpiresAt, Hint
	AccessHash   tokenHash
	RefreshHash  tokenHash
	RefreshUntil time.Time // the refresh token's expiry, and the grant's
}

// authCodeRecord is an authorization code in flight, stored under the
// SHA-256 of the code.
type authCodeRecord struct {
	Client      string    `json:"client"`
	User        uint64    `json:"user"`
	Scopes      []string  `json:"scopes"`       // as approved
	RedirectURI string    `json:"redirect_uri"` // as the request sent it
	Challenge   string    `json:"challenge"`    // PKCE S256 code_challenge
	CreatedAt   time.Time `json:"created_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	// Grant is 0 until the code is redeemed, then the grant it made: a
	// second redemption revokes that grant.
	Grant uint64 `json:"grant,omitempty"`
}

// deviceState is where a device authorization request stands.
type deviceState uint8

const (
	devicePending  deviceState = iota // waiting for the user
	deviceApproved                    // approved, tokens not yet taken
	deviceDenied                      // the user said no
	deviceIssued                      // tokens taken
)

// deviceAuthRecord is a device authorization request (RFC 8628), stored
// under the SHA-256 of its device code and found also by the SHA-256 of its
// normalised user code.
type deviceAuthRecord struct {
	Client    string    `json:"client"`
	Scopes    []string  `json:"scopes"` // as requested
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// Interval is the least time between polls; it grows by 5 s at each
	// poll that comes sooner (slow_down).
	Interval time.Duration `json:"interval"`
	LastPoll time.Time     `json:"last_poll,omitzero"`
	State    deviceState   `json:"state"`
	User     uint64        `json:"user,omitempty"`     // who approved or denied
	Approved []string      `json:"approved,omitempty"` // the scopes approved
	Grant    uint64        `json:"grant,omitempty"`    // once issued
}

// oauthStore is the part of the store contract that the OAuth server
// uses. Like the rest, every method is one transaction, committed when it
// returns, and a method that deletes access tokens reports them to the
// auth cache (tokensGone) before it returns.
type oauthStore interface {
	// ---- clients ----

	// CreateClient stores c; errNameTaken when its name is taken, ignoring
	// case (or, unlikely, its id).
	CreateClient(by actor, c *clientRecord) error
	ClientByID(id string) (clientRecord, error)
	Clients() ([]clientRecord, error) // by name
	// DeleteClient removes client id with every grant (and so every token)
	// it holds and its requests in flight.
	DeleteClient(by actor, id string) (clientRecord, error)

	// ---- grants ----

	// GrantsOf returns the grants of user, newest first, with LastUsedAt.
	GrantsOf(user uint64) ([]grantRecord, error)
	// DeleteGrant revokes grant id of owner (anyOwner: of anyone): the
	// grant, its access tokens and its refresh tokens.
	DeleteGrant(by actor, id, owner uint64) (grantRecord, error)
	// GrantOfRefresh returns the grant that refresh token h (live or
	// already rotated) belongs to; errNotFound for an unknown one.
	GrantOfRefresh(h tokenHash) (grantRecord, error)

	// ---- authorization codes ----

	CreateAuthCode(h tokenHash, c authCodeRecord) error
	AuthCode(h tokenHash) (authCodeRecord, error)
	// RedeemAuthCode makes the grant of code h and issues its first tokens
	// in one transaction, and returns the grant and the stored access
	// token. errNotFound for an unknown code; errTokenExpired past its
	// expiry at now; errCodeUsed for a code redeemed before, whose grant
	// it revokes (committed although the method fails); errTooManyGrants;
	// errNotFound also when the user or client is gone.
	RedeemAuthCode(by actor, h tokenHash, now time.Time, issue *oauthIssue) (grantRecord, tokenRecord, error)

	// ---- device authorization requests ----

	// CreateDeviceAuth stores d under device code hash dev and user code
	// hash uc; errCodeTaken when uc is in use by a request not yet expired
	// at d.CreatedAt (an expired one holding it is deleted); errNotFound
	// for an unknown client.
	CreateDeviceAuth(dev, uc tokenHash, d deviceAuthRecord) error
	// DeviceAuthByUserCode returns the request whose user code hashes to uc.
	DeviceAuthByUserCode(uc tokenHash) (deviceAuthRecord, error)
	// DecideDeviceAuth records user's answer to pending request uc:
	// approved (with scopes) or denied. errNotFound, errTokenExpired at
	// now, errCodeUsed when it was decided already.
	DecideDeviceAuth(uc tokenHash, user uint64, approve bool, scopes []string, now time.Time) error
	// PollDeviceAuth records a poll of request dev at now and returns the
	// request as stored before it. slowDown is true when the poll came
	// sooner than the interval after the last one; the stored interval
	// then grows by 5 s (RFC 8628 §3.5). errNotFound for an unknown code.
	PollDeviceAuth(dev tokenHash, now time.Time) (d deviceAuthRecord, slowDown bool, err error)
	// RedeemDeviceAuth makes the grant of approved request dev and issues
	// its first tokens, as RedeemAuthCode does for a code: errCodeUsed when
	// it was issued already (revoking that grant), errTokenExpired,
	// errNotFound, and errNotFound too when it is not approved.
	RedeemDeviceAuth(by actor, dev tokenHash, now time.Time, issue *oauthIssue) (grantRecord, tokenRecord, error)

	// ---- refresh ----

	// RefreshGrant rotates refresh token h: in one transaction the grant's
	// access tokens are deleted, the issue's are stored, h is marked used
	// and the grant's RefreshedAt and ExpiresAt move on. errCodeUsed for a
	// refresh token used before, which revokes the grant (committed);
	// errTokenExpired when the grant expired at now; errNotFound.
	RefreshGrant(by actor, h tokenHash, now time.Time, issue *oauthIssue) (grantRecord, tokenRecord, error)

	// ---- housekeeping ----

	// PurgeOAuth deletes the codes and device requests expired at now and
	// the grants expired at now with their tokens, in batches, until none
	// is left or ctx ends; it returns how many records went.
	PurgeOAuth(ctx context.Context, now time.Time) (int, error)
}

// maxGrantsPerUser bounds the grants one user holds, as maxTokens bounds
// personal tokens.
const maxGrantsPerUser = 100

// defaultAccessTTL is the lifetime of an OAuth access token when the
// client sets none.
const defaultAccessTTL = 8 * time.Hour
