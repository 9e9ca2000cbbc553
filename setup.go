package main

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/julienschmidt/httprouter"
)

// First run. On a database without users, serve logs a link with a random
// code to the page that creates the first admin. Only the code's hash is
// kept, in memory: it works once and dies with the process, and the page is
// gone as soon as any user exists. While the code is live no other user
// can appear (the CLI cannot open the file the server holds, and every
// other way to add a user takes an admin), so "no user" is "no admin",
// and it takes one key to tell rather than a walk over every user.

// errSetupDone is returned by CreateFirstAdmin once a user exists.
var errSetupDone = errors.New("setup is done: a user exists")

// setupCode is the one-time code of the setup link. The zero value holds
// no code. It is safe for concurrent use.
type setupCode struct {
	mu   sync.Mutex
	hash [sha256.Size]byte
	live bool
	done bool // a code was spent: setup is complete
}

// issue makes a new code, forgetting any earlier one, and returns it.
func (c *setupCode) issue() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("read random bytes: %w", err)
	}
	code := base64.RawURLEncoding.EncodeToString(b)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hash, c.live = sha256.Sum256([]byte(code)), true
	return code, nil
}

// valid reports whether code is the live code, in constant time.
func (c *setupCode) valid(code string) bool {
	h := sha256.Sum256([]byte(code))
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live && subtle.ConstantTimeCompare(h[:], c.hash[:]) == 1
}

// spend forgets the code: it has been used, or setup is complete.
func (c *setupCode) spend() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hash, c.live, c.done = [sha256.Size]byte{}, false, true
}

// complete reports whether a code was spent in this process.
func (c *setupCode) complete() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.done
}

// setupLink issues a new code and returns the link to the setup page under
// base, such as http://127.0.0.1:8080.
func (s *server) setupLink(base string) (string, error) {
	code, err := s.setup.issue()
	if err != nil {
		return "", err
	}
	return strings.TrimSuffix(base, "/") + "/setup?code=" + code, nil
}

// announceSetup logs the one-time setup link for a server listening on addr.
// The code in it is the one secret tokend ever logs: it works once, only
// until an admin exists, and only while this process runs.
func (s *server) announceSetup(addr net.Addr) {
	link, err := s.setupLink("http://" + browsableHost(addr))
	if err != nil {
		s.log.Error("make setup link", "err", err)
		return
	}
	s.log.Info("no users yet: open this one-time link to create the first admin "+
		"(or stop the server and run `tokend user add -admin NAME`)", "url", link)
}

// browsableHost returns addr as a host:port a browser on this machine can
// open: a wildcard listen address becomes the loopback one.
func browsableHost(addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return addr.String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}

// setupPage is the data of setup.html.
type setupPage struct {
	Code string
	Name string
}

// setupOpen reports whether code opens the setup page now: it is the live
// code and no user exists. Otherwise it answers the request itself. The
// code is checked first, in constant time and from memory: a request
// without it costs no database read, however many users there are.
func (s *server) setupOpen(w http.ResponseWriter, r *http.Request, code string) bool {
	const done = "Setup is complete: an admin account exists. Sign in instead."
	if !s.setup.valid(code) {
		msg := "This setup link is not valid. The server prints a new one-time link to its log each time it starts on a database without users."
		if s.setup.complete() {
			msg = done
		}
		s.renderMessage(w, r, nil, http.StatusNotFound, "No setup here", msg)
		return false
	}
	hasUsers, err := s.store.HasUsers()
	if err != nil {
		s.pageError(w, r, nil, err)
		return false
	}
	if hasUsers {
		s.setup.spend()
		s.renderMessage(w, r, nil, http.StatusNotFound, "No setup here", done)
		return false
	}
	return true
}

func (s *server) handleSetupPage(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	code := r.URL.Query().Get("code")
	if !s.setupOpen(w, r, code) {
		return
	}
	s.renderPage(w, r, nil, http.StatusOK, "setup.html", &page{Title: "Set up tokend", Data: setupPage{Code: code}})
}

func (s *server) handleSetup(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	code := r.PostForm.Get("code")
	if !s.setupOpen(w, r, code) {
		return
	}
	name := strings.TrimSpace(r.PostForm.Get("name"))
	password := r.PostForm.Get("password")
	fail := func(status int, msg string) {
		s.renderPage(w, r, nil, status, "setup.html", &page{Title: "Set up tokend", Error: msg, ErrorAt: "setup",
			Data: setupPage{Code: code, Name: name}})
	}
	if err := checkUserName(name); err != nil {
		fail(http.StatusBadRequest, "User name: "+userNameRule+".")
		return
	}
	if err := checkNewPassword(password, r.PostForm.Get("confirm")); err != nil {
		fail(http.StatusBadRequest, err.Error())
		return
	}
	hash, err := s.hasher.Hash(r.Context(), password)
	if err != nil {
		s.pageError(w, r, nil, err)
		return
	}
	u := newUser(name, hash, true, s.now())
	switch err := s.store.CreateFirstAdmin(s.actorOf(r, userRecord{}, viaPage), &u); {
	case errors.Is(err, errSetupDone):
		s.setup.spend()
		s.renderMessage(w, r, nil, http.StatusNotFound, "No setup here", "Setup is complete: an admin account exists. Sign in instead.")
		return
	case errors.Is(err, errNameTaken):
		fail(http.StatusConflict, "A user of that name already exists: choose another name.")
		return
	case err != nil:
		s.pageError(w, r, nil, err)
		return
	}
	s.setup.spend()
	s.log.Info("first admin created", "user_id", u.ID, "remote", s.clientAddr(r))
	s.setFlash(w, r, "Your admin account "+u.Name+" is ready. Sign in with your new password.")
	http.Redirect(w, r, "/login?name="+url.QueryEscape(u.Name), http.StatusSeeOther)
}
