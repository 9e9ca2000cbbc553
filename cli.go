package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/term"
)

// command is a subcommand: its flags, what it does and how to call it.
type command struct {
	name, args, help string
}

// newFlagSet returns the flag set of an offline command, with -db.
func (c command) newFlagSet(stderr io.Writer, db *string) *flag.FlagSet {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: tokend %s %s\n\n%s\n\nFlags:\n", c.name, c.args, c.help)
		fs.PrintDefaults()
	}
	fs.StringVar(db, "db", "tokend.db", "database `file`, or a postgres:// URL (TOKEND_DB)")
	return fs
}

// parseArgs parses flags placed before or after the positional arguments,
// so that both `user add -admin alice` and `user add alice -admin` work, and
// checks that exactly want positional arguments remain.
func parseArgs(fs *flag.FlagSet, args []string, want int) ([]string, error) {
	var positional []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(positional) != want {
		fs.Usage()
		return nil, fmt.Errorf("%s: want %d argument(s), got %d", fs.Name(), want, len(positional))
	}
	return positional, nil
}

// subcommand splits the subcommand of group (user or token) off args. With
// none, or -h, it prints the group's lines of the usage.
func subcommand(group string, args []string, stderr io.Writer, names string) (string, []string, error) {
	if len(args) == 0 || isHelpFlag(args[0]) {
		fmt.Fprintf(stderr, "Usage: tokend %s %s\n\n", group, names)
		for _, line := range strings.Split(usage, "\n") {
			if strings.HasPrefix(line, "  "+group+" ") {
				fmt.Fprintln(stderr, line)
			}
		}
		fmt.Fprintf(stderr, "\ntokend help %s COMMAND shows a command's flags.\n", group)
		if len(args) == 0 {
			return "", nil, fmt.Errorf("%s: missing subcommand (%s)", group, names)
		}
		return "", nil, errHelp
	}
	return args[0], args[1:], nil
}

// ---- user ----

func runUser(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	sub, args, err := subcommand("user", args, stderr, "add|list|passwd|promote|demote|revoke-tokens|remove")
	if err != nil {
		return err
	}
	switch sub {
	case "add":
		return userAdd(ctx, args, stdin, stdout, stderr)
	case "list":
		return userList(args, stdout, stderr)
	case "passwd":
		return userPasswd(ctx, args, stdin, stdout, stderr)
	case "promote":
		return userSetAdmin(args, stdout, stderr, true)
	case "demote":
		return userSetAdmin(args, stdout, stderr, false)
	case "revoke-tokens":
		return userRevokeTokens(args, stdout, stderr)
	case "remove":
		return userRemove(args, stdout, stderr)
	}
	return fmt.Errorf("user: unknown subcommand %q (want add, list, passwd, promote, demote, revoke-tokens or remove)", sub)
}

func userAdd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd := command{"user add", "[-admin] [-password-stdin] NAME", "Add a user. The password is asked for on the terminal, or read from standard input with -password-stdin."}
	var db string
	fs := cmd.newFlagSet(stderr, &db)
	admin := fs.Bool("admin", false, "make the user an admin")
	fromStdin := fs.Bool("password-stdin", false, "read the password from the first line of standard input")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	name := pos[0]
	if err := checkUserName(name); err != nil {
		return err
	}
	password, err := readNewPassword(stdin, stderr, *fromStdin)
	if err != nil {
		return err
	}
	hash, err := newPasswordHasher(defaultArgonParams, 1).Hash(ctx, password)
	if err != nil {
		return err
	}
	st, err := openCLIStore(db, createDB)
	if err != nil {
		return err
	}
	defer st.Close()
	u := newUser(name, hash, *admin, time.Now().UTC())
	if err := st.CreateUser(cliActor, &u); err != nil {
		if errors.Is(err, errNameTaken) {
			return fmt.Errorf("user add: a user called %q already exists", name)
		}
		return err
	}
	role := "user"
	if u.Admin {
		role = "admin"
	}
	fmt.Fprintf(stdout, "added %s %q (id %d)\n", role, u.Name, u.ID)
	return nil
}

func userList(args []string, stdout, stderr io.Writer) error {
	cmd := command{"user list", "", "List users with their token counts."}
	var db string
	fs := cmd.newFlagSet(stderr, &db)
	if _, err := parseArgs(fs, args, 0); err != nil {
		return err
	}
	st, err := openCLIStore(db, existingDB)
	if err != nil {
		return err
	}
	defer st.Close()
	users, err := st.Users()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tADMIN\tTOKENS\tCREATED")
	for _, u := range users {
		tokens, err := st.TokensByOwner(u.ID)
		if err != nil {
			return err
		}
		fmt.Fprintf(tw, "%d\t%s\t%v\t%d\t%s\n", u.ID, u.Name, u.Admin, len(tokens), u.CreatedAt.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

func userPasswd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd := command{"user passwd", "[-password-stdin] [-revoke-tokens] NAME", "Set a user's password. Every session of the user ends."}
	var db string
	fs := cmd.newFlagSet(stderr, &db)
	fromStdin := fs.Bool("password-stdin", false, "read the password from the first line of standard input")
	revoke := fs.Bool("revoke-tokens", false, "also revoke every token the user holds")
	st, u, err := openArgUser(fs, args, &db)
	if err != nil {
		return err
	}
	defer st.Close()
	password, err := readNewPassword(stdin, stderr, *fromStdin)
	if err != nil {
		return err
	}
	// The same reset as an admin's on the users page: every session of
	// the user ends, since whoever knew the old password may hold one.
	acts := accounts{store: st, hasher: newPasswordHasher(defaultArgonParams, 1), now: func() time.Time { return time.Now().UTC() }}
	done, err := acts.ResetPassword(ctx, cliActor, u.ID, password, *revoke, sessionHash{})
	if err != nil {
		return fmt.Errorf("user passwd: %w", err)
	}
	fmt.Fprintf(stdout, "password of %q changed; %s\n", u.Name, done.describe())
	return nil
}

// userSetAdmin is user promote (admin) and user demote: two commands
// rather than one with a flag, so that a forgotten flag can never grant
// admin rights to the account being locked out.
func userSetAdmin(args []string, stdout, stderr io.Writer, admin bool) error {
	cmd := command{"user promote", "NAME", "Make a user an admin."}
	if !admin {
		cmd = command{"user demote", "NAME", "Take a user's admin rights away. Their sessions and tokens stay, without admin powers. The last admin cannot be demoted."}
	}
	var db string
	fs := cmd.newFlagSet(stderr, &db)
	st, u, err := openArgUser(fs, args, &db)
	if err != nil {
		return err
	}
	defer st.Close()
	if u.Admin == admin && admin {
		fmt.Fprintf(stdout, "%q is already an admin; nothing changed\n", u.Name)
		return nil
	} else if u.Admin == admin {
		fmt.Fprintf(stdout, "%q is not an admin; nothing changed\n", u.Name)
		return nil
	}
	if _, err := (accounts{store: st}).SetAdmin(cliActor, u.ID, admin); err != nil {
		if errors.Is(err, errLastAdmin) {
			return fmt.Errorf("%s: %q is the last admin; make another user an admin first", cmd.name, u.Name)
		}
		return err
	}
	if admin {
		fmt.Fprintf(stdout, "%q is now an admin\n", u.Name)
	} else {
		fmt.Fprintf(stdout, "%q is no longer an admin; their sessions and tokens stay, without admin powers\n", u.Name)
	}
	return nil
}

func userRevokeTokens(args []string, stdout, stderr io.Writer) error {
	cmd := command{"user revoke-tokens", "NAME", "Revoke every token a user holds: they stop working at once. Their sessions stay."}
	var db string
	fs := cmd.newFlagSet(stderr, &db)
	st, u, err := openArgUser(fs, args, &db)
	if err != nil {
		return err
	}
	defer st.Close()
	done, err := (accounts{store: st}).RevokeAllTokens(cliActor, u.ID)
	if err != nil {
		return fmt.Errorf("%s: %w", cmd.name, err)
	}
	fmt.Fprintf(stdout, "revoked %s of %q\n", plural(done.Tokens, "token"), u.Name)
	return nil
}

func userRemove(args []string, stdout, stderr io.Writer) error {
	cmd := command{"user remove", "NAME", "Remove a user with all of their tokens and sessions."}
	var db string
	fs := cmd.newFlagSet(stderr, &db)
	st, u, err := openArgUser(fs, args, &db)
	if err != nil {
		return err
	}
	defer st.Close()
	if err := (accounts{store: st}).RemoveUser(cliActor, u.ID); err != nil {
		if errors.Is(err, errLastAdmin) {
			return fmt.Errorf("user remove: %q is the last admin; make another user an admin first", u.Name)
		}
		return err
	}
	fmt.Fprintf(stdout, "removed user %q with their tokens and sessions\n", u.Name)
	return nil
}

// openMode says what an offline command may do with the database file.
type openMode int

const (
	existingDB openMode = iota // read and write a database that exists
	createDB                   // create the database when it is missing
	readOnlyDB                 // read a database that exists, beside other readers
)

// errNoDatabase is returned when a command that needs a database finds
// no file where -db points.
var errNoDatabase = errors.New("no database")

// openCLIStore opens the database of a command: a PostgreSQL database
// when path is a postgres:// or postgresql:// URL (see openPGStore), else
// a bbolt file (see openBoltCLIStore).
func openCLIStore(path string, mode openMode) (store, error) {
	if isPostgresURL(path) {
		ctx, cancel := context.WithTimeout(context.Background(), pgOpTimeout)
		defer cancel()
		return openPGStore(ctx, path)
	}
	return openBoltCLIStore(path, mode)
}

// errPostgresNotFile refuses a PostgreSQL URL to a command that works on
// a bbolt file. It never quotes the URL, which may hold a password.
var errPostgresNotFile = errors.New("this command works on a bbolt file, not a PostgreSQL database: back PostgreSQL up with pg_dump and restore it with pg_restore (see the README)")

// openBoltCLIStore opens the bbolt file of an offline command. Only serve
// and user add may create one (createDB): every other command refuses a
// missing file, so that a mistyped -db never leaves an empty database
// behind or lists an empty one. It waits lockTimeout for a server holding
// the file. A PostgreSQL URL is refused: the commands that want a file
// (backup, restore, compact) have PostgreSQL's own tools as counterparts.
func openBoltCLIStore(path string, mode openMode) (*boltStore, error) {
	if isPostgresURL(path) {
		return nil, errPostgresNotFile
	}
	if mode == createDB {
		if err := checkDBDir(path); err != nil {
			return nil, err
		}
		return openStore(path, lockTimeout)
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s (set -db or TOKEND_DB)", errNoDatabase, path)
	} else if err != nil {
		return nil, err
	}
	return openStoreWith(path, bolt.Options{Timeout: lockTimeout, ReadOnly: mode == readOnlyDB})
}

// checkDBDir reports, for a database about to be created at path, a
// folder that does not exist, and what to do about it.
func checkDBDir(path string) error {
	dir := filepath.Dir(path)
	if info, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("directory %s does not exist: create it or choose another -db", dir)
	} else if err == nil && !info.IsDir() {
		return fmt.Errorf("%s is not a directory: choose another -db", dir)
	}
	return nil
}

// openArgUser parses args, which must name one user, then opens the
// database -db names and finds that user, as openStoreForUser does.
func openArgUser(fs *flag.FlagSet, args []string, db *string) (store, userRecord, error) {
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return nil, userRecord{}, err
	}
	return openStoreForUser(*db, fs.Name(), pos[0])
}

// openStoreForUser opens the database and finds the user called name. On
// success the caller closes the store.
func openStoreForUser(db, cmd, name string) (store, userRecord, error) {
	st, err := openCLIStore(db, existingDB)
	if err != nil {
		return nil, userRecord{}, err
	}
	u, err := st.UserByName(name)
	if err != nil {
		st.Close()
		if errors.Is(err, errNotFound) {
			return nil, userRecord{}, fmt.Errorf("%s: no user called %q", cmd, name)
		}
		return nil, userRecord{}, err
	}
	return st, u, nil
}

// readNewPassword reads a password from the first line of stdin, or asks
// for it twice on the terminal without echo, and applies the policy.
func readNewPassword(stdin io.Reader, stderr io.Writer, fromStdin bool) (string, error) {
	var password string
	switch f, isFile := stdin.(*os.File); {
	case fromStdin:
		line, err := bufio.NewReader(io.LimitReader(stdin, maxPasswordLen+2)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("read password: %w", err)
		}
		password = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	case isFile && term.IsTerminal(int(f.Fd())):
		fmt.Fprint(stderr, "Password: ")
		first, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		fmt.Fprint(stderr, "Repeat it: ")
		second, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		if string(first) != string(second) {
			return "", errors.New("the passwords do not match")
		}
		password = string(first)
	default:
		return "", errors.New("standard input is not a terminal: pipe the password in with -password-stdin")
	}
	if err := checkPassword(password); err != nil {
		return "", err
	}
	return password, nil
}

// ---- token ----

func runToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub, args, err := subcommand("token", args, stderr, "create|list|revoke")
	if err != nil {
		return err
	}
	switch sub {
	case "create":
		return tokenCreate(args, stdout, stderr)
	case "list":
		return tokenList(args, stdout, stderr)
	case "revoke":
		return tokenRevoke(args, stdout, stderr)
	}
	return fmt.Errorf("token: unknown subcommand %q (want create, list or revoke)", sub)
}

func tokenCreate(args []string, stdout, stderr io.Writer) error {
	cmd := command{"token create", "-user NAME -name N [-scopes a,b] [-expires 30d] [-scope NAME=DESCRIPTION…] [-scopes-file FILE]", "Create a token and print it. It is shown this once. Operator scopes are declared as for serve."}
	var db string
	fs := cmd.newFlagSet(stderr, &db)
	user := fs.String("user", "", "the `name` of the user who will own the token")
	name := fs.String("name", "", "what the token is for")
	scopes := fs.String("scopes", "", "comma-separated `scopes`, such as tokens:read,tokens:write")
	expires := fs.String("expires", "30d", "lifetime: `Nd`, a Go duration such as 720h, an RFC 3339 time, or never")
	prefix := fs.String("token-prefix", defaultTokenPrefix, "`prefix` of the token; must match the server's")
	var declared operatorScopes
	declared.register(fs)
	if _, err := parseArgs(fs, args, 0); err != nil {
		return err
	}
	if *user == "" || *name == "" {
		fs.Usage()
		return errors.New("token create: -user and -name are required")
	}
	format, err := newTokenFormat(*prefix)
	if err != nil {
		return fmt.Errorf("-token-prefix: %w", err)
	}
	now := time.Now().UTC()
	exp, err := parseExpiry(*expires, now)
	if err != nil {
		return fmt.Errorf("-expires: %w", err)
	}
	st, owner, err := openStoreForUser(db, "token create", *user)
	if err != nil {
		return err
	}
	defer st.Close()
	reg, err := newScopeRegistry(declared.list())
	if err != nil {
		return err
	}
	spec, err := checkTokenSpec(reg, *name, splitList(*scopes), exp, owner, now)
	if err != nil {
		return fmt.Errorf("token create: %w", err)
	}
	t, secret, err := newToken(st, cliActor, format, owner, spec, now, 0)
	if err != nil {
		return err
	}
	expiry := "never expires"
	if t.ExpiresAt != nil {
		expiry = "expires " + t.ExpiresAt.Format(time.RFC3339)
	}
	fmt.Fprintf(stderr, "token %d %q for %s, %s; it is shown this once:\n", t.ID, t.Name, owner.Name, expiry)
	fmt.Fprintln(stdout, secret)
	return nil
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// parseExpiry reads a token lifetime: "never", a number of days ("30d"), a
// Go duration ("720h") or an RFC 3339 time. It returns nil for never.
func parseExpiry(s string, now time.Time) (*time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "never" {
		return nil, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 || n > 3660 {
			return nil, fmt.Errorf("%q: want a whole number of days from 1 to 3660, such as 30d", truncate(s, 40))
		}
		t := now.AddDate(0, 0, n)
		return &t, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return nil, fmt.Errorf("%q is not a positive duration", s)
		}
		t := now.Add(d)
		return &t, nil
	}
	if t, err := parseRFC3339(s); err == nil {
		return &t, nil
	}
	return nil, fmt.Errorf("%q: want Nd (such as 30d), a duration (such as 720h), an RFC 3339 time, or never", truncate(s, 40))
}

func tokenList(args []string, stdout, stderr io.Writer) error {
	cmd := command{"token list", "[-user NAME]", "List tokens: everyone's, or one user's. Secrets are never shown again."}
	var db string
	fs := cmd.newFlagSet(stderr, &db)
	user := fs.String("user", "", "list only this user's tokens")
	if _, err := parseArgs(fs, args, 0); err != nil {
		return err
	}
	st, err := openCLIStore(db, existingDB)
	if err != nil {
		return err
	}
	defer st.Close()
	users, err := st.Users()
	if err != nil {
		return err
	}
	names := map[uint64]string{}
	for _, u := range users {
		names[u.ID] = u.Name
	}
	var tokens []tokenRecord
	if *user != "" {
		u, err := st.UserByName(*user)
		if errors.Is(err, errNotFound) {
			return fmt.Errorf("token list: no user called %q", *user)
		} else if err != nil {
			return err
		}
		tokens, err = st.TokensByOwner(u.ID)
		if err != nil {
			return err
		}
	} else if tokens, err = st.AllTokens(); err != nil {
		return err
	}
	now := time.Now()
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tUSER\tNAME\tSCOPES\tCREATED\tEXPIRES\tLAST USED\tHINT")
	for _, t := range tokens {
		expires := "never"
		if t.ExpiresAt != nil {
			expires = t.ExpiresAt.UTC().Format(time.RFC3339)
			if t.expired(now) {
				expires += " (expired)"
			}
		}
		used := "never"
		if t.LastUsedAt != nil {
			used = t.LastUsedAt.UTC().Format(time.RFC3339)
		}
		scopes := strings.Join(t.Scopes, ",")
		if scopes == "" {
			scopes = "-"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t…%s\n", t.ID, names[t.Owner], t.Name, scopes,
			t.CreatedAt.UTC().Format(time.RFC3339), expires, used, t.Hint)
	}
	return tw.Flush()
}

func tokenRevoke(args []string, stdout, stderr io.Writer) error {
	cmd := command{"token revoke", "ID", "Revoke a token: it stops working at once."}
	var db string
	fs := cmd.newFlagSet(stderr, &db)
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	id, err := strconv.ParseUint(pos[0], 10, 64)
	if err != nil || id == 0 {
		return fmt.Errorf("token revoke: %q is not a token id (see tokend token list)", truncate(pos[0], 40))
	}
	st, err := openCLIStore(db, existingDB)
	if err != nil {
		return err
	}
	defer st.Close()
	t, err := st.DeleteToken(cliActor, id, anyOwner)
	if errors.Is(err, errNotFound) {
		return fmt.Errorf("token revoke: no token with id %d", id)
	} else if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "revoked token %d %q\n", t.ID, t.Name)
	return nil
}

// ---- purge ----

func runPurge(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := command{"purge", "[-expired-retention 168h] [-session-idle 168h] [-audit-retention 8760h]", "Delete tokens that expired longer ago than the retention, expired sessions, expired OAuth codes, device requests and grants, and security events older than their retention, as the server does every -purge-interval."}
	var db string
	fs := cmd.newFlagSet(stderr, &db)
	retention := fs.Duration("expired-retention", defaultConfig().ExpiredRetention, "how long expired tokens stay visible before they are deleted")
	idle := fs.Duration("session-idle", defaultConfig().SessionIdle, "sessions idle this long are deleted")
	auditRetention := fs.Duration("audit-retention", defaultConfig().AuditRetention, "security events older than this are deleted (0s: none)")
	if _, err := parseArgs(fs, args, 0); err != nil {
		return err
	}
	if *auditRetention < 0 {
		return fmt.Errorf("-audit-retention: %v is negative", *auditRetention)
	}
	if *retention < 0 {
		return fmt.Errorf("-expired-retention: %v is negative", *retention)
	}
	if *idle < time.Minute {
		return fmt.Errorf("-session-idle: %v is shorter than a minute", *idle)
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err == nil {
			err = checkMaxSetting(f)
		}
	})
	if err != nil {
		return err
	}
	st, err := openCLIStore(db, existingDB)
	if err != nil {
		return err
	}
	defer st.Close()
	res, err := purgeOnce(ctx, st, time.Now(), *retention)
	if err != nil {
		return err
	}
	sessions, err := st.PurgeSessions(ctx, time.Now(), *idle)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "purged %s in %s, %s and %s\n", plural(res.Tokens, "expired token"), plural(res.Transactions, "transaction"),
		plural(sessions, "expired session"), plural(res.OAuth, "expired OAuth record"))
	if *auditRetention > 0 {
		n, err := st.PurgeAudit(ctx, time.Now().Add(-*auditRetention), auditPurgeBatch)
		if err != nil {
			return err
		}
		if n > 0 {
			fmt.Fprintf(stdout, "purged %s older than %v\n", plural(n, "security event"), *auditRetention)
		}
	}
	return nil
}

// ---- client ----

func runClient(args []string, stdout, stderr io.Writer) error {
	sub, args, err := subcommand("client", args, stderr, "add|list|remove")
	if err != nil {
		return err
	}
	switch sub {
	case "add":
		return clientAdd(args, stdout, stderr)
	case "list":
		return clientList(args, stdout, stderr)
	case "remove":
		return clientRemove(args, stdout, stderr)
	}
	return fmt.Errorf("client: unknown subcommand %q (want add, list or remove)", sub)
}

// repeatedFlag is a flag that may be given several times, each value kept.
type repeatedFlag []string

func (f *repeatedFlag) String() string     { return strings.Join(*f, " ") }
func (f *repeatedFlag) Set(v string) error { *f = append(*f, v); return nil }

func clientAdd(args []string, stdout, stderr io.Writer) error {
	cmd := command{"client add", "[-redirect-uri URI]... [-public] [-device] [-access-ttl 8h] NAME",
		"Register an OAuth client (an app that asks users for tokens) and print its client id and, unless it is public, its secret. The secret is shown this once: only its hash is kept."}
	var db string
	fs := cmd.newFlagSet(stderr, &db)
	var uris repeatedFlag
	fs.Var(&uris, "redirect-uri", "`URI` where the app receives the authorization code: https, http on 127.0.0.1, [::1] or localhost (any port), or a private-use scheme such as com.example.app:/callback; repeatable")
	public := fs.Bool("public", false, "a public client, with no secret (an app on a user's device); it relies on PKCE alone")
	device := fs.Bool("device", false, "let the client use the device flow (command-line tools, devices without a browser)")
	ttl := fs.String("access-ttl", "", "`lifetime` of the access tokens it receives: 5m to 720h, or 1d to 30d (default 8h)")
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	spec := clientSpec{Name: pos[0], RedirectURIs: uris, Public: *public, Device: *device}
	if spec.AccessTTL, err = parseAccessTTL(*ttl); err != nil {
		return fmt.Errorf("-access-ttl: %w", err)
	}
	// Refused before the database is opened: bad input changes nothing.
	if _, err := checkClientSpec(spec); err != nil {
		return fmt.Errorf("client add: %w", err)
	}
	st, err := openCLIStore(db, existingDB)
	if err != nil {
		return err
	}
	defer st.Close()
	c, secret, err := (oauthActions{store: st, now: time.Now}).AddClient(cliActor, spec)
	if err != nil {
		return fmt.Errorf("client add: %w", err)
	}
	kind := "confidential"
	if c.Public {
		kind = "public"
	}
	fmt.Fprintf(stderr, "added %s client %q\n", kind, c.Name)
	fmt.Fprintf(stdout, "client_id: %s\n", c.ID)
	if secret != "" {
		fmt.Fprintln(stderr, "Its secret is shown this once; tokend keeps only a hash of it:")
		fmt.Fprintf(stdout, "client_secret: %s\n", secret)
	}
	return nil
}

func clientList(args []string, stdout, stderr io.Writer) error {
	cmd := command{"client list", "", "List OAuth clients. Secrets are never shown again."}
	var db string
	fs := cmd.newFlagSet(stderr, &db)
	if _, err := parseArgs(fs, args, 0); err != nil {
		return err
	}
	st, err := openCLIStore(db, existingDB)
	if err != nil {
		return err
	}
	defer st.Close()
	clients, err := (oauthActions{store: st}).ListClients()
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tTYPE\tFLOWS\tACCESS TTL\tCREATED\tREDIRECT URIS")
	for _, c := range clients {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\t%s\t%s\n", c.ID, c.Name, c.kind(), c.flows(), c.accessTTL(),
			c.CreatedAt.UTC().Format(time.RFC3339), cmp.Or(strings.Join(c.RedirectURIs, " "), "-"))
	}
	return tw.Flush()
}

func clientRemove(args []string, stdout, stderr io.Writer) error {
	cmd := command{"client remove", "ID|NAME", "Remove an OAuth client. Every grant made to it is revoked: its access and refresh tokens stop working at once."}
	var db string
	fs := cmd.newFlagSet(stderr, &db)
	pos, err := parseArgs(fs, args, 1)
	if err != nil {
		return err
	}
	st, err := openCLIStore(db, existingDB)
	if err != nil {
		return err
	}
	defer st.Close()
	c, err := (oauthActions{store: st}).RemoveClient(cliActor, pos[0])
	if err != nil {
		return fmt.Errorf("client remove: %w", err)
	}
	fmt.Fprintf(stdout, "removed client %q (%s); every grant made to it is revoked\n", c.Name, c.ID)
	return nil
}
