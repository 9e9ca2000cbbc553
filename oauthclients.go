package main

import (
	"cmp"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/julienschmidt/httprouter"
)

// Managing the OAuth server's clients and the grants users made to them.
// Each action is one function that the admin page, the JSON API and the
// command line all call (as the account actions of actions.go are), so
// that they cannot drift apart: the transports only read their input,
// check who may ask, and present the outcome. Bad input is an httpError
// that says what is wrong, returned before anything is written.

const (
	maxClientNameLen  = 60 // characters; shown on the consent page
	maxRedirectURIs   = 10 // per client
	maxRedirectURILen = 1000
	minAccessTTL      = 5 * time.Minute
	maxAccessTTL      = 30 * 24 * time.Hour
	clientIDLen       = 22 // base62 characters: about 131 random bits
	// clientSecretPrefix starts every client secret, so that secret
	// scanners (and people) tell one from a user's token.
	clientSecretPrefix = "tkdcs_"
)

// clientSecretFormat is the format of client secrets: a token's, with a
// prefix of their own, checksum included. Only hashToken of a secret is
// stored.
var clientSecretFormat = tokenFormat{prefix: clientSecretPrefix}

// oauthActions performs the actions on clients and grants over a store.
// It needs no server: the command line builds one over the database it
// opened.
type oauthActions struct {
	store store
	now   func() time.Time
}

// oauthActions returns the client and grant actions over the server's store.
func (s *server) oauthActions() oauthActions {
	return oauthActions{store: s.store, now: s.now}
}

// clientSpec is what an admin asks for in a new client.
type clientSpec struct {
	Name         string
	RedirectURIs []string
	Public       bool          // no secret: PKCE alone (apps on devices, single-page apps)
	Device       bool          // may use the device authorization grant
	AccessTTL    time.Duration // of its access tokens; 0: defaultAccessTTL
	CreatedBy    uint64        // the admin's user id; 0 at the command line
}

// errNoClient answers a client id or name that names no client.
func errNoClient(idOrName string) error {
	return clientError(http.StatusNotFound, "no client with id or name %q", truncate(redactTokens(idOrName), 60))
}

// AddClient registers the client spec describes and returns it with its
// secret, which exists nowhere else, or "" for a public client. It returns
// an httpError for a spec it refuses (400) or a name taken, ignoring case
// (409), having stored nothing.
func (a oauthActions) AddClient(by actor, spec clientSpec) (clientRecord, string, error) {
	c, err := checkClientSpec(spec)
	if err != nil {
		return clientRecord{}, "", err
	}
	if c.ID, err = newClientID(); err != nil {
		return clientRecord{}, "", err
	}
	var secret string
	if !c.Public {
		if secret, err = clientSecretFormat.generate(); err != nil {
			return clientRecord{}, "", err
		}
		h := hashToken(secret)
		c.SecretHash = &h
	}
	c.CreatedAt = a.now().UTC()
	if err := a.store.CreateClient(by, &c); err != nil {
		if errors.Is(err, errNameTaken) {
			return clientRecord{}, "", clientError(http.StatusConflict, "a client called %q already exists", c.Name)
		}
		return clientRecord{}, "", err
	}
	return c, secret, nil
}

// checkClientSpec validates spec and returns the client it describes,
// without id, secret or time. Its errors are httpErrors that say what is
// wrong.
func checkClientSpec(spec clientSpec) (clientRecord, error) {
	name := strings.TrimSpace(spec.Name)
	switch {
	case name == "":
		return clientRecord{}, clientError(http.StatusBadRequest, "name is required: the app's name, as people will see it when they approve it")
	case !utf8.ValidString(name) || strings.ContainsRune(name, utf8.RuneError):
		return clientRecord{}, clientError(http.StatusBadRequest, "name must be valid UTF-8")
	case strings.ContainsFunc(name, unicode.IsControl):
		return clientRecord{}, clientError(http.StatusBadRequest, "name must not contain control characters")
	case utf8.RuneCountInString(name) > maxClientNameLen:
		return clientRecord{}, clientError(http.StatusBadRequest, "name must be at most %d characters", maxClientNameLen)
	}
	var uris []string
	for _, u := range spec.RedirectURIs {
		if err := checkRedirectURI(u); err != nil {
			return clientRecord{}, err
		}
		if !slices.Contains(uris, u) {
			uris = append(uris, u)
		}
	}
	switch {
	case len(uris) > maxRedirectURIs:
		return clientRecord{}, clientError(http.StatusBadRequest, "a client may have at most %d redirect URIs, not %d", maxRedirectURIs, len(uris))
	case len(uris) == 0 && !spec.Device && spec.Public:
		// A confidential client with no flow is a service that only
		// introspects and revokes tokens; a public one could do nothing.
		return clientRecord{}, clientError(http.StatusBadRequest, "give a public client a redirect URI (for the authorization code flow) or let it use the device flow, or both")
	case spec.AccessTTL != 0 && (spec.AccessTTL < minAccessTTL || spec.AccessTTL > maxAccessTTL):
		return clientRecord{}, clientError(http.StatusBadRequest, "the access token lifetime must be from 5m to 720h (30 days), not %v", spec.AccessTTL)
	}
	return clientRecord{
		Name:         name,
		RedirectURIs: uris,
		Public:       spec.Public,
		Device:       spec.Device,
		AccessTTL:    spec.AccessTTL,
		CreatedBy:    spec.CreatedBy,
	}, nil
}

// checkRedirectURI returns an httpError (400) unless raw may be registered
// as a redirect URI: absolute, without a fragment (RFC 6749 §3.1.2) or
// user info, and either https, or http on a loopback host (127.0.0.1,
// [::1] or localhost: an app on the user's own machine, RFC 8252 §7.3),
// or a private-use scheme with a dot in it, such as com.example.app:/cb,
// for an app on a device (RFC 8252 §7.1). Matching a request's redirect
// URI against the registered ones is the protocol's business (oauth.go).
func checkRedirectURI(raw string) error {
	bad := func(why string) error {
		return clientError(http.StatusBadRequest, "redirect URI %q: %s", truncate(raw, 100), why)
	}
	if raw == "" {
		return clientError(http.StatusBadRequest, "a redirect URI is empty")
	}
	if len(raw) > maxRedirectURILen {
		return bad(fmt.Sprintf("longer than %d bytes", maxRedirectURILen))
	}
	if strings.ContainsFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f }) || !utf8.ValidString(raw) {
		return bad("spaces and control characters are not allowed")
	}
	if strings.Contains(raw, "#") {
		return bad("a redirect URI must not have a fragment (#…)")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return bad("want an absolute URI, such as https://app.example.com/callback")
	}
	if u.User != nil {
		return bad("a redirect URI must not hold a user name or password")
	}
	switch scheme := strings.ToLower(u.Scheme); {
	case scheme == "https":
		if u.Host == "" || u.Hostname() == "" {
			return bad("an https URI needs a host")
		}
	case scheme == "http":
		switch u.Hostname() {
		case "127.0.0.1", "::1", "localhost":
		default:
			return bad("plain http is allowed only on the loopback host (127.0.0.1, [::1] or localhost); use https")
		}
	case strings.Contains(scheme, "."):
		// A private-use scheme is a reversed domain name the app's
		// publisher controls (RFC 8252 §7.1); it names no host.
		if u.Host != "" || u.Opaque == "" && u.Path == "" {
			return bad("a private-use scheme URI looks like com.example.app:/callback")
		}
	default:
		return bad("want https, http on a loopback host, or a private-use scheme with a dot, such as com.example.app:/callback")
	}
	return nil
}

// newClientID returns a new client id: clientIDLen base62 characters
// drawn uniformly from crypto/rand, which fit in a URL as they are.
func newClientID() (string, error) {
	b := make([]byte, 0, clientIDLen)
	var buf [32]byte
	for len(b) < clientIDLen {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("read random bytes: %w", err)
		}
		for _, r := range buf {
			// Rejection sampling, as tokenFormat.generate does.
			if v := r & 63; v < 62 && len(b) < clientIDLen {
				b = append(b, base62Alphabet[v])
			}
		}
	}
	return string(b), nil
}

// FindClient returns the client whose id is idOrName or, failing that,
// whose name it is, ignoring case. It returns an httpError (404) when
// there is none.
func (a oauthActions) FindClient(idOrName string) (clientRecord, error) {
	c, err := a.store.ClientByID(idOrName)
	if !errors.Is(err, errNotFound) {
		return c, err
	}
	clients, err := a.store.Clients()
	if err != nil {
		return clientRecord{}, err
	}
	for _, c := range clients {
		if strings.EqualFold(c.Name, strings.TrimSpace(idOrName)) {
			return c, nil
		}
	}
	return clientRecord{}, errNoClient(idOrName)
}

// RemoveClient removes the client whose id or name (see FindClient) is
// idOrName, with every grant made to it: their access tokens stop working
// at once and their refresh tokens are gone. It returns the client
// removed, or an httpError (404) when there is none.
func (a oauthActions) RemoveClient(by actor, idOrName string) (clientRecord, error) {
	c, err := a.FindClient(idOrName)
	if err != nil {
		return clientRecord{}, err
	}
	c, err = a.store.DeleteClient(by, c.ID)
	if errors.Is(err, errNotFound) {
		return clientRecord{}, errNoClient(idOrName) // removed meanwhile
	}
	return c, err
}

// ListClients returns every client, by name.
func (a oauthActions) ListClients() ([]clientRecord, error) {
	return a.store.Clients()
}

// grantView is a grant with the name of its client, as the transports
// show it.
type grantView struct {
	grantRecord
	ClientName string
}

// GrantsOf returns the grants of user, newest first, each with its
// client's name.
func (a oauthActions) GrantsOf(user uint64) ([]grantView, error) {
	grants, err := a.store.GrantsOf(user)
	if err != nil || len(grants) == 0 {
		return nil, err
	}
	clients, err := a.store.Clients()
	if err != nil {
		return nil, err
	}
	names := make(map[string]string, len(clients))
	for _, c := range clients {
		names[c.ID] = c.Name
	}
	out := make([]grantView, 0, len(grants))
	for _, g := range grants {
		out = append(out, grantView{grantRecord: g, ClientName: names[g.Client]})
	}
	return out, nil
}

// RevokeGrant revokes grant id of owner (anyOwner: of anyone, for an
// admin or the operator): its access tokens stop working at once and its
// refresh tokens are gone. It returns the grant revoked, or an httpError
// (404) when owner holds no such grant.
func (a oauthActions) RevokeGrant(by actor, id, owner uint64) (grantRecord, error) {
	g, err := a.store.DeleteGrant(by, id, owner)
	return g, notFoundAs(err, "no authorized app with id %d", id)
}

// accessTTL is the lifetime of the access tokens c receives.
func (c clientRecord) accessTTL() time.Duration {
	if c.AccessTTL == 0 {
		return defaultAccessTTL
	}
	return c.AccessTTL
}

// parseAccessTTL reads an access token lifetime as an admin types it: a
// Go duration (90m, 8h) or a number of days (7d); "" is the default.
// Its errors are httpErrors.
func parseAccessTTL(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		// Bounded here, before the multiplication, which could overflow.
		if n, err := strconv.Atoi(days); err == nil && n > 0 && n <= 30 {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	} else if d, err := time.ParseDuration(s); err == nil {
		return d, nil
	}
	return 0, clientError(http.StatusBadRequest, "access token lifetime %q: want a duration such as 30m or 8h, or a number of days such as 7d", truncate(s, 40))
}

// kind says whether c is a confidential or a public client.
func (c clientRecord) kind() string {
	if c.Public {
		return "public"
	}
	return "confidential"
}

// flows names the grant types c may use: "code", "device" or "code,device",
// or "introspect" for a confidential client with neither, which only
// introspects and revokes.
func (c clientRecord) flows() string {
	var f []string
	if len(c.RedirectURIs) > 0 {
		f = append(f, "code")
	}
	if c.Device {
		f = append(f, "device")
	}
	if len(f) == 0 {
		return "introspect"
	}
	return strings.Join(f, ",")
}

// ---- the clients API (admins) and the grants API (everyone's own) ----

// clientJSON is a client as the API shows it.
type clientJSON struct {
	ID               string    `json:"id"`
	Name             string    `json:"name"`
	RedirectURIs     []string  `json:"redirect_uris"`
	Public           bool      `json:"public"`
	Device           bool      `json:"device"`
	AccessTTLSeconds int64     `json:"access_ttl_seconds"`
	CreatedAt        time.Time `json:"created_at"`
	// Secret is only in the answer that registers a confidential client.
	Secret string `json:"client_secret,omitempty"`
}

func newClientJSON(c clientRecord) clientJSON {
	j := clientJSON{ID: c.ID, Name: c.Name, RedirectURIs: c.RedirectURIs, Public: c.Public, Device: c.Device,
		AccessTTLSeconds: int64(c.accessTTL() / time.Second), CreatedAt: c.CreatedAt.UTC()}
	if j.RedirectURIs == nil {
		j.RedirectURIs = []string{}
	}
	return j
}

// handleAPIListClients is GET /api/v1/clients.
func (s *server) handleAPIListClients(w http.ResponseWriter, r *http.Request, _ httprouter.Params, _ *caller) {
	clients, err := s.oauthActions().ListClients()
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]clientJSON, 0, len(clients))
	for _, c := range clients {
		out = append(out, newClientJSON(c))
	}
	s.writeJSON(w, r, http.StatusOK, out)
}

// handleAPIAddClient is POST /api/v1/clients: 201 with the client and,
// for a confidential one, its secret, shown this once.
func (s *server) handleAPIAddClient(w http.ResponseWriter, r *http.Request, _ httprouter.Params, c *caller) {
	var req struct {
		Name             string   `json:"name"`
		RedirectURIs     []string `json:"redirect_uris"`
		Public           bool     `json:"public"`
		Device           bool     `json:"device"`
		AccessTTLSeconds int64    `json:"access_ttl_seconds"`
	}
	if err := decodeJSON(w, r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	// Bounded before it becomes a duration, which could overflow.
	if n := req.AccessTTLSeconds; n != 0 && (n < int64(minAccessTTL/time.Second) || n > int64(maxAccessTTL/time.Second)) {
		s.writeError(w, r, clientError(http.StatusBadRequest, "access_ttl_seconds must be from %d to %d, or 0 for the default (%d)",
			int64(minAccessTTL/time.Second), int64(maxAccessTTL/time.Second), int64(defaultAccessTTL/time.Second)))
		return
	}
	client, secret, err := s.oauthActions().AddClient(s.actorOf(r, c.user, viaAPI), clientSpec{Name: req.Name, RedirectURIs: req.RedirectURIs,
		Public: req.Public, Device: req.Device, AccessTTL: time.Duration(req.AccessTTLSeconds) * time.Second, CreatedBy: c.user.ID})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("client added", "client_id", client.ID, "public", client.Public, "device", client.Device, "by_user_id", c.user.ID, "by_token", c.token.ID)
	j := newClientJSON(client)
	j.Secret = secret
	w.Header().Set("Cache-Control", "no-store")
	s.writeJSON(w, r, http.StatusCreated, j)
}

// handleAPIGetClient is GET /api/v1/clients/:id.
func (s *server) handleAPIGetClient(w http.ResponseWriter, r *http.Request, ps httprouter.Params, _ *caller) {
	client, err := s.oauthActions().FindClient(ps.ByName("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.writeJSON(w, r, http.StatusOK, newClientJSON(client))
}

// handleAPIRemoveClient is DELETE /api/v1/clients/:id.
func (s *server) handleAPIRemoveClient(w http.ResponseWriter, r *http.Request, ps httprouter.Params, c *caller) {
	client, err := s.oauthActions().RemoveClient(s.actorOf(r, c.user, viaAPI), ps.ByName("id"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("client removed", "client_id", client.ID, "by_user_id", c.user.ID, "by_token", c.token.ID)
	w.WriteHeader(http.StatusNoContent)
}

// grantJSON is a grant as the API shows it.
type grantJSON struct {
	ID         uint64     `json:"id"`
	ClientID   string     `json:"client_id"`
	ClientName string     `json:"client_name"`
	Scopes     []string   `json:"scopes"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	ExpiresAt  time.Time  `json:"expires_at"`
}

// handleAPIListGrants is GET /api/v1/user/grants: the caller's authorized
// apps, newest first.
func (s *server) handleAPIListGrants(w http.ResponseWriter, r *http.Request, _ httprouter.Params, c *caller) {
	grants, err := s.oauthActions().GrantsOf(c.user.ID)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make([]grantJSON, 0, len(grants))
	for _, g := range grants {
		j := grantJSON{ID: g.ID, ClientID: g.Client, ClientName: g.ClientName, Scopes: g.Scopes,
			CreatedAt: g.CreatedAt.UTC(), LastUsedAt: utcPtr(g.LastUsedAt), ExpiresAt: g.ExpiresAt.UTC()}
		if j.Scopes == nil {
			j.Scopes = []string{}
		}
		out = append(out, j)
	}
	s.writeJSON(w, r, http.StatusOK, out)
}

// grantID parses the :id path parameter. A malformed id names no grant of
// the caller's, so it is a 404 like any other.
func grantID(ps httprouter.Params) (uint64, error) {
	id, err := strconv.ParseUint(ps.ByName("id"), 10, 64)
	if err != nil || id == 0 {
		return 0, clientError(http.StatusNotFound, "no authorized app with id %q", truncate(redactTokens(ps.ByName("id")), 40))
	}
	return id, nil
}

// handleAPIRevokeGrant is DELETE /api/v1/user/grants/:id.
func (s *server) handleAPIRevokeGrant(w http.ResponseWriter, r *http.Request, ps httprouter.Params, c *caller) {
	id, err := grantID(ps)
	if err == nil {
		_, err = s.oauthActions().RevokeGrant(s.actorOf(r, c.user, viaAPI), id, c.user.ID)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("grant revoked", "grant_id", id, "user_id", c.user.ID, "by_token", c.token.ID)
	w.WriteHeader(http.StatusNoContent)
}

// ---- the clients page (admins) and authorized apps (the account page) ----

// clientRow is a client as the pages show it.
type clientRow struct {
	ID, Name     string
	Kind, Flows  string
	RedirectURIs []string
	AccessTTL    string // "8h0m0s"
	Created      when
}

func (s *server) clientRow(c clientRecord) clientRow {
	return clientRow{ID: c.ID, Name: c.Name, Kind: c.kind(), Flows: c.flows(), RedirectURIs: c.RedirectURIs,
		AccessTTL: c.accessTTL().String(), Created: s.when(c.CreatedAt)}
}

// clientForm is what the add-client form held when it was sent.
type clientForm struct {
	Name, RedirectURIs, AccessTTL string
	Public, Device                bool
}

// clientsPage is the data of clients.html.
type clientsPage struct {
	Clients []clientRow
	Form    clientForm
	// New is the client just registered, and Secret its secret, shown in
	// the answer to the form that registered it and nowhere else.
	New    *clientRow
	Secret string
}

func (s *server) showClientsPage(w http.ResponseWriter, r *http.Request, sess *session, status int, data clientsPage, errMsg string) {
	clients, err := s.oauthActions().ListClients()
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	for _, c := range clients {
		data.Clients = append(data.Clients, s.clientRow(c))
	}
	s.renderPage(w, r, sess, status, "clients.html", &page{Title: "OAuth clients", Nav: "clients", Error: errMsg, ErrorAt: "add", Data: data})
}

func (s *server) handleClientsPage(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	s.showClientsPage(w, r, sess, http.StatusOK, clientsPage{}, "")
}

// handleAddClient registers a client and answers with the clients page
// showing its secret, this once: the answer is not cached (setPageHeaders),
// and sending the form again makes nothing, the name being taken.
func (s *server) handleAddClient(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	form := clientForm{
		Name:         r.PostForm.Get("name"),
		RedirectURIs: r.PostForm.Get("redirect_uris"),
		AccessTTL:    r.PostForm.Get("access_ttl"),
		Public:       r.PostForm.Get("public") != "",
		Device:       r.PostForm.Get("device") != "",
	}
	show := func(status int, msg string) { s.showClientsPage(w, r, sess, status, clientsPage{Form: form}, msg) }
	if err := s.checkSudo(r, sess); err != nil {
		s.formFailed(w, r, sess, err, show)
		return
	}
	ttl, err := parseAccessTTL(form.AccessTTL)
	if err != nil {
		s.formFailed(w, r, sess, err, show)
		return
	}
	var uris []string
	for _, line := range strings.Split(form.RedirectURIs, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			uris = append(uris, line)
		}
	}
	c, secret, err := s.oauthActions().AddClient(s.actorOf(r, sess.user, viaPage), clientSpec{Name: form.Name, RedirectURIs: uris,
		Public: form.Public, Device: form.Device, AccessTTL: ttl, CreatedBy: sess.user.ID})
	if err != nil {
		s.formFailed(w, r, sess, err, show)
		return
	}
	s.log.Info("client added", "client_id", c.ID, "public", c.Public, "device", c.Device, "by_user_id", sess.user.ID, "by", "page")
	row := s.clientRow(c)
	s.showClientsPage(w, r, sess, http.StatusCreated, clientsPage{New: &row, Secret: secret}, "")
}

// pageClient returns the client named by the :id parameter.
func (s *server) pageClient(ps httprouter.Params) (clientRecord, error) {
	c, err := s.store.ClientByID(ps.ByName("id"))
	return c, err
}

func (s *server) showClientPage(w http.ResponseWriter, r *http.Request, sess *session, status int, c clientRecord, errMsg string) {
	s.renderPage(w, r, sess, status, "client.html", &page{Title: c.Name, Nav: "clients", Error: errMsg, ErrorAt: "remove", Data: s.clientRow(c)})
}

func (s *server) handleClientPage(w http.ResponseWriter, r *http.Request, ps httprouter.Params, sess *session) {
	c, err := s.pageClient(ps)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	s.showClientPage(w, r, sess, http.StatusOK, c, "")
}

func (s *server) handleRemoveClient(w http.ResponseWriter, r *http.Request, ps httprouter.Params, sess *session) {
	c, err := s.pageClient(ps)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	show := func(status int, msg string) { s.showClientPage(w, r, sess, status, c, msg) }
	if err := s.checkSudo(r, sess); err != nil {
		s.formFailed(w, r, sess, err, show)
		return
	}
	if r.PostForm.Get("confirm") == "" {
		show(http.StatusBadRequest, "Tick the box to confirm that "+c.Name+" and every token it holds go.")
		return
	}
	if c, err = s.oauthActions().RemoveClient(s.actorOf(r, sess.user, viaPage), c.ID); err != nil {
		s.formFailed(w, r, sess, err, show)
		return
	}
	s.log.Info("client removed", "client_id", c.ID, "by_user_id", sess.user.ID, "by", "page")
	s.setFlash(w, r, "Removed "+c.Name+"; every approval of it is revoked.")
	seeOther(w, r, "/admin/clients")
}

// grantRow is an authorized app as the account page lists it.
type grantRow struct {
	ID         uint64
	ClientName string
	Scopes     []string
	Approved   when
	LastUsed   when // when not Unused
	Unused     bool
}

// grantRows returns the authorized apps of user, newest first.
func (s *server) grantRows(user uint64) ([]grantRow, error) {
	grants, err := s.oauthActions().GrantsOf(user)
	if err != nil {
		return nil, err
	}
	rows := make([]grantRow, 0, len(grants))
	for _, g := range grants {
		row := grantRow{ID: g.ID, ClientName: cmp.Or(g.ClientName, g.Client), Scopes: g.Scopes,
			Approved: s.when(g.CreatedAt), Unused: g.LastUsedAt == nil}
		if g.LastUsedAt != nil {
			row.LastUsed = s.when(*g.LastUsedAt)
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// pageGrant returns the grant named by the :id parameter if sess's user
// made it, and errNotFound otherwise.
func (s *server) pageGrant(ps httprouter.Params, sess *session) (grantRow, error) {
	id, err := strconv.ParseUint(ps.ByName("id"), 10, 64)
	if err != nil || id == 0 {
		return grantRow{}, errNotFound
	}
	rows, err := s.grantRows(sess.user.ID)
	if err != nil {
		return grantRow{}, err
	}
	for _, g := range rows {
		if g.ID == id {
			return g, nil
		}
	}
	return grantRow{}, errNotFound
}

// handleConfirmRevokeGrant asks to confirm the revocation of a grant, as
// the token page does for a token.
func (s *server) handleConfirmRevokeGrant(w http.ResponseWriter, r *http.Request, ps httprouter.Params, sess *session) {
	g, err := s.pageGrant(ps, sess)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	s.renderPage(w, r, sess, http.StatusOK, "grant.html", &page{Title: "Revoke " + g.ClientName + "?", Nav: "account", Data: g})
}

func (s *server) handleRevokeGrantForm(w http.ResponseWriter, r *http.Request, ps httprouter.Params, sess *session) {
	g, err := s.pageGrant(ps, sess)
	if err == nil {
		_, err = s.oauthActions().RevokeGrant(s.actorOf(r, sess.user, viaPage), g.ID, sess.user.ID)
	}
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	s.log.Info("grant revoked", "grant_id", g.ID, "user_id", sess.user.ID, "by", "page")
	s.setFlash(w, r, fmt.Sprintf("Revoked %s. Its tokens now get 401.", g.ClientName))
	seeOther(w, r, "/account")
}
