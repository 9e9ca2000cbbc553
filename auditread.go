package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"
	"github.com/prometheus/client_golang/prometheus"
)

// Reading the security log: the account page's "Security log" and its
// paged view, the admin "Audit log" page, GET /api/v1/audit, and the head
// hash in the log and in /metrics. The CLI's audit verify and export are
// in auditcli.go. Writing events is the store's (auditstore.go, audit.go).

const (
	// accountAuditEvents is how many of your own events the account page
	// shows before its "more" link.
	accountAuditEvents = 20
	// auditPageEvents is how many events a page of the paged views shows.
	auditPageEvents = 50
	// defaultAuditLimit is the API's page when the request sets no limit.
	defaultAuditLimit = 100
	// auditHeadInterval is how often the head of the chain is logged.
	auditHeadInterval = 24 * time.Hour
)

// auditFilter is a query of the log as a person or a program writes it:
// every field as sent, checked by query.
type auditFilter struct {
	User         string   // a user's name, or id
	Kinds        []string // kinds of auditKinds
	Since, Until string   // RFC 3339 times, or dates (YYYY-MM-DD, UTC)
}

// query turns f into an auditQuery, looking its user up in st. Its errors
// are httpErrors (400) that say which value is wrong and what is wanted.
func (f auditFilter) query(st store) (auditQuery, error) {
	var q auditQuery
	var err error
	if f.User != "" {
		if q.User, err = auditUser(st, f.User); err != nil {
			return q, err
		}
	}
	for _, k := range f.Kinds {
		if !isAuditKind(k) {
			return q, clientError(http.StatusBadRequest, "kind: %q is not a kind of event; the kinds are listed in the README", truncate(redactTokens(k), 40))
		}
	}
	q.Kinds = f.Kinds
	if q.Since, err = parseAuditBound("since", f.Since, false); err != nil {
		return q, err
	}
	if q.Until, err = parseAuditBound("until", f.Until, true); err != nil {
		return q, err
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && !q.Until.After(q.Since) {
		return q, clientError(http.StatusBadRequest, "until must be later than since")
	}
	return q, nil
}

// auditUser returns the id of the user called name or, when no user is
// called that and name is a number, that number: the log keeps the
// events of users since removed.
func auditUser(st store, name string) (uint64, error) {
	u, err := st.UserByName(name)
	if err == nil {
		return u.ID, nil
	}
	if !errors.Is(err, errNotFound) {
		return 0, err
	}
	if id, err := strconv.ParseUint(name, 10, 64); err == nil && id > 0 {
		return id, nil
	}
	return 0, clientError(http.StatusBadRequest, "no user called %q", truncate(redactTokens(name), 40))
}

// parseAuditBound parses the since or until bound s: an RFC 3339 time, or a
// date, which stands for the start of that day (UTC) or, for an until
// bound (end), the end of it. "" is no bound.
func parseAuditBound(name, s string, end bool) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.Parse(time.DateOnly, s); err == nil {
		if end {
			d = d.AddDate(0, 0, 1)
		}
		return d, nil
	}
	t, err := parseRFC3339(s)
	if err != nil {
		return t, clientError(http.StatusBadRequest, "%s: %q is neither an RFC 3339 time such as 2030-01-31T12:00:00Z nor a date such as 2030-01-31", name, truncate(redactTokens(s), 40))
	}
	return t, nil
}

// auditCursor parses a before or after cursor: an event's seq, or "" for
// none.
func auditCursor(name, s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, clientError(http.StatusBadRequest, "%s: %q is not a cursor: want the seq of an event, such as the next of a previous page", name, truncate(redactTokens(s), 40))
	}
	return n, nil
}

// ---- the pages ----

// auditRow is an event as the pages list it.
type auditRow struct {
	Seq       uint64
	When      when
	Kind      string // the kind's label
	Outcome   string // "" when ok
	Actor     string
	Subject   string // "" when the actor's own
	TokenHint string
	Client    string
	Detail    string
	// Where says from where: "from 192.0.2.7 · Firefox on Linux · via page".
	Where string
}

func (s *server) auditRows(evs []auditEvent) []auditRow {
	rows := make([]auditRow, 0, len(evs))
	for _, e := range evs {
		row := auditRow{Seq: e.Seq, When: s.when(e.Time), Kind: auditKindLabel(e.Kind), Actor: e.Actor, TokenHint: e.TokenHint,
			Client: e.Client, Detail: e.Detail}
		if e.Outcome != "ok" {
			row.Outcome = e.Outcome
		}
		if e.Subject != e.Actor {
			row.Subject = e.Subject
		}
		var where []string
		if e.Addr != "" {
			where = append(where, "from "+e.Addr)
		}
		if e.Agent != "" {
			where = append(where, browserLabel(e.Agent))
		}
		if e.Via != "" {
			where = append(where, "via "+e.Via)
		}
		row.Where = strings.Join(where, " · ")
		rows = append(rows, row)
	}
	return rows
}

// auditPage is the data of audit.html: the paged security log of one user
// (Admin false) or the admin's audit log with its filters.
type auditPage struct {
	Admin  bool
	Events []auditRow
	// Older links to the next page, "" on the last; Newest to the first,
	// "" on the first.
	Older, Newest string
	// The filter form, as last sent.
	User, Since, Until, Kind string
	Kinds                    []struct{ Kind, Label string }
}

// auditPageLinks sets the links of a page of events evs, asked for with
// the query form (its filters and before cursor); more says whether older
// events remain.
func auditPageLinks(data *auditPage, path string, form url.Values, evs []auditEvent, more bool) {
	v := url.Values{}
	for k, vs := range form {
		if k != "before" && vs[0] != "" {
			v.Set(k, vs[0])
		}
	}
	if form.Get("before") != "" {
		data.Newest = path
		if len(v) > 0 {
			data.Newest += "?" + v.Encode()
		}
	}
	if more {
		v.Set("before", strconv.FormatUint(evs[len(evs)-1].Seq, 10))
		data.Older = path + "?" + v.Encode()
	}
}

// handleSecurityLogPage is GET /account/security-log?before=SEQ: your own
// events, newest first, a page at a time.
func (s *server) handleSecurityLogPage(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	data := auditPage{}
	before, err := auditCursor("before", r.URL.Query().Get("before"))
	if err != nil {
		s.renderPage(w, r, sess, http.StatusBadRequest, "audit.html", &page{Title: "Security log", Nav: "account",
			Error: "That page of the log does not exist: the link is broken. Start again from the newest events.", Data: data})
		return
	}
	evs, err := s.store.AuditEvents(auditQuery{User: sess.user.ID, Before: before, Limit: auditPageEvents + 1})
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	more := len(evs) > auditPageEvents
	evs = evs[:min(len(evs), auditPageEvents)]
	data.Events = s.auditRows(evs)
	auditPageLinks(&data, "/account/security-log", r.URL.Query(), evs, more)
	s.renderPage(w, r, sess, http.StatusOK, "audit.html", &page{Title: "Security log", Nav: "account", Data: data})
}

// accountAudit returns the newest of your own events for the account
// page, and the link to the older ones ("" when there are none).
func (s *server) accountAudit(u userRecord) ([]auditRow, string, error) {
	evs, err := s.store.AuditEvents(auditQuery{User: u.ID, Limit: accountAuditEvents + 1})
	if err != nil {
		return nil, "", err
	}
	more := ""
	if len(evs) > accountAuditEvents {
		evs = evs[:accountAuditEvents]
		more = "/account/security-log?before=" + strconv.FormatUint(evs[len(evs)-1].Seq, 10)
	}
	return s.auditRows(evs), more, nil
}

// handleAuditPage is GET /admin/audit: everyone's events, newest first,
// filtered by user, kind and dates, a page at a time.
func (s *server) handleAuditPage(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	form := r.URL.Query()
	data := auditPage{Admin: true, Kinds: auditKinds, User: form.Get("user"), Kind: form.Get("kind"),
		Since: form.Get("since"), Until: form.Get("until")}
	show := func(status int, msg string) {
		s.renderPage(w, r, sess, status, "audit.html", &page{Title: "Audit log", Nav: "audit", Error: msg, ErrorAt: "filter", Data: data})
	}
	f := auditFilter{User: strings.TrimSpace(data.User), Since: data.Since, Until: data.Until}
	if data.Kind != "" {
		f.Kinds = []string{data.Kind}
	}
	q, err := f.query(s.store)
	if err == nil {
		q.Before, err = auditCursor("before", form.Get("before"))
	}
	if err != nil {
		var he *httpError
		if errors.As(err, &he) {
			show(http.StatusBadRequest, sentence(he.detail))
			return
		}
		s.pageError(w, r, sess, err)
		return
	}
	q.Limit = auditPageEvents + 1
	evs, err := s.store.AuditEvents(q)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	more := len(evs) > auditPageEvents
	evs = evs[:min(len(evs), auditPageEvents)]
	data.Events = s.auditRows(evs)
	auditPageLinks(&data, "/admin/audit", form, evs, more)
	show(http.StatusOK, "")
}

// ---- the API ----

// auditPageJSON is the answer of GET /api/v1/audit.
type auditPageJSON struct {
	Events []auditEvent `json:"events"`
	// Next is the cursor of the next page (for the same parameter,
	// before or after, as this one), nil when this page is the last.
	Next *uint64 `json:"next"`
}

// handleAPIAudit is GET /api/v1/audit: events, newest first (or oldest
// first with after), filtered and paged by cursor.
func (s *server) handleAPIAudit(w http.ResponseWriter, r *http.Request, _ httprouter.Params, _ *caller) {
	q, err := s.apiAuditQuery(r.URL.Query())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	evs, err := s.store.AuditEvents(q)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if evs == nil {
		evs = []auditEvent{} // [] rather than null
	}
	out := auditPageJSON{Events: evs}
	if len(evs) == q.Limit {
		next := evs[len(evs)-1].Seq
		out.Next = &next
	}
	s.writeJSON(w, r, http.StatusOK, out)
}

// apiAuditQuery checks the query parameters of GET /api/v1/audit.
func (s *server) apiAuditQuery(v url.Values) (auditQuery, error) {
	for k := range v {
		switch k {
		case "user", "kind", "since", "until", "before", "after", "limit":
		default:
			return auditQuery{}, clientError(http.StatusBadRequest, "unknown parameter %q; want user, kind, since, until, before, after or limit", truncate(redactTokens(k), 40))
		}
		if k != "kind" && len(v[k]) > 1 {
			return auditQuery{}, clientError(http.StatusBadRequest, "%s is given %d times; want it once", k, len(v[k]))
		}
	}
	q, err := auditFilter{User: v.Get("user"), Kinds: v["kind"], Since: v.Get("since"), Until: v.Get("until")}.query(s.store)
	if err != nil {
		return q, err
	}
	if q.Before, err = auditCursor("before", v.Get("before")); err != nil {
		return q, err
	}
	if q.After, err = auditCursor("after", v.Get("after")); err != nil {
		return q, err
	}
	if q.Before != 0 && q.After != 0 {
		return q, clientError(http.StatusBadRequest, "give before or after, not both")
	}
	q.Limit = defaultAuditLimit
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxAuditPage {
			return q, clientError(http.StatusBadRequest, "limit: %q is not a number from 1 to %d", truncate(redactTokens(l), 20), maxAuditPage)
		}
		q.Limit = n
	}
	return q, nil
}

// ---- the head ----

// logAuditHead logs the newest event's seq and hash, so that a copy of the
// log kept elsewhere can prove that the chain up to it was not rewritten.
func (s *server) logAuditHead() {
	seq, hash, err := s.store.AuditHead()
	if err != nil {
		s.log.Error("read the head of the security log", "err", err)
		return
	}
	s.log.Info(fmt.Sprintf("audit head seq=%d hash=%s", seq, cmp.Or(hash, "none")), "seq", seq, "hash", hash)
}

// auditHeadLogger logs the head of the security log once every interval
// until ctx ends.
func (s *server) auditHeadLogger(ctx context.Context, interval time.Duration) {
	everyTick(ctx, interval, s.logAuditHead)
}

var (
	auditHeadSeqDesc = prometheus.NewDesc("tokend_audit_head_seq",
		"Seq of the newest event of the security log (0: none yet).", nil, nil)
	auditHeadInfoDesc = prometheus.NewDesc("tokend_audit_head_info",
		"Always 1; its hash label is the hash of the newest event of the security log, for keeping elsewhere.", []string{"hash"}, nil)
)

// auditHeadCollector reads the head of the security log when Prometheus
// scrapes.
type auditHeadCollector struct{ st store }

func (c auditHeadCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- auditHeadSeqDesc
	ch <- auditHeadInfoDesc
}

func (c auditHeadCollector) Collect(ch chan<- prometheus.Metric) {
	seq, hash, err := c.st.AuditHead()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(auditHeadSeqDesc, err)
		ch <- prometheus.NewInvalidMetric(auditHeadInfoDesc, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(auditHeadSeqDesc, prometheus.GaugeValue, float64(seq))
	ch <- prometheus.MustNewConstMetric(auditHeadInfoDesc, prometheus.GaugeValue, 1, hash)
}
