package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// newTestPG returns the URL of a fresh, empty database on the PostgreSQL
// server that TOKEND_TEST_POSTGRES names, and drops it when the test ends.
// Without TOKEND_TEST_POSTGRES the test is skipped, except in CI (CI set),
// where the PostgreSQL tests must run.
func newTestPG(t testing.TB) string {
	t.Helper()
	server := os.Getenv("TOKEND_TEST_POSTGRES")
	if server == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("TOKEND_TEST_POSTGRES is unset, and CI runs the PostgreSQL tests: .ci/run starts a server")
		}
		t.Skip("TOKEND_TEST_POSTGRES is unset: set it to a PostgreSQL server's URL (e.g. postgres://postgres@/postgres?host=/tmp/sock) to run the PostgreSQL tests")
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("read random bytes: %v", err)
	}
	name := "tokend_test_" + hex.EncodeToString(b[:])
	admin := func(sql string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, server)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		_, err = conn.Exec(ctx, sql)
		return err
	}
	if err := admin("CREATE DATABASE " + name); err != nil {
		t.Fatalf("create database %s on TOKEND_TEST_POSTGRES: %v", name, err)
	}
	t.Cleanup(func() {
		if err := admin("DROP DATABASE " + name + " WITH (FORCE)"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	u, err := url.Parse(server)
	if err != nil {
		t.Fatalf("TOKEND_TEST_POSTGRES is not a URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// openTestPGStore opens the database at dbURL and closes it when the test
// ends.
func openTestPGStore(t testing.TB, dbURL string) *pgStore {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := openPGStore(ctx, dbURL)
	if err != nil {
		t.Fatalf("openPGStore: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newTestPGStore opens a store on a fresh database.
func newTestPGStore(t testing.TB) (*pgStore, string) {
	t.Helper()
	dbURL := newTestPG(t)
	return openTestPGStore(t, dbURL), dbURL
}

// pgExec runs sql on the database at dbURL from a connection of its own,
// for tests that look at or change the database behind the store's back.
func pgExec(t testing.TB, dbURL, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// pgQueryInt returns the integer that sql selects on the database at dbURL.
func pgQueryInt(t testing.TB, dbURL, sql string, args ...any) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	var n int64
	if err := conn.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}
