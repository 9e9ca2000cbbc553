package main

import (
	"errors"
	"fmt"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/julienschmidt/httprouter"
	bolt "go.etcd.io/bbolt"
)

// The users page, for admins: list users with their token counts, add a
// user, reset a password, make or unmake an admin (never the last one),
// remove a user with their tokens and sessions. Every change is a
// sensitive action (sudo mode).

// TokenCounts returns how many tokens each user holds; users without
// tokens are missing from the map.
func (s *store) TokenCounts() (map[uint64]int, error) {
	counts := make(map[uint64]int)
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTokensByOwner).ForEach(func(k, _ []byte) error {
			if len(k) == 16 {
				counts[btoi(k[:8])]++
			}
			return nil
		})
	})
	return counts, err
}

// SetAdmin makes user id an admin or not and returns the record. It
// returns errNotFound for an unknown user and errLastAdmin when that would
// leave no admin.
func (s *store) SetAdmin(id uint64, admin bool) (userRecord, error) {
	var u userRecord
	err := s.update(func(tx *bolt.Tx) error {
		users := tx.Bucket(bucketUsers)
		if err := getJSON(users, itob(id), &u); err != nil {
			return err
		}
		if u.Admin == admin {
			return nil
		}
		if !admin {
			n, err := countAdmins(tx)
			if err != nil {
				return err
			}
			if n <= 1 {
				return errLastAdmin
			}
		}
		u.Admin = admin
		return putJSON(users, itob(id), &u)
	})
	return u, err
}

// adminOnly lets only admins through to h.
func (s *server) adminOnly(h pageHandler) pageHandler {
	return func(w http.ResponseWriter, r *http.Request, ps httprouter.Params, sess *session) {
		if !sess.user.Admin {
			s.renderMessage(w, r, sess, http.StatusForbidden, "Admins only", "Only admins can manage users.")
			return
		}
		h(w, r, ps, sess)
	}
}

// userRow is a user as the users page lists it.
type userRow struct {
	ID      uint64
	Name    string
	Admin   bool
	Tokens  int
	Created when
	You     bool
}

// usersPage is the data of users.html.
type usersPage struct {
	Users []userRow
	// The add-user form, as last sent.
	Name  string
	Admin bool
}

func (s *server) showUsersPage(w http.ResponseWriter, r *http.Request, sess *session, status int, data usersPage, errMsg string) {
	users, err := s.store.Users()
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	counts, err := s.store.TokenCounts()
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	for _, u := range users {
		data.Users = append(data.Users, userRow{ID: u.ID, Name: u.Name, Admin: u.Admin, Tokens: counts[u.ID],
			Created: s.when(u.CreatedAt), You: u.ID == sess.user.ID})
	}
	s.renderPage(w, r, sess, status, "users.html", &page{Title: "Users", Nav: "users", Error: errMsg, ErrorAt: "add", Data: data})
}

func (s *server) handleUsersPage(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	s.showUsersPage(w, r, sess, http.StatusOK, usersPage{}, "")
}

func (s *server) handleAddUser(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	data := usersPage{Name: strings.TrimSpace(r.PostForm.Get("name")), Admin: r.PostForm.Get("admin") != ""}
	show := func(status int, msg string) { s.showUsersPage(w, r, sess, status, data, msg) }
	if err := s.checkSudo(r, sess); err != nil {
		s.formFailed(w, r, sess, err, show)
		return
	}
	if checkUserName(data.Name) != nil {
		show(http.StatusBadRequest, "User name: "+userNameRule+".")
		return
	}
	password := r.PostForm.Get("password")
	if err := checkNewPassword(password, r.PostForm.Get("confirm")); err != nil {
		s.formFailed(w, r, sess, err, show)
		return
	}
	hash, err := s.hasher.Hash(r.Context(), password)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	u := newUser(data.Name, hash, data.Admin, s.now())
	if err := s.store.CreateUser(&u); err != nil {
		if errors.Is(err, errNameTaken) {
			// Names are unique whatever their case: name the one stored.
			name := data.Name
			if taken, err := s.store.UserByName(data.Name); err == nil {
				name = taken.Name
			}
			err = clientError(http.StatusConflict, "A user called %s already exists", name)
		}
		s.formFailed(w, r, sess, err, show)
		return
	}
	s.log.Info("user added", "user_id", u.ID, "admin", u.Admin, "by_user_id", sess.user.ID)
	s.setFlash(w, r, fmt.Sprintf("Added %s. Tell them their password over a channel you trust.", u.Name))
	seeOther(w, r, "/admin/users")
}

// userPage is the data of user.html: one user, for an admin to manage.
type userPage struct {
	ID           uint64
	Name         string
	Admin        bool
	Tokens       int
	TokensText   string // "3 tokens"
	SessionsText string // "1 session"
	Created      when
	You          bool
	// RevokeTokens is the reset form's checkbox, as last sent.
	RevokeTokens bool
}

// pageUser returns the user named by the :id parameter, or errNotFound.
func (s *server) pageUser(ps httprouter.Params) (userRecord, error) {
	id, err := strconv.ParseUint(ps.ByName("id"), 10, 64)
	if err != nil || id == 0 {
		return userRecord{}, errNotFound
	}
	return s.store.UserByID(id)
}

func (s *server) showUserPage(w http.ResponseWriter, r *http.Request, sess *session, status int, u userRecord, revoke bool, errMsg string) {
	counts, err := s.store.TokenCounts()
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	sessions, err := s.store.SessionsOf(u.ID)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	live := 0
	for _, o := range sessions {
		if o.rec.live(s.now(), s.cfg.SessionIdle) {
			live++
		}
	}
	data := userPage{ID: u.ID, Name: u.Name, Admin: u.Admin, Tokens: counts[u.ID],
		TokensText: plural(counts[u.ID], "token"), SessionsText: plural(live, "session"),
		Created: s.when(u.CreatedAt), You: u.ID == sess.user.ID, RevokeTokens: revoke}
	// The error goes beside the form that was sent, named by the last
	// part of its path; the top of the page when it is not on the page
	// (your own has no remove form).
	at := path.Base(r.URL.Path)
	if at != "password" && at != "admin" && (at != "remove" || data.You) {
		at = ""
	}
	s.renderPage(w, r, sess, status, "user.html", &page{Title: u.Name, Nav: "users", Error: errMsg, ErrorAt: at, Data: data})
}

func (s *server) handleUserPage(w http.ResponseWriter, r *http.Request, ps httprouter.Params, sess *session) {
	u, err := s.pageUser(ps)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	s.showUserPage(w, r, sess, http.StatusOK, u, false, "")
}

// userForm runs the sudo check and finds the :id user for a form of the
// user page. On failure it has answered the request and returns false.
func (s *server) userForm(w http.ResponseWriter, r *http.Request, ps httprouter.Params, sess *session, revoke bool) (userRecord, bool) {
	u, err := s.pageUser(ps)
	if err != nil {
		s.pageError(w, r, sess, err)
		return u, false
	}
	if err := s.checkSudo(r, sess); err != nil {
		s.formFailed(w, r, sess, err, func(status int, msg string) { s.showUserPage(w, r, sess, status, u, revoke, msg) })
		return u, false
	}
	return u, true
}

func (s *server) handleResetPassword(w http.ResponseWriter, r *http.Request, ps httprouter.Params, sess *session) {
	revoke := r.PostForm.Get("revoke_tokens") != ""
	u, ok := s.userForm(w, r, ps, sess, revoke)
	if !ok {
		return
	}
	password := r.PostForm.Get("password")
	if err := checkNewPassword(password, r.PostForm.Get("confirm")); err != nil {
		s.formFailed(w, r, sess, err, func(status int, msg string) { s.showUserPage(w, r, sess, status, u, revoke, msg) })
		return
	}
	hash, err := s.hasher.Hash(r.Context(), password)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	// A reset signs the user out everywhere: whoever knew the old
	// password may hold a session. An admin resetting their own password
	// here keeps the session they are using.
	c := passwordChange{hash: hash, at: s.now(), revokeTokens: revoke, endSessions: true}
	if u.ID == sess.user.ID {
		c.keep = sess.hash
	}
	tokens, sessions, err := s.store.ChangePassword(u.ID, c)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	s.log.Info("password reset", "user_id", u.ID, "by_user_id", sess.user.ID, "tokens_revoked", tokens, "sessions_ended", sessions)
	msg := fmt.Sprintf("New password set for %s; %s signed out.", u.Name, plural(sessions, "session"))
	if revoke {
		msg += fmt.Sprintf(" %s revoked.", capitalize(plural(tokens, "token")))
	}
	s.setFlash(w, r, msg)
	seeOther(w, r, fmt.Sprintf("/admin/users/%d", u.ID))
}

func (s *server) handleSetAdmin(w http.ResponseWriter, r *http.Request, ps httprouter.Params, sess *session) {
	u, ok := s.userForm(w, r, ps, sess, false)
	if !ok {
		return
	}
	admin := r.PostForm.Get("admin") == "true"
	u, err := s.store.SetAdmin(u.ID, admin)
	if errors.Is(err, errLastAdmin) {
		s.showUserPage(w, r, sess, http.StatusConflict, u, false, u.Name+" is the last admin: make someone else an admin first.")
		return
	}
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	s.log.Info("admin changed", "user_id", u.ID, "admin", admin, "by_user_id", sess.user.ID)
	if admin {
		s.setFlash(w, r, u.Name+" is now an admin.")
	} else {
		s.setFlash(w, r, u.Name+" is no longer an admin.")
	}
	if u.ID == sess.user.ID && !admin {
		seeOther(w, r, "/")
		return
	}
	seeOther(w, r, fmt.Sprintf("/admin/users/%d", u.ID))
}

func (s *server) handleRemoveUser(w http.ResponseWriter, r *http.Request, ps httprouter.Params, sess *session) {
	u, ok := s.userForm(w, r, ps, sess, false)
	if !ok {
		return
	}
	show := func(status int, msg string) { s.showUserPage(w, r, sess, status, u, false, msg) }
	switch {
	case u.ID == sess.user.ID:
		show(http.StatusConflict, "You cannot remove your own account while signed in to it.")
		return
	case r.PostForm.Get("confirm") != u.Name:
		show(http.StatusBadRequest, "Type the user's name, "+u.Name+", to confirm the removal.")
		return
	}
	err := s.store.DeleteUser(u.ID)
	if errors.Is(err, errLastAdmin) {
		show(http.StatusConflict, u.Name+" is the last admin: make someone else an admin first.")
		return
	}
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	s.log.Info("user removed", "user_id", u.ID, "by_user_id", sess.user.ID)
	s.setFlash(w, r, "Removed "+u.Name+" with their tokens and sessions.")
	seeOther(w, r, "/admin/users")
}
