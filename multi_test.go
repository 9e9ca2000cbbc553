package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Three tokend processes on one PostgreSQL database, under concurrent
// load, with faults: one instance killed with SIGKILL, and the database
// restarted.

// fleet is the three instances of TestThreeInstances and what their
// clients saw.
type fleet struct {
	bin    string
	args   []string
	client *http.Client

	mu     sync.Mutex
	nodes  [3]*child
	killed map[*child]bool // killed on purpose: transport errors expected

	// outage is odd from just before the database stops until every
	// instance has recovered: an answer is held to the calm rules only
	// when the request began and ended in the same even epoch.
	outage atomic.Int64

	pmu      sync.Mutex
	problems []string
	faulty   map[int]int // status → answers while the database was down
}

// answer is one HTTP exchange with an instance.
type answer struct {
	code       int
	header     http.Header
	body       []byte
	err        error
	start, end time.Time // monotonic readings around the exchange
	calm       bool      // the database was up all along
	gone       bool      // err, from an instance killed on purpose
}

func (f *fleet) node(i int) *child {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nodes[i]
}

// problem records a failure seen by a load goroutine; the test fails with
// the list at its end.
func (f *fleet) problem(format string, args ...any) {
	f.pmu.Lock()
	defer f.pmu.Unlock()
	if len(f.problems) < 40 {
		f.problems = append(f.problems, fmt.Sprintf(format, args...))
	}
}

// call sends a request to instance i, with the Bearer token secret, and
// checks what must hold of every answer whatever the moment: never a 500,
// a 503 only as a problem with Retry-After and only while the database is
// down, and no transport error but from an instance killed on purpose.
func (f *fleet) call(i int, method, path, secret, body string) answer {
	c := f.node(i)
	req, err := http.NewRequest(method, "http://"+c.addr+path, strings.NewReader(body))
	if err != nil {
		panic(err)
	}
	if secret != "" {
		req.Header.Set("Authorization", "Bearer "+secret)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	e0 := f.outage.Load()
	a := answer{start: time.Now()}
	resp, err := f.client.Do(req)
	if err == nil {
		a.code, a.header = resp.StatusCode, resp.Header
		a.body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	a.end, a.err = time.Now(), err
	a.calm = e0%2 == 0 && f.outage.Load() == e0
	what := fmt.Sprintf("%s %s on instance %d", method, redactPath(path), i)
	if err == nil && !a.calm {
		f.pmu.Lock()
		f.faulty[a.code]++
		f.pmu.Unlock()
	}
	switch {
	case err != nil:
		f.mu.Lock()
		a.gone = f.killed[c]
		f.mu.Unlock()
		if !a.gone {
			f.problem("%s: %v, from a live instance", what, err)
		}
	case a.code == http.StatusInternalServerError:
		f.problem("%s = 500: %s", what, a.body)
	case a.code == http.StatusServiceUnavailable && a.calm:
		f.problem("%s = 503 with the database up: %s", what, a.body)
	case a.code == http.StatusServiceUnavailable && (a.header.Get("Content-Type") != "application/problem+json" || a.header.Get("Retry-After") == ""):
		f.problem("%s = 503 as %q with Retry-After %q; want a problem with Retry-After", what, a.header.Get("Content-Type"), a.header.Get("Retry-After"))
	}
	return a
}

// create makes a token with the writer token on instance i: its id and
// secret, or ok false when the instance could not answer 201 (a 503 in
// an outage, a killed instance).
func (f *fleet) create(i int, writer, name string) (id uint64, secret string, ok bool) {
	a := f.call(i, "POST", "/api/v1/tokens", writer, tokenRequest(name, scopesRead, nil))
	if a.err != nil || (a.code == http.StatusServiceUnavailable && !a.calm) {
		return 0, "", false
	}
	var made tokenJSON
	if a.code != http.StatusCreated || json.Unmarshal(a.body, &made) != nil || made.Token == "" {
		f.problem("POST /api/v1/tokens on instance %d = %d %s; want 201", i, a.code, a.body)
		return 0, "", false
	}
	return made.ID, made.Token, true
}

// checkLive checks that instance i accepts the live token secret: 204,
// or while the database is down 503 or 204.
func (f *fleet) checkLive(i int, secret, what string) {
	a := f.call(i, "GET", "/auth", secret, "")
	if a.err != nil || a.code == http.StatusNoContent || (a.code == http.StatusServiceUnavailable && !a.calm) {
		return
	}
	f.problem("GET /auth on instance %d with %s = %d %s; want 204", i, what, a.code, a.body)
}

// isTrusted reports whether instance i is ready and trusts its auth cache.
func (f *fleet) isTrusted(i int) bool {
	c := f.node(i)
	for _, path := range []string{"/readyz", "/metrics"} {
		resp, err := f.client.Get("http://" + c.addr + path)
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || (path == "/metrics" && !bytes.Contains(b, []byte("\ntokend_auth_cache_trusted 1\n"))) {
			return false
		}
	}
	return true
}

// waitTrusted waits until every instance is ready and trusts its cache,
// and returns how long that took.
func (f *fleet) waitTrusted(t *testing.T, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for i := range f.nodes {
		for !f.isTrusted(i) {
			if time.Since(start) > within {
				t.Fatalf("instance %d is not ready with a trusted auth cache %v on; its log:\n%s", i, within, f.node(i).stderr)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return time.Since(start)
}

// revocation is one measured revocation: how long after the 204 each of
// the two other instances first answered 401.
type revocation struct {
	lags  []time.Duration
	acked time.Time // when the revocation was acknowledged
	calm  bool      // the database was up from the creation to the last 401
}

// revokeAndMeasure creates a token on instance a, has the two others
// cache it, revokes it on a (by DELETE, or every fourth time by rotation)
// and polls the others until each refuses it. Any acceptance by a request
// that began more than a second after the revocation was acknowledged is
// a problem. It returns false when a fault got in the way (a killed
// instance), and the revoked secret.
func (f *fleet) revokeAndMeasure(a int, writer string, n int) (revocation, string, bool) {
	e0 := f.outage.Load()
	id, secret, ok := f.create(a, writer, fmt.Sprint("revoked ", n))
	if !ok {
		return revocation{}, "", false
	}
	others := []int{(a + 1) % 3, (a + 2) % 3}
	for _, o := range others {
		f.checkLive(o, secret, "a token just created on instance "+strconv.Itoa(a))
	}
	rotate := n%4 == 3
	method, path, want := "DELETE", "/api/v1/tokens/"+strconv.FormatUint(id, 10), http.StatusNoContent
	if rotate {
		method, path, want = "POST", path+"/rotate", http.StatusCreated
	}
	var acked time.Time
	retried := false // an earlier try answered 503, and may have committed
	for {
		ans := f.call(a, method, path, writer, "")
		switch {
		case ans.err != nil:
			return revocation{}, "", false // killed: the revocation's fate is unknown
		case ans.code == want:
			acked = ans.end
		case ans.code == http.StatusNotFound && retried:
			acked = ans.end // the earlier try committed as the database went down
		case ans.code == http.StatusServiceUnavailable:
			retried = true
			time.Sleep(50 * time.Millisecond)
			continue
		default:
			f.problem("%s %s on instance %d = %d %s; want %d", method, path, a, ans.code, ans.body, want)
			return revocation{}, "", false
		}
		break
	}
	if ans := f.call(a, "GET", "/auth", secret, ""); ans.err == nil && ans.code != http.StatusUnauthorized && ans.calm {
		f.problem("GET /auth on instance %d right after it revoked the token = %d; want 401", a, ans.code)
	}
	r := revocation{acked: acked}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, o := range others {
		wg.Go(func() {
			for {
				ans := f.call(o, "GET", "/auth", secret, "")
				late := ans.start.Sub(acked) > time.Second
				switch {
				case ans.err != nil:
					return
				case ans.code == http.StatusUnauthorized:
					mu.Lock()
					r.lags = append(r.lags, ans.end.Sub(acked))
					mu.Unlock()
					return
				case ans.code == http.StatusNoContent && late:
					f.problem("instance %d accepted token %d in a request begun %v after instance %d acknowledged its revocation", o, id, ans.start.Sub(acked), a)
					return
				case ans.start.Sub(acked) > 10*time.Second:
					f.problem("instance %d still answers %d for token %d 10s after its revocation on instance %d", o, ans.code, id, a)
					return
				}
			}
		})
	}
	wg.Wait()
	r.calm = e0%2 == 0 && f.outage.Load() == e0 && len(r.lags) == 2
	return r, secret, true
}

// durationQuantile returns the q-quantile of sorted durations.
func durationQuantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(q*float64(len(sorted)-1)+0.5)]
}

// TestThreeInstances runs three tokend serve processes on one PostgreSQL
// cluster of the test's own while clients keep all three busy with
// forward auth on cached tokens, creations and revocations, and shows
// that a token created on one works at once on the others; that a token
// revoked on one is refused by the others, never accepted by a request
// begun more than a second after the revocation was acknowledged (the
// latencies are logged); that after kill -9 of one instance every token it
// acknowledged is in the database and works on the survivors and on the
// restarted instance; and that across a restart of PostgreSQL the
// instances answer 503 problems with Retry-After (or 204 for cached
// tokens), never a 500 nor a revoked token, and recover by themselves.
func TestThreeInstances(t *testing.T) {
	cluster := newTestCluster(t)
	bin := buildTokend(t)
	db := cluster.URL
	run := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Stdin = strings.NewReader(stdin)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("tokend %s: %v\n%s", strings.Join(args[:2], " "), err, stderr.Bytes())
		}
		return strings.TrimSpace(string(out))
	}
	run("password-of-root\n", "user", "add", "-db", db, "-password-stdin", "-admin", "root")
	writer := run("", "token", "create", "-db", db, "-user", "root", "-name", "load", "-scopes", "tokens:read,tokens:write", "-expires", "never")

	f := &fleet{
		bin:    bin,
		args:   []string{"-db", db, "-last-used-interval", "50ms", "-max-tokens-per-user", "0", "-log-level", "info"},
		client: &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
		killed: map[*child]bool{},
		faulty: map[int]int{},
	}
	defer f.client.CloseIdleConnections()
	var all []*child // every process started, for the log check
	for i := range f.nodes {
		f.nodes[i] = startChild(t, bin, f.args...)
		all = append(all, f.nodes[i])
	}
	f.waitTrusted(t, 15*time.Second)

	// Tokens the forward-auth clients keep using, each made on one
	// instance and used on all three.
	var steady []string
	for i := range 6 {
		_, secret, ok := f.create(i%3, writer, fmt.Sprint("steady ", i))
		if !ok {
			t.Fatalf("creating the steady tokens failed: %v", f.problems)
		}
		steady = append(steady, secret)
	}

	stop := make(chan struct{})
	halt := sync.OnceFunc(func() { close(stop) })
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	var wg sync.WaitGroup
	defer func() { halt(); wg.Wait() }() // also when the test fails

	// Forward auth on cached tokens, on every instance.
	var auths atomic.Int64
	for g := range 3 {
		wg.Go(func() {
			for n := g; !stopped(); n++ {
				f.checkLive(n%3, steady[n%len(steady)], "a steady token")
				auths.Add(1)
			}
		})
	}

	// Creations on each instance, each used at once on the two others.
	// Every token acknowledged is kept, per instance that made it.
	var amu sync.Mutex
	acked := [3]map[string]uint64{{}, {}, {}}
	for home := range 3 {
		wg.Go(func() {
			for n := 0; !stopped(); n++ {
				id, secret, ok := f.create(home, writer, fmt.Sprintf("made on %d #%d", home, n))
				if !ok {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				amu.Lock()
				acked[home][secret] = id
				amu.Unlock()
				for _, o := range []int{(home + 1) % 3, (home + 2) % 3} {
					f.checkLive(o, secret, fmt.Sprintf("token %d just created on instance %d", id, home))
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}

	// Revocations, measured, and every revoked token probed again and
	// again on all three: never accepted once a second has passed.
	var rmu sync.Mutex
	var measured []revocation
	type revokedToken struct {
		secret string
		at     time.Time
	}
	var revoked []revokedToken
	for g := range 2 {
		wg.Go(func() {
			for n := g; !stopped(); n += 2 {
				r, secret, ok := f.revokeAndMeasure(n%3, writer, n)
				if !ok {
					time.Sleep(20 * time.Millisecond)
					continue
				}
				rmu.Lock()
				measured = append(measured, r)
				revoked = append(revoked, revokedToken{secret, r.acked})
				rmu.Unlock()
			}
		})
	}
	var probes atomic.Int64
	wg.Go(func() {
		for n := 0; !stopped(); n++ {
			rmu.Lock()
			var tok revokedToken
			if len(revoked) > 0 {
				tok = revoked[rand.N(len(revoked))]
			}
			rmu.Unlock()
			if tok.secret == "" {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			a := f.call(n%3, "GET", "/auth", tok.secret, "")
			if a.err == nil && a.code == http.StatusNoContent && a.start.Sub(tok.at) > time.Second {
				f.problem("instance %d accepted a token revoked %v before", n%3, a.start.Sub(tok.at))
			}
			if a.err == nil && a.code != http.StatusUnauthorized && a.calm && a.start.Sub(tok.at) > time.Second {
				f.problem("GET /auth on instance %d with a token revoked %v before = %d; want 401", n%3, a.start.Sub(tok.at), a.code)
			}
			probes.Add(1)
			time.Sleep(time.Millisecond)
		}
	})

	calmRevocations := func() (n int) {
		rmu.Lock()
		defer rmu.Unlock()
		for _, r := range measured {
			if r.calm {
				n++
			}
		}
		return n
	}
	waitRevocations := func(n int) {
		t.Helper()
		for start := time.Now(); calmRevocations() < n; time.Sleep(10 * time.Millisecond) {
			if time.Since(start) > 20*time.Second {
				f.pmu.Lock()
				defer f.pmu.Unlock()
				t.Fatalf("only %d revocations measured with the database up in 20s; want %d; the clients saw:\n%s", calmRevocations(), n, strings.Join(f.problems, "\n"))
			}
		}
	}
	fatal := func(when string) {
		t.Helper()
		f.pmu.Lock()
		defer f.pmu.Unlock()
		if len(f.problems) > 0 {
			t.Fatalf("%s, the clients saw:\n%s", when, strings.Join(f.problems, "\n"))
		}
	}
	waitRevocations(20)
	fatal("under load")

	// kill -9 of instance 2 in the middle of the load.
	const victim = 2
	time.Sleep(rand.N(200 * time.Millisecond))
	f.mu.Lock()
	dead := f.nodes[victim]
	f.killed[dead] = true
	f.mu.Unlock()
	dead.kill(t)
	amu.Lock()
	fromDead := make(map[string]uint64, len(acked[victim]))
	for s, id := range acked[victim] {
		fromDead[s] = id
	}
	amu.Unlock()
	if len(fromDead) == 0 {
		t.Fatalf("instance %d acknowledged no creation before it was killed", victim)
	}
	ids := make([]int64, 0, len(fromDead))
	for _, id := range fromDead {
		ids = append(ids, int64(id))
	}
	if n := pgQueryInt(t, db, "SELECT count(*) FROM tokens WHERE id = ANY($1)", ids); n != int64(len(ids)) {
		t.Errorf("of the %d tokens the killed instance acknowledged, the database holds %d", len(ids), n)
	}
	checkAll := func(i int, when string) {
		t.Helper()
		for s, id := range fromDead {
			a := f.call(i, "GET", "/api/v1/token", s, "")
			var got tokenJSON
			if a.err != nil || a.code != http.StatusOK || json.Unmarshal(a.body, &got) != nil || got.ID != id {
				t.Errorf("%s, GET /api/v1/token on instance %d with token %d, acknowledged by the killed instance = %d %s; want 200", when, i, id, a.code, a.body)
			}
		}
	}
	for _, i := range []int{0, 1} {
		checkAll(i, "after the kill")
	}
	restarted := startChild(t, bin, f.args...)
	all = append(all, restarted)
	f.mu.Lock()
	f.nodes[victim] = restarted
	f.mu.Unlock()
	f.waitTrusted(t, 15*time.Second)
	checkAll(victim, "after the restart")
	t.Logf("kill -9: %d tokens acknowledged by the killed instance, all in the database and working on the survivors and the restarted instance", len(fromDead))
	fatal("around the kill")

	// Restart PostgreSQL under the load.
	before := calmRevocations()
	time.Sleep(rand.N(200 * time.Millisecond))
	f.outage.Add(1)
	down := time.Now()
	cluster.stop()
	time.Sleep(time.Second)
	cluster.start()
	outage := time.Since(down)
	recovery := f.waitTrusted(t, 10*time.Second)
	f.outage.Add(1)
	t.Logf("PostgreSQL restart: down for %v; all three instances ready with a trusted cache %v after it started again",
		outage.Round(time.Millisecond), recovery.Round(time.Millisecond))
	fatal("around the database restart")
	f.pmu.Lock()
	t.Logf("answers to requests that overlapped the restart, by status: %v", f.faulty)
	if f.faulty[http.StatusServiceUnavailable] == 0 {
		t.Errorf("no request was answered 503 while the database was down: the restart was not under load")
	}
	f.pmu.Unlock()

	// Revocations after the recovery reach all three too.
	waitRevocations(max(50, before+10))
	halt()
	wg.Wait()
	fatal("after the database restart")

	var lags []time.Duration
	rmu.Lock()
	for _, r := range measured {
		if r.calm {
			lags = append(lags, r.lags...)
		}
	}
	total := len(measured)
	rmu.Unlock()
	slices.Sort(lags)
	dist := fmt.Sprintf("%d refusals after %d calm revocations (of %d): p50 %v, p90 %v, p99 %v, max %v",
		len(lags), len(lags)/2, total, durationQuantile(lags, 0.5), durationQuantile(lags, 0.9), durationQuantile(lags, 0.99), lags[len(lags)-1])
	t.Logf("revocation on one instance to the first 401 on each other: %s", dist)
	t.Logf("load: %d forward-auth checks of steady tokens, %d probes of revoked tokens", auths.Load(), probes.Load())
	if lags[len(lags)-1] > time.Second {
		t.Errorf("a revocation took more than 1s to reach another instance: %s", dist)
	}
	for i, c := range all {
		if log := c.stderr.String(); strings.Contains(log, "internal error") || strings.Contains(log, "panic") {
			t.Errorf("process %d logged an internal error or a panic:\n%s", i, log)
		}
	}
}
