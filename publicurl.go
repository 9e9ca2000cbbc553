package main

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// The public URL. Behind a reverse proxy, the address tokend listens on
// is not the one people open: -public-url (TOKEND_PUBLIC_URL) names the
// one they do. It is the base of the setup link, the OAuth issuer (and
// every URL of its metadata and device flow) and the URL shown beside a
// new token, and its host and origin are the relying party id and origin
// of passkeys. Unset, each request supplies it: https when the request
// came over TLS or through a trusted proxy that says so (-trust-proxy),
// else http, then the Host header; the setup link logged at start-up uses
// the listening address.

// checkPublicURL reports whether v can be the public URL: empty, or an
// absolute http or https URL of a host, with neither a path (beyond "/"),
// a query, a fragment nor user information. Passkeys are bound to an
// origin, which has no path.
func checkPublicURL(v string) error {
	if v == "" {
		return nil
	}
	u, err := url.Parse(v)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not a URL", v)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q: the scheme must be http or https", v)
	case u.Hostname() == "":
		return fmt.Errorf("%q names no host", v)
	case u.User != nil:
		return fmt.Errorf("%q: a user name or password does not belong in it", v)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.ForceQuery, u.Fragment != "":
		return fmt.Errorf("%q: give the origin only, such as https://tokens.example.com (tokend serves from the root)", v)
	}
	return nil
}

// baseURL returns the URL people reach tokend at, without a trailing
// slash: -public-url when set, else the request's scheme and Host.
func (s *server) baseURL(r *http.Request) string {
	if s.cfg.PublicURL != "" {
		return strings.TrimSuffix(s.cfg.PublicURL, "/")
	}
	scheme := "http"
	if s.isHTTPS(r) {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
