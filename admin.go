package main

import (
	"errors"
	"fmt"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/julienschmidt/httprouter"
)

// The users page, for admins: list users with their token counts, add a
// user, reset a password, make or unmake an admin (never the last one),
// revoke every token of a user, remove a user with their tokens and
// sessions. Every change is a
// sensitive action (sudo mode).

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
	if err := s.store.CreateUser(s.actorOf(r, sess.user, viaPage), &u); err != nil {
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
	if at != "password" && at != "admin" && (at != "remove" || data.You) && (at != "revoke-tokens" || data.Tokens == 0) {
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
	var keep sessionHash // an admin resetting their own password keeps this session
	if u.ID == sess.user.ID {
		keep = sess.hash
	}
	done, err := s.accounts().ResetPassword(r.Context(), s.actorOf(r, sess.user, viaPage), u.ID, password, revoke, keep)
	if err != nil {
		s.formFailed(w, r, sess, err, func(status int, msg string) { s.showUserPage(w, r, sess, status, u, revoke, msg) })
		return
	}
	tokens, sessions := done.Tokens, done.Sessions
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
	u, err := s.accounts().SetAdmin(s.actorOf(r, sess.user, viaPage), u.ID, admin)
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

func (s *server) handleRevokeUserTokens(w http.ResponseWriter, r *http.Request, ps httprouter.Params, sess *session) {
	u, ok := s.userForm(w, r, ps, sess, false)
	if !ok {
		return
	}
	if r.PostForm.Get("confirm") == "" {
		s.showUserPage(w, r, sess, http.StatusBadRequest, u, false, "Tick the box to confirm that every token of "+u.Name+" stops working.")
		return
	}
	done, err := s.accounts().RevokeAllTokens(s.actorOf(r, sess.user, viaPage), u.ID)
	if err != nil {
		s.formFailed(w, r, sess, err, func(status int, msg string) { s.showUserPage(w, r, sess, status, u, false, msg) })
		return
	}
	s.log.Info("tokens revoked", "user_id", u.ID, "tokens", done.Tokens, "by_user_id", sess.user.ID, "by", "page")
	s.setFlash(w, r, fmt.Sprintf("Revoked %s of %s.", plural(done.Tokens, "token"), u.Name))
	seeOther(w, r, fmt.Sprintf("/admin/users/%d", u.ID))
}

func (s *server) handleRemoveUser(w http.ResponseWriter, r *http.Request, ps httprouter.Params, sess *session) {
	u, ok := s.userForm(w, r, ps, sess, false)
	if !ok {
		return
	}
	show := func(status int, msg string) { s.showUserPage(w, r, sess, status, u, false, msg) }
	if r.PostForm.Get("confirm") != u.Name && u.ID != sess.user.ID {
		show(http.StatusBadRequest, "Type the user's name, "+u.Name+", to confirm the removal.")
		return
	}
	err := s.accounts().RemoveUser(s.actorOf(r, sess.user, viaPage), u.ID)
	if errors.Is(err, errLastAdmin) {
		show(http.StatusConflict, u.Name+" is the last admin: make someone else an admin first.")
		return
	}
	if err != nil {
		s.formFailed(w, r, sess, err, show)
		return
	}
	s.log.Info("user removed", "user_id", u.ID, "by_user_id", sess.user.ID)
	s.setFlash(w, r, "Removed "+u.Name+" with their tokens and sessions.")
	seeOther(w, r, "/admin/users")
}

// ---- the users API ----

// accountChangeJSON is what an account action took away, as the API says it.
type accountChangeJSON struct {
	TokensRevoked int `json:"tokens_revoked"`
	SessionsEnded int `json:"sessions_ended"`
}

func changeJSON(c accountChange) accountChangeJSON {
	return accountChangeJSON{TokensRevoked: c.Tokens, SessionsEnded: c.Sessions}
}

// apiAdmin lets only an admin's token that holds the admin scope through
// to h.
func (s *server) apiAdmin(h tokenHandler) httprouter.Handle {
	return s.withToken(scopeAdmin, func(w http.ResponseWriter, r *http.Request, ps httprouter.Params, c *caller) {
		if !c.user.Admin {
			s.writeAuthError(w, insufficientScope(scopeAdmin))
			return
		}
		h(w, r, ps, c)
	})
}

// apiUser returns the user named by the :id parameter. A malformed or
// unknown id is a 404.
func (s *server) apiUser(ps httprouter.Params) (userRecord, error) {
	id, err := strconv.ParseUint(ps.ByName("id"), 10, 64)
	if err != nil || id == 0 {
		return userRecord{}, clientError(http.StatusNotFound, "no user with id %q", truncate(redactTokens(ps.ByName("id")), 40))
	}
	u, err := s.store.UserByID(id)
	return u, notFoundAs(err, "no user with id %d", id)
}

// handleAPIRemoveUser is DELETE /api/v1/users/:id.
func (s *server) handleAPIRemoveUser(w http.ResponseWriter, r *http.Request, ps httprouter.Params, c *caller) {
	u, err := s.apiUser(ps)
	if err == nil {
		err = s.accounts().RemoveUser(s.actorOf(r, c.user, viaAPI), u.ID)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("user removed", "user_id", u.ID, "by_user_id", c.user.ID, "by_token", c.token.ID)
	w.WriteHeader(http.StatusNoContent)
}

// handleAPIResetPassword is POST /api/v1/users/:id/password.
func (s *server) handleAPIResetPassword(w http.ResponseWriter, r *http.Request, ps httprouter.Params, c *caller) {
	var req struct {
		Password     string `json:"password"`
		RevokeTokens bool   `json:"revoke_tokens"`
	}
	u, err := s.apiUser(ps)
	if err == nil {
		err = decodeJSON(w, r, &req)
	}
	var done accountChange
	if err == nil {
		done, err = s.accounts().ResetPassword(r.Context(), s.actorOf(r, c.user, viaAPI), u.ID, req.Password, req.RevokeTokens, sessionHash{})
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("password reset", "user_id", u.ID, "by_user_id", c.user.ID, "by_token", c.token.ID,
		"tokens_revoked", done.Tokens, "sessions_ended", done.Sessions)
	s.writeJSON(w, r, http.StatusOK, changeJSON(done))
}

// handleAPISetAdmin is PUT /api/v1/users/:id/admin.
func (s *server) handleAPISetAdmin(w http.ResponseWriter, r *http.Request, ps httprouter.Params, c *caller) {
	var req struct {
		Admin *bool `json:"admin"`
	}
	u, err := s.apiUser(ps)
	if err == nil {
		err = decodeJSON(w, r, &req)
	}
	if err == nil && req.Admin == nil {
		err = clientError(http.StatusBadRequest, "the field admin (true or false) is required")
	}
	if err == nil {
		u, err = s.accounts().SetAdmin(s.actorOf(r, c.user, viaAPI), u.ID, *req.Admin)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("admin changed", "user_id", u.ID, "admin", u.Admin, "by_user_id", c.user.ID, "by_token", c.token.ID)
	s.writeJSON(w, r, http.StatusOK, userJSON{ID: u.ID, Name: u.Name, Admin: u.Admin, CreatedAt: u.CreatedAt.UTC()})
}

// handleAPIRevokeUserTokens is DELETE /api/v1/users/:id/tokens.
func (s *server) handleAPIRevokeUserTokens(w http.ResponseWriter, r *http.Request, ps httprouter.Params, c *caller) {
	u, err := s.apiUser(ps)
	var done accountChange
	if err == nil {
		done, err = s.accounts().RevokeAllTokens(s.actorOf(r, c.user, viaAPI), u.ID)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("tokens revoked", "user_id", u.ID, "tokens", done.Tokens, "by_user_id", c.user.ID, "by_token", c.token.ID)
	s.writeJSON(w, r, http.StatusOK, changeJSON(done))
}

// handleAPIChangePassword is POST /api/v1/user/password: the caller
// changes their own password, giving the current one.
func (s *server) handleAPIChangePassword(w http.ResponseWriter, r *http.Request, _ httprouter.Params, c *caller) {
	var req struct {
		Current      string `json:"current_password"`
		Password     string `json:"password"`
		RevokeTokens bool   `json:"revoke_tokens"`
		EndSessions  bool   `json:"end_sessions"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	done, err := s.accounts().ChangePassword(r.Context(), s.actorOf(r, c.user, viaAPI), c.user, ownPasswordChange{
		Current: req.Current, New: req.Password, RevokeTokens: req.RevokeTokens, EndOtherSessions: req.EndSessions,
	}, func(current string) error {
		u, err := s.store.UserByID(c.user.ID) // the caller's record holds no password hash
		if err != nil {
			return err
		}
		return s.confirmPassword(r, u, current)
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("password changed", "user_id", c.user.ID, "by_token", c.token.ID, "tokens_revoked", done.Tokens, "sessions_ended", done.Sessions)
	s.writeJSON(w, r, http.StatusOK, changeJSON(done))
}
