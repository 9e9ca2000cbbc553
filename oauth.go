package main

// The OAuth 2 authorization server, part one: what every endpoint shares.
// Its metadata (RFC 8414), the answers and errors of the token-side
// endpoints (RFC 6749 §5), client authentication (§2.3.1), redirect URI
// matching (RFC 8252 §7.3), requested scopes, and the tokens one exchange
// issues. The authorization page is in oauthauthorize.go, the token and
// revocation endpoints in oauthtoken.go, the device flow in oauthdevice.go.
//
// Written by hand rather than on a library: fosite, the one well-kept Go
// server library, has no device authorization grant and keeps its own
// record per token, which would duplicate tokend's token records on both
// engines. The access tokens issued here are ordinary tokend tokens.

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"
)

const (
	// authCodeTTL is how long an authorization code may wait to be
	// exchanged (RFC 6749 §4.1.2 recommends at most 10 minutes).
	authCodeTTL = 60 * time.Second
	// refreshTTL is how long a refresh token stays usable; each use
	// issues a new one for as long again (a sliding lifetime).
	refreshTTL = 30 * 24 * time.Hour
	// maxClientIDLen bounds a client id before any lookup.
	maxClientIDLen = 200
	// refreshPrefixMark is put before the underscore of the token prefix
	// to make the refresh token prefix: tkd_ gives tkdr_.
	refreshPrefixMark = "r"

	grantAuthorizationCode = "authorization_code"
	grantRefreshToken      = "refresh_token"
	grantDeviceCode        = "urn:ietf:params:oauth:grant-type:device_code"
)

// refreshFormat returns the format of refresh tokens: the access token
// format with refreshPrefixMark before its underscore, so that one is
// never taken for the other (parse checks the prefix), and a secret
// scanner can tell them apart.
func (s *server) refreshFormat() tokenFormat {
	return tokenFormat{prefix: strings.TrimSuffix(s.format.prefix, "_") + refreshPrefixMark + "_"}
}

// newOAuthSecret returns 256 random bits as 43 URL-safe characters: an
// authorization code or a device code. Only its SHA-256 is stored.
func newOAuthSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("read random bytes: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// issuer returns the base URL of this server (baseURL: -public-url, or
// as the client reached it). Every URL of the metadata and of the device
// flow is built on it, as the setup link is.
func (s *server) issuer(r *http.Request) string {
	return s.baseURL(r)
}

// serverMetadata is the RFC 8414 authorization server metadata.
type serverMetadata struct {
	Issuer                            string   `json:"issuer"`
	AuthorizationEndpoint             string   `json:"authorization_endpoint"`
	TokenEndpoint                     string   `json:"token_endpoint"`
	DeviceAuthorizationEndpoint       string   `json:"device_authorization_endpoint"`
	RevocationEndpoint                string   `json:"revocation_endpoint"`
	IntrospectionEndpoint             string   `json:"introspection_endpoint"`
	ResponseTypesSupported            []string `json:"response_types_supported"`
	GrantTypesSupported               []string `json:"grant_types_supported"`
	CodeChallengeMethodsSupported     []string `json:"code_challenge_methods_supported"`
	TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported"`
	RevocationEndpointAuthMethods     []string `json:"revocation_endpoint_auth_methods_supported"`
	IntrospectionEndpointAuthMethods  []string `json:"introspection_endpoint_auth_methods_supported"`
	ScopesSupported                   []string `json:"scopes_supported"`
}

func (s *server) handleOAuthMetadata(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	base := s.issuer(r)
	clientAuth := []string{"client_secret_basic", "client_secret_post", "none"}
	var scopes []string
	for _, sc := range s.scopes.all() {
		scopes = append(scopes, sc.Name)
	}
	s.writeJSON(w, r, http.StatusOK, serverMetadata{
		Issuer:                            base,
		AuthorizationEndpoint:             base + "/oauth/authorize",
		TokenEndpoint:                     base + "/oauth/token",
		DeviceAuthorizationEndpoint:       base + "/oauth/device_authorization",
		RevocationEndpoint:                base + "/oauth/revoke",
		IntrospectionEndpoint:             base + "/api/v1/introspect",
		ResponseTypesSupported:            []string{"code"},
		GrantTypesSupported:               []string{grantAuthorizationCode, grantRefreshToken, grantDeviceCode},
		CodeChallengeMethodsSupported:     []string{"S256"},
		TokenEndpointAuthMethodsSupported: clientAuth,
		RevocationEndpointAuthMethods:     clientAuth,
		// Introspection is for confidential clients (and Bearer tokens).
		IntrospectionEndpointAuthMethods: []string{"client_secret_basic", "client_secret_post"},
		ScopesSupported:                  scopes,
	})
}

// ---- errors of the token-side endpoints ----

// oauthError is an error answered as RFC 6749 §5.2 says: a JSON object with
// error and error_description, 400, or 401 for invalid_client.
type oauthError struct {
	code   string
	detail string
}

func (e *oauthError) Error() string { return e.code + ": " + e.detail }

func oauthErr(code, format string, args ...any) *oauthError {
	return &oauthError{code: code, detail: fmt.Sprintf(format, args...)}
}

// oauthErrorJSON is the body of an RFC 6749 §5.2 error.
type oauthErrorJSON struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// writeOAuthError answers err: an *oauthError as RFC 6749 §5.2 says,
// anything else (the store failed) as writeError does.
func (s *server) writeOAuthError(w http.ResponseWriter, r *http.Request, err error) {
	var oe *oauthError
	if !errors.As(err, &oe) {
		s.writeError(w, r, err)
		return
	}
	status := http.StatusBadRequest
	if oe.code == "invalid_client" {
		// RFC 6749 §5.2: 401 when the client tried HTTP authentication,
		// and HTTP wants a challenge with every 401: Basic is the scheme
		// a confidential client should use.
		status = http.StatusUnauthorized
		w.Header().Set("WWW-Authenticate", `Basic realm="tokend"`)
	}
	s.writeNoStoreJSON(w, r, status, oauthErrorJSON{Error: oe.code, Description: challengeText(oe.detail)})
}

// writeNoStoreJSON answers v as JSON that no cache may keep (RFC 6749
// §5.1): tokens, codes and errors about them.
func (s *server) writeNoStoreJSON(w http.ResponseWriter, r *http.Request, status int, v any) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	s.writeJSON(w, r, status, v)
}

// parseOAuthForm reads the form body of a token-side request: at most
// maxFormBytes of application/x-www-form-urlencoded, no parameter twice
// (RFC 6749 §3.2), never the query string.
func parseOAuthForm(w http.ResponseWriter, r *http.Request) error {
	if r.PostForm != nil {
		return checkRepeats(r.PostForm)
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		return oauthErr("invalid_request", "the body must be application/x-www-form-urlencoded")
	}
	r.Body = http.MaxBytesReader(innermost(w), r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return oauthErr("invalid_request", "the form body cannot be read: it is malformed or larger than %d bytes", maxFormBytes)
	}
	return checkRepeats(r.PostForm)
}

// checkRepeats fails with invalid_request when a parameter comes twice.
func checkRepeats(v url.Values) error {
	for k, vs := range v {
		if len(vs) > 1 {
			return oauthErr("invalid_request", "the parameter %s is sent more than once", truncate(k, 40))
		}
	}
	return nil
}

// ---- client authentication ----

// authenticateClient returns the client that r authenticates as, from its
// parsed form (parseOAuthForm) and Authorization header: HTTP Basic with
// the form-encoded client id and secret (client_secret_basic, RFC 6749
// §2.3.1), client_id and client_secret in the form (client_secret_post),
// or for a public client its client_id alone (none). Using two methods at
// once is invalid_request; an unknown client, a wrong secret, a secret
// from a public client or none from a confidential one is invalid_client.
// Secrets are compared in constant time, as SHA-256 hashes. Other errors
// are the store's.
func (s *server) authenticateClient(r *http.Request) (clientRecord, error) {
	form := r.PostForm
	var id, secret string
	var hasSecret bool
	switch authz := r.Header.Values("Authorization"); len(authz) {
	case 0:
		id = form.Get("client_id")
		secret, hasSecret = form.Get("client_secret"), form.Has("client_secret")
		if id == "" {
			return clientRecord{}, oauthErr("invalid_client", "authenticate the client: HTTP Basic with its id and secret, or client_id (and client_secret) in the form")
		}
	case 1:
		scheme, _, _ := strings.Cut(strings.TrimSpace(authz[0]), " ")
		if !strings.EqualFold(scheme, "Basic") {
			return clientRecord{}, oauthErr("invalid_request", "the Authorization scheme must be Basic, with the client id and secret")
		}
		user, pass, ok := r.BasicAuth()
		var err1, err2 error
		if ok {
			id, err1 = url.QueryUnescape(user)
			secret, err2 = url.QueryUnescape(pass)
		}
		if !ok || err1 != nil || err2 != nil || id == "" {
			return clientRecord{}, oauthErr("invalid_client", "the Basic credentials are malformed: send the form-encoded client id and secret")
		}
		hasSecret = true
		if form.Has("client_secret") {
			return clientRecord{}, oauthErr("invalid_request", "the client authenticates in two ways: send its secret either with HTTP Basic or in the form, not both")
		}
		if fid := form.Get("client_id"); fid != "" && fid != id {
			return clientRecord{}, oauthErr("invalid_request", "client_id in the form differs from the client of the Basic credentials")
		}
	default:
		return clientRecord{}, oauthErr("invalid_request", "send one Authorization header, not several")
	}
	if len(id) > maxClientIDLen {
		return clientRecord{}, oauthErr("invalid_client", "unknown client")
	}
	c, err := s.store.ClientByID(id)
	if errors.Is(err, errNotFound) {
		return clientRecord{}, oauthErr("invalid_client", "unknown client")
	}
	if err != nil {
		return clientRecord{}, fmt.Errorf("look up client: %w", err)
	}
	switch {
	case c.Public && hasSecret:
		return clientRecord{}, oauthErr("invalid_client", "this client is public and holds no secret: send its client_id alone")
	case c.Public:
		return c, nil
	case !hasSecret:
		return clientRecord{}, oauthErr("invalid_client", "this client is confidential: authenticate with its secret")
	case !secretMatches(c.SecretHash, secret):
		return clientRecord{}, oauthErr("invalid_client", "wrong client secret")
	}
	return c, nil
}

// secretMatches reports in constant time whether secret hashes to want.
func secretMatches(want *tokenHash, secret string) bool {
	if want == nil {
		return false
	}
	got := hashToken(secret)
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

// ---- redirect URIs ----

// redirectMatches reports whether sent is one of registered: the same
// string, or for a loopback IP literal over http the same URI on any port
// (RFC 8252 §7.3: a native app listens on whatever port it gets).
func redirectMatches(registered []string, sent string) bool {
	for _, reg := range registered {
		if reg == sent {
			return true
		}
	}
	u, err := url.Parse(sent)
	if err != nil || !isLoopbackIPURL(u) {
		return false
	}
	for _, reg := range registered {
		ru, err := url.Parse(reg)
		if err != nil || !isLoopbackIPURL(ru) {
			continue
		}
		if ru.Hostname() == u.Hostname() && ru.EscapedPath() == u.EscapedPath() && ru.RawQuery == u.RawQuery &&
			ru.ForceQuery == u.ForceQuery {
			return true
		}
	}
	return false
}

// isLoopbackIPURL reports whether u is http on a loopback IP literal, with
// no user info and no fragment.
func isLoopbackIPURL(u *url.URL) bool {
	if u.Scheme != "http" || u.User != nil || u.Fragment != "" || u.RawFragment != "" || u.Opaque != "" {
		return false
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback() && (ip.Equal(net.IPv4(127, 0, 0, 1)) || ip.Equal(net.IPv6loopback))
}

// redirectWith returns redirectURI with params added to its query.
func redirectWith(redirectURI string, params url.Values) string {
	u, err := url.Parse(redirectURI)
	if err != nil {
		return redirectURI // matched a registered URI, which parses
	}
	q := u.Query()
	for k, vs := range params {
		for _, v := range vs {
			if v != "" {
				q.Add(k, v)
			}
		}
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// ---- scopes ----

// requestedScopes parses the scope parameter of a request: scope names
// separated by spaces (RFC 6749 §3.3), each declared, listed once; they
// come back in the registry's order. An unknown one is invalid_scope.
func (s *server) requestedScopes(param string) ([]string, error) {
	var names []string
	for _, n := range strings.Split(param, " ") {
		if n != "" && !hasScope(names, n) {
			names = append(names, n)
		}
	}
	norm, err := s.scopes.normalize(names)
	if err != nil {
		return nil, oauthErr("invalid_scope", "%s", err)
	}
	return norm, nil
}

// scopesFor splits the scopes a client asked for into those u may hold,
// which the consent page offers, and those u may not (admin, for who is
// not an admin), which it names as refused: an approval never gives an
// app more than its user holds.
func scopesFor(requested []string, u userRecord) (offered, refused []string) {
	for _, sc := range requested {
		if sc == scopeAdmin && !u.Admin {
			refused = append(refused, sc)
			continue
		}
		offered = append(offered, sc)
	}
	return offered, refused
}

// ---- issuing tokens ----

// tokenResponse is the RFC 6749 §5.1 answer of the token endpoint.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
}

// newIssue makes the access and refresh tokens one exchange issues to
// client for user with scopes, at now: the store keeps their hashes, the
// answer carries the secrets.
func (s *server) newIssue(c clientRecord, user uint64, scopes []string, now time.Time) (*oauthIssue, tokenResponse, error) {
	access, err := s.format.generate()
	if err != nil {
		return nil, tokenResponse{}, err
	}
	refresh, err := s.refreshFormat().generate()
	if err != nil {
		return nil, tokenResponse{}, err
	}
	ttl := c.accessTTL()
	expires := now.Add(ttl)
	if scopes == nil {
		scopes = []string{}
	}
	issue := &oauthIssue{
		Access: tokenRecord{
			Owner: user, Name: c.Name, Scopes: scopes,
			CreatedAt: now, ExpiresAt: &expires, Hint: tokenHint(access),
		},
		AccessHash:   hashToken(access),
		RefreshHash:  hashToken(refresh),
		RefreshUntil: now.Add(refreshTTL),
	}
	return issue, tokenResponse{
		AccessToken:  access,
		TokenType:    "Bearer",
		ExpiresIn:    int64(ttl / time.Second),
		RefreshToken: refresh,
		Scope:        strings.Join(scopes, " "),
	}, nil
}

// pkceS256 returns the S256 code challenge of verifier (RFC 7636 §4.2).
func pkceS256(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// validVerifier reports whether v is a code_verifier as RFC 7636 §4.1
// allows: 43 to 128 unreserved characters.
func validVerifier(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

// validChallenge reports whether c can be an S256 code challenge: the
// unpadded base64url of 32 bytes.
func validChallenge(c string) bool {
	b, err := base64.RawURLEncoding.DecodeString(c) // refuses padding too
	return err == nil && len(b) == sha256.Size
}
