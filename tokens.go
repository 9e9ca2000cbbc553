package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash/crc32"
	"regexp"
	"sort"
	"strings"
	"unsafe"
)

// A token is prefix + secretLen base62 characters drawn uniformly from
// crypto/rand + checksumLen base62 characters of the CRC32 of everything
// before them. With the default prefix that is 53 characters:
//
//	tkd_ 3Q1yWq0B6m… (43) 1a2B3c (6)
const (
	defaultTokenPrefix = "tkd_"
	secretLen          = 43 // 43 × log2(62) ≈ 256.03 bits
	checksumLen        = 6  // 62^6 > 2^32
	hintLen            = 4
	maxTokenLen        = 17 + secretLen + checksumLen // the longest prefix newTokenFormat allows
	base62Alphabet     = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// tokenHash is the SHA-256 of a whole token: the only form of it that storage sees.
type tokenHash [sha256.Size]byte

// errMalformedToken is returned by parseToken for anything that is not a
// well-formed token of this server: wrong prefix, length, alphabet or checksum.
var errMalformedToken = errors.New("malformed token")

// tokenFormat knows the prefix tokens carry. The zero value is not usable;
// build one with newTokenFormat.
type tokenFormat struct {
	prefix string
}

var tokenPrefixPattern = regexp.MustCompile(`^[a-z][a-z0-9]{0,15}_$`)

// newTokenFormat returns a format for prefix, which must be 1–16 lowercase
// letters or digits, starting with a letter, followed by an underscore.
func newTokenFormat(prefix string) (tokenFormat, error) {
	if !tokenPrefixPattern.MatchString(prefix) {
		return tokenFormat{}, fmt.Errorf("token prefix %q: want 1 to 16 lowercase letters or digits, starting with a letter, then %q", prefix, "_")
	}
	return tokenFormat{prefix: prefix}, nil
}

// length is the length of every token in this format.
func (f tokenFormat) length() int { return len(f.prefix) + secretLen + checksumLen }

// pattern is a regular expression that matches tokens of this format, for
// secret scanners.
func (f tokenFormat) pattern() string {
	return regexp.QuoteMeta(f.prefix) + fmt.Sprintf("[0-9A-Za-z]{%d}", secretLen+checksumLen)
}

// generate returns a new token. It fails only if the system's random source does.
func (f tokenFormat) generate() (string, error) {
	b := make([]byte, 0, f.length())
	b = append(b, f.prefix...)
	// Rejection sampling: a random byte's low six bits are uniform over
	// 0–63; keeping only values below 62 leaves every character equally
	// likely, which a plain modulo would not.
	var buf [64]byte
	for len(b) < len(f.prefix)+secretLen {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("read random bytes: %w", err)
		}
		for _, r := range buf {
			if v := r & 63; v < 62 && len(b) < len(f.prefix)+secretLen {
				b = append(b, base62Alphabet[v])
			}
		}
	}
	b = appendChecksum(b, crc32.ChecksumIEEE(b))
	return string(b), nil
}

// appendChecksum appends sum as checksumLen base62 digits, most significant first.
func appendChecksum(b []byte, sum uint32) []byte {
	var digits [checksumLen]byte
	v := uint64(sum)
	for i := checksumLen - 1; i >= 0; i-- {
		digits[i] = base62Alphabet[v%62]
		v /= 62
	}
	return append(b, digits[:]...)
}

// parse checks the prefix, length, alphabet and checksum of token and returns
// its hash. It returns errMalformedToken for anything else. It never touches
// storage, so garbage is turned away cheaply.
func (f tokenFormat) parse(token string) (tokenHash, error) {
	if len(token) != f.length() || !strings.HasPrefix(token, f.prefix) {
		return tokenHash{}, errMalformedToken
	}
	for i := len(f.prefix); i < len(token); i++ {
		if !base62Chars[token[i]] {
			return tokenHash{}, errMalformedToken
		}
	}
	// The token's own bytes, read in place: a []byte conversion would
	// allocate on every verification. Nothing below writes to them.
	b := unsafe.Slice(unsafe.StringData(token), len(token))
	body := b[:len(b)-checksumLen]
	var want [checksumLen]byte
	appendChecksum(want[:0], crc32.ChecksumIEEE(body))
	if string(want[:]) != token[len(body):] {
		return tokenHash{}, errMalformedToken
	}
	return sha256.Sum256(b), nil
}

// base62Chars marks the bytes of base62Alphabet.
var base62Chars = func() (t [256]bool) {
	for i := range len(base62Alphabet) {
		t[base62Alphabet[i]] = true
	}
	return t
}()

// hashToken returns the SHA-256 of token. A 256-bit random secret needs no
// salt or slow hash: nothing about it can be guessed.
func hashToken(token string) tokenHash { return sha256.Sum256([]byte(token)) }

// tokenHint returns the last characters of token, kept so that a person can
// tell their tokens apart in a list.
func tokenHint(token string) string { return token[len(token)-hintLen:] }

// Built-in scopes.
const (
	scopeTokensRead  = "tokens:read"
	scopeTokensWrite = "tokens:write"
	scopeIntrospect  = "introspect"
	scopeAdmin       = "admin"
)

// maxScopesPerToken bounds the scopes one token may hold.
const maxScopesPerToken = 64

// scope is a permission a token can carry.
type scope struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

// builtinScopes are the scopes tokend itself understands.
var builtinScopes = []scope{
	{scopeTokensRead, "List and read your tokens"},
	{scopeTokensWrite, "Create, rotate and revoke your tokens"},
	{scopeIntrospect, "Ask whether other tokens are valid (RFC 7662 introspection)"},
	{scopeAdmin, "Manage users and their tokens (admins only)"},
}

// scopeRegistry is the set of scopes a token may be given: the built-in ones
// and those the operator declared for the apps tokend protects. It is
// immutable after construction and safe for concurrent use.
type scopeRegistry struct {
	list  []scope
	index map[string]int
}

var scopeNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9:._-]{0,63}$`)

// newScopeRegistry returns the built-in scopes followed by extra. It fails
// when an extra scope has an invalid name or repeats another.
func newScopeRegistry(extra []scope) (*scopeRegistry, error) {
	r := &scopeRegistry{index: make(map[string]int)}
	for i, s := range append(append([]scope(nil), builtinScopes...), extra...) {
		if !scopeNamePattern.MatchString(s.Name) {
			return nil, fmt.Errorf("scope %q: a name is 1 to 64 lowercase letters, digits, ':', '.', '_' or '-', starting with a letter or digit", s.Name)
		}
		if _, dup := r.index[s.Name]; dup {
			return nil, fmt.Errorf("scope %q is declared twice", s.Name)
		}
		r.index[s.Name] = i
		r.list = append(r.list, s)
	}
	return r, nil
}

// known reports whether name is a declared scope.
func (r *scopeRegistry) known(name string) bool {
	_, ok := r.index[name]
	return ok
}

// all returns every declared scope in declaration order. The caller must not
// modify the result.
func (r *scopeRegistry) all() []scope { return r.list }

// names lists the declared scopes for a message, in declaration order.
func (r *scopeRegistry) names() string {
	names := make([]string, len(r.list))
	for i, s := range r.list {
		names[i] = s.Name
	}
	return strings.Join(names, ", ")
}

// normalize checks names against the registry and returns them in
// declaration order. It fails on an unknown, repeated or excess scope.
func (r *scopeRegistry) normalize(names []string) ([]string, error) {
	if len(names) > maxScopesPerToken {
		return nil, fmt.Errorf("a token can hold at most %d scopes, got %d", maxScopesPerToken, len(names))
	}
	seen := make(map[string]bool, len(names))
	for _, n := range names {
		if !r.known(n) {
			return nil, fmt.Errorf("unknown scope %q; the scopes are %s", truncate(n, 64), r.names())
		}
		if seen[n] {
			return nil, fmt.Errorf("scope %q is listed twice", n)
		}
		seen[n] = true
	}
	out := make([]string, 0, len(names))
	out = append(out, names...)
	sort.Slice(out, func(i, j int) bool { return r.index[out[i]] < r.index[out[j]] })
	return out, nil
}

// hasScope reports whether scopes contains want.
func hasScope(scopes []string, want string) bool {
	for _, s := range scopes {
		if s == want {
			return true
		}
	}
	return false
}

// truncate shortens s to at most n bytes without splitting a UTF-8 sequence,
// for echoing client input back in error messages.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

// MarshalText encodes h in unpadded base64: text in a JSON record, 43
// characters where hex would take 64.
func (h tokenHash) MarshalText() ([]byte, error) {
	return []byte(base64.RawStdEncoding.EncodeToString(h[:])), nil
}

// UnmarshalText decodes a hash written by MarshalText.
func (h *tokenHash) UnmarshalText(b []byte) error {
	if base64.RawStdEncoding.DecodedLen(len(b)) != len(h) {
		return fmt.Errorf("token hash: want %d base64 characters, got %d", base64.RawStdEncoding.EncodedLen(len(h)), len(b))
	}
	_, err := base64.RawStdEncoding.Decode(h[:], b)
	return err
}
