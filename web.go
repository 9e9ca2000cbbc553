package main

import (
	"embed"
	"html/template"
	"io/fs"
)

//go:embed web/templates/*.html web/static/*
var webFS embed.FS

// staticFS holds the files served under /static/.
var staticFS = func() fs.FS {
	sub, err := fs.Sub(webFS, "web/static")
	if err != nil {
		panic(err) // the embed pattern above guarantees the folder
	}
	return sub
}()

// parseTemplates parses every page once, at start-up.
func parseTemplates() (*template.Template, error) {
	return template.New("").ParseFS(webFS, "web/templates/*.html")
}
