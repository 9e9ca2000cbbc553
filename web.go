package main

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"
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

// staticFiles is the set of files served under /static/, read once at
// start-up: each with its content and an ETag made from it, so that a
// browser revalidates its copy with one request answered 304 and sees a
// changed file as soon as tokend is upgraded.
type staticFiles map[string]staticFile

type staticFile struct {
	content []byte
	etag    []string // the header's value, shared by every answer
}

// newStaticFiles reads every regular file of fsys. Folders are not served:
// nothing lists them.
func newStaticFiles(fsys fs.FS) (staticFiles, error) {
	files := staticFiles{}
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		content, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(content)
		files[name] = staticFile{content: content, etag: []string{`"` + base64.RawURLEncoding.EncodeToString(sum[:16]) + `"`}}
		return nil
	})
	return files, err
}

// handle serves the file named by the route's *filepath: 200 with the file,
// or 304 when the request's If-None-Match names its ETag; anything else (a
// folder, a missing file) is answered by notFound. Range requests are
// answered with the whole file: the files are small, and a 206 or 416
// would be one more kind of answer to get right.
func (sf staticFiles) handle(notFound http.HandlerFunc) httprouter.Handle {
	return func(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
		f, ok := sf[strings.TrimPrefix(ps.ByName("filepath"), "/")]
		if !ok {
			notFound(w, r)
			return
		}
		h := w.Header()
		h["Etag"] = f.etag
		// Keep the copy, but ask whether it is still current before use.
		h.Set("Cache-Control", "no-cache")
		r.Header.Del("Range")
		http.ServeContent(w, r, ps.ByName("filepath"), time.Time{}, bytes.NewReader(f.content))
	}
}

// render executes the named page into a buffer and sends it, so that a
// template failure is a clean 500.
func (s *server) render(w http.ResponseWriter, r *http.Request, status int, page string, data any) {
	var buf bytes.Buffer
	if err := s.templates.ExecuteTemplate(&buf, page, data); err != nil {
		s.internalError(w, r, fmt.Errorf("render %s: %w", page, err))
		return
	}
	s.setPageHeaders(w, r)
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}
