package main

import (
	"cmp"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/julienschmidt/httprouter"
)

// The HTML pages: sign in and out, the token page, the account page. The
// users page for admins is in admin.go, first-run setup in setup.go. Every
// page works without JavaScript; every change is a POST behind
// cross-origin protection.

const (
	maxFormBytes   = 64 << 10
	flashCookie    = "tokend_flash"
	maxFlashLength = 300
)

// page is what the layout of every page needs, and the page's own Data.
type page struct {
	Title string
	Nav   string      // the menu entry to mark: tokens, account or users
	User  *userRecord // nil when signed out
	Flash string      // a notice carried over a redirect
	Error string      // what went wrong with the form just sent
	// ErrorAt names the form of the page that Error is about, for the
	// template to show it there; "" shows it at the top.
	ErrorAt string
	// ErrorField names the field of that form that Error is about, by its
	// name attribute (errorField); "" when it is about the whole form.
	ErrorField string
	// NeedSudo puts a password field into the forms of sensitive actions.
	NeedSudo bool
	Data     any
}

// setPageHeaders sets the headers every HTML answer carries besides the
// security headers of every answer (secureHeaders): its type, and no
// caching of pages that show tokens and sessions.
func (s *server) setPageHeaders(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
}

// renderPage fills in what the layout needs from sess (nil when signed
// out) and renders tmpl.
func (s *server) renderPage(w http.ResponseWriter, r *http.Request, sess *session, status int, tmpl string, p *page) {
	if sess != nil {
		p.User = &sess.user
		p.NeedSudo = !sess.sudo(s.now())
	}
	if p.Flash == "" && r.Method == http.MethodGet {
		p.Flash = s.takeFlash(w, r)
	}
	p.ErrorField = errorField(p)
	s.render(w, r, status, tmpl, p)
}

// messagePage is the data of message.html.
type messagePage struct {
	Heading, Text string
	Link, Button  string // where to go next
}

// renderMessage answers with a page that says one thing, and leads to the
// token page, or to the sign-in page when sess is nil.
func (s *server) renderMessage(w http.ResponseWriter, r *http.Request, sess *session, status int, heading, text string) {
	m := messagePage{Heading: heading, Text: text, Link: "/", Button: "Go to your tokens"}
	if sess == nil {
		m.Link, m.Button = "/login", "Sign in"
	}
	s.renderPage(w, r, sess, status, "message.html", &page{Title: heading, Data: m})
}

// pageError answers a page request that failed with err, with the status
// classifyError gives it (the one mapping the API uses too) and a page that
// says what it means. The cause of a 500 goes to the log only.
func (s *server) pageError(w http.ResponseWriter, r *http.Request, sess *session, err error) {
	a := s.classifyError(err)
	if a.retryAfter != "" {
		w.Header().Set("Retry-After", a.retryAfter)
	}
	var te *throttledError
	switch {
	case errors.As(err, &te):
		s.renderMessage(w, r, sess, a.status, "Too many attempts", throttledText(te))
	case a.status == http.StatusNotFound:
		s.renderMessage(w, r, sess, a.status, "Not found", "There is nothing here, or it is not yours.")
	case errors.Is(err, errStoreUnavailable):
		s.log.Warn("database unavailable", "method", r.Method, "path", redactPath(r.URL.Path), "err", err)
		s.renderMessage(w, r, sess, a.status, "Try again in a moment",
			"tokend cannot reach its database at the moment, so nothing was changed. Try again in a few seconds.")
	case a.status == http.StatusServiceUnavailable:
		s.renderMessage(w, r, sess, a.status, "Busy", busyText)
	case a.status == http.StatusInsufficientStorage:
		s.log.Error("storage full", "method", r.Method, "path", redactPath(r.URL.Path), "err", err)
		s.renderMessage(w, r, sess, a.status, "Storage full",
			"The server's storage is full, so nothing was changed. Pages that only show things still work. Tell the operator.")
	case a.status == http.StatusInternalServerError:
		s.log.Error("internal error", "method", r.Method, "path", redactPath(r.URL.Path), "err", err)
		s.renderMessage(w, r, sess, a.status, "Something went wrong",
			"The server failed to handle this request; its log says more. Nothing you did caused it.")
	default:
		s.renderMessage(w, r, sess, a.status, http.StatusText(a.status), sentence(a.detail))
	}
}

// busyText answers a password check refused because too many wait for one.
const busyText = "tokend is busy with other sign-ins: try again in 1 second."

// formFailed answers a form that failed with err by showing the form
// again through show, with the message and the status classifyError gives
// err, when the person can do something about it; any other error goes to
// pageError.
func (s *server) formFailed(w http.ResponseWriter, r *http.Request, sess *session, err error, show func(status int, msg string)) {
	a := s.classifyError(err)
	var he *httpError
	var te *throttledError
	switch {
	case errors.As(err, &te):
		w.Header().Set("Retry-After", a.retryAfter)
		show(a.status, throttledText(te))
	case errors.Is(err, errHashBusy):
		w.Header().Set("Retry-After", a.retryAfter)
		show(a.status, busyText)
	case errors.As(err, &he), errors.Is(err, errTooManyTokens):
		show(a.status, sentence(a.detail))
	default:
		s.pageError(w, r, sess, err)
	}
}

func throttledText(te *throttledError) string {
	return "Too many failed password attempts. Try again in " + waitText(te.wait) + "."
}

// sentence makes a message read as one: capital first letter, full stop.
func sentence(msg string) string {
	r, n := utf8.DecodeRuneInString(msg)
	msg = string(unicode.ToUpper(r)) + msg[n:]
	if !strings.HasSuffix(msg, ".") {
		msg += "."
	}
	return msg
}

// setFlash keeps msg for the next page the browser loads.
func (s *server) setFlash(w http.ResponseWriter, r *http.Request, msg string) {
	msg = truncate(msg, maxFlashLength)
	s.setCookie(w, r, flashCookie, base64.RawURLEncoding.EncodeToString([]byte(msg)), time.Minute)
}

// takeFlash returns the message setFlash kept, and forgets it.
func (s *server) takeFlash(w http.ResponseWriter, r *http.Request) string {
	v := s.cookieValue(r, flashCookie)
	if v == "" {
		return ""
	}
	s.setCookie(w, r, flashCookie, "", -1)
	b, err := base64.RawURLEncoding.DecodeString(v)
	if err != nil || len(b) > maxFlashLength+10 || !utf8.Valid(b) {
		return ""
	}
	return string(b)
}

// seeOther redirects after a form, so that reloading does not send it again.
func seeOther(w http.ResponseWriter, r *http.Request, path string) {
	http.Redirect(w, r, path, http.StatusSeeOther)
}

// wantsPage reports whether r comes from a browser reading pages rather
// than from an API client: it accepts text/html (or XHTML) and asks for
// nothing under /api/. An Accept of */* alone is an API client's.
func wantsPage(r *http.Request) bool {
	if strings.HasPrefix(r.URL.Path, "/api/") {
		return false
	}
	for _, v := range strings.Split(strings.Join(r.Header.Values("Accept"), ","), ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(v))
		if err != nil || (mt != "text/html" && mt != "application/xhtml+xml") {
			continue
		}
		if q, err := strconv.ParseFloat(cmp.Or(params["q"], "1"), 64); err == nil && q > 0 {
			return true
		}
	}
	return false
}

// notFoundPage answers a browser that asked for a page that does not
// exist, in the layout of every page, signed in or not.
func (s *server) notFoundPage(w http.ResponseWriter, r *http.Request) {
	sess, err := s.currentSession(r)
	if err != nil {
		sess = nil // the page says the same to anybody
	}
	s.renderMessage(w, r, sess, http.StatusNotFound, "Page not found",
		"There is no page at this address. Check it, or start again from the link below.")
}

// ---- wrappers ----

// pageHandler is a handler for a signed-in person.
type pageHandler func(w http.ResponseWriter, r *http.Request, ps httprouter.Params, sess *session)

// signedIn calls h with the request's session, or sends the browser to the
// sign-in page, which comes back here afterwards.
func (s *server) signedIn(h pageHandler) httprouter.Handle {
	return func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		sess, err := s.currentSession(r)
		if err != nil {
			s.pageError(w, r, nil, err)
			return
		}
		if sess == nil {
			if s.hasSessionCookie(r) {
				s.setCookie(w, r, sessionCookieName, "", -1)
				s.setFlash(w, r, "Your session has ended. Sign in again.")
			}
			// The whole request comes back after signing in: an app's
			// authorization request is all in its query.
			next := r.URL.RequestURI()
			if r.Method != http.MethodGet {
				next = "/"
			}
			seeOther(w, r, "/login?next="+url.QueryEscape(next))
			return
		}
		h(w, r, ps, sess)
	}
}

// form guards the POST of a form: a cross-origin request is refused with
// 403, and the body is read, at most maxFormBytes of it, into r.PostForm.
func (s *server) form(h httprouter.Handle) httprouter.Handle {
	return func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		if err := s.cop.Check(r); err != nil {
			s.log.Info("cross-origin form refused", "path", redactPath(r.URL.Path), "remote", s.clientAddr(r))
			s.renderMessage(w, r, nil, http.StatusForbidden, "Request refused",
				"This form was sent from another site, so tokend ignored it. Open tokend's own page and try again there.")
			return
		}
		r.Body = http.MaxBytesReader(innermost(w), r.Body, maxFormBytes)
		if err := r.ParseForm(); err != nil {
			s.renderMessage(w, r, nil, http.StatusBadRequest, "Bad request", "The form could not be read. Reload the page and try again.")
			return
		}
		h(w, r, ps)
	}
}

// errSudoNeeded asks for the password before a sensitive action.
var errSudoNeeded = clientError(http.StatusForbidden, "You signed in more than an hour ago: enter your password to confirm it is you")

// errWrongPassword answers a wrong password from a signed-in person.
var errWrongPassword = clientError(http.StatusForbidden, "That is not your password")

// checkSudo lets a sensitive action through when sess gave its password
// within sudoWindow, or the form carries it now (field sudo_password),
// which opens a new window.
func (s *server) checkSudo(r *http.Request, sess *session) error {
	now := s.now()
	if sess.sudo(now) {
		return nil
	}
	pw := r.PostForm.Get("sudo_password")
	if pw == "" {
		return errSudoNeeded
	}
	if err := s.confirmPassword(r, sess.user, pw); err != nil {
		return err
	}
	if err := s.store.ConfirmSession(sess.hash, now); err != nil {
		return err
	}
	sess.rec.SignedInAt = now
	return nil
}

// confirmPassword checks that password is u's, counting the attempt
// against the sign-in throttle.
func (s *server) confirmPassword(r *http.Request, u userRecord, password string) error {
	addr := s.clientAddr(r)
	account := signInAccount{user: u.ID, name: u.Name}
	wait, err := s.throttle.begin(account, addr, s.now())
	if err != nil {
		return fmt.Errorf("count password attempt: %w", err)
	}
	if wait > 0 {
		return &throttledError{wait: wait}
	}
	ok, _, err := s.hasher.Verify(r.Context(), password, u.PasswordHash)
	if err != nil {
		s.throttleLeft(s.throttle.abandoned(account, addr, s.now()))
		return fmt.Errorf("verify password of user %d: %w", u.ID, err)
	}
	if !ok {
		s.log.Info("password confirmation failed", "user_id", u.ID, "remote", addr)
		return errWrongPassword
	}
	s.throttleLeft(s.throttle.succeeded(u.ID, addr, s.now()))
	return nil
}

// checkNewPassword applies the password policy to a new password and its
// repetition. Its error is a sentence for the page.
func checkNewPassword(pw, confirm string) error {
	if err := checkPassword(pw); err != nil {
		return clientError(http.StatusBadRequest, "%s", sentence(err.Error()))
	}
	if pw != confirm {
		return clientError(http.StatusBadRequest, "The two new passwords differ.")
	}
	return nil
}

// ---- sign in, sign out ----

// loginPage is the data of login.html.
type loginPage struct {
	Name, Next string
	NoUsers    bool
}

// safeNext returns next if it is a path on this site, and "/" otherwise,
// so that the sign-in page cannot send anybody elsewhere.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") ||
		strings.ContainsAny(next, "\r\n\t") {
		return "/"
	}
	if u, err := url.Parse(next); err != nil || u.Host != "" || u.Scheme != "" {
		return "/"
	}
	return next
}

func (s *server) handleLoginPage(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	next := safeNext(r.URL.Query().Get("next"))
	sess, err := s.currentSession(r)
	if err != nil {
		s.pageError(w, r, nil, err)
		return
	}
	if sess != nil {
		seeOther(w, r, next)
		return
	}
	n, err := s.store.CountUsers()
	if err != nil {
		s.pageError(w, r, nil, err)
		return
	}
	s.renderPage(w, r, nil, http.StatusOK, "login.html", &page{Title: "Sign in",
		Data: loginPage{Name: r.URL.Query().Get("name"), Next: next, NoUsers: n == 0}})
}

func (s *server) handleLogin(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	name := strings.TrimSpace(r.PostForm.Get("name"))
	next := safeNext(r.PostForm.Get("next"))
	u, err := s.signIn(r, name, r.PostForm.Get("password"))
	if err != nil {
		if err == errBadCredentials {
			err = clientError(http.StatusUnauthorized, "Wrong user name or password.")
		}
		s.formFailed(w, r, nil, err, func(status int, msg string) {
			s.renderPage(w, r, nil, status, "login.html", &page{Title: "Sign in", Error: msg, ErrorAt: "login",
				Data: loginPage{Name: name, Next: next}})
		})
		return
	}
	old, err := s.currentSession(r)
	if err != nil {
		s.pageError(w, r, nil, err)
		return
	}
	if err := s.startSession(w, r, u, old); err != nil {
		s.pageError(w, r, nil, err)
		return
	}
	seeOther(w, r, next)
}

func (s *server) handleLogout(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	sess, err := s.currentSession(r)
	if err == nil {
		err = s.endSession(w, r, sess)
	}
	if isStorageFull(err) {
		// The cookie is gone, so this browser is signed out; the record
		// stays until it expires, since deleting needs room the disk lacks.
		s.log.Warn("sign out: session kept on record", "user_id", sess.user.ID, "err", err)
		s.setFlash(w, r, "You are signed out of this browser. The server's storage is full, so the session stays on record until it expires: tell the operator.")
		seeOther(w, r, "/login")
		return
	}
	if err != nil {
		s.setCookie(w, r, sessionCookieName, "", -1)
		s.pageError(w, r, nil, err)
		return
	}
	// Not "cookies": browsers apply it to the whole registrable domain,
	// which would sign people out of the apps beside tokend too, and after
	// this answer's own cookies, which would lose the notice below. The
	// session cookie is deleted by name above.
	w.Header().Set("Clear-Site-Data", `"cache", "storage"`)
	if sess != nil {
		s.forms.forget(sess.hash)
	}
	s.clearSecretCookie(w, r)
	s.setFlash(w, r, "You are signed out.")
	seeOther(w, r, "/login")
}

// ---- the token page ----

// tokenView is a token as the pages show it.
type tokenView struct {
	ID            uint64
	Name, Hint    string
	Scopes        []string
	Created       when
	Expires       when // when not Never
	Expired, Soon bool
	Never         bool
	LastUsed      when // when not Unused
	LastUsedIP    string
	Unused        bool
}

// when is a time as a page shows it: relative, with the exact time beside.
type when struct {
	Rel, ISO, Exact string
}

func (s *server) when(t time.Time) when {
	return when{Rel: relTime(s.now(), t), ISO: t.UTC().Format(time.RFC3339), Exact: t.UTC().Format("2 Jan 2006 15:04 UTC")}
}

func (s *server) tokenView(t tokenRecord) tokenView {
	now := s.now()
	s.withPendingUse(&t)
	v := tokenView{
		ID:      t.ID,
		Name:    t.Name,
		Hint:    s.format.prefix + "…" + t.Hint,
		Scopes:  t.Scopes,
		Created: s.when(t.CreatedAt),
		Never:   t.ExpiresAt == nil,
		Unused:  t.LastUsedAt == nil,
	}
	if t.ExpiresAt != nil {
		v.Expires = s.when(*t.ExpiresAt)
		v.Expired = t.expired(now)
		// Soon is the last quarter of its life, and within the week:
		// a new 7-day token is not flagged, a 90-day one is a week ahead.
		left := t.ExpiresAt.Sub(now)
		v.Soon = !v.Expired && left < expiryWarningWindow && left < t.ExpiresAt.Sub(t.CreatedAt)/4
	}
	if t.LastUsedAt != nil {
		v.LastUsed = s.when(*t.LastUsedAt)
		v.LastUsedIP = t.LastUsedIP
	}
	return v
}

// relTime says when t is from now, as a person would: "in 29 days",
// "3 hours ago", "just now".
func relTime(now, t time.Time) string {
	d := t.Sub(now)
	future := d > 0
	if d < 0 {
		d = -d
	}
	var s string
	switch {
	case d < 45*time.Second:
		if future {
			return "in a few seconds"
		}
		return "just now"
	case d < 45*time.Minute:
		s = plural(max(1, int(math.Round(d.Minutes()))), "minute")
	case d < 36*time.Hour:
		s = plural(int(math.Round(d.Hours())), "hour")
	case d < 60*24*time.Hour:
		s = plural(int(math.Round(d.Hours()/24)), "day")
	case d < 2*365*24*time.Hour:
		s = plural(int(math.Round(d.Hours()/24/30.44)), "month")
	default:
		s = plural(int(math.Round(d.Hours()/24/365.25)), "year")
	}
	if future {
		return "in " + s
	}
	return s + " ago"
}

// scopeChoice is a scope checkbox of the token form.
type scopeChoice struct {
	Name, Description string
	Checked           bool
}

// expiryChoice is an option of the token form's expiry.
type expiryChoice struct {
	Value, Label string
}

var expiryChoices = []expiryChoice{
	{"7", "7 days"}, {"30", "30 days"}, {"60", "60 days"}, {"90", "90 days"},
	{"custom", "Custom date"}, {"never", "No expiry"},
}

const defaultExpiry = "30"

// tokenForm is what the token form held when it was sent.
type tokenForm struct {
	Name   string
	Scopes []string
	Expiry string
	Date   string
}

// tokensPage is the data of tokens.html.
type tokensPage struct {
	Tokens   []tokenView
	Scopes   []scopeChoice
	Expiries []expiryChoice
	Form     tokenForm
	Today    string // the earliest custom date
	MaxDate  string // the latest
	Count    string // "3 of 100 tokens", or "3 tokens" with no limit
	Pattern  string // what tokens look like, for secret scanners
	FormKey  string // makes one submission of the form make one token
}

// showTokenPage renders the token page of sess with form filled in.
func (s *server) showTokenPage(w http.ResponseWriter, r *http.Request, sess *session, status int, form tokenForm, errMsg string) {
	tokens, err := s.store.TokensByOwner(sess.user.ID)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	now := s.now().UTC()
	data := tokensPage{
		Expiries: expiryChoices,
		Form:     form,
		Today:    now.Format(time.DateOnly),
		MaxDate:  now.AddDate(maxTokenYears, 0, -1).Format(time.DateOnly),
		Count:    plural(len(tokens), "token"),
		Pattern:  s.format.pattern(),
		FormKey:  newFormKey(),
	}
	if limit := s.cfg.MaxTokensPerUser; limit > 0 {
		data.Count = fmt.Sprintf("%d of %s", len(tokens), plural(limit, "token"))
	}
	for _, t := range tokens {
		data.Tokens = append(data.Tokens, s.tokenView(t))
	}
	for _, sc := range s.scopes.all() {
		if sc.Name == scopeAdmin && !sess.user.Admin {
			continue
		}
		data.Scopes = append(data.Scopes, scopeChoice{Name: sc.Name, Description: sc.Description, Checked: hasScope(form.Scopes, sc.Name)})
	}
	s.renderPage(w, r, sess, status, "tokens.html", &page{Title: "Tokens", Nav: "tokens", Error: errMsg, ErrorAt: "create", Data: data})
}

func (s *server) handleTokenPage(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	s.showTokenPage(w, r, sess, http.StatusOK, tokenForm{Expiry: defaultExpiry}, "")
}

// formExpiry reads the expiry of the token form: a number of days, a
// custom date (the token lasts to the end of that day, UTC) or never.
func formExpiry(choice, date string, now time.Time) (*time.Time, error) {
	date = strings.TrimSpace(date)
	switch choice {
	case "7", "30", "60", "90":
		if date != "" {
			return nil, clientError(http.StatusBadRequest, "You entered a date but chose %s days: choose Custom date to use the date, or clear it", choice)
		}
		days, _ := strconv.Atoi(choice)
		e := now.Add(time.Duration(days) * 24 * time.Hour)
		return &e, nil
	case "custom":
		if date == "" {
			return nil, clientError(http.StatusBadRequest, "Choose the date the token expires, or another expiry")
		}
		d, err := time.Parse(time.DateOnly, date)
		if err != nil {
			return nil, clientError(http.StatusBadRequest, "The expiry date %q is not a date such as 2030-01-31", truncate(date, 20))
		}
		e := d.AddDate(0, 0, 1)
		switch {
		case !e.After(now):
			return nil, clientError(http.StatusBadRequest, "The expiry date %s is in the past", date)
		case e.After(now.AddDate(maxTokenYears, 0, 0)):
			return nil, clientError(http.StatusBadRequest, "The expiry date may be at most %d years ahead; choose No expiry for a token that never expires", maxTokenYears)
		}
		return &e, nil
	case "never":
		if date != "" {
			return nil, clientError(http.StatusBadRequest, "You entered a date but chose No expiry: choose Custom date to use the date, or clear it")
		}
		return nil, nil
	}
	return nil, clientError(http.StatusBadRequest, "Choose when the token expires")
}

// secretPage is the data of secret.html.
type secretPage struct {
	Token   tokenView
	Secret  string
	Rotated bool
	UserURL string // where to try the token
}

// showSecret renders the page that shows a new token's secret, this once.
// It answers GET /secret, where the form that made the token redirected:
// the secret is never in a URL, and a reload finds it gone.
func (s *server) showSecret(w http.ResponseWriter, r *http.Request, sess *session, n *newSecret) {
	w.Header().Set("Cache-Control", "no-store")
	title := "Your new token"
	if n.rotated {
		title = "Your rotated token"
	}
	scheme := "http"
	if s.isHTTPS(r) {
		scheme = "https"
	}
	s.renderPage(w, r, sess, http.StatusOK, "secret.html", &page{Title: title, Nav: "tokens",
		Data: secretPage{Token: s.tokenView(n.token), Secret: n.secret, Rotated: n.rotated, UserURL: scheme + "://" + r.Host + "/api/v1/user"}})
}

// handleSecretPage shows the secret the session's last token form made,
// once: a second look finds nothing.
func (s *server) handleSecretPage(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	// HEAD answers as GET would but sends no body, so it must not use up
	// the one showing of the secret.
	now, peek := s.now(), r.Method == http.MethodHead
	// The cookie holds the session's latest secret, made on whichever
	// instance; this instance's memory serves when the cookie is missing.
	n := s.secretFromCookie(r, now)
	if kept := s.forms.take(sess.hash, now, peek); n == nil {
		n = kept
	}
	if !peek {
		if s.cookieValue(r, secretCookieName) != "" {
			s.clearSecretCookie(w, r)
		}
		if n != nil {
			// Shown once, whichever instance shows it.
			first, err := s.store.ClaimFormKey(sess.hash, shownMark(n.key))
			if err != nil {
				s.pageError(w, r, sess, err)
				return
			}
			if !first {
				n = nil
			}
		}
	}
	if n == nil {
		s.renderMessage(w, r, sess, http.StatusGone, "Already shown",
			"A new token's secret is shown only once, and this one has been. If you did not copy it, rotate the token to get a new secret.")
		return
	}
	s.showSecret(w, r, sess, n)
}

// errFormKey answers a token form without a valid form key.
var errFormKey = clientError(http.StatusBadRequest, "This form is out of date: reload the page and send it again")

// formKey returns the form key of a token form, or errFormKey.
func formKey(r *http.Request) (string, error) {
	k := r.PostForm.Get("form_key")
	if !validFormKey(k) {
		return "", errFormKey
	}
	return k, nil
}

// claimFormKey claims key for sess through the store, so that no other
// instance makes a token with it: errFormKeyClaimed when one did. A form
// first looks for its key among those the session had used when the
// request began (sess.rec.FormKeys), without writing, so that a resent
// form is known as such whatever has changed since (the token it rotated
// is gone); a form that fails its checks claims nothing. The key is
// claimed just before make runs, and given back if make fails.
func (s *server) claimFormKey(sess *session, key string, make func() (newSecret, error)) (newSecret, error) {
	claimed, err := s.store.ClaimFormKey(sess.hash, key)
	switch {
	case err != nil:
		return newSecret{}, err
	case !claimed:
		return newSecret{}, errFormKeyClaimed
	}
	n, err := make()
	if err != nil {
		if rerr := s.store.ReleaseFormKey(sess.hash, key); rerr != nil {
			s.log.Warn("cannot give back the key of a failed token form", "user_id", sess.user.ID, "err", rerr)
		}
	}
	return n, err
}

// secretMade answers a token form that made its secret: the secret waits
// in this instance's memory and, sealed, in a cookie for whichever
// instance answers GET /secret.
func (s *server) secretMade(w http.ResponseWriter, r *http.Request, sess *session) {
	if n := s.forms.take(sess.hash, s.now(), true); n != nil {
		s.setSecretCookie(w, r, n)
	}
	seeOther(w, r, "/secret")
}

// formSentAgain answers a token form whose key already made its token:
// to the secret if it still waits to be shown (two clicks on one
// button), else to the token page, with nothing new made.
func (s *server) formSentAgain(w http.ResponseWriter, r *http.Request, sess *session, key string) {
	s.log.Info("token form sent again", "user_id", sess.user.ID, "path", redactPath(r.URL.Path))
	now := s.now()
	if c := s.secretFromCookie(r, now); s.forms.waiting(sess.hash, key, now) || c != nil && c.key == key {
		seeOther(w, r, "/secret")
		return
	}
	s.setFlash(w, r, "That form was sent before and made its token then; nothing new was made.")
	seeOther(w, r, "/")
}

func (s *server) handleCreateTokenPage(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	form := tokenForm{
		Name:   r.PostForm.Get("name"),
		Scopes: r.PostForm["scope"],
		Expiry: r.PostForm.Get("expiry"),
		Date:   r.PostForm.Get("expiry_date"),
	}
	show := func(status int, msg string) { s.showTokenPage(w, r, sess, status, form, msg) }
	key, err := formKey(r)
	if err != nil {
		s.formFailed(w, r, sess, err, show)
		return
	}
	ran, err := s.forms.once(sess.hash, key, s.now(), func() (newSecret, error) {
		if slices.Contains(sess.rec.FormKeys, key) {
			return newSecret{}, errFormKeyClaimed
		}
		if err := s.checkSudo(r, sess); err != nil {
			return newSecret{}, err
		}
		now := s.now()
		expires, err := formExpiry(form.Expiry, form.Date, now)
		if err != nil {
			return newSecret{}, err
		}
		spec, err := checkTokenSpec(s.scopes, form.Name, form.Scopes, expires, sess.user, now)
		if err != nil {
			return newSecret{}, err
		}
		return s.claimFormKey(sess, key, func() (newSecret, error) {
			t, secret, err := s.createToken(s.actorOf(r, sess.user, viaPage), sess.user, spec, now)
			return newSecret{token: t, secret: secret}, err
		})
	})
	switch {
	case !ran:
		s.formSentAgain(w, r, sess, key)
	case err != nil:
		s.formFailed(w, r, sess, err, show)
	default:
		s.secretMade(w, r, sess)
	}
}

// pageToken returns the token named by the :id parameter if sess's user
// holds it, and errNotFound otherwise: another's token is not there.
func (s *server) pageToken(ps httprouter.Params, sess *session) (tokenRecord, error) {
	id, err := strconv.ParseUint(ps.ByName("id"), 10, 64)
	if err != nil || id == 0 {
		return tokenRecord{}, errNotFound
	}
	return s.store.TokenByID(id, sess.user.ID)
}

// confirmPage is the data of confirm.html: a question before an action.
type confirmPage struct {
	Heading, Text, Action, Button string
	Danger                        bool
	Sudo                          bool // the action is a sensitive one
	Token                         tokenView
	FormKey                       string // for a form that makes a secret
}

func revokeConfirmation(v tokenView) confirmPage {
	return confirmPage{
		Heading: "Revoke this token?",
		Text:    "Anything that uses it gets 401 Unauthorized from its next request on. This cannot be undone.",
		Action:  fmt.Sprintf("/tokens/%d/revoke", v.ID),
		Button:  "Revoke token",
		Danger:  true,
		Token:   v,
	}
}

func rotateConfirmation(v tokenView) confirmPage {
	return confirmPage{
		Heading: "Rotate this token?",
		Text:    "You get a new secret with the same name, scopes and expiry. The current secret stops working at once: update whatever uses it.",
		Action:  fmt.Sprintf("/tokens/%d/rotate", v.ID),
		Button:  "Rotate token",
		Sudo:    true,
		Token:   v,
		FormKey: newFormKey(),
	}
}

func (s *server) showConfirm(w http.ResponseWriter, r *http.Request, sess *session, status int, c confirmPage, errMsg string) {
	s.renderPage(w, r, sess, status, "confirm.html", &page{Title: c.Heading, Nav: "tokens", Error: errMsg, ErrorAt: "confirm", Data: c})
}

// confirmTokenPage returns the handler of a GET that asks to confirm what
// confirmation describes, done to the token of the URL.
func (s *server) confirmTokenPage(confirmation func(tokenView) confirmPage) pageHandler {
	return func(w http.ResponseWriter, r *http.Request, ps httprouter.Params, sess *session) {
		t, err := s.pageToken(ps, sess)
		if err != nil {
			s.pageError(w, r, sess, err)
			return
		}
		s.showConfirm(w, r, sess, http.StatusOK, confirmation(s.tokenView(t)), "")
	}
}

func (s *server) handleRevokeTokenForm(w http.ResponseWriter, r *http.Request, ps httprouter.Params, sess *session) {
	t, err := s.pageToken(ps, sess)
	if err == nil {
		t, err = s.store.DeleteToken(s.actorOf(r, sess.user, viaPage), t.ID, sess.user.ID)
	}
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	s.log.Info("token revoked", "token_id", t.ID, "user_id", sess.user.ID, "by", "page")
	s.setFlash(w, r, fmt.Sprintf("Revoked “%s”. Anything that uses it now gets 401.", t.Name))
	seeOther(w, r, "/")
}

func (s *server) handleRotateTokenForm(w http.ResponseWriter, r *http.Request, ps httprouter.Params, sess *session) {
	// The token is gone once this form has rotated it: a resent form
	// must find its key used before that counts as not found.
	old, lookupErr := s.pageToken(ps, sess)
	show := func(status int, msg string) {
		s.showConfirm(w, r, sess, status, rotateConfirmation(s.tokenView(old)), msg)
	}
	key, err := formKey(r)
	if err != nil {
		if lookupErr != nil {
			err = lookupErr
		}
		s.formFailed(w, r, sess, err, show)
		return
	}
	ran, err := s.forms.once(sess.hash, key, s.now(), func() (newSecret, error) {
		if slices.Contains(sess.rec.FormKeys, key) {
			return newSecret{}, errFormKeyClaimed
		}
		if lookupErr != nil {
			return newSecret{}, lookupErr
		}
		if err := s.checkSudo(r, sess); err != nil {
			return newSecret{}, err
		}
		return s.claimFormKey(sess, key, func() (newSecret, error) {
			secret, err := s.format.generate()
			if err != nil {
				return newSecret{}, err
			}
			t, err := s.store.RotateToken(s.actorOf(r, sess.user, viaPage), old.ID, sess.user.ID, hashToken(secret), tokenHint(secret), s.now())
			if errors.Is(err, errTokenExpired) {
				err = clientError(http.StatusConflict, "This token has expired, so it cannot be rotated: create a new one instead")
			}
			return newSecret{token: t, secret: secret, rotated: true}, err
		})
	})
	switch {
	case !ran:
		s.formSentAgain(w, r, sess, key)
	case err != nil:
		s.formFailed(w, r, sess, err, show)
	default:
		s.log.Info("token rotated", "old_token_id", old.ID, "user_id", sess.user.ID, "by", "page")
		s.secretMade(w, r, sess)
	}
}

// ---- the account page ----

// sessionView is a session as the account page lists it.
type sessionView struct {
	ID       string
	Created  when
	LastSeen when
	Addr     string
	Agent    string // "Firefox on Linux"
	Current  bool
}

// accountPage is the data of account.html.
type accountPage struct {
	Sessions        []sessionView
	PasswordChanged when
	// The checkboxes of the password form, as last sent.
	RevokeTokens, EndSessions bool
	TokensText                string // "3 tokens": what revoking all of them takes

	Grants []grantRow // the authorized apps (oauthclients.go)

	// Events are your newest events in the security log (auditread.go);
	// MoreEvents links to the older ones, "" when there are none.
	Events     []auditRow
	MoreEvents string
}

func (s *server) showAccountPage(w http.ResponseWriter, r *http.Request, sess *session, status int, data accountPage, errMsg string) {
	sessions, err := s.store.SessionsOf(sess.user.ID)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	now := s.now()
	for _, o := range sessions {
		if !o.rec.live(now, s.cfg.SessionIdle) {
			continue
		}
		data.Sessions = append(data.Sessions, sessionView{
			ID:       o.hash.String(),
			Created:  s.when(o.rec.CreatedAt),
			LastSeen: s.when(o.rec.LastSeenAt),
			Addr:     o.rec.Addr,
			Agent:    cmp.Or(o.rec.Agent, "Unknown browser"),
			Current:  o.hash == sess.hash,
		})
	}
	data.PasswordChanged = s.when(sess.user.PasswordChangedAt)
	tokens, err := s.store.TokensByOwner(sess.user.ID)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	if len(tokens) > 0 {
		data.TokensText = plural(len(tokens), "token")
	}
	if data.Grants, err = s.grantRows(sess.user.ID); err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	if data.Events, data.MoreEvents, err = s.accountAudit(sess.user); err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	// The error goes beside the form that was sent; the revoke form is
	// shown only to someone who holds tokens.
	at := "password"
	if r.URL.Path == "/account/revoke-tokens" {
		at = ""
		if data.TokensText != "" {
			at = "revoke-tokens"
		}
	}
	s.renderPage(w, r, sess, status, "account.html", &page{Title: "Account", Nav: "account", Error: errMsg, ErrorAt: at, Data: data})
}

func (s *server) handleAccountPage(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	s.showAccountPage(w, r, sess, http.StatusOK, accountPage{EndSessions: true}, "")
}

func (s *server) handleChangePassword(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	data := accountPage{
		RevokeTokens: r.PostForm.Get("revoke_tokens") != "",
		EndSessions:  r.PostForm.Get("end_sessions") != "",
	}
	show := func(status int, msg string) { s.showAccountPage(w, r, sess, status, data, msg) }
	next := r.PostForm.Get("password")
	if next != r.PostForm.Get("confirm") {
		show(http.StatusBadRequest, "The two new passwords differ.")
		return
	}
	done, err := s.accounts().ChangePassword(r.Context(), s.actorOf(r, sess.user, viaPage), sess.user, ownPasswordChange{
		Current: r.PostForm.Get("current"), New: next,
		RevokeTokens: data.RevokeTokens, EndOtherSessions: data.EndSessions, Keep: sess.hash,
	}, func(current string) error {
		if err := s.confirmPassword(r, sess.user, current); err != errWrongPassword {
			return err
		}
		return clientError(http.StatusForbidden, "Your current password is not right.")
	})
	if err != nil {
		s.formFailed(w, r, sess, err, show)
		return
	}
	tokens, sessions := done.Tokens, done.Sessions
	s.log.Info("password changed", "user_id", sess.user.ID, "tokens_revoked", tokens, "sessions_ended", sessions)
	msg := "Your password is changed."
	if tokens > 0 {
		msg += " " + capitalize(plural(tokens, "token")) + " revoked."
	}
	if sessions > 0 {
		msg += " " + capitalize(plural(sessions, "other session")) + " signed out."
	}
	s.setFlash(w, r, msg)
	seeOther(w, r, "/account")
}

func capitalize(s string) string {
	r, n := utf8.DecodeRuneInString(s)
	return string(unicode.ToUpper(r)) + s[n:]
}

func (s *server) handleRevokeOwnTokens(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	if r.PostForm.Get("confirm") == "" {
		s.showAccountPage(w, r, sess, http.StatusBadRequest, accountPage{EndSessions: true},
			"Tick the box to confirm that every one of your tokens stops working.")
		return
	}
	done, err := s.accounts().RevokeAllTokens(s.actorOf(r, sess.user, viaPage), sess.user.ID)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	s.log.Info("tokens revoked", "user_id", sess.user.ID, "tokens", done.Tokens, "by", "page")
	s.setFlash(w, r, fmt.Sprintf("Revoked %s. Anything that used one now gets 401.", plural(done.Tokens, "token")))
	seeOther(w, r, "/account")
}

func (s *server) handleEndSession(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	h, ok := parseSessionID(r.PostForm.Get("session"))
	if !ok {
		s.pageError(w, r, sess, errNotFound)
		return
	}
	if h == sess.hash {
		s.handleLogout(w, r, nil)
		return
	}
	if err := s.store.DeleteSession(s.actorOf(r, sess.user, viaPage), h, sess.user.ID); err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	s.log.Info("session ended", "user_id", sess.user.ID, "remote", s.clientAddr(r))
	s.setFlash(w, r, "That session is signed out.")
	seeOther(w, r, "/account")
}

func (s *server) handleEndOtherSessions(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	n, err := s.store.EndOtherSessions(s.actorOf(r, sess.user, viaPage), sess.user.ID, sess.hash)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	s.setFlash(w, r, capitalize(plural(n, "other session"))+" signed out.")
	seeOther(w, r, "/account")
}
