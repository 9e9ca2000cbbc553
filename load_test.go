package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// TestBulkLoad fills a new database for load tests when TOKEND_LOAD_DB
// names one: TOKEND_LOAD_USERS users (default 100) holding
// TOKEND_LOAD_TOKENS tokens (default 1,000,000) between them, written in
// large transactions. The plaintext tokens go to TOKEND_LOAD_SECRETS, one
// a line, for the load generator: a file no real deployment has. Without
// TOKEND_LOAD_DB it skips. bench/run.sh calls it.
func TestBulkLoad(t *testing.T) {
	path := os.Getenv("TOKEND_LOAD_DB")
	if path == "" {
		t.Skip("set TOKEND_LOAD_DB to fill a database for load tests")
	}
	users := envInt(t, "TOKEND_LOAD_USERS", 100)
	tokens := envInt(t, "TOKEND_LOAD_TOKENS", 1_000_000)
	secretsPath := os.Getenv("TOKEND_LOAD_SECRETS")
	if secretsPath == "" {
		t.Fatal("set TOKEND_LOAD_SECRETS to the file that will hold the plaintext tokens")
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatalf("%s exists; the loader only fills a new database", path)
	}
	start := time.Now()
	st, err := openStore(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	hash, err := newPasswordHasher(defaultArgonParams, 1).Hash(t.Context(), "load-test-password")
	if err != nil {
		t.Fatal(err)
	}
	var owners []uint64
	for i := range users {
		u := newUser(fmt.Sprintf("load%d", i), hash, false, time.Now())
		if err := st.CreateUser(testActor, &u); err != nil {
			t.Fatal(err)
		}
		owners = append(owners, u.ID)
	}
	out, err := os.OpenFile(secretsPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	w := bufio.NewWriter(out)
	f := mustFormat(t, defaultTokenPrefix)
	const perTx = 20_000
	now := time.Now()
	for done := 0; done < tokens; {
		err := st.update(func(tx *bolt.Tx) error {
			for i := done; i < min(done+perTx, tokens); i++ {
				secret, err := f.generate()
				if err != nil {
					return err
				}
				rec := tokenRecord{Owner: owners[i%len(owners)], Name: "load " + strconv.Itoa(i),
					Scopes: []string{scopeTokensRead, scopeTokensWrite}, CreatedAt: now, Hint: tokenHint(secret)}
				if err := putNewToken(tx, &rec, hashToken(secret)); err != nil {
					return err
				}
				w.WriteString(secret)
				w.WriteByte('\n')
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		done = min(done+perTx, tokens)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	t.Logf("loaded %d users and %d tokens in %v; database %.1f MiB (%.0f bytes a token)",
		users, tokens, time.Since(start).Round(time.Second), float64(fi.Size())/(1<<20), float64(fi.Size())/float64(tokens))
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q is not a positive number", name, v)
	}
	return n
}
