package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/go-webauthn/webauthn/protocol"
	"github.com/go-webauthn/webauthn/webauthn"
	"github.com/julienschmidt/httprouter"
)

// Passkeys (WebAuthn). A person adds passkeys on the account page, each
// with a name, and then signs in with one alone (a discoverable
// credential: no name or password typed), gives one as the second factor
// after the password, or confirms with one that it is them (sudo mode).
// Every ceremony is two requests from web/static/passkey.js: POST
// /passkey/…-options begins it (the store keeps its state:
// passkeystore.go) and answers the options for navigator.credentials in
// JSON, or problem+json that the script shows; then the page's form is
// sent with the authenticator's answer in its field credential, and its
// handler finishes the ceremony and answers as a form's does (sudo mode's
// answer, sent by the script from inside another form, is 204 or
// problem+json).
//
// The relying party is the public URL (publicurl.go): its host is the RP
// id, the URL itself the one origin accepted. A passkey works only at the
// host it was made for, so changing -public-url's host makes the passkeys
// made before it useless (the password still signs in).

const (
	passkeyCookieName = "tokend_passkey" // the id of the ceremony under way
	maxPasskeyName    = 64               // characters
)

// relyingParty returns the WebAuthn relying party that r reached.
func (s *server) relyingParty(r *http.Request) (*webauthn.WebAuthn, error) {
	origin := s.baseURL(r)
	u, err := url.Parse(origin)
	if err != nil || u.Hostname() == "" {
		return nil, clientError(http.StatusBadRequest, "passkeys need the request's Host header (or -public-url)")
	}
	rp, err := webauthn.New(&webauthn.Config{
		RPID:          u.Hostname(),
		RPDisplayName: "tokend",
		RPOrigins:     []string{origin},
	})
	if err != nil {
		return nil, clientError(http.StatusBadRequest, "passkeys do not work at %s: open tokend at a host name, such as localhost, or set -public-url", truncate(origin, 100))
	}
	return rp, nil
}

// passkeyUser is a user as the WebAuthn library sees them.
type passkeyUser struct {
	u     userRecord
	creds []webauthn.Credential
}

// passkeyUserHandle is the user handle of a user's passkeys: the user id,
// 8 bytes big-endian. It names the account, not the person.
func passkeyUserHandle(id uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, id)
}

func (p *passkeyUser) WebAuthnID() []byte                         { return passkeyUserHandle(p.u.ID) }
func (p *passkeyUser) WebAuthnName() string                       { return p.u.Name }
func (p *passkeyUser) WebAuthnDisplayName() string                { return p.u.Name }
func (p *passkeyUser) WebAuthnCredentials() []webauthn.Credential { return p.creds }

// passkeyUserOf returns u with their passkeys, and the records.
func (s *server) passkeyUserOf(u userRecord) (*passkeyUser, []passkeyRecord, error) {
	keys, err := s.store.PasskeysOf(u.ID)
	if err != nil {
		return nil, nil, err
	}
	pu := &passkeyUser{u: u}
	for _, k := range keys {
		var c webauthn.Credential
		if err := json.Unmarshal(k.Credential, &c); err != nil {
			return nil, nil, fmt.Errorf("decode passkey %d of user %d: %w", k.ID, u.ID, err)
		}
		pu.creds = append(pu.creds, c)
	}
	return pu, keys, nil
}

// checkPasskeyName returns the trimmed name of a passkey, or an error a
// person can act on.
func checkPasskeyName(name string) (string, error) {
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return "", clientError(http.StatusBadRequest, "Give the passkey a name, such as the device that keeps it.")
	case !utf8.ValidString(name) || strings.ContainsFunc(name, unicode.IsControl):
		return "", clientError(http.StatusBadRequest, "A passkey's name must be text without control characters.")
	case utf8.RuneCountInString(name) > maxPasskeyName:
		return "", clientError(http.StatusBadRequest, "A passkey's name must be at most %d characters.", maxPasskeyName)
	}
	return name, nil
}

// ---- ceremonies ----

// beginCeremony stores c and sets the cookie that names it.
func (s *server) beginCeremony(w http.ResponseWriter, r *http.Request, c passkeyCeremony) error {
	now := s.now()
	c.Expires = now.Add(passkeyCeremonyWait)
	id, k, err := newCeremonyID(c.Expires)
	if err != nil {
		return err
	}
	if err := s.store.PutPasskeyCeremony(k, c, now, maxPasskeyCeremonies); err != nil {
		return err
	}
	s.setCookieSameSite(w, r, passkeyCookieName, id, passkeyCeremonyWait, http.SameSiteStrictMode)
	return nil
}

// takeCeremony takes the ceremony r's cookie names out of the store, and
// clears the cookie: it answers once. It fails with errCeremonyGone when
// there is none, or it is not of kind.
func (s *server) takeCeremony(w http.ResponseWriter, r *http.Request, kind string) (passkeyCeremony, error) {
	s.setCookieSameSite(w, r, passkeyCookieName, "", -1, http.SameSiteStrictMode)
	k, ok := parseCeremonyID(s.cookieValue(r, passkeyCookieName))
	if !ok {
		return passkeyCeremony{}, errCeremonyGone
	}
	c, err := s.store.TakePasskeyCeremony(k, s.now())
	if errors.Is(err, errNotFound) || err == nil && c.Kind != kind {
		return passkeyCeremony{}, errCeremonyGone
	}
	return c, err
}

// passkeyJSON guards a ceremony's request as form guards a form's: a
// cross-origin request is refused, and the body is bounded. Failures are
// problem+json, which passkey.js shows.
func (s *server) passkeyJSON(h httprouter.Handle) httprouter.Handle {
	return func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		if err := s.cop.Check(r); err != nil {
			writeProblem(w, http.StatusForbidden, "cross-origin request refused: use tokend's own pages")
			return
		}
		r.Body = http.MaxBytesReader(innermost(w), r.Body, maxFormBytes)
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") {
			if err := r.ParseForm(); err != nil {
				writeProblem(w, http.StatusBadRequest, "the request could not be read: reload the page and try again")
				return
			}
		}
		h(w, r, ps)
	}
}

// signedInJSON is signedIn for a ceremony's request: without a session it
// answers 401 rather than redirecting.
func (s *server) signedInJSON(h pageHandler) httprouter.Handle {
	return func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		sess, err := s.currentSession(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if sess == nil {
			writeProblem(w, http.StatusUnauthorized, "your session has ended: sign in again")
			return
		}
		h(w, r, ps, sess)
	}
}

// passkeyOptions answers the options of a ceremony begun.
func (s *server) passkeyOptions(w http.ResponseWriter, r *http.Request, options any) {
	w.Header().Set("Cache-Control", "no-store")
	s.writeJSON(w, r, http.StatusOK, options)
}

// passkeyError returns err as the error a person should see: a failed
// verification, a ceremony over, a passkey known already say so (an
// httpError); anything else is returned as it is. The reason a
// verification failed is logged, never sent, and a failed verification of
// a known user's passkey goes to the security log.
func (s *server) passkeyError(r *http.Request, user userRecord, err error) error {
	var pe *protocol.Error
	switch {
	case errors.Is(err, errCeremonyGone):
		return clientError(http.StatusBadRequest, "This passkey request expired or was used already: try again")
	case errors.As(err, &pe):
		s.log.Info("passkey refused", "user_id", user.ID, "remote", s.clientAddr(r), "reason", pe.Type, "details", pe.Details)
		if user.ID != 0 {
			s.recordSecondFactorFailed(s.pageActor(r, user), user, outcomeFailed)
		}
		return clientError(http.StatusBadRequest, "The passkey's answer was not accepted: try again, or use another passkey")
	case errors.Is(err, errPasskeyTaken):
		return clientError(http.StatusConflict, "This passkey is registered already")
	case errors.Is(err, errNameTaken):
		return clientError(http.StatusConflict, "You have a passkey of that name already: choose another name")
	case errors.Is(err, errTooManyPasskeys):
		return clientError(http.StatusConflict, "You have %d passkeys, the most one account may hold: remove one first", maxPasskeysPerUser)
	}
	return err
}

// errNoAnswer answers a finishing form without the authenticator's answer:
// sent without JavaScript, or tampered with.
var errNoAnswer = clientError(http.StatusBadRequest, "Passkeys need JavaScript in this browser: turn it on and try again")

// answerOf returns the authenticator's answer that passkey.js put in the
// form field credential.
func answerOf(r *http.Request) ([]byte, error) {
	a := r.PostForm.Get("credential")
	if a == "" {
		return nil, errNoAnswer
	}
	return []byte(a), nil
}

// ---- registration (the account page) ----

// handlePasskeyRegisterOptions begins adding a passkey named by the form
// field name. Adding one is a sensitive action: it takes sudo mode.
func (s *server) handlePasskeyRegisterOptions(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	name, err := checkPasskeyName(r.PostForm.Get("name"))
	if err == nil {
		err = s.checkSudo(r, sess)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	rp, err := s.relyingParty(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	pu, keys, err := s.passkeyUserOf(sess.user)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if len(keys) >= maxPasskeysPerUser {
		s.writeError(w, r, s.passkeyError(r, sess.user, errTooManyPasskeys))
		return
	}
	for _, k := range keys {
		if strings.EqualFold(k.Name, name) {
			s.writeError(w, r, s.passkeyError(r, sess.user, errNameTaken))
			return
		}
	}
	options, data, err := rp.BeginRegistration(pu,
		webauthn.WithExclusions(webauthn.Credentials(pu.creds).CredentialDescriptors()),
		webauthn.WithAuthenticatorSelection(protocol.AuthenticatorSelection{
			ResidentKey:      protocol.ResidentKeyRequirementRequired,
			UserVerification: protocol.VerificationRequired,
		}))
	if err != nil {
		s.writeError(w, r, fmt.Errorf("begin passkey registration: %w", err))
		return
	}
	c := passkeyCeremony{Kind: ceremonyRegister, User: sess.user.ID, Session: sess.hash.String(), Name: name, Data: *data}
	if err := s.beginCeremony(w, r, c); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.passkeyOptions(w, r, options)
}

// handlePasskeyRegister finishes adding a passkey: it checks the
// authenticator's answer against the ceremony the session began, and
// stores the passkey. The first second factor comes with recovery codes,
// shown once.
func (s *server) handlePasskeyRegister(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	rec, codes, err := s.registerPasskey(w, r, sess)
	if err != nil {
		s.accountFormFailed(w, r, sess, s.passkeyError(r, sess.user, err))
		return
	}
	s.log.Info("passkey added", "user_id", sess.user.ID, "passkey_id", rec.ID)
	what := "Passkey " + rec.Name + " added: you can sign in with it."
	if codes == nil {
		s.setFlash(w, r, what)
		seeOther(w, r, "/account")
		return
	}
	s.showRecoveryCodes(w, r, sess, what, codes)
}

// registerPasskey is the work of handlePasskeyRegister: the passkey
// stored, and the recovery codes that came with it (nil when the user
// had a second factor already).
func (s *server) registerPasskey(w http.ResponseWriter, r *http.Request, sess *session) (passkeyRecord, []string, error) {
	answer, err := answerOf(r)
	if err != nil {
		return passkeyRecord{}, nil, err
	}
	c, err := s.takeCeremony(w, r, ceremonyRegister)
	if err != nil {
		return passkeyRecord{}, nil, err
	}
	if c.User != sess.user.ID || c.Session != sess.hash.String() {
		return passkeyRecord{}, nil, errCeremonyGone
	}
	rp, err := s.relyingParty(r)
	if err != nil {
		return passkeyRecord{}, nil, err
	}
	parsed, err := protocol.ParseCredentialCreationResponseBytes(answer)
	if err != nil {
		return passkeyRecord{}, nil, err
	}
	pu, _, err := s.passkeyUserOf(sess.user)
	if err != nil {
		return passkeyRecord{}, nil, err
	}
	cred, err := rp.CreateCredential(pu, c.Data, parsed)
	if err != nil {
		return passkeyRecord{}, nil, err
	}
	encoded, err := json.Marshal(cred)
	if err != nil {
		return passkeyRecord{}, nil, fmt.Errorf("encode passkey: %w", err)
	}
	f, err := s.store.SecondFactors(sess.user.ID)
	if err != nil {
		return passkeyRecord{}, nil, err
	}
	var codes []string
	var hashes []tokenHash
	if !f.any() {
		codes, hashes = newRecoveryCodes()
	}
	rec := passkeyRecord{User: sess.user.ID, CredentialID: cred.ID, Credential: encoded, Name: c.Name, CreatedAt: s.now()}
	if err := s.store.AddPasskey(s.pageActor(r, sess.user), &rec, hashes); err != nil {
		return passkeyRecord{}, nil, err
	}
	return rec, codes, nil
}

// ---- signing in with a passkey alone ----

// handlePasskeySignInOptions begins signing in with a passkey alone: the
// authenticator offers the passkeys it holds for this site, and the one
// chosen names the account. User verification (a PIN, a fingerprint) is
// required, so that the passkey is two factors in one.
func (s *server) handlePasskeySignInOptions(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	rp, err := s.relyingParty(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	options, data, err := rp.BeginDiscoverableLogin(webauthn.WithUserVerification(protocol.VerificationRequired))
	if err != nil {
		s.writeError(w, r, fmt.Errorf("begin passkey sign-in: %w", err))
		return
	}
	if err := s.beginCeremony(w, r, passkeyCeremony{Kind: ceremonySignIn, Data: *data}); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.passkeyOptions(w, r, options)
}

// handlePasskeySignIn finishes signing in with a passkey alone, starts the
// session and goes on to the form's next.
func (s *server) handlePasskeySignIn(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	next := safeNext(r.PostForm.Get("next"))
	u, err := s.passkeySignIn(w, r)
	if err != nil {
		s.formFailed(w, r, nil, s.passkeyError(r, u, err), func(status int, msg string) {
			s.renderPage(w, r, nil, status, "login.html", &page{Title: "Sign in", Error: msg, Data: loginPage{Next: next}})
		})
		return
	}
	old, err := s.currentSession(r)
	if err == nil {
		err = s.startSession(w, r, u, old)
	}
	if err != nil {
		s.pageError(w, r, nil, err)
		return
	}
	seeOther(w, r, next)
}

// passkeySignIn checks the answer to a sign-in with a passkey alone and
// returns whose passkey it is (also, when known, on failure).
func (s *server) passkeySignIn(w http.ResponseWriter, r *http.Request) (userRecord, error) {
	answer, err := answerOf(r)
	if err != nil {
		return userRecord{}, err
	}
	c, err := s.takeCeremony(w, r, ceremonySignIn)
	if err != nil {
		return userRecord{}, err
	}
	rp, err := s.relyingParty(r)
	if err != nil {
		return userRecord{}, err
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(answer)
	if err != nil {
		return userRecord{}, err
	}
	var key passkeyRecord
	var owner userRecord
	found := func(rawID, userHandle []byte) (webauthn.User, error) {
		k, u, err := s.store.PasskeyByCredentialID(rawID)
		if err != nil {
			return nil, err
		}
		if string(userHandle) != string(passkeyUserHandle(u.ID)) {
			return nil, errors.New("the user handle is not the passkey's user's")
		}
		pu, _, err := s.passkeyUserOf(u)
		if err != nil {
			return nil, err
		}
		key, owner = k, u
		return pu, nil
	}
	_, cred, err := rp.ValidatePasskeyLogin(found, c.Data, parsed)
	if err != nil {
		return owner, err
	}
	if err := s.recordPasskeyUse(key, cred); err != nil {
		return owner, err
	}
	s.log.Info("passkey accepted", "user_id", owner.ID, "passkey_id", key.ID, "for", c.Kind)
	return owner, nil
}

// recordPasskeyUse stores what an assertion changed of passkey key (its
// sign count, its flags) and when it was used.
func (s *server) recordPasskeyUse(key passkeyRecord, cred *webauthn.Credential) error {
	encoded, err := json.Marshal(cred)
	if err != nil {
		return fmt.Errorf("encode passkey: %w", err)
	}
	return s.store.UpdatePasskeyUse(key.User, key.ID, encoded, s.now())
}

// ---- a passkey of a known user: the second step, sudo mode ----

// beginAssertion begins ceremony c, in which u gives one of their
// passkeys, and answers its options.
func (s *server) beginAssertion(w http.ResponseWriter, r *http.Request, u userRecord, c passkeyCeremony) {
	rp, err := s.relyingParty(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	pu, _, err := s.passkeyUserOf(u)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if len(pu.creds) == 0 {
		writeProblem(w, http.StatusConflict, "You have no passkey: confirm another way")
		return
	}
	options, data, err := rp.BeginLogin(pu, webauthn.WithUserVerification(protocol.VerificationPreferred))
	if err != nil {
		s.writeError(w, r, fmt.Errorf("begin passkey assertion: %w", err))
		return
	}
	c.User, c.Data = u.ID, *data
	if err := s.beginCeremony(w, r, c); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.passkeyOptions(w, r, options)
}

// finishAssertion checks the answer to a ceremony of kind in which u gives
// one of their passkeys, and records the passkey's use. It returns the
// ceremony.
func (s *server) finishAssertion(w http.ResponseWriter, r *http.Request, u userRecord, kind string) (passkeyCeremony, error) {
	answer, err := answerOf(r)
	if err != nil {
		return passkeyCeremony{}, err
	}
	c, err := s.takeCeremony(w, r, kind)
	if err != nil {
		return passkeyCeremony{}, err
	}
	if c.User != u.ID {
		return passkeyCeremony{}, errCeremonyGone
	}
	rp, err := s.relyingParty(r)
	if err != nil {
		return passkeyCeremony{}, err
	}
	parsed, err := protocol.ParseCredentialRequestResponseBytes(answer)
	if err != nil {
		return passkeyCeremony{}, err
	}
	pu, keys, err := s.passkeyUserOf(u)
	if err != nil {
		return passkeyCeremony{}, err
	}
	cred, err := rp.ValidateLogin(pu, c.Data, parsed)
	if err != nil {
		return passkeyCeremony{}, err
	}
	for _, k := range keys {
		if string(k.CredentialID) == string(cred.ID) {
			s.log.Info("passkey accepted", "user_id", u.ID, "passkey_id", k.ID, "for", kind)
			return c, s.recordPasskeyUse(k, cred)
		}
	}
	return passkeyCeremony{}, errCeremonyGone // the passkey was removed meanwhile
}

// handleVerifyPasskeyOptions begins the second step of a pending sign-in
// with a passkey.
func (s *server) handleVerifyPasskeyOptions(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	_, u, ok, err := s.pendingSignInOf(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !ok {
		writeProblem(w, http.StatusBadRequest, "Your sign-in took more than 5 minutes: enter your password again")
		return
	}
	s.beginAssertion(w, r, u, passkeyCeremony{Kind: ceremonySecondStep})
}

// handleVerifyPasskey finishes the second step with a passkey and starts
// the session.
func (s *server) handleVerifyPasskey(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	p, u, ok, err := s.pendingSignInOf(r)
	if err != nil {
		s.pageError(w, r, nil, err)
		return
	}
	if !ok {
		s.showVerifyPage(w, r, http.StatusOK, "") // sends the browser back to the password
		return
	}
	if _, err := s.finishAssertion(w, r, u, ceremonySecondStep); err != nil {
		s.formFailed(w, r, nil, s.passkeyError(r, u, err), func(status int, msg string) { s.showVerifyPage(w, r, status, msg) })
		return
	}
	s.finishSignIn(w, r, u, p.Next)
}

// handlePasskeySudoOptions begins confirming with a passkey that the
// signed-in person is who signed in.
func (s *server) handlePasskeySudoOptions(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	s.beginAssertion(w, r, sess.user, passkeyCeremony{Kind: ceremonySudo, Session: sess.hash.String()})
}

// handlePasskeySudo finishes it: the session may do sensitive things for
// sudoWindow, as after giving the password. passkey.js sends it from the
// page of the form that asked, and answers 204 by taking the sudo fields
// out of that form.
func (s *server) handlePasskeySudo(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	c, err := s.finishAssertion(w, r, sess.user, ceremonySudo)
	if err == nil && c.Session != sess.hash.String() {
		err = errCeremonyGone
	}
	if err == nil {
		err = s.store.ConfirmSession(sess.hash, s.now())
	}
	if err != nil {
		s.writeError(w, r, s.passkeyError(r, sess.user, err))
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// sudoPasskey reports whether the sudo fields of sess's pages offer a
// passkey: the user holds one.
func (s *server) sudoPasskey(sess *session) bool {
	f, err := s.store.SecondFactors(sess.user.ID)
	return err == nil && f.Passkeys > 0
}

// ---- list, rename, remove (the account page) ----

// passkeyView is a passkey as the account page shows it.
type passkeyView struct {
	ID       uint64
	Name     string
	Created  when
	LastUsed when
	Unused   bool
}

// passkeyViews returns the passkeys of user as the account page shows them.
func (s *server) passkeyViews(user uint64) ([]passkeyView, error) {
	keys, err := s.store.PasskeysOf(user)
	if err != nil {
		return nil, err
	}
	views := make([]passkeyView, 0, len(keys))
	for _, k := range keys {
		views = append(views, passkeyView{ID: k.ID, Name: k.Name, Created: s.when(k.CreatedAt),
			LastUsed: s.when(k.LastUsedAt), Unused: k.LastUsedAt.IsZero()})
	}
	return views, nil
}

// passkeyID reads the :id of a passkey's form.
func passkeyID(ps httprouter.Params) (uint64, error) {
	id, err := strconv.ParseUint(ps.ByName("id"), 10, 64)
	if err != nil {
		return 0, errNotFound
	}
	return id, nil
}

// handleRenamePasskey renames one of the session's user's passkeys.
func (s *server) handleRenamePasskey(w http.ResponseWriter, r *http.Request, ps httprouter.Params, sess *session) {
	id, err := passkeyID(ps)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	name, err := checkPasskeyName(r.PostForm.Get("name"))
	if err == nil {
		err = s.store.RenamePasskey(s.pageActor(r, sess.user), sess.user.ID, id, name)
	}
	if errors.Is(err, errNameTaken) {
		err = clientError(http.StatusConflict, "You have a passkey of that name already: choose another name.")
	}
	if err != nil {
		s.accountFormFailed(w, r, sess, err)
		return
	}
	s.setFlash(w, r, "Passkey renamed to "+name+".")
	seeOther(w, r, "/account")
}

// handleRemovePasskey removes one of the session's user's passkeys. It is
// a sensitive action: it takes sudo mode.
func (s *server) handleRemovePasskey(w http.ResponseWriter, r *http.Request, ps httprouter.Params, sess *session) {
	id, err := passkeyID(ps)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	if err := s.checkSudo(r, sess); err != nil {
		s.accountFormFailed(w, r, sess, err)
		return
	}
	if err := s.store.DeletePasskey(s.pageActor(r, sess.user), sess.user.ID, id); err != nil {
		s.accountFormFailed(w, r, sess, err)
		return
	}
	s.log.Info("passkey removed", "user_id", sess.user.ID, "passkey_id", id)
	s.setFlash(w, r, "Passkey removed.")
	seeOther(w, r, "/account")
}

// accountFormFailed shows the account page again with what went wrong
// with a passkey form, beside the passkeys.
func (s *server) accountFormFailed(w http.ResponseWriter, r *http.Request, sess *session, err error) {
	if errors.Is(err, errNotFound) {
		s.pageError(w, r, sess, err)
		return
	}
	s.formFailed(w, r, sess, err, func(status int, msg string) {
		s.showAccountPage(w, r, sess, status, accountPage{EndSessions: true}, msg)
	})
}
