package main

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"time"
)

// The secret a token form made crosses instances in the browser: the
// answer to the form sets the cookie tokend_secret, which holds it sealed
// with AES-256-GCM under a key derived from the session cookie's secret.
// The server keeps only that secret's hash, so neither the database nor
// anyone without the session cookie can open it. GET /secret opens it on
// whichever instance answers, and always clears it.
//
// The cookie is Path=/ (a __Host- cookie must be, and a resent form must
// find it) and SameSite=Strict, and lives secretWait.

const secretCookieName = "tokend_secret"

// secretCookieLabel sets the cookie's key apart from any other use of the
// session secret.
const secretCookieLabel = "tokend secret cookie v1"

// sealedSecret is what the cookie holds, sealed.
type sealedSecret struct {
	Token   tokenRecord `json:"t"`
	Secret  string      `json:"s"`
	Rotated bool        `json:"r,omitempty"`
	Key     string      `json:"k"`
	At      int64       `json:"at"` // Unix nanoseconds
}

// secretCookieAEAD returns the cipher of the cookie for the session whose
// cookie holds sessionSecret.
func secretCookieAEAD(sessionSecret string) cipher.AEAD {
	mac := hmac.New(sha256.New, []byte(sessionSecret))
	mac.Write([]byte(secretCookieLabel))
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

// sealSecret returns the cookie value holding n for the session whose
// cookie holds sessionSecret.
func sealSecret(sessionSecret string, n *newSecret) (string, error) {
	plain, err := json.Marshal(sealedSecret{Token: n.token, Secret: n.secret, Rotated: n.rotated, Key: n.key, At: n.at.UnixNano()})
	if err != nil {
		return "", err
	}
	aead := secretCookieAEAD(sessionSecret)
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	return base64.RawURLEncoding.EncodeToString(aead.Seal(nonce, nonce, plain, []byte(secretCookieName))), nil
}

// openSecret returns the secret value holds for the session whose cookie
// holds sessionSecret, or nil when it does not open under that session or
// has waited secretWait.
func openSecret(sessionSecret, value string, now time.Time) *newSecret {
	if sessionSecret == "" || value == "" {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(value)
	aead := secretCookieAEAD(sessionSecret)
	if err != nil || len(b) < aead.NonceSize() {
		return nil
	}
	plain, err := aead.Open(nil, b[:aead.NonceSize()], b[aead.NonceSize():], []byte(secretCookieName))
	if err != nil {
		return nil
	}
	var c sealedSecret
	if json.Unmarshal(plain, &c) != nil {
		return nil
	}
	at := time.Unix(0, c.At)
	if age := now.Sub(at); age < 0 || age >= secretWait {
		return nil
	}
	return &newSecret{token: c.Token, secret: c.Secret, rotated: c.Rotated, key: c.Key, at: at}
}

// setSecretCookie sets the cookie holding n for the session of r. Failing
// to, it sets nothing: the secret still waits in this instance's memory.
func (s *server) setSecretCookie(w http.ResponseWriter, r *http.Request, n *newSecret) {
	v, err := sealSecret(s.cookieValue(r, sessionCookieName), n)
	if err != nil {
		s.log.Warn("cannot seal a new secret for its cookie", "err", err)
		return
	}
	s.setCookieSameSite(w, r, secretCookieName, v, secretWait, http.SameSiteStrictMode)
}

// secretFromCookie returns the secret the cookie of r holds for its
// session, or nil.
func (s *server) secretFromCookie(r *http.Request, now time.Time) *newSecret {
	return openSecret(s.cookieValue(r, sessionCookieName), s.cookieValue(r, secretCookieName), now)
}

// clearSecretCookie deletes the cookie.
func (s *server) clearSecretCookie(w http.ResponseWriter, r *http.Request) {
	s.setCookieSameSite(w, r, secretCookieName, "", -1, http.SameSiteStrictMode)
}

// shownMark is what the session claims (ClaimFormKey) when it shows the
// secret that form key made: whichever instance shows it, it shows once.
func shownMark(key string) string {
	return "shown " + key
}
