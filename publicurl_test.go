package main

import (
	"net"
	"strings"
	"testing"
)

// TestPublicURLIsTheBase checks that -public-url, when set, is the base of
// the OAuth issuer, the setup link and the URL shown beside a new token,
// whatever Host a request names; and that without it the request's scheme
// and Host are.
func TestPublicURLIsTheBase(t *testing.T) {
	ts := newTestServer(t)
	metadata := func() serverMetadata {
		t.Helper()
		w := ts.do(request{method: "GET", path: "http://internal:8080/.well-known/oauth-authorization-server"})
		var m serverMetadata
		decode(t, w, &m)
		if w.Code != 200 {
			t.Fatalf("GET metadata = %d; want 200", w.Code)
		}
		return m
	}
	if m := metadata(); m.Issuer != "http://internal:8080" || m.TokenEndpoint != "http://internal:8080/oauth/token" {
		t.Errorf("without -public-url: issuer %q, token endpoint %q; want the request's http://internal:8080", m.Issuer, m.TokenEndpoint)
	}

	ts.cfg.PublicURL = "https://tokens.example.com/"
	if m := metadata(); m.Issuer != "https://tokens.example.com" || m.TokenEndpoint != "https://tokens.example.com/oauth/token" ||
		m.DeviceAuthorizationEndpoint != "https://tokens.example.com/oauth/device_authorization" {
		t.Errorf("with -public-url: issuer %q, token endpoint %q, device endpoint %q; want under https://tokens.example.com",
			m.Issuer, m.TokenEndpoint, m.DeviceAuthorizationEndpoint)
	}

	ts.announceSetup(&net.TCPAddr{IP: net.IPv4zero, Port: 8080})
	if logs := ts.logs.String(); !strings.Contains(logs, `url="https://tokens.example.com/setup?code=`) || strings.Contains(logs, "127.0.0.1:8080/setup") {
		t.Errorf("setup link logged with -public-url:\n%s\nwant it under https://tokens.example.com", logs)
	}
}

func TestCheckPublicURL(t *testing.T) {
	for v, ok := range map[string]bool{
		"":                                 true,
		"https://tokens.example.com":       true,
		"https://tokens.example.com/":      true,
		"http://localhost:8080":            true,
		"https://[::1]:8443":               true,
		"tokens.example.com":               false,
		"ftp://tokens.example.com":         false,
		"https://":                         false,
		"https://tokens.example.com/auth":  false,
		"https://tokens.example.com/?x=1":  false,
		"https://tokens.example.com/#top":  false,
		"https://u:p@tokens.example.com":   false,
		"https://tokens.example.com:99999": true, // the port is the proxy's business
		"://nonsense":                      false,
	} {
		if err := checkPublicURL(v); (err == nil) != ok {
			t.Errorf("checkPublicURL(%q) = %v; want ok %t", v, err, ok)
		}
	}
}
