package main

// The device authorization grant (RFC 8628), for command-line tools and
// devices without a browser: the tool asks for a device code and a user
// code, the person types the user code on tokend's /device page, signed
// in, and approves; meanwhile the tool polls the token endpoint.

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/julienschmidt/httprouter"
)

const (
	// userCodeAlphabet has no vowels (no words) and none of the letters
	// people confuse with each other or with digits (RFC 8628 §6.1).
	userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"
	userCodeLen      = 8 // 20^8 ≈ 2^34.6 codes
	deviceCodeTTL    = 10 * time.Minute
	devicePollEvery  = 5 * time.Second
	// userCodeTries is how many times a new user code is drawn when it
	// collides with one in flight.
	userCodeTries = 5
)

// userCodeLimit bounds the wrong user codes one person may type (RFC 8628
// §5.1): 10 at once, then one a minute. With codes living 10 minutes that
// leaves a guesser about 2^-30 of a chance per code in flight.
var userCodeLimit = throttleRule{burst: 10, every: time.Minute}

// userCodeGuesses counts the wrong user codes each user typed, in memory:
// bounded by the number of users, forgotten as the buckets drain. Each
// instance counts its own.
type userCodeGuesses struct {
	mu    sync.Mutex
	users map[uint64]bucket
}

func newUserCodeGuesses() *userCodeGuesses {
	return &userCodeGuesses{users: make(map[uint64]bucket)}
}

// wait returns how long user must wait before typing another code; 0 if
// they may now.
func (g *userCodeGuesses) wait(user uint64, now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.users[user].wait(userCodeLimit, now)
}

// wrong counts a wrong code typed by user.
func (g *userCodeGuesses) wrong(user uint64, now time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	add(g.users, user, userCodeLimit, now, 1)
}

// newUserCode returns a random user code, as stored (no dash).
func newUserCode() (string, error) {
	b := make([]byte, 0, userCodeLen)
	var buf [32]byte
	for len(b) < userCodeLen {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("read random bytes: %w", err)
		}
		for _, r := range buf {
			// 240 is the largest multiple of 20 that fits a byte:
			// rejecting the rest keeps every letter equally likely.
			if r < 240 && len(b) < userCodeLen {
				b = append(b, userCodeAlphabet[r%20])
			}
		}
	}
	return string(b), nil
}

// showUserCode returns code as people see it: XXXX-XXXX.
func showUserCode(code string) string { return code[:4] + "-" + code[4:] }

// normalizeUserCode returns what a person typed as a stored user code:
// upper case, without spaces and dashes. ok is false when it cannot be a
// user code at all.
func normalizeUserCode(typed string) (code string, ok bool) {
	code = strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' || r == '\t' {
			return -1
		}
		return r
	}, strings.ToUpper(typed))
	if len(code) != userCodeLen {
		return "", false
	}
	for i := range len(code) {
		if !strings.ContainsRune(userCodeAlphabet, rune(code[i])) {
			return "", false
		}
	}
	return code, true
}

// deviceAuthResponse is the RFC 8628 §3.2 answer.
type deviceAuthResponse struct {
	DeviceCode              string `json:"device_code"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURIComplete string `json:"verification_uri_complete"`
	ExpiresIn               int64  `json:"expires_in"`
	Interval                int64  `json:"interval"`
}

func (s *server) handleDeviceAuthorization(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	answer, err := s.startDeviceAuth(w, r)
	if err != nil {
		s.writeOAuthError(w, r, err)
		return
	}
	s.writeNoStoreJSON(w, r, http.StatusOK, answer)
}

func (s *server) startDeviceAuth(w http.ResponseWriter, r *http.Request) (deviceAuthResponse, error) {
	if err := parseOAuthForm(w, r); err != nil {
		return deviceAuthResponse{}, err
	}
	c, err := s.authenticateClient(r)
	if err != nil {
		return deviceAuthResponse{}, err
	}
	if !c.Device {
		return deviceAuthResponse{}, oauthErr("unauthorized_client", "this client may not use the device authorization grant")
	}
	scopes, err := s.requestedScopes(r.PostForm.Get("scope"))
	if err != nil {
		return deviceAuthResponse{}, err
	}
	dev, err := newOAuthSecret()
	if err != nil {
		return deviceAuthResponse{}, err
	}
	now := s.now()
	rec := deviceAuthRecord{
		Client: c.ID, Scopes: scopes, CreatedAt: now, ExpiresAt: now.Add(deviceCodeTTL),
		Interval: devicePollEvery, State: devicePending,
	}
	var uc string
	for try := 0; ; try++ {
		if uc, err = newUserCode(); err != nil {
			return deviceAuthResponse{}, err
		}
		err = s.store.CreateDeviceAuth(hashToken(dev), hashToken(uc), rec)
		if !errors.Is(err, errCodeTaken) || try == userCodeTries {
			break
		}
	}
	if err != nil {
		return deviceAuthResponse{}, err
	}
	s.log.Info("device authorization started", "client", c.ID)
	base := s.issuer(r)
	return deviceAuthResponse{
		DeviceCode:              dev,
		UserCode:                showUserCode(uc),
		VerificationURI:         base + "/device",
		VerificationURIComplete: base + "/device?user_code=" + url.QueryEscape(showUserCode(uc)),
		ExpiresIn:               int64(deviceCodeTTL / time.Second),
		Interval:                int64(devicePollEvery / time.Second),
	}, nil
}

// exchangeDeviceCode answers a poll of the token endpoint (RFC 8628 §3.4,
// §3.5): authorization_pending until the person decides, slow_down when
// the poll comes too soon, access_denied, expired_token, or the tokens,
// once.
func (s *server) exchangeDeviceCode(r *http.Request, c clientRecord) (tokenResponse, error) {
	code, err := required(r, "device_code")
	if err != nil {
		return tokenResponse{}, err
	}
	if !c.Device {
		return tokenResponse{}, oauthErr("unauthorized_client", "this client may not use the device authorization grant")
	}
	h := hashToken(code)
	now := s.now()
	d, slowDown, err := s.store.PollDeviceAuth(h, now)
	if errors.Is(err, errNotFound) {
		return tokenResponse{}, oauthErr("invalid_grant", "the device code is unknown")
	}
	if err != nil {
		return tokenResponse{}, err
	}
	switch {
	case d.Client != c.ID:
		return tokenResponse{}, oauthErr("invalid_grant", "the device code was issued to another client")
	case d.State == deviceIssued:
		// Redeeming again revokes what the first redemption issued.
	case !now.Before(d.ExpiresAt):
		return tokenResponse{}, oauthErr("expired_token", "the device code has expired: start again")
	case d.State == deviceDenied:
		return tokenResponse{}, oauthErr("access_denied", "the user denied the request")
	case d.State == devicePending && slowDown:
		return tokenResponse{}, oauthErr("slow_down", "polling too fast: wait 5 seconds more between polls")
	case d.State == devicePending:
		return tokenResponse{}, oauthErr("authorization_pending", "the user has not answered yet")
	}
	issue, answer, err := s.newIssue(c, d.User, d.Approved, now)
	if err != nil {
		return tokenResponse{}, err
	}
	g, t, err := s.store.RedeemDeviceAuth(s.actorOf(r, userRecord{}, viaOAuth), h, now, issue)
	if err != nil {
		if errors.Is(err, errCodeUsed) {
			s.log.Warn("device code used twice: its grant is revoked", "client", c.ID, "grant_id", d.Grant)
		}
		return tokenResponse{}, redeemError(err, "device code")
	}
	s.log.Info("oauth tokens issued", "grant_type", "device_code", "client", c.ID, "user_id", g.User, "grant_id", g.ID, "token_id", t.ID)
	return answer, nil
}

// ---- the /device page ----

// devicePage is the data of device.html.
type devicePage struct {
	UserCode string
}

func (s *server) showDevicePage(w http.ResponseWriter, r *http.Request, sess *session, status int, code, errMsg string) {
	s.renderPage(w, r, sess, status, "device.html", &page{Title: "Connect a device", Error: errMsg, ErrorAt: "device",
		Data: devicePage{UserCode: code}})
}

func (s *server) handleDevicePage(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	s.showDevicePage(w, r, sess, http.StatusOK, truncate(r.URL.Query().Get("user_code"), 20), "")
}

// deviceRequest finds the pending request of the user code typed, counting
// a wrong code against the person (userCodeGuesses). Its errors are
// httpErrors to show on the page, or the store's.
func (s *server) deviceRequest(sess *session, typed string) (deviceAuthRecord, tokenHash, error) {
	code, ok := normalizeUserCode(typed)
	if !ok {
		return deviceAuthRecord{}, tokenHash{}, clientError(http.StatusBadRequest, "A code is 8 letters, such as BCDF-GHJK: check what your device shows")
	}
	now := s.now()
	if wait := s.userCodes.wait(sess.user.ID, now); wait > 0 {
		return deviceAuthRecord{}, tokenHash{}, &throttledError{wait: wait}
	}
	uc := hashToken(code)
	d, err := s.store.DeviceAuthByUserCode(uc)
	switch {
	case errors.Is(err, errNotFound):
		s.userCodes.wrong(sess.user.ID, now)
		s.log.Info("wrong device user code", "user_id", sess.user.ID)
		return d, uc, clientError(http.StatusBadRequest, "That code is not right: check what your device shows")
	case err != nil:
		return d, uc, err
	case !now.Before(d.ExpiresAt):
		return d, uc, clientError(http.StatusBadRequest, "That code has expired: start again on your device to get a new one")
	case d.State != devicePending:
		return d, uc, clientError(http.StatusConflict, "That code was answered already")
	}
	return d, uc, nil
}

// deviceFormFailed shows the code form again with what went wrong.
func (s *server) deviceFormFailed(w http.ResponseWriter, r *http.Request, sess *session, typed string, err error) {
	var te *throttledError
	if errors.As(err, &te) {
		w.Header().Set("Retry-After", te.retryAfter())
		s.showDevicePage(w, r, sess, http.StatusTooManyRequests, typed, "Too many wrong codes. Try again in "+waitText(te.wait)+".")
		return
	}
	s.formFailed(w, r, sess, err, func(status int, msg string) { s.showDevicePage(w, r, sess, status, typed, msg) })
}

func (s *server) handleDeviceCode(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	typed := truncate(r.PostForm.Get("user_code"), 20)
	d, _, err := s.deviceRequest(sess, typed)
	if err != nil {
		s.deviceFormFailed(w, r, sess, typed, err)
		return
	}
	c, err := s.store.ClientByID(d.Client)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	code, _ := normalizeUserCode(typed)
	offered, refused := scopesFor(d.Scopes, sess.user)
	s.renderPage(w, r, sess, http.StatusOK, "consent.html", &page{Title: "Authorize " + c.Name,
		Data: consentPage{Client: c.Name, Action: "/device/approve", Fields: []hiddenField{{"user_code", showUserCode(code)}},
			Scopes: s.consentScopes(offered), Refused: refused, UserCode: showUserCode(code)}})
}

func (s *server) handleDeviceDecision(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	typed := truncate(r.PostForm.Get("user_code"), 20)
	d, uc, err := s.deviceRequest(sess, typed)
	if err != nil {
		s.deviceFormFailed(w, r, sess, typed, err)
		return
	}
	approve := r.PostForm.Get("decision") == "approve"
	var approved []string
	if approve {
		offered, _ := scopesFor(d.Scopes, sess.user)
		if approved, err = approvedScopes(r.PostForm, offered); err != nil {
			s.pageError(w, r, sess, err)
			return
		}
		approved, _ = s.scopes.normalize(approved)
		if approved == nil {
			approved = []string{}
		}
	}
	err = s.store.DecideDeviceAuth(uc, sess.user.ID, approve, approved, s.now())
	switch {
	case errors.Is(err, errCodeUsed):
		err = clientError(http.StatusConflict, "That code was answered already")
	case errors.Is(err, errTokenExpired):
		err = clientError(http.StatusBadRequest, "That code has expired: start again on your device to get a new one")
	}
	if err != nil {
		s.deviceFormFailed(w, r, sess, typed, err)
		return
	}
	s.log.Info("device authorization decided", "client", d.Client, "user_id", sess.user.ID, "approved", approve)
	if approve {
		s.renderMessage(w, r, sess, http.StatusOK, "Device connected", "You approved it. Go back to your device: it carries on by itself.")
		return
	}
	s.renderMessage(w, r, sess, http.StatusOK, "Request denied", "The device gets nothing. If you did not start this, nothing more is needed.")
}
