package main

import (
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

// TestStaticFiles checks /static/: each embedded file with its type, an
// ETag and a revalidation policy; 304 for a current copy; no listing of
// the folder and no way out of it, each refusal a problem like any other
// unknown path.
func TestStaticFiles(t *testing.T) {
	ts := newTestServer(t)
	names, err := fs.Glob(staticFS, "*")
	if err != nil || len(names) == 0 {
		t.Fatalf("fs.Glob(staticFS) = %v, %v; want the static files", names, err)
	}
	etags := map[string]bool{}
	for _, name := range names {
		want, err := fs.ReadFile(staticFS, name)
		if err != nil {
			t.Fatal(err)
		}
		path := "/static/" + name
		w := ts.page(pageReq{method: "GET", path: path})
		etag := w.Header().Get("ETag")
		if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), want) {
			t.Errorf("GET %s = %d, %d bytes; want 200 with the file's %d bytes", path, w.Code, w.Body.Len(), len(want))
			continue
		}
		if len(etag) < 10 || !strings.HasPrefix(etag, `"`) || !strings.HasSuffix(etag, `"`) || etags[etag] {
			t.Errorf("GET %s: ETag %q; want a quoted tag of its own", path, etag)
		}
		etags[etag] = true
		if cc := w.Header().Get("Cache-Control"); cc != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q; want no-cache (keep, but revalidate)", path, cc)
		}
		ct := w.Header().Get("Content-Type")
		if ct == "" || strings.HasPrefix(ct, "text/plain") || strings.HasPrefix(ct, "application/octet-stream") {
			t.Errorf("GET %s: Content-Type %q; want the file's own type", path, ct)
		}
		w = ts.page(pageReq{method: "GET", path: path, header: map[string]string{"If-None-Match": etag}})
		if w.Code != http.StatusNotModified || w.Body.Len() != 0 || w.Header().Get("ETag") != etag {
			t.Errorf("GET %s with If-None-Match %s = %d, %d bytes, ETag %q; want 304 with no body", path, etag, w.Code, w.Body.Len(), w.Header().Get("ETag"))
		}
		w = ts.page(pageReq{method: "GET", path: path, header: map[string]string{"If-None-Match": `"stale"`}})
		if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), want) {
			t.Errorf("GET %s with a stale If-None-Match = %d; want 200 with the file", path, w.Code)
		}
		w = ts.page(pageReq{method: "GET", path: path, header: map[string]string{"Range": "bytes=0-3"}})
		if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), want) {
			t.Errorf("GET %s with Range = %d, %d bytes; want 200 with the whole file", path, w.Code, w.Body.Len())
		}
	}
	for _, path := range []string{"/static/", "/static/missing.css", "/static/../web.go", "/static/%2e%2e/web.go", "/static/templates/layout.html", "/static/app.js/"} {
		w := ts.page(pageReq{method: "GET", path: path})
		if w.Code == http.StatusMovedPermanently || w.Code == http.StatusPermanentRedirect {
			// httprouter cleans the path first; follow it once.
			w = ts.page(pageReq{method: "GET", path: w.Header().Get("Location")})
		}
		if w.Code != http.StatusNotFound || w.Header().Get("Content-Type") != "application/problem+json" {
			t.Errorf("GET %s = %d %q; want 404 problem+json", path, w.Code, w.Header().Get("Content-Type"))
		}
		for _, name := range names {
			if strings.Count(w.Body.String(), name) > strings.Count(path, name) {
				t.Errorf("GET %s lists %s: %s", path, name, w.Body)
			}
		}
	}
}

// TestStaticFilesCompressedAndVersioned checks that the pages ask for the
// static files at addresses with their version, kept for a year, that a
// stale or missing version is revalidated, and that text files go gzipped
// to a browser that accepts it, with Vary and an ETag of their own.
func TestStaticFilesCompressedAndVersioned(t *testing.T) {
	ts := newTestServer(t)
	page := ts.page(pageReq{method: "GET", path: "/login"}).Body.String()
	versioned := regexp.MustCompile(`(?:href|src)="(/static/([a-z.]+)\?v=[A-Za-z0-9_-]+)"`).FindAllStringSubmatch(page, -1)
	seen := map[string]bool{}
	for _, m := range versioned {
		seen[m[2]] = true
	}
	for _, name := range []string{"style.css", "app.js", "icon.svg"} {
		if !seen[name] {
			t.Errorf("the sign-in page does not ask for %s at a versioned address:\n%s", name, page)
		}
	}
	for _, m := range versioned {
		path, name := m[1], m[2]
		want, err := fs.ReadFile(staticFS, name)
		if err != nil {
			t.Fatal(err)
		}
		w := ts.page(pageReq{method: "GET", path: path})
		if cc := w.Header().Get("Cache-Control"); w.Code != 200 || cc != "public, max-age=31536000, immutable" || !bytes.Equal(w.Body.Bytes(), want) {
			t.Errorf("GET %s = %d, Cache-Control %q; want 200 with the file, kept for a year", path, w.Code, cc)
		}
		stale := "/static/" + name + "?v=stale"
		if cc := ts.page(pageReq{method: "GET", path: stale}).Header().Get("Cache-Control"); cc != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q; want no-cache", stale, cc)
		}

		plain := ts.page(pageReq{method: "GET", path: path, header: map[string]string{"Accept-Encoding": "gzip;q=0, br"}})
		gz := ts.page(pageReq{method: "GET", path: path, header: map[string]string{"Accept-Encoding": "br, gzip"}})
		if plain.Header().Get("Content-Encoding") != "" || !bytes.Equal(plain.Body.Bytes(), want) {
			t.Errorf("GET %s refusing gzip = %q encoded; want the file as it is", path, plain.Header().Get("Content-Encoding"))
		}
		if name == "icon.svg" && len(want) < 400 {
			continue // too small to gain from gzip
		}
		if gz.Header().Get("Content-Encoding") != "gzip" || gz.Body.Len() >= len(want) {
			t.Errorf("GET %s accepting gzip = %q encoded, %d bytes of %d; want it gzipped", path, gz.Header().Get("Content-Encoding"), gz.Body.Len(), len(want))
			continue
		}
		zr, err := gzip.NewReader(gz.Body)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := io.ReadAll(zr); err != nil || !bytes.Equal(got, want) {
			t.Errorf("GET %s gzipped does not unzip to the file (err %v)", path, err)
		}
		for _, w := range []*httptest.ResponseRecorder{plain, gz} {
			if v := w.Header().Get("Vary"); v != "Accept-Encoding" {
				t.Errorf("GET %s: Vary %q; want Accept-Encoding", path, v)
			}
		}
		if e1, e2 := plain.Header().Get("ETag"), gz.Header().Get("ETag"); e1 == e2 || e2 == "" {
			t.Errorf("GET %s: ETag %q plain and %q gzipped; want one of each", path, e1, e2)
		}
		w = ts.page(pageReq{method: "GET", path: path, header: map[string]string{"Accept-Encoding": "gzip", "If-None-Match": gz.Header().Get("ETag")}})
		if w.Code != http.StatusNotModified {
			t.Errorf("GET %s gzipped with its ETag = %d; want 304", path, w.Code)
		}
	}
}
