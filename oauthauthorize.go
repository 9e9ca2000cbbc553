package main

// The authorization endpoint (RFC 6749 §4.1 with PKCE, RFC 7636): the
// consent page a signed-in person sees when an app asks for access, and
// the decision it posts. Codes are single-use, live authCodeTTL, and are
// kept only as their SHA-256.

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/julienschmidt/httprouter"
)

// authzRequest is a checked authorization request.
type authzRequest struct {
	client clientRecord
	// redirectURI is where the answer goes: the one sent, or the client's
	// only one when none was sent. sentRedirect is as sent ("" for none):
	// the token request must then send the same (RFC 6749 §4.1.3).
	redirectURI, sentRedirect string
	state                     string
	challenge                 string
	scope                     string   // the scope parameter, as sent
	scopes                    []string // requested, checked
}

// errAuthzPage is an authorization request that cannot be answered by
// redirecting to the client: an unknown client, or a redirect URI it did
// not register. RFC 6749 §4.1.2.1 says to tell the person instead, never
// to redirect: this is what stops tokend from being an open redirector.
type errAuthzPage struct{ text string }

func (e *errAuthzPage) Error() string { return e.text }

// readAuthzRequest checks the authorization request in v (the query of the
// GET, or the fields the consent form carries over). It returns an
// *errAuthzPage for what must be shown; an *oauthError, with the request
// holding where to send it, for what is redirected; or a store error.
func (s *server) readAuthzRequest(v url.Values) (authzRequest, error) {
	var a authzRequest
	for _, k := range []string{"client_id", "redirect_uri"} {
		if len(v[k]) > 1 {
			return a, &errAuthzPage{fmt.Sprintf("The request names %s more than once.", k)}
		}
	}
	id := v.Get("client_id")
	if id == "" {
		return a, &errAuthzPage{"The request names no app (client_id is missing)."}
	}
	var err error
	if len(id) <= maxClientIDLen {
		a.client, err = s.store.ClientByID(id)
	} else {
		err = errNotFound
	}
	if errors.Is(err, errNotFound) {
		return a, &errAuthzPage{"The app that sent you here is not registered with tokend."}
	}
	if err != nil {
		return a, err
	}
	a.sentRedirect = v.Get("redirect_uri")
	switch {
	case a.sentRedirect != "":
		if !redirectMatches(a.client.RedirectURIs, a.sentRedirect) {
			return a, &errAuthzPage{"The app asked to send your answer to an address it did not register, so tokend will not send it there."}
		}
		a.redirectURI = a.sentRedirect
	case len(a.client.RedirectURIs) == 1:
		a.redirectURI = a.client.RedirectURIs[0]
	default:
		return a, &errAuthzPage{"The request does not say where to send your answer (redirect_uri), and the app registered more than one address."}
	}
	// From here on, errors go back to the app, with its state.
	a.state = v.Get("state")
	for _, k := range []string{"response_type", "state", "scope", "code_challenge", "code_challenge_method"} {
		if len(v[k]) > 1 {
			return a, oauthErr("invalid_request", "the parameter %s is sent more than once", k)
		}
	}
	switch rt := v.Get("response_type"); rt {
	case "code":
	case "":
		return a, oauthErr("invalid_request", "response_type is missing")
	default:
		return a, oauthErr("unsupported_response_type", "only response_type=code is supported")
	}
	a.challenge = v.Get("code_challenge")
	switch m := v.Get("code_challenge_method"); {
	case a.challenge == "":
		return a, oauthErr("invalid_request", "PKCE is required: send code_challenge with code_challenge_method=S256")
	case m != "S256":
		return a, oauthErr("invalid_request", "code_challenge_method must be S256; plain is not accepted")
	case !validChallenge(a.challenge):
		return a, oauthErr("invalid_request", "code_challenge must be the unpadded base64url SHA-256 of the code verifier")
	}
	a.scope = v.Get("scope")
	if a.scopes, err = s.requestedScopes(a.scope); err != nil {
		return a, err
	}
	return a, nil
}

// consentPage is the data of consent.html, for both flows.
type consentPage struct {
	Client string // the app's name
	Action string // where the decision goes
	// Fields are carried over to the decision as hidden inputs.
	Fields  []hiddenField
	Scopes  []scopeChoice
	Refused []string // asked for, but more than the person holds
	// To is where the answer goes (code flow); UserCode the code the
	// person typed (device flow).
	To, UserCode string
}

type hiddenField struct{ Name, Value string }

// consentScopes returns the checkboxes of the scopes offered, ticked.
func (s *server) consentScopes(offered []string) []scopeChoice {
	var out []scopeChoice
	for _, sc := range s.scopes.all() {
		if hasScope(offered, sc.Name) {
			out = append(out, scopeChoice{Name: sc.Name, Description: sc.Description, Checked: true})
		}
	}
	return out
}

// authzFail answers an authorization request that failed with err: a page
// for an *errAuthzPage or a store error, else a redirect to the app with
// the error and its state.
func (s *server) authzFail(w http.ResponseWriter, r *http.Request, sess *session, a authzRequest, err error) {
	var pe *errAuthzPage
	var oe *oauthError
	switch {
	case errors.As(err, &pe):
		s.log.Info("authorization request refused", "client", truncate(a.client.ID, 60), "reason", pe.text)
		s.renderMessage(w, r, sess, http.StatusBadRequest, "This app's request is not valid", pe.text+" Go back to the app and tell its makers.")
	case errors.As(err, &oe):
		seeOther(w, r, redirectWith(a.redirectURI, url.Values{"error": {oe.code}, "error_description": {oe.detail}, "state": {a.state}}))
	default:
		s.pageError(w, r, sess, err)
	}
}

func (s *server) handleAuthorizePage(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	a, err := s.readAuthzRequest(r.URL.Query())
	if err != nil {
		s.authzFail(w, r, sess, a, err)
		return
	}
	offered, refused := scopesFor(a.scopes, sess.user)
	fields := []hiddenField{
		{"client_id", a.client.ID}, {"redirect_uri", a.sentRedirect}, {"response_type", "code"},
		{"state", a.state}, {"code_challenge", a.challenge}, {"code_challenge_method", "S256"}, {"scope", a.scope},
	}
	s.allowFormTo(w, a.redirectURI)
	s.renderPage(w, r, sess, http.StatusOK, "consent.html", &page{Title: "Authorize " + a.client.Name,
		Data: consentPage{Client: a.client.Name, Action: "/oauth/authorize", Fields: fields,
			Scopes: s.consentScopes(offered), Refused: refused, To: redirectOrigin(a.redirectURI)}})
}

// allowFormTo lets the consent form's answer redirect to redirectURI: a
// browser applies the page's form-action to the redirects that follow a
// form (CSP Level 3), and the decision redirects to the app.
func (s *server) allowFormTo(w http.ResponseWriter, redirectURI string) {
	source := redirectOrigin(redirectURI)
	if source == "" || strings.ContainsAny(source, " ;,'\"") {
		return
	}
	csp := strings.Replace(commonHeaders.Get("Content-Security-Policy"), "form-action 'self'", "form-action 'self' "+source, 1)
	w.Header().Set("Content-Security-Policy", csp)
}

// redirectOrigin returns the origin of redirectURI as a CSP source:
// scheme://host[:port], or scheme: for a private-use scheme.
func redirectOrigin(redirectURI string) string {
	u, err := url.Parse(redirectURI)
	if err != nil || u.Scheme == "" {
		return ""
	}
	if u.Host == "" {
		return u.Scheme + ":"
	}
	return u.Scheme + "://" + u.Host
}

// approvedScopes returns the ticked scopes of a consent form, each among
// offered; a scope that was not offered is a tampered form.
func approvedScopes(form url.Values, offered []string) ([]string, error) {
	var out []string
	for _, sc := range form["approved"] {
		if !hasScope(offered, sc) {
			return nil, clientError(http.StatusBadRequest, "The form approves a scope the app did not ask for, or that you do not hold")
		}
		if !hasScope(out, sc) {
			out = append(out, sc)
		}
	}
	return out, nil
}

func (s *server) handleAuthorizeDecision(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	a, err := s.readAuthzRequest(r.PostForm)
	if err != nil {
		s.authzFail(w, r, sess, a, err)
		return
	}
	if r.PostForm.Get("decision") != "approve" {
		s.log.Info("authorization denied", "client", a.client.ID, "user_id", sess.user.ID)
		seeOther(w, r, redirectWith(a.redirectURI, url.Values{"error": {"access_denied"}, "error_description": {"the user denied the request"}, "state": {a.state}}))
		return
	}
	offered, _ := scopesFor(a.scopes, sess.user)
	approved, err := approvedScopes(r.PostForm, offered)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	approved, _ = s.scopes.normalize(approved)
	code, err := newOAuthSecret()
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	now := s.now()
	err = s.store.CreateAuthCode(hashToken(code), authCodeRecord{
		Client: a.client.ID, User: sess.user.ID, Scopes: approved, RedirectURI: a.sentRedirect,
		Challenge: a.challenge, CreatedAt: now, ExpiresAt: now.Add(authCodeTTL),
	})
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	s.log.Info("authorization approved", "client", a.client.ID, "user_id", sess.user.ID, "scopes", strings.Join(approved, " "))
	seeOther(w, r, redirectWith(a.redirectURI, url.Values{"code": {code}, "state": {a.state}}))
}
