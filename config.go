package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"
)

// actionFlags ask serve to do something other than serve. They are not
// configuration: no environment variable sets them, and -print-config
// leaves them out.
var actionFlags = map[string]bool{"print-config": true, "version": true}

// writeConfig prints every configuration flag of fs with its effective
// value and where that value came from: sources maps a flag set on the
// command line or from the environment to "flag -NAME" or "env TOKEND_NAME"
// (as parseFlagSources returns); any other flag holds its default. Secret
// values are never printed, only whether they are set.
func writeConfig(w io.Writer, fs *flag.FlagSet, sources map[string]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FLAG\tVALUE\tSOURCE")
	fs.VisitAll(func(f *flag.Flag) {
		if actionFlags[f.Name] {
			return
		}
		source := sources[f.Name]
		if source == "" {
			source = "default"
		}
		fmt.Fprintf(tw, "-%s\t%s\t%s\n", f.Name, configValue(f), source)
	})
	tw.Flush()
}

// configValue shows f's value as -print-config prints it: quoted when it
// is empty or holds spaces, hidden when the flag holds a secret, and a
// database URL without its password.
func configValue(f *flag.Flag) string {
	v := f.Value.String()
	if f.Name == "db" {
		v = redactDB(v)
	}
	switch {
	case isSecretFlag(f.Name) && v != "":
		return "(hidden)"
	case isSecretFlag(f.Name):
		return "(unset)"
	case v == "" || strings.ContainsFunc(v, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }):
		return strconv.Quote(v)
	}
	return v
}

// isSecretFlag reports whether a flag's name says it holds a secret, which
// -print-config must not show: a password, a key, a secret or a token
// itself (but not a token's prefix or lifetime).
func isSecretFlag(name string) bool {
	for _, word := range []string{"secret", "password", "passwd"} {
		if strings.Contains(name, word) {
			return true
		}
	}
	return strings.HasSuffix(name, "-key") || name == "key" || strings.HasSuffix(name, "-token") || name == "token"
}

// checkAddr reports whether addr is a host:port to listen on.
func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %v", addr, err)
	}
	if _, err := net.LookupPort("tcp", port); err != nil {
		return fmt.Errorf("%q has no valid port: %v", addr, err)
	}
	return nil
}
