package main

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// Second factors, the part that is not passkeys: TOTP (RFC 6238: SHA-1,
// six digits, 30-second steps, one step of drift either way, each step
// accepted once), recovery codes, and the key file that seals TOTP secrets.
// The store's side is tfastore.go; the pages are tfapages.go.

const (
	totpDigits     = 6
	totpPeriod     = 30 // seconds
	totpSecretSize = 20 // bytes: 160 bits, as RFC 4226 recommends
	totpDrift      = 1  // steps accepted either side of now
	// recoveryCodeBytes is the entropy of a recovery code: 80 bits, 16
	// base32 characters. That much makes a fast hash (SHA-256) enough.
	recoveryCodeBytes = 10
	keyFileSize       = 32 // an AES-256 key
	// pendingSignInFor is how long the second step may wait after the
	// password was right.
	pendingSignInFor = 5 * time.Minute
	// totpEnrolFor is how long a new TOTP secret waits for its first code.
	totpEnrolFor = 15 * time.Minute
)

// totpEncoding is the base32 of authenticator apps: no padding.
var totpEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// errNoKeyFile refuses TOTP enrolment when no key file is configured (the
// PostgreSQL engine has no default).
var errNoKeyFile = clientError(http.StatusConflict,
	"Authenticator apps are not available: the operator has not configured a key file (-key-file) to protect their secrets")

// errUsesSecondFactor refuses a password alone for an account with a
// second factor (HTTP Basic on the API).
var errUsesSecondFactor = &httpError{status: http.StatusForbidden,
	detail: "this account uses a second factor: create the token in the page, or with an existing token"}

// ---- the key file ----

// tfaKeys holds the key file: the key that seals TOTP secrets. With
// create, a missing file is created (0600, 32 random bytes) when a key is
// first needed; without, a missing file is an error. path "" means none.
type tfaKeys struct {
	path   string
	create bool
	mu     sync.Mutex
	key    []byte
}

// newTFAKeys returns the key file of cfg: -key-file, or for bbolt the
// database's path with ".key" appended, created when first needed. A file
// that exists is read now, so that a bad one stops the start.
func newTFAKeys(cfg config) (*tfaKeys, error) {
	k := &tfaKeys{path: cfg.KeyFile}
	if k.path == "" && !isPostgresURL(cfg.DB) {
		k.path, k.create = cfg.DB+".key", true
	} else if k.path != "" && !isPostgresURL(cfg.DB) {
		k.create = true
	}
	if k.path == "" {
		return k, nil
	}
	if _, err := os.Stat(k.path); err == nil || !k.create {
		if _, err := k.get(); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// configured reports whether a key file is configured (it may not exist
// yet).
func (k *tfaKeys) configured() bool { return k.path != "" }

// get returns the key, reading or creating the file the first time;
// errNoKeyFile when none is configured.
func (k *tfaKeys) get() ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.key != nil {
		return k.key, nil
	}
	if k.path == "" {
		return nil, errNoKeyFile
	}
	key, err := os.ReadFile(k.path)
	if errors.Is(err, os.ErrNotExist) && k.create {
		key = make([]byte, keyFileSize)
		rand.Read(key)
		err = writeKeyFile(k.path, key)
		if errors.Is(err, os.ErrExist) { // another process made it first
			key, err = os.ReadFile(k.path)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("key file %q: %w", k.path, err)
	}
	if len(key) != keyFileSize {
		return nil, fmt.Errorf("key file %q holds %d bytes; want %d random bytes", k.path, len(key), keyFileSize)
	}
	k.key = key
	return key, nil
}

// writeKeyFile creates path, readable by its owner only, holding key; it
// fails if the file exists.
func writeKeyFile(path string, key []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(key); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

// derivedAEAD returns AES-256-GCM under HMAC-SHA256(key, label).
func derivedAEAD(key []byte, label string) cipher.AEAD {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(label))
	block, err := aes.NewCipher(mac.Sum(nil))
	if err != nil {
		panic(err) // a 32-byte key always makes a cipher
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

// totpAD is the additional data of user's sealed secret: a sealed secret
// moved to another user does not open.
func totpAD(user uint64) []byte {
	return append([]byte("tokend totp v1 "), itob(user)...)
}

// sealTOTP seals secret for user under the key file.
func (k *tfaKeys) sealTOTP(user uint64, secret []byte) ([]byte, error) {
	key, err := k.get()
	if err != nil {
		return nil, err
	}
	aead := derivedAEAD(key, "tokend totp secrets v1")
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	return aead.Seal(nonce, nonce, secret, totpAD(user)), nil
}

// openTOTP opens user's sealed secret.
func (k *tfaKeys) openTOTP(user uint64, sealed []byte) ([]byte, error) {
	key, err := k.get()
	if err != nil {
		return nil, err
	}
	aead := derivedAEAD(key, "tokend totp secrets v1")
	if len(sealed) < aead.NonceSize() {
		return nil, errors.New("sealed TOTP secret too short")
	}
	secret, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], totpAD(user))
	if err != nil {
		return nil, fmt.Errorf("open TOTP secret of user %d (is it the key file it was sealed with?): %w", user, err)
	}
	return secret, nil
}

// ---- TOTP ----

// totpStep returns the time step of t.
func totpStep(t time.Time) int64 { return t.Unix() / totpPeriod }

// totpCode returns the code of secret at step (RFC 4226 §5.3 dynamic
// truncation of HMAC-SHA1 over the big-endian step).
func totpCode(secret []byte, step int64) string {
	mac := hmac.New(sha1.New, secret)
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], uint64(step))
	mac.Write(msg[:])
	sum := mac.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	v := binary.BigEndian.Uint32(sum[off:]) & 0x7fffffff
	return fmt.Sprintf("%06d", v%1_000_000)
}

// matchTOTP returns the step within totpDrift of now whose code is code,
// checking every one of them in constant time, or false.
func matchTOTP(secret []byte, code string, now time.Time) (int64, bool) {
	found, ok := int64(0), false
	at := totpStep(now)
	for step := at - totpDrift; step <= at+totpDrift; step++ {
		if subtle.ConstantTimeCompare([]byte(totpCode(secret, step)), []byte(code)) == 1 && !ok {
			found, ok = step, true
		}
	}
	return found, ok
}

// normalizeCode strips what people type around a code: spaces and dashes.
func normalizeCode(code string) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' || r == '\t' {
			return -1
		}
		if r >= 'a' && r <= 'z' {
			return r - 'a' + 'A'
		}
		return r
	}, code)
}

// isTOTPCode reports whether code (normalized) has the shape of a TOTP code.
func isTOTPCode(code string) bool {
	if len(code) != totpDigits {
		return false
	}
	for _, c := range code {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// totpURI is the otpauth URI an authenticator app reads from the QR code.
func totpURI(issuer, name string, secret []byte) string {
	label := pathEscapeLabel(issuer) + ":" + pathEscapeLabel(name)
	return "otpauth://totp/" + label + "?secret=" + totpEncoding.EncodeToString(secret) +
		"&issuer=" + pathEscapeLabel(issuer) + "&algorithm=SHA1&digits=6&period=30"
}

// pathEscapeLabel escapes a label of the otpauth URI: authenticator apps
// want %20, not +.
func pathEscapeLabel(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// groupSecret shows a base32 secret in groups of four for typing.
func groupSecret(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i += 4 {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(s[i:min(i+4, len(s))])
	}
	return b.String()
}

// ---- recovery codes ----

// newRecoveryCodes returns recoveryCodeCount codes, as shown (groups of
// four, lower case), and their hashes, as stored.
func newRecoveryCodes() ([]string, []tokenHash) {
	codes := make([]string, recoveryCodeCount)
	hashes := make([]tokenHash, recoveryCodeCount)
	for i := range codes {
		b := make([]byte, recoveryCodeBytes)
		rand.Read(b)
		raw := totpEncoding.EncodeToString(b)
		codes[i] = strings.ToLower(strings.ReplaceAll(groupSecret(raw), " ", "-"))
		hashes[i] = hashRecoveryCode(raw)
	}
	return codes, hashes
}

// hashRecoveryCode returns what the store keeps of a recovery code typed
// as code, however it was grouped or cased.
func hashRecoveryCode(code string) tokenHash {
	return sha256.Sum256([]byte(normalizeCode(code)))
}

// ---- checking a second factor ----

// errBadCode answers a wrong TOTP or recovery code.
var errBadCode = clientError(http.StatusUnauthorized, "That code is not right, or was used already.")

// checkCode checks a TOTP code or a recovery code that u typed, counting
// the attempt against u's sign-in throttle. A TOTP code is accepted once;
// a recovery code is used up. It reports whether a recovery code was used
// and how many are left.
func (s *server) checkCode(r *http.Request, u userRecord, code string, by actor) (recovery bool, left int, err error) {
	addr := s.clientAddr(r)
	account := signInAccount{user: u.ID, name: u.Name}
	now := s.now()
	wait, err := s.throttle.begin(account, addr, now)
	if err != nil {
		return false, 0, fmt.Errorf("count second-factor attempt: %w", err)
	}
	if wait > 0 {
		s.log.Info("second factor throttled", "user_id", u.ID, "remote", addr)
		s.recordSecondFactorFailed(by, u, outcomeThrottled)
		return false, 0, &throttledError{wait: wait}
	}
	code = normalizeCode(code)
	ok := false
	switch {
	case isTOTPCode(code):
		ok, err = s.checkTOTP(u.ID, code, now)
	case len(code) == totpEncoding.EncodedLen(recoveryCodeBytes):
		left, err = s.store.UseRecoveryCode(by, u.ID, hashRecoveryCode(code))
		ok, recovery = err == nil, err == nil
		if errors.Is(err, errNotFound) {
			err = nil
		}
	}
	if err != nil {
		s.throttleLeft(s.throttle.abandoned(account, addr, now))
		return false, 0, err
	}
	if !ok {
		s.log.Info("second factor failed", "user_id", u.ID, "remote", addr)
		s.recordSecondFactorFailed(by, u, outcomeFailed)
		return false, 0, errBadCode
	}
	s.throttleLeft(s.throttle.succeeded(u.ID, addr, now))
	if recovery {
		s.log.Info("recovery code used", "user_id", u.ID, "left", left, "remote", addr)
	}
	return recovery, left, nil
}

// recordSecondFactorFailed records a refused second factor of u. The
// answer does not wait for it: a log that cannot be written is logged.
func (s *server) recordSecondFactorFailed(by actor, u userRecord, outcome string) {
	e := newAuditEvent(by, kindSecondFactorFailed).about(u)
	e.Outcome = outcome
	if err := s.store.RecordEvents(e); err != nil {
		s.log.Warn("record security event", "kind", e.Kind, "err", err)
	}
}

// checkTOTP reports whether code is user's for a step near now not used
// before, and records its step as used.
func (s *server) checkTOTP(user uint64, code string, now time.Time) (bool, error) {
	rec, err := s.store.TOTPOf(user)
	if errors.Is(err, errNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	secret, err := s.tfaKeys.openTOTP(user, rec.Sealed)
	if err != nil {
		return false, err
	}
	step, ok := matchTOTP(secret, code, now)
	if !ok || step <= rec.LastStep {
		return false, nil
	}
	switch err := s.store.UseTOTPStep(user, step); {
	case errors.Is(err, errStepUsed):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}

// ---- the pending sign-in ----

// The second step: after the right password for an account with a second
// factor, the browser gets no session but the cookie tokend_pending, which
// names the user and lives pendingSignInFor, sealed with AES-256-GCM under
// a key derived from the key file (or, with none, from a key this process
// drew at start-up: several instances then need the key file). The second
// step reads it, and only a right second factor starts the session.
const pendingCookieName = "tokend_pending"

// pendingSignIn is what the cookie holds, sealed.
type pendingSignIn struct {
	User uint64 `json:"u"`
	// Changed is the user's PasswordChangedAt: a password changed since
	// voids the cookie.
	Changed int64  `json:"c"`
	Nonce   []byte `json:"n"` // sets each sign-in apart (the passkey challenge binds to it)
	Next    string `json:"x"`
	At      int64  `json:"at"` // Unix nanoseconds
}

// newPendingAEAD returns the cipher of pending sign-in cookies: under the
// key file if newTFAKeys read one, else under a key drawn now.
func newPendingAEAD(keys *tfaKeys) cipher.AEAD {
	keys.mu.Lock()
	key := keys.key
	keys.mu.Unlock()
	if key == nil {
		key = make([]byte, keyFileSize)
		rand.Read(key)
	}
	return derivedAEAD(key, "tokend pending sign-in v1")
}

// setPendingSignIn starts the second step for u.
func (s *server) setPendingSignIn(w http.ResponseWriter, r *http.Request, u userRecord, next string) error {
	nonce := make([]byte, 16)
	rand.Read(nonce)
	plain, err := json.Marshal(pendingSignIn{User: u.ID, Changed: unixNano(u.PasswordChangedAt), Nonce: nonce, Next: next, At: s.now().UnixNano()})
	if err != nil {
		return err
	}
	n := make([]byte, s.pendingAEAD.NonceSize())
	rand.Read(n)
	sealed := s.pendingAEAD.Seal(n, n, plain, []byte(pendingCookieName))
	s.setCookieSameSite(w, r, pendingCookieName, totpEncoding.EncodeToString(sealed), pendingSignInFor, http.SameSiteStrictMode)
	return nil
}

// pendingSignInOf returns the pending sign-in of r and its user, or false
// when there is none that is live.
func (s *server) pendingSignInOf(r *http.Request) (pendingSignIn, userRecord, bool, error) {
	var p pendingSignIn
	b, err := totpEncoding.DecodeString(s.cookieValue(r, pendingCookieName))
	size := s.pendingAEAD.NonceSize()
	if err != nil || len(b) < size {
		return p, userRecord{}, false, nil
	}
	plain, err := s.pendingAEAD.Open(nil, b[:size], b[size:], []byte(pendingCookieName))
	if err != nil || json.Unmarshal(plain, &p) != nil {
		return p, userRecord{}, false, nil
	}
	if age := s.now().Sub(time.Unix(0, p.At)); age < 0 || age >= pendingSignInFor {
		return p, userRecord{}, false, nil
	}
	u, err := s.store.UserByID(p.User)
	if errors.Is(err, errNotFound) {
		return p, userRecord{}, false, nil
	}
	if err != nil {
		return p, userRecord{}, false, err
	}
	if unixNano(u.PasswordChangedAt) != p.Changed {
		return p, userRecord{}, false, nil
	}
	return p, u, true, nil
}

// clearPendingSignIn deletes the cookie.
func (s *server) clearPendingSignIn(w http.ResponseWriter, r *http.Request) {
	s.setCookieSameSite(w, r, pendingCookieName, "", -1, http.SameSiteStrictMode)
}
