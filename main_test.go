package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// workingDB is the database a developer serves from this checkout with
// `go run .`: no test may create, open or change it.
var workingDB = defaultConfig().DB

// TestMain runs the tests without the TOKEND_* configuration of the shell
// that started them (a developer may have exported TOKEND_DB or TOKEND_ADDR
// for their own server), and fails the run if a test created or changed
// ./tokend.db, as a test that forgot -db or t.TempDir() would. Variables
// that only tests read, such as TOKEND_CRASH_ROUNDS, are kept.
func TestMain(m *testing.M) {
	clearConfigEnv()
	before, err := os.Stat(workingDB)
	code := m.Run()
	if msg := workingDBChange(before, err); msg != "" {
		fmt.Fprintln(os.Stderr, "FAIL:", msg)
		code = 1
		if err != nil {
			os.Remove(workingDB) // it did not exist before
		}
	}
	os.Exit(code)
}

// clearConfigEnv unsets the environment variable of every flag of serve.
func clearConfigEnv() {
	cfg := defaultConfig()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg.register(fs)
	fs.VisitAll(func(f *flag.Flag) { os.Unsetenv(envName(f.Name)) })
}

// workingDBChange says how ./tokend.db differs from before (its state
// before the tests, or the error of stat then), or returns "" when the
// tests left it alone. A change is only blamed on the tests when no other
// process holds the file: a server running from this checkout writes to it.
func workingDBChange(before fs.FileInfo, beforeErr error) string {
	after, err := os.Stat(workingDB)
	switch {
	case errors.Is(beforeErr, fs.ErrNotExist) && err == nil:
		return fmt.Sprintf("a test created %s in the package folder; tests must keep their files in t.TempDir() (pass -db or set cfg.DB)", workingDB)
	case beforeErr != nil || err != nil:
		return ""
	case after.Size() == before.Size() && after.ModTime().Equal(before.ModTime()):
		return ""
	}
	db, err := bolt.Open(workingDB, 0o600, &bolt.Options{ReadOnly: true, Timeout: 100 * time.Millisecond})
	if errors.Is(err, bolt.ErrTimeout) {
		return "" // a server holds it
	}
	if err == nil {
		db.Close()
	}
	return fmt.Sprintf("a test changed %s in the package folder; tests must keep their files in t.TempDir()", workingDB)
}

// TestWorkingDBGuard checks the guard of TestMain: it notices a test that
// creates ./tokend.db, and lets a file that a running server changes be.
func TestWorkingDBGuard(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)

	_, statErr := os.Stat(workingDB)
	st, err := openStore(workingDB, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if msg := workingDBChange(nil, statErr); msg == "" {
		t.Errorf("guard after a test created %s = no complaint; want one", workingDB)
	}
	st.Close()

	// Held by another process (here a read-write handle, as a server's),
	// changed meanwhile: not the tests' doing.
	st, err = openStore(workingDB, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	before, _ := os.Stat(workingDB)
	u := newUser("alice", "", false, time.Now())
	if err := st.CreateUser(testActor, &u); err != nil {
		t.Fatal(err)
	}
	if msg := workingDBChange(before, nil); msg != "" {
		t.Errorf("guard with the file held by a server = %q; want no complaint", msg)
	}
	st.Close()
	// Unheld and changed: the tests did it.
	older := before.ModTime().Add(-time.Hour)
	os.Chtimes(workingDB, older, older)
	if msg := workingDBChange(before, nil); msg == "" {
		t.Errorf("guard after a change to an unheld %s = no complaint; want one", workingDB)
	}
}
