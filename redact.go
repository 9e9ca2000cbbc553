package main

import (
	"net/url"
	"regexp"
	"strings"
)

// tokenLike matches anything that looks like a token of any prefix tokend
// allows, or a good part of one: a prefix, an underscore and at least
// eight base62 characters. It errs towards hiding too much.
var tokenLike = regexp.MustCompile(`[a-z][a-z0-9]{0,15}_[0-9A-Za-z]{8,}`)

// redactTokens replaces whatever looks like a token in s, so that client
// input can be logged or echoed in an error: people paste tokens into
// paths and user name fields too.
func redactTokens(s string) string {
	if !strings.Contains(s, "_") {
		return s // the common case, without a regular expression
	}
	return tokenLike.ReplaceAllStringFunc(s, func(t string) string {
		prefix, _, _ := strings.Cut(t, "_")
		return prefix + "_[redacted]"
	})
}

// redactPath returns target — a request's path, a request target with
// its query, or a whole URL as a proxy forwards it — as it may be logged:
// percent-decoded, without its query and fragment (which may carry
// secrets of any kind), with whatever looks like a token redacted, and at
// most 200 bytes. Every log line that holds a path or URL goes through it.
func redactPath(target string) string {
	path, _, _ := strings.Cut(target, "?")
	path, _, _ = strings.Cut(path, "#")
	if p, err := url.PathUnescape(path); err == nil {
		path = p // so that an encoded underscore hides no token
	}
	// Redact before truncating: a cut could leave too little of a token
	// to be recognised.
	return truncate(redactTokens(path), 200)
}

// signInName is how a failed sign-in names its user in the log: the stored
// name of an existing user, and nothing of a name that is no user's, which
// is as likely a password or a token typed into the wrong field.
func signInName(u userRecord) string {
	if u.ID == 0 {
		return "(no such user)"
	}
	return u.Name
}

// redactDB returns a -db value as it may be printed or logged: a
// PostgreSQL URL with its password (in the user information or as a
// password= parameter) replaced by ***, anything else as it is. It works
// on the text, not through url.Parse, so that a URL the parser refuses
// (several hosts, a stray character) is redacted too.
func redactDB(db string) string {
	if !isPostgresURL(db) {
		return db
	}
	scheme, rest, _ := strings.Cut(db, "://")
	// The user information ends at the last @ before the path or query.
	authority := rest
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		authority = rest[:i]
	}
	if at := strings.LastIndex(authority, "@"); at >= 0 {
		if user, _, ok := strings.Cut(authority[:at], ":"); ok {
			rest = user + ":***" + rest[at:]
		}
	}
	if path, query, ok := strings.Cut(rest, "?"); ok {
		params := strings.Split(query, "&")
		for i, p := range params {
			name, _, _ := strings.Cut(p, "=")
			if n, err := url.QueryUnescape(name); err == nil && n == "password" || name == "password" {
				params[i] = name + "=***"
			}
		}
		rest = path + "?" + strings.Join(params, "&")
	}
	return scheme + "://" + rest
}
