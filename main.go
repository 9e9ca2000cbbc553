// Command tokend gives a small deployment personal API access tokens: people
// sign in and mint tokens with scopes and an expiry, scripts call APIs with
// them, and reverse proxies ask tokend whether a token is good.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() { <-ctx.Done(); stop() }() // a second signal ends the process at once
	if err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "tokend:", err)
		os.Exit(1)
	}
}

const usage = `tokend: personal API access tokens in one binary.

Usage: tokend [COMMAND] [flags]

Commands:
  serve                 run the service (the default command)
  user add NAME         add a user; asks for the password
  user list             list users with their token counts
  user passwd NAME      set a user's password
  user promote NAME     make a user an admin
  user demote NAME      take a user's admin rights away; never the last admin's
  user revoke-tokens    revoke every token of user NAME; sessions stay
  user reset-2fa        remove the second factors of user NAME and end their sessions
  user remove NAME      remove a user with their tokens and sessions
  token create          print a new token: -user NAME -name N [-scopes a,b] [-expires 30d]
  token list            list tokens: everyone's, or one user's
  token revoke ID       revoke a token
  client add NAME       register an OAuth client: [-redirect-uri URI]... [-public] [-device]
  client list           list OAuth clients
  client remove ID      remove an OAuth client (by id or name) and revoke its grants
  purge                 delete long-expired tokens, expired sessions and old security events, offline
  audit verify          check the security log's hash chain and print its head
  audit export          write security events as JSON Lines: [-since T] [-until T] [-user NAME] [-kind K]... [-o FILE]
  backup FILE           write a consistent copy of the database, offline
  restore BACKUP        put a backup in place of the database, offline
  compact SRC DST       write a compacted copy of the database, offline
  copy                  copy a whole deployment into an empty store: -from SRC -to DST
  healthcheck           exit 0 when the server at -addr answers /readyz
  version               print the version, commit and build time
  help [COMMAND]        print this, or a command's flags: tokend help user passwd

Flags fall back to TOKEND_* environment variables (-db to TOKEND_DB, -addr
to TOKEND_ADDR, …). The offline commands open -db (default tokend.db) and
refuse to run while a server holds it. -db may be a PostgreSQL URL
(postgres://…), which servers and commands share; backup, restore and
compact work on bbolt files only (pg_dump and pg_restore do it there).
`

// errHelp is returned when the user asked for help: not a failure.
var errHelp = flag.ErrHelp

// isHelpFlag reports whether arg asks for help.
func isHelpFlag(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help"
}

// runVersion is tokend version: it takes no flags but -h.
func runVersion(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: tokend version\n\nPrint the module version, VCS revision and commit time of this build. Also: tokend -version.")
	}
	if _, err := parseArgs(fs, args, 0); err != nil {
		return err
	}
	fmt.Fprint(stdout, versionString())
	return nil
}

// run is the whole program: it parses args, runs the subcommand and returns
// its error. It never exits the process.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	} else if len(args) > 0 && isHelpFlag(args[0]) {
		cmd, args = "help", nil
	}
	var err error
	switch cmd {
	case "serve":
		err = runServe(ctx, args, stdout, stderr)
	case "healthcheck":
		err = runHealthcheck(ctx, args, stdout, stderr)
	case "user":
		err = runUser(ctx, args, stdin, stdout, stderr)
	case "token":
		err = runToken(ctx, args, stdout, stderr)
	case "client":
		err = runClient(args, stdout, stderr)
	case "purge":
		err = runPurge(ctx, args, stdout, stderr)
	case "audit":
		err = runAudit(ctx, args, stdout, stderr)
	case "backup":
		err = runBackup(args, stdout, stderr)
	case "restore":
		err = runRestore(args, stdout, stderr)
	case "compact":
		err = runCompact(args, stdout, stderr)
	case "copy":
		err = runCopy(ctx, args, stdout, stderr)
	case "version":
		err = runVersion(args, stdout, stderr)
	case "help":
		if len(args) == 0 || isHelpFlag(args[0]) {
			fmt.Fprint(stdout, usage)
			return nil
		}
		// A command's help is what its -h prints, here on stdout.
		return run(ctx, append(slices.Clone(args), "-h"), stdin, stdout, stdout)
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
	if errors.Is(err, errHelp) {
		return nil
	}
	return err
}

// config is the configuration of serve.
type config struct {
	Addr             string
	DB               string
	TokenPrefix      string
	MaxTokensPerUser int
	LogLevel         string
	LogFormat        string
	AccessLog        string        // which requests the request log holds: accessLogAll, accessLogErrors or accessLogOff
	SlowRequest      time.Duration // not a flag: a request this slow is logged at -access-log errors
	ShutdownTimeout  time.Duration
	HashConcurrency  int
	Argon            argonParams // not a flag: tests lower it
	PurgeInterval    time.Duration
	ExpiredRetention time.Duration
	// AuditRetention is how long security events are kept; 0: forever.
	AuditRetention   time.Duration
	LastUsedInterval time.Duration
	AuthCacheSize    int
	Scopes           operatorScopes
	SessionIdle      time.Duration
	SessionLifetime  time.Duration
	TrustProxy       bool
	// PublicURL is the base URL people reach tokend at (publicurl.go);
	// empty: each request's scheme and Host.
	PublicURL       string
	MetricsLoopback bool
	// Limits of the HTTP server (see newHTTPServer) and of the database file.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	MaxHeaderBytes    int
	HashQueue         int
	MaxDBSize         int
	// Sessions one user may hold; signing in once more ends the oldest.
	MaxSessionsPerUser int
	// KeyFile seals TOTP secrets; "" is the database's path with ".key"
	// appended for bbolt, none for PostgreSQL.
	KeyFile string
	// Require2FA sends every user without a second factor to enrol one
	// before anything else.
	Require2FA bool
	// Webhooks are the endpoints of the configuration (webhook.go), signed
	// with WebhookSecret; WebhookPoll is how often the outbox looks for
	// new events and due messages (not a flag: tests lower it).
	Webhooks      []string
	WebhookSecret string
	WebhookPoll   time.Duration
}

func defaultConfig() config {
	return config{
		Addr:             "127.0.0.1:8080",
		DB:               "tokend.db",
		TokenPrefix:      defaultTokenPrefix,
		MaxTokensPerUser: 100,
		LogLevel:         "info",
		LogFormat:        "text",
		AccessLog:        accessLogErrors,
		SlowRequest:      slowRequest,
		ShutdownTimeout:  10 * time.Second,
		HashConcurrency:  defaultHashConcurrency(runtime.GOMAXPROCS(0)),
		Argon:            defaultArgonParams,
		PurgeInterval:    time.Minute,
		ExpiredRetention: 7 * 24 * time.Hour,
		AuditRetention:   365 * 24 * time.Hour,
		LastUsedInterval: 30 * time.Second,
		AuthCacheSize:    defaultAuthCacheSize,
		SessionIdle:      7 * 24 * time.Hour,
		SessionLifetime:  30 * 24 * time.Hour,
		MetricsLoopback:  true,

		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
		HashQueue:         64,

		MaxSessionsPerUser: 50,
		WebhookPoll:        time.Second,
	}
}

// register declares the flags of serve on fs.
func (c *config) register(fs *flag.FlagSet) {
	fs.StringVar(&c.Addr, "addr", c.Addr, "`address` to listen on")
	fs.StringVar(&c.DB, "db", c.DB, "database `file`, or a PostgreSQL URL: postgres://user:password@host/db (also postgresql://)")
	fs.StringVar(&c.TokenPrefix, "token-prefix", c.TokenPrefix, "`prefix` of new tokens, such as tkd_")
	fs.IntVar(&c.MaxTokensPerUser, "max-tokens-per-user", c.MaxTokensPerUser, "most tokens one user may hold (0: no limit)")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "log `level`: debug, info, warn or error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log `format`: text or json")
	fs.StringVar(&c.AccessLog, "access-log", c.AccessLog, "which requests get a log line: all, errors (refused, failed or slow) or off")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "how long to let requests finish at shutdown")
	fs.IntVar(&c.HashConcurrency, "hash-concurrency", c.HashConcurrency, "most password hashes computed at once (each takes 19 MiB; default: one fewer than the CPUs Go uses, at least 1)")
	fs.DurationVar(&c.PurgeInterval, "purge-interval", c.PurgeInterval, "how often to delete expired tokens")
	fs.DurationVar(&c.ExpiredRetention, "expired-retention", c.ExpiredRetention, "how long expired tokens stay visible before they are deleted (0s: at expiry)")
	fs.DurationVar(&c.AuditRetention, "audit-retention", c.AuditRetention, "how long security events are kept before the oldest are deleted (0s: forever)")
	fs.DurationVar(&c.LastUsedInterval, "last-used-interval", c.LastUsedInterval, "how often last-used times are written to the database")
	fs.IntVar(&c.AuthCacheSize, "auth-cache-size", c.AuthCacheSize, "most recently verified tokens kept in memory, 64 to 128 bytes each (0: none)")
	c.Scopes.register(fs)
	fs.DurationVar(&c.SessionIdle, "session-idle", c.SessionIdle, "sign a browser out after this long without a request")
	fs.DurationVar(&c.SessionLifetime, "session-lifetime", c.SessionLifetime, "sign a browser out this long after it signed in, however active")
	fs.IntVar(&c.MaxSessionsPerUser, "max-sessions-per-user", c.MaxSessionsPerUser, "most browser sessions one user may hold; signing in once more ends the oldest")
	fs.BoolVar(&c.TrustProxy, "trust-proxy", c.TrustProxy, "believe X-Forwarded-Proto and X-Forwarded-For from the reverse proxy in front")
	fs.StringVar(&c.PublicURL, "public-url", c.PublicURL, "`URL` people reach tokend at, such as https://tokens.example.com: the base of the setup link, the OAuth issuer and the passkeys' relying party (default: each request's scheme and Host)")
	fs.BoolVar(&c.MetricsLoopback, "metrics-loopback", c.MetricsLoopback, "serve /metrics to loopback clients without a token (turn off behind a reverse proxy on the same host)")
	fs.DurationVar(&c.ReadHeaderTimeout, "read-header-timeout", c.ReadHeaderTimeout, "how long a client may take to send a request's headers")
	fs.DurationVar(&c.ReadTimeout, "read-timeout", c.ReadTimeout, "how long a client may take to send a whole request")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", c.WriteTimeout, "how long an answer may take, from the end of the request's headers")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", c.IdleTimeout, "how long an idle keep-alive connection stays open")
	fs.IntVar(&c.MaxHeaderBytes, "max-header-bytes", c.MaxHeaderBytes, "most `bytes` of request line and headers; more is answered 431")
	fs.IntVar(&c.HashQueue, "hash-queue", c.HashQueue, "most sign-ins waiting for a password hash; more are answered 503 (0: no limit)")
	fs.StringVar(&c.KeyFile, "key-file", c.KeyFile, "`file` of the key that seals TOTP secrets (default: the database file's path with .key appended, created on first use; PostgreSQL: none, and TOTP is off until one is set)")
	fs.BoolVar(&c.Require2FA, "require-2fa", c.Require2FA, "make every user enrol a second factor (TOTP or passkey) before reaching their tokens")
	fs.IntVar(&c.MaxDBSize, "max-db-size", c.MaxDBSize, "most `bytes` the database file may grow to; writes past it are answered 507 (0: no limit)")
	fs.Var(webhookURLs{&c.Webhooks}, "webhook", "send security events that need attention to this `URL`, signed (Standard Webhooks); repeatable, and TOKEND_WEBHOOKS holds several separated by commas or spaces")
	fs.StringVar(&c.WebhookSecret, "webhook-secret", c.WebhookSecret, "signing `secret` of webhooks: whsec_ and base64 of 24 to 64 random bytes; required with -webhook")
}

// check rejects values that cannot work, naming the flag.
func (c *config) check() error {
	if err := c.checkDurations(); err != nil {
		return err
	}
	if _, err := newTokenFormat(c.TokenPrefix); err != nil {
		return fmt.Errorf("-token-prefix: %w", err)
	}
	if c.MaxTokensPerUser < 0 {
		return fmt.Errorf("-max-tokens-per-user: %d is negative", c.MaxTokensPerUser)
	}
	if c.HashConcurrency < 1 {
		return fmt.Errorf("-hash-concurrency: %d is below 1", c.HashConcurrency)
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("-shutdown-timeout: %v is not positive", c.ShutdownTimeout)
	}
	if c.PurgeInterval <= 0 {
		return fmt.Errorf("-purge-interval: %v is not positive", c.PurgeInterval)
	}
	if c.ExpiredRetention < 0 {
		return fmt.Errorf("-expired-retention: %v is negative", c.ExpiredRetention)
	}
	if c.AuditRetention < 0 {
		return fmt.Errorf("-audit-retention: %v is negative", c.AuditRetention)
	}
	if c.AuthCacheSize < 0 {
		return fmt.Errorf("-auth-cache-size: %d is negative", c.AuthCacheSize)
	}
	if c.LastUsedInterval <= 0 {
		return fmt.Errorf("-last-used-interval: %v is not positive", c.LastUsedInterval)
	}
	if _, err := newLogger(io.Discard, c.LogLevel, c.LogFormat); err != nil {
		return err
	}
	if err := checkAccessLog(c.AccessLog); err != nil {
		return err
	}
	if c.SessionIdle < time.Minute {
		return fmt.Errorf("-session-idle: %v is shorter than a minute", c.SessionIdle)
	}
	if c.SessionLifetime < c.SessionIdle {
		return fmt.Errorf("-session-lifetime: %v is shorter than -session-idle %v", c.SessionLifetime, c.SessionIdle)
	}
	if err := checkAddr(c.Addr); err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	if err := checkPublicURL(c.PublicURL); err != nil {
		return fmt.Errorf("-public-url: %w", err)
	}
	if c.DB == "" {
		return errors.New("-db: the database file name is empty")
	}
	if err := c.checkWebhooks(); err != nil {
		return err
	}
	if isPostgresURL(c.DB) && c.MaxDBSize != 0 {
		// Refused rather than ignored: an operator who set a limit would
		// otherwise believe that one holds.
		return errors.New("-max-db-size: limits a bbolt file, and -db names a PostgreSQL database, whose space is the database server's to limit: unset it (and TOKEND_MAX_DB_SIZE)")
	}
	return c.checkLimits()
}

// maxSetting is the longest any duration setting may be: longer is surely
// a mistake, and times that far off near the end of what timestamps hold.
const maxSetting = 100 * 365 * 24 * time.Hour

// checkDurations refuses a duration flag above maxSetting, whichever flag
// it is. (Each flag's lower bound is checked on its own: some may be 0.)
func (c config) checkDurations() error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	c.register(fs) // binds the flags to c, a copy
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err == nil {
			err = checkMaxSetting(f)
		}
	})
	return err
}

// checkMaxSetting refuses f's value if it is a duration above maxSetting.
func checkMaxSetting(f *flag.Flag) error {
	g, ok := f.Value.(flag.Getter)
	if !ok {
		return nil
	}
	if d, ok := g.Get().(time.Duration); ok && d > maxSetting {
		return fmt.Errorf("-%s: %v is more than 100 years", f.Name, d)
	}
	return nil
}

// parseFlags parses args into fs, then fills each flag not given on the
// command line from its environment variable: -max-tokens-per-user from
// TOKEND_MAX_TOKENS_PER_USER. A flag beats the environment, which beats
// the default.
func parseFlags(fs *flag.FlagSet, args []string) error {
	_, err := parseFlagSources(fs, args)
	return err
}

// parseFlagSources is parseFlags that also says where the value of each
// flag it set came from: "flag -NAME" or "env TOKEND_NAME". Flags that ask
// for an action rather than set a value (see actionFlags) have no
// environment fallback.
func parseFlagSources(fs *flag.FlagSet, args []string) (map[string]string, error) {
	if err := parseQuietly(fs, args); err != nil {
		return nil, err
	}
	given := map[string]string{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = "flag -" + f.Name })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] != "" || actionFlags[f.Name] || err != nil {
			return
		}
		name := envName(f.Name)
		if v, ok := os.LookupEnv(name); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = invalidValue(name, v, f.Value, e)
			}
			given[f.Name] = "env " + name
		}
	})
	return given, err
}

// parseQuietly is fs.Parse without the usage dump that the flag package
// prints after a mistake, which would scroll the one line that matters
// away: a bad value is reported with the form the flag wants, anything
// else with where to find the flags. -h still prints the usage.
func parseQuietly(fs *flag.FlagSet, args []string) error {
	usage, out := fs.Usage, fs.Output()
	var bad error
	fs.VisitAll(func(f *flag.Flag) { f.Value = &checkedValue{Value: f.Value, name: f.Name, bad: &bad} })
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.VisitAll(func(f *flag.Flag) { f.Value = f.Value.(*checkedValue).Value })
	fs.Usage = usage
	fs.SetOutput(out)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.Usage()
		return err
	case bad != nil:
		return bad
	case err != nil:
		return fmt.Errorf("%v (tokend help %s lists the flags)", err, fs.Name())
	}
	return nil
}

// checkedValue stands in for a flag's value while parseQuietly parses, to
// catch the first value that the flag refuses.
type checkedValue struct {
	flag.Value
	name string
	bad  *error
}

func (v *checkedValue) Set(s string) error {
	err := v.Value.Set(s)
	if err != nil && *v.bad == nil {
		*v.bad = invalidValue("-"+v.name, s, v.Value, err)
	}
	return err
}

func (v *checkedValue) IsBoolFlag() bool {
	b, ok := v.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// invalidValue is the error for a value that the flag holding v refused
// with err: it names where the value came from (-purge-interval or
// TOKEND_PURGE_INTERVAL) and the form wanted.
func invalidValue(where, value string, v flag.Value, err error) error {
	want := err.Error()
	if g, ok := v.(flag.Getter); ok {
		switch g.Get().(type) {
		case time.Duration:
			want = "a duration such as 90s, 15m or 2h"
		case bool:
			want = "true or false (also accepted: 1, 0, t, f, T, F, TRUE, FALSE, True, False)"
		case int, int64:
			want = "a whole number such as 100"
		case uint, uint64:
			want = "a whole number from 0 up, such as 100"
		case float64:
			want = "a number such as 1.5"
		}
	}
	return fmt.Errorf("invalid value %q for %s: %s", truncate(value, 40), where, want)
}

// envNames holds the environment variables not named after their flag:
// a repeatable flag's variable holds a list.
var envNames = map[string]string{"scope": "TOKEND_SCOPES", "webhook": "TOKEND_WEBHOOKS"}

// envName returns the environment variable behind a flag.
func envName(flagName string) string {
	if name, ok := envNames[flagName]; ok {
		return name
	}
	return "TOKEND_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// newLogger returns a slog logger writing to w.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level: %q is not debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format: %q is not text or json", format)
}

// lockTimeout is how long a command waits for the database file before it
// says that another process holds it.
const lockTimeout = time.Second

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: tokend serve [flags]\n\nRun the service. Flags fall back to TOKEND_* environment variables.")
		fs.PrintDefaults()
	}
	cfg.register(fs)
	printConfig := fs.Bool("print-config", false, "print the effective configuration, where each value came from, and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	sources, err := parseFlagSources(fs, args)
	if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve: unexpected argument %q", fs.Arg(0))
	}
	if *showVersion {
		fmt.Fprint(stdout, versionString())
		return nil
	}
	if *printConfig {
		writeConfig(stdout, fs, sources)
		return cfg.check()
	}
	if err := cfg.check(); err != nil {
		return err
	}
	log, _ := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	return serve(ctx, cfg, log, nil)
}

// serve runs the service until ctx ends. When ready is not nil it receives
// the listening address once the server accepts connections.
func serve(ctx context.Context, cfg config, log *slog.Logger, ready chan<- net.Addr) error {
	// Bind first: a taken port must leave nothing behind on disk.
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("%w; stop what listens there or choose another -addr (TOKEND_ADDR)", err)
	}
	defer ln.Close() // for the early returns; Serve closes it otherwise
	st, err := openServeStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("close database", "err", err)
		}
		log.Info("database closed")
	}()

	srv, err := newServer(st, cfg, log, time.Now)
	if err != nil {
		return err
	}
	httpSrv := newHTTPServer(cfg, srv.routes(), log)
	background, stopBackground := context.WithCancel(context.Background())
	defer stopBackground()
	var loops sync.WaitGroup
	loops.Go(func() { srv.expiredPurger(background, cfg.PurgeInterval) })
	loops.Go(func() { srv.lastUsedFlusher(background, cfg.LastUsedInterval) })
	srv.logAuditHead()
	loops.Go(func() { srv.auditHeadLogger(background, auditHeadInterval) })
	loops.Go(func() { srv.webhooks.run(background) })

	errc := make(chan error, 1)
	go func() { errc <- httpSrv.Serve(ln) }()
	log.Info("listening", "url", "http://"+ln.Addr().String(), "db", redactDB(cfg.DB))
	if n, err := st.CountUsers(); err == nil && n == 0 {
		srv.announceSetup(ln.Addr())
	}
	if ready != nil {
		ready <- ln.Addr()
	}

	var serveErr error
	select {
	case serveErr = <-errc:
	case <-ctx.Done():
	}
	// Shut down in order: stop accepting and drain requests, stop the
	// background loops, write what the last requests left in memory, and
	// only then (deferred above) close the database.
	log.Info("shutting down: draining requests", "timeout", cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.drain(sctx, httpSrv); err != nil {
		log.Warn("requests still running at the shutdown timeout; closing them", "err", err)
		httpSrv.Close()
	}
	log.Info("requests drained")
	stopBackground()
	loops.Wait()
	log.Info("background loops stopped")
	if n, err := srv.finalFlushLastUsed(); err != nil {
		log.Error("flush last-used times", "err", err)
	} else {
		log.Info("last-used times flushed", "tokens", n)
	}
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	return serveErr
}

// openServeStore opens the store serve runs on, with its auth cache of
// cfg.AuthCacheSize tokens. On PostgreSQL it also starts following the
// invalidation channel: the cache trusts nothing until the channel works.
// Closing the store stops the listener.
func openServeStore(ctx context.Context, cfg config, log *slog.Logger) (store, error) {
	if isPostgresURL(cfg.DB) {
		octx, cancel := context.WithTimeout(ctx, pgOpTimeout)
		defer cancel()
		st, err := openPGStore(octx, cfg.DB)
		if err != nil {
			return nil, err
		}
		st.auth = newAuthCache(cfg.AuthCacheSize)
		if err := st.startInvalidations(st.auth, log); err != nil {
			st.Close()
			return nil, err
		}
		return st, nil
	}
	if err := checkDBDir(cfg.DB); err != nil {
		return nil, err
	}
	st, err := openStoreWith(cfg.DB, bolt.Options{Timeout: lockTimeout, MaxSize: cfg.MaxDBSize})
	if err != nil {
		return nil, err
	}
	st.auth = newAuthCache(cfg.AuthCacheSize)
	if mode, err := fileMode(cfg.DB); err == nil && mode&0o077 != 0 {
		log.Warn("database file is readable by other users; chmod 600 it", "file", cfg.DB, "mode", fmt.Sprintf("%#o", mode))
	}
	return st, nil
}

// drain shuts httpSrv down gracefully: it stops accepting, answers at once
// the sign-ins waiting for a hashing slot (503 with Retry-After, so that
// the restart waits for at most the hashes already running), and waits
// until ctx ends for the requests still running.
func (s *server) drain(ctx context.Context, httpSrv *http.Server) error {
	s.hasher.stop()
	return httpSrv.Shutdown(ctx)
}

// versionString describes this build from the information Go embeds in
// it; see formatVersion.
func versionString() string {
	return formatVersion(debug.ReadBuildInfo())
}
