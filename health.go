package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"
)

// handleReadyz answers 200 when the database answers a read transaction,
// and a 503 problem when it does not, so that a load balancer or container
// runtime stops sending requests to a server that cannot serve them.
func (s *server) handleReadyz(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	if err := s.store.Ping(); err != nil {
		s.log.Error("not ready: the database does not answer", "err", err)
		writeProblem(w, http.StatusServiceUnavailable, "the database does not answer; see the server's log")
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write([]byte("ready\n"))
}

// healthcheckTimeout bounds a healthcheck: container runtimes kill checks
// that hang, and a hung server is not healthy.
const healthcheckTimeout = 5 * time.Second

// runHealthcheck is `tokend healthcheck`: it asks the server at -addr
// whether it is ready, for container health checks. It returns nil when
// /readyz answers 200, and an error saying what happened otherwise.
func runHealthcheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", defaultConfig().Addr, "`address` the server listens on, as given to serve (TOKEND_ADDR); 0.0.0.0 and [::] mean this machine")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: tokend healthcheck [-addr ADDR]\n\nExit 0 when the server at ADDR answers GET /readyz with 200, within", healthcheckTimeout, "\n\nFlags:")
		fs.PrintDefaults()
	}
	if _, err := parseArgs(fs, args, 0); err != nil {
		return err
	}
	if err := checkHealth(ctx, *addr, healthcheckTimeout); err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	fmt.Fprintln(stdout, "ready")
	return nil
}

// checkHealth asks the server listening on addr for /readyz and returns
// nil on a 200 within timeout. An unspecified host (0.0.0.0, [::] or none),
// as a server in a container listens on, is asked on loopback.
func checkHealth(ctx context.Context, addr string, timeout time.Duration) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("-addr %q is not host:port: %v", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	url := "http://" + net.JoinHostPort(host, port) + "/readyz"
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// No proxy from the environment: the server is on this machine.
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("GET %s: no answer within %v", url, timeout)
	}
	var ue *neturl.Error
	if errors.As(err, &ue) {
		err = ue.Err // without the method and URL, said below
	}
	if err != nil {
		return fmt.Errorf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("GET %s = %s: %s", url, resp.Status, strings.TrimSpace(string(body)))
	}
	return nil
}
