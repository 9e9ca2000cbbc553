package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The kinds of security events (see auditstore.go for how they are kept).
const (
	kindSigninSucceeded = "signin.succeeded"
	kindSigninFailed    = "signin.failed"
	kindSigninThrottled = "signin.throttled"
	kindSigninNewAddr   = "signin.new_address"
	kindSignout         = "signout"
	kindSessionEnded    = "session.ended"
	kindPasswordChanged = "password.changed"
	kindPasswordReset   = "password.reset"
	kindTokenCreated    = "token.created"
	kindTokenRotated    = "token.rotated"
	kindTokenRevoked    = "token.revoked"
	kindTokenLeaked     = "token.leaked"
	kindTokenPurged     = "token.purged"
	kindTokenExpiring   = "token.expiring"
	kindTokensRevoked   = "tokens.revoked"
	kindUserAdded       = "user.added"
	kindUserRemoved     = "user.removed"
	kindUserPromoted    = "user.promoted"
	kindUserDemoted     = "user.demoted"
	kindSetupUsed       = "setup.used"
	kindBackupTaken     = "backup.taken"
	kindClientAdded     = "client.added"
	kindClientRemoved   = "client.removed"
	kindGrantCreated    = "grant.created"
	kindGrantRevoked    = "grant.revoked"
	kindGrantReused     = "grant.reused"
)

// auditKinds lists every kind of event with the label the pages show, in
// the order the pages offer them.
var auditKinds = []struct{ Kind, Label string }{
	{kindSigninSucceeded, "Signed in"},
	{kindSigninFailed, "Sign-in failed"},
	{kindSigninThrottled, "Sign-in throttled"},
	{kindSigninNewAddr, "Signed in from a new address"},
	{kindSignout, "Signed out"},
	{kindSessionEnded, "Session ended"},
	{kindPasswordChanged, "Password changed"},
	{kindPasswordReset, "Password reset"},
	{kindTokenCreated, "Token created"},
	{kindTokenRotated, "Token rotated"},
	{kindTokenRevoked, "Token revoked"},
	{kindTokenLeaked, "Token reported leaked"},
	{kindTokenPurged, "Expired token purged"},
	{kindTokenExpiring, "Token expiring"},
	{kindTokensRevoked, "All tokens revoked"},
	{kindUserAdded, "User added"},
	{kindUserRemoved, "User removed"},
	{kindUserPromoted, "Made admin"},
	{kindUserDemoted, "Admin rights removed"},
	{kindSetupUsed, "Setup link used"},
	{kindBackupTaken, "Backup taken"},
	{kindClientAdded, "OAuth client added"},
	{kindClientRemoved, "OAuth client removed"},
	{kindGrantCreated, "App authorized"},
	{kindGrantRevoked, "App authorization revoked"},
	{kindGrantReused, "App authorization revoked: a code was used twice"},
}

// auditKindLabel returns the label of kind, or kind itself when unknown.
func auditKindLabel(kind string) string {
	for _, k := range auditKinds {
		if k.Kind == kind {
			return k.Label
		}
	}
	return kind
}

// isAuditKind reports whether kind is one of auditKinds.
func isAuditKind(kind string) bool {
	for _, k := range auditKinds {
		if k.Kind == kind {
			return true
		}
	}
	return false
}

// Outcomes of events.
const (
	outcomeOK        = "ok"
	outcomeFailed    = "failed"
	outcomeThrottled = "throttled"
	outcomeRefused   = "refused"
)

// Ways a change reaches tokend, for actor.Via.
const (
	viaPage   = "page"
	viaAPI    = "api"
	viaOAuth  = "oauth"
	viaCLI    = "cli"
	viaSystem = "system"
)

// actorOf returns the actor of request r made by u (the zero user:
// anonymous) through via: the client's address as clientAddr sees it and
// its user agent, cut to maxAuditAgentLen.
func (s *server) actorOf(r *http.Request, u userRecord, via string) actor {
	a := actor{ID: u.ID, Name: u.Name, Addr: s.clientAddr(r), Agent: auditAgent(r.UserAgent()), Via: via, At: s.now()}
	if u.ID == 0 {
		a.Name = "anonymous"
	}
	return a
}

// viaOf is how request r reached tokend, for a handler that both the pages
// and the API share.
func viaOf(r *http.Request) string {
	if strings.HasPrefix(r.URL.Path, "/api/") {
		return viaAPI
	}
	return viaPage
}

// recordEvent records e, which comes with no change of its own. A failure
// is logged, not returned: the answer the event describes stands.
func (s *server) recordEvent(e auditEvent) {
	if err := s.store.RecordEvents(e); err != nil {
		s.log.Error("record security event", "kind", e.Kind, "err", err)
	}
}

// cliActor is the actor of the operator at the command line, who answers
// to nobody inside tokend: the system, by way of the command line.
var cliActor = actor{Name: "system", Via: viaCLI}

// auditAgent returns user agent ua as an event keeps it: valid UTF-8 (so
// that every engine stores it byte for byte), at most maxAuditAgentLen
// bytes, cut between characters.
func auditAgent(ua string) string {
	ua = strings.ToValidUTF8(ua, "\uFFFD")
	if len(ua) <= maxAuditAgentLen {
		return ua
	}
	n := maxAuditAgentLen
	for n > 0 && !utf8.RuneStart(ua[n]) {
		n--
	}
	return ua[:n]
}

// auditTime returns t as events keep it: UTC, to the microsecond (what
// PostgreSQL stores), with no monotonic reading, so that an event hashes
// the same before and after a round trip through any engine.
func auditTime(t time.Time) time.Time {
	return t.UTC().Truncate(time.Microsecond)
}

// newAuditEvent starts an event of kind made by by, which succeeded. The
// time is by.At, or now when by has none.
func newAuditEvent(by actor, kind string) auditEvent {
	at := by.At
	if at.IsZero() {
		at = time.Now()
	}
	name := by.Name
	if name == "" {
		name = "anonymous"
	}
	return auditEvent{
		Time:    auditTime(at),
		Kind:    kind,
		Outcome: outcomeOK,
		ActorID: by.ID,
		Actor:   name,
		Addr:    by.Addr,
		Agent:   auditAgent(by.Agent),
		Via:     by.Via,
	}
}

// about sets the event's subject to u and returns it.
func (e auditEvent) about(u userRecord) auditEvent {
	e.SubjectID, e.Subject = u.ID, u.Name
	return e
}

// ofToken sets the event's token (id and hint, never more) and returns it.
func (e auditEvent) ofToken(t tokenRecord) auditEvent {
	e.TokenID, e.TokenHint = t.ID, t.Hint
	if t.Client != "" {
		e.Client, e.GrantID = t.Client, t.Grant
	}
	return e
}

// ofGrant sets the event's grant and client and returns it.
func (e auditEvent) ofGrant(g grantRecord) auditEvent {
	e.GrantID, e.Client = g.ID, g.Client
	return e
}

// adminWord describes a user's role, for an event's detail.
func adminWord(admin bool) string {
	if admin {
		return "admin"
	}
	return "user"
}

// roleKind is the kind of event of a user made an admin or not.
func roleKind(admin bool) string {
	if admin {
		return kindUserPromoted
	}
	return kindUserDemoted
}

// sessionEndKind is the kind of event of a session deleted on behalf of
// user: anyOwner is its holder signing out (see store.DeleteSession).
func sessionEndKind(user uint64) string {
	if user == anyOwner {
		return kindSignout
	}
	return kindSessionEnded
}

// passwordEvent is the event of u's password set by by, which took tokens
// and sessions with it: password.changed by u, password.reset by anyone
// else.
func passwordEvent(by actor, u userRecord, tokens, sessions int) auditEvent {
	kind := kindPasswordReset
	if by.ID == u.ID {
		kind = kindPasswordChanged
	}
	return newAuditEvent(by, kind).about(u).withDetail("%s revoked, %s ended", plural(tokens, "token"), plural(sessions, "session"))
}

// clientEvent is the event of OAuth client c added or removed by by.
func clientEvent(by actor, kind string, c *clientRecord) auditEvent {
	e := newAuditEvent(by, kind)
	e.Client = c.ID
	return e.withDetail("%s", c.Name)
}

// withDetail sets the event's detail and returns it.
func (e auditEvent) withDetail(format string, args ...any) auditEvent {
	e.Detail = fmt.Sprintf(format, args...)
	return e
}

// canonical returns the bytes the event's Hash covers: a JSON array of
// every field but Hash, in a fixed order, the time in RFC 3339 UTC to the
// microsecond. Changing it changes every hash: it must not change.
func (e *auditEvent) canonical() []byte {
	b, err := json.Marshal([]any{
		"tokend-audit-1",
		strconv.FormatUint(e.Seq, 10),
		e.Time.UTC().Format("2006-01-02T15:04:05.000000Z07:00"),
		e.Kind, e.Outcome,
		strconv.FormatUint(e.ActorID, 10), e.Actor,
		strconv.FormatUint(e.SubjectID, 10), e.Subject,
		strconv.FormatUint(e.TokenID, 10), e.TokenHint,
		e.Client, strconv.FormatUint(e.GrantID, 10),
		e.Addr, e.Agent, e.Via, e.Detail,
		e.Prev,
	})
	if err != nil {
		panic(err) // strings and numbers always encode
	}
	return b
}

// hash returns the hex SHA-256 of the event's canonical encoding.
func (e *auditEvent) hash() string {
	sum := sha256.Sum256(e.canonical())
	return hex.EncodeToString(sum[:])
}

// chain places e after the event whose Seq and Hash are seq and prev: it
// sets e's Seq, Prev and Hash, and moves its time forward to at least
// after (the time of the event before), so that events are in time order
// as they are in seq order, and a time range is a seq range.
func (e *auditEvent) chain(seq uint64, prev string, after time.Time) {
	e.Seq, e.Prev = seq+1, prev
	e.Time = auditTime(e.Time)
	if e.Time.Before(after) {
		e.Time = auditTime(after)
	}
	e.Hash = e.hash()
}

// auditChain checks events one after another, oldest first, as `audit
// verify` walks the log page by page.
type auditChain struct {
	seq   uint64 // the last event checked; 0 before the first
	prev  string // its Hash, or the anchor before the first
	first bool   // no event checked yet
}

// newAuditChain starts checking a log whose first kept event's Prev must be
// anchor ("" when nothing was purged).
func newAuditChain(anchor string) *auditChain {
	return &auditChain{prev: anchor, first: true}
}

// auditBreak is where a chain does not fit: the first event that does not.
type auditBreak struct {
	Seq    uint64
	Reason string
}

func (b *auditBreak) Error() string {
	return fmt.Sprintf("security log broken at event %d: %s", b.Seq, b.Reason)
}

// next checks e, the event after the last one checked, and returns an
// *auditBreak naming it when it does not fit.
func (c *auditChain) next(e auditEvent) error {
	switch {
	case !c.first && e.Seq != c.seq+1:
		return &auditBreak{e.Seq, fmt.Sprintf("comes after event %d: events %d to %d are missing", c.seq, c.seq+1, e.Seq-1)}
	case c.first && e.Seq == 0:
		return &auditBreak{e.Seq, "it has no sequence number"}
	case e.Prev != c.prev && c.first && c.prev != "":
		return &auditBreak{e.Seq, "its previous hash is not the anchor kept when older events were purged"}
	case e.Prev != c.prev && c.first && e.Seq == 1:
		return &auditBreak{e.Seq, "the first event has a previous hash"}
	case e.Prev != c.prev && !c.first:
		return &auditBreak{e.Seq, fmt.Sprintf("its previous hash is not the hash of event %d", c.seq)}
	case e.Hash != e.hash():
		return &auditBreak{e.Seq, "its content does not match its hash: it was changed after it was recorded"}
	}
	if c.first && c.prev == "" && e.Seq != 1 {
		return &auditBreak{e.Seq, fmt.Sprintf("events 1 to %d are missing and no purge anchor is kept", e.Seq-1)}
	}
	c.seq, c.prev, c.first = e.Seq, e.Hash, false
	return nil
}

// verifyAudit checks that evs, oldest first, form an unbroken chain from
// anchor, and returns an *auditBreak naming the first event that does not
// fit.
func verifyAudit(anchor string, evs []auditEvent) error {
	c := newAuditChain(anchor)
	for _, e := range evs {
		if err := c.next(e); err != nil {
			return err
		}
	}
	return nil
}
