package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoggedPathsAreRedacted reads every non-test source file and finds
// each log call that passes a request's path, query or URL: each must
// pass it through redactPath. A token pasted into a path, a resent form's
// address or a forwarded URI would otherwise reach the log.
func TestLoggedPathsAreRedacted(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || !isLogCall(call) {
				return true
			}
			checked++
			for _, arg := range call.Args {
				ast.Inspect(arg, func(n ast.Node) bool {
					if c, ok := n.(*ast.CallExpr); ok && isIdent(c.Fun, "redactPath") {
						return false // redacted: whatever is inside is fine
					}
					if sel, ok := n.(*ast.SelectorExpr); ok && isRequestURL(sel) {
						t.Errorf("%s: a log call passes %s without redactPath", fset.Position(sel.Pos()), exprText(sel))
						return false
					}
					return true
				})
			}
			return true
		})
	}
	if checked < 20 {
		t.Fatalf("found only %d log calls; the scan is broken", checked)
	}
}

// isLogCall reports whether call is a slog call made on a logger:
// x.log.Info(…), log.Warn(…) and the like.
func isLogCall(call *ast.CallExpr) bool {
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	switch sel.Sel.Name {
	case "Debug", "Info", "Warn", "Error", "Log", "LogAttrs":
	default:
		return false
	}
	switch x := sel.X.(type) {
	case *ast.Ident:
		return x.Name == "log" || x.Name == "logger"
	case *ast.SelectorExpr:
		return x.Sel.Name == "log"
	}
	return false
}

// isRequestURL reports whether sel reads a request's URL or a part of it
// that holds the path or the query: r.URL.Path, r.URL, r.RequestURI, ….
func isRequestURL(sel *ast.SelectorExpr) bool {
	switch sel.Sel.Name {
	case "RequestURI":
		return true
	case "URL":
		return true
	case "Path", "RawPath", "RawQuery", "EscapedPath":
		inner, ok := sel.X.(*ast.SelectorExpr)
		return ok && inner.Sel.Name == "URL"
	}
	return false
}

func isIdent(e ast.Expr, name string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == name
}

func exprText(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.Ident:
		return x.Name
	case *ast.SelectorExpr:
		return exprText(x.X) + "." + x.Sel.Name
	}
	return "…"
}
