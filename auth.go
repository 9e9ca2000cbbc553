package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"
)

// argonParams are argon2id's cost parameters. The defaults meet OWASP's
// recommendation (19 MiB, two passes, one lane).
type argonParams struct {
	Memory  uint32 // KiB
	Time    uint32
	Threads uint8
}

var defaultArgonParams = argonParams{Memory: 19 * 1024, Time: 2, Threads: 1}

const (
	argonSaltLen = 16
	argonKeyLen  = 32

	minPasswordLen = 8
	maxPasswordLen = 1024 // bytes; bounds hashing work, not a truncation
)

// Password policy errors; their text is shown to people as is.
var (
	errPasswordShort   = fmt.Errorf("password must be at least %d characters", minPasswordLen)
	errPasswordLong    = fmt.Errorf("password must be at most %d bytes", maxPasswordLen)
	errPasswordCommon  = errors.New("password is one of the most common passwords; choose another")
	errPasswordInvalid = errors.New("password must be valid UTF-8 without control characters")
	errBadPasswordHash = errors.New("malformed password hash")
)

// passwordHasher hashes and verifies passwords with argon2id. It bounds how
// many hashes run at once: each holds Memory KiB, and a burst of sign-ins
// must not take the machine's memory with it.
type passwordHasher struct {
	params argonParams
	slots  chan struct{}
	// maxWaiting bounds the callers waiting for a slot (0: no bound). Past
	// it a caller fails at once with errHashBusy instead of queueing: a
	// burst then costs neither memory nor minutes of latency.
	maxWaiting int64
	waiting    atomic.Int64
	running    atomic.Int64
	peak       atomic.Int64  // most hashes that ever ran at once
	stopped    chan struct{} // closed by stop
	stopOnce   sync.Once
}

// errHashBusy is returned when too many callers already wait to hash.
var errHashBusy = errors.New("too many password hashes waiting")

// errHashStopped is returned once the server shuts down to callers that
// wait for a slot, and to later ones. It is an errHashBusy, answered 503
// with Retry-After like one.
var errHashStopped = fmt.Errorf("%w: the server is shutting down", errHashBusy)

// defaultHashConcurrency is the default of -hash-concurrency on a machine
// that runs procs goroutines at once (GOMAXPROCS): one fewer, and at least
// one. A hash keeps a core busy for tens of milliseconds, so with as many
// hashes as cores a burst of sign-ins would stall token checks, which
// take microseconds; one core left over keeps them quick.
func defaultHashConcurrency(procs int) int {
	return max(procs-1, 1)
}

// newPasswordHasher returns a hasher that runs at most concurrency hashes at once.
func newPasswordHasher(p argonParams, concurrency int) *passwordHasher {
	return &passwordHasher{params: p, slots: make(chan struct{}, max(concurrency, 1)), stopped: make(chan struct{})}
}

// stop makes every caller waiting for a slot fail at once with
// errHashStopped, and every later one too; hashes already running finish.
// At shutdown a queued sign-in would otherwise hold the restart up for as
// many hashes as wait ahead of it, and then be answered by a server that
// is going away.
func (h *passwordHasher) stop() {
	h.stopOnce.Do(func() { close(h.stopped) })
}

// acquire waits for a hashing slot until ctx ends. It fails at once with
// errHashBusy when maxWaiting callers are already waiting, and with
// errHashStopped once stop was called.
func (h *passwordHasher) acquire(ctx context.Context) error {
	select {
	case <-h.stopped:
		return errHashStopped
	default:
	}
	select {
	case h.slots <- struct{}{}:
		h.started()
		return nil
	default:
	}
	if h.maxWaiting > 0 {
		if h.waiting.Add(1) > h.maxWaiting {
			h.waiting.Add(-1)
			return errHashBusy
		}
		defer h.waiting.Add(-1)
	}
	select {
	case h.slots <- struct{}{}:
		h.started()
		return nil
	case <-h.stopped:
		return errHashStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// started counts a hash that got its slot and keeps the peak.
func (h *passwordHasher) started() {
	n := h.running.Add(1)
	for p := h.peak.Load(); n > p && !h.peak.CompareAndSwap(p, n); p = h.peak.Load() {
	}
}

func (h *passwordHasher) release() {
	h.running.Add(-1)
	<-h.slots
}

// Hash returns a PHC string of password with a fresh salt.
func (h *passwordHasher) Hash(ctx context.Context, password string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("read salt: %w", err)
	}
	if err := h.acquire(ctx); err != nil {
		return "", err
	}
	defer h.release()
	key := argon2.IDKey([]byte(password), salt, h.params.Time, h.params.Memory, h.params.Threads, argonKeyLen)
	return encodePHC(h.params, salt, key), nil
}

// Verify reports whether password matches the PHC string encoded, and
// whether encoded should be replaced because its parameters are below the
// hasher's. A malformed encoded string is an error.
func (h *passwordHasher) Verify(ctx context.Context, password, encoded string) (ok, rehash bool, err error) {
	p, salt, key, err := decodePHC(encoded)
	if err != nil {
		return false, false, err
	}
	if err := h.acquire(ctx); err != nil {
		return false, false, err
	}
	defer h.release()
	got := argon2.IDKey([]byte(password), salt, p.Time, p.Memory, p.Threads, uint32(len(key)))
	if subtle.ConstantTimeCompare(got, key) != 1 {
		return false, false, nil
	}
	weaker := p.Memory < h.params.Memory || p.Time < h.params.Time || p.Threads < h.params.Threads ||
		len(salt) < argonSaltLen || len(key) < argonKeyLen
	return true, weaker, nil
}

var b64 = base64.RawStdEncoding

func encodePHC(p argonParams, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

func decodePHC(s string) (p argonParams, salt, key []byte, err error) {
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return p, nil, nil, errBadPasswordHash
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return p, nil, nil, errBadPasswordHash
	}
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.Memory, &p.Time, &p.Threads); err != nil ||
		p.Memory == 0 || p.Time == 0 || p.Threads == 0 {
		return p, nil, nil, errBadPasswordHash
	}
	if salt, err = b64.DecodeString(parts[4]); err != nil {
		return p, nil, nil, errBadPasswordHash
	}
	if key, err = b64.DecodeString(parts[5]); err != nil || len(key) == 0 {
		return p, nil, nil, errBadPasswordHash
	}
	return p, salt, key, nil
}

// checkPassword applies the password policy: at least minPasswordLen
// characters, any Unicode, no control characters, not a common password.
// Long passphrases are welcome and never truncated.
func checkPassword(pw string) error {
	switch {
	case !utf8.ValidString(pw) || strings.ContainsFunc(pw, unicode.IsControl):
		return errPasswordInvalid
	case utf8.RuneCountInString(pw) < minPasswordLen:
		return errPasswordShort
	case len(pw) > maxPasswordLen:
		return errPasswordLong
	case commonPasswords[strings.ToLower(pw)]:
		return errPasswordCommon
	}
	return nil
}

// userNameRule says what userNamePattern accepts, for messages.
const userNameRule = "use 1 to 40 letters, digits, '.', '_' or '-', starting and ending with a letter or digit"

var userNamePattern = regexp.MustCompile(`^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,38}[A-Za-z0-9])?$`)

// checkUserName reports whether name is a valid user name: 1 to 40 ASCII
// letters, digits, '.', '_' or '-', starting and ending with a letter or digit.
func checkUserName(name string) error {
	if !userNamePattern.MatchString(name) {
		return fmt.Errorf("user name %q: %s", truncate(name, 60), userNameRule)
	}
	return nil
}

// commonPasswords holds the most common passwords of at least
// minPasswordLen characters from public breach corpora, lower-cased.
var commonPasswords = func() map[string]bool {
	m := make(map[string]bool)
	for _, pw := range strings.Fields(`
		12345678 123456789 1234567890 12345678910 123123123 1234512345 11111111 00000000
		88888888 87654321 987654321 11223344 12341234 123qweasd 1q2w3e4r 1q2w3e4r5t
		1qaz2wsx qwertyuiop qwerty123 qwerty12 qwertyui asdfghjkl asdfasdf zxcvbnm123
		password password1 password12 password123 password1234 passw0rd p@ssw0rd p@ssword
		iloveyou iloveyou1 princess1 sunshine1 football1 baseball1 superman batman123
		letmein1 welcome1 welcome123 trustno1 whatever dragon123 monkey123 abc12345
		abcd1234 abcdefgh abcdefg1 aa123456 a1234567 admin123 administrator changeme
		computer internet starwars michael1 jennifer charlie1 jordan23 liverpool chelsea1
		arsenal1 football baseball basketball sunshine princess mustang1 shadow12
		master12 qazwsxedc zaq12wsx 1q2w3e4r5t6y q1w2e3r4 q1w2e3r4t5 88888888 55555555
		66666666 77777777 99999999 12121212 13131313 147258369 159357456 741852963
		target123 tokend123 secret123 security default1 guest123 test1234 testtest
		access14 mypassword letmein123 hello123 hellohello loveme123 freedom1 google123
		samsung1 pokemon1 minecraft unknown1 zxcvbnm1 asdf1234 qwer1234 1234qwer
	`) {
		m[pw] = true
	}
	return m
}()

var errBadCredentials = &httpError{status: http.StatusUnauthorized, detail: "wrong user name or password"}

// basicChallenge is sent with a failed Basic sign-in: every 401 names a way in.
const basicChallenge = `Basic realm="tokend", charset="UTF-8"`

// signIn checks a name and password. A failure takes as long whether or not
// the user exists, and says the same. On success with a hash of weaker
// parameters than today's, the hash is replaced.
func (s *server) signIn(r *http.Request, name, password string) (userRecord, error) {
	addr := s.clientAddr(r)
	// The user is looked up first, whether the attempt goes ahead or not,
	// so that the throttle keeps an account's attempts under its id, where
	// made-up names cannot reach them.
	u, err := s.store.UserByName(name)
	if err != nil && !errors.Is(err, errNotFound) {
		return userRecord{}, err
	}
	account := signInAccount{user: u.ID, name: name}
	wait, err := s.throttle.begin(account, addr, s.now())
	if err != nil {
		return userRecord{}, fmt.Errorf("count sign-in attempt: %w", err)
	}
	// Events name the account only when it exists: never what was typed,
	// which may be a token or a password.
	refused := func(kind, outcome string) {
		e := newAuditEvent(s.actorOf(r, userRecord{}, viaOf(r)), kind)
		e.Outcome = outcome
		if u.ID != 0 {
			e = e.about(u)
		}
		s.recordEvent(e)
	}
	if wait > 0 {
		s.log.Info("sign-in throttled", "remote", addr) // never the name: it may be a token or a password
		refused(kindSigninThrottled, outcomeThrottled)
		return userRecord{}, &throttledError{wait: wait}
	}
	encoded := u.PasswordHash
	if u.ID == 0 {
		encoded = s.dummyHash
	}
	ok, rehash, err := s.hasher.Verify(r.Context(), password, encoded)
	if err != nil {
		s.throttleLeft(s.throttle.abandoned(account, addr, s.now()))
		return userRecord{}, fmt.Errorf("verify password of user %d: %w", u.ID, err)
	}
	if !ok || u.ID == 0 {
		s.log.Info("sign-in failed", "user", signInName(u), "remote", addr)
		refused(kindSigninFailed, outcomeFailed)
		return userRecord{}, errBadCredentials
	}
	if rehash {
		if h, err := s.hasher.Hash(r.Context(), password); err == nil {
			if err := s.store.UpgradePasswordHash(u.ID, encoded, h); err != nil {
				s.log.Warn("re-hash password", "user_id", u.ID, "err", err)
			}
		}
	}
	s.throttleLeft(s.throttle.succeeded(u.ID, addr, s.now()))
	return u, nil
}

// throttleLeft logs that the throttle could not take an attempt back: it
// stays counted, which errs on the safe side.
func (s *server) throttleLeft(err error) {
	if err != nil {
		s.log.Warn("sign-in attempt left counted", "err", err)
	}
}
