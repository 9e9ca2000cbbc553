package main

import (
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/julienschmidt/httprouter"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Authentication decisions, the values of tokend_auth_decisions_total's
// result label. Every request that presents (or lacks) a Bearer token
// where one is needed makes exactly one.
const (
	decisionOK                = "ok"
	decisionInvalidRequest    = "invalid_request"
	decisionInvalidToken      = "invalid_token"
	decisionExpired           = "expired"
	decisionInsufficientScope = "insufficient_scope"
	decisionNoCredentials     = "no_credentials"
	decisionError             = "error"
)

var decisionResults = []string{decisionOK, decisionInvalidRequest, decisionInvalidToken, decisionExpired, decisionInsufficientScope, decisionNoCredentials, decisionError}

// metrics are the Prometheus metrics of one server, on a registry of its
// own: two servers in one process (as in tests) never share a counter.
type metrics struct {
	registry      *prometheus.Registry
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	inFlight      prometheus.Gauge
	authDecisions *prometheus.CounterVec
	purgeRuns     *prometheus.CounterVec
	purgeDeleted  prometheus.Counter
	flushDuration prometheus.Histogram
	handler       http.Handler

	// purgeDeletedOAuth counts the OAuth codes, device requests and
	// grants the purge deleted.
	purgeDeletedOAuth prometheus.Counter

	// requestSeries holds the request counter and histogram of each
	// method, route and status seen, so that a request finds them with one
	// lookup instead of hashing its labels twice. Its keys are bounded:
	// methods are normalised, routes are the registered patterns.
	requestSeries sync.Map // requestKey → *requestSeries
	// decisions are the children of authDecisions, by result.
	decisions map[string]prometheus.Counter
}

type requestKey struct {
	method, route string
	status        int
}

type requestSeries struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// newMetrics registers tokend's metrics, the Go runtime's and the process's
// on a new registry. The totals of users and tokens and the database size
// are read from st at each scrape.
func newMetrics(st store, log *slog.Logger) *metrics {
	reg := prometheus.NewRegistry()
	m := &metrics{
		registry: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokend_http_requests_total",
			Help: "HTTP requests answered, by method, route pattern (none: no route matched) and status.",
		}, []string{"method", "route", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "tokend_http_request_duration_seconds",
			Help:    "Time to answer an HTTP request, by method, route pattern and status.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"method", "route", "status"}),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tokend_http_requests_in_flight",
			Help: "HTTP requests being answered.",
		}),
		authDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokend_auth_decisions_total",
			Help: "Bearer token checks, by result: ok, invalid_request, invalid_token, expired, insufficient_scope, no_credentials or error.",
		}, []string{"result"}),
		purgeRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tokend_purge_runs_total",
			Help: "Passes of the expired-token purge, by result: ok or error.",
		}, []string{"result"}),
		purgeDeleted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokend_purge_deleted_tokens_total",
			Help: "Expired tokens deleted by the purge.",
		}),
		purgeDeletedOAuth: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tokend_purge_deleted_oauth_total",
			Help: "Expired OAuth authorization codes, device requests and grants deleted by the purge.",
		}),
		flushDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tokend_last_used_flush_duration_seconds",
			Help:    "Time to write gathered last-used times to the database, per flush that had any.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
	}
	m.decisions = make(map[string]prometheus.Counter, len(decisionResults))
	for _, r := range decisionResults {
		// Present at 0 from the start, so that rates work.
		m.decisions[r] = m.authDecisions.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "error"} {
		m.purgeRuns.WithLabelValues(r)
	}
	reg.MustRegister(
		m.requests, m.duration, m.inFlight, m.authDecisions, m.purgeRuns, m.purgeDeleted, m.purgeDeletedOAuth, m.flushDuration,
		storeCollector{st}, auditHeadCollector{st},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collectors.NewBuildInfoCollector(),
	)
	if pg, ok := st.(*pgStore); ok {
		reg.MustRegister(invalidationCollector{pg})
	}
	m.handler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError),
		// A database that cannot answer costs its own metrics, not the
		// process and request metrics that may tell why.
		ErrorHandling: promhttp.ContinueOnError,
	})
	return m
}

// observeRequest records one answered request.
func (m *metrics) observeRequest(method, route string, status int, d time.Duration) {
	k := requestKey{method, route, status}
	v, ok := m.requestSeries.Load(k)
	if !ok {
		code := strconv.Itoa(status)
		v, _ = m.requestSeries.LoadOrStore(k, &requestSeries{
			count:    m.requests.WithLabelValues(method, route, code),
			duration: m.duration.WithLabelValues(method, route, code),
		})
	}
	rs := v.(*requestSeries)
	rs.count.Inc()
	rs.duration.Observe(d.Seconds())
}

// observeDecision counts one authentication decision.
func (m *metrics) observeDecision(result string) {
	if c, ok := m.decisions[result]; ok {
		c.Inc()
		return
	}
	m.authDecisions.WithLabelValues(result).Inc()
}

var (
	usersDesc  = prometheus.NewDesc("tokend_users", "Users in the database.", nil, nil)
	tokensDesc = prometheus.NewDesc("tokend_tokens", "Tokens in the database, expired ones not yet purged included.", nil, nil)
	dbSizeDesc = prometheus.NewDesc("tokend_database_size_bytes", "Size of the database file.", nil, nil)
	dbUsedDesc = prometheus.NewDesc("tokend_database_used_bytes", "Bytes of the database file that hold data: its size up to the last page in use, less free pages. Writes fail when it nears -max-db-size.", nil, nil)
)

// storeCollector reads the totals of users and tokens in one read
// transaction, the size of the database file and how much of it holds
// data (for a store kept in a file of its own), when Prometheus scrapes.
type storeCollector struct{ st store }

func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- usersDesc
	ch <- tokensDesc
	ch <- dbSizeDesc
	ch <- dbUsedDesc
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	if users, tokens, err := c.st.Totals(); err != nil {
		ch <- prometheus.NewInvalidMetric(usersDesc, err)
		ch <- prometheus.NewInvalidMetric(tokensDesc, err)
	} else {
		ch <- prometheus.MustNewConstMetric(usersDesc, prometheus.GaugeValue, float64(users))
		ch <- prometheus.MustNewConstMetric(tokensDesc, prometheus.GaugeValue, float64(tokens))
	}
	file, ok := c.st.(fileStore)
	if !ok {
		return // no file of its own: nothing to measure
	}
	if size, err := file.FileSize(); err != nil {
		ch <- prometheus.NewInvalidMetric(dbSizeDesc, err)
	} else {
		ch <- prometheus.MustNewConstMetric(dbSizeDesc, prometheus.GaugeValue, float64(size))
	}
	if used, err := file.UsedBytes(); err != nil {
		ch <- prometheus.NewInvalidMetric(dbUsedDesc, err)
	} else {
		ch <- prometheus.MustNewConstMetric(dbUsedDesc, prometheus.GaugeValue, float64(used))
	}
}

var (
	cacheTrustedDesc = prometheus.NewDesc("tokend_auth_cache_trusted",
		"1 while the auth cache answers from memory; 0 while the invalidation channel is down or catching up, and every token is verified from the database.", nil, nil)
	channelLossesDesc = prometheus.NewDesc("tokend_invalidation_channel_losses_total",
		"Times the PostgreSQL invalidation channel was lost (a dropped connection, or no heartbeat back within a second).", nil, nil)
)

// invalidationCollector reports whether a PostgreSQL store's auth cache is
// trusted and how often its invalidation channel was lost.
type invalidationCollector struct{ st *pgStore }

func (c invalidationCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- cacheTrustedDesc
	ch <- channelLossesDesc
}

func (c invalidationCollector) Collect(ch chan<- prometheus.Metric) {
	trusted := 0.0
	if !c.st.auth.distrusted.Load() {
		trusted = 1
	}
	var losses uint64
	if l := c.st.listener; l != nil {
		losses = l.losses.Load()
	}
	ch <- prometheus.MustNewConstMetric(cacheTrustedDesc, prometheus.GaugeValue, trusted)
	ch <- prometheus.MustNewConstMetric(channelLossesDesc, prometheus.CounterValue, float64(losses))
}

// handleMetrics serves the metrics in Prometheus's text format to loopback
// clients (unless -metrics-loopback is off) and to tokens with the admin
// scope. Behind a reverse proxy on the same machine every client looks like
// loopback: turn -metrics-loopback off there and scrape with an admin token.
func (s *server) handleMetrics(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	if s.cfg.MetricsLoopback && isLoopback(r) {
		s.metrics.handler.ServeHTTP(w, r)
		return
	}
	s.withToken(scopeAdmin, func(w http.ResponseWriter, r *http.Request, _ httprouter.Params, _ *caller) {
		s.metrics.handler.ServeHTTP(w, r)
	})(w, r, ps)
}

// isLoopback reports whether r comes from this machine: 127.0.0.0/8 or ::1.
func isLoopback(r *http.Request) bool {
	ip := net.ParseIP(clientIP(r))
	return ip != nil && ip.IsLoopback()
}
