package main

// The token endpoint (RFC 6749 §3.2, §4.1.3, §6; RFC 8628 §3.4) and token
// revocation (RFC 7009). Every answer is JSON that no cache keeps; every
// error is one of RFC 6749 §5.2 (and RFC 8628 §3.5 for device polling).

import (
	"errors"
	"net/http"

	"github.com/julienschmidt/httprouter"
)

func (s *server) handleToken(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	if err := parseOAuthForm(w, r); err != nil {
		s.writeOAuthError(w, r, err)
		return
	}
	c, err := s.authenticateClient(r)
	if err != nil {
		s.writeOAuthError(w, r, err)
		return
	}
	var answer tokenResponse
	switch gt := r.PostForm.Get("grant_type"); gt {
	case grantAuthorizationCode:
		answer, err = s.exchangeCode(r, c)
	case grantRefreshToken:
		answer, err = s.exchangeRefresh(r, c)
	case grantDeviceCode:
		answer, err = s.exchangeDeviceCode(r, c)
	case "":
		err = oauthErr("invalid_request", "grant_type is missing")
	default:
		err = oauthErr("unsupported_grant_type", "grant_type must be authorization_code, refresh_token or %s", grantDeviceCode)
	}
	if err != nil {
		s.writeOAuthError(w, r, err)
		return
	}
	s.writeNoStoreJSON(w, r, http.StatusOK, answer)
}

// required returns the form field name of r, or invalid_request.
func required(r *http.Request, name string) (string, error) {
	v := r.PostForm.Get(name)
	if v == "" {
		return "", oauthErr("invalid_request", "%s is missing", name)
	}
	return v, nil
}

// redeemError maps what the store answers to a redemption (of a code, a
// device request or a refresh token) to the RFC 6749 §5.2 error.
func redeemError(err error, what string) error {
	switch {
	case errors.Is(err, errCodeUsed):
		return oauthErr("invalid_grant", "the %s was used before; everything it issued is revoked", what)
	case errors.Is(err, errTokenExpired):
		return oauthErr("invalid_grant", "the %s has expired", what)
	case errors.Is(err, errNotFound):
		return oauthErr("invalid_grant", "the %s is unknown or revoked", what)
	case errors.Is(err, errTooManyGrants):
		return oauthErr("invalid_grant", "the user has authorized too many apps (at most %d); they must revoke one first", maxGrantsPerUser)
	}
	return err
}

// exchangeCode redeems an authorization code (RFC 6749 §4.1.3, RFC 7636
// §4.6): the client it was issued to, the redirect URI it was asked with,
// and the verifier of its challenge. A code redeemed twice revokes what the
// first redemption issued.
func (s *server) exchangeCode(r *http.Request, c clientRecord) (tokenResponse, error) {
	code, err := required(r, "code")
	if err != nil {
		return tokenResponse{}, err
	}
	verifier, err := required(r, "code_verifier")
	if err != nil {
		return tokenResponse{}, oauthErr("invalid_request", "code_verifier is missing: PKCE is required")
	}
	if len(c.RedirectURIs) == 0 {
		return tokenResponse{}, oauthErr("unauthorized_client", "this client registered no redirect URI, so it cannot use authorization codes")
	}
	h := hashToken(code)
	ac, err := s.store.AuthCode(h)
	if err != nil {
		return tokenResponse{}, redeemError(err, "authorization code")
	}
	now := s.now()
	switch {
	case ac.Client != c.ID:
		return tokenResponse{}, oauthErr("invalid_grant", "the authorization code was issued to another client")
	case ac.RedirectURI != r.PostForm.Get("redirect_uri"):
		return tokenResponse{}, oauthErr("invalid_grant", "redirect_uri differs from the one of the authorization request")
	case !validVerifier(verifier):
		return tokenResponse{}, oauthErr("invalid_request", "code_verifier must be 43 to 128 unreserved characters")
	case pkceS256(verifier) != ac.Challenge:
		return tokenResponse{}, oauthErr("invalid_grant", "code_verifier does not match the code challenge")
	case ac.Grant == 0 && !now.Before(ac.ExpiresAt):
		return tokenResponse{}, oauthErr("invalid_grant", "the authorization code has expired")
	}
	issue, answer, err := s.newIssue(c, ac.User, ac.Scopes, now)
	if err != nil {
		return tokenResponse{}, err
	}
	g, t, err := s.store.RedeemAuthCode(s.actorOf(r, userRecord{}, viaOAuth), h, now, issue)
	if err != nil {
		if errors.Is(err, errCodeUsed) {
			s.log.Warn("authorization code used twice: its grant is revoked", "client", c.ID, "user_id", ac.User, "grant_id", ac.Grant)
		}
		return tokenResponse{}, redeemError(err, "authorization code")
	}
	s.log.Info("oauth tokens issued", "grant_type", grantAuthorizationCode, "client", c.ID, "user_id", g.User, "grant_id", g.ID, "token_id", t.ID)
	return answer, nil
}

// exchangeRefresh rotates a refresh token (RFC 6749 §6): the grant's access
// token is replaced, and the refresh token with it. A scope narrower than
// the grant's may be asked for this access token. A refresh token used
// twice revokes its grant.
func (s *server) exchangeRefresh(r *http.Request, c clientRecord) (tokenResponse, error) {
	token, err := required(r, "refresh_token")
	if err != nil {
		return tokenResponse{}, err
	}
	h, err := s.refreshFormat().parse(token)
	if err != nil {
		return tokenResponse{}, oauthErr("invalid_grant", "the refresh token is malformed")
	}
	g, err := s.store.GrantOfRefresh(h)
	if err != nil {
		return tokenResponse{}, redeemError(err, "refresh token")
	}
	if g.Client != c.ID {
		return tokenResponse{}, oauthErr("invalid_grant", "the refresh token was issued to another client")
	}
	scopes := g.Scopes
	if r.PostForm.Has("scope") {
		asked, err := s.requestedScopes(r.PostForm.Get("scope"))
		if err != nil {
			return tokenResponse{}, err
		}
		for _, sc := range asked {
			if !hasScope(g.Scopes, sc) {
				return tokenResponse{}, oauthErr("invalid_scope", "scope %s was not granted to this client", sc)
			}
		}
		scopes = asked
	}
	now := s.now()
	issue, answer, err := s.newIssue(c, g.User, scopes, now)
	if err != nil {
		return tokenResponse{}, err
	}
	_, t, err := s.store.RefreshGrant(s.actorOf(r, userRecord{}, viaOAuth), h, now, issue)
	if err != nil {
		if errors.Is(err, errCodeUsed) {
			s.log.Warn("refresh token used twice: its grant is revoked", "client", c.ID, "grant_id", g.ID, "user_id", g.User)
		}
		return tokenResponse{}, redeemError(err, "refresh token")
	}
	s.log.Info("oauth tokens issued", "grant_type", grantRefreshToken, "client", c.ID, "user_id", g.User, "grant_id", g.ID, "token_id", t.ID)
	return answer, nil
}

// handleRevoke revokes a token of the calling client (RFC 7009): an access
// token alone, or a refresh token with its whole grant. token_type_hint
// only says which kind to look for first. Unknown tokens, and tokens of
// other clients or of nobody's client (personal tokens), are answered 200
// like any other and left alone.
func (s *server) handleRevoke(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	if err := parseOAuthForm(w, r); err != nil {
		s.writeOAuthError(w, r, err)
		return
	}
	c, err := s.authenticateClient(r)
	if err != nil {
		s.writeOAuthError(w, r, err)
		return
	}
	token, err := required(r, "token")
	if err != nil {
		s.writeOAuthError(w, r, err)
		return
	}
	tries := []func(actor, clientRecord, string) (bool, error){s.revokeAccess, s.revokeRefresh}
	if r.PostForm.Get("token_type_hint") == "refresh_token" {
		tries[0], tries[1] = tries[1], tries[0]
	}
	for _, try := range tries {
		found, err := try(s.actorOf(r, userRecord{}, viaOAuth), c, token)
		if err != nil {
			s.writeOAuthError(w, r, err)
			return
		}
		if found {
			break
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}

// revokeAccess revokes token if it is an access token issued to c, and
// reports whether it was a token of this server's access format.
func (s *server) revokeAccess(by actor, c clientRecord, token string) (bool, error) {
	h, err := s.format.parse(token)
	if err != nil {
		return false, nil
	}
	t, _, err := s.store.TokenByHash(h)
	if errors.Is(err, errNotFound) || err == nil && t.Client != c.ID {
		return true, nil
	}
	if err != nil {
		return true, err
	}
	if _, err := s.store.DeleteTokenByHash(by, h, kindTokenRevoked); err != nil && !errors.Is(err, errNotFound) {
		return true, err
	}
	s.log.Info("oauth access token revoked", "client", c.ID, "token_id", t.ID, "grant_id", t.Grant)
	return true, nil
}

// revokeRefresh revokes the grant of token if it is a refresh token
// (current or rotated) issued to c, and reports whether it was of the
// refresh format.
func (s *server) revokeRefresh(by actor, c clientRecord, token string) (bool, error) {
	h, err := s.refreshFormat().parse(token)
	if err != nil {
		return false, nil
	}
	g, err := s.store.GrantOfRefresh(h)
	if errors.Is(err, errNotFound) || err == nil && g.Client != c.ID {
		return true, nil
	}
	if err != nil {
		return true, err
	}
	var he *httpError
	if _, err := s.oauthActions().RevokeGrant(by, g.ID, anyOwner); err != nil && !errors.As(err, &he) { // 404: revoked a moment ago
		return true, err
	}
	s.log.Info("oauth grant revoked", "client", c.ID, "grant_id", g.ID, "user_id", g.User, "by", "revocation endpoint")
	return true, nil
}
