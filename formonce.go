package main

import (
	"crypto/rand"
	"errors"
	"sync"
	"time"
)

// One token per form. Every form that makes a secret (create, rotate)
// carries a fresh random key, form_key. The first POST with a key makes
// the token and is answered 303 to /secret, which shows the secret once
// and forgets it. A POST whose key was used before (a reload, a resent
// form, a double click) makes nothing and goes where the first one went.
// The used keys are claimed through the store too (ClaimFormKey), so a
// form resent to another instance makes nothing either. The secret waits
// in this process's memory and, for a GET /secret that another instance
// answers, in the cookie tokend_secret, encrypted under a key derived
// from the session cookie's secret, which the server never stores
// (formcookie.go): never in a URL, the database or a log. A secret not
// shown within secretWait is lost; rotating the token gives a new one.

const (
	formKeyLen = 26 // what rand.Text returns
	// secretWait is how long a new secret waits to be shown.
	secretWait = 10 * time.Minute
	// formKeyMemory is how long a used key is remembered, and
	// formKeysPerSession how many of them at most, oldest forgotten first.
	formKeyMemory      = time.Hour
	formKeysPerSession = 32
	// formSessions bounds the sessions remembered; past it those idle
	// longest are forgotten first.
	formSessions = 10_000
)

// newFormKey returns a fresh key for a form: 128 random bits in base32.
func newFormKey() string {
	return rand.Text()
}

// validFormKey reports whether k has the shape newFormKey gives.
func validFormKey(k string) bool {
	if len(k) != formKeyLen {
		return false
	}
	for _, c := range k {
		if !('A' <= c && c <= 'Z' || '2' <= c && c <= '7') {
			return false
		}
	}
	return true
}

// newSecret is a secret a form made, waiting to be shown once.
type newSecret struct {
	token   tokenRecord
	secret  string
	rotated bool
	key     string // the form that made it
	at      time.Time
}

// sessionForms is what formOnce keeps for one session.
type sessionForms struct {
	work   sync.Mutex // held while a form of the session makes its token
	keys   []usedKey  // oldest first
	secret *newSecret // waiting to be shown, or nil
	seen   time.Time  // last use, for forgetting idle sessions
}

type usedKey struct {
	key string
	at  time.Time
}

// formOnce remembers, per session, the form keys used and the secret
// waiting to be shown. Build it with newFormOnce; it is safe for
// concurrent use and bounded in memory.
type formOnce struct {
	mu       sync.Mutex // guards sessions and every sessionForms' keys, secret and seen
	sessions map[sessionHash]*sessionForms
}

func newFormOnce() *formOnce {
	return &formOnce{sessions: make(map[sessionHash]*sessionForms)}
}

// entry returns what is kept for session h, making room for it if new.
func (f *formOnce) entry(h sessionHash, now time.Time) *sessionForms {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.sessions[h]
	if e == nil {
		if len(f.sessions) >= formSessions {
			f.forgetIdle(now)
		}
		e = &sessionForms{}
		f.sessions[h] = e
	}
	e.seen = now
	return e
}

// forgetIdle forgets the sessions idle for longer than formKeyMemory, or
// failing that the one idle longest. f.mu must be held.
func (f *formOnce) forgetIdle(now time.Time) {
	var oldest sessionHash
	var oldestSeen time.Time
	for h, e := range f.sessions {
		if now.Sub(e.seen) > formKeyMemory {
			delete(f.sessions, h)
			continue
		}
		if oldestSeen.IsZero() || e.seen.Before(oldestSeen) {
			oldest, oldestSeen = h, e.seen
		}
	}
	if len(f.sessions) >= formSessions {
		delete(f.sessions, oldest)
	}
}

// once runs make for the form of session h with key, unless a form with
// that key has made its token already; it reports whether make ran. A
// session's forms run one at a time, so that two copies of one form sent
// together make one token. When make succeeds the key is used up and its
// secret waits for take; when it fails the key stays free.
func (f *formOnce) once(h sessionHash, key string, now time.Time, make func() (newSecret, error)) (bool, error) {
	e := f.entry(h, now)
	e.work.Lock()
	defer e.work.Unlock()
	if f.used(e, key, now) {
		return false, nil
	}
	s, err := make()
	if errors.Is(err, errFormKeyClaimed) {
		f.remember(e, key, now)
		return false, nil
	}
	if err != nil {
		return true, err
	}
	s.key, s.at = key, now
	f.remember(e, key, now)
	f.mu.Lock()
	defer f.mu.Unlock()
	e.secret = &s
	return true, nil
}

// errFormKeyClaimed is what once's make returns when the store says
// another instance (or this one, before a restart) used the key already.
var errFormKeyClaimed = errors.New("form key used before")

// remember records key as used by e.
func (f *formOnce) remember(e *sessionForms, key string, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(e.keys) == formKeysPerSession {
		e.keys = append(e.keys[:0], e.keys[1:]...)
	}
	e.keys = append(e.keys, usedKey{key, now})
}

// used reports whether key made a token within formKeyMemory.
func (f *formOnce) used(e *sessionForms, key string, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, k := range e.keys {
		if k.key == key && now.Sub(k.at) < formKeyMemory {
			return true
		}
	}
	return false
}

// waiting reports whether the secret that key made still waits to be shown.
func (f *formOnce) waiting(h sessionHash, key string, now time.Time) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.sessions[h]
	return e != nil && e.secret != nil && e.secret.key == key && now.Sub(e.secret.at) < secretWait
}

// take returns the secret waiting for session h and forgets it, or nil.
// With peek it returns the secret and keeps it waiting.
func (f *formOnce) take(h sessionHash, now time.Time, peek bool) *newSecret {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.sessions[h]
	if e == nil || e.secret == nil {
		return nil
	}
	s := e.secret
	if !peek {
		e.secret = nil
	}
	if now.Sub(s.at) >= secretWait {
		return nil
	}
	return s
}

// forget drops everything kept for session h, when it ends.
func (f *formOnce) forget(h sessionHash) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.sessions, h)
}
