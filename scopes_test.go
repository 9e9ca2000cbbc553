package main

import (
	"flag"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// treasureScopes are the operator scopes of the tests: an app's own
// permissions, declared as -scope would declare them.
var treasureScopes = []string{
	"treasure:create=Bury new treasure",
	"treasure:edit=Move or rename treasure",
	"user:edit=Change user profiles",
}

// declareScopes gives ts the operator scopes decls (NAME=DESCRIPTION each)
// beside the built-in ones.
func (ts *testServer) declareScopes(decls ...string) {
	ts.t.Helper()
	var o operatorScopes
	for _, d := range decls {
		if err := (scopeFlag{&o}).Set(d); err != nil {
			ts.t.Fatalf("-scope %q: %v", d, err)
		}
	}
	reg, err := newScopeRegistry(o.list())
	if err != nil {
		ts.t.Fatalf("newScopeRegistry: %v", err)
	}
	ts.scopes = reg
}

// parseServeFlags parses args as serve does, environment included.
func parseServeFlags(args ...string) (config, error) {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cfg.register(fs)
	err := parseFlags(fs, args)
	return cfg, err
}

// writeFile writes content to name in a fresh temporary folder and returns
// its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestOperatorScopeDeclarations(t *testing.T) {
	file := writeFile(t, "scopes.txt", `# The treasure app's scopes.

treasure:create   Bury new treasure
	treasure.edit_v2	Move treasure; rename it   
# user:edit  commented out
user-admin Manage # everything
`)
	tests := []struct {
		name string
		args []string
		env  string // TOKEND_SCOPES; "" leaves it unset
		want []scope
	}{
		{
			name: "none",
		},
		{
			name: "one -scope",
			args: []string{"-scope", "treasure:create=Bury new treasure"},
			want: []scope{{"treasure:create", "Bury new treasure"}},
		},
		{
			name: "-scope repeated, spaces around trimmed, '=' kept in the description",
			args: []string{"-scope", "treasure:create = Bury new treasure ", "-scope", "user:edit=Set a=b"},
			want: []scope{{"treasure:create", "Bury new treasure"}, {"user:edit", "Set a=b"}},
		},
		{
			name: "TOKEND_SCOPES with several, a trailing ';' ignored",
			env:  "treasure:create=Bury new treasure;user:edit=Change user profiles;",
			want: []scope{{"treasure:create", "Bury new treasure"}, {"user:edit", "Change user profiles"}},
		},
		{
			name: "a -scope flag beats TOKEND_SCOPES",
			args: []string{"-scope", "a=A"},
			env:  "b=B",
			want: []scope{{"a", "A"}},
		},
		{
			name: "file: comments and blank lines skipped, tabs and spaces separate",
			args: []string{"-scopes-file", file},
			want: []scope{{"treasure:create", "Bury new treasure"}, {"treasure.edit_v2", "Move treasure; rename it"}, {"user-admin", "Manage # everything"}},
		},
		{
			name: "file and TOKEND_SCOPES together",
			args: []string{"-scopes-file", file},
			env:  "user:edit=Change user profiles",
			want: []scope{{"treasure:create", "Bury new treasure"}, {"treasure.edit_v2", "Move treasure; rename it"}, {"user-admin", "Manage # everything"}, {"user:edit", "Change user profiles"}},
		},
		{
			name: "64 characters",
			args: []string{"-scope", strings.Repeat("a", 64) + "=long"},
			want: []scope{{strings.Repeat("a", 64), "long"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				t.Setenv("TOKEND_SCOPES", tt.env)
			}
			cfg, err := parseServeFlags(tt.args...)
			if err != nil {
				t.Fatalf("serve %q = %v; want it parsed", tt.args, err)
			}
			if got := cfg.Scopes.list(); !slices.Equal(got, tt.want) {
				t.Errorf("serve %q with TOKEND_SCOPES=%q declares %q; want %q", tt.args, tt.env, got, tt.want)
			}
		})
	}
}

func TestOperatorScopeDeclarationErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     string
		file    string // written to scopes.txt, passed as -scopes-file
		wantErr []string
	}{
		{name: "upper case", args: []string{"-scope", "Treasure=x"}, wantErr: []string{`-scope`, `"Treasure"`, "lowercase"}},
		{name: "space in the name", args: []string{"-scope", "tre asure=x"}, wantErr: []string{`"tre asure"`}},
		{name: "starts with ':'", args: []string{"-scope", ":x=y"}, wantErr: []string{`":x"`}},
		{name: "65 characters", args: []string{"-scope", strings.Repeat("a", 65) + "=x"}, wantErr: []string{"1 to 64"}},
		{name: "empty name", args: []string{"-scope", "=x"}, wantErr: []string{`""`}},
		{name: "no '='", args: []string{"-scope", "treasure:create"}, wantErr: []string{"NAME=DESCRIPTION"}},
		{name: "empty value", args: []string{"-scope", ""}, wantErr: []string{"NAME=DESCRIPTION"}},
		{name: "no description", args: []string{"-scope", "treasure:create= "}, wantErr: []string{"needs a description"}},
		{name: "control character", args: []string{"-scope", "a=b\x07"}, wantErr: []string{"control characters"}},
		{name: "description too long", args: []string{"-scope", "a=" + strings.Repeat("é", 201)}, wantErr: []string{"200 characters"}},
		{name: "built-in name", args: []string{"-scope", "admin=root"}, wantErr: []string{`"admin" is built in`}},
		{name: "declared twice", args: []string{"-scope", "a=A", "-scope", "a=again"}, wantErr: []string{`"a" is already declared by "a=A"`}},
		{
			name: "TOKEND_SCOPES: the bad declaration and the variable named", env: "a=A;B=x;c=C",
			wantErr: []string{"TOKEND_SCOPES", "declaration 2 of 3", `"B=x"`},
		},
		{name: "TOKEND_SCOPES: twice", env: "a=A;a=B", wantErr: []string{"declaration 2 of 2", `already declared by declaration 1 of 2`}},
		{
			name: "file: the line named", file: "# scopes\n\ngood Good\nBAD:scope Bad\n",
			wantErr: []string{"-scopes-file", "scopes.txt line 4", `"BAD:scope"`},
		},
		{name: "file: no description", file: "good Good\nlonely\n", wantErr: []string{"scopes.txt line 2", `"lonely" needs a description`}},
		{name: "file: repeats a -scope", args: []string{"-scope", "good=Good"}, file: "good Again\n", wantErr: []string{"scopes.txt line 1", `already declared by "good=Good"`}},
		{name: "file: a line too long", file: "good Good\nlong " + strings.Repeat("x", 70000) + "\n", wantErr: []string{"scopes.txt line 2", "too long"}},
		{name: "file: missing", args: []string{"-scopes-file", "/nonexistent/scopes.txt"}, wantErr: []string{"-scopes-file", "/nonexistent/scopes.txt", "no such file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				t.Setenv("TOKEND_SCOPES", tt.env)
			}
			args := tt.args
			if tt.file != "" {
				args = append(args, "-scopes-file", writeFile(t, "scopes.txt", tt.file))
			}
			_, err := parseServeFlags(args...)
			if err == nil {
				t.Fatalf("serve %q with TOKEND_SCOPES=%q = nil error; want one", args, tt.env)
			}
			for _, want := range tt.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("serve %q with TOKEND_SCOPES=%q = %v; want it to say %s", args, tt.env, err, want)
				}
			}
		})
	}
}

// TestServeStopsOnBadScopes checks that a bad declaration stops start-up
// before the database is touched.
func TestServeStopsOnBadScopes(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokend.db")
	file := writeFile(t, "scopes.txt", "good Good\nnot/good Bad\n")
	_, _, err := runCLI(t, "", "serve", "-addr", "127.0.0.1:0", "-db", db, "-scopes-file", file)
	if err == nil || !strings.Contains(err.Error(), "scopes.txt line 2") {
		t.Fatalf("serve -scopes-file with a bad line 2 = %v; want an error naming line 2", err)
	}
	if _, err := os.Stat(db); !os.IsNotExist(err) {
		t.Errorf("serve created the database before refusing its scopes: stat = %v", err)
	}
}

// TestOperatorScopesReachTheAPI checks that declared scopes reach the
// server built from the configuration, with their descriptions, and that
// the API grants them beside the built-in ones and nothing else.
func TestOperatorScopesReachTheAPI(t *testing.T) {
	cfg, err := parseServeFlags("-scope", "treasure:create=Bury new treasure", "-scope", "user:edit=Change user profiles")
	if err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t)
	cfg.DB, cfg.Argon = ts.cfg.DB, ts.cfg.Argon
	s, err := newServer(ts.store, cfg, ts.log, ts.clock.Now)
	if err != nil {
		t.Fatalf("newServer: %v", err)
	}
	ts.server, ts.handler = s, s.routes()

	want := append(slices.Clone(builtinScopes), scope{"treasure:create", "Bury new treasure"}, scope{"user:edit", "Change user profiles"})
	if got := ts.scopes.all(); !slices.Equal(got, want) {
		t.Errorf("the server's scopes = %q; want %q", got, want)
	}

	u := ts.addUser("alice", false)
	tests := []struct {
		scopes     []string
		wantStatus int
		wantScopes []string
	}{
		{[]string{"user:edit", "tokens:read", "treasure:create"}, http.StatusCreated, []string{"tokens:read", "treasure:create", "user:edit"}},
		{[]string{"treasure:edit"}, http.StatusBadRequest, nil},
		{[]string{"treasure:create", "Treasure:create"}, http.StatusBadRequest, nil},
	}
	for _, tt := range tests {
		req := request{method: "POST", path: "/api/v1/tokens", header: basicHeader(u), body: tokenRequest("app", tt.scopes, nil)}
		what := label(req) + " with scopes " + strings.Join(tt.scopes, ",")
		before := ts.snapshot()
		w := ts.do(req)
		if tt.wantStatus != http.StatusCreated {
			p := checkProblem(t, what, w, tt.wantStatus)
			checkDetail(t, what, p, "unknown scope")
			assertUnchanged(t, what, before, ts.snapshot())
			continue
		}
		got := checkSecretAnswer(t, what, w)
		if !slices.Equal(got.Scopes, tt.wantScopes) {
			t.Errorf("%s = scopes %q; want %q", what, got.Scopes, tt.wantScopes)
		}
	}
}

// TestCLITokenCreateOperatorScopes checks that token create takes the
// scope declarations serve does, so that it can grant operator scopes.
func TestCLITokenCreateOperatorScopes(t *testing.T) {
	db := filepath.Join(t.TempDir(), "tokend.db")
	if _, _, err := runCLI(t, "good password here\n", "user", "add", "-db", db, "-password-stdin", "alice"); err != nil {
		t.Fatal(err)
	}
	file := writeFile(t, "scopes.txt", "treasure:create Bury new treasure\n")
	tests := []struct {
		name       string
		args       []string
		env        string
		wantScopes string
		wantErr    string
	}{
		{name: "-scope", args: []string{"-scope", "treasure:create=Bury", "-scopes", "treasure:create,tokens:read"}, wantScopes: "tokens:read treasure:create"},
		{name: "TOKEND_SCOPES", env: "user:edit=Edit;treasure:create=Bury", args: []string{"-scopes", "treasure:create"}, wantScopes: "treasure:create"},
		{name: "-scopes-file", args: []string{"-scopes-file", file, "-scopes", "treasure:create"}, wantScopes: "treasure:create"},
		{name: "undeclared", args: []string{"-scopes", "treasure:create"}, wantErr: `unknown scope "treasure:create"`},
		{name: "bad declaration", args: []string{"-scope", "Treasure=x", "-scopes", "tokens:read"}, wantErr: `"Treasure"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.env != "" {
				t.Setenv("TOKEND_SCOPES", tt.env)
			}
			args := append([]string{"token", "create", "-db", db, "-user", "alice", "-name", tt.name}, tt.args...)
			before := snapshotFile(t, db)
			out, _, err := runCLI(t, "", args...)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("tokend %s = %v; want an error saying %s", strings.Join(args, " "), err, tt.wantErr)
				}
				assertUnchanged(t, strings.Join(args, " "), before, snapshotFile(t, db))
				return
			}
			if err != nil {
				t.Fatalf("tokend %s = %v", strings.Join(args, " "), err)
			}
			h, err := mustFormat(t, defaultTokenPrefix).parse(strings.TrimSpace(out))
			if err != nil {
				t.Fatalf("token create printed %q: %v", out, err)
			}
			st, err := openStore(db, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			tok, _, err := st.TokenByHash(h)
			st.Close()
			if err != nil || strings.Join(tok.Scopes, " ") != tt.wantScopes {
				t.Errorf("tokend %s stored scopes %q, %v; want %q", strings.Join(args, " "), tok.Scopes, err, tt.wantScopes)
			}
		})
	}
}
