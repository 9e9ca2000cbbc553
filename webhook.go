package main

// Webhooks: the security events that need someone's attention, sent to the
// operator's endpoints, signed as the Standard Webhooks specification says
// (https://www.standardwebhooks.com), from a persistent outbox.
//
// The outbox is fed from the security log, not from the write paths: the
// dispatcher reads the events after its cursor and, in one transaction,
// stores a message for each endpoint and each event that needs attention
// and moves the cursor past them. An event commits with its change and the
// cursor with its messages, so nothing is lost and nothing is sent for a
// change that did not land. The deliverer claims due messages with a lease
// (another instance does not take them while it runs), posts them, and
// records the outcome: delivered on a 2xx, else another attempt after an
// exponential backoff with full jitter, for a day, and then failed. A
// process that dies mid-delivery leaves its lease to run out: the message
// is sent again (at least once; receivers deduplicate by webhook-id).

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/prometheus/client_golang/prometheus"
)

// Webhook message states.
const (
	webhookPending   = "pending"
	webhookDelivered = "delivered"
	webhookFailed    = "failed"
)

var webhookStates = []string{webhookPending, webhookDelivered, webhookFailed}

// webhookKinds are the kinds of security events that are sent, each as a
// message of the same type; token.revoked and tokens.revoked (all of a
// user's) only when someone other than the tokens' owner (or the owner's
// OAuth app) revoked them (see webhookType).
var webhookKinds = map[string]bool{
	kindTokenExpiring: true,
	kindTokenLeaked:   true,
	kindTokenRevoked:  true,
	kindTokensRevoked: true,
	kindSigninNewAddr: true,
}

// webhookType returns the type of the message that ev makes, and false when
// it makes none.
func webhookType(ev *auditEvent) (string, bool) {
	if !webhookKinds[ev.Kind] {
		return "", false
	}
	switch {
	case ev.Kind != kindTokenRevoked && ev.Kind != kindTokensRevoked:
	case ev.ActorID != 0 && ev.ActorID == ev.SubjectID:
		return "", false // owners know what they revoke themselves
	case ev.ActorID == 0 && ev.Client != "":
		return "", false // the owner's app gave back its own access token (RFC 7009)
	}
	return ev.Kind, true
}

// Limits and times of the outbox.
const (
	// webhookRetryFor is how long a message is tried before it fails.
	webhookRetryFor = 24 * time.Hour
	// webhookBackoffBase and webhookBackoffCap bound the wait before the
	// n-th retry: a random time up to min(cap, base·2^(n-1)), at least
	// webhookBackoffFloor.
	webhookBackoffBase  = 5 * time.Second
	webhookBackoffCap   = time.Hour
	webhookBackoffFloor = time.Second
	// webhookTimeout bounds one delivery, from dialling to the answer.
	webhookTimeout = 10 * time.Second
	// webhookLease is how long a claimed message is left alone by other
	// deliverers: longer than a delivery may take.
	webhookLease = 2 * webhookTimeout
	// webhookBatch is the most messages claimed, or events read, at once.
	webhookBatch = 100
	// webhookSenders is the most deliveries in flight at once.
	webhookSenders = 8
	// webhookKeep is how long delivered and failed messages stay, for the
	// admin page, before the purge deletes them.
	webhookKeep = 7 * 24 * time.Hour
	// maxWebhookURLLen bounds an endpoint's URL.
	maxWebhookURLLen = 2000
	// maxWebhookErrorLen bounds the last error a message keeps.
	maxWebhookErrorLen = 300
)

// errWebhookCursorMoved says that another dispatcher moved the cursor
// first: the events it read are dispatched already.
var errWebhookCursorMoved = errors.New("the webhook cursor moved: another instance dispatched these events")

// webhookMessage is one event to send to one endpoint, as the outbox keeps
// it. Its ID and Payload are fixed when it is enqueued, so that every
// attempt sends the same bytes under the same webhook-id.
type webhookMessage struct {
	Num         uint64          `json:"-"`   // the store's key, in order of enqueueing
	ID          string          `json:"id"`  // msg_…
	Seq         uint64          `json:"seq"` // the event's
	Endpoint    string          `json:"endpoint"`
	Type        string          `json:"type"`
	Payload     json.RawMessage `json:"payload"`
	CreatedAt   time.Time       `json:"created_at"`
	State       string          `json:"state"`
	Attempts    int             `json:"attempts"`
	NextAttempt time.Time       `json:"next_attempt"`            // when it is due (or its lease ends)
	LastAttempt *time.Time      `json:"last_attempt,omitempty"`  // nil: never tried
	LastError   string          `json:"last_error,omitempty"`    // kept once delivered
	LastErrorAt *time.Time      `json:"last_error_at,omitempty"` // nil: never failed
}

// webhookEndpoint is an endpoint added on the admin page. Endpoints of the
// configuration are not stored.
type webhookEndpoint struct {
	ID        uint64    `json:"id"`
	URL       string    `json:"url"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy uint64    `json:"created_by"`
}

// webhookEndpointStatus is what the outbox holds for one endpoint.
type webhookEndpointStatus struct {
	Endpoint    string
	Pending     int // messages not yet delivered, failing ones included
	Failing     int // pending messages that failed at least once
	Failed      int // messages given up on (kept for webhookKeep)
	Delivered   int // (kept for webhookKeep)
	LastError   string
	LastErrorAt *time.Time
	LastSuccess *time.Time
	// OldestPending is the creation time of the oldest pending message.
	OldestPending *time.Time
}

// webhookStore is the part of the store contract for the webhook outbox
// and the expiry warnings. Every method is one transaction.
type webhookStore interface {
	// WebhookCursor returns the Seq of the last security event the
	// dispatcher has read (0: none).
	WebhookCursor() (uint64, error)
	// EnqueueWebhooks stores msgs and moves the cursor from from to to, in
	// one transaction, if the cursor is still at from, and
	// errWebhookCursorMoved otherwise. Messages get their Num.
	EnqueueWebhooks(from, to uint64, msgs []webhookMessage) error
	// ClaimWebhooks returns at most limit pending messages due at now,
	// earliest due first, and leases them: they are due again at until.
	// Several instances claiming at once never get the same message.
	ClaimWebhooks(now, until time.Time, limit int) ([]webhookMessage, error)
	// FinishWebhook records an attempt at a message claimed with attempts
	// m.Attempts-1: its State, Attempts, NextAttempt, LastAttempt and
	// LastError. It returns errNotFound when the message is no longer
	// pending at that number of attempts (another deliverer took it over).
	FinishWebhook(m webhookMessage) error
	// WebhookStatus returns what the outbox holds for each endpoint it
	// holds messages for, by endpoint.
	WebhookStatus() ([]webhookEndpointStatus, error)
	// PurgeWebhooks deletes delivered and failed messages last tried
	// before before, and returns how many.
	PurgeWebhooks(ctx context.Context, before time.Time) (int, error)

	// WebhookEndpoints returns the endpoints added on the admin page, in
	// order of addition.
	WebhookEndpoints() ([]webhookEndpoint, error)
	// AddWebhookEndpoint stores e, setting e.ID; errNameTaken when its
	// URL is stored already.
	AddWebhookEndpoint(e *webhookEndpoint) error
	// RemoveWebhookEndpoint deletes endpoint id and returns it; errNotFound
	// when there is none. Its messages stay.
	RemoveWebhookEndpoint(id uint64) (webhookEndpoint, error)

	// WarnExpiring records a token.expiring event, with detail as Detail,
	// for every personal token that expires after now and at or before
	// now+within, whose lifetime is longer than within, and that was not
	// warned of with this detail before: the mark and the event in one
	// transaction, so that each token is warned once per detail, whatever
	// the instances and restarts. It handles at most limit tokens and
	// returns how many it warned of.
	WarnExpiring(now time.Time, within time.Duration, detail string, limit int) (int, error)
}

// expiryWarnings are the thresholds of the expiry warnings, with the
// detail of their events.
var expiryWarnings = []struct {
	within time.Duration
	detail string
}{
	{7 * 24 * time.Hour, "7d"},
	{24 * time.Hour, "1d"},
}

// ---- configuration ----

// webhookURLs is the flag.Value of -webhook: repeatable, and one value may
// hold several URLs separated by commas or spaces, as TOKEND_WEBHOOKS does
// (a comma inside a URL is written %2C).
type webhookURLs struct{ urls *[]string }

func (f webhookURLs) String() string {
	if f.urls == nil {
		return ""
	}
	shown := make([]string, len(*f.urls))
	for i, raw := range *f.urls {
		shown[i] = raw
		if u, err := url.Parse(raw); err == nil {
			shown[i] = u.Redacted() // -print-config runs before the check refuses a password
		}
	}
	return strings.Join(shown, ",")
}

// Set adds the URLs of value. They are checked by config.checkWebhooks,
// not here: the flag package would quote a refused value, and a URL may
// hold a password.
func (f webhookURLs) Set(value string) error {
	parts := strings.FieldsFunc(value, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	if len(parts) == 0 {
		return errors.New("want an http or https URL")
	}
	*f.urls = append(*f.urls, parts...)
	return nil
}

// checkWebhookURL returns raw as an endpoint's URL, or an error that says
// what is wrong with it without repeating a password it may hold.
func checkWebhookURL(raw string) (string, error) {
	if len(raw) > maxWebhookURLLen {
		return "", fmt.Errorf("a webhook URL is longer than %d characters", maxWebhookURLLen)
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return "", errors.New("a webhook URL does not parse: want http://host/path or https://host/path")
	case u.User != nil:
		// It would be stored and shown: a secret has no place there.
		return "", errors.New("a webhook URL holds a user name or password: receivers check the signature instead")
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("webhook URL %q: want http:// or https://", truncate(raw, 80))
	case u.Host == "":
		return "", fmt.Errorf("webhook URL %q has no host", truncate(raw, 80))
	case u.Fragment != "":
		return "", fmt.Errorf("webhook URL %q has a #fragment, which is never sent", truncate(raw, 80))
	}
	return u.String(), nil
}

// webhookHost is how logs name an endpoint: its scheme and host alone,
// since chat services put a secret in a webhook URL's path.
func webhookHost(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Scheme + "://" + u.Host
}

// webhookSecretPrefix begins a Standard Webhooks signing secret.
const webhookSecretPrefix = "whsec_"

// parseWebhookSecret returns the key of a whsec_<base64> secret, of 24 to
// 64 bytes as the specification asks. Its errors never quote the secret.
func parseWebhookSecret(secret string) ([]byte, error) {
	rest, ok := strings.CutPrefix(secret, webhookSecretPrefix)
	if !ok {
		return nil, errors.New("want whsec_ followed by base64, such as the output of: echo whsec_$(head -c 32 /dev/urandom | base64)")
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		return nil, errors.New("the part after whsec_ is not standard base64 (A-Z, a-z, 0-9, +, / and = padding)")
	}
	if len(key) < 24 || len(key) > 64 {
		return nil, fmt.Errorf("the key is %d bytes; want 24 to 64 (32 random bytes are usual)", len(key))
	}
	return key, nil
}

// checkWebhooks checks the webhook settings of c.
func (c *config) checkWebhooks() error {
	if c.WebhookSecret != "" {
		if _, err := parseWebhookSecret(c.WebhookSecret); err != nil {
			return fmt.Errorf("-webhook-secret (TOKEND_WEBHOOK_SECRET): %w", err)
		}
	}
	var urls []string
	for _, raw := range c.Webhooks {
		u, err := checkWebhookURL(raw)
		if err != nil {
			return fmt.Errorf("-webhook (TOKEND_WEBHOOKS): %w", err)
		}
		if !slices.Contains(urls, u) {
			urls = append(urls, u)
		}
	}
	c.Webhooks = urls
	if c.WebhookPoll <= 0 {
		return fmt.Errorf("webhook poll interval %v is not positive", c.WebhookPoll)
	}
	if len(c.Webhooks) > 0 && c.WebhookSecret == "" {
		return errors.New("-webhook-secret (TOKEND_WEBHOOK_SECRET) is required with -webhook (TOKEND_WEBHOOKS): endpoints check every delivery's signature against it; make one with: echo whsec_$(head -c 32 /dev/urandom | base64)")
	}
	return nil
}

// ---- signing ----

// signWebhook returns the webhook-signature header of a message: "v1,"
// and the base64 HMAC-SHA256, keyed by key, of "id.timestamp.body".
func signWebhook(key []byte, id string, timestamp int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id))
	mac.Write([]byte{'.'})
	mac.Write([]byte(strconv.FormatInt(timestamp, 10)))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// webhookPayload is the body of a message, as the specification shapes
// it: the type, when the event happened, and the event itself.
type webhookPayload struct {
	Type      string     `json:"type"`
	Timestamp time.Time  `json:"timestamp"`
	Data      auditEvent `json:"data"`
}

// newWebhookID returns a new message id: msg_ and 32 hex digits.
func newWebhookID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "msg_" + hex.EncodeToString(b[:]), nil
}

// webhookMessages returns the messages that evs make for endpoints, due at
// now.
func webhookMessages(evs []auditEvent, endpoints []string, now time.Time) ([]webhookMessage, error) {
	var out []webhookMessage
	for i := range evs {
		ev := &evs[i]
		typ, ok := webhookType(ev)
		if !ok || len(endpoints) == 0 {
			continue
		}
		body, err := json.Marshal(webhookPayload{Type: typ, Timestamp: ev.Time.UTC(), Data: *ev})
		if err != nil {
			return nil, err
		}
		for _, e := range endpoints {
			id, err := newWebhookID()
			if err != nil {
				return nil, err
			}
			out = append(out, webhookMessage{ID: id, Seq: ev.Seq, Endpoint: e, Type: typ, Payload: body,
				CreatedAt: now, State: webhookPending, NextAttempt: now})
		}
	}
	return out, nil
}

// ---- the dispatcher and the deliverer ----

// webhooks runs the outbox of one server: it dispatches security events
// to messages and delivers them. Build it with newWebhooks.
type webhooks struct {
	st        store
	log       *slog.Logger
	now       func() time.Time
	key       []byte   // nil: no secret, so nothing is sent
	endpoints []string // of the configuration
	client    *http.Client
	// jitter returns a random duration in [0, d]: full jitter. Tests
	// replace it to see the bounds.
	jitter func(d time.Duration) time.Duration
	// poll is how often the outbox looks for new events and due messages.
	poll       time.Duration
	deliveries *prometheus.CounterVec
}

// newWebhooks returns the outbox of a server configured by cfg, its
// metrics registered on reg. cfg has passed check.
func newWebhooks(st store, cfg config, log *slog.Logger, now func() time.Time, reg *prometheus.Registry) *webhooks {
	w := &webhooks{
		st:        st,
		log:       log,
		now:       now,
		endpoints: cfg.Webhooks,
		client: &http.Client{
			Timeout: webhookTimeout,
			// A redirect is an answer other than 2xx: following it would
			// send the event where the operator did not say.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		jitter: func(d time.Duration) time.Duration { return mrand.N(d + 1) },
		poll:   cfg.WebhookPoll,
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokend_webhook_deliveries_total",
			Help: "Webhook delivery attempts, by outcome: delivered, retry (to be tried again) or failed (given up after a day).",
		}, []string{"outcome"}),
	}
	if cfg.WebhookSecret != "" {
		w.key, _ = parseWebhookSecret(cfg.WebhookSecret)
	}
	for _, o := range []string{"delivered", "retry", "failed"} {
		w.deliveries.WithLabelValues(o)
	}
	if reg != nil {
		reg.MustRegister(w.deliveries, webhookCollector{w})
	}
	return w
}

// allEndpoints returns the endpoints of the configuration and of the
// store, each once; none without a signing secret.
func (w *webhooks) allEndpoints() ([]string, error) {
	if w.key == nil {
		return nil, nil
	}
	stored, err := w.st.WebhookEndpoints()
	if err != nil {
		return nil, err
	}
	out := slices.Clone(w.endpoints)
	for _, e := range stored {
		if !slices.Contains(out, e.URL) {
			out = append(out, e.URL)
		}
	}
	return out, nil
}

// dispatch reads the security events after the cursor, a batch at a time,
// and enqueues their messages, until it has read them all. It returns the
// number of messages enqueued. Without endpoints it still moves the
// cursor, so that an endpoint added later is not sent the past.
func (w *webhooks) dispatch(ctx context.Context) (int, error) {
	total := 0
	for ctx.Err() == nil {
		cursor, err := w.st.WebhookCursor()
		if err != nil {
			return total, err
		}
		evs, err := w.st.AuditEvents(auditQuery{After: cursor, Oldest: true, Limit: webhookBatch})
		if err != nil || len(evs) == 0 {
			return total, err
		}
		endpoints, err := w.allEndpoints()
		if err != nil {
			return total, err
		}
		msgs, err := webhookMessages(evs, endpoints, w.now())
		if err != nil {
			return total, err
		}
		switch err := w.st.EnqueueWebhooks(cursor, evs[len(evs)-1].Seq, msgs); {
		case errors.Is(err, errWebhookCursorMoved):
			continue // another instance took them: read on from its cursor
		case err != nil:
			return total, err
		}
		total += len(msgs)
		if len(evs) < webhookBatch {
			break
		}
	}
	return total, nil
}

// deliver claims the due messages, a batch at a time, and sends them,
// until none is due. It returns how many attempts it made. When ctx ends
// during a delivery, the attempt is recorded as interrupted and the
// message is due again at once; if the process dies instead, the lease
// runs out and the message is sent again, by this process or another.
func (w *webhooks) deliver(ctx context.Context) (int, error) {
	if w.key == nil {
		return 0, nil
	}
	total := 0
	for ctx.Err() == nil {
		now := w.now()
		msgs, err := w.st.ClaimWebhooks(now, now.Add(webhookLease), webhookBatch)
		if err != nil || len(msgs) == 0 {
			return total, err
		}
		var wg sync.WaitGroup
		var mu sync.Mutex
		var firstErr error
		slots := make(chan struct{}, webhookSenders)
		for _, m := range msgs {
			slots <- struct{}{}
			wg.Go(func() {
				defer func() { <-slots }()
				if err := w.attempt(ctx, m); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		total += len(msgs)
		if firstErr != nil {
			return total, firstErr
		}
		if len(msgs) < webhookBatch {
			break
		}
	}
	return total, nil
}

// attempt sends m once and records the outcome.
func (w *webhooks) attempt(ctx context.Context, m webhookMessage) error {
	sendErr := w.send(ctx, &m)
	now := w.now()
	m.Attempts++
	m.LastAttempt = &now
	if ctx.Err() != nil {
		// Stopping mid-delivery: the receiver may or may not have it. The
		// message is due at once, for the next start or another instance.
		// (A process killed here records nothing: its lease runs out.)
		m.LastError, m.LastErrorAt, m.NextAttempt = "interrupted: tokend stopped during the delivery", &now, now
		if err := w.st.FinishWebhook(m); err != nil && !errors.Is(err, errNotFound) {
			return fmt.Errorf("record interrupted webhook attempt %s: %w", m.ID, err)
		}
		return nil
	}
	outcome := "delivered"
	if sendErr != nil {
		m.LastError, m.LastErrorAt = truncate(sendErr.Error(), maxWebhookErrorLen), &now
	}
	switch {
	case sendErr == nil:
		m.State = webhookDelivered
	case now.Add(webhookBackoffFloor).Sub(m.CreatedAt) >= webhookRetryFor:
		m.State, outcome = webhookFailed, "failed"
	default:
		outcome = "retry"
		m.NextAttempt = now.Add(w.backoff(m.Attempts))
		if !m.NextAttempt.Before(m.CreatedAt.Add(webhookRetryFor)) {
			// One last try at the end of the day.
			m.NextAttempt = m.CreatedAt.Add(webhookRetryFor)
		}
	}
	switch err := w.st.FinishWebhook(m); {
	case errors.Is(err, errNotFound):
		return nil // another deliverer took it over after the lease ran out
	case err != nil:
		return fmt.Errorf("record webhook attempt %s: %w", m.ID, err)
	}
	w.deliveries.WithLabelValues(outcome).Inc()
	if sendErr != nil {
		host := webhookHost(m.Endpoint)
		w.log.Warn("webhook delivery failed", "msg_id", m.ID, "host", host, "attempts", m.Attempts,
			"state", m.State, "next_attempt", m.NextAttempt, "err", m.LastError)
	}
	return nil
}

// backoff returns the wait after the attempts-th failed attempt: full
// jitter below min(cap, base·2^(attempts-1)), and at least the floor.
func (w *webhooks) backoff(attempts int) time.Duration {
	ceiling := webhookBackoffCap
	if attempts < 20 {
		ceiling = min(webhookBackoffCap, webhookBackoffBase<<max(0, attempts-1))
	}
	return max(webhookBackoffFloor, w.jitter(ceiling))
}

// send posts m to its endpoint with the Standard Webhooks headers. Any
// answer but a 2xx is an error, which names the status or the failure and
// never holds a secret.
func (w *webhooks) send(ctx context.Context, m *webhookMessage) error {
	ts := w.now().Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.Endpoint, bytes.NewReader(m.Payload))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "tokend-webhooks")
	req.Header.Set("webhook-id", m.ID)
	req.Header.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("webhook-signature", signWebhook(w.key, m.ID, ts, m.Payload))
	resp, err := w.client.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // the URL is shown beside it already
		}
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // lets the connection be reused
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}

// run dispatches and delivers at every poll until ctx ends.
func (w *webhooks) run(ctx context.Context) {
	everyTick(ctx, w.poll, func() { w.step(ctx) })
}

// step dispatches the new events and delivers the due messages, logging
// what fails.
func (w *webhooks) step(ctx context.Context) {
	if _, err := w.dispatch(ctx); err != nil && ctx.Err() == nil {
		w.log.Error("dispatch security events to webhooks; will retry", "err", err)
	}
	if _, err := w.deliver(ctx); err != nil && ctx.Err() == nil {
		w.log.Error("deliver webhooks; will retry", "err", err)
	}
}

// warnExpiring records the expiry warnings due at now, and returns how
// many it recorded.
func warnExpiring(ctx context.Context, st store, now time.Time) (int, error) {
	total := 0
	for _, w := range expiryWarnings {
		for ctx.Err() == nil {
			n, err := st.WarnExpiring(now, w.within, w.detail, purgeBatch)
			total += n
			if err != nil {
				return total, fmt.Errorf("warn of tokens expiring within %s: %w", w.detail, err)
			}
			if n < purgeBatch {
				break
			}
		}
	}
	return total, nil
}

// warnExpiringAndPurgeWebhooks records the expiry warnings due and
// deletes the messages delivered or failed more than webhookKeep ago, for
// the purge loop, logging what it did.
func (s *server) warnExpiringAndPurgeWebhooks(ctx context.Context) {
	if n, err := warnExpiring(ctx, s.store, s.now()); err != nil {
		s.log.Error("record expiry warnings; will retry at the next tick", "err", err, "warned", n)
	} else if n > 0 {
		s.log.Info("recorded expiry warnings", "tokens", n)
	}
	if n, err := s.store.PurgeWebhooks(ctx, s.now().Add(-webhookKeep)); err != nil {
		s.log.Error("purge old webhook messages; will retry at the next tick", "err", err)
	} else if n > 0 {
		s.log.Info("purged old webhook messages", "messages", n)
	}
}

// ---- metrics ----

var (
	webhookMessagesDesc = prometheus.NewDesc("tokend_webhook_messages",
		"Webhook messages in the outbox, by state: pending (failing ones included), delivered or failed (both kept a week).", []string{"state"}, nil)
	webhookOldestDesc = prometheus.NewDesc("tokend_webhook_oldest_pending_age_seconds",
		"Age of the oldest webhook message not yet delivered (0: none).", nil, nil)
)

// webhookCollector reads the outbox's figures when Prometheus scrapes.
type webhookCollector struct{ w *webhooks }

func (c webhookCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- webhookMessagesDesc
	ch <- webhookOldestDesc
}

func (c webhookCollector) Collect(ch chan<- prometheus.Metric) {
	status, err := c.w.st.WebhookStatus()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(webhookMessagesDesc, err)
		ch <- prometheus.NewInvalidMetric(webhookOldestDesc, err)
		return
	}
	counts := map[string]int{}
	oldest := 0.0
	for _, s := range status {
		counts[webhookPending] += s.Pending
		counts[webhookDelivered] += s.Delivered
		counts[webhookFailed] += s.Failed
		if s.OldestPending != nil {
			oldest = max(oldest, c.w.now().Sub(*s.OldestPending).Seconds())
		}
	}
	for _, st := range webhookStates {
		ch <- prometheus.MustNewConstMetric(webhookMessagesDesc, prometheus.GaugeValue, float64(counts[st]), st)
	}
	ch <- prometheus.MustNewConstMetric(webhookOldestDesc, prometheus.GaugeValue, oldest)
}
