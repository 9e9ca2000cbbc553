package main

import (
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/julienschmidt/httprouter"
)

// The webhooks page, for admins: every endpoint (of the configuration,
// or added here) with what its outbox holds (pending, failing, given up,
// the last error and the last success), and the forms that add and remove
// endpoints. Endpoints added here use the configured signing secret; none
// is stored.

// webhookRow is an endpoint as the webhooks page lists it.
type webhookRow struct {
	URL        string
	ID         uint64 // of an endpoint added on the page; 0: configured
	Configured bool
	Removed    bool // no longer an endpoint, but messages remain
	webhookEndpointStatus
	LastErrorWhen, LastSuccessWhen, OldestWhen *when
}

// webhooksPage is the data of webhooks.html.
type webhooksPage struct {
	HasSecret bool
	Endpoints []webhookRow
	URL       string // the add form, as last sent
}

func (s *server) showWebhooksPage(w http.ResponseWriter, r *http.Request, sess *session, status int, form string, errMsg, errAt string) {
	stored, err := s.store.WebhookEndpoints()
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	statuses, err := s.store.WebhookStatus()
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	data := webhooksPage{HasSecret: s.webhooks.key != nil, URL: form}
	rowOf := func(u string) *webhookRow {
		for i := range data.Endpoints {
			if data.Endpoints[i].URL == u {
				return &data.Endpoints[i]
			}
		}
		data.Endpoints = append(data.Endpoints, webhookRow{URL: u, Removed: true})
		return &data.Endpoints[len(data.Endpoints)-1]
	}
	for _, u := range s.webhooks.endpoints {
		data.Endpoints = append(data.Endpoints, webhookRow{URL: u, Configured: true})
	}
	for _, e := range stored {
		if !slices.Contains(s.webhooks.endpoints, e.URL) {
			data.Endpoints = append(data.Endpoints, webhookRow{URL: e.URL, ID: e.ID})
		}
	}
	for _, st := range statuses {
		row := rowOf(st.Endpoint)
		row.webhookEndpointStatus = st
		if st.LastErrorAt != nil {
			v := s.when(*st.LastErrorAt)
			row.LastErrorWhen = &v
		}
		if st.LastSuccess != nil {
			v := s.when(*st.LastSuccess)
			row.LastSuccessWhen = &v
		}
		if st.OldestPending != nil {
			v := s.when(*st.OldestPending)
			row.OldestWhen = &v
		}
	}
	s.renderPage(w, r, sess, status, "webhooks.html", &page{Title: "Webhooks", Nav: "webhooks", Error: errMsg, ErrorAt: errAt, Data: data})
}

func (s *server) handleWebhooksPage(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	s.showWebhooksPage(w, r, sess, http.StatusOK, "", "", "")
}

func (s *server) handleAddWebhook(w http.ResponseWriter, r *http.Request, _ httprouter.Params, sess *session) {
	raw := strings.TrimSpace(r.PostForm.Get("url"))
	show := func(status int, msg string) { s.showWebhooksPage(w, r, sess, status, raw, msg, "add") }
	if err := s.checkSudo(r, sess); err != nil {
		s.formFailed(w, r, sess, err, show)
		return
	}
	if s.webhooks.key == nil {
		show(http.StatusConflict, "Set the signing secret first (-webhook-secret or TOKEND_WEBHOOK_SECRET) and restart tokend: endpoints check every delivery against it.")
		return
	}
	u, err := checkWebhookURL(raw)
	if err != nil {
		show(http.StatusBadRequest, sentence(err.Error()))
		return
	}
	if slices.Contains(s.webhooks.endpoints, u) {
		show(http.StatusConflict, "That endpoint is in the configuration already.")
		return
	}
	e := webhookEndpoint{URL: u, CreatedAt: s.now(), CreatedBy: sess.user.ID}
	if err := s.store.AddWebhookEndpoint(&e); err != nil {
		if errors.Is(err, errNameTaken) {
			err = clientError(http.StatusConflict, "That endpoint is added already")
		}
		s.formFailed(w, r, sess, err, show)
		return
	}
	host := webhookHost(e.URL)
	s.log.Info("webhook endpoint added", "endpoint_id", e.ID, "host", host, "by_user_id", sess.user.ID)
	s.setFlash(w, r, "Added "+e.URL+". It gets the events recorded from now on.")
	seeOther(w, r, "/admin/webhooks")
}

func (s *server) handleRemoveWebhook(w http.ResponseWriter, r *http.Request, ps httprouter.Params, sess *session) {
	show := func(status int, msg string) { s.showWebhooksPage(w, r, sess, status, "", msg, "") }
	if err := s.checkSudo(r, sess); err != nil {
		s.formFailed(w, r, sess, err, show)
		return
	}
	id, err := strconv.ParseUint(ps.ByName("id"), 10, 64)
	if err != nil || id == 0 {
		s.pageError(w, r, sess, errNotFound)
		return
	}
	e, err := s.store.RemoveWebhookEndpoint(id)
	if err != nil {
		s.pageError(w, r, sess, err)
		return
	}
	host := webhookHost(e.URL)
	s.log.Info("webhook endpoint removed", "endpoint_id", e.ID, "host", host, "by_user_id", sess.user.ID)
	s.setFlash(w, r, "Removed "+e.URL+". Messages already queued for it are still sent.")
	seeOther(w, r, "/admin/webhooks")
}
