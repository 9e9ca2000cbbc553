package main

import (
	"bytes"
	"io/fs"
	"net/http"
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
