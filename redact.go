package main

import (
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

// signInName is how a failed sign-in names its user in the log: the stored
// name of an existing user, and nothing of a name that is no user's, which
// is as likely a password or a token typed into the wrong field.
func signInName(u userRecord) string {
	if u.ID == 0 {
		return "(no such user)"
	}
	return u.Name
}
