package main

// The server: what it holds, how newServer builds it, and its routes.
// The handlers live in the files named for their concern.

import (
	"context"
	"crypto/cipher"
	"fmt"
	"html/template"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/julienschmidt/httprouter"
)

// server holds everything a request needs. Build it with newServer.
type server struct {
	store     store
	format    tokenFormat
	scopes    *scopeRegistry
	hasher    *passwordHasher
	log       *slog.Logger
	now       func() time.Time
	cfg       config
	templates *template.Template
	lastUsed  *lastUsedTracker
	// dummyHash is verified against when a sign-in names no user, so that
	// a failure takes as long whether the user exists or not.
	dummyHash string
	throttle  throttler
	setup     *setupCode
	cop       *http.CrossOriginProtection // guards every form and session POST
	metrics   *metrics
	static    staticFiles // served under /static/
	// misconfigured counts and logs forward auth for undeclared scopes.
	misconfigured *misconfiguredRoutes
	// routeList is "METHOD /pattern" of every route, as routes()
	// registered them.
	routeList []string
	forms     *formOnce // the token forms already answered, and secrets to show once
	// touchFailing is set while recording sessions' last-seen times fails,
	// so that a full disk logs one warning, not one per page view.
	touchFailing atomic.Bool
	userCodes    *userCodeGuesses // wrong device user codes per person
	tfaKeys      *tfaKeys         // the key file that seals TOTP secrets (tfa.go)
	pendingAEAD  cipher.AEAD      // seals the cookie of a sign-in's second step
	// throttledEvents bounds the signin.throttled events a flood records.
	throttledEvents throttledEvents
	webhooks        *webhooks // the outbox (webhook.go)
}

// newServer returns a server over st configured by cfg.
func newServer(st store, cfg config, log *slog.Logger, now func() time.Time) (*server, error) {
	format, err := newTokenFormat(cfg.TokenPrefix)
	if err != nil {
		return nil, err
	}
	scopes, err := newScopeRegistry(cfg.Scopes.list())
	if err != nil {
		return nil, err
	}
	tmpl, err := parseTemplates()
	if err != nil {
		return nil, err
	}
	s := &server{
		store:     st,
		format:    format,
		scopes:    scopes,
		hasher:    newPasswordHasher(cfg.Argon, cfg.HashConcurrency),
		log:       log,
		now:       now,
		cfg:       cfg,
		templates: tmpl,
		lastUsed:  newLastUsedTracker(),
		throttle:  newSignInThrottle(),
		setup:     &setupCode{},
		cop:       http.NewCrossOriginProtection(),
		forms:     newFormOnce(),
		userCodes: newUserCodeGuesses(),
	}
	if ts, ok := st.(throttleStore); ok {
		s.throttle = ts.sharedThrottle() // shared by every instance on the engine
	}
	s.hasher.maxWaiting = int64(cfg.HashQueue)
	// The dummy is hashed with the live parameters so that verifying against
	// it costs what verifying a real password does.
	if s.dummyHash, err = s.hasher.Hash(context.Background(), "tokend dummy password"); err != nil {
		return nil, err
	}
	if s.tfaKeys, err = newTFAKeys(cfg); err != nil {
		return nil, err
	}
	s.pendingAEAD = newPendingAEAD(s.tfaKeys)
	s.metrics = newMetrics(st, log)
	s.misconfigured = newMisconfiguredRoutes(s.metrics.registry, log, now)
	s.webhooks = newWebhooks(st, cfg, log, now, s.metrics.registry)
	if s.static, err = newStaticFiles(staticFS); err != nil {
		return nil, fmt.Errorf("read static files: %w", err)
	}
	return s, nil
}

// routes returns the whole HTTP surface.
func (s *server) routes() http.Handler {
	r := newRouter() // an httprouter.Router that records the matched pattern
	r.GET("/healthz", s.handleHealthz)
	r.GET("/readyz", s.handleReadyz)
	r.GET("/metrics", s.handleMetrics)
	r.GET("/static/*filepath", s.static.handle(r.notFound))

	// Pages (pages.go, admin.go, setup.go). Every POST goes through form:
	// cross-origin protection and a bounded body.
	r.GET("/", s.signedIn(s.handleTokenPage))
	r.GET("/setup", s.handleSetupPage)
	r.POST("/setup", s.form(s.handleSetup))
	r.GET("/login", s.handleLoginPage)
	r.POST("/login", s.form(s.handleLogin))
	r.POST("/logout", s.form(s.handleLogout))
	r.GET("/login/verify", s.handleVerifyPage)
	r.POST("/login/verify", s.form(s.handleVerify))
	r.GET("/account/totp", s.signedIn(s.handleTOTPPage))
	r.POST("/account/totp", s.form(s.signedIn(s.handleEnrolTOTP)))
	r.POST("/account/totp/remove", s.form(s.signedIn(s.handleRemoveTOTP)))
	r.POST("/account/recovery-codes", s.form(s.signedIn(s.handleNewRecoveryCodes)))
	// Passkeys (passkey.go): each ceremony's options come from
	// /passkey/…-options, and its answer goes with the form it finishes.
	r.POST("/passkey/register-options", s.passkeyJSON(s.signedInJSON(s.handlePasskeyRegisterOptions)))
	r.POST("/account/passkeys", s.form(s.signedIn(s.handlePasskeyRegister)))
	r.POST("/account/passkeys/:id/rename", s.form(s.signedIn(s.handleRenamePasskey)))
	r.POST("/account/passkeys/:id/remove", s.form(s.signedIn(s.handleRemovePasskey)))
	r.POST("/passkey/signin-options", s.passkeyJSON(s.handlePasskeySignInOptions))
	r.POST("/login/passkey", s.form(s.handlePasskeySignIn))
	r.POST("/passkey/verify-options", s.passkeyJSON(s.handleVerifyPasskeyOptions))
	r.POST("/login/verify/passkey", s.form(s.handleVerifyPasskey))
	r.POST("/passkey/sudo-options", s.passkeyJSON(s.signedInJSON(s.handlePasskeySudoOptions)))
	r.POST("/passkey/sudo", s.passkeyJSON(s.signedInJSON(s.handlePasskeySudo)))
	r.POST("/tokens", s.form(s.signedIn(s.handleCreateTokenPage)))
	r.GET("/secret", s.signedIn(s.handleSecretPage))
	r.GET("/tokens/:id/revoke", s.signedIn(s.confirmTokenPage(revokeConfirmation)))
	r.POST("/tokens/:id/revoke", s.form(s.signedIn(s.handleRevokeTokenForm)))
	r.GET("/tokens/:id/rotate", s.signedIn(s.confirmTokenPage(rotateConfirmation)))
	r.POST("/tokens/:id/rotate", s.form(s.signedIn(s.handleRotateTokenForm)))
	r.GET("/account", s.signedIn(s.handleAccountPage))
	r.POST("/account/password", s.form(s.signedIn(s.handleChangePassword)))
	r.POST("/account/sessions/end", s.form(s.signedIn(s.handleEndSession)))
	r.POST("/account/sessions/end-others", s.form(s.signedIn(s.handleEndOtherSessions)))
	r.POST("/account/revoke-tokens", s.form(s.signedIn(s.handleRevokeOwnTokens)))
	r.GET("/account/security-log", s.signedIn(s.handleSecurityLogPage))
	r.GET("/admin/users", s.signedIn(s.adminOnly(s.handleUsersPage)))
	r.POST("/admin/users", s.form(s.signedIn(s.adminOnly(s.handleAddUser))))
	r.GET("/admin/users/:id", s.signedIn(s.adminOnly(s.handleUserPage)))
	r.POST("/admin/users/:id/password", s.form(s.signedIn(s.adminOnly(s.handleResetPassword))))
	r.POST("/admin/users/:id/admin", s.form(s.signedIn(s.adminOnly(s.handleSetAdmin))))
	r.POST("/admin/users/:id/remove", s.form(s.signedIn(s.adminOnly(s.handleRemoveUser))))
	r.POST("/admin/users/:id/revoke-tokens", s.form(s.signedIn(s.adminOnly(s.handleRevokeUserTokens))))
	r.POST("/admin/users/:id/reset-2fa", s.form(s.signedIn(s.adminOnly(s.handleResetSecondFactors))))
	r.GET("/admin/clients", s.signedIn(s.adminOnly(s.handleClientsPage)))
	r.POST("/admin/clients", s.form(s.signedIn(s.adminOnly(s.handleAddClient))))
	r.GET("/admin/clients/:id", s.signedIn(s.adminOnly(s.handleClientPage)))
	r.POST("/admin/clients/:id/remove", s.form(s.signedIn(s.adminOnly(s.handleRemoveClient))))
	r.GET("/admin/audit", s.signedIn(s.adminOnly(s.handleAuditPage)))
	r.GET("/admin/webhooks", s.signedIn(s.adminOnly(s.handleWebhooksPage)))
	r.POST("/admin/webhooks", s.form(s.signedIn(s.adminOnly(s.handleAddWebhook))))
	r.POST("/admin/webhooks/:id/remove", s.form(s.signedIn(s.adminOnly(s.handleRemoveWebhook))))
	r.GET("/account/grants/:id/revoke", s.signedIn(s.handleConfirmRevokeGrant))
	r.POST("/account/grants/:id/revoke", s.form(s.signedIn(s.handleRevokeGrantForm)))

	// The JSON API (api.go; users in admin.go), its tokens checked by
	// withToken (bearer.go).
	r.GET("/api/v1/user", s.withToken("", s.handleGetUser))
	r.GET("/api/v1/token", s.withToken("", s.handleGetSelf))
	r.DELETE("/api/v1/token", s.withToken("", s.handleRevokeSelf))
	r.POST("/api/v1/token/rotate", s.withToken("", s.handleRotateSelf))
	r.GET("/api/v1/tokens", s.withToken(scopeTokensRead, s.handleListTokens))
	r.POST("/api/v1/tokens", s.handleCreateToken)
	r.GET("/api/v1/tokens/:id", s.withToken(scopeTokensRead, s.handleGetToken))
	r.DELETE("/api/v1/tokens/:id", s.withToken(scopeTokensWrite, s.handleRevokeToken))
	r.POST("/api/v1/tokens/:id/rotate", s.withToken(scopeTokensWrite, s.handleRotateToken))
	r.POST("/api/v1/revoke", s.handleLeakReport)
	r.POST("/api/v1/introspect", s.handleIntrospectRoute)
	r.GET("/auth", s.handleForwardAuth)
	r.GET("/auth/:scopes", s.handleForwardAuth)
	r.GET("/api/v1/openapi.yaml", s.handleOpenAPI)
	r.GET("/api/v1/admin/backup", s.withToken(scopeAdmin, s.handleBackup))
	r.POST("/api/v1/user/password", s.withToken("", s.handleAPIChangePassword))
	r.DELETE("/api/v1/users/:id", s.apiAdmin(s.handleAPIRemoveUser))
	r.POST("/api/v1/users/:id/password", s.apiAdmin(s.handleAPIResetPassword))
	r.PUT("/api/v1/users/:id/admin", s.apiAdmin(s.handleAPISetAdmin))
	r.DELETE("/api/v1/users/:id/tokens", s.apiAdmin(s.handleAPIRevokeUserTokens))
	r.DELETE("/api/v1/users/:id/second-factors", s.apiAdmin(s.handleAPIResetSecondFactors))
	r.GET("/api/v1/clients", s.apiAdmin(s.handleAPIListClients))
	r.POST("/api/v1/clients", s.apiAdmin(s.handleAPIAddClient))
	r.GET("/api/v1/clients/:id", s.apiAdmin(s.handleAPIGetClient))
	r.DELETE("/api/v1/clients/:id", s.apiAdmin(s.handleAPIRemoveClient))
	r.GET("/api/v1/user/grants", s.withToken(scopeTokensRead, s.handleAPIListGrants))
	r.GET("/api/v1/audit", s.apiAdmin(s.handleAPIAudit))
	r.DELETE("/api/v1/user/grants/:id", s.withToken(scopeTokensWrite, s.handleAPIRevokeGrant))

	// OAuth 2 (oauth*.go): metadata, the consent and device pages, and
	// the token-side endpoints that clients call.
	r.GET("/.well-known/oauth-authorization-server", s.handleOAuthMetadata)
	r.GET("/oauth/authorize", s.signedIn(s.handleAuthorizePage))
	r.POST("/oauth/authorize", s.form(s.signedIn(s.handleAuthorizeDecision)))
	r.POST("/oauth/token", s.handleToken)
	r.POST("/oauth/revoke", s.handleRevoke)
	r.POST("/oauth/device_authorization", s.handleDeviceAuthorization)
	r.GET("/device", s.signedIn(s.handleDevicePage))
	r.POST("/device", s.form(s.signedIn(s.handleDeviceCode)))
	r.POST("/device/approve", s.form(s.signedIn(s.handleDeviceDecision)))

	r.NotFound = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if wantsPage(r) {
			s.notFoundPage(w, r)
			return
		}
		writeProblem(w, http.StatusNotFound, "no such endpoint: "+truncate(redactTokens(r.URL.Path), 200))
	})
	r.MethodNotAllowed = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed here; allowed: %s", truncate(r.Method, 20), w.Header().Get("Allow")))
	})
	r.PanicHandler = func(w http.ResponseWriter, r *http.Request, v any) {
		s.internalError(w, r, fmt.Errorf("panic: %v", v))
	}
	s.routeList = r.routes()
	return s.instrument(s.secureHeaders(r))
}

func (s *server) handleHealthz(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}
