package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Operator scopes are the permissions of the apps that tokend protects,
// such as treasure:create. The operator declares them at start-up with
// -scope NAME=DESCRIPTION (repeatable; TOKEND_SCOPES holds several separated
// by ';') and -scopes-file FILE (one "NAME DESCRIPTION" a line).

// maxScopeDescriptionLen bounds a scope's description, in characters: it is
// a label beside a checkbox, not documentation.
const maxScopeDescriptionLen = 200

// scopeDecl is an operator scope and the place it was declared, so that a
// clash can name both places.
type scopeDecl struct {
	scope
	origin string
}

// operatorScopes collects the scopes an operator declares through the flags
// that register adds. Every declaration is checked as it is parsed, so that
// a bad one stops start-up with a message naming its place. The zero value
// holds no scopes and is ready to use.
type operatorScopes struct {
	decls []scopeDecl
}

// register adds -scope and -scopes-file to fs. Both feed o.
func (o *operatorScopes) register(fs *flag.FlagSet) {
	fs.Var(scopeFlag{o}, "scope", "declare a scope for the apps behind tokend: `NAME=DESCRIPTION`; repeatable, and one value may hold several separated by ';'")
	fs.Var(scopesFileFlag{o}, "scopes-file", "read scopes from `file`: one NAME DESCRIPTION a line; lines starting with # are comments")
}

// list returns the declared scopes in declaration order.
func (o *operatorScopes) list() []scope {
	out := make([]scope, 0, len(o.decls))
	for _, d := range o.decls {
		out = append(out, d.scope)
	}
	return out
}

// add checks one declaration and keeps it, remembering origin, where it
// was made, for a later clash to name. It fails on a bad name, a missing or
// unprintable description, a built-in name and a name declared before. The
// caller names the place of a failure.
func (o *operatorScopes) add(name, description, origin string) error {
	description = strings.TrimSpace(description)
	switch {
	case !scopeNamePattern.MatchString(name):
		return fmt.Errorf("scope name %q: want 1 to 64 lowercase letters, digits, ':', '.', '_' or '-', starting with a letter or digit", truncate(name, 80))
	case description == "":
		return fmt.Errorf("scope %q needs a description: people read it when they choose scopes", name)
	case !utf8.ValidString(description) || strings.ContainsFunc(description, unicode.IsControl):
		return fmt.Errorf("the description of scope %q must be UTF-8 text without control characters", name)
	case utf8.RuneCountInString(description) > maxScopeDescriptionLen:
		return fmt.Errorf("the description of scope %q is longer than %d characters", name, maxScopeDescriptionLen)
	}
	for _, b := range builtinScopes {
		if b.Name == name {
			return fmt.Errorf("scope %q is built in; choose another name", name)
		}
	}
	for _, d := range o.decls {
		if d.Name == name {
			return fmt.Errorf("scope %q is already declared by %s", name, d.origin)
		}
	}
	o.decls = append(o.decls, scopeDecl{scope{name, description}, origin})
	return nil
}

// scopeFlag is the flag.Value of -scope.
type scopeFlag struct{ o *operatorScopes }

func (f scopeFlag) String() string {
	if f.o == nil {
		return ""
	}
	var names []string
	for _, d := range f.o.decls {
		names = append(names, d.Name)
	}
	return strings.Join(names, ";")
}

// Set declares the scopes of one -scope value: NAME=DESCRIPTION, or several
// separated by ';' as TOKEND_SCOPES holds them.
func (f scopeFlag) Set(value string) error {
	var parts []string
	for _, p := range strings.Split(value, ";") {
		if strings.TrimSpace(p) != "" {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return errors.New("want NAME=DESCRIPTION")
	}
	for i, p := range parts {
		origin := fmt.Sprintf("%q", truncate(p, 80))
		if len(parts) > 1 {
			origin = fmt.Sprintf("declaration %d of %d, %s", i+1, len(parts), origin)
		}
		err := errors.New("want NAME=DESCRIPTION")
		if name, description, ok := strings.Cut(p, "="); ok {
			err = f.o.add(strings.TrimSpace(name), description, origin)
		}
		switch {
		case err == nil:
		case len(parts) == 1:
			return err // the flag package or parseFlags quotes the value
		default:
			return fmt.Errorf("%s: %w", origin, err)
		}
	}
	return nil
}

// scopesFileFlag is the flag.Value of -scopes-file.
type scopesFileFlag struct{ o *operatorScopes }

func (f scopesFileFlag) String() string { return "" }

// Set reads the scopes file at path: one "NAME DESCRIPTION" a line, blank
// lines and lines starting with # ignored. An error names the line.
func (f scopesFileFlag) Set(path string) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	sc := bufio.NewScanner(file)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, description := line, ""
		if i := strings.IndexFunc(line, unicode.IsSpace); i >= 0 {
			name, description = line[:i], line[i:]
		}
		origin := fmt.Sprintf("%s line %d", path, n)
		if err := f.o.add(name, description, origin); err != nil {
			return fmt.Errorf("%s: %w", origin, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s line %d: %w", path, n+1, err)
	}
	return nil
}
