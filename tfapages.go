package main

import (
	"crypto/cipher"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"
	qrcode "github.com/skip2/go-qrcode"
)

// The pages of second factors: the second step of signing in, TOTP
// enrolment and removal, new recovery codes, and the admin's reset. The
// checks themselves are in tfa.go.

// pageActor is u acting through a page: the signed-in person, or the one
// being signed in.
func (s *server) pageActor(r *http.Request, u userRecord) actor {
	return s.actorOf(r, u, viaPage)
}

// ---- the second step of signing in ----

// verifyPage is the data of verify.html.
type verifyPage struct {
	Name     string
	TOTP     bool
	Passkeys int
}

// handleVerifyPage asks for the second factor of a pending sign-in.
func (s *server) handleVerifyPage(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	s.showVerifyPage(w, r, http.StatusOK, "")
}

func (s *server) showVerifyPage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	_, u, ok, err := s.pendingSignInOf(r)
	if err != nil {
		s.pageError(w, r, nil, err)
		return
	}
	if !ok {
		s.clearPendingSignIn(w, r)
		s.setFlash(w, r, "Your sign-in took more than 5 minutes: enter your password again.")
		seeOther(w, r, "/login")
		return
	}
	f, err := s.store.SecondFactors(u.ID)
	if err != nil {
		s.pageError(w, r, nil, err)
		return
	}
	s.renderPage(w, r, nil, status, "verify.html", &page{Title: "Second step", Error: msg,
		Data: verifyPage{Name: u.Name, TOTP: f.TOTP, Passkeys: f.Passkeys}})
}

// handleVerify checks the code of a pending sign-in and, when it is
// right, starts the session.
func (s *server) handleVerify(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	p, u, ok, err := s.pendingSignInOf(r)
	if err != nil {
		s.pageError(w, r, nil, err)
		return
	}
	if !ok {
		s.showVerifyPage(w, r, http.StatusOK, "") // sends the browser back to the password
		return
	}
	code := r.PostForm.Get("code")
	if strings.TrimSpace(code) == "" {
		s.showVerifyPage(w, r, http.StatusBadRequest, "Enter the code from your authenticator app, or a recovery code.")
		return
	}
	recovery, left, err := s.checkCode(r, u, code, s.pageActor(r, u))
	if err != nil {
		s.formFailed(w, r, nil, err, func(status int, msg string) { s.showVerifyPage(w, r, status, msg) })
		return
	}
	if recovery {
		s.setFlash(w, r, fmt.Sprintf("You signed in with a recovery code: %s left. Make new ones on your account page if you are running out.", plural(left, "code")))
	}
	s.finishSignIn(w, r, u, p.Next)
}

// finishSignIn starts u's session once their second factor passed and
// sends the browser on to next.
func (s *server) finishSignIn(w http.ResponseWriter, r *http.Request, u userRecord, next string) {
	if err := s.startSignedInSession(w, r, u); err != nil {
		s.pageError(w, r, nil, err)
		return
	}
	seeOther(w, r, safeNext(next))
}

// startSignedInSession ends the pending sign-in of r and starts u's
// session.
func (s *server) startSignedInSession(w http.ResponseWriter, r *http.Request, u userRecord) error {
	old, err := s.currentSession(r)
	if err != nil {
		return err
	}
	if err := s.startSession(w, r, u, old); err != nil {
		return err
	}
	s.clearPendingSignIn(w, r)
	return nil
}

// pendingSecondStep returns the user whose password was right in r's
// pending sign-in, or false when there is none live (for a passkey as the
// second factor). An error reading the user counts as none, logged.
func (s *server) pendingSecondStep(r *http.Request) (userRecord, bool) {
	_, u, ok, err := s.pendingSignInOf(r)
	if err != nil {
		s.log.Warn("read pending sign-in", "err", err)
		return userRecord{}, false
	}
	return u, ok
}

// finishSecondStep starts the session of u, whose second factor passed,
// ends the pending sign-in, and returns where the browser goes next (a
// path on this site). It writes cookies, not the answer.
func (s *server) finishSecondStep(w http.ResponseWriter, r *http.Request, u userRecord) (string, error) {
	p, pu, ok, err := s.pendingSignInOf(r)
	next := "/"
	if err == nil && ok && pu.ID == u.ID {
		next = safeNext(p.Next)
	}
	if err := s.startSignedInSession(w, r, u); err != nil {
		return "", err
	}
	return next, nil
}

// ---- -require-2fa ----

// mustEnrol reports whether sess must enrol a second factor before it may
// open path: under -require-2fa, for a user with none, anywhere but the
// account pages (where they enrol).
func (s *server) mustEnrol(sess *session, path string) (bool, error) {
	if !s.cfg.Require2FA || path == "/account" || strings.HasPrefix(path, "/account/") {
		return false, nil
	}
	f, err := s.store.SecondFactors(sess.user.ID)
	if err != nil {
		return false, err
	}
	return !f.any(), nil
}

// errEnrolFirst refuses the API to a session that must enrol first.
var errEnrolFirst = clientError(http.StatusForbidden, "this server requires a second factor: enrol one on your account page first")

// ---- sudo with a second factor ----

// needsSudoCode reports whether sess's sudo mode asks for a second factor
// besides the password.
func (s *server) needsSudoCode(sess *session) (bool, error) {
	f, err := s.store.SecondFactors(sess.user.ID)
	return f.any(), err
}

// errSudoCodeNeeded asks for the second factor with the password.
var errSudoCodeNeeded = clientError(http.StatusForbidden, "You signed in more than an hour ago: enter your password and a code from your authenticator app (or a recovery code) to confirm it is you")

// ---- the account page's part ----

// tfaView is the second-factor part of the account page.
type tfaView struct {
	TOTP         bool
	Passkeys     int
	RecoveryLeft int
	Any          bool
	Required     bool // -require-2fa and none yet
}

func (s *server) tfaViewOf(u userRecord) (tfaView, error) {
	f, err := s.store.SecondFactors(u.ID)
	if err != nil {
		return tfaView{}, err
	}
	return tfaView{TOTP: f.TOTP, Passkeys: f.Passkeys, RecoveryLeft: f.RecoveryLeft, Any: f.any(), Required: s.cfg.Require2FA && !f.any()}, nil
}

// ---- TOTP enrolment ----

// The secret of an enrolment waits for its first code in the form itself
// (field enrolment), sealed with AES-256-GCM under a key derived from the
// session's secret, as the new-token secret cookie is (formcookie.go): no
// instance keeps it, the database never sees it unconfirmed, and no other
// session can open it.
const totpEnrolLabel = "tokend totp enrolment v1"

type totpEnrolment struct {
	User   uint64 `json:"u"`
	Secret []byte `json:"s"`
	At     int64  `json:"at"`
}

// enrolmentAEAD returns the cipher of r's session's enrolments, or false
// without a session cookie.
func (s *server) enrolmentAEAD(r *http.Request) (cipher.AEAD, bool) {
	secret := s.cookieValue(r, sessionCookieName)
	if secret == "" {
		return nil, false
	}
	return derivedAEAD([]byte(secret), totpEnrolLabel), true
}

// openEnrolment returns the secret that value (the form's enrolment
// field) holds for sess, or nil when it does not open or is too old.
func (s *server) openEnrolment(r *http.Request, sess *session, value string) []byte {
	aead, ok := s.enrolmentAEAD(r)
	b, err := totpEncoding.DecodeString(value)
	if !ok || err != nil || len(b) < aead.NonceSize() {
		return nil
	}
	plain, err := aead.Open(nil, b[:aead.NonceSize()], b[aead.NonceSize():], []byte(totpEnrolLabel))
	var e totpEnrolment
	if err != nil || json.Unmarshal(plain, &e) != nil || e.User != sess.user.ID || len(e.Secret) != totpSecretSize {
		return nil
	}
	if age := s.now().Sub(time.Unix(0, e.At)); age < 0 || age >= totpEnrolFor {
		return nil
	}
	return e.Secret
}

// sealEnrolment returns the enrolment field holding secret for sess.
func (s *server) sealEnrolment(r *http.Request, sess *session, secret []byte) (string, error) {
	aead, ok := s.enrolmentAEAD(r)
	if !ok {
		return "", errors.New("no session cookie")
	}
	plain, err := json.Marshal(totpEnrolment{User: sess.user.ID, Secret: secret, At: s.now().UnixNano()})
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	return totpEncoding.EncodeToString(aead.Seal(nonce, nonce, plain, []byte(totpEnrolLabel))), nil
}

// totpPage is the data of totp.html.
type totpPage struct {
	Enrolled bool
	QR       template.HTML // an inline SVG
	Secret   string        // base32, grouped
	// Enrolment is the secret sealed for the form (openEnrolment).
	Enrolment string
}

// qrSVG draws text as a QR code in an inline SVG: made here, so that no
// image crosses the network and the page's CSP (img-src 'self') holds.
func qrSVG(text string) (template.HTML, error) {
	q, err := qrcode.New(text, qrcode.Medium)
	if err != nil {
		return "", err
	}
	q.DisableBorder = false
	bits := q.Bitmap()
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" width="240" height="240" shape-rendering="crispEdges" role="img" aria-label="QR code of the secret">`, len(bits), len(bits))
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#fff"/><path fill="#000" d="`, len(bits), len(bits))
	for y, row := range bits {
		for x, on := range row {
			if on {
				fmt.Fprintf(&b, "M%d %dh1v1h-1z", x, y)
			}
		}
	}
	b.WriteString(`"/></svg>`)
	return template.HTML(b.String()), nil // numbers only: nothing from outside
}

// handleTOTPPage shows a new secret to enrol, or that one is enrolled.
func (s *server) handleTOTPPage(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	s.showTOTPPage(w, r, sess, http.StatusOK, "")
}

func (s *server) showTOTPPage(w http.ResponseWriter, r *http.Request, sess *session, status int, msg string) {
	f, err := s.store.SecondFactors(sess.user.ID)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	if f.TOTP {
		s.renderPage(w, r, sess, status, "totp.html", &page{Title: "Authenticator app", Nav: "account", Error: msg, Data: totpPage{Enrolled: true}})
		return
	}
	if !s.tfaKeys.configured() {
		s.pageError(w, r, sess, errNoKeyFile)
		return
	}
	// A form sent back shows the secret it was about, which the app may
	// hold already.
	secret := s.openEnrolment(r, sess, r.PostForm.Get("enrolment"))
	if secret == nil {
		secret = make([]byte, totpSecretSize)
		rand.Read(secret)
	}
	sealed, err := s.sealEnrolment(r, sess, secret)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	qr, err := qrSVG(totpURI("tokend", sess.user.Name, secret))
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	s.renderPage(w, r, sess, status, "totp.html", &page{Title: "Authenticator app", Nav: "account", Error: msg,
		Data: totpPage{QR: qr, Secret: groupSecret(totpEncoding.EncodeToString(secret)), Enrolment: sealed}})
}

// recoveryPage is the data of recovery.html.
type recoveryPage struct {
	Codes []string
	What  string // what just happened
}

// showRecoveryCodes shows new recovery codes, once: the store has only
// their hashes.
func (s *server) showRecoveryCodes(w http.ResponseWriter, r *http.Request, sess *session, what string, codes []string) {
	s.renderPage(w, r, sess, http.StatusOK, "recovery.html", &page{Title: "Recovery codes", Nav: "account",
		Data: recoveryPage{Codes: codes, What: what}})
}

// handleEnrolTOTP confirms the waiting secret with a code from the app and
// stores it sealed; the first factor comes with recovery codes.
func (s *server) handleEnrolTOTP(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	show := func(status int, msg string) { s.showTOTPPage(w, r, sess, status, msg) }
	secret := s.openEnrolment(r, sess, r.PostForm.Get("enrolment"))
	if secret == nil {
		show(http.StatusBadRequest, "That secret waited too long. Scan this new one and enter its code.")
		return
	}
	if err := s.checkSudo(r, sess); err != nil {
		s.formFailed(w, r, sess, err, show)
		return
	}
	now := s.now()
	step, ok := matchTOTP(secret, normalizeCode(r.PostForm.Get("code")), now)
	if !ok {
		show(http.StatusBadRequest, "That code does not match. Check the time on your phone and enter the code the app shows now.")
		return
	}
	sealed, err := s.tfaKeys.sealTOTP(sess.user.ID, secret)
	if err != nil {
		s.formFailed(w, r, sess, err, show)
		return
	}
	f, err := s.store.SecondFactors(sess.user.ID)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	var codes []string
	var hashes []tokenHash
	if !f.any() {
		codes, hashes = newRecoveryCodes()
	}
	err = s.store.EnrolTOTP(s.pageActor(r, sess.user), sess.user.ID, totpRecord{Sealed: sealed, LastStep: step, CreatedAt: now}, hashes)
	if errors.Is(err, errTOTPEnrolled) {
		show(http.StatusConflict, "An authenticator app is enrolled already.")
		return
	}
	if err != nil {
		s.formFailed(w, r, sess, err, show)
		return
	}
	s.log.Info("authenticator app enrolled", "user_id", sess.user.ID)
	if codes == nil {
		s.setFlash(w, r, "Your authenticator app is enrolled.")
		seeOther(w, r, "/account")
		return
	}
	s.showRecoveryCodes(w, r, sess, "Your authenticator app is enrolled.", codes)
}

// handleRemoveTOTP removes the user's TOTP secret.
func (s *server) handleRemoveTOTP(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	show := func(status int, msg string) { s.showTOTPPage(w, r, sess, status, msg) }
	if err := s.checkSudo(r, sess); err != nil {
		s.formFailed(w, r, sess, err, show)
		return
	}
	if err := s.store.RemoveTOTP(s.pageActor(r, sess.user), sess.user.ID); err != nil && !errors.Is(err, errNotFound) {
		s.formFailed(w, r, sess, err, show)
		return
	}
	s.log.Info("authenticator app removed", "user_id", sess.user.ID)
	s.setFlash(w, r, "Your authenticator app is removed.")
	seeOther(w, r, "/account")
}

// handleNewRecoveryCodes replaces the user's recovery codes.
func (s *server) handleNewRecoveryCodes(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	if err := s.checkSudo(r, sess); err != nil {
		s.formFailed(w, r, sess, err, func(status int, msg string) {
			s.showAccountPage(w, r, sess, status, accountPage{EndSessions: true}, msg)
		})
		return
	}
	codes, hashes := newRecoveryCodes()
	err := s.store.ReplaceRecoveryCodes(s.pageActor(r, sess.user), sess.user.ID, hashes)
	if errors.Is(err, errNotFound) {
		s.setFlash(w, r, "Recovery codes come with a second factor: enrol one first.")
		seeOther(w, r, "/account")
		return
	}
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	s.log.Info("recovery codes replaced", "user_id", sess.user.ID)
	s.showRecoveryCodes(w, r, sess, "Your old recovery codes no longer work.", codes)
}

// ---- the admin's reset ----

// handleAPIResetSecondFactors is DELETE /api/v1/users/:id/second-factors.
func (s *server) handleAPIResetSecondFactors(w http.ResponseWriter, r *http.Request, ps httprouter.Params, c *caller) {
	u, err := s.apiUser(ps)
	var done accountChange
	if err == nil {
		done, err = s.accounts().ResetSecondFactors(s.actorOf(r, c.user, viaAPI), u.ID)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("second factors reset", "user_id", u.ID, "sessions", done.Sessions, "by_user_id", c.user.ID, "by_token", c.token.ID)
	s.writeJSON(w, r, http.StatusOK, changeJSON(done))
}

func (s *server) handleResetSecondFactors(w http.ResponseWriter, r *http.Request, ps httprouter.Params, sess *session) {
	u, ok := s.userForm(w, r, ps, sess, false)
	if !ok {
		return
	}
	done, err := s.accounts().ResetSecondFactors(s.pageActor(r, sess.user), u.ID)
	if err != nil {
		s.formFailed(w, r, sess, err, func(status int, msg string) { s.showUserPage(w, r, sess, status, u, false, msg) })
		return
	}
	s.log.Info("second factors reset", "user_id", u.ID, "sessions", done.Sessions, "by_user_id", sess.user.ID, "by", "page")
	if u.ID == sess.user.ID {
		s.setFlash(w, r, "Your second factors are removed, and you are signed out.")
		seeOther(w, r, "/login")
		return
	}
	s.setFlash(w, r, fmt.Sprintf("Removed the second factors of %s and ended %s.", u.Name, plural(done.Sessions, "session")))
	seeOther(w, r, fmt.Sprintf("/admin/users/%d", u.ID))
}
