// Command constants is the second ceiling for tokend's load benchmarks:
// a net/http server with tokend's default timeouts and header limit that
// answers every request as tokend's GET /auth answers a valid token, 204
// with the same headers, taken from constants and verifying nothing. What
// tokend costs beyond it is its own work; what it costs beyond the bare
// server (bench/baseline) is net/http's cost of the forward-auth contract.
//
// The headers are read once at start-up from the file -headers names, one
// "Name: value" a line, as bench/run.sh captures them from tokend's own
// answer (without Date, which net/http adds), so that both servers send
// the same bytes.
package main

import (
	"bufio"
	"flag"
	"log"
	"net/http"
	"net/textproto"
	"os"
	"strings"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18083", "address to listen on")
	headersFile := flag.String("headers", "", "file of the answer's headers, one \"Name: value\" a line")
	flag.Parse()
	header, err := readHeaders(*headersFile)
	if err != nil {
		log.Fatal(err)
	}
	// tokend's defaults (defaultConfig in main.go).
	srv := &http.Server{
		Addr:              *addr,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			for k, v := range header {
				h[k] = v
			}
			w.WriteHeader(http.StatusNoContent)
		}),
	}
	log.Fatal(srv.ListenAndServe())
}

// readHeaders reads the file at path, one "Name: value" a line.
func readHeaders(path string) (http.Header, error) {
	h := http.Header{}
	if path == "" {
		return h, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(strings.TrimRight(sc.Text(), "\r"), ":")
		if !ok {
			continue
		}
		h.Add(textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(name)), strings.TrimSpace(value))
	}
	return h, sc.Err()
}
