package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/julienschmidt/httprouter"
	bolt "go.etcd.io/bbolt"
)

// WriteBackup writes a consistent copy of the whole database to w from one
// read transaction: writers carry on meanwhile, and the copy holds every
// transaction committed before it began and none after. begin, when not
// nil, is called with the copy's size before its first byte. It returns
// how many bytes it wrote.
func (s *boltStore) WriteBackup(w io.Writer, begin func(size int64)) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		if begin != nil {
			begin(tx.Size())
		}
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// backupFileName names a backup taken at t: tokend-20300102T030405Z.db.
func backupFileName(t time.Time) string {
	return "tokend-" + t.UTC().Format("20060102T150405Z") + ".db"
}

// errNoFileBackup answers a backup request to a store that keeps no file
// of its own to copy.
var errNoFileBackup = clientError(http.StatusNotImplemented,
	"this tokend keeps its data in a database server, not a file: back that database up with its own tools (pg_dump for PostgreSQL)")

// handleBackup streams a consistent copy of the database. It needs an
// admin's token with the admin scope: the copy holds every user's
// password hash.
func (s *server) handleBackup(w http.ResponseWriter, r *http.Request, _ httprouter.Params, c *caller) {
	if !c.user.Admin {
		s.writeAuthError(w, insufficientScope(scopeAdmin))
		return
	}
	file, ok := s.store.(fileStore)
	if !ok {
		s.writeError(w, r, errNoFileBackup)
		return
	}
	out := &progressWriter{w: w, rc: http.NewResponseController(w), timeout: s.cfg.WriteTimeout}
	started := false
	n, err := file.WriteBackup(out, func(size int64) {
		h := w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Disposition", `attachment; filename="`+backupFileName(s.now())+`"`)
		h.Set("Content-Length", strconv.FormatInt(size, 10))
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusOK)
		started = true
	})
	switch {
	case err != nil && !started:
		s.writeError(w, r, err)
	case err != nil:
		// The status is sent; the body falls short of its Content-Length,
		// which every client reports as an error.
		s.log.Error("backup interrupted", "user_id", c.user.ID, "bytes", n, "err", err)
	default:
		s.log.Info("backup sent", "user_id", c.user.ID, "token_id", c.token.ID, "bytes", n)
		e := newAuditEvent(s.actorOf(r, c.user, viaAPI), kindBackupTaken).withDetail("%d bytes", n)
		e.TokenID = c.token.ID
		s.recordEvent(e)
	}
}

// progressWriter pushes the connection's write deadline timeout ahead
// before every write, so that a large backup may take longer than
// -write-timeout as long as the client keeps reading, while a client that
// stops reading is still cut off.
type progressWriter struct {
	w       io.Writer
	rc      *http.ResponseController
	timeout time.Duration
}

func (p *progressWriter) Write(b []byte) (int, error) {
	if p.timeout > 0 {
		// Unsupported by test recorders; harmless there.
		p.rc.SetWriteDeadline(time.Now().Add(p.timeout))
	}
	return p.w.Write(b)
}

// ---- offline commands ----

// openSource opens the database at path read-only for an offline command
// that copies it: it neither creates a database where the user probably
// mistyped the name, nor writes to the one it copies.
func openSource(path string) (*boltStore, error) {
	return openBoltCLIStore(path, readOnlyDB)
}

// runBackup is `tokend backup [-db FILE] [-force] DEST`.
func runBackup(args []string, stdout, stderr io.Writer) error {
	cmd := command{"backup", "[-force] FILE", "Write a consistent copy of the database to FILE (mode 0600), with the server stopped.\nWhile the server runs, use GET /api/v1/admin/backup with an admin token instead."}
	var db string
	fset := cmd.newFlagSet(stderr, &db)
	force := fset.Bool("force", false, "replace FILE if it exists")
	pos, err := parseArgs(fset, args, 1)
	if err != nil {
		return err
	}
	if isPostgresURL(db) || isPostgresURL(pos[0]) {
		return fmt.Errorf("backup: %w", errPostgresNotFile)
	}
	st, err := openSource(db)
	if errors.Is(err, errDatabaseInUse) {
		return fmt.Errorf("backup: %w; while it runs, take the backup with GET /api/v1/admin/backup", err)
	} else if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer st.Close()
	var n int64
	err = placeFile(pos[0], *force, func(tmp string) (err error) {
		n, err = writeBackupFile(st, tmp)
		return err
	})
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	fmt.Fprintf(stdout, "backed up %s to %s (%d bytes)\n", db, pos[0], n)
	return nil
}

// writeBackupFile writes a consistent copy of st over the file at path,
// which exists, and syncs it. It returns how many bytes it wrote.
func writeBackupFile(st *boltStore, path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := st.WriteBackup(f, nil)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

// runRestore is `tokend restore [-db FILE] [-force] BACKUP`: it puts a
// backup in place of the database, with the server stopped, and moves the
// id sequences of the copy past every id that may have been handed out
// since the backup was taken (see idFloorRates): past the backup's own, the
// replaced database's and the id floor of the clock, which alone stands in
// for a database that is lost or unreadable.
func runRestore(args []string, stdout, stderr io.Writer) error {
	cmd := command{"restore", "[-force] BACKUP", "Put the backup BACKUP in place of the database (mode 0600), with the server stopped.\n" +
		"The backup must open as a tokend database and pass the consistency check. User, token and grant\n" +
		"ids then continue past every id handed out since the backup, so none is handed out twice.\n" +
		"A database that exists is replaced only with -force."}
	var db string
	fset := cmd.newFlagSet(stderr, &db)
	force := fset.Bool("force", false, "replace the database at -db if it exists")
	pos, err := parseArgs(fset, args, 1)
	if err != nil {
		return err
	}
	backup := pos[0]
	if isPostgresURL(db) || isPostgresURL(backup) {
		return fmt.Errorf("restore: %w", errPostgresNotFile)
	}
	if a, err := os.Stat(backup); err == nil {
		if b, err := os.Stat(db); err == nil && os.SameFile(a, b) {
			return fmt.Errorf("restore: %s is the database itself; name a backup", backup)
		}
	}

	// The database being replaced: its sequences count, and it stays open
	// until the copy is in place, so that no server starts on it meanwhile.
	var current idSequences
	cur, err := openBoltCLIStore(db, readOnlyDB)
	switch {
	case errors.Is(err, errDatabaseInUse):
		return fmt.Errorf("restore: %w; stop it before restoring", err)
	case errors.Is(err, errNoDatabase):
		// Lost: the clock's floor alone stands for the ids it handed out.
	case err != nil:
		if !*force {
			return fmt.Errorf("restore: %s exists; pass -force to replace it", db)
		}
		fmt.Fprintf(stderr, "tokend restore: the database being replaced does not open, so only the clock keeps its ids from being handed out again: %v\n", err)
	default:
		defer cur.Close()
		if current, err = cur.IDSequences(); err != nil {
			return fmt.Errorf("restore: read %s: %w", db, err)
		}
	}

	src, err := openSource(backup)
	var older olderSchemaError
	if errors.As(err, &older) {
		// A backup taken by an older tokend: restore an upgraded copy of
		// it, leaving the backup itself as it was.
		var done func()
		src, done, err = openUpgradedCopy(backup)
		if done != nil {
			defer done()
		}
	}
	if errors.Is(err, errNoDatabase) {
		return fmt.Errorf("restore: no backup at %s", backup)
	} else if err != nil {
		return fmt.Errorf("restore: backup: %w", err)
	}
	defer src.Close()
	if err := src.Check(); err != nil {
		return fmt.Errorf("restore: the backup %s does not pass the consistency check, so nothing was restored: %w", backup, err)
	}
	from, err := src.IDSequences()
	if err != nil {
		return fmt.Errorf("restore: read %s: %w", backup, err)
	}

	var ids idSequences
	err = placeFile(db, *force, func(tmp string) error {
		if _, err := writeBackupFile(src, tmp); err != nil {
			return err
		}
		st, err := openStore(tmp, lockTimeout)
		if err != nil {
			return err
		}
		ids, err = st.RaiseIDSequences(from.atLeast(current).atLeast(idFloorAt(time.Now())))
		if cerr := st.Close(); err == nil {
			err = cerr
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	fmt.Fprintf(stdout, "restored %s from %s; new user ids start after %d, new token ids after %d\n", db, backup, ids.Users, ids.Tokens)
	return nil
}

// runCompact is `tokend compact [-force] SRC DST`: it copies SRC into a new
// file DST, leaving out the free pages that deleted tokens left behind.
func runCompact(args []string, stdout, stderr io.Writer) error {
	fset := flag.NewFlagSet("compact", flag.ContinueOnError)
	fset.SetOutput(stderr)
	fset.Usage = func() {
		fmt.Fprintf(stderr, "Usage: tokend compact [-force] SRC DST\n\nWrite a compacted copy of the database SRC to DST (mode 0600), with the server stopped.\nSRC is left as it is; stop the server, compact, then move DST over SRC.\n\nFlags:\n")
		fset.PrintDefaults()
	}
	force := fset.Bool("force", false, "replace DST if it exists")
	pos, err := parseArgs(fset, args, 2)
	if err != nil {
		return err
	}
	src, dst := pos[0], pos[1]
	if isPostgresURL(src) || isPostgresURL(dst) {
		return fmt.Errorf("compact: %w", errPostgresNotFile)
	}
	if filepath.Clean(src) == filepath.Clean(dst) {
		return errors.New("compact: SRC and DST are the same file; write the copy elsewhere, then move it")
	}
	st, err := openSource(src)
	if errors.Is(err, errNoDatabase) {
		return fmt.Errorf("compact: no database at %s", src)
	} else if err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	defer st.Close()
	err = placeFile(dst, *force, func(tmp string) error {
		out, err := bolt.Open(tmp, 0o600, &bolt.Options{Timeout: lockTimeout})
		if err != nil {
			return err
		}
		// Commit every 4 MiB so that a large database needs no more memory.
		if err := bolt.Compact(out, st.db, 4<<20); err != nil {
			out.Close()
			return err
		}
		return out.Close() // each commit above was synced
	})
	if err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	before, _ := os.Stat(src)
	after, _ := os.Stat(dst)
	if before != nil && after != nil {
		fmt.Fprintf(stdout, "compacted %s (%d bytes) to %s (%d bytes)\n", src, before.Size(), dst, after.Size())
	}
	return nil
}

// placeFile makes dst hold what fill writes, all or nothing. fill writes a
// temporary file of mode 0600 beside dst, given by name, and must sync it.
// The copy is then checked as a tokend database and moved into place, over
// an existing dst only with force, and the folder is synced so that the
// new name survives a crash. On any failure dst is left as it was.
func placeFile(dst string, force bool, fill func(tmp string) error) (err error) {
	if !force {
		if _, err := os.Lstat(dst); err == nil {
			return fmt.Errorf("%s exists; pass -force to replace it", dst)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	dir := filepath.Dir(dst)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("directory %s does not exist: create it or choose another file", dir)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a rename or link, it removes nothing of dst
	err = f.Chmod(0o600)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := fill(tmp); err != nil {
		return err
	}
	if err := checkDatabaseFile(tmp); err != nil {
		return fmt.Errorf("the copy does not check out, so %s was not written: %w", dst, err)
	}
	if force {
		err = os.Rename(tmp, dst)
	} else {
		// A link fails if dst appeared meanwhile, where a rename would
		// silently replace it.
		err = os.Link(tmp, dst)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s exists; pass -force to replace it", dst)
		}
	}
	if err != nil {
		return err
	}
	return syncDir(dir)
}

// openUpgradedCopy copies the bbolt file at path, of an older schema, into
// a temporary folder and opens the copy for writing, which upgrades it.
// done removes the copy once the store is closed.
func openUpgradedCopy(path string) (st *boltStore, done func(), err error) {
	dir, err := os.MkdirTemp("", "tokend-restore-")
	if err != nil {
		return nil, nil, err
	}
	done = func() { os.RemoveAll(dir) }
	tmp := filepath.Join(dir, "upgraded.db")
	if err := copyFile(path, tmp); err != nil {
		return nil, done, err
	}
	st, err = openStore(tmp, lockTimeout)
	return st, done, err
}

// copyFile copies the file at src to a new file dst, mode 0600.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// checkDatabaseFile opens the file at path read-only and checks that it is
// a tokend database whose structure and indexes are sound.
func checkDatabaseFile(path string) error {
	st, err := openStoreWith(path, bolt.Options{Timeout: lockTimeout, ReadOnly: true})
	if err != nil {
		return err
	}
	defer st.Close()
	return st.Check()
}

// syncDir flushes a folder's entries, so that a file just renamed or
// linked into it stays there after a power failure.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
