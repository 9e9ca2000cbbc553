package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strconv"
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

// parseTemplates parses every page once, at start-up. A page names a
// static file with {{static "style.css"}}, which gives its address with
// the file's version in it, so that browsers may keep it for good.
func parseTemplates() (*template.Template, error) {
	files, err := newStaticFiles(staticFS)
	if err != nil {
		return nil, err
	}
	return template.New("").Funcs(template.FuncMap{"static": files.url, "sudoIn": sudoIn}).ParseFS(webFS, "web/templates/*.html")
}

// staticFiles is the set of files served under /static/, read once at
// start-up: each with its content and an ETag made from it, so that a
// browser revalidates its copy with one request answered 304 and sees a
// changed file as soon as tokend is upgraded. The pages ask for each file
// at an address with its version (url), which browsers keep for a year
// without asking again: an upgrade that changes a file changes its address.
// Text files are also kept gzipped, for the browsers that accept it.
type staticFiles map[string]staticFile

type staticFile struct {
	content []byte
	etag    []string // the header's value, shared by every answer
	version string   // the v parameter of url's address
	gzipped []byte   // the content gzipped; nil when that saves nothing
	gzEtag  []string // the gzipped content's ETag
}

// staticMaxAge is the Cache-Control of a file asked for with its version
// in the address: kept a year, never asked for again. An address with
// another version (from an instance upgraded before this one, say) gets
// the file this instance has, to be revalidated.
const staticMaxAge = "public, max-age=31536000, immutable"

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
		tag := base64.RawURLEncoding.EncodeToString(sum[:16])
		f := staticFile{content: content, etag: []string{`"` + tag + `"`}, version: tag[:12]}
		var gz bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
		zw.Write(content)
		zw.Close()
		if gz.Len() < len(content)*9/10 {
			f.gzipped, f.gzEtag = gz.Bytes(), []string{`"` + tag + `-gzip"`}
		}
		files[name] = f
		return nil
	})
	return files, err
}

// url returns the address of the static file name, with its version; a
// name that is not there is a mistake in a template, which fails.
func (sf staticFiles) url(name string) (string, error) {
	f, ok := sf[name]
	if !ok {
		return "", fmt.Errorf("no static file %q", name)
	}
	return "/static/" + name + "?v=" + f.version, nil
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
		content, etag := f.content, f.etag
		if f.gzipped != nil {
			h.Set("Vary", "Accept-Encoding")
			if acceptsGzip(r) {
				content, etag = f.gzipped, f.gzEtag
				h.Set("Content-Encoding", "gzip")
			}
		}
		h["Etag"] = etag
		if r.URL.Query().Get("v") == f.version {
			h.Set("Cache-Control", staticMaxAge)
		} else {
			// Keep the copy, but ask whether it is still current before use.
			h.Set("Cache-Control", "no-cache")
		}
		r.Header.Del("Range")
		http.ServeContent(w, r, ps.ByName("filepath"), time.Time{}, bytes.NewReader(content))
	}
}

// acceptsGzip reports whether r's Accept-Encoding takes gzip.
func acceptsGzip(r *http.Request) bool {
	for _, v := range strings.Split(strings.Join(r.Header.Values("Accept-Encoding"), ","), ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(v), ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		q, ok := strings.CutPrefix(strings.ReplaceAll(params, " ", ""), "q=")
		if !ok {
			return true
		}
		n, err := strconv.ParseFloat(q, 64)
		return err == nil && n > 0
	}
	return false
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

// Bad reports whether the field named field of the form named form is
// the one the page's error is about: the page marks it invalid, puts the
// message beside it and focuses it.
func (p *page) Bad(form, field string) bool {
	return p.Error != "" && form != "" && p.ErrorAt == form && p.ErrorField == field
}

// fieldErrors maps how a form's error message begins to the field it is
// about. The messages about a password the form asked for are left to
// errorField, since which field that is depends on the page.
var fieldErrors = []struct{ prefix, field string }{
	{"The two new passwords differ", "confirm"},
	{"Password ", "password"},
	{"User name", "name"},
	{"A user ", "name"},
	{"Name ", "name"},
	{"Tick the box", "confirm"},
	{"Type the user's name", "confirm"},
	{"Choose the date", "expiry_date"},
	{"The expiry date", "expiry_date"},
	{"You entered a date", "expiry_date"},
	{"Choose when the token expires", "expiry"},
	{"Unknown scope", "scope"},
	{"Scope ", "scope"},
	{"A token can hold", "scope"},
	{"Only admins may hold", "scope"},
	{"No user called", "user"},
	{"Kind: ", "kind"},
	{"Since: ", "since"},
	{"Until", "until"},
}

// passwordErrors begin the messages about a password a form asked for.
var passwordErrors = []string{
	"Wrong user name or password", "Your current password", "That is not your password",
	"You signed in more than an hour ago", "Too many failed password attempts", busyText,
}

// errorField names the field of p's form that p.Error is about, by its
// name attribute, or "" when the message is about the whole form.
func errorField(p *page) string {
	if p.Error == "" {
		return ""
	}
	for _, prefix := range passwordErrors {
		if !strings.HasPrefix(p.Error, prefix) {
			continue
		}
		switch {
		case p.Nav == "account":
			return "current"
		case p.NeedSudo:
			return "sudo_password"
		case p.User == nil:
			return "password"
		}
		return ""
	}
	for _, e := range fieldErrors {
		if strings.HasPrefix(p.Error, e.prefix) {
			return e.field
		}
	}
	return ""
}

// sudoField is the password field of sudo mode in the form named Form of
// a page, for the template sudofield.
type sudoField struct {
	Page *page
	Form string
}

func sudoIn(p *page, form string) sudoField { return sudoField{p, form} }
