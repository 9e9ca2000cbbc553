package main

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// configRows parses the table -print-config prints into flag → value and
// flag → source.
func configRows(t *testing.T, out string) (values, sources map[string]string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) < 2 || strings.Join(strings.Fields(lines[0]), " ") != "FLAG VALUE SOURCE" {
		t.Fatalf("-print-config printed %q; want a FLAG VALUE SOURCE table", out)
	}
	values, sources = map[string]string{}, map[string]string{}
	for _, line := range lines[1:] {
		f := strings.Fields(line)
		if len(f) < 3 {
			t.Fatalf("-print-config line %q has fewer than three columns", line)
		}
		values[f[0]], sources[f[0]] = f[1], strings.Join(f[2:], " ")
	}
	return values, sources
}

// TestConfigPrecedence checks that a flag beats its environment variable,
// which beats the default, and that -print-config says which one won.
func TestConfigPrecedence(t *testing.T) {
	clearTokendEnv(t)
	db := filepath.Join(t.TempDir(), "env.db")
	t.Setenv("TOKEND_DB", db)
	t.Setenv("TOKEND_LOG_LEVEL", "debug")
	t.Setenv("TOKEND_PURGE_INTERVAL", "5m")
	t.Setenv("TOKEND_METRICS_LOOPBACK", "false")
	out, _, err := runCLI(t, "", "serve", "-print-config", "-log-level", "warn", "-max-tokens-per-user", "7")
	if err != nil {
		t.Fatalf("serve -print-config = %v", err)
	}
	values, sources := configRows(t, out)
	tests := []struct {
		flag, value, source string
	}{
		{"-addr", "127.0.0.1:8080", "default"},                        // neither
		{"-db", db, "env TOKEND_DB"},                                  // environment only
		{"-purge-interval", "5m0s", "env TOKEND_PURGE_INTERVAL"},      // environment only
		{"-metrics-loopback", "false", "env TOKEND_METRICS_LOOPBACK"}, // a boolean from the environment
		{"-log-level", "warn", "flag -log-level"},                     // flag beats environment
		{"-max-tokens-per-user", "7", "flag -max-tokens-per-user"},    // flag only
		{"-expired-retention", "168h0m0s", "default"},
	}
	for _, tt := range tests {
		if values[tt.flag] != tt.value || sources[tt.flag] != tt.source {
			t.Errorf("-print-config: %s = %q from %q; want %q from %q", tt.flag, values[tt.flag], sources[tt.flag], tt.value, tt.source)
		}
	}
	// Every configuration flag is listed, and nothing else.
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg := defaultConfig()
	cfg.register(fs)
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		n++
		if _, ok := values["-"+f.Name]; !ok {
			t.Errorf("-print-config does not list -%s", f.Name)
		}
	})
	if len(values) != n {
		t.Errorf("-print-config lists %d flags; serve has %d configuration flags: %v", len(values), n, values)
	}
	if _, err := os.Stat(db); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("-print-config touched the database file %s: %v", db, err)
	}

	// The values reach the configuration that serve would run with.
	cfg = defaultConfig()
	fs = flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg.register(fs)
	if _, err := parseFlagSources(fs, []string{"-log-level", "warn"}); err != nil {
		t.Fatal(err)
	}
	if cfg.DB != db || cfg.LogLevel != "warn" || cfg.PurgeInterval != 5*time.Minute || cfg.MetricsLoopback || cfg.Addr != "127.0.0.1:8080" {
		t.Errorf("config = %+v; want db and purge interval from the environment, log level from the flag, addr by default, metrics-loopback off", cfg)
	}
}

// TestConfigRejectsBadValues checks that serve refuses to start on a value
// that cannot work, from a flag or from the environment, and names it.
func TestConfigRejectsBadValues(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{name: "addr without port", args: []string{"-addr", "localhost"}, want: "-addr"},
		{name: "addr with a bad port", args: []string{"-addr", "127.0.0.1:99999"}, want: "-addr"},
		{name: "empty db", args: []string{"-db", ""}, want: "-db"},
		{name: "zero hash concurrency", args: []string{"-hash-concurrency", "0"}, want: "-hash-concurrency"},
		{name: "negative retention", args: []string{"-expired-retention", "-1h"}, want: "-expired-retention"},
		{name: "zero shutdown timeout", args: []string{"-shutdown-timeout", "0s"}, want: "-shutdown-timeout"},
		{name: "not a duration", args: []string{"-purge-interval", "often"}, want: "-purge-interval"},
		{name: "not a boolean", args: []string{"-metrics-loopback=maybe"}, want: "-metrics-loopback"},
		{name: "bad log level from env", env: map[string]string{"TOKEND_LOG_LEVEL": "loud"}, want: "-log-level"},
		{name: "bad access log", args: []string{"-access-log", "some"}, want: `-access-log: "some" is not all, errors or off`},
		{name: "bad access log from env", env: map[string]string{"TOKEND_ACCESS_LOG": "ALL"}, want: "-access-log"},
		{name: "bad addr from env", env: map[string]string{"TOKEND_ADDR": "nonsense"}, want: "-addr"},
		{name: "bad duration from env", env: map[string]string{"TOKEND_LAST_USED_INTERVAL": "soon"}, want: "TOKEND_LAST_USED_INTERVAL"},
		{name: "bad boolean from env", env: map[string]string{"TOKEND_METRICS_LOOPBACK": "perhaps"}, want: "TOKEND_METRICS_LOOPBACK"},
	}
	clearTokendEnv(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			db := filepath.Join(t.TempDir(), "tokend.db")
			args := append([]string{"serve"}, tt.args...)
			if !hasFlag(tt.args, "-db") {
				args = append(args, "-db", db)
			}
			_, _, err := runCLI(t, "", args...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("tokend %s with %v = %v; want an error naming %s", strings.Join(args[1:], " "), tt.env, err, tt.want)
			}
			if _, err := os.Stat(db); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused start created the database file: %v", err)
			}
		})
	}
}

// clearTokendEnv unsets every TOKEND_* variable for the rest of the test,
// so that defaults show as defaults whatever the environment holds.
func clearTokendEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "TOKEND_") {
			t.Setenv(name, "") // restored when the test ends
			os.Unsetenv(name)
		}
	}
}

func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// TestPrintConfigOfBadValues checks that -print-config still shows where a
// bad value came from, and fails as serve would.
func TestPrintConfigOfBadValues(t *testing.T) {
	clearTokendEnv(t)
	t.Setenv("TOKEND_HASH_CONCURRENCY", "0")
	out, _, err := runCLI(t, "", "serve", "-print-config")
	if err == nil || !strings.Contains(err.Error(), "-hash-concurrency") {
		t.Errorf("serve -print-config with TOKEND_HASH_CONCURRENCY=0 = %v; want an error naming -hash-concurrency", err)
	}
	values, sources := configRows(t, out)
	if values["-hash-concurrency"] != "0" || sources["-hash-concurrency"] != "env TOKEND_HASH_CONCURRENCY" {
		t.Errorf("-print-config shows -hash-concurrency = %q from %q; want 0 from env TOKEND_HASH_CONCURRENCY", values["-hash-concurrency"], sources["-hash-concurrency"])
	}
}

// TestActionFlagsIgnoreEnvironment checks that -print-config and -version
// are never set from TOKEND_PRINT_CONFIG or TOKEND_VERSION, which a
// deployment may set for its own reasons.
func TestActionFlagsIgnoreEnvironment(t *testing.T) {
	t.Setenv("TOKEND_VERSION", "v1.2.3")
	t.Setenv("TOKEND_PRINT_CONFIG", "true")
	out, _, err := runCLI(t, "", "serve", "-hash-concurrency", "0", "-db", filepath.Join(t.TempDir(), "x.db"))
	if err == nil || !strings.Contains(err.Error(), "-hash-concurrency") || out != "" {
		t.Errorf("serve with TOKEND_PRINT_CONFIG and TOKEND_VERSION set = %v, printed %q; want the config check's error and nothing printed", err, out)
	}
}

// TestPrintConfigHidesSecrets checks that a flag holding a secret is shown
// as set or not, never with its value.
func TestPrintConfigHidesSecrets(t *testing.T) {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.String("session-secret", "", "")
	fs.String("admin-password", "", "")
	fs.String("signing-key", "", "")
	fs.String("token-prefix", "tkd_", "")
	fs.String("name", "", "")
	fs.Bool("print-config", false, "")
	for name, v := range map[string]string{"session-secret": "hunter2-secret", "admin-password": "hunter2-password", "signing-key": "hunter2-key"} {
		fs.Set(name, v)
	}
	var b strings.Builder
	writeConfig(&b, fs, map[string]string{"session-secret": "env TOKEND_SESSION_SECRET"})
	out := b.String()
	if strings.Contains(out, "hunter2") {
		t.Errorf("-print-config shows a secret:\n%s", out)
	}
	values, sources := configRows(t, out)
	want := map[string]string{"-session-secret": "(hidden)", "-admin-password": "(hidden)", "-signing-key": "(hidden)", "-token-prefix": "tkd_", "-name": `""`}
	for f, v := range want {
		if values[f] != v {
			t.Errorf("-print-config shows %s as %q; want %q", f, values[f], v)
		}
	}
	if sources["-session-secret"] != "env TOKEND_SESSION_SECRET" || sources["-name"] != "default" {
		t.Errorf("sources = %v", sources)
	}
	if _, ok := values["-print-config"]; ok {
		t.Errorf("-print-config lists itself:\n%s", out)
	}
}

// TestBadValueMessages checks that a value a flag refuses, from the
// command line or the environment, is reported in one line that names
// where it came from and the form wanted, without the usage dump.
func TestBadValueMessages(t *testing.T) {
	const (
		duration = "a duration such as 90s, 15m or 2h"
		boolean  = "true or false (also accepted: 1, 0, t, f, T, F, TRUE, FALSE, True, False)"
		number   = "a whole number such as 100"
	)
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{args: []string{"serve", "-purge-interval", "5"}, want: `invalid value "5" for -purge-interval: ` + duration},
		{args: []string{"serve", "-session-idle=7d"}, want: `invalid value "7d" for -session-idle: ` + duration},
		{args: []string{"serve", "-trust-proxy=yes"}, want: `invalid value "yes" for -trust-proxy: ` + boolean},
		{args: []string{"serve", "-max-tokens-per-user", "many"}, want: `invalid value "many" for -max-tokens-per-user: ` + number},
		{args: []string{"serve"}, env: map[string]string{"TOKEND_PURGE_INTERVAL": "5"}, want: `invalid value "5" for TOKEND_PURGE_INTERVAL: ` + duration},
		{args: []string{"serve"}, env: map[string]string{"TOKEND_TRUST_PROXY": "yes"}, want: `invalid value "yes" for TOKEND_TRUST_PROXY: ` + boolean},
		{args: []string{"serve"}, env: map[string]string{"TOKEND_HASH_QUEUE": "lots"}, want: `invalid value "lots" for TOKEND_HASH_QUEUE: ` + number},
		{args: []string{"purge", "-expired-retention", "1w"}, want: `invalid value "1w" for -expired-retention: ` + duration},
		{args: []string{"user", "add", "-admin=perhaps", "bob"}, want: `invalid value "perhaps" for -admin: ` + boolean},
		{args: []string{"serve", "-nope"}, want: "flag provided but not defined: -nope (tokend help serve lists the flags)"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			args := append(tt.args, "-db", filepath.Join(t.TempDir(), "tokend.db"))
			_, stderr, err := runCLI(t, "", args...)
			if err == nil || err.Error() != tt.want {
				t.Errorf("tokend %s with %v = %v; want %q", strings.Join(tt.args, " "), tt.env, err, tt.want)
			}
			if stderr != "" {
				t.Errorf("tokend %s printed %q besides the error; want nothing", strings.Join(tt.args, " "), stderr)
			}
		})
	}
}

// TestDurationBounds checks that every duration setting of serve refuses
// a value over 100 years, naming the flag, and takes 100 years itself
// where a long time can make sense.
func TestDurationBounds(t *testing.T) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg.register(fs)
	fs.VisitAll(func(f *flag.Flag) {
		if g, ok := f.Value.(flag.Getter); !ok {
			return
		} else if _, ok := g.Get().(time.Duration); !ok {
			return
		}
		c := defaultConfig()
		cfs := flag.NewFlagSet("serve", flag.ContinueOnError)
		c.register(cfs)
		cfs.Set(f.Name, "876001h")
		want := "-" + f.Name + ": 876001h0m0s is more than 100 years"
		if err := c.check(); err == nil || err.Error() != want {
			t.Errorf("check with -%s 876001h = %v; want %q", f.Name, err, want)
		}
	})
	cfg = defaultConfig()
	cfg.ExpiredRetention, cfg.SessionLifetime = maxSetting, maxSetting
	if err := cfg.check(); err != nil {
		t.Errorf("check with -expired-retention and -session-lifetime of 100 years = %v; want nil", err)
	}
}
